//! Secret hygiene over a whole scenario: afk dispatches and watches against the T3 stand-in while
//! its token is rotated, with tracing at TRACE for every crate; no token may appear in the log.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use t3_sim::TokenGrant;

/// A log sink for tracing that keeps everything written to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Everything at TRACE, from every crate, into `captured`, for the whole process (this file holds
/// one test, so that no other test's threads can hide events from it).
fn capture_trace(captured: &Captured) {
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
}

#[tokio::test]
async fn a_token_file_rewritten_mid_run_is_used_at_once_and_never_logged() {
    let captured = Captured::default();
    capture_trace(&captured);
    let mut world = World::new(Duration::from_millis(100)).await;
    world.config.limits.max_concurrent = 2;
    // The first token also expires on its own, as T3's hourly operate tokens do.
    let old = "t3-old-token-0c1d9e".to_string();
    let new = "t3-new-token-7ab344".to_string();
    world
        .sim
        .grant_token(TokenGrant::operate(old.clone()).expiring_after(Duration::from_secs(30)));
    std::fs::write(&world.config.t3.token_file, &old).unwrap();
    world.add_issues(REPO_A, 1..=6);
    let mut app = world.app().await;
    let jobs = tick_until_all_final_acting_after_first_success(&mut app, 6, || {
        // Rotation as Vault Agent does it: the new token is valid, the old one no longer, and the
        // file is rewritten in place.
        world.sim.grant_token(TokenGrant::operate(new.clone()));
        world.sim.revoke_token(&old);
        world.sim.revoke_token(TOKEN);
        std::fs::write(&world.config.t3.token_file, &new).unwrap();
    })
    .await;
    assert_all_succeeded_first_time(&jobs);
    assert_eq!(world.sim.threads().len(), 6);
    let log = captured.text();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log was captured: {} bytes: {}",
        log.len(),
        &log[..log.len().min(2000)]
    );
    // Nor the ledger: read its file (and its write-ahead log) as bytes.
    let mut ledger_bytes = Vec::new();
    for entry in std::fs::read_dir(world.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("afk.db") {
            ledger_bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!ledger_bytes.is_empty());
    let ledger_text = String::from_utf8_lossy(&ledger_bytes);
    for secret in [&old, &new, &TOKEN.to_string()] {
        assert!(!log.contains(secret.as_str()), "a token reached the log");
        assert!(
            !ledger_text.contains(secret.as_str()),
            "a token reached the ledger"
        );
    }
}
