//! The routes of the status surface and their JSON errors: every failure, whatever the route,
//! answers `{"error": {"code": "...", "message": "..."}}` with the status that fits (400, 401, 403,
//! 404, 405, 408, 409, 413, 503), and nothing a client sends can panic a handler.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use afk_core::{IssueKey, JobId, JobState, Repo};
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;

use super::views::{self, JobView};
use super::{auth, dashboard, ActionError, ActionKind, Hub, Leadership, Limits};

/// The largest request body the API reads (its actions take none): larger ones get 413.
pub const MAX_BODY: usize = 64 * 1024;

/// How long an action waits for the control plane to carry it out.
const ACTION_WAIT: Duration = Duration::from_secs(10);

/// A JSON error: `{"error": {"code", "message"}}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn ledger(error: afk_ledger::LedgerError) -> ApiError {
        tracing::warn!("status surface: the ledger failed: {error}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger_unavailable",
            format!("the ledger cannot be read now: {error}"),
        )
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: &self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The API's routes, the dashboard, metrics and health (the caller adds [`with_deadline`]).
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/state", get(state))
        .route("/api/v1/jobs", get(jobs))
        .route("/api/v1/refresh", post(refresh))
        .route("/api/v1/events", get(events))
        .route("/api/v1/{owner}/{name}/{number}", get(issue))
        .route("/api/v1/{owner}/{name}/{number}/{action}", post(act))
        .merge(dashboard::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such path: see docs/api.md for the API's paths",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take that method: see docs/api.md",
            )
        })
        .with_state(hub)
}

/// `router` with every request (its body included) held to `limits.request_timeout`.
pub fn with_deadline(router: Router, limits: &Limits) -> Router {
    let deadline = limits.request_timeout;
    router.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
        within(deadline, request, next)
    }))
}

/// Answers 408 when a request (its body included) takes longer than `deadline`: a slow client
/// cannot hold a connection with a half-sent body. A stream's (SSE) response is returned at once
/// and is not cut.
async fn within(deadline: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request took longer than {}",
                humantime::format_duration(deadline)
            ),
        )
        .into_response(),
    }
}

/// `GET /api/v1/state`: the same data `afk status --json` prints.
async fn state(State(hub): State<Arc<Hub>>) -> Result<Response, ApiError> {
    let view = crate::views::status_with(&hub.ledger, &hub.links, Utc::now())
        .await
        .map_err(ApiError::ledger)?;
    Ok(Json(view).into_response())
}

#[derive(Serialize)]
struct JobPage {
    jobs: Vec<JobView>,
    /// Pass as `after` for the next page; null on the last page.
    next_after: Option<i64>,
}

/// `GET /api/v1/jobs?state=S[,S...]&after=ID&limit=N`: jobs in id order, a page at a time (100
/// by default, at most 1000).
async fn jobs(State(hub): State<Arc<Hub>>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let mut states: Vec<String> = Vec::new();
    let mut after = None;
    let mut limit = 100usize;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let bad = |what: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_query",
                format!("query parameter {key}: {what}"),
            )
        };
        match key.as_ref() {
            "state" => {
                for state in value.split(',').filter(|s| !s.is_empty()) {
                    // A typo must not read as "no such jobs"; and each state is a bound parameter.
                    let state: JobState = state
                        .parse()
                        .map_err(|_| bad("not a job state (docs/api.md lists them)"))?;
                    if !states.iter().any(|s| s == state.as_str()) {
                        states.push(state.as_str().to_owned());
                    }
                }
            }
            "after" => after = Some(JobId(value.parse().map_err(|_| bad("expected a job id"))?)),
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=afk_ledger::MAX_PAGE).contains(n))
                    .ok_or_else(|| bad("expected a number from 1 to 1000"))?
            }
            _ => return Err(bad("unknown (state, after and limit are)")),
        }
    }
    let states: Vec<&str> = states.iter().map(String::as_str).collect();
    let page = hub
        .ledger
        .job_page(&states, after, limit)
        .await
        .map_err(ApiError::ledger)?;
    let next_after = (page.len() == limit)
        .then(|| page.last().map(|j| j.id.0))
        .flatten();
    let mut jobs: Vec<JobView> = page.iter().map(JobView::of).collect();
    JobView::held(&mut jobs, &hub.ledger.waits().await.map_err(ApiError::ledger)?);
    Ok(Json(JobPage { jobs, next_after }).into_response())
}

