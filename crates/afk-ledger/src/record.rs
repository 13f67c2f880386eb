//! Writing the ledger: jobs as sources report them, transitions as the machine decides them, and
//! the marks the control plane keeps (a thread stopped, a job reported).

use std::collections::{HashMap, HashSet};

use afk_core::{AttemptChange, AttemptState, CancelReason, JobId, JobState, Transition};
use chrono::{DateTime, Utc};

use crate::model::{millis, JobRow};
use crate::{
    issue_number, AttemptId, Backend, Job, Ledger, LedgerError, NewAttempt, NewJob, Pool, RecordRef, LIVE,
};

/// How many times one write moved the count of changes to the live attempts
/// ([`crate::Changes::watched`]), as the ledger measured it inside the write's own transaction:
/// what a cache of [`Ledger::watched_attempts`] patched with that write's jobs must expect the
/// count to read next, when no one else wrote. `None` when the ledger cannot tell exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedMoves(pub(crate) Option<u64>);

impl WatchedMoves {
    /// The exact number of moves, when known.
    pub fn known(self) -> Option<u64> {
        self.0
    }
}

/// Measures [`WatchedMoves`] over one transaction. The count's row is read twice inside it: right
/// after the transaction's first successful compare-and-set on a job, and at its end. From that
/// first write on, the transaction holds what every other writer of the count waits for (SQLite:
/// the database's write lock; PostgreSQL: the count's row, which the trigger of that very
/// statement updated, migrations 0021 and 0023), so the difference is this transaction's own
/// moves and no one else's. The first write's own move is known from what it wrote: on SQLite its
/// row trigger fires once for the one job row (`UPDATE OF state`, whatever the value); on
/// PostgreSQL the statement's trigger moves it when a watched value changed, which is certain
/// when the state changed and unknown otherwise.
pub(crate) struct Counting {
    backend: Backend,
    on: bool,
    /// The count just after the first write, and that write's own moves (if known).
    first: Option<(i64, Option<u64>)>,
}

impl Counting {
    /// Measures when `on` (two more reads in the transaction); otherwise answers "unknown".
    pub(crate) fn new(backend: Backend, on: bool) -> Self {
        Self {
            backend,
            on,
            first: None,
        }
    }

    pub(crate) fn wants_first(&self) -> bool {
        self.on && self.first.is_none()
    }

    /// Notes the first write: the count read just after it, and whether its state changed.
    pub(crate) fn first_write(&mut self, counter: i64, state_changed: bool) {
        debug_assert!(self.wants_first(), "one first write per transaction");
        let moves = match self.backend {
            Backend::Sqlite => Some(1),
            Backend::Postgres => state_changed.then_some(1),
        };
        self.first = Some((counter, moves));
    }

    pub(crate) fn wants_end(&self) -> bool {
        self.on && self.first.is_some()
    }

    /// The moves of the transaction, given the count read at its end (when `wants_end`). Never
    /// more than the transaction made: one too many could hide another writer's move.
    pub(crate) fn moves(&self, end: Option<i64>) -> WatchedMoves {
        if !self.on {
            return WatchedMoves(None);
        }
        match (self.first, end) {
            // No compare-and-set succeeded: no job, attempt or follow-up was written.
            (None, _) => WatchedMoves(Some(0)),
            (Some((after_first, first)), Some(end)) => {
                WatchedMoves(first.and_then(|first| Some(first + u64::try_from(end - after_first).ok()?)))
            }
            (Some(_), None) => WatchedMoves(None),
        }
    }
}

/// The count of changes to the live attempts, read inside the transaction `$tx`.
macro_rules! watched_counter {
    ($tx:ident) => {{
        let counter: i64 = sqlx::query_scalar("SELECT counter FROM watched_changes WHERE id = 1")
            .fetch_one(&mut *$tx)
            .await?;
        counter
    }};
}

