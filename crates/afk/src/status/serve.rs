//! The listener, hardened against idle and slow clients: hyper's HTTP/1 server with its header
//! read timeout (which also closes a kept-alive connection idle for as long), the request deadline
//! of `api.rs` (bodies included), and at most `max_connections` connections served at once (a
//! semaphore permit per connection; past the cap, new connections wait in the kernel's listen
//! queue until one closes). Without these, 300 idle sockets used to exhaust afk's file
//! descriptors and stop intake (issue 14).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The listener's limits (`[http]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to send a request's headers; also how long a kept-alive connection may sit idle.
    pub header_timeout: Duration,
    /// Time for a whole request, its body included.
    pub request_timeout: Duration,
}

/// The listening socket's address and the task serving it; dropping it stops the listener and
/// closes every connection it serves.
pub struct Listener {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `listen` and serves `router` there within `limits`. A port already in use is one error
/// naming `[http] listen`.
pub async fn serve(listen: SocketAddr, router: axum::Router, limits: Limits) -> anyhow::Result<Listener> {
    let listener = TcpListener::bind(listen).await.map_err(|error| {
        let hint = match error.kind() {
            std::io::ErrorKind::AddrInUse => {
                ": the port is in use (another afk?); give this one its own [http] listen, or \"off\""
            }
            _ => "",
        };
        anyhow::anyhow!("cannot listen on {listen} ([http] listen): {error}{hint}")
    })?;
    let addr = listener.local_addr().context("[http] listen")?;
    let task = tokio::spawn(accept(listener, router, limits));
    Ok(Listener { addr, task })
}

async fn accept(listener: TcpListener, router: axum::Router, limits: Limits) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Owned here so that stopping the listener (aborting this task) drops every connection.
    let mut connections = JoinSet::new();
    let service = TowerToHyperService::new(router);
    let mut said_full = false;
    loop {
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !said_full {
                    tracing::warn!(
                        "the HTTP listener serves {} connections ([http] max_connections): new ones wait",
                        limits.max_connections
                    );
                    said_full = true;
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                    Some(_) = connections.join_next() => continue,
                }
            }
        };
        let (stream, _peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors or the like: say it, give connections time to close.
                tracing::warn!("the HTTP listener cannot accept a connection: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        said_full = false;
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true)
                .max_buf_size(64 * 1024);
            // An error here is the client's (gone, too slow, malformed): nothing to do.
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
