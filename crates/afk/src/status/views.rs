//! The status surface's JSON views, built from the ledger's capped overviews: the state of the
//! whole queue ([`StateView`], `GET /api/v1/state` and `afk status --json`), one issue
//! ([`IssueView`], `GET /api/v1/OWNER/NAME/N`) and pages of jobs (`GET /api/v1/jobs`, `afk jobs
//! --json`). Field names follow Symphony's API where it has one (`issue_identifier`, `running`,
//! `retrying`, `codex_totals`, ...); afk's own are added beside them. States are printed by their
//! names, so a state added to afk-core shows up without a change here.

use std::collections::BTreeMap;

use afk_core::{IssueKey, JobSource, JobState};
use afk_ledger::{Attempt, AttemptSummary, EventRecord, Job, JobSummary, Ledger, LedgerError};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::Links;

/// How many entries each list of the state view holds at most (the counts cover them all).
pub const RUNNING_CAP: usize = 200;
/// See [`RUNNING_CAP`].
pub const RETRYING_CAP: usize = 100;
/// See [`RUNNING_CAP`].
pub const RECENT_CAP: usize = 20;
/// See [`RUNNING_CAP`].
pub const NEEDS_PERSON_CAP: usize = 50;
/// The events one issue view shows at most (the latest).
pub const EVENTS_CAP: usize = 200;

/// The job states in which nothing happens until a person acts: the job gave up, failed for
/// good, or (when afk-core has the state) waits for a person's answer. Names, so that a state
/// this afk does not know is simply not matched.
pub const NEEDS_PERSON: &[&str] = &["given_up", "failed", "needs_input"];

/// An instant as every view prints it: RFC 3339, UTC, milliseconds.
pub fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds().max(0) as f64) / 1000.0
}

/// The API path of `issue`'s job: `/api/v1/OWNER/NAME/N` (local issue files name a repository
/// and a number too, so the path is the same for every source).
pub fn api_path(issue: &IssueKey) -> String {
    format!("/api/v1/{}/{}", issue.repo, issue.number)
}

impl Links {
    /// Where `thread` is shown in T3's web UI.
    pub fn thread_url(&self, thread: &str) -> Option<String> {
        self.t3_web
            .as_ref()
            .map(|base| format!("{}/{thread}", base.trim_end_matches('/')))
    }

    /// The issue's page: on GitHub for GitHub's issues; none for local files and manual jobs.
    pub fn issue_url(&self, issue: &IssueKey, source: JobSource) -> Option<String> {
        match (source, &self.github_web) {
            (JobSource::GitHub, Some(web)) => Some(format!(
                "{}/{}/issues/{}",
                web.trim_end_matches('/'),
                issue.repo,
                issue.number
            )),
            _ => None,
        }
    }
}

/// The error a listed job shows: its own or its attempt's, and none once it succeeded.
fn error_of(job: &JobSummary) -> Option<String> {
    (job.state != JobState::Succeeded)
        .then(|| {
            job.last_error
                .clone()
                .or_else(|| job.attempt.as_ref().and_then(|a| a.last_error.clone()))
        })
        .flatten()
}

/// What every listed job carries: the issue and where to look at it.
#[derive(Debug, Clone, Serialize)]
pub struct IssueRef {
    /// `OWNER/NAME#N` (Symphony's `issue_id`).
    pub issue_id: String,
    /// `OWNER/NAME#N` (Symphony's `issue_identifier`).
    pub issue_identifier: String,
    /// The ledger's job id.
    pub job_id: i64,
    /// The issue's title.
    pub title: String,
    /// Where the job came from: `local`, `github` or `manual`.
    pub source: JobSource,
    /// The issue's page (GitHub issues only).
    pub issue_url: Option<String>,
    /// This job in the API.
    pub api_path: String,
}

impl IssueRef {
    fn of(job: &JobSummary, links: &Links) -> IssueRef {
        IssueRef {
            issue_id: job.issue.to_string(),
            issue_identifier: job.issue.to_string(),
            job_id: job.id.0,
            title: job.title.clone(),
            source: job.source,
            issue_url: links.issue_url(&job.issue, job.source),
            api_path: api_path(&job.issue),
        }
    }
}

