//! `afk run` against the **real** T3 Code server (`t3_sim::real`; run when `AFK_REAL_T3` names
//! it, else each real test prints one `SKIP:` line), and the same scenarios against the stand-in
//! where they make sense: both must come to the same conclusions (job states, attempts, threads
//! per attempt).
//!
//! Each test drives the `afk` binary with a config file, a local issue folder and a SQLite
//! ledger of its own, reads outcomes with `afk jobs --json` (and the ledger's attempts), and
//! looks at T3 over HTTP. The real server's agent is `afk sim agent` (a codex app-server that
//! commits a file in its worktree; `[sim:...]` markers in the issue body script it). One real
//! server is shared by the file, each test has a project and git repository of its own, and the
//! tests against it run one at a time (the machine has two cores).
//!
//! Each of issue 12's seven defects is reproduced by tests here (against the real T3 where only
//! it shows the defect, and against the stand-in); they were seen failing for that reason
//! before its fix.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use afk_ledger::{Attempt, Ledger};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use t3_sim::real::{self, Agent, Proxy, RealProject, RealT3, TrapAction};
use t3_sim::{FaultPlan, SimConfig, SimProject, SimServer, TokenGrant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// One scenario as two tests: `$real` against the real T3 (one `SKIP:` line without it) and `$sim`
/// against the stand-in, each in a folder named `$dir`, with afk's `$settings`.
macro_rules! on_both {
    ($real:ident, $sim:ident, $scenario:ident, $dir:literal, $settings:expr, $sim_config:expr) => {
        #[tokio::test]
        async fn $real() {
            if let Some(run) = Run::real(concat!("real_t3::", stringify!($real)), $dir, $settings).await {
                $scenario(run).await;
            }
        }

        #[tokio::test]
        async fn $sim() {
            $scenario(Run::sim($dir, $settings, $sim_config).await).await;
        }
    };
}

const AFK: &str = env!("CARGO_BIN_EXE_afk");
/// How long a scenario may take to come to its end.
const LIMIT: Duration = Duration::from_secs(150);
const SIM_TOKEN: &str = "real-t3-tests-token";

/// One test against the real T3 at a time: T3, afk and the agents share two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn agent() -> Agent {
    Agent::new(AFK, &["sim", "agent"])
}

/// The T3 a run talks to.
enum Backend {
    Real { t3: Held, project: RealProject },
    Sim { sim: SimServer, project: String },
}

/// A real server: the file's shared one, or one of a test's own (killed when dropped).
enum Held {
    Shared(&'static RealT3),
    Owned(Box<RealT3>),
}

impl std::ops::Deref for Held {
    type Target = RealT3;

    fn deref(&self) -> &RealT3 {
        match self {
            Held::Shared(t3) => t3,
            Held::Owned(t3) => t3,
        }
    }
}

/// The settings a scenario runs afk with.
#[derive(Debug, Clone)]
struct Settings {
    dispatch: &'static str,
    instance: &'static str,
    max_attempts: u32,
    max_concurrent: u32,
    poll: Duration,
    stall: Duration,
    turn: Duration,
    push: bool,
    retry_initial: Duration,
    retry_cap: Duration,
    max_dispatch_tries: u32,
    answer: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            dispatch: "ws-worktree",
            instance: "codex",
            max_attempts: 2,
            max_concurrent: 8,
            poll: Duration::from_millis(200),
            stall: Duration::from_secs(600),
            turn: Duration::from_secs(600),
            push: true,
            retry_initial: Duration::from_millis(100),
            retry_cap: Duration::from_millis(500),
            max_dispatch_tries: 3,
            answer: Duration::from_secs(24 * 3600),
        }
    }
}

/// One afk setup: its folder, config, issues, ledger and `afk run` process, against a backend.
struct Run {
    repo: String,
    backend: Backend,
    dir: tempfile::TempDir,
    settings: Settings,
    url: String,
    afk: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    _serial: Option<tokio::sync::MutexGuard<'static, ()>>,
}

impl Run {
    /// A run against the file's shared real T3, with a project `name` of its own; `None`
    /// (after a `SKIP:` line) when the real T3 is not available.
    async fn real(test: &str, name: &str, settings: Settings) -> Option<Run> {
        if !real::skip_unless_available(test) {
            return None;
        }
        let serial = SERIAL.lock().await;
        let t3 = real::shared(test, || real::Options { agent: Some(agent()) }).await?;
        let project = t3
            .add_project(&format!("proj-{name}"), name)
            .await
            .unwrap_or_else(|e| panic!("the project for {test}: {e:#}"));
        Some(Run::new(
            name,
            Backend::Real {
                t3: Held::Shared(t3),
                project,
            },
            settings,
            Some(serial),
        ))
    }

    /// A run against a real T3 of its own, whose agent is `agent` (`None`: the binary is
    /// missing, so no session can start).
    async fn real_owned(test: &str, name: &str, settings: Settings, agent: Option<Agent>) -> Option<Run> {
        if !real::skip_unless_available(test) {
            return None;
        }
        let serial = SERIAL.lock().await;
        let t3 = RealT3::start(real::Options { agent })
            .await
            .unwrap_or_else(|e| panic!("the real T3 did not start: {e:#}"));
        let project = t3
            .add_project(&format!("proj-{name}"), name)
            .await
            .unwrap_or_else(|e| panic!("the project for {test}: {e:#}"));
        Some(Run::new(
            name,
            Backend::Real {
                t3: Held::Owned(Box::new(t3)),
                project,
            },
            settings,
            Some(serial),
        ))
    }

    /// A run against the stand-in started with `config` (its token and project added).
    async fn sim(name: &str, settings: Settings, config: SimConfig) -> Run {
        let project = format!("proj-{name}");
        let config = SimConfig {
            tokens: vec![TokenGrant::operate(SIM_TOKEN)],
            projects: vec![SimProject::new(project.clone(), format!("/srv/acme/{name}"))],
            worktrees_dir: PathBuf::from(format!("/tmp/afk-real-t3-tests/{name}/worktrees")),
            ..config
        };
        let sim = SimServer::start("127.0.0.1:0".parse().expect("an address"), config)
            .await
            .expect("the stand-in starts");
        Run::new(name, Backend::Sim { sim, project }, settings, None)
    }

    fn new(
        name: &str,
        backend: Backend,
        settings: Settings,
        serial: Option<tokio::sync::MutexGuard<'static, ()>>,
    ) -> Run {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::create_dir_all(dir.path().join("issues")).expect("the issue folder");
        let url = match &backend {
            Backend::Real { t3, .. } => t3.url().to_owned(),
            Backend::Sim { sim, .. } => sim.url(),
        };
        let run = Run {
            repo: format!("acme/{name}"),
            backend,
            dir,
            settings,
            url,
            afk: None,
            log: Arc::default(),
            _serial: serial,
        };
        std::fs::write(run.dir.path().join("t3-token"), run.token()).expect("the token file");
        run.write_config();
        run
    }

