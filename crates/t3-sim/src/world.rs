//! The stand-in's state: projects, threads, command receipts, the event sequence, and the
//! simulated agent's schedule. Everything here is synchronous and driven by the caller's clock
//! (`tokio::time::Instant`), so that it is easy to reason about and tests may pause time.
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
//! - Threads are never removed: deletion sets `deletedAt`, as T3's read model does.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use t3_client::ids::{CommandId, MessageId, ProjectId, ThreadId, TurnId};
use t3_client::wire::{
    t3_text_len, ClientCommand, LatestTurn, Project, ProjectShell, ReadModel, Session, SessionStatus,
    ShellItem, ShellSnapshot, Thread, ThreadCreate, ThreadRef, ThreadShell, ThreadTurnStart, Timestamp,
    TurnBootstrap, TurnState, MAX_INPUT_CHARS,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::SimConfig;
use crate::rng::SplitMix64;
use crate::script::TurnScript;

/// What a simulated thread is doing, as a test wants to ask it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimThreadState {
    /// No turn was ever started.
    Idle,
    /// A turn was requested; the session is starting and the turn is not admitted yet.
    Starting,
    /// The turn is running.
    Running,
    /// The latest turn completed.
    Completed,
    /// The latest turn ended in error.
    Error,
    /// The latest turn was interrupted.
    Interrupted,
    /// The session was stopped.
    Stopped,
}

/// One thread as the stand-in holds it, for assertions in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimThread {
    /// Its id.
    pub id: ThreadId,
    /// Its project.
    pub project_id: ProjectId,
    /// Its title.
    pub title: String,
    /// Its branch.
    pub branch: Option<String>,
    /// The worktree it works in (`null` for the project's checkout).
    pub worktree_path: Option<String>,
    /// How many `thread.turn.start` commands were applied to it.
    pub turns: u32,
    /// What it is doing.
    pub state: SimThreadState,
    /// The session's last error, when it failed.
    pub last_error: Option<String>,
    /// `deletedAt` is set.
    pub deleted: bool,
    /// `archivedAt` is set.
    pub archived: bool,
}

/// How many events the stand-in keeps for a shell subscriber resuming with `afterSequence`:
/// T3's `SHELL_RESUME_MAX_GAP`. A larger gap gets a fresh snapshot instead.
pub(crate) const SHELL_REPLAY_LIMIT: usize = 1_000;

/// The aggregate an event is about (the index into `World::threads` or `World::projects`).
#[derive(Debug, Clone, Copy)]
enum Changed {
    Thread(usize),
    Project(usize),
}

/// Why a command sent over the WebSocket RPC failed, as T3's `OrchestrationDispatchCommandError`
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DispatchFailure {
    /// T3's reason text, or the failed step and why.
    pub(crate) message: String,
    /// The thread the bootstrap created was deleted again (`bootstrapThreadDisposition:
    /// "deleted"`).
    pub(crate) thread_deleted: bool,
}

impl From<Refusal> for DispatchFailure {
    fn from(Refusal(message): Refusal) -> Self {
        DispatchFailure {
            message,
            thread_deleted: false,
        }
    }
}

/// The git state of one repository (a `projectCwd`) as far as worktrees go: every branch
/// `git worktree add -b` made there. Git keeps a branch after its thread is deleted, so a
/// second worktree on the same new branch is refused for ever, as `git worktree add -b` would.
#[derive(Debug, Default)]
struct Repository {
    branches: HashSet<String>,
}

/// How [`crate::SimServer::finish_turn`] ends a running turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnOutcome {
    /// The turn completes; the session is ready.
    Completed,
    /// The turn ends in error; the session is in error with this `lastError`.
    Error(String),
}

/// A command T3's decider refuses (reported over HTTP as 500 `orchestration_dispatch_failed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal(pub(crate) String);

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
            ClientCommand::ThreadCreate(c) => Aggregate::Thread(c.thread_id.clone()),
            ClientCommand::ThreadTurnStart(c) => Aggregate::Thread(c.thread_id.clone()),
            ClientCommand::ThreadTurnInterrupt(c) => Aggregate::Thread(c.thread_id.clone()),
            ClientCommand::ThreadSessionStop(c) => Aggregate::Thread(c.thread_id.clone()),
            ClientCommand::ThreadArchive(c)
            | ClientCommand::ThreadUnarchive(c)
            | ClientCommand::ThreadDelete(c) => Aggregate::Thread(c.thread_id.clone()),
        }
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aggregate::Project(id) => write!(f, "project '{id}'"),
            Aggregate::Thread(id) => write!(f, "thread '{id}'"),
        }
    }
}

struct Receipt {
    aggregate: Aggregate,
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
}

/// How a turn ended.
enum TurnEnd {
    Completed,
    Error(String),
    Interrupted,
    SessionStopped,
}

