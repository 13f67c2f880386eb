//! The ledger's one test suite, run against both backends: SQLite (a file in a temporary
//! directory) and PostgreSQL (at `AFK_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`,
//! each test in a schema of its own, dropped at the end).
//!
//! When PostgreSQL is not reachable the PostgreSQL variants print a `SKIP:` line and pass, unless
//! `AFK_REQUIRE_PG=1`, which makes them fail instead.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use afk_core::{
    apply, AttemptNo, AttemptState, CancelReason, Event, IssueKey, JobId, JobSource, JobState, Priority,
    Repo, RequeueBy, RetryPolicy, Transition,
};
use afk_ledger::{Backend, Job, LeaderState, Ledger, LedgerError, NewAttempt, NewJob, Wait, WatchedAttempt};
use chrono::{DateTime, Utc};
use sqlx::Connection;
use t3_client::{CommandId, MessageId, ProjectId, ThreadId};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A ledger under test, on one backend, plus a raw connection pool to the same database for
/// writes that bypass the ledger.
struct Fixture {
    url: String,
    ledger: Ledger,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
    schema: Option<PgSchema>,
}

enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        // A directory that does not exist yet: the ledger creates it.
        let path = dir.path().join("state").join("ledger.db");
        let url = format!("sqlite://{}", path.display());
        let ledger = Ledger::open(&url).await.expect("open a SQLite ledger");
        assert_eq!(ledger.backend(), Backend::Sqlite);
        let raw = sqlx::SqlitePool::connect(&url)
            .await
            .expect("raw SQLite connection");
        Fixture {
            url,
            ledger,
            raw: Raw::Sqlite(raw),
            _dir: Some(dir),
            schema: None,
        }
    }

    /// A ledger in a fresh PostgreSQL schema, or `None` (after a `SKIP:` line) when PostgreSQL is
    /// not reachable and not required.
    async fn postgres() -> Option<Fixture> {
        let (url, guard) = PgSchema::create().await?;
        let schema = guard.name.clone();
        let opened = async {
            let ledger = Ledger::open(&url).await.map_err(|e| e.to_string())?;
            let raw = sqlx::PgPool::connect(&url).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((ledger, raw))
        };
        let (ledger, raw) = match opened.await {
            Ok(opened) => opened,
            Err(e) => {
                guard.drop_now().await;
                panic!("cannot open a PostgreSQL ledger in schema {schema}: {e}");
            }
        };
        assert_eq!(ledger.backend(), Backend::Postgres);
        Some(Fixture {
            url,
            ledger,
            raw: Raw::Postgres(raw),
            _dir: None,
            schema: Some(guard),
        })
    }

    /// Runs `sql` on the raw connection, bypassing the ledger.
    async fn raw_execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match &self.raw {
            Raw::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()),
            Raw::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()),
        }
    }
}

fn skip<T>(url: &str, reason: &str) -> Option<T> {
    let require = std::env::var("AFK_REQUIRE_PG").is_ok_and(|v| v == "1");
    assert!(
        !require,
        "PostgreSQL not reachable at {url} and AFK_REQUIRE_PG=1: {reason}"
    );
    // Straight to the stream, not through eprintln!, which the test harness captures and hides
    // for a passing test: the skip must show in every run.
    let _ = writeln!(
        std::io::stderr(),
        "SKIP: PostgreSQL not reachable at {url}: {reason}"
    );
    None
}

/// A PostgreSQL schema of one test, dropped by [`Fixture::finish`].
struct PgSchema {
    base: String,
    name: String,
}

impl PgSchema {
    /// A fresh schema and the URL of a database in it, or `None` (after a `SKIP:` line) when
    /// PostgreSQL is not reachable and not required.
    async fn create() -> Option<(String, PgSchema)> {
        let base = std::env::var("AFK_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
        let reachable =
            tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&base)).await;
        let mut admin = match reachable {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return skip(&base, &e.to_string()),
            Err(_) => return skip(&base, "no answer within 5 s"),
        };
        let schema = format!("afk_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .expect("create the test schema");
        let _ = admin.close().await;
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
        Some((url, PgSchema { base, name: schema }))
    }

    async fn drop_now(&self) {
        let dropped = async {
            let mut conn = sqlx::PgConnection::connect(&self.base).await?;
            // Never wait forever on a lock some leaked connection still holds.
            sqlx::query("SET lock_timeout = '10s'").execute(&mut conn).await?;
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                .execute(&mut conn)
                .await?;
            conn.close().await
        };
        if let Err(e) = dropped.await {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

impl Fixture {
    /// Closes every connection and drops the test's PostgreSQL schema.
    async fn finish(self) {
        self.ledger.close().await;
        match &self.raw {
            Raw::Sqlite(pool) => pool.close().await,
            Raw::Postgres(pool) => pool.close().await,
        }
        if let Some(schema) = &self.schema {
            schema.drop_now().await;
        }
    }
}

/// Runs `test` on `fixture`, then tears the fixture down whether the test passed or panicked, and
/// only then reports the panic.
async fn run<F, Fut>(fixture: Fixture, test: F)
where
    F: FnOnce(Arc<Fixture>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let fixture = Arc::new(fixture);
    let outcome = tokio::spawn(test(Arc::clone(&fixture))).await;
    if let Some(fixture) = Arc::into_inner(fixture) {
        fixture.finish().await;
    }
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("the test task did not finish: {error}"),
        }
    }
}

/// Declares each named `async fn(&Fixture)` as two tests, `NAME::sqlite` and `NAME::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let fixture = super::Fixture::sqlite().await;
                super::run(fixture, |fx| async move { super::$name(&fx).await }).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(fixture) = super::Fixture::postgres().await {
                    super::run(fixture, |fx| async move { super::$name(&fx).await }).await;
                }
            }
        }
    )+};
}

on_both_backends!(
    upsert_is_idempotent_and_never_moves_a_job,
    a_job_lives_from_queued_to_succeeded_with_its_events,
    a_stale_from_state_is_a_conflict_and_writes_nothing,
    ready_jobs_come_by_priority_then_age_and_wait_out_their_backoff,
    the_schema_rejects_a_second_live_attempt,
    a_thread_id_belongs_to_one_attempt,
    a_stop_stays_pending_until_the_thread_is_stopped,
    reopening_the_ledger_keeps_everything,
    counts_by_state_cover_every_state,
    starting_an_attempt_needs_its_ids,
    failed_attempts_retry_with_new_ids_until_given_up,
    transient_dispatch_errors_keep_the_attempt_and_count_tries,
    a_refused_job_fails_with_its_reason,
    jobs_in_filters_by_state,
    open_issues_are_the_source_s_jobs_that_are_not_final,
    newest_jobs_page_backwards_by_state_and_repository_and_count_what_is_left,
    concurrent_starts_of_one_job_make_exactly_one_attempt,
    concurrent_upserts_of_one_issue_make_one_job,
    a_cancelled_job_comes_back_queued_with_its_history,
    every_cancel_reason_is_kept,
    an_unreadable_row_is_reported_not_guessed,
    one_process_leads_the_ledger_at_a_time,
    a_reported_job_is_not_to_report_until_it_changes,
    watched_attempts_are_the_live_attempts_without_their_text,
    the_live_attempts_of_some_jobs_are_the_full_reads_entries_of_them,
    every_change_watching_reads_moves_the_count_whoever_writes_and_nothing_else_does,
    every_change_to_a_job_or_an_attempt_moves_the_ledger_count_whoever_writes,
    the_next_ready_instant_is_the_soonest_backoff_still_running,
    a_wait_is_kept_per_topic_until_it_is_over,
    inspecting_changes_nothing_and_sees_migrations_and_the_leader,
    a_leader_that_lost_its_lock_notices_and_cannot_write,
    only_the_current_leaders_writes_land,
    a_value_the_ledger_cannot_store_is_refused_as_the_items_fault,
    a_wait_for_a_person_is_kept_and_its_length_summed,
    a_follow_up_reopens_the_attempt_with_its_ids_and_is_answered_once,
    a_follow_up_whose_job_moved_on_is_never_sent,
    agent_time_is_summed_per_job_budget_and_per_repository_day,
);

/// The ledger of an older afk: a database migrated up to (not including) step `step`, as that afk
/// left it, reached through `raw`.
async fn migrate_before(step: i64, backend: &str, raw: &Raw) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let mut older = sqlx::migrate::Migrator::new(dir).await.expect("the migrations");
    older.migrations = older
        .migrations
        .iter()
        .filter(|m| m.version < step)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    match raw {
        Raw::Sqlite(pool) => older.run(pool).await,
        Raw::Postgres(pool) => older.run(pool).await,
    }
    .expect("the older migrations run");
}

/// Cancelled jobs an older afk left (step 5: no cancel reason column), opened by this afk: each
/// gets the reason its last event's note named, once, and that reason decides who may requeue it.
async fn cancelled_jobs_of_an_older_ledger_get_their_reason(url: &str, raw: Raw, backend: &str) {
    migrate_before(6, backend, &raw).await;
    // (issue number, state, notes oldest first)
    let jobs: [(u64, &str, &[&str]); 6] = [
        (
            1,
            "cancelled",
            &[
                "attempt 1 of 3 dispatching",
                "cancelled: its issue file was removed",
            ],
        ),
        (
            2,
            "cancelled",
            &["cancelled: the issue was closed or lost its trigger label"],
        ),
        (
            3,
            "cancelled",
            &["the thread was interrupted in T3; afk leaves it be"],
        ),
        (
            4,
            "cancelled",
            &[
                "cancelled: its issue file was removed",
                "requeued with a fresh budget of 3 attempts",
                "the thread was interrupted in T3; afk leaves it be",
            ],
        ),
        (5, "cancelled", &["cancelled: for a reason no afk wrote"]),
        (
            6,
            "running",
            &[
                "cancelled: its issue file was removed",
                "requeued with a fresh budget of 3 attempts",
                "attempt 1 running",
            ],
        ),
    ];
    for (number, state, notes) in jobs {
        let mut statements = vec![format!(
            "INSERT INTO jobs (repo, number, title, body, labels, priority, source, state, attempts, \
             dispatch_tries, created_ms, updated_ms) \
             VALUES ('acme/widgets', {number}, 't', 'b', '[]', 2, 'local', '{state}', 1, 0, 0, 0)"
        )];
        for note in notes {
            statements.push(format!(
                "INSERT INTO events (job_id, attempt, from_state, to_state, note, at_ms) \
                 SELECT id, NULL, 'queued', '{state}', '{note}', 0 FROM jobs WHERE number = {number}"
            ));
        }
        for sql in statements {
            match &raw {
                Raw::Sqlite(pool) => sqlx::query(&sql).execute(pool).await.map(drop),
                Raw::Postgres(pool) => sqlx::query(&sql).execute(pool).await.map(drop),
            }
            .expect("an older afk's row");
        }
    }
    match &raw {
        Raw::Sqlite(pool) => pool.close().await,
        Raw::Postgres(pool) => pool.close().await,
    }

    let ledger = Ledger::open(url).await.expect("this afk opens the older ledger");
    let expected = [
        (1, Some(CancelReason::FileRemoved)),
        (2, Some(CancelReason::Withdrawn)),
        (3, Some(CancelReason::InterruptedInT3)),
        (4, Some(CancelReason::InterruptedInT3)),
        (5, Some(CancelReason::ByHand)),
        (6, None),
    ];
    for (number, reason) in expected {
        let job = ledger
            .job_by_issue(&issue(number))
            .await
            .unwrap()
            .expect("the job");
        assert_eq!(
            job.cancel_reason, reason,
            "job of issue {number}: the last note decides"
        );
    }
    // As before the column: the returning file requeues the job it removed, not the one a person
    // interrupted.
    let back = Event::Requeue {
        by: RequeueBy::Source(JobSource::Local),
    };
    let removed = ledger.job_by_issue(&issue(1)).await.unwrap().unwrap();
    let requeued = step(&ledger, &removed, back.clone(), None, at(1)).await;
    assert_eq!((requeued.state, requeued.cancel_reason), (JobState::Queued, None));
    let interrupted = ledger.job_by_issue(&issue(4)).await.unwrap().unwrap();
    assert!(apply(interrupted.status(), &back, &RetryPolicy::default(), at(1)).is_err());
    ledger.close().await;
}

mod cancelled_jobs_of_an_older_ledger_get_their_reason {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let raw = sqlx::SqlitePool::connect_with(options).await.expect("raw SQLite");
        cancelled_jobs_of_an_older_ledger_get_their_reason(&url, Raw::Sqlite(raw), "sqlite").await;
    }

    #[tokio::test]
    async fn postgres() {
        let Some((url, schema)) = PgSchema::create().await else {
            return;
        };
        let raw = sqlx::PgPool::connect(&url).await.expect("raw PostgreSQL");
        let outcome = tokio::spawn(async move {
            cancelled_jobs_of_an_older_ledger_get_their_reason(&url, Raw::Postgres(raw), "postgres").await
        })
        .await;
        schema.drop_now().await;
        if let Err(error) = outcome {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

// ---- helpers -------------------------------------------------------------------------------

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a valid instant")
}

fn at(seconds: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::seconds(seconds)
}

async fn newest_jobs_page_backwards_by_state_and_repository_and_count_what_is_left(fx: &Fixture) {
    use afk_ledger::JobFilter;
    let ledger = &fx.ledger;
    let mut queued_ids = Vec::new();
    for number in 1..=5 {
        queued_ids.push(queued(ledger, number, 2, t0()).await.id);
    }
    let other = Repo::new("acme/other").unwrap();
    let mut elsewhere = new_job(1, 2);
    elsewhere.issue.repo = other.clone();
    let (elsewhere, _) = ledger.upsert_job(&elsewhere, t0()).await.unwrap();
    let busy = running(ledger, 6, "thread-6").await;
    let ids = |jobs: Vec<afk_ledger::JobSummary>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();

    let all = JobFilter::default();
    let page = ledger.newest_jobs(&all, None, 3).await.unwrap();
    assert_eq!(
        page[0].attempt.as_ref().map(|a| a.thread_id.as_str()),
        Some("thread-6")
    );
    let first = ids(page);
    assert_eq!(first, vec![busy.id, elsewhere.id, queued_ids[4]], "newest first");
    let rest = ids(ledger.newest_jobs(&all, Some(queued_ids[4]), 10).await.unwrap());
    assert_eq!(
        rest,
        vec![queued_ids[3], queued_ids[2], queued_ids[1], queued_ids[0]]
    );
    assert_eq!(
        ledger.count_jobs(&all, Some(queued_ids[4]), 100).await.unwrap(),
        4
    );
    assert_eq!(ledger.count_jobs(&all, None, 100).await.unwrap(), 7);
    assert_eq!(
        ledger.count_jobs(&all, None, 2).await.unwrap(),
        2,
        "the count stops at its cap"
    );

    let queued_here = JobFilter {
        states: &["queued"],
        repo: Some(&issue(1).repo),
    };
    let page = ids(ledger.newest_jobs(&queued_here, None, 2).await.unwrap());
    assert_eq!(page, vec![queued_ids[4], queued_ids[3]]);
    assert_eq!(
        ledger
            .count_jobs(&queued_here, Some(queued_ids[3]), 100)
            .await
            .unwrap(),
        3
    );
    let there = JobFilter {
        states: &[],
        repo: Some(&other),
    };
    assert_eq!(
        ids(ledger.newest_jobs(&there, None, 50).await.unwrap()),
        vec![elsewhere.id]
    );
    let running_or_lost = JobFilter {
        states: &["running", "lost"],
        repo: None,
    };
    assert_eq!(
        ids(ledger.newest_jobs(&running_or_lost, None, 50).await.unwrap()),
        vec![busy.id]
    );
    let unknown = JobFilter {
        states: &["no_such_state"],
        repo: None,
    };
    assert!(ledger.newest_jobs(&unknown, None, 50).await.unwrap().is_empty());
    assert_eq!(ledger.count_jobs(&unknown, None, 100).await.unwrap(), 0);
}

fn issue(number: u64) -> IssueKey {
    IssueKey {
        repo: Repo::new("acme/widgets").expect("valid repo"),
        number,
    }
}

fn new_job(number: u64, priority: u8) -> NewJob {
    NewJob {
        issue: issue(number),
        title: format!("Issue {number}"),
        body: format!("Body of issue {number}"),
        labels: vec!["afk".into()],
        priority: Priority::new(priority).expect("valid priority"),
        source: JobSource::Local,
    }
}

fn ids(thread: &str) -> NewAttempt {
    NewAttempt {
        thread_id: ThreadId::new(thread).unwrap(),
        project_id: ProjectId::new("project-1").unwrap(),
        create_command_id: CommandId::new(format!("{thread}-create")).unwrap(),
        turn_command_id: CommandId::new(format!("{thread}-turn")).unwrap(),
        message_id: MessageId::new(format!("{thread}-message")).unwrap(),
        title: format!("Work on {thread}"),
        branch: format!("afk/{thread}"),
        prompt: "Implement it.".into(),
        model: Some("claude-opus-4-1".into()),
    }
}

/// What the state machine says `event` does to `job` at `now` under the default policy.
fn transition(job: &Job, event: Event, now: DateTime<Utc>) -> Transition {
    apply(job.status(), &event, &RetryPolicy::default(), now).expect("an allowed transition")
}

/// Applies `event` to the job through the machine and records it.
async fn step(
    ledger: &Ledger,
    job: &Job,
    event: Event,
    attempt: Option<&NewAttempt>,
    now: DateTime<Utc>,
) -> Job {
    let t = transition(job, event, now);
    ledger
        .record(job.id, &t, attempt, now)
        .await
        .expect("record the transition")
}

async fn queued(ledger: &Ledger, number: u64, priority: u8, now: DateTime<Utc>) -> Job {
    let (job, created) = ledger
        .upsert_job(&new_job(number, priority), now)
        .await
        .expect("upsert");
    assert!(created);
    job
}

/// A job with a running first attempt on thread `thread`.
async fn running(ledger: &Ledger, number: u64, thread: &str) -> Job {
    let job = queued(ledger, number, 2, t0()).await;
    let job = step(ledger, &job, Event::StartAttempt, Some(&ids(thread)), at(1)).await;
    step(ledger, &job, Event::Dispatched, None, at(2)).await
}

fn raw_attempt_insert(job: JobId, number: u32, state: &str, thread: &str) -> String {
    format!(
        "INSERT INTO attempts (job_id, number, state, thread_id, project_id, create_command_id, \
         turn_command_id, message_id, title, branch, prompt, dispatch_tries, stop_pending, created_ms, \
         updated_ms) VALUES ({}, {number}, '{state}', '{thread}', 'p', 'c-{thread}', 't-{thread}', \
         'm-{thread}', 'title', 'branch', 'prompt', 0, FALSE, 0, 0)",
        job.0
    )
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|e| e.is_unique_violation())
}

// ---- the suite -----------------------------------------------------------------------------

