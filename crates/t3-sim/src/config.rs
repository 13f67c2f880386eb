//! How a stand-in is set up: tokens, projects, the simulated agent's pace and the faults to
//! inject; and the scenario file that holds the same settings for `afk sim --scenario`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use t3_client::wire::{scopes, ServerProvider};

/// Everything a stand-in starts with. `Default` has no token (so every authenticated request is
/// refused until a test adds one), no project, a 2 s turn, seed 0, no faults and a fast pace (a
/// bootstrap answers at once, a session starts in 50 ms); [`SimConfig::realistic`] has the real
/// T3's pace.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// The bearer tokens the stand-in accepts, with their scopes and lifetimes.
    pub tokens: Vec<TokenGrant>,
    /// Projects that exist from the start (as if created with `project.create`).
    pub projects: Vec<SimProject>,
    /// How long a turn runs before it completes, unless its text says otherwise
    /// (`[sim:duration=MS]`). Default 2 s.
    pub turn_duration: Duration,
    /// How long a session stays `starting` (with no turn admitted yet) before its turn runs.
    /// Default 50 ms: afk must cope with a thread whose `latestTurn` is still `null`.
    pub startup_delay: Duration,
    /// How long a worktree bootstrap takes between creating its thread and its `git worktree
    /// add` (see `worktree_add`); a client that disconnects in this window leaves the thread
    /// half made, with no branch. Default 0 (no window); the real T3 takes 0.25–1.5 s for the
    /// two together.
    pub bootstrap_delay: Duration,
    /// How long the `git worktree add` of a worktree bootstrap takes, after `bootstrap_delay`:
    /// a client that disconnects in this window leaves the thread half made with its branch and
    /// worktree made but not recorded on it (git runs to its end; T3 records the worktree only
    /// after it). Default 0 (no window).
    pub worktree_add: Duration,
    /// After an interrupt naming the running turn: how long until the session reads `ready`,
    /// and again until T3 marks the turn `completed`. Default 20 ms; the real T3 takes
    /// 0.1–0.3 s for each.
    pub interrupt_settle: Duration,
    /// Seeds every random choice (faults and the ids the stand-in mints), so that a run repeats.
    pub seed: u64,
    /// The faults to inject. Default: none.
    pub faults: FaultPlan,
    /// Where T3 would add the git worktrees of bootstrapped threads (T3's `worktrees` base
    /// dir): a thread's worktree path is `<worktrees_dir>/<basename of projectCwd>/<branch with
    /// '/' replaced by '-'>`, as T3 names it. Nothing is created there. Default
    /// `/tmp/t3-sim/worktrees`.
    pub worktrees_dir: PathBuf,
    /// The provider instances `server.getConfig` reports, as T3 reports its own. Default:
    /// `claudeAgent` and `codex`, both enabled and ready ([`SimConfig::default_providers`]).
    pub providers: Vec<ServerProvider>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            projects: Vec::new(),
            turn_duration: Duration::from_secs(2),
            startup_delay: Duration::from_millis(50),
            bootstrap_delay: Duration::ZERO,
            worktree_add: Duration::ZERO,
            interrupt_settle: Duration::from_millis(20),
            seed: 0,
            faults: FaultPlan::default(),
            worktrees_dir: PathBuf::from("/tmp/t3-sim/worktrees"),
            providers: SimConfig::default_providers(),
        }
    }
}

impl SimConfig {
    /// The default configuration at the real T3's pace, as measured against it (`t3_sim::real`):
    /// a bootstrap answers after 500 ms (half of it its `git worktree add`), its turn starts 750 ms later (`latestTurn` null,
    /// session `starting` meanwhile), an interrupt settles in 150 ms steps. For tests whose
    /// subject is timing; the default is fast.
    pub fn realistic() -> SimConfig {
        SimConfig {
            bootstrap_delay: Duration::from_millis(250),
            worktree_add: Duration::from_millis(250),
            startup_delay: Duration::from_millis(750),
            interrupt_settle: Duration::from_millis(150),
            ..SimConfig::default()
        }
    }

    /// `claudeAgent` and `codex`, enabled, installed and ready: a T3 set up to run agents.
    pub fn default_providers() -> Vec<ServerProvider> {
        ["claudeAgent", "codex"]
            .into_iter()
            .map(|id| ServerProvider {
                instance_id: id.into(),
                driver: id.into(),
                enabled: true,
                installed: true,
                version: Some("1.0.0".into()),
                status: "ready".into(),
                availability: None,
                unavailable_reason: None,
                message: None,
            })
            .collect()
    }
}

