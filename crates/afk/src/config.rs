//! afk's configuration: one TOML file plus `AFK_...` environment overrides, validated at start.
//!
//! Every key has a default chosen so that `afk run` with no file works on one machine (T3 on
//! 127.0.0.1:3773, a SQLite ledger `afk.db` and issue files in `issues/` in the working
//! directory). Errors name the key and where its value came from (the file or the variable).
//!
//! **A leaf:** this module knows the file and nothing of the parts it configures; `app.rs` builds
//! the parts from it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use afk_core::{Repo, RetryPolicy, WorktreeTemplate};
use afk_secrets::ProviderSpec;
use serde::{Deserialize, Deserializer};
use t3_client::ProjectId;

/// A configuration that cannot be used; the message names the key and its source.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    /// The file (or environment variable) the bad value came from.
    pub source_name: String,
    /// What is wrong, naming the key.
    pub message: String,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[t3]`: the T3 server.
    pub t3: T3Config,
    /// `[ledger]`: where state is kept.
    pub ledger: LedgerConfig,
    /// `[source]`: where issues come from.
    pub source: SourceConfig,
    /// `[limits]`: how much runs at once.
    pub limits: LimitsConfig,
    /// `[watch]`: how threads are watched.
    pub watch: WatchConfig,
    /// `[retry]`: back-off between attempts.
    pub retry: RetryConfig,
    /// `[github]`: issues from GitHub and status reported on them; off unless present.
    pub github: Option<GitHubConfig>,
    /// `[http]`: afk's HTTP listener (status surface, webhooks); on `127.0.0.1:8787` by default.
    pub http: HttpConfig,
    /// `[followup]`: follow-up turns on a job's pull request (failed checks, requested changes).
    pub followup: FollowUpConfig,
    /// `[budget]`: how much agent time a job, and agent time and new jobs a repository a day, may
    /// use; off unless set.
    pub budget: BudgetConfig,
}

/// `[budget]`. Each key is off (no limit) unless set; a repository's `AFK.md` may lower each for
/// itself (`budget:` in its front matter), never raise it. A job's attempts are bounded by
/// `[limits] max_attempts` and its follow-up turns by `[followup] max_turns`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Agent time per job (the sum of its turns' durations since it was last queued, the time
    /// its thread waited for a person left out): past it the job stops at the next safe point.
    #[serde(deserialize_with = "optional_duration")]
    pub job_agent_time: Option<Duration>,
    /// Agent time per repository per day (UTC, the turns that ended that day): past it the
    /// repository's new jobs stay queued until the next day.
    #[serde(deserialize_with = "optional_duration")]
    pub repo_agent_time_per_day: Option<Duration>,
    /// New jobs (first attempts started) per repository per day (UTC): past it the repository's
    /// new jobs stay queued until the next day.
    pub repo_new_jobs_per_day: Option<u32>,
}

impl BudgetConfig {
    /// The limits as the control plane applies them.
    pub fn limits(&self) -> afk_core::BudgetLimits {
        afk_core::BudgetLimits {
            job_agent_time: self.job_agent_time,
            repo_agent_time_per_day: self.repo_agent_time_per_day,
            repo_new_jobs_per_day: self.repo_new_jobs_per_day,
        }
    }
}

/// `[followup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FollowUpConfig {
    /// Follow-up turns afk starts on its own per job (a failed check, a review requesting
    /// changes); past them the job waits for a person. 0: the pull request is followed to its
    /// end but never answered.
    pub max_turns: u32,
}

impl Default for FollowUpConfig {
    fn default() -> Self {
        Self { max_turns: 3 }
    }
}

/// `[github]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GitHubConfig {
    /// The REST API root (GitHub Enterprise: `https://HOST/api/v3`).
    pub api_url: String,
    /// `OWNER/NAME` of each repository to take issues from; each needs a `[t3.projects]` entry.
    pub repos: Vec<String>,
    /// The label that hands an issue to afk.
    pub trigger_label: String,
    /// How often the repositories are polled (webhooks act at once; polling is the fallback).
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// How long a labeler's looked-up permission is trusted.
    #[serde(deserialize_with = "duration")]
    pub permission_ttl: Duration,
    /// A file holding a personal access token, re-read on every request.
    pub token_file: Option<PathBuf>,
    /// `[github.token]`: the token from any provider; replaces `token_file`.
    pub token: Option<ProviderSpec>,
    /// A GitHub App's id (with `installation_id` and a private key, instead of a token).
    pub app_id: Option<u64>,
    /// The App's installation id.
    pub installation_id: Option<u64>,
    /// The App's private key (PEM) file.
    pub private_key_file: Option<PathBuf>,
    /// `[github.private_key]`: the App's private key from any provider.
    pub private_key: Option<ProviderSpec>,
    /// A file with the webhook secret; webhooks are refused without one.
    pub webhook_secret_file: Option<PathBuf>,
    /// `[github.webhook_secret]`: the webhook secret from any provider.
    pub webhook_secret: Option<ProviderSpec>,
}

impl Default for GitHubConfig {
    fn default() -> Self {
        Self {
            api_url: "https://api.github.com".into(),
            repos: Vec::new(),
            trigger_label: "afk".into(),
            poll_interval: Duration::from_secs(30),
            permission_ttl: Duration::from_secs(600),
            token_file: None,
            token: None,
            app_id: None,
            installation_id: None,
            private_key_file: None,
            private_key: None,
            webhook_secret_file: None,
            webhook_secret: None,
        }
    }
}

/// How afk authenticates to GitHub.
#[derive(Debug, Clone, PartialEq)]
pub enum GitHubAuth {
    /// A personal access token.
    Token(ProviderSpec),
    /// A GitHub App installation.
    App {
        /// The App id.
        app_id: u64,
        /// The installation id.
        installation_id: u64,
        /// The private key.
        private_key: ProviderSpec,
    },
}

