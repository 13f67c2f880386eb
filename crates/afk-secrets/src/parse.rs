//! Reading a provider table (`[t3.token]`) from TOML with errors that name the full key and the
//! form expected: `t3.token.cache_lifetime: expected a duration such as "30s" or "5m", got
//! "soon"`. Hand-written rather than derived because serde's derived errors for tagged enums
//! lose the key (`key t3.token: …`) and quote values, which for a token must not be shown.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Value;

use crate::vault::{
    DEFAULT_KUBERNETES_AUTH_MOUNT, DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH, DEFAULT_VAULT_CACHE_LIFETIME,
    DEFAULT_VAULT_TIMEOUT,
};
use crate::{ProviderSpec, Secret, VaultAuthSpec, VaultSpec, DEFAULT_COMMAND_TIMEOUT};

/// A provider table that cannot be read. `Display` is `KEY: PROBLEM` (just the problem when the
/// table itself is at fault and was read without a key); never shows a secret value: only the
/// values of `provider`, `method` and durations are quoted back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match key.is_empty() { true => problem.clone(), false => format!("{key}: {problem}") })]
pub struct ProviderTableError {
    key: String,
    problem: String,
}

impl ProviderTableError {
    /// The full key at fault, e.g. `t3.token.auth.role`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong and the form expected, e.g. `missing; Kubernetes auth needs …`.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

/// The providers `provider` may name.
const PROVIDERS: &str = r#""env", "file", "command", "vault", "literal""#;

/// The methods `auth.method` may name.
const METHODS: &str = r#""token", "kubernetes""#;

const DURATION_FORM: &str = r#"a duration such as "30s" or "5m""#;

impl ProviderSpec {
    /// Reads the provider table `value` found at `key` (e.g. `t3.token`; empty for a table read
    /// on its own). Errors name the full key (`t3.token.cache_lifetime`) and the form expected.
    /// Unknown keys are errors.
    pub fn from_toml(value: &Value, key: &str) -> Result<Self, ProviderTableError> {
        let table = Table::new(
            value,
            key.to_owned(),
            r#"a provider table such as { provider = "file", path = "..." } (see docs/secrets.md)"#,
        )?;
        let provider = table.word("provider", "provider", PROVIDERS)?;
        match provider.as_str() {
            "env" => {
                table.only(&["var"], "an env provider")?;
                let var = table.text("var", r#"give the variable's name, e.g. var = "GITHUB_TOKEN""#)?;
                Ok(ProviderSpec::Env { var })
            }
            "file" => {
                table.only(&["path"], "a file provider")?;
                let path = table.text(
                    "path",
                    r#"give the token file, e.g. path = "/var/run/secrets/t3/token""#,
                )?;
                Ok(ProviderSpec::File { path: path.into() })
            }
            "command" => {
                table.only(
                    &["command", "shell", "timeout", "cache_lifetime"],
                    "a command provider",
                )?;
                let shell = table.boolean("shell")?.unwrap_or(false);
                let command = table.command(shell)?;
                let timeout = table.duration("timeout")?.unwrap_or(DEFAULT_COMMAND_TIMEOUT);
                let cache_lifetime = table.duration("cache_lifetime")?;
                Ok(ProviderSpec::Command {
                    command,
                    shell,
                    timeout,
                    cache_lifetime,
                })
            }
            "vault" => vault(&table).map(ProviderSpec::Vault),
            "literal" => {
                table.only(&["value"], "a literal provider")?;
                let value = table.text("value", r#"give the token, e.g. value = "test-token""#)?;
                Ok(ProviderSpec::Literal {
                    value: Secret::new(value),
                })
            }
            _ => unreachable!("word() admits only the providers listed"),
        }
    }
}

fn vault(table: &Table<'_>) -> Result<VaultSpec, ProviderTableError> {
    table.only(
        &[
            "addr",
            "namespace",
            "mount",
            "path",
            "field",
            "auth",
            "cache_lifetime",
            "timeout",
            "ca_cert",
        ],
        "a vault provider",
    )?;
    let addr = table.text(
        "addr",
        r#"give Vault's address, e.g. addr = "https://vault:8200""#,
    )?;
    let namespace = table.optional_text("namespace")?;
    let mount = table.optional_text("mount")?.unwrap_or_else(|| "secret".into());
    let path = table.text(
        "path",
        r#"give the secret's path inside the KV mount, e.g. path = "afk/t3""#,
    )?;
    let field = table.optional_text("field")?.unwrap_or_else(|| "token".into());
    let auth = vault_auth(&table.table(
        "auth",
        r#"a table such as { method = "kubernetes", role = "afk" }"#,
        r#"give how afk logs in to Vault, e.g. auth = { method = "kubernetes", role = "afk" }"#,
    )?)?;
    let cache_lifetime = table
        .duration("cache_lifetime")?
        .unwrap_or(DEFAULT_VAULT_CACHE_LIFETIME);
    let timeout = table.duration("timeout")?.unwrap_or(DEFAULT_VAULT_TIMEOUT);
    let ca_cert = table.optional_text("ca_cert")?.map(PathBuf::from);
    Ok(VaultSpec {
        addr,
        namespace,
        mount,
        path,
        field,
        auth,
        cache_lifetime,
        timeout,
        ca_cert,
    })
}

fn vault_auth(auth: &Table<'_>) -> Result<VaultAuthSpec, ProviderTableError> {
    match auth.word("method", "method", METHODS)?.as_str() {
        "token" => {
            auth.only(&["method", "token"], "token auth")?;
            let key = auth.join("token");
            let Some(value) = auth.table.get("token") else {
                return Err(auth.error(
                    "token",
                    r#"missing; token auth needs a provider table for the Vault token, e.g. token = { provider = "file", path = "/vault/secrets/token" }"#,
                ));
            };
            let token = ProviderSpec::from_toml(value, &key)?;
            Ok(VaultAuthSpec::Token {
                token: Box::new(token),
            })
        }
        "kubernetes" => {
            auth.only(&["method", "role", "mount", "jwt_path"], "Kubernetes auth")?;
            let role = auth.text(
                "role",
                r#"Kubernetes auth needs the Vault role bound to afk's service account, e.g. auth = { method = "kubernetes", role = "afk" }"#,
            )?;
            let mount = auth
                .optional_text("mount")?
                .unwrap_or_else(|| DEFAULT_KUBERNETES_AUTH_MOUNT.into());
            let jwt_path = auth
                .optional_text("jwt_path")?
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SERVICE_ACCOUNT_TOKEN_PATH));
            Ok(VaultAuthSpec::Kubernetes {
                role,
                mount,
                jwt_path,
            })
        }
        _ => unreachable!("word() admits only the methods listed"),
    }
}

/// A TOML table being read, with the key it sits at.
struct Table<'a> {
    key: String,
    table: &'a toml::Table,
}

