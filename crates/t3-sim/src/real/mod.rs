//! The **real** T3 Code server for tests (feature `real-t3`): one `t3 serve` on a free loopback
//! port with a state dir, a git workspace and a project of its own, its codex provider pointed at
//! the simulated agent ([`crate::agent`]).
//!
//! The server is installed by `../shared/t3code/setup`, which prints its folder; tests find it in
//! `AFK_REAL_T3` ([`folder`]) and, when it is unset, print one `SKIP:` line and pass
//! ([`skip_unless_available`]). Real T3 takes about 10 s to start on this machine's two cores, so
//! a test file shares one server ([`shared`]) and gives each test a project (and git repository)
//! of its own ([`RealT3::add_project`]).
//!
//! Every wait is bounded and polls a condition: readiness is `GET /.well-known/t3/environment`
//! answering 200. The server runs in a process group of its own, killed on drop; a watchdog
//! process kills it too when the test process dies without dropping it (a shared server lives in
//! a `static`, which is never dropped), so no server outlives its tests.
//!
//! **What the real server does that `t3-api.md` does not say, or says otherwise** (T3 Code
//! 0.0.33, fork 45b7b4f, seen through this harness and `afk sim agent`; the stand-in models what
//! afk depends on, `tests/conformance.rs` checks it):
//! - the codex provider's instance id is `codex` and any model slug is accepted; T3's turn id is
//!   the agent's, its assistant message id `assistant:<the agent's item id>`;
//! - `latestTurn.startedAt` equals `requestedAt` (T3's time of receiving the turn start; for a
//!   bootstrap, also the thread's `createdAt`), not when the agent started;
//! - the shell stream's first chunk holds the snapshot alone; `synchronized` comes only after that
//!   chunk is acked, at the end of the next chunk, after the changes made meanwhile;
//! - an interrupt naming the running turn: `interrupted/running`, `interrupted/ready`, then
//!   `completed/ready` (`completed/stopped` only when a session stop follows, as afk sends one);
//!   an interrupt without a turn id, or naming another turn, interrupts the running turn all the
//!   same (T3 interrupts by session) and the turn reads `completed` without ever showing
//!   `interrupted`; an interrupt while the session still starts does nothing, the turn then runs;
//! - an interrupt and a session stop sent together may leave the session `ready` rather than
//!   `stopped` (a late provider event), though the agent is gone;
//! - an agent stays alive after its turn (session `ready`) until a session stop or a delete; a
//!   killed agent is not noticed (the session stays `ready`); after T3 restarts, sessions keep
//!   their status with no agent, and an **interrupt** for a thread whose session is not stopped
//!   starts its agent again (`thread/resume`), which stays; a session stop never starts one;
//! - commands for a deleted thread are accepted (T3's decider still finds it): deleting it again,
//!   interrupting it, stopping it; only a thread id never used is refused as missing;
//! - a client that disconnects mid-bootstrap leaves the thread with `session: null` too (not only
//!   no worktree and no turn); T3 creates the thread even if the client left before its request
//!   was handled; the bootstrap again without `createThread` finishes such a thread, unless the
//!   disconnect came after T3's `git worktree add` (its branch and worktree exist, the thread
//!   does not know them): then it fails with `git worktree add failed`;
//! - over `/ws` a refusal is `OrchestrationDispatchCommandError {message, cause}` with the
//!   decider's message `Orchestration command invariant failed (<type>): <detail>` and its error as
//!   the cause (`{name, message}`); a failed bootstrap step carries the step's whole Effect
//!   `Cause` (e.g. `GitCommandError`), its message `Git command failed in
//!   GitVcsDriver.createWorktree (<cwd>): git worktree add failed` for a branch that exists;
//! - two bootstraps into one checkout at once can fail: after `git worktree add`, T3 runs `git
//!   config branch.<branch>.gh-merge-base` in the checkout, and the two writes race for its
//!   `config.lock` (`Git command failed in GitVcsDriver.createWorktree.configureBaseRef`); the
//!   thread is deleted, its branch and worktree stay (seen with 8 at once);
//! - a setup script that fails to start does not fail the bootstrap: a `setup-script.failed`
//!   activity, and the turn goes on;
//! - a codex session that cannot start: the first line of `lastError` is `ProviderAdapterProcessError:
//!   Provider adapter process error (codex) for thread <id>: Failed to spawn Codex App Server
//!   process for command: <binary> app-server` (the `spawn … ENOENT` is four causes down), with a
//!   `provider.turn.start.failed` activity as for claudeAgent; the stream may or may not show
//!   `starting` in between (T3 coalesces changes);
//! - `t3 auth session issue --token-only` takes about 7 s and needs the state dir made by a first
//!   `serve`; a request sent while the server starts can go unanswered for good, so every request
//!   of this harness has a timeout;
//! - the agent's stderr lines become activities of the thread, so the agent keeps stderr quiet.

