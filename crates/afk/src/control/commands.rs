//! Comment commands: `/afk retry`, `/afk stop` and `/afk <instruction>` in a comment on an issue
//! afk has a job for (or on the pull request its agent opened), from people with write access.
//!
//! Comments come from `issue_comment` webhooks (at once) and, as the fallback, from polling each
//! job's issue for comments since the last one seen (a few issues per poll interval, each page
//! conditional on its ETag). A command goes through the ledger in three steps
//! (`afk_ledger::commands`): taken before anything is done, answered together with the job's move
//! in one transaction, acknowledged once its reaction (👀 taken, 👎 refused with a one-line reply)
//! went out. So kill -9 at any point neither loses a command nor carries one out twice, and an
//! edited comment is never taken again. A command from anyone without write access is kept as
//! ignored: said once in the log, never answered (no noise on the issue).
//!
//! `/afk <instruction>` after the job's turn ended (`succeeded`, `in_review`) is a follow-up turn on
//! its thread ([`request_follow_up_turn`]); while the agent works or waits for a person it is
//! refused with a reply saying when to ask again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use afk_core::{
    apply, CancelReason, Event, FollowUpBy, IssueKey, JobSource, JobState, Repo, RequeueBy, RetryPolicy,
};
use afk_github::{
    parse_command, Command, CommandReaction, CommentCommands, CommentId, IssueComment, Parsed, WebhookEvent,
    WebhookEventKind,
};
use afk_ledger::{
    CommandAnswer, CommandState, CommentCommand, CommentCommandKind, InstructionChange, Job,
    NewCommentCommand, Reaction,
};
use chrono::{DateTime, Utc};

use super::follow;
use super::record::Recorder;
use super::ControlError;

/// Issues whose comments one poll round lists at most (the rest wait for the next rounds).
const POLLS_PER_ROUND: usize = 10;
/// How far GitHub's clock (a comment's time) may be behind afk's (the job's) before a comment
/// counts as older than the job.
const COMMENT_CLOCK_SLACK_SECS: i64 = 60;
/// Delivered comments kept for another try while GitHub cannot be asked about them, at most.
const MAX_DEFERRED_COMMENTS: usize = 1_000;
/// Commands answered or acknowledged per tick at most.
const COMMANDS_PER_TICK: u32 = 50;

/// What afk does about a taken command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Carry it out: the job's event (if any) and what becomes of its instruction; 👀.
    Take {
        /// The event for the state machine.
        event: Option<Event>,
        /// The job's instruction after it.
        instruction: InstructionChange,
    },
    /// Refuse it: 👎 and this one-line reply.
    Refuse(String),
    /// `/afk <instruction>` while the job's thread is alive or finished: a follow-up turn
    /// ([`request_follow_up_turn`] decides).
    FollowUp(String),
}

/// The follow-up cause a comment's instruction is recorded under: one turn per comment.
fn follow_up_key(comment: CommentId) -> String {
    format!("comment:{comment}")
}

/// `/afk <instruction>` by `author` (write access checked) in comment `comment` for `job`, whose
/// turn succeeded (its pull request followed or not): a follow-up turn with `instruction` on the
/// job's thread, through [`follow::start_follow_up`] (recorded with its ids before it is sent,
/// keyed by the comment: the ledger refuses the same comment's turn twice). A person is not held to `followup.max_turns`.
pub(crate) async fn request_follow_up_turn(
    recorder: &mut Recorder,
    job: &Job,
    comment: CommentId,
    author: &str,
    instruction: &str,
    max_turns: u32,
    now: DateTime<Utc>,
) -> Result<Decision, ControlError> {
    let taken = Decision::Take {
        event: None,
        instruction: InstructionChange::Keep,
    };
    // Whether this comment started its turn before a crash is asked before the command is
    // decided (`CommentIntake::answer`), so it is not asked again here.
    let cause = follow::Cause {
        key: follow_up_key(comment),
        line: format!("{author} asks in comment {comment}"),
    };
    let prompt = format!("{author} (with write access) asks in a comment:\n\n{instruction}");
    let started =
        follow::start_follow_up(recorder, job, FollowUpBy::Person, max_turns, cause, prompt, now).await?;
    Ok(if started {
        taken
    } else {
        Decision::Refuse(format!("no follow-up turn now: the job is {}", job.state))
    })
}