/// One attempt in flight.
#[derive(Debug, Clone, Serialize)]
pub struct RunningView {
    /// The issue.
    #[serde(flatten)]
    pub issue: IssueRef,
    /// `dispatching` or `running` (the attempt's state).
    pub state: String,
    /// The job's state: `needs_input` while the thread waits for a person to answer it in T3.
    pub job_state: String,
    /// The attempt's number.
    pub attempt: u32,
    /// Its T3 thread (Symphony's `session_id`).
    pub session_id: String,
    /// Its T3 thread.
    pub thread_id: String,
    /// The thread in T3's web UI.
    pub thread_url: Option<String>,
    /// The branch its agent works on.
    pub branch: String,
    /// When the attempt started.
    pub started_at: String,
    /// When it last changed (for a running attempt: when T3 accepted its turn).
    pub last_event_at: String,
    /// How long it has run so far.
    pub seconds_running: f64,
    /// Token counts are T3's, not afk's: always null.
    pub tokens: Option<()>,
}

/// One job waiting out a retry back-off.
#[derive(Debug, Clone, Serialize)]
pub struct RetryView {
    /// The issue.
    #[serde(flatten)]
    pub issue: IssueRef,
    /// The number the next attempt will have.
    pub attempt: u32,
    /// When it is due.
    pub due_at: Option<String>,
    /// Seconds until then (0 once due).
    pub due_in_seconds: f64,
    /// Why the last attempt ended.
    pub error: Option<String>,
    /// The last attempt's thread in T3's web UI.
    pub thread_url: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Serialize)]
pub struct OutcomeView {
    /// The issue.
    #[serde(flatten)]
    pub issue: IssueRef,
    /// The attempt's number.
    pub attempt: u32,
    /// How it ended: `succeeded`, `failed`, `timed_out`, `cancelled`, `lost`.
    pub outcome: String,
    /// The job's state now.
    pub job_state: String,
    /// When it ended.
    pub ended_at: String,
    /// How long it took.
    pub seconds: f64,
    /// Its error, if it did not succeed.
    pub error: Option<String>,
    /// Its thread.
    pub thread_id: String,
    /// Its thread in T3's web UI.
    pub thread_url: Option<String>,
}

/// A job that waits for a person.
#[derive(Debug, Clone, Serialize)]
pub struct NeedsPersonView {
    /// The issue.
    #[serde(flatten)]
    pub issue: IssueRef,
    /// Its state.
    pub state: String,
    /// Attempts started.
    pub attempts: u32,
    /// Its error.
    pub error: Option<String>,
    /// Since when it is in this state.
    pub since: String,
    /// Its last attempt's thread in T3's web UI.
    pub thread_url: Option<String>,
}

/// Symphony's `codex_totals`: tokens are T3's business (always 0 here); `seconds_running` is the
/// agent time of every attempt.
#[derive(Debug, Clone, Serialize)]
pub struct CodexTotals {
    /// Always 0: afk does not see tokens.
    pub input_tokens: u64,
    /// Always 0.
    pub output_tokens: u64,
    /// Always 0.
    pub total_tokens: u64,
    /// Agent time, all attempts, in seconds.
    pub seconds_running: f64,
}

/// afk's totals.
#[derive(Debug, Clone, Serialize)]
pub struct Totals {
    /// Jobs in the ledger.
    pub jobs: u64,
    /// Attempts ever started.
    pub attempts: u64,
    /// Agent time, all attempts (live ones until now), in seconds.
    pub agent_seconds: f64,
}

/// The queue and the fleet at a glance: `GET /api/v1/state`; `afk status --json` prints it with
/// its own fields beside it.
#[derive(Debug, Clone, Serialize)]
pub struct StateView {
    /// When this view was read.
    pub generated_at: String,
    /// Jobs per state, every state present, and `retrying` (= `retry_wait`) as Symphony names it.
    pub counts: BTreeMap<String, u64>,
    /// Attempts in flight, longest running first (at most [`RUNNING_CAP`]).
    pub running: Vec<RunningView>,
    /// Jobs waiting out a back-off, soonest due first (at most [`RETRYING_CAP`]).
    pub retrying: Vec<RetryView>,
    /// The attempts that ended last, latest first (at most [`RECENT_CAP`]).
    pub recent: Vec<OutcomeView>,
    /// Jobs that wait for a person, latest first (at most [`NEEDS_PERSON_CAP`]).
    pub needs_person: Vec<NeedsPersonView>,
    /// Symphony's token and runtime totals.
    pub codex_totals: CodexTotals,
    /// afk's totals.
    pub totals: Totals,
    /// Symphony's rate limits: not afk's to know (always null).
    pub rate_limits: Option<()>,
}

