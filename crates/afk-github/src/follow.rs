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
use crate::policy::{describe, environment};
use crate::{GitHubError, Login, PolicyError, Reporter};

/// The follow-up prompt's built-in template (minijinja, strictly rendered, like `AFK.md`'s
/// prompt; `AFK.md`'s `followup.template` replaces it). It is given `pull_request` (`number`,
/// `url`, `head_sha`), `failed_checks` (each `name`, `conclusion`, `summary`, `summary_lines`,
/// `url`, empty when none) and `reviews` (each `reviewer`, `body`, `body_lines`, `url` and
/// `comments`, each `path`, `line` (none when GitHub no longer places it), `at`
/// (`path:line`), `body` and `body_lines`): only what the follow-up answers.
pub const BUILT_IN_FOLLOW_UP_TEMPLATE: &str = "\
Your pull request #{{ pull_request.number }} ({{ pull_request.url }}) needs more work on the same \
branch. Fix what follows, commit and push to the branch; do not open another pull request.
{% if failed_checks %}
Failed checks on commit {{ pull_request.head_sha }}:
{% for check in failed_checks %}
- {{ check.name }} ({{ check.conclusion }}){% if check.url %}: {{ check.url }}{% endif %}
{% for line in check.summary_lines %}  {{ line }}
{% endfor %}{% endfor %}{% endif %}{% for review in reviews %}
Review by {{ review.reviewer }} requesting changes ({{ review.url }}):
{% for line in review.body_lines %}  {{ line }}
{% endfor %}{% for comment in review.comments %}
- {{ comment.at }}
{% for line in comment.body_lines %}  {{ line }}
{% endfor %}{% endfor %}{% endfor %}";

/// The follow-up prompt answering the causes `keys` of `activity` (see
/// [`PullRequestActivity::cause_keys`]), from `template` (`AFK.md`'s `followup.template`) or the
/// built-in one. `origin` names the repository in errors, which name the undefined variable or
/// the template's fault. Each check summary, review and comment is cut at
/// [`MAX_CAUSE_TEXT_CHARS`] (a check's output can be 65 KB; T3 refuses a long prompt).
pub fn render_follow_up(
    template: Option<&str>,
    origin: &str,
    activity: &PullRequestActivity,
    keys: &[String],
) -> Result<String, PolicyError> {
    use minijinja::context;
    // Each text (a check's summary, a review, a comment) is cut to a size a prompt can carry;
    // the links lead to the rest.
    let lines = |text: &str| -> Vec<String> {
        clip(text)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    };
    let wanted = |key: String| keys.contains(&key);
    let checks: Vec<_> = activity
        .failed_checks
        .iter()
        .filter(|c| wanted(activity.check_key(c)))
        .map(|c| {
            context! {
                name => c.name, conclusion => c.conclusion, summary => clip(&c.summary),
                summary_lines => lines(&c.summary), url => c.url.clone().unwrap_or_default(),
            }
        })
        .collect();
    let reviews: Vec<_> = activity
        .changes_requested
        .iter()
        .filter(|r| wanted(review_key(r)))
        .map(|r| {
            let comments: Vec<_> = r
                .comments
                .iter()
                .map(|c| {
                    let at = match c.line {
                        Some(line) => format!("{}:{line}", c.path),
                        None => c.path.clone(),
                    };
                    context! {
                        path => c.path, line => c.line, at => at, body => clip(&c.body),
                        body_lines => clip(&c.body).lines().map(str::to_owned).collect::<Vec<_>>(),
                    }
                })
                .collect();
            context! {
                reviewer => r.reviewer.as_str(), body => clip(&r.body), body_lines => lines(&r.body),
                url => r.url, comments => comments,
            }
        })
        .collect();
    let env = environment();
    let fault = |e: minijinja::Error| PolicyError::Template {
        repo: format!("{origin} (followup.template)"),
        message: describe(&e),
    };
    let compiled = env
        .template_from_str(template.unwrap_or(BUILT_IN_FOLLOW_UP_TEMPLATE))
        .map_err(fault)?;
    compiled
        .render(context! {
            pull_request => context! {
                number => activity.number, url => activity.url, head_sha => activity.head_sha,
            },
            failed_checks => checks,
            reviews => reviews,
        })
        .map_err(fault)
        .map(
            |prompt| match prompt.char_indices().nth(MAX_FOLLOW_UP_PROMPT_CHARS) {
                // Many causes at once: the prompt stays well inside what T3 takes.
                Some((cut, _)) => format!("{}\n… (cut; see the pull request for the rest)", &prompt[..cut]),
                None => prompt,
            },
        )
}

/// The most a follow-up prompt carries (T3 refuses a message over 120,000 characters, and the
/// standing rules come before it).
pub const MAX_FOLLOW_UP_PROMPT_CHARS: usize = 60_000;

/// A review's follow-up key.
fn review_key(review: &ChangesRequested) -> String {
    format!("review:{}", review.id)
}

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

impl PullRequestActivity {
    /// A failed check's follow-up key: the head commit and the check, so the same failure is
    /// answered once and a new commit's is answered again.
    pub fn check_key(&self, check: &FailedCheck) -> String {
        format!("{}:{}:{}", self.head_sha, check.kind.as_str(), check.id)
    }

