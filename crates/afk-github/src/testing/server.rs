//! The stand-in's HTTP side: one handler that authenticates, meters and routes every request, so
//! that auth, ETags and rate limits apply uniformly as they do on GitHub.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{lock, CommentData, CommentWrite, IssueData, IssueEventData, RecordedRequest, World};

pub(crate) fn router(world: Arc<Mutex<World>>) -> Router {
    Router::new().fallback(handle).with_state(world)
}

/// A routed answer before metering: status, JSON body, `Link` and `Location` headers.
struct Reply {
    status: StatusCode,
    body: Value,
    link: Option<String>,
    location: Option<String>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self::status(StatusCode::OK, body)
    }
    fn status(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            link: None,
            location: None,
        }
    }
    fn not_found() -> Self {
        Self::status(StatusCode::NOT_FOUND, json!({ "message": "Not Found" }))
    }
}

async fn handle(
    State(world): State<Arc<Mutex<World>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut world = lock(&world);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| uri.path().to_owned());
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("token ")))
        .unwrap_or_default()
        .to_owned();
    let segments: Vec<String> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();

    // App token exchange: authenticated by the JWT, not metered.
    if let ["app", "installations", id, "access_tokens"] = segs.as_slice() {
        let (status, body) = mint_installation_token(&mut world, id, &bearer, &method);
        record(&mut world, &method, &path, status, false);
        return (status, axum::Json(body)).into_response();
    }

    // `GET /app/installations/{id}`: the installation and its permissions, by the App's JWT.
    if let ["app", "installations", id] = segs.as_slice() {
        let (status, body) = match verify_app_jwt(&world, &bearer) {
            Err(message) => (StatusCode::UNAUTHORIZED, json!({ "message": message })),
            Ok(_) => match &world.app {
                Some(app) if *id == app.installation_id.to_string() => (
                    StatusCode::OK,
                    json!({ "id": app.installation_id, "app_id": app.app_id, "permissions": app.permissions }),
                ),
                _ => (StatusCode::NOT_FOUND, json!({ "message": "Not Found" })),
            },
        };
        record(&mut world, &method, &path, status, false);
        return (status, axum::Json(body)).into_response();
    }

    // `GET /app`: the App itself, authenticated by its JWT like the exchange, not metered.
    if let ["app"] = segs.as_slice() {
        let (status, body) = match verify_app_jwt(&world, &bearer) {
            Ok(app) => (StatusCode::OK, app),
            Err(message) => (StatusCode::UNAUTHORIZED, json!({ "message": message })),
        };
        record(&mut world, &method, &path, status, false);
        return (status, axum::Json(body)).into_response();
    }

    let now = world.clock.now();
    // Who is asking: a personal token's owner, or the App's bot account for an installation token.
    let actor = match world.tokens.get(&bearer) {
        Some(login) => Some(Actor::User(login.clone())),
        None => world
            .installation_tokens
            .get(&bearer)
            .filter(|expires| **expires > now)
            .and_then(|_| world.app.as_ref())
            .map(|app| Actor::App(format!("{}[bot]", app.slug))),
    };
    let Some(actor) = actor.filter(|_| !bearer.is_empty()) else {
        record(&mut world, &method, &path, StatusCode::UNAUTHORIZED, false);
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "message": "Bad credentials" })),
        )
            .into_response();
    };

    if now >= world.rate.reset_at {
        world.rate.remaining = world.rate.limit;
        world.rate.reset_at = now + chrono::Duration::hours(1);
    }
    if let Some(secondary) = world.secondary.as_ref().filter(|s| now < s.until) {
        let (status, retry_after) = (secondary.refusal.status(), secondary.retry_after);
        return refuse(
            &mut world,
            &method,
            &path,
            status,
            retry_after,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        );
    }
    if let Some(response) = refuse_planned_edit(&mut world, &method, &segs, &path) {
        return response;
    }
    if let ["repos", owner, name, "issues", number, "labels", ..] = segs.as_slice() {
        let repo = format!("{owner}/{name}");
        if (world.failing_labels.iter()).any(|(r, n)| *r == repo && number.parse() == Ok(*n)) {
            record(&mut world, &method, &path, StatusCode::BAD_GATEWAY, false);
            return (
                StatusCode::BAD_GATEWAY,
                axum::Json(json!({ "message": "Server Error" })),
            )
                .into_response();
        }
    }
    if world.rate.remaining == 0 {
        let (status, retry_after) = (world.rate.refusal.status(), world.rate.retry_after);
        return refuse(
            &mut world,
            &method,
            &path,
            status,
            retry_after,
            "API rate limit exceeded",
        );
    }

    let request: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let query = parse_query(uri.query().unwrap_or_default());
    let reply = match (segs.as_slice(), &actor) {
        (["user"], Actor::User(login)) if method == Method::GET => {
            Reply::ok(json!({ "login": login, "type": "User" }))
        }
        // GitHub: an installation token is not a user.
        (["graphql"], _) if method == Method::POST => graphql(&world, &request),
        (["user"], Actor::App(_)) => Reply::status(
            StatusCode::FORBIDDEN,
            json!({ "message": "Resource not accessible by integration" }),
        ),
        _ => route(
            &mut world,
            &method,
            &segs,
            &query,
            &request,
            uri.path(),
            actor.login(),
        ),
    };

    let body_bytes = serde_json::to_vec(&reply.body).unwrap_or_default();
    let etag = format!("W/\"{}\"", hex(&Sha256::digest(&body_bytes)[..16]));
    let not_modified = method == Method::GET
        && reply.status == StatusCode::OK
        && headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str());
    // GitHub does not charge a conditional request answered 304.
    let charged = !not_modified;
    if charged {
        world.rate.remaining = world.rate.remaining.saturating_sub(1);
    }
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        reply.status
    };
    record(&mut world, &method, &path, status, charged);
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (status, axum::Json(reply.body)).into_response()
    };
    rate_headers(&world, response.headers_mut());
    if method == Method::GET && reply.status == StatusCode::OK {
        if let Ok(v) = HeaderValue::from_str(&etag) {
            response.headers_mut().insert("etag", v);
        }
    }
    // GitHub's ETag covers the page's body only; a 304 carries no `Link`, so a client cannot
    // learn from it whether more pages exist now.
    if let Some(location) = reply.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        response.headers_mut().insert("location", location);
    }
    if let Some(link) = reply.link.filter(|_| !not_modified) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().insert("link", v);
        }
    }
    response
}

