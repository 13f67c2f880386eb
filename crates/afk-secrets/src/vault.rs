use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::{Freshness, Secret, SecretError, SecretProvider, SpecError};

/// How long a value read from Vault is used before it is read again, unless configured otherwise.
pub const DEFAULT_VAULT_CACHE_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// How long one HTTP request to Vault may take, unless configured otherwise.
pub const DEFAULT_VAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a Kubernetes pod finds its service-account token, unless configured otherwise.
pub const DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The mount of Vault's Kubernetes auth method, unless configured otherwise.
pub const DEFAULT_KUBERNETES_AUTH_MOUNT: &str = "kubernetes";

/// The longest piece of a Vault error message carried into an error.
const MAX_REASON_CHARS: usize = 300;

/// How afk proves itself to Vault.
#[derive(Debug, Clone)]
pub enum VaultAuth {
    /// A Vault token from another provider, typically a file that Vault Agent keeps renewed. It is
    /// asked (cached) before each Vault request and asked with [`Freshness::Refresh`] when Vault
    /// refuses it. afk does not renew such a token: whoever issued it does.
    Token(Arc<dyn SecretProvider>),
    /// Vault's Kubernetes auth method: the pod's service-account JWT, read from `jwt_path` at each
    /// login (projected tokens rotate), is exchanged at `POST /v1/auth/{mount}/login` for a Vault
    /// token, which afk renews (`renew-self`) or replaces by a new login before it expires.
    Kubernetes {
        /// The auth method's mount, usually [`DEFAULT_KUBERNETES_AUTH_MOUNT`].
        mount: String,
        /// The Vault role bound to the pod's service account.
        role: String,
        /// The service-account token file, usually [`DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH`].
        jwt_path: PathBuf,
    },
}

impl VaultAuth {
    /// Kubernetes auth with `role`, the default mount and the default service-account token path.
    pub fn kubernetes(role: impl Into<String>) -> Self {
        VaultAuth::Kubernetes {
            mount: DEFAULT_KUBERNETES_AUTH_MOUNT.into(),
            role: role.into(),
            jwt_path: PathBuf::from(DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH),
        }
    }
}

/// Where a [`VaultProvider`] reads its secret and how.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// Vault's base URL, e.g. `https://vault:8200`.
    pub addr: String,
    /// The Vault Enterprise namespace (`X-Vault-Namespace`), if any.
    pub namespace: Option<String>,
    /// The KV v2 mount, e.g. `secret`.
    pub mount: String,
    /// The secret's path inside the mount, e.g. `afk/t3`.
    pub path: String,
    /// The key inside the secret whose value is the token, e.g. `token`.
    pub field: String,
    /// How afk authenticates to Vault.
    pub auth: VaultAuth,
    /// How long a value read is used; it is re-read early, at 80% of this.
    pub cache_lifetime: Duration,
    /// How long one HTTP request to Vault may take.
    pub timeout: Duration,
    /// A PEM file with the CA certificate(s) that signed Vault's TLS certificate, if it is not
    /// signed by a public CA.
    pub ca_cert: Option<PathBuf>,
}

impl VaultConfig {
    /// A configuration with the default cache lifetime and timeout, no namespace and public CAs.
    pub fn new(
        addr: impl Into<String>,
        mount: impl Into<String>,
        path: impl Into<String>,
        field: impl Into<String>,
        auth: VaultAuth,
    ) -> Self {
        Self {
            addr: addr.into(),
            namespace: None,
            mount: mount.into(),
            path: path.into(),
            field: field.into(),
            auth,
            cache_lifetime: DEFAULT_VAULT_CACHE_LIFETIME,
            timeout: DEFAULT_VAULT_TIMEOUT,
            ca_cert: None,
        }
    }
}

