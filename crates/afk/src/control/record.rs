//! [`Recorder`]: the one place where a job moves. Every part of the control plane hands its events
//! here; the machine decides, the ledger records, and only then does the caller send anything.

use std::borrow::Cow;
use std::sync::Arc;

use afk_core::{apply, Event, JobId, JobState, RetryPolicy, Transition};
use afk_ledger::{
    Attempt, Job, Ledger, LedgerChanges, LedgerError, NewAttempt, WatchedChanges, WatchedMoves,
};
use afk_secrets::redact::scrub;
use chrono::{DateTime, Utc};

use super::live::LiveAttempts;
use super::{ControlError, Progress};

/// `event` with every secret value afk holds (and every credential form) removed from the outside
/// text it carries: T3's or the agent's error, which may echo a token, goes into the ledger, the
/// log and the issue's status comment.
fn scrubbed(event: &Event) -> Cow<'_, Event> {
    let text = match event {
        Event::Refused { error }
        | Event::DispatchDeferred { error }
        | Event::DispatchRejected { error }
        | Event::BootstrapFailed { error }
        | Event::ThreadFailed { error }
        | Event::TimedOut { reason: error }
        | Event::InputRequested { question: error } => error,
        _ => return Cow::Borrowed(event),
    };
    let Cow::Owned(clean) = scrub(text) else {
        return Cow::Borrowed(event);
    };
    let mut event = event.clone();
    match &mut event {
        Event::Refused { error }
        | Event::DispatchDeferred { error }
        | Event::DispatchRejected { error }
        | Event::BootstrapFailed { error }
        | Event::ThreadFailed { error }
        | Event::TimedOut { reason: error }
        | Event::InputRequested { question: error } => *error = clean,
        _ => {}
    }
    Cow::Owned(event)
}

/// One move for [`Recorder::record_all`]: `event` applied to `job` as read, at `at`, with the ids
/// of the attempt it starts, if any.
pub(crate) struct ToRecord<'a> {
    pub(crate) job: &'a Job,
    pub(crate) event: &'a Event,
    pub(crate) new_attempt: Option<&'a NewAttempt>,
    pub(crate) at: DateTime<Utc>,
}

/// Decides and records transitions, and keeps what the tick reports of them.
pub(crate) struct Recorder {
    ledger: Ledger,
    retry: RetryPolicy,
    /// The transitions recorded since the last [`Recorder::take_progress`].
    progress: Vec<Progress>,
    /// The live attempts as last read and patched since with this recorder's own writes, reused
    /// while the ledger's count of changes to them reads what it expects: see
    /// [`Recorder::watched_attempts`].
    watched: Option<Watched>,
    /// The last version handed to [`LiveAttempts`] (never reused: a version names its attempts).
    versions: u64,
    /// How many times the live attempts were read from the ledger.
    watched_reads: u64,
    /// How many times the live attempts of the jobs this recorder just wrote were read from the
    /// ledger, to patch the cache with them ([`Ledger::watched_attempts_of`]).
    watched_patch_reads: u64,
    /// False when the cache is dropped after every write instead of patched (benchmarks measure
    /// the tick after a transition both ways so).
    patching: bool,
    /// The other reads a quiet tick makes, kept while no job or attempt changes.
    reads: TickReads,
    /// How many times this recorder wrote (or tried to write) a job's move: a read cached in this
    /// tick before a write is not reused after it.
    writes: u64,
    /// How many times the reads kept in `reads` were made from the ledger.
    tick_reads: u64,
    /// The status surface's metrics, told of every transition recorded.
    metrics: Option<Arc<crate::status::Metrics>>,
}

impl Recorder {
    pub(crate) fn new(ledger: Ledger, retry: RetryPolicy) -> Self {
        Self {
            ledger,
            retry,
            progress: Vec::new(),
            watched: None,
            versions: 0,
            watched_reads: 0,
            watched_patch_reads: 0,
            patching: true,
            reads: TickReads::default(),
            writes: 0,
            tick_reads: 0,
            metrics: None,
        }
    }

    /// Tells `metrics` of every transition recorded from now on.
    pub(crate) fn observe(&mut self, metrics: Arc<crate::status::Metrics>) {
        self.metrics = Some(metrics);
    }

    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The retry policy the machine decides with.
    pub(crate) fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Applies `event` to `job` and records it; `None` when the event does not apply to the job's
    /// current state (someone else moved it on: a stale view, logged and skipped).
    pub(crate) async fn record(
        &mut self,
        job: &Job,
        event: &Event,
        new_attempt: Option<&NewAttempt>,
        now: DateTime<Utc>,
    ) -> Result<Option<(Transition, Job)>, ControlError> {
        // The note and the error are kept in the ledger and shown on the issue: no secret.
        let event = &scrubbed(event);
        let transition = match apply(job.status(), event, &self.retry, now) {
            Ok(transition) => transition,
            Err(invalid) => {
                tracing::debug!("job {}: {invalid}", job.issue);
                return Ok(None);
            }
        };
        self.wrote();
        let written = (self.ledger)
            .record_counted(job.id, &transition, new_attempt, now)
            .await;
        let updated = match written {
            Ok((updated, moves)) => {
                self.note_written(&[job.id], moves);
                updated
            }
            Err(error) => {
                // The cached live attempts may be stale now (a conflict means someone else
                // moved the job; another error may come after a commit).
                self.watched = None;
                match error {
                    LedgerError::Conflict { .. } => {
                        tracing::debug!("job {}: changed under us, skipping {event:?}", job.issue);
                        return Ok(None);
                    }
                    other => return Err(other.into()),
                }
            }
        };
        self.recorded(job, &transition, &updated, new_attempt.map(|a| &a.thread_id), now);
        Ok(Some((transition, updated)))
    }