impl GitHubConfig {
    /// The credentials, as validated at load: a token or an App, never both or neither.
    pub fn auth(&self) -> Result<GitHubAuth, String> {
        let token = self
            .token
            .clone()
            .or_else(|| self.token_file.clone().map(|path| ProviderSpec::File { path }));
        let key = self.private_key.clone().or_else(|| {
            self.private_key_file
                .clone()
                .map(|path| ProviderSpec::File { path })
        });
        match (token, self.app_id, self.installation_id, key) {
            (Some(token), None, None, None) => Ok(GitHubAuth::Token(token)),
            (None, Some(app_id), Some(installation_id), Some(private_key)) => Ok(GitHubAuth::App {
                app_id,
                installation_id,
                private_key,
            }),
            (None, None, None, None) => {
                Err("no credentials: set token_file (or [github.token]) or app_id, installation_id and private_key_file".into())
            }
            (Some(_), ..) => Err("give either a token or a GitHub App, not both".into()),
            _ => Err("a GitHub App needs app_id, installation_id and private_key_file (or [github.private_key])".into()),
        }
    }

    /// The webhook secret's provider, if webhooks are on.
    pub fn webhook_secret(&self) -> Option<ProviderSpec> {
        self.webhook_secret.clone().or_else(|| {
            self.webhook_secret_file
                .clone()
                .map(|path| ProviderSpec::File { path })
        })
    }
}

/// `[http]`: the status surface (JSON API, metrics, dashboard, health) and GitHub's webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on (default `127.0.0.1:8787`; `"off"`: no listener, so no webhooks and
    /// no status surface). Port 0 picks a free port.
    #[serde(deserialize_with = "listen_address")]
    pub listen: Option<std::net::SocketAddr>,
    /// `[http.token]`: the bearer token the status API's actions (requeue, cancel) require, from
    /// any provider; without it the actions are off (403).
    pub token: Option<ProviderSpec>,
    /// Connections served at once; further ones wait in the listen queue (default 512).
    pub max_connections: u32,
    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may sit idle before its next request (default 10s).
    #[serde(deserialize_with = "duration")]
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body, and how long a request may take in
    /// all (default 30s).
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
}

/// Where afk listens when the configuration does not say.
pub const DEFAULT_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8787);

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: Some(DEFAULT_LISTEN),
            token: None,
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// `[http] listen`: an address such as `127.0.0.1:8787`, or `"off"`.
fn listen_address<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.trim() {
        "off" => Ok(None),
        address => address.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not an address like \"127.0.0.1:8787\" or \"0.0.0.0:8787\" (or \"off\")"
            ))
        }),
    }
}

/// `[t3]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct T3Config {
    /// T3's base URL.
    pub url: String,
    /// A file holding T3's bearer token (`orchestration:operate`), re-read on every request.
    pub token_file: PathBuf,
    /// Optional file with a read-only (`orchestration:read`) token for the watcher.
    pub read_token_file: Option<PathBuf>,
    /// `[t3.token]`: where the operate token comes from (env, file, command, Vault); when set it
    /// replaces `token_file`. See docs/secrets.md.
    pub token: Option<ProviderSpec>,
    /// `[t3.read_token]`: the watcher's read-only token, from any provider; replaces
    /// `read_token_file`. Without either, the operate token reads the snapshot too.
    pub read_token: Option<ProviderSpec>,
    /// `[t3.projects]`: `"OWNER/NAME" = "T3_PROJECT_ID"`, or a table with the project and how
    /// the repository's threads are dispatched.
    #[serde(deserialize_with = "project_entries")]
    pub projects: BTreeMap<String, ProjectEntry>,
    /// How threads are started, unless a project says otherwise: `ws-worktree` (one git worktree
    /// per thread, made by T3) or `http` (the seed's two POSTs; threads share the checkout).
    pub dispatch: DispatchMode,
    /// The branch worktrees start from, unless a project says otherwise.
    pub base_branch: String,
    /// T3's provider instance (default `claudeAgent`).
    pub instance_id: String,
    /// The model (default `claude-sonnet-4-5`).
    pub model: String,
    /// Branch names are this prefix and `issue-N` (default `afk/`).
    pub branch_prefix: String,
    /// A file whose text replaces the built-in standing-rules preamble.
    pub preamble_file: Option<PathBuf>,
    /// The T3 web UI's base URL, for links to threads (default: `url`).
    pub web_url: Option<String>,
    /// Connect timeout.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Request timeout.
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
}

impl Default for T3Config {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:3773".into(),
            token_file: PathBuf::from("t3-token"),
            read_token_file: None,
            token: None,
            read_token: None,
            projects: BTreeMap::new(),
            dispatch: DispatchMode::WsWorktree,
            base_branch: "main".into(),
            instance_id: "claudeAgent".into(),
            model: "claude-sonnet-4-5".into(),
            branch_prefix: "afk/".into(),
            preamble_file: None,
            web_url: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// How a repository's threads are started in T3 (`dispatch = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DispatchMode {
    /// One `thread.turn.start` with a bootstrap over T3's WebSocket RPC: T3 makes a git worktree
    /// per thread.
    #[serde(rename = "ws-worktree")]
    WsWorktree,
    /// `thread.create` and `thread.turn.start` over HTTP, as the seed does: no worktree.
    #[serde(rename = "http")]
    Http,
}

/// One `[t3.projects]` entry: `"OWNER/NAME" = "PROJECT_ID"`, or a table
/// `{ project = "PROJECT_ID", dispatch = "http", worktree_path = "...", base_branch = "...",
/// run_setup_script = true }` whose keys other than `project` default to `[t3]`'s.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectEntry {
    /// The T3 project id.
    pub project: String,
    /// How the repository's threads are started (default: `[t3] dispatch`).
    #[serde(default)]
    pub dispatch: Option<DispatchMode>,
    /// `ws-worktree` only: the branch worktrees start from (default: `[t3] base_branch`).
    #[serde(default)]
    pub base_branch: Option<String>,
    /// `ws-worktree` only: run the project's setup script in each new worktree (default: when the
    /// project has a script marked to run on worktree creation).
    #[serde(default)]
    pub run_setup_script: Option<bool>,
    /// `http` only: where each thread works, a template with `{owner}`, `{name}`, `{issue}`,
    /// `{branch}`, `{attempt}` (default: the project's checkout, one thread at a time).
    #[serde(default)]
    pub worktree_path: Option<String>,
}

impl From<&str> for ProjectEntry {
    fn from(project: &str) -> Self {
        Self {
            project: project.to_owned(),
            dispatch: None,
            base_branch: None,
            run_setup_script: None,
            worktree_path: None,
        }
    }
}

