//! afk against the seed's Python client and against the physical floor, side by side in one run
//! (issue #7). Prints ONE Markdown table on stdout (progress on stderr); `bench/run` builds
//! everything, prepares the Python side and runs this.
//!
//! Run with `cargo bench -p afk --bench compare`. Sizes default to 100, 1,000 and 10,000 threads;
//! `AFK_COMPARE_SIZES=100,1000` picks others. The seed's side needs a Python with httpx:
//! `AFK_BENCH_PYTHON` (default `$HOME/.cache/afk-bench-venv/bin/python`, which `bench/run`
//! creates); without it the seed's columns stay empty.
//!
//! Everything runs against the T3 stand-in started as its own process (`afk sim`), so that this
//! process's CPU time is afk's alone. For each size N:
//!
//! - **watcher tick**: N issues are queued and dispatched by afk's own control plane (local folder,
//!   `[sim:hang]` turns that never end), then, interleaved round by round so that a shared
//!   machine's load falls on all alike: a quiet watch-only `App::tick` (snapshot GET +
//!   decode, the watcher's diff against the ledger, stops, settle, resume, dispatch; each is checked
//!   to record nothing); the seed's `T3Client.snapshot()` + per-thread derivation in Python; and
//!   the floor, a bare hyper GET of the same snapshot parsed into `IgnoredAny`. Also timed alone:
//!   `T3Client::snapshot`, `Ledger::live_attempts` (the watcher's read today) and
//!   `Ledger::watched_attempts` (the slim read). CPU time is this process's (`getrusage`) for afk,
//!   and `process_time` for Python.
//! - **peak memory**: the real `afk run` binary watching the same fleet (watch only), VmHWM from
//!   `/proc/PID/status` after it has ticked for a few seconds; against the Python driver's peak
//!   RSS after its snapshot rounds (`ru_maxrss`). `AFK_COMPARE_MEMORY_RUNS=N` measures each peak N
//!   times, interleaved (the median in the table); `AFK_COMPARE_MEMORY_BINS=name=path,...` also
//!   measures other `afk` builds on the same fleet (stderr only).
//! - **snapshot decode**: a read model of N threads in T3's real shapes (generated, about 950
//!   bytes per thread), decoded by `T3Client::snapshot` over an in-memory transport (afk's typed
//!   structs, exactly as a tick decodes), by Python's `json.loads` (the seed's `resp.json()`), and
//!   by `serde_json` into `IgnoredAny` (the parse floor) and into a `Value` tree (in the notes).
//!
//! Then **dispatch**, against a fresh stand-in: `T3Client::dispatch` (the two POSTs, as `afk run`
//! sends them: reqwest, bearer re-read from its file) against the seed's `T3Client.dispatch` and
//! against two bare hyper POSTs of the very bodies afk sends, sequential latency (median, p99),
//! then the time per dispatch with 1, 8 and 64 in flight (the seed is sequential: its 1 only).
//!
//! Medians throughout; ratios are the claim, since the machine is shared. The run takes about
//! three minutes with the default sizes.

#[path = "../../t3-client/benches/support/read_model.rs"]
mod shapes;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use afk::app::App;
use afk::config::{Config, LocalSourceConfig};
use afk::source::{local, SourceIssue};
use afk_core::{IssueKey, Priority, Repo};
use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use t3_client::preamble::STANDING_RULES;
use t3_client::transport::{Request, Response};
use t3_client::{T3Client, ThreadState, Transport, TransportError};

const TOKEN: &str = "bench-operate-token-7c1e";
/// Repositories and their T3 projects.
const REPOS: [(&str, &str); 2] = [("acme/api", "proj-api"), ("acme/web", "proj-web")];
/// A paragraph of a typical bug report; a prompt repeats it to about 1.5 KB.
const PARAGRAPH: &str = "When a request to /api/orders carries an empty cursor the handler returns \
    500 instead of the first page. Steps: call GET /api/orders?cursor= with a valid token. Expected: \
    the first page, as without the parameter. Actual: a stack trace in the logs.\n\n";
/// Untimed rounds first, to warm connections, caches and the allocator.
const WARM_UP: usize = 2;
const MIN_ROUNDS: usize = 5;
const MAX_ROUNDS: usize = 15;
/// Roughly how long the timed rounds of one section may take.
const SECTION_BUDGET: Duration = Duration::from_secs(12);
/// How long `afk run` watches before its peak memory is read.
const RUN_FOR: Duration = Duration::from_secs(6);

type Hyper = Client<HttpConnector, Full<Bytes>>;

fn main() {
    let sizes = sizes();
    let runtime = support::runtime();
    let mut table = Table::default();
    for &n in &sizes {
        eprintln!("compare: N={n}");
        runtime.block_on(fleet(n, &mut table));
    }
    if !memory_only() {
        eprintln!("compare: dispatch");
        runtime.block_on(dispatch(&mut table));
    }
    table.print();
}

