//! The figures the budgets are decided on (`[budget]`, docs/config.md): a job's agent time and a
//! repository's use of one day. Both are read over indexes of migration 0017, so neither read
//! grows with the history (a day's rows, one job's rows).

use std::time::Duration;

use afk_core::{JobId, Repo};
use chrono::{DateTime, Utc};

use crate::model::{count, millis};
use crate::{Ledger, LedgerError, Pool};

/// What one repository used in one day (UTC), as [`Ledger::repo_day_usage`] reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepoDayUsage {
    /// Its jobs whose first attempt was started that day (a requeued job is not a new one).
    pub new_jobs: u32,
    /// The agent time of its turns that ended that day (a turn counts on the day it ends).
    pub agent_time: Duration,
}

impl Ledger {
    /// The agent time of `job`'s finished turns within its current budget: the attempts after
    /// `attempts_base` (the job's attempts when it was last requeued) and their follow-up turns.
    /// A turn still running is not in it (the caller adds its own figure).
    pub async fn job_agent_time(&self, job: JobId, attempts_base: u32) -> Result<Duration, LedgerError> {
        let ms: Option<i64> = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT CAST(SUM(agent_ms) AS BIGINT) FROM agent_turns WHERE job_id = $1 AND attempt > $2"
        )
        .bind(job.0)
        .bind(i64::from(attempts_base))
        .fetch_one(pool)
        .await?);
        Ok(Duration::from_millis(ms.unwrap_or(0).max(0) as u64))
    }

    /// What `repo` used since `day_start` (the start of a UTC day): its new jobs and the agent
    /// time of its turns that ended since.
    pub async fn repo_day_usage(
        &self,
        repo: &Repo,
        day_start: DateTime<Utc>,
    ) -> Result<RepoDayUsage, LedgerError> {
        let since = millis(day_start);
        let ms: Option<i64> = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT CAST(SUM(agent_ms) AS BIGINT) FROM agent_turns WHERE repo = $1 AND ended_ms >= $2"
        )
        .bind(repo.as_str())
        .bind(since)
        .fetch_one(pool)
        .await?);
        // `CROSS JOIN` keeps SQLite (without statistics) from walking the repository's jobs
        // first, a read that would grow with its history: the day's first attempts lead, from
        // the partial index `attempts_first`, and each finds its job by id. PostgreSQL plans the
        // same (EXPLAIN: index scan on attempts_first, then jobs by id).
        let new_jobs: i64 = with_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM attempts a CROSS JOIN jobs j \
             WHERE j.id = a.job_id AND a.number = 1 AND a.created_ms >= $1 AND j.repo = $2"
        )
        .bind(since)
        .bind(repo.as_str())
        .fetch_one(pool)
        .await?);
        Ok(RepoDayUsage {
            new_jobs: count(new_jobs).map_err(|why| LedgerError::Corrupt {
                what: format!("the new jobs of {repo} today: {why}"),
            })?,
            agent_time: Duration::from_millis(ms.unwrap_or(0).max(0) as u64),
        })
    }
}