mod proxy;

pub use proxy::{Proxy, Trap, TrapAction};

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use serde_json::{json, Value};

/// The environment variable naming the folder `../shared/t3code/setup` printed.
pub const ENV: &str = "AFK_REAL_T3";

/// The environment variable the agent wrapper exports so that a test can find the agent
/// processes of one server ([`RealT3::agent_processes`]).
pub const OWNER_ENV: &str = "T3_SIM_AGENT_OWNER";

/// How long T3 may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long minting a token may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one HTTP request to T3 may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The folder of the installed real T3 (`AFK_REAL_T3`), when set and holding `bin/t3`.
pub fn folder() -> Option<PathBuf> {
    let folder = PathBuf::from(std::env::var_os(ENV)?);
    folder.join("bin/t3").is_file().then_some(folder)
}

/// True when the real T3 is available; otherwise prints one `SKIP:` line naming `test` and how
/// to run it, and returns false (the test then passes without doing anything).
pub fn skip_unless_available(test: &str) -> bool {
    if folder().is_some() {
        return true;
    }
    // Straight to the stream, not through eprintln!, which the test harness captures and hides
    // for a passing test: the skip must show in every run.
    let _ = writeln!(
        std::io::stderr(),
        "SKIP: {test}: {ENV} does not name an installed real T3 Code server (run ../shared/t3code/setup and export {ENV}=<the folder it prints>)"
    );
    false
}

/// The agent T3 runs as its codex binary.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The program, e.g. the `afk` binary.
    pub program: PathBuf,
    /// Its leading arguments, e.g. `["sim", "agent"]`; T3's own follow.
    pub args: Vec<String>,
    /// How long an unscripted turn works (`T3_SIM_AGENT_TURN_DURATION`).
    pub turn_duration: Duration,
    /// How long the agent takes to start before it answers T3 at all (a slow binary): T3's
    /// session start is in flight, the thread `starting`, for that long.
    pub start_delay: Duration,
}

impl Agent {
    /// `program args…` as the agent, with unscripted turns of 300 ms.
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Agent {
        Agent {
            program: program.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            turn_duration: Duration::from_millis(300),
            start_delay: Duration::ZERO,
        }
    }
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct Options {
    /// The agent; `None` points the codex provider at a binary that does not exist, so that
    /// every session start fails.
    pub agent: Option<Agent>,
}

/// One agent process of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProcess {
    /// Its pid.
    pub pid: u32,
    /// Its working directory (the thread's worktree).
    pub cwd: PathBuf,
}

/// A running real T3 Code server. Dropping it kills the server and its agents.
#[derive(Debug)]
pub struct RealT3 {
    folder: PathBuf,
    root: tempfile::TempDir,
    state: PathBuf,
    url: String,
    token: String,
    owner: String,
    server: Mutex<Child>,
    /// Held open for the watchdogs: when this process dies, the pipes close and each watchdog
    /// kills the server's process group it was started for.
    watchdogs: Mutex<Vec<ChildStdin>>,
    pgid: AtomicI32,
    port: u16,
    workspace: PathBuf,
}

