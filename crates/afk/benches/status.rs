//! The status surface with a large ledger: how long `GET /api/v1/state` (and the other reads a
//! dashboard or a scraper makes) takes with 10,000 jobs in the ledger.
//!
//! Run with `cargo bench -p afk --bench status`; `AFK_STATUS_JOBS=N` picks another size. Prints a
//! Markdown table on stdout; progress goes to stderr.
//!
//! The ledger (SQLite, a file in a temporary folder) is filled through the ledger's own writes and
//! the state machine, as afk fills it: N jobs with issue bodies and prompts of about 1.5 KB, of
//! which 85 % succeeded at their first attempt, 5 % gave up after three, 4 % wait out a retry
//! back-off after one failure, 2 % are running, 2 % are queued and 2 % were cancelled. afk is
//! wired by `App::build` on port 0 (its control loop does not run: nothing changes while the reads
//! are timed) and each read is timed over loopback HTTP with a kept-alive client, as a dashboard
//! makes it: the median and the 95th percentile of 200 runs after 20 untimed ones.

use std::time::{Duration, Instant};

use afk::app::App;
use afk::config::Config;
use afk_core::{apply, CancelReason, Event, IssueKey, JobSource, Priority, Repo, RetryPolicy};
use afk_ledger::{Job, Ledger, NewAttempt, NewJob};
use chrono::Utc;
use t3_client::{CommandId, MessageId, ProjectId, ThreadId};

const WARM_UP: usize = 20;
const RUNS: usize = 200;
const PARAGRAPH: &str = "When a request to /api/orders carries an empty cursor the handler returns \
    500 instead of the first page. Steps: call GET /api/orders?cursor= with a valid token. Expected: \
    the first page, as without the parameter. Actual: a stack trace in the logs.\n\n";

fn attempt_ids(job: u64, attempt: u32, body: &str) -> NewAttempt {
    let thread = format!("bench-{job}-{attempt}-{}", uuid::Uuid::new_v4().simple());
    NewAttempt {
        thread_id: ThreadId::new(thread.clone()).expect("a thread id"),
        project_id: ProjectId::new("proj-api").expect("a project id"),
        create_command_id: CommandId::new(format!("{thread}-create")).expect("an id"),
        turn_command_id: CommandId::new(format!("{thread}-turn")).expect("an id"),
        message_id: MessageId::new(format!("{thread}-message")).expect("an id"),
        title: format!("Issue {job}"),
        branch: format!("afk/issue-{job}"),
        prompt: body.to_owned(),
        model: None,
    }
}

/// Applies `event` to `job` at `now` through the machine, records it, and returns the job as
/// recorded.
async fn step(
    ledger: &Ledger,
    job: &Job,
    event: Event,
    attempt: Option<&NewAttempt>,
    retry: &RetryPolicy,
    now: chrono::DateTime<Utc>,
) -> Job {
    let transition = apply(job.status(), &event, retry, now).expect("an allowed transition");
    ledger
        .record(job.id, &transition, attempt, now)
        .await
        .expect("recorded")
}

/// What becomes of job `n` of the ledger.
enum Fate {
    Succeeded,
    GivenUp,
    Retrying,
    Running,
    Queued,
    Cancelled,
}

fn fate(n: u64) -> Fate {
    match n % 100 {
        0..=84 => Fate::Succeeded,
        85..=89 => Fate::GivenUp,
        90..=93 => Fate::Retrying,
        94..=95 => Fate::Running,
        96..=97 => Fate::Queued,
        _ => Fate::Cancelled,
    }
}

