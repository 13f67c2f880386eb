//! Budgets (`[budget]`, issue 16) end to end, against the T3 stand-in on loopback: a job whose
//! turns spend its agent time stops at the next safe point with the figures; a turn that alone
//! runs past it has its session stopped; a repository over its daily budget of new jobs keeps
//! the rest queued, says so, and starts them after UTC midnight (the tick's injected clock);
//! `AFK.md` lowers a budget and cannot raise one; a requeue gives a fresh budget; a kill -9
//! around the stop neither loses the job nor stops it twice.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use afk_core::{apply, AttemptState, Event, JobState, RequeueBy, RetryPolicy};
use afk_github::SystemClock;
use chrono::{DateTime, Utc};
use common::*;
use t3_sim::PausePhase;

/// The notes of the first job's events.
async fn notes(app: &afk::app::App) -> Vec<String> {
    let job = &app.ledger().jobs().await.unwrap()[0];
    let events = app.ledger().events(job.id).await.unwrap();
    events.into_iter().map(|e| e.note).collect()
}

#[tokio::test]
async fn a_job_whose_turns_spend_its_agent_time_gives_up_before_its_next_attempt_with_the_figures() {
    let mut world = World::new(Duration::from_millis(200)).await;
    world.config.limits.max_attempts = 10;
    // Turns of 600 ms against 1.5 s: two or three of them spend it, and one alone (600 ms and
    // afk's lag in seeing its end) stays well below it, so none is stopped mid-turn.
    world.config.budget.job_agent_time = Some(Duration::from_millis(1500));
    world.add_issue(REPO_A, 1, "Always breaks. [sim:fail] [sim:duration=600]");
    let mut app = world.app().await;
    let jobs = tick_until_all_final(&mut app, 1).await;
    let job = &jobs[0];
    assert_eq!(job.state, JobState::GivenUp);
    assert!(
        (2..10).contains(&job.attempts),
        "stopped by its budget, not its attempts: {job:#?}"
    );
    let error = job.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("agent time budget: used") && error.ends_with("of 1s 500ms"),
        "{error}"
    );
    let notes = notes(&app).await;
    let last = notes.last().unwrap();
    assert_eq!(last, error, "the note is the job's error: {notes:#?}");
    assert!(
        error.starts_with(&format!(
            "giving up before attempt {}: agent time budget: used ",
            job.attempts + 1
        )),
        "{error}"
    );
    // No attempt started after it, and no turn was cut short: each ended by itself.
    let attempts = app.ledger().attempts(job.id).await.unwrap();
    assert_eq!(attempts.len() as u32, job.attempts);
    assert!(attempts.iter().all(|a| a.state == AttemptState::Failed));
    assert!(!notes.iter().any(|n| n.contains("stopped")), "{notes:#?}");

    // `afk dispatch` (a person's requeue) gives it a fresh budget: its retries run again.
    let before = job.attempts;
    let requeue = apply(
        job.status(),
        &Event::Requeue {
            by: RequeueBy::Person,
        },
        &RetryPolicy::default(),
        Utc::now(),
    )
    .unwrap();
    app.ledger()
        .record(job.id, &requeue, None, Utc::now())
        .await
        .unwrap();
    let jobs = tick_until_all_final(&mut app, 1).await;
    assert_eq!(jobs[0].state, JobState::GivenUp);
    assert!(
        jobs[0].attempts >= before + 2,
        "a fresh budget allows a retry again: {:#?}",
        jobs[0]
    );
}

#[tokio::test]
async fn a_turn_that_alone_runs_past_the_budget_has_its_session_stopped() {
    let mut world = World::new(Duration::from_millis(100)).await;
    world.config.limits.max_attempts = 3;
    world.config.budget.job_agent_time = Some(Duration::from_millis(300));
    world.add_issue(REPO_A, 1, "Never ends. [sim:hang]");
    let mut app = world.app().await;
    let jobs = tick_until_all_final(&mut app, 1).await;
    let job = &jobs[0];
    assert_eq!((job.state, job.attempts), (JobState::GivenUp, 1), "not retried");
    let attempts = app.ledger().attempts(job.id).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::Failed);
    let error = attempts[0].last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("agent time budget: used")
            && error.contains("of 300ms (its running turn alone is past it)"),
        "{error}"
    );
    // The recorded stop is carried out: the session is stopped, never left working.
    tick_until_true(&mut app, || first_thread_interrupted(&world.sim)).await;
    let stops = notes(&app)
        .await
        .into_iter()
        .filter(|n| n.contains("stopped: agent time budget"))
        .count();
    assert_eq!(stops, 1);
}

