//! A stand-in for T3 Code's orchestration server, for afk's tests, its demo and its benchmarks.
//!
//! It serves T3's HTTP API and T3's WebSocket RPC on loopback with T3's paths, JSON shapes,
//! status codes and error bodies (`t3-api.md`), using the very wire types of
//! [`t3_client::wire`], so that the client and the stand-in cannot drift apart:
//!
//! | method | path | scope |
//! |---|---|---|
//! | POST | `/api/orchestration/dispatch` | `orchestration:operate` |
//! | GET | `/api/orchestration/snapshot` | `orchestration:read` |
//! | GET | `/api/orchestration/shell` | `orchestration:read` |
//! | GET | `/api/orchestration/threads/{threadId}` | `orchestration:read` |
//! | GET | `/.well-known/t3/environment` | none |
//! | GET | `/ws` (WebSocket RPC) | a valid token to upgrade; per call: `orchestration.dispatchCommand` needs `orchestration:operate`, `orchestration.subscribeShell` needs `orchestration:read` |
//!
//! **Behaviour, as T3.**
//! - Auth: no bearer → 401 `auth_invalid` (`missing_credential`); an unknown, revoked or expired
//!   token → 401 `auth_invalid` (`invalid_credential`); a token without the endpoint's scope →
//!   403 `insufficient_scope` naming the scope.
//! - A body that does not decode as a client command (missing or mistyped field, unknown literal,
//!   an id that is empty or not trimmed, an empty title, a message over 120,000 characters, an
//!   attachment that is not an image upload) → 400 `invalid_request` / `invalid_command`. Such a
//!   request never reaches the decider and leaves no receipt. Commands afk does not send
//!   (`thread.meta.update`, …) are refused the same way.
//! - A command the decider refuses (an unknown project or thread, a thread id that exists
//!   already — deleted threads included —, archiving an archived thread) → 500
//!   `internal_error` / `orchestration_dispatch_failed`, exactly as T3 reports it. As T3's
//!   decider, it still finds a deleted thread: commands for one are accepted and change
//!   nothing.
//! - `commandId`: the same id for the same project or thread returns the original
//!   `{"sequence": n}` (or the original refusal) and changes nothing; for another project or
//!   thread it is refused as a conflict.
//! - The sequence grows by one per event; `updatedAt` moves on every change.
//! - The snapshot lists every project and thread (archived and deleted included, with their
//!   `archivedAt` / `deletedAt`), with empty `messages`, `activities` and `checkpoints` as T3's
//!   lightweight read model does; the shell lists live (neither archived nor deleted) projects and
//!   threads; the thread detail carries the messages and answers 404 `thread_not_found` for an
//!   unknown or deleted thread.
//!
//! **WebSocket RPC (`/ws`), as T3 and Effect RPC do it.** The upgrade is refused with the HTTP
//! error bodies above (never upgraded) without a valid token. Text frames carry Effect RPC
//! envelopes; request ids are strings of digits, echoed as sent.
//! - `orchestration.dispatchCommand`: one client command, decided exactly as over HTTP (same
//!   validation, decider, receipts); success `{"sequence": n}`; a payload that does not decode
//!   ends with a `Die` cause; a refusal with `Fail` `OrchestrationDispatchCommandError
//!   {message, cause}` (T3's error message, e.g. `Orchestration command invariant failed
//!   (thread.turn.start): Thread '…' does not exist for command 'thread.turn.start'.`, and the
//!   error itself as the cause; no other field); a missing scope with `Fail`
//!   `EnvironmentAuthorizationError {message, requiredScope}`.
//! - Only here does `thread.turn.start` honour `bootstrap` (HTTP decodes and ignores it, as T3
//!   does, so a turn for a thread that does not exist is refused): create the thread, record a
//!   worktree on the new branch `branch` (without one, `baseBranch` itself is checked out; path
//!   `<worktrees_dir>/<basename of projectCwd>/<branch, '/' → '-'>`, see
//!   [`SimConfig::worktrees_dir`]; nothing is created on disk) after
//!   [`SimConfig::bootstrap_delay`] and [`SimConfig::worktree_add`], run the setup script,
//!   start the turn. A client that disconnects during the first delay leaves the thread half
//!   made (its branch recorded, no worktree, no turn, never cleaned up); during the second, also
//!   the branch and its worktree made in git but not recorded on the thread. `vcs.listRefs`,
//!   `vcs.removeWorktree` and `vcs.createWorktree` answer from the same git model. A failing worktree step deletes the thread again
//!   (`thread-removed` on the stream, `deletedAt` in the snapshot) and fails with T3's message
//!   (`Git command failed in GitVcsDriver.createWorktree (…): git worktree add failed`):
//!   `[sim:worktree-fail]`, or a branch git already has in that repository (git keeps a branch
//!   after its thread is deleted). A setup script that fails to start (`[sim:setup-fail]` with
//!   `runSetupScript`) is a `setup-script.failed` activity and the turn goes on, as in T3. As
//!   in T3, only the final turn start carries the client's `commandId`: the same bootstrap sent
//!   again fails at `createThread` ("already exists") and creates nothing twice.
//! - `orchestration.subscribeShell`: the shell snapshot (or, with `afterSequence`, the events
//!   after it when at most 1,000 behind, else a snapshot) alone in the first chunk, then — once
//!   that chunk is acked — the changes made meanwhile and `synchronized` if asked, then every
//!   event as it happens — each change to a thread is a `thread-upserted` (or `thread-removed`
//!   for a deleted or archived thread) with the change's sequence. One `Chunk` carries all
//!   pending items; the next waits for the client's `Ack`. `Interrupt` ends the stream with an
//!   `Interrupt` cause.
//! - `Ping` → `Pong`; a frame that is not JSON, an unknown method or a non-string request id →
//!   a `Defect` message, and the socket stays open.
//!
//! **The simulated agent** (never a real one: its replies say so), with T3 around it as the real
//! server was seen behaving (`t3-api.md`; the conformance tests run the same scenarios against
//! both). After `thread.turn.start` the session is `starting` with `latestTurn` unchanged
//! (`null` on a new thread) for [`SimConfig::startup_delay`]; then the turn is admitted
//! (`latestTurn.state = running`, session `running` with its `activeTurnId`); after
//! [`SimConfig::turn_duration`] it completes (session `ready`). Markers in the message text
//! script it ([`TurnScript`]): `[sim:fail]`, `[sim:hang]`, `[sim:duration=MS]`,
//! `[sim:fail-times=N]`, `[sim:start-fail]` (the session cannot start: `error` with T3's
//! multi-kilobyte stack trace as `lastError`, no turn), `[sim:ask]` (the agent asks a person:
//! `hasPendingUserInput` in the shell, a `user-input.requested` activity in the detail, until
//! `thread.user-input.respond` answers). `thread.turn.interrupt` naming the running turn shows
//! `interrupted/running`, then `interrupted/ready`, then T3 marks the turn `completed`
//! ([`SimConfig::interrupt_settle`] per step); without a turn id (or naming another turn) it
//! interrupts the running turn, which reads `completed` at once; while the session still starts
//! it does nothing. `thread.session.stop` ends the turn as `interrupted` with the session
//! `stopped`, and the agent. `thread.delete` freezes the thread's view; the agent of a session
//! still starting works on unseen ([`SimThread::agent_running`]). [`SimServer::lose_agents`]
//! plays a T3 restart: an interrupt then starts the lost agent again. A new turn on a thread
//! whose turn is still active interrupts that turn first. All timing uses tokio's clock and one
//! task serves every thread, so 10,000 threads cost memory, not CPU.
//!
//! **Faults** ([`FaultPlan`]): latency, a share of 500s, a share of dropped connections, a share of
//! lost replies after a dispatch was applied, an outage window (503), expiring tokens; set at
//! start, from `afk sim` flags or a scenario file ([`Scenario`]), or changed while running
//! ([`SimServer::set_faults`], [`SimServer::set_unavailable`], [`SimServer::grant_token`],
//! [`SimServer::revoke_token`]). On the WebSocket the same plan applies per call (an outage or a
//! dropped connection drops the socket, an injected 500 refuses the call unapplied, a lost reply
//! drops the socket after applying), plus [`FaultPlan::ws_drop_after_items`],
//! [`FaultPlan::silent_subscriptions`] (a shell subscription answered with nothing at all),
//! [`SimServer::drop_sockets`] (TCP closed without a close frame) and
//! [`SimServer::stall_sockets`] (nothing sent, not even pongs, while the socket stays open);
//! [`SimServer::ws_connections`] counts connections so that a test can see a reconnect. Every random choice comes from one generator seeded with
//! [`SimConfig::seed`], so a sequential client sees the same faults on every run.
//!
//! **Scripting from tests.** [`SimServer::pause`] holds dispatch requests (HTTP or WebSocket) of
//! one command type before or after they are applied, so that a test can kill a client at a known point;
//! [`SimServer::finish_turn`] ends a turn on demand; [`SimServer::threads`] and
//! [`SimServer::read_model`] show the state without HTTP.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use t3_sim::{SimConfig, SimProject, SimServer, TokenGrant};
//!
//! let config = SimConfig {
//!     tokens: vec![TokenGrant::operate("test-token")],
//!     projects: vec![SimProject::new("proj-widgets", "/tmp/widgets")],
//!     turn_duration: std::time::Duration::from_millis(100),
//!     ..SimConfig::default()
//! };
//! let server = SimServer::start("127.0.0.1:0".parse().expect("an address"), config).await?;
//! // Point a T3 client at server.url() with the bearer "test-token".
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod agent;
mod config;
mod rng;
mod script;
mod server;
mod shared;
mod world;
mod ws;

pub mod cli;
#[cfg(feature = "real-t3")]
pub mod real;

pub use config::{
    ConfigError, FaultPlan, Scenario, ScenarioFaults, ScenarioOutage, ScenarioProject, ScenarioToken,
    SimConfig, SimProject, TokenGrant,
};
pub use script::TurnScript;
pub use server::{Pause, SimServer};
pub use shared::PausePhase;
pub use world::{SimThread, SimThreadState, TurnOutcome};
