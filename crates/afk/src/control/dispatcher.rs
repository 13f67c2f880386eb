//! The dispatcher: starts attempts for ready jobs in priority order within the limits, and
//! finishes dispatches that a crash or a T3 outage interrupted, with the ids chosen before the
//! first request.
//!
//! The decisions are the plain functions [`dispatch_event`] (how T3 answered → the job's event)
//! and [`resume_step`] (T3's view of an interrupted dispatch → what to send or record); the
//! [`Dispatcher`] reads the ledger and T3's view, records the attempt before sending it, sends,
//! and records the outcome.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use afk_core::{AttemptNo, Effect, Event, JobId, JobState, Repo};
use afk_ledger::{Attempt, Job, NewAttempt, WatchedAttempt};
use t3_client::{
    DispatchError, DispatchIds, DispatchPlan, DispatchStage, Fleet, IssueRef, T3Client, T3Error, ThreadId,
    WorktreePlan,
};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::budget::{job_gate, RepoHolds};
use super::intake::Intake;
use super::record::{Recorder, ToRecord};
use super::{job_span, ControlError, Limits, TickClock};
use crate::policy::{attempt_branch, Dispatch, Policies, RepoPolicy, RepoTarget, Resolution};

/// The event a dispatch's outcome calls for; `None` when nothing is to be recorded: T3 refused
/// afk's operate token (missing, empty, expired or without scope), which is never the job's
/// fault, so the same attempt is tried again next tick without spending its tries.
///
/// - accepted: running;
/// - transient (no reply, 5xx, 429, a dropped socket): deferred, same ids, later;
/// - a retried bootstrap whose thread exists: deferred, since an earlier try landed, failed or is
///   still under way and only T3's view of the thread tells which (see [`resume_step`]);
/// - a command T3 failed without saying whether it was refused or failed inside (over `/ws`
///   `OrchestrationDispatchCommandError`, over HTTP a 500 `orchestration_dispatch_failed`):
///   deferred, retried with the same ids up to `retry.max_dispatch_tries`; a bootstrap T3 undid
///   is then seen in T3's view (its thread deleted: [`resume_step`]);
/// - a bootstrap refused with another error: the attempt failed, and the retry policy decides
///   (a new attempt has new ids and its own branch);
/// - T3's git could not be read or tidied before finishing a half-made thread
///   ([`DispatchStage::Recovery`]: nothing was sent for the thread): deferred;
/// - a reply T3 sent but not in its contract's shape: deferred, since the command may have been
///   applied and the next view resolves it with the same ids;
/// - anything else T3 refused (a 4xx, a refused command, a prompt too long): rejected, the job
///   fails with T3's reason.
pub fn dispatch_event(outcome: &Result<(), DispatchError>, thread: &ThreadId) -> Option<Event> {
    let e = match outcome {
        Ok(()) => return Some(Event::Dispatched),
        Err(e) => e,
    };
    let error = e.error.to_string();
    let bootstrap = e.stage == DispatchStage::Bootstrap;
    Some(if e.error.is_credential_problem() {
        return None;
    } else if e.stage == DispatchStage::Recovery
        || e.error.is_transient()
        || e.error.is_dispatch_failure()
        || (bootstrap && e.error.is_existing_thread(thread))
        || matches!(e.error, T3Error::MalformedReply { .. })
    {
        Event::DispatchDeferred { error }
    } else if bootstrap && e.error.is_refusal() {
        Event::BootstrapFailed { error }
    } else {
        Event::DispatchRejected { error }
    })
}

/// What T3's view shows of an interrupted dispatch's thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenThread {
    /// Its turn has started (or ended).
    pub has_turn: bool,
    /// T3 deleted it.
    pub deleted: bool,
    /// It has a session (T3 took its turn start and started, or failed to start, its agent).
    pub has_session: bool,
    /// It has a worktree (`worktreePath`).
    pub has_worktree: bool,
}

/// How to carry on with an attempt left in `dispatching`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeStep {
    /// Record this event: the dispatch landed, or T3's view already tells how it ended.
    Record(Event),
    /// Send the one worktree bootstrap command again (T3 has no thread).
    Bootstrap,
    /// Finish a half-made thread (a bootstrap cut off after T3 created the thread, before its
    /// worktree): the bootstrap again without creating the thread, same ids.
    FinishBootstrap,
    /// Send `thread.turn.start` (the thread exists without its turn: over HTTP, or a bootstrap
    /// cut off after its worktree was made).
    Turn,
    /// Send `thread.create` and `thread.turn.start` (over HTTP, no thread yet).
    CreateAndTurn,
    /// Send nothing yet: a bootstrap this process sent for the thread was never answered and may
    /// still be running in T3 (a call that timed out, a tick cut short), and finishing the thread
    /// now would start a second setup beside it, or the agent before its setup script is done.
    Wait,
}

/// How long a bootstrap of this process's that was never answered may still be running in T3
/// (its setup script included); after that a half-made thread is finished all the same.
pub const UNANSWERED_PATIENCE: Duration = Duration::from_secs(300);

/// What to do for an attempt left in `dispatching` whose thread T3 shows as `thread` (`None`:
/// T3 has none), dispatched with worktrees or not. Everything is sent with the attempt's recorded
/// ids: T3 deduplicates command ids, so even a stale view cannot make a second thread.
///
/// A worktree thread without a session is not being set up when no bootstrap of this process
/// for it may still be running (`unanswered`: one was sent within [`UNANSWERED_PATIENCE`] and
/// never answered): T3 left it half made (a client that died mid-bootstrap; T3 does not clean
/// up) and it is finished at once, with the same attempt. While one may still be running, it is
/// waited for.
pub fn resume_step(thread: Option<SeenThread>, worktrees: bool, unanswered: bool) -> ResumeStep {
    let half_made = matches!(
        thread,
        Some(SeenThread {
            has_turn: false,
            deleted: false,
            has_session: false,
            ..
        })
    );
    if worktrees && half_made && unanswered {
        return ResumeStep::Wait;
    }
    match (thread, worktrees) {
        (Some(SeenThread { has_turn: true, .. }), _) => ResumeStep::Record(Event::Dispatched),
        // With worktrees T3 sets the thread up in one command and deletes it if a step fails.
        (Some(SeenThread { deleted: true, .. }), true) => ResumeStep::Record(Event::BootstrapFailed {
            error: "T3 deleted the thread while setting it up (its worktree or setup script failed)".into(),
        }),
        // T3 took the turn start: its session is starting (or could not start); the watcher
        // follows it from here.
        (
            Some(SeenThread {
                has_session: true, ..
            }),
            _,
        ) => ResumeStep::Record(Event::Dispatched),
        (
            Some(SeenThread {
                has_worktree: true, ..
            }),
            true,
        ) => ResumeStep::Turn,
        (Some(_), true) => ResumeStep::FinishBootstrap,
        (None, true) => ResumeStep::Bootstrap,
        (Some(_), false) => ResumeStep::Turn,
        (None, false) => ResumeStep::CreateAndTurn,
    }
}

