//! `afk t3 dispatch|snapshot`: the T3 client alone, against any T3 base URL, for people checking
//! afk against a real T3.

use crate::cmd::out::{out, outln};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use super::read_prompt;
use t3_client::{IssueRef, ProjectId, ReqwestTransport, SecretProvider, T3Client, ThreadState};

/// Options every `afk t3` command takes.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// T3's base URL, e.g. http://127.0.0.1:3773 (a trailing slash is fine).
    #[arg(long)]
    pub base_url: String,
    /// A file holding the bearer token; re-read on every request.
    #[arg(long)]
    pub token_file: PathBuf,
}

impl Target {
    fn client(&self) -> T3Client {
        let bearer: Arc<dyn SecretProvider> = Arc::new(afk_secrets::FileProvider::new(&self.token_file));
        T3Client::new(&self.base_url, Arc::new(ReqwestTransport::default()), bearer)
    }
}

/// `afk t3`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a thread for an issue and start its turn; prints the thread id last.
    Dispatch(DispatchArgs),
    /// Print T3's threads as a table (or its read model with --json).
    Snapshot(SnapshotArgs),
}

/// Runs an `afk t3` command.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dispatch(args) => dispatch(args).await,
        Command::Snapshot(args) => snapshot(args).await,
    }
}

/// `afk t3 dispatch`.
#[derive(Debug, clap::Args)]
pub struct DispatchArgs {
    #[command(flatten)]
    pub target: Target,
    /// The repository's T3 project id.
    #[arg(long)]
    pub project_id: String,
    /// The repository, OWNER/NAME.
    #[arg(long)]
    pub repo: String,
    /// The issue number.
    #[arg(long)]
    pub issue: u64,
    /// The issue's title, for the thread's title.
    #[arg(long)]
    pub title: Option<String>,
    /// The prompt, or @FILE to read it from a file.
    #[arg(long)]
    pub prompt: String,
}

/// `afk t3 snapshot`.
#[derive(Debug, clap::Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print T3's read model as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Dispatches one thread and prints its id as the last line.
async fn dispatch(args: DispatchArgs) -> anyhow::Result<()> {
    let repo = afk_core::Repo::new(args.repo.clone()).map_err(|e| anyhow::anyhow!("--repo: {e}"))?;
    let project =
        ProjectId::new(args.project_id.clone()).map_err(|e| anyhow::anyhow!("--project-id: {e}"))?;
    let prompt = read_prompt(&args.prompt)?;
    let client = args.target.client();
    let issue = IssueRef {
        repo: repo.to_string(),
        number: args.issue,
        title: args.title.clone(),
    };
    let plan = client.plan(&issue, project, &prompt, None)?;
    let thread = client
        .dispatch_plan(&plan)
        .await
        .with_context(|| format!("dispatching {repo}#{} to {}", args.issue, client.base_url()))?;
    outln!("{thread}")?;
    Ok(())
}

/// Prints the fleet as a table, or T3's read model as JSON.
async fn snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    let client = args.target.client();
    if args.json {
        let json = client
            .snapshot_json()
            .await
            .with_context(|| format!("reading {}", client.base_url()))?;
        outln!("{}", serde_json::to_string_pretty(&json)?)?;
        return Ok(());
    }
    let model = client
        .snapshot()
        .await
        .with_context(|| format!("reading {}", client.base_url()))?;
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(model.threads.len());
    for t in &model.threads {
        rows.push(vec![
            t.id.to_string(),
            t.title.clone(),
            t.latest_turn
                .as_ref()
                .map(|turn| format!("{:?}", turn.state).to_lowercase())
                .unwrap_or_else(|| "-".into()),
            t.session
                .as_ref()
                .map(|s| format!("{:?}", s.status).to_lowercase())
                .unwrap_or_else(|| "-".into()),
            afk_reads(&client, t).await.into(),
        ]);
    }
    out!(
        "{}",
        crate::views::table(&["thread", "title", "turn", "session", "afk reads"], &rows)
    )?;
    outln!(
        "{} threads, snapshot sequence {}",
        model.threads.len(),
        model.snapshot_sequence
    )?;
    Ok(())
}

/// What afk makes of `thread`, as its watcher does: a deleted thread is `deleted`, and a
/// completed turn is a success only when the thread's detail shows no interrupt (T3 marks an
/// interrupted turn completed within half a second).
async fn afk_reads(client: &T3Client, thread: &t3_client::wire::Thread) -> &'static str {
    if thread.deleted_at.is_some() {
        return "deleted";
    }
    let state = ThreadState::of(Some(thread));
    let turn = thread.latest_turn.as_ref().map(|t| &t.turn_id);
    match (&state, turn) {
        (ThreadState::Succeeded, Some(turn)) => match client.thread_detail(&thread.id).await {
            Ok(Some(detail)) if detail.thread.turn_was_interrupted(turn) => "interrupted",
            Ok(Some(_)) => "succeeded",
            // Not confirmed: T3 did not show the turn's activities.
            _ => "completed?",
        },
        _ => thread_state_name(&state),
    }
}

fn thread_state_name(state: &ThreadState) -> &'static str {
    match state {
        ThreadState::Starting => "starting",
        ThreadState::Running => "running",
        ThreadState::Succeeded => "succeeded",
        ThreadState::Failed { .. } => "failed",
        ThreadState::Interrupted => "interrupted",
        ThreadState::Lost => "lost",
    }
}
