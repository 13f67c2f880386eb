//! T3's HTTP error bodies.

use serde::{Deserialize, Serialize};

/// An error body as T3 sends it: a `_tag`, a `code`, a `traceId` and, depending on the error, a
/// `reason` or the `requiredScope`. Decoding is lenient (every field optional) because the client
/// must report whatever came back; the stand-in always fills `tag`, `code` and `trace_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The error's class, e.g. `EnvironmentAuthInvalidError`.
    #[serde(rename = "_tag", default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The machine-readable code, e.g. `auth_invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why, e.g. `invalid_command` or `orchestration_dispatch_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The scope that was missing (403 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<String>,
    /// T3's trace id for the failed request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// The auth scopes afk deals with.
pub mod scopes {
    /// Read the snapshot, the shell and thread details.
    pub const ORCHESTRATION_READ: &str = "orchestration:read";
    /// Dispatch commands.
    pub const ORCHESTRATION_OPERATE: &str = "orchestration:operate";
}
