//! The REST client: authentication, conditional requests, rate limits and pagination, in one place.
//!
//! Why reqwest and not octocrab: afk needs to see and control every request's `ETag` /
//! `If-None-Match` pair (an idle poll must cost no rate limit) and the `x-ratelimit-*` and
//! `Retry-After` headers (back off, never hammer); with reqwest those are a few lines here.
//!
//! Contract of [`GitHubClient`]:
//! - every GET is conditional once a response for that URL carried an `ETag`; a `304` answers
//!   from the cache and costs nothing;
//! - while one of GitHub's rate limits applies (see [`crate::rate_limit`]: primary, or secondary
//!   with or without `Retry-After`), no request of this client or its clones is sent, the App
//!   token exchange included; calls meanwhile fail at once with [`GitHubError::RateLimited`];
//! - a 401 makes the client fetch a fresh credential and retry exactly once.

use crate::lock;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afk_core::Repo;
use afk_secrets::Freshness;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::auth::{Authenticator, Credentials};
use crate::clock::{Clock, SystemClock};
use crate::error::{GitHubError, IssueGone};
use crate::http::{decode, github_message, transport, ACCEPT_GITHUB_JSON, API_VERSION};
use crate::model;
use crate::rate_limit::{RateGate, RateLimitBlock};
use crate::trust::Login;

/// Bound on remembered ETags; past it the cache starts over (a few extra full responses).
const ETAG_CACHE_LIMIT: usize = 20_000;
/// Bound on pages followed for one listing, so a runaway `Link` chain cannot loop forever.
pub(crate) const MAX_PAGES: usize = 50;
/// GitHub's page size when a listing does not ask for one.
const GITHUB_PER_PAGE: usize = 30;

/// The public GitHub API.
pub const GITHUB_API: &str = "https://api.github.com";

/// Settings for [`GitHubClient::new`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The REST API root: `https://api.github.com`, a GitHub Enterprise `https://HOST/api/v3`, or
    /// the stand-in's URL. A trailing slash is fine.
    pub api_base: Url,
    /// How afk authenticates.
    pub credentials: Credentials,
    /// Sent as `User-Agent` (GitHub requires one).
    pub user_agent: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Told of every request's outcome (for afk's metrics), if set.
    pub observer: Option<RequestObserver>,
}

/// Told how each request to GitHub ended: its status, or `None` when no answer came (refused,
/// timed out, cut off). For metrics; it must not block.
#[derive(Clone)]
pub struct RequestObserver(pub Arc<dyn Fn(Option<u16>) + Send + Sync>);

impl fmt::Debug for RequestObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestObserver")
    }
}

impl ClientConfig {
    /// Defaults for everything but the API root and the credentials.
    pub fn new(api_base: Url, credentials: Credentials) -> Self {
        Self {
            api_base,
            credentials,
            user_agent: concat!("afk/", env!("CARGO_PKG_VERSION")).to_owned(),
            timeout: Duration::from_secs(30),
            observer: None,
        }
    }
}

/// A GitHub REST client. Cheap to clone; clones share the ETag cache, the token cache and the
/// rate-limit state, so one afk process never hammers GitHub from two places.
#[derive(Clone)]
pub struct GitHubClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api_base: Url,
    user_agent: String,
    auth: Authenticator,
    clock: Arc<dyn Clock>,
    etags: Mutex<HashMap<String, CachedResponse>>,
    rate_gate: RateGate,
    observer: Option<RequestObserver>,
}

impl fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClient")
            .field("api_base", &self.inner.api_base.as_str())
            .field("auth", &self.inner.auth)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct CachedResponse {
    etag: HeaderValue,
    body: Bytes,
}

/// Which credential a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bearer {
    /// The personal token, or the App's installation token: what every repository request uses.
    Installation,
    /// The App's own JWT (`GET /app`).
    AppJwt,
}

/// One answered request.
pub(crate) struct Answer {
    pub(crate) body: Bytes,
    /// Whether a fresh answer's `Link` header named a `rel="next"` page. Never taken from the
    /// cache: a 304 speaks for its own page's body only.
    pub(crate) more: bool,
}

