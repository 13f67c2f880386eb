//! Intake from GitHub: issues carrying the trigger label applied by someone with write access,
//! by polling and by signed webhooks. GitHub is reached only through `afk-github`; this module
//! decides when to ask and what the answers mean for jobs.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use afk_core::{CancelReason, Event, IssueKey, JobSource, JobState, RequeueBy};
use afk_github::{EligibleIssue, Intake, SkipReason, SkippedIssue, UntrustedEdit, Verdict, WebhookEvent};
use afk_ledger::{Job, NewJob};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::control::record::Recorder;
use crate::control::waiting::Waiting;
use crate::control::ControlError;

/// How many webhook deliveries wait for the ledger at most ([`GitHubIntake::defer`]).
const MAX_DEFERRED: usize = 10_000;

/// How many webhook deliveries wait for an early answer at most ([`GitHubIntake::held`]).
const MAX_HELD: usize = MAX_DEFERRED;

/// Adds `events` to the deliveries `held` for an early answer, unless that makes more than
/// [`MAX_HELD`] (a long wait on GitHub under a stream of webhooks would otherwise grow them
/// without bound): then every one is dropped and true says that a poll, which sees every
/// labelled issue as it is, is to answer them instead.
fn hold(held: &mut Vec<WebhookEvent>, events: Vec<WebhookEvent>) -> bool {
    if held.len() + events.len() > MAX_HELD {
        held.clear();
        return true;
    }
    held.extend(events);
    false
}

/// The GitHub source: trusted intake by poll and webhook, and the latest view of each eligible
/// issue (its author and URL, for prompts; the ledger keeps neither).
pub struct GitHubIntake {
    intake: Intake,
    poll_interval: Duration,
    next_poll: Option<Instant>,
    /// When the last poll ran.
    last_poll: Option<Instant>,
    /// Set while deliveries past the check budget wait for an early poll: when it is due. The
    /// run loop wakes then ([`GitHubIntake::early_poll_due`]).
    early_poll: Option<Instant>,
    issues: HashMap<IssueKey, EligibleIssue>,
    /// Verified webhook deliveries, when webhooks are on.
    events: Option<mpsc::Receiver<WebhookEvent>>,
    /// Deliveries that woke the run loop, acted on at the next sync.
    deferred: Vec<WebhookEvent>,
    /// How the last poll went, until the control plane takes it.
    poll_outcome: Option<Result<(), Waiting>>,
    /// Issues held back because their text changed under an untrusted editor before afk took
    /// it: to be said on the issue by the reporter (intake never writes to GitHub).
    notices: Vec<(IssueKey, UntrustedEdit)>,
    /// What webhook deliveries cost GitHub in the current poll interval.
    budget: CheckBudget,
    /// Deliveries past the check budget, after the interval's first early poll: answered
    /// together when [`Self::early_poll`] comes, by checking their issues or by a poll, whichever
    /// costs GitHub less ([`answer_held`]).
    held: Vec<WebhookEvent>,
    /// When held deliveries were last answered by checks (the gap applies to them as to polls).
    last_batch: Option<Instant>,
    /// How many labelled issues the last complete poll listed: what another poll would cost.
    labelled: usize,
    /// Comments webhooks delivered, for the comment commands (`control/commands.rs`).
    comment_events: Vec<WebhookEvent>,
    /// A pull request, review or check delivery arrived since the follow-through last asked.
    pull_request_activity: bool,
    /// Eligible issues taken with no job yet, to be queued together in one ledger transaction
    /// ([`Self::queue_taken`]): a burst costs one commit, not one per issue. Kept when that
    /// transaction fails, and queued first at the next sync (a delivery is not sent again, and the
    /// next poll may be an hour away).
    to_queue: Pending,
    /// New issues the ledger refused as a bad value, as they were then: a refusal is warned about
    /// once per issue content, not at every poll that takes the issue again.
    refused: HashMap<IssueKey, NewJob>,
}

/// Eligible issues taken with no job yet, waiting to be queued together
/// ([`GitHubIntake::queue_taken`]): the latest view of each, in the order last taken. Taking,
/// dropping and asking after one issue cost the same however many wait (a first sync takes
/// thousands, and each once).
#[derive(Debug, Default)]
struct Pending {
    /// The views in the order taken; `None` where the issue was dropped or taken again later
    /// (kept until [`Pending::take`]: at most one per take or drop since the last batch).
    views: Vec<Option<NewJob>>,
    /// Where each waiting issue's view is in `views`.
    at: HashMap<IssueKey, usize>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Whether `key` waits to be queued.
    fn contains(&self, key: &IssueKey) -> bool {
        self.at.contains_key(key)
    }

    /// `new` waits to be queued, after every other: the one view of its issue (an earlier view
    /// is replaced).
    fn push(&mut self, new: NewJob) {
        self.remove(&new.issue);
        self.at.insert(new.issue.clone(), self.views.len());
        self.views.push(Some(new));
    }

