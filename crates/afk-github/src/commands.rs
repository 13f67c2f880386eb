//! Comment commands: `/afk retry`, `/afk stop` and `/afk <instruction>` in a comment on an issue
//! afk has a job for (or on its pull request), read strictly ([`parse_command`]), and GitHub's side
//! of taking them ([`CommentCommands`]): listing an issue's comments since an instant, asking
//! whether their author may command afk (write access, as for the trigger label), reacting to a
//! comment and replying on its issue.
//!
//! **Invariants:** a comment is a command only when its first non-empty line starts with `/afk`
//! at its very start (a quote, `> /afk stop`, an indented or fenced code block are not); a body
//! over [`MAX_COMMAND_BYTES`] is refused, never read; afk replies at most once to a comment (a
//! hidden marker names it, so a reply sent before a crash is not sent again).

use std::fmt;

use afk_core::{IssueKey, Repo};
use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::json;

use crate::client::GitHubClient;
use crate::error::GitHubError;
use crate::model;
use crate::trust::{Login, Permissions, PERMISSION_TTL};

/// What a comment must start with to be a command (case-sensitive).
pub const COMMAND_PREFIX: &str = "/afk";

/// The longest comment body read as a command; a longer one starting with `/afk` is refused with
/// a reply (an instruction longer than this belongs in the issue).
pub const MAX_COMMAND_BYTES: usize = 8 * 1024;

/// A command afk can carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `/afk retry`: requeue the job with a fresh budget.
    Retry,
    /// `/afk stop`: cancel the job and stop its thread.
    Stop,
    /// `/afk <instruction>`: the instruction (the rest of the first line and every line after it,
    /// trimmed).
    Instruct(String),
}

/// What a comment says to afk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// It is not a command (its first non-empty line does not start with `/afk`).
    NotACommand,
    /// A command.
    Command(Command),
    /// It starts with `/afk` but afk cannot read it: the one-line reason, for the reply.
    Malformed(String),
}

/// Reads a comment's `body` as a command, strictly: its first non-empty line must start with
/// `/afk` followed by the end of the line or whitespace. `retry` and `stop` take nothing after
/// them; anything else is an instruction. Never panics.
pub fn parse_command(body: &str) -> Parsed {
    let Some(first) = body.lines().find(|l| !l.trim().is_empty()) else {
        return Parsed::NotACommand;
    };
    let Some(rest) = first.strip_prefix(COMMAND_PREFIX) else {
        return Parsed::NotACommand;
    };
    if rest.chars().next().is_some_and(|c| !c.is_whitespace()) {
        // `/afkfoo` is not afk's.
        return Parsed::NotACommand;
    }
    if body.len() > MAX_COMMAND_BYTES {
        return Parsed::Malformed(format!(
            "the comment is over {} KiB; put long instructions in the issue",
            MAX_COMMAND_BYTES / 1024
        ));
    }
    // The argument: the rest of the first line and everything after it.
    let start = body.find(first).unwrap_or(0) + first.len();
    let argument = format!("{}{}", rest, &body[start..]);
    let argument = argument.trim();
    let mut words = argument.split_whitespace();
    match (words.next(), words.next()) {
        (None, _) => Parsed::Malformed(
            "an empty command: say `/afk retry`, `/afk stop` or `/afk <instruction>`".into(),
        ),
        (Some("retry"), None) => Parsed::Command(Command::Retry),
        (Some("stop"), None) => Parsed::Command(Command::Stop),
        (Some(word @ ("retry" | "stop")), Some(_)) => Parsed::Malformed(format!(
            "`/afk {word}` takes nothing after it; to instruct the agent, start with other words"
        )),
        _ => Parsed::Command(Command::Instruct(argument.to_owned())),
    }
}

/// GitHub's id of a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommentId(pub u64);

impl fmt::Display for CommentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A comment on an issue or a pull request, as afk reads it for commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueComment {
    /// GitHub's id.
    pub id: CommentId,
    /// The issue or pull request it is on.
    pub number: u64,
    /// Its author (`None` for a deleted account).
    pub author: Option<Login>,
    /// Its text as it is now.
    pub body: String,
    /// When it was made.
    pub created_at: Option<DateTime<Utc>>,
    /// When it was last changed (GitHub's `since` filters on this).
    pub updated_at: Option<DateTime<Utc>>,
}

impl IssueComment {
    pub(crate) fn from_model(number: u64, c: model::Comment) -> Self {
        IssueComment {
            id: CommentId(c.id),
            number,
            author: c.user.map(|u| Login::new(u.login)),
            body: c.body.unwrap_or_default(),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// The reaction afk puts on a command's comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandReaction {
    /// 👀 (`eyes`): taken.
    Taken,
    /// 👎 (`-1`): refused.
    Refused,
}

impl CommandReaction {
    /// GitHub's reaction `content`.
    pub fn content(self) -> &'static str {
        match self {
            CommandReaction::Taken => "eyes",
            CommandReaction::Refused => "-1",
        }
    }
}

/// The hidden marker naming the comment a reply answers.
fn reply_marker(comment: CommentId) -> String {
    format!("<!-- afk:reply-to:{comment} -->")
}

/// GitHub's side of comment commands, over a [`GitHubClient`].
pub struct CommentCommands {
    client: GitHubClient,
    permissions: Permissions,
}

impl fmt::Debug for CommentCommands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommentCommands").finish_non_exhaustive()
    }
}

impl CommentCommands {
    /// Comment commands over `client` (permissions cached as for intake's labelers).
    pub fn new(client: GitHubClient) -> Self {
        Self {
            permissions: Permissions::new(client.clone(), PERMISSION_TTL),
            client,
        }
    }

