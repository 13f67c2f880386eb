//! How afk proves itself to GitHub: a personal token, or a GitHub App installation token.
//!
//! Both come from an injected [`SecretProvider`], asked on every request, so a token file that is
//! rotated out of band is picked up without a restart. For an App, afk signs a short RS256 JWT with
//! the App's private key and exchanges it for an installation token, which it caches and replaces
//! [`APP_TOKEN_REFRESH_MARGIN`] before GitHub's `expires_at`, so no request ever carries a token
//! that expires in flight.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use afk_secrets::{Freshness, Secret, SecretProvider};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::error::GitHubError;
use crate::rate_limit::RateGate;

/// How long before an installation token's `expires_at` afk fetches a new one.
pub const APP_TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// A GitHub App's numeric id (the App settings page shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppId(pub u64);

/// The numeric id of one installation of the App on an account or organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstallationId(pub u64);

/// What afk authenticates with.
#[derive(Clone)]
pub enum Credentials {
    /// A personal access token (classic or fine-grained), sent as a bearer token.
    Token(Arc<dyn SecretProvider>),
    /// A GitHub App installation.
    App(AppCredentials),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(p) => f.debug_tuple("Token").field(p).finish(),
            Credentials::App(a) => f.debug_tuple("App").field(a).finish(),
        }
    }
}

/// A GitHub App installation: the App id, the installation id and where the private key is.
#[derive(Clone, Debug)]
pub struct AppCredentials {
    /// The App.
    pub app_id: AppId,
    /// The installation whose repositories afk works on.
    pub installation_id: InstallationId,
    /// Yields the App's private key as PEM (`-----BEGIN RSA PRIVATE KEY-----` or PKCS#8).
    pub private_key: Arc<dyn SecretProvider>,
}

#[derive(Serialize)]
struct AppJwtClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

#[derive(Deserialize)]
struct AccessTokenReply {
    token: String,
    expires_at: DateTime<Utc>,
}

struct CachedInstallationToken {
    token: Secret,
    expires_at: DateTime<Utc>,
}

/// Produces the bearer for each request. Internal: [`crate::GitHubClient`] owns one.
pub(crate) struct Authenticator {
    credentials: Credentials,
    // A tokio mutex, held across the token exchange, so that concurrent requests wait for one
    // exchange instead of each minting a token.
    installation_token: Mutex<Option<CachedInstallationToken>>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub(crate) fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            installation_token: Mutex::new(None),
        }
    }

    /// True when afk authenticates as a GitHub App (its identity is then the App's bot account).
    pub(crate) fn is_app(&self) -> bool {
        matches!(self.credentials, Credentials::App(_))
    }

    /// The App's installation, when afk authenticates as a GitHub App.
    pub(crate) fn installation_id(&self) -> Option<InstallationId> {
        match &self.credentials {
            Credentials::App(app) => Some(app.installation_id),
            Credentials::Token(_) => None,
        }
    }

    /// A freshly signed App JWT, for the few endpoints that speak to the App itself (`GET /app`);
    /// `None` with a personal token.
    pub(crate) async fn app_jwt(
        &self,
        freshness: Freshness,
        now: DateTime<Utc>,
    ) -> Result<Option<Secret>, GitHubError> {
        match &self.credentials {
            Credentials::Token(_) => Ok(None),
            Credentials::App(app) => Ok(Some(Secret::new(sign_app_jwt(app, freshness, now).await?))),
        }
    }

    /// The bearer for the next request. `Freshness::Refresh` (after a 401) bypasses every cache.
    pub(crate) async fn bearer(
        &self,
        freshness: Freshness,
        http: &reqwest::Client,
        api_base: &url::Url,
        clock: &dyn Clock,
        gate: &RateGate,
    ) -> Result<Secret, GitHubError> {
        let app = match &self.credentials {
            Credentials::Token(provider) => return Ok(provider.get(freshness).await?),
            Credentials::App(app) => app,
        };
        let mut cached = self.installation_token.lock().await;
        let now = clock.now();
        if freshness == Freshness::Cached {
            if let Some(token) = cached.as_ref() {
                if now + APP_TOKEN_REFRESH_MARGIN < token.expires_at {
                    return Ok(token.token.clone());
                }
            }
        }
        let fresh = exchange_app_jwt(app, freshness, http, api_base, clock, gate).await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }
}

/// The App's JWT: RS256 with the App's private key, issued by the App id, valid 9 minutes.
async fn sign_app_jwt(
    app: &AppCredentials,
    freshness: Freshness,
    now: DateTime<Utc>,
) -> Result<String, GitHubError> {
    let pem = app.private_key.get(freshness).await?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.expose().as_bytes()).map_err(|e| {
        GitHubError::AppKey {
            reason: format!("{:?}", e.kind()),
        }
    })?;
    // GitHub allows at most 10 minutes; iat is back-dated a minute to tolerate clock drift, as
    // GitHub's documentation recommends.
    let claims = AppJwtClaims {
        iat: (now - chrono::Duration::seconds(60)).timestamp(),
        exp: (now + chrono::Duration::seconds(9 * 60)).timestamp(),
        iss: app.app_id.0.to_string(),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .map_err(|e| GitHubError::AppKey {
        reason: format!("{:?}", e.kind()),
    })
}

/// Signs the App JWT and trades it for an installation token.
async fn exchange_app_jwt(
    app: &AppCredentials,
    freshness: Freshness,
    http: &reqwest::Client,
    api_base: &url::Url,
    clock: &dyn Clock,
    gate: &RateGate,
) -> Result<CachedInstallationToken, GitHubError> {
    let now = clock.now();
    let jwt = sign_app_jwt(app, freshness, now).await?;
    let url = crate::http::join(
        api_base,
        &[
            "app",
            "installations",
            &app.installation_id.0.to_string(),
            "access_tokens",
        ],
        &[],
    );
    // The exchange is a request like any other: not sent while a rate limit holds, and its answer
    // may start one.
    gate.check(now)?;
    let reply = http
        .post(url.clone())
        .bearer_auth(jwt)
        .header(reqwest::header::ACCEPT, crate::http::ACCEPT_GITHUB_JSON)
        .header("X-GitHub-Api-Version", crate::http::API_VERSION)
        .send()
        .await
        .map_err(|e| crate::http::transport(&url, e))?;
    let status = reply.status();
    let headers = reply.headers().clone();
    let body = reply.bytes().await.map_err(|e| crate::http::transport(&url, e))?;
    gate.observe(
        "the installation token exchange",
        status,
        &headers,
        &body,
        clock.now(),
    )?;
    if !status.is_success() {
        return Err(GitHubError::AppToken {
            app_id: app.app_id.0,
            installation_id: app.installation_id.0,
            status: status.as_u16(),
            message: crate::http::github_message(&body),
        });
    }
    let reply: AccessTokenReply = crate::http::decode(&url, &body)?;
    tracing::debug!(
        app_id = app.app_id.0,
        installation_id = app.installation_id.0,
        expires_at = %reply.expires_at,
        "obtained a GitHub App installation token"
    );
    Ok(CachedInstallationToken {
        token: Secret::new(reply.token),
        expires_at: reply.expires_at,
    })
}
