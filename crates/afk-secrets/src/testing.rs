//! A stand-in HashiCorp Vault on loopback, for tests of [`crate::VaultProvider`] here and in the
//! crates that configure one. Enabled by the `testing` feature; never part of a release build.
//!
//! It answers the few endpoints afk uses, with Vault's JSON shapes and status codes:
//! - `GET /v1/{mount}/data/{path}` (KV v2 read; the KV mount is `secret`),
//! - `POST /v1/auth/kubernetes/login` (`{role, jwt}`, checked against [`VaultStandIn::add_kubernetes_role`]),
//! - `GET /v1/auth/token/lookup-self` and `POST /v1/auth/token/renew-self`,
//!
//! with token TTLs enforced, an optional namespace ([`VaultStandIn::require_namespace`]), a sealed
//! state (503 `{"errors":["Vault is sealed"]}`), and a down state in which nothing listens on its
//! port. It logs no token or secret value.
//!
//! Its refusals are worded as real Vault words them, because afk tells them apart:
//! - an unknown, revoked or expired token: 403 with the multi-error text
//!   `"2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"`;
//! - a live token whose policy does not allow the read ([`VaultStandIn::deny_reads`]): 403
//!   `"1 error occurred:\n\t* permission denied\n\n"`;
//! - a Kubernetes login with an unknown role: 400 `invalid role name "ROLE"`; with a JWT the role
//!   does not accept: 403 `permission denied`;
//! - a KV path with no secret: 404 `{"errors":[]}`;
//! - any answer at all, for faults: [`VaultStandIn::fail_with`].

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The KV v2 mount the stand-in serves.
pub const KV_MOUNT: &str = "secret";

/// How many requests of each kind the stand-in answered, for tests that assert what afk did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StandInCounts {
    /// KV reads answered with a secret.
    pub reads: u32,
    /// Successful Kubernetes logins.
    pub logins: u32,
    /// Successful `renew-self` calls.
    pub renewals: u32,
    /// `lookup-self` calls answered.
    pub lookups: u32,
    /// Requests refused with 403 (no, unknown, revoked or expired token; wrong JWT).
    pub refused: u32,
    /// Requests answered 503 because the stand-in was sealed.
    pub sealed: u32,
    /// Kubernetes login requests, refused or not.
    pub login_attempts: u32,
    /// Every request received.
    pub requests: u32,
}

/// What real Vault answers (403) to a request with an unknown, revoked or expired token.
pub const INVALID_TOKEN_ERROR: &str = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n";

/// What real Vault answers (403) to a live token whose policy does not allow the request.
pub const PERMISSION_DENIED_ERROR: &str = "1 error occurred:\n\t* permission denied\n\n";

/// A Vault on `127.0.0.1`, on a port chosen by the system. Dropping it stops the server.
pub struct VaultStandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Option<Server>,
}

struct Server {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sealed: bool,
    /// The Vault Enterprise namespace every request must name, if any.
    namespace: Option<String>,
    /// Path inside the KV mount → field → value, and the version of each path.
    secrets: HashMap<String, (BTreeMap<String, String>, u64)>,
    tokens: HashMap<String, TokenInfo>,
    roles: HashMap<String, Role>,
    /// Every token ever issued, revoked or not.
    issued: Vec<String>,
    /// KV paths no token may read.
    denied: Vec<String>,
    /// Every request is answered with this status and `errors` text while set.
    fault: Option<(StatusCode, String)>,
    counts: StandInCounts,
}

struct TokenInfo {
    /// `None`: never expires.
    ttl: Option<Duration>,
    expires_at: Option<Instant>,
    renewable: bool,
}

struct Role {
    jwt: String,
    ttl: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not make every later request panic too.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl VaultStandIn {
    /// Starts the stand-in on `127.0.0.1:0`, unsealed, with no secrets, tokens or roles.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let server = serve(listener, shared.clone());
        Ok(Self {
            addr,
            shared,
            server: Some(server),
        })
    }

    /// The base URL to configure as Vault's `addr`, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes `value` into `field` of the secret at `path` (inside [`KV_MOUNT`]), creating the
    /// secret if needed and bumping its version.
    pub fn set_secret(&self, path: &str, field: &str, value: &str) {
        let mut inner = self.shared.lock();
        let entry = inner
            .secrets
            .entry(path.trim_matches('/').to_owned())
            .or_default();
        entry.0.insert(field.to_owned(), value.to_owned());
        entry.1 += 1;
    }

    /// A new token allowed to read every secret, expiring after `ttl` (`None`: never). Tokens
    /// issued here are not renewable, like a token handed to afk by someone else.
    pub fn issue_token(&self, ttl: Option<Duration>) -> String {
        let token = new_token();
        let mut inner = self.shared.lock();
        inner.issued.push(token.clone());
        inner.tokens.insert(
            token.clone(),
            TokenInfo {
                ttl,
                expires_at: ttl.map(|ttl| Instant::now() + ttl),
                renewable: false,
            },
        );
        token
    }

