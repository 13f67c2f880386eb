//! Fleet benchmark: what watching N running attempts costs afk per tick, and how much of that is
//! T3's snapshot rather than afk's own work.
//!
//! Run with `cargo bench -p afk --bench fleet`. Sizes default to 100, 1,000 and 10,000 running
//! attempts; `AFK_FLEET_SIZES=100,1000` picks others (the first size is the baseline of the ratio
//! column). Prints a Markdown table on stdout; progress goes to stderr.
//!
//! Every size gets a fresh world: the T3 stand-in on loopback, a SQLite ledger file in a temporary
//! folder and a local issue folder with N issues (bodies of about 1.5 KB) whose turns never end
//! (`[sim:hang]`). The jobs are queued and dispatched by the control plane itself, through the
//! same path as `afk run`, and the benchmark checks that all N are running in the ledger and in T3
//! before it measures anything. Then, with nothing changing (every timed tick is checked to
//! record no transition), it times, interleaved round by round so that a shared machine's load
//! falls on all alike:
//!
//! - `tick (local folder)`: a whole `App::tick`, which also rescans the N issue files;
//! - `tick (watch only)`: the same tick with the local source off: snapshot GET and decode, ledger
//!   reads, the watcher's pass, settle, resume and the dispatcher's (empty) pass;
//! - `snapshot GET + decode`: `T3Client::snapshot` alone, to show T3's share of the tick;
//! - the ledger reads a tick makes, alone: `live_attempts` (once per tick, shared by the watcher
//!   and the resumption of dispatches), `jobs_in(dispatching, running)` (the dispatcher's count of
//!   work in flight, made only when some job is ready), `attempts_to_stop`, and `jobs` (intake's
//!   view).
//!
//! Then all N turns end at once (`complete N attempts`, one tick), 100 new issues start, and the
//! ticks and the snapshot are timed again with 100 live attempts beside N finished ones: T3 keeps
//! every thread in its snapshot and the ledger keeps every job, so history has a cost of its own.
//!
//! `intake of N files`, `dispatch of N jobs` and `complete N attempts` change the world, so they
//! are one sample each: throughput figures, not medians.
//!
//! Speed is reported as medians and ratios from one run; the machine is shared, so absolute times
//! are only indicative.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use afk::app::App;
use afk_core::JobState;
use chrono::Utc;
use common::{World, REPO_A, REPO_B};
use t3_client::ThreadState;
use t3_sim::TurnOutcome;

/// Untimed runs before the measured ones, to warm caches, connections and the allocator.
const WARM_UP: usize = 2;
/// How long the timed runs of one scenario may take, roughly; at least `MIN_RUNS` are made.
const BUDGET: Duration = Duration::from_secs(1);
const MIN_RUNS: usize = 5;
const MAX_RUNS: usize = 21;
/// A paragraph of a typical bug report; an issue body repeats it to about 1.5 KB, so that the
/// ledger's rows (issue body, prompt) have a realistic size. T3's snapshot carries no messages.
const PARAGRAPH: &str = "When a request to /api/orders carries an empty cursor the handler returns \
    500 instead of the first page. Steps: call GET /api/orders?cursor= with a valid token. Expected: \
    the first page, as without the parameter. Actual: a stack trace in the logs.\n\n";

/// The attempts running beside the N finished ones in the history scenario.
const LIVE_BESIDE_HISTORY: usize = 100;

/// Times the futures `$run`, one after the other in rounds, so that the load of a shared machine
/// falls on all of them alike: `WARM_UP` untimed rounds, then timed rounds until their sum of
/// budgets is spent (within `MIN_RUNS..=MAX_RUNS` rounds). Yields, per future in order, the
/// median and the number of timed runs. A macro rather than a function so that the futures may
/// borrow the plane mutably, round after round.
macro_rules! interleaved {
    ($($run:expr),+ $(,)?) => {{
        let mut samples: Vec<Vec<Duration>> = Vec::new();
        let mut started = Instant::now();
        let mut round = 0;
        loop {
            if round == WARM_UP {
                started = Instant::now();
            }
            let mut k = 0;
            $(
                let t = Instant::now();
                $run.await;
                if round >= WARM_UP {
                    samples.resize_with(samples.len().max(k + 1), Vec::new);
                    samples[k].push(t.elapsed());
                }
                k += 1;
            )+
            round += 1;
            let timed = round.saturating_sub(WARM_UP);
            let budget = BUDGET * u32::try_from(k).unwrap_or(u32::MAX);
            if timed >= MIN_RUNS && (timed >= MAX_RUNS || started.elapsed() >= budget) {
                break;
            }
        }
        samples
            .into_iter()
            .map(|mut s| {
                s.sort();
                (s[s.len() / 2], s.len())
            })
            .collect::<Vec<(Duration, usize)>>()
    }};
}

/// One measured scenario at one fleet size.
struct Row {
    scenario: &'static str,
    n: usize,
    median: Duration,
    runs: usize,
}

