//! No secret value reaches a log line or an error: every provider runs, on its good and bad
//! paths, with tracing at TRACE (every crate, including reqwest and hyper) written to a buffer,
//! and neither the buffer nor any error's Display or Debug may contain a value.

use std::sync::Arc;
use std::time::{Duration, Instant};

use afk_secrets::testing::{LogCapture, VaultStandIn};
use afk_secrets::{
    CommandProvider, EnvProvider, FileProvider, Freshness, LiteralProvider, ProviderSpec, SecretError,
    SecretProvider, VaultAuth, VaultConfig, VaultProvider,
};

/// Everything a scenario observed: successful values are checked by the scenario, errors are
/// kept for the search.
#[derive(Default)]
struct Seen {
    errors: Vec<String>,
}

impl Seen {
    async fn get(&mut self, provider: &dyn SecretProvider, freshness: Freshness) -> Option<String> {
        match provider.get(freshness).await {
            Ok(secret) => {
                self.errors.push(format!("{secret} {secret:?}"));
                Some(secret.expose().to_owned())
            }
            Err(error) => {
                self.record(&error);
                None
            }
        }
    }

    fn record(&mut self, error: &SecretError) {
        self.errors.push(format!(
            "{error} | {error:?} | {} | {}",
            error.reason(),
            error.detail().unwrap_or_default()
        ));
    }
}