/// A token stored in HashiCorp Vault's KV v2 secrets engine, read over Vault's HTTP API
/// (`GET {addr}/v1/{mount}/data/{path}`, the value at `data.data[field]`).
///
/// Contract:
/// - the value is the field's string with surrounding whitespace trimmed; an empty one is an error;
/// - [`Freshness::Cached`] answers from a cache while the value is younger than 80% of the cache
///   lifetime; past that it re-reads, and if Vault cannot be reached it keeps answering the cached
///   value until the full lifetime is over (so a short Vault outage is invisible), trying Vault
///   again at most every tenth of the lifetime (5s at most) meanwhile;
/// - [`Freshness::Refresh`] drops the cached value and reads Vault, unless another call read it
///   after this one began (concurrent 401s share one read);
/// - a sealed (503), overloaded or unreachable Vault is [`SecretError::Unavailable`] with
///   `transient: true` and a reason saying which; nothing is poisoned, the next call tries again;
/// - a Vault token refused with 403 is dropped and obtained again once (a new login, or the token
///   provider asked with [`Freshness::Refresh`]) before the read is retried;
/// - neither the secret, the Vault token nor the service-account JWT appears in an error or a log
///   line; the token header is marked sensitive.
///
/// Calls are serialised: concurrent callers wait for one read instead of each reading Vault.
pub struct VaultProvider {
    config: VaultConfig,
    base: Url,
    http: reqwest::Client,
    /// Names the secret in errors: `Vault secret secret/afk/t3 (field token)`.
    label: String,
    state: Mutex<State>,
}

impl fmt::Debug for VaultProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultProvider")
            .field("secret", &self.label)
            .field("addr", &self.config.addr)
            .finish()
    }
}

#[derive(Default)]
struct State {
    login: Option<Login>,
    value: Option<(Secret, Instant)>,
    /// When an early re-read last failed while the cached value was still valid.
    failed_at: Option<Instant>,
}

/// How long to keep answering a still-valid cached value after a failed early re-read before
/// trying Vault again: a tenth of the lifetime, at most five seconds.
fn retry_pause(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(5))
}

/// A Vault token obtained by a Kubernetes login.
struct Login {
    token: Secret,
    obtained_at: Instant,
    /// Zero means the token never expires.
    lease: Duration,
    renewable: bool,
    /// The lease of the first login, to notice a renewal cut short by the role's maximum TTL.
    first_lease: Duration,
}

impl Login {
    fn expired(&self) -> bool {
        !self.lease.is_zero() && self.obtained_at.elapsed() >= self.lease
    }

    /// Renew (or log in again) once two thirds of the lease are gone, leaving a third for retries.
    fn due_for_renewal(&self) -> bool {
        !self.lease.is_zero() && self.obtained_at.elapsed() >= self.lease * 2 / 3
    }
}

/// How a Vault request failed, before it is turned into a [`SecretError`].
enum VaultFailure {
    /// 401/403: the Vault token (or the JWT) was refused.
    Refused(String),
    /// Anything else, already phrased.
    Other { reason: String, transient: bool },
}

