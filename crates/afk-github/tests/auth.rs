//! Authentication: personal tokens, GitHub App installation tokens and their refresh.

mod common;

use std::time::Duration;

use afk_github::GitHubError;
use common::*;

#[tokio::test]
async fn app_token_is_reused_then_refreshed_before_it_expires() {
    let (github, clock) = world().await;
    enable_app(&github);
    labelled_issue(&github, "One", MAINTAINER);
    let intake = intake_over(test_app_client(&github, &clock));

    assert_eq!(intake.scan().await.eligible.len(), 1);
    assert_eq!(github.installation_tokens_issued(), 1);

    // 50 minutes in, the token still has 10 minutes: reused.
    clock.advance(Duration::from_secs(50 * 60));
    assert!(intake.scan().await.complete);
    assert_eq!(github.installation_tokens_issued(), 1);

    // 56 minutes in, it has 4 minutes left, inside the 5-minute margin: replaced before use.
    clock.advance(Duration::from_secs(6 * 60));
    let scan = intake.scan().await;
    assert!(scan.complete, "{:?}", scan.errors);
    assert_eq!(github.installation_tokens_issued(), 2);
    assert!(
        github.requests().iter().all(|r| r.status != 401),
        "no request ever carried an expired token"
    );
}

#[tokio::test]
async fn a_jwt_for_the_wrong_app_is_refused_with_a_clear_error() {
    let (github, clock) = world().await;
    // The stand-in trusts this key for another App, so afk's JWT names the wrong issuer.
    github.enable_app(
        APP_ID + 1,
        INSTALLATION,
        &fixture("test-only-app-key.pub.pem"),
        Duration::from_secs(3600),
    );
    let intake = intake_over(test_app_client(&github, &clock));

    let err = intake.check(&repo(), 1).await.unwrap_err();

    assert!(matches!(err, GitHubError::AppToken { status: 401, .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("App 4242") && text.contains("installation 77"),
        "{text}"
    );
}

#[tokio::test]
async fn a_key_that_is_not_pem_is_reported_without_its_content() {
    let (github, clock) = world().await;
    enable_app(&github);
    let intake = intake_over(app_client(
        &github,
        &clock,
        b"not-a-key-but-a-secret-value".to_vec(),
    ));

    let err = intake.check(&repo(), 1).await.unwrap_err();

    assert!(matches!(err, GitHubError::AppKey { .. }), "{err}");
    assert!(!err.to_string().contains("secret-value"));
    assert!(!format!("{err:?}").contains("secret-value"));
}

#[tokio::test]
async fn a_revoked_token_is_unauthorized_after_one_fresh_try() {
    let (github, clock) = world().await;
    github.revoke_token(afk_github::testing::STAND_IN_TOKEN);
    let intake = intake(&github, &clock);

    let err = intake.check(&repo(), 1).await.unwrap_err();

    assert!(matches!(err, GitHubError::Unauthorized { .. }), "{err}");
    assert_eq!(
        github.requests().len(),
        2,
        "one retry with a refreshed credential, no more"
    );
    assert!(!err.to_string().contains(afk_github::testing::STAND_IN_TOKEN));
}

#[tokio::test]
async fn debug_output_never_shows_credentials() {
    let (github, clock) = world().await;
    let pem = fixture("test-only-app-key.pem");
    let client = app_client(&github, &clock, pem);
    let token_client = common::client(&github, &clock);

    let text = format!("{client:?} {token_client:?}");

    assert!(!text.contains("PRIVATE KEY"), "{text}");
    assert!(!text.contains(afk_github::testing::STAND_IN_TOKEN), "{text}");
}

#[tokio::test]
async fn a_revoked_installation_token_is_replaced_on_the_401() {
    let (github, clock) = world().await;
    enable_app(&github);
    let number = labelled_issue(&github, "One", MAINTAINER);
    let intake = intake_over(test_app_client(&github, &clock));
    assert!(intake.scan().await.complete);

    // GitHub revokes installation tokens when the App's permissions change, long before expires_at.
    github.revoke_token("ghs_standin_1");
    let verdict = intake.check(&repo(), number).await.unwrap();

    assert!(matches!(verdict, afk_github::Verdict::Eligible(_)), "{verdict:?}");
    assert_eq!(github.installation_tokens_issued(), 2);
}