/// A rate-limit refusal: not charged, with the rate headers and `Retry-After` when set.
fn refuse(
    world: &mut World,
    method: &Method,
    path: &str,
    status: StatusCode,
    retry_after: Option<u64>,
    message: &str,
) -> Response {
    record(world, method, path, status, false);
    let mut response = (status, axum::Json(json!({ "message": message }))).into_response();
    rate_headers(world, response.headers_mut());
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(secs));
    }
    response
}

/// The refusal [`super::GitHubStandIn::refuse_comment_edit`] planned for this request, if it is
/// the edit of a comment on such an issue.
fn refuse_planned_edit(world: &mut World, method: &Method, segs: &[&str], path: &str) -> Option<Response> {
    let ["repos", owner, name, "issues", "comments", id] = segs else {
        return None;
    };
    if *method != Method::PATCH {
        return None;
    }
    let repo = format!("{owner}/{name}");
    let issue = world
        .repos
        .get(&repo)?
        .comments
        .iter()
        .find(|c| id.parse() == Ok(c.id))?
        .issue;
    let at = world
        .refused_edits
        .iter()
        .position(|(r, n, _)| *r == repo && *n == issue)?;
    let (_, _, how) = world.refused_edits.remove(at);
    Some(match how {
        super::EditRefusal::ServerError => {
            record(world, method, path, StatusCode::BAD_GATEWAY, false);
            (
                StatusCode::BAD_GATEWAY,
                axum::Json(json!({ "message": "Server Error" })),
            )
                .into_response()
        }
        super::EditRefusal::SecondaryLimit { retry_after } => {
            let until = world.clock.now() + chrono::Duration::seconds(retry_after as i64);
            world.secondary = Some(super::SecondaryLimit {
                until,
                refusal: super::RateLimitRefusal::Forbidden,
                retry_after: Some(retry_after),
            });
            refuse(
                world,
                method,
                path,
                StatusCode::FORBIDDEN,
                Some(retry_after),
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            )
        }
    })
}