impl GitHubClient {
    /// A client using the system clock.
    pub fn new(config: ClientConfig) -> Result<Self, GitHubError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A client reading time from `clock` (tests move it forward to expire tokens and back-offs).
    pub fn with_clock(config: ClientConfig, clock: Arc<dyn Clock>) -> Result<Self, GitHubError> {
        if config.api_base.cannot_be_a_base() {
            return Err(GitHubError::Decode {
                url: config.api_base.to_string(),
                reason: "the GitHub API base must be an http(s) URL".into(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            // A 301 is an answer, not a detour: it means a transferred issue or a renamed
            // repository, which afk must notice rather than follow to another issue.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| GitHubError::Transport {
                url: config.api_base.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                api_base: config.api_base,
                user_agent: config.user_agent,
                auth: Authenticator::new(config.credentials),
                clock,
                etags: Mutex::new(HashMap::new()),
                rate_gate: RateGate::default(),
                observer: config.observer,
            }),
        })
    }

    /// The clock this client reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// When requests may resume, if GitHub's rate limit currently holds them back.
    pub fn rate_limited_until(&self) -> Option<DateTime<Utc>> {
        self.rate_limit().map(|b| b.until)
    }

    /// The rate limit holding requests back now (which one, and until when), if any.
    pub fn rate_limit(&self) -> Option<RateLimitBlock> {
        self.inner.rate_gate.blocked(self.inner.clock.now())
    }

