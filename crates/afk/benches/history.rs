//! A ledger that grew for a year (issue #18): the ledger reads of a tick, the reporter's read,
//! `afk jobs --json` and `afk status --json` against 100,000 finished jobs (with their attempts and
//! events) and 10,000 live ones, each beside the same read on an empty history (the 10,000 live
//! jobs alone), on SQLite and on PostgreSQL, in one run.
//!
//! Run with `cargo bench -p afk --bench history` (`AFK_HISTORY_JOBS=N` for another history size,
//! `AFK_HISTORY_RUNS=N` for another number of timed rounds, `AFK_TEST_PG_URL` for another
//! PostgreSQL; without PostgreSQL its columns say so). Prints a Markdown table on stdout, then
//! each backend's query plan of the reads that matter; progress goes to stderr.
//!
//! How the ledgers are filled: by SQL in the ledger's own schema (after its migrations), shaped as
//! afk's state machine records them, because filling 100,000 jobs through `Ledger::record` would
//! take minutes per ledger: every finished job is `succeeded` after one attempt with three events
//! (queued → dispatching → running → succeeded), issue bodies and prompts of about 1.5 KB, already
//! reported; every live job is `running` with its running attempt and two events; 100 more jobs
//! wait out a retry back-off that has not passed in the quiet tick and has in the busy one.
//!
//! Each ledger is opened with `Ledger::open` and holds its leadership (`Ledger::try_lead`), as
//! `afk run` does. The four ledgers are timed round-robin, read by read, so a burst of load from
//! the shared machine falls on all of them alike; the table gives medians (and the fastest round)
//! and the ratio of the year's history to the empty one. The reads are timed first (nothing
//! changes between rounds): a tick's work beside the ledger (the T3 feed, the watcher's decisions)
//! does not depend on the history and is measured by `fleet` and `compare`. After the reads, a
//! second table times writes: a new job's upsert and its three recorded transitions (start,
//! dispatch, success), round-robin again, on each ledger.

mod support;

use std::time::{Duration, Instant};

use afk::views;
use afk_core::JobSource;
use afk_ledger::{JobFilter, Leadership, Ledger};
use chrono::{DateTime, Utc};
use support::{human_secs, runtime};

const LIVE: u64 = 10_000;
const RETRYING: u64 = 100;
const WARM_UP: usize = 3;
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One ledger under test.
struct Subject {
    backend: &'static str,
    history: u64,
    ledger: Ledger,
    _lead: Leadership,
    /// Cleared on the way out.
    cleanup: Cleanup,
}

enum Cleanup {
    File(tempfile::TempDir),
    Schema { base: String, name: String },
}

/// The reads timed, in the table's order.
const READS: [&str; 8] = [
    "quiet tick: its ledger reads (attempts to stop, ready jobs, the reporter's)",
    "tick with 100 ready jobs: the same reads",
    "the reporter's read alone (jobs to report)",
    "the live attempts (`watched_attempts`: after a transition, else every 30 s)",
    "`afk jobs --json` (default page: newest 50 and the count)",
    "`afk status --json`",
    "a folder scan's ledger read, before: every job with its body (`jobs`)",
    "a folder scan's ledger read, now: the open jobs' issues (`open_issues`, here 10,100)",
];

