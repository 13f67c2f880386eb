//! afk's durable ledger: jobs, their attempts (one T3 thread each) and an append-only event log of
//! their transitions, in SQLite (a file, the default) or PostgreSQL, behind one interface.
//!
//! **Architecture invariants:**
//! - The ledger stores; it never decides. Every state change comes in as an
//!   [`afk_core::Transition`] computed by [`afk_core::apply`], and [`Ledger::record`] writes it
//!   atomically (job, attempt and event in one database transaction) with a compare-and-set on the
//!   job's state, so two writers can never both move a job from the same state.
//! - A transition is in the ledger before its effect happens: the caller records first, then talks
//!   to T3. An attempt's ids are stored with the transition that starts it and never change.
//! - The schema itself forbids two live attempts (`dispatching` or `running`) for one job and two
//!   attempts with one thread id, whatever the code above it does.
//! - Timestamps are stored as unix milliseconds (BIGINT) and appear as `DateTime<Utc>` here.
//! - No database password reaches an error, a log line or `Debug` output.
//!
//! **Migrations** live in `migrations/sqlite` and `migrations/postgres`, one file per step and the
//! same step number in both. A migration that has run anywhere is never edited (the migrator
//! refuses a changed checksum): change the schema with a new step in both directories.
//!
//! # Layout
//! - `open.rs`: connecting to either database and running its migrations;
//! - `record.rs`: the writes (jobs as sources report them, [`Ledger::record`] for transitions, and
//!   the marks the control plane keeps);
//! - `query.rs`: the reads; `overview.rs`: the slim, capped reads of the status surface and the
//!   CLI's views;
//! - `model.rs`: the records as the rest of afk sees them and their decoding from rows;
//! - `leader.rs`: one `afk run` per ledger ([`Leadership`]);
//! - `commands.rs`: comment commands taken from GitHub (`/afk ...`), taken once and answered in
//!   the same transaction as the job's move, and the instruction a job's prompt carries;
//! - `budgets.rs`: the figures the budgets are decided on (a job's agent time, a repository's
//!   use of a day);
//! - `probe.rs`: a SQLite file's change counts read on the caller's thread, without sqlx's
//!   hand-off to its worker thread ([`Ledger::changes`]);
//! - `waits.rs`: why the running afk waits ([`Wait`]), for `afk status`;
//! - `inspect.rs`: a look that changes nothing ([`Ledger::inspect`]), for `afk doctor`;
//! - `error.rs`, `redact.rs`: errors a person can act on, without a password in them.

#![warn(missing_docs)]

mod error;
mod inspect;
mod model;
mod redact;

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub use afk_core::{AttemptId, IssueKey};
pub use budgets::RepoDayUsage;
pub use commands::{
    CommandAnswer, CommandState, CommentCommand, CommentCommandId, CommentCommandKind, InstructionChange,
    JobInstruction, NewCommentCommand, Reaction,
};
pub use error::{LedgerError, RecordRef};
pub use follow_ups::{FollowUpToSend, NewFollowUp};
pub use inspect::{Inspection, TotalDrift, REPAIR_LOCK_WAIT};
pub use leader::{LeaderSeen, LeaderState, Leadership, LeadershipLost};
pub use model::{Attempt, EventRecord, Job, NewAttempt, NewJob, WatchedAttempt};
pub use overview::{AttemptSummary, AttemptTotals, JobFilter, JobSummary, LedgerSize, MAX_PAGE};
pub use query::{Changes, LedgerChanges, WatchedChanges};
pub use record::{Move, WatchedMoves};
pub use redact::redact_url;
pub use waits::Wait;

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

/// Which database a [`Ledger`] is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: a file (or memory), embedded in the afk process.
    Sqlite,
    /// PostgreSQL: a server, shareable by several afk replicas.
    Postgres,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of either backend. Each query is written
