//! The one state machine of jobs and their attempts. Every allowed transition is in [`apply`];
//! anything else is an [`InvalidTransition`].
//!
//! ```text
//!  queued ──Refused──► failed (final, no attempt)
//!  queued ──StartAttempt──► dispatching ──Dispatched──► running ──ThreadSucceeded──► succeeded
//!    ▲                        │  ▲  │                     │
//!    │             DispatchDeferred │                     ├─ThreadFailed────────► retry_wait | given_up
//!    │                        └──┘  ├─DispatchRejected─►  ├─TimedOut──► timed_out ─Settle─► retry_wait | given_up
//!    │                              │  failed (final)     │
//!    │                              └─BootstrapFailed──► retry_wait | given_up
//!    │                                                    ├─ThreadLost► lost ──────Settle─► retry_wait | given_up
//!  Requeue                                                └─Interrupted in T3──► cancelled
//!    │      retry_wait ──StartAttempt──► dispatching (a new attempt, new ids)
//!  cancelled ◄──Cancel── any state that is not final
//!
//!  succeeded ──FollowPullRequest──► in_review ──PullRequestMerged──► merged (final)
//!      ▲                                │        ──PullRequestClosed──► closed (final)
//!      │ ThreadSucceeded                │ FollowUp
//!      └──────────────── running ◄──────┘ (the same attempt, thread and branch)
//! ```
//!
//! A running job whose thread waits for a person (the agent asked in T3) moves to `needs_input`
//! (`InputRequested`) and back to `running` when the person answered (`InputAnswered`); from
//! `needs_input` the thread's end (succeeded, failed, interrupted, lost) counts as from `running`
//! (the answer and the end can fall between two looks), a cancel stops the session, and
//! `NobodyAnswered` (no answer within `[limits] answer_timeout`) fails the job for good (a person
//! or a relabel may requeue it) after stopping the session. It is never timed out: its thread is
//! never interrupted (on T3 that blocks every other thread's provider commands).
//!
//! A follow-up turn ([`Event::FollowUp`]) reopens the job's last attempt: a new
//! `thread.turn.start` on its thread, with a command and message id the ledger stores with the
//! transition. Past `followup.max_turns` automatic follow-ups the job stays `in_review`, waiting
//! for a person, with a note saying so. A job that succeeded without a pull request stays
//! `succeeded`: there is nothing to follow.
//!
//! A job whose agent time (`[budget] job_agent_time`) is spent stops at the next safe point
//! ([`Event::OverBudget`]): before its next attempt (`retry_wait` → `given_up`) or, when its
//! running turn alone is past the budget, at once (`running` → `given_up`, its session stopped);
//! a follow-up turn the pull request asks for is then not started (the job waits for a person in
//! `in_review`). A thread waiting for a person is never stopped for its budget: its waiting time
//! is not agent time. A requeue gives the job a fresh budget.
//!
//! A cancelled job keeps its [`CancelReason`]; `Requeue` by its source is allowed only when that
//! source caused the cancellation ([`CancelReason::undone_by`]), `Requeue` by a person for any
//! job that ended without success, and `Requeue` for a trusted relabel on GitHub for any job that
//! ended without success while GitHub still has its issue.
//!
//! The ledger records a [`Transition`] before the runtime carries out its [`Effect`], so a crash
//! between the two leaves a state from which the effect is simply carried out again (T3
//! deduplicates commands by id).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{AgentTimeOverrun, AttemptNo, AttemptState, CancelReason, JobSource, JobState, RetryPolicy};

/// What the machine needs to know about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStatus {
    /// Its state.
    pub state: JobState,
    /// How many attempts were started so far.
    pub attempts: u32,
    /// How many times the live attempt's dispatch was tried so far (0 before the first).
    pub dispatch_tries: u32,
    /// `attempts` when the job was last requeued (0 if never): the retry budget counts the
    /// attempts since, so a requeued job gets a full budget again.
    pub attempts_base: u32,
    /// Why it is cancelled, while it is.
    pub cancel_reason: Option<CancelReason>,
}

impl JobStatus {
    /// Attempts started within the current budget.
    pub fn attempts_used(&self) -> u32 {
        self.attempts.saturating_sub(self.attempts_base)
    }
}

/// Who asks for a job to be queued again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequeueBy {
    /// The job's source: its issue is back (the file reappeared, the issue is eligible again).
    /// Allowed only for a job that source withdrew.
    Source(JobSource),
    /// A person (`afk dispatch`): allowed for any job that ended without success.
    Person,
    /// A person with write access applied the GitHub issue's trigger label again after the job
    /// ended: allowed for any job that ended without success (failed, given up, cancelled), except
    /// one whose issue GitHub no longer has ([`CancelReason::IssueGone`]).
    Relabelled,
    /// A person with write access commanded it in a comment on the GitHub issue or its pull
    /// request (`/afk retry`, or `/afk <instruction>` when no attempt is alive): allowed for any
    /// job that ended without success, except one whose issue GitHub no longer has
    /// ([`CancelReason::IssueGone`]). Who commanded it is kept with the command in the ledger.
    Commanded,
}

/// Who asks for a follow-up turn on a job's thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUpBy {
    /// The pull request's follow-through: a failed check or a review requesting changes by a
    /// writer. Bounded by `followup.max_turns`.
    PullRequest,
    /// A person with write access (a comment command `/afk <instruction>`): the person the job
    /// waits for once the limit is reached, so not bounded by it.
    Person,
}

