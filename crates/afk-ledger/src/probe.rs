//! The change counts of a SQLite ledger file read on the caller's thread ([`ChangeProbe`]), with
//! no hand-off to another thread: the one ledger read of a quiet tick ([`crate::Ledger::changes`]).
//!
//! Through sqlx, every SQLite statement is handed to the connection's worker thread over a
//! channel and its answer handed back, and the connection goes back to the pool through another:
//! three or four thread wake-ups for one row read by its key, which were most of what a quiet
//! tick cost and what grew with the machine's load (BENCHMARKS.md, "A quiet tick that does no
//! work"). This module keeps one more connection to the same file, read-only, and reads that row
//! on the caller's thread.
//!
//! Why it sees what the pool would: the file is in WAL mode, and each statement here runs in its
//! own read transaction, which sees every transaction committed before it began, whoever wrote
//! it (this process's pool, another process, a person's SQL): the WAL index is shared memory.
//! Nothing here waits: a busy file or any error answers `None`, and the caller reads through the
//! pool instead.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// The read [`crate::Ledger::changes`] makes through the pool, word for word.
pub(crate) const CHANGES_SQL: &str = "SELECT counter, ledger_counter FROM watched_changes WHERE id = 1";

/// A read-only connection to a SQLite ledger file that reads its two change counts on the
/// caller's thread. Shared by a ledger's clones; one reader at a time (a second one at the same
/// moment is told `None` and reads through the pool).
pub(crate) struct ChangeProbe {
    /// `None` once the ledger was closed: a closed ledger reads nothing.
    connection: Mutex<Option<Connection>>,
    /// Off: every read goes through the pool (benchmarks compare both in one run).
    in_place: AtomicBool,
}

impl ChangeProbe {
    /// Opens the file at `path` (which must exist: the pool created and migrated it) read-only.
    pub(crate) fn open(path: &Path) -> Result<ChangeProbe, rusqlite::Error> {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Never wait for a lock: the pool's read (with its busy timeout) does the waiting.
        connection.busy_timeout(Duration::ZERO)?;
        Ok(ChangeProbe {
            connection: Mutex::new(Some(connection)),
            in_place: AtomicBool::new(true),
        })
    }

    /// The ledger's two change counts (`watched_changes.counter` and `ledger_counter`), or
    /// `None` when they cannot be read here at once: the file is busy (`SQLITE_BUSY`), any other
    /// error, the probe in use by another caller, or closed. The caller then reads them through
    /// the pool; an error is logged at debug level only, since that read reports its own.
    ///
    /// Blocks the calling thread (a Tokio worker, from an async caller) for one read of one row
    /// by its key in a local file: a few microseconds, less than handing the read to sqlx's worker
    /// thread and waiting for its answer costs, and it never waits for a lock.
    pub(crate) fn read(&self) -> Option<(i64, i64)> {
        if !self.in_place.load(Ordering::Relaxed) {
            return None;
        }
        let connection = self.connection.try_lock().ok()?;
        let connection = connection.as_ref()?;
        // Prepared once and kept by the connection; each use resets it when its row is read, so
        // no read transaction stays open between ticks (which would hold back checkpoints).
        let counts = connection
            .prepare_cached(CHANGES_SQL)
            .and_then(|mut statement| statement.query_row([], |row| Ok((row.get(0)?, row.get(1)?))));
        match counts {
            Ok(counts) => Some(counts),
            Err(error) => {
                tracing::debug!(
                    "ledger change counts not read in place, reading them through the pool: {error}"
                );
                None
            }
        }
    }

    /// Reads in place (`true`, the default) or always through the pool (`false`).
    pub(crate) fn read_in_place(&self, on: bool) {
        self.in_place.store(on, Ordering::Relaxed);
    }

