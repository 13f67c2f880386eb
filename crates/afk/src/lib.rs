//! afk: the control plane that gets repository issues implemented by coding agents running in a
//! T3 Code server. See ARCHITECTURE.md for the map; this crate holds the binary's parts:
//! configuration, the local issue source, the control loop (dispatcher and watcher), the demo
//! and the command line.

pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod policy;
pub mod runcmd;
pub mod source;
pub mod t3cmd;
pub mod views;
