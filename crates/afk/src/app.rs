//! Start-up: [`App::build`] wires every part of afk from a [`Config`] (this is the only place that
//! knows which key feeds which part), and [`App::run_until_stopped`] runs them until a shutdown.
//! `afk run`, `afk demo`, the tests and the benchmarks all start afk this way; tests listen on
//! port 0 and read the address back with [`App::http_addr`].

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use afk_core::Repo;
use afk_github::{
    AppCredentials, AppId, ClientConfig, Credentials, GitHubClient, InstallationId, Intake, IntakeConfig,
    PolicyStore, Reporter, WebhookEvent,
};
use afk_ledger::Ledger;
use afk_secrets::redact::redact_url;
use anyhow::Context;
use chrono::{DateTime, Utc};
use t3_client::{
    AgentSettings, FeedSettings, ReqwestTransport, SecretProvider, ShellFeed, T3Client, TransportConfig,
};
use tokio::sync::mpsc;

use crate::config::{Config, DispatchMode, GitHubAuth};
use crate::control::{
    ControlError, ControlPlane, GitHubSide, Limits, RunEnd, Settings, TickReport, Timeouts,
};
use crate::policy::{Dispatch, RepoTarget};
use crate::status::{self, Hub, Leadership, Links, Listener, Metrics};

/// afk, wired from its configuration: the control plane and, unless `[http] listen` is `"off"`,
/// its HTTP listener (already serving once built).
pub struct App {
    plane: ControlPlane,
    http: Option<Listener>,
    hub: Option<Arc<Hub>>,
    poll_interval: std::time::Duration,
    t3_url: String,
}

