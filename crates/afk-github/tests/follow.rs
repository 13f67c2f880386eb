//! Following a job's pull request: its state, the head commit's failed checks (check runs and
//! commit statuses) and the reviews requesting changes by writers, read from the stand-in in
//! GitHub's shapes.

mod common;

use afk_github::testing::STAND_IN_LOGIN;
use afk_github::{CheckKind, PullRequestState, Reporter};
use common::*;

#[tokio::test]
async fn failed_checks_of_the_head_commit_are_read_with_their_summaries() {
    let (github, clock) = world().await;
    let reporter = Reporter::new(client(&github, &clock));
    let pr = github.open_pull_request(REPO, STAND_IN_LOGIN, "afk/issue-1", "Fix it", "");
    let sha = github.pull_head_sha(REPO, pr);
    assert_eq!(sha.len(), 40);
    github.add_check_run(REPO, &sha, "lint", Some("success"), "Clean", "");
    let run = github.add_check_run(
        REPO,
        &sha,
        "test",
        Some("failure"),
        "2 tests failed",
        "tests::parse and tests::render failed",
    );
    github.add_check_run(REPO, &sha, "build", None, "", "");
    // A status context counts by its latest state: `docs` failed, then passed.
    github.add_commit_status(REPO, &sha, "docs", "failure", "broken link");
    github.add_commit_status(REPO, &sha, "docs", "success", "ok");
    let status = github.add_commit_status(REPO, &sha, "ci/legacy", "error", "runner crashed");

    let activity = reporter.pull_request_activity(&repo(), pr).await.unwrap();
    assert_eq!(activity.state, PullRequestState::Open);
    assert_eq!(activity.head_sha, sha);
    assert!(activity.checks_pending, "the build still runs");
    let failed: Vec<_> = activity
        .failed_checks
        .iter()
        .map(|c| (c.kind, c.id, c.name.as_str(), c.conclusion.as_str()))
        .collect();
    assert_eq!(
        failed,
        vec![
            (CheckKind::CheckRun, run, "test", "failure"),
            (CheckKind::Status, status, "ci/legacy", "error"),
        ]
    );
    assert_eq!(
        activity.failed_checks[0].summary,
        "2 tests failed\ntests::parse and tests::render failed"
    );
    assert!(activity.failed_checks[0]
        .url
        .as_deref()
        .is_some_and(|u| u.contains("/runs/")));

    // A new commit has no checks yet: nothing failed on it.
    github.push_commit(REPO, pr);
    let activity = reporter.pull_request_activity(&repo(), pr).await.unwrap();
    assert_ne!(activity.head_sha, sha);
    assert!(activity.failed_checks.is_empty() && !activity.checks_pending);
}

#[tokio::test]
async fn only_a_writers_standing_request_for_changes_counts_with_its_line_comments() {
    let (github, clock) = world().await;
    github.set_permission(REPO, "reader", "read");
    let reporter = Reporter::new(client(&github, &clock));
    let pr = github.open_pull_request(REPO, STAND_IN_LOGIN, "afk/issue-1", "Fix it", "");
    github.add_review(
        REPO,
        pr,
        "reader",
        "CHANGES_REQUESTED",
        "Rewrite it all",
        &[("a.rs", 1, "no")],
    );
    let review = github.add_review(
        REPO,
        pr,
        MAINTAINER,
        "CHANGES_REQUESTED",
        "Almost: two things.",
        &[
            ("src/lib.rs", 12, "Handle the empty case."),
            ("README.md", 3, "Typo."),
        ],
    );
    github.add_review(REPO, pr, MAINTAINER, "COMMENTED", "A note, deciding nothing", &[]);

    let activity = reporter.pull_request_activity(&repo(), pr).await.unwrap();
    assert_eq!(
        activity.changes_requested.len(),
        1,
        "the reader's review is ignored"
    );
    let changes = &activity.changes_requested[0];
    assert_eq!(changes.id, review);
    assert_eq!(changes.reviewer.as_str(), MAINTAINER);
    assert_eq!(changes.body, "Almost: two things.");
    let lines: Vec<_> = changes
        .comments
        .iter()
        .map(|c| (c.path.as_str(), c.line, c.body.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("src/lib.rs", Some(12), "Handle the empty case."),
            ("README.md", Some(3), "Typo.")
        ]
    );

    // The writer approves later: the request no longer stands.
    github.add_review(REPO, pr, MAINTAINER, "APPROVED", "", &[]);
    let activity = reporter.pull_request_activity(&repo(), pr).await.unwrap();
    assert!(activity.changes_requested.is_empty());
}

#[tokio::test]
async fn a_merged_or_closed_pull_request_says_so() {
    let (github, clock) = world().await;
    let reporter = Reporter::new(client(&github, &clock));
    let merged = github.open_pull_request(REPO, STAND_IN_LOGIN, "afk/issue-1", "One", "");
    let closed = github.open_pull_request(REPO, STAND_IN_LOGIN, "afk/issue-2", "Two", "");
    github.merge_pull_request(REPO, merged);
    github.close_issue(REPO, closed, MAINTAINER);
    let state = |n| {
        let reporter = &reporter;
        async move { reporter.pull_request_activity(&repo(), n).await.unwrap().state }
    };
    assert_eq!(state(merged).await, PullRequestState::Merged);
    assert_eq!(state(closed).await, PullRequestState::Closed);
    let missing = reporter.pull_request_activity(&repo(), 999).await.unwrap_err();
    assert!(!missing.is_transient(), "{missing}");
}
