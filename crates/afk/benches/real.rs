//! afk against the **real** T3 Code server beside the stand-in (`afk sim`'s default pace): how
//! long a worktree dispatch takes and how many go through per second with 1, 8 and 64 in
//! flight, and how long the tick takes that dispatches 20 ready issues.
//!
//! Run with `AFK_REAL_T3=$(../shared/t3code/setup) cargo bench -p afk --bench real`; without
//! `AFK_REAL_T3` only the stand-in is measured (one `SKIP:` line says so). Prints a Markdown table
//! on stdout; progress goes to stderr.
//!
//! - **dispatch**: `T3Client::dispatch_isolated` (the one `/ws` bootstrap afk sends per attempt:
//!   T3 creates the thread and its git worktree and starts the turn), `n` at a time, each with a
//!   branch of its own and, since T3 adds one worktree to a checkout at a time, each of the `n`
//!   in a repository of its own (16 dispatches, or 64 for 64 in flight); latency is from sending
//!   to T3's answer (median and 95th percentile), throughput the dispatches answered per second
//!   of the batch. The agent (`afk sim agent`)
//!   ends each turn after 100 ms; every thread's session is stopped after its batch, so no agent
//!   is left running.
//! - **tick with 20 ready issues**: `App::tick` as `afk run` makes it, the first one after 20
//!   issue files appeared (`max_concurrent` 20), all of one repository: intake, T3's view, 20
//!   attempts recorded and dispatched (the repository's bootstraps one after the other).
//!
//! Each figure is one sample on a shared two-core machine: read the ratios, not the absolute
//! times.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use afk::app::App;
use afk::config::{Config, LocalSourceConfig};
use chrono::Utc;
use t3_client::{
    AgentSettings, CommandId, IssueRef, ProjectId, ReqwestTransport, SecretProvider, T3Client, ThreadId,
    WorktreePlan,
};
use t3_sim::real::{self, Agent, RealT3};
use t3_sim::{SimConfig, SimProject, SimServer, TokenGrant};

const AFK: &str = env!("CARGO_BIN_EXE_afk");
const SIM_TOKEN: &str = "bench-real-token";
const IN_FLIGHT: [usize; 3] = [1, 8, 64];
const TICK_ISSUES: u64 = 20;

/// The T3 one series runs against.
enum Server {
    Sim(SimServer),
    Real(Box<RealT3>),
}

struct Target {
    name: &'static str,
    server: Server,
    dir: tempfile::TempDir,
}

impl Target {
    fn url(&self) -> String {
        match &self.server {
            Server::Sim(sim) => sim.url(),
            Server::Real(t3) => t3.url().to_owned(),
        }
    }

    fn token_file(&self) -> PathBuf {
        self.dir.path().join("t3-token")
    }

    /// A project (and, for the real T3, a git repository) of its own for `name`.
    async fn project(&self, name: &str) -> (ProjectId, String) {
        match &self.server {
            Server::Sim(_) => {
                let id = format!("proj-{name}");
                (ProjectId::new(id).expect("an id"), format!("/srv/bench/{name}"))
            }
            Server::Real(t3) => {
                let project = t3
                    .add_project(&format!("proj-{name}"), name)
                    .await
                    .unwrap_or_else(|e| panic!("a project on the real T3: {e:#}"));
                (
                    ProjectId::new(project.id).expect("an id"),
                    project.workspace.display().to_string(),
                )
            }
        }
    }

    fn client(&self) -> T3Client {
        let bearer: Arc<dyn SecretProvider> = Arc::new(afk_secrets::FileProvider::new(self.token_file()));
        let settings = AgentSettings {
            instance_id: "codex".into(),
            model: "gpt-5-codex".into(),
            ..AgentSettings::default()
        };
        T3Client::new(&self.url(), Arc::new(ReqwestTransport::default()), bearer).with_settings(settings)
    }
}