    /// The issue `key` no longer waits (a no-op when it did not).
    fn remove(&mut self, key: &IssueKey) {
        if let Some(place) = self.at.remove(key) {
            self.views[place] = None;
        }
    }

    /// Every waiting view, in order; none waits afterwards.
    fn take(&mut self) -> Vec<NewJob> {
        self.at.clear();
        std::mem::take(&mut self.views).into_iter().flatten().collect()
    }
}

/// Issue checks webhook deliveries may cost GitHub per poll interval. Past it, the deliveries of
/// the interval are answered by polling early instead (see [`EARLY_POLL_GAP`]): a burst of
/// deliveries costs GitHub about one poll's worth of requests.
const WEBHOOK_CHECKS_PER_POLL: u32 = 10;

/// How soon after a poll an early answer may follow it. Deliveries past the check budget are
/// answered by a poll at once the first time in a poll interval; later ones are held and answered
/// together at most this long after the last poll or answer (never later than the regular poll),
/// by checking their issues or by a poll, whichever costs GitHub fewer requests ([`answer_held`]).
/// So a steady stream of labels waits this long at most instead of the rest of the poll interval,
/// while costing GitHub per gap at most the smaller of a check per labelled issue delivered and
/// one poll (whose unchanged pages and issues are answered 304, which GitHub does not charge, but
/// which are requests all the same: thousands in a repository with thousands of labelled issues).
const EARLY_POLL_GAP: Duration = Duration::from_millis(250);

/// The checks webhook deliveries spent since `since`, and whether the interval's first early
/// poll was said.
#[derive(Debug, Default)]
struct CheckBudget {
    since: Option<Instant>,
    used: u32,
    polled_early: bool,
}

impl CheckBudget {
    /// True when one more check fits in the interval that holds `now` (and counts it).
    fn spend(&mut self, interval: Duration, now: Instant) -> bool {
        if self.since.is_none_or(|since| now >= since + interval) {
            *self = CheckBudget {
                since: Some(now),
                ..CheckBudget::default()
            };
        }
        if self.used >= WEBHOOK_CHECKS_PER_POLL {
            return false;
        }
        self.used += 1;
        true
    }

    /// True the first time per interval that the budget ran out: that poll is made at once, and
    /// said.
    fn first_early_poll(&mut self) -> bool {
        !std::mem::replace(&mut self.polled_early, true)
    }
}

/// When to poll once deliveries past the check budget wait at `now`, given when the last poll
/// ran and when the next one is due (`None`: at the next sync): [`EARLY_POLL_GAP`] after the last
/// poll, or at once when that has passed, and never later than the poll already due.
fn early_poll_at(last_poll: Option<Instant>, next_poll: Option<Instant>, now: Instant) -> Option<Instant> {
    let next = next_poll?;
    let early = last_poll.map_or(now, |last| (last + EARLY_POLL_GAP).max(now));
    Some(next.min(early))
}

/// About what one check of an issue costs GitHub: the issue, its events, the labeller's
/// permission (cached) and its text's last edit (GraphQL).
const CHECK_REQUESTS: usize = 4;

/// How held deliveries about `issues` distinct issues are answered, when the last poll listed
/// `labelled` labelled issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeldAnswer {
    /// Check each issue: fewer requests than a poll.
    Checks,
    /// Poll: it reads every labelled issue (a page per hundred, then each one's events), which
    /// costs less than checking this many.
    Poll,
}

/// The cheaper way to answer held deliveries about `issues` issues: a poll costs about a request
/// per labelled issue and one per page of a hundred, a check [`CHECK_REQUESTS`]. So a steady
/// stream of labels past the budget costs GitHub what its own issues cost, not a listing of
/// every labelled issue (thousands of requests in a large repository) every
/// [`EARLY_POLL_GAP`].
fn answer_held(issues: usize, labelled: usize) -> HeldAnswer {
    let poll = labelled + labelled / 100 + 1;
    if issues.saturating_mul(CHECK_REQUESTS) < poll {
        HeldAnswer::Checks
    } else {
        HeldAnswer::Poll
    }
}

/// The deliveries of one sync about one issue: one check of the issue answers them all.
struct IssueDeliveries {
    events: Vec<WebhookEvent>,
    /// One of them withdraws the issue.
    withdraws: bool,
    /// One of them may make it eligible.
    may_take: bool,
}

/// The deliveries of one sync grouped per issue, in order of first delivery.
fn coalesce(events: Vec<WebhookEvent>, trigger: &str) -> Vec<IssueDeliveries> {
    let mut merged: Vec<IssueDeliveries> = Vec::new();
    for event in events {
        let (withdraws, may_take) = (event.withdraws(trigger), event.may_make_eligible(trigger));
        let same = merged.iter_mut().find(|group| {
            let first = &group.events[0];
            first.number == event.number && first.repo.as_str().eq_ignore_ascii_case(event.repo.as_str())
        });
        match same {
            Some(group) => {
                group.withdraws |= withdraws;
                group.may_take |= may_take;
                group.events.push(event);
            }
            None => merged.push(IssueDeliveries {
                events: vec![event],
                withdraws,
                may_take,
            }),
        }
    }
    merged
}