/// How T3 took afk's operate token since it was last asked: refused (no job's fault; nothing was
/// recorded, and nothing more is sent this tick), or accepted by a dispatch that got through.
#[derive(Debug, Default)]
pub(crate) struct TokenCheck {
    /// The last refusal: T3 answered 401/403, or the token's provider had none.
    pub(crate) refused: Option<T3Error>,
    /// A dispatch went through.
    pub(crate) accepted: bool,
}

/// Starts and resumes attempts through the operate client.
pub(crate) struct Dispatcher {
    t3: T3Client,
    limits: Limits,
    tokens: TokenCheck,
    /// Send nothing this tick: afk leaves T3 alone while a refused operate token backs off.
    held: bool,
    /// The threads whose dispatch this process sent and T3 never answered (a call that timed out
    /// or was cut off, a tick that ended on a ledger error with sends in flight), and when it was
    /// sent: their bootstrap may still be running in T3 ([`resume_step`]).
    unanswered: HashMap<ThreadId, std::time::Instant>,
    /// The repositories whose new jobs wait for the next UTC day (`[budget]`).
    holds: RepoHolds,
}

impl Dispatcher {
    pub(crate) fn new(t3: T3Client, limits: Limits) -> Self {
        Self {
            t3,
            limits,
            tokens: TokenCheck::default(),
            held: false,
            unanswered: HashMap::new(),
            holds: RepoHolds::default(),
        }
    }

    /// The operate client's T3 URL.
    pub(crate) fn base_url(&self) -> &str {
        self.t3.base_url()
    }

    /// How T3 took the operate token since the last call.
    pub(crate) fn take_token_check(&mut self) -> TokenCheck {
        std::mem::take(&mut self.tokens)
    }

    /// Resumes every attempt left in `dispatching` whose back-off has passed, as [`resume_step`]
    /// says from T3's view; sends nothing unless `may_send` (afk leaves T3 alone while a refused
    /// operate token backs off), and nothing more once T3 refused the token. What T3's view
    /// already tells is recorded in one transaction; the sends go up to
    /// [`Limits::parallel_dispatches`] at once (a checkout's bootstraps one after another, in
    /// the order of `live`), their outcomes recorded in batches as they arrive.
    pub(crate) async fn resume(
        &mut self,
        recorder: &mut Recorder,
        policies: &Policies,
        fleet: &Fleet,
        live: &[&WatchedAttempt],
        may_send: bool,
        clock: TickClock,
    ) -> Result<(), ControlError> {
        let now = clock.start();
        self.held = !may_send;
        // Past its patience an unanswered send no longer matters: forget it.
        self.unanswered
            .retain(|_, sent| sent.elapsed() < UNANSWERED_PATIENCE);
        let mut seen: Vec<(Job, Event)> = Vec::new();
        let mut resends: VecDeque<Box<Resend>> = VecDeque::new();
        for watched in live {
            if watched.job_state != JobState::Dispatching || watched.job_not_before.is_some_and(|t| t > now) {
                continue;
            }
            let span = job_span(
                &watched.issue,
                watched.job_id,
                Some(watched.number),
                Some(&watched.thread_id),
            );
            match self
                .resumption(recorder, policies, fleet, watched, span.clone())
                .instrument(span)
                .await?
            {
                Resumption::Nothing => {}
                Resumption::Record(job, event) => seen.push((job, event)),
                Resumption::Send(resend) => resends.push_back(resend),
            }
        }
        let at = clock.now();
        let moves: Vec<ToRecord<'_>> = (seen.iter())
            .map(|(job, event)| ToRecord {
                job,
                event,
                new_attempt: None,
                at,
            })
            .collect();
        recorder.record_all(&moves).await?;
        if self.held || resends.is_empty() {
            return Ok(());
        }
        let parallel = self.limits.parallel_dispatches.max(1);
        let mut sends: JoinSet<Sent> = JoinSet::new();
        let mut checkouts: HashMap<String, oneshot::Receiver<()>> = HashMap::new();
        loop {
            while sends.len() < parallel && self.tokens.refused.is_none() {
                let Some(resend) = resends.pop_front() else {
                    break;
                };
                self.unanswered
                    .insert(resend.plan.ids.thread_id.clone(), std::time::Instant::now());
                let turn = resend.worktree.as_ref().map(|w| {
                    let (done, next) = oneshot::channel();
                    (checkouts.insert(w.project_cwd.clone(), next), done)
                });
                sends.spawn(resend.send(turn));
            }
            let Some(joined) = sends.join_next().await else {
                break;
            };
            let mut arrived: Vec<Sent> = joined_sent(joined).into_iter().collect();
            while let Some(joined) = sends.try_join_next() {
                arrived.extend(joined_sent(joined));
            }
            let answers = self.read_answers(arrived);
            self.record_batch(recorder, answers, Vec::new(), &mut Counts::default(), clock)
                .await?;
        }
        Ok(())
    }