/// Ticks `app` at `clock_base` plus the real time passed since `started`, until `done` holds for
/// the jobs (20 s at most).
async fn tick_at_until(
    app: &mut afk::app::App,
    clock_base: DateTime<Utc>,
    done: impl Fn(&[afk_ledger::Job]) -> bool,
) -> Vec<afk_ledger::Job> {
    let started = Instant::now();
    loop {
        let now = clock_base + chrono::Duration::from_std(started.elapsed()).unwrap();
        app.tick(now).await.expect("a tick");
        let jobs = app.ledger().jobs().await.unwrap();
        if done(&jobs) {
            return jobs;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "not done: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_repository_over_its_daily_new_jobs_keeps_the_rest_queued_until_utc_midnight_and_says_so() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.budget.repo_new_jobs_per_day = Some(2);
    world.add_issues(REPO_A, 1..=4);
    world.add_issue(REPO_B, 9, "Another repository's budget is its own.");
    let mut app = world.app().await;
    let evening: DateTime<Utc> = "2026-11-30T23:58:00Z".parse().unwrap();
    let succeeded = |n: usize| {
        move |jobs: &[afk_ledger::Job]| jobs.iter().filter(|j| j.state == JobState::Succeeded).count() == n
    };
    let jobs = tick_at_until(&mut app, evening, succeeded(3)).await;
    let queued: Vec<_> = jobs.iter().filter(|j| j.state == JobState::Queued).collect();
    assert_eq!(queued.len(), 2, "{jobs:#?}");
    assert!(queued
        .iter()
        .all(|j| j.issue.repo.as_str() == REPO_A && j.attempts == 0));
    // It stays so for as long as the day lasts, and `afk status` says why.
    let jobs = tick_at_until(&mut app, evening + chrono::Duration::seconds(60), |_| true).await;
    assert_eq!(jobs.iter().filter(|j| j.state == JobState::Queued).count(), 2);
    let waits = app.ledger().waits().await.unwrap();
    let wait = waits
        .iter()
        .find(|w| w.topic == format!("budget:{REPO_A}"))
        .unwrap_or_else(|| panic!("{waits:#?}"));
    assert_eq!(
        wait.message,
        "queued: repository acme/api used its daily budget of 2 new jobs; resumes at 00:00 UTC"
    );
    assert!(!wait.needs_person);
    // `afk jobs` says it beside each job it holds.
    let listed = afk::views::newest_jobs(app.ledger(), &Default::default(), 50)
        .await
        .unwrap();
    let held: Vec<_> = listed.iter().filter(|v| v.state == "queued").collect();
    assert_eq!(held.len(), 2, "{listed:#?}");
    assert!(
        held.iter()
            .all(|v| v.held.as_deref() == Some(wait.message.as_str())),
        "{held:#?}"
    );
    assert!(afk::views::jobs_table(&listed).contains("queued: repository acme/api used its daily budget"));
    // Past midnight (UTC) the rest start, and the wait is over.
    let morning: DateTime<Utc> = "2026-12-01T00:00:01Z".parse().unwrap();
    let jobs = tick_at_until(&mut app, morning, succeeded(5)).await;
    assert!(jobs.iter().all(|j| j.attempts == 1), "{jobs:#?}");
    assert!(app
        .ledger()
        .waits()
        .await
        .unwrap()
        .iter()
        .all(|w| !w.topic.starts_with("budget:")));
}

/// A burst under a daily budget of new jobs is dispatched at once, not one start per answer
/// from T3: while T3 holds a bootstrap of acme/api, acme/web's is sent all the same; and the
/// starts decided together never go past the budget (acme/api's third job stays queued).
#[tokio::test]
async fn a_burst_under_a_daily_budget_is_dispatched_at_once_within_the_budget() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.limits.per_repo = 3;
    world.config.budget.repo_new_jobs_per_day = Some(2);
    world.add_issues(REPO_A, 1..=3);
    world.add_issue(REPO_B, 4, "Another repository's budget is its own.");
    let held = world.sim.pause("thread.turn.start", PausePhase::BeforeApply);
    let mut app = world.app().await;
    // Lets the bootstraps go once two are held at once (one per checkout: acme/api's second
    // waits for its first), or after 5 s (then the dispatcher waited for an answer).
    let releaser = {
        let held = held.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while held.held() < 2 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let sent = held.held();
            held.release();
            sent
        })
    };
    let noon: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
    let within_budget = |jobs: &[afk_ledger::Job]| {
        let started = (jobs.iter())
            .filter(|j| j.issue.repo.as_str() == REPO_A && j.attempts > 0)
            .count();
        assert!(started <= 2, "past the budget of 2: {jobs:#?}");
        jobs.iter().filter(|j| j.state == JobState::Succeeded).count() == 3
    };
    let jobs = tick_at_until(&mut app, noon, within_budget).await;
    assert_eq!(
        releaser.await.expect("the releaser"),
        2,
        "both repositories' bootstraps in flight at once"
    );
    let queued: Vec<_> = jobs.iter().filter(|j| j.state == JobState::Queued).collect();
    assert_eq!(queued.len(), 1, "{jobs:#?}");
    assert!(queued[0].issue.repo.as_str() == REPO_A && queued[0].attempts == 0);
}

