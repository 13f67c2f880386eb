//! The control app against the T3 stand-in over loopback: limits, retries, timeouts,
//! cancellation, T3 outages. Each test drives `App::tick` as `afk run` does.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use afk_core::{JobState, Priority};
use common::*;
use t3_client::wire::{SessionStatus, TurnState};

#[tokio::test]
async fn concurrency_limits_hold_globally_and_per_repository() {
    let mut world = World::new(Duration::from_millis(150)).await;
    world.config.limits.max_concurrent = 3;
    world.config.limits.per_repo = 2;
    world.add_issues(REPO_A, 1..=5);
    world.add_issues(REPO_B, 6..=8);
    let mut app = world.app().await;
    let mut peak = 0;
    let jobs = tick_until(
        &mut app,
        Duration::from_secs(30),
        |jobs| {
            let live: Vec<_> = jobs.iter().filter(|j| j.state.has_live_attempt()).collect();
            let mut per_repo: HashMap<String, usize> = HashMap::new();
            for j in &live {
                *per_repo.entry(j.issue.repo.to_string()).or_default() += 1;
            }
            assert!(live.len() <= 3, "{} attempts in flight, limit 3", live.len());
            assert!(
                per_repo.values().all(|&n| n <= 2),
                "per-repo limit broken: {per_repo:?}"
            );
            peak = peak.max(live.len());
        },
        all_final(8),
    )
    .await;
    assert_eq!(peak, 3, "the global limit should be used fully");
    assert_all_succeeded_first_time(&jobs);
    assert_eq!(world.sim.threads().len(), 8, "one thread per attempt");
}

#[tokio::test]
async fn higher_priority_issues_are_dispatched_first() {
    let mut world = World::new(Duration::from_millis(100)).await;
    world.config.limits.max_concurrent = 1;
    world.add_issue_with_priority(REPO_A, 1, "Later.", Priority::P3);
    world.add_issue_with_priority(REPO_B, 2, "First.", Priority::P0);
    let mut app = world.app().await;
    let jobs = tick_until(
        &mut app,
        Duration::from_secs(20),
        |_| {},
        |jobs| jobs.iter().any(|j| j.state != JobState::Queued),
    )
    .await;
    assert_eq!(job(&jobs, REPO_B, 2).state, JobState::Running);
    assert_eq!(job(&jobs, REPO_A, 1).state, JobState::Queued);
}

#[tokio::test]
async fn failed_turns_are_retried_with_new_threads_then_given_up() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.limits.max_attempts = 3;
    world.add_issue(REPO_A, 1, "Always breaks. [sim:fail]");
    let mut app = world.app().await;
    let jobs = tick_until_all_final(&mut app, 1).await;
    let job = job(&jobs, REPO_A, 1);
    assert_eq!(job.state, JobState::GivenUp);
    assert_eq!(job.attempts, 3);
    let attempts = app.ledger().attempts(job.id).await.unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts
        .iter()
        .all(|a| a.last_error.as_deref().is_some_and(|e| !e.is_empty())));
    let threads: std::collections::HashSet<_> = attempts.iter().map(|a| a.thread_id.clone()).collect();
    assert_eq!(threads.len(), 3, "each attempt has its own thread");
    assert_eq!(world.sim.threads().len(), 3);
}

#[tokio::test]
async fn a_turn_that_fails_once_succeeds_on_the_retry_with_the_previous_error_in_the_prompt() {
    let world = World::new(Duration::from_millis(50)).await;
    world.add_issue(REPO_A, 1, "Flaky. [sim:fail-times=1]");
    let mut app = world.app().await;
    let jobs = tick_until_all_final(&mut app, 1).await;
    let job = job(&jobs, REPO_A, 1);
    assert_eq!((job.state, job.attempts), (JobState::Succeeded, 2));
    let attempts = app.ledger().attempts(job.id).await.unwrap();
    assert!(
        attempts[1].prompt.contains("previous attempt ended with"),
        "the retry's prompt names the previous error"
    );
}

