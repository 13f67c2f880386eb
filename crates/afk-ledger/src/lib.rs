//! afk's durable ledger: jobs, their attempts (one T3 thread each) and an append-only event log of
//! their transitions, in SQLite (a file, the default) or PostgreSQL, behind one interface.
//!
//! **Architecture invariants:**
//! - The ledger stores; it never decides. Every state change comes in as an
//!   [`afk_core::Transition`] computed by [`afk_core::apply`], and [`Ledger::record`] writes it
//!   atomically (job, attempt and event in one database transaction) with a compare-and-set on the
//!   job's state, so two writers can never both move a job from the same state.
//! - A transition is in the ledger before its effect happens: the caller records first, then talks
//!   to T3. An attempt's ids are stored with the transition that starts it and never change.
//! - The schema itself forbids two live attempts (`dispatching` or `running`) for one job and two
//!   attempts with one thread id, whatever the code above it does.
//! - Timestamps are stored as unix milliseconds (BIGINT) and appear as `DateTime<Utc>` here.
//! - No database password reaches an error, a log line or `Debug` output.
//!
//! **Migrations** live in `migrations/sqlite` and `migrations/postgres`, one file per step and the
//! same step number in both. A migration that has run anywhere is never edited (the migrator
//! refuses a changed checksum): change the schema with a new step in both directories.

#![warn(missing_docs)]

mod error;
mod leader;
mod model;
mod redact;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use afk_core::{AttemptChange, AttemptState, JobId, JobState, Transition};
use chrono::{DateTime, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection};

pub use afk_core::IssueKey;
pub use error::{LedgerError, RecordRef};
pub use leader::Leadership;
pub use model::{Attempt, AttemptId, EventRecord, Job, NewAttempt, NewJob, WatchedAttempt};
pub use redact::redact_url;

use model::{millis, AttemptRow, EventRow, JobRow, WatchedRow};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite writer waits for another connection's write to finish before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections to a SQLite file: readers run concurrently under WAL, writers take turns.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// Connections to PostgreSQL per afk process.
const POSTGRES_MAX_CONNECTIONS: u32 = 8;
/// How long to wait for a database connection before reporting the database unreachable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which database a [`Ledger`] is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: a file (or memory), embedded in the afk process.
    Sqlite,
    /// PostgreSQL: a server, shareable by several afk replicas.
    Postgres,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of either backend. Each query is written
