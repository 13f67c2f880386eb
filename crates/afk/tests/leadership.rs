//! Leadership you can bet on: a leader whose lock is taken from under it (the lock file deleted,
//! the lock's PostgreSQL session terminated, the leader paused past a standby's takeover) writes
//! nothing once a standby leads, notices within a tick, stops acting and stands by; the work
//! finishes with one thread per attempt and never more attempts in flight than the limits.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use afk_core::JobState;
use afk_ledger::{Job, Ledger};
use chrono::Utc;
use common::*;
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// `afk run --config CONFIG`, its log lines sent to the returned channel.
fn spawn_afk(config: &std::path::Path) -> (Child, mpsc::UnboundedReceiver<String>) {
    let mut afk = Command::new(env!("CARGO_BIN_EXE_afk"))
        .args(["run", "--config"])
        .arg(config)
        .env("AFK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("afk starts");
    let mut log = BufReader::new(afk.stderr.take().expect("a piped log")).lines();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = log.next_line().await {
            let _ = tx.send(line);
        }
    });
    (afk, rx)
}

/// Waits (30 s at most) for a log line containing `needle`; on failure, shows the lines seen.
async fn log_line(log: &mut mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    log_line_any(log, &[needle]).await
}

/// Waits (30 s at most) for a log line containing any of `needles`.
async fn log_line_any(log: &mut mpsc::UnboundedReceiver<String>, needles: &[&str]) -> String {
    let needle = needles.join("\" or \"");
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = log.recv().await {
            if needles.iter().any(|n| line.contains(n)) {
                return Some(line);
            }
            seen.push(line);
        }
        None
    })
    .await;
    match found {
        Ok(Some(line)) => line,
        _ => panic!("afk never logged {needle:?}; its log:\n{}", seen.join("\n")),
    }
}

