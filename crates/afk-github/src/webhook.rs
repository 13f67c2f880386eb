//! Webhooks: `POST /webhooks/github`, verified, deduplicated, turned into [`WebhookEvent`]s.
//!
//! **Invariant:** a request whose `X-Hub-Signature-256` is missing or wrong gets 401 and has no
//! effect at all: nothing is sent on the channel and its delivery id is not remembered (so a forger
//! cannot pre-empt a real delivery by reusing its id).
//!
//! Webhooks only make afk act sooner: polling stays the source of truth for missed deliveries, and
//! a delivery seen twice is answered 200 and dropped. "Seen" is judged by the signed content (a
//! SHA-256 digest of the verified body) as well as by the unsigned `X-GitHub-Delivery` id: a
//! replayed body under a new or missing id is a duplicate too.

use crate::commands::IssueComment;
use crate::lock;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use afk_core::Repo;
use afk_secrets::{Freshness, SecretProvider};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use tokio::sync::mpsc;

/// The path the router serves.
pub const WEBHOOK_PATH: &str = "/webhooks/github";
/// How many delivery ids and body digests are remembered for deduplication (GitHub redelivers within hours, and a
/// duplicate beyond this window is harmless anyway).
pub const DEDUP_CAPACITY: usize = 4096;

/// What happened to an issue, as a webhook reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEventKind {
    /// A label was added.
    Labeled {
        /// Its name.
        label: String,
    },
    /// A label was removed.
    Unlabeled {
        /// Its name.
        label: String,
    },
    /// The issue was closed.
    Closed,
    /// The issue was reopened.
    Reopened,
    /// The issue was deleted.
    Deleted,
    /// The issue was transferred to another repository.
    Transferred,
    /// A pull request changed (`pull_request`: opened, pushed to, closed, merged), was reviewed
    /// (`pull_request_review`) or its checks moved (`check_run`, `check_suite`): the pull
    /// requests afk follows are read at once instead of at the next poll. `number` is the pull
    /// request's (0 when a check names none).
    PullRequestActivity,
    /// A comment was made on the issue or on a pull request (`issue_comment` `created`; an edit
    /// is not delivered: a command is taken once, as first seen).
    Commented {
        /// The comment.
        comment: IssueComment,
        /// True when it is on a pull request.
        on_pull_request: bool,
    },
}

/// One verified `issues` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    /// The repository.
    pub repo: Repo,
    /// The issue number.
    pub number: u64,
    /// What happened.
    pub kind: WebhookEventKind,
    /// GitHub's `X-GitHub-Delivery` id, for logs.
    pub delivery: String,
}

impl WebhookEvent {
    /// True when the event withdraws the issue from afk: it was closed, deleted or transferred,
    /// or lost `trigger_label`. The caller checks the issue as it is now
    /// ([`crate::Intake::check`]) and, unless it is still eligible, interrupts the running thread
    /// and cancels the job.
    pub fn withdraws(&self, trigger_label: &str) -> bool {
        match &self.kind {
            WebhookEventKind::Closed | WebhookEventKind::Deleted | WebhookEventKind::Transferred => true,
            WebhookEventKind::Unlabeled { label } => label == trigger_label,
            WebhookEventKind::Labeled { .. }
            | WebhookEventKind::Reopened
            | WebhookEventKind::PullRequestActivity
            | WebhookEventKind::Commented { .. } => false,
        }
    }

    /// True when the event may make the issue eligible: `trigger_label` was added, or the issue
    /// was reopened. Eligibility still has to be checked ([`crate::Intake::check`]): the webhook
    /// says nothing about whether the labeler is trusted.
    pub fn may_make_eligible(&self, trigger_label: &str) -> bool {
        match &self.kind {
            WebhookEventKind::Labeled { label } => label == trigger_label,
            WebhookEventKind::Reopened => true,
            WebhookEventKind::Closed
            | WebhookEventKind::Deleted
            | WebhookEventKind::Transferred
            | WebhookEventKind::Unlabeled { .. }
            | WebhookEventKind::PullRequestActivity
            | WebhookEventKind::Commented { .. } => false,
        }
    }
}

#[derive(Clone)]
struct WebhookState {
    secret: Arc<dyn SecretProvider>,
    events: mpsc::Sender<WebhookEvent>,
    seen: Arc<Mutex<SeenDeliveries>>,
}