fn record(world: &mut World, method: &Method, path: &str, status: StatusCode, charged: bool) {
    world.requests.push(RecordedRequest {
        method: method.to_string(),
        path: path.to_owned(),
        status: status.as_u16(),
        charged,
        at: chrono::Utc::now(),
    });
}

fn rate_headers(world: &World, headers: &mut HeaderMap) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(world.rate.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(world.rate.remaining));
    headers.insert(
        "x-ratelimit-used",
        HeaderValue::from(world.rate.limit.saturating_sub(world.rate.remaining)),
    );
    headers.insert(
        "x-ratelimit-reset",
        HeaderValue::from(world.rate.reset_at.timestamp()),
    );
}

/// Who a request comes from.
enum Actor {
    /// A personal token's owner.
    User(String),
    /// The App's bot account (`<slug>[bot]`), through an installation token.
    App(String),
}

impl Actor {
    fn login(&self) -> &str {
        match self {
            Actor::User(login) | Actor::App(login) => login,
        }
    }
}

/// Checks an App JWT as GitHub does (RS256, the App's key, its id as issuer, not expired) and
/// answers what `GET /app` shows.
fn verify_app_jwt(world: &World, jwt: &str) -> Result<Value, &'static str> {
    let Some(app) = &world.app else {
        return Err("this stand-in has no GitHub App enabled");
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[app.app_id.to_string()]);
    if jsonwebtoken::decode::<Value>(jwt, &app.key, &validation).is_err() {
        return Err("A JSON web token could not be decoded");
    }
    Ok(json!({ "id": app.app_id, "slug": app.slug, "name": app.slug }))
}

fn mint_installation_token(world: &mut World, id: &str, jwt: &str, method: &Method) -> (StatusCode, Value) {
    let bad = |message: &str| (StatusCode::UNAUTHORIZED, json!({ "message": message }));
    if method != Method::POST {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({ "message": "Method Not Allowed" }),
        );
    }
    if let Err(message) = verify_app_jwt(world, jwt) {
        return bad(message);
    }
    let Some(app) = &world.app else {
        return bad("this stand-in has no GitHub App enabled");
    };
    if id != app.installation_id.to_string() {
        return (StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
    }
    let expires_at = world.clock.now() + app.token_lifetime;
    world.installation_tokens_issued += 1;
    let token = format!("ghs_standin_{}", world.installation_tokens_issued);
    world.installation_tokens.insert(token.clone(), expires_at);
    (
        StatusCode::CREATED,
        json!({ "token": token, "expires_at": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true) }),
    )
}