/// A world on the stand-in GitHub whose `[budget] job_agent_time` is an hour, whose repository's
/// `AFK.md` lowers it to `budget`, with one labelled issue whose turn never ends (the stand-in
/// GitHub lives as long as the handle returned beside the world).
async fn endless_issue_under_afk_md_budget(budget: &str) -> (World, afk_github::testing::GitHubStandIn) {
    let (mut world, github) = World::new(Duration::from_millis(100))
        .await
        .on_github(Duration::from_millis(50), Arc::new(SystemClock))
        .await;
    world.config.budget.job_agent_time = Some(Duration::from_secs(3600));
    github.set_file(
        REPO_A,
        "AFK.md",
        &format!("---\nbudget:\n  job_agent_time: {budget}\n---\nFix {{{{ issue.title }}}}: {{{{ issue.body }}}}\n"),
    );
    let number = github.open_issue(REPO_A, "octocat", "Endless", "Never ends. [sim:hang]");
    github.add_label(REPO_A, number, "afk", GITHUB_WRITER);
    (world, github)
}

#[tokio::test]
async fn afk_md_lowers_a_job_budget_for_its_repository() {
    let (world, _github) = endless_issue_under_afk_md_budget("300ms").await;
    let mut app = world.app().await;
    let jobs = tick_until_all_final(&mut app, 1).await;
    assert_eq!(jobs[0].state, JobState::GivenUp);
    let error = jobs[0].last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("of 300ms"),
        "AFK.md's lower budget applies: {error}"
    );
}

/// After a restart, a running job is held to the budget its repository's `AFK.md` sets, before
/// any new dispatch of that repository resolves it again.
#[tokio::test]
async fn after_a_restart_a_running_job_keeps_the_budget_its_afk_md_sets() {
    let (world, _github) = endless_issue_under_afk_md_budget("2s").await;
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::Running).await;
    drop(app);

    // A new afk on the same ledger: no dispatch of the repository resolves its AFK.md again.
    let mut app = world.app().await;
    let jobs = tick_until_all_final(&mut app, 1).await;
    assert_eq!(jobs[0].state, JobState::GivenUp, "{jobs:#?}");
    let error = jobs[0].last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("of 2s"),
        "AFK.md's budget holds after the restart: {error}"
    );
}