fn main() {
    let sizes = sizes();
    let runtime = support::runtime();
    let mut rows = Vec::new();
    for &n in &sizes {
        eprintln!("fleet: {n} running attempts");
        rows.extend(runtime.block_on(fleet(n)));
    }
    print_table(&rows, sizes[0]);
}

/// The fleet sizes from `AFK_FLEET_SIZES` (comma-separated), else 100, 1,000 and 10,000.
fn sizes() -> Vec<usize> {
    let defaults = vec![100, 1_000, 10_000];
    let Ok(text) = std::env::var("AFK_FLEET_SIZES") else {
        return defaults;
    };
    let sizes: Vec<usize> = text
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .filter(|&n| n > 0)
        .collect();
    if sizes.is_empty() {
        eprintln!("fleet: AFK_FLEET_SIZES={text:?} has no sizes; using the defaults");
        return defaults;
    }
    sizes
}

/// Builds a world with `n` running attempts and measures every scenario in it.
async fn fleet(n: usize) -> Vec<Row> {
    let clock = Instant::now();
    // Progress on stderr, so that a slow phase of a long run can be told from a hung one.
    let phase = |what: &str| eprintln!("fleet: N={n}: {what} ({:.1?} in)", clock.elapsed());
    let mut world = World::new(Duration::from_secs(3600)).await;
    // Nothing may time out or stall while the benchmark runs, however slow the machine.
    world.config.watch.stall_timeout = Duration::from_secs(24 * 3600);
    world.config.watch.turn_timeout = Duration::from_secs(24 * 3600);
    world.config.t3.request_timeout = Duration::from_secs(120);
    world.config.limits.max_concurrent = u32::try_from(n).expect("a fleet size that fits u32");
    world.config.limits.per_repo = world.config.limits.max_concurrent;
    // `[sim:hang]`: the turns never end by themselves, so the fleet stays running.
    let body = format!("{}Keep working until stopped. [sim:hang]", PARAGRAPH.repeat(6));
    for i in 0..n {
        let repo = if i % 2 == 0 { REPO_A } else { REPO_B };
        world.add_issue(repo, i as u64 + 1, &body);
    }
    phase("issue files written");
    let mut setup = Vec::new();

    // Intake alone: a plane that may dispatch nothing (a limit no config file could set).
    let mut intake_only = world.config.clone();
    intake_only.limits.max_concurrent = 0;
    let mut plane = App::build(intake_only.clone())
        .await
        .expect("the control plane is wired");
    let started = Instant::now();
    let report = plane.tick(Utc::now()).await.expect("the intake tick");
    setup.push(Row {
        scenario: "intake of N files (1 sample)",
        n,
        median: started.elapsed(),
        runs: 1,
    });
    assert_eq!(report.progress.len(), n, "every issue file is queued");

    // Dispatch: one tick sends all N (create + turn each) and records both transitions.
    let mut plane = world.app().await;
    let started = Instant::now();
    plane.tick(Utc::now()).await.expect("the dispatch tick");
    setup.push(Row {
        scenario: "dispatch of N jobs (1 sample)",
        n,
        median: started.elapsed(),
        runs: 1,
    });
    assert_all_running(&plane, &world, n, n).await;
    phase("all running");

    let mut watch_only = world.config.clone();
    watch_only.source.local = None;
    let mut watcher = App::build(watch_only.clone())
        .await
        .expect("the control plane is wired");
    let t3 = afk::app::t3_client(&world.config).expect("a T3 client");
    let ledger = world.ledger().await;

    let mut rows = setup;
    let mut push = |scenario: &'static str, (median, runs): (Duration, usize)| {
        rows.push(Row {
            scenario,
            n,
            median,
            runs,
        })
    };
    let measured = interleaved!(
        support::quiet_tick(&mut plane),
        support::quiet_tick(&mut watcher),
        async {
            let snapshot = t3.snapshot().await.expect("the snapshot");
            assert_eq!(snapshot.threads.len(), n);
        },
        async {
            let live = ledger.live_attempts().await.expect("the live attempts");
            assert_eq!(live.len(), n);
        },
        async {
            let jobs = ledger
                .jobs_in(&[JobState::Dispatching, JobState::Running])
                .await
                .expect("the jobs in flight");
            assert_eq!(jobs.len(), n);
        },
        async {
            let stop = ledger.attempts_to_stop().await.expect("the attempts to stop");
            assert!(stop.is_empty());
        },
        async {
            let jobs = ledger.jobs().await.expect("the jobs");
            assert_eq!(jobs.len(), n);
        },
    );
    let names = [
        "tick (local folder)",
        "tick (watch only)",
        "snapshot GET + decode",
        "ledger live_attempts",
        "ledger jobs_in(dispatching, running)",
        "ledger attempts_to_stop (none)",
        "ledger jobs (all)",
    ];
    for (name, m) in names.into_iter().zip(measured) {
        push(name, m);
    }
    // Still a quiet fleet: measuring changed nothing.
    assert_all_running(&plane, &world, n, n).await;
    phase("quiet fleet measured");

    // History: all N turns end at once, then a small fleet runs beside N finished threads, as
    // after a busy week. T3's snapshot keeps every thread, and the ledger every job.
    for thread in world.sim.threads() {
        assert!(world.sim.finish_turn(thread.id.as_str(), TurnOutcome::Completed));
    }
    let started = Instant::now();
    let report = plane.tick(Utc::now()).await.expect("the completing tick");
    let completing = started.elapsed();
    assert_eq!(report.progress.len(), n, "every attempt completes in one tick");
    push("complete N attempts (1 sample)", (completing, 1));
    let finished = plane
        .ledger()
        .jobs_in(&[JobState::Succeeded])
        .await
        .expect("the jobs");
    assert_eq!(finished.len(), n, "every job succeeded");
    for i in 0..LIVE_BESIDE_HISTORY {
        world.add_issue(REPO_A, (n + i + 1) as u64, &body);
    }
    plane.tick(Utc::now()).await.expect("the dispatch tick");
    assert_all_running(&plane, &world, LIVE_BESIDE_HISTORY, n + LIVE_BESIDE_HISTORY).await;
    phase("history set up");
    let measured = interleaved!(
        support::quiet_tick(&mut plane),
        support::quiet_tick(&mut watcher),
        async {
            let snapshot = t3.snapshot().await.expect("the snapshot");
            assert_eq!(snapshot.threads.len(), n + LIVE_BESIDE_HISTORY);
        },
    );
    let names = [
        "tick, 100 live + N done (local folder)",
        "tick, 100 live + N done (watch only)",
        "snapshot, 100 live + N done",
    ];
    for (name, m) in names.into_iter().zip(measured) {
        push(name, m);
    }

    phase("history measured");
    ledger.close().await;
    drop((plane, watcher));
    world.sim.shutdown().await;
    phase("shut down");
    rows
}

