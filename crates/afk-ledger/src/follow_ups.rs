//! Follow-up turns: a new turn on the thread of a job's last attempt, answering its pull request
//! (a failed check, a review requesting changes) or a person's instruction.
//!
//! A follow-up is stored with the transition that reopens the attempt (table `follow_ups`), its
//! command and message ids chosen before anything is sent: a crash after the record sends it
//! after the restart ([`Ledger::unsent_follow_ups`]) with the same ids, which T3 deduplicates;
//! [`Ledger::mark_follow_up_sent`] ends that. Each cause is stored once per job
//! (`UNIQUE (job_id, cause_key)`), also when the limit of follow-ups was reached and no turn was
//! started, so one failure is never followed up twice.

use afk_core::{AttemptChange, AttemptNo, JobId, Transition};
use chrono::{DateTime, Utc};
use t3_client::ids::{CommandId, MessageId, ThreadId};

use crate::model::{count, id_of, instant, millis, JobRow};
use crate::record::{Counting, WatchedMoves};
use crate::{Job, Ledger, LedgerError, Pool, RecordRef};

/// A follow-up to store with its transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFollowUp {
    /// What it answers, unique per job: the head commit's SHA and the check or review id
    /// (`1a2b…:check_run:42`), or a person's comment id.
    pub cause_key: String,
    /// What it answers, one line for people.
    pub cause: String,
    /// The turn's text.
    pub prompt: String,
    /// The `thread.turn.start` command id, chosen before the record.
    pub turn_command_id: CommandId,
    /// The user message id, chosen before the record.
    pub message_id: MessageId,
}

/// A recorded follow-up turn whose command may not have reached T3 yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUpToSend {
    /// Its ledger id (for [`Ledger::mark_follow_up_sent`]).
    pub id: i64,
    /// Its job.
    pub job_id: JobId,
    /// The attempt whose thread it goes to.
    pub attempt: AttemptNo,
    /// Its number within the job.
    pub number: u32,
    /// The thread.
    pub thread_id: ThreadId,
    /// The turn's text.
    pub prompt: String,
    /// The stored command id.
    pub turn_command_id: CommandId,
    /// The stored message id.
    pub message_id: MessageId,
}

#[derive(sqlx::FromRow)]
struct ToSendRow {
    id: i64,
    job_id: i64,
    attempt: i64,
    number: i64,
    thread_id: String,
    prompt: String,
    turn_command_id: String,
    message_id: String,
}

impl ToSendRow {
    fn into_follow_up(self) -> Result<FollowUpToSend, LedgerError> {
        let id = self.id;
        let corrupt = |column: &str, why: String| LedgerError::Corrupt {
            what: format!("{column} of follow-up {id}: {why}"),
        };
        Ok(FollowUpToSend {
            id,
            job_id: JobId(self.job_id),
            attempt: AttemptNo(count(self.attempt).map_err(|e| corrupt("attempt", e))?),
            number: count(self.number).map_err(|e| corrupt("number", e))?,
            thread_id: id_of(self.thread_id).map_err(|e| corrupt("thread_id", e))?,
            prompt: self.prompt,
            turn_command_id: id_of(self.turn_command_id).map_err(|e| corrupt("turn_command_id", e))?,
            message_id: id_of(self.message_id).map_err(|e| corrupt("message_id", e))?,
        })
    }
}

impl Ledger {
    /// Records a [`afk_core::Event::FollowUp`] transition of `job` and `follow_up` atomically,
    /// with the same compare-and-set on the job's state as [`Ledger::record`]:
    /// - with [`AttemptChange::FollowUp`], the job's last attempt (which succeeded) is running
    ///   again from `now` and the follow-up is stored with its number, to be sent;
    /// - without an attempt change (the limit is reached), the follow-up is stored without a
    ///   number: its cause is answered, by nobody, and will not be again.
    ///
    /// A cause already stored for the job is a unique violation
    /// ([`LedgerError::is_unique_violation`]); nothing is then written.
    pub async fn record_follow_up(
        &self,
        job: JobId,
        transition: &Transition,
        follow_up: &NewFollowUp,
        now: DateTime<Utc>,
    ) -> Result<Job, LedgerError> {
        let (job, _) = (self.follow_up_measured(job, transition, follow_up, now, false)).await?;
        Ok(job)
    }