fn route(
    world: &mut World,
    method: &Method,
    segs: &[&str],
    query: &HashMap<String, String>,
    request: &Value,
    path: &str,
    actor: &str,
) -> Reply {
    let ["repos", owner, name, rest @ ..] = segs else {
        return Reply::not_found();
    };
    let repo_name = format!("{owner}/{name}");
    let base = world.base.clone();
    let bot = actor.to_owned();
    let new_id = world.next_id();
    let now = world.clock.now();
    if let ["issues", "comments", _, "reactions"] = rest {
        if *method == Method::POST && world.failing_reactions > 0 {
            world.failing_reactions -= 1;
            return Reply::status(StatusCode::BAD_GATEWAY, json!({ "message": "Server Error" }));
        }
    }
    let Some(repo) = world.repos.get_mut(&repo_name) else {
        return Reply::not_found();
    };
    // A deleted issue answers 410 and a transferred one 301 on all of its endpoints, as on GitHub.
    if let ["issues", n, ..] = rest {
        if let Ok(number) = n.parse::<u64>() {
            if repo.deleted.contains(&number) {
                return Reply::status(StatusCode::GONE, json!({ "message": "This issue was deleted" }));
            }
            if let Some((to_repo, to_number)) = repo.transferred.get(&number) {
                let target = format!("{base}/repos/{to_repo}/issues/{to_number}");
                return Reply {
                    location: Some(target.clone()),
                    ..Reply::status(
                        StatusCode::MOVED_PERMANENTLY,
                        json!({ "message": "Moved Permanently", "url": target }),
                    )
                };
            }
        }
    }
    let issue_json = |i: &IssueData| issue_json(&base, &repo_name, i);
    match (method.clone(), rest) {
        (Method::GET, []) => {
            // What the asking account may do here, as GitHub says it.
            let role = repo.permissions.get(actor).map(String::as_str).unwrap_or("read");
            let at_least = |level: usize| {
                ["none", "read", "triage", "write", "maintain", "admin"]
                    .iter()
                    .position(|r| *r == role)
                    .unwrap_or(0)
                    >= level
            };
            let mut body = json!({
                "full_name": repo_name,
                "name": name,
                "owner": { "login": owner },
            });
            // An App's installation token has no role: its permissions are the installation's.
            if !actor.ends_with("[bot]") {
                body["permissions"] = json!({
                    "pull": at_least(1), "triage": at_least(2), "push": at_least(3),
                    "maintain": at_least(4), "admin": at_least(5),
                });
            }
            Reply::ok(body)
        }
        (Method::GET, ["issues"]) => {
            let state = query.get("state").map(String::as_str).unwrap_or("open");
            let wanted: Vec<&str> = query
                .get("labels")
                .map(|l| l.split(',').collect())
                .unwrap_or_default();
            let items: Vec<Value> = repo
                .issues
                .values()
                .filter(|i| match state {
                    "all" => true,
                    "closed" => !i.open,
                    _ => i.open,
                })
                .filter(|i| wanted.iter().all(|w| i.labels.iter().any(|l| l == w)))
                .map(issue_json)
                .collect();
            paginate(items, query, &base, path)
        }
        (Method::GET, ["issues", n]) => match find_issue(repo, n) {
            Some(issue) => Reply::ok(issue_json(issue)),
            None => Reply::not_found(),
        },
        (Method::GET, ["issues", n, "events"]) => match find_issue(repo, n) {
            Some(issue) => {
                let items = issue.events.iter().map(event_json).collect();
                paginate(items, query, &base, path)
            }
            None => Reply::not_found(),
        },
        (Method::GET, ["issues", n, "labels"]) => match find_issue(repo, n) {
            Some(issue) => paginate(labels_json(&issue.labels), query, &base, path),
            None => Reply::not_found(),
        },
        (Method::POST, ["issues", n, "labels"]) => {
            let Some(issue) = find_issue_mut(repo, n) else {
                return Reply::not_found();
            };
            let names: Vec<String> = request
                .get("labels")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            for name in names {
                if !issue.labels.contains(&name) {
                    issue.labels.push(name.clone());
                    issue.events.push(IssueEventData {
                        id: new_id,
                        event: "labeled",
                        actor: bot.clone(),
                        label: Some(name),
                        rename: None,
                        created_at: now,
                    });
                    issue.updated_at = now;
                }
            }
            Reply::ok(Value::Array(labels_json(&issue.labels)))
        }
        (Method::DELETE, ["issues", n, "labels", label]) => {
            let Some(issue) = find_issue_mut(repo, n) else {
                return Reply::not_found();
            };
            if !issue.labels.iter().any(|l| l == label) {
                return Reply::status(
                    StatusCode::NOT_FOUND,
                    json!({ "message": "Label does not exist" }),
                );
            }
            issue.labels.retain(|l| l != label);
            issue.events.push(IssueEventData {
                id: new_id,
                event: "unlabeled",
                actor: bot,
                label: Some((*label).to_owned()),
                rename: None,
                created_at: now,
            });
            issue.updated_at = now;
            Reply::ok(Value::Array(labels_json(&issue.labels)))
        }
        (Method::GET, ["issues", n, "comments"]) => {
            let Some(number) = find_issue(repo, n).map(|i| i.number) else {
                return Reply::not_found();
            };
            // GitHub: `since` lists the comments updated at or after it.
            let since = match query
                .get("since")
                .map(|s| chrono::DateTime::parse_from_rfc3339(s))
            {
                None => None,
                Some(Ok(at)) => Some(at.with_timezone(&chrono::Utc)),
                Some(Err(_)) => {
                    return Reply::status(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({ "message": "Validation Failed: since is not an ISO 8601 timestamp" }),
                    )
                }
            };
            let items = repo
                .comments
                .iter()
                .filter(|c| c.issue == number)
                .filter(|c| since.is_none_or(|since| c.updated_at >= since))
                .map(|c| comment_json(&base, &repo_name, c))
                .collect();
            paginate(items, query, &base, path)
        }
        (Method::POST, ["issues", n, "comments"]) => {
            let Some(number) = find_issue(repo, n).map(|i| i.number) else {
                return Reply::not_found();
            };
            let Some(body) = request.get("body").and_then(Value::as_str) else {
                return Reply::status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({ "message": "body is required" }),
                );
            };
            let comment = CommentData {
                id: new_id,
                issue: number,
                body: body.to_owned(),
                author: bot,
                created_at: now,
                updated_at: now,
                reactions: Vec::new(),
            };
            let reply = comment_json(&base, &repo_name, &comment);
            repo.comment_writes.push(CommentWrite {
                issue: number,
                comment: comment.id,
                body: comment.body.clone(),
                created: true,
                at: chrono::Utc::now(),
            });
            repo.comments.push(comment);
            if let Some(issue) = repo.issues.get_mut(&number) {
                issue.updated_at = now;
            }
            Reply::status(StatusCode::CREATED, reply)
        }
        (Method::PATCH, ["issues", "comments", id]) => {
            let Some(body) = request.get("body").and_then(Value::as_str) else {
                return Reply::status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({ "message": "body is required" }),
                );
            };
            match repo.comments.iter_mut().find(|c| id.parse() == Ok(c.id)) {
                Some(comment) => {
                    comment.body = body.to_owned();
                    comment.updated_at = now;
                    let reply = comment_json(&base, &repo_name, comment);
                    let write = CommentWrite {
                        issue: comment.issue,
                        comment: comment.id,
                        body: comment.body.clone(),
                        created: false,
                        at: chrono::Utc::now(),
                    };
                    repo.comment_writes.push(write);
                    Reply::ok(reply)
                }
                None => Reply::not_found(),
            }
        }
        // GitHub: 201 with the new reaction, 200 with the existing one when this account left
        // the same reaction already; 422 for an unknown content.
        (Method::POST, ["issues", "comments", id, "reactions"]) => {
            let content = request
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if ![
                "+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes",
            ]
            .contains(&content.as_str())
            {
                return Reply::status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({ "message": "Validation Failed", "errors": [{ "field": "content", "code": "invalid" }] }),
                );
            }
            let Some(comment) = repo.comments.iter_mut().find(|c| id.parse() == Ok(c.id)) else {
                return Reply::not_found();
            };
            let reaction = |id: u64| json!({ "id": id, "user": { "login": bot }, "content": content, "created_at": timestamp(now) });
            if comment
                .reactions
                .iter()
                .any(|(who, what)| *who == bot && *what == content)
            {
                Reply::ok(reaction(new_id))
            } else {
                comment.reactions.push((bot.clone(), content.clone()));
                Reply::status(StatusCode::CREATED, reaction(new_id))
            }
        }
        (Method::DELETE, ["issues", "comments", id]) => {
            let before = repo.comments.len();
            repo.comments.retain(|c| id.parse() != Ok(c.id));
            if repo.comments.len() == before {
                Reply::not_found()
            } else {
                Reply::status(StatusCode::NO_CONTENT, Value::Null)
            }
        }
        (Method::GET, ["collaborators", login, "permission"]) => match repo.permissions.get(*login) {
            Some(permission) => {
                // GitHub's coarse `permission` folds maintain into write and triage into read.
                let coarse = match permission.as_str() {
                    "maintain" => "write",
                    "triage" => "read",
                    other => other,
                };
                Reply::ok(
                    json!({ "permission": coarse, "role_name": permission, "user": { "login": login } }),
                )
            }
            None => Reply::not_found(),
        },
        (Method::GET, ["pulls", n]) => match find_issue(repo, n).filter(|i| i.pull.is_some()) {
            Some(pull) => Reply::ok(pull_json(&base, &repo_name, pull)),
            None => Reply::not_found(),
        },
        (Method::GET, ["pulls"]) => {
            let state = query.get("state").map(String::as_str).unwrap_or("open");
            let head = query.get("head").cloned();
            let mut pulls: Vec<&IssueData> = repo
                .issues
                .values()
                .filter(|i| i.pull.is_some())
                .filter(|i| match state {
                    "all" => true,
                    "closed" => !i.open,
                    _ => i.open,
                })
                .filter(|i| match &head {
                    // GitHub filters on the head's label, `<owner>:<branch>`.
                    Some(h) => i.pull.as_ref().is_some_and(|p| head_label(p) == *h),
                    None => true,
                })
                .collect();
            if query.get("direction").map(String::as_str) == Some("desc") {
                pulls.reverse();
            }
            let items = pulls
                .into_iter()
                .map(|p| pull_json(&base, &repo_name, p))
                .collect();
            paginate(items, query, &base, path)
        }
        (Method::GET, ["pulls", n, "reviews"]) => {
            let Some(number) = find_issue(repo, n).filter(|i| i.pull.is_some()).map(|i| i.number) else {
                return Reply::not_found();
            };
            let items = repo
                .reviews
                .iter()
                .filter(|r| r.pull == number)
                .map(|r| {
                    json!({
                        "id": r.id,
                        "node_id": format!("PRR_{}", r.id),
                        "user": { "login": r.reviewer, "type": "User" },
                        "body": r.body,
                        "state": r.state,
                        "html_url": format!("{base}/{repo_name}/pull/{number}#pullrequestreview-{}", r.id),
                        "pull_request_url": format!("{base}/repos/{repo_name}/pulls/{number}"),
                        "author_association": "CONTRIBUTOR",
                        "submitted_at": timestamp(r.submitted_at),
                        "commit_id": r.commit_id,
                    })
                })
                .collect();
            paginate(items, query, &base, path)
        }
        (Method::GET, ["pulls", n, "reviews", id, "comments"]) => {
            let number = n.parse::<u64>().ok();
            let Some(review) = repo
                .reviews
                .iter()
                .find(|r| Some(r.pull) == number && id.parse() == Ok(r.id))
            else {
                return Reply::not_found();
            };
            let items = review
                .comments
                .iter()
                .map(|(id, file, line, body)| {
                    json!({
                        "id": id,
                        "pull_request_review_id": review.id,
                        "path": file,
                        "line": line,
                        "original_line": line,
                        "side": "RIGHT",
                        "position": 1,
                        "body": body,
                        "user": { "login": review.reviewer },
                        "commit_id": review.commit_id,
                        "html_url": format!("{base}/{repo_name}/pull/{}#discussion_r{id}", review.pull),
                    })
                })
                .collect();
            paginate(items, query, &base, path)
        }
        (Method::GET, ["commits", sha, "check-runs"]) => {
            let runs: Vec<Value> = repo
                .check_runs
                .iter()
                .filter(|c| c.sha == *sha)
                .map(|c| {
                    json!({
                        "id": c.id,
                        "head_sha": c.sha,
                        "name": c.name,
                        "status": if c.conclusion.is_some() { "completed" } else { "in_progress" },
                        "conclusion": c.conclusion,
                        "html_url": format!("{base}/{repo_name}/runs/{}", c.id),
                        "details_url": format!("{base}/{repo_name}/actions/runs/{}", c.id),
                        "output": { "title": c.title, "summary": c.summary, "text": null, "annotations_count": 0 },
                        "app": { "slug": "github-actions" },
                    })
                })
                .collect();
            Reply::ok(json!({ "total_count": runs.len(), "check_runs": runs }))
        }
        (Method::GET, ["commits", sha, "statuses"]) => {
            // Newest first, as GitHub lists them.
            let items = repo
                .statuses
                .iter()
                .rev()
                .filter(|c| c.sha == *sha)
                .map(|c| {
                    json!({
                        "id": c.id,
                        "context": c.context,
                        "state": c.state,
                        "description": c.description,
                        "target_url": format!("{base}/ci/{}", c.id),
                        "created_at": timestamp(c.created_at),
                        "updated_at": timestamp(c.created_at),
                        "creator": { "login": "ci-bot" },
                    })
                })
                .collect();
            paginate(items, query, &base, path)
        }
        (Method::GET, ["contents", file @ ..]) => {
            let file = file.join("/");
            match repo.files.get(&file) {
                Some(content) => {
                    let sha = hex(&Sha256::digest(content.as_bytes())[..20]);
                    // GitHub wraps base64 content at 60 columns with newlines.
                    let encoded = base64::engine::general_purpose::STANDARD.encode(content);
                    let wrapped: Vec<&str> = encoded
                        .as_bytes()
                        .chunks(60)
                        .filter_map(|c| std::str::from_utf8(c).ok())
                        .collect();
                    Reply::ok(json!({
                        "type": "file", "name": file.rsplit('/').next().unwrap_or(&file), "path": file,
                        "sha": sha, "size": content.len(), "encoding": "base64", "content": wrapped.join("\n") + "\n",
                    }))
                }
                None => Reply::not_found(),
            }
        }
        _ => Reply::not_found(),
    }
}

