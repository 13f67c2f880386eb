//! A client for T3 Code's orchestration API, over HTTP and over its WebSocket RPC.
//!
//! This is the Rust form of afk's seed adapter (`t3_client.py`), speaking T3's real wire protocol:
//! - [`T3Client::dispatch`] turns "implement issue N of repo R with this prompt" into exactly two
//!   POSTs to `/api/orchestration/dispatch` (`thread.create`, then `thread.turn.start`) and
//!   returns the new thread's id;
//! - [`T3Client::dispatch_isolated`] does it in ONE `thread.turn.start` over the WebSocket RPC
//!   (`/ws`, `orchestration.dispatchCommand`) whose `bootstrap` has T3 create the thread in a git
//!   worktree of its own, which only the RPC path does;
//! - [`T3Client::snapshot`] reads the fleet ([`wire::ReadModel`]); [`ShellFeed`] watches it
//!   instead, from T3's pushed shell stream, and offers the view ([`Fleet`]) only while the stream
//!   is synchronized, so that the caller falls back to the snapshot whenever it is not;
//! - the lifecycle commands afk needs besides (interrupt, stop session, archive, follow-up turn,
//!   create project), over HTTP or ([`T3Client::send_command_rpc`]) the RPC.
//!
//! The HTTP [`Transport`] and the bearer provider ([`afk_secrets::SecretProvider`]) are injected,
//! so that production hands in [`ReqwestTransport`] and a rotating token source while tests hand
//! in a [`Recorder`]. The bearer is asked for on every request and every WebSocket connect; a 401
//! asks once more with [`Freshness::Refresh`]. [`RpcConnection`] is the one WebSocket (one task
//! owns it, callers share it, pings detect a dead peer); its errors are [`T3Error::Socket`] and
//! [`T3Error::Rpc`]. The [`wire`] module is the one place that knows T3's JSON; the T3 stand-in
//! shares it.
//!
//! **API boundary:** this crate knows nothing of jobs, ledgers or issue trackers, and never
//! retries on its own beyond the single 401 retry (the feed's reconnecting aside: it only reads).

mod client;
mod error;
pub mod feed;
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
pub use feed::{FeedSettings, FeedStatus, ShellFeed};
pub use fleet::{Fleet, FleetChange};
pub use ids::{CommandId, IdRef, MessageId, ProjectId, ThreadId, TurnId};
pub use rpc::{ChunkValues, RpcConnection, RpcSettings, RpcStream};
pub use transport::{
    Recorder, ReqwestTransport, Transport, TransportConfig, TransportError, TransportErrorKind,
};
pub use wire::{ReadModel, ThreadState, UnreadableThread};
