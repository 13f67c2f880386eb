//! What the HTTP handlers and the WebSocket connections share: the world, the fault plan and the
//! draws from it, the tokens and T3's bearer check, the pauses tests script, T3's error bodies,
//! and the socket counters. [`crate::server`] serves HTTP and owns the [`crate::SimServer`]
//! handle; [`crate::ws`] serves `/ws`; both use this and neither uses the other's handlers.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use t3_client::wire::ErrorBody;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::config::{FaultPlan, TokenGrant};
use crate::rng::SplitMix64;
use crate::world::World;

/// When a [`crate::Pause`] holds a dispatch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausePhase {
    /// After the request was authenticated and decoded, before the command is applied.
    BeforeApply,
    /// After the command was applied (or refused), before the reply is sent.
    AfterApply,
}
/// One [`crate::Pause`]'s state, shared with the requests it holds.
#[derive(Debug)]
pub(crate) struct PauseInner {
    pub(crate) command_type: String,
    pub(crate) phase: PausePhase,
    /// How many requests were held so far.
    pub(crate) held: watch::Sender<u32>,
    pub(crate) released: watch::Sender<bool>,
}
/// A token's scopes and expiry.
pub(crate) struct Grant {
    scopes: Vec<String>,
    expires_at: Option<Instant>,
}

/// The fault plan in force and the generator its rolls come from.
pub(crate) struct FaultState {
    pub(crate) plan: FaultPlan,
    /// When the plan took effect: its outage window counts from here.
    pub(crate) since: Instant,
    pub(crate) rng: SplitMix64,
    /// `subscribeShell` requests answered with silence since the plan took effect (for
    /// [`FaultPlan::silent_subscriptions`]).
    pub(crate) silenced: u64,
}

/// What the handlers share.
pub(crate) struct Shared {
    pub(crate) world: Mutex<World>,
    /// Woken when a dispatch may have set an earlier timer.
    pub(crate) timers_changed: Notify,
    pub(crate) faults: Mutex<FaultState>,
    pub(crate) forced_unavailable: AtomicBool,
    pub(crate) tokens: Mutex<HashMap<String, Grant>>,
    pub(crate) pauses: Mutex<Vec<Arc<PauseInner>>>,
    pub(crate) environment: serde_json::Value,
    /// What `server.getConfig` answers over the RPC.
    pub(crate) server_config: serde_json::Value,
    pub(crate) trace_ids: Mutex<SplitMix64>,
    /// WebSocket connections accepted so far.
    pub(crate) ws_accepted: AtomicU64,
    /// WebSocket connections open now.
    pub(crate) ws_open: AtomicUsize,
    /// While true, open sockets send nothing ([`SimServer::stall_sockets`]).
    pub(crate) ws_stall: watch::Sender<bool>,
    /// Bumped to drop every open socket ([`SimServer::drop_sockets`]).
    pub(crate) ws_drops: watch::Sender<u64>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately shows no token.
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Locks `mutex`, recovering from a panic in another holder: the state stays consistent because
/// every change is a few plain assignments.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
/// `grant` as granted at `now`.
pub(crate) fn grant_at(grant: &TokenGrant, now: Instant) -> Grant {
    Grant {
        scopes: grant.scopes.clone(),
        expires_at: grant.lifetime.map(|lifetime| now + lifetime),
    }
}
/// A note for the request's log line, carried on the response.
#[derive(Clone)]
pub(crate) struct LogNote(pub(crate) String);

/// `response` with a note for its log line.
pub(crate) fn with_note(mut response: Response, note: impl Into<String>) -> Response {
    response.extensions_mut().insert(LogNote(note.into()));
    response
}
/// Which endpoint a request is for; names the 500 reason T3 gives for it.
#[derive(Clone, Copy)]
pub(crate) enum Endpoint {
    Dispatch,
    Snapshot,
    Shell,
    ThreadDetail,
    Environment,
    /// The WebSocket upgrade (`GET /ws`).
    Socket,
}

/// A fault drawn for a call over an open WebSocket.
pub(crate) enum SocketFault {
    /// Drop the connection instead of handling the call (an outage, a dropped connection).
    Drop(String),
    /// Refuse the call with an injected failure, not applied (the fault plan's `error_rate`).
    Error,
}

/// What the fault plan decided for one request.
enum Draw {
    Pass,
    Outage,
    Error,
    Drop,
}

impl Endpoint {
    fn internal_reason(self) -> &'static str {
        match self {
            Endpoint::Dispatch => "orchestration_dispatch_failed",
            Endpoint::Snapshot | Endpoint::Shell => "orchestration_snapshot_failed",
            Endpoint::ThreadDetail => "orchestration_thread_snapshot_failed",
            Endpoint::Environment | Endpoint::Socket => "internal_error",
        }
    }
}