struct ThreadEntry {
    /// The wire form served by the snapshot (messages, activities and checkpoints stay empty).
    thread: Thread,
    /// The thread's messages, served only by the thread detail endpoint.
    messages: Vec<serde_json::Value>,
    turns: u32,
    /// Moves on whenever the active turn changes, so that a timer set for an earlier turn is
    /// recognised as stale and ignored.
    generation: u64,
    active: Option<ActiveTurn>,
    /// Whether this thread's `[sim:fail-times=N]` turns fail, decided at its first such turn.
    fails_by_count: Option<bool>,
    latest_user_message_at: Option<Timestamp>,
    /// The thread's snapshot JSON, kept until the thread changes: a snapshot of 10,000 threads
    /// then re-serialises only the few that changed since the last one. Every change goes
    /// through [`World::touch`], which drops it.
    json: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// The session is up: the turn is admitted and runs.
    Admit,
    /// The turn's time is up: it ends as scripted.
    Finish,
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
    /// The shell items of the last [`SHELL_REPLAY_LIMIT`] events, one per sequence, oldest
    /// first, ending with the current sequence.
    shell_events: VecDeque<Arc<ShellItem>>,
    /// The current sequence, for shell streams to wait on.
    head: watch::Sender<u64>,
    worktrees_dir: PathBuf,
    /// Per `projectCwd`: the branches worktrees were added on.
    repositories: HashMap<String, Repository>,
    /// Every worktree path handed out (a second `git worktree add` there fails).
    worktree_paths: HashSet<String>,
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
            shell_events: VecDeque::with_capacity(SHELL_REPLAY_LIMIT),
            head: watch::channel(0).0,
            worktrees_dir: config.worktrees_dir.clone(),
            repositories: HashMap::new(),
            worktree_paths: HashSet::new(),
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

    /// Decides and applies `command` (already validated with [`validate`]) at `now`, honouring
    /// the command's receipt if its id was seen before. Returns the sequence to answer with.
    pub(crate) fn dispatch(&mut self, command: &ClientCommand, now: Instant) -> Result<u64, Refusal> {
        let aggregate = Aggregate::of(command);
        let id = command.command_id();
        if let Some(receipt) = self.receipts.get(id) {
            if receipt.aggregate != aggregate {
                return Err(Refusal(format!(
                    "Command '{id}' was already dispatched for {} and conflicts with this one for {aggregate}.",
                    receipt.aggregate
                )));
            }
            return match &receipt.outcome {
                Ok(sequence) => Ok(*sequence),
                Err(reason) => Err(Refusal(format!(
                    "Command '{id}' was previously rejected: {reason}"
                ))),
            };
        }
        let outcome = self.decide(command, now);
        self.receipts.insert(
            id.clone(),
            Receipt {
                aggregate,
                outcome: outcome.clone(),
            },
        );
        outcome.map_err(Refusal)
    }

    /// Applies a `thread.turn.start` carrying `bootstrap` as T3's WebSocket RPC does
    /// (`apps/server/src/ws.ts`, `dispatchBootstrapTurnStart`), all at once: create the thread
    /// (`createThread`, under a server command id), add its worktree on the new branch and
    /// record `branch` / `worktreePath` on it (`prepareWorktree`), run the setup script
    /// (`runSetupScript`), then start the turn under the command's own id — the one receipt
    /// the client's `commandId` gets. If a step fails after the thread was created, the thread
    /// is deleted again.
    ///
    /// As in T3, only the final turn start is deduplicated by `commandId`: the same bootstrap
    /// sent again fails at `createThread` because the thread exists, and makes nothing twice.
    pub(crate) fn dispatch_bootstrap(
        &mut self,
        turn: &ThreadTurnStart,
        now: Instant,
    ) -> Result<u64, DispatchFailure> {
        let mut created = false;
        let outcome = self.run_bootstrap(turn, now, &mut created);
        outcome.map_err(|message| {
            let thread_deleted = created && {
                let delete = ClientCommand::ThreadDelete(ThreadRef {
                    command_id: self.server_command_id("bootstrap-thread-delete"),
                    thread_id: turn.thread_id.clone(),
                });
                self.dispatch(&delete, now).is_ok()
            };
            DispatchFailure {
                message,
                thread_deleted,
            }
        })
    }