async fn sim_target() -> Target {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let projects = std::iter::once("tick".to_owned())
        .chain(
            IN_FLIGHT
                .iter()
                .flat_map(|n| (0..*n).map(move |k| format!("dispatch-{n}-{k}"))),
        )
        .map(|name| SimProject::new(format!("proj-{name}"), format!("/srv/bench/{name}")))
        .collect();
    let sim = SimServer::start(
        "127.0.0.1:0".parse().expect("an address"),
        SimConfig {
            tokens: vec![TokenGrant::operate(SIM_TOKEN)],
            projects,
            turn_duration: Duration::from_millis(100),
            worktrees_dir: dir.path().join("worktrees"),
            ..SimConfig::default()
        },
    )
    .await
    .expect("the stand-in starts");
    std::fs::write(dir.path().join("t3-token"), SIM_TOKEN).expect("the token file");
    Target {
        name: "afk sim",
        server: Server::Sim(sim),
        dir,
    }
}

async fn real_target() -> Option<Target> {
    if !real::skip_unless_available("bench real") {
        return None;
    }
    let t3 = RealT3::start(real::Options {
        agent: Some(Agent::new(AFK, &["sim", "agent"])),
    })
    .await
    .unwrap_or_else(|e| panic!("the real T3 did not start: {e:#}"));
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(dir.path().join("t3-token"), t3.token()).expect("the token file");
    Some(Target {
        name: "real T3",
        server: Server::Real(Box::new(t3)),
        dir,
    })
}

/// One batch of dispatches, `n` in flight: medians of latency and the throughput.
struct Batch {
    in_flight: usize,
    /// Dispatches T3 answered with success.
    count: usize,
    /// Dispatches that failed (no answer within the client's 30 s, or refused).
    failed: usize,
    p50: Duration,
    p95: Duration,
    per_sec: f64,
}

async fn dispatch_batch(target: &Target, n: usize) -> Batch {
    // T3 adds one worktree to a checkout at a time (afk queues a checkout's bootstraps): `n` in
    // flight are `n` repositories, each sending its share one after the other.
    let mut slots = Vec::new();
    for k in 0..n {
        let (project, workspace) = target.project(&format!("dispatch-{n}-{k}")).await;
        let worktree = WorktreePlan {
            project_cwd: workspace,
            base_branch: "main".into(),
            run_setup_script: false,
        };
        slots.push((project, worktree, Vec::new()));
    }
    let client = target.client();
    let count = n.max(16);
    for i in 0..count {
        let (project, _, plans) = &mut slots[i % n];
        let issue = IssueRef {
            repo: "bench/dispatch".into(),
            number: (n * 1_000 + i) as u64,
            title: Some(format!("bench {n}/{i}")),
        };
        plans.push(
            client
                .plan(&issue, project.clone(), "Bench. [sim:duration=100]", None)
                .expect("a plan"),
        );
    }
    // A warm-up dispatch opens the socket (and, on the real T3, warms its git and agent paths).
    let warm = {
        let issue = IssueRef {
            repo: "bench/dispatch".into(),
            number: (n * 1_000 + 999) as u64,
            title: Some("warm-up".into()),
        };
        let plan = client
            .plan(&issue, slots[0].0.clone(), "Bench. [sim:duration=100]", None)
            .expect("a plan");
        client
            .dispatch_isolated(&plan, &slots[0].1)
            .await
            .unwrap_or_else(|e| panic!("{}: the warm-up dispatch: {}", target.name, e.error));
        plan.ids.thread_id
    };
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut threads = vec![warm];
    for (_, worktree, plans) in slots {
        threads.extend(plans.iter().map(|p| p.ids.thread_id.clone()));
        let client = client.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            for plan in plans {
                let sent = Instant::now();
                match client.dispatch_isolated(&plan, &worktree).await {
                    Ok(_) => latencies.push(sent.elapsed()),
                    Err(e) => failures.push(e.error.to_string()),
                }
            }
            (latencies, failures)
        });
    }
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (slot, failed) = joined.expect("a dispatch task");
        latencies.extend(slot);
        failures.extend(failed);
    }
    let took = started.elapsed();
    for failure in &failures {
        eprintln!("{}: a dispatch failed: {failure}", target.name);
    }
    assert!(!latencies.is_empty(), "{}: no dispatch went through", target.name);
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let batch = Batch {
        in_flight: n,
        count: latencies.len(),
        failed: failures.len(),
        p50: at(0.5),
        p95: at(0.95),
        per_sec: latencies.len() as f64 / took.as_secs_f64(),
    };
    stop_all(&client, threads.iter()).await;
    batch
}

