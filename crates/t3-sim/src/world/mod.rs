//! The stand-in's state: projects, threads, command receipts, the event sequence, and the
//! simulated agent's schedule. Everything here is synchronous and driven by the caller's clock
//! (`tokio::time::Instant`), so that it is easy to reason about and tests may pause time.
//!
//! The parts: [`commands`] decides client commands (and worktree bootstraps) as T3's decider
//! does; [`agent`] is the simulated agent and what T3 does around it (timers, interrupts, the
//! questions it asks); [`views`] serves the snapshot, the shell and the thread detail;
//! [`validate`] checks what T3's schemas check beyond decoding.
//!
//! **Invariants.**
//! - The sequence only grows: every change (a command's events, a turn admitted or ended) adds
//!   one; `updatedAt` of the snapshot and of each changed thread is set to the time of the change
//!   and never goes backwards.
//! - A `commandId` is decided once. Sent again for the same project or thread, it gets the
//!   original `{"sequence": n}` (or the original refusal) and nothing happens twice; sent for
//!   another project or thread, it is refused as a conflict (`t3-api.md`, T3's
//!   `OrchestrationEngine`).
//! - The agent costs nothing per thread while it waits: each pending turn is one entry in a
//!   timer heap, which one task drains ([`World::fire_due`]).
//! - Threads are never removed: deletion sets `deletedAt` and freezes the thread, as T3's read
//!   model does.

mod agent;
mod commands;
mod git;
mod validate;
mod views;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use t3_client::ids::{CommandId, MessageId, ProjectId, ThreadId, TurnId};
use t3_client::wire::{ClientCommand, Project, ProjectShell, ShellItem, Thread, Timestamp};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::SimConfig;
use crate::rng::SplitMix64;

pub(crate) use git::AddedWorktree;
pub(crate) use validate::validate;
pub use views::{SimThread, SimThreadState};

/// How many events the stand-in keeps for a shell subscriber resuming with `afterSequence`:
/// T3's `SHELL_RESUME_MAX_GAP`. A larger gap gets a fresh snapshot instead.
pub(crate) const SHELL_REPLAY_LIMIT: usize = 1_000;

/// The aggregate an event is about (the index into `World::threads` or `World::projects`).
#[derive(Debug, Clone, Copy)]
enum Changed {
    Thread(usize),
    Project(usize),
}

/// A command T3's engine refuses, as T3's error class and message (`message` is the error's
/// `.message`, what T3 stores as a rejected receipt's reason). Over HTTP every refusal is a 500
/// `orchestration_dispatch_failed`; over `/ws` it is the `OrchestrationDispatchCommandError`
/// whose `message` is this message and whose `cause` is this error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The error as T3's schema encodes it inside a `Cause` (`_tag` and its fields).
    pub(crate) error: Value,
    /// Its message.
    pub(crate) message: String,
}

impl Refusal {
    /// The decider's `OrchestrationCommandInvariantError` for a `kind` command.
    pub(crate) fn invariant(kind: &str, detail: impl fmt::Display) -> Refusal {
        let detail = detail.to_string();
        Refusal {
            message: format!("Orchestration command invariant failed ({kind}): {detail}"),
            error: json!({
                "_tag": "OrchestrationCommandInvariantError",
                "commandType": kind,
                "detail": detail,
            }),
        }
    }

    /// `OrchestrationCommandPreviouslyRejectedError`: the id was refused before, for `reason`.
    fn previously_rejected(id: &CommandId, reason: &str) -> Refusal {
        Refusal {
            message: format!("Command previously rejected ({id}): {reason}"),
            error: json!({
                "_tag": "OrchestrationCommandPreviouslyRejectedError",
                "commandId": id,
                "detail": reason,
            }),
        }
    }

