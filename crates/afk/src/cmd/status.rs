//! `afk status`: job counts per state and the attempts in flight, as text or JSON.

use crate::views;

/// `afk status`.
pub type Args = super::ReadArgs;

/// Prints job counts per state and the attempts in flight.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // Linked as the status surface links them: each attempt to its thread in T3's web UI.
    let config = args.config.load()?;
    let ledger = super::existing_ledger(&config).await?;
    let status = views::status_with(&ledger, &crate::app::links(&config), chrono::Utc::now()).await?;
    args.print(&status, views::StatusView::text)
}
