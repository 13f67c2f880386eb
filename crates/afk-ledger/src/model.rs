//! The ledger's records as the rest of afk sees them, and their conversion from database rows.

use afk_core::{
    AttemptId, AttemptNo, AttemptState, CancelReason, IssueKey, JobId, JobSource, JobState, JobStatus,
    Priority, Repo,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use t3_client::{CommandId, MessageId, ProjectId, ThreadId};

use crate::LedgerError;

/// An issue as a source reports it: what [`crate::Ledger::upsert_job`] stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// The issue; a job exists at most once per issue.
    pub issue: IssueKey,
    /// The issue's title.
    pub title: String,
    /// The issue's body (Markdown).
    pub body: String,
    /// The issue's labels.
    pub labels: Vec<String>,
    /// How urgent it is.
    pub priority: Priority,
    /// Where it came from: kept from the first upsert.
    pub source: JobSource,
}

/// A job as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// Its ledger id.
    pub id: JobId,
    /// Its issue.
    pub issue: IssueKey,
    /// The issue's title, as last upserted.
    pub title: String,
    /// The issue's body, as last upserted.
    pub body: String,
    /// The issue's labels, as last upserted.
    pub labels: Vec<String>,
    /// Its priority, as last upserted.
    pub priority: Priority,
    /// Where it came from, as first upserted.
    pub source: JobSource,
    /// Where it is in its life.
    pub state: JobState,
    /// Why it is cancelled, while it is.
    pub cancel_reason: Option<CancelReason>,
    /// How many attempts were started so far.
    pub attempts: u32,
    /// `attempts` when the job was last requeued: its retry budget counts the attempts since.
    pub attempts_base: u32,
    /// How many times the live attempt's dispatch was tried so far.
    pub dispatch_tries: u32,
    /// It is not to be picked up (or its dispatch tried again) before this instant.
    pub not_before: Option<DateTime<Utc>>,
    /// The last error any of its attempts (or its refusal) reported.
    pub last_error: Option<String>,
    /// When it was first upserted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// What was last reported on its issue ([`crate::Ledger::mark_reported`]), if anything.
    pub reported: Option<String>,
    /// When its thread began to wait for a person, while the job is `needs_input`.
    pub input_wait_since: Option<DateTime<Utc>>,
    /// What the agent asks, while the job is `needs_input`.
    pub input_question: Option<String>,
    /// How long the live attempt's thread waited for people in all, the current wait left out
    /// (reset when an attempt starts): time the turn timeout does not count.
    pub input_waited: std::time::Duration,
}

impl Job {
    /// What the state machine needs to know about it.
    pub fn status(&self) -> JobStatus {
        JobStatus {
            state: self.state,
            attempts: self.attempts,
            dispatch_tries: self.dispatch_tries,
            attempts_base: self.attempts_base,
            cancel_reason: self.cancel_reason,
        }
    }
}

/// The ids and content of an attempt, chosen before its first request to T3 and stored with the
/// transition that starts it, so that every retry and every recovery after a crash reuses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttempt {
    /// The T3 thread id (unique across the ledger).
    pub thread_id: ThreadId,
    /// The T3 project the thread belongs to.
    pub project_id: ProjectId,
    /// The command id of `thread.create`.
    pub create_command_id: CommandId,
    /// The command id of `thread.turn.start`.
    pub turn_command_id: CommandId,
    /// The id of the first user message.
    pub message_id: MessageId,
    /// The thread's title.
    pub title: String,
    /// The branch the agent works on.
    pub branch: String,
    /// The rendered prompt.
    pub prompt: String,
    /// The model the thread is created with, when it is not afk's configured default.
    pub model: Option<String>,
}

