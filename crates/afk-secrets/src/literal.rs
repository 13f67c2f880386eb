use crate::{Freshness, Secret, SecretError, SecretProvider};

/// A fixed value given in code or configuration. Meant for tests: a literal token in a config file
/// is a token on disk in clear text.
#[derive(Debug, Clone)]
pub struct LiteralProvider(Secret);

impl LiteralProvider {
    /// A provider that always answers `value`.
    pub fn new(value: impl Into<Secret>) -> Self {
        Self(value.into())
    }
}

#[async_trait::async_trait]
impl SecretProvider for LiteralProvider {
    async fn get(&self, _freshness: Freshness) -> Result<Secret, SecretError> {
        if self.0.is_empty() {
            return Err(SecretError::empty("literal token"));
        }
        Ok(self.0.clone())
    }
}
