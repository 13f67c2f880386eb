//! The watcher: follows T3's view of the fleet (the shell stream while it is live, else the
//! snapshot), turns each running attempt's thread into an event ([`thread_event`]), detects stalls
//! and turn timeouts, stops the threads of attempts that ended early ([`stop_step`]) and hands
//! timed-out and lost jobs to the retry policy once their thread is stopped.
//!
//! The decisions are the plain functions [`thread_event`] and [`stop_step`]; the [`Watcher`]
//! reads T3 and the ledger, asks them, records through the recorder and sends the stops.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use afk_core::{AttemptState, Event, JobId, JobState};
use afk_ledger::{Attempt, Job, Ledger, WatchedAttempt};
use afk_secrets::redact::redact_url;
use chrono::{DateTime, Utc};
use t3_client::wire::{PendingRequest, SessionStatus, ShellWaits, Timestamp};
use t3_client::{CommandId, Fleet, ShellFeed, T3Client, T3Error, ThreadId, ThreadState};
use tracing::Instrument;

use super::live::LiveAttempts;
use super::record::Recorder;
use super::{job_span, ControlError, Timeouts};

/// What T3's view shows of an attempt's thread: the watcher's input to [`thread_event`] and
/// [`stop_step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sighting {
    /// The view has the thread (deleted ones included).
    Seen {
        /// Its state, as the T3 client reads it.
        state: ThreadState,
        /// It has a turn.
        has_turn: bool,
        /// Its session's status, when it has a session.
        session: Option<SessionStatus>,
        /// How long its `updatedAt` has not moved (counted only while it is starting or running).
        unchanged_for: Duration,
    },
    /// The view lacks the thread.
    Missing {
        /// It has been missing for good: from enough views in a row, for long enough (a view
        /// taken just as T3 applies a command, or a stream a moment behind, may lack a thread
        /// that exists).
        for_good: bool,
    },
}

/// The event a running attempt whose thread T3 shows as `sighting` calls for, `running_for` after
/// it started running, under `timeouts`; `None` while it is working within its limits (or has
/// not been missing for long).
pub fn thread_event(sighting: &Sighting, running_for: Duration, timeouts: &Timeouts) -> Option<Event> {
    let (state, unchanged_for) = match sighting {
        Sighting::Missing { for_good } => return for_good.then_some(Event::ThreadLost),
        Sighting::Seen {
            state, unchanged_for, ..
        } => (state, unchanged_for),
    };
    match state {
        ThreadState::Starting | ThreadState::Running => {
            if running_for > timeouts.turn {
                Some(Event::TimedOut {
                    reason: format!(
                        "ran longer than the turn timeout of {}",
                        humantime::format_duration(timeouts.turn)
                    ),
                })
            } else if *unchanged_for > timeouts.stall {
                Some(Event::TimedOut {
                    reason: format!(
                        "stalled: no change in T3 for {}",
                        humantime::format_duration(timeouts.stall)
                    ),
                })
            } else {
                None
            }
        }
        ThreadState::Succeeded => Some(Event::ThreadSucceeded),
        ThreadState::Failed { reason } => Some(Event::ThreadFailed {
            error: reason
                .clone()
                .unwrap_or_else(|| "the turn ended in error (T3 gave no reason)".into()),
        }),
        ThreadState::Interrupted => Some(Event::ThreadInterrupted),
        // In the view but deleted: T3 removed it.
        ThreadState::Lost => Some(Event::ThreadLost),
    }
}

/// The event a wait for a person calls for, for an attempt whose job waits (`waiting`) or runs:
/// T3 shows the thread as `sighting`, `asks` says whether it waits for a person (`None`: T3's
/// shell cannot say now) and `waited` how long the current wait has lasted. `None` leaves the
/// rest to [`thread_event`] for a running job, and means "nothing now" for a waiting one, which
/// is never timed out or judged stalled: its thread is never interrupted.
pub fn wait_event(
    sighting: &Sighting,
    waiting: bool,
    asks: Option<bool>,
    waited: Option<Duration>,
    timeouts: &Timeouts,
) -> Option<Event> {
    let runs = matches!(
        sighting,
        Sighting::Seen {
            state: ThreadState::Running,
            ..
        }
    );
    match (waiting, runs, asks) {
        (false, true, Some(true)) => Some(Event::InputRequested {
            question: String::new(),
        }),
        (false, _, _) => None,
        (true, true, Some(true)) => {
            let waited = waited.unwrap_or_default();
            (waited > timeouts.answer).then_some(Event::NobodyAnswered {
                waited,
                limit: timeouts.answer,
            })
        }
        (true, true, Some(false)) => Some(Event::InputAnswered),
        (true, true, None) => None,
        // Ended, gone or not yet back: as for a running attempt, minus the timeouts.
        (true, false, _) => match thread_event(sighting, Duration::ZERO, timeouts) {
            Some(Event::TimedOut { .. }) | None => None,
            Some(other) => Some(other),
        },
    }
}

/// What the agent asks, as people read it: each question with its offered answers, each approval
/// with what is to be approved, one per line.
pub fn describe_requests(requests: &[PendingRequest]) -> String {
    let mut lines = Vec::new();
    for request in requests {
        match request {
            PendingRequest::UserInput { questions, .. } => {
                for q in questions {
                    let mut line = match q.header.as_deref().filter(|h| !h.trim().is_empty()) {
                        Some(header) => format!("{header}: {}", q.question.trim()),
                        None => q.question.trim().to_owned(),
                    };
                    let options: Vec<&str> = q
                        .options
                        .iter()
                        .map(|o| o.label.trim())
                        .filter(|l| !l.is_empty())
                        .collect();
                    if !options.is_empty() {
                        line.push_str(&format!(" (answers offered: {})", options.join(" / ")));
                    }
                    lines.push(line);
                }
                if questions.is_empty() {
                    lines.push("the agent asks a question afk cannot read; see the thread in T3".into());
                }
            }
            PendingRequest::Approval { summary, detail, .. } => lines.push(match detail {
                Some(detail) => format!("{summary}: {}", detail.trim()),
                None => summary.clone(),
            }),
        }
    }
    if lines.is_empty() {
        return "the agent waits for a person in T3 (its thread names no open question yet)".into();
    }
    let all = lines.join("\n");
    // An approval can carry a whole diff or script; the status comment must stay well inside
    // GitHub's 65,536 characters, and T3 shows the rest.
    match all.char_indices().nth(MAX_QUESTION_CHARS) {
        Some((cut, _)) => format!("{}… (the rest in T3)", &all[..cut]),
        None => all,
    }
}

/// The most of what the agent asks that afk keeps and shows (characters).
const MAX_QUESTION_CHARS: usize = 4_000;

/// Where stopping a thread stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStep {
    /// The thread is not working (ended, deleted, or gone for good): the stop is confirmed.
    Stopped,
    /// Send nothing now: T3's view lacks the thread, not yet for good (a request in flight may
    /// still create it); or its session is starting and no stop would end it yet (T3's session
    /// start in flight still spawns the agent and starts its turn, whatever was sent before);
    /// or a stop was sent and T3's view has not moved since.
    Wait,
    /// The thread's session was stopped before any turn (a setup cut short, a dispatch out of
    /// tries between its two commands, a session that never came up): nothing runs, and it
    /// would never read as stopped, so it is deleted, which also keeps a late turn from ever
    /// starting in it.
    Delete,
    /// Stop its session: the agent ends and its turn reads interrupted. Never an interrupt: T3
    /// resumes an agent that has exited to deliver one, and a session stop starts none. Also
    /// the first step for a thread that has shown neither a turn nor a session for
    /// [`NO_SESSION_GRACE`]: its session then reads `stopped` and the thread is deleted. A
    /// delete at once would orphan the agent of a session start afk's view has not caught up
    /// with (T3 stops a deleted thread's session only if it is up); a stop that races a start
    /// leaves the session `starting`, which the patience above then stops.
    StopSession,
}

/// What afk has sent to stop a thread so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSent {
    /// Nothing yet.
    Nothing,
    /// A stop, and T3's view of the thread has not changed since (nor has long passed): T3 is
    /// still to act on it.
    Unanswered,
    /// A stop, and T3's view changed since (or long passed) yet shows the thread working.
    Unheeded,
}

/// How long a stop is waited for before it is sent again when T3's view does not move at all (a
/// command lost on the way).
pub const STOP_RESEND_AFTER: Duration = Duration::from_secs(30);

/// How long a session that is starting is left to come up before its stop is sent anyway.
pub const STARTING_PATIENCE: Duration = Duration::from_secs(120);

/// How long a thread that shows neither a turn nor a session is left before afk stops it: T3's
/// view can lag a session start by a moment (its shell stream reads the projection, which a
/// session start reaches later), and T3 does not stop a session still starting.
pub const NO_SESSION_GRACE: Duration = Duration::from_secs(10);

