//! The control plane: one loop that takes jobs from the sources, dispatches them to T3, watches
//! their threads to the end, applies the retry policy and reports on the issues.
//!
//! Every step reads (the ledger, T3's view, the sources), decides with a plain function
//! ([`afk_core::apply`], [`watcher::thread_event`], [`dispatcher::dispatch_event`], ...), records
//! the transition through the one [`Recorder`](record::Recorder), and only then sends anything to
//! T3. A crash at any point therefore leaves a ledger from which the next
//! [`ControlPlane::tick`] carries the work on with the ids already chosen, so a job is never lost
//! and never dispatched twice.
//!
//! # Layout
//! - `record.rs`: the one place a job moves (decide, record, report progress);
//! - `intake/`: the sources' issues become jobs (`local.rs`: the folder; `github.rs`: GitHub);
//! - `dispatcher.rs`: ready jobs become attempts in T3; interrupted dispatches are finished;
//! - `watcher.rs`: T3's view becomes events; stalls, timeouts, stopping threads;
//! - `reporter.rs`: the status comment and labels on GitHub issues;
//! - `commands.rs`: comment commands (`/afk retry|stop|<instruction>`) from people with write
//!   access, taken once, answered with a reaction.
//!
//! **Errors:** T3's errors are events of the job concerned (or, for a refused token, nothing at
//! all); a ledger error ends the tick ([`ControlError`]) and the next tick starts afresh.

mod actions;
mod budget;
pub mod commands;
pub mod dispatcher;
mod follow;
mod intake;
mod live;
mod record;
mod reporter;
pub mod waiting;
pub mod watcher;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use afk_core::{AttemptNo, IssueKey, JobId, JobState, Repo, RetryPolicy};
use afk_github::{Intake as GitHubIssues, PolicyStore, Reporter, WebhookEvent};
use afk_ledger::{Ledger, LedgerError, Wait};
use chrono::{DateTime, Utc};
use t3_client::{ShellFeed, T3Client, ThreadId};
use tokio::sync::mpsc;

pub use intake::GitHubIntake;
pub use reporter::StatusReporter;

use crate::policy::{Policies, RepoTarget};
use dispatcher::Dispatcher;
use intake::Intake;
use record::Recorder;
use waiting::{Credential, Say, Topic, Waiting, Waits};
use watcher::Watcher;

/// The limits on work in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Attempts in flight (dispatching or running) across all repositories.
    pub max_concurrent: usize,
    /// Attempts in flight per repository.
    pub per_repo: usize,
    /// Dispatches of one tick sent at once (worktree bootstraps take T3 up to seconds each): one
    /// slow bootstrap does not hold the others back.
    pub parallel_dispatches: usize,
}

/// The tick's clock: the tick's `now` (an argument, so tests drive time) plus the time the
/// tick has taken since. A transition recorded late in a tick (an attempt whose dispatch was
/// answered seconds after the tick began) is stamped with when it happened, not with the tick's
/// start: the turn timeout counts from when T3 accepted the attempt's turn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TickClock {
    start: DateTime<Utc>,
    at: std::time::Instant,
}

impl TickClock {
    /// A clock reading `now` at this instant.
    pub(crate) fn started(now: DateTime<Utc>) -> Self {
        Self {
            start: now,
            at: std::time::Instant::now(),
        }
    }

    /// The tick's start.
    pub(crate) fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// The time now: the tick's start plus what has passed since.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.at_instant(std::time::Instant::now())
    }

    /// The time at `instant` (taken after the clock started).
    pub(crate) fn at_instant(&self, instant: std::time::Instant) -> DateTime<Utc> {
        let passed = instant.saturating_duration_since(self.at);
        self.start + chrono::Duration::from_std(passed).unwrap_or_default()
    }
}

