//! A look at a ledger that changes nothing, for `afk doctor`: can it be reached, are its
//! migrations current, and does an `afk run` lead it. [`Ledger::open`] would migrate it and
//! create a missing SQLite file; this does neither.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::leader::{is_memory, lock_file_held, lock_path, PG_TRY_LOCK, PG_UNLOCK};
use crate::open::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use crate::{redact_url, Backend, Ledger, LedgerError};

/// What [`Ledger::inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The ledger's URL, its password redacted.
    pub url_redacted: String,
    /// Its database.
    pub backend: Backend,
    /// False for a SQLite file that does not exist yet (`afk run` creates it).
    pub exists: bool,
    /// The migrations this afk knows that have run.
    pub applied: usize,
    /// The migrations this afk knows that have not run yet: `afk run` applies them at start.
    pub pending: Vec<i64>,
    /// Migrations that ran but this afk does not know: a newer afk wrote the ledger.
    pub unknown: Vec<i64>,
    /// Migrations that started but did not finish.
    pub failed: Vec<i64>,
    /// Another process (an `afk run`) holds the ledger's leadership now.
    pub led: bool,
}

impl Ledger {
    /// Looks at the ledger at `url` without changing it (no migration, no file created): the
    /// migrations that ran against the ones this afk knows, and whether an `afk run` leads it (the
    /// lock [`Ledger::try_lead`] takes: `PATH.lock` for SQLite, the schema's advisory lock for
    /// PostgreSQL). Errors name the URL with its password redacted.
    pub async fn inspect(url: &str) -> Result<Inspection, LedgerError> {
        let url_redacted = redact_url(url);
        let open_error = |source: sqlx::Error| LedgerError::Open {
            url_redacted: url_redacted.clone(),
            source,
        };
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url).map_err(open_error)?;
            let path = options.get_filename().to_owned();
            let in_memory = is_memory(url);
            if !in_memory && !path.exists() {
                return Ok(Inspection::fresh(
                    url_redacted,
                    Backend::Sqlite,
                    &SQLITE_MIGRATIONS,
                ));
            }
            let mut connection = options.connect().await.map_err(open_error)?;
            let has_table: Option<(String,)> = sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_optional(&mut connection)
            .await?;
            let ran = match has_table {
                Some(_) => {
                    sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
                        .fetch_all(&mut connection)
                        .await?
                }
                None => Vec::new(),
            };
            let _ = connection.close().await;
            let led = !in_memory
                && lock_file_held(&lock_path(&path))
                    .map_err(|e| LedgerError::Database(sqlx::Error::Io(e)))?;
            Ok(Inspection::of(
                url_redacted,
                Backend::Sqlite,
                &SQLITE_MIGRATIONS,
                &ran,
                led,
            ))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(open_error)?;
            let mut connection = options.connect().await.map_err(open_error)?;
            let has_table: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations')",
            )
            .fetch_one(&mut connection)
            .await?;
            let ran: Vec<(i64, bool)> = match has_table {
                true => {
                    sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
                        .fetch_all(&mut connection)
                        .await?
                }
                false => Vec::new(),
            };
            // The lock `try_lead` takes, taken and given back at once: held elsewhere, it is led.
            let free: bool = sqlx::query_scalar(PG_TRY_LOCK).fetch_one(&mut connection).await?;
            if free {
                // Given back on this connection before it closes: a backend ends after the client
                // has gone, and until it does, the lock would still refuse the `afk run` that a
                // person starts right after `afk doctor`.
                sqlx::query(PG_UNLOCK).execute(&mut connection).await?;
            }
            let _ = connection.close().await;
            Ok(Inspection::of(
                url_redacted,
                Backend::Postgres,
                &POSTGRES_MIGRATIONS,
                &ran,
                !free,
            ))
        } else {
            Err(LedgerError::UnsupportedUrl { url_redacted })
        }
    }
}

impl Inspection {
    /// A ledger that does not exist yet: every migration pending.
    fn fresh(url_redacted: String, backend: Backend, migrator: &Migrator) -> Self {
        Inspection {
            exists: false,
            ..Self::of(url_redacted, backend, migrator, &[], false)
        }
    }

    fn of(
        url_redacted: String,
        backend: Backend,
        migrator: &Migrator,
        ran: &[(i64, bool)],
        led: bool,
    ) -> Self {
        let known: Vec<i64> = migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration())
            .map(|m| m.version)
            .collect();
        let is_known = |version: &i64| known.contains(version);
        let ran_ok = |version: &i64| ran.iter().any(|(v, ok)| v == version && *ok);
        Inspection {
            url_redacted,
            backend,
            exists: true,
            applied: known.iter().filter(|v| ran_ok(v)).count(),
            pending: known.iter().copied().filter(|v| !ran_ok(v)).collect(),
            unknown: ran.iter().map(|(v, _)| *v).filter(|v| !is_known(v)).collect(),
            failed: ran.iter().filter(|(_, ok)| !ok).map(|(v, _)| *v).collect(),
            led,
        }
    }
}