impl<'de> Deserialize<'de> for ProjectEntryOrId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ProjectEntryOrId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a T3 project id, or a table with `project` and dispatch settings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ProjectEntryOrId(ProjectEntry::from(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ProjectEntry::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ProjectEntryOrId)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Decodes `[t3.projects]`'s two forms (a bare id or a table) with errors naming the key.
struct ProjectEntryOrId(ProjectEntry);

fn project_entries<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, ProjectEntry>, D::Error> {
    let raw = BTreeMap::<String, ProjectEntryOrId>::deserialize(deserializer)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// `[ledger]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// `sqlite://PATH` or `postgres://...`.
    pub url: String,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://afk.db".into(),
        }
    }
}

/// `[source]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// `[source.local]`: a folder of Markdown issue files.
    pub local: Option<LocalSourceConfig>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        Self {
            local: Some(LocalSourceConfig::default()),
        }
    }
}

/// `[source.local]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSourceConfig {
    /// The folder.
    pub dir: PathBuf,
}

impl Default for LocalSourceConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("issues"),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Live attempts at once, over all repositories.
    pub max_concurrent: u32,
    /// Live attempts at once per repository.
    pub per_repo: u32,
    /// Attempts per job, the first included.
    pub max_attempts: u32,
    /// Dispatches of one tick sent to T3 at once.
    pub parallel_dispatches: u32,
    /// How long a thread may wait for a person (the agent asked in T3) before afk stops its
    /// session and fails the job with a note that nobody answered.
    #[serde(deserialize_with = "duration")]
    pub answer_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 4,
            per_repo: 2,
            max_attempts: 3,
            parallel_dispatches: 8,
            answer_timeout: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// `[watch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// How often the fleet snapshot is read.
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    /// A running thread unchanged this long is stalled.
    #[serde(deserialize_with = "duration")]
    pub stall_timeout: Duration,
    /// A turn running this long is interrupted.
    #[serde(deserialize_with = "duration")]
    pub turn_timeout: Duration,
    /// Follow T3's shell stream over its WebSocket RPC and act on a change at once; the snapshot
    /// is polled only while the stream is down. Off: poll only.
    pub push: bool,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(15 * 60),
            turn_timeout: Duration::from_secs(60 * 60),
            push: true,
        }
    }
}

/// `[retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// The first back-off.
    #[serde(deserialize_with = "duration")]
    pub initial: Duration,
    /// The longest back-off.
    #[serde(deserialize_with = "duration")]
    pub cap: Duration,
    /// Tries of one dispatch against transient errors before the attempt fails.
    pub max_dispatch_tries: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let p = RetryPolicy::default();
        Self {
            initial: p.initial,
            cap: p.cap,
            max_dispatch_tries: p.max_dispatch_tries,
        }
    }
}

/// The shortest poll interval (`[watch]` and `[github]`): shorter only burns CPU and T3's or
/// GitHub's patience.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The longest duration any key takes (3650 days): a longer one would overflow a date when added
/// to now.
const MAX_DURATION: Duration = Duration::from_secs(3650 * 24 * 3600);

/// `Ok` when `text` is an `http://` or `https://` URL with a host.
fn http_url(text: &str) -> Result<(), String> {
    match url::Url::parse(text) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
        }
        Ok(_) => Err(format!("{text:?} is not an http:// or https:// URL with a host")),
        Err(e) => Err(format!("{text:?} is not a URL ({e})")),
    }
}

/// `Ok` when `name` is a valid git branch name (`git check-ref-format --branch`'s rules): no
/// `..`, `@{`, control characters, space, `~ ^ : ? * [ \`, no part starting with `.` or ending
/// with `.lock`, no `//`, not starting or ending with `/`, not ending with `.`, not `@`.
fn git_ref_part(name: &str) -> Result<(), String> {
    let bad_char = name
        .chars()
        .find(|c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'));
    let problem = if name.is_empty() {
        Some("is empty".to_owned())
    } else if let Some(c) = bad_char {
        Some(format!("holds {c:?}"))
    } else if name.contains("..") || name.contains("@{") || name.contains("//") {
        Some("holds `..`, `@{` or `//`".to_owned())
    } else if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') || name == "@" {
        Some("starts or ends with `/`, ends with `.`, or is `@`".to_owned())
    } else if name.starts_with('-') {
        Some("starts with `-`".to_owned())
    } else if name
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        Some("has a part starting with `.` or ending with `.lock`".to_owned())
    } else {
        None
    };
    match problem {
        Some(problem) => Err(format!("not a valid git branch name: {problem}")),
        None => Ok(()),
    }
}

/// A parsed duration such as `200ms`, `5s`, `15m`, `1h 30m`.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!("{text:?} is not a duration like 200ms, 5s or 15m ({e})"))
    })
}

/// A duration, or `"off"` for none (`None`).
fn optional_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim() == "off" {
        return Ok(None);
    }
    humantime::parse_duration(text.trim()).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration like 30m or 4h, nor \"off\" ({e})"
        ))
    })
}

/// Scalar keys that `AFK_<SECTION>_<KEY>` variables override, e.g. `AFK_LIMITS_PER_REPO`.
const OVERRIDABLE: &[&str] = &[
    "t3.url",
    "t3.token_file",
    "t3.read_token_file",
    "t3.instance_id",
    "t3.model",
    "t3.branch_prefix",
    "t3.preamble_file",
    "t3.web_url",
    "t3.connect_timeout",
    "t3.request_timeout",
    "t3.dispatch",
    "t3.base_branch",
    "ledger.url",
    "source.local.dir",
    "limits.max_concurrent",
    "limits.per_repo",
    "limits.max_attempts",
    "limits.parallel_dispatches",
    "limits.answer_timeout",
    "watch.poll_interval",
    "watch.stall_timeout",
    "watch.turn_timeout",
    "watch.push",
    "retry.initial",
    "retry.cap",
    "retry.max_dispatch_tries",
    "followup.max_turns",
    "budget.job_agent_time",
    "budget.repo_agent_time_per_day",
    "budget.repo_new_jobs_per_day",
    "github.api_url",
    "github.trigger_label",
    "github.poll_interval",
    "github.permission_ttl",
    "github.token_file",
    "github.app_id",
    "github.installation_id",
    "github.private_key_file",
    "github.webhook_secret_file",
    "http.listen",
    "http.max_connections",
    "http.header_timeout",
    "http.request_timeout",
];

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    format!("AFK_{}", key.replace('.', "_").to_uppercase())
}

