//! Intake from GitHub: issues carrying the trigger label applied by someone with write access,
//! by polling and by signed webhooks. GitHub is reached only through `afk-github`; this module
//! decides when to ask and what the answers mean for jobs.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use afk_core::{CancelReason, Event, IssueKey, JobSource, JobState, RequeueBy};
use afk_github::{EligibleIssue, Intake, Verdict, WebhookEvent};
use afk_ledger::{Job, NewJob};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::control::record::Recorder;
use crate::control::waiting::Waiting;
use crate::control::ControlError;

/// The GitHub source: trusted intake by poll and webhook, and the latest view of each eligible
/// issue (its author and URL, for prompts; the ledger keeps neither).
pub struct GitHubIntake {
    intake: Intake,
    poll_interval: Duration,
    next_poll: Option<Instant>,
    issues: HashMap<IssueKey, EligibleIssue>,
    /// Verified webhook deliveries, when webhooks are on.
    events: Option<mpsc::Receiver<WebhookEvent>>,
    /// Deliveries that woke the run loop, acted on at the next sync.
    deferred: Vec<WebhookEvent>,
    /// How the last poll went, until the control plane takes it.
    poll_outcome: Option<Result<(), Waiting>>,
    /// What webhook deliveries cost GitHub in the current poll interval.
    budget: CheckBudget,
}

/// Issue checks webhook deliveries may cost GitHub per poll interval. Past it, the deliveries of
/// the interval are left to one early poll: a burst of deliveries costs GitHub at most about one
/// poll's worth of requests.
const WEBHOOK_CHECKS_PER_POLL: u32 = 10;

/// The checks webhook deliveries spent since `since`, and whether the interval's early poll was
/// asked for.
#[derive(Debug, Default)]
struct CheckBudget {
    since: Option<Instant>,
    used: u32,
    polled_early: bool,
}