    /// Closes the connection: from now on [`ChangeProbe::read`] answers `None`.
    pub(crate) fn close(&self) {
        let mut connection = match self.connection.lock() {
            Ok(connection) => connection,
            Err(poisoned) => poisoned.into_inner(),
        };
        *connection = None;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::{Changes, Ledger, LedgerChanges, WatchedChanges};

    /// Another SQLite file holding the ledger's counter row with `counts` (rollback journal, so
    /// that a writer's exclusive lock makes every reader busy), to point a probe at.
    fn decoy(path: &Path, counts: (i64, i64)) -> Connection {
        let connection = Connection::open(path).expect("the decoy file");
        connection
            .execute_batch(
                "CREATE TABLE watched_changes (id INTEGER PRIMARY KEY, counter BIGINT NOT NULL, \
                 ledger_counter BIGINT NOT NULL)",
            )
            .expect("the decoy's table");
        connection
            .execute(
                "INSERT INTO watched_changes VALUES (1, ?1, ?2)",
                [counts.0, counts.1],
            )
            .expect("the decoy's counts");
        connection
    }

    async fn file_ledger(dir: &Path) -> Ledger {
        let file: PathBuf = dir.join("ledger.db");
        Ledger::open(&format!("sqlite://{}", file.display()))
            .await
            .expect("the ledger opens")
    }

    #[tokio::test]
    async fn a_busy_or_failing_probe_reads_the_counts_through_the_pool() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut ledger = file_ledger(dir.path()).await;
        assert!(
            ledger.change_probe.is_some(),
            "a ledger file reads its counts in place"
        );
        let real = ledger.changes().await.expect("the counts");
        let decoy_counts = Changes {
            watched: WatchedChanges(real.watched.0 + 1000),
            ledger: LedgerChanges(real.ledger.0 + 2000),
        };
        let decoy_file = dir.path().join("decoy.db");
        let writer = decoy(&decoy_file, (decoy_counts.watched.0, decoy_counts.ledger.0));
        ledger.change_probe = Some(Arc::new(ChangeProbe::open(&decoy_file).expect("the probe")));

        // SQLITE_BUSY: another connection holds the file's exclusive lock.
        writer.execute_batch("BEGIN EXCLUSIVE").expect("the lock");
        let busy = ledger
            .changes()
            .await
            .expect("the counts while the probe is busy");
        assert_eq!(busy, real, "a busy probe reads through the pool");
        writer.execute_batch("COMMIT").expect("the lock released");
        // The probe is what the ledger read otherwise (the decoy's counts, not the ledger's).
        let in_place = ledger.changes().await.expect("the counts read in place");
        assert_eq!(in_place, decoy_counts, "the probe answers when it can");
        ledger.read_changes_in_place(false);
        let through_pool = ledger.changes().await.expect("the counts through the pool");
        assert_eq!(through_pool, real, "in place off: read through the pool");
        ledger.read_changes_in_place(true);

        // Any other error: the probe's file lost the table.
        writer
            .execute_batch("DROP TABLE watched_changes")
            .expect("dropped");
        let failed = ledger.changes().await.expect("the counts while the probe fails");
        assert_eq!(failed, real, "a failing probe reads through the pool");
    }

    #[tokio::test]
    async fn the_probe_reads_a_write_by_another_connection_on_the_wal_ledger_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ledger = file_ledger(dir.path()).await;
        let probe = ledger
            .change_probe
            .clone()
            .expect("a ledger file reads its counts in place");
        let before = ledger.changes().await.expect("the counts");
        assert_eq!(
            probe.read(),
            Some((before.watched.0, before.ledger.0)),
            "read in place"
        );
        // Another writer (a person's SQL) moves both counts.
        let writer = Connection::open(dir.path().join("ledger.db")).expect("another connection");
        writer
            .execute_batch(
                "UPDATE watched_changes SET counter = counter + 1, ledger_counter = ledger_counter + 1 \
                 WHERE id = 1",
            )
            .expect("the write");
        let moved = (before.watched.0 + 1, before.ledger.0 + 1);
        assert_eq!(
            probe.read(),
            Some(moved),
            "the probe sees the other writer's commit"
        );
        let after = ledger.changes().await.expect("the counts");
        assert_eq!((after.watched.0, after.ledger.0), moved);
    }

    #[tokio::test]
    async fn a_closed_ledger_reads_no_counts() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ledger = file_ledger(dir.path()).await;
        ledger.changes().await.expect("the counts while open");
        ledger.close().await;
        assert!(
            ledger.changes().await.is_err(),
            "closed: neither the probe nor the pool reads"
        );
    }

    #[tokio::test]
    async fn an_in_memory_ledger_has_no_probe() {
        let ledger = Ledger::open("sqlite::memory:").await.expect("the ledger opens");
        assert!(
            ledger.change_probe.is_none(),
            "another connection would see another database"
        );
        ledger.changes().await.expect("the counts through the pool");
    }
}