/// once in SQL both backends accept (`$1` placeholders, `RETURNING`, partial indexes), and rows
/// decode through the same `FromRow` structs; only the driver types differ.
macro_rules! with_pool {
    ($ledger:expr, |$pool:ident| $body:expr) => {
        match &$ledger.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` (which returns `Result<T, LedgerError>` and uses `$tx` as its executor) in one
/// database transaction on `$pool`: commits on `Ok`, rolls back on `Err` and returns the body's
/// result. The rollback is explicit, not left to the transaction's drop, which would defer it
/// to a background task and leave the connection holding its locks for a while.
macro_rules! in_transaction {
    ($pool:expr, |$tx:ident| $body:expr) => {{
        let mut $tx = $pool.begin().await?;
        let outcome: Result<_, LedgerError> = async { $body }.await;
        match outcome {
            Ok(value) => {
                $tx.commit().await?;
                Ok(value)
            }
            Err(error) => {
                if let Err(rollback) = $tx.rollback().await {
                    tracing::warn!("ledger rollback failed after {error}: {rollback}");
                }
                Err(error)
            }
        }
    }};
}

/// afk's durable ledger. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Ledger {
    pool: Pool,
    url_redacted: String,
}

impl fmt::Debug for Ledger {
    // By hand: the pools' own Debug output includes their connect options, password and all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("backend", &self.backend())
            .field("url", &self.url_redacted)
            .finish()
    }
}

/// SQL for the columns that tell a live attempt (one whose thread may be working).
const LIVE: &str = "state IN ('dispatching', 'running')";

impl Ledger {
    /// Opens the ledger at `url` and brings its schema up to date (runs pending migrations).
    ///
    /// - `sqlite://PATH` (relative to the working directory, or `sqlite:///abs/path`): the file
    ///   and its parent directory are created when missing; the database runs in WAL mode with a
    ///   busy timeout, so that readers never block the writer and writers take turns.
    /// - `sqlite::memory:`: a private in-memory database, gone when the last clone is dropped
    ///   (tests, `afk demo`).
    /// - `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?options=-csearch_path%3DSCHEMA]`.
    ///
    /// Errors name the URL with its password redacted.
    pub async fn open(url: &str) -> Result<Ledger, LedgerError> {
        let url_redacted = redact_url(url);
        let pool = if url.starts_with("sqlite:") {
            Pool::Sqlite(open_sqlite(url, &url_redacted).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(open_postgres(url, &url_redacted).await?)
        } else {
            return Err(LedgerError::UnsupportedUrl { url_redacted });
        };
        tracing::debug!("ledger open at {url_redacted}");
        Ok(Ledger { pool, url_redacted })
    }

    /// Which database the ledger is kept in.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The URL the ledger was opened with, its password redacted: safe to print.
    pub fn url_redacted(&self) -> &str {
        &self.url_redacted
    }

    /// Closes every connection; waits for queries in flight. Other clones stop working.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }

    /// Stores the issue `job` describes. A new issue becomes a `queued` job (returned with
    /// `true`); a known one gets its title, body, labels and priority updated (returned with
    /// `false`) and keeps its state, attempts and source: upserting is idempotent and never moves
    /// a job. `updated_at` changes only when something did.
    pub async fn upsert_job(&self, job: &NewJob, now: DateTime<Utc>) -> Result<(Job, bool), LedgerError> {
        let number = issue_number(&job.issue)?;
        let labels = serde_json::to_string(&job.labels).map_err(|e| LedgerError::OutOfRange {
            what: format!("the labels of {}: {e}", job.issue),
        })?;
        let priority = i64::from(job.priority.level());
        let now = millis(now);
        let row: Option<JobRow> = with_pool!(self, |pool| in_transaction!(pool, |tx| {
            let inserted: Option<JobRow> = sqlx::query_as(
                "INSERT INTO jobs (repo, number, title, body, labels, priority, source, state, attempts, \
                 dispatch_tries, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', 0, 0, $8, $9) \
                 ON CONFLICT (repo, number) DO NOTHING RETURNING *",
            )
            .bind(job.issue.repo.as_str())
            .bind(number)
            .bind(&job.title)
            .bind(&job.body)
            .bind(&labels)
            .bind(priority)
            .bind(&job.source)
            .bind(now)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if inserted.is_none() {
                sqlx::query(
                    "UPDATE jobs SET title = $1, body = $2, labels = $3, priority = $4, updated_ms = $5 \
                     WHERE repo = $6 AND number = $7 \
                     AND (title <> $1 OR body <> $2 OR labels <> $3 OR priority <> $4)",
                )
                .bind(&job.title)
                .bind(&job.body)
                .bind(&labels)
                .bind(priority)
                .bind(now)
                .bind(job.issue.repo.as_str())
                .bind(number)
                .execute(&mut *tx)
                .await?;
            }
            Ok(inserted)
        }))?;
        match row {
            Some(row) => Ok((row.into_job()?, true)),
            None => {
                let job = self
                    .job_by_issue(&job.issue)
                    .await?
                    .ok_or_else(|| LedgerError::Corrupt {
                        what: format!("{} was neither inserted nor found", job.issue),
                    })?;
                Ok((job, false))
            }
        }
    }

    /// The job with id `id`, if any.
    pub async fn job(&self, id: JobId) -> Result<Option<Job>, LedgerError> {
        let row: Option<JobRow> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM jobs WHERE id = $1")
                .bind(id.0)
                .fetch_optional(pool)
                .await?
        });
        row.map(JobRow::into_job).transpose()
    }

    /// The job of `issue`, if any.
    pub async fn job_by_issue(&self, issue: &IssueKey) -> Result<Option<Job>, LedgerError> {
        let number = issue_number(issue)?;
        let row: Option<JobRow> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM jobs WHERE repo = $1 AND number = $2")
                .bind(issue.repo.as_str())
                .bind(number)
                .fetch_optional(pool)
                .await?
        });
        row.map(JobRow::into_job).transpose()
    }

    /// Every job, ordered by id (oldest first).
    pub async fn jobs(&self) -> Result<Vec<Job>, LedgerError> {
        let rows: Vec<JobRow> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM jobs ORDER BY id")
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(JobRow::into_job).collect()
    }

    /// The jobs in any of `states`, ordered by id. No states, no jobs.
    pub async fn jobs_in(&self, states: &[JobState]) -> Result<Vec<Job>, LedgerError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=states.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT * FROM jobs WHERE state IN ({}) ORDER BY id",
            placeholders.join(", ")
        );
        let rows: Vec<JobRow> = with_pool!(self, |pool| {
            let mut query = sqlx::query_as(&sql);
            for state in states {
                query = query.bind(state.as_str());
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter().map(JobRow::into_job).collect()
    }

    /// The jobs from `source` whose state or attempt count changed since [`Ledger::mark_reported`]
    /// last recorded them (marked as `STATE:ATTEMPTS`), ordered by id: what a reporter still has
    /// to say, read without loading every job on every tick.
    pub async fn jobs_to_report(&self, source: &str) -> Result<Vec<Job>, LedgerError> {
        let rows: Vec<JobRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT * FROM jobs WHERE source = $1 \
                 AND (reported IS NULL OR reported <> state || ':' || attempts) ORDER BY id",
            )
            .bind(source)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(JobRow::into_job).collect()
    }

    /// Up to `limit` jobs that may start an attempt at `now`: `queued`, or `retry_wait` whose
    /// back-off has passed. Most urgent first (priority p0 before p3), then oldest, then lowest
    /// id, so equal jobs are taken in the order they arrived. A `dispatching` job waiting to
    /// retry its dispatch is not here: it already has its attempt (see [`Ledger::live_attempts`]
    /// and [`Job::not_before`]).
    pub async fn ready_jobs(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Job>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<JobRow> = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT * FROM jobs WHERE state = 'queued' \
                 OR (state = 'retry_wait' AND (not_before_ms IS NULL OR not_before_ms <= $1)) \
                 ORDER BY priority ASC, created_ms ASC, id ASC LIMIT $2",
            )
            .bind(millis(now))
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(JobRow::into_job).collect()
    }

    /// The attempts of `job`, first to last. Empty for an unknown job.
    pub async fn attempts(&self, job: JobId) -> Result<Vec<Attempt>, LedgerError> {
        let rows: Vec<AttemptRow> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM attempts WHERE job_id = $1 ORDER BY number")
                .bind(job.0)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(AttemptRow::into_attempt).collect()
    }

    /// The attempt with id `id`, if any.
    pub async fn attempt(&self, id: AttemptId) -> Result<Option<Attempt>, LedgerError> {
        let row: Option<AttemptRow> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM attempts WHERE id = $1")
                .bind(id.0)
                .fetch_optional(pool)
                .await?
        });
        row.map(AttemptRow::into_attempt).transpose()
    }

    /// The live attempt (`dispatching` or `running`) of `job`, if it has one.
    pub async fn live_attempt(&self, job: JobId) -> Result<Option<Attempt>, LedgerError> {
        let sql = format!("SELECT * FROM attempts WHERE job_id = $1 AND {LIVE}");
        let row: Option<AttemptRow> = with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(job.0).fetch_optional(pool).await?
        });
        row.map(AttemptRow::into_attempt).transpose()
    }

    /// Every live attempt (`dispatching` or `running`) with its job, ordered by job id: what the
    /// watcher watches and what recovery resolves after a restart.
    pub async fn live_attempts(&self) -> Result<Vec<(Job, Attempt)>, LedgerError> {
        self.attempts_with_jobs(LIVE).await
    }

    /// Every live attempt (`dispatching` or `running`) as [`Ledger::live_attempts`] lists them,
    /// ordered by job id, but only what watching needs ([`WatchedAttempt`]): no issue body, no
    /// prompt, no ids of commands. One statement over an index that covers it, so both backends
    /// read one consistent snapshot and SQLite never reads the attempts' rows, whose prompts
    /// spill onto overflow pages: at 10,000 running attempts this read is a small fraction of
    /// [`Ledger::live_attempts`] in time and memory (see BENCHMARKS.md).
    pub async fn watched_attempts(&self) -> Result<Vec<WatchedAttempt>, LedgerError> {
        // Ordered by job only, as in `attempts_with_jobs`: one live attempt per job (the schema
        // says so), so the order is total without walking the UNIQUE (job_id, number) index.
        const SQL: &str = "SELECT a.id, a.job_id, a.number, a.state, a.thread_id, a.updated_ms, \
             j.repo, j.number AS issue_number, j.state AS job_state, j.not_before_ms \
             FROM attempts a JOIN jobs j ON j.id = a.job_id \
             WHERE a.state IN ('dispatching', 'running') ORDER BY a.job_id";
        let rows: Vec<WatchedRow> = with_pool!(self, |pool| { sqlx::query_as(SQL).fetch_all(pool).await? });
        rows.into_iter().map(WatchedRow::into_watched).collect()
    }

    /// Every attempt whose thread must still be interrupted and its session stopped (recorded by
    /// an `End { stop_thread: true }` transition, cleared by [`Ledger::mark_thread_stopped`]),
    /// with its job, ordered by job id.
    pub async fn attempts_to_stop(&self) -> Result<Vec<(Job, Attempt)>, LedgerError> {
        self.attempts_with_jobs("stop_pending").await
    }

    /// The attempts matching the SQL condition `filter` (a constant of this crate, never input),
    /// each with its job.
    async fn attempts_with_jobs(&self, filter: &str) -> Result<Vec<(Job, Attempt)>, LedgerError> {
        // Ordered by job only (attempts of one job are sorted below): `ORDER BY job_id, number`
        // makes SQLite walk the UNIQUE(job_id, number) index over every attempt ever made instead
        // of the small partial index that matches `filter` (see BENCHMARKS.md).
        let attempts_sql = format!("SELECT * FROM attempts WHERE {filter} ORDER BY job_id");
        let jobs_sql = format!(
            "SELECT * FROM jobs WHERE id IN (SELECT job_id FROM attempts WHERE {filter}) ORDER BY id"
        );
        // Both reads see one snapshot, so each attempt comes with its job as it was at that
        // instant. SQLite's transactions always do; PostgreSQL's default (read committed) takes a
        // snapshot per statement, so ask it for one per transaction.
        let postgres = self.backend() == Backend::Postgres;
        let (attempt_rows, job_rows): (Vec<AttemptRow>, Vec<JobRow>) =
            with_pool!(self, |pool| in_transaction!(pool, |tx| {
                if postgres {
                    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                        .execute(&mut *tx)
                        .await?;
                }
                let attempts = sqlx::query_as(&attempts_sql).fetch_all(&mut *tx).await?;
                let jobs = sqlx::query_as(&jobs_sql).fetch_all(&mut *tx).await?;
                Ok((attempts, jobs))
            }))?;
        let mut jobs: HashMap<i64, Job> = HashMap::with_capacity(job_rows.len());
        for row in job_rows {
            let job = row.into_job()?;
            jobs.insert(job.id.0, job);
        }
        attempt_rows
            .into_iter()
            .map(|row| {
                let job = jobs
                    .get(&row.job_id)
                    .cloned()
                    .ok_or_else(|| LedgerError::Corrupt {
                        what: format!("attempts of job {} whose job row is missing", row.job_id),
                    })?;
                Ok((job, row.into_attempt()?))
            })
            .collect::<Result<Vec<_>, LedgerError>>()
            .map(|mut pairs| {
                pairs.sort_by_key(|(job, attempt)| (job.id.0, attempt.number.0));
                pairs
            })
    }

    /// Records that the thread of `attempt` was interrupted and its session stopped: it leaves
    /// [`Ledger::attempts_to_stop`]. Idempotent; [`LedgerError::NotFound`] for an unknown attempt.
    pub async fn mark_thread_stopped(&self, attempt: AttemptId) -> Result<(), LedgerError> {
        let found: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar("UPDATE attempts SET stop_pending = FALSE WHERE id = $1 RETURNING id")
                .bind(attempt.0)
                .fetch_optional(pool)
                .await?
        });
        match found {
            Some(_) => Ok(()),
            None => Err(LedgerError::NotFound(RecordRef::Attempt(attempt))),
        }
    }

    /// Records what was last reported on `job`'s issue: `STATE:ATTEMPTS`, which
    /// [`Ledger::jobs_to_report`] compares with the job.
    /// Does not count as a change of the job (`updated_at` stays). [`LedgerError::NotFound`] for
    /// an unknown job.
    pub async fn mark_reported(&self, job: JobId, marker: &str) -> Result<(), LedgerError> {
        let found: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar("UPDATE jobs SET reported = $1 WHERE id = $2 RETURNING id")
                .bind(marker)
                .bind(job.0)
                .fetch_optional(pool)
                .await?
        });
        match found {
            Some(_) => Ok(()),
            None => Err(LedgerError::NotFound(RecordRef::Job(job))),
        }
    }

    /// The event log of `job`, oldest first. Empty for an unknown job.
    pub async fn events(&self, job: JobId) -> Result<Vec<EventRecord>, LedgerError> {
        let rows: Vec<EventRow> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT * FROM events WHERE job_id = $1 ORDER BY id")
                .bind(job.0)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(EventRow::into_event).collect()
    }

    /// How many jobs are in each state: every [`JobState`], in lifecycle order
    /// ([`JobState::ALL`]), zeros included.
    pub async fn counts_by_state(&self) -> Result<Vec<(JobState, u64)>, LedgerError> {
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .fetch_all(pool)
                .await?
        });
        let mut counts: Vec<(JobState, u64)> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        for (state, n) in rows {
            let state: JobState =
                state
                    .parse()
                    .map_err(|e: afk_core::UnknownState| LedgerError::Corrupt {
                        what: format!("jobs.state: {e}"),
                    })?;
            let n = u64::try_from(n).unwrap_or(0);
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = n;
            }
        }
        Ok(counts)
    }

    /// Records `transition` for `job` atomically, in one database transaction, and returns the
    /// job as it now is:
    ///
    /// - compare-and-set: the job must still be in `transition.from`, else nothing is written and
    ///   the result is [`LedgerError::Conflict`] (or [`LedgerError::NotFound`]);
    /// - the job takes `transition.to` and `transition.not_before` (none clears it); a started
    ///   attempt counts one more attempt and resets the dispatch tries; a dispatch retry stores
    ///   the machine's try count; an error the transition carries becomes the job's
    ///   `last_error` (for a refusal, which has no attempt, its note does);
    /// - the live attempt changes per `transition.attempt`: `Start` inserts it in `dispatching`
    ///   with the ids of `new_attempt` (required, else [`LedgerError::MissingAttempt`]; ignored
    ///   for every other change), `DispatchRetry` stores its tries and error, `Running` moves it
    ///   to `running`, `End` stores its final state, error and end time and whether its thread
    ///   must still be stopped. A change to a live attempt the job does not have is
    ///   [`LedgerError::NoLiveAttempt`];
    /// - one event is appended.
    ///
    /// The schema rejects a second live attempt or a reused thread id
    /// ([`LedgerError::is_unique_violation`]); the whole transaction is then rolled back.
    pub async fn record(
        &self,
        job: JobId,
        transition: &Transition,
        new_attempt: Option<&NewAttempt>,
        now: DateTime<Utc>,
    ) -> Result<Job, LedgerError> {
        let plan = Plan::new(job, transition, new_attempt)?;
        let now = millis(now);
        // The compare-and-set is the transaction's first statement and a write, so SQLite takes
        // its write lock (waiting out the busy timeout) before reading anything: no lock upgrade
        // can deadlock.
        let row: JobRow = with_pool!(self, |pool| in_transaction!(pool, |tx| {
            let updated: Option<JobRow> = sqlx::query_as(
                "UPDATE jobs SET state = $1, attempts = attempts + $2, \
                 dispatch_tries = COALESCE($3, dispatch_tries), not_before_ms = $4, \
                 last_error = COALESCE($5, last_error), updated_ms = $6, \
                 attempts_base = CASE WHEN $9 THEN attempts ELSE attempts_base END \
                 WHERE id = $7 AND state = $8 RETURNING *",
            )
            .bind(transition.to.as_str())
            .bind(plan.attempts_added)
            .bind(plan.dispatch_tries)
            .bind(transition.not_before.map(millis))
            .bind(plan.last_error.as_deref())
            .bind(now)
            .bind(job.0)
            .bind(transition.from.as_str())
            .bind(transition.fresh_budget)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(updated) = updated else {
                let actual: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
                    .bind(job.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                return Err(match actual {
                    None => LedgerError::NotFound(RecordRef::Job(job)),
                    Some(actual) => LedgerError::Conflict {
                        job,
                        expected: transition.from,
                        actual: actual
                            .parse()
                            .map_err(|e: afk_core::UnknownState| LedgerError::Corrupt {
                                what: format!("jobs.state of job {job}: {e}"),
                            })?,
                    },
                });
            };
            let attempt_no = match &plan.attempt {
                AttemptWrite::None => None,
                AttemptWrite::Insert { number, ids } => {
                    sqlx::query(
                        "INSERT INTO attempts (job_id, number, state, thread_id, project_id, \
                         create_command_id, turn_command_id, message_id, title, branch, prompt, \
                         dispatch_tries, stop_pending, created_ms, updated_ms, model) \
                         VALUES ($1, $2, 'dispatching', $3, $4, $5, $6, $7, $8, $9, $10, 0, FALSE, $11, $12, $13)",
                    )
                    .bind(job.0)
                    .bind(*number)
                    .bind(&ids.thread_id)
                    .bind(&ids.project_id)
                    .bind(&ids.create_command_id)
                    .bind(&ids.turn_command_id)
                    .bind(&ids.message_id)
                    .bind(&ids.title)
                    .bind(&ids.branch)
                    .bind(&ids.prompt)
                    .bind(now)
                    .bind(now)
                    .bind(ids.model.as_deref())
                    .execute(&mut *tx)
                    .await?;
                    Some(*number)
                }
                AttemptWrite::Update {
                    state,
                    dispatch_tries,
                    last_error,
                    stop_pending,
                    ended,
                } => {
                    let number: Option<i64> = sqlx::query_scalar(&format!(
                        "UPDATE attempts SET state = $1, dispatch_tries = COALESCE($2, dispatch_tries), \
                         last_error = COALESCE($3, last_error), stop_pending = COALESCE($4, stop_pending), \
                         ended_ms = $5, updated_ms = $6 WHERE job_id = $7 AND {LIVE} RETURNING number"
                    ))
                    .bind(state.as_str())
                    .bind(*dispatch_tries)
                    .bind(last_error.as_deref())
                    .bind(*stop_pending)
                    .bind(ended.then_some(now))
                    .bind(now)
                    .bind(job.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match number {
                        Some(n) => Some(n),
                        None => return Err(LedgerError::NoLiveAttempt { job }),
                    }
                }
            };
            sqlx::query(
                "INSERT INTO events (job_id, attempt, from_state, to_state, note, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(job.0)
            .bind(attempt_no)
            .bind(transition.from.as_str())
            .bind(transition.to.as_str())
            .bind(&transition.note)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok(updated)
        }))?;
        row.into_job()
    }
}

/// What [`Ledger::record`] writes, worked out before the database is touched so that a malformed
/// request fails without a transaction.
struct Plan<'a> {
    attempts_added: i64,
    dispatch_tries: Option<i64>,
    last_error: Option<String>,
    attempt: AttemptWrite<'a>,
}

enum AttemptWrite<'a> {
    None,
    Insert {
        number: i64,
        ids: &'a NewAttempt,
    },
    Update {
        state: AttemptState,
        dispatch_tries: Option<i64>,
        last_error: Option<String>,
        stop_pending: Option<bool>,
        ended: bool,
    },
}

