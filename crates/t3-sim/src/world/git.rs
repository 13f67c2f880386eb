//! What T3's git does for worktrees, as far as afk can tell: `git worktree add [-b NEW] PATH REF`
//! (a bootstrap's `prepareWorktree`, the `vcs.createWorktree` RPC), `vcs.listRefs` and
//! `vcs.removeWorktree` (T3's `GitVcsDriverCore.ts`). Nothing is created on disk.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};
use t3_client::wire::vcs::{CreateWorktree, ListRefs, RefPage, RemoveWorktree, VcsRef};

use super::{DispatchFailure, World};

/// The git state of one repository (a `projectCwd`): every branch `git worktree add -b` made
/// there, with the worktree it is checked out in. Git keeps a branch after its thread is
/// deleted, so a second worktree on the same new branch is refused for ever, as `git worktree
/// add -b` would.
#[derive(Debug, Default)]
pub(super) struct Repository {
    branches: BTreeMap<String, Option<String>>,
}

/// A worktree `git worktree add` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddedWorktree {
    /// Where.
    pub(crate) path: String,
    /// The branch checked out in it.
    pub(crate) branch: String,
}

/// T3's `GitCommandError` for a failed git `operation` in `cwd`: the message T3 squashes it
/// into, and the error.
fn git_failure(operation: &str, cwd: &str, detail: &str, exit_code: i32) -> (String, Value) {
    (
        format!("Git command failed in {operation} ({cwd}): {detail}"),
        json!({
            "_tag": "GitCommandError",
            "operation": operation,
            "command": "git",
            "cwd": cwd,
            "exitCode": exit_code,
            "detail": detail,
        }),
    )
}

impl World {
    /// `git worktree add [-b new_branch] PATH ref_name` in `cwd`, at T3's path for the branch
    /// (`<worktrees dir>/<basename of cwd>/<branch, '/' → '-'>`) unless `path` is given. Fails
    /// as git does when the new branch exists, when the branch to check out is checked out
    /// already, or when the path is taken.
    pub(crate) fn git_worktree_add(
        &mut self,
        cwd: &str,
        ref_name: &str,
        new_branch: Option<&str>,
        path: Option<&str>,
    ) -> Result<AddedWorktree, (String, Value)> {
        let branch = new_branch.unwrap_or(ref_name).to_owned();
        let path = path.map(str::to_owned).unwrap_or_else(|| {
            let repository = Path::new(cwd)
                .file_name()
                .map_or_else(|| cwd.to_owned(), |name| name.to_string_lossy().into_owned());
            self.worktrees_dir
                .join(repository)
                .join(branch.replace('/', "-"))
                .display()
                .to_string()
        });
        let repo = self.repositories.entry(cwd.to_owned()).or_default();
        let refused = match new_branch {
            Some(new) => repo.branches.contains_key(new),
            None => repo.branches.get(ref_name).is_some_and(Option::is_some),
        };
        if refused || self.worktree_paths.contains(&path) {
            let code = if refused { 255 } else { 128 };
            return Err(git_failure(
                "GitVcsDriver.createWorktree",
                cwd,
                "git worktree add failed",
                code,
            ));
        }
        repo.branches.insert(branch.clone(), Some(path.clone()));
        self.worktree_paths.insert(path.clone());
        Ok(AddedWorktree { path, branch })
    }

    /// `vcs.createWorktree`: [`World::git_worktree_add`] as T3's own clients ask for it.
    pub(crate) fn create_worktree(&mut self, input: &CreateWorktree) -> Result<Value, DispatchFailure> {
        let added = self
            .git_worktree_add(
                &input.cwd,
                &input.ref_name,
                input.new_ref_name.as_deref(),
                input.path.as_deref(),
            )
            .map_err(|(message, error)| DispatchFailure::of_step(message, error))?;
        Ok(json!({ "worktree": { "path": added.path, "refName": added.branch } }))
    }

    /// `vcs.listRefs`: the local branches of `cwd` this stand-in knows (those worktrees were
    /// added on; a project's base branch is not listed), filtered and paged as T3 does.
    pub(crate) fn list_refs(&self, input: &ListRefs) -> RefPage {
        let known = self.repositories.get(&input.cwd);
        let is_repo = known.is_some() || self.projects.iter().any(|p| p.workspace_root == input.cwd);
        if input.ref_kind.as_deref() == Some("remote") {
            return RefPage {
                refs: Vec::new(),
                is_repo,
                next_cursor: None,
            };
        }
        let query = input.query.as_deref().unwrap_or_default().to_lowercase();
        let matching: Vec<VcsRef> = known
            .map(|repo| {
                repo.branches
                    .iter()
                    .filter(|(name, _)| name.to_lowercase().contains(&query))
                    .map(|(name, worktree)| VcsRef {
                        name: name.clone(),
                        is_remote: false,
                        worktree_path: worktree.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let start = usize::try_from(input.cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let limit = input.limit.map_or(usize::MAX, |l| l as usize);
        let end = start.saturating_add(limit).min(matching.len());
        RefPage {
            refs: matching
                .get(start..end)
                .map(<[VcsRef]>::to_vec)
                .unwrap_or_default(),
            is_repo,
            next_cursor: (end < matching.len()).then_some(end as u64),
        }
    }

    /// The local `branch` in any repository, with the worktree it is checked out in.
    pub(crate) fn branch(&self, branch: &str) -> Option<Option<String>> {
        self.repositories
            .values()
            .find_map(|repo| repo.branches.get(branch).cloned())
    }

    /// `vcs.removeWorktree`: `git worktree remove [--force] PATH` in `cwd`; the branch stays.
    pub(crate) fn remove_worktree(&mut self, input: &RemoveWorktree) -> Result<Value, DispatchFailure> {
        let checked_out = self.repositories.get_mut(&input.cwd).and_then(|repo| {
            repo.branches
                .values_mut()
                .find(|worktree| worktree.as_deref() == Some(input.path.as_str()))
        });
        let Some(worktree) = checked_out else {
            let (message, error) = git_failure(
                "GitVcsDriver.removeWorktree",
                &input.cwd,
                "git worktree remove failed",
                128,
            );
            return Err(DispatchFailure::of_step(message, error));
        };
        *worktree = None;
        self.worktree_paths.remove(&input.path);
        Ok(Value::Null)
    }
}