impl Config {
    /// Loads `path` (or only the defaults when `None`), applies `AFK_...` overrides from `env`, and
    /// validates the result.
    pub fn load(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let source_name = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in defaults".into());
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    source_name: source_name.clone(),
                    message: format!("cannot read the config file: {e}"),
                })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError {
                    source_name: source_name.clone(),
                    message: toml_syntax_error(&text, &e),
                })?
            }
            None => toml::Table::new(),
        };
        let mut overridden = BTreeMap::new();
        for key in OVERRIDABLE {
            let var = env_name(key);
            if let Some(value) = env(&var) {
                set_path(&mut table, key, scalar(key, &value));
                overridden.insert(key.to_string(), var);
            }
        }
        let table = toml::Value::Table(table);
        let config: Config = serde_path_to_error::deserialize(table.clone()).map_err(|e| {
            let key = e.path().to_string();
            let from = overridden
                .get(&key)
                .map(|v| format!("environment {v}"))
                .unwrap_or(source_name.clone());
            ConfigError {
                source_name: from,
                message: match provider_table_at(&table, &key) {
                    // Read again on its own, for the full key and the form expected
                    // (`t3.token.cache_lifetime: expected a duration ...`); a value typed where a
                    // table belongs (a token) is never quoted back.
                    Some(Err(error)) => format!("key {}: {}", error.key(), error.problem()),
                    _ if is_secret_key(&key) => format!(
                        "key {key}: expected a provider table such as {{ provider = \"file\", path = \"...\" }} \
                         (see docs/secrets.md); the value is not shown"
                    ),
                    _ => format!("key {key}: {}", e.inner().message()),
                },
            }
        })?;
        config.validate().map_err(|(key, message)| ConfigError {
            source_name: overridden
                .get(key)
                .map(|v| format!("environment {v}"))
                .unwrap_or(source_name),
            message: format!("key {key}: {message}"),
        })?;
        Ok(config)
    }

    /// Loads with the process environment. An `AFK_...` override that is not UTF-8 is refused
    /// with the variable's name (never silently ignored).
    pub fn load_from_env(path: Option<&Path>) -> Result<Config, ConfigError> {
        for key in OVERRIDABLE {
            let var = env_name(key);
            if matches!(std::env::var(&var), Err(std::env::VarError::NotUnicode(_))) {
                return Err(ConfigError {
                    source_name: format!("environment {var}"),
                    message: format!("key {key}: the value is not UTF-8 text"),
                });
            }
        }
        Config::load(path, &|name| std::env::var(name).ok())
    }

    /// What `afk run` needs beyond [`Config::load`]'s checks: a ledger that outlives the process
    /// (a memory database would forget every job and dispatch them all again after a restart).
    pub fn check_for_run(&self) -> Result<(), ConfigError> {
        let url = &self.ledger.url;
        if url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory")) {
            return Err(ConfigError {
                source_name: "afk run".into(),
                message: format!(
                    "key ledger.url: {url:?} keeps nothing after afk stops; afk run needs a file \
                     (sqlite://PATH) or PostgreSQL"
                ),
            });
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(github) = &self.github {
            http_url(&github.api_url).map_err(|e| ("github.api_url", e))?;
            if github.repos.is_empty() {
                return Err(("github.repos", "list at least one OWNER/NAME".into()));
            }
            for repo in &github.repos {
                Repo::new(repo.clone()).map_err(|e| ("github.repos", e.to_string()))?;
                if !self.t3.projects.contains_key(repo) {
                    return Err((
                        "github.repos",
                        format!(
                            "{repo} has no T3 project: add \"{repo}\" = \"PROJECT_ID\" under [t3.projects]"
                        ),
                    ));
                }
            }
            if github.trigger_label.trim().is_empty() {
                return Err(("github.trigger_label", "must not be empty".into()));
            }
            if github.poll_interval < MIN_POLL_INTERVAL {
                return Err(("github.poll_interval", "must be at least 100ms".into()));
            }
            github.auth().map_err(|e| ("github", e))?;
        }
        http_url(&self.t3.url).map_err(|e| ("t3.url", e))?;
        if let Some(web) = &self.t3.web_url {
            http_url(web).map_err(|e| ("t3.web_url", e))?;
        }
        if self.t3.base_branch.trim().is_empty() {
            return Err(("t3.base_branch", "must not be empty".into()));
        }
        git_ref_part(&self.t3.base_branch).map_err(|e| ("t3.base_branch", e))?;
        // The prefix is followed by `issue-N`: the whole must be a valid branch name.
        git_ref_part(&format!("{}issue-1", self.t3.branch_prefix)).map_err(|e| {
            (
                "t3.branch_prefix",
                format!("{:?} + \"issue-N\": {e}", self.t3.branch_prefix),
            )
        })?;
        for (key, value) in [
            ("t3.instance_id", &self.t3.instance_id),
            ("t3.model", &self.t3.model),
        ] {
            if value.trim().is_empty() {
                return Err((key, "must not be empty".into()));
            }
        }
        for repo in self.t3.projects.keys() {
            Repo::new(repo.clone()).map_err(|e| ("t3.projects", e.to_string()))?;
            self.project_settings(repo)
                .map_err(|e| ("t3.projects", format!("{repo}: {e}")))?;
        }
        if !(self.ledger.url.starts_with("sqlite:") || self.ledger.url.starts_with("postgres")) {
            return Err(("ledger.url", "must start with sqlite:// or postgres://".into()));
        }
        if let Some(path) = self.ledger.url.strip_prefix("sqlite://") {
            if path.split('?').next().unwrap_or_default().is_empty() {
                return Err((
                    "ledger.url",
                    "sqlite:// names no file: write sqlite://PATH (e.g. sqlite://afk.db)".into(),
                ));
            }
        }
        if self.http.max_connections == 0 {
            return Err(("http.max_connections", "must be at least 1".into()));
        }
        if self.limits.max_concurrent == 0 {
            return Err(("limits.max_concurrent", "must be at least 1".into()));
        }
        if self.limits.per_repo == 0 {
            return Err(("limits.per_repo", "must be at least 1".into()));
        }
        if self.limits.max_attempts == 0 {
            return Err(("limits.max_attempts", "must be at least 1".into()));
        }
        if self.limits.parallel_dispatches == 0 {
            return Err(("limits.parallel_dispatches", "must be at least 1".into()));
        }
        let positive = [
            ("watch.poll_interval", self.watch.poll_interval),
            ("watch.stall_timeout", self.watch.stall_timeout),
            ("watch.turn_timeout", self.watch.turn_timeout),
            ("limits.answer_timeout", self.limits.answer_timeout),
            ("t3.connect_timeout", self.t3.connect_timeout),
            ("t3.request_timeout", self.t3.request_timeout),
            ("http.header_timeout", self.http.header_timeout),
            ("http.request_timeout", self.http.request_timeout),
            // A retry always waits a little: it is what keeps an attempt that just ended (whose
            // thread is still being stopped) from being replaced within the same tick.
            ("retry.initial", self.retry.initial),
        ];
        let budgets = [
            ("budget.job_agent_time", self.budget.job_agent_time),
            (
                "budget.repo_agent_time_per_day",
                self.budget.repo_agent_time_per_day,
            ),
        ];
        for (key, value) in budgets {
            match value {
                Some(value) if value.is_zero() => {
                    return Err((key, "must be longer than zero (\"off\" for no limit)".into()))
                }
                Some(value) if value > MAX_DURATION => return Err((key, "must be at most 3650 days".into())),
                _ => {}
            }
        }
        if self.budget.repo_new_jobs_per_day == Some(0) {
            return Err((
                "budget.repo_new_jobs_per_day",
                "must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        for (key, value) in positive {
            if value.is_zero() {
                return Err((key, "must be longer than zero".into()));
            }
        }
        let mut durations = vec![
            ("watch.poll_interval", self.watch.poll_interval),
            ("watch.stall_timeout", self.watch.stall_timeout),
            ("watch.turn_timeout", self.watch.turn_timeout),
            ("limits.answer_timeout", self.limits.answer_timeout),
            ("t3.connect_timeout", self.t3.connect_timeout),
            ("t3.request_timeout", self.t3.request_timeout),
            ("retry.initial", self.retry.initial),
            ("retry.cap", self.retry.cap),
        ];
        if let Some(github) = &self.github {
            durations.push(("github.poll_interval", github.poll_interval));
            durations.push(("github.permission_ttl", github.permission_ttl));
        }
        for (key, value) in durations {
            if value > MAX_DURATION {
                return Err((key, "must be at most 3650 days".into()));
            }
        }
        if self.watch.poll_interval < MIN_POLL_INTERVAL {
            return Err(("watch.poll_interval", "must be at least 100ms".into()));
        }
        if self.retry.cap < self.retry.initial {
            return Err((
                "retry.cap",
                format!(
                    "must be at least retry.initial ({})",
                    humantime::format_duration(self.retry.initial)
                ),
            ));
        }
        if self.retry.max_dispatch_tries == 0 {
            return Err(("retry.max_dispatch_tries", "must be at least 1".into()));
        }
        Ok(())
    }

    /// Where the T3 operate token comes from: `[t3.token]`, else `token_file`.
    pub fn t3_token(&self) -> ProviderSpec {
        self.t3.token.clone().unwrap_or_else(|| ProviderSpec::File {
            path: self.t3.token_file.clone(),
        })
    }

    /// Where the watcher's read-only token comes from, if it has its own: `[t3.read_token]`, else
    /// `read_token_file`.
    pub fn t3_read_token(&self) -> Option<ProviderSpec> {
        self.t3.read_token.clone().or_else(|| {
            self.t3
                .read_token_file
                .clone()
                .map(|path| ProviderSpec::File { path })
        })
    }

    /// The retry policy these settings describe.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: self.retry.initial,
            cap: self.retry.cap,
            max_attempts: self.limits.max_attempts,
            max_dispatch_tries: self.retry.max_dispatch_tries,
        }
    }

    /// Each repository's `[t3.projects]` entry with `[t3]`'s defaults filled in (validated at
    /// load).
    pub fn projects(&self) -> BTreeMap<Repo, ProjectSettings> {
        self.t3
            .projects
            .keys()
            .filter_map(|r| Some((Repo::new(r.clone()).ok()?, self.project_settings(r).ok()?)))
            .collect()
    }

    /// One repository's entry, its keys over `[t3]`'s defaults; `Err` names what does not fit.
    fn project_settings(&self, repo: &str) -> Result<ProjectSettings, String> {
        let entry = self
            .t3
            .projects
            .get(repo)
            .ok_or_else(|| format!("{repo} has no entry"))?;
        let project = ProjectId::new(entry.project.clone()).map_err(|e| format!("project id: {e}"))?;
        let dispatch = entry.dispatch.unwrap_or(self.t3.dispatch);
        let mut settings = ProjectSettings {
            project,
            dispatch,
            base_branch: entry
                .base_branch
                .clone()
                .unwrap_or_else(|| self.t3.base_branch.clone()),
            run_setup_script: entry.run_setup_script,
            worktree_path: None,
        };
        match dispatch {
            DispatchMode::Http => {
                if entry.base_branch.is_some() || entry.run_setup_script.is_some() {
                    return Err(
                        "base_branch and run_setup_script apply to dispatch = \"ws-worktree\" only".into(),
                    );
                }
                settings.worktree_path = entry
                    .worktree_path
                    .clone()
                    .map(WorktreeTemplate::new)
                    .transpose()
                    .map_err(|e| format!("worktree_path: {e}"))?;
            }
            DispatchMode::WsWorktree => {
                if entry.worktree_path.is_some() {
                    return Err(
                        "worktree_path applies to dispatch = \"http\" only (with ws-worktree T3 makes the worktree)"
                            .into(),
                    );
                }
                if settings.base_branch.trim().is_empty() {
                    return Err("base_branch must not be empty".into());
                }
            }
        }
        Ok(settings)
    }
}

