//! A look at a ledger that changes nothing, for `afk doctor`: can it be reached, are its
//! migrations current, does an `afk run` lead it (seen without taking its lock), and do its
//! running totals match a recount. [`Ledger::open`] would migrate it and create a missing SQLite
//! file; this does neither. [`Ledger::repair_totals`] is the one write here, asked for by name.

use std::str::FromStr;

use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, SqliteConnection};

use crate::leader::{is_memory, lock_file_held_seen, lock_path, PG_LOCK_HELD};
use crate::open::{POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS};
use crate::{redact_url, Backend, LeaderState, Ledger, LedgerError};

/// The migration that made the running totals (`job_counts`, `ledger_totals`).
const TOTALS_MIGRATION: i64 = 22;

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
    /// Whether a process (an `afk run`) holds the ledger's leadership now, as far as can be seen
    /// without taking its lock (as [`Ledger::leader`] sees it).
    pub leader: LeaderState,
    /// The running totals (migration 0022) that differ from a recount of the rows, read in one
    /// snapshot: empty when every one matches; `None` when they were not looked at (a ledger that
    /// does not exist, or whose migrations are not 0022's: pending, failed or a newer afk's).
    pub totals: Option<Vec<TotalDrift>>,
}

/// One running total of the ledger (migration 0022: what `afk status` reads instead of counting
/// the history) that differs from what counting the rows says. The triggers keep them exact for
/// every write that runs them; a write that runs none (SQLite's `REPLACE`, PostgreSQL with its
/// triggers disabled, a restore that disables them) leaves them wrong until
/// [`Ledger::repair_totals`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotalDrift {
    /// Which total, in words: `jobs queued` (jobs in one state), `attempts`, `events`,
    /// `ended attempts' agent ms`, `open attempts`, `open attempts' summed start ms`.
    pub total: String,
    /// What the running total says.
    pub kept: i64,
    /// What a recount of the rows says.
    pub counted: i64,
}

impl std::fmt::Display for TotalDrift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} kept, {} counted", self.total, self.kept, self.counted)
    }
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
            let ran = sqlite_ran(&mut connection).await?;
            // Read from the kernel's list of held locks, never by trying the lock: an `afk run`
            // trying it at the same instant would be turned away.
            let leader = match in_memory {
                true => LeaderState::CannotTell,
                false => lock_file_held_seen(&lock_path(&path)),
            };
            let mut inspection =
                Inspection::of(url_redacted, Backend::Sqlite, &SQLITE_MIGRATIONS, &ran, leader);
            if totals_comparable(&SQLITE_MIGRATIONS, &ran) {
                // One read transaction: one snapshot of the totals and the rows (WAL: no writer
                // waits for it).
                let mut tx = connection.begin().await?;
                inspection.totals = Some(sqlite_drift(&mut tx).await?);
                tx.rollback().await?;
            }
            let _ = connection.close().await;
            Ok(inspection)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(open_error)?;
            let mut connection = options.connect().await.map_err(open_error)?;
            let ran = pg_ran(&mut connection).await?;
            // Read from `pg_locks`, never by trying the lock: an `afk run` trying it at the same
            // instant would be turned away.
            let held: bool = sqlx::query_scalar(PG_LOCK_HELD)
                .fetch_one(&mut connection)
                .await?;
            let leader = match held {
                true => LeaderState::Leading,
                false => LeaderState::NoLeaderSeen,
            };
            let mut inspection = Inspection::of(
                url_redacted,
                Backend::Postgres,
                &POSTGRES_MIGRATIONS,
                &ran,
                leader,
            );
            if totals_comparable(&POSTGRES_MIGRATIONS, &ran) {
                // One snapshot of the totals and the rows, blocking no writer.
                let mut tx = connection.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                inspection.totals = Some(pg_drift(&mut tx).await?);
                tx.rollback().await?;
            }
            let _ = connection.close().await;
            Ok(inspection)
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
            ..Self::of(url_redacted, backend, migrator, &[], LeaderState::NoLeaderSeen)
        }
    }

    /// What the migrations `ran` (version, finished) say against those `migrator` knows.
    fn of(
        url_redacted: String,
        backend: Backend,
        migrator: &Migrator,
        ran: &[(i64, bool)],
        leader: LeaderState,
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
            leader,
            totals: None,
        }
    }
}

