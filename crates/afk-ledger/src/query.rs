//! Reading the ledger: jobs, attempts and events as the rest of afk sees them.

use std::collections::HashMap;

use afk_core::{JobId, JobSource, JobState};
use chrono::{DateTime, Utc};

use crate::model::{millis, AttemptRow, EventRow, JobRow, WatchedRow};
use crate::probe::CHANGES_SQL;
use crate::{
    issue_number, Attempt, AttemptId, Backend, EventRecord, IssueKey, Job, Ledger, LedgerError, Pool,
    WatchedAttempt, LIVE,
};

/// The columns of [`Ledger::watched_attempts`] (a `SELECT` over attempts `a` joined to their
/// jobs `j`), one list for every read of them so that they cannot drift apart.
macro_rules! watched_columns {
    () => {
        "SELECT a.id, a.job_id, a.number, a.state, a.thread_id, a.updated_ms, \
         j.repo, j.number AS issue_number, j.state AS job_state, j.not_before_ms, \
         j.input_wait_since_ms, j.input_waited_ms, \
         (SELECT MAX(f.created_ms) FROM follow_ups f WHERE f.job_id = a.job_id \
          AND f.attempt = a.number AND f.number IS NOT NULL) AS follow_up_ms"
    };
}
const WATCHED_COLUMNS: &str = watched_columns!();

/// How many jobs [`Ledger::watched_attempts_of`] reads in one statement.
const WATCHED_OF_CHUNK: usize = 500;

/// A reading of [`Ledger::watched_changes`]: equal readings mean that nothing the live attempts'
/// read returns changed in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchedChanges(pub i64);

/// A reading of the count of every change to a job or an attempt, whatever the column (migration
/// 0021): equal readings mean that no job and no attempt changed in between, so that any read of
/// those two tables alone (the attempts to stop, the jobs in some states, the ready jobs at one
/// instant) would answer the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LedgerChanges(pub i64);

/// Both counts of [`Ledger::changes`], read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Changes {
    /// Changes to what [`Ledger::watched_attempts`] returns.
    pub watched: WatchedChanges,
    /// Changes to any job or attempt.
    pub ledger: LedgerChanges,
}

impl Ledger {
    /// The job with id `id`, if any.
    pub async fn job(&self, id: JobId) -> Result<Option<Job>, LedgerError> {
        let row: Option<JobRow> = fetch!(self, fetch_optional, "SELECT * FROM jobs WHERE id = $1", id.0);
        row.map(JobRow::into_job).transpose()
    }

    /// The job of `issue`, if any.
    pub async fn job_by_issue(&self, issue: &IssueKey) -> Result<Option<Job>, LedgerError> {
        let number = issue_number(issue)?;
        let sql = "SELECT * FROM jobs WHERE repo = $1 AND number = $2";
        let row: Option<JobRow> = fetch!(self, fetch_optional, sql, issue.repo.as_str(), number);
        row.map(JobRow::into_job).transpose()
    }

    /// Every job, ordered by id (oldest first).
    pub async fn jobs(&self) -> Result<Vec<Job>, LedgerError> {
        let rows: Vec<JobRow> = fetch!(self, fetch_all, "SELECT * FROM jobs ORDER BY id");
        rows.into_iter().map(JobRow::into_job).collect()
    }

