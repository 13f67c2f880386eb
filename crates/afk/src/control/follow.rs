//! Pull request follow-through and follow-up turns.
//!
//! After a job's turn succeeds and its pull request is found (the reporter records
//! `FollowPullRequest`), the job is `in_review` and each tick reads its pull request
//! ([`afk_github::Reporter::pull_request_activity`], ETag-cached): merged → `merged`, closed →
//! `closed`; a failed check of the head commit (once no check is still running) or a review
//! requesting changes by a writer becomes a **follow-up turn** on the same thread, with a prompt
//! from [`render_follow_up`](afk_github::follow::render_follow_up) (`AFK.md`'s `followup.template` or the built-in one). Each cause is answered once (keyed by the head SHA and the check id,
//! or the review id), also past `followup.max_turns`, when the job waits for a person instead.
//!
//! [`start_follow_up`] is the one way to start a follow-up turn (a comment command `/afk
//! <instruction>` calls it with [`FollowUpBy::Person`]): the turn's command and message ids are
//! chosen and recorded with the transition before anything is sent, and
//! [`FollowThrough::send_unsent`] sends whatever was recorded and not yet accepted by T3 (after a
//! crash too) with the same ids, which T3 deduplicates.

use afk_core::{Event, FollowUpBy, JobSource, JobState};
use afk_github::follow::render_follow_up;
use afk_github::{PullRequestSearch, PullRequestState, Reporter};
use afk_ledger::{Job, NewFollowUp};
use chrono::{DateTime, Utc};
use t3_client::{CommandId, MessageId, T3Client};

use super::record::Recorder;
use super::ControlError;
use crate::policy::Policies;

/// Follows the pull requests of `in_review` jobs and sends follow-up turns.
pub(crate) struct FollowThrough {
    t3: T3Client,
    max_turns: u32,
    /// When the pull requests were last read.
    last_read: Option<std::time::Instant>,
}

/// One reason for a follow-up: its key (answered once per job) and its part of the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    /// Unique per job: `{head sha}:check_run:{id}`, `{head sha}:status:{id}`, `review:{id}`.
    pub(crate) key: String,
    /// One line for people (`check "test" failed on 1a2b3c4`).
    pub(crate) line: String,
}

impl FollowThrough {
    /// `[followup] max_turns`, before a repository's `AFK.md` lowers it.
    pub(crate) fn max_turns(&self) -> u32 {
        self.max_turns
    }

    pub(crate) fn new(t3: T3Client, max_turns: u32) -> Self {
        Self {
            t3,
            max_turns,
            last_read: None,
        }
    }

    /// True when the pull requests are to be read now: `woken` by a delivery, or `interval`
    /// passed since they were last read (and counts this read).
    pub(crate) fn due(&mut self, woken: bool, interval: std::time::Duration) -> bool {
        let now = std::time::Instant::now();
        if woken || self.last_read.is_none_or(|at| now >= at + interval) {
            self.last_read = Some(now);
            return true;
        }
        false
    }

    /// Sends every recorded follow-up turn T3 has not accepted yet (with its stored ids) and
    /// marks those it accepted. A transient failure is tried again on the next tick; a refusal
    /// is said and not sent again (the watcher then sees how the thread stands).
    pub(crate) async fn send_unsent(&self, recorder: &Recorder) -> Result<(), ControlError> {
        let ledger = recorder.ledger();
        for follow_up in ledger.unsent_follow_ups().await? {
            match self
                .t3
                .follow_up(
                    &follow_up.thread_id,
                    &follow_up.prompt,
                    follow_up.turn_command_id.clone(),
                    follow_up.message_id.clone(),
                )
                .await
            {
                Ok(_) => ledger.mark_follow_up_sent(follow_up.id).await?,
                Err(error) if error.is_transient() => {
                    tracing::warn!(
                        job = follow_up.job_id.0,
                        thread = %follow_up.thread_id,
                        "cannot send follow-up {} yet: {error}",
                        follow_up.number
                    );
                }
                Err(error) => {
                    tracing::warn!(
                        job = follow_up.job_id.0,
                        thread = %follow_up.thread_id,
                        "T3 refused follow-up {}: {error}",
                        follow_up.number
                    );
                    ledger.mark_follow_up_sent(follow_up.id).await?;
                }
            }
        }
        Ok(())
    }

