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

/// Whether a session holds the advisory lock of the ledger's schema, read from `pg_locks` without
/// taking it. A single-`bigint` advisory key shows as its high 32 bits in `classid` and its low
/// ones in `objid`, with `objsubid` 1 (`hashtext` gives an `int4`, widened with its sign).
pub(crate) const PG_LOCK_HELD: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks l, \
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

/// Whether an `afk run` leads a ledger, seen from outside without taking its lock.
///
/// Serialized as the status API's `leading`: `true`, `false`, `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderState {
    /// A process holds the ledger's leadership now.
    Leading,
    /// No holder of the lock was seen. For PostgreSQL this means none holds it; for SQLite the
    /// kernel's list of held locks (`/proc/locks`) showed none on the lock file, but that list
    /// hides the locks of processes in another pid namespace (another container sharing the
    /// file), so a leader may still run there.
    NoLeaderSeen,
    /// Cannot be told without taking the lock: an in-memory ledger, a SQLite ledger on a system
    /// other than Linux or without `/proc`, a lock file whose metadata cannot be read.
    CannotTell,
}

impl serde::Serialize for LeaderState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            LeaderState::Leading => serializer.serialize_bool(true),
            LeaderState::NoLeaderSeen => serializer.serialize_bool(false),
            LeaderState::CannotTell => serializer.serialize_none(),
        }
    }
}

/// Who leads a ledger, as [`Ledger::leader`] sees it from outside: what `afk status` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderSeen {
    /// Whether some process (an `afk run`) holds the ledger's leadership now, as far as can be
    /// seen without taking the lock.
    pub held: LeaderState,
    /// The leadership epoch: how many times a leader took the lead (0: never).
    pub epoch: i64,
    /// When the current leader (with none, the last one) took the lead; `None` before any.
    pub taken_at: Option<DateTime<Utc>>,
}

impl Ledger {
    /// Who leads the ledger: whether a process holds the lock [`Ledger::try_lead`] takes (the
    /// `PATH.lock` file of SQLite, seen in the kernel's list of held locks; the schema's advisory
    /// lock of PostgreSQL, seen in `pg_locks`), and the epoch and instant of the last lead taken.
    /// Never takes the lock, so an `afk run` starting meanwhile is not turned away. A lock file
    /// that cannot be inspected gives [`LeaderState::CannotTell`], not an error: only the
    /// database failing fails this.
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
                    LeaderState::CannotTell
                } else {
                    lock_file_held_seen(&lock_path(path))
                }
            }
            Pool::Postgres(pool) => match sqlx::query_scalar(PG_LOCK_HELD).fetch_one(pool).await? {
                true => LeaderState::Leading,
                false => LeaderState::NoLeaderSeen,
            },
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

/// Whether some process holds a lock on the file at `path`, read from the kernel's list of held
/// locks (`/proc/locks`) rather than by trying the lock, which would turn away an `afk run` trying
/// it at the same instant. A missing file is never held.
///
/// The list names a file by device and inode, and its device is the filesystem's, which is not
/// always what `stat` says (a btrfs subvolume, overlayfs): a line matches on the inode with
/// either `stat`'s device or that of the mount the file lies on (`/proc/self/mountinfo`).
#[cfg(target_os = "linux")]
pub(crate) fn lock_file_held_seen(path: &Path) -> LeaderState {
    use std::os::unix::fs::MetadataExt;
    let file = match std::fs::metadata(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return LeaderState::NoLeaderSeen,
        Err(e) => {
            tracing::debug!("cannot tell who leads: lock file {}: {e}", path.display());
            return LeaderState::CannotTell;
        }
    };
    let Ok(table) = std::fs::read_to_string("/proc/locks") else {
        // No procfs mounted.
        return LeaderState::CannotTell;
    };
    let mut devices = vec![device_numbers(file.dev())];
    let mount = mount_device_kept(&MOUNT_SEEN, path, file.dev(), file.ino(), || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .zip(std::fs::canonicalize(path).ok())
            .and_then(|(mountinfo, path)| mount_device(&mountinfo, &path))
    });
    devices.extend(mount);
    match held_in_lock_table(&table, &devices, file.ino()) {
        true => LeaderState::Leading,
        false => LeaderState::NoLeaderSeen,
    }
}

