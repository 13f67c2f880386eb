//! A quiet tick in push mode (issue 18): what `ControlPlane::tick` costs when afk follows T3's
//! shell stream (`orchestration.subscribeShell`, the default `[watch] push = true`) and nothing
//! changed at T3 or in the sources, at 1,000, 10,000 and 100,000 running threads.
//!
//! Run with `cargo bench -p afk --bench quiet`; `AFK_QUIET_SIZES=1000,10000` picks other sizes
//! (the first is the baseline of the ratio column). Prints a Markdown table on stdout; progress
//! goes to stderr. `AFK_QUIET_SPIN=SECS` then ticks the largest fleet for SECS more seconds with
//! the pass skipped, and SECS more with the whole pass, saying so on stderr as each starts
//! (`quiet: spinning (skipped pass) ... (pid PID)`), for attaching a profiler (`perf record -p
//! PID`) to the quiet ticks alone.
//!
//! Every size gets its own world: the T3 stand-in (`t3-sim`) on loopback and a SQLite ledger
//! file. All the worlds are built first and stay up together; the rounds then run size after
//! size in turn (each round starting at another size), so that the load of the shared machine
//! falls on every size alike (the resident memory is said on stderr as each world comes up).
//! Dispatching 100,000 jobs through T3's HTTP commands would take minutes, so each world is
//! **seeded directly**: the ledger by SQL shaped as the state machine records a dispatch (N
//! `running` jobs from the local source, each with its `running` attempt and the events
//! `queued → dispatching → running`), and the stand-in by applying each attempt's `thread.create`
//! and `thread.turn.start` in process (`SimServer::apply_command`, the same decider as over HTTP),
//! with a `[sim:hang]` turn that never ends. The bench checks that all N threads run in T3 before
//! anything is timed. afk itself is built as `afk run` builds it (`App::build`, local source off,
//! push on) and ticks until it follows the stream; then the ticks are afk's real `ControlPlane::
//! tick` on real data, each checked to record nothing and to find T3 reachable.
//!
//! Timed, interleaved round by round so that the load of the shared machine falls on all alike:
//!
//! - `quiet tick, push`: `App::tick` (the whole control plane: status actions, intake, T3's view
//!   from the stream, the watcher, stops, settle, resume, dispatch), checked to skip the watcher's
//!   pass (`ControlPlane::skipped_passes`);
//! - `a tick after one thread changed`: one thread's agent starts another turn in T3 (a
//!   `thread.turn.start` applied in process: the thread changes, its job does not), then
//!   `App::tick`, checked to visit that thread's attempt alone (`ControlPlane::partial_passes`,
//!   `ControlPlane::visited_attempts`; T3's admission of the turn, a moment later, and the
//!   stream's view reaching T3's sequence (`ControlPlane::stream_sequence`) are waited for
//!   before the next round); a tick that came before the stream brought the change
//!   (it skipped) is not counted, and the next is tried;
//! - the same tick with skipping off (`ControlPlane::skip_quiet_passes(false)`): the whole pass
//!   over every live attempt, as every quiet tick made it before, and as a tick after a change
//!   at T3 made it before passes visited only the changed threads (and after a ledger change
//!   still does);
//! - `the ledger reads a quiet tick no longer makes`: what a quiet tick read from the ledger
//!   before it reused them while no job or attempt changed (`attempts_to_stop`,
//!   `jobs_in(timed_out, lost)` for settle, `ready_jobs`), for comparison; and the one read it
//!   still makes, the ledger's change counts (`Ledger::changes`). Over all rounds the bench
//!   checks that no tick made those reads again (`ControlPlane::tick_reads`).
//!
//! - `the next quiet tick at once`: five quiet ticks right after the first (a quiet stretch's
//!   steady state; the first follows a whole pass over the fleet, which leaves the caches full of
//!   it), with what it allocated, counted by this bench's allocator (a second table: the same
//!   count at every size means no copy or walk of anything sized by the fleet); and, each in
//!   turn with those, five with the change counts read as before, through sqlx's pool
//!   (`Ledger::read_changes_in_place(false)`), and that read alone: before and after in the very
//!   same rounds and load.
//!
//! - `control: a quiet tick after evicting the caches`: one more quiet tick right after those
//!   (no pass before it), but after the bench wrote through a buffer of `AFK_QUIET_EVICT_MB`
//!   (256) MB, larger than the caches and than any size's fleet: if the first quiet tick after a
//!   whole pass costs more at 100,000 only because of the caches that pass left, this one costs
//!   the same at every size, about what that one costs at the largest;
//! - `a tick after afk recorded one transition`: one thread (from the end of the list, never one
//!   a round changes) starts a turn that ends at once (`[sim:duration=1]`); afk ticks until it
//!   records its job's move (`running -> succeeded`), and the tick after that is timed: what
//!   follows every transition afk records itself (checked to read back the moved job's live
//!   attempts alone and to visit only what changed: the finished job's attempt, gone, so none);
//!   and, the two alternating which comes first, the same on another thread with the read
//!   dropped after the move as before (`ControlPlane::patch_live_attempts(false)`: every live
//!   attempt read again, a whole pass). The fleet shrinks by two threads a round.
//!
//! Every row also gives the median CPU time of the bench's own thread during the call
//! (`CLOCK_THREAD_CPUTIME_ID`: the tick runs there; not stretched by other processes the way
//! wall time is) and its minor page faults (`getrusage(RUSAGE_THREAD)`). `AFK_QUIET_ROUNDS=R`
//! times exactly R rounds. Under callgrind, the quiet ticks of the three kinds above are polled
//! through a function of their own (`FirstQuietTick`, `NextQuietTick`, `EvictedQuietTick`:
//! `--toggle-collect='*FirstQuietTick*::poll'` counts the first alone; BENCHMARKS.md says how).
//!
//! Medians and ratios from one run; the machine is shared, so absolute times are only indicative.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use afk::app::App;
use afk_core::JobState;
use afk_ledger::Ledger;
use chrono::Utc;
use common::World;
use t3_client::wire::ClientCommand;
use t3_client::ThreadState;

