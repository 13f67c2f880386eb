//! `afk sim`: the stand-in on a port until Ctrl-C; `afk sim agent`: the simulated agent as a
//! codex app-server for the real T3 ([`crate::agent`]).

use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use tracing::info;

use crate::agent::AgentArgs;
use crate::config::{Scenario, SimConfig, SimProject, TokenGrant};
use crate::server::SimServer;

/// The help text that documents the scenario file and the agent's markers.
const AFTER_HELP: &str = "\
Simulated agent: after thread.turn.start the session is `starting`, then the turn runs for
--turn-duration and completes. Markers in the message text script it: [sim:fail] ends the turn in
error, [sim:hang] never ends it (interrupt or stop the session), [sim:duration=MS] sets its duration,
[sim:fail-times=N] fails the first N threads with the same title that carry it, [sim:start-fail]
fails the session start (no turn), [sim:ask] asks a person first (thread.user-input.respond).
Over the WebSocket RPC (/ws), a thread.turn.start with `bootstrap` creates the thread, records a
worktree under --worktrees-dir (after --bootstrap-delay and --worktree-add) and starts the turn; [sim:worktree-fail]
fails it at the worktree and the thread is deleted again; [sim:setup-fail] records a setup script
that failed to start (runSetupScript: true) and the turn goes on, as in T3.

Scenario file (TOML, every key optional; flags override it, tokens and projects add up):
  seed = 7
  turn_duration = \"2s\"
  startup_delay = \"50ms\"
  bootstrap_delay = \"250ms\"
  worktree_add = \"250ms\"
  interrupt_settle = \"150ms\"
  worktrees_dir = \"/tmp/t3-sim/worktrees\"
  [[tokens]]
  token = \"...\"
  scopes = [\"orchestration:read\", \"orchestration:operate\"]
  lifetime = \"1h\"
  [[projects]]
  id = \"proj-widgets\"
  workspace_root = \"/srv/widgets\"
  [faults]
  latency = \"20ms\"
  error_rate = 0.05
  drop_rate = 0.02
  lost_reply_rate = 0.01
  unavailable = { after = \"30s\", for = \"5s\" }
  ws_drop_after_items = 50
  silent_subscriptions = 1

Faults are drawn from one generator seeded with --seed, in request order, so runs repeat.

`afk sim agent app-server` is the simulated agent for the REAL T3 Code server: point T3's
providers.codex.binaryPath at a script `exec afk sim agent \"$@\"`; see `afk sim agent --help`.";

/// Arguments of `afk sim`. `Debug` never shows the tokens.
#[derive(Clone, clap::Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct SimArgs {
    /// `agent`: run the simulated agent for the real T3 instead of the stand-in server.
    #[command(subcommand)]
    pub command: Option<SimCommand>,
    /// The address to listen on (port 0 picks a free port; the URL is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:3773")]
    pub listen: SocketAddr,
    /// A bearer token the stand-in accepts and its scopes, e.g.
    /// `s3cret=orchestration:read,orchestration:operate` (repeatable). Never logged.
    #[arg(long = "token", value_name = "TOKEN=SCOPE[,SCOPE...]")]
    pub tokens: Vec<String>,
    /// How long the --token tokens stay valid (e.g. `10m`); for ever when omitted.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub token_lifetime: Option<Duration>,
    /// A project that exists from the start (repeatable).
    #[arg(long = "project", value_name = "ID=WORKSPACE_ROOT")]
    pub projects: Vec<String>,
    /// How long a simulated turn runs [default: 2s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub turn_duration: Option<Duration>,
    /// How long a session stays `starting` before its turn runs [default: 50ms].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub startup_delay: Option<Duration>,
    /// How long a worktree bootstrap takes to answer after creating its thread [default: 0].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub bootstrap_delay: Option<Duration>,
    /// How long a worktree bootstrap's `git worktree add` takes; a client gone meanwhile leaves
    /// the branch and worktree made but not on the thread [default: 0].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub worktree_add: Option<Duration>,
    /// The real T3's pace: 500ms bootstraps (half of it `git worktree add`), 750ms session starts, 150ms interrupt steps
    /// (other flags and the scenario file override it).
    #[arg(long)]
    pub realistic: bool,
    /// Seeds faults and minted ids [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Latency added to every request.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub latency: Option<Duration>,
    /// Share (0 to 1) of requests answered 500 instead of handled.
    #[arg(long, value_name = "SHARE")]
    pub error_rate: Option<f64>,
    /// Share (0 to 1) of requests whose connection is dropped instead of handled.
    #[arg(long, value_name = "SHARE")]
    pub drop_rate: Option<f64>,
    /// Share (0 to 1) of accepted dispatches whose reply is lost after the command was applied.
    #[arg(long, value_name = "SHARE")]
    pub lost_reply_rate: Option<f64>,
    /// Start of an outage (every request answered 503), after the server starts.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "unavailable_for")]
    pub unavailable_after: Option<Duration>,
    /// Length of that outage.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "unavailable_after")]
    pub unavailable_for: Option<Duration>,
    /// Where bootstrapped threads' worktrees are said to be (nothing is created there)
    /// [default: /tmp/t3-sim/worktrees].
    #[arg(long, value_name = "DIR")]
    pub worktrees_dir: Option<PathBuf>,
    /// Drop a WebSocket after it has sent this many shell stream items.
    #[arg(long, value_name = "N")]
    pub ws_drop_after_items: Option<u64>,
    /// Answer the first N shell subscriptions with silence (no snapshot, no synchronized).
    #[arg(long, value_name = "N")]
    pub silent_subscriptions: Option<u64>,
    /// A scenario file (TOML) with any of these settings; see below.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
}

/// What `afk sim` runs besides the stand-in server.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SimCommand {
    /// The simulated agent as a codex app-server, spawned by the real T3 Code server (point
    /// `providers.codex.binaryPath` at a script `exec afk sim agent "$@"`). Markers in a turn's
    /// text script it: `[sim:fail]`, `[sim:hang]`, `[sim:duration=MS]`, `[sim:ask]` (asks a
    /// person and waits); without one it commits a file in its working directory and completes.
    // Boxed: the agent's arguments would make every `afk` command as large as them.
    Agent(Box<AgentArgs>),
}

