//! T3's WebSocket RPC (`GET /ws`), driven with a raw WebSocket client: auth on the upgrade,
//! scopes per call, dispatch with a worktree bootstrap, the shell stream (snapshot, live events,
//! backpressure, resume), Effect's protocol answers and the socket faults; and the client's
//! [`ShellFeed`] against the subscription faults.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use t3_client::ids::ThreadId;
use t3_client::wire::{ShellItem, ThreadState, TurnState};
use t3_client::{FeedSettings, FeedStatus, Fleet, RpcSettings, ShellFeed};
use t3_sim::{FaultPlan, PausePhase, SimConfig, SimServer, SimThreadState, TokenGrant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a message that should come at once.
const PROMPT: Duration = Duration::from_secs(5);
/// How long a test watches for a message that must not come.
const QUIET: Duration = Duration::from_millis(300);
const WORKTREES: &str = "/tmp/t3-sim-test/worktrees";

fn ws_config() -> SimConfig {
    SimConfig {
        worktrees_dir: PathBuf::from(WORKTREES),
        ..config()
    }
}

/// A raw RPC connection.
struct Rpc {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// What reading a socket came to.
#[derive(Debug)]
enum Read {
    Message(Value),
    /// The server sent a close frame.
    CloseFrame,
    /// The connection ended without a close frame.
    Dropped,
    /// Nothing within the time given.
    Nothing,
}

impl Rpc {
    async fn connect(server: &SimServer, token: &str) -> Rpc {
        let mut request = server.ws_url().into_client_request().expect("a valid URL");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("a valid header"),
        );
        let (ws, _) = tokio::time::timeout(PROMPT, tokio_tungstenite::connect_async(request))
            .await
            .expect("the upgrade is answered in time")
            .expect("the upgrade is accepted");
        Rpc { ws, next_id: 1 }
    }

    async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("the frame is sent");
    }

    async fn read(&mut self, within: Duration) -> Read {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Read::Nothing,
                Ok(next) => next,
            };
            match next {
                Some(Ok(Message::Text(text))) => {
                    return Read::Message(serde_json::from_str(text.as_str()).expect("the server sends JSON"))
                }
                Some(Ok(Message::Close(_))) => return Read::CloseFrame,
                Some(Ok(_)) => continue,
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) | None => return Read::Dropped,
                Some(Err(_)) => return Read::Dropped,
            }
        }
    }

    /// The next message; fails the test when none comes in time.
    async fn recv(&mut self) -> Value {
        match self.read(PROMPT).await {
            Read::Message(message) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives for a while.
    async fn expect_silence(&mut self, what: &str) {
        match self.read(QUIET).await {
            Read::Nothing => {}
            other => panic!("{what}: expected nothing, got {other:?}"),
        }
    }

    /// Asserts that the server drops the connection (no close frame).
    async fn expect_dropped(&mut self) {
        loop {
            match self.read(PROMPT).await {
                Read::Dropped => return,
                // Replies queued before the drop may still arrive.
                Read::Message(_) => continue,
                other => panic!("expected the connection to drop, got {other:?}"),
            }
        }
    }

    /// Sends a request; returns its id.
    async fn request(&mut self, method: &str, payload: Value) -> String {
        let id = self.next_id.to_string();
        self.next_id += 1;
        self.send(json!({"_tag": "Request", "id": id, "tag": method, "payload": payload, "headers": []}))
            .await;
        id
    }

    /// Calls `method` and returns its `exit`.
    async fn call(&mut self, method: &str, payload: Value) -> Value {
        let id = self.request(method, payload).await;
        self.exit_of(&id).await
    }

    /// Waits for the `Exit` of request `id` (skipping other messages) and returns its `exit`.
    async fn exit_of(&mut self, id: &str) -> Value {
        loop {
            let message = self.recv().await;
            if message["_tag"] == "Exit" && message["requestId"] == id {
                return message["exit"].clone();
            }
        }
    }

    async fn dispatch(&mut self, command: Value) -> Value {
        self.call("orchestration.dispatchCommand", command).await
    }

    /// Subscribes to the shell; returns the request id.
    async fn subscribe(&mut self, payload: Value) -> String {
        self.request("orchestration.subscribeShell", payload).await
    }

    /// The values of the next chunk of stream `id`.
    async fn chunk(&mut self, id: &str) -> Vec<Value> {
        loop {
            let message = self.recv().await;
            if message["_tag"] == "Chunk" && message["requestId"] == id {
                return message["values"].as_array().cloned().expect("values");
            }
        }
    }

    async fn ack(&mut self, id: &str) {
        self.send(json!({"_tag": "Ack", "requestId": id})).await;
    }
}

fn now() -> String {
    t3_client::wire::Timestamp::now().to_iso()
}

/// A `thread.turn.start` that creates its thread and a worktree on `branch` first.
fn bootstrap_turn(command: &str, thread: &str, text: &str, branch: Option<&str>, setup: bool) -> Value {
    let mut prepare = json!({"projectCwd": "/tmp/widgets", "baseBranch": "main"});
    if let Some(branch) = branch {
        prepare["branch"] = json!(branch);
    }
    json!({
        "type": "thread.turn.start",
        "commandId": command,
        "threadId": thread,
        "message": {"messageId": format!("m-{command}"), "role": "user", "text": text, "attachments": []},
        "runtimeMode": "full-access",
        "interactionMode": "default",
        "createdAt": now(),
        "bootstrap": {
            "createThread": {
                "projectId": PROJECT,
                "title": "acme/widgets#1: Fix it",
                "modelSelection": {"instanceId": "claudeAgent", "model": "claude-sonnet-4-5"},
                "runtimeMode": "full-access",
                "interactionMode": "default",
                "branch": null,
                "worktreePath": null,
                "createdAt": now(),
            },
            "prepareWorktree": prepare,
            "runSetupScript": setup,
        },
    })
}

fn thread_create(command: &str, thread: &str) -> Value {
    json!({
        "type": "thread.create", "commandId": command, "threadId": thread, "projectId": PROJECT,
        "title": "T", "modelSelection": {"instanceId": "claudeAgent", "model": "m"},
        "runtimeMode": "full-access", "interactionMode": "default", "branch": null,
        "worktreePath": null, "createdAt": now(),
    })
}

fn turn_start(command: &str, thread: &str, text: &str) -> Value {
    json!({
        "type": "thread.turn.start", "commandId": command, "threadId": thread,
        "message": {"messageId": format!("m-{command}"), "role": "user", "text": text, "attachments": []},
        "runtimeMode": "full-access", "interactionMode": "default", "createdAt": now(),
    })
}

fn apply(server: &SimServer, command: Value) -> u64 {
    let command = serde_json::from_value(command).expect("a client command");
    server.apply_command(command).expect("applied").sequence
}

fn sequence_of(exit: &Value) -> u64 {
    assert_eq!(exit["_tag"], "Success", "{exit}");
    exit["value"]["sequence"].as_u64().expect("a sequence")
}

/// The typed error of a failed exit.
fn error_of(exit: &Value) -> &Value {
    assert_eq!(exit["_tag"], "Failure", "{exit}");
    assert_eq!(exit["cause"][0]["_tag"], "Fail", "{exit}");
    &exit["cause"][0]["error"]
}

fn thread(server: &SimServer, id: &str) -> t3_sim::SimThread {
    server
        .thread(&ThreadId::new(id).expect("an id"))
        .expect("the thread exists")
}

fn items(values: Vec<Value>) -> Vec<ShellItem> {
    values
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("a shell item"))
        .collect()
}

