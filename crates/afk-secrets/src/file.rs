use std::path::{Path, PathBuf};

use crate::{Freshness, Secret, SecretError, SecretProvider};

/// A token read from a file on **every** call, so a file that Vault Agent or a Kubernetes secret
/// mount rewrites (in place or by atomic rename) is picked up on the next request without a
/// restart. Surrounding whitespace is trimmed; a missing or empty file is an error naming the path.
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
        let raw = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| SecretError::Unavailable {
                source_name: self.source_name(),
                // io::Error's text names the failure (not found, permission denied), not the content.
                reason: e.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rereads_the_file_on_every_call_and_trims_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  first\n").unwrap();
        let provider = FileProvider::new(&path);
        assert_eq!(provider.get(Freshness::Cached).await.unwrap().expose(), "first");
        std::fs::write(&path, "second\n").unwrap();
        assert_eq!(provider.get(Freshness::Cached).await.unwrap().expose(), "second");
    }

    #[tokio::test]
    async fn missing_or_empty_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let provider = FileProvider::new(&path);
        let err = provider.get(Freshness::Cached).await.unwrap_err();
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        std::fs::write(&path, " \n").unwrap();
        let err = provider.get(Freshness::Cached).await.unwrap_err();
        assert!(matches!(err, SecretError::Empty { .. }));
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }
}
