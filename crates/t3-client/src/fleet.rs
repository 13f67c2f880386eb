//! [`Fleet`]: the watcher's view of T3's threads, indexed by id, built from the HTTP snapshot or
//! kept up to date from the shell stream.

use crate::ids::{IdMap, ProjectId, ThreadId};
use crate::wire::{
    FleetItem, FleetThread, ProjectShell, ReadModel, ShellItem, ShellSnapshot, ThreadState, Threads,
    ThreadsById, UnreadableThread, ViewParts, ViewSnapshot,
};

/// T3's threads and projects as of one event sequence. A thread T3 deleted keeps its entry with
/// `deletedAt` set (the snapshot lists deleted threads so; a `thread-removed` event marks it so),
/// so that [`ThreadState::of`] reads it as [`ThreadState::Lost`] at once rather than as a thread
/// not seen yet.
///
/// A thread T3 lists but afk cannot read (see [`UnreadableThread`]), or lists twice in one view,
/// is in neither [`Fleet::thread`] nor lost: [`Fleet::unreadable`] says why, and its attempt is
/// unknown until T3 describes it readably again.
///
/// Threads are kept as [`FleetThread`]s, only what afk reads of them: at 10,000 threads the view
/// is most of `afk run`'s memory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    sequence: u64,
    threads: ThreadsById,
    projects: IdMap<ProjectId, ProjectShell>,
    unreadable: IdMap<ThreadId, String>,
    /// Built from T3's shell (stream or `GET /api/orchestration/shell`), whose threads carry the
    /// flags that say who waits for a person; the snapshot's do not.
    shows_waits: bool,
}

/// What applying one stream item changed, for waking the control plane only when it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetChange {
    /// Nothing afk reads changed (a project, an `updatedAt` tick, an item already applied).
    Quiet,
    /// These threads changed state ([`ThreadState`]) or were removed.
    Threads(Vec<ThreadId>),
    /// The whole view was replaced (a snapshot).
    Replaced,
}

impl Fleet {
    /// The view of a shell snapshot.
    pub fn from_shell(snapshot: ShellSnapshot) -> Self {
        Self::from_shell_with(snapshot, Vec::new())
    }

    /// The view of a shell snapshot that also listed `unreadable` threads.
    pub fn from_shell_with(snapshot: ShellSnapshot, unreadable: Vec<UnreadableThread>) -> Self {
        let threads = snapshot.threads.into_iter().map(FleetThread::from);
        Self::of_shell(ViewParts {
            sequence: snapshot.snapshot_sequence,
            projects: snapshot.projects.into_iter().map(|p| (p.id.clone(), p)).collect(),
            threads: Threads::of(threads, unreadable),
        })
    }

    /// The view of a snapshot document (`GET /api/orchestration/snapshot`'s body), decoded thread
    /// by thread straight into [`FleetThread`]s: what [`ReadModel::decode_per_thread`] and
    /// [`Fleet::from_read_model`] make of it, without building the read model. Fails where they
    /// fail.
    pub fn decode_snapshot(body: &[u8]) -> Result<Fleet, serde_json::Error> {
        crate::wire::decode_snapshot(body).map(Fleet::of_snapshot)
    }

    /// The view of a shell document (`GET /api/orchestration/shell`'s body), decoded like
    /// [`Fleet::decode_snapshot`]: what [`ShellSnapshot::decode_per_thread`] and
    /// [`Fleet::from_shell_with`] make of it.
    pub fn decode_shell(body: &[u8]) -> Result<Fleet, serde_json::Error> {
        crate::wire::decode_shell_bytes(body).map(Fleet::of_shell)
    }

    /// The view of a shell snapshot decoded in the watcher's form.
    pub(crate) fn of_shell(parts: ViewParts) -> Self {
        Self {
            shows_waits: true,
            ..Self::of_snapshot(parts)
        }
    }

    /// The view of a read model decoded in the watcher's form (no flags for waits).
    pub(crate) fn of_snapshot(parts: ViewParts) -> Self {
        Self {
            sequence: parts.sequence,
            threads: parts.threads.readable,
            projects: parts.projects,
            unreadable: parts.threads.unreadable,
            shows_waits: false,
        }
    }

    /// The view of a read model that also listed `unreadable` threads (deleted projects left
    /// out).
    pub fn from_read_model(model: ReadModel, unreadable: Vec<UnreadableThread>) -> Self {
        Self::of_snapshot(ViewParts {
            sequence: model.snapshot_sequence,
            projects: model
                .projects
                .iter()
                .filter(|p| p.deleted_at.is_none())
                .map(|p| (p.id.clone(), ProjectShell::from(p)))
                .collect(),
            threads: Threads::of(model.threads.into_iter().map(FleetThread::from), unreadable),
        })
    }

