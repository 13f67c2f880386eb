//! The GitHub side of the control plane: trusted intake (polling and webhooks), each repository's
//! `AFK.md` prompt policy, and the status comment and labels kept in step with the job.
//!
//! GitHub is reached only through `afk-github`; this module decides when to ask and what the
//! answers mean for jobs. Reporting is best effort and idempotent: a report that fails is retried
//! on the next tick. What was reported is kept in the ledger, so a report lost to a crash is made
//! after the restart and one already made is not repeated.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use afk_core::{CancelReason, Event, IssueKey, JobSource, JobState, Repo, RequeueBy};
use afk_github::{
    EligibleIssue, Intake, PolicyError, PolicySettings, PolicyStore, PromptContext, PromptIssue,
    PullRequestSearch, Reporter, StatusReport, ThreadLink, Verdict, WebhookEvent,
};
use afk_ledger::{Job, NewJob};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::{ControlError, ControlPlane, TickReport};

/// Everything the control plane needs to work with GitHub.
pub struct GitHubSide {
    intake: Intake,
    policies: PolicyStore,
    reporter: Reporter,
    poll_interval: Duration,
    next_poll: Option<Instant>,
    /// The latest view of each eligible issue (author and URL are not kept in the ledger).
    issues: HashMap<IssueKey, EligibleIssue>,
    /// Per-repository `AFK.md` settings seen at the last prompt rendering.
    settings: HashMap<Repo, PolicySettings>,
    /// T3's web UI, for links to threads (`{base}/{thread id}`).
    thread_url_base: Option<String>,
    events: Option<mpsc::Receiver<WebhookEvent>>,
}

/// A job's next prompt and the repository settings that go with it.
#[derive(Debug, Clone, Default)]
pub struct JobPrompt {
    /// The prompt (the T3 client puts the standing rules before it).
    pub text: String,
    /// The repository's own limit on attempts in flight, if its `AFK.md` sets one.
    pub max_concurrent: Option<usize>,
    /// Branch prefix override.
    pub branch_prefix: Option<String>,
    /// Model override.
    pub model: Option<String>,
}

impl GitHubSide {
    /// A GitHub side polling every `poll_interval`, linking threads under `thread_url_base`, and
    /// taking webhook events from `events` when webhooks are on.
    pub fn new(
        intake: Intake,
        policies: PolicyStore,
        reporter: Reporter,
        poll_interval: Duration,
        thread_url_base: Option<String>,
        events: Option<mpsc::Receiver<WebhookEvent>>,
    ) -> Self {
        Self {
            intake,
            policies,
            reporter,
            poll_interval,
            next_poll: None,
            issues: HashMap::new(),
            settings: HashMap::new(),
            thread_url_base: thread_url_base.map(|b| b.trim_end_matches('/').to_owned()),
            events,
        }
    }

    /// Waits for the next webhook event (forever when webhooks are off); the run loop uses it to
    /// tick at once when GitHub tells of a change.
    pub async fn next_event(&mut self) -> Option<WebhookEvent> {
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
}

/// Acts on webhook events (`early` first, then any queued), then polls when due.
pub(super) async fn sync(
    plane: &ControlPlane,
    gh: &mut GitHubSide,
    early: Vec<WebhookEvent>,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), ControlError> {
    let mut events = early;
    if let Some(rx) = gh.events.as_mut() {
        while let Ok(event) = rx.try_recv() {
            events.push(event);
        }
    }
    for event in events {
        // GitHub names are case-insensitive; jobs are keyed by the spelling in [github] repos.
        let configured = gh
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
            continue;
        };
        let key = IssueKey {
            repo: repo.clone(),
            number: event.number,
        };
        if event.withdraws(gh.trigger()) {
            // Deliveries may arrive late or out of order (a `closed` after the `reopened`):
            // withdraw only what GitHub says is not eligible now.
            match gh.intake.check(&repo, event.number).await {
                Ok(Verdict::Eligible(_)) => {
                    tracing::info!("{key}: a stale webhook withdrew an issue that is still eligible; ignored")
                }
                Ok(Verdict::Skipped(_)) => {
                    gh.issues.remove(&key);
                    if let Some(job) = plane.ledger.job_by_issue(&key).await? {
                        withdraw(plane, &job, now, report).await?;
                    }
                }
                Err(error) => {
                    tracing::warn!("{key}: cannot check the issue on GitHub yet: {error}; polling will")
                }
            }
        } else if event.may_make_eligible(gh.trigger()) {
            match gh.intake.check(&repo, event.number).await {
                Ok(Verdict::Eligible(issue)) => take(plane, gh, *issue, now, report).await?,
                Ok(Verdict::Skipped(reason)) => tracing::info!("{key}: not taken: {reason}"),
                // Polling will look again.
                Err(error) => tracing::warn!("{key}: cannot check the issue on GitHub yet: {error}"),
            }
        }
    }