/// Untimed rounds first, to warm caches and the allocator.
const WARM_UP: usize = 3;
const MIN_RUNS: usize = 15;
/// `AFK_QUIET_ROUNDS`: exactly this many timed rounds instead, after one untimed round (under
/// valgrind, say 1).
fn fixed_rounds() -> Option<usize> {
    std::env::var("AFK_QUIET_ROUNDS").ok()?.parse().ok()
}
const MAX_RUNS: usize = 201;
/// Roughly how long the timed rounds of one size may take.
const BUDGET: Duration = Duration::from_secs(3);
/// A paragraph of a typical bug report; an issue body and a prompt repeat it to about 1.5 KB.
const PARAGRAPH: &str = "When a request to /api/orders carries an empty cursor the handler returns \
    500 instead of the first page. Steps: call GET /api/orders?cursor= with a valid token. Expected: \
    the first page, as without the parameter. Actual: a stack trace in the logs.\n\n";

/// The process's allocator, counting: how many allocations a tick makes, and how many bytes,
/// tells work that grows with the fleet (a copy or a walk of a fleet-sized structure allocates or
/// moves in proportion) from a tick that does the same work at every size.
struct Counting;

/// Allocations (and growths) made so far, by every thread of the process.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Bytes asked for by those allocations.
static ALLOCATED: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is handed to `System` unchanged; only counted on the way.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The allocations and bytes counted so far.
fn allocations() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        ALLOCATED.load(Ordering::Relaxed),
    )
}

struct Row {
    scenario: &'static str,
    n: usize,
    median: Duration,
    fastest: Duration,
    slowest: Duration,
    runs: usize,
    /// The median CPU time of the bench's own thread (the one the tick runs on).
    cpu: Duration,
    /// The median minor page faults of that thread.
    faults: u64,
}

/// What one timed call cost: wall time, the CPU time of the calling thread
/// (`CLOCK_THREAD_CPUTIME_ID`: the tick runs on the thread that blocks on the runtime, so this is
/// its own work, not stretched by other processes the way wall time is while it waits for a
/// core) and that thread's minor page faults (`getrusage(RUSAGE_THREAD)`).
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    faults: u64,
}

/// The CPU time this thread has run so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer to a timespec, for the lifetime of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    assert_eq!(rc, 0, "the thread's CPU clock reads");
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// This thread's minor page faults so far.
fn thread_faults() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer to a rusage, for the lifetime of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &raw mut usage) };
    assert_eq!(rc, 0, "the thread's resource usage reads");
    u64::try_from(usage.ru_minflt).unwrap_or(0)
}

/// A point to measure a [`Sample`] from.
struct Clock {
    wall: Instant,
    cpu: Duration,
    faults: u64,
}

impl Clock {
    fn start() -> Clock {
        let faults = thread_faults();
        let cpu = thread_cpu();
        Clock {
            wall: Instant::now(),
            cpu,
            faults,
        }
    }

    fn sample(&self) -> Sample {
        let wall = self.wall.elapsed();
        let cpu = thread_cpu().saturating_sub(self.cpu);
        Sample {
            wall,
            cpu,
            faults: thread_faults().saturating_sub(self.faults),
        }
    }
}

/// Futures polled through a function of their own that is never inlined, one type per kind of
/// quiet tick, so that a profiler counts each kind alone:
/// `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*FirstQuietTick*::poll'`
/// counts the instructions of the first quiet tick after a whole pass (and all it calls) and
/// nothing else; `NextQuietTick` is the first of the next quiet ticks at once, `EvictedQuietTick`
/// the control's.
macro_rules! marked_future {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        struct $name<F>(std::pin::Pin<Box<F>>);

        impl<F: std::future::Future> std::future::Future for $name<F> {
            type Output = F::Output;

            #[inline(never)]
            fn poll(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<F::Output> {
                self.0.as_mut().poll(cx)
            }
        }
    )*};
}

marked_future! {
    /// The first quiet tick after a whole pass.
    FirstQuietTick;
    /// The first of the next quiet ticks at once.
    NextQuietTick;
    /// The control's quiet tick after the caches were evicted.
    EvictedQuietTick;
}