    /// `OrchestrationCommandIdConflictError`: the id was used for another aggregate.
    fn conflict(id: &CommandId, receipt: &Aggregate, command: &Aggregate) -> Refusal {
        Refusal {
            message: format!(
                "Command id '{id}' already used for {receipt}; refusing to replay its receipt for {command}."
            ),
            error: json!({
                "_tag": "OrchestrationCommandIdConflictError",
                "commandId": id,
                "receiptAggregateKind": receipt.kind(),
                "receiptAggregateId": receipt.id(),
                "commandAggregateKind": command.kind(),
                "commandAggregateId": command.id(),
            }),
        }
    }

    /// The error's class (`_tag`).
    pub(crate) fn class(&self) -> &str {
        self.error["_tag"].as_str().unwrap_or("Error")
    }
}

/// Why a command sent over the WebSocket RPC failed: what T3's
/// `OrchestrationDispatchCommandError {message, cause}` carries (its schema has no other field).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DispatchFailure {
    /// The error's message: the failed step's, as T3 words it.
    pub(crate) message: String,
    /// The `cause`: the underlying error as Effect encodes a defect (`{name, message}`), or a
    /// whole `Cause` (`{_id: "Cause", failures: [...]}`) when a bootstrap step failed.
    pub(crate) cause: Value,
}

impl From<Refusal> for DispatchFailure {
    fn from(refusal: Refusal) -> Self {
        DispatchFailure {
            cause: json!({ "name": refusal.class(), "message": refusal.message }),
            message: refusal.message,
        }
    }
}

impl DispatchFailure {
    /// A failed bootstrap step: T3 squashes the step's `Cause` into the message and keeps the
    /// cause whole.
    fn of_step(message: String, error: Value) -> DispatchFailure {
        DispatchFailure {
            message,
            cause: json!({ "_id": "Cause", "failures": [{ "_tag": "Fail", "error": error }] }),
        }
    }
}

/// How [`crate::SimServer::finish_turn`] ends a running turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnOutcome {
    /// The turn completes; the session is ready.
    Completed,
    /// The turn ends in error; the session is in error with this `lastError`.
    Error(String),
}

/// What a `commandId` was aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Aggregate {
    Project(ProjectId),
    Thread(ThreadId),
}

impl Aggregate {
    fn of(command: &ClientCommand) -> Aggregate {
        match command {
            ClientCommand::ProjectCreate(c) => Aggregate::Project(c.project_id.clone()),
            other => match other.thread_id() {
                Some(thread) => Aggregate::Thread(thread.clone()),
                // Every command but project.create names a thread.
                None => Aggregate::Project(ProjectId::generate()),
            },
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Aggregate::Project(_) => "project",
            Aggregate::Thread(_) => "thread",
        }
    }

    fn id(&self) -> &str {
        match self {
            Aggregate::Project(id) => id.as_str(),
            Aggregate::Thread(id) => id.as_str(),
        }
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.kind(), self.id())
    }
}

struct Receipt {
    aggregate: Aggregate,
    /// The sequence, or the refusal's message.
    outcome: Result<u64, String>,
}

/// How a turn will end when its time is up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ScriptedEnd {
    Complete,
    Fail(String),
    Hang,
}

struct ActiveTurn {
    turn_id: TurnId,
    requested_at: Timestamp,
    started_at: Option<Timestamp>,
    end: ScriptedEnd,
    duration: Duration,
    /// `[sim:ask]`: the agent asks a person before it works.
    ask: bool,
    /// `[sim:start-fail]`: the provider session never starts.
    start_fail: bool,
    /// A session stop came while the session was starting. As on the real server, T3 showed
    /// the session `stopped` but its start went on: when the agent is up, the session reads
    /// `starting` again and the turn is never delivered, until another stop ends the agent.
    stop_lost: bool,
}

/// The agent process of a thread, as T3 runs one per provider session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentProcess {
    /// None runs (never started, or the session was stopped).
    None,
    /// It runs.
    Running,
    /// It ran, and is gone while T3 still thinks the session is up (T3 restarted): an
    /// interrupt makes T3 start it again to deliver it.
    Lost,
}

