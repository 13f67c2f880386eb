//! `ProviderSpec`: the `[t3.token]`-style tables in afk's TOML configuration.

use std::path::PathBuf;
use std::time::Duration;

use afk_secrets::testing::VaultStandIn;
use afk_secrets::{
    FailureKind, Freshness, ProviderSpec, SecretProvider, SpecError, VaultAuthSpec, VaultSpec,
};

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

/// The error reading `text` as the table at `t3.token`.
fn table_error(text: &str) -> String {
    let value: toml::Value = toml::from_str(text).expect("valid TOML");
    ProviderSpec::from_toml(&value, "t3.token")
        .expect_err("a refused table")
        .to_string()
}

#[test]
fn errors_name_the_full_key_and_the_form_expected() {
    let k8s = r#"provider = "vault"
addr = "http://v"
path = "p"
"#;
    let cases: &[(&str, &str)] = &[
        (
            "provider = \"command\"\ncommand = [\"x\"]\ncache_lifetime = \"soon\"",
            r#"t3.token.cache_lifetime: expected a duration such as "30s" or "5m", got "soon""#,
        ),
        (
            "provider = \"command\"\ncommand = [\"x\"]\ntimeout = 30",
            r#"t3.token.timeout: expected a duration such as "30s" or "5m", got an integer"#,
        ),
        (
            "provider = \"file\"",
            r#"t3.token.path: missing; give the token file, e.g. path = "/var/run/secrets/t3/token""#,
        ),
        ("provider = \"file\"\npath = \"\"", "t3.token.path: is empty"),
        (
            "provider = \"file\"\npath = \"/t\"\ncache = \"5m\"",
            "t3.token.cache: unknown key; a file provider takes path",
        ),
        (
            "provider = \"keychain\"",
            r#"t3.token.provider: unknown provider "keychain"; expected one of "env", "file", "command", "vault", "literal""#,
        ),
        (
            "path = \"/t\"",
            r#"t3.token.provider: missing; expected one of "env", "file", "command", "vault", "literal""#,
        ),
        ("provider = \"env\"\nvar = 12", "t3.token.var: expected a string, got an integer"),
        (
            "provider = \"command\"\ncommand = \"gh auth token\"",
            r#"t3.token.command: expected an array of strings, got a string; give the program and its arguments, e.g. command = ["gh", "auth", "token"]"#,
        ),
        (
            "provider = \"command\"\ncommand = [\"gh\", 1]",
            "t3.token.command[1]: expected a string, got an integer",
        ),
        (
            "provider = \"command\"\ncommand = [\"a\", \"b\"]\nshell = true",
            r#"t3.token.command: has more than one string; with shell = true, give one script, e.g. command = ["pass show t3 | head -1"]"#,
        ),
        (
            "provider = \"command\"\ncommand = [\"x\"]\nshell = \"yes\"",
            "t3.token.shell: expected true or false, got a string",
        ),
        (
            &format!("{k8s}auth = {{ method = \"kubernetes\" }}"),
            r#"t3.token.auth.role: missing; Kubernetes auth needs the Vault role bound to afk's service account, e.g. auth = { method = "kubernetes", role = "afk" }"#,
        ),
        (
            &format!("{k8s}auth = {{ method = \"tokn\" }}"),
            r#"t3.token.auth.method: unknown method "tokn"; expected one of "token", "kubernetes""#,
        ),
        (
            &format!("{k8s}auth = {{ method = \"kubernetes\", rol = \"r\" }}"),
            "t3.token.auth.rol: unknown key; Kubernetes auth takes method, role, mount, jwt_path",
        ),
        (
            &format!("{k8s}auth = {{ method = \"token\", token = {{ provider = \"file\" }} }}"),
            r#"t3.token.auth.token.path: missing; give the token file, e.g. path = "/var/run/secrets/t3/token""#,
        ),
        (
            &format!("{k8s}auth = \"kubernetes\""),
            r#"t3.token.auth: expected a table such as { method = "kubernetes", role = "afk" }, got a string; the value is not shown"#,
        ),
        (
            "provider = \"vault\"\naddr = \"http://v\"\nauth = { method = \"kubernetes\", role = \"r\" }",
            r#"t3.token.path: missing; give the secret's path inside the KV mount, e.g. path = "afk/t3""#,
        ),
        (
            &format!("{k8s}typo = 1\nauth = {{ method = \"kubernetes\", role = \"r\" }}"),
            "t3.token.typo: unknown key; a vault provider takes addr, namespace, mount, path, field, auth, cache_lifetime, timeout, ca_cert",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(table_error(text), *expected, "{text}");
    }
}

#[test]
fn a_token_written_in_place_of_a_table_is_not_shown() {
    let value = toml::Value::String("ghp_written-straight-in".into());
    let err = ProviderSpec::from_toml(&value, "github.token").unwrap_err();
    assert_eq!(err.key(), "github.token");
    assert!(!err.to_string().contains("ghp_written"), "{err}");
    assert!(
        err.problem().starts_with("expected a provider table such as"),
        "{err}"
    );
}

#[test]
fn a_table_read_through_serde_names_the_key_inside_it() {
    let err = parse("provider = \"command\"\ncommand = [\"x\"]\ntimeout = \"soon\"").unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"timeout: expected a duration such as "30s" or "5m", got "soon""#),
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
    assert!(
        err.to_string()
            .contains("value: expected a string, got an integer"),
        "{err}"
    );
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

/// Asks `provider` three times; each answer must be an error of `kind`.
async fn assert_fails_thrice(provider: &dyn SecretProvider, kind: FailureKind) {
    for _ in 0..3 {
        let err = provider.get(Freshness::Cached).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
    }
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
    assert_fails_thrice(vault.as_ref(), FailureKind::LoginRefused).await;
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
    assert_fails_thrice(command.as_ref(), FailureKind::CommandFailed).await;
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1);
}
