//! `ProviderSpec`: the `[t3.token]`-style tables in afk's TOML configuration.

use std::path::PathBuf;
use std::time::Duration;

use afk_secrets::testing::VaultStandIn;
use afk_secrets::{FailureKind, Freshness, ProviderSpec, SpecError, VaultAuthSpec, VaultSpec};

fn parse(text: &str) -> Result<ProviderSpec, toml::de::Error> {
    toml::from_str(text)
}

#[test]
fn file_env_and_command_tables_parse() {
    assert_eq!(
        parse("provider = \"file\"\npath = \"/var/run/secrets/t3/token\"").unwrap(),
        ProviderSpec::File {
            path: PathBuf::from("/var/run/secrets/t3/token")
        }
    );
    assert_eq!(
        parse("provider = \"env\"\nvar = \"GITHUB_TOKEN\"").unwrap(),
        ProviderSpec::Env {
            var: "GITHUB_TOKEN".into()
        }
    );
    assert_eq!(
        parse("provider = \"command\"\ncommand = [\"gh\", \"auth\", \"token\"]").unwrap(),
        ProviderSpec::Command {
            command: vec!["gh".into(), "auth".into(), "token".into()],
            shell: false,
            timeout: Duration::from_secs(10),
            cache_lifetime: None,
        }
    );
    assert_eq!(
        parse(concat!(
            "provider = \"command\"\ncommand = [\"pass show t3\"]\n",
            "shell = true\ntimeout = \"2s\"\ncache_lifetime = \"5m\""
        ))
        .unwrap(),
        ProviderSpec::Command {
            command: vec!["pass show t3".into()],
            shell: true,
            timeout: Duration::from_secs(2),
            cache_lifetime: Some(Duration::from_secs(300)),
        }
    );
}

#[test]
fn vault_table_with_kubernetes_auth_takes_defaults() {
    let spec = parse(
        r#"
        provider = "vault"
        addr = "https://vault:8200"
        mount = "secret"
        path = "afk/t3"
        field = "token"
        auth = { method = "kubernetes", role = "afk" }
        "#,
    )
    .unwrap();
    assert_eq!(
        spec,
        ProviderSpec::Vault(VaultSpec {
            addr: "https://vault:8200".into(),
            namespace: None,
            mount: "secret".into(),
            path: "afk/t3".into(),
            field: "token".into(),
            auth: VaultAuthSpec::Kubernetes {
                role: "afk".into(),
                mount: "kubernetes".into(),
                jwt_path: PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token"),
            },
            cache_lifetime: Duration::from_secs(300),
            timeout: Duration::from_secs(10),
            ca_cert: None,
        })
    );
}

#[test]
fn vault_table_with_token_auth_nests_a_provider() {
    let spec = parse(
        r#"
        provider = "vault"
        addr = "http://127.0.0.1:8200"
        path = "afk/t3"
        namespace = "team-a"
        cache_lifetime = "1m"
        auth = { method = "token", token = { provider = "file", path = "/vault/secrets/token" } }
        "#,
    )
    .unwrap();
    let ProviderSpec::Vault(vault) = spec else {
        panic!("not a vault spec: {spec:?}")
    };
    assert_eq!(vault.mount, "secret");
    assert_eq!(vault.field, "token");
    assert_eq!(vault.namespace.as_deref(), Some("team-a"));
    assert_eq!(vault.cache_lifetime, Duration::from_secs(60));
    assert_eq!(
        vault.auth,
        VaultAuthSpec::Token {
            token: Box::new(ProviderSpec::File {
                path: PathBuf::from("/vault/secrets/token")
            })
        }
    );
}

#[test]
fn unknown_keys_and_providers_are_refused_by_name() {
    let err = parse("provider = \"file\"\npath = \"/t\"\ncache = \"5m\"").unwrap_err();
    assert!(err.to_string().contains("unknown field `cache`"), "{err}");
    let err = parse(concat!(
        "provider = \"vault\"\naddr = \"http://v\"\npath = \"p\"\ntypo = 1\n",
        "auth = { method = \"kubernetes\", role = \"r\" }"
    ))
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `typo`"), "{err}");
    let err = parse(concat!(
        "provider = \"vault\"\naddr = \"http://v\"\npath = \"p\"\n",
        "auth = { method = \"kubernetes\", rol = \"r\" }"
    ))
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `rol`"), "{err}");
    let err = parse("provider = \"keychain\"").unwrap_err();
    assert!(err.to_string().contains("unknown variant `keychain`"), "{err}");
    let err = parse("provider = \"command\"\ncommand = [\"x\"]\ntimeout = \"soon\"").unwrap_err();
    assert!(
        err.to_string()
            .contains("\"soon\" is not a duration like 200ms, 10s or 5m"),
        "{err}"
    );
}