/// A project made by [`RealT3::add_project`]: a git repository with one commit on `main`.
#[derive(Debug, Clone)]
pub struct RealProject {
    /// Its T3 project id.
    pub id: String,
    /// Its workspace root (the repository's checkout).
    pub workspace: PathBuf,
}

static SHARED: tokio::sync::OnceCell<RealT3> = tokio::sync::OnceCell::const_new();

/// The server this test process shares between its tests, started with `options` by the first
/// caller; `None` (after a `SKIP:` line naming `test`) when the real T3 is not available. Panics
/// when it cannot start: that is a failed test, not a skip.
pub async fn shared(test: &str, options: impl FnOnce() -> Options) -> Option<&'static RealT3> {
    if !skip_unless_available(test) {
        return None;
    }
    let server = SHARED
        .get_or_try_init(|| RealT3::start(options()))
        .await
        .unwrap_or_else(|e| panic!("the real T3 did not start: {e:#}"));
    Some(server)
}

impl RealT3 {
    /// Starts a server: its own state dir, a workspace repository, `settings.json` pointing the
    /// codex provider at the agent, `t3 serve` on a free port until it answers, a token with the
    /// orchestration scopes. Fails (with the server's log) when any step does, within a bound.
    pub async fn start(options: Options) -> anyhow::Result<RealT3> {
        let folder = folder().ok_or_else(|| anyhow!("{ENV} does not name an installed real T3"))?;
        let root = tempfile::Builder::new()
            .prefix("afk-real-t3-")
            .tempdir()
            .context("cannot make a temporary folder")?;
        let state = root.path().join("state");
        let workspace = root.path().join("home");
        std::fs::create_dir_all(state.join("userdata"))?;
        init_repository(&workspace)?;
        let owner = uuid::Uuid::new_v4().simple().to_string();
        let binary = match &options.agent {
            Some(agent) => write_wrapper(root.path(), agent, &owner)?,
            None => root.path().join("no-such-codex"),
        };
        let settings = json!({ "providers": { "codex": { "enabled": true, "binaryPath": binary } } });
        std::fs::write(
            state.join("userdata/settings.json"),
            serde_json::to_vec_pretty(&settings)?,
        )?;
        let port = free_port()?;
        let (server, watchdog) = spawn_server(&folder, &state, &workspace, port, root.path())?;
        let pgid = i32::try_from(server.id()).context("a pid out of range")?;
        let mut t3 = RealT3 {
            folder,
            root,
            state,
            url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            owner,
            server: Mutex::new(server),
            watchdogs: Mutex::new(vec![watchdog]),
            pgid: AtomicI32::new(pgid),
            port,
            workspace,
        };
        t3.wait_ready().await?;
        t3.token = t3.mint_token().await?;
        Ok(t3)
    }

