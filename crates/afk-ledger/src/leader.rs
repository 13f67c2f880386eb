//! One `afk run` per ledger. Two control planes on one ledger would each count their own limits
//! and race to report on the same issues, so `afk run` holds the ledger's leadership while it
//! works and a second one stands by until the first is gone (crashed, killed, stopped).
//!
//! The lock lives outside the tables, so that a dead process can never leave it behind: for
//! SQLite an OS file lock on `PATH.lock` (released by the kernel when the process dies), for
//! PostgreSQL a session advisory lock keyed by the ledger's schema (released when its connection
//! closes).
//!
//! A lock can be lost without its holder noticing: the PostgreSQL session is terminated
//! (`pg_terminate_backend`, an idle-connection reaper, a server restart), the lock file is deleted
//! (a standby then locks a new file of the same name), or the holder is paused past a standby's
//! takeover. So each leader also takes a **leadership epoch** in the ledger (table `leadership`,
//! bumped by every new leader), and every write of a handle that leads is fenced by it in its own
//! transaction (see the `fence!` macro): a leader that has not noticed its loss can no longer
//! write. [`Leadership::check`] notices the loss itself (the lock file replaced, the session gone,
//! the epoch moved on); `afk run` calls it between ticks.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};

use crate::model::millis;
use crate::{Ledger, LedgerError, Pool};

/// The advisory lock of the ledger's schema, tried without waiting: true when taken.
pub(crate) const PG_TRY_LOCK: &str =
    "SELECT pg_try_advisory_lock(hashtext('afk-ledger-leader:' || current_schema()))";

/// Gives the advisory lock of the ledger's schema back on this session.
pub(crate) const PG_UNLOCK: &str =
    "SELECT pg_advisory_unlock(hashtext('afk-ledger-leader:' || current_schema()))";

/// Whether a session holds the advisory lock of the ledger's schema, read from `pg_locks` without
/// taking it. A single-`bigint` advisory key shows as its high 32 bits in `classid` and its low
/// ones in `objid`, with `objsubid` 1 (`hashtext` gives an `int4`, widened with its sign).
const PG_LOCK_HELD: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks l, \
     (SELECT CAST(hashtext('afk-ledger-leader:' || current_schema()) AS BIGINT) AS k) key \
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     AND CAST(l.classid AS BIGINT) = ((key.k >> 32) & 4294967295) \
     AND CAST(l.objid AS BIGINT) = (key.k & 4294967295))";

/// How long [`Leadership::check`] waits for the database before it counts the lock as lost.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Proof that this process leads the ledger. Dropping it lets a standby take over.
#[derive(Debug)]
pub struct Leadership {
    hold: Hold,
    epoch: i64,
    ledger: Ledger,
}

#[derive(Debug)]
enum Hold {
    /// The locked `PATH.lock` file of a SQLite ledger (held for its drop, which unlocks), and its
    /// path, to notice the file being deleted or replaced.
    File { locked: File, path: PathBuf },
    /// The connection holding the PostgreSQL advisory lock (held for its drop, which closes it).
    Postgres { session: PgConnection },
    /// An in-memory ledger belongs to one process anyway.
    Private,
}

/// Why a [`Leadership`] was lost: one line, for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LeadershipLost(pub String);

impl Leadership {
    /// The leadership epoch this process took: every write of the ledger handle that took it is
    /// fenced by it.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Whether this process still leads: the lock is still held (the lock file at its path is
    /// still the one locked; the PostgreSQL session still answers) and no other process took a
    /// newer epoch. A database that cannot be asked within 10 s counts as lost for PostgreSQL
    /// (the session may be gone); for SQLite an unreadable epoch says nothing (the writes stay
    /// fenced either way).
    pub async fn check(&mut self) -> Result<(), LeadershipLost> {
        let epoch = match &mut self.hold {
            Hold::Private => return Ok(()),
            Hold::File { locked, path } => {
                if !same_file(locked, path) {
                    return Err(LeadershipLost(format!(
                        "the lock file {} was deleted or replaced",
                        path.display()
                    )));
                }
                match tokio::time::timeout(CHECK_TIMEOUT, self.ledger.current_epoch()).await {
                    Ok(Ok(epoch)) => epoch,
                    _ => return Ok(()),
                }
            }
            Hold::Postgres { session } => {
                let asked =
                    sqlx::query_scalar("SELECT epoch FROM leadership WHERE id = 1").fetch_one(session);
                match tokio::time::timeout(CHECK_TIMEOUT, asked).await {
                    Ok(Ok(epoch)) => epoch,
                    Ok(Err(error)) => {
                        return Err(LeadershipLost(format!(
                            "the PostgreSQL session holding the leader lock failed: {error}"
                        )))
                    }
                    Err(_) => {
                        return Err(LeadershipLost(format!(
                            "the PostgreSQL session holding the leader lock did not answer within {} s",
                            CHECK_TIMEOUT.as_secs()
                        )))
                    }
                }
            }
        };
        if epoch != self.epoch {
            return Err(LeadershipLost(format!(
                "another afk run took the lead (epoch {epoch}, this one led as {})",
                self.epoch
            )));
        }
        Ok(())
    }

