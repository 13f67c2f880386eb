//! `afk demo`: afk's main job end to end on embedded defaults, with no external service. It starts
//! the T3 stand-in in-process, writes a handful of scripted sample issues, runs the control plane
//! with a SQLite ledger in a temporary folder, prints progress as it happens, and ends with a table
//! of jobs and attempts. It succeeds when every job ended as its script says.

use crate::cmd::out::outln;
use std::time::{Duration, Instant};

use afk_core::{IssueKey, JobState, Priority, Repo};
use afk_ledger::{Ledger, LedgerError};
use anyhow::{bail, Context};
use t3_sim::{SimConfig, SimProject, SimServer, TokenGrant};

use crate::app::App;
use crate::config::{Config, LocalSourceConfig};
use crate::control::TickReport;
use crate::source::{local, SourceIssue};
use crate::views;

/// One scripted sample issue and how it must end.
struct Sample {
    repo: &'static str,
    number: u64,
    title: &'static str,
    priority: u8,
    /// The issue body; `[sim:...]` markers script the stand-in's agent.
    body: &'static str,
    expect_state: JobState,
    expect_attempts: u32,
}

const SAMPLES: &[Sample] = &[
    Sample {
        repo: "afk-demo/sandbox",
        number: 1,
        title: "Fix the off-by-one in the pager",
        priority: 1,
        body: "The last page is never shown. [sim:duration=1200]",
        expect_state: JobState::Succeeded,
        expect_attempts: 1,
    },
    Sample {
        repo: "afk-demo/sandbox",
        number: 2,
        title: "Add a --json flag to `list`",
        priority: 2,
        body:
            "Scripts want machine-readable output. (The agent fails once, then succeeds.) [sim:fail-times=1]",
        expect_state: JobState::Succeeded,
        expect_attempts: 2,
    },
    Sample {
        repo: "afk-demo/website",
        number: 3,
        title: "Document the config file",
        priority: 2,
        body: "Every key with its default. [sim:duration=2000]",
        expect_state: JobState::Succeeded,
        expect_attempts: 1,
    },
    Sample {
        repo: "afk-demo/website",
        number: 4,
        title: "Migrate the build to the new bundler",
        priority: 3,
        body: "(The agent hangs every time: afk interrupts it at the turn timeout and gives up.) [sim:hang]",
        expect_state: JobState::GivenUp,
        expect_attempts: 3,
    },
    Sample {
        repo: "afk-demo/sandbox",
        number: 5,
        title: "Remove the deprecated v1 API",
        priority: 0,
        body: "(The agent fails every time: afk retries with back-off, then gives up.) [sim:fail]",
        expect_state: JobState::GivenUp,
        expect_attempts: 3,
    },
];

