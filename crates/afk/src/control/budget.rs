//! The budgets in the loop (`[budget]`, docs/config.md); the decisions are
//! [`crate::policy::budget`]'s, on figures read from the ledger.
//!
//! - [`RepoHolds`]: before a job's first attempt, whether its repository used a daily budget;
//!   a held repository's new jobs stay queued until the next UTC midnight, and afk says so (a
//!   [`Wait`] row per repository, shown by `afk status`, and one log line).
//! - [`job_gate`]: before a retry, whether the job's agent time is spent (it gives up).
//! - [`stop_over_budget`]: a running turn that alone ran past its job's budget is stopped.
//!
//! Every move is an event recorded through the [`Recorder`] before anything is sent (the
//! session's stop is the recorded [`afk_core::Effect::StopThread`]).

use std::collections::HashMap;

use afk_core::{AgentTimeOverrun, AttemptState, BudgetLimits, Event, JobState, Repo};
use afk_ledger::{Job, Ledger, LedgerError, Wait, WatchedAttempt};
use chrono::{DateTime, Utc};
use t3_client::{Fleet, ThreadState};

use super::record::Recorder;
use super::ControlError;
use crate::policy::budget::{day_start, job_overrun, repo_hold, turn_overrun, RepoHold};
use crate::policy::Policies;

/// The topic of `repo`'s wait row.
fn topic(repo: &Repo) -> String {
    format!("budget:{repo}")
}

/// The repositories whose new jobs wait for the next day, as decided this day.
#[derive(Debug, Default)]
pub(crate) struct RepoHolds {
    held: HashMap<Repo, RepoHold>,
}

impl RepoHolds {
    /// Forgets the holds whose day is over (and their wait rows): their new jobs may start.
    pub(crate) async fn expire(&mut self, ledger: &Ledger, now: DateTime<Utc>) -> Result<(), LedgerError> {
        let over: Vec<Repo> = self
            .held
            .iter()
            .filter(|(_, hold)| hold.until <= now)
            .map(|(repo, _)| repo.clone())
            .collect();
        for repo in over {
            self.held.remove(&repo);
            tracing::info!(repo = %repo, "a new day (UTC): repository {repo}'s new jobs may start again");
            ledger.clear_wait(&topic(&repo)).await?;
        }
        Ok(())
    }

    /// True when `repo`'s new jobs wait (decided earlier this day): nothing is read.
    pub(crate) fn holds(&self, repo: &Repo) -> bool {
        self.held.contains_key(repo)
    }

    /// Whether [`RepoHolds::may_start`] reads the repository's use of the day from the ledger
    /// for `job`: a new job (no attempt yet) under a daily budget.
    pub(crate) fn reads_usage(job: &Job, limits: &BudgetLimits) -> bool {
        job.attempts == 0
            && (limits.repo_new_jobs_per_day.is_some() || limits.repo_agent_time_per_day.is_some())
    }

    /// Whether `job`, a new job (no attempt yet) of a repository under `limits`, may start now,
    /// `unrecorded` new jobs of its repository being already decided but not yet in the ledger:
    /// false when its repository used a daily budget, which is then remembered until the next
    /// day, said once in the log and kept as a wait row for `afk status`.
    pub(crate) async fn may_start(
        &mut self,
        ledger: &Ledger,
        job: &Job,
        limits: &BudgetLimits,
        unrecorded: u32,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        if !Self::reads_usage(job, limits) {
            return Ok(true);
        }
        let repo = &job.issue.repo;
        let mut usage = ledger.repo_day_usage(repo, day_start(now)).await?;
        usage.new_jobs = usage.new_jobs.saturating_add(unrecorded);
        let Some(hold) = repo_hold(repo, usage, limits, now) else {
            return Ok(true);
        };
        tracing::warn!(repo = %repo, "{}", hold.message);
        ledger
            .set_wait(&Wait {
                topic: topic(repo),
                part: repo.to_string(),
                message: hold.message.clone(),
                kind: "budget".into(),
                needs_person: false,
                since: now,
                updated_at: now,
            })
            .await?;
        self.held.insert(repo.clone(), hold);
        Ok(false)
    }
}