/// Whether the running totals mean what this afk knows them to mean: migration 0022 ran, and
/// no migration (of those `ran`) failed or came from a newer afk than `migrator`'s.
fn totals_comparable(migrator: &Migrator, ran: &[(i64, bool)]) -> bool {
    let known =
        |version: i64| (migrator.iter()).any(|m| m.migration_type.is_up_migration() && m.version == version);
    ran.iter().all(|(version, ok)| *ok && known(*version))
        && ran.iter().any(|(version, _)| *version == TOTALS_MIGRATION)
}

/// The migrations that ran on a SQLite ledger (version, finished); none when it has no
/// migration table.
async fn sqlite_ran(connection: &mut SqliteConnection) -> Result<Vec<(i64, bool)>, LedgerError> {
    let has_table: Option<(String,)> =
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'")
            .fetch_optional(&mut *connection)
            .await?;
    Ok(match has_table {
        Some(_) => {
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
                .fetch_all(&mut *connection)
                .await?
        }
        None => Vec::new(),
    })
}

/// The migrations that ran on a PostgreSQL ledger (its schema: the URL's `search_path`); none
/// when it has no migration table.
async fn pg_ran(connection: &mut PgConnection) -> Result<Vec<(i64, bool)>, LedgerError> {
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *connection)
    .await?;
    Ok(match has_table {
        true => {
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
                .fetch_all(&mut *connection)
                .await?
        }
        false => Vec::new(),
    })
}

/// The running totals of `job_counts` (jobs per state).
const KEPT_COUNTS: &str = "SELECT state, jobs FROM job_counts";
/// The same, counted from the rows.
const COUNTED_COUNTS: &str = "SELECT state, COUNT(*) FROM jobs GROUP BY state";
/// The running totals of `ledger_totals`, in [`TOTALS`]' order.
const KEPT_TOTALS: &str = "SELECT attempts, events, ended_agent_ms, open_attempts, open_created_ms \
                           FROM ledger_totals WHERE id = 1";
/// The same, counted from the rows (as migration 0022 first filled them).
const COUNTED_TOTALS: &str = "SELECT (SELECT COUNT(*) FROM attempts), (SELECT COUNT(*) FROM events), \
     (SELECT CAST(COALESCE(SUM(ended_ms - created_ms), 0) AS BIGINT) FROM attempts \
      WHERE ended_ms IS NOT NULL), \
     (SELECT COUNT(*) FROM attempts WHERE ended_ms IS NULL), \
     (SELECT CAST(COALESCE(SUM(created_ms), 0) AS BIGINT) FROM attempts WHERE ended_ms IS NULL)";
/// The names of `ledger_totals`' columns, for a person.
const TOTALS: [&str; 5] = [
    "attempts",
    "events",
    "ended attempts' agent ms",
    "open attempts",
    "open attempts' summed start ms",
];
/// Takes the lock every writer of the totals takes before it moves them, as a first statement
/// that is a write: SQLite's write lock; on PostgreSQL the change-count row, which each statement
/// writing jobs, attempts or events locks (by its triggers, 0021 to 0023) before it moves a total.
const LOCK_WRITERS: &str = "UPDATE watched_changes SET counter = counter WHERE id = 1";
/// Sets the running totals to a recount, in the transaction that holds [`LOCK_WRITERS`].
const REFILL: [&str; 4] = [
    "DELETE FROM job_counts",
    "INSERT INTO job_counts (state, jobs) SELECT state, COUNT(*) FROM jobs GROUP BY state",
    "DELETE FROM ledger_totals",
    // `COUNTED_TOTALS`, with the row's id.
    "INSERT INTO ledger_totals (id, attempts, events, ended_agent_ms, open_attempts, open_created_ms) \
     SELECT 1, (SELECT COUNT(*) FROM attempts), (SELECT COUNT(*) FROM events), \
     (SELECT CAST(COALESCE(SUM(ended_ms - created_ms), 0) AS BIGINT) FROM attempts \
      WHERE ended_ms IS NOT NULL), \
     (SELECT COUNT(*) FROM attempts WHERE ended_ms IS NULL), \
     (SELECT CAST(COALESCE(SUM(created_ms), 0) AS BIGINT) FROM attempts WHERE ended_ms IS NULL)",
];