    /// Kills the server (and with it every agent it runs) and starts it again on the same port
    /// and state, as when the machine running T3 restarts; returns once it answers. Threads keep
    /// the session status they had, though no agent runs for them any more.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.kill();
        let (server, watchdog) = spawn_server(
            &self.folder,
            &self.state,
            &self.workspace,
            self.port,
            self.root.path(),
        )?;
        let pgid = i32::try_from(server.id()).context("a pid out of range")?;
        self.pgid.store(pgid, Ordering::SeqCst);
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = server;
        self.watchdogs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(watchdog);
        self.wait_ready().await
    }

    /// How many times T3 started an agent whose working directory is `dir` or below it (the
    /// agent wrapper writes one line per start).
    pub fn agent_starts_in(&self, dir: &Path) -> usize {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        std::fs::read_to_string(self.root.path().join("agent-starts.log"))
            .unwrap_or_default()
            .lines()
            .filter(|line| Path::new(line).starts_with(&dir))
            .count()
    }

    /// Its base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its WebSocket RPC URL.
    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.url.replacen("http://", "ws://", 1))
    }

    /// A bearer token with the orchestration scopes.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Its state dir (`userdata/state.sqlite`, `worktrees/<repo>/<branch>`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// Where T3 adds the worktrees of the repository at `workspace`.
    pub fn worktrees_of(&self, workspace: &Path) -> PathBuf {
        let repo = workspace.file_name().map(PathBuf::from).unwrap_or_default();
        self.state.join("worktrees").join(repo)
    }

    /// The server's output so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("t3.log")).unwrap_or_default()
    }

    /// The last `lines` lines of the server's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The folder of the installed T3.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Makes a git repository `name` (one commit on `main`) and a T3 project `id` for it.
    pub async fn add_project(&self, id: &str, name: &str) -> anyhow::Result<RealProject> {
        let workspace = self.root.path().join("repos").join(name);
        init_repository(&workspace)?;
        let command = json!({
            "type": "project.create",
            "commandId": uuid::Uuid::new_v4().to_string(),
            "projectId": id,
            "title": name,
            "workspaceRoot": workspace,
            "createdAt": chrono_now(),
        });
        self.dispatch(&command)
            .await
            .with_context(|| format!("project.create {id}"))?;
        Ok(RealProject {
            id: id.to_owned(),
            workspace,
        })
    }

    /// POSTs one client command; the reply's JSON, or an error with the status and body.
    pub async fn dispatch(&self, command: &Value) -> anyhow::Result<Value> {
        let (status, body) = self
            .request(
                reqwest::Method::POST,
                "/api/orchestration/dispatch",
                Some(command),
            )
            .await?;
        if status != 200 {
            bail!("{status}: {body}");
        }
        Ok(body)
    }

    /// One authenticated request; the status and the JSON body (`Null` when not JSON).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        // A client per request: tests run on runtimes of their own, and a pooled connection
        // belongs to the runtime that opened it.
        let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        let mut request = client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = request
            .send()
            .await
            .with_context(|| format!("{path}: no reply"))?;
        let status = reply.status().as_u16();
        let bytes = reply.bytes().await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// The processes T3 runs as this server's agents (app-server sessions and health probes),
    /// with their working directories.
    pub fn agent_processes(&self) -> Vec<AgentProcess> {
        let marker = format!("{OWNER_ENV}={}", self.owner);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker.as_bytes()))
            })
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmd| cmd.split(|b| *b == 0).any(|arg| arg == b"app-server"))
            })
            .filter_map(|pid| {
                let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
                Some(AgentProcess { pid, cwd })
            })
            .collect()
    }

    /// The agent processes working in `dir` or below it.
    pub fn agents_in(&self, dir: &Path) -> Vec<AgentProcess> {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        self.agent_processes()
            .into_iter()
            .filter(|p| p.cwd.starts_with(&dir))
            .collect()
    }

    /// Polls the environment endpoint until it answers 200; fails when the server exits or the
    /// bound passes.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        loop {
            if let Some(status) = self.server_exit()? {
                bail!(
                    "t3 serve exited ({status}) before answering:\n{}",
                    self.log_tail(40)
                );
            }
            let answer = client
                .get(format!("{}/.well-known/t3/environment", self.url))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "t3 serve did not answer within {START_TIMEOUT:?}:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn server_exit(&self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let mut server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        Ok(server.try_wait()?)
    }

    /// `t3 auth session issue --base-dir STATE --token-only`: its last line.
    async fn mint_token(&self) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(self.folder.join("bin/t3"))
            .args(["auth", "session", "issue", "--base-dir"])
            .arg(&self.state)
            .arg("--token-only")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(TOKEN_TIMEOUT, output)
            .await
            .map_err(|_| anyhow!("t3 auth session issue took over {TOKEN_TIMEOUT:?}"))??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let token = stdout.lines().map(str::trim).rfind(|l| !l.is_empty());
        match token {
            Some(token) if output.status.success() => Ok(token.to_owned()),
            _ => bail!(
                "t3 auth session issue failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
    }
}