/// How to go on stopping a thread T3 shows as `sighting`, after `sent`; `idle_for` is how long it
/// has been seen with no turn and its session as it is now (absent and starting count as one;
/// stopped on its own). A stop is sent once, and again only when T3's view shows the thread
/// still working after it.
pub fn stop_step(sighting: &Sighting, sent: StopSent, idle_for: Duration) -> StopStep {
    let (has_turn, session) = match sighting {
        Sighting::Missing { for_good: true } => return StopStep::Stopped,
        Sighting::Missing { for_good: false } => return StopStep::Wait,
        Sighting::Seen {
            state: ThreadState::Starting | ThreadState::Running,
            has_turn,
            session,
            ..
        } => (*has_turn, *session),
        Sighting::Seen { .. } => return StopStep::Stopped,
    };
    let step = match (has_turn, session) {
        // A session stopped before any turn runs nothing, and stopping it again would change
        // nothing: delete the thread, once it has read stopped for a while. A stop that raced a
        // session start reads stopped too, until the start brings the session back: a delete
        // then would orphan the agent (T3 stops a deleted thread's session only if it is up).
        (false, Some(SessionStatus::Stopped)) if idle_for < NO_SESSION_GRACE => StopStep::Wait,
        (false, Some(SessionStatus::Stopped)) => StopStep::Delete,
        (false, Some(SessionStatus::Starting)) if idle_for < STARTING_PATIENCE => StopStep::Wait,
        (false, None) if idle_for < NO_SESSION_GRACE => StopStep::Wait,
        _ => StopStep::StopSession,
    };
    if sent == StopSent::Unanswered {
        StopStep::Wait
    } else {
        step
    }
}

/// A stop afk is carrying out: what it sent last, and since when the thread has been seen with
/// no turn and its session as it is.
#[derive(Debug, Clone)]
struct StopMemo {
    /// T3's `updatedAt` of the thread when the stop was last sent, and when it was sent.
    sent: Option<(Option<Timestamp>, DateTime<Utc>)>,
    /// Since when the thread has been seen with no turn and its session starting or absent
    /// (`false`), or stopped (`true`).
    idle_since: Option<(bool, DateTime<Utc>)>,
}

/// Remembers when each running thread's `updatedAt` last moved, to detect stalls, and how long
/// threads have been missing from T3's view. In memory only: after a restart a thread gets a full
/// stall timeout again, which errs on the side of patience.
#[derive(Debug, Default)]
struct StallTracker {
    /// Per thread: its last `updatedAt`, when that was first seen, and the pass that last saw it.
    seen: HashMap<ThreadId, (Timestamp, DateTime<Utc>, u64)>,
    /// The watcher's current pass (one per tick): threads not observed in it are forgotten.
    pass: u64,
    absent: HashMap<ThreadId, Absence>,
    stop_absent: HashMap<ThreadId, Absence>,
    /// Threads of afk's attempts that T3 describes in a way afk cannot read, and the reason
    /// last warned about (once per thread and reason).
    warned_unreadable: SaidOnce,
}

/// The reason last said for each thread: a lasting problem is logged once per reason, not at
/// every tick.
#[derive(Debug, Default)]
struct SaidOnce(HashMap<ThreadId, String>);

impl SaidOnce {
    /// True when `reason` was not the last said for `thread` (and now is).
    fn first(&mut self, thread: &ThreadId, reason: &str) -> bool {
        if self.0.get(thread).map(String::as_str) == Some(reason) {
            return false;
        }
        self.0.insert(thread.clone(), reason.to_owned());
        true
    }

    fn forget(&mut self, thread: &ThreadId) {
        self.0.remove(thread);
    }

    /// Keeps only the threads for which `still` holds.
    fn retain(&mut self, mut still: impl FnMut(&ThreadId) -> bool) {
        self.0.retain(|thread, _| still(thread));
    }
}

/// How long, and in how many views in a row, a thread has been missing from T3's view.
#[derive(Debug, Clone, Copy)]
struct Absence {
    since: DateTime<Utc>,
    views: u32,
}

/// A thread is lost only when this many views in a row lack it: one view taken just as T3
/// applies a command may not show it yet.
const ABSENT_VIEWS_FOR_LOST: u32 = 2;

impl Absence {
    /// Counts one more view without `thread` in `absences`; true once it is missing for good: in
    /// [`ABSENT_VIEWS_FOR_LOST`] views in a row and for at least `after`.
    fn note(
        absences: &mut HashMap<ThreadId, Absence>,
        thread: &ThreadId,
        now: DateTime<Utc>,
        after: Duration,
    ) -> bool {
        let absence = absences
            .entry(thread.clone())
            .or_insert(Absence { since: now, views: 0 });
        absence.views += 1;
        absence.views >= ABSENT_VIEWS_FOR_LOST && (now - absence.since).to_std().unwrap_or_default() >= after
    }
}

impl StallTracker {
    /// Forgets all it remembers of `thread`, whose attempt is no longer live (or has another
    /// thread now): what the whole pass's sweep does for the threads it does not visit.
    fn forget(&mut self, thread: &ThreadId) {
        self.seen.remove(thread);
        self.absent.remove(thread);
        self.warned_unreadable.forget(thread);
    }

    /// Notes that afk's thread `thread` cannot be read (`reason`): warned once per reason. Its
    /// absence and stall clocks stop: it is not missing, and its changes cannot be seen.
    fn unreadable(&mut self, thread: &ThreadId, reason: &str) {
        self.absent.remove(thread);
        self.stop_absent.remove(thread);
        if self.warned_unreadable.first(thread, reason) {
            tracing::warn!(
                thread = thread.as_str(),
                "T3 describes thread {thread} in a way afk cannot read ({reason}); its attempt is \
                 unknown (neither lost nor ended) until T3 describes it readably"
            );
        }
    }

    /// Records `updated_at` for `thread` at `now`; returns how long it has been unchanged.
    fn observe(&mut self, thread: &ThreadId, updated_at: Timestamp, now: DateTime<Utc>) -> Duration {
        // Looked up by reference first: a quiet tick over thousands of threads allocates nothing.
        let since = match self.seen.get_mut(thread) {
            Some(entry) => {
                if entry.0 != updated_at {
                    (entry.0, entry.1) = (updated_at, now);
                }
                entry.2 = self.pass;
                entry.1
            }
            None => {
                self.seen.insert(thread.clone(), (updated_at, now, self.pass));
                now
            }
        };
        // A negative span (clock stepped back) reads as zero: never a timeout.
        (now - since).to_std().unwrap_or_default()
    }
}

/// Whose absences a [`sighting`] counts: a running attempt's thread (whose stalls are tracked
/// too), or a thread being stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Watch,
    Stop,
}

/// What T3's view shows of thread `id`, counting in `stalls` how long it has been missing (into
/// `absent` when it is) and, when watching a thread that is starting or running, unchanged.
fn sighting(
    fleet: &Fleet,
    id: &ThreadId,
    purpose: Purpose,
    stalls: &mut StallTracker,
    absent: &mut HashSet<ThreadId>,
    now: DateTime<Utc>,
    lost_after: Duration,
) -> Sighting {
    let Some(thread) = fleet.thread(id) else {
        absent.insert(id.clone());
        let absences = match purpose {
            Purpose::Watch => &mut stalls.absent,
            Purpose::Stop => &mut stalls.stop_absent,
        };
        return Sighting::Missing {
            for_good: Absence::note(absences, id, now, lost_after),
        };
    };
    let state = ThreadState::of(Some(thread));
    let unchanged_for = match state {
        ThreadState::Starting | ThreadState::Running if purpose == Purpose::Watch => {
            stalls.observe(id, thread.updated_at, now)
        }
        _ => {
            if purpose == Purpose::Watch {
                // Not working: its stall clock ends here (the whole pass's sweep would drop it;
                // a pass over the changed threads only does not sweep).
                stalls.seen.remove(id);
            }
            Duration::ZERO
        }
    };
    Sighting::Seen {
        state,
        has_turn: thread.latest_turn.is_some(),
        session: thread.session.as_ref().map(|s| s.status),
        unchanged_for,
    }
}

/// How long the first tick waits for T3's shell stream to synchronize (or fail) before it reads
/// the HTTP snapshot instead.
const FIRST_STREAM_PATIENCE: Duration = Duration::from_secs(5);