#[tokio::test]
async fn a_hung_thread_is_interrupted_at_the_turn_timeout() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.limits.max_attempts = 1;
    world.config.watch.turn_timeout = Duration::from_millis(300);
    world.add_issue(REPO_A, 1, "Never ends. [sim:hang]");
    let mut app = world.app().await;
    let jobs = tick_until_all_final(&mut app, 1).await;
    let job = job(&jobs, REPO_A, 1);
    assert_eq!(job.state, JobState::GivenUp);
    let attempts = app.ledger().attempts(job.id).await.unwrap();
    assert_eq!(attempts[0].state, afk_core::AttemptState::TimedOut);
    assert!(attempts[0]
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("turn timeout"));
    let model = world.sim.read_model();
    let thread = model
        .threads
        .iter()
        .find(|t| t.id == attempts[0].thread_id)
        .unwrap();
    // Interrupted, then (as in the real T3) read as completed; the session stopped either way.
    assert!(matches!(
        thread.latest_turn.as_ref().map(|t| t.state),
        Some(TurnState::Interrupted | TurnState::Completed)
    ));
    assert_eq!(
        thread.session.as_ref().map(|s| s.status),
        Some(SessionStatus::Stopped)
    );
}

#[tokio::test]
async fn a_stalled_thread_is_interrupted_and_retried() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.limits.max_attempts = 2;
    world.config.watch.stall_timeout = Duration::from_millis(300);
    world.add_issue(REPO_A, 1, "Goes quiet. [sim:hang]");
    let mut app = world.app().await;
    let jobs = tick_until_all_final(&mut app, 1).await;
    let job = job(&jobs, REPO_A, 1);
    assert_eq!((job.state, job.attempts), (JobState::GivenUp, 2));
    let attempts = app.ledger().attempts(job.id).await.unwrap();
    assert!(attempts[0]
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("stalled"));
    let model = world.sim.read_model();
    // Each was stopped (its interrupted turn reads completed afterwards, as in the real T3).
    assert!(model
        .threads
        .iter()
        .all(|t| t.session.as_ref().map(|s| s.status) == Some(SessionStatus::Stopped)));
}

#[tokio::test]
async fn an_issue_removed_while_running_is_interrupted_and_cancelled_and_requeued_when_back() {
    let mut world = World::new(Duration::from_millis(50)).await;
    // Its only attempt is used up when it is cancelled: coming back gives it a fresh budget.
    world.config.limits.max_attempts = 1;
    let file = world.add_issue(REPO_A, 1, "Long. [sim:hang]");
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::Running).await;
    std::fs::remove_file(&file).unwrap();
    let jobs = tick_until_first_job_is(&mut app, JobState::Cancelled).await;
    let attempts = app.ledger().attempts(jobs[0].id).await.unwrap();
    // One more tick carries out the stop that the cancellation recorded.
    tick_until_true(&mut app, || first_thread_interrupted(&world.sim)).await;
    assert_eq!(attempts[0].state, afk_core::AttemptState::Cancelled);

    // The file comes back: the job is queued again and runs a new attempt.
    world.add_issue(REPO_A, 1, "Short now. [sim:duration=50]");
    let jobs = tick_until(
        &mut app,
        Duration::from_secs(20),
        |_| {},
        |jobs| jobs.first().is_some_and(|j| j.state == JobState::Succeeded),
    )
    .await;
    assert_eq!(jobs[0].attempts, 2);
    assert_eq!(world.sim.threads().len(), 2);
}

#[tokio::test]
async fn an_issue_file_edited_after_it_was_taken_changes_its_job() {
    let world = World::new(Duration::from_millis(50)).await;
    let file = world.add_issue(REPO_A, 1, "First text. [sim:hang]");
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::Running).await;
    // Several scans of the same file in between: the intake remembers what it took.
    app.tick(chrono::Utc::now()).await.unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("First text.", "Second text.")).unwrap();
    let jobs = tick_until(
        &mut app,
        Duration::from_secs(20),
        |_| {},
        |jobs| jobs.first().is_some_and(|j| j.body.contains("Second text.")),
    )
    .await;
    assert_eq!(
        jobs[0].state,
        JobState::Running,
        "an edit does not restart the work"
    );
}