impl fmt::Debug for SimArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimArgs")
            .field("command", &self.command)
            .field("listen", &self.listen)
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .field("token_lifetime", &self.token_lifetime)
            .field("projects", &self.projects)
            .field("turn_duration", &self.turn_duration)
            .field("startup_delay", &self.startup_delay)
            .field("bootstrap_delay", &self.bootstrap_delay)
            .field("worktree_add", &self.worktree_add)
            .field("realistic", &self.realistic)
            .field("seed", &self.seed)
            .field("latency", &self.latency)
            .field("error_rate", &self.error_rate)
            .field("drop_rate", &self.drop_rate)
            .field("lost_reply_rate", &self.lost_reply_rate)
            .field("unavailable_after", &self.unavailable_after)
            .field("unavailable_for", &self.unavailable_for)
            .field("worktrees_dir", &self.worktrees_dir)
            .field("ws_drop_after_items", &self.ws_drop_after_items)
            .field("silent_subscriptions", &self.silent_subscriptions)
            .field("scenario", &self.scenario)
            .finish()
    }
}

impl SimArgs {
    /// The configuration these arguments describe: the scenario file first, then the flags.
    /// Errors name the flag or file and never quote a token.
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        let mut config = if self.realistic {
            SimConfig::realistic()
        } else {
            SimConfig::default()
        };
        if let Some(path) = &self.scenario {
            Scenario::load(path)?.apply_to(&mut config);
        }
        for (i, spec) in self.tokens.iter().enumerate() {
            let mut grant = parse_token(spec).with_context(|| format!("--token #{}", i + 1))?;
            grant.lifetime = self.token_lifetime;
            config.tokens.push(grant);
        }
        for spec in &self.projects {
            config.projects.push(parse_project(spec)?);
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
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        if let Some(latency) = self.latency {
            config.faults.latency = latency;
        }
        if let Some(rate) = self.error_rate {
            config.faults.error_rate = rate;
        }
        if let Some(rate) = self.drop_rate {
            config.faults.drop_rate = rate;
        }
        if let Some(rate) = self.lost_reply_rate {
            config.faults.lost_reply_rate = rate;
        }
        if let (Some(after), Some(lasting)) = (self.unavailable_after, self.unavailable_for) {
            config.faults.unavailable = Some((after, lasting));
        }
        if let Some(dir) = &self.worktrees_dir {
            config.worktrees_dir = dir.clone();
        }
        if let Some(items) = self.ws_drop_after_items {
            config.faults.ws_drop_after_items = Some(items);
        }
        if let Some(silent) = self.silent_subscriptions {
            config.faults.silent_subscriptions = silent;
        }
        config.faults.validate()?;
        Ok(config)
    }
}

