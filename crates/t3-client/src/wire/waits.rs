//! [`ShellWaits`]: of T3's shell (`GET /api/orchestration/shell`), only which threads wait for a
//! person, for the watcher that polls the snapshot (whose threads do not say so).
//!
//! The polling watcher holds the snapshot's view while it reads the shell: decoding the shell into
//! a second [`crate::Fleet`] held two views of the whole fleet at once, the largest part of
//! `afk run`'s peak at 10,000 threads (BENCHMARKS.md, "Memory"). Here each shell thread is decoded
//! and checked exactly as [`crate::Fleet::decode_shell`] does, then let go: one flag is kept.

use std::collections::hash_map::Entry;
use std::collections::HashSet;
use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::read_model::CheckedTimestamp;
use super::scan::{self, Shape};
use super::view::{Body, IdOnly, ShellThread};
use super::{FleetThread, ProjectShell, ShellSnapshot};
use crate::ids::{IdHasher, IdMap, ThreadId};

/// For each thread T3's shell lists readably (once), whether its agent waits for a person
/// ([`FleetThread::waits_for_person`]). A thread the shell does not list, lists twice, or lists in
/// a way afk cannot read is not in it: the shell says nothing about it, as
/// [`crate::Fleet::thread`] of the shell's view says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellWaits {
    threads: IdMap<ThreadId, bool>,
}

impl ShellWaits {
    /// Whether the agent of `thread` waits for a person; `None` when the shell cannot say (the
    /// thread is not listed readably).
    pub fn waits_for_person(&self, thread: &ThreadId) -> Option<bool> {
        self.threads.get(thread).copied()
    }

    /// How many threads the shell lists readably.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// True when the shell lists no thread readably.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// A shell document (`GET /api/orchestration/shell`'s body) reduced to its waits, thread by
    /// thread as [`crate::Fleet::decode_shell`] decodes it: it fails where that fails, and a thread
    /// is left out exactly when that view sets it aside as unreadable.
    pub fn decode(body: &[u8]) -> Result<ShellWaits, serde_json::Error> {
        // As text when it is valid UTF-8, as the view decodes it (`Body`: one check of the whole
        // body instead of one per string).
        let body = Body::of(body);
        match Self::scanned(body) {
            Some(waits) => Ok(waits),
            None => Self::decode_by_serde(body),
        }
    }

    /// The scanner's reading of the shell (`wire::scan`), `None` where it declines.
    pub(super) fn scanned(body: Body<'_>) -> Option<ShellWaits> {
        let Body::Text(text) = body else {
            return None;
        };
        let mut building = Building::default();
        // Each thread read in place: only its id is kept (no branch, worktree or turn id built).
        scan::document::<ProjectShell>(text, Shape::Shell, |thread| {
            building.add(thread.thread_id()?, thread.waits_for_person());
            Some(())
        })?;
        Some(building.done())
    }

    /// [`ShellWaits::decode`] by `serde` alone: the strict decode, then thread by thread.
    pub(super) fn decode_by_serde(body: Body<'_>) -> Result<ShellWaits, serde_json::Error> {
        if let Ok(doc) = body.decode::<WaitsDoc>() {
            return Ok(doc.threads.done());
        }
        // A thread that cannot be read: each decoded on its own, as the view does.
        let loose: LooseWaitsDoc<'_> = body.decode()?;
        let mut building = Building::default();
        for thread in loose.threads {
            match serde_json::from_str::<ShellThread>(thread.get()) {
                Ok(readable) => building.add_thread(readable.into()),
                Err(_) => building.set_aside(serde_json::from_str::<IdOnly>(thread.get())?.id),
            }
        }
        Ok(building.done())
    }
}

impl From<&crate::Fleet> for ShellWaits {
    /// The waits a shell view shows (none for the snapshot's, which cannot say).
    fn from(fleet: &crate::Fleet) -> Self {
        if !fleet.shows_waits() {
            return ShellWaits::default();
        }
        ShellWaits {
            threads: fleet
                .threads()
                .map(|t| (t.id().to_id(), t.waits_for_person()))
                .collect(),
        }
    }
}

impl From<ShellSnapshot> for ShellWaits {
    fn from(snapshot: ShellSnapshot) -> Self {
        ShellWaits::from(&crate::Fleet::from_shell(snapshot))
    }
}

/// [`ShellWaits`] being built: an id listed twice says two things at once about one thread, so it
/// is left out, and stays out however often it is listed again (as in the view's `Threads`); so
/// is one listed unreadably.
#[derive(Default)]
struct Building {
    threads: IdMap<ThreadId, bool>,
    /// Listed twice, or unreadably: left out.
    twice: HashSet<ThreadId, IdHasher>,
}

impl Building {
    fn add_thread(&mut self, thread: FleetThread) {
        let waits = thread.waits_for_person();
        self.add(thread.id().to_id(), waits);
    }