impl<'a> Plan<'a> {
    fn new(
        job: JobId,
        transition: &Transition,
        new_attempt: Option<&'a NewAttempt>,
    ) -> Result<Plan<'a>, LedgerError> {
        let mut plan = Plan {
            attempts_added: 0,
            dispatch_tries: None,
            last_error: None,
            attempt: AttemptWrite::None,
        };
        match &transition.attempt {
            None => {
                // A refusal fails the job without an attempt: its note is the only reason there is.
                if transition.to == JobState::Failed {
                    plan.last_error = Some(transition.note.clone());
                }
            }
            Some(AttemptChange::Start { number }) => {
                let ids = new_attempt.ok_or(LedgerError::MissingAttempt { job, number: *number })?;
                plan.attempts_added = 1;
                plan.dispatch_tries = Some(0);
                plan.attempt = AttemptWrite::Insert {
                    number: i64::from(number.0),
                    ids,
                };
            }
            Some(AttemptChange::DispatchRetry { tries, error }) => {
                plan.dispatch_tries = Some(i64::from(*tries));
                plan.last_error = Some(error.clone());
                plan.attempt = AttemptWrite::Update {
                    state: AttemptState::Dispatching,
                    dispatch_tries: Some(i64::from(*tries)),
                    last_error: Some(error.clone()),
                    stop_pending: None,
                    ended: false,
                };
            }
            Some(AttemptChange::Running) => {
                plan.attempt = AttemptWrite::Update {
                    state: AttemptState::Running,
                    dispatch_tries: None,
                    last_error: None,
                    stop_pending: None,
                    ended: false,
                };
            }
            Some(AttemptChange::End {
                state,
                error,
                stop_thread,
            }) => {
                plan.last_error = error.clone();
                plan.attempt = AttemptWrite::Update {
                    state: *state,
                    dispatch_tries: None,
                    last_error: error.clone(),
                    stop_pending: Some(*stop_thread),
                    ended: true,
                };
            }
        }
        Ok(plan)
    }
}

