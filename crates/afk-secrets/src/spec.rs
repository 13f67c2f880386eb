use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    BackoffProvider, CommandProvider, EnvProvider, FileProvider, LiteralProvider, Secret, SecretProvider,
    VaultAuth, VaultConfig, VaultProvider,
};

/// A configuration that cannot become a provider. The message names the offending key or value
/// (never a secret); the caller adds which credential (`[t3.token]`) it configures.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `command = []`.
    #[error("`command` is empty; give the program and its arguments, e.g. [\"gh\", \"auth\", \"token\"]")]
    EmptyCommand,
    /// `shell = true` with more than one element in `command`.
    #[error(
        "with `shell = true`, `command` must be a single script string, e.g. [\"pass show t3 | head -1\"]"
    )]
    ShellNeedsOneScript,
    /// A required key is empty.
    #[error("`{key}` is empty")]
    Missing {
        /// The key, e.g. `path`.
        key: &'static str,
    },
    /// `addr` is not an http(s) URL.
    #[error("Vault address {addr:?} is not usable: {reason}")]
    VaultAddr {
        /// The configured address.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `ca_cert` cannot be read or holds no PEM certificate.
    #[error("cannot use the CA certificate file {}: {reason}", path.display())]
    CaCert {
        /// The configured file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP client could not be set up (e.g. no TLS backend).
    #[error("cannot set up the HTTP client for Vault: {0}")]
    HttpClient(String),
}

/// Where one credential comes from, as written in afk's TOML configuration: a table with a
/// `provider` key and that provider's settings, e.g.
///
/// ```toml
/// [t3.token]
/// provider = "file"
/// path = "/var/run/secrets/t3/token"
/// ```
///
/// Read with [`ProviderSpec::from_toml`] (or `Deserialize`, which goes through it). Unknown keys
/// are refused, so that a misspelt `cache_lifetime` is an error rather than ignored. Durations
/// are written like `200ms`, `10s` or `5m`. `Debug` never shows a literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderSpec {
    /// An environment variable, read on every request ([`EnvProvider`]).
    Env {
        /// The variable's name, e.g. `GITHUB_TOKEN`.
        var: String,
    },
    /// A file re-read on every request ([`FileProvider`]), e.g. one that Vault Agent writes.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A command whose trimmed standard output is the token ([`CommandProvider`]).
    Command {
        /// The program and its arguments; with `shell = true`, one script for `sh -c`.
        command: Vec<String>,
        /// Run `command[0]` with `sh -c` (default false: no shell).
        shell: bool,
        /// Kill the command after this long (default `10s`).
        timeout: Duration,
        /// Reuse the output this long (default: run the command for every request).
        cache_lifetime: Option<Duration>,
    },
    /// A field of a HashiCorp Vault KV v2 secret ([`VaultProvider`]).
    Vault(VaultSpec),
    /// A value written in the configuration itself ([`LiteralProvider`]). **For tests only**: it
    /// puts a token on disk in clear text, and building it logs a warning.
    Literal {
        /// The token.
        value: Secret,
    },
}

/// The settings of `provider = "vault"`.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultSpec {
    /// Vault's base URL, e.g. `https://vault:8200`.
    pub addr: String,
    /// The Vault Enterprise namespace, if any.
    pub namespace: Option<String>,
    /// The KV v2 mount (default `secret`).
    pub mount: String,
    /// The secret's path inside the mount, e.g. `afk/t3`.
    pub path: String,
    /// The key inside the secret (default `token`).
    pub field: String,
    /// How afk logs in to Vault.
    pub auth: VaultAuthSpec,
    /// How long a value read is used; re-read early at 80% (default `5m`).
    pub cache_lifetime: Duration,
    /// How long one request to Vault may take (default `10s`).
    pub timeout: Duration,
    /// A PEM file with the CA that signed Vault's certificate, if not a public CA.
    pub ca_cert: Option<PathBuf>,
}

/// `auth = { method = "token", token = { provider = "file", path = "..." } }` or
/// `auth = { method = "kubernetes", role = "afk" }`.
#[derive(Debug, Clone, PartialEq)]
pub enum VaultAuthSpec {
    /// A Vault token from another provider (typically the file Vault Agent keeps renewed).
    Token {
        /// Where the Vault token comes from.
        token: Box<ProviderSpec>,
    },
    /// Vault's Kubernetes auth method with the pod's service-account token.
    Kubernetes {
        /// The Vault role bound to the pod's service account.
        role: String,
        /// The auth method's mount (default `kubernetes`).
        mount: String,
        /// The service-account token file (default
        /// `/var/run/secrets/kubernetes.io/serviceaccount/token`).
        jwt_path: PathBuf,
    },
}