/// Follows T3 and acts on what its threads do.
pub(crate) struct Watcher {
    /// Reads the snapshot: the operate client unless a read-only token was configured.
    reader: T3Client,
    /// Sends the stop commands.
    operate: T3Client,
    /// T3's shell stream, when push watching is on; the snapshot is polled while it is down.
    feed: Option<ShellFeed>,
    /// Whether the last view came from the stream (for logging the switch once).
    following_stream: Option<bool>,
    /// Whether T3 answered last time (for logging an outage once).
    t3_was_reachable: Option<bool>,
    timeouts: Timeouts,
    stalls: StallTracker,
    /// The stops being carried out, by thread.
    stops: HashMap<ThreadId, StopMemo>,
    /// Threads whose success cannot be confirmed because their detail cannot be read, with the
    /// error last logged: it is logged at WARN once per error, not every tick.
    unconfirmed: SaidOnce,
    /// What the last [`Watcher::watch`] pass concluded nothing from, and until when nothing can
    /// come of it without a change: see [`Watcher::pass_was_quiet`].
    last_pass: PassOutcome,
    /// The pass the control plane may skip, or visit the changed threads of: see
    /// [`Watcher::plan`].
    quiet: Option<QuietPass>,
    /// How many passes were skipped so far (for tests and benchmarks).
    skipped: u64,
    /// The stream's change counter, read just before the current view was taken from it.
    view_bumps: Option<u64>,
    /// The stream's count of snapshots that replaced its view, read just before the current view
    /// was taken from it ([`ShellFeed::replacements`]).
    view_replacements: Option<u64>,
    /// The quiet pass a tick visits only the changed threads of ([`Pass::Changed`]), until
    /// [`Watcher::pass_was_quiet`] says how that visit ended.
    partial_base: Option<QuietPass>,
    /// How many attempts the passes visited so far (for tests and benchmarks).
    visited: u64,
    /// The deadlines of the passes since the last whole one, per job: the quiet base's `until`
    /// is the earliest.
    deadlines: Deadlines,
    /// The jobs a pass over what changed visits or saw change (their deadlines are replaced by
    /// what it finds), until [`Watcher::pass_was_quiet`].
    partial_jobs: Vec<JobId>,
    /// How many passes visited only the attempts of changed threads so far.
    partial: u64,
    /// The live attempts by thread, made by the first quiet pass over a full read of them and
    /// patched since with what changed ([`LiveAttempts::changed_since`]).
    index: Option<LiveIndex>,
    /// How many times `index` was made.
    index_builds: u64,
    /// False when passes are never skipped (benchmarks measure the whole pass so).
    may_skip_passes: bool,
}

/// What a [`Watcher::watch`] pass decided, for knowing whether the next one may be skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PassOutcome {
    /// It left something for later that may be decided differently without any change (a
    /// thread missing, a detail that could not be read, a recording the ledger refused, a
    /// timeout not concluded): the next pass must run whole.
    Busy,
    /// It decided nothing but the moves it recorded, on the jobs of `recorded` (visited again by
    /// the next pass: their entries change with the move), and nothing else can be decided
    /// before `until` (the earliest turn, stall or answer deadline it met; `None`: no deadline
    /// at all) unless T3's view or the live attempts change.
    Quiet {
        deadlines: Vec<(JobId, DateTime<Utc>)>,
        recorded: Vec<JobId>,
    },
}

/// The deadlines the passes met, per job: the earliest instant at which each visited attempt
/// could call for something with nothing changed. Kept per job so that a pass over what changed
/// replaces its attempts' deadlines (an attempt that moved no longer holds its old one), and the
/// earliest of all is at hand.
///
/// A whole pass's deadlines are a min-heap made at once (O(n), no map of the fleet) and never
/// pushed to (a push could grow it: a copy of the fleet's deadlines in a tick that visits one
/// attempt); a pass over what changed notes its jobs as replaced and pushes their new deadlines
/// to a heap of their own (O(k log k)); an entry a replacement made stale is dropped when it
/// comes to the top.
#[derive(Debug, Default)]
struct Deadlines {
    /// The last whole pass's deadlines (and, after a compaction, those still standing).
    whole: BinaryHeap<Reverse<(DateTime<Utc>, JobId)>>,
    /// The deadlines the passes over what changed found since.
    since: BinaryHeap<Reverse<(DateTime<Utc>, JobId)>>,
    /// The jobs whose deadline a pass over what changed replaced since the last whole pass,
    /// with their earliest one now (`None`: none).
    replaced: HashMap<JobId, Option<DateTime<Utc>>>,
}

impl Deadlines {
    /// The deadlines of a whole pass, `all` (a job may come more than once: its earliest
    /// counts).
    fn of_pass(all: Vec<(JobId, DateTime<Utc>)>) -> Self {
        let entries: Vec<Reverse<(DateTime<Utc>, JobId)>> =
            all.into_iter().map(|(job, at)| Reverse((at, job))).collect();
        Self {
            whole: BinaryHeap::from(entries),
            since: BinaryHeap::new(),
            replaced: HashMap::new(),
        }
    }

    /// Forgets `job`'s deadlines: a pass over what changed visits it (or it is gone), and notes
    /// what it finds ([`Deadlines::note`]).
    fn forget(&mut self, job: JobId) {
        self.replaced.insert(job, None);
    }

    /// Notes `at` for `job`, forgotten before in this pass, unless it has an earlier one now.
    fn note(&mut self, job: JobId, at: DateTime<Utc>) {
        let held = self.replaced.entry(job).or_insert(None);
        if held.is_none_or(|held| at < held) {
            *held = Some(at);
            self.since.push(Reverse((at, job)));
        }
    }

    /// The earliest deadline of all.
    fn earliest(&mut self) -> Option<DateTime<Utc>> {
        // Between whole passes the replacements pile up (stale entries with far deadlines never
        // reach the top): once they outnumber the whole pass's, what stands is made one heap
        // again, so memory stays in proportion to the live attempts (amortized O(1) a note).
        if self.since.len() + self.replaced.len() > self.whole.len().max(1024) {
            self.compact();
        }
        let replaced = &self.replaced;
        earliest(
            Self::top(&mut self.whole, replaced),
            Self::top(&mut self.since, replaced),
        )
    }

    /// Keeps only the entries no replacement made stale, in one heap.
    fn compact(&mut self) {
        let replaced = std::mem::take(&mut self.replaced);
        let stands = |&Reverse((at, job)): &Reverse<(DateTime<Utc>, JobId)>| {
            replaced.get(&job).is_none_or(|now| *now == Some(at))
        };
        let mut all: Vec<_> = std::mem::take(&mut self.whole).into_vec();
        all.extend(std::mem::take(&mut self.since).into_vec());
        all.retain(stands);
        // A job noted twice at one instant stands twice: harmless (the same deadline).
        self.whole = BinaryHeap::from(all);
    }

    /// The earliest deadline in `heap` that no replacement made stale (those above it dropped).
    fn top(
        heap: &mut BinaryHeap<Reverse<(DateTime<Utc>, JobId)>>,
        replaced: &HashMap<JobId, Option<DateTime<Utc>>>,
    ) -> Option<DateTime<Utc>> {
        while let Some(&Reverse((at, job))) = heap.peek() {
            // Stale: its job's deadline was replaced by another (or by none).
            let stale = replaced.get(&job).is_some_and(|now| *now != Some(at));
            if !stale {
                return Some(at);
            }
            heap.pop();
        }
        None
    }
}

/// A pass that decided nothing (but the moves it recorded) on the shell stream's view: while the
/// stream shows the same sequence, the live attempts are the same version, it recorded nothing
/// and `now` is before `until`, a new pass would visit the same threads with the same inputs and
/// decide nothing again; while only some threads, live attempts or recorded jobs changed, only
/// theirs would differ.
#[derive(Debug, Clone)]
struct QuietPass {
    sequence: u64,
    /// The stream's change counter when that view was taken: a view replaced whole (a new
    /// snapshot after a reconnect, say from a T3 that restarted its sequence) bumps it even at
    /// the same sequence.
    bumps: Option<u64>,
    /// The version of the live attempts it watched ([`LiveAttempts::version`]).
    live: u64,
    /// The jobs whose moves it recorded: visited by the next pass whatever else changed.
    recorded: Vec<JobId>,
    /// The earliest deadline the passes since the last whole one met ([`Deadlines`]).
    until: Option<DateTime<Utc>>,
    /// [`crate::policy::Policies::budget_generation`] then: a budget lowered since moves the
    /// deadline of the pass's budget stop (`budget::turn_deadline`).
    budgets: u64,
    /// The stream's count of replaced views when that view was taken: the threads changed since
    /// are known only within one ([`ShellFeed::threads_changed`]).
    replacements: Option<u64>,
}

/// The live attempts (a copy: O(1), sharing the recorder's) and their jobs by thread.
struct LiveIndex {
    of: LiveAttempts,
    by_thread: HashMap<ThreadId, JobId>,
}

/// What a tick's pass over the live attempts visits: see [`Watcher::plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Nothing: nothing changed since a pass that decided nothing, and no deadline has come.
    Skip,
    /// Only the live attempts of these jobs (ordered, each once): the only ones whose threads T3
    /// changed, whose entries the ledger changed, or whose moves were recorded, since a pass
    /// that decided nothing else, and no deadline has come.
    Changed(Vec<JobId>),
    /// Every live attempt.
    Whole,
}

impl Watcher {
    pub(crate) fn new(operate: T3Client, timeouts: Timeouts) -> Self {
        Self {
            reader: operate.clone(),
            operate,
            feed: None,
            following_stream: None,
            t3_was_reachable: None,
            timeouts,
            unconfirmed: SaidOnce::default(),
            stalls: StallTracker::default(),
            stops: HashMap::new(),
            last_pass: PassOutcome::Busy,
            quiet: None,
            skipped: 0,
            view_bumps: None,
            view_replacements: None,
            partial_base: None,
            visited: 0,
            deadlines: Deadlines::default(),
            partial_jobs: Vec::new(),
            partial: 0,
            index: None,
            index_builds: 0,
            may_skip_passes: true,
        }
    }