    if gh.next_poll.is_some_and(|next| Instant::now() < next) {
        return Ok(());
    }
    gh.next_poll = Some(Instant::now() + gh.poll_interval);
    let scan = gh.intake.scan().await;
    for skipped in &scan.skipped {
        tracing::debug!("{}#{}: skipped: {}", skipped.repo, skipped.number, skipped.reason);
    }
    for error in &scan.errors {
        tracing::warn!("GitHub poll: {error}");
    }
    let eligible: HashSet<IssueKey> = scan.eligible.iter().map(EligibleIssue::key).collect();
    for issue in scan.eligible {
        take(plane, gh, issue, now, report).await?;
    }
    if scan.complete {
        for job in plane.ledger.jobs().await? {
            if job.source == JobSource::GitHub && !job.state.is_final() && !eligible.contains(&job.issue) {
                gh.issues.remove(&job.issue);
                withdraw(plane, &job, now, report).await?;
            }
        }
    }
    Ok(())
}

/// Queues (or refreshes, or requeues) the job of an eligible issue.
async fn take(
    plane: &ControlPlane,
    gh: &mut GitHubSide,
    issue: EligibleIssue,
    now: DateTime<Utc>,
    report: &mut TickReport,
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
    gh.issues.insert(key.clone(), issue);
    match plane.ledger.job_by_issue(&key).await? {
        None => {
            let (job, _) = plane.ledger.upsert_job(&new, now).await?;
            ControlPlane::queued(&job, "GitHub", report);
        }
        Some(job) => {
            // The text the agent gets is the text afk took when a trusted person handed the issue
            // over: a later edit (perhaps by an untrusted author, who may also close and reopen
            // the issue) is never taken. Labels and priority follow the issue.
            let refreshed = NewJob {
                title: job.title.clone(),
                body: job.body.clone(),
                ..new
            };
            if job.title != refreshed.title
                || job.body != refreshed.body
                || job.labels != refreshed.labels
                || job.priority != refreshed.priority
            {
                plane.ledger.upsert_job(&refreshed, now).await?;
            }
            if job.state == JobState::Cancelled {
                // Requeued only when GitHub withdrew it (the machine decides).
                let back = Event::Requeue {
                    by: RequeueBy::Source(JobSource::GitHub),
                };
                plane.offer(&job, &back, now, report).await?;
            }
        }
    }
    Ok(())
}

async fn withdraw(
    plane: &ControlPlane,
    job: &Job,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), ControlError> {
    if job.source != JobSource::GitHub || job.state.is_final() {
        return Ok(());
    }
    let event = Event::Cancel {
        reason: CancelReason::Withdrawn,
    };
    plane.transition(job, &event, None, now, report).await?;
    Ok(())
}