struct ThreadEntry {
    /// The wire form served by the snapshot (messages, activities and checkpoints stay empty).
    thread: Thread,
    /// The thread's messages, served only by the thread detail endpoint.
    messages: Vec<Value>,
    /// The thread's activities, served only by the thread detail endpoint.
    activities: Vec<Value>,
    turns: u32,
    /// Moves on whenever the active turn changes, so that a timer set for an earlier turn is
    /// recognised as stale and ignored.
    generation: u64,
    active: Option<ActiveTurn>,
    /// Whether this thread's `[sim:fail-times=N]` turns fail, decided at its first such turn.
    fails_by_count: Option<bool>,
    latest_user_message_at: Option<Timestamp>,
    /// T3's id of the question the agent waits on, while it waits.
    question: Option<String>,
    /// The shell's `hasPendingUserInput` (it stays set after a session stop, as in T3).
    pending_user_input: bool,
    agent: AgentProcess,
    /// How many times T3 started an agent process for it.
    agent_starts: u32,
    /// The thread's snapshot JSON, kept until the thread changes: a snapshot of 10,000 threads
    /// then re-serialises only the few that changed since the last one. Every change goes
    /// through [`World::touch`], which drops it.
    json: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// The session is up: the turn is admitted and runs (or the session fails to start).
    Admit,
    /// The turn's time is up: it ends as scripted.
    Finish,
    /// After an interrupt naming the turn: the session goes `ready`.
    InterruptSettled,
    /// After an interrupt: T3 re-captures the turn's checkpoint and marks it `completed`.
    InterruptCompleted,
    /// A lost agent restarted to deliver an interrupt: the session is back.
    Recovered,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Instant,
    /// Keeps timers due at the same instant in the order they were set.
    order: u64,
    thread: usize,
    generation: u64,
    kind: TimerKind,
}

/// The whole simulated T3.
pub(crate) struct World {
    sequence: u64,
    updated_at: Timestamp,
    projects: Vec<Project>,
    project_index: HashMap<ProjectId, usize>,
    threads: Vec<ThreadEntry>,
    thread_index: HashMap<ThreadId, usize>,
    receipts: HashMap<CommandId, Receipt>,
    /// Per thread title: how many threads carried `[sim:fail-times=N]` so far.
    fail_times_seen: HashMap<String, u32>,
    timers: BinaryHeap<Reverse<Timer>>,
    timer_order: u64,
    ids: SplitMix64,
    turn_duration: Duration,
    startup_delay: Duration,
    bootstrap_delay: Duration,
    worktree_add: Duration,
    interrupt_settle: Duration,
    /// The shell items of the last [`SHELL_REPLAY_LIMIT`] events, one per sequence, oldest
    /// first, ending with the current sequence.
    shell_events: VecDeque<Arc<ShellItem>>,
    /// The current sequence, for shell streams to wait on.
    head: watch::Sender<u64>,
    worktrees_dir: PathBuf,
    /// Per `projectCwd`: the branches worktrees were added on.
    repositories: HashMap<String, git::Repository>,
    /// Every worktree path handed out (a second `git worktree add` there fails).
    worktree_paths: HashSet<String>,
    /// Every client command dispatched to this world, in order (its type and thread), repeats
    /// of a known command id included: what tests check afk sent (or never sent).
    received: Vec<(&'static str, Option<ThreadId>)>,
}

impl World {
    /// A world holding `config`'s projects.
    pub(crate) fn new(config: &SimConfig) -> Result<World, String> {
        let now = Timestamp::now();
        let mut world = World {
            sequence: 0,
            updated_at: now,
            projects: Vec::new(),
            project_index: HashMap::new(),
            threads: Vec::new(),
            thread_index: HashMap::new(),
            receipts: HashMap::new(),
            fail_times_seen: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_order: 0,
            // A stream of its own, so that minting ids never shifts the fault rolls.
            ids: SplitMix64::new(config.seed ^ 0x1D5_u64.rotate_left(40)),
            turn_duration: config.turn_duration,
            startup_delay: config.startup_delay,
            bootstrap_delay: config.bootstrap_delay,
            worktree_add: config.worktree_add,
            interrupt_settle: config.interrupt_settle,
            shell_events: VecDeque::with_capacity(SHELL_REPLAY_LIMIT),
            head: watch::channel(0).0,
            worktrees_dir: config.worktrees_dir.clone(),
            repositories: HashMap::new(),
            worktree_paths: HashSet::new(),
            received: Vec::new(),
        };
        for project in &config.projects {
            let id = ProjectId::new(project.id.clone())
                .map_err(|e| format!("project id {:?} is not a valid T3 id: {e}", project.id))?;
            let title = project.title.clone().unwrap_or_else(|| project.id.clone());
            if title.trim().is_empty() || project.workspace_root.trim().is_empty() {
                return Err(format!(
                    "project {:?} needs a non-empty title and workspace root",
                    project.id
                ));
            }
            if world.project_index.contains_key(&id) {
                return Err(format!("project {:?} is given twice", project.id));
            }
            world.project_index.insert(id.clone(), world.projects.len());
            world.projects.push(Project {
                id,
                title: title.trim().to_owned(),
                workspace_root: project.workspace_root.trim().to_owned(),
                repository_identity: None,
                default_model_selection: None,
                scripts: Vec::new(),
                created_at: now,
                updated_at: now,
                deleted_at: None,
            });
        }
        Ok(world)
    }

