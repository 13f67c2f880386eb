//! One file per command; [`crate::cli`] is the table that routes to them.

pub mod demo;
pub mod doctor;
pub mod enqueue;
pub mod jobs;
pub mod out;
pub mod run;
pub mod sim;
pub mod status;
pub mod t3;

use crate::cmd::out::{out, outln};
use std::path::PathBuf;

use afk_ledger::Ledger;
use anyhow::{bail, Context};
use serde::Serialize;

use crate::config::Config;

/// `--config FILE`, shared by every command that reads the configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The TOML config file (default: ./afk.toml when it exists, else built-in defaults);
    /// `AFK_<SECTION>_<KEY>` environment variables override it.
    #[arg(long, env = "AFK_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The file to read: `--config`, else `./afk.toml` when it exists, else none (the built-in
    /// defaults).
    pub fn path(&self) -> Option<PathBuf> {
        let default = PathBuf::from("afk.toml");
        self.config
            .clone()
            .or_else(|| default.is_file().then_some(default))
    }

    /// Loads and validates the configuration.
    pub fn load(&self) -> anyhow::Result<Config> {
        Ok(Config::load_from_env(self.path().as_deref())?)
    }
}

/// `--config` and `--json`: what the commands that only read the ledger take.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl ReadArgs {
    /// Opens the ledger the configuration names. A SQLite file that does not exist is an error,
    /// not a new empty ledger: an empty answer from a wrong working directory or URL would look
    /// like lost work.
    pub async fn ledger(&self) -> anyhow::Result<Ledger> {
        existing_ledger(&self.config.load()?).await
    }

    /// Prints `view` as JSON with `--json`, else as `text` renders it.
    pub fn print<T: Serialize>(&self, view: &T, text: impl FnOnce(&T) -> String) -> anyhow::Result<()> {
        if self.json {
            outln!("{}", serde_json::to_string_pretty(view)?)?;
        } else {
            out!("{}", text(view))?;
        }
        Ok(())
    }
}

/// `--prompt`'s value: `TEXT`, or the contents of `FILE` for `@FILE`; never empty.
pub fn read_prompt(arg: &str) -> anyhow::Result<String> {
    let text = match arg.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("--prompt: cannot read {path}"))?
        }
        None => arg.to_owned(),
    };
    if text.trim().is_empty() {
        bail!("--prompt: the prompt is empty");
    }
    Ok(text)
}

/// Opens the ledger `config` names, which must exist already (see [`ReadArgs::ledger`]).
pub(crate) async fn existing_ledger(config: &crate::config::Config) -> anyhow::Result<Ledger> {
    if let Some(path) = config.ledger.url.strip_prefix("sqlite://") {
        let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
        if !path.as_os_str().is_empty() && !path.exists() {
            anyhow::bail!(
                "no ledger at {} ([ledger] url): afk run creates it; check the working directory or the URL",
                path.display()
            );
        }
    }
    crate::app::open_ledger(config).await
}
