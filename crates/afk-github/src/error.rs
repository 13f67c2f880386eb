//! What can go wrong talking to GitHub, phrased so that a person can act on it.
//!
//! **Invariant:** no variant carries a token, a private key or a webhook secret; URLs carry no
//! credentials because afk sends credentials only in the `Authorization` header.

use chrono::{DateTime, Utc};
use reqwest::StatusCode;

use crate::rate_limit::RateLimitKind;

/// An error from the GitHub adapter.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GitHubError {
    /// The credential provider could not produce a token or an App private key.
    #[error("GitHub credentials unavailable: {0}")]
    Credentials(#[from] afk_secrets::SecretError),
    /// The App private key is not a usable RSA PEM key.
    #[error("the GitHub App private key is not a valid RSA PEM key ({reason}); check the key file")]
    AppKey {
        /// What the JWT library said about the key (never the key itself).
        reason: String,
    },
    /// GitHub would not exchange the App JWT for an installation token.
    #[error(
        "GitHub refused an installation token for App {app_id}, installation {installation_id} \
         (HTTP {status}): {message}; check the App id, installation id and private key"
    )]
    AppToken {
        /// The App id used.
        app_id: u64,
        /// The installation id used.
        installation_id: u64,
        /// The HTTP status GitHub answered.
        status: u16,
        /// GitHub's `message`, if any.
        message: String,
    },
    /// GitHub answered 401 twice, once with a freshly fetched credential.
    #[error("GitHub rejected the credentials (HTTP 401) for {url}; check the token or the App installation")]
    Unauthorized {
        /// The request that was refused.
        url: String,
    },
    /// One of GitHub's rate limits applies; afk sends nothing to GitHub before `until`.
    #[error("GitHub {limit} rate limit reached; sending nothing to GitHub until {until}")]
    RateLimited {
        /// When requests may resume.
        until: DateTime<Utc>,
        /// Which limit.
        limit: RateLimitKind,
    },
    /// The resource does not exist or the credentials may not see it.
    #[error("not found on GitHub (HTTP 404): {url}; check the repository name and the token's access")]
    NotFound {
        /// The request.
        url: String,
    },
    /// The resource was deleted (HTTP 410): a deleted issue.
    #[error("GitHub says {url} is gone (HTTP 410): it was deleted")]
    Gone {
        /// The request.
        url: String,
    },
    /// The resource moved (HTTP 301): a transferred issue, or a renamed or transferred repository.
    #[error(
        "GitHub says {url} moved (HTTP 301){}: a transferred issue, or a renamed repository \
         (then correct the name under [github] repos)",
        location.as_deref().map(|l| format!(" to {l}")).unwrap_or_default()
    )]
    Moved {
        /// The request.
        url: String,
        /// Where GitHub says it is now, if it said.
        location: Option<String>,
    },
    /// A GraphQL query failed (GitHub says so in the answer's `errors`, with HTTP 200).
    #[error("GitHub's GraphQL API at {url} refused afk's query: {message}; check that the credentials may read issues")]
    GraphQl {
        /// The GraphQL endpoint.
        url: String,
        /// GitHub's messages.
        message: String,
    },
    /// Any other unsuccessful HTTP status.
    #[error("GitHub answered HTTP {status} for {method} {url}: {message}")]
    Http {
        /// The request method.
        method: String,
        /// The request URL.
        url: String,
        /// The status.
        status: u16,
        /// GitHub's `message`, if any.
        message: String,
    },
    /// The request could not be sent or its answer not received (DNS, refused, timeout).
    #[error("cannot reach GitHub at {url}: {reason}")]
    Transport {
        /// The request URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// GitHub answered with a document afk cannot read.
    #[error("unexpected answer from GitHub for {url}: {reason}")]
    Decode {
        /// The request URL.
        url: String,
        /// What did not match.
        reason: String,
    },
}

impl GitHubError {
    /// True when trying again later may succeed without a person changing anything
    /// (network trouble, 5xx, rate limits, a credential source that is temporarily down).
    pub fn is_transient(&self) -> bool {
        match self {
            GitHubError::Credentials(e) => e.is_transient(),
            GitHubError::RateLimited { .. } | GitHubError::Transport { .. } => true,
            GitHubError::Http { status, .. } => StatusCode::from_u16(*status)
                .map(|s| s.is_server_error())
                .unwrap_or(false),
            GitHubError::AppToken { status, .. } => *status >= 500,
            GitHubError::AppKey { .. }
            | GitHubError::Unauthorized { .. }
            | GitHubError::NotFound { .. }
            | GitHubError::Gone { .. }
            | GitHubError::Moved { .. }
            | GitHubError::GraphQl { .. }
            | GitHubError::Decode { .. } => false,
        }
    }
}

/// Why GitHub no longer has an issue where afk looks for it. Final: afk stops polling and
/// reporting on the issue, and its job is cancelled with this reason (its `Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssueGone {
    /// GitHub answered 410 Gone: the issue was deleted.
    Deleted,
    /// GitHub answered 301: the issue was transferred to another repository.
    Transferred {
        /// Where GitHub says it is now (an API URL), if it said.
        to: Option<String>,
    },
    /// GitHub answered 404 for the issue while the repository itself is readable.
    NotFound,
}

impl std::fmt::Display for IssueGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IssueGone::Deleted => f.write_str("the issue was deleted on GitHub (HTTP 410)"),
            IssueGone::Transferred { to: Some(to) } => write!(
                f,
                "the issue was transferred to another repository (HTTP 301, now {to})"
            ),
            IssueGone::Transferred { to: None } => {
                f.write_str("the issue was transferred to another repository (HTTP 301)")
            }
            IssueGone::NotFound => {
                f.write_str("GitHub has no such issue any more (HTTP 404, while the repository is readable)")
            }
        }
    }
}
