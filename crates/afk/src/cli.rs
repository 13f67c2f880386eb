//! The command line: the table of afk's commands, each routed to its file under `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd;

/// afk: gets repository issues implemented by coding agents running in T3 Code.
#[derive(Debug, Parser)]
#[command(name = "afk", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: take issues, dispatch them to T3, watch them to the end.
    Run(cmd::run::Args),
    /// afk end to end with no external service: a T3 stand-in, sample issues, a throwaway ledger.
    Demo,
    /// List the ledger's jobs.
    Jobs(cmd::jobs::Args),
    /// Job counts per state and the attempts in flight.
    Status(cmd::status::Args),
    /// Queue one job by hand (afk run dispatches it).
    Dispatch(cmd::enqueue::Args),
    /// The T3 client alone, against any T3 server.
    #[command(subcommand)]
    T3(cmd::t3::Command),
    /// Run the T3 stand-in on a port until Ctrl-C.
    Sim(cmd::sim::Args),
}

/// Parses the command line, runs the command and turns its outcome into an exit code; errors are
/// printed as one message naming what went wrong.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress; its log shows only what went wrong.
    init_tracing(if matches!(cli.command, Command::Demo) {
        "warn"
    } else {
        "info"
    });
    let outcome = match cli.command {
        Command::Run(args) => cmd::run::run(args).await,
        Command::Demo => cmd::demo::run().await,
        Command::Jobs(args) => cmd::jobs::run(args).await,
        Command::Status(args) => cmd::status::run(args).await,
        Command::Dispatch(args) => cmd::enqueue::run(args).await,
        Command::T3(command) => cmd::t3::run(command).await,
        Command::Sim(args) => cmd::sim::run(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("afk: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr at `default_level`, or as `AFK_LOG` says.
fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AFK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
