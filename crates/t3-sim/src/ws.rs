//! T3's WebSocket RPC (`GET /ws`): Effect RPC envelopes, one JSON value per text frame, carrying
//! `orchestration.dispatchCommand`, the `orchestration.subscribeShell` stream and
//! `server.getConfig` (the provider instances, [`crate::SimConfig::providers`])
//! (`t3-api.md`, "WebSocket RPC"; T3's `apps/server/src/ws.ts`; Effect's `RpcServer`).
//!
//! **How a connection runs.** One task owns the socket: it reads frames, answers what is quick
//! (`Ping`, `Ack`, `Interrupt`, protocol defects, refusals) and writes everything queued for the
//! client, in order. A dispatch and each shell stream run as tasks of their own that queue their
//! replies, so that a paused dispatch or a stream waiting for an `Ack` never holds the others up.
//! The socket faults act in that one task: [`SimServer::stall_sockets`] stops it writing (it
//! keeps reading and applying), [`SimServer::drop_sockets`], a lost reply or the item limit end
//! it, which drops the TCP connection without a close frame.
//!
//! **As Effect RPC does it** (the points a client must not assume otherwise):
//! - request ids are strings of digits and are echoed as the same string; an id of another type
//!   is a protocol `Defect` (Effect 4 refuses it), as is an unknown method (`Unknown request
//!   tag: …`) or a frame that is not JSON;
//! - a payload that does not decode (or a command T3's schema refuses) ends the call with a
//!   `Die` cause carrying the decoding error, before any scope check;
//! - a missing scope is a `Fail` with `EnvironmentAuthorizationError`; a refused command a
//!   `Fail` with `OrchestrationDispatchCommandError {message, cause}` — nothing else: its
//!   `message` is the underlying error's (`Orchestration command invariant failed (…): …` for
//!   the decider, the failed step's for a bootstrap) and its `cause` that error. A refusal and an
//!   internal failure (the fault plan's injected ones look like a database error) carry the same
//!   tag: only the cause tells them apart, and over HTTP both are a 500;
//! - a stream sends one `Chunk` with everything pending, then waits for the client's `Ack`
//!   before the next; the snapshot (or replay) is a chunk of its own, and `synchronized` comes
//!   only after it was acked, at the end of the next chunk (after the changes made meanwhile);
//!   an `Interrupt` ends the stream with an `Exit` whose cause is `Interrupt`;
//! - a worktree bootstrap takes [`crate::SimConfig::bootstrap_delay`] between creating its
//!   thread and `git worktree add`, and [`crate::SimConfig::worktree_add`] for that; a client
//!   that disconnects meanwhile leaves the thread half made (branch recorded, no worktree, no
//!   turn; after the second, the branch and worktree exist in git), as T3 skips its cleanup for
//!   an interrupted call;
//! - the git methods `vcs.listRefs`, `vcs.removeWorktree` and `vcs.createWorktree` answer at
//!   once; a git failure is a `Fail` with T3's `GitCommandError`.
//!
//! [`SimServer::stall_sockets`]: crate::SimServer::stall_sockets
//! [`SimServer::drop_sockets`]: crate::SimServer::drop_sockets

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};
use t3_client::wire::rpc::{DISPATCH_COMMAND, SUBSCRIBE_SHELL};
use t3_client::wire::vcs::{
    CreateWorktree, ListRefs, RemoveWorktree, VCS_CREATE_WORKTREE, VCS_LIST_REFS, VCS_REMOVE_WORKTREE,
};
use t3_client::wire::{scopes, ClientCommand, ShellItem, SubscribeShell, SERVER_GET_CONFIG};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::shared::{lock, Endpoint, PausePhase, Shared, SocketFault};
use crate::world::{self, DispatchFailure};

/// The message of the fault plan's injected `/ws` failure: an internal failure, worded as T3
/// words a database error (`PersistenceSqlError`).
const INJECTED_FAILURE: &str =
    "SQL error in OrchestrationEngine.dispatch: t3-sim: injected failure (the command was not applied)";

/// What the connection task writes next.
enum Outgoing {
    /// One envelope, as a text frame.
    Text(String),
    /// Drop the connection now, without a close frame (a lost reply, the item limit).
    Drop(String),
}

/// The sending side of a connection, shared by the tasks that answer on it.
#[derive(Clone)]
struct Replies {
    out: mpsc::UnboundedSender<Outgoing>,
}