/// One repository's `[t3.projects]` entry with `[t3]`'s defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSettings {
    /// The T3 project.
    pub project: ProjectId,
    /// How its threads are started.
    pub dispatch: DispatchMode,
    /// `ws-worktree`: the branch worktrees start from.
    pub base_branch: String,
    /// `ws-worktree`: whether to run the setup script (`None`: as the project's scripts say).
    pub run_setup_script: Option<bool>,
    /// `http`: where each thread works (`None`: the project's checkout).
    pub worktree_path: Option<WorktreeTemplate>,
}

/// The keys that hold a secret provider table.
const PROVIDER_KEYS: &[&str] = &[
    "t3.token",
    "t3.read_token",
    "github.token",
    "github.private_key",
    "github.webhook_secret",
    "http.token",
];

/// True for the keys that hold a secret provider: their values are never echoed in errors.
fn is_secret_key(key: &str) -> bool {
    PROVIDER_KEYS
        .iter()
        .any(|k| key == *k || key == format!("{k}.value") || key.starts_with(&format!("{k}.auth.token")))
}

/// The provider table at or above `key` in `config` (a file's table with its overrides), read on
/// its own with errors naming the full key; `None` when `key` is not inside a provider table.
fn provider_table_at(
    config: &toml::Value,
    key: &str,
) -> Option<Result<ProviderSpec, afk_secrets::ProviderTableError>> {
    let provider_key = PROVIDER_KEYS
        .iter()
        .find(|k| key == **k || key.starts_with(&format!("{k}.")))?;
    let value = provider_key
        .split('.')
        .try_fold(config, |value, part| value.get(part))?;
    Some(ProviderSpec::from_toml(value, provider_key))
}

