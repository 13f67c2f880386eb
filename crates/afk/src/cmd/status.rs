//! `afk status`: job counts per state and the attempts in flight, as text or JSON.

use crate::views;

/// `afk status`.
pub type Args = super::ReadArgs;

/// Prints job counts per state and the attempts in flight.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let status = views::status(&args.ledger().await?).await?;
    args.print(&status, views::StatusView::text)
}