    /// The comments on `issue` changed at or after `since` (all of them without it), oldest
    /// first: `GET /repos/{o}/{r}/issues/{n}/comments?since=...`, each page conditional on its
    /// ETag.
    pub async fn list_since(
        &self,
        issue: &IssueKey,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<IssueComment>, GitHubError> {
        let since = since.map(|s| s.to_rfc3339_opts(SecondsFormat::Secs, true));
        let mut query = vec![("per_page", "100")];
        if let Some(since) = &since {
            query.push(("since", since.as_str()));
        }
        let number = issue.number.to_string();
        let url = self.client.url(
            &[
                "repos",
                issue.repo.owner(),
                issue.repo.name(),
                "issues",
                &number,
                "comments",
            ],
            &query,
        );
        let comments: Vec<model::Comment> = self.client.get_all(url).await?;
        Ok(comments
            .into_iter()
            .map(|c| IssueComment::from_model(issue.number, c))
            .collect())
    }

    /// True when `login` may command afk in `repo`: write access or better, the same check as
    /// for the trigger label (cached for a while).
    pub async fn may_command(&self, repo: &Repo, login: &Login) -> Result<bool, GitHubError> {
        Ok(self.permissions.of(repo, login).await?.is_trusted())
    }

    /// Puts `reaction` on the comment `comment` of `repo`:
    /// `POST /repos/{o}/{r}/issues/comments/{id}/reactions`. GitHub answers 200 for a reaction
    /// afk already left, so asking again after a crash adds nothing.
    pub async fn react(
        &self,
        repo: &Repo,
        comment: CommentId,
        reaction: CommandReaction,
    ) -> Result<(), GitHubError> {
        let id = comment.to_string();
        let url = self.client.url(
            &[
                "repos",
                repo.owner(),
                repo.name(),
                "issues",
                "comments",
                &id,
                "reactions",
            ],
            &[],
        );
        self.client
            .send_ignoring_body(Method::POST, url, Some(&json!({ "content": reaction.content() })))
            .await
    }

    /// Replies `text` (one line) on `issue` to the comment `comment`, once: a reply of afk's own
    /// naming that comment (a hidden marker) already there is not sent again. Returns whether
    /// it posted.
    pub async fn reply(
        &self,
        issue: &IssueKey,
        comment: CommentId,
        author: &str,
        text: &str,
    ) -> Result<bool, GitHubError> {
        let marker = reply_marker(comment);
        let me = self.client.identity().await?;
        let number = issue.number.to_string();
        let segments = [
            "repos",
            issue.repo.owner(),
            issue.repo.name(),
            "issues",
            &number,
            "comments",
        ];
        let existing: Vec<model::Comment> = self
            .client
            .get_all(self.client.url(&segments, &[("per_page", "100")]))
            .await?;
        let replied = existing.iter().any(|c| {
            c.user.as_ref().is_some_and(|u| me.is(&u.login))
                && c.body.as_deref().is_some_and(|b| b.contains(&marker))
        });
        if replied {
            return Ok(false);
        }
        let body = format!("{marker}\n@{author}: {text}\n");
        self.client
            .send_ignoring_body(
                Method::POST,
                self.client.url(&segments, &[]),
                Some(&json!({ "body": body })),
            )
            .await?;
        Ok(true)
    }

    /// The head branch of pull request `number` of `repo` when it comes from `repo` itself (not
    /// a fork), for finding the job whose attempt pushed it; `None` for a fork or an issue that
    /// is not a pull request.
    pub async fn pull_request_branch(&self, repo: &Repo, number: u64) -> Result<Option<String>, GitHubError> {
        let n = number.to_string();
        let url = self
            .client
            .url(&["repos", repo.owner(), repo.name(), "pulls", &n], &[]);
        let pull: model::Pull = match self.client.get_json(url).await {
            Ok(pull) => pull,
            Err(GitHubError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let same_repo = pull
            .head
            .repo
            .as_ref()
            .is_some_and(|r| r.full_name.eq_ignore_ascii_case(repo.as_str()));
        Ok(same_repo.then_some(pull.head.branch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_strictly() {
        let instruct = |s: &str| Parsed::Command(Command::Instruct(s.into()));
        let malformed = |p: &Parsed| matches!(p, Parsed::Malformed(_));
        let cases: Vec<(&str, Parsed)> = vec![
            ("/afk retry", Parsed::Command(Command::Retry)),
            ("\n\n  \n/afk stop\n", Parsed::Command(Command::Stop)),
            ("/afk retry  ", Parsed::Command(Command::Retry)),
            ("/afk fix the tests", instruct("fix the tests")),
            (
                "/afk\nfix the tests\nand the docs",
                instruct("fix the tests\nand the docs"),
            ),
            ("/afk please retry", instruct("please retry")),
            ("/AFK retry", Parsed::NotACommand),
            ("/afkretry", Parsed::NotACommand),
            ("> /afk stop", Parsed::NotACommand),
            ("    /afk stop", Parsed::NotACommand),
            ("```\n/afk stop\n```", Parsed::NotACommand),
            ("thanks!\n/afk stop", Parsed::NotACommand),
            ("", Parsed::NotACommand),
            ("lgtm", Parsed::NotACommand),
        ];
        for (body, expected) in cases {
            assert_eq!(parse_command(body), expected, "{body:?}");
        }
        for body in ["/afk", "/afk   \n  ", "/afk stop now", "/afk retry\nplease"] {
            assert!(malformed(&parse_command(body)), "{body:?}");
        }
        let long = format!("/afk {}", "x".repeat(MAX_COMMAND_BYTES));
        assert!(malformed(&parse_command(&long)));
        // Not a command, however long: never answered.
        assert_eq!(
            parse_command(&"x".repeat(MAX_COMMAND_BYTES * 2)),
            Parsed::NotACommand
        );
    }
}