async fn upsert_is_idempotent_and_never_moves_a_job(fx: &Fixture) {
    let ledger = &fx.ledger;
    let (first, created) = ledger.upsert_job(&new_job(7, 2), t0()).await.unwrap();
    assert!(created);
    assert_eq!(first.state, JobState::Queued);
    assert_eq!((first.attempts, first.dispatch_tries), (0, 0));
    assert_eq!(first.labels, vec!["afk".to_owned()]);
    assert_eq!(first.created_at, t0());

    let (again, created) = ledger.upsert_job(&new_job(7, 2), at(10)).await.unwrap();
    assert!(!created);
    assert_eq!(
        again, first,
        "an unchanged issue leaves the job untouched, updated_at included"
    );

    let job = step(
        ledger,
        &first,
        Event::StartAttempt,
        Some(&ids("thread-7")),
        at(20),
    )
    .await;
    assert_eq!(job.state, JobState::Dispatching);

    let mut edited = new_job(7, 0);
    edited.title = "A better title".into();
    edited.body = "More detail".into();
    edited.labels = vec!["afk".into(), "afk:p0".into()];
    edited.source = JobSource::GitHub;
    let (updated, created) = ledger.upsert_job(&edited, at(30)).await.unwrap();
    assert!(!created);
    assert_eq!(updated.id, first.id);
    assert_eq!(
        updated.state,
        JobState::Dispatching,
        "upserting never changes the state"
    );
    assert_eq!(updated.attempts, 1);
    assert_eq!(updated.title, "A better title");
    assert_eq!(updated.body, "More detail");
    assert_eq!(updated.labels, edited.labels);
    assert_eq!(updated.priority, Priority::P0);
    assert_eq!(
        updated.source,
        JobSource::Local,
        "the source is the one that first reported the issue"
    );
    assert_eq!(updated.created_at, t0());
    assert_eq!(updated.updated_at, at(30));
    assert_eq!(ledger.jobs().await.unwrap().len(), 1);
    assert_eq!(
        ledger.job_by_issue(&issue(7)).await.unwrap(),
        Some(updated.clone())
    );
    assert_eq!(ledger.job(updated.id).await.unwrap(), Some(updated));
    assert_eq!(ledger.job_by_issue(&issue(8)).await.unwrap(), None);
    assert_eq!(ledger.job(JobId(9999)).await.unwrap(), None);

    let mut huge = new_job(0, 2);
    huge.issue.number = u64::MAX;
    let error = ledger.upsert_job(&huge, t0()).await.unwrap_err();
    assert!(matches!(error, LedgerError::OutOfRange { .. }), "{error:?}");
}

async fn a_job_lives_from_queued_to_succeeded_with_its_events(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = queued(ledger, 1, 2, t0()).await;
    let attempt_ids = ids("thread-1");

    let dispatching = step(ledger, &job, Event::StartAttempt, Some(&attempt_ids), at(1)).await;
    assert_eq!(dispatching.state, JobState::Dispatching);
    assert_eq!(dispatching.attempts, 1);
    let live = ledger.live_attempts().await.unwrap();
    assert_eq!(live.len(), 1);
    let (live_job, attempt) = &live[0];
    assert_eq!(live_job, &dispatching);
    assert_eq!(attempt.number, AttemptNo(1));
    assert_eq!(attempt.state, AttemptState::Dispatching);
    assert_eq!(attempt.thread_id, attempt_ids.thread_id);
    assert_eq!(attempt.project_id, attempt_ids.project_id);
    assert_eq!(attempt.create_command_id, attempt_ids.create_command_id);
    assert_eq!(attempt.turn_command_id, attempt_ids.turn_command_id);
    assert_eq!(attempt.message_id, attempt_ids.message_id);
    assert_eq!(attempt.title, attempt_ids.title);
    assert_eq!(attempt.branch, attempt_ids.branch);
    assert_eq!(attempt.prompt, attempt_ids.prompt);
    assert_eq!(
        attempt.model, attempt_ids.model,
        "the chosen model is kept for a resumed dispatch"
    );
    assert_eq!(attempt.created_at, at(1));
    assert_eq!(attempt.ended_at, None);
    assert!(!attempt.stop_pending);
    assert_eq!(ledger.live_attempt(job.id).await.unwrap().as_ref(), Some(attempt));
    assert_eq!(ledger.attempt(attempt.id).await.unwrap().as_ref(), Some(attempt));

    let running = step(ledger, &dispatching, Event::Dispatched, None, at(2)).await;
    assert_eq!(running.state, JobState::Running);
    assert_eq!(
        ledger.attempts(job.id).await.unwrap()[0].state,
        AttemptState::Running
    );

    let done = step(ledger, &running, Event::ThreadSucceeded, None, at(3)).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.updated_at, at(3));
    assert!(ledger.live_attempts().await.unwrap().is_empty());
    let attempts = ledger.attempts(job.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].state, AttemptState::Succeeded);
    assert_eq!(attempts[0].ended_at, Some(at(3)));
    assert_eq!(attempts[0].last_error, None);
    assert_eq!(attempts[0].thread_id, "thread-1", "the ids never change");

    let events = ledger.events(job.id).await.unwrap();
    let path: Vec<(JobState, JobState, Option<AttemptNo>)> =
        events.iter().map(|e| (e.from, e.to, e.attempt)).collect();
    assert_eq!(
        path,
        vec![
            (JobState::Queued, JobState::Dispatching, Some(AttemptNo(1))),
            (JobState::Dispatching, JobState::Running, Some(AttemptNo(1))),
            (JobState::Running, JobState::Succeeded, Some(AttemptNo(1))),
        ]
    );
    assert_eq!(
        events.iter().map(|e| e.at).collect::<Vec<_>>(),
        vec![at(1), at(2), at(3)]
    );
    assert!(events.iter().all(|e| e.job_id == job.id));
    assert_eq!(events[2].note, "attempt 1 succeeded");
}

async fn a_stale_from_state_is_a_conflict_and_writes_nothing(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = queued(ledger, 2, 2, t0()).await;
    let start = transition(&job, Event::StartAttempt, at(1));
    ledger
        .record(job.id, &start, Some(&ids("thread-2a")), at(1))
        .await
        .unwrap();

    // A second writer that read the job while it was still queued.
    let error = ledger
        .record(job.id, &start, Some(&ids("thread-2b")), at(2))
        .await
        .unwrap_err();
    match error {
        LedgerError::Conflict {
            job: id,
            expected,
            actual,
        } => {
            assert_eq!(id, job.id);
            assert_eq!(expected, JobState::Queued);
            assert_eq!(actual, JobState::Dispatching);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let attempts = ledger.attempts(job.id).await.unwrap();
    assert_eq!(attempts.len(), 1, "the losing writer created no attempt");
    assert_eq!(attempts[0].thread_id, "thread-2a");
    assert_eq!(ledger.events(job.id).await.unwrap().len(), 1, "nor an event");
    let now = ledger.job(job.id).await.unwrap().unwrap();
    assert_eq!((now.state, now.attempts), (JobState::Dispatching, 1));

    let missing = ledger
        .record(JobId(424_242), &start, Some(&ids("thread-x")), at(3))
        .await;
    assert!(matches!(missing, Err(LedgerError::NotFound(_))), "{missing:?}");
}

async fn ready_jobs_come_by_priority_then_age_and_wait_out_their_backoff(fx: &Fixture) {
    let ledger = &fx.ledger;
    let low_old = queued(ledger, 10, 3, at(0)).await;
    let normal_old = queued(ledger, 11, 2, at(1)).await;
    let urgent_new = queued(ledger, 12, 0, at(5)).await;
    let normal_new = queued(ledger, 13, 2, at(2)).await;
    let same_time = queued(ledger, 14, 2, at(2)).await;

    let order: Vec<JobId> = ledger
        .ready_jobs(at(10), 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(
        order,
        vec![
            urgent_new.id,
            normal_old.id,
            normal_new.id,
            same_time.id,
            low_old.id
        ]
    );
    let first_two: Vec<JobId> = ledger
        .ready_jobs(at(10), 2)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(first_two, vec![urgent_new.id, normal_old.id]);

    // The urgent one runs and fails: it waits out its back-off (10 s) before it is ready again.
    let job = step(
        ledger,
        &urgent_new,
        Event::StartAttempt,
        Some(&ids("thread-12")),
        at(20),
    )
    .await;
    let job = step(ledger, &job, Event::Dispatched, None, at(21)).await;
    let waiting = step(
        ledger,
        &job,
        Event::ThreadFailed { error: "boom".into() },
        None,
        at(30),
    )
    .await;
    assert_eq!(waiting.state, JobState::RetryWait);
    assert_eq!(waiting.not_before, Some(at(40)));
    assert_eq!(waiting.last_error.as_deref(), Some("boom"));

    let ready = ledger.ready_jobs(at(39), 10).await.unwrap();
    assert!(
        !ready.iter().any(|j| j.id == urgent_new.id),
        "not before its back-off ends"
    );
    assert_eq!(ready.len(), 4);
    let ready = ledger.ready_jobs(at(40), 10).await.unwrap();
    assert_eq!(ready[0].id, urgent_new.id, "due again, and still the most urgent");
    assert_eq!(ready.len(), 5);
    assert!(ledger.ready_jobs(at(40), 0).await.unwrap().is_empty());
}

async fn the_schema_rejects_a_second_live_attempt(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = running(ledger, 3, "thread-3").await;

    // Straight into the table, past every check of the ledger's code.
    let second = fx
        .raw_execute(&raw_attempt_insert(job.id, 2, "dispatching", "thread-3b"))
        .await;
    let error = second.expect_err("a second live attempt must be refused by the schema");
    assert!(is_unique_violation(&error), "{error}");
    let also_running = fx
        .raw_execute(&raw_attempt_insert(job.id, 2, "running", "thread-3c"))
        .await;
    assert!(also_running.is_err_and(|e| is_unique_violation(&e)));

    // An ended attempt beside the live one is fine: it is history.
    fx.raw_execute(&raw_attempt_insert(job.id, 2, "failed", "thread-3d"))
        .await
        .unwrap();
    assert_eq!(ledger.attempts(job.id).await.unwrap().len(), 2);
    assert_eq!(ledger.live_attempts().await.unwrap().len(), 1);
}

async fn a_thread_id_belongs_to_one_attempt(fx: &Fixture) {
    let ledger = &fx.ledger;
    let first = running(ledger, 4, "thread-shared").await;
    let other = queued(ledger, 5, 2, t0()).await;
    let start = transition(&other, Event::StartAttempt, at(5));
    let error = ledger
        .record(other.id, &start, Some(&ids("thread-shared")), at(5))
        .await
        .unwrap_err();
    assert!(error.is_unique_violation(), "{error}");

    // The whole transition was rolled back: the job is still queued, with no attempt or event.
    let other_now = ledger.job(other.id).await.unwrap().unwrap();
    assert_eq!((other_now.state, other_now.attempts), (JobState::Queued, 0));
    assert!(ledger.attempts(other.id).await.unwrap().is_empty());
    assert!(ledger.events(other.id).await.unwrap().is_empty());
    assert_eq!(ledger.attempts(first.id).await.unwrap().len(), 1);
}

async fn a_stop_stays_pending_until_the_thread_is_stopped(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = running(ledger, 6, "thread-6").await;
    let calm = running(ledger, 7, "thread-7").await;
    assert!(ledger.attempts_to_stop().await.unwrap().is_empty());

    let timed_out = step(
        ledger,
        &job,
        Event::TimedOut {
            reason: "stalled for 15m".into(),
        },
        None,
        at(60),
    )
    .await;
    assert_eq!(timed_out.state, JobState::TimedOut);
    let to_stop = ledger.attempts_to_stop().await.unwrap();
    assert_eq!(to_stop.len(), 1);
    let (stop_job, attempt) = &to_stop[0];
    assert_eq!(stop_job, &timed_out);
    assert_eq!(attempt.thread_id, "thread-6");
    assert_eq!(attempt.state, AttemptState::TimedOut);
    assert!(attempt.stop_pending);
    assert_eq!(attempt.last_error.as_deref(), Some("stalled for 15m"));
    assert_eq!(attempt.ended_at, Some(at(60)));
    assert_eq!(
        ledger.live_attempts().await.unwrap().len(),
        1,
        "only the calm job's attempt is live"
    );

    ledger.mark_thread_stopped(attempt.id).await.unwrap();
    assert!(ledger.attempts_to_stop().await.unwrap().is_empty());
    assert!(!ledger.attempts(job.id).await.unwrap()[0].stop_pending);
    ledger
        .mark_thread_stopped(attempt.id)
        .await
        .expect("stopping twice is harmless");
    let unknown = ledger.mark_thread_stopped(afk_ledger::AttemptId(987_654)).await;
    assert!(matches!(unknown, Err(LedgerError::NotFound(_))), "{unknown:?}");

    // A cancelled running job must have its thread stopped too.
    let cancelled = step(
        ledger,
        &calm,
        Event::Cancel {
            reason: CancelReason::Withdrawn,
        },
        None,
        at(70),
    )
    .await;
    assert_eq!(cancelled.state, JobState::Cancelled);
    let to_stop = ledger.attempts_to_stop().await.unwrap();
    assert_eq!(to_stop.len(), 1);
    assert_eq!(to_stop[0].1.state, AttemptState::Cancelled);
    assert_eq!(to_stop[0].0.id, calm.id);
}

async fn reopening_the_ledger_keeps_everything(fx: &Fixture) {
    let ledger = &fx.ledger;
    let done = running(ledger, 8, "thread-8").await;
    let done = step(ledger, &done, Event::ThreadSucceeded, None, at(10)).await;
    let live = running(ledger, 9, "thread-9").await;
    let waiting = queued(ledger, 10, 1, at(3)).await;
    let jobs = ledger.jobs().await.unwrap();
    let events = ledger.events(done.id).await.unwrap();
    let attempts = ledger.attempts(live.id).await.unwrap();
    ledger.close().await;

    // A second open of the same database (as after a restart); migrations are not run twice.
    let reopened = Ledger::open(&fx.url).await.expect("reopen");
    assert_eq!(reopened.jobs().await.unwrap(), jobs);
    assert_eq!(reopened.events(done.id).await.unwrap(), events);
    assert_eq!(reopened.attempts(live.id).await.unwrap(), attempts);
    assert_eq!(reopened.live_attempts().await.unwrap().len(), 1);
    assert_eq!(reopened.ready_jobs(at(100), 10).await.unwrap()[0].id, waiting.id);
    // And it keeps working where the first left off.
    let live = step(&reopened, &live, Event::ThreadSucceeded, None, at(20)).await;
    assert_eq!(live.state, JobState::Succeeded);
    reopened.close().await;
}

async fn counts_by_state_cover_every_state(fx: &Fixture) {
    let ledger = &fx.ledger;
    let empty = ledger.counts_by_state().await.unwrap();
    assert_eq!(empty.len(), JobState::ALL.len());
    assert!(empty.iter().all(|(_, n)| *n == 0));

    queued(ledger, 20, 2, t0()).await;
    queued(ledger, 21, 2, t0()).await;
    running(ledger, 22, "thread-22").await;
    let done = running(ledger, 23, "thread-23").await;
    step(ledger, &done, Event::ThreadSucceeded, None, at(5)).await;

    let counts = ledger.counts_by_state().await.unwrap();
    let order: Vec<JobState> = counts.iter().map(|(s, _)| *s).collect();
    assert_eq!(order, JobState::ALL.to_vec(), "every state, in lifecycle order");
    let count = |state: JobState| counts.iter().find(|(s, _)| *s == state).map(|(_, n)| *n);
    assert_eq!(count(JobState::Queued), Some(2));
    assert_eq!(count(JobState::Running), Some(1));
    assert_eq!(count(JobState::Succeeded), Some(1));
    assert_eq!(count(JobState::Failed), Some(0));
    assert_eq!(counts.iter().map(|(_, n)| n).sum::<u64>(), 4);
}

async fn a_wait_for_a_person_is_kept_and_its_length_summed(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = running(ledger, 90, "thread-90").await;
    assert_eq!((job.input_wait_since, job.input_waited), (None, Duration::ZERO));
    let asks = |question: &str| Event::InputRequested {
        question: question.to_owned(),
    };
    let waiting = step(ledger, &job, asks("May I drop the table?"), None, at(10)).await;
    assert_eq!(waiting.state, JobState::NeedsInput);
    assert_eq!(waiting.input_wait_since, Some(at(10)));
    assert_eq!(waiting.input_question.as_deref(), Some("May I drop the table?"));
    let watched = ledger.watched_attempts().await.unwrap();
    assert_eq!(
        (watched[0].job_state, watched[0].input_wait_since),
        (JobState::NeedsInput, Some(at(10))),
        "the watcher reads the wait with the live attempt"
    );
    let attempt = ledger.live_attempt(job.id).await.unwrap().expect("still live");
    assert_eq!(
        (attempt.state, attempt.updated_at),
        (AttemptState::Running, at(2)),
        "the attempt runs on: its running start (the turn timeout's origin) stays"
    );

    let reopened = Ledger::open(&fx.url).await.expect("reopen");
    assert_eq!(
        reopened.job(job.id).await.unwrap(),
        Some(waiting.clone()),
        "a restart keeps the wait"
    );

    let answered = step(ledger, &waiting, Event::InputAnswered, None, at(70)).await;
    assert_eq!(answered.state, JobState::Running);
    assert_eq!(
        (answered.input_wait_since, answered.input_question.as_deref()),
        (None, None)
    );
    assert_eq!(answered.input_waited, Duration::from_secs(60));
    let again = step(ledger, &answered, asks("And the index?"), None, at(100)).await;
    let done = step(ledger, &again, Event::ThreadSucceeded, None, at(130)).await;
    assert_eq!(
        (done.state, done.input_waited, done.input_wait_since),
        (JobState::Succeeded, Duration::from_secs(90), None),
        "an end while waiting ends the wait too"
    );
    let events = ledger.events(job.id).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.note.contains("waits for a person: May I drop the table?")),
        "{events:?}"
    );

    // A new attempt starts without the last one's waiting time.
    let other = running(ledger, 91, "thread-91").await;
    let other = step(ledger, &other, asks("?"), None, at(10)).await;
    let other = step(
        ledger,
        &other,
        Event::ThreadFailed { error: "boom".into() },
        None,
        at(20),
    )
    .await;
    assert_eq!(
        (other.state, other.input_waited),
        (JobState::RetryWait, Duration::from_secs(10))
    );
    let retried = step(
        ledger,
        &other,
        Event::StartAttempt,
        Some(&ids("thread-91b")),
        at(60),
    )
    .await;
    assert_eq!(retried.input_waited, Duration::ZERO);
}

async fn starting_an_attempt_needs_its_ids(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = queued(ledger, 30, 2, t0()).await;
    let start = transition(&job, Event::StartAttempt, at(1));
    let error = ledger.record(job.id, &start, None, at(1)).await.unwrap_err();
    assert!(
        matches!(
            error,
            LedgerError::MissingAttempt {
                number: AttemptNo(1),
                ..
            }
        ),
        "{error:?}"
    );
    let unchanged = ledger.job(job.id).await.unwrap().unwrap();
    assert_eq!(unchanged, job, "nothing was written");
    assert!(ledger.events(job.id).await.unwrap().is_empty());
}

async fn failed_attempts_retry_with_new_ids_until_given_up(fx: &Fixture) {
    let ledger = &fx.ledger;
    let mut job = queued(ledger, 40, 2, t0()).await;
    let mut now = 0;
    for n in 1..=3u32 {
        now += 1000;
        job = step(
            ledger,
            &job,
            Event::StartAttempt,
            Some(&ids(&format!("thread-40-{n}"))),
            at(now),
        )
        .await;
        assert_eq!((job.attempts, job.not_before), (n, None));
        job = step(ledger, &job, Event::Dispatched, None, at(now + 1)).await;
        job = step(
            ledger,
            &job,
            Event::ThreadFailed {
                error: format!("failure {n}"),
            },
            None,
            at(now + 2),
        )
        .await;
    }
    assert_eq!(job.state, JobState::GivenUp);
    assert_eq!(job.attempts, 3);
    assert_eq!(job.last_error.as_deref(), Some("failure 3"));
    let attempts = ledger.attempts(job.id).await.unwrap();
    let summary: Vec<(u32, AttemptState, &str)> = attempts
        .iter()
        .map(|a| (a.number.0, a.state, a.thread_id.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, AttemptState::Failed, "thread-40-1"),
            (2, AttemptState::Failed, "thread-40-2"),
            (3, AttemptState::Failed, "thread-40-3"),
        ]
    );
    assert_eq!(attempts[1].last_error.as_deref(), Some("failure 2"));
    let events = ledger.events(job.id).await.unwrap();
    assert_eq!(events.len(), 9);
    assert_eq!(events.last().map(|e| e.to), Some(JobState::GivenUp));
    assert!(ledger.ready_jobs(at(100_000), 10).await.unwrap().is_empty());
}