/// The issue a path names, or a JSON 400 saying what is wrong with it.
fn issue_of(owner: &str, name: &str, number: &str) -> Result<IssueKey, ApiError> {
    let repo = Repo::new(format!("{owner}/{name}")).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_path",
            format!("the repository: {e}"),
        )
    })?;
    let number = number.parse::<u64>().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_path",
            format!("{number:?} is not an issue number"),
        )
    })?;
    Ok(IssueKey { repo, number })
}

fn not_found(issue: &IssueKey) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "issue_not_found",
        format!("the ledger has no job for {issue}"),
    )
}

/// `GET /api/v1/OWNER/NAME/N`: one issue's job, attempts and transitions.
async fn issue(
    State(hub): State<Arc<Hub>>,
    path: Result<Path<(String, String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let Path((owner, name, number)) =
        path.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text()))?;
    let key = issue_of(&owner, &name, &number)?;
    match views::issue(
        &hub.ledger,
        &hub.links,
        &key,
        &|thread| hub.worktree(thread),
        Utc::now(),
    )
    .await
    .map_err(ApiError::ledger)?
    {
        Some(view) => Ok(Json(view).into_response()),
        None => Err(not_found(&key)),
    }
}

#[derive(Serialize)]
struct RefreshAnswer {
    queued: bool,
    coalesced: bool,
    requested_at: String,
    operations: [&'static str; 2],
}

/// `POST /api/v1/refresh`: the loop ticks now (polls the sources and T3); bursts coalesce into one
/// tick. 202.
async fn refresh(State(hub): State<Arc<Hub>>, body: Body) -> Result<Response, ApiError> {
    read_body(body).await?;
    let coalesced = hub.request_refresh();
    let answer = RefreshAnswer {
        queued: true,
        coalesced,
        requested_at: views::instant(Utc::now()),
        operations: ["poll", "reconcile"],
    };
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}

#[derive(Serialize)]
struct ActionAnswer {
    action: &'static str,
    job: JobOutcome,
}

#[derive(Serialize)]
struct JobOutcome {
    id: i64,
    issue: String,
    state: String,
    attempts: u32,
    api_path: String,
}

/// `POST /api/v1/OWNER/NAME/N/requeue|cancel`, with `Authorization: Bearer TOKEN`.
async fn act(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    path: Result<Path<(String, String, String, String)>, axum::extract::rejection::PathRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let Path((owner, name, number, action)) =
        path.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text()))?;
    let kind = match action.as_str() {
        "requeue" => ActionKind::Requeue,
        "cancel" => ActionKind::Cancel,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no action {action:?}: the actions are requeue and cancel"),
            ))
        }
    };
    auth::check(hub.token.as_deref(), &headers).await?;
    read_body(body).await?;
    let key = issue_of(&owner, &name, &number)?;
    if !matches!(
        hub.health().leadership,
        Leadership::Leading | Leadership::NotRunning
    ) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "standing_by",
            "this afk stands by: ask the afk that leads the ledger",
        ));
    }
    match hub.act(key.clone(), kind, ACTION_WAIT).await {
        Some(Ok(job)) => Ok(Json(ActionAnswer {
            action: kind.as_str(),
            job: JobOutcome {
                id: job.id.0,
                issue: job.issue.to_string(),
                state: job.state.to_string(),
                attempts: job.attempts,
                api_path: views::api_path(&job.issue),
            },
        })
        .into_response()),
        Some(Err(ActionError::NotFound)) => Err(not_found(&key)),
        Some(Err(ActionError::NotAllowed(why))) => {
            Err(ApiError::new(StatusCode::CONFLICT, "not_allowed", why))
        }
        Some(Err(ActionError::Ledger(why))) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger_unavailable",
            why,
        )),
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_running",
            "the control plane did not take the action in time: is afk running and leading?",
        )),
    }
}

