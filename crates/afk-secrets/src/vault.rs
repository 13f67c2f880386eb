use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::error::fold;
use crate::{FailureKind, FileProvider, Freshness, Secret, SecretError, SecretProvider, SpecError};

/// How long a value read from Vault is used before it is read again, unless configured otherwise.
pub const DEFAULT_VAULT_CACHE_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// How long one HTTP request to Vault may take, unless configured otherwise.
pub const DEFAULT_VAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a Kubernetes pod finds its service-account token, unless configured otherwise.
pub const DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The mount of Vault's Kubernetes auth method, unless configured otherwise.
pub const DEFAULT_KUBERNETES_AUTH_MOUNT: &str = "kubernetes";

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

/// How a Vault request failed, before the caller says what it means.
enum Failure {
    /// No usable answer (cannot connect, no answer in time, cut off, not the JSON expected),
    /// already phrased.
    Transport(FailureKind, String),
    /// Vault answered with a non-2xx status.
    Status(Refusal),
}

/// A non-2xx answer from Vault: its status and its `errors`, joined by newlines.
struct Refusal {
    status: StatusCode,
    errors: String,
}

impl Refusal {
    fn says(&self, text: &str) -> bool {
        self.errors.to_ascii_lowercase().contains(text)
    }

    fn kind(&self) -> FailureKind {
        classify(self.status, &self.errors)
    }

    /// ` (403): permission denied; invalid token`, or ` (404)` when Vault said nothing more.
    fn summary(&self) -> String {
        let (line, _) = fold(&self.errors);
        match line.is_empty() {
            true => format!(" ({})", self.status.as_u16()),
            false => format!(" ({}): {line}", self.status.as_u16()),
        }
    }
}

