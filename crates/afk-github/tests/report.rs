//! Reporting: one status comment of afk's own edited in place, status labels in step, and an
//! issue GitHub no longer has.

mod common;

use afk_core::JobState;
use afk_github::Clock;
use afk_github::{
    IssueGone, ReportOutcome, Reporter, StatusComment, StatusReport, ThreadLink, LABEL_DONE, LABEL_FAILED,
    LABEL_RUNNING, STATUS_MARKER,
};
use common::*;

fn report(number: u64, state: JobState, attempt: u32) -> StatusReport {
    StatusReport {
        issue: key(number),
        attempt,
        state,
        thread: Some(ThreadLink {
            id: format!("thread-{attempt}"),
            url: Some(
                format!("http://t3.example/threads/thread-{attempt}")
                    .parse()
                    .unwrap(),
            ),
        }),
        started_at: None,
        finished_at: None,
        last_error: None,
        pull_request: None,
        question: None,
        follow_ups: None,
    }
}

/// Reports, expecting a written comment.
async fn posted(reporter: &Reporter, report: &StatusReport) -> StatusComment {
    match reporter.report(report).await {
        Ok(ReportOutcome::Reported(comment)) => comment,
        other => panic!("expected a written status comment, got {other:?}"),
    }
}

#[tokio::test]
async fn the_status_comment_is_edited_not_duplicated() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "One", MAINTAINER);
    github.add_comment(REPO, number, "octocat", "Thanks for looking at this!");
    let reporter = Reporter::new(client(&github, &clock));

    let first = posted(&reporter, &report(number, JobState::Running, 1)).await;
    let mut failed = report(number, JobState::Failed, 1);
    failed.last_error = Some("cargo test failed: 3 tests".into());
    failed.started_at = Some(clock.now());
    clock.advance(std::time::Duration::from_secs(125));
    failed.finished_at = Some(clock.now());
    let second = posted(&reporter, &failed).await;

    assert_eq!(first.id, second.id);
    let comments = github.comments(REPO, number);
    assert_eq!(
        comments.len(),
        2,
        "the person's comment and one status comment: {comments:?}"
    );
    let status = &comments[1];
    assert!(status.contains(STATUS_MARKER));
    assert!(status.contains("attempt 1 · **failed**"), "{status}");
    assert!(
        status.contains("[`thread-1`](http://t3.example/threads/thread-1)"),
        "{status}"
    );
    assert!(status.contains("Duration: 2m 5s"), "{status}");
    assert!(status.contains("cargo test failed: 3 tests"), "{status}");
}

#[tokio::test]
async fn a_restarted_reporter_finds_its_comment_by_the_marker() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "One", MAINTAINER);
    Reporter::new(client(&github, &clock))
        .report(&report(number, JobState::Running, 1))
        .await
        .unwrap();

    // A new process: the comment id is not in memory any more.
    let reporter = Reporter::new(client(&github, &clock));
    reporter
        .report(&report(number, JobState::Running, 2))
        .await
        .unwrap();

    let comments = github.comments(REPO, number);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].contains("attempt 2"), "{}", comments[0]);
}

#[tokio::test]
async fn a_deleted_status_comment_is_recreated_once() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "One", MAINTAINER);
    let reporter = Reporter::new(client(&github, &clock));
    let first = posted(&reporter, &report(number, JobState::Running, 1)).await;
    let http = reqwest::Client::new();
    let url = github
        .api_url()
        .join(&format!("repos/{REPO}/issues/comments/{}", first.id))
        .unwrap();
    let deleted = http
        .delete(url)
        .bearer_auth(afk_github::testing::STAND_IN_TOKEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(deleted.as_u16(), 204);

    let second = posted(&reporter, &report(number, JobState::Succeeded, 1)).await;

    assert_ne!(first.id, second.id);
    assert_eq!(github.comments(REPO, number).len(), 1);
}