impl Replies {
    fn send(&self, envelope: &impl Serialize) {
        match serde_json::to_string(envelope) {
            // A closed channel means the connection is gone; the reply has nowhere to go.
            Ok(text) => {
                let _ = self.out.send(Outgoing::Text(text));
            }
            Err(e) => debug!(error = %e, "t3-sim: an envelope did not serialise"),
        }
    }

    fn drop_connection(&self, why: impl Into<String>) {
        let _ = self.out.send(Outgoing::Drop(why.into()));
    }

    fn defect(&self, defect: Value) {
        self.send(&json!({ "_tag": "Defect", "defect": defect }));
    }

    fn success(&self, request_id: &str, value: Value) {
        self.send(&json!({
            "_tag": "Exit",
            "requestId": request_id,
            "exit": { "_tag": "Success", "value": value },
        }));
    }

    fn failure(&self, request_id: &str, cause: Value) {
        self.send(&json!({
            "_tag": "Exit",
            "requestId": request_id,
            "exit": { "_tag": "Failure", "cause": [cause] },
        }));
    }

    /// A typed error (`Fail`).
    fn fail(&self, request_id: &str, error: Value) {
        self.failure(request_id, json!({ "_tag": "Fail", "error": error }));
    }

    /// An unexpected failure (`Die`), e.g. a payload that does not decode.
    fn die(&self, request_id: &str, defect: impl Into<String>) {
        self.failure(request_id, json!({ "_tag": "Die", "defect": defect.into() }));
    }

    fn interrupted(&self, request_id: &str) {
        self.failure(request_id, json!({ "_tag": "Interrupt", "fiberId": null }));
    }
}

/// `{"_tag":"Chunk","requestId":…,"values":[…]}`, serialised from shared items without copying
/// them.
#[derive(Serialize)]
struct Chunk<'a> {
    #[serde(rename = "_tag")]
    tag: &'static str,
    #[serde(rename = "requestId")]
    request_id: &'a str,
    values: Vec<&'a ShellItem>,
}

/// The handle of a running shell stream, kept by its connection.
struct StreamHandle {
    /// How many `Ack`s the client sent for it.
    acks: watch::Sender<u64>,
    interrupt: watch::Sender<bool>,
}

/// `GET /ws`: the faults and T3's bearer check on the upgrade request (a refused request is
/// never upgraded and gets the same JSON error body as HTTP), then the RPC connection.
pub(crate) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Err(response) = shared.enter(Endpoint::Socket).await {
        return *response;
    }
    let scopes = match shared.authenticate(&headers) {
        Ok(scopes) => scopes,
        Err(response) => return *response,
    };
    match upgrade {
        Ok(upgrade) => upgrade
            .on_upgrade(move |socket| serve(shared, socket, scopes))
            .into_response(),
        Err(rejection) => rejection.into_response(),
    }
}

/// Runs one connection until the client leaves or a fault drops it.
async fn serve(shared: Arc<Shared>, mut socket: WebSocket, scopes: Vec<String>) {
    let number = shared.ws_connected();
    info!("WS connection #{number} open");
    let (out, mut outgoing) = mpsc::unbounded_channel();
    let mut connection = Connection {
        shared: shared.clone(),
        scopes,
        replies: Replies { out },
        streams: HashMap::new(),
        stream_tasks: Vec::new(),
        items_sent: Arc::new(AtomicU64::new(0)),
        number,
        closed: watch::channel(false).0,
    };
    let mut stall = shared.ws_stall.subscribe();
    let mut drops = shared.ws_drops.subscribe();
    drops.borrow_and_update();
    let why = loop {
        let stalled = *stall.borrow_and_update();
        tokio::select! {
            _ = drops.changed() => break "dropped by the test (drop_sockets)".to_owned(),
            _ = stall.changed() => continue,
            next = outgoing.recv(), if !stalled => match next {
                Some(Outgoing::Text(text)) => {
                    if let Err(e) = socket.send(Message::Text(text.into())).await {
                        break format!("send failed: {e}");
                    }
                }
                Some(Outgoing::Drop(why)) => break why,
                // The connection holds a sender itself, so this does not happen.
                None => break "no more replies".to_owned(),
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => connection.frame(text.as_str()),
                Some(Ok(Message::Binary(bytes))) => match std::str::from_utf8(&bytes) {
                    Ok(text) => connection.frame(text),
                    Err(e) => connection.replies.defect(syntax_error(&e.to_string())),
                },
                // WebSocket-level pings are answered by the WebSocket layer itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) => {
                    // Answer the client's close frame, as a WebSocket server should.
                    let _ = socket.send(Message::Close(None)).await;
                    break "closed by the client".to_owned();
                }
                None => break "closed by the client".to_owned(),
                Some(Err(e)) => break format!("read failed: {e}"),
            },
        }
    };
    // Streams end with their connection; a dispatch in flight still applies (its reply is
    // lost), as a request does whose HTTP connection broke after it arrived.
    for task in &connection.stream_tasks {
        task.abort();
    }
    connection.closed.send_replace(true);
    shared.ws_disconnected();
    info!("WS connection #{number} closed: {why}");
    // Dropping the socket closes the TCP connection; after a fault no close frame was sent.
    drop(socket);
}

