use std::env::VarError;

use crate::{trimmed, FailureKind, Freshness, Secret, SecretError, SecretProvider};

/// A token read from an environment variable on every call. Surrounding whitespace is trimmed; an
/// unset, non-UTF-8 or empty variable is an error naming the variable (never its value) that a
/// person must fix.
///
/// The variable is read each time rather than once at start so that a test or an embedding
/// process that sets it later is honoured; a running process cannot see its parent change it.
#[derive(Debug, Clone)]
pub struct EnvProvider {
    var: String,
}

impl EnvProvider {
    /// A provider reading the variable `var`, e.g. `GITHUB_TOKEN`.
    pub fn new(var: impl Into<String>) -> Self {
        Self { var: var.into() }
    }

    /// The variable this provider reads.
    pub fn var(&self) -> &str {
        &self.var
    }
}

#[async_trait::async_trait]
impl SecretProvider for EnvProvider {
    async fn get(&self, _freshness: Freshness) -> Result<Secret, SecretError> {
        let source_name = || format!("environment variable {}", self.var);
        let raw = std::env::var(&self.var).map_err(|e| match e {
            VarError::NotPresent => SecretError::new(source_name(), FailureKind::Missing, "it is not set"),
            VarError::NotUnicode(_) => SecretError::new(
                source_name(),
                FailureKind::Unusable,
                "its value is not valid UTF-8",
            ),
        })?;
        trimmed(&raw, source_name)
    }
}