/// The sizes from `AFK_COMPARE_SIZES` (comma-separated), else 100, 1,000 and 10,000.
fn sizes() -> Vec<usize> {
    let parsed: Vec<usize> = std::env::var("AFK_COMPARE_SIZES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .filter(|&n| n > 0)
        .collect();
    if parsed.is_empty() {
        vec![100, 1_000, 10_000]
    } else {
        parsed
    }
}

// ---- the table ------------------------------------------------------------------------------

/// What a row's numbers are.
#[derive(Clone, Copy)]
enum Unit {
    Time,
    Bytes,
}

/// What a row must show to meet its target.
#[derive(Clone, Copy)]
enum Target {
    None,
    /// afk / floor at most this.
    Floor(f64),
    /// afk / seed at most this.
    Seed(f64),
    /// afk below this many bytes.
    Below(f64),
}

struct Row {
    scenario: String,
    size: String,
    afk: Option<f64>,
    seed: Option<f64>,
    floor: Option<f64>,
    unit: Unit,
    target: Target,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Table {
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        scenario: &str,
        size: impl ToString,
        afk: Option<f64>,
        seed: Option<f64>,
        floor: Option<f64>,
        unit: Unit,
        target: Target,
    ) {
        self.rows.push(Row {
            scenario: scenario.to_owned(),
            size: size.to_string(),
            afk,
            seed,
            floor,
            unit,
            target,
        });
    }

    fn note(&mut self, note: String) {
        eprintln!("compare: {note}");
        self.notes.push(note);
    }

    fn print(&self) {
        println!("| scenario | size | afk median | seed median | floor median | afk/seed | afk/floor | target | met? |");
        println!("|---|---:|---:|---:|---:|---:|---:|---|---|");
        let mut order: Vec<&str> = Vec::new();
        for row in &self.rows {
            if !order.contains(&row.scenario.as_str()) {
                order.push(&row.scenario);
            }
        }
        for scenario in order {
            for row in self.rows.iter().filter(|r| r.scenario == scenario) {
                let show = |v: Option<f64>| v.map_or("—".to_string(), |v| human(v, row.unit));
                let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                    _ => None,
                };
                let to_seed = ratio(row.afk, row.seed);
                let to_floor = ratio(row.afk, row.floor);
                let (target, met) = match row.target {
                    Target::None => ("—".to_string(), None),
                    Target::Floor(x) => (format!("afk/floor ≤ {x}"), to_floor.map(|r| r <= x)),
                    Target::Seed(x) => (format!("afk/seed ≤ {x}"), to_seed.map(|r| r <= x)),
                    Target::Below(x) => (format!("< {}", human(x, Unit::Bytes)), row.afk.map(|a| a < x)),
                };
                let fmt_ratio = |r: Option<f64>| r.map_or("—".to_string(), |r| format!("{r:.3}"));
                let met = match met {
                    None => "—",
                    Some(true) => "yes",
                    Some(false) => "**no**",
                };
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    row.scenario,
                    row.size,
                    show(row.afk),
                    show(row.seed),
                    show(row.floor),
                    fmt_ratio(to_seed),
                    fmt_ratio(to_floor),
                    target,
                    met
                );
            }
        }
        if !self.notes.is_empty() {
            println!();
            for note in &self.notes {
                println!("- {note}");
            }
        }
    }
}

/// A time in seconds or a size in bytes, with a unit that keeps three significant digits or so.
fn human(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Time => support::human_secs(value),
        Unit::Bytes => format!("{:.1} MB", value / (1024.0 * 1024.0)),
    }
}

fn median(samples: &[f64]) -> Option<f64> {
    quantile(samples, 0.5)
}

/// The `q` quantile (nearest rank) of `samples`.
fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Samples of several contestants, taken round by round.
struct Rounds {
    samples: Vec<Vec<f64>>,
    started: Instant,
    round: usize,
}

impl Rounds {
    fn new(contestants: usize) -> Self {
        Self {
            samples: vec![Vec::new(); contestants],
            started: Instant::now(),
            round: 0,
        }
    }

    /// True while another round is wanted: the warm-up, then until the budget is spent (within
    /// `MIN_ROUNDS..=MAX_ROUNDS` timed rounds).
    fn next(&mut self) -> bool {
        if self.round == WARM_UP {
            self.started = Instant::now();
        }
        let timed = self.round.saturating_sub(WARM_UP);
        self.round += 1;
        timed < MIN_ROUNDS || (timed < MAX_ROUNDS && self.started.elapsed() < SECTION_BUDGET)
    }

    /// Keeps `value` for contestant `k`, unless this is a warm-up round.
    fn push(&mut self, k: usize, value: f64) {
        if self.round > WARM_UP {
            self.samples[k].push(value);
        }
    }

    fn median(&self, k: usize) -> Option<f64> {
        median(&self.samples[k])
    }
}

/// This process's CPU time so far (user + system, every thread).
fn cpu_time() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

// ---- the processes: the stand-in, the seed's driver, afk run --------------------------------