    fn run_bootstrap(
        &mut self,
        turn: &ThreadTurnStart,
        now: Instant,
        created: &mut bool,
    ) -> Result<u64, String> {
        let bootstrap = turn.bootstrap.clone().unwrap_or(TurnBootstrap {
            create_thread: None,
            prepare_worktree: None,
            run_setup_script: None,
        });
        let script = TurnScript::parse(&turn.message.text);
        let mut worktree_path = None;
        if let Some(thread) = &bootstrap.create_thread {
            worktree_path = thread.worktree_path.clone();
            let create = ClientCommand::ThreadCreate(ThreadCreate {
                command_id: self.server_command_id("bootstrap-thread-create"),
                thread_id: turn.thread_id.clone(),
                project_id: thread.project_id.clone(),
                title: thread.title.clone(),
                model_selection: thread.model_selection.clone(),
                runtime_mode: thread.runtime_mode,
                interaction_mode: thread.interaction_mode,
                branch: thread.branch.clone(),
                worktree_path: thread.worktree_path.clone(),
                created_at: thread.created_at,
            });
            self.dispatch(&create, now).map_err(|Refusal(reason)| reason)?;
            *created = true;
        }
        if let Some(prepare) = &bootstrap.prepare_worktree {
            let cwd = prepare.project_cwd.as_str();
            let branch = match &prepare.branch {
                Some(branch) => branch.as_str().to_owned(),
                // T3's clients name a new branch `t3code/<8 hex>`.
                None => format!("t3code/{}", &self.ids.uuid().simple().to_string()[..8]),
            };
            // T3: `<worktrees dir>/<basename of the repository>/<branch, '/' → '-'>`.
            let repository = Path::new(cwd)
                .file_name()
                .map_or_else(|| cwd.to_owned(), |name| name.to_string_lossy().into_owned());
            let path = self
                .worktrees_dir
                .join(repository)
                .join(branch.replace('/', "-"))
                .display()
                .to_string();
            let git = format!(
                "git worktree add -b {branch} {path} {}",
                prepare.base_branch.as_str()
            );
            if script.worktree_fail {
                return Err(format!(
                    "prepareWorktree failed: {git}: fatal: could not create work tree dir (scripted by [sim:worktree-fail])"
                ));
            }
            let repo = self.repositories.entry(cwd.to_owned()).or_default();
            if repo.branches.contains(&branch) {
                return Err(format!(
                    "prepareWorktree failed: {git}: fatal: a branch named '{branch}' already exists"
                ));
            }
            if self.worktree_paths.contains(&path) {
                return Err(format!(
                    "prepareWorktree failed: {git}: fatal: '{path}' already exists"
                ));
            }
            repo.branches.insert(branch.clone());
            self.worktree_paths.insert(path.clone());
            // T3 records the worktree with a `thread.meta.update` of its own.
            let idx = self.require_thread(&turn.thread_id, "thread.meta.update")?;
            let ts = self.stamp();
            let thread = &mut self.touch(idx).thread;
            thread.branch = Some(branch);
            thread.worktree_path = Some(path.clone());
            thread.updated_at = ts;
            self.bump(Changed::Thread(idx));
            worktree_path = Some(path);
        }
        // T3 runs the setup script only in a worktree.
        if bootstrap.run_setup_script == Some(true) && worktree_path.is_some() && script.setup_fail {
            return Err(
                "runSetupScript failed: the project's setup script exited with status 1 (scripted by [sim:setup-fail])"
                    .into(),
            );
        }
        let mut start = turn.clone();
        start.bootstrap = None;
        self.dispatch(&ClientCommand::ThreadTurnStart(start), now)
            .map_err(|Refusal(reason)| reason)
    }

    /// A command id of T3's own (`server:<what>:<uuid>`), for the commands a bootstrap sends.
    fn server_command_id(&mut self, what: &str) -> CommandId {
        let id = format!("server:{what}:{}", self.ids.uuid());
        // Always a valid id; the fallback only keeps this free of panics.
        CommandId::new(id).unwrap_or_else(|_| CommandId::generate())
    }

