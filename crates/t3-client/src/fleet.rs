//! [`Fleet`]: the watcher's view of T3's threads, indexed by id, built from the HTTP snapshot or
//! kept up to date from the shell stream.

use std::collections::HashMap;

use crate::ids::{ProjectId, ThreadId};
use crate::wire::{ProjectShell, ReadModel, ShellItem, ShellSnapshot, Thread, ThreadState, UnreadableThread};

/// T3's threads and projects as of one event sequence. A thread T3 deleted keeps its entry with
/// `deletedAt` set (the snapshot lists deleted threads so; a `thread-removed` event marks it so),
/// so that [`ThreadState::of`] reads it as [`ThreadState::Lost`] at once rather than as a thread
/// not seen yet.
///
/// A thread T3 lists but afk cannot read (see [`UnreadableThread`]), or lists twice in one view,
/// is in neither [`Fleet::thread`] nor lost: [`Fleet::unreadable`] says why, and its attempt is
/// unknown until T3 describes it readably again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fleet {
    sequence: u64,
    threads: HashMap<ThreadId, Thread>,
    projects: HashMap<ProjectId, ProjectShell>,
    unreadable: HashMap<ThreadId, String>,
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
        let threads = snapshot.threads.into_iter().map(|t| t.into_thread());
        Self {
            sequence: snapshot.snapshot_sequence,
            projects: snapshot.projects.into_iter().map(|p| (p.id.clone(), p)).collect(),
            shows_waits: true,
            ..Self::of_threads(threads, unreadable)
        }
    }

    /// The view of a read model that also listed `unreadable` threads (deleted projects left
    /// out).
    pub fn from_read_model(model: ReadModel, unreadable: Vec<UnreadableThread>) -> Self {
        Self {
            sequence: model.snapshot_sequence,
            projects: model
                .projects
                .iter()
                .filter(|p| p.deleted_at.is_none())
                .map(|p| (p.id.clone(), ProjectShell::from(p)))
                .collect(),
            ..Self::of_threads(model.threads.into_iter(), unreadable)
        }
    }

    /// The threads of one view: an id listed twice says two things at once about one thread, so
    /// it is unreadable, not the last (or first) of its entries.
    fn of_threads(listed: impl Iterator<Item = Thread>, unreadable: Vec<UnreadableThread>) -> Self {
        let mut threads = HashMap::with_capacity(listed.size_hint().0);
        let mut unreadable: HashMap<ThreadId, String> =
            unreadable.into_iter().map(|u| (u.id, u.reason)).collect();
        for thread in listed {
            if unreadable.contains_key(&thread.id) {
                unreadable.insert(thread.id, "listed more than once in one view".into());
            } else if let Some(twice) = threads.insert(thread.id.clone(), thread) {
                threads.remove(&twice.id);
                unreadable.insert(twice.id, "listed more than once in one view".into());
            }
        }
        Self {
            threads,
            unreadable,
            ..Self::default()
        }
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
    pub fn thread(&self, id: &ThreadId) -> Option<&Thread> {
        self.threads.get(id)
    }

    /// [`Fleet::thread`] by the id's text (as a ledger stores it), without building an id.
    pub fn thread_by_id(&self, id: &str) -> Option<&Thread> {
        self.threads.get(id)
    }

    /// The project with this id, unless T3 does not know it or deleted it.
    pub fn project(&self, id: &ProjectId) -> Option<&ProjectShell> {
        self.projects.get(id)
    }

    /// Every thread, deleted ones included, in no particular order.
    pub fn threads(&self) -> impl Iterator<Item = &Thread> {
        self.threads.values()
    }

    /// How many threads there are, deleted ones included.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// True when T3 has no thread.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Applies one shell stream item. Events at or below the view's sequence are ignored (a replay
    /// after a reconnect may repeat them), so applying a stream twice changes nothing.
    pub fn apply(&mut self, item: ShellItem) -> FleetChange {
        match item {
            ShellItem::Snapshot { snapshot } => {
                *self = Fleet::from_shell(snapshot);
                return FleetChange::Replaced;
            }
            ShellItem::PartialSnapshot { snapshot, unreadable } => {
                *self = Fleet::from_shell_with(snapshot, unreadable);
                return FleetChange::Replaced;
            }
            _ => {}
        }
        let Some(sequence) = item.sequence() else {
            return FleetChange::Quiet;
        };
        if sequence <= self.sequence {
            return FleetChange::Quiet;
        }
        self.sequence = sequence;
        match item {
            ShellItem::ThreadUnreadable { thread, .. } => {
                self.threads.remove(&thread.id);
                let id = thread.id.clone();
                let changed = self.unreadable.insert(thread.id, thread.reason).is_none();
                if changed {
                    FleetChange::Threads(vec![id])
                } else {
                    FleetChange::Quiet
                }
            }
            ShellItem::ThreadUpserted { thread, .. } => {
                let thread = thread.into_thread();
                let was_unreadable = self.unreadable.remove(&thread.id).is_some();
                // A thread beginning or ending a wait for a person changes what afk does too.
                let before = self
                    .threads
                    .get(&thread.id)
                    .map(|t| (ThreadState::of(Some(t)), t.waits_for_person()));
                let after = (ThreadState::of(Some(&thread)), thread.waits_for_person());
                let id = thread.id.clone();
                self.threads.insert(id.clone(), thread);
                if before.as_ref() == Some(&after) && !was_unreadable {
                    FleetChange::Quiet
                } else {
                    FleetChange::Threads(vec![id])
                }
            }
            ShellItem::ThreadRemoved { thread_id, .. } => match self.threads.get_mut(&thread_id) {
                Some(thread) if thread.deleted_at.is_none() => {
                    // The event carries no time; the thread's last change is the closest known.
                    thread.deleted_at = Some(thread.updated_at);
                    FleetChange::Threads(vec![thread_id])
                }
                _ => FleetChange::Quiet,
            },
            ShellItem::ProjectUpserted { project, .. } => {
                self.projects.insert(project.id.clone(), project);
                FleetChange::Quiet
            }
            ShellItem::ProjectRemoved { project_id, .. } => {
                self.projects.remove(&project_id);
                FleetChange::Quiet
            }
            ShellItem::Snapshot { .. }
            | ShellItem::PartialSnapshot { .. }
            | ShellItem::Synchronized
            | ShellItem::Other => FleetChange::Quiet,
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
