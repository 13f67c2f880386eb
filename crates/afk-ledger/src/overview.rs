//! Read-only overviews for the status surface and the CLI (`afk status`, `afk jobs`, the JSON API,
//! the dashboard, the metrics): slim rows without issue bodies or prompts, every listing capped
//! or paged, so that a ledger of 10,000 jobs answers in milliseconds (see BENCHMARKS.md). Nothing
//! here writes.

use afk_core::{AttemptNo, AttemptState, CancelReason, IssueKey, JobId, JobSource, JobState, Priority, Repo};
use chrono::{DateTime, Utc};
use serde::Serialize;
use t3_client::ThreadId;

use crate::model::millis;
use crate::{Ledger, LedgerError, Pool};

/// A job as overviews list it: no body, no labels, no prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSummary {
    /// Its ledger id.
    pub id: JobId,
    /// Its issue.
    pub issue: IssueKey,
    /// The issue's title.
    pub title: String,
    /// Its priority.
    pub priority: Priority,
    /// Where it came from.
    pub source: JobSource,
    /// Where it is in its life.
    pub state: JobState,
    /// Why it is cancelled, while it is.
    pub cancel_reason: Option<CancelReason>,
    /// Attempts started so far.
    pub attempts: u32,
    /// Not to be picked up (or dispatched again) before this instant: a retry's due time.
    pub not_before: Option<DateTime<Utc>>,
    /// The job's own last error.
    pub last_error: Option<String>,
    /// When it was first queued.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The attempt the listing is about: the latest one, unless the listing says otherwise.
    pub attempt: Option<AttemptSummary>,
}

/// An attempt as overviews list it: no prompt, no command ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttemptSummary {
    /// Its number within the job.
    pub number: AttemptNo,
    /// Where it is.
    pub state: AttemptState,
    /// Its T3 thread.
    pub thread_id: ThreadId,
    /// The branch its agent works on.
    pub branch: String,
    /// Its last error.
    pub last_error: Option<String>,
    /// When it started.
    pub created_at: DateTime<Utc>,
    /// When it last changed (for a running attempt: when it started running).
    pub updated_at: DateTime<Utc>,
    /// When it ended, if it did.
    pub ended_at: Option<DateTime<Utc>>,
}

/// Totals over every attempt the ledger holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AttemptTotals {
    /// Attempts ever started.
    pub attempts: u64,
    /// Agent time: the sum of every attempt's duration (until now for those still live), in
    /// milliseconds.
    pub agent_ms: i64,
}

/// How many rows each table of the ledger holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LedgerSize {
    /// Jobs.
    pub jobs: u64,
    /// Attempts.
    pub attempts: u64,
    /// Events (transitions recorded).
    pub events: u64,
}

/// Which jobs a listing selects: every job when empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFilter<'a> {
    /// Only jobs in one of these states (names, so a state this afk does not know yet matches
    /// nothing); any state when empty.
    pub states: &'a [&'a str],
    /// Only the jobs of this repository.
    pub repo: Option<&'a Repo>,
}

impl JobFilter<'_> {
    /// The filter as ` AND ...` conditions on `jobs j` whose placeholders start at `$first`, and
    /// the values to bind to them in order.
    fn conditions(&self, first: usize) -> (String, Vec<&str>) {
        let mut sql = String::new();
        let mut binds: Vec<&str> = Vec::new();
        if !self.states.is_empty() {
            let placeholders: Vec<String> = (0..self.states.len())
                .map(|i| format!("${}", first + i))
                .collect();
            sql.push_str(&format!(" AND j.state IN ({})", placeholders.join(", ")));
            binds.extend(self.states.iter().copied());
        }
        if let Some(repo) = self.repo {
            // GitHub's names are case-insensitive; jobs keep the configured spelling.
            sql.push_str(&format!(" AND LOWER(j.repo) = LOWER(${})", first + binds.len()));
            binds.push(repo.as_str());
        }
        (sql, binds)
    }
}