/// Checks that the ledger has `n` running jobs and T3 `n` running threads out of `threads`.
async fn assert_all_running(plane: &App, world: &World, n: usize, threads: usize) {
    let jobs = plane.ledger().jobs().await.expect("the jobs");
    let running = jobs.iter().filter(|j| j.state == JobState::Running).count();
    assert_eq!(running, n, "all jobs running");
    let model = world.sim.read_model();
    assert_eq!(model.threads.len(), threads, "one thread per attempt in T3");
    let running = model
        .threads
        .iter()
        .filter(|t| ThreadState::of(Some(t)) == ThreadState::Running)
        .count();
    assert_eq!(running, n, "all threads running in T3");
}

/// Prints the Markdown table: per scenario and size, the median, the cost per attempt and the
/// ratio of the median to the same scenario's at `baseline` attempts.
fn print_table(rows: &[Row], baseline: usize) {
    println!("| scenario | N | median | per attempt | runs | ratio vs N={baseline} |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut scenarios: Vec<&str> = Vec::new();
    for row in rows {
        if !scenarios.contains(&row.scenario) {
            scenarios.push(row.scenario);
        }
    }
    for scenario in scenarios {
        let of_scenario: Vec<&Row> = rows.iter().filter(|r| r.scenario == scenario).collect();
        let base = of_scenario.iter().find(|r| r.n == baseline).map(|r| r.median);
        for row in of_scenario {
            let ratio = base.map_or("-".to_string(), |b| {
                format!("{:.1}x", row.median.as_secs_f64() / b.as_secs_f64())
            });
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                row.scenario,
                row.n,
                human(row.median),
                human(row.median / row.n as u32),
                row.runs,
                ratio
            );
        }
    }
    // Where a watch-only tick goes, size by size: the parts it is made of, measured alone. A quiet
    // tick reads the live attempts once and skips the dispatcher's count (nothing is ready).
    println!();
    for row in rows.iter().filter(|r| r.scenario == "tick (watch only)") {
        let share = |scenario: &str, times: f64| {
            rows.iter()
                .find(|r| r.scenario == scenario && r.n == row.n)
                .map_or(0.0, |r| {
                    times * r.median.as_secs_f64() / row.median.as_secs_f64() * 100.0
                })
        };
        let snapshot = share("snapshot GET + decode", 1.0);
        let live = share("ledger live_attempts", 1.0);
        let stop = share("ledger attempts_to_stop (none)", 1.0);
        println!(
            "- N={}, watch-only tick: snapshot {snapshot:.0}%, live_attempts {live:.0}%, \
             attempts_to_stop {stop:.0}%, the rest {:.0}%",
            row.n,
            100.0 - snapshot - live - stop
        );
    }
}

/// A duration with a unit that keeps three significant digits or so.
fn human(d: Duration) -> String {
    support::human_secs(d.as_secs_f64())
}
