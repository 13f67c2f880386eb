//! End-to-end latency of afk with the stand-ins (issue #18): the real `afk run` binary with a
//! config file, the T3 stand-in (`t3_sim`, in this process, at its default pace) followed over its
//! shell stream (`[watch] push`, the default), and the stand-in GitHub (`afk_github::testing`, in
//! this process) with webhooks on: every issue is handed over by a trusted `labeled` delivery,
//! signed with the webhook secret and POSTed to afk's `/webhooks/github`, as GitHub sends it.
//!
//! Run with `cargo bench -p afk --bench latency`. Knobs: `AFK_LATENCY_ISSUES` (default 200),
//! `AFK_LATENCY_IN_FLIGHT` (50), `AFK_LATENCY_TURN_MS` (the stand-in's turn, 1000),
//! `AFK_LATENCY_TIMEOUT_S` (the whole run's bound, 240; the bench reports what it measured by
//! then), `AFK_LATENCY_LOG` (a file for `afk run`'s log, with `AFK_LOG` passed through),
//! `AFK_LATENCY_BIN` (another `afk` binary to run, such as a copy built from an earlier commit,
//! for before-and-after pairs against the same stand-ins; default: this build's).
//!
//! What is timed, for each issue, on the stand-ins' own clocks (the system's wall clock, which all
//! three processes share; T3's stamps have millisecond resolution):
//! - **(a)** from the moment the bench sends the `labeled` delivery (the label already applied on
//!   the stand-in GitHub by a person with write access) to the turn's `startedAt` in the stand-in
//!   T3's read model (the thread running). The stand-in's session takes 50 ms to start
//!   (`SimConfig::startup_delay`), so the row before it stops at the turn's `requestedAt` (T3
//!   accepted afk's turn): afk's own part.
//! - **(b)** from the turn's `completedAt` at T3 to the stand-in GitHub applying the status
//!   comment's write that says the job is done ([`afk_github::testing::CommentWrite`]).
//!
//! At most `AFK_LATENCY_IN_FLIGHT` issues are in flight: handed over and not yet reported done.
//! The first ones are handed over together, the rest one as each finishes.
//!
//! Bounded: a watchdog kills `afk run` (by its process id) and exits when the run overstays its
//! bound by a minute; both stand-ins live in this process and stop with it. Not part of `cargo
//! test` (a bench target runs only under `cargo bench` or `--benches`/`--all-targets`).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use afk_github::testing::{GitHubStandIn, RateLimitRefusal};
use chrono::{DateTime, Utc};
use t3_sim::{SimConfig, SimProject, SimServer, TokenGrant};

const AFK: &str = env!("CARGO_BIN_EXE_afk");
const T3_TOKEN: &str = "bench-latency-t3-token";
const WEBHOOK_SECRET: &str = "bench-latency-webhook-secret";
const REPO: &str = "acme/api";
const PROJECT: &str = "proj-api";
/// A person with write access: their label hands an issue over.
const MAINTAINER: &str = "mona";
/// What the status comment says of a job that succeeded.
const DONE: &str = "· **done**";
/// The target for both latencies' 99th percentile.
const TARGET: Duration = Duration::from_secs(1);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let issues = env_number("AFK_LATENCY_ISSUES", 200) as usize;
    let in_flight = env_number("AFK_LATENCY_IN_FLIGHT", 50) as usize;
    let turn = Duration::from_millis(env_number("AFK_LATENCY_TURN_MS", 1000));
    let bound = Duration::from_secs(env_number("AFK_LATENCY_TIMEOUT_S", 240));
    let runtime = support::runtime();
    runtime.block_on(run(issues, in_flight, turn, bound));
}

/// `afk run`, stopped (TERM, then KILL) when dropped.
struct AfkRun {
    child: Child,
}

impl AfkRun {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for AfkRun {
    fn drop(&mut self) {
        // SAFETY: signalling the process this bench started, by its id.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills `pid` and ends the bench once `after` has passed: nothing the bench started outlives it.
fn watchdog(pid: i32, after: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        eprintln!("latency: still running {after:?} after the start: killing afk run and stopping");
        // SAFETY: signalling the process this bench started, by its id.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        std::process::exit(2);
    });
}

async fn run(issues: usize, in_flight: usize, turn: Duration, bound: Duration) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let sim = SimServer::start(
        "127.0.0.1:0".parse().expect("an address"),
        SimConfig {
            tokens: vec![TokenGrant::operate(T3_TOKEN)],
            projects: vec![SimProject {
                id: PROJECT.into(),
                workspace_root: format!("/srv/{REPO}"),
                title: Some(REPO.into()),
            }],
            turn_duration: turn,
            seed: 1,
            ..SimConfig::default()
        },
    )
    .await
    .expect("the T3 stand-in starts");
    let github = GitHubStandIn::start().await.expect("the stand-in GitHub starts");
    github.create_repo(REPO);
    github.set_permission(REPO, MAINTAINER, "write");
    // What afk asks of GitHub is counted and said below; the budget is not this bench's subject.
    github.set_rate_limit(1_000_000, 1_000_000, None, RateLimitRefusal::Forbidden);
    let numbers: Vec<u64> = (0..issues)
        .map(|i| github.open_issue(REPO, "octocat", &format!("Latency {i}"), "Make the pager faster."))
        .collect();

