//! The envelopes of T3's WebSocket RPC (`GET /ws`): Effect RPC messages, one JSON value per text
//! frame. See `t3-api.md`, "WebSocket RPC".
//!
//! Request ids are sent as strings of digits (Effect encodes its bigint ids so); the server echoes
//! the id with the same JSON type, and [`RpcId`] accepts a string or a number on the way back.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The RPC method that dispatches one client command (payload: a [`super::ClientCommand`]).
pub const DISPATCH_COMMAND: &str = "orchestration.dispatchCommand";
/// The RPC stream of the fleet's shell view (payload: [`super::SubscribeShell`]).
pub const SUBSCRIBE_SHELL: &str = "orchestration.subscribeShell";

/// A request id, unique per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RpcId(pub u64);

impl fmt::Display for RpcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for RpcId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for RpcId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(RpcId(n)),
            Raw::Text(t) => t
                .parse()
                .map(RpcId)
                .map_err(|_| serde::de::Error::custom(format!("request id {t:?} is not a number"))),
        }
    }
}

/// A message from the client to T3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "_tag")]
pub enum ClientMessage {
    /// Call `tag` with `payload`.
    Request {
        /// Unique per connection; echoed in the reply.
        id: RpcId,
        /// The method.
        tag: String,
        /// The method's input.
        payload: serde_json::Value,
        /// Effect RPC headers; afk sends none (auth is on the upgrade).
        #[serde(default)]
        headers: Vec<serde_json::Value>,
    },
    /// The client has taken a stream's last chunk: the server may send the next.
    Ack {
        /// The stream's request.
        #[serde(rename = "requestId")]
        request_id: RpcId,
    },
    /// Cancel a call or a stream.
    Interrupt {
        /// The request to cancel.
        #[serde(rename = "requestId")]
        request_id: RpcId,
    },
    /// Keep-alive; answered with [`ServerMessage::Pong`].
    Ping,
    /// Answer to a server's ping.
    Pong,
}

/// A message from T3 to the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "_tag")]
pub enum ServerMessage {
    /// A call or stream ended.
    Exit {
        /// The request.
        #[serde(rename = "requestId")]
        request_id: RpcId,
        /// How it ended.
        exit: RpcExit,
    },
    /// Stream items; the next chunk waits for the client's [`ClientMessage::Ack`].
    Chunk {
        /// The stream's request.
        #[serde(rename = "requestId")]
        request_id: RpcId,
        /// The items.
        values: Vec<serde_json::Value>,
    },
    /// The server could not handle a message at all (Effect RPC's protocol defect).
    Defect {
        /// What went wrong.
        defect: serde_json::Value,
    },
    /// Answer to a ping.
    Pong,
    /// Keep-alive from the server; answered with [`ClientMessage::Pong`].
    Ping,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "_tag")]
pub enum RpcExit {
    /// The call's value (`null` at the end of a stream).
    Success {
        /// The value.
        #[serde(default)]
        value: serde_json::Value,
    },
    /// The call failed.
    Failure {
        /// Why, as Effect's cause list.
        cause: Vec<RpcCause>,
    },
}

/// One part of a failure's cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "_tag")]
pub enum RpcCause {
    /// An expected, typed error (`{_tag, message?, ...}`).
    Fail {
        /// The error.
        error: serde_json::Value,
    },
    /// An unexpected failure on the server.
    Die {
        /// What died.
        #[serde(default)]
        defect: serde_json::Value,
    },
    /// The call was interrupted.
    Interrupt {
        /// The fiber, when given.
        #[serde(default, rename = "fiberId")]
        fiber_id: serde_json::Value,
    },
}

impl RpcExit {
    /// A failure's first typed error, else a description of its cause.
    pub fn failure_summary(cause: &[RpcCause]) -> String {
        for part in cause {
            if let RpcCause::Fail { error } = part {
                let tag = error.get("_tag").and_then(|v| v.as_str()).unwrap_or("error");
                let detail = ["message", "reason", "detail"]
                    .iter()
                    .find_map(|k| error.get(*k).and_then(|v| v.as_str()));
                return match detail {
                    Some(detail) => format!("{tag}: {detail}"),
                    None => tag.to_owned(),
                };
            }
        }
        match cause.first() {
            Some(RpcCause::Die { defect }) => format!("the server failed: {defect}"),
            Some(RpcCause::Interrupt { .. }) => "the call was interrupted".into(),
            _ => "the call failed without a cause".into(),
        }
    }
}