async fn transient_dispatch_errors_keep_the_attempt_and_count_tries(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = queued(ledger, 50, 2, t0()).await;
    let job = step(ledger, &job, Event::StartAttempt, Some(&ids("thread-50")), at(1)).await;
    let job = step(
        ledger,
        &job,
        Event::DispatchDeferred { error: "503".into() },
        None,
        at(2),
    )
    .await;
    assert_eq!(job.state, JobState::Dispatching);
    assert_eq!(job.dispatch_tries, 1);
    assert_eq!(job.not_before, Some(at(12)));
    assert_eq!(job.last_error.as_deref(), Some("503"));
    let job = step(
        ledger,
        &job,
        Event::DispatchDeferred { error: "502".into() },
        None,
        at(12),
    )
    .await;
    assert_eq!(job.dispatch_tries, 2);
    let attempts = ledger.attempts(job.id).await.unwrap();
    assert_eq!(attempts.len(), 1, "the same attempt, with the same ids");
    assert_eq!(attempts[0].dispatch_tries, 2);
    assert_eq!(attempts[0].last_error.as_deref(), Some("502"));
    assert_eq!(attempts[0].state, AttemptState::Dispatching);

    let job = step(ledger, &job, Event::Dispatched, None, at(40)).await;
    assert_eq!((job.state, job.not_before), (JobState::Running, None));
    // A lost thread, settled into a retry wait; the next attempt starts with fresh tries.
    let job = step(ledger, &job, Event::ThreadLost, None, at(50)).await;
    let job = step(ledger, &job, Event::Settle, None, at(51)).await;
    assert_eq!(job.state, JobState::RetryWait);
    let job = step(
        ledger,
        &job,
        Event::StartAttempt,
        Some(&ids("thread-50-2")),
        at(100),
    )
    .await;
    assert_eq!((job.attempts, job.dispatch_tries), (2, 0));
    let attempts = ledger.attempts(job.id).await.unwrap();
    assert_eq!(attempts[0].state, AttemptState::Lost);
    assert_eq!(attempts[1].state, AttemptState::Dispatching);
}

async fn a_refused_job_fails_with_its_reason(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = queued(ledger, 60, 2, t0()).await;
    let refused = Event::Refused {
        error: "no T3 project for acme/widgets".into(),
    };
    let job = step(ledger, &job, refused, None, at(1)).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("no T3 project")));
    assert!(ledger.attempts(job.id).await.unwrap().is_empty());
    let events = ledger.events(job.id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].attempt, None);

    // A live-attempt change for a job without one is refused, not silently dropped.
    let other = queued(ledger, 61, 2, t0()).await;
    let bogus = Transition {
        from: JobState::Queued,
        to: JobState::Running,
        attempt: Some(afk_core::AttemptChange::Running),
        not_before: None,
        effect: None,
        note: "bogus".into(),
        fresh_budget: false,
        cancel_reason: None,
        input_wait: None,
    };
    let error = ledger.record(other.id, &bogus, None, at(2)).await.unwrap_err();
    assert!(matches!(error, LedgerError::NoLiveAttempt { .. }), "{error:?}");
    assert_eq!(
        ledger.job(other.id).await.unwrap().unwrap().state,
        JobState::Queued
    );
}

async fn open_issues_are_the_source_s_jobs_that_are_not_final(fx: &Fixture) {
    let ledger = &fx.ledger;
    queued(ledger, 80, 2, t0()).await;
    running(ledger, 81, "thread-81").await;
    let done = queued(ledger, 82, 2, t0()).await;
    step(
        ledger,
        &done,
        Event::Cancel {
            reason: CancelReason::FileRemoved,
        },
        None,
        at(1),
    )
    .await;
    let mut from_github = new_job(83, 2);
    from_github.source = JobSource::GitHub;
    ledger.upsert_job(&from_github, t0()).await.unwrap();
    let mut open = ledger.open_issues(JobSource::Local).await.unwrap();
    open.sort();
    assert_eq!(open, vec![issue(80), issue(81)]);
    assert_eq!(
        ledger.open_issues(JobSource::GitHub).await.unwrap(),
        vec![issue(83)]
    );
}

async fn jobs_in_filters_by_state(fx: &Fixture) {
    let ledger = &fx.ledger;
    let a = queued(ledger, 70, 2, t0()).await;
    let b = running(ledger, 71, "thread-71").await;
    let c = queued(ledger, 72, 2, t0()).await;
    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(ledger.jobs_in(&[JobState::Queued]).await.unwrap()),
        vec![a.id, c.id]
    );
    assert_eq!(
        ids(ledger
            .jobs_in(&[JobState::Running, JobState::Queued])
            .await
            .unwrap()),
        vec![a.id, b.id, c.id]
    );
    assert!(ledger.jobs_in(&[]).await.unwrap().is_empty());
    assert!(ledger.jobs_in(&[JobState::Lost]).await.unwrap().is_empty());
}