/// Every scope T3 knows (its `AuthEnvironmentScope`): a misspelt one would give a token that T3
/// never accepts, and a test or a person would chase the wrong cause.
const T3_SCOPES: &[&str] = &[
    "orchestration:read",
    "orchestration:operate",
    "terminal:operate",
    "review:write",
    "access:read",
    "access:write",
    "relay:read",
    "relay:write",
];

/// `TOKEN=SCOPE[,SCOPE...]`. The token may itself contain `=` (base64 padding): the scopes are
/// what follows the last one.
fn parse_token(spec: &str) -> anyhow::Result<TokenGrant> {
    let Some((token, scopes)) = spec.rsplit_once('=') else {
        bail!("expected TOKEN=SCOPE[,SCOPE...] (the value is not shown: it holds a token)");
    };
    let scopes: Vec<String> = scopes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if token.trim().is_empty() || scopes.is_empty() {
        bail!("expected a non-empty TOKEN and at least one SCOPE, e.g. TOKEN=orchestration:read");
    }
    if let Some(unknown) = scopes.iter().find(|s| !T3_SCOPES.contains(&s.as_str())) {
        bail!(
            "unknown scope {unknown:?}: T3's scopes are {} (the token is not shown)",
            T3_SCOPES.join(", ")
        );
    }
    Ok(TokenGrant {
        token: token.trim().to_owned(),
        scopes,
        lifetime: None,
    })
}

/// `ID=WORKSPACE_ROOT`.
fn parse_project(spec: &str) -> anyhow::Result<SimProject> {
    match spec.split_once('=') {
        Some((id, root)) if !id.trim().is_empty() && !root.trim().is_empty() => {
            Ok(SimProject::new(id.trim(), root.trim()))
        }
        _ => bail!("--project {spec:?}: expected ID=WORKSPACE_ROOT"),
    }
}

