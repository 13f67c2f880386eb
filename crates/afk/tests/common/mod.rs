//! Helpers for afk's end-to-end tests: a T3 stand-in on loopback, a temporary folder with a SQLite
//! ledger, a local issue folder and a token file, and afk wired to them (`App`, as `afk run` builds it).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use afk::app::App;
use afk::config::{Config, DispatchMode, LocalSourceConfig};
use afk::source::{local, SourceIssue};
use afk_core::{IssueKey, JobState, Priority, Repo};
use afk_ledger::{Job, Ledger};
use chrono::Utc;
use t3_sim::{SimConfig, SimProject, SimServer, TokenGrant};

pub const TOKEN: &str = "test-operate-token-5f2c";
pub const REPO_A: &str = "acme/api";
pub const REPO_B: &str = "acme/web";

/// Who the stand-in GitHub of [`World::on_github`] lets write to `REPO_A` (trusted to label and to
/// command afk).
pub const GITHUB_WRITER: &str = "mona";
/// Who may only read `REPO_A` there.
pub const GITHUB_READER: &str = "mallory";

/// A stand-in T3, a temporary folder and a config pointing at both.
pub struct World {
    pub sim: SimServer,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl World {
    /// This world with its issues taken from a stand-in GitHub (telling time by `clock`) instead
    /// of the issue folder: `REPO_A`, where [`GITHUB_WRITER`] may write and [`GITHUB_READER`] only
    /// read, polled every `poll`.
    pub async fn on_github(
        mut self,
        poll: Duration,
        clock: std::sync::Arc<dyn afk_github::Clock>,
    ) -> (World, afk_github::testing::GitHubStandIn) {
        let github = afk_github::testing::GitHubStandIn::start_with_clock(clock)
            .await
            .expect("the stand-in GitHub starts");
        github.create_repo(REPO_A);
        github.set_permission(REPO_A, GITHUB_WRITER, "write");
        github.set_permission(REPO_A, GITHUB_READER, "read");
        let token_file = self.dir.path().join("github-token");
        std::fs::write(&token_file, afk_github::testing::STAND_IN_TOKEN).expect("the token file");
        self.config.source.local = None;
        self.config.github = Some(afk::config::GitHubConfig {
            api_url: github.api_url().to_string(),
            repos: vec![REPO_A.into()],
            poll_interval: poll,
            token_file: Some(token_file),
            ..afk::config::GitHubConfig::default()
        });
        (self, github)
    }
}

impl World {
    /// A world whose simulated turns take `turn` unless a message says otherwise.
    pub async fn new(turn: Duration) -> World {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let sim = SimServer::start(
            "127.0.0.1:0".parse().unwrap(),
            SimConfig {
                tokens: vec![TokenGrant::operate(TOKEN)],
                projects: [(REPO_A, "proj-api"), (REPO_B, "proj-web")]
                    .iter()
                    .map(|(repo, id)| SimProject {
                        id: (*id).into(),
                        workspace_root: format!("/srv/{repo}"),
                        title: Some((*repo).into()),
                    })
                    .collect(),
                turn_duration: turn,
                seed: 1,
                ..SimConfig::default()
            },
        )
        .await
        .expect("the stand-in starts");
        let token_file = dir.path().join("t3-token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let mut config = Config::default();
        config.t3.url = sim.url();
        config.t3.token_file = token_file;
        config.t3.request_timeout = Duration::from_secs(5);
        config.t3.projects = BTreeMap::from([
            (REPO_A.to_string(), "proj-api".into()),
            (REPO_B.to_string(), "proj-web".into()),
        ]);
        config.ledger.url = format!("sqlite://{}", dir.path().join("afk.db").display());
        config.source.local = Some(LocalSourceConfig {
            dir: dir.path().join("issues"),
        });
        config.watch.poll_interval = Duration::from_millis(25);
        config.watch.stall_timeout = Duration::from_secs(60);
        config.watch.turn_timeout = Duration::from_secs(60);
        config.retry.initial = Duration::from_millis(20);
        config.retry.cap = Duration::from_millis(100);
        // A port of its own: tests run side by side.
        config.http.listen = Some("127.0.0.1:0".parse().unwrap());
        World { sim, dir, config }
    }

    pub fn issues_dir(&self) -> PathBuf {
        self.dir.path().join("issues")
    }

    /// Writes a local issue file; returns its path.
    pub fn add_issue(&self, repo: &str, number: u64, body: &str) -> PathBuf {
        self.add_issue_with_priority(repo, number, body, Priority::DEFAULT)
    }

    /// Writes an issue file "Do it." for each of `numbers` of `repo`.
    pub fn add_issues(&self, repo: &str, numbers: std::ops::RangeInclusive<u64>) {
        for n in numbers {
            self.add_issue(repo, n, "Do it.");
        }
    }

    pub fn add_issue_with_priority(
        &self,
        repo: &str,
        number: u64,
        body: &str,
        priority: Priority,
    ) -> PathBuf {
        let issue = SourceIssue {
            key: key(repo, number),
            title: format!("Issue {number}"),
            body: body.into(),
            labels: vec!["afk".into()],
            priority,
        };
        local::write_issue(
            &self.issues_dir(),
            &format!("{}-{number}.md", repo.replace('/', "-")),
            &issue,
        )
        .unwrap()
    }

    /// afk wired from this world's config, as `afk run` wires it.
    pub async fn app(&self) -> App {
        App::build(self.config.clone()).await.expect("afk is wired")
    }

    /// Writes the config as a TOML file for the `afk` binary.
    pub fn write_config(&self) -> PathBuf {
        let c = &self.config;
        let text = format!(
            r#"[t3]
url = "{url}"
token_file = "{token}"
request_timeout = "5s"
dispatch = "{dispatch}"

[t3.projects]
"{a}" = "proj-api"
"{b}" = "proj-web"

[ledger]
url = "{ledger}"

[source.local]
dir = "{issues}"

[limits]
max_concurrent = {mc}
per_repo = {pr}
max_attempts = {ma}

[watch]
poll_interval = "{poll}ms"
stall_timeout = "{stall}ms"
turn_timeout = "{turn}ms"
push = {push}

[retry]
initial = "{ri}ms"
cap = "{rc}ms"

[http]
listen = "127.0.0.1:0"
"#,
            url = c.t3.url,
            token = c.t3.token_file.display(),
            a = REPO_A,
            b = REPO_B,
            ledger = c.ledger.url,
            issues = self.issues_dir().display(),
            mc = c.limits.max_concurrent,
            pr = c.limits.per_repo,
            ma = c.limits.max_attempts,
            // afk refuses a poll interval under 100 ms ([watch] poll_interval).
            poll = c.watch.poll_interval.as_millis().max(100),
            stall = c.watch.stall_timeout.as_millis(),
            turn = c.watch.turn_timeout.as_millis(),
            ri = c.retry.initial.as_millis(),
            rc = c.retry.cap.as_millis(),
            dispatch = match c.t3.dispatch {
                DispatchMode::Http => "http",
                DispatchMode::WsWorktree => "ws-worktree",
            },
            push = c.watch.push,
        );
        let path = self.dir.path().join("afk.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub async fn ledger(&self) -> Ledger {
        Ledger::open(&self.config.ledger.url)
            .await
            .expect("the ledger opens")
    }
}

pub fn key(repo: &str, number: u64) -> IssueKey {
    IssueKey {
        repo: Repo::new(repo).unwrap(),
        number,
    }
}

/// Ticks `app` every poll interval until `done` holds for the ledger's jobs, calling `check`
/// after every tick; panics (with the jobs) after `limit`.
pub async fn tick_until(
    app: &mut App,
    limit: Duration,
    mut check: impl FnMut(&[Job]),
    done: impl Fn(&[Job]) -> bool,
) -> Vec<Job> {
    let deadline = Instant::now() + limit;
    loop {
        app.tick(Utc::now()).await.expect("a tick");
        let jobs = app.ledger().jobs().await.unwrap();
        check(&jobs);
        if done(&jobs) {
            return jobs;
        }
        assert!(Instant::now() < deadline, "not done within {limit:?}: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True when there are `n` jobs and all are final.
pub fn all_final(n: usize) -> impl Fn(&[Job]) -> bool {
    move |jobs| jobs.len() == n && jobs.iter().all(|j| j.state.is_final())
}

pub fn job<'a>(jobs: &'a [Job], repo: &str, number: u64) -> &'a Job {
    jobs.iter()
        .find(|j| j.issue == key(repo, number))
        .expect("the job exists")
}

pub fn states(jobs: &[Job]) -> Vec<JobState> {
    jobs.iter().map(|j| j.state).collect()
}

/// Total attempts over all jobs.
pub async fn attempt_count(ledger: &Ledger) -> usize {
    let mut n = 0;
    for job in ledger.jobs().await.unwrap() {
        n += ledger.attempts(job.id).await.unwrap().len();
    }
    n
}

/// True when the first job is in `state` (for tests with one issue).
pub fn first_job_is(state: JobState) -> impl Fn(&[Job]) -> bool {
    move |jobs| jobs.first().is_some_and(|j| j.state == state)
}

/// Ticks until there are `n` jobs and all are final; panics (with the jobs) after 20 s.
pub async fn tick_until_all_final(app: &mut App, n: usize) -> Vec<Job> {
    tick_until(app, Duration::from_secs(20), |_| {}, all_final(n)).await
}

/// Ticks until `condition` (about anything but the jobs: T3, GitHub) holds; panics after 20 s.
pub async fn tick_until_true(app: &mut App, condition: impl Fn() -> bool) {
    tick_until(app, Duration::from_secs(20), |_| {}, |_| condition()).await;
}

/// Ticks `n` times, each of which must find T3 out of reach (`why`); a tick that fails is a
/// failure too.
pub async fn tick_without_t3(app: &mut App, n: usize, why: &str) {
    for _ in 0..n {
        let report = app.tick(Utc::now()).await.expect(why);
        assert!(!report.t3_reachable, "{why}: T3 answered");
    }
}

/// Ticks until `n` jobs are final (30 s at most), calling `act` once as soon as a first job has
/// succeeded (a token rotated mid-run, say); panics if no job succeeded before all ended.
pub async fn tick_until_all_final_acting_after_first_success(
    app: &mut App,
    n: usize,
    act: impl FnOnce(),
) -> Vec<Job> {
    let mut act = Some(act);
    let check = |jobs: &[Job]| {
        if jobs.iter().any(|j| j.state == JobState::Succeeded) {
            if let Some(act) = act.take() {
                act();
            }
        }
    };
    let jobs = tick_until(app, Duration::from_secs(30), check, all_final(n)).await;
    assert!(act.is_none(), "no job succeeded before all ended: {jobs:#?}");
    jobs
}

/// Asserts that every job succeeded with its first attempt.
pub fn assert_all_succeeded_first_time(jobs: &[Job]) {
    assert!(
        jobs.iter()
            .all(|j| j.state == JobState::Succeeded && j.attempts == 1),
        "{jobs:#?}"
    );
}

/// Ticks until the first job is in `state`; panics after 20 s.
pub async fn tick_until_first_job_is(app: &mut App, state: JobState) -> Vec<Job> {
    tick_until(app, Duration::from_secs(20), |_| {}, first_job_is(state)).await
}

/// True once afk carried out the stop of the first thread in T3: its turn no longer runs and its
/// session is stopped, or (a thread stopped before its turn started) it was deleted. Like the
/// real T3, the stand-in shows an interrupted turn `interrupted` for a moment and then
/// `completed`, so the turn's state alone does not tell; whether the agent of a deleted thread
/// really stopped is another matter (`real_t3.rs`, issue 12 defect 2).
pub fn first_thread_interrupted(sim: &SimServer) -> bool {
    use t3_client::wire::{SessionStatus, TurnState};
    sim.read_model().threads.first().is_some_and(|t| {
        let stopped = t
            .latest_turn
            .as_ref()
            .is_some_and(|turn| matches!(turn.state, TurnState::Interrupted | TurnState::Completed))
            && t.session.as_ref().map(|s| s.status) == Some(SessionStatus::Stopped);
        stopped || t.deleted_at.is_some()
    })
}

/// A fresh schema named `{prefix}_{uuid}` in the test PostgreSQL (`AFK_TEST_PG_URL`, else the
/// local one) and a URL whose connections use it, or `None` (after a `SKIP:` line) when it is not
/// reachable and `AFK_REQUIRE_PG` is not `1`. The caller drops the schema.
pub async fn pg_schema(prefix: &str) -> Option<(String, String)> {
    use sqlx::Connection;
    let base = std::env::var("AFK_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let mut admin = match sqlx::PgConnection::connect(&base).await {
        Ok(admin) => admin,
        Err(e) => {
            assert!(
                std::env::var("AFK_REQUIRE_PG").as_deref() != Ok("1"),
                "PostgreSQL not reachable at {base} and AFK_REQUIRE_PG=1: {e}"
            );
            eprintln!("SKIP: PostgreSQL not reachable at {base}: {e}");
            return None;
        }
    };
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let separator = if base.contains('?') { '&' } else { '?' };
    Some((
        format!("{base}{separator}options=-csearch_path%3D{schema}"),
        schema,
    ))
}