async fn concurrent_starts_of_one_job_make_exactly_one_attempt(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = queued(ledger, 80, 2, t0()).await;
    let start = transition(&job, Event::StartAttempt, at(1));
    // Eight dispatchers (replicas, or tasks of one) race to start the same queued job.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let ledger = ledger.clone();
            let start = start.clone();
            tokio::spawn(async move {
                ledger
                    .record(job.id, &start, Some(&ids(&format!("race-{i}"))), at(1))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.expect("racer task") {
            Ok(job) => {
                won += 1;
                assert_eq!((job.state, job.attempts), (JobState::Dispatching, 1));
            }
            Err(LedgerError::Conflict { actual, .. }) => assert_eq!(actual, JobState::Dispatching),
            Err(other) => panic!("a losing racer must see a conflict, got {other:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one dispatcher starts the attempt");
    assert_eq!(ledger.attempts(job.id).await.unwrap().len(), 1);
    assert_eq!(ledger.events(job.id).await.unwrap().len(), 1);
}

async fn concurrent_upserts_of_one_issue_make_one_job(fx: &Fixture) {
    let ledger = &fx.ledger;
    let racers: Vec<_> = (0..6)
        .map(|_| {
            let ledger = ledger.clone();
            tokio::spawn(async move { ledger.upsert_job(&new_job(81, 2), t0()).await })
        })
        .collect();
    let mut created = 0;
    let mut ids = Vec::new();
    for racer in racers {
        let (job, was_created) = racer.await.expect("racer task").expect("upsert");
        created += usize::from(was_created);
        ids.push(job.id);
    }
    assert_eq!(created, 1, "one upsert creates the job, the others find it");
    ids.dedup();
    assert_eq!(ids.len(), 1);
    assert_eq!(ledger.jobs().await.unwrap().len(), 1);
}

async fn every_cancel_reason_is_kept(fx: &Fixture) {
    let ledger = &fx.ledger;
    for (i, reason) in CancelReason::ALL.iter().enumerate() {
        let job = queued(ledger, 300 + i as u64, 2, t0()).await;
        let job = step(ledger, &job, Event::Cancel { reason: *reason }, None, at(1)).await;
        assert_eq!(job.cancel_reason, Some(*reason));
        let read = ledger.job(job.id).await.unwrap().expect("the job");
        assert_eq!(read.cancel_reason, Some(*reason), "{reason:?} read back");
    }
}

async fn a_cancelled_job_comes_back_queued_with_its_history(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = queued(ledger, 82, 2, t0()).await;
    let job = step(
        ledger,
        &job,
        Event::Cancel {
            reason: CancelReason::Withdrawn,
        },
        None,
        at(1),
    )
    .await;
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.cancel_reason, Some(CancelReason::Withdrawn));
    assert_eq!(job.last_error, None, "a withdrawal is not an error");
    assert!(
        ledger.attempts_to_stop().await.unwrap().is_empty(),
        "no thread to stop"
    );
    assert!(ledger.ready_jobs(at(2), 10).await.unwrap().is_empty());

    let requeue = Event::Requeue {
        by: RequeueBy::Source(JobSource::GitHub),
    };
    let job = step(ledger, &job, requeue, None, at(2)).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.cancel_reason, None, "a queued job is not cancelled");
    assert_eq!(ledger.ready_jobs(at(3), 10).await.unwrap()[0].id, job.id);
    let notes: Vec<String> = ledger
        .events(job.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.note)
        .collect();
    assert_eq!(
        notes,
        vec![
            "cancelled: the issue was closed or lost its trigger label".to_owned(),
            "requeued with a fresh budget of 3 attempts".to_owned()
        ]
    );
}

async fn an_unreadable_row_is_reported_not_guessed(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = queued(ledger, 83, 2, t0()).await;
    // A state afk does not know cannot even be written: the schema checks it.
    let bad_state = fx
        .raw_execute(&format!(
            "UPDATE jobs SET state = 'paused' WHERE id = {}",
            job.id.0
        ))
        .await;
    assert!(bad_state.is_err(), "the schema must refuse an unknown state");

    fx.raw_execute(&format!(
        "UPDATE jobs SET labels = 'not json' WHERE id = {}",
        job.id.0
    ))
    .await
    .unwrap();
    let error = ledger.jobs().await.unwrap_err();
    assert!(matches!(error, LedgerError::Corrupt { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("jobs.labels") && message.contains(&format!("job {}", job.id)),
        "{message}"
    );
}

// ---- opening -------------------------------------------------------------------------------

#[tokio::test]
async fn an_in_memory_ledger_works_for_demos() {
    let ledger = Ledger::open("sqlite::memory:").await.unwrap();
    let (job, created) = ledger.upsert_job(&new_job(1, 2), t0()).await.unwrap();
    assert!(created);
    let job = step(
        &ledger,
        &job,
        Event::StartAttempt,
        Some(&ids("thread-mem")),
        at(1),
    )
    .await;
    assert_eq!(ledger.live_attempts().await.unwrap().len(), 1);
    assert_eq!(
        ledger.job(job.id).await.unwrap().map(|j| j.state),
        Some(JobState::Dispatching)
    );
}

#[tokio::test]
async fn a_sqlite_ledger_runs_in_wal_mode() {
    let fixture = Fixture::sqlite().await;
    run(fixture, |fx| async move {
        let Raw::Sqlite(pool) = &fx.raw else {
            unreachable!("a SQLite fixture");
        };
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    })
    .await;
}

#[tokio::test]
async fn processes_opening_a_new_sqlite_file_at_once_all_succeed() {
    // `afk run` and `afk jobs` started together on a fresh machine: both create the schema.
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let (a, b, c) = tokio::join!(Ledger::open(&url), Ledger::open(&url), Ledger::open(&url));
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let (job, _) = a.upsert_job(&new_job(1, 2), t0()).await.unwrap();
    assert_eq!(b.job(job.id).await.unwrap().map(|j| j.issue), Some(issue(1)));
    assert_eq!(c.jobs().await.unwrap().len(), 1);
    for ledger in [a, b, c] {
        ledger.close().await;
    }
}

#[tokio::test]
async fn open_errors_never_show_the_password() {
    let error = Ledger::open("mysql://afk:hunter2@127.0.0.1/afk")
        .await
        .unwrap_err();
    assert!(matches!(error, LedgerError::UnsupportedUrl { .. }), "{error:?}");
    let text = format!("{error} {error:?}");
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("afk:***@127.0.0.1"), "{text}");

    // Nothing listens on port 1 of loopback: the connection is refused at once.
    let error = Ledger::open("postgres://afk:hunter2@127.0.0.1:1/afk")
        .await
        .unwrap_err();
    assert!(matches!(error, LedgerError::Open { .. }), "{error:?}");
    let text = format!("{error} {error:?}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn the_ledger_debug_output_hides_the_password() {
    let Some(fixture) = Fixture::postgres().await else {
        return;
    };
    run(fixture, |fx| async move {
        // The same server with a password, which the trust-authenticating test server ignores.
        let Some(rest) = fx.url.strip_prefix("postgres://postgres@") else {
            let _ = writeln!(
                std::io::stderr(),
                "SKIP: AFK_TEST_PG_URL is not of the form postgres://postgres@..."
            );
            return;
        };
        let ledger = Ledger::open(&format!("postgres://postgres:hunter2@{rest}"))
            .await
            .unwrap();
        let debug = format!("{ledger:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            ledger.url_redacted().contains("postgres:***@"),
            "{}",
            ledger.url_redacted()
        );
        ledger.close().await;
    })
    .await;
}

async fn one_process_leads_the_ledger_at_a_time(fx: &Fixture) {
    // A second afk (another process in real life: a second pool here) opens the same ledger.
    let other = Ledger::open(&fx.url)
        .await
        .expect("a second handle on the same ledger");
    let lead = fx.ledger.try_lead().await.unwrap().expect("the first one leads");
    assert!(
        other.try_lead().await.unwrap().is_none(),
        "the second one stands by"
    );
    assert!(
        other.try_lead().await.unwrap().is_none(),
        "asking again changes nothing"
    );
    lead.release().await;
    let taken_over = other.try_lead().await.unwrap();
    assert!(
        taken_over.is_some(),
        "the standby takes over once the leader is gone"
    );
    other.close().await;
}

/// Takes the leader's lock away from under it, as the world does: the lock file deleted (SQLite),
/// the lock's PostgreSQL session terminated (`pg_terminate_backend`: a reaper, a restart).
async fn break_the_lock(fx: &Fixture) {
    match &fx.raw {
        Raw::Sqlite(_) => {
            let db = fx.url.strip_prefix("sqlite://").unwrap();
            std::fs::remove_file(format!("{db}.lock")).expect("delete the lock file");
        }
        Raw::Postgres(pool) => {
            // The advisory lock of this schema (a 32-bit key: pg_locks shows it in `objid`).
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
                 AND objsubid = 1 AND objid::bigint = \
                 (hashtext('afk-ledger-leader:' || current_schema())::bigint & 4294967295)",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            assert_eq!(killed, [true], "one backend holds the leader lock");
        }
    }
}

async fn a_leader_that_lost_its_lock_notices_and_cannot_write(fx: &Fixture) {
    let old = &fx.ledger;
    let job = queued(old, 1, 2, t0()).await;
    let mut lead = old.try_lead().await.unwrap().expect("the first one leads");
    assert_eq!(old.epoch(), Some(lead.epoch()));
    lead.check().await.expect("it leads");
    let job = step(old, &job, Event::StartAttempt, Some(&ids("fence-1")), at(1)).await;

    break_the_lock(fx).await;
    let lost = tokio::time::timeout(Duration::from_secs(20), lead.check())
        .await
        .expect("the check answers")
        .expect_err("the lock is gone");
    assert!(
        lost.0.contains("lock file") || lost.0.contains("PostgreSQL session"),
        "{lost}"
    );
    let standby = Ledger::open(&fx.url).await.unwrap();
    let mut new_lead = standby
        .try_lead()
        .await
        .unwrap()
        .expect("a standby takes the lead");
    assert!(new_lead.epoch() > lead.epoch());

    // The old leader has not noticed: each of its writes is refused and writes nothing.
    let dispatched = transition(&job, Event::Dispatched, at(2));
    let refused = old.record(job.id, &dispatched, None, at(2)).await.unwrap_err();
    assert!(refused.is_deposed(), "{refused}");
    assert!(old
        .upsert_job(&new_job(2, 2), at(2))
        .await
        .unwrap_err()
        .is_deposed());
    assert!(old.mark_reported(job.id, "x").await.unwrap_err().is_deposed());
    let wait = Wait {
        topic: "t3_read".into(),
        part: "T3".into(),
        message: "m".into(),
        kind: "k".into(),
        needs_person: false,
        since: at(2),
        updated_at: at(2),
    };
    assert!(old.set_wait(&wait).await.unwrap_err().is_deposed());
    assert!(old.clear_waits().await.unwrap_err().is_deposed());
    let seen = standby.job(job.id).await.unwrap().unwrap();
    assert_eq!(seen.state, JobState::Dispatching, "nothing of the old leader's");
    assert!(standby.job_by_issue(&issue(2)).await.unwrap().is_none());

    // The new leader writes; the old one, asked again, has lost to it.
    let job = step(&standby, &seen, Event::Dispatched, None, at(3)).await;
    assert_eq!(job.state, JobState::Running);
    let lost = lead.check().await.expect_err("still lost");
    assert!(!lost.0.is_empty());
    new_lead.check().await.expect("the new one leads");
    new_lead.release().await;
    standby.close().await;
}

async fn only_the_current_leaders_writes_land(fx: &Fixture) {
    // Two leaders in turn on one ledger, each through its own handle: the epoch moves on with
    // each, and a handle writes only under its own.
    let first = Ledger::open(&fx.url).await.unwrap();
    let second = Ledger::open(&fx.url).await.unwrap();
    let lead = first.try_lead().await.unwrap().unwrap();
    let a = queued(&first, 10, 2, t0()).await;
    lead.release().await;
    let lead2 = second.try_lead().await.unwrap().unwrap();
    assert_eq!(second.current_epoch().await.unwrap(), lead2.epoch());
    // Concurrent writes of both: only the current leader's land.
    let writes = (0..8u64).map(|n| {
        let (first, second) = (first.clone(), second.clone());
        async move {
            let old = first.upsert_job(&new_job(100 + n, 2), t0()).await;
            let new = second.upsert_job(&new_job(200 + n, 2), t0()).await;
            (old.map(drop), new.map(drop))
        }
    });
    for (old, new) in futures::future::join_all(writes).await {
        assert!(old.unwrap_err().is_deposed());
        new.unwrap();
    }
    assert_eq!(second.job(a.id).await.unwrap().unwrap().state, JobState::Queued);
    lead2.release().await;
    first.close().await;
    second.close().await;
}

async fn a_value_the_ledger_cannot_store_is_refused_as_the_items_fault(fx: &Fixture) {
    let mut nul = new_job(5, 2);
    nul.body = "before\0after".into();
    let error = fx.ledger.upsert_job(&nul, t0()).await.unwrap_err();
    assert!(
        error.is_bad_value() && error.to_string().contains("NUL"),
        "{error}"
    );
    let mut huge = new_job(6, 2);
    huge.issue.number = u64::MAX;
    let error = fx.ledger.upsert_job(&huge, t0()).await.unwrap_err();
    assert!(error.is_bad_value(), "{error}");
    assert!(fx.ledger.jobs().await.unwrap().is_empty());
}

async fn a_reported_job_is_not_to_report_until_it_changes(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = queued(ledger, 91, 2, t0()).await;
    let to_report = |ledger: &Ledger| {
        let ledger = ledger.clone();
        async move {
            ledger
                .jobs_to_report(JobSource::Local)
                .await
                .unwrap()
                .into_iter()
                .map(|j| j.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(to_report(ledger).await, vec![job.id], "never reported yet");
    assert!(
        ledger.jobs_to_report(JobSource::GitHub).await.unwrap().is_empty(),
        "another source's jobs are not listed"
    );
    ledger.mark_reported(job.id, "queued:0").await.unwrap();
    assert!(to_report(ledger).await.is_empty(), "reported as it is");
    let job = step(ledger, &job, Event::StartAttempt, Some(&ids("t-91")), at(1)).await;
    assert_eq!(to_report(ledger).await, vec![job.id], "it moved on since");
    ledger.mark_reported(job.id, "dispatching:1").await.unwrap();
    assert!(to_report(ledger).await.is_empty());
}

/// `afk run` re-reads the live attempts only when [`Ledger::watched_changes`] moved: every write
/// to what that read returns moves it, from this handle, another process's or a person's SQL;
/// the marks afk keeps beside (a report, a stop carried out, a title) do not.
async fn every_change_watching_reads_moves_the_count_whoever_writes_and_nothing_else_does(fx: &Fixture) {
    let ledger = &fx.ledger;
    // Another process's handle on the same database.
    let other = Ledger::open(&fx.url).await.expect("a second handle");
    let count = || async { ledger.watched_changes().await.expect("the count") };
    let start = count().await;
    assert_eq!(count().await, start, "reading moves nothing");

    let job = queued(&other, 31, 2, t0()).await;
    let queued_at = count().await;
    assert!(queued_at > start, "a new job, written by another handle");
    let (_, created) = other.upsert_job(&new_job(31, 2), at(1)).await.unwrap();
    assert!(!created);
    let mut retitled = new_job(31, 2);
    retitled.title = "A new title".into();
    other.upsert_job(&retitled, at(2)).await.unwrap();
    ledger.mark_reported(job.id, "queued:0").await.unwrap();
    assert_eq!(
        count().await,
        queued_at,
        "a repeated upsert, a new title, a report mark"
    );

    let job = step(&other, &job, Event::StartAttempt, Some(&ids("t-31")), at(3)).await;
    let started = count().await;
    assert!(started > queued_at, "an attempt started");
    let watched = ledger.watched_attempts().await.unwrap();
    let job = step(ledger, &job, Event::Dispatched, None, at(4)).await;
    let running = count().await;
    assert!(running > started, "it runs");
    assert_ne!(ledger.watched_attempts().await.unwrap(), watched);

    fx.raw_execute(&format!(
        "UPDATE attempts SET updated_ms = 99 WHERE job_id = {}",
        job.id.0
    ))
    .await
    .unwrap();
    let by_hand = count().await;
    assert!(by_hand > running, "a person's SQL on a watched column");
    fx.raw_execute(&format!("UPDATE jobs SET reported = 'x' WHERE id = {}", job.id.0))
        .await
        .unwrap();
    assert_eq!(count().await, by_hand, "a column watching does not read");

    // Follow-ups: a new one is read by watching (the latest one's time), its `sent` mark is not.
    fx.raw_execute(&format!(
        "INSERT INTO follow_ups (job_id, attempt, number, cause_key, cause, prompt, created_ms) \
         VALUES ({}, 1, 1, 'k', 'a review', 'Fix it.', 100)",
        job.id.0
    ))
    .await
    .unwrap();
    let followed = count().await;
    assert!(followed > by_hand, "a follow-up recorded");
    fx.raw_execute(&format!(
        "UPDATE follow_ups SET sent = TRUE WHERE job_id = {}",
        job.id.0
    ))
    .await
    .unwrap();
    assert_eq!(count().await, followed, "a follow-up marked sent");
    fx.raw_execute(&format!("DELETE FROM follow_ups WHERE job_id = {}", job.id.0))
        .await
        .unwrap();
    let by_hand = count().await;
    assert!(by_hand > followed, "a row deleted by hand");

    let job = step(
        &other,
        &job,
        Event::Cancel {
            reason: CancelReason::ByHand,
        },
        None,
        at(5),
    )
    .await;
    let cancelled = count().await;
    assert!(cancelled > by_hand, "the job ended");
    let stop = &ledger.attempts_to_stop().await.unwrap()[0].1;
    ledger.mark_thread_stopped(stop.id).await.unwrap();
    assert_eq!(count().await, cancelled, "a stop carried out");
    assert_eq!(job.state, JobState::Cancelled);
    other.close().await;
}

/// `afk run` reuses its last read of the attempts to stop, the jobs to settle and the ready jobs
/// while [`Ledger::changes`]' ledger count stands: every write to a job or an attempt moves it,
/// whatever the column and whoever writes, the marks that the watched count leaves out included.
async fn every_change_to_a_job_or_an_attempt_moves_the_ledger_count_whoever_writes(fx: &Fixture) {
    let ledger = &fx.ledger;
    let other = Ledger::open(&fx.url).await.expect("a second handle");
    let count = || async { ledger.changes().await.expect("the counts") };
    let start = count().await;
    assert_eq!(count().await, start, "reading moves nothing");
    assert_eq!(
        start.watched,
        ledger.watched_changes().await.unwrap(),
        "one row holds both counts"
    );

    let job = queued(&other, 41, 2, t0()).await;
    let queued_at = count().await;
    assert!(queued_at.ledger > start.ledger, "a new job, by another handle");
    let mut retitled = new_job(41, 2);
    retitled.title = "A new title".into();
    other.upsert_job(&retitled, at(1)).await.unwrap();
    let retitled_at = count().await;
    assert!(retitled_at.ledger > queued_at.ledger, "a new title");
    ledger.mark_reported(job.id, "queued:0").await.unwrap();
    let reported = count().await;
    assert!(reported.ledger > retitled_at.ledger, "a report mark");
    assert_eq!(reported.watched, queued_at.watched, "neither is watched");

    let job = step(&other, &job, Event::StartAttempt, Some(&ids("t-41")), at(2)).await;
    let job = step(&other, &job, Event::Dispatched, None, at(3)).await;
    let running = count().await;
    assert!(running.ledger > reported.ledger && running.watched > reported.watched);

    // A stop requested by a person's SQL alone: the watched count stands, this one moves.
    fx.raw_execute(&format!(
        "UPDATE attempts SET stop_pending = TRUE WHERE job_id = {}",
        job.id.0
    ))
    .await
    .unwrap();
    let stop_asked = count().await;
    assert!(stop_asked.ledger > running.ledger, "a stop requested by hand");
    assert_eq!(stop_asked.watched, running.watched);
    let stop = &ledger.attempts_to_stop().await.unwrap()[0].1;
    other.mark_thread_stopped(stop.id).await.unwrap();
    let stopped = count().await;
    assert!(stopped.ledger > stop_asked.ledger, "a stop carried out");
    fx.raw_execute(&format!("UPDATE jobs SET priority = 0 WHERE id = {}", job.id.0))
        .await
        .unwrap();
    let reprioritised = count().await;
    assert!(reprioritised.ledger > stopped.ledger, "any column, by hand");
    fx.raw_execute(&format!("DELETE FROM attempts WHERE job_id = {}", job.id.0))
        .await
        .unwrap();
    let deleted = count().await;
    assert!(deleted.ledger > reprioritised.ledger, "a row deleted by hand");
    if ledger.backend() == Backend::Postgres {
        // TRUNCATE fires no row trigger: statement triggers count it.
        queued(&other, 42, 2, t0()).await;
        let before = count().await;
        fx.raw_execute("TRUNCATE attempts CASCADE").await.unwrap();
        let attempts_emptied = count().await;
        assert!(
            attempts_emptied.ledger > before.ledger,
            "attempts truncated by hand"
        );
        fx.raw_execute("TRUNCATE jobs CASCADE").await.unwrap();
        assert!(
            count().await.ledger > attempts_emptied.ledger,
            "jobs truncated by hand"
        );
    }
    other.close().await;
}

/// A job in `retry_wait` becomes ready when its back-off ends, with no write: the soonest end
/// still to come is the instant until which the ready jobs read now stay the same.
async fn the_next_ready_instant_is_the_soonest_backoff_still_running(fx: &Fixture) {
    let ledger = &fx.ledger;
    assert_eq!(ledger.next_ready_at(t0()).await.unwrap(), None, "no job");
    queued(ledger, 51, 2, t0()).await;
    for (number, ends) in [(52, 100), (53, 50), (54, 10)] {
        let job = queued(ledger, number, 2, t0()).await;
        fx.raw_execute(&format!(
            "UPDATE jobs SET state = 'retry_wait', not_before_ms = {} WHERE id = {}",
            at(ends).timestamp_millis(),
            job.id.0
        ))
        .await
        .unwrap();
    }
    assert_eq!(
        ledger.next_ready_at(at(20)).await.unwrap(),
        Some(at(50).timestamp_millis())
    );
    assert_eq!(ledger.ready_jobs(at(20), 10).await.unwrap().len(), 2);
    let just_before = at(50) - chrono::Duration::microseconds(1);
    assert_eq!(ledger.ready_jobs(just_before, 10).await.unwrap().len(), 2);
    assert_eq!(ledger.ready_jobs(at(50), 10).await.unwrap().len(), 3);
    assert_eq!(
        ledger.next_ready_at(at(50)).await.unwrap(),
        Some(at(100).timestamp_millis()),
        "a back-off that ends at that very instant is over"
    );
    assert_eq!(ledger.next_ready_at(at(100)).await.unwrap(), None);
    // A job parked by hand past any date is a back-off end like any other, not an error.
    let parked = queued(ledger, 55, 2, t0()).await;
    fx.raw_execute(&format!(
        "UPDATE jobs SET state = 'retry_wait', not_before_ms = {} WHERE id = {}",
        i64::MAX,
        parked.id.0
    ))
    .await
    .unwrap();
    assert_eq!(ledger.next_ready_at(at(100)).await.unwrap(), Some(i64::MAX));
}

async fn watched_attempts_are_the_live_attempts_without_their_text(fx: &Fixture) {
    let ledger = &fx.ledger;
    assert!(ledger.watched_attempts().await.unwrap().is_empty());
    let run = running(ledger, 1, "thread-run").await;
    let queued_job = queued(ledger, 2, 2, t0()).await;
    let dispatching = step(
        ledger,
        &queued_job,
        Event::StartAttempt,
        Some(&ids("thread-disp")),
        at(3),
    )
    .await;
    let done = running(ledger, 3, "thread-done").await;
    step(ledger, &done, Event::ThreadSucceeded, None, at(4)).await;
    queued(ledger, 4, 2, t0()).await;

    let watched = ledger.watched_attempts().await.unwrap();
    let live = ledger.live_attempts().await.unwrap();
    let expected: Vec<WatchedAttempt> = live
        .iter()
        .map(|(job, attempt)| WatchedAttempt {
            job_id: job.id,
            issue: job.issue.clone(),
            job_state: job.state,
            job_not_before: job.not_before,
            attempt_id: attempt.id,
            number: attempt.number,
            state: attempt.state,
            thread_id: attempt.thread_id.clone(),
            updated_at: attempt.updated_at,
            input_wait_since: job.input_wait_since,
            input_waited: job.input_waited,
            follow_up_at: None,
        })
        .collect();
    assert_eq!(
        watched, expected,
        "the same attempts, in the same order, with the same facts"
    );
    let threads: Vec<&str> = watched.iter().map(|w| w.thread_id.as_str()).collect();
    assert_eq!(
        threads,
        ["thread-run", "thread-disp"],
        "only live attempts, by job"
    );
    assert_eq!(watched[0].job_id, run.id);
    assert_eq!(watched[0].state, AttemptState::Running);
    assert_eq!(
        watched[0].updated_at,
        at(2),
        "a running attempt's change is when it started running"
    );
    assert_eq!(watched[1].job_id, dispatching.id);
    assert_eq!(watched[1].job_state, JobState::Dispatching);
}

/// `watched_attempts_of` over more jobs than one statement takes (500), in no order, with
/// repeats, jobs without a live attempt and a job that does not exist: the full read's entries of
/// those jobs, in its order.
async fn the_live_attempts_of_some_jobs_are_the_full_reads_entries_of_them(fx: &Fixture) {
    let ledger = &fx.ledger;
    let jobs: Vec<NewJob> = (1..=1_200).map(|n| new_job(n, 2)).collect();
    let queued: Vec<Job> = (ledger.queue_jobs(&jobs, t0()).await.unwrap().into_iter())
        .map(|job| job.unwrap().unwrap())
        .collect();
    // Every third job stays queued (no live attempt); the others run, by SQL (fast).
    for job in queued.iter().filter(|job| job.issue.number % 3 != 0) {
        let thread = format!("thread-{}", job.issue.number);
        fx.raw_execute(&raw_attempt_insert(job.id, 1, "running", &thread))
            .await
            .unwrap();
    }
    fx.raw_execute(
        "UPDATE jobs SET state = 'running', attempts = 1 WHERE id IN \
                    (SELECT job_id FROM attempts)",
    )
    .await
    .unwrap();
    let full = ledger.watched_attempts().await.unwrap();
    assert_eq!(full.len(), 800);
    // Every fifth job (either kind), backwards, some twice, and an unknown one.
    let mut asked: Vec<JobId> = (queued.iter().rev())
        .filter(|job| job.issue.number % 5 == 0)
        .map(|job| job.id)
        .collect();
    asked.extend(asked.clone().into_iter().take(30));
    asked.push(JobId(i64::MAX));
    let of = ledger.watched_attempts_of(&asked).await.unwrap();
    let expected: Vec<WatchedAttempt> = (full.iter())
        .filter(|w| asked.contains(&w.job_id))
        .cloned()
        .collect();
    assert_eq!(expected.len(), 160, "240 jobs asked, a third of them queued");
    assert_eq!(of, expected);
    assert!(ledger.watched_attempts_of(&[]).await.unwrap().is_empty());
}

async fn a_wait_is_kept_per_topic_until_it_is_over(fx: &Fixture) {
    let ledger = &fx.ledger;
    assert!(ledger.waits().await.unwrap().is_empty());
    let sealed = Wait {
        topic: "t3_read".into(),
        part: "Vault secret secret/afk/t3 (field token) at https://vault:8200".into(),
        message: "T3 is not read: T3's operate token from Vault …: Vault is sealed (503) — it will pass"
            .into(),
        kind: "sealed".into(),
        needs_person: false,
        since: at(1),
        updated_at: at(1),
    };
    ledger.set_wait(&sealed).await.unwrap();
    let refused = Wait {
        topic: "github".into(),
        part: "GitHub at https://api.github.com".into(),
        message: "GitHub rejected the credentials (HTTP 401)".into(),
        kind: "refused".into(),
        needs_person: true,
        since: at(2),
        updated_at: at(2),
    };
    ledger.set_wait(&refused).await.unwrap();
    assert_eq!(
        ledger.waits().await.unwrap(),
        vec![refused.clone(), sealed.clone()]
    );
    // Another reason on the same topic replaces the first.
    let denied = Wait {
        kind: "permission_denied".into(),
        needs_person: true,
        since: at(3),
        updated_at: at(4),
        ..sealed.clone()
    };
    ledger.set_wait(&denied).await.unwrap();
    assert_eq!(ledger.waits().await.unwrap(), vec![refused.clone(), denied]);
    ledger.clear_wait("t3_read").await.unwrap();
    assert_eq!(ledger.waits().await.unwrap(), vec![refused]);
    ledger.clear_waits().await.unwrap();
    assert!(ledger.waits().await.unwrap().is_empty());
}

async fn inspecting_changes_nothing_and_sees_migrations_and_the_leader(fx: &Fixture) {
    let seen = Ledger::inspect(&fx.url).await.unwrap();
    assert!(seen.exists);
    assert!(seen.applied >= 7, "{seen:?}");
    assert!(
        seen.pending.is_empty() && seen.unknown.is_empty() && seen.failed.is_empty(),
        "{seen:?}"
    );
    assert_eq!(seen.leader, LeaderState::NoLeaderSeen, "nobody leads it");
    assert_eq!(
        seen.totals,
        Some(vec![]),
        "a fresh ledger's totals match a recount"
    );
    assert!(!seen.url_redacted.contains("password"));
    let leadership = fx.ledger.try_lead().await.unwrap().expect("the lead");
    let seen = Ledger::inspect(&fx.url).await.unwrap();
    match fx.ledger.backend() {
        Backend::Sqlite if fx.url.contains(":memory:") => {}
        _ => assert_eq!(seen.leader, LeaderState::Leading, "an afk run leads it: {seen:?}"),
    }
    leadership.release().await;
    assert_eq!(
        Ledger::inspect(&fx.url).await.unwrap().leader,
        LeaderState::NoLeaderSeen,
        "given up"
    );
    // A newer afk's migration, and one that did not finish.
    fx.raw_execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a newer afk', TRUE, 'x', 0)",
    )
    .await
    .unwrap();
    let seen = Ledger::inspect(&fx.url).await.unwrap();
    assert_eq!(seen.unknown, [9999]);
    assert_eq!(seen.totals, None, "a newer afk's totals are not judged");
    let refused = Ledger::repair_totals(&fx.url).await.expect_err("nor repaired");
    assert!(
        matches!(&refused, LedgerError::NotMigrated { what } if what.contains("[9999]") && what.contains("use that afk")),
        "{refused}"
    );
}

#[tokio::test]
async fn inspecting_a_sqlite_ledger_that_does_not_exist_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("afk.db");
    let seen = Ledger::inspect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert!(!seen.exists && seen.leader == LeaderState::NoLeaderSeen && seen.totals.is_none());
    assert!(
        seen.pending.len() >= 7 && seen.applied == 0,
        "every migration is pending: {seen:?}"
    );
    assert!(!path.exists(), "nothing was created");
}

fn follow_up(cause_key: &str, n: u32) -> afk_ledger::NewFollowUp {
    afk_ledger::NewFollowUp {
        cause_key: cause_key.into(),
        cause: format!("check failed ({cause_key})"),
        prompt: format!("Fix {cause_key}."),
        turn_command_id: CommandId::new(format!("follow-up-{n}-turn")).unwrap(),
        message_id: MessageId::new(format!("follow-up-{n}-message")).unwrap(),
    }
}

async fn a_follow_up_reopens_the_attempt_with_its_ids_and_is_answered_once(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = running(ledger, 1, "thread-f").await;
    // The first turn waited a second for a person; the follow-up's turn starts without that.
    let job = step(
        ledger,
        &job,
        Event::InputRequested {
            question: "May I?".into(),
        },
        None,
        at(2),
    )
    .await;
    let job = step(ledger, &job, Event::InputAnswered, None, at(3)).await;
    assert_eq!(job.input_waited, std::time::Duration::from_secs(1));
    let job = step(ledger, &job, Event::ThreadSucceeded, None, at(3)).await;
    let job = step(
        ledger,
        &job,
        Event::FollowPullRequest {
            pull_request: "#5".into(),
        },
        None,
        at(4),
    )
    .await;
    assert_eq!(job.state, JobState::InReview);
    let event = |used| Event::FollowUp {
        by: afk_core::FollowUpBy::PullRequest,
        cause: "check failed".into(),
        used,
        max_turns: 1,
        over_budget: None,
    };
    let t = transition(&job, event(0), at(5));
    let job = ledger
        .record_follow_up(job.id, &t, &follow_up("sha1:check_run:1", 1), at(5))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.attempts, 1, "the same attempt");
    let watched = ledger.watched_attempts().await.unwrap();
    assert_eq!(watched.len(), 1);
    assert_eq!(watched[0].thread_id.as_str(), "thread-f");
    assert_eq!(
        watched[0].updated_at,
        at(5),
        "the turn timeout counts from the follow-up"
    );
    assert_eq!(watched[0].follow_up_at, Some(at(5)));
    assert_eq!(
        watched[0].input_waited,
        std::time::Duration::ZERO,
        "a follow-up turn starts without the earlier turns' waits"
    );
    assert_eq!(
        ledger.latest_follow_up_at(job.id, AttemptNo(1)).await.unwrap(),
        Some(at(5))
    );
    let unsent = ledger.unsent_follow_ups().await.unwrap();
    assert_eq!(unsent.len(), 1);
    assert_eq!(unsent[0].thread_id.as_str(), "thread-f");
    assert_eq!(unsent[0].turn_command_id.as_str(), "follow-up-1-turn");
    assert_eq!(unsent[0].prompt, "Fix sha1:check_run:1.");
    ledger.mark_follow_up_sent(unsent[0].id).await.unwrap();
    assert!(ledger.unsent_follow_ups().await.unwrap().is_empty());
    assert_eq!(ledger.follow_ups_used(job.id).await.unwrap(), 1);

    // Back in review; the limit (1) is reached: the next cause is answered without a turn.
    let job = step(ledger, &job, Event::ThreadSucceeded, None, at(6)).await;
    let job = step(
        ledger,
        &job,
        Event::FollowPullRequest {
            pull_request: "#5".into(),
        },
        None,
        at(7),
    )
    .await;
    let t = transition(&job, event(1), at(8));
    let job = ledger
        .record_follow_up(job.id, &t, &follow_up("sha2:check_run:2", 2), at(8))
        .await
        .unwrap();
    assert_eq!(job.state, JobState::InReview);
    assert_eq!(ledger.follow_ups_used(job.id).await.unwrap(), 1);
    assert!(ledger.unsent_follow_ups().await.unwrap().is_empty());
    assert_eq!(
        ledger.follow_up_causes(job.id).await.unwrap(),
        vec!["sha1:check_run:1".to_owned(), "sha2:check_run:2".to_owned()]
    );
    // The same cause twice is refused and writes nothing.
    let t = transition(&job, event(1), at(9));
    let again = ledger
        .record_follow_up(job.id, &t, &follow_up("sha2:check_run:2", 3), at(9))
        .await
        .unwrap_err();
    assert!(again.is_unique_violation(), "{again}");
    assert_eq!(
        ledger.job(job.id).await.unwrap().unwrap().state,
        JobState::InReview
    );
    let merged = step(ledger, &job, Event::PullRequestMerged, None, at(10)).await;
    assert_eq!(merged.state, JobState::Merged);
}

/// A follow-up recorded but not sent (T3 was down) whose job then moved on (a person stopped
/// it) is never sent: its thread was given up.
async fn a_follow_up_whose_job_moved_on_is_never_sent(fx: &Fixture) {
    let ledger = &fx.ledger;
    let job = running(ledger, 1, "thread-g").await;
    let job = step(ledger, &job, Event::ThreadSucceeded, None, at(3)).await;
    let job = step(
        ledger,
        &job,
        Event::FollowPullRequest {
            pull_request: "#6".into(),
        },
        None,
        at(4),
    )
    .await;
    let event = Event::FollowUp {
        by: afk_core::FollowUpBy::PullRequest,
        cause: "check failed".into(),
        used: 0,
        max_turns: 3,
        over_budget: None,
    };
    let t = transition(&job, event, at(5));
    let job = ledger
        .record_follow_up(job.id, &t, &follow_up("sha1:check_run:9", 9), at(5))
        .await
        .unwrap();
    assert_eq!(ledger.unsent_follow_ups().await.unwrap().len(), 1);
    step(
        ledger,
        &job,
        Event::Cancel {
            reason: CancelReason::ByHand,
        },
        None,
        at(6),
    )
    .await;
    assert!(
        ledger.unsent_follow_ups().await.unwrap().is_empty(),
        "a stopped job's follow-up is not sent"
    );
}

on_both_backends!(a_comment_command_is_taken_once_and_answered_with_the_jobs_move);

/// A comment command (issue 16): taken once whatever its later edits, answered in one
/// transaction with the job's move and its instruction, then acknowledged; a job that moved
/// meanwhile leaves it taken, with nothing written.
async fn a_comment_command_is_taken_once_and_answered_with_the_jobs_move(fx: &Fixture) {
    use afk_ledger::{
        CommandAnswer, CommandState, CommentCommandKind, InstructionChange, NewCommentCommand, Reaction,
    };
    let ledger = &fx.ledger;
    let job = running(ledger, 900, "thread-cmd-1").await;
    let command = NewCommentCommand {
        repo: issue(900).repo,
        comment_id: 4_000_000_001,
        number: 900,
        job: job.id,
        author: "mona".into(),
        kind: CommentCommandKind::Instruct,
        argument: Some("fix the tests".into()),
    };
    assert!(!ledger
        .comment_command_known(&command.repo, command.comment_id)
        .await
        .unwrap());
    assert!(ledger.take_comment_command(&command, false, at(1)).await.unwrap());
    let edited = NewCommentCommand {
        kind: CommentCommandKind::Stop,
        argument: None,
        ..command.clone()
    };
    assert!(
        !ledger.take_comment_command(&edited, false, at(2)).await.unwrap(),
        "taken once"
    );
    assert!(ledger
        .comment_command_known(&command.repo, command.comment_id)
        .await
        .unwrap());
    let open = ledger.open_comment_commands(None, 10).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].state, &open[0].command), (CommandState::Taken, &command));

    // Answered against a stale view of the job: nothing is written.
    let cancel = transition(
        &job,
        Event::Cancel {
            reason: CancelReason::StoppedByCommand,
        },
        at(3),
    );
    let moved = step(
        ledger,
        &job,
        Event::ThreadFailed { error: "boom".into() },
        None,
        at(3),
    )
    .await;
    let answer = CommandAnswer {
        reaction: Reaction::Eyes,
        reply: None,
        instruction: InstructionChange::Set {
            text: "fix the tests".into(),
            author: "mona".into(),
        },
    };
    let stale = ledger
        .answer_comment_command(open[0].id, job.id, Some(&cancel), &answer, at(4))
        .await;
    assert!(matches!(stale, Err(LedgerError::Conflict { .. })), "{stale:?}");
    assert_eq!(
        ledger.open_comment_commands(None, 10).await.unwrap()[0].state,
        CommandState::Taken
    );
    assert_eq!(ledger.job_instruction(job.id).await.unwrap(), None, "rolled back");

    // Answered against the job as it is: the move, the instruction and the answer together.
    let cancel = transition(
        &moved,
        Event::Cancel {
            reason: CancelReason::StoppedByCommand,
        },
        at(5),
    );
    let updated = ledger
        .answer_comment_command(open[0].id, job.id, Some(&cancel), &answer, at(5))
        .await
        .unwrap()
        .expect("the job moved");
    assert_eq!(updated.cancel_reason, Some(CancelReason::StoppedByCommand));
    let instruction = ledger
        .job_instruction(job.id)
        .await
        .unwrap()
        .expect("an instruction");
    assert_eq!(
        (instruction.text.as_str(), instruction.author.as_str()),
        ("fix the tests", "mona")
    );
    let again = ledger
        .answer_comment_command(open[0].id, job.id, None, &answer, at(6))
        .await;
    assert!(again.is_err(), "answered once");
    assert!(ledger
        .open_comment_commands(Some(CommandState::Taken), 10)
        .await
        .unwrap()
        .is_empty());
    let open = ledger
        .open_comment_commands(Some(CommandState::Answered), 10)
        .await
        .unwrap();
    assert_eq!(
        (open[0].state, open[0].reaction),
        (CommandState::Answered, Some(Reaction::Eyes))
    );
    ledger.acknowledge_comment_command(open[0].id).await.unwrap();
    assert!(ledger.open_comment_commands(None, 10).await.unwrap().is_empty());
    let all = ledger.comment_commands_of(job.id).await.unwrap();
    assert_eq!(all[0].state, CommandState::Acknowledged);

    // Someone without write access: kept as ignored, never open.
    let ignored = NewCommentCommand {
        comment_id: 4_000_000_002,
        author: "mallory".into(),
        ..command
    };
    assert!(ledger.take_comment_command(&ignored, true, at(7)).await.unwrap());
    assert!(ledger.open_comment_commands(None, 10).await.unwrap().is_empty());
}