/// Bytes the control row writes through before its quiet tick: more than any last-level cache,
/// and as many pages as a TLB maps many times over, so that the tick runs as on the caches a
/// pass over a large fleet leaves (`AFK_QUIET_EVICT_MB` changes it).
fn evict_bytes() -> usize {
    std::env::var("AFK_QUIET_EVICT_MB")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(256)
        << 20
}

/// Writes one byte in every 64 of `buffer` (each cache line once): the caches and TLB then hold
/// `buffer`'s lines and pages, not the fleet's.
#[inline(never)]
fn evict(buffer: &mut [u8], round: usize) {
    let value = u8::try_from(round % 251).unwrap_or(0);
    for line in buffer.chunks_mut(64) {
        line[0] = value;
    }
    std::hint::black_box(buffer);
}

fn main() {
    let sizes = sizes();
    let spin = std::env::var("AFK_QUIET_SPIN")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let runtime = support::runtime();
    let (rows, allocated) = runtime.block_on(async {
        // Every size's world is built first and stays alive to the end: the rounds then run
        // size after size in turn, so that the load of the shared machine (and whatever the
        // largest world costs the process) falls on every size alike.
        let mut fleets = Vec::new();
        for &n in &sizes {
            eprintln!("quiet: {n} running threads");
            fleets.push(QuietFleet::build(n).await);
            eprintln!(
                "quiet: resident memory with {} world(s) up: {}",
                fleets.len(),
                resident()
            );
        }
        eprintln!("quiet: worlds up, timing (pid {})", std::process::id());
        let mut buffer = vec![0u8; evict_bytes()];
        let warm_up = if fixed_rounds().is_some() { 1 } else { WARM_UP };
        let mut round = 0;
        let mut started = Instant::now();
        loop {
            if round == warm_up {
                started = Instant::now();
            }
            // Each round starts at another size: none always follows the largest one's whole
            // pass (which leaves the caches full of its fleet).
            for k in 0..fleets.len() {
                let i = (round + k) % fleets.len();
                fleets[i].round(round, round >= warm_up, &mut buffer).await;
            }
            round += 1;
            let timed = round.saturating_sub(warm_up);
            let budget = BUDGET * u32::try_from(fleets.len()).expect("a few sizes");
            let done = match fixed_rounds() {
                Some(rounds) => timed >= rounds,
                None => timed >= MIN_RUNS && (timed >= MAX_RUNS || started.elapsed() >= budget),
            };
            if done {
                break;
            }
        }
        eprintln!(
            "quiet: {} timed rounds; peak resident memory {}",
            round - warm_up,
            peak_resident()
        );
        for fleet in &mut fleets {
            fleet.check();
        }
        let largest = sizes.iter().copied().max().unwrap_or(0);
        if let Some(spin) = spin {
            if let Some(fleet) = fleets.iter_mut().find(|f| f.n == largest) {
                fleet.spin(spin).await;
            }
        }
        let mut rows = Vec::new();
        let mut allocated = Vec::new();
        for fleet in fleets {
            let (of_size, allocs) = fleet.finish().await;
            rows.extend(of_size);
            allocated.push(allocs);
        }
        (rows, allocated)
    });
    print_table(&rows, sizes[0]);
    println!();
    print_allocations(&allocated);
}

/// A line of `/proc/self/status` (`VmRSS`, `VmHWM`), or `?` where there is none.
fn proc_status(key: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map_or_else(|| "?".to_owned(), |value| value.trim().to_owned())
}

/// The process's resident memory now.
fn resident() -> String {
    proc_status("VmRSS")
}

/// The process's peak resident memory so far.
fn peak_resident() -> String {
    proc_status("VmHWM")
}

/// The sizes from `AFK_QUIET_SIZES` (comma-separated), else 1,000, 10,000 and 100,000.
fn sizes() -> Vec<usize> {
    let defaults = vec![1_000, 10_000, 100_000];
    let Ok(text) = std::env::var("AFK_QUIET_SIZES") else {
        return defaults;
    };
    let sizes: Vec<usize> = text
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .filter(|&n| n > 0)
        .collect();
    if sizes.is_empty() {
        eprintln!("quiet: AFK_QUIET_SIZES={text:?} has no sizes; using the defaults");
        return defaults;
    }
    sizes
}

/// What the quiet ticks right after a quiet tick allocated, at one size: the median, fewest and
/// most allocations of a tick, and the median bytes.
struct Allocated {
    n: usize,
    median: u64,
    fewest: u64,
    most: u64,
    bytes: u64,
}

/// Quiet ticks timed one after the other in each round, right after the round's first quiet
/// tick: a quiet stretch's steady state.
const AGAIN: usize = 5;

/// The scenarios a round times (the rows of the table, in order: see [`QuietFleet::finish`]).
const SCENARIOS: usize = 11;

