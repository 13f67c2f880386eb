//! Intake: which issues afk may work on.
//!
//! An issue is eligible when it is open, is not a pull request, carries the trigger label, and the
//! **latest** `labeled` event for that label was made by someone with write, maintain or admin
//! permission on the repository. The agent runs with full access, so this check is the safety
//! boundary: anyone can open an issue, only a trusted person can hand it to an agent.
//!
//! **Invariant:** intake never writes to GitHub. An untrusted labeler is reported in
//! [`Scan::skipped`] and logged, never answered with a comment (that would let strangers make afk
//! post on demand).

use crate::lock;
use std::collections::HashSet;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use afk_core::{IssueKey, Priority, Repo};
use url::Url;

use crate::client::GitHubClient;
use crate::error::{GitHubError, IssueGone};
use crate::model;
use crate::trust::{Login, Permission, Permissions, PERMISSION_TTL};

/// The trigger label used when none is configured.
pub const DEFAULT_TRIGGER_LABEL: &str = "afk";

/// What intake watches.
#[derive(Debug, Clone)]
pub struct IntakeConfig {
    /// The repositories to scan.
    pub repos: Vec<Repo>,
    /// The label that hands an issue to afk (default [`DEFAULT_TRIGGER_LABEL`]).
    pub trigger_label: String,
    /// How long a looked-up permission is trusted before it is asked again (default 10 minutes).
    /// Longer saves rate limit; shorter notices a revoked collaborator sooner.
    pub permission_ttl: Duration,
}

impl IntakeConfig {
    /// Defaults for everything but the repositories.
    pub fn new(repos: Vec<Repo>) -> Self {
        Self {
            repos,
            trigger_label: DEFAULT_TRIGGER_LABEL.to_owned(),
            permission_ttl: PERMISSION_TTL,
        }
    }
}

/// An issue afk may work on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EligibleIssue {
    /// The repository.
    pub repo: Repo,
    /// The issue number.
    pub number: u64,
    /// The title.
    pub title: String,
    /// The body (empty when the issue has none).
    pub body: String,
    /// All label names, as on GitHub.
    pub labels: Vec<String>,
    /// Who opened the issue.
    pub author: Login,
    /// The issue's page on GitHub.
    pub url: Url,
    /// From the labels `afk:p0`..`afk:p3` (the most urgent wins); [`Priority::DEFAULT`] without one.
    pub priority: Priority,
    /// Who applied the trigger label (trusted, by construction).
    pub labeled_by: Login,
}

impl EligibleIssue {
    /// The job key for this issue.
    pub fn key(&self) -> IssueKey {
        IssueKey {
            repo: self.repo.clone(),
            number: self.number,
        }
    }
}

/// Why an issue carrying the trigger label is not eligible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The label was applied by someone without write access.
    UntrustedLabeler {
        /// Who applied it.
        login: Login,
        /// Their permission.
        permission: Permission,
    },
    /// No `labeled` event for the trigger label was found, so nobody can vouch for it.
    LabelerUnknown,
    /// The issue is closed.
    Closed,
    /// The issue does not carry the trigger label.
    NotLabelled,
    /// It is a pull request, not an issue.
    PullRequest,
    /// GitHub no longer has the issue here (deleted, transferred, or 404): final.
    Gone(IssueGone),
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::UntrustedLabeler { login, permission } => write!(
                f,
                "the trigger label was applied by {login}, whose permission is {permission} \
                 (write, maintain or admin is required)"
            ),
            SkipReason::LabelerUnknown => {
                f.write_str("no label event shows who applied the trigger label, so it cannot be trusted")
            }
            SkipReason::Closed => f.write_str("the issue is closed"),
            SkipReason::NotLabelled => f.write_str("the issue does not carry the trigger label"),
            SkipReason::PullRequest => f.write_str("it is a pull request, not an issue"),
            SkipReason::Gone(gone) => gone.fmt(f),
        }
    }
}

/// An issue with the trigger label that was not taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedIssue {
    /// The repository.
    pub repo: Repo,
    /// The issue number.
    pub number: u64,
    /// Why.
    pub reason: SkipReason,
}