    /// The follow-up key of each cause for a follow-up, with a line for people: the failed
    /// checks once none is still running, and the standing requests for changes by writers.
    pub fn cause_keys(&self) -> Vec<(String, String)> {
        let short: String = self.head_sha.chars().take(7).collect();
        let mut causes = Vec::new();
        if !self.checks_pending {
            for check in &self.failed_checks {
                let what = match check.kind {
                    CheckKind::CheckRun => "check",
                    CheckKind::Status => "status",
                };
                causes.push((
                    self.check_key(check),
                    format!("{what} \"{}\" {} on {short}", check.name, check.conclusion),
                ));
            }
        }
        for review in &self.changes_requested {
            causes.push((
                review_key(review),
                format!("{} requested changes", review.reviewer),
            ));
        }
        causes
    }
}

/// Conclusions of a completed check run that call for a follow-up.
const FAILED_CONCLUSIONS: &[&str] = &[
    "failure",
    "timed_out",
    "cancelled",
    "action_required",
    "startup_failure",
];

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
        let pull: Pull = self
            .client
            .get_json(self.client.url(&["repos", owner, name, "pulls", &n], &[]))
            .await?;
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
            if !matches!(
                review.state.as_str(),
                "CHANGES_REQUESTED" | "APPROVED" | "DISMISSED"
            ) {
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

/// The most of one check summary, review or review comment a follow-up prompt carries.
pub const MAX_CAUSE_TEXT_CHARS: usize = 4_000;

/// `text` cut at [`MAX_CAUSE_TEXT_CHARS`], saying so.
fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_CAUSE_TEXT_CHARS) {
        Some((cut, _)) => format!("{}\n… (cut; the rest behind the link)", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity() -> PullRequestActivity {
        PullRequestActivity {
            number: 7,
            url: "https://github.com/acme/api/pull/7".into(),
            state: PullRequestState::Open,
            head_sha: "1a2b3c4d5e".into(),
            failed_checks: vec![FailedCheck {
                kind: CheckKind::CheckRun,
                id: 42,
                name: "test".into(),
                conclusion: "failure".into(),
                summary: "2 tests failed\ntests::parse".into(),
                url: Some("https://github.com/acme/api/runs/42".into()),
            }],
            checks_pending: false,
            changes_requested: vec![ChangesRequested {
                id: 9,
                reviewer: Login::new("mona"),
                body: "Two things.".into(),
                url: "https://github.com/acme/api/pull/7#pullrequestreview-9".into(),
                comments: vec![LineComment {
                    path: "src/lib.rs".into(),
                    line: Some(12),
                    body: "Handle the empty case.".into(),
                    url: "u".into(),
                }],
            }],
        }
    }

    fn keys(a: &PullRequestActivity) -> Vec<String> {
        a.cause_keys().into_iter().map(|(key, _)| key).collect()
    }

    #[test]
    fn the_built_in_prompt_names_failed_checks_and_review_comments_with_file_and_line() {
        let a = activity();
        let causes = a.cause_keys();
        assert_eq!(keys(&a), vec!["1a2b3c4d5e:check_run:42", "review:9"]);
        assert_eq!(causes[0].1, "check \"test\" failure on 1a2b3c4");
        let prompt = render_follow_up(None, "acme/api", &a, &keys(&a)).unwrap();
        assert!(
            prompt.starts_with("Your pull request #7 (https://github.com/acme/api/pull/7) needs more work"),
            "{prompt}"
        );
        assert!(
            prompt.contains(
                "\n- test (failure): https://github.com/acme/api/runs/42\n  2 tests failed\n  tests::parse\n"
            ),
            "{prompt}"
        );
        assert!(prompt.contains("Review by mona requesting changes"), "{prompt}");
        assert!(
            prompt.contains("\n- src/lib.rs:12\n  Handle the empty case.\n"),
            "{prompt}"
        );
        // Only the causes asked for are named.
        let prompt = render_follow_up(None, "acme/api", &a, &keys(&a)[1..]).unwrap();
        assert!(!prompt.contains("Failed checks"), "{prompt}");
    }

    #[test]
    fn a_huge_check_output_is_cut_and_a_non_ascii_sha_does_not_panic() {
        let mut a = activity();
        a.head_sha = "ééééééééé".into();
        a.failed_checks[0].summary = "x".repeat(100_000);
        a.changes_requested[0].comments[0].body = "y".repeat(100_000);
        let prompt = render_follow_up(None, "acme/api", &a, &keys(&a)).unwrap();
        assert!(
            prompt.chars().count() < 2 * MAX_CAUSE_TEXT_CHARS + 2_000,
            "{}",
            prompt.len()
        );
        assert!(prompt.contains("the rest behind the link"));
        assert!(a.cause_keys()[0].1.ends_with("on ééééééé"));
    }

    #[test]
    fn failed_checks_wait_until_no_check_runs() {
        let a = PullRequestActivity {
            checks_pending: true,
            ..activity()
        };
        assert_eq!(keys(&a), vec!["review:9".to_owned()]);
    }

    #[test]
    fn afk_md_may_replace_the_template_and_an_unknown_name_is_named() {
        let a = activity();
        let template =
            "Fix {% for c in failed_checks %}{{ c.name }}{% endfor %} on #{{ pull_request.number }}";
        let prompt = render_follow_up(Some(template), "acme/api", &a, &keys(&a)).unwrap();
        assert_eq!(prompt, "Fix test on #7");
        let error =
            render_follow_up(Some("{{ pull_request.title }}"), "acme/api", &a, &keys(&a)).unwrap_err();
        let error = error.to_string();
        assert!(error.contains("acme/api (followup.template)"), "{error}");
        assert!(error.contains("undefined"), "{error}");
    }
}
