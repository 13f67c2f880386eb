//! What can go wrong with the ledger, worded so that a person can act on it.

use std::fmt;

use afk_core::{AttemptNo, JobId, JobState};

use crate::AttemptId;

/// A ledger row that an operation named but that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordRef {
    /// A job, by id.
    Job(JobId),
    /// An attempt, by id.
    Attempt(AttemptId),
}

impl fmt::Display for RecordRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordRef::Job(id) => write!(f, "job {id}"),
            RecordRef::Attempt(id) => write!(f, "attempt {id}"),
        }
    }
}

/// Why a ledger operation failed.
///
/// No variant carries a database password: URLs are redacted (`user:***@host`) before they are
/// stored here.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database could not be opened or reached.
    #[error("cannot open the ledger at {url_redacted}: {source}")]
    Open {
        /// The ledger URL with any password replaced by `***`.
        url_redacted: String,
        /// What the database driver said.
        #[source]
        source: sqlx::Error,
    },
    /// The URL names no backend the ledger supports.
    #[error(
        "unsupported ledger URL {url_redacted}: use sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB"
    )]
    UnsupportedUrl {
        /// The ledger URL with any password replaced by `***`.
        url_redacted: String,
    },
    /// The schema migrations failed (for example: the database was written by a newer afk, or a
    /// migration was edited after it ran).
    #[error("cannot bring the ledger at {url_redacted} up to date: {source}")]
    Migrate {
        /// The ledger URL with any password replaced by `***`.
        url_redacted: String,
        /// What the migrator said.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The job was no longer in the state the transition starts from: someone else (another
    /// afk replica, or a concurrent task) moved it first. Nothing was written; re-read the job
    /// and decide again.
    #[error("job {job} is {actual}, not {expected} as the transition assumed; nothing was recorded")]
    Conflict {
        /// The job.
        job: JobId,
        /// The state the transition starts from.
        expected: JobState,
        /// The state the ledger holds.
        actual: JobState,
    },
    /// The transition starts an attempt but no attempt ids were given to store with it.
    #[error("the transition starts attempt {number} of job {job} but no attempt ids were given")]
    MissingAttempt {
        /// The job.
        job: JobId,
        /// The attempt the transition starts.
        number: AttemptNo,
    },
    /// The transition changes the live attempt but the job has none (the ledger and the state
    /// machine disagree). Nothing was written.
    #[error("the transition changes the live attempt of job {job} but it has none; nothing was recorded")]
    NoLiveAttempt {
        /// The job.
        job: JobId,
    },
    /// The named row does not exist.
    #[error("{0} is not in the ledger")]
    NotFound(RecordRef),
    /// A value does not fit the ledger's columns (an issue number above 2^63, say).
    #[error("{what} does not fit in the ledger")]
    OutOfRange {
        /// Which value.
        what: String,
    },
    /// A stored row holds something afk cannot read (a state a newer afk wrote, a hand edit).
    #[error("the ledger holds an unreadable value: {what}")]
    Corrupt {
        /// Which row and column, and what is wrong with it.
        what: String,
    },
    /// The ledger's schema is not the one this afk knows for what was asked (its migrations
    /// pending, failed or from a newer afk): which, and what to do, in `what`.
    #[error("{what}")]
    NotMigrated {
        /// What is not migrated, which migrations, and the fix.
        what: String,
    },
    /// This handle took the ledger's leadership as `epoch`, but another `afk run` has taken it
    /// since (this one lost its lock: a terminated database session, a deleted lock file, a
    /// pause). Nothing was written; this process must stop acting as the leader.
    #[error("another afk run leads the ledger now (this one led it as epoch {epoch}); nothing was recorded")]
    Deposed {
        /// The epoch this handle led as.
        epoch: i64,
    },
    /// The database failed a query (connection lost, disk full, a constraint violated).
    #[error("ledger database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl LedgerError {
    /// True when the ledger refused a value itself (too large for its column, a NUL byte, text
    /// the database cannot store): the item that carried it is at fault, not the ledger.
    pub fn is_bad_value(&self) -> bool {
        match self {
            LedgerError::OutOfRange { .. } => true,
            // SQLSTATE class 22: data exception (PostgreSQL's "invalid byte sequence", numeric
            // overflow, ...).
            LedgerError::Database(e) => e
                .as_database_error()
                .and_then(|d| d.code())
                .is_some_and(|code| code.starts_with("22")),
            _ => false,
        }
    }

    /// True when the database gave up waiting for a lock another transaction held: SQLite's
    /// `database is locked` after its busy timeout, PostgreSQL's `lock_timeout` (SQLSTATE
    /// 55P03). Nothing was written; it may pass once that transaction ends.
    pub fn is_lock_timeout(&self) -> bool {
        let LedgerError::Database(e) = self else {
            return false;
        };
        let Some(database) = e.as_database_error() else {
            return false;
        };
        let code = database.code();
        let code = code.as_deref().unwrap_or_default();
        match database.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
            // Its extended result code in decimal: SQLITE_BUSY (5) once the busy timeout ran
            // out, or SQLITE_BUSY_TIMEOUT (773); not the immediate BUSY_RECOVERY or
            // BUSY_SNAPSHOT, which no wait would have helped.
            Some(_) => matches!(code, "5" | "773"),
            None => code == "55P03",
        }
    }

    /// True when the write was refused because another process leads the ledger now.
    pub fn is_deposed(&self) -> bool {
        matches!(self, LedgerError::Deposed { .. })
    }

    /// True when the database refused a write because it would break a uniqueness rule of the
    /// schema: a second live attempt for one job, a thread id used twice, an attempt number
    /// reused.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            LedgerError::Database(e) => e.as_database_error().is_some_and(|d| d.is_unique_violation()),
            _ => false,
        }
    }
}
