//! A thread whose agent asks a person (the stand-in's `[sim:ask]`): its job waits in
//! `needs_input`, is never timed out, stalled or interrupted, goes back to running once a person
//! answers in T3 (`thread.user-input.respond`), and ends by a session stop when it is cancelled
//! or nobody answers within `[limits] answer_timeout`. A restart keeps the wait.
//!
//! Ticks are driven with a clock that jumps hours ahead while the thread waits, so a wait far
//! longer than every timeout passes without waiting for it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use afk::app::App;
use afk_core::JobState;
use afk_ledger::Job;
use afk_secrets::LiteralProvider;
use chrono::{DateTime, Utc};
use common::*;
use t3_client::wire::{ClientCommand, NonEmptyString, PendingRequest, ThreadUserInputRespond, Timestamp};
use t3_client::{CommandId, ReqwestTransport, T3Client, ThreadId, TransportConfig};
use t3_sim::SimServer;

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

/// The T3 client a person's T3 UI would be: reads the thread and answers.
fn person(sim: &SimServer) -> T3Client {
    let transport = ReqwestTransport::new(TransportConfig {
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
    });
    T3Client::new(
        &sim.url(),
        Arc::new(transport),
        Arc::new(LiteralProvider::new(TOKEN)),
    )
}

/// Answers the open question of `thread` as a person in T3 would.
async fn answer(sim: &SimServer, thread: &ThreadId) {
    let detail = person(sim)
        .thread_detail(thread)
        .await
        .expect("T3 answers")
        .expect("the thread exists");
    let Some(PendingRequest::UserInput {
        request_id: Some(request),
        questions,
    }) = detail.thread.pending_requests().into_iter().next()
    else {
        panic!("the thread asks nothing: {:?}", detail.thread.activities);
    };
    let mut answers = serde_json::Map::new();
    answers.insert(questions[0].id.clone(), serde_json::json!("yes"));
    person(sim)
        .send_command(&ClientCommand::ThreadUserInputRespond(ThreadUserInputRespond {
            command_id: CommandId::generate(),
            thread_id: thread.clone(),
            request_id: NonEmptyString::new(request).unwrap(),
            answers,
            created_at: Timestamp::now(),
        }))
        .await
        .expect("T3 takes the answer");
}

/// The commands afk sent to the stand-in of type `kind`.
fn sent(sim: &SimServer, kind: &str) -> usize {
    sim.commands_received().iter().filter(|(k, _)| *k == kind).count()
}

async fn the_thread(app: &App) -> ThreadId {
    let job = &app.ledger().jobs().await.unwrap()[0];
    app.ledger().attempts(job.id).await.unwrap()[0].thread_id.clone()
}

async fn a_question_waits_for_a_person_for_hours_and_the_job_goes_on_once_answered(push: bool) {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.watch.push = push;
    world.add_issue(REPO_A, 1, "[sim:ask] Do it.");
    let mut app = world.app().await;
    let mut clock = Clock::default();

    let jobs = tick_at_until(&mut app, &clock, first_is(JobState::NeedsInput)).await;
    let waiting = &jobs[0];
    let question = waiting.input_question.as_deref().unwrap_or_default();
    assert!(
        question.contains("may it go on?") && question.contains("yes / no"),
        "the job says what the agent asks: {question:?}"
    );
    assert!(waiting.input_wait_since.is_some());
    let thread = the_thread(&app).await;

    // Hours pass, far beyond the turn and stall timeouts (60 s each) and short of the answer
    // timeout (24 h): the job waits on, untouched.
    for _ in 0..3 {
        clock.jump(Duration::from_secs(2 * 3600));
        app.tick(clock.now()).await.expect("a tick");
        let jobs = app.ledger().jobs().await.unwrap();
        assert_eq!(jobs[0].state, JobState::NeedsInput, "{jobs:#?}");
        assert_eq!(jobs[0].attempts, 1, "not retried");
    }

    answer(&world.sim, &thread).await;
    let jobs = tick_at_until(&mut app, &clock, |jobs| {
        jobs.first().is_some_and(|j| j.state != JobState::NeedsInput)
    })
    .await;
    assert_eq!(
        jobs[0].state,
        JobState::Running,
        "back to running once answered: {jobs:#?}"
    );
    assert!(
        jobs[0].input_waited >= Duration::from_secs(6 * 3600),
        "{:?}",
        jobs[0].input_waited
    );
    assert_eq!(jobs[0].input_question, None);

    let jobs = tick_at_until(&mut app, &clock, first_is(JobState::Succeeded)).await;
    assert_eq!(jobs[0].attempts, 1, "the first attempt succeeded: {jobs:#?}");
    assert_eq!(sent(&world.sim, "thread.turn.interrupt"), 0, "never interrupted");
    assert_eq!(sent(&world.sim, "thread.session.stop"), 0, "never stopped");
    let events = app.ledger().events(jobs[0].id).await.unwrap();
    let path: Vec<(JobState, JobState)> = events.iter().map(|e| (e.from, e.to)).collect();
    assert!(
        path.contains(&(JobState::Running, JobState::NeedsInput))
            && path.contains(&(JobState::NeedsInput, JobState::Running)),
        "{path:?}"
    );
}

