//! Reporting back on the issue: one status comment, the status labels, and the pull request.
//!
//! **Invariant:** an issue has at most one status comment from afk. It is found by
//! [`STATUS_MARKER`] (an HTML comment, invisible on GitHub) in a comment written by afk's own
//! account, created on the first report and edited in place afterwards; when the remembered
//! comment id is lost (restart) or stale (the comment was deleted), the comments are searched
//! before a new one is created. afk never edits anybody else's comment.

use crate::lock;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use afk_core::{IssueKey, JobState};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;
use url::Url;

use crate::client::GitHubClient;
use crate::edits::UntrustedEdit;
use crate::error::{GitHubError, IssueGone};
use crate::model;
use crate::trust::{Login, Permissions, PERMISSION_TTL};

/// The hidden marker that identifies afk's status comment.
pub const STATUS_MARKER: &str = "<!-- afk:status -->";
/// Label while afk works on the issue (queued, running, waiting to retry).
pub const LABEL_RUNNING: &str = "afk:running";
/// Label after success.
pub const LABEL_DONE: &str = "afk:done";
/// Label after afk gave up.
pub const LABEL_FAILED: &str = "afk:failed";
/// Label while the agent waits for a person to answer it in T3 (the job is `needs_input`).
pub const LABEL_NEEDS_YOU: &str = "afk:needs-you";
/// Label while afk follows the job's pull request (its checks, reviews and state).
pub const LABEL_IN_REVIEW: &str = "afk:in-review";
/// Label after the job's pull request was merged.
pub const LABEL_MERGED: &str = "afk:merged";
/// Label after the job's pull request was closed without being merged.
pub const LABEL_CLOSED: &str = "afk:closed";
/// All of afk's status labels.
pub const STATUS_LABELS: [&str; 7] = [
    LABEL_RUNNING,
    LABEL_DONE,
    LABEL_FAILED,
    LABEL_NEEDS_YOU,
    LABEL_IN_REVIEW,
    LABEL_MERGED,
    LABEL_CLOSED,
];

/// The status label a job in `state` should carry; `None` for a cancelled job (afk stepped back,
/// so none of its labels should remain).
pub fn status_label(state: JobState) -> Option<&'static str> {
    match state {
        JobState::Succeeded => Some(LABEL_DONE),
        JobState::Failed | JobState::GivenUp => Some(LABEL_FAILED),
        JobState::Cancelled => None,
        JobState::NeedsInput => Some(LABEL_NEEDS_YOU),
        JobState::InReview => Some(LABEL_IN_REVIEW),
        JobState::Merged => Some(LABEL_MERGED),
        JobState::Closed => Some(LABEL_CLOSED),
        JobState::Queued
        | JobState::Dispatching
        | JobState::Running
        | JobState::RetryWait
        | JobState::TimedOut
        | JobState::Lost => Some(LABEL_RUNNING),
    }
}

/// The T3 thread of an attempt, as the comment shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadLink {
    /// The T3 thread id.
    pub id: String,
    /// Where a person can watch the thread in T3's web UI, when afk knows T3's web URL.
    pub url: Option<Url>,
}

/// How a pull request was matched to the issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullRequestMatch {
    /// Its head branch is one of the attempts' branches, in the issue's repository.
    Branch,
    /// Its description closes the issue (`Fixes #N`, `Closes #N`, `Resolves #N`) and its author
    /// is afk or has write access.
    ClosingReference,
}

/// A pull request found for an issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestRef {
    /// Its number.
    pub number: u64,
    /// Its page.
    pub url: Url,
    /// Why it is believed to be the agent's.
    pub matched_by: PullRequestMatch,
}

/// The outcome of looking for the agent's pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullRequestSearch {
    /// Found one.
    Found(PullRequestRef),
    /// None is on an attempt's branch, and none that closes the issue is by afk or a writer.
    NotFound {
        /// The attempt branches that were looked for.
        branches: Vec<String>,
    },
}

/// What the status comment says. Build one on every job transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The issue.
    pub issue: IssueKey,
    /// The attempt number, 1 for the first.
    pub attempt: u32,
    /// The job's state.
    pub state: JobState,
    /// The attempt's thread, once dispatched.
    pub thread: Option<ThreadLink>,
    /// When the attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended; `None` while it runs (the duration then counts up to the report's time).
    pub finished_at: Option<DateTime<Utc>>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The result of the pull-request search (after success).
    pub pull_request: Option<PullRequestSearch>,
    /// What the agent asks, while the job waits for a person (`needs_input`).
    pub question: Option<String>,
    /// The follow-through of its pull request, once afk follows one.
    pub follow_ups: Option<FollowUpStatus>,
}

