//! [`LiveAttempts`]: the live attempts as the recorder hands them out, with what changed between
//! two of its versions, so that the watcher visits only those after a move afk recorded itself.
//!
//! A persistent map by job (`imbl::OrdMap`): a copy shares the whole map (O(1)), a patch of k
//! jobs costs O(k log n) and shares the rest, so neither the recorder's patch after its own
//! writes nor a copy kept by the watcher costs in proportion to the fleet.

use std::collections::VecDeque;
use std::sync::Arc;

use afk_core::JobId;
use afk_ledger::WatchedAttempt;
use imbl::OrdMap;

/// How many patches a [`LiveAttempts`] remembers the changed jobs of: a version older than that
/// reads as unknown ([`LiveAttempts::changed_since`] says `None`, and the watcher makes the whole
/// pass). The watcher asks about the version of its last pass, one or two patches back.
/// (Four in unit tests, so that forgetting is tested too.)
const PATCHES_KEPT: usize = if cfg!(test) { 4 } else { 64 };

/// The live attempts (at most one per job, as [`afk_ledger::Ledger::watched_attempts`] reads
/// them), a version that changes exactly when they do, and which jobs the last patches changed.
///
/// Two values with the same version hold the same attempts (versions come from one counter per
/// recorder, never reused). A copy is O(1).
#[derive(Debug, Clone)]
pub(crate) struct LiveAttempts {
    by_job: OrdMap<JobId, WatchedAttempt>,
    version: u64,
    /// The oldest version the changes since are known from: `log` covers every patch after it.
    known_from: u64,
    /// Per patch since `known_from`, oldest first: the version it made and the jobs whose entry
    /// it changed (added, replaced or removed). Versions only grow (one counter per recorder,
    /// and a full read starts anew above every version before it), so a version at or after
    /// `known_from` is one of this value's past. Shared between copies.
    log: Arc<VecDeque<(u64, Arc<[JobId]>)>>,
}

impl LiveAttempts {
    /// The attempts of a full read (in any order; one per job), as version `version`: what
    /// changed before it is unknown.
    pub(crate) fn read(read: Vec<WatchedAttempt>, version: u64) -> Self {
        Self {
            by_job: read.into_iter().map(|a| (a.job_id, a)).collect(),
            version,
            known_from: version,
            log: Arc::default(),
        }
    }

    /// These attempts with the entries of `jobs` replaced by `fresh` (their live attempts as read
    /// now; a job of `jobs` absent from `fresh` has none), as version `version`, which must be
    /// newer than this one: `None` when no entry of `jobs` differs (this value stands, version
    /// included, so that "nothing changed" stays cheap to tell). Costs O(k log n) for k jobs.
    pub(crate) fn patched(&self, jobs: &[JobId], fresh: Vec<WatchedAttempt>, version: u64) -> Option<Self> {
        let mut jobs = jobs.to_vec();
        jobs.sort_unstable();
        jobs.dedup();
        let mut fresh: OrdMap<JobId, WatchedAttempt> = fresh
            .into_iter()
            .filter(|a| jobs.binary_search(&a.job_id).is_ok())
            .map(|a| (a.job_id, a))
            .collect();
        let mut by_job = self.by_job.clone();
        let mut changed = Vec::new();
        for job in jobs {
            let new = fresh.remove(&job);
            if by_job.get(&job) == new.as_ref() {
                continue;
            }
            changed.push(job);
            match new {
                Some(attempt) => {
                    by_job.insert(job, attempt);
                }
                None => {
                    by_job.remove(&job);
                }
            }
        }
        if changed.is_empty() {
            return None;
        }
        debug_assert!(version > self.version, "a patch makes a newer version");
        let mut log = self.log.clone();
        let entries = Arc::make_mut(&mut log);
        // Shared by every copy: a patch copies the log's entries, not their lists of jobs.
        entries.push_back((version, changed.into()));
        let mut known_from = self.known_from;
        while entries.len() > PATCHES_KEPT {
            // What changed up to the dropped patch's version is forgotten.
            if let Some((dropped, _)) = entries.pop_front() {
                known_from = dropped;
            }
        }
        Some(Self {
            by_job,
            version,
            known_from,
            log,
        })
    }

    /// This value's version: the same for the same attempts (and a new one after any change).
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The jobs whose entry some patch changed since version `older` (sorted, each once; empty
    /// for this very version): every job whose entry differs between that version and this one,
    /// and only jobs whose entry changed meanwhile (one changed and changed back is named too).
    /// `None` when that is not known: a version from before the last full read, from before the
    /// patches kept, or not one of this value's past.
    pub(crate) fn changed_since(&self, older: u64) -> Option<Vec<JobId>> {
        if older == self.version {
            return Some(Vec::new());
        }
        if older < self.known_from || older > self.version {
            return None;
        }
        let mut jobs: Vec<JobId> = (self.log.iter())
            .filter(|(version, _)| *version > older)
            .flat_map(|(_, jobs)| jobs.iter().copied())
            .collect();
        jobs.sort_unstable();
        jobs.dedup();
        Some(jobs)
    }

    /// The live attempt of `job`, if it has one.
    pub(crate) fn get(&self, job: &JobId) -> Option<&WatchedAttempt> {
        self.by_job.get(job)
    }

    /// Every live attempt, by job id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &WatchedAttempt> + '_ {
        self.by_job.values()
    }

