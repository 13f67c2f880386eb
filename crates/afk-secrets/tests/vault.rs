//! The Vault provider against the stand-in Vault on loopback.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use afk_secrets::testing::{ManualClock, INVALID_TOKEN_ERROR};
use afk_secrets::{
    BackoffProvider, FailureKind, FileProvider, Freshness, LiteralProvider, SecretProvider, VaultAuth,
    VaultProvider,
};
use support::{
    config, error, kubernetes_auth, poll_until, value, vault_provider, vault_with_kubernetes,
    vault_with_token_file, PATH, ROLE,
};

const LONG: Duration = Duration::from_secs(300);

#[tokio::test]
async fn token_auth_reads_the_field_and_caches_it() {
    let (vault, _dir, token_file) = vault_with_token_file().await;
    let auth = VaultAuth::Token(Arc::new(FileProvider::new(&token_file)));
    let provider = vault_provider(&vault, auth, LONG);

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
    let provider = vault_provider(&vault, auth, LONG);
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
    let provider = vault_provider(&vault, auth, Duration::from_millis(500));
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
    let provider = vault_provider(&vault, auth, LONG);
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");

    // Vault Agent rotated the token: the old one is revoked, the file holds the new one.
    let old = std::fs::read_to_string(&token_file).unwrap();
    vault.revoke_token(&old);
    std::fs::write(&token_file, vault.issue_token(None)).unwrap();
    vault.set_secret(PATH, "token", "t3-token-2");
    assert_eq!(value(&provider, Freshness::Refresh).await, "t3-token-2");
}

#[tokio::test]
async fn an_invalid_vault_token_is_told_apart_from_a_policy_that_denies_the_path() {
    let (vault, _dir, token_file) = vault_with_token_file().await;

    // Real Vault: an unknown, expired or revoked token gets "permission denied" *and* "invalid token".
    let auth = VaultAuth::Token(Arc::new(LiteralProvider::new("hvs.not-a-token")));
    let err = error(&vault_provider(&vault, auth, LONG), Freshness::Cached).await;
    assert_eq!(err.kind(), FailureKind::InvalidToken, "{err}");
    assert!(err.needs_person());
    assert_eq!(
        err.to_string(),
        format!(
            "cannot read Vault secret secret/afk/t3 (field token) at {}: Vault does not accept the \
             Vault token (403): permission denied; invalid token; a person must give afk a valid \
             Vault token (it is invalid, expired or revoked)",
            vault.url()
        )
    );
    assert!(!err.to_string().contains("policy"), "{err}");
    // The multi-line text Vault sent is kept whole for a log field.
    assert_eq!(err.detail(), Some(INVALID_TOKEN_ERROR.trim()));

    // A live token whose policy does not allow the path gets "permission denied" alone.
    vault.deny_reads(PATH);
    let auth = VaultAuth::Token(Arc::new(FileProvider::new(&token_file)));
    let err = error(&vault_provider(&vault, auth, LONG), Freshness::Cached).await;
    assert_eq!(err.kind(), FailureKind::PermissionDenied, "{err}");
    assert!(err.needs_person());
    assert_eq!(
        err.reason(),
        "Vault denied reading v1/secret/data/afk/t3 (403): permission denied"
    );
    assert_eq!(
        err.action(),
        Some("a person must fix the Vault policy: afk's token needs `read` on secret/data/afk/t3")
    );
    assert!(!err.to_string().contains('\n'), "{err}");
}

#[tokio::test]
async fn a_missing_secret_or_field_is_a_clear_error() {
    let (vault, _dir, token_file) = vault_with_token_file().await;
    let auth = VaultAuth::Token(Arc::new(FileProvider::new(&token_file)));
    let mut missing_field = config(&vault, auth.clone(), LONG);
    missing_field.field = "operate_token".into();
    let err = error(&VaultProvider::new(missing_field).unwrap(), Freshness::Cached).await;
    assert_eq!(err.kind(), FailureKind::Missing);
    assert_eq!(err.reason(), "v1/secret/data/afk/t3 has no field operate_token");
    assert_eq!(err.action(), Some("its fields are: token; fix `field`"));

    let mut missing_path = config(&vault, auth, LONG);
    missing_path.path = "afk/nothing".into();
    let err = error(&VaultProvider::new(missing_path).unwrap(), Freshness::Cached).await;
    assert_eq!(err.kind(), FailureKind::Missing);
    assert!(err.needs_person());
    assert_eq!(
        err.reason(),
        "Vault has nothing at v1/secret/data/afk/nothing (404)"
    );
}