    /// True when this view came from T3's shell, so that [`Thread::waits_for_person`] can be read
    /// from its threads; false for the snapshot's view, whose threads never say so.
    pub fn shows_waits(&self) -> bool {
        self.shows_waits
    }

    /// Why T3 lists the thread `id` in a way afk cannot read, when it does: its attempt is then
    /// neither lost nor ended, only unknown.
    pub fn unreadable(&self, id: &ThreadId) -> Option<&str> {
        self.unreadable.get(id).map(String::as_str)
    }

    /// Every thread afk cannot read, with why.
    pub fn unreadable_threads(&self) -> impl Iterator<Item = (&ThreadId, &str)> {
        self.unreadable.iter().map(|(id, why)| (id, why.as_str()))
    }

    /// The event sequence this view reflects.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The thread with this id, if T3 knows it (deleted ones included).
    pub fn thread(&self, id: &ThreadId) -> Option<&FleetThread> {
        self.threads.get(id.as_str())
    }

    /// [`Fleet::thread`] by the id's text (as a ledger stores it), without building an id.
    pub fn thread_by_id(&self, id: &str) -> Option<&FleetThread> {
        self.threads.get(id)
    }

    /// The project with this id, unless T3 does not know it or deleted it.
    pub fn project(&self, id: &ProjectId) -> Option<&ProjectShell> {
        self.projects.get(id)
    }

    /// Every thread, deleted ones included, in no particular order.
    pub fn threads(&self) -> impl Iterator<Item = &FleetThread> {
        self.threads.iter()
    }

    /// How many threads there are, deleted ones included.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// True when T3 has no thread.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Applies one shell stream item (a [`ShellItem`] or, as the feed decodes them, a
    /// [`FleetItem`]). Events at or below the view's sequence are ignored (a replay after a
    /// reconnect may repeat them), so applying a stream twice changes nothing.
    pub fn apply(&mut self, item: impl Into<FleetItem>) -> FleetChange {
        let item = item.into();
        if let FleetItem::Snapshot(snapshot) = item {
            *self = Fleet::of_shell(snapshot.0);
            return FleetChange::Replaced;
        }
        let Some(sequence) = item.sequence() else {
            return FleetChange::Quiet;
        };
        if sequence <= self.sequence {
            return FleetChange::Quiet;
        }
        self.sequence = sequence;
        match item {
            FleetItem::ThreadUnreadable { thread, .. } => {
                self.threads.remove(thread.id.as_str());
                let id = thread.id.clone();
                let changed = self.unreadable.insert(thread.id, thread.reason).is_none();
                if changed {
                    FleetChange::Threads(vec![id])
                } else {
                    FleetChange::Quiet
                }
            }
            FleetItem::ThreadUpserted { thread, .. } => {
                let was_unreadable = self.unreadable.remove(thread.id().as_str()).is_some();
                // A thread beginning or ending a wait for a person changes what afk does too.
                let before = self
                    .threads
                    .get(thread.id().as_str())
                    .map(|t| (ThreadState::of(Some(t)), t.waits_for_person()));
                let after = (ThreadState::of(Some(&thread)), thread.waits_for_person());
                let id = thread.id().to_id();
                self.threads.insert(thread);
                if before.as_ref() == Some(&after) && !was_unreadable {
                    FleetChange::Quiet
                } else {
                    FleetChange::Threads(vec![id])
                }
            }
            FleetItem::ThreadRemoved { thread_id, .. } => {
                let marked = self.threads.update(thread_id.as_str(), |thread| {
                    let newly = thread.deleted_at.is_none();
                    if newly {
                        // The event carries no time; the thread's last change is the closest known.
                        thread.deleted_at = Some(thread.updated_at);
                    }
                    newly
                });
                if marked == Some(true) {
                    FleetChange::Threads(vec![thread_id])
                } else {
                    FleetChange::Quiet
                }
            }
            FleetItem::ProjectUpserted { project, .. } => {
                self.projects.insert(project.id.clone(), project);
                FleetChange::Quiet
            }
            FleetItem::ProjectRemoved { project_id, .. } => {
                self.projects.remove(&project_id);
                FleetChange::Quiet
            }
            FleetItem::Snapshot(_) | FleetItem::Synchronized | FleetItem::Other => FleetChange::Quiet,
        }
    }
}

