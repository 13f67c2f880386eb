//! The dashboard at `/`: one page whose assets are compiled into the binary (no build step), that
//! reads `GET /api/v1/state` and re-reads it on each change `GET /api/v1/events` announces (and
//! every few seconds should the stream drop). It shows the state counts, the running attempts and
//! how long they have run, the retry back-offs and when they are due, the latest outcomes and the
//! jobs that need a person, each attempt linked to its thread in T3's web UI and each issue to its
//! page.

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::Hub;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// `/`, `/assets/app.js` and `/assets/style.css`.
pub fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route("/", get(|| async { asset(INDEX, "text/html; charset=utf-8") }))
        .route(
            "/assets/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/style.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; connect-src 'self'; img-src 'self' data:"),
    );
    response
}
