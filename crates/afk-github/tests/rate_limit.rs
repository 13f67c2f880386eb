//! Rate limits: once GitHub says stop, afk sends nothing until the announced time.

mod common;

use std::time::Duration;

use afk_github::testing::RateLimitRefusal;
use afk_github::{Clock, GitHubError, Intake, IntakeConfig};
use common::*;

#[tokio::test]
async fn retry_after_is_honoured_without_hammering() {
    let (github, clock) = world().await;
    labelled_issue(&github, "One", MAINTAINER);
    github.set_rate_limit(5000, 0, Some(120), RateLimitRefusal::TooManyRequests);
    let client = client(&github, &clock);
    let intake = Intake::new(client.clone(), IntakeConfig::new(vec![repo()]));

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
    let intake = Intake::new(client.clone(), IntakeConfig::new(vec![repo()]));

    let scan = intake.scan().await;

    assert!(!scan.complete);
    assert!(scan.eligible.is_empty());
    // The response that brought `remaining` to 0 already stopped afk: the third request never left.
    assert_eq!(github.requests().len(), 2, "{:?}", github.requests());
    let until = client.rate_limited_until().expect("backing off until the reset");
    assert!(until > clock.now() + chrono::Duration::minutes(59), "{until}");
    let err = intake.check(&repo(), 1).await.unwrap_err();
    assert!(matches!(err, GitHubError::RateLimited { .. }), "{err}");
    assert!(err.is_transient());

    clock.advance(Duration::from_secs(3601));
    let scan = intake.scan().await;
    assert!(scan.complete, "{:?}", scan.errors);
    assert_eq!(scan.eligible.len(), 1);
}
