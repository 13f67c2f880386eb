//! The command line: `afk run`, `afk demo`, `afk jobs`, `afk status`, `afk dispatch`, `afk t3` and
//! `afk sim`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{demo, runcmd, t3cmd};

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
    Run(runcmd::RunArgs),
    /// afk end to end with no external service: a T3 stand-in, sample issues, a throwaway ledger.
    Demo,
    /// List the ledger's jobs.
    Jobs(runcmd::JobsArgs),
    /// Job counts per state and the attempts in flight.
    Status(runcmd::StatusArgs),
    /// Queue one job by hand (afk run dispatches it).
    Dispatch(runcmd::DispatchArgs),
    /// The T3 client alone, against any T3 server.
    #[command(subcommand)]
    T3(T3Command),
    /// Run the T3 stand-in on a port until Ctrl-C.
    Sim(t3_sim::cli::SimArgs),
}

#[derive(Debug, Subcommand)]
enum T3Command {
    /// Create a thread for an issue and start its turn; prints the thread id last.
    Dispatch(t3cmd::DispatchArgs),
    /// Print T3's threads as a table (or its read model with --json).
    Snapshot(t3cmd::SnapshotArgs),
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
        Command::Run(args) => runcmd::run(args).await,
        Command::Demo => demo::run().await,
        Command::Jobs(args) => runcmd::jobs(args).await,
        Command::Status(args) => runcmd::status(args).await,
        Command::Dispatch(args) => runcmd::dispatch(args).await,
        Command::T3(T3Command::Dispatch(args)) => t3cmd::dispatch(args).await,
        Command::T3(T3Command::Snapshot(args)) => t3cmd::snapshot(args).await,
        Command::Sim(args) => t3_sim::cli::run(args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("afk: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AFK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
