//! Intake from the local issue folder: a new file queues a job, a removed file cancels it, and a
//! file that comes back requeues the job it had.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use afk_core::{CancelReason, Event, IssueKey, JobSource, JobState, RequeueBy};
use afk_ledger::{Job, NewJob};
use chrono::{DateTime, Utc};

use crate::control::record::Recorder;
use crate::control::ControlError;
use crate::source::local::{self, LocalIssueError};
use crate::source::SourceIssue;

/// The local folder as a source: where it is, and which of its files were said to be unusable (each
/// is said once, and again only when why changes).
pub(crate) struct LocalIntake {
    dir: PathBuf,
    warned: HashMap<PathBuf, String>,
}

impl LocalIntake {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            warned: HashMap::new(),
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
        problems.extend(sync(&self.dir, scan, recorder, now).await?);
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
async fn sync(
    dir: &Path,
    mut scan: crate::source::Scan,
    recorder: &mut Recorder,
    now: DateTime<Utc>,
) -> Result<Vec<LocalIssueError>, ControlError> {
    let mut refused = Vec::new();
    if scan.issues.is_empty() && !scan.complete {
        // Nothing to take and nothing to cancel (the folder is missing or unreadable): the
        // ledger's jobs, issue texts and all (most of `afk run`'s peak memory at 10,000 jobs),
        // are not read.
        return Ok(refused);
    }
    let known: BTreeMap<IssueKey, Job> = recorder
        .ledger()
        .jobs()
        .await?
        .into_iter()
        .map(|job| (job.issue.clone(), job))
        .collect();
    let mut present = BTreeSet::new();
    for issue in &scan.issues {
        present.insert(issue.key.clone());
        let taken = take(dir, issue, known.get(&issue.key), recorder, now).await;
        if let Err(error) = taken {
            if !is_bad_value(&error) {
                return Err(error);
            }
            // One issue the ledger cannot take: skipped (said once), the others go on, and its
            // job (if any) is neither cancelled nor changed.
            refused.push(LocalIssueError {
                path: scan.files.remove(&issue.key).unwrap_or_else(|| dir.to_owned()),
                message: format!("cannot be taken: {error}; skipped"),
            });
        }
    }
    if !scan.complete {
        // A file that could not be read may still describe a job: cancel nothing on a partial view.
        return Ok(refused);
    }
    let removed = Event::Cancel {
        reason: CancelReason::FileRemoved,
    };
    for job in known.values() {
        if job.source == JobSource::Local && !job.state.is_final() && !present.contains(&job.issue) {
            recorder.record(job, &removed, None, now).await?;
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
