//! Intake: which issues afk may work on.
//!
//! An issue is eligible when it is open, is not a pull request, carries the trigger label, and the
//! **latest** `labeled` event for that label was made by someone with write, maintain or admin
//! permission on the repository. The agent runs with full access, so this check is the safety
//! boundary: anyone can open an issue, only a trusted person can hand it to an agent.
//!
//! The text handed to the agent must be text a trusted person has seen: when the title or body
//! changed after that label by someone without write access, the issue is not taken
//! ([`SkipReason::UntrustedEdit`], see [`crate::edits`]) until a trusted person labels it again.
//!
//! **Invariant:** intake never writes to GitHub. An untrusted labeler is reported in
//! [`Scan::skipped`] and logged, never answered with a comment (that would let strangers make afk
//! post on demand).

use crate::lock;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use afk_core::{IssueKey, Priority, Repo};
use chrono::{DateTime, Utc};
use url::Url;

use crate::client::GitHubClient;
use crate::edits::{edits_after_label, EditedField, TextEdit, TrustedLabel, UntrustedEdit};
use crate::error::{GitHubError, IssueGone};
use crate::model;
use crate::report::{LABEL_CLOSED, LABEL_DONE, LABEL_FAILED, LABEL_MERGED, STATUS_LABELS};
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
    /// When: the title and body are as this person saw them then, or changed since only by
    /// trusted people. A job that took its text before this instant may take it again.
    pub labeled_at: Option<DateTime<Utc>>,
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
    /// A trusted person labelled it, but its title or body changed afterwards by someone without
    /// write access. The issue stays handed over (a job that took the vouched text may go on, see
    /// [`SkipReason::withdraws`]); no job may start from the current text until a trusted person
    /// applies the label again. The one refusal afk says on the issue
    /// ([`crate::Reporter::report_untrusted_edit`]).
    UntrustedEdit(Box<UntrustedEdit>),
    /// afk already took this issue under the current trigger label and finished with it: its own
    /// `afk:done` or `afk:failed` label came after the trigger label and is still there. No new
    /// job starts, and its text is not examined again (afk keeps the text it took; every restart
    /// would otherwise ask GitHub about every finished issue that still carries the label). The
    /// issue stays handed over ([`SkipReason::withdraws`] is false).
    Finished {
        /// afk's status label on it.
        status: String,
    },
}

impl SkipReason {
    /// True when the issue is no longer handed to afk, so its job must be cancelled: every reason
    /// but [`SkipReason::UntrustedEdit`] (the label still stands; only the current text is not
    /// vouched for, and the job keeps the text it took) and [`SkipReason::Finished`].
    pub fn withdraws(&self) -> bool {
        !matches!(self, SkipReason::UntrustedEdit(_) | SkipReason::Finished { .. })
    }
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
            SkipReason::UntrustedEdit(edit) => edit.fmt(f),
            SkipReason::Finished { status } => write!(
                f,
                "afk already finished it since the trigger label was applied (its `{status}` label)"
            ),
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
    /// Who opened it.
    pub author: Login,
    /// Its page on GitHub, when GitHub gave a valid one.
    pub url: Option<Url>,
}

impl SkippedIssue {
    /// The job key for this issue.
    pub fn key(&self) -> IssueKey {
        IssueKey {
            repo: self.repo.clone(),
            number: self.number,
        }
    }
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
    /// Labelled issues not taken: because of who labelled them, or who changed their text since.
    pub skipped: Vec<SkippedIssue>,
    /// False when some repository, page or permission lookup failed. The caller must then not
    /// conclude that an issue missing from `eligible` lost its label (don't cancel on a partial scan).
    pub complete: bool,
    /// The failures behind `complete == false`, for logs and the status surface.
    pub errors: Vec<String>,
    /// The same failures as errors, for deciding what they mean (a person must act, or it will
    /// pass).
    pub failures: Vec<GitHubError>,
}

impl Scan {
    /// The issues still handed to afk: the eligible ones, and those held back only because their
    /// text changed under an untrusted editor since the label ([`SkipReason::withdraws`] is
    /// false: a job that already took the vouched text may go on). On a complete scan, a job
    /// whose issue is not in this set is to be withdrawn.
    pub fn handed_over(&self) -> HashSet<IssueKey> {
        self.eligible
            .iter()
            .map(EligibleIssue::key)
            .chain(
                self.skipped
                    .iter()
                    .filter(|s| !s.reason.withdraws())
                    .map(SkippedIssue::key),
            )
            .collect()
    }
}