/// The overrun of `job`, about to start its next attempt (a retry) under `limits`: `None` when
/// its agent time is not spent (or it is a new job, whose budget is whole).
pub(crate) async fn job_gate(
    ledger: &Ledger,
    job: &Job,
    limits: &BudgetLimits,
) -> Result<Option<AgentTimeOverrun>, LedgerError> {
    if job.state != JobState::RetryWait || limits.job_agent_time.is_none() {
        return Ok(None);
    }
    let finished = ledger.job_agent_time(job.id, job.attempts_base).await?;
    Ok(job_overrun(finished, limits))
}

/// The overrun of `job`, in review, before a follow-up turn the pull request asks for: `None`
/// when its agent time is not spent under `limits`.
pub(crate) async fn job_gate_at_review(
    ledger: &Ledger,
    job: &Job,
    limits: &BudgetLimits,
) -> Result<Option<AgentTimeOverrun>, LedgerError> {
    if limits.job_agent_time.is_none() {
        return Ok(None);
    }
    let finished = ledger.job_agent_time(job.id, job.attempts_base).await?;
    Ok(job_overrun(finished, limits))
}

/// The instant the running turn of `attempt` alone reaches its job's agent time budget (as last
/// resolved for its repository), when [`stop_over_budget`] may first record anything for it
/// (`None`: not running, or no budget): a tick that skips the watcher's pass skips that too, so
/// it must not skip past this.
pub(crate) fn turn_deadline(policies: &Policies, attempt: &WatchedAttempt) -> Option<DateTime<Utc>> {
    if attempt.job_state != JobState::Running || attempt.state != AttemptState::Running {
        return None;
    }
    let limit = policies.budget(&attempt.issue.repo).job_agent_time?;
    let after = chrono::Duration::from_std(limit.checked_add(attempt.input_waited)?).ok()?;
    attempt.updated_at.checked_add_signed(after)
}

/// Stops each running turn of `live` that alone ran past its job's agent time budget (as last
/// resolved for its repository): records [`Event::OverBudget`], whose stop of the session the
/// watcher carries out. A thread waiting for a person is never stopped so (its waiting is not
/// agent time). True when it recorded any.
pub(crate) async fn stop_over_budget(
    recorder: &mut Recorder,
    policies: &Policies,
    fleet: &Fleet,
    live: &[&WatchedAttempt],
    now: DateTime<Utc>,
) -> Result<bool, ControlError> {
    let mut recorded = false;
    for attempt in live {
        if attempt.job_state != JobState::Running || attempt.state != AttemptState::Running {
            continue;
        }
        // Only a turn T3 shows working: one that ended (its success not confirmed yet) or that
        // afk cannot read is the watcher's to settle, not a budget's to stop.
        let working = fleet.unreadable(&attempt.thread_id).is_none()
            && matches!(
                ThreadState::of(fleet.thread(&attempt.thread_id)),
                ThreadState::Starting | ThreadState::Running
            );
        if !working {
            continue;
        }
        let limits = policies.budget(&attempt.issue.repo);
        let Some(limit) = limits.job_agent_time else {
            continue;
        };
        // As the watcher counts the turn timeout: from when the turn started running, its waits
        // for people left out.
        let running = (now - attempt.updated_at)
            .to_std()
            .unwrap_or_default()
            .saturating_sub(attempt.input_waited);
        if running < limit {
            continue;
        }
        let Some(job) = recorder.ledger().job(attempt.job_id).await? else {
            continue;
        };
        // The watcher may have ended the turn in this tick: then it is past its safe point.
        if job.state != JobState::Running || job.attempts != attempt.number.0 {
            continue;
        }
        let finished = recorder
            .ledger()
            .job_agent_time(job.id, job.attempts_base)
            .await?;
        let Some(overrun) = turn_overrun(finished, running, &limits) else {
            continue;
        };
        recorded |= recorder
            .record(&job, &Event::OverBudget { overrun }, None, now)
            .await?
            .is_some();
    }
    Ok(recorded)
}