#[tokio::test]
async fn a_job_requeued_by_a_person_after_its_file_was_removed_is_cancelled_again() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.limits.max_attempts = 1;
    let file = world.add_issue(REPO_A, 1, "Fails. [sim:fail]");
    let mut app = world.app().await;
    let jobs = tick_until_all_final(&mut app, 1).await;
    assert_eq!(jobs[0].state, JobState::GivenUp);
    std::fs::remove_file(&file).unwrap();
    app.tick(chrono::Utc::now()).await.unwrap();
    // `afk dispatch`: the job is queued again, but its file is gone, and the folder says what
    // afk works on.
    let requeue = afk_core::apply(
        jobs[0].status(),
        &afk_core::Event::Requeue {
            by: afk_core::RequeueBy::Person,
        },
        &afk_core::RetryPolicy::default(),
        chrono::Utc::now(),
    )
    .unwrap();
    app.ledger()
        .record(jobs[0].id, &requeue, None, chrono::Utc::now())
        .await
        .unwrap();
    let jobs = tick_until_first_job_is(&mut app, JobState::Cancelled).await;
    assert_eq!(jobs[0].attempts, 1, "no attempt was started for it");
}

#[tokio::test]
async fn t3_answering_5xx_for_a_while_delays_but_loses_nothing() {
    let world = World::new(Duration::from_millis(50)).await;
    world.add_issues(REPO_A, 1..=3);
    world.sim.set_unavailable(true);
    let mut app = world.app().await;
    tick_without_t3(&mut app, 5, "T3 down is not fatal").await;
    let jobs = app.ledger().jobs().await.unwrap();
    assert_eq!(
        states(&jobs),
        vec![JobState::Queued; 3],
        "nothing moves while T3 is down"
    );
    world.sim.set_unavailable(false);
    let jobs = tick_until_all_final(&mut app, 3).await;
    assert_all_succeeded_first_time(&jobs);
    assert_eq!(world.sim.threads().len(), 3);
}

#[tokio::test]
async fn flaky_t3_during_dispatch_never_makes_a_second_thread() {
    let world = World::new(Duration::from_millis(50)).await;
    world.add_issues(REPO_A, 1..=6);
    world.sim.set_faults(t3_sim::FaultPlan {
        error_rate: 0.4,
        ..t3_sim::FaultPlan::default()
    });
    let mut app = world.app().await;
    let jobs = tick_until(
        &mut app,
        Duration::from_secs(60),
        |_| {},
        |jobs| jobs.len() == 6 && jobs.iter().all(|j| j.state.is_final()),
    )
    .await;
    let mut known = std::collections::HashSet::new();
    for job in &jobs {
        for attempt in app.ledger().attempts(job.id).await.unwrap() {
            known.insert(attempt.thread_id);
        }
    }
    // Every thread in T3 belongs to an attempt the ledger knows: no retry made a stray second one.
    for thread in world.sim.read_model().threads {
        assert!(
            known.contains(thread.id.as_str()),
            "thread {} is no attempt's",
            thread.id
        );
    }
    assert!(jobs.iter().any(|j| j.state == JobState::Succeeded), "{jobs:#?}");
}

#[tokio::test]
async fn a_repository_without_a_t3_project_fails_with_a_clear_reason() {
    let world = World::new(Duration::from_millis(50)).await;
    world.add_issue("someone/else", 7, "Do it.");
    let mut app = world.app().await;
    let jobs = tick_until(&mut app, Duration::from_secs(10), |_| {}, all_final(1)).await;
    assert_eq!(jobs[0].state, JobState::Failed);
    let events = app.ledger().events(jobs[0].id).await.unwrap();
    assert!(events
        .last()
        .unwrap()
        .note
        .contains("no T3 project is configured for repository someone/else"));
    assert_eq!(world.sim.threads().len(), 0);
}