/// The afk binary of this build (`afk sim` and `afk run`).
const AFK: &str = env!("CARGO_BIN_EXE_afk");

/// A process this bench started; killed by its id when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The T3 stand-in as its own process (`afk sim`), turns lasting a day.
struct Sim {
    url: String,
    _process: Process,
}

impl Sim {
    fn start() -> Sim {
        let mut command = Command::new(AFK);
        command
            .args([
                "sim",
                "--listen",
                "127.0.0.1:0",
                "--turn-duration",
                "24h",
                "--seed",
                "1",
            ])
            .arg("--token")
            .arg(format!("{TOKEN}=orchestration:read,orchestration:operate"))
            .env("AFK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (repo, project) in REPOS {
            command.arg("--project").arg(format!("{project}=/srv/{repo}"));
        }
        let mut child = command.spawn().expect("afk sim starts");
        let stdout = child.stdout.take().expect("its stdout");
        let mut url = String::new();
        BufReader::new(stdout)
            .read_line(&mut url)
            .expect("afk sim prints its URL");
        let url = url.trim().to_owned();
        assert!(url.starts_with("http://"), "afk sim printed {url:?}");
        Sim {
            url,
            _process: Process(child),
        }
    }
}

/// The seed's side: `bench/seed_driver.py`, one JSON request and reply per line.
struct Seed {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _process: Process,
}

impl Seed {
    /// The driver against the stand-in at `url`, or `None` (said on stderr) without a Python
    /// that has httpx.
    fn start(url: &str) -> Option<Seed> {
        let python = std::env::var("AFK_BENCH_PYTHON").unwrap_or_else(|_| {
            format!(
                "{}/.cache/afk-bench-venv/bin/python",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/seed_driver.py");
        let mut command = Command::new(&python);
        command
            .arg(&driver)
            .arg("--url")
            .arg(url)
            .env("AFK_BENCH_T3_TOKEN", TOKEN)
            .env("AFK_BENCH_PREAMBLE", STANDING_RULES)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (repo, project) in REPOS {
            command.arg("--project").arg(format!("{repo}={project}"));
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                eprintln!("compare: no seed side ({python}: {error}); run bench/run to set it up");
                return None;
            }
        };
        let stdin = child.stdin.take().expect("its stdin");
        let stdout = BufReader::new(child.stdout.take().expect("its stdout"));
        let mut seed = Seed {
            stdin,
            stdout,
            _process: Process(child),
        };
        let hello = seed.read();
        if hello.get("ready") != Some(&Value::Bool(true)) {
            eprintln!("compare: the seed's driver did not start: {hello}");
            return None;
        }
        Some(seed)
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// Sends `request` and waits for the reply, without holding up the runtime's other tasks.
    fn call(&mut self, request: Value) -> Value {
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{request}").expect("the driver reads its stdin");
            self.stdin.flush().expect("the driver reads its stdin");
            let reply = self.read();
            assert!(
                reply.get("error").is_none() && !reply.is_null(),
                "the seed's driver failed on {request}: {reply}"
            );
            reply
        })
    }

    fn secs(reply: &Value, key: &str) -> f64 {
        reply.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
    }
}

/// Watches the fleet with the real `afk run` for `RUN_FOR`, then returns its peak resident memory
/// (VmHWM) in bytes.
///
/// With `AFK_COMPARE_PROFILE=DIR`, `afk run` runs under `heaptrack -o DIR/...` instead (its
/// figures are heaptrack's then, not afk's: for profiling, not for the table).
fn afk_run_peak_memory(afk: &Path, config_file: &Path) -> Option<f64> {
    let profile = std::env::var("AFK_COMPARE_PROFILE").ok();
    let mut command = match &profile {
        Some(dir) => {
            let stem = config_file
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let mut command = Command::new("heaptrack");
            command.arg("-o").arg(Path::new(dir).join(stem)).arg(afk);
            // Its own process group, so that Ctrl-C reaches afk and heaptrack alike.
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            command
        }
        None => Command::new(afk),
    };
    let mut child = command
        .args(["run", "--config"])
        .arg(config_file)
        .env("AFK_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("afk run starts");
    let pid = child.id();
    let stderr = child.stderr.take().expect("its stderr");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // Its log, read on a thread of its own: the first line saying T3 is reachable comes after its
    // first tick's snapshot.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("is reachable") || line.contains("following T3's shell stream") {
                let _ = ready_tx.send(());
            }
            if line.contains("ERROR")
                || line.contains(" -> ")
                || std::env::var_os("AFK_COMPARE_VERBOSE").is_some()
            {
                eprintln!("compare: afk run: {line}");
            }
        }
    });
    let process = Process(child);
    if ready_rx.recv_timeout(Duration::from_secs(120)).is_err() {
        eprintln!("compare: afk run did not reach T3 within 120 s");
        return None;
    }
    std::thread::sleep(RUN_FOR);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    if profile.is_some() {
        // Ctrl-C to the group heaptrack and afk run in, then give heaptrack a minute to write.
        let group = -i32::try_from(pid).expect("a pid");
        // SAFETY: kill(2) with a negative pid signals the process group this bench made above.
        unsafe { libc::kill(group, libc::SIGINT) };
        let mut process = process;
        let deadline = Instant::now() + Duration::from_secs(60);
        while process.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        // SAFETY: as above; whatever of the group is still running is stopped.
        unsafe { libc::kill(group, libc::SIGKILL) };
        return None;
    }
    drop(process);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb * 1024.0)
    };
    // What the resident memory is made of at the end (the peak itself is not broken down by the
    // kernel): the heap and stacks (anonymous) against the binary and libraries (file).
    let mb = |name: &str| field(name).map_or("-".to_owned(), |b| format!("{:.1} MB", b / 1048576.0));
    eprintln!(
        "compare: afk run ended with VmRSS {} (RssAnon {}, RssFile {}), {} threads",
        mb("VmRSS:"),
        mb("RssAnon:"),
        mb("RssFile:"),
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .unwrap_or("?")
            .trim()
    );
    field("VmHWM:")
}