/// How long the demo may take before it calls itself stuck.
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs the demo; `Ok` only when every sample ended as scripted.
pub async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("afk-demo-")
        .tempdir()
        .context("creating the demo's temporary folder")?;
    let token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let token_file = dir.path().join("t3-token");
    std::fs::write(&token_file, &token).context("writing the demo's token file")?;

    let projects = [
        ("afk-demo/sandbox", "demo-sandbox"),
        ("afk-demo/website", "demo-website"),
    ];
    let sim = SimServer::start(
        "127.0.0.1:0".parse().expect("a valid socket address"),
        SimConfig {
            tokens: vec![TokenGrant::operate(token)],
            projects: projects
                .iter()
                .map(|(repo, id)| SimProject {
                    id: (*id).into(),
                    workspace_root: dir.path().join("checkouts").join(repo).display().to_string(),
                    title: Some((*repo).into()),
                })
                .collect(),
            turn_duration: Duration::from_millis(1500),
            seed: 7,
            ..SimConfig::default()
        },
    )
    .await
    .context("starting the T3 stand-in")?;

    let mut config = Config::default();
    config.t3.url = sim.url();
    config.t3.token_file = token_file;
    config.t3.projects = projects
        .iter()
        .map(|(r, p)| (r.to_string(), (*p).into()))
        .collect();
    config.ledger.url = format!("sqlite://{}", dir.path().join("afk.db").display());
    let issues = dir.path().join("issues");
    config.source.local = Some(LocalSourceConfig { dir: issues.clone() });
    config.limits.max_concurrent = 3;
    config.limits.per_repo = 2;
    config.limits.max_attempts = 3;
    config.watch.poll_interval = Duration::from_millis(200);
    config.watch.stall_timeout = Duration::from_secs(20);
    config.watch.turn_timeout = Duration::from_secs(3);
    config.retry.initial = Duration::from_millis(500);
    config.retry.cap = Duration::from_secs(2);
    // The status surface where `afk run` serves it, unless that port is taken (an `afk run` on
    // this machine): then any free port.
    let free = std::net::TcpListener::bind(crate::config::DEFAULT_LISTEN).is_ok();
    config.http.listen = Some(match free {
        true => crate::config::DEFAULT_LISTEN,
        false => "127.0.0.1:0".parse().expect("a valid socket address"),
    });

    outln!(
        "afk demo: T3 stand-in at {}, ledger and issues in {}",
        sim.url(),
        dir.path().display()
    )?;
    outln!(
        "limits: {} at once, {} per repository, {} attempts; turn timeout {}\n",
        config.limits.max_concurrent,
        config.limits.per_repo,
        config.limits.max_attempts,
        humantime::format_duration(config.watch.turn_timeout)
    )?;
    for sample in SAMPLES {
        let issue = SourceIssue {
            key: IssueKey {
                repo: Repo::new(sample.repo)?,
                number: sample.number,
            },
            title: sample.title.into(),
            body: sample.body.into(),
            labels: vec!["afk".into()],
            priority: Priority::new(sample.priority)?,
        };
        local::write_issue(
            &issues,
            &format!("{}-{}.md", sample.repo.replace('/', "-"), sample.number),
            &issue,
        )?;
    }

    let app = App::build(config.clone()).await?;
    if let Some(addr) = app.http_addr() {
        outln!("dashboard and JSON API: http://{addr}/ (while the demo runs)\n")?;
    }
    let ledger = app.ledger().clone();
    let print = |report: &TickReport| {
        for p in &report.progress {
            let elapsed = started.elapsed().as_secs_f64();
            if p.from == p.to {
                // A closed stdout stops only the output, not the demo.
                let _ = outln!("{elapsed:6.1}s  {:<20} {}", p.issue.to_string(), p.note);
            } else {
                let _ = outln!(
                    "{elapsed:6.1}s  {:<20} {} -> {}: {}",
                    p.issue.to_string(),
                    p.from,
                    p.to,
                    p.note
                );
            }
        }
    };
    // afk runs as `afk run` does, until every sample has ended (or the deadline passed).
    let finished = async {
        while started.elapsed() < DEADLINE && !all_ended(&ledger).await.unwrap_or(false) {
            tokio::time::sleep(config.watch.poll_interval).await;
        }
    };
    app.run(finished, print).await?;
    if !all_ended(&ledger).await? {
        bail!("the demo did not finish within {}s", DEADLINE.as_secs());
    }

    let jobs = views::jobs(&ledger).await?;
    outln!("\nJobs\n{}", views::jobs_table(&jobs))?;
    let (attempts, attempts_total) = views::attempts_table(&ledger).await?;
    outln!("Attempts\n{attempts}")?;

    let mut wrong = Vec::new();
    for sample in SAMPLES {
        let key = format!("{}#{}", sample.repo, sample.number);
        match jobs.iter().find(|v| format!("{}#{}", v.repo, v.number) == key) {
            Some(v) if v.state == sample.expect_state.as_str() && v.attempts == sample.expect_attempts => {}
            Some(v) => wrong.push(format!(
                "{key}: expected {} after {} attempts, got {} after {}",
                sample.expect_state, sample.expect_attempts, v.state, v.attempts
            )),
            None => wrong.push(format!("{key}: no job")),
        }
    }
    let threads = sim.threads().len();
    if threads != attempts_total {
        wrong.push(format!(
            "T3 holds {threads} threads for {attempts_total} attempts"
        ));
    }
    sim.shutdown().await;
    if !wrong.is_empty() {
        bail!("the demo did not go as scripted:\n  {}", wrong.join("\n  "));
    }
    outln!(
        "All {} jobs ended as scripted, one T3 thread per attempt ({attempts_total} in all), in {:.1}s.",
        SAMPLES.len(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// True when every sample has a job and all of them are final.
async fn all_ended(ledger: &Ledger) -> Result<bool, LedgerError> {
    let jobs = ledger.jobs().await?;
    Ok(jobs.len() == SAMPLES.len() && jobs.iter().all(|j| j.state.is_final()))
}
