//! What the stand-in serves about its state: the read model (`GET /api/orchestration/snapshot`),
//! the shell (`GET /api/orchestration/shell` and `orchestration.subscribeShell`), the thread
//! detail, and the [`SimThread`] view tests assert on.

use serde::Serialize;
use t3_client::ids::{ProjectId, ThreadId};
use t3_client::wire::{
    ProjectShell, ReadModel, SessionStatus, ShellSnapshot, Thread, ThreadShell, TurnState,
};

use super::{AgentProcess, ThreadEntry, World};

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
    /// The latest turn ended in error (or its session could not start).
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
    /// What it is doing (as of when it was deleted, for a deleted thread: its view froze).
    pub state: SimThreadState,
    /// The session's last error, when it failed.
    pub last_error: Option<String>,
    /// `deletedAt` is set.
    pub deleted: bool,
    /// `archivedAt` is set.
    pub archived: bool,
    /// An agent process works for it now — also one T3 no longer shows, such as the agent of
    /// a thread deleted while its session was starting.
    pub agent_running: bool,
    /// The agent waits for a person's answer.
    pub pending_user_input: bool,
    /// How many times T3 started an agent process for it (once per session start; again when
    /// an interrupt for a lost agent starts it anew).
    pub agent_starts: u32,
}

impl World {
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

    /// `GET /api/orchestration/threads/:id`: the thread with its messages and activities;
    /// `None` when it does not exist or was deleted. With `windowed` (a `turnLimit` was asked),
    /// the reply carries T3's `page` metadata; the stand-in always returns the whole thread.
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
        thread.activities = entry.activities.clone();
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
        (Some(active), _) if thread.deleted_at.is_none() && active.started_at.is_none() => {
            SimThreadState::Starting
        }
        (Some(_), _) if thread.deleted_at.is_none() => SimThreadState::Running,
        (_, Some(SessionStatus::Stopped)) => SimThreadState::Stopped,
        (_, status) => match thread.latest_turn.as_ref().map(|t| t.state) {
            Some(TurnState::Completed) => SimThreadState::Completed,
            Some(TurnState::Error) => SimThreadState::Error,
            Some(TurnState::Interrupted) => SimThreadState::Interrupted,
            Some(TurnState::Running) => SimThreadState::Running,
            None if status == Some(SessionStatus::Error) => SimThreadState::Error,
            None if status == Some(SessionStatus::Starting) => SimThreadState::Starting,
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
        agent_running: entry.agent == AgentProcess::Running,
        pending_user_input: entry.pending_user_input,
        agent_starts: entry.agent_starts,
    }
}

/// T3's `OrchestrationThreadShell` of a thread, with the pending flags only the shell carries.
pub(super) fn thread_shell(entry: &ThreadEntry) -> ThreadShell {
    let mut shell = ThreadShell::of(&entry.thread);
    shell.latest_user_message_at = entry.latest_user_message_at;
    shell.has_pending_user_input = entry.pending_user_input;
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