/// What afk does about a command of `kind` (with `argument`, the instruction or why it is
/// malformed) given by `author` for `job`: a plain function of the job's state, asking the state
/// machine whether a requeue is allowed.
pub(crate) fn decide(
    job: &Job,
    kind: CommentCommandKind,
    argument: Option<&str>,
    author: &str,
    retry: &RetryPolicy,
    now: DateTime<Utc>,
) -> Decision {
    use JobState as J;
    let state = job.state;
    let requeue = Event::Requeue {
        by: RequeueBy::Commanded,
    };
    let may_requeue = apply(job.status(), &requeue, retry, now).is_ok();
    let gone = job.cancel_reason == Some(CancelReason::IssueGone);
    match kind {
        CommentCommandKind::Malformed => {
            Decision::Refuse(argument.unwrap_or("afk cannot read this command").to_owned())
        }
        CommentCommandKind::Stop if !state.is_final() => Decision::Take {
            event: Some(Event::Cancel {
                reason: CancelReason::StoppedByCommand,
            }),
            instruction: InstructionChange::Keep,
        },
        CommentCommandKind::Stop => Decision::Refuse(format!("nothing to stop: the job is {state}")),
        CommentCommandKind::Retry if may_requeue => Decision::Take {
            event: Some(requeue),
            instruction: InstructionChange::Clear,
        },
        CommentCommandKind::Retry if gone => Decision::Refuse("GitHub no longer has the issue".into()),
        CommentCommandKind::Retry => Decision::Refuse(format!("nothing to retry: the job is {state}")),
        CommentCommandKind::Instruct => {
            let text = argument.unwrap_or_default().to_owned();
            let set = InstructionChange::Set {
                text: text.clone(),
                author: author.to_owned(),
            };
            match state {
                // Its turn ended: a follow-up turn on its thread.
                J::Succeeded | J::InReview => Decision::FollowUp(text),
                // T3 takes one turn at a time; the agent is not interrupted for a comment.
                J::Dispatching | J::Running => Decision::Refuse(
                    "the agent is working on it; say it again once its turn has ended".into(),
                ),
                J::NeedsInput => Decision::Refuse(
                    "the agent waits for an answer in T3: answer it there (the status comment links the thread)"
                        .into(),
                ),
                J::Merged | J::Closed => {
                    Decision::Refuse(format!("nothing to follow up: the pull request was {state}"))
                }
                J::Failed | J::GivenUp | J::Cancelled if may_requeue => Decision::Take {
                    event: Some(requeue),
                    instruction: set,
                },
                J::Failed | J::GivenUp | J::Cancelled => {
                    Decision::Refuse("GitHub no longer has the issue".into())
                }
                // No attempt is alive and one will start: it gets the instruction.
                J::Queued | J::RetryWait => Decision::Take {
                    event: None,
                    instruction: set,
                },
                J::TimedOut | J::Lost => Decision::Refuse(
                    "the last attempt is still being stopped; say it again in a minute".into(),
                ),
            }
        }
    }
}

/// Comment commands on GitHub: intake (webhook and polling), answers and acknowledgements.
pub struct CommentIntake {
    github: CommentCommands,
    /// A poll round at most this often (GitHub's `[github] poll_interval`).
    poll_interval: Duration,
    next_round: Option<Instant>,
    /// Per issue: the latest `updated_at` of its comments seen (GitHub's clock), the `since` of
    /// its next poll. An issue not yet polled since afk started is listed whole (the ledger
    /// knows which commands were taken).
    cursors: HashMap<IssueKey, DateTime<Utc>>,
    /// Where the next round starts among the jobs' issues.
    turn: usize,
    /// Delivered comments GitHub could not yet say whose they are or who may command, tried
    /// again on the next pass (a comment on a pull request is seen by webhook only).
    deferred: Vec<(Repo, IssueComment, bool)>,
}

