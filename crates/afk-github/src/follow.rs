//! Following a job's pull request: its state, the head commit's check runs and commit statuses,
//! and the reviews requesting changes by people with write access (with their comments on lines).
//!
//! Reads only; every request goes through the client's ETag cache, so polling an unchanged pull
//! request costs no rate limit. Reviews by anyone without write access are left out (the same
//! trust check as labelling: [`crate::Permission::is_trusted`]).

use afk_core::Repo;
use serde::Deserialize;
use url::Url;

use crate::model::User;
use crate::{GitHubError, Login, Reporter};

/// Where a pull request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullRequestState {
    /// Open: afk follows it.
    Open,
    /// Merged.
    Merged,
    /// Closed without being merged.
    Closed,
}

/// What kind of check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// A check run (GitHub Actions and other Apps).
    CheckRun,
    /// A commit status (older CI integrations).
    Status,
}

impl CheckKind {
    /// Its name in a follow-up's key.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::CheckRun => "check_run",
            CheckKind::Status => "status",
        }
    }
}

/// A check of the head commit that ended without success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCheck {
    /// Check run or commit status.
    pub kind: CheckKind,
    /// Its id on GitHub.
    pub id: u64,
    /// Its name (check run) or context (status).
    pub name: String,
    /// How it ended: `failure`, `timed_out`, `cancelled`, `action_required`, `error`.
    pub conclusion: String,
    /// Its title and summary (check run) or description (status), as given.
    pub summary: String,
    /// Its page, when it has one.
    pub url: Option<String>,
}

/// A comment of a review on a line of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineComment {
    /// The file.
    pub path: String,
    /// The line, when GitHub still places it (it may be outdated).
    pub line: Option<u64>,
    /// The text.
    pub body: String,
    /// Its page.
    pub url: String,
}

/// A review requesting changes, by someone with write access, still standing (it is the
/// reviewer's latest deciding review).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesRequested {
    /// Its id on GitHub.
    pub id: u64,
    /// Who.
    pub reviewer: Login,
    /// Its text.
    pub body: String,
    /// Its page.
    pub url: String,
    /// Its comments on lines.
    pub comments: Vec<LineComment>,
}

/// What a pull request shows now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestActivity {
    /// Its number.
    pub number: u64,
    /// Its page.
    pub url: String,
    /// Open, merged or closed.
    pub state: PullRequestState,
    /// The head commit.
    pub head_sha: String,
    /// The head commit's checks that ended without success (each status context counted by its
    /// latest state).
    pub failed_checks: Vec<FailedCheck>,
    /// Some of the head commit's checks are still running.
    pub checks_pending: bool,
    /// Reviews requesting changes by people with write access.
    pub changes_requested: Vec<ChangesRequested>,
}

#[derive(Deserialize)]
struct Pull {
    number: u64,
    html_url: String,
    state: String,
    #[serde(default)]
    merged_at: Option<String>,
    #[serde(default)]
    merged: Option<bool>,
    head: Head,
}

#[derive(Deserialize)]
struct Head {
    sha: String,
}

#[derive(Deserialize)]
struct CheckRuns {
    check_runs: Vec<CheckRun>,
}

#[derive(Deserialize)]
struct CheckRun {
    id: u64,
    name: String,
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    details_url: Option<String>,
    #[serde(default)]
    output: Option<CheckOutput>,
}

#[derive(Deserialize)]
struct CheckOutput {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    summary: Option<String>,
}

#[derive(Deserialize)]
struct CommitStatus {
    id: u64,
    context: String,
    state: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    target_url: Option<String>,
}

#[derive(Deserialize)]
struct Review {
    id: u64,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    body: Option<String>,
    state: String,
    html_url: String,
}

#[derive(Deserialize)]
struct ReviewComment {
    path: String,
    #[serde(default)]
    line: Option<u64>,
    #[serde(default)]
    original_line: Option<u64>,
    body: String,
    html_url: String,
}

/// Conclusions of a completed check run that call for a follow-up.
const FAILED_CONCLUSIONS: &[&str] = &["failure", "timed_out", "cancelled", "action_required", "startup_failure"];

