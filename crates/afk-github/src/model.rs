//! The parts of GitHub's JSON that afk reads. Unknown fields are ignored (GitHub adds fields often);
//! a missing required field is a decode error naming it.

use chrono::{DateTime, Utc};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct User {
    pub(crate) login: String,
}

/// `GET /app`: the App itself.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct App {
    pub(crate) slug: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LabelRef {
    pub(crate) name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Issue {
    pub(crate) number: u64,
    pub(crate) title: String,
    #[serde(default)]
    pub(crate) body: Option<String>,
    #[serde(default)]
    pub(crate) labels: Vec<LabelRef>,
    pub(crate) user: User,
    pub(crate) html_url: String,
    pub(crate) state: String,
    /// Moves with every change (labels, comments, edits, state): an unchanged value proves that
    /// nothing about the issue changed.
    #[serde(default)]
    pub(crate) updated_at: Option<DateTime<Utc>>,
    /// Present (with any value) when the "issue" is a pull request.
    #[serde(default)]
    pub(crate) pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IssueEvent {
    pub(crate) event: String,
    #[serde(default)]
    pub(crate) actor: Option<User>,
    #[serde(default)]
    pub(crate) label: Option<LabelRef>,
    #[serde(default)]
    pub(crate) created_at: Option<DateTime<Utc>>,
}

/// The GraphQL answer to [`crate::intake`]'s issue-edits query.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IssueEditsData {
    pub(crate) repository: Option<IssueEditsRepository>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IssueEditsRepository {
    pub(crate) issue: Option<IssueEdits>,
}

/// The issue body's last edit (GraphQL `Comment.lastEditedAt` and `Comment.editor`); both null
/// when the body was never edited. Titles are not covered: their changes are `renamed` events.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IssueEdits {
    #[serde(default)]
    pub(crate) last_edited_at: Option<DateTime<Utc>>,
    /// Null for a deleted account.
    #[serde(default)]
    pub(crate) editor: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CollaboratorPermission {
    pub(crate) permission: String,
    #[serde(default)]
    pub(crate) role_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Comment {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) body: Option<String>,
    /// Null for a deleted account.
    #[serde(default)]
    pub(crate) user: Option<User>,
    pub(crate) html_url: String,
    /// When it was made (absent from older fixtures).
    #[serde(default)]
    pub(crate) created_at: Option<DateTime<Utc>>,
    /// When it was last changed (absent from older fixtures).
    #[serde(default)]
    pub(crate) updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PullHead {
    #[serde(rename = "ref")]
    pub(crate) branch: String,
    /// The repository the head branch is in; null when that fork was deleted.
    #[serde(default)]
    pub(crate) repo: Option<RepoRef>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RepoRef {
    pub(crate) full_name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Pull {
    pub(crate) number: u64,
    pub(crate) html_url: String,
    #[serde(default)]
    pub(crate) body: Option<String>,
    pub(crate) head: PullHead,
    /// Who opened it; null for a deleted account.
    #[serde(default)]
    pub(crate) user: Option<User>,
    #[serde(default)]
    pub(crate) created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Contents {
    pub(crate) sha: String,
    #[serde(default)]
    pub(crate) content: String,
    #[serde(default)]
    pub(crate) encoding: String,
}
