//! The messages of codex's app-server protocol that the simulated agent reads and writes.
//!
//! Newline-delimited JSON without a `"jsonrpc"` field (T3's `effect-codex-app-server`,
//! `protocol.ts`): a request is `{id, method, params?}`, a response `{id, result}` or
//! `{id, error: {code, message}}`, a notification `{method, params?}`. T3 decodes every response
//! and notification with the generated schemas of `_generated/schema.gen.ts` and silently drops a
//! notification that does not decode, so the shapes here follow those schemas field by field
//! (times are whole seconds, or milliseconds where the field says `…Ms`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// JSON-RPC's "method not found", what codex answers a method it does not know.
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC's "invalid params".
pub(crate) const INVALID_PARAMS: i64 = -32602;

/// One line read from T3.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Incoming {
    /// A call that wants a response.
    Request {
        /// Echoed in the response, with its JSON type (a number or a string).
        id: Value,
        /// The method.
        method: String,
        /// Its parameters (`Null` when absent).
        params: Value,
    },
    /// A call without a response.
    Notification {
        /// The method.
        method: String,
    },
    /// The answer to one of the agent's own requests (`item/tool/requestUserInput`).
    Response {
        /// The agent's request id.
        id: Value,
        /// `result`, or `Err(error)`.
        outcome: Result<Value, Value>,
    },
}

impl Incoming {
    /// Reads one line; `None` for a blank line, `Err` for a line that is not a message.
    pub(crate) fn parse(line: &str) -> Option<Result<Incoming, String>> {
        if line.trim().is_empty() {
            return None;
        }
        let value: Value = match serde_json::from_str(line) {
            Ok(value) => value,
            Err(e) => return Some(Err(format!("not JSON: {e}"))),
        };
        let Value::Object(mut object) = value else {
            return Some(Err("not a JSON object".into()));
        };
        let id = object.remove("id").filter(|id| id.is_string() || id.is_number());
        let method = object.get("method").and_then(Value::as_str).map(str::to_owned);
        Some(match (id, method) {
            (Some(id), Some(method)) => Ok(Incoming::Request {
                id,
                method,
                params: object.remove("params").unwrap_or(Value::Null),
            }),
            (None, Some(method)) => Ok(Incoming::Notification { method }),
            (Some(id), None) => Ok(Incoming::Response {
                id,
                outcome: match object.remove("error") {
                    Some(error) => Err(error),
                    None => Ok(object.remove("result").unwrap_or(Value::Null)),
                },
            }),
            (None, None) => Err("neither a method nor an id".into()),
        })
    }
}

/// `{id, result}`.
pub(crate) fn response(id: &Value, result: Value) -> Value {
    json!({ "id": id, "result": result })
}

/// `{id, error: {code, message}}`.
pub(crate) fn error_response(id: &Value, code: i64, message: &str) -> Value {
    json!({ "id": id, "error": { "code": code, "message": message } })
}

/// `{method, params}`.
pub(crate) fn notification(method: &str, params: Value) -> Value {
    json!({ "method": method, "params": params })
}

/// `{id, method, params}`: a request from the agent to T3.
pub(crate) fn request(id: u64, method: &str, params: Value) -> Value {
    json!({ "id": id, "method": method, "params": params })
}

/// Seconds since the epoch (the protocol's `createdAt`, `startedAt`, …).
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the epoch (`startedAtMs`, `completedAtMs`).
pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `initialize` result (`V1InitializeResponse`). T3 reads the version from `userAgent`, after
/// its first `/`.
pub(crate) fn initialize_result(codex_home: &str) -> Value {
    json!({
        "codexHome": codex_home,
        "platformFamily": "unix",
        "platformOs": std::env::consts::OS,
        "userAgent": concat!("t3-sim-agent/", env!("CARGO_PKG_VERSION"), " (a stand-in: no model runs)"),
    })
}

/// The thread object of `thread/start`, `thread/resume` and `thread/started`
/// (`V2ThreadStartResponse__Thread`).
pub(crate) fn thread(id: &str, session_id: &str, cwd: &str, created_at: u64) -> Value {
    json!({
        "id": id,
        "sessionId": session_id,
        "cliVersion": env!("CARGO_PKG_VERSION"),
        "createdAt": created_at,
        "updatedAt": now_secs(),
        "cwd": cwd,
        "ephemeral": false,
        "modelProvider": "t3-sim",
        "preview": "",
        "source": "appServer",
        "status": { "type": "idle" },
        "turns": [],
    })
}