impl CheckBudget {
    /// True when one more check fits in the interval (and counts it).
    fn spend(&mut self, interval: Duration) -> bool {
        let now = Instant::now();
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

    /// True the first time per interval that the budget ran out: poll early, once.
    fn poll_early(&mut self) -> bool {
        !std::mem::replace(&mut self.polled_early, true)
    }
}

/// The deliveries of one sync, one per issue (in order of first delivery), each with whether any
/// of the issue's deliveries withdraws it and whether any may make it eligible: one check of the
/// issue answers them all.
fn coalesce(events: Vec<WebhookEvent>, trigger: &str) -> Vec<(WebhookEvent, bool, bool)> {
    let mut merged: Vec<(WebhookEvent, bool, bool)> = Vec::new();
    for event in events {
        let (withdraws, may_take) = (event.withdraws(trigger), event.may_make_eligible(trigger));
        let same = merged.iter_mut().find(|(e, ..)| {
            e.number == event.number && e.repo.as_str().eq_ignore_ascii_case(event.repo.as_str())
        });
        match same {
            Some(entry) => {
                entry.1 |= withdraws;
                entry.2 |= may_take;
            }
            None => merged.push((event, withdraws, may_take)),
        }
    }
    merged
}

impl GitHubIntake {
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
            issues: HashMap::new(),
            events,
            deferred: Vec::new(),
            poll_outcome: None,
            budget: CheckBudget::default(),
        }
    }

    /// How the last poll went (what afk waits for, when it failed); `None` when no poll happened
    /// since the last call.
    pub(super) fn take_poll_outcome(&mut self) -> Option<Result<(), Waiting>> {
        self.poll_outcome.take()
    }

    pub(super) fn issue(&self, key: &IssueKey) -> Option<&EligibleIssue> {
        self.issues.get(key)
    }

    pub(super) fn defer(&mut self, event: WebhookEvent) {
        self.deferred.push(event);
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
        let mut events = std::mem::take(&mut self.deferred);
        if let Some(rx) = self.events.as_mut() {
            while let Ok(event) = rx.try_recv() {
                events.push(event);
            }
        }
        let trigger = self.trigger().to_owned();
        for (event, withdraws, may_take) in coalesce(events, &trigger) {
            if !(withdraws || may_take) {
                continue;
            }
            if !self.budget.spend(self.poll_interval) {
                // Past the interval's budget: one early poll answers this delivery and the rest.
                if self.budget.poll_early() {
                    tracing::info!(
                        "more webhook deliveries than {WEBHOOK_CHECKS_PER_POLL} per poll interval: \
                         polling GitHub now instead of checking each issue"
                    );
                    self.next_poll = None;
                }
                continue;
            }
            let delivery = event.delivery.clone();
            match self.on_event(event, withdraws, recorder, now).await {
                Err(ControlError::Ledger(error)) if error.is_bad_value() => {
                    tracing::warn!(%delivery, "webhook delivery {delivery} skipped: {error}");
                }
                other => other?,
            }
        }
        if !may_poll || self.next_poll.is_some_and(|next| Instant::now() < next) {
            return Ok(());
        }
        self.next_poll = Some(Instant::now() + self.poll_interval);
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
        let eligible: HashSet<IssueKey> = scan.eligible.iter().map(EligibleIssue::key).collect();
        for issue in scan.eligible {
            self.take(issue, recorder, now).await?;
        }
        if scan.complete {
            for job in recorder.ledger().jobs().await? {
                if job.source == JobSource::GitHub && !job.state.is_final() && !eligible.contains(&job.issue)
                {
                    self.issues.remove(&job.issue);
                    withdraw(&job, recorder, now).await?;
                }
            }
        }
        Ok(())
    }

    /// Checks the issue of `event` (and of every delivery about it this sync) as it is now on
    /// GitHub: takes it when eligible, withdraws it when not and a delivery (`withdraws`) said so.
    async fn on_event(
        &mut self,
        event: WebhookEvent,
        withdraws: bool,
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
        // GitHub says now.
        match self.intake.check(&repo, event.number).await {
            Ok(Verdict::Eligible(issue)) => self.take(*issue, recorder, now).await?,
            Ok(Verdict::Skipped(reason)) if withdraws => {
                tracing::info!("{key}: withdrawn: {reason}");
                self.issues.remove(&key);
                if let Some(job) = recorder.ledger().job_by_issue(&key).await? {
                    withdraw(&job, recorder, now).await?;
                }
            }
            Ok(Verdict::Skipped(reason)) => tracing::info!("{key}: not taken: {reason}"),
            // Polling will look again.
            Err(error) => {
                tracing::warn!("{key}: cannot check the issue on GitHub yet: {error}; polling will")
            }
        }
        Ok(())
    }

    /// Queues (or refreshes, or requeues) the job of an eligible issue.
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
        self.issues.insert(key.clone(), issue);
        match recorder.ledger().job_by_issue(&key).await? {
            None => {
                let (job, _) = recorder.ledger().upsert_job(&new, now).await?;
                recorder.queued(&job, "GitHub");
            }
            Some(job) => {
                // The text the agent gets is the text afk took when a trusted person handed the
                // issue over: a later edit (perhaps by an untrusted author, who may also close and
                // reopen the issue) is never taken. Labels and priority follow the issue.
                let refreshed = NewJob {
                    title: job.title.clone(),
                    body: job.body.clone(),
                    ..new
                };
                if job.labels != refreshed.labels || job.priority != refreshed.priority {
                    recorder.ledger().upsert_job(&refreshed, now).await?;
                }
                if job.state == JobState::Cancelled {
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

/// Cancels a GitHub job whose issue left afk's hands.
async fn withdraw(job: &Job, recorder: &mut Recorder, now: DateTime<Utc>) -> Result<(), ControlError> {
    if job.source != JobSource::GitHub || job.state.is_final() {
        return Ok(());
    }
    let event = Event::Cancel {
        reason: CancelReason::Withdrawn,
    };
    recorder.record(job, &event, None, now).await?;
    Ok(())
}