    let config = write_config(dir.path(), &sim, &github, in_flight);
    let (afk, addr) = start_afk(&config, bound);
    watchdog(afk.pid(), bound + Duration::from_secs(60));
    eprintln!(
        "latency: afk run (pid {}) listens on {addr}; {issues} issues, {in_flight} in flight, turns of {turn:?}",
        afk.pid()
    );

    let http = reqwest::Client::new();
    let mut sent: HashMap<u64, DateTime<Utc>> = HashMap::new();
    let mut next = 0;
    let deadline = started + bound;
    let mut done: HashMap<u64, DateTime<Utc>> = HashMap::new();
    loop {
        for write in github.comment_writes(REPO) {
            if write.body.contains(DONE) {
                done.entry(write.issue).or_insert(write.at);
            }
        }
        if done.len() >= issues {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "latency: bound of {bound:?} reached with {} of {issues} reported done",
                done.len()
            );
            break;
        }
        while next < numbers.len() && sent.len() - done.len() < in_flight {
            let number = numbers[next];
            next += 1;
            github.add_label(REPO, number, "afk", MAINTAINER);
            sent.insert(number, Utc::now());
            deliver_labeled(&http, addr, number).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let finished = started.elapsed();
    let ticks = tick_metrics(&http, addr).await;
    drop(afk);

    let threads = turns_by_issue(&sim);
    let writes = github.comment_writes(REPO);
    let mut accepted = Vec::new();
    let mut running = Vec::new();
    let mut reported = Vec::new();
    let mut retried = 0;
    let requests = github.requests();
    // Per issue reported done: what GitHub answered between the turn's end and the done comment.
    let mut windows: Vec<(f64, u64, Vec<&afk_github::testing::RecordedRequest>)> = Vec::new();
    for (number, at) in &sent {
        let Some(turns) = threads.get(number) else {
            continue;
        };
        if turns.len() > 1 {
            retried += 1;
        }
        let turn = &turns[0];
        accepted.push(secs(turn.requested - *at));
        if let Some(start) = turn.started {
            running.push(secs(start - *at));
        }
        let last = &turns[turns.len() - 1];
        if let Some(end) = last.completed {
            if let Some(write) = writes
                .iter()
                .find(|w| w.issue == *number && w.at >= end && w.body.contains(DONE))
            {
                reported.push(secs(write.at - end));
                let window = (requests.iter())
                    .filter(|r| r.at >= end && r.at <= write.at)
                    .collect();
                windows.push((secs(write.at - end), *number, window));
            }
        }
    }
    let writes_total = requests.iter().filter(|r| r.is_write()).count();
    let charged = github.charged_requests();
    // One per poll of the labelled issues (its first page).
    let listings = requests
        .iter()
        .filter(|r| r.path.contains("/issues?state=open") && !r.path.contains("&page="))
        .count();

    println!(
        "| latency ({issues} issues, {in_flight} in flight, `afk run`, webhooks and push on) | measured | p50 | p99 | max | target | met? |"
    );
    println!("|---|---:|---:|---:|---:|---|---|");
    row(
        "(a) labeled webhook → turn accepted at T3 (`requestedAt`)",
        &mut accepted,
        None,
    );
    row(
        "(a) labeled webhook → thread running at T3 (`startedAt`; the stand-in's session start is 50 ms)",
        &mut running,
        Some(TARGET),
    );
    row(
        "(b) thread finished at T3 (`completedAt`) → status comment says done",
        &mut reported,
        Some(TARGET),
    );
    println!();
    println!(
        "- {} of {issues} handed over, {} reported done in {:.1} s; {retried} issues needed more than one attempt",
        sent.len(),
        done.len(),
        finished.as_secs_f64()
    );
    if let Some((count, sum)) = ticks {
        println!(
            "- afk's loop: {count:.0} ticks, {} each on average (`afk_tick_duration_seconds` from its `/metrics`)",
            support::human_secs(sum / count.max(1.0))
        );
    }
    println!(
        "- GitHub: {} requests ({charged} charged, {writes_total} writes, {listings} polls of the labelled issues), {:.1} charged per issue",
        requests.len(),
        charged as f64 / sent.len().max(1) as f64
    );
    profile_done_reports(&mut windows);
}

/// What GitHub answered between each turn's end and its done comment (the stand-in's request
/// log): how many requests, and for the slowest report, which ones, in kinds.
fn profile_done_reports(windows: &mut [(f64, u64, Vec<&afk_github::testing::RecordedRequest>)]) {
    if windows.is_empty() {
        return;
    }
    windows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut counts: Vec<f64> = windows.iter().map(|(_, _, w)| w.len() as f64).collect();
    counts.sort_by(f64::total_cmp);
    let mut writes: Vec<f64> = (windows.iter())
        .map(|(_, _, w)| w.iter().filter(|r| r.is_write()).count() as f64)
        .collect();
    writes.sort_by(f64::total_cmp);
    let show = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.0}"));
    println!(
        "- requests GitHub answered between a turn's end and its done comment: p50 {}, p99 {}, max {} (of them writes: p50 {}, p99 {}, max {})",
        show(percentile(&counts, 0.5)),
        show(percentile(&counts, 0.99)),
        show(counts.last().copied()),
        show(percentile(&writes, 0.5)),
        show(percentile(&writes, 0.99)),
        show(writes.last().copied()),
    );
    let (latency, number, window) = &windows[windows.len() - 1];
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for r in window {
        *kinds.entry(request_kind(r)).or_default() += 1;
    }
    let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    let listed: Vec<String> = kinds.iter().map(|(k, n)| format!("{n}× {k}")).collect();
    println!(
        "- the slowest, #{number} ({}): {} requests in its window: {}",
        support::human_secs(*latency),
        window.len(),
        listed.join(", ")
    );
}

