//! The pull request named on the issue: only one afk can trust, found by the attempts' branches
//! in the issue's own repository, or one that closes the issue by afk or a writer.

mod common;

use afk_core::{IssueKey, JobState};
use afk_github::testing::{GitHubStandIn, STAND_IN_LOGIN};
use afk_github::{PullRequestMatch, PullRequestSearch, RecentPulls, Reporter, StatusReport};
use common::*;

/// A stand-in with a labelled issue, and a reporter for it.
struct Scene {
    github: GitHubStandIn,
    reporter: Reporter,
    key: IssueKey,
}

async fn scene() -> Scene {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "One", MAINTAINER);
    Scene {
        reporter: Reporter::new(client(&github, &clock)),
        key: key(number),
        github,
    }
}

impl Scene {
    async fn search(&self, branches: &[&str]) -> PullRequestSearch {
        self.reporter
            .find_pull_request(&self.key, branches.iter().copied())
            .await
            .expect("the search runs")
    }

    /// `Fixes #N` for this issue.
    fn fixes(&self) -> String {
        format!("Tidy up.\n\nFixes #{}.", self.key.number)
    }
}

fn found(search: &PullRequestSearch) -> Option<(u64, PullRequestMatch)> {
    match search {
        PullRequestSearch::Found(pr) => Some((pr.number, pr.matched_by)),
        PullRequestSearch::NotFound { .. } => None,
    }
}

#[tokio::test]
async fn found_by_an_attempt_branch_in_the_repository_not_a_forks() {
    let s = scene().await;
    s.github
        .open_pull_request(REPO, STAND_IN_LOGIN, "other-branch", "Unrelated", "");
    let pr = s
        .github
        .open_pull_request(REPO, STAND_IN_LOGIN, "afk/issue-1", "Fix it", "No keyword.");
    // Later pull requests from forks' branches of the same name, one by the organisation itself.
    s.github
        .open_fork_pull_request(REPO, "mallory/widgets", OUTSIDER, "afk/issue-1", "Mine", "");
    s.github
        .open_fork_pull_request(REPO, "acme/widgets-fork", OUTSIDER, "afk/issue-1", "Mine", "");

    assert_eq!(
        found(&s.search(&["afk/issue-1"]).await),
        Some((pr, PullRequestMatch::Branch))
    );
}

#[tokio::test]
async fn any_attempts_branch_counts_and_the_latest_pull_request_wins() {
    let s = scene().await;
    let first = s
        .github
        .open_pull_request(REPO, STAND_IN_LOGIN, "afk/issue-1", "Try 1", "");
    let second = s
        .github
        .open_pull_request(REPO, STAND_IN_LOGIN, "afk/issue-1-2", "Try 2", "");

    assert_eq!(
        found(&s.search(&["afk/issue-1", "afk/issue-1-2"]).await),
        Some((second, PullRequestMatch::Branch))
    );
    assert_eq!(
        found(&s.search(&["afk/issue-1"]).await),
        Some((first, PullRequestMatch::Branch))
    );
}

#[tokio::test]
async fn a_fork_pull_request_by_an_outsider_is_never_named() {
    let s = scene().await;
    s.github
        .open_fork_pull_request(REPO, "mallory/widgets", OUTSIDER, "fix", "Fix", &s.fixes());
    s.github
        .open_fork_pull_request(REPO, "stranger/widgets", "stranger", "fix", "Fix", &s.fixes());

    let search = s.search(&["afk/issue-1"]).await;

    assert_eq!(
        search,
        PullRequestSearch::NotFound {
            branches: vec!["afk/issue-1".into()]
        }
    );
}