/// One attempt (one T3 thread) of a job, as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// Its ledger id.
    pub id: AttemptId,
    /// Its job.
    pub job_id: JobId,
    /// Its number within the job: 1 for the first.
    pub number: AttemptNo,
    /// Where it is.
    pub state: AttemptState,
    /// The T3 thread id.
    pub thread_id: ThreadId,
    /// The T3 project id.
    pub project_id: ProjectId,
    /// The command id of `thread.create`.
    pub create_command_id: CommandId,
    /// The command id of `thread.turn.start`.
    pub turn_command_id: CommandId,
    /// The id of the first user message.
    pub message_id: MessageId,
    /// The thread's title.
    pub title: String,
    /// The branch the agent works on.
    pub branch: String,
    /// The rendered prompt.
    pub prompt: String,
    /// The model the thread is created with, when it is not afk's configured default.
    pub model: Option<String>,
    /// How many times its dispatch failed transiently.
    pub dispatch_tries: u32,
    /// Its last error (T3's, or the dispatcher's).
    pub last_error: Option<String>,
    /// Its thread must still be interrupted and its session stopped.
    pub stop_pending: bool,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it ended, if it did.
    pub ended_at: Option<DateTime<Utc>>,
}

/// What watching a live attempt needs, without the issue's text or the prompt: one row of
/// [`crate::Ledger::watched_attempts`]. A watcher that sees a change loads the whole job
/// ([`crate::Ledger::job`]) and attempt ([`crate::Ledger::live_attempt`]) to record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchedAttempt {
    /// The attempt's job.
    pub job_id: JobId,
    /// The job's issue.
    pub issue: IssueKey,
    /// The job's state (`dispatching` or `running` while the ledger is consistent).
    pub job_state: JobState,
    /// The job is not to be dispatched again before this instant (a dispatch retry's back-off).
    pub job_not_before: Option<DateTime<Utc>>,
    /// The attempt's ledger id.
    pub attempt_id: AttemptId,
    /// Its number within the job.
    pub number: AttemptNo,
    /// `dispatching` or `running`.
    pub state: AttemptState,
    /// The T3 thread id.
    pub thread_id: ThreadId,
    /// When the attempt last changed: for a running attempt, when it started running.
    pub updated_at: DateTime<Utc>,
    /// When its thread began to wait for a person, while the job is `needs_input`.
    pub input_wait_since: Option<DateTime<Utc>>,
    /// How long its thread waited for people before the current wait, if any.
    pub input_waited: std::time::Duration,
    /// When its latest follow-up turn was recorded, if it had one: a turn of its thread that
    /// completed before then is the turn followed up, not the follow-up's.
    pub follow_up_at: Option<DateTime<Utc>>,
}

/// One recorded transition of a job: the append-only event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    /// The job.
    pub job_id: JobId,
    /// The attempt the transition concerned, if any.
    pub attempt: Option<AttemptNo>,
    /// The state before.
    pub from: JobState,
    /// The state after.
    pub to: JobState,
    /// The machine's one-line note.
    pub note: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: i64,
    pub(crate) repo: String,
    pub(crate) number: i64,
    title: String,
    body: String,
    labels: String,
    priority: i64,
    source: String,
    state: String,
    cancel_reason: Option<String>,
    pub(crate) attempts: i64,
    attempts_base: i64,
    dispatch_tries: i64,
    not_before_ms: Option<i64>,
    last_error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    reported: Option<String>,
    input_wait_since_ms: Option<i64>,
    input_question: Option<String>,
    pub(crate) input_waited_ms: i64,
}

/// The issue of a `jobs` row from its `repo` and `number` columns, or why they are corrupt.
pub(crate) fn issue_key(repo: String, number: i64) -> Result<IssueKey, LedgerError> {
    let corrupt = |column: &str, why: String| LedgerError::Corrupt {
        what: format!("jobs.{column} of issue {repo}#{number}: {why}"),
    };
    let number = u64::try_from(number).map_err(|e| corrupt("number", e.to_string()))?;
    let repo = Repo::new(repo.clone()).map_err(|e| corrupt("repo", e.to_string()))?;
    Ok(IssueKey { repo, number })
}