/// The state of one connection.
struct Connection {
    shared: Arc<Shared>,
    /// The scopes of the token the upgrade was made with; checked per call, as T3 does.
    scopes: Vec<String>,
    replies: Replies,
    /// Shell streams by request id.
    streams: HashMap<String, StreamHandle>,
    /// The tasks serving this connection's shell streams, ended with it.
    stream_tasks: Vec<JoinHandle<()>>,
    /// Shell stream items sent on this connection (for [`crate::FaultPlan::ws_drop_after_items`]).
    items_sent: Arc<AtomicU64>,
    number: u64,
    /// Set once the connection ended: a bootstrap in its middle steps stops there.
    closed: watch::Sender<bool>,
}

impl Connection {
    /// One text frame: a JSON message or an array of them (Effect's JSON serialisation accepts
    /// both). A frame that is not JSON is a protocol defect; the connection stays open.
    fn frame(&mut self, text: &str) {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                debug!("WS #{}: a frame that is not JSON: {e}", self.number);
                self.replies.defect(syntax_error(&e.to_string()));
                return;
            }
        };
        match value {
            Value::Array(messages) => messages.into_iter().for_each(|m| self.message(m)),
            message => self.message(message),
        }
    }

    fn message(&mut self, message: Value) {
        let tag = message.get("_tag").and_then(Value::as_str).unwrap_or_default();
        match tag {
            "Request" => self.request(&message),
            "Ack" => {
                if let Some(stream) = request_id_key(&message).and_then(|id| self.streams.get(&id)) {
                    stream.acks.send_modify(|n| *n += 1);
                }
            }
            "Interrupt" => {
                // The stream answers the interrupt itself; an interrupt for a dispatch is
                // ignored (the command is applied and answered), and for an unknown request it
                // is answered with nothing, as Effect does.
                if let Some(stream) = request_id_key(&message).and_then(|id| self.streams.remove(&id)) {
                    stream.interrupt.send_replace(true);
                }
            }
            "Ping" => self.replies.send(&json!({ "_tag": "Pong" })),
            "Pong" | "Eof" => {}
            other => self
                .replies
                .defect(Value::String(format!("Unknown request tag: {other}"))),
        }
    }

    fn request(&mut self, message: &Value) {
        let method = message.get("tag").and_then(Value::as_str).unwrap_or_default();
        if ![
            DISPATCH_COMMAND,
            SUBSCRIBE_SHELL,
            SERVER_GET_CONFIG,
            VCS_LIST_REFS,
            VCS_REMOVE_WORKTREE,
            VCS_CREATE_WORKTREE,
        ]
        .contains(&method)
        {
            self.replies
                .defect(Value::String(format!("Unknown request tag: {method}")));
            return;
        }
        // Effect 4 takes a request id as a string (of a bigint's digits) only.
        let id = match message.get("id") {
            Some(Value::String(id)) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => id.clone(),
            other => {
                let shown = other.map_or_else(|| "undefined".to_owned(), Value::to_string);
                self.replies
                    .defect(Value::String(format!("Invalid request id: {shown}")));
                return;
            }
        };
        if self.streams.contains_key(&id) {
            // A second request with the id of a running stream is ignored, as Effect does.
            return;
        }
        let payload = message.get("payload").cloned().unwrap_or(Value::Null);
        match method {
            DISPATCH_COMMAND => self.dispatch(id, payload),
            SUBSCRIBE_SHELL => self.subscribe_shell(id, payload),
            SERVER_GET_CONFIG => self.server_config(id),
            _ => self.git(method, id, payload),
        }
    }

    fn has_scope(&self, scope: &str, id: &str) -> bool {
        if self.scopes.iter().any(|s| s == scope) {
            return true;
        }
        info!("WS #{}: request {id} refused: missing scope {scope}", self.number);
        self.replies.fail(
            id,
            json!({
                "_tag": "EnvironmentAuthorizationError",
                "message": format!("The authenticated token is missing required scope: {scope}."),
                "requiredScope": scope,
            }),
        );
        false
    }

    fn dispatch(&mut self, id: String, payload: Value) {
        let command = match serde_json::from_value::<ClientCommand>(payload)
            .map_err(|e| e.to_string())
            .and_then(world::validate)
        {
            Ok(command) => command,
            Err(detail) => {
                info!("WS #{}: dispatch {id} does not decode: {detail}", self.number);
                self.replies.die(&id, detail);
                return;
            }
        };
        if !self.has_scope(scopes::ORCHESTRATION_OPERATE, &id) {
            return;
        }
        tokio::spawn(dispatch(
            self.shared.clone(),
            self.replies.clone(),
            id,
            command,
            self.number,
            self.closed.subscribe(),
        ));
    }

    fn subscribe_shell(&mut self, id: String, payload: Value) {
        let input = match serde_json::from_value::<SubscribeShell>(payload) {
            Ok(input) => input,
            Err(e) => {
                self.replies.die(&id, e.to_string());
                return;
            }
        };
        if !self.has_scope(scopes::ORCHESTRATION_READ, &id) {
            return;
        }
        let acks = watch::channel(0).0;
        let interrupt = watch::channel(false).0;
        let task = tokio::spawn(shell_stream(ShellStream {
            shared: self.shared.clone(),
            replies: self.replies.clone(),
            acks: acks.subscribe(),
            interrupt: interrupt.subscribe(),
            items_sent: self.items_sent.clone(),
            id: id.clone(),
            input,
        }));
        self.streams.insert(id, StreamHandle { acks, interrupt });
        self.keep(task);
    }

    /// `server.getConfig`: the server and its provider instances (`orchestration:read`).
    fn server_config(&mut self, id: String) {
        if self.has_scope(scopes::ORCHESTRATION_READ, &id) {
            self.replies.success(&id, self.shared.server_config.clone());
        }
    }

    /// The git methods (`vcs.listRefs` with `orchestration:read`, `vcs.removeWorktree` and
    /// `vcs.createWorktree` with `orchestration:operate`), answered at once.
    fn git(&mut self, method: &str, id: String, payload: Value) {
        let scope = if method == VCS_LIST_REFS {
            scopes::ORCHESTRATION_READ
        } else {
            scopes::ORCHESTRATION_OPERATE
        };
        let answer = match method {
            VCS_LIST_REFS => serde_json::from_value::<ListRefs>(payload).map(|input| {
                self.has_scope(scope, &id).then(|| {
                    let page = lock(&self.shared.world).list_refs(&input);
                    Ok(json!(page))
                })
            }),
            VCS_REMOVE_WORKTREE => serde_json::from_value::<RemoveWorktree>(payload).map(|input| {
                self.has_scope(scope, &id)
                    .then(|| lock(&self.shared.world).remove_worktree(&input))
            }),
            _ => serde_json::from_value::<CreateWorktree>(payload).map(|input| {
                self.has_scope(scope, &id)
                    .then(|| lock(&self.shared.world).create_worktree(&input))
            }),
        };
        match answer {
            Err(e) => self.replies.die(&id, e.to_string()),
            Ok(None) => {}
            Ok(Some(Ok(value))) => {
                self.shared.timers_changed.notify_one();
                self.replies.success(&id, value);
            }
            Ok(Some(Err(failure))) => {
                info!(
                    "WS #{}: {method} (request {id}) failed: {}",
                    self.number, failure.message
                );
                self.replies.fail(&id, git_error(&failure));
            }
        }
    }

    fn keep(&mut self, task: JoinHandle<()>) {
        self.stream_tasks.retain(|t| !t.is_finished());
        self.stream_tasks.push(task);
    }
}