impl fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookState")
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct SeenDeliveries {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl SeenDeliveries {
    /// Remembers `id`; false when it was already known.
    fn insert(&mut self, id: &str) -> bool {
        if !self.ids.insert(id.to_owned()) {
            return false;
        }
        self.order.push_back(id.to_owned());
        while self.order.len() > DEDUP_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }

    /// Remembers every key of one delivery; false (remembering nothing new) when any was known.
    fn insert_all(&mut self, keys: &[String]) -> bool {
        if keys.iter().any(|k| self.ids.contains(k)) {
            return false;
        }
        for key in keys {
            self.insert(key);
        }
        true
    }

    fn forget(&mut self, id: &str) {
        self.ids.remove(id);
        self.order.retain(|o| o != id);
    }
}

/// A router serving `POST /webhooks/github`. `secret` is asked on every delivery (so a rotated
/// secret applies at once); verified `issues` events labeled, unlabeled, closed, reopened,
/// deleted and transferred, and `issue_comment` created, are sent
/// on `events`. Answers: 202 accepted, 200 duplicate, 204 ignored (other events or actions),
/// 400 malformed, 401 bad or missing signature, 503 secret unavailable or receiver gone.
pub fn webhook_router(secret: Arc<dyn SecretProvider>, events: mpsc::Sender<WebhookEvent>) -> Router {
    let state = WebhookState {
        secret,
        events,
        seen: Arc::new(Mutex::new(SeenDeliveries::default())),
    };
    Router::new().route(WEBHOOK_PATH, post(receive)).with_state(state)
}

#[derive(Deserialize)]
struct Payload {
    action: String,
    issue: PayloadIssue,
    repository: PayloadRepository,
    #[serde(default)]
    label: Option<PayloadLabel>,
    /// On `issue_comment` events.
    #[serde(default)]
    comment: Option<crate::model::Comment>,
}

#[derive(Deserialize)]
struct PayloadIssue {
    number: u64,
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct PayloadRepository {
    full_name: String,
}

/// The parts of `pull_request`, `pull_request_review`, `check_run` and `check_suite` payloads
/// afk reads.
#[derive(Deserialize)]
struct PullRequestPayload {
    repository: PayloadRepository,
    #[serde(default)]
    pull_request: Option<PayloadNumber>,
    #[serde(default)]
    check_run: Option<PayloadCheck>,
    #[serde(default)]
    check_suite: Option<PayloadCheck>,
}

#[derive(Deserialize)]
struct PayloadNumber {
    number: u64,
}

#[derive(Deserialize)]
struct PayloadCheck {
    #[serde(default)]
    pull_requests: Vec<PayloadNumber>,
}

#[derive(Deserialize)]
struct PayloadLabel {
    name: String,
}

async fn receive(State(state): State<WebhookState>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let secret = match state.secret.get(Freshness::Cached).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "webhook secret unavailable; refusing deliveries");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "webhook secret unavailable\n".into(),
            );
        }
    };
    let signature = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok());
    if !signature_is_valid(secret.expose().as_bytes(), &body, signature) {
        tracing::warn!(
            signature_present = signature.is_some(),
            "rejected a webhook delivery: the X-Hub-Signature-256 does not match the configured secret"
        );
        return (
            StatusCode::UNAUTHORIZED,
            "bad or missing X-Hub-Signature-256\n".into(),
        );
    }
    let delivery = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // Named in the log by its id, else by its content (an id is not signed and may be missing).
    let digest = body_digest(&body);
    let named = if delivery.is_empty() {
        format!("with body digest {}", &digest[..16])
    } else {
        delivery.clone()
    };
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if event == "ping" {
        return (StatusCode::OK, "pong\n".into());
    }
    let (repo, number, kind) = match read_delivery(event, &body) {
        Ok(Some(read)) => read,
        Ok(None) => return (StatusCode::NO_CONTENT, String::new()),
        Err(why) => {
            tracing::warn!(delivery = %named, "webhook delivery {named} skipped: {why}");
            return (StatusCode::BAD_REQUEST, format!("{why}\n"));
        }
    };
    let mut keys = vec![format!("body:{digest}")];
    if !delivery.is_empty() {
        keys.push(format!("id:{delivery}"));
    }
    if !lock(&state.seen).insert_all(&keys) {
        tracing::debug!(delivery = %named, "duplicate webhook delivery ignored");
        return (StatusCode::OK, "duplicate delivery\n".into());
    }
    let event = WebhookEvent {
        repo,
        number,
        kind,
        delivery: delivery.clone(),
    };
    tracing::debug!(?event, "webhook event accepted");
    if state.events.send(event).await.is_err() {
        // Nobody listens (shutting down): let GitHub redeliver later.
        let mut seen = lock(&state.seen);
        for key in &keys {
            seen.forget(key);
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "not accepting events\n".into());
    }
    (StatusCode::ACCEPTED, "accepted\n".into())
}

