//! The control plane: one loop that takes jobs from the sources, dispatches them to T3, watches
//! their threads to the end and applies the retry policy.
//!
//! Every step follows the same rule: decide with [`afk_core::apply`], record the transition in the
//! [`Ledger`], and only then send anything to T3. A crash at any point therefore leaves a ledger
//! from which the next [`ControlPlane::tick`] carries the work on with the ids already chosen, so a
//! job is never lost and never dispatched twice.

mod dispatcher;
mod github;
mod intake;
mod watcher;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use afk_core::{apply, Event, IssueKey, JobState, Repo, RetryPolicy, Transition};

use crate::policy::RepoTarget;
use afk_ledger::{Job, Ledger, LedgerError, NewAttempt, WatchedAttempt};
use chrono::{DateTime, Utc};
use t3_client::{Fleet, ShellFeed, T3Client};

pub use github::{GitHubSide, JobPrompt};
pub use watcher::StallTracker;

/// The limits on work in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Attempts in flight (dispatching or running) across all repositories.
    pub max_concurrent: usize,
    /// Attempts in flight per repository.
    pub per_repo: usize,
}

/// How the watcher decides that a running thread has gone wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A running thread whose `updatedAt` has not moved for this long is stalled.
    pub stall: Duration,
    /// An attempt running for longer than this (from when T3 accepted its turn) has timed out.
    pub turn: Duration,
    /// A thread is lost only when T3's view has lacked it for this long (and in two views in a
    /// row): a view taken just as T3 applies a command, or a stream a moment behind a dispatch
    /// reply, may not show it yet. The poll interval.
    pub lost_after: Duration,
}

/// Everything the control plane needs besides its ledger and its T3 client.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Retry and back-off.
    pub retry: RetryPolicy,
    /// Work in flight.
    pub limits: Limits,
    /// Stall and turn timeouts.
    pub timeouts: Timeouts,
    /// The T3 project and dispatch mode of each repository; a job for a repository without one
    /// fails.
    pub projects: BTreeMap<Repo, RepoTarget>,
    /// The local issue folder, when that source is on.
    pub local_source: Option<PathBuf>,
}

/// One transition the control plane recorded, for progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The job's issue.
    pub issue: IssueKey,
    /// Its state before.
    pub from: JobState,
    /// Its state after.
    pub to: JobState,
    /// The ledger's note.
    pub note: String,
}

/// What one tick saw and did.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    /// The transitions recorded, in order.
    pub progress: Vec<Progress>,
    /// False when T3 could not be reached (nothing was dispatched or watched).
    pub t3_reachable: bool,
}

/// Errors that stop a tick. T3 errors never do: they are handled as events of the job concerned.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The control plane. Keeps nothing in memory but observations and caches (stall timers, GitHub's
/// latest view, what was reported); all state that matters is in the ledger.
pub struct ControlPlane {
    ledger: Ledger,
    t3: T3Client,
    /// Reads the snapshot; the operate client unless a read-only token was configured.
    reader: T3Client,
    settings: Settings,
    stalls: StallTracker,
    t3_was_reachable: Option<bool>,
    github: Option<GitHubSide>,
    /// Webhook events that woke the run loop, handled at the start of the next tick.
    pending_events: Vec<afk_github::WebhookEvent>,
    /// T3's shell stream, when push watching is on; the snapshot is polled while it is down.
    feed: Option<ShellFeed>,
    /// Whether the last view came from the stream (for logging the switch once).
    following_stream: Option<bool>,
    /// The live attempts as last read, reused while nothing was recorded: see
    /// [`ControlPlane::watched_attempts`].
    watched: std::sync::Mutex<Option<(Arc<Vec<WatchedAttempt>>, std::time::Instant)>>,
}

/// How long a cached read of the live attempts may be reused at most, even when this control plane
/// recorded nothing: a bound on trusting that nothing else wrote the ledger.
const WATCHED_REREAD: Duration = Duration::from_secs(30);

impl ControlPlane {
    /// A control plane over `ledger`, sending to T3 with `t3`.
    pub fn new(ledger: Ledger, t3: T3Client, settings: Settings) -> Self {
        Self {
            ledger,
            reader: t3.clone(),
            t3,
            settings,
            stalls: StallTracker::default(),
            t3_was_reachable: None,
            github: None,
            pending_events: Vec::new(),
            feed: None,
            following_stream: None,
            watched: std::sync::Mutex::new(None),
        }
    }