/// The key of a message's `requestId` (Effect accepts a number there too).
fn request_id_key(message: &Value) -> Option<String> {
    match message.get("requestId")? {
        Value::String(id) => Some(id.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Effect's encoding of the `SyntaxError` a frame that is not JSON raises.
fn syntax_error(message: &str) -> Value {
    json!({ "name": "SyntaxError", "message": message })
}

/// `orchestration.dispatchCommand`: the fault plan, the pauses, the command (or the bootstrap
/// of a `thread.turn.start`), then the reply — unless the reply is lost.
async fn dispatch(
    shared: Arc<Shared>,
    replies: Replies,
    id: String,
    command: ClientCommand,
    number: u64,
    mut closed: watch::Receiver<bool>,
) {
    let kind = command.kind();
    match shared.socket_fault().await {
        None => {}
        Some(SocketFault::Drop(why)) => {
            info!("WS #{number}: {kind} (request {id}) not applied: {why}");
            replies.drop_connection(why);
            return;
        }
        Some(SocketFault::Error) => {
            info!("WS #{number}: {kind} (request {id}) not applied: injected failure");
            replies.fail(
                &id,
                dispatch_error(&DispatchFailure {
                    message: INJECTED_FAILURE.to_owned(),
                    cause: json!({ "name": "PersistenceSqlError", "message": INJECTED_FAILURE }),
                }),
            );
            return;
        }
    }
    shared.hold(kind, PausePhase::BeforeApply).await;
    let outcome = match &command {
        ClientCommand::ThreadTurnStart(turn) if turn.bootstrap.is_some() => {
            let begun = lock(&shared.world).begin_bootstrap(turn, Instant::now());
            match begun {
                Err(failure) => Err(failure),
                Ok(begun) => {
                    // T3 prepares the worktree now; a client gone meanwhile interrupts the call,
                    // and T3 does not clean up after an interrupted bootstrap.
                    let delay = lock(&shared.world).bootstrap_delay();
                    if until_closed(delay, &mut closed).await {
                        info!("WS #{number}: {kind} (request {id}) interrupted mid-bootstrap: the thread stays half made");
                        return;
                    }
                    let added = lock(&shared.world).add_bootstrap_worktree(turn);
                    // `git worktree add` runs to its end; a client gone before T3 records the
                    // worktree leaves the branch and the worktree made, the thread without them.
                    let git = lock(&shared.world).worktree_add();
                    if matches!(added, Ok(Some(_))) && until_closed(git, &mut closed).await {
                        info!("WS #{number}: {kind} (request {id}) interrupted after git worktree add: the thread stays half made, its branch and worktree exist");
                        return;
                    }
                    lock(&shared.world).finish_bootstrap(turn, begun, added, Instant::now())
                }
            }
        }
        _ => lock(&shared.world)
            .dispatch(&command, Instant::now())
            .map_err(DispatchFailure::from),
    };
    shared.timers_changed.notify_one();
    shared.hold(kind, PausePhase::AfterApply).await;
    match outcome {
        Ok(sequence) => {
            if shared.roll_lost_reply() {
                let why = format!("{kind} applied at sequence {sequence}, reply lost (injected)");
                info!("WS #{number}: {why}");
                replies.drop_connection(why);
                return;
            }
            info!("WS #{number}: {kind} (request {id}) sequence {sequence}");
            replies.success(&id, json!({ "sequence": sequence }));
        }
        Err(failure) => {
            info!("WS #{number}: {kind} (request {id}) refused: {}", failure.message);
            replies.fail(&id, dispatch_error(&failure));
        }
    }
}

/// T3's `GitCommandError` as a git RPC method fails with it: the error itself, with its message.
fn git_error(failure: &DispatchFailure) -> Value {
    let mut error = failure
        .cause
        .pointer("/failures/0/error")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(fields) = error.as_object_mut() {
        fields.insert("message".into(), Value::String(failure.message.clone()));
    }
    error
}

/// Waits `delay`; true when the client went away first (a zero delay is no window at all).
async fn until_closed(delay: Duration, closed: &mut watch::Receiver<bool>) -> bool {
    !delay.is_zero()
        && tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = closed.wait_for(|c| *c) => true,
        }
}

/// T3's `OrchestrationDispatchCommandError`: `message` and `cause`, no other field.
fn dispatch_error(failure: &DispatchFailure) -> Value {
    json!({
        "_tag": "OrchestrationDispatchCommandError",
        "message": failure.message,
        "cause": failure.cause,
    })
}

/// One `orchestration.subscribeShell` stream.
struct ShellStream {
    shared: Arc<Shared>,
    replies: Replies,
    acks: watch::Receiver<u64>,
    interrupt: watch::Receiver<bool>,
    items_sent: Arc<AtomicU64>,
    id: String,
    input: SubscribeShell,
}

/// The snapshot (or, resuming, the replay of the missed events), `synchronized` if asked, then
/// every event as it happens. One chunk carries everything pending; the next waits for the
/// client's `Ack`. A subscriber that falls more than [`world::SHELL_REPLAY_LIMIT`] events behind
/// (it does not ack) gets a fresh snapshot instead of the events it missed.
async fn shell_stream(mut stream: ShellStream) {
    let shared = stream.shared.clone();
    if silenced(&shared) {
        // Nothing at all until the client gives up on the stream (or the connection ends, which
        // ends this task with it).
        let _ = stream.interrupt.wait_for(|i| *i).await;
        stream.replies.interrupted(&stream.id);
        return;
    }
    let (mut head, mut pending, mut cursor) = {
        let world = lock(&shared.world);
        let mut head = world.watch_sequence();
        head.borrow_and_update();
        let replay = stream
            .input
            .after_sequence
            .and_then(|after| world.shell_events_after(after));
        let pending = match replay {
            Some(events) => events,
            None => vec![snapshot_item(&world)],
        };
        (head, pending, world.sequence())
    };
    // T3 sends `synchronized` only once the client acked the snapshot, after the changes made
    // meanwhile, in the same chunk.
    let mut marker = stream.input.request_completion_marker == Some(true);
    let mut chunks = 0u64;
    loop {
        if pending.is_empty() && std::mem::take(&mut marker) {
            let world = lock(&shared.world);
            head.borrow_and_update();
            pending = world
                .shell_events_after(cursor)
                .unwrap_or_else(|| vec![snapshot_item(&world)]);
            cursor = world.sequence();
            pending.push(Arc::new(ShellItem::Synchronized));
            continue;
        }
        if pending.is_empty() {
            tokio::select! {
                // An interrupt wins: its handle is gone once sent, which also closes the acks.
                biased;
                _ = stream.interrupt.wait_for(|i| *i) => {
                    stream.replies.interrupted(&stream.id);
                    return;
                }
                changed = head.changed() => if changed.is_err() { return },
            }
            let world = lock(&shared.world);
            head.borrow_and_update();
            pending = world
                .shell_events_after(cursor)
                .unwrap_or_else(|| vec![snapshot_item(&world)]);
            cursor = world.sequence();
            continue;
        }
        let limit = lock(&shared.faults).plan.ws_drop_after_items;
        let mut drop_now = false;
        if let Some(limit) = limit {
            let room = limit.saturating_sub(stream.items_sent.load(Ordering::SeqCst));
            if pending.len() as u64 >= room {
                pending.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                drop_now = true;
            }
        }
        if !pending.is_empty() {
            stream.replies.send(&Chunk {
                tag: "Chunk",
                request_id: &stream.id,
                values: pending.iter().map(|v| v.as_ref()).collect(),
            });
            stream
                .items_sent
                .fetch_add(pending.len() as u64, Ordering::SeqCst);
            pending.clear();
            chunks += 1;
        }
        if drop_now {
            stream.replies.drop_connection(format!(
                "dropped after {} shell stream items (injected)",
                stream.items_sent.load(Ordering::SeqCst)
            ));
            return;
        }
        tokio::select! {
            biased;
            _ = stream.interrupt.wait_for(|i| *i) => {
                stream.replies.interrupted(&stream.id);
                return;
            }
            acked = stream.acks.wait_for(|n| *n >= chunks) => if acked.is_err() { return },
        }
    }
}

/// Whether this subscription is one the fault plan answers with silence
/// ([`crate::FaultPlan::silent_subscriptions`]); counts it when it is.
fn silenced(shared: &Shared) -> bool {
    let mut faults = lock(&shared.faults);
    let silent = faults.silenced < faults.plan.silent_subscriptions;
    if silent {
        faults.silenced += 1;
        info!("shell subscription answered with silence (injected)");
    }
    silent
}

fn snapshot_item(world: &world::World) -> Arc<ShellItem> {
    Arc::new(ShellItem::Snapshot {
        snapshot: world.shell_snapshot(),
    })
}