/// The job's columns and one attempt's, as every overview selects them.
const SUMMARY_COLUMNS: &str = "j.id, j.repo, j.number, j.title, j.priority, j.source, j.state, \
     j.cancel_reason, j.attempts, j.not_before_ms, j.last_error, j.created_ms, j.updated_ms, \
     a.number AS a_number, a.state AS a_state, a.thread_id AS a_thread_id, a.branch AS a_branch, \
     a.last_error AS a_last_error, a.created_ms AS a_created_ms, a.updated_ms AS a_updated_ms, \
     a.ended_ms AS a_ended_ms";

/// The job with its latest attempt (attempts are numbered 1.. and `jobs.attempts` counts them).
const WITH_LATEST: &str = "FROM jobs j LEFT JOIN attempts a ON a.job_id = j.id AND a.number = j.attempts";

/// The most rows one overview listing returns, whatever the caller asks.
pub const MAX_PAGE: usize = 1000;

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit.min(MAX_PAGE)).unwrap_or(0)
}

impl Ledger {
    /// Up to `limit` jobs (at most [`MAX_PAGE`]) with ids above `after`, in id order, each with
    /// its latest attempt; `states` narrows them to those states when not empty (names, so a
    /// state this afk does not know yet matches nothing).
    pub async fn job_page(
        &self,
        states: &[&str],
        after: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobSummary>, LedgerError> {
        let mut sql = format!("SELECT {SUMMARY_COLUMNS} {WITH_LATEST} WHERE j.id > $1");
        if !states.is_empty() {
            let placeholders: Vec<String> = (0..states.len()).map(|i| format!("${}", i + 3)).collect();
            sql.push_str(&format!(" AND j.state IN ({})", placeholders.join(", ")));
        }
        sql.push_str(" ORDER BY j.id LIMIT $2");
        let after = after.map_or(0, |id| id.0);
        let rows: Vec<SummaryRow> = with_pool!(self, |pool| {
            let mut query = sqlx::query_as(&sql).bind(after).bind(limit_of(limit));
            for state in states {
                query = query.bind(*state);
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter().map(SummaryRow::into_summary).collect()
    }

    /// Up to `limit` jobs (at most [`MAX_PAGE`]) that `filter` selects with ids below `before`
    /// (all when `None`), newest (highest id) first, each with its latest attempt: `afk jobs`'s
    /// listing, read backwards a page at a time.
    pub async fn newest_jobs(
        &self,
        filter: &JobFilter<'_>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<JobSummary>, LedgerError> {
        let (conditions, binds) = filter.conditions(3);
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} {WITH_LATEST} WHERE j.id < $1{conditions} ORDER BY j.id DESC LIMIT $2"
        );
        let before = before.map_or(i64::MAX, |id| id.0);
        let rows: Vec<SummaryRow> = with_pool!(self, |pool| {
            let mut query = sqlx::query_as(&sql).bind(before).bind(limit_of(limit));
            for value in &binds {
                query = query.bind(*value);
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter().map(SummaryRow::into_summary).collect()
    }

    /// How many jobs `filter` selects with ids below `before` (all when `None`), counting no
    /// further than `cap`: what `afk jobs` says is left after its page. The cap keeps the count's
    /// cost bounded however long the history (counting 100,000 rows costs 10× the page itself on
    /// PostgreSQL; see BENCHMARKS.md).
    pub async fn count_jobs(
        &self,
        filter: &JobFilter<'_>,
        before: Option<JobId>,
        cap: u64,
    ) -> Result<u64, LedgerError> {
        let (conditions, binds) = filter.conditions(3);
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM jobs j WHERE j.id < $1{conditions} LIMIT $2) capped"
        );
        let before = before.map_or(i64::MAX, |id| id.0);
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let count: i64 = with_pool!(self, |pool| {
            let mut query = sqlx::query_scalar(&sql).bind(before).bind(cap);
            for value in &binds {
                query = query.bind(*value);
            }
            query.fetch_one(pool).await?
        });
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Up to `limit` jobs in any of `states` (names), most recently changed first, each with its
    /// latest attempt: e.g. the jobs that need a person.
    pub async fn recent_jobs_in(
        &self,
        states: &[&str],
        limit: usize,
    ) -> Result<Vec<JobSummary>, LedgerError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..states.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} {WITH_LATEST} WHERE j.state IN ({}) \
             ORDER BY j.updated_ms DESC, j.id DESC LIMIT $1",
            placeholders.join(", ")
        );
        let rows: Vec<SummaryRow> = with_pool!(self, |pool| {
            let mut query = sqlx::query_as(&sql).bind(limit_of(limit));
            for state in states {
                query = query.bind(*state);
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter().map(SummaryRow::into_summary).collect()
    }

    /// Up to `limit` jobs waiting out a retry back-off, soonest due first, each with its latest
    /// (ended) attempt.
    pub async fn retry_queue(&self, limit: usize) -> Result<Vec<JobSummary>, LedgerError> {
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} {WITH_LATEST} WHERE j.state = 'retry_wait' \
             ORDER BY j.not_before_ms, j.id LIMIT $1"
        );
        let rows: Vec<SummaryRow> = fetch!(self, fetch_all, &sql, limit_of(limit));
        rows.into_iter().map(SummaryRow::into_summary).collect()
    }

    /// Up to `limit` live attempts (`dispatching` or `running`), longest running first, each
    /// with its job.
    pub async fn running_attempts(&self, limit: usize) -> Result<Vec<JobSummary>, LedgerError> {
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE a.state IN ('dispatching', 'running') ORDER BY a.created_ms, a.id LIMIT $1"
        );
        let rows: Vec<SummaryRow> = fetch!(self, fetch_all, &sql, limit_of(limit));
        rows.into_iter().map(SummaryRow::into_summary).collect()
    }

    /// The `limit` attempts that ended last, latest first, each with its job (as it is now).
    pub async fn recent_outcomes(&self, limit: usize) -> Result<Vec<JobSummary>, LedgerError> {
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE a.ended_ms IS NOT NULL ORDER BY a.ended_ms DESC, a.id DESC LIMIT $1"
        );
        let rows: Vec<SummaryRow> = fetch!(self, fetch_all, &sql, limit_of(limit));
        rows.into_iter().map(SummaryRow::into_summary).collect()
    }