impl<'a> Table<'a> {
    fn new(value: &'a Value, key: String, expected: &str) -> Result<Self, ProviderTableError> {
        match value {
            Value::Table(table) => Ok(Self { key, table }),
            // Not shown: a token written straight in (`token = "ghp_…"`) is the likely mistake.
            other => Err(ProviderTableError {
                key,
                problem: format!("expected {expected}, got {}; the value is not shown", a(other)),
            }),
        }
    }

    fn join(&self, name: &str) -> String {
        match self.key.is_empty() {
            true => name.to_owned(),
            false => format!("{}.{name}", self.key),
        }
    }

    fn error(&self, name: &str, problem: impl Into<String>) -> ProviderTableError {
        ProviderTableError {
            key: self.join(name),
            problem: problem.into(),
        }
    }

    /// Refuses the first key not in `allowed` (nor `provider`).
    fn only(&self, allowed: &[&str], what: &str) -> Result<(), ProviderTableError> {
        let unknown = self
            .table
            .keys()
            .find(|k| k.as_str() != "provider" && !allowed.contains(&k.as_str()));
        match unknown {
            Some(name) => Err(self.error(name, format!("unknown key; {what} takes {}", allowed.join(", ")))),
            None => Ok(()),
        }
    }

    /// A required string naming one of `allowed` (a provider, a method): quoted back when wrong.
    fn word(&self, name: &str, what: &str, allowed: &str) -> Result<String, ProviderTableError> {
        match self.table.get(name) {
            None => Err(self.error(name, format!("missing; expected one of {allowed}"))),
            Some(Value::String(word)) if allowed.contains(&format!("\"{word}\"")) => Ok(word.clone()),
            Some(Value::String(word)) => {
                let shown = crate::redact::scrub(word);
                let shown = crate::error::shorten(&shown, 40);
                Err(self.error(
                    name,
                    format!("unknown {what} {shown:?}; expected one of {allowed}"),
                ))
            }
            Some(other) => Err(self.error(name, format!("expected one of {allowed}, got {}", a(other)))),
        }
    }

