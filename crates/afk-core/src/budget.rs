//! Budgets: how much agent time one job may use before afk stops it ([`AgentTimeOverrun`]), and
//! how a figure reads in a note. The per-repository daily budgets are decided in the control
//! plane's policy (they hold jobs back; they never move one).

use std::fmt;
use std::time::Duration;

/// The budgets that apply to a repository's jobs (`[budget]`, maybe lowered by its `AFK.md`).
/// `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Agent time per job.
    pub job_agent_time: Option<Duration>,
    /// Agent time per repository per day (UTC).
    pub repo_agent_time_per_day: Option<Duration>,
    /// New jobs per repository per day (UTC).
    pub repo_new_jobs_per_day: Option<u32>,
}

impl BudgetLimits {
    /// These limits with `lower`'s over them where `lower` is lower: a repository's `AFK.md` may
    /// lower a budget, or set one the configuration leaves off, but never raise one.
    pub fn lowered_by(self, lower: BudgetLimits) -> BudgetLimits {
        fn min<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        BudgetLimits {
            job_agent_time: min(self.job_agent_time, lower.job_agent_time),
            repo_agent_time_per_day: min(self.repo_agent_time_per_day, lower.repo_agent_time_per_day),
            repo_new_jobs_per_day: min(self.repo_new_jobs_per_day, lower.repo_new_jobs_per_day),
        }
    }
}

/// A job's agent time (the sum of its turns' durations since its budget began, the time its
/// thread waited for a person left out) is past its limit (`[budget] job_agent_time`, maybe
/// lowered by the repository's `AFK.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentTimeOverrun {
    /// The agent time used so far.
    pub used: Duration,
    /// The budget.
    pub limit: Duration,
}

impl AgentTimeOverrun {
    /// The overrun when `used` is past `limit` (a budget is spent once it is reached), else
    /// `None`; no limit is no overrun.
    pub fn of(used: Duration, limit: Option<Duration>) -> Option<AgentTimeOverrun> {
        let limit = limit?;
        (used >= limit).then_some(AgentTimeOverrun { used, limit })
    }
}

/// `agent time budget: used 4h 12m of 4h`, as notes, the status comment and `afk jobs` say it.
impl fmt::Display for AgentTimeOverrun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "agent time budget: used {} of {}",
            span(self.used),
            span(self.limit)
        )
    }
}

/// A duration as a person reads it in a note: to the second from a minute on (`4h 12m 3s`), to
/// the millisecond below (`1s 250ms`; `0s` for none).
pub fn span(duration: Duration) -> String {
    let rounded = if duration >= Duration::from_secs(60) {
        Duration::from_secs(duration.as_secs())
    } else {
        Duration::from_millis(duration.as_millis() as u64)
    };
    humantime::format_duration(rounded).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn afk_md_lowers_a_budget_or_sets_one_left_off_but_never_raises_one() {
        let h = |n: u64| Some(Duration::from_secs(n * 3600));
        let configured = BudgetLimits {
            job_agent_time: h(4),
            repo_agent_time_per_day: None,
            repo_new_jobs_per_day: Some(10),
        };
        let afk_md = BudgetLimits {
            job_agent_time: h(8),
            repo_agent_time_per_day: h(6),
            repo_new_jobs_per_day: Some(3),
        };
        assert_eq!(
            configured.lowered_by(afk_md),
            BudgetLimits {
                job_agent_time: h(4),
                repo_agent_time_per_day: h(6),
                repo_new_jobs_per_day: Some(3),
            }
        );
        assert_eq!(configured.lowered_by(BudgetLimits::default()), configured);
    }

    #[test]
    fn a_budget_is_spent_once_reached_and_none_is_never_spent() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(AgentTimeOverrun::of(h(3), Some(h(4))), None);
        let over = AgentTimeOverrun::of(h(4), Some(h(4))).unwrap();
        assert_eq!(over.to_string(), "agent time budget: used 4h of 4h");
        let over = AgentTimeOverrun::of(Duration::from_millis(15_123_456), Some(h(4))).unwrap();
        assert_eq!(over.to_string(), "agent time budget: used 4h 12m 3s of 4h");
        assert_eq!(AgentTimeOverrun::of(h(1000), None), None);
        assert_eq!(span(Duration::from_micros(1_250_700)), "1s 250ms");
        assert_eq!(span(Duration::ZERO), "0s");
    }
}