/// The result of `thread/start` and `thread/resume` (`V2ThreadStartResponse`): the thread and
/// the settings it runs with, as asked for (T3 sends `approvalPolicy`, `sandbox` as codex's
/// config names them: `danger-full-access`, `workspace-write`, `read-only`).
pub(crate) fn thread_opened(params: &Value, thread: Value, cwd: &str) -> Value {
    let sandbox = match params.get("sandbox").and_then(Value::as_str) {
        Some("read-only") => json!({ "type": "readOnly" }),
        Some("workspace-write") => json!({ "type": "workspaceWrite" }),
        _ => json!({ "type": "dangerFullAccess" }),
    };
    json!({
        "approvalPolicy": params.get("approvalPolicy").cloned().unwrap_or_else(|| json!("never")),
        "approvalsReviewer": params
            .get("approvalsReviewer")
            .and_then(Value::as_str)
            .filter(|r| ["user", "auto_review", "guardian_subagent"].contains(r))
            .unwrap_or("user"),
        "cwd": cwd,
        "model": params.get("model").and_then(Value::as_str).unwrap_or("t3-sim"),
        "modelProvider": "t3-sim",
        "sandbox": sandbox,
        "thread": thread,
    })
}

/// How a turn ended, in the protocol's words (`TurnStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TurnStatus {
    InProgress,
    Completed,
    Interrupted,
    Failed,
}

impl TurnStatus {
    fn as_str(self) -> &'static str {
        match self {
            TurnStatus::InProgress => "inProgress",
            TurnStatus::Completed => "completed",
            TurnStatus::Interrupted => "interrupted",
            TurnStatus::Failed => "failed",
        }
    }
}

/// A turn object (`V2TurnStartResponse__Turn` and the notifications' `turn`).
pub(crate) fn turn(
    id: &str,
    status: TurnStatus,
    started_at: u64,
    ended: Option<(u64, u64)>,
    error: Option<&str>,
) -> Value {
    let mut turn = json!({
        "id": id,
        "items": [],
        "status": status.as_str(),
        "startedAt": started_at,
    });
    if let Some((completed_at, duration_ms)) = ended {
        turn["completedAt"] = json!(completed_at);
        turn["durationMs"] = json!(duration_ms);
    }
    if let Some(message) = error {
        turn["error"] = json!({ "message": message });
    }
    turn
}

/// An `agentMessage` thread item.
pub(crate) fn agent_message(id: &str, text: &str) -> Value {
    json!({ "type": "agentMessage", "id": id, "text": text })
}

/// The text of a turn's input (`turn/start`'s `input: [{type: "text", text}]`), joined.
pub(crate) fn input_text(params: &Value) -> String {
    params
        .get("input")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter(|i| i.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|i| i.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_told_apart_as_t3_routes_them() {
        assert_eq!(
            Incoming::parse(r#"{"id":1,"method":"initialize","params":{"a":1}}"#),
            Some(Ok(Incoming::Request {
                id: json!(1),
                method: "initialize".into(),
                params: json!({"a": 1}),
            }))
        );
        assert_eq!(
            Incoming::parse(r#"{"method":"initialized"}"#),
            Some(Ok(Incoming::Notification {
                method: "initialized".into()
            }))
        );
        assert_eq!(
            Incoming::parse(r#"{"id":"7","result":{"answers":{}}}"#),
            Some(Ok(Incoming::Response {
                id: json!("7"),
                outcome: Ok(json!({"answers": {}})),
            }))
        );
        assert_eq!(
            Incoming::parse(r#"{"id":7,"error":{"code":1,"message":"no"}}"#),
            Some(Ok(Incoming::Response {
                id: json!(7),
                outcome: Err(json!({"code": 1, "message": "no"})),
            }))
        );
        assert_eq!(Incoming::parse("   "), None);
        assert!(matches!(Incoming::parse("{nope"), Some(Err(_))));
        assert!(matches!(Incoming::parse("[1]"), Some(Err(_))));
        assert!(matches!(Incoming::parse("{}"), Some(Err(_))));
    }

    #[test]
    fn a_turn_carries_its_end_and_error_only_when_it_has_them() {
        let running = turn("t", TurnStatus::InProgress, 5, None, None);
        assert_eq!(running["status"], "inProgress");
        assert!(running.get("completedAt").is_none() && running.get("error").is_none());
        let failed = turn("t", TurnStatus::Failed, 5, Some((6, 1000)), Some("boom"));
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["completedAt"], 6);
        assert_eq!(failed["error"]["message"], "boom");
    }

    #[test]
    fn input_text_joins_the_text_items() {
        let params = json!({"input": [
            {"type": "text", "text": "a"},
            {"type": "image", "url": "x"},
            {"type": "text", "text": "b"},
        ]});
        assert_eq!(input_text(&params), "a\nb");
        assert_eq!(input_text(&json!({})), "");
    }
}