/// A bearer token the stand-in accepts. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The token, as sent in `Authorization: Bearer <token>`.
    pub token: String,
    /// Its scopes, e.g. `orchestration:read`; a request needing another scope gets 403.
    pub scopes: Vec<String>,
    /// How long it is valid from the moment it is granted (server start, or
    /// [`crate::SimServer::grant_token`]); `None` for ever. An expired token gets 401
    /// `auth_invalid` like an unknown one, as T3's expired access tokens do.
    pub lifetime: Option<Duration>,
}

impl TokenGrant {
    /// A token that may read and operate (`orchestration:read` and `orchestration:operate`), what
    /// afk needs.
    pub fn operate(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            scopes: vec![
                scopes::ORCHESTRATION_READ.into(),
                scopes::ORCHESTRATION_OPERATE.into(),
            ],
            lifetime: None,
        }
    }

    /// A token that may only read (`orchestration:read`).
    pub fn read_only(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            scopes: vec![scopes::ORCHESTRATION_READ.into()],
            lifetime: None,
        }
    }

    /// The same grant, expiring `lifetime` after it is granted.
    pub fn expiring_after(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }
}

impl fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGrant")
            .field("token", &"[redacted]")
            .field("scopes", &self.scopes)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// A project that exists from the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimProject {
    /// Its id (what afk's configuration names as the repository's T3 project).
    pub id: String,
    /// The checkout its threads work in. Nothing is read or written there.
    pub workspace_root: String,
    /// Its title; the id when `None`.
    pub title: Option<String>,
}

impl SimProject {
    /// A project `id` working in `workspace_root`, titled after its id.
    pub fn new(id: impl Into<String>, workspace_root: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            workspace_root: workspace_root.into(),
            title: None,
        }
    }
}

/// The faults to inject. Every random choice is drawn from one generator seeded with
/// [`SimConfig::seed`], in the order requests arrive, so a sequential client sees the same faults
/// on every run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// Added to every request before anything else happens.
    pub latency: Duration,
    /// The share (0 to 1) of requests answered with a 500 `internal_error` instead of being
    /// handled; a dispatch answered so is **not** applied.
    pub error_rate: f64,
    /// The share (0 to 1) of requests whose connection is dropped instead of being handled (the
    /// client sees the connection close mid-reply); a dispatch dropped so is **not** applied.
    pub drop_rate: f64,
    /// The share (0 to 1) of **accepted** dispatches whose reply is lost: the command is applied,
    /// then the connection drops. This is the fault that tests `commandId` deduplication.
    pub lost_reply_rate: f64,
    /// A burst of unavailability: starting this long after the plan takes effect (server start,
    /// or [`crate::SimServer::set_faults`]), for this long, every request is answered 503.
    pub unavailable: Option<(Duration, Duration)>,
    /// WebSocket only: drop a socket (TCP closed, no close frame) once it has sent this many
    /// shell stream items (`subscribeShell` values, counted per connection over all its
    /// streams). A chunk that would pass the count is cut at it. `None`: never.
    pub ws_drop_after_items: Option<u64>,
    /// WebSocket only: the first this many `orchestration.subscribeShell` requests after the plan
    /// takes effect are answered with silence: no snapshot, no replay, no `synchronized`, ever,
    /// while the socket stays open and its pings are answered (a subscription stuck in T3). The
    /// stream ends only when the client interrupts it or leaves. Default 0.
    pub silent_subscriptions: u64,
}

impl FaultPlan {
    /// Checks that the rates are shares: each between 0 and 1, and `error_rate + drop_rate` at
    /// most 1 (they are drawn from the same roll).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
            ("lost_reply_rate", self.lost_reply_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(ConfigError::Rate { name, rate });
            }
        }
        if self.error_rate + self.drop_rate > 1.0 {
            return Err(ConfigError::RatesOverOne {
                error_rate: self.error_rate,
                drop_rate: self.drop_rate,
            });
        }
        Ok(())
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A fault rate outside `[0, 1]`.
    #[error("fault rate {name} is {rate}, but a rate must be between 0 and 1")]
    Rate {
        /// The rate's name.
        name: &'static str,
        /// Its value.
        rate: f64,
    },
    /// `error_rate + drop_rate` over 1.
    #[error("error_rate ({error_rate}) plus drop_rate ({drop_rate}) is over 1; together they are one share of requests")]
    RatesOverOne {
        /// The 5xx share.
        error_rate: f64,
        /// The dropped-connection share.
        drop_rate: f64,
    },
    /// The scenario file could not be read.
    #[error("cannot read the scenario file {path}: {source}")]
    ReadScenario {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The scenario file is not a valid scenario.
    #[error("the scenario file {path} is invalid: {message}")]
    InvalidScenario {
        /// The file.
        path: String,
        /// What is wrong, with the line and key (never a token value).
        message: String,
    },
}