impl CommentIntake {
    /// Comment commands through `github`, polling a few issues every `poll_interval`.
    pub fn new(github: CommentCommands, poll_interval: Duration) -> Self {
        Self {
            github,
            poll_interval,
            next_round: None,
            cursors: HashMap::new(),
            turn: 0,
            deferred: Vec::new(),
        }
    }

    /// One pass: the comments webhooks delivered (`events`), a poll round when due and
    /// `may_poll`, then the taken commands answered and the answered ones acknowledged.
    /// `repos` are the configured repositories (jobs are keyed by their spelling).
    pub(crate) async fn sync(
        &mut self,
        recorder: &mut Recorder,
        events: Vec<WebhookEvent>,
        repos: &[Repo],
        may_poll: bool,
        follow_up_max_turns: u32,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        let mut delivered = std::mem::take(&mut self.deferred);
        for event in events {
            let WebhookEventKind::Commented {
                comment,
                on_pull_request,
            } = event.kind
            else {
                continue;
            };
            let Some(repo) = repos
                .iter()
                .find(|r| r.as_str().eq_ignore_ascii_case(event.repo.as_str()))
            else {
                continue;
            };
            delivered.push((repo.clone(), comment, on_pull_request));
        }
        for (repo, comment, on_pull_request) in delivered {
            if !self
                .consider(recorder, &repo, comment.clone(), on_pull_request, now)
                .await?
                && self.deferred.len() < MAX_DEFERRED_COMMENTS
            {
                self.deferred.push((repo, comment, on_pull_request));
            }
        }
        if may_poll && self.next_round.is_none_or(|next| Instant::now() >= next) {
            self.next_round = Some(Instant::now() + self.poll_interval);
            self.poll_round(recorder, now).await?;
        }
        self.answer(recorder, follow_up_max_turns, now).await?;
        self.acknowledge(recorder).await
    }

    /// Lists the comments of up to [`POLLS_PER_ROUND`] jobs' issues, in turn, since the last
    /// comment seen on each.
    async fn poll_round(&mut self, recorder: &mut Recorder, now: DateTime<Utc>) -> Result<(), ControlError> {
        let issues: Vec<IssueKey> = recorder.ledger().issues_for_commands().await?;
        if issues.is_empty() {
            return Ok(());
        }
        let start = self.turn % issues.len();
        let count = issues.len().min(POLLS_PER_ROUND);
        self.turn = start + count;
        for issue in issues.iter().cycle().skip(start).take(count) {
            let since = self.cursors.get(issue).copied();
            let comments = match self.github.list_since(issue, since).await {
                Ok(comments) => comments,
                Err(error) => {
                    tracing::debug!("{issue}: cannot list its comments for commands yet: {error}");
                    continue;
                }
            };
            for comment in comments {
                let at = comment.updated_at;
                if !self.consider(recorder, &issue.repo, comment, false, now).await? {
                    // GitHub could not say who wrote it or whose it is: this comment and the
                    // ones after it are listed again next time.
                    break;
                }
                if let Some(at) = at {
                    let cursor = self.cursors.entry(issue.clone()).or_insert(at);
                    *cursor = (*cursor).max(at);
                }
            }
        }
        Ok(())
    }

