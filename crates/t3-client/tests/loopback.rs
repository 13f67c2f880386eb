//! The client with its real transport against a tiny T3-shaped server on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use t3_client::{
    DispatchStage, ProjectId, ReqwestTransport, SecretProvider, T3Client, T3Error, TransportConfig,
    TransportErrorKind,
};

#[derive(Clone, Default)]
struct Seen {
    requests: Arc<Mutex<Vec<(String, String, Value)>>>,
    /// How the next dispatch reply looks: (status, body). Default: 200 with a sequence.
    next: Arc<Mutex<Vec<(u16, String)>>>,
}

async fn dispatch(
    State(seen): State<Seen>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let n = {
        let mut requests = seen.requests.lock().unwrap();
        requests.push(("dispatch".into(), auth, body));
        requests.len()
    };
    let scripted = seen.next.lock().unwrap().pop();
    match scripted {
        Some((status, body)) => (StatusCode::from_u16(status).unwrap(), body).into_response(),
        None => Json(json!({"sequence": n})).into_response(),
    }
}

async fn snapshot(State(seen): State<Seen>, headers: HeaderMap) -> impl IntoResponse {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    seen.requests
        .lock()
        .unwrap()
        .push(("snapshot".into(), auth, Value::Null));
    Json(
        json!({"snapshotSequence": 0, "projects": [], "threads": [], "updatedAt": "2026-11-24T19:14:40.000Z"}),
    )
}

async fn slow() -> impl IntoResponse {
    tokio::time::sleep(Duration::from_secs(5)).await;
    Json(json!({"sequence": 1}))
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn start() -> (Seen, String) {
    let seen = Seen::default();
    let router = Router::new()
        .route("/api/orchestration/dispatch", post(dispatch))
        .route("/api/orchestration/snapshot", get(snapshot))
        .with_state(seen.clone());
    (seen.clone(), serve(router).await)
}

fn client(base: &str, token_file: &std::path::Path) -> T3Client {
    let bearer: Arc<dyn SecretProvider> = Arc::new(afk_secrets::FileProvider::new(token_file));
    T3Client::new(base, Arc::new(ReqwestTransport::default()), bearer)
        .with_project("acme/widgets", ProjectId::new("proj-widgets").unwrap())
}

#[tokio::test]
async fn dispatch_over_http_rereads_the_token_file_on_every_request() {
    let (seen, base) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first\n").unwrap();
    let client = client(&format!("{base}/"), &token);

    let thread = client.dispatch("acme/widgets", 42, "Fix it").await.unwrap();
    std::fs::write(&token, "second").unwrap();
    client.snapshot().await.unwrap();

    let requests = seen.requests.lock().unwrap().clone();
    let auths: Vec<&str> = requests.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(auths, ["Bearer first", "Bearer first", "Bearer second"]);
    assert_eq!(requests[0].2["type"], "thread.create");
    assert_eq!(requests[1].2["type"], "thread.turn.start");
    assert_eq!(requests[1].2["threadId"], thread.as_str());
}

#[tokio::test]
async fn a_rejected_create_over_http_short_circuits_and_carries_t3s_reason() {
    let (seen, base) = start().await;
    seen.next.lock().unwrap().push((
        400,
        json!({"_tag": "EnvironmentRequestInvalidError", "code": "invalid_request",
               "reason": "invalid_command", "traceId": "abc"})
        .to_string(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let err = client(&base, &token)
        .dispatch("acme/widgets", 1, "p")
        .await
        .unwrap_err();
    assert_eq!(err.stage, DispatchStage::Create);
    assert_eq!(seen.requests.lock().unwrap().len(), 1);
    let body = err.error.body().unwrap();
    assert_eq!(body.reason.as_deref(), Some("invalid_command"));
    assert!(!err.error.is_transient());
}

#[tokio::test]
async fn a_missing_token_file_fails_before_any_request_and_names_the_path() {
    let (seen, base) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("absent-token");
    let err = client(&base, &token).snapshot().await.unwrap_err();
    assert!(matches!(err, T3Error::Bearer { .. }));
    assert!(err.to_string().contains("absent-token"), "{err}");
    assert!(seen.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_t3_is_a_transient_connect_error() {
    // Bind then drop a listener so the port is closed.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let err = client(&format!("http://{addr}"), &token)
        .snapshot()
        .await
        .unwrap_err();
    match &err {
        T3Error::Transport { source, .. } => assert_eq!(source.kind, TransportErrorKind::Connect),
        other => panic!("expected a transport error, got {other}"),
    }
    assert!(err.is_transient());
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn a_slow_t3_hits_the_request_timeout() {
    let base = serve(Router::new().route("/api/orchestration/snapshot", get(slow))).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let transport = ReqwestTransport::new(TransportConfig {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_millis(100),
    });
    let bearer: Arc<dyn SecretProvider> = Arc::new(afk_secrets::FileProvider::new(&token));
    let client = T3Client::new(&base, Arc::new(transport), bearer);
    let err = client.snapshot().await.unwrap_err();
    match &err {
        T3Error::Transport { source, .. } => assert_eq!(source.kind, TransportErrorKind::Timeout),
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(err.is_transient());
}
