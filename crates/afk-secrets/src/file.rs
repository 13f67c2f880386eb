use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::{trimmed, FailureKind, Freshness, Secret, SecretError, SecretProvider};

/// A token read from a file on **every** call, so a file that Vault Agent or a Kubernetes secret
/// mount rewrites (in place or by atomic rename) is picked up on the next request without a
/// restart. Surrounding whitespace is trimmed; a missing, unreadable or empty file is an error
/// naming the path that a person must fix ([`FailureKind::Missing`],
/// [`FailureKind::PermissionDenied`], [`FailureKind::Empty`]).
#[derive(Debug, Clone)]
pub struct FileProvider {
    path: PathBuf,
}

impl FileProvider {
    /// A provider reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file this provider reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn source_name(&self) -> String {
        format!("token file {}", self.path.display())
    }
}

#[async_trait::async_trait]
impl SecretProvider for FileProvider {
    async fn get(&self, _freshness: Freshness) -> Result<Secret, SecretError> {
        let raw = tokio::fs::read_to_string(&self.path).await.map_err(|e| {
            let kind = match e.kind() {
                ErrorKind::NotFound => FailureKind::Missing,
                ErrorKind::PermissionDenied => FailureKind::PermissionDenied,
                _ => FailureKind::Unusable,
            };
            // io::Error's text names the failure (not found, permission denied), not the content.
            SecretError::new(self.source_name(), kind, e.to_string())
        })?;
        trimmed(&raw, || self.source_name())
    }
}