impl GitHubIntake {
    /// True once after a pull request, review or check delivery: the follow-through reads the
    /// pull requests it follows at once rather than at its next poll.
    pub(crate) fn take_pull_request_activity(&mut self) -> bool {
        std::mem::take(&mut self.pull_request_activity)
    }

    /// How often GitHub is polled (`[github] poll_interval`): the follow-through's pace too.
    pub(crate) fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// Polls through `intake` every `poll_interval` and acts on the deliveries `events` brings.
    pub fn new(
        intake: Intake,
        poll_interval: Duration,
        events: Option<mpsc::Receiver<WebhookEvent>>,
    ) -> Self {
        Self {
            intake,
            poll_interval,
            next_poll: None,
            last_poll: None,
            early_poll: None,
            issues: HashMap::new(),
            events,
            deferred: Vec::new(),
            poll_outcome: None,
            notices: Vec::new(),
            budget: CheckBudget::default(),
            held: Vec::new(),
            last_batch: None,
            labelled: 0,
            comment_events: Vec::new(),
            pull_request_activity: false,
            to_queue: Pending::default(),
            refused: HashMap::new(),
        }
    }

    /// The configured repositories.
    pub(crate) fn repos(&self) -> &[afk_core::Repo] {
        &self.intake.config().repos
    }

    /// The comments webhooks delivered since the last call.
    pub(super) fn take_comment_events(&mut self) -> Vec<WebhookEvent> {
        std::mem::take(&mut self.comment_events)
    }

    /// How the last poll went (what afk waits for, when it failed); `None` when no poll happened
    /// since the last call.
    pub(super) fn take_poll_outcome(&mut self) -> Option<Result<(), Waiting>> {
        self.poll_outcome.take()
    }

    /// The untrusted-edit notices found since the last call, for the reporter to say on the issues.
    pub(super) fn take_notices(&mut self) -> Vec<(IssueKey, UntrustedEdit)> {
        std::mem::take(&mut self.notices)
    }

    pub(super) fn issue(&self, key: &IssueKey) -> Option<&EligibleIssue> {
        self.issues.get(key)
    }

    pub(super) fn defer(&mut self, event: WebhookEvent) {
        self.deferred.push(event);
        self.bound_deferred();
    }

    /// Keeps at most [`MAX_DEFERRED`] deliveries (a long ledger outage under a stream of
    /// webhooks would otherwise grow them without bound); past that the rest are dropped and the
    /// next sync polls GitHub instead, which sees every labelled issue as it is.
    fn bound_deferred(&mut self) {
        if self.deferred.len() > MAX_DEFERRED {
            tracing::warn!(
                "more than {MAX_DEFERRED} webhook deliveries wait for the ledger: dropping the rest; GitHub is polled instead"
            );
            self.deferred.truncate(MAX_DEFERRED);
            self.next_poll = None;
        }
    }

    /// When a poll answering webhook deliveries past the check budget is due, while some wait
    /// for it: the run loop ticks then rather than at its next poll interval.
    pub(super) fn early_poll_due(&self) -> Option<Instant> {
        self.early_poll
    }

    /// Waits for the next webhook event (forever when webhooks are off); the run loop uses it to
    /// tick at once when GitHub tells of a change.
    pub(super) async fn next_event(&mut self) -> Option<WebhookEvent> {
        if let Some(events) = self.events.as_mut() {
            if let Some(event) = events.recv().await {
                return Some(event);
            }
            // The listener is gone: stop waiting on it rather than waking the loop forever.
            self.events = None;
        }
        std::future::pending().await
    }

    fn trigger(&self) -> &str {
        &self.intake.config().trigger_label
    }