/// Stops every thread's session: no agent is left running after a batch.
async fn stop_all<'a>(client: &T3Client, threads: impl Iterator<Item = &'a ThreadId>) {
    for thread in threads {
        let _ = client.stop_session(thread, CommandId::generate()).await;
    }
}

/// The first tick after `TICK_ISSUES` issue files appeared, as `afk run` makes it.
async fn tick_with_ready_issues(target: &Target) -> (Duration, usize) {
    let (project, _) = target.project("tick").await;
    let issues = target.dir.path().join("issues");
    std::fs::create_dir_all(&issues).expect("the issue folder");
    for n in 1..=TICK_ISSUES {
        write_issue(&issues, n);
    }
    let mut config = Config::default();
    config.t3.url = target.url();
    config.t3.token_file = target.token_file();
    config.t3.instance_id = "codex".into();
    config.t3.model = "gpt-5-codex".into();
    config.t3.projects = [("bench/tick".to_owned(), project.as_str().into())]
        .into_iter()
        .collect();
    config.ledger.url = format!("sqlite://{}", target.dir.path().join("afk.db").display());
    config.source.local = Some(LocalSourceConfig { dir: issues });
    config.limits.max_concurrent = TICK_ISSUES as u32;
    config.limits.per_repo = TICK_ISSUES as u32;
    config.watch.push = false;
    // No status surface: it is not what this bench measures, and its default port may be taken.
    config.http.listen = None;
    let mut app = App::build(config).await.expect("afk builds");
    let started = Instant::now();
    let report = app.tick(Utc::now()).await.expect("a tick");
    let took = started.elapsed();
    let dispatched = report
        .progress
        .iter()
        .filter(|p| p.to == afk_core::JobState::Running)
        .count();
    (took, dispatched)
}

fn write_issue(dir: &Path, n: u64) {
    let text = format!("---\nrepo: bench/tick\nnumber: {n}\ntitle: Issue {n}\nlabels: [afk]\n---\nBench. [sim:duration=100]\n");
    std::fs::write(dir.join(format!("issue-{n}.md")), text).expect("an issue file");
}

fn main() {
    let runtime = support::runtime();
    runtime.block_on(async {
        let mut rows: Vec<(String, Vec<Batch>, (Duration, usize))> = Vec::new();
        let mut targets = vec![sim_target().await];
        if let Some(real) = real_target().await {
            targets.push(real);
        }
        for target in &targets {
            let mut batches = Vec::new();
            for n in IN_FLIGHT {
                eprintln!("{}: {n} dispatches in flight", target.name);
                batches.push(dispatch_batch(target, n).await);
            }
            eprintln!("{}: a tick with {TICK_ISSUES} ready issues", target.name);
            let tick = tick_with_ready_issues(target).await;
            rows.push((target.name.to_owned(), batches, tick));
        }
        println!("| T3 | in flight | answered | failed | latency p50 | latency p95 | dispatches/s |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (name, batches, _) in &rows {
            for b in batches {
                println!(
                    "| {name} | {} | {} | {} | {} | {} | {:.1} |",
                    b.in_flight,
                    b.count,
                    b.failed,
                    support::human_secs(b.p50.as_secs_f64()),
                    support::human_secs(b.p95.as_secs_f64()),
                    b.per_sec
                );
            }
        }
        println!();
        println!("| T3 | tick with {TICK_ISSUES} ready issues | attempts running after it |");
        println!("|---|---:|---:|");
        for (name, _, (took, dispatched)) in &rows {
            println!(
                "| {name} | {} | {dispatched} |",
                support::human_secs(took.as_secs_f64())
            );
        }
        for target in targets {
            if let Server::Sim(sim) = target.server {
                sim.shutdown().await;
            }
        }
    });
}