impl App {
    /// Opens the ledger, builds the T3 clients (and the shell stream with `[watch] push`), the
    /// GitHub side with `[github]`, and binds and serves `[http] listen`. Errors name the key
    /// whose value could not be used.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let (events_tx, events_rx) = mpsc::channel(256);
        let webhooks_on = config
            .github
            .as_ref()
            .is_some_and(|g| g.webhook_secret().is_some());
        if webhooks_on && config.http.listen.is_none() {
            tracing::warn!(
                "a GitHub webhook secret is configured but [http] listen is not: webhooks are off, polling only"
            );
        }
        let events = (webhooks_on && config.http.listen.is_some()).then_some(events_rx);
        let ledger = open_ledger(&config).await?;
        let hub = match config.http.listen {
            Some(_) => {
                let token = match &config.http.token {
                    Some(spec) => Some(spec.build().context("[http.token]")?),
                    None => None,
                };
                Some(Hub::new(ledger.clone(), token, links(&config)))
            }
            None => None,
        };
        let metrics = hub.as_ref().map(|(hub, _)| hub.metrics().clone());
        let mut plane = control_plane(&config, ledger, metrics.clone()).await?;
        if let Some(github) = github_side(&config, events, metrics)? {
            plane = plane.with_github(github);
        }
        let (http, hub) = match (config.http.listen, hub) {
            (Some(listen), Some((hub, link))) => {
                plane = plane.with_status(link);
                (
                    Some(serve(&config, listen, hub.clone(), events_tx).await?),
                    Some(hub),
                )
            }
            _ => (None, None),
        };
        Ok(App {
            plane,
            http,
            hub,
            poll_interval: config.watch.poll_interval,
            t3_url: config.t3.url.clone(),
        })
    }

    /// Where the HTTP listener listens (the port chosen when `[http] listen` asked for port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|l| l.addr)
    }

    /// The status surface's hub, when the listener is on.
    pub fn status(&self) -> Option<&Arc<Hub>> {
        self.hub.as_ref()
    }

    /// The ledger this afk records in (a clone shares its connections).
    pub fn ledger(&self) -> &Ledger {
        self.plane.ledger()
    }

    /// The control plane, for driving it tick by tick.
    pub fn control_plane(&mut self) -> &mut ControlPlane {
        &mut self.plane
    }

    /// One pass of the control loop at `now` (tests and benchmarks drive afk so; the run loop
    /// does the same on every poll).
    pub async fn tick(&mut self, now: DateTime<Utc>) -> Result<TickReport, ControlError> {
        self.plane.tick(now).await
    }

    /// Runs afk until `shutdown` resolves: see [`App::run`].
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.run(shutdown, |_| {}).await
    }

    /// Takes the ledger's leadership (standing by while another `afk run` holds it: one control
    /// plane per ledger), then ticks every `[watch] poll_interval`, and at once on a webhook or a
    /// thread changing state, until `shutdown` resolves; the tick in progress is finished first.
    /// `on_tick` sees each tick's report. The HTTP listener stops with it.
    ///
    /// Leadership is checked every poll interval ([`afk_ledger::Leadership::check`]) and every
    /// write is fenced by its epoch: once this afk learns another one leads (its lock was lost),
    /// it stops acting at once and stands by again.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut on_tick: impl FnMut(&TickReport),
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let ledger = self.plane.ledger().clone();
        loop {
            let Some(mut leadership) = self.stand_by(&ledger, &mut shutdown).await else {
                return Ok(());
            };
            tracing::info!(
                "afk running: T3 at {}, ledger {} (leader epoch {}), polling every {}",
                redact_url(&self.t3_url),
                ledger.url_redacted(),
                leadership.epoch(),
                humantime::format_duration(self.poll_interval)
            );
            self.set_leadership(Leadership::Leading);
            self.plane.forget_cached_ledger();
            // Reasons an earlier run left are not this run's: it says its own from the first tick.
            forget_waits(&ledger).await;
            let mut lost = None;
            let end = {
                let stop = async {
                    tokio::select! {
                        _ = &mut shutdown => {}
                        reason = leadership.lost(self.poll_interval) => lost = Some(reason.to_string()),
                    }
                };
                self.plane.run(self.poll_interval, stop, &mut on_tick).await
            };
            let lost = match end {
                RunEnd::Deposed(error) => Some(error.to_string()),
                RunEnd::Stopped => lost,
            };
            match lost {
                None => {
                    self.set_leadership(Leadership::NotRunning);
                    forget_waits(&ledger).await;
                    leadership.release().await;
                    tracing::info!("afk stopped");
                    return Ok(());
                }
                Some(reason) => {
                    tracing::warn!(
                        "lost the lead of ledger {}: {reason}; stopped acting, standing by",
                        ledger.url_redacted()
                    );
                    self.set_leadership(Leadership::StandingBy {
                        why: format!("lost the lead of ledger {}: {reason}", ledger.url_redacted()),
                    });
                    drop(leadership);
                }
            }
        }
    }

    /// Waits until this afk takes the lead of `ledger` (trying every poll interval), or `None`
    /// when `shutdown` resolves first.
    async fn stand_by(
        &self,
        ledger: &Ledger,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Option<afk_ledger::Leadership> {
        let mut standing_by = false;
        loop {
            match ledger.try_lead().await {
                Ok(Some(leadership)) => return Some(leadership),
                Ok(None) if !standing_by => {
                    tracing::warn!(
                        "another afk run is working on ledger {}: standing by until it stops",
                        ledger.url_redacted()
                    );
                    self.set_leadership(Leadership::StandingBy {
                        why: format!("another afk run leads ledger {}", ledger.url_redacted()),
                    });
                    standing_by = true;
                }
                Ok(None) => {}
                Err(error) => tracing::warn!("cannot take the lead of the ledger yet: {error}"),
            }
            tokio::select! {
                _ = shutdown.as_mut() => return None,
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}

impl App {
    fn set_leadership(&self, leadership: Leadership) {
        if let Some(hub) = &self.hub {
            hub.set_leadership(leadership);
        }
    }
}

/// Clears the reasons kept for `afk status`: a leader that starts or stops waits for nothing yet.
async fn forget_waits(ledger: &Ledger) {
    if let Err(error) = ledger.clear_waits().await {
        tracing::warn!("cannot clear the waiting reasons kept in the ledger: {error}");
    }
}

/// Binds `listen` and serves the status surface there, with GitHub's webhooks going to `events`
/// when a webhook secret is configured.
async fn serve(
    config: &Config,
    listen: SocketAddr,
    hub: Arc<Hub>,
    events: mpsc::Sender<WebhookEvent>,
) -> anyhow::Result<Listener> {
    let webhook = match config.github.as_ref().and_then(|g| g.webhook_secret()) {
        Some(secret) => Some((secret.build().context("[github] webhook_secret")?, events)),
        None => None,
    };
    let webhooks_on = webhook.is_some();
    let limits = status::Limits {
        max_connections: config.http.max_connections as usize,
        header_timeout: config.http.header_timeout,
        request_timeout: config.http.request_timeout,
    };
    let router = status::router(hub, webhook, &limits);
    let listener = status::serve(listen, router, limits).await?;
    tracing::info!(
        "status surface on http://{}/ (JSON API under /api/v1, /metrics, /healthz, /readyz){}",
        listener.addr,
        if webhooks_on {
            "; GitHub webhooks at POST /webhooks/github"
        } else {
            ""
        }
    );
    Ok(listener)
}

/// Where the status surface links to: T3's web UI (`t3.web_url`, else `t3.url`) and GitHub's
/// issue pages.
pub(crate) fn links(config: &Config) -> Links {
    Links {
        t3_web: Some(t3_web_base(config)),
        github_web: config.github.as_ref().map(|g| github_web_root(&g.api_url)),
    }
}

/// T3's web UI base for links to threads, without any userinfo (links go into public comments
/// and pages).
fn t3_web_base(config: &Config) -> String {
    let web = config.t3.web_url.clone().unwrap_or_else(|| config.t3.url.clone());
    match url::Url::parse(&web) {
        Ok(mut link) if !link.username().is_empty() || link.password().is_some() => {
            let _ = link.set_username("");
            let _ = link.set_password(None);
            link.to_string().trim_end_matches('/').to_owned()
        }
        _ => web.trim_end_matches('/').to_owned(),
    }
}

/// The web root of the GitHub whose REST API is at `api_url`: `https://github.com` for the public
/// API, the host's root for GitHub Enterprise (`https://HOST/api/v3`).
fn github_web_root(api_url: &str) -> String {
    let api = api_url.trim_end_matches('/');
    if let Ok(url) = url::Url::parse(api) {
        if url.host_str() == Some("api.github.com") {
            return "https://github.com".to_owned();
        }
    }
    api.strip_suffix("/api/v3").unwrap_or(api).to_owned()
}

/// Opens the ledger named by `[ledger] url`, creating a SQLite file (and its folder) if needed.
pub async fn open_ledger(config: &Config) -> anyhow::Result<Ledger> {
    let url = &config.ledger.url;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = std::path::Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("creating the ledger's folder {} ([ledger] url)", parent.display())
            })?;
        }
    }
    Ledger::open(url)
        .await
        .context("opening the ledger ([ledger] url)")
}