    /// Acts on webhook events (deferred ones first, then any queued), then polls when due and
    /// `may_poll`.
    pub(super) async fn sync(
        &mut self,
        recorder: &mut Recorder,
        may_poll: bool,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        // What a failed transaction left, before anything newer about those issues.
        self.queue_taken(recorder, now).await?;
        let mut events = std::mem::take(&mut self.deferred);
        if let Some(rx) = self.events.as_mut() {
            while let Ok(event) = rx.try_recv() {
                events.push(event);
            }
        }
        // Comments are the comment commands' (they say nothing about the issue's eligibility).
        let (comments, events): (Vec<_>, Vec<_>) = events
            .into_iter()
            .partition(|e| matches!(e.kind, afk_github::WebhookEventKind::Commented { .. }));
        self.comment_events.extend(comments);
        if events
            .iter()
            .any(|e| matches!(e.kind, afk_github::WebhookEventKind::PullRequestActivity))
        {
            self.pull_request_activity = true;
        }
        let trigger = self.trigger().to_owned();
        let mut pending = coalesce(events, &trigger).into_iter();
        // This sync polls at once: it answers every delivery past the budget.
        let mut polls_now = self.next_poll.is_none();
        while let Some(group) = pending.next() {
            if !(group.withdraws || group.may_take) {
                continue;
            }
            if !self.budget.spend(self.poll_interval, Instant::now()) {
                // Past the interval's budget: answered soon (not at the next regular poll, which
                // may be many seconds away), together with the rest.
                if polls_now {
                    continue;
                }
                if self.budget.first_early_poll() {
                    tracing::info!(
                        "more webhook deliveries than {WEBHOOK_CHECKS_PER_POLL} per poll interval: \
                         polling GitHub instead of checking each issue"
                    );
                    // The first time in the interval: a poll at once (a burst is answered in
                    // this tick).
                    self.next_poll = None;
                    self.early_poll = Some(Instant::now());
                    polls_now = true;
                    continue;
                }
                // Later ones wait for the next gap, and are then checked or polled for together.
                if hold(&mut self.held, group.events) {
                    tracing::warn!(
                        "more than {MAX_HELD} webhook deliveries wait for an early answer: dropping them; GitHub is polled instead"
                    );
                    // A poll as soon as GitHub may be asked (this sync, unless afk waits on it).
                    self.next_poll = None;
                    self.early_poll = Some(Instant::now());
                    polls_now = true;
                    continue;
                }
                let last = self.last_poll.max(self.last_batch);
                self.early_poll = early_poll_at(last, self.next_poll, Instant::now());
                continue;
            }
            if let Err(error) = self.answer(group, recorder, now).await {
                // The ledger failed: keep the deliveries after this one for the next sync (GitHub
                // does not send a delivery again, and the next poll may be an hour away).
                self.deferred.extend(pending.flat_map(|g| g.events));
                self.bound_deferred();
                return Err(error);
            }
        }
        if may_poll && !polls_now && !self.held.is_empty() {
            self.answer_held(recorder, now).await?;
        }
        // The new issues the deliveries took, queued together.
        self.queue_taken(recorder, now).await?;
        if !may_poll {
            // GitHub is left alone for now: the deliveries wait for the poll after the wait.
            self.early_poll = None;
            return Ok(());
        }
        if self.next_poll.is_some_and(|next| Instant::now() < next) {
            return Ok(());
        }
        let polled = Instant::now();
        self.next_poll = Some(polled + self.poll_interval);
        self.last_poll = Some(polled);
        self.early_poll = None;
        // The poll answers every delivery held for an early answer.
        self.held.clear();
        let scan = self.intake.scan().await;
        for skipped in &scan.skipped {
            tracing::debug!("{}#{}: skipped: {}", skipped.repo, skipped.number, skipped.reason);
        }
        // Said by the control plane once per cause (the first that needs a person, if any).
        for error in &scan.errors {
            tracing::debug!("GitHub poll: {error}");
        }
        let failure = scan
            .failures
            .iter()
            .find(|e| !e.is_transient())
            .or(scan.failures.first());
        self.poll_outcome = Some(match failure {
            Some(error) => Err(Waiting::github(error)),
            None => Ok(()),
        });
        // Every labelled issue the poll saw: eligible, held back (its text changed under an
        // untrusted editor since the label: a job that took the vouched text goes on) or not
        // handed over (its job is withdrawn).
        let listed: HashSet<IssueKey> = scan
            .eligible
            .iter()
            .map(EligibleIssue::key)
            .chain(scan.skipped.iter().map(|s| s.key()))
            .collect();
        for skipped in scan.skipped {
            self.keep_view(&skipped, recorder).await?;
            self.skipped(skipped.key(), skipped.reason, recorder, now).await?;
        }
        for issue in scan.eligible {
            self.take(issue, recorder, now).await?;
        }
        // The poll's new issues, queued together before the jobs it did not list are looked at.
        self.queue_taken(recorder, now).await?;
        if scan.complete {
            self.labelled = listed.len();
            // Only the jobs not yet final: reading every job would make each poll cost the
            // ledger's whole history (issue #18).
            let open: Vec<JobState> = JobState::ALL.iter().copied().filter(|s| !s.is_final()).collect();
            for job in recorder.ledger().jobs_in(&open).await? {
                if job.source == JobSource::GitHub && !listed.contains(&job.issue) {
                    self.left(&job, recorder, now).await?;
                }
            }
        }
        Ok(())
    }

