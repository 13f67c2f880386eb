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
//! be the one that is missing). A symlink whose target is missing (or that loops) is such a file,
//! not a removed one. A FIFO, a socket or a folder named `*.md` is no issue file: it is reported
//! and skipped, and does not hold cancellations up. A file larger than [`MAX_ISSUE_FILE_BYTES`]
//! is refused unread.

use std::io::Read;
use std::path::{Path, PathBuf};

use afk_core::{IssueKey, Priority, Repo};
use serde::Deserialize;

use super::{Scan, SourceIssue};

/// A local issue file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("issue file {path}: {message}")]
pub struct LocalIssueError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// The largest issue file afk reads (1 MiB): an issue is a page of text, and the folder is read
/// on every tick.
pub const MAX_ISSUE_FILE_BYTES: u64 = 1024 * 1024;

/// The largest issue number: the ledger stores it as a signed 64-bit integer (GitHub's are far
/// smaller).
const MAX_ISSUE_NUMBER: u64 = i64::MAX as u64;

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
    if front.number == 0 || front.number > MAX_ISSUE_NUMBER {
        return Err(error(format!(
            "front matter: number must be from 1 to {MAX_ISSUE_NUMBER}"
        )));
    }
    if front.title.trim().is_empty() {
        return Err(error("front matter: title is empty".into()));
    }
    // A NUL cannot be stored (PostgreSQL's text refuses it) nor handed to an agent usefully.
    let nul = [
        ("title", front.title.contains('\0')),
        ("body", body.contains('\0')),
        ("labels", front.labels.iter().any(|l| l.contains('\0'))),
    ];
    if let Some((part, _)) = nul.iter().find(|(_, has)| *has) {
        return Err(error(format!("the {part} holds a NUL byte")));
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

/// What a folder entry named `*.md` is.
enum Entry {
    /// A regular file (through any symlinks): read it.
    File(std::fs::Metadata),
    /// Not an issue file (a folder, a FIFO, a socket, a device): skipped, with why.
    NotAFile(&'static str),
    /// Cannot be told (a dangling or looping symlink, no permission): unreadable.
    Unreadable(std::io::Error),
}

fn entry(path: &Path) -> Entry {
    // `metadata` follows symlinks: a dangling one or a loop fails here, and never reads as gone.
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Entry::File(meta),
        Ok(meta) if meta.is_dir() => Entry::NotAFile("a folder"),
        Ok(_) => Entry::NotAFile("not a regular file (a FIFO, socket or device)"),
        Err(error) => Entry::Unreadable(error),
    }
}

/// Reads the issue file at `path`, refusing one over [`MAX_ISSUE_FILE_BYTES`] without reading
/// it whole (it may grow while read).
fn read_issue_file(path: &Path, meta: &std::fs::Metadata) -> Result<String, String> {
    let too_large = || format!("larger than the {MAX_ISSUE_FILE_BYTES}-byte limit for an issue file");
    if meta.len() > MAX_ISSUE_FILE_BYTES {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_ISSUE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_ISSUE_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())
}

/// Reads every `*.md` file in `dir`. A missing folder is an empty but incomplete scan: it may be
/// a volume not mounted yet or a wrong working directory, which must not cancel every job. A file
/// or folder entry that cannot be read makes the scan incomplete too. Nothing is logged here: the
/// scan lists each file it could not take with why ([`Scan::problems`]), for the caller to say
/// once.
pub fn scan(dir: &Path) -> Scan {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Scan {
                complete: false,
                problems: vec![LocalIssueError {
                    path: dir.to_owned(),
                    message: format!(
                        "the local issue folder {} does not exist: nothing is taken from it, and nothing cancelled, until it does (check [source.local] dir and the working directory)",
                        dir.display()
                    ),
                }],
                ..Scan::default()
            }
        }
        Err(e) => {
            return Scan {
                problems: vec![LocalIssueError {
                    path: dir.to_owned(),
                    message: format!("cannot read the local issue folder: {e}"),
                }],
                ..Scan::default()
            };
        }
    };
    let mut scan = Scan {
        complete: true,
        ..Scan::default()
    };
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => paths.push(e.path()),
            Err(error) => {
                scan.problems.push(LocalIssueError {
                    path: dir.to_owned(),
                    message: format!("cannot read an entry of the folder: {error}"),
                });
                scan.complete = false;
            }
        }
    }
    paths.retain(|p| p.extension().is_some_and(|x| x == "md"));
    paths.sort();
    let mut seen = std::collections::BTreeMap::<IssueKey, PathBuf>::new();
    for path in paths {
        let problem = |message: String| LocalIssueError {
            path: path.clone(),
            message,
        };
        let parsed = match entry(&path) {
            Entry::NotAFile(what) => {
                scan.problems
                    .push(problem(format!("is {what}, not an issue file; skipped")));
                continue;
            }
            Entry::Unreadable(error) => Err(problem(format!(
                "cannot be read ({error}); its job is left as it is"
            ))),
            Entry::File(meta) => read_issue_file(&path, &meta)
                .map_err(problem)
                .and_then(|text| parse_issue(&path, &text)),
        };
        match parsed {
            Ok(issue) => {
                if let Some(first) = seen.get(&issue.key) {
                    scan.problems.push(problem(format!(
                        "describes {} as {} does; using the first",
                        issue.key,
                        first.display()
                    )));
                    continue;
                }
                seen.insert(issue.key.clone(), path.clone());
                scan.files.insert(issue.key.clone(), path);
                scan.issues.push(issue);
            }
            Err(e) => {
                scan.problems.push(e);
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
