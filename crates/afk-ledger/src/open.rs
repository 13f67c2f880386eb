//! Opening a ledger: connecting to its database and bringing the schema up to date.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::probe::ChangeProbe;
use crate::{redact_url, Ledger, LedgerError, Pool};

pub(crate) static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
pub(crate) static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite writer waits for another connection's write to finish before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections to a SQLite file: readers run concurrently under WAL, writers take turns.
const SQLITE_MAX_CONNECTIONS: u32 = 4;
/// Connections to PostgreSQL per afk process.
const POSTGRES_MAX_CONNECTIONS: u32 = 8;
/// How long to wait for a database connection before reporting the database unreachable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

impl Ledger {
    /// Opens the ledger at `url` and brings its schema up to date (runs pending migrations).
    ///
    /// - `sqlite://PATH` (relative to the working directory, or `sqlite:///abs/path`): the file
    ///   and its parent directory are created when missing; the database runs in WAL mode with a
    ///   busy timeout, so that readers never block the writer and writers take turns.
    /// - `sqlite::memory:`: a private in-memory database, gone when the last clone is dropped
    ///   (tests, `afk demo`).
    /// - `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?options=-csearch_path%3DSCHEMA]`.
    ///
    /// Errors name the URL with its password redacted.
    pub async fn open(url: &str) -> Result<Ledger, LedgerError> {
        let url_redacted = redact_url(url);
        let (pool, change_probe) = if url.starts_with("sqlite:") {
            let (pool, file) = open_sqlite(url, &url_redacted).await?;
            let probe = file.and_then(|file| match ChangeProbe::open(&file) {
                Ok(probe) => Some(Arc::new(probe)),
                Err(error) => {
                    // Not fatal: the change counts are then read through the pool.
                    tracing::warn!(
                        "ledger at {url_redacted}: no read-only connection for the change counts: {error}"
                    );
                    None
                }
            });
            (Pool::Sqlite(pool), probe)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Pool::Postgres(open_postgres(url, &url_redacted).await?), None)
        } else {
            return Err(LedgerError::UnsupportedUrl { url_redacted });
        };
        tracing::debug!("ledger open at {url_redacted}");
        Ok(Ledger {
            pool,
            url_redacted,
            fence: Default::default(),
            change_probe,
        })
    }
}

/// Opens (creating when missing) the SQLite database at `url` and migrates it.
///
/// SQLite has no migration lock and briefly locks a new file while one connection switches it to
/// WAL: two processes opening a new file at once (`afk run` and `afk jobs`) can see "database is
/// locked" or the loser's `CREATE TABLE` fail with "already exists". Both are passing states, so
/// the whole open is tried again for up to the busy timeout; each migration commits with its
/// record, so a retry skips what the winner applied.
///
/// Returns the pool and, for a file (not an in-memory database), the file's path.
async fn open_sqlite(url: &str, url_redacted: &str) -> Result<(SqlitePool, Option<PathBuf>), LedgerError> {
    let open_error = |source: sqlx::Error| LedgerError::Open {
        url_redacted: url_redacted.to_owned(),
        source,
    };
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut options = SqliteConnectOptions::from_str(url)
        .map_err(open_error)?
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let pool_options = if in_memory {
        // One connection that never closes: the database lives exactly as long as it.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        let dir = options
            .get_filename()
            .parent()
            .filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| open_error(sqlx::Error::Io(e)))?;
        }
        // WAL with the default synchronous=FULL: a committed transition survives a power cut,
        // which the "record before effect" rule depends on.
        options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        // No ping before each acquire: a connection to a local file does not go stale, and the
        // ping is a second hand-off to sqlx's worker thread for every read (half of what a quiet
        // tick costs; BENCHMARKS.md "A quiet tick that does no work"). A statement on a broken
        // connection still fails with its error.
        // One connection kept open: quiet ticks read their change counts in place (`probe.rs`),
        // not through the pool, which would otherwise idle down to none in a quiet stretch and
        // make the first tick after a change open a connection (a worker thread, the file,
        // its PRAGMAs).
        SqlitePoolOptions::new()
            .max_connections(SQLITE_MAX_CONNECTIONS)
            .min_connections(1)
            .test_before_acquire(false)
    };
    let pool_options = pool_options.acquire_timeout(ACQUIRE_TIMEOUT);
    let deadline = tokio::time::Instant::now() + SQLITE_BUSY_TIMEOUT;
    loop {
        let attempt = async {
            if !in_memory {
                connect_once(&options).await.map_err(open_error)?;
            }
            let pool = pool_options
                .clone()
                .connect_with(options.clone())
                .await
                .map_err(open_error)?;
            if let Err(source) = SQLITE_MIGRATIONS.run(&pool).await {
                pool.close().await;
                return Err(LedgerError::Migrate {
                    url_redacted: url_redacted.to_owned(),
                    source,
                });
            }
            Ok(pool)
        };
        match attempt.await {
            Ok(pool) => {
                let file = (!in_memory).then(|| options.get_filename().to_path_buf());
                return Ok((pool, file));
            }
            Err(error) if is_passing_sqlite_race(&error) && tokio::time::Instant::now() < deadline => {
                tracing::debug!("ledger at {url_redacted} busy while opening, trying again: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// True for the errors another process opening the same new SQLite file at the same moment can
/// cause; false for lasting ones (a migration edited after it ran, a file that is not a database).
fn is_passing_sqlite_race(error: &LedgerError) -> bool {
    use sqlx::migrate::MigrateError;
    let busy = |e: &sqlx::Error| {
        e.as_database_error()
            .and_then(|d| d.code())
            .and_then(|code| code.parse::<i32>().ok())
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with any extended code.
            .is_some_and(|code| matches!(code & 0xff, 5 | 6))
    };
    match error {
        LedgerError::Open { source, .. } => busy(source),
        LedgerError::Migrate { source, .. } => {
            matches!(
                source,
                MigrateError::Execute(_) | MigrateError::ExecuteMigration(..)
            )
        }
        _ => false,
    }
}

/// Connects to the PostgreSQL database at `url` and migrates it. Concurrent migrations are
/// serialised by the migrator's advisory lock.
async fn open_postgres(url: &str, url_redacted: &str) -> Result<PgPool, LedgerError> {
    let open_error = |source: sqlx::Error| LedgerError::Open {
        url_redacted: url_redacted.to_owned(),
        source,
    };
    let options = PgConnectOptions::from_str(url).map_err(open_error)?;
    connect_once(&options).await.map_err(open_error)?;
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(open_error)?;
    POSTGRES_MIGRATIONS
        .run(&pool)
        .await
        .map_err(|source| LedgerError::Migrate {
            url_redacted: url_redacted.to_owned(),
            source,
        })?;
    Ok(pool)
}

/// Connects once, without retrying, and hangs up: a database that refuses us (wrong password, no
/// such file or server) is reported at once, where the pool would keep retrying until its acquire
/// timeout.
async fn connect_once<O>(options: &O) -> Result<(), sqlx::Error>
where
    O: ConnectOptions,
    O::Connection: Sized,
{
    match tokio::time::timeout(ACQUIRE_TIMEOUT, options.connect()).await {
        Ok(connection) => connection?.close().await,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", ACQUIRE_TIMEOUT.as_secs()),
        ))),
    }
}
