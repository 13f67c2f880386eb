//! The command line: the table of afk's commands, each routed to its file under `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cmd;
use crate::logging::{self, LogFormat};

/// afk: gets repository issues implemented by coding agents running in T3 Code.
#[derive(Debug, Parser)]
#[command(name = "afk", version, about, after_help = ENVIRONMENT)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the log on stderr is written: `text` for people, `json` (one object per line) for log
    /// collectors.
    #[arg(long, global = true, value_enum, env = "AFK_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// What `--help` says about the environment.
const ENVIRONMENT: &str = "\
Environment:
  AFK_LOG         which log records to write: a level (error, warn, info, debug, trace) or
                  directives such as `info,afk=debug,t3_client=trace` (default: info; warn for
                  `afk demo`); RUST_LOG is read when AFK_LOG is unset
  AFK_LOG_FORMAT  text or json, as --log-format
  AFK_CONFIG      the config file, as --config; AFK_<SECTION>_<KEY> overrides one key";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: take issues, dispatch them to T3, watch them to the end.
    Run(cmd::run::Args),
    /// afk end to end with no external service: a T3 stand-in, sample issues, a throwaway ledger.
    Demo,
    /// List the ledger's jobs, newest first (the newest 50 unless --limit says otherwise).
    Jobs(cmd::jobs::Args),
    /// Job counts per state, the attempts in flight, and why afk waits.
    Status(cmd::status::Args),
    /// Checks the configuration, the tokens, T3, GitHub and the ledger, and says what to fix.
    Doctor(cmd::doctor::Args),
    /// Queue one job by hand (afk run dispatches it).
    Dispatch(cmd::enqueue::Args),
    /// The T3 client alone, against any T3 server.
    #[command(subcommand)]
    T3(cmd::t3::Command),
    /// Run the T3 stand-in on a port until Ctrl-C.
    // Boxed: the stand-in's many flags would make every `Command` as large as this one.
    Sim(Box<cmd::sim::Args>),
}

/// Parses the command line, runs the command and turns its outcome into an exit code; errors are
/// printed as one message naming what went wrong.
pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress; its log shows only what went wrong.
    let default_level = match cli.command {
        Command::Demo => "warn",
        _ => "info",
    };
    logging::init(cli.log_format, default_level);
    let outcome = match cli.command {
        Command::Run(args) => cmd::run::run(args).await,
        Command::Demo => cmd::demo::run().await,
        Command::Jobs(args) => cmd::jobs::run(args).await,
        Command::Status(args) => cmd::status::run(args).await,
        Command::Doctor(args) => cmd::doctor::run(args).await,
        Command::Dispatch(args) => cmd::enqueue::run(args).await,
        Command::T3(command) => cmd::t3::run(command).await,
        Command::Sim(args) => cmd::sim::run(*args).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of the output went away (`| head`): nothing went wrong that it would see.
        Err(err) if err.downcast_ref::<cmd::out::StdoutClosed>().is_some() => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("afk: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
