//! The watcher: maps each running attempt's thread in T3's snapshot to an event, detects stalls
//! and turn timeouts, and stops the threads of attempts that ended early.

use std::collections::HashMap;

use afk_core::{AttemptState, Event, JobId, JobState};
use afk_ledger::{Attempt, Job, WatchedAttempt};
use chrono::{DateTime, Utc};
use t3_client::wire::Timestamp;
use t3_client::{CommandId, Fleet, T3Error, ThreadId, ThreadState};

use super::{ControlError, ControlPlane, TickReport};

/// Remembers when each running thread's `updatedAt` last moved, to detect stalls. In memory only:
/// after a restart a thread gets a full stall timeout again, which errs on the side of patience.
#[derive(Debug, Default)]
pub struct StallTracker {
    /// Per thread: its last `updatedAt`, when that was first seen, and the pass that last saw it.
    seen: HashMap<ThreadId, (Timestamp, DateTime<Utc>, u64)>,
    /// The watcher's current pass (one per tick): threads not observed in it are forgotten.
    pass: u64,
    absent: HashMap<ThreadId, Absence>,
    stop_absent: HashMap<ThreadId, Absence>,
}

/// How long, and in how many views in a row, a thread has been missing from T3's view.
#[derive(Debug, Clone, Copy)]
struct Absence {
    since: DateTime<Utc>,
    views: u32,
}

impl Absence {
    /// Counts one more view without the thread in `absences`; true once it is missing for good:
    /// in [`ABSENT_VIEWS_FOR_LOST`] views in a row and for at least `after`.
    fn note(
        absences: &mut HashMap<ThreadId, Absence>,
        thread: &ThreadId,
        now: DateTime<Utc>,
        after: std::time::Duration,
    ) -> bool {
        let absence = absences
            .entry(thread.clone())
            .or_insert(Absence { since: now, views: 0 });
        absence.views += 1;
        absence.views >= ABSENT_VIEWS_FOR_LOST && (now - absence.since).to_std().unwrap_or_default() >= after
    }
}

/// A thread is lost only when this many views in a row lack it: one view taken just as T3
/// applies a command may not show it yet.
const ABSENT_VIEWS_FOR_LOST: u32 = 2;

impl StallTracker {
    /// Records `updated_at` for `thread` at `now`; returns how long it has been unchanged.
    pub fn observe(
        &mut self,
        thread: &ThreadId,
        updated_at: Timestamp,
        now: DateTime<Utc>,
    ) -> chrono::Duration {
        // Looked up by reference first: a quiet tick over thousands of threads allocates nothing.
        if let Some(entry) = self.seen.get_mut(thread) {
            if entry.0 != updated_at {
                (entry.0, entry.1) = (updated_at, now);
            }
            entry.2 = self.pass;
            return now - entry.1;
        }
        self.seen.insert(thread.clone(), (updated_at, now, self.pass));
        chrono::Duration::zero()
    }

    /// Counts one more view in a row without `thread`; true once it counts as gone (see
    /// [`Timeouts::lost_after`](super::Timeouts::lost_after)).
    pub fn note_absent(&mut self, thread: &ThreadId, now: DateTime<Utc>, after: std::time::Duration) -> bool {
        Absence::note(&mut self.absent, thread, now, after)
    }

    /// The same for a thread being stopped.
    pub fn note_stop_absent(
        &mut self,
        thread: &ThreadId,
        now: DateTime<Utc>,
        after: std::time::Duration,
    ) -> bool {
        Absence::note(&mut self.stop_absent, thread, now, after)
    }

    /// Forgets stop absences that did not last.
    pub fn retain_stop_absent(&mut self, absent: &std::collections::HashSet<ThreadId>) {
        self.stop_absent.retain(|thread, _| absent.contains(thread));
    }

    /// Starts a watcher pass: threads observed from now on count as still watched.
    pub fn begin_pass(&mut self) {
        self.pass += 1;
    }