// ---- the floor ------------------------------------------------------------------------------

fn hyper_client() -> Hyper {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One bare request with hyper; returns the body.
async fn bare(client: &Hyper, method: &str, url: &str, body: Bytes) -> Bytes {
    let request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("a request");
    let reply = client.request(request).await.expect("the stand-in answers");
    assert!(reply.status().is_success(), "{method} {url}: {}", reply.status());
    reply
        .into_body()
        .collect()
        .await
        .expect("the whole body")
        .to_bytes()
}

// ---- watching N threads ---------------------------------------------------------------------

/// The config of a fleet of `n` on `sim`, from a TOML file as `afk run` reads it (so that the
/// bench depends on the file format only). The stand-in's HTTP API only: threads are started with
/// the seed's two POSTs (`dispatch = "http"`, a worktree path per issue) and watched by polling
/// the snapshot (`push = false`, no shell stream).
fn config_for(sim: &Sim, dir: &Path, n: usize) -> Config {
    let token_file = dir.join("t3-token");
    std::fs::write(&token_file, TOKEN).expect("the token file");
    let mut text = format!(
        "[t3]\nurl = \"{}\"\ntoken_file = \"{}\"\nrequest_timeout = \"120s\"\n\n[t3.projects]\n",
        sim.url,
        token_file.display()
    );
    for (repo, project) in REPOS {
        // The seed's two POSTs, each thread in a path of its own so that they may run side by side.
        text.push_str(&format!(
            "\"{repo}\" = {{ project = \"{project}\", dispatch = \"http\", \
             worktree_path = \"/srv/worktrees/{{name}}/{{issue}}\" }}\n"
        ));
    }
    // Nothing may time out or stall while the bench runs, however slow the machine. `afk run`
    // serves its status surface as it would, on a free port: 8787 may be taken on a shared machine.
    text.push_str(&format!(
        "\n[ledger]\nurl = \"sqlite://{}\"\n\n[limits]\nmax_concurrent = {n}\nper_repo = {n}\n\n\
         [watch]\npoll_interval = \"250ms\"\nstall_timeout = \"24h\"\nturn_timeout = \"24h\"\npush = false\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("afk.db").display()
    ));
    let path = dir.join("afk-run.toml");
    std::fs::write(&path, &text).expect("the config file");
    let mut config = Config::load_from_env(Some(&path)).expect("the config loads");
    // Several control planes are built side by side: none of them serves the status surface.
    config.http.listen = None;
    config.source.local = Some(LocalSourceConfig {
        dir: dir.join("issues"),
    });
    config
}

/// The stand-in with `n` running threads and a ledger with their `n` running attempts, put there
/// by afk's own control plane from a local issue folder.
async fn running_fleet(n: usize, sim: &Sim, dir: &Path) -> Config {
    let config = config_for(sim, dir, n);
    let body = format!("{}Keep working until stopped. [sim:hang]", PARAGRAPH.repeat(6));
    for i in 0..n {
        let (repo, _) = REPOS[i % REPOS.len()];
        let issue = SourceIssue {
            key: IssueKey {
                repo: Repo::new(repo).expect("a valid repository"),
                number: i as u64 + 1,
            },
            title: format!("Issue {}", i + 1),
            body: body.clone(),
            labels: vec!["afk".into()],
            priority: Priority::DEFAULT,
        };
        local::write_issue(
            &dir.join("issues"),
            &format!("{}-{}.md", repo.replace('/', "-"), i + 1),
            &issue,
        )
        .expect("an issue file");
    }
    let mut plane = App::build(config.clone())
        .await
        .expect("the control plane is wired");
    let started = Instant::now();
    let t3 = afk::app::t3_client(&config).expect("a T3 client");
    // Ticks until every job runs and T3 shows every thread running (one tick does it all with
    // afk's current dispatcher; more are harmless).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let report = plane.tick(Utc::now()).await.expect("an intake and dispatch tick");
        if let Some(last) = report.progress.last() {
            eprintln!(
                "compare: N={n}: {} transitions, the last {} -> {}: {} ({:.1?} in)",
                report.progress.len(),
                last.from,
                last.to,
                last.note,
                started.elapsed()
            );
        }
        let model = t3.snapshot().await.expect("the snapshot");
        let running = model
            .threads
            .iter()
            .filter(|t| ThreadState::of(Some(t)) == ThreadState::Running)
            .count();
        let jobs = plane
            .ledger()
            .jobs_in(&[afk_core::JobState::Running])
            .await
            .expect("the jobs");
        if running == n && jobs.len() == n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {running} of {n} threads and {} of {n} jobs running",
            jobs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("compare: N={n}: all running after {:.1?}", started.elapsed());
    let live = plane.ledger().live_attempts().await.expect("the live attempts");
    assert_eq!(live.len(), n, "every job has a live attempt");
    plane.ledger().close().await;
    config
}

async fn fleet(n: usize, table: &mut Table) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let sim = Sim::start();
    let config = running_fleet(n, &sim, dir.path()).await;
    if memory_only() {
        peak_memory(n, dir.path(), None, table);
        return;
    }
    let mut watch_only = config.clone();
    watch_only.source.local = None;
    let mut plane = App::build(watch_only.clone())
        .await
        .expect("the control plane is wired");
    // The same fleet watched the default way: T3's shell stream keeps the view, no fetch per tick.
    let mut push_only = watch_only.clone();
    push_only.watch.push = true;
    let mut push_plane = App::build(push_only).await.expect("the control plane is wired");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        support::quiet_tick(&mut push_plane).await;
        if push_plane.control_plane().is_following_stream() {
            break;
        }
        assert!(Instant::now() < deadline, "the shell stream never synchronized");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t3 = afk::app::t3_client(&config).expect("a T3 client");
    let ledger = plane.ledger().clone();
    let hyper = hyper_client();
    let snapshot_url = format!("{}/api/orchestration/snapshot", sim.url);
    let snapshot_bytes = bare(&hyper, "GET", &snapshot_url, Bytes::new()).await.len();
    let mut seed = Seed::start(&sim.url);

    // 0 tick wall, 1 tick CPU, 2 seed wall, 3 seed CPU, 4 floor, 5 snapshot, 6 live_attempts,
    // 7 watched_attempts, 8 push tick wall, 9 push tick CPU
    let mut rounds = Rounds::new(10);
    while rounds.next() {
        let (t, cpu) = (Instant::now(), cpu_time());
        support::quiet_tick(&mut plane).await;
        rounds.push(0, t.elapsed().as_secs_f64());
        rounds.push(1, cpu_time() - cpu);
        if let Some(seed) = seed.as_mut() {
            let reply = seed.call(json!({"op": "snapshot"}));
            assert_eq!(reply["threads"], json!(n), "the seed saw every thread");
            assert_eq!(reply["running"], json!(n), "the seed saw them running");
            rounds.push(2, Seed::secs(&reply, "secs"));
            rounds.push(3, Seed::secs(&reply, "cpu_secs"));
        }
        let t = Instant::now();
        let body = bare(&hyper, "GET", &snapshot_url, Bytes::new()).await;
        serde_json::from_slice::<serde::de::IgnoredAny>(&body).expect("the snapshot parses");
        rounds.push(4, t.elapsed().as_secs_f64());
        let t = Instant::now();
        let model = t3.snapshot().await.expect("the snapshot");
        rounds.push(5, t.elapsed().as_secs_f64());
        assert_eq!(model.threads.len(), n);
        drop(model);
        let t = Instant::now();
        let live = ledger.live_attempts().await.expect("the live attempts");
        rounds.push(6, t.elapsed().as_secs_f64());
        assert_eq!(live.len(), n);
        drop(live);
        let t = Instant::now();
        let watched = ledger.watched_attempts().await.expect("the watched attempts");
        rounds.push(7, t.elapsed().as_secs_f64());
        assert_eq!(watched.len(), n);
        let (t, cpu) = (Instant::now(), cpu_time());
        support::quiet_tick(&mut push_plane).await;
        rounds.push(8, t.elapsed().as_secs_f64());
        rounds.push(9, cpu_time() - cpu);
        assert!(
            push_plane.control_plane().is_following_stream(),
            "the push tick read the stream's view"
        );
    }
    let timed = rounds.samples[0].len();
    let tick_target = if n >= 10_000 {
        Target::Seed(0.1)
    } else {
        Target::None
    };
    table.row(
        "watcher tick, quiet (afk: ControlPlane::tick; seed: snapshot() + derive; floor: hyper GET + IgnoredAny)",
        n,
        rounds.median(0),
        rounds.median(2),
        rounds.median(4),
        Unit::Time,
        tick_target,
    );
    table.row(
        "watcher tick, quiet, push (afk: ControlPlane::tick on the shell stream's view, the default; seed: snapshot() + derive)",
        n,
        rounds.median(8),
        rounds.median(2),
        rounds.median(4),
        Unit::Time,
        tick_target,
    );
    table.row(
        "watcher tick, push, CPU time of the process",
        n,
        rounds.median(9),
        rounds.median(3),
        None,
        Unit::Time,
        Target::None,
    );
    table.row(
        "watcher tick, CPU time of the process",
        n,
        rounds.median(1),
        rounds.median(3),
        None,
        Unit::Time,
        Target::None,
    );
    table.row(
        "snapshot GET + decode (afk: T3Client::snapshot; floor: hyper GET + IgnoredAny)",
        n,
        rounds.median(5),
        None,
        rounds.median(4),
        Unit::Time,
        Target::None,
    );
    table.row(
        "ledger: live_attempts (today's watcher read)",
        n,
        rounds.median(6),
        None,
        None,
        Unit::Time,
        Target::None,
    );
    table.row(
        "ledger: watched_attempts (slim read)",
        n,
        rounds.median(7),
        None,
        None,
        Unit::Time,
        Target::None,
    );
    table.note(format!(
        "N={n}: the stand-in's snapshot is {} ({} bytes per thread); {timed} timed rounds",
        human(snapshot_bytes as f64, Unit::Bytes),
        snapshot_bytes / n.max(1)
    ));
    let seed_rss = seed.as_mut().map(|s| {
        let reply = s.call(json!({"op": "rss"}));
        Seed::secs(&reply, "max_rss_bytes")
    });
    drop(plane);
    drop(push_plane);
    ledger.close().await;
    peak_memory(n, dir.path(), seed_rss, table);
    decode(n, dir.path(), seed.as_mut(), table).await;
}