/// The budgets' figures: each turn that ends is recorded with its agent time (its waits for a
/// person left out), summed per job since its last requeue and per repository per day.
async fn agent_time_is_summed_per_job_budget_and_per_repository_day(fx: &Fixture) {
    let ledger = &fx.ledger;
    let repo = Repo::new("acme/widgets").unwrap();
    // Turn 1: running from 2 s to 100 s, of which 30 s waiting for a person: 68 s.
    let job = running(ledger, 70, "thread-70").await;
    let job = step(
        ledger,
        &job,
        Event::InputRequested { question: "?".into() },
        None,
        at(10),
    )
    .await;
    let job = step(ledger, &job, Event::InputAnswered, None, at(40)).await;
    let job = step(
        ledger,
        &job,
        Event::ThreadFailed { error: "boom".into() },
        None,
        at(100),
    )
    .await;
    assert_eq!(
        ledger.job_agent_time(job.id, job.attempts_base).await.unwrap(),
        Duration::from_secs(68)
    );
    // Turn 2 (a retry, dispatched at 201 s) fails at 251 s: 50 s more. A dispatch that never ran
    // is no agent time.
    let job = step(
        ledger,
        &job,
        Event::StartAttempt,
        Some(&ids("thread-70b")),
        at(200),
    )
    .await;
    let job = step(ledger, &job, Event::Dispatched, None, at(201)).await;
    let job = step(
        ledger,
        &job,
        Event::ThreadFailed { error: "boom".into() },
        None,
        at(251),
    )
    .await;
    assert_eq!(
        ledger.job_agent_time(job.id, job.attempts_base).await.unwrap(),
        Duration::from_secs(118)
    );
    let usage = ledger.repo_day_usage(&repo, t0()).await.unwrap();
    assert_eq!(
        (usage.new_jobs, usage.agent_time),
        (1, Duration::from_secs(118)),
        "one new job (a retry is not one), both turns"
    );
    assert_eq!(
        ledger.repo_day_usage(&repo, at(200)).await.unwrap(),
        afk_ledger::RepoDayUsage {
            new_jobs: 0,
            agent_time: Duration::from_secs(50)
        },
        "only what ended since the day began"
    );
    let other = Repo::new("acme/other").unwrap();
    assert_eq!(
        ledger.repo_day_usage(&other, t0()).await.unwrap(),
        afk_ledger::RepoDayUsage::default()
    );
    // Over its budget before its next attempt: it gives up, and a requeue gives a fresh budget
    // (the turns before it no longer count for the job).
    assert_eq!(job.state, JobState::RetryWait);
    let over = Event::OverBudget {
        overrun: afk_core::AgentTimeOverrun {
            used: Duration::from_secs(118),
            limit: Duration::from_secs(100),
        },
    };
    let job = step(ledger, &job, over, None, at(253)).await;
    assert_eq!(job.state, JobState::GivenUp);
    assert_eq!(
        job.last_error.as_deref(),
        Some("giving up before attempt 3: agent time budget: used 1m 58s of 1m 40s"),
        "the budget and its figures are the job's error"
    );
    let job = step(
        ledger,
        &job,
        Event::Requeue {
            by: RequeueBy::Person,
        },
        None,
        at(300),
    )
    .await;
    assert_eq!(
        ledger.job_agent_time(job.id, job.attempts_base).await.unwrap(),
        Duration::ZERO
    );
}

on_both_backends!(
    record_many_keeps_every_move_but_the_one_refused,
    record_many_records_nothing_when_a_move_breaks_the_schema
);

/// A batch (the dispatcher's starts and outcomes of one round): every move is recorded as
/// `record` would, each at its own time; one whose job moved meanwhile is refused alone.
async fn record_many_keeps_every_move_but_the_one_refused(fx: &Fixture) {
    use afk_ledger::Move;
    let ledger = &fx.ledger;
    let first = queued(ledger, 1, 2, t0()).await;
    let second = queued(ledger, 2, 2, t0()).await;
    let third = running(ledger, 3, "thread-3").await;
    // Another writer started the second job after it was read.
    let stale = second.clone();
    step(
        ledger,
        &second,
        Event::StartAttempt,
        Some(&ids("thread-2")),
        at(1),
    )
    .await;

    let (a, b) = (ids("thread-1"), ids("thread-2b"));
    let start_first = transition(&first, Event::StartAttempt, at(2));
    let start_stale = transition(&stale, Event::StartAttempt, at(2));
    let end_third = transition(&third, Event::ThreadSucceeded, at(3));
    let answers = ledger
        .record_many(&[
            Move {
                job: first.id,
                transition: &start_first,
                new_attempt: Some(&a),
                at: at(2),
            },
            Move {
                job: stale.id,
                transition: &start_stale,
                new_attempt: Some(&b),
                at: at(2),
            },
            Move {
                job: third.id,
                transition: &end_third,
                new_attempt: None,
                at: at(3),
            },
        ])
        .await
        .expect("the batch is recorded");
    assert_eq!(answers.len(), 3);
    let first_now = answers[0].as_ref().expect("the first job started");
    assert_eq!((first_now.state, first_now.attempts), (JobState::Dispatching, 1));
    assert!(
        matches!(
            &answers[1],
            Err(LedgerError::Conflict {
                actual: JobState::Dispatching,
                ..
            })
        ),
        "{:?}",
        answers[1]
    );
    assert_eq!(
        answers[2].as_ref().expect("the third ended").state,
        JobState::Succeeded
    );

    // As `record` writes them: the attempt with its ids, one event each, at its own time.
    let attempts = ledger.attempts(first.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].thread_id, "thread-1");
    assert_eq!(attempts[0].state, AttemptState::Dispatching);
    let events = ledger.events(third.id).await.unwrap();
    assert_eq!(
        events.last().map(|e| (e.to, e.at)),
        Some((JobState::Succeeded, at(3)))
    );
    // The refused move left nothing: the other writer's attempt alone.
    let attempts = ledger.attempts(second.id).await.unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].thread_id, "thread-2");
    assert_eq!(ledger.events(second.id).await.unwrap().len(), 1);
}

/// A move the schema rejects (a thread id used before) is not one job's conflict: the whole
/// batch is rolled back, and the ledger is as before it.
async fn record_many_records_nothing_when_a_move_breaks_the_schema(fx: &Fixture) {
    use afk_ledger::Move;
    let ledger = &fx.ledger;
    running(ledger, 1, "thread-used").await;
    let first = queued(ledger, 2, 2, t0()).await;
    let second = queued(ledger, 3, 2, t0()).await;
    let (fresh, reused) = (ids("thread-fresh"), ids("thread-used"));
    let start_first = transition(&first, Event::StartAttempt, at(2));
    let start_second = transition(&second, Event::StartAttempt, at(2));
    let error = ledger
        .record_many(&[
            Move {
                job: first.id,
                transition: &start_first,
                new_attempt: Some(&fresh),
                at: at(2),
            },
            Move {
                job: second.id,
                transition: &start_second,
                new_attempt: Some(&reused),
                at: at(2),
            },
        ])
        .await
        .expect_err("a reused thread id");
    assert!(error.is_unique_violation(), "{error:?}");
    for job in [&first, &second] {
        let now = ledger.job(job.id).await.unwrap().unwrap();
        assert_eq!((now.state, now.attempts), (JobState::Queued, 0), "{now:#?}");
        assert!(ledger.attempts(job.id).await.unwrap().is_empty());
        assert!(ledger.events(job.id).await.unwrap().is_empty());
    }
}

on_both_backends!(the_running_totals_match_a_fresh_count_after_every_write_path);

/// What `counts_by_state`, `size` and `attempt_totals` must say at `now`, counted afresh from the
/// tables through `raw` (bypassing the running totals): jobs per state, rows per table, agent time.
async fn counted_afresh(raw: &Raw, now: DateTime<Utc>) -> (Vec<(JobState, u64)>, [u64; 3], u64, i64) {
    let by_state = "SELECT state, COUNT(*) FROM jobs GROUP BY state";
    let totals = "SELECT (SELECT COUNT(*) FROM jobs), (SELECT COUNT(*) FROM attempts), \
                  (SELECT COUNT(*) FROM events), \
                  (SELECT CAST(COALESCE(SUM(COALESCE(ended_ms, $1) - created_ms), 0) AS BIGINT) \
                   FROM attempts)";
    let now_ms = now.timestamp_millis();
    type Counted = (Vec<(String, i64)>, (i64, i64, i64, i64));
    let (rows, (jobs, attempts, events, agent_ms)): Counted = match raw {
        Raw::Sqlite(pool) => (
            sqlx::query_as(by_state).fetch_all(pool).await.unwrap(),
            sqlx::query_as(totals).bind(now_ms).fetch_one(pool).await.unwrap(),
        ),
        Raw::Postgres(pool) => (
            sqlx::query_as(by_state).fetch_all(pool).await.unwrap(),
            sqlx::query_as(totals).bind(now_ms).fetch_one(pool).await.unwrap(),
        ),
    };
    let mut counts: Vec<(JobState, u64)> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
    for (state, n) in rows {
        let state: JobState = state.parse().expect("a known state");
        counts.iter_mut().find(|(s, _)| *s == state).unwrap().1 = n as u64;
    }
    let size = [jobs as u64, attempts as u64, events as u64];
    (counts, size, attempts as u64, agent_ms.max(0))
}

