//! Helpers shared by the stand-in's integration tests: a server on loopback, the real T3 client
//! pointed at it, raw HTTP for what the client never sends, and bounded polling.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use afk_secrets::LiteralProvider;
use t3_client::ids::{CommandId, ProjectId, ThreadId};
use t3_client::wire::{ReadModel, SessionStatus, Thread, TurnState};
use t3_client::{ReqwestTransport, T3Client, ThreadState, TransportConfig};
use t3_sim::{SimConfig, SimProject, SimServer, SimThreadState, TokenGrant};

/// The operate token every test server accepts.
pub const OPERATE: &str = "test-operate-token";
/// A read-only token every test server accepts.
pub const READ_ONLY: &str = "test-read-token";
/// The project every test server has.
pub const PROJECT: &str = "proj-widgets";
/// The repository the client maps to [`PROJECT`].
pub const REPO: &str = "acme/widgets";

/// How long a test waits for something that should happen within milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A configuration with both tokens, the project and a fast agent (20 ms start, 100 ms turns).
pub fn config() -> SimConfig {
    SimConfig {
        tokens: vec![TokenGrant::operate(OPERATE), TokenGrant::read_only(READ_ONLY)],
        projects: vec![SimProject::new(PROJECT, "/tmp/widgets")],
        turn_duration: Duration::from_millis(100),
        startup_delay: Duration::from_millis(20),
        seed: 42,
        ..SimConfig::default()
    }
}

/// A stand-in on a free loopback port.
pub async fn start(config: SimConfig) -> SimServer {
    match SimServer::start("127.0.0.1:0".parse().expect("a literal address"), config).await {
        Ok(server) => server,
        Err(e) => panic!("the stand-in did not start: {e}"),
    }
}

/// A stand-in with [`config`] and the real T3 client against it with `token`: what most tests
/// start with.
pub async fn started(token: &str) -> (SimServer, T3Client) {
    let server = start(config()).await;
    let client = client(&server, token);
    (server, client)
}

/// The real T3 client against `server`, with `token`, mapping [`REPO`] to [`PROJECT`].
pub fn client(server: &SimServer, token: &str) -> T3Client {
    let transport = ReqwestTransport::new(TransportConfig {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
    });
    T3Client::new(
        &server.url(),
        Arc::new(transport),
        Arc::new(LiteralProvider::new(token)),
    )
    .with_project(REPO, project())
}

/// [`PROJECT`] as an id.
pub fn project() -> ProjectId {
    ProjectId::new(PROJECT).expect("a valid literal id")
}

/// A fresh command id.
pub fn command_id() -> CommandId {
    CommandId::generate()
}

/// Polls `check` until it returns `Some`, for at most [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("gave up waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the snapshot (through the client) until `thread` satisfies `done`; returns it.
pub async fn wait_for_thread(
    client: &T3Client,
    thread: &ThreadId,
    what: &str,
    done: impl Fn(&Thread) -> bool,
) -> Thread {
    eventually(what, || async {
        let snapshot = client.snapshot().await.ok()?;
        snapshot.thread(thread).filter(|t| done(t)).cloned()
    })
    .await
}

/// Polls the snapshot until `thread` has ended (succeeded, failed or interrupted); returns it.
pub async fn wait_until_final(client: &T3Client, thread: &ThreadId, what: &str) -> Thread {
    wait_for_thread(client, thread, what, |t| ThreadState::of(Some(t)).is_final()).await
}

/// `thread` as the snapshot shows it now, or a panic when the snapshot lacks it.
pub async fn thread_now(client: &T3Client, thread: &ThreadId) -> Thread {
    match snapshot(client).await.thread(thread) {
        Some(found) => found.clone(),
        None => panic!("the snapshot lacks thread {thread}"),
    }
}

/// One thread at one moment, seen from both sides: its session and turn in T3's read model, the
/// state afk reads from them, and the stand-in's own record. Compared whole, so that a test states
/// every side at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The session's status in the snapshot.
    pub session: Option<SessionStatus>,
    /// The latest turn's state in the snapshot.
    pub turn: Option<TurnState>,
    /// What afk concludes from the snapshot.
    pub state: ThreadState,
    /// The stand-in's own state of the thread.
    pub sim: Option<SimThreadState>,
}

/// [`Observed`] for `thread` now.
pub async fn observe(server: &SimServer, client: &T3Client, thread: &ThreadId) -> Observed {
    let seen = thread_now(client, thread).await;
    Observed {
        session: seen.session.as_ref().map(|s| s.status),
        turn: seen.latest_turn.as_ref().map(|t| t.state),
        state: ThreadState::of(Some(&seen)),
        sim: server.thread(thread).map(|t| t.state),
    }
}

/// The snapshot, or a panic naming the error.
pub async fn snapshot(client: &T3Client) -> ReadModel {
    match client.snapshot().await {
        Ok(snapshot) => snapshot,
        Err(e) => panic!("snapshot failed: {e}"),
    }
}

/// A raw HTTP client, for requests the T3 client never makes (no bearer, malformed bodies).
pub fn raw() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a default reqwest client builds")
}

/// POSTs `body` to the dispatch endpoint with `token`; returns the status and the JSON body
/// (`Null` when the body is not JSON).
pub async fn post_dispatch(server: &SimServer, token: Option<&str>, body: &str) -> (u16, serde_json::Value) {
    let request = raw()
        .post(format!("{}/api/orchestration/dispatch", server.url()))
        .header("content-type", "application/json")
        .body(body.to_owned());
    send(request, token).await
}

/// GETs `path` with `token`; returns the status and the JSON body.
pub async fn get(server: &SimServer, token: Option<&str>, path: &str) -> (u16, serde_json::Value) {
    let request = raw().get(format!("{}{}", server.url(), path));
    send(request, token).await
}

/// Sends `request` (with `token` as its bearer, when given); returns the status and the JSON body
/// (`Null` when the body is not JSON).
async fn send(mut request: reqwest::RequestBuilder, token: Option<&str>) -> (u16, serde_json::Value) {
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let reply = request.send().await.expect("the stand-in answers");
    let status = reply.status().as_u16();
    let bytes = reply.bytes().await.expect("a complete body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// A valid `thread.create` body for `thread` in [`PROJECT`].
pub fn thread_create_json(command: &str, thread: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "thread.create",
        "commandId": command,
        "threadId": thread,
        "projectId": PROJECT,
        "title": "acme/widgets#1: Fix the widget",
        "modelSelection": {"instanceId": "claudeAgent", "model": "claude-sonnet-4-5"},
        "runtimeMode": "full-access",
        "interactionMode": "default",
        "branch": "afk/issue-1",
        "worktreePath": null,
        "createdAt": "2026-11-24T19:14:36.116Z"
    })
}

/// A valid `thread.turn.start` body for `thread` with `text`.
pub fn turn_start_json(command: &str, thread: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "thread.turn.start",
        "commandId": command,
        "threadId": thread,
        "message": {"messageId": format!("msg-{command}"), "role": "user", "text": text, "attachments": []},
        "runtimeMode": "full-access",
        "interactionMode": "default",
        "createdAt": "2026-11-24T19:14:36.200Z"
    })
}

/// Asserts `body` is one of T3's error bodies with `tag` and `code` and a non-empty trace id.
pub fn assert_error_body(body: &serde_json::Value, tag: &str, code: &str) {
    assert_eq!(body["_tag"], tag, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["traceId"].as_str().is_some_and(|t| !t.trim().is_empty()),
        "{body}"
    );
}
