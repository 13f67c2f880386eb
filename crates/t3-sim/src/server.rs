//! The HTTP server: T3's orchestration endpoints over the [`World`], behind T3's bearer auth, with
//! the fault plan and the pauses tests script ([`crate::shared`]); the router mounts `/ws`
//! ([`crate::ws`]).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use t3_client::ids::ThreadId;
use t3_client::wire::{scopes, ClientCommand, DispatchResult, ReadModel};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{FaultPlan, SimConfig, TokenGrant};
use crate::rng::SplitMix64;
use crate::shared::{
    dropped_connection, grant_at, json_response, lock, with_note, Endpoint, FaultState, LogNote, PauseInner,
    PausePhase, Shared,
};
use crate::world::{self, SimThread, TurnOutcome, World};

/// How long [`SimServer::shutdown`] lets requests in flight finish before it cuts them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A scripted hold on dispatch requests of one command type, from [`SimServer::pause`].
///
/// Until [`Pause::release`], every matching request is held at its phase; afterwards matching
/// requests pass. Crash tests use it to kill a client at a known point: "T3 has the request but
/// has not applied it" or "T3 applied it but the client never saw the reply".
#[derive(Debug, Clone)]
pub struct Pause {
    inner: Arc<PauseInner>,
}

impl Pause {
    /// Resolves once a matching request is held (at once if one was held already). Wrap it in a
    /// timeout: it waits for ever if no such request comes.
    pub async fn hit(&self) {
        let mut held = self.inner.held.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = held.wait_for(|n| *n > 0).await;
    }

    /// How many requests this pause has held so far.
    pub fn held(&self) -> u32 {
        *self.inner.held.borrow()
    }

    /// Lets the held requests, and every later matching one, go on.
    pub fn release(&self) {
        self.inner.released.send_replace(true);
    }

    /// True once released.
    pub fn is_released(&self) -> bool {
        *self.inner.released.borrow()
    }
}

/// A running stand-in on a TCP port. Dropping it stops the server without waiting for it;
/// [`SimServer::shutdown`] waits until it has stopped.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<watch::Sender<bool>>,
    server_task: Option<JoinHandle<()>>,
    scheduler_task: Option<JoinHandle<()>>,
}