impl From<ShellItem> for FleetItem {
    fn from(item: ShellItem) -> Self {
        let snapshot = |snapshot: ShellSnapshot, unreadable: Vec<UnreadableThread>| {
            let threads = snapshot.threads.into_iter().map(FleetThread::from);
            FleetItem::Snapshot(Box::new(ViewSnapshot(ViewParts {
                sequence: snapshot.snapshot_sequence,
                projects: snapshot.projects.into_iter().map(|p| (p.id.clone(), p)).collect(),
                threads: Threads::of(threads, unreadable),
            })))
        };
        match item {
            ShellItem::Snapshot { snapshot: s } => snapshot(s, Vec::new()),
            ShellItem::PartialSnapshot {
                snapshot: s,
                unreadable,
            } => snapshot(s, unreadable),
            ShellItem::Synchronized => FleetItem::Synchronized,
            ShellItem::ProjectUpserted { sequence, project } => {
                FleetItem::ProjectUpserted { sequence, project }
            }
            ShellItem::ProjectRemoved { sequence, project_id } => {
                FleetItem::ProjectRemoved { sequence, project_id }
            }
            ShellItem::ThreadUpserted { sequence, thread } => FleetItem::ThreadUpserted {
                sequence,
                thread: thread.into(),
            },
            ShellItem::ThreadUnreadable { sequence, thread } => {
                FleetItem::ThreadUnreadable { sequence, thread }
            }
            ShellItem::ThreadRemoved { sequence, thread_id } => {
                FleetItem::ThreadRemoved { sequence, thread_id }
            }
            ShellItem::Other => FleetItem::Other,
        }
    }
}

impl From<ReadModel> for Fleet {
    /// The view of an HTTP snapshot (deleted projects left out).
    fn from(model: ReadModel) -> Self {
        Fleet::from_read_model(model, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{
        InteractionMode, LatestTurn, ModelSelection, NonEmptyString, RuntimeMode, ThreadShell, Timestamp,
        TurnState,
    };
    use crate::TurnId;

    fn shell(id: &str, turn: Option<TurnState>) -> ThreadShell {
        let at = Timestamp::now();
        ThreadShell {
            id: ThreadId::new(id).expect("id"),
            project_id: ProjectId::new("p").expect("id"),
            title: "t".into(),
            model_selection: ModelSelection {
                instance_id: NonEmptyString::new("claudeAgent").expect("instance"),
                model: NonEmptyString::new("m").expect("model"),
                options: None,
            },
            runtime_mode: RuntimeMode::FullAccess,
            interaction_mode: InteractionMode::Default,
            branch: None,
            worktree_path: None,
            latest_turn: turn.map(|state| LatestTurn {
                turn_id: TurnId::new("turn").expect("id"),
                state,
                requested_at: at,
                started_at: None,
                completed_at: None,
                assistant_message_id: None,
            }),
            created_at: at,
            updated_at: at,
            archived_at: None,
            session: None,
            latest_user_message_at: None,
            has_pending_approvals: false,
            has_pending_user_input: false,
            has_actionable_proposed_plan: false,
        }
    }

    fn upsert(sequence: u64, thread: ThreadShell) -> ShellItem {
        ShellItem::ThreadUpserted { sequence, thread }
    }

    #[test]
    fn state_changes_removals_and_replays_are_told_apart() {
        let mut fleet = Fleet::default();
        let a = ThreadId::new("a").expect("id");
        assert_eq!(
            fleet.apply(upsert(1, shell("a", None))),
            FleetChange::Threads(vec![a.clone()])
        );
        // Same state, newer sequence: nothing afk acts on.
        assert_eq!(fleet.apply(upsert(2, shell("a", None))), FleetChange::Quiet);
        assert_eq!(
            fleet.apply(upsert(3, shell("a", Some(TurnState::Completed)))),
            FleetChange::Threads(vec![a.clone()])
        );
        assert_eq!(ThreadState::of(fleet.thread(&a)), ThreadState::Succeeded);
        // A replayed older event is ignored: the view does not go back.
        assert_eq!(fleet.apply(upsert(2, shell("a", None))), FleetChange::Quiet);
        assert_eq!(ThreadState::of(fleet.thread(&a)), ThreadState::Succeeded);
        assert_eq!(
            fleet.apply(ShellItem::ThreadRemoved {
                sequence: 4,
                thread_id: a.clone()
            }),
            FleetChange::Threads(vec![a.clone()])
        );
        assert_eq!(ThreadState::of(fleet.thread(&a)), ThreadState::Lost);
        assert!(
            fleet.thread(&a).is_some(),
            "a removed thread reads as deleted, not as unseen"
        );
        assert_eq!(fleet.sequence(), 4);
    }
}