    /// Reads the pull request of every `in_review` GitHub job and records what it calls for:
    /// merged, closed, or a follow-up turn (sent by [`FollowThrough::send_unsent`]); of a job in
    /// a follow-up turn, only whether it was merged or closed.
    pub(crate) async fn follow(
        &self,
        recorder: &mut Recorder,
        reporter: &Reporter,
        policies: &mut Policies,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        // A job whose follow-up turn is working (or waits for a person) is read too: its pull
        // request may be merged or closed meanwhile, which ends the job and stops that turn.
        let mut jobs = recorder.ledger().jobs_in(&[JobState::InReview]).await?;
        jobs.extend(recorder.ledger().jobs_in_follow_up_turns().await?);
        for job in jobs.into_iter().filter(|j| j.source == JobSource::GitHub) {
            let in_follow_up = job.state != JobState::InReview;
            let attempts = recorder.ledger().attempts(job.id).await?;
            let found = reporter
                .find_pull_request(&job.issue, attempts.iter().rev().map(|a| a.branch.as_str()))
                .await;
            let number = match found {
                Ok(PullRequestSearch::Found(pr)) => pr.number,
                Ok(PullRequestSearch::NotFound { .. }) => {
                    tracing::warn!("{}: its pull request is no longer found; waiting", job.issue);
                    continue;
                }
                Err(error) => {
                    tracing::warn!("{}: cannot look for its pull request yet: {error}", job.issue);
                    continue;
                }
            };
            let activity = match reporter.pull_request_activity(&job.issue.repo, number).await {
                Ok(activity) => activity,
                Err(error) => {
                    tracing::warn!("{}: cannot read pull request #{number} yet: {error}", job.issue);
                    continue;
                }
            };
            match activity.state {
                PullRequestState::Merged => {
                    recorder
                        .record(&job, &Event::PullRequestMerged, None, now)
                        .await?;
                    continue;
                }
                PullRequestState::Closed => {
                    recorder
                        .record(&job, &Event::PullRequestClosed, None, now)
                        .await?;
                    continue;
                }
                PullRequestState::Open if in_follow_up => continue,
                PullRequestState::Open => {}
            }
            let answered = recorder.ledger().follow_up_causes(job.id).await?;
            let causes: Vec<(String, String)> = activity
                .cause_keys()
                .into_iter()
                .filter(|(key, _)| !answered.iter().any(|a| a.split('+').any(|k| k == key)))
                .collect();
            if causes.is_empty() {
                continue;
            }
            let keys: Vec<String> = causes.iter().map(|(key, _)| key.clone()).collect();
            let line = causes
                .iter()
                .map(|(_, line)| line.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            // AFK.md may lower the limit and replace the template; read through its cache.
            let Some(settings) = policies.follow_up_settings(&job.issue.repo).await else {
                // Next pass: the cause stays unanswered until AFK.md can be read.
                continue;
            };
            let max_turns = settings
                .max_turns
                .map_or(self.max_turns, |lower| lower.min(self.max_turns));
            let origin = job.issue.repo.to_string();
            let prompt = match render_follow_up(settings.template.as_deref(), &origin, &activity, &keys) {
                Ok(prompt) => prompt,
                Err(error) => {
                    // Said, and answered with the built-in template: the pull request still
                    // needs the work, and the person who fixes AFK.md sees the next one.
                    tracing::warn!("{}: {error}; the built-in follow-up template is used", job.issue);
                    render_follow_up(None, &origin, &activity, &keys)
                        .unwrap_or_else(|e| format!("Fix this on your pull request: {line} ({e})"))
                }
            };
            let cause = Cause {
                key: keys.join("+"),
                line,
            };
            // A safe point of the job's agent time budget ([budget]): past it, no turn of its own.
            policies.load_budgets(std::slice::from_ref(&job.issue.repo)).await;
            let over_budget =
                super::budget::job_gate_at_review(recorder.ledger(), &job, &policies.budget(&job.issue.repo))
                    .await?;
            start_follow_up_within(
                recorder,
                &job,
                FollowUpBy::PullRequest,
                max_turns,
                over_budget,
                cause,
                prompt,
                now,
            )
            .await?;
        }
        Ok(())
    }
}

/// Starts a follow-up turn on `job`'s thread: records [`Event::FollowUp`] with `cause` and
/// `prompt` and fresh command and message ids, before anything is sent; the next
/// [`FollowThrough::send_unsent`] (in the same tick) sends it. True when a turn was recorded;
/// false when the machine refused it (the job is not `in_review`, or `succeeded` for a
/// person), when `cause.key` was answered before, or when the limit (`max_turns`, for
/// [`FollowUpBy::PullRequest`]) is reached: the cause is then recorded as answered and the job
/// waits for a person, with a note saying so.
///
/// This is the entry point for a comment command `/afk <instruction>`: call it with
/// `FollowUpBy::Person`, the comment's id as `cause.key` (`comment:{id}`) and the instruction as
/// `prompt`.
pub(crate) async fn start_follow_up(
    recorder: &mut Recorder,
    job: &Job,
    by: FollowUpBy,
    max_turns: u32,
    cause: Cause,
    prompt: String,
    now: DateTime<Utc>,
) -> Result<bool, ControlError> {
    start_follow_up_within(recorder, job, by, max_turns, None, cause, prompt, now).await
}

/// [`start_follow_up`] for a job whose agent time budget may be spent (`over_budget`): a
/// follow-up the pull request asks for is then not started, its cause is recorded as answered
/// and the job waits for a person, with a note naming the budget and its figures.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_follow_up_within(
    recorder: &mut Recorder,
    job: &Job,
    by: FollowUpBy,
    max_turns: u32,
    over_budget: Option<afk_core::AgentTimeOverrun>,
    cause: Cause,
    prompt: String,
    now: DateTime<Utc>,
) -> Result<bool, ControlError> {
    let used = recorder.ledger().follow_ups_used(job.id).await?;
    let event = Event::FollowUp {
        by,
        cause: cause.line.clone(),
        used,
        max_turns,
        over_budget,
    };
    let follow_up = NewFollowUp {
        cause_key: cause.key,
        cause: cause.line,
        prompt,
        turn_command_id: CommandId::generate(),
        message_id: MessageId::generate(),
    };
    let recorded = recorder.record_follow_up(job, &event, &follow_up, now).await?;
    Ok(recorded.is_some_and(|(t, _)| t.to == JobState::Running))
}