    /// Queues the new issues taken since the last call in one ledger transaction
    /// ([`afk_ledger::Ledger::queue_jobs`]), each said once. An issue that got a job meanwhile is
    /// left as it is (its next delivery or poll is taken as a known issue's). When the database
    /// refuses a value of the batch (a bad value, [`afk_ledger::LedgerError::is_bad_value`], which
    /// it would refuse again at every retry), each is queued on its own and only the refused one
    /// is left out, warned about once per content; one the ledger cannot hold before writing (a
    /// NUL byte) is left out the same way. On any other failure nothing of the batch was written:
    /// the issues not yet queued stay for the next call and the error is returned.
    async fn queue_taken(&mut self, recorder: &mut Recorder, now: DateTime<Utc>) -> Result<(), ControlError> {
        if self.to_queue.is_empty() {
            return Ok(());
        }
        let batch = self.to_queue.take();
        match recorder.ledger().queue_jobs(&batch, now).await {
            Ok(answers) => {
                for (new, answer) in batch.into_iter().zip(answers) {
                    self.queued(new, answer, recorder);
                }
                Ok(())
            }
            Err(error) if error.is_bad_value() => {
                tracing::debug!("the batch of new issues was refused ({error}); queued one at a time");
                let mut batch = batch.into_iter();
                while let Some(new) = batch.next() {
                    match recorder
                        .ledger()
                        .queue_jobs(std::slice::from_ref(&new), now)
                        .await
                    {
                        Ok(mut answer) => {
                            let answer = answer.pop().unwrap_or(Ok(None));
                            self.queued(new, answer, recorder);
                        }
                        Err(refused) if refused.is_bad_value() => self.queued(new, Err(refused), recorder),
                        Err(error) => {
                            // Those before it are queued (and said); it and the rest wait.
                            self.to_queue.push(new);
                            batch.for_each(|new| self.to_queue.push(new));
                            return Err(error.into());
                        }
                    }
                }
                Ok(())
            }
            Err(error) => {
                batch.into_iter().for_each(|new| self.to_queue.push(new));
                Err(error.into())
            }
        }
    }

    /// Says what became of `new`, taken with no job, once the ledger answered for it.
    fn queued(
        &mut self,
        new: NewJob,
        answer: Result<Option<Job>, afk_ledger::LedgerError>,
        recorder: &mut Recorder,
    ) {
        match answer {
            Ok(Some(job)) => {
                self.refused.remove(&new.issue);
                recorder.queued(&job, "GitHub");
            }
            // Another write queued it meanwhile, or a commit whose reply was lost did.
            Ok(None) => tracing::info!("{}: already has a job; left as it is", new.issue),
            Err(error) => {
                if self.refused.get(&new.issue) != Some(&new) {
                    tracing::warn!(
                        "{}: not queued: {error}; afk takes it again once its title, body or labels change",
                        new.issue
                    );
                    self.refused.insert(new.issue.clone(), new);
                } else {
                    tracing::debug!("{}: not queued again: {error}", new.issue);
                }
            }
        }
    }

    /// Checks the issue of one sync's deliveries about it and acts on it. A new issue is only
    /// taken here, its job queued later with the sync's others ([`Self::queue_taken`], which
    /// leaves out one the ledger refuses); a delivery whose write here (a known issue's job
    /// refreshed, requeued or cancelled) the ledger refuses as a bad value is skipped (said); on
    /// any other ledger failure the deliveries are kept for the next sync and the error returned.
    async fn answer(
        &mut self,
        group: IssueDeliveries,
        recorder: &mut Recorder,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        let first = group.events[0].clone();
        match self
            .on_event(first, group.withdraws, group.may_take, recorder, now)
            .await
        {
            Ok(()) => Ok(()),
            Err(ControlError::Ledger(error)) if error.is_bad_value() => {
                let delivery = &group.events[0].delivery;
                tracing::warn!(%delivery, "webhook delivery {delivery} skipped: {error}");
                Ok(())
            }
            Err(error) => {
                self.deferred.extend(group.events);
                self.bound_deferred();
                Err(error)
            }
        }
    }

    /// Answers the deliveries held past the check budget once their early answer is due: by
    /// checking their issues, or by polling now when that costs GitHub less ([`answer_held`]).
    async fn answer_held(&mut self, recorder: &mut Recorder, now: DateTime<Utc>) -> Result<(), ControlError> {
        let at = Instant::now();
        if self.early_poll.is_some_and(|due| at < due) || self.next_poll.is_none_or(|next| next <= at) {
            // Not yet; or the regular poll is due in this sync and answers them.
            return Ok(());
        }
        let trigger = self.trigger().to_owned();
        let groups = coalesce(std::mem::take(&mut self.held), &trigger);
        if answer_held(groups.len(), self.labelled) == HeldAnswer::Poll {
            // The poll below answers them all.
            self.next_poll = None;
            return Ok(());
        }
        self.last_batch = Some(Instant::now());
        self.early_poll = None;
        let mut groups = groups.into_iter();
        while let Some(group) = groups.next() {
            if let Err(error) = self.answer(group, recorder, now).await {
                self.deferred.extend(groups.flat_map(|g| g.events));
                self.bound_deferred();
                return Err(error);
            }
        }
        Ok(())
    }