/// Asserts that what the ledger reports of its whole history (jobs per state, rows per table,
/// attempts and agent time until `now`) is what counting the tables afresh says.
async fn assert_totals_exact(ledger: &Ledger, raw: &Raw, now: DateTime<Utc>, after: &str) {
    let (counts, size, attempts, agent_ms) = counted_afresh(raw, now).await;
    assert_eq!(
        ledger.counts_by_state().await.unwrap(),
        counts,
        "jobs per state after {after}"
    );
    let kept = ledger.size().await.unwrap();
    assert_eq!(
        [kept.jobs, kept.attempts, kept.events],
        size,
        "rows per table after {after}"
    );
    let totals = ledger.attempt_totals(now).await.unwrap();
    assert_eq!(
        (totals.attempts, totals.agent_ms),
        (attempts, agent_ms),
        "attempts and agent time after {after}"
    );
}

/// `afk status` reads running totals the ledger's triggers keep (migration 0022) instead of
/// counting the history: after every way a job, an attempt or an event is written (the recorder
/// one move or a batch at a time, a refused batch, another handle, a cancel and a requeue, a
/// reopened attempt, a person's SQL inserting, moving, deleting and emptying tables), they are
/// what a fresh count says.
async fn the_running_totals_match_a_fresh_count_after_every_write_path(fx: &Fixture) {
    use afk_ledger::Move;
    let ledger = &fx.ledger;
    let other = Ledger::open(&fx.url).await.expect("a second handle");
    let exact = |now: DateTime<Utc>, after: &'static str| assert_totals_exact(ledger, &fx.raw, now, after);
    exact(t0(), "nothing").await;

    let first = queued(ledger, 1, 2, t0()).await;
    let second = queued(ledger, 2, 2, t0()).await;
    let third = queued(&other, 3, 1, t0()).await;
    let (again, created) = ledger.upsert_job(&new_job(1, 3), at(1)).await.unwrap();
    assert!(!created && again.id == first.id);
    exact(at(1), "jobs queued by two handles and one upserted again").await;

    let first = step(ledger, &first, Event::StartAttempt, Some(&ids("t-1")), at(2)).await;
    let first = step(ledger, &first, Event::Dispatched, None, at(3)).await;
    exact(at(40), "an attempt running: its agent time counts until now").await;
    let first = step(ledger, &first, Event::ThreadSucceeded, None, at(50)).await;
    assert_eq!(first.state, JobState::Succeeded);
    exact(at(90), "an attempt ended").await;

    let second = step(ledger, &second, Event::StartAttempt, Some(&ids("t-2")), at(4)).await;
    let second = step(ledger, &second, Event::Dispatched, None, at(5)).await;
    let second = step(
        ledger,
        &second,
        Event::ThreadFailed { error: "boom".into() },
        None,
        at(20),
    )
    .await;
    assert_eq!(second.state, JobState::RetryWait);
    exact(at(21), "an attempt failed, its job waiting out a back-off").await;

    // A batch: the second job's retry and the third's start, then one the schema refuses whole.
    let later = second.not_before.expect("a back-off") + chrono::Duration::seconds(1);
    let retry = transition(&second, Event::StartAttempt, later);
    let start = transition(&third, Event::StartAttempt, later);
    let (a, b) = (ids("t-2b"), ids("t-3"));
    let answers = other
        .record_many(&[
            Move {
                job: second.id,
                transition: &retry,
                new_attempt: Some(&a),
                at: later,
            },
            Move {
                job: third.id,
                transition: &start,
                new_attempt: Some(&b),
                at: later,
            },
        ])
        .await
        .unwrap();
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    exact(later, "a batch of two starts by another handle").await;
    let third = ledger.job(third.id).await.unwrap().unwrap();
    let fourth = queued(ledger, 4, 2, later).await;
    let start_fourth = transition(&fourth, Event::StartAttempt, later);
    let dispatched = transition(&third, Event::Dispatched, later);
    let refused = ledger
        .record_many(&[
            Move {
                job: third.id,
                transition: &dispatched,
                new_attempt: None,
                at: later,
            },
            // A thread id used before: the schema refuses it, and the whole batch with it.
            Move {
                job: fourth.id,
                transition: &start_fourth,
                new_attempt: Some(&ids("t-1")),
                at: later,
            },
        ])
        .await;
    assert!(refused.is_err(), "{refused:?}");
    exact(later, "a batch rolled back").await;
    let stale = step(ledger, &fourth, Event::StartAttempt, Some(&ids("t-4")), later).await;
    let conflict = ledger
        .record(fourth.id, &start_fourth, Some(&ids("t-4b")), later)
        .await;
    assert!(
        matches!(conflict, Err(LedgerError::Conflict { .. })),
        "{conflict:?}"
    );
    exact(later, "a move refused as stale").await;

    let cancelled = step(
        ledger,
        &stale,
        Event::Cancel {
            reason: CancelReason::ByHand,
        },
        None,
        later + chrono::Duration::seconds(5),
    )
    .await;
    assert_eq!(cancelled.state, JobState::Cancelled);
    exact(
        later + chrono::Duration::seconds(6),
        "a cancel that ends its attempt",
    )
    .await;
    let requeued = step(
        &other,
        &cancelled,
        Event::Requeue {
            by: RequeueBy::Person,
        },
        None,
        later + chrono::Duration::seconds(7),
    )
    .await;
    assert_eq!(requeued.state, JobState::Queued);
    exact(later + chrono::Duration::seconds(8), "a requeue").await;

    // A person's SQL: an attempt reopened and moved back in time, jobs and events by hand.
    let hand = |sql: String| async move { fx.raw_execute(&sql).await.expect(&sql) };
    hand("UPDATE attempts SET ended_ms = NULL WHERE thread_id = 't-1'".to_owned()).await;
    hand("UPDATE attempts SET created_ms = created_ms - 60000 WHERE thread_id = 't-2'".to_owned()).await;
    exact(
        later + chrono::Duration::seconds(9),
        "attempts reopened and moved by hand",
    )
    .await;
    hand(
        "INSERT INTO jobs (repo, number, title, body, labels, priority, source, state, attempts, \
         dispatch_tries, created_ms, updated_ms) \
         VALUES ('acme/widgets', 90, 't', 'b', '[]', 2, 'local', 'lost', 1, 0, 0, 0)"
            .to_owned(),
    )
    .await;
    hand(
        raw_attempt_insert(JobId(0), 1, "lost", "t-90")
            .replace("VALUES (0,", "VALUES ((SELECT id FROM jobs WHERE number = 90),"),
    )
    .await;
    hand(
        "INSERT INTO events (job_id, attempt, from_state, to_state, note, at_ms) \
         SELECT id, 1, 'running', 'lost', 'by hand', 0 FROM jobs WHERE number = 90"
            .to_owned(),
    )
    .await;
    hand("UPDATE jobs SET state = 'given_up' WHERE number IN (2, 90)".to_owned()).await;
    hand("UPDATE jobs SET state = state, title = 'same state' WHERE number = 1".to_owned()).await;
    exact(
        later + chrono::Duration::seconds(10),
        "rows inserted and moved by hand",
    )
    .await;
    for table in ["events", "attempts"] {
        hand(format!(
            "DELETE FROM {table} WHERE job_id = (SELECT id FROM jobs WHERE number = 90)"
        ))
        .await;
    }
    hand("DELETE FROM jobs WHERE number = 90".to_owned()).await;
    exact(later + chrono::Duration::seconds(11), "rows deleted by hand").await;

    if ledger.backend() == Backend::Postgres {
        // TRUNCATE fires no row trigger: statement triggers empty the totals.
        hand("TRUNCATE events".to_owned()).await;
        exact(later, "events truncated").await;
        hand("TRUNCATE attempts CASCADE".to_owned()).await;
        exact(later, "attempts truncated").await;
        hand("TRUNCATE jobs CASCADE".to_owned()).await;
    } else {
        hand("DELETE FROM events".to_owned()).await;
        hand("DELETE FROM attempts".to_owned()).await;
        for table in [
            "follow_ups",
            "agent_turns",
            "comment_commands",
            "job_instructions",
            "jobs",
        ] {
            hand(format!("DELETE FROM {table}")).await;
        }
    }
    exact(later, "every table emptied by hand").await;
    running(&other, 5, "t-5").await;
    exact(later, "a job started on the emptied ledger").await;
    other.close().await;
}

on_both_backends!(
    statements_writing_many_jobs_and_attempts_move_the_counts_and_keep_the_totals_exact,
    a_twenty_thousand_job_import_in_one_statement_keeps_the_totals_exact,
);

/// A `WITH` clause numbering `1..=count` as `n(i)`, for a statement that writes `count` rows.
fn numbered(count: u64) -> String {
    format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) ")
}

/// One statement writing `count` local jobs numbered from `first + 1`, in `state`.
fn raw_jobs_insert(count: u64, first: u64, state: &str) -> String {
    format!(
        "{}INSERT INTO jobs (repo, number, title, body, labels, priority, source, state, attempts, \
         dispatch_tries, created_ms, updated_ms) \
         SELECT 'acme/widgets', {first} + i, 'Issue', 'body', '[]', 2, 'local', {state}, 1, 0, i, i \
         FROM n",
        numbered(count)
    )
}

/// A person's SQL (or a bulk import) writing many jobs, attempts and events in single
/// statements: each statement moves the change counts that its rows concern (the watched one
/// only for what the live attempts' read returns), and the running totals stay what a fresh
/// count says, for inserts, state moves, reopened and closed attempts and deletes alike
/// (PostgreSQL moves them once per statement by its aggregate, migration 0023).
async fn statements_writing_many_jobs_and_attempts_move_the_counts_and_keep_the_totals_exact(fx: &Fixture) {
    let ledger = &fx.ledger;
    let hand = |sql: String| async move { fx.raw_execute(&sql).await.expect(&sql) };
    let counts = || async { ledger.changes().await.expect("the counts") };
    // At two instants: open attempts' agent time grows with `now`, so an error in their count
    // and one in their summed start cannot cancel out at both.
    let exact = |after: &'static str| async move {
        assert_totals_exact(ledger, &fx.raw, t0(), after).await;
        assert_totals_exact(ledger, &fx.raw, at(3600), after).await;
    };
    queued(ledger, 1, 2, t0()).await;

    let start = counts().await;
    let states = "CASE i % 3 WHEN 0 THEN 'queued' WHEN 1 THEN 'running' ELSE 'succeeded' END";
    assert_eq!(hand(raw_jobs_insert(300, 1000, states)).await, 300);
    let jobs_in = counts().await;
    assert!(jobs_in.ledger > start.ledger, "300 jobs inserted");
    // PostgreSQL moves the count once per statement (migration 0023), SQLite once per row.
    let per_statement = if ledger.backend() == Backend::Postgres {
        1
    } else {
        300
    };
    assert_eq!(
        jobs_in.ledger.0 - start.ledger.0,
        per_statement,
        "one statement's move"
    );
    assert!(
        jobs_in.watched > start.watched,
        "300 jobs inserted: watching reads them"
    );
    exact("300 jobs inserted by one statement").await;

    // Running jobs get an open attempt, succeeded ones an ended one of a length of their own.
    let attempts = hand(
        "INSERT INTO attempts (job_id, number, state, thread_id, project_id, create_command_id, \
         turn_command_id, message_id, title, branch, prompt, dispatch_tries, stop_pending, \
         created_ms, updated_ms, ended_ms) \
         SELECT id, 1, CASE state WHEN 'running' THEN 'running' ELSE 'succeeded' END, \
             'bulk-' || id, 'p', 'c-' || id, 'u-' || id, 'm-' || id, 'title', 'branch', 'prompt', 0, \
             FALSE, number * 10, number * 10, \
             CASE state WHEN 'running' THEN NULL ELSE number * 10 + 5000 + number END \
         FROM jobs WHERE number > 1000 AND state IN ('running', 'succeeded')"
            .to_owned(),
    )
    .await;
    assert_eq!(attempts, 200);
    let attempts_in = counts().await;
    assert!(attempts_in.ledger > jobs_in.ledger && attempts_in.watched > jobs_in.watched);
    hand(
        "INSERT INTO events (job_id, attempt, from_state, to_state, note, at_ms) \
         SELECT id, NULL, 'queued', state, 'by hand', 0 FROM jobs WHERE number > 1000"
            .to_owned(),
    )
    .await;
    exact("200 attempts and 300 events inserted by one statement each").await;

    // Many rows moved by one statement each: states, attempts ended, attempts moved in time.
    let moved =
        hand("UPDATE jobs SET state = 'given_up' WHERE state = 'running' AND number > 1000".to_owned()).await;
    assert_eq!(moved, 100);
    let given_up = counts().await;
    assert!(given_up.ledger > attempts_in.ledger && given_up.watched > attempts_in.watched);
    hand(
        "UPDATE attempts SET state = 'lost', ended_ms = created_ms + 7000 WHERE ended_ms IS NULL".to_owned(),
    )
    .await;
    let ended = counts().await;
    assert!(ended.ledger > given_up.ledger && ended.watched > given_up.watched);
    exact("100 jobs given up and their attempts ended by one statement each").await;
    hand(
        "UPDATE attempts SET created_ms = created_ms - 1000, ended_ms = NULL \
         WHERE thread_id LIKE 'bulk-%' AND state = 'succeeded'"
            .to_owned(),
    )
    .await;
    exact("100 attempts reopened and moved back by one statement").await;

    // Many rows written by one statement, none in a column the live attempts' read returns.
    let unwatched = counts().await;
    hand("UPDATE jobs SET title = 'Retitled', reported = 'x' WHERE number > 1000".to_owned()).await;
    hand("UPDATE attempts SET stop_pending = TRUE WHERE thread_id LIKE 'bulk-%'".to_owned()).await;
    let marked = counts().await;
    assert!(marked.ledger > unwatched.ledger, "jobs and attempts written");
    assert_eq!(marked.watched, unwatched.watched, "no column watching reads");
    // A watched column set to the value it has: PostgreSQL compares values (migration 0023),
    // SQLite's `UPDATE OF` triggers fire on the column being set.
    hand("UPDATE jobs SET state = state WHERE number > 1000".to_owned()).await;
    let rewritten = counts().await;
    assert!(rewritten.ledger > marked.ledger);
    if ledger.backend() == Backend::Postgres {
        assert_eq!(rewritten.watched, marked.watched, "no watched value changed");
    } else {
        assert!(rewritten.watched > marked.watched, "SQLite counts the column set");
    }
    let marked = rewritten;
    // A statement that matches no row moves nothing.
    hand("UPDATE jobs SET state = 'queued' WHERE number > 5000".to_owned()).await;
    hand("DELETE FROM attempts WHERE thread_id = 'none'".to_owned()).await;
    assert_eq!(counts().await, marked, "statements that wrote no row");
    exact("300 jobs and 200 attempts marked by one statement each").await;

    for table in ["events", "attempts"] {
        hand(format!(
            "DELETE FROM {table} WHERE job_id IN (SELECT id FROM jobs WHERE number > 1000)"
        ))
        .await;
    }
    let deleted = hand("DELETE FROM jobs WHERE number > 1000".to_owned()).await;
    assert_eq!(deleted, 300);
    let gone = counts().await;
    assert!(gone.ledger > marked.ledger && gone.watched > marked.watched);
    exact("every row of the bulk deleted by one statement per table").await;
}

/// A first import of a large backlog written in one statement (here 20,000 jobs, then their
/// attempts and events) leaves the running totals exact. It took 4.4 s with migration 0023 and
/// 248.9 s before it on PostgreSQL (2 shared cores, load 9 to 13): its row triggers updated the
/// same counter and totals rows once per row inside the statement's transaction, each update
/// walking every earlier version of the row. No time bound here (it would flake under load);
/// [`statements_writing_many_jobs_and_attempts_move_the_counts_and_keep_the_totals_exact`]
/// checks the once-per-statement move itself.
async fn a_twenty_thousand_job_import_in_one_statement_keeps_the_totals_exact(fx: &Fixture) {
    fx.raw_execute(&raw_jobs_insert(20_000, 0, "'succeeded'"))
        .await
        .expect("20,000 jobs");
    fx.raw_execute(
        "INSERT INTO attempts (job_id, number, state, thread_id, project_id, create_command_id, \
         turn_command_id, message_id, title, branch, prompt, dispatch_tries, stop_pending, \
         created_ms, updated_ms, ended_ms) \
         SELECT id, 1, 'succeeded', 'bulk-' || id, 'p', 'c-' || id, 'u-' || id, 'm-' || id, \
             'title', 'branch', 'prompt', 0, FALSE, created_ms, created_ms, created_ms + 60000 \
         FROM jobs",
    )
    .await
    .expect("their attempts");
    fx.raw_execute(
        "INSERT INTO events (job_id, attempt, from_state, to_state, note, at_ms) \
         SELECT id, 1, 'running', 'succeeded', 'imported', 0 FROM jobs",
    )
    .await
    .expect("their events");
    assert_totals_exact(&fx.ledger, &fx.raw, t0(), "a 20,000-job import").await;
    let size = fx.ledger.size().await.unwrap();
    assert_eq!((size.jobs, size.attempts, size.events), (20_000, 20_000, 20_000));
}