/// Notes a successful compare-and-set on a job for `$counting` ([`Counting`]), in `$tx`.
macro_rules! count_first_write {
    ($tx:ident, $counting:expr, $state_changed:expr) => {{
        if $counting.wants_first() {
            let counter = watched_counter!($tx);
            $counting.first_write(counter, $state_changed);
        }
    }};
}

/// The [`WatchedMoves`] of `$counting`'s transaction `$tx`, read as its last statement.
macro_rules! count_end {
    ($tx:ident, $counting:expr) => {{
        let end = match $counting.wants_end() {
            true => Some(watched_counter!($tx)),
            false => None,
        };
        $counting.moves(end)
    }};
}

/// The writes of [`Ledger::record`] after its fence, inside the caller's transaction `$tx`:
/// evaluates to the job's updated row, or ends the enclosing body with the error (so the caller's
/// transaction is rolled back). Shared with the writes that must move a job in the same
/// transaction as something else (a comment command and its answer, `commands.rs`).
/// Why a compare-and-set on job `job` that updated no row was refused, read in the same
/// transaction `tx`: the job is gone, or it is in another state than `expected`.
macro_rules! refused_move {
    ($tx:ident, $job:expr, $expected:expr) => {{
        let (job, expected): (JobId, afk_core::JobState) = ($job, $expected);
        let actual: Option<String> = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(job.0)
            .fetch_optional(&mut *$tx)
            .await?;
        match actual.map(|a| a.parse::<afk_core::JobState>()) {
            None => LedgerError::NotFound(RecordRef::Job(job)),
            Some(Ok(actual)) => LedgerError::Conflict {
                job,
                expected,
                actual,
            },
            Some(Err(e)) => LedgerError::Corrupt {
                what: format!("jobs.state of job {job}: {e}"),
            },
        }
    }};
}