/// The mount the last lock file looked at lies on, kept for [`lock_file_held_seen`]'s next look
/// (`afk status` and the dashboard's `/api/v1/state` ask at every poll). Only the list of held
/// locks, which is the answer, is read again each time.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
static MOUNT_SEEN: std::sync::Mutex<Option<MountSeen>> = std::sync::Mutex::new(None);

/// The mount device found for the lock file at `path`, which `stat` gave as inode `ino` of
/// device `dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct MountSeen {
    path: PathBuf,
    dev: u64,
    ino: u64,
    device: (u64, u64),
}

/// The device of the mount the file at `path` (inode `ino` of `dev`) lies on: what `kept` holds
/// for that very file, else what `find` says (kept when found). The mount a file lies on cannot
/// change under it: a mount over one of its directories makes the path name another file (of
/// another device or inode), which is looked up afresh. What `find` does not find is looked up
/// again next time (`/proc` not mounted yet, say).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn mount_device_kept(
    kept: &std::sync::Mutex<Option<MountSeen>>,
    path: &Path,
    dev: u64,
    ino: u64,
    find: impl FnOnce() -> Option<(u64, u64)>,
) -> Option<(u64, u64)> {
    // A poisoned lock only means a panic elsewhere mid-update: the value is whole either way.
    let mut kept = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(seen) = kept.as_ref() {
        if seen.path == path && seen.dev == dev && seen.ino == ino {
            return Some(seen.device);
        }
    }
    let device = find()?;
    *kept = Some(MountSeen {
        path: path.to_owned(),
        dev,
        ino,
        device,
    });
    Some(device)
}

/// Elsewhere there is no list of held locks to read, and trying the lock is what must not happen.
#[cfg(not(target_os = "linux"))]
pub(crate) fn lock_file_held_seen(_path: &Path) -> LeaderState {
    LeaderState::CannotTell
}

/// A device number (`st_dev`) as major and minor, in glibc's encoding.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn device_numbers(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The device (major, minor) of the mount `path` (absolute, symbolic links resolved) lies on,
/// from Linux's `/proc/self/mountinfo` (`ID PARENT MAJOR:MINOR ROOT MOUNTPOINT ...` a line,
/// blanks in the mount point written `\040`): the deepest mount point above it, the last one
/// mounted when several are stacked there.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn mount_device(mountinfo: &str, path: &Path) -> Option<(u64, u64)> {
    let mut best: Option<(usize, (u64, u64))> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(device), Some(point)) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        let Some((major, minor)) = device.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        let point = PathBuf::from(unescape_mount_point(point));
        let depth = point.components().count();
        if path.starts_with(&point) && best.is_none_or(|(deepest, _)| depth >= deepest) {
            best = Some((depth, (major, minor)));
        }
    }
    best.map(|(_, device)| device)
}

