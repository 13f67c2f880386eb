//! `afk doctor`: checks, in order, what afk needs to work, and says what to fix.
//!
//! 1. the configuration (errors name the key and the file; TOML errors the line and column);
//! 2. each secret provider: it is asked for its value, and the line says which provider and where
//!    it looked, never the value;
//! 3. T3: it answers; it accepts the read token (`orchestration:read`) and the operate token
//!    (`orchestration:operate`, checked with a command T3 refuses for a thread that does not
//!    exist, so nothing happens); each configured project exists, with its workspace root; the
//!    WebSocket RPC accepts afk; the configured provider instance is known and enabled;
//! 4. GitHub: the token or App is accepted, the App installation has the permissions
//!    docs/github.md lists, each repository is readable with the access afk needs, webhooks can be
//!    received when a secret is set;
//! 5. the ledger: reachable (without changing it), its migrations current, whether an `afk run`
//!    leads it (seen without taking its lock, so a starting `afk run` is never turned away), its
//!    running totals equal to a recount of its rows (`--repair` recounts them when they differ:
//!    the one thing the doctor changes, and only when asked).
//!
//! One line per check, `✓` or `✗` with the fix in a sentence (`--json`: one object). A check that
//! depends on one that failed is left out. The command fails (exit status 1) when a check a
//! person must fix failed; a failure that will pass by itself (a sealed Vault) is shown but does
//! not fail it.

use crate::cmd::out::{out, outln};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use afk_core::Repo;
use afk_github::{AppCredentials, AppId, ClientConfig, Credentials, GitHubClient, InstallationId};
use afk_ledger::{LeaderState, Ledger, TotalDrift};
use afk_secrets::redact::{redact_url, scrub};
use afk_secrets::{Freshness, ProviderSpec, SecretProvider};
use serde::Serialize;
use t3_client::wire::ReadModel;
use t3_client::{CommandId, RpcConnection, T3Client, T3Error, ThreadId};

use super::ConfigArg;
use crate::app;
use crate::config::{Config, DispatchMode, GitHubAuth};
use crate::control::waiting::{Credential, Topic, Waiting};

/// `afk doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Repair what the doctor can repair in place: the ledger's running totals (the counts
    /// `afk status` reads), recounted from its rows when they differ. Safe while `afk run` runs.
    #[arg(long)]
    pub repair: bool,
}

/// Runs every check and prints the report; fails when a person must fix something.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let path = args.config.path();
    let report = diagnose(path.as_deref(), &|name| std::env::var(name).ok(), args.repair).await;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        out!("{}", report.text())?;
    }
    match report.failed_for_a_person() {
        0 => Ok(()),
        n => anyhow::bail!("{n} check(s) failed; a person must fix them (see above)"),
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, stable for scripts: `config`, `secret.t3_token`, `t3.reachable`,
    /// `t3.read`, `t3.operate`, `t3.project.OWNER/NAME`, `t3.websocket`, `t3.provider`,
    /// `github.credentials`, `github.app_permissions`, `github.repo.OWNER/NAME`, `github.webhooks`,
    /// `ledger.reachable`, `ledger.migrations`, `ledger.leader`, `ledger.totals`.
    pub id: String,
    /// It passed.
    pub ok: bool,
    /// What was found, or what is wrong; never a secret.
    pub detail: String,
    /// What to do about a failure, in a sentence.
    pub fix: Option<String>,
    /// A failure that will pass by itself (a sealed Vault, T3 answering 503): shown, but it does
    /// not fail the command.
    pub will_pass: bool,
}

impl Check {
    fn ok(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            id: id.into(),
            ok: true,
            detail: scrub(&detail.into()).into_owned(),
            fix: None,
            will_pass: false,
        }
    }

    fn failed(id: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            id: id.into(),
            ok: false,
            detail: scrub(&detail.into()).into_owned(),
            fix: Some(scrub(&fix.into()).into_owned()),
            will_pass: false,
        }
    }

    /// A failure from a waiting reason: its words, and whether it will pass.
    fn waiting(id: impl Into<String>, waiting: &Waiting) -> Self {
        Check {
            will_pass: !waiting.needs_person,
            ..Check::failed(
                id,
                waiting.reason.clone(),
                waiting
                    .action
                    .clone()
                    .unwrap_or_else(|| "none: it will pass; run afk doctor again later".into()),
            )
        }
    }
}