    fn decide(&mut self, command: &ClientCommand, now: Instant) -> Result<u64, String> {
        match command {
            ClientCommand::ProjectCreate(c) => {
                if let Some(&i) = self.project_index.get(&c.project_id) {
                    if self.projects[i].deleted_at.is_none() {
                        return Err(format!(
                            "Project '{}' already exists and cannot be created twice.",
                            c.project_id
                        ));
                    }
                }
                let ts = self.stamp();
                let project = Project {
                    id: c.project_id.clone(),
                    title: c.title.as_str().to_owned(),
                    workspace_root: c.workspace_root.as_str().to_owned(),
                    repository_identity: None,
                    default_model_selection: c.default_model_selection.clone(),
                    scripts: Vec::new(),
                    created_at: ts,
                    updated_at: ts,
                    deleted_at: None,
                };
                match self.project_index.get(&c.project_id) {
                    Some(&i) => self.projects[i] = project,
                    None => {
                        self.project_index
                            .insert(c.project_id.clone(), self.projects.len());
                        self.projects.push(project);
                    }
                }
                Ok(self.bump(Changed::Project(self.project_index[&c.project_id])))
            }
            ClientCommand::ThreadCreate(c) => {
                let live_project = self
                    .project_index
                    .get(&c.project_id)
                    .is_some_and(|&i| self.projects[i].deleted_at.is_none());
                if !live_project {
                    return Err(format!(
                        "Project '{}' does not exist for command 'thread.create'.",
                        c.project_id
                    ));
                }
                if self.thread_index.contains_key(&c.thread_id) {
                    return Err(format!(
                        "Thread '{}' already exists and cannot be created twice.",
                        c.thread_id
                    ));
                }
                let ts = self.stamp();
                let thread = Thread {
                    id: c.thread_id.clone(),
                    project_id: c.project_id.clone(),
                    title: c.title.as_str().to_owned(),
                    model_selection: c.model_selection.clone(),
                    runtime_mode: c.runtime_mode,
                    interaction_mode: c.interaction_mode,
                    branch: c.branch.clone(),
                    worktree_path: c.worktree_path.clone(),
                    latest_turn: None,
                    created_at: ts,
                    updated_at: ts,
                    archived_at: None,
                    deleted_at: None,
                    messages: Vec::new(),
                    activities: Vec::new(),
                    checkpoints: Vec::new(),
                    session: None,
                };
                self.thread_index.insert(c.thread_id.clone(), self.threads.len());
                self.threads.push(ThreadEntry {
                    thread,
                    messages: Vec::new(),
                    turns: 0,
                    generation: 0,
                    active: None,
                    fails_by_count: None,
                    latest_user_message_at: None,
                    json: None,
                });
                Ok(self.bump(Changed::Thread(self.threads.len() - 1)))
            }
            ClientCommand::ThreadTurnStart(c) => {
                let idx = self.require_thread(&c.thread_id, command.kind())?;
                let script = TurnScript::parse(&c.message.text);
                let end = self.scripted_end(idx, &script);
                let duration = script.duration.unwrap_or(self.turn_duration);
                let turn_id = self.mint_turn_id();
                if self.threads[idx].active.is_some() {
                    // A new turn supersedes the running one (the stand-in runs one turn per
                    // thread at a time).
                    self.end_turn(idx, TurnEnd::Interrupted);
                }
                let ts = self.stamp();
                let entry = self.touch(idx);
                entry.generation += 1;
                entry.turns += 1;
                entry.active = Some(ActiveTurn {
                    turn_id,
                    requested_at: ts,
                    started_at: None,
                    end,
                    duration,
                });
                entry.messages.push(json!({
                    "id": c.message.message_id,
                    "role": "user",
                    "text": c.message.text,
                    "attachments": [],
                    "turnId": null,
                    "streaming": false,
                    "createdAt": ts,
                    "updatedAt": ts,
                }));
                entry.latest_user_message_at = Some(ts);
                entry.thread.session = Some(Session {
                    thread_id: c.thread_id.clone(),
                    status: SessionStatus::Starting,
                    provider_name: Some(entry.thread.model_selection.instance_id.as_str().to_owned()),
                    runtime_mode: c.runtime_mode,
                    active_turn_id: None,
                    last_error: None,
                    updated_at: ts,
                });
                entry.thread.updated_at = ts;
                let generation = entry.generation;
                // T3 records two events: the user message, then the turn-start request.
                self.bump(Changed::Thread(idx));
                let sequence = self.bump(Changed::Thread(idx));
                self.set_timer(now + self.startup_delay, idx, generation, TimerKind::Admit);
                Ok(sequence)
            }
            ClientCommand::ThreadTurnInterrupt(c) => {
                let idx = self.require_thread(&c.thread_id, command.kind())?;
                let aimed_at_active = match (&self.threads[idx].active, &c.turn_id) {
                    (Some(active), Some(turn)) => &active.turn_id == turn,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                let sequence = self.bump(Changed::Thread(idx));
                if aimed_at_active {
                    self.end_turn(idx, TurnEnd::Interrupted);
                }
                Ok(sequence)
            }
            ClientCommand::ThreadSessionStop(c) => {
                let idx = self.require_thread(&c.thread_id, command.kind())?;
                let sequence = self.bump(Changed::Thread(idx));
                self.stop_session(idx);
                Ok(sequence)
            }
            ClientCommand::ThreadArchive(c) => {
                let idx = self.require_thread(&c.thread_id, command.kind())?;
                if self.threads[idx].thread.archived_at.is_some() {
                    return Err(format!(
                        "Thread '{}' is already archived and cannot handle command 'thread.archive'.",
                        c.thread_id
                    ));
                }
                let ts = self.stamp();
                let thread = &mut self.touch(idx).thread;
                thread.archived_at = Some(ts);
                thread.updated_at = ts;
                Ok(self.bump(Changed::Thread(idx)))
            }
            ClientCommand::ThreadUnarchive(c) => {
                let idx = self.require_thread(&c.thread_id, command.kind())?;
                if self.threads[idx].thread.archived_at.is_none() {
                    return Err(format!(
                        "Thread '{}' is not archived for command 'thread.unarchive'.",
                        c.thread_id
                    ));
                }
                let ts = self.stamp();
                let thread = &mut self.touch(idx).thread;
                thread.archived_at = None;
                thread.updated_at = ts;
                Ok(self.bump(Changed::Thread(idx)))
            }
            ClientCommand::ThreadDelete(c) => {
                let idx = self.require_thread(&c.thread_id, command.kind())?;
                let ts = self.stamp();
                let thread = &mut self.touch(idx).thread;
                thread.deleted_at = Some(ts);
                thread.updated_at = ts;
                let sequence = self.bump(Changed::Thread(idx));
                // T3 stops a deleted thread's session.
                self.stop_session(idx);
                Ok(sequence)
            }
        }
    }

    /// Runs every timer due at `now`; returns when the next one is due.
    pub(crate) fn fire_due(&mut self, now: Instant) -> Option<Instant> {
        loop {
            match self.timers.peek() {
                Some(Reverse(timer)) if timer.at <= now => {}
                Some(Reverse(timer)) => return Some(timer.at),
                None => return None,
            }
            if let Some(Reverse(timer)) = self.timers.pop() {
                self.fire(timer);
            }
        }
    }

    /// Ends `thread`'s turn now with `outcome`. False when no turn was starting or running.
    pub(crate) fn finish_turn(&mut self, thread: &ThreadId, outcome: TurnOutcome) -> bool {
        let Some(&idx) = self.thread_index.get(thread) else {
            return false;
        };
        if self.threads[idx].active.is_none() {
            return false;
        }
        if self.threads[idx]
            .active
            .as_ref()
            .is_some_and(|a| a.started_at.is_none())
        {
            self.admit(idx, None);
        }
        self.end_turn(
            idx,
            match outcome {
                TurnOutcome::Completed => TurnEnd::Completed,
                // T3's `lastError` is a trimmed non-empty string.
                TurnOutcome::Error(message) if message.trim().is_empty() => {
                    TurnEnd::Error("t3-sim: the turn was ended in error by the test".into())
                }
                TurnOutcome::Error(message) => TurnEnd::Error(message.trim().to_owned()),
            },
        );
        true
    }

    fn fire(&mut self, timer: Timer) {
        let Some(entry) = self.threads.get(timer.thread) else {
            return;
        };
        if entry.generation != timer.generation {
            return;
        }
        match timer.kind {
            TimerKind::Admit => self.admit(timer.thread, Some(timer.at)),
            TimerKind::Finish => {
                let end = entry.active.as_ref().map(|a| a.end.clone());
                match end {
                    Some(ScriptedEnd::Complete) => {
                        self.end_turn(timer.thread, TurnEnd::Completed);
                    }
                    Some(ScriptedEnd::Fail(message)) => {
                        self.end_turn(timer.thread, TurnEnd::Error(message));
                    }
                    Some(ScriptedEnd::Hang) | None => {}
                }
            }
        }
    }

    /// The session is up and the turn runs. With `due`, the turn's end is scheduled from then.
    fn admit(&mut self, idx: usize, due: Option<Instant>) {
        let ts = self.stamp();
        let entry = self.touch(idx);
        let Some(active) = entry.active.as_mut() else {
            return;
        };
        active.started_at = Some(ts);
        entry.thread.latest_turn = Some(LatestTurn {
            turn_id: active.turn_id.clone(),
            state: TurnState::Running,
            requested_at: active.requested_at,
            started_at: Some(ts),
            completed_at: None,
            assistant_message_id: None,
        });
        if let Some(session) = entry.thread.session.as_mut() {
            session.status = SessionStatus::Running;
            session.active_turn_id = Some(active.turn_id.clone());
            session.updated_at = ts;
        }
        entry.thread.updated_at = ts;
        let finish = (active.end != ScriptedEnd::Hang).then_some(active.duration);
        let generation = entry.generation;
        self.bump(Changed::Thread(idx));
        if let (Some(due), Some(duration)) = (due, finish) {
            self.set_timer(due + duration, idx, generation, TimerKind::Finish);
        }
    }

    /// Ends the active turn, if any, and records how. Returns whether there was one.
    fn end_turn(&mut self, idx: usize, end: TurnEnd) -> bool {
        let assistant_message = matches!(end, TurnEnd::Completed).then(|| self.mint_message_id());
        let ts = self.stamp();
        let entry = self.touch(idx);
        let Some(active) = entry.active.take() else {
            return false;
        };
        entry.generation += 1;
        let (turn_state, session_status, last_error) = match end {
            TurnEnd::Completed => (TurnState::Completed, SessionStatus::Ready, None),
            TurnEnd::Error(message) => (TurnState::Error, SessionStatus::Error, Some(message)),
            TurnEnd::Interrupted => (TurnState::Interrupted, SessionStatus::Interrupted, None),
            TurnEnd::SessionStopped => (TurnState::Interrupted, SessionStatus::Stopped, None),
        };
        if let Some(id) = &assistant_message {
            entry.messages.push(json!({
                "id": id,
                "role": "assistant",
                "text": "t3-sim: the simulated agent finished this turn (no real agent ran).",
                "turnId": active.turn_id,
                "streaming": false,
                "createdAt": ts,
                "updatedAt": ts,
            }));
        }
        entry.thread.latest_turn = Some(LatestTurn {
            turn_id: active.turn_id,
            state: turn_state,
            requested_at: active.requested_at,
            started_at: active.started_at,
            completed_at: Some(ts),
            assistant_message_id: assistant_message,
        });
        if let Some(session) = entry.thread.session.as_mut() {
            session.status = session_status;
            session.active_turn_id = None;
            session.last_error = last_error;
            session.updated_at = ts;
        }
        entry.thread.updated_at = ts;
        self.bump(Changed::Thread(idx));
        true
    }

    /// Stops the thread's session, interrupting its turn if one is active.
    fn stop_session(&mut self, idx: usize) {
        if self.end_turn(idx, TurnEnd::SessionStopped) {
            return;
        }
        let running = self.threads[idx]
            .thread
            .session
            .as_ref()
            .is_some_and(|s| s.status != SessionStatus::Stopped);
        if running {
            let ts = self.stamp();
            let thread = &mut self.touch(idx).thread;
            if let Some(session) = thread.session.as_mut() {
                session.status = SessionStatus::Stopped;
                session.active_turn_id = None;
                session.updated_at = ts;
            }
            thread.updated_at = ts;
            self.bump(Changed::Thread(idx));
        }
    }

    fn scripted_end(&mut self, idx: usize, script: &TurnScript) -> ScriptedEnd {
        if script.hang {
            return ScriptedEnd::Hang;
        }
        if script.fail {
            return ScriptedEnd::Fail("t3-sim: the simulated agent failed, as scripted by [sim:fail]".into());
        }
        let Some(times) = script.fail_times else {
            return ScriptedEnd::Complete;
        };
        let fails = match self.threads[idx].fails_by_count {
            Some(fails) => fails,
            None => {
                let seen = self
                    .fail_times_seen
                    .entry(self.threads[idx].thread.title.clone())
                    .or_insert(0);
                let fails = *seen < times;
                *seen += 1;
                self.threads[idx].fails_by_count = Some(fails);
                fails
            }
        };
        if fails {
            ScriptedEnd::Fail(format!(
                "t3-sim: the simulated agent failed, as scripted by [sim:fail-times={times}]"
            ))
        } else {
            ScriptedEnd::Complete
        }
    }

    /// The thread at `idx`, to change: its cached snapshot JSON is dropped.
    fn touch(&mut self, idx: usize) -> &mut ThreadEntry {
        let entry = &mut self.threads[idx];
        entry.json = None;
        entry
    }

    fn require_thread(&self, id: &ThreadId, kind: &str) -> Result<usize, String> {
        match self.thread_index.get(id) {
            Some(&idx) if self.threads[idx].thread.deleted_at.is_none() => Ok(idx),
            Some(_) => Err(format!(
                "Thread '{id}' was deleted and cannot handle command '{kind}'."
            )),
            None => Err(format!("Thread '{id}' does not exist for command '{kind}'.")),
        }
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
                        thread: thread_shell(entry),
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

    /// The read model, owned (for tests).
    pub(crate) fn read_model(&self) -> ReadModel {
        ReadModel {
            snapshot_sequence: self.sequence,
            projects: self.projects.clone(),
            threads: self.threads.iter().map(|e| e.thread.clone()).collect(),
            updated_at: self.updated_at,
        }
    }

    /// Every thread, in creation order (for tests).
    pub(crate) fn threads(&self) -> Vec<SimThread> {
        self.threads.iter().map(sim_thread).collect()
    }

    /// One thread (for tests).
    pub(crate) fn thread(&self, id: &ThreadId) -> Option<SimThread> {
        self.thread_index
            .get(id)
            .map(|&idx| sim_thread(&self.threads[idx]))
    }

    /// `GET /api/orchestration/snapshot`, serialised from the state, reusing each unchanged
    /// thread's JSON from the previous snapshot.
    pub(crate) fn snapshot_json(&mut self) -> serde_json::Result<Vec<u8>> {
        let mut threads_len = 0;
        for entry in &mut self.threads {
            if entry.json.is_none() {
                entry.json = Some(serde_json::to_vec(&entry.thread)?);
            }
            threads_len += entry.json.as_ref().map_or(0, Vec::len) + 1;
        }
        let mut out = Vec::with_capacity(threads_len + 4096);
        out.extend_from_slice(b"{\"snapshotSequence\":");
        serde_json::to_writer(&mut out, &self.sequence)?;
        out.extend_from_slice(b",\"projects\":");
        serde_json::to_writer(&mut out, &self.projects)?;
        out.extend_from_slice(b",\"threads\":[");
        for (i, entry) in self.threads.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            if let Some(json) = &entry.json {
                out.extend_from_slice(json);
            }
        }
        out.extend_from_slice(b"],\"updatedAt\":");
        serde_json::to_writer(&mut out, &self.updated_at)?;
        out.push(b'}');
        Ok(out)
    }

    /// The shell snapshot (`GET /api/orchestration/shell` and the first item of
    /// `orchestration.subscribeShell`): live projects and threads (neither archived nor
    /// deleted), in T3's shell shapes.
    pub(crate) fn shell_snapshot(&self) -> ShellSnapshot {
        ShellSnapshot {
            snapshot_sequence: self.sequence,
            projects: self
                .projects
                .iter()
                .filter(|p| p.deleted_at.is_none())
                .map(ProjectShell::from)
                .collect(),
            threads: self
                .threads
                .iter()
                .filter(|e| e.thread.deleted_at.is_none() && e.thread.archived_at.is_none())
                .map(thread_shell)
                .collect(),
            updated_at: self.updated_at,
        }
    }

    /// `GET /api/orchestration/shell`, serialised.
    pub(crate) fn shell_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&self.shell_snapshot())
    }

    /// `GET /api/orchestration/threads/:id`: the thread with its messages; `None` when it does
    /// not exist or was deleted. With `windowed` (a `turnLimit` was asked), the reply carries
    /// T3's `page` metadata; the stand-in always returns the whole thread.
    pub(crate) fn thread_detail_json(
        &self,
        id: &ThreadId,
        windowed: bool,
    ) -> Option<serde_json::Result<Vec<u8>>> {
        let &idx = self.thread_index.get(id)?;
        let entry = &self.threads[idx];
        if entry.thread.deleted_at.is_some() {
            return None;
        }
        let mut thread = entry.thread.clone();
        thread.messages = entry.messages.clone();
        Some(serde_json::to_vec(&DetailView {
            snapshot_sequence: self.sequence,
            thread,
            page: windowed.then_some(PageView {
                before_cursor: None,
                has_more: false,
                snapshot_sequence: self.sequence,
            }),
        }))
    }
}

