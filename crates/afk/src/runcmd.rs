//! `afk run`, `afk jobs`, `afk status` and `afk dispatch`: the control plane and the commands that
//! read or feed its ledger.

use std::path::PathBuf;

use afk_core::{Event, IssueKey, JobSource, Priority, Repo, RequeueBy};
use afk_ledger::{Job, Ledger, NewJob};
use anyhow::{bail, Context};
use chrono::Utc;

use crate::app;
use crate::config::Config;

/// `--config FILE`, shared by every command that reads the configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The TOML config file (default: ./afk.toml when it exists, else built-in defaults);
    /// `AFK_<SECTION>_<KEY>` environment variables override it.
    #[arg(long, env = "AFK_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// Loads and validates the configuration.
    pub fn load(&self) -> anyhow::Result<Config> {
        let default = PathBuf::from("afk.toml");
        let path = self
            .config
            .clone()
            .or_else(|| default.is_file().then_some(default));
        Ok(Config::load_from_env(path.as_deref())?)
    }
}

/// `afk run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Runs the control plane until SIGTERM or Ctrl-C; the tick in progress is finished first.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let mut plane = app::control_plane(&config).await?;
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(256);
    let webhooks_on = config
        .github
        .as_ref()
        .is_some_and(|g| g.webhook_secret().is_some());
    if webhooks_on && config.http.listen.is_none() {
        tracing::warn!(
            "a GitHub webhook secret is configured but [http] listen is not: webhooks are off, polling only"
        );
    }
    let events = (webhooks_on && config.http.listen.is_some()).then_some(events_rx);
    if let Some(github) = app::github_side(&config, events)? {
        plane = plane.with_github(github);
    }
    if let Some(listen) = config.http.listen {
        let router = app::http_router(&config, events_tx)?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen} ([http] listen)"))?;
        tracing::info!(
            "HTTP listener on {listen}: GET /healthz{}",
            if webhooks_on {
                ", POST /webhooks/github"
            } else {
                ""
            }
        );
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!("the HTTP listener stopped: {error}");
            }
        });
    }
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    // One control plane per ledger: a second `afk run` stands by and takes over when the first
    // is gone (the lock dies with its process).
    let ledger = plane.ledger().clone();
    let mut standing_by = false;
    let leadership = loop {
        match ledger.try_lead().await {
            Ok(Some(leadership)) => break leadership,
            Ok(None) if !standing_by => {
                tracing::warn!(
                    "another afk run is working on ledger {}: standing by until it stops",
                    ledger.url_redacted()
                );
                standing_by = true;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!("cannot take the lead of the ledger yet: {error}"),
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tokio::time::sleep(config.watch.poll_interval) => {}
        }
    };
    tracing::info!(
        "afk running: T3 at {}, ledger {}, polling every {}",
        config.t3.url,
        ledger.url_redacted(),
        humantime::format_duration(config.watch.poll_interval)
    );
    plane.run(config.watch.poll_interval, &mut shutdown, |_| {}).await;
    leadership.release().await;
    tracing::info!("afk stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: finishing the current tick"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: finishing the current tick"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `afk jobs`.
#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print a JSON array of jobs instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints the ledger's jobs.
pub async fn jobs(args: JobsArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let ledger = app::open_ledger(&config).await?;
    let views = crate::views::jobs(&ledger).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(());
    }
    if views.is_empty() {
        println!("no jobs yet");
        return Ok(());
    }
    print!("{}", crate::views::jobs_table(&views));
    Ok(())
}

/// `afk status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Prints job counts per state and the attempts in flight.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let ledger = app::open_ledger(&config).await?;
    let view = crate::views::status(&ledger).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", view.text());
    }
    Ok(())
}

/// `afk dispatch`.
#[derive(Debug, clap::Args)]
pub struct DispatchArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The repository, OWNER/NAME (it needs a project under [t3.projects]).
    #[arg(long)]
    pub repo: String,
    /// The issue number.
    #[arg(long)]
    pub issue: u64,
    /// The prompt, or @FILE to read it from a file.
    #[arg(long)]
    pub prompt: String,
    /// The issue's title (default: the prompt's first line).
    #[arg(long)]
    pub title: Option<String>,
    /// Priority p0 (first) .. p3.
    #[arg(long, default_value = "p2")]
    pub priority: String,
}

/// Queues one job by hand; `afk run` dispatches it.
pub async fn dispatch(args: DispatchArgs) -> anyhow::Result<()> {
    let repo = Repo::new(args.repo.clone()).map_err(|e| anyhow::anyhow!("--repo: {e}"))?;
    let priority: Priority = args
        .priority
        .parse()
        .map_err(|e| anyhow::anyhow!("--priority: {e}"))?;
    let prompt = crate::t3cmd::read_prompt(&args.prompt)?;
    if prompt.trim().is_empty() {
        bail!("--prompt: the prompt is empty");
    }
    let config = args.config.load()?;
    if !config.projects().contains_key(&repo) {
        tracing::warn!(
            "no T3 project is configured for {repo} under [t3.projects]: the job will fail when dispatched"
        );
    }
    let ledger = app::open_ledger(&config).await?;
    let title = args.title.clone().unwrap_or_else(|| {
        prompt
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned()
    });
    let issue = IssueKey {
        repo,
        number: args.issue,
    };
    let now = Utc::now();
    let existing = ledger.job_by_issue(&issue).await?;
    if let Some(existing) = &existing {
        // A job that ended without success can be asked for again (with a fresh budget of
        // attempts); one that is queued, working or done cannot: the machine decides.
        if afk_core::apply(existing.status(), &BY_HAND, &config.retry_policy(), now).is_err() {
            bail!(
                "{issue} already has job {} in state {}",
                existing.id,
                existing.state
            );
        }
        if existing.source != JobSource::Manual {
            // Its text belongs to its source (a file, a GitHub issue); only the retry is manual.
            requeue(&ledger, &config, existing).await?;
            println!(
                "requeued job {} for {issue} with a fresh budget of attempts; its prompt still comes \
                 from the {} source, not from --prompt",
                existing.id, existing.source
            );
            return Ok(());
        }
    }
    let (job, created) = ledger
        .upsert_job(
            &NewJob {
                issue: issue.clone(),
                title,
                body: prompt,
                labels: Vec::new(),
                priority,
                source: JobSource::Manual,
            },
            now,
        )
        .await?;
    if created {
        println!("queued job {} for {issue}", job.id);
    } else {
        requeue(&ledger, &config, &job).await?;
        println!(
            "requeued job {} for {issue} with a fresh budget of attempts",
            job.id
        );
    }
    Ok(())
}

/// `afk dispatch` asking again for a job that ended without success.
const BY_HAND: Event = Event::Requeue {
    by: RequeueBy::Person,
};

async fn requeue(ledger: &Ledger, config: &Config, job: &Job) -> anyhow::Result<()> {
    let now = Utc::now();
    let transition = afk_core::apply(job.status(), &BY_HAND, &config.retry_policy(), now)?;
    ledger.record(job.id, &transition, None, now).await?;
    Ok(())
}