    /// Watches T3 through `feed` (its shell stream), polling the snapshot only while the stream
    /// is down; [`ControlPlane::run`] then also ticks as soon as a thread changes state.
    pub fn with_feed(mut self, feed: ShellFeed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Takes issues from GitHub and reports on them there, besides any local folder.
    pub fn with_github(mut self, github: GitHubSide) -> Self {
        self.github = Some(github);
        self
    }

    /// Reads T3's snapshot with `reader` (least privilege: a client with an `orchestration:read`
    /// token) instead of the operate client.
    pub fn with_reader(mut self, reader: T3Client) -> Self {
        self.reader = reader;
        self
    }

    /// True when the last tick read T3's view from the shell stream (not the snapshot).
    pub fn is_following_stream(&self) -> bool {
        self.following_stream == Some(true)
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// One pass: sync the sources, read T3's snapshot, watch live attempts, stop threads that must
    /// stop, settle timed-out and lost jobs, resume interrupted dispatches, and dispatch ready jobs
    /// within the limits. When T3 cannot be reached, only the sources are synced.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<TickReport, ControlError> {
        let mut report = TickReport::default();
        if let Some(dir) = self.settings.local_source.clone() {
            intake::sync_local(self, &dir, now, &mut report).await?;
        }
        if let Some(mut gh) = self.github.take() {
            let events = std::mem::take(&mut self.pending_events);
            let synced = github::sync(self, &mut gh, events, now, &mut report).await;
            self.github = Some(gh);
            synced?;
        }
        if let Some(view) = self.read_snapshot().await {
            report.t3_reachable = true;
            // Read once and shared: the watcher looks only at running attempts and resumption only
            // at dispatching ones, and nothing in between moves a dispatching job.
            let live = self.watched_attempts().await?;
            let to_stop = self.ledger.attempts_to_stop().await?;
            if let Some(snapshot) = self.confirmed(view, &live, &to_stop).await {
                let recorded = report.progress.len();
                watcher::watch(self, &snapshot, &live, now, &mut report).await?;
                // A timeout the watcher just recorded adds a thread to stop: read them again then.
                let to_stop = if report.progress.len() > recorded {
                    self.ledger.attempts_to_stop().await?
                } else {
                    to_stop
                };
                // Jobs whose previous thread may still be working: they neither settle nor get a
                // new attempt, and they count against the limits.
                let stopping = watcher::stop_threads(self, &snapshot, to_stop, now).await?;
                watcher::settle(self, &stopping, now, &mut report).await?;
                dispatcher::resume(self, &snapshot, &live, now, &mut report).await?;
                dispatcher::dispatch_ready(self, &snapshot, &stopping, now, &mut report).await?;
            }
        }
        if let Some(mut gh) = self.github.take() {
            let reported = github::report(self, &mut gh).await;
            self.github = Some(gh);
            reported?;
        }
        Ok(report)
    }

    /// The live attempts, read from the ledger only when this control plane recorded a transition
    /// since the last read (every change to an attempt goes through [`ControlPlane::transition`],
    /// and one control plane holds the ledger) or the last read is older than [`WATCHED_REREAD`]:
    /// a quiet tick over a large fleet then reads nothing.
    async fn watched_attempts(&self) -> Result<Arc<Vec<WatchedAttempt>>, ControlError> {
        let cached = self
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(_, at)| at.elapsed() < WATCHED_REREAD)
            .map(|(live, _)| live.clone());
        if let Some(live) = cached {
            return Ok(live);
        }
        let live = Arc::new(self.ledger.watched_attempts().await?);
        *self.watched.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((live.clone(), std::time::Instant::now()));
        Ok(live)
    }

