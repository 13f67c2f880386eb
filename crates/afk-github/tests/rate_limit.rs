//! Rate limits: once GitHub says stop, afk sends nothing (no request of any kind) until the
//! announced time, and its log says which limit and until when.

mod common;

use std::time::Duration;

use afk_core::JobState;
use afk_github::testing::RateLimitRefusal;
use afk_github::{Clock, GitHubError, PolicyStore, RateLimitKind, Reporter, StatusReport};
use common::*;

#[tokio::test]
async fn retry_after_is_honoured_without_hammering() {
    let (github, clock) = world().await;
    labelled_issue(&github, "One", MAINTAINER);
    github.set_rate_limit(5000, 0, Some(120), RateLimitRefusal::TooManyRequests);
    let client = client(&github, &clock);
    let intake = intake_over(client.clone());

    let refused = intake.scan().await;
    let sent_after_refusal = github.requests().len();
    // Polls during the back-off send nothing at all.
    let during = intake.scan().await;
    clock.advance(Duration::from_secs(60));
    let still_during = intake.scan().await;

    assert!(!refused.complete && !during.complete && !still_during.complete);
    assert!(refused.errors[0].contains("rate limit"), "{:?}", refused.errors);
    assert_eq!(
        github.requests().len(),
        sent_after_refusal,
        "no request while backing off"
    );
    assert_eq!(
        sent_after_refusal, 1,
        "the first refusal stops the scan's other requests too"
    );
    let until = client.rate_limited_until().expect("backing off");
    assert_eq!((until - clock.now()).num_seconds(), 60);

    // After Retry-After has passed (and the limit is back), polling resumes.
    github.set_rate_limit(5000, 5000, None, RateLimitRefusal::Forbidden);
    clock.advance(Duration::from_secs(61));
    let resumed = intake.scan().await;
    assert!(resumed.complete, "{:?}", resumed.errors);
    assert_eq!(resumed.eligible.len(), 1);
    assert!(client.rate_limited_until().is_none());
}

#[tokio::test]
async fn an_exhausted_primary_limit_waits_for_its_reset() {
    let (github, clock) = world().await;
    labelled_issue(&github, "One", MAINTAINER);
    // Two requests left: the listing and the events, then the permission lookup is refused.
    github.set_rate_limit(5000, 2, None, RateLimitRefusal::Forbidden);
    let client = client(&github, &clock);
    let intake = intake_over(client.clone());
    let logs = capture_logs();

    let scan = intake.scan().await;

    assert!(!scan.complete);
    assert!(scan.eligible.is_empty());
    // The response that brought `remaining` to 0 already stopped afk: the third request never left.
    assert_eq!(github.requests().len(), 2, "{:?}", github.requests());
    let block = client.rate_limit().expect("backing off until the reset");
    assert_eq!(block.kind, RateLimitKind::Primary);
    assert!(
        block.until > clock.now() + chrono::Duration::minutes(59),
        "{block:?}"
    );
    let err = intake.check(&repo(), 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            GitHubError::RateLimited {
                limit: RateLimitKind::Primary,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient());
    let log = logs.text();
    assert!(
        log.contains("GitHub primary rate limit") && log.contains(&block.until.to_string()),
        "the log says which limit and until when: {log}"
    );

    clock.advance(Duration::from_secs(3601));
    let scan = intake.scan().await;
    assert!(scan.complete, "{:?}", scan.errors);
    assert_eq!(scan.eligible.len(), 1);
}

#[tokio::test]
async fn a_secondary_limit_without_retry_after_waits_a_minute_then_backs_off_exponentially() {
    let (github, clock) = world().await;
    labelled_issue(&github, "One", MAINTAINER);
    let client = client(&github, &clock);
    let intake = intake_over(client.clone());
    // A 403 with budget left and no Retry-After: only its message says it is a rate limit.
    github.impose_secondary_limit(Duration::from_secs(100), RateLimitRefusal::Forbidden, None);
    let logs = capture_logs();
    let sent = || github.requests().len();

    // A 500 ms poll for the first minute: one refused request, then silence.
    let refused = intake.scan().await;
    for _ in 0..119 {
        clock.advance(Duration::from_millis(500));
        intake.scan().await;
    }
    assert_eq!(sent(), 1, "{:?}", github.requests());
    assert!(
        refused.errors[0].contains("secondary rate limit"),
        "{:?}",
        refused.errors
    );
    let log = logs.text();
    assert!(
        log.contains("GitHub secondary rate limit") && log.contains("HTTP 403"),
        "{log}"
    );

    // At one minute afk tries once; GitHub still refuses, so afk now waits two minutes.
    clock.advance(Duration::from_millis(500));
    intake.scan().await;
    assert_eq!(sent(), 2);
    let block = client.rate_limit().expect("backing off again");
    assert_eq!(block.kind, RateLimitKind::Secondary);
    assert_eq!((block.until - clock.now()).num_seconds(), 120);
    clock.advance(Duration::from_secs(119));
    intake.scan().await;
    assert_eq!(sent(), 2, "nothing during the longer wait");

    // The limit lifted meanwhile: the next poll goes through.
    clock.advance(Duration::from_secs(1));
    let resumed = intake.scan().await;
    assert!(resumed.complete, "{:?}", resumed.errors);
    assert_eq!(resumed.eligible.len(), 1);
}

#[tokio::test]
async fn a_secondary_limit_with_retry_after_waits_exactly_that_long() {
    let (github, clock) = world().await;
    labelled_issue(&github, "One", MAINTAINER);
    let client = client(&github, &clock);
    let intake = intake_over(client.clone());
    github.impose_secondary_limit(
        Duration::from_secs(30),
        RateLimitRefusal::TooManyRequests,
        Some(30),
    );

    assert!(!intake.scan().await.complete);
    let block = client.rate_limit().expect("backing off");
    assert_eq!(block.kind, RateLimitKind::Secondary);
    assert_eq!((block.until - clock.now()).num_seconds(), 30);

    clock.advance(Duration::from_secs(30));
    let scan = intake.scan().await;
    assert!(scan.complete, "{:?}", scan.errors);
    assert_eq!(github.requests().iter().filter(|r| r.status == 429).count(), 1);
}

#[tokio::test]
async fn while_a_limit_holds_no_part_of_afk_sends_anything() {
    let (github, clock) = world().await;
    let number = labelled_issue(&github, "One", MAINTAINER);
    let client = client(&github, &clock);
    let intake = intake_over(client.clone());
    let reporter = Reporter::new(client.clone());
    let policies = PolicyStore::new(client.clone());
    github.impose_secondary_limit(Duration::from_secs(60), RateLimitRefusal::Forbidden, None);
    assert!(!intake.scan().await.complete);
    let sent = github.requests().len();

    let key = key(number);
    let report = StatusReport {
        issue: key.clone(),
        attempt: 1,
        state: JobState::Running,
        thread: None,
        started_at: None,
        finished_at: None,
        last_error: None,
        pull_request: None,
        question: None,
        follow_ups: None,
    };
    let reported = reporter.report(&report).await;
    let policy = policies.policy(&repo()).await;
    let labels = reporter.add_labels(&key, &["automated".to_owned()]).await;
    let pulls = reporter.find_pull_request(&key, Some("afk/issue-1")).await;

    assert!(
        matches!(reported, Err(GitHubError::RateLimited { .. })),
        "{reported:?}"
    );
    assert!(policy.is_err() && labels.is_err() && pulls.is_err());
    assert_eq!(github.requests().len(), sent, "{:?}", github.requests());
}