    /// What the pass over `live` on `view` (read at `now`, with no thread to stop) must visit:
    ///
    /// - [`Pass::Skip`] when the view is the shell stream's at the same sequence as a pass that
    ///   decided nothing (T3 changed nothing since), `live` is the very version that pass watched
    ///   (the ledger changed nothing afk watches), that pass recorded nothing, and `now` is
    ///   before the earliest deadline that pass met (counted: [`Watcher::skipped_passes`]);
    /// - [`Pass::Changed`] in the same case but for what moved since: the attempts of the
    ///   threads T3's events changed ([`ShellFeed::threads_changed`]), of the jobs whose live
    ///   attempt the ledger changed ([`LiveAttempts::changed_since`]: afk's own moves, patched
    ///   in by the recorder) and of the jobs that pass recorded a move of, when the stream and
    ///   the live attempts can tell them and none of their threads is missing, deleted or
    ///   unreadable in `view` (judged only on the whole pass, which confirms absences against
    ///   T3's snapshot). What is remembered of the threads of attempts gone since is forgotten,
    ///   as the whole pass would;
    /// - [`Pass::Whole`] otherwise (polling, a snapshot that replaced the view, another writer's
    ///   change to the ledger, a deadline come, a thread being stopped).
    ///
    /// Every attempt left out would get from [`thread_event`], [`wait_event`] and [`stop_step`]
    /// the same inputs as at that quiet pass, and so the same "nothing": only what is visited
    /// changes, never what is decided.
    pub(crate) fn plan(
        &mut self,
        view: &Fleet,
        live: &LiveAttempts,
        stopping_any: bool,
        budgets: u64,
        now: DateTime<Utc>,
    ) -> Pass {
        // A base left by a tick that failed before it ended is stale.
        self.partial_base = None;
        self.partial_jobs.clear();
        let quiet = self.quiet.take().filter(|quiet| {
            self.may_skip_passes
                && !stopping_any
                && self.is_following_stream()
                && view.shows_waits()
                && quiet.budgets == budgets
                && quiet.until.is_none_or(|until| now < until)
        });
        let Some(quiet) = quiet else {
            return Pass::Whole;
        };
        // Unknown after a full read that found a change (another writer) or too many patches.
        let Some(changed_jobs) = live.changed_since(quiet.live) else {
            return Pass::Whole;
        };
        let same_view = quiet.sequence == view.sequence() && quiet.bumps == self.view_bumps;
        if same_view && changed_jobs.is_empty() && quiet.recorded.is_empty() {
            self.skipped += 1;
            self.quiet = Some(quiet);
            return Pass::Skip;
        }
        let changed_threads = if same_view {
            Vec::new()
        } else {
            let changed = match (&self.feed, quiet.replacements) {
                (Some(feed), Some(replacements)) => {
                    feed.threads_changed(replacements, quiet.sequence, view.sequence())
                }
                _ => None,
            };
            let Some(changed) = changed else {
                return Pass::Whole;
            };
            changed
        };
        // Made when the quiet pass ended (`Watcher::pass_was_quiet`) and patched here with what
        // changed since; made anew only if it was not (then what is gone is not known).
        let Some(gone) = self.index_live(live) else {
            return Pass::Whole;
        };
        for thread in &gone {
            self.stalls.forget(thread);
            self.unconfirmed.forget(thread);
        }
        let Some(index) = &self.index else {
            return Pass::Whole;
        };
        let mut jobs: BTreeSet<JobId> = (changed_threads.iter())
            .filter_map(|t| index.by_thread.get(t).copied())
            .chain(changed_jobs)
            .chain(quiet.recorded.iter().copied())
            .collect();
        // Their deadlines are replaced by what the visit finds; those gone have none.
        self.partial_jobs = jobs.iter().copied().collect();
        jobs.retain(|job| live.get(job).is_some());
        let visit = jobs;
        // As the whole pass confirms (`lacks_any`): a running attempt's thread missing; and any
        // thread afk cannot read. (A deferred dispatch's thread may not exist yet: resuming it
        // reads the view as the whole pass does.)
        let unsure = visit.iter().filter_map(|job| live.get(job)).any(|attempt| {
            let thread = &attempt.thread_id;
            (is_watched(attempt) && fleet_lacks(view, thread)) || view.unreadable(thread).is_some()
        });
        if unsure {
            return Pass::Whole;
        }
        self.partial += 1;
        self.partial_base = Some(quiet);
        Pass::Changed(visit.into_iter().collect())
    }

    /// Notes how the tick that just ran its pass over `live` on `view` ended: when the pass
    /// decided nothing but moves it recorded, ran on the stream's own view, nothing was being
    /// stopped and nothing else in the tick waits on time (`also`: the other steps' deadlines of
    /// the attempts visited, by job; `Err`: something is due now), the next ticks may skip it, or
    /// visit only what changed ([`Watcher::plan`]), until the earliest deadline met.
    pub(crate) fn pass_was_quiet(
        &mut self,
        view: &Fleet,
        on_stream_view: bool,
        live: &LiveAttempts,
        stopping_any: bool,
        also: Result<Vec<(JobId, DateTime<Utc>)>, ()>,
        budgets: u64,
    ) {
        let base = self.partial_base.take();
        let visited_jobs = std::mem::take(&mut self.partial_jobs);
        let outcome = std::mem::replace(&mut self.last_pass, PassOutcome::Busy);
        self.quiet = match (outcome, also) {
            (PassOutcome::Quiet { deadlines, recorded }, Ok(also))
                if on_stream_view && !stopping_any && self.is_following_stream() && view.shows_waits() =>
            {
                let mut found = deadlines;
                found.extend(also);
                if base.is_some() {
                    // A visit of what changed: the deadlines of the others stand; those of the
                    // jobs visited or gone are replaced by what it found.
                    for job in visited_jobs {
                        self.deadlines.forget(job);
                    }
                    for (job, at) in found {
                        self.deadlines.note(job, at);
                    }
                } else {
                    self.deadlines = Deadlines::of_pass(found);
                }
                Some(QuietPass {
                    sequence: view.sequence(),
                    bumps: self.view_bumps,
                    live: live.version(),
                    recorded,
                    until: self.deadlines.earliest(),
                    budgets,
                    replacements: self.view_replacements,
                })
            }
            _ => None,
        };
        if self.quiet.is_some() {
            // Now, on the tick that already walked them all (a whole pass after a full read), or
            // patched with what changed, not on the next tick that visits a changed thread,
            // which then costs what changed.
            self.index_live(live);
        } else if (self.index.as_ref()).is_some_and(|index| live.changed_since(index.of.version()).is_none())
        {
            // An index that can no longer be patched holds an old read alive: dropped.
            self.index = None;
        }
    }

    /// Brings the index of the live attempts by thread to `live`: patched with the jobs changed
    /// since the read it indexes, or made anew (counted) when those are not known or are many.
    /// The threads whose attempt is gone or has another thread since, when patched; `None` when
    /// made anew.
    fn index_live(&mut self, live: &LiveAttempts) -> Option<Vec<ThreadId>> {
        let changed = (self.index.as_ref())
            .and_then(|index| live.changed_since(index.of.version()))
            .filter(|jobs| jobs.len() <= (live.len() / 4).max(64));
        let (Some(index), Some(changed)) = (self.index.as_mut(), changed) else {
            self.index_builds += 1;
            let by_thread = live
                .iter()
                .map(|attempt| (attempt.thread_id.clone(), attempt.job_id))
                .collect();
            self.index = Some(LiveIndex {
                of: live.clone(),
                by_thread,
            });
            return None;
        };
        let mut gone = Vec::new();
        for job in &changed {
            let (old, new) = (index.of.get(job), live.get(job));
            if let Some(old) = old {
                if new.is_none_or(|new| new.thread_id != old.thread_id) {
                    index.by_thread.remove(&old.thread_id);
                    gone.push(old.thread_id.clone());
                }
            }
        }
        for job in &changed {
            if let Some(new) = live.get(job) {
                index.by_thread.insert(new.thread_id.clone(), *job);
            }
        }
        index.of = live.clone();
        Some(gone)
    }

    /// How many times the live attempts were indexed by thread (for tests and benchmarks).
    pub(crate) fn index_builds(&self) -> u64 {
        self.index_builds
    }

    /// Never skips a pass when `on` is false (the cost of the whole pass, for benchmarks).
    pub(crate) fn skip_quiet_passes(&mut self, on: bool) {
        self.may_skip_passes = on;
    }

    /// How many passes [`Watcher::plan`] skipped so far.
    pub(crate) fn skipped_passes(&self) -> u64 {
        self.skipped
    }

    /// How many passes visited only the attempts of changed threads so far ([`Pass::Changed`]).
    pub(crate) fn partial_passes(&self) -> u64 {
        self.partial
    }

    /// How many attempts the passes visited so far.
    pub(crate) fn visited_attempts(&self) -> u64 {
        self.visited
    }

    pub(crate) fn read_with(&mut self, reader: T3Client) {
        self.reader = reader;
    }

    pub(crate) fn follow(&mut self, feed: ShellFeed) {
        self.feed = Some(feed);
    }

