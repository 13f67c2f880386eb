//! A quiet tick does no work: following T3's shell stream, a tick in which nothing changed at T3
//! or in the ledger since a pass that decided nothing skips the watcher's pass over the live
//! attempts. What it must never cost: a change at T3 after skipped ticks is seen on the next tick,
//! and a turn, stall or answer timeout that passes with nothing changed at T3 still fires, on
//! time. Ticks are driven with a clock that jumps ahead (no waiting for a timeout).

mod common;

use std::time::{Duration, Instant};

use afk::app::App;
use afk_core::JobState;
use afk_ledger::Job;
use chrono::{DateTime, Utc};
use common::*;
use t3_sim::TurnOutcome;

/// A clock that can be moved ahead: `now()` is the real time plus every jump so far.
#[derive(Default)]
struct Clock {
    ahead: chrono::Duration,
}

impl Clock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.ahead
    }

    fn jump(&mut self, by: Duration) {
        self.ahead += chrono::Duration::from_std(by).unwrap();
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

/// Ticks at `clock` until `done` holds for the jobs; panics after 20 s of real time.
async fn tick_at_until(app: &mut App, clock: &Clock, done: impl Fn(&[Job]) -> bool) -> Vec<Job> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        app.tick(clock.now()).await.expect("a tick");
        let jobs = app.ledger().jobs().await.unwrap();
        if done(&jobs) {
            return jobs;
        }
        assert!(Instant::now() < deadline, "not done within 20 s: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn first_is(state: JobState) -> impl Fn(&[Job]) -> bool {
    move |jobs: &[Job]| jobs.first().is_some_and(|j| j.state == state)
}

/// Ticks at `clock` until two ticks in a row skip the watcher's pass (the stand-in has settled:
/// its session is up and nothing moves any more), each recording nothing; panics after 20 s.
async fn tick_until_skipping(app: &mut App, clock: &Clock) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut in_a_row = 0;
    while in_a_row < 2 {
        let before = app.control_plane().skipped_passes();
        let report = app.tick(clock.now()).await.expect("a tick");
        assert!(report.t3_reachable, "T3 answered");
        assert!(report.progress.is_empty(), "a quiet fleet: {:?}", report.progress);
        if app.control_plane().skipped_passes() > before {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            assert!(Instant::now() < deadline, "no tick skipped its pass within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(app.control_plane().is_following_stream());
}

/// One tick at `clock`: whether it skipped the watcher's pass, and the transitions it recorded.
async fn tick_once(app: &mut App, clock: &Clock) -> (bool, Vec<(JobState, JobState)>) {
    let before = app.control_plane().skipped_passes();
    let report = app.tick(clock.now()).await.expect("a tick");
    let skipped = app.control_plane().skipped_passes() > before;
    let moves = report.progress.iter().map(|p| (p.from, p.to)).collect();
    (skipped, moves)
}

/// A world with one issue whose turn never ends, running in T3, followed through the stream.
async fn running_world(body: &str, tune: impl FnOnce(&mut World)) -> (World, App, Clock) {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.watch.push = true;
    world.config.watch.turn_timeout = HOUR;
    world.config.watch.stall_timeout = HOUR;
    tune(&mut world);
    world.add_issue(REPO_A, 1, body);
    let mut app = world.app().await;
    let clock = Clock::default();
    tick_at_until(&mut app, &clock, first_is(JobState::Running)).await;
    tick_until_skipping(&mut app, &clock).await;
    (world, app, clock)
}

#[tokio::test]
async fn a_change_at_t3_after_skipped_ticks_is_seen_on_the_next_tick() {
    let (world, mut app, clock) = running_world("Keep working. [sim:hang]", |_| {}).await;
    let skipped = app.control_plane().skipped_passes();
    for _ in 0..3 {
        let (skip, moves) = tick_once(&mut app, &clock).await;
        assert!(skip && moves.is_empty(), "a quiet tick skips its pass: {moves:?}");
    }
    assert_eq!(app.control_plane().skipped_passes(), skipped + 3);

    let thread = app.ledger().watched_attempts().await.unwrap()[0]
        .thread_id
        .clone();
    assert!(world.sim.finish_turn(thread.as_str(), TurnOutcome::Completed));
    // No clock jump, no timeout near: only the stream's news can end the job.
    let jobs = tick_at_until(&mut app, &clock, first_is(JobState::Succeeded)).await;
    assert_eq!(jobs[0].attempts, 1, "{jobs:#?}");
    let events = app.ledger().events(jobs[0].id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| (e.from, e.to) == (JobState::Running, JobState::Succeeded)),
        "{events:#?}"
    );
}

#[tokio::test]
async fn a_turn_timeout_passes_with_nothing_changed_at_t3_and_still_fires() {
    let (_world, mut app, mut clock) = running_world("Never ends. [sim:hang]", |w| {
        w.config.watch.turn_timeout = 10 * MINUTE;
        w.config.limits.max_attempts = 1;
    })
    .await;
    clock.jump(9 * MINUTE);
    let (skip, moves) = tick_once(&mut app, &clock).await;
    assert!(skip && moves.is_empty(), "before the turn timeout: {moves:?}");
    clock.jump(2 * MINUTE);
    let (skip, moves) = tick_once(&mut app, &clock).await;
    assert!(!skip, "the turn timeout has passed: the pass runs");
    assert!(
        moves.contains(&(JobState::Running, JobState::TimedOut)),
        "the very tick past the timeout records it: {moves:?}"
    );
    let job = &app.ledger().jobs().await.unwrap()[0];
    let attempts = app.ledger().attempts(job.id).await.unwrap();
    let error = attempts[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("turn timeout"), "{error}");
}

#[tokio::test]
async fn a_stall_passes_with_nothing_changed_at_t3_and_still_fires() {
    let (_world, mut app, mut clock) = running_world("Goes quiet. [sim:hang]", |w| {
        w.config.watch.stall_timeout = 10 * MINUTE;
        w.config.watch.turn_timeout = 24 * HOUR;
        w.config.limits.max_attempts = 1;
    })
    .await;
    clock.jump(9 * MINUTE);
    let (skip, moves) = tick_once(&mut app, &clock).await;
    assert!(skip && moves.is_empty(), "before the stall timeout: {moves:?}");
    clock.jump(2 * MINUTE);
    let (skip, moves) = tick_once(&mut app, &clock).await;
    assert!(!skip, "the stall timeout has passed: the pass runs");
    assert!(
        moves.contains(&(JobState::Running, JobState::TimedOut)),
        "the very tick past the stall timeout records it: {moves:?}"
    );
    let job = &app.ledger().jobs().await.unwrap()[0];
    let attempts = app.ledger().attempts(job.id).await.unwrap();
    let error = attempts[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("stalled"), "{error}");
}

#[tokio::test]
async fn a_wait_for_a_person_is_given_up_on_time_with_nothing_changed_at_t3() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.watch.push = true;
    world.config.limits.answer_timeout = HOUR;
    world.add_issue(REPO_A, 1, "[sim:ask] Do it.");
    let mut app = world.app().await;
    let mut clock = Clock::default();
    tick_at_until(&mut app, &clock, first_is(JobState::NeedsInput)).await;
    tick_until_skipping(&mut app, &clock).await;
    // Far past the turn and stall timeouts (60 s), short of the answer timeout: skipped.
    clock.jump(59 * MINUTE);
    let (skip, moves) = tick_once(&mut app, &clock).await;
    assert!(skip && moves.is_empty(), "the wait goes on: {moves:?}");
    clock.jump(2 * MINUTE);
    let (skip, moves) = tick_once(&mut app, &clock).await;
    assert!(!skip, "the answer timeout has passed: the pass runs");
    assert!(
        moves.iter().any(|(from, _)| *from == JobState::NeedsInput),
        "the very tick past the answer timeout gives up on the wait: {moves:?}"
    );
}

#[tokio::test]
async fn polling_never_skips_the_pass() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.watch.push = false;
    world.config.watch.turn_timeout = HOUR;
    world.config.watch.stall_timeout = HOUR;
    world.add_issue(REPO_A, 1, "Keep working. [sim:hang]");
    let mut app = world.app().await;
    let clock = Clock::default();
    tick_at_until(&mut app, &clock, first_is(JobState::Running)).await;
    for _ in 0..5 {
        let (skip, moves) = tick_once(&mut app, &clock).await;
        assert!(!skip && moves.is_empty(), "{moves:?}");
    }
    assert_eq!(app.control_plane().skipped_passes(), 0);
}