    /// The current event sequence.
    pub(crate) fn sequence(&self) -> u64 {
        self.sequence
    }

    /// How long a worktree bootstrap's middle steps take (between creating the thread and
    /// starting its turn).
    /// Every client command dispatched so far, in order: its type and thread.
    pub(crate) fn received(&self) -> Vec<(&'static str, Option<ThreadId>)> {
        self.received.clone()
    }

    pub(crate) fn bootstrap_delay(&self) -> Duration {
        self.bootstrap_delay
    }

    /// How long a bootstrap's `git worktree add` takes (after which T3 records the worktree on
    /// the thread).
    pub(crate) fn worktree_add(&self) -> Duration {
        self.worktree_add
    }

    /// Decides and applies `command` (already validated with [`validate`]) at `now`, honouring
    /// the command's receipt if its id was seen before. Returns the sequence to answer with.
    pub(crate) fn dispatch(&mut self, command: &ClientCommand, now: Instant) -> Result<u64, Refusal> {
        self.received.push((command.kind(), command.thread_id().cloned()));
        let aggregate = Aggregate::of(command);
        let id = command.command_id();
        if let Some(receipt) = self.receipts.get(id) {
            if receipt.aggregate != aggregate {
                return Err(Refusal::conflict(id, &receipt.aggregate, &aggregate));
            }
            return match &receipt.outcome {
                Ok(sequence) => Ok(*sequence),
                Err(reason) => Err(Refusal::previously_rejected(id, reason)),
            };
        }
        let outcome = self.decide(command, now);
        self.receipts.insert(
            id.clone(),
            Receipt {
                aggregate,
                outcome: outcome.as_ref().map(|s| *s).map_err(|r| r.message.clone()),
            },
        );
        outcome
    }

    /// A command id of T3's own (`server:<what>:<uuid>`), for the commands a bootstrap sends.
    fn server_command_id(&mut self, what: &str) -> CommandId {
        let id = format!("server:{what}:{}", self.ids.uuid());
        // Always a valid id; the fallback only keeps this free of panics.
        CommandId::new(id).unwrap_or_else(|_| CommandId::generate())
    }

    /// The thread at `idx`, to change: its cached snapshot JSON is dropped.
    fn touch(&mut self, idx: usize) -> &mut ThreadEntry {
        let entry = &mut self.threads[idx];
        entry.json = None;
        entry
    }