/// Every check, in order.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The configuration file read, or `built-in defaults`.
    pub config: String,
    /// True when no check a person must fix failed.
    pub ok: bool,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// How many failed checks need a person.
    pub fn failed_for_a_person(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok && !c.will_pass).count()
    }

    /// The check with `id`, if it ran.
    pub fn check(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// One line per check, then a summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let mark = if check.ok { '✓' } else { '✗' };
            out.push_str(&format!("{mark} {}: {}", check.id, check.detail));
            if let Some(fix) = &check.fix {
                out.push_str(&format!(" — {fix}"));
            }
            out.push('\n');
        }
        let failed = self.checks.iter().filter(|c| !c.ok).count();
        let for_a_person = self.failed_for_a_person();
        out.push_str(&match (failed, for_a_person) {
            (0, _) => format!("all {} checks passed\n", self.checks.len()),
            (n, 0) => format!("{n} check(s) failed, each of which will pass by itself\n"),
            (_, n) => format!("{n} check(s) failed that a person must fix\n"),
        });
        out
    }
}

/// Runs every check for the configuration at `path` (none: the built-in defaults) with the
/// environment `env`; with `repair`, recounts the ledger's running totals when they differ.
pub async fn diagnose(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>, repair: bool) -> Report {
    let source = path.map_or_else(|| "built-in defaults".to_owned(), |p| p.display().to_string());
    let mut checks = Vec::new();
    match Config::load(path, env) {
        Ok(config) => {
            checks.push(Check::ok("config", format!("{source} is valid")));
            let tokens = check_secrets(&config, &mut checks).await;
            check_t3(&config, &tokens, &mut checks).await;
            check_local_source(&config, &mut checks);
            check_github(&config, &tokens, &mut checks).await;
            check_ledger(&config, &mut checks, repair).await;
        }
        Err(error) => checks.push(Check::failed(
            "config",
            error.to_string(),
            "correct it (every key is in docs/config.md); nothing else can be checked before",
        )),
    }
    let mut report = Report {
        config: source,
        ok: false,
        checks,
    };
    report.ok = report.failed_for_a_person() == 0;
    report
}

/// The local issue folder, when `[source.local]` is on: it exists and can be listed. A missing
/// folder stops nothing (afk takes nothing from it, and cancels nothing), so it is easy to miss.
fn check_local_source(config: &Config, checks: &mut Vec<Check>) {
    let Some(local) = &config.source.local else {
        return;
    };
    let dir = &local.dir;
    checks.push(match std::fs::read_dir(dir) {
        Ok(entries) => {
            let files = entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "md"))
                .count();
            Check::ok(
                "source.local",
                format!("{} lists {files} issue file(s)", dir.display()),
            )
        }
        Err(error) => Check::failed(
            "source.local",
            format!("the local issue folder {} cannot be read: {error}", dir.display()),
            "create it, or correct [source.local] dir (a relative path is taken from the working directory)",
        ),
    });
}

/// The providers that produced their value, for the checks that need them.
#[derive(Default)]
struct Tokens {
    /// The operate token's provider, when it answered.
    operate: Option<Arc<dyn SecretProvider>>,
    /// The read token's, when one is configured and it answered; `None` with `read_failed`.
    read: Option<Arc<dyn SecretProvider>>,
    read_failed: bool,
    /// GitHub's credentials, when they could be read.
    github: Option<Credentials>,
}