/// A ledger an older afk filled (before migration 0022) reports its whole history right at once
/// after this afk opens (and migrates) it, and keeps it right through the next write.
async fn an_older_ledger_gets_its_running_totals_at_once(url: &str, raw: Raw, backend: &str) {
    migrate_before(22, backend, &raw).await;
    let mut statements = Vec::new();
    for (number, state) in [
        (1, "succeeded"),
        (2, "succeeded"),
        (3, "running"),
        (4, "queued"),
        (5, "given_up"),
    ] {
        statements.push(format!(
            "INSERT INTO jobs (repo, number, title, body, labels, priority, source, state, attempts, \
             dispatch_tries, created_ms, updated_ms) \
             VALUES ('acme/widgets', {number}, 't', 'b', '[]', 2, 'local', '{state}', 1, 0, 0, 0)"
        ));
        statements.push(format!(
            "INSERT INTO events (job_id, attempt, from_state, to_state, note, at_ms) \
             SELECT id, NULL, 'queued', '{state}', 'by an older afk', 0 FROM jobs WHERE number = {number}"
        ));
    }
    // Attempts that ended (1, 2, 5) and one still running (3), with their lengths.
    for (number, state, created, ended) in [
        (1, "succeeded", 1_000, "61000"),
        (2, "succeeded", 2_000, "5000"),
        (3, "running", t0().timestamp_millis() - 30_000, "NULL"),
        (5, "failed", 7_000, "9000"),
    ] {
        statements.push(format!(
            "INSERT INTO attempts (job_id, number, state, thread_id, project_id, create_command_id, \
             turn_command_id, message_id, title, branch, prompt, dispatch_tries, stop_pending, \
             created_ms, updated_ms, ended_ms) \
             SELECT id, 1, '{state}', 't-{number}', 'p', 'c-{number}', 'u-{number}', 'm-{number}', \
             'title', 'branch', 'prompt', 0, FALSE, {created}, {created}, {ended} \
             FROM jobs WHERE number = {number}"
        ));
    }
    for sql in statements {
        match &raw {
            Raw::Sqlite(pool) => sqlx::query(&sql).execute(pool).await.map(drop),
            Raw::Postgres(pool) => sqlx::query(&sql).execute(pool).await.map(drop),
        }
        .expect("an older afk's row");
    }
    let ledger = Ledger::open(url).await.expect("this afk opens and migrates it");
    assert_totals_exact(&ledger, &raw, t0(), "the migration").await;
    let size = ledger.size().await.unwrap();
    assert_eq!(
        (size.jobs, size.attempts, size.events),
        (5, 4, 5),
        "what the older afk wrote"
    );
    let totals = ledger.attempt_totals(t0()).await.unwrap();
    assert_eq!(
        totals.agent_ms,
        60_000 + 3_000 + 30_000 + 2_000,
        "ended ones and the running one until now"
    );
    let job = ledger
        .job_by_issue(&issue(4))
        .await
        .unwrap()
        .expect("the queued job");
    step(&ledger, &job, Event::StartAttempt, Some(&ids("t-4")), at(1)).await;
    assert_totals_exact(&ledger, &raw, at(2), "a write after the migration").await;
    ledger.close().await;
}

mod an_older_ledger_gets_its_running_totals_at_once {
    use super::*;

    #[tokio::test]
    async fn sqlite() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let raw = sqlx::SqlitePool::connect_with(options).await.expect("raw SQLite");
        an_older_ledger_gets_its_running_totals_at_once(&url, Raw::Sqlite(raw), "sqlite").await;
    }

    #[tokio::test]
    async fn postgres() {
        let Some((url, schema)) = PgSchema::create().await else {
            return;
        };
        let raw = sqlx::PgPool::connect(&url).await.expect("raw PostgreSQL");
        let outcome = tokio::spawn(async move {
            an_older_ledger_gets_its_running_totals_at_once(&url, Raw::Postgres(raw), "postgres").await
        })
        .await;
        schema.drop_now().await;
        if let Err(error) = outcome {
            std::panic::resume_unwind(error.into_panic());
        }
    }
}

/// A person's session whose `search_path` is `public` (the default) writing a ledger kept in
/// another schema, naming its tables: the running totals of that ledger follow, because the
/// triggers of migration 0022 resolve their tables in the ledger's own schema, not the writer's.
#[tokio::test]
async fn a_write_from_a_session_on_another_schema_keeps_the_running_totals() {
    let Some(fx) = Fixture::postgres().await else {
        return;
    };
    let schema = fx.schema.as_ref().expect("a PostgreSQL schema").name.clone();
    let base = fx.schema.as_ref().unwrap().base.clone();
    run(fx, move |fx| async move {
        let ledger = &fx.ledger;
        queued(ledger, 1, 2, t0()).await;
        let mut person = sqlx::PgConnection::connect(&base)
            .await
            .expect("a session on the default search_path");
        let search_path: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&mut person)
            .await
            .unwrap();
        assert_ne!(search_path, schema, "the person's session is elsewhere");
        for sql in [
            format!(
                "INSERT INTO {schema}.jobs (repo, number, title, body, labels, priority, source, \
                 state, attempts, dispatch_tries, created_ms, updated_ms) \
                 VALUES ('acme/widgets', 90, 't', 'b', '[]', 2, 'local', 'running', 1, 0, 0, 0)"
            ),
            raw_attempt_insert(JobId(0), 1, "running", "t-90")
                .replace("INSERT INTO attempts", &format!("INSERT INTO {schema}.attempts"))
                .replace(
                    "VALUES (0,",
                    &format!("VALUES ((SELECT id FROM {schema}.jobs WHERE number = 90),"),
                ),
            format!(
                "INSERT INTO {schema}.events (job_id, attempt, from_state, to_state, note, at_ms) \
                 SELECT id, 1, 'queued', 'running', 'by hand', 0 FROM {schema}.jobs \
                 WHERE number = 90"
            ),
            format!("UPDATE {schema}.jobs SET state = 'given_up' WHERE number = 1"),
        ] {
            sqlx::query(&sql)
                .execute(&mut person)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let _ = person.close().await;
        assert_totals_exact(ledger, &fx.raw, at(5), "writes from a session on public").await;
    })
    .await;
}

on_both_backends!(who_leads_is_seen_without_taking_the_lead);

/// A SQLite lock file that cannot be inspected (here a symbolic link to itself) does not fail the
/// look at who leads: it cannot tell, and the epoch is still read.
#[cfg(unix)]
#[tokio::test]
async fn a_lock_file_that_cannot_be_inspected_leaves_the_leader_untold() {
    let fx = Fixture::sqlite().await;
    run(fx, |fx| async move {
        let Some(db) = fx.url.strip_prefix("sqlite://") else {
            panic!("a SQLite file URL: {}", fx.url);
        };
        let lock = format!("{db}.lock");
        std::os::unix::fs::symlink(&lock, &lock).expect("a symbolic link loop");
        let seen = fx.ledger.leader().await.expect("who leads, even so");
        assert_eq!((seen.held, seen.epoch), (LeaderState::CannotTell, 0));
    })
    .await;
}

/// `afk status` says whether an `afk run` leads the ledger, from another process, without taking
/// the lock: a leader's standby and a newcomer are never turned away by it.
async fn who_leads_is_seen_without_taking_the_lead(fx: &Fixture) {
    let status = Ledger::open(&fx.url)
        .await
        .expect("a second handle: `afk status`");
    let never = status.leader().await.unwrap();
    assert_eq!(
        (never.held, never.epoch, never.taken_at),
        (LeaderState::NoLeaderSeen, 0, None),
        "never led"
    );

    let lead = fx.ledger.try_lead().await.unwrap().expect("an afk run leads");
    let seen = status.leader().await.unwrap();
    assert_eq!((seen.held, seen.epoch), (LeaderState::Leading, 1), "{seen:?}");
    assert!(seen.taken_at.is_some());
    assert_eq!(
        fx.ledger.leader().await.unwrap().held,
        LeaderState::Leading,
        "the leader's own process sees itself lead"
    );
    lead.release().await;
    let gone = status.leader().await.unwrap();
    assert_eq!(
        (gone.held, gone.epoch),
        (LeaderState::NoLeaderSeen, 1),
        "the leader stopped"
    );
    assert_eq!(gone.taken_at, seen.taken_at, "when the last lead was taken");

    // Looking, however often, leaves the lock free: the next afk run takes it at once.
    for _ in 0..3 {
        status.leader().await.unwrap();
        let next = fx
            .ledger
            .try_lead()
            .await
            .unwrap()
            .expect("free for the next afk run");
        next.release().await;
    }
    status.close().await;
}

/// A burst of new issues (intake's): queued in one transaction, each once; an issue the ledger
/// knows is left as it is, one it cannot hold is refused alone.
async fn queue_jobs_queues_the_new_issues_once_and_leaves_known_ones_as_they_are(fx: &Fixture) {
    let ledger = &fx.ledger;
    let known = queued(ledger, 1, 2, t0()).await;
    let known = step(ledger, &known, Event::StartAttempt, Some(&ids("thread-1")), at(1)).await;
    let mut edited = new_job(1, 2);
    edited.title = "Edited while it runs".into();
    let mut bad = new_job(3, 2);
    bad.body = "a NUL \0 byte".into();
    let answers = ledger
        .queue_jobs(&[edited, new_job(2, 2), bad, new_job(4, 1), new_job(2, 2)], at(2))
        .await
        .expect("the batch is written");
    assert_eq!(answers.len(), 5);
    assert!(matches!(answers[0], Ok(None)), "known: {:?}", answers[0]);
    let second = answers[1].as_ref().expect("queued").as_ref().expect("new");
    assert_eq!((second.issue.number, second.state), (2, JobState::Queued));
    assert!(
        matches!(answers[2], Err(LedgerError::OutOfRange { .. })),
        "{:?}",
        answers[2]
    );
    let fourth = answers[3].as_ref().expect("queued").as_ref().expect("new");
    assert_eq!((fourth.issue.number, fourth.state), (4, JobState::Queued));
    assert!(
        matches!(answers[4], Ok(None)),
        "the same issue twice is queued once"
    );

    let jobs = ledger.jobs().await.unwrap();
    let numbers: Vec<u64> = jobs.iter().map(|j| j.issue.number).collect();
    assert_eq!(numbers, vec![1, 2, 4]);
    assert_eq!(jobs[0], known, "the known job is untouched");
}

/// A batch whose transaction fails writes nothing: none of the new issues is queued, not even
/// those written before the failing one.
async fn queue_jobs_queues_nothing_when_the_transaction_fails(fx: &Fixture) {
    let ledger = &fx.ledger;
    // The database refuses the batch's SECOND row, after the first was inserted in the same
    // transaction: only a rollback of the whole batch leaves the first out.
    if ledger.backend() == Backend::Postgres {
        fx.raw_execute(
            "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             RAISE EXCEPTION 'refused by the test'; END $$",
        )
        .await
        .unwrap();
        fx.raw_execute(
            "CREATE TRIGGER test_refuse BEFORE INSERT ON jobs FOR EACH ROW \
             WHEN (NEW.number = 2) EXECUTE FUNCTION test_refuse()",
        )
        .await
        .unwrap();
    } else {
        fx.raw_execute(
            "CREATE TRIGGER test_refuse BEFORE INSERT ON jobs WHEN NEW.number = 2 \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
        )
        .await
        .unwrap();
    }
    let refused = ledger
        .queue_jobs(&[new_job(1, 2), new_job(2, 2), new_job(3, 2)], t0())
        .await
        .expect_err("the database refuses the second job");
    assert!(!refused.is_deposed(), "{refused}");
    assert!(
        ledger.jobs().await.unwrap().is_empty(),
        "nothing of the batch, not even the first"
    );
}

on_both_backends!(
    queue_jobs_queues_the_new_issues_once_and_leaves_known_ones_as_they_are,
    queue_jobs_queues_nothing_when_the_transaction_fails
);

on_both_backends!(
    a_burst_of_thousands_answers_each_issue_in_order_and_keeps_the_totals_exact,
    running_totals_a_write_bypassed_are_found_by_a_recount_and_repaired,
    inspecting_never_takes_the_leader_lock,
);

/// The change count of 0021 (`ledger_counter`), read through `raw`.
async fn ledger_counter(raw: &Raw) -> i64 {
    let sql = "SELECT ledger_counter FROM watched_changes WHERE id = 1";
    match raw {
        Raw::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Raw::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

/// A first sync of thousands of labelled issues (`queue_jobs`), more than one SQLite statement
/// holds: each issue answered in its place (new, known, the same issue again in the batch, even
/// in another statement's share, a value the ledger cannot hold), the new jobs numbered in the
/// batch's order, nothing queued twice, and the running totals what a recount says. On
/// PostgreSQL the batch is one statement, not one per issue (0023 moves the count once per
/// statement): 2,305 issues move it by 1; SQLite writes it 1,000 issues a statement.
async fn a_burst_of_thousands_answers_each_issue_in_order_and_keeps_the_totals_exact(fx: &Fixture) {
    let ledger = &fx.ledger;
    let _lead = ledger
        .try_lead()
        .await
        .unwrap()
        .expect("the lead, as afk run holds it");
    // Known before the burst: one queued, one running.
    let known_queued = queued(ledger, 10, 2, t0()).await;
    let known_running = running(ledger, 1500, "thread-1500").await;
    let mut burst: Vec<NewJob> = (1..=2300).map(|n| new_job(n, 3)).collect();
    // The same issue again, in the first statement's share and in a later one's.
    burst.insert(700, new_job(5, 1));
    burst.insert(1700, new_job(5, 1));
    burst.insert(2200, new_job(1999, 1));
    let mut bad = new_job(9000, 2);
    bad.title = "a NUL \0 byte".into();
    burst.insert(1000, bad);
    burst.push(new_job(2300, 1));
    assert_eq!(burst.len(), 2305);
    let counter_before = ledger_counter(&fx.raw).await;
    let answers = ledger
        .queue_jobs(&burst, at(5))
        .await
        .expect("the burst is queued");
    let counter_moves = ledger_counter(&fx.raw).await - counter_before;

    assert_eq!(answers.len(), burst.len());
    let mut seen = std::collections::HashSet::new();
    let mut last_id = 0;
    for (asked, answer) in burst.iter().zip(&answers) {
        let number = asked.issue.number;
        match answer {
            Err(LedgerError::OutOfRange { .. }) => assert_eq!(number, 9000),
            Err(other) => panic!("issue {number}: {other}"),
            Ok(None) => assert!(
                [10, 1500].contains(&number) || !seen.insert(number),
                "issue {number} answered known the first time it came"
            ),
            Ok(Some(job)) => {
                assert!(seen.insert(number), "issue {number} queued twice");
                assert!(![10, 1500, 9000].contains(&number));
                assert_eq!(
                    (
                        job.issue.number,
                        job.state,
                        job.title.as_str(),
                        job.priority.level()
                    ),
                    (
                        number,
                        JobState::Queued,
                        asked.title.as_str(),
                        asked.priority.level()
                    )
                );
                assert!(job.id.0 > last_id, "issue {number}: ids in the batch's order");
                last_id = job.id.0;
            }
        }
    }
    let new = answers.iter().filter(|a| matches!(a, Ok(Some(_)))).count();
    assert_eq!(new, 2300 - 2, "every issue but the two known ones, once");
    let jobs = ledger.jobs().await.unwrap();
    assert_eq!(jobs.len(), 2300);
    assert!(
        jobs.contains(&known_queued) && jobs.contains(&known_running),
        "known jobs untouched"
    );
    assert_totals_exact(ledger, &fx.raw, at(6), "a burst of 2,305 issues").await;
    if ledger.backend() == Backend::Postgres {
        assert_eq!(counter_moves, 1, "one statement for the whole batch");
    } else {
        assert_eq!(counter_moves, 2298, "SQLite counts a row at a time");
    }

    // The same burst again: every issue known, nothing written, the totals unmoved.
    let again = ledger.queue_jobs(&burst, at(7)).await.unwrap();
    assert!(
        again
            .iter()
            .zip(&burst)
            .all(|(a, b)| matches!(a, Ok(None)) || (b.issue.number == 9000 && a.is_err())),
        "all known"
    );
    assert_totals_exact(ledger, &fx.raw, at(8), "the same burst again").await;

    // Another process took the lead meanwhile (its epoch is the ledger's now): nothing is queued.
    fx.raw_execute("UPDATE leadership SET epoch = epoch + 1 WHERE id = 1")
        .await
        .unwrap();
    let deposed = ledger.queue_jobs(&[new_job(5000, 2)], at(9)).await;
    assert!(matches!(&deposed, Err(e) if e.is_deposed()), "{deposed:?}");
    assert_eq!(
        ledger.jobs().await.unwrap().len(),
        2300,
        "nothing queued by a deposed leader"
    );
}

/// A write that runs no trigger (SQLite's `REPLACE`, PostgreSQL with the table's triggers
/// disabled, a restore of an older totals row) leaves the running totals wrong, and `afk status`
/// shows them so: `Ledger::inspect` (`afk doctor`) names each total that differs from a recount,
/// `Ledger::repair_totals` (`afk doctor --repair`) sets them to the recount, and the writes after
/// it move them right again.
async fn running_totals_a_write_bypassed_are_found_by_a_recount_and_repaired(fx: &Fixture) {
    use afk_ledger::TotalDrift;
    let ledger = &fx.ledger;
    queued(ledger, 1, 2, t0()).await;
    queued(ledger, 2, 2, t0()).await;
    running(ledger, 3, "thread-3").await;
    assert_eq!(Ledger::inspect(&fx.url).await.unwrap().totals, Some(vec![]));
    assert!(
        Ledger::repair_totals(&fx.url).await.unwrap().is_empty(),
        "nothing to repair: nothing written"
    );

    let events_n = ledger.size().await.unwrap().events as i64;
    // Job 1 fails by a write that runs no trigger; the totals row is restored from an older copy.
    match ledger.backend() {
        Backend::Sqlite => {
            fx.raw_execute(
                "REPLACE INTO jobs (id, repo, number, title, body, labels, priority, source, state, \
                 attempts, dispatch_tries, created_ms, updated_ms) \
                 SELECT id, repo, number, title, body, labels, priority, source, 'failed', attempts, \
                 dispatch_tries, created_ms, updated_ms FROM jobs WHERE number = 1",
            )
            .await
            .unwrap();
        }
        Backend::Postgres => {
            for sql in [
                "ALTER TABLE jobs DISABLE TRIGGER USER",
                "UPDATE jobs SET state = 'failed' WHERE number = 1",
                "ALTER TABLE jobs ENABLE TRIGGER USER",
            ] {
                fx.raw_execute(sql).await.unwrap();
            }
        }
    }
    fx.raw_execute("UPDATE ledger_totals SET events = events + 5 WHERE id = 1")
        .await
        .unwrap();
    let shown = ledger.counts_by_state().await.unwrap();
    assert!(
        shown.contains(&(JobState::Queued, 2)),
        "the status is wrong: {shown:?}"
    );

    let drift = |total: &str, kept: i64, counted: i64| TotalDrift {
        total: total.to_owned(),
        kept,
        counted,
    };
    let events = drift("events", events_n + 5, events_n);
    let found = Ledger::inspect(&fx.url).await.unwrap().totals.expect("looked at");
    assert!(found.contains(&drift("jobs queued", 2, 1)), "{found:?}");
    assert!(found.contains(&events), "{found:?}");
    assert!(
        found.iter().all(|d| d.total.starts_with("jobs ") || *d == events),
        "only those: {found:?}"
    );
    // PostgreSQL's bypassed move counted the job nowhere new; SQLite's REPLACE counted its
    // insert: either way the recount has it where it is.
    assert!(
        found
            .iter()
            .filter(|d| d.total == "jobs failed")
            .all(|d| d.counted == 1),
        "{found:?}"
    );
    assert_eq!(
        found[0].to_string(),
        format!(
            "{} {} kept, {} counted",
            found[0].total, found[0].kept, found[0].counted
        )
    );

    let repaired = Ledger::repair_totals(&fx.url).await.unwrap();
    assert_eq!(repaired, found, "what was repaired is what was found");
    assert_eq!(Ledger::inspect(&fx.url).await.unwrap().totals, Some(vec![]));
    assert_totals_exact(ledger, &fx.raw, at(10), "the repair").await;
    let job = ledger.job_by_issue(&issue(2)).await.unwrap().unwrap();
    step(ledger, &job, Event::StartAttempt, Some(&ids("thread-2")), at(11)).await;
    queued(ledger, 4, 2, at(11)).await;
    assert_totals_exact(ledger, &fx.raw, at(12), "writes after the repair").await;

    // A totals row gone altogether (a restore without it): each of its totals is named.
    fx.raw_execute("DELETE FROM ledger_totals").await.unwrap();
    let found = Ledger::inspect(&fx.url).await.unwrap().totals.expect("looked at");
    assert_eq!(found.len(), 5, "{found:?}");
    assert_eq!(Ledger::repair_totals(&fx.url).await.unwrap(), found);
    assert_totals_exact(ledger, &fx.raw, at(13), "the totals row made again").await;
}

/// `afk doctor` sees who leads without ever taking the leader lock, so an `afk run` starting at
/// that very instant is never turned away by it. Made visible here by a lock that cannot be tried
/// without failing: on SQLite the lock file is a directory (opening it to lock it fails), on
/// PostgreSQL this schema's own `pg_try_advisory_lock(integer)`, which the lock statement calls
/// before the catalog's `(bigint)`, raises.
async fn inspecting_never_takes_the_leader_lock(fx: &Fixture) {
    match fx.ledger.backend() {
        Backend::Sqlite => {
            let db = fx.url.strip_prefix("sqlite://").expect("a SQLite file");
            std::fs::create_dir(format!("{db}.lock")).expect("a lock file no one can lock");
        }
        Backend::Postgres => {
            fx.raw_execute(
                "CREATE FUNCTION pg_try_advisory_lock(key integer) RETURNS boolean LANGUAGE plpgsql \
                 AS $$ BEGIN RAISE EXCEPTION 'the leader lock was tried'; END $$",
            )
            .await
            .unwrap();
            let tried = fx
                .raw_execute(
                    "SELECT pg_try_advisory_lock(hashtext('afk-ledger-leader:' || current_schema()))",
                )
                .await;
            assert!(
                tried.is_err(),
                "the lock statement reaches this schema's function"
            );
        }
    }
    let seen = Ledger::inspect(&fx.url).await.expect("a look that tries no lock");
    assert_eq!(seen.leader, LeaderState::NoLeaderSeen, "{seen:?}");
    assert_eq!(seen.totals, Some(vec![]), "{seen:?}");
}

on_both_backends!(
    repairing_the_totals_beside_a_writer_loses_nothing_and_leaves_them_exact,
    a_burst_beside_a_hand_queued_issue_of_it_queues_each_issue_once,
    inspecting_beside_a_leader_reports_it_and_leaves_its_lock_alone,
    emptying_the_watched_tables_wholesale_moves_the_watched_count,
);

/// `afk doctor --repair` while an `afk run` writes (another handle, leading: new issues queued
/// in bursts, attempts started, dispatched and ended, in the very rounds the repair runs): each
/// repair finds the totals made wrong before its round and sets them right, no write waits
/// forever or is refused, no job is lost or queued twice, and afterwards every total is what a
/// recount says. Each round starts both at once (a barrier); many rounds interleave them
/// differently, but none is made to overlap: a smoke test (it failed without the writers' lock
/// when tried). `a_repair_waits_for_a_write_in_flight_and_counts_it` is the deterministic one.
async fn repairing_the_totals_beside_a_writer_loses_nothing_and_leaves_them_exact(fx: &Fixture) {
    const ROUNDS: u64 = 12;
    const BURST: u64 = 30;
    let writer = Ledger::open(&fx.url).await.expect("afk run's handle");
    let _lead = writer.try_lead().await.unwrap().expect("afk run leads");
    for round in 0..ROUNDS {
        // Wrong totals, as a write that ran no trigger leaves them: the repair has work to do.
        fx.raw_execute("UPDATE ledger_totals SET events = events + 3 WHERE id = 1")
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let writes = tokio::spawn({
            let (writer, barrier) = (writer.clone(), Arc::clone(&barrier));
            async move {
                let first = 1 + round * BURST;
                let burst: Vec<NewJob> = (first..first + BURST).map(|n| new_job(n, 2)).collect();
                let now = at(10 * round as i64);
                barrier.wait().await;
                let answers = writer.queue_jobs(&burst, now).await.expect("the burst is queued");
                let queued: Vec<Job> = answers
                    .into_iter()
                    .map(|a| a.expect("a value the ledger holds").expect("a new issue"))
                    .collect();
                // Started, dispatched and (for half of them) ended: attempts, events, agent time.
                for (i, job) in queued.iter().take(4).enumerate() {
                    let thread = format!("thread-{}", job.issue.number);
                    let job = step(&writer, job, Event::StartAttempt, Some(&ids(&thread)), now).await;
                    let job = step(&writer, &job, Event::Dispatched, None, now).await;
                    if i % 2 == 0 {
                        step(
                            &writer,
                            &job,
                            Event::ThreadSucceeded,
                            None,
                            at(10 * round as i64 + 5),
                        )
                        .await;
                    }
                }
                queued.len()
            }
        });
        let repair = tokio::spawn({
            let (url, barrier) = (fx.url.clone(), Arc::clone(&barrier));
            async move {
                barrier.wait().await;
                Ledger::repair_totals(&url).await
            }
        });
        // A bound on a deadlock, not a synchronisation: each round takes milliseconds.
        let (written, repaired) =
            tokio::time::timeout(Duration::from_secs(60), async { (writes.await, repair.await) })
                .await
                .expect("neither waits for the other forever");
        assert_eq!(written.expect("the writes"), BURST as usize, "round {round}");
        let repaired = repaired.unwrap().expect("the repair beside a writer");
        assert!(
            repaired
                .iter()
                .any(|d| d.total == "events" && d.kept == d.counted + 3),
            "round {round}: the wrong total found and nothing else: {repaired:?}"
        );
        assert_eq!(repaired.len(), 1, "round {round}: {repaired:?}");
        assert_totals_exact(
            &writer,
            &fx.raw,
            at(10 * round as i64 + 9),
            "a repair beside writes",
        )
        .await;
    }
    let jobs = writer.jobs().await.unwrap();
    let mut numbers: Vec<u64> = jobs.iter().map(|j| j.issue.number).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=ROUNDS * BURST).collect::<Vec<_>>(),
        "every issue once"
    );
    assert_eq!(
        Ledger::inspect(&fx.url).await.unwrap().totals,
        Some(vec![]),
        "nothing left to repair"
    );
    writer.close().await;
}