/// How the watcher decides that a running thread has gone wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A running thread whose `updatedAt` has not moved for this long is stalled.
    pub stall: Duration,
    /// An attempt running for longer than this (from when T3 accepted its turn, the time its
    /// thread waited for people left out) has timed out.
    pub turn: Duration,
    /// A thread waiting for a person this long is given up on: its session is stopped (never
    /// interrupted) and its job fails (`[limits] answer_timeout`).
    pub answer: Duration,
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
    /// `[followup] max_turns`: follow-up turns afk starts on its own per job.
    pub follow_up_max_turns: u32,
    /// `[budget]`: agent time per job, agent time and new jobs per repository per day.
    pub budget: afk_core::BudgetLimits,
}

/// The GitHub side of afk: intake, `AFK.md` and reporting, all through `afk-github`.
pub struct GitHubSide {
    /// Trusted intake by poll and webhook.
    pub intake: GitHubIntake,
    /// Each repository's `AFK.md`.
    pub policies: PolicyStore,
    /// The status comment and labels.
    pub reporter: StatusReporter,
    /// Comment commands, when on.
    pub commands: Option<commands::CommentIntake>,
}

impl GitHubSide {
    /// A GitHub side polling every `poll_interval`, linking threads under `thread_url_base`, and
    /// taking webhook events from `events` when webhooks are on.
    pub fn new(
        intake: GitHubIssues,
        policies: PolicyStore,
        reporter: Reporter,
        poll_interval: Duration,
        thread_url_base: Option<String>,
        events: Option<mpsc::Receiver<WebhookEvent>>,
    ) -> Self {
        Self {
            intake: GitHubIntake::new(intake, poll_interval, events),
            policies,
            reporter: StatusReporter::new(reporter, thread_url_base),
            commands: None,
        }
    }

    /// Takes comment commands (`/afk ...`) through `commands`, polling a few jobs' issues for
    /// them every `poll_interval` besides `issue_comment` webhooks.
    pub fn with_comment_commands(
        mut self,
        commands: afk_github::CommentCommands,
        poll_interval: Duration,
    ) -> Self {
        self.commands = Some(commands::CommentIntake::new(commands, poll_interval));
        self
    }
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
/// latest view, the last `AFK.md` settings); all state that matters is in the ledger.
pub struct ControlPlane {
    recorder: Recorder,
    intake: Intake,
    policies: Policies,
    dispatcher: Dispatcher,
    watcher: Watcher,
    reporter: Option<StatusReporter>,
    /// Comment commands on GitHub, when on.
    commands: Option<commands::CommentIntake>,
    /// The configured GitHub repositories (jobs are keyed by their spelling).
    github_repos: Vec<Repo>,
    /// Repositories with live jobs whose AFK.md budgets could not be read yet: asked again on
    /// every tick until they are known.
    budgets_pending: BTreeSet<Repo>,
    /// Why afk waits now, if it does (kept in the ledger too, for `afk status`).
    waits: Waits,
    /// The token the watcher reads T3 with.
    read_credential: Credential,
    /// The status surface: actions to carry out, refresh requests, what to tell of each tick.
    status: Option<crate::status::PlaneLink>,
    /// True when T3's view is followed through the shell stream (`[watch] push`).
    has_feed: bool,
    /// Pull request follow-through and follow-up turns.
    follow: follow::FollowThrough,
}

impl ControlPlane {
    /// A control plane over `ledger`, sending to T3 with `t3`.
    pub fn new(ledger: Ledger, t3: T3Client, settings: Settings) -> Self {
        let policies = Policies::new(
            settings.projects,
            settings.limits.per_repo,
            t3.settings().branch_prefix.clone(),
        )
        .with_budget(settings.budget);
        let follow = follow::FollowThrough::new(t3.clone(), settings.follow_up_max_turns);
        Self {
            recorder: Recorder::new(ledger, settings.retry),
            intake: Intake {
                local: settings.local_source.map(intake::LocalIntake::new),
                github: None,
            },
            policies,
            watcher: Watcher::new(t3.clone(), settings.timeouts),
            dispatcher: Dispatcher::new(t3, settings.limits),
            reporter: None,
            commands: None,
            github_repos: Vec::new(),
            budgets_pending: BTreeSet::new(),
            waits: Waits::new(settings.timeouts.lost_after),
            read_credential: Credential::OPERATE,
            status: None,
            has_feed: false,
            follow,
        }
    }