impl VaultProvider {
    /// A provider for `config`. Fails when the address is not an http(s) URL or the CA file
    /// cannot be read; it does not contact Vault (the first [`SecretProvider::get`] does).
    pub fn new(config: VaultConfig) -> Result<Self, SpecError> {
        let mut base = Url::parse(config.addr.trim()).map_err(|e| SpecError::VaultAddr {
            addr: config.addr.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(SpecError::VaultAddr {
                addr: config.addr.clone(),
                reason: "it must start with http:// or https://".into(),
            });
        }
        // Join below appends to the path, so it must end with exactly one slash.
        let trimmed = base.path().trim_end_matches('/').to_owned();
        base.set_path(&format!("{trimmed}/"));
        for (key, value) in [
            ("mount", &config.mount),
            ("path", &config.path),
            ("field", &config.field),
        ] {
            if value.trim_matches('/').is_empty() {
                return Err(SpecError::Missing { key });
            }
        }
        let mut http = reqwest::Client::builder().timeout(config.timeout);
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| SpecError::CaCert {
                path: ca.clone(),
                reason: e.to_string(),
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| SpecError::CaCert {
                path: ca.clone(),
                reason: e.to_string(),
            })?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build().map_err(|e| SpecError::HttpClient(e.to_string()))?;
        let label = format!(
            "Vault secret {}/{} (field {})",
            config.mount.trim_matches('/'),
            config.path.trim_matches('/'),
            config.field
        );
        Ok(Self {
            config,
            base,
            http,
            label,
            state: Mutex::new(State::default()),
        })
    }

    /// What this provider reads and where.
    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    fn error(&self, reason: String, transient: bool) -> SecretError {
        SecretError::Unavailable {
            source_name: self.label.clone(),
            reason,
            transient,
        }
    }

    fn failure_to_error(&self, failure: VaultFailure) -> SecretError {
        match failure {
            VaultFailure::Refused(reason) => self.error(reason, false),
            VaultFailure::Other { reason, transient } => self.error(reason, transient),
        }
    }

    /// Sends one request to Vault and returns the body of a 2xx answer.
    async fn call(
        &self,
        method: Method,
        api_path: &str,
        token: Option<&Secret>,
        body: Option<serde_json::Value>,
    ) -> Result<Vec<u8>, VaultFailure> {
        let url = self.base.join(api_path).map_err(|e| VaultFailure::Other {
            reason: format!("cannot form the URL for {api_path}: {e}"),
            transient: false,
        })?;
        let mut request = self.http.request(method, url);
        if let Some(namespace) = &self.config.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                VaultFailure::Refused(
                    "the Vault token contains characters that cannot go in an HTTP header".into(),
                )
            })?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| VaultFailure::Other {
            reason: if e.is_timeout() {
                format!(
                    "Vault at {} did not answer within {}",
                    self.config.addr,
                    humantime::format_duration(self.config.timeout)
                )
            } else {
                format!("cannot reach Vault at {}: {}", self.config.addr, error_chain(&e))
            },
            transient: true,
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| VaultFailure::Other {
            reason: format!(
                "the answer from Vault at {} broke off: {}",
                self.config.addr,
                error_chain(&e)
            ),
            transient: true,
        })?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let message = vault_errors(&body);
        let detail = if message.is_empty() {
            String::new()
        } else {
            format!(": {message}")
        };
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => VaultFailure::Refused(format!(
                "Vault refused the request to {api_path} ({status}){detail}"
            )),
            StatusCode::SERVICE_UNAVAILABLE if message.to_ascii_lowercase().contains("sealed") => {
                VaultFailure::Other {
                    reason: format!(
                        "Vault at {} is sealed (503); it answers again once unsealed",
                        self.config.addr
                    ),
                    transient: true,
                }
            }
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => VaultFailure::Other {
                reason: format!("Vault at {} is unavailable ({status}){detail}", self.config.addr),
                transient: true,
            },
            StatusCode::NOT_FOUND => VaultFailure::Other {
                reason: format!("Vault has nothing at {api_path} (404){detail}"),
                transient: false,
            },
            _ => VaultFailure::Other {
                reason: format!("Vault answered {status} to {api_path}{detail}"),
                transient: false,
            },
        })
    }

    /// Reads the field from KV v2 with `token`.
    async fn read_field(&self, token: &Secret) -> Result<Secret, VaultFailure> {
        let api_path = format!(
            "v1/{}/data/{}",
            self.config.mount.trim_matches('/'),
            self.config.path.trim_matches('/')
        );
        let body = self.call(Method::GET, &api_path, Some(token), None).await?;
        // Parsed into a map of JSON values so that no serde error can quote a value back.
        let reply: KvReadReply = serde_json::from_slice(&body).map_err(|_| VaultFailure::Other {
            reason: format!("Vault's answer to {api_path} is not a KV v2 secret (no data.data object)"),
            transient: false,
        })?;
        let Some(data) = reply.data.data else {
            return Err(VaultFailure::Other {
                reason: format!("the latest version of {api_path} is deleted or destroyed"),
                transient: false,
            });
        };
        match data.get(&self.config.field) {
            Some(serde_json::Value::String(value)) => Ok(Secret::new(value.trim())),
            Some(_) => Err(VaultFailure::Other {
                reason: format!("field {} of {api_path} is not a string", self.config.field),
                transient: false,
            }),
            None => Err(VaultFailure::Other {
                reason: format!("{api_path} has no field {}", self.config.field),
                transient: false,
            }),
        }
    }

    /// The Vault token to read with; `force` bypasses every cache (the last one was refused).
    async fn vault_token(&self, state: &mut State, force: bool) -> Result<Secret, SecretError> {
        match &self.config.auth {
            VaultAuth::Token(provider) => {
                let freshness = if force {
                    Freshness::Refresh
                } else {
                    Freshness::Cached
                };
                provider.get(freshness).await.map_err(|e| {
                    let transient = e.is_transient();
                    self.error(format!("no Vault token: {e}"), transient)
                })
            }
            VaultAuth::Kubernetes {
                mount,
                role,
                jwt_path,
            } => {
                if force {
                    state.login = None;
                }
                if let Some(login) = &state.login {
                    if !login.due_for_renewal() {
                        return Ok(login.token.clone());
                    }
                    if login.renewable && !login.expired() {
                        match self.renew(login).await {
                            Ok(renewed) if renewed.lease >= login.first_lease / 2 => {
                                let lease = renewed.lease;
                                tracing::debug!(secret = %self.label, ?lease, "renewed the Vault token");
                                let token = renewed.token.clone();
                                state.login = Some(renewed);
                                return Ok(token);
                            }
                            Ok(_) => {
                                let why = "the Vault token nears its maximum TTL";
                                tracing::debug!(secret = %self.label, why, "logging in to Vault again");
                            }
                            Err(failure) => tracing::debug!(
                                secret = %self.label,
                                error = %self.failure_to_error(failure),
                                "cannot renew the Vault token; logging in again"
                            ),
                        }
                    }
                }
                match self.login(mount, role, jwt_path).await {
                    Ok(login) => {
                        tracing::debug!(secret = %self.label, lease = ?login.lease, "logged in to Vault");
                        let token = login.token.clone();
                        state.login = Some(login);
                        Ok(token)
                    }
                    Err(error) => match &state.login {
                        // A login that fails while the old token still lives is no reason to stop.
                        Some(old) if !old.expired() && error.is_transient() => {
                            let label = &self.label;
                            let why = "using the current token";
                            tracing::warn!(secret = %label, %error, why, "cannot log in to Vault");
                            Ok(old.token.clone())
                        }
                        _ => Err(error),
                    },
                }
            }
        }
    }

    async fn login(&self, mount: &str, role: &str, jwt_path: &PathBuf) -> Result<Login, SecretError> {
        let jwt = tokio::fs::read_to_string(jwt_path).await.map_err(|e| {
            self.error(
                format!(
                    "cannot read the service-account token {}: {e}",
                    jwt_path.display()
                ),
                false,
            )
        })?;
        let jwt = jwt.trim();
        if jwt.is_empty() {
            return Err(self.error(
                format!("the service-account token {} is empty", jwt_path.display()),
                false,
            ));
        }
        let api_path = format!("v1/auth/{}/login", mount.trim_matches('/'));
        let body = serde_json::json!({ "role": role, "jwt": jwt });
        let reply = self
            .call(Method::POST, &api_path, None, Some(body))
            .await
            .map_err(|f| match f {
                VaultFailure::Refused(reason) => self.error(
                    format!("{reason}; check that role {role} is bound to this pod's service account"),
                    false,
                ),
                other => self.failure_to_error(other),
            })?;
        self.parse_auth(&reply, &api_path, None)
            .map_err(|f| self.failure_to_error(f))
    }

    async fn renew(&self, login: &Login) -> Result<Login, VaultFailure> {
        let api_path = "v1/auth/token/renew-self";
        let reply = self
            .call(
                Method::POST,
                api_path,
                Some(&login.token),
                Some(serde_json::json!({})),
            )
            .await?;
        self.parse_auth(&reply, api_path, Some(login.first_lease))
    }

    fn parse_auth(
        &self,
        body: &[u8],
        api_path: &str,
        first_lease: Option<Duration>,
    ) -> Result<Login, VaultFailure> {
        // serde's messages could quote a value, so they are not passed on.
        let reply: AuthReply = serde_json::from_slice(body).map_err(|_| VaultFailure::Other {
            reason: format!("Vault's answer to {api_path} has no auth.client_token and auth.lease_duration"),
            transient: false,
        })?;
        let lease = Duration::from_secs(reply.auth.lease_duration);
        Ok(Login {
            token: Secret::new(reply.auth.client_token),
            obtained_at: Instant::now(),
            lease,
            renewable: reply.auth.renewable,
            first_lease: first_lease.unwrap_or(lease),
        })
    }

    /// One read of the secret, obtaining a new Vault token once if Vault refuses the current one.
    async fn read(&self, state: &mut State) -> Result<Secret, SecretError> {
        let token = self.vault_token(state, false).await?;
        let failure = match self.read_field(&token).await {
            Ok(secret) => return Ok(secret),
            Err(VaultFailure::Refused(reason)) => reason,
            Err(other) => return Err(self.failure_to_error(other)),
        };
        let label = &self.label;
        tracing::debug!(secret = %label, reason = %failure, "Vault refused the token; obtaining a new one");
        let token = self.vault_token(state, true).await?;
        self.read_field(&token).await.map_err(|f| match f {
            VaultFailure::Refused(reason) => self.error(
                format!("{reason}; the Vault policy must allow reading this path"),
                false,
            ),
            other => self.failure_to_error(other),
        })
    }
}

