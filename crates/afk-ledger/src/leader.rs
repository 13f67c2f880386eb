//! One `afk run` per ledger. Two control planes on one ledger would each count their own limits
//! and race to report on the same issues, so `afk run` holds the ledger's leadership while it
//! works and a second one stands by until the first is gone (crashed, killed, stopped).
//!
//! The lock lives outside the tables, so that a dead process can never leave it behind: for
//! SQLite an OS file lock on `PATH.lock` (released by the kernel when the process dies), for
//! PostgreSQL a session advisory lock keyed by the ledger's schema (released when its connection
//! closes).

use std::fs::{File, OpenOptions, TryLockError};

use sqlx::{Connection, PgConnection};

use crate::{Ledger, LedgerError, Pool};

/// Proof that this process leads the ledger. Dropping it lets a standby take over.
#[derive(Debug)]
pub struct Leadership {
    _hold: Hold,
}

#[derive(Debug)]
enum Hold {
    /// The locked `PATH.lock` file of a SQLite ledger (held for its drop, which unlocks).
    File { _locked: File },
    /// The connection holding the PostgreSQL advisory lock (held for its drop, which closes it).
    Postgres { _session: PgConnection },
    /// An in-memory ledger belongs to one process anyway.
    Private,
}

impl Leadership {
    /// Gives the leadership up now, so that a standby can take over at once. (Dropping it gives
    /// it up too; for PostgreSQL the server then notices the closed session a moment later.)
    pub async fn release(self) {
        match self._hold {
            Hold::Postgres {
                _session: mut session,
            } => {
                let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut session)
                    .await;
                let _ = session.close().await;
            }
            Hold::File { _locked: file } => drop(file),
            Hold::Private => {}
        }
    }
}

impl Ledger {
    /// Takes the ledger's leadership if no other process holds it: `Ok(None)` when another does.
    /// Never waits; call again to retry.
    pub async fn try_lead(&self) -> Result<Option<Leadership>, LedgerError> {
        let io = |e: std::io::Error| LedgerError::Database(sqlx::Error::Io(e));
        match &self.pool {
            Pool::Sqlite(pool) => {
                let options = pool.connect_options();
                let path = options.get_filename();
                let name = path.to_string_lossy();
                if name.is_empty() || name.contains(":memory:") || name.contains("mode=memory") {
                    return Ok(Some(Leadership { _hold: Hold::Private }));
                }
                let mut lock_path = path.as_os_str().to_owned();
                lock_path.push(".lock");
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .map_err(io)?;
                match file.try_lock() {
                    Ok(()) => Ok(Some(Leadership {
                        _hold: Hold::File { _locked: file },
                    })),
                    Err(TryLockError::WouldBlock) => Ok(None),
                    Err(TryLockError::Error(e)) => Err(io(e)),
                }
            }
            Pool::Postgres(pool) => {
                // A connection of its own, kept for as long as the leadership: the lock is the
                // session's, and the pool must not hand that session to anyone else.
                let mut connection = pool.acquire().await?.detach();
                let held: bool = sqlx::query_scalar(
                    "SELECT pg_try_advisory_lock(hashtext('afk-ledger-leader:' || current_schema()))",
                )
                .fetch_one(&mut connection)
                .await?;
                if held {
                    Ok(Some(Leadership {
                        _hold: Hold::Postgres { _session: connection },
                    }))
                } else {
                    let _ = connection.close().await;
                    Ok(None)
                }
            }
        }
    }
}
