//! The reporter: one status comment and the `afk:*` labels on each GitHub job's issue, kept in
//! step with the job, the pull request looked for once it succeeded, the `AFK.md` labels afk added
//! removed once it ended, and the one note on an issue held back for an untrusted edit.
//!
//! Reporting is best effort and idempotent: a report that fails is tried again on the next tick.
//! What was reported is kept in the ledger (`Ledger::mark_reported`), so a report lost to a crash
//! is made after the restart and one already made is not repeated. An issue GitHub no longer has
//! (deleted, transferred) ends its job ([`CancelReason::IssueGone`]) and is not written to again.

use afk_core::{CancelReason, Event, IssueKey, JobId, JobSource, JobState};
use afk_github::{
    FollowUpStatus, GitHubError, IssueGone, PullRequestMatch, PullRequestSearch, RecentPulls, ReportOutcome,
    Reporter, StatusReport, ThreadLink, UntrustedEdit,
};
use afk_ledger::Job;
use chrono::{DateTime, Utc};
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use super::record::Recorder;
use super::ControlError;
use crate::policy::Policies;
use crate::views;

/// The lock's value even if a panic poisoned it (what it guards stays consistent: plain pushes
/// and pops).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A job whose status comment is written; its labels come next.
struct Commented {
    job: Job,
    /// What [`afk_ledger::Ledger::mark_reported`] records once its labels are in step too.
    marker: String,
    /// It succeeded and no pull request was found for it (said in the log once reported).
    pull_request_not_found: bool,
}

/// What this tick's passes learnt of GitHub: which jobs' reports failed (not tried again in the
/// same tick) and whether GitHub is out of reach or limits afk (nothing more is sent this tick).
#[derive(Default)]
struct TickFailures {
    jobs: HashSet<JobId>,
    out_of_reach: bool,
}

/// True when `error` says every request to GitHub would fail now or cost a timeout: it limits
/// afk ([`GitHubError::RateLimited`]; the client sends nothing until then) or cannot be reached
/// (refused, timed out). Other errors concern one request, so the other jobs' reports go on.
fn out_of_reach(error: &GitHubError) -> bool {
    matches!(
        error,
        GitHubError::RateLimited { .. } | GitHubError::Transport { .. }
    )
}

/// How the labels of one job went ([`StatusReporter::finish`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Labels {
    /// In step, or nothing more to do: the job is marked reported (or ended, its issue gone).
    Done,
    /// Failed for this job alone: it is reported again on the next tick; the others go on.
    Failed,
    /// GitHub limits afk or cannot be reached: the others wait for the next tick too.
    OutOfReach,
}

/// How many jobs' labels one pass puts in step at most, after every status comment of the pass.
/// The rest wait for the next passes, which the run loop makes at once
/// ([`StatusReporter::has_labels_to_do`]): so a burst of reports (fifty jobs finishing together,
/// three to five label requests each) does not hold back the next tick's intake, dispatch and
/// status comments, which people see, behind labels.
pub(crate) const LABELS_PER_PASS: usize = 10;

/// Reports on GitHub issues through `afk-github`'s [`Reporter`].
pub struct StatusReporter {
    reporter: Reporter,
    /// Jobs whose status comment is written and whose labels are still to do, oldest first
    /// (in memory: after a restart they are not marked reported, so they are reported again).
    labels_to_do: Mutex<VecDeque<Commented>>,
    /// This tick's failures ([`Self::begin_tick`] forgets them).
    failures: Mutex<TickFailures>,
    /// T3's web UI, for links to threads (`{base}/{thread id}`).
    thread_url_base: Option<String>,
    /// `[followup] max_turns`, for the status comment.
    max_turns: u32,
}

impl StatusReporter {
    /// Reports through `reporter`, linking threads under `thread_url_base`.
    pub fn new(reporter: Reporter, thread_url_base: Option<String>) -> Self {
        Self {
            reporter,
            labels_to_do: Mutex::new(VecDeque::new()),
            failures: Mutex::new(TickFailures::default()),
            thread_url_base: thread_url_base.map(|b| b.trim_end_matches('/').to_owned()),
            max_turns: 3,
        }
    }