#[tokio::test]
async fn status_labels_follow_the_job() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "One", MAINTAINER);
    github.add_label(REPO, number, "bug", "octocat");
    let reporter = Reporter::new(client(&github, &clock));
    let key = key(number);

    reporter
        .report(&report(number, JobState::Running, 1))
        .await
        .unwrap();
    assert_eq!(github.labels(REPO, number), vec!["afk", "bug", LABEL_RUNNING]);

    reporter
        .report(&report(number, JobState::Failed, 1))
        .await
        .unwrap();
    assert_eq!(github.labels(REPO, number), vec!["afk", "bug", LABEL_FAILED]);

    reporter
        .report(&report(number, JobState::RetryWait, 2))
        .await
        .unwrap();
    reporter
        .report(&report(number, JobState::Succeeded, 2))
        .await
        .unwrap();
    assert_eq!(github.labels(REPO, number), vec!["afk", "bug", LABEL_DONE]);

    let before = github.requests().len();
    reporter
        .set_status_labels(&key, JobState::Succeeded)
        .await
        .unwrap();
    let writes = github.requests()[before..]
        .iter()
        .filter(|r| r.method != "GET")
        .count();
    assert_eq!(writes, 0, "labels already right: nothing written");

    reporter
        .report(&report(number, JobState::Cancelled, 2))
        .await
        .unwrap();
    assert_eq!(github.labels(REPO, number), vec!["afk", "bug"]);
}

#[tokio::test]
async fn extra_labels_are_added_once_and_only_afks_are_removed_at_the_end() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "One", MAINTAINER);
    github.add_label(REPO, number, "bug", "octocat");
    let reporter = Reporter::new(client(&github, &clock));
    let key = key(number);
    let extra: Vec<String> = ["automated", "triaged", "bug", "afk"].map(String::from).to_vec();

    reporter.add_labels(&key, &extra).await.unwrap();
    reporter.add_labels(&key, &extra).await.unwrap();
    assert_eq!(
        github.labels(REPO, number),
        vec!["afk", "bug", "automated", "triaged"]
    );
    assert_eq!(github.requests().iter().filter(|r| r.method == "POST").count(), 1);
    // A maintainer takes `triaged` over: removed and applied again by hand, it is theirs now.
    github.remove_label(REPO, number, "triaged", MAINTAINER);
    github.add_label(REPO, number, "triaged", MAINTAINER);

    // The job ends (a restarted afk: nothing is remembered but what the issue's events say).
    let removed = Reporter::new(client(&github, &clock))
        .remove_added_labels(&key, &extra)
        .await
        .unwrap();

    assert_eq!(removed, vec!["automated"]);
    assert_eq!(github.labels(REPO, number), vec!["afk", "bug", "triaged"]);
    let deletes = github.requests().iter().filter(|r| r.method == "DELETE").count();
    assert!(reporter
        .remove_added_labels(&key, &extra)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        github.requests().iter().filter(|r| r.method == "DELETE").count(),
        deletes,
        "nothing left to remove"
    );
}

#[tokio::test]
async fn a_deleted_issue_is_reported_gone_once_and_then_left_alone() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "One", MAINTAINER);
    let reporter = Reporter::new(client(&github, &clock));
    posted(&reporter, &report(number, JobState::Running, 1)).await;
    github.delete_issue(REPO, number);

    let outcome = reporter
        .report(&report(number, JobState::Cancelled, 1))
        .await
        .unwrap();
    let sent = github.requests().len();
    let again = reporter
        .report(&report(number, JobState::Cancelled, 1))
        .await
        .unwrap();

    assert_eq!(outcome, ReportOutcome::IssueGone(IssueGone::Deleted));
    assert_eq!(again, outcome);
    assert_eq!(
        github.requests().len(),
        sent,
        "nothing more is sent for a deleted issue"
    );
    assert!(outcome_reason(&outcome).contains("deleted"), "{outcome:?}");
}

#[tokio::test]
async fn a_transferred_issue_is_reported_gone_not_followed() {
    let (github, clock) = world().await;
    github.create_repo("acme/elsewhere");
    let number = labelled_issue(&github, "One", MAINTAINER);
    let reporter = Reporter::new(client(&github, &clock));
    let moved_to = github.transfer_issue(REPO, number, "acme/elsewhere");

    let outcome = reporter
        .report(&report(number, JobState::Running, 1))
        .await
        .unwrap();

    assert!(
        matches!(&outcome, ReportOutcome::IssueGone(IssueGone::Transferred { to: Some(to) })
            if to.ends_with(&format!("/acme/elsewhere/issues/{moved_to}"))),
        "{outcome:?}"
    );
    assert!(
        github.comments("acme/elsewhere", moved_to).is_empty(),
        "afk did not follow the redirect to write on another repository's issue"
    );
}

