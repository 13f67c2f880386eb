//! T3's git RPC methods afk uses to recover a half-made thread (T3's
//! `packages/contracts/src/git.ts`): `vcs.listRefs` (`orchestration:read`) to find the branch a
//! cut-off bootstrap made, and `vcs.removeWorktree` (`orchestration:operate`) to remove the
//! worktree it left unrecorded. Only what afk reads is typed; T3's other fields are ignored.

use serde::{Deserialize, Serialize};

/// The RPC method that lists a repository's branches (`VcsListRefsInput` → `VcsListRefsResult`).
pub const VCS_LIST_REFS: &str = "vcs.listRefs";
/// The RPC method that runs `git worktree remove [--force] PATH` in a repository.
pub const VCS_REMOVE_WORKTREE: &str = "vcs.removeWorktree";
/// The RPC method that runs `git worktree add` (T3's own clients use it; afk does not, its tests
/// do, to make the state a cut-off bootstrap leaves).
pub const VCS_CREATE_WORKTREE: &str = "vcs.createWorktree";

/// `vcs.listRefs`'s input: the repository and a filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListRefs {
    /// The repository's checkout (a project's workspace root).
    pub cwd: String,
    /// Keeps refs whose name contains this text, case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Where the page starts (the previous page's `nextCursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<u64>,
    /// `all`, `local` or `remote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_kind: Option<String>,
    /// Reads git again instead of T3's cached listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<bool>,
    /// Refs per page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One page of `vcs.listRefs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefPage {
    /// The refs of this page.
    pub refs: Vec<VcsRef>,
    /// False when `cwd` is not a git repository (then `refs` is empty).
    #[serde(default = "yes")]
    pub is_repo: bool,
    /// Where the next page starts; `None` on the last one.
    #[serde(default)]
    pub next_cursor: Option<u64>,
}

fn yes() -> bool {
    true
}

/// A branch as `vcs.listRefs` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VcsRef {
    /// The branch's name, e.g. `afk/issue-10` (a remote one is `origin/...` with `isRemote`).
    pub name: String,
    /// A remote-tracking ref.
    #[serde(default)]
    pub is_remote: bool,
    /// The worktree the branch is checked out in, if any.
    #[serde(default)]
    pub worktree_path: Option<String>,
}

/// `vcs.removeWorktree`'s input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoveWorktree {
    /// The repository's checkout.
    pub cwd: String,
    /// The worktree to remove.
    pub path: String,
    /// `--force`: remove it even with changes in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// `vcs.createWorktree`'s input: `git worktree add [-b NEW] PATH REF`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWorktree {
    /// The repository's checkout.
    pub cwd: String,
    /// The ref to check out (the base of a new branch).
    pub ref_name: String,
    /// The new branch to create, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_ref_name: Option<String>,
    /// The base branch recorded for a new branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ref_name: Option<String>,
    /// Where; `None` for T3's own place (`<worktrees>/<repository>/<branch, '/' → '-'>`).
    pub path: Option<String>,
}