/// The prompt of a GitHub job's next attempt, from its repository's `AFK.md` (or the built-in
/// template). `Ok(None)`: not now (the issue is not in view yet, or `AFK.md` could not be fetched);
/// `Err`: the job cannot be dispatched (a template error), with the message to fail it with.
pub(super) async fn prompt(gh: &mut GitHubSide, job: &Job) -> Result<Option<JobPrompt>, String> {
    let Some(issue) = gh.issues.get(&job.issue) else {
        return Ok(None);
    };
    let policy = match gh.policies.policy(&job.issue.repo).await {
        Ok(policy) => policy,
        Err(error @ PolicyError::Fetch { .. }) => {
            tracing::warn!("{}: {error}; trying again next tick", job.issue);
            return Ok(None);
        }
        Err(error) => return Err(error.to_string()),
    };
    let context = PromptContext {
        // Title and body as afk took them (see `take`), not as last polled.
        issue: PromptIssue {
            title: job.title.clone(),
            body: job.body.clone(),
            ..PromptIssue::from(issue)
        },
        repo: job.issue.repo.to_string(),
        attempt: job.attempts + 1,
        previous_error: (job.attempts > 0).then(|| job.last_error.clone()).flatten(),
    };
    let text = policy.render(&context).map_err(|e| e.to_string())?;
    gh.settings
        .insert(job.issue.repo.clone(), policy.settings.clone());
    Ok(Some(JobPrompt {
        text,
        max_concurrent: policy.settings.max_concurrent.map(|n| n.get() as usize),
        branch_prefix: policy.settings.branch_prefix.clone(),
        model: policy.settings.model.clone(),
    }))
}

/// Brings the status comment and labels of every GitHub job whose state or attempt changed since
/// it was last reported up to date. Failures are logged and retried on the next tick.
pub(super) async fn report(plane: &ControlPlane, gh: &mut GitHubSide) -> Result<(), ControlError> {
    for job in plane.ledger.jobs_to_report(JobSource::GitHub).await? {
        let marker = format!("{}:{}", job.state, job.attempts);
        // A comment appears with the first dispatch, or when the job fails without one.
        if job.attempts == 0 && job.state != JobState::Failed {
            continue;
        }
        let attempts = plane.ledger.attempts(job.id).await?;
        let last = attempts.last();
        let pull_request = if job.state == JobState::Succeeded {
            match gh
                .reporter
                .find_pull_request(&job.issue, last.map(|a| a.branch.as_str()))
                .await
            {
                Ok(found) => Some(found),
                Err(error) => {
                    tracing::warn!("{}: cannot look for the pull request yet: {error}", job.issue);
                    continue;
                }
            }
        } else {
            None
        };
        let status = StatusReport {
            issue: job.issue.clone(),
            attempt: job.attempts,
            state: job.state,
            thread: last.map(|a| ThreadLink {
                id: a.thread_id.to_string(),
                url: gh
                    .thread_url_base
                    .as_ref()
                    .and_then(|base| url::Url::parse(&format!("{base}/{}", a.thread_id)).ok()),
            }),
            started_at: last.map(|a| a.created_at),
            finished_at: last.and_then(|a| a.ended_at),
            last_error: (job.state != JobState::Succeeded)
                .then(|| {
                    job.last_error
                        .clone()
                        .or_else(|| last.and_then(|a| a.last_error.clone()))
                })
                .flatten(),
            pull_request,
        };
        match gh.reporter.report(&status).await {
            Ok(_) => {}
            Err(error @ afk_github::GitHubError::NotFound { .. }) => {
                // The issue was deleted or moved: there is nowhere to report, now or later.
                tracing::warn!(
                    "{}: cannot report on the issue, GitHub no longer has it: {error}",
                    job.issue
                );
                plane.ledger.mark_reported(job.id, &marker).await?;
                continue;
            }
            Err(error) => {
                tracing::warn!("{}: cannot update the issue on GitHub yet: {error}", job.issue);
                continue;
            }
        }
        let first_report_of_attempt = job
            .reported
            .as_deref()
            .and_then(|r| r.rsplit_once(':'))
            .is_none_or(|(_, n)| n != job.attempts.to_string());
        if job.state == JobState::Running || first_report_of_attempt {
            let extra = gh
                .settings
                .get(&job.issue.repo)
                .map(|s| s.extra_labels.clone())
                .unwrap_or_default();
            if !extra.is_empty() && !job.state.is_final() {
                if let Err(error) = gh.reporter.add_labels(&job.issue, &extra).await {
                    tracing::warn!("{}: cannot add labels {extra:?}: {error}", job.issue);
                }
            }
        }
        if let Some(PullRequestSearch::NotFound { .. }) = &status.pull_request {
            tracing::info!("{}: succeeded, but no pull request for it was found", job.issue);
        }
        plane.ledger.mark_reported(job.id, &marker).await?;
    }
    Ok(())
}
