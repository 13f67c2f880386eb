//! No token reaches the stand-in's log: requests with valid, invalid and expired tokens are made
//! with tracing at TRACE, and the captured output is searched.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use t3_sim::TokenGrant;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tokens_never_reach_the_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded, so every task of the server logs through this.
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut config = config();
    config
        .tokens
        .push(TokenGrant::operate("s3cret-expiring").expiring_after(Duration::from_millis(1)));
    let server = start(config).await;
    client(&server, OPERATE)
        .dispatch(REPO, 1, "Fix it")
        .await
        .expect("dispatched");
    let _ = client(&server, "s3cret-unknown").snapshot().await;
    let _ = client(&server, "s3cret-expiring").snapshot().await;
    let _ = post_dispatch(&server, Some(OPERATE), "{not json").await;
    server.shutdown().await;

    let log = String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    assert!(
        log.contains("POST /api/orchestration/dispatch -> 200"),
        "one line per request: {log}"
    );
    assert!(
        log.contains("invalid_command"),
        "the log says why a body was refused: {log}"
    );
    for secret in [OPERATE, "s3cret"] {
        assert!(!log.contains(secret), "{secret} leaked into the log:\n{log}");
    }
}