impl JobRow {
    pub(crate) fn into_job(self) -> Result<Job, LedgerError> {
        let id = self.id;
        let corrupt = |column: &str, why: String| LedgerError::Corrupt {
            what: format!("jobs.{column} of job {id}: {why}"),
        };
        let repo = Repo::new(self.repo).map_err(|e| corrupt("repo", e.to_string()))?;
        let number = u64::try_from(self.number).map_err(|e| corrupt("number", e.to_string()))?;
        let labels: Vec<String> =
            serde_json::from_str(&self.labels).map_err(|e| corrupt("labels", e.to_string()))?;
        let priority = u8::try_from(self.priority)
            .ok()
            .and_then(|p| Priority::new(p).ok())
            .ok_or_else(|| corrupt("priority", format!("{} is not 0..=3", self.priority)))?;
        Ok(Job {
            id: JobId(id),
            issue: IssueKey { repo, number },
            title: self.title,
            body: self.body,
            labels,
            priority,
            source: self
                .source
                .parse()
                .map_err(|e: afk_core::UnknownName| corrupt("source", e.to_string()))?,
            state: self
                .state
                .parse()
                .map_err(|e: afk_core::UnknownState| corrupt("state", e.to_string()))?,
            cancel_reason: self
                .cancel_reason
                .map(|r| r.parse())
                .transpose()
                .map_err(|e: afk_core::UnknownName| corrupt("cancel_reason", e.to_string()))?,
            attempts: count(self.attempts).map_err(|e| corrupt("attempts", e))?,
            attempts_base: count(self.attempts_base).map_err(|e| corrupt("attempts_base", e))?,
            dispatch_tries: count(self.dispatch_tries).map_err(|e| corrupt("dispatch_tries", e))?,
            not_before: self
                .not_before_ms
                .map(instant)
                .transpose()
                .map_err(|e| corrupt("not_before_ms", e))?,
            last_error: self.last_error,
            created_at: instant(self.created_ms).map_err(|e| corrupt("created_ms", e))?,
            updated_at: instant(self.updated_ms).map_err(|e| corrupt("updated_ms", e))?,
            reported: self.reported,
            input_wait_since: self
                .input_wait_since_ms
                .map(instant)
                .transpose()
                .map_err(|e| corrupt("input_wait_since_ms", e))?,
            input_question: self.input_question,
            input_waited: waited(self.input_waited_ms).map_err(|e| corrupt("input_waited_ms", e))?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AttemptRow {
    id: i64,
    pub(crate) job_id: i64,
    number: i64,
    state: String,
    thread_id: String,
    project_id: String,
    create_command_id: String,
    turn_command_id: String,
    message_id: String,
    title: String,
    branch: String,
    prompt: String,
    model: Option<String>,
    dispatch_tries: i64,
    last_error: Option<String>,
    stop_pending: bool,
    created_ms: i64,
    updated_ms: i64,
    ended_ms: Option<i64>,
}

impl AttemptRow {
    pub(crate) fn into_attempt(self) -> Result<Attempt, LedgerError> {
        let id = self.id;
        let corrupt = |column: &str, why: String| LedgerError::Corrupt {
            what: format!("attempts.{column} of attempt {id}: {why}"),
        };
        Ok(Attempt {
            id: AttemptId(id),
            job_id: JobId(self.job_id),
            number: AttemptNo(count(self.number).map_err(|e| corrupt("number", e))?),
            state: self
                .state
                .parse()
                .map_err(|e: afk_core::UnknownState| corrupt("state", e.to_string()))?,
            thread_id: id_of(self.thread_id).map_err(|e| corrupt("thread_id", e))?,
            project_id: id_of(self.project_id).map_err(|e| corrupt("project_id", e))?,
            create_command_id: id_of(self.create_command_id).map_err(|e| corrupt("create_command_id", e))?,
            turn_command_id: id_of(self.turn_command_id).map_err(|e| corrupt("turn_command_id", e))?,
            message_id: id_of(self.message_id).map_err(|e| corrupt("message_id", e))?,
            title: self.title,
            branch: self.branch,
            prompt: self.prompt,
            model: self.model,
            dispatch_tries: count(self.dispatch_tries).map_err(|e| corrupt("dispatch_tries", e))?,
            last_error: self.last_error,
            stop_pending: self.stop_pending,
            created_at: instant(self.created_ms).map_err(|e| corrupt("created_ms", e))?,
            updated_at: instant(self.updated_ms).map_err(|e| corrupt("updated_ms", e))?,
            ended_at: self
                .ended_ms
                .map(instant)
                .transpose()
                .map_err(|e| corrupt("ended_ms", e))?,
        })
    }
}

/// A row of the watcher's slim read: the live attempt's columns it needs and its job's.
#[derive(sqlx::FromRow)]
pub(crate) struct WatchedRow {
    id: i64,
    pub(crate) job_id: i64,
    number: i64,
    state: String,
    thread_id: String,
    updated_ms: i64,
    repo: String,
    issue_number: i64,
    job_state: String,
    not_before_ms: Option<i64>,
    input_wait_since_ms: Option<i64>,
    input_waited_ms: i64,
    follow_up_ms: Option<i64>,
}

impl WatchedRow {
    pub(crate) fn into_watched(self) -> Result<WatchedAttempt, LedgerError> {
        let id = self.id;
        let corrupt = |column: &str, why: String| LedgerError::Corrupt {
            what: format!("{column} of attempt {id}: {why}"),
        };
        let repo = Repo::new(self.repo).map_err(|e| corrupt("jobs.repo", e.to_string()))?;
        let number = u64::try_from(self.issue_number).map_err(|e| corrupt("jobs.number", e.to_string()))?;
        Ok(WatchedAttempt {
            job_id: JobId(self.job_id),
            issue: IssueKey { repo, number },
            job_state: self
                .job_state
                .parse()
                .map_err(|e: afk_core::UnknownState| corrupt("jobs.state", e.to_string()))?,
            job_not_before: self
                .not_before_ms
                .map(instant)
                .transpose()
                .map_err(|e| corrupt("jobs.not_before_ms", e))?,
            attempt_id: AttemptId(id),
            number: AttemptNo(count(self.number).map_err(|e| corrupt("attempts.number", e))?),
            state: self
                .state
                .parse()
                .map_err(|e: afk_core::UnknownState| corrupt("attempts.state", e.to_string()))?,
            thread_id: id_of(self.thread_id).map_err(|e| corrupt("attempts.thread_id", e))?,
            updated_at: instant(self.updated_ms).map_err(|e| corrupt("attempts.updated_ms", e))?,
            input_wait_since: self
                .input_wait_since_ms
                .map(instant)
                .transpose()
                .map_err(|e| corrupt("jobs.input_wait_since_ms", e))?,
            input_waited: waited(self.input_waited_ms).map_err(|e| corrupt("jobs.input_waited_ms", e))?,
            follow_up_at: self
                .follow_up_ms
                .map(instant)
                .transpose()
                .map_err(|e| corrupt("follow_ups.created_ms", e))?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    id: i64,
    job_id: i64,
    attempt: Option<i64>,
    from_state: String,
    to_state: String,
    note: String,
    at_ms: i64,
}

impl EventRow {
    pub(crate) fn into_event(self) -> Result<EventRecord, LedgerError> {
        let id = self.id;
        let corrupt = |column: &str, why: String| LedgerError::Corrupt {
            what: format!("events.{column} of event {id}: {why}"),
        };
        let state = |column: &str, text: String| {
            text.parse::<JobState>()
                .map_err(|e| corrupt(column, e.to_string()))
        };
        Ok(EventRecord {
            job_id: JobId(self.job_id),
            attempt: self
                .attempt
                .map(|n| count(n).map(AttemptNo))
                .transpose()
                .map_err(|e| corrupt("attempt", e))?,
            from: state("from_state", self.from_state)?,
            to: state("to_state", self.to_state)?,
            note: self.note,
            at: instant(self.at_ms).map_err(|e| corrupt("at_ms", e))?,
        })
    }
}

/// A stored T3 id as its type: the ledger wrote only ids the client had validated, so a failure
/// here means a row was edited by hand.
pub(crate) fn id_of<T: std::str::FromStr<Err = t3_client::ids::InvalidId>>(
    text: String,
) -> Result<T, String> {
    text.parse().map_err(|e: t3_client::ids::InvalidId| e.to_string())
}

/// A stored count (attempts, tries) as the domain's `u32`.
pub(crate) fn count(value: i64) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("{value} is not a count"))
}

/// A stored length in milliseconds as a duration.
fn waited(ms: i64) -> Result<std::time::Duration, String> {
    u64::try_from(ms)
        .map(std::time::Duration::from_millis)
        .map_err(|_| format!("{ms} is not a length of time"))
}

/// A stored unix-millisecond timestamp as an instant.
pub(crate) fn instant(ms: i64) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| format!("{ms} is not a representable instant"))
}

/// An instant as the unix milliseconds the ledger stores.
pub(crate) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}