/// The T3 client for `[t3]`: the operate token from its provider (asked on every request), the
/// configured agent settings and projects.
pub fn t3_client(config: &Config) -> anyhow::Result<T3Client> {
    let bearer = config.t3_token().build().context("[t3.token]")?;
    t3_client_with(config, bearer)
}

/// The T3 client for `[t3]` with the credential `bearer` (the read or the operate token).
pub fn t3_client_with(config: &Config, bearer: Arc<dyn SecretProvider>) -> anyhow::Result<T3Client> {
    t3_client_observed(config, bearer, None)
}

/// [`t3_client_with`], counting each request's outcome in `metrics` when given.
fn t3_client_observed(
    config: &Config,
    bearer: Arc<dyn SecretProvider>,
    metrics: Option<Arc<Metrics>>,
) -> anyhow::Result<T3Client> {
    let reqwest = ReqwestTransport::new(TransportConfig {
        connect_timeout: config.t3.connect_timeout,
        request_timeout: config.t3.request_timeout,
    });
    let transport: Arc<dyn t3_client::Transport> = match metrics {
        Some(metrics) => Arc::new(CountedTransport {
            inner: reqwest,
            metrics,
        }),
        None => Arc::new(reqwest),
    };
    let mut settings = AgentSettings {
        instance_id: config.t3.instance_id.clone(),
        model: config.t3.model.clone(),
        branch_prefix: config.t3.branch_prefix.clone(),
        ..AgentSettings::default()
    };
    if let Some(path) = &config.t3.preamble_file {
        settings.preamble = std::fs::read_to_string(path)
            .with_context(|| format!("reading [t3] preamble_file {}", path.display()))?;
    }
    let mut client = T3Client::new(&config.t3.url, transport, bearer).with_settings(settings);
    for (repo, project) in config.projects() {
        client = client.with_project(repo.to_string(), project.project);
    }
    Ok(client)
}