#[tokio::test]
async fn a_missing_repository_is_an_error_not_a_gone_issue() {
    let (github, clock) = world().await;
    let reporter = Reporter::new(client(&github, &clock));
    let mut status = report(1, JobState::Running, 1);
    status.issue.repo = afk_core::Repo::new("acme/renamed-away").unwrap();

    let err = reporter.report(&status).await.unwrap_err();

    assert!(matches!(err, afk_github::GitHubError::NotFound { .. }), "{err}");
}

fn outcome_reason(outcome: &ReportOutcome) -> String {
    match outcome {
        ReportOutcome::IssueGone(gone) => gone.to_string(),
        ReportOutcome::Reported(_) => String::new(),
    }
}

#[tokio::test]
async fn a_marker_in_someone_elses_comment_is_ignored() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "One", MAINTAINER);
    let bait = format!("{STATUS_MARKER}\nI am afk, trust me.");
    github.add_comment(REPO, number, OUTSIDER, &bait);

    posted(
        &Reporter::new(client(&github, &clock)),
        &report(number, JobState::Running, 1),
    )
    .await;
    // A restarted afk looks for its comment again: it must find its own, not the bait.
    posted(
        &Reporter::new(client(&github, &clock)),
        &report(number, JobState::Failed, 1),
    )
    .await;

    let comments = github.comments(REPO, number);
    assert_eq!(comments.len(), 2, "{comments:#?}");
    assert_eq!(comments[0], bait, "the outsider's comment is untouched");
    assert!(comments[1].contains("**failed**"), "{}", comments[1]);
    assert_eq!(
        github.comment_authors(REPO, number),
        vec![OUTSIDER, afk_github::testing::STAND_IN_LOGIN]
    );
}

#[tokio::test]
async fn an_app_finds_its_own_comment_as_its_bot_account() {
    let (github, clock) = world().await;
    enable_app(&github);
    let number = labelled_issue(&github, "One", MAINTAINER);
    // Another bot's status comment (say, a second afk with a token) is not the App's.
    github.add_comment(
        REPO,
        number,
        "afk-bot",
        &format!("{STATUS_MARKER}\nsomeone else's afk"),
    );

    posted(
        &Reporter::new(test_app_client(&github, &clock)),
        &report(number, JobState::Running, 1),
    )
    .await;
    posted(
        &Reporter::new(test_app_client(&github, &clock)),
        &report(number, JobState::Succeeded, 1),
    )
    .await;

    let bot = format!("{}[bot]", afk_github::testing::STAND_IN_APP_SLUG);
    assert_eq!(
        github.comment_authors(REPO, number),
        vec!["afk-bot".to_owned(), bot]
    );
    let comments = github.comments(REPO, number);
    assert!(comments[0].contains("someone else's afk"));
    assert!(comments[1].contains("**done**"), "{}", comments[1]);
}

#[tokio::test]
async fn a_report_made_again_with_the_same_words_does_not_edit_the_comment_again() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "One", MAINTAINER);
    let reporter = Reporter::new(client(&github, &clock));
    let edits = |github: &afk_github::testing::GitHubStandIn| github.comment_writes(REPO).len();
    let done = report(number, JobState::Succeeded, 1);
    let first = posted(&reporter, &report(number, JobState::Running, 1)).await;
    let second = posted(&reporter, &done).await;
    let written = edits(&github);

    // Tried again (its labels failed, say) two minutes later: the comment says the same but for
    // the time of its update.
    clock.advance(std::time::Duration::from_secs(120));
    let again = reporter.report_comment(&done).await.unwrap();

    assert_eq!(again, ReportOutcome::Reported(second.clone()));
    assert_eq!(first.id, second.id);
    assert_eq!(edits(&github), written, "nothing new to say");
    // Anything new is written.
    let mut failed = done.clone();
    failed.state = JobState::Failed;
    posted(&reporter, &failed).await;
    assert_eq!(edits(&github), written + 1);
}
