//! The Vault provider against the stand-in Vault on loopback.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use afk_secrets::testing::VaultStandIn;
use afk_secrets::{
    FileProvider, Freshness, LiteralProvider, SecretError, SecretProvider, VaultAuth, VaultConfig,
    VaultProvider,
};

const PATH: &str = "afk/t3";
const ROLE: &str = "afk";
const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.service-account.sig";

async fn value(provider: &VaultProvider, freshness: Freshness) -> String {
    provider
        .get(freshness)
        .await
        .expect("a secret")
        .expose()
        .to_owned()
}

fn config(vault: &VaultStandIn, auth: VaultAuth, lifetime: Duration) -> VaultConfig {
    let mut config = VaultConfig::new(vault.url(), "secret", PATH, "token", auth);
    config.cache_lifetime = lifetime;
    config.timeout = Duration::from_secs(2);
    config
}

/// A Vault with the T3 token stored and a file holding a Vault token (what Vault Agent writes).
async fn vault_with_token_file() -> (VaultStandIn, tempfile::TempDir, PathBuf) {
    let vault = VaultStandIn::start().await.unwrap();
    vault.set_secret(PATH, "token", "t3-token-1");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("vault-token");
    std::fs::write(&token_file, vault.issue_token(None)).unwrap();
    (vault, dir, token_file)
}

/// A Vault with the T3 token stored, a Kubernetes role, and the pod's service-account token file.
async fn vault_with_kubernetes(ttl: Duration) -> (VaultStandIn, tempfile::TempDir, VaultAuth) {
    let vault = VaultStandIn::start().await.unwrap();
    vault.set_secret(PATH, "token", "t3-token-1");
    vault.add_kubernetes_role(ROLE, JWT, ttl);
    let dir = tempfile::tempdir().unwrap();
    let jwt_path = dir.path().join("sa-token");
    std::fs::write(&jwt_path, format!("{JWT}\n")).unwrap();
    let auth = VaultAuth::Kubernetes {
        mount: "kubernetes".into(),
        role: ROLE.into(),
        jwt_path,
    };
    (vault, dir, auth)
}