/// True with `AFK_COMPARE_ONLY=memory`: only the peak memory rows (no timed rounds, no seed).
fn memory_only() -> bool {
    std::env::var("AFK_COMPARE_ONLY").is_ok_and(|v| v == "memory")
}

/// How many times each peak is measured (`AFK_COMPARE_MEMORY_RUNS`, default 1): the table shows
/// the median, every run is printed on stderr.
fn memory_runs() -> usize {
    std::env::var("AFK_COMPARE_MEMORY_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&runs| runs > 0)
        .unwrap_or(1)
}

/// Other `afk` binaries to measure beside this build's (`AFK_COMPARE_MEMORY_BINS`, comma-separated
/// `name=path`), for comparing two builds on one fleet: printed on stderr, not in the table.
fn other_binaries() -> Vec<(String, std::path::PathBuf)> {
    std::env::var("AFK_COMPARE_MEMORY_BINS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|entry| {
            let (name, path) = entry.split_once('=')?;
            Some((name.trim().to_owned(), path.trim().into()))
        })
        .collect()
}

/// Peak memory of the real binary watching the fleet of `n` in `dir`, polling and following the
/// stream. With several runs or binaries the measurements are interleaved (polling then push, one
/// binary after the other, run after run), so that a shared machine's load falls on all alike.
fn peak_memory(n: usize, dir: &Path, seed_rss: Option<f64>, table: &mut Table) {
    // The file `config_for` wrote has no source: watch only.
    let run_config = dir.join("afk-run.toml");
    let push_config = dir.join("afk-run-push.toml");
    let text = std::fs::read_to_string(&run_config).expect("the run config");
    std::fs::write(&push_config, text.replace("push = false", "push = true")).expect("the push config");
    let memory_target = if n >= 10_000 {
        Target::Below(64.0 * 1024.0 * 1024.0)
    } else {
        Target::None
    };
    let mut binaries = vec![("this build".to_owned(), std::path::PathBuf::from(AFK))];
    binaries.extend(other_binaries());
    // Per binary: the polling peaks and the push peaks.
    let mut peaks = vec![(Vec::new(), Vec::new()); binaries.len()];
    for run in 1..=memory_runs() {
        for ((name, afk), (polling, push)) in binaries.iter().zip(&mut peaks) {
            for (mode, config, peaks) in [
                ("polling", &run_config, &mut *polling),
                ("push", &push_config, push),
            ] {
                let peak = tokio::task::block_in_place(|| afk_run_peak_memory(afk, config));
                let shown = peak.map_or("-".to_owned(), |p| format!("{:.1} MB", p / 1048576.0));
                eprintln!("compare: N={n}: peak memory, {mode}, {name}, run {run}: {shown}");
                peaks.extend(peak);
            }
        }
    }
    for ((name, _), (polling, push)) in binaries.iter().zip(&peaks).skip(1) {
        let shown =
            |values: &Vec<f64>| median(values).map_or("-".to_owned(), |p| format!("{:.1} MB", p / 1048576.0));
        eprintln!(
            "compare: N={n}: {name}: median peak {} polling, {} push",
            shown(polling),
            shown(push)
        );
    }
    let (polling, push) = peaks.swap_remove(0);
    table.row(
        "peak memory (afk: `afk run` VmHWM; seed: driver's max RSS)",
        n,
        median(&polling),
        seed_rss,
        None,
        Unit::Bytes,
        memory_target,
    );

    table.row(
        "peak memory, push (afk: `afk run` VmHWM following the shell stream; seed: driver's max RSS)",
        n,
        median(&push),
        seed_rss,
        None,
        Unit::Bytes,
        memory_target,
    );
}