/// A request's method and path with numbers and query values blanked: `PATCH /repos/R/issues/comments/N`.
fn request_kind(r: &afk_github::testing::RecordedRequest) -> String {
    let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
    let path = path.replace(&format!("/repos/{REPO}"), "/repos/R");
    let path: Vec<String> = path
        .split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
                "N".to_owned()
            } else {
                seg.to_owned()
            }
        })
        .collect();
    let keys: Vec<&str> = (query.split('&'))
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .filter(|k| *k == "head" || *k == "page")
        .collect();
    let status = if r.status == 304 { " (304)" } else { "" };
    if keys.is_empty() {
        format!("{} {}{status}", r.method, path.join("/"))
    } else {
        format!("{} {}?{}{status}", r.method, path.join("/"), keys.join("&"))
    }
}

/// One row of the table: `samples` (seconds) sorted in place.
fn row(what: &str, samples: &mut [f64], target: Option<Duration>) {
    samples.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(samples, 0.50),
        percentile(samples, 0.99),
        samples.last().copied(),
    );
    let show = |v: Option<f64>| v.map_or("—".to_owned(), support::human_secs);
    let (target_text, met) = match (target, p99) {
        (Some(t), Some(p99)) => {
            let met = if p99 < t.as_secs_f64() {
                "yes".to_owned()
            } else {
                format!("**no** ({:.1}×)", p99 / t.as_secs_f64())
            };
            (format!("p99 < {}", support::human_secs(t.as_secs_f64())), met)
        }
        (Some(t), None) => (
            format!("p99 < {}", support::human_secs(t.as_secs_f64())),
            "**not measured**".to_owned(),
        ),
        (None, _) => ("—".to_owned(), "—".to_owned()),
    };
    println!(
        "| {what} | {} | {} | {} | {} | {target_text} | {met} |",
        samples.len(),
        show(p50),
        show(p99),
        show(max)
    );
}

/// The nearest-rank percentile `p` of sorted `samples`.
fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let rank = (p * samples.len() as f64).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

/// A duration in seconds, never below zero (T3 stamps milliseconds, truncated).
fn secs(d: chrono::Duration) -> f64 {
    (d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0)
}

/// One thread's turn as the stand-in T3 shows it.
struct TurnTimes {
    requested: DateTime<Utc>,
    started: Option<DateTime<Utc>>,
    completed: Option<DateTime<Utc>>,
}

