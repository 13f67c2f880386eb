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

/// Ticks at `clock` until T3 shows a turn in every thread (the stand-in admits a turn a moment
/// after it accepts it: a late event), then until two ticks in a row skip the watcher's pass,
/// each recording nothing; panics after 20 s.
async fn tick_until_skipping(world: &World, app: &mut App, clock: &Clock) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let settled = || {
        world
            .sim
            .read_model()
            .threads
            .iter()
            .all(|t| t.latest_turn.is_some())
    };
    while !settled() {
        app.tick(clock.now()).await.expect("a tick");
        assert!(
            Instant::now() < deadline,
            "T3 admitted no turn in some thread within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// One tick at `clock`: whether it made the watcher's whole pass (rather than skipping it, or
/// visiting only the attempts of threads that changed at T3: the stand-in may still bring a late
/// event of a thread that settled), and the transitions it recorded.
async fn tick_once(app: &mut App, clock: &Clock) -> (bool, Vec<(JobState, JobState)>) {
    let plane = app.control_plane();
    let before = (
        plane.skipped_passes(),
        plane.partial_passes(),
        plane.watched_reads(),
    );
    let report = app.tick(clock.now()).await.expect("a tick");
    let plane = app.control_plane();
    let (skipped, partial) = (
        plane.skipped_passes() > before.0,
        plane.partial_passes() > before.1,
    );
    // Said on failure: which kind of pass each tick made.
    eprintln!(
        "tick: skipped {skipped}, partial {partial}, live attempts read {}",
        plane.watched_reads() - before.2
    );
    let whole = !skipped && !partial;
    let moves = report.progress.iter().map(|p| (p.from, p.to)).collect();
    (whole, moves)
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
    tick_until_skipping(&world, &mut app, &clock).await;
    (world, app, clock)
}

/// A running job (issue 1, hanging) and a second (issue 2) whose first attempt failed: it waits
/// out a 10 min back-off before its second and last attempt; that job as the ledger holds it.
async fn a_job_in_back_off() -> (World, App, Clock, Job) {
    let (world, mut app, clock) = running_world("Keep working. [sim:hang]", |w| {
        w.config.limits.max_attempts = 2;
        w.config.retry.initial = 10 * MINUTE;
        w.config.retry.cap = 10 * MINUTE;
    })
    .await;
    world.add_issue(REPO_A, 2, "Breaks once. [sim:fail-times=1]");
    let jobs = tick_at_until(&mut app, &clock, |jobs| {
        jobs.iter()
            .any(|j| j.issue.number == 2 && j.state == JobState::RetryWait)
    })
    .await;
    let waiting = jobs.into_iter().find(|j| j.issue.number == 2).unwrap();
    (world, app, clock, waiting)
}

/// Records `event` for the job `pick` chooses through a second handle on the same ledger file,
/// as another process (`afk jobs`, `afk enqueue`) does, and closes that handle.
async fn record_from_another_process(
    world: &World,
    pick: impl FnOnce(Vec<Job>) -> Job,
    event: &afk_core::Event,
    now: DateTime<Utc>,
) {
    let other = afk_ledger::Ledger::open(&world.config.ledger.url)
        .await
        .expect("a second handle");
    let job = pick(other.jobs().await.unwrap());
    let transition = afk_core::apply(job.status(), event, &afk_core::RetryPolicy::default(), now).unwrap();
    other.record(job.id, &transition, None, now).await.unwrap();
    other.close().await;
}

#[tokio::test]
async fn a_change_at_t3_after_skipped_ticks_is_seen_on_the_next_tick() {
    let (world, mut app, clock) = running_world("Keep working. [sim:hang]", |_| {}).await;
    for _ in 0..3 {
        let (whole, moves) = tick_once(&mut app, &clock).await;
        assert!(
            !whole && moves.is_empty(),
            "a quiet tick skips its pass: {moves:?}"
        );
    }

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
    let (world, mut app, mut clock) = running_world("Never ends. [sim:hang]", |w| {
        w.config.watch.turn_timeout = 10 * MINUTE;
        w.config.limits.max_attempts = 1;
    })
    .await;
    let thread = app.ledger().watched_attempts().await.unwrap()[0]
        .thread_id
        .clone();
    clock.jump(9 * MINUTE);
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(!whole && moves.is_empty(), "before the turn timeout: {moves:?}");
    clock.jump(2 * MINUTE);
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(whole, "the turn timeout has passed: the pass runs");
    assert!(
        moves.contains(&(JobState::Running, JobState::TimedOut)),
        "the very tick past the timeout records it: {moves:?}"
    );
    // The timeout's own write asks for the stop: the same tick reads that again rather than
    // reusing the attempts to stop it read before writing, so the stop does not slip a tick.
    assert_eq!(
        received(&world, "thread.session.stop", thread.as_str()),
        1,
        "the very tick past the timeout stops the thread's session: {:?}",
        world.sim.commands_received()
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
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(!whole && moves.is_empty(), "before the stall timeout: {moves:?}");
    clock.jump(2 * MINUTE);
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(whole, "the stall timeout has passed: the pass runs");
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
    tick_until_skipping(&world, &mut app, &clock).await;
    // Far past the turn and stall timeouts (60 s), short of the answer timeout: skipped.
    clock.jump(59 * MINUTE);
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(!whole && moves.is_empty(), "the wait goes on: {moves:?}");
    clock.jump(2 * MINUTE);
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(whole, "the answer timeout has passed: the pass runs");
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
        let (whole, moves) = tick_once(&mut app, &clock).await;
        assert!(whole && moves.is_empty(), "{moves:?}");
    }
    assert_eq!(app.control_plane().skipped_passes(), 0);
}

#[tokio::test]
async fn a_quiet_tick_reads_no_live_attempts_and_another_processs_write_is_seen_by_the_next_tick() {
    let (world, mut app, clock) = running_world("Keep working. [sim:hang]", |_| {}).await;
    let reads = app.control_plane().watched_reads();
    for _ in 0..3 {
        let (whole, moves) = tick_once(&mut app, &clock).await;
        assert!(
            !whole && moves.is_empty(),
            "a quiet tick skips its pass: {moves:?}"
        );
    }
    assert_eq!(
        app.control_plane().watched_reads(),
        reads,
        "a quiet tick does not read the live attempts again"
    );

    // Another process (its own handle on the same ledger file) moves the running job: it now
    // waits for a person, which its thread in T3 does not.
    let asked = afk_core::Event::InputRequested {
        question: "asked elsewhere".into(),
    };
    record_from_another_process(&world, |mut jobs| jobs.remove(0), &asked, clock.now()).await;

    // No clock jump, nothing changed at T3: only the ledger's news can move the job back.
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(whole, "the ledger changed: the pass runs");
    assert_eq!(
        app.control_plane().watched_reads(),
        reads + 1,
        "the live attempts were read once"
    );
    assert!(
        moves.contains(&(JobState::NeedsInput, JobState::Running)),
        "the very next tick sees that the thread asks nothing: {moves:?}"
    );
}

/// A world with `n` issues whose turns never end, all running in T3, followed through the stream,
/// ticking until its passes are skipped.
async fn running_fleet(n: u64) -> (World, App, Clock) {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.watch.push = true;
    world.config.watch.turn_timeout = HOUR;
    world.config.watch.stall_timeout = HOUR;
    world.config.limits.max_concurrent = 8;
    world.config.limits.per_repo = 8;
    for number in 1..=n {
        world.add_issue(REPO_A, number, "Keep working. [sim:hang]");
    }
    let mut app = world.app().await;
    let clock = Clock::default();
    let all_running =
        move |jobs: &[Job]| jobs.len() as u64 == n && jobs.iter().all(|j| j.state == JobState::Running);
    tick_at_until(&mut app, &clock, all_running).await;
    tick_until_skipping(&world, &mut app, &clock).await;
    (world, app, clock)
}

#[tokio::test]
async fn a_change_to_one_thread_among_many_is_acted_on_visiting_only_its_attempt() {
    let (world, mut app, clock) = running_fleet(6).await;
    let live = app.ledger().watched_attempts().await.unwrap();
    let (done, others): (Vec<_>, Vec<_>) = live.iter().partition(|a| a.issue.number == 3);
    assert!(world
        .sim
        .finish_turn(done[0].thread_id.as_str(), TurnOutcome::Completed));

    // Every tick until the job succeeds visits at most the changed thread's attempt: T3's events
    // for it arrive over a few ticks, and the one that ends it records the success.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let plane = app.control_plane();
        let (visited, partial) = (plane.visited_attempts(), plane.partial_passes());
        let (whole, moves) = tick_once(&mut app, &clock).await;
        let plane = app.control_plane();
        let visits = plane.visited_attempts() - visited;
        assert!(
            visits <= 1,
            "a tick visited {visits} attempts for one changed thread"
        );
        assert!(!whole, "never the whole pass for one changed thread");
        if visits > 0 {
            assert_eq!(
                plane.partial_passes(),
                partial + 1,
                "only the changed thread's attempt"
            );
        }
        if !moves.is_empty() {
            assert_eq!(moves, vec![(JobState::Running, JobState::Succeeded)]);
            assert_eq!(visits, 1);
            break;
        }
        assert!(Instant::now() < deadline, "the finished turn was never seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let jobs = app.ledger().jobs().await.unwrap();
    for job in &jobs {
        let expected = if job.issue.number == 3 {
            JobState::Succeeded
        } else {
            JobState::Running
        };
        assert_eq!(job.state, expected, "{jobs:#?}");
    }
    assert_eq!(others.len(), 5);
    // The ledger changed (the success): the next tick reads back the moved job's live attempts
    // and visits what changed, its attempt, gone: nothing; then the fleet is quiet once more.
    let visited = app.control_plane().visited_attempts();
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(!whole && moves.is_empty(), "{moves:?}");
    assert_eq!(
        app.control_plane().visited_attempts(),
        visited,
        "nothing left to visit"
    );
    tick_until_skipping(&world, &mut app, &clock).await;
}

/// Ticks until the job of `number` succeeds after its thread's turn was finished at T3: every
/// tick visits at most that thread's attempt, and none indexes the live attempts by thread.
async fn finish_one_visiting_it_alone(world: &World, app: &mut App, clock: &Clock, number: u64) {
    let live = app.ledger().watched_attempts().await.unwrap();
    let done = live.iter().find(|a| a.issue.number == number).unwrap();
    assert!(world
        .sim
        .finish_turn(done.thread_id.as_str(), TurnOutcome::Completed));
    let builds = app.control_plane().live_index_builds();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let visited = app.control_plane().visited_attempts();
        let (whole, moves) = tick_once(app, clock).await;
        let plane = app.control_plane();
        let visits = plane.visited_attempts() - visited;
        assert!(!whole && visits <= 1, "visited {visits} for one changed thread");
        assert_eq!(
            plane.live_index_builds(),
            builds,
            "a tick visiting one changed thread indexed the whole fleet"
        );
        if !moves.is_empty() {
            assert_eq!(moves, vec![(JobState::Running, JobState::Succeeded)]);
            return;
        }
        assert!(Instant::now() < deadline, "the finished turn was never seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A move afk records itself (a turn that finished, among many running) is taken into its read
/// of the live attempts by reading back that job's alone: neither that tick nor the next reads
/// them all, and the next visits only what changed (the job's attempt, gone: nothing), not the
/// five still running. Another handle's write after it is read whole at the very next tick,
/// which makes the whole pass.
#[tokio::test]
async fn a_tick_after_a_recorded_move_reads_the_live_attempts_of_the_moved_job_only() {
    let (world, mut app, clock) = running_fleet(6).await;
    let (reads, patches) = {
        let plane = app.control_plane();
        (plane.watched_reads(), plane.watched_patch_reads())
    };
    finish_one_visiting_it_alone(&world, &mut app, &clock, 3).await;
    let (visited, partial) = {
        let plane = app.control_plane();
        (plane.visited_attempts(), plane.partial_passes())
    };
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(!whole && moves.is_empty(), "{moves:?}");
    let plane = app.control_plane();
    assert_eq!(plane.watched_reads(), reads, "no read of every live attempt");
    assert_eq!(
        plane.watched_patch_reads(),
        patches + 1,
        "the finished job's live attempts were read back once"
    );
    assert_eq!(plane.partial_passes(), partial + 1, "a pass over what changed");
    assert_eq!(
        plane.visited_attempts(),
        visited,
        "neither the five still running nor the finished one (no longer live) are visited"
    );
    // Another handle's write: the count moved past what afk expects, so it reads everything.
    let asked = afk_core::Event::InputRequested {
        question: "asked elsewhere".into(),
    };
    record_from_another_process(
        &world,
        |jobs| jobs.into_iter().find(|j| j.state == JobState::Running).unwrap(),
        &asked,
        clock.now(),
    )
    .await;
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(whole, "the ledger changed: the pass runs");
    assert_eq!(app.control_plane().watched_reads(), reads + 1, "read whole once");
    assert!(
        moves.contains(&(JobState::NeedsInput, JobState::Running)),
        "{moves:?}"
    );
}

/// After a move afk recorded itself, the next tick patches its read of the live attempts (a new
/// version) and its index of them by thread, visiting only what changed; the next tick a change
/// at T3 wakes then visits the changed thread's attempt alone, and no tick walks the fleet to
/// index it (a whole pass over the patched read did, before).
#[tokio::test]
async fn after_a_recorded_move_a_change_to_one_thread_costs_only_that_thread() {
    let (world, mut app, clock) = running_fleet(6).await;
    let builds = app.control_plane().live_index_builds();
    finish_one_visiting_it_alone(&world, &mut app, &clock, 3).await;
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(!whole && moves.is_empty(), "{moves:?}");
    assert_eq!(
        app.control_plane().live_index_builds(),
        builds,
        "the index of the patched read was patched, not made anew"
    );
    tick_until_skipping(&world, &mut app, &clock).await;
    finish_one_visiting_it_alone(&world, &mut app, &clock, 4).await;
    let jobs = app.ledger().jobs().await.unwrap();
    let succeeded: Vec<u64> = (jobs.iter())
        .filter(|j| j.state == JobState::Succeeded)
        .map(|j| j.issue.number)
        .collect();
    assert_eq!(succeeded, vec![3, 4], "{jobs:#?}");
}

#[tokio::test]
async fn a_dispatch_back_off_that_ends_during_skipped_ticks_is_resumed_on_time() {
    let (world, mut app, mut clock) = running_world("Keep working. [sim:hang]", |w| {
        w.config.retry.initial = 10 * MINUTE;
        w.config.retry.cap = 10 * MINUTE;
    })
    .await;
    // T3 refuses every request for one tick: the second issue's dispatch is deferred.
    world.add_issue(REPO_A, 2, "Keep working too. [sim:hang]");
    world.sim.set_faults(t3_sim::FaultPlan {
        error_rate: 1.0,
        ..t3_sim::FaultPlan::default()
    });
    app.tick(clock.now()).await.expect("a tick");
    world.sim.set_faults(t3_sim::FaultPlan::default());
    let second = |jobs: &[Job]| jobs.iter().find(|j| j.issue.number == 2).cloned().unwrap();
    let deferred = second(&app.ledger().jobs().await.unwrap());
    assert_eq!(deferred.state, JobState::Dispatching, "{deferred:#?}");
    assert!(deferred.not_before.is_some(), "a back-off: {deferred:#?}");

    // Until the back-off ends nothing is due: the ticks skip their pass.
    tick_until_skipping(&world, &mut app, &clock).await;
    clock.jump(9 * MINUTE);
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(!whole && moves.is_empty(), "the back-off goes on: {moves:?}");
    clock.jump(2 * MINUTE);
    let (whole, _) = tick_once(&mut app, &clock).await;
    assert!(whole, "the back-off has ended: the pass runs");
    let jobs = tick_at_until(&mut app, &clock, |jobs| {
        jobs.iter().all(|j| j.state == JobState::Running)
    })
    .await;
    assert_eq!(second(&jobs).attempts, 1, "the same attempt, resumed: {jobs:#?}");
}

/// A thread deleted at T3 among many: the tick that sees it goes missing does not trust a
/// partial pass (an absence needs the whole view and a confirming snapshot), and the job is
/// found lost, as it would be without the quiet ticks.
#[tokio::test]
async fn a_thread_deleted_at_t3_among_many_makes_the_whole_pass_and_its_job_is_lost() {
    let (world, mut app, mut clock) = running_fleet(6).await;
    let live = app.ledger().watched_attempts().await.unwrap();
    let gone = live.iter().find(|a| a.issue.number == 3).unwrap();
    let delete = serde_json::json!({
        "type": "thread.delete",
        "commandId": "test-delete-3",
        "threadId": gone.thread_id.as_str(),
    });
    world
        .sim
        .apply_command(serde_json::from_value(delete).expect("a valid command"))
        .expect("T3 deletes it");

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw_whole = false;
    loop {
        let partial = app.control_plane().partial_passes();
        let (whole, moves) = tick_once(&mut app, &clock).await;
        assert_eq!(
            app.control_plane().partial_passes(),
            partial,
            "no partial pass while a visited thread is missing"
        );
        saw_whole |= whole;
        if moves.contains(&(JobState::Running, JobState::Lost)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted thread's job was never found lost"
        );
        // Past any grace afk gives a missing thread before it calls it lost.
        clock.jump(MINUTE);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_whole, "the deletion was seen by a whole pass");
    let jobs = app.ledger().jobs().await.unwrap();
    let others = jobs.iter().filter(|j| j.issue.number != 3);
    assert!(others.clone().all(|j| j.state == JobState::Running), "{jobs:#?}");
    assert_eq!(others.count(), 5);
}

/// Ticks skipping their pass until one also reuses every other read of the last tick (the
/// attempts to stop, the jobs to settle, the ready jobs): a tick that just recorded a move reads
/// them once more; panics after 20 s.
async fn tick_until_reads_are_reused(app: &mut App, clock: &Clock) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reads = app.control_plane().tick_reads();
        let (whole, moves) = tick_once(app, clock).await;
        if !whole && moves.is_empty() && app.control_plane().tick_reads() == reads {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no quiet tick reused its reads within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ticks at `clock` that skip their pass, record nothing and read nothing but the ledger's
/// change counts, `n` of them.
async fn quiet_ticks_read_nothing(app: &mut App, clock: &Clock, n: usize) {
    let reads = (
        app.control_plane().tick_reads(),
        app.control_plane().watched_reads(),
    );
    for _ in 0..n {
        let (whole, moves) = tick_once(app, clock).await;
        assert!(!whole && moves.is_empty(), "a quiet tick: {moves:?}");
    }
    let plane = app.control_plane();
    assert_eq!(
        (plane.tick_reads(), plane.watched_reads()),
        reads,
        "quiet ticks read neither the live attempts nor the attempts to stop, the jobs to settle \
         or the ready jobs"
    );
}

/// How many `kind` commands T3 received for `thread` so far.
fn received(world: &World, kind: &str, thread: &str) -> usize {
    (world.sim.commands_received().iter())
        .filter(|(k, t)| *k == kind && t.as_ref().is_some_and(|t| t.as_str() == thread))
        .count()
}

#[tokio::test]
async fn a_stop_requested_by_hand_after_quiet_ticks_is_carried_out_at_the_next_tick() {
    let (world, mut app, clock) = running_world("Keep working. [sim:hang]", |_| {}).await;
    tick_until_reads_are_reused(&mut app, &clock).await;
    quiet_ticks_read_nothing(&mut app, &clock, 3).await;
    let thread = app.ledger().watched_attempts().await.unwrap()[0]
        .thread_id
        .clone();
    assert_eq!(received(&world, "thread.session.stop", thread.as_str()), 0);

    // A person's SQL, on its own connection: the attempt's stop request alone, no job moved (the
    // live attempts' own count does not move for it).
    let person = sqlx::SqlitePool::connect(&world.config.ledger.url)
        .await
        .expect("a connection of its own");
    sqlx::query("UPDATE attempts SET stop_pending = TRUE WHERE state = 'running'")
        .execute(&person)
        .await
        .expect("the stop request");
    person.close().await;

    let reads = app.control_plane().tick_reads();
    app.tick(clock.now()).await.expect("a tick");
    assert!(
        app.control_plane().tick_reads() > reads,
        "the ledger changed: its reads are made again"
    );
    assert_eq!(
        received(&world, "thread.session.stop", thread.as_str()),
        1,
        "the very next tick stops the thread's session: {:?}",
        world.sim.commands_received()
    );
}

#[tokio::test]
async fn a_job_cancelled_by_another_handle_after_quiet_ticks_has_its_thread_stopped_at_the_next_tick() {
    let (world, mut app, clock) = running_world("Keep working. [sim:hang]", |_| {}).await;
    tick_until_reads_are_reused(&mut app, &clock).await;
    quiet_ticks_read_nothing(&mut app, &clock, 3).await;
    let thread = app.ledger().watched_attempts().await.unwrap()[0]
        .thread_id
        .clone();

    // `afk jobs cancel` in another process: its own handle on the same ledger file.
    let cancel = afk_core::Event::Cancel {
        reason: afk_core::CancelReason::ByHand,
    };
    record_from_another_process(&world, |mut jobs| jobs.remove(0), &cancel, clock.now()).await;

    app.tick(clock.now()).await.expect("a tick");
    assert_eq!(
        received(&world, "thread.session.stop", thread.as_str()),
        1,
        "the very next tick stops the cancelled job's session: {:?}",
        world.sim.commands_received()
    );
}

#[tokio::test]
async fn a_job_requeued_by_another_handle_after_quiet_ticks_is_dispatched_at_the_next_tick() {
    let (world, mut app, clock) = running_world("Keep working. [sim:hang]", |w| {
        w.config.limits.max_attempts = 1;
    })
    .await;
    // A second issue whose only attempt fails: its job ends without success.
    world.add_issue(REPO_A, 2, "Breaks. [sim:fail]");
    tick_at_until(&mut app, &clock, |jobs| {
        (jobs.iter()).any(|j| j.issue.number == 2 && j.state.is_final() && j.state != JobState::Succeeded)
    })
    .await;
    tick_until_skipping(&world, &mut app, &clock).await;
    tick_until_reads_are_reused(&mut app, &clock).await;
    quiet_ticks_read_nothing(&mut app, &clock, 3).await;

    // `afk enqueue` in another process brings the failed job back: queued, to start again.
    let requeue = afk_core::Event::Requeue {
        by: afk_core::RequeueBy::Person,
    };
    let failed = |jobs: Vec<Job>| jobs.into_iter().find(|j| j.issue.number == 2).unwrap();
    record_from_another_process(&world, failed, &requeue, clock.now()).await;

    let (_, moves) = tick_once(&mut app, &clock).await;
    assert!(
        moves.contains(&(JobState::Queued, JobState::Dispatching)),
        "the very next tick starts the requeued job: {moves:?}"
    );
}

#[tokio::test]
async fn a_retry_back_off_that_ends_during_quiet_ticks_is_dispatched_on_time() {
    let (world, mut app, mut clock, waiting) = a_job_in_back_off().await;
    let ends = waiting.not_before.expect("a back-off");
    tick_until_skipping(&world, &mut app, &clock).await;
    tick_until_reads_are_reused(&mut app, &clock).await;
    assert!(
        clock.now() + 9 * MINUTE < ends,
        "the back-off goes on past the jump below"
    );

    // Short of the back-off's end: quiet, nothing read again.
    clock.jump(9 * MINUTE);
    quiet_ticks_read_nothing(&mut app, &clock, 2).await;
    // Past it, with nothing written anywhere: the very next tick starts the job again.
    clock.jump(2 * MINUTE);
    let (_, moves) = tick_once(&mut app, &clock).await;
    assert!(
        moves.contains(&(JobState::RetryWait, JobState::Dispatching)),
        "the tick past the back-off's end starts the second attempt: {moves:?}"
    );
}

#[tokio::test]
async fn a_job_parked_by_hand_past_any_date_does_not_stop_another_from_being_dispatched() {
    // A second job waits out a back-off...
    let (world, mut app, clock, waiting) = a_job_in_back_off().await;
    let parked = waiting.id;
    // ...which a person's SQL stretches past any date chrono can hold, to park the job.
    let person = sqlx::SqlitePool::connect(&world.config.ledger.url)
        .await
        .expect("a connection of its own");
    sqlx::query("UPDATE jobs SET not_before_ms = $1 WHERE id = $2")
        .bind(i64::MAX)
        .bind(parked.0)
        .execute(&person)
        .await
        .expect("the job parked");
    person.close().await;

    // A third issue is still started, and the parked job stays parked. (The whole job list
    // cannot be read: no date holds the parked job's back-off end.)
    world.add_issue(REPO_A, 3, "Keep working. [sim:hang]");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        app.tick(clock.now()).await.expect("a tick");
        let running = app.ledger().jobs_in(&[JobState::Running]).await.unwrap();
        if running.iter().any(|j| j.issue.number == 3) {
            break;
        }
        assert!(Instant::now() < deadline, "issue 3 not started within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let active = (app.ledger())
        .jobs_in(&[JobState::Queued, JobState::Dispatching, JobState::Running])
        .await
        .unwrap();
    assert!(
        !active.iter().any(|j| j.id == parked),
        "the parked job is not started"
    );
}

/// Waits (without ticking) until afk's view from the shell stream has every event T3 applied so
/// far: the next tick then sees every thread T3 has, and a pass over what changed is not made
/// whole by a thread the stream has yet to bring. Panics after 20 s.
async fn stream_caught_up(world: &World, app: &mut App) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while app
        .control_plane()
        .stream_sequence()
        .is_none_or(|at| at < world.sim.sequence())
    {
        assert!(
            Instant::now() < deadline,
            "the stream did not catch up within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ticks (each on a stream caught up with T3) until two in a row skip their pass: none of them
/// makes the whole pass, reads every live attempt or indexes them anew, and each visits at most
/// one attempt. Returns how many attempts they visited.
async fn tick_partially_until_skipping(world: &World, app: &mut App, clock: &Clock) -> u64 {
    let plane = app.control_plane();
    let (reads, builds, visited) = (
        plane.watched_reads(),
        plane.live_index_builds(),
        plane.visited_attempts(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut in_a_row = 0;
    while in_a_row < 2 {
        stream_caught_up(world, app).await;
        let (skipped, before) = {
            let plane = app.control_plane();
            (plane.skipped_passes(), plane.visited_attempts())
        };
        let (whole, moves) = tick_once(app, clock).await;
        let plane = app.control_plane();
        let visits = plane.visited_attempts() - before;
        assert!(
            !whole && visits <= 1,
            "a whole pass, or {visits} visits: {moves:?}"
        );
        assert_eq!(plane.watched_reads(), reads, "no read of every live attempt");
        assert_eq!(plane.live_index_builds(), builds, "no index made anew");
        if plane.skipped_passes() > skipped {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            assert!(Instant::now() < deadline, "no tick skipped its pass within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    app.control_plane().visited_attempts() - visited
}

/// A dispatch afk records among many running threads (a new issue, started while six others
/// run): the ticks after it visit the new job's attempt alone (the move patched into the live
/// attempts, then its thread's changes at T3), never the six others, until the fleet is quiet.
#[tokio::test]
async fn a_dispatch_recorded_among_many_running_threads_is_followed_visiting_its_attempt_alone() {
    let (world, mut app, clock) = running_fleet(6).await;
    world.add_issue(REPO_A, 7, "Keep working too. [sim:hang]");
    let partial = app.control_plane().partial_passes();
    tick_at_until(&mut app, &clock, |jobs| {
        jobs.iter()
            .any(|j| j.issue.number == 7 && j.state == JobState::Running)
    })
    .await;
    let visited = tick_partially_until_skipping(&world, &mut app, &clock).await;
    assert!(visited >= 1, "the new attempt was visited");
    assert!(app.control_plane().partial_passes() > partial);
    let jobs = app.ledger().jobs().await.unwrap();
    assert!(jobs.iter().all(|j| j.state == JobState::Running), "{jobs:#?}");
}

/// The turn timeout of an attempt that became running by a move afk recorded (a dispatch), with
/// nothing else changing after it: the passes after the dispatch visit that attempt alone, and
/// its deadline, met there, still ends the skipped ticks on time (the other job waits for a
/// person: it has no turn timeout).
#[tokio::test]
async fn a_turn_timeout_of_an_attempt_started_by_a_recorded_dispatch_fires_on_time() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.watch.push = true;
    world.config.watch.turn_timeout = HOUR;
    world.config.watch.stall_timeout = 3 * HOUR;
    world.config.limits.answer_timeout = 10 * HOUR;
    world.add_issue(REPO_A, 1, "[sim:ask] Do it.");
    let mut app = world.app().await;
    let mut clock = Clock::default();
    tick_at_until(&mut app, &clock, first_is(JobState::NeedsInput)).await;
    tick_until_skipping(&world, &mut app, &clock).await;

    world.add_issue(REPO_A, 2, "Keep working. [sim:hang]");
    let second_runs = |jobs: &[Job]| {
        jobs.iter()
            .any(|j| j.issue.number == 2 && j.state == JobState::Running)
    };
    tick_at_until(&mut app, &clock, second_runs).await;
    tick_partially_until_skipping(&world, &mut app, &clock).await;

    clock.jump(59 * MINUTE);
    let skipped = app.control_plane().skipped_passes();
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(!whole && moves.is_empty(), "before its turn timeout: {moves:?}");
    assert_eq!(app.control_plane().skipped_passes(), skipped + 1, "skipped");
    clock.jump(2 * MINUTE);
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(whole, "its turn timeout came: the pass runs");
    assert!(
        moves.contains(&(JobState::Running, JobState::TimedOut)),
        "{moves:?}"
    );
    let jobs = app.ledger().jobs().await.unwrap();
    assert_eq!(jobs[0].state, JobState::NeedsInput, "{jobs:#?}");
}

/// One step of [`passes_over_what_changed_decide_as_whole_passes_over_fresh_reads`].
#[derive(Debug, Clone)]
enum Step {
    /// A new issue whose agent works until stopped (0), asks a person (1), or fails its first
    /// turn and works on in its second (2).
    Issue(u8),
    /// A new issue (its agent works until stopped) arrives while T3 refuses every request: its
    /// dispatch is deferred (a back-off), with nothing changed at T3.
    IssueRefused,
    /// The turn of the `k`-th thread T3 runs (by issue, modulo) ends: completed or failed.
    Finish { k: usize, ok: bool },
    /// The `k`-th thread T3 runs is deleted in T3.
    Delete(usize),
    /// Another handle on the ledger cancels the `k`-th running job (`afk jobs cancel`).
    Cancel(usize),
    /// Time passes (minutes): across turn, stall, answer and back-off deadlines.
    Jump(u64),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (0u8..3).prop_map(Step::Issue),
        Just(Step::IssueRefused),
        (0usize..8, any::<bool>()).prop_map(|(k, ok)| Step::Finish { k, ok }),
        (0usize..8).prop_map(Step::Delete),
        (0usize..8).prop_map(Step::Cancel),
        proptest::sample::select(vec![10u64, 20, 31]).prop_map(Step::Jump),
    ]
}

/// One control plane over its own T3 stand-in and ledger, for the equivalence below.
struct Plane {
    world: World,
    app: App,
    clock: Clock,
    /// The plane of reference: every cache of the ledger forgotten before each tick, and no
    /// pass ever skipped or made partial.
    reference: bool,
    next_issue: u64,
    /// Whether the last tick recorded a move, and how many ticks right after one made a pass
    /// over what changed (what this test is about: it must have happened).
    moved: bool,
    partial_after_moves: u64,
}

impl Plane {
    async fn new(reference: bool, budget: bool) -> Plane {
        let mut world = World::new(Duration::from_millis(50)).await;
        world.config.watch.push = true;
        world.config.watch.turn_timeout = 30 * MINUTE;
        world.config.watch.stall_timeout = 50 * MINUTE;
        world.config.limits.answer_timeout = 20 * MINUTE;
        world.config.limits.max_attempts = 2;
        world.config.retry.initial = 10 * MINUTE;
        world.config.retry.cap = 10 * MINUTE;
        if budget {
            // Before the turn timeout: a budget stop's deadline, met in a partial visit too.
            world.config.budget.job_agent_time = Some(25 * MINUTE);
        }
        let mut plane = Plane {
            app: world.app().await,
            world,
            clock: Clock::default(),
            reference,
            next_issue: 1,
            moved: false,
            partial_after_moves: 0,
        };
        if reference {
            plane.app.control_plane().skip_quiet_passes(false);
        }
        for kind in [0, 0, 1] {
            plane.add_issue(kind);
        }
        plane.settle().await;
        plane
    }

    fn add_issue(&mut self, kind: u8) {
        let body = match kind {
            0 => "Keep working. [sim:hang]",
            1 => "[sim:ask] Do it.",
            // Its turns end on their own (the world's 50 ms): the first fails, the retry succeeds.
            _ => "Breaks once, then works. [sim:fail-times=1]",
        };
        self.world.add_issue(REPO_A, self.next_issue, body);
        self.next_issue += 1;
    }

    async fn tick(&mut self) -> Vec<(JobState, JobState)> {
        if self.reference {
            self.app.control_plane().forget_cached_ledger();
        }
        let partial = self.app.control_plane().partial_passes();
        let report = self.app.tick(self.clock.now()).await.expect("a tick");
        if self.moved && self.app.control_plane().partial_passes() > partial {
            self.partial_after_moves += 1;
        }
        self.moved = !report.progress.is_empty();
        report.progress.iter().map(|p| (p.from, p.to)).collect()
    }

    /// Ticks until nothing is left to happen: T3 admitted every turn it accepted, the stream has
    /// every event, and for three ticks in a row and at least 250 ms (five times the turns that
    /// end on their own) nothing was recorded and T3 changed nothing.
    async fn settle(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet = 0;
        let mut quiet_since = Instant::now();
        while quiet < 3 || quiet_since.elapsed() < Duration::from_millis(250) {
            let sequence = self.world.sim.sequence();
            let moves = self.tick().await;
            let admitted = (self.world.sim.read_model().threads.iter())
                .all(|t| t.deleted_at.is_some() || t.latest_turn.is_some() || t.session.is_none());
            let caught_up = self.app.control_plane().stream_sequence() == Some(self.world.sim.sequence());
            if moves.is_empty() && admitted && caught_up && sequence == self.world.sim.sequence() {
                quiet += 1;
            } else {
                quiet = 0;
                quiet_since = Instant::now();
            }
            assert!(Instant::now() < deadline, "not settled within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The threads T3 runs now (not deleted, their turn running), by issue number.
    async fn running_threads(&self) -> Vec<String> {
        let mut live = self.app.ledger().watched_attempts().await.unwrap();
        live.sort_by_key(|a| a.issue.number);
        let model = self.world.sim.read_model();
        live.into_iter()
            .filter(|a| {
                model.threads.iter().any(|t| {
                    t.id.as_str() == a.thread_id.as_str()
                        && t.deleted_at.is_none()
                        && t.latest_turn
                            .as_ref()
                            .is_some_and(|turn| turn.completed_at.is_none())
                })
            })
            .map(|a| a.thread_id.to_string())
            .collect()
    }

    async fn apply(&mut self, step: &Step) {
        match step {
            Step::Issue(kind) => self.add_issue(*kind),
            Step::IssueRefused => {
                self.world.sim.set_faults(t3_sim::FaultPlan {
                    error_rate: 1.0,
                    ..t3_sim::FaultPlan::default()
                });
                self.add_issue(0);
                self.tick().await;
                self.world.sim.set_faults(t3_sim::FaultPlan::default());
            }
            Step::Finish { k, ok } => {
                let threads = self.running_threads().await;
                if let Some(thread) = threads.get(k % threads.len().max(1)) {
                    let outcome = if *ok {
                        TurnOutcome::Completed
                    } else {
                        TurnOutcome::Error("the agent broke".into())
                    };
                    self.world.sim.finish_turn(thread, outcome);
                }
            }
            Step::Delete(k) => {
                let threads = self.running_threads().await;
                if let Some(thread) = threads.get(k % threads.len().max(1)) {
                    let delete = serde_json::json!({
                        "type": "thread.delete",
                        "commandId": format!("test-delete-{thread}"),
                        "threadId": thread,
                    });
                    let command = serde_json::from_value(delete).expect("a delete command");
                    self.world.sim.apply_command(command).expect("deleted");
                }
            }
            Step::Cancel(k) => {
                let running = self.app.ledger().jobs_in(&[JobState::Running]).await.unwrap();
                if !running.is_empty() {
                    let number = running[k % running.len()].issue.number;
                    let cancel = afk_core::Event::Cancel {
                        reason: afk_core::CancelReason::ByHand,
                    };
                    let pick = |jobs: Vec<Job>| jobs.into_iter().find(|j| j.issue.number == number).unwrap();
                    record_from_another_process(&self.world, pick, &cancel, self.clock.now()).await;
                }
            }
            Step::Jump(minutes) => self.clock.jump(Duration::from_secs(*minutes * 60)),
        }
        self.settle().await;
    }

    /// Each job's issue, state and attempts, and the moves recorded for it, in order.
    async fn ledger(&self) -> Vec<(u64, JobState, u32, Vec<(JobState, JobState)>)> {
        let mut out = Vec::new();
        for job in self.app.ledger().jobs().await.unwrap() {
            let events = self.app.ledger().events(job.id).await.unwrap();
            let moves = events.iter().map(|e| (e.from, e.to)).collect();
            out.push((job.issue.number, job.state, job.attempts, moves));
        }
        out.sort_by_key(|(number, ..)| *number);
        out
    }
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 8,
        max_shrink_iters: 8,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    })]

    /// What the passes over what changed (and the skipped ones, and the live attempts patched
    /// with afk's own moves) decide is what whole passes over fresh reads decide: two control
    /// planes, each over its own T3 and ledger, take the same random steps (threads finishing,
    /// failing, deleted in T3, agents asking a person, new issues dispatched or their dispatch
    /// deferred by a refusing T3, a job cancelled by
    /// another handle, time passing across the turn, stall, answer and back-off deadlines);
    /// after each step both have settled and their ledgers hold the same jobs in the same states
    /// with the same moves. The reference forgets its caches before every tick and never skips
    /// or narrows a pass. (Whether a move comes a tick earlier or later is not compared: the
    /// stand-in's timing differs between the two worlds; what each step leads to is.)
    #[test]
    fn passes_over_what_changed_decide_as_whole_passes_over_fresh_reads(
        steps in proptest::collection::vec(step(), 1..10),
        budget in proptest::bool::ANY,
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut fast = Plane::new(false, budget).await;
            let mut reference = Plane::new(true, budget).await;
            assert_eq!(fast.ledger().await, reference.ledger().await, "at the start");
            for (i, step) in steps.iter().enumerate() {
                fast.apply(step).await;
                reference.apply(step).await;
                assert_eq!(
                    fast.ledger().await,
                    reference.ledger().await,
                    "after step {i} of {steps:?}"
                );
            }
            let plane = fast.app.control_plane();
            eprintln!(
                "passes: {} partial, {} skipped; reference: {} partial, {} skipped",
                plane.partial_passes(),
                plane.skipped_passes(),
                reference.app.control_plane().partial_passes(),
                reference.app.control_plane().skipped_passes(),
            );
            assert_eq!(reference.app.control_plane().partial_passes(), 0);
            // The dispatches of the start are moves afk recorded: the ticks after them visit
            // what changed (were they all whole, this test would prove nothing).
            assert!(fast.partial_after_moves > 0, "no pass over what changed after a move");
        });
    }
}