#[async_trait::async_trait]
impl SecretProvider for VaultProvider {
    async fn get(&self, freshness: Freshness) -> Result<Secret, SecretError> {
        let asked_at = Instant::now();
        // Held across the read so that concurrent callers share one read of Vault.
        let mut state = self.state.lock().await;
        let lifetime = self.config.cache_lifetime;
        if freshness == Freshness::Refresh {
            // A value read after this call began is as fresh as a new read: several requests
            // refused at once (401) then cost one read of Vault, not one each.
            if let Some((secret, fetched_at)) = &state.value {
                if *fetched_at >= asked_at {
                    return Ok(secret.clone());
                }
            }
            // The server refused this value: it must not be handed out again.
            state.value = None;
        }
        if let Some((secret, fetched_at)) = &state.value {
            let age = fetched_at.elapsed();
            if age < lifetime * 4 / 5 {
                return Ok(secret.clone());
            }
            // An early re-read failed moments ago: while the value is still valid, do not make
            // every caller wait for an unreachable Vault (up to the timeout) again.
            let paused = state
                .failed_at
                .is_some_and(|at| at.elapsed() < retry_pause(lifetime));
            if paused && age < lifetime {
                return Ok(secret.clone());
            }
        }
        match self.read(&mut state).await {
            Ok(secret) if secret.is_empty() => Err(SecretError::Empty {
                source_name: self.label.clone(),
            }),
            Ok(secret) => {
                tracing::trace!(secret = %self.label, "read the secret from Vault");
                state.value = Some((secret.clone(), Instant::now()));
                state.failed_at = None;
                Ok(secret)
            }
            Err(error) => match &state.value {
                Some((secret, fetched_at)) if error.is_transient() && fetched_at.elapsed() < lifetime => {
                    let why = "the cached value is still valid";
                    tracing::warn!(%error, why, "cannot re-read the secret early");
                    let secret = secret.clone();
                    state.failed_at = Some(Instant::now());
                    Ok(secret)
                }
                _ => Err(error),
            },
        }
    }
}

#[derive(Deserialize)]
struct KvReadReply {
    data: KvData,
}

#[derive(Deserialize)]
struct KvData {
    /// `null` when the latest version is deleted.
    data: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct AuthReply {
    auth: AuthInfo,
}

#[derive(Deserialize)]
struct AuthInfo {
    client_token: String,
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

/// Vault's `{"errors": [...]}`, joined and shortened; empty when the body has none.
fn vault_errors(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let joined = serde_json::from_slice::<Errors>(body)
        .map(|e| e.errors.join("; "))
        .unwrap_or_default();
    if joined.chars().count() <= MAX_REASON_CHARS {
        return joined;
    }
    let mut short: String = joined.chars().take(MAX_REASON_CHARS).collect();
    short.push('…');
    short
}

/// An error and its causes on one line: reqwest's own message alone says only "error sending request".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