/// Calls `get` until `done` holds, failing after a bounded deadline.
async fn poll_until(
    provider: &VaultProvider,
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

#[tokio::test]
async fn token_auth_reads_the_field_and_caches_it() {
    let (vault, _dir, token_file) = vault_with_token_file().await;
    let auth = VaultAuth::Token(Arc::new(FileProvider::new(&token_file)));
    let provider = VaultProvider::new(config(&vault, auth, Duration::from_secs(300))).unwrap();

    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");
    assert_eq!(
        vault.counts().reads,
        1,
        "the second call is answered from the cache"
    );
}

#[tokio::test]
async fn a_changed_value_is_picked_up_at_once_on_refresh() {
    let (vault, _dir, token_file) = vault_with_token_file().await;
    let auth = VaultAuth::Token(Arc::new(FileProvider::new(&token_file)));
    let provider = VaultProvider::new(config(&vault, auth, Duration::from_secs(300))).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");

    vault.set_secret(PATH, "token", "t3-token-2");
    assert_eq!(
        value(&provider, Freshness::Cached).await,
        "t3-token-1",
        "cached within its lifetime"
    );
    assert_eq!(value(&provider, Freshness::Refresh).await, "t3-token-2");
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-2");
}

#[tokio::test]
async fn a_changed_value_is_picked_up_after_the_cache_lifetime() {
    let (vault, _dir, token_file) = vault_with_token_file().await;
    let auth = VaultAuth::Token(Arc::new(FileProvider::new(&token_file)));
    let provider = VaultProvider::new(config(&vault, auth, Duration::from_millis(500))).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");

    vault.set_secret(PATH, "token", "t3-token-2");
    let set_at = Instant::now();
    assert_eq!(
        value(&provider, Freshness::Cached).await,
        "t3-token-1",
        "cached within its lifetime"
    );
    poll_until(&provider, "the new value", |r| {
        r.as_ref().ok().map(String::as_str) == Some("t3-token-2")
    })
    .await;
    // Re-read at 80% of the lifetime (the bound leaves room for a loaded machine).
    assert!(
        set_at.elapsed() < Duration::from_millis(2000),
        "took {:?}",
        set_at.elapsed()
    );
}

#[tokio::test]
async fn a_rotated_vault_token_file_is_used_when_vault_refuses_the_old_one() {
    let (vault, _dir, token_file) = vault_with_token_file().await;
    let auth = VaultAuth::Token(Arc::new(FileProvider::new(&token_file)));
    let provider = VaultProvider::new(config(&vault, auth, Duration::from_secs(300))).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");

    // Vault Agent rotated the token: the old one is revoked, the file holds the new one.
    let old = std::fs::read_to_string(&token_file).unwrap();
    vault.revoke_token(&old);
    std::fs::write(&token_file, vault.issue_token(None)).unwrap();
    vault.set_secret(PATH, "token", "t3-token-2");
    assert_eq!(value(&provider, Freshness::Refresh).await, "t3-token-2");
}

#[tokio::test]
async fn a_refused_vault_token_is_a_permanent_error_naming_the_secret() {
    let vault = VaultStandIn::start().await.unwrap();
    vault.set_secret(PATH, "token", "t3-token-1");
    let auth = VaultAuth::Token(Arc::new(LiteralProvider::new("hvs.not-a-token")));
    let provider = VaultProvider::new(config(&vault, auth, Duration::from_secs(300))).unwrap();
    let err = provider.get(Freshness::Cached).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("cannot read Vault secret secret/afk/t3 (field token):"),
        "{text}"
    );
    assert!(text.contains("permission denied"), "{text}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_missing_secret_or_field_is_a_clear_error() {
    let (vault, _dir, token_file) = vault_with_token_file().await;
    let auth = VaultAuth::Token(Arc::new(FileProvider::new(&token_file)));
    let mut missing_field = config(&vault, auth.clone(), Duration::from_secs(300));
    missing_field.field = "operate_token".into();
    let err = VaultProvider::new(missing_field)
        .unwrap()
        .get(Freshness::Cached)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("v1/secret/data/afk/t3 has no field operate_token"),
        "{err}"
    );

    let mut missing_path = config(&vault, auth, Duration::from_secs(300));
    missing_path.path = "afk/nothing".into();
    let err = VaultProvider::new(missing_path)
        .unwrap()
        .get(Freshness::Cached)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("Vault has nothing at v1/secret/data/afk/nothing (404"),
        "{err}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn kubernetes_auth_logs_in_with_the_service_account_token() {
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let provider = VaultProvider::new(config(&vault, auth, Duration::from_secs(300))).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");
    vault.set_secret(PATH, "token", "t3-token-2");
    assert_eq!(value(&provider, Freshness::Refresh).await, "t3-token-2");
    assert_eq!(
        vault.counts().logins,
        1,
        "the Vault token is reused while it lives"
    );
}

#[tokio::test]
async fn kubernetes_auth_with_a_wrong_role_or_jwt_says_what_to_check() {
    let (vault, dir, _) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let jwt_path = dir.path().join("sa-token");
    let wrong_role = VaultAuth::Kubernetes {
        mount: "kubernetes".into(),
        role: "nobody".into(),
        jwt_path: jwt_path.clone(),
    };
    let err = VaultProvider::new(config(&vault, wrong_role, Duration::from_secs(300)))
        .unwrap()
        .get(Freshness::Cached)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid role name \"nobody\""), "{err}");

    std::fs::write(&jwt_path, "some-other-jwt").unwrap();
    let err = VaultProvider::new(config(
        &vault,
        VaultAuth::kubernetes(ROLE),
        Duration::from_secs(300),
    ))
    .unwrap()
    .get(Freshness::Cached)
    .await
    .unwrap_err();
    // The default path does not exist on a test machine: the error names it.
    assert!(
        err.to_string()
            .contains("/var/run/secrets/kubernetes.io/serviceaccount/token"),
        "{err}"
    );

    let auth = VaultAuth::Kubernetes {
        mount: "kubernetes".into(),
        role: ROLE.into(),
        jwt_path,
    };
    let err = VaultProvider::new(config(&vault, auth, Duration::from_secs(300)))
        .unwrap()
        .get(Freshness::Cached)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("check that role afk is bound to this pod's service account"),
        "{err}"
    );
}

#[tokio::test]
async fn kubernetes_token_is_renewed_before_it_expires() {
    // Vault counts TTLs in whole seconds: a 3s token is renewed after 2s, a second to spare.
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3)).await;
    let provider = VaultProvider::new(config(&vault, auth, Duration::from_millis(100))).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");

    poll_until(&provider, "two renewals", |r| {
        assert_eq!(
            r.as_ref().ok().map(String::as_str),
            Some("t3-token-1"),
            "{:?}",
            r.as_ref().err()
        );
        vault.counts().renewals >= 2
    })
    .await;
    let counts = vault.counts();
    assert_eq!(counts.logins, 1, "renewed rather than logged in again");
    assert_eq!(counts.refused, 0, "the token was never used after it expired");
}