fn sim_thread(entry: &ThreadEntry) -> SimThread {
    let thread = &entry.thread;
    let session = thread.session.as_ref();
    let state = match (&entry.active, session.map(|s| s.status)) {
        (Some(active), _) if active.started_at.is_none() => SimThreadState::Starting,
        (Some(_), _) => SimThreadState::Running,
        (None, Some(SessionStatus::Stopped)) => SimThreadState::Stopped,
        (None, _) => match thread.latest_turn.as_ref().map(|t| t.state) {
            Some(TurnState::Completed) => SimThreadState::Completed,
            Some(TurnState::Error) => SimThreadState::Error,
            Some(TurnState::Interrupted) => SimThreadState::Interrupted,
            Some(TurnState::Running) => SimThreadState::Running,
            None => SimThreadState::Idle,
        },
    };
    SimThread {
        id: thread.id.clone(),
        project_id: thread.project_id.clone(),
        title: thread.title.clone(),
        branch: thread.branch.clone(),
        worktree_path: thread.worktree_path.clone(),
        turns: entry.turns,
        state,
        last_error: session.and_then(|s| s.last_error.clone()),
        deleted: thread.deleted_at.is_some(),
        archived: thread.archived_at.is_some(),
    }
}

/// Checks what T3's schema checks beyond what decoding the command did, and normalises the
/// command as T3 does (trimmed strings). An error here is a 400 `invalid_command`.
pub(crate) fn validate(mut command: ClientCommand) -> Result<ClientCommand, String> {
    match &mut command {
        ClientCommand::ThreadCreate(c) => {
            c.branch = trimmed_non_empty("branch", c.branch.take())?;
            c.worktree_path = trimmed_non_empty("worktreePath", c.worktree_path.take())?;
        }
        ClientCommand::ThreadTurnStart(c) => {
            if let Some(thread) = c.bootstrap.as_mut().and_then(|b| b.create_thread.as_mut()) {
                thread.branch = trimmed_non_empty("bootstrap.createThread.branch", thread.branch.take())?;
                thread.worktree_path =
                    trimmed_non_empty("bootstrap.createThread.worktreePath", thread.worktree_path.take())?;
            }
            let len = t3_text_len(&c.message.text);
            if len > MAX_INPUT_CHARS {
                return Err(format!(
                    "message.text is {len} characters, over T3's limit of {MAX_INPUT_CHARS}"
                ));
            }
            for (i, attachment) in c.message.attachments.iter().enumerate() {
                check_attachment(attachment).map_err(|e| format!("message.attachments[{i}]: {e}"))?;
            }
        }
        _ => {}
    }
    Ok(command)
}