    fn optional_text(&self, name: &str) -> Result<Option<String>, ProviderTableError> {
        match self.table.get(name) {
            None => Ok(None),
            Some(Value::String(text)) if text.trim().is_empty() => Err(self.error(name, "is empty")),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(self.error(name, format!("expected a string, got {}", a(other)))),
        }
    }

    /// A required, non-empty string; `missing` says what to write.
    fn text(&self, name: &str, missing: &str) -> Result<String, ProviderTableError> {
        self.optional_text(name)?
            .ok_or_else(|| self.error(name, format!("missing; {missing}")))
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, ProviderTableError> {
        match self.table.get(name) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.error(name, format!("expected true or false, got {}", a(other)))),
        }
    }

    fn duration(&self, name: &str) -> Result<Option<Duration>, ProviderTableError> {
        match self.table.get(name) {
            None => Ok(None),
            Some(Value::String(text)) => humantime::parse_duration(text.trim())
                .map(Some)
                .map_err(|_| self.error(name, format!("expected {DURATION_FORM}, got {text:?}"))),
            Some(other) => Err(self.error(name, format!("expected {DURATION_FORM}, got {}", a(other)))),
        }
    }

    fn command(&self, shell: bool) -> Result<Vec<String>, ProviderTableError> {
        let example = match shell {
            true => r#"with shell = true, give one script, e.g. command = ["pass show t3 | head -1"]"#,
            false => r#"give the program and its arguments, e.g. command = ["gh", "auth", "token"]"#,
        };
        let items = match self.table.get("command") {
            None => return Err(self.error("command", format!("missing; {example}"))),
            Some(Value::Array(items)) => items,
            Some(other) => {
                return Err(self.error(
                    "command",
                    format!("expected an array of strings, got {}; {example}", a(other)),
                ))
            }
        };
        let mut command = Vec::with_capacity(items.len());
        for (n, item) in items.iter().enumerate() {
            match item {
                Value::String(text) => command.push(text.clone()),
                other => {
                    let key = format!("command[{n}]");
                    return Err(self.error(&key, format!("expected a string, got {}", a(other))));
                }
            }
        }
        if command.is_empty() || (shell && command.len() != 1) {
            let problem = if command.is_empty() {
                "is empty"
            } else {
                "has more than one string"
            };
            return Err(self.error("command", format!("{problem}; {example}")));
        }
        Ok(command)
    }

    /// A required sub-table; `missing` says what to write.
    fn table(&self, name: &str, expected: &str, missing: &str) -> Result<Table<'a>, ProviderTableError> {
        match self.table.get(name) {
            None => Err(self.error(name, format!("missing; {missing}"))),
            Some(value) => Table::new(value, self.join(name), expected),
        }
    }
}

/// `a string`, `an integer`, … for `value`'s type.
fn a(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// Reads the table through [`ProviderSpec::from_toml`], so that a table inside a larger
/// configuration (`#[derive(Deserialize)]`) gets the same checks; the error names the key
/// relative to the table (`cache_lifetime: expected …`). For the full key, read the table with
/// [`ProviderSpec::from_toml`] and the key it sits at.
impl<'de> Deserialize<'de> for ProviderSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        ProviderSpec::from_toml(&value, "").map_err(serde::de::Error::custom)
    }
}
