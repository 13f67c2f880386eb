//! `afk sim`: the T3 stand-in on a port until Ctrl-C (the command is `t3-sim`'s own).

pub use t3_sim::cli::SimArgs as Args;

/// Runs the stand-in.
pub async fn run(args: Args) -> anyhow::Result<()> {
    t3_sim::cli::run(args).await
}