/// How the follow-through of a job's pull request stands, for the status comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUpStatus {
    /// Follow-up turns so far.
    pub used: u32,
    /// The most allowed (`followup.max_turns`).
    pub max_turns: u32,
    /// What the latest follow-up answered, one line.
    pub latest_cause: Option<String>,
    /// Not followed up: what waits for a person, one line.
    pub waiting_for_person: Option<String>,
    /// Why that was not followed up when it is not the limit of follow-up turns: the job's
    /// agent time budget, with its figures.
    pub held_by_budget: Option<String>,
}

/// The status comment on GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusComment {
    /// The comment id.
    pub id: u64,
    /// Its permalink.
    pub url: String,
}

/// What [`Reporter::report`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The status comment is written and the labels are in step.
    Reported(StatusComment),
    /// GitHub no longer has the issue: nothing was (or will be) written; cancel the job with
    /// this reason.
    IssueGone(IssueGone),
}

impl ReportOutcome {
    /// The status comment, when one was written.
    pub fn comment(&self) -> Option<&StatusComment> {
        match self {
            ReportOutcome::Reported(c) => Some(c),
            ReportOutcome::IssueGone(_) => None,
        }
    }
}

/// Writes status comments and labels. Keep one for the process: it remembers comment ids.
pub struct Reporter {
    pub(crate) client: GitHubClient,
    /// Who may author a pull request afk names (cached as long as intake's default).
    pub(crate) permissions: Permissions,
    comment_ids: Mutex<HashMap<IssueKey, u64>>,
    /// What this process last wrote in each issue's status comment ([`content_of`] its body)
    /// and the comment it is in. Trusted without asking GitHub: a status comment a person
    /// deletes or edits meanwhile is put back with the next report that says something else (the
    /// job's next change), not by a report tried again with the same words.
    last_written: Mutex<HashMap<IssueKey, (u64, StatusComment)>>,
    /// Untrusted-edit notices already on GitHub: (issue, marker).
    noticed: Mutex<HashSet<(IssueKey, String)>>,
    /// Issues GitHub no longer has: nothing more is sent for them.
    gone: Mutex<HashMap<IssueKey, IssueGone>>,
    // One report at a time per issue, so two quick transitions cannot both create a comment.
    issue_locks: Mutex<HashMap<IssueKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

impl Reporter {
    /// A reporter over `client`.
    pub fn new(client: GitHubClient) -> Self {
        Self {
            permissions: Permissions::new(client.clone(), PERMISSION_TTL),
            client,
            comment_ids: Mutex::new(HashMap::new()),
            last_written: Mutex::new(HashMap::new()),
            gone: Mutex::new(HashMap::new()),
            noticed: Mutex::new(HashSet::new()),
            issue_locks: Mutex::new(HashMap::new()),
        }
    }

    /// Creates or edits the status comment and puts the status labels in step with `report.state`.
    ///
    /// When GitHub no longer has the issue (deleted: 410; transferred: 301; 404 while the
    /// repository is readable) the answer is `Ok(ReportOutcome::IssueGone)`: there is nowhere to
    /// report, now or later, so this reporter sends nothing more for that issue, and the caller
    /// cancels the job with that reason. A 404 for the whole repository stays an `Err`.
    pub async fn report(&self, report: &StatusReport) -> Result<ReportOutcome, GitHubError> {
        match self.report_comment(report).await? {
            ReportOutcome::Reported(comment) => Ok(self
                .report_labels(&report.issue, report.state)
                .await?
                .map_or(ReportOutcome::Reported(comment), ReportOutcome::IssueGone)),
            gone => Ok(gone),
        }
    }

    /// The user-visible half of [`Self::report`]: creates or edits the status comment only (the
    /// labels are [`Self::report_labels`]'s). A caller with many reports to make writes every
    /// comment first and the labels after, so that the last of a burst of reports does not wait
    /// for everybody else's label housekeeping. The same outcomes as [`Self::report`]: an issue
    /// GitHub no longer has is `Ok(ReportOutcome::IssueGone)`, and nothing more is sent for it.
    pub async fn report_comment(&self, report: &StatusReport) -> Result<ReportOutcome, GitHubError> {
        if let Some(gone) = lock(&self.gone).get(&report.issue).cloned() {
            return Ok(ReportOutcome::IssueGone(gone));
        }
        let issue_lock = self.issue_lock(&report.issue);
        let _guard = issue_lock.lock().await;
        let body = render_comment(report, self.client.clock().now());
        match self.upsert_comment(&report.issue, &body).await {
            Ok(comment) => Ok(ReportOutcome::Reported(comment)),
            Err(error) => Ok(ReportOutcome::IssueGone(
                self.gone_or(&report.issue, error).await?,
            )),
        }
    }