// ---- decoding a snapshot --------------------------------------------------------------------

/// Answers every request with the same body, as T3 would its snapshot.
#[derive(Debug)]
struct Canned(Vec<u8>);

#[async_trait::async_trait]
impl Transport for Canned {
    async fn send(&self, _request: Request) -> Result<Response, TransportError> {
        Ok(Response {
            status: 200,
            body: self.0.clone(),
        })
    }
}

async fn decode(n: usize, dir: &Path, mut seed: Option<&mut Seed>, table: &mut Table) {
    let json = shapes::read_model_json(n);
    let path = dir.join(format!("read-model-{n}.json"));
    std::fs::write(&path, &json).expect("the generated read model");
    let client = T3Client::new(
        "http://t3.invalid",
        Arc::new(Canned(json.clone())),
        Arc::new(afk_secrets::LiteralProvider::new(TOKEN)),
    );
    // 0 afk typed, 1 seed json.loads, 2 IgnoredAny, 3 Value, 4 afk's watcher view
    let mut rounds = Rounds::new(5);
    while rounds.next() {
        let t = Instant::now();
        let model = client.snapshot().await.expect("the read model decodes");
        rounds.push(0, t.elapsed().as_secs_f64());
        assert_eq!(model.threads.len(), n);
        drop(model);
        let t = Instant::now();
        let fleet = client.fleet().await.expect("the watcher's view decodes");
        rounds.push(4, t.elapsed().as_secs_f64());
        assert_eq!(fleet.len(), n);
        drop(fleet);
        if let Some(seed) = seed.as_deref_mut() {
            let reply = seed.call(json!({"op": "parse", "path": path}));
            rounds.push(1, Seed::secs(&reply, "secs"));
        }
        let t = Instant::now();
        serde_json::from_slice::<serde::de::IgnoredAny>(&json).expect("parses");
        rounds.push(2, t.elapsed().as_secs_f64());
        let t = Instant::now();
        let value = serde_json::from_slice::<Value>(&json).expect("parses");
        rounds.push(3, t.elapsed().as_secs_f64());
        drop(value);
    }
    table.row(
        "snapshot decode, the watcher's view (afk: T3Client::fleet, what a polling tick decodes; seed: json.loads; floor: serde_json IgnoredAny)",
        n,
        rounds.median(4),
        rounds.median(1),
        rounds.median(2),
        Unit::Time,
        Target::Floor(2.0),
    );
    table.row(
        "snapshot decode, the whole read model (afk: T3Client::snapshot, typed structs of every field; seed: json.loads; floor: serde_json IgnoredAny)",
        n,
        rounds.median(0),
        rounds.median(1),
        rounds.median(2),
        Unit::Time,
        Target::None,
    );
    if let (Some(value), Some(floor)) = (rounds.median(3), rounds.median(2)) {
        table.note(format!(
            "N={n}: generated read model {}; serde_json::Value decode {} ({:.2}x the floor)",
            human(json.len() as f64, Unit::Bytes),
            human(value, Unit::Time),
            value / floor
        ));
    }
}

