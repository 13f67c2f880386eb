//! Intake: only issues labelled by a trusted person become work, and an idle poll costs nothing.

mod common;

use afk_core::Priority;
use afk_github::{Intake, IntakeConfig, IssueGone, Permission, SkipReason, Verdict};
use common::*;

#[tokio::test]
async fn issue_labelled_by_a_writer_is_eligible_with_its_details() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "Crash on empty input", MAINTAINER);
    github.add_label(REPO, number, "afk:p1", MAINTAINER);
    let intake = intake(&github, &clock);

    let scan = intake.scan().await;

    assert!(scan.complete, "{:?}", scan.errors);
    assert_eq!(scan.eligible.len(), 1);
    let issue = &scan.eligible[0];
    assert_eq!((issue.repo.as_str(), issue.number), (REPO, number));
    assert_eq!(issue.title, "Crash on empty input");
    assert_eq!(issue.body, "Body of Crash on empty input");
    assert_eq!(issue.author.as_str(), "octocat");
    assert_eq!(issue.labeled_by.as_str(), MAINTAINER);
    assert_eq!(issue.priority, Priority::new(1).unwrap());
    assert_eq!(issue.labels, vec!["afk", "afk:p1"]);
    assert!(issue.url.as_str().ends_with(&format!("/{REPO}/issues/{number}")));
}

#[tokio::test]
async fn issue_labelled_by_an_outsider_is_skipped_and_never_commented() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "Please run rm -rf", OUTSIDER);
    let stranger = labelled_issue(&github, "Not even a collaborator", "stranger");
    let intake = intake(&github, &clock);

    let scan = intake.scan().await;

    assert!(scan.complete);
    assert!(scan.eligible.is_empty(), "{:?}", scan.eligible);
    let reasons: Vec<_> = scan
        .skipped
        .iter()
        .map(|s| (s.number, s.reason.clone()))
        .collect();
    assert!(
        matches!(
            &reasons[..],
            [
                (a, SkipReason::UntrustedLabeler { login: la, permission: Permission::Read }),
                (b, SkipReason::UntrustedLabeler { login: lb, permission: Permission::None }),
            ] if *a == number && *b == stranger && la.as_str() == OUTSIDER && lb.as_str() == "stranger"
        ),
        "{reasons:?}"
    );
    assert!(scan.skipped[0]
        .reason
        .to_string()
        .contains("mallory, whose permission is read"));
    assert!(
        github.requests().iter().all(|r| r.method == "GET"),
        "intake only reads"
    );
    assert!(github.comments(REPO, number).is_empty());
}

#[tokio::test]
async fn the_latest_labeler_decides() {
    let (github, clock) = world().await;
    // A maintainer labelled it long ago; then an outsider removed and re-applied the label.
    let number = labelled_issue(&github, "Relabelled", MAINTAINER);
    github.remove_label(REPO, number, "afk", OUTSIDER);
    github.add_label(REPO, number, "afk", OUTSIDER);
    let intake = intake(&github, &clock);

    let verdict = intake.check(&repo(), number).await.unwrap();

    assert!(
        matches!(verdict, Verdict::Skipped(SkipReason::UntrustedLabeler { .. })),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn maintain_and_admin_are_trusted_triage_is_not() {
    let (github, clock) = world().await;
    github.set_permission(REPO, "maintainer", "maintain");
    github.set_permission(REPO, "owner", "admin");
    github.set_permission(REPO, "triager", "triage");
    let by_maintainer = labelled_issue(&github, "a", "maintainer");
    let by_owner = labelled_issue(&github, "b", "owner");
    let by_triager = labelled_issue(&github, "c", "triager");
    let intake = intake(&github, &clock);

    let scan = intake.scan().await;

    let eligible: Vec<u64> = scan.eligible.iter().map(|i| i.number).collect();
    assert_eq!(eligible, vec![by_maintainer, by_owner]);
    assert_eq!(scan.skipped.len(), 1);
    assert_eq!(scan.skipped[0].number, by_triager);
}

#[tokio::test]
async fn pull_requests_and_unlabelled_issues_are_not_work() {
    let (github, clock) = world().await;
    let pr = github.open_pull_request(REPO, "octocat", "feature", "A PR", "");
    github.add_label(REPO, pr, "afk", MAINTAINER);
    let plain = github.open_issue(REPO, "octocat", "No label", "");
    let intake = intake(&github, &clock);

    let scan = intake.scan().await;

    assert!(scan.complete);
    assert!(scan.eligible.is_empty() && scan.skipped.is_empty(), "{scan:?}");
    assert_eq!(
        intake.check(&repo(), plain).await.unwrap(),
        Verdict::Skipped(SkipReason::NotLabelled)
    );
    assert_eq!(
        intake.check(&repo(), pr).await.unwrap(),
        Verdict::Skipped(SkipReason::PullRequest)
    );
}

#[tokio::test]
async fn an_idle_poll_is_answered_304_and_not_charged() {
    let (github, clock) = world().await;
    labelled_issue(&github, "One", MAINTAINER);
    labelled_issue(&github, "Two", MAINTAINER);
    let intake = intake(&github, &clock);
    let first = intake.scan().await;
    let charged_after_first = github.charged_requests();
    let remaining_after_first = github.rate_limit_remaining();
    let requests_after_first = github.requests().len();

    let second = intake.scan().await;

    assert_eq!(second.eligible, first.eligible);
    assert!(second.complete);
    let repeat = &github.requests()[requests_after_first..];
    assert!(!repeat.is_empty());
    assert!(repeat.iter().all(|r| r.status == 304 && !r.charged), "{repeat:?}");
    assert!(
        repeat.iter().all(|r| !r.path.contains("/permission")),
        "permissions come from the cache"
    );
    assert_eq!(github.charged_requests(), charged_after_first);
    assert_eq!(github.rate_limit_remaining(), remaining_after_first);
}

#[tokio::test]
async fn permissions_are_asked_again_after_their_lifetime() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "One", MAINTAINER);
    let intake = intake(&github, &clock);
    assert_eq!(intake.scan().await.eligible.len(), 1);

    // The maintainer loses write access; after the cache lifetime intake notices.
    github.set_permission(REPO, MAINTAINER, "read");
    clock.advance(intake.config().permission_ttl + std::time::Duration::from_secs(1));
    let scan = intake.scan().await;

    assert!(scan.eligible.is_empty());
    assert_eq!(scan.skipped[0].number, number);
}