    /// What to do for the dispatch of `watched`, as [`resume_step`] says from `fleet`: record
    /// what T3's view tells, send again (with the same ids), or nothing yet.
    async fn resumption(
        &self,
        recorder: &Recorder,
        policies: &Policies,
        fleet: &Fleet,
        watched: &WatchedAttempt,
        span: tracing::Span,
    ) -> Result<Resumption, ControlError> {
        // The whole rows (issue, prompt) only for the few attempts being dispatched.
        let ledger = recorder.ledger();
        let (Some(job), Some(attempt)) = (
            ledger.job(watched.job_id).await?,
            ledger.live_attempt(watched.job_id).await?,
        ) else {
            return Ok(Resumption::Nothing);
        };
        // The repository's configured part only: the rest of the policy is in the attempt.
        let target = policies.configured(&job.issue.repo).ok().map(|p| p.target);
        let plan = plan_of(&job, &attempt, target.as_ref());
        // Created exactly as first planned: with the model the repository chose, if any.
        let client = client_for(&self.t3, None, attempt.model.as_deref());
        if fleet.unreadable(&plan.ids.thread_id).is_some() {
            // Unknown: T3 lists the thread but afk cannot read it; wait until it can.
            return Ok(Resumption::Nothing);
        }
        let seen = fleet.thread(&plan.ids.thread_id).map(|t| SeenThread {
            has_turn: t.latest_turn.is_some(),
            deleted: t.deleted_at.is_some(),
            has_session: t.session.is_some(),
            has_worktree: t.worktree_path().is_some(),
        });
        let worktrees = target.as_ref().and_then(worktree_target);
        let in_doubt = self
            .unanswered
            .get(&plan.ids.thread_id)
            .is_some_and(|sent| sent.elapsed() < UNANSWERED_PATIENCE);
        let step = match resume_step(seen, worktrees.is_some(), in_doubt) {
            // T3's own words on the failed setup came with the try that failed (its answer
            // deferred the attempt): the job shows them first.
            ResumeStep::Record(Event::BootstrapFailed { error }) => match &attempt.last_error {
                Some(answer) => ResumeStep::Record(Event::BootstrapFailed {
                    error: format!("{answer} ({error})"),
                }),
                None => ResumeStep::Record(Event::BootstrapFailed { error }),
            },
            step => step,
        };
        let sends = !matches!(step, ResumeStep::Record(_) | ResumeStep::Wait);
        if sends && (self.held || self.tokens.refused.is_some()) {
            return Ok(Resumption::Nothing);
        }
        let how = match step {
            ResumeStep::Wait => return Ok(Resumption::Nothing),
            ResumeStep::Record(event) => return Ok(Resumption::Record(job, event)),
            ResumeStep::Bootstrap | ResumeStep::FinishBootstrap => {
                let Some((target, settings)) = target.as_ref().zip(worktrees) else {
                    return Ok(Resumption::Nothing);
                };
                match worktree_plan(target, settings, fleet) {
                    Ok(worktree) if step == ResumeStep::FinishBootstrap => {
                        tracing::info!(
                            "{} attempt {}: T3 left thread {} half made (no worktree, no session); finishing its setup",
                            job.issue,
                            attempt.number,
                            plan.ids.thread_id
                        );
                        // A branch another thread of T3's records is never adopted (its worktree
                        // would be removed): T3 then refuses the finish, and the attempt ends.
                        let foreign = fleet.threads().any(|t| {
                            t.id() != plan.ids.thread_id && t.branch() == Some(plan.branch.as_str())
                        });
                        if foreign {
                            tracing::warn!(
                                "{} attempt {}: branch {} is another T3 thread's; not adopting it",
                                job.issue,
                                attempt.number,
                                plan.branch
                            );
                        }
                        Resent::Finish {
                            worktree,
                            may_adopt: !foreign,
                        }
                    }
                    Ok(worktree) => Resent::Bootstrap(worktree),
                    Err(error) => {
                        return Ok(Resumption::Record(job, Event::DispatchRejected { error }));
                    }
                }
            }
            ResumeStep::Turn => Resent::Turn,
            ResumeStep::CreateAndTurn => Resent::CreateAndTurn,
        };
        let worktree = match &how {
            Resent::Bootstrap(w) | Resent::Finish { worktree: w, .. } => Some(w.clone()),
            Resent::Turn | Resent::CreateAndTurn => None,
        };
        Ok(Resumption::Send(Box::new(Resend {
            job,
            client,
            plan,
            how,
            worktree,
            span,
        })))
    }

