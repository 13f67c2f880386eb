//! `afk status`: job counts per state and the attempts in flight.

use crate::{app, views};

use super::ConfigArg;

/// `afk status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Prints job counts per state and the attempts in flight.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let ledger = app::open_ledger(&config).await?;
    let status = views::status(&ledger).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.text());
    }
    Ok(())
}