#[tokio::test]
async fn following_the_stream_a_question_waits_for_a_person_and_the_job_goes_on_once_answered() {
    a_question_waits_for_a_person_for_hours_and_the_job_goes_on_once_answered(true).await;
}

#[tokio::test]
async fn polling_a_question_waits_for_a_person_and_the_job_goes_on_once_answered() {
    a_question_waits_for_a_person_for_hours_and_the_job_goes_on_once_answered(false).await;
}

#[tokio::test]
async fn nobody_answering_in_time_stops_the_session_never_interrupts_and_fails_the_job() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.limits.answer_timeout = Duration::from_secs(3600);
    world.add_issue(REPO_A, 1, "[sim:ask] Do it.");
    let mut app = world.app().await;
    let mut clock = Clock::default();
    tick_at_until(&mut app, &clock, first_is(JobState::NeedsInput)).await;
    let thread = the_thread(&app).await;

    clock.jump(Duration::from_secs(3601));
    let jobs = tick_at_until(&mut app, &clock, first_is(JobState::Failed)).await;
    let error = jobs[0].last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("nobody answered the agent's question within 1h"),
        "the note says why: {error}"
    );
    // The stop is carried out and confirmed by T3's view.
    let ledger = app.ledger().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ledger.attempts_to_stop().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the stop is never confirmed");
        app.tick(clock.now()).await.expect("a tick");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sent(&world.sim, "thread.session.stop") >= 1);
    assert_eq!(sent(&world.sim, "thread.turn.interrupt"), 0, "never interrupted");
    assert!(
        !world.sim.thread(&thread).unwrap().agent_running,
        "its agent is gone"
    );
    assert_eq!(ledger.jobs().await.unwrap()[0].attempts, 1, "not retried");
}

#[tokio::test]
async fn a_waiting_job_cancelled_stops_its_session_and_never_interrupts() {
    let world = World::new(Duration::from_millis(50)).await;
    let file = world.add_issue(REPO_A, 1, "[sim:ask] Do it.");
    let mut app = world.app().await;
    let clock = Clock::default();
    tick_at_until(&mut app, &clock, first_is(JobState::NeedsInput)).await;
    let thread = the_thread(&app).await;

    std::fs::remove_file(file).unwrap();
    tick_at_until(&mut app, &clock, first_is(JobState::Cancelled)).await;
    let ledger = app.ledger().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ledger.attempts_to_stop().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the stop is never confirmed");
        app.tick(clock.now()).await.expect("a tick");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sent(&world.sim, "thread.session.stop") >= 1);
    assert_eq!(sent(&world.sim, "thread.turn.interrupt"), 0, "never interrupted");
    assert!(!world.sim.thread(&thread).unwrap().agent_running);
}

#[tokio::test]
async fn a_restart_while_the_thread_waits_keeps_the_wait_and_its_start() {
    let world = World::new(Duration::from_millis(50)).await;
    world.add_issue(REPO_A, 1, "[sim:ask] Do it.");
    let mut app = world.app().await;
    let clock = Clock::default();
    let before = tick_at_until(&mut app, &clock, first_is(JobState::NeedsInput)).await;
    let thread = the_thread(&app).await;
    drop(app);

    let mut app = world.app().await;
    for _ in 0..3 {
        app.tick(clock.now()).await.expect("a tick");
    }
    let after = app.ledger().jobs().await.unwrap();
    assert_eq!(after[0].state, JobState::NeedsInput, "{after:#?}");
    assert_eq!(
        after[0].input_wait_since, before[0].input_wait_since,
        "the wait keeps its start"
    );
    assert_eq!(after[0].input_question, before[0].input_question);

    answer(&world.sim, &thread).await;
    let jobs = tick_at_until(&mut app, &clock, first_is(JobState::Succeeded)).await;
    assert_eq!(jobs[0].attempts, 1);
    assert_eq!(sent(&world.sim, "thread.turn.interrupt"), 0);
}