    /// Resolves once [`Leadership::check`] fails, checking every `every`: the reason.
    pub async fn lost(&mut self, every: Duration) -> LeadershipLost {
        loop {
            tokio::time::sleep(every).await;
            if let Err(lost) = self.check().await {
                return lost;
            }
        }
    }

    /// Gives the leadership up now, so that a standby can take over at once. (Dropping it gives
    /// it up too; for PostgreSQL the server then notices the closed session a moment later.)
    pub async fn release(self) {
        match self.hold {
            Hold::Postgres { mut session } => {
                let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut session)
                    .await;
                let _ = session.close().await;
            }
            Hold::File { locked, .. } => drop(locked),
            Hold::Private => {}
        }
    }
}

/// Who leads a ledger, as [`Ledger::leader`] sees it from outside: what `afk status` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderSeen {
    /// Whether some process (an `afk run`) holds the ledger's leadership now; `None` when this
    /// cannot be told without taking the lock (an in-memory ledger; a SQLite ledger on a system
    /// other than Linux, whose kernel lists held locks in `/proc/locks`).
    pub held: Option<bool>,
    /// The leadership epoch: how many times a leader took the lead (0: never).
    pub epoch: i64,
    /// When the current leader (with none, the last one) took the lead; `None` before any.
    pub taken_at: Option<DateTime<Utc>>,
}

impl Ledger {
    /// Who leads the ledger: whether a process holds the lock [`Ledger::try_lead`] takes (the
    /// `PATH.lock` file of SQLite, seen in the kernel's list of held locks; the schema's advisory
    /// lock of PostgreSQL, seen in `pg_locks`), and the epoch and instant of the last lead taken.
    /// Never takes the lock, so an `afk run` starting meanwhile is not turned away.
    pub async fn leader(&self) -> Result<LeaderSeen, LedgerError> {
        let (epoch, taken_ms): (i64, i64) = fetch!(
            self,
            fetch_one,
            "SELECT epoch, taken_ms FROM leadership WHERE id = 1"
        );
        let held = match &self.pool {
            Pool::Sqlite(pool) => {
                let options = pool.connect_options();
                let path = options.get_filename();
                if is_memory(&path.to_string_lossy()) {
                    None
                } else {
                    lock_file_held_seen(&lock_path(path)).map_err(io)?
                }
            }
            Pool::Postgres(pool) => Some(sqlx::query_scalar(PG_LOCK_HELD).fetch_one(pool).await?),
        };
        let taken_at = match epoch {
            0 => None,
            _ => DateTime::from_timestamp_millis(taken_ms),
        };
        Ok(LeaderSeen {
            held,
            epoch,
            taken_at,
        })
    }

    /// Takes the ledger's leadership if no other process holds it: `Ok(None)` when another does.
    /// Never waits; call again to retry.
    ///
    /// Taking it bumps the ledger's leadership epoch, and from then on every write through this
    /// handle (and its clones) is fenced by that epoch: once another process takes the lead, they
    /// fail with [`LedgerError::Deposed`] and write nothing.
    pub async fn try_lead(&self) -> Result<Option<Leadership>, LedgerError> {
        let hold = match &self.pool {
            Pool::Sqlite(pool) => {
                let options = pool.connect_options();
                let path = options.get_filename();
                if is_memory(&path.to_string_lossy()) {
                    Hold::Private
                } else {
                    let path = lock_path(path);
                    match lock_file(&path).map_err(io)? {
                        Some(locked) => Hold::File { locked, path },
                        None => return Ok(None),
                    }
                }
            }
            Pool::Postgres(pool) => {
                // A connection of its own, kept for as long as the leadership: the lock is the
                // session's, and the pool must not hand that session to anyone else.
                let mut session = pool.acquire().await?.detach();
                let held: bool = sqlx::query_scalar(PG_TRY_LOCK).fetch_one(&mut session).await?;
                if !held {
                    let _ = session.close().await;
                    return Ok(None);
                }
                Hold::Postgres { session }
            }
        };
        // Under the lock: no other process bumps the epoch at the same time.
        let epoch = self.bump_epoch().await?;
        self.fence.store(epoch, Ordering::SeqCst);
        Ok(Some(Leadership {
            hold,
            epoch,
            ledger: self.clone(),
        }))
    }