    /// Serves the status surface: carries out its actions at the start of each tick, ticks at
    /// once on its refresh requests, and tells it (and its metrics) what each tick did.
    pub fn with_status(mut self, link: crate::status::PlaneLink) -> Self {
        self.recorder.observe(link.metrics());
        self.status = Some(link);
        self
    }

    /// Watches T3 through `feed` (its shell stream), polling the snapshot only while the stream
    /// is down; [`ControlPlane::run`] then also ticks as soon as a thread changes state.
    pub fn with_feed(mut self, feed: ShellFeed) -> Self {
        self.watcher.follow(feed);
        self.has_feed = true;
        self
    }

    /// Takes issues from GitHub, reads their repositories' `AFK.md` and reports on them there,
    /// besides any local folder.
    pub fn with_github(mut self, github: GitHubSide) -> Self {
        self.github_repos = github.intake.repos().to_vec();
        self.intake.github = Some(github.intake);
        self.commands = github.commands;
        self.policies.read_afk_md(github.policies);
        self.reporter = Some(github.reporter);
        self
    }

    /// Reads T3's snapshot with `reader` (least privilege: a client with an `orchestration:read`
    /// token) instead of the operate client.
    pub fn with_reader(mut self, reader: T3Client) -> Self {
        self.watcher.read_with(reader);
        self.read_credential = Credential::READ;
        self
    }

    /// Why afk waits on `topic` now, and since when; `None` when it does not.
    pub fn waiting(&self, topic: Topic) -> Option<(&Waiting, DateTime<Utc>)> {
        self.waits.current(topic)
    }

    /// True when the last tick read T3's view from the shell stream (not the snapshot).
    pub fn is_following_stream(&self) -> bool {
        self.watcher.is_following_stream()
    }

    /// The event sequence T3's view from the shell stream has reached now (the stream's task
    /// applies T3's events as they come, between ticks too); `None` without a live, synchronized
    /// stream. Once it reaches T3's own sequence, the next tick sees every change made so far.
    /// For tests and benchmarks; nothing depends on it.
    pub fn stream_sequence(&self) -> Option<u64> {
        self.watcher.stream_sequence()
    }

    /// How many ticks so far skipped the watcher's pass over the live attempts because nothing
    /// changed at T3 or in the ledger since a pass that decided nothing and no timeout was due
    /// (push watching only). For tests and benchmarks; nothing depends on it.
    pub fn skipped_passes(&self) -> u64 {
        self.watcher.skipped_passes()
    }

    /// How many times so far a tick read every live attempt from the ledger: only when the
    /// ledger's count of changes to them moved past what the cache expects
    /// ([`Ledger::watched_changes`]: another process's write, or a move of this control plane's
    /// whose count the ledger could not measure), never on a quiet tick, nor after this control
    /// plane's own measured moves ([`ControlPlane::watched_patch_reads`]). For tests and
    /// benchmarks; nothing depends on it.
    pub fn watched_reads(&self) -> u64 {
        self.recorder.watched_reads()
    }

    /// Brings its cached read of the live attempts up to date with its own moves by reading back
    /// the moved jobs' (`true`, the default), or drops it after every move so that the next tick
    /// reads them all (`false`, as before): for benchmarks, to measure both in one run. Decisions
    /// are the same either way.
    pub fn patch_live_attempts(&mut self, on: bool) {
        self.recorder.patch_live_attempts(on);
    }

    /// How many times so far the live attempts of the jobs this control plane just moved were
    /// read back (those jobs only, [`Ledger::watched_attempts_of`]) to bring its cached read of
    /// the live attempts up to date, in place of a read of them all ([`ControlPlane::watched_reads`]).
    /// For tests and benchmarks; nothing depends on it.
    pub fn watched_patch_reads(&self) -> u64 {
        self.recorder.watched_patch_reads()
    }