    /// Ends a pass: forgets threads it did not observe, and absences that did not last.
    pub fn end_pass(&mut self, absent: &std::collections::HashSet<ThreadId>) {
        let pass = self.pass;
        self.seen.retain(|_, entry| entry.2 == pass);
        self.absent.retain(|thread, _| absent.contains(thread));
    }
}

pub(super) async fn watch(
    plane: &mut ControlPlane,
    fleet: &Fleet,
    live: &[WatchedAttempt],
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), ControlError> {
    plane.stalls.begin_pass();
    let mut absent = std::collections::HashSet::new();
    for attempt in live {
        if attempt.state != AttemptState::Running || attempt.job_state != JobState::Running {
            continue;
        }
        let thread = fleet.thread(&attempt.thread_id);
        let event = match ThreadState::of(thread) {
            ThreadState::Starting | ThreadState::Running => {
                let Some(thread) = thread else { continue };
                let unchanged = plane.stalls.observe(&attempt.thread_id, thread.updated_at, now);
                // While an attempt runs its row changes no more, so `updated_at` is when it
                // started running: time spent dispatching (T3 down, a rejected token) is not held
                // against the agent.
                // A negative span (clock stepped back) reads as zero: never a timeout.
                let running_for = (now - attempt.updated_at).to_std().unwrap_or_default();
                let unchanged = unchanged.to_std().unwrap_or_default();
                if running_for > plane.settings.timeouts.turn {
                    Event::TimedOut {
                        reason: format!(
                            "ran longer than the turn timeout of {}",
                            humantime::format_duration(plane.settings.timeouts.turn)
                        ),
                    }
                } else if unchanged > plane.settings.timeouts.stall {
                    Event::TimedOut {
                        reason: format!(
                            "stalled: no change in T3 for {}",
                            humantime::format_duration(plane.settings.timeouts.stall)
                        ),
                    }
                } else {
                    continue;
                }
            }
            ThreadState::Succeeded => Event::ThreadSucceeded,
            ThreadState::Failed { reason } => Event::ThreadFailed {
                error: reason.unwrap_or_else(|| "the turn ended in error (T3 gave no reason)".into()),
            },
            ThreadState::Interrupted => Event::ThreadInterrupted,
            ThreadState::Lost if thread.is_none() => {
                absent.insert(attempt.thread_id.clone());
                let after = plane.settings.timeouts.lost_after;
                if !plane.stalls.note_absent(&attempt.thread_id, now, after) {
                    continue;
                }
                Event::ThreadLost
            }
            ThreadState::Lost => Event::ThreadLost,
        };
        // Only now is the whole job read: a quiet tick reads no issue text at all.
        let Some(job) = plane.ledger.job(attempt.job_id).await? else {
            continue;
        };
        plane.transition(&job, &event, None, now, report).await?;
    }
    plane.stalls.end_pass(&absent);
    Ok(())
}

