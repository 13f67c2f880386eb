//! Secrets for afk.
//!
//! Two things live here and nowhere else:
//! - [`Secret`], the only type that holds a token. Its `Debug` and `Display` print `[redacted]`, it
//!   has no `Serialize`, and the only way to read it is [`Secret::expose`], so a token cannot reach a
//!   log line, an error message or the ledger by accident.
//! - [`SecretProvider`], the injected source of a credential. Callers ask it on **every** request
//!   (T3's `orchestration:operate` token expires hourly and is refreshed out of band), and ask again
//!   with [`Freshness::Refresh`] after the server answered 401.
//!
//! The providers: [`EnvProvider`], [`FileProvider`], [`CommandProvider`], [`VaultProvider`] and, for
//! tests, [`LiteralProvider`]. Configuration names one with a [`ProviderSpec`] (a TOML table with a
//! `provider` key) and [`ProviderSpec::build`] turns it into an `Arc<dyn SecretProvider>`.
//! With the `testing` feature, `testing::VaultStandIn` is a Vault on loopback for tests.
//!
//! **Architecture invariant:** no error or log line produced here contains a secret value (a
//! token, a Vault token, a service-account JWT); a test runs every provider with tracing at TRACE
//! and searches the output.

#![warn(missing_docs)]

mod backoff;
mod command;
mod env;
mod error;
mod file;
mod literal;
mod parse;
pub mod redact;
mod spec;
#[cfg(feature = "testing")]
pub mod testing;
mod vault;

pub use backoff::{Backoff, BackoffProvider, Clock, SystemClock, DEFAULT_BACKOFF_FIRST, DEFAULT_BACKOFF_MAX};
pub use command::{CommandProvider, DEFAULT_COMMAND_TIMEOUT};
pub use env::EnvProvider;
pub use error::{FailureKind, SecretError};
pub use file::FileProvider;
pub use literal::LiteralProvider;
pub use parse::ProviderTableError;
pub use spec::{ProviderSpec, SpecError, VaultAuthSpec, VaultSpec};
pub use vault::{
    VaultAuth, VaultConfig, VaultProvider, DEFAULT_KUBERNETES_AUTH_MOUNT, DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH,
    DEFAULT_VAULT_CACHE_LIFETIME, DEFAULT_VAULT_TIMEOUT,
};

use std::fmt;

/// A credential value. `Debug` and `Display` print `[redacted]`; read it with [`Secret::expose`]
/// only at the point where it goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value and registers it in the process-wide [`redact::global`] registry, so that
    /// [`redact::scrub`] and the log writer remove it from any text. Surrounding whitespace is
    /// kept: providers trim before wrapping.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        redact::global().register(&value);
        Self(value)
    }

    /// The raw value, for the one place that must send it (an `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty (providers refuse to hand out such a secret).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

/// Whether a provider may answer from a cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// A cached value that has not expired is fine.
    Cached,
    /// The server refused the last value (401): bypass every cache and fetch anew.
    Refresh,
}

/// The secret in `raw` with surrounding whitespace trimmed, or an [`FailureKind::Empty`] error
/// naming `source_name` when nothing is left.
pub(crate) fn trimmed(raw: &str, source_name: impl FnOnce() -> String) -> Result<Secret, SecretError> {
    match raw.trim() {
        "" => Err(SecretError::empty(source_name())),
        value => Ok(Secret::new(value)),
    }
}

/// A source of one credential, asked before every request that needs it.
///
/// Implementations must be cheap when they can answer from a cache, must never log the value, and
/// must bypass any cache when asked with [`Freshness::Refresh`].
#[async_trait::async_trait]
pub trait SecretProvider: Send + Sync + fmt::Debug {
    /// The current value of the credential.
    async fn get(&self, freshness: Freshness) -> Result<Secret, SecretError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hunter2-token");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2-token");
    }
}