    /// How many times so far a tick read the attempts to stop, the jobs to settle or the ready
    /// jobs from the ledger: only when a job or an attempt changed since the last read
    /// ([`afk_ledger::Ledger::changes`]: any write, from this control plane or any other
    /// process), this tick recorded a move before the read, or (for the ready jobs) a back-off
    /// ended; never on a quiet tick. For tests and benchmarks; nothing depends on it.
    pub fn tick_reads(&self) -> u64 {
        self.recorder.tick_reads()
    }

    /// How many ticks so far visited only the live attempts whose threads changed at T3 since a
    /// pass that decided nothing (push watching only). For tests and benchmarks.
    pub fn partial_passes(&self) -> u64 {
        self.watcher.partial_passes()
    }

    /// How many times the watcher indexed a read of the live attempts by thread (once per read
    /// that a quiet pass watched; a pass visiting changed threads only looks them up). For tests
    /// and benchmarks.
    pub fn live_index_builds(&self) -> u64 {
        self.watcher.index_builds()
    }

    /// How many live attempts the watcher's passes visited so far: every one on a whole pass,
    /// the changed threads' on a partial one, none on a skipped one. For tests and benchmarks.
    pub fn visited_attempts(&self) -> u64 {
        self.watcher.visited_attempts()
    }

    /// Skips quiet passes (`true`, the default) or never (`false`): for benchmarks, to measure
    /// what a quiet tick costs when the whole pass runs, as after any change at T3. Decisions are
    /// the same either way.
    pub fn skip_quiet_passes(&mut self, on: bool) {
        self.watcher.skip_quiet_passes(on);
    }

    /// The ledger the control plane records in (a clone shares its connections).
    pub fn ledger(&self) -> &Ledger {
        self.recorder.ledger()
    }

    /// One pass: sync the sources, read T3's view, watch live attempts, stop threads that must
    /// stop, settle timed-out and lost jobs, resume interrupted dispatches, dispatch ready jobs
    /// within the limits, and report on GitHub. When T3 cannot be reached, only the sources are
    /// synced and reported on.
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<TickReport, ControlError> {
        let started = std::time::Instant::now();
        if let Some(status) = &self.status {
            status.tick_started();
        }
        if let Some(reporter) = &self.reporter {
            reporter.begin_tick();
        }
        let outcome = self.tick_inner(now).await;
        if let Some(status) = &self.status {
            let streaming = self.has_feed.then(|| self.watcher.is_following_stream());
            match &outcome {
                Ok(report) => status.tick_finished(
                    report.progress.len(),
                    report.t3_reachable,
                    started.elapsed(),
                    streaming,
                ),
                Err(ControlError::Ledger(error)) => status.tick_failed(&error.to_string(), started.elapsed()),
            }
        }
        outcome
    }

    async fn tick_inner(&mut self, now: DateTime<Utc>) -> Result<TickReport, ControlError> {
        // Started before the sources are synced: a slow GitHub poll must not make what follows
        // in this tick look earlier than it happened (a turn timeout would then fire early).
        let clock = TickClock::started(now);
        // What a failed tick recorded was logged; the report covers this tick only.
        self.recorder.take_progress();
        self.recorder.begin_tick();
        if let Some(status) = &mut self.status {
            actions::carry_out(&mut self.recorder, status, now).await?;
        }
        let may_poll_github = self.waits.may_try(Topic::GitHub, now);
        self.intake.sync(&mut self.recorder, may_poll_github, now).await?;
        match self.intake.github_poll_outcome() {
            Some(Ok(())) => self.wait_over(Topic::GitHub).await?,
            Some(Err(waiting)) => self.wait_on(waiting, now).await?,
            None => {}
        }
        if let Some(commands) = &mut self.commands {
            // Before T3's view: a stop recorded now is carried out in this tick.
            let events = self.intake.github_comment_events();
            commands
                .sync(
                    &mut self.recorder,
                    events,
                    &self.github_repos,
                    may_poll_github,
                    self.follow.max_turns(),
                    now,
                )
                .await?;
        }
        let t3_reachable = self.follow_t3(clock).await?;
        let notices = self.intake.github_notices();
        if let Some(reporter) = &self.reporter {
            reporter.say_untrusted_edits(&notices).await;
            reporter.report(&mut self.recorder, &self.policies, now).await?;
            // The pull requests of jobs in review, then the follow-up turns recorded (now or
            // before a crash) and not yet accepted by T3.
            // Every `[github] poll_interval`, and at once after a pull request, review or
            // check delivery.
            let (woken, interval) = match self.intake.github.as_mut() {
                Some(github) => (github.take_pull_request_activity(), github.poll_interval()),
                None => (false, Duration::ZERO),
            };
            if self.follow.due(woken, interval) {
                self.follow
                    .follow(&mut self.recorder, reporter.github(), &mut self.policies, now)
                    .await?;
            }
            if t3_reachable {
                self.follow.send_unsent(&self.recorder).await?;
            }
        }
        Ok(TickReport {
            progress: self.recorder.take_progress(),
            t3_reachable,
        })
    }