    /// Keeps a view of an issue held back for an untrusted edit whose live job took the vouched
    /// text, when afk has none (it restarted since): the job's next attempt needs the issue's
    /// author and URL for its prompt. The view's title and body are the job's, never the edited
    /// ones.
    async fn keep_view(
        &mut self,
        skipped: &SkippedIssue,
        recorder: &mut Recorder,
    ) -> Result<(), ControlError> {
        let (SkipReason::UntrustedEdit(edit), Some(url)) = (&skipped.reason, &skipped.url) else {
            return Ok(());
        };
        let key = skipped.key();
        if self.issues.contains_key(&key) {
            return Ok(());
        }
        let Some(job) = recorder.ledger().job_by_issue(&key).await? else {
            return Ok(());
        };
        if job.state.is_final() {
            return Ok(());
        }
        let view = EligibleIssue {
            repo: key.repo.clone(),
            number: key.number,
            title: job.title.clone(),
            body: job.body.clone(),
            labels: job.labels.clone(),
            author: skipped.author.clone(),
            url: url.clone(),
            priority: job.priority,
            labeled_by: edit.label.by.clone(),
            labeled_at: edit.label.at,
        };
        self.issues.insert(key, view);
        Ok(())
    }

    /// A live job whose issue a complete poll no longer lists: asks GitHub about that issue
    /// alone, so that one it deleted or transferred ends with that reason (final) and one that was
    /// closed or unlabelled is withdrawn (back when it is handed over again).
    async fn left(
        &mut self,
        job: &Job,
        recorder: &mut Recorder,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        let key = &job.issue;
        match self.intake.check(&key.repo, key.number).await {
            // Labelled again between the list and this look.
            Ok(Verdict::Eligible(issue)) => self.take(*issue, recorder, now).await,
            Ok(Verdict::Skipped(reason)) => self.skipped(key.clone(), reason, recorder, now).await,
            Err(error) => {
                // The list says it is not handed over any more; what exactly happened can wait.
                tracing::debug!("{key}: cannot look at the issue on its own: {error}; withdrawn");
                self.issues.remove(key);
                cancel(job, CancelReason::Withdrawn, recorder, now).await
            }
        }
    }

    /// Acts on an issue GitHub says afk may not take now: a deleted or transferred issue's job is
    /// cancelled for good, a withdrawn one's is cancelled until it is handed over again, and one
    /// held back for an untrusted edit keeps its job (see [`Self::held_back`]).
    async fn skipped(
        &mut self,
        key: IssueKey,
        reason: SkipReason,
        recorder: &mut Recorder,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        let cancel_reason = match &reason {
            SkipReason::Gone(_) => CancelReason::IssueGone,
            reason if reason.withdraws() => CancelReason::Withdrawn,
            _ => return self.held_back(key, reason, recorder).await,
        };
        self.issues.remove(&key);
        // Taken earlier but not queued yet: not to be queued now.
        self.to_queue.remove(&key);
        if let Some(job) = recorder.ledger().job_by_issue(&key).await? {
            if let SkipReason::Gone(gone) = &reason {
                tracing::warn!("{key}: {gone}; its job ends and afk no longer looks at it");
            }
            cancel(&job, cancel_reason, recorder, now).await?;
        }
        Ok(())
    }

    /// An issue still handed over but not to be taken now. When its text changed under an
    /// untrusted editor and afk has not taken it (no job, or only a cancelled one), a notice is
    /// queued for the reporter, which says it on the issue once per trusted label; a job that
    /// took the vouched text goes on with it.
    async fn held_back(
        &mut self,
        key: IssueKey,
        reason: SkipReason,
        recorder: &mut Recorder,
    ) -> Result<(), ControlError> {
        let SkipReason::UntrustedEdit(edit) = reason else {
            return Ok(());
        };
        // One taken this sync and waiting to be queued is taken too.
        let taken = self.to_queue.contains(&key)
            || recorder
                .ledger()
                .job_by_issue(&key)
                .await?
                .is_some_and(|job| job.state != JobState::Cancelled);
        if !taken {
            self.notices.push((key, *edit));
        }
        Ok(())
    }