/// A first sync's burst of new issues (`afk run`'s intake, leading) while a person queues some of
/// them by hand (`afk dispatch`, another handle that does not lead), one at a time: no write
/// fails or waits forever, each issue gets one job, and the burst answers each as known or as
/// queued by it, as the ledger says. On PostgreSQL the burst is one statement: a second
/// statement of its transaction would hold the change-count row while waiting for the
/// hand-queued issue's row, whose own statement waits for that count row (a deadlock PostgreSQL
/// would end by failing one; this test failed so on the former 1,000-issue statements).
async fn a_burst_beside_a_hand_queued_issue_of_it_queues_each_issue_once(fx: &Fixture) {
    const ROUNDS: u64 = 6;
    const BURST: u64 = 1_200;
    const HAND: u64 = 150;
    let _lead = fx.ledger.try_lead().await.unwrap().expect("afk run leads");
    let by_hand = Ledger::open(&fx.url).await.expect("the CLI's handle");
    for round in 0..ROUNDS {
        let first = 1 + round * BURST;
        // The burst's last issues, one at a time from its end (so that some come while its
        // first thousand are being written), and one of its first thousand.
        let hand: Vec<u64> = (0..HAND)
            .map(|i| first + BURST - 1 - i)
            .chain([first + round])
            .collect();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let burst = tokio::spawn({
            let (ledger, barrier) = (fx.ledger.clone(), Arc::clone(&barrier));
            async move {
                let burst: Vec<NewJob> = (first..first + BURST).map(|n| new_job(n, 2)).collect();
                barrier.wait().await;
                ledger.queue_jobs(&burst, at(round as i64)).await
            }
        });
        let hand_queued = tokio::spawn({
            let (ledger, barrier, hand) = (by_hand.clone(), Arc::clone(&barrier), hand.clone());
            async move {
                barrier.wait().await;
                let mut jobs = Vec::new();
                for number in hand {
                    jobs.push(ledger.upsert_job(&new_job(number, 1), at(round as i64)).await);
                }
                jobs
            }
        });
        let (burst, hand_queued) = tokio::time::timeout(Duration::from_secs(60), async {
            (burst.await.unwrap(), hand_queued.await.unwrap())
        })
        .await
        .expect("neither waits for the other forever");
        let answers = burst.expect("the burst is queued beside the hand-queued issues");
        for (number, queued) in hand.iter().zip(hand_queued) {
            let (job, created) = queued.expect("the issue is queued by hand beside the burst");
            let answer = answers[(number - first) as usize]
                .as_ref()
                .expect("a value it holds");
            match (created, answer) {
                (true, None) => {}
                (false, Some(by_burst)) => assert_eq!(by_burst.id, job.id),
                other => panic!("round {round}, issue {number}: queued twice or by nobody: {other:?}"),
            }
        }
    }
    let jobs = fx.ledger.jobs().await.unwrap();
    let mut numbers: Vec<u64> = jobs.iter().map(|j| j.issue.number).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=ROUNDS * BURST).collect::<Vec<_>>(),
        "every issue once"
    );
    by_hand.close().await;
}

/// `afk doctor` (and `afk status`) beside a leading `afk run`: it says who leads, and the leader
/// is undisturbed (it still leads, its writes land, a standby is still turned away). On
/// PostgreSQL, trying the lock fails here once the leader holds it (this schema's own
/// `pg_try_advisory_lock(integer)` raises, as in `inspecting_never_takes_the_leader_lock`), so
/// a look that tried it would fail this test. On SQLite a lock tried beside a held one is only
/// refused, harming no leader, so this cannot tell a look that tries it: what trying would harm,
/// a starting `afk run`, is what `inspecting_never_takes_the_leader_lock` covers there.
async fn inspecting_beside_a_leader_reports_it_and_leaves_its_lock_alone(fx: &Fixture) {
    let run = Ledger::open(&fx.url).await.expect("afk run's handle");
    let mut lead = run.try_lead().await.unwrap().expect("afk run leads");
    let standby = Ledger::open(&fx.url).await.expect("a second afk run");
    assert!(standby.try_lead().await.unwrap().is_none(), "held");
    if fx.ledger.backend() == Backend::Postgres {
        fx.raw_execute(
            "CREATE FUNCTION pg_try_advisory_lock(key integer) RETURNS boolean LANGUAGE plpgsql \
             AS $$ BEGIN RAISE EXCEPTION 'the leader lock was tried'; END $$",
        )
        .await
        .unwrap();
        assert!(standby.try_lead().await.is_err(), "trying the lock now fails");
    }
    for _ in 0..3 {
        let seen = Ledger::inspect(&fx.url).await.expect("a look that tries no lock");
        assert_eq!(seen.leader, LeaderState::Leading, "{seen:?}");
        assert_eq!(
            fx.ledger.leader().await.unwrap().held,
            LeaderState::Leading,
            "afk status says it too"
        );
        lead.check().await.expect("afk run still leads, uninterrupted");
    }
    let (job, created) = run
        .upsert_job(&new_job(1, 2), t0())
        .await
        .expect("its writes land");
    assert!(created && job.issue.number == 1);
    if fx.ledger.backend() == Backend::Postgres {
        fx.raw_execute("DROP FUNCTION pg_try_advisory_lock(integer)")
            .await
            .unwrap();
    }
    assert!(
        standby.try_lead().await.unwrap().is_none(),
        "the lock was held throughout"
    );
    assert_eq!(
        lead.epoch(),
        run.current_epoch().await.unwrap(),
        "nobody else took it"
    );
    lead.release().await;
    standby.close().await;
    run.close().await;
}

/// Emptying the tables the live attempts' read looks at wholesale (PostgreSQL's TRUNCATE, which
/// fires no row trigger; SQLite has none, and a `DELETE` without `WHERE` runs the row triggers)
/// moves the count that read is cached by, so no `afk run` keeps serving what it read before.
/// On PostgreSQL each TRUNCATE moves it, even of an empty table (a statement trigger).
async fn emptying_the_watched_tables_wholesale_moves_the_watched_count(fx: &Fixture) {
    let ledger = &fx.ledger;
    running(ledger, 1, "thread-1").await;
    queued(ledger, 2, 2, t0()).await;
    assert_eq!(ledger.watched_attempts().await.unwrap().len(), 1);
    let before = ledger.changes().await.unwrap();
    match ledger.backend() {
        Backend::Postgres => {
            let mut last = before;
            // Each table's own trigger: attempts (and what hangs on them) before the jobs.
            for sql in [
                "TRUNCATE follow_ups",
                "TRUNCATE attempts CASCADE",
                "TRUNCATE jobs CASCADE",
            ] {
                fx.raw_execute(sql).await.unwrap();
                let now = ledger.changes().await.unwrap();
                assert_ne!(now.watched, last.watched, "{sql}: the watched count moves");
                last = now;
            }
        }
        Backend::Sqlite => {
            for sql in ["DELETE FROM events", "DELETE FROM attempts", "DELETE FROM jobs"] {
                fx.raw_execute(sql).await.unwrap();
            }
            assert_ne!(ledger.changes().await.unwrap().watched, before.watched);
        }
    }
    assert!(ledger.watched_attempts().await.unwrap().is_empty());
    assert!(ledger.jobs().await.unwrap().is_empty());
}

on_both_backends!(a_repair_gives_up_on_a_transaction_left_open_and_says_so);

/// A transaction left open on the ledger (a SQL session that wrote and never committed) holds
/// the lock every writer of the totals takes: `afk doctor --repair` waits for it a bounded time
/// (10 s; 200 ms here), then fails with a lock timeout a person can act on, having written
/// nothing; once that transaction ends, the repair goes through.
async fn a_repair_gives_up_on_a_transaction_left_open_and_says_so(fx: &Fixture) {
    queued(&fx.ledger, 1, 2, t0()).await;
    fx.raw_execute("UPDATE ledger_totals SET events = events + 2 WHERE id = 1")
        .await
        .unwrap();
    let hold = "UPDATE jobs SET state = 'failed' WHERE number = 1";
    let refused = match &fx.raw {
        Raw::Sqlite(pool) => {
            let mut session = pool.acquire().await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *session)
                .await
                .unwrap();
            sqlx::query(hold).execute(&mut *session).await.unwrap();
            let refused = Ledger::repair_totals_within(&fx.url, Duration::from_millis(200)).await;
            sqlx::query("ROLLBACK").execute(&mut *session).await.unwrap();
            refused
        }
        Raw::Postgres(pool) => {
            let mut session = pool.begin().await.unwrap();
            sqlx::query(hold).execute(&mut *session).await.unwrap();
            let refused = Ledger::repair_totals_within(&fx.url, Duration::from_millis(200)).await;
            session.rollback().await.unwrap();
            refused
        }
    };
    let error = refused.expect_err("the repair cannot take the writers' lock");
    assert!(error.is_lock_timeout(), "{error}");
    let found = Ledger::inspect(&fx.url).await.unwrap().totals.expect("looked at");
    assert_eq!(found.len(), 1, "nothing was repaired: {found:?}");
    assert_eq!(Ledger::repair_totals(&fx.url).await.unwrap(), found);
    assert_totals_exact(&fx.ledger, &fx.raw, at(1), "the repair once the session ended").await;
}

/// The repair overlapping a write, made to happen (PostgreSQL, where the wait can be seen in
/// `pg_stat_activity`): a writer's transaction inserted a job and holds the change-count row;
/// the repair, started then, waits for it before it counts anything; once the writer commits,
/// the repair counts that job, reports what differed with it counted on both sides, and the
/// totals equal a recount. A repair that counted before it took the writers' lock would report
/// the counts from before the write (2 kept, 1 counted); its rewrite, a statement of its own
/// after the lock, would still be right on PostgreSQL. (On SQLite the writer's lock is the whole
/// database's: `a_repair_gives_up_...` shows the repair cannot pass it.)
#[tokio::test]
async fn a_repair_waits_for_a_write_in_flight_and_counts_it() {
    let Some(fixture) = Fixture::postgres().await else {
        return;
    };
    run(fixture, |fx| async move {
        queued(&fx.ledger, 1, 2, t0()).await;
        fx.raw_execute("UPDATE job_counts SET jobs = jobs + 1 WHERE state = 'queued'")
            .await
            .unwrap();
        let Raw::Postgres(pool) = &fx.raw else {
            unreachable!("a PostgreSQL fixture")
        };
        let mut writer = pool.begin().await.unwrap();
        sqlx::query(
            "INSERT INTO jobs (repo, number, title, body, labels, priority, source, state, attempts, \
             dispatch_tries, created_ms, updated_ms) \
             VALUES ('acme/widgets', 2, 't', 'b', '[]', 2, 'local', 'queued', 0, 0, 0, 0)",
        )
        .execute(&mut *writer)
        .await
        .unwrap();
        let repair = tokio::spawn({
            let url = fx.url.clone();
            async move { Ledger::repair_totals(&url).await }
        });
        // Until the repair's session waits for the count row the writer holds (a condition,
        // polled at most 10 s).
        let waiting = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                       AND wait_event_type = 'Lock' AND query LIKE 'UPDATE watched_changes SET counter = counter%'";
        let mut seen_waiting = false;
        for _ in 0..1_000 {
            let n: i64 = sqlx::query_scalar(waiting).fetch_one(pool).await.unwrap();
            if n > 0 {
                seen_waiting = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen_waiting, "the repair waits for the write in flight");
        assert!(!repair.is_finished(), "and has not finished");
        writer.commit().await.unwrap();
        let repaired = tokio::time::timeout(Duration::from_secs(60), repair)
            .await
            .expect("the repair goes on once the write commits")
            .unwrap()
            .expect("the repair");
        assert_eq!(
            repaired,
            [afk_ledger::TotalDrift {
                total: "jobs queued".into(),
                kept: 3,
                counted: 2
            }],
            "the job written meanwhile counted on both sides"
        );
        assert_totals_exact(&fx.ledger, &fx.raw, at(1), "a repair that waited for a write").await;
        assert_eq!(fx.ledger.jobs().await.unwrap().len(), 2);
    })
    .await;
}