/// Opens (creating when missing) the SQLite database at `url` and migrates it.
///
/// SQLite has no migration lock and briefly locks a new file while one connection switches it to
/// WAL: two processes opening a new file at once (`afk run` and `afk jobs`) can see "database is
/// locked" or the loser's `CREATE TABLE` fail with "already exists". Both are passing states, so
/// the whole open is tried again for up to the busy timeout; each migration commits with its
/// record, so a retry skips what the winner applied.
async fn open_sqlite(url: &str, url_redacted: &str) -> Result<SqlitePool, LedgerError> {
    let open_error = |source: sqlx::Error| LedgerError::Open {
        url_redacted: url_redacted.to_owned(),
        source,
    };
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut options = SqliteConnectOptions::from_str(url)
        .map_err(open_error)?
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let pool_options = if in_memory {
        // One connection that never closes: the database lives exactly as long as it.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        let dir = options
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        }
        // WAL with the default synchronous=FULL: a committed transition survives a power cut,
        // which the "record before effect" rule depends on.
        options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        SqlitePoolOptions::new().max_connections(SQLITE_MAX_CONNECTIONS)
    };
    let pool_options = pool_options.acquire_timeout(ACQUIRE_TIMEOUT);
    let deadline = tokio::time::Instant::now() + SQLITE_BUSY_TIMEOUT;
    loop {
        let attempt = async {
            if !in_memory {
                probe(&options).await.map_err(open_error)?;
            }
            let pool = pool_options
                .clone()
                .connect_with(options.clone())
                .await
                .map_err(open_error)?;
            if let Err(source) = SQLITE_MIGRATIONS.run(&pool).await {
                pool.close().await;
                return Err(LedgerError::Migrate {
                    url_redacted: url_redacted.to_owned(),
                    source,
                });
            }
            Ok(pool)
        };
        match attempt.await {
            Ok(pool) => return Ok(pool),
            Err(error) if is_passing_sqlite_race(&error) && tokio::time::Instant::now() < deadline => {
                tracing::debug!("ledger at {url_redacted} busy while opening, trying again: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// True for the errors another process opening the same new SQLite file at the same moment can
/// cause; false for lasting ones (a migration edited after it ran, a file that is not a database).
fn is_passing_sqlite_race(error: &LedgerError) -> bool {
    use sqlx::migrate::MigrateError;
    let busy = |e: &sqlx::Error| {
        e.as_database_error()
            .and_then(|d| d.code())
            .and_then(|code| code.parse::<i32>().ok())
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with any extended code.
            .is_some_and(|code| matches!(code & 0xff, 5 | 6))
    };
    match error {
        LedgerError::Open { source, .. } => busy(source),
        LedgerError::Migrate { source, .. } => {
            matches!(
                source,
                MigrateError::Execute(_) | MigrateError::ExecuteMigration(..)
            )
        }
        _ => false,
    }
}

/// Connects to the PostgreSQL database at `url` and migrates it. Concurrent migrations are
/// serialised by the migrator's advisory lock.
async fn open_postgres(url: &str, url_redacted: &str) -> Result<PgPool, LedgerError> {
    let open_error = |source: sqlx::Error| LedgerError::Open {
        url_redacted: url_redacted.to_owned(),
        source,
    };
    let options = PgConnectOptions::from_str(url).map_err(open_error)?;
    probe(&options).await.map_err(open_error)?;
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(open_error)?;
    POSTGRES_MIGRATIONS
        .run(&pool)
        .await
        .map_err(|source| LedgerError::Migrate {
            url_redacted: url_redacted.to_owned(),
            source,
        })?;
    Ok(pool)
}

/// Connects once, without retrying, and hangs up: a database that refuses us (wrong password, no
/// such file or server) is reported at once, where the pool would keep retrying until its acquire
/// timeout.
async fn probe<O>(options: &O) -> Result<(), sqlx::Error>
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    match tokio::time::timeout(ACQUIRE_TIMEOUT, options.connect()).await {
        Ok(connection) => connection?.close().await,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", ACQUIRE_TIMEOUT.as_secs()),
        ))),
    }
}

/// The issue number as the ledger stores it (BIGINT).
fn issue_number(issue: &IssueKey) -> Result<i64, LedgerError> {
    i64::try_from(issue.number).map_err(|_| LedgerError::OutOfRange {
        what: format!("the issue number of {issue}"),
    })
}
