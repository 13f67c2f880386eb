//! Webhooks: signed deliveries become events at once; forged ones change nothing.

use std::sync::Arc;

use afk_github::{sign, webhook_router, WebhookEvent, WebhookEventKind, WEBHOOK_PATH};
use afk_secrets::LiteralProvider;
use tokio::sync::mpsc;

const SECRET: &str = "webhook-secret-for-tests";

struct Listener {
    url: String,
    events: mpsc::Receiver<WebhookEvent>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn listen() -> Listener {
    let (tx, events) = mpsc::channel(16);
    let app = webhook_router(Arc::new(LiteralProvider::new(SECRET)), tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{WEBHOOK_PATH}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        // Stops when the test drops its `Listener` (the sender is dropped, the receiver resolves).
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Listener {
        url,
        events,
        _stop: stop,
    }
}

fn payload(action: &str, number: u64, label: Option<&str>) -> String {
    let mut v = serde_json::json!({
        "action": action,
        "issue": { "number": number, "title": "t", "state": "open" },
        "repository": { "full_name": "acme/widgets" },
        "sender": { "login": "mona" },
    });
    if let Some(label) = label {
        v["label"] = serde_json::json!({ "name": label });
    }
    v.to_string()
}

async fn deliver(url: &str, body: &str, signature: Option<&str>, delivery: &str) -> u16 {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", "issues")
        .header("x-github-delivery", delivery)
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_signed_delivery_becomes_an_event() {
    let mut listener = listen().await;
    let body = payload("labeled", 7, Some("afk"));

    let status = deliver(
        &listener.url,
        &body,
        Some(&sign(SECRET.as_bytes(), body.as_bytes())),
        "d-1",
    )
    .await;

    assert_eq!(status, 202);
    let event = listener
        .events
        .try_recv()
        .expect("an event was sent before the answer");
    assert_eq!(event.repo.as_str(), "acme/widgets");
    assert_eq!(event.number, 7);
    assert_eq!(event.kind, WebhookEventKind::Labeled { label: "afk".into() });
    assert_eq!(event.delivery, "d-1");
}

#[tokio::test]
async fn every_issue_action_afk_cares_about_is_parsed() {
    let mut listener = listen().await;
    let cases = [
        (
            "unlabeled",
            Some("afk"),
            WebhookEventKind::Unlabeled { label: "afk".into() },
        ),
        ("closed", None, WebhookEventKind::Closed),
        ("reopened", None, WebhookEventKind::Reopened),
        ("deleted", None, WebhookEventKind::Deleted),
        ("transferred", None, WebhookEventKind::Transferred),
    ];
    for (i, (action, label, kind)) in cases.into_iter().enumerate() {
        let body = payload(action, 3, label);
        let signature = sign(SECRET.as_bytes(), body.as_bytes());
        assert_eq!(
            deliver(&listener.url, &body, Some(&signature), &format!("d-{i}")).await,
            202
        );
        assert_eq!(listener.events.try_recv().unwrap().kind, kind);
    }
    let body = payload("edited", 3, None);
    let signature = sign(SECRET.as_bytes(), body.as_bytes());
    assert_eq!(
        deliver(&listener.url, &body, Some(&signature), "d-edit").await,
        204
    );
    assert!(listener.events.try_recv().is_err(), "other actions are ignored");
}

#[tokio::test]
async fn forged_or_missing_signatures_get_401_and_change_nothing() {
    let mut listener = listen().await;
    let body = payload("labeled", 7, Some("afk"));
    let forged = sign(b"not-the-secret", body.as_bytes());
    let tampered = sign(SECRET.as_bytes(), payload("labeled", 8, Some("afk")).as_bytes());

    assert_eq!(deliver(&listener.url, &body, Some(&forged), "d-1").await, 401);
    assert_eq!(deliver(&listener.url, &body, Some(&tampered), "d-1").await, 401);
    assert_eq!(deliver(&listener.url, &body, None, "d-1").await, 401);
    assert!(listener.events.try_recv().is_err());

    // The forgeries did not claim the delivery id: the genuine delivery still gets through.
    let genuine = sign(SECRET.as_bytes(), body.as_bytes());
    assert_eq!(deliver(&listener.url, &body, Some(&genuine), "d-1").await, 202);
    assert_eq!(listener.events.try_recv().unwrap().number, 7);
}

#[tokio::test]
async fn a_duplicate_delivery_is_harmless() {
    let mut listener = listen().await;
    let body = payload("closed", 9, None);
    let signature = sign(SECRET.as_bytes(), body.as_bytes());

    assert_eq!(
        deliver(&listener.url, &body, Some(&signature), "same-id").await,
        202
    );
    assert_eq!(
        deliver(&listener.url, &body, Some(&signature), "same-id").await,
        200
    );

    assert_eq!(listener.events.try_recv().unwrap().kind, WebhookEventKind::Closed);
    assert!(listener.events.try_recv().is_err(), "delivered once");
}

#[tokio::test]
async fn a_replayed_body_under_a_new_or_missing_id_is_a_duplicate() {
    let mut listener = listen().await;
    let body = payload("labeled", 11, Some("afk"));
    let signature = sign(SECRET.as_bytes(), body.as_bytes());
    assert_eq!(deliver(&listener.url, &body, Some(&signature), "d-1").await, 202);
    // The id is not signed: a replay may carry any.
    assert_eq!(deliver(&listener.url, &body, Some(&signature), "d-2").await, 200);
    let without_id = reqwest::Client::new()
        .post(&listener.url)
        .header("x-github-event", "issues")
        .header("x-hub-signature-256", &signature)
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(without_id, 200);
    assert_eq!(listener.events.try_recv().unwrap().number, 11);
    assert!(listener.events.try_recv().is_err(), "taken once");
    // Another event (another body) under the replayed id's neighbour still gets through.
    let other = payload("unlabeled", 11, Some("afk"));
    let signed = sign(SECRET.as_bytes(), other.as_bytes());
    assert_eq!(deliver(&listener.url, &other, Some(&signed), "d-3").await, 202);
}

#[tokio::test]
async fn pull_request_reviews_and_checks_wake_the_follow_through() {
    let mut listener = listen().await;
    let repository = r#""repository": {"full_name": "acme/widgets"}"#;
    let cases = [
        (
            "pull_request",
            format!(
                r#"{{"action": "closed", "number": 9, "pull_request": {{"number": 9, "merged": true}}, {repository}}}"#
            ),
            9,
        ),
        (
            "pull_request_review",
            format!(
                r#"{{"action": "submitted", "review": {{"id": 1, "state": "changes_requested"}}, "pull_request": {{"number": 9}}, {repository}}}"#
            ),
            9,
        ),
        (
            "check_run",
            format!(
                r#"{{"action": "completed", "check_run": {{"id": 5, "conclusion": "failure", "pull_requests": [{{"number": 9}}]}}, {repository}}}"#
            ),
            9,
        ),
        (
            "check_suite",
            format!(
                r#"{{"action": "completed", "check_suite": {{"id": 6, "pull_requests": []}}, {repository}}}"#
            ),
            0,
        ),
    ];
    for (i, (event, body, number)) in cases.into_iter().enumerate() {
        let signature = sign(SECRET.as_bytes(), body.as_bytes());
        let status = reqwest::Client::new()
            .post(&listener.url)
            .header("x-github-event", event)
            .header("x-github-delivery", format!("pr-{i}"))
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 202, "{event}");
        let received = listener.events.try_recv().unwrap();
        assert_eq!(
            (received.kind.clone(), received.number),
            (WebhookEventKind::PullRequestActivity, number),
            "{event}"
        );
        assert!(!received.withdraws("afk") && !received.may_make_eligible("afk"));
    }
}
