//! The watcher: maps each running attempt's thread in T3's snapshot to an event, detects stalls
//! and turn timeouts, and stops the threads of attempts that ended early.

use std::collections::HashMap;

use afk_core::{AttemptState, Event, JobState};
use chrono::{DateTime, Utc};
use t3_client::wire::Timestamp;
use t3_client::{CommandId, ReadModel, ThreadId, ThreadState};

use super::{ControlError, ControlPlane, TickReport};

/// Remembers when each running thread's `updatedAt` last moved, to detect stalls. In memory only:
/// after a restart a thread gets a full stall timeout again, which errs on the side of patience.
#[derive(Debug, Default)]
pub struct StallTracker {
    seen: HashMap<String, (Timestamp, DateTime<Utc>)>,
}

impl StallTracker {
    /// Records `updated_at` for `thread` at `now`; returns how long it has been unchanged.
    pub fn observe(&mut self, thread: &str, updated_at: Timestamp, now: DateTime<Utc>) -> chrono::Duration {
        let entry = self.seen.entry(thread.to_owned()).or_insert((updated_at, now));
        if entry.0 != updated_at {
            *entry = (updated_at, now);
        }
        now - entry.1
    }

    /// Forgets threads that are no longer watched.
    pub fn retain(&mut self, live: &std::collections::HashSet<String>) {
        self.seen.retain(|thread, _| live.contains(thread));
    }
}

pub(super) async fn watch(
    plane: &mut ControlPlane,
    snapshot: &ReadModel,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), ControlError> {
    let live = plane.ledger.live_attempts().await?;
    let mut watched = std::collections::HashSet::new();
    // One pass over the snapshot, so that a fleet of thousands costs one hash lookup per attempt.
    let threads: HashMap<&str, &t3_client::wire::Thread> =
        snapshot.threads.iter().map(|t| (t.id.as_str(), t)).collect();
    for (job, attempt) in live {
        if attempt.state != AttemptState::Running || job.state != JobState::Running {
            continue;
        }
        let thread = threads.get(attempt.thread_id.as_str()).copied();
        let event = match ThreadState::of(thread) {
            ThreadState::Starting | ThreadState::Running => {
                let Some(thread) = thread else { continue };
                watched.insert(attempt.thread_id.clone());
                let unchanged = plane.stalls.observe(&attempt.thread_id, thread.updated_at, now);
                let running_for = now - attempt.created_at;
                let turn = chrono_duration(plane.settings.timeouts.turn);
                let stall = chrono_duration(plane.settings.timeouts.stall);
                if running_for > turn {
                    Event::TimedOut {
                        reason: format!(
                            "ran longer than the turn timeout of {}",
                            humantime::format_duration(plane.settings.timeouts.turn)
                        ),
                    }
                } else if unchanged > stall {
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
            ThreadState::Lost => Event::ThreadLost,
        };
        plane.transition(&job, &event, None, now, report).await?;
    }
    plane.stalls.retain(&watched);
    Ok(())
}

/// Interrupts the turn and stops the session of every attempt the ledger marked for stopping. The
/// command ids derive from the thread id, so a stop repeated after a crash is deduplicated by T3.
pub(super) async fn stop_threads(plane: &ControlPlane) -> Result<(), ControlError> {
    for (job, attempt) in plane.ledger.attempts_to_stop().await? {
        let Ok(thread) = ThreadId::new(attempt.thread_id.clone()) else {
            plane.ledger.mark_thread_stopped(attempt.id).await?;
            continue;
        };
        let interrupt = command_id(&thread, "interrupt");
        let stop = command_id(&thread, "stop");
        let outcome = match plane.t3.interrupt_turn(&thread, None, interrupt).await {
            Ok(_) => plane.t3.stop_session(&thread, stop).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(_) => {
                tracing::info!(
                    "{} attempt {}: thread {thread} interrupted and stopped",
                    job.issue,
                    attempt.number
                );
                plane.ledger.mark_thread_stopped(attempt.id).await?;
            }
            Err(error) if error.is_transient() => {
                tracing::warn!(
                    "{} attempt {}: cannot stop thread {thread} yet: {error}",
                    job.issue,
                    attempt.number
                );
            }
            Err(error) => {
                // T3 refused: the thread has no turn to interrupt or no session to stop any more.
                tracing::info!(
                    "{} attempt {}: T3 refused to stop thread {thread} ({error}); it is not working",
                    job.issue,
                    attempt.number
                );
                plane.ledger.mark_thread_stopped(attempt.id).await?;
            }
        }
    }
    Ok(())
}

/// Hands timed-out and lost jobs to the retry policy, once their thread is stopped: a retry must
/// never run beside a thread that is still working on the same issue.
pub(super) async fn settle(
    plane: &ControlPlane,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), ControlError> {
    for job in plane
        .ledger
        .jobs_in(&[JobState::TimedOut, JobState::Lost])
        .await?
    {
        let attempts = plane.ledger.attempts(job.id).await?;
        if attempts.last().is_some_and(|a| a.stop_pending) {
            continue;
        }
        plane.transition(&job, &Event::Settle, None, now, report).await?;
    }
    Ok(())
}

fn command_id(thread: &ThreadId, what: &str) -> CommandId {
    CommandId::new(format!("{thread}:{what}")).expect("a thread id with a suffix is a valid command id")
}

fn chrono_duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}