/// A mount point as `mountinfo` writes it, with its octal escapes (`\040` a blank) undone.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn unescape_mount_point(escaped: &str) -> String {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether Linux's lock table (`/proc/locks`: `ID: KIND MODE ACCESS PID MAJOR:MINOR:INODE START
/// END` a line, waiters marked `ID: -> ...`) lists a granted lock on inode `ino` of one of the
/// `devices` (major, minor).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn held_in_lock_table(table: &str, devices: &[(u64, u64)], ino: u64) -> bool {
    // The kernel prints major and minor in hex.
    let wanted: Vec<String> = devices
        .iter()
        .map(|(major, minor)| format!("{major:02x}:{minor:02x}:{ino}"))
        .collect();
    table.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        match fields.next() {
            None | Some("->") => false,
            // KIND, then MODE, ACCESS and PID before the file.
            Some(_) => fields.nth(3).is_some_and(|file| wanted.iter().any(|w| w == file)),
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
    use std::path::Path;

    use super::{device_numbers, held_in_lock_table, mount_device, mount_device_kept};

    const TABLE: &str = "1: FLOCK  ADVISORY  WRITE 4778 fe:00:10117985 0 EOF\n\
                         1: -> FLOCK  ADVISORY  WRITE 4790 fe:00:555 0 EOF\n\
                         2: POSIX  ADVISORY  WRITE 3801 103:05:770064 0 EOF\n";

    #[test]
    fn a_lock_held_on_the_file_is_found_by_device_and_inode() {
        assert!(held_in_lock_table(TABLE, &[device_numbers(0xfe00)], 10117985));
        // Device 259:5 (an NVMe partition) in glibc's encoding.
        assert!(held_in_lock_table(
            TABLE,
            &[device_numbers((259 << 8) | 5)],
            770064
        ));
        // `stat` said another device (a btrfs subvolume), the file's mount says the listed one.
        assert!(held_in_lock_table(TABLE, &[(0, 52), (0xfe, 0)], 10117985));
    }

    #[test]
    fn a_waiter_another_device_or_another_inode_is_no_lock_held() {
        let fe00 = [device_numbers(0xfe00)];
        assert!(!held_in_lock_table(TABLE, &fe00, 555), "only waiting for it");
        assert!(
            !held_in_lock_table(TABLE, &[(0xfe, 1), (0, 52)], 10117985),
            "other devices"
        );
        assert!(!held_in_lock_table(TABLE, &fe00, 1011798), "another inode");
        assert!(!held_in_lock_table("", &fe00, 10117985));
    }

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw\n\
30 22 0:52 /@home /home rw,relatime shared:2 - btrfs /dev/nvme0n1p2 rw,subvol=/@home\n\
31 30 259:5 / /home/me/my\\040data rw - ext4 /dev/nvme0n1p3 rw\n\
32 22 0:60 / /home/other rw - tmpfs tmpfs rw\n\
33 30 0:61 / /home rw - tmpfs tmpfs rw\n";

    #[test]
    fn a_file_lies_on_the_deepest_mount_above_it_the_last_one_stacked_there() {
        let at = |path: &str| mount_device(MOUNTINFO, Path::new(path));
        assert_eq!(at("/var/afk/ledger.db.lock"), Some((0, 21)), "the root");
        assert_eq!(at("/home/me/ledger.db.lock"), Some((0, 61)), "mounted over /home");
        assert_eq!(at("/home/me/my data/ledger.db.lock"), Some((259, 5)), "a blank");
        assert_eq!(
            at("/home/otherwise/l.lock"),
            Some((0, 61)),
            "whole components only"
        );
        assert_eq!(mount_device("", Path::new("/x")), None);
    }

    #[test]
    fn the_mount_of_a_lock_file_is_looked_up_once_per_file() {
        let kept = std::sync::Mutex::new(None);
        let lookups = std::cell::Cell::new(0);
        let find = |device: Option<(u64, u64)>| {
            let lookups = &lookups;
            move || {
                lookups.set(lookups.get() + 1);
                device
            }
        };
        let path = Path::new("/srv/afk/ledger.db.lock");
        assert_eq!(
            mount_device_kept(&kept, path, 52, 7, find(Some((0, 52)))),
            Some((0, 52))
        );
        assert_eq!(
            mount_device_kept(&kept, path, 52, 7, find(Some((9, 9)))),
            Some((0, 52))
        );
        assert_eq!(lookups.get(), 1, "the same file: the mount it lies on is kept");
        // The file made again (a new inode), the path mounted over (another device), another
        // ledger's lock file: looked up afresh.
        assert_eq!(
            mount_device_kept(&kept, path, 52, 8, find(Some((0, 53)))),
            Some((0, 53))
        );
        assert_eq!(
            mount_device_kept(&kept, path, 60, 8, find(Some((0, 60)))),
            Some((0, 60))
        );
        let other = Path::new("/srv/other/ledger.db.lock");
        assert_eq!(
            mount_device_kept(&kept, other, 60, 8, find(Some((0, 61)))),
            Some((0, 61))
        );
        assert_eq!(lookups.get(), 4);
        // Not found (no /proc yet): nothing kept, asked again next time.
        assert_eq!(mount_device_kept(&kept, path, 70, 1, find(None)), None);
        assert_eq!(
            mount_device_kept(&kept, path, 70, 1, find(Some((0, 70)))),
            Some((0, 70))
        );
        assert_eq!(lookups.get(), 6);
    }
}