const T3_TOKEN: &str = "t3-operate-SECRET-a1b2c3";
const T3_TOKEN_2: &str = "t3-operate-SECRET-d4e5f6";
const GITHUB_TOKEN: &str = "ghp_SECRETSECRETSECRET";
const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.SECRET-service-account.sig";
const WRONG_JWT: &str = "eyJhbGciOiJSUzI1NiJ9.SECRET-wrong-account.sig";
const BAD_VAULT_TOKEN: &str = "hvs.SECRET-not-issued";
const LITERAL: &str = "literal-SECRET-value";

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_an_error() {
    let buffer = LogCapture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(buffer.clone())
        .with_ansi(false)
        .init();
    let mut seen = Seen::default();
    let dir = tempfile::tempdir().unwrap();

    // Environment.
    std::env::set_var("AFK_HYGIENE_GITHUB_TOKEN", GITHUB_TOKEN);
    let env = EnvProvider::new("AFK_HYGIENE_GITHUB_TOKEN");
    assert_eq!(
        seen.get(&env, Freshness::Cached).await.as_deref(),
        Some(GITHUB_TOKEN)
    );
    assert!(seen
        .get(&EnvProvider::new("AFK_HYGIENE_UNSET"), Freshness::Cached)
        .await
        .is_none());

    // File.
    let token_file = dir.path().join("t3-token");
    std::fs::write(&token_file, T3_TOKEN).unwrap();
    assert_eq!(
        seen.get(&FileProvider::new(&token_file), Freshness::Cached)
            .await
            .as_deref(),
        Some(T3_TOKEN)
    );
    assert!(seen
        .get(&FileProvider::new(dir.path().join("missing")), Freshness::Cached)
        .await
        .is_none());

    // Command: success, failure with the token on stdout, timeout.
    let ok = CommandProvider::new("echo", [T3_TOKEN]).with_cache_lifetime(Duration::from_secs(60));
    assert_eq!(seen.get(&ok, Freshness::Cached).await.as_deref(), Some(T3_TOKEN));
    assert_eq!(seen.get(&ok, Freshness::Refresh).await.as_deref(), Some(T3_TOKEN));
    let failing = CommandProvider::shell(format!("echo {T3_TOKEN}; echo 'no session' >&2; exit 1"));
    assert!(seen.get(&failing, Freshness::Cached).await.is_none());
    let slow =
        CommandProvider::shell(format!("echo {T3_TOKEN}; sleep 5")).with_timeout(Duration::from_millis(200));
    assert!(seen.get(&slow, Freshness::Cached).await.is_none());

    // Literal, through the configuration (its build logs a warning).
    let spec: ProviderSpec =
        toml::from_str(&format!("provider = \"literal\"\nvalue = \"{LITERAL}\"")).unwrap();
    let literal = spec.build().unwrap();
    assert_eq!(
        seen.get(literal.as_ref(), Freshness::Cached).await.as_deref(),
        Some(LITERAL)
    );
    seen.errors.push(format!("{spec:?} {literal:?}"));

    // Vault with token auth: read, refresh, a refused token, a missing field, sealed, down.
    let mut vault = VaultStandIn::start().await.unwrap();
    vault.set_secret("afk/t3", "token", T3_TOKEN);
    vault.add_kubernetes_role("afk", JWT, Duration::from_secs(2));
    let vault_token_file = dir.path().join("vault-token");
    std::fs::write(&vault_token_file, vault.issue_token(None)).unwrap();
    let config = |auth: VaultAuth, lifetime: Duration| {
        let mut config = VaultConfig::new(vault.url(), "secret", "afk/t3", "token", auth);
        config.cache_lifetime = lifetime;
        config.timeout = Duration::from_secs(2);
        config
    };
    let by_token = VaultProvider::new(config(
        VaultAuth::Token(Arc::new(FileProvider::new(&vault_token_file))),
        Duration::from_secs(60),
    ))
    .unwrap();
    assert_eq!(
        seen.get(&by_token, Freshness::Cached).await.as_deref(),
        Some(T3_TOKEN)
    );
    vault.set_secret("afk/t3", "token", T3_TOKEN_2);
    assert_eq!(
        seen.get(&by_token, Freshness::Refresh).await.as_deref(),
        Some(T3_TOKEN_2)
    );
    seen.errors.push(format!("{by_token:?}"));
    let refused = VaultProvider::new(config(
        VaultAuth::Token(Arc::new(LiteralProvider::new(BAD_VAULT_TOKEN))),
        Duration::from_secs(60),
    ))
    .unwrap();
    assert!(seen.get(&refused, Freshness::Cached).await.is_none());
    let mut wrong_field = config(
        VaultAuth::Token(Arc::new(FileProvider::new(&vault_token_file))),
        Duration::from_secs(60),
    );
    wrong_field.field = "nope".into();
    assert!(seen
        .get(&VaultProvider::new(wrong_field).unwrap(), Freshness::Cached)
        .await
        .is_none());

    // Vault with Kubernetes auth: a wrong JWT, then the right one with renewals of a 2s token.
    let jwt_path = dir.path().join("sa-token");
    std::fs::write(&jwt_path, WRONG_JWT).unwrap();
    let k8s_auth = VaultAuth::Kubernetes {
        mount: "kubernetes".into(),
        role: "afk".into(),
        jwt_path: jwt_path.clone(),
    };
    let by_k8s = VaultProvider::new(config(k8s_auth, Duration::from_millis(100))).unwrap();
    assert!(seen.get(&by_k8s, Freshness::Cached).await.is_none());
    std::fs::write(&jwt_path, JWT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while vault.counts().renewals < 1 {
        assert_eq!(
            seen.get(&by_k8s, Freshness::Cached).await.as_deref(),
            Some(T3_TOKEN_2)
        );
        assert!(
            Instant::now() < deadline,
            "the Kubernetes token was never renewed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    vault.seal();
    assert!(seen.get(&by_k8s, Freshness::Refresh).await.is_none());
    vault.unseal();
    vault.go_down().await;
    assert!(seen.get(&by_k8s, Freshness::Refresh).await.is_none());
    vault.come_back().await.unwrap();
    assert_eq!(
        seen.get(&by_k8s, Freshness::Refresh).await.as_deref(),
        Some(T3_TOKEN_2)
    );

    let mut secrets: Vec<String> = [
        T3_TOKEN,
        T3_TOKEN_2,
        GITHUB_TOKEN,
        JWT,
        WRONG_JWT,
        BAD_VAULT_TOKEN,
        LITERAL,
    ]
    .map(String::from)
    .into();
    secrets.extend(vault.issued_tokens());
    assert!(
        vault.issued_tokens().len() >= 2,
        "a token file token and at least one login"
    );
    vault.stop().await;

    let log = buffer.text();
    // The scenario did log: the search below is not vacuous.
    for expected in [
        "logged in to Vault",
        "renewed the Vault token",
        "a literal token in the configuration",
    ] {
        assert!(log.contains(expected), "no {expected:?} in the log:\n{log}");
    }
    assert!(log.contains("TRACE"), "no TRACE lines were captured");
    assert!(seen.errors.len() > 15, "{} errors seen", seen.errors.len());
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a secret is in the log:\n{log}");
        for error in &seen.errors {
            assert!(
                !error.contains(secret.as_str()),
                "a secret is in an error: {error}"
            );
        }
    }
}
