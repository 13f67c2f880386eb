//! The shell stream of `orchestration.subscribeShell` (WebSocket RPC): the UI's list view of the
//! fleet, first as a snapshot and then as upserts and removals with growing sequences.
//!
//! A shell thread is a [`Thread`] without `deletedAt` and the hydrated arrays: T3 announces a
//! deleted thread with `thread-removed` instead. [`ThreadShell::into_thread`] gives the watcher one
//! shape for both the HTTP snapshot and the stream.

use serde::{Deserialize, Serialize};

use super::read_model::threads_one_by_one;
use super::{
    required_nullable, InteractionMode, LatestTurn, ModelSelection, RuntimeMode, Session, Timestamp,
};
use super::{Project, Thread, UnreadableThread};
use crate::ids::{ProjectId, ThreadId};

/// The payload of `orchestration.subscribeShell`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeShell {
    /// Resume: replay the events after this sequence instead of sending a snapshot (T3 replays a
    /// gap of at most 1,000 events and sends a fresh snapshot otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_sequence: Option<u64>,
    /// Ask for a `synchronized` item once the snapshot or replay is complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_completion_marker: Option<bool>,
}

/// One item of the shell stream, tagged by its `kind`. Kinds this crate does not know (T3 and its
/// forks add some: spaces, runs) decode as [`ShellItem::Other`] and are skipped.
// Thread upserts are the common item and the large one: boxing them would add an allocation to
// nearly every item for the sake of the rare small ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ShellItem {
    /// The whole fleet; the stream's first item unless resuming.
    Snapshot {
        /// The shell snapshot.
        snapshot: ShellSnapshot,
    },
    /// The snapshot or replay before it is complete (only when asked for).
    Synchronized,
    /// A project was created or changed.
    ProjectUpserted {
        /// The event's sequence.
        sequence: u64,
        /// The project as it is now.
        project: ProjectShell,
    },
    /// A project was deleted.
    ProjectRemoved {
        /// The event's sequence.
        sequence: u64,
        /// The project.
        #[serde(rename = "projectId")]
        project_id: ProjectId,
    },
    /// A thread was created or changed.
    ThreadUpserted {
        /// The event's sequence.
        sequence: u64,
        /// The thread as it is now.
        thread: ThreadShell,
    },
    /// A thread was deleted.
    ThreadRemoved {
        /// The event's sequence.
        sequence: u64,
        /// The thread.
        #[serde(rename = "threadId")]
        thread_id: ThreadId,
    },
    /// A snapshot some of whose threads afk cannot read (never sent by T3 as such: see
    /// [`ShellItem::decode`]).
    #[serde(skip)]
    PartialSnapshot {
        /// The snapshot without the unreadable threads.
        snapshot: ShellSnapshot,
        /// The threads it lists that cannot be read.
        unreadable: Vec<UnreadableThread>,
    },
    /// A thread upsert afk cannot read (see [`ShellItem::decode`]).
    #[serde(skip)]
    ThreadUnreadable {
        /// The event's sequence.
        sequence: u64,
        /// The thread and why it cannot be read.
        thread: UnreadableThread,
    },
    /// A kind this crate does not know; skipped.
    #[serde(other)]
    Other,
}

/// A snapshot item with its threads left undecoded.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LooseSnapshotItem {
    snapshot: LooseShellSnapshot,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LooseShellSnapshot {
    snapshot_sequence: u64,
    projects: Vec<ProjectShell>,
    threads: Vec<Box<serde_json::value::RawValue>>,
    updated_at: Timestamp,
}