    /// Ticks whenever a thread changes state in the stream (`None` without push watching).
    pub(crate) fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.feed.as_ref().map(ShellFeed::changes)
    }

    pub(crate) fn is_following_stream(&self) -> bool {
        self.following_stream == Some(true)
    }

    /// The event sequence of the shell stream's view now; `None` without a live, synchronized
    /// stream.
    pub(crate) fn stream_sequence(&self) -> Option<u64> {
        self.feed.as_ref()?.fleet().map(|fleet| fleet.sequence())
    }

    /// The T3 this watcher reads, as configured (it may carry a password: redact it to show it).
    pub(crate) fn base_url(&self) -> &str {
        self.reader.base_url()
    }

    /// T3's view of the fleet: the shell stream's while it is live, else the snapshot when
    /// `may_read` (afk is not leaving T3 alone after a refusal). `None` when it did not ask; the
    /// error when T3 could not be read, for the caller to say why afk waits: nothing is
    /// dispatched or watched until T3 answers.
    pub(crate) async fn view(&mut self, may_read: bool) -> Option<Result<Arc<Fleet>, T3Error>> {
        // Each switch (stream up or down, T3 reachable) is logged once, when it happens.
        let base = redact_url(self.reader.base_url()).into_owned();
        self.view_bumps = None;
        self.view_replacements = None;
        if let Some(feed) = &self.feed {
            if self.following_stream.is_none() && may_read {
                // The first view: the stream's first snapshot is usually on its way, and the HTTP
                // snapshot read beside it would hold the whole fleet twice at once.
                feed.settled(FIRST_STREAM_PATIENCE).await;
            }
            // Read before the view: a view replaced after this read bumps it past this value.
            self.view_bumps = Some(*feed.changes().borrow());
            self.view_replacements = Some(feed.replacements());
            if let Some(fleet) = feed.fleet() {
                if self.following_stream.replace(true) != Some(true) {
                    tracing::info!("following T3's shell stream at {base} ({} threads)", fleet.len());
                }
                self.t3_was_reachable = Some(true);
                return Some(Ok(fleet));
            }
            if self.following_stream.replace(false) == Some(true) {
                let status = feed.status();
                tracing::warn!("T3's shell stream is down ({status}); polling the snapshot until it is back");
            }
        }
        if !may_read {
            return None;
        }
        match self.reader.fleet().await {
            Ok(model) => {
                let snapshot = Arc::new(model);
                if self.t3_was_reachable.replace(true) != Some(true) {
                    tracing::info!("T3 at {base} is reachable ({} threads)", snapshot.len());
                }
                Some(Ok(snapshot))
            }
            Err(error) => {
                self.t3_was_reachable = Some(false);
                Some(Err(error))
            }
        }
    }

    /// `view`, unless it came from the stream and lacks the thread of a running attempt or of one
    /// being stopped: a stream can lag or stall, so a thread is judged gone (or stopped) only on
    /// T3's own snapshot, which then replaces the view. `None` when that snapshot cannot be read:
    /// nothing is concluded this tick.
    pub(crate) async fn confirmed(
        &self,
        view: Arc<Fleet>,
        live: &[&WatchedAttempt],
        to_stop: &[(Job, Attempt)],
    ) -> Option<Arc<Fleet>> {
        if !self.is_following_stream() || !lacks_any(&view, live, to_stop) {
            return Some(view);
        }
        match self.reader.fleet().await {
            Ok(fleet) => Some(Arc::new(fleet)),
            Err(error) => {
                tracing::debug!(
                    "cannot confirm the stream's view with a snapshot, concluding nothing: {error}"
                );
                None
            }
        }
    }

    /// Records the event each running attempt's thread calls for: of every live attempt when
    /// `whole`, else of those in `live` only (a [`Pass::Changed`], the others unchanged since a
    /// quiet pass: what is remembered of them stays). Returns true when it recorded any.
    pub(crate) async fn watch(
        &mut self,
        recorder: &mut Recorder,
        fleet: &Fleet,
        live: &[&WatchedAttempt],
        whole: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, ControlError> {
        // Until this pass ends: a pass cut short by an error leaves no quiet base.
        self.last_pass = PassOutcome::Busy;
        if whole {
            self.stalls.pass += 1;
        }
        self.visited += live.len() as u64;
        let mut absent = HashSet::new();
        // The jobs whose moves this pass recorded.
        let mut recorded = Vec::new();
        // Whether this pass left anything to retry, and per job the earliest time at which one
        // of its "nothing yet" could turn into an event with no change at T3.
        let mut busy = false;
        // Sized once for a whole pass: grown by doubling, it was copied over and over.
        let mut deadlines = Vec::with_capacity(if whole { live.len() } else { 0 });
        let shell = self.waits_view(fleet, live).await;
        // Whether a thread waits for a person: from the view itself when it is the shell's, else
        // from the shell read beside it; `None` when neither can say.
        let waits_for_person = |thread: &ThreadId| {
            if fleet.shows_waits() {
                fleet.thread(thread).map(|t| t.waits_for_person())
            } else {
                shell.as_ref()?.waits_for_person(thread)
            }
        };
        for &attempt in live {
            let waiting = attempt.job_state == JobState::NeedsInput;
            if attempt.state != AttemptState::Running || !(attempt.job_state == JobState::Running || waiting)
            {
                continue;
            }
            if let Some(reason) = fleet.unreadable(&attempt.thread_id) {
                // Unknown until T3 describes it readably: neither lost nor ended.
                self.stalls.unreadable(&attempt.thread_id, reason);
                continue;
            }
            if !whole {
                // Readable again (the whole pass's sweep below does this for all).
                self.stalls.warned_unreadable.forget(&attempt.thread_id);
            }
            let seen = sighting(
                fleet,
                &attempt.thread_id,
                Purpose::Watch,
                &mut self.stalls,
                &mut absent,
                now,
                self.timeouts.lost_after,
            );
            // While an attempt runs its row changes no more, so `updated_at` is when it started
            // running: time spent dispatching (T3 down, a rejected token) is not held against the
            // agent, nor is the time its thread waited for people. A negative span (clock stepped
            // back) reads as zero: never a timeout.
            let running_for = (now - attempt.updated_at)
                .to_std()
                .unwrap_or_default()
                .saturating_sub(attempt.input_waited);
            // Whether the thread waits for a person; `None` when T3's shell cannot say this tick.
            // A thread the shell does not list says nothing either way (never "answered").
            let asks = waits_for_person(&attempt.thread_id);
            let waited = attempt
                .input_wait_since
                .map(|since| (now - since).to_std().unwrap_or_default());
            let Some(event) = wait_event(&seen, waiting, asks, waited, &self.timeouts).or_else(|| {
                (!waiting)
                    .then(|| thread_event(&seen, running_for, &self.timeouts))
                    .flatten()
            }) else {
                if matches!(seen, Sighting::Missing { .. }) {
                    // Counted per view: the next pass must count it again.
                    busy = true;
                }
                if let Some(at) = quiet_until(&seen, waiting, asks, running_for, waited, &self.timeouts, now)
                {
                    deadlines.push((attempt.job_id, at));
                }
                continue;
            };
            // Every branch below records (then the next pass visits the job again: its move
            // changes its live attempt), or leaves the attempt to a later pass (busy).
            // On T3 a thread waiting for a person looks stalled (its `updatedAt` stands still):
            // while the shell cannot tell whether it waits, no timeout is concluded.
            let may_wait = fleet
                .thread(&attempt.thread_id)
                .is_some_and(|t| ThreadState::of(Some(t)) == ThreadState::Running);
            if asks.is_none() && may_wait && matches!(event, Event::TimedOut { .. }) {
                busy = true;
                continue;
            }
            // A follow-up turn T3 has not started yet: the thread still shows the turn it follows
            // up, which ended before the follow-up was recorded.
            // One T3 never starts is a stall like any other.
            let event = if matches!(event, Event::ThreadSucceeded | Event::ThreadInterrupted)
                && attempt
                    .follow_up_at
                    .is_some_and(|since| ended_before(fleet, &attempt.thread_id, since))
            {
                if running_for <= self.timeouts.stall {
                    busy = true;
                    continue;
                }
                Event::TimedOut {
                    reason: format!(
                        "T3 did not start the follow-up turn within the stall timeout ({})",
                        humantime::format_duration(self.timeouts.stall)
                    ),
                }
            } else {
                event
            };
            let event = match event {
                // What the agent asks is read once per wait, when it begins.
                Event::InputRequested { .. } => Event::InputRequested {
                    question: self.question(&attempt.thread_id).await,
                },
                other => other,
            };
            if event == Event::InputAnswered {
                // The thread's `updatedAt` may not have moved for the whole wait: its stall clock
                // starts again now.
                self.stalls.seen.remove(&attempt.thread_id);
            }
            let event = match event {
                // T3 turns an interrupted turn into a completed one within half a second: a
                // success is recorded only when the thread's detail shows no interrupt.
                Event::ThreadSucceeded => match self.interrupted(fleet, &attempt.thread_id).await {
                    Some(true) => Event::ThreadInterrupted,
                    Some(false) => Event::ThreadSucceeded,
                    None => {
                        busy = true;
                        continue;
                    }
                },
                other => other,
            };
            // Only now is the whole job read: a quiet tick reads no issue text at all.
            let Some(job) = recorder.ledger().job(attempt.job_id).await? else {
                busy = true;
                continue;
            };
            let span = job_span(&job.issue, job.id, Some(attempt.number), Some(&attempt.thread_id));
            match recorder.record(&job, &event, None, now).instrument(span).await? {
                Some(_) => recorded.push(attempt.job_id),
                // Refused: the job moved under a stale read; decided again next pass.
                None => busy = true,
            }
        }
        // Forget threads this pass did not observe, and absences that did not last (a partial
        // visit follows a quiet pass, which left no absence, and observes no others).
        if whole {
            let pass = self.stalls.pass;
            self.stalls.seen.retain(|_, entry| entry.2 == pass);
            self.stalls
                .warned_unreadable
                .retain(|thread| fleet.unreadable(thread).is_some());
            self.stalls.absent.retain(|thread, _| absent.contains(thread));
            self.unconfirmed.retain(|thread| fleet.thread(thread).is_some());
        }
        let any = !recorded.is_empty();
        self.last_pass = if busy || !absent.is_empty() {
            PassOutcome::Busy
        } else {
            PassOutcome::Quiet { deadlines, recorded }
        };
        Ok(any)
    }

    /// Who waits for a person in T3's shell view, read over HTTP (`GET /api/orchestration/shell`)
    /// when `fleet` is the snapshot's (which cannot say so) and a running or waiting attempt's
    /// thread runs in it; `None` when not needed or when T3 does not answer (then nothing about a
    /// wait is concluded this tick). Only the waits are kept: the snapshot's view is held
    /// meanwhile, and a second view of the whole fleet beside it doubled `afk run`'s memory.
    async fn waits_view(&mut self, fleet: &Fleet, live: &[&WatchedAttempt]) -> Option<ShellWaits> {
        if fleet.shows_waits() {
            return None;
        }
        let needed = live.iter().any(|a| {
            a.state == AttemptState::Running
                && matches!(a.job_state, JobState::Running | JobState::NeedsInput)
                && fleet
                    .thread(&a.thread_id)
                    .is_some_and(|t| ThreadState::of(Some(t)) == ThreadState::Running)
        });
        if !needed {
            return None;
        }
        match self.reader.shell_waits().await {
            Ok(shell) => Some(shell),
            Err(error) => {
                tracing::debug!("cannot read T3's shell to see which threads wait for a person: {error}");
                None
            }
        }
    }

    /// What the agent of `thread` asks, for people (the status comment, the event log), from the
    /// thread's detail; when that cannot be read, a line saying so (the wait is recorded all the
    /// same: the question is only shown, never acted on).
    async fn question(&self, thread: &ThreadId) -> String {
        match self.reader.thread_detail(thread).await {
            Ok(Some(detail)) => describe_requests(&detail.thread.pending_requests()),
            Ok(None) => "the agent waits for a person in T3 (T3 has no detail for its thread)".into(),
            Err(error) => {
                format!("the agent waits for a person in T3 (afk cannot read what it asks: {error})")
            }
        }
    }

    /// Whether the latest turn of `thread` (which T3's view shows completed) was interrupted, as
    /// its detail shows ([`t3_client::wire::Thread::turn_was_interrupted`]); `None` when that
    /// cannot be told now (T3 did not answer, or no longer has the thread): nothing is concluded
    /// this tick.
    ///
    /// A detail that cannot be read is said at WARN (once per distinct error): the attempt stays
    /// running, never recorded succeeded unconfirmed, so a person must see why.
    async fn interrupted(&mut self, fleet: &Fleet, thread: &ThreadId) -> Option<bool> {
        let turn = fleet.thread(thread)?.turn_id()?.to_id();
        let problem = match self.reader.thread_detail(thread).await {
            Ok(Some(detail)) => {
                self.unconfirmed.forget(thread);
                return Some(detail.thread.turn_was_interrupted(&turn));
            }
            Ok(None) => "T3 has no detail for it".to_owned(),
            Err(error) => error.to_string(),
        };
        if self.unconfirmed.first(thread, &problem) {
            tracing::warn!(
                thread = thread.as_str(),
                "thread {thread} completed, but afk cannot read its detail to confirm the turn was not interrupted, so its attempt stays running until it can: {problem}"
            );
        }
        None
    }

    /// Stops the thread of every attempt the ledger marked for stopping (`to_stop`, as read after
    /// the watcher's pass), as [`stop_step`] says; a confirmed stop is marked in the ledger.
    /// Returns the jobs whose thread is still being stopped: they neither settle nor get a new
    /// attempt, and they count against the limits.
    pub(crate) async fn stop_threads(
        &mut self,
        ledger: &Ledger,
        fleet: &Fleet,
        to_stop: Vec<(Job, Attempt)>,
        now: DateTime<Utc>,
    ) -> Result<HashMap<JobId, Job>, ControlError> {
        let mut absent = HashSet::new();
        let mut stopping = HashMap::new();
        // The threads being stopped this pass: what afk remembers of others' stops is forgotten.
        let stopped_now: HashSet<ThreadId> = to_stop.iter().map(|(_, a)| a.thread_id.clone()).collect();
        for (job, attempt) in to_stop {
            let thread = &attempt.thread_id;
            if let Some(reason) = fleet.unreadable(thread) {
                // Unknown: still being stopped, as far as afk can tell.
                self.stalls.unreadable(thread, reason);
                stopping.insert(job.id, job);
                continue;
            }
            let seen = sighting(
                fleet,
                thread,
                Purpose::Stop,
                &mut self.stalls,
                &mut absent,
                now,
                self.timeouts.lost_after,
            );
            let failed = |what: &str, error: T3Error| warn_stop(&job, &attempt, what, &error);
            let updated_at = fleet.thread(thread).map(|t| t.updated_at);
            let memo = self.stops.entry(thread.clone()).or_insert(StopMemo {
                sent: None,
                idle_since: None,
            });
            let idle = match &seen {
                Sighting::Seen {
                    has_turn: false,
                    session: None | Some(SessionStatus::Starting),
                    ..
                } => Some(false),
                Sighting::Seen {
                    has_turn: false,
                    session: Some(SessionStatus::Stopped),
                    ..
                } => Some(true),
                _ => None,
            };
            let idle_for = match (idle, memo.idle_since) {
                (Some(stopped), Some((was, since))) if stopped == was => {
                    (now - since).to_std().unwrap_or_default()
                }
                (Some(stopped), _) => {
                    memo.idle_since = Some((stopped, now));
                    Duration::ZERO
                }
                (None, _) => {
                    memo.idle_since = None;
                    Duration::ZERO
                }
            };
            let sent = match memo.sent {
                None => StopSent::Nothing,
                Some((then, at))
                    if then == updated_at && (now - at).to_std().unwrap_or_default() < STOP_RESEND_AFTER =>
                {
                    StopSent::Unanswered
                }
                Some(_) => StopSent::Unheeded,
            };
            let step = stop_step(&seen, sent, idle_for);
            match step {
                StopStep::Stopped => {
                    tracing::info!(
                        issue = %job.issue,
                        job = job.id.0,
                        attempt = attempt.number.0,
                        thread = thread.as_str(),
                        "{} attempt {}: thread {thread} is not working; stopped",
                        job.issue,
                        attempt.number
                    );
                    self.stops.remove(thread);
                    ledger.mark_thread_stopped(attempt.id).await?;
                    continue;
                }
                StopStep::Wait => {}
                // Only a command T3 took counts as sent: one that never reached it is sent again
                // at the next tick, not after STOP_RESEND_AFTER.
                StopStep::Delete => match self.operate.delete_thread(thread, CommandId::generate()).await {
                    Ok(_) => memo.sent = Some((updated_at, now)),
                    Err(error) => failed("delete it", error),
                },
                StopStep::StopSession => {
                    if sent == StopSent::Unheeded {
                        tracing::debug!(
                            "thread {thread} still works after its stop; stopping its session again"
                        );
                    }
                    match self.operate.stop_session(thread, CommandId::generate()).await {
                        Ok(_) => memo.sent = Some((updated_at, now)),
                        Err(error) => failed("stop its session", error),
                    }
                }
            }
            stopping.insert(job.id, job);
        }
        self.stalls
            .stop_absent
            .retain(|thread, _| absent.contains(thread));
        self.stops.retain(|thread, _| stopped_now.contains(thread));
        Ok(stopping)
    }

    /// Hands timed-out and lost jobs to the retry policy, once their thread is stopped
    /// (`stopping` lists the jobs whose thread is not): a retry must never run beside a thread
    /// that is still working on the same issue.
    pub(crate) async fn settle(
        &self,
        recorder: &mut Recorder,
        stopping: &HashMap<JobId, Job>,
        now: DateTime<Utc>,
    ) -> Result<(), ControlError> {
        // Reused while no job changed since the last tick's read (a quiet tick reads nothing).
        let ended = recorder.jobs_to_settle().await?;
        for job in ended {
            if !stopping.contains_key(&job.id) {
                recorder.record(&job, &Event::Settle, None, now).await?;
            }
        }
        Ok(())
    }
}

