//! `afk jobs`: the ledger's jobs as a table, or as a JSON array.

use crate::views;

/// `afk jobs`.
pub type Args = super::ReadArgs;

/// Prints the ledger's jobs.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let jobs = views::jobs(&args.ledger().await?).await?;
    args.print(&jobs, |jobs| match jobs.is_empty() {
        true => "no jobs yet\n".to_owned(),
        false => views::jobs_table(jobs),
    })
}