    /// Starts a new attempt for each ready job, in priority order, while the global and
    /// per-repository limits allow, under the job's resolved [`RepoPolicy`]. The attempt's ids
    /// are recorded with the transition, before the first request; up to
    /// [`Limits::parallel_dispatches`] dispatches are in flight at once, and each outcome is
    /// recorded stamped with its own arrival time (the turn timeout counts from it). The starts
    /// that fill the free slots and the outcomes that arrived meanwhile are recorded together, in
    /// one ledger transaction. Nothing at all while afk leaves T3 alone ([`Dispatcher::resume`]'s
    /// `may_send`), and nothing more once T3 refused the operate token.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dispatch_ready(
        &mut self,
        recorder: &mut Recorder,
        policies: &mut Policies,
        intake: &Intake,
        fleet: &Fleet,
        stopping: &HashMap<JobId, Job>,
        clock: TickClock,
    ) -> Result<(), ControlError> {
        let now = clock.start();
        if self.held || self.tokens.refused.is_some() {
            return Ok(());
        }
        self.holds.expire(recorder.ledger(), now).await?;
        // Reused while no job changed and no back-off ended since the last tick's read.
        let ready = recorder.ready_jobs(now).await?;
        if ready.is_empty() {
            return Ok(());
        }
        // A thread waiting for a person is live too: it holds its slot (and its checkout).
        let in_flight = recorder
            .ledger()
            .jobs_in(&[JobState::Dispatching, JobState::Running, JobState::NeedsInput])
            .await?;
        // A thread still being stopped may still be working: it counts against the limits, and
        // its job gets no new attempt until the stop is confirmed.
        let mut counts = Counts::default();
        let busy = in_flight
            .iter()
            .chain(stopping.values().filter(|j| !j.state.has_live_attempt()));
        for job in busy {
            counts.add(&job.issue.repo);
        }
        let parallel = self.limits.parallel_dispatches.max(1);
        let mut sends: JoinSet<Sent> = JoinSet::new();
        // The real T3 cannot add two worktrees to one checkout at once (both write its git
        // config; one fails, after its branch was made): a checkout's bootstraps go one after
        // another, in priority order, while other repositories' go on. Per checkout, the signal
        // its last bootstrap handed out gives when it is answered (or its task ends).
        let mut checkouts: HashMap<String, oneshot::Receiver<()>> = HashMap::new();
        let mut ready: VecDeque<Job> = ready.into();
        let mut arrived: Vec<Sent> = Vec::new();
        loop {
            // What the answers that arrived say (a refused token stops the starts), then the
            // starts that fill the free slots, recorded with those answers in one transaction.
            // `AFK.md` is read afresh each round: a pass may last long (serial bootstraps).
            let answers = self.read_answers(std::mem::take(&mut arrived));
            policies.begin_round();
            let decided = match self
                .decide(
                    recorder,
                    policies,
                    intake,
                    fleet,
                    stopping,
                    &mut ready,
                    &mut counts,
                    parallel.saturating_sub(sends.len()),
                    clock,
                )
                .await
            {
                Ok(decided) => decided,
                Err(error) => {
                    // The answers taken are T3's word on dispatches it already got: recorded
                    // before giving up the pass, or a dispatch T3 accepted would be resumed.
                    if let Err(also) =
                        (self.record_batch(recorder, answers, Vec::new(), &mut counts, clock)).await
                    {
                        tracing::warn!("the dispatches' answers could not be recorded either: {also}");
                    }
                    return Err(error);
                }
            };
            let decided_any = !decided.is_empty();
            let started = self
                .record_batch(recorder, answers, decided, &mut counts, clock)
                .await?;
            for (start, job, span) in started {
                let turn = start.worktree.as_ref().map(|w| {
                    let (done, next) = oneshot::channel();
                    (checkouts.insert(w.project_cwd.clone(), next), done)
                });
                sends.spawn(send(start, job, turn, span));
            }
            if sends.is_empty() {
                // Nothing in flight. Decided starts the machine did not take (a job gave up)
                // leave room for the next ready jobs; else every ready job was decided, or a
                // limit or T3 stops the rest.
                if decided_any && !ready.is_empty() {
                    continue;
                }
                break;
            }
            let Some(joined) = sends.join_next().await else {
                break;
            };
            // The first answer, and every other that came with it.
            arrived.extend(joined_sent(joined));
            while let Some(joined) = sends.try_join_next() {
                arrived.extend(joined_sent(joined));
            }
        }
        Ok(())
    }

    /// Decides the next starts, in priority order, up to `slots` of them, taking them off the
    /// front of `ready` and counting them in `counts` (the limits); records at once the jobs that
    /// are refused or over their budget. Stops early at a limit and once T3 refused the token. A
    /// repository's daily budget counts the new jobs decided before in the same batch (not yet
    /// in the ledger) with those the ledger holds, so a burst under a daily budget is decided
    /// in one batch and never past the budget.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &mut self,
        recorder: &mut Recorder,
        policies: &mut Policies,
        intake: &Intake,
        fleet: &Fleet,
        stopping: &HashMap<JobId, Job>,
        ready: &mut VecDeque<Job>,
        counts: &mut Counts,
        slots: usize,
        clock: TickClock,
    ) -> Result<Vec<(Job, Box<Start>)>, ControlError> {
        let mut decided: Vec<(Job, Box<Start>)> = Vec::new();
        // Per repository, the new jobs (first attempts) decided in this batch, not yet recorded.
        let mut new_in_batch: HashMap<Repo, u32> = HashMap::new();
        while decided.len() < slots {
            if counts.total >= self.limits.max_concurrent || self.tokens.refused.is_some() {
                ready.clear();
                break;
            }
            let Some(job) = ready.pop_front() else {
                break;
            };
            if stopping.contains_key(&job.id) {
                continue;
            }
            // A repository over a daily budget: its new jobs wait for the next day, unread.
            if job.attempts == 0 && self.holds.holds(&job.issue.repo) {
                continue;
            }
            let in_repo = counts.in_repo(&job.issue.repo);
            // A person's `/afk <instruction>` for this job, if any, goes with its prompt.
            let instruction = recorder.ledger().job_instruction(job.id).await?;
            let start = match self
                .next_for(&job, in_repo, policies, intake, fleet, instruction.as_ref())
                .await
            {
                Next::Wait => continue,
                Next::Refuse(error) => {
                    recorder
                        .record(&job, &Event::Refused { error }, None, clock.now())
                        .await?;
                    continue;
                }
                Next::Start(start) => start,
            };
            // The budgets, under the policy just resolved (`AFK.md` may lower them).
            let ledger = recorder.ledger();
            if let Some(overrun) = job_gate(ledger, &job, &start.budget).await? {
                recorder
                    .record(&job, &Event::OverBudget { overrun }, None, clock.now())
                    .await?;
                continue;
            }
            // The repository's use of the day is read from the ledger, which does not hold the
            // new jobs decided before this one in this batch yet: they are counted with it.
            let unrecorded = new_in_batch.get(&job.issue.repo).copied().unwrap_or(0);
            if !self
                .holds
                .may_start(ledger, &job, &start.budget, unrecorded, clock.now())
                .await?
            {
                continue;
            }
            if job.attempts == 0 {
                *new_in_batch.entry(job.issue.repo.clone()).or_default() += 1;
            }
            counts.add(&job.issue.repo);
            decided.push((job, start));
        }
        Ok(decided)
    }

    /// The events the answers of `arrived` call for ([`dispatch_event`]), each with when its
    /// answer came; a dispatch blocked by the operate token calls for none and is noted in
    /// `tokens`, for the control plane to say why afk waits (and nothing more is started).
    fn read_answers(&mut self, arrived: Vec<Sent>) -> Vec<(Job, Event, std::time::Instant)> {
        let mut outcomes = Vec::with_capacity(arrived.len());
        for sent in arrived {
            note_answer(&mut self.unanswered, &sent.thread, &sent.outcome);
            match (dispatch_event(&sent.outcome, &sent.thread), sent.outcome) {
                (Some(event), outcome) => {
                    self.tokens.accepted |= outcome.is_ok();
                    outcomes.push((sent.job, event, sent.at));
                }
                (None, Err(e)) => {
                    let _span = sent.span.enter();
                    tracing::debug!("{}: the operate token was refused: {}", sent.job.issue, e.error);
                    self.tokens.refused = Some(e.error);
                }
                (None, Ok(())) => {}
            }
        }
        outcomes
    }

    /// Records, in one ledger transaction, the events of the dispatches answered (`outcomes`,
    /// each stamped with when its answer came) and the start of each attempt of `decided`; the
    /// starts recorded, to be sent. A start the machine did not take after all (its budget is
    /// spent, or the job moved) is taken off `counts` again.
    async fn record_batch(
        &mut self,
        recorder: &mut Recorder,
        outcomes: Vec<(Job, Event, std::time::Instant)>,
        decided: Vec<(Job, Box<Start>)>,
        counts: &mut Counts,
        clock: TickClock,
    ) -> Result<Vec<(Start, Job, tracing::Span)>, ControlError> {
        let start_event = Event::StartAttempt;
        let at = clock.now();
        let moves: Vec<ToRecord<'_>> = (outcomes.iter())
            .map(|(job, event, arrived)| ToRecord {
                job,
                event,
                new_attempt: None,
                at: clock.at_instant(*arrived),
            })
            .chain(decided.iter().map(|(job, start)| ToRecord {
                job,
                event: &start_event,
                new_attempt: Some(&start.attempt),
                at,
            }))
            .collect();
        if moves.is_empty() {
            return Ok(Vec::new());
        }
        let answers = recorder.record_all(&moves).await?;
        drop(moves);
        let mut started = Vec::with_capacity(decided.len());
        for ((job, start), answer) in decided.into_iter().zip(answers.into_iter().skip(outcomes.len())) {
            // The machine starts no attempt for a job whose budget is spent (it gives up).
            let Some((_, recorded)) = answer.filter(|(t, _)| t.effect == Some(Effect::Dispatch)) else {
                counts.remove(&job.issue.repo);
                continue;
            };
            let job = recorded;
            let span = job_span(
                &job.issue,
                job.id,
                Some(AttemptNo(job.attempts)),
                Some(&start.plan.ids.thread_id),
            );
            self.unanswered
                .insert(start.plan.ids.thread_id.clone(), std::time::Instant::now());
            started.push((*start, job, span));
        }
        Ok(started)
    }
}