/// A TOML syntax error as one line with where it is: `not valid TOML at line 3, column 9: ...`.
fn toml_syntax_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', "; ");
    match error.span() {
        Some(span) => {
            let (line, column) = line_and_column(text, span.start);
            format!("not valid TOML at line {line}, column {column}: {message}")
        }
        None => format!("not valid TOML: {message}"),
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    (line, column)
}

/// Keys whose values are integers; every other overridable key is a string (so that
/// `AFK_T3_MODEL=4` stays the string "4").
const INTEGER_KEYS: &[&str] = &[
    "limits.max_concurrent",
    "limits.per_repo",
    "limits.max_attempts",
    "limits.parallel_dispatches",
    "retry.max_dispatch_tries",
    "followup.max_turns",
    "budget.repo_new_jobs_per_day",
    "github.app_id",
    "github.installation_id",
    "http.max_connections",
];

/// Keys whose values are booleans (`true`/`false`).
const BOOL_KEYS: &[&str] = &["watch.push"];

/// An environment value as TOML: an integer when it reads as one, else a string.
fn scalar(key: &str, value: &str) -> toml::Value {
    if BOOL_KEYS.contains(&key) {
        if let Ok(b) = value.trim().parse::<bool>() {
            return toml::Value::Boolean(b);
        }
    }
    if INTEGER_KEYS.contains(&key) {
        if let Ok(n) = value.trim().parse::<i64>() {
            return toml::Value::Integer(n);
        }
    }
    toml::Value::String(value.to_owned())
}

fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        current = match entry {
            toml::Value::Table(t) => t,
            _ => return,
        };
    }
    current.insert(last.to_owned(), value);
}