type Totals = (i64, i64, i64, i64, i64);

/// The totals read through `$tx` (either backend's connection or transaction) that differ from a
/// recount made through it.
macro_rules! drift_in {
    ($tx:expr) => {{
        let kept_counts: Vec<(String, i64)> = sqlx::query_as(KEPT_COUNTS).fetch_all(&mut *$tx).await?;
        let counted_counts: Vec<(String, i64)> = sqlx::query_as(COUNTED_COUNTS).fetch_all(&mut *$tx).await?;
        let kept: Option<Totals> = sqlx::query_as(KEPT_TOTALS).fetch_optional(&mut *$tx).await?;
        let counted: Totals = sqlx::query_as(COUNTED_TOTALS).fetch_one(&mut *$tx).await?;
        Ok::<_, LedgerError>(drift(&kept_counts, &counted_counts, kept, counted))
    }};
}

async fn sqlite_drift(tx: &mut SqliteConnection) -> Result<Vec<TotalDrift>, LedgerError> {
    drift_in!(tx)
}

async fn pg_drift(tx: &mut PgConnection) -> Result<Vec<TotalDrift>, LedgerError> {
    drift_in!(tx)
}

/// The totals that differ between what is `kept` and what was `counted`: jobs per state (a state
/// missing on one side counts 0 there), then the totals row (a missing row keeps 0 of each).
fn drift(
    kept_counts: &[(String, i64)],
    counted_counts: &[(String, i64)],
    kept: Option<Totals>,
    counted: Totals,
) -> Vec<TotalDrift> {
    let mut states: Vec<&str> = (kept_counts.iter().chain(counted_counts))
        .map(|(state, _)| state.as_str())
        .collect();
    states.sort_unstable();
    states.dedup();
    let of =
        |rows: &[(String, i64)], state: &str| rows.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
    let mut drifts: Vec<TotalDrift> = states
        .into_iter()
        .map(|state| TotalDrift {
            total: format!("jobs {state}"),
            kept: of(kept_counts, state),
            counted: of(counted_counts, state),
        })
        .collect();
    let (k, c) = (kept.unwrap_or_default(), counted);
    let pairs = [(k.0, c.0), (k.1, c.1), (k.2, c.2), (k.3, c.3), (k.4, c.4)];
    drifts.extend(
        TOTALS
            .iter()
            .zip(pairs)
            .map(|(total, (kept, counted))| TotalDrift {
                total: (*total).to_owned(),
                kept,
                counted,
            }),
    );
    // A totals row that is missing altogether is wrong even where the rows count 0.
    drifts.retain(|d| d.kept != d.counted || (kept.is_none() && TOTALS.contains(&d.total.as_str())));
    drifts
}