#[tokio::test]
async fn kubernetes_auth_logs_in_with_the_service_account_token() {
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let provider = vault_provider(&vault, auth, LONG);
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
    let err = error(
        &vault_provider(&vault, kubernetes_auth(&dir, "nobody"), LONG),
        Freshness::Cached,
    )
    .await;
    assert_eq!(err.kind(), FailureKind::LoginRefused);
    assert_eq!(
        err.reason(),
        "Vault refused the Kubernetes login to role nobody at auth/kubernetes (400): invalid role name \"nobody\""
    );
    assert_eq!(
        err.action(),
        Some("a person must create role nobody in Vault's auth/kubernetes or fix `auth.role`")
    );

    // The default path does not exist on a test machine: the error names it.
    let err = error(
        &vault_provider(&vault, VaultAuth::kubernetes(ROLE), LONG),
        Freshness::Cached,
    )
    .await;
    assert_eq!(err.kind(), FailureKind::Missing);
    assert!(
        err.reason().starts_with(
            "cannot read the service-account token /var/run/secrets/kubernetes.io/serviceaccount/token"
        ),
        "{err}"
    );

    std::fs::write(dir.path().join("sa-token"), "some-other-jwt").unwrap();
    let err = error(
        &vault_provider(&vault, kubernetes_auth(&dir, ROLE), LONG),
        Freshness::Cached,
    )
    .await;
    assert_eq!(err.kind(), FailureKind::LoginRefused);
    assert_eq!(
        err.action(),
        Some("check that role afk is bound to this pod's service account and namespace")
    );
}

#[tokio::test]
async fn kubernetes_token_is_renewed_before_it_expires() {
    // Vault counts TTLs in whole seconds: a 3s token is renewed after 2s, a second to spare.
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3)).await;
    let provider = vault_provider(&vault, auth, Duration::from_millis(100));
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

/// A way for Vault to be out of service for a while.
#[derive(Debug, Clone, Copy)]
enum Outage {
    Sealed,
    Down,
    /// 500 with a multi-line error text.
    Failing,
}

#[tokio::test]
async fn outages_are_transient_errors_and_reads_resume_after_them() {
    for outage in [Outage::Sealed, Outage::Down, Outage::Failing] {
        let (mut vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
        let provider = vault_provider(&vault, auth, LONG);
        assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");

        let (kind, reason) = match outage {
            Outage::Sealed => {
                vault.seal();
                (
                    FailureKind::Sealed,
                    "Vault is sealed (503); it answers again once unsealed",
                )
            }
            Outage::Down => {
                vault.go_down().await;
                (FailureKind::Unreachable, "cannot reach Vault: ")
            }
            Outage::Failing => {
                vault.fail_with(500, "internal error\nstorage: context deadline exceeded\n");
                (
                    FailureKind::Unavailable,
                    "Vault is unavailable (500): internal error",
                )
            }
        };
        let err = error(&provider, Freshness::Refresh).await;
        assert_eq!(err.kind(), kind, "{outage:?}: {err}");
        assert!(err.is_transient() && !err.needs_person(), "{outage:?}");
        assert!(err.reason().starts_with(reason), "{outage:?}: {err}");
        assert!(
            err.source_name().ends_with(&format!("at {}", vault.url())),
            "{err}"
        );
        assert!(!err.to_string().contains('\n'), "{outage:?}: {err}");
        if let Outage::Failing = outage {
            assert_eq!(
                err.detail(),
                Some("internal error\nstorage: context deadline exceeded")
            );
        }

        vault.unseal();
        vault.clear_fault();
        vault.come_back().await.unwrap();
        vault.set_secret(PATH, "token", "t3-token-2");
        assert_eq!(
            value(&provider, Freshness::Refresh).await,
            "t3-token-2",
            "{outage:?}"
        );
    }
}

#[tokio::test]
async fn a_short_outage_during_the_early_re_read_is_invisible() {
    let (mut vault, _dir, token_file) = vault_with_token_file().await;
    let auth = VaultAuth::Token(Arc::new(FileProvider::new(&token_file)));
    let provider = vault_provider(&vault, auth, Duration::from_secs(3));
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
    let without = vault_provider(&vault, auth.clone(), LONG);
    assert!(without.get(Freshness::Cached).await.is_err());

    let mut with_namespace = config(&vault, auth, LONG);
    with_namespace.namespace = Some("team-a".into());
    let provider = VaultProvider::new(with_namespace).unwrap();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");
}

/// What `n` callers asking `provider` at the same moment got.
async fn ask_at_once(provider: &Arc<VaultProvider>, n: usize, freshness: Freshness) -> Vec<Option<String>> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let provider = provider.clone();
            tokio::spawn(async move { provider.get(freshness).await.ok().map(|s| s.expose().to_owned()) })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for call in calls {
        answers.push(call.await.expect("the call ran"));
    }
    answers
}

