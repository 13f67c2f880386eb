//! Pull request follow-through and follow-up turns.
//!
//! After a job's turn succeeds and its pull request is found (the reporter records
//! `FollowPullRequest`), the job is `in_review` and each tick reads its pull request
//! ([`afk_github::Reporter::pull_request_activity`], ETag-cached): merged → `merged`, closed →
//! `closed`; a failed check of the head commit (once no check is still running) or a review
//! requesting changes by a writer becomes a **follow-up turn** on the same thread, with a prompt
//! from [`follow_up_prompt`]. Each cause is answered once (keyed by the head SHA and the check id,
//! or the review id), also past `followup.max_turns`, when the job waits for a person instead.
//!
//! [`start_follow_up`] is the one way to start a follow-up turn (a comment command `/afk
//! <instruction>` calls it with [`FollowUpBy::Person`]): the turn's command and message ids are
//! chosen and recorded with the transition before anything is sent, and
//! [`FollowThrough::send_unsent`] sends whatever was recorded and not yet accepted by T3 (after a
//! crash too) with the same ids, which T3 deduplicates.

use afk_core::{Event, FollowUpBy, JobSource, JobState};
use afk_github::{CheckKind, PullRequestActivity, PullRequestSearch, PullRequestState, Reporter};
use afk_ledger::{Job, NewFollowUp};
use chrono::{DateTime, Utc};
use t3_client::{CommandId, MessageId, T3Client};

use super::record::Recorder;
use super::ControlError;

