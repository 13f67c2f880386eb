//! Conformance: one scenario set, run against the stand-in and against the **real** T3 Code
//! server (when `AFK_REAL_T3` names it; see `t3_sim::real`), each checked against what the real
//! server was observed to do: the fields afk reads (the state trail of a thread on the shell
//! stream, the snapshot and thread detail, dispatch replies and errors over HTTP and `/ws`).
//!
//! A scenario's expectation is written down once; the stand-in must meet it on every run, the
//! real server whenever it is available (else the real half prints one `SKIP:` line). So a
//! difference shows up as a failure of one half, naming the target.
//!
//! A thread's trail is its `latestTurn.state/session.status` pairs in the order the shell stream
//! showed them, repeats collapsed (`null` for a missing turn or session), `removed` for a
//! `thread-removed` item.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use t3_sim::real::{self, Agent, RealProject, RealT3};
use t3_sim::{SimConfig, SimProject, SimServer, TokenGrant};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// How long a scenario waits for the server to get somewhere (real T3 is slow on two cores).
const PATIENCE: Duration = Duration::from_secs(60);

/// The agent the real server runs: this crate's `t3-sim` binary.
fn agent() -> Agent {
    Agent::new(env!("CARGO_BIN_EXE_t3-sim"), &["agent"])
}

/// The server a scenario runs against.
enum Target {
    Sim {
        server: SimServer,
        project: String,
        cwd: String,
    },
    Real {
        t3: Held,
        project: RealProject,
    },
}

/// A real server: the file's shared one, or one of a test's own (killed when dropped).
enum Held {
    Shared(&'static RealT3),
    Owned(Box<RealT3>),
}

impl std::ops::Deref for Held {
    type Target = RealT3;

    fn deref(&self) -> &RealT3 {
        match self {
            Held::Shared(t3) => t3,
            Held::Owned(t3) => t3,
        }
    }
}

const SIM_TOKEN: &str = "conformance-token";

impl Target {
    /// The stand-in, with real T3's pace ([`SimConfig::realistic`]).
    async fn sim() -> Target {
        let cwd = "/srv/conformance/widgets".to_owned();
        let config = SimConfig {
            tokens: vec![TokenGrant::operate(SIM_TOKEN)],
            projects: vec![SimProject::new("proj-conformance", cwd.clone())],
            worktrees_dir: PathBuf::from("/tmp/t3-sim-conformance/worktrees"),
            seed: 12,
            ..SimConfig::realistic()
        };
        let server = common::start(config).await;
        Target::Sim {
            server,
            project: "proj-conformance".into(),
            cwd,
        }
    }

    /// The real server this file shares, with a project (and repository) for `scenario`;
    /// `None` after a `SKIP:` line when it is not available.
    async fn real(scenario: &str) -> Option<Target> {
        let t3 = real::shared(&format!("conformance::{scenario} against the real T3"), || {
            real::Options { agent: Some(agent()) }
        })
        .await?;
        let project = t3
            .add_project(&format!("proj-{scenario}"), scenario)
            .await
            .unwrap_or_else(|e| panic!("the project for {scenario}: {e:#}"));
        Some(Target::Real {
            t3: Held::Shared(t3),
            project,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Sim { .. } => "t3-sim",
            Target::Real { .. } => "real T3",
        }
    }

    fn url(&self) -> String {
        match self {
            Target::Sim { server, .. } => server.url(),
            Target::Real { t3, .. } => t3.url().to_owned(),
        }
    }

    fn token(&self) -> String {
        match self {
            Target::Sim { .. } => SIM_TOKEN.to_owned(),
            Target::Real { t3, .. } => t3.token().to_owned(),
        }
    }

    fn project(&self) -> String {
        match self {
            Target::Sim { project, .. } => project.clone(),
            Target::Real { project, .. } => project.id.clone(),
        }
    }

    fn cwd(&self) -> String {
        match self {
            Target::Sim { cwd, .. } => cwd.clone(),
            Target::Real { project, .. } => project.workspace.display().to_string(),
        }
    }

    /// Whether an agent process (or the stand-in's simulated one) works for `thread` now.
    fn agent_running(&self, thread: &str, worktree: Option<&str>) -> bool {
        match self {
            Target::Sim { server, .. } => t3_client::ids::ThreadId::new(thread)
                .ok()
                .and_then(|id| server.thread(&id))
                .is_some_and(|t| t.agent_running),
            Target::Real { t3, .. } => {
                worktree.is_some_and(|w| !t3.agents_in(std::path::Path::new(w)).is_empty())
            }
        }
    }

    /// How many times an agent was started for `thread` (working in `worktree`).
    fn agent_starts(&self, thread: &str, worktree: &str) -> usize {
        match self {
            Target::Sim { server, .. } => t3_client::ids::ThreadId::new(thread)
                .ok()
                .and_then(|id| server.thread(&id))
                .map_or(0, |t| t.agent_starts as usize),
            Target::Real { t3, .. } => t3.agent_starts_in(std::path::Path::new(worktree)),
        }
    }

    /// T3 restarts: every agent process is gone, sessions keep their status.
    async fn restart(&self) {
        match self {
            Target::Sim { server, .. } => server.lose_agents(),
            Target::Real { t3, .. } => t3.restart().await.expect("T3 restarts"),
        }
    }

    async fn http(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client");
        let mut request = client
            .request(method, format!("{}{path}", self.url()))
            .bearer_auth(self.token());
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = request.send().await.expect("the server answers");
        let status = reply.status().as_u16();
        let bytes = reply.bytes().await.expect("a body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn http_dispatch(&self, command: &Value) -> (u16, Value) {
        self.http(
            reqwest::Method::POST,
            "/api/orchestration/dispatch",
            Some(command),
        )
        .await
    }

    /// The snapshot's thread `id`.
    async fn snapshot_thread(&self, id: &str) -> Value {
        let (status, body) = self
            .http(reqwest::Method::GET, "/api/orchestration/snapshot", None)
            .await;
        assert_eq!(status, 200, "{}: snapshot: {body}", self.name());
        body["threads"]
            .as_array()
            .and_then(|threads| threads.iter().find(|t| t["id"] == id).cloned())
            .unwrap_or(Value::Null)
    }

    /// The shell's thread `id`.
    async fn shell_thread(&self, id: &str) -> Value {
        let (status, body) = self
            .http(reqwest::Method::GET, "/api/orchestration/shell", None)
            .await;
        assert_eq!(status, 200, "{}: shell: {body}", self.name());
        body["threads"]
            .as_array()
            .and_then(|threads| threads.iter().find(|t| t["id"] == id).cloned())
            .unwrap_or(Value::Null)
    }

    async fn detail(&self, id: &str) -> (u16, Value) {
        self.http(
            reqwest::Method::GET,
            &format!("/api/orchestration/threads/{id}"),
            None,
        )
        .await
    }

    /// A connection with the shell stream followed (every chunk acked at once).
    ///
    /// Once in CI (2 cores, the real T3 just started, another scenario starting beside) the real
    /// server sent nothing for a minute after a subscription; what ended it is now said, and a
    /// scenario that cannot subscribe tries once more on a new socket, saying so, before it
    /// fails: the scenarios check what T3 does with threads, not its first subscription.
    async fn connect(&self) -> Conn {
        let conn = Conn::open(self).await;
        let Err(first) = conn.follow_shell(PATIENCE / 2).await else {
            return conn;
        };
        eprintln!(
            "{}: the first shell subscription failed ({first}); once more on a new socket{}",
            self.name(),
            self.log_tail()
        );
        conn.close();
        let conn = Conn::open(self).await;
        if let Err(why) = conn.follow_shell(PATIENCE).await {
            panic!("{}: {why}{}", self.name(), self.log_tail());
        }
        conn
    }

    /// The end of the real server's log, to read beside a failure (empty for the stand-in).
    fn log_tail(&self) -> String {
        match self {
            Target::Sim { .. } => String::new(),
            Target::Real { t3, .. } => format!("\nthe real T3's log ends:\n{}", t3.log_tail(40)),
        }
    }
}

/// A raw `/ws` connection: calls by id, and the shell stream's items collected as they come.
struct Conn {
    out: mpsc::UnboundedSender<Message>,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
    items: Arc<Mutex<Vec<Value>>>,
    chunks: Arc<Mutex<Vec<Vec<Value>>>>,
    next_id: Mutex<u64>,
    auto_ack: Arc<std::sync::atomic::AtomicBool>,
    /// Set when the server's side of the socket ended (closed, or an error).
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Conn {
    async fn open(target: &Target) -> Conn {
        let url = format!("{}/ws", target.url().replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().expect("a valid URL");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", target.token()).parse().expect("a header"),
        );
        let (ws, _) =
            tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(request))
                .await
                .expect("the upgrade is answered in time")
                .expect("the upgrade is accepted");
        let (mut sink, mut stream) = ws.split();
        let (out, mut outgoing) = mpsc::unbounded_channel::<Message>();
        let pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>> = Arc::default();
        let items: Arc<Mutex<Vec<Value>>> = Arc::default();
        let chunks: Arc<Mutex<Vec<Vec<Value>>>> = Arc::default();
        let auto_ack = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                let close = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || close {
                    break;
                }
            }
        });
        let reader = (
            pending.clone(),
            items.clone(),
            chunks.clone(),
            out.clone(),
            auto_ack.clone(),
            closed.clone(),
        );
        tokio::spawn(async move {
            let (pending, items, chunks, out, auto_ack, closed) = reader;
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                match message["_tag"].as_str() {
                    Some("Exit") => {
                        let id = message["requestId"].as_str().unwrap_or_default().to_owned();
                        if let Some(reply) = lock(&pending).remove(&id) {
                            let _ = reply.send(message["exit"].clone());
                        }
                    }
                    Some("Chunk") => {
                        let values = message["values"].as_array().cloned().unwrap_or_default();
                        lock(&chunks).push(values.clone());
                        lock(&items).extend(values);
                        if auto_ack.load(std::sync::atomic::Ordering::SeqCst) {
                            let ack = json!({"_tag": "Ack", "requestId": message["requestId"]});
                            let _ = out.send(Message::text(ack.to_string()));
                        }
                    }
                    Some("Ping") => {
                        let _ = out.send(Message::text(json!({"_tag": "Pong"}).to_string()));
                    }
                    _ => {}
                }
            }
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Conn {
            out,
            pending,
            items,
            chunks,
            next_id: Mutex::new(1),
            auto_ack,
            closed,
        }
    }

