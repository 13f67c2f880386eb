//! Crash tests: the `afk` binary is killed with SIGKILL at each step of dispatch and watch, then
//! started again; every job must end, and T3 must hold exactly one thread per attempt.
//!
//! The stand-in holds a chosen request (before or after applying it) so that the kill lands at a
//! known step without any timing guesswork.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use afk::config::DispatchMode;
use afk_core::JobState;
use afk_ledger::Job;
use common::*;
use t3_sim::PausePhase;
use tokio::process::{Child, Command};

/// `afk run --config CONFIG`, logging at info, its output dropped unless piped later.
fn afk_run(config: &std::path::Path) -> Command {
    let mut afk = Command::new(env!("CARGO_BIN_EXE_afk"));
    afk.args(["run", "--config"])
        .arg(config)
        .env("AFK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    afk
}

fn spawn_afk(config: &std::path::Path) -> Child {
    afk_run(config).spawn().expect("afk starts")
}

/// Starts `afk run` with its log piped, and waits (bounded) for a log line containing `needle`;
/// returns afk and that line. The rest of the log is drained so that afk never blocks on it.
async fn spawn_afk_until_log(config: &std::path::Path, needle: &str) -> (Child, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut afk = afk_run(config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("afk starts");
    let mut log = BufReader::new(afk.stderr.take().expect("a piped log")).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = log.next_line().await.expect("afk's log") {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("afk's log ended without {needle:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("afk never logged {needle:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    (afk, line)
}

async fn kill_9(mut child: Child) {
    // tokio's kill is SIGKILL on Unix: no chance to finish anything.
    child.kill().await.expect("afk is killed");
}

/// Waits (30 s at most) until `done` holds for the ledger's jobs, as the `afk` process writes
/// them; returns them. Panics saying `what` did not happen.
async fn wait_for_jobs(world: &World, what: &str, done: impl Fn(&[Job]) -> bool) -> Vec<Job> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let ledger = world.ledger().await;
    loop {
        let jobs = ledger.jobs().await.unwrap();
        if done(&jobs) {
            return jobs;
        }
        assert!(Instant::now() < deadline, "{what}: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until there are `n` jobs and all are final.
async fn wait_all_final(world: &World, n: usize) -> Vec<Job> {
    wait_for_jobs(world, "jobs not final within 30 s", all_final(n)).await
}

async fn assert_one_thread_per_attempt(world: &World, jobs: &[Job]) {
    let ledger = world.ledger().await;
    let attempts = attempt_count(&ledger).await;
    let threads = world.sim.threads();
    assert_eq!(
        threads.len(),
        attempts,
        "T3 threads {threads:#?} for {attempts} attempts; jobs {jobs:#?}"
    );
    for job in jobs {
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
        assert_eq!(job.attempts, 1, "a crash must not cost an attempt: {job:#?}");
    }
}

/// Kills afk while the stand-in holds a `command` request at `phase` (sent as `dispatch`
/// prescribes), restarts it, and checks the end.
async fn crash_at(dispatch: DispatchMode, command: &str, phase: PausePhase) {
    let mut world = World::new(Duration::from_millis(200)).await;
    world.config.t3.dispatch = dispatch;
    world.add_issue(REPO_A, 1, "Do it.");
    let config = world.write_config();
    let pause = world.sim.pause(command, phase);
    let afk = spawn_afk(&config);
    tokio::time::timeout(Duration::from_secs(30), pause.hit())
        .await
        .unwrap_or_else(|_| panic!("afk never sent {command}"));
    kill_9(afk).await;
    pause.release();
    let afk = spawn_afk(&config);
    let jobs = wait_all_final(&world, 1).await;
    kill_9(afk).await;
    assert_one_thread_per_attempt(&world, &jobs).await;
}

/// One test per step at which afk is killed: `name => (dispatch mode, command held, phase)`.
macro_rules! crash_tests {
    ($($(#[doc = $doc:literal])* $name:ident => ($mode:ident, $command:literal, $phase:ident);)+) => {$(
        $(#[doc = $doc])*
        #[tokio::test]
        async fn $name() {
            crash_at(DispatchMode::$mode, $command, PausePhase::$phase).await;
        }
    )+};
}

crash_tests! {
    killed_before_thread_create_reaches_t3 => (Http, "thread.create", BeforeApply);
    killed_after_thread_create_was_applied_but_before_its_reply => (Http, "thread.create", AfterApply);
    killed_between_create_and_turn => (Http, "thread.turn.start", BeforeApply);
    killed_after_the_turn_started => (Http, "thread.turn.start", AfterApply);
    killed_before_a_worktree_bootstrap_reaches_t3 => (WsWorktree, "thread.turn.start", BeforeApply);
    /// T3 made the thread under a command id of its own: a blind resend would be refused as
    /// "already exists"; afk must read T3's view instead and carry on with the one thread.
    killed_after_a_worktree_bootstrap_was_applied_but_before_its_reply =>
        (WsWorktree, "thread.turn.start", AfterApply);
}

#[tokio::test]
async fn killed_mid_watch() {
    let world = World::new(Duration::from_millis(1500)).await;
    world.add_issue(REPO_A, 1, "Do it.");
    world.add_issue(REPO_B, 2, "Do it.");
    let config = world.write_config();
    let afk = spawn_afk(&config);
    wait_for_jobs(&world, "never running", |jobs| {
        jobs.len() == 2 && jobs.iter().all(|j| j.state == JobState::Running)
    })
    .await;
    kill_9(afk).await;
    let afk = spawn_afk(&config);
    let jobs = wait_all_final(&world, 2).await;
    kill_9(afk).await;
    assert_one_thread_per_attempt(&world, &jobs).await;
}

#[tokio::test]
async fn sigterm_stops_afk_cleanly() {
    let world = World::new(Duration::from_millis(100)).await;
    let config = world.write_config();
    let afk = spawn_afk(&config);
    let pid = afk.id().expect("a pid");
    // Wait until afk is inside its loop: it has queued and dispatched the issue.
    world.add_issue(REPO_A, 1, "Do it. [sim:hang]");
    wait_for_jobs(&world, "afk never dispatched", first_job_is(JobState::Running)).await;
    let status = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::time::timeout(Duration::from_secs(10), afk.wait_with_output())
        .await
        .expect("afk exits after SIGTERM")
        .unwrap();
    assert!(out.status.success(), "afk exits 0 on SIGTERM: {:?}", out.status);
}

#[tokio::test]
async fn afk_says_at_start_that_a_repository_sharing_its_checkout_runs_one_thread_at_a_time() {
    let mut world = World::new(Duration::from_millis(100)).await;
    world.config.t3.dispatch = DispatchMode::Http;
    let config = world.write_config();
    let (afk, line) = spawn_afk_until_log(&config, "at most one of them runs at a time").await;
    assert!(line.contains(REPO_A) || line.contains(REPO_B), "{line}");
    kill_9(afk).await;
}

#[tokio::test]
async fn afk_waits_for_a_t3_that_is_not_up_yet_and_then_does_the_work() {
    let mut world = World::new(Duration::from_millis(100)).await;
    // A port nobody listens on yet; T3 comes up there later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    world.config.t3.url = format!("http://127.0.0.1:{port}");
    world.add_issue(REPO_A, 1, "Do it.");
    let config = world.write_config();
    let (mut afk, waiting) =
        spawn_afk_until_log(&config, "waiting: nothing is dispatched or watched: T3 at").await;
    assert!(waiting.contains("it will pass"), "{waiting}");
    assert!(waiting.contains(&format!("127.0.0.1:{port}")), "{waiting}");
    assert!(afk.try_wait().unwrap().is_none(), "afk is still running");

    let t3 = t3_sim::SimServer::start(
        format!("127.0.0.1:{port}").parse().unwrap(),
        t3_sim::SimConfig {
            tokens: vec![t3_sim::TokenGrant::operate(TOKEN)],
            projects: vec![t3_sim::SimProject::new("proj-api", "/srv/api")],
            turn_duration: Duration::from_millis(100),
            ..t3_sim::SimConfig::default()
        },
    )
    .await
    .expect("T3 comes up on the reserved port");
    let jobs = wait_all_final(&world, 1).await;
    assert_eq!(jobs[0].state, JobState::Succeeded);
    assert_eq!(t3.threads().len(), 1);
    kill_9(afk).await;
}

#[tokio::test]
async fn a_second_afk_on_the_same_ledger_stands_by_and_takes_over_when_the_first_dies() {
    let world = World::new(Duration::from_millis(300)).await;
    world.add_issues(REPO_A, 1..=3);
    let config = world.write_config();
    let first = spawn_afk(&config);
    wait_for_jobs(&world, "the first afk never dispatched", |jobs| {
        jobs.iter().any(|j| j.state == JobState::Running)
    })
    .await;
    let (second, _) = spawn_afk_until_log(&config, "standing by").await;

    kill_9(first).await;
    let jobs = wait_all_final(&world, 3).await;
    kill_9(second).await;
    assert_one_thread_per_attempt(&world, &jobs).await;
}
