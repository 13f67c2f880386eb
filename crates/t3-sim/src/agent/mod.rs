//! `afk sim agent`: the simulated agent as a codex app-server that the **real** T3 Code server
//! spawns, so that afk can be tested against the real server with no model and no network.
//!
//! T3 runs its codex provider as `BINARY app-server -c …` in the thread's worktree and speaks
//! codex's app-server protocol over stdin/stdout (`t3-api.md`, "The codex app-server protocol";
//! T3's `CodexSessionRuntime.ts`). Point `providers.codex.binaryPath` in T3's `settings.json` at
//! a script `exec /path/to/afk sim agent "$@"` (T3 passes its own arguments after it).
//!
//! **What it does.** It answers `initialize`, `thread/start` and `thread/resume`,
//! `config/mcpServer/reload` and the health probe's `account/read`, `skills/list` and
//! `model/list`. A `turn/start` is answered at once, then the turn runs as its text scripts it
//! ([`TurnScript`]): without a marker it works for the turn duration, writes
//! `t3-sim-work/<turn>.md` in its working directory and commits it on the branch checked out
//! there, replies with an agent message and completes; `[sim:fail]` fails the turn (its error is
//! what T3 shows as `lastError`); `[sim:hang]` never ends by itself; `[sim:duration=MS]` sets
//! how long it works; `[sim:ask]` first asks a person a question (`item/tool/requestUserInput`)
//! and goes on once T3 delivers the answer. `turn/interrupt` is answered at once and ends the
//! turn `interrupted`. The process ends when T3 closes its stdin (or kills it).
//! `afk sim agent exec …` (T3's title generation) fails at once, which T3 tolerates.
//!
//! It writes nothing else on stdout (that is the protocol) and nothing on stderr unless it
//! fails: T3 shows every stderr line that is not a codex log line as an activity of the thread.

mod protocol;
mod work;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::script::TurnScript;
use protocol::{Incoming, TurnStatus};
pub use work::WORK_DIR;

/// How long a turn works when its text does not say (`[sim:duration=MS]`).
pub const DEFAULT_TURN_DURATION: Duration = Duration::from_millis(500);

/// The id of the question a `[sim:ask]` turn asks.
pub const QUESTION_ID: &str = "t3-sim-proceed";

/// Arguments of `afk sim agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// How long a turn works before it completes, unless its text says `[sim:duration=MS]`
    /// [default: 500ms].
    #[arg(long, env = "T3_SIM_AGENT_TURN_DURATION", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub turn_duration: Option<Duration>,
    /// What T3 runs.
    #[command(subcommand)]
    pub mode: AgentMode,
}

/// How T3 runs its codex binary.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AgentMode {
    /// Serve codex's app-server protocol on stdin/stdout (one process per thread session, and
    /// short-lived ones for T3's health probe).
    AppServer {
        /// T3's own arguments (`-c mcp_servers.…`), accepted and ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `codex exec`, which T3 runs to generate a thread title: refused (T3 keeps its own title).
    Exec {
        /// T3's arguments, ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// What one app-server process works with.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// How long an unscripted turn works.
    pub turn_duration: Duration,
    /// The working directory (T3 starts the process in the thread's worktree).
    pub cwd: PathBuf,
}

/// Runs `afk sim agent`: the app-server on stdin/stdout until T3 closes stdin, or the refused
/// `exec`.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    match args.mode {
        AgentMode::AppServer { .. } => {
            let settings = AgentSettings {
                turn_duration: args.turn_duration.unwrap_or(DEFAULT_TURN_DURATION),
                cwd: std::env::current_dir()?,
            };
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            serve(input, tokio::io::stdout(), settings).await?;
            Ok(())
        }
        AgentMode::Exec { .. } => anyhow::bail!(
            "the simulated agent does not run `codex exec` (T3's title generation); T3 keeps the thread's own title"
        ),
    }
}

