//! T3's wire format: the JSON shapes of `t3-api.md`, as serde types.
//!
//! **API boundary.** These types are shared by the client (which sends commands and decodes the
//! read model) and the T3 stand-in (which decodes commands and sends the read model), so that the
//! two can never drift apart. Field names, literals and nullability follow T3's contract exactly:
//! a key that T3 requires but allows to be `null` is an `Option` that is always serialised and,
//! when decoding a command, must be present. Unknown fields are ignored, as T3 does.

mod commands;
mod errors;
mod read_model;
pub mod rpc;
mod scan;
mod server;
mod shell;
pub mod vcs;
mod view;
mod waits;

pub use commands::*;
pub use errors::*;
pub use read_model::*;
pub use server::*;
pub use shell::*;
pub(crate) use view::{decode_shell_bytes, decode_snapshot, Threads, ThreadsById, ViewParts};
pub use view::{oracle, FleetItem, FleetThread, FleetTurn, SessionSummary, ViewSnapshot};
pub use waits::ShellWaits;

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant as T3 writes it: ISO 8601 in UTC with milliseconds (`2026-11-24T19:14:36.116Z`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// The current time, truncated to what T3 keeps (milliseconds).
    pub fn now() -> Self {
        let now = Utc::now();
        Self(DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now))
    }

    /// As T3 writes it.
    pub fn to_iso(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_iso())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_iso())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| Timestamp(t.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("not an ISO 8601 date-time {text:?}: {e}")))
    }
}

/// Which agent runs a thread: T3's provider instance and the model it uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSelection {
    /// The provider instance, e.g. `claudeAgent`.
    pub instance_id: NonEmptyString,
    /// The model slug, e.g. `claude-sonnet-4-5`.
    pub model: NonEmptyString,
    /// Provider-specific options; omitted when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
}

/// How much the agent may do without asking (T3's `RuntimeMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeMode {
    /// Every action needs a person's approval.
    ApprovalRequired,
    /// File edits are accepted; other actions need approval.
    AutoAcceptEdits,
    /// The provider decides.
    Auto,
    /// Everything is allowed: what afk uses, since nobody is at the keyboard.
    FullAccess,
}

/// Whether the agent acts or only plans (T3's `ProviderInteractionMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InteractionMode {
    /// The agent works.
    Default,
    /// The agent proposes a plan.
    Plan,
}

/// A string that must be non-empty once trimmed (T3's `TrimmedNonEmptyString` for titles and
/// model slugs).
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct NonEmptyString(String);

impl NonEmptyString {
    /// Accepts `value` when it holds something besides whitespace; the value is trimmed.
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        let trimmed = value.trim();
        if trimmed.is_empty() {
            None
        } else if trimmed.len() == value.len() {
            // Already trimmed (as T3 writes them): kept, not copied.
            Some(Self(value))
        } else {
            Some(Self(trimmed.to_owned()))
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NonEmptyString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for NonEmptyString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for NonEmptyString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        NonEmptyString::new(value).ok_or_else(|| serde::de::Error::custom("must be a non-empty string"))
    }
}

/// The reply to every accepted command: T3's event sequence after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchResult {
    /// The orchestration event sequence; it only grows.
    pub sequence: u64,
}

/// Decodes a key that T3 requires but allows to be `null`: unlike a plain `Option`, a missing key
/// is an error.
pub(crate) fn required_nullable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer)
}