#[test]
fn a_literal_value_never_shows_in_debug_or_parse_errors() {
    let spec = parse("provider = \"literal\"\nvalue = \"lit-secret-value\"").unwrap();
    assert!(!format!("{spec:?}").contains("lit-secret-value"), "{spec:?}");
    assert_eq!(spec.to_string(), "literal");
    let err = parse("provider = \"literal\"\nvalue = 987654321").unwrap_err();
    assert!(!err.to_string().contains("987654321"), "{err}");
    assert!(err.to_string().contains("`value` must be a string"), "{err}");
}

#[test]
fn build_refuses_unusable_settings() {
    let command = |command: &[&str], shell: bool| ProviderSpec::Command {
        command: command.iter().map(|s| s.to_string()).collect(),
        shell,
        timeout: Duration::from_secs(1),
        cache_lifetime: None,
    };
    assert!(matches!(
        command(&[], false).build(),
        Err(SpecError::EmptyCommand)
    ));
    assert!(matches!(
        command(&["a", "b"], true).build(),
        Err(SpecError::ShellNeedsOneScript)
    ));

    let vault = |addr: &str| {
        parse(&format!(
            "provider = \"vault\"\naddr = \"{addr}\"\npath = \"afk/t3\"\n\
             auth = {{ method = \"kubernetes\", role = \"afk\" }}"
        ))
        .unwrap()
    };
    let err = vault("vault:8200").build().unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Vault address \"vault:8200\" is not usable"),
        "{err}"
    );
    let err = vault("not a url").build().unwrap_err();
    assert!(matches!(err, SpecError::VaultAddr { .. }), "{err}");
    assert!(vault("https://vault.example:8200").build().is_ok());
}

#[tokio::test]
async fn built_providers_answer() {
    std::env::set_var("AFK_SECRETS_SPEC_TEST_TOKEN", "env-token");
    let env = parse("provider = \"env\"\nvar = \"AFK_SECRETS_SPEC_TEST_TOKEN\"")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(env.get(Freshness::Cached).await.unwrap().expose(), "env-token");

    let command = parse("provider = \"command\"\ncommand = [\"echo\", \"cmd-token\"]")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        command.get(Freshness::Cached).await.unwrap().expose(),
        "cmd-token"
    );

    let vault_server = VaultStandIn::start().await.unwrap();
    vault_server.set_secret("afk/github", "pat", "vault-token-value");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("vault-token");
    std::fs::write(&token_file, vault_server.issue_token(None)).unwrap();
    let vault = parse(&format!(
        r#"
        provider = "vault"
        addr = "{}"
        path = "afk/github"
        field = "pat"
        auth = {{ method = "token", token = {{ provider = "file", path = "{}" }} }}
        "#,
        vault_server.url(),
        token_file.display()
    ))
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(
        vault.get(Freshness::Cached).await.unwrap().expose(),
        "vault-token-value"
    );
}

#[test]
fn display_names_the_source() {
    let file = parse("provider = \"file\"\npath = \"/run/t3/token\"").unwrap();
    assert_eq!(file.to_string(), "file /run/t3/token");
    let vault = parse(
        "provider = \"vault\"\naddr = \"https://vault:8200\"\npath = \"afk/t3\"\n\
         auth = { method = \"kubernetes\", role = \"afk\" }",
    )
    .unwrap();
    assert_eq!(
        vault.to_string(),
        "vault secret/afk/t3 (field token) at https://vault:8200"
    );
    let command = parse("provider = \"command\"\ncommand = [\"gh\", \"auth\", \"token\"]").unwrap();
    assert_eq!(command.to_string(), "command gh");
}

#[tokio::test]
async fn built_vault_and_command_providers_back_off_while_a_person_must_act() {
    let vault_server = VaultStandIn::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwt = dir.path().join("sa-token");
    std::fs::write(&jwt, "a-service-account-jwt").unwrap();
    let vault = parse(&format!(
        "provider = \"vault\"\naddr = \"{}\"\npath = \"afk/t3\"\n\
         auth = {{ method = \"kubernetes\", role = \"nobody\", jwt_path = \"{}\" }}",
        vault_server.url(),
        jwt.display()
    ))
    .unwrap()
    .build()
    .unwrap();
    for _ in 0..3 {
        let err = vault.get(Freshness::Cached).await.unwrap_err();
        assert_eq!(err.kind(), FailureKind::LoginRefused, "{err}");
    }
    assert_eq!(
        vault_server.counts().login_attempts,
        1,
        "a refused role is not retried at every request"
    );

    let runs = dir.path().join("runs");
    let command = parse(&format!(
        "provider = \"command\"\nshell = true\ncommand = [\"echo run >> '{}'; exit 1\"]",
        runs.display()
    ))
    .unwrap()
    .build()
    .unwrap();
    for _ in 0..3 {
        let err = command.get(Freshness::Cached).await.unwrap_err();
        assert_eq!(err.kind(), FailureKind::CommandFailed, "{err}");
    }
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1);
}
