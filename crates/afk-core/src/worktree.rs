//! Where a thread works when T3 makes no worktree for it: a path template per repository.

use std::fmt;

use crate::IssueKey;

/// A worktree path template for HTTP dispatch. Placeholders: `{owner}`, `{name}`, `{issue}`
/// (the issue number), `{branch}` and `{attempt}`.
#[derive(Clone, PartialEq, Eq)]
pub struct WorktreeTemplate(String);

/// The placeholders a [`WorktreeTemplate`] may use.
pub const WORKTREE_PLACEHOLDERS: &[&str] = &["owner", "name", "issue", "branch", "attempt"];

impl WorktreeTemplate {
    /// Accepts a non-empty template whose `{...}` placeholders are all known and that tells
    /// threads apart (it uses `{issue}` or `{branch}`).
    pub fn new(template: impl Into<String>) -> Result<Self, String> {
        let template = template.into();
        if template.trim().is_empty() {
            return Err("the worktree path template is empty".into());
        }
        let mut rest = template.as_str();
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(format!("{template:?} has a '{{' without a closing '}}'"));
            };
            let name = &after[..close];
            if !WORKTREE_PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "{template:?} uses {{{name}}}; the placeholders are {{owner}}, {{name}}, {{issue}}, {{branch}} and {{attempt}}"
                ));
            }
            rest = &after[close + 1..];
        }
        // The template is what lifts the one-thread limit: two live threads must never share a path.
        if !(template.contains("{issue}") || template.contains("{branch}")) {
            return Err(format!(
                "{template:?} gives every thread the same path; use {{issue}} or {{branch}} in it"
            ));
        }
        Ok(Self(template))
    }

    /// The path for one attempt.
    pub fn render(&self, issue: &IssueKey, branch: &str, attempt: u32) -> String {
        self.0
            .replace("{owner}", issue.repo.owner())
            .replace("{name}", issue.repo.name())
            .replace("{issue}", &issue.number.to_string())
            .replace("{branch}", branch)
            .replace("{attempt}", &attempt.to_string())
    }
}

impl fmt::Debug for WorktreeTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Repo;

    #[test]
    fn templates_render_every_placeholder_and_refuse_unknown_ones() {
        let issue = IssueKey {
            repo: Repo::new("acme/api").expect("repo"),
            number: 42,
        };
        let t = WorktreeTemplate::new("/wt/{owner}/{name}/{issue}-{attempt}/{branch}").expect("valid");
        assert_eq!(
            t.render(&issue, "afk/issue-42", 2),
            "/wt/acme/api/42-2/afk/issue-42"
        );
        let err = WorktreeTemplate::new("/wt/{repo}").unwrap_err();
        assert!(err.contains("{repo}") && err.contains("{owner}"), "{err}");
        assert!(WorktreeTemplate::new("/wt/{name").is_err());
        assert!(WorktreeTemplate::new("  ").is_err());
        let err = WorktreeTemplate::new("/wt/{name}").unwrap_err();
        assert!(err.contains("same path"), "{err}");
    }
}