#[tokio::test]
async fn concurrent_callers_share_one_read() {
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let provider = Arc::new(vault_provider(&vault, auth, LONG));
    for answer in ask_at_once(&provider, 8, Freshness::Cached).await {
        assert_eq!(answer.as_deref(), Some("t3-token-1"));
    }
    let counts = vault.counts();
    assert_eq!((counts.logins, counts.reads), (1, 1));
}

#[tokio::test]
async fn a_revoked_kubernetes_login_is_replaced_by_a_new_login() {
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let provider = vault_provider(&vault, auth, LONG);
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
    let provider = Arc::new(vault_provider(&vault, auth, LONG));
    assert_eq!(value(provider.as_ref(), Freshness::Cached).await, "t3-token-1");
    vault.set_secret(PATH, "token", "t3-token-2");

    // Eight requests refused with 401 at the same moment all ask for a fresh value.
    for answer in ask_at_once(&provider, 8, Freshness::Refresh).await {
        assert_eq!(answer.as_deref(), Some("t3-token-2"));
    }
    assert_eq!(
        vault.counts().reads,
        2,
        "one read at start, one shared by the refreshes"
    );
    // A refresh asked after that read reads again.
    assert_eq!(value(provider.as_ref(), Freshness::Refresh).await, "t3-token-2");
    assert_eq!(vault.counts().reads, 3);
}

#[tokio::test]
async fn a_failure_that_needs_a_person_backs_off_and_a_success_resets_it() {
    let (vault, dir, _) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let clock = ManualClock::new();
    let inner = Arc::new(vault_provider(&vault, kubernetes_auth(&dir, "nobody"), LONG));
    let provider = BackoffProvider::new(inner)
        .with_limits(Duration::from_secs(5), Duration::from_secs(60))
        .with_clock(clock.clone());

    // A wrong role: one login, then the same error without asking Vault, for either freshness.
    let first = error(&provider, Freshness::Cached).await;
    assert_eq!(first.kind(), FailureKind::LoginRefused);
    for freshness in [Freshness::Cached, Freshness::Refresh, Freshness::Cached] {
        assert_eq!(error(&provider, freshness).await, first);
    }
    assert_eq!(vault.counts().login_attempts, 1);

    // After 5s Vault is asked again; refused again, the wait doubles to 10s.
    clock.advance(Duration::from_secs(5));
    error(&provider, Freshness::Cached).await;
    assert_eq!(vault.counts().login_attempts, 2);
    clock.advance(Duration::from_secs(9));
    error(&provider, Freshness::Cached).await;
    assert_eq!(vault.counts().login_attempts, 2);

    // A person creates the role: at the end of the wait the login succeeds.
    vault.add_kubernetes_role("nobody", support::JWT, Duration::from_secs(3600));
    clock.advance(Duration::from_secs(1));
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");
    assert_eq!(vault.counts().login_attempts, 3);

    // The success reset the back-off: a new refusal waits 5s again, not 20s.
    vault.deny_reads(PATH);
    assert_eq!(
        error(&provider, Freshness::Refresh).await.kind(),
        FailureKind::PermissionDenied
    );
    let requests = vault.counts().requests;
    clock.advance(Duration::from_secs(4));
    error(&provider, Freshness::Cached).await;
    assert_eq!(vault.counts().requests, requests, "still waiting");
    clock.advance(Duration::from_secs(1));
    vault.allow_reads(PATH);
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");
}

#[tokio::test]
async fn a_failure_that_will_pass_is_retried_at_every_request() {
    let (vault, _dir, auth) = vault_with_kubernetes(Duration::from_secs(3600)).await;
    let provider =
        BackoffProvider::new(Arc::new(vault_provider(&vault, auth, LONG))).with_clock(ManualClock::new());
    vault.seal();
    for attempt in 1..=3 {
        assert_eq!(
            error(&provider, Freshness::Cached).await.kind(),
            FailureKind::Sealed
        );
        assert_eq!(vault.counts().sealed, attempt);
    }
    vault.unseal();
    assert_eq!(value(&provider, Freshness::Cached).await, "t3-token-1");
}