fn warn_stop(job: &Job, attempt: &Attempt, what: &str, error: &T3Error) {
    let hint = if error.is_credential_problem() {
        " (check the T3 token: [t3.token] or token_file)"
    } else {
        ""
    };
    tracing::warn!(
        issue = %job.issue,
        job = job.id.0,
        attempt = attempt.number.0,
        thread = attempt.thread_id.as_str(),
        "{} attempt {}: cannot {what} of thread {} yet: {error}{hint}",
        job.issue,
        attempt.number,
        attempt.thread_id
    );
}

/// The earlier of two optional instants (`None`: never).
pub(crate) fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// For an attempt whose thread T3 shows as `sighting` and for which [`wait_event`] and
/// [`thread_event`] decided nothing at `now` (with the same arguments), the earliest instant at
/// which they could decide something while T3's view and the ledger stay as they are: the turn
/// timeout and the stall timeout of a starting or running thread, the answer timeout of a wait
/// for a person. `None`: nothing can happen without a change. An instant at or before which
/// both still decide nothing (the timeouts fire strictly after their limit).
fn quiet_until(
    sighting: &Sighting,
    waiting: bool,
    asks: Option<bool>,
    running_for: Duration,
    waited: Option<Duration>,
    timeouts: &Timeouts,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let after = |limit: Duration, spent: Duration| {
        now.checked_add_signed(chrono::Duration::from_std(limit.saturating_sub(spent)).ok()?)
    };
    let Sighting::Seen {
        state, unchanged_for, ..
    } = sighting
    else {
        return None;
    };
    let working = matches!(state, ThreadState::Starting | ThreadState::Running);
    match (waiting, working) {
        (false, true) => earliest(
            after(timeouts.turn, running_for),
            after(timeouts.stall, *unchanged_for),
        ),
        (true, true) if *state == ThreadState::Running && asks == Some(true) => {
            after(timeouts.answer, waited.unwrap_or_default())
        }
        _ => None,
    }
}