    /// The part of a tick that needs T3's view; false when T3 cannot be read.
    async fn follow_t3(&mut self, clock: TickClock) -> Result<bool, ControlError> {
        let now = clock.start();
        let may_read = self.waits.may_try(Topic::T3Read, now);
        let view = match self.watcher.view(may_read).await {
            Some(Ok(view)) => view,
            Some(Err(error)) => {
                let base = self.watcher.base_url();
                let waiting = Waiting::t3(Topic::T3Read, self.read_credential, base, &error);
                self.wait_on(waiting, now).await?;
                return Ok(false);
            }
            // Left alone while a refusal backs off: the reason stands.
            None => return Ok(false),
        };
        self.wait_over(Topic::T3Read).await?;
        // Read once and shared: the watcher looks only at running attempts and resumption only
        // at dispatching ones, and nothing in between moves a dispatching job.
        // Reads the ledger's change counts first: the reads below are reused from the last tick
        // while no job or attempt changed since (a quiet tick reads that one row alone).
        let live = self.recorder.watched_attempts().await?;
        let to_stop = self.recorder.attempts_to_stop().await?;
        // Nothing changed at T3 nor in the ledger since a pass that decided nothing, and no
        // deadline it met has come: the walks over every live attempt below would decide nothing
        // again, so a quiet tick costs the same whatever the size of the fleet; and when only
        // some threads changed at T3, only their attempts are visited.
        // A repository whose AFK.md could not be read when its jobs were visited is asked again
        // on every tick, skipped or not: a partial or skipped pass may not visit its jobs for a
        // long while, and a budget it then finds moves the generation, so the pass is whole.
        let pending: Vec<Repo> = self.budgets_pending.iter().cloned().collect();
        self.load_budgets(pending).await;
        let budgets = self.policies.budget_generation();
        let pass = self.watcher.plan(&view, &live, !to_stop.is_empty(), budgets, now);
        let skip = pass == watcher::Pass::Skip;
        // The attempts this tick visits: all, none, or the changed ones (looked up by job).
        let visited: Vec<&afk_ledger::WatchedAttempt> = match &pass {
            watcher::Pass::Whole => live.iter().collect(),
            watcher::Pass::Changed(jobs) => jobs.iter().filter_map(|job| live.get(job)).collect(),
            watcher::Pass::Skip => Vec::new(),
        };
        // Whether the pass runs on the view as read, not on a snapshot that replaced it.
        let (fleet, as_read) = if pass != watcher::Pass::Whole {
            // No visited running or waiting attempt's thread is missing (`Watcher::plan`; a
            // deferred dispatch's may be, as on the whole pass): nothing to confirm.
            (view, true)
        } else {
            let Some(fleet) = self.watcher.confirmed(view.clone(), &visited, &to_stop).await else {
                return Ok(true);
            };
            let as_read = std::sync::Arc::ptr_eq(&view, &fleet);
            // Held no longer than needed: the stream's task copies a view someone still holds.
            drop(view);
            (fleet, as_read)
        };
        if let (Some(status), false) = (&self.status, skip) {
            status.saw_worktrees(visited.iter().filter_map(|a| {
                let path = fleet.thread(&a.thread_id)?.worktree_path()?.to_owned();
                Some((a.thread_id.to_string(), path))
            }));
        }
        let recorded = if skip {
            false
        } else {
            let whole = pass == watcher::Pass::Whole;
            let mut recorded = self
                .watcher
                .watch(&mut self.recorder, &fleet, &visited, whole, now)
                .await?;
            // After a restart, the budgets the running jobs' AFK.md sets (once per repository).
            // (Those still pending were asked again at the start of this tick.)
            let mut repos: Vec<Repo> = (visited.iter())
                .map(|a| a.issue.repo.clone())
                .filter(|r| {
                    self.github_repos.contains(r)
                        && !self.policies.budgets_known(r)
                        && !self.budgets_pending.contains(r)
                })
                .collect();
            repos.sort();
            repos.dedup();
            self.load_budgets(repos).await;
            // A turn that alone ran past its job's agent time budget is stopped ([budget]).
            recorded |=
                budget::stop_over_budget(&mut self.recorder, &self.policies, &fleet, &visited, now).await?;
            recorded
        };
        // A timeout the watcher just recorded adds a thread to stop: read them again then.
        let stopped_any = !to_stop.is_empty();
        let to_stop = if recorded {
            self.recorder.attempts_to_stop().await?
        } else {
            to_stop
        };
        if !to_stop.is_empty() {
            // A stop carried out is marked on its attempt: not through the recorder.
            self.recorder.wrote();
        }
        let stopping = self
            .watcher
            .stop_threads(self.recorder.ledger(), &fleet, to_stop, now)
            .await?;
        self.watcher.settle(&mut self.recorder, &stopping, now).await?;
        let may_send = self.waits.may_try(Topic::T3Operate, now);
        // Only the visited dispatches are resumed: a pass is only skipped (or made partial) when
        // every dispatching attempt left out waits out a back-off that has not passed (its end is
        // the quiet base's deadline); a changed one (a dispatch just deferred) is visited.
        self.dispatcher
            .resume(
                &mut self.recorder,
                &self.policies,
                &fleet,
                &visited,
                may_send,
                clock,
            )
            .await?;
        if !skip {
            // A partial visit's other deadlines (dispatch back-offs, budgets) are its base's:
            // the attempts left out are unchanged, and the budgets the same generation.
            let also_until = other_deadlines(&self.policies, &visited, now);
            self.watcher.pass_was_quiet(
                &fleet,
                as_read,
                &live,
                stopped_any || !stopping.is_empty(),
                also_until,
                budgets,
            );
        }
        if recorded {
            // Jobs moved (turns ended): their status comments before this tick's dispatches.
            // Their report marks bypass the recorder; the move recorded first already made it
            // drop its kept reads for this tick (`Recorder::wrote`), so `ready_jobs` reads anew.
            if let Some(reporter) = &self.reporter {
                reporter
                    .report_comments(&mut self.recorder, &self.policies, now)
                    .await?;
            }
        }
        self.dispatcher
            .dispatch_ready(
                &mut self.recorder,
                &mut self.policies,
                &self.intake,
                &fleet,
                &stopping,
                clock,
            )
            .await?;
        let tokens = self.dispatcher.take_token_check();
        if let Some(error) = tokens.refused {
            let base = self.dispatcher.base_url();
            let waiting = Waiting::t3(Topic::T3Operate, Credential::OPERATE, base, &error);
            self.wait_on(waiting, now).await?;
        } else if tokens.accepted {
            self.wait_over(Topic::T3Operate).await?;
        }
        Ok(true)
    }