/// What is live in each repository and in all, against the limits.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_repo: HashMap<Repo, usize>,
}

impl Counts {
    fn add(&mut self, repo: &Repo) {
        self.total += 1;
        *self.per_repo.entry(repo.clone()).or_default() += 1;
    }

    fn remove(&mut self, repo: &Repo) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_repo.get_mut(repo) {
            *n = n.saturating_sub(1);
        }
    }

    fn in_repo(&self, repo: &Repo) -> usize {
        self.per_repo.get(repo).copied().unwrap_or(0)
    }
}

/// The dispatch a send task answered; `None` (logged) when the task failed, which cannot happen
/// short of a bug: its attempt stays `dispatching` and is resumed from T3's view next tick.
fn joined_sent(joined: Result<Sent, tokio::task::JoinError>) -> Option<Sent> {
    joined
        .inspect_err(|error| tracing::error!("a dispatch task failed: {error}"))
        .ok()
}

/// Forgets `thread`'s send once T3 answered it either way; keeps it when the call ended without
/// an answer (a transport failure or timeout, a socket lost, T3 dying mid-call), when what it
/// started may still be running in T3.
fn note_answer(
    unanswered: &mut HashMap<ThreadId, std::time::Instant>,
    thread: &ThreadId,
    outcome: &Result<(), DispatchError>,
) {
    let answered = match outcome {
        Ok(()) => true,
        Err(e) => !matches!(
            e.error,
            T3Error::Transport { .. }
                | T3Error::Socket { status: None, .. }
                | T3Error::Rpc { defect: true, .. }
        ),
    };
    if answered {
        unanswered.remove(thread);
    }
}

/// A dispatch that T3 answered: the job it was for, how it went and when the answer came.
struct Sent {
    job: Job,
    thread: ThreadId,
    outcome: Result<(), DispatchError>,
    at: std::time::Instant,
    span: tracing::Span,
}

/// Sends `start`'s commands for `job` (recorded `dispatching` already). A worktree bootstrap
/// takes its `turn` in its checkout: it waits for the bootstrap handed out before it there to be
/// answered (or its task to end), and signals the next one when its own answer came.
async fn send(
    start: Start,
    job: Job,
    turn: Option<(Option<oneshot::Receiver<()>>, oneshot::Sender<()>)>,
    span: tracing::Span,
) -> Sent {
    let Start {
        client,
        plan,
        worktree,
        ..
    } = start;
    let thread = plan.ids.thread_id.clone();
    let dispatch = async {
        match &worktree {
            Some(worktree) => client.dispatch_isolated(&plan, worktree).await.map(drop),
            None => client.dispatch_plan(&plan).await.map(drop),
        }
    };
    send_in_turn(job, thread, turn, span, dispatch).await
}

/// Sends `dispatch` for `job`'s `thread` (in `span`) once its `turn` in its checkout came (see
/// [`take_turn`]); what T3 answered, stamped with its arrival.
async fn send_in_turn(
    job: Job,
    thread: ThreadId,
    turn: Option<(Option<oneshot::Receiver<()>>, oneshot::Sender<()>)>,
    span: tracing::Span,
    dispatch: impl std::future::Future<Output = Result<(), DispatchError>>,
) -> Sent {
    // Dropped when this task ends, answered or not: the checkout's next bootstrap goes then.
    let _done = take_turn(turn).await;
    let outcome = dispatch.instrument(span.clone()).await;
    Sent {
        job,
        thread,
        outcome,
        at: std::time::Instant::now(),
        span,
    }
}

