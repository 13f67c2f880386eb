use std::env::VarError;

use crate::{Freshness, Secret, SecretError, SecretProvider};

/// A token read from an environment variable on every call. Surrounding whitespace is trimmed; an
/// unset, non-UTF-8 or empty variable is an error naming the variable (never its value).
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

    fn source_name(&self) -> String {
        format!("environment variable {}", self.var)
    }
}

#[async_trait::async_trait]
impl SecretProvider for EnvProvider {
    async fn get(&self, _freshness: Freshness) -> Result<Secret, SecretError> {
        let raw = std::env::var(&self.var).map_err(|e| SecretError::Unavailable {
            source_name: self.source_name(),
            // VarError's Display carries no value, but spell the two cases out for the reader.
            reason: match e {
                VarError::NotPresent => "it is not set".into(),
                VarError::NotUnicode(_) => "its value is not valid UTF-8".into(),
            },
            transient: false,
        })?;
        let value = raw.trim();
        if value.is_empty() {
            return Err(SecretError::Empty {
                source_name: self.source_name(),
            });
        }
        Ok(Secret::new(value))
    }
}