    /// Notes that afk waits for `waiting`: said (and kept in the ledger) when it is new or its
    /// cause changed, and again every few minutes while it lasts.
    async fn wait_on(&mut self, waiting: Waiting, now: DateTime<Utc>) -> Result<(), ControlError> {
        let say = self.waits.note(waiting.clone(), now);
        if say == Say::Nothing {
            return Ok(());
        }
        let since = self.waits.current(waiting.topic).map_or(now, |(_, since)| since);
        say_waiting(&waiting, say, since);
        if waiting.topic != Topic::Ledger {
            self.recorder
                .ledger()
                .set_wait(&wait_record(&waiting, since, now))
                .await?;
        }
        Ok(())
    }

    /// Afk no longer waits on `topic`: said once, and forgotten in the ledger.
    async fn wait_over(&mut self, topic: Topic) -> Result<(), ControlError> {
        if let Some(waiting) = self.waits.clear(topic) {
            tracing::info!(
                topic = topic.as_str(),
                part = waiting.part.as_str(),
                "no longer waiting: {} works again",
                waiting.part
            );
            if topic != Topic::Ledger {
                self.recorder.ledger().clear_wait(topic.as_str()).await?;
            }
        }
        Ok(())
    }

    /// Runs ticks every `poll_interval` until `shutdown` resolves; a tick in progress is finished
    /// first, so that no transition is left half done. `on_tick` sees each tick's report. A tick
    /// that fails (the ledger is unreachable) is logged and the loop goes on, except when the
    /// ledger refused a write because another afk leads it now: the loop ends at once
    /// ([`RunEnd::Deposed`]) and acts no more.
    pub async fn run(
        &mut self,
        poll_interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
        mut on_tick: impl FnMut(&TickReport),
    ) -> RunEnd {
        tokio::pin!(shutdown);
        let mut changes = self.watcher.changes();
        loop {
            let now = Utc::now();
            let went_through = match self.tick(now).await {
                Ok(report) => {
                    // A tick that went through wrote the ledger (or could have).
                    let _ = self.wait_over(Topic::Ledger).await;
                    on_tick(&report);
                    true
                }
                Err(ControlError::Ledger(error)) if error.is_deposed() => {
                    return RunEnd::Deposed(error);
                }
                // The ledger is the source of truth: when it cannot be written, nothing is done
                // and the next tick tries again (a database restart must not stop afk).
                Err(ControlError::Ledger(error)) => {
                    let waiting = Waiting::ledger(self.recorder.ledger().url_redacted(), &error);
                    let _ = self.wait_on(waiting, now).await;
                    false
                }
            };
            // Webhook deliveries past GitHub's check budget wait for an early poll: tick when
            // it is due rather than a whole poll interval later.
            let sleep = match self.intake.github_early_poll_due() {
                Some(due) => poll_interval.min(due.saturating_duration_since(std::time::Instant::now())),
                None => poll_interval,
            };
            // Status comments written whose labels wait (a pass does a few): the next tick at
            // once, after anything that came meanwhile. Not after a failed tick: the labels
            // wait as long as the ledger, or the loop would spin on its error.
            let sleep = if went_through && self.reporter_has_labels_to_do() {
                Duration::ZERO
            } else {
                sleep
            };
            let woken_by = tokio::select! {
                _ = &mut shutdown => return RunEnd::Stopped,
                _ = tokio::time::sleep(sleep) => None,
                // A webhook event wakes the loop at once: a closed issue's thread stops now, not
                // at the next poll.
                event = self.intake.next_event() => event,
                // A thread that changed state in T3 is acted on at once, not at the next poll.
                () = next_fleet_change(&mut changes) => None,
                // So is a refresh or an action asked through the status surface.
                () = refresh_requested(self.status.as_ref()) => None,
            };
            if let Some(event) = woken_by {
                self.intake.defer(event);
            }
        }
    }