/// Asks each configured secret provider for its value (never shown).
async fn check_secrets(config: &Config, checks: &mut Vec<Check>) -> Tokens {
    let mut tokens = Tokens {
        operate: secret(
            checks,
            "secret.t3_token",
            "[t3.token] or token_file",
            &config.t3_token(),
        )
        .await,
        ..Tokens::default()
    };
    if let Some(spec) = config.t3_read_token() {
        tokens.read = secret(
            checks,
            "secret.t3_read_token",
            "[t3.read_token] or read_token_file",
            &spec,
        )
        .await;
        tokens.read_failed = tokens.read.is_none();
    }
    let Some(github) = &config.github else {
        return tokens;
    };
    tokens.github = match github.auth() {
        Ok(GitHubAuth::Token(spec)) => secret(checks, "secret.github_token", "[github] token", &spec)
            .await
            .map(Credentials::Token),
        Ok(GitHubAuth::App {
            app_id,
            installation_id,
            private_key,
        }) => secret(
            checks,
            "secret.github_private_key",
            "[github] private_key",
            &private_key,
        )
        .await
        .map(|private_key| {
            Credentials::App(AppCredentials {
                app_id: AppId(app_id),
                installation_id: InstallationId(installation_id),
                private_key,
            })
        }),
        // Refused at load already.
        Err(_) => None,
    };
    if let Some(spec) = github.webhook_secret() {
        secret(
            checks,
            "secret.github_webhook_secret",
            "[github] webhook_secret",
            &spec,
        )
        .await;
    }
    tokens
}

/// Builds the provider of `spec` and asks it once; the check names the provider and where it
/// looked. The provider, when it answered.
async fn secret(
    checks: &mut Vec<Check>,
    id: &str,
    key: &str,
    spec: &ProviderSpec,
) -> Option<Arc<dyn SecretProvider>> {
    let provider = match spec.build() {
        Ok(provider) => provider,
        Err(error) => {
            checks.push(Check::failed(
                id,
                format!("{spec}: {error}"),
                format!("correct {key} (docs/secrets.md)"),
            ));
            return None;
        }
    };
    match provider.get(Freshness::Cached).await {
        Ok(_) => {
            checks.push(Check::ok(id, format!("read from {spec}")));
            Some(provider)
        }
        Err(error) => {
            let fix = match (error.action(), error.needs_person()) {
                (Some(action), _) => action.to_owned(),
                (None, true) => format!("fix {key} or what it points at (docs/secrets.md)"),
                (None, false) => "none: it will pass; run afk doctor again later".to_owned(),
            };
            // The action goes in the fix, not twice.
            let shown = error.to_string();
            let shown = match error.action() {
                Some(action) => shown
                    .strip_suffix(&format!("; {action}"))
                    .unwrap_or(&shown)
                    .to_owned(),
                None => shown,
            };
            checks.push(Check {
                will_pass: !error.needs_person(),
                ..Check::failed(id, shown, fix)
            });
            None
        }
    }
}

/// T3: answers, the tokens' scopes, the projects, the WebSocket, the provider instance.
async fn check_t3(config: &Config, tokens: &Tokens, checks: &mut Vec<Check>) {
    let url = redact_url(&config.t3.url).into_owned();
    // The environment descriptor needs no token: it tells a T3 that is down from a refused token.
    // (A provider that is never asked.)
    let bare: Arc<dyn SecretProvider> = Arc::new(afk_secrets::EnvProvider::new("AFK_DOCTOR_NO_TOKEN"));
    let probe = match app::t3_client_with(config, bare) {
        Ok(client) => client,
        Err(error) => {
            checks.push(Check::failed(
                "t3.reachable",
                format!("{error:#}"),
                "correct [t3]",
            ));
            return;
        }
    };
    match probe.environment().await {
        Ok(environment) => checks.push(Check::ok(
            "t3.reachable",
            format!("T3 at {url} answers (version {})", environment.server_version),
        )),
        Err(error @ T3Error::Transport { .. }) => {
            checks.push(Check::failed(
                "t3.reachable",
                format!("no answer from T3 at {url}: {error}"),
                "start T3, or correct [t3] url",
            ));
            return;
        }
        Err(error) => {
            checks.push(Check::failed(
                "t3.reachable",
                format!("{url} does not answer as T3 Code does: {error}"),
                "correct [t3] url: it must be T3 Code's address",
            ));
            return;
        }
    }
    let operate = tokens
        .operate
        .clone()
        .and_then(|bearer| app::t3_client_with(config, bearer).ok());
    let (reader, credential) = match (&tokens.read, tokens.read_failed) {
        (Some(bearer), _) => (app::t3_client_with(config, bearer.clone()).ok(), Credential::READ),
        (None, true) => (None, Credential::READ),
        (None, false) => (operate.clone(), Credential::OPERATE),
    };
    let model = match &reader {
        Some(reader) => check_read(&url, reader, credential, checks).await,
        None => None,
    };
    let operate_refused = match &operate {
        Some(operate) => !check_operate(&url, operate, checks).await,
        None => true,
    };
    if let Some(model) = &model {
        check_projects(config, model, checks);
    }
    // The upgrade carries the same token: a refusal is said above already.
    if let (Some(operate), false) = (&operate, operate_refused) {
        let websocket = config.watch.push
            || config
                .projects()
                .values()
                .any(|p| p.dispatch == DispatchMode::WsWorktree);
        if websocket {
            check_websocket(operate, checks).await;
        }
    }
    // Only once the read token is known to work: its refusal is said above already.
    if let (Some(reader), Some(_)) = (&reader, &model) {
        check_provider(config, reader, checks).await;
    }
}