    /// Takes `comment` (on issue or pull request `comment.number` of `repo`) when it is a
    /// command afk has not seen, for a job afk has: as ignored when its author may not command
    /// afk (said once), else as taken. Nothing else happens here. False when GitHub could not say
    /// whose it is or who may command (try it again later); true when it is dealt with.
    async fn consider(
        &mut self,
        recorder: &mut Recorder,
        repo: &Repo,
        comment: IssueComment,
        on_pull_request: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, ControlError> {
        let (kind, argument) = match parse_command(&comment.body) {
            Parsed::NotACommand => return Ok(true),
            Parsed::Command(Command::Retry) => (CommentCommandKind::Retry, None),
            Parsed::Command(Command::Stop) => (CommentCommandKind::Stop, None),
            Parsed::Command(Command::Instruct(text)) => (CommentCommandKind::Instruct, Some(text)),
            Parsed::Malformed(why) => (CommentCommandKind::Malformed, Some(why)),
        };
        let ledger = recorder.ledger().clone();
        // Taken once: a later edit of a command afk saw is never read again.
        if ledger.comment_command_known(repo, comment.id.0).await? {
            return Ok(true);
        }
        let place = format!("{repo}#{}", comment.number);
        let job = if on_pull_request {
            match self.github.pull_request_branch(repo, comment.number).await {
                Ok(Some(branch)) => ledger.job_by_branch(repo, &branch).await?,
                Ok(None) => None,
                Err(error) => {
                    tracing::warn!("{place}: cannot read the pull request of a `/afk` comment yet: {error}");
                    return Ok(false);
                }
            }
        } else {
            ledger
                .job_by_issue(&IssueKey {
                    repo: repo.clone(),
                    number: comment.number,
                })
                .await?
        };
        let Some(job) = job.filter(|j| j.source == JobSource::GitHub) else {
            tracing::debug!("{place}: a `/afk` comment where afk has no job; ignored");
            return Ok(true);
        };
        // A command is for the job that exists: one written before it (months-old comments a
        // first poll lists in full after a start or an upgrade) is not a command to it.
        if comment
            .created_at
            .is_some_and(|made| made + chrono::Duration::seconds(COMMENT_CLOCK_SLACK_SECS) < job.created_at)
        {
            tracing::debug!("{place}: a `/afk` comment older than afk's job for it; ignored");
            return Ok(true);
        }
        let Some(author) = comment.author else {
            return Ok(true);
        };
        let may_command = match self.github.may_command(repo, &author).await {
            Ok(may) => may,
            Err(error) => {
                // Polling sees the comment again.
                tracing::warn!("{place}: cannot ask whether {author} may command afk yet: {error}");
                return Ok(false);
            }
        };
        let new = NewCommentCommand {
            repo: repo.clone(),
            comment_id: comment.id.0,
            number: comment.number,
            job: job.id,
            author: author.as_str().to_owned(),
            kind,
            argument,
        };
        let taken = match ledger.take_comment_command(&new, !may_command, now).await {
            Ok(taken) => taken,
            // A comment the ledger cannot store (a NUL in it) is that comment's fault alone.
            Err(error) if error.is_bad_value() => {
                tracing::warn!(
                    "{place}: the `/afk` comment {} cannot be taken: {error}",
                    comment.id
                );
                return Ok(true);
            }
            Err(error) => return Err(error.into()),
        };
        if taken && !may_command {
            tracing::info!(
                issue = %job.issue,
                "{place}: ignored the `/afk {}` comment {} by {author}: only people with write access can command afk",
                kind.as_str(),
                comment.id
            );
        } else if taken {
            tracing::info!(issue = %job.issue, "{place}: took the `/afk {}` comment {} by {author}", kind.as_str(), comment.id);
        }
        Ok(true)
    }

    /// Answers the taken commands: decides, and records the job's move with the answer.
    async fn answer(
        &mut self,
        recorder: &mut Recorder,
        max_turns: u32,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        let open = recorder
            .ledger()
            .open_comment_commands(Some(CommandState::Taken), COMMANDS_PER_TICK)
            .await?;
        for command in open {
            let Some(job) = recorder.ledger().job(command.command.job).await? else {
                continue;
            };
            let author = command.command.author.as_str();
            let argument = command.command.argument.as_deref();
            // A follow-up turn this command started before a crash (recorded, not yet answered):
            // taken, whatever the job's state now.
            let started = command.command.kind == CommentCommandKind::Instruct
                && recorder
                    .ledger()
                    .follow_up_causes(job.id)
                    .await?
                    .contains(&follow_up_key(CommentId(command.command.comment_id)));
            let mut decision = if started {
                Decision::Take {
                    event: None,
                    instruction: InstructionChange::Keep,
                }
            } else {
                decide(
                    &job,
                    command.command.kind,
                    argument,
                    author,
                    recorder.retry(),
                    now,
                )
            };
            if let Decision::FollowUp(instruction) = &decision {
                decision = request_follow_up_turn(
                    recorder,
                    &job,
                    CommentId(command.command.comment_id),
                    author,
                    instruction,
                    max_turns,
                    now,
                )
                .await?;
            }
            let (event, answer) = match decision {
                Decision::Take { event, instruction } => (
                    event,
                    CommandAnswer {
                        reaction: Reaction::Eyes,
                        reply: None,
                        instruction,
                    },
                ),
                Decision::Refuse(reply) => (
                    None,
                    CommandAnswer {
                        reaction: Reaction::ThumbsDown,
                        reply: Some(reply),
                        instruction: InstructionChange::Keep,
                    },
                ),
                Decision::FollowUp(_) => continue,
            };
            let by = format!(
                "by {author} in comment {} on #{}",
                command.command.comment_id, command.command.number
            );
            let answered = recorder
                .answer_command(&job, event.as_ref(), &by, command.id, &answer, now)
                .await?;
            match (answered, &answer.reply) {
                (None, _) => tracing::debug!("{}: the job moved; the command is decided again", job.issue),
                (Some(_), Some(reply)) => {
                    tracing::info!(issue = %job.issue, "{}: refused the `/afk {}` comment {}: {reply}", job.issue, command.command.kind.as_str(), command.command.comment_id)
                }
                (Some(_), None) => {}
            }
        }
        Ok(())
    }

    /// Sends the reactions (and replies) owed for answered commands, then marks them
    /// acknowledged. A failure leaves the command for the next tick; one GitHub will never
    /// accept (the comment was deleted) is given up with a warning.
    async fn acknowledge(&mut self, recorder: &mut Recorder) -> Result<(), ControlError> {
        let open = recorder
            .ledger()
            .open_comment_commands(Some(CommandState::Answered), COMMANDS_PER_TICK)
            .await?;
        for command in open {
            match self.send_answer(&command).await {
                Ok(()) => {}
                Err(error) if error.is_transient() => {
                    tracing::warn!(
                        "{}#{}: cannot answer the `/afk` comment {} yet: {error}",
                        command.command.repo,
                        command.command.number,
                        command.command.comment_id
                    );
                    continue;
                }
                Err(error) => tracing::warn!(
                    "{}#{}: cannot answer the `/afk` comment {}: {error}; not trying again",
                    command.command.repo,
                    command.command.number,
                    command.command.comment_id
                ),
            }
            recorder.ledger().acknowledge_comment_command(command.id).await?;
        }
        Ok(())
    }

    async fn send_answer(&self, command: &CommentCommand) -> Result<(), afk_github::GitHubError> {
        let c = &command.command;
        let reaction = match command.reaction {
            Some(Reaction::ThumbsDown) => CommandReaction::Refused,
            _ => CommandReaction::Taken,
        };
        self.github
            .react(&c.repo, CommentId(c.comment_id), reaction)
            .await?;
        if let Some(reply) = &command.reply {
            let place = IssueKey {
                repo: c.repo.clone(),
                number: c.number,
            };
            self.github
                .reply(&place, CommentId(c.comment_id), &c.author, reply)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use afk_core::{JobId, Priority};

    fn job(state: JobState, cancel_reason: Option<CancelReason>) -> Job {
        let now = Utc::now();
        Job {
            id: JobId(1),
            issue: IssueKey {
                repo: Repo::new("acme/api").unwrap(),
                number: 7,
            },
            title: "t".into(),
            body: "b".into(),
            labels: vec![],
            priority: Priority::DEFAULT,
            source: JobSource::GitHub,
            state,
            cancel_reason,
            attempts: 1,
            attempts_base: 0,
            dispatch_tries: 0,
            not_before: None,
            last_error: None,
            created_at: now,
            updated_at: now,
            input_question: None,
            input_wait_since: None,
            input_waited: std::time::Duration::ZERO,
            reported: None,
        }
    }

    #[test]
    fn commands_are_decided_from_the_jobs_state() {
        use CommentCommandKind::{Instruct, Malformed, Retry, Stop};
        use JobState as J;
        let retry = RetryPolicy::default();
        let requeue = Some(Event::Requeue {
            by: RequeueBy::Commanded,
        });
        let stop = Some(Event::Cancel {
            reason: CancelReason::StoppedByCommand,
        });
        let set = InstructionChange::Set {
            text: "fix the tests".into(),
            author: "mona".into(),
        };
        let take =
            |event: Option<Event>, instruction: InstructionChange| Decision::Take { event, instruction };
        let refused = |d: &Decision, words: &str| matches!(d, Decision::Refuse(r) if r.contains(words));
        let cases: Vec<(JobState, Option<CancelReason>, CommentCommandKind, Decision)> = vec![
            (
                J::Running,
                None,
                Stop,
                take(stop.clone(), InstructionChange::Keep),
            ),
            (J::Queued, None, Stop, take(stop.clone(), InstructionChange::Keep)),
            (
                J::RetryWait,
                None,
                Stop,
                take(stop.clone(), InstructionChange::Keep),
            ),
            (
                J::GivenUp,
                None,
                Retry,
                take(requeue.clone(), InstructionChange::Clear),
            ),
            (
                J::Failed,
                None,
                Retry,
                take(requeue.clone(), InstructionChange::Clear),
            ),
            (
                J::Cancelled,
                Some(CancelReason::StoppedByCommand),
                Retry,
                take(requeue.clone(), InstructionChange::Clear),
            ),
            (J::Failed, None, Instruct, take(requeue.clone(), set.clone())),
            (J::Queued, None, Instruct, take(None, set.clone())),
            (J::RetryWait, None, Instruct, take(None, set.clone())),
            (
                J::Succeeded,
                None,
                Instruct,
                Decision::FollowUp("fix the tests".into()),
            ),
            (
                J::InReview,
                None,
                Instruct,
                Decision::FollowUp("fix the tests".into()),
            ),
            (
                J::InReview,
                None,
                Stop,
                take(
                    Some(Event::Cancel {
                        reason: CancelReason::StoppedByCommand,
                    }),
                    InstructionChange::Keep,
                ),
            ),
        ];
        for (state, reason, kind, expected) in cases {
            let argument = (kind == Instruct).then_some("fix the tests");
            let got = decide(&job(state, reason), kind, argument, "mona", &retry, Utc::now());
            assert_eq!(got, expected, "{state} {kind:?}");
        }
        let refusals = [
            (J::Succeeded, None, Stop, "nothing to stop"),
            (J::GivenUp, None, Stop, "nothing to stop"),
            (J::Succeeded, None, Retry, "nothing to retry"),
            (J::Running, None, Retry, "nothing to retry"),
            (
                J::Cancelled,
                Some(CancelReason::IssueGone),
                Retry,
                "no longer has",
            ),
            (
                J::Cancelled,
                Some(CancelReason::IssueGone),
                Instruct,
                "no longer has",
            ),
            (J::TimedOut, None, Instruct, "still being stopped"),
            (J::Running, None, Instruct, "working on it"),
            (J::NeedsInput, None, Instruct, "answer it there"),
            (J::Merged, None, Instruct, "was merged"),
            (J::Merged, None, Stop, "nothing to stop"),
            (J::Merged, None, Retry, "nothing to retry"),
            (J::Running, None, Malformed, "takes nothing"),
        ];
        for (state, reason, kind, words) in refusals {
            let argument = match kind {
                Malformed => Some("`/afk stop` takes nothing after it"),
                Instruct => Some("fix the tests"),
                _ => None,
            };
            let got = decide(&job(state, reason), kind, argument, "mona", &retry, Utc::now());
            assert!(refused(&got, words), "{state} {kind:?}: {got:?}");
        }
    }
}