    /// Says `max_turns` (`[followup] max_turns`) in the status comment's follow-up line.
    pub fn with_max_turns(mut self, max_turns: u32) -> Self {
        self.max_turns = max_turns;
        self
    }

    /// The GitHub reporter (its client, permission cache and ETags), for the pull request
    /// follow-through.
    pub(crate) fn github(&self) -> &Reporter {
        &self.reporter
    }

    /// Brings the status comment and labels of every GitHub job whose state or attempt changed
    /// since it was last reported up to date. Failures are logged and retried on the next tick;
    /// only a ledger error ends it.
    ///
    /// **Comments first:** the status comment of every job is written before any job's labels
    /// are put in step, so when many jobs change together (fifty turns finishing in the same
    /// second) the last one's comment waits for the comments before it, not for their label
    /// housekeeping too (three to five more requests each). Then the labels of at most
    /// [`LABELS_PER_PASS`] jobs, oldest first; the rest wait for the next passes. Requests stay
    /// one at a time, as GitHub asks of integrations (concurrent writes trip its secondary rate
    /// limits). A job is marked reported only once both are done: one whose comment or labels
    /// failed is reported again, whole, on the next tick (an unchanged comment is not edited
    /// again). A job whose report failed earlier in the tick ([`Self::report_comments`]) is not
    /// tried again before the next tick; one failing job's labels do not hold back the others';
    /// once GitHub limits afk or cannot be reached, nothing more is sent until the next tick.
    ///
    /// When GitHub no longer has a job's issue, a live job is cancelled with
    /// [`CancelReason::IssueGone`] (recorded before anything else happens to it) and nothing more
    /// is written to the issue.
    pub(crate) async fn report(
        &self,
        recorder: &mut Recorder,
        policies: &Policies,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        let started = std::time::Instant::now();
        let comments = self.write_comments(recorder, policies, now).await?;
        let comments_written = started.elapsed();
        let mut labels = 0;
        while labels < LABELS_PER_PASS {
            if lock(&self.failures).out_of_reach {
                // The others wait for the next tick as it comes, not one at once (which would
                // spin while a rate limit holds, or pay a timeout each).
                lock(&self.labels_to_do).clear();
                break;
            }
            let Some(commented) = lock(&self.labels_to_do).pop_front() else {
                break;
            };
            labels += 1;
            let job = commented.job.id;
            match self.finish(commented, recorder, policies, now).await? {
                Labels::Done => {}
                // Out of the queue: reported again, whole, on the next tick.
                Labels::Failed => {
                    lock(&self.failures).jobs.insert(job);
                }
                Labels::OutOfReach => lock(&self.failures).out_of_reach = true,
            }
        }
        if comments + labels > 0 {
            tracing::debug!(
                comments,
                labels,
                "reported on GitHub: {comments} status comments in {} ms, then {labels} jobs' labels in {} ms ({} left for the next pass)",
                comments_written.as_millis(),
                (started.elapsed() - comments_written).as_millis(),
                lock(&self.labels_to_do).len()
            );
        }
        Ok(())
    }

    /// Forgets the failures of the last tick: called as each tick starts, so that a job whose
    /// report failed is tried again once per tick.
    pub(crate) fn begin_tick(&self) {
        *lock(&self.failures) = TickFailures::default();
    }

    /// Forgets every job whose labels wait and what was last written in each status comment:
    /// called when this afk (again) takes the lead, since another afk may have reported
    /// meanwhile (the jobs not marked reported are reported again, whole).
    pub(crate) fn forget(&self) {
        lock(&self.labels_to_do).clear();
        *lock(&self.failures) = TickFailures::default();
        self.reporter.forget_written();
    }