// ---- dispatch -------------------------------------------------------------------------------

/// Captures the bodies a client posts, answering as T3 does.
#[derive(Debug, Default)]
struct Capture(Mutex<Vec<Vec<u8>>>);

#[async_trait::async_trait]
impl Transport for Capture {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        if let Some(body) = request.json_body {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(body);
        }
        Ok(Response {
            status: 200,
            body: br#"{"sequence":1}"#.to_vec(),
        })
    }
}

/// The two bodies afk sends for each of `count` dispatches (fresh ids each), for the floor.
async fn afk_bodies(config: &Config, prompt: &str, first_issue: u64, count: usize) -> Vec<(Bytes, Bytes)> {
    let capture = Arc::new(Capture::default());
    let mut client = T3Client::new(
        &config.t3.url,
        capture.clone(),
        Arc::new(afk_secrets::LiteralProvider::new(TOKEN)),
    );
    for (repo, project) in REPOS {
        client = client.with_project(
            repo,
            t3_client::ProjectId::new(project).expect("a valid project id"),
        );
    }
    for k in 0..count {
        client
            .dispatch(REPOS[0].0, first_issue + k as u64, prompt)
            .await
            .expect("a dispatch plan");
    }
    let bodies = std::mem::take(&mut *capture.0.lock().unwrap_or_else(|e| e.into_inner()));
    bodies
        .chunks(2)
        .map(|pair| (Bytes::from(pair[0].clone()), Bytes::from(pair[1].clone())))
        .collect()
}

