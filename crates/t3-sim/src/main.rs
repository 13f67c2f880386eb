//! `t3-sim`: the T3 stand-in (`t3-sim --listen …`) and the simulated agent for the real T3
//! (`t3-sim agent app-server`), without afk. `afk sim` runs the same code.

use std::process::ExitCode;

use clap::Parser;

/// The T3 Code stand-in, or its simulated agent for the real T3.
#[derive(Debug, Parser)]
#[command(name = "t3-sim", version, about)]
struct Cli {
    #[command(flatten)]
    sim: t3_sim::cli::SimArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    match t3_sim::cli::run(Cli::parse().sim).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("t3-sim: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
