//! Intake from the local issue folder: a new file queues a job, a removed file cancels it, and a
//! file that comes back requeues the job it had.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use afk_core::{CancelReason, Event, IssueKey, JobSource, JobState, RequeueBy};
use afk_ledger::{Job, NewJob};
use chrono::{DateTime, Utc};

use crate::control::record::Recorder;
use crate::control::ControlError;
use crate::source::{local, SourceIssue};

pub(super) async fn sync(
    dir: &Path,
    recorder: &mut Recorder,
    now: DateTime<Utc>,
) -> Result<(), ControlError> {
    // Reading the folder is blocking I/O: keep it off the runtime's worker.
    let owned = dir.to_owned();
    let scan = tokio::task::spawn_blocking(move || local::scan(&owned))
        .await
        .unwrap_or_default();
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
        match known.get(&issue.key) {
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
    }
    if !scan.complete {
        // A file that could not be read may still describe a job: cancel nothing on a partial view.
        return Ok(());
    }
    let removed = Event::Cancel {
        reason: CancelReason::FileRemoved,
    };
    for job in known.values() {
        if job.source == JobSource::Local && !job.state.is_final() && !present.contains(&job.issue) {
            recorder.record(job, &removed, None, now).await?;
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
