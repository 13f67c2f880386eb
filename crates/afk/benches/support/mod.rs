//! Helpers shared by afk's bench targets.
#![allow(dead_code)]

use afk::app::App;
use chrono::Utc;

/// The multi-threaded Tokio runtime a bench target runs in, as `afk run`'s.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

/// A tick in which nothing may change: the fleet is all running and stays so.
pub async fn quiet_tick(plane: &mut App) {
    let report = plane.tick(Utc::now()).await.expect("a tick");
    assert!(report.t3_reachable, "T3 answered");
    assert!(
        report.progress.is_empty(),
        "a quiet fleet made transitions: {:?}",
        report.progress
    );
}

/// A duration in seconds as µs, ms or s with two or three significant digits.
pub fn human_secs(secs: f64) -> String {
    let micros = secs * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.1} µs")
    } else if micros < 1_000_000.0 {
        format!("{:.2} ms", micros / 1_000.0)
    } else {
        format!("{:.2} s", micros / 1_000_000.0)
    }
}
