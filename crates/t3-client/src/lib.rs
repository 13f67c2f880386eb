//! A client for T3 Code's orchestration HTTP API.
//!
//! This is the Rust form of afk's seed adapter (`t3_client.py`), speaking T3's real wire protocol:
//! - [`T3Client::dispatch`] turns "implement issue N of repo R with this prompt" into exactly two
//!   POSTs to `/api/orchestration/dispatch` (`thread.create`, then `thread.turn.start`) and
//!   returns the new thread's id;
//! - [`T3Client::snapshot`] reads the fleet ([`wire::ReadModel`]);
//! - the lifecycle commands afk needs besides (interrupt, stop session, archive, follow-up turn,
//!   create project).
//!
//! The HTTP [`Transport`] and the bearer provider ([`afk_secrets::SecretProvider`]) are injected,
//! so that production hands in [`ReqwestTransport`] and a rotating token source while tests hand
//! in a [`Recorder`]. The [`wire`] module is the one place that knows T3's JSON; the T3 stand-in
//! shares it.
//!
//! **API boundary:** this crate knows nothing of jobs, ledgers or issue trackers.

mod client;
mod error;
pub mod fleet;
pub mod ids;
pub mod preamble;
pub mod rpc;
pub mod transport;
pub mod wire;

pub use afk_secrets::{Freshness, Secret, SecretError, SecretProvider};
pub use client::{
    AgentSettings, DispatchError, DispatchIds, DispatchPlan, DispatchStage, IssueRef, T3Client, WorktreePlan,
};
pub use error::T3Error;
pub use fleet::{Fleet, FleetChange};
pub use ids::{CommandId, MessageId, ProjectId, ThreadId, TurnId};
pub use rpc::{RpcConnection, RpcSettings, RpcStream};
pub use transport::{
    Recorder, ReqwestTransport, Transport, TransportConfig, TransportError, TransportErrorKind,
};
pub use wire::{ReadModel, ThreadState};