impl SimServer {
    /// Starts a stand-in listening on `listen` (use port 0 for any free port) with `config`.
    /// Fails when the address cannot be bound or the configuration is unusable (a fault rate
    /// outside `[0, 1]`, an invalid project id).
    pub async fn start(listen: SocketAddr, config: SimConfig) -> io::Result<SimServer> {
        config
            .faults
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let world = World::new(&config).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let now = Instant::now();
        let tokens = config
            .tokens
            .iter()
            .map(|grant| (grant.token.clone(), grant_at(grant, now)))
            .collect();
        let mut ids = SplitMix64::new(config.seed ^ 0xE7_u64.rotate_left(48));
        let environment = serde_json::json!({
            "environmentId": ids.uuid().to_string(),
            "label": "t3-sim",
            "platform": { "os": platform_os(), "arch": platform_arch() },
            "serverVersion": concat!(env!("CARGO_PKG_VERSION"), "-t3-sim"),
            "capabilities": { "repositoryIdentity": false },
        });
        // T3's `ServerConfig` carries much more (keybindings, settings, observability); these
        // are the parts a client reads to know the server and its agents.
        let server_config = serde_json::json!({
            "environment": environment.clone(),
            "cwd": "/",
            "providers": config.providers,
            "availableEditors": [],
            "issues": [],
        });
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            timers_changed: Notify::new(),
            faults: Mutex::new(FaultState {
                plan: config.faults.clone(),
                since: now,
                rng: SplitMix64::new(config.seed),
                silenced: 0,
            }),
            forced_unavailable: AtomicBool::new(false),
            tokens: Mutex::new(tokens),
            pauses: Mutex::new(Vec::new()),
            environment,
            server_config,
            trace_ids: Mutex::new(ids),
            ws_accepted: AtomicU64::new(0),
            ws_open: AtomicUsize::new(0),
            ws_stall: watch::channel(false).0,
            ws_drops: watch::channel(0).0,
        });
        let (stop, mut stopped) = watch::channel(false);
        let app = router(shared.clone());
        let server_task = tokio::spawn(async move {
            let signal = async move {
                // Also ends when the sender is dropped with the server.
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(signal).await {
                warn!(error = %e, "t3-sim: the server stopped with an error");
            }
        });
        let scheduler_task = tokio::spawn(run_agent(shared.clone()));
        Ok(SimServer {
            addr,
            shared,
            stop: Some(stop),
            server_task: Some(server_task),
            scheduler_task: Some(scheduler_task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of its WebSocket RPC, e.g. `ws://127.0.0.1:40123/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Drops every open WebSocket now: the TCP connection closes without a close frame, as when
    /// T3 or the network dies. Calls in flight still apply (their replies are lost); streams end.
    pub fn drop_sockets(&self) {
        self.shared.ws_drops.send_modify(|n| *n += 1);
    }

    /// While `stalled`, open WebSockets send nothing — no chunk, no exit, no pong — but stay
    /// open, and the server keeps reading and applying what arrives; a client can tell only by
    /// its pings going unanswered. What was held back is sent once unstalled.
    pub fn stall_sockets(&self, stalled: bool) {
        self.shared.ws_stall.send_replace(stalled);
    }

    /// How many WebSocket connections were accepted so far (a reconnect counts again).
    pub fn ws_connections(&self) -> u64 {
        self.shared.ws_accepted.load(Ordering::SeqCst)
    }

    /// How many WebSocket connections are open now.
    pub fn ws_open_connections(&self) -> usize {
        self.shared.ws_open.load(Ordering::SeqCst)
    }

    /// The read model `GET /api/orchestration/snapshot` would return now.
    pub fn read_model(&self) -> ReadModel {
        lock(&self.shared.world).read_model()
    }

    /// The current event sequence (`snapshotSequence`).
    pub fn sequence(&self) -> u64 {
        lock(&self.shared.world).sequence()
    }

    /// Every thread, in creation order, deleted ones included.
    pub fn threads(&self) -> Vec<SimThread> {
        lock(&self.shared.world).threads()
    }

    /// One thread, if it was ever created.
    pub fn thread(&self, id: &ThreadId) -> Option<SimThread> {
        lock(&self.shared.world).thread(id)
    }

    /// Whether git has the local `branch` in any repository (a worktree was added on it), and
    /// the worktree it is checked out in: `None` when no repository has it.
    pub fn branch(&self, branch: &str) -> Option<Option<String>> {
        lock(&self.shared.world).branch(branch)
    }

    /// Replaces the fault plan; it takes effect with the next request and its outage window
    /// counts from now. Rates outside `[0, 1]` are clamped (with a warning) rather than refused,
    /// so that a test cannot leave the server in a state it did not ask for.
    pub fn set_faults(&self, faults: FaultPlan) {
        let mut plan = faults;
        if let Err(e) = plan.validate() {
            warn!("t3-sim: {e}; clamping the rates");
            plan.error_rate = plan.error_rate.clamp(0.0, 1.0);
            plan.drop_rate = plan.drop_rate.clamp(0.0, 1.0 - plan.error_rate);
            plan.lost_reply_rate = plan.lost_reply_rate.clamp(0.0, 1.0);
        }
        let mut state = lock(&self.shared.faults);
        state.plan = plan;
        state.since = Instant::now();
        state.silenced = 0;
    }

    /// While `on`, every request is answered 503, whatever the fault plan says.
    pub fn set_unavailable(&self, on: bool) {
        self.shared.forced_unavailable.store(on, Ordering::SeqCst);
    }

    /// Accepts `grant` from now on (its lifetime counts from now); replaces an earlier grant of
    /// the same token.
    pub fn grant_token(&self, grant: TokenGrant) {
        let now = Instant::now();
        lock(&self.shared.tokens).insert(grant.token.clone(), grant_at(&grant, now));
    }

    /// Stops accepting `token`: it gets 401 `auth_invalid` from the next request on.
    pub fn revoke_token(&self, token: &str) {
        lock(&self.shared.tokens).remove(token);
    }

    /// Holds dispatch requests whose command `type` is `command_type` (e.g. `thread.create`) at
    /// `phase` until the returned [`Pause`] is released.
    pub fn pause(&self, command_type: &str, phase: PausePhase) -> Pause {
        let inner = Arc::new(PauseInner {
            command_type: command_type.to_owned(),
            phase,
            held: watch::channel(0).0,
            released: watch::channel(false).0,
        });
        lock(&self.shared.pauses).push(inner.clone());
        Pause { inner }
    }

    /// Applies `command` as if it had been dispatched over HTTP, but without auth, faults or
    /// pauses: for tests and benchmarks that set up state quickly. `Err` is what T3 would have
    /// refused it with (a body its schema rejects, or its decider's reason); the command's
    /// receipt is kept, so sending the same `commandId` over HTTP later is answered the same.
    pub fn apply_command(&self, command: ClientCommand) -> Result<DispatchResult, String> {
        let command = world::validate(command)?;
        let outcome = lock(&self.shared.world).dispatch(&command, Instant::now());
        self.shared.timers_changed.notify_one();
        outcome
            .map(|sequence| DispatchResult { sequence })
            .map_err(|refusal| refusal.message)
    }

    /// Every client command dispatched to the stand-in so far (over HTTP or the RPC, with a
    /// worktree bootstrap's own steps left out), in order: its type (`thread.turn.interrupt`, …)
    /// and the thread it names.
    pub fn commands_received(&self) -> Vec<(&'static str, Option<ThreadId>)> {
        lock(&self.shared.world).received()
    }

    /// Ends the thread's starting or running turn now with `outcome` (a `[sim:hang]` turn, for
    /// instance). False when the thread is unknown or has no turn in progress.
    pub fn finish_turn(&self, thread_id: &str, outcome: TurnOutcome) -> bool {
        let Ok(id) = ThreadId::new(thread_id) else {
            return false;
        };
        lock(&self.shared.world).finish_turn(&id, outcome)
    }

    /// Every agent process is gone while each session keeps its status, as after the real T3
    /// restarted: turns in progress never end by themselves, and a `thread.turn.interrupt` for a
    /// thread whose session is not stopped makes T3 start its agent again to deliver it (the
    /// session reads `starting` for the startup delay). [`SimThread::agent_running`] shows it.
    pub fn lose_agents(&self) {
        lock(&self.shared.world).lose_agents();
    }

    /// Stops the server: releases every pause, stops accepting connections, lets requests in
    /// flight finish (for at most a few seconds) and stops the simulated agent.
    pub async fn shutdown(mut self) {
        for pause in lock(&self.shared.pauses).iter() {
            pause.released.send_replace(true);
        }
        if let Some(stop) = self.stop.take() {
            stop.send_replace(true);
        }
        // Upgraded connections are not the HTTP server's to wind down: end them here.
        self.drop_sockets();
        if let Some(mut task) = self.server_task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
        if let Some(task) = self.scheduler_task.take() {
            task.abort();
        }
    }
}

impl Drop for SimServer {
    /// Stops the server without waiting: held requests are released, the listener closes and
    /// open connections are wound down by the server task on its own (it ends by itself once
    /// they close), and the simulated agent stops.
    fn drop(&mut self) {
        for pause in lock(&self.shared.pauses).iter() {
            pause.released.send_replace(true);
        }
        if let Some(stop) = self.stop.take() {
            stop.send_replace(true);
        }
        self.drop_sockets();
        if let Some(task) = self.scheduler_task.take() {
            task.abort();
        }
    }
}

fn platform_os() -> &'static str {
    match std::env::consts::OS {
        "linux" => "linux",
        "macos" => "darwin",
        "windows" => "windows",
        _ => "unknown",
    }
}

fn platform_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        _ => "other",
    }
}

/// The simulated agent: one task for all threads, sleeping until the next turn is due.
async fn run_agent(shared: Arc<Shared>) {
    loop {
        let next = lock(&shared.world).fire_due(Instant::now());
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = shared.timers_changed.notified() => {}
                }
            }
            None => shared.timers_changed.notified().await,
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/orchestration/dispatch", post(dispatch))
        .route("/api/orchestration/snapshot", get(snapshot))
        .route("/api/orchestration/shell", get(shell))
        .route("/api/orchestration/threads/{thread_id}", get(thread_detail))
        .route("/.well-known/t3/environment", get(environment))
        .route("/ws", get(crate::ws::upgrade))
        .layer(middleware::from_fn(log_request))
        .with_state(shared)
}

/// Logs one line per request: method, path, status, time taken and what happened. Never
/// headers (the bearer) or bodies.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let note = response
        .extensions()
        .get::<LogNote>()
        .map(|n| n.0.clone())
        .unwrap_or_default();
    info!(
        "{method} {path} -> {} in {} ms{}{note}",
        response.status().as_u16(),
        started.elapsed().as_millis(),
        if note.is_empty() { "" } else { ": " },
    );
    response
}

async fn dispatch(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(response) = shared.enter(Endpoint::Dispatch).await {
        return *response;
    }
    if let Err(response) = shared.authorize(&headers, scopes::ORCHESTRATION_OPERATE) {
        return *response;
    }
    let command = match serde_json::from_slice::<ClientCommand>(&body)
        .map_err(|e| e.to_string())
        .and_then(world::validate)
    {
        Ok(command) => command,
        Err(detail) => return with_note(shared.invalid_command(), format!("invalid_command: {detail}")),
    };
    let kind = command.kind();
    shared.hold(kind, PausePhase::BeforeApply).await;
    let outcome = lock(&shared.world).dispatch(&command, Instant::now());
    shared.timers_changed.notify_one();
    shared.hold(kind, PausePhase::AfterApply).await;
    match outcome {
        Ok(sequence) => {
            if shared.roll_lost_reply() {
                return dropped_connection(&format!(
                    "{kind} applied at sequence {sequence}, reply lost (injected)"
                ));
            }
            match serde_json::to_vec(&DispatchResult { sequence }) {
                Ok(body) => with_note(
                    json_response(StatusCode::OK, body),
                    format!("{kind} sequence {sequence}"),
                ),
                Err(_) => shared.internal_error(Endpoint::Dispatch),
            }
        }
        Err(refusal) => with_note(
            shared.internal_error(Endpoint::Dispatch),
            format!("{kind} refused: {}", refusal.message),
        ),
    }
}

async fn snapshot(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(response) = shared.enter(Endpoint::Snapshot).await {
        return *response;
    }
    if let Err(response) = shared.authorize(&headers, scopes::ORCHESTRATION_READ) {
        return *response;
    }
    let body = lock(&shared.world).snapshot_json();
    match body {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(_) => shared.internal_error(Endpoint::Snapshot),
    }
}

async fn shell(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(response) = shared.enter(Endpoint::Shell).await {
        return *response;
    }
    if let Err(response) = shared.authorize(&headers, scopes::ORCHESTRATION_READ) {
        return *response;
    }
    let body = lock(&shared.world).shell_json();
    match body {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(_) => shared.internal_error(Endpoint::Shell),
    }
}

async fn thread_detail(
    State(shared): State<Arc<Shared>>,
    Path(thread_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = shared.enter(Endpoint::ThreadDetail).await {
        return *response;
    }
    if let Err(response) = shared.authorize(&headers, scopes::ORCHESTRATION_READ) {
        return *response;
    }
    let windowed = match thread_window(query.as_deref()) {
        Ok(windowed) => windowed,
        Err(message) => {
            let body = serde_json::json!({ "_tag": "HttpApiDecodeError", "message": message, "issues": [] });
            return with_note(
                json_response(StatusCode::BAD_REQUEST, body.to_string().into_bytes()),
                message,
            );
        }
    };
    let Ok(id) = ThreadId::new(thread_id) else {
        return shared.thread_not_found();
    };
    let body = lock(&shared.world).thread_detail_json(&id, windowed);
    match body {
        None => shared.thread_not_found(),
        Some(Ok(body)) => json_response(StatusCode::OK, body),
        Some(Err(_)) => shared.internal_error(Endpoint::ThreadDetail),
    }
}

/// Reads `turnLimit` (a positive integer) and `beforeCursor` (a non-empty string) as T3's
/// `OrchestrationThreadDetailWindow`; true when a window was asked for.
fn thread_window(query: Option<&str>) -> Result<bool, String> {
    let mut windowed = false;
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "turnLimit" => {
                if !value.parse::<u32>().is_ok_and(|n| n > 0) {
                    return Err("turnLimit must be a positive integer".into());
                }
                windowed = true;
            }
            "beforeCursor" => {
                if value.trim().is_empty() {
                    return Err("beforeCursor must be a non-empty string".into());
                }
                windowed = true;
            }
            _ => {}
        }
    }
    Ok(windowed)
}

async fn environment(State(shared): State<Arc<Shared>>) -> Response {
    if let Err(response) = shared.enter(Endpoint::Environment).await {
        return *response;
    }
    json_response(StatusCode::OK, shared.environment.to_string().into_bytes())
}