    /// Records each of `moves` as [`Recorder::record`] does, in one ledger transaction (one
    /// commit for all: [`Ledger::record_many`]); the answers in order, `None` for an event that
    /// does not apply to its job's state or a job that moved meanwhile. An error of the ledger
    /// records none of them.
    pub(crate) async fn record_all(
        &mut self,
        moves: &[ToRecord<'_>],
    ) -> Result<Vec<Option<(Transition, Job)>>, ControlError> {
        let mut answers: Vec<Option<(Transition, Job)>> = vec![None; moves.len()];
        let mut taken = Vec::with_capacity(moves.len());
        for (i, m) in moves.iter().enumerate() {
            let event = &scrubbed(m.event);
            match apply(m.job.status(), event, &self.retry, m.at) {
                Ok(transition) => taken.push((i, transition)),
                Err(invalid) => tracing::debug!("job {}: {invalid}", m.job.issue),
            }
        }
        if taken.is_empty() {
            return Ok(answers);
        }
        // As in `record`: this tick's kept reads may be stale now.
        self.wrote();
        let ledger_moves: Vec<afk_ledger::Move<'_>> = (taken.iter())
            .map(|(i, transition)| afk_ledger::Move {
                job: moves[*i].job.id,
                transition,
                new_attempt: moves[*i].new_attempt,
                at: moves[*i].at,
            })
            .collect();
        let (written, watched_moves) = match self.ledger.record_many_counted(&ledger_moves).await {
            Ok(written) => written,
            Err(error) => {
                self.watched = None;
                return Err(error.into());
            }
        };
        // Every job of the batch is read back, not only those answered `Ok`: a move can commit
        // and still come back as an error (its row failed to decode), and its moves are counted;
        // a refused job read back again costs a row, a written one missed would stay stale.
        let jobs: Vec<JobId> = ledger_moves.iter().map(|m| m.job).collect();
        self.note_written(&jobs, watched_moves);
        for ((i, transition), written) in taken.into_iter().zip(written) {
            let m = &moves[i];
            match written {
                Ok(updated) => {
                    let thread = m.new_attempt.map(|a| &a.thread_id);
                    self.recorded(m.job, &transition, &updated, thread, m.at);
                    answers[i] = Some((transition, updated));
                }
                Err(refused) => {
                    // T3's error text in the event may echo a secret: the scrubbed copy.
                    tracing::debug!(
                        "job {}: changed under us, skipping {:?}: {refused}",
                        m.job.issue,
                        scrubbed(m.event)
                    );
                }
            }
        }
        Ok(answers)
    }

    /// Answers the taken comment command `command` in one ledger transaction with the job's move:
    /// `event` (when there is one) applied to `job`, its note naming `by` (the command's author
    /// and comment), and `answer`. `None` when the job moved meanwhile (decide again at the next
    /// tick) or the command was answered already; an event the machine refuses is an error of
    /// the caller's decision, answered as nothing recorded too.
    pub(crate) async fn answer_command(
        &mut self,
        job: &Job,
        event: Option<&Event>,
        by: &str,
        command: afk_ledger::CommentCommandId,
        answer: &afk_ledger::CommandAnswer,
        now: DateTime<Utc>,
    ) -> Result<Option<Job>, ControlError> {
        let transition = match event
            .map(|e| apply(job.status(), e, &self.retry, now))
            .transpose()
        {
            Ok(transition) => transition.map(|t| Transition {
                note: format!("{} ({by})", t.note),
                ..t
            }),
            Err(invalid) => {
                tracing::debug!("job {}: {invalid}", job.issue);
                return Ok(None);
            }
        };
        self.wrote();
        let written = (self.ledger)
            .answer_comment_command_counted(command, job.id, transition.as_ref(), answer, now)
            .await;
        let updated = match written {
            Ok((updated, moves)) => {
                self.note_written(&[job.id], moves);
                updated
            }
            Err(error) => {
                self.watched = None;
                match error {
                    LedgerError::Conflict { .. } | LedgerError::NotFound(_) => return Ok(None),
                    other => return Err(other.into()),
                }
            }
        };
        if let (Some(transition), Some(updated)) = (&transition, &updated) {
            self.recorded(job, transition, updated, None, now);
        }
        Ok(Some(updated.unwrap_or_else(|| job.clone())))
    }

    /// Records a [`Event::FollowUp`] of `job` with `follow_up` (its cause, prompt and the ids of
    /// its turn), through the machine, before anything is sent. `None` when the machine or the
    /// ledger refused it (the job moved, or the cause was answered already).
    pub(crate) async fn record_follow_up(
        &mut self,
        job: &Job,
        event: &Event,
        follow_up: &afk_ledger::NewFollowUp,
        now: DateTime<Utc>,
    ) -> Result<Option<(Transition, Job)>, ControlError> {
        let transition = match apply(job.status(), event, &self.retry, now) {
            Ok(transition) => transition,
            Err(invalid) => {
                tracing::debug!("job {}: {invalid}", job.issue);
                return Ok(None);
            }
        };
        self.wrote();
        let written = (self.ledger)
            .record_follow_up_counted(job.id, &transition, follow_up, now)
            .await;
        if written.is_err() {
            // As in `record`: the cached live attempts may be stale now.
            self.watched = None;
        }
        let updated = match written {
            Ok((updated, moves)) => {
                self.note_written(&[job.id], moves);
                updated
            }
            Err(LedgerError::Conflict { .. }) => {
                tracing::debug!("job {}: changed under us, skipping its follow-up", job.issue);
                return Ok(None);
            }
            Err(error) if error.is_unique_violation() => {
                tracing::debug!(
                    "job {}: {} was followed up already",
                    job.issue,
                    follow_up.cause_key
                );
                return Ok(None);
            }
            Err(other) => return Err(other.into()),
        };
        self.recorded(job, &transition, &updated, None, now);
        Ok(Some((transition, updated)))
    }

    /// What follows every transition the ledger took: counted, logged (with the job's attempt and,
    /// when it starts one, its thread), and kept for the tick's progress.
    fn recorded(
        &mut self,
        job: &Job,
        transition: &Transition,
        updated: &Job,
        thread: Option<&t3_client::ThreadId>,
        now: DateTime<Utc>,
    ) {
        if let Some(metrics) = &self.metrics {
            metrics.transition(job, transition, now);
        }
        tracing::info!(
            issue = %job.issue,
            job = job.id.0,
            attempt = (updated.attempts > 0).then_some(updated.attempts),
            thread = thread.map(|t| t.as_str()),
            "{} {} -> {}: {}",
            job.issue,
            transition.from,
            transition.to,
            transition.note
        );
        self.progress.push(Progress {
            issue: job.issue.clone(),
            from: transition.from,
            to: transition.to,
            note: transition.note.clone(),
        });
    }

    /// Records `event` when the machine allows it for `job`, and quietly does nothing when it does
    /// not: for events a source offers on every scan (an issue that is back may or may not bring
    /// its job back, as [`afk_core::apply`] decides).
    pub(crate) async fn offer(
        &mut self,
        job: &Job,
        event: &Event,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        if apply(job.status(), event, &self.retry, now).is_ok() {
            self.record(job, event, None, now).await?;
        }
        Ok(())
    }

    /// Reports a job a source just queued (`from` names the source).
    pub(crate) fn queued(&mut self, job: &Job, from: &str) {
        tracing::info!(
            issue = %job.issue,
            job = job.id.0,
            "{} queued from {from} (job {})",
            job.issue,
            job.id
        );
        self.progress.push(Progress {
            issue: job.issue.clone(),
            from: JobState::Queued,
            to: JobState::Queued,
            note: "queued".into(),
        });
    }

    /// Forgets the cached live attempts and the other reads kept: the next reads go to the
    /// ledger.
    pub(crate) fn forget_cache(&mut self) {
        self.watched = None;
        self.reads = TickReads::default();
    }

    /// Notes that a tick begins: the reads kept are reused only after this tick read the
    /// ledger's change counts ([`Recorder::watched_attempts`]).
    pub(crate) fn begin_tick(&mut self) {
        self.reads.tick = None;
    }

    /// Notes that the caller wrote a job or an attempt (or may have) other than through this
    /// recorder: no read kept is reused in this tick from now on. The next tick's change counts
    /// tell whether they still stand.
    pub(crate) fn wrote(&mut self) {
        self.writes += 1;
    }

    /// The count of changes to jobs and attempts this tick read, while this recorder wrote
    /// nothing since: a read kept under that count answers as the ledger would now.
    fn standing(&self) -> Option<LedgerChanges> {
        self.reads
            .tick
            .filter(|&(_, writes)| writes == self.writes)
            .map(|(count, _)| count)
    }

    /// The count under which a read made now is kept: this tick's, even after a write of this
    /// recorder (that write moved the count, so the next tick reads again).
    fn keep_under(&self) -> Option<LedgerChanges> {
        self.reads.tick.map(|(count, _)| count)
    }

    /// [`Ledger::attempts_to_stop`], reused from the last read while no job or attempt changed
    /// since ([`Ledger::changes`], read once a tick by [`Recorder::watched_attempts`]) and this
    /// recorder wrote nothing in this tick: an attempt's stop request (`stop_pending`) by any
    /// writer moves that count.
    pub(crate) async fn attempts_to_stop(&mut self) -> Result<Vec<(Job, Attempt)>, ControlError> {
        if let (Some(count), Some((at, kept))) = (self.standing(), &self.reads.to_stop) {
            if *at == count {
                return Ok(kept.clone());
            }
        }
        self.tick_reads += 1;
        let read = self.ledger.attempts_to_stop().await?;
        self.reads.to_stop = self.keep_under().map(|count| (count, read.clone()));
        Ok(read)
    }

    /// The jobs the retry policy is to settle (`timed_out`, `lost`): [`Ledger::jobs_in`], reused
    /// as [`Recorder::attempts_to_stop`] is.
    pub(crate) async fn jobs_to_settle(&mut self) -> Result<Vec<Job>, ControlError> {
        if let (Some(count), Some((at, kept))) = (self.standing(), &self.reads.to_settle) {
            if *at == count {
                return Ok(kept.clone());
            }
        }
        self.tick_reads += 1;
        let read = self.ledger.jobs_in(&[JobState::TimedOut, JobState::Lost]).await?;
        self.reads.to_settle = self.keep_under().map(|count| (count, read.clone()));
        Ok(read)
    }

    /// The jobs that may start an attempt at `now` ([`Ledger::ready_jobs`], all of them), reused
    /// from the last read while no job or attempt changed since, this recorder wrote nothing in
    /// this tick, and `now` is between that read's instant and the next back-off end it found
    /// ([`Ledger::next_ready_at`]): the answer depends on the time only through those back-offs.
    pub(crate) async fn ready_jobs(&mut self, now: DateTime<Utc>) -> Result<Vec<Job>, ControlError> {
        if let (Some(count), Some(kept)) = (self.standing(), &self.reads.ready) {
            if kept.answers(count, now) {
                return Ok(kept.jobs.clone());
            }
        }
        self.tick_reads += 1;
        let jobs = self.ledger.ready_jobs(now, usize::MAX).await?;
        // After the jobs: a back-off that a write ends in between moves the count (read again
        // next tick); one that ends on its own is found here or was found ready above.
        let until_ms = self.ledger.next_ready_at(now).await?;
        self.reads.ready = self.keep_under().map(|at| ReadyRead {
            at,
            read_at: now,
            until_ms,
            jobs: jobs.clone(),
        });
        Ok(jobs)
    }

    /// How many times the attempts to stop, the jobs to settle or the ready jobs were read from
    /// the ledger rather than reused.
    pub(crate) fn tick_reads(&self) -> u64 {
        self.tick_reads
    }

    /// The transitions recorded since the last call.
    pub(crate) fn take_progress(&mut self) -> Vec<Progress> {
        std::mem::take(&mut self.progress)
    }

    /// The live attempts, read from the ledger only when the ledger's count of changes to them
    /// ([`Ledger::watched_changes`], moved by every write to them, from this process or any
    /// other) does not read what the cache expects: the count read before the cache's last full
    /// read, plus the moves this recorder's own writes made since (each measured by the ledger in
    /// the write's transaction, [`WatchedMoves`]; [`Recorder::note_written`]). When the count
    /// reads that, only the live attempts of the jobs written since are read (once for all those
    /// writes) and put in place of the cached ones. So a quiet tick over a large fleet reads one
    /// row, and a tick after this recorder's transitions one row and what it wrote; any other
    /// writer moves the count past what is expected and the next call reads everything again.
    /// The same version ([`LiveAttempts::version`]) is returned for as long as the live attempts
    /// are unchanged, re-reads and patches included: a new one means a transition was recorded
    /// since, or the ledger changed; after a patch, [`LiveAttempts::changed_since`] names the
    /// jobs whose entries it changed. A copy costs O(1), a patch of k jobs O(k log n).
    pub(crate) async fn watched_attempts(&mut self) -> Result<LiveAttempts, ControlError> {
        // Read before the attempts: a read that follows holds every change counted so far, so a
        // change made in between only costs one more read, never a missed one. Both counts in one
        // read: the second says whether the tick's other reads may be reused.
        let both = self.ledger.changes().await?;
        self.reads.tick = Some((both.ledger, self.writes));
        let changes = both.watched;
        match self.watched.take() {
            Some(cached) if cached.expected == changes && cached.written.is_empty() => {
                let live = cached.live.clone();
                self.watched = Some(cached);
                return Ok(live);
            }
            // Only this recorder wrote since: its jobs' live attempts alone are read, once for
            // all its writes since the last call, unless they are a good part of the fleet (read
            // by index, one statement per 500 jobs, they would then cost more than reading all).
            Some(cached)
                if cached.expected == changes
                    && cached.written.len() <= (cached.live.len() / 4).max(PATCH_AT_LEAST) =>
            {
                self.watched_patch_reads += 1;
                match self.ledger.watched_attempts_of(&cached.written).await {
                    Ok(fresh) => {
                        let live = match cached.live.patched(&cached.written, fresh, self.versions + 1) {
                            Some(patched) => {
                                self.versions += 1;
                                patched
                            }
                            // Nothing they return changed: the same version.
                            None => cached.live,
                        };
                        self.watched = Some(Watched {
                            live: live.clone(),
                            expected: changes,
                            written: Vec::new(),
                        });
                        return Ok(live);
                    }
                    Err(error) => {
                        tracing::debug!("reading the live attempts of the jobs just written: {error}");
                        // Kept for the comparison below: the full read may find them unchanged.
                        self.watched = Some(cached);
                    }
                }
            }
            cached => self.watched = cached,
        }
        self.watched_reads += 1;
        let read = match self.ledger.watched_attempts().await {
            Ok(read) => read,
            Err(error) => {
                self.watched = None;
                return Err(error.into());
            }
        };
        // A re-read that finds what was cached keeps the cached version: the watcher then
        // knows that the ledger changed nothing it watches.
        let live = match self.watched.take() {
            Some(cached) if cached.live.holds(&read) => cached.live,
            _ => {
                self.versions += 1;
                LiveAttempts::read(read, self.versions)
            }
        };
        self.watched = Some(Watched {
            live: live.clone(),
            expected: changes,
            written: Vec::new(),
        });
        Ok(live)
    }

    /// Notes this recorder's write of `jobs`, which moved the ledger's count of changes to the
    /// live attempts `moves` times as the ledger measured it in the write's transaction: the
    /// cache expects the count to move as much, and the next [`Recorder::watched_attempts`]
    /// reads those jobs' live attempts back and puts them in place of the cached ones (once for
    /// all the writes in between). A write whose moves are not known drops the cache: the next
    /// call reads everything.
    fn note_written(&mut self, jobs: &[JobId], moves: WatchedMoves) {
        let (Some(mut cached), Some(moves), true) = (self.watched.take(), moves.known(), self.patching)
        else {
            return;
        };
        let Ok(moves) = i64::try_from(moves) else {
            return;
        };
        if moves > 0 {
            cached.expected = WatchedChanges(cached.expected.0.saturating_add(moves));
            cached.written.extend_from_slice(jobs);
        }
        // Otherwise nothing the live attempts' read returns was written (every move refused).
        self.watched = Some(cached);
    }

    /// How many times [`Recorder::watched_attempts`] read the live attempts from the ledger.
    pub(crate) fn watched_reads(&self) -> u64 {
        self.watched_reads
    }

    /// Patches the cached live attempts with this recorder's writes (`true`, the default) or
    /// drops them after every write (`false`, as before patching): for benchmarks, to measure
    /// both in one run. What [`Recorder::watched_attempts`] returns is the same either way.
    pub(crate) fn patch_live_attempts(&mut self, on: bool) {
        self.patching = on;
    }

    /// How many times the live attempts of the jobs this recorder wrote were read to patch the
    /// cache of [`Recorder::watched_attempts`] (never all of them).
    pub(crate) fn watched_patch_reads(&self) -> u64 {
        self.watched_patch_reads
    }
}

/// How many written jobs [`Recorder::watched_attempts`] reads back rather than every live attempt,
/// whatever the fleet's size (beyond, while they are at most a quarter of the fleet).
const PATCH_AT_LEAST: usize = 64;

/// The cache of [`Recorder::watched_attempts`]: the live attempts as last read, the jobs this
/// recorder wrote since, and the count of changes ([`afk_ledger::Changes::watched`]) under which
/// `live` with those jobs' entries read again is what the ledger holds.
struct Watched {
    live: LiveAttempts,
    expected: WatchedChanges,
    /// The jobs written since `live` was read or patched (a job may come more than once).
    written: Vec<JobId>,
}

/// The reads of a tick besides the live attempts, each with the count of changes to jobs and
/// attempts ([`Ledger::changes`]) read before it.
#[derive(Default)]
struct TickReads {
    /// This tick's count, read before anything kept here was read in this tick, with the
    /// recorder's writes then; `None` until this tick read it.
    tick: Option<(LedgerChanges, u64)>,
    /// [`Ledger::attempts_to_stop`].
    to_stop: Option<(LedgerChanges, Vec<(Job, Attempt)>)>,
    /// The jobs to settle.
    to_settle: Option<(LedgerChanges, Vec<Job>)>,
    /// The ready jobs.
    ready: Option<ReadyRead>,
}

/// A read of the ready jobs: at `read_at`, under the count `at`.
struct ReadyRead {
    at: LedgerChanges,
    read_at: DateTime<Utc>,
    /// The next back-off end after `read_at`, in the ledger's milliseconds
    /// ([`Ledger::next_ready_at`]): raw, as a parked job's end may be no representable instant.
    until_ms: Option<i64>,
    jobs: Vec<Job>,
}

impl ReadyRead {
    /// Whether [`Ledger::ready_jobs`] at `now`, under the count `count`, answers `self.jobs`:
    /// nothing changed, and no back-off ended between the read and `now` (the ledger compares
    /// whole milliseconds, `not_before_ms <= millis(now)`: `read_at <= now` and
    /// `millis(now) < until_ms` keep each back-off on the same side). A clock that went back
    /// reads again.
    fn answers(&self, count: LedgerChanges, now: DateTime<Utc>) -> bool {
        self.at == count
            && self.read_at <= now
            && self
                .until_ms
                .is_none_or(|until_ms| now.timestamp_millis() < until_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use afk_core::{IssueKey, JobSource, Priority, Repo};
    use afk_ledger::NewJob;
    use afk_secrets::Secret;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn an_outside_error_echoing_a_secret_is_recorded_without_it() {
        let token = Secret::new("t3-operate-echoed-7f3a9c");
        let ledger = Ledger::open("sqlite::memory:").await.unwrap();
        let now = Utc::now();
        let new = NewJob {
            issue: IssueKey {
                repo: Repo::new("acme/api").unwrap(),
                number: 1,
            },
            title: "t".into(),
            body: "b".into(),
            labels: vec![],
            priority: Priority::DEFAULT,
            source: JobSource::Local,
        };
        let (job, _) = ledger.upsert_job(&new, now).await.unwrap();
        let mut recorder = Recorder::new(ledger.clone(), RetryPolicy::default());
        let error = format!(
            "T3 answered 400: {{\"echo\": \"{}\", \"authorization\": \"Bearer abc.def\"}}",
            token.expose()
        );
        recorder
            .record(&job, &Event::Refused { error }, None, now)
            .await
            .unwrap()
            .expect("recorded");
        let job = ledger.job(job.id).await.unwrap().unwrap();
        let kept = job.last_error.unwrap();
        assert!(
            kept.contains("T3 answered 400: {\"echo\": \"[redacted]\""),
            "{kept}"
        );
        assert!(
            !kept.contains(token.expose()) && !kept.contains("abc.def"),
            "{kept}"
        );
        let events = ledger.events(job.id).await.unwrap();
        assert!(
            events.iter().all(|e| !e.note.contains(token.expose())),
            "{events:#?}"
        );
    }

    fn new_job(number: u64) -> NewJob {
        NewJob {
            issue: IssueKey {
                repo: Repo::new("acme/api").unwrap(),
                number,
            },
            title: "t".into(),
            body: "b".into(),
            labels: vec![],
            priority: Priority::DEFAULT,
            source: JobSource::Local,
        }
    }

    fn new_attempt(n: u64) -> NewAttempt {
        use t3_client::ids::{CommandId, MessageId, ProjectId, ThreadId};
        NewAttempt {
            thread_id: ThreadId::new(format!("thread-{n}")).unwrap(),
            project_id: ProjectId::new("project").unwrap(),
            create_command_id: CommandId::new(format!("create-{n}")).unwrap(),
            turn_command_id: CommandId::new(format!("turn-{n}")).unwrap(),
            message_id: MessageId::new(format!("message-{n}")).unwrap(),
            title: "t".into(),
            branch: format!("afk/{n}"),
            prompt: "p".into(),
            model: None,
        }
    }

    /// The live attempts `recorder` hands out now equal a fresh read of the ledger's; whether
    /// they came from its cache (`true`: patched, nothing read but the count) or a full read.
    async fn cache_is_fresh(recorder: &mut Recorder, ledger: &Ledger, after: &str) -> bool {
        let reads = recorder.watched_reads();
        let cached = recorder.watched_attempts().await.unwrap();
        let fresh = ledger.watched_attempts().await.unwrap();
        assert!(cached.holds(&fresh), "after {after}: {fresh:#?}");
        recorder.watched_reads() == reads
    }

    /// Every kind of write of the recorder, then writes by another handle, on the ledger at
    /// `url`: the cache patched with the recorder's own writes is what a full read returns, and
    /// is reused without one; another handle's write (alone, or beside the recorder's) is read.
    async fn patched_cache_stays_true(url: &str) {
        let ledger = Ledger::open(url).await.unwrap();
        let other = Ledger::open(url).await.unwrap();
        let sqlite = ledger.backend() == afk_ledger::Backend::Sqlite;
        let now = Utc::now();
        let mut ids = Vec::new();
        for n in 1..=10 {
            ids.push(ledger.upsert_job(&new_job(n), now).await.unwrap().0.id);
        }
        let job = |i: usize| {
            let ledger = ledger.clone();
            let id = ids[i];
            async move { ledger.job(id).await.unwrap().unwrap() }
        };
        let mut recorder = Recorder::new(ledger.clone(), RetryPolicy::default());
        assert!(!cache_is_fresh(&mut recorder, &ledger, "the first read").await);
        let patches = recorder.watched_patch_reads();

        // One move: an attempt inserted.
        let j0 = job(0).await;
        let a0 = new_attempt(0);
        recorder
            .record(&j0, &Event::StartAttempt, Some(&a0), now)
            .await
            .unwrap()
            .unwrap();
        assert!(cache_is_fresh(&mut recorder, &ledger, "a start").await);
        assert_eq!(
            recorder.watched_patch_reads(),
            patches + 1,
            "one read of the job written"
        );

        // A batch: three attempts inserted in one transaction.
        let (j1, j2, j3) = (job(1).await, job(2).await, job(3).await);
        let attempts = [new_attempt(1), new_attempt(2), new_attempt(3)];
        let moves: Vec<ToRecord<'_>> = [&j1, &j2, &j3]
            .into_iter()
            .zip(&attempts)
            .map(|(job, attempt)| ToRecord {
                job,
                event: &Event::StartAttempt,
                new_attempt: Some(attempt),
                at: now,
            })
            .collect();
        let answers = recorder.record_all(&moves).await.unwrap();
        assert!(answers.iter().all(Option::is_some));
        assert!(cache_is_fresh(&mut recorder, &ledger, "a batch of starts").await);

        // Running, a wait for a person and its end: the job's and the attempt's columns.
        let later = now + chrono::Duration::seconds(5);
        recorder
            .record(&job(0).await, &Event::Dispatched, None, later)
            .await
            .unwrap()
            .unwrap();
        assert!(cache_is_fresh(&mut recorder, &ledger, "dispatched").await);
        let asked = Event::InputRequested {
            question: "which?".into(),
        };
        recorder
            .record(&job(0).await, &asked, None, later)
            .await
            .unwrap()
            .unwrap();
        assert!(cache_is_fresh(&mut recorder, &ledger, "a question").await);
        let answered_at = later + chrono::Duration::seconds(7);
        recorder
            .record(&job(0).await, &Event::InputAnswered, None, answered_at)
            .await
            .unwrap()
            .unwrap();
        assert!(cache_is_fresh(&mut recorder, &ledger, "an answer").await);

        // A dispatch deferred keeps the state: known on SQLite (a move per row), not on
        // PostgreSQL (a move only when a value changed), where it is read again.
        let deferred = Event::DispatchDeferred {
            error: "T3 busy".into(),
        };
        recorder
            .record(&job(1).await, &deferred, None, later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cache_is_fresh(&mut recorder, &ledger, "a deferral").await, sqlite);

        // A turn that ends: its attempt leaves the live ones; a follow-up brings it back.
        recorder
            .record(&job(1).await, &Event::Dispatched, None, later)
            .await
            .unwrap()
            .unwrap();
        recorder
            .record(&job(1).await, &Event::ThreadSucceeded, None, later)
            .await
            .unwrap()
            .unwrap();
        assert!(cache_is_fresh(&mut recorder, &ledger, "a success").await);
        let follow_up = Event::FollowUp {
            by: afk_core::FollowUpBy::Person,
            cause: "please also".into(),
            used: 0,
            max_turns: 3,
            over_budget: None,
        };
        let turn = afk_ledger::NewFollowUp {
            cause_key: "comment:1".into(),
            cause: "please also".into(),
            prompt: "also".into(),
            turn_command_id: t3_client::ids::CommandId::new("follow-1").unwrap(),
            message_id: t3_client::ids::MessageId::new("follow-message-1").unwrap(),
        };
        let followed_at = later + chrono::Duration::seconds(9);
        (recorder.record_follow_up(&job(1).await, &follow_up, &turn, followed_at))
            .await
            .unwrap()
            .unwrap();
        assert!(cache_is_fresh(&mut recorder, &ledger, "a follow-up").await);

        // A comment command answered: without a move (nothing watched written, the same read
        // kept), then with one (a stop ends the attempt).
        let mut command_ids = Vec::new();
        for comment_id in [11, 12] {
            let command = afk_ledger::NewCommentCommand {
                repo: Repo::new("acme/api").unwrap(),
                comment_id,
                number: 3,
                job: ids[2],
                author: "octo".into(),
                kind: afk_ledger::CommentCommandKind::Stop,
                argument: None,
            };
            assert!(ledger.take_comment_command(&command, false, now).await.unwrap());
        }
        for command in ledger.open_comment_commands(None, 10).await.unwrap() {
            command_ids.push(command.id);
        }
        let answer = afk_ledger::CommandAnswer {
            reaction: afk_ledger::Reaction::Eyes,
            reply: None,
            instruction: afk_ledger::InstructionChange::Keep,
        };
        let before = recorder.watched_attempts().await.unwrap();
        (recorder.answer_command(&job(2).await, None, "octo", command_ids[0], &answer, later))
            .await
            .unwrap()
            .unwrap();
        assert!(cache_is_fresh(&mut recorder, &ledger, "an answer without a move").await);
        let after = recorder.watched_attempts().await.unwrap();
        assert_eq!(
            before.version(),
            after.version(),
            "nothing watched changed: the same version"
        );
        let stop = Event::Cancel {
            reason: afk_core::CancelReason::StoppedByCommand,
        };
        (recorder.answer_command(&job(2).await, Some(&stop), "octo", command_ids[1], &answer, later))
            .await
            .unwrap()
            .unwrap();
        assert!(cache_is_fresh(&mut recorder, &ledger, "a stop by command").await);

        // Two writes before the next read, one a batch with a move refused (the job moved under
        // its stale copy) beside one written: one read back for both.
        let patches = recorder.watched_patch_reads();
        let stale = job(7).await;
        let (a6, a7, a7_again) = (new_attempt(6), new_attempt(7), new_attempt(70));
        recorder
            .record(&stale, &Event::StartAttempt, Some(&a7), later)
            .await
            .unwrap()
            .unwrap();
        let j6 = job(6).await;
        let batch = [
            ToRecord {
                job: &j6,
                event: &Event::StartAttempt,
                new_attempt: Some(&a6),
                at: later,
            },
            ToRecord {
                job: &stale,
                event: &Event::StartAttempt,
                new_attempt: Some(&a7_again),
                at: later,
            },
        ];
        let answers = recorder.record_all(&batch).await.unwrap();
        assert!(
            answers[0].is_some() && answers[1].is_none(),
            "the stale move is refused"
        );
        assert!(cache_is_fresh(&mut recorder, &ledger, "a batch with a refused move").await);
        assert_eq!(
            recorder.watched_patch_reads(),
            patches + 1,
            "one read back for two writes"
        );

        // A turn that fails (its attempt ends), a batch whose first move keeps its state (known
        // on SQLite only, as above), a cancel of a dispatching attempt.
        let failed = Event::ThreadFailed { error: "boom".into() };
        recorder
            .record(&job(0).await, &failed, None, later)
            .await
            .unwrap()
            .unwrap();
        assert!(cache_is_fresh(&mut recorder, &ledger, "a failure").await);
        let (j6, j8) = (job(6).await, job(8).await);
        let a8 = new_attempt(8);
        let batch = [
            ToRecord {
                job: &j6,
                event: &deferred,
                new_attempt: None,
                at: later,
            },
            ToRecord {
                job: &j8,
                event: &Event::StartAttempt,
                new_attempt: Some(&a8),
                at: later,
            },
        ];
        let answers = recorder.record_all(&batch).await.unwrap();
        assert!(answers.iter().all(Option::is_some));
        assert_eq!(
            cache_is_fresh(&mut recorder, &ledger, "a batch led by a deferral").await,
            sqlite
        );
        let by_hand = Event::Cancel {
            reason: afk_core::CancelReason::ByHand,
        };
        recorder
            .record(&job(7).await, &by_hand, None, later)
            .await
            .unwrap()
            .unwrap();
        assert!(cache_is_fresh(&mut recorder, &ledger, "a cancel while dispatching").await);

        // Another handle's writes: a cancel, an enqueue; each is read at the next call.
        let cancel = Event::Cancel {
            reason: afk_core::CancelReason::ByHand,
        };
        let j3 = job(3).await;
        let t = afk_core::apply(j3.status(), &cancel, &RetryPolicy::default(), later).unwrap();
        other.record(j3.id, &t, None, later).await.unwrap();
        assert!(!cache_is_fresh(&mut recorder, &ledger, "a cancel by another handle").await);
        other.upsert_job(&new_job(40), later).await.unwrap();
        assert!(!cache_is_fresh(&mut recorder, &ledger, "an enqueue by another handle").await);
        // Beside a write of the recorder's own: the count moved past what it expects.
        let a4 = new_attempt(4);
        recorder
            .record(&job(4).await, &Event::StartAttempt, Some(&a4), later)
            .await
            .unwrap()
            .unwrap();
        other.upsert_job(&new_job(41), later).await.unwrap();
        assert!(!cache_is_fresh(&mut recorder, &ledger, "both wrote").await);
        // The other way round: another handle first, then the recorder, no read in between.
        other.upsert_job(&new_job(42), later).await.unwrap();
        let a9 = new_attempt(9);
        recorder
            .record(&job(9).await, &Event::StartAttempt, Some(&a9), later)
            .await
            .unwrap()
            .unwrap();
        assert!(!cache_is_fresh(&mut recorder, &ledger, "another handle, then the recorder").await);
        // And a move the ledger refuses (the job moved under the recorder): read again.
        let stale = job(5).await;
        let t = afk_core::apply(stale.status(), &cancel, &RetryPolicy::default(), later).unwrap();
        other.record(stale.id, &t, None, later).await.unwrap();
        assert!(recorder
            .record(&stale, &Event::StartAttempt, Some(&new_attempt(5)), later)
            .await
            .unwrap()
            .is_none());
        assert!(!cache_is_fresh(&mut recorder, &ledger, "a refused move").await);
        assert!(cache_is_fresh(&mut recorder, &ledger, "nothing more").await);
        ledger.close().await;
        other.close().await;
    }

    #[tokio::test]
    async fn the_live_attempts_patched_with_the_recorders_writes_are_the_ledgers_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        patched_cache_stays_true(&url).await;
    }

    /// A move of a batch that commits but whose job then fails to decode (its stored
    /// labels no longer JSON, by hand) is still read back: its attempt is in the next live attempts.
    #[tokio::test]
    async fn a_batch_move_written_but_unreadable_is_still_read_back() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let ledger = Ledger::open(&url).await.unwrap();
        let now = Utc::now();
        let job = ledger.upsert_job(&new_job(1), now).await.unwrap().0;
        let mut recorder = Recorder::new(ledger.clone(), RetryPolicy::default());
        assert!(recorder.watched_attempts().await.unwrap().is_empty());
        // A hand edit of a column the live attempts' read does not return: the cache stands.
        let mut hand = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE jobs SET labels = 'not json' WHERE id = ?")
            .bind(job.id.0)
            .execute(&mut hand)
            .await
            .unwrap();
        hand.close().await.unwrap();
        let attempt = new_attempt(1);
        let batch = [ToRecord {
            job: &job,
            event: &Event::StartAttempt,
            new_attempt: Some(&attempt),
            at: now,
        }];
        // Written, but its answer could not be read: the batch says so its own way.
        let _ = recorder.record_all(&batch).await;
        let live = recorder.watched_attempts().await.unwrap();
        assert!(live.holds(&ledger.watched_attempts().await.unwrap()));
        assert_eq!(live.len(), 1, "the started attempt is watched");
        ledger.close().await;
    }