impl ProviderSpec {
    /// The provider this specification describes. Checks the settings (an empty command, a
    /// malformed Vault address) but reads no secret and contacts nothing: a source that is down
    /// at start shows up as an error from the first [`SecretProvider::get`], not here.
    ///
    /// The command and Vault providers come behind a [`BackoffProvider`] with the default
    /// back-off: while a failure that needs a person lasts, they are not asked at every request.
    pub fn build(&self) -> Result<Arc<dyn SecretProvider>, SpecError> {
        Ok(match self {
            ProviderSpec::Env { var } => {
                if var.trim().is_empty() {
                    return Err(SpecError::Missing { key: "var" });
                }
                Arc::new(EnvProvider::new(var.trim()))
            }
            ProviderSpec::File { path } => {
                if path.as_os_str().is_empty() {
                    return Err(SpecError::Missing { key: "path" });
                }
                Arc::new(FileProvider::new(path))
            }
            ProviderSpec::Command {
                command,
                shell,
                timeout,
                cache_lifetime,
            } => {
                let mut provider = match (command.as_slice(), shell) {
                    ([], _) => return Err(SpecError::EmptyCommand),
                    ([script], true) => CommandProvider::shell(script),
                    (_, true) => return Err(SpecError::ShellNeedsOneScript),
                    ([program, args @ ..], false) => CommandProvider::new(program, args),
                };
                provider = provider.with_timeout(*timeout);
                if let Some(lifetime) = cache_lifetime {
                    provider = provider.with_cache_lifetime(*lifetime);
                }
                Arc::new(BackoffProvider::new(Arc::new(provider)))
            }
            ProviderSpec::Vault(spec) => {
                let provider = VaultProvider::new(spec.config()?)?;
                Arc::new(BackoffProvider::new(Arc::new(provider)))
            }
            ProviderSpec::Literal { value } => {
                tracing::warn!(
                    "a literal token in the configuration is meant for tests; \
                     use a file, env or vault provider"
                );
                Arc::new(LiteralProvider::new(value.clone()))
            }
        })
    }
}

/// One line naming the source, for start-up logs and status pages: `file /run/t3/token`,
/// `env GITHUB_TOKEN`, `command gh`, `vault secret/afk/t3 (field token) at https://vault:8200`,
/// `literal`. Never a value.
impl fmt::Display for ProviderSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProviderSpec::Env { var } => write!(f, "env {var}"),
            ProviderSpec::File { path } => write!(f, "file {}", path.display()),
            ProviderSpec::Command { command, shell, .. } => match (shell, command.first()) {
                (true, _) => f.write_str("command (sh -c)"),
                (false, Some(program)) => write!(f, "command {program}"),
                (false, None) => f.write_str("command (empty)"),
            },
            ProviderSpec::Vault(vault) => write!(
                f,
                "vault {}/{} (field {}) at {}",
                vault.mount.trim_matches('/'),
                vault.path.trim_matches('/'),
                vault.field,
                crate::redact::redact_url(&vault.addr)
            ),
            ProviderSpec::Literal { .. } => f.write_str("literal"),
        }
    }
}

impl VaultSpec {
    /// The provider configuration, building the token provider of token auth.
    pub fn config(&self) -> Result<VaultConfig, SpecError> {
        let auth = match &self.auth {
            VaultAuthSpec::Token { token } => VaultAuth::Token(token.build()?),
            VaultAuthSpec::Kubernetes {
                role,
                mount,
                jwt_path,
            } => {
                if role.trim().is_empty() {
                    return Err(SpecError::Missing { key: "auth.role" });
                }
                VaultAuth::Kubernetes {
                    mount: mount.clone(),
                    role: role.clone(),
                    jwt_path: jwt_path.clone(),
                }
            }
        };
        let mut config = VaultConfig::new(&self.addr, &self.mount, &self.path, &self.field, auth);
        config.namespace = self.namespace.clone().filter(|n| !n.trim().is_empty());
        config.cache_lifetime = self.cache_lifetime;
        config.timeout = self.timeout;
        config.ca_cert = self.ca_cert.clone();
        Ok(config)
    }
}