macro_rules! record_in {
    ($tx:ident, $job:expr, $transition:expr, $plan:expr, $now:expr, $counting:expr) => {{
        let (job, transition, plan, now): (JobId, &Transition, &Plan<'_>, i64) = ($job, $transition, &$plan, $now);
        let counting: &mut Counting = $counting;
        let updated: Option<JobRow> = sqlx::query_as(
            "UPDATE jobs SET state = $1, attempts = attempts + $2, \
             dispatch_tries = COALESCE($3, dispatch_tries), not_before_ms = $4, \
             last_error = COALESCE($5, last_error), updated_ms = $6, \
             attempts_base = CASE WHEN $9 THEN attempts ELSE attempts_base END, \
             cancel_reason = $10 \
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
        .bind(transition.cancel_reason.map(CancelReason::as_str))
        .fetch_optional(&mut *$tx)
        .await?;
        let Some(updated) = updated else {
            return Err(refused_move!($tx, job, transition.from));
        };
        count_first_write!($tx, counting, transition.from != transition.to);
        // The wait for a person, in a statement of its own so the compare-and-set above stays
        // the transaction's first write; its row is the job as it now is.
        let updated: JobRow = match (&transition.input_wait, plan.attempts_added > 0) {
            (None, false) => updated,
            (wait, started) => {
                let (began, ended, question) = match wait {
                    Some(afk_core::InputWait::Began { question }) => (true, false, Some(question.as_str())),
                    Some(afk_core::InputWait::Ended) => (false, true, None),
                    None => (false, false, None),
                };
                sqlx::query_as(
                    "UPDATE jobs SET \
                     input_waited_ms = CASE WHEN $1 THEN 0 \
                         WHEN $2 AND input_wait_since_ms IS NOT NULL AND $3 > input_wait_since_ms \
                         THEN input_waited_ms + ($3 - input_wait_since_ms) \
                         ELSE input_waited_ms END, \
                     input_wait_since_ms = CASE WHEN $4 THEN $3 WHEN $2 THEN NULL \
                         ELSE input_wait_since_ms END, \
                     input_question = CASE WHEN $4 THEN $5 WHEN $2 THEN NULL ELSE input_question END \
                     WHERE id = $6 RETURNING *",
                )
                .bind(started)
                .bind(ended)
                .bind(now)
                .bind(began)
                .bind(question)
                .bind(job.0)
                .fetch_one(&mut *$tx)
                .await?
            }
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
                .bind(ids.thread_id.as_str())
                .bind(ids.project_id.as_str())
                .bind(ids.create_command_id.as_str())
                .bind(ids.turn_command_id.as_str())
                .bind(ids.message_id.as_str())
                .bind(&ids.title)
                .bind(&ids.branch)
                .bind(&ids.prompt)
                .bind(now)
                .bind(now)
                .bind(ids.model.as_deref())
                .execute(&mut *$tx)
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
                // A running attempt that ends ends its agent's turn: the turn's agent time (from
                // when it started running, its waits for people left out) is kept for the budgets.
                if *ended {
                    let live: Option<(String, i64, i64)> = sqlx::query_as(&format!(
                        "SELECT state, CAST(number AS BIGINT), updated_ms FROM attempts \
                         WHERE job_id = $1 AND {LIVE}"
                    ))
                    .bind(job.0)
                    .fetch_optional(&mut *$tx)
                    .await?;
                    if let Some((_, number, started)) = live.filter(|(state, ..)| state == "running") {
                        let agent_ms = (now - started - updated.input_waited_ms).max(0);
                        sqlx::query(
                            "INSERT INTO agent_turns (job_id, repo, attempt, agent_ms, ended_ms) \
                             VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(job.0)
                        .bind(&updated.repo)
                        .bind(number)
                        .bind(agent_ms)
                        .bind(now)
                        .execute(&mut *$tx)
                        .await?;
                    }
                }
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
                .fetch_optional(&mut *$tx)
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
        .execute(&mut *$tx)
        .await?;
        updated
    }};
}

impl Ledger {
    /// Stores the issue `job` describes. A new issue becomes a `queued` job (returned with
    /// `true`); a known one gets its title, body, labels and priority updated (returned with
    /// `false`) and keeps its state, attempts and source: upserting is idempotent and never moves
    /// a job. `updated_at` changes only when something did.
    pub async fn upsert_job(&self, job: &NewJob, now: DateTime<Utc>) -> Result<(Job, bool), LedgerError> {
        let PreparedJob {
            number,
            labels,
            priority,
            ..
        } = PreparedJob::new(job)?;
        let now = millis(now);
        let row: Option<JobRow> = with_pool!(self, |pool| in_transaction!(pool, |tx| {
            fence!(self, tx);
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
            .bind(job.source.as_str())
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

    /// Queues each of `jobs` whose issue the ledger does not know yet, as [`Ledger::upsert_job`]
    /// queues a new one, in ONE transaction (one commit where each would cost its own: a burst of
    /// new issues is queued together): the answer for each, in order: `Some(job)` queued now,
    /// `None` the issue has a job already (left exactly as it is: the caller decides what a known
    /// issue means for it; and the same issue twice in `jobs` is queued once, as its first
    /// occurrence, the later ones answered `None`). An issue is never queued twice: the schema
    /// keeps one job per issue. A job whose values the ledger cannot hold
    /// ([`LedgerError::OutOfRange`]) is refused alone, before the transaction, and answered in its
    /// place. Any other error (the database, a lost leadership) rolls back every one and is
    /// returned: nothing of the batch was queued. New jobs get their ids in the order of `jobs`.
    ///
    /// The issues are written by multi-row statements, not one statement per issue: on
    /// PostgreSQL every statement that writes jobs moves the change counts and the running totals
    /// once (migration 0023), and in one transaction each such move costs more than the last, so
    /// a burst of thousands of single-row statements was quadratic. PostgreSQL takes the whole
    /// batch in one statement (its columns bound as arrays, see [`PG_QUEUE_SQL`]), SQLite in
    /// statements of up to 1,000 issues (the parameters one statement may bind).
    pub async fn queue_jobs(
        &self,
        jobs: &[NewJob],
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Option<Job>, LedgerError>>, LedgerError> {
        // Worked out before the database is touched: a bad value is refused alone, and an issue
        // that comes again in the batch is answered as known (`None`) without being written twice.
        let mut seen = HashSet::new();
        let planned: Vec<Result<Queue<'_>, LedgerError>> = jobs
            .iter()
            .map(|job| {
                let job = PreparedJob::new(job)?;
                Ok(match seen.insert((job.job.issue.repo.as_str(), job.number)) {
                    true => Queue::Insert(job),
                    false => Queue::Again,
                })
            })
            .collect();
        let inserts: Vec<&PreparedJob<'_>> = (planned.iter())
            .filter_map(|p| match p {
                Ok(Queue::Insert(job)) => Some(job),
                _ => None,
            })
            .collect();
        let mut rows: HashMap<(String, i64), JobRow> = HashMap::new();
        if !inserts.is_empty() {
            let now = millis(now);
            let written: Vec<JobRow> = match &self.pool {
                Pool::Sqlite(pool) => in_transaction!(pool, |tx| {
                    fence!(self, tx);
                    let mut written = Vec::with_capacity(inserts.len());
                    for chunk in inserts.chunks(QUEUE_CHUNK) {
                        let sql = sqlite_queue_sql(chunk.len());
                        // A full chunk's statement is the same every time: prepared once and
                        // kept; the last, shorter one would only crowd the statement cache.
                        let mut query = sqlx::query_as(&sql).persistent(chunk.len() == QUEUE_CHUNK);
                        for job in chunk {
                            query = query
                                .bind(job.job.issue.repo.as_str())
                                .bind(job.number)
                                .bind(&job.job.title)
                                .bind(&job.job.body)
                                .bind(&job.labels)
                                .bind(job.priority)
                                .bind(job.job.source.as_str())
                                .bind(now)
                                .bind(now);
                        }
                        let chunk_rows: Vec<JobRow> = query.fetch_all(&mut *tx).await?;
                        written.extend(chunk_rows);
                    }
                    Ok(written)
                })?,
                Pool::Postgres(pool) => {
                    let repos: Vec<&str> = inserts.iter().map(|job| job.job.issue.repo.as_str()).collect();
                    let titles: Vec<&str> = inserts.iter().map(|job| job.job.title.as_str()).collect();
                    let bodies: Vec<&str> = inserts.iter().map(|job| job.job.body.as_str()).collect();
                    let labels: Vec<&str> = inserts.iter().map(|job| job.labels.as_str()).collect();
                    let sources: Vec<&str> = inserts.iter().map(|job| job.job.source.as_str()).collect();
                    let numbers: Vec<i64> = inserts.iter().map(|job| job.number).collect();
                    let priorities: Vec<i64> = inserts.iter().map(|job| job.priority).collect();
                    in_transaction!(pool, |tx| {
                        fence!(self, tx);
                        let written: Vec<JobRow> = sqlx::query_as(PG_QUEUE_SQL)
                            .bind(&repos)
                            .bind(&numbers)
                            .bind(&titles)
                            .bind(&bodies)
                            .bind(&labels)
                            .bind(&priorities)
                            .bind(&sources)
                            .bind(now)
                            .fetch_all(&mut *tx)
                            .await?;
                        Ok(written)
                    })?
                }
            };
            // RETURNING gives the inserted rows in no promised order: matched by issue, which the
            // batch holds once.
            rows.extend(
                written
                    .into_iter()
                    .map(|row| ((row.repo.clone(), row.number), row)),
            );
        }
        Ok(planned
            .into_iter()
            .map(|planned| match planned? {
                Queue::Again => Ok(None),
                Queue::Insert(job) => (rows.remove(&(job.job.issue.repo.as_str().to_owned(), job.number)))
                    .map(JobRow::into_job)
                    .transpose(),
            })
            .collect())
    }

    /// Records `transition` for `job` atomically, in one database transaction, and returns the
    /// job as it now is:
    ///
    /// - fenced: when this handle took the ledger's leadership ([`Ledger::try_lead`]) and another
    ///   process has taken it since, nothing is written ([`LedgerError::Deposed`]);
    /// - compare-and-set: the job must still be in `transition.from`, else nothing is written and
    ///   the result is [`LedgerError::Conflict`] (or [`LedgerError::NotFound`]);
    /// - the job takes `transition.to`, `transition.not_before` and `transition.cancel_reason`
    ///   (none clears them); a started
    ///   attempt counts one more attempt and resets the dispatch tries; a dispatch retry stores
    ///   the machine's try count; an error the transition carries becomes the job's
    ///   `last_error` (for a refusal, which has no attempt, its note does);
    /// - the live attempt changes per `transition.attempt`: `Start` inserts it in `dispatching`
    ///   with the ids of `new_attempt` (required, else [`LedgerError::MissingAttempt`]; ignored
    ///   for every other change), `DispatchRetry` stores its tries and error, `Running` moves it
    ///   to `running`, `End` stores its final state, error and end time and whether its thread
    ///   must still be stopped. A change to a live attempt the job does not have is
    ///   [`LedgerError::NoLiveAttempt`];
    /// - the job's wait for a person changes per `transition.input_wait`: `Began` stores now and
    ///   the question, `Ended` adds the wait's length to the live attempt's waiting time and
    ///   clears both; a started attempt starts with no waiting time;
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
        let (job, _) = self
            .record_measured(job, transition, new_attempt, now, false)
            .await?;
        Ok(job)
    }

    /// [`Ledger::record`], and how many times it moved the count of changes to the live attempts
    /// ([`WatchedMoves`], measured inside its transaction: two more reads of one row).
    pub async fn record_counted(
        &self,
        job: JobId,
        transition: &Transition,
        new_attempt: Option<&NewAttempt>,
        now: DateTime<Utc>,
    ) -> Result<(Job, WatchedMoves), LedgerError> {
        self.record_measured(job, transition, new_attempt, now, true)
            .await
    }

    async fn record_measured(
        &self,
        job: JobId,
        transition: &Transition,
        new_attempt: Option<&NewAttempt>,
        now: DateTime<Utc>,
        measure: bool,
    ) -> Result<(Job, WatchedMoves), LedgerError> {
        let plan = Plan::new(job, transition, new_attempt)?;
        let now = millis(now);
        let mut counting = Counting::new(self.backend(), measure);
        // The fence (for a leader) and then the compare-and-set are the transaction's first
        // statements and writes, so SQLite takes its write lock (waiting out the busy timeout)
        // before reading anything: no lock upgrade can deadlock.
        let (row, moves): (JobRow, WatchedMoves) = with_pool!(self, |pool| in_transaction!(pool, |tx| {
            fence!(self, tx);
            let row = record_in!(tx, job, transition, plan, now, &mut counting);
            Ok((row, count_end!(tx, counting)))
        }))?;
        Ok((row.into_job()?, moves))
    }

    /// Records each of `moves` as [`Ledger::record`] does, each at its own time, in ONE
    /// transaction (one commit, where each would cost its own): the answer for each move, in
    /// order. A move the ledger refuses alone ([`LedgerError::Conflict`]: the job moved meanwhile;
    /// [`LedgerError::NotFound`]) writes nothing (it is refused by its first statement, the
    /// compare-and-set on the job's state) and is answered in its place while the others are
    /// kept. A malformed move (a start
    /// without its attempt's ids) fails the whole batch before it is begun. Any other error (the database, a reused thread id, a lost leadership)
    /// rolls back every move and is returned: nothing of the batch was recorded.
    pub async fn record_many(
        &self,
        moves: &[Move<'_>],
    ) -> Result<Vec<Result<Job, LedgerError>>, LedgerError> {
        let (answers, _) = self.record_many_measured(moves, false).await?;
        Ok(answers)
    }

    /// [`Ledger::record_many`], and how many times the batch moved the count of changes to the
    /// live attempts ([`WatchedMoves`], measured inside its transaction: two more reads of one
    /// row).
    pub async fn record_many_counted(
        &self,
        moves: &[Move<'_>],
    ) -> Result<(Vec<Result<Job, LedgerError>>, WatchedMoves), LedgerError> {
        self.record_many_measured(moves, true).await
    }

    async fn record_many_measured(
        &self,
        moves: &[Move<'_>],
        measure: bool,
    ) -> Result<(Vec<Result<Job, LedgerError>>, WatchedMoves), LedgerError> {
        let mut counting = Counting::new(self.backend(), measure);
        if moves.is_empty() {
            return Ok((Vec::new(), counting.moves(None)));
        }
        // Worked out before the database is touched, as `record` does: a malformed move fails
        // the batch without a transaction.
        let plans = (moves.iter())
            .map(|m| Plan::new(m.job, m.transition, m.new_attempt))
            .collect::<Result<Vec<_>, _>>()?;
        let (rows, watched_moves): (Vec<Result<JobRow, LedgerError>>, WatchedMoves) =
            with_pool!(self, |pool| in_transaction!(pool, |tx| {
                fence!(self, tx);
                let mut rows = Vec::with_capacity(moves.len());
                for (m, plan) in moves.iter().zip(&plans) {
                    // No savepoint per move (two more round trips each on PostgreSQL): a refusal is
                    // found by the move's first statement, the compare-and-set on the job's state,
                    // which then wrote nothing (and a read that fails fails the batch anyway).
                    let counting = &mut counting;
                    let written: Result<JobRow, LedgerError> =
                        async { Ok(record_in!(tx, m.job, m.transition, *plan, millis(m.at), counting)) }
                            .await;
                    match written {
                        Ok(row) => rows.push(Ok(row)),
                        Err(refused @ (LedgerError::Conflict { .. } | LedgerError::NotFound(_))) => {
                            rows.push(Err(refused))
                        }
                        Err(other) => return Err(other),
                    }
                }
                Ok((rows, count_end!(tx, counting)))
            }))?;
        let answers = rows
            .into_iter()
            .map(|row| row.and_then(JobRow::into_job))
            .collect();
        Ok((answers, watched_moves))
    }

    /// Records that the thread of `attempt` was interrupted and its session stopped: it leaves
    /// [`Ledger::attempts_to_stop`]. Idempotent; [`LedgerError::NotFound`] for an unknown attempt.
    pub async fn mark_thread_stopped(&self, attempt: AttemptId) -> Result<(), LedgerError> {
        let sql = "UPDATE attempts SET stop_pending = FALSE WHERE id = $1 RETURNING id";
        let found: Option<(i64,)> = with_pool!(self, |pool| in_transaction!(pool, |tx| {
            fence!(self, tx);
            Ok(sqlx::query_as(sql)
                .bind(attempt.0)
                .fetch_optional(&mut *tx)
                .await?)
        }))?;
        found
            .map(drop)
            .ok_or(LedgerError::NotFound(RecordRef::Attempt(attempt)))
    }

    /// Records what was last reported on `job`'s issue: `STATE:ATTEMPTS`, which
    /// [`Ledger::jobs_to_report`] compares with the job.
    /// Does not count as a change of the job (`updated_at` stays). [`LedgerError::NotFound`] for
    /// an unknown job.
    pub async fn mark_reported(&self, job: JobId, marker: &str) -> Result<(), LedgerError> {
        let sql = "UPDATE jobs SET reported = $1 WHERE id = $2 RETURNING id";
        let found: Option<(i64,)> = with_pool!(self, |pool| in_transaction!(pool, |tx| {
            fence!(self, tx);
            Ok(sqlx::query_as(sql)
                .bind(marker)
                .bind(job.0)
                .fetch_optional(&mut *tx)
                .await?)
        }))?;
        found.map(drop).ok_or(LedgerError::NotFound(RecordRef::Job(job)))
    }
}

/// A [`NewJob`] checked and encoded for the `jobs` table.
struct PreparedJob<'a> {
    job: &'a NewJob,
    number: i64,
    labels: String,
    priority: i64,
}

impl<'a> PreparedJob<'a> {
    /// `job`'s columns, or why the ledger cannot hold it.
    fn new(job: &'a NewJob) -> Result<PreparedJob<'a>, LedgerError> {
        let number = issue_number(&job.issue)?;
        // Refused here for both backends alike: PostgreSQL's text cannot hold a NUL.
        let nul = [
            ("title", job.title.contains('\0')),
            ("body", job.body.contains('\0')),
            ("labels", job.labels.iter().any(|l| l.contains('\0'))),
        ];
        if let Some((part, _)) = nul.iter().find(|(_, has)| *has) {
            return Err(LedgerError::OutOfRange {
                what: format!("the {part} of {} (it holds a NUL byte)", job.issue),
            });
        }
        let labels = serde_json::to_string(&job.labels).map_err(|e| LedgerError::OutOfRange {
            what: format!("the labels of {}: {e}", job.issue),
        })?;
        Ok(PreparedJob {
            job,
            number,
            labels,
            priority: i64::from(job.priority.level()),
        })
    }
}

/// How many new issues [`Ledger::queue_jobs`] writes in one SQLite statement: 9 bound
/// parameters a row, far under the most a statement may bind (32,766), and few statements for a
/// burst (8,000 issues: 8). PostgreSQL writes a whole batch in one statement ([`PG_QUEUE_SQL`]).
pub(crate) const QUEUE_CHUNK: usize = 1_000;

/// What [`Ledger::queue_jobs`] does with one issue of its batch.
enum Queue<'a> {
    /// Inserted unless the ledger knows the issue.
    Insert(PreparedJob<'a>),
    /// The issue came earlier in the batch: answered as known.
    Again,
}

/// The SQLite statement of [`Ledger::queue_jobs`] for `rows` issues: 9 parameters per issue
/// (repo, number, title, body, labels, priority, source, and the time twice), in the batch's
/// order. SQLite inserts the rows of a `VALUES` list in its order, each taking the next rowid as
/// it is inserted: the ids follow the batch. The parameters are anonymous (`?`): SQLite looks a
/// numbered parameter's name up by a walk of every name, once per parameter bound, which made a
/// 1,000-row statement cost more than 1,000 single-row ones (measured: `sqlite3VListNumToName`
/// 43 % of the burst's samples).
fn sqlite_queue_sql(rows: usize) -> String {
    const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, 0)";
    let mut sql = String::with_capacity(200 + rows * (ROW.len() + 2));
    sql.push_str(
        "INSERT INTO jobs (repo, number, title, body, labels, priority, source, created_ms, \
         updated_ms, state, attempts, dispatch_tries) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(ROW);
    }
    sql.push_str(" ON CONFLICT (repo, number) DO NOTHING RETURNING *");
    sql
}

/// The PostgreSQL statement of [`Ledger::queue_jobs`]: a whole batch in one statement, whatever
/// its size, its columns bound as 7 arrays in the batch's order (`$1` repos, `$2` numbers, `$3`
/// titles, `$4` bodies, `$5` labels, `$6` priorities, `$7` sources) and `$8` the time.
///
/// One statement, not one per 1,000 issues: each statement's triggers take the change-count row
/// (0023) and hold it until the commit, so a second statement of the same transaction that then
/// waits on an issue another writer is inserting (an `afk dispatch` of that very issue, whose
/// own trigger waits for the count row) would deadlock with it.
///
/// The ids follow the batch, though PostgreSQL documents the order of neither a `VALUES` list
/// nor an `INSERT ... SELECT ... ORDER BY`. What is relied on: the rows are sorted by their
/// place in the batch (`WITH ORDINALITY ... ORDER BY place`: a Sort below the insert, as a
/// subquery with ORDER BY is not flattened), an INSERT's plan is never parallel, and the
/// identity default is evaluated per row as the insert takes it from the sort. The burst test
/// (`a_burst_of_thousands_...`) checks the order on every run, though it would also pass on a
/// `VALUES` list, which keeps its order in practice.
const PG_QUEUE_SQL: &str = "INSERT INTO jobs (repo, number, title, body, labels, priority, source, \
     created_ms, updated_ms, state, attempts, dispatch_tries) \
     SELECT repo, number, title, body, labels, priority, source, $8, $8, 'queued', 0, 0 \
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
     $7::text[]) WITH ORDINALITY AS batch (repo, number, title, body, labels, priority, source, place) \
     ORDER BY place \
     ON CONFLICT (repo, number) DO NOTHING RETURNING *";

/// One move of [`Ledger::record_many`]: `transition` of `job`, with the ids of the attempt it
/// starts (`new_attempt`, as [`Ledger::record`] takes them).
#[derive(Debug, Clone, Copy)]
pub struct Move<'a> {
    /// The job that moves.
    pub job: JobId,
    /// The machine's transition, from the job's state as the caller read it.
    pub transition: &'a Transition,
    /// The ids of the attempt a `Start` transition inserts (required for it, ignored otherwise).
    pub new_attempt: Option<&'a NewAttempt>,
    /// When it happened (the event's and the rows' time).
    pub at: DateTime<Utc>,
}

/// What [`Ledger::record`] writes, worked out before the database is touched so that a malformed
/// request fails without a transaction.
pub(crate) struct Plan<'a> {
    pub(crate) attempts_added: i64,
    pub(crate) dispatch_tries: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) attempt: AttemptWrite<'a>,
}

pub(crate) enum AttemptWrite<'a> {
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
    pub(crate) fn new(
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
                // A refusal fails the job without an attempt, and a job gives up before its next
                // attempt (its budget spent): the note is the only reason there is. (A job that
                // gives up as its last attempt settles keeps that attempt's error.)
                if transition.to == JobState::Failed
                    || (transition.to == JobState::GivenUp && transition.from == JobState::RetryWait)
                {
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
            // A follow-up stores its turn's ids with it: `Ledger::record_follow_up`.
            Some(AttemptChange::FollowUp { .. }) => {
                return Err(LedgerError::Corrupt {
                    what: format!("a follow-up of job {job} recorded without its turn"),
                })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_moves_counted_are_the_transactions_own_or_unknown() {
        let off = Counting::new(Backend::Sqlite, false);
        assert!(!off.wants_first() && !off.wants_end());
        assert_eq!(off.moves(None), WatchedMoves(None), "not measured: unknown");
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let none = Counting::new(backend, true);
            assert!(!none.wants_end(), "nothing written: nothing to read");
            assert_eq!(
                none.moves(None),
                WatchedMoves(Some(0)),
                "no compare-and-set went through"
            );
            let mut moved = Counting::new(backend, true);
            assert!(moved.wants_first());
            moved.first_write(40, true);
            assert!(!moved.wants_first() && moved.wants_end());
            assert_eq!(
                moved.moves(Some(40)),
                WatchedMoves(Some(1)),
                "the first write alone"
            );
            assert_eq!(
                moved.moves(Some(43)),
                WatchedMoves(Some(4)),
                "and three more after it"
            );
            assert_eq!(moved.moves(None), WatchedMoves(None), "the end unread: unknown");
            assert_eq!(
                moved.moves(Some(39)),
                WatchedMoves(None),
                "a count gone back: unknown"
            );
        }
        let mut sqlite = Counting::new(Backend::Sqlite, true);
        sqlite.first_write(7, false);
        assert_eq!(
            sqlite.moves(Some(7)),
            WatchedMoves(Some(1)),
            "a row trigger fires whatever the value"
        );
        let mut postgres = Counting::new(Backend::Postgres, true);
        postgres.first_write(7, false);
        assert_eq!(
            postgres.moves(Some(9)),
            WatchedMoves(None),
            "the same state: moved or not, unknown"
        );
    }
}