/// How to carry on with one interrupted dispatch this tick.
// A few per tick, held briefly: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum Resumption {
    /// Nothing yet (T3 cannot show the thread, a bootstrap may still run, afk may not send).
    Nothing,
    /// Record this event: T3's view tells how the dispatch went.
    Record(Job, Event),
    /// Send again, with the attempt's ids.
    Send(Box<Resend>),
}

/// What an interrupted dispatch sends again.
enum Resent {
    /// The worktree bootstrap (T3 has no thread).
    Bootstrap(WorktreePlan),
    /// The bootstrap of a half-made thread, without creating it ([`T3Client::finish_isolated`]).
    Finish { worktree: WorktreePlan, may_adopt: bool },
    /// The turn alone.
    Turn,
    /// `thread.create` and the turn (over HTTP).
    CreateAndTurn,
}

/// An interrupted dispatch of `job` to send again, as first planned.
struct Resend {
    job: Job,
    client: T3Client,
    plan: DispatchPlan,
    how: Resent,
    /// The checkout its bootstrap goes to, when it sends one.
    worktree: Option<WorktreePlan>,
    span: tracing::Span,
}

impl Resend {
    /// Sends it (a bootstrap in its `turn` of its checkout, as [`send`] does).
    async fn send(
        self: Box<Self>,
        turn: Option<(Option<oneshot::Receiver<()>>, oneshot::Sender<()>)>,
    ) -> Sent {
        let Resend {
            job,
            client,
            plan,
            how,
            span,
            ..
        } = *self;
        let thread = plan.ids.thread_id.clone();
        let dispatch = async {
            match &how {
                Resent::Bootstrap(worktree) => client.dispatch_isolated(&plan, worktree).await.map(drop),
                Resent::Finish { worktree, may_adopt } => client
                    .finish_isolated(&plan, worktree, *may_adopt)
                    .await
                    .map(drop),
                Resent::Turn => client
                    .start_turn(&plan)
                    .await
                    .map(drop)
                    .map_err(|error| DispatchError {
                        stage: DispatchStage::Turn,
                        error,
                    }),
                Resent::CreateAndTurn => client.dispatch_plan(&plan).await.map(drop),
            }
        };
        send_in_turn(job, thread, turn, span, dispatch).await
    }
}

/// Waits for a bootstrap's `turn` in its checkout (the bootstrap handed out before it there
/// answered, or its task ended); the signal to hold until this one is answered, whose drop lets
/// the next one go.
async fn take_turn(
    turn: Option<(Option<oneshot::Receiver<()>>, oneshot::Sender<()>)>,
) -> Option<oneshot::Sender<()>> {
    let (before, done) = turn?;
    if let Some(before) = before {
        // An error only says the one before ended without signalling: its turn is over.
        let _ = before.await;
    }
    Some(done)
}

/// What a ready job gets this tick.
enum Next {
    /// Nothing yet: its repository is at its limit, or its prompt is not ready.
    Wait,
    /// It cannot be dispatched: it fails, with this reason.
    Refuse(String),
    /// A new attempt.
    Start(Box<Start>),
}

/// A new attempt, decided before anything is recorded or sent.
struct Start {
    /// The client with the repository's branch prefix and model.
    client: T3Client,
    plan: DispatchPlan,
    attempt: NewAttempt,
    /// Where T3 makes its worktree, for a repository dispatched with worktrees.
    worktree: Option<WorktreePlan>,
    /// The budgets of its repository's jobs, as resolved for it.
    budget: afk_core::BudgetLimits,
}

impl Dispatcher {
    /// What `job` gets, its repository having `in_repo` attempts in flight: its policy resolved
    /// once (the configured limit is checked before `AFK.md` is read, a request to GitHub, which
    /// can only lower it), its worktree decided (it needs the project's checkout in T3) and its
    /// plan made (which refuses a prompt over T3's limit).
    async fn next_for(
        &self,
        job: &Job,
        in_repo: usize,
        policies: &mut Policies,
        intake: &Intake,
        fleet: &Fleet,
        instruction: Option<&afk_ledger::JobInstruction>,
    ) -> Next {
        let configured = match policies.configured(&job.issue.repo) {
            Ok(configured) if in_repo >= configured.limit => return Next::Wait,
            Ok(configured) => configured,
            Err(error) => return Next::Refuse(error),
        };
        let worktree = match worktree_target(&configured.target) {
            Some(settings) => match worktree_plan(&configured.target, settings, fleet) {
                Ok(worktree) => Some(worktree),
                Err(error) => return Next::Refuse(error),
            },
            None => None,
        };
        let issue = intake.github_issue(&job.issue);
        let (policy, prompt) = match policies.resolve(job, configured, issue).await {
            Resolution::Ready { policy, .. } if in_repo >= policy.limit => return Next::Wait,
            Resolution::Ready { policy, prompt } => (
                policy,
                crate::policy::prompt::with_instruction(prompt, instruction),
            ),
            Resolution::NotNow => return Next::Wait,
            Resolution::Refused(error) => return Next::Refuse(error),
        };
        let client = client_for(&self.t3, Some(&policy.branch_prefix), policy.model.as_deref());
        let issue = IssueRef {
            repo: job.issue.repo.to_string(),
            number: job.issue.number,
            title: Some(job.title.clone()),
        };
        match client.plan(&issue, policy.target.project.clone(), &prompt, None) {
            Ok(plan) => {
                let plan = with_target(plan, job, &policy.target, job.attempts + 1);
                let attempt = new_attempt(&plan, &policy);
                Next::Start(Box::new(Start {
                    client,
                    plan,
                    attempt,
                    worktree,
                    budget: policy.budget,
                }))
            }
            Err(error) => Next::Refuse(error.to_string()),
        }
    }
}