/// The snapshot with the read token (or the operate token, without one): `orchestration:read`.
async fn check_read(
    url: &str,
    reader: &T3Client,
    credential: Credential,
    checks: &mut Vec<Check>,
) -> Option<ReadModel> {
    match reader.snapshot().await {
        Ok(model) => {
            checks.push(Check::ok(
                "t3.read",
                format!(
                    "T3 at {url} accepts {} for reading (orchestration:read): {} projects, {} threads",
                    credential.name,
                    model.projects.len(),
                    model.threads.len()
                ),
            ));
            Some(model)
        }
        Err(error) => {
            let waiting = Waiting::t3(Topic::T3Read, credential, reader.base_url(), &error);
            checks.push(Check::waiting("t3.read", &waiting));
            None
        }
    }
}

/// The operate token's scope, with a `thread.session.stop` for a thread that does not exist: T3
/// checks the token first, then refuses the command, and nothing happens. False when T3 refused
/// the token.
async fn check_operate(url: &str, operate: &T3Client, checks: &mut Vec<Check>) -> bool {
    let Ok(nobody) = ThreadId::new(format!("afk-doctor-{}", uuid::Uuid::new_v4())) else {
        return false;
    };
    let judged = match operate.stop_session(&nobody, CommandId::generate()).await {
        Ok(_) => Ok(()),
        Err(error) if error.is_credential_problem() => Err(error),
        // T3 judged the command (its decider refuses it: no such thread): the token was taken.
        Err(error)
            if error.body().and_then(|b| b.reason.as_deref()) == Some("orchestration_dispatch_failed") =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    };
    match judged {
        Ok(()) => {
            checks.push(Check::ok(
                "t3.operate",
                format!("T3 at {url} accepts afk's T3 operate token for dispatching (orchestration:operate)"),
            ));
            true
        }
        Err(error) => {
            let waiting = Waiting::t3(Topic::T3Operate, Credential::OPERATE, operate.base_url(), &error);
            checks.push(Check::waiting("t3.operate", &waiting));
            !error.is_credential_problem()
        }
    }
}

/// Each `[t3.projects]` entry names a project T3 has, with its workspace root.
fn check_projects(config: &Config, model: &ReadModel, checks: &mut Vec<Check>) {
    let projects = config.projects();
    if projects.is_empty() {
        checks.push(Check::failed(
            "t3.projects",
            "no repository is mapped to a T3 project: every job would fail",
            "add \"OWNER/NAME\" = \"PROJECT_ID\" under [t3.projects]",
        ));
        return;
    }
    for (repo, settings) in projects {
        let id = format!("t3.project.{repo}");
        let found = model
            .projects
            .iter()
            .find(|p| p.id == settings.project && p.deleted_at.is_none());
        match found {
            None => {
                let known: Vec<String> = model
                    .projects
                    .iter()
                    .filter(|p| p.deleted_at.is_none())
                    .map(|p| format!("{} ({})", p.id, p.workspace_root))
                    .collect();
                checks.push(Check::failed(
                    id,
                    format!(
                        "T3 has no project {}; it has: {}",
                        settings.project,
                        match known.is_empty() {
                            true => "none".to_owned(),
                            false => known.join(", "),
                        }
                    ),
                    format!("create the project in T3, or correct \"{repo}\" under [t3.projects]"),
                ));
            }
            Some(project) if project.workspace_root.trim().is_empty() => checks.push(Check::failed(
                id,
                format!("T3's project {} has no workspace root", settings.project),
                "give the project its checkout in T3",
            )),
            Some(project) => checks.push(Check::ok(
                id,
                format!(
                    "T3 project {}, workspace root {}, dispatch {}",
                    settings.project,
                    project.workspace_root,
                    match settings.dispatch {
                        DispatchMode::WsWorktree => "ws-worktree",
                        DispatchMode::Http => "http",
                    }
                ),
            )),
        }
    }
}

