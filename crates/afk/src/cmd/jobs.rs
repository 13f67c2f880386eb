//! `afk jobs`: the ledger's jobs as a table, or as JSON.

use crate::{app, views};

use super::ConfigArg;

/// `afk jobs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print a JSON array of jobs instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the ledger's jobs.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let ledger = app::open_ledger(&config).await?;
    let jobs = views::jobs(&ledger).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
    } else if jobs.is_empty() {
        println!("no jobs yet");
    } else {
        print!("{}", views::jobs_table(&jobs));
    }
    Ok(())
}