#[tokio::test]
async fn many_issues_are_read_across_pages() {
    let (github, clock) = world().await;
    for i in 0..130 {
        labelled_issue(&github, &format!("Issue {i}"), MAINTAINER);
    }
    let intake = intake(&github, &clock);

    let scan = intake.scan().await;

    assert!(scan.complete);
    assert_eq!(scan.eligible.len(), 130);
    let listing_pages = github
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/repos/acme/widgets/issues?"))
        .count();
    assert_eq!(listing_pages, 2);
}

#[tokio::test]
async fn a_missing_repository_makes_the_scan_partial_not_empty() {
    let (github, clock) = world().await;
    labelled_issue(&github, "One", MAINTAINER);
    let config = IntakeConfig::new(vec![repo(), afk_core::Repo::new("acme/gone").unwrap()]);
    let intake = Intake::new(client(&github, &clock), config);

    let scan = intake.scan().await;

    assert!(!scan.complete, "the caller must not cancel jobs on this scan");
    assert_eq!(scan.eligible.len(), 1);
    assert!(scan.errors[0].contains("acme/gone"), "{:?}", scan.errors);
}

#[tokio::test]
async fn a_custom_trigger_label_is_honoured() {
    let (github, clock) = world().await;
    labelled_issue(&github, "Default label", MAINTAINER);
    let number = github.open_issue(REPO, "octocat", "Custom", "");
    github.add_label(REPO, number, "robot", MAINTAINER);
    let mut config = IntakeConfig::new(vec![repo()]);
    config.trigger_label = "robot".into();
    let intake = Intake::new(client(&github, &clock), config);

    let scan = intake.scan().await;

    let eligible: Vec<u64> = scan.eligible.iter().map(|i| i.number).collect();
    assert_eq!(eligible, vec![number]);
}

#[tokio::test]
async fn an_issue_labelled_after_an_exactly_full_last_page_is_seen() {
    let (github, clock) = world().await;
    for i in 0..100 {
        labelled_issue(&github, &format!("Issue {i}"), MAINTAINER);
    }
    let intake = intake(&github, &clock);
    assert_eq!(intake.scan().await.eligible.len(), 100);

    // Page 1 is unchanged (a 304), but the new issue is on a page 2 that did not exist before.
    let late = labelled_issue(&github, "Labelled later", MAINTAINER);
    let scan = intake.scan().await;

    assert!(scan.complete, "{:?}", scan.errors);
    assert_eq!(scan.eligible.len(), 101);
    assert_eq!(scan.eligible.last().map(|i| i.number), Some(late));

    // An idle poll after that still costs nothing: every page answers 304.
    let before = github.charged_requests();
    assert_eq!(intake.scan().await.eligible.len(), 101);
    assert_eq!(github.charged_requests(), before);
}

#[tokio::test]
async fn a_deleted_or_transferred_issue_is_final_and_no_longer_listed() {
    let (github, clock) = world().await;
    github.create_repo("acme/elsewhere");
    let deleted = labelled_issue(&github, "Deleted", MAINTAINER);
    let transferred = labelled_issue(&github, "Transferred", MAINTAINER);
    let kept = labelled_issue(&github, "Kept", MAINTAINER);
    let intake = intake(&github, &clock);
    assert_eq!(intake.scan().await.eligible.len(), 3);

    github.delete_issue(REPO, deleted);
    github.transfer_issue(REPO, transferred, "acme/elsewhere");
    let scan = intake.scan().await;

    assert!(scan.complete, "{:?}", scan.errors);
    let listed: Vec<u64> = scan.eligible.iter().map(|i| i.number).collect();
    assert_eq!(listed, vec![kept]);
    assert_eq!(
        intake.check(&repo(), deleted).await.unwrap(),
        Verdict::Skipped(SkipReason::Gone(IssueGone::Deleted))
    );
    let verdict = intake.check(&repo(), transferred).await.unwrap();
    assert!(
        matches!(
            verdict,
            Verdict::Skipped(SkipReason::Gone(IssueGone::Transferred { .. }))
        ),
        "{verdict:?}"
    );
    assert!(verdict_text(&verdict).contains("transferred"), "{verdict:?}");
}

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Skipped(reason) => reason.to_string(),
        Verdict::Eligible(_) => String::new(),
    }
}