    /// Forgets the cached live attempts: the ledger changed.
    fn ledger_changed(&self) {
        *self.watched.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `view`, unless it came from the stream and lacks the thread of a running attempt or of one
    /// being stopped: a stream can lag or stall, so a thread is judged gone (or stopped) only on
    /// T3's own snapshot, which then replaces the view. `None` when that snapshot cannot be read:
    /// nothing is concluded this tick.
    async fn confirmed(
        &self,
        view: Arc<Fleet>,
        live: &[WatchedAttempt],
        to_stop: &[(Job, afk_ledger::Attempt)],
    ) -> Option<Arc<Fleet>> {
        if self.following_stream != Some(true) || !watcher::lacks_any(&view, live, to_stop) {
            return Some(view);
        }
        match self.reader.snapshot().await {
            Ok(model) => Some(Arc::new(Fleet::from(model))),
            Err(error) => {
                tracing::debug!(
                    "cannot confirm the stream's view with a snapshot, concluding nothing: {error}"
                );
                None
            }
        }
    }

    /// T3's view of the fleet: the shell stream's while it is live, else the snapshot; `None`
    /// (logged once per outage) when T3 cannot be read: then nothing is dispatched or watched
    /// until it answers.
    async fn read_snapshot(&mut self) -> Option<Arc<Fleet>> {
        if let Some(feed) = &self.feed {
            match feed.fleet() {
                Some(fleet) => {
                    if self.following_stream != Some(true) {
                        tracing::info!(
                            "following T3's shell stream at {} ({} threads)",
                            self.t3.base_url(),
                            fleet.len()
                        );
                    }
                    self.following_stream = Some(true);
                    self.t3_was_reachable = Some(true);
                    return Some(fleet);
                }
                None => {
                    if self.following_stream == Some(true) {
                        tracing::warn!(
                            "T3's shell stream is down ({}); polling the snapshot until it is back",
                            feed.status()
                        );
                    }
                    self.following_stream = Some(false);
                }
            }
        }
        match self
            .reader
            .snapshot()
            .await
            .map(|model| Arc::new(Fleet::from(model)))
        {
            Ok(snapshot) => {
                if self.t3_was_reachable != Some(true) {
                    tracing::info!(
                        "T3 at {} is reachable ({} threads)",
                        self.t3.base_url(),
                        snapshot.len()
                    );
                }
                self.t3_was_reachable = Some(true);
                Some(snapshot)
            }
            Err(error) => {
                if self.t3_was_reachable != Some(false) {
                    tracing::warn!(
                        "waiting for T3 at {}: {error}; nothing is dispatched or watched until it answers",
                        self.t3.base_url()
                    );
                }
                self.t3_was_reachable = Some(false);
                None
            }
        }
    }

    /// The prompt of `job`'s next attempt: from its repository's `AFK.md` for GitHub jobs, else
    /// from the issue itself. `Ok(None)`: not now; `Err`: the job cannot be dispatched.
    async fn prompt_for(&mut self, job: &Job) -> Result<Option<JobPrompt>, String> {
        if job.source != afk_core::JobSource::GitHub {
            return Ok(Some(JobPrompt {
                text: crate::prompt::render(job),
                ..JobPrompt::default()
            }));
        }
        match self.github.as_mut() {
            Some(gh) => github::prompt(gh, job).await,
            None => Err("the job came from GitHub, but [github] is not configured".into()),
        }
    }

    /// Applies `event` to `job` and records it; `None` when the event does not apply to the job's
    /// current state (someone else moved it on: a stale view, logged and skipped).
    async fn transition(
        &self,
        job: &Job,
        event: &Event,
        new_attempt: Option<&NewAttempt>,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<Option<(Transition, Job)>, ControlError> {
        let transition = match apply(job.status(), event, &self.settings.retry, now) {
            Ok(transition) => transition,
            Err(invalid) => {
                tracing::debug!("job {}: {invalid}", job.issue);
                return Ok(None);
            }
        };
        // Whatever the outcome, the cached live attempts may be stale now (a conflict means
        // someone else moved the job).
        self.ledger_changed();
        let updated = match self.ledger.record(job.id, &transition, new_attempt, now).await {
            Ok(updated) => updated,
            Err(LedgerError::Conflict { .. }) => {
                tracing::debug!("job {}: changed under us, skipping {event:?}", job.issue);
                return Ok(None);
            }
            Err(other) => return Err(other.into()),
        };
        tracing::info!(
            "{} {} -> {}: {}",
            job.issue,
            transition.from,
            transition.to,
            transition.note
        );
        report.progress.push(Progress {
            issue: job.issue.clone(),
            from: transition.from,
            to: transition.to,
            note: transition.note.clone(),
        });
        Ok(Some((transition, updated)))
    }

    /// Records `event` when the machine allows it for `job`, and quietly does nothing when it
    /// does not: for events a source offers on every scan (an issue that is back may or may not
    /// bring its job back).
    async fn offer(
        &self,
        job: &Job,
        event: &Event,
        now: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), ControlError> {
        if apply(job.status(), event, &self.settings.retry, now).is_ok() {
            self.transition(job, event, None, now, report).await?;
        }
        Ok(())
    }

    /// Reports a job a source just queued.
    fn queued(job: &Job, from: &str, report: &mut TickReport) {
        tracing::info!("{} queued from {from} (job {})", job.issue, job.id);
        report.progress.push(Progress {
            issue: job.issue.clone(),
            from: JobState::Queued,
            to: JobState::Queued,
            note: "queued".into(),
        });
    }

    /// Runs ticks every `poll_interval` until `shutdown` resolves; a tick in progress is finished
    /// first, so that no transition is left half done. `on_tick` sees each tick's report. A tick
    /// that fails (the ledger is unreachable) is logged and the loop goes on.
    pub async fn run(
        &mut self,
        poll_interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
        mut on_tick: impl FnMut(&TickReport),
    ) {
        tokio::pin!(shutdown);
        let mut changes = self.feed.as_ref().map(ShellFeed::changes);
        loop {
            match self.tick(Utc::now()).await {
                Ok(report) => on_tick(&report),
                // The ledger is the source of truth: when it cannot be written, nothing is done
                // and the next tick tries again (a database restart must not stop afk).
                Err(error) => tracing::error!("tick failed, retrying at the next poll: {error}"),
            }
            let github = &mut self.github;
            let woken_by = tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(poll_interval) => None,
                event = next_webhook_event(github) => event,
                // A thread that changed state in T3 is acted on at once, not at the next poll.
                () = next_fleet_change(&mut changes) => None,
            };
            // A webhook event wakes the loop at once: a closed issue's thread stops now, not at the
            // next poll.
            self.pending_events.extend(woken_by);
        }
    }
}

async fn next_fleet_change(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                // The feed is gone: only the poll timer and webhooks wake the loop now.
                *changes = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

async fn next_webhook_event(github: &mut Option<GitHubSide>) -> Option<afk_github::WebhookEvent> {
    match github {
        Some(gh) => gh.next_event().await,
        None => std::future::pending().await,
    }
}
