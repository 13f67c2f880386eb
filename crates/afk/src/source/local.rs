//! The local source: a folder of Markdown issue files, for trying afk without GitHub.
//!
//! Each `*.md` file is one issue: YAML front matter between `---` lines, then the body.
//!
//! ```markdown
//! ---
//! repo: acme/widgets
//! number: 42
//! title: Fix the widget
//! labels: [bug]
//! priority: p1
//! ---
//! The widget breaks when ...
//! ```
//!
//! Adding a file queues a job; removing it cancels the job. A file that cannot be read is
//! reported with its path and skipped, and then no job is cancelled in that scan (its issue may
//! be the one that is missing).

use std::path::{Path, PathBuf};

use afk_core::{IssueKey, Priority, Repo};
use serde::Deserialize;
use tracing::warn;

use super::{Scan, SourceIssue};

/// A local issue file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("issue file {path}: {message}")]
pub struct LocalIssueError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    repo: Repo,
    number: u64,
    title: String,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    priority: Priority,
}

/// Parses one issue file's text.
pub fn parse_issue(path: &Path, text: &str) -> Result<SourceIssue, LocalIssueError> {
    let error = |message: String| LocalIssueError {
        path: path.to_owned(),
        message,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
        .ok_or_else(|| error("must start with a `---` line opening the YAML front matter".into()))?;
    let (yaml, body) =
        split_front_matter(rest).ok_or_else(|| error("the front matter has no closing `---` line".into()))?;
    let front: FrontMatter = serde_norway::from_str(yaml).map_err(|e| error(format!("front matter: {e}")))?;
    if front.number == 0 {
        return Err(error("front matter: number must be at least 1".into()));
    }
    if front.title.trim().is_empty() {
        return Err(error("front matter: title is empty".into()));
    }
    Ok(SourceIssue {
        key: IssueKey {
            repo: front.repo,
            number: front.number,
        },
        title: front.title.trim().to_owned(),
        body: body.trim().to_owned(),
        labels: front.labels,
        priority: front.priority,
    })
}

fn split_front_matter(rest: &str) -> Option<(&str, &str)> {
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&rest[..offset], &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

/// Reads every `*.md` file in `dir`. A missing folder is an empty but incomplete scan: it may be
/// a volume not mounted yet or a wrong working directory, which must not cancel every job. An
/// unreadable file or folder entry is logged and makes the scan incomplete too.
pub fn scan(dir: &Path) -> Scan {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Scan {
                issues: Vec::new(),
                complete: false,
            }
        }
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "cannot read the local issue folder");
            return Scan::default();
        }
    };
    let mut entry_failed = false;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| match e {
            Ok(e) => Some(e.path()),
            Err(error) => {
                warn!(dir = %dir.display(), %error, "cannot read an entry of the local issue folder");
                entry_failed = true;
                None
            }
        })
        .filter(|p| p.extension().is_some_and(|x| x == "md") && p.is_file())
        .collect();
    paths.sort();
    let mut scan = Scan {
        issues: Vec::new(),
        complete: !entry_failed,
    };
    let mut seen = std::collections::BTreeMap::<IssueKey, PathBuf>::new();
    for path in paths {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| LocalIssueError {
                path: path.clone(),
                message: e.to_string(),
            })
            .and_then(|text| parse_issue(&path, &text));
        match parsed {
            Ok(issue) => {
                if let Some(first) = seen.get(&issue.key) {
                    warn!(file = %path.display(), first = %first.display(), issue = %issue.key,
                          "two files describe the same issue; using the first");
                    continue;
                }
                seen.insert(issue.key.clone(), path);
                scan.issues.push(issue);
            }
            Err(e) => {
                warn!("{e}; skipped");
                scan.complete = false;
            }
        }
    }
    scan
}

/// Writes `issue` as a file in `dir` (used by `afk demo` and tests).
pub fn write_issue(dir: &Path, file_name: &str, issue: &SourceIssue) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(file_name);
    let labels = issue
        .labels
        .iter()
        .map(|l| format!("{l:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "---\nrepo: {}\nnumber: {}\ntitle: {:?}\nlabels: [{}]\npriority: {}\n---\n{}\n",
        issue.key.repo, issue.key.number, issue.title, labels, issue.priority, issue.body
    );
    // Write then rename so that a scan never reads half a file.
    let tmp = dir.join(format!(".{file_name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_front_matter_and_body() {
        let text = "---\nrepo: acme/widgets\nnumber: 42\ntitle: Fix the widget\nlabels: [bug]\npriority: p1\n---\nIt breaks.\n";
        let issue = parse_issue(Path::new("x.md"), text).unwrap();
        assert_eq!(issue.key.to_string(), "acme/widgets#42");
        assert_eq!(issue.title, "Fix the widget");
        assert_eq!(issue.body, "It breaks.");
        assert_eq!(issue.labels, vec!["bug"]);
        assert_eq!(issue.priority, "p1".parse().unwrap());
    }

    #[test]
    fn bad_files_say_what_is_wrong_and_where() {
        for (text, expect) in [
            ("no front matter", "must start with"),
            ("---\nrepo: acme/widgets\n", "no closing"),
            ("---\nrepo: acme\nnumber: 1\ntitle: t\n---\n", "OWNER/NAME"),
            ("---\nrepo: acme/w\ntitle: t\n---\n", "number"),
            (
                "---\nrepo: acme/w\nnumber: 1\ntitle: t\npriority: p9\n---\n",
                "priority",
            ),
        ] {
            let err = parse_issue(Path::new("dir/bad.md"), text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("dir/bad.md") && err.contains(expect),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn a_scan_with_a_broken_file_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let issue = SourceIssue {
            key: IssueKey {
                repo: Repo::new("acme/widgets").unwrap(),
                number: 1,
            },
            title: "One".into(),
            body: "Body".into(),
            labels: vec![],
            priority: Priority::DEFAULT,
        };
        write_issue(dir.path(), "1.md", &issue).unwrap();
        let scan_ok = scan(dir.path());
        assert!(scan_ok.complete);
        assert_eq!(scan_ok.issues, vec![issue]);
        std::fs::write(dir.path().join("2.md"), "garbage").unwrap();
        let scan_bad = scan(dir.path());
        assert!(!scan_bad.complete);
        assert_eq!(scan_bad.issues.len(), 1);
    }
}