/// The WebSocket upgrade with the operate token (worktree dispatch and the shell stream use it).
async fn check_websocket(operate: &T3Client, checks: &mut Vec<Check>) {
    match RpcConnection::connect(operate.base_url(), operate.bearer(), operate.rpc_settings()).await {
        Ok(connection) => checks.push(Check::ok(
            "t3.websocket",
            format!(
                "T3's WebSocket RPC at {} accepts afk",
                redact_url(connection.url())
            ),
        )),
        Err(error) => {
            let waiting = Waiting::t3(Topic::T3Operate, Credential::OPERATE, operate.base_url(), &error);
            checks.push(Check::waiting("t3.websocket", &waiting));
        }
    }
}

/// The configured provider instance (`[t3] instance_id`) is one T3 knows, enabled and installed.
async fn check_provider(config: &Config, reader: &T3Client, checks: &mut Vec<Check>) {
    let wanted = &config.t3.instance_id;
    let server = match reader.server_config().await {
        Ok(server) => server,
        Err(error) => {
            checks.push(Check {
                will_pass: error.is_transient(),
                ..Check::failed(
                    "t3.provider",
                    format!("cannot read T3's provider instances: {error}"),
                    "check that T3 is a version with server.getConfig and that the read token may use the WebSocket",
                )
            });
            return;
        }
    };
    let Some(provider) = server.providers.iter().find(|p| &p.instance_id == wanted) else {
        let known: Vec<&str> = server.providers.iter().map(|p| p.instance_id.as_str()).collect();
        checks.push(Check::failed(
            "t3.provider",
            format!(
                "T3 has no provider instance {wanted}; it has: {}",
                match known.is_empty() {
                    true => "none".to_owned(),
                    false => known.join(", "),
                }
            ),
            "set [t3] instance_id to one of them, or add the instance in T3's settings",
        ));
        return;
    };
    let message = provider
        .message
        .as_deref()
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    let problem = if !provider.is_available() {
        Some((
            format!(
                "this T3 lacks the driver of provider instance {wanted}: {}",
                provider.unavailable_reason.as_deref().unwrap_or("unavailable")
            ),
            "use a T3 build with the driver, or set [t3] instance_id to another instance",
        ))
    } else if !provider.enabled {
        Some((
            format!("T3's provider instance {wanted} is disabled"),
            "enable it in T3's settings (providers), or set [t3] instance_id to an enabled one",
        ))
    } else if !provider.installed {
        Some((
            format!("T3 cannot find the program of provider instance {wanted}{message}"),
            "install the agent's program where T3 runs, or set its path in T3's settings",
        ))
    } else if provider.status == "error" {
        Some((
            format!("T3 reports provider instance {wanted} in error{message}"),
            "fix the agent as T3's settings say (its login, its program)",
        ))
    } else {
        None
    };
    match problem {
        Some((detail, fix)) => checks.push(Check::failed("t3.provider", detail, fix)),
        None => checks.push(Check::ok(
            "t3.provider",
            format!(
                "T3's provider instance {wanted} ({}{}) is enabled, {}{message}",
                provider.driver,
                provider
                    .version
                    .as_deref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default(),
                provider.status
            ),
        )),
    }
}