    /// Attempts ever started and the agent time they took (live ones counted until `now`).
    ///
    /// Read from the running totals the ledger's triggers keep beside every write (migration
    /// 0022): one row, whatever the history's length.
    pub async fn attempt_totals(&self, now: DateTime<Utc>) -> Result<AttemptTotals, LedgerError> {
        // Σ(ended − created) over the ended attempts + Σ(now − created) over the open ones.
        let sql = "SELECT attempts, ended_agent_ms + open_attempts * $1 - open_created_ms \
                   FROM ledger_totals WHERE id = 1";
        let (attempts, agent_ms): (i64, i64) = fetch!(self, fetch_one, sql, millis(now));
        Ok(AttemptTotals {
            attempts: u64::try_from(attempts).unwrap_or(0),
            agent_ms: agent_ms.max(0),
        })
    }

    /// How many rows each table holds.
    ///
    /// Read from the running totals the ledger's triggers keep beside every write (migration
    /// 0022): a few rows, whatever the history's length.
    pub async fn size(&self) -> Result<LedgerSize, LedgerError> {
        // CAST: PostgreSQL sums BIGINTs into NUMERIC.
        let sql = "SELECT (SELECT CAST(COALESCE(SUM(jobs), 0) AS BIGINT) FROM job_counts), \
                   attempts, events FROM ledger_totals WHERE id = 1";
        let (jobs, attempts, events): (i64, i64, i64) = fetch!(self, fetch_one, sql);
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(LedgerSize {
            jobs: count(jobs),
            attempts: count(attempts),
            events: count(events),
        })
    }