fn main() {
    let history: u64 = env_number("AFK_HISTORY_JOBS", 100_000);
    let runs: usize = env_number("AFK_HISTORY_RUNS", 30) as usize;
    runtime().block_on(async move {
        let base = DateTime::<Utc>::from_timestamp_millis(1_780_000_000_000).expect("an instant");
        let mut subjects = Vec::new();
        for size in [0, history] {
            subjects.push(sqlite(size, base).await);
        }
        let pg_base = std::env::var("AFK_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
        match sqlx::PgPool::connect(&pg_base).await {
            Ok(pool) => {
                pool.close().await;
                for size in [0, history] {
                    subjects.push(postgres(&pg_base, size, base).await);
                }
            }
            Err(e) => eprintln!("history: no PostgreSQL at {pg_base} ({e}); its columns are empty"),
        }
        // quiet: the retry back-offs have not passed; busy: they have.
        let quiet = base;
        let busy = base + chrono::Duration::hours(2);
        let mut times: Vec<Vec<Vec<Duration>>> = vec![vec![Vec::new(); READS.len()]; subjects.len()];
        for round in 0..WARM_UP + runs {
            for (i, s) in subjects.iter().enumerate() {
                for (r, timing) in times[i].iter_mut().enumerate() {
                    let started = Instant::now();
                    let rows = read(&s.ledger, r, quiet, busy).await;
                    let took = started.elapsed();
                    check(r, rows, s.history);
                    if round >= WARM_UP {
                        timing.push(took);
                    }
                }
            }
        }
        print_table(&subjects, &times, history, runs);
        // Then the writes (which change the ledgers, so after every read): round-robin too.
        let mut writes: Vec<Vec<Vec<Duration>>> = vec![vec![Vec::new(); WRITES.len()]; subjects.len()];
        for round in 0..WARM_UP + runs {
            for (i, s) in subjects.iter().enumerate() {
                let took = write(&s.ledger, round, busy).await;
                if round >= WARM_UP {
                    for (w, t) in took.into_iter().enumerate() {
                        writes[i][w].extend(t);
                    }
                }
            }
        }
        print_rows(&subjects, &writes, &WRITES, "write", history, runs);
        for s in &subjects {
            print_plans(s).await;
        }
        for s in subjects {
            s.ledger.close().await;
            if let Cleanup::Schema { base, name } = s.cleanup {
                let pool = sqlx::PgPool::connect(&base).await.expect("PostgreSQL");
                sqlx::query(&format!("DROP SCHEMA {name} CASCADE"))
                    .execute(&pool)
                    .await
                    .expect("drop the bench schema");
                pool.close().await;
            }
        }
    });
}

/// The writes timed, in their table's order.
const WRITES: [&str; 2] = [
    "a new job (`upsert_job`)",
    "a recorded transition (`record`: a start with its attempt, its dispatch, its success; each with its event)",
];

/// Writes one new job's life (queued, started, running, succeeded) through the ledger as the
/// control plane does, round `round` of the bench; returns how long each write of [`WRITES`] took
/// (one upsert, three transitions).
async fn write(ledger: &Ledger, round: usize, now: DateTime<Utc>) -> Vec<Vec<Duration>> {
    use afk_core::{apply, Event, IssueKey, Priority, Repo, RetryPolicy};
    use afk_ledger::{NewAttempt, NewJob};
    use t3_client::{CommandId, MessageId, ProjectId, ThreadId};
    let number = 50_000_000 + round as u64;
    let new = NewJob {
        issue: IssueKey {
            repo: Repo::new("acme/bench").expect("a repository"),
            number,
        },
        title: format!("Issue {number}"),
        body: body(),
        labels: vec!["afk".into()],
        priority: Priority::new(2).expect("a priority"),
        source: JobSource::GitHub,
    };
    let started = Instant::now();
    let (mut job, created) = ledger.upsert_job(&new, now).await.expect("a new job");
    let upserted = started.elapsed();
    assert!(created);
    let thread = format!("bench-write-{number}");
    let attempt = NewAttempt {
        thread_id: ThreadId::new(&thread).expect("an id"),
        project_id: ProjectId::new("proj-api").expect("an id"),
        create_command_id: CommandId::new(format!("{thread}-create")).expect("an id"),
        turn_command_id: CommandId::new(format!("{thread}-turn")).expect("an id"),
        message_id: MessageId::new(format!("{thread}-message")).expect("an id"),
        title: new.title.clone(),
        branch: format!("afk/issue-{number}"),
        prompt: body(),
        model: None,
    };
    let mut recorded = Vec::new();
    for (event, with) in [
        (Event::StartAttempt, Some(&attempt)),
        (Event::Dispatched, None),
        (Event::ThreadSucceeded, None),
    ] {
        let t = apply(job.status(), &event, &RetryPolicy::default(), now).expect("an allowed move");
        let started = Instant::now();
        job = ledger.record(job.id, &t, with, now).await.expect("recorded");
        recorded.push(started.elapsed());
    }
    vec![vec![upserted], recorded]
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs read `r`; returns how many rows (jobs, attempts) it saw, to check the ledger's shape.
async fn read(ledger: &Ledger, r: usize, quiet: DateTime<Utc>, busy: DateTime<Utc>) -> usize {
    match r {
        0 | 1 => {
            // The live attempts are not read here: the recorder keeps them between transitions
            // (re-reading every 30 s), so a quiet tick does not read them; row 3 times that read.
            let now = if r == 0 { quiet } else { busy };
            let stops = ledger.attempts_to_stop().await.expect("stops");
            let ready = ledger.ready_jobs(now, 100).await.expect("ready jobs");
            let to_report = ledger
                .jobs_to_report(JobSource::GitHub)
                .await
                .expect("jobs to report");
            assert!(stops.is_empty() && to_report.is_empty());
            ready.len()
        }
        2 => ledger
            .jobs_to_report(JobSource::GitHub)
            .await
            .expect("jobs to report")
            .len(),
        3 => ledger.watched_attempts().await.expect("live attempts").len(),
        4 => {
            let filter = JobFilter::default();
            let jobs = views::newest_jobs(ledger, &filter, 50).await.expect("a page");
            let last = jobs.last().map(|j| afk_core::JobId(j.id));
            let count = ledger
                .count_jobs(&filter, last, afk::cmd::jobs::COUNT_CAP)
                .await
                .expect("a count");
            let json = serde_json::to_string(&jobs).expect("JSON");
            assert!(count > 0 && !json.is_empty());
            jobs.len()
        }
        5 => {
            let status = views::status(ledger).await.expect("status");
            serde_json::to_string(&status).expect("JSON").len()
        }
        // What the local intake reads when nothing in the folder changed. The bench's jobs come
        // from GitHub; a folder holding the same open issues makes the same read of its source.
        6 => ledger.jobs().await.expect("every job").len(),
        _ => ledger
            .open_issues(JobSource::GitHub)
            .await
            .expect("open issues")
            .len(),
    }
}

fn check(r: usize, rows: usize, history: u64) {
    match r {
        0 => assert_eq!(rows, 0, "nothing is ready in the quiet tick"),
        1 => assert_eq!(rows as u64, RETRYING, "every back-off passed"),
        2 => assert_eq!(rows, 0, "everything was reported"),
        3 => assert_eq!(rows as u64, LIVE),
        4 => assert_eq!(rows, 50),
        6 => assert_eq!(rows as u64, LIVE + RETRYING + history),
        7 => assert_eq!(rows as u64, LIVE + RETRYING, "only the open jobs"),
        _ => {}
    }
}

fn median(times: &[Duration]) -> f64 {
    let mut secs: Vec<f64> = times.iter().map(Duration::as_secs_f64).collect();
    secs.sort_by(f64::total_cmp);
    secs.get(secs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The fastest run: on a loaded machine, the closest to what the read itself costs.
fn fastest(times: &[Duration]) -> f64 {
    times
        .iter()
        .map(Duration::as_secs_f64)
        .fold(f64::INFINITY, f64::min)
}

fn print_table(subjects: &[Subject], times: &[Vec<Vec<Duration>>], history: u64, runs: usize) {
    print_rows(subjects, times, &READS, "read", history, runs);
}

/// A table of `rows` (`what`: read or write), each cell the median (and fastest) of its timings.
fn print_rows(
    subjects: &[Subject],
    times: &[Vec<Vec<Duration>>],
    rows: &[&str],
    what: &str,
    history: u64,
    runs: usize,
) {
    println!(
        "\n| {what}: median (fastest) of {runs} rounds | SQLite, empty history | SQLite, {history} finished | ratio | PostgreSQL, empty history | PostgreSQL, {history} finished | ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (r, name) in rows.iter().enumerate() {
        let mut row = format!("| {name} |");
        for backend in ["SQLite", "PostgreSQL"] {
            let of = |size: u64| {
                subjects
                    .iter()
                    .position(|s| s.backend == backend && s.history == size)
                    .map(|i| (median(&times[i][r]), fastest(&times[i][r])))
            };
            match (of(0), of(history)) {
                (Some((empty, empty_min)), Some((full, full_min))) => row.push_str(&format!(
                    " {} ({}) | {} ({}) | {:.2}× ({:.2}×) |",
                    human_secs(empty),
                    human_secs(empty_min),
                    human_secs(full),
                    human_secs(full_min),
                    full / empty,
                    full_min / empty_min
                )),
                _ => row.push_str(" n/a | n/a | n/a |"),
            }
        }
        println!("{row}");
    }
    println!();
}

/// The plans of the reads whose cost could grow with the history.
async fn print_plans(s: &Subject) {
    if s.history == 0 {
        return;
    }
    let queries = [
        "SELECT * FROM jobs WHERE source = 'github' AND (reported IS NULL OR reported <> state || ':' || attempts) ORDER BY id",
        "SELECT * FROM jobs WHERE state = 'queued' OR (state = 'retry_wait' AND (not_before_ms IS NULL OR not_before_ms <= 0)) ORDER BY priority ASC, created_ms ASC, id ASC LIMIT 100",
        "SELECT a.id, a.job_id, a.number, a.state, a.thread_id, a.updated_ms, j.repo, j.number AS issue_number, j.state AS job_state, j.not_before_ms FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.state IN ('dispatching', 'running') ORDER BY a.job_id",
        "SELECT a.id, j.repo FROM attempts a JOIN jobs j ON j.id = a.job_id WHERE a.state IN ('dispatching', 'running') AND j.id >= (SELECT MIN(job_id) FROM attempts WHERE state IN ('dispatching', 'running')) ORDER BY a.job_id",
        "SELECT * FROM jobs WHERE id IN (SELECT job_id FROM attempts WHERE stop_pending) ORDER BY id",
        "SELECT COUNT(*) FROM (SELECT 1 FROM jobs j WHERE j.id < 109000 LIMIT 10000) capped",
        "SELECT j.id FROM jobs j LEFT JOIN attempts a ON a.job_id = j.id AND a.number = j.attempts WHERE j.id < 9223372036854775807 ORDER BY j.id DESC LIMIT 50",
        "SELECT repo, number FROM jobs WHERE source = 'github' AND state IN ('queued', 'dispatching', 'running', 'needs_input', 'retry_wait', 'timed_out', 'lost', 'in_review')",
    ];
    println!("Query plans, {} with {} finished jobs:\n", s.backend, s.history);
    println!("```");
    for q in queries {
        println!("{q}");
        let lines: Vec<String> = match s.backend {
            "SQLite" => {
                let pool = sqlite_pool(&s.cleanup).await;
                let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {q}"))
                    .fetch_all(&pool)
                    .await
                    .expect("a plan");
                rows.into_iter().map(|r| format!("  {}", r.3)).collect()
            }
            _ => {
                let Cleanup::Schema { base, name } = &s.cleanup else {
                    unreachable!()
                };
                let pool = sqlx::PgPool::connect(&schema_url(base, name))
                    .await
                    .expect("PostgreSQL");
                let rows: Vec<(String,)> =
                    sqlx::query_as(&format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {q}"))
                        .fetch_all(&pool)
                        .await
                        .expect("a plan");
                pool.close().await;
                rows.into_iter().map(|r| format!("  {}", r.0)).collect()
            }
        };
        for line in lines {
            println!("{line}");
        }
    }
    println!("```\n");
}

async fn sqlite_pool(cleanup: &Cleanup) -> sqlx::SqlitePool {
    let Cleanup::File(dir) = cleanup else {
        unreachable!()
    };
    sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("afk.db").display()))
        .await
        .expect("the SQLite file")
}

fn schema_url(base: &str, name: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-csearch_path%3D{name}")
}

async fn sqlite(history: u64, base: DateTime<Utc>) -> Subject {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let url = format!("sqlite://{}", dir.path().join("afk.db").display());
    let ledger = Ledger::open(&url).await.expect("the ledger opens");
    let started = Instant::now();
    let pool = sqlx::SqlitePool::connect(&url).await.expect("the SQLite file");
    for sql in fill_sql(history, base) {
        sqlx::query(&sql)
            .bind(body())
            .execute(&pool)
            .await
            .expect("filled");
    }
    sqlx::query("ANALYZE").execute(&pool).await.expect("analyzed");
    // The fill went through the write-ahead log: fold it into the file, as a ledger that has been
    // running for a while has, so that no read pays for looking pages up in a large log.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .expect("checkpointed");
    pool.close().await;
    eprintln!(
        "history: SQLite with {history} finished jobs filled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let lead = ledger
        .try_lead()
        .await
        .expect("leadership")
        .expect("nobody else leads");
    Subject {
        backend: "SQLite",
        history,
        ledger,
        _lead: lead,
        cleanup: Cleanup::File(dir),
    }
}

async fn postgres(base_url: &str, history: u64, base: DateTime<Utc>) -> Subject {
    let name = format!("afk_bench_history_{}_{history}", std::process::id());
    let admin = sqlx::PgPool::connect(base_url).await.expect("PostgreSQL");
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&admin)
        .await
        .expect("a bench schema");
    admin.close().await;
    let url = schema_url(base_url, &name);
    let ledger = Ledger::open(&url).await.expect("the ledger opens");
    let started = Instant::now();
    let pool = sqlx::PgPool::connect(&url).await.expect("PostgreSQL");
    for sql in fill_sql(history, base) {
        sqlx::query(&sql)
            .bind(body())
            .execute(&pool)
            .await
            .expect("filled");
    }
    // As autovacuum would have left a ledger that grew for a year.
    sqlx::query("VACUUM ANALYZE")
        .execute(&pool)
        .await
        .expect("vacuumed");
    pool.close().await;
    eprintln!(
        "history: PostgreSQL with {history} finished jobs filled in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let lead = ledger
        .try_lead()
        .await
        .expect("leadership")
        .expect("nobody else leads");
    Subject {
        backend: "PostgreSQL",
        history,
        ledger,
        _lead: lead,
        cleanup: Cleanup::Schema {
            base: base_url.to_owned(),
            name,
        },
    }
}

/// About 1.5 KB of issue text, as issue bodies and prompts are.
fn body() -> String {
    "When a request to /api/orders carries an empty cursor the handler returns 500 instead of the \
     first page. Steps: call GET /api/orders?cursor= with a valid token. Expected: the first page. "
        .repeat(8)
}

/// The statements that fill a migrated ledger (each binds the issue text as `$1`): `history`
/// finished jobs, then the live ones, then those waiting out a back-off, all from GitHub and
/// reported, with their attempts and events. Plain SQL that both backends run.
fn fill_sql(history: u64, base: DateTime<Utc>) -> Vec<String> {
    let t = base.timestamp_millis();
    let day = 86_400_000i64;
    let year_ago = t - 365 * day;
    let mut sql = Vec::new();
    let jobs = |count: u64, first: u64, state: &str, attempts: u32, not_before: &str, created: String| {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             INSERT INTO jobs (repo, number, title, body, labels, priority, source, state, attempts, \
                 dispatch_tries, not_before_ms, last_error, created_ms, updated_ms, reported) \
             SELECT 'acme/repo' || (i % 10), {first} + i, 'Issue ' || ({first} + i), $1, '[\"afk\"]', 2, \
                 'github', '{state}', {attempts}, 1, {not_before}, NULL, {created}, {created}, \
                 '{state}:{attempts}' FROM n"
        )
    };
    if history > 0 {
        // Spread over the year, one job every few minutes.
        let step = (365 * day) / history as i64;
        sql.push(jobs(
            history,
            0,
            "succeeded",
            1,
            "NULL",
            format!("{year_ago} + i * CAST({step} AS BIGINT)"),
        ));
    }
    sql.push(jobs(
        LIVE,
        history,
        "running",
        1,
        "NULL",
        format!("{} + i", t - day),
    ));
    sql.push(jobs(
        RETRYING,
        history + LIVE,
        "retry_wait",
        1,
        &(t + 3_600_000).to_string(),
        format!("{} + i", t - day),
    ));
    let attempts = |state: &str, ended: &str, of: &str| {
        format!(
            "INSERT INTO attempts (job_id, number, state, thread_id, project_id, create_command_id, \
                 turn_command_id, message_id, title, branch, prompt, dispatch_tries, last_error, \
                 stop_pending, created_ms, updated_ms, ended_ms) \
             SELECT id, 1, '{state}', 'thread-' || id, 'proj-api', 'create-' || id, 'turn-' || id, \
                 'message-' || id, title, 'afk/issue-' || number, $1, 1, NULL, FALSE, created_ms, \
                 created_ms + 60000, {ended} FROM jobs WHERE state = '{of}'"
        )
    };
    sql.push(attempts("succeeded", "created_ms + 1800000", "succeeded"));
    sql.push(attempts("running", "NULL", "running"));
    sql.push(attempts("failed", "created_ms + 600000", "retry_wait"));
    for (from, to, of) in [
        ("queued", "dispatching", "succeeded"),
        ("dispatching", "running", "succeeded"),
        ("running", "succeeded", "succeeded"),
        ("queued", "dispatching", "running"),
        ("dispatching", "running", "running"),
        ("queued", "dispatching", "retry_wait"),
        ("dispatching", "running", "retry_wait"),
        ("running", "retry_wait", "retry_wait"),
    ] {
        // `$1` is bound on every statement; here it only keeps the binding uniform.
        sql.push(format!(
            "INSERT INTO events (job_id, attempt, from_state, to_state, note, at_ms) \
             SELECT id, 1, '{from}', '{to}', CASE WHEN $1 = '' THEN '' ELSE '{from} to {to}' END, \
                 created_ms FROM jobs WHERE state = '{of}'"
        ));
    }
    sql
}