/// How long [`Ledger::repair_totals`] waits for the writers' lock before it gives up: a writer
/// holds it for one short transaction, so a longer wait is a transaction left open (a SQL
/// session, an import), which a person must end first.
pub const REPAIR_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Ledger {
    /// Sets the running totals of the ledger at `url` (migration 0022: jobs per state, attempts,
    /// events, agent time) to a recount of its rows when they differ, and returns what differed
    /// (empty: nothing was written). No migration is run and no file is created; a ledger
    /// without the totals this afk knows (0022 not applied, a migration failed or came from a
    /// newer afk) is [`LedgerError::NotMigrated`], naming those migrations.
    ///
    /// Safe while an `afk run` writes: the recount and the rewrite are one transaction that first
    /// takes the lock every writer of the totals takes before it moves them (SQLite's write lock;
    /// PostgreSQL's change-count row), so no write lands between the count and the rewrite and
    /// every later one moves the new totals. Writers wait for it (about as long as one count of
    /// the history takes, twice: measured as the bare counting queries on 100,000 jobs, 110,000
    /// attempts and 500,000 events, about 0.05 s on SQLite and 0.1 s on PostgreSQL, warm, so
    /// 0.1 to 0.2 s; an `afk run` write waits up to 10 s, SQLite's busy timeout, before it fails
    /// as any failed write does). It waits at most [`REPAIR_LOCK_WAIT`] for that lock: a transaction holding it
    /// longer fails it with an error for which [`LedgerError::is_lock_timeout`] holds. Not
    /// fenced: it writes no job.
    pub async fn repair_totals(url: &str) -> Result<Vec<TotalDrift>, LedgerError> {
        Self::repair_totals_within(url, REPAIR_LOCK_WAIT).await
    }

    /// [`Ledger::repair_totals`] waiting at most `wait` for the writers' lock (tests: a short
    /// wait).
    #[doc(hidden)]
    pub async fn repair_totals_within(
        url: &str,
        wait: std::time::Duration,
    ) -> Result<Vec<TotalDrift>, LedgerError> {
        let url_redacted = redact_url(url);
        let open_error = |source: sqlx::Error| LedgerError::Open {
            url_redacted: url_redacted.clone(),
            source,
        };
        let not_comparable = |migrator: &Migrator, ran: &[(i64, bool)]| {
            let seen = Inspection::of(
                url_redacted.clone(),
                Backend::Sqlite,
                migrator,
                ran,
                LeaderState::CannotTell,
            );
            let mut why = Vec::new();
            if !seen.unknown.is_empty() {
                why.push(format!(
                    "a newer afk applied migration(s) {:?} this afk does not know (use that afk)",
                    seen.unknown
                ));
            }
            if !seen.failed.is_empty() {
                why.push(format!(
                    "migration(s) {:?} started and did not finish (see afk doctor)",
                    seen.failed
                ));
            }
            if why.is_empty() {
                why.push(format!(
                    "migration {TOTALS_MIGRATION:04} that made them has not run (afk run applies it)"
                ));
            }
            LedgerError::NotMigrated {
                what: format!("the running totals of {url_redacted}: {}", why.join("; ")),
            }
        };
        macro_rules! repair_on {
            ($connection:expr, $ran:ident, $migrator:expr, $($lock_wait:expr)?) => {{
                let mut connection = $connection;
                let ran = $ran(&mut connection).await?;
                if !totals_comparable($migrator, &ran) {
                    let _ = connection.close().await;
                    return Err(not_comparable($migrator, &ran));
                }
                let mut tx = connection.begin().await?;
                $(sqlx::query(&$lock_wait).execute(&mut *tx).await?;)?
                sqlx::query(LOCK_WRITERS).execute(&mut *tx).await?;
                let drifts: Vec<TotalDrift> = drift_in!(tx)?;
                if !drifts.is_empty() {
                    for sql in REFILL {
                        sqlx::query(sql).execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                let _ = connection.close().await;
                drifts
            }};
        }
        if url.starts_with("sqlite:") {
            // As the ledger's own connections wait for a writer (`open.rs`), but never creating
            // a missing file.
            let options = SqliteConnectOptions::from_str(url)
                .map_err(open_error)?
                .create_if_missing(false)
                .busy_timeout(wait);
            Ok(repair_on!(
                options.connect().await.map_err(open_error)?,
                sqlite_ran,
                &SQLITE_MIGRATIONS,
            ))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(open_error)?;
            Ok(repair_on!(
                options.connect().await.map_err(open_error)?,
                pg_ran,
                &POSTGRES_MIGRATIONS,
                format!("SET LOCAL lock_timeout = '{}ms'", wait.as_millis().max(1))
            ))
        } else {
            Err(LedgerError::UnsupportedUrl { url_redacted })
        }
    }
}