/// GitHub: the credentials, the App's permissions, each repository, webhooks.
async fn check_github(config: &Config, tokens: &Tokens, checks: &mut Vec<Check>) {
    let Some(github) = &config.github else {
        return;
    };
    let Some(credentials) = tokens.github.clone() else {
        return;
    };
    let api = match url::Url::parse(&github.api_url) {
        Ok(api) => api,
        Err(error) => {
            checks.push(Check::failed(
                "github.credentials",
                format!("[github] api_url {:?}: {error}", github.api_url),
                "correct [github] api_url",
            ));
            return;
        }
    };
    let mut client_config = ClientConfig::new(api, credentials);
    client_config.timeout = Duration::from_secs(15);
    let client = match GitHubClient::new(client_config) {
        Ok(client) => client,
        Err(error) => {
            checks.push(Check::failed(
                "github.credentials",
                error.to_string(),
                "correct [github]",
            ));
            return;
        }
    };
    let login = match client.identity().await {
        Ok(login) => {
            checks.push(Check::ok(
                "github.credentials",
                format!("GitHub accepts afk's credentials: afk acts as {login}"),
            ));
            login
        }
        Err(error) => {
            checks.push(Check::waiting("github.credentials", &Waiting::github(&error)));
            return;
        }
    };
    match client.installation_permissions().await {
        Ok(Some(granted)) => {
            let missing = afk_github::access::missing_permissions(&granted);
            match missing.is_empty() {
                true => checks.push(Check::ok(
                    "github.app_permissions",
                    "the App installation has the permissions afk needs (issues: write, pull_requests, contents, metadata: read)",
                )),
                false => checks.push(Check::failed(
                    "github.app_permissions",
                    format!("the App installation lacks {}", missing.join(", ")),
                    "grant them in the App's settings and accept them on the installation (docs/github.md)",
                )),
            }
        }
        Ok(None) => {}
        Err(error) => checks.push(Check::waiting("github.app_permissions", &Waiting::github(&error))),
    }
    for name in &github.repos {
        let id = format!("github.repo.{name}");
        let Ok(repo) = Repo::new(name.clone()) else {
            continue;
        };
        match client.repository_access(&repo).await {
            Err(error) => checks.push(Check {
                will_pass: error.is_transient(),
                ..Check::failed(
                    id,
                    format!("{name} cannot be read: {error}"),
                    "correct the name under [github] repos, or give the credentials access to it",
                )
            }),
            Ok(access) => {
                let mut lacking = Vec::new();
                for (what, outcome) in [
                    ("its issues (Issues: read)", &access.issues),
                    ("its pull requests (Pull requests: read)", &access.pull_requests),
                    ("AFK.md (Contents: read)", &access.contents),
                ] {
                    if let Err(error) = outcome {
                        lacking.push(format!("cannot read {what}: {error}"));
                    }
                }
                if access.write == Some(false) {
                    lacking.push(format!(
                        "{login} has no write access (needed to comment, label and look up who labelled an issue)"
                    ));
                }
                match lacking.is_empty() {
                    true => checks.push(Check::ok(
                        id,
                        format!(
                            "issues, pull requests and AFK.md readable{}",
                            match access.write {
                                Some(true) => format!("; {login} may write"),
                                _ => String::new(),
                            }
                        ),
                    )),
                    false => checks.push(Check::failed(
                        id,
                        lacking.join("; "),
                        "give afk's credentials Issues read and write, Pull requests read, Contents read \
                         and Metadata read on it, and its account write access (docs/github.md)",
                    )),
                }
            }
        }
    }
    match (github.webhook_secret(), config.http.listen) {
        (Some(_), Some(listen)) => checks.push(Check::ok(
            "github.webhooks",
            format!(
                "webhooks are received at http://{listen}/webhooks/github, signed with the secret read above"
            ),
        )),
        (Some(_), None) => checks.push(Check::failed(
            "github.webhooks",
            "a webhook secret is configured but [http] listen is not: webhooks are off",
            "set [http] listen (e.g. \"0.0.0.0:8787\"), or remove the webhook secret",
        )),
        (None, _) => checks.push(Check::ok(
            "github.webhooks",
            format!(
                "webhooks are off (no [github] webhook_secret): afk polls every {}",
                humantime::format_duration(github.poll_interval)
            ),
        )),
    }
}

