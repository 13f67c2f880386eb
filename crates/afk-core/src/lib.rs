//! afk's domain: what a job and an attempt are, the one state machine that moves them, and the
//! retry policy.
//!
//! **Architecture invariant:** this crate does no I/O and knows nothing of T3's JSON, SQL or
//! GitHub. The machine takes the current [`JobStatus`] and an [`Event`] and returns a
//! [`Transition`]: the new states and the [`Effect`] to carry out. The ledger writes the
//! transition first; only then does the runtime perform the effect.

mod issue;
mod machine;
mod reason;
mod retry;
mod state;
mod worktree;

pub use issue::{InvalidIssue, IssueKey, Priority, Repo};
pub use machine::{apply, AttemptChange, Effect, Event, InvalidTransition, JobStatus, RequeueBy, Transition};
pub use reason::{CancelReason, JobSource, UnknownName};
pub use retry::RetryPolicy;
pub use state::{AttemptState, JobState, UnknownState};
pub use worktree::{WorktreeTemplate, WORKTREE_PLACEHOLDERS};

/// A ledger row id of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The number of an attempt within its job: 1 for the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct AttemptNo(pub u32);

impl std::fmt::Display for AttemptNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