#[tokio::test]
async fn the_upgrade_is_refused_without_a_valid_token_as_http_refuses_it() {
    let server = start(ws_config()).await;
    server.revoke_token(READ_ONLY);
    for (token, reason) in [
        (None, "missing_credential"),
        (Some("not-a-token"), "invalid_credential"),
        (Some(READ_ONLY), "invalid_credential"),
    ] {
        let mut request = server.ws_url().into_client_request().expect("a valid URL");
        if let Some(token) = token {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("a header"),
            );
        }
        let error = tokio_tungstenite::connect_async(request)
            .await
            .expect_err("the upgrade is refused");
        let WsError::Http(response) = error else {
            panic!("expected an HTTP refusal, got {error}");
        };
        assert_eq!(response.status().as_u16(), 401);
        let body: Value = serde_json::from_slice(response.body().as_deref().unwrap_or_default())
            .expect("T3's JSON error body");
        assert_eq!(body["_tag"], "EnvironmentAuthInvalidError");
        assert_eq!(body["code"], "auth_invalid");
        assert_eq!(body["reason"], reason);
    }
    assert_eq!(server.ws_connections(), 0, "nothing was upgraded");
    server.shutdown().await;
}

#[tokio::test]
async fn each_call_needs_its_scope() {
    let server = start(ws_config()).await;
    let mut rpc = Rpc::connect(&server, READ_ONLY).await;
    let exit = rpc.dispatch(thread_create("c1", "t1")).await;
    let error = error_of(&exit);
    assert_eq!(error["_tag"], "EnvironmentAuthorizationError");
    assert_eq!(error["requiredScope"], "orchestration:operate");
    assert!(server.threads().is_empty());

    let stream = rpc.subscribe(json!({})).await;
    let first = items(rpc.chunk(&stream).await);
    assert!(
        matches!(first[0], ShellItem::Snapshot { .. }),
        "reading needs only orchestration:read"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_bootstrapped_turn_creates_the_thread_with_its_worktree_and_runs() {
    let server = start(ws_config()).await;
    let mut rpc = Rpc::connect(&server, OPERATE).await;
    let exit = rpc
        .dispatch(bootstrap_turn("c1", "t1", "Fix it", Some("afk/issue-1"), true))
        .await;
    let sequence = sequence_of(&exit);
    assert_eq!(
        sequence,
        server.sequence().min(sequence),
        "the reply is the turn start's sequence"
    );

    let created = thread(&server, "t1");
    assert_eq!(created.branch.as_deref(), Some("afk/issue-1"));
    assert_eq!(
        created.worktree_path.as_deref(),
        Some("/tmp/t3-sim-test/worktrees/widgets/afk-issue-1"),
        "T3's path: <worktrees>/<repository>/<branch with '/' as '-'>"
    );
    assert_eq!(created.turns, 1);
    let model = snapshot(&client(&server, OPERATE)).await;
    let wire = model
        .thread(&ThreadId::new("t1").expect("id"))
        .expect("in the snapshot");
    assert_eq!(
        wire.worktree_path.as_deref(),
        Some("/tmp/t3-sim-test/worktrees/widgets/afk-issue-1")
    );
    eventually("the turn runs", || async {
        let state = thread(&server, "t1").state;
        matches!(state, SimThreadState::Running | SimThreadState::Completed).then_some(())
    })
    .await;
    server.shutdown().await;
}

/// Each new branch gets a worktree of its own; without a branch T3 checks the base branch itself
/// out (`git worktree add PATH main`), which git allows once.
#[tokio::test]
async fn two_bootstraps_on_one_project_get_two_worktrees() {
    let server = start(ws_config()).await;
    let mut rpc = Rpc::connect(&server, OPERATE).await;
    sequence_of(
        &rpc.dispatch(bootstrap_turn("c1", "t1", "one", Some("afk/one"), false))
            .await,
    );
    sequence_of(
        &rpc.dispatch(bootstrap_turn("c2", "t2", "two", Some("afk/two"), false))
            .await,
    );
    sequence_of(
        &rpc.dispatch(bootstrap_turn("c3", "t3", "three", None, false))
            .await,
    );
    let paths: Vec<String> = ["t1", "t2", "t3"]
        .iter()
        .map(|t| thread(&server, t).worktree_path.expect("a worktree"))
        .collect();
    assert_ne!(paths[0], paths[1]);
    assert_eq!(thread(&server, "t3").branch.as_deref(), Some("main"));
    assert!(paths[2].ends_with("/widgets/main"), "{}", paths[2]);
    let again = rpc
        .dispatch(bootstrap_turn("c4", "t4", "four", None, false))
        .await;
    let message = error_of(&again)["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("git worktree add failed"), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_bootstrap_sent_twice_makes_one_thread_and_a_plain_command_gets_its_receipt() {
    let server = start(ws_config()).await;
    let mut rpc = Rpc::connect(&server, OPERATE).await;
    let command = bootstrap_turn("c1", "t1", "Fix it", Some("afk/issue-1"), false);
    sequence_of(&rpc.dispatch(command.clone()).await);
    // As in T3, only the final turn start carries the client's command id: the retry fails at
    // createThread because the thread exists, and nothing happens twice.
    let again = rpc.dispatch(command).await;
    let error = error_of(&again);
    assert_eq!(error["_tag"], "OrchestrationDispatchCommandError");
    let message = error["message"].as_str().expect("a message");
    assert!(message.contains("already exists"), "{message}");
    assert!(
        error.get("bootstrapThreadDisposition").is_none(),
        "the thread was not touched"
    );
    assert_eq!(server.threads().len(), 1);
    assert!(!thread(&server, "t1").deleted);
    assert_eq!(thread(&server, "t1").turns, 1);

    let first = sequence_of(&rpc.dispatch(thread_create("c2", "t2")).await);
    let second = sequence_of(&rpc.dispatch(thread_create("c2", "t2")).await);
    assert_eq!(first, second, "the receipt answers a repeated command id");
    assert_eq!(server.threads().len(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_failed_worktree_deletes_the_thread_and_a_failed_setup_script_does_not() {
    let server = start(ws_config()).await;
    let mut rpc = Rpc::connect(&server, OPERATE).await;
    let mut shell = Rpc::connect(&server, READ_ONLY).await;
    let stream = shell.subscribe(json!({})).await;
    shell.chunk(&stream).await;
    shell.ack(&stream).await;

    let exit = rpc
        .dispatch(bootstrap_turn(
            "c-t1",
            "t1",
            "Fix it [sim:worktree-fail]",
            Some("afk/t1"),
            false,
        ))
        .await;
    let error = error_of(&exit);
    assert_eq!(error["_tag"], "OrchestrationDispatchCommandError");
    let message = error["message"].as_str().expect("a message");
    assert_eq!(
        message,
        "Git command failed in GitVcsDriver.createWorktree (/tmp/widgets): git worktree add failed"
    );
    assert_eq!(error["cause"]["failures"][0]["error"]["_tag"], "GitCommandError");
    assert!(
        error.get("bootstrapThreadDisposition").is_none(),
        "T3's error has no such field: {error}"
    );
    let gone = thread(&server, "t1");
    assert!(gone.deleted, "t1 is deleted again");
    assert_eq!(gone.turns, 0, "no turn started");
    let model = snapshot(&client(&server, OPERATE)).await;
    let wire = model.thread(&ThreadId::new("t1").expect("id")).expect("listed");
    assert!(wire.deleted_at.is_some());
    // The stream saw it come and go.
    let mut removed = false;
    while !removed {
        for item in items(shell.chunk(&stream).await) {
            if let ShellItem::ThreadRemoved { thread_id: id, .. } = item {
                removed |= id.as_str() == "t1";
            }
        }
        shell.ack(&stream).await;
    }

    // A setup script that fails to start is recorded on the thread, whose turn goes on, as in
    // T3; without runSetupScript no script runs at all.
    for (thread_id, setup) in [("t2", true), ("t3", false)] {
        let branch = format!("afk/{thread_id}");
        sequence_of(
            &rpc.dispatch(bootstrap_turn(
                &format!("c-{thread_id}"),
                thread_id,
                "Fix it [sim:setup-fail]",
                Some(&branch),
                setup,
            ))
            .await,
        );
        let kept = thread(&server, thread_id);
        assert!(!kept.deleted && kept.turns == 1, "{kept:?}");
        let (_, detail) = get(
            &server,
            Some(OPERATE),
            &format!("/api/orchestration/threads/{thread_id}"),
        )
        .await;
        let failed = detail["thread"]["activities"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["kind"] == "setup-script.failed"));
        assert_eq!(failed, setup, "{detail}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_branch_that_exists_is_refused_like_git_worktree_add() {
    let server = start(ws_config()).await;
    let mut rpc = Rpc::connect(&server, OPERATE).await;
    sequence_of(
        &rpc.dispatch(bootstrap_turn("c1", "t1", "one", Some("afk/issue-1"), false))
            .await,
    );
    let exit = rpc
        .dispatch(bootstrap_turn("c2", "t2", "two", Some("afk/issue-1"), false))
        .await;
    let error = error_of(&exit);
    let message = error["message"].as_str().expect("a message");
    assert!(message.ends_with("git worktree add failed"), "{message}");
    assert!(error.get("bootstrapThreadDisposition").is_none(), "{error}");
    assert!(thread(&server, "t2").deleted);
    assert!(!thread(&server, "t1").deleted);

    let unknown = bootstrap_turn("c3", "t3", "three", Some("afk/three"), false);
    let mut unknown = unknown;
    unknown["bootstrap"]["createThread"]["projectId"] = json!("proj-nope");
    let error = rpc.dispatch(unknown).await;
    let message = error_of(&error)["message"]
        .as_str()
        .expect("a message")
        .to_owned();
    assert!(
        message.contains("does not exist"),
        "the decider refuses an unknown project: {message}"
    );
    assert!(server.thread(&ThreadId::new("t3").expect("id")).is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn http_dispatch_ignores_bootstrap_as_t3_does() {
    let server = start(ws_config()).await;
    let body = bootstrap_turn("c1", "t1", "Fix it", Some("afk/issue-1"), false).to_string();
    let (status, error) = post_dispatch(&server, Some(OPERATE), &body).await;
    assert_eq!(
        status, 500,
        "the turn is for a thread that does not exist: {error}"
    );
    assert_eq!(error["reason"], "orchestration_dispatch_failed");
    assert!(server.threads().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn the_shell_stream_sends_the_snapshot_then_every_change_in_order() {
    let server = start(ws_config()).await;
    let mut rpc = Rpc::connect(&server, OPERATE).await;
    let stream = rpc.subscribe(json!({"requestCompletionMarker": true})).await;
    let first = items(rpc.chunk(&stream).await);
    assert_eq!(first.len(), 1, "the snapshot alone, as T3 sends it: {first:?}");
    let ShellItem::Snapshot { snapshot } = first[0].clone() else {
        panic!("the snapshot comes first: {first:?}");
    };
    assert_eq!(snapshot.projects.len(), 1);
    let start_sequence = snapshot.snapshot_sequence;
    let mut fleet = Fleet::from_shell(snapshot);
    rpc.expect_silence("synchronized waits for the ack").await;
    rpc.ack(&stream).await;
    assert_eq!(items(rpc.chunk(&stream).await), [ShellItem::Synchronized]);
    rpc.ack(&stream).await;

    // A dispatch over HTTP, a turn the agent admits and completes: every event is an item.
    let http = client(&server, OPERATE);
    let id = http
        .dispatch(REPO, 7, "Fix the widget")
        .await
        .expect("dispatched");
    let mut seen = Vec::new();
    loop {
        for item in items(rpc.chunk(&stream).await) {
            seen.push(item.sequence().expect("an event with a sequence"));
            fleet.apply(item);
        }
        rpc.ack(&stream).await;
        if fleet
            .thread(&id)
            .and_then(|t| t.latest_turn.as_ref())
            .map(|t| t.state)
            == Some(TurnState::Completed)
        {
            break;
        }
    }
    let expected: Vec<u64> = (start_sequence + 1..=*seen.last().expect("events")).collect();
    assert_eq!(seen, expected, "one item per event, in order, none missing");
    assert_eq!(ThreadState::of(fleet.thread(&id)), ThreadState::Succeeded);
    server.shutdown().await;
}

#[tokio::test]
async fn no_chunk_follows_before_the_ack_and_the_next_carries_all_that_is_pending() {
    let server = start(ws_config()).await;
    let mut rpc = Rpc::connect(&server, READ_ONLY).await;
    let stream = rpc.subscribe(json!({})).await;
    rpc.chunk(&stream).await;
    apply(&server, thread_create("c1", "t1"));
    apply(&server, thread_create("c2", "t2"));
    rpc.expect_silence("no ack yet").await;
    rpc.ack(&stream).await;
    let next = items(rpc.chunk(&stream).await);
    assert_eq!(next.len(), 2, "both changes in one chunk: {next:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn resuming_after_a_sequence_replays_exactly_the_missed_events() {
    let server = start(ws_config()).await;
    apply(&server, thread_create("c0", "t0"));
    let seen = server.sequence();
    apply(&server, thread_create("c1", "t1"));
    apply(&server, turn_start("c2", "t1", "go [sim:hang]"));
    apply(&server, thread_create("c3", "t3"));
    let head = server.sequence();

    let mut rpc = Rpc::connect(&server, READ_ONLY).await;
    let stream = rpc
        .subscribe(json!({"afterSequence": seen, "requestCompletionMarker": true}))
        .await;
    let events = items(rpc.chunk(&stream).await);
    rpc.ack(&stream).await;
    assert_eq!(items(rpc.chunk(&stream).await), [ShellItem::Synchronized]);
    let sequences: Vec<u64> = events.iter().map(|i| i.sequence().expect("an event")).collect();
    assert_eq!(sequences, (seen + 1..=head).collect::<Vec<_>>());
    assert!(events
        .iter()
        .all(|i| matches!(i, ShellItem::ThreadUpserted { .. })));
    server.shutdown().await;
}

#[tokio::test]
async fn a_gap_beyond_the_replay_buffer_gets_a_snapshot() {
    let server = start(ws_config()).await;
    for i in 0..1_001 {
        apply(&server, thread_create(&format!("c{i}"), &format!("t{i}")));
    }
    let mut rpc = Rpc::connect(&server, READ_ONLY).await;
    for after in [0, server.sequence() + 5] {
        let stream = rpc.subscribe(json!({"afterSequence": after})).await;
        let first = items(rpc.chunk(&stream).await);
        let ShellItem::Snapshot { snapshot } = &first[0] else {
            panic!("after {after}: expected a snapshot, got {:?}", first[0]);
        };
        assert_eq!(snapshot.threads.len(), 1_001);
    }
    // A gap of exactly the buffer is still replayed.
    let stream = rpc
        .subscribe(json!({"afterSequence": server.sequence() - 1_000}))
        .await;
    assert_eq!(rpc.chunk(&stream).await.len(), 1_000);
    server.shutdown().await;
}

#[tokio::test]
async fn an_interrupt_ends_the_stream() {
    let server = start(ws_config()).await;
    let mut rpc = Rpc::connect(&server, READ_ONLY).await;
    let stream = rpc.subscribe(json!({})).await;
    rpc.chunk(&stream).await;
    rpc.send(json!({"_tag": "Interrupt", "requestId": stream})).await;
    let exit = rpc.exit_of(&stream).await;
    assert_eq!(exit["_tag"], "Failure");
    assert_eq!(exit["cause"][0]["_tag"], "Interrupt");
    rpc.ack(&stream).await;
    apply(&server, thread_create("c1", "t1"));
    rpc.expect_silence("the stream ended").await;
    server.shutdown().await;
}

#[tokio::test]
async fn ping_is_answered_and_protocol_errors_leave_the_socket_open() {
    let server = start(ws_config()).await;
    let mut rpc = Rpc::connect(&server, OPERATE).await;
    rpc.send(json!({"_tag": "Ping"})).await;
    assert_eq!(rpc.recv().await, json!({"_tag": "Pong"}));

    rpc.send_text("{not json".into()).await;
    let defect = rpc.recv().await;
    assert_eq!(defect["_tag"], "Defect", "{defect}");
    assert_eq!(defect["defect"]["name"], "SyntaxError");

    let id = rpc.request("orchestration.noSuchMethod", json!({})).await;
    let defect = rpc.recv().await;
    assert_eq!(defect["_tag"], "Defect", "{defect}");
    assert_eq!(
        defect["defect"], "Unknown request tag: orchestration.noSuchMethod",
        "request {id}"
    );

    rpc.send(json!({"_tag": "Request", "id": 7, "tag": "orchestration.subscribeShell", "payload": {}, "headers": []}))
        .await;
    let defect = rpc.recv().await;
    assert_eq!(
        defect["defect"], "Invalid request id: 7",
        "Effect takes string ids only"
    );

    let exit = rpc
        .dispatch(json!({"type": "thread.create", "commandId": "c1"}))
        .await;
    assert_eq!(exit["_tag"], "Failure");
    assert_eq!(
        exit["cause"][0]["_tag"], "Die",
        "a payload that does not decode: {exit}"
    );
    assert!(server.threads().is_empty());

    rpc.send(json!({"_tag": "Ping"})).await;
    assert_eq!(rpc.recv().await, json!({"_tag": "Pong"}), "the socket lives on");
    server.shutdown().await;
}

#[tokio::test]
async fn drop_sockets_closes_every_socket_without_a_close_frame() {
    let server = start(ws_config()).await;
    let mut first = Rpc::connect(&server, OPERATE).await;
    let mut second = Rpc::connect(&server, READ_ONLY).await;
    assert_eq!(server.ws_connections(), 2);
    server.drop_sockets();
    first.expect_dropped().await;
    second.expect_dropped().await;
    eventually("the server counts no open socket", || async {
        (server.ws_open_connections() == 0).then_some(())
    })
    .await;
    let mut again = Rpc::connect(&server, OPERATE).await;
    again.send(json!({"_tag": "Ping"})).await;
    assert_eq!(again.recv().await["_tag"], "Pong");
    assert_eq!(server.ws_connections(), 3, "the reconnect is counted");
    server.shutdown().await;
}

#[tokio::test]
async fn a_stalled_socket_sends_nothing_until_unstalled() {
    let server = start(ws_config()).await;
    let mut rpc = Rpc::connect(&server, OPERATE).await;
    server.stall_sockets(true);
    rpc.send(json!({"_tag": "Ping"})).await;
    let id = rpc
        .request("orchestration.dispatchCommand", thread_create("c1", "t1"))
        .await;
    rpc.expect_silence("stalled: no pong, no exit").await;
    assert_eq!(server.threads().len(), 1, "what arrives is still applied");
    server.stall_sockets(false);
    assert_eq!(rpc.recv().await["_tag"], "Pong");
    sequence_of(&rpc.exit_of(&id).await);
    server.shutdown().await;
}

#[tokio::test]
async fn a_socket_is_dropped_after_the_configured_number_of_stream_items() {
    let server = start(ws_config()).await;
    server.set_faults(FaultPlan {
        ws_drop_after_items: Some(3),
        ..FaultPlan::default()
    });
    let mut rpc = Rpc::connect(&server, READ_ONLY).await;
    let stream = rpc.subscribe(json!({"requestCompletionMarker": true})).await;
    assert_eq!(rpc.chunk(&stream).await.len(), 1, "the snapshot");
    rpc.ack(&stream).await;
    assert_eq!(rpc.chunk(&stream).await.len(), 1, "synchronized");
    rpc.ack(&stream).await;
    apply(&server, thread_create("c1", "t1"));
    apply(&server, thread_create("c2", "t2"));
    assert_eq!(rpc.chunk(&stream).await.len(), 1, "cut at the third item");
    rpc.expect_dropped().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_pause_holds_a_websocket_dispatch_and_a_lost_reply_drops_the_socket() {
    let server = start(ws_config()).await;
    let pause = server.pause("thread.turn.start", PausePhase::BeforeApply);
    let mut rpc = Rpc::connect(&server, OPERATE).await;
    let id = rpc
        .request(
            "orchestration.dispatchCommand",
            bootstrap_turn("c1", "t1", "Fix it", Some("afk/issue-1"), false),
        )
        .await;
    tokio::time::timeout(PROMPT, pause.hit())
        .await
        .expect("the dispatch is held");
    assert!(server.threads().is_empty(), "held before anything is applied");
    rpc.send(json!({"_tag": "Ping"})).await;
    assert_eq!(rpc.recv().await["_tag"], "Pong", "the connection still answers");
    pause.release();
    sequence_of(&rpc.exit_of(&id).await);

    server.set_faults(FaultPlan {
        lost_reply_rate: 1.0,
        ..FaultPlan::default()
    });
    rpc.request("orchestration.dispatchCommand", thread_create("c2", "t2"))
        .await;
    rpc.expect_dropped().await;
    assert!(
        !thread(&server, "t2").deleted,
        "applied, though the reply was lost"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn several_subscribers_are_independent() {
    let server = start(ws_config()).await;
    let mut fast = Rpc::connect(&server, READ_ONLY).await;
    let mut slow = Rpc::connect(&server, READ_ONLY).await;
    let a = fast.subscribe(json!({})).await;
    let b = slow.subscribe(json!({})).await;
    fast.chunk(&a).await;
    slow.chunk(&b).await;
    fast.ack(&a).await;
    apply(&server, thread_create("c1", "t1"));
    assert_eq!(
        fast.chunk(&a).await.len(),
        1,
        "the one that acked gets the change"
    );
    slow.expect_silence("the one that did not ack waits").await;
    server.shutdown().await;
}

#[tokio::test]
async fn server_get_config_reports_the_provider_instances_to_a_reader() {
    let mut providers = SimConfig::default_providers();
    providers[1].enabled = false;
    providers[1].status = "disabled".into();
    let server = start(SimConfig {
        providers,
        tokens: vec![
            TokenGrant::read_only(READ_ONLY),
            TokenGrant {
                token: "operate-only".into(),
                scopes: vec!["orchestration:operate".into()],
                lifetime: None,
            },
        ],
        ..ws_config()
    })
    .await;
    let config = common::client(&server, READ_ONLY).server_config().await.unwrap();
    let states: Vec<(&str, bool)> = config
        .providers
        .iter()
        .map(|p| (p.instance_id.as_str(), p.enabled))
        .collect();
    assert_eq!(states, [("claudeAgent", true), ("codex", false)]);
    let environment = common::client(&server, "no token at all")
        .environment()
        .await
        .unwrap();
    assert!(environment.server_version.ends_with("-t3-sim"), "{environment:?}");

    let mut rpc = Rpc::connect(&server, "operate-only").await;
    let exit = rpc.call("server.getConfig", json!({})).await;
    assert_eq!(
        exit["cause"][0]["error"]["requiredScope"], "orchestration:read",
        "as T3 does, server.getConfig needs the read scope: {exit}"
    );
}

#[tokio::test]
async fn the_first_subscriptions_can_be_answered_with_silence_while_pings_are_answered() {
    let server = start(ws_config()).await;
    server.set_faults(FaultPlan {
        silent_subscriptions: 1,
        ..FaultPlan::default()
    });
    let mut rpc = Rpc::connect(&server, READ_ONLY).await;
    let silent = rpc.subscribe(json!({"requestCompletionMarker": true})).await;
    rpc.expect_silence("no snapshot, no synchronized").await;
    rpc.send(json!({"_tag": "Ping"})).await;
    assert_eq!(rpc.recv().await["_tag"], "Pong", "the socket still answers");

    // Only the first: the next subscription, on the same socket, is served as usual.
    let served = rpc.subscribe(json!({"requestCompletionMarker": true})).await;
    assert_eq!(items(rpc.chunk(&served).await).len(), 1, "the snapshot");
    rpc.ack(&served).await;
    assert!(matches!(
        items(rpc.chunk(&served).await).as_slice(),
        [ShellItem::Synchronized]
    ));

    // The silent one ends when the client gives up on it.
    rpc.send(json!({"_tag": "Interrupt", "requestId": silent})).await;
    let exit = rpc.exit_of(&silent).await;
    assert_eq!(exit["_tag"], "Failure", "{exit}");
    server.shutdown().await;
}

/// A feed with fast pings and back-off, and `sync_timeout` for a silent subscription.
fn feed(server: &SimServer, sync_timeout: Duration) -> ShellFeed {
    let settings = FeedSettings {
        rpc: RpcSettings {
            ping_interval: Duration::from_millis(50),
            missed_pongs: 10,
            connect_timeout: PROMPT,
            call_timeout: PROMPT,
        },
        reconnect_initial: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(100),
        sync_timeout,
    };
    ShellFeed::start(&client(server, READ_ONLY), settings)
}

/// Waits (bounded) until `condition` holds, re-checking on every bump of the feed's counter.
async fn until(feed: &ShellFeed, what: &str, mut condition: impl FnMut(&ShellFeed) -> bool) {
    let mut changes = feed.changes();
    tokio::time::timeout(PATIENCE, async {
        while !condition(feed) {
            changes.changed().await.expect("the feed runs");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("gave up waiting for {what}; the feed is {}", feed.status()));
}

#[tokio::test]
async fn a_feed_whose_subscription_stays_silent_reconnects_and_synchronizes() {
    let server = start(ws_config()).await;
    apply(&server, thread_create("c1", "t1"));
    server.set_faults(FaultPlan {
        silent_subscriptions: 1,
        ..FaultPlan::default()
    });
    // Long enough that a slow round trip on a loaded machine does not end the second
    // subscription too (a third connection).
    let feed = feed(&server, Duration::from_secs(2));

    // The connection answers pings (the feed's 500 ms pong limit would otherwise end it first,
    // and the error would name missed pongs): what ends the first subscription is the stream's
    // silence, as the error says.
    until(&feed, "the silent subscription given up", |f| {
        matches!(f.status(), FeedStatus::Down { .. })
    })
    .await;
    let FeedStatus::Down { error } = feed.status() else {
        unreachable!()
    };
    assert!(error.contains("T3 sent nothing for 2s"), "{error}");
    assert!(feed.fleet().is_none(), "no view while catching up");

    until(&feed, "the feed live again", |f| f.fleet().is_some()).await;
    assert_eq!(server.ws_connections(), 2, "one reconnect");
    let fleet = feed.fleet().expect("live");
    let t1 = ThreadId::new("t1").expect("a valid id");
    assert!(fleet.thread(&t1).is_some(), "the fleet came with the reconnect");
    // The silent socket is closed, not left open beside the new one.
    eventually("the silent socket closed", || async {
        (server.ws_open_connections() == 1).then_some(())
    })
    .await;
    assert_eq!(server.ws_connections(), 2, "still one reconnect");
    server.shutdown().await;
}

#[tokio::test]
async fn a_quiet_synchronized_feed_is_not_reconnected() {
    let server = start(ws_config()).await;
    let sync_timeout = Duration::from_millis(100);
    let feed = feed(&server, sync_timeout);
    until(&feed, "the feed live", |f| f.fleet().is_some()).await;
    let live = feed.status();

    // Nothing changes at T3 for several times the catch-up limit: the feed stays as it was.
    let mut changes = feed.changes();
    changes.borrow_and_update();
    let moved = tokio::time::timeout(sync_timeout * 5, changes.changed()).await;
    assert!(moved.is_err(), "a quiet fleet moves nothing: {}", feed.status());
    assert_eq!(feed.status(), live);
    assert_eq!(server.ws_connections(), 1, "no reconnect");

    // And the stream still carries what happens next, on the same socket.
    let sequence = apply(&server, thread_create("c1", "t1"));
    until(&feed, "the new thread on the stream", |f| {
        f.fleet().is_some_and(|fleet| fleet.sequence() == sequence)
    })
    .await;
    assert_eq!(server.ws_connections(), 1);
    server.shutdown().await;
}