    fn request(&self, method: &str, payload: Value) -> (String, oneshot::Receiver<Value>) {
        let id = {
            let mut next = lock(&self.next_id);
            *next += 1;
            next.to_string()
        };
        let (reply, exit) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), reply);
        let request = json!({"_tag": "Request", "id": id, "tag": method, "payload": payload, "headers": []});
        let _ = self.out.send(Message::text(request.to_string()));
        (id, exit)
    }

    async fn dispatch(&self, command: Value) -> Value {
        self.call("orchestration.dispatchCommand", command).await
    }

    /// One unary RPC call; its `Exit`.
    async fn call(&self, method: &str, payload: Value) -> Value {
        let (_, exit) = self.request(method, payload);
        tokio::time::timeout(PATIENCE, exit)
            .await
            .unwrap_or_else(|_| panic!("{method} is answered in time"))
            .expect("the connection stays open")
    }

    /// Subscribes to the shell stream and waits for its `synchronized` marker; else says what
    /// ended the wait: a subscription the server ended, a socket it closed, or silence.
    async fn follow_shell(&self, patience: Duration) -> Result<(), String> {
        let (_, mut exit) = self.request(
            "orchestration.subscribeShell",
            json!({"requestCompletionMarker": true}),
        );
        let deadline = Instant::now() + patience;
        loop {
            if lock(&self.items).iter().any(|i| i["kind"] == "synchronized") {
                return Ok(());
            }
            if let Ok(exit) = exit.try_recv() {
                return Err(format!(
                    "the shell subscription ended before it synchronized: {exit}"
                ));
            }
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("the socket closed before the shell stream synchronized".into());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "gave up waiting for the shell stream to synchronize ({} chunks, no exit)",
                    lock(&self.chunks).len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The thread's trail so far.
    fn trail(&self, thread: &str) -> Vec<String> {
        let mut trail: Vec<String> = Vec::new();
        for item in lock(&self.items).iter() {
            let step = match item["kind"].as_str() {
                Some("thread-upserted") if item["thread"]["id"] == thread => state_of(&item["thread"]),
                Some("thread-removed") if item["threadId"] == thread => "removed".to_owned(),
                _ => continue,
            };
            if trail.last() != Some(&step) {
                trail.push(step);
            }
        }
        trail
    }

    /// Waits until the thread's trail ends with `last`; returns the trail.
    async fn trail_until(&self, thread: &str, last: &str) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let trail = self.trail(thread);
            if trail.last().map(String::as_str) == Some(last) {
                return trail;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for thread {thread} to reach {last}: its trail is {trail:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes the socket at once (a client that dies).
    fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `latestTurn.state/session.status` of a thread's JSON.
fn state_of(thread: &Value) -> String {
    let turn = thread["latestTurn"]["state"].as_str().unwrap_or("null");
    let session = thread["session"]["status"].as_str().unwrap_or("null");
    format!("{turn}/{session}")
}

/// The trail of a turn that ran and completed.
const RAN: [&str; 4] = ["null/null", "null/starting", "running/running", "completed/ready"];

/// Checks a thread's trail against what the real server was seen doing (`expected`). The
/// stand-in must show exactly that. The real T3 coalesces the changes of 50 ms into one stream
/// item, so a state that lasted less may not show: its trail must be `expected` with some states
/// left out, ending as `expected` does, and show one state of each of `required`.
fn assert_trail(target: &Target, trail: &[String], expected: &[&str], required: &[&[&str]]) {
    if let Target::Sim { .. } = target {
        assert_eq!(trail, expected, "{}", target.name());
        return;
    }
    let mut rest = expected.iter();
    for step in trail {
        assert!(
            rest.any(|e| e == step),
            "{}: trail {trail:?} is not {expected:?} with states left out",
            target.name()
        );
    }
    assert_eq!(
        trail.last().map(String::as_str),
        expected.last().copied(),
        "{}",
        target.name()
    );
    for any in required {
        assert!(
            trail.iter().any(|s| any.contains(&s.as_str())),
            "{}: trail {trail:?} shows none of {any:?}",
            target.name()
        );
    }
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn now() -> String {
    t3_client::wire::Timestamp::now().to_iso()
}

/// A `thread.turn.start` with a worktree bootstrap, as afk sends it (codex instance).
fn bootstrap(target: &Target, thread: &str, branch: &str, text: &str) -> Value {
    json!({
        "type": "thread.turn.start",
        "commandId": uuid(),
        "threadId": thread,
        "message": {"messageId": uuid(), "role": "user", "text": text, "attachments": []},
        "runtimeMode": "full-access",
        "interactionMode": "default",
        "createdAt": now(),
        "bootstrap": {
            "createThread": {
                "projectId": target.project(),
                "title": format!("conformance: {text}"),
                "modelSelection": {"instanceId": "codex", "model": "gpt-5-codex"},
                "runtimeMode": "full-access",
                "interactionMode": "default",
                "branch": branch,
                "worktreePath": null,
                "createdAt": now(),
            },
            "prepareWorktree": {"projectCwd": target.cwd(), "baseBranch": "main", "branch": branch},
            "runSetupScript": false,
        },
    })
}

fn command(kind: &str, thread: &str, extra: Value) -> Value {
    let mut command = json!({"type": kind, "commandId": uuid(), "threadId": thread, "createdAt": now()});
    if let (Some(command), Some(extra)) = (command.as_object_mut(), extra.as_object()) {
        command.extend(extra.clone());
    }
    command
}

fn assert_success(target: &Target, exit: &Value, what: &str) {
    assert_eq!(exit["_tag"], "Success", "{}: {what}: {exit}", target.name());
}

/// Runs `scenario` against the real server (when available) and then the stand-in.
async fn both<F, Fut>(name: &str, scenario: F)
where
    F: Fn(Target) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if let Some(real) = Target::real(name).await {
        scenario(real).await;
    }
    scenario(Target::sim().await).await;
}

/// A bootstrapped turn runs in a worktree on its branch: the thread appears before the reply,
/// the turn starts after it (`latestTurn` null, session `starting` in between), completes, and
/// the agent's commit is on the branch.
#[tokio::test]
async fn a_bootstrapped_turn_runs_in_its_worktree() {
    both("bootstrap", |target| async move {
        let conn = target.connect().await;
        let thread = uuid();
        let exit = conn
            .dispatch(bootstrap(
                &target,
                &thread,
                "afk/issue-1",
                "Fix it [sim:duration=300]",
            ))
            .await;
        assert_success(&target, &exit, "the bootstrap");
        let at_reply = conn.trail(&thread);
        assert!(
            at_reply.first().map(String::as_str) == Some("null/null"),
            "{}: the thread exists before the reply: {at_reply:?}",
            target.name()
        );
        assert!(
            !at_reply.iter().any(|s| s.starts_with("running")),
            "{}: the turn starts only after the reply: {at_reply:?}",
            target.name()
        );
        let trail = conn.trail_until(&thread, "completed/ready").await;
        assert_trail(&target, &trail, &RAN, &[]);
        let snapshot = target.snapshot_thread(&thread).await;
        assert_eq!(snapshot["branch"], "afk/issue-1", "{}", target.name());
        let worktree = snapshot["worktreePath"].as_str().unwrap_or_default();
        assert!(
            worktree.ends_with("/afk-issue-1"),
            "{}: worktree {worktree}",
            target.name()
        );
        assert_eq!(snapshot["messages"], json!([]), "{}", target.name());
        let (status, detail) = target.detail(&thread).await;
        assert_eq!(status, 200, "{}", target.name());
        let messages = detail["thread"]["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(messages.len(), 2, "{}: {messages:?}", target.name());
        assert_eq!(messages[1]["role"], "assistant", "{}", target.name());
        // A turn that ran to its end has its checkpoint captured `ready`, never `missing`.
        let detail = wait_for_detail(&target, &thread, |d| !captured(d).is_empty()).await;
        let statuses: Vec<String> = captured(&detail).into_iter().map(|(_, status)| status).collect();
        assert_eq!(statuses, ["ready"], "{}", target.name());
        if let Target::Real { project, .. } = &target {
            let log = real::git(std::path::Path::new(worktree), &["log", "-1", "--format=%s"])
                .expect("the worktree is a git checkout");
            assert_eq!(log, "t3-sim: Fix it [sim:duration=300]");
            let branch = real::git(&project.workspace, &["rev-parse", "afk/issue-1"]).expect("the branch");
            let head = real::git(std::path::Path::new(worktree), &["rev-parse", "HEAD"]).expect("HEAD");
            assert_eq!(branch, head, "the agent committed on the thread's branch");
        }
    })
    .await;
}

/// `[sim:fail]`: the turn and the session end in error with the agent's message.
#[tokio::test]
async fn a_failing_turn_ends_in_error() {
    both("fail", |target| async move {
        let conn = target.connect().await;
        let thread = uuid();
        let exit = conn
            .dispatch(bootstrap(
                &target,
                &thread,
                "afk/issue-2",
                "Fail [sim:fail] [sim:duration=200]",
            ))
            .await;
        assert_success(&target, &exit, "the bootstrap");
        let trail = conn.trail_until(&thread, "error/error").await;
        assert_trail(
            &target,
            &trail,
            &["null/null", "null/starting", "running/running", "error/error"],
            &[],
        );
        let snapshot = target.snapshot_thread(&thread).await;
        let error = snapshot["session"]["lastError"].as_str().unwrap_or_default();
        assert!(error.contains("[sim:fail]"), "{}: {error}", target.name());
    })
    .await;
}

/// An interrupt naming the turn: `interrupted/running`, `interrupted/ready`, then T3 marks the
/// turn `completed` (`completed/ready`). One without a turn id never shows `interrupted`.
#[tokio::test]
async fn an_interrupted_turn_ends_completed() {
    both("interrupt", |target| async move {
        let conn = target.connect().await;
        let named = uuid();
        let exit = conn
            .dispatch(bootstrap(&target, &named, "afk/issue-3", "Hang [sim:hang]"))
            .await;
        assert_success(&target, &exit, "the bootstrap");
        conn.trail_until(&named, "running/running").await;
        let turn = target.snapshot_thread(&named).await["latestTurn"]["turnId"].clone();
        let exit = conn
            .dispatch(command("thread.turn.interrupt", &named, json!({"turnId": turn})))
            .await;
        assert_success(&target, &exit, "the interrupt");
        let trail = conn.trail_until(&named, "completed/ready").await;
        assert_trail(
            &target,
            &trail,
            &[
                "null/null",
                "null/starting",
                "running/running",
                "interrupted/running",
                "interrupted/ready",
                "completed/ready",
            ],
            &[&["interrupted/running", "interrupted/ready"]],
        );

        let unnamed = uuid();
        let exit = conn
            .dispatch(bootstrap(&target, &unnamed, "afk/issue-4", "Hang [sim:hang]"))
            .await;
        assert_success(&target, &exit, "the bootstrap");
        conn.trail_until(&unnamed, "running/running").await;
        let exit = conn
            .dispatch(command("thread.turn.interrupt", &unnamed, json!({})))
            .await;
        assert_success(&target, &exit, "the interrupt");
        let trail = conn.trail_until(&unnamed, "completed/ready").await;
        assert_trail(&target, &trail, &RAN, &[]);

        // The one sign left in T3's data (afk reads it before calling a completed turn a
        // success): the interrupted turn's checkpoint was captured `missing`.
        for thread in [&named, &unnamed] {
            let detail = wait_for_detail(&target, thread, |detail| {
                captured(detail).iter().any(|(_, status)| status == "missing")
            })
            .await;
            let turn = detail["thread"]["latestTurn"]["turnId"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                captured(&detail).contains(&(turn, "missing".to_owned())),
                "{}: {:?}",
                target.name(),
                captured(&detail)
            );
        }
    })
    .await;
}

/// The `checkpoint.captured` activities of a thread's detail: (turn id, status).
fn captured(detail: &Value) -> Vec<(String, String)> {
    detail["thread"]["activities"]
        .as_array()
        .map(|activities| {
            activities
                .iter()
                .filter(|a| a["kind"] == "checkpoint.captured")
                .map(|a| {
                    (
                        a["turnId"].as_str().unwrap_or_default().to_owned(),
                        a["payload"]["status"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (bounded) until thread `id`'s detail satisfies `done`; returns it.
async fn wait_for_detail(target: &Target, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, detail) = target.detail(id).await;
        if status == 200 && done(&detail) {
            return detail;
        }
        assert!(
            Instant::now() < deadline,
            "{}: thread {id}'s detail never showed it: {detail}",
            target.name()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session stop ends the turn `interrupted/stopped` and the agent; stopping again changes
/// nothing and starts no agent.
#[tokio::test]
async fn a_session_stop_stops_the_agent() {
    both("stop", |target| async move {
        let conn = target.connect().await;
        let thread = uuid();
        let exit = conn
            .dispatch(bootstrap(&target, &thread, "afk/issue-5", "Hang [sim:hang]"))
            .await;
        assert_success(&target, &exit, "the bootstrap");
        conn.trail_until(&thread, "running/running").await;
        let worktree = target.snapshot_thread(&thread).await["worktreePath"]
            .as_str()
            .map(str::to_owned);
        assert!(
            target.agent_running(&thread, worktree.as_deref()),
            "{}",
            target.name()
        );
        let exit = conn
            .dispatch(command("thread.session.stop", &thread, json!({})))
            .await;
        assert_success(&target, &exit, "the stop");
        conn.trail_until(&thread, "interrupted/stopped").await;
        wait_for("the agent to end", || {
            (!target.agent_running(&thread, worktree.as_deref())).then_some(())
        })
        .await;
        let exit = conn
            .dispatch(command("thread.session.stop", &thread, json!({})))
            .await;
        assert_success(&target, &exit, "the second stop");
        let exit = conn
            .dispatch(command("thread.turn.interrupt", &thread, json!({})))
            .await;
        assert_success(&target, &exit, "an interrupt after the stop");
        // A later thread that completes shows that T3 went on; the stopped one did not change.
        let later = uuid();
        conn.dispatch(bootstrap(
            &target,
            &later,
            "afk/issue-5-2",
            "Later [sim:duration=100]",
        ))
        .await;
        conn.trail_until(&later, "completed/ready").await;
        assert_eq!(
            conn.trail(&thread).last().map(String::as_str),
            Some("interrupted/stopped"),
            "{}",
            target.name()
        );
        assert!(
            !target.agent_running(&thread, worktree.as_deref()),
            "{}",
            target.name()
        );
    })
    .await;
}

/// A session stop of a thread that never had a session leaves it a `stopped` one (afk then
/// deletes the thread). A stop sent while a session starts is lost: T3 may show the session
/// `stopped`, but the start goes on and, once the agent is up, the session reads `starting` (or
/// `ready`) again, the turn never delivered, until a stop sent then ends it. So
/// afk leaves a starting session alone (`STARTING_PATIENCE`), and stops rather than deletes a
/// thread that shows neither turn nor session, after a grace: its view may lag a session start.
#[tokio::test]
async fn a_session_stop_while_the_session_starts_is_lost() {
    both("stop-early", |target| async move {
        let conn = target.connect().await;
        let bare = uuid();
        let (status, body) = target
            .http_dispatch(&json!({
                "type": "thread.create", "commandId": uuid(), "threadId": bare, "projectId": target.project(),
                "title": "bare", "modelSelection": {"instanceId": "codex", "model": "gpt-5-codex"},
                "runtimeMode": "full-access", "interactionMode": "default", "branch": "afk/issue-14",
                "worktreePath": null, "createdAt": now(),
            }))
            .await;
        assert_eq!(status, 200, "{}: {body}", target.name());
        conn.trail_until(&bare, "null/null").await;
        let exit = conn
            .dispatch(command("thread.session.stop", &bare, json!({})))
            .await;
        assert_success(&target, &exit, "a stop of a thread without a session");
        conn.trail_until(&bare, "null/stopped").await;

        let thread = uuid();
        let exit = conn
            .dispatch(bootstrap(&target, &thread, "afk/issue-15", "Hang [sim:hang]"))
            .await;
        assert_success(&target, &exit, "the bootstrap");
        let exit = conn
            .dispatch(command("thread.session.stop", &thread, json!({})))
            .await;
        assert_success(&target, &exit, "the stop right after it");
        // A later thread that completes shows that T3 went on (its session start came after
        // this one's). The real server was seen to end this race three ways: the stop shown and
        // lost (`stopped`, then `starting` again once the agent is up), not shown at all
        // (`starting`), or the session `ready`. Never with the turn running.
        let later = uuid();
        conn.dispatch(bootstrap(
            &target,
            &later,
            "afk/issue-15-2",
            "Later [sim:duration=100]",
        ))
        .await;
        conn.trail_until(&later, "completed/ready").await;
        let trail = conn.trail(&thread);
        assert!(
            !trail.iter().any(|s| s.starts_with("running"))
                && ["null/starting", "null/ready"].contains(&trail.last().map_or("", String::as_str)),
            "{}: a stop sent while the session starts: {trail:?}",
            target.name()
        );
        let worktree = target.snapshot_thread(&thread).await["worktreePath"]
            .as_str()
            .map(str::to_owned);
        let exit = conn
            .dispatch(command("thread.session.stop", &thread, json!({})))
            .await;
        assert_success(&target, &exit, "the stop once the agent is up");
        conn.trail_until(&thread, "null/stopped").await;
        wait_for("the agent to end", || {
            (!target.agent_running(&thread, worktree.as_deref())).then_some(())
        })
        .await;
    })
    .await;
}

/// A deleted thread: `thread-removed` on the stream, kept in the snapshot with `deletedAt` and
/// its turn and session frozen, 404 on the detail, gone from the shell; commands for it are
/// still accepted.
#[tokio::test]
async fn a_deleted_thread_is_kept_frozen() {
    both("delete", |target| async move {
        let conn = target.connect().await;
        let thread = uuid();
        conn.dispatch(bootstrap(&target, &thread, "afk/issue-6", "Hang [sim:hang]"))
            .await;
        conn.trail_until(&thread, "running/running").await;
        let worktree = target.snapshot_thread(&thread).await["worktreePath"]
            .as_str()
            .map(str::to_owned);
        let exit = conn.dispatch(command("thread.delete", &thread, json!({}))).await;
        assert_success(&target, &exit, "the delete");
        conn.trail_until(&thread, "removed").await;
        let snapshot = target.snapshot_thread(&thread).await;
        assert!(snapshot["deletedAt"].is_string(), "{}: {snapshot}", target.name());
        assert_eq!(
            state_of(&snapshot),
            "running/running",
            "{}: frozen",
            target.name()
        );
        assert_eq!(target.detail(&thread).await.0, 404, "{}", target.name());
        assert_eq!(
            target.shell_thread(&thread).await,
            Value::Null,
            "{}",
            target.name()
        );
        wait_for("the deleted thread's agent to end", || {
            (!target.agent_running(&thread, worktree.as_deref())).then_some(())
        })
        .await;
        let exit = conn
            .dispatch(command("thread.turn.interrupt", &thread, json!({})))
            .await;
        assert_success(&target, &exit, "an interrupt for a deleted thread");
        let (status, body) = target
            .http_dispatch(&command("thread.delete", &thread, json!({})))
            .await;
        assert_eq!(status, 200, "{}: deleting twice: {body}", target.name());
    })
    .await;
}

/// Refusals: over `/ws` a `Fail` with `OrchestrationDispatchCommandError {message, cause}`
/// (the decider's invariant error as its cause), over HTTP a 500 `orchestration_dispatch_failed`;
/// a payload that does not decode dies; a bootstrap whose branch exists fails at the worktree
/// and deletes its thread; no error carries fields T3's schema lacks.
#[tokio::test]
async fn refusals_look_as_t3_sends_them() {
    both("refusals", |target| async move {
        let conn = target.connect().await;
        let missing = uuid();
        let turn = json!({
            "type": "thread.turn.start", "commandId": uuid(), "threadId": missing,
            "message": {"messageId": uuid(), "role": "user", "text": "x", "attachments": []},
            "runtimeMode": "full-access", "interactionMode": "default", "createdAt": now(),
        });
        let exit = conn.dispatch(turn.clone()).await;
        let error = &exit["cause"][0]["error"];
        assert_eq!(exit["cause"][0]["_tag"], "Fail", "{}: {exit}", target.name());
        assert_eq!(error["_tag"], "OrchestrationDispatchCommandError", "{}", target.name());
        assert_eq!(
            error["message"],
            format!(
                "Orchestration command invariant failed (thread.turn.start): Thread '{missing}' does not exist for command 'thread.turn.start'."
            ),
            "{}",
            target.name()
        );
        assert_eq!(error["cause"]["name"], "OrchestrationCommandInvariantError", "{}", target.name());
        assert_eq!(error["cause"]["message"], error["message"], "{}", target.name());
        let mut keys: Vec<&str> = error.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        keys.sort_unstable();
        assert_eq!(keys, ["_tag", "cause", "message"], "{}", target.name());

        let mut again = turn.clone();
        again["commandId"] = json!(uuid());
        let (status, body) = target.http_dispatch(&again).await;
        assert_eq!(status, 500, "{}", target.name());
        assert_eq!(body["reason"], "orchestration_dispatch_failed", "{}", target.name());

        let exit = conn
            .dispatch(json!({"type": "thread.turn.start", "commandId": uuid()}))
            .await;
        assert_eq!(exit["cause"][0]["_tag"], "Die", "{}: {exit}", target.name());

        // A bootstrap over HTTP fails after decoding.
        let thread = uuid();
        let (status, body) = target
            .http_dispatch(&bootstrap(&target, &thread, "afk/issue-7", "x"))
            .await;
        assert_eq!(status, 500, "{}: {body}", target.name());
        assert_eq!(body["reason"], "orchestration_dispatch_failed", "{}", target.name());

        let first = uuid();
        conn.dispatch(bootstrap(&target, &first, "afk/issue-8", "First [sim:duration=100]"))
            .await;
        conn.trail_until(&first, "completed/ready").await;
        let second = uuid();
        let exit = conn
            .dispatch(bootstrap(&target, &second, "afk/issue-8", "Same branch"))
            .await;
        let error = &exit["cause"][0]["error"];
        assert_eq!(error["_tag"], "OrchestrationDispatchCommandError", "{}: {exit}", target.name());
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("git worktree add failed"), "{}: {message}", target.name());
        assert!(error.get("bootstrapThreadDisposition").is_none(), "{}: {error}", target.name());
        conn.trail_until(&second, "removed").await;
        assert!(target.snapshot_thread(&second).await["deletedAt"].is_string(), "{}", target.name());

        // The same bootstrap again: the thread exists, so it is refused at thread.create.
        let exit = conn
            .dispatch(bootstrap(&target, &first, "afk/issue-9", "Again"))
            .await;
        let message = exit["cause"][0]["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(
            message,
            format!(
                "Orchestration command invariant failed (thread.create): Thread '{first}' already exists and cannot be created twice."
            ),
            "{}",
            target.name()
        );
    })
    .await;
}

/// A client that disconnects mid-bootstrap leaves a half-made thread: its branch recorded, no
/// worktree, no turn, no session; nothing cleans it up.
#[tokio::test]
async fn a_disconnect_mid_bootstrap_leaves_a_half_made_thread() {
    both("disconnect", |target| async move {
        let watcher = target.connect().await;
        let client = Conn::open(&target).await;
        let thread = uuid();
        let _ = client.request(
            "orchestration.dispatchCommand",
            bootstrap(&target, &thread, "afk/issue-10", "Never runs"),
        );
        // The request is on its way; the client dies before the bootstrap can finish.
        wait_for("the thread to appear", || {
            (!watcher.trail(&thread).is_empty()).then_some(())
        })
        .await;
        client.close();
        // A later thread that completes shows that T3 went on without touching this one.
        let later = uuid();
        watcher
            .dispatch(bootstrap(
                &target,
                &later,
                "afk/issue-11",
                "Later [sim:duration=100]",
            ))
            .await;
        watcher.trail_until(&later, "completed/ready").await;
        let half = target.snapshot_thread(&thread).await;
        assert_eq!(half["branch"], "afk/issue-10", "{}: {half}", target.name());
        assert_eq!(half["worktreePath"], Value::Null, "{}", target.name());
        assert_eq!(half["latestTurn"], Value::Null, "{}", target.name());
        assert_eq!(half["session"], Value::Null, "{}", target.name());
        assert_eq!(half["deletedAt"], Value::Null, "{}", target.name());
        assert_eq!(watcher.trail(&thread), ["null/null"], "{}", target.name());

        // The same bootstrap without `createThread` finishes it (afk's recovery, with the
        // attempt's ids): T3 adds the worktree on the branch and the turn runs. Unless the
        // disconnect came after T3's `git worktree add` (the branch exists, the thread does not
        // know its worktree): then T3 refuses it, and afk adopts the branch instead
        // (`a_branch_left_by_a_cut_off_bootstrap_is_adopted`).
        let branch_made = match &target {
            Target::Real { project, .. } => real::git(
                &project.workspace,
                &["rev-parse", "--verify", "--quiet", "afk/issue-10"],
            )
            .is_ok(),
            Target::Sim { .. } => false,
        };
        let mut finish = bootstrap(&target, &thread, "afk/issue-10", "Finished [sim:duration=100]");
        if let Some(bootstrap) = finish["bootstrap"].as_object_mut() {
            bootstrap.remove("createThread");
        }
        let exit = watcher.dispatch(finish).await;
        // The cut-off bootstrap's `git worktree add` may still be running when the branch is
        // looked for above (the real T3 does not stop its git on a disconnect): a refusal that
        // names it, with the branch there now, is the same late case.
        let branch_made = branch_made
            || (exit.to_string().contains("git worktree add failed")
                && match &target {
                    Target::Real { project, .. } => real::git(
                        &project.workspace,
                        &["rev-parse", "--verify", "--quiet", "afk/issue-10"],
                    )
                    .is_ok(),
                    Target::Sim { .. } => false,
                });
        if branch_made {
            assert!(
                exit.to_string().contains("git worktree add failed"),
                "{}: {exit}",
                target.name()
            );
            return;
        }
        assert_success(&target, &exit, "finishing the half-made thread");
        watcher.trail_until(&thread, "completed/ready").await;
        let done = target.snapshot_thread(&thread).await;
        assert_eq!(done["branch"], "afk/issue-10", "{}: {done}", target.name());
        assert!(
            done["worktreePath"]
                .as_str()
                .is_some_and(|p| p.ends_with("afk-issue-10")),
            "{}: {done}",
            target.name()
        );
    })
    .await;
}

/// A bootstrap cut off after T3's `git worktree add` leaves the branch and its worktree in git
/// and the thread without them: T3 refuses to make the branch again. afk's recovery adopts it:
/// `vcs.listRefs` shows the branch with its worktree, `vcs.removeWorktree` removes that, and the
/// bootstrap without `createThread` and without `branch` (`baseBranch` = the branch) checks the
/// existing branch out in a worktree of T3's; the turn runs there, under the same command id.
#[tokio::test]
async fn a_branch_left_by_a_cut_off_bootstrap_is_adopted() {
    both("adopt", |target| async move {
        let conn = target.connect().await;
        let cwd = target.cwd();
        let thread = uuid();
        let branch = "afk/issue-12";
        // What the cut-off bootstrap did before the cut: the thread on its branch, the worktree.
        let create = command(
            "thread.create",
            &thread,
            json!({
                "projectId": target.project(),
                "title": "conformance: adopt",
                "modelSelection": {"instanceId": "codex", "model": "gpt-5-codex"},
                "runtimeMode": "full-access",
                "interactionMode": "default",
                "branch": branch,
                "worktreePath": null,
            }),
        );
        assert_success(&target, &conn.dispatch(create).await, "thread.create");
        let exit = conn
            .call(
                "vcs.createWorktree",
                json!({"cwd": cwd, "refName": "main", "newRefName": branch, "baseRefName": "main", "path": null}),
            )
            .await;
        assert_success(&target, &exit, "vcs.createWorktree");
        let made = exit["value"]["worktree"]["path"].as_str().unwrap_or_default().to_owned();
        assert!(made.ends_with("/afk-issue-12"), "{}: {exit}", target.name());

        let listed = |exit: &Value| {
            exit["value"]["refs"]
                .as_array()
                .and_then(|refs| refs.iter().find(|r| r["name"] == branch).cloned())
        };
        let refs = json!({"cwd": cwd, "query": branch, "refKind": "local", "refresh": true});
        let exit = conn.call("vcs.listRefs", refs.clone()).await;
        assert_success(&target, &exit, "vcs.listRefs");
        let found = listed(&exit).unwrap_or_else(|| panic!("{}: the branch is listed: {exit}", target.name()));
        assert_eq!(found["worktreePath"], made.as_str(), "{}: {found}", target.name());

        let mut finish = bootstrap(&target, &thread, branch, "Adopted [sim:duration=100]");
        if let Some(bootstrap) = finish["bootstrap"].as_object_mut() {
            bootstrap.remove("createThread");
        }
        let exit = conn.dispatch(finish.clone()).await;
        assert!(
            exit.to_string().contains("git worktree add failed"),
            "{}: T3 refuses to make the branch again: {exit}",
            target.name()
        );

        let exit = conn
            .call("vcs.removeWorktree", json!({"cwd": cwd, "path": made, "force": true}))
            .await;
        assert_success(&target, &exit, "vcs.removeWorktree");
        let exit = conn.call("vcs.listRefs", refs).await;
        let kept = listed(&exit).unwrap_or_else(|| panic!("{}: the branch stays: {exit}", target.name()));
        assert_eq!(kept["worktreePath"], Value::Null, "{}: {kept}", target.name());

        if let Some(prepare) = finish["bootstrap"]["prepareWorktree"].as_object_mut() {
            prepare.remove("branch");
            prepare.insert("baseBranch".into(), json!(branch));
        }
        let exit = conn.dispatch(finish).await;
        assert_success(&target, &exit, "the bootstrap on the existing branch");
        conn.trail_until(&thread, "completed/ready").await;
        let done = target.snapshot_thread(&thread).await;
        assert_eq!(done["branch"], branch, "{}: {done}", target.name());
        assert_eq!(done["worktreePath"], made.as_str(), "{}: {done}", target.name());
    })
    .await;
}

/// `[sim:ask]`: the thread keeps running while it waits; only the shell shows
/// `hasPendingUserInput`; the detail has a `user-input.requested` activity; the answer
/// (`thread.user-input.respond`) clears the flag and the turn completes.
#[tokio::test]
async fn a_question_waits_for_the_answer() {
    both("ask", |target| async move {
        let conn = target.connect().await;
        let thread = uuid();
        conn.dispatch(bootstrap(
            &target,
            &thread,
            "afk/issue-12",
            "Ask [sim:ask] [sim:duration=100]",
        ))
        .await;
        let asked = wait_for_async(&target, &thread, |t| t["hasPendingUserInput"] == true).await;
        // The turn runs (T3 once showed the flag while the session still read `starting`).
        assert!(
            ["running/running", "null/starting"].contains(&state_of(&asked).as_str()),
            "{}: {}",
            target.name(),
            state_of(&asked)
        );
        assert_eq!(asked["hasPendingApprovals"], false, "{}", target.name());
        assert!(
            target
                .snapshot_thread(&thread)
                .await
                .get("hasPendingUserInput")
                .is_none(),
            "{}: the snapshot has no such flag",
            target.name()
        );
        let (_, detail) = target.detail(&thread).await;
        let activities = detail["thread"]["activities"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let requested = activities
            .iter()
            .find(|a| a["kind"] == "user-input.requested")
            .unwrap_or_else(|| panic!("{}: no question in {activities:?}", target.name()))
            .clone();
        let request = requested["payload"]["requestId"].clone();
        assert!(
            request.as_str().is_some_and(|r| !r.is_empty()),
            "{}",
            target.name()
        );
        assert_eq!(
            requested["payload"]["questions"][0]["id"],
            t3_sim::agent::QUESTION_ID
        );
        assert!(requested["turnId"].is_string(), "{}", target.name());
        let exit = conn
            .dispatch(command(
                "thread.user-input.respond",
                &thread,
                json!({"requestId": request, "answers": {(t3_sim::agent::QUESTION_ID): "yes"}}),
            ))
            .await;
        assert_success(&target, &exit, "the answer");
        let trail = wait_for("the turn to end", || {
            let trail = conn.trail(&thread);
            matches!(
                trail.last().map(String::as_str),
                Some("completed/ready" | "error/error")
            )
            .then_some(trail)
        })
        .await;
        if trail.last().map(String::as_str) == Some("error/error") {
            let failed = target.snapshot_thread(&thread).await;
            panic!(
                "{}: the turn failed after the answer: {}",
                target.name(),
                failed["session"]["lastError"]
            );
        }
        assert_eq!(
            target.shell_thread(&thread).await["hasPendingUserInput"],
            false,
            "{}",
            target.name()
        );
        let (_, detail) = target.detail(&thread).await;
        let kinds: Vec<String> = detail["thread"]["activities"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["kind"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            kinds.iter().any(|k| k == "user-input.resolved"),
            "{}: {kinds:?}",
            target.name()
        );
    })
    .await;
}

async fn wait_for_async(target: &Target, thread: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let shell = target.shell_thread(thread).await;
        if done(&shell) {
            return shell;
        }
        assert!(
            Instant::now() < deadline,
            "{}: gave up waiting on {thread}: {shell}",
            target.name()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shell stream's first chunk holds the snapshot alone; `synchronized` comes only after the
/// client acked it, at the end of the next chunk, after the changes made meanwhile.
#[tokio::test]
async fn the_shell_stream_sends_synchronized_only_after_the_ack() {
    both("stream", |target| async move {
        let conn = Conn::open(&target).await;
        conn.auto_ack.store(false, std::sync::atomic::Ordering::SeqCst);
        let (id, _exit) = conn.request("orchestration.subscribeShell", json!({"requestCompletionMarker": true}));
        let chunks = conn.chunks.clone();
        let first = wait_for("the first chunk", || lock(&chunks).first().cloned()).await;
        assert_eq!(first.len(), 1, "{}: {first:?}", target.name());
        assert_eq!(first[0]["kind"], "snapshot", "{}", target.name());
        // Nothing more comes unacked: a thread made now shows only after the ack.
        let thread = uuid();
        let (status, _) = target
            .http_dispatch(&json!({
                "type": "thread.create", "commandId": uuid(), "threadId": thread, "projectId": target.project(),
                "title": "stream", "modelSelection": {"instanceId": "codex", "model": "gpt-5-codex"},
                "runtimeMode": "full-access", "interactionMode": "default", "branch": null,
                "worktreePath": null, "createdAt": now(),
            }))
            .await;
        assert_eq!(status, 200);
        assert_eq!(lock(&chunks).len(), 1, "{}: no chunk before the ack", target.name());
        let _ = conn.out.send(Message::text(json!({"_tag": "Ack", "requestId": id}).to_string()));
        let second = wait_for("the second chunk", || lock(&chunks).get(1).cloned()).await;
        // The changes made meanwhile (other tests' too, on a shared server), then `synchronized`.
        let (last, changes) = second.split_last().expect("a chunk has values");
        assert_eq!(*last, json!({"kind": "synchronized"}), "{}: {second:?}", target.name());
        assert!(
            changes.iter().all(|v| v["kind"] == "thread-upserted" || v["kind"] == "thread-removed"),
            "{}: {second:?}",
            target.name()
        );
        assert!(
            changes.iter().any(|v| v["thread"]["id"] == thread),
            "{}: {second:?}",
            target.name()
        );
    })
    .await;
}

/// HTTP dispatch: `thread.create` then `thread.turn.start` run in the project's checkout.
#[tokio::test]
async fn http_dispatch_runs_in_the_checkout() {
    both("http", |target| async move {
        let conn = target.connect().await;
        let thread = uuid();
        let (status, body) = target
            .http_dispatch(&json!({
                "type": "thread.create", "commandId": uuid(), "threadId": thread, "projectId": target.project(),
                "title": "http", "modelSelection": {"instanceId": "codex", "model": "gpt-5-codex"},
                "runtimeMode": "full-access", "interactionMode": "default", "branch": "afk/issue-13",
                "worktreePath": null, "createdAt": now(),
            }))
            .await;
        assert_eq!(status, 200, "{}: {body}", target.name());
        let (status, body) = target
            .http_dispatch(&json!({
                "type": "thread.turn.start", "commandId": uuid(), "threadId": thread,
                "message": {"messageId": uuid(), "role": "user", "text": "Over HTTP [sim:duration=100]", "attachments": []},
                "runtimeMode": "full-access", "interactionMode": "default", "createdAt": now(),
            }))
            .await;
        assert_eq!(status, 200, "{}: {body}", target.name());
        let trail = conn.trail_until(&thread, "completed/ready").await;
        assert_trail(&target, &trail, &RAN, &[]);
        let snapshot = target.snapshot_thread(&thread).await;
        assert_eq!(snapshot["worktreePath"], Value::Null, "{}", target.name());
        assert_eq!(snapshot["branch"], "afk/issue-13", "{}", target.name());
    })
    .await;
}

/// A session that cannot start (the codex binary is missing; `[sim:start-fail]` in the
/// stand-in): session `error` with a multi-line, multi-kilobyte `lastError`, no turn, and a
/// `provider.turn.start.failed` activity.
#[tokio::test]
async fn a_session_that_cannot_start_fails_without_a_turn() {
    let name = "conformance::a_session_that_cannot_start_fails_without_a_turn against the real T3";
    if real::skip_unless_available(name) {
        let t3 = RealT3::start(real::Options { agent: None })
            .await
            .unwrap_or_else(|e| panic!("the real T3 did not start: {e:#}"));
        let project = t3.add_project("proj-nobin", "nobin").await.expect("a project");
        start_fail(Target::Real {
            t3: Held::Owned(Box::new(t3)),
            project,
        })
        .await;
    }
    start_fail(Target::sim().await).await;
}

async fn start_fail(target: Target) {
    let conn = target.connect().await;
    let thread = uuid();
    let exit = conn
        .dispatch(bootstrap(
            &target,
            &thread,
            "afk/issue-14",
            "Start [sim:start-fail]",
        ))
        .await;
    assert_success(&target, &exit, "the bootstrap");
    let trail = conn.trail_until(&thread, "null/error").await;
    // The stand-in shows no `starting`; the real T3 may (it coalesces changes).
    let expected: &[&str] = match target {
        Target::Sim { .. } => &["null/null", "null/error"],
        Target::Real { .. } => &["null/null", "null/starting", "null/error"],
    };
    assert_trail(&target, &trail, expected, &[]);
    let snapshot = target.snapshot_thread(&thread).await;
    let error = snapshot["session"]["lastError"].as_str().unwrap_or_default();
    let first = error.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "ProviderAdapterProcessError: Provider adapter process error (codex) for thread {thread}: Failed to spawn Codex App Server process"
        )),
        "{}: {first}",
        target.name()
    );
    assert!(
        error.lines().count() > 10 && error.len() > 2000,
        "{}: {error}",
        target.name()
    );
    let (_, detail) = target.detail(&thread).await;
    let kinds: Vec<String> = detail["thread"]["activities"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        kinds.iter().any(|k| k == "provider.turn.start.failed"),
        "{}: {kinds:?}",
        target.name()
    );
}

/// An interrupt naming another turn interrupts the running one all the same (T3 interrupts by
/// session), without ever showing `interrupted`; one sent while the session still starts finds
/// nothing to interrupt, and the turn then runs.
#[tokio::test]
async fn interrupts_go_to_the_session() {
    both("interrupt-other", |target| async move {
        let conn = target.connect().await;
        let other = uuid();
        conn.dispatch(bootstrap(&target, &other, "afk/issue-15", "Hang [sim:hang]"))
            .await;
        conn.trail_until(&other, "running/running").await;
        let exit = conn
            .dispatch(command(
                "thread.turn.interrupt",
                &other,
                json!({"turnId": "not-this-turn"}),
            ))
            .await;
        assert_success(&target, &exit, "the interrupt");
        let trail = conn.trail_until(&other, "completed/ready").await;
        assert_trail(&target, &trail, &RAN, &[]);

        let starting = uuid();
        conn.dispatch(bootstrap(&target, &starting, "afk/issue-16", "Hang [sim:hang]"))
            .await;
        assert!(
            !conn.trail(&starting).iter().any(|s| s.starts_with("running")),
            "{}: still starting",
            target.name()
        );
        let exit = conn
            .dispatch(command("thread.turn.interrupt", &starting, json!({})))
            .await;
        assert_success(&target, &exit, "the interrupt");
        let trail = conn.trail_until(&starting, "running/running").await;
        assert_trail(
            &target,
            &trail,
            &["null/null", "null/starting", "running/running"],
            &[],
        );
    })
    .await;
}

/// After T3 restarted (its agents gone, sessions as they were), an interrupt makes T3 start the
/// thread's agent again to deliver it, which then stays; a session stop starts nothing.
#[tokio::test]
async fn after_a_restart_an_interrupt_starts_the_agent_again() {
    let name = "conformance::after_a_restart_an_interrupt_starts_the_agent_again against the real T3";
    if real::skip_unless_available(name) {
        let t3 = RealT3::start(real::Options { agent: Some(agent()) })
            .await
            .unwrap_or_else(|e| panic!("the real T3 did not start: {e:#}"));
        let project = t3
            .add_project("proj-restart", "restart")
            .await
            .expect("a project");
        restart(Target::Real {
            t3: Held::Owned(Box::new(t3)),
            project,
        })
        .await;
    }
    restart(Target::sim().await).await;
}

async fn restart(target: Target) {
    let conn = target.connect().await;
    let (interrupted, stopped) = (uuid(), uuid());
    for (thread, branch) in [(&interrupted, "afk/issue-17"), (&stopped, "afk/issue-18")] {
        conn.dispatch(bootstrap(&target, thread, branch, "Done [sim:duration=100]"))
            .await;
        conn.trail_until(thread, "completed/ready").await;
    }
    let worktree = |id: &str| {
        let target = &target;
        let id = id.to_owned();
        async move {
            target.snapshot_thread(&id).await["worktreePath"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    let (interrupted_tree, stopped_tree) = (worktree(&interrupted).await, worktree(&stopped).await);
    assert_eq!(
        target.agent_starts(&interrupted, &interrupted_tree),
        1,
        "{}",
        target.name()
    );
    target.restart().await;
    assert!(
        !target.agent_running(&interrupted, Some(&interrupted_tree)),
        "{}",
        target.name()
    );
    let conn = target.connect().await;
    let exit = conn
        .dispatch(command("thread.turn.interrupt", &interrupted, json!({})))
        .await;
    assert_success(&target, &exit, "the interrupt");
    wait_for("the agent to start again", || {
        (target.agent_starts(&interrupted, &interrupted_tree) == 2).then_some(())
    })
    .await;
    // The session reads `starting` meanwhile, which T3's stream may coalesce away.
    conn.trail_until(&interrupted, "completed/ready").await;
    assert!(
        target.agent_running(&interrupted, Some(&interrupted_tree)),
        "{}",
        target.name()
    );

    let exit = conn
        .dispatch(command("thread.session.stop", &stopped, json!({})))
        .await;
    assert_success(&target, &exit, "the stop");
    conn.trail_until(&stopped, "completed/stopped").await;
    assert_eq!(
        target.agent_starts(&stopped, &stopped_tree),
        1,
        "{}",
        target.name()
    );
}