async fn fill(ledger: &Ledger, jobs: u64) {
    // Long back-offs, so that a retrying job is still waiting while the reads are timed.
    let retry = RetryPolicy {
        initial: Duration::from_secs(3600),
        cap: Duration::from_secs(7200),
        ..RetryPolicy::default()
    };
    let quick = RetryPolicy {
        initial: Duration::from_millis(1),
        cap: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    let body = PARAGRAPH.repeat(6);
    let repo = Repo::new("acme/api").expect("a repository");
    for n in 1..=jobs {
        let new = NewJob {
            issue: IssueKey {
                repo: repo.clone(),
                number: n,
            },
            title: format!("Issue {n}: the pager loses its last page"),
            body: body.clone(),
            labels: vec!["afk".into()],
            priority: Priority::DEFAULT,
            source: JobSource::Local,
        };
        let (mut job, _) = ledger.upsert_job(&new, Utc::now()).await.expect("a job");
        let attempts = match fate(n) {
            Fate::Queued => 0,
            Fate::GivenUp => 3,
            _ => 1,
        };
        // A job that gives up retries with a short back-off; one that keeps retrying waits long.
        let policy = match fate(n) {
            Fate::GivenUp => &quick,
            _ => &retry,
        };
        for a in 1..=attempts {
            // Each attempt starts when its back-off is due (in the future, for a retry).
            let at = job.not_before.map_or(Utc::now(), |due| due.max(Utc::now()));
            let ids = attempt_ids(n, a, &body);
            job = step(ledger, &job, Event::StartAttempt, Some(&ids), policy, at).await;
            job = step(ledger, &job, Event::Dispatched, None, policy, at).await;
            let end = match fate(n) {
                Fate::Succeeded => Some(Event::ThreadSucceeded),
                Fate::Running => None,
                Fate::Cancelled => Some(Event::Cancel {
                    reason: CancelReason::FileRemoved,
                }),
                Fate::GivenUp | Fate::Retrying | Fate::Queued => Some(Event::ThreadFailed {
                    error: "the agent failed: the tests do not pass".into(),
                }),
            };
            if let Some(end) = end {
                let ended = at + chrono::TimeDelta::seconds(240 + (n % 300) as i64);
                job = step(ledger, &job, end, None, policy, ended).await;
            }
        }
        if n % 1000 == 0 {
            eprintln!("  {n} jobs in the ledger");
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn show(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

#[tokio::main]
async fn main() {
    let jobs: u64 = std::env::var("AFK_STATUS_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut config = Config::default();
    config.ledger.url = format!("sqlite://{}", dir.path().join("afk.db").display());
    config.source.local = None;
    config.t3.token_file = dir.path().join("t3-token");
    std::fs::write(&config.t3.token_file, "bench-token").expect("a token file");
    config.watch.push = false;
    config.http.listen = Some("127.0.0.1:0".parse().expect("an address"));
    let app = App::build(config).await.expect("afk is wired");
    let addr = app.http_addr().expect("afk listens");
    let started = Instant::now();
    eprintln!("filling the ledger with {jobs} jobs …");
    fill(app.ledger(), jobs).await;
    let size = app.ledger().size().await.expect("the ledger's size");
    eprintln!(
        "  {} jobs, {} attempts, {} events in {:.1}s",
        size.jobs,
        size.attempts,
        size.events,
        started.elapsed().as_secs_f64()
    );

    let client = reqwest::Client::new();
    let middle = jobs / 2;
    let reads = [
        ("GET /api/v1/state", "/api/v1/state".to_owned()),
        (
            "GET /api/v1/jobs?limit=100 (first page)",
            "/api/v1/jobs?limit=100".to_owned(),
        ),
        (
            "GET /api/v1/jobs?state=given_up&limit=100",
            "/api/v1/jobs?state=given_up&limit=100".to_owned(),
        ),
        (
            "GET /api/v1/acme/api/N (one issue)",
            format!("/api/v1/acme/api/{middle}"),
        ),
        ("GET /metrics", "/metrics".to_owned()),
        ("GET /healthz", "/healthz".to_owned()),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); reads.len()];
    let mut bytes = vec![0usize; reads.len()];
    // Interleaved, so that a shared machine's load falls on every read alike.
    for round in 0..WARM_UP + RUNS {
        for (i, (_, path)) in reads.iter().enumerate() {
            let t = Instant::now();
            let response = client
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .expect("an answer");
            assert!(response.status().is_success(), "{path}: {}", response.status());
            let body = response.bytes().await.expect("a body");
            let took = t.elapsed();
            if round >= WARM_UP {
                samples[i].push(took);
            }
            bytes[i] = body.len();
        }
    }
    let (_, state) = &reads[0];
    let view: serde_json::Value = client
        .get(format!("http://{addr}{state}"))
        .send()
        .await
        .expect("an answer")
        .json()
        .await
        .expect("JSON");
    eprintln!(
        "state: {} running, {} retrying listed; counts {}",
        view["running"].as_array().map_or(0, Vec::len),
        view["retrying"].as_array().map_or(0, Vec::len),
        view["counts"]
    );

    println!(
        "| read ({jobs} jobs, {} attempts, {} events) | median | p95 | body |",
        size.attempts, size.events
    );
    println!("|---|---:|---:|---:|");
    for (i, (name, _)) in reads.iter().enumerate() {
        let mut s = samples[i].clone();
        s.sort();
        println!(
            "| {name} | {} | {} | {:.1} KB |",
            show(percentile(&s, 0.5)),
            show(percentile(&s, 0.95)),
            bytes[i] as f64 / 1024.0
        );
    }
}