    /// `{api_base}/{segments...}?{query}`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        crate::http::join(&self.inner.api_base, segments, query)
    }

    /// afk's own account on GitHub, the author of everything it writes: the token's user
    /// (`GET /user`) or, for an App, its bot account `<slug>[bot]` (`GET /app`, signed with the
    /// App's JWT). Both are conditional requests, so asking again costs no rate limit, and a
    /// token rotated to another account is noticed at once.
    pub async fn identity(&self) -> Result<Login, GitHubError> {
        if self.inner.auth.is_app() {
            let url = self.url(&["app"], &[]);
            let answer = self
                .send_as(Method::GET, url.clone(), None, Bearer::AppJwt)
                .await?;
            let app: model::App = decode(&url, &answer.body)?;
            return Ok(Login::new(format!("{}[bot]", app.slug)));
        }
        let user: model::User = self.get_json(self.url(&["user"], &[])).await?;
        Ok(Login::new(user.login))
    }

    /// What `error`, met on one of `repo`'s issue endpoints, says about the issue: deleted (410),
    /// transferred (301), or missing (404) while the repository itself is readable. `Ok(None)`
    /// for any other error. A 404 is checked against the repository first, so that a token that
    /// lost access to the whole repository is reported as that (`Err`), not as a missing issue.
    pub(crate) async fn issue_gone(
        &self,
        repo: &Repo,
        error: &GitHubError,
    ) -> Result<Option<IssueGone>, GitHubError> {
        Ok(Some(match error {
            GitHubError::Gone { .. } => IssueGone::Deleted,
            GitHubError::Moved { location, .. } => IssueGone::Transferred { to: location.clone() },
            GitHubError::NotFound { .. } => {
                let url = self.url(&["repos", repo.owner(), repo.name()], &[]);
                self.send(Method::GET, url, None).await?;
                IssueGone::NotFound
            }
            _ => return Ok(None),
        }))
    }

    /// A GET decoded as `T`, conditional on the cached ETag.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, url: Url) -> Result<T, GitHubError> {
        let answer = self.send(Method::GET, url.clone(), None).await?;
        decode(&url, &answer.body)
    }

    /// Every page of a page-numbered listing (`page=1, 2, ...`, at most [`MAX_PAGES`]).
    ///
    /// Each page is its own conditional request, and GitHub's `ETag` covers that page's body only:
    /// a 304 for one page says nothing about the pages after it (an issue labelled later lands on
    /// a page that did not exist when the last page was fetched). So a full page is always
    /// followed by a request for the next one, whatever the `Link` header said last time; the
    /// listing ends at the first page with fewer than `per_page` items (GitHub's default 30).
    pub(crate) async fn get_all<T: DeserializeOwned>(&self, url: Url) -> Result<Vec<T>, GitHubError> {
        let per_page = query_number(&url, "per_page").unwrap_or(GITHUB_PER_PAGE).max(1);
        let first = query_number(&url, "page").unwrap_or(1);
        let mut items = Vec::new();
        for page in first..first + MAX_PAGES {
            let page_url = if page == first {
                url.clone()
            } else {
                with_page(&url, page)
            };
            let answer = self.send(Method::GET, page_url.clone(), None).await?;
            let batch: Vec<T> = decode(&page_url, &answer.body)?;
            let full = batch.len() >= per_page;
            items.extend(batch);
            if !full && !answer.more {
                return Ok(items);
            }
        }
        tracing::warn!(%url, "stopped following pages after {MAX_PAGES}");
        Ok(items)
    }

    /// A GraphQL query (`POST {graphql root}` with `query` and `variables`), its `data` decoded as
    /// `T`. GraphQL answers 200 even when a query fails: any `errors` entry makes this an
    /// [`GitHubError::GraphQl`], never a partial answer. The GraphQL root is derived from the REST
    /// root: `https://api.github.com/graphql`, or `https://HOST/api/graphql` for Enterprise.
    pub(crate) async fn graphql<T: DeserializeOwned>(
        &self,
        query: &str,
        variables: serde_json::Value,
    ) -> Result<T, GitHubError> {
        #[derive(serde::Deserialize)]
        struct Reply<T> {
            data: Option<T>,
            #[serde(default)]
            errors: Vec<ReplyError>,
        }
        #[derive(serde::Deserialize)]
        struct ReplyError {
            message: String,
        }
        let url = graphql_url(&self.inner.api_base);
        let body = serde_json::json!({ "query": query, "variables": variables });
        let answer = self.send(Method::POST, url.clone(), Some(&body)).await?;
        let reply: Reply<T> = decode(&url, &answer.body)?;
        if !reply.errors.is_empty() {
            let messages: Vec<String> = reply.errors.into_iter().map(|e| e.message).collect();
            return Err(GitHubError::GraphQl {
                url: url.to_string(),
                message: messages.join("; "),
            });
        }
        reply.data.ok_or_else(|| GitHubError::Decode {
            url: url.to_string(),
            reason: "a GraphQL answer with neither data nor errors".into(),
        })
    }

    /// A request with a JSON body (POST, PATCH, DELETE), decoded as `T`.
    pub(crate) async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: &serde_json::Value,
    ) -> Result<T, GitHubError> {
        let answer = self.send(method, url.clone(), Some(body)).await?;
        decode(&url, &answer.body)
    }

    /// A request whose answer body is not needed.
    pub(crate) async fn send_ignoring_body(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<(), GitHubError> {
        self.send(method, url, body).await.map(|_| ())
    }

    /// Sends one request: rate-limit gate, bearer, conditional GET, one retry after a 401.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, GitHubError> {
        self.send_as(method, url, body, Bearer::Installation).await
    }

    /// The App's installation, when afk authenticates as a GitHub App.
    pub(crate) fn installation_id(&self) -> Option<crate::InstallationId> {
        self.inner.auth.installation_id()
    }

    /// [`Self::send`] with the chosen bearer.
    pub(crate) async fn send_as(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        as_who: Bearer,
    ) -> Result<Answer, GitHubError> {
        let mut freshness = Freshness::Cached;
        loop {
            self.inner.rate_gate.check(self.inner.clock.now())?;
            let bearer = match as_who {
                Bearer::Installation => {
                    self.inner
                        .auth
                        .bearer(
                            freshness,
                            &self.inner.http,
                            &self.inner.api_base,
                            self.inner.clock.as_ref(),
                            &self.inner.rate_gate,
                        )
                        .await?
                }
                Bearer::AppJwt => self
                    .inner
                    .auth
                    .app_jwt(freshness, self.inner.clock.now())
                    .await?
                    .ok_or_else(|| GitHubError::Decode {
                        url: url.to_string(),
                        reason: "only a GitHub App can ask as itself".into(),
                    })?,
            };
            // The exchange above may have met a limit; nothing more goes out then.
            self.inner.rate_gate.check(self.inner.clock.now())?;
            let cached = if method == Method::GET {
                lock(&self.inner.etags).get(url.as_str()).cloned()
            } else {
                None
            };
            let mut request = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(bearer.expose())
                .header(reqwest::header::ACCEPT, ACCEPT_GITHUB_JSON)
                .header("X-GitHub-Api-Version", API_VERSION)
                .header(reqwest::header::USER_AGENT, self.inner.user_agent.as_str());
            if let Some(cached) = &cached {
                request = request.header(reqwest::header::IF_NONE_MATCH, cached.etag.clone());
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let sent = request.send().await;
            if let Some(observer) = &self.inner.observer {
                (observer.0)(sent.as_ref().ok().map(|r| r.status().as_u16()));
            }
            let response = sent.map_err(|e| transport(&url, e))?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.map_err(|e| transport(&url, e))?;
            self.inner.rate_gate.observe(
                &format!("{method} {}", url.path()),
                status,
                &headers,
                &bytes,
                self.inner.clock.now(),
            )?;

            match status {
                StatusCode::NOT_MODIFIED => {
                    if let Some(cached) = cached {
                        return Ok(Answer {
                            body: cached.body,
                            more: false,
                        });
                    }
                    return Err(GitHubError::Http {
                        method: method.to_string(),
                        url: url.to_string(),
                        status: status.as_u16(),
                        message: "304 Not Modified without a cached copy".into(),
                    });
                }
                StatusCode::UNAUTHORIZED if freshness == Freshness::Cached => {
                    // The token may have been rotated or revoked since it was cached: ask anew, once.
                    freshness = Freshness::Refresh;
                    continue;
                }
                StatusCode::UNAUTHORIZED => return Err(GitHubError::Unauthorized { url: url.to_string() }),
                StatusCode::NOT_FOUND => return Err(GitHubError::NotFound { url: url.to_string() }),
                StatusCode::GONE => return Err(GitHubError::Gone { url: url.to_string() }),
                StatusCode::MOVED_PERMANENTLY | StatusCode::PERMANENT_REDIRECT => {
                    return Err(GitHubError::Moved {
                        url: url.to_string(),
                        location: headers
                            .get(reqwest::header::LOCATION)
                            .and_then(|l| l.to_str().ok())
                            .map(str::to_owned),
                    })
                }
                s if s.is_success() => {
                    let more = next_link(&headers).is_some();
                    if method == Method::GET {
                        if let Some(etag) = headers.get(reqwest::header::ETAG) {
                            let mut etags = lock(&self.inner.etags);
                            if etags.len() >= ETAG_CACHE_LIMIT {
                                etags.clear();
                            }
                            etags.insert(
                                url.to_string(),
                                CachedResponse {
                                    etag: etag.clone(),
                                    body: bytes.clone(),
                                },
                            );
                        }
                    }
                    return Ok(Answer { body: bytes, more });
                }
                s => {
                    return Err(GitHubError::Http {
                        method: method.to_string(),
                        url: url.to_string(),
                        status: s.as_u16(),
                        message: github_message(&bytes),
                    })
                }
            }
        }
    }
}