/// The attempt `plan` starts, under `policy`: its ids, chosen now and stored before the first
/// request, and what it was created with.
fn new_attempt(plan: &DispatchPlan, policy: &RepoPolicy) -> NewAttempt {
    NewAttempt {
        thread_id: plan.ids.thread_id.clone(),
        project_id: plan.project_id.clone(),
        create_command_id: plan.ids.create_command_id.clone(),
        turn_command_id: plan.ids.turn_command_id.clone(),
        message_id: plan.ids.message_id.clone(),
        title: plan.title.clone(),
        branch: plan.branch.clone(),
        prompt: plan.text.clone(),
        model: policy.model.clone(),
    }
}

/// The worktree settings of `target` (base branch, setup script), when it is dispatched with
/// worktrees.
fn worktree_target(target: &RepoTarget) -> Option<(&str, Option<bool>)> {
    match &target.dispatch {
        Dispatch::WsWorktree {
            base_branch,
            run_setup_script,
        } => Some((base_branch, *run_setup_script)),
        Dispatch::Http { .. } => None,
    }
}

/// What T3 needs to add a worktree for `target`'s threads: the project's checkout (from T3's own
/// view of the project), the base branch, and whether to run the setup script. `Err` when T3 has
/// no such project.
fn worktree_plan(
    target: &RepoTarget,
    (base_branch, run_setup_script): (&str, Option<bool>),
    fleet: &Fleet,
) -> Result<WorktreePlan, String> {
    let project = fleet.project(&target.project).ok_or_else(|| {
        format!(
            "T3 has no project {} to add a worktree to (check [t3.projects])",
            target.project
        )
    })?;
    Ok(WorktreePlan {
        project_cwd: project.workspace_root.clone(),
        base_branch: base_branch.to_owned(),
        // As T3's own UI decides, unless the repository says otherwise.
        run_setup_script: run_setup_script.unwrap_or_else(|| project.has_worktree_setup_script()),
    })
}

/// `plan` for attempt `number` of `job` in `target`: with worktrees each attempt has its own
/// branch (T3 creates it, and a branch can have only one worktree); over HTTP with a worktree
/// template, the thread works in its rendered path.
fn with_target(mut plan: DispatchPlan, job: &Job, target: &RepoTarget, number: u32) -> DispatchPlan {
    match &target.dispatch {
        Dispatch::WsWorktree { .. } => plan.branch = attempt_branch(&plan.branch, number),
        Dispatch::Http {
            worktree_path: Some(template),
        } => plan.worktree_path = Some(template.render(&job.issue, &plan.branch, number)),
        Dispatch::Http { worktree_path: None } => {}
    }
    plan
}

/// The T3 client with `branch_prefix` and `model` where they differ from its own settings.
fn client_for(t3: &T3Client, branch_prefix: Option<&str>, model: Option<&str>) -> T3Client {
    let settings = t3.settings();
    let prefix = branch_prefix.filter(|p| *p != settings.branch_prefix);
    let model = model.filter(|m| *m != settings.model);
    if prefix.is_none() && model.is_none() {
        return t3.clone();
    }
    let mut settings = settings.clone();
    if let Some(prefix) = prefix {
        settings.branch_prefix = prefix.to_owned();
    }
    if let Some(model) = model {
        settings.model = model.to_owned();
    }
    t3.clone().with_settings(settings)
}