/// After a restart, an `AFK.md` that GitHub did not let afk read when the running job was first
/// visited is read again on the next ticks, though the job's thread stays quiet (its ticks are
/// skipped): the budget it sets then holds.
#[tokio::test]
async fn after_a_restart_an_afk_md_github_refused_is_read_again_while_the_thread_stays_quiet() {
    let (mut world, github) = endless_issue_under_afk_md_budget("2s").await;
    world.config.watch.push = true;
    let mut app = world.app().await;
    tick_until_first_job_is(&mut app, JobState::Running).await;
    drop(app);

    // GitHub refuses everything (its rate limit ran out) while the new afk first visits the job.
    github.set_rate_limit(5000, 0, Some(1), afk_github::testing::RateLimitRefusal::Forbidden);
    let mut app = world.app().await;
    for _ in 0..5 {
        let _ = app.tick(Utc::now()).await;
    }
    github.set_rate_limit(5000, 5000, None, afk_github::testing::RateLimitRefusal::Forbidden);
    let jobs = tick_until_all_final(&mut app, 1).await;
    assert_eq!(jobs[0].state, JobState::GivenUp, "{jobs:#?}");
    let error = jobs[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("of 2s"), "AFK.md's budget holds: {error}");
}

#[tokio::test]
async fn afk_md_cannot_raise_a_repository_budget() {
    let (mut world, github) = World::new(Duration::from_millis(50))
        .await
        .on_github(Duration::from_millis(50), Arc::new(SystemClock))
        .await;
    world.config.budget.repo_new_jobs_per_day = Some(1);
    github.set_file(
        REPO_A,
        "AFK.md",
        "---\nbudget:\n  repo_new_jobs_per_day: 5\n---\nFix {{ issue.title }}\n",
    );
    for title in ["One", "Two"] {
        let number = github.open_issue(REPO_A, "octocat", title, "Do it.");
        github.add_label(REPO_A, number, "afk", GITHUB_WRITER);
    }
    let mut app = world.app().await;
    tick_until(
        &mut app,
        Duration::from_secs(20),
        |_| {},
        |jobs| jobs.len() == 2 && jobs.iter().any(|j| j.state == JobState::Succeeded),
    )
    .await;
    // A few more ticks: the second stays queued (the configured budget of 1 holds).
    for _ in 0..5 {
        app.tick(Utc::now()).await.unwrap();
    }
    let jobs = app.ledger().jobs().await.unwrap();
    assert_eq!(
        jobs.iter().filter(|j| j.state == JobState::Queued).count(),
        1,
        "{jobs:#?}"
    );
    let waits = app.ledger().waits().await.unwrap();
    assert!(
        waits
            .iter()
            .any(|w| w.message.contains("its daily budget of 1 new job;")),
        "{waits:#?}"
    );
}

#[tokio::test]
async fn killed_while_stopping_an_over_budget_turn_the_job_is_neither_lost_nor_stopped_twice() {
    let world = World::new(Duration::from_millis(100)).await;
    world.add_issue(REPO_A, 1, "Never ends. [sim:hang]");
    let config = world.write_config();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[budget]\njob_agent_time = \"400ms\"\n");
    std::fs::write(&config, text).unwrap();
    let afk_run = || {
        let mut afk = tokio::process::Command::new(env!("CARGO_BIN_EXE_afk"));
        afk.args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        afk.spawn().expect("afk starts")
    };
    // The stop is held in T3 before it is applied: the over-budget end is in the ledger by then.
    let pause = world.sim.pause("thread.session.stop", PausePhase::BeforeApply);
    let mut afk = afk_run();
    tokio::time::timeout(Duration::from_secs(30), pause.hit())
        .await
        .expect("afk stops the session of the turn past its budget");
    afk.kill().await.expect("afk is killed (SIGKILL)");
    pause.release();
    let ledger = world.ledger().await;
    let job = &ledger.jobs().await.unwrap()[0];
    assert_eq!(job.state, JobState::GivenUp, "recorded before the stop was sent");

    let mut afk = afk_run();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !first_thread_interrupted(&world.sim) {
        assert!(
            Instant::now() < deadline,
            "the restarted afk never stopped the session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Until the stop is marked done in the ledger: nothing left to stop.
    while !ledger.attempts_to_stop().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the stop was never marked done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    afk.kill().await.expect("afk is killed");
    let jobs = ledger.jobs().await.unwrap();
    assert_eq!((jobs[0].state, jobs[0].attempts), (JobState::GivenUp, 1));
    assert_eq!(world.sim.threads().len(), 1, "no other attempt");
    let events = ledger.events(jobs[0].id).await.unwrap();
    let stops = events
        .iter()
        .filter(|e| e.note.contains("stopped: agent time budget"))
        .count();
    assert_eq!(stops, 1, "{events:#?}");
}
