//! What the test files of afk-secrets share: asking a provider, and a stand-in Vault set up
//! with the T3 token stored and a way to log in.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use afk_secrets::testing::VaultStandIn;
use afk_secrets::{Freshness, SecretError, SecretProvider, VaultAuth, VaultConfig, VaultProvider};

/// The KV path of the T3 token in the stand-in.
pub const PATH: &str = "afk/t3";
/// The Kubernetes role that may log in.
pub const ROLE: &str = "afk";
/// The pod's service-account token the role accepts.
pub const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.service-account.sig";

/// The secret `provider` answers; panics with the error otherwise.
pub async fn value(provider: &dyn SecretProvider, freshness: Freshness) -> String {
    match provider.get(freshness).await {
        Ok(secret) => secret.expose().to_owned(),
        Err(error) => panic!("no secret: {error}"),
    }
}

/// The error `provider` answers; panics when it answers a secret.
pub async fn error(provider: &dyn SecretProvider, freshness: Freshness) -> SecretError {
    match provider.get(freshness).await {
        Ok(_) => panic!("a secret where an error was expected"),
        Err(error) => error,
    }
}

/// A Vault provider configuration for the secret at [`PATH`], field `token`, with a 2s timeout.
pub fn config(vault: &VaultStandIn, auth: VaultAuth, lifetime: Duration) -> VaultConfig {
    let mut config = VaultConfig::new(vault.url(), "secret", PATH, "token", auth);
    config.cache_lifetime = lifetime;
    config.timeout = Duration::from_secs(2);
    config
}

/// A Vault provider for `config`.
pub fn vault_provider(vault: &VaultStandIn, auth: VaultAuth, lifetime: Duration) -> VaultProvider {
    VaultProvider::new(config(vault, auth, lifetime)).expect("a valid Vault configuration")
}

/// A Vault with the T3 token `t3-token-1` stored and a file holding a Vault token (what Vault
/// Agent writes).
pub async fn vault_with_token_file() -> (VaultStandIn, tempfile::TempDir, PathBuf) {
    let vault = VaultStandIn::start().await.unwrap();
    vault.set_secret(PATH, "token", "t3-token-1");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("vault-token");
    std::fs::write(&token_file, vault.issue_token(None)).unwrap();
    (vault, dir, token_file)
}

/// A Vault with the T3 token `t3-token-1` stored, the role [`ROLE`] whose tokens live `ttl`, and
/// the pod's service-account token file; the auth logs in with that role and file.
pub async fn vault_with_kubernetes(ttl: Duration) -> (VaultStandIn, tempfile::TempDir, VaultAuth) {
    let vault = VaultStandIn::start().await.unwrap();
    vault.set_secret(PATH, "token", "t3-token-1");
    vault.add_kubernetes_role(ROLE, JWT, ttl);
    let dir = tempfile::tempdir().unwrap();
    let auth = kubernetes_auth(&dir, ROLE);
    std::fs::write(dir.path().join("sa-token"), format!("{JWT}\n")).unwrap();
    (vault, dir, auth)
}

/// Kubernetes auth with `role` and the service-account token file `sa-token` in `dir`.
pub fn kubernetes_auth(dir: &tempfile::TempDir, role: &str) -> VaultAuth {
    VaultAuth::Kubernetes {
        mount: "kubernetes".into(),
        role: role.into(),
        jwt_path: dir.path().join("sa-token"),
    }
}

/// Asks `provider` (cached) until `done` holds, failing after a bounded deadline.
pub async fn poll_until(
    provider: &dyn SecretProvider,
    what: &str,
    mut done: impl FnMut(&Result<String, SecretError>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = provider
            .get(Freshness::Cached)
            .await
            .map(|s| s.expose().to_owned());
        if done(&result) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up waiting for {what}; last answer {:?}",
            result.map(|_| ())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