/// True when the latest turn of `thread` ended before `since` (when a follow-up was recorded).
/// T3's clock against afk's: on one host they agree; across hosts a skew of more than the gap
/// between a turn's end and its follow-up would misread which turn T3 shows.
fn ended_before(fleet: &Fleet, thread: &ThreadId, since: DateTime<Utc>) -> bool {
    fleet
        .thread(thread)
        .and_then(|t| t.latest_turn.as_ref())
        .is_some_and(|turn| turn.completed_at.unwrap_or(turn.requested_at).0 < since)
}

/// True when `fleet` lacks (or shows deleted) the thread of a running attempt or of one being
/// stopped: what a lagging or stalled stream would show wrongly, so it is checked against T3's
/// snapshot before anything is concluded from it.
fn lacks_any(fleet: &Fleet, live: &[&WatchedAttempt], to_stop: &[(Job, Attempt)]) -> bool {
    let lacks = |thread_id: &ThreadId| fleet_lacks(fleet, thread_id);
    live.iter().filter(|a| is_watched(a)).any(|a| lacks(&a.thread_id))
        || to_stop.iter().any(|(_, a)| lacks(&a.thread_id))
}

/// True for an attempt whose thread the watcher judges (running, its job running or waiting for
/// a person): its thread missing from the view is concluded on only after T3's snapshot.
fn is_watched(attempt: &WatchedAttempt) -> bool {
    attempt.state == AttemptState::Running
        && matches!(attempt.job_state, JobState::Running | JobState::NeedsInput)
}

