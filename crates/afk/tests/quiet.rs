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
    // (a new read) and makes the whole pass again, then the fleet is quiet once more.
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(whole && moves.is_empty(), "{moves:?}");
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
/// them all; the next makes the whole pass over the patched read (a pass over the changed
/// attempts alone is not done yet), which sees the job's attempt gone. Another handle's write
/// after it is read whole at the very next tick.
#[tokio::test]
async fn a_tick_after_a_recorded_move_reads_the_live_attempts_of_the_moved_job_only() {
    let (world, mut app, clock) = running_fleet(6).await;
    let (reads, patches) = {
        let plane = app.control_plane();
        (plane.watched_reads(), plane.watched_patch_reads())
    };
    finish_one_visiting_it_alone(&world, &mut app, &clock, 3).await;
    let visited = app.control_plane().visited_attempts();
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(whole && moves.is_empty(), "{moves:?}");
    let plane = app.control_plane();
    assert_eq!(plane.watched_reads(), reads, "no read of every live attempt");
    assert_eq!(
        plane.watched_patch_reads(),
        patches + 1,
        "the finished job's live attempts were read back once"
    );
    assert_eq!(
        plane.visited_attempts() - visited,
        5,
        "the whole pass visits the five still running, not the finished one"
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
/// read, by identity) and makes the whole pass, which indexes that read by thread; the next tick a change at T3 wakes then visits
/// the changed thread's attempt alone without walking the fleet to index it (it did, before).
#[tokio::test]
async fn after_a_recorded_move_a_change_to_one_thread_costs_only_that_thread() {
    let (world, mut app, clock) = running_fleet(6).await;
    finish_one_visiting_it_alone(&world, &mut app, &clock, 3).await;
    let builds = app.control_plane().live_index_builds();
    let (whole, moves) = tick_once(&mut app, &clock).await;
    assert!(whole && moves.is_empty(), "{moves:?}");
    assert_eq!(
        app.control_plane().live_index_builds(),
        builds + 1,
        "the whole pass over the new read indexed it"
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