#[tokio::test]
async fn sealed_vault_is_a_transient_error_and_reads_resume_after_unseal() {
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let provider = VaultProvider::new(config(&vault, auth, Duration::from_secs(300))).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");

    vault.seal();
    let err = provider.get(Freshness::Refresh).await.unwrap_err();
    assert!(err.is_transient());
    assert!(
        err.to_string()
            .contains(&format!("Vault at {} is sealed (503)", vault.url())),
        "{err}"
    );

    vault.unseal();
    vault.set_secret(PATH, "token", "t3-token-2");
    assert_eq!(value(&provider, Freshness::Refresh).await, "t3-token-2");
}

#[tokio::test]
async fn vault_down_is_a_transient_error_and_reads_resume_when_it_is_back() {
    let (mut vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let provider = VaultProvider::new(config(&vault, auth, Duration::from_secs(300))).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");

    vault.go_down().await;
    let err = provider.get(Freshness::Refresh).await.unwrap_err();
    assert!(err.is_transient());
    assert!(
        err.to_string()
            .contains(&format!("cannot reach Vault at {}", vault.url())),
        "{err}"
    );

    vault.come_back().await.unwrap();
    vault.set_secret(PATH, "token", "t3-token-2");
    assert_eq!(value(&provider, Freshness::Refresh).await, "t3-token-2");
}

#[tokio::test]
async fn a_short_outage_during_the_early_re_read_is_invisible() {
    let (mut vault, _dir, token_file) = vault_with_token_file().await;
    let auth = VaultAuth::Token(Arc::new(FileProvider::new(&token_file)));
    let provider = VaultProvider::new(config(&vault, auth, Duration::from_secs(3))).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");
    let read_at = Instant::now();

    vault.go_down().await;
    // Past 80% of the lifetime the provider tries to re-read; Vault is down, the cached value
    // is still within its lifetime and is what callers get.
    let mut answers = 0;
    while read_at.elapsed() < Duration::from_millis(2600) {
        assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");
        answers += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answers > 0);
    poll_until(&provider, "the lifetime to end", |r| r.is_err()).await;
    let err = provider.get(Freshness::Cached).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
}

#[tokio::test]
async fn the_namespace_header_is_sent_when_configured() {
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    vault.require_namespace("team-a");
    let without = VaultProvider::new(config(&vault, auth.clone(), Duration::from_secs(300))).unwrap();
    assert!(without.get(Freshness::Cached).await.is_err());

    let mut with_namespace = config(&vault, auth, Duration::from_secs(300));
    with_namespace.namespace = Some("team-a".into());
    let provider = VaultProvider::new(with_namespace).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");
}

#[tokio::test]
async fn concurrent_callers_share_one_read() {
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let provider = Arc::new(VaultProvider::new(config(&vault, auth, Duration::from_secs(300))).unwrap());
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move {
                provider
                    .get(Freshness::Cached)
                    .await
                    .map(|s| s.expose().to_owned())
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().ok().as_deref(), Some("t3-token-1"));
    }
    let counts = vault.counts();
    assert_eq!((counts.logins, counts.reads), (1, 1));
}

#[tokio::test]
async fn a_revoked_kubernetes_login_is_replaced_by_a_new_login() {
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let provider = VaultProvider::new(config(&vault, auth, Duration::from_secs(300))).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");

    for token in vault.issued_tokens() {
        vault.revoke_token(&token);
    }
    assert_eq!(value(&provider, Freshness::Refresh).await, "t3-token-1");
    assert_eq!(vault.counts().logins, 2);
}

#[tokio::test]
async fn concurrent_refreshes_share_one_read() {
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let provider = Arc::new(VaultProvider::new(config(&vault, auth, Duration::from_secs(300))).unwrap());
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");
    vault.set_secret(PATH, "token", "t3-token-2");

    // Eight requests refused with 401 at the same moment all ask for a fresh value.
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move {
                provider
                    .get(Freshness::Refresh)
                    .await
                    .map(|s| s.expose().to_owned())
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().ok().as_deref(), Some("t3-token-2"));
    }
    assert_eq!(
        vault.counts().reads,
        2,
        "one read at start, one shared by the refreshes"
    );
    // A refresh asked after that read reads again.
    assert_eq!(value(&provider, Freshness::Refresh).await, "t3-token-2");
    assert_eq!(vault.counts().reads, 3);
}