/// A scenario file (TOML): the same settings as [`SimConfig`], every key optional.
///
/// ```toml
/// seed = 7
/// turn_duration = "2s"          # humantime: "500ms", "2s", "1m"
/// startup_delay = "50ms"
/// bootstrap_delay = "250ms"     # a bootstrap's steps before `git worktree add` (default 0)
/// worktree_add = "250ms"        # a bootstrap's `git worktree add` (default 0)
/// interrupt_settle = "150ms"
/// worktrees_dir = "/tmp/t3-sim/worktrees"
///
/// [[tokens]]
/// token = "test-operate-token"
/// scopes = ["orchestration:read", "orchestration:operate"]
/// lifetime = "1h"               # optional
///
/// [[projects]]
/// id = "proj-widgets"
/// workspace_root = "/tmp/widgets"
/// title = "widgets"             # optional
///
/// [faults]
/// latency = "20ms"
/// error_rate = 0.05
/// drop_rate = 0.02
/// lost_reply_rate = 0.01
/// unavailable = { after = "30s", for = "5s" }
/// ws_drop_after_items = 50      # WebSocket: drop a socket after 50 shell stream items
/// silent_subscriptions = 1      # WebSocket: the first subscribeShell is answered with silence
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// [`SimConfig::seed`].
    pub seed: Option<u64>,
    /// [`SimConfig::turn_duration`].
    #[serde(default, deserialize_with = "opt_duration")]
    pub turn_duration: Option<Duration>,
    /// [`SimConfig::startup_delay`].
    #[serde(default, deserialize_with = "opt_duration")]
    pub startup_delay: Option<Duration>,
    /// [`SimConfig::bootstrap_delay`].
    #[serde(default, deserialize_with = "opt_duration")]
    pub bootstrap_delay: Option<Duration>,
    /// [`SimConfig::worktree_add`].
    #[serde(default, deserialize_with = "opt_duration")]
    pub worktree_add: Option<Duration>,
    /// [`SimConfig::interrupt_settle`].
    #[serde(default, deserialize_with = "opt_duration")]
    pub interrupt_settle: Option<Duration>,
    /// [`SimConfig::worktrees_dir`].
    pub worktrees_dir: Option<PathBuf>,
    /// Tokens, added to those given otherwise.
    #[serde(default)]
    pub tokens: Vec<ScenarioToken>,
    /// Projects, added to those given otherwise.
    #[serde(default)]
    pub projects: Vec<ScenarioProject>,
    /// Faults.
    #[serde(default)]
    pub faults: ScenarioFaults,
}

/// A `[[tokens]]` entry. `Debug` never shows the token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioToken {
    /// The bearer token.
    pub token: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// Its lifetime.
    #[serde(default, deserialize_with = "opt_duration")]
    pub lifetime: Option<Duration>,
}

impl fmt::Debug for ScenarioToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScenarioToken")
            .field("token", &"[redacted]")
            .field("scopes", &self.scopes)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// A `[[projects]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioProject {
    /// Its id.
    pub id: String,
    /// Its workspace root.
    pub workspace_root: String,
    /// Its title.
    pub title: Option<String>,
}

/// The `[faults]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFaults {
    /// [`FaultPlan::latency`].
    #[serde(default, deserialize_with = "opt_duration")]
    pub latency: Option<Duration>,
    /// [`FaultPlan::error_rate`].
    pub error_rate: Option<f64>,
    /// [`FaultPlan::drop_rate`].
    pub drop_rate: Option<f64>,
    /// [`FaultPlan::lost_reply_rate`].
    pub lost_reply_rate: Option<f64>,
    /// [`FaultPlan::unavailable`].
    pub unavailable: Option<ScenarioOutage>,
    /// [`FaultPlan::ws_drop_after_items`].
    pub ws_drop_after_items: Option<u64>,
    /// [`FaultPlan::silent_subscriptions`].
    pub silent_subscriptions: Option<u64>,
}

/// `unavailable = { after = "30s", for = "5s" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioOutage {
    /// When the outage starts, after the server starts.
    #[serde(deserialize_with = "duration")]
    pub after: Duration,
    /// How long it lasts.
    #[serde(rename = "for", deserialize_with = "duration")]
    pub lasting: Duration,
}