/// Reads (and drops) a request body, refusing one over [`MAX_BODY`] with 413.
async fn read_body(body: Body) -> Result<(), ApiError> {
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(_) => Ok(()),
        Err(error) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || error.to_string().contains("length limit");
            if too_large {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("the request body is over {MAX_BODY} bytes"),
                ))
            } else {
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    "the request body could not be read",
                ))
            }
        }
    }
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    leader: bool,
    ledger: bool,
    t3_reachable: Option<bool>,
    last_tick_at: Option<String>,
    /// Why not ready; empty when ready.
    why: Vec<String>,
}

/// `GET /readyz`: 200 only when this process leads the ledger, the ledger answers and T3 was
/// reachable at the last tick; else 503 with why.
async fn readyz(State(hub): State<Arc<Hub>>) -> Response {
    let health = hub.health().clone();
    let mut why = Vec::new();
    let leader = health.leadership == Leadership::Leading;
    match &health.leadership {
        Leadership::Leading => {}
        Leadership::StandingBy { why: reason } => why.push(format!("standing by: {reason}")),
        Leadership::NotRunning => why.push("the control loop is not running".to_owned()),
    }
    let ledger = match tokio::time::timeout(Duration::from_secs(2), hub.ledger.counts_by_state()).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => {
            why.push(format!("the ledger does not answer: {error}"));
            false
        }
        Err(_) => {
            why.push("the ledger did not answer within 2s".to_owned());
            false
        }
    };
    if let Some(error) = &health.ledger_error {
        why.push(format!("the last tick failed on the ledger: {error}"));
    }
    let t3_reachable = health.last_tick.map(|(_, reachable)| reachable);
    match t3_reachable {
        Some(true) => {}
        Some(false) => why.push("T3 was not reachable at the last tick".to_owned()),
        None => why.push("no tick yet".to_owned()),
    }
    let body = Readiness {
        ready: why.is_empty(),
        leader,
        ledger,
        t3_reachable,
        last_tick_at: health.last_tick.map(|(at, _)| views::instant(at)),
        why,
    };
    let status = match body.ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus' text format (OpenMetrics).
async fn metrics(State(hub): State<Arc<Hub>>) -> Result<Response, ApiError> {
    let counts = hub.ledger.counts_by_state().await.map_err(ApiError::ledger)?;
    let size = hub.ledger.size().await.map_err(ApiError::ledger)?;
    hub.metrics.observe_ledger(&counts, &size);
    let text = hub
        .metrics
        .encode()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "metrics", e.to_string()))?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(response)
}

/// `GET /api/v1/events`: server-sent events, one `change` each time the ledger changed (a tick
/// recorded something, an action), for the dashboard's live updates.
/// At most [`MAX_EVENT_STREAMS`] at once: each holds one of the listener's connections for as long
/// as its client likes, and no token is needed, so without a cap they could take every connection
/// from `/healthz` and the actions. Past it: 503, and the dashboard polls instead.
async fn events(State(hub): State<Arc<Hub>>) -> Response {
    if hub.changes.receiver_count() >= MAX_EVENT_STREAMS {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("{MAX_EVENT_STREAMS} event streams are open already; poll /api/v1/state instead"),
        )
        .into_response();
    }
    let changes = hub.changes.subscribe();
    let stream = futures_util::stream::unfold(changes, |mut changes| async move {
        changes.changed().await.ok()?;
        let n = *changes.borrow_and_update();
        Some((
            Ok::<_, Infallible>(Event::default().event("change").data(n.to_string())),
            changes,
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// How many `/api/v1/events` streams may be open at once.
const MAX_EVENT_STREAMS: usize = 32;