    /// Revokes `token`: later requests with it are refused with 403.
    pub fn revoke_token(&self, token: &str) {
        self.shared.lock().tokens.remove(token);
    }

    /// Lets a Kubernetes login with `role` and exactly `jwt` succeed, issuing renewable tokens
    /// that expire `ttl` after the login or the last renewal (Vault counts whole seconds).
    pub fn add_kubernetes_role(&self, role: &str, jwt: &str, ttl: Duration) {
        self.shared.lock().roles.insert(
            role.to_owned(),
            Role {
                jwt: jwt.to_owned(),
                ttl,
            },
        );
    }

    /// From now on, requests without `X-Vault-Namespace: {namespace}` are refused with 403, as
    /// Vault Enterprise refuses a token used outside its namespace.
    pub fn require_namespace(&self, namespace: &str) {
        self.shared.lock().namespace = Some(namespace.to_owned());
    }

    /// From now on reading `path` (inside [`KV_MOUNT`]) is refused as a policy refuses it: 403
    /// [`PERMISSION_DENIED_ERROR`], even with a live token.
    pub fn deny_reads(&self, path: &str) {
        self.shared.lock().denied.push(path.trim_matches('/').to_owned());
    }

    /// Lets `path` be read again after [`VaultStandIn::deny_reads`].
    pub fn allow_reads(&self, path: &str) {
        self.shared.lock().denied.retain(|p| p != path.trim_matches('/'));
    }

    /// From now on every request is answered `status` with `{"errors":[message]}` (`message` may
    /// span lines, as Vault's own texts do), until [`VaultStandIn::clear_fault`].
    pub fn fail_with(&self, status: u16, message: &str) {
        let status = StatusCode::from_u16(status).expect("an HTTP status");
        self.shared.lock().fault = Some((status, message.to_owned()));
    }

    /// Answers normally again after [`VaultStandIn::fail_with`].
    pub fn clear_fault(&self) {
        self.shared.lock().fault = None;
    }

    /// From now on every request is answered 503 `{"errors":["Vault is sealed"]}`.
    pub fn seal(&self) {
        self.shared.lock().sealed = true;
    }

    /// Answers normally again.
    pub fn unseal(&self) {
        self.shared.lock().sealed = false;
    }

    /// Every Vault token it has issued, including those handed out by logins, so that hygiene
    /// tests can search logs and errors for them.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().issued.clone()
    }

    /// What the stand-in has answered so far.
    pub fn counts(&self) -> StandInCounts {
        self.shared.lock().counts
    }

    /// Stops listening and closes every connection, keeping secrets and tokens, so that clients
    /// see Vault as down until [`VaultStandIn::come_back`].
    pub async fn go_down(&mut self) {
        if let Some(server) = self.server.take() {
            shut_down(server).await;
        }
    }

    /// Listens again on the same port after [`VaultStandIn::go_down`], with the same state.
    pub async fn come_back(&mut self) -> io::Result<()> {
        if self.server.is_none() {
            let listener = TcpListener::bind(self.addr).await?;
            self.server = Some(serve(listener, self.shared.clone()));
        }
        Ok(())
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        self.go_down().await;
    }
}

impl Drop for VaultStandIn {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.shutdown.send(());
            server.task.abort();
        }
    }
}

fn serve(listener: TcpListener, shared: Arc<Shared>) -> Server {
    let (shutdown, signal) = oneshot::channel::<()>();
    let app = Router::new().fallback(handle).with_state(shared);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = signal.await;
            })
            .await;
    });
    Server { shutdown, task }
}

async fn shut_down(server: Server) {
    let _ = server.shutdown.send(());
    let mut task = server.task;
    // Graceful shutdown closes idle keep-alive connections at once; a stuck one is cut off.
    if tokio::time::timeout(Duration::from_secs(2), &mut task)
        .await
        .is_err()
    {
        task.abort();
    }
}

fn new_token() -> String {
    format!("hvs.{}", uuid::Uuid::new_v4().simple())
}

fn vault_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "errors": [message] }))).into_response()
}

