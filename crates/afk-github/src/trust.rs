//! Who afk trusts: a person's permission on a repository, looked up with GitHub's
//! collaborator-permission endpoint and cached for a while.
//!
//! Write, maintain and admin are trusted: they may hand an issue to an agent (its label), vouch
//! for its text (an edit), and open a pull request afk names on the issue. Triage, read and
//! non-collaborators are not.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use afk_core::Repo;
use chrono::{DateTime, Utc};

use crate::client::GitHubClient;
use crate::error::GitHubError;
use crate::lock;
use crate::model;

/// A GitHub user's login.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Login(String);

impl Login {
    /// Wraps a login as GitHub spells it.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The login.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when `self` and `other` name the same account (GitHub logins are case-insensitive).
    pub fn is(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl fmt::Display for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A person's permission on a repository, as GitHub's collaborator-permission endpoint reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Full control.
    Admin,
    /// Manages the repository without destructive admin rights.
    Maintain,
    /// May push.
    Write,
    /// May manage issues and pull requests, but not push.
    Triage,
    /// May read.
    Read,
    /// Not a collaborator.
    None,
}

impl Permission {
    /// True for write, maintain and admin: the people who may hand an issue to an agent.
    pub fn is_trusted(self) -> bool {
        matches!(self, Permission::Admin | Permission::Maintain | Permission::Write)
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => Permission::Admin,
            "maintain" => Permission::Maintain,
            "write" | "push" => Permission::Write,
            "triage" => Permission::Triage,
            "read" | "pull" => Permission::Read,
            "none" => Permission::None,
            _ => return None,
        })
    }

    /// GitHub's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Admin => "admin",
            Permission::Maintain => "maintain",
            Permission::Write => "write",
            Permission::Triage => "triage",
            Permission::Read => "read",
            Permission::None => "none",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a looked-up permission is trusted unless configured otherwise.
pub const PERMISSION_TTL: Duration = Duration::from_secs(10 * 60);

struct CachedPermission {
    permission: Permission,
    fetched_at: DateTime<Utc>,
}

/// Permission lookups with a cache: an answer is trusted for `ttl`, then asked again (so a
/// revoked collaborator is noticed within `ttl`).
pub(crate) struct Permissions {
    client: GitHubClient,
    ttl: Duration,
    cache: Mutex<HashMap<(Repo, Login), CachedPermission>>,
}

impl Permissions {
    pub(crate) fn new(client: GitHubClient, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `login`'s permission on `repo`, cached for the lookup's lifetime. Someone GitHub does not
    /// know as a collaborator (404) has [`Permission::None`].
    pub(crate) async fn of(&self, repo: &Repo, login: &Login) -> Result<Permission, GitHubError> {
        let now = self.client.clock().now();
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX);
        let cache_key = (repo.clone(), login.clone());
        if let Some(cached) = lock(&self.cache).get(&cache_key) {
            if now < cached.fetched_at + ttl {
                return Ok(cached.permission);
            }
        }
        let url = self.client.url(
            &[
                "repos",
                repo.owner(),
                repo.name(),
                "collaborators",
                login.as_str(),
                "permission",
            ],
            &[],
        );
        let permission = match self.client.get_json::<model::CollaboratorPermission>(url).await {
            Ok(p) => {
                // role_name is the precise role (maintain, triage, custom); permission is GitHub's
                // older coarse value. Trust if either says write or better.
                let coarse = Permission::parse(&p.permission).unwrap_or(Permission::None);
                let precise = p.role_name.as_deref().and_then(Permission::parse);
                match precise {
                    Some(r) if r.is_trusted() || !coarse.is_trusted() => r,
                    _ => coarse,
                }
            }
            // GitHub answers 404 for a user who is not a collaborator at all.
            Err(GitHubError::NotFound { .. }) => Permission::None,
            Err(e) => return Err(e),
        };
        lock(&self.cache).insert(
            cache_key,
            CachedPermission {
                permission,
                fetched_at: now,
            },
        );
        Ok(permission)
    }
}