/// once in SQL both backends accept (`$1` placeholders, `RETURNING`, partial indexes), and rows
/// decode through the same `FromRow` structs; only the driver types differ.
macro_rules! with_pool {
    ($ledger:expr, |$pool:ident| $body:expr) => {
        match &$ledger.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// Runs the query `$sql` with the parameters `$bind`s on either backend and `$fetch`es its rows
/// (`fetch_all`, `fetch_optional`, ...) into the `FromRow` type the caller names.
macro_rules! fetch {
    ($ledger:expr, $fetch:ident, $sql:expr $(, $bind:expr)* $(,)?) => {
        with_pool!($ledger, |pool| sqlx::query_as($sql)$(.bind($bind))*.$fetch(pool).await?)
    };
}

/// Runs `$body` (which returns `Result<T, LedgerError>` and uses `$tx` as its executor) in one
/// database transaction on `$pool`: commits on `Ok`, rolls back on `Err` and returns the body's
/// result. The rollback is explicit, not left to the transaction's drop, which would defer it
/// to a background task and leave the connection holding its locks for a while.
macro_rules! in_transaction {
    ($pool:expr, |$tx:ident| $body:expr) => {{
        let mut $tx = $pool.begin().await?;
        let outcome: Result<_, LedgerError> = async { $body }.await;
        match outcome {
            Ok(value) => {
                $tx.commit().await?;
                Ok(value)
            }
            Err(error) => {
                if let Err(rollback) = $tx.rollback().await {
                    tracing::warn!("ledger rollback failed after {error}: {rollback}");
                }
                Err(error)
            }
        }
    }};
}

/// afk's durable ledger. Cheap to clone: clones share one connection pool (and the leadership
/// fence, see [`Ledger::try_lead`]).
#[derive(Clone)]
pub struct Ledger {
    pool: Pool,
    url_redacted: String,
    /// The leadership epoch this handle (and its clones) took with [`Ledger::try_lead`]; 0 when it
    /// never led. Once set, every write checks it in its own transaction.
    fence: Arc<AtomicI64>,
    /// A SQLite file's change counts read on the caller's thread ([`Ledger::changes`]); `None`
    /// for PostgreSQL, an in-memory database, or a file it could not open.
    change_probe: Option<Arc<probe::ChangeProbe>>,
}

impl fmt::Debug for Ledger {
    // By hand: the pools' own Debug output includes their connect options, password and all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("backend", &self.backend())
            .field("url", &self.url_redacted)
            .finish()
    }
}

/// Fences a write: when `$ledger` took the leadership, checks in the transaction `$tx` that its
/// epoch is still the ledger's, else ends the body with [`LedgerError::Deposed`]. The check is a
/// write (of the epoch onto itself), so that a new leader's bump waits for a fenced transaction in
/// flight and SQLite takes its write lock first (no lock upgrade can deadlock), and a fenced
/// transaction that starts after the bump sees the new epoch.
macro_rules! fence {
    ($ledger:expr, $tx:ident) => {
        if let Some(epoch) = $ledger.epoch() {
            let held: Option<i64> = sqlx::query_scalar(
                "UPDATE leadership SET epoch = epoch WHERE id = 1 AND epoch = $1 RETURNING epoch",
            )
            .bind(epoch)
            .fetch_optional(&mut *$tx)
            .await?;
            if held.is_none() {
                return Err(LedgerError::Deposed { epoch });
            }
        }
    };
}

/// SQL for the columns that tell a live attempt (one whose thread may be working).
const LIVE: &str = "state IN ('dispatching', 'running')";

// After the macros: the modules below use them.
mod leader;
mod open;
mod overview;
mod query;
#[macro_use]
mod record;
mod budgets;
mod commands;
mod follow_ups;
mod probe;
mod waits;

impl Ledger {
    /// Which database the ledger is kept in.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The URL the ledger was opened with, its password redacted: safe to print.
    pub fn url_redacted(&self) -> &str {
        &self.url_redacted
    }

    /// The leadership epoch this handle writes under, when it took the lead.
    pub fn epoch(&self) -> Option<i64> {
        Some(self.fence.load(Ordering::SeqCst)).filter(|&epoch| epoch > 0)
    }

    /// Reads [`Ledger::changes`] on the caller's thread when it can (`true`, the default) or
    /// always through the connection pool (`false`), for this handle and its clones: for
    /// benchmarks, to measure both in one run. The counts read are the same either way; no-op
    /// where the counts are always read through the pool (PostgreSQL, in-memory SQLite).
    pub fn read_changes_in_place(&self, on: bool) {
        if let Some(probe) = &self.change_probe {
            probe.read_in_place(on);
        }
    }

    /// Closes every connection; waits for queries in flight. Other clones stop working.
    pub async fn close(&self) {
        if let Some(probe) = &self.change_probe {
            probe.close();
        }
        with_pool!(self, |pool| pool.close().await)
    }
}

/// The issue number as the ledger stores it (BIGINT).
fn issue_number(issue: &IssueKey) -> Result<i64, LedgerError> {
    i64::try_from(issue.number).map_err(|_| LedgerError::OutOfRange {
        what: format!("the issue number of {issue}"),
    })
}