fn find_issue<'a>(repo: &'a super::RepoData, n: &str) -> Option<&'a IssueData> {
    repo.issues.get(&n.parse().ok()?)
}

fn find_issue_mut<'a>(repo: &'a mut super::RepoData, n: &str) -> Option<&'a mut IssueData> {
    repo.issues.get_mut(&n.parse().ok()?)
}

fn issue_json(base: &str, repo: &str, i: &IssueData) -> Value {
    let kind = if i.pull.is_some() { "pull" } else { "issues" };
    let mut v = json!({
        "id": i.number + 500_000,
        "number": i.number,
        "title": i.title,
        "body": if i.body.is_empty() { Value::Null } else { Value::from(i.body.clone()) },
        "state": if i.open { "open" } else { "closed" },
        "labels": labels_json(&i.labels),
        "user": { "login": i.author },
        "html_url": format!("{base}/{repo}/{kind}/{}", i.number),
        "created_at": timestamp(i.created_at),
        "updated_at": timestamp(i.updated_at),
    });
    if i.pull.is_some() {
        v["pull_request"] = json!({ "html_url": format!("{base}/{repo}/pull/{}", i.number) });
    }
    v
}

fn pull_json(base: &str, repo: &str, i: &IssueData) -> Value {
    json!({
        "number": i.number,
        "title": i.title,
        "body": if i.body.is_empty() { Value::Null } else { Value::from(i.body.clone()) },
        "state": if i.open { "open" } else { "closed" },
        "html_url": format!("{base}/{repo}/pull/{}", i.number),
        "head": i.pull.as_ref().map(|p| json!({
            "ref": p.branch,
            "sha": p.sha,
            "label": head_label(p),
            "repo": { "full_name": p.repo },
        })),
        "merged": i.pull.as_ref().is_some_and(|p| p.merged_at.is_some()),
        "merged_at": i.pull.as_ref().and_then(|p| p.merged_at).map(timestamp),
        "user": { "login": i.author },
        "created_at": i.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// GitHub's timestamps: UTC, whole seconds.
fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `POST /graphql`, for the one query afk sends: an issue's last body edit. Real GraphQL is not
/// parsed; the variables name the issue, and GitHub's shapes (including `errors` for what does not
/// resolve) are answered.
fn graphql(world: &World, request: &Value) -> Reply {
    let vars = &request["variables"];
    let (Some(owner), Some(name), Some(number)) = (
        vars["owner"].as_str(),
        vars["name"].as_str(),
        vars["number"].as_u64(),
    ) else {
        return Reply::ok(
            json!({ "errors": [{ "message": "the stand-in answers only afk's issue-edits query (variables owner, name, number)" }] }),
        );
    };
    if !request["query"]
        .as_str()
        .is_some_and(|q| q.contains("lastEditedAt"))
    {
        return Reply::ok(
            json!({ "errors": [{ "message": "the stand-in answers only afk's issue-edits query" }] }),
        );
    }
    let Some(repo) = world.repos.get(&format!("{owner}/{name}")) else {
        return Reply::ok(json!({
            "data": { "repository": null },
            "errors": [{ "type": "NOT_FOUND", "path": ["repository"],
                "message": format!("Could not resolve to a Repository with the name '{owner}/{name}'.") }],
        }));
    };
    let Some(issue) = repo.issues.get(&number).filter(|i| i.pull.is_none()) else {
        return Reply::ok(json!({
            "data": { "repository": { "issue": null } },
            "errors": [{ "type": "NOT_FOUND", "path": ["repository", "issue"],
                "message": format!("Could not resolve to an Issue with the number of {number}.") }],
        }));
    };
    let (editor, at) = match &issue.body_edit {
        Some((editor, at)) => (json!({ "login": editor }), json!(timestamp(*at))),
        None => (Value::Null, Value::Null),
    };
    Reply::ok(json!({
        "data": { "repository": { "issue": {
            "lastEditedAt": at, "editor": editor, "updatedAt": timestamp(issue.updated_at),
        } } }
    }))
}

fn head_label(head: &super::PullHead) -> String {
    let owner = head.repo.split('/').next().unwrap_or(&head.repo);
    format!("{owner}:{}", head.branch)
}

fn event_json(e: &IssueEventData) -> Value {
    let mut v = json!({
        "id": e.id,
        "event": e.event,
        "actor": { "login": e.actor },
        "created_at": e.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if let Some(label) = &e.label {
        v["label"] = json!({ "name": label, "color": "ededed" });
    }
    if let Some((from, to)) = &e.rename {
        v["rename"] = json!({ "from": from, "to": to });
    }
    v
}

pub(crate) fn comment_json(base: &str, repo: &str, c: &CommentData) -> Value {
    json!({
        "id": c.id,
        "body": c.body,
        "user": { "login": c.author },
        "html_url": format!("{base}/{repo}/issues/{}#issuecomment-{}", c.issue, c.id),
        "issue_url": format!("{base}/repos/{repo}/issues/{}", c.issue),
        "created_at": timestamp(c.created_at),
        "updated_at": timestamp(c.updated_at),
    })
}

fn labels_json(labels: &[String]) -> Vec<Value> {
    labels
        .iter()
        .map(|l| json!({ "name": l, "color": "ededed" }))
        .collect()
}

/// GitHub-style pages: `per_page` (default 30) and `page` (from 1), `Link: <...>; rel="next"`.
fn paginate(items: Vec<Value>, query: &HashMap<String, String>, base: &str, path: &str) -> Reply {
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let start = (page - 1) * per_page;
    let page_items: Vec<Value> = items.iter().skip(start).take(per_page).cloned().collect();
    let link = (start + per_page < items.len()).then(|| {
        let mut next: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| k.as_str() != "page")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        next.sort();
        next.push(("page".into(), (page + 1).to_string()));
        let query: Vec<String> = next
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        format!("<{base}{path}?{}>; rel=\"next\"", query.join("&"))
    });
    Reply {
        link,
        ..Reply::ok(Value::Array(page_items))
    }
}

fn parse_query(query: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_owned())
}

fn percent_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
