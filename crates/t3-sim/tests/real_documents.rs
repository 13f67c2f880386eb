//! The watcher's scanner (`t3_client::wire::scan`, held against `serde` by
//! `crates/t3-client/tests/fuzz.rs`) on the documents the **real** T3 Code server sends (when
//! `AFK_REAL_T3` names it; else one `SKIP:` line): the fuzz and the bench only see documents afk's
//! own wire types wrote, which cannot carry the keys and forms T3 adds. The scanner must answer
//! T3's snapshot and shell (not leave them to `serde`, or the shortcut never pays) and answer
//! exactly what `serde` answers.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use t3_client::wire::{oracle, ThreadDetail};
use t3_client::{Fleet, ReadModel};
use t3_sim::real::{self, Agent, RealT3};

/// How long the real T3 may take to finish a short turn (it is slow on two cores).
const PATIENCE: Duration = Duration::from_secs(60);

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn now() -> String {
    t3_client::wire::Timestamp::now().to_iso()
}

/// The raw body of an authenticated GET, as the watcher receives it.
async fn body(t3: &RealT3, path: &str) -> String {
    let reply = reqwest::Client::new()
        .get(format!("{}{path}", t3.url()))
        .bearer_auth(t3.token())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: no reply: {e}"));
    assert_eq!(reply.status().as_u16(), 200, "{path}");
    reply.text().await.expect("a body")
}

/// The snapshot and the shell as T3 sends them now: the scanner answers each, and its answer
/// is `serde`'s, with `threads` readable threads in it and none set aside.
async fn scanner_reads_what_t3_sends(t3: &RealT3, threads: usize, when: &str) {
    let snapshot = body(t3, "/api/orchestration/snapshot").await;
    let by_serde = oracle::snapshot_by_serde(snapshot.as_bytes()).expect("serde reads the snapshot");
    assert_eq!(by_serde.len(), threads, "{when}: the snapshot's threads");
    assert!(
        by_serde.unreadable_threads().next().is_none(),
        "{when}: {snapshot}"
    );
    let by_scanner = oracle::snapshot_by_scanner(&snapshot)
        .unwrap_or_else(|| panic!("{when}: the scanner declines T3's snapshot: {snapshot}"));
    assert_eq!(by_scanner, by_serde, "{when}: the snapshot");
    assert_eq!(Fleet::decode_snapshot(snapshot.as_bytes()).ok(), Some(by_serde));

    // The full read model (`T3Client::snapshot`, for `afk t3` and `afk doctor`): the scanner
    // reads it, as `serde` does, and every key afk's types write again is what T3 sent.
    let by_serde: ReadModel = serde_json::from_str(&snapshot).expect("serde reads the read model");
    assert_eq!(
        by_serde.threads.len(),
        threads,
        "{when}: the read model's threads"
    );
    let model = oracle::read_model_by_scanner(&snapshot)
        .unwrap_or_else(|| panic!("{when}: the scanner declines T3's read model: {snapshot}"));
    assert_eq!(model, by_serde, "{when}: the read model");
    assert_eq!(ReadModel::decode(snapshot.as_bytes()).ok(), Some(by_serde));
    let sent: Value = serde_json::from_str(&snapshot).expect("JSON");
    oracle::within(&serde_json::to_value(&model).expect("writes"), &sent, "")
        .unwrap_or_else(|e| panic!("{when}: {e}"));

    let shell = body(t3, "/api/orchestration/shell").await;
    let by_serde = oracle::shell_by_serde(shell.as_bytes()).expect("serde reads the shell");
    assert_eq!(by_serde.len(), threads, "{when}: the shell's threads");
    let by_scanner = oracle::shell_by_scanner(&shell)
        .unwrap_or_else(|| panic!("{when}: the scanner declines T3's shell: {shell}"));
    assert_eq!(by_scanner, by_serde, "{when}: the shell");
    let waits = oracle::waits_by_scanner(&shell)
        .unwrap_or_else(|| panic!("{when}: the scanner declines T3's shell's waits: {shell}"));
    let by_serde = oracle::waits_by_serde(shell.as_bytes()).expect("serde reads the waits");
    assert_eq!(waits, by_serde, "{when}: the waits");
}

/// Two threads, one that has run a turn to completion (turn, session, message ids filled in) and
/// one never started: the scanner reads T3's snapshot and shell before and after the turn.
#[tokio::test]
async fn the_scanner_reads_the_real_t3s_documents_as_serde_does() {
    if !real::skip_unless_available("real_documents against the real T3") {
        return;
    }
    let agent = Agent::new(env!("CARGO_BIN_EXE_t3-sim"), &["agent"]);
    let t3 = RealT3::start(real::Options { agent: Some(agent) })
        .await
        .unwrap_or_else(|e| panic!("the real T3 did not start: {e:#}"));
    let project = t3
        .add_project("proj-documents", "documents")
        .await
        .expect("a project");
    let ran = uuid();
    for (thread, branch) in [(ran.clone(), "afk/issue-1"), (uuid(), "afk/issue-2")] {
        t3.dispatch(&json!({
            "type": "thread.create", "commandId": uuid(), "threadId": thread, "projectId": project.id,
            "title": "acme/widgets#1: Fix", "modelSelection": {"instanceId": "codex", "model": "gpt-5-codex"},
            "runtimeMode": "full-access", "interactionMode": "default", "branch": branch,
            "worktreePath": null, "createdAt": now(),
        }))
        .await
        .unwrap_or_else(|e| panic!("thread.create: {e:#}"));
    }
    scanner_reads_what_t3_sends(&t3, 2, "two new threads").await;

    t3.dispatch(&json!({
        "type": "thread.turn.start", "commandId": uuid(), "threadId": ran,
        "message": {"messageId": uuid(), "role": "user", "text": "Fix it [sim:duration=100]", "attachments": []},
        "runtimeMode": "full-access", "interactionMode": "default", "createdAt": now(),
    }))
    .await
    .unwrap_or_else(|e| panic!("thread.turn.start: {e:#}"));
    // The turn's end, polled for within a bound (T3 says nothing else of it over HTTP).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, snapshot) = t3
            .request(reqwest::Method::GET, "/api/orchestration/snapshot", None)
            .await
            .expect("the snapshot");
        let state = snapshot["threads"]
            .as_array()
            .and_then(|threads| threads.iter().find(|t| t["id"] == ran.as_str()))
            .map(|t| t["latestTurn"]["state"].clone());
        if state == Some(Value::from("completed")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the turn did not complete within {PATIENCE:?}: {state:?}\n{}",
            t3.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    scanner_reads_what_t3_sends(&t3, 2, "after a turn").await;

    // The thread's detail (its messages filled in): every key afk's `Thread` writes again is what
    // T3 sent. (The stand-in agent leaves no activities; what afk reads of a real T3's
    // activities, an interrupt, is `tests/real_t3.rs`'s `person_interrupts` in `crates/afk`.)
    let detail = body(&t3, &format!("/api/orchestration/threads/{ran}")).await;
    let decoded: ThreadDetail = serde_json::from_str(&detail).expect("the detail decodes");
    assert!(!decoded.thread.messages.is_empty(), "{detail}");
    let sent: Value = serde_json::from_str(&detail).expect("JSON");
    oracle::within(&serde_json::to_value(&decoded).expect("writes"), &sent, "")
        .unwrap_or_else(|e| panic!("{e}"));
}