/// One size's world (T3 stand-in, ledger, afk) and what its rounds measured.
struct QuietFleet {
    n: usize,
    world: World,
    app: App,
    /// The bench's own handle on the ledger, for the reads timed beside the ticks.
    ledger: Ledger,
    /// Every live attempt's thread and job, in the ledger's order: round `r` changes the
    /// thread `r % n`, and finishes two from the end (`finished`).
    threads: Vec<(String, i64)>,
    /// T3's event sequence once every thread ran.
    sequence: u64,
    reads_before: u64,
    tick_reads_before: u64,
    samples: [Vec<Sample>; SCENARIOS],
    /// Threads finished at T3 so far (two a round, from the end of `threads`).
    finished: usize,
    /// Of those, the transitions timed with the live attempts read whole after them (as before
    /// afk patched its read with its own moves).
    finished_unpatched: usize,
    /// Reads of the live attempts the ticks after those transitions made (one each, for those
    /// timed as before; none for the others).
    transition_reads: u64,
    /// Other reads (attempts to stop, jobs to settle, ready jobs) those ticks made.
    transition_tick_reads: u64,
    allocated: Vec<(u64, u64)>,
    /// Quiet ticks after a whole pass that did not skip (a change still arriving): not timed.
    retried: u64,
}

impl QuietFleet {
    /// Builds and seeds the world of `n` running threads and ticks afk until it follows the
    /// stream.
    async fn build(n: usize) -> QuietFleet {
        let clock = Instant::now();
        let phase = |what: &str| eprintln!("quiet: N={n}: {what} ({:.1?} in)", clock.elapsed());
        let mut world = World::new(Duration::from_secs(3600)).await;
        // Nothing may time out or stall while the bench runs, however slow the machine.
        world.config.watch.stall_timeout = Duration::from_secs(24 * 3600);
        world.config.watch.turn_timeout = Duration::from_secs(24 * 3600);
        world.config.watch.push = true;
        world.config.t3.request_timeout = Duration::from_secs(300);
        world.config.limits.max_concurrent = u32::try_from(n).expect("a size that fits u32");
        world.config.limits.per_repo = world.config.limits.max_concurrent;
        world.config.source.local = None;

        let ledger = Ledger::open(&world.config.ledger.url)
            .await
            .expect("the ledger opens");
        seed_ledger(&world.config.ledger.url, n).await;
        phase("ledger seeded");
        let live = ledger.watched_attempts().await.expect("the live attempts");
        assert_eq!(live.len(), n, "every job has its running attempt");
        for attempt in &live {
            for command in [
                thread_create(attempt.thread_id.as_str(), attempt.job_id.0),
                turn_start(
                    attempt.thread_id.as_str(),
                    &format!("turn-{}", attempt.job_id.0),
                    &format!("message-{}", attempt.job_id.0),
                    "Keep working until stopped. [sim:hang]",
                ),
            ] {
                let command: ClientCommand = serde_json::from_value(command).expect("a valid command");
                world.sim.apply_command(command).expect("T3 takes it");
            }
        }
        drop(live);
        phase("T3 seeded");
        wait_all_running(&world, n).await;
        phase("all running in T3");

        let mut app = App::build(world.config.clone())
            .await
            .expect("the control plane is wired");
        // Ten minutes; `AFK_QUIET_SYNC_S` more under valgrind (100,000 threads take longer).
        let patience = std::env::var("AFK_QUIET_SYNC_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(600);
        let deadline = Instant::now() + Duration::from_secs(patience);
        loop {
            support::quiet_tick(&mut app).await;
            if app.control_plane().is_following_stream() {
                break;
            }
            assert!(Instant::now() < deadline, "the shell stream never synchronized");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        phase("following the stream");
        let jobs = ledger
            .jobs_in(&[JobState::Running])
            .await
            .expect("the running jobs");
        assert_eq!(jobs.len(), n, "all jobs running");
        drop(jobs);
        let sequence = world.sim.sequence();
        // A first tick after the stream came up may still have read (its reads follow a move).
        support::quiet_tick(&mut app).await;
        let reads_before = app.control_plane().watched_reads();
        let tick_reads_before = app.control_plane().tick_reads();
        let live = ledger.watched_attempts().await.expect("the live attempts");
        let threads: Vec<(String, i64)> = live
            .iter()
            .map(|a| (a.thread_id.as_str().to_owned(), a.job_id.0))
            .collect();
        drop(live);
        QuietFleet {
            n,
            world,
            app,
            ledger,
            threads,
            sequence,
            reads_before,
            tick_reads_before,
            samples: Default::default(),
            finished: 0,
            finished_unpatched: 0,
            transition_reads: 0,
            transition_tick_reads: 0,
            allocated: Vec::new(),
            retried: 0,
        }
    }

    /// One round: the whole pass, the quiet tick, the next quiet ticks at once, a quiet tick
    /// after the caches were evicted, a tick after one thread changed, the ledger reads, and a
    /// tick after afk recorded one transition; kept when `timed`.
    async fn round(&mut self, round: usize, timed: bool, buffer: &mut [u8]) {
        let app = &mut self.app;
        // The whole pass, as every quiet tick made it before passes were skipped (and as any
        // tick after a change in the ledger still does).
        app.control_plane().skip_quiet_passes(false);
        let clock = Clock::start();
        support::quiet_tick(app).await;
        let whole = clock.sample();
        app.control_plane().skip_quiet_passes(true);
        // The quiet tick. The stream brought every change of the last round before it ended
        // (waited for there); a tick that still visits is not counted (and counted as a retry),
        // and the next is tried.
        let mut tries = 0;
        let tick = loop {
            let skipped = app.control_plane().skipped_passes();
            let clock = Clock::start();
            FirstQuietTick(Box::pin(support::quiet_tick(app))).await;
            let tick = clock.sample();
            if app.control_plane().skipped_passes() == skipped + 1 {
                break tick;
            }
            tries += 1;
            self.retried += 1;
            assert!(tries < 100, "the quiet tick never skipped its pass");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // The next quiet ticks at once: a quiet stretch's steady state, not the first tick after
        // a whole pass over the fleet (which leaves the CPU's caches full of the fleet), with
        // what each allocated (every thread of the process).
        // Each in turn with the change counts read as before this round, through sqlx's pool
        // (`Ledger::read_changes_in_place(false)`): the same tick, load and sizes.
        let mut again = Vec::with_capacity(AGAIN);
        let mut again_pool = Vec::with_capacity(AGAIN);
        let mut allocated = Vec::with_capacity(AGAIN);
        for i in 0..2 * AGAIN {
            // Which goes first alternates by round: the first is nearest the whole pass.
            let in_place = (i + round).is_multiple_of(2);
            app.control_plane().ledger().read_changes_in_place(in_place);
            let skipped = app.control_plane().skipped_passes();
            let before = allocations();
            let clock = Clock::start();
            if in_place && again.is_empty() {
                NextQuietTick(Box::pin(support::quiet_tick(app))).await;
            } else {
                support::quiet_tick(app).await;
            }
            let took = clock.sample();
            let after = allocations();
            if in_place {
                again.push(took);
                allocated.push((after.0 - before.0, after.1 - before.1));
            } else {
                again_pool.push(took);
            }
            assert_eq!(
                app.control_plane().skipped_passes(),
                skipped + 1,
                "a quiet tick right after a quiet tick skipped its pass"
            );
        }
        app.control_plane().ledger().read_changes_in_place(true);
        // The control: the same quiet tick, right after the ones above (no pass before it), but
        // with the caches and TLB holding a buffer larger than any size's fleet instead of what
        // the tick last touched. If only the caches make the first quiet tick after a whole pass
        // dearer at 100,000, this one costs the same at every size, about what that one costs
        // at the largest.
        evict(buffer, round);
        let skipped = app.control_plane().skipped_passes();
        let clock = Clock::start();
        EvictedQuietTick(Box::pin(support::quiet_tick(app))).await;
        let evicted = clock.sample();
        assert_eq!(
            app.control_plane().skipped_passes(),
            skipped + 1,
            "the quiet tick after the eviction skipped its pass"
        );
        // One thread changes at T3: its agent starts another turn (its job does not move).
        let (thread, job) = &self.threads[round % self.threads.len()];
        let command = turn_start(
            thread,
            &format!("bench-turn-{round}"),
            &format!("bench-message-{round}"),
            &format!("Go on with issue {job}. [sim:hang]"),
        );
        let command: ClientCommand = serde_json::from_value(command).expect("a valid command");
        self.world.sim.apply_command(command).expect("T3 takes it");
        let applied = self.world.sim.sequence();
        let mut tries = 0;
        let changed = loop {
            tries += 1;
            assert!(
                tries <= 1000,
                "no tick after the change made a partial pass (a whole pass each time?)"
            );
            // The stream brings the change within milliseconds; a tick before it skips.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let plane = app.control_plane();
            let (partial, visited) = (plane.partial_passes(), plane.visited_attempts());
            let clock = Clock::start();
            support::quiet_tick(app).await;
            let took = clock.sample();
            let plane = app.control_plane();
            if plane.partial_passes() > partial {
                // Every change before this round's was in the stream's view before the round
                // began (waited for below): only this thread can have changed since.
                assert_eq!(
                    plane.visited_attempts() - visited,
                    1,
                    "the tick visited the changed thread's attempt alone"
                );
                break took;
            }
        };
        // T3 admits the new turn after the stand-in's startup delay (one more event on the
        // thread); then the stream's view must reach T3's sequence before the next round.
        // Without this wait, an admission that reached afk's view only after the next round's
        // quiet ticks made that round's changed thread the second one its tick visited.
        let admitted = Instant::now() + Duration::from_secs(30);
        while self.world.sim.sequence() == applied {
            assert!(Instant::now() < admitted, "T3 admitted the new turn");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        catch_up(app, &self.world).await;
        let ledger = &self.ledger;
        let clock = Clock::start();
        let stop = ledger.attempts_to_stop().await.expect("the attempts to stop");
        let ended = ledger
            .jobs_in(&[JobState::TimedOut, JobState::Lost])
            .await
            .expect("the ended jobs");
        let ready = ledger
            .ready_jobs(Utc::now(), usize::MAX)
            .await
            .expect("the ready jobs");
        let reads = clock.sample();
        assert!(stop.is_empty() && ended.is_empty() && ready.is_empty());
        let clock = Clock::start();
        ledger.changes().await.expect("the change counts");
        let counts = clock.sample();
        ledger.read_changes_in_place(false);
        let clock = Clock::start();
        ledger.changes().await.expect("the change counts");
        let counts_pool = clock.sample();
        ledger.read_changes_in_place(true);
        // Patched and as before, in turn first, each on its own finished thread.
        let (transition, transition_before) = if round.is_multiple_of(2) {
            let patched = self.transition(round, true).await;
            (patched, self.transition(round, false).await)
        } else {
            let before = self.transition(round, false).await;
            (self.transition(round, true).await, before)
        };
        if timed {
            self.samples[0].push(tick);
            self.samples[1].push(changed);
            self.samples[2].push(whole);
            self.samples[3].push(reads);
            self.samples[4].push(counts);
            self.samples[5].extend(again);
            self.samples[6].extend(again_pool);
            self.samples[7].push(counts_pool);
            self.samples[8].push(evicted);
            self.samples[9].push(transition);
            self.samples[10].push(transition_before);
            self.allocated.extend(allocated);
        }
    }

    /// One thread finishes at T3 (its agent starts a turn that ends at once, on a thread from
    /// the end of the list: never one a round changes), afk records its job's move (ticking until
    /// it has: the stream brings the end within milliseconds), and the tick after that is timed:
    /// the tick that follows any transition afk records itself in production (a thread finished,
    /// a job dispatched), checked to read back the moved job's live attempts alone and visit only
    /// what changed (`patched`: the finished job's attempt, no longer live, so at most one), or,
    /// as before (`ControlPlane::patch_live_attempts(false)`), to read every live attempt again
    /// and make a whole pass.
    async fn transition(&mut self, round: usize, patched: bool) -> Sample {
        self.finished += 1;
        if !patched {
            self.finished_unpatched += 1;
        }
        let index = self.threads.len() - self.finished;
        assert!(
            index > round,
            "the finished threads stay apart from the changed ones"
        );
        self.app.control_plane().patch_live_attempts(patched);
        let (thread, job) = self.threads[index].clone();
        let (section_reads, section_tick_reads) = {
            let plane = self.app.control_plane();
            (plane.watched_reads(), plane.tick_reads())
        };
        let command = turn_start(
            &thread,
            &format!("bench-finish-{}", self.finished),
            &format!("bench-finish-message-{}", self.finished),
            &format!("Wrap up issue {job}. [sim:duration=1]"),
        );
        let command: ClientCommand = serde_json::from_value(command).expect("a valid command");
        self.world.sim.apply_command(command).expect("T3 takes it");
        let app = &mut self.app;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "afk recorded the finished thread's move"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
            let report = app.tick(Utc::now()).await.expect("a tick");
            assert!(report.t3_reachable, "T3 answered");
            if report.progress.is_empty() {
                continue;
            }
            assert_eq!(report.progress.len(), 1, "one move: {:?}", report.progress);
            let moved = &report.progress[0];
            assert_eq!(
                (moved.from, moved.to),
                (JobState::Running, JobState::Succeeded),
                "the finished thread's job succeeded"
            );
            break;
        }
        catch_up(app, &self.world).await;
        let plane = app.control_plane();
        let reads = plane.watched_reads();
        let (skipped, partial) = (plane.skipped_passes(), plane.partial_passes());
        let visited = plane.visited_attempts();
        let clock = Clock::start();
        support::quiet_tick(app).await;
        let took = clock.sample();
        let plane = app.control_plane();
        plane.patch_live_attempts(true);
        assert_eq!(
            plane.watched_reads(),
            reads + u64::from(!patched),
            "the tick after a transition read the live attempts again only as before"
        );
        let visits = plane.visited_attempts() - visited;
        if patched {
            assert_eq!(
                (plane.skipped_passes(), plane.partial_passes()),
                (skipped, partial + 1),
                "the tick after a transition visited what changed"
            );
            assert!(visits <= 1, "it visited {visits} attempts for one move");
        } else {
            assert_eq!(
                (plane.skipped_passes(), plane.partial_passes()),
                (skipped, partial),
                "the tick after a transition as before made a whole pass"
            );
            assert_eq!(
                visits,
                (self.n - self.finished) as u64,
                "the whole pass visited every live attempt"
            );
        }
        // The whole section, the tick that recorded the move included.
        self.transition_reads += plane.watched_reads() - section_reads;
        self.transition_tick_reads += plane.tick_reads() - section_tick_reads;
        took
    }

    /// The checks over all rounds: the changes reached T3, no tick re-read what nothing changed.
    fn check(&mut self) {
        eprintln!(
            "quiet: N={}: {} quiet tick(s) after a whole pass retried",
            self.n, self.retried
        );
        let plane = self.app.control_plane();
        assert!(
            self.world.sim.sequence() > self.sequence,
            "the changed threads' turns reached T3"
        );
        // The ticks around a transition afk recorded as before read again (counted there); no
        // other did.
        assert_eq!(
            self.transition_reads, self.finished_unpatched as u64,
            "each transition timed as before made the live attempts be read once more, no other"
        );
        assert_eq!(
            plane.watched_reads(),
            self.reads_before + self.transition_reads,
            "no other tick read the live attempts again: nothing else changed in the ledger"
        );
        assert_eq!(
            plane.tick_reads(),
            self.tick_reads_before + self.transition_tick_reads,
            "no other tick read the attempts to stop, the jobs to settle or the ready jobs again"
        );
        assert!(plane.is_following_stream(), "still following the stream");
    }

    /// Ticks for `spin` with the pass skipped, then for `spin` with the whole pass, each said
    /// on stderr as it starts so that a profiler attaches to one of them.
    async fn spin(&mut self, spin: Duration) {
        for (what, skip) in [("skipped", true), ("whole", false)] {
            self.app.control_plane().skip_quiet_passes(skip);
            eprintln!(
                "quiet: N={}: spinning ({what} pass) for {spin:?} (pid {})",
                self.n,
                std::process::id()
            );
            let until = Instant::now() + spin;
            let mut ticks = 0u64;
            while Instant::now() < until {
                support::quiet_tick(&mut self.app).await;
                ticks += 1;
            }
            eprintln!("quiet: spun {ticks} ticks ({what} pass)");
        }
        self.app.control_plane().skip_quiet_passes(true);
    }

    /// The rows of this size, its allocations; the world shut down.
    async fn finish(self) -> (Vec<Row>, Allocated) {
        let n = self.n;
        let names = [
            "quiet tick, push (ControlPlane::tick; the pass skipped)",
            "a tick after one thread changed at T3 (its attempt alone visited)",
            "the same quiet tick with the whole pass (skipping off: as any tick after a change before)",
            "the ledger reads a quiet tick no longer makes (attempts_to_stop, jobs_in(timed_out, lost), ready_jobs)",
            "the one ledger read a quiet tick makes (Ledger::changes: one row by key, read in place)",
            "the next quiet tick at once (a quiet tick after a quiet tick)",
            "the next quiet tick at once, its counts read through sqlx's pool (as before this round)",
            "Ledger::changes through sqlx's pool (as before this round)",
            "control: a quiet tick after evicting the caches (no pass before; AFK_QUIET_EVICT_MB written through)",
            "a tick after afk recorded one transition (one thread finished at T3): the moved job's live attempts read back, what changed visited",
            "the same tick as before: every live attempt re-read (ControlPlane::patch_live_attempts(false)), a whole pass",
        ];
        let rows = names
            .into_iter()
            .zip(self.samples)
            .map(|(scenario, s)| {
                let mut wall: Vec<Duration> = s.iter().map(|s| s.wall).collect();
                wall.sort();
                let mut cpu: Vec<Duration> = s.iter().map(|s| s.cpu).collect();
                cpu.sort();
                let mut faults: Vec<u64> = s.iter().map(|s| s.faults).collect();
                faults.sort_unstable();
                Row {
                    scenario,
                    n,
                    median: wall[wall.len() / 2],
                    fastest: wall[0],
                    slowest: wall[wall.len() - 1],
                    runs: wall.len(),
                    cpu: cpu[cpu.len() / 2],
                    faults: faults[faults.len() / 2],
                }
            })
            .collect();
        self.ledger.close().await;
        drop(self.app);
        self.world.sim.shutdown().await;
        eprintln!("quiet: N={n}: shut down");
        let mut counts: Vec<u64> = self.allocated.iter().map(|a| a.0).collect();
        counts.sort_unstable();
        let mut bytes: Vec<u64> = self.allocated.iter().map(|a| a.1).collect();
        bytes.sort_unstable();
        let allocated = Allocated {
            n,
            median: counts[counts.len() / 2],
            fewest: counts[0],
            most: counts[counts.len() - 1],
            bytes: bytes[bytes.len() / 2],
        };
        (rows, allocated)
    }
}

/// Waits until afk's view of the shell stream reaches T3's sequence now: every change made at T3
/// so far is then in the view the next tick reads.
async fn catch_up(app: &mut App, world: &World) {
    let upto = world.sim.sequence();
    let caught_up = Instant::now() + Duration::from_secs(30);
    loop {
        let at = (app.control_plane().stream_sequence())
            .expect("afk still follows the stream (a snapshot view would not tell)");
        if at >= upto {
            return;
        }
        assert!(Instant::now() < caught_up, "the stream brought T3's events");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Fills the migrated ledger at `url` with `n` running jobs (alternately of the two configured
/// repositories, from the local source), each with its running attempt (thread `thread-ID`) and
/// the events of its dispatch, as the state machine records them.
async fn seed_ledger(url: &str, n: usize) {
    let now = Utc::now().timestamp_millis();
    let body = format!("{}Keep working until stopped. [sim:hang]", PARAGRAPH.repeat(6));
    let pool = sqlx::SqlitePool::connect(url).await.expect("the SQLite file");
    let statements = [
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             INSERT INTO jobs (repo, number, title, body, labels, priority, source, state, attempts, \
                 dispatch_tries, not_before_ms, last_error, created_ms, updated_ms, reported) \
             SELECT CASE WHEN i % 2 = 0 THEN 'acme/api' ELSE 'acme/web' END, i, 'Issue ' || i, $1, \
                 '[\"afk\"]', 2, 'local', 'running', 1, 1, NULL, NULL, {now}, {now}, NULL FROM n"
        ),
        format!(
            "INSERT INTO attempts (job_id, number, state, thread_id, project_id, create_command_id, \
                 turn_command_id, message_id, title, branch, prompt, dispatch_tries, last_error, \
                 stop_pending, created_ms, updated_ms, ended_ms) \
             SELECT id, 1, 'running', 'thread-' || id, \
                 CASE WHEN repo = 'acme/api' THEN 'proj-api' ELSE 'proj-web' END, 'create-' || id, \
                 'turn-' || id, 'message-' || id, title, 'afk/issue-' || number, $1, 1, NULL, FALSE, \
                 {now}, {now}, NULL FROM jobs WHERE state = 'running'"
        ),
        "INSERT INTO events (job_id, attempt, from_state, to_state, note, at_ms) \
         SELECT id, 1, 'queued', 'dispatching', CASE WHEN $1 = '' THEN '' ELSE 'dispatching' END, \
             created_ms FROM jobs"
            .to_owned(),
        "INSERT INTO events (job_id, attempt, from_state, to_state, note, at_ms) \
         SELECT id, 1, 'dispatching', 'running', CASE WHEN $1 = '' THEN '' ELSE 'running' END, \
             created_ms FROM jobs"
            .to_owned(),
    ];
    for sql in statements {
        sqlx::query(&sql)
            .bind(&body)
            .execute(&pool)
            .await
            .expect("seeded");
    }
    // No ANALYZE: afk never runs it, and with every job in one state SQLite's statistics would
    // make it scan all jobs for `jobs_in` and `ready_jobs` instead of searching `jobs_state`
    // (BENCHMARKS.md).
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .expect("checkpointed");
    pool.close().await;
}

/// The `thread.create` afk sends for job `job`'s first attempt (no worktree bootstrap).
fn thread_create(thread: &str, job: i64) -> serde_json::Value {
    let project = if job % 2 == 0 { "proj-api" } else { "proj-web" };
    serde_json::json!({
        "type": "thread.create",
        "commandId": format!("create-{job}"),
        "threadId": thread,
        "projectId": project,
        "title": format!("Issue {job}"),
        "modelSelection": {"instanceId": "claudeAgent", "model": "claude-sonnet-4-5"},
        "runtimeMode": "full-access",
        "interactionMode": "default",
        "branch": format!("afk/issue-{job}"),
        "worktreePath": null,
        "createdAt": t3_client::wire::Timestamp::now(),
    })
}

/// A `thread.turn.start` of `thread` with the user message `text` (its `[sim:...]` directive says
/// how the stand-in's turn goes): the seed's turn that never ends, a round's change, a turn that
/// ends at once.
fn turn_start(thread: &str, command_id: &str, message_id: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "thread.turn.start",
        "commandId": command_id,
        "threadId": thread,
        "message": {
            "messageId": message_id,
            "role": "user",
            "text": text,
            "attachments": [],
        },
        "runtimeMode": "full-access",
        "interactionMode": "default",
        "createdAt": t3_client::wire::Timestamp::now(),
    })
}

/// Waits until T3 shows all `n` threads running (their sessions past the stand-in's startup
/// delay); panics after ten minutes.
async fn wait_all_running(world: &World, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let model = world.sim.read_model();
        let running = model
            .threads
            .iter()
            .filter(|t| ThreadState::of(Some(t)) == ThreadState::Running)
            .count();
        if running == n {
            return;
        }
        assert!(Instant::now() < deadline, "only {running} of {n} threads running");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_table(rows: &[Row], baseline: usize) {
    println!("| scenario | N running | median | fastest | slowest | runs | median vs N={baseline} | thread CPU, median | vs N={baseline} | minor faults, median |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut scenarios: Vec<&str> = Vec::new();
    for row in rows {
        if !scenarios.contains(&row.scenario) {
            scenarios.push(row.scenario);
        }
    }
    for scenario in scenarios {
        let of: Vec<&Row> = rows.iter().filter(|r| r.scenario == scenario).collect();
        let base = of.iter().find(|r| r.n == baseline).copied();
        let ratio = |of: Duration, base: Duration| {
            format!("{:.2}x", of.as_secs_f64() / base.as_secs_f64().max(1e-12))
        };
        for row in of {
            let (wall_ratio, cpu_ratio) = base.map_or(("-".to_owned(), "-".to_owned()), |b| {
                (ratio(row.median, b.median), ratio(row.cpu, b.cpu))
            });
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.scenario,
                row.n,
                support::human_secs(row.median.as_secs_f64()),
                support::human_secs(row.fastest.as_secs_f64()),
                support::human_secs(row.slowest.as_secs_f64()),
                row.runs,
                wall_ratio,
                support::human_secs(row.cpu.as_secs_f64()),
                cpu_ratio,
                row.faults
            );
        }
    }
}

fn print_allocations(of: &[Allocated]) {
    println!("| allocations of a quiet tick after a quiet tick (whole process) | N running | median | fewest | most | median bytes |");
    println!("|---|---:|---:|---:|---:|---:|");
    for a in of {
        println!(
            "| ControlPlane::tick, the pass skipped | {} | {} | {} | {} | {} |",
            a.n, a.median, a.fewest, a.most, a.bytes
        );
    }
}