impl Shared {
    pub(crate) fn trace_id(&self) -> String {
        lock(&self.trace_ids).uuid().simple().to_string()
    }

    /// T3's error body with `_tag`, `code` and a fresh `traceId`.
    fn error(&self, tag: &str, code: &str) -> ErrorBody {
        ErrorBody {
            tag: Some(tag.to_owned()),
            code: Some(code.to_owned()),
            reason: None,
            required_scope: None,
            trace_id: Some(self.trace_id()),
        }
    }

    pub(crate) fn internal_error(&self, endpoint: Endpoint) -> Response {
        let mut body = self.error("EnvironmentInternalError", "internal_error");
        body.reason = Some(endpoint.internal_reason().to_owned());
        error_response(StatusCode::INTERNAL_SERVER_ERROR, &body)
    }

    pub(crate) fn invalid_command(&self) -> Response {
        let mut body = self.error("EnvironmentRequestInvalidError", "invalid_request");
        body.reason = Some("invalid_command".to_owned());
        error_response(StatusCode::BAD_REQUEST, &body)
    }

    pub(crate) fn auth_invalid(&self, reason: &str) -> Response {
        let mut body = self.error("EnvironmentAuthInvalidError", "auth_invalid");
        body.reason = Some(reason.to_owned());
        with_note(error_response(StatusCode::UNAUTHORIZED, &body), reason)
    }

    pub(crate) fn scope_required(&self, scope: &str) -> Response {
        let mut body = self.error("EnvironmentScopeRequiredError", "insufficient_scope");
        body.required_scope = Some(scope.to_owned());
        with_note(
            error_response(StatusCode::FORBIDDEN, &body),
            format!("missing scope {scope}"),
        )
    }

    pub(crate) fn thread_not_found(&self) -> Response {
        let mut body = self.error("EnvironmentResourceNotFoundError", "not_found");
        body.reason = Some("thread_not_found".to_owned());
        error_response(StatusCode::NOT_FOUND, &body)
    }

    /// The faults every request meets first: latency, outage, a share of 5xx and dropped
    /// connections. `Err` carries the response to send instead of handling the request (boxed:
    /// a response is large and this is the rare path).
    pub(crate) async fn enter(&self, endpoint: Endpoint) -> Result<(), Box<Response>> {
        match self.draw().await {
            Draw::Pass => Ok(()),
            Draw::Outage => Err(Box::new(unavailable())),
            Draw::Error => Err(Box::new(with_note(self.internal_error(endpoint), "injected 500"))),
            Draw::Drop => Err(Box::new(dropped_connection("injected dropped connection"))),
        }
    }

    /// The same faults for a call on an open WebSocket: an outage or a dropped connection
    /// drops the socket, an injected 500 becomes a refused call.
    pub(crate) async fn socket_fault(&self) -> Option<SocketFault> {
        match self.draw().await {
            Draw::Pass => None,
            Draw::Outage => Some(SocketFault::Drop("simulated outage".into())),
            Draw::Error => Some(SocketFault::Error),
            Draw::Drop => Some(SocketFault::Drop("injected dropped connection".into())),
        }
    }