#[tokio::test]
async fn a_dispatch_whose_replies_are_lost_never_leaves_two_agents_working() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.retry.max_dispatch_tries = 2;
    world.config.limits.max_attempts = 2;
    world.add_issue(REPO_A, 1, "Long. [sim:hang]");
    // T3 applies every command but afk never hears back.
    world.sim.set_faults(t3_sim::FaultPlan {
        lost_reply_rate: 1.0,
        ..t3_sim::FaultPlan::default()
    });
    let mut app = world.app().await;
    let running_threads = |sim: &t3_sim::SimServer| {
        sim.read_model()
            .threads
            .iter()
            .filter(|t| t3_client::ThreadState::of(Some(t)) == t3_client::ThreadState::Running)
            .count()
    };
    // T3's view shows the bootstrap landed (the thread's session started): the attempt runs,
    // though afk never heard T3's answer, and no second attempt or thread is made for it.
    let jobs = tick_until(
        &mut app,
        Duration::from_secs(30),
        |_| assert!(running_threads(&world.sim) <= 1, "two agents work on one issue"),
        |jobs| jobs.first().is_some_and(|j| j.state == JobState::Running),
    )
    .await;
    assert_eq!(jobs[0].attempts, 1, "{jobs:#?}");
    assert_eq!(world.sim.threads().len(), 1, "one thread for the one attempt");
}

#[tokio::test]
async fn a_rejected_operate_token_holds_dispatch_without_failing_jobs() {
    let mut world = World::new(Duration::from_millis(50)).await;
    let read_file = world.dir.path().join("t3-read-token");
    std::fs::write(&read_file, "t3-read-only-77").unwrap();
    world
        .sim
        .grant_token(t3_sim::TokenGrant::read_only("t3-read-only-77"));
    world.config.t3.read_token_file = Some(read_file);
    // The operate token is wrong: the watcher can read, nothing can be dispatched.
    std::fs::write(&world.config.t3.token_file, "expired-operate-token").unwrap();
    world.add_issues(REPO_A, 1..=2);
    let mut app = world.app().await;
    for _ in 0..4 {
        app.tick(chrono::Utc::now()).await.unwrap();
    }
    let jobs = app.ledger().jobs().await.unwrap();
    assert!(
        jobs.iter().all(|j| !j.state.is_final()),
        "a token problem fails no job: {jobs:#?}"
    );
    std::fs::write(&world.config.t3.token_file, TOKEN).unwrap();
    let jobs = tick_until_all_final(&mut app, 2).await;
    assert_all_succeeded_first_time(&jobs);
}

#[tokio::test]
async fn a_thread_left_without_its_turn_is_deleted_before_the_job_moves_on() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.t3.dispatch = afk::config::DispatchMode::Http;
    world.config.t3.request_timeout = Duration::from_millis(300);
    world.config.retry.max_dispatch_tries = 2;
    world.config.limits.max_attempts = 1;
    world.add_issue(REPO_A, 1, "Do it.");
    // thread.create goes through; the turn never does: a thread without a turn is left behind.
    let _held = world
        .sim
        .pause("thread.turn.start", t3_sim::PausePhase::BeforeApply);
    let mut app = world.app().await;
    let jobs = tick_until_first_job_is(&mut app, JobState::GivenUp).await;
    assert_eq!(jobs[0].attempts, 1, "{jobs:#?}");
    // It has nothing to interrupt and would never read as stopped: after a grace (a view that
    // lags T3 may not show a session starting yet) afk stops its session, and once that reads
    // stopped for a while, deletes it. afk's clock moves 2 s a tick; the stand-in's is real.
    let start = chrono::Utc::now();
    let mut ticks = 0;
    while !world.sim.threads().iter().all(|t| t.deleted) {
        ticks += 1;
        assert!(
            ticks < 200,
            "the thread is never deleted: {:#?}",
            world.sim.threads()
        );
        app.tick(start + chrono::Duration::seconds(2 * ticks))
            .await
            .expect("a tick");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let threads = world.sim.threads();
    assert_eq!(threads.len(), 1, "{threads:#?}");
    assert_eq!(threads[0].turns, 0, "no turn ever started in it");
    let stops = world
        .sim
        .commands_received()
        .iter()
        .filter(|(k, _)| *k == "thread.session.stop")
        .count();
    assert!(stops >= 1, "its session was stopped before it was deleted");
    // The next view shows it deleted: the stop is confirmed.
    while !app.ledger().attempts_to_stop().await.unwrap().is_empty() {
        ticks += 1;
        assert!(ticks < 200, "the stop is never confirmed");
        app.tick(start + chrono::Duration::seconds(2 * ticks))
            .await
            .expect("a tick");
    }
}