/// A thread upsert with its thread left undecoded.
#[derive(Deserialize)]
struct LooseThreadUpsert {
    sequence: u64,
    thread: Box<serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct KindOnly {
    kind: String,
}

impl ShellItem {
    /// Decodes one stream item; a thread afk cannot read (in a snapshot or an upsert) does not
    /// fail the item but becomes [`ShellItem::PartialSnapshot`] or [`ShellItem::ThreadUnreadable`],
    /// so that one odd thread never blinds the view of all the others. An item that cannot be
    /// read otherwise (or whose thread id cannot) fails as [`serde_json::from_str`] would.
    pub fn decode(text: &str) -> Result<ShellItem, serde_json::Error> {
        let strict = match serde_json::from_str::<ShellItem>(text) {
            Ok(item) => return Ok(item),
            Err(error) => error,
        };
        let Ok(KindOnly { kind }) = serde_json::from_str::<KindOnly>(text) else {
            return Err(strict);
        };
        match kind.as_str() {
            "snapshot" => {
                let loose = serde_json::from_str::<LooseSnapshotItem>(text)
                    .map_err(|_| strict)?
                    .snapshot;
                let (threads, unreadable) = threads_one_by_one::<ThreadShell>(loose.threads)?;
                Ok(ShellItem::PartialSnapshot {
                    snapshot: ShellSnapshot {
                        snapshot_sequence: loose.snapshot_sequence,
                        projects: loose.projects,
                        threads,
                        updated_at: loose.updated_at,
                    },
                    unreadable,
                })
            }
            "thread-upserted" => {
                let loose = serde_json::from_str::<LooseThreadUpsert>(text).map_err(|_| strict)?;
                let (readable, mut unreadable) = threads_one_by_one::<ThreadShell>(vec![loose.thread])?;
                match (readable.into_iter().next(), unreadable.pop()) {
                    (Some(thread), _) => Ok(ShellItem::ThreadUpserted {
                        sequence: loose.sequence,
                        thread,
                    }),
                    (None, Some(thread)) => Ok(ShellItem::ThreadUnreadable {
                        sequence: loose.sequence,
                        thread,
                    }),
                    (None, None) => unreachable!("one thread in, one out"),
                }
            }
            _ => Err(strict),
        }
    }

    /// The event's sequence, for the kinds that carry one.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            ShellItem::Snapshot { snapshot } | ShellItem::PartialSnapshot { snapshot, .. } => {
                Some(snapshot.snapshot_sequence)
            }
            ShellItem::ProjectUpserted { sequence, .. }
            | ShellItem::ProjectRemoved { sequence, .. }
            | ShellItem::ThreadUpserted { sequence, .. }
            | ShellItem::ThreadUnreadable { sequence, .. }
            | ShellItem::ThreadRemoved { sequence, .. } => Some(*sequence),
            ShellItem::Synchronized | ShellItem::Other => None,
        }
    }
}

/// The shell snapshot: every live project and thread, as of `snapshot_sequence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShellSnapshot {
    /// The event sequence this snapshot reflects.
    pub snapshot_sequence: u64,
    /// The projects.
    pub projects: Vec<ProjectShell>,
    /// The threads (deleted ones are not listed).
    pub threads: Vec<ThreadShell>,
    /// When anything last changed.
    pub updated_at: Timestamp,
}

impl ShellSnapshot {
    /// Decodes `GET /api/orchestration/shell`'s document thread by thread, as
    /// [`super::ReadModel::decode_per_thread`] does the snapshot: a thread afk cannot read is set
    /// aside (its id and why) instead of failing the whole view.
    pub fn decode_per_thread(
        body: &[u8],
    ) -> Result<(ShellSnapshot, Vec<UnreadableThread>), serde_json::Error> {
        if let Ok(shell) = serde_json::from_slice::<ShellSnapshot>(body) {
            return Ok((shell, Vec::new()));
        }
        let loose: LooseShellSnapshot = serde_json::from_slice(body)?;
        let (threads, unreadable) = threads_one_by_one::<ThreadShell>(loose.threads)?;
        let shell = ShellSnapshot {
            snapshot_sequence: loose.snapshot_sequence,
            projects: loose.projects,
            threads,
            updated_at: loose.updated_at,
        };
        Ok((shell, unreadable))
    }
}

/// A project in the shell view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectShell {
    /// Its id.
    pub id: ProjectId,
    /// Its title.
    pub title: String,
    /// The repository checkout (where worktrees are added from).
    pub workspace_root: String,
    /// Where the repository comes from, when T3 knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_identity: Option<serde_json::Value>,
    /// The model new threads use.
    #[serde(deserialize_with = "required_nullable")]
    pub default_model_selection: Option<ModelSelection>,
    /// Project scripts, passed through.
    #[serde(default)]
    pub scripts: Vec<serde_json::Value>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