    /// The status comments of [`Self::report`] alone: the jobs' labels wait for the next
    /// [`Self::report`]. The control plane calls it when its watcher recorded that jobs moved,
    /// before it dispatches new ones, so a person learns that a job ended without waiting for
    /// the dispatches of the same tick. It covers every job due a report (not only those that
    /// moved), but stops at the first sign that GitHub limits afk or cannot be reached, so a
    /// GitHub that times out costs the dispatches one timeout, not one per job; the jobs that
    /// failed are not tried again by the [`Self::report`] of the same tick. How many comments it
    /// wrote.
    pub(crate) async fn report_comments(
        &self,
        recorder: &mut Recorder,
        policies: &Policies,
        now: DateTime<Utc>,
    ) -> Result<usize, ControlError> {
        let started = std::time::Instant::now();
        let comments = self.write_comments(recorder, policies, now).await?;
        if comments > 0 {
            tracing::debug!(
                comments,
                "reported on GitHub before dispatching: {comments} status comments in {} ms",
                started.elapsed().as_millis()
            );
        }
        Ok(comments)
    }

    /// Writes the status comment of every job due a report whose comment does not say its state
    /// yet and whose report did not fail earlier in this tick, and queues its labels; stops once
    /// GitHub limits afk or cannot be reached ([`out_of_reach`]). How many it wrote.
    async fn write_comments(
        &self,
        recorder: &mut Recorder,
        policies: &Policies,
        now: DateTime<Utc>,
    ) -> Result<usize, ControlError> {
        let ledger = recorder.ledger().clone();
        // The pull request searches of this pass read each repository's latest pull requests once.
        let mut recent = RecentPulls::default();
        let mut comments = 0;
        for job in ledger.jobs_to_report(JobSource::GitHub).await? {
            if lock(&self.failures).out_of_reach {
                break;
            }
            let marker = format!("{}:{}", job.state, job.attempts);
            if job.cancel_reason == Some(CancelReason::IssueGone) {
                // GitHub no longer has the issue: there is nothing to write to.
                self.forget_labels_to_do(&job, None);
                ledger.mark_reported(job.id, &marker).await?;
                continue;
            }
            // A comment appears with the first dispatch, or when the job fails without one.
            if job.attempts == 0 && job.state != JobState::Failed {
                continue;
            }
            // Its comment says this already; only its labels wait.
            if self.forget_labels_to_do(&job, Some(&marker)) {
                continue;
            }
            if lock(&self.failures).jobs.contains(&job.id) {
                continue;
            }
            let status = match self.status_of(&job, recorder, policies, &mut recent, now).await? {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!("{}: cannot look for the pull request yet: {error}", job.issue);
                    self.failed(job.id, &error);
                    continue;
                }
            };
            match self.reporter.report_comment(&status).await {
                Ok(ReportOutcome::Reported(_)) => {
                    comments += 1;
                    lock(&self.labels_to_do).push_back(Commented {
                        pull_request_not_found: matches!(
                            status.pull_request,
                            Some(PullRequestSearch::NotFound { .. })
                        ),
                        job,
                        marker,
                    });
                }
                Ok(ReportOutcome::IssueGone(gone)) => {
                    self.issue_gone(recorder, &job, &gone, &marker, now).await?;
                }
                Err(error) => {
                    tracing::warn!("{}: cannot update the issue on GitHub yet: {error}", job.issue);
                    self.failed(job.id, &error);
                }
            }
        }
        Ok(comments)
    }

    /// Notes that `job`'s report failed with `error` in this tick.
    fn failed(&self, job: JobId, error: &GitHubError) {
        let mut failures = lock(&self.failures);
        failures.jobs.insert(job);
        failures.out_of_reach |= out_of_reach(error);
    }

    /// True while jobs whose status comment is written wait for their labels: the run loop ticks
    /// again at once rather than a poll interval later.
    pub(crate) fn has_labels_to_do(&self) -> bool {
        !lock(&self.labels_to_do).is_empty()
    }

    /// Drops `job`'s entry among the labels to do unless it is for `marker` (its comment is
    /// written as the job is now). True when one for `marker` is there.
    fn forget_labels_to_do(&self, job: &Job, marker: Option<&str>) -> bool {
        let mut to_do = lock(&self.labels_to_do);
        let mut current = false;
        to_do.retain(|c| {
            if c.job.id != job.id {
                return true;
            }
            current |= Some(c.marker.as_str()) == marker;
            Some(c.marker.as_str()) == marker
        });
        current
    }

    /// The labels of a job whose status comment is written, then its mark: reported. When they
    /// failed it is not marked, and the next tick reports it again (the comment, unchanged, is
    /// not edited again); [`Labels::OutOfReach`] when GitHub limits afk or cannot be reached.
    async fn finish(
        &self,
        commented: Commented,
        recorder: &mut Recorder,
        policies: &Policies,
        now: DateTime<Utc>,
    ) -> Result<Labels, ControlError> {
        let Commented {
            job,
            marker,
            pull_request_not_found,
        } = commented;
        match self.reporter.report_labels(&job.issue, job.state).await {
            Ok(None) => {}
            Ok(Some(gone)) => {
                self.issue_gone(recorder, &job, &gone, &marker, now).await?;
                return Ok(Labels::Done);
            }
            Err(error) => {
                tracing::warn!(
                    "{}: cannot update the issue's labels on GitHub yet: {error}",
                    job.issue
                );
                return Ok(if out_of_reach(&error) {
                    Labels::OutOfReach
                } else {
                    Labels::Failed
                });
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
        if job.state.is_final() && !self.remove_extra_labels(&job.issue, policies).await {
            // Tried again at the next tick.
            return Ok(Labels::Failed);
        }
        if pull_request_not_found {
            tracing::info!(
                "{}: succeeded, but no pull request for it was found: nothing to follow",
                job.issue
            );
        }
        recorder.ledger().mark_reported(job.id, &marker).await?;
        Ok(Labels::Done)
    }

    /// What `job`'s status comment says now; `Ok(None)` when it is not to be reported in this
    /// pass (its pull request was just found and is followed from now on: reported `in_review`
    /// on the next pass); the inner `Err` when the pull request search failed (tried again on the
    /// next tick).
    async fn status_of(
        &self,
        job: &Job,
        recorder: &mut Recorder,
        policies: &Policies,
        recent: &mut RecentPulls,
        now: DateTime<Utc>,
    ) -> Result<Result<Option<StatusReport>, GitHubError>, ControlError> {
        let ledger = recorder.ledger().clone();
        let attempts = ledger.attempts(job.id).await?;
        let last = attempts.last();
        let pull_request = if matches!(
            job.state,
            JobState::Succeeded | JobState::InReview | JobState::Merged | JobState::Closed
        ) {
            match self
                .reporter
                // Any attempt's branch: an earlier attempt may have opened the pull request.
                .find_pull_request_in(
                    &job.issue,
                    attempts.iter().rev().map(|a| a.branch.as_str()),
                    recent,
                )
                .await
            {
                // Only the pull request of an attempt's own branch is followed: follow-up
                // turns push to that branch. One that merely says it closes the issue (a
                // person's, a fork's) is linked, not followed.
                Ok(PullRequestSearch::Found(pr))
                    if job.state == JobState::Succeeded && pr.matched_by == PullRequestMatch::Branch =>
                {
                    // Followed from now on: recorded before anything is reported, and the
                    // job is reported `in_review` on the next pass.
                    let follow = Event::FollowPullRequest {
                        pull_request: format!("#{} {}", pr.number, pr.url),
                    };
                    recorder.record(job, &follow, None, now).await?;
                    return Ok(Ok(None));
                }
                Ok(found) => Some(found),
                Err(error) => return Ok(Err(error)),
            }
        } else {
            None
        };
        let follow_ups = if matches!(
            job.state,
            JobState::InReview | JobState::Merged | JobState::Closed | JobState::Running
        ) {
            let used = ledger.follow_ups_used(job.id).await?;
            let latest = ledger.latest_follow_up(job.id).await?;
            // Unanswered below the limit: the job's agent time budget held it back.
            let held_by_budget = if job.state == JobState::InReview
                && used < self.max_turns
                && latest.as_ref().is_some_and(|(n, _)| n.is_none())
            {
                super::budget::job_gate_at_review(&ledger, job, &policies.budget(&job.issue.repo))
                    .await?
                    .map(|overrun| overrun.to_string())
            } else {
                None
            };
            (used > 0 || job.state != JobState::Running).then(|| FollowUpStatus {
                held_by_budget,
                used,
                max_turns: self.max_turns,
                latest_cause: latest
                    .as_ref()
                    .filter(|(n, _)| n.is_some())
                    .map(|(_, c)| c.clone()),
                waiting_for_person: latest
                    .filter(|(n, _)| n.is_none() && job.state == JobState::InReview)
                    .map(|(_, c)| c),
            })
        } else {
            None
        };
        Ok(Ok(Some(StatusReport {
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
            // Its first line: T3's error can be a multi-kilobyte stack trace, which belongs
            // in `afk jobs --json`, not in a comment on the issue.
            last_error: views::last_error(job, last).map(|e| afk_core::first_line(&e).into_owned()),
            pull_request,
            question: job.input_question.clone(),
            follow_ups,
        })))
    }

    /// GitHub no longer has `job`'s issue: there is nowhere to report, now or later. A live job
    /// ends (its thread is stopped as for a withdrawn issue; its cancellation is reported, to
    /// nobody, on the next tick) and the issue is left alone; a final one is marked reported.
    async fn issue_gone(
        &self,
        recorder: &mut Recorder,
        job: &Job,
        gone: &IssueGone,
        marker: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        if !job.state.is_final() {
            tracing::warn!(
                "{}: {gone}; its job ends and afk no longer looks at it",
                job.issue
            );
            let cancel = Event::Cancel {
                reason: CancelReason::IssueGone,
            };
            recorder.record(job, &cancel, None, now).await?;
            return Ok(());
        }
        recorder.ledger().mark_reported(job.id, marker).await?;
        Ok(())
    }

    /// Removes the `AFK.md` labels afk added to an issue whose job ended (only those whose latest
    /// `labeled` event is afk's own: a label a person applied stays). False when it could not be
    /// done now but may be later (a transient failure); a refusal is logged and not asked again.
    async fn remove_extra_labels(&self, issue: &IssueKey, policies: &Policies) -> bool {
        let Some(extra) = policies.extra_labels_to_remove(&issue.repo).await else {
            return false;
        };
        if extra.is_empty() {
            return true;
        }
        match self.reporter.remove_added_labels(issue, &extra).await {
            Ok(removed) => {
                if !removed.is_empty() {
                    tracing::info!("{issue}: the job ended; removed the labels afk added: {removed:?}");
                }
                true
            }
            Err(error) if error.is_transient() => {
                tracing::warn!("{issue}: cannot remove the labels afk added {extra:?} yet: {error}");
                false
            }
            // Asking again every tick would not help: say it and leave the labels.
            Err(error) => {
                tracing::warn!("{issue}: cannot remove the labels afk added {extra:?}: {error}");
                true
            }
        }
    }

    /// Says on each issue of `notices` why afk did not take it (its text changed under an
    /// untrusted editor after the trusted label): once per trusted label, whatever the number of
    /// polls that find it. Best effort: a failure is logged and tried at the next poll.
    pub(crate) async fn say_untrusted_edits(&self, notices: &[(IssueKey, UntrustedEdit)]) {
        for (issue, edit) in notices {
            if let Err(error) = self.reporter.report_untrusted_edit(issue, edit).await {
                tracing::warn!("{issue}: cannot say on the issue why it was not taken yet: {error}");
            }
        }
    }
}