fn signal(child: &Child, signal: &str) {
    let pid = child.id().expect("a running afk");
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Waits (60 s at most) until `done` holds for the ledger's jobs; returns them.
async fn wait_for_jobs(ledger: &Ledger, what: &str, done: impl Fn(&[Job]) -> bool) -> Vec<Job> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = ledger.jobs().await.unwrap();
        if done(&jobs) {
            return jobs;
        }
        assert!(Instant::now() < deadline, "{what}: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The most attempts the ledger shows in flight at one instant (from each attempt's start to its
/// end), and the total: each a T3 thread.
async fn peak_in_flight(ledger: &Ledger, jobs: &[Job]) -> (usize, usize) {
    let mut edges = Vec::new();
    for job in jobs {
        for attempt in ledger.attempts(job.id).await.unwrap() {
            edges.push((attempt.created_at, 1i32));
            edges.push((attempt.ended_at.unwrap_or_else(Utc::now), -1));
        }
    }
    let total = edges.len() / 2;
    // Ends before starts at the same instant: a retry may start as its predecessor ends.
    edges.sort_by_key(|&(at, delta)| (at, delta));
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        peak = peak.max(now);
    }
    (peak as usize, total)
}

async fn assert_the_work_was_done_once_within_the_limits(world: &World, ledger: &Ledger, n: usize) {
    let jobs = wait_for_jobs(ledger, "jobs not all final", all_final(n)).await;
    for job in &jobs {
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
    }
    let (peak, attempts) = peak_in_flight(ledger, &jobs).await;
    assert!(
        peak <= world.config.limits.max_concurrent as usize,
        "{peak} attempts in flight at once, over max_concurrent {}",
        world.config.limits.max_concurrent
    );
    assert_eq!(
        world.sim.threads().len(),
        attempts,
        "one T3 thread per attempt the ledger holds: {jobs:#?}"
    );
}

/// A leader paused (SIGSTOP) while its lock file is deleted: a standby takes the lead and does the
/// work; the first, resumed (SIGCONT), writes nothing, says it lost the lead and stands by.
#[tokio::test]
async fn a_paused_leader_whose_lock_file_was_deleted_stands_down_when_resumed() {
    let mut world = World::new(Duration::from_millis(400)).await;
    world.config.limits.max_concurrent = 2;
    world.add_issues(REPO_A, 1..=2);
    let config = world.write_config();
    let ledger = world.ledger().await;
    let (first, mut first_log) = spawn_afk(&config);
    log_line(&mut first_log, "afk running").await;
    wait_for_jobs(&ledger, "the first afk never dispatched", |jobs| {
        jobs.iter().any(|j| j.state == JobState::Running)
    })
    .await;
    let (second, mut second_log) = spawn_afk(&config);
    log_line(&mut second_log, "standing by").await;

    signal(&first, "-STOP");
    std::fs::remove_file(world.dir.path().join("afk.db.lock")).expect("delete the lock file");
    // The standby locks a new file and takes the lead, unless the first was paused inside a
    // write: SQLite's write lock then holds the standby's epoch bump until the first resumes.
    let took = log_line_any(&mut second_log, &["afk running", "cannot take the lead"]).await;
    // More work while the first is paused: only a leader of a new epoch may take it.
    world.add_issues(REPO_B, 3..=5);
    signal(&first, "-CONT");
    let lost = log_line(&mut first_log, "lost the lead").await;
    assert!(lost.contains("standing by"), "{lost} (the standby said: {took})");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ledger.current_epoch().await.unwrap() < 2 {
        assert!(Instant::now() < deadline, "nobody took the lead again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_the_work_was_done_once_within_the_limits(&world, &ledger, 5).await;
    drop((first, second));
}

/// A PostgreSQL ledger's lock session terminated under the leader: a standby takes over, the
/// first notices within a tick and stands by; the work is done once, within the limits.
#[tokio::test]
async fn a_leader_whose_postgres_lock_session_was_terminated_stands_down() {
    let Some((url, schema)) = pg_schema("afk_lead").await else {
        return;
    };
    let mut world = World::new(Duration::from_millis(400)).await;
    world.config.ledger.url = url.clone();
    world.config.limits.max_concurrent = 2;
    world.add_issues(REPO_A, 1..=2);
    let config = world.write_config();
    let (first, mut first_log) = spawn_afk(&config);
    log_line(&mut first_log, "afk running").await;
    let ledger = Ledger::open(&url).await.unwrap();
    let (second, mut second_log) = spawn_afk(&config);
    log_line(&mut second_log, "standing by").await;
    assert_eq!(ledger.current_epoch().await.unwrap(), 1);

    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
         AND objsubid = 1 AND objid::bigint = \
         (hashtext('afk-ledger-leader:' || current_schema())::bigint & 4294967295)",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(killed, [true], "one session holds the leader lock");
    let lost = log_line(&mut first_log, "lost the lead").await;
    assert!(lost.contains("standing by"), "{lost}");
    // Whichever process takes the lock next leads, under a new epoch (the first, having stood
    // down, may take it back before the second tries again).
    let deadline = Instant::now() + Duration::from_secs(30);
    while ledger.current_epoch().await.unwrap() < 2 {
        assert!(Instant::now() < deadline, "nobody took the lead again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    world.add_issues(REPO_B, 3..=4);
    assert_the_work_was_done_once_within_the_limits(&world, &ledger, 4).await;
    drop((first, second));
    ledger.close().await;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// The in-process equivalent of a leader paused mid-loop: its lock is lost and a standby leads
/// before its next tick. That tick (the leader has not noticed) writes nothing and sends nothing
/// to T3.
#[tokio::test]
async fn a_leader_that_has_not_noticed_its_loss_cannot_write_or_dispatch() {
    let world = World::new(Duration::from_millis(100)).await;
    world.add_issue(REPO_A, 1, "Do it.");
    let mut old = world.app().await;
    let _lead = old.ledger().try_lead().await.unwrap().expect("it leads");
    old.tick(Utc::now()).await.expect("the leader ticks");
    std::fs::remove_file(world.dir.path().join("afk.db.lock")).unwrap();
    let standby = world.app().await;
    let new_lead = standby
        .ledger()
        .try_lead()
        .await
        .unwrap()
        .expect("the standby leads");
    world.add_issue(REPO_A, 2, "Do it.");
    let before = standby.ledger().jobs().await.unwrap();
    let threads = world.sim.threads().len();

    let error = old
        .tick(Utc::now())
        .await
        .expect_err("the old leader's tick is refused");
    assert!(
        error.to_string().contains("another afk run leads the ledger"),
        "{error}"
    );
    assert_eq!(standby.ledger().jobs().await.unwrap(), before, "nothing written");
    assert_eq!(world.sim.threads().len(), threads, "nothing sent to T3");
    new_lead.release().await;
}