    /// The leadership epoch the ledger holds now (0 before any leader).
    pub async fn current_epoch(&self) -> Result<i64, LedgerError> {
        let (epoch,): (i64,) = fetch!(self, fetch_one, "SELECT epoch FROM leadership WHERE id = 1");
        Ok(epoch)
    }

    /// A new epoch for a new leader. A fenced write of the previous leader in flight holds the
    /// row until it ends (PostgreSQL) or the write lock (SQLite): the bump waits for it, and
    /// every later one of its writes sees the new epoch.
    async fn bump_epoch(&self) -> Result<i64, LedgerError> {
        let now = millis(chrono::Utc::now());
        let (epoch,): (i64,) = fetch!(
            self,
            fetch_one,
            "UPDATE leadership SET epoch = epoch + 1, taken_ms = $1 WHERE id = 1 RETURNING epoch",
            now
        );
        Ok(epoch)
    }
}

fn io(error: std::io::Error) -> LedgerError {
    LedgerError::Database(sqlx::Error::Io(error))
}

/// True for a SQLite file name that is an in-memory database.
pub(crate) fn is_memory(name: &str) -> bool {
    name.is_empty() || name.contains(":memory:") || name.contains("mode=memory")
}

/// The lock file of the SQLite database at `db`: `PATH.lock`.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

/// Locks the file at `path` (made when missing) without waiting: `None` when another process
/// holds it.
fn lock_file(path: &Path) -> std::io::Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    try_lock(file)
}

fn try_lock(file: File) -> std::io::Result<Option<File>> {
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// True when another process holds the lock file at `path` (a missing file is never held, and
/// none is made). Taken and given back at once: dropping the file unlocks it.
pub(crate) fn lock_file_held(path: &Path) -> std::io::Result<bool> {
    match OpenOptions::new().write(true).open(path) {
        Ok(file) => Ok(try_lock(file)?.is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether some process holds a lock on the file at `path`, read from the kernel's list of held
/// locks (`/proc/locks`) rather than by trying the lock, which would turn away an `afk run` trying
/// it at the same instant. A missing file is never held.
#[cfg(target_os = "linux")]
fn lock_file_held_seen(path: &Path) -> std::io::Result<Option<bool>> {
    use std::os::unix::fs::MetadataExt;
    let file = match std::fs::metadata(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(false)),
        Err(e) => return Err(e),
    };
    match std::fs::read_to_string("/proc/locks") {
        Ok(table) => Ok(Some(held_in_lock_table(&table, file.dev(), file.ino()))),
        // No procfs mounted: cannot tell.
        Err(_) => Ok(None),
    }
}

/// Elsewhere there is no list of held locks to read, and trying the lock is what must not happen.
#[cfg(not(target_os = "linux"))]
fn lock_file_held_seen(_path: &Path) -> std::io::Result<Option<bool>> {
    Ok(None)
}

/// Whether Linux's lock table (`/proc/locks`: `ID: KIND MODE ACCESS PID MAJOR:MINOR:INODE START
/// END` a line, waiters marked `ID: -> ...`) lists a granted lock on the file of device `dev` and
/// inode `ino`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn held_in_lock_table(table: &str, dev: u64, ino: u64) -> bool {
    // glibc's encoding of a device number; the kernel prints major and minor in hex.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major:02x}:{minor:02x}:{ino}");
    table.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        match fields.next() {
            None | Some("->") => false,
            // KIND, then MODE, ACCESS and PID before the file.
            Some(_) => fields.nth(3) == Some(wanted.as_str()),
        }
    })
}

/// True when `path` still names the file `locked` was opened as: a lock file deleted (and maybe
/// made again by a standby) is no lock any more.
#[cfg(unix)]
fn same_file(locked: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (locked.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_locked: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::held_in_lock_table;

    const TABLE: &str = "1: FLOCK  ADVISORY  WRITE 4778 fe:00:10117985 0 EOF\n\
                         1: -> FLOCK  ADVISORY  WRITE 4790 fe:00:555 0 EOF\n\
                         2: POSIX  ADVISORY  WRITE 3801 103:05:770064 0 EOF\n";

    #[test]
    fn a_lock_held_on_the_file_is_found_by_device_and_inode() {
        assert!(held_in_lock_table(TABLE, 0xfe00, 10117985));
        // Device 259:5 (an NVMe partition) in glibc's encoding.
        assert!(held_in_lock_table(TABLE, (259 << 8) | 5, 770064));
    }

    #[test]
    fn a_waiter_another_device_or_another_inode_is_no_lock_held() {
        assert!(!held_in_lock_table(TABLE, 0xfe00, 555), "only waiting for it");
        assert!(!held_in_lock_table(TABLE, 0xfe01, 10117985), "another device");
        assert!(!held_in_lock_table(TABLE, 0xfe00, 1011798), "another inode");
        assert!(!held_in_lock_table("", 0xfe00, 10117985));
    }
}
