//! T3's bearer auth: every refusal with T3's status and error body, token lifetimes, grants and
//! revocations while running.

mod common;

use std::time::Duration;

use common::*;
use t3_client::wire::scopes;
use t3_sim::TokenGrant;

#[tokio::test]
async fn a_request_without_a_bearer_gets_401_missing_credential() {
    let server = start(config()).await;
    for path in [
        "/api/orchestration/snapshot",
        "/api/orchestration/shell",
        "/api/orchestration/threads/t",
    ] {
        let (status, body) = get(&server, None, path).await;
        assert_eq!(status, 401, "{path}");
        assert_error_body(&body, "EnvironmentAuthInvalidError", "auth_invalid");
        assert_eq!(body["reason"], "missing_credential");
    }
    let (status, body) = post_dispatch(&server, None, "{}").await;
    assert_eq!(status, 401);
    assert_eq!(body["reason"], "missing_credential");
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_token_gets_401_invalid_credential_through_the_client() {
    let server = start(config()).await;
    let error = client(&server, "not-a-token")
        .snapshot()
        .await
        .expect_err("refused");
    assert_eq!(error.status(), Some(401));
    let body = error.body().expect("T3's error body");
    assert_eq!(body.code.as_deref(), Some("auth_invalid"));
    assert_eq!(body.reason.as_deref(), Some("invalid_credential"));
    assert!(!error.is_transient());

    let (status, body) = raw()
        .get(format!("{}/api/orchestration/snapshot", server.url()))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .expect("an answer");
    assert_eq!(status, 401);
    let body: serde_json::Value = body.json().await.expect("JSON");
    assert_eq!(body["reason"], "invalid_credential");
    server.shutdown().await;
}

#[tokio::test]
async fn a_read_only_token_cannot_dispatch_and_is_told_the_scope() {
    let (server, client) = started(READ_ONLY).await;
    client.snapshot().await.expect("a read-only token reads");
    let error = client.dispatch(REPO, 1, "Fix it").await.expect_err("refused");
    assert_eq!(error.error.status(), Some(403));
    let body = error.error.body().expect("T3's error body");
    assert_eq!(body.tag.as_deref(), Some("EnvironmentScopeRequiredError"));
    assert_eq!(body.code.as_deref(), Some("insufficient_scope"));
    assert_eq!(
        body.required_scope.as_deref(),
        Some(scopes::ORCHESTRATION_OPERATE)
    );
    assert!(server.threads().is_empty(), "nothing was created");
    server.shutdown().await;
}

#[tokio::test]
async fn an_operate_only_token_cannot_read_and_is_told_the_scope() {
    let mut config = config();
    config.tokens.push(TokenGrant {
        token: "operate-only".into(),
        scopes: vec![scopes::ORCHESTRATION_OPERATE.into()],
        lifetime: None,
    });
    let server = start(config).await;
    let (status, body) = get(&server, Some("operate-only"), "/api/orchestration/snapshot").await;
    assert_eq!(status, 403);
    assert_error_body(&body, "EnvironmentScopeRequiredError", "insufficient_scope");
    assert_eq!(body["requiredScope"], scopes::ORCHESTRATION_READ);
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_gets_401_and_a_fresh_grant_works() {
    let mut config = config();
    config.tokens = vec![TokenGrant::operate("short-lived").expiring_after(Duration::from_millis(200))];
    let server = start(config).await;
    let short = client(&server, "short-lived");
    short.snapshot().await.expect("valid while fresh");

    let error = eventually("the token to expire", || async { short.snapshot().await.err() }).await;
    assert_eq!(error.status(), Some(401));
    assert_eq!(
        error.body().and_then(|b| b.reason.clone()).as_deref(),
        Some("invalid_credential")
    );

    // Rotation: the new token is granted, the client's provider hands it out.
    server.grant_token(TokenGrant::operate("rotated"));
    client(&server, "rotated")
        .snapshot()
        .await
        .expect("the rotated token works");
    server.shutdown().await;
}

#[tokio::test]
async fn a_revoked_token_is_refused_from_the_next_request() {
    let (server, client) = started(OPERATE).await;
    client.snapshot().await.expect("valid");
    server.revoke_token(OPERATE);
    let error = client.snapshot().await.expect_err("revoked");
    assert_eq!(error.status(), Some(401));
    server.shutdown().await;
}

#[tokio::test]
async fn the_environment_descriptor_needs_no_token() {
    let server = start(config()).await;
    let (status, _) = get(&server, None, "/.well-known/t3/environment").await;
    assert_eq!(status, 200);
    server.shutdown().await;
}
