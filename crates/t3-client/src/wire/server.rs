//! What T3 says about itself: its environment descriptor (`GET /.well-known/t3/environment`, no
//! credential) and, in its server config (`server.getConfig` over the RPC, `orchestration:read`),
//! its provider instances: which agents it can run, and whether each is enabled (T3's
//! `packages/contracts/src/server.ts`, `ServerConfig` and `ServerProvider`).
//!
//! Only what afk reads is typed; everything else T3 sends is ignored. A provider entry afk cannot
//! read is skipped, as T3's own clients do (its `providers` list is forward compatible).

use serde::{Deserialize, Deserializer, Serialize};

/// The RPC method that answers T3's server config (payload `{}`).
pub const SERVER_GET_CONFIG: &str = "server.getConfig";

/// `GET /.well-known/t3/environment`: who answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentDescriptor {
    /// The environment's id.
    #[serde(default)]
    pub environment_id: String,
    /// Its label.
    #[serde(default)]
    pub label: String,
    /// T3's version.
    #[serde(default)]
    pub server_version: String,
}

/// The part of T3's server config afk reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// The configured provider instances (`instanceId` is what a thread's `modelSelection`
    /// names).
    #[serde(default, deserialize_with = "readable_providers")]
    pub providers: Vec<ServerProvider>,
}

/// One provider instance as T3 reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerProvider {
    /// The id threads name it by, e.g. `claudeAgent`.
    pub instance_id: String,
    /// The driver, e.g. `claudeAgent`, `codex`.
    pub driver: String,
    /// Whether a person enabled it in T3's settings.
    pub enabled: bool,
    /// Whether its program was found.
    pub installed: bool,
    /// Its program's version, when known.
    #[serde(default)]
    pub version: Option<String>,
    /// `ready`, `warning`, `error` or `disabled` (more may come).
    pub status: String,
    /// `available` (also when absent) or `unavailable` (this T3 lacks its driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<String>,
    /// Why it is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
    /// What T3 says about its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ServerProvider {
    /// True unless T3 says this build lacks its driver.
    pub fn is_available(&self) -> bool {
        self.availability.as_deref() != Some("unavailable")
    }
}

/// The provider entries afk can read; any other is skipped.
fn readable_providers<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<ServerProvider>, D::Error> {
    let raw = Vec::<serde_json::Value>::deserialize(deserializer)?;
    Ok(raw
        .into_iter()
        .filter_map(|entry| serde_json::from_value(entry).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_are_read_leniently() {
        let config: ServerConfig = serde_json::from_value(serde_json::json!({
            "cwd": "/srv",
            "providers": [
                {"instanceId": "claudeAgent", "driver": "claudeAgent", "enabled": true, "installed": true,
                 "version": "1.0.0", "status": "ready", "auth": {"status": "authenticated"},
                 "checkedAt": "2026-11-24T19:14:36.116Z", "models": [], "futureField": 1},
                {"instanceId": "newThing", "status": 7},
                {"instanceId": "codex", "driver": "codex", "enabled": false, "installed": false,
                 "version": null, "status": "disabled", "availability": "unavailable",
                 "unavailableReason": "no driver"}
            ]
        }))
        .unwrap();
        let ids: Vec<&str> = config.providers.iter().map(|p| p.instance_id.as_str()).collect();
        assert_eq!(ids, ["claudeAgent", "codex"], "the unreadable entry is skipped");
        assert!(config.providers[0].enabled && config.providers[0].is_available());
        assert!(!config.providers[1].is_available());
    }
}