impl Reporter {
    /// What pull request `number` of `repo` shows now: its state, its head commit's failed and
    /// pending checks, and the reviews requesting changes by people with write access. Checks and
    /// reviews are read only while it is open.
    pub async fn pull_request_activity(
        &self,
        repo: &Repo,
        number: u64,
    ) -> Result<PullRequestActivity, GitHubError> {
        let (owner, name) = (repo.owner(), repo.name());
        let n = number.to_string();
        let pull: Pull = self.client.get_json(self.client.url(&["repos", owner, name, "pulls", &n], &[])).await?;
        let state = if pull.merged == Some(true) || pull.merged_at.is_some() {
            PullRequestState::Merged
        } else if pull.state == "open" {
            PullRequestState::Open
        } else {
            PullRequestState::Closed
        };
        let mut activity = PullRequestActivity {
            number: pull.number,
            url: pull.html_url,
            state,
            head_sha: pull.head.sha,
            failed_checks: Vec::new(),
            checks_pending: false,
            changes_requested: Vec::new(),
        };
        if state != PullRequestState::Open {
            return Ok(activity);
        }
        let sha = activity.head_sha.clone();
        let runs: CheckRuns = self
            .client
            .get_json(self.client.url(
                &["repos", owner, name, "commits", &sha, "check-runs"],
                &[("per_page", "100"), ("filter", "latest")],
            ))
            .await?;
        for run in runs.check_runs {
            if run.status != "completed" {
                activity.checks_pending = true;
                continue;
            }
            let conclusion = run.conclusion.unwrap_or_default();
            if !FAILED_CONCLUSIONS.contains(&conclusion.as_str()) {
                continue;
            }
            let output = run.output.unwrap_or(CheckOutput {
                title: None,
                summary: None,
            });
            let summary = [output.title, output.summary]
                .into_iter()
                .flatten()
                .filter(|t| !t.trim().is_empty())
                .collect::<Vec<_>>()
                .join("\n");
            activity.failed_checks.push(FailedCheck {
                kind: CheckKind::CheckRun,
                id: run.id,
                name: run.name,
                conclusion,
                summary,
                url: run.html_url.or(run.details_url),
            });
        }
        let statuses: Vec<CommitStatus> = self
            .client
            .get_all(self.client.url(
                &["repos", owner, name, "commits", &sha, "statuses"],
                &[("per_page", "100")],
            ))
            .await?;
        // Newest first: the first of each context is its latest state.
        let mut seen: Vec<String> = Vec::new();
        for status in statuses {
            if seen.contains(&status.context) {
                continue;
            }
            seen.push(status.context.clone());
            match status.state.as_str() {
                "pending" => activity.checks_pending = true,
                "failure" | "error" => activity.failed_checks.push(FailedCheck {
                    kind: CheckKind::Status,
                    id: status.id,
                    name: status.context,
                    conclusion: status.state,
                    summary: status.description.unwrap_or_default(),
                    url: status.target_url,
                }),
                _ => {}
            }
        }
        let reviews: Vec<Review> = self
            .client
            .get_all(self.client.url(
                &["repos", owner, name, "pulls", &n, "reviews"],
                &[("per_page", "100")],
            ))
            .await?;
        // Each reviewer's latest deciding review (a comment alone decides nothing).
        let mut latest: Vec<Review> = Vec::new();
        for review in reviews {
            if !matches!(review.state.as_str(), "CHANGES_REQUESTED" | "APPROVED" | "DISMISSED") {
                continue;
            }
            let who = review.user.as_ref().map(|u| u.login.to_ascii_lowercase());
            latest.retain(|r| r.user.as_ref().map(|u| u.login.to_ascii_lowercase()) != who);
            latest.push(review);
        }
        for review in latest.into_iter().filter(|r| r.state == "CHANGES_REQUESTED") {
            let Some(reviewer) = review.user.map(|u| Login::new(u.login)) else {
                continue;
            };
            if !self.permissions.of(repo, &reviewer).await?.is_trusted() {
                tracing::info!(
                    %repo,
                    pull = number,
                    %reviewer,
                    "not following up a review requesting changes: its author has no write access"
                );
                continue;
            }
            let id = review.id.to_string();
            let comments: Vec<ReviewComment> = self
                .client
                .get_all(self.client.url(
                    &["repos", owner, name, "pulls", &n, "reviews", &id, "comments"],
                    &[("per_page", "100")],
                ))
                .await?;
            activity.changes_requested.push(ChangesRequested {
                id: review.id,
                reviewer,
                body: review.body.unwrap_or_default(),
                url: review.html_url,
                comments: comments
                    .into_iter()
                    .map(|c| LineComment {
                        path: c.path,
                        line: c.line.or(c.original_line),
                        body: c.body,
                        url: c.html_url,
                    })
                    .collect(),
            });
        }
        Ok(activity)
    }
}

/// The pull request's number in its page's URL (`…/pull/12`), for a job whose pull request was
/// found by [`Reporter::find_pull_request`].
pub fn pull_request_number(url: &Url) -> Option<u64> {
    let mut segments = url.path_segments()?.rev();
    let number = segments.next()?.parse().ok()?;
    (segments.next()? == "pull").then_some(number)
}