    /// The housekeeping half of [`Self::report`]: puts the status labels in step with `state`
    /// ([`Self::set_status_labels`]). `Ok(Some(gone))` when GitHub no longer has the issue (and
    /// nothing more is sent for it), `Ok(None)` once the labels are right.
    pub async fn report_labels(
        &self,
        issue: &IssueKey,
        state: JobState,
    ) -> Result<Option<IssueGone>, GitHubError> {
        if let Some(gone) = lock(&self.gone).get(issue).cloned() {
            return Ok(Some(gone));
        }
        let issue_lock = self.issue_lock(issue);
        let _guard = issue_lock.lock().await;
        match self.set_status_labels(issue, state).await {
            Ok(()) => Ok(None),
            Err(error) => Ok(Some(self.gone_or(issue, error).await?)),
        }
    }

    /// Forgets what this reporter last wrote in each status comment, so that the next report of
    /// each issue edits its comment even with the same words: for a process that (again) takes
    /// the lead, as another afk may have written the comments meanwhile.
    pub fn forget_written(&self) {
        lock(&self.last_written).clear();
    }

    /// One report at a time per issue, so two quick transitions cannot both create a comment.
    fn issue_lock(&self, issue: &IssueKey) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.issue_locks).entry(issue.clone()).or_default().clone()
    }

    /// Why `error` happened: the issue is gone (remembered: nothing more is sent for it), or
    /// `error` itself.
    async fn gone_or(&self, issue: &IssueKey, error: GitHubError) -> Result<IssueGone, GitHubError> {
        match self.client.issue_gone(&issue.repo, &error).await? {
            Some(gone) => {
                tracing::warn!(%issue, "{gone}; afk stops reporting on it");
                lock(&self.gone).insert(issue.clone(), gone.clone());
                Ok(gone)
            }
            None => Err(error),
        }
    }

    async fn upsert_comment(&self, issue: &IssueKey, body: &str) -> Result<StatusComment, GitHubError> {
        let content = content_of(body);
        // Written already with these words (a report tried again because its labels failed, or
        // a rate limit cut its pass short): editing it again would change nothing a person sees
        // and spend one of GitHub's content-creating requests. (So a comment deleted meanwhile
        // comes back with the next report that says something else; see `last_written`.)
        if let Some((_, comment)) = lock(&self.last_written).get(issue).filter(|(c, _)| *c == content) {
            return Ok(comment.clone());
        }
        let comment = self.upsert_comment_now(issue, body).await?;
        lock(&self.last_written).insert(issue.clone(), (content, comment.clone()));
        Ok(comment)
    }

    async fn upsert_comment_now(&self, issue: &IssueKey, body: &str) -> Result<StatusComment, GitHubError> {
        let remembered = lock(&self.comment_ids).get(issue).copied();
        if let Some(id) = remembered {
            match self.edit_comment(issue, id, body).await {
                Ok(comment) => return Ok(comment),
                // Deleted by someone: look again (another may exist) or create a new one.
                Err(GitHubError::NotFound { .. }) => {
                    lock(&self.comment_ids).remove(issue);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(id) = self.find_status_comment(issue).await? {
            return self.edit_comment(issue, id, body).await;
        }
        let url = self.comments_url(issue, &[]);
        let c: model::Comment = self
            .client
            .send_json(Method::POST, url, &json!({ "body": body }))
            .await?;
        lock(&self.comment_ids).insert(issue.clone(), c.id);
        Ok(StatusComment {
            id: c.id,
            url: c.html_url,
        })
    }

    async fn edit_comment(
        &self,
        issue: &IssueKey,
        id: u64,
        body: &str,
    ) -> Result<StatusComment, GitHubError> {
        let url = self.client.url(
            &[
                "repos",
                issue.repo.owner(),
                issue.repo.name(),
                "issues",
                "comments",
                &id.to_string(),
            ],
            &[],
        );
        let c: model::Comment = self
            .client
            .send_json(Method::PATCH, url, &json!({ "body": body }))
            .await?;
        lock(&self.comment_ids).insert(issue.clone(), c.id);
        Ok(StatusComment {
            id: c.id,
            url: c.html_url,
        })
    }

    /// The oldest comment on the issue that carries [`STATUS_MARKER`] **and** was written by afk
    /// itself ([`GitHubClient::identity`]): a marker in anybody else's comment is ignored, so no
    /// one can make afk's status appear under their name or rewrite it later.
    async fn find_status_comment(&self, issue: &IssueKey) -> Result<Option<u64>, GitHubError> {
        let me = self.client.identity().await?;
        Ok(self
            .comments(issue)
            .await?
            .into_iter()
            .find(|c| by(c, &me) && c.body.as_deref().is_some_and(|b| b.contains(STATUS_MARKER)))
            .map(|c| c.id))
    }

    /// Every comment on the issue, oldest first.
    async fn comments(&self, issue: &IssueKey) -> Result<Vec<model::Comment>, GitHubError> {
        let url = self.comments_url(issue, &[("per_page", "100")]);
        self.client.get_all(url).await
    }

    fn comments_url(&self, issue: &IssueKey, query: &[(&str, &str)]) -> Url {
        self.client.url(
            &[
                "repos",
                issue.repo.owner(),
                issue.repo.name(),
                "issues",
                &issue.number.to_string(),
                "comments",
            ],
            query,
        )
    }

    /// Says on the issue, once per trusted label, why afk did not take it: its text changed after
    /// that label by someone without write access ([`crate::SkipReason::UntrustedEdit`]). The
    /// comment carries a hidden marker naming the label's time; when a comment of afk's own with
    /// that marker is there already (afk restarted), nothing is sent. Returns whether it posted.
    ///
    /// Only for an issue a trusted person handed over: a stranger cannot make afk post at will
    /// (one comment per trusted label at most).
    pub async fn report_untrusted_edit(
        &self,
        issue: &IssueKey,
        edit: &UntrustedEdit,
    ) -> Result<bool, GitHubError> {
        let marker = untrusted_edit_marker(edit);
        if lock(&self.noticed).contains(&(issue.clone(), marker.clone())) {
            return Ok(false);
        }
        let me = self.client.identity().await?;
        let exists = self
            .comments(issue)
            .await?
            .into_iter()
            .any(|c| by(&c, &me) && c.body.as_deref().is_some_and(|b| b.contains(&marker)));
        if !exists {
            let editor = match &edit.edit.editor {
                Some(login) => format!("`{login}` (permission: {})", edit.permission),
                None => "a deleted account".to_owned(),
            };
            let body = format!(
                "{marker}\n**afk** has not taken this issue: its {} was changed by {editor} after \
                 `{}` applied the `{}` label. afk hands an agent only text that someone with write \
                 access has seen. To hand over the current text, someone with write access removes \
                 and re-applies the `{}` label.\n",
                edit.edit.field, edit.label.by, edit.label.label, edit.label.label
            );
            let url = self.comments_url(issue, &[]);
            self.client
                .send_ignoring_body(Method::POST, url, Some(&json!({ "body": body })))
                .await?;
            tracing::info!(%issue, "said on the issue why it was not taken: {edit}");
        }
        lock(&self.noticed).insert((issue.clone(), marker));
        Ok(!exists)
    }

    /// Adds the status label for `state` and removes afk's other status labels; labels that are
    /// already right are left alone (no request).
    pub async fn set_status_labels(&self, issue: &IssueKey, state: JobState) -> Result<(), GitHubError> {
        let number = issue.number.to_string();
        let (owner, name) = (issue.repo.owner(), issue.repo.name());
        let url = self.client.url(
            &["repos", owner, name, "issues", &number, "labels"],
            &[("per_page", "100")],
        );
        let current: Vec<model::LabelRef> = self.client.get_all(url).await?;
        let wanted = status_label(state);
        if let Some(wanted) = wanted {
            if !current.iter().any(|l| l.name == wanted) {
                let url = self
                    .client
                    .url(&["repos", owner, name, "issues", &number, "labels"], &[]);
                self.client
                    .send_ignoring_body(Method::POST, url, Some(&json!({ "labels": [wanted] })))
                    .await?;
            }
        }
        for stale in current
            .iter()
            .filter(|l| STATUS_LABELS.contains(&l.name.as_str()) && Some(l.name.as_str()) != wanted)
        {
            let url = self.client.url(
                &["repos", owner, name, "issues", &number, "labels", &stale.name],
                &[],
            );
            match self.client.send_ignoring_body(Method::DELETE, url, None).await {
                // Someone removed it meanwhile: the goal is reached.
                Ok(()) | Err(GitHubError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Adds `labels` to the issue (e.g. [`crate::PolicySettings::extra_labels`]); labels already
    /// present are not sent again (and so are not afk's to remove later, see
    /// [`Self::remove_added_labels`]). GitHub creates a label that does not exist yet in the
    /// repository.
    pub async fn add_labels(&self, issue: &IssueKey, labels: &[String]) -> Result<(), GitHubError> {
        let number = issue.number.to_string();
        let (owner, name) = (issue.repo.owner(), issue.repo.name());
        let url = self.client.url(
            &["repos", owner, name, "issues", &number, "labels"],
            &[("per_page", "100")],
        );
        let current: Vec<model::LabelRef> = self.client.get_all(url).await?;
        let missing: Vec<&String> = labels
            .iter()
            .filter(|l| !current.iter().any(|c| &c.name == *l))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let url = self
            .client
            .url(&["repos", owner, name, "issues", &number, "labels"], &[]);
        self.client
            .send_ignoring_body(Method::POST, url, Some(&json!({ "labels": missing })))
            .await
    }

    /// Removes, when the job ends, the `labels` afk added when it started ([`Self::add_labels`],
    /// e.g. [`crate::PolicySettings::extra_labels`]): only those whose latest `labeled` event is
    /// afk's own. A label that was there before afk came, or that a person applied again since,
    /// stays. Idempotent and needs no memory of what was added (the issue's events tell), so it
    /// also holds after a restart. Returns the labels removed.
    pub async fn remove_added_labels(
        &self,
        issue: &IssueKey,
        labels: &[String],
    ) -> Result<Vec<String>, GitHubError> {
        let number = issue.number.to_string();
        let (owner, name) = (issue.repo.owner(), issue.repo.name());
        let url = self.client.url(
            &["repos", owner, name, "issues", &number, "labels"],
            &[("per_page", "100")],
        );
        let current: Vec<model::LabelRef> = self.client.get_all(url).await?;
        let present: Vec<&String> = labels
            .iter()
            .filter(|l| current.iter().any(|c| &c.name == *l))
            .collect();
        if present.is_empty() {
            return Ok(Vec::new());
        }
        let me = self.client.identity().await?;
        let url = self.client.url(
            &["repos", owner, name, "issues", &number, "events"],
            &[("per_page", "100")],
        );
        let events: Vec<model::IssueEvent> = self.client.get_all(url).await?;
        let mut removed = Vec::new();
        for label in present {
            let added_by_afk = events
                .iter()
                .rev()
                .find(|e| e.event == "labeled" && e.label.as_ref().is_some_and(|l| &l.name == label))
                .and_then(|e| e.actor.as_ref())
                .is_some_and(|actor| me.is(&actor.login));
            if !added_by_afk {
                continue;
            }
            let url = self
                .client
                .url(&["repos", owner, name, "issues", &number, "labels", label], &[]);
            match self.client.send_ignoring_body(Method::DELETE, url, None).await {
                // Someone removed it meanwhile: the goal is reached.
                Ok(()) | Err(GitHubError::NotFound { .. }) => removed.push(label.clone()),
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Looks for the pull request the agent opened for `issue`, among pull requests afk can
    /// trust (the agent's work is named on the issue, so a stranger's must never be):
    ///
    /// 1. one whose head branch is one of `branches` (the job's attempt branches) **in the
    ///    issue's own repository**; a fork's branch of the same name does not count. Only people
    ///    with write access can push there. The most recent wins.
    /// 2. failing that, the most recent of the latest 100 whose description closes the issue
    ///    (`Fixes #N`, ...) **and** whose author is afk itself or has write access. A fork pull
    ///    request by anyone else is never named.
    pub async fn find_pull_request<I, S>(
        &self,
        issue: &IssueKey,
        branches: I,
    ) -> Result<PullRequestSearch, GitHubError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.find_pull_request_in(issue, branches, &mut RecentPulls::default())
            .await
    }

    /// [`Self::find_pull_request`], reading each repository's latest pull requests once per
    /// `recent` (one pass of reports): the searches of many jobs that finished together cost
    /// GitHub one listing, not one or two requests each. The listing (the latest
    /// [`RECENT_PULLS`], newest first) answers both steps when it holds every pull request of the
    /// repository (fewer than [`RECENT_PULLS`]); otherwise the branches are also asked for one
    /// by one, as an older pull request may be on one of them. Same answers as a fresh search,
    /// as of when `recent` read the repository.
    pub async fn find_pull_request_in<I, S>(
        &self,
        issue: &IssueKey,
        branches: I,
        recent: &mut RecentPulls,
    ) -> Result<PullRequestSearch, GitHubError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut wanted: Vec<String> = Vec::new();
        for branch in branches {
            let branch = branch.as_ref();
            if !wanted.iter().any(|w| w == branch) {
                wanted.push(branch.to_owned());
            }
        }
        let (owner, name) = (issue.repo.owner(), issue.repo.name());
        if !recent.by_repo.contains_key(&issue.repo) {
            let per_page = RECENT_PULLS.to_string();
            let url = self.client.url(
                &["repos", owner, name, "pulls"],
                &[
                    ("state", "all"),
                    ("sort", "created"),
                    ("direction", "desc"),
                    ("per_page", &per_page),
                ],
            );
            let pulls: Vec<model::Pull> = self.client.get_json(url).await?;
            recent.by_repo.insert(issue.repo.clone(), pulls);
        }
        let latest = recent
            .by_repo
            .get(&issue.repo)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let on_a_branch =
            |p: &model::Pull| wanted.iter().any(|b| &p.head.branch == b) && from_repository(p, issue);
        let mut on_branch: Vec<model::Pull> = latest.iter().filter(|p| on_a_branch(p)).cloned().collect();
        if latest.len() >= RECENT_PULLS {
            // Not every pull request of the repository: an older one may be on a branch.
            for branch in &wanted {
                let head = format!("{owner}:{branch}");
                let url = self.client.url(
                    &["repos", owner, name, "pulls"],
                    &[("state", "all"), ("head", &head), ("per_page", "100")],
                );
                let pulls: Vec<model::Pull> = self.client.get_json(url).await?;
                on_branch.extend(pulls.into_iter().filter(|p| on_a_branch(p)));
            }
        }
        if let Some(pull) = on_branch.into_iter().max_by_key(|p| (p.created_at, p.number)) {
            return pull_ref(pull, PullRequestMatch::Branch);
        }
        let mut closing: Vec<model::Pull> = latest
            .iter()
            .filter(|p| p.body.as_deref().is_some_and(|b| closes_issue(b, issue)))
            .cloned()
            .collect();
        closing.sort_by_key(|p| std::cmp::Reverse((p.created_at, p.number)));
        let mut me: Option<Login> = None;
        for pull in closing {
            let Some(author) = pull.user.as_ref().map(|u| Login::new(u.login.clone())) else {
                continue;
            };
            if me.is_none() {
                me = Some(self.client.identity().await?);
            }
            let by_afk = me.as_ref().is_some_and(|me| me.is(author.as_str()));
            if by_afk || self.permissions.of(&issue.repo, &author).await?.is_trusted() {
                return pull_ref(pull, PullRequestMatch::ClosingReference);
            }
            tracing::info!(
                %issue,
                pull = pull.number,
                %author,
                "not naming a pull request that closes the issue: its author has no write access"
            );
        }
        Ok(PullRequestSearch::NotFound { branches: wanted })
    }
}

/// How many of a repository's latest pull requests a search reads in one request (GitHub's
/// largest page).
pub const RECENT_PULLS: usize = 100;

/// The latest pull requests of each repository, as read once for a pass of searches
/// ([`Reporter::find_pull_request_in`]). Make a new one per pass: what it holds ages.
#[derive(Debug, Default)]
pub struct RecentPulls {
    by_repo: HashMap<afk_core::Repo, Vec<model::Pull>>,
}

/// What a status comment's `body` says, as a hash, but for the time of its update (its last
/// line): two bodies with the same content say the same to a person.
fn content_of(body: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let said = body.rsplit_once(UPDATED_LINE).map_or(body, |(said, _)| said);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    said.hash(&mut hasher);
    hasher.finish()
}

/// How the last line of the status comment starts.
const UPDATED_LINE: &str = "\n<sub>Updated by afk at ";

/// True when `comment` was written by `me`.
fn by(comment: &model::Comment, me: &Login) -> bool {
    comment.user.as_ref().is_some_and(|u| me.is(&u.login))
}

/// The hidden marker of the untrusted-edit notice for one trusted label.
fn untrusted_edit_marker(edit: &UntrustedEdit) -> String {
    let at = edit
        .label
        .at
        .map(|at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "unknown".into());
    format!("<!-- afk:untrusted-edit label-at={at} -->")
}

/// True when the pull request's head branch is in the issue's own repository (not a fork).
fn from_repository(pull: &model::Pull, issue: &IssueKey) -> bool {
    pull.head
        .repo
        .as_ref()
        .is_some_and(|r| r.full_name.eq_ignore_ascii_case(issue.repo.as_str()))
}

fn pull_ref(pull: model::Pull, matched_by: PullRequestMatch) -> Result<PullRequestSearch, GitHubError> {
    let url = Url::parse(&pull.html_url).map_err(|e| GitHubError::Decode {
        url: pull.html_url.clone(),
        reason: format!("pull request #{} has an unusable html_url: {e}", pull.number),
    })?;
    Ok(PullRequestSearch::Found(PullRequestRef {
        number: pull.number,
        url,
        matched_by,
    }))
}

/// True when `body` contains a GitHub closing keyword followed by a reference to `issue`:
/// `#N`, `OWNER/NAME#N` or the issue's URL.
pub fn closes_issue(body: &str, issue: &IssueKey) -> bool {
    const KEYWORDS: [&str; 9] = [
        "close", "closes", "closed", "fix", "fixes", "fixed", "resolve", "resolves", "resolved",
    ];
    let words: Vec<&str> = body.split_whitespace().collect();
    words.windows(2).any(|pair| {
        let keyword = pair[0]
            .trim_start_matches(['(', '[', '*', '_'])
            .trim_end_matches(':')
            .to_ascii_lowercase();
        KEYWORDS.contains(&keyword.as_str()) && references_issue(pair[1], issue)
    })
}

fn references_issue(word: &str, issue: &IssueKey) -> bool {
    let word = word.trim_end_matches(['.', ',', ';', ':', ')', ']', '!', '?', '*', '_']);
    let number = issue.number.to_string();
    let same_repo = |r: &str| r.eq_ignore_ascii_case(issue.repo.as_str());
    if let Some(n) = word.strip_prefix('#') {
        return n == number;
    }
    if let Some((repo, n)) = word.split_once('#') {
        return same_repo(repo) && n == number;
    }
    if let Some(path) = word.strip_prefix("https://github.com/") {
        if let Some((repo, n)) = path.split_once("/issues/") {
            return same_repo(repo) && n == number;
        }
    }
    false
}

/// The comment's Markdown for `report`, as of `now` (for the running duration).
pub fn render_comment(report: &StatusReport, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    out.push_str(STATUS_MARKER);
    out.push('\n');
    out.push_str(&format!(
        "**afk** · attempt {} · **{}**\n\n",
        report.attempt,
        state_words(report.state)
    ));
    match &report.thread {
        Some(ThreadLink { id, url: Some(url) }) => out.push_str(&format!("- T3 thread: [`{id}`]({url})\n")),
        Some(ThreadLink { id, url: None }) => out.push_str(&format!("- T3 thread: `{id}`\n")),
        None => out.push_str("- T3 thread: not started yet\n"),
    }
    if let Some(started) = report.started_at {
        let end = report.finished_at.unwrap_or(now);
        let secs = (end - started).num_seconds().max(0) as u64;
        let running = if report.finished_at.is_none() {
            " so far"
        } else {
            ""
        };
        out.push_str(&format!(
            "- Duration: {}{running}\n",
            humantime::format_duration(std::time::Duration::from_secs(secs))
        ));
    }
    if report.state == JobState::NeedsInput {
        // The agent's words, fenced: they are not afk's Markdown (no mentions, no links).
        let question = report
            .question
            .as_deref()
            .unwrap_or("the agent waits for a person in T3");
        let longest = question.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        let fence = "`".repeat(longest.max(2) + 1);
        let where_ = match &report.thread {
            Some(ThreadLink { url: Some(url), .. }) => format!("[in T3]({url})"),
            _ => "in T3".to_owned(),
        };
        out.push_str(&format!(
            "- **Needs you:** the agent asks, and waits for an answer {where_}:\n\n{fence}\n{}\n{fence}\n\n",
            question.trim_end()
        ));
    }
    match &report.pull_request {
        Some(PullRequestSearch::Found(pr)) => {
            let how = match pr.matched_by {
                PullRequestMatch::Branch => "opened from the attempt's branch",
                PullRequestMatch::ClosingReference => "its description closes this issue",
            };
            out.push_str(&format!("- Pull request: #{} {} ({how})\n", pr.number, pr.url));
        }
        Some(PullRequestSearch::NotFound { branches }) => {
            let from = match branches.as_slice() {
                [] => String::new(),
                [one] => format!("from branch `{one}` or "),
                many => format!(
                    "from branches {} or ",
                    many.iter()
                        .map(|b| format!("`{b}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            out.push_str(&format!(
                "- Pull request: **none found** (no pull request {from}with `Fixes #{}` in its description by afk or a writer): nothing to follow\n",
                report.issue.number
            ));
        }
        None => {}
    }
    if let Some(follow) = &report.follow_ups {
        if follow.used > 0 {
            out.push_str(&format!("- Follow-up {} of {}", follow.used, follow.max_turns));
            match &follow.latest_cause {
                Some(cause) => out.push_str(&format!(": {cause}\n")),
                None => out.push('\n'),
            }
        }
        if let Some(waiting) = &follow.waiting_for_person {
            let why = match &follow.held_by_budget {
                Some(budget) => budget.clone(),
                None => format!("the limit of {} follow-up turns is reached", follow.max_turns),
            };
            out.push_str(&format!("- **Waiting for a person**: {waiting} ({why})\n"));
        }
    }
    if let Some(error) = &report.last_error {
        // A fence longer than any backtick run in the error, so the error cannot end it early.
        let longest = error.split(|c| c != '`').map(str::len).max().unwrap_or(0);
        let fence = "`".repeat(longest.max(2) + 1);
        out.push_str(&format!(
            "- Last error:\n\n{fence}\n{}\n{fence}\n",
            error.trim_end()
        ));
    }
    out.push_str(&format!(
        "{UPDATED_LINE}{}.</sub>\n",
        now.format("%Y-%m-%d %H:%M UTC")
    ));
    out
}

fn state_words(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Dispatching => "starting",
        JobState::Running => "running",
        JobState::NeedsInput => "needs you",
        JobState::RetryWait => "waiting to retry",
        JobState::Succeeded => "done",
        JobState::Failed => "failed",
        JobState::TimedOut => "timed out, being interrupted",
        JobState::Cancelled => "cancelled",
        JobState::Lost => "thread lost in T3",
        JobState::GivenUp => "failed, no attempts left",
        JobState::InReview => "in review",
        JobState::Merged => "merged",
        JobState::Closed => "closed without merging",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use afk_core::Repo;

    fn issue(n: u64) -> IssueKey {
        IssueKey {
            repo: Repo::new("acme/widgets").unwrap(),
            number: n,
        }
    }

    #[test]
    fn closing_references_are_recognised_exactly() {
        assert!(closes_issue("This change.\n\nFixes #12.", &issue(12)));
        assert!(closes_issue("resolves: acme/widgets#12", &issue(12)));
        assert!(closes_issue(
            "Closes https://github.com/acme/widgets/issues/12",
            &issue(12)
        ));
        assert!(
            !closes_issue("Fixes #123", &issue(12)),
            "a longer number is another issue"
        );
        assert!(!closes_issue("Fixes other/repo#12", &issue(12)));
        assert!(!closes_issue("Mentions #12 only", &issue(12)));
        assert!(
            !closes_issue("prefixes #12", &issue(12)),
            "a keyword must be a whole word"
        );
    }

    #[test]
    fn comment_shows_thread_duration_error_and_marker() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let report = StatusReport {
            issue: issue(3),
            attempt: 2,
            state: JobState::Failed,
            thread: Some(ThreadLink {
                id: "th-1".into(),
                url: Some(Url::parse("http://t3.local/th-1").unwrap()),
            }),
            started_at: Some(t0),
            finished_at: Some(t0 + chrono::Duration::seconds(192)),
            last_error: Some("boom ``` fence".into()),
            pull_request: None,
            question: None,
            follow_ups: None,
        };
        let text = render_comment(&report, t0);
        assert!(text.starts_with(STATUS_MARKER));
        assert!(text.contains("attempt 2 · **failed**"), "{text}");
        assert!(text.contains("[`th-1`](http://t3.local/th-1)"), "{text}");
        assert!(text.contains("Duration: 3m 12s"), "{text}");
        assert!(text.contains("````\nboom ``` fence\n````"), "{text}");
    }

    #[test]
    fn a_follow_up_not_started_says_whether_the_limit_or_the_budget_held_it() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let follow = |used, held_by_budget: Option<&str>| FollowUpStatus {
            used,
            max_turns: 3,
            latest_cause: None,
            waiting_for_person: Some("check `ci` failed".into()),
            held_by_budget: held_by_budget.map(str::to_owned),
        };
        let report = |follow_ups| StatusReport {
            issue: issue(3),
            attempt: 1,
            state: JobState::InReview,
            thread: None,
            started_at: Some(t0),
            finished_at: None,
            last_error: None,
            pull_request: None,
            question: None,
            follow_ups: Some(follow_ups),
        };
        let text = render_comment(&report(follow(3, None)), t0);
        assert!(
            text.contains(
                "**Waiting for a person**: check `ci` failed (the limit of 3 follow-up turns is reached)"
            ),
            "{text}"
        );
        let text = render_comment(
            &report(follow(1, Some("agent time budget: used 4h 12m of 4h"))),
            t0,
        );
        assert!(
            text.contains(
                "**Waiting for a person**: check `ci` failed (agent time budget: used 4h 12m of 4h)"
            ),
            "{text}"
        );
        assert!(!text.contains("limit of 3"), "{text}");
    }

    #[test]
    fn a_waiting_job_says_what_the_agent_asks_with_the_link_to_answer_it() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let report = StatusReport {
            issue: issue(3),
            attempt: 1,
            state: JobState::NeedsInput,
            thread: Some(ThreadLink {
                id: "th-1".into(),
                url: Some(Url::parse("http://t3.local/th-1").unwrap()),
            }),
            started_at: Some(t0),
            finished_at: None,
            last_error: None,
            pull_request: None,
            follow_ups: None,
            question: Some("May I drop table `users`? @someone".into()),
        };
        let text = render_comment(&report, t0);
        assert!(text.contains("attempt 1 · **needs you**"), "{text}");
        assert!(
            text.contains("waits for an answer [in T3](http://t3.local/th-1)"),
            "{text}"
        );
        assert!(
            text.contains("```\nMay I drop table `users`? @someone\n```"),
            "the agent's words are fenced: {text}"
        );
        assert_eq!(status_label(JobState::NeedsInput), Some(LABEL_NEEDS_YOU));
        assert!(
            STATUS_LABELS.contains(&LABEL_NEEDS_YOU),
            "removed again when it no longer applies"
        );
    }
}