/// The state view of `ledger` at `now`.
pub async fn state(ledger: &Ledger, links: &Links, now: DateTime<Utc>) -> Result<StateView, LedgerError> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut jobs = 0;
    for (state, n) in ledger.counts_by_state().await? {
        counts.insert(state.to_string(), n);
        jobs += n;
    }
    let retrying_count = counts.get(JobState::RetryWait.as_str()).copied().unwrap_or(0);
    counts.insert("retrying".into(), retrying_count);
    let running = ledger
        .running_attempts(RUNNING_CAP)
        .await?
        .iter()
        .filter_map(|job| {
            let a = job.attempt.as_ref()?;
            Some(RunningView {
                issue: IssueRef::of(job, links),
                state: a.state.to_string(),
                job_state: job.state.to_string(),
                attempt: a.number.0,
                session_id: a.thread_id.to_string(),
                thread_id: a.thread_id.to_string(),
                thread_url: links.thread_url(a.thread_id.as_str()),
                branch: a.branch.clone(),
                started_at: instant(a.created_at),
                last_event_at: instant(a.updated_at),
                seconds_running: seconds(a.created_at, now),
                tokens: None,
            })
        })
        .collect();
    let retrying = ledger
        .retry_queue(RETRYING_CAP)
        .await?
        .iter()
        .map(|job| RetryView {
            issue: IssueRef::of(job, links),
            attempt: job.attempts.saturating_add(1),
            due_at: job.not_before.map(instant),
            due_in_seconds: job.not_before.map_or(0.0, |due| seconds(now, due)),
            error: error_of(job),
            thread_url: thread_url(job, links),
        })
        .collect();
    let recent = ledger
        .recent_outcomes(RECENT_CAP)
        .await?
        .iter()
        .filter_map(|job| {
            let a = job.attempt.as_ref()?;
            let ended = a.ended_at?;
            Some(OutcomeView {
                issue: IssueRef::of(job, links),
                attempt: a.number.0,
                outcome: a.state.to_string(),
                job_state: job.state.to_string(),
                ended_at: instant(ended),
                seconds: seconds(a.created_at, ended),
                error: a.last_error.clone(),
                thread_id: a.thread_id.to_string(),
                thread_url: links.thread_url(a.thread_id.as_str()),
            })
        })
        .collect();
    let needs_person = ledger
        .recent_jobs_in(NEEDS_PERSON, NEEDS_PERSON_CAP)
        .await?
        .iter()
        .map(|job| NeedsPersonView {
            issue: IssueRef::of(job, links),
            state: job.state.to_string(),
            attempts: job.attempts,
            error: error_of(job),
            since: instant(job.updated_at),
            thread_url: thread_url(job, links),
        })
        .collect();
    let totals = ledger.attempt_totals(now).await?;
    let agent_seconds = totals.agent_ms as f64 / 1000.0;
    Ok(StateView {
        generated_at: instant(now),
        counts,
        running,
        retrying,
        recent,
        needs_person,
        codex_totals: CodexTotals {
            input_tokens: 0,
            output_tokens: 0,
            total_tokens: 0,
            seconds_running: agent_seconds,
        },
        totals: Totals {
            jobs,
            attempts: totals.attempts,
            agent_seconds,
        },
        rate_limits: None,
    })
}

fn thread_url(job: &JobSummary, links: &Links) -> Option<String> {
    job.attempt
        .as_ref()
        .and_then(|a| links.thread_url(a.thread_id.as_str()))
}

/// One job as `afk jobs --json` and `GET /api/v1/jobs` list it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// The ledger's id.
    pub id: i64,
    /// `OWNER/NAME`.
    pub repo: String,
    /// The issue number.
    pub number: u64,
    /// The issue's title.
    pub title: String,
    /// `p0`..`p3`.
    pub priority: String,
    /// The job's state, as printed everywhere.
    pub state: String,
    /// Attempts started so far.
    pub attempts: u32,
    /// The latest attempt's thread, if any.
    pub thread_id: Option<String>,
    /// The error it shows (its own, else its latest attempt's; none once it succeeded).
    pub last_error: Option<String>,
    /// Where the job came from (`local`, `github`, `manual`).
    pub source: JobSource,
    /// When the job was queued.
    pub created_at: String,
    /// When the job last changed.
    pub updated_at: String,
    /// `OWNER/NAME#N`.
    pub issue: String,
    /// Not picked up before this instant (a retry's due time).
    pub not_before: Option<String>,
    /// The latest attempt's state.
    pub attempt_state: Option<String>,
    /// The latest attempt's branch.
    pub branch: Option<String>,
    /// Why it is cancelled, while it is.
    pub cancel_reason: Option<String>,
    /// Why a queued job is not started now: its repository used a daily budget (`[budget]`),
    /// e.g. `queued: repository acme/api used its daily budget of 5 new jobs; resumes at 00:00
    /// UTC`. Set by [`JobView::held`].
    pub held: Option<String>,
    /// This job in the API.
    pub api_path: String,
}

