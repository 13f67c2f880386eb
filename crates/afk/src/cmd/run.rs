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
    let config = args.config.load()?;
    config.check_for_run()?;
    App::build(config)
        .await?
        .run_until_stopped(shutdown_signal())
        .await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: finishing the current tick"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: finishing the current tick"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