    fn name(&self) -> &'static str {
        match self.backend {
            Backend::Real { .. } => "real T3",
            Backend::Sim { .. } => "t3-sim",
        }
    }

    fn token(&self) -> String {
        match &self.backend {
            Backend::Real { t3, .. } => t3.token().to_owned(),
            Backend::Sim { .. } => SIM_TOKEN.to_owned(),
        }
    }

    fn t3_url(&self) -> String {
        match &self.backend {
            Backend::Real { t3, .. } => t3.url().to_owned(),
            Backend::Sim { sim, .. } => sim.url(),
        }
    }

    fn project(&self) -> String {
        match &self.backend {
            Backend::Real { project, .. } => project.id.clone(),
            Backend::Sim { project, .. } => project.clone(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("afk.toml")
    }

    fn ledger_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("afk.db").display())
    }

    /// Points afk at `url` (a proxy in front of T3) from the next start on.
    fn use_url(&mut self, url: &str) {
        self.url = url.to_owned();
        self.write_config();
    }

    fn write_config(&self) {
        let s = &self.settings;
        let text = format!(
            r#"[t3]
url = "{url}"
token_file = "{token}"
request_timeout = "30s"
dispatch = "{dispatch}"
instance_id = "{instance}"
model = "gpt-5-codex"
base_branch = "main"

[t3.projects]
"{repo}" = "{project}"

[ledger]
url = "{ledger}"

[source.local]
dir = "{issues}"

[limits]
max_concurrent = {mc}
per_repo = {mc}
max_attempts = {ma}
answer_timeout = "{answer}ms"

[watch]
poll_interval = "{poll}ms"
stall_timeout = "{stall}ms"
turn_timeout = "{turn}ms"
push = {push}

[retry]
initial = "{ri}ms"
cap = "{rc}ms"
max_dispatch_tries = {tries}

[http]
listen = "127.0.0.1:0"
"#,
            url = self.url,
            token = self.dir.path().join("t3-token").display(),
            dispatch = s.dispatch,
            instance = s.instance,
            repo = self.repo,
            project = self.project(),
            ledger = self.ledger_url(),
            issues = self.dir.path().join("issues").display(),
            mc = s.max_concurrent,
            ma = s.max_attempts,
            poll = s.poll.as_millis(),
            stall = s.stall.as_millis(),
            turn = s.turn.as_millis(),
            push = s.push,
            tries = s.max_dispatch_tries,
            ri = s.retry_initial.as_millis(),
            rc = s.retry_cap.as_millis(),
            answer = s.answer.as_millis(),
        );
        std::fs::write(self.config_path(), text).expect("the config file");
    }

    fn issue_path(&self, number: u64) -> PathBuf {
        self.dir.path().join("issues").join(format!("issue-{number}.md"))
    }

    /// Writes issue `number` with `body` (the agent's script).
    fn add_issue(&self, number: u64, body: &str) {
        let text = format!(
            "---\nrepo: {}\nnumber: {number}\ntitle: Issue {number}\nlabels: [afk]\n---\n{body}\n",
            self.repo
        );
        std::fs::write(self.issue_path(number), text).expect("the issue file");
    }

    fn remove_issue(&self, number: u64) {
        std::fs::remove_file(self.issue_path(number)).expect("the issue file is removed");
    }

    /// Starts `afk run`; its log is collected.
    fn start_afk(&mut self) {
        assert!(self.afk.is_none(), "afk runs already");
        let mut afk = Command::new(AFK)
            .args(["run", "--config"])
            .arg(self.config_path())
            .env("AFK_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("afk starts");
        let stderr = afk.stderr.take().expect("a piped log");
        let log = self.log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                lock(&log).push(line);
            }
        });
        self.afk = Some(afk);
    }

    /// Whether T3's git has the local `branch` (in the run's repository).
    fn branch_made(&self, branch: &str) -> bool {
        match &self.backend {
            Backend::Real { project, .. } => {
                real::git(&project.workspace, &["rev-parse", "--verify", "--quiet", branch]).is_ok()
            }
            Backend::Sim { sim, .. } => sim.branch(branch).is_some(),
        }
    }

    /// `kill -9` of `afk run`.
    async fn kill_afk(&mut self) {
        if let Some(mut afk) = self.afk.take() {
            // tokio's kill is SIGKILL: afk finishes nothing.
            afk.kill().await.expect("afk is killed");
        }
    }

    /// `afk jobs --json`.
    async fn jobs(&self) -> Vec<Value> {
        let output = Command::new(AFK)
            .args(["jobs", "--json", "--config"])
            .arg(self.config_path())
            .env("AFK_LOG", "warn")
            .output()
            .await
            .expect("afk jobs runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() && stderr.contains("no ledger at") {
            return Vec::new(); // afk run has not made its ledger yet
        }
        assert!(output.status.success(), "afk jobs failed: {stderr}");
        serde_json::from_slice(&output.stdout).expect("afk jobs --json prints JSON")
    }

    /// Waits until `afk jobs` shows `n` jobs, all final; returns them.
    async fn final_jobs(&self, n: usize) -> Vec<Value> {
        self.jobs_until(&format!("{n} final jobs"), |jobs| {
            jobs.len() == n && jobs.iter().all(|j| is_final(&j["state"]))
        })
        .await
    }

    async fn jobs_until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let jobs = self.jobs().await;
            if done(&jobs) {
                return jobs;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {what} within {LIMIT:?}: {jobs:#?}\nafk's log:\n{}",
                self.name(),
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn log_tail(&self, n: usize) -> String {
        let log = lock(&self.log);
        log[log.len().saturating_sub(n)..].join("\n")
    }

    /// Every attempt in the ledger, of every job.
    async fn attempts(&self) -> Vec<Attempt> {
        let ledger = Ledger::open(&self.ledger_url()).await.expect("the ledger opens");
        let mut attempts = Vec::new();
        for job in ledger.jobs().await.expect("jobs") {
            attempts.extend(ledger.attempts(job.id).await.expect("attempts"));
        }
        attempts
    }

    /// T3's threads of this run's project, from the snapshot (deleted ones included).
    async fn threads(&self) -> Vec<Value> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a client");
        let body: Value = client
            .get(format!("{}/api/orchestration/snapshot", self.t3_url()))
            .bearer_auth(self.token())
            .send()
            .await
            .expect("T3 answers")
            .json()
            .await
            .expect("the snapshot is JSON");
        body["threads"]
            .as_array()
            .map(|threads| {
                threads
                    .iter()
                    .filter(|t| t["projectId"] == self.project())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn thread(&self, id: &str) -> Value {
        self.threads()
            .await
            .into_iter()
            .find(|t| t["id"] == id)
            .unwrap_or(Value::Null)
    }

    /// Waits until T3 shows thread `id` so that `done` holds; returns it.
    async fn thread_until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            let thread = self.thread(id).await;
            if done(&thread) {
                return thread;
            }
            assert!(
                Instant::now() < deadline,
                "{}: thread {id} never {what}: {thread}",
                self.name()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends one client command to T3 as a person in T3's UI would.
    async fn t3_command(&self, command: Value) {
        let client = reqwest::Client::new();
        let reply = client
            .post(format!("{}/api/orchestration/dispatch", self.t3_url()))
            .bearer_auth(self.token())
            .json(&command)
            .send()
            .await
            .expect("T3 answers");
        assert!(reply.status().is_success(), "{}: {command}", self.name());
    }

    /// Whether an agent works for thread `id` (in `worktree`) now.
    fn agent_running(&self, id: &str, worktree: &str) -> bool {
        match &self.backend {
            Backend::Real { t3, .. } => !t3.agents_in(Path::new(worktree)).is_empty(),
            Backend::Sim { sim, .. } => sim_thread(sim, id).is_some_and(|t| t.agent_running),
        }
    }

    /// How many times an agent was started for thread `id` (in `worktree`).
    fn agent_starts(&self, id: &str, worktree: &str) -> usize {
        match &self.backend {
            Backend::Real { t3, .. } => t3.agent_starts_in(Path::new(worktree)),
            Backend::Sim { sim, .. } => sim_thread(sim, id).map_or(0, |t| t.agent_starts as usize),
        }
    }

    /// Waits (bounded) until no agent works for thread `id`.
    async fn agent_gone(&self, id: &str, worktree: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.agent_running(id, worktree) {
            if Instant::now() >= deadline {
                // What T3 and afk say, for whoever meets this: a stopped thread must stay stopped.
                let thread = self.thread(id).await;
                panic!(
                    "{}: the agent of thread {id} still runs after afk ended its attempt; T3 shows \
                     latestTurn {} session {} deletedAt {}\nafk's log:\n{}",
                    self.name(),
                    thread["latestTurn"],
                    thread["session"],
                    thread["deletedAt"],
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every attempt has exactly one thread in T3 and T3 has no thread without an attempt.
    async fn assert_one_thread_per_attempt(&self) {
        let attempts = self.attempts().await;
        let threads = self.threads().await;
        let mut ids: Vec<&str> = threads.iter().filter_map(|t| t["id"].as_str()).collect();
        ids.sort_unstable();
        let mut expected: Vec<&str> = attempts.iter().map(|a| a.thread_id.as_str()).collect();
        expected.sort_unstable();
        assert_eq!(
            ids,
            expected,
            "{}: T3's threads are not one per attempt: {threads:#?}\n{attempts:#?}",
            self.name()
        );
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn sim_thread(sim: &SimServer, id: &str) -> Option<t3_sim::SimThread> {
    t3_client::ids::ThreadId::new(id)
        .ok()
        .and_then(|id| sim.thread(&id))
}

fn is_final(state: &Value) -> bool {
    matches!(
        state.as_str(),
        Some("succeeded" | "cancelled" | "given_up" | "failed")
    )
}

fn state_of(thread: &Value) -> String {
    format!(
        "{}/{}",
        thread["latestTurn"]["state"].as_str().unwrap_or("null"),
        thread["session"]["status"].as_str().unwrap_or("null")
    )
}

fn now() -> String {
    t3_client::wire::Timestamp::now().to_iso()
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------------------------
// Dispatch and success.

/// ws-worktree: each attempt's thread works in a worktree of its own, on its own branch, and
/// the agent's commit is on that branch.
async fn worktree_dispatch(mut run: Run) {
    run.add_issue(1, "First. [sim:duration=300]");
    run.add_issue(2, "Second. [sim:duration=300]");
    run.start_afk();
    let jobs = run.final_jobs(2).await;
    assert!(
        jobs.iter()
            .all(|j| j["state"] == "succeeded" && j["attempts"] == 1),
        "{}: {jobs:#?}",
        run.name()
    );
    run.assert_one_thread_per_attempt().await;
    let attempts = run.attempts().await;
    let mut worktrees = Vec::new();
    for attempt in &attempts {
        let thread = run.thread(attempt.thread_id.as_str()).await;
        assert_eq!(thread["branch"], attempt.branch, "{}", run.name());
        let worktree = thread["worktreePath"].as_str().unwrap_or_default().to_owned();
        assert!(
            worktree.ends_with(&attempt.branch.replace('/', "-")),
            "{}: {worktree} for {}",
            run.name(),
            attempt.branch
        );
        worktrees.push(worktree.clone());
        if let Backend::Real { project, .. } = &run.backend {
            let head = real::git(Path::new(&worktree), &["rev-parse", "--abbrev-ref", "HEAD"])
                .expect("the worktree is a checkout");
            assert_eq!(head, attempt.branch, "the worktree is on the attempt's branch");
            let subject = real::git(&project.workspace, &["log", "-1", "--format=%s", &attempt.branch])
                .expect("the branch exists in the repository");
            assert!(subject.starts_with("t3-sim: "), "the agent's commit: {subject}");
            let ahead = real::git(
                &project.workspace,
                &["rev-list", "--count", &format!("main..{}", attempt.branch)],
            )
            .expect("rev-list");
            assert_eq!(ahead, "1", "one commit of the agent's on {}", attempt.branch);
        }
    }
    worktrees.sort_unstable();
    worktrees.dedup();
    assert_eq!(worktrees.len(), 2, "{}: a worktree per attempt", run.name());
    run.kill_afk().await;
}

on_both!(
    worktree_dispatch_against_the_real_t3,
    worktree_dispatch_against_the_stand_in,
    worktree_dispatch,
    "worktrees",
    Settings::default(),
    SimConfig::default()
);

/// HTTP dispatch: the thread works in the project's checkout (no worktree), the agent commits
/// there.
async fn http_dispatch(mut run: Run) {
    run.add_issue(3, "Over HTTP. [sim:duration=300]");
    run.start_afk();
    let jobs = run.final_jobs(1).await;
    assert_eq!(jobs[0]["state"], "succeeded", "{}: {jobs:#?}", run.name());
    run.assert_one_thread_per_attempt().await;
    let attempt = &run.attempts().await[0];
    let thread = run.thread(attempt.thread_id.as_str()).await;
    assert_eq!(thread["worktreePath"], Value::Null, "{}", run.name());
    if let Backend::Real { project, .. } = &run.backend {
        let subject = real::git(&project.workspace, &["log", "-1", "--format=%s"]).expect("git log");
        assert!(
            subject.starts_with("t3-sim: "),
            "the agent committed in the checkout: {subject}"
        );
    }
    run.kill_afk().await;
}

#[tokio::test]
async fn http_dispatch_against_the_real_t3() {
    let settings = Settings {
        dispatch: "http",
        ..Settings::default()
    };
    if let Some(run) = Run::real("real_t3::http_dispatch_against_the_real_t3", "http", settings).await {
        http_dispatch(run).await;
    }
}

#[tokio::test]
async fn http_dispatch_against_the_stand_in() {
    let settings = Settings {
        dispatch: "http",
        ..Settings::default()
    };
    http_dispatch(Run::sim("http", settings, SimConfig::default()).await).await;
}

/// Following T3's shell stream: with a poll a minute apart, a job still ends within seconds.
async fn following_the_stream(mut run: Run) {
    run.add_issue(4, "Quick. [sim:duration=200]");
    run.start_afk();
    let started = Instant::now();
    let jobs = run.final_jobs(1).await;
    assert_eq!(jobs[0]["state"], "succeeded", "{}: {jobs:#?}", run.name());
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "{}: the end was seen on the stream, not at the next poll ({:?})",
        run.name(),
        started.elapsed()
    );
    run.kill_afk().await;
}

#[tokio::test]
async fn following_the_shell_stream_against_the_real_t3() {
    let settings = Settings {
        poll: Duration::from_secs(60),
        ..Settings::default()
    };
    if let Some(run) = Run::real(
        "real_t3::following_the_shell_stream_against_the_real_t3",
        "stream",
        settings,
    )
    .await
    {
        following_the_stream(run).await;
    }
}

#[tokio::test]
async fn following_the_shell_stream_against_the_stand_in() {
    let settings = Settings {
        poll: Duration::from_secs(60),
        ..Settings::default()
    };
    following_the_stream(Run::sim("stream", settings, SimConfig::default()).await).await;
}

// ---------------------------------------------------------------------------------------------
// Failure, timeout, cancellation.

/// A failing turn: each attempt fails with the agent's error, on a branch of its own, until
/// the job is given up.
async fn failure_then_given_up(mut run: Run) {
    run.add_issue(5, "Breaks. [sim:fail] [sim:duration=100]");
    run.start_afk();
    let jobs = run.final_jobs(1).await;
    assert_eq!(jobs[0]["state"], "given_up", "{}: {jobs:#?}", run.name());
    assert_eq!(jobs[0]["attempts"], 2, "{}", run.name());
    let attempts = run.attempts().await;
    assert!(
        attempts.iter().all(|a| a.state == afk_core::AttemptState::Failed
            && a.last_error.as_deref().is_some_and(|e| e.contains("[sim:fail]"))),
        "{}: {attempts:#?}",
        run.name()
    );
    let branches: Vec<&str> = attempts.iter().map(|a| a.branch.as_str()).collect();
    assert_eq!(branches, ["afk/issue-5", "afk/issue-5-2"], "{}", run.name());
    run.assert_one_thread_per_attempt().await;
    run.kill_afk().await;
}

on_both!(
    failure_is_retried_then_given_up_against_the_real_t3,
    failure_is_retried_then_given_up_against_the_stand_in,
    failure_then_given_up,
    "failure",
    Settings::default(),
    SimConfig::default()
);

/// A turn timeout: each hung attempt runs its full timeout, counted from when T3 accepted its
/// turn (`latestTurn.requestedAt`, T3's time of receiving it), give or take `allowance`; it is
/// then recorded `timed_out` and stopped, and its agent is gone.
async fn turn_timeout(mut run: Run, issues: u64, allowance: Duration) {
    for n in 0..issues {
        run.add_issue(10 + n, "Never ends. [sim:hang]");
    }
    run.start_afk();
    let n = usize::try_from(issues).expect("a few issues");
    let jobs = run.final_jobs(n).await;
    assert!(
        jobs.iter().all(|j| j["state"] == "given_up"),
        "{}: {jobs:#?}",
        run.name()
    );
    let timeout = chrono::Duration::from_std(run.settings.turn).expect("a duration");
    let allowance = chrono::Duration::from_std(allowance).expect("a duration");
    for attempt in run.attempts().await {
        assert_eq!(
            attempt.state,
            afk_core::AttemptState::TimedOut,
            "{}: {attempt:#?}",
            run.name()
        );
        let thread = run
            .thread_until(attempt.thread_id.as_str(), "stopped working", |t| {
                t["latestTurn"]["state"] != "running"
                    && !matches!(t["session"]["status"].as_str(), Some("starting" | "running"))
            })
            .await;
        let accepted: DateTime<Utc> = thread["latestTurn"]["requestedAt"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{}: no turn: {thread}", run.name()));
        let ended = attempt.ended_at.expect("a timed-out attempt ended");
        let ran = ended - accepted;
        assert!(
            ran + allowance >= timeout,
            "{}: attempt {} of {} was timed out {} ms after T3 accepted its turn, before its {} ms turn timeout",
            run.name(),
            attempt.number,
            attempt.branch,
            ran.num_milliseconds(),
            timeout.num_milliseconds()
        );
        let worktree = thread["worktreePath"].as_str().unwrap_or_default().to_owned();
        run.agent_gone(attempt.thread_id.as_str(), &worktree).await;
    }
    run.kill_afk().await;
}

/// Clock and rounding: the turn timeout counts from when T3 accepted the turn (issue 12
/// defect 1), not from the tick that dispatched it.
const EXACT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_turn_timeout_stops_the_thread_after_its_full_timeout_against_the_real_t3() {
    let settings = Settings {
        turn: Duration::from_secs(6),
        max_attempts: 1,
        ..Settings::default()
    };
    if let Some(run) = Run::real(
        "real_t3::a_turn_timeout_stops_the_thread_after_its_full_timeout_against_the_real_t3",
        "timeout",
        settings,
    )
    .await
    {
        turn_timeout(run, 1, EXACT).await;
    }
}

#[tokio::test]
async fn a_turn_timeout_stops_the_thread_after_its_full_timeout_against_the_stand_in() {
    let settings = Settings {
        turn: Duration::from_secs(3),
        max_attempts: 1,
        ..Settings::default()
    };
    turn_timeout(
        Run::sim("timeout", settings, SimConfig::realistic()).await,
        1,
        EXACT,
    )
    .await;
}

#[tokio::test]
async fn a_turn_timeout_counts_from_each_turn_in_a_busy_tick_against_the_real_t3() {
    let settings = Settings {
        turn: Duration::from_secs(8),
        max_attempts: 1,
        ..Settings::default()
    };
    if let Some(run) = Run::real(
        "real_t3::a_turn_timeout_counts_from_each_turn_in_a_busy_tick_against_the_real_t3",
        "busy-tick",
        settings,
    )
    .await
    {
        turn_timeout(run, 7, EXACT).await;
    }
}

#[tokio::test]
async fn a_turn_timeout_counts_from_each_turn_in_a_busy_tick_against_the_stand_in() {
    let settings = Settings {
        turn: Duration::from_secs(3),
        max_attempts: 1,
        ..Settings::default()
    };
    turn_timeout(
        Run::sim("busy-tick", settings, SimConfig::realistic()).await,
        7,
        EXACT,
    )
    .await;
}

/// A failing attempt dispatched in the same busy tick as attempts that hang is recorded failed,
/// not timed out: its turn timeout counts from its own turn.
#[tokio::test]
async fn a_failing_attempt_in_a_busy_tick_is_recorded_failed_against_the_stand_in() {
    let settings = Settings {
        turn: Duration::from_secs(3),
        max_attempts: 1,
        ..Settings::default()
    };
    let mut run = Run::sim("busy-fail", settings, SimConfig::realistic()).await;
    for n in 0..6 {
        run.add_issue(80 + n, "Never ends. [sim:hang]");
    }
    run.add_issue(86, "Breaks late. [sim:fail] [sim:duration=2000]");
    run.start_afk();
    let jobs = run.final_jobs(7).await;
    run.kill_afk().await;
    let attempts = run.attempts().await;
    let failing = attempts
        .iter()
        .find(|a| a.branch == "afk/issue-86")
        .unwrap_or_else(|| panic!("no attempt for issue 86: {attempts:#?}"));
    assert_eq!(
        failing.state,
        afk_core::AttemptState::Failed,
        "{failing:#?}\n{jobs:#?}"
    );
    assert!(
        attempts
            .iter()
            .filter(|a| a.branch != "afk/issue-86")
            .all(|a| a.state == afk_core::AttemptState::TimedOut),
        "{attempts:#?}"
    );
}

/// A removed issue: its job is cancelled, its thread stopped and its agent gone.
async fn removed_issue(mut run: Run) {
    run.add_issue(20, "Long. [sim:hang]");
    run.start_afk();
    let jobs = run
        .jobs_until("a running job", |jobs| {
            jobs.first().is_some_and(|j| j["state"] == "running")
        })
        .await;
    let thread_id = jobs[0]["thread_id"].as_str().expect("a thread").to_owned();
    let thread = run
        .thread_until(&thread_id, "running", |t| t["latestTurn"]["state"] == "running")
        .await;
    let worktree = thread["worktreePath"].as_str().unwrap_or_default().to_owned();
    assert!(run.agent_running(&thread_id, &worktree), "{}", run.name());
    run.remove_issue(20);
    let jobs = run.final_jobs(1).await;
    assert_eq!(jobs[0]["state"], "cancelled", "{}: {jobs:#?}", run.name());
    run.thread_until(&thread_id, "stopped", |t| t["session"]["status"] == "stopped")
        .await;
    run.agent_gone(&thread_id, &worktree).await;
    run.assert_one_thread_per_attempt().await;
    run.kill_afk().await;
}

on_both!(
    a_removed_issue_is_cancelled_and_its_agent_stopped_against_the_real_t3,
    a_removed_issue_is_cancelled_and_its_agent_stopped_against_the_stand_in,
    removed_issue,
    "removed",
    Settings::default(),
    SimConfig::default()
);

/// An attempt ended while its session is still starting (`latestTurn` null): afk must not leave
/// its agent running.
async fn stopped_while_starting(mut run: Run) {
    run.add_issue(21, "Long. [sim:hang]");
    run.start_afk();
    let jobs = run
        .jobs_until("a running job", |jobs| {
            jobs.first().is_some_and(|j| j["state"] == "running")
        })
        .await;
    let thread_id = jobs[0]["thread_id"].as_str().expect("a thread").to_owned();
    let thread = run
        .thread_until(&thread_id, "starting", |t| state_of(t) == "null/starting")
        .await;
    run.remove_issue(21);
    let jobs = run.final_jobs(1).await;
    assert_eq!(jobs[0]["state"], "cancelled", "{}: {jobs:#?}", run.name());
    // Give T3's session start, which was in flight, time to bring an agent up (a slow one
    // takes seconds) before looking for it.
    let worktree = thread["worktreePath"].as_str().unwrap_or_default().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !run.agent_running(&thread_id, &worktree) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.agent_gone(&thread_id, &worktree).await;
    run.kill_afk().await;
}

#[tokio::test]
async fn an_attempt_stopped_while_its_session_starts_leaves_no_agent_against_the_real_t3() {
    let settings = Settings {
        poll: Duration::from_millis(100),
        ..Settings::default()
    };
    // An agent binary slow to start keeps T3's session start in flight for a while.
    let slow = Agent {
        start_delay: Duration::from_secs(3),
        ..agent()
    };
    if let Some(run) = Run::real_owned(
        "real_t3::an_attempt_stopped_while_its_session_starts_leaves_no_agent_against_the_real_t3",
        "starting",
        settings,
        Some(slow),
    )
    .await
    {
        stopped_while_starting(run).await;
    }
}

#[tokio::test]
async fn an_attempt_stopped_while_its_session_starts_leaves_no_agent_against_the_stand_in() {
    let settings = Settings {
        poll: Duration::from_millis(100),
        ..Settings::default()
    };
    let config = SimConfig {
        startup_delay: Duration::from_secs(2),
        ..SimConfig::realistic()
    };
    stopped_while_starting(Run::sim("starting", settings, config).await).await;
}

/// A person interrupts the thread in T3 (naming its turn, as T3's UI does): the job is
/// cancelled and never recorded as a success.
async fn person_interrupts(mut run: Run) {
    run.add_issue(22, "Long. [sim:hang]");
    run.start_afk();
    let jobs = run
        .jobs_until("a running job", |jobs| {
            jobs.first().is_some_and(|j| j["state"] == "running")
        })
        .await;
    let thread_id = jobs[0]["thread_id"].as_str().expect("a thread").to_owned();
    let thread = run
        .thread_until(&thread_id, "running", |t| t["latestTurn"]["state"] == "running")
        .await;
    run.t3_command(json!({
        "type": "thread.turn.interrupt", "commandId": uuid(), "threadId": thread_id,
        "turnId": thread["latestTurn"]["turnId"], "createdAt": now(),
    }))
    .await;
    let jobs = run.final_jobs(1).await;
    assert_eq!(
        jobs[0]["state"],
        "cancelled",
        "{}: an interrupted turn is not a success: {jobs:#?}",
        run.name()
    );
    run.kill_afk().await;
}

on_both!(
    a_person_interrupting_in_t3_cancels_the_job_with_push_against_the_real_t3,
    a_person_interrupting_in_t3_cancels_the_job_with_push_against_the_stand_in,
    person_interrupts,
    "interrupt-push",
    Settings::default(),
    SimConfig::realistic()
);

/// The open question of thread `id` as T3's detail shows it: its `requestId` and first question id.
async fn open_question(run: &Run, id: &str) -> (String, String) {
    let detail: Value = reqwest::Client::new()
        .get(format!("{}/api/orchestration/threads/{id}", run.t3_url()))
        .bearer_auth(run.token())
        .send()
        .await
        .expect("T3 answers")
        .json()
        .await
        .expect("the detail is JSON");
    let asked = detail["thread"]["activities"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .rev()
                .find(|a| a["kind"] == "user-input.requested")
                .cloned()
        })
        .unwrap_or_else(|| panic!("{}: thread {id} asks nothing: {detail}", run.name()));
    (
        asked["payload"]["requestId"]
            .as_str()
            .expect("a request id")
            .to_owned(),
        asked["payload"]["questions"][0]["id"]
            .as_str()
            .expect("a question id")
            .to_owned(),
    )
}

/// Waits until `afk jobs` shows the first job in `state`; returns its thread id.
async fn first_job_in(run: &Run, state: &str) -> String {
    let jobs = run
        .jobs_until(state, |jobs| jobs.first().is_some_and(|j| j["state"] == state))
        .await;
    jobs[0]["thread_id"].as_str().expect("a thread").to_owned()
}

/// The agent asks a person (`[sim:ask]`): the job waits in `needs_input` for longer than the
/// stall and turn timeouts without being stopped (on the real T3 the thread's `updatedAt` does
/// not move while it waits, and only the shell shows the wait), goes back to running once a
/// person answers with `thread.user-input.respond`, and succeeds with its first attempt. A
/// `kill -9` of afk while the thread waits changes none of that.
async fn asks_a_person(mut run: Run) {
    run.add_issue(30, "[sim:ask] Do it.");
    run.start_afk();
    let thread_id = first_job_in(&run, "needs_input").await;
    // Past the stall (2 s) and turn (4 s) timeouts, the job still waits.
    let until = Instant::now() + run.settings.turn + Duration::from_secs(2);
    while Instant::now() < until {
        let jobs = run.jobs().await;
        assert_eq!(
            jobs[0]["state"],
            "needs_input",
            "{}: {jobs:#?}
{}",
            run.name(),
            run.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // kill -9 while it waits: the restarted afk finds the wait where it was.
    let since = Ledger::open(&run.ledger_url())
        .await
        .expect("the ledger")
        .jobs()
        .await
        .expect("jobs")[0]
        .input_wait_since;
    run.kill_afk().await;
    run.start_afk();
    run.jobs_until("the restarted afk's ledger", |jobs| jobs.len() == 1)
        .await;
    tokio::time::sleep(run.settings.poll * 3).await; // a few of its ticks, to see it leaves the job be
    let job = Ledger::open(&run.ledger_url())
        .await
        .expect("the ledger")
        .jobs()
        .await
        .expect("jobs")[0]
        .clone();
    assert_eq!(
        (job.state, job.input_wait_since),
        (afk_core::JobState::NeedsInput, since),
        "{}: after kill -9 the wait goes on from where it began",
        run.name()
    );
    let (request, question) = open_question(&run, &thread_id).await;
    run.t3_command(json!({
        "type": "thread.user-input.respond", "commandId": uuid(), "threadId": thread_id,
        "requestId": request, "answers": { question: "yes" }, "createdAt": now(),
    }))
    .await;
    let jobs = run.final_jobs(1).await;
    assert_eq!(
        jobs[0]["state"],
        "succeeded",
        "{}: {jobs:#?}
{}",
        run.name(),
        run.log_tail(30)
    );
    assert_eq!(jobs[0]["attempts"], 1, "{}: {jobs:#?}", run.name());
    let thread = run.thread(&thread_id).await;
    assert_eq!(
        thread["latestTurn"]["state"],
        "completed",
        "{}: {thread}",
        run.name()
    );
    run.kill_afk().await;
}

fn waiting() -> Settings {
    Settings {
        stall: Duration::from_secs(2),
        turn: Duration::from_secs(4),
        max_attempts: 1,
        ..Settings::default()
    }
}

on_both!(
    a_question_waits_for_a_person_and_goes_on_once_answered_against_the_real_t3,
    a_question_waits_for_a_person_and_goes_on_once_answered_against_the_stand_in,
    asks_a_person,
    "asks",
    waiting(),
    SimConfig::realistic()
);

on_both!(
    a_question_waits_for_a_person_when_polling_against_the_real_t3,
    a_question_waits_for_a_person_when_polling_against_the_stand_in,
    asks_a_person,
    "asks-poll",
    Settings {
        push: false,
        poll: Duration::from_millis(500),
        ..waiting()
    },
    SimConfig::realistic()
);

/// Nobody answers within `[limits] answer_timeout`: afk stops the session (never an interrupt,
/// which on the real T3 would stop it delivering provider commands to every thread), the job
/// fails saying so, its agent is gone, and T3 still runs the next job's turn.
async fn nobody_answers(mut run: Run) {
    run.add_issue(31, "[sim:ask] Do it.");
    run.start_afk();
    let thread_id = first_job_in(&run, "needs_input").await;
    let jobs = run
        .jobs_until("a failed job", |jobs| {
            jobs.first().is_some_and(|j| j["state"] == "failed")
        })
        .await;
    let error = jobs[0]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("nobody answered"), "{}: {jobs:#?}", run.name());
    let thread = run
        .thread_until(&thread_id, "stopped", |t| t["session"]["status"] == "stopped")
        .await;
    let worktree = thread["worktreePath"].as_str().unwrap_or_default().to_owned();
    run.agent_gone(&thread_id, &worktree).await;
    run.add_issue(32, "Do it.");
    let jobs = run.final_jobs(2).await;
    let next = jobs.iter().find(|j| j["number"] == 32).expect("the next job");
    assert_eq!(
        next["state"],
        "succeeded",
        "{}: T3 still runs turns: {jobs:#?}",
        run.name()
    );
    run.kill_afk().await;
}

on_both!(
    nobody_answering_stops_the_session_and_t3_goes_on_against_the_real_t3,
    nobody_answering_stops_the_session_and_t3_goes_on_against_the_stand_in,
    nobody_answers,
    "unanswered",
    Settings {
        answer: Duration::from_secs(3),
        ..waiting()
    },
    SimConfig::realistic()
);

fn polling() -> Settings {
    Settings {
        push: false,
        poll: Duration::from_secs(5),
        ..Settings::default()
    }
}

on_both!(
    a_person_interrupting_in_t3_cancels_the_job_when_polling_against_the_real_t3,
    a_person_interrupting_in_t3_cancels_the_job_when_polling_against_the_stand_in,
    person_interrupts,
    "interrupt-poll",
    polling(),
    SimConfig::realistic()
);

/// A session that cannot start (the agent's binary is missing): the attempt fails at once, the
/// job's error is T3's reason (whole in `afk jobs --json`).
async fn failed_session_start(mut run: Run) {
    run.add_issue(23, "Start. [sim:start-fail]");
    run.start_afk();
    let started = Instant::now();
    let jobs = run.final_jobs(1).await;
    assert_eq!(jobs[0]["state"], "given_up", "{}: {jobs:#?}", run.name());
    assert_eq!(jobs[0]["attempts"], 1, "{}", run.name());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{}: failed at once, not after a stall timeout",
        run.name()
    );
    let error = jobs[0]["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("ProviderAdapterProcessError: Provider adapter process error (codex)"),
        "{}: {error}",
        run.name()
    );
    run.assert_one_thread_per_attempt().await;
    run.kill_afk().await;
}

fn one_attempt() -> Settings {
    Settings {
        max_attempts: 1,
        ..Settings::default()
    }
}

#[tokio::test]
async fn a_session_that_cannot_start_fails_the_attempt_at_once_against_the_real_t3() {
    if let Some(run) = Run::real_owned(
        "real_t3::a_session_that_cannot_start_fails_the_attempt_at_once_against_the_real_t3",
        "no-agent",
        one_attempt(),
        None,
    )
    .await
    {
        failed_session_start(run).await;
    }
}

#[tokio::test]
async fn a_session_that_cannot_start_fails_the_attempt_at_once_against_the_stand_in() {
    failed_session_start(Run::sim("no-agent", one_attempt(), SimConfig::default()).await).await;
}

/// T3's multi-kilobyte, multi-line `lastError` reaches afk's log by its first line only.
async fn long_error_logged_by_its_first_line(mut run: Run) {
    run.add_issue(24, "Start. [sim:start-fail]");
    run.start_afk();
    run.final_jobs(1).await;
    run.kill_afk().await;
    let log = lock(&run.log).clone();
    // The rest of T3's error: its stack frames and causes (a log message with newlines in it
    // spreads over several lines of afk's log).
    let stack = log
        .iter()
        .find(|line| line.trim_start().starts_with("at ") || line.contains("[cause]:"));
    assert!(
        stack.is_none(),
        "{}: T3's whole error in afk's log: {}",
        run.name(),
        log.join("\n")
    );
}

#[tokio::test]
async fn t3s_long_error_is_logged_by_its_first_line_against_the_stand_in() {
    long_error_logged_by_its_first_line(Run::sim("long-error", one_attempt(), SimConfig::default()).await)
        .await;
}

// ---------------------------------------------------------------------------------------------
// Crashes.

/// `kill -9` of `afk run` while the proxy holds (or cuts) the first request containing
/// `needle`, then `afk run` again: the job succeeds, with one attempt and one thread.
async fn killed_at(mut run: Run, proxy: &Proxy, needle: &str, action: TrapAction) {
    let trap = proxy.trap(needle, action);
    run.use_url(proxy.url());
    run.add_issue(30, "Do it. [sim:duration=300]");
    run.start_afk();
    tokio::time::timeout(Duration::from_secs(60), trap.sprung())
        .await
        .unwrap_or_else(|_| panic!("{}: afk never sent {needle}: {}", run.name(), run.log_tail(30)));
    run.kill_afk().await;
    run.start_afk();
    let jobs = run.final_jobs(1).await;
    run.kill_afk().await;
    assert_eq!(jobs[0]["state"], "succeeded", "{}: {jobs:#?}", run.name());
    assert_eq!(
        jobs[0]["attempts"],
        1,
        "{}: a crash must not cost an attempt: {jobs:#?}\n{:#?}\nafk's log:\n{}",
        run.name(),
        run.attempts().await,
        run.log_tail(60)
    );
    run.assert_one_thread_per_attempt().await;
}

/// Dispatch retries spaced as a user would (the defaults are 10 s apart) rather than a test's
/// 0.1 s.
fn crash_settings(dispatch: &'static str) -> Settings {
    Settings {
        dispatch,
        retry_initial: Duration::from_secs(1),
        retry_cap: Duration::from_secs(4),
        ..Settings::default()
    }
}

async fn killed_at_real(test: &str, name: &str, dispatch: &'static str, needle: &str, action: TrapAction) {
    let settings = crash_settings(dispatch);
    if let Some(run) = Run::real(test, name, settings).await {
        let proxy = Proxy::start(&run.t3_url()).await.expect("the proxy starts");
        killed_at(run, &proxy, needle, action).await;
    }
}

const BOOTSTRAP: &str = "\"type\":\"thread.turn.start\"";
const CREATE: &str = "\"type\":\"thread.create\"";

#[tokio::test]
async fn killed_before_a_bootstrap_reaches_the_real_t3() {
    killed_at_real(
        "real_t3::killed_before_a_bootstrap_reaches_the_real_t3",
        "kill-before-bootstrap",
        "ws-worktree",
        BOOTSTRAP,
        TrapAction::HoldRequest,
    )
    .await;
}

#[tokio::test]
async fn killed_mid_bootstrap_against_the_real_t3() {
    killed_at_real(
        "real_t3::killed_mid_bootstrap_against_the_real_t3",
        "kill-mid-bootstrap",
        "ws-worktree",
        BOOTSTRAP,
        TrapAction::CutAfterForwarding,
    )
    .await;
}

#[tokio::test]
async fn killed_after_the_real_t3_applied_a_bootstrap() {
    killed_at_real(
        "real_t3::killed_after_the_real_t3_applied_a_bootstrap",
        "kill-after-bootstrap",
        "ws-worktree",
        BOOTSTRAP,
        TrapAction::HoldReply,
    )
    .await;
}

#[tokio::test]
async fn killed_before_thread_create_reaches_the_real_t3() {
    killed_at_real(
        "real_t3::killed_before_thread_create_reaches_the_real_t3",
        "kill-before-create",
        "http",
        CREATE,
        TrapAction::HoldRequest,
    )
    .await;
}

#[tokio::test]
async fn killed_after_the_real_t3_applied_thread_create() {
    killed_at_real(
        "real_t3::killed_after_the_real_t3_applied_thread_create",
        "kill-after-create",
        "http",
        CREATE,
        TrapAction::HoldReply,
    )
    .await;
}

#[tokio::test]
async fn killed_before_a_turn_start_reaches_the_real_t3() {
    killed_at_real(
        "real_t3::killed_before_a_turn_start_reaches_the_real_t3",
        "kill-before-turn",
        "http",
        BOOTSTRAP,
        TrapAction::HoldRequest,
    )
    .await;
}

#[tokio::test]
async fn killed_after_the_real_t3_applied_a_turn_start() {
    killed_at_real(
        "real_t3::killed_after_the_real_t3_applied_a_turn_start",
        "kill-after-turn",
        "http",
        BOOTSTRAP,
        TrapAction::HoldReply,
    )
    .await;
}

#[tokio::test]
async fn killed_mid_bootstrap_against_the_stand_in() {
    let run = Run::sim(
        "kill-mid-bootstrap",
        crash_settings("ws-worktree"),
        SimConfig::realistic(),
    )
    .await;
    let proxy = Proxy::start(&run.t3_url()).await.expect("the proxy starts");
    killed_at(run, &proxy, BOOTSTRAP, TrapAction::CutAfterForwarding).await;
}

/// `kill -9` of `afk run` while T3's `git worktree add` runs for its bootstrap (a slow
/// post-checkout hook keeps it running on the real server; `worktree_add` on the stand-in): the
/// branch and its worktree exist, the thread T3 left half made does not know them, and T3
/// refuses to make the branch again. After the restart afk adopts the branch: the job succeeds
/// with its one attempt and one thread.
async fn killed_during_git_worktree_add(mut run: Run) {
    if let Backend::Real { project, .. } = &run.backend {
        let hook = project.workspace.join(".git/hooks/post-checkout");
        std::fs::write(&hook, "#!/bin/sh\nsleep 3\n").expect("the hook is written");
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("the hook is executable");
    }
    run.add_issue(32, "Do it. [sim:duration=300]");
    run.start_afk();
    // The attempt's branch is in the ledger before its bootstrap is sent; `kill -9` as soon as
    // T3's git has made it (afk's socket closes with it, which cuts the bootstrap off in T3).
    let deadline = Instant::now() + LIMIT;
    let branch = loop {
        if let Some(attempt) = run.attempts().await.first() {
            break attempt.branch.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{}: no attempt: {}",
            run.name(),
            run.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while !run.branch_made(&branch) {
        assert!(
            Instant::now() < deadline,
            "{}: T3 never made {branch}",
            run.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.kill_afk().await;
    run.start_afk();
    let jobs = run.final_jobs(1).await;
    run.kill_afk().await;
    assert_eq!(
        jobs[0]["state"],
        "succeeded",
        "{}: {jobs:#?}\n{}",
        run.name(),
        run.log_tail(40)
    );
    assert_eq!(
        jobs[0]["attempts"],
        1,
        "{}: a crash must not cost an attempt: {jobs:#?}",
        run.name()
    );
    assert!(
        lock(&run.log).iter().any(|line| line.contains("half made")),
        "{}: T3 left the thread half made and afk finished it: {}",
        run.name(),
        run.log_tail(40)
    );
    run.assert_one_thread_per_attempt().await;
}

#[tokio::test]
async fn killed_during_git_worktree_add_against_the_real_t3() {
    let test = "real_t3::killed_during_git_worktree_add_against_the_real_t3";
    if let Some(run) = Run::real(test, "kill-in-git", crash_settings("ws-worktree")).await {
        killed_during_git_worktree_add(run).await;
    }
}

#[tokio::test]
async fn killed_during_git_worktree_add_against_the_stand_in() {
    let config = SimConfig {
        worktree_add: Duration::from_secs(3),
        ..SimConfig::default()
    };
    let run = Run::sim("kill-in-git", crash_settings("ws-worktree"), config).await;
    killed_during_git_worktree_add(run).await;
}

// ---------------------------------------------------------------------------------------------
// Stopping.

/// afk stops an attempt whose agent is gone while T3 still shows its session up (T3
/// restarted): no agent may be started again for it.
async fn stop_after_restart(mut run: Run) {
    run.add_issue(40, "Long. [sim:hang]");
    run.start_afk();
    let jobs = run
        .jobs_until("a running job", |jobs| {
            jobs.first().is_some_and(|j| j["state"] == "running")
        })
        .await;
    let thread_id = jobs[0]["thread_id"].as_str().expect("a thread").to_owned();
    let thread = run
        .thread_until(&thread_id, "running", |t| t["latestTurn"]["state"] == "running")
        .await;
    let worktree = thread["worktreePath"].as_str().unwrap_or_default().to_owned();
    let starts = run.agent_starts(&thread_id, &worktree);
    match &run.backend {
        Backend::Real { t3, .. } => t3.restart().await.expect("T3 restarts"),
        Backend::Sim { sim, .. } => sim.lose_agents(),
    }
    run.remove_issue(40);
    let jobs = run.final_jobs(1).await;
    assert_eq!(jobs[0]["state"], "cancelled", "{}: {jobs:#?}", run.name());
    run.thread_until(&thread_id, "stopped", |t| t["session"]["status"] == "stopped")
        .await;
    run.kill_afk().await;
    assert_eq!(
        run.agent_starts(&thread_id, &worktree),
        starts,
        "{}: stopping the thread started its agent again",
        run.name()
    );
    run.agent_gone(&thread_id, &worktree).await;
}

#[tokio::test]
async fn stopping_a_thread_whose_agent_is_gone_starts_no_agent_against_the_real_t3() {
    if let Some(run) = Run::real_owned(
        "real_t3::stopping_a_thread_whose_agent_is_gone_starts_no_agent_against_the_real_t3",
        "restart",
        Settings::default(),
        Some(agent()),
    )
    .await
    {
        stop_after_restart(run).await;
    }
}

#[tokio::test]
async fn stopping_a_thread_whose_agent_is_gone_starts_no_agent_against_the_stand_in() {
    stop_after_restart(Run::sim("restart", Settings::default(), SimConfig::default()).await).await;
}

// ---------------------------------------------------------------------------------------------
// What `afk t3 snapshot` shows, and refused dispatches.

/// `afk t3 snapshot` against the stand-in; its stdout and stderr.
async fn t3_snapshot(run: &Run, json: bool) -> (String, String) {
    let mut command = Command::new(AFK);
    command
        .args(["t3", "snapshot", "--base-url", &run.t3_url(), "--token-file"])
        .arg(run.dir.path().join("t3-token"));
    if json {
        command.arg("--json");
    }
    let output = command.output().await.expect("afk t3 snapshot runs");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn afk_t3_snapshot_shows_a_session_that_could_not_start_as_failed() {
    let settings = Settings {
        instance: "claudeAgent",
        ..one_attempt()
    };
    let mut run = Run::sim("snapshot-start-fail", settings, SimConfig::default()).await;
    run.add_issue(50, "Start. [sim:start-fail]");
    run.start_afk();
    let jobs = run
        .jobs_until("a dispatched job", |jobs| {
            jobs.first().is_some_and(|j| j["thread_id"].is_string())
        })
        .await;
    let thread_id = jobs[0]["thread_id"].as_str().expect("a thread").to_owned();
    run.thread_until(&thread_id, "stopped", |t| t["session"]["status"] == "stopped")
        .await;
    run.kill_afk().await;
    let (table, _) = t3_snapshot(&run, false).await;
    let row = table
        .lines()
        .find(|l| l.contains(&thread_id))
        .unwrap_or_else(|| panic!("no row for {thread_id}: {table}"));
    assert!(row.contains("failed"), "{row}");
}

#[tokio::test]
async fn afk_t3_snapshot_shows_a_deleted_thread_as_deleted() {
    let run = Run::sim("snapshot-deleted", Settings::default(), SimConfig::default()).await;
    let thread_id = uuid();
    run.t3_command(json!({
        "type": "thread.create", "commandId": uuid(), "threadId": thread_id, "projectId": run.project(),
        "title": "deleted", "modelSelection": {"instanceId": "codex", "model": "gpt-5-codex"},
        "runtimeMode": "full-access", "interactionMode": "default", "branch": null, "worktreePath": null,
        "createdAt": now(),
    }))
    .await;
    run.t3_command(json!({"type": "thread.delete", "commandId": uuid(), "threadId": thread_id}))
        .await;
    let (table, _) = t3_snapshot(&run, false).await;
    let row = table
        .lines()
        .find(|l| l.contains(&thread_id))
        .unwrap_or_else(|| panic!("no row for {thread_id}: {table}"));
    assert!(row.contains("deleted") && !row.contains("lost"), "{row}");
}

#[tokio::test]
async fn afk_t3_snapshot_survives_a_closed_pipe() {
    let run = Run::sim("snapshot-pipe", Settings::default(), SimConfig::default()).await;
    for _ in 0..300 {
        run.t3_command(json!({
            "type": "thread.create", "commandId": uuid(), "threadId": uuid(), "projectId": run.project(),
            "title": "a thread with a long enough title to fill the pipe quickly", "modelSelection": {"instanceId": "codex", "model": "gpt-5-codex"},
            "runtimeMode": "full-access", "interactionMode": "default", "branch": null, "worktreePath": null,
            "createdAt": now(),
        }))
        .await;
    }
    let mut child = Command::new(AFK)
        .args([
            "t3",
            "snapshot",
            "--json",
            "--base-url",
            &run.t3_url(),
            "--token-file",
        ])
        .arg(run.dir.path().join("t3-token"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("afk t3 snapshot runs");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).await.expect("a first line");
    // `| head -1`: the reader goes away.
    drop(stdout);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("afk ends")
        .expect("afk's output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
}

/// Dispatch over `/ws` and over HTTP against the same share (30 %) of T3's internal failures:
/// neither gives up a job that would have succeeded.
async fn internal_failures(dispatch: &'static str) {
    let settings = Settings {
        dispatch,
        max_attempts: 1,
        max_dispatch_tries: 8,
        ..Settings::default()
    };
    let mut run = Run::sim(&format!("faults-{dispatch}"), settings, SimConfig::default()).await;
    if let Backend::Sim { sim, .. } = &run.backend {
        sim.set_faults(FaultPlan {
            error_rate: 0.3,
            ..FaultPlan::default()
        });
    }
    for n in 0..8 {
        run.add_issue(60 + n, "Do it. [sim:duration=100]");
    }
    run.start_afk();
    let jobs = run.final_jobs(8).await;
    run.kill_afk().await;
    let given_up: Vec<&Value> = jobs.iter().filter(|j| j["state"] != "succeeded").collect();
    assert!(given_up.is_empty(), "{dispatch}: {given_up:#?}");
}

#[tokio::test]
async fn internal_failures_over_http_are_retried() {
    internal_failures("http").await;
}

#[tokio::test]
async fn internal_failures_over_the_websocket_are_retried_as_over_http() {
    internal_failures("ws-worktree").await;
}

/// A follow-up turn (issue 16's pull request follow-through): a second `thread.turn.start` on a
/// thread whose turn completed works on the thread again, and the same command sent again (afk
/// after a crash) starts nothing more.
async fn follow_up_turn(mut run: Run) {
    use t3_client::{CommandId, MessageId, ReqwestTransport, T3Client, ThreadId};

    run.add_issue(31, "First turn. [sim:duration=200]");
    run.start_afk();
    let jobs = run.final_jobs(1).await;
    assert_eq!(jobs[0]["state"], "succeeded", "{}: {jobs:#?}", run.name());
    run.kill_afk().await;
    let thread_id = jobs[0]["thread_id"].as_str().expect("a thread").to_owned();
    let first = run.thread(&thread_id).await["latestTurn"]["turnId"].clone();
    let client = T3Client::new(
        &run.t3_url(),
        Arc::new(ReqwestTransport::default()),
        Arc::new(afk_secrets::LiteralProvider::new(run.token())),
    );
    let thread = ThreadId::new(thread_id.clone()).expect("a thread id");
    let (command, message) = (CommandId::generate(), MessageId::generate());
    let text = "A follow-up. [sim:duration=200]";
    client
        .follow_up(&thread, text, command.clone(), message.clone())
        .await
        .unwrap_or_else(|e| panic!("{}: a second turn on a finished thread: {e}", run.name()));
    // Sent again with the same ids, as afk does after a crash: accepted or refused, never a turn.
    let again = client.follow_up(&thread, text, command, message).await;
    let done = run
        .thread_until(&thread_id, "completed a second turn", |t| {
            t["latestTurn"]["turnId"] != first && t["latestTurn"]["state"] == "completed"
        })
        .await;
    let detail: Value = reqwest::Client::new()
        .get(format!("{}/api/orchestration/threads/{thread_id}", run.t3_url()))
        .bearer_auth(run.token())
        .send()
        .await
        .expect("T3 answers")
        .json()
        .await
        .expect("the thread's detail is JSON");
    let user_messages = detail["thread"]["messages"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "user").count());
    assert_eq!(
        user_messages,
        2,
        "{}: the first prompt and one follow-up (the resend answered {again:?}): {done}",
        run.name()
    );
}

on_both!(
    a_follow_up_turn_on_a_finished_thread_against_the_real_t3,
    a_follow_up_turn_on_a_finished_thread_against_the_stand_in,
    follow_up_turn,
    "follow-up",
    Settings::default(),
    SimConfig::default()
);