/// GitHub's GraphQL root for a REST root: `…/api/v3` (Enterprise) becomes `…/api/graphql`;
/// anything else (api.github.com, the stand-in) gets `/graphql` appended.
fn graphql_url(api_base: &Url) -> Url {
    let mut url = api_base.clone();
    let path = url.path().trim_end_matches('/').to_owned();
    match path.strip_suffix("/api/v3") {
        Some(root) => url.set_path(&format!("{root}/api/graphql")),
        None => url.set_path(&format!("{path}/graphql")),
    }
    url.set_query(None);
    url
}

/// `url` with its `page` query parameter set to `page` (the other parameters kept in order).
fn with_page(url: &Url, page: usize) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "page")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = url.clone();
    out.query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair("page", &page.to_string());
    out
}

/// A numeric query parameter of `url`.
fn query_number(url: &Url, name: &str) -> Option<usize> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<Url> {
    let link = headers.get(reqwest::header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        if !is_next {
            return None;
        }
        Url::parse(target.trim().strip_prefix('<')?.strip_suffix('>')?).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::LINK,
            HeaderValue::from_static(
                "<https://x/repos/a/b/issues?page=1>; rel=\"prev\", <https://x/repos/a/b/issues?page=3>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&headers).map(|u| u.to_string()).as_deref(),
            Some("https://x/repos/a/b/issues?page=3")
        );
        assert!(next_link(&HeaderMap::new()).is_none());
    }

    #[test]
    fn the_graphql_root_follows_the_rest_root() {
        let cases = [
            ("https://api.github.com", "https://api.github.com/graphql"),
            ("https://api.github.com/", "https://api.github.com/graphql"),
            ("https://ghe.example/api/v3", "https://ghe.example/api/graphql"),
            ("https://ghe.example/api/v3/", "https://ghe.example/api/graphql"),
            ("http://127.0.0.1:4000/", "http://127.0.0.1:4000/graphql"),
        ];
        for (rest, graphql) in cases {
            assert_eq!(
                graphql_url(&Url::parse(rest).unwrap()).as_str(),
                graphql,
                "{rest}"
            );
        }
    }

    #[test]
    fn the_next_page_keeps_every_other_parameter() {
        let url = Url::parse("https://x/repos/a/b/issues?state=open&labels=afk&per_page=100").unwrap();
        assert_eq!(
            with_page(&url, 2).as_str(),
            "https://x/repos/a/b/issues?state=open&labels=afk&per_page=100&page=2"
        );
        assert_eq!(
            with_page(&with_page(&url, 2), 3).as_str(),
            "https://x/repos/a/b/issues?state=open&labels=afk&per_page=100&page=3"
        );
        assert_eq!(query_number(&url, "per_page"), Some(100));
        assert_eq!(query_number(&url, "page"), None);
    }
}