#[tokio::test]
async fn on_github_the_issue_says_what_the_agent_asks_with_the_link_and_wears_needs_you_until_answered() {
    use afk_github::testing::GitHubStandIn;

    let (world, github) = World::new(Duration::from_millis(50))
        .await
        .on_github(
            Duration::from_millis(50),
            std::sync::Arc::new(afk_github::SystemClock),
        )
        .await;
    let number = github.open_issue(REPO_A, "octocat", "Drop the old API", "[sim:ask] Do it.");
    github.add_label(REPO_A, number, "afk", "mona");
    let mut app = world.app().await;
    let clock = Clock::default();
    let labels = |github: &GitHubStandIn| github.labels(REPO_A, number);
    let status = |github: &GitHubStandIn| {
        github
            .comments(REPO_A, number)
            .into_iter()
            .filter(|c| c.contains(afk_github::STATUS_MARKER))
            .collect::<Vec<_>>()
    };

    tick_at_until(&mut app, &clock, first_is(JobState::NeedsInput)).await;
    let thread = the_thread(&app).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !labels(&github).contains(&"afk:needs-you".to_string()) {
        assert!(
            Instant::now() < deadline,
            "no afk:needs-you: {:?}",
            labels(&github)
        );
        app.tick(clock.now()).await.expect("a tick");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !labels(&github).contains(&"afk:running".to_string()),
        "{:?}",
        labels(&github)
    );
    let comments = status(&github);
    assert_eq!(comments.len(), 1, "{comments:#?}");
    let link = format!("[in T3]({}/{thread})", world.sim.url().trim_end_matches('/'));
    assert!(comments[0].contains("**needs you**"), "{}", comments[0]);
    assert!(
        comments[0].contains(&link),
        "the link to answer it: {}",
        comments[0]
    );
    assert!(
        comments[0].contains("may it go on?"),
        "what the agent asks: {}",
        comments[0]
    );

    answer(&world.sim, &thread).await;
    tick_at_until(&mut app, &clock, first_is(JobState::Succeeded)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !labels(&github).contains(&"afk:done".to_string()) {
        assert!(Instant::now() < deadline, "no afk:done: {:?}", labels(&github));
        app.tick(clock.now()).await.expect("a tick");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !labels(&github).contains(&"afk:needs-you".to_string()),
        "{:?}",
        labels(&github)
    );
    let comments = status(&github);
    assert_eq!(comments.len(), 1, "edited in place: {comments:#?}");
    assert!(!comments[0].contains("Needs you"), "{}", comments[0]);
    assert_eq!(sent(&world.sim, "thread.turn.interrupt"), 0);
}

#[tokio::test]
async fn a_thread_waiting_for_a_person_holds_its_slot_against_the_limits() {
    let mut world = World::new(Duration::from_millis(50)).await;
    world.config.limits.max_concurrent = 1;
    world.add_issue(REPO_A, 1, "[sim:ask] Do it.");
    let mut app = world.app().await;
    let clock = Clock::default();
    tick_at_until(&mut app, &clock, first_is(JobState::NeedsInput)).await;
    let thread = the_thread(&app).await;
    world.add_issue(REPO_A, 2, "Do it.");
    for _ in 0..5 {
        app.tick(clock.now()).await.expect("a tick");
    }
    let jobs = app.ledger().jobs().await.unwrap();
    assert_eq!(
        (jobs[0].state, jobs[1].state),
        (JobState::NeedsInput, JobState::Queued),
        "the second job waits for the slot: {jobs:#?}"
    );
    assert_eq!(world.sim.threads().len(), 1);

    answer(&world.sim, &thread).await;
    let jobs = tick_at_until(&mut app, &clock, |jobs| {
        jobs.len() == 2 && jobs.iter().all(|j| j.state == JobState::Succeeded)
    })
    .await;
    assert_eq!(jobs.len(), 2);
}