impl fmt::Display for LimitsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max_concurrent {}, per_repo {}, max_attempts {}, parallel_dispatches {}",
            self.max_concurrent, self.per_repo, self.max_attempts, self.parallel_dispatches
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("afk.toml");
        std::fs::write(&path, text).unwrap();
        let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load(Some(&path), &|name| env.get(name).cloned())
    }

    #[test]
    fn every_documented_key_is_read() {
        let config = load(
            r#"
            [t3]
            url = "http://t3:3773"
            token_file = "/run/t3/token"
            [t3.projects]
            "acme/widgets" = "proj-widgets"
            [ledger]
            url = "postgres://afk@db/afk"
            [source.local]
            dir = "/srv/issues"
            [limits]
            max_concurrent = 8
            per_repo = 3
            max_attempts = 5
            [watch]
            poll_interval = "200ms"
            stall_timeout = "5s"
            turn_timeout = "15m"
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(config.t3.url, "http://t3:3773");
        assert_eq!(config.t3.token_file, PathBuf::from("/run/t3/token"));
        assert_eq!(config.projects().len(), 1);
        assert_eq!(config.ledger.url, "postgres://afk@db/afk");
        assert_eq!(config.source.local.unwrap().dir, PathBuf::from("/srv/issues"));
        assert_eq!(
            (
                config.limits.max_concurrent,
                config.limits.per_repo,
                config.limits.max_attempts
            ),
            (8, 3, 5)
        );
        assert_eq!(config.watch.poll_interval, Duration::from_millis(200));
        assert_eq!(config.watch.stall_timeout, Duration::from_secs(5));
        assert_eq!(config.watch.turn_timeout, Duration::from_secs(900));
    }

    #[test]
    fn the_listener_is_on_by_default_off_when_asked_and_a_bad_address_names_the_key() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.http.listen, Some(DEFAULT_LISTEN));
        assert!(config.http.token.is_none(), "actions are off by default");
        let config = load("[http]\nlisten = \"off\"\n", &[]).unwrap();
        assert_eq!(config.http.listen, None);
        let config = load("", &[("AFK_HTTP_LISTEN", "0.0.0.0:9000")]).unwrap();
        assert_eq!(config.http.listen, Some("0.0.0.0:9000".parse().unwrap()));
        let config = load(
            "[http]\nheader_timeout = \"2s\"\nmax_connections = 64\n[http.token]\nprovider = \"env\"\nvar = \"AFK_HTTP_TOKEN\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(config.http.header_timeout, Duration::from_secs(2));
        assert_eq!(config.http.max_connections, 64);
        assert!(config.http.token.is_some());
        let err = load("[http]\nlisten = \"localhost\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.listen") && err.contains("\"off\""), "{err}");
        let err = load("[http]\nmax_connections = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.max_connections"), "{err}");
    }

    #[test]
    fn each_repository_chooses_its_dispatch_mode() {
        let config = load(
            r#"
            [t3]
            base_branch = "trunk"
            [t3.projects]
            "acme/api" = "proj-api"
            "acme/web" = { project = "proj-web", dispatch = "http" }
            "acme/lib" = { project = "proj-lib", dispatch = "http", worktree_path = "/wt/{name}/{issue}" }
            "acme/app" = { project = "proj-app", base_branch = "develop", run_setup_script = false }
            "#,
            &[("AFK_WATCH_PUSH", "false")],
        )
        .unwrap();
        let projects = config.projects();
        let project = |repo: &str| projects[&Repo::new(repo).unwrap()].clone();
        let api = project("acme/api");
        assert_eq!(
            (api.dispatch, api.base_branch.as_str(), api.run_setup_script),
            (DispatchMode::WsWorktree, "trunk", None),
            "ws-worktree is the default, with [t3] base_branch"
        );
        let web = project("acme/web");
        assert_eq!((web.dispatch, web.worktree_path), (DispatchMode::Http, None));
        let lib = project("acme/lib");
        assert_eq!(
            lib.worktree_path,
            Some(WorktreeTemplate::new("/wt/{name}/{issue}").unwrap())
        );
        let app = project("acme/app");
        assert_eq!(
            (app.dispatch, app.base_branch.as_str(), app.run_setup_script),
            (DispatchMode::WsWorktree, "develop", Some(false))
        );
        assert!(!config.watch.push, "AFK_WATCH_PUSH=false turns push watching off");
        assert!(Config::default().watch.push, "push watching is on by default");
    }

    #[test]
    fn dispatch_settings_that_do_not_fit_the_mode_are_refused_with_the_repository_named() {
        // (the entry of "acme/api", what the error must name)
        let cases: [(&str, &[&str]); 5] = [
            (
                r#"{ project = "p", worktree_path = "/wt/{name}/{issue}" }"#,
                &["t3.projects", "acme/api", "worktree_path"],
            ),
            (
                r#"{ project = "p", dispatch = "http", worktree_path = "/wt/{repo}" }"#,
                &["{repo}"],
            ),
            (
                r#"{ project = "p", dispatch = "grpc" }"#,
                &["grpc", "ws-worktree"],
            ),
            (r#"{ project = "p", colour = "red" }"#, &["colour"]),
            ("7", &["t3.projects"]),
        ];
        for (entry, named) in cases {
            let err = load(&format!("[t3.projects]\n\"acme/api\" = {entry}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(named.iter().all(|n| err.contains(n)), "{entry}: {err}");
        }
    }

    #[test]
    fn token_providers_are_configured_per_credential() {
        let config = load(
            r#"
            [t3.token]
            provider = "vault"
            addr = "https://vault:8200"
            path = "afk/t3"
            auth = { method = "kubernetes", role = "afk" }
            [t3.read_token]
            provider = "env"
            var = "T3_READ_TOKEN"
            "#,
            &[],
        )
        .unwrap();
        assert!(matches!(config.t3_token(), ProviderSpec::Vault(_)));
        assert_eq!(
            config.t3_read_token(),
            Some(ProviderSpec::Env {
                var: "T3_READ_TOKEN".into()
            })
        );
        let defaults = load("", &[]).unwrap();
        assert_eq!(
            defaults.t3_token(),
            ProviderSpec::File {
                path: PathBuf::from("t3-token")
            }
        );
        assert_eq!(defaults.t3_read_token(), None);
        let err = load("[t3.token]\nprovider = \"file\"\npath = \"x\"\nmode = 1\n", &[]).unwrap_err();
        assert!(err.to_string().contains("t3.token"), "{err}");
    }

    #[test]
    fn string_keys_stay_strings_and_zero_timeouts_are_refused() {
        let config = load("", &[("AFK_T3_MODEL", "4")]).unwrap();
        assert_eq!(config.t3.model, "4");
        let err = load("[watch]\nturn_timeout = \"0s\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("watch.turn_timeout"), "{err}");
    }

    #[test]
    fn a_token_typed_into_the_file_is_never_echoed() {
        let err = load("[t3]\ntoken = \"sk-SECRET-abc123\"\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("t3.token") && !text.contains("sk-SECRET"), "{text}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load(
            "[limits]\nper_repo = 3\n",
            &[("AFK_LIMITS_PER_REPO", "7"), ("AFK_T3_URL", "http://x:1")],
        )
        .unwrap();
        assert_eq!(config.limits.per_repo, 7);
        assert_eq!(config.t3.url, "http://x:1");
    }

    #[test]
    fn budgets_are_off_unless_set_and_read_from_the_file_or_the_environment() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.budget.limits(), afk_core::BudgetLimits::default());
        let config = load(
            "[budget]\njob_agent_time = \"4h\"\nrepo_agent_time_per_day = \"off\"\nrepo_new_jobs_per_day = 20\n",
            &[("AFK_BUDGET_REPO_AGENT_TIME_PER_DAY", "1d")],
        )
        .unwrap();
        assert_eq!(
            config.budget.limits(),
            afk_core::BudgetLimits {
                job_agent_time: Some(Duration::from_secs(4 * 3600)),
                repo_agent_time_per_day: Some(Duration::from_secs(24 * 3600)),
                repo_new_jobs_per_day: Some(20),
            }
        );
        let error = load("[budget]\njob_agent_time = \"soon\"\n", &[]).unwrap_err();
        assert!(
            error
                .message
                .starts_with("key budget.job_agent_time: \"soon\" is not a duration"),
            "{}",
            error.message
        );
    }

    #[test]
    fn values_out_of_bounds_are_refused_naming_the_key_and_the_bound() {
        let github =
            "[github]\nrepos = [\"acme/api\"]\ntoken_file = \"t\"\n[t3.projects]\n\"acme/api\" = \"p\"\n";
        for (text, key, bound) in [
            (
                "[watch]\npoll_interval = \"1ns\"\n",
                "watch.poll_interval",
                "at least 100ms",
            ),
            (
                "[watch]\npoll_interval = \"99ms\"\n",
                "watch.poll_interval",
                "at least 100ms",
            ),
            ("[retry]\ncap = \"0s\"\n", "retry.cap", "at least retry.initial"),
            (
                "[budget]\njob_agent_time = \"0s\"\n",
                "budget.job_agent_time",
                "longer than zero (\"off\" for no limit)",
            ),
            (
                "[budget]\nrepo_agent_time_per_day = \"20000y\"\n",
                "budget.repo_agent_time_per_day",
                "at most 3650 days",
            ),
            (
                "[budget]\nrepo_new_jobs_per_day = 0\n",
                "budget.repo_new_jobs_per_day",
                "at least 1 (leave it out for no limit)",
            ),
            (
                "[retry]\ninitial = \"10m\"\ncap = \"5m\"\n",
                "retry.cap",
                "at least retry.initial (10m)",
            ),
            (
                "[retry]\ninitial = \"300000y\"\ncap = \"300000y\"\n",
                "retry.initial",
                "at most 3650 days",
            ),
            (
                "[watch]\nturn_timeout = \"20000y\"\n",
                "watch.turn_timeout",
                "at most 3650 days",
            ),
            ("[t3]\nurl = \"http://\"\n", "t3.url", "URL"),
            ("[t3]\nurl = \"ftp://t3\"\n", "t3.url", "http:// or https://"),
            ("[t3]\nweb_url = \"not a url\"\n", "t3.web_url", "not a URL"),
            (
                "[t3]\nbranch_prefix = \"../..~^:x\"\n",
                "t3.branch_prefix",
                "git branch name",
            ),
            (
                "[t3]\nbranch_prefix = \"a b/\"\n",
                "t3.branch_prefix",
                "git branch name",
            ),
            (
                "[t3]\nbranch_prefix = \".hidden/\"\n",
                "t3.branch_prefix",
                "git branch name",
            ),
            (
                "[t3]\nbase_branch = \"main..x\"\n",
                "t3.base_branch",
                "git branch name",
            ),
            (
                "[t3]\ninstance_id = \"\"\n",
                "t3.instance_id",
                "must not be empty",
            ),
            ("[t3]\nmodel = \" \"\n", "t3.model", "must not be empty"),
            ("[t3.projects]\n\"../..\" = \"p\"\n", "t3.projects", "OWNER/NAME"),
            ("[ledger]\nurl = \"sqlite://\"\n", "ledger.url", "names no file"),
        ] {
            let err = load(text, &[]).map(drop).expect_err(text).to_string();
            assert!(err.contains(key) && err.contains(bound), "{text}: {err}");
        }
        let with = |extra: &str| github.replace("[t3.projects]", &format!("{extra}\n[t3.projects]"));
        let err = load(&with("poll_interval = \"10ms\""), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("github.poll_interval") && err.contains("100ms"),
            "{err}"
        );
        let err = load(&with("repos = [\"../..\"]"), &[]).map(drop);
        assert!(err.is_err());
        // Long but representable durations, and the defaults, are fine.
        load(
            "[watch]\nturn_timeout = \"3650days\"\npoll_interval = \"100ms\"\n",
            &[],
        )
        .unwrap();
    }

    #[test]
    fn afk_run_refuses_a_ledger_that_does_not_persist() {
        for url in ["sqlite::memory:", "sqlite://x.db?mode=memory"] {
            let config = load(&format!("[ledger]\nurl = \"{url}\"\n"), &[]).unwrap();
            let err = config.check_for_run().unwrap_err().to_string();
            assert!(
                err.contains("ledger.url") && err.contains("keeps nothing"),
                "{err}"
            );
        }
        let config = load("[ledger]\nurl = \"sqlite://afk.db\"\n", &[]).unwrap();
        config.check_for_run().unwrap();
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let err = load("[watch]\npoll_interval = \"soon\"\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("afk.toml") && text.contains("watch.poll_interval"),
            "{text}"
        );

        let err = load("[limits]\nmax_concurent = 3\n", &[]).unwrap_err();
        assert!(err.to_string().contains("max_concurent"), "{err}");

        let err = load("[limits]\nmax_concurrent = 0\n", &[]).unwrap_err();
        assert!(err.to_string().contains("limits.max_concurrent"), "{err}");

        let err = load("", &[("AFK_LIMITS_PER_REPO", "many")]).unwrap_err();
        assert!(err.to_string().contains("AFK_LIMITS_PER_REPO"), "{err}");

        let err = load("[t3.projects]\n\"not-a-repo\" = \"p\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("t3.projects"), "{err}");
    }

    #[test]
    fn mistakes_inside_a_provider_table_name_the_full_key_and_the_form_expected() {
        // (the [t3.token] table, what the error must name)
        let cases: &[(&str, &[&str])] = &[
            (
                "provider = \"command\"\ncommand = [\"gh\"]\ncache_lifetime = \"soon\"",
                &["key t3.token.cache_lifetime", "a duration such as", "\"soon\""],
            ),
            ("provider = \"file\"", &["key t3.token.path", "missing", "path = "]),
            (
                "provider = \"vault\"\naddr = \"https://vault:8200\"\npath = \"afk/t3\"\nauth = { method = \"kubernetes\" }",
                &["key t3.token.auth.role", "missing", "role = \"afk\""],
            ),
            (
                "provider = \"vault\"\naddr = \"https://vault:8200\"\npath = \"afk/t3\"\nauth = { method = \"tokn\" }",
                &["key t3.token.auth.method", "\"tokn\"", "\"token\", \"kubernetes\""],
            ),
            ("provider = \"file\"\npath = \"x\"\ncache = \"5m\"", &["key t3.token.cache", "unknown key"]),
        ];
        for (table, named) in cases {
            let err = load(&format!("[t3.token]\n{table}\n"), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("afk.toml"), "{err}");
            assert!(named.iter().all(|n| err.contains(n)), "{table}: {err}");
            assert!(!err.contains("expected a provider table"), "{table}: {err}");
        }
        let err = load("[github.token]\nprovider = \"env\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("key github.token.var"), "{err}");
    }

    #[test]
    fn toml_syntax_errors_say_the_line_and_column() {
        let err = load("[t3]\nurl = \"http://t3\"\nmodel = claude\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("afk.toml") && err.contains("line 3, column 9"),
            "{err}"
        );
        let err = load("[limits]\nper_repo = 2\n[limits]\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert_eq!(line_and_column("ab\ncdé\nf", 7), (2, 4));
    }

    #[test]
    fn no_file_gives_working_defaults() {
        let config = Config::load(None, &|_| None).unwrap();
        assert_eq!(config.ledger.url, "sqlite://afk.db");
        assert_eq!(config.watch.poll_interval, Duration::from_secs(5));
        assert_eq!(config.retry_policy(), RetryPolicy::default());
    }
}