    /// The thread `id`, listed readably, whose agent `waits` for a person or not.
    fn add(&mut self, id: ThreadId, waits: bool) {
        if self.twice.contains(&id) {
            return;
        }
        // The id moves into the map (no copy of it); a second listing moves it on to `twice`.
        match self.threads.entry(id) {
            Entry::Vacant(entry) => {
                entry.insert(waits);
            }
            Entry::Occupied(entry) => {
                self.twice.insert(entry.remove_entry().0);
            }
        }
    }

    /// A thread listed in a way afk cannot read: the shell says nothing about it, even where it
    /// also lists it readably.
    fn set_aside(&mut self, id: ThreadId) {
        self.threads.remove(&id);
        self.twice.insert(id);
    }

    fn done(self) -> ShellWaits {
        ShellWaits {
            threads: self.threads,
        }
    }
}

/// A JSON array of shell threads decoded one at a time into [`Building`], failing at the first
/// thread that cannot be read (the loose decode then takes over).
fn waits_strict<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Building, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Building;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Building, A::Error> {
            let mut building = Building::default();
            if let Some(size) = seq.size_hint() {
                building.threads.reserve(size);
            }
            while let Some(thread) = seq.next_element::<ShellThread>()? {
                building.add_thread(thread.into());
            }
            Ok(building)
        }
    }
    deserializer.deserialize_seq(V)
}

/// The shell document with the view's checks ([`super::view`]'s `ShellDoc`), its threads reduced
/// to their waits.
#[derive(Deserialize)]
#[serde(rename = "ShellSnapshot", rename_all = "camelCase")]
#[allow(dead_code)] // Read to be checked, not kept.
struct WaitsDoc {
    snapshot_sequence: u64,
    projects: Vec<ProjectShell>,
    #[serde(deserialize_with = "waits_strict")]
    threads: Building,
    updated_at: CheckedTimestamp,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Read to be checked, not kept.
struct LooseWaitsDoc<'a> {
    snapshot_sequence: u64,
    projects: Vec<ProjectShell>,
    #[serde(borrow)]
    threads: Vec<&'a serde_json::value::RawValue>,
    updated_at: CheckedTimestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fleet;

    fn thread(id: &str, state: &str, waits: bool) -> String {
        format!(
            r#"{{"id":"{id}","projectId":"p","title":"t",
            "modelSelection":{{"instanceId":"codex","model":"m"}},"runtimeMode":"full-access",
            "interactionMode":"default","branch":null,"worktreePath":null,
            "latestTurn":{{"turnId":"t1","state":"{state}","requestedAt":"2026-11-24T19:14:36.116Z",
              "startedAt":null,"completedAt":null,"assistantMessageId":null}},
            "createdAt":"2026-11-24T19:14:36.116Z","updatedAt":"2026-11-24T19:14:37.000Z",
            "archivedAt":null,"session":{{"threadId":"{id}","status":"running","providerName":"codex",
              "runtimeMode":"full-access","activeTurnId":"t1","lastError":null,
              "updatedAt":"2026-11-24T19:14:36.116Z"}},"hasPendingUserInput":{waits}}}"#
        )
    }

    fn shell(threads: &[String]) -> String {
        format!(
            r#"{{"snapshotSequence":9,"updatedAt":"2026-11-24T19:14:40.000Z","projects":[],"threads":[{}]}}"#,
            threads.join(",")
        )
    }

    /// What the shell's full view says of `id`.
    fn from_view(body: &str, id: &str) -> Option<bool> {
        let fleet = Fleet::decode_shell(body.as_bytes()).expect("the view decodes");
        fleet.thread_by_id(id).map(|t| t.waits_for_person())
    }

    #[test]
    fn only_readable_threads_listed_once_say_whether_they_wait() {
        let readable = [
            thread("waits", "running", true),
            thread("works", "running", false),
            thread("twice", "running", true),
            thread("twice", "running", true),
            thread("thrice", "running", true),
            thread("thrice", "running", true),
            thread("thrice", "running", true),
            thread("ended", "completed", true),
        ];
        // The same with a thread afk cannot read, which sends the decoding down its loose path,
        // listed once on its own and once beside a readable entry of the same id.
        let mut loose = readable.to_vec();
        loose.push(thread("odd", "paused", true));
        loose.push(thread("mixed", "running", true));
        loose.push(thread("mixed", "paused", true));
        for body in [shell(&readable), shell(&loose)] {
            let waits = ShellWaits::decode(body.as_bytes()).expect("the waits decode");
            for id in [
                "waits", "works", "twice", "thrice", "ended", "odd", "mixed", "absent",
            ] {
                let thread = ThreadId::new(id).expect("an id");
                assert_eq!(
                    waits.waits_for_person(&thread),
                    from_view(&body, id),
                    "thread {id}"
                );
            }
            assert_eq!(
                waits.waits_for_person(&ThreadId::new("waits").unwrap()),
                Some(true)
            );
            assert_eq!(
                waits.waits_for_person(&ThreadId::new("works").unwrap()),
                Some(false)
            );
            assert_eq!(waits.waits_for_person(&ThreadId::new("twice").unwrap()), None);
            assert_eq!(waits.len(), 3);
        }
        assert!(ShellWaits::decode(br#"{"snapshotSequence":9}"#).is_err());
    }
}
