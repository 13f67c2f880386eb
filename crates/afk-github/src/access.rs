//! What afk's GitHub credentials may do, for `afk doctor`: each repository readable, with the
//! access docs/github.md lists (issues read and write, pull requests and contents read, the
//! collaborator lookup that needs write access), asked without writing anything.
//!
//! How write access is known: a GitHub App's installation lists its permissions (`GET
//! /app/installations/{id}`, signed with the App's JWT); for a token, GitHub says in each
//! repository's `permissions` what afk's account may do there (`push` is write). GitHub does not
//! tell a fine-grained token's own limits apart from its account's: a token restricted below its
//! account's access shows up at afk's first report instead.

use std::collections::BTreeMap;

use afk_core::Repo;
use reqwest::Method;
use serde::Deserialize;

use crate::client::{Bearer, GitHubClient};
use crate::error::GitHubError;
use crate::http::decode;

/// The repository permissions afk needs (GitHub App permission names), with the access each
/// needs and why.
pub const NEEDED_PERMISSIONS: &[(&str, &str, &str)] = &[
    (
        "issues",
        "write",
        "list issues and their events, comment and label",
    ),
    ("pull_requests", "read", "find the agent's pull request"),
    ("contents", "read", "read AFK.md"),
    ("metadata", "read", "look up the labeler's permission"),
];

/// What afk's credentials may do in one repository.
#[derive(Debug, Clone)]
pub struct RepoAccess {
    /// Listing its issues (`GET /repos/{repo}/issues`).
    pub issues: Result<(), GitHubError>,
    /// Listing its pull requests.
    pub pull_requests: Result<(), GitHubError>,
    /// Reading `AFK.md` (a repository without one reads as fine).
    pub contents: Result<(), GitHubError>,
    /// Whether afk's account may write (comment, label, look up permissions), as GitHub says in
    /// the repository's `permissions`; `None` when it does not say (an App's installation token:
    /// see [`GitHubClient::installation_permissions`]).
    pub write: Option<bool>,
}

#[derive(Deserialize)]
struct Repository {
    #[serde(default)]
    permissions: Option<RepositoryPermissions>,
}

#[derive(Deserialize)]
struct RepositoryPermissions {
    #[serde(default)]
    push: bool,
}

#[derive(Deserialize)]
struct Installation {
    #[serde(default)]
    permissions: BTreeMap<String, String>,
}

impl GitHubClient {
    /// What afk's credentials may do in `repo`; `Err` when the repository cannot be read at all
    /// (it does not exist, or the credentials may not see it).
    pub async fn repository_access(&self, repo: &Repo) -> Result<RepoAccess, GitHubError> {
        let url = self.url(&["repos", repo.owner(), repo.name()], &[]);
        let repository: Repository = self.get_json(url).await?;
        let list = |what: &str| {
            let url = self.url(
                &["repos", repo.owner(), repo.name(), what],
                &[("state", "all"), ("per_page", "1")],
            );
            async move { self.get_json::<serde_json::Value>(url).await.map(drop) }
        };
        let afk_md = self.url(
            &[
                "repos",
                repo.owner(),
                repo.name(),
                "contents",
                crate::policy::POLICY_FILE,
            ],
            &[],
        );
        let contents = match self.get_json::<serde_json::Value>(afk_md).await {
            Ok(_) | Err(GitHubError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error),
        };
        Ok(RepoAccess {
            issues: list("issues").await,
            pull_requests: list("pulls").await,
            contents,
            write: repository.permissions.map(|p| p.push),
        })
    }

    /// The repository permissions of the App's installation (`issues` → `write`, …); `None` for
    /// a personal token.
    pub async fn installation_permissions(&self) -> Result<Option<BTreeMap<String, String>>, GitHubError> {
        let Some(installation) = self.installation_id() else {
            return Ok(None);
        };
        let url = self.url(&["app", "installations", &installation.0.to_string()], &[]);
        let answer = self
            .send_as(Method::GET, url.clone(), None, Bearer::AppJwt)
            .await?;
        let installation: Installation = decode(&url, &answer.body)?;
        Ok(Some(installation.permissions))
    }
}

/// The needed permissions an installation lacks, as `issues: write (has read)`.
pub fn missing_permissions(granted: &BTreeMap<String, String>) -> Vec<String> {
    let rank = |access: &str| match access {
        "admin" => 3,
        "write" => 2,
        "read" => 1,
        _ => 0,
    };
    NEEDED_PERMISSIONS
        .iter()
        .filter_map(|(name, needed, _)| {
            let has = granted.get(*name).map(String::as_str).unwrap_or("none");
            (rank(has) < rank(needed)).then(|| format!("{name}: {needed} (has {has})"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_permissions_name_what_is_needed_and_what_is_granted() {
        let granted: BTreeMap<String, String> =
            [("issues", "read"), ("contents", "write"), ("metadata", "read")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        assert_eq!(
            missing_permissions(&granted),
            ["issues: write (has read)", "pull_requests: read (has none)"]
        );
    }
}