fn trimmed_non_empty(field: &str, value: Option<String>) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Err(format!("{field} must be null or a non-empty string")),
        Some(v) => Ok(Some(v.trim().to_owned())),
    }
}

/// T3 accepts image uploads only: `{type: "image", name, mimeType: "image/…", sizeBytes, dataUrl}`.
fn check_attachment(value: &serde_json::Value) -> Result<(), String> {
    let object = value.as_object().ok_or("an attachment must be an object")?;
    let text = |key: &str| {
        object
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    if object.get("type").and_then(|v| v.as_str()) != Some("image") {
        return Err("type must be \"image\"".into());
    }
    if text("name").is_none() || text("dataUrl").is_none() {
        return Err("name and dataUrl must be non-empty strings".into());
    }
    if !text("mimeType").is_some_and(|m| m.to_ascii_lowercase().starts_with("image/")) {
        return Err("mimeType must be an image type".into());
    }
    if object.get("sizeBytes").and_then(|v| v.as_u64()).is_none() {
        return Err("sizeBytes must be a non-negative integer".into());
    }
    Ok(())
}

/// T3's `OrchestrationThreadShell` of a thread (the simulated agent never asks a person
/// anything, so nothing is pending).
fn thread_shell(entry: &ThreadEntry) -> ThreadShell {
    let mut shell = ThreadShell::of(&entry.thread);
    shell.latest_user_message_at = entry.latest_user_message_at;
    shell
}

/// T3's `OrchestrationThreadDetailSnapshot`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DetailView {
    snapshot_sequence: u64,
    thread: Thread,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<PageView>,
}