/// What a non-2xx answer from Vault means. Real Vault answers an invalid, expired or revoked
/// token with 403 `permission denied` **and** `invalid token` (a multi-error text), and a valid
/// token whose policy does not allow the request with 403 `permission denied` alone.
fn classify(status: StatusCode, errors: &str) -> FailureKind {
    let says = |text: &str| errors.to_ascii_lowercase().contains(text);
    match status {
        StatusCode::SERVICE_UNAVAILABLE if says("sealed") => FailureKind::Sealed,
        // Older Kubernetes auth plugins answer an unbound service account with 500.
        _ if says("invalid role name") || says("not authorized") => FailureKind::LoginRefused,
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => FailureKind::Unavailable,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN if says("invalid token") => {
            FailureKind::InvalidToken
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => FailureKind::PermissionDenied,
        StatusCode::NOT_FOUND => FailureKind::Missing,
        _ => FailureKind::Unusable,
    }
}

/// What a request was for, to say what a refusal means for it.
enum Purpose<'a> {
    /// Reading the secret at `api_path`.
    Read { api_path: &'a str },
    /// A Kubernetes login with `role` at the auth mount `mount`.
    Login { mount: &'a str, role: &'a str },
    /// Renewing the Vault token.
    Renew,
}

impl VaultProvider {
    /// A provider for `config`. Fails when the address is not an http(s) URL or the CA file
    /// cannot be read; it does not contact Vault (the first [`SecretProvider::get`] does).
    pub fn new(config: VaultConfig) -> Result<Self, SpecError> {
        let mut base = Url::parse(config.addr.trim()).map_err(|e| SpecError::VaultAddr {
            addr: crate::redact::url_without_userinfo(&config.addr).into_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(SpecError::VaultAddr {
                addr: crate::redact::url_without_userinfo(&config.addr).into_owned(),
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
            "Vault secret {} (field {}) at {}",
            kv_path(&config),
            config.field,
            crate::redact::url_without_userinfo(config.addr.trim())
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

    fn error(&self, kind: FailureKind, reason: impl Into<String>) -> SecretError {
        SecretError::new(self.label.clone(), kind, reason)
    }

    fn failure_to_error(&self, failure: Failure, purpose: Purpose<'_>) -> SecretError {
        let refusal = match failure {
            Failure::Transport(kind, reason) => return self.error(kind, reason),
            Failure::Status(refusal) => refusal,
        };
        let kind = refusal.kind();
        let summary = refusal.summary();
        let error = match (kind, &purpose) {
            (FailureKind::Sealed, _) => {
                self.error(kind, "Vault is sealed (503); it answers again once unsealed")
            }
            (FailureKind::Unavailable, _) => self.error(kind, format!("Vault is unavailable{summary}")),
            (FailureKind::LoginRefused | FailureKind::PermissionDenied, Purpose::Login { mount, role }) => {
                let action = if refusal.says("invalid role name") {
                    format!("a person must create role {role} in Vault's auth/{mount} or fix `auth.role`")
                } else {
                    format!("check that role {role} is bound to this pod's service account and namespace")
                };
                self.error(
                    FailureKind::LoginRefused,
                    format!("Vault refused the Kubernetes login to role {role} at auth/{mount}{summary}"),
                )
                .with_action(action)
            }
            (FailureKind::Missing, Purpose::Login { mount, .. }) => self
                .error(kind, format!("Vault has no auth method at auth/{mount}{summary}"))
                .with_action(format!(
                    "a person must enable Kubernetes auth at auth/{mount} or fix `auth.mount`"
                )),
            (FailureKind::InvalidToken, _) => {
                let action = match &self.config.auth {
                    VaultAuth::Token(_) => {
                        "a person must give afk a valid Vault token (it is invalid, expired or revoked)"
                    }
                    VaultAuth::Kubernetes { .. } => {
                        "a token just issued by the Kubernetes login was refused; check the role's token settings"
                    }
                };
                self.error(kind, format!("Vault does not accept the Vault token{summary}"))
                    .with_action(action)
            }
            (FailureKind::PermissionDenied, Purpose::Read { api_path }) => self
                .error(kind, format!("Vault denied reading {api_path}{summary}"))
                .with_action(format!(
                    "a person must fix the Vault policy: afk's token needs `read` on {}",
                    policy_path(&self.config)
                )),
            (FailureKind::Missing, Purpose::Read { api_path }) => self
                .error(kind, format!("Vault has nothing at {api_path}{summary}"))
                .with_action("a person must write the secret there or fix `mount` and `path`"),
            (_, Purpose::Read { api_path }) => self.error(kind, format!("Vault refused {api_path}{summary}")),
            (_, Purpose::Login { mount, .. }) => {
                self.error(kind, format!("Vault refused the login at auth/{mount}{summary}"))
            }
            (_, Purpose::Renew) => self.error(kind, format!("Vault refused to renew its token{summary}")),
        };
        let (_, whole) = fold(&refusal.errors);
        match whole {
            Some(whole) => error.with_detail(whole),
            None => error,
        }
    }

    /// Sends one request to Vault and returns the body of a 2xx answer.
    async fn call(
        &self,
        method: Method,
        api_path: &str,
        token: Option<&Secret>,
        body: Option<serde_json::Value>,
    ) -> Result<Vec<u8>, Failure> {
        let url = self.base.join(api_path).map_err(|e| {
            Failure::Transport(
                FailureKind::Unusable,
                format!("cannot form the URL for {api_path}: {e}"),
            )
        })?;
        let mut request = self.http.request(method, url);
        if let Some(namespace) = &self.config.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                Failure::Transport(
                    FailureKind::Unusable,
                    "the Vault token contains characters that cannot go in an HTTP header".into(),
                )
            })?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                let waited = humantime::format_duration(self.config.timeout);
                Failure::Transport(
                    FailureKind::TimedOut,
                    format!("Vault did not answer within {waited}"),
                )
            } else {
                // The URL is in the label already; a URL in the chain could carry userinfo.
                let chain = error_chain(&e.without_url());
                Failure::Transport(FailureKind::Unreachable, format!("cannot reach Vault: {chain}"))
            }
        })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            let chain = error_chain(&e.without_url());
            Failure::Transport(
                FailureKind::Unavailable,
                format!("the answer from Vault broke off: {chain}"),
            )
        })?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        Err(Failure::Status(Refusal {
            status,
            errors: vault_errors(&body),
        }))
    }

    /// Reads the field from KV v2 with `token`.
    async fn read_field(&self, token: &Secret, api_path: &str) -> Result<Secret, SecretError> {
        let body = self
            .call(Method::GET, api_path, Some(token), None)
            .await
            .map_err(|f| self.failure_to_error(f, Purpose::Read { api_path }))?;
        // Parsed into a map of JSON values so that no serde error can quote a value back.
        let reply: KvReadReply = serde_json::from_slice(&body).map_err(|_| {
            self.error(
                FailureKind::Unusable,
                format!("Vault's answer to {api_path} is not a KV v2 secret (no data.data object)"),
            )
        })?;
        let Some(data) = reply.data.data else {
            return Err(self
                .error(
                    FailureKind::Missing,
                    format!("the latest version of {api_path} is deleted or destroyed"),
                )
                .with_action("a person must write the secret again or undelete it"));
        };
        let field = &self.config.field;
        match data.get(field) {
            Some(serde_json::Value::String(value)) => Ok(Secret::new(value.trim())),
            Some(_) => Err(self.error(
                FailureKind::Unusable,
                format!("field {field} of {api_path} is not a string"),
            )),
            None => {
                // Field names are not secret, and they say what `field` should be.
                let names: Vec<&str> = data.keys().map(String::as_str).collect();
                Err(self
                    .error(FailureKind::Missing, format!("{api_path} has no field {field}"))
                    .with_action(format!("its fields are: {}; fix `field`", names.join(", "))))
            }
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
                provider
                    .get(freshness)
                    .await
                    .map_err(|e| e.within(self.label.clone(), "no Vault token"))
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
                            Err(error) => tracing::debug!(
                                secret = %self.label,
                                error = %error,
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
        let jwt_source = || format!("the service-account token {}", jwt_path.display());
        // A Secret, so that the JWT is registered for redaction like every value afk holds.
        let jwt = FileProvider::new(jwt_path)
            .get(Freshness::Cached)
            .await
            .map_err(|e| {
                let reason = match e.kind() {
                    FailureKind::Empty => format!("{} is empty", jwt_source()),
                    _ => format!("cannot read {}: {}", jwt_source(), e.reason()),
                };
                self.error(e.kind(), reason)
            })?;
        let mount = mount.trim_matches('/');
        let api_path = format!("v1/auth/{mount}/login");
        let body = serde_json::json!({ "role": role, "jwt": jwt.expose() });
        let reply = self
            .call(Method::POST, &api_path, None, Some(body))
            .await
            .map_err(|f| self.failure_to_error(f, Purpose::Login { mount, role }))?;
        self.parse_auth(&reply, &api_path, None)
    }

    async fn renew(&self, login: &Login) -> Result<Login, SecretError> {
        let api_path = "v1/auth/token/renew-self";
        let reply = self
            .call(
                Method::POST,
                api_path,
                Some(&login.token),
                Some(serde_json::json!({})),
            )
            .await
            .map_err(|f| self.failure_to_error(f, Purpose::Renew))?;
        self.parse_auth(&reply, api_path, Some(login.first_lease))
    }

    fn parse_auth(
        &self,
        body: &[u8],
        api_path: &str,
        first_lease: Option<Duration>,
    ) -> Result<Login, SecretError> {
        // serde's messages could quote a value, so they are not passed on.
        let reply: AuthReply = serde_json::from_slice(body).map_err(|_| {
            self.error(
                FailureKind::Unusable,
                format!("Vault's answer to {api_path} has no auth.client_token and auth.lease_duration"),
            )
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
        let api_path = format!("v1/{}", policy_path(&self.config));
        let token = self.vault_token(state, false).await?;
        let error = match self.read_field(&token, &api_path).await {
            Ok(secret) => return Ok(secret),
            Err(error)
                if matches!(
                    error.kind(),
                    FailureKind::InvalidToken | FailureKind::PermissionDenied
                ) =>
            {
                error
            }
            Err(error) => return Err(error),
        };
        // A new token may carry other policies (a re-login after the role changed) or replace a
        // revoked one (Vault Agent rotated the file).
        let label = &self.label;
        tracing::debug!(secret = %label, %error, "Vault refused the token; obtaining a new one");
        let token = self.vault_token(state, true).await?;
        self.read_field(&token, &api_path).await
    }
}

/// `mount/path` of the secret, e.g. `secret/afk/t3`.
fn kv_path(config: &VaultConfig) -> String {
    format!(
        "{}/{}",
        config.mount.trim_matches('/'),
        config.path.trim_matches('/')
    )
}

/// The path a Vault policy must allow reading: `mount/data/path`, e.g. `secret/data/afk/t3`.
fn policy_path(config: &VaultConfig) -> String {
    format!(
        "{}/data/{}",
        config.mount.trim_matches('/'),
        config.path.trim_matches('/')
    )
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
            Ok(secret) if secret.is_empty() => Err(SecretError::empty(self.label.clone())),
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

/// Vault's `{"errors": [...]}` joined by newlines (each may itself span lines); empty when the
/// body has none.
fn vault_errors(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    serde_json::from_slice::<Errors>(body)
        .map(|e| e.errors.join("\n"))
        .unwrap_or_default()
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
