//! `afk dispatch`: queue one job by hand; `afk run` dispatches it.

use crate::cmd::out::outln;
use afk_core::{apply, Event, IssueKey, JobSource, Priority, Repo, RequeueBy, RetryPolicy};
use afk_ledger::{Job, Ledger, NewJob};
use anyhow::bail;
use chrono::{DateTime, Utc};

use super::{read_prompt, ConfigArg};
use crate::app;

/// `afk dispatch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The repository, OWNER/NAME (it needs a project under [t3.projects]).
    #[arg(long)]
    pub repo: String,
    /// The issue number (1 or more, as GitHub numbers issues).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
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

/// A person asking again for a job that ended without success.
const BY_HAND: Event = Event::Requeue {
    by: RequeueBy::Person,
};

/// Queues the job, or requeues the issue's job when it ended without success (with a fresh
/// budget of attempts); refuses when the issue's job is queued, working or done.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let repo = Repo::new(args.repo.clone()).map_err(|e| anyhow::anyhow!("--repo: {e}"))?;
    let priority: Priority = args
        .priority
        .parse()
        .map_err(|e| anyhow::anyhow!("--priority: {e}"))?;
    let prompt = read_prompt(&args.prompt)?;
    let config = args.config.load()?;
    if !config.projects().contains_key(&repo) {
        tracing::warn!(
            "no T3 project is configured for {repo} under [t3.projects]: the job will fail when dispatched"
        );
    }
    let retry = config.retry_policy();
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
    if let Some(existing) = ledger.job_by_issue(&issue).await? {
        // The machine decides whether the job may be asked for again.
        if apply(existing.status(), &BY_HAND, &retry, now).is_err() {
            bail!(
                "{issue} already has job {} in state {}",
                existing.id,
                existing.state
            );
        }
        if existing.source != JobSource::Manual {
            // Its text belongs to its source (a file, a GitHub issue); only the retry is manual.
            requeue(&ledger, &retry, &existing, now).await?;
            outln!(
                "requeued job {} for {issue} with a fresh budget of attempts; its prompt still comes \
                 from the {} source, not from --prompt",
                existing.id,
                existing.source
            )?;
            return Ok(());
        }
    }
    let new = NewJob {
        issue: issue.clone(),
        title,
        body: prompt,
        labels: Vec::new(),
        priority,
        source: JobSource::Manual,
    };
    let (job, created) = ledger.upsert_job(&new, now).await?;
    if created {
        outln!("queued job {} for {issue}", job.id)?;
    } else {
        requeue(&ledger, &retry, &job, now).await?;
        outln!(
            "requeued job {} for {issue} with a fresh budget of attempts",
            job.id
        )?;
    }
    Ok(())
}

async fn requeue(ledger: &Ledger, retry: &RetryPolicy, job: &Job, now: DateTime<Utc>) -> anyhow::Result<()> {
    let transition = apply(job.status(), &BY_HAND, retry, now)?;
    ledger.record(job.id, &transition, None, now).await?;
    Ok(())
}