/// The plan an attempt was started with, rebuilt from the ledger exactly as first sent (the
/// worktree path is rendered again from the repository's template: same inputs, same path).
fn plan_of(job: &Job, attempt: &Attempt, target: Option<&RepoTarget>) -> DispatchPlan {
    let worktree_path = match target.map(|t| &t.dispatch) {
        Some(Dispatch::Http {
            worktree_path: Some(template),
        }) => Some(template.render(&job.issue, &attempt.branch, attempt.number.0)),
        _ => None,
    };
    DispatchPlan {
        ids: DispatchIds {
            thread_id: attempt.thread_id.clone(),
            create_command_id: attempt.create_command_id.clone(),
            turn_command_id: attempt.turn_command_id.clone(),
            message_id: attempt.message_id.clone(),
        },
        project_id: attempt.project_id.clone(),
        title: attempt.title.clone(),
        branch: attempt.branch.clone(),
        worktree_path,
        text: attempt.prompt.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use t3_client::{TransportError, TransportErrorKind};

    fn status(code: u16) -> T3Error {
        T3Error::Status {
            what: "thread.create".into(),
            status: code,
            body: None,
            body_excerpt: None,
        }
    }

    fn rpc(message: &str, tag: Option<&str>, defect: bool) -> T3Error {
        T3Error::Rpc {
            what: "orchestration.dispatchCommand (thread.turn.start)".into(),
            url: "ws://t3/ws".into(),
            tag: tag.map(str::to_owned),
            message: message.into(),
            required_scope: None,
            defect,
        }
    }

    #[test]
    fn every_way_t3_answers_a_dispatch_calls_for_its_event() {
        use DispatchStage::{Bootstrap, Create, Turn};
        let thread = ThreadId::new("thread-1").unwrap();
        let exists = "Thread 'thread-1' already exists and cannot be created twice.";
        // (stage, error, the event's kind, why)
        let cases: Vec<(DispatchStage, T3Error, &str, &str)> = vec![
            (
                Create,
                T3Error::Transport {
                    what: "thread.create".into(),
                    url: "http://t3".into(),
                    source: TransportError {
                        kind: TransportErrorKind::Connect,
                        message: "connection refused".into(),
                    },
                },
                "deferred",
                "no reply",
            ),
            (Create, status(503), "deferred", "T3 overloaded"),
            (Turn, status(429), "deferred", "rate limited"),
            (
                Create,
                status(401),
                "nothing",
                "a refused token is not the job's fault",
            ),
            (Turn, status(403), "nothing", "a token without the scope"),
            (
                Bootstrap,
                rpc("no", Some("EnvironmentAuthorizationError"), false),
                "nothing",
                "an RPC refused for want of authorization",
            ),
            (Create, status(400), "rejected", "T3 refused the command"),
            (
                Create,
                T3Error::PromptTooLong { len: 9, limit: 8 },
                "rejected",
                "a prompt over T3's limit",
            ),
            (
                Create,
                T3Error::InvalidInput("the prompt is empty".into()),
                "rejected",
                "an unusable input",
            ),
            (
                Create,
                T3Error::MalformedReply {
                    what: "thread.create".into(),
                    detail: "sequence: missing".into(),
                    body_excerpt: "{}".into(),
                },
                "deferred",
                "an unreadable reply may hide an applied command",
            ),
            (
                Bootstrap,
                T3Error::Socket {
                    what: "dispatch".into(),
                    url: "ws://t3/ws".into(),
                    detail: "the socket closed; the call may or may not have been applied".into(),
                    status: None,
                },
                "deferred",
                "a dropped socket",
            ),
            (
                Bootstrap,
                rpc("T3 died", None, true),
                "deferred",
                "a defect on T3's side",
            ),
            (
                Bootstrap,
                rpc(exists, Some("OrchestrationCommandInvariantError"), false),
                "deferred",
                "a resent bootstrap whose thread exists: T3's view decides",
            ),
            (
                Bootstrap,
                rpc("git worktree add failed", Some("GitCommandError"), false),
                "bootstrap_failed",
                "T3 could not set the worktree up and undid it",
            ),
            (
                Bootstrap,
                rpc(
                    "OrchestrationDispatchCommandError: SQL error in OrchestrationEngine.dispatch",
                    Some("OrchestrationDispatchCommandError"),
                    false,
                ),
                "deferred",
                "over /ws T3 fails a refused command and an internal failure alike: retried as over HTTP",
            ),
            (
                Turn,
                rpc(
                    "OrchestrationDispatchCommandError: Orchestration command invariant failed",
                    Some("OrchestrationDispatchCommandError"),
                    false,
                ),
                "deferred",
                "a refusal over /ws is retried a bounded number of times, then spends the attempt",
            ),
            (
                Turn,
                rpc(exists, Some("OrchestrationCommandInvariantError"), false),
                "rejected",
                "only a bootstrap's existing thread is a landed try",
            ),
        ];
        for (stage, error, expected, why) in cases {
            let outcome = Err(DispatchError { stage, error });
            let kind = match dispatch_event(&outcome, &thread) {
                None => "nothing",
                Some(Event::DispatchDeferred { .. }) => "deferred",
                Some(Event::BootstrapFailed { .. }) => "bootstrap_failed",
                Some(Event::DispatchRejected { .. }) => "rejected",
                Some(other) => panic!("{why}: unexpected {other:?}"),
            };
            assert_eq!(kind, expected, "{why}: {outcome:?}");
        }
        assert_eq!(dispatch_event(&Ok(()), &thread), Some(Event::Dispatched));
        // The event carries T3's words, for the job's last error.
        let event = dispatch_event(
            &Err(DispatchError {
                stage: Create,
                error: status(400),
            }),
            &thread,
        );
        assert!(
            matches!(&event, Some(Event::DispatchRejected { error }) if error.contains("400")),
            "{event:?}"
        );
    }

    #[test]
    fn an_interrupted_dispatch_resumes_from_t3s_view_of_its_thread() {
        let thread = |has_turn, deleted, has_session, has_worktree| {
            Some(SeenThread {
                has_turn,
                deleted,
                has_session,
                has_worktree,
            })
        };
        // (T3's view, worktrees, the step, why)
        #[rustfmt::skip]
        let cases = [
            (thread(true, false, true, true), true, "dispatched", "the bootstrap landed"),
            (thread(true, false, true, false), false, "dispatched", "both commands landed"),
            (thread(true, true, true, false), false, "dispatched", "a turn started: the watcher sees the rest"),
            (thread(false, true, false, false), true, "bootstrap_failed", "T3 deleted a thread it could not set up"),
            (thread(false, false, true, true), true, "dispatched", "T3 took the turn: its session is starting"),
            (thread(false, false, true, false), false, "dispatched", "over HTTP too: the session is T3's answer to the turn"),
            (thread(false, false, false, false), true, "finish_bootstrap",
                "half made by a bootstrap cut off mid-way: finished at once, same attempt"),
            (thread(false, false, false, true), true, "turn", "cut off after its worktree: only the turn is missing"),
            (None, true, "bootstrap", "no thread: the bootstrap again"),
            (thread(false, false, false, false), false, "turn", "created without its turn"),
            (None, false, "create_and_turn", "nothing landed"),
        ];
        for (seen, worktrees, expected, why) in cases {
            let step = step_name(resume_step(seen, worktrees, false), why);
            assert_eq!(step, expected, "{why}: {seen:?}, worktrees {worktrees}");
        }
        // A bootstrap of this process's that was never answered may still be setting the thread
        // up: a half-made worktree thread waits for it; anything T3 already settled does not.
        #[rustfmt::skip]
        let unanswered = [
            (thread(false, false, false, false), true, "wait", "no worktree yet: the first setup may still run"),
            (thread(false, false, false, true), true, "wait", "a worktree, no session: its setup script may still run"),
            (thread(true, false, true, true), true, "dispatched", "the bootstrap landed"),
            (thread(false, true, false, false), true, "bootstrap_failed", "T3 deleted it"),
            (None, true, "bootstrap", "no thread: the same ids again, which T3 refuses if it is being made"),
            (thread(false, false, false, false), false, "turn", "over HTTP the create was answered"),
        ];
        for (seen, worktrees, expected, why) in unanswered {
            let step = step_name(resume_step(seen, worktrees, true), why);
            assert_eq!(step, expected, "{why}: {seen:?}, worktrees {worktrees}");
        }
    }

    fn step_name(step: ResumeStep, why: &str) -> &'static str {
        {
            match step {
                ResumeStep::Record(Event::Dispatched) => "dispatched",
                ResumeStep::Record(Event::BootstrapFailed { .. }) => "bootstrap_failed",
                ResumeStep::Record(other) => panic!("{why}: unexpected {other:?}"),
                ResumeStep::Bootstrap => "bootstrap",
                ResumeStep::FinishBootstrap => "finish_bootstrap",
                ResumeStep::Turn => "turn",
                ResumeStep::CreateAndTurn => "create_and_turn",
                ResumeStep::Wait => "wait",
            }
        }
    }
}
