//! Issue sources: where jobs come from. Each source yields the issues that should be worked on
//! now; the control loop queues new ones and cancels jobs whose issue is gone.

pub mod local;

use afk_core::{IssueKey, Priority};

/// One issue as a source sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIssue {
    /// Repository and number.
    pub key: IssueKey,
    /// Its title.
    pub title: String,
    /// Its body (Markdown).
    pub body: String,
    /// Its labels.
    pub labels: Vec<String>,
    /// Its priority.
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
}
