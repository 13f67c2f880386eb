//! A burst of new issues queued at once (`Ledger::queue_jobs`, issue 18): what a first GitHub
//! sync of thousands of labelled issues writes, on SQLite and on PostgreSQL, each ledger fresh,
//! migrated and led (`Ledger::try_lead`, as `afk run` holds it).
//!
//! Run with `cargo bench --profile dev -p afk-ledger --bench queue_burst` (`AFK_BURST_JOBS=N`
//! issues per burst, default 8,000; `AFK_BURST_RUNS=N` rounds, default 3; `AFK_TEST_PG_URL` for
//! another PostgreSQL, default `postgres://postgres@127.0.0.1:5432/test`; without PostgreSQL its
//! rows say so). Each round times, per backend in turn (so the shared machine's load falls on
//! both alike): the burst into the empty ledger (every issue new), then the same burst again
//! (every issue known: each answered "already there"). Prints one line per round and backend,
//! then the medians.

use std::time::{Duration, Instant};

use afk_core::{IssueKey, JobSource, Priority, Repo};
use afk_ledger::{Ledger, NewJob};
use chrono::{DateTime, Utc};
use sqlx::Connection;

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn main() {
    let jobs: u64 = env_number("AFK_BURST_JOBS", 8_000);
    let runs: u64 = env_number("AFK_BURST_RUNS", 3);
    let pg_base = std::env::var("AFK_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let burst: Vec<NewJob> = (1..=jobs).map(new_job).collect();
        let now = DateTime::<Utc>::from_timestamp_millis(1_780_000_000_000).expect("an instant");
        let mut times: Vec<(&str, Vec<Duration>, Vec<Duration>)> =
            vec![("SQLite", vec![], vec![]), ("PostgreSQL", vec![], vec![])];
        for round in 1..=runs {
            for (backend, new, known) in &mut times {
                let Some(subject) = Subject::create(backend, &pg_base).await else {
                    continue;
                };
                let lead = subject.ledger.try_lead().await.expect("lead").expect("free");
                let started = Instant::now();
                let answers = subject.ledger.queue_jobs(&burst, now).await.expect("queued");
                let first = started.elapsed();
                assert!(
                    answers.iter().all(|a| matches!(a, Ok(Some(_)))),
                    "every issue new"
                );
                let started = Instant::now();
                let answers = subject.ledger.queue_jobs(&burst, now).await.expect("queued");
                let again = started.elapsed();
                assert!(answers.iter().all(|a| matches!(a, Ok(None))), "every issue known");
                println!(
                    "round {round} {backend}: {jobs} new issues {:.3} s, the same again (known) {:.3} s",
                    first.as_secs_f64(),
                    again.as_secs_f64()
                );
                new.push(first);
                known.push(again);
                drop(lead);
                subject.finish().await;
            }
        }
        println!("| `queue_jobs` of {jobs} issues, median of {runs} | new | known |");
        println!("|---|---:|---:|");
        for (backend, new, known) in &mut times {
            if new.is_empty() {
                println!("| {backend} | not reachable | |");
                continue;
            }
            println!(
                "| {backend} | {:.3} s | {:.3} s |",
                median(new).as_secs_f64(),
                median(known).as_secs_f64()
            );
        }
    });
}

/// One fresh ledger: a SQLite file in a temporary directory or a PostgreSQL schema of its own.
struct Subject {
    ledger: Ledger,
    _dir: Option<tempfile::TempDir>,
    schema: Option<(String, String)>,
}

impl Subject {
    async fn create(backend: &str, pg_base: &str) -> Option<Subject> {
        if backend == "SQLite" {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
            let ledger = Ledger::open(&url).await.expect("a SQLite ledger");
            return Some(Subject {
                ledger,
                _dir: Some(dir),
                schema: None,
            });
        }
        let mut admin = match sqlx::PgConnection::connect(pg_base).await {
            Ok(admin) => admin,
            Err(e) => {
                eprintln!("PostgreSQL not reachable at {pg_base}: {e}");
                return None;
            }
        };
        let name = format!("afk_bench_burst_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut admin)
            .await
            .expect("a schema");
        let _ = admin.close().await;
        let separator = if pg_base.contains('?') { '&' } else { '?' };
        let url = format!("{pg_base}{separator}options=-csearch_path%3D{name}");
        let ledger = Ledger::open(&url).await.expect("a PostgreSQL ledger");
        Some(Subject {
            ledger,
            _dir: None,
            schema: Some((pg_base.to_owned(), name)),
        })
    }

    async fn finish(self) {
        self.ledger.close().await;
        if let Some((base, name)) = self.schema {
            let mut admin = sqlx::PgConnection::connect(&base).await.expect("PostgreSQL");
            sqlx::query(&format!("DROP SCHEMA {name} CASCADE"))
                .execute(&mut admin)
                .await
                .expect("the schema dropped");
            let _ = admin.close().await;
        }
    }
}

/// Issue `number` of a burst, with a body of about 1.2 KB.
fn new_job(number: u64) -> NewJob {
    NewJob {
        issue: IssueKey {
            repo: Repo::new("acme/widgets").expect("a repository"),
            number,
        },
        title: format!("Issue {number}: make the widget faster"),
        body: format!("Issue {number}. ").repeat(100),
        labels: vec!["afk".into(), "speed".into()],
        priority: Priority::new(2).expect("a priority"),
        source: JobSource::GitHub,
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