    #[tokio::test]
    async fn the_live_attempts_patched_with_the_recorders_writes_are_the_ledgers_on_postgres() {
        use sqlx::Connection;
        let base = std::env::var("AFK_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let mut admin = match sqlx::PgConnection::connect(&base).await {
            Ok(admin) => admin,
            Err(e) => {
                assert!(
                    std::env::var("AFK_REQUIRE_PG").as_deref() != Ok("1"),
                    "PostgreSQL not reachable at {base} and AFK_REQUIRE_PG=1: {e}"
                );
                eprintln!("SKIP: PostgreSQL not reachable at {base}: {e}");
                return;
            }
        };
        let schema = format!("afk_patch_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
        patched_cache_stays_true(&url).await;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut admin)
            .await
            .unwrap();
    }

    /// The log lines written while the returned guard lives (this thread: a current-thread test).
    fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(written.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || sink.clone())
            .finish();
        (written, tracing::subscriber::set_default(subscriber))
    }

    #[tokio::test]
    async fn a_refused_move_of_a_batch_is_logged_without_the_secret_its_event_echoes() {
        let token = Secret::new("t3-operate-echoed-batch-51c2e8");
        let ledger = Ledger::open("sqlite::memory:").await.unwrap();
        let now = Utc::now();
        let new = NewJob {
            issue: IssueKey {
                repo: Repo::new("acme/api").unwrap(),
                number: 2,
            },
            title: "t".into(),
            body: "b".into(),
            labels: vec![],
            priority: Priority::DEFAULT,
            source: JobSource::Local,
        };
        let (stale, _) = ledger.upsert_job(&new, now).await.unwrap();
        let mut recorder = Recorder::new(ledger.clone(), RetryPolicy::default());
        // The job moves on meanwhile: the batch's move, decided on the stale read, is refused.
        let moved = Event::Refused {
            error: "first".into(),
        };
        recorder
            .record(&stale, &moved, None, now)
            .await
            .unwrap()
            .expect("recorded");
        let event = Event::Refused {
            error: format!("T3 answered 400: echo {}", token.expose()),
        };
        let (written, guard) = capture_logs();
        let answers = recorder
            .record_all(&[ToRecord {
                job: &stale,
                event: &event,
                new_attempt: None,
                at: now,
            }])
            .await
            .unwrap();
        drop(guard);
        assert!(answers[0].is_none(), "the stale move is refused");
        let logs = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("changed under us"), "{logs}");
        assert!(!logs.contains(token.expose()), "{logs}");
    }
}
