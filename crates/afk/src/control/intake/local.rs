//! Intake from the local issue folder: a new file queues a job, a removed file cancels it, and a
//! file that comes back requeues the job it had.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use afk_core::{CancelReason, Event, IssueKey, JobSource, JobState, RequeueBy};
use afk_ledger::{Job, NewJob};
use chrono::{DateTime, Utc};

use crate::control::record::Recorder;
use crate::control::ControlError;
use crate::source::local::{self, LocalIssueError};
use crate::source::SourceIssue;

/// The local folder as a source: where it is, which of its files were said to be unusable (each
/// is said once, and again only when why changes), and what each file said when its job was last
/// brought in line with it.
pub(crate) struct LocalIntake {
    dir: PathBuf,
    warned: HashMap<PathBuf, String>,
    taken: Taken,
}

/// A fingerprint of each issue as it was last taken (title, body, labels, priority), so that a
/// scan reads from the ledger only the jobs of files that are new or changed since, not every job
/// the ledger ever held: the folder is scanned on every tick and the ledger grows for a year.
/// A file that leaves the folder loses its fingerprint, so its return is taken again (a requeue).
#[derive(Default)]
struct Taken(HashMap<IssueKey, u64>);

impl Taken {
    fn fingerprint(issue: &SourceIssue) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        issue.hash(&mut hasher);
        hasher.finish()
    }

    /// True when `issue` is exactly what was last taken for its key.
    fn unchanged(&self, issue: &SourceIssue) -> bool {
        self.0.get(&issue.key) == Some(&Self::fingerprint(issue))
    }

    fn took(&mut self, issue: &SourceIssue) {
        self.0.insert(issue.key.clone(), Self::fingerprint(issue));
    }
}

impl LocalIntake {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            warned: HashMap::new(),
            taken: Taken::default(),
        }
    }

    pub(super) async fn sync(
        &mut self,
        recorder: &mut Recorder,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        // Reading the folder is blocking I/O: keep it off the runtime's worker.
        let owned = self.dir.clone();
        let mut scan = tokio::task::spawn_blocking(move || local::scan(&owned))
            .await
            .unwrap_or_default();
        let mut problems = std::mem::take(&mut scan.problems);
        problems.extend(sync(&self.dir, scan, &mut self.taken, recorder, now).await?);
        self.warned
            .retain(|path, _| problems.iter().any(|p| &p.path == path));
        for problem in problems {
            if self.warned.get(&problem.path) != Some(&problem.message) {
                tracing::warn!(file = %problem.path.display(), "{problem}");
                self.warned.insert(problem.path, problem.message);
            }
        }
        Ok(())
    }
}

/// True when the ledger refused `error`'s value itself (too large, not storable): that one issue
/// is skipped; any other error is the ledger's and ends the tick.
fn is_bad_value(error: &ControlError) -> bool {
    matches!(error, ControlError::Ledger(e) if e.is_bad_value())
}

/// Brings the ledger in line with `scan`; returns the files whose issue the ledger refused.
///
/// Reads the job of each file that is new or changed since it was last taken (one indexed read
/// each) and, when the scan is complete, the keys of the open local jobs: never every job.
async fn sync(
    dir: &Path,
    mut scan: crate::source::Scan,
    taken: &mut Taken,
    recorder: &mut Recorder,
    now: DateTime<Utc>,
) -> Result<Vec<LocalIssueError>, ControlError> {
    let mut refused = Vec::new();
    let mut present = HashSet::new();
    for issue in &scan.issues {
        present.insert(issue.key.clone());
        if taken.unchanged(issue) {
            continue;
        }
        let known = recorder.ledger().job_by_issue(&issue.key).await?;
        match take(dir, issue, known.as_ref(), recorder, now).await {
            Ok(()) => taken.took(issue),
            Err(error) if is_bad_value(&error) => {
                // One issue the ledger cannot take: skipped (said once), the others go on, and
                // its job (if any) is neither cancelled nor changed.
                refused.push(LocalIssueError {
                    path: scan.files.remove(&issue.key).unwrap_or_else(|| dir.to_owned()),
                    message: format!("cannot be taken: {error}; skipped"),
                });
            }
            Err(error) => return Err(error),
        }
    }
    if !scan.complete {
        // A file that could not be read may still describe a job: cancel nothing on a partial
        // view, and keep the fingerprints of the files not seen this time.
        return Ok(refused);
    }
    taken.0.retain(|key, _| present.contains(key));
    let removed = Event::Cancel {
        reason: CancelReason::FileRemoved,
    };
    // Every open local job, not only those whose file was seen to go: a job a person requeued
    // after its file was removed is cancelled again, as the folder says.
    for key in recorder.ledger().open_issues(JobSource::Local).await? {
        if present.contains(&key) {
            continue;
        }
        let Some(job) = recorder.ledger().job_by_issue(&key).await? else {
            continue;
        };
        if job.source == JobSource::Local && !job.state.is_final() {
            recorder.record(&job, &removed, None, now).await?;
        }
    }
    Ok(refused)
}

/// Queues `issue`'s job, or brings the `known` one in line with it.
async fn take(
    dir: &Path,
    issue: &SourceIssue,
    known: Option<&Job>,
    recorder: &mut Recorder,
    now: DateTime<Utc>,
) -> Result<(), ControlError> {
    match known {
        None => {
            let (job, _) = recorder.ledger().upsert_job(&new_job(issue), now).await?;
            recorder.queued(&job, &dir.display().to_string());
        }
        Some(job) if job.source != JobSource::Local => {
            // The issue belongs to another source (GitHub, queued by hand): a file must not
            // change its text.
            tracing::warn!(
                "{}: a local file describes an issue that came from the {} source; the file is ignored",
                job.issue,
                job.source
            );
        }
        Some(job) => {
            if job.title != issue.title
                || job.body != issue.body
                || job.labels != issue.labels
                || job.priority != issue.priority
            {
                recorder.ledger().upsert_job(&new_job(issue), now).await?;
            }
            if job.state == JobState::Cancelled {
                // Back only if the file's removal cancelled it: a job a person interrupted in
                // T3 stays cancelled.
                let back = Event::Requeue {
                    by: RequeueBy::Source(JobSource::Local),
                };
                recorder.offer(job, &back, now).await?;
            }
        }
    }
    Ok(())
}

fn new_job(issue: &SourceIssue) -> NewJob {
    NewJob {
        issue: issue.key.clone(),
        title: issue.title.clone(),
        body: issue.body.clone(),
        labels: issue.labels.clone(),
        priority: issue.priority,
        source: JobSource::Local,
    }
}
