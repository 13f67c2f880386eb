//! Wiring: the parts of afk built from a [`Config`]. The only place that knows how config keys map
//! onto the parts.

use std::sync::Arc;

use afk_ledger::Ledger;
use anyhow::Context;
use t3_client::{AgentSettings, ReqwestTransport, SecretProvider, T3Client, TransportConfig};

use crate::config::Config;
use crate::control::{ControlPlane, Limits, Settings, Timeouts};

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

fn t3_client_with(config: &Config, bearer: Arc<dyn SecretProvider>) -> anyhow::Result<T3Client> {
    let transport = ReqwestTransport::new(TransportConfig {
        connect_timeout: config.t3.connect_timeout,
        request_timeout: config.t3.request_timeout,
    });
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
    let mut client = T3Client::new(&config.t3.url, Arc::new(transport), bearer).with_settings(settings);
    for (repo, project) in config.projects() {
        client = client.with_project(repo.to_string(), project);
    }
    Ok(client)
}

/// The control plane's settings from `[limits]`, `[watch]`, `[retry]`, `[t3.projects]` and
/// `[source.local]`.
pub fn settings(config: &Config) -> Settings {
    Settings {
        retry: config.retry_policy(),
        limits: Limits {
            max_concurrent: config.limits.max_concurrent as usize,
            per_repo: config.limits.per_repo as usize,
        },
        timeouts: Timeouts {
            stall: config.watch.stall_timeout,
            turn: config.watch.turn_timeout,
        },
        projects: config.projects(),
        local_source: config.source.local.as_ref().map(|l| l.dir.clone()),
    }
}

/// A control plane wired from `config`.
pub async fn control_plane(config: &Config) -> anyhow::Result<ControlPlane> {
    let ledger = open_ledger(config).await?;
    let mut plane = ControlPlane::new(ledger, t3_client(config)?, settings(config));
    if let Some(read_token) = config.t3_read_token() {
        let bearer = read_token.build().context("[t3.read_token]")?;
        plane = plane.with_reader(t3_client_with(config, bearer)?);
    }
    Ok(plane)
}
