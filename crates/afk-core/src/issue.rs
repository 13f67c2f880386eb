//! What a job is about: one issue of one repository.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a repository name, issue number or priority is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIssue {
    /// Not `OWNER/NAME`.
    #[error(
        "repository {0:?} is not of the form OWNER/NAME (an owner is letters, digits, `-` and `_`; a name also `.`, not `.` or `..`)"
    )]
    Repo(String),
    /// Not `p0`..`p3` or `0`..`3`.
    #[error("priority {0:?} is not one of p0, p1, p2, p3")]
    Priority(String),
}

/// A repository, `OWNER/NAME`, as GitHub spells it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Repo(String);

impl Repo {
    /// Accepts `OWNER/NAME` as GitHub allows them (see the rules below): never a path such as
    /// `../..`.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidIssue> {
        let value = value.into();
        // GitHub's rules: an owner (user or organisation) is letters, digits and single hyphens,
        // not starting or ending with one (managed users add `_`); a name is letters, digits,
        // `-`, `_` and `.`, but not `.` or `..`. Both at most 100 characters.
        let ok_owner = |p: &str| {
            (1..=100).contains(&p.len())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
                && !p.starts_with('-')
                && !p.ends_with('-')
        };
        let ok_name = |p: &str| {
            (1..=100).contains(&p.len())
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && p != "."
                && p != ".."
        };
        match value.split_once('/') {
            Some((owner, name)) if ok_owner(owner) && ok_name(name) => Ok(Self(value)),
            _ => Err(InvalidIssue::Repo(value)),
        }
    }

    /// `OWNER/NAME`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `/`: a user or an organisation.
    pub fn owner(&self) -> &str {
        self.0.split_once('/').map(|(o, _)| o).unwrap_or(&self.0)
    }

    /// The part after the `/`.
    pub fn name(&self) -> &str {
        self.0.split_once('/').map(|(_, n)| n).unwrap_or(&self.0)
    }
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl FromStr for Repo {
    type Err = InvalidIssue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for Repo {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Repo::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// One issue: the unit of work. A job exists at most once per issue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IssueKey {
    /// The repository.
    pub repo: Repo,
    /// The issue number.
    pub number: u64,
}

impl fmt::Display for IssueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.repo, self.number)
    }
}

/// How urgent a job is: `p0` (most) to `p3` (least); `p2` unless said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Priority(u8);

impl Priority {
    /// The most urgent.
    pub const P0: Priority = Priority(0);
    /// The default.
    pub const DEFAULT: Priority = Priority(2);
    /// The least urgent.
    pub const P3: Priority = Priority(3);

    /// `0`..=`3`.
    pub fn new(level: u8) -> Result<Self, InvalidIssue> {
        if level <= 3 {
            Ok(Self(level))
        } else {
            Err(InvalidIssue::Priority(level.to_string()))
        }
    }

    /// 0 (most urgent) to 3.
    pub fn level(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

impl FromStr for Priority {
    type Err = InvalidIssue;
    /// Accepts `p0`..`p3`, `P0`..`P3`, `afk:p0`..`afk:p3` or `0`..`3`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_prefix("afk:").unwrap_or(t);
        let t = t.strip_prefix(['p', 'P']).unwrap_or(t);
        t.parse::<u8>()
            .ok()
            .and_then(|l| Priority::new(l).ok())
            .ok_or_else(|| InvalidIssue::Priority(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Level(u8),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Level(l) => Priority::new(l).map_err(serde::de::Error::custom),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_must_be_owner_slash_name() {
        assert_eq!(Repo::new("acme/widgets").unwrap().owner(), "acme");
        assert!(Repo::new("acme").is_err());
        assert!(Repo::new("acme/").is_err());
        assert!(Repo::new("a/b/c").is_err());
        assert!(Repo::new("acme/wid gets").is_err());
        for bad in [
            "../..", "acme/..", "acme/.", "-acme/x", "acme-/x", "ac.me/x", "a:b/c",
        ] {
            assert!(Repo::new(bad).is_err(), "{bad}");
        }
        for good in ["a/b", "acme-corp/my.repo_2", "user_shortcode/.github", "a/..x"] {
            assert!(Repo::new(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn priority_accepts_labels_and_levels() {
        assert_eq!("afk:p0".parse::<Priority>().unwrap(), Priority::P0);
        assert_eq!("P3".parse::<Priority>().unwrap(), Priority::P3);
        assert!("p4".parse::<Priority>().is_err());
        assert!(Priority::P0 < Priority::DEFAULT);
    }
}