/// True when `fleet` lacks the thread `id` or shows it deleted.
fn fleet_lacks(fleet: &Fleet, id: &ThreadId) -> bool {
    fleet.thread(id).is_none_or(|thread| thread.deleted_at.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts() -> Timeouts {
        Timeouts {
            stall: Duration::from_secs(60),
            turn: Duration::from_secs(600),
            answer: Duration::from_secs(3600),
            lost_after: Duration::from_secs(5),
        }
    }

    fn seen(state: ThreadState, has_turn: bool, unchanged_secs: u64) -> Sighting {
        Sighting::Seen {
            state,
            has_turn,
            session: Some(SessionStatus::Running),
            unchanged_for: Duration::from_secs(unchanged_secs),
        }
    }

    fn with_session(state: ThreadState, has_turn: bool, session: Option<SessionStatus>) -> Sighting {
        Sighting::Seen {
            state,
            has_turn,
            session,
            unchanged_for: Duration::ZERO,
        }
    }

    fn failed(reason: Option<&str>) -> ThreadState {
        ThreadState::Failed {
            reason: reason.map(str::to_owned),
        }
    }

    #[test]
    fn the_deadlines_kept_per_job_give_the_earliest_and_a_visit_replaces_its_jobs() {
        let t0 = Utc::now();
        let at = |minutes: i64| t0 + chrono::Duration::minutes(minutes);
        // A whole pass: a job may come twice (the watcher's deadline and a budget's).
        let mut book = Deadlines::of_pass(vec![
            (JobId(1), at(30)),
            (JobId(2), at(10)),
            (JobId(1), at(5)),
            (JobId(3), at(20)),
        ]);
        assert_eq!(book.earliest(), Some(at(5)), "job 1's earlier one");
        // A visit of job 1 (moved: its old deadline no longer holds) and job 2 (gone).
        book.forget(JobId(1));
        book.forget(JobId(2));
        assert_eq!(book.earliest(), Some(at(20)), "job 3's stands");
        book.note(JobId(1), at(50));
        book.note(JobId(1), at(40));
        book.note(JobId(1), at(45));
        assert_eq!(book.earliest(), Some(at(20)));
        // A visit of job 3 finds two (the watcher's and a budget's): the earlier counts.
        book.forget(JobId(3));
        book.note(JobId(3), at(25));
        book.note(JobId(3), at(35));
        assert_eq!(book.earliest(), Some(at(25)), "its old one no longer holds");
        book.forget(JobId(3));
        assert_eq!(book.earliest(), Some(at(40)), "job 1's earliest of its three");
        book.forget(JobId(1));
        assert_eq!(book.earliest(), None);
        assert!(
            book.whole.is_empty() && book.since.is_empty(),
            "stale entries dropped"
        );
        // The next whole pass starts afresh.
        let mut book = Deadlines::of_pass(vec![(JobId(2), at(7)), (JobId(1), at(8))]);
        assert_eq!(book.earliest(), Some(at(7)));
        // Many passes over what changed without a whole one: what piles up is compacted, and
        // what stands is kept (job 2's first deadline, job 1's last).
        for pass in 0..5_000i64 {
            book.forget(JobId(1));
            book.note(JobId(1), at(10_000 - pass));
            assert_eq!(book.earliest(), Some(at(7)));
        }
        assert!(book.whole.len() + book.since.len() + book.replaced.len() <= 2 * 1024 + 4);
        book.forget(JobId(2));
        assert_eq!(book.earliest(), Some(at(10_000 - 4_999)));
    }

    #[test]
    fn every_thread_state_calls_for_its_event() {
        use ThreadState::{Interrupted, Lost, Running, Starting, Succeeded};
        let turn_timeout = || timed_out("ran longer than the turn timeout of 10m");
        let stalled = || timed_out("stalled: no change in T3 for 1m");
        let missing = |for_good| Sighting::Missing { for_good };
        let lost = Some(Event::ThreadLost);
        const NO_REASON: &str = "the turn ended in error (T3 gave no reason)";
        // (what T3 shows, running for seconds, the event, why)
        #[rustfmt::skip]
        let cases = [
            (seen(Running, true, 10), 100, None, "working within its limits"),
            (seen(Starting, false, 10), 100, None, "its turn not admitted yet"),
            (seen(Running, true, 10), 601, turn_timeout(), "past the turn timeout"),
            (seen(Running, true, 61), 100, stalled(), "no change for longer than the stall timeout"),
            (seen(Running, true, 61), 601, turn_timeout(), "the turn timeout is named first"),
            (seen(Starting, false, 61), 100, stalled(), "a thread whose turn never starts stalls"),
            (seen(Succeeded, true, 0), 100, Some(Event::ThreadSucceeded), "succeeded"),
            (seen(Succeeded, true, 0), 601, Some(Event::ThreadSucceeded), "an ended turn is no timeout"),
            (seen(failed(Some("rate limited")), true, 0), 100, thread_failed("rate limited"), "T3's reason"),
            (seen(failed(None), true, 0), 100, thread_failed(NO_REASON), "failed without a reason"),
            (seen(Interrupted, true, 0), 100, Some(Event::ThreadInterrupted), "a person interrupted it"),
            (seen(Lost, true, 0), 100, lost.clone(), "deleted in T3: lost at once"),
            (missing(false), 100, None, "missing from one view: not yet"),
            (missing(true), 100, lost, "missing for good"),
        ];
        for (sighting, running_secs, expected, why) in cases {
            let running_for = Duration::from_secs(running_secs);
            let event = thread_event(&sighting, running_for, &timeouts());
            assert_eq!(event, expected, "{why}: {sighting:?}");
        }
    }

    fn timed_out(reason: &str) -> Option<Event> {
        Some(Event::TimedOut {
            reason: reason.to_owned(),
        })
    }

    fn thread_failed(error: &str) -> Option<Event> {
        Some(Event::ThreadFailed {
            error: error.to_owned(),
        })
    }

    #[test]
    fn a_wait_for_a_person_is_never_timed_out_and_ends_when_answered_or_unanswered_too_long() {
        use ThreadState::{Running, Starting, Succeeded};
        let asks = || {
            Some(Event::InputRequested {
                question: String::new(),
            })
        };
        let unanswered = |secs| {
            Some(Event::NobodyAnswered {
                waited: Duration::from_secs(secs),
                limit: Duration::from_secs(3600),
            })
        };
        let hours = |h: u64| Some(Duration::from_secs(h * 3600));
        // (what T3 shows, the job waits, the thread asks, waited, the event, why)
        #[rustfmt::skip]
        let cases = [
            (seen(Running, true, 10), false, Some(true), None, asks(), "a running thread asks: the job waits"),
            (seen(Running, true, 10), false, Some(false), None, None, "a running thread that does not ask: the timeouts decide"),
            (seen(Running, true, 10), false, None, None, None, "T3's shell cannot say: nothing concluded"),
            (seen(Starting, false, 10), false, Some(true), None, None, "a thread not running yet does not ask"),
            (seen(Running, true, 9_999), true, Some(true), hours(0), None, "waiting: never stalled"),
            (seen(Running, true, 10), true, Some(true), Some(Duration::from_secs(3599)), None, "within the answer timeout"),
            (seen(Running, true, 10), true, Some(true), Some(Duration::from_secs(3601)), unanswered(3601), "past it"),
            (seen(Running, true, 10), true, Some(false), hours(5), Some(Event::InputAnswered), "answered"),
            (seen(Running, true, 10), true, None, hours(5), None, "cannot tell: it waits on"),
            (seen(Succeeded, true, 0), true, Some(false), hours(1), Some(Event::ThreadSucceeded), "answered and done between two looks"),
            (seen(failed(Some("boom")), true, 0), true, None, hours(1), thread_failed("boom"), "ended while waiting"),
            (Sighting::Missing { for_good: true }, true, None, hours(1), Some(Event::ThreadLost), "gone while waiting"),
            (seen(Starting, false, 9_999), true, None, hours(1), None, "not back yet, never a stall"),
        ];
        for (sighting, waiting, asks, waited, expected, why) in cases {
            assert_eq!(
                wait_event(&sighting, waiting, asks, waited, &timeouts()),
                expected,
                "{why}: {sighting:?}"
            );
        }
    }

    #[test]
    fn nothing_is_decided_before_a_quiet_pass_deadline_and_something_is_just_after_it() {
        use ThreadState::{Running, Starting};
        let t = timeouts();
        let now = Utc::now();
        let secs = Duration::from_secs;
        // (state, the job waits, the thread asks, running for, unchanged for, waited, the
        // deadline in seconds from now, why)
        #[rustfmt::skip]
        let cases = [
            (Running, false, Some(false), 100, 10, None, Some(50), "the stall comes first"),
            (Running, false, Some(false), 590, 10, None, Some(10), "the turn timeout comes first"),
            (Starting, false, None, 0, 0, None, Some(60), "a turn that never starts stalls"),
            (Running, true, Some(true), 0, 9_999, Some(3_000), Some(600), "the answer timeout"),
            (Running, true, None, 0, 0, Some(10), None, "the shell cannot say: nothing without a change"),
            (Starting, true, None, 0, 0, Some(10), None, "a waiting thread not back yet is never timed out"),
        ];
        for (state, waiting, asks, running, unchanged, waited, expected, why) in cases {
            let decide = |later: Duration| {
                let seen = Sighting::Seen {
                    state: state.clone(),
                    has_turn: true,
                    session: Some(SessionStatus::Running),
                    unchanged_for: secs(unchanged) + later,
                };
                let waited = waited.map(|w| secs(w) + later);
                wait_event(&seen, waiting, asks, waited, &t).or_else(|| {
                    (!waiting)
                        .then(|| thread_event(&seen, secs(running) + later, &t))
                        .flatten()
                })
            };
            assert_eq!(decide(Duration::ZERO), None, "{why}: quiet now");
            let seen = Sighting::Seen {
                state: state.clone(),
                has_turn: true,
                session: Some(SessionStatus::Running),
                unchanged_for: secs(unchanged),
            };
            let until = quiet_until(&seen, waiting, asks, secs(running), waited.map(secs), &t, now);
            let left = until.map(|u| (u - now).to_std().expect("a deadline ahead"));
            assert_eq!(left, expected.map(secs), "{why}");
            match left {
                Some(left) => {
                    assert_eq!(decide(left), None, "{why}: nothing at the deadline itself");
                    assert!(
                        decide(left + Duration::from_millis(1)).is_some(),
                        "{why}: something just after it"
                    );
                }
                None => {
                    for later in [secs(3_600), secs(1_000 * 3_600)] {
                        assert_eq!(decide(later), None, "{why}: nothing ever");
                    }
                }
            }
        }
    }

    #[test]
    fn what_the_agent_asks_reads_as_its_questions_with_their_offered_answers() {
        use t3_client::wire::{Question, QuestionOption};
        let question = Question {
            id: "q1".into(),
            header: Some("Schema".into()),
            question: "May I drop the old table?".into(),
            options: vec![
                QuestionOption {
                    label: "yes".into(),
                    description: None,
                },
                QuestionOption {
                    label: "no".into(),
                    description: Some("keep it".into()),
                },
            ],
        };
        let requests = [
            PendingRequest::UserInput {
                request_id: Some("r1".into()),
                questions: vec![question],
            },
            PendingRequest::Approval {
                request_id: None,
                summary: "Command approval requested".into(),
                detail: Some("rm -rf build".into()),
            },
        ];
        assert_eq!(
            describe_requests(&requests),
            "Schema: May I drop the old table? (answers offered: yes / no)\nCommand approval requested: rm -rf build"
        );
        assert!(describe_requests(&[]).contains("names no open question yet"));
        let diff = PendingRequest::Approval {
            request_id: None,
            summary: "File change approval requested".into(),
            detail: Some("é".repeat(70_000)),
        };
        let shown = describe_requests(&[diff]);
        assert_eq!(
            shown.chars().count(),
            MAX_QUESTION_CHARS + "… (the rest in T3)".chars().count()
        );
        assert!(shown.ends_with("… (the rest in T3)"), "{shown:.80}");
    }

    #[test]
    fn a_stop_is_sent_once_and_again_only_while_t3_shows_the_thread_working() {
        use SessionStatus as S;
        use StopSent::{Nothing, Unanswered, Unheeded};
        use StopStep::{Delete, StopSession, Stopped, Wait};
        use ThreadState::{Interrupted, Lost, Running, Starting, Succeeded};
        let soon = Duration::from_secs(1);
        let long = STARTING_PATIENCE + soon;
        // (what T3 shows, what was sent, starting for, the step, why)
        #[rustfmt::skip]
        let cases = [
            (seen(Running, true, 0), Nothing, soon, StopSession, "working: its session is stopped, never interrupted"),
            (seen(Running, true, 0), Unanswered, soon, Wait, "stopped once: T3 has not moved since"),
            (seen(Running, true, 0), Unheeded, soon, StopSession, "T3 moved on and shows it working: again"),
            (with_session(Starting, true, Some(S::Starting)), Nothing, soon, StopSession, "its turn about to start"),
            (with_session(Starting, false, Some(S::Starting)), Nothing, soon, Wait,
                "its session is starting: a delete or an interrupt now would not stop the agent it spawns"),
            (with_session(Starting, false, Some(S::Starting)), Nothing, long, StopSession,
                "a session that never comes up is stopped all the same"),
            (with_session(Running, false, Some(S::Running)), Nothing, soon, StopSession, "up, its turn not shown yet"),
            (with_session(Starting, false, None), Nothing, soon, Wait,
                "neither a turn nor a session: a view that lags T3 may not show a session that starts"),
            (with_session(Starting, false, None), Nothing, NO_SESSION_GRACE, StopSession,
                "still none after the grace: stopped, then deleted once the session reads stopped"),
            (with_session(Starting, false, None), Unanswered, soon, Wait, "stopped once: T3 has not moved since"),
            (with_session(Starting, false, Some(S::Stopped)), Unanswered, soon, Wait, "deleted once: T3 has not moved since"),
            (with_session(Starting, false, Some(S::Stopped)), Nothing, soon, Wait,
                "stopped before any turn: maybe a stop that raced a session start, which brings it back"),
            (with_session(Starting, false, Some(S::Stopped)), Unheeded, NO_SESSION_GRACE, Delete,
                "stopped before any turn for the grace: nothing runs, delete"),
            (with_session(Starting, false, Some(S::Stopped)), Unheeded, long, Delete,
                "and never a stop again, which would leave the attempt stopping for ever"),
            (seen(Succeeded, true, 0), Unanswered, soon, Stopped, "ended"),
            (seen(failed(None), true, 0), Nothing, soon, Stopped, "failed"),
            (seen(Interrupted, true, 0), Nothing, soon, Stopped, "interrupted"),
            (seen(Lost, false, 0), Nothing, soon, Stopped, "deleted"),
            (Sighting::Missing { for_good: false }, Nothing, soon, Wait, "a request in flight may still create it"),
            (Sighting::Missing { for_good: true }, Unanswered, soon, Stopped, "gone for good"),
        ];
        for (sighting, sent, idle_for, expected, why) in cases {
            assert_eq!(
                stop_step(&sighting, sent, idle_for),
                expected,
                "{why}: {sighting:?} after {sent:?}"
            );
        }
    }
}
