//! afk: the control plane that gets repository issues implemented by coding agents running in a
//! T3 Code server. ARCHITECTURE.md has the map of the workspace; this crate is the binary's.
//!
//! # Layout
//! - [`cli`]: the command table; [`cmd`]: one file per command (`afk run`, `demo`, `jobs`,
//!   `status`, `dispatch` in `enqueue.rs`, `t3`, `sim`);
//! - [`app`]: [`app::App`], afk wired from its configuration, started by `afk run`, `afk demo`
//!   and the tests; the only place that knows which config key feeds which part;
//! - [`config`]: the TOML file and its `AFK_...` overrides, validated (a leaf: it knows no part);
//! - [`control`]: the control plane (intake, dispatcher, watcher, reporter, around one recorder);
//! - [`logging`]: the log (text or JSON, one record per line, scrubbed of secrets);
//! - [`policy`]: each repository's policy (T3 project, dispatch mode, limits, `AFK.md`) and
//!   prompts;
//! - [`source`]: issue sources read from outside (the local folder);
//! - [`status`]: the HTTP listener: JSON API, metrics, health, dashboard, webhooks;
//! - [`views`]: what `afk jobs`, `afk status` and `afk demo` print.

pub mod app;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod control;
pub mod logging;
pub mod policy;
pub mod source;
pub mod status;
pub mod views;