/// Serves one app-server session: reads T3's messages from `input` until it ends, writes the
/// agent's to `output`, one JSON value per line. Turns run concurrently with the reading, so an
/// interrupt or an answer is taken while a turn works. Ends (interrupting a turn in progress)
/// when `input` ends.
pub async fn serve<R, W>(input: R, mut output: W, settings: AgentSettings) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, mut outgoing) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let mut line = message.to_string();
            line.push('\n');
            output.write_all(line.as_bytes()).await?;
            output.flush().await?;
        }
        Ok::<(), io::Error>(())
    });
    let mut session = Session::new(settings, Out(out));
    let mut lines = input.lines();
    let read = loop {
        match lines.next_line().await {
            Ok(Some(line)) => session.line(&line),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    session.close();
    drop(session);
    // Every sender is gone once the turn task is: the writer drains what is queued and ends.
    let written = writer.await.map_err(io::Error::other)?;
    read.and(written)
}

/// The sending side: messages queue for the one writer, in order.
#[derive(Clone)]
struct Out(mpsc::UnboundedSender<Value>);

impl Out {
    fn send(&self, message: Value) {
        // A closed channel means the writer failed (T3 is gone); the message has nowhere to go.
        let _ = self.0.send(message);
    }
}

/// The agent's requests to T3 awaiting an answer, by request id.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, Value>>>>>;

/// One app-server session: the provider thread and its turn in progress.
struct Session {
    settings: AgentSettings,
    out: Out,
    /// The provider thread's id, once opened.
    thread_id: Option<String>,
    session_id: String,
    created_at: u64,
    active: Option<ActiveTurn>,
    pending: Pending,
    next_request: Arc<Mutex<u64>>,
}

struct ActiveTurn {
    id: String,
    interrupt: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Session {
    fn new(settings: AgentSettings, out: Out) -> Session {
        Session {
            settings,
            out,
            thread_id: None,
            session_id: uuid::Uuid::new_v4().to_string(),
            created_at: protocol::now_secs(),
            active: None,
            pending: Arc::default(),
            next_request: Arc::new(Mutex::new(1)),
        }
    }

    fn line(&mut self, line: &str) {
        match Incoming::parse(line) {
            None => {}
            // T3 never sends such a line; there is no id to answer, so it is dropped.
            Some(Err(_)) => {}
            Some(Ok(Incoming::Notification { .. })) => {}
            Some(Ok(Incoming::Response { id, outcome })) => {
                let sender = id
                    .as_u64()
                    .or_else(|| id.as_str().and_then(|s| s.parse().ok()))
                    .and_then(|id| lock(&self.pending).remove(&id));
                if let Some(sender) = sender {
                    let _ = sender.send(outcome);
                }
            }
            Some(Ok(Incoming::Request { id, method, params })) => self.request(&id, &method, &params),
        }
    }

    fn request(&mut self, id: &Value, method: &str, params: &Value) {
        let result = match method {
            "initialize" => {
                let home = std::env::var("CODEX_HOME").unwrap_or_else(|_| "/tmp/t3-sim-codex".into());
                protocol::initialize_result(&home)
            }
            "thread/start" | "thread/resume" => {
                let (result, announce) = self.open_thread(method, params);
                // codex announces the thread too, after answering.
                self.out.send(protocol::response(id, result));
                self.out.send(announce);
                return;
            }
            "config/mcpServer/reload" => json!({}),
            "account/read" => json!({ "account": null, "requiresOpenaiAuth": false }),
            "skills/list" => json!({ "data": [] }),
            "model/list" => json!({ "data": [], "nextCursor": null }),
            "turn/start" => match self.start_turn(id, params) {
                // Answered by start_turn, before the turn's first notification.
                Ok(()) => return,
                Err(message) => {
                    self.out
                        .send(protocol::error_response(id, protocol::INVALID_PARAMS, &message));
                    return;
                }
            },
            "turn/interrupt" => {
                let turn = params.get("turnId").and_then(Value::as_str);
                self.interrupt(turn);
                json!({})
            }
            other => {
                self.out.send(protocol::error_response(
                    id,
                    protocol::METHOD_NOT_FOUND,
                    &format!("t3-sim agent: method not found: {other}"),
                ));
                return;
            }
        };
        self.out.send(protocol::response(id, result));
    }

    fn cwd(&self, params: &Value) -> String {
        params
            .get("cwd")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| self.settings.cwd.display().to_string())
    }

    /// Opens the provider thread: the response and the `thread/started` notification.
    fn open_thread(&mut self, method: &str, params: &Value) -> (Value, Value) {
        let id = match (method, params.get("threadId").and_then(Value::as_str)) {
            ("thread/resume", Some(id)) => id.to_owned(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let cwd = self.cwd(params);
        let thread = protocol::thread(&id, &self.session_id, &cwd, self.created_at);
        self.thread_id = Some(id);
        let result = protocol::thread_opened(params, thread.clone(), &cwd);
        let announce = protocol::notification("thread/started", json!({ "thread": thread }));
        (result, announce)
    }

    fn start_turn(&mut self, id: &Value, params: &Value) -> Result<(), String> {
        let thread_id = params
            .get("threadId")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| self.thread_id.clone())
            .ok_or("turn/start needs a threadId (no thread was started)")?;
        if self.active.as_ref().is_some_and(|a| !a.task.is_finished()) {
            // One turn at a time: a new turn supersedes the one in progress.
            self.interrupt(None);
        }
        let turn_id = uuid::Uuid::new_v4().to_string();
        let started_at = protocol::now_secs();
        self.out.send(protocol::response(
            id,
            json!({ "turn": protocol::turn(&turn_id, TurnStatus::InProgress, started_at, None, None) }),
        ));
        let text = protocol::input_text(params);
        let (interrupt, interrupted) = watch::channel(false);
        let turn = Turn {
            out: self.out.clone(),
            thread_id,
            turn_id: turn_id.clone(),
            started_at,
            started: std::time::Instant::now(),
            script: TurnScript::parse(&text),
            text,
            cwd: PathBuf::from(self.cwd(params))
                .canonicalize()
                .unwrap_or_else(|_| self.settings.cwd.clone()),
            duration: self.settings.turn_duration,
            pending: self.pending.clone(),
            next_request: self.next_request.clone(),
            interrupted,
        };
        let task = tokio::spawn(turn.run());
        self.active = Some(ActiveTurn {
            id: turn_id,
            interrupt,
            task,
        });
        Ok(())
    }

    /// Interrupts the turn in progress (`turn_id`, or whichever runs when `None`).
    fn interrupt(&mut self, turn_id: Option<&str>) {
        if let Some(active) = &self.active {
            if turn_id.is_none_or(|id| id == active.id) {
                active.interrupt.send_replace(true);
            }
        }
    }

    /// T3 is gone: the turn in progress stops without a word.
    fn close(&mut self) {
        if let Some(active) = self.active.take() {
            active.task.abort();
        }
        lock(&self.pending).clear();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One turn, run as a task of its own.
struct Turn {
    out: Out,
    thread_id: String,
    turn_id: String,
    started_at: u64,
    started: std::time::Instant,
    script: TurnScript,
    text: String,
    cwd: PathBuf,
    duration: Duration,
    pending: Pending,
    next_request: Arc<Mutex<u64>>,
    interrupted: watch::Receiver<bool>,
}

/// How a turn ended.
enum Outcome {
    Completed(String),
    Failed(String),
    Interrupted,
}

impl Turn {
    async fn run(mut self) {
        self.notify(
            "turn/started",
            json!({
                "threadId": self.thread_id,
                "turn": protocol::turn(&self.turn_id, TurnStatus::InProgress, self.started_at, None, None),
            }),
        );
        let mut interrupted = self.interrupted.clone();
        let outcome = tokio::select! {
            biased;
            _ = interrupted.wait_for(|i| *i) => Outcome::Interrupted,
            outcome = self.work() => outcome,
        };
        self.finish(outcome);
    }

    /// The scripted work, up to its outcome (an interrupt is the caller's to notice).
    async fn work(&mut self) -> Outcome {
        if self.script.hang {
            return std::future::pending().await;
        }
        let mut answer = None;
        if self.script.ask {
            match self.ask().await {
                Ok(text) => answer = Some(text),
                Err(why) => return Outcome::Failed(why),
            }
        }
        tokio::time::sleep(self.script.duration.unwrap_or(self.duration)).await;
        if self.script.fail {
            return Outcome::Failed("t3-sim agent: the turn failed, as scripted by [sim:fail]".into());
        }
        match work::commit_work(&self.cwd, &self.turn_id, &self.text).await {
            Ok(work) => {
                let done = match &work.commit {
                    Some(commit) => format!("committed {} as {commit}", work.file.display()),
                    None => format!(
                        "wrote {} (not a git work tree: nothing committed)",
                        work.file.display()
                    ),
                };
                let asked = answer
                    .map(|a| format!(" The person answered: {a}."))
                    .unwrap_or_default();
                Outcome::Completed(format!("t3-sim agent (a stand-in, no model ran): {done}.{asked}"))
            }
            Err(why) => Outcome::Failed(format!("t3-sim agent: {why}")),
        }
    }

    /// Asks a person whether to proceed (`item/tool/requestUserInput`) and waits for T3 to
    /// deliver the answer; the answer's text, or why there is none.
    async fn ask(&mut self) -> Result<String, String> {
        let request_id = {
            let mut next = lock(&self.next_request);
            let id = *next;
            *next += 1;
            id
        };
        let (answered, answer) = oneshot::channel();
        lock(&self.pending).insert(request_id, answered);
        let item_id = format!("ask-{}", self.turn_id);
        self.out.send(protocol::request(
            request_id,
            "item/tool/requestUserInput",
            json!({
                "threadId": self.thread_id,
                "turnId": self.turn_id,
                "itemId": item_id,
                "questions": [{
                    "id": QUESTION_ID,
                    "header": "t3-sim",
                    "question": "The simulated agent asks: may it go on? ([sim:ask])",
                    "options": [
                        { "label": "yes", "description": "Go on and finish the turn." },
                        { "label": "no", "description": "Go on anyway: the stand-in only records the answer." },
                    ],
                }],
            }),
        ));
        let outcome = answer
            .await
            .map_err(|_| "t3-sim agent: the question was dropped unanswered".to_owned())?;
        let result = outcome.map_err(|e| format!("t3-sim agent: T3 refused the question: {e}"))?;
        self.notify(
            "serverRequest/resolved",
            json!({ "threadId": self.thread_id, "requestId": request_id }),
        );
        let answers = result
            .pointer(&format!("/answers/{QUESTION_ID}/answers"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        Ok(if answers.is_empty() {
            "(no answer)".into()
        } else {
            answers
        })
    }

    fn finish(&self, outcome: Outcome) {
        let ended = Some((
            protocol::now_secs(),
            u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ));
        let turn = match &outcome {
            Outcome::Completed(message) => {
                let item = format!("msg-{}", self.turn_id);
                self.notify(
                    "item/started",
                    json!({
                        "threadId": self.thread_id,
                        "turnId": self.turn_id,
                        "startedAtMs": protocol::now_millis(),
                        "item": protocol::agent_message(&item, ""),
                    }),
                );
                self.notify(
                    "item/agentMessage/delta",
                    json!({
                        "threadId": self.thread_id,
                        "turnId": self.turn_id,
                        "itemId": item,
                        "delta": message,
                    }),
                );
                self.notify(
                    "item/completed",
                    json!({
                        "threadId": self.thread_id,
                        "turnId": self.turn_id,
                        "completedAtMs": protocol::now_millis(),
                        "item": protocol::agent_message(&item, message),
                    }),
                );
                protocol::turn(&self.turn_id, TurnStatus::Completed, self.started_at, ended, None)
            }
            Outcome::Failed(why) => protocol::turn(
                &self.turn_id,
                TurnStatus::Failed,
                self.started_at,
                ended,
                Some(why),
            ),
            Outcome::Interrupted => protocol::turn(
                &self.turn_id,
                TurnStatus::Interrupted,
                self.started_at,
                ended,
                None,
            ),
        };
        self.notify(
            "turn/completed",
            json!({ "threadId": self.thread_id, "turn": turn }),
        );
    }

    fn notify(&self, method: &str, params: Value) {
        self.out.send(protocol::notification(method, params));
    }
}

#[cfg(test)]
mod tests;