/// The answer for one issue, from [`Intake::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// afk may work on it (boxed: it is large and the other variant small).
    Eligible(Box<EligibleIssue>),
    /// afk must not, for this reason.
    Skipped(SkipReason),
}

/// The result of one poll over every configured repository.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Eligible issues, in repository order then issue number order.
    pub eligible: Vec<EligibleIssue>,
    /// Labelled issues refused because of who labelled them.
    pub skipped: Vec<SkippedIssue>,
    /// False when some repository, page or permission lookup failed. The caller must then not
    /// conclude that an issue missing from `eligible` lost its label (don't cancel on a partial scan).
    pub complete: bool,
    /// The failures behind `complete == false`, for logs and the status surface.
    pub errors: Vec<String>,
}

/// Finds eligible issues. Holds the permission cache, so keep one for the life of the process.
pub struct Intake {
    client: GitHubClient,
    config: IntakeConfig,
    permissions: Permissions,
    // Issues already logged as skipped, so a 30-second poll does not repeat the same line forever.
    logged_skips: Mutex<HashSet<(IssueKey, String)>>,
}

impl fmt::Debug for Intake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Intake")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Intake {
    /// Intake over `client` with `config`.
    pub fn new(client: GitHubClient, config: IntakeConfig) -> Self {
        Self {
            permissions: Permissions::new(client.clone(), config.permission_ttl),
            client,
            config,
            logged_skips: Mutex::new(HashSet::new()),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &IntakeConfig {
        &self.config
    }

    /// Lists every eligible issue of every configured repository. Never fails as a whole: a
    /// failing repository is recorded in [`Scan::errors`] and makes [`Scan::complete`] false.
    pub async fn scan(&self) -> Scan {
        let mut scan = Scan {
            complete: true,
            ..Scan::default()
        };
        for repo in &self.config.repos {
            let url = self.client.url(
                &["repos", repo.owner(), repo.name(), "issues"],
                &[
                    ("state", "open"),
                    ("labels", &self.config.trigger_label),
                    ("sort", "created"),
                    ("direction", "asc"),
                    ("per_page", "100"),
                ],
            );
            let issues: Vec<model::Issue> = match self.client.get_all(url).await {
                Ok(issues) => issues,
                Err(e) => {
                    tracing::warn!(%repo, error = %e, "cannot list issues; this poll is partial");
                    scan.complete = false;
                    scan.errors.push(format!("{repo}: {e}"));
                    continue;
                }
            };
            for issue in issues {
                let number = issue.number;
                match self.judge(repo, issue).await {
                    Ok(Verdict::Eligible(e)) => scan.eligible.push(*e),
                    Ok(Verdict::Skipped(SkipReason::PullRequest)) => {}
                    Ok(Verdict::Skipped(reason)) => scan.skipped.push(SkippedIssue {
                        repo: repo.clone(),
                        number,
                        reason,
                    }),
                    Err(e) => {
                        tracing::warn!(%repo, issue = number, error = %e, "cannot check issue; this poll is partial");
                        scan.complete = false;
                        scan.errors.push(format!("{repo}#{number}: {e}"));
                    }
                }
            }
        }
        scan
    }

    /// Checks one issue now (e.g. when a webhook says it was labelled, closed, deleted or
    /// transferred). A deleted or transferred issue (or one GitHub answers 404 for while the
    /// repository is readable) is `Skipped(SkipReason::Gone)`: final, its job is to be cancelled
    /// with that reason.
    pub async fn check(&self, repo: &Repo, number: u64) -> Result<Verdict, GitHubError> {
        let url = self.client.url(
            &["repos", repo.owner(), repo.name(), "issues", &number.to_string()],
            &[],
        );
        let issue: model::Issue = match self.client.get_json(url).await {
            Ok(issue) => issue,
            Err(error) => {
                return match self.client.issue_gone(repo, &error).await? {
                    Some(gone) => {
                        self.log_skip(
                            &IssueKey {
                                repo: repo.clone(),
                                number,
                            },
                            &SkipReason::Gone(gone.clone()),
                        );
                        Ok(Verdict::Skipped(SkipReason::Gone(gone)))
                    }
                    None => Err(error),
                }
            }
        };
        self.judge(repo, issue).await
    }

    async fn judge(&self, repo: &Repo, issue: model::Issue) -> Result<Verdict, GitHubError> {
        if issue.pull_request.is_some() {
            return Ok(Verdict::Skipped(SkipReason::PullRequest));
        }
        if issue.state != "open" {
            return Ok(Verdict::Skipped(SkipReason::Closed));
        }
        let trigger = &self.config.trigger_label;
        if !issue.labels.iter().any(|l| &l.name == trigger) {
            return Ok(Verdict::Skipped(SkipReason::NotLabelled));
        }
        let key = IssueKey {
            repo: repo.clone(),
            number: issue.number,
        };
        let Some(labeler) = self.labeler(repo, issue.number).await? else {
            self.log_skip(&key, &SkipReason::LabelerUnknown);
            return Ok(Verdict::Skipped(SkipReason::LabelerUnknown));
        };
        let permission = self.permissions.of(repo, &labeler).await?;
        if !permission.is_trusted() {
            let reason = SkipReason::UntrustedLabeler {
                login: labeler,
                permission,
            };
            self.log_skip(&key, &reason);
            return Ok(Verdict::Skipped(reason));
        }
        let url = Url::parse(&issue.html_url).map_err(|e| GitHubError::Decode {
            url: format!("{key}"),
            reason: format!("html_url {:?} is not a URL: {e}", issue.html_url),
        })?;
        let labels: Vec<String> = issue.labels.into_iter().map(|l| l.name).collect();
        Ok(Verdict::Eligible(Box::new(EligibleIssue {
            priority: priority_from_labels(&labels),
            repo: repo.clone(),
            number: issue.number,
            title: issue.title,
            body: issue.body.unwrap_or_default(),
            labels,
            author: Login::new(issue.user.login),
            url,
            labeled_by: labeler,
        })))
    }

    /// The actor of the latest `labeled` event for the trigger label.
    async fn labeler(&self, repo: &Repo, number: u64) -> Result<Option<Login>, GitHubError> {
        let url = self.client.url(
            &[
                "repos",
                repo.owner(),
                repo.name(),
                "issues",
                &number.to_string(),
                "events",
            ],
            &[("per_page", "100")],
        );
        let events: Vec<model::IssueEvent> = self.client.get_all(url).await?;
        let trigger = &self.config.trigger_label;
        // Events come oldest first; ties on created_at keep list order, so the last one wins.
        let latest = events
            .into_iter()
            .enumerate()
            .filter(|(_, e)| e.event == "labeled" && e.label.as_ref().is_some_and(|l| &l.name == trigger))
            .max_by_key(|(i, e)| (e.created_at, *i))
            .and_then(|(_, e)| e.actor);
        Ok(latest.map(|a| Login::new(a.login)))
    }

    fn log_skip(&self, key: &IssueKey, reason: &SkipReason) {
        let reason_text = reason.to_string();
        if lock(&self.logged_skips).insert((key.clone(), reason_text.clone())) {
            tracing::info!(issue = %key, "skipping issue: {reason_text}");
        } else {
            tracing::debug!(issue = %key, "still skipping issue: {reason_text}");
        }
    }
}

/// The most urgent `afk:pN` label, or the default priority.
pub fn priority_from_labels<S: AsRef<str>>(labels: &[S]) -> Priority {
    labels
        .iter()
        .filter(|l| l.as_ref().starts_with("afk:p"))
        .filter_map(|l| l.as_ref().parse::<Priority>().ok())
        .min()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_urgent_priority_label_wins() {
        assert_eq!(
            priority_from_labels(&["bug", "afk:p3", "afk:p1"]),
            Priority::new(1).unwrap()
        );
        assert_eq!(priority_from_labels(&["bug"]), Priority::DEFAULT);
        assert_eq!(
            priority_from_labels(&["p0"]),
            Priority::DEFAULT,
            "only afk:pN labels count"
        );
    }
}
