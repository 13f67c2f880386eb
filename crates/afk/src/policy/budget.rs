//! The budgets' decisions (`[budget]`, docs/config.md), as plain functions of figures the ledger
//! read ([`afk_ledger::Ledger::job_agent_time`], [`afk_ledger::Ledger::repo_day_usage`]) and the
//! limits that apply ([`BudgetLimits`], `AFK.md` over `[budget]`).
//!
//! - A job's agent time is checked at its safe points: before its next attempt and before a
//!   follow-up turn the pull request asks for ([`job_overrun`]), and during a turn only when that
//!   turn alone is past the budget ([`turn_overrun`]).
//! - A repository over a daily budget gets no new job (a job's first attempt) until the next UTC
//!   day ([`repo_hold`]); its retries and follow-ups go on (each job has its own budget).

use std::time::Duration;

use afk_core::{span, AgentTimeOverrun, BudgetLimits, Repo};
use afk_ledger::RepoDayUsage;
use chrono::{DateTime, NaiveTime, Utc};

/// The start of `now`'s day (UTC): the repository budgets count from it.
pub fn day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive().and_time(NaiveTime::MIN).and_utc()
}

/// The start of the day after `now`'s (UTC): when a held repository resumes.
pub fn next_day(now: DateTime<Utc>) -> DateTime<Utc> {
    day_start(now) + chrono::Duration::days(1)
}

/// The overrun of a job at a safe point (no turn of it running): its finished turns' agent time
/// `finished` against its budget.
pub fn job_overrun(finished: Duration, limits: &BudgetLimits) -> Option<AgentTimeOverrun> {
    AgentTimeOverrun::of(finished, limits.job_agent_time)
}

/// The overrun of a job whose turn has run for `running` (its waits for people left out), its
/// finished turns having used `finished`: only when the running turn alone is past the budget
/// (a job is stopped mid-turn only then; otherwise at the turn's end).
pub fn turn_overrun(
    finished: Duration,
    running: Duration,
    limits: &BudgetLimits,
) -> Option<AgentTimeOverrun> {
    let limit = limits.job_agent_time?;
    (running >= limit).then_some(AgentTimeOverrun {
        used: finished + running,
        limit,
    })
}

/// Why `repo`'s new jobs wait, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoHold {
    /// The next UTC midnight.
    pub until: DateTime<Utc>,
    /// What `afk status` and the log say: `queued: repository acme/api used its daily budget of
    /// 5 new jobs; resumes at 00:00 UTC`.
    pub message: String,
}

/// Whether `repo`, having used `usage` today (at `now`), may start a new job under `limits`:
/// `None` when it may, else until when its new jobs stay queued and why (the number of new jobs
/// is named first when both budgets are spent).
pub fn repo_hold(
    repo: &Repo,
    usage: RepoDayUsage,
    limits: &BudgetLimits,
    now: DateTime<Utc>,
) -> Option<RepoHold> {
    let why = if let Some(limit) = limits.repo_new_jobs_per_day.filter(|l| usage.new_jobs >= *l) {
        let jobs = if limit == 1 { "job" } else { "jobs" };
        format!("its daily budget of {limit} new {jobs}")
    } else if let Some(limit) = limits.repo_agent_time_per_day.filter(|l| usage.agent_time >= *l) {
        format!(
            "its daily agent time budget (used {} of {})",
            span(usage.agent_time),
            span(limit)
        )
    } else {
        return None;
    };
    Some(RepoHold {
        until: next_day(now),
        message: format!("queued: repository {repo} used {why}; resumes at 00:00 UTC"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn h(n: u64) -> Duration {
        Duration::from_secs(n * 3600)
    }

    #[test]
    fn a_repository_over_a_daily_budget_holds_its_new_jobs_until_the_next_utc_midnight() {
        let repo = Repo::new("acme/api").unwrap();
        let now = at("2026-11-30T23:59:30Z");
        let limits = BudgetLimits {
            job_agent_time: None,
            repo_agent_time_per_day: Some(h(8)),
            repo_new_jobs_per_day: Some(2),
        };
        let usage = |new_jobs, hours| RepoDayUsage {
            new_jobs,
            agent_time: h(hours),
        };
        assert_eq!(repo_hold(&repo, usage(1, 7), &limits, now), None);
        let hold = repo_hold(&repo, usage(2, 0), &limits, now).unwrap();
        assert_eq!(hold.until, at("2026-12-01T00:00:00Z"));
        assert_eq!(
            hold.message,
            "queued: repository acme/api used its daily budget of 2 new jobs; resumes at 00:00 UTC"
        );
        let hold = repo_hold(&repo, usage(0, 8), &limits, now).unwrap();
        assert_eq!(
            hold.message,
            "queued: repository acme/api used its daily agent time budget (used 8h of 8h); resumes \
             at 00:00 UTC"
        );
        assert_eq!(
            repo_hold(&repo, usage(100, 100), &BudgetLimits::default(), now),
            None,
            "no budget, no hold"
        );
        assert_eq!(day_start(now), at("2026-11-30T00:00:00Z"));
    }

    #[test]
    fn a_job_is_stopped_mid_turn_only_when_the_turn_alone_is_past_its_budget() {
        let limits = BudgetLimits {
            job_agent_time: Some(h(4)),
            ..BudgetLimits::default()
        };
        assert_eq!(
            turn_overrun(h(3), h(2), &limits),
            None,
            "at the turn's end instead"
        );
        let over = turn_overrun(h(3), h(4), &limits).unwrap();
        assert_eq!((over.used, over.limit), (h(7), h(4)));
        assert_eq!(job_overrun(h(3), &limits), None);
        assert_eq!(job_overrun(h(5), &limits).unwrap().used, h(5));
        assert_eq!(job_overrun(h(500), &BudgetLimits::default()), None);
        assert_eq!(turn_overrun(h(0), h(500), &BudgetLimits::default()), None);
    }
}