/// Something that happened to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The dispatcher takes a queued or retry-waiting job: a new attempt, whose ids the ledger
    /// stores with this transition.
    StartAttempt,
    /// The job cannot be dispatched at all (no T3 project for its repository, a prompt over T3's
    /// limit or a template error): it fails without an attempt.
    Refused {
        /// Why.
        error: String,
    },
    /// T3 accepted both commands of the live attempt.
    Dispatched,
    /// Sending the live attempt's commands failed transiently; try again later with the same ids.
    DispatchDeferred {
        /// What went wrong.
        error: String,
    },
    /// The live attempt could not be dispatched and never will be (T3 refused it, the prompt is
    /// invalid): the job fails.
    DispatchRejected {
        /// Why, in T3's words where it gave some.
        error: String,
    },
    /// T3 refused to set the live attempt up (its worktree or setup script failed) and undid it:
    /// the attempt failed, its thread is stopped (confirmed gone) before anything else, and the
    /// retry policy decides what follows.
    BootstrapFailed {
        /// Why, in T3's words.
        error: String,
    },
    /// The thread's turn completed.
    ThreadSucceeded,
    /// The thread's turn or session ended in error.
    ThreadFailed {
        /// T3's last error.
        error: String,
    },
    /// Someone interrupted the thread in T3 (afk did not ask for it): afk leaves it be.
    ThreadInterrupted,
    /// The thread stalled or ran past the turn timeout: it must be interrupted.
    TimedOut {
        /// Which limit, and by how much.
        reason: String,
    },
    /// The thread is gone from T3.
    ThreadLost,
    /// The running attempt's thread waits for a person (T3's shell shows a pending question or
    /// approval while its session runs): the job waits, without a stall or turn timeout.
    InputRequested {
        /// What the agent asks, in its words (or why afk cannot tell), for the status comment.
        question: String,
    },
    /// A person answered in T3 (the thread no longer waits and still runs): back to running.
    InputAnswered,
    /// Nobody answered within the answer timeout: the thread's session is stopped (never
    /// interrupted) and the job fails; a person (or a relabel) may requeue it.
    NobodyAnswered {
        /// How long the thread waited, and the limit, as a person reads them.
        waited: Duration,
        /// The answer timeout.
        limit: Duration,
    },
    /// The timed-out or lost attempt is dealt with: retry or give up.
    Settle,
    /// The job's issue was withdrawn (removed, closed, unlabelled), or a person cancelled it.
    Cancel {
        /// Why: stored with the job, it decides who may requeue it.
        reason: CancelReason,
    },
    /// The job is asked for again, with a fresh budget of attempts.
    Requeue {
        /// By whom: its source only after it withdrew the job, a person after any end short of
        /// success.
        by: RequeueBy,
    },
    /// The succeeded job's pull request was found: afk follows it (`in_review`).
    FollowPullRequest {
        /// The pull request, for the note (`#12` or its URL).
        pull_request: String,
    },
    /// A new turn on the job's thread (the same attempt, worktree and branch), whose command and
    /// message id the ledger stores with the transition, before anything is sent.
    FollowUp {
        /// Who asks.
        by: FollowUpBy,
        /// What it answers, one line (`check "ci/test" failed on 1a2b3c4`).
        cause: String,
        /// Follow-up turns the job had so far.
        used: u32,
        /// The most automatic follow-ups allowed (`followup.max_turns`, maybe lowered by AFK.md).
        max_turns: u32,
        /// The job's agent time budget is spent: a follow-up the pull request asks for is not
        /// started (the job waits for a person); a person's is.
        over_budget: Option<AgentTimeOverrun>,
    },
    /// The job's agent time budget is spent ([`AgentTimeOverrun`]): from `retry_wait` (the safe
    /// point before its next attempt) it gives up; from `running` (only when the running turn
    /// alone is past the budget) its attempt fails, its session is stopped and it gives up. Never
    /// from `needs_input`: a thread waiting for a person uses no agent time.
    OverBudget {
        /// Which budget, and its figures.
        overrun: AgentTimeOverrun,
    },
    /// The job's pull request was merged.
    PullRequestMerged,
    /// The job's pull request was closed without being merged.
    PullRequestClosed,
}

/// An action the runtime must carry out after the ledger has recorded the transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Send the live attempt's `thread.create` and `thread.turn.start` (with its stored ids).
    Dispatch,
    /// Stop the attempt's thread (its session; a thread that never started one is deleted),
    /// until T3's view shows it not working.
    StopThread,
    /// Send the follow-up turn recorded with the transition (`thread.turn.start` on the thread,
    /// with its stored ids).
    SendFollowUp,
}

/// How the job's wait for a person changes (stored with the job: when it began, what the agent
/// asks, and how long the live attempt waited in all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputWait {
    /// A wait begins now, for `question`.
    Began {
        /// What the agent asks.
        question: String,
    },
    /// The wait ends now: its length joins the live attempt's waiting time and the question is
    /// forgotten.
    Ended,
}

/// How the live attempt changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptChange {
    /// A new attempt starts, in state `dispatching`.
    Start {
        /// Its number within the job.
        number: AttemptNo,
    },
    /// Its dispatch failed transiently; one more try was used.
    DispatchRetry {
        /// Tries used so far.
        tries: u32,
        /// What went wrong.
        error: String,
    },
    /// Its thread is working.
    Running,
    /// The attempt, which succeeded, is reopened (`running`) for a follow-up turn on its thread.
    FollowUp {
        /// The follow-up's number within the job, 1 for the first.
        number: u32,
    },
    /// It ended.
    End {
        /// How.
        state: AttemptState,
        /// Why, when it did not succeed.
        error: Option<String>,
        /// Its thread must be stopped (recorded so that a crash before the stop is sent does not
        /// leave an agent working).
        stop_thread: bool,
    },
}

/// The outcome of an event: what to record, and what to do once it is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: JobState,
    /// The state after.
    pub to: JobState,
    /// How the live attempt changes, if it does.
    pub attempt: Option<AttemptChange>,
    /// The job is not to be picked up again before this instant (retry back-off).
    pub not_before: Option<DateTime<Utc>>,
    /// What to do once recorded.
    pub effect: Option<Effect>,
    /// One line for the event log.
    pub note: String,
    /// The job starts a new retry budget (a requeue): the ledger sets its `attempts_base` to its
    /// `attempts`.
    pub fresh_budget: bool,
    /// Why the job is cancelled: set exactly when `to` is `cancelled`.
    pub cancel_reason: Option<CancelReason>,
    /// How its wait for a person changes: set exactly when `from` or `to` (not both) is
    /// `needs_input`.
    pub input_wait: Option<InputWait>,
}

/// An event that is not allowed in the job's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event} is not allowed for a job in state {state}")]
pub struct InvalidTransition {
    /// The job's state.
    pub state: JobState,
    /// The event, briefly.
    pub event: String,
}

fn event_name(event: &Event) -> &'static str {
    match event {
        Event::StartAttempt => "start_attempt",
        Event::Refused { .. } => "refused",
        Event::Dispatched => "dispatched",
        Event::DispatchDeferred { .. } => "dispatch_deferred",
        Event::DispatchRejected { .. } => "dispatch_rejected",
        Event::BootstrapFailed { .. } => "bootstrap_failed",
        Event::ThreadSucceeded => "thread_succeeded",
        Event::ThreadFailed { .. } => "thread_failed",
        Event::ThreadInterrupted => "thread_interrupted",
        Event::TimedOut { .. } => "timed_out",
        Event::ThreadLost => "thread_lost",
        Event::InputRequested { .. } => "input_requested",
        Event::InputAnswered => "input_answered",
        Event::NobodyAnswered { .. } => "nobody_answered",
        Event::Settle => "settle",
        Event::Cancel { .. } => "cancel",
        Event::Requeue { .. } => "requeue",
        Event::FollowPullRequest { .. } => "follow_pull_request",
        Event::FollowUp { .. } => "follow_up",
        Event::OverBudget { .. } => "over_budget",
        Event::PullRequestMerged => "pull_request_merged",
        Event::PullRequestClosed => "pull_request_closed",
    }
}