#[tokio::test]
async fn a_closing_pull_request_by_a_writer_or_by_afk_is_named() {
    let s = scene().await;
    let by_writer =
        s.github
            .open_fork_pull_request(REPO, "mona/widgets", MAINTAINER, "fix", "Fix", &s.fixes());
    assert_eq!(
        found(&s.search(&["afk/not-pushed"]).await),
        Some((by_writer, PullRequestMatch::ClosingReference))
    );

    // A later one by afk itself, from a branch that is not an attempt's, and a later outsider's.
    let by_afk = s
        .github
        .open_pull_request(REPO, STAND_IN_LOGIN, "elsewhere", "Fix", &s.fixes());
    s.github
        .open_fork_pull_request(REPO, "mallory/widgets", OUTSIDER, "fix", "Fix", &s.fixes());
    s.github.open_pull_request(
        REPO,
        MAINTAINER,
        "mentions",
        "Mentions",
        &format!("Related to #{}", s.key.number),
    );
    assert_eq!(
        found(&s.search(&["afk/not-pushed"]).await),
        Some((by_afk, PullRequestMatch::ClosingReference))
    );
}

#[tokio::test]
async fn the_comment_names_the_pull_request_or_says_plainly_there_is_none() {
    let s = scene().await;
    let report = |search: PullRequestSearch| StatusReport {
        issue: s.key.clone(),
        attempt: 2,
        state: JobState::Succeeded,
        thread: None,
        started_at: None,
        finished_at: None,
        last_error: None,
        pull_request: Some(search),
        question: None,
        follow_ups: None,
    };
    s.github
        .open_pull_request(REPO, MAINTAINER, "x", "Other", "Fixes #999");

    let none = s.search(&["afk/issue-1", "afk/issue-1-2"]).await;
    s.reporter.report(&report(none)).await.unwrap();
    let comment = &s.github.comments(REPO, s.key.number)[0];
    assert!(comment.contains("none found"), "{comment}");
    assert!(comment.contains("`afk/issue-1`, `afk/issue-1-2`"), "{comment}");

    let pr = s
        .github
        .open_pull_request(REPO, STAND_IN_LOGIN, "afk/issue-1-2", "Fix", "");
    let search = s.search(&["afk/issue-1", "afk/issue-1-2"]).await;
    s.reporter.report(&report(search)).await.unwrap();
    let comment = &s.github.comments(REPO, s.key.number)[0];
    assert!(comment.contains(&format!("Pull request: #{pr} ")), "{comment}");
    assert!(comment.contains("opened from the attempt's branch"), "{comment}");
}

/// The `GET .../pulls` requests the stand-in answered.
fn pull_listings(github: &GitHubStandIn) -> usize {
    github
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with(&format!("/repos/{REPO}/pulls")))
        .count()
}

#[tokio::test]
async fn the_searches_of_one_pass_read_the_latest_pull_requests_once() {
    let s = scene().await;
    let other = labelled_issue(&s.github, "Two", MAINTAINER);
    let pr = s
        .github
        .open_pull_request(REPO, STAND_IN_LOGIN, "afk/issue-2", "Fix two", "");
    let before = pull_listings(&s.github);

    let mut recent = RecentPulls::default();
    let first = s
        .reporter
        .find_pull_request_in(&s.key, ["afk/issue-1"], &mut recent)
        .await
        .unwrap();
    let second = s
        .reporter
        .find_pull_request_in(&key(other), ["afk/issue-2"], &mut recent)
        .await
        .unwrap();

    assert_eq!(found(&first), None);
    assert_eq!(found(&second), Some((pr, PullRequestMatch::Branch)));
    assert_eq!(
        pull_listings(&s.github) - before,
        1,
        "one listing answers both: it holds every pull request of the repository"
    );
}

#[tokio::test]
async fn an_older_pull_request_than_the_latest_hundred_is_still_found_by_its_branch() {
    let s = scene().await;
    let old = s
        .github
        .open_pull_request(REPO, STAND_IN_LOGIN, "afk/issue-1", "Fix it", "");
    for i in 0..afk_github::report::RECENT_PULLS {
        s.github
            .open_pull_request(REPO, MAINTAINER, &format!("work-{i}"), "Other work", "");
    }

    assert_eq!(
        found(&s.search(&["afk/issue-1"]).await),
        Some((old, PullRequestMatch::Branch))
    );
}
