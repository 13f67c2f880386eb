//! The command line: `afk t3`, `afk sim`, and (as they land) `afk run`, `afk demo`, `afk jobs`,
//! `afk status`, `afk dispatch`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::t3cmd;

/// afk: gets repository issues implemented by coding agents running in T3 Code.
#[derive(Debug, Parser)]
#[command(name = "afk", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    init_tracing();
    let outcome = match cli.command {
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AFK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