/// Runs the stand-in until Ctrl-C: prints its URL on stdout, logs one line per request. With
/// `agent`, runs the simulated agent instead ([`crate::agent::run`]).
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    if let Some(SimCommand::Agent(agent)) = args.command {
        return crate::agent::run(*agent).await;
    }
    let config = args.to_config()?;
    info!(
        tokens = config.tokens.len(),
        projects = config.projects.len(),
        turn_duration = ?config.turn_duration,
        seed = config.seed,
        faults = ?config.faults,
        "t3-sim: starting"
    );
    let server = SimServer::start(args.listen, config)
        .await
        .with_context(|| format!("cannot start the T3 stand-in on {}", args.listen))?;
    // A reader that went away (`afk sim | head -1`) is no reason to stop serving.
    let _ = writeln!(std::io::stdout(), "{}", server.url()).and_then(|()| std::io::stdout().flush());
    info!(url = %server.url(), ws = %server.ws_url(), "t3-sim: serving T3's orchestration API and WebSocket RPC (a stand-in: no real agent runs); Ctrl-C stops it");
    tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
    info!("t3-sim: stopping");
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Debug, Subcommand)]
    enum Command {
        Sim(SimArgs),
    }

    fn parse(args: &[&str]) -> SimArgs {
        let mut argv = vec!["afk", "sim"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(Cli {
                command: Command::Sim(args),
            }) => args,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn flags_become_a_config() {
        let args = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--token",
            "abc==:x=orchestration:read,orchestration:operate",
            "--token-lifetime",
            "10m",
            "--project",
            "proj=/w/proj",
            "--turn-duration",
            "300ms",
            "--seed",
            "9",
            "--error-rate",
            "0.1",
            "--unavailable-after",
            "1s",
            "--unavailable-for",
            "2s",
            "--worktrees-dir",
            "/w/trees",
            "--ws-drop-after-items",
            "5",
            "--silent-subscriptions",
            "1",
        ]);
        let config = args.to_config().expect("valid flags");
        assert_eq!(config.tokens[0].token, "abc==:x");
        assert_eq!(config.tokens[0].scopes.len(), 2);
        assert_eq!(config.tokens[0].lifetime, Some(Duration::from_secs(600)));
        assert_eq!(config.projects[0], SimProject::new("proj", "/w/proj"));
        assert_eq!(config.turn_duration, Duration::from_millis(300));
        assert_eq!(config.seed, 9);
        assert_eq!(config.faults.error_rate, 0.1);
        assert_eq!(config.worktrees_dir, PathBuf::from("/w/trees"));
        assert_eq!(config.faults.ws_drop_after_items, Some(5));
        assert_eq!(config.faults.silent_subscriptions, 1);
        assert_eq!(
            config.faults.unavailable,
            Some((Duration::from_secs(1), Duration::from_secs(2)))
        );
    }

    #[test]
    fn a_scenario_file_is_read_and_flags_override_it() {
        let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::io::Write::write_all(
            &mut file,
            b"seed = 3\nturn_duration = \"1s\"\n[[projects]]\nid = \"a\"\nworkspace_root = \"/a\"\n",
        )
        .expect("written");
        let path = file.path().to_str().expect("a UTF-8 path").to_owned();
        let args = parse(&["--scenario", &path, "--seed", "4", "--project", "b=/b"]);
        let config = args.to_config().expect("valid");
        assert_eq!(config.seed, 4, "the flag wins");
        assert_eq!(
            config.turn_duration,
            Duration::from_secs(1),
            "the file's value stays"
        );
        let ids: Vec<&str> = config.projects.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);

        let missing = parse(&["--scenario", "/nonexistent/scenario.toml"]);
        let err = format!("{:#}", missing.to_config().unwrap_err());
        assert!(err.contains("/nonexistent/scenario.toml"), "{err}");
    }

    #[test]
    fn a_bad_token_flag_is_refused_without_echoing_it() {
        let args = parse(&["--token", "s3cret-no-scopes"]);
        let err = format!("{:#}", args.to_config().unwrap_err());
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains("--token #1"), "{err}");
        assert!(!format!("{args:?}").contains("s3cret"));

        let misspelt = parse(&["--token", "s3cret=orchestration:raed"]);
        let err = format!("{:#}", misspelt.to_config().unwrap_err());
        assert!(err.contains("unknown scope \"orchestration:raed\""), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        let known = parse(&["--token", "s3cret=orchestration:read,terminal:operate"]);
        assert_eq!(known.to_config().expect("valid").tokens[0].scopes.len(), 2);
    }

    #[test]
    fn agent_takes_t3s_arguments_and_the_stand_in_keeps_its_flags() {
        let args = parse(&[
            "agent",
            "app-server",
            "-c",
            "mcp_servers.t3-code.url=http://127.0.0.1:1/mcp",
            "--config=x",
        ]);
        let Some(SimCommand::Agent(agent)) = args.command else {
            panic!("not the agent: {args:?}");
        };
        match agent.mode {
            crate::agent::AgentMode::AppServer { args } => assert_eq!(args.len(), 3, "{args:?}"),
            other => panic!("not the agent's app-server: {other:?}"),
        }
        let args = parse(&["agent", "--turn-duration", "2s", "exec", "--json", "-"]);
        let Some(SimCommand::Agent(agent)) = args.command else {
            panic!("not the agent: {args:?}");
        };
        assert_eq!(agent.turn_duration, Some(Duration::from_secs(2)));
        assert!(matches!(agent.mode, crate::agent::AgentMode::Exec { .. }));
        let args = parse(&["--listen", "127.0.0.1:0"]);
        assert!(args.command.is_none());
        assert_eq!(args.listen.port(), 0);
    }

    #[test]
    fn a_bad_rate_is_refused() {
        let args = parse(&["--drop-rate", "2"]);
        assert!(format!("{}", args.to_config().unwrap_err()).contains("drop_rate"));
    }

    #[test]
    fn help_documents_the_scenario_file_and_markers() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("sim")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.contains("[sim:fail-times=N]"), "{help}");
        assert!(help.contains("[faults]"), "{help}");
        assert!(help.contains("--scenario"), "{help}");
    }
}