    /// How many live attempts there are.
    pub(crate) fn len(&self) -> usize {
        self.by_job.len()
    }

    /// True when there is no live attempt.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.by_job.is_empty()
    }

    /// True when `read` (a full read, ordered by job id) holds exactly these attempts.
    pub(crate) fn holds(&self, read: &[WatchedAttempt]) -> bool {
        self.len() == read.len() && self.iter().eq(read.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use afk_core::{AttemptId, AttemptNo, AttemptState, IssueKey, JobState, Repo};
    use chrono::{DateTime, Utc};

    fn watched(job: i64, tag: u8) -> WatchedAttempt {
        WatchedAttempt {
            job_id: JobId(job),
            issue: IssueKey {
                repo: Repo::new("acme/api").unwrap(),
                number: job as u64,
            },
            job_state: JobState::Running,
            job_not_before: None,
            attempt_id: AttemptId(job * 10 + i64::from(tag)),
            number: AttemptNo(1),
            state: AttemptState::Running,
            thread_id: t3_client::ids::ThreadId::new(format!("t-{job}-{tag}")).unwrap(),
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
            input_wait_since: None,
            input_waited: std::time::Duration::ZERO,
            follow_up_at: None,
        }
    }

    /// The jobs whose entries differ between two reads (each ordered by job id).
    fn diff(a: &[WatchedAttempt], b: &[WatchedAttempt]) -> Vec<JobId> {
        let mut jobs: Vec<JobId> = a.iter().chain(b).map(|w| w.job_id).collect();
        jobs.sort_unstable();
        jobs.dedup();
        let entry = |read: &[WatchedAttempt], job: JobId| read.iter().find(|w| w.job_id == job).cloned();
        jobs.into_iter().filter(|&j| entry(a, j) != entry(b, j)).collect()
    }

    proptest::proptest! {
        /// A patch is the model "the old entries of other jobs, and the fresh ones, by job id";
        /// no new version when the written jobs' entries did not change; and after any sequence
        /// of patches, `changed_since` names exactly the jobs whose entries differ from each
        /// earlier version's (or says it does not know, only for versions past what is kept).
        #[test]
        fn patches_are_the_read_with_the_written_jobs_replaced_and_say_what_changed(
            live_jobs in proptest::collection::btree_set(0i64..40, 0..30),
            patches in proptest::collection::vec(
                (
                    proptest::collection::vec(0i64..40, 0..8),
                    proptest::collection::btree_set(0i64..40, 0..8),
                    0u8..3,
                ),
                0..12,
            ),
        ) {
            let first: Vec<WatchedAttempt> = live_jobs.iter().map(|&j| watched(j, 0)).collect();
            let mut live = LiveAttempts::read(first.clone(), 7);
            proptest::prop_assert!(live.holds(&first));
            // Every version so far, what it held, and the jobs the patch that made it changed.
            let mut past: Vec<(u64, Vec<WatchedAttempt>, Vec<JobId>)> = vec![(7, first, Vec::new())];
            let mut next = 8;
            for (written, fresh_jobs, tag) in patches {
                let ids: Vec<JobId> = written.iter().map(|&j| JobId(j)).collect();
                // The fresh read holds only written jobs (that is what it reads).
                let fresh: Vec<WatchedAttempt> = (fresh_jobs.iter())
                    .filter(|j| written.contains(j))
                    .map(|&j| watched(j, tag))
                    .collect();
                let before: Vec<WatchedAttempt> = live.iter().cloned().collect();
                let mut model: Vec<WatchedAttempt> = (before.iter())
                    .filter(|a| !written.contains(&a.job_id.0))
                    .cloned()
                    .chain(fresh.iter().cloned())
                    .collect();
                model.sort_by_key(|a| a.job_id);
                match live.patched(&ids, fresh, next) {
                    Some(patched) => {
                        proptest::prop_assert!(model != before, "a new version for a change only");
                        proptest::prop_assert_eq!(patched.version(), next);
                        live = patched;
                        past.push((next, model.clone(), diff(&before, &model)));
                        next += 1;
                    }
                    None => proptest::prop_assert_eq!(&model, &before),
                }
                proptest::prop_assert!(live.holds(&model));
                let now: Vec<WatchedAttempt> = live.iter().cloned().collect();
                for (version, held, _) in &past {
                    let since: Vec<&(u64, Vec<WatchedAttempt>, Vec<JobId>)> =
                        past.iter().filter(|(v, _, _)| v > version).collect();
                    let mut changed: Vec<JobId> =
                        since.iter().flat_map(|(_, _, jobs)| jobs.iter().copied()).collect();
                    changed.sort_unstable();
                    changed.dedup();
                    match live.changed_since(*version) {
                        Some(jobs) => {
                            proptest::prop_assert!(diff(held, &now).iter().all(|j| jobs.contains(j)));
                            proptest::prop_assert_eq!(jobs, changed);
                        }
                        None => proptest::prop_assert!(since.len() > PATCHES_KEPT),
                    }
                }
            }
            proptest::prop_assert_eq!(live.changed_since(next), None, "a version it never had");
            proptest::prop_assert_eq!(live.changed_since(6), None, "from before the read");
        }
    }
}
