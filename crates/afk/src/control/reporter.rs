//! The reporter: one status comment and the `afk:*` labels on each GitHub job's issue, kept in
//! step with the job, and the pull request looked for once it succeeded.
//!
//! Reporting is best effort and idempotent: a report that fails is tried again on the next tick.
//! What was reported is kept in the ledger (`Ledger::mark_reported`), so a report lost to a crash
//! is made after the restart and one already made is not repeated.

use afk_core::{JobSource, JobState};
use afk_github::{PullRequestSearch, Reporter, StatusReport, ThreadLink};
use afk_ledger::Ledger;

use super::ControlError;
use crate::policy::Policies;
use crate::views;

/// Reports on GitHub issues through `afk-github`'s [`Reporter`].
pub struct StatusReporter {
    reporter: Reporter,
    /// T3's web UI, for links to threads (`{base}/{thread id}`).
    thread_url_base: Option<String>,
}

impl StatusReporter {
    /// Reports through `reporter`, linking threads under `thread_url_base`.
    pub fn new(reporter: Reporter, thread_url_base: Option<String>) -> Self {
        Self {
            reporter,
            thread_url_base: thread_url_base.map(|b| b.trim_end_matches('/').to_owned()),
        }
    }

    /// Brings the status comment and labels of every GitHub job whose state or attempt changed
    /// since it was last reported up to date. Failures are logged and retried on the next tick;
    /// only a ledger error ends it.
    pub(crate) async fn report(&self, ledger: &Ledger, policies: &Policies) -> Result<(), ControlError> {
        for job in ledger.jobs_to_report(JobSource::GitHub).await? {
            let marker = format!("{}:{}", job.state, job.attempts);
            // A comment appears with the first dispatch, or when the job fails without one.
            if job.attempts == 0 && job.state != JobState::Failed {
                continue;
            }
            let attempts = ledger.attempts(job.id).await?;
            let last = attempts.last();
            let pull_request = if job.state == JobState::Succeeded {
                match self
                    .reporter
                    .find_pull_request(&job.issue, last.map(|a| a.branch.as_str()))
                    .await
                {
                    Ok(found) => Some(found),
                    Err(error) => {
                        tracing::warn!("{}: cannot look for the pull request yet: {error}", job.issue);
                        continue;
                    }
                }
            } else {
                None
            };
            let status = StatusReport {
                issue: job.issue.clone(),
                attempt: job.attempts,
                state: job.state,
                thread: last.map(|a| ThreadLink {
                    id: a.thread_id.to_string(),
                    url: self
                        .thread_url_base
                        .as_ref()
                        .and_then(|base| url::Url::parse(&format!("{base}/{}", a.thread_id)).ok()),
                }),
                started_at: last.map(|a| a.created_at),
                finished_at: last.and_then(|a| a.ended_at),
                last_error: views::last_error(&job, last),
                pull_request,
            };
            match self.reporter.report(&status).await {
                Ok(_) => {}
                Err(error @ afk_github::GitHubError::NotFound { .. }) => {
                    // The issue was deleted or moved: there is nowhere to report, now or later.
                    tracing::warn!(
                        "{}: cannot report on the issue, GitHub no longer has it: {error}",
                        job.issue
                    );
                    ledger.mark_reported(job.id, &marker).await?;
                    continue;
                }
                Err(error) => {
                    tracing::warn!("{}: cannot update the issue on GitHub yet: {error}", job.issue);
                    continue;
                }
            }
            let first_report_of_attempt = job
                .reported
                .as_deref()
                .and_then(|r| r.rsplit_once(':'))
                .is_none_or(|(_, n)| n != job.attempts.to_string());
            if job.state == JobState::Running || first_report_of_attempt {
                let extra = policies.extra_labels(&job.issue.repo);
                if !extra.is_empty() && !job.state.is_final() {
                    if let Err(error) = self.reporter.add_labels(&job.issue, extra).await {
                        tracing::warn!("{}: cannot add labels {extra:?}: {error}", job.issue);
                    }
                }
            }
            if let Some(PullRequestSearch::NotFound { .. }) = &status.pull_request {
                tracing::info!("{}: succeeded, but no pull request for it was found", job.issue);
            }
            ledger.mark_reported(job.id, &marker).await?;
        }
        Ok(())
    }
}
