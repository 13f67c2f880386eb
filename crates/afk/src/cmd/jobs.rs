//! `afk jobs`: the ledger's newest jobs (filtered by state and repository) as a table, or as a
//! JSON array; a ledger of a year's history is read a page at a time, never whole.

use afk_core::{JobState, Repo};
use afk_ledger::JobFilter;

use crate::views;

/// How many jobs `afk jobs` lists without `--limit`.
pub const DEFAULT_LIMIT: u64 = 50;

/// How far `afk jobs` counts the jobs left after its page: beyond, it says "10000+ more", so a
/// long history costs a bounded count.
pub const COUNT_CAP: u64 = 10_000;

/// `afk jobs`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
By default the newest 50 jobs (highest id first) are listed, followed by a line saying how many \
more match, counted up to 10000 (on stderr with --json, whose stdout stays one JSON array).")]
pub struct Args {
    #[command(flatten)]
    pub read: super::ReadArgs,
    /// List at most N jobs, newest first (default 50).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_LIMIT, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    /// Only jobs in state S (queued, dispatching, running, needs_input, retry_wait, succeeded,
    /// in_review, merged, closed, failed, timed_out, cancelled, lost, given_up); repeat it or
    /// separate states with commas.
    #[arg(long, value_name = "S", value_delimiter = ',')]
    pub state: Vec<JobState>,
    /// Only the jobs of the repository OWNER/NAME.
    #[arg(long, value_name = "OWNER/NAME", value_parser = parse_repo)]
    pub repo: Option<Repo>,
}

fn parse_repo(value: &str) -> Result<Repo, String> {
    Repo::new(value.to_owned()).map_err(|e| e.to_string())
}

/// Prints the newest jobs the filters select, and how many more there are.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let ledger = args.read.ledger().await?;
    let states: Vec<&str> = args.state.iter().map(|s| s.as_str()).collect();
    let filter = JobFilter {
        states: &states,
        repo: args.repo.as_ref(),
    };
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let jobs = views::newest_jobs(&ledger, &filter, limit).await?;
    // Counting is only needed when the page is full: a shorter one is everything there is.
    let more = match (jobs.len() == limit, jobs.last()) {
        (true, Some(last)) => {
            ledger
                .count_jobs(&filter, Some(afk_core::JobId(last.id)), COUNT_CAP)
                .await?
        }
        _ => 0,
    };
    let filtered = !states.is_empty() || args.repo.is_some();
    args.read.print(&jobs, |jobs| {
        let mut text = match (jobs.is_empty(), filtered) {
            (true, false) => "no jobs yet\n".to_owned(),
            (true, true) => "no jobs match\n".to_owned(),
            (false, _) => views::jobs_table(jobs),
        };
        if more > 0 {
            text.push_str(&more_line(jobs.len(), more));
            text.push('\n');
        }
        text
    })?;
    if args.read.json && more > 0 {
        eprintln!("afk jobs: {}", more_line(jobs.len(), more));
    }
    Ok(())
}

/// What says that the listing is not everything.
fn more_line(shown: usize, more: u64) -> String {
    let more = match more >= COUNT_CAP {
        true => format!("{COUNT_CAP}+"),
        false => more.to_string(),
    };
    format!("… and {more} more (the newest {shown} are shown; --limit N lists more)")
}