    /// Checks the issue of `event` (and of every delivery about it this sync: one of them
    /// `withdraws` it, one `may_take` it) as it is now on GitHub, and acts on what GitHub says.
    async fn on_event(
        &mut self,
        event: WebhookEvent,
        withdraws: bool,
        may_take: bool,
        recorder: &mut Recorder,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        // GitHub names are case-insensitive; jobs are keyed by the spelling in [github] repos.
        let configured = self
            .intake
            .config()
            .repos
            .iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(event.repo.as_str()))
            .cloned();
        let Some(repo) = configured else {
            // An organisation webhook or an App installed more widely than afk is configured.
            tracing::info!(
                "{}#{}: webhook for a repository not under [github] repos; ignored",
                event.repo,
                event.number
            );
            return Ok(());
        };
        let key = IssueKey {
            repo: repo.clone(),
            number: event.number,
        };
        // Deliveries may arrive late or out of order (a `closed` after the `reopened`): act on what
        // GitHub says now, once for all of them.
        match self.intake.check(&repo, event.number).await {
            Ok(Verdict::Eligible(issue)) if may_take => self.take(*issue, recorder, now).await?,
            Ok(Verdict::Eligible(_)) => {
                tracing::info!("{key}: a stale webhook withdrew an issue that is still eligible; ignored")
            }
            Ok(Verdict::Skipped(reason)) => {
                if !withdraws {
                    tracing::info!("{key}: not taken: {reason}");
                }
                self.skipped(key, reason, recorder, now).await?;
            }
            // Polling will look again.
            Err(error) => {
                tracing::warn!("{key}: cannot check the issue on GitHub yet: {error}; polling will")
            }
        }
        Ok(())
    }

    /// Takes an eligible issue: one with no job is queued with the others of this sync
    /// ([`Self::queue_taken`]); a known one's job is refreshed or requeued at once.
    async fn take(
        &mut self,
        issue: EligibleIssue,
        recorder: &mut Recorder,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        let key = issue.key();
        let new = NewJob {
            issue: key.clone(),
            title: issue.title.clone(),
            body: issue.body.clone(),
            labels: issue.labels.clone(),
            priority: issue.priority,
            source: JobSource::GitHub,
        };
        let labeled_at = issue.labeled_at;
        self.issues.insert(key.clone(), issue);
        match recorder.ledger().job_by_issue(&key).await? {
            None => {
                // The latest view, once, if it is taken twice before it is queued.
                self.to_queue.push(new);
            }
            Some(job) => {
                // A trusted person applied the trigger label after the job ended without success
                // (e.g. after fixing AFK.md): they ask for it again. afk's own `afk:failed` after
                // an older label makes intake skip the issue as finished, so an eligible issue
                // with a label older than the job's end is one afk has not reported on yet.
                let relabelled = matches!(
                    job.state,
                    JobState::Failed | JobState::GivenUp | JobState::Cancelled | JobState::Closed
                ) && labeled_at.is_some_and(|at| at > job.updated_at);
                // An eligible issue's text is vouched for (nobody untrusted changed it since the
                // trusted label): a job that has not started yet, or one that comes back, takes
                // it. A job under way keeps the text it started with. Labels and priority follow
                // the issue.
                let fresh_start = (job.state == JobState::Queued && job.attempts == 0)
                    || job.state == JobState::Cancelled
                    || relabelled;
                let refreshed = if fresh_start {
                    new
                } else {
                    NewJob {
                        title: job.title.clone(),
                        body: job.body.clone(),
                        ..new
                    }
                };
                if job.title != refreshed.title
                    || job.body != refreshed.body
                    || job.labels != refreshed.labels
                    || job.priority != refreshed.priority
                {
                    recorder.ledger().upsert_job(&refreshed, now).await?;
                }
                if relabelled {
                    // With a fresh budget, whatever ended it (the machine decides).
                    let back = Event::Requeue {
                        by: RequeueBy::Relabelled,
                    };
                    recorder.offer(&job, &back, now).await?;
                } else if job.state == JobState::Cancelled {
                    // Back only if GitHub withdrew it (the machine decides).
                    let back = Event::Requeue {
                        by: RequeueBy::Source(JobSource::GitHub),
                    };
                    recorder.offer(&job, &back, now).await?;
                }
            }
        }
        Ok(())
    }
}