/// The control plane's settings from `[limits]`, `[watch]`, `[retry]`, `[t3.projects]` and
/// `[source.local]`.
fn settings(config: &Config) -> Settings {
    Settings {
        retry: config.retry_policy(),
        limits: Limits {
            max_concurrent: config.limits.max_concurrent as usize,
            per_repo: config.limits.per_repo as usize,
            parallel_dispatches: config.limits.parallel_dispatches as usize,
        },
        timeouts: Timeouts {
            stall: config.watch.stall_timeout,
            turn: config.watch.turn_timeout,
            answer: config.limits.answer_timeout,
            lost_after: config.watch.poll_interval,
        },
        projects: repo_targets(config),
        local_source: config.source.local.as_ref().map(|l| l.dir.clone()),
        follow_up_max_turns: config.followup.max_turns,
        budget: config.budget.limits(),
    }
}

/// Each repository's T3 project and dispatch mode, from `[t3.projects]` over `[t3]`'s defaults.
pub fn repo_targets(config: &Config) -> BTreeMap<Repo, RepoTarget> {
    config
        .projects()
        .into_iter()
        .map(|(repo, p)| {
            let dispatch = match p.dispatch {
                DispatchMode::Http => Dispatch::Http {
                    worktree_path: p.worktree_path,
                },
                DispatchMode::WsWorktree => Dispatch::WsWorktree {
                    base_branch: p.base_branch,
                    run_setup_script: p.run_setup_script,
                },
            };
            let target = RepoTarget {
                project: p.project,
                dispatch,
            };
            (repo, target)
        })
        .collect()
}