/// The turns of each issue's threads (oldest thread first), by issue number, from the titles
/// afk gives its threads (`OWNER/NAME#N: title`).
fn turns_by_issue(sim: &SimServer) -> BTreeMap<u64, Vec<TurnTimes>> {
    let mut threads = sim.read_model().threads;
    threads.sort_by_key(|t| t.created_at.0);
    let mut by_issue: BTreeMap<u64, Vec<TurnTimes>> = BTreeMap::new();
    let prefix = format!("{REPO}#");
    for thread in threads {
        let Some(number) = thread
            .title
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let Some(turn) = thread.latest_turn else {
            continue;
        };
        by_issue.entry(number).or_default().push(TurnTimes {
            requested: turn.requested_at.0,
            started: turn.started_at.map(|t| t.0),
            completed: turn.completed_at.map(|t| t.0),
        });
    }
    by_issue
}

/// afk's ticks so far and their total duration in seconds, from its `/metrics`.
async fn tick_metrics(http: &reqwest::Client, addr: SocketAddr) -> Option<(f64, f64)> {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((
        value("afk_tick_duration_seconds_count")?,
        value("afk_tick_duration_seconds_sum")?,
    ))
}

/// POSTs GitHub's `issues` `labeled` delivery for `number`, signed, to afk's webhook endpoint.
async fn deliver_labeled(http: &reqwest::Client, addr: SocketAddr, number: u64) {
    let body = serde_json::json!({
        "action": "labeled",
        "issue": {
            "number": number,
            "title": format!("Latency {number}"),
            "state": "open",
            "user": { "login": "octocat" },
        },
        "label": { "name": "afk" },
        "repository": { "full_name": REPO },
        "sender": { "login": MAINTAINER },
    })
    .to_string();
    let answer = http
        .post(format!("http://{addr}/webhooks/github"))
        .header("x-github-event", "issues")
        .header("x-github-delivery", format!("latency-{number}"))
        .header(
            "x-hub-signature-256",
            afk_github::sign(WEBHOOK_SECRET.as_bytes(), body.as_bytes()),
        )
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("afk answers the webhook");
    assert!(
        answer.status().is_success(),
        "afk refused the delivery for #{number}: {}",
        answer.status()
    );
}

/// The config file `afk run` reads: production defaults but for the limits (the bench's in
/// flight), the loopback listener and the stand-ins' addresses.
fn write_config(dir: &Path, sim: &SimServer, github: &GitHubStandIn, in_flight: usize) -> std::path::PathBuf {
    let file = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("a file in the temporary folder");
        path
    };
    let t3_token = file("t3-token", T3_TOKEN);
    let github_token = file("github-token", afk_github::testing::STAND_IN_TOKEN);
    let secret = file("webhook-secret", WEBHOOK_SECRET);
    let text = format!(
        r#"[t3]
url = "{t3}"
token_file = "{t3_token}"

[t3.projects]
"{REPO}" = "{PROJECT}"

[ledger]
url = "sqlite://{ledger}"

[limits]
max_concurrent = {limit}
per_repo = {limit}

[github]
api_url = "{api}"
repos = ["{REPO}"]
token_file = "{github_token}"
webhook_secret_file = "{secret}"

[http]
listen = "127.0.0.1:0"
"#,
        t3 = sim.url(),
        t3_token = t3_token.display(),
        ledger = dir.join("afk.db").display(),
        limit = in_flight,
        api = github.api_url(),
        github_token = github_token.display(),
        secret = secret.display(),
    );
    file("afk.toml", &text)
}

/// Starts `afk run` on `config` and waits (within `bound`) for its listener's address, read from
/// its log. Its log goes to `AFK_LATENCY_LOG` when set; warnings and errors go to stderr.
fn start_afk(config: &Path, bound: Duration) -> (AfkRun, SocketAddr) {
    let level = std::env::var("AFK_LOG").unwrap_or_else(|_| "info".into());
    let bin = std::env::var("AFK_LATENCY_BIN").unwrap_or_else(|_| AFK.to_owned());
    let mut child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(config)
        .env("AFK_LOG", level)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("afk run ({bin}) starts: {e}"));
    let stderr = child.stderr.take().expect("its stderr");
    let afk = AfkRun { child };
    let mut log = std::env::var("AFK_LATENCY_LOG")
        .ok()
        .map(|path| std::fs::File::create(path).expect("the log file"));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut warned = 0;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("status surface on http://").nth(1) {
                if let Some(addr) = rest.split('/').next().and_then(|a| a.parse::<SocketAddr>().ok()) {
                    let _ = addr_tx.send(addr);
                }
            }
            if (line.contains("WARN") || line.contains("ERROR")) && warned < 20 {
                warned += 1;
                eprintln!("latency: afk run: {line}");
            }
            if let Some(log) = log.as_mut() {
                let _ = writeln!(log, "{line}");
            }
        }
    });
    let addr = addr_rx
        .recv_timeout(bound.min(Duration::from_secs(60)))
        .expect("afk run says where it listens within a minute");
    (afk, addr)
}