fn auth_reply(token: &str, info: &TokenInfo) -> Response {
    Json(json!({
        "auth": {
            "client_token": token,
            "accessor": "",
            "policies": ["default", "afk"],
            "lease_duration": info.ttl.map(|t| t.as_secs()).unwrap_or(0),
            "renewable": info.renewable,
        }
    }))
    .into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut inner = shared.lock();
    inner.counts.requests += 1;
    if let Some((status, message)) = &inner.fault {
        return vault_error(*status, message);
    }
    if inner.sealed {
        inner.counts.sealed += 1;
        return vault_error(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed");
    }
    let path = uri.path();
    tracing::trace!(%method, path, "stand-in Vault request");
    if let Some(required) = &inner.namespace {
        if headers.get("x-vault-namespace").and_then(|v| v.to_str().ok()) != Some(required.as_str()) {
            inner.counts.refused += 1;
            return vault_error(StatusCode::FORBIDDEN, PERMISSION_DENIED_ERROR);
        }
    }
    if method == Method::POST && path == "/v1/auth/kubernetes/login" {
        return login(&mut inner, &body);
    }
    // Every other endpoint needs a live token.
    let token = headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let live = inner
        .tokens
        .get(&token)
        .is_some_and(|t| t.expires_at.is_none_or(|at| Instant::now() < at));
    if !live {
        inner.counts.refused += 1;
        return vault_error(StatusCode::FORBIDDEN, INVALID_TOKEN_ERROR);
    }
    match (method, path) {
        (Method::GET, "/v1/auth/token/lookup-self") => {
            inner.counts.lookups += 1;
            let Some(info) = inner.tokens.get(&token) else {
                return vault_error(StatusCode::FORBIDDEN, INVALID_TOKEN_ERROR);
            };
            let ttl = info
                .expires_at
                .map(|at| at.saturating_duration_since(Instant::now()).as_secs())
                .unwrap_or(0);
            let data = json!({ "ttl": ttl, "renewable": info.renewable, "policies": ["default", "afk"] });
            Json(json!({ "data": data })).into_response()
        }
        (Method::POST, "/v1/auth/token/renew-self") => {
            let Some(info) = inner.tokens.get_mut(&token) else {
                return vault_error(StatusCode::FORBIDDEN, INVALID_TOKEN_ERROR);
            };
            if !info.renewable {
                return vault_error(StatusCode::BAD_REQUEST, "lease is not renewable");
            }
            info.expires_at = info.ttl.map(|ttl| Instant::now() + ttl);
            let reply = auth_reply(&token, info);
            inner.counts.renewals += 1;
            reply
        }
        (Method::GET, path) => {
            let Some(rest) = path.strip_prefix(&format!("/v1/{KV_MOUNT}/data/")) else {
                return vault_error(StatusCode::NOT_FOUND, "no handler for route");
            };
            let rest = rest.trim_matches('/');
            if inner.denied.iter().any(|p| p == rest) {
                inner.counts.refused += 1;
                return vault_error(StatusCode::FORBIDDEN, PERMISSION_DENIED_ERROR);
            }
            let Some((fields, version)) = inner.secrets.get(rest) else {
                return (StatusCode::NOT_FOUND, Json(json!({ "errors": [] }))).into_response();
            };
            let reply = Json(json!({
                "request_id": uuid::Uuid::new_v4().to_string(),
                "lease_id": "",
                "renewable": false,
                "lease_duration": 0,
                "data": {
                    "data": fields,
                    "metadata": { "version": version, "deletion_time": "", "destroyed": false },
                },
            }))
            .into_response();
            inner.counts.reads += 1;
            reply
        }
        _ => vault_error(StatusCode::NOT_FOUND, "no handler for route"),
    }
}

fn login(inner: &mut Inner, body: &[u8]) -> Response {
    inner.counts.login_attempts += 1;
    #[derive(serde::Deserialize)]
    struct LoginRequest {
        role: String,
        jwt: String,
    }
    let Ok(request) = serde_json::from_slice::<LoginRequest>(body) else {
        return vault_error(StatusCode::BAD_REQUEST, "missing role or jwt");
    };
    let Some(role) = inner.roles.get(&request.role) else {
        return vault_error(
            StatusCode::BAD_REQUEST,
            &format!("invalid role name \"{}\"", request.role),
        );
    };
    if role.jwt != request.jwt {
        inner.counts.refused += 1;
        return vault_error(StatusCode::FORBIDDEN, "permission denied");
    }
    let info = TokenInfo {
        ttl: Some(role.ttl),
        expires_at: Some(Instant::now() + role.ttl),
        renewable: true,
    };
    let token = new_token();
    inner.issued.push(token.clone());
    let reply = auth_reply(&token, &info);
    inner.tokens.insert(token, info);
    inner.counts.logins += 1;
    reply
}

/// A clock that moves only when told, for tests of [`crate::BackoffProvider`] without sleeping.
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock standing at the present moment.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }

    /// Moves the clock `by` forward.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl crate::Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A log destination in memory, for tests that search what was logged: a
/// [`tracing_subscriber::fmt::MakeWriter`] whose writers append to one shared buffer.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
