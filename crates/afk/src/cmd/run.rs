//! `afk run`: the long-running control plane.

use crate::app::App;

use super::ConfigArg;

/// `afk run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Runs afk until SIGTERM or Ctrl-C; the tick in progress is finished first.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // Listening from the start: a SIGTERM while the ledger opens or the first tick runs must stop
    // afk cleanly too, not kill it (the default action before a handler is installed).
    let stop = shutdown_signal();
    let config = args.config.load()?;
    config.check_for_run()?;
    App::build(config).await?.run_until_stopped(stop).await
}

/// Resolves on SIGTERM or Ctrl-C. SIGTERM's handler is installed when this is called, not when
/// the future is first polled.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        {
            if let Some(mut term) = term {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: finishing the current tick"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: finishing the current tick"),
                }
                return;
            }
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