/// The transition `event` causes for a job in `job`'s state, at `now`, under `policy`.
pub fn apply(
    job: JobStatus,
    event: &Event,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> Result<Transition, InvalidTransition> {
    use JobState as J;
    let invalid = || InvalidTransition {
        state: job.state,
        event: event_name(event).to_owned(),
    };
    let step =
        |to: JobState, attempt: Option<AttemptChange>, effect: Option<Effect>, note: String| Transition {
            from: job.state,
            to,
            attempt,
            not_before: None,
            effect,
            note,
            fresh_budget: false,
            cancel_reason: None,
            input_wait: None,
        };
    let used = job.attempts_used();
    // After an attempt ended without success: wait and retry, or give up after the last one.
    let retry_or_give_up = |attempt: Option<AttemptChange>, why: &str| {
        if used >= policy.max_attempts {
            step(
                J::GivenUp,
                attempt,
                None,
                format!("{why}; giving up after attempt {used} of {}", policy.max_attempts),
            )
        } else {
            let wait = policy.backoff(used);
            Transition {
                not_before: Some(later(now, wait)),
                ..step(
                    J::RetryWait,
                    attempt,
                    None,
                    format!(
                        "{why}; attempt {} of {} will start in {}s",
                        used + 1,
                        policy.max_attempts,
                        wait.as_secs_f64()
                    ),
                )
            }
        }
    };
    let requeued = || Transition {
        fresh_budget: true,
        ..step(
            J::Queued,
            None,
            None,
            format!("requeued with a fresh budget of {} attempts", policy.max_attempts),
        )
    };
    let end = |state: AttemptState, error: Option<String>, stop_thread: bool| {
        Some(AttemptChange::End {
            state,
            error,
            stop_thread,
        })
    };

    let transition = match (job.state, event) {
        // The budget was lowered (a config change) below what this job already used.
        (J::RetryWait, Event::StartAttempt) if used >= policy.max_attempts => step(
            J::GivenUp,
            None,
            None,
            format!(
                "giving up: {used} attempts used, the limit is now {}",
                policy.max_attempts
            ),
        ),
        (J::Queued | J::RetryWait, Event::StartAttempt) => {
            if used >= policy.max_attempts {
                return Err(invalid());
            }
            let number = AttemptNo(job.attempts + 1);
            step(
                J::Dispatching,
                Some(AttemptChange::Start { number }),
                Some(Effect::Dispatch),
                format!("attempt {} of {} dispatching", used + 1, policy.max_attempts),
            )
        }
        (J::Queued | J::RetryWait, Event::Refused { error }) => step(
            J::Failed,
            None,
            None,
            format!("cannot be dispatched: {}", first_line(error)),
        ),
        (J::Dispatching, Event::Dispatched) => step(
            J::Running,
            Some(AttemptChange::Running),
            None,
            format!("attempt {} running", job.attempts),
        ),
        (J::Dispatching, Event::DispatchDeferred { error }) => {
            let tries = job.dispatch_tries + 1;
            if tries >= policy.max_dispatch_tries {
                // The last try may have reached T3 even though its reply did not reach afk: the
                // thread may be working, so it is stopped before any retry starts beside it.
                Transition {
                    effect: Some(Effect::StopThread),
                    ..retry_or_give_up(
                        end(AttemptState::Failed, Some(error.clone()), true),
                        &format!("dispatch failed {tries} times, last: {}", first_line(error)),
                    )
                }
            } else {
                let wait = policy.backoff(tries);
                Transition {
                    not_before: Some(later(now, wait)),
                    ..step(
                        J::Dispatching,
                        Some(AttemptChange::DispatchRetry {
                            tries,
                            error: error.clone(),
                        }),
                        Some(Effect::Dispatch),
                        format!(
                            "dispatch try {tries} failed ({}); trying again in {}s",
                            first_line(error),
                            wait.as_secs_f64()
                        ),
                    )
                }
            }
        }
        (J::Dispatching, Event::DispatchRejected { error }) => step(
            J::Failed,
            end(AttemptState::Failed, Some(error.clone()), false),
            None,
            format!("dispatch refused: {}", first_line(error)),
        ),
        // T3 deletes a thread it could not set up; the stop confirms that from T3's view (and
        // deletes a thread left without a turn) before any retry starts beside it.
        (J::Dispatching, Event::BootstrapFailed { error }) => Transition {
            effect: Some(Effect::StopThread),
            ..retry_or_give_up(
                end(AttemptState::Failed, Some(error.clone()), true),
                &format!(
                    "attempt {} could not be set up in T3: {}",
                    job.attempts,
                    first_line(error)
                ),
            )
        },
        (J::Running | J::NeedsInput, Event::ThreadSucceeded) => step(
            J::Succeeded,
            end(AttemptState::Succeeded, None, false),
            None,
            format!("attempt {} succeeded", job.attempts),
        ),
        (J::Running | J::NeedsInput, Event::ThreadFailed { error }) => retry_or_give_up(
            end(AttemptState::Failed, Some(error.clone()), false),
            &format!("attempt {} failed: {}", job.attempts, first_line(error)),
        ),
        (J::Running | J::NeedsInput, Event::ThreadInterrupted) => Transition {
            cancel_reason: Some(CancelReason::InterruptedInT3),
            ..step(
                J::Cancelled,
                end(
                    AttemptState::Cancelled,
                    Some(CancelReason::InterruptedInT3.to_string()),
                    false,
                ),
                None,
                "the thread was interrupted in T3; afk leaves it be".into(),
            )
        },
        (J::Running, Event::TimedOut { reason }) => step(
            J::TimedOut,
            end(AttemptState::TimedOut, Some(reason.clone()), true),
            Some(Effect::StopThread),
            format!(
                "attempt {} timed out: {}; stopping its thread",
                job.attempts,
                first_line(reason)
            ),
        ),
        (J::Running | J::NeedsInput | J::Dispatching, Event::ThreadLost) => step(
            J::Lost,
            end(
                AttemptState::Lost,
                Some("the thread is gone from T3".into()),
                false,
            ),
            None,
            format!("attempt {}'s thread is gone from T3", job.attempts),
        ),
        (J::Running, Event::InputRequested { question }) => Transition {
            input_wait: Some(InputWait::Began {
                question: question.clone(),
            }),
            ..step(
                J::NeedsInput,
                None,
                None,
                format!(
                    "attempt {} waits for a person: {}",
                    job.attempts,
                    first_line(question)
                ),
            )
        },
        (J::NeedsInput, Event::InputAnswered) => step(
            J::Running,
            None,
            None,
            format!("attempt {}: a person answered; the agent goes on", job.attempts),
        ),
        (J::NeedsInput, Event::NobodyAnswered { waited, limit }) => {
            let why = format!(
                "nobody answered the agent's question within {} (it waited {}); its session was \
                 stopped; requeue the job to try again",
                humantime::format_duration(*limit),
                humantime::format_duration(Duration::from_secs(waited.as_secs()))
            );
            step(
                J::Failed,
                end(AttemptState::Failed, Some(why.clone()), true),
                Some(Effect::StopThread),
                format!("attempt {} failed: {why}", job.attempts),
            )
        }
        (J::Succeeded, Event::FollowPullRequest { pull_request }) => step(
            J::InReview,
            None,
            None,
            format!("following pull request {pull_request}: its checks, reviews and state"),
        ),
        (
            J::InReview,
            Event::FollowUp {
                by: FollowUpBy::PullRequest,
                cause,
                over_budget: Some(overrun),
                ..
            },
        ) => step(
            J::InReview,
            None,
            None,
            format!(
                "{}; not followed up: {overrun}, waiting for a person",
                first_line(cause)
            ),
        ),
        (J::RetryWait, Event::OverBudget { overrun }) => step(
            J::GivenUp,
            None,
            None,
            format!("giving up before attempt {}: {overrun}", used + 1),
        ),
        (J::Running, Event::OverBudget { overrun }) => {
            let why = format!("{overrun} (its running turn alone is past it); its session was stopped");
            step(
                J::GivenUp,
                end(AttemptState::Failed, Some(why.clone()), true),
                Some(Effect::StopThread),
                format!("attempt {} stopped: {why}", job.attempts),
            )
        }
        // The follow-up's limit is for what afk starts on its own; past it the job waits for a
        // person, who may still ask (a comment command), also on a job without a pull request.
        (
            J::InReview,
            Event::FollowUp {
                by: FollowUpBy::PullRequest,
                cause,
                used,
                max_turns,
                ..
            },
        ) if used >= max_turns => step(
            J::InReview,
            None,
            None,
            format!(
                "{}; not followed up: the limit of {max_turns} follow-up turns is reached, \
                 waiting for a person",
                first_line(cause)
            ),
        ),
        (
            J::InReview,
            Event::FollowUp {
                by,
                cause,
                used,
                max_turns,
                ..
            },
        )
        | (
            J::Succeeded,
            Event::FollowUp {
                by: by @ FollowUpBy::Person,
                cause,
                used,
                max_turns,
                ..
            },
        ) => {
            let number = used + 1;
            let of = match by {
                FollowUpBy::PullRequest => format!("follow-up {number} of {max_turns}"),
                FollowUpBy::Person => format!("follow-up {number}, asked by a person"),
            };
            step(
                J::Running,
                Some(AttemptChange::FollowUp { number }),
                Some(Effect::SendFollowUp),
                format!("{of} on attempt {}'s thread: {}", job.attempts, first_line(cause)),
            )
        }
        (J::InReview | J::Succeeded, Event::PullRequestMerged) => {
            step(J::Merged, None, None, "the pull request was merged".into())
        }
        (J::InReview | J::Succeeded, Event::PullRequestClosed) => step(
            J::Closed,
            None,
            None,
            "the pull request was closed without being merged".into(),
        ),
        // A follow-up turn is working when the pull request ends: nothing it does matters now.
        (J::Running | J::NeedsInput, Event::PullRequestMerged | Event::PullRequestClosed) => {
            let (to, what) = if *event == Event::PullRequestMerged {
                (J::Merged, "merged")
            } else {
                (J::Closed, "closed without being merged")
            };
            step(
                to,
                end(
                    AttemptState::Cancelled,
                    Some(format!("the pull request was {what}")),
                    true,
                ),
                Some(Effect::StopThread),
                format!("the pull request was {what} during a follow-up turn; stopping its thread"),
            )
        }
        (J::TimedOut, Event::Settle) => retry_or_give_up(None, "timed out"),
        (J::Lost, Event::Settle) => retry_or_give_up(None, "lost"),
        (state, Event::Cancel { reason }) if !state.is_final() => {
            let attempt = state
                .has_live_attempt()
                .then(|| end(AttemptState::Cancelled, Some(reason.to_string()), true))
                .flatten();
            let effect = attempt.as_ref().map(|_| Effect::StopThread);
            Transition {
                cancel_reason: Some(*reason),
                ..step(J::Cancelled, attempt, effect, format!("cancelled: {reason}"))
            }
        }
        (
            J::Cancelled,
            Event::Requeue {
                by: RequeueBy::Source(source),
            },
        ) if job.cancel_reason.and_then(CancelReason::undone_by) == Some(*source) => requeued(),
        (
            J::Cancelled | J::Failed | J::GivenUp | J::Closed,
            Event::Requeue {
                by: RequeueBy::Person,
            },
        ) => requeued(),
        (
            J::Cancelled | J::Failed | J::GivenUp | J::Closed,
            Event::Requeue {
                by: RequeueBy::Relabelled,
            },
        ) if job.cancel_reason != Some(CancelReason::IssueGone) => Transition {
            note: format!(
                "the trigger label was applied again: requeued with a fresh budget of {} attempts",
                policy.max_attempts
            ),
            ..requeued()
        },
        (
            J::Cancelled | J::Failed | J::GivenUp | J::Closed,
            Event::Requeue {
                by: RequeueBy::Commanded,
            },
        ) if job.cancel_reason != Some(CancelReason::IssueGone) => Transition {
            note: format!(
                "commanded in a comment: requeued with a fresh budget of {} attempts",
                policy.max_attempts
            ),
            ..requeued()
        },
        _ => return Err(invalid()),
    };
    // Every way out of `needs_input` ends the wait (its time is kept with the job).
    let transition = if job.state == J::NeedsInput && transition.to != J::NeedsInput {
        Transition {
            input_wait: Some(InputWait::Ended),
            ..transition
        }
    } else {
        transition
    };
    Ok(transition)
}

/// The first line of an outside error, for a note (the log, the event log): T3's `lastError`
/// can be a multi-kilobyte stack trace. The whole text stays with the attempt (and the job's
/// last error, `afk jobs --json`).
pub fn first_line(text: &str) -> std::borrow::Cow<'_, str> {
    let mut lines = text.trim().lines();
    let first = lines.next().unwrap_or_default().trim_end();
    if lines.next().is_some() {
        std::borrow::Cow::Owned(format!("{first} […]"))
    } else {
        std::borrow::Cow::Borrowed(first)
    }
}