impl Drop for RealT3 {
    /// Kills the server's process group and every agent it started, and reaps the server.
    fn drop(&mut self) {
        self.kill();
    }
}

impl RealT3 {
    /// Kills the server's process group and every agent it started, and reaps the server.
    fn kill(&self) {
        let pgid = self.pgid.load(Ordering::SeqCst);
        // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        for agent in self.agent_processes() {
            if let Ok(pid) = i32::try_from(agent.pid) {
                // SAFETY: as above, for one process.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let mut server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        let _ = server.wait();
    }
}

/// Starts `t3 serve` in a process group of its own, its output appended to `dir/t3.log`, and a
/// watchdog that kills that group and removes `dir` when this process dies (the returned pipe
/// closes then). The agents T3 runs end with it: their stdin is T3's socket.
fn spawn_server(
    folder: &Path,
    state: &Path,
    workspace: &Path,
    port: u16,
    dir: &Path,
) -> anyhow::Result<(Child, ChildStdin)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("t3.log"))?;
    let server = Command::new(folder.join("bin/t3"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--base-dir",
        ])
        .arg(state)
        .arg(workspace)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot run t3 serve")?;
    // dash's `kill` takes no `--`: `-PGID` alone names the group. The folder goes too, so that a
    // shared server (never dropped) leaves nothing behind.
    let mut watchdog = Command::new("sh")
        .args([
            "-c",
            "read _ignored; kill -KILL -\"$1\" 2>/dev/null; sleep 1; rm -rf \"$2\"",
            "t3-watchdog",
        ])
        .arg(server.id().to_string())
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the watchdog")?;
    let pipe = watchdog.stdin.take().context("the watchdog's stdin")?;
    Ok((server, pipe))
}

/// `git init` at `path` with one commit on `main`.
fn init_repository(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::write(
        path.join("README.md"),
        "# A repository for tests against the real T3\n",
    )?;
    git(path, &["init", "--quiet", "-b", "main"])?;
    git(path, &["add", "README.md"])?;
    git(
        path,
        &[
            "-c",
            "user.name=afk tests",
            "-c",
            "user.email=afk-tests@localhost",
            "commit",
            "--quiet",
            "-m",
            "initial commit",
        ],
    )?;
    Ok(())
}

/// Runs `git ARGS` in `dir`; its stdout, or an error with git's message.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .context("cannot run git")?;
    if !output.status.success() {
        bail!(
            "git {} in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The script T3 runs as codex: marks its processes as this server's, then execs the agent.
fn write_wrapper(dir: &Path, agent: &Agent, owner: &str) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut command = quote(&agent.program.display().to_string());
    for arg in &agent.args {
        command.push(' ');
        command.push_str(&quote(arg));
    }
    let path = dir.join("codex");
    let mut file = std::fs::File::create(&path)?;
    writeln!(file, "#!/bin/sh")?;
    writeln!(
        file,
        "# The simulated agent, run by the real T3 as its codex binary."
    )?;
    writeln!(file, "export {OWNER_ENV}={owner}")?;
    writeln!(
        file,
        "pwd >> '{}' 2>/dev/null",
        dir.join("agent-starts.log")
            .display()
            .to_string()
            .replace('\'', "")
    )?;
    writeln!(
        file,
        "export T3_SIM_AGENT_TURN_DURATION={}ms",
        agent.turn_duration.as_millis()
    )?;
    if !agent.start_delay.is_zero() {
        writeln!(file, "sleep {:.3}", agent.start_delay.as_secs_f64())?;
    }
    writeln!(file, "exec {command} \"$@\"")?;
    drop(file);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// A port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Now, as T3 writes times.
fn chrono_now() -> String {
    t3_client::wire::Timestamp::now().to_iso()
}