/// What a verified delivery of event type `event` (`X-GitHub-Event`) with `body` says: the
/// repository, issue and what happened; `Ok(None)` for events and actions afk ignores (and `issues` events of pull
/// requests; a comment on a pull request is read, as a command may be on it); `Err` with why for
/// an `issues` or `issue_comment` payload afk cannot read. Never panics, whatever the
/// body.
pub fn read_delivery(event: &str, body: &[u8]) -> Result<Option<(Repo, u64, WebhookEventKind)>, String> {
    if matches!(
        event,
        "pull_request" | "pull_request_review" | "check_run" | "check_suite"
    ) {
        let payload: PullRequestPayload =
            serde_json::from_slice(body).map_err(|e| format!("not a {event} event payload: {e}"))?;
        let number = payload
            .pull_request
            .map(|p| p.number)
            .or_else(|| {
                let check = payload.check_run.or(payload.check_suite)?;
                check.pull_requests.first().map(|p| p.number)
            })
            .unwrap_or(0);
        let repo = Repo::new(payload.repository.full_name).map_err(|e| e.to_string())?;
        return Ok(Some((repo, number, WebhookEventKind::PullRequestActivity)));
    }
    if event == "issue_comment" {
        return read_comment_delivery(body);
    }
    if event != "issues" {
        return Ok(None);
    }
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| format!("not an issues event payload: {e}"))?;
    let label = || payload.label.as_ref().map(|l| l.name.clone()).unwrap_or_default();
    let kind = match payload.action.as_str() {
        "labeled" => WebhookEventKind::Labeled { label: label() },
        "unlabeled" => WebhookEventKind::Unlabeled { label: label() },
        "closed" => WebhookEventKind::Closed,
        "reopened" => WebhookEventKind::Reopened,
        "deleted" => WebhookEventKind::Deleted,
        "transferred" => WebhookEventKind::Transferred,
        _ => return Ok(None),
    };
    if payload.issue.pull_request.is_some() {
        return Ok(None);
    }
    let repo = Repo::new(payload.repository.full_name).map_err(|e| e.to_string())?;
    Ok(Some((repo, payload.issue.number, kind)))
}

/// An `issue_comment` delivery: only `created` is read (an edited comment is not taken again, and
/// one first seen edited is found by polling).
fn read_comment_delivery(body: &[u8]) -> Result<Option<(Repo, u64, WebhookEventKind)>, String> {
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| format!("not an issue_comment event payload: {e}"))?;
    if payload.action != "created" {
        return Ok(None);
    }
    let comment = payload
        .comment
        .ok_or_else(|| "an issue_comment event without its comment".to_owned())?;
    let repo = Repo::new(payload.repository.full_name).map_err(|e| e.to_string())?;
    let number = payload.issue.number;
    Ok(Some((
        repo,
        number,
        WebhookEventKind::Commented {
            comment: IssueComment::from_model(number, comment),
            on_pull_request: payload.issue.pull_request.is_some(),
        },
    )))
}

/// The SHA-256 of a delivery's body, in hex: what the signature covers, so what a replay cannot
/// change.
fn body_digest(body: &[u8]) -> String {
    use sha2::Digest;
    Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies `sha256=<hex>` against HMAC-SHA256(secret, body) in constant time.
pub fn signature_is_valid(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The `X-Hub-Signature-256` value GitHub would send for `body` (for tests and the stand-in).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::from("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() & 1 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_and_rejects_tampering() {
        let header = sign(b"s3cret", b"{\"a\":1}");
        assert!(signature_is_valid(b"s3cret", b"{\"a\":1}", Some(&header)));
        assert!(!signature_is_valid(b"s3cret", b"{\"a\":2}", Some(&header)));
        assert!(!signature_is_valid(b"other", b"{\"a\":1}", Some(&header)));
        assert!(!signature_is_valid(b"s3cret", b"{\"a\":1}", None));
        assert!(!signature_is_valid(b"s3cret", b"{\"a\":1}", Some("sha256=zz")));
        assert!(!signature_is_valid(
            b"s3cret",
            b"{\"a\":1}",
            Some(header.trim_start_matches("sha256="))
        ));
    }

    #[test]
    fn withdrawal_and_candidacy_depend_on_the_trigger_label() {
        let event = |kind| WebhookEvent {
            repo: Repo::new("a/b").unwrap(),
            number: 1,
            kind,
            delivery: String::new(),
        };
        let unlabeled = |l: &str| event(WebhookEventKind::Unlabeled { label: l.into() });
        let labeled = |l: &str| event(WebhookEventKind::Labeled { label: l.into() });
        assert!(event(WebhookEventKind::Closed).withdraws("afk"));
        assert!(event(WebhookEventKind::Deleted).withdraws("afk"));
        assert!(event(WebhookEventKind::Transferred).withdraws("afk"));
        assert!(!event(WebhookEventKind::Deleted).may_make_eligible("afk"));
        assert!(unlabeled("afk").withdraws("afk"));
        assert!(!unlabeled("bug").withdraws("afk"));
        assert!(labeled("afk").may_make_eligible("afk"));
        assert!(!labeled("afk:running").may_make_eligible("afk"));
        assert!(event(WebhookEventKind::Reopened).may_make_eligible("afk"));
    }

    #[test]
    fn dedup_forgets_the_oldest_beyond_capacity() {
        let mut seen = SeenDeliveries::default();
        assert!(seen.insert("d-0"));
        assert!(!seen.insert("d-0"));
        for i in 1..=DEDUP_CAPACITY {
            seen.insert(&format!("d-{i}"));
        }
        assert!(seen.insert("d-0"), "the oldest id was evicted");
    }
}