impl JobView {
    /// `job` as listed.
    pub fn of(job: &JobSummary) -> JobView {
        let a: Option<&AttemptSummary> = job.attempt.as_ref();
        JobView {
            id: job.id.0,
            repo: job.issue.repo.to_string(),
            number: job.issue.number,
            title: job.title.clone(),
            priority: job.priority.to_string(),
            state: job.state.to_string(),
            attempts: job.attempts,
            thread_id: a.map(|a| a.thread_id.to_string()),
            last_error: error_of(job),
            source: job.source,
            created_at: job.created_at.to_rfc3339(),
            updated_at: job.updated_at.to_rfc3339(),
            issue: job.issue.to_string(),
            not_before: job.not_before.map(instant),
            attempt_state: a.map(|a| a.state.to_string()),
            branch: a.map(|a| a.branch.clone()),
            cancel_reason: job.cancel_reason.map(|r| r.as_str().to_owned()),
            held: None,
            api_path: api_path(&job.issue),
        }
    }

    /// Says, for each queued job of `views`, why it is not started when `waits` (the ledger's
    /// wait rows) hold its repository to a daily budget.
    pub fn held(views: &mut [JobView], waits: &[afk_ledger::Wait]) {
        for view in views.iter_mut().filter(|v| v.state == "queued") {
            let topic = format!("budget:{}", view.repo);
            view.held = waits.iter().find(|w| w.topic == topic).map(|w| w.message.clone());
        }
    }
}

/// One attempt in an issue view.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    /// Its number within the job.
    pub number: u32,
    /// Where it is, or how it ended.
    pub state: String,
    /// Its T3 thread.
    pub thread_id: String,
    /// The thread in T3's web UI.
    pub thread_url: Option<String>,
    /// The T3 project.
    pub project_id: String,
    /// The branch its agent works on.
    pub branch: String,
    /// Its worktree, as T3 showed it to this afk while the attempt was live (null when not seen,
    /// or when the thread works in the project's checkout).
    pub worktree: Option<String>,
    /// The model, when not afk's default.
    pub model: Option<String>,
    /// Its error.
    pub error: Option<String>,
    /// Dispatch tries that failed transiently.
    pub dispatch_tries: u32,
    /// Its thread must still be stopped.
    pub stop_pending: bool,
    /// When it started.
    pub started_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// When it ended.
    pub ended_at: Option<String>,
    /// How long it ran (until now while live).
    pub seconds: f64,
}

impl AttemptView {
    fn of(a: &Attempt, links: &Links, worktree: Option<String>, now: DateTime<Utc>) -> AttemptView {
        AttemptView {
            number: a.number.0,
            state: a.state.to_string(),
            thread_id: a.thread_id.to_string(),
            thread_url: links.thread_url(a.thread_id.as_str()),
            project_id: a.project_id.to_string(),
            branch: a.branch.clone(),
            worktree,
            model: a.model.clone(),
            error: a.last_error.clone(),
            dispatch_tries: a.dispatch_tries,
            stop_pending: a.stop_pending,
            started_at: instant(a.created_at),
            updated_at: instant(a.updated_at),
            ended_at: a.ended_at.map(instant),
            seconds: seconds(a.created_at, a.ended_at.unwrap_or(now)),
        }
    }
}

/// One transition from the ledger's event log (Symphony's `recent_events`).
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    /// When it was recorded.
    pub at: String,
    /// `FROM -> TO`.
    pub event: String,
    /// The state before.
    pub from: String,
    /// The state after.
    pub to: String,
    /// The attempt it concerned.
    pub attempt: Option<u32>,
    /// The machine's note.
    pub message: String,
}

/// Symphony's `attempts` block.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptCounts {
    /// Attempts after the first.
    pub restart_count: u32,
    /// The live or next attempt's number.
    pub current_retry_attempt: u32,
}