    /// Reads the AFK.md budgets of `repos`; those GitHub did not let afk read stay pending,
    /// asked again on every tick until they are known.
    async fn load_budgets(&mut self, repos: Vec<Repo>) {
        if repos.is_empty() {
            return;
        }
        self.policies.load_budgets(&repos).await;
        let policies = &self.policies;
        self.budgets_pending.retain(|r| !policies.budgets_known(r));
        self.budgets_pending
            .extend(repos.into_iter().filter(|r| !policies.budgets_known(r)));
    }

    /// True while the reporter has written status comments whose labels wait for the next
    /// passes (the run loop then ticks again at once).
    pub fn reporter_has_labels_to_do(&self) -> bool {
        self.reporter
            .as_ref()
            .is_some_and(StatusReporter::has_labels_to_do)
    }

    /// Forgets what this control plane cached of the ledger: called when it (again) takes the
    /// lead, since another afk may have written the ledger meanwhile.
    pub fn forget_cached_ledger(&mut self) {
        self.recorder.forget_cache();
        // What the reporter queued or wrote while leading before may be stale: another afk may
        // have reported since (the jobs not marked reported are reported again, whole).
        if let Some(reporter) = &self.reporter {
            reporter.forget();
        }
    }
}

/// Per attempt of `visited` (by job), the earliest instant at which the tick's steps besides
/// the watcher's could act on it with nothing changed: a dispatching attempt's resumption (its
/// back-off's end) and a running turn's budget stop ([`budget::turn_deadline`]); `Err` when a
/// dispatch is due now (its resumption may need the next tick too, so no tick is skipped).
fn other_deadlines(
    policies: &Policies,
    visited: &[&afk_ledger::WatchedAttempt],
    now: DateTime<Utc>,
) -> Result<Vec<(JobId, DateTime<Utc>)>, ()> {
    let mut deadlines = Vec::new();
    for attempt in visited {
        if attempt.job_state == JobState::Dispatching {
            match attempt.job_not_before {
                Some(at) if at > now => deadlines.push((attempt.job_id, at)),
                _ => return Err(()),
            }
        }
        if let Some(at) = budget::turn_deadline(policies, attempt) {
            deadlines.push((attempt.job_id, at));
        }
    }
    Ok(deadlines)
}

/// Why [`ControlPlane::run`] returned.
#[derive(Debug)]
pub enum RunEnd {
    /// The shutdown future resolved.
    Stopped,
    /// The ledger refused a write: another afk leads it now.
    Deposed(LedgerError),
}

/// Says why afk waits: at ERROR when a person must act, else at WARN, with the part at fault and
/// the failure's class as fields (and the whole outside text, when the reason holds part of it).
fn say_waiting(waiting: &Waiting, say: Say, since: DateTime<Utc>) {
    let again = match say {
        Say::Again => format!(
            " (since {})",
            since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        _ => String::new(),
    };
    let message = waiting.message();
    let (topic, part, kind) = (
        waiting.topic.as_str(),
        waiting.part.as_str(),
        waiting.kind.as_str(),
    );
    let detail = waiting.detail.as_deref();
    if waiting.needs_person {
        tracing::error!(
            topic,
            part,
            kind,
            needs_person = true,
            detail,
            "waiting: {message}{again}"
        );
    } else {
        tracing::warn!(
            topic,
            part,
            kind,
            needs_person = false,
            detail,
            "waiting: {message}{again}"
        );
    }
}

/// `waiting` as the ledger keeps it.
fn wait_record(waiting: &Waiting, since: DateTime<Utc>, now: DateTime<Utc>) -> Wait {
    Wait {
        topic: waiting.topic.as_str().to_owned(),
        part: waiting.part.clone(),
        message: waiting.message(),
        kind: waiting.kind.clone(),
        needs_person: waiting.needs_person,
        since,
        updated_at: now,
    }
}

/// The span of work on one job (and its attempt and thread, when known): every log line inside it
/// carries `issue`, `job`, `attempt` and `thread`, which log collectors filter on. At ERROR level
/// so that it exists whatever the filter: a warning inside it names its job even at `AFK_LOG=warn`.
pub(crate) fn job_span(
    issue: &IssueKey,
    job: JobId,
    attempt: Option<AttemptNo>,
    thread: Option<&ThreadId>,
) -> tracing::Span {
    tracing::error_span!(
        "job",
        issue = %issue,
        job = job.0,
        attempt = attempt.map(|a| a.0),
        thread = thread.map(ThreadId::as_str),
    )
}

async fn refresh_requested(status: Option<&crate::status::PlaneLink>) {
    match status {
        Some(status) => status.refresh_requested().await,
        None => std::future::pending().await,
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