/// T3's `OrchestrationThreadDetailPage`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PageView {
    before_cursor: Option<String>,
    has_more: bool,
    snapshot_sequence: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimProject;
    use t3_client::wire::{
        InteractionMode, MessageRole, ModelSelection, NonEmptyString, RuntimeMode, TurnMessage,
    };

    fn world() -> World {
        World::new(&SimConfig {
            projects: vec![SimProject::new("p", "/w")],
            turn_duration: Duration::from_secs(10),
            startup_delay: Duration::from_secs(1),
            ..SimConfig::default()
        })
        .expect("a valid config")
    }

    fn create(command: &str, thread: &str, title: &str) -> ClientCommand {
        ClientCommand::ThreadCreate(ThreadCreate {
            command_id: CommandId::new(command).expect("id"),
            thread_id: ThreadId::new(thread).expect("id"),
            project_id: ProjectId::new("p").expect("id"),
            title: NonEmptyString::new(title).expect("title"),
            model_selection: ModelSelection {
                instance_id: NonEmptyString::new("claudeAgent").expect("instance"),
                model: NonEmptyString::new("claude-sonnet-4-5").expect("model"),
                options: None,
            },
            runtime_mode: RuntimeMode::FullAccess,
            interaction_mode: InteractionMode::Default,
            branch: None,
            worktree_path: None,
            created_at: Timestamp::now(),
        })
    }

    fn turn(command: &str, thread: &str, text: &str) -> ClientCommand {
        ClientCommand::ThreadTurnStart(ThreadTurnStart {
            command_id: CommandId::new(command).expect("id"),
            thread_id: ThreadId::new(thread).expect("id"),
            message: TurnMessage {
                message_id: MessageId::new(format!("m-{command}")).expect("id"),
                role: MessageRole::User,
                text: text.into(),
                attachments: Vec::new(),
            },
            model_selection: None,
            runtime_mode: RuntimeMode::FullAccess,
            interaction_mode: InteractionMode::Default,
            bootstrap: None,
            created_at: Timestamp::now(),
        })
    }

    fn state(world: &World, thread: &str) -> SimThreadState {
        world
            .thread(&ThreadId::new(thread).expect("id"))
            .map(|t| t.state)
            .expect("the thread exists")
    }

    #[test]
    fn a_turn_is_admitted_after_the_startup_delay_and_ends_after_its_duration() {
        let mut world = world();
        let t0 = Instant::now();
        world.dispatch(&create("c1", "t1", "T"), t0).expect("created");
        world.dispatch(&turn("c2", "t1", "go"), t0).expect("started");
        assert_eq!(state(&world, "t1"), SimThreadState::Starting);
        assert_eq!(world.fire_due(t0), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            world.fire_due(t0 + Duration::from_secs(1)),
            Some(t0 + Duration::from_secs(11))
        );
        assert_eq!(state(&world, "t1"), SimThreadState::Running);
        assert_eq!(world.fire_due(t0 + Duration::from_secs(11)), None);
        assert_eq!(state(&world, "t1"), SimThreadState::Completed);
    }

    #[test]
    fn timers_of_an_ended_turn_are_ignored() {
        let mut world = world();
        let t0 = Instant::now();
        world.dispatch(&create("c1", "t1", "T"), t0).expect("created");
        world.dispatch(&turn("c2", "t1", "go"), t0).expect("started");
        assert!(world.finish_turn(&ThreadId::new("t1").expect("id"), TurnOutcome::Error("x".into())));
        let sequence = world.sequence();
        assert_eq!(world.fire_due(t0 + Duration::from_secs(60)), None);
        assert_eq!(world.sequence(), sequence, "stale timers change nothing");
        assert_eq!(state(&world, "t1"), SimThreadState::Error);
    }

    #[test]
    fn the_sequence_grows_with_every_change_and_receipts_replay_it() {
        let mut world = world();
        let t0 = Instant::now();
        let a = world.dispatch(&create("c1", "t1", "T"), t0).expect("created");
        let b = world.dispatch(&turn("c2", "t1", "go"), t0).expect("started");
        assert!(b > a);
        world.fire_due(t0 + Duration::from_secs(1));
        assert!(world.sequence() > b, "admitting the turn is a change");
        assert_eq!(world.dispatch(&create("c1", "t1", "T"), t0), Ok(a));
        assert!(
            world.dispatch(&create("c1", "t2", "T"), t0).is_err(),
            "a conflict"
        );
    }

    #[test]
    fn snapshot_of_ten_thousand_threads_serialises_every_thread() {
        let mut world = world();
        let t0 = Instant::now();
        for i in 0..10_000 {
            world
                .dispatch(&create(&format!("c{i}"), &format!("t{i}"), "T"), t0)
                .expect("created");
            world
                .dispatch(&turn(&format!("s{i}"), &format!("t{i}"), "go"), t0)
                .expect("started");
        }
        world.fire_due(t0 + Duration::from_secs(1));
        let started = std::time::Instant::now();
        let body = world.snapshot_json().expect("serialises");
        eprintln!(
            "snapshot of 10k threads: {} bytes in {:?}",
            body.len(),
            started.elapsed()
        );
        let model: ReadModel = serde_json::from_slice(&body).expect("the client's read model decodes it");
        assert_eq!(model.threads.len(), 10_000);
        assert!(model
            .threads
            .iter()
            .all(|t| t.latest_turn.as_ref().map(|l| l.state) == Some(TurnState::Running)));
        assert_eq!(model, world.read_model());

        // Again, after one thread changed: the cached JSON of the others is reused, the changed
        // one is not.
        assert!(world.finish_turn(&ThreadId::new("t7").expect("id"), TurnOutcome::Completed));
        let started = std::time::Instant::now();
        let body = world.snapshot_json().expect("serialises");
        eprintln!("snapshot of 10k threads, one changed: {:?}", started.elapsed());
        let model: ReadModel = serde_json::from_slice(&body).expect("decodes");
        assert_eq!(model, world.read_model());
        let t7 = model.thread(&ThreadId::new("t7").expect("id")).expect("t7");
        assert_eq!(
            t7.latest_turn.as_ref().map(|l| l.state),
            Some(TurnState::Completed)
        );
    }
}