impl From<&Project> for ProjectShell {
    fn from(p: &Project) -> Self {
        Self {
            id: p.id.clone(),
            title: p.title.clone(),
            workspace_root: p.workspace_root.clone(),
            repository_identity: p.repository_identity.clone(),
            default_model_selection: p.default_model_selection.clone(),
            scripts: p.scripts.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

impl ProjectShell {
    /// True when one of the project's scripts is marked to run in every new worktree
    /// (`runOnWorktreeCreate`): how T3's own UI decides whether a new worktree gets the setup
    /// script. The scripts stay T3's JSON; only this reading of them leaves the client.
    pub fn has_worktree_setup_script(&self) -> bool {
        self.scripts
            .iter()
            .any(|s| s.get("runOnWorktreeCreate").and_then(serde_json::Value::as_bool) == Some(true))
    }
}

/// A thread in the shell view (T3's `OrchestrationThreadShell`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadShell {
    /// Its id.
    pub id: ThreadId,
    /// Its project.
    pub project_id: ProjectId,
    /// Its title.
    pub title: String,
    /// Provider instance and model.
    pub model_selection: ModelSelection,
    /// How much the agent may do without asking.
    pub runtime_mode: RuntimeMode,
    /// Act or plan.
    pub interaction_mode: InteractionMode,
    /// The git branch, `null` for none.
    #[serde(deserialize_with = "required_nullable")]
    pub branch: Option<String>,
    /// The worktree the thread works in, `null` for the project's checkout.
    #[serde(deserialize_with = "required_nullable")]
    pub worktree_path: Option<String>,
    /// The most recent turn, `null` before the first.
    #[serde(deserialize_with = "required_nullable")]
    pub latest_turn: Option<LatestTurn>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Set once archived (T3 defaults a missing key to `null`).
    #[serde(default)]
    pub archived_at: Option<Timestamp>,
    /// The provider session, `null` when none was started.
    #[serde(deserialize_with = "required_nullable")]
    pub session: Option<Session>,
    /// When the last user message was sent (`null` before any).
    #[serde(default)]
    pub latest_user_message_at: Option<Timestamp>,
    /// The agent waits for an approval.
    #[serde(default)]
    pub has_pending_approvals: bool,
    /// The agent waits for an answer.
    #[serde(default)]
    pub has_pending_user_input: bool,
    /// The agent proposed a plan that can be acted on.
    #[serde(default)]
    pub has_actionable_proposed_plan: bool,
}

impl ThreadShell {
    /// The same thread in the read model's shape (not deleted; no messages, activities or
    /// checkpoints, as the snapshot endpoint serves it).
    pub fn into_thread(self) -> Thread {
        Thread {
            id: self.id,
            project_id: self.project_id,
            title: self.title,
            model_selection: self.model_selection,
            runtime_mode: self.runtime_mode,
            interaction_mode: self.interaction_mode,
            branch: self.branch,
            worktree_path: self.worktree_path,
            latest_turn: self.latest_turn,
            created_at: self.created_at,
            updated_at: self.updated_at,
            archived_at: self.archived_at,
            deleted_at: None,
            messages: Vec::new(),
            activities: Vec::new(),
            checkpoints: Vec::new(),
            session: self.session,
            has_pending_user_input: self.has_pending_user_input,
            has_pending_approvals: self.has_pending_approvals,
        }
    }

    /// The shell view of a read-model thread (for a server that serves both).
    pub fn of(thread: &Thread) -> Self {
        Self {
            id: thread.id.clone(),
            project_id: thread.project_id.clone(),
            title: thread.title.clone(),
            model_selection: thread.model_selection.clone(),
            runtime_mode: thread.runtime_mode,
            interaction_mode: thread.interaction_mode,
            branch: thread.branch.clone(),
            worktree_path: thread.worktree_path.clone(),
            latest_turn: thread.latest_turn.clone(),
            created_at: thread.created_at,
            updated_at: thread.updated_at,
            archived_at: thread.archived_at,
            session: thread.session.clone(),
            latest_user_message_at: None,
            has_pending_approvals: thread.has_pending_approvals,
            has_pending_user_input: thread.has_pending_user_input,
            has_actionable_proposed_plan: false,
        }
    }
}
