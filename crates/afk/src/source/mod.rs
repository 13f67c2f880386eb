//! Issue sources read from outside afk: today the local folder (GitHub's issues come through
//! `afk-github`). A source yields the issues that should be worked on now; intake
//! (`control/intake/`) queues new ones and cancels jobs whose issue is gone.

pub mod local;

use std::collections::BTreeMap;
use std::path::PathBuf;

use afk_core::{IssueKey, Priority};

/// One issue as a source sees it: what the job is created from (the body is Markdown).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceIssue {
    pub key: IssueKey,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
    pub priority: Priority,
}

/// What a source reported in one scan.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Issues that should be worked on.
    pub issues: Vec<SourceIssue>,
    /// True when the scan is complete, so that a job whose issue is missing from it may be
    /// cancelled. A scan that met an unreadable file is not complete.
    pub complete: bool,
    /// The file each issue was read from.
    pub files: BTreeMap<IssueKey, PathBuf>,
    /// Each file that could not be taken, and why: the caller says each once.
    pub problems: Vec<local::LocalIssueError>,
}