/// Stops the thread of every attempt the ledger marked for stopping (`to_stop`, as read after the
/// watcher's pass). A stop is done when the
/// snapshot shows the thread not working (gone, deleted, or its turn and session ended); until
/// then each tick sends `thread.turn.interrupt` and `thread.session.stop` again (fresh command
/// ids: a refused try must not make T3 refuse every later one), whatever T3 answered before.
/// Returns the jobs whose thread is still being stopped.
pub(super) async fn stop_threads(
    plane: &mut ControlPlane,
    fleet: &Fleet,
    to_stop: Vec<(Job, Attempt)>,
    now: DateTime<Utc>,
) -> Result<HashMap<JobId, Job>, ControlError> {
    let mut still_absent = std::collections::HashSet::new();
    let mut stopping = HashMap::new();
    for (job, attempt) in to_stop {
        let thread_id = attempt.thread_id.clone();
        let thread = fleet.thread(&thread_id);
        let stopped = match ThreadState::of(thread) {
            // A thread T3 has not shown yet may still be created by a request in flight: only
            // absence in consecutive snapshots counts.
            ThreadState::Lost if thread.is_none() => {
                still_absent.insert(attempt.thread_id.clone());
                let after = plane.settings.timeouts.lost_after;
                plane.stalls.note_stop_absent(&attempt.thread_id, now, after)
            }
            ThreadState::Starting | ThreadState::Running => false,
            ThreadState::Succeeded
            | ThreadState::Failed { .. }
            | ThreadState::Interrupted
            | ThreadState::Lost => true,
        };
        if stopped {
            tracing::info!(
                "{} attempt {}: thread {thread_id} is not working; stopped",
                job.issue,
                attempt.number
            );
            plane.ledger.mark_thread_stopped(attempt.id).await?;
            continue;
        }
        if let Some(thread) = thread.filter(|t| t.latest_turn.is_none()) {
            // A thread that never got its turn (a setup cut short, a dispatch that ran out of
            // tries between its two commands) has nothing to interrupt and would never read as
            // stopped: it is deleted, which also keeps a late turn from ever starting in it.
            if let Err(error) = plane.t3.delete_thread(&thread.id, CommandId::generate()).await {
                warn_stop(&job.issue, attempt.number, &thread_id, "delete it", &error);
            }
        } else if let Some(thread) = thread {
            let turn = thread.latest_turn.as_ref().map(|t| t.turn_id.clone());
            if let Err(error) = plane
                .t3
                .interrupt_turn(&thread_id, turn.as_ref(), CommandId::generate())
                .await
            {
                warn_stop(
                    &job.issue,
                    attempt.number,
                    &thread_id,
                    "interrupt its turn",
                    &error,
                );
            }
            if let Err(error) = plane.t3.stop_session(&thread_id, CommandId::generate()).await {
                warn_stop(&job.issue, attempt.number, &thread_id, "stop its session", &error);
            }
        }
        stopping.insert(job.id, job);
    }
    plane.stalls.retain_stop_absent(&still_absent);
    Ok(stopping)
}

fn warn_stop(
    issue: &afk_core::IssueKey,
    attempt: afk_core::AttemptNo,
    thread: &ThreadId,
    what: &str,
    error: &T3Error,
) {
    let hint = if error.is_credential_problem() {
        " (check the T3 token: [t3.token] or token_file)"
    } else {
        ""
    };
    tracing::warn!("{issue} attempt {attempt}: cannot {what} of thread {thread} yet: {error}{hint}");
}

/// True when `fleet` lacks (or shows deleted) the thread of a running attempt or of one being
/// stopped: what a lagging or stalled stream would show wrongly, so it is checked against T3's
/// snapshot before anything is concluded from it.
pub(super) fn lacks_any(fleet: &Fleet, live: &[WatchedAttempt], to_stop: &[(Job, Attempt)]) -> bool {
    let lacks = |thread_id: &ThreadId| {
        fleet
            .thread(thread_id)
            .is_none_or(|thread| thread.deleted_at.is_some())
    };
    live.iter()
        .filter(|a| a.state == AttemptState::Running && a.job_state == JobState::Running)
        .any(|a| lacks(&a.thread_id))
        || to_stop.iter().any(|(_, a)| lacks(&a.thread_id))
}

/// Hands timed-out and lost jobs to the retry policy, once their thread is stopped (`stopping`
/// lists the jobs whose thread is not): a retry must never run beside a thread that is still
/// working on the same issue.
pub(super) async fn settle(
    plane: &ControlPlane,
    stopping: &HashMap<JobId, Job>,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), ControlError> {
    for job in plane
        .ledger
        .jobs_in(&[JobState::TimedOut, JobState::Lost])
        .await?
    {
        if !stopping.contains_key(&job.id) {
            plane.transition(&job, &Event::Settle, None, now, report).await?;
        }
    }
    Ok(())
}