/// `wait` after `now`, saturating at the last instant a date can hold: a back-off too long for
/// the calendar (`[retry] initial = "300000y"`) waits forever rather than panicking.
fn later(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|wait| now.checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState, attempts: u32) -> JobStatus {
        JobStatus {
            state,
            attempts,
            dispatch_tries: 0,
            attempts_base: 0,
            cancel_reason: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn run(status: JobStatus, event: Event) -> Result<Transition, InvalidTransition> {
        apply(status, &event, &RetryPolicy::default(), now())
    }

    #[test]
    fn a_job_whose_pull_request_was_closed_may_be_asked_for_again_and_a_merged_one_not() {
        for by in [RequeueBy::Person, RequeueBy::Relabelled, RequeueBy::Commanded] {
            let t = run(job(JobState::Closed, 1), Event::Requeue { by }).unwrap();
            assert_eq!(t.to, JobState::Queued, "{by:?}");
            assert!(t.fresh_budget);
            assert!(
                run(job(JobState::Merged, 1), Event::Requeue { by }).is_err(),
                "{by:?}"
            );
        }
    }

    #[test]
    fn a_job_runs_from_queued_to_succeeded() {
        let t = run(job(JobState::Queued, 0), Event::StartAttempt).unwrap();
        assert_eq!(t.to, JobState::Dispatching);
        assert_eq!(t.attempt, Some(AttemptChange::Start { number: AttemptNo(1) }));
        assert_eq!(t.effect, Some(Effect::Dispatch));
        let t = run(job(JobState::Dispatching, 1), Event::Dispatched).unwrap();
        assert_eq!(t.to, JobState::Running);
        let t = run(job(JobState::Running, 1), Event::ThreadSucceeded).unwrap();
        assert_eq!(t.to, JobState::Succeeded);
        assert!(t.to.is_final());
    }

    #[test]
    fn a_backoff_past_the_last_date_waits_until_then_without_panicking() {
        let policy = RetryPolicy {
            initial: Duration::from_secs(300_000 * 365 * 24 * 3600),
            cap: Duration::MAX,
            ..RetryPolicy::default()
        };
        let failed = Event::ThreadFailed { error: "boom".into() };
        for used in 1..3 {
            let t = apply(job(JobState::Running, used), &failed, &policy, now()).unwrap();
            assert_eq!(t.not_before, Some(DateTime::<Utc>::MAX_UTC));
        }
    }

    #[test]
    fn failed_attempts_wait_with_backoff_then_give_up_after_the_last() {
        let t = run(
            job(JobState::Running, 1),
            Event::ThreadFailed { error: "boom".into() },
        )
        .unwrap();
        assert_eq!(t.to, JobState::RetryWait);
        assert_eq!(t.not_before, Some(now() + chrono::Duration::seconds(10)));
        let t = run(
            job(JobState::Running, 2),
            Event::ThreadFailed { error: "boom".into() },
        )
        .unwrap();
        assert_eq!(t.not_before, Some(now() + chrono::Duration::seconds(20)));
        let t = run(
            job(JobState::Running, 3),
            Event::ThreadFailed { error: "boom".into() },
        )
        .unwrap();
        assert_eq!(t.to, JobState::GivenUp);
        // A budget lowered below what the job used gives up rather than waiting forever.
        assert_eq!(
            run(job(JobState::RetryWait, 3), Event::StartAttempt).unwrap().to,
            JobState::GivenUp
        );
    }

    #[test]
    fn a_failed_bootstrap_fails_the_attempt_and_leaves_the_rest_to_the_retry_policy() {
        let error = || Event::BootstrapFailed {
            error: "worktree: branch afk/issue-1 exists".into(),
        };
        let t = run(job(JobState::Dispatching, 1), error()).unwrap();
        assert_eq!(t.to, JobState::RetryWait);
        assert_eq!(
            t.effect,
            Some(Effect::StopThread),
            "T3's view must confirm the thread is gone before a retry"
        );
        assert!(matches!(
            t.attempt,
            Some(AttemptChange::End {
                state: AttemptState::Failed,
                stop_thread: true,
                ..
            })
        ));
        assert!(t.note.contains("branch afk/issue-1 exists"), "{}", t.note);
        assert_eq!(
            run(job(JobState::Dispatching, 3), error()).unwrap().to,
            JobState::GivenUp
        );
        assert!(
            run(job(JobState::Running, 1), error()).is_err(),
            "only a dispatch can fail so"
        );
    }

    #[test]
    fn a_timeout_stops_the_thread_before_the_retry_decision() {
        let t = run(
            job(JobState::Running, 1),
            Event::TimedOut {
                reason: "stalled".into(),
            },
        )
        .unwrap();
        assert_eq!(t.to, JobState::TimedOut);
        assert_eq!(t.effect, Some(Effect::StopThread));
        assert!(matches!(
            t.attempt,
            Some(AttemptChange::End {
                stop_thread: true,
                ..
            })
        ));
        let t = run(job(JobState::TimedOut, 1), Event::Settle).unwrap();
        assert_eq!(t.to, JobState::RetryWait);
    }

    #[test]
    fn transient_dispatch_errors_retry_the_same_attempt_then_fail_it() {
        let mut status = job(JobState::Dispatching, 1);
        let t = run(status, Event::DispatchDeferred { error: "503".into() }).unwrap();
        assert_eq!(t.to, JobState::Dispatching);
        assert_eq!(t.effect, Some(Effect::Dispatch));
        status.dispatch_tries = RetryPolicy::default().max_dispatch_tries - 1;
        let t = run(status, Event::DispatchDeferred { error: "503".into() }).unwrap();
        assert_eq!(t.to, JobState::RetryWait);
        assert!(matches!(
            t.attempt,
            Some(AttemptChange::End {
                state: AttemptState::Failed,
                ..
            })
        ));
    }

    #[test]
    fn permanent_dispatch_errors_fail_the_job() {
        let t = run(
            job(JobState::Dispatching, 1),
            Event::DispatchRejected { error: "400".into() },
        )
        .unwrap();
        assert_eq!(t.to, JobState::Failed);
        assert!(t.to.is_final());
    }

    #[test]
    fn cancelling_a_running_job_stops_its_thread_and_a_queued_one_needs_nothing() {
        let t = run(
            job(JobState::Running, 1),
            Event::Cancel {
                reason: CancelReason::Withdrawn,
            },
        )
        .unwrap();
        assert_eq!(t.to, JobState::Cancelled);
        assert_eq!(t.effect, Some(Effect::StopThread));
        let t = run(
            job(JobState::Queued, 0),
            Event::Cancel {
                reason: CancelReason::Withdrawn,
            },
        )
        .unwrap();
        assert_eq!(t.effect, None);
        assert_eq!(t.attempt, None);
        assert!(run(
            job(JobState::Succeeded, 1),
            Event::Cancel {
                reason: CancelReason::Withdrawn
            }
        )
        .is_err());
        assert_eq!(
            run(
                job(JobState::Cancelled, 1),
                Event::Requeue {
                    by: RequeueBy::Person
                }
            )
            .unwrap()
            .to,
            JobState::Queued
        );
    }

    #[test]
    fn a_job_that_cannot_be_dispatched_fails_without_an_attempt() {
        let t = run(
            job(JobState::Queued, 0),
            Event::Refused {
                error: "no project".into(),
            },
        )
        .unwrap();
        assert_eq!(t.to, JobState::Failed);
        assert_eq!(t.attempt, None);
        assert!(t.note.contains("no project"));
    }

    #[test]
    fn a_requeued_job_gets_a_fresh_budget() {
        let t = run(
            job(JobState::GivenUp, 3),
            Event::Requeue {
                by: RequeueBy::Person,
            },
        )
        .unwrap();
        assert_eq!(t.to, JobState::Queued);
        assert!(t.fresh_budget);
        let requeued = JobStatus {
            attempts_base: 3,
            ..job(JobState::Queued, 3)
        };
        let t = run(requeued, Event::StartAttempt).unwrap();
        assert_eq!(t.attempt, Some(AttemptChange::Start { number: AttemptNo(4) }));
        assert!(t.note.contains("attempt 1 of 3"), "{}", t.note);
    }

    #[test]
    fn running_out_of_dispatch_tries_stops_the_thread_that_may_exist() {
        let status = JobStatus {
            dispatch_tries: RetryPolicy::default().max_dispatch_tries - 1,
            ..job(JobState::Dispatching, 1)
        };
        let t = run(
            status,
            Event::DispatchDeferred {
                error: "timeout".into(),
            },
        )
        .unwrap();
        assert_eq!(t.effect, Some(Effect::StopThread));
        assert!(matches!(
            t.attempt,
            Some(AttemptChange::End {
                stop_thread: true,
                ..
            })
        ));
    }

    #[test]
    fn a_cancelled_job_keeps_its_reason_and_only_its_cause_may_undo_it() {
        let t = run(
            job(JobState::Running, 1),
            Event::Cancel {
                reason: CancelReason::FileRemoved,
            },
        )
        .unwrap();
        assert_eq!(t.cancel_reason, Some(CancelReason::FileRemoved));
        assert_eq!(t.note, "cancelled: its issue file was removed");
        let t = run(job(JobState::Running, 1), Event::ThreadInterrupted).unwrap();
        assert_eq!(
            (t.to, t.cancel_reason),
            (JobState::Cancelled, Some(CancelReason::InterruptedInT3))
        );
        assert_eq!(
            run(job(JobState::Running, 1), Event::ThreadSucceeded)
                .unwrap()
                .cancel_reason,
            None
        );

        use JobSource::{GitHub, Local};
        use RequeueBy::{Commanded, Person, Relabelled, Source};
        let cancelled = |reason| JobStatus {
            cancel_reason: Some(reason),
            ..job(JobState::Cancelled, 1)
        };
        // (job, who asks, may it come back)
        let cases = [
            (cancelled(CancelReason::FileRemoved), Source(Local), true),
            (cancelled(CancelReason::FileRemoved), Source(GitHub), false),
            (cancelled(CancelReason::Withdrawn), Source(GitHub), true),
            (cancelled(CancelReason::Withdrawn), Source(Local), false),
            (cancelled(CancelReason::InterruptedInT3), Source(Local), false),
            (cancelled(CancelReason::InterruptedInT3), Source(GitHub), false),
            (cancelled(CancelReason::ByHand), Source(Local), false),
            (cancelled(CancelReason::IssueGone), Source(GitHub), false),
            (cancelled(CancelReason::IssueGone), Relabelled, false),
            (cancelled(CancelReason::ByHand), Relabelled, true),
            (cancelled(CancelReason::Withdrawn), Relabelled, true),
            (job(JobState::Failed, 1), Relabelled, true),
            (job(JobState::GivenUp, 3), Relabelled, true),
            (job(JobState::Succeeded, 1), Relabelled, false),
            (job(JobState::Running, 1), Relabelled, false),
            (job(JobState::Queued, 0), Relabelled, false),
            (cancelled(CancelReason::IssueGone), Commanded, false),
            (cancelled(CancelReason::StoppedByCommand), Commanded, true),
            (cancelled(CancelReason::InterruptedInT3), Commanded, true),
            (job(JobState::Failed, 1), Commanded, true),
            (job(JobState::GivenUp, 3), Commanded, true),
            (job(JobState::Succeeded, 1), Commanded, false),
            (job(JobState::Running, 1), Commanded, false),
            (job(JobState::RetryWait, 1), Commanded, false),
            (
                cancelled(CancelReason::StoppedByCommand),
                Source(JobSource::GitHub),
                false,
            ),
            (cancelled(CancelReason::StoppedByCommand), Person, true),
            (cancelled(CancelReason::InterruptedInT3), Person, true),
            (cancelled(CancelReason::ByHand), Person, true),
            (job(JobState::Failed, 1), Person, true),
            (job(JobState::GivenUp, 3), Person, true),
            (job(JobState::Failed, 1), Source(Local), false),
            (job(JobState::GivenUp, 3), Source(GitHub), false),
            (job(JobState::Succeeded, 1), Person, false),
            (job(JobState::Running, 1), Person, false),
            (job(JobState::Queued, 0), Person, false),
        ];
        for (status, by, may) in cases {
            let outcome = run(status, Event::Requeue { by });
            assert_eq!(
                outcome.is_ok(),
                may,
                "{:?} job cancelled for {:?}, requeued by {by:?}: {outcome:?}",
                status.state,
                status.cancel_reason
            );
            if let Ok(t) = outcome {
                assert_eq!((t.to, t.cancel_reason), (JobState::Queued, None));
                assert!(t.fresh_budget);
            }
        }
    }

    #[test]
    fn a_thread_that_asks_waits_for_a_person_and_goes_on_when_answered() {
        let asks = || Event::InputRequested {
            question: "May I delete the old API?\nDetails follow".into(),
        };
        let t = run(job(JobState::Running, 1), asks()).unwrap();
        assert_eq!(t.to, JobState::NeedsInput);
        assert_eq!(
            (t.attempt.clone(), t.effect),
            (None, None),
            "the attempt stays live, untouched"
        );
        assert_eq!(
            t.input_wait,
            Some(InputWait::Began {
                question: "May I delete the old API?\nDetails follow".into()
            })
        );
        assert!(
            t.note
                .contains("waits for a person: May I delete the old API? […]"),
            "{}",
            t.note
        );
        assert!(JobState::NeedsInput.has_live_attempt());
        assert!(!JobState::NeedsInput.is_final());

        let t = run(job(JobState::NeedsInput, 1), Event::InputAnswered).unwrap();
        assert_eq!(
            (t.to, t.attempt.clone(), t.effect),
            (JobState::Running, None, None)
        );
        assert_eq!(t.input_wait, Some(InputWait::Ended));

        // (event, allowed from needs_input, why)
        let cases = [
            (
                Event::TimedOut {
                    reason: "stalled".into(),
                },
                false,
                "a waiting thread never times out",
            ),
            (
                Event::InputRequested {
                    question: "again".into(),
                },
                false,
                "it already waits",
            ),
            (Event::Settle, false, "nothing to settle"),
            (Event::Dispatched, false, "it runs"),
            (Event::StartAttempt, false, "it has a live attempt"),
        ];
        for (event, allowed, why) in cases {
            assert_eq!(run(job(JobState::NeedsInput, 1), event).is_ok(), allowed, "{why}");
        }
        assert!(
            run(job(JobState::Queued, 0), asks()).is_err(),
            "only a running thread asks"
        );
        assert!(run(job(JobState::Running, 1), Event::InputAnswered).is_err());
    }

    #[test]
    fn a_waiting_job_ends_as_a_running_one_would_and_its_wait_ends_with_it() {
        let from = |event| run(job(JobState::NeedsInput, 1), event).unwrap();
        // (event, the job's state after, the attempt's state, stop its thread)
        let cases = [
            (
                Event::ThreadSucceeded,
                JobState::Succeeded,
                AttemptState::Succeeded,
                false,
            ),
            (
                Event::ThreadFailed { error: "boom".into() },
                JobState::RetryWait,
                AttemptState::Failed,
                false,
            ),
            (
                Event::ThreadInterrupted,
                JobState::Cancelled,
                AttemptState::Cancelled,
                false,
            ),
            (Event::ThreadLost, JobState::Lost, AttemptState::Lost, false),
            (
                Event::Cancel {
                    reason: CancelReason::Withdrawn,
                },
                JobState::Cancelled,
                AttemptState::Cancelled,
                true,
            ),
        ];
        for (event, to, attempt, stop) in cases {
            let what = format!("{event:?}");
            let t = from(event);
            assert_eq!(t.to, to, "{what}");
            assert!(
                matches!(t.attempt, Some(AttemptChange::End { state, stop_thread, .. }) if state == attempt && stop_thread == stop),
                "{what}: {:?}",
                t.attempt
            );
            assert_eq!(t.input_wait, Some(InputWait::Ended), "{what}");
            assert_eq!(t.effect.is_some(), stop, "{what}: a cancel stops the session");
        }
        // From running nothing about a wait changes.
        let t = run(job(JobState::Running, 1), Event::ThreadSucceeded).unwrap();
        assert_eq!(t.input_wait, None);
    }

    #[test]
    fn nobody_answering_stops_the_session_and_fails_the_job_for_a_person_to_requeue() {
        let t = run(
            job(JobState::NeedsInput, 1),
            Event::NobodyAnswered {
                waited: Duration::from_secs(86_401),
                limit: Duration::from_secs(86_400),
            },
        )
        .unwrap();
        assert_eq!(t.to, JobState::Failed);
        assert!(t.to.is_final(), "not retried: the agent would only ask again");
        assert_eq!(t.effect, Some(Effect::StopThread));
        assert!(matches!(
            t.attempt,
            Some(AttemptChange::End {
                state: AttemptState::Failed,
                stop_thread: true,
                ..
            })
        ));
        assert!(
            t.note
                .contains("nobody answered the agent's question within 1day"),
            "{}",
            t.note
        );
        assert_eq!(t.input_wait, Some(InputWait::Ended));
        for by in [RequeueBy::Person, RequeueBy::Relabelled] {
            assert!(
                run(job(JobState::Failed, 1), Event::Requeue { by }).is_ok(),
                "{by:?}"
            );
        }
        assert!(run(
            job(JobState::Running, 1),
            Event::NobodyAnswered {
                waited: Duration::ZERO,
                limit: Duration::ZERO
            }
        )
        .is_err());
    }

    #[test]
    fn events_out_of_place_are_refused() {
        assert!(run(job(JobState::Queued, 0), Event::Dispatched).is_err());
        assert!(run(job(JobState::Succeeded, 1), Event::StartAttempt).is_err());
        assert!(run(job(JobState::Running, 1), Event::Settle).is_err());
    }

    #[test]
    fn notes_carry_the_first_line_of_an_outside_error_and_the_attempt_all_of_it() {
        let error =
            "ProviderAdapterProcessError: cannot spawn\n    at startSession (x.ts:1:2)\n  [cause]: ENOENT";
        let t = run(
            job(JobState::Running, 1),
            Event::ThreadFailed { error: error.into() },
        )
        .unwrap();
        assert!(
            t.note
                .contains("failed: ProviderAdapterProcessError: cannot spawn […]"),
            "{}",
            t.note
        );
        assert!(!t.note.contains('\n'), "{}", t.note);
        assert!(
            matches!(&t.attempt, Some(AttemptChange::End { error: Some(kept), .. }) if kept == error),
            "{:?}",
            t.attempt
        );
        assert_eq!(first_line("one line"), "one line");
    }

    fn follow_up(by: FollowUpBy, used: u32) -> Event {
        Event::FollowUp {
            by,
            cause: "check \"ci/test\" failed on 1a2b3c4".into(),
            used,
            max_turns: 3,
            over_budget: None,
        }
    }

    fn overrun() -> AgentTimeOverrun {
        AgentTimeOverrun {
            used: Duration::from_secs(4 * 3600 + 12 * 60),
            limit: Duration::from_secs(4 * 3600),
        }
    }

    #[test]
    fn a_job_over_its_agent_time_stops_at_the_next_safe_point_with_its_figures() {
        let over = || Event::OverBudget { overrun: overrun() };
        // Before its next attempt: it gives up, nothing to stop.
        let t = run(job(JobState::RetryWait, 1), over()).unwrap();
        assert_eq!(t.to, JobState::GivenUp);
        assert!(t.to.is_final());
        assert_eq!((t.attempt, t.effect), (None, None));
        assert_eq!(
            t.note,
            "giving up before attempt 2: agent time budget: used 4h 12m of 4h"
        );
        // Mid-turn (the turn alone is past the budget): its session is stopped, recorded first.
        let t = run(job(JobState::Running, 2), over()).unwrap();
        assert_eq!(t.to, JobState::GivenUp);
        assert_eq!(t.effect, Some(Effect::StopThread));
        assert!(matches!(
            &t.attempt,
            Some(AttemptChange::End { state: AttemptState::Failed, stop_thread: true, error: Some(e) })
                if e.contains("used 4h 12m of 4h")
        ));
        assert!(
            t.note.starts_with("attempt 2 stopped: agent time budget"),
            "{}",
            t.note
        );
        // Never a thread waiting for a person, nothing not in flight, nothing twice.
        for state in [
            JobState::NeedsInput,
            JobState::Queued,
            JobState::Dispatching,
            JobState::GivenUp,
            JobState::Succeeded,
            JobState::InReview,
        ] {
            assert!(run(job(state, 1), over()).is_err(), "{state}");
        }
        // A requeue after it gives a fresh budget, as after any give-up.
        let t = run(
            job(JobState::GivenUp, 2),
            Event::Requeue {
                by: RequeueBy::Person,
            },
        )
        .unwrap();
        assert!(t.fresh_budget);
    }

    #[test]
    fn a_job_over_its_agent_time_is_not_followed_up_on_its_own_but_may_be_by_a_person() {
        let spent = |by| Event::FollowUp {
            by,
            cause: "check \"ci/test\" failed on 1a2b3c4".into(),
            used: 0,
            max_turns: 3,
            over_budget: Some(overrun()),
        };
        let t = run(job(JobState::InReview, 1), spent(FollowUpBy::PullRequest)).unwrap();
        assert_eq!(t.to, JobState::InReview);
        assert_eq!((t.attempt, t.effect), (None, None));
        assert!(
            t.note
                .ends_with("not followed up: agent time budget: used 4h 12m of 4h, waiting for a person"),
            "{}",
            t.note
        );
        let t = run(job(JobState::InReview, 1), spent(FollowUpBy::Person)).unwrap();
        assert_eq!(t.to, JobState::Running);
    }

    #[test]
    fn a_pull_request_is_followed_through_follow_ups_on_the_same_attempt_to_merged() {
        let t = run(
            job(JobState::Succeeded, 1),
            Event::FollowPullRequest {
                pull_request: "#7".into(),
            },
        )
        .unwrap();
        assert_eq!(t.to, JobState::InReview);
        assert!(!t.to.is_final() && !t.to.has_live_attempt());
        let t = run(job(JobState::InReview, 1), follow_up(FollowUpBy::PullRequest, 0)).unwrap();
        assert_eq!(t.to, JobState::Running);
        assert_eq!(t.attempt, Some(AttemptChange::FollowUp { number: 1 }));
        assert_eq!(t.effect, Some(Effect::SendFollowUp));
        assert!(t.note.contains("follow-up 1 of 3"), "{}", t.note);
        // The follow-up turn completing is the attempt succeeding again.
        assert_eq!(
            run(job(JobState::Running, 1), Event::ThreadSucceeded).unwrap().to,
            JobState::Succeeded
        );
        let t = run(job(JobState::InReview, 1), Event::PullRequestMerged).unwrap();
        assert_eq!(t.to, JobState::Merged);
        assert!(t.to.is_final());
        let t = run(job(JobState::InReview, 1), Event::PullRequestClosed).unwrap();
        assert_eq!(t.to, JobState::Closed);
        assert!(t.to.is_final());
        // Nothing follows a merged or closed job.
        for state in [JobState::Merged, JobState::Closed] {
            assert!(run(job(state, 1), follow_up(FollowUpBy::Person, 0)).is_err());
            assert!(run(job(state, 1), Event::PullRequestMerged).is_err());
        }
    }

    #[test]
    fn past_the_follow_up_limit_the_job_waits_for_a_person_who_may_still_ask() {
        let t = run(job(JobState::InReview, 1), follow_up(FollowUpBy::PullRequest, 3)).unwrap();
        assert_eq!(t.to, JobState::InReview);
        assert_eq!((t.attempt, t.effect), (None, None));
        assert!(t.note.contains("waiting for a person"), "{}", t.note);
        let t = run(job(JobState::InReview, 1), follow_up(FollowUpBy::Person, 3)).unwrap();
        assert_eq!(t.attempt, Some(AttemptChange::FollowUp { number: 4 }));
        // A person may follow up a job that succeeded without a pull request; the follow-through
        // may not.
        assert!(run(job(JobState::Succeeded, 1), follow_up(FollowUpBy::PullRequest, 0)).is_err());
        assert_eq!(
            run(job(JobState::Succeeded, 1), follow_up(FollowUpBy::Person, 0))
                .unwrap()
                .to,
            JobState::Running
        );
        // No follow-up while a turn is working or after the job ended otherwise.
        for state in [
            JobState::Running,
            JobState::Dispatching,
            JobState::GivenUp,
            JobState::Cancelled,
        ] {
            assert!(
                run(job(state, 1), follow_up(FollowUpBy::Person, 0)).is_err(),
                "{state}"
            );
        }
    }

    #[test]
    fn a_pull_request_ending_during_a_follow_up_turn_stops_its_thread() {
        let t = run(job(JobState::Running, 1), Event::PullRequestMerged).unwrap();
        assert_eq!(t.to, JobState::Merged);
        assert_eq!(t.effect, Some(Effect::StopThread));
        assert!(matches!(
            t.attempt,
            Some(AttemptChange::End {
                state: AttemptState::Cancelled,
                stop_thread: true,
                ..
            })
        ));
        // A job in review can still be cancelled (its issue withdrawn); there is no thread to stop.
        let t = run(
            job(JobState::InReview, 1),
            Event::Cancel {
                reason: CancelReason::Withdrawn,
            },
        )
        .unwrap();
        assert_eq!((t.to, t.effect), (JobState::Cancelled, None));
    }
}