/// Follows the pull requests of `in_review` jobs and sends follow-up turns.
pub(crate) struct FollowThrough {
    t3: T3Client,
    max_turns: u32,
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
    pub(crate) fn new(t3: T3Client, max_turns: u32) -> Self {
        Self { t3, max_turns }
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
    /// merged, closed, or a follow-up turn (sent by [`FollowThrough::send_unsent`]).
    pub(crate) async fn follow(
        &self,
        recorder: &mut Recorder,
        reporter: &Reporter,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        let jobs = recorder.ledger().jobs_in(&[JobState::InReview]).await?;
        for job in jobs.into_iter().filter(|j| j.source == JobSource::GitHub) {
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
                    recorder.record(&job, &Event::PullRequestMerged, None, now).await?;
                    continue;
                }
                PullRequestState::Closed => {
                    recorder.record(&job, &Event::PullRequestClosed, None, now).await?;
                    continue;
                }
                PullRequestState::Open => {}
            }
            let answered = recorder.ledger().follow_up_causes(job.id).await?;
            let causes: Vec<Cause> = causes_of(&activity)
                .into_iter()
                .filter(|c| !answered.iter().any(|a| a.split('+').any(|k| k == c.key)))
                .collect();
            if causes.is_empty() {
                continue;
            }
            let key = causes.iter().map(|c| c.key.as_str()).collect::<Vec<_>>().join("+");
            let line = causes.iter().map(|c| c.line.as_str()).collect::<Vec<_>>().join("; ");
            let prompt = follow_up_prompt(&activity, &causes);
            start_follow_up(
                recorder,
                &job,
                FollowUpBy::PullRequest,
                self.max_turns,
                Cause { key, line },
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
    let used = recorder.ledger().follow_ups_used(job.id).await?;
    let event = Event::FollowUp {
        by,
        cause: cause.line.clone(),
        used,
        max_turns,
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

/// What in `activity` calls for a follow-up: the failed checks of the head commit once none is
/// still running, and the standing requests for changes by writers.
pub(crate) fn causes_of(activity: &PullRequestActivity) -> Vec<Cause> {
    let short = &activity.head_sha[..activity.head_sha.len().min(7)];
    let mut causes = Vec::new();
    if !activity.checks_pending {
        for check in &activity.failed_checks {
            let what = match check.kind {
                CheckKind::CheckRun => "check",
                CheckKind::Status => "status",
            };
            causes.push(Cause {
                key: format!("{}:{}:{}", activity.head_sha, check.kind.as_str(), check.id),
                line: format!("{what} \"{}\" {} on {short}", check.name, check.conclusion),
            });
        }
    }
    for review in &activity.changes_requested {
        causes.push(Cause {
            key: format!("review:{}", review.id),
            line: format!("{} requested changes", review.reviewer),
        });
    }
    causes
}

/// The follow-up prompt for `causes` of `activity`: a strict built-in template naming each failed
/// check with its summary and link, and each review's comments with file and line.
pub(crate) fn follow_up_prompt(activity: &PullRequestActivity, causes: &[Cause]) -> String {
    let mut out = format!(
        "Your pull request #{} ({}) needs more work on the same branch. Fix what follows, commit and \
         push to the branch; do not open another pull request.\n",
        activity.number, activity.url
    );
    let wanted = |key: &str| causes.iter().any(|c| c.key == key);
    let checks: Vec<_> = activity
        .failed_checks
        .iter()
        .filter(|c| wanted(&format!("{}:{}:{}", activity.head_sha, c.kind.as_str(), c.id)))
        .collect();
    if !checks.is_empty() {
        out.push_str(&format!("\nFailed checks on commit {}:\n", activity.head_sha));
        for check in checks {
            out.push_str(&format!("\n- {} ({})", check.name, check.conclusion));
            if let Some(url) = &check.url {
                out.push_str(&format!(": {url}"));
            }
            out.push('\n');
            for line in check.summary.lines().filter(|l| !l.trim().is_empty()) {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    for review in activity
        .changes_requested
        .iter()
        .filter(|r| wanted(&format!("review:{}", r.id)))
    {
        out.push_str(&format!("\nReview by {} requesting changes ({}):\n", review.reviewer, review.url));
        for line in review.body.lines().filter(|l| !l.trim().is_empty()) {
            out.push_str(&format!("  {line}\n"));
        }
        for comment in &review.comments {
            let at = match comment.line {
                Some(line) => format!("{}:{line}", comment.path),
                None => comment.path.clone(),
            };
            out.push_str(&format!("\n- {at}\n"));
            for line in comment.body.lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use afk_github::{ChangesRequested, FailedCheck, LineComment, Login};

    fn activity() -> PullRequestActivity {
        PullRequestActivity {
            number: 7,
            url: "https://github.com/acme/api/pull/7".into(),
            state: PullRequestState::Open,
            head_sha: "1a2b3c4d5e".into(),
            failed_checks: vec![FailedCheck {
                kind: CheckKind::CheckRun,
                id: 42,
                name: "test".into(),
                conclusion: "failure".into(),
                summary: "2 tests failed\ntests::parse".into(),
                url: Some("https://github.com/acme/api/runs/42".into()),
            }],
            checks_pending: false,
            changes_requested: vec![ChangesRequested {
                id: 9,
                reviewer: Login::new("mona"),
                body: "Two things.".into(),
                url: "https://github.com/acme/api/pull/7#pullrequestreview-9".into(),
                comments: vec![LineComment {
                    path: "src/lib.rs".into(),
                    line: Some(12),
                    body: "Handle the empty case.".into(),
                    url: "u".into(),
                }],
            }],
        }
    }

    #[test]
    fn the_prompt_names_failed_checks_and_review_comments_with_file_and_line() {
        let a = activity();
        let causes = causes_of(&a);
        let keys: Vec<_> = causes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, vec!["1a2b3c4d5e:check_run:42", "review:9"]);
        assert_eq!(causes[0].line, "check \"test\" failure on 1a2b3c4");
        let prompt = follow_up_prompt(&a, &causes);
        assert!(prompt.starts_with("Your pull request #7 (https://github.com/acme/api/pull/7)"), "{prompt}");
        assert!(
            prompt.contains("- test (failure): https://github.com/acme/api/runs/42\n  2 tests failed\n  tests::parse\n"),
            "{prompt}"
        );
        assert!(prompt.contains("Review by mona requesting changes"), "{prompt}");
        assert!(prompt.contains("- src/lib.rs:12\n  Handle the empty case.\n"), "{prompt}");
        // Only the causes asked for are named.
        let prompt = follow_up_prompt(&a, &causes[1..]);
        assert!(!prompt.contains("Failed checks"), "{prompt}");
    }

    #[test]
    fn failed_checks_wait_until_no_check_runs() {
        let a = PullRequestActivity {
            checks_pending: true,
            ..activity()
        };
        let keys: Vec<_> = causes_of(&a).into_iter().map(|c| c.key).collect();
        assert_eq!(keys, vec!["review:9".to_owned()]);
    }
}