    /// The thread a `kind` command is for. As T3's decider, a deleted thread is still found:
    /// commands for it are accepted (and change nothing visible).
    fn require_thread(&self, id: &ThreadId, kind: &str) -> Result<usize, Refusal> {
        self.thread_index.get(id).copied().ok_or_else(|| {
            Refusal::invariant(
                kind,
                format!("Thread '{id}' does not exist for command '{kind}'."),
            )
        })
    }

    fn is_deleted(&self, idx: usize) -> bool {
        self.threads[idx].thread.deleted_at.is_some()
    }

    fn set_timer(&mut self, at: Instant, thread: usize, generation: u64, kind: TimerKind) {
        self.timer_order += 1;
        self.timers.push(Reverse(Timer {
            at,
            order: self.timer_order,
            thread,
            generation,
            kind,
        }));
    }

    /// The time of a change: now, but never before the previous change.
    fn stamp(&mut self) -> Timestamp {
        let ts = Timestamp::now().max(self.updated_at);
        self.updated_at = ts;
        ts
    }

    /// Records one event about `changed`: the sequence grows by one, the shell item of the
    /// aggregate as it is now is kept for resuming subscribers, and subscribers are woken.
    fn bump(&mut self, changed: Changed) -> u64 {
        self.sequence += 1;
        let sequence = self.sequence;
        let item = match changed {
            Changed::Thread(idx) => {
                let entry = &self.threads[idx];
                let thread = &entry.thread;
                if thread.deleted_at.is_some() || thread.archived_at.is_some() {
                    // T3 announces a deleted or archived thread as removed from the shell.
                    ShellItem::ThreadRemoved {
                        sequence,
                        thread_id: thread.id.clone(),
                    }
                } else {
                    ShellItem::ThreadUpserted {
                        sequence,
                        thread: views::thread_shell(entry),
                    }
                }
            }
            Changed::Project(idx) => {
                let project = &self.projects[idx];
                if project.deleted_at.is_some() {
                    ShellItem::ProjectRemoved {
                        sequence,
                        project_id: project.id.clone(),
                    }
                } else {
                    ShellItem::ProjectUpserted {
                        sequence,
                        project: ProjectShell::from(project),
                    }
                }
            }
        };
        if self.shell_events.len() == SHELL_REPLAY_LIMIT {
            self.shell_events.pop_front();
        }
        self.shell_events.push_back(Arc::new(item));
        self.head.send_replace(sequence);
        sequence
    }

    /// A receiver of the event sequence, which changes with every event: what shell streams
    /// wait on, so that they send a change the moment it happens.
    pub(crate) fn watch_sequence(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// The shell stream items of the events after `after`, oldest first; `None` when they are
    /// no longer kept (more than [`SHELL_REPLAY_LIMIT`] events ago) or `after` is ahead of the
    /// sequence: the subscriber then needs a snapshot, as T3 sends one.
    pub(crate) fn shell_events_after(&self, after: u64) -> Option<Vec<Arc<ShellItem>>> {
        if after > self.sequence {
            return None;
        }
        // The kept events are the sequences `first..=self.sequence`, one each.
        let first = self.sequence + 1 - self.shell_events.len() as u64;
        if after + 1 < first {
            return None;
        }
        let skip = usize::try_from(after + 1 - first).ok()?;
        Some(self.shell_events.iter().skip(skip).cloned().collect())
    }

    fn mint_turn_id(&mut self) -> TurnId {
        // A UUID is always a valid id; the fallback only keeps this free of panics.
        TurnId::new(self.ids.uuid().to_string()).unwrap_or_else(|_| TurnId::generate())
    }

    fn mint_message_id(&mut self) -> MessageId {
        MessageId::new(self.ids.uuid().to_string()).unwrap_or_else(|_| MessageId::generate())
    }

    fn mint_uuid(&mut self) -> String {
        self.ids.uuid().to_string()
    }
}

#[cfg(test)]
mod tests;