/// One issue's job: `GET /api/v1/OWNER/NAME/N`.
#[derive(Debug, Clone, Serialize)]
pub struct IssueView {
    /// `OWNER/NAME#N`.
    pub issue_identifier: String,
    /// `OWNER/NAME#N`.
    pub issue_id: String,
    /// The job's state (Symphony's `status`).
    pub status: String,
    /// The job.
    pub job: JobInfo,
    /// Symphony's attempt counts.
    pub attempts: AttemptCounts,
    /// The live attempt, if any.
    pub running: Option<AttemptView>,
    /// The retry back-off, while the job waits one out.
    pub retry: Option<RetryInfo>,
    /// Every attempt, first to last.
    pub attempt_list: Vec<AttemptView>,
    /// The transitions from the ledger's event log, oldest first (the last [`EVENTS_CAP`]).
    pub recent_events: Vec<EventView>,
    /// The error the job shows.
    pub last_error: Option<String>,
    /// The issue's page (GitHub issues only).
    pub issue_url: Option<String>,
}

/// The job part of an [`IssueView`].
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    /// The ledger's id.
    pub id: i64,
    /// The issue's title.
    pub title: String,
    /// `p0`..`p3`.
    pub priority: String,
    /// Where it came from.
    pub source: JobSource,
    /// Its labels.
    pub labels: Vec<String>,
    /// Its state.
    pub state: String,
    /// Why it is cancelled, while it is.
    pub cancel_reason: Option<String>,
    /// Attempts started.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Not picked up before this instant.
    pub not_before: Option<String>,
}

/// A retry back-off in an [`IssueView`].
#[derive(Debug, Clone, Serialize)]
pub struct RetryInfo {
    /// The next attempt's number.
    pub attempt: u32,
    /// When it is due.
    pub due_at: Option<String>,
    /// Why the last attempt ended.
    pub error: Option<String>,
}

/// The issue view of `issue`'s job; `None` when the ledger has no job for it. `worktree` gives
/// an attempt's worktree by its thread id, when known.
pub async fn issue(
    ledger: &Ledger,
    links: &Links,
    issue: &IssueKey,
    worktree: &(dyn Fn(&str) -> Option<String> + Sync),
    now: DateTime<Utc>,
) -> Result<Option<IssueView>, LedgerError> {
    let Some(job) = ledger.job_by_issue(issue).await? else {
        return Ok(None);
    };
    let attempts = ledger.attempts(job.id).await?;
    let events = ledger.recent_events(job.id, EVENTS_CAP).await?;
    Ok(Some(issue_view(&job, &attempts, &events, links, worktree, now)))
}

fn issue_view(
    job: &Job,
    attempts: &[Attempt],
    events: &[EventRecord],
    links: &Links,
    worktree: &(dyn Fn(&str) -> Option<String> + Sync),
    now: DateTime<Utc>,
) -> IssueView {
    let view = |a: &Attempt| AttemptView::of(a, links, worktree(a.thread_id.as_str()), now);
    let last = attempts.last();
    let last_error = crate::views::last_error(job, last);
    let live = attempts.iter().find(|a| a.state.is_live()).map(view);
    IssueView {
        issue_identifier: job.issue.to_string(),
        issue_id: job.issue.to_string(),
        status: job.state.to_string(),
        job: JobInfo {
            id: job.id.0,
            title: job.title.clone(),
            priority: job.priority.to_string(),
            source: job.source,
            labels: job.labels.clone(),
            state: job.state.to_string(),
            cancel_reason: job.cancel_reason.map(|r| r.as_str().to_owned()),
            attempts: job.attempts,
            created_at: instant(job.created_at),
            updated_at: instant(job.updated_at),
            not_before: job.not_before.map(instant),
        },
        attempts: AttemptCounts {
            restart_count: job.attempts.saturating_sub(1),
            current_retry_attempt: if live.is_some() {
                job.attempts
            } else {
                job.attempts.saturating_add(1)
            },
        },
        running: live,
        retry: (job.state == JobState::RetryWait).then(|| RetryInfo {
            attempt: job.attempts.saturating_add(1),
            due_at: job.not_before.map(instant),
            error: last_error.clone(),
        }),
        attempt_list: attempts.iter().map(view).collect(),
        recent_events: events
            .iter()
            .map(|e| EventView {
                at: instant(e.at),
                event: format!("{} -> {}", e.from, e.to),
                from: e.from.to_string(),
                to: e.to.to_string(),
                attempt: e.attempt.map(|a| a.0),
                message: e.note.clone(),
            })
            .collect(),
        last_error,
        issue_url: links.issue_url(&job.issue, job.source),
    }
}
