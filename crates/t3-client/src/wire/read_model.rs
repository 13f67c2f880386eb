//! The read model served by `GET /api/orchestration/snapshot`, and afk's reading of a thread.
//!
//! Decoding ignores fields T3 adds over time and rejects a document whose known fields have the
//! wrong shape. The snapshot endpoint serves threads without their messages, activities and
//! checkpoints (T3 stopped hydrating them there), so those arrays default to empty.

use serde::{Deserialize, Serialize};

use super::{required_nullable, InteractionMode, ModelSelection, RuntimeMode, Timestamp};
use crate::ids::{MessageId, ProjectId, ThreadId, TurnId};

/// The whole fleet as T3 sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadModel {
    /// The event sequence this snapshot reflects.
    pub snapshot_sequence: u64,
    /// Every project.
    pub projects: Vec<Project>,
    /// Every thread, including archived and deleted ones.
    pub threads: Vec<Thread>,
    /// When anything last changed.
    pub updated_at: Timestamp,
}

impl ReadModel {
    /// The thread with this id, if T3 knows it.
    pub fn thread(&self, id: &ThreadId) -> Option<&Thread> {
        self.threads.iter().find(|t| &t.id == id)
    }
}

/// A project: one repository's workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    /// Its id.
    pub id: ProjectId,
    /// Its title.
    pub title: String,
    /// The checkout threads work in by default.
    pub workspace_root: String,
    /// Where the repository comes from, when T3 knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_identity: Option<serde_json::Value>,
    /// The model new threads use.
    #[serde(deserialize_with = "required_nullable")]
    pub default_model_selection: Option<ModelSelection>,
    /// Project scripts (setup, test, ...), passed through as T3 sends them.
    #[serde(default)]
    pub scripts: Vec<serde_json::Value>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Set once the project is deleted.
    #[serde(deserialize_with = "required_nullable")]
    pub deleted_at: Option<Timestamp>,
}

/// A thread: one agent conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Thread {
    /// Its id.
    pub id: ThreadId,
    /// The project it works in.
    pub project_id: ProjectId,
    /// Its title.
    pub title: String,
    /// The agent that runs it.
    pub model_selection: ModelSelection,
    /// How much the agent may do without asking.
    pub runtime_mode: RuntimeMode,
    /// Act or plan.
    pub interaction_mode: InteractionMode,
    /// Its git branch.
    #[serde(deserialize_with = "required_nullable")]
    pub branch: Option<String>,
    /// Its checkout, `null` for the project's workspace root.
    #[serde(deserialize_with = "required_nullable")]
    pub worktree_path: Option<String>,
    /// The most recent turn, `null` before the first turn is admitted.
    #[serde(deserialize_with = "required_nullable")]
    pub latest_turn: Option<LatestTurn>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change of anything in the thread.
    pub updated_at: Timestamp,
    /// Set once archived.
    #[serde(default)]
    pub archived_at: Option<Timestamp>,
    /// Set once deleted.
    #[serde(deserialize_with = "required_nullable")]
    pub deleted_at: Option<Timestamp>,
    /// Empty in the snapshot (T3 does not hydrate it there).
    #[serde(default)]
    pub messages: Vec<serde_json::Value>,
    /// Empty in the snapshot.
    #[serde(default)]
    pub activities: Vec<serde_json::Value>,
    /// Empty in the snapshot.
    #[serde(default)]
    pub checkpoints: Vec<serde_json::Value>,
    /// The provider session, `null` when none was started.
    #[serde(deserialize_with = "required_nullable")]
    pub session: Option<Session>,
}

/// The state of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TurnState {
    /// The agent is working.
    Running,
    /// Someone interrupted it.
    Interrupted,
    /// The agent finished.
    Completed,
    /// The agent failed.
    Error,
}

/// The most recent turn of a thread.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatestTurn {
    /// Its id.
    pub turn_id: TurnId,
    /// Its state.
    pub state: TurnState,
    /// When it was asked for.
    pub requested_at: Timestamp,
    /// When the agent started on it.
    #[serde(deserialize_with = "required_nullable")]
    pub started_at: Option<Timestamp>,
    /// When it ended.
    #[serde(deserialize_with = "required_nullable")]
    pub completed_at: Option<Timestamp>,
    /// The agent's reply message.
    #[serde(deserialize_with = "required_nullable")]
    pub assistant_message_id: Option<MessageId>,
}

/// The status of a provider session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// Not started.
    Idle,
    /// Starting up.
    Starting,
    /// Working on a turn.
    Running,
    /// Waiting for the next turn.
    Ready,
    /// Its turn was interrupted.
    Interrupted,
    /// Stopped.
    Stopped,
    /// Failed.
    Error,
}

/// A thread's provider session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// The thread it belongs to.
    pub thread_id: ThreadId,
    /// Its status.
    pub status: SessionStatus,
    /// The provider's name, e.g. `claudeAgent`.
    #[serde(deserialize_with = "required_nullable")]
    pub provider_name: Option<String>,
    /// How much the agent may do without asking.
    pub runtime_mode: RuntimeMode,
    /// The turn it is working on.
    #[serde(deserialize_with = "required_nullable")]
    pub active_turn_id: Option<TurnId>,
    /// The last failure, in T3's words.
    #[serde(deserialize_with = "required_nullable")]
    pub last_error: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
}

/// What afk reads from a thread: the state of the attempt it carries (afk's rule in `t3-api.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadState {
    /// Created, but its turn is not admitted yet (`latestTurn` is `null`).
    Starting,
    /// The agent is working.
    Running,
    /// The turn completed and the session is no longer running.
    Succeeded,
    /// The turn or the session ended in error; T3's last error when it gave one.
    Failed {
        /// `session.lastError`.
        reason: Option<String>,
    },
    /// The turn was interrupted (by afk or by a person in T3).
    Interrupted,
    /// The thread is gone or deleted.
    Lost,
}

impl ThreadState {
    /// The state of the attempt whose thread is `thread` (`None` when the snapshot lacks it).
    pub fn of(thread: Option<&Thread>) -> ThreadState {
        let Some(thread) = thread else {
            return ThreadState::Lost;
        };
        if thread.deleted_at.is_some() {
            return ThreadState::Lost;
        }
        let session_status = thread.session.as_ref().map(|s| s.status);
        let turn_state = thread.latest_turn.as_ref().map(|t| t.state);
        if turn_state == Some(TurnState::Error) || session_status == Some(SessionStatus::Error) {
            return ThreadState::Failed {
                reason: thread.session.as_ref().and_then(|s| s.last_error.clone()),
            };
        }
        let session_running = matches!(
            session_status,
            Some(SessionStatus::Starting | SessionStatus::Running)
        );
        if turn_state == Some(TurnState::Running) || session_running {
            return ThreadState::Running;
        }
        match turn_state {
            Some(TurnState::Completed) => ThreadState::Succeeded,
            Some(TurnState::Interrupted) => ThreadState::Interrupted,
            _ => ThreadState::Starting,
        }
    }

    /// True once the thread will not change without a new command.
    pub fn is_final(&self) -> bool {
        !matches!(self, ThreadState::Starting | ThreadState::Running)
    }
}