/// Cancels a GitHub job whose issue left afk's hands, for `reason`.
async fn cancel(
    job: &Job,
    reason: CancelReason,
    recorder: &mut Recorder,
    now: DateTime<Utc>,
) -> Result<(), ControlError> {
    if job.source != JobSource::GitHub || job.state.is_final() {
        return Ok(());
    }
    // While afk follows the job's pull request (in review, or in a follow-up turn), the pull
    // request decides how the job ends: its merge closes the issue (`Closes #N`), which must read
    // as `merged`, not as a withdrawal.
    let followed = match job.state {
        JobState::InReview => true,
        JobState::Running | JobState::NeedsInput => recorder.ledger().follow_ups_used(job.id).await? > 0,
        _ => false,
    };
    if followed && reason == CancelReason::Withdrawn {
        tracing::debug!(
            "{}: left afk's hands while its pull request is followed; the pull request decides",
            job.issue
        );
        return Ok(());
    }
    recorder.record(job, &Event::Cancel { reason }, None, now).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_past_the_budget_are_answered_by_a_poll_at_once_when_the_last_is_older_than_the_gap() {
        let now = Instant::now();
        let last = now.checked_sub(EARLY_POLL_GAP * 2).unwrap_or(now);
        let regular = now + Duration::from_secs(30);
        assert_eq!(early_poll_at(Some(last), Some(regular), now), Some(now));
    }

    #[test]
    fn deliveries_just_after_a_poll_wait_for_the_gap_not_the_poll_interval() {
        let now = Instant::now();
        let regular = now + Duration::from_secs(30);
        assert_eq!(
            early_poll_at(Some(now), Some(regular), now + EARLY_POLL_GAP / 2),
            Some(now + EARLY_POLL_GAP)
        );
    }

    #[test]
    fn a_poll_due_sooner_than_the_gap_stays_and_one_never_made_stays_due_at_once() {
        let now = Instant::now();
        let soon = now + EARLY_POLL_GAP / 4;
        assert_eq!(early_poll_at(Some(now), Some(soon), now), Some(soon));
        assert_eq!(early_poll_at(None, None, now), None);
    }

    #[test]
    fn held_deliveries_are_checked_unless_a_poll_of_the_labelled_issues_costs_less() {
        // Thousands of labelled issues: a few deliveries are checked, not answered by a listing
        // of them all.
        assert_eq!(answer_held(1, 5_000), HeldAnswer::Checks);
        assert_eq!(answer_held(200, 5_000), HeldAnswer::Checks);
        // As many deliveries as labelled issues, or no poll to go by yet: a poll answers them.
        assert_eq!(answer_held(50, 60), HeldAnswer::Poll);
        assert_eq!(answer_held(1, 0), HeldAnswer::Poll);
        // At the crossing, the cheaper side: 4 checks cost 16 requests, a poll of 15 issues 16.
        assert_eq!(answer_held(4, 15), HeldAnswer::Poll);
        assert_eq!(answer_held(4, 16), HeldAnswer::Checks);
    }

    fn delivery(number: u64) -> WebhookEvent {
        WebhookEvent {
            repo: "octo/app".parse().expect("a repository"),
            number,
            kind: afk_github::WebhookEventKind::Closed,
            delivery: format!("d{number}"),
        }
    }

    #[test]
    fn held_deliveries_past_the_cap_are_dropped_for_a_poll() {
        let mut held = Vec::new();
        assert!(!hold(&mut held, (0..MAX_HELD as u64 - 1).map(delivery).collect()));
        assert!(!hold(&mut held, vec![delivery(1)]), "up to the cap they are kept");
        assert_eq!(held.len(), MAX_HELD);
        assert!(hold(&mut held, vec![delivery(2)]), "past it a poll answers them");
        assert!(held.is_empty(), "none is kept once a poll is to answer them all");
    }

    fn view(number: u64, title: &str) -> NewJob {
        NewJob {
            issue: IssueKey {
                repo: "octo/app".parse().expect("a repository"),
                number,
            },
            title: title.into(),
            body: String::new(),
            labels: vec![],
            priority: afk_core::Priority::new(2).expect("a priority"),
            source: JobSource::GitHub,
        }
    }

    #[test]
    fn issues_wait_to_be_queued_once_each_as_last_seen_in_the_order_last_taken() {
        let mut pending = Pending::default();
        assert!(pending.is_empty());
        for number in 1..=4 {
            pending.push(view(number, "first"));
        }
        // Taken again: its latest view, moved behind the others.
        pending.push(view(2, "edited"));
        // Withdrawn, and withdrawn again (nothing to do).
        pending.remove(&view(3, "").issue);
        pending.remove(&view(3, "").issue);
        // What `held_back` asks: an issue taken this sync is taken, even before it is queued.
        assert!(pending.contains(&view(2, "").issue));
        assert!(!pending.contains(&view(3, "").issue), "withdrawn");
        assert!(!pending.contains(&view(9, "").issue), "never taken");
        let batch: Vec<(u64, String)> = pending
            .take()
            .into_iter()
            .map(|new| (new.issue.number, new.title))
            .collect();
        assert_eq!(
            batch,
            [(1, "first".into()), (4, "first".into()), (2, "edited".into())]
        );
        assert!(pending.is_empty() && !pending.contains(&view(1, "").issue));
        // A batch put back after a failed write waits as before, in its order.
        for new in [view(1, "a"), view(4, "b")] {
            pending.push(new);
        }
        assert_eq!(pending.take().len(), 2);
    }

    #[test]
    fn the_check_budget_holds_ten_checks_per_interval_and_renews_with_the_next() {
        let interval = Duration::from_secs(30);
        let start = Instant::now();
        let mut budget = CheckBudget::default();
        let spent = (0..15).filter(|_| budget.spend(interval, start)).count();
        assert_eq!(spent, WEBHOOK_CHECKS_PER_POLL as usize);
        assert!(budget.first_early_poll(), "the first time past it is said");
        assert!(!budget.first_early_poll(), "once per interval");
        assert!(
            budget.spend(interval, start + interval),
            "a new interval, a new budget"
        );
    }
}