impl Scenario {
    /// Reads and parses the scenario file at `path`.
    pub fn load(path: &Path) -> Result<Scenario, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadScenario {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text).map_err(|message| ConfigError::InvalidScenario {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses a scenario from TOML text; the error names the line and what is wrong. It never
    /// quotes the offending line, which may hold a token.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            match e.span() {
                Some(span) => {
                    let before = text.get(..span.start).unwrap_or(text);
                    let line = before.matches('\n').count() + 1;
                    // Name the key of the offending line (what precedes its `=`), never its value.
                    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                    let key = text
                        .get(line_start..)
                        .and_then(|rest| rest.lines().next())
                        .and_then(|l| l.split_once('='))
                        .map(|(key, _)| key.trim())
                        .filter(|key| !key.is_empty());
                    match key {
                        Some(key) => format!("line {line} ({key}): {message}"),
                        None => format!("line {line}: {message}"),
                    }
                }
                None => message,
            }
        })
    }

    /// Lays the scenario over `config`: set keys replace the config's values, tokens and projects
    /// are added.
    pub fn apply_to(&self, config: &mut SimConfig) {
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        if let Some(d) = self.turn_duration {
            config.turn_duration = d;
        }
        if let Some(d) = self.startup_delay {
            config.startup_delay = d;
        }
        if let Some(d) = self.bootstrap_delay {
            config.bootstrap_delay = d;
        }
        if let Some(d) = self.worktree_add {
            config.worktree_add = d;
        }
        if let Some(d) = self.interrupt_settle {
            config.interrupt_settle = d;
        }
        if let Some(dir) = &self.worktrees_dir {
            config.worktrees_dir = dir.clone();
        }
        config.tokens.extend(self.tokens.iter().map(|t| TokenGrant {
            token: t.token.clone(),
            scopes: t.scopes.clone(),
            lifetime: t.lifetime,
        }));
        config.projects.extend(self.projects.iter().map(|p| SimProject {
            id: p.id.clone(),
            workspace_root: p.workspace_root.clone(),
            title: p.title.clone(),
        }));
        let faults = &self.faults;
        if let Some(latency) = faults.latency {
            config.faults.latency = latency;
        }
        if let Some(rate) = faults.error_rate {
            config.faults.error_rate = rate;
        }
        if let Some(rate) = faults.drop_rate {
            config.faults.drop_rate = rate;
        }
        if let Some(rate) = faults.lost_reply_rate {
            config.faults.lost_reply_rate = rate;
        }
        if let Some(outage) = &faults.unavailable {
            config.faults.unavailable = Some((outage.after, outage.lasting));
        }
        if let Some(items) = faults.ws_drop_after_items {
            config.faults.ws_drop_after_items = Some(items);
        }
        if let Some(silent) = faults.silent_subscriptions {
            config.faults.silent_subscriptions = silent;
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration like \"500ms\" or \"2s\": {e}"
        ))
    })
}

fn opt_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scenario_file_sets_everything() {
        let scenario = Scenario::parse(
            r#"
            seed = 7
            turn_duration = "150ms"
            bootstrap_delay = "300ms"
            [[tokens]]
            token = "tok"
            scopes = ["orchestration:read"]
            lifetime = "1h"
            [[projects]]
            id = "p"
            workspace_root = "/w"
            [faults]
            latency = "5ms"
            error_rate = 0.25
            unavailable = { after = "1s", for = "2s" }
            ws_drop_after_items = 3
            silent_subscriptions = 2
            "#,
        )
        .expect("valid scenario");
        let mut config = SimConfig::default();
        scenario.apply_to(&mut config);
        assert_eq!(config.seed, 7);
        assert_eq!(config.turn_duration, Duration::from_millis(150));
        assert_eq!(config.bootstrap_delay, Duration::from_millis(300));
        assert_eq!(config.tokens[0].lifetime, Some(Duration::from_secs(3600)));
        assert_eq!(config.projects[0].id, "p");
        assert_eq!(config.faults.latency, Duration::from_millis(5));
        assert_eq!(config.faults.error_rate, 0.25);
        assert_eq!(
            config.faults.unavailable,
            Some((Duration::from_secs(1), Duration::from_secs(2)))
        );
        assert_eq!(config.faults.ws_drop_after_items, Some(3));
        assert_eq!(config.faults.silent_subscriptions, 2);
    }

    #[test]
    fn a_scenario_error_names_the_key_without_echoing_tokens() {
        let err = Scenario::parse("[faults]\nlatency = \"soon\"\n").unwrap_err();
        assert!(err.contains("latency"), "{err}");
        let err = Scenario::parse("[[tokens]]\ntoken = \"s3cret\"\nscopez = []\n").unwrap_err();
        assert!(err.contains("scopez"), "{err}");
    }

    #[test]
    fn rates_must_be_shares() {
        let plan = FaultPlan {
            error_rate: 1.5,
            ..FaultPlan::default()
        };
        assert!(plan.validate().is_err());
        let plan = FaultPlan {
            error_rate: 0.6,
            drop_rate: 0.6,
            ..FaultPlan::default()
        };
        assert!(plan.validate().is_err());
        assert!(FaultPlan::default().validate().is_ok());
    }

    #[test]
    fn token_grants_never_show_the_token() {
        let grant = TokenGrant::operate("s3cret-value");
        assert!(!format!("{grant:?}").contains("s3cret"));
    }
}
