//! Policy: what afk decides per repository — its T3 project and dispatch mode
//! (`[t3.projects]`), and how each attempt's thread is named and placed.

mod target;

pub use afk_core::{WorktreeTemplate, WORKTREE_PLACEHOLDERS};
pub use target::{attempt_branch, Dispatch, RepoTarget};
