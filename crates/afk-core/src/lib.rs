//! afk's domain: what a job and an attempt are, the one state machine that moves them, and the
//! retry policy.
//!
//! **Architecture invariant:** this crate does no I/O and knows nothing of T3's JSON, SQL or
//! GitHub. The machine takes the current [`JobStatus`] and an [`Event`] and returns a
//! [`Transition`]: the new states and the [`Effect`] to carry out. The ledger writes the
//! transition first; only then does the runtime perform the effect.

#[macro_use]
mod names;
mod budget;
mod issue;
mod machine;
mod reason;
mod retry;
mod state;
mod worktree;

pub use budget::{span, AgentTimeOverrun, BudgetLimits};
pub use issue::{InvalidIssue, IssueKey, Priority, Repo};
pub use machine::{
    apply, first_line, AttemptChange, Effect, Event, FollowUpBy, InputWait, InvalidTransition, JobStatus,
    RequeueBy, Transition,
};
pub use names::{UnknownName, UnknownState};
pub use reason::{CancelReason, JobSource};
pub use retry::RetryPolicy;
pub use state::{AttemptState, JobState};
pub use worktree::{WorktreeTemplate, WORKTREE_PLACEHOLDERS};

/// A number that names a row or an attempt: `Display` as the number, serialised as it.
macro_rules! number_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

number_newtype!(
    /// A job's ledger row id.
    JobId(i64)
);
number_newtype!(
    /// An attempt's ledger row id.
    AttemptId(i64)
);
number_newtype!(
    /// The number of an attempt within its job: 1 for the first.
    AttemptNo(u32)
);