async fn dispatch(table: &mut Table) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let sim = Sim::start();
    let config = config_for(&sim, dir.path(), 1);
    let afk = afk::app::t3_client(&config).expect("a T3 client");
    let hyper = hyper_client();
    let dispatch_url = format!("{}/api/orchestration/dispatch", sim.url);
    let prompt = format!("{}Keep working until stopped. [sim:hang]", PARAGRAPH.repeat(6));
    let mut seed = Seed::start(&sim.url);
    let mut issue = 1_000_000u64;
    let mut next_issues = |count: usize| {
        let first = issue;
        issue += count as u64;
        first
    };

    // Sequential latency: batches of 20, interleaved.
    const BATCH: usize = 20;
    let mut rounds = Rounds::new(3);
    while rounds.next() {
        for _ in 0..BATCH {
            let first = next_issues(1);
            let t = Instant::now();
            afk.dispatch(REPOS[0].0, first, &prompt)
                .await
                .expect("afk dispatches");
            rounds.push(0, t.elapsed().as_secs_f64());
        }
        if let Some(seed) = seed.as_mut() {
            let first = next_issues(BATCH);
            let reply = seed.call(json!({"op": "dispatch", "count": BATCH, "repo": REPOS[0].0,
                "first_issue": first, "prompt": prompt}));
            for secs in reply["secs"].as_array().into_iter().flatten() {
                rounds.push(1, secs.as_f64().unwrap_or(f64::NAN));
            }
        }
        let bodies = afk_bodies(&config, &prompt, next_issues(BATCH), BATCH).await;
        for (create, turn) in bodies {
            let t = Instant::now();
            bare(&hyper, "POST", &dispatch_url, create).await;
            bare(&hyper, "POST", &dispatch_url, turn).await;
            rounds.push(2, t.elapsed().as_secs_f64());
        }
    }
    let p99 = |k: usize| quantile(&rounds.samples[k], 0.99);
    table.row(
        "dispatch latency, median (afk: T3Client::dispatch; seed: T3Client.dispatch; floor: 2 hyper POSTs)",
        "1 at a time",
        rounds.median(0),
        rounds.median(1),
        rounds.median(2),
        Unit::Time,
        Target::Floor(1.3),
    );
    table.row(
        "dispatch latency, p99",
        "1 at a time",
        p99(0),
        p99(1),
        p99(2),
        Unit::Time,
        Target::None,
    );
    let seed_mean = {
        let s = &rounds.samples[1];
        (!s.is_empty()).then(|| s.iter().sum::<f64>() / s.len() as f64)
    };
    table.note(format!(
        "dispatch: {} sequential dispatches per contestant",
        rounds.samples[0].len()
    ));

    // Throughput: `in_flight` tasks share `per_round` dispatches; the time per dispatch is the
    // round's wall time over the dispatches made.
    for in_flight in [1usize, 8, 64] {
        let per_round = (in_flight * 8).max(32);
        let mut rounds = Rounds::new(2);
        while rounds.next() {
            let first = next_issues(per_round);
            let t = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..in_flight {
                let afk = afk.clone();
                let prompt = prompt.clone();
                tasks.push(tokio::spawn(async move {
                    let mut k = w;
                    while k < per_round {
                        afk.dispatch(REPOS[0].0, first + k as u64, &prompt)
                            .await
                            .expect("afk dispatches");
                        k += in_flight;
                    }
                }));
            }
            for task in tasks {
                task.await.expect("a dispatching task");
            }
            rounds.push(0, t.elapsed().as_secs_f64() / per_round as f64);

            let bodies = Arc::new(afk_bodies(&config, &prompt, next_issues(per_round), per_round).await);
            let t = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..in_flight {
                let (hyper, bodies, url) = (hyper.clone(), bodies.clone(), dispatch_url.clone());
                tasks.push(tokio::spawn(async move {
                    let mut k = w;
                    while k < bodies.len() {
                        let (create, turn) = &bodies[k];
                        bare(&hyper, "POST", &url, create.clone()).await;
                        bare(&hyper, "POST", &url, turn.clone()).await;
                        k += in_flight;
                    }
                }));
            }
            for task in tasks {
                task.await.expect("a posting task");
            }
            rounds.push(1, t.elapsed().as_secs_f64() / per_round as f64);
        }
        let afk_time = rounds.median(0);
        let floor_time = rounds.median(1);
        table.row(
            "dispatch, wall time per dispatch with K in flight (1/throughput)",
            format!("K={in_flight}"),
            afk_time,
            if in_flight == 1 { seed_mean } else { None },
            floor_time,
            Unit::Time,
            Target::Floor(1.3),
        );
        if let (Some(a), Some(f)) = (afk_time, floor_time) {
            table.note(format!(
                "dispatch with {in_flight} in flight: afk {:.0}/s, floor {:.0}/s{}",
                1.0 / a,
                1.0 / f,
                match (in_flight, seed_mean) {
                    (1, Some(s)) => format!(", seed {:.0}/s (sequential, its mean latency)", 1.0 / s),
                    _ => String::new(),
                }
            ));
        }
    }
}