    /// The issues of `source`'s jobs that are not final (queued, live, waiting or in review),
    /// in no particular order: keys only, so that a source can see which of its open jobs lost
    /// their issue without reading every job (and its body) the ledger ever held.
    pub async fn open_issues(&self, source: JobSource) -> Result<Vec<IssueKey>, LedgerError> {
        let open: Vec<JobState> = JobState::ALL
            .iter()
            .copied()
            .filter(|state| !state.is_final())
            .collect();
        let placeholders: Vec<String> = (2..open.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT repo, number FROM jobs WHERE source = $1 AND state IN ({})",
            placeholders.join(", ")
        );
        let rows: Vec<(String, i64)> = with_pool!(self, |pool| {
            let mut query = sqlx::query_as(&sql).bind(source.as_str());
            for state in &open {
                query = query.bind(state.as_str());
            }
            query.fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(repo, number)| crate::model::issue_key(repo, number))
            .collect()
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
    pub async fn jobs_to_report(&self, source: JobSource) -> Result<Vec<Job>, LedgerError> {
        let sql = "SELECT * FROM jobs WHERE source = $1 \
                   AND (reported IS NULL OR reported <> state || ':' || attempts) ORDER BY id";
        let rows: Vec<JobRow> = fetch!(self, fetch_all, sql, source.as_str());
        rows.into_iter().map(JobRow::into_job).collect()
    }

    /// Up to `limit` jobs that may start an attempt at `now`: `queued`, or `retry_wait` whose
    /// back-off has passed. Most urgent first (priority p0 before p3), then oldest, then lowest
    /// id, so equal jobs are taken in the order they arrived. A `dispatching` job waiting to
    /// retry its dispatch is not here: it already has its attempt (see [`Ledger::live_attempts`]
    /// and [`Job::not_before`]).
    pub async fn ready_jobs(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Job>, LedgerError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = "SELECT * FROM jobs WHERE state = 'queued' \
                   OR (state = 'retry_wait' AND (not_before_ms IS NULL OR not_before_ms <= $1)) \
                   ORDER BY priority ASC, created_ms ASC, id ASC LIMIT $2";
        let rows: Vec<JobRow> = fetch!(self, fetch_all, sql, millis(now), limit);
        rows.into_iter().map(JobRow::into_job).collect()
    }

    /// The attempts of `job`, first to last. Empty for an unknown job.
    pub async fn attempts(&self, job: JobId) -> Result<Vec<Attempt>, LedgerError> {
        let sql = "SELECT * FROM attempts WHERE job_id = $1 ORDER BY number";
        let rows: Vec<AttemptRow> = fetch!(self, fetch_all, sql, job.0);
        rows.into_iter().map(AttemptRow::into_attempt).collect()
    }

    /// The attempt with id `id`, if any.
    pub async fn attempt(&self, id: AttemptId) -> Result<Option<Attempt>, LedgerError> {
        let row: Option<AttemptRow> =
            fetch!(self, fetch_optional, "SELECT * FROM attempts WHERE id = $1", id.0);
        row.map(AttemptRow::into_attempt).transpose()
    }

    /// The live attempt (`dispatching` or `running`) of `job`, if it has one.
    pub async fn live_attempt(&self, job: JobId) -> Result<Option<Attempt>, LedgerError> {
        let sql = format!("SELECT * FROM attempts WHERE job_id = $1 AND {LIVE}");
        let row: Option<AttemptRow> = fetch!(self, fetch_optional, &sql, job.0);
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
        // One column list for both backends, so the two statements cannot drift apart.
        macro_rules! watched {
            ($tail:literal) => {
                concat!(
                    watched_columns!(),
                    " FROM attempts a JOIN jobs j ON j.id = a.job_id \
                     WHERE a.state IN ('dispatching', 'running') ",
                    $tail
                )
            };
        }
        const SQL: &str = watched!("ORDER BY a.job_id");
        // PostgreSQL merge-joins over the jobs' index (`jobs_watched`, migration 0016) from its
        // first entry, every finished job included; starting it at the oldest live job (a bound
        // every joined row meets anyway) leaves the year of history behind that unread.
        const SQL_POSTGRES: &str = watched!(
            "AND j.id >= (SELECT MIN(job_id) FROM attempts WHERE state IN ('dispatching', 'running')) \
             ORDER BY a.job_id"
        );
        let sql = match self.backend() {
            Backend::Postgres => SQL_POSTGRES,
            Backend::Sqlite => SQL,
        };
        let rows: Vec<WatchedRow> = fetch!(self, fetch_all, sql);
        rows.into_iter().map(WatchedRow::into_watched).collect()
    }

    /// The live attempts of `jobs` only, as [`Ledger::watched_attempts`] returns them (the same
    /// columns and joins, ordered by job id; at most one per job): what a cache of that read
    /// needs to take in the writes to those jobs without reading every live attempt again. A
    /// job with no live attempt (or no job) has no entry. One indexed read per 500 jobs.
    pub async fn watched_attempts_of(&self, jobs: &[JobId]) -> Result<Vec<WatchedAttempt>, LedgerError> {
        let mut ids: Vec<i64> = jobs.iter().map(|job| job.0).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut watched = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(WATCHED_OF_CHUNK) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            // One search per job of the partial index of live attempts by job
            // (`attempts_one_live_per_job`, the plan of both backends: EXPLAIN at 10,000 live
            // among 20,000), then the job by its key.
            let sql = format!(
                "{WATCHED_COLUMNS} FROM attempts a JOIN jobs j ON j.id = a.job_id \
                 WHERE a.job_id IN ({}) AND a.state IN ('dispatching', 'running') ORDER BY a.job_id",
                placeholders.join(", ")
            );
            let rows: Vec<WatchedRow> = with_pool!(self, |pool| {
                let mut query = sqlx::query_as(&sql);
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(pool).await?
            });
            for row in rows {
                watched.push(row.into_watched()?);
            }
        }
        Ok(watched)
    }

    /// How many changes to what [`Ledger::watched_attempts`] reads the ledger has seen: a count
    /// that triggers (migration 0018) move in the very transaction of every insert, delete or
    /// change of a job's, live attempt's or follow-up's column that read returns, whoever writes
    /// (this handle, another process, a person's SQL). Never goes back. On PostgreSQL it moves
    /// once per statement, and for an update only when such a value changed (migration 0023);
    /// on SQLite once per row, also when such a column is set to the value it had.
    ///
    /// A cache of the live attempts read *after* this count read `n` holds every change counted
    /// up to `n`; while the count still reads `n`, nothing it holds changed. One row read by its
    /// key: the same cost whatever the size of the ledger.
    pub async fn watched_changes(&self) -> Result<WatchedChanges, LedgerError> {
        let counter: i64 = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT counter FROM watched_changes WHERE id = 1"
        )
        .fetch_one(pool)
        .await?);
        Ok(WatchedChanges(counter))
    }

    /// Both change counts in one read of one row by its key (the same cost whatever the size of
    /// the ledger): [`Ledger::watched_changes`]'s, and the count of every insert, delete or
    /// change of any column of a job or an attempt (migration 0021), moved by triggers in the
    /// very transaction of the change whoever writes (on PostgreSQL once per statement that
    /// wrote a row, migration 0023; on SQLite once per row). Neither ever goes back.
    ///
    /// A read of jobs and attempts alone made *after* this read returned `n` holds every change
    /// counted up to `n`; while [`Changes::ledger`] still reads `n`, that read would answer the
    /// same (at the same instant, for a read that depends on time).
    ///
    /// On a SQLite file the row is read on the caller's thread through a read-only connection of
    /// its own (`probe.rs`: no hand-off to sqlx's worker thread), and through the pool when that
    /// read fails or the file is busy; PostgreSQL reads it through the pool.
    pub async fn changes(&self) -> Result<Changes, LedgerError> {
        let in_place = self.change_probe.as_ref().and_then(|probe| probe.read());
        let (watched, ledger): (i64, i64) = match in_place {
            Some(counts) => counts,
            None => with_pool!(self, |pool| sqlx::query_as(CHANGES_SQL).fetch_one(pool).await?),
        };
        Ok(Changes {
            watched: WatchedChanges(watched),
            ledger: LedgerChanges(ledger),
        })
    }

    /// The earliest instant after `now` at which a job becomes ready ([`Ledger::ready_jobs`])
    /// with no write to the ledger, in the ledger's own milliseconds since the epoch: the end of
    /// the soonest back-off of a `retry_wait` job still waiting at `now`; `None` when none waits.
    /// Until then (while `now`'s milliseconds are below it), with no change to the jobs
    /// ([`Changes::ledger`]), `ready_jobs` at any instant from `now` on answers as at `now`.
    ///
    /// Raw milliseconds, not an instant: a back-off end no date can hold (a job parked by hand
    /// with `i64::MAX`) is still a value `ready_jobs` compares, never an error.
    pub async fn next_ready_at(&self, now: DateTime<Utc>) -> Result<Option<i64>, LedgerError> {
        // MIN before the cast keeps SQLite's own order (numbers before text, which `ready_jobs`
        // never finds ready); a text left by hand then casts to a number no later than where it
        // sorts, so it only costs a read, and the column holds nothing else on PostgreSQL.
        let sql = "SELECT CAST(MIN(not_before_ms) AS BIGINT) FROM jobs \
                   WHERE state = 'retry_wait' AND not_before_ms > $1";
        let at: Option<i64> = with_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(millis(now))
            .fetch_one(pool)
            .await?);
        Ok(at)
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

    /// The event log of `job`, oldest first. Empty for an unknown job.
    pub async fn events(&self, job: JobId) -> Result<Vec<EventRecord>, LedgerError> {
        let sql = "SELECT * FROM events WHERE job_id = $1 ORDER BY id";
        let rows: Vec<EventRow> = fetch!(self, fetch_all, sql, job.0);
        rows.into_iter().map(EventRow::into_event).collect()
    }

    /// How many jobs are in each state: every [`JobState`], in lifecycle order
    /// ([`JobState::ALL`]), zeros included.
    ///
    /// Read from the per-state counts the ledger's triggers keep beside every write (migration
    /// 0022), not by counting the jobs: a row per state, whatever the history's length.
    pub async fn counts_by_state(&self) -> Result<Vec<(JobState, u64)>, LedgerError> {
        // A state no job is in any more keeps its row at 0: only those in use must be known.
        let rows: Vec<(String, i64)> = fetch!(
            self,
            fetch_all,
            "SELECT state, jobs FROM job_counts WHERE jobs <> 0"
        );
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
}