    /// [`Ledger::record_follow_up`], and how many times it moved the count of changes to the
    /// live attempts ([`WatchedMoves`], measured inside its transaction).
    pub async fn record_follow_up_counted(
        &self,
        job: JobId,
        transition: &Transition,
        follow_up: &NewFollowUp,
        now: DateTime<Utc>,
    ) -> Result<(Job, WatchedMoves), LedgerError> {
        self.follow_up_measured(job, transition, follow_up, now, true)
            .await
    }

    async fn follow_up_measured(
        &self,
        job: JobId,
        transition: &Transition,
        follow_up: &NewFollowUp,
        now: DateTime<Utc>,
        measure: bool,
    ) -> Result<(Job, WatchedMoves), LedgerError> {
        let mut counting = Counting::new(self.backend(), measure);
        let number = match &transition.attempt {
            Some(AttemptChange::FollowUp { number }) => Some(i64::from(*number)),
            None => None,
            Some(_) => {
                return Err(LedgerError::Corrupt {
                    what: format!("a follow-up of job {job} with a transition that is not one"),
                })
            }
        };
        let now = millis(now);
        let (row, moves): (JobRow, WatchedMoves) = with_pool!(self, |pool| in_transaction!(pool, |tx| {
            fence!(self, tx);
            let updated: Option<JobRow> = sqlx::query_as(
                // A follow-up turn starts with no waiting time: its turn timeout counts its own running.
                "UPDATE jobs SET state = $1, updated_ms = $2, reported = NULL, input_waited_ms = 0, \
                 input_wait_since_ms = NULL, input_question = NULL \
                 WHERE id = $3 AND state = $4 RETURNING *",
            )
            .bind(transition.to.as_str())
            .bind(now)
            .bind(job.0)
            .bind(transition.from.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(updated) = updated else {
                return Err(refused_move!(tx, job, transition.from));
            };
            count_first_write!(tx, counting, transition.from != transition.to);
            let attempt = updated.attempts;
            if number.is_some() {
                // The last attempt, which succeeded, works again on its thread.
                let reopened = sqlx::query(
                    "UPDATE attempts SET state = 'running', ended_ms = NULL, last_error = NULL, \
                     updated_ms = $1 WHERE job_id = $2 AND number = $3 AND state = 'succeeded'",
                )
                .bind(now)
                .bind(job.0)
                .bind(attempt)
                .execute(&mut *tx)
                .await?;
                if reopened.rows_affected() != 1 {
                    return Err(LedgerError::NoLiveAttempt { job });
                }
            }
            sqlx::query(
                "INSERT INTO follow_ups (job_id, attempt, number, cause_key, cause, prompt, \
                 turn_command_id, message_id, sent, created_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE, $9)",
            )
            .bind(job.0)
            .bind(attempt)
            .bind(number)
            .bind(&follow_up.cause_key)
            .bind(&follow_up.cause)
            .bind(&follow_up.prompt)
            .bind(number.map(|_| follow_up.turn_command_id.as_str()))
            .bind(number.map(|_| follow_up.message_id.as_str()))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO events (job_id, attempt, from_state, to_state, note, at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(job.0)
            .bind(attempt)
            .bind(transition.from.as_str())
            .bind(transition.to.as_str())
            .bind(&transition.note)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok((updated, count_end!(tx, counting)))
        }))?;
        Ok((row.into_job()?, moves))
    }

    /// The causes (`cause_key`) of `job` already answered, with a turn or not.
    pub async fn follow_up_causes(&self, job: JobId) -> Result<Vec<String>, LedgerError> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT cause_key FROM follow_ups WHERE job_id = $1 ORDER BY id"
        )
        .bind(job.0)
        .fetch_all(pool)
        .await?))
    }

    /// The jobs working on a follow-up turn (or waiting for a person in one), ordered by id:
    /// those whose pull request must still be watched for a merge or a close.
    pub async fn jobs_in_follow_up_turns(&self) -> Result<Vec<Job>, LedgerError> {
        const SQL: &str = "SELECT * FROM jobs WHERE state IN ('running', 'needs_input') \
             AND id IN (SELECT job_id FROM follow_ups WHERE number IS NOT NULL) ORDER BY id";
        let rows: Vec<JobRow> = fetch!(self, fetch_all, SQL);
        rows.into_iter().map(JobRow::into_job).collect()
    }

    /// How many follow-up turns `job` had (started, sent or not).
    pub async fn follow_ups_used(&self, job: JobId) -> Result<u32, LedgerError> {
        let used: i64 = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM follow_ups WHERE job_id = $1 AND number IS NOT NULL"
        )
        .bind(job.0)
        .fetch_one(pool)
        .await?);
        count(used).map_err(|why| LedgerError::Corrupt {
            what: format!("the follow-ups of job {job}: {why}"),
        })
    }

    /// When the latest follow-up turn of `job`'s attempt `attempt` was recorded, if it had one:
    /// a turn of its thread that completed before then is the one followed up, not its answer.
    pub async fn latest_follow_up_at(
        &self,
        job: JobId,
        attempt: AttemptNo,
    ) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let at: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar(
            "SELECT MAX(created_ms) FROM follow_ups WHERE job_id = $1 AND attempt = $2 AND number IS NOT NULL"
        )
        .bind(job.0)
        .bind(i64::from(attempt.0))
        .fetch_one(pool)
        .await?
        });
        at.map(instant).transpose().map_err(|why| LedgerError::Corrupt {
            what: format!("the follow-ups of job {job}: {why}"),
        })
    }

    /// The latest follow-up of `job`: its number (`None` when the limit was reached and no turn
    /// was started) and what it answered.
    pub async fn latest_follow_up(&self, job: JobId) -> Result<Option<(Option<u32>, String)>, LedgerError> {
        let row: Option<(Option<i64>, String)> = with_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT CAST(number AS BIGINT), cause FROM follow_ups WHERE job_id = $1 ORDER BY id DESC LIMIT 1"
        )
        .bind(job.0)
        .fetch_optional(pool)
        .await?
        });
        row.map(|(number, cause)| {
            let number = number
                .map(count)
                .transpose()
                .map_err(|why| LedgerError::Corrupt {
                    what: format!("the follow-ups of job {job}: {why}"),
                })?;
            Ok((number, cause))
        })
        .transpose()
    }

    /// Every follow-up turn recorded but not yet known to have reached T3, oldest first, with
    /// its thread: only the latest follow-up of a job that still runs it (the job `running` on
    /// that attempt). One whose job moved on meanwhile (stopped, timed out, cancelled, a newer
    /// follow-up) is never sent: its thread was given up, and a turn there would work unwatched.
    pub async fn unsent_follow_ups(&self) -> Result<Vec<FollowUpToSend>, LedgerError> {
        const SQL: &str = "SELECT f.id, f.job_id, CAST(f.attempt AS BIGINT) AS attempt, \
             CAST(f.number AS BIGINT) AS number, a.thread_id, f.prompt, \
             f.turn_command_id, f.message_id FROM follow_ups f \
             JOIN attempts a ON a.job_id = f.job_id AND a.number = f.attempt \
             JOIN jobs j ON j.id = f.job_id \
             WHERE f.number IS NOT NULL AND NOT f.sent \
             AND a.state = 'running' AND j.state = 'running' \
             AND f.number = (SELECT MAX(g.number) FROM follow_ups g WHERE g.job_id = f.job_id) \
             ORDER BY f.id";
        let rows: Vec<ToSendRow> = fetch!(self, fetch_all, SQL);
        rows.into_iter().map(ToSendRow::into_follow_up).collect()
    }

    /// T3 accepted the follow-up `id` (or it no longer matters): it is not sent again.
    pub async fn mark_follow_up_sent(&self, id: i64) -> Result<(), LedgerError> {
        with_pool!(self, |pool| in_transaction!(pool, |tx| {
            fence!(self, tx);
            sqlx::query("UPDATE follow_ups SET sent = TRUE WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(())
        }))
    }
}