/// A T3 transport that counts each request's outcome for `/metrics`.
struct CountedTransport {
    inner: ReqwestTransport,
    metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl t3_client::Transport for CountedTransport {
    async fn send(
        &self,
        request: t3_client::transport::Request,
    ) -> Result<t3_client::transport::Response, t3_client::transport::TransportError> {
        let outcome = self.inner.send(request).await;
        self.metrics.t3_request(match &outcome {
            Ok(response) => status::metrics::RequestOutcome::of_status(response.status),
            Err(_) => status::metrics::RequestOutcome::Unreachable,
        });
        outcome
    }
}

/// The control plane wired from `config` over `ledger`, without GitHub; its T3 requests are
/// counted in `metrics` when given.
async fn control_plane(
    config: &Config,
    ledger: Ledger,
    metrics: Option<Arc<Metrics>>,
) -> anyhow::Result<ControlPlane> {
    let bearer = config.t3_token().build().context("[t3.token]")?;
    let operate = t3_client_observed(config, bearer, metrics.clone())?;
    let read_only = match config.t3_read_token() {
        Some(read_token) => {
            let bearer = read_token.build().context("[t3.read_token]")?;
            Some(t3_client_observed(config, bearer, metrics)?)
        }
        None => None,
    };
    let reader = read_only.clone().unwrap_or_else(|| operate.clone());
    for (repo, target) in repo_targets(config) {
        if target.shares_checkout() {
            tracing::warn!(
                "{repo}: dispatch = \"http\" without a worktree_path: its threads would share the \
                 project's checkout, so at most one of them runs at a time ([t3.projects])"
            );
        } else {
            tracing::info!(
                "{repo}: T3 project {}, dispatch {}",
                target.project,
                target.dispatch.name()
            );
        }
    }
    let mut plane = ControlPlane::new(ledger, operate, settings(config));
    if let Some(read_only) = read_only {
        plane = plane.with_reader(read_only);
    }
    if config.watch.push {
        plane = plane.with_feed(ShellFeed::start(&reader, FeedSettings::default()));
    }
    Ok(plane)
}

/// The GitHub side from `[github]` (`None` when the section is absent). `events` carries verified
/// webhook deliveries when webhooks are on.
fn github_side(
    config: &Config,
    events: Option<mpsc::Receiver<WebhookEvent>>,
    metrics: Option<Arc<Metrics>>,
) -> anyhow::Result<Option<GitHubSide>> {
    let Some(github) = &config.github else {
        return Ok(None);
    };
    let credentials = match github.auth().map_err(|e| anyhow::anyhow!("[github]: {e}"))? {
        GitHubAuth::Token(spec) => Credentials::Token(spec.build().context("[github] token")?),
        GitHubAuth::App {
            app_id,
            installation_id,
            private_key,
        } => Credentials::App(AppCredentials {
            app_id: AppId(app_id),
            installation_id: InstallationId(installation_id),
            private_key: private_key.build().context("[github] private_key")?,
        }),
    };
    let api =
        url::Url::parse(&github.api_url).with_context(|| format!("[github] api_url {:?}", github.api_url))?;
    let mut client_config = ClientConfig::new(api, credentials);
    if let Some(metrics) = metrics {
        client_config.observer = Some(afk_github::RequestObserver(Arc::new(move |status| {
            metrics.github_request(match status {
                Some(status) => status::metrics::RequestOutcome::of_status(status),
                None => status::metrics::RequestOutcome::Unreachable,
            })
        })));
    }
    let client = GitHubClient::new(client_config).context("[github]")?;
    let repos = github
        .repos
        .iter()
        .map(|r| afk_core::Repo::new(r.clone()))
        .collect::<Result<Vec<_>, _>>()
        .context("[github] repos")?;
    let mut intake_config = IntakeConfig::new(repos);
    intake_config.trigger_label = github.trigger_label.clone();
    intake_config.permission_ttl = github.permission_ttl;
    // Links go into public comments: never with a password in them.
    let web = t3_web_base(config);
    let commands = afk_github::CommentCommands::new(client.clone());
    let mut side = GitHubSide::new(
        Intake::new(client.clone(), intake_config),
        PolicyStore::new(client.clone()),
        Reporter::new(client),
        github.poll_interval,
        Some(web),
        events,
    )
    .with_comment_commands(commands, github.poll_interval);
    side.reporter = side.reporter.with_max_turns(config.followup.max_turns);
    Ok(Some(side))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_repository_gets_its_dispatch_target_and_shared_checkouts_run_one_thread() {
        let mut config = Config::default();
        config.t3.base_branch = "trunk".into();
        config.t3.projects = [
            ("acme/api", "proj-api", None, None),
            ("acme/web", "proj-web", Some(DispatchMode::Http), None),
            (
                "acme/lib",
                "proj-lib",
                Some(DispatchMode::Http),
                Some("/wt/{name}/{issue}"),
            ),
        ]
        .into_iter()
        .map(|(repo, project, dispatch, worktree_path)| {
            let entry = crate::config::ProjectEntry {
                dispatch,
                worktree_path: worktree_path.map(str::to_owned),
                ..crate::config::ProjectEntry::from(project)
            };
            (repo.to_owned(), entry)
        })
        .collect();
        let targets = repo_targets(&config);
        let target = |repo: &str| targets[&Repo::new(repo).unwrap()].clone();
        assert_eq!(
            target("acme/api").dispatch,
            Dispatch::WsWorktree {
                base_branch: "trunk".into(),
                run_setup_script: None
            },
            "ws-worktree is the default, with [t3] base_branch"
        );
        assert!(target("acme/web").shares_checkout());
        assert_eq!(target("acme/web").in_flight_limit(2), 1);
        assert_eq!(target("acme/lib").in_flight_limit(2), 2);
    }
}