    /// Waits out the latency, then draws the request's fate from the seeded generator.
    async fn draw(&self) -> Draw {
        let latency = lock(&self.faults).plan.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut faults = lock(&self.faults);
        let now = Instant::now();
        let in_outage = faults.plan.unavailable.is_some_and(|(after, lasting)| {
            let start = faults.since + after;
            now >= start && now < start + lasting
        });
        if in_outage || self.forced_unavailable.load(Ordering::SeqCst) {
            return Draw::Outage;
        }
        let (error_rate, drop_rate) = (faults.plan.error_rate, faults.plan.drop_rate);
        if error_rate <= 0.0 && drop_rate <= 0.0 {
            return Draw::Pass;
        }
        let roll = faults.rng.next_f64();
        if roll < error_rate {
            Draw::Error
        } else if roll < error_rate + drop_rate {
            Draw::Drop
        } else {
            Draw::Pass
        }
    }

    /// A WebSocket connection was accepted; returns its number (from 1).
    pub(crate) fn ws_connected(&self) -> u64 {
        self.ws_open.fetch_add(1, Ordering::SeqCst);
        self.ws_accepted.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A WebSocket connection ended.
    pub(crate) fn ws_disconnected(&self) {
        self.ws_open.fetch_sub(1, Ordering::SeqCst);
    }

    /// T3's bearer check: a known, unexpired token carrying `scope`.
    pub(crate) fn authorize(&self, headers: &HeaderMap, scope: &str) -> Result<(), Box<Response>> {
        let scopes = self.authenticate(headers)?;
        if !scopes.iter().any(|s| s == scope) {
            return Err(Box::new(self.scope_required(scope)));
        }
        Ok(())
    }

    /// T3's bearer check without a scope: a known, unexpired token. Returns its scopes (the
    /// WebSocket checks them per call).
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Vec<String>, Box<Response>> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(Box::new(self.auth_invalid("missing_credential")));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty());
        let Some(token) = token else {
            return Err(Box::new(self.auth_invalid("invalid_credential")));
        };
        let tokens = lock(&self.tokens);
        let Some(grant) = tokens.get(token) else {
            drop(tokens);
            return Err(Box::new(self.auth_invalid("invalid_credential")));
        };
        if grant.expires_at.is_some_and(|at| Instant::now() >= at) {
            drop(tokens);
            return Err(Box::new(with_note(
                self.auth_invalid("invalid_credential"),
                "expired token",
            )));
        }
        Ok(grant.scopes.clone())
    }

    /// Holds the request while an unreleased pause matches it.
    pub(crate) async fn hold(&self, command_type: &str, phase: PausePhase) {
        let pause = lock(&self.pauses)
            .iter()
            .find(|p| p.command_type == command_type && p.phase == phase && !*p.released.borrow())
            .cloned();
        if let Some(pause) = pause {
            let mut released = pause.released.subscribe();
            pause.held.send_modify(|n| *n += 1);
            // The sender lives in `pause`, held here, so this cannot fail.
            let _ = released.wait_for(|r| *r).await;
        }
    }

    pub(crate) fn roll_lost_reply(&self) -> bool {
        let mut faults = lock(&self.faults);
        let rate = faults.plan.lost_reply_rate;
        rate > 0.0 && faults.rng.next_f64() < rate
    }
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn error_response(status: StatusCode, body: &ErrorBody) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => json_response(status, bytes),
        Err(_) => status.into_response(),
    }
}

pub(crate) fn unavailable() -> Response {
    with_note(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "t3-sim: simulated outage (service unavailable)",
        )
            .into_response(),
        "simulated outage",
    )
}

/// A reply whose connection breaks before it completes: the status line may go out, the body
/// never does, and the client sees the connection close.
pub(crate) fn dropped_connection(note: &str) -> Response {
    let body = futures_util::stream::once(async {
        Err::<Bytes, io::Error>(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "t3-sim: dropped connection",
        ))
    });
    with_note(Response::new(Body::from_stream(body)), note.to_owned())
}
