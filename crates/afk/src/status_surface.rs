//! The status surface: afk's HTTP listener (`[http] listen`). Today it answers `GET /healthz` and,
//! when a webhook secret is configured, takes GitHub's signed deliveries at
//! `POST /webhooks/github` (verified by `afk-github`, handed to intake). PRODUCT.md's JSON API of
//! jobs, attempts and the fleet, its metrics and its dashboard are to come here.

use afk_github::WebhookEvent;
use afk_secrets::SecretProvider;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The listener's routes; `webhook`: the secret deliveries are verified with and where verified
/// ones go.
pub fn router(webhook: Option<(Arc<dyn SecretProvider>, mpsc::Sender<WebhookEvent>)>) -> axum::Router {
    let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
    match webhook {
        Some((secret, events)) => router.merge(afk_github::webhook_router(secret, events)),
        None => router,
    }
}