    /// The last `limit` events of `job`, oldest first.
    pub async fn recent_events(
        &self,
        job: JobId,
        limit: usize,
    ) -> Result<Vec<crate::EventRecord>, LedgerError> {
        let sql = "SELECT * FROM (SELECT * FROM events WHERE job_id = $1 ORDER BY id DESC LIMIT $2) e \
                   ORDER BY id";
        let rows: Vec<crate::model::EventRow> = fetch!(self, fetch_all, sql, job.0, limit_of(limit));
        rows.into_iter().map(crate::model::EventRow::into_event).collect()
    }
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: i64,
    repo: String,
    number: i64,
    title: String,
    priority: i64,
    source: String,
    state: String,
    cancel_reason: Option<String>,
    attempts: i64,
    not_before_ms: Option<i64>,
    last_error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    a_number: Option<i64>,
    a_state: Option<String>,
    a_thread_id: Option<String>,
    a_branch: Option<String>,
    a_last_error: Option<String>,
    a_created_ms: Option<i64>,
    a_updated_ms: Option<i64>,
    a_ended_ms: Option<i64>,
}

impl SummaryRow {
    fn into_summary(self) -> Result<JobSummary, LedgerError> {
        let id = self.id;
        let corrupt = |column: &str, why: String| LedgerError::Corrupt {
            what: format!("{column} of job {id}: {why}"),
        };
        let instant = |ms: i64, column: &str| {
            DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| corrupt(column, format!("{ms} is not a representable instant")))
        };
        let count = |n: i64, column: &str| {
            u32::try_from(n).map_err(|_| corrupt(column, format!("{n} is not a count")))
        };
        let attempt = match (
            self.a_number,
            self.a_state,
            self.a_thread_id,
            self.a_created_ms,
            self.a_updated_ms,
        ) {
            (Some(number), Some(state), Some(thread_id), Some(created), Some(updated)) => {
                Some(AttemptSummary {
                    number: AttemptNo(count(number, "attempts.number")?),
                    state: state
                        .parse()
                        .map_err(|e: afk_core::UnknownState| corrupt("attempts.state", e.to_string()))?,
                    thread_id: thread_id.parse().map_err(|e: t3_client::ids::InvalidId| {
                        corrupt("attempts.thread_id", e.to_string())
                    })?,
                    branch: self.a_branch.unwrap_or_default(),
                    last_error: self.a_last_error,
                    created_at: instant(created, "attempts.created_ms")?,
                    updated_at: instant(updated, "attempts.updated_ms")?,
                    ended_at: self
                        .a_ended_ms
                        .map(|ms| instant(ms, "attempts.ended_ms"))
                        .transpose()?,
                })
            }
            _ => None,
        };
        Ok(JobSummary {
            id: JobId(id),
            issue: IssueKey {
                repo: Repo::new(self.repo).map_err(|e| corrupt("jobs.repo", e.to_string()))?,
                number: u64::try_from(self.number).map_err(|e| corrupt("jobs.number", e.to_string()))?,
            },
            title: self.title,
            priority: u8::try_from(self.priority)
                .ok()
                .and_then(|p| Priority::new(p).ok())
                .ok_or_else(|| corrupt("jobs.priority", format!("{} is not 0..=3", self.priority)))?,
            source: self
                .source
                .parse()
                .map_err(|e: afk_core::UnknownName| corrupt("jobs.source", e.to_string()))?,
            state: self
                .state
                .parse()
                .map_err(|e: afk_core::UnknownState| corrupt("jobs.state", e.to_string()))?,
            cancel_reason: self
                .cancel_reason
                .map(|r| r.parse())
                .transpose()
                .map_err(|e: afk_core::UnknownName| corrupt("jobs.cancel_reason", e.to_string()))?,
            attempts: count(self.attempts, "jobs.attempts")?,
            not_before: self
                .not_before_ms
                .map(|ms| instant(ms, "jobs.not_before_ms"))
                .transpose()?,
            last_error: self.last_error,
            created_at: instant(self.created_ms, "jobs.created_ms")?,
            updated_at: instant(self.updated_ms, "jobs.updated_ms")?,
            attempt,
        })
    }
}