/// The ledger, looked at without changing it (with `repair`, its running totals recounted when
/// they differ).
async fn check_ledger(config: &Config, checks: &mut Vec<Check>, repair: bool) {
    let inspection = match Ledger::inspect(&config.ledger.url).await {
        Ok(inspection) => inspection,
        Err(error) => {
            checks.push(Check::failed(
                "ledger.reachable",
                error.to_string(),
                "correct [ledger] url, or start the database and let afk reach it",
            ));
            return;
        }
    };
    let url = &inspection.url_redacted;
    if !inspection.exists {
        checks.push(Check::ok(
            "ledger.reachable",
            format!("the ledger {url} does not exist yet: afk run creates it"),
        ));
        return;
    }
    checks.push(Check::ok(
        "ledger.reachable",
        format!("the ledger {url} is reachable"),
    ));
    let list = |versions: &[i64]| versions.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    if !inspection.unknown.is_empty() {
        checks.push(Check::failed(
            "ledger.migrations",
            format!(
                "a newer afk wrote the ledger: migration(s) {} are unknown to this one",
                list(&inspection.unknown)
            ),
            "run the afk that wrote it (or a newer one)",
        ));
    } else if !inspection.failed.is_empty() {
        checks.push(Check::failed(
            "ledger.migrations",
            format!(
                "migration(s) {} started but did not finish",
                list(&inspection.failed)
            ),
            "restore the database from a backup taken before, then run afk again",
        ));
    } else if inspection.pending.is_empty() {
        checks.push(Check::ok(
            "ledger.migrations",
            format!("its {} migrations are current", inspection.applied),
        ));
    } else {
        checks.push(Check::ok(
            "ledger.migrations",
            format!(
                "{} of its migrations ran; afk run applies the {} more ({}) at start",
                inspection.applied,
                inspection.pending.len(),
                list(&inspection.pending)
            ),
        ));
    }
    checks.push(Check::ok(
        "ledger.leader",
        match inspection.leader {
            LeaderState::Leading => "an afk run leads it now (a second one would stand by)",
            LeaderState::NoLeaderSeen => "no afk run seen leading it now",
            LeaderState::CannotTell => "cannot tell here whether an afk run leads it without taking its lock",
        },
    ));
    if let Some(drifts) = &inspection.totals {
        checks.push(check_totals(&config.ledger.url, drifts, repair).await);
    }
}

/// The ledger's running totals against a recount (`drifts`: those that differ), repaired with
/// `repair`.
async fn check_totals(url: &str, drifts: &[TotalDrift], repair: bool) -> Check {
    let said = |drifts: &[TotalDrift]| {
        let list: Vec<String> = drifts.iter().map(TotalDrift::to_string).collect();
        format!(
            "{} running total(s) differ from a recount of the rows ({})",
            drifts.len(),
            list.join("; ")
        )
    };
    if drifts.is_empty() {
        return Check::ok(
            "ledger.totals",
            "its running totals (jobs per state, attempts, events, agent time) match a recount",
        );
    }
    if !repair {
        return Check::failed(
            "ledger.totals",
            format!("{}: afk status shows them wrong", said(drifts)),
            "run afk doctor --repair to recount them (safe while afk run runs); a write that ran no \
             trigger (SQLite's REPLACE, PostgreSQL with triggers disabled, a restore) does this",
        );
    }
    match Ledger::repair_totals(url).await {
        Ok(repaired) if repaired.is_empty() => Check::ok(
            "ledger.totals",
            "its running totals match a recount (a write set them right meanwhile)",
        ),
        Ok(repaired) => Check::ok(
            "ledger.totals",
            format!("{}: recounted and repaired", said(&repaired)),
        ),
        Err(error) if error.is_lock_timeout() => Check::failed(
            "ledger.totals",
            format!(
                "{}; the repair waited {} s for the ledger's writers in vain: {error}",
                said(drifts),
                afk_ledger::REPAIR_LOCK_WAIT.as_secs()
            ),
            "a transaction has held the ledger for long (a SQL session left in a transaction, an \
             import): end it, then run afk doctor --repair again",
        ),
        Err(error) => Check::failed(
            "ledger.totals",
            format!("{}; the repair failed: {error}", said(drifts)),
            "run afk doctor --repair again once the database answers",
        ),
    }
}