/// An issue body's last edit as GitHub told it, and the issue's `updated_at` at the time.
type SeenBodyEdit = (DateTime<Utc>, Option<TextEdit>);

/// The GraphQL query for an issue body's last edit.
const BODY_EDIT_QUERY: &str = "query($owner: String!, $name: String!, $number: Int!) { \
    repository(owner: $owner, name: $name) { issue(number: $number) { lastEditedAt editor { login } } } }";
/// Bound on remembered body edits; past it the cache starts over (a few extra queries).
const BODY_EDIT_CACHE_LIMIT: usize = 10_000;

/// Finds eligible issues. Holds the permission cache, so keep one for the life of the process.
pub struct Intake {
    client: GitHubClient,
    config: IntakeConfig,
    permissions: Permissions,
    /// Each issue's last body edit, with the issue's `updated_at` when it was asked.
    body_edits: Mutex<HashMap<IssueKey, SeenBodyEdit>>,
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
            body_edits: Mutex::new(HashMap::new()),
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
                    // Said by the caller, once per cause rather than once per poll.
                    tracing::debug!(%repo, error = %e, "cannot list issues; this poll is partial");
                    scan.complete = false;
                    scan.errors.push(format!("{repo}: {e}"));
                    scan.failures.push(e);
                    continue;
                }
            };
            for issue in issues {
                let number = issue.number;
                let author = Login::new(issue.user.login.clone());
                let url = Url::parse(&issue.html_url).ok();
                match self.judge(repo, issue).await {
                    Ok(Verdict::Eligible(e)) => scan.eligible.push(*e),
                    Ok(Verdict::Skipped(SkipReason::PullRequest)) => {}
                    Ok(Verdict::Skipped(reason)) => scan.skipped.push(SkippedIssue {
                        repo: repo.clone(),
                        number,
                        reason,
                        author,
                        url,
                    }),
                    Err(e) => {
                        tracing::debug!(%repo, issue = number, error = %e, "cannot check issue; this poll is partial");
                        scan.complete = false;
                        scan.errors.push(format!("{repo}#{number}: {e}"));
                        scan.failures.push(e);
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
        let events = self.events(repo, issue.number).await?;
        let Some((label_position, label)) = self.latest_trigger_label(&events) else {
            self.log_skip(&key, &SkipReason::LabelerUnknown);
            return Ok(Verdict::Skipped(SkipReason::LabelerUnknown));
        };
        let permission = self.permissions.of(repo, &label.by).await?;
        if !permission.is_trusted() {
            let reason = SkipReason::UntrustedLabeler {
                login: label.by,
                permission,
            };
            self.log_skip(&key, &reason);
            return Ok(Verdict::Skipped(reason));
        }
        if let Some(status) = self.finished_since(&issue, &events, label_position).await? {
            let reason = SkipReason::Finished { status };
            self.log_skip(&key, &reason);
            return Ok(Verdict::Skipped(reason));
        }
        if let Some(untrusted) = self
            .untrusted_edit(&key, &issue, &events, label_position, &label)
            .await?
        {
            let reason = SkipReason::UntrustedEdit(Box::new(untrusted));
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
            labeled_by: label.by,
            labeled_at: label.at,
        })))
    }

    /// The issue's events, oldest first.
    async fn events(&self, repo: &Repo, number: u64) -> Result<Vec<model::IssueEvent>, GitHubError> {
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
        self.client.get_all(url).await
    }

    /// The latest `labeled` event for the trigger label (its position among `events`), if it
    /// names who applied it. Whether that person is trusted is checked next.
    fn latest_trigger_label(&self, events: &[model::IssueEvent]) -> Option<(usize, TrustedLabel)> {
        let trigger = &self.config.trigger_label;
        // Events come oldest first; ties on created_at keep list order, so the last one wins.
        let (position, event) = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.event == "labeled" && e.label.as_ref().is_some_and(|l| &l.name == trigger))
            .max_by_key(|(i, e)| (e.created_at, *i))?;
        let by = Login::new(event.actor.as_ref()?.login.clone());
        Some((
            position,
            TrustedLabel {
                label: trigger.clone(),
                by,
                at: event.created_at,
            },
        ))
    }

    /// afk's own final status label (`afk:done` or `afk:failed`), when afk applied it after the
    /// trusted label, it is still on the issue, and afk applied no other status label since: afk
    /// took the issue under this label and finished with it.
    async fn finished_since(
        &self,
        issue: &model::Issue,
        events: &[model::IssueEvent],
        label_position: usize,
    ) -> Result<Option<String>, GitHubError> {
        let status_events: Vec<&model::IssueEvent> = events
            .iter()
            .skip(label_position + 1)
            .filter(|e| e.event == "labeled")
            .filter(|e| {
                e.label
                    .as_ref()
                    .is_some_and(|l| STATUS_LABELS.contains(&l.name.as_str()))
            })
            .collect();
        if status_events.is_empty() {
            return Ok(None);
        }
        let me = self.client.identity().await?;
        let latest = status_events
            .into_iter()
            .rev()
            .find(|e| e.actor.as_ref().is_some_and(|a| me.is(&a.login)))
            .and_then(|e| e.label.as_ref())
            .map(|l| l.name.clone());
        Ok(latest.filter(|name| {
            [LABEL_DONE, LABEL_FAILED, LABEL_MERGED, LABEL_CLOSED].contains(&name.as_str())
                && issue.labels.iter().any(|l| &l.name == name)
        }))
    }

    /// The first change to the title or body since the trusted label whose author may not vouch
    /// for it, if any (see [`crate::edits`]).
    async fn untrusted_edit(
        &self,
        key: &IssueKey,
        issue: &model::Issue,
        events: &[model::IssueEvent],
        label_position: usize,
        label: &TrustedLabel,
    ) -> Result<Option<UntrustedEdit>, GitHubError> {
        let renames: Vec<(usize, TextEdit)> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.event == "renamed")
            .map(|(i, e)| {
                (
                    i,
                    TextEdit {
                        field: EditedField::Title,
                        editor: e.actor.as_ref().map(|a| Login::new(a.login.clone())),
                        // Only shown in messages: the order against the label is the list's.
                        at: e.created_at.unwrap_or_else(|| self.client.clock().now()),
                    },
                )
            })
            .collect();
        let body_edit = self.last_body_edit(key, issue).await?;
        for edit in edits_after_label(label_position, label.at, &renames, body_edit.as_ref()) {
            let permission = match &edit.editor {
                Some(editor) => self.permissions.of(&key.repo, editor).await?,
                None => Permission::None,
            };
            if !permission.is_trusted() {
                return Ok(Some(UntrustedEdit {
                    edit,
                    permission,
                    label: label.clone(),
                }));
            }
        }
        Ok(None)
    }

    /// The body's last edit (GraphQL; REST has no record of it). Remembered per issue with the
    /// issue's `updated_at`, which moves with every change: while it stands still, so does the
    /// answer, and an idle poll sends no query.
    async fn last_body_edit(
        &self,
        key: &IssueKey,
        issue: &model::Issue,
    ) -> Result<Option<TextEdit>, GitHubError> {
        if let Some(updated_at) = issue.updated_at {
            if let Some((seen_at, edit)) = lock(&self.body_edits).get(key) {
                if *seen_at == updated_at {
                    return Ok(edit.clone());
                }
            }
        }
        let data: model::IssueEditsData = self
            .client
            .graphql(
                BODY_EDIT_QUERY,
                serde_json::json!({
                    "owner": key.repo.owner(),
                    "name": key.repo.name(),
                    "number": key.number,
                }),
            )
            .await?;
        let edits = data
            .repository
            .and_then(|r| r.issue)
            .ok_or_else(|| GitHubError::GraphQl {
                url: key.to_string(),
                message: "the issue is missing from GitHub's answer".into(),
            })?;
        let edit = edits.last_edited_at.map(|at| TextEdit {
            field: EditedField::Body,
            editor: edits.editor.map(|u| Login::new(u.login)),
            at,
        });
        if let Some(updated_at) = issue.updated_at {
            let mut cache = lock(&self.body_edits);
            if cache.len() >= BODY_EDIT_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key.clone(), (updated_at, edit.clone()));
        }
        Ok(edit)
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
