//! Where a repository's jobs go in T3: its project, and how its threads are started there.

use afk_core::WorktreeTemplate;
use t3_client::ProjectId;

/// How a repository's threads are started in T3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    /// `thread.create` then `thread.turn.start` over HTTP, as the seed does. T3 makes no git
    /// worktree on this path: each thread works in `worktree_path` (prepared by other means), or
    /// in the project's own checkout, which is why, without a template, the repository runs one
    /// thread at a time.
    Http {
        /// Where each thread works, e.g. `/srv/worktrees/{name}/{branch}`.
        worktree_path: Option<WorktreeTemplate>,
    },
    /// One `thread.turn.start` with `bootstrap` over T3's WebSocket RPC: T3 creates the thread, adds
    /// a git worktree on the attempt's own branch from `base_branch`, runs the project's setup
    /// script and starts the turn, or undoes it all.
    WsWorktree {
        /// The branch each attempt's branch starts from.
        base_branch: String,
        /// Run the project's setup script in the new worktree; `None`: when the project has a
        /// script marked to run on worktree creation (as T3's own UI decides).
        run_setup_script: Option<bool>,
    },
}

impl Dispatch {
    /// The config literal (`http` or `ws-worktree`).
    pub fn name(&self) -> &'static str {
        match self {
            Dispatch::Http { .. } => "http",
            Dispatch::WsWorktree { .. } => "ws-worktree",
        }
    }
}

/// A repository's T3 project and dispatch mode (`[t3.projects]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoTarget {
    /// The T3 project its threads belong to.
    pub project: ProjectId,
    /// How they are started.
    pub dispatch: Dispatch,
}

impl RepoTarget {
    /// A target dispatched over HTTP into the project's checkout (the seed's way).
    pub fn http(project: ProjectId) -> Self {
        Self {
            project,
            dispatch: Dispatch::Http { worktree_path: None },
        }
    }

    /// How many of the repository's attempts may be in flight at once, given `[limits] per_repo`:
    /// one when its threads would share the project's checkout.
    pub fn in_flight_limit(&self, per_repo: usize) -> usize {
        match &self.dispatch {
            Dispatch::Http { worktree_path: None } => per_repo.min(1),
            _ => per_repo,
        }
    }

    /// True when threads of this repository would share one checkout (and so run one at a time).
    pub fn shares_checkout(&self) -> bool {
        matches!(self.dispatch, Dispatch::Http { worktree_path: None })
    }
}

/// The branch of an attempt in a repository dispatched with worktrees: T3 creates the branch, so
/// each attempt needs its own (`afk/issue-42`, then `afk/issue-42-2`, ...).
pub fn attempt_branch(base: &str, attempt: u32) -> String {
    if attempt <= 1 {
        base.to_owned()
    } else {
        format!("{base}-{attempt}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_checkouts_run_one_thread_at_a_time() {
        let project = ProjectId::new("p").expect("id");
        assert_eq!(RepoTarget::http(project.clone()).in_flight_limit(4), 1);
        let templated = RepoTarget {
            project: project.clone(),
            dispatch: Dispatch::Http {
                worktree_path: Some(WorktreeTemplate::new("/wt/{issue}").expect("valid")),
            },
        };
        assert_eq!(templated.in_flight_limit(4), 4);
        let ws = RepoTarget {
            project,
            dispatch: Dispatch::WsWorktree {
                base_branch: "main".into(),
                run_setup_script: None,
            },
        };
        assert_eq!(ws.in_flight_limit(4), 4);
        assert_eq!(attempt_branch("afk/issue-7", 1), "afk/issue-7");
        assert_eq!(attempt_branch("afk/issue-7", 3), "afk/issue-7-3");
    }
}
