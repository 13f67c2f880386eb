//! [`ShellFeed`]: the fleet pushed by T3 (`orchestration.subscribeShell`) instead of polled.
//!
//! A background task keeps one subscription open on its own [`RpcConnection`] and applies every
//! item to a [`Fleet`]. The view is offered ([`ShellFeed::fleet`]) only while it is known to be
//! complete: from T3's `synchronized` marker after each (re)connect until the socket is lost. In
//! between the caller gets `None` and falls back to the HTTP snapshot, so a gap in the stream can
//! never read as "these threads are gone".
//!
//! After a lost socket the task reconnects with exponential back-off and resumes with
//! `afterSequence` = the last sequence it applied, keeping its fleet: T3 replays what was missed
//! (or sends a fresh snapshot, which replaces the fleet). Chunks are Acked as they are applied, so
//! T3 never runs ahead of the view.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::client::T3Client;
use crate::error::{excerpt, T3Error};
use crate::fleet::{Fleet, FleetChange};
use crate::ids::ThreadId;
use crate::rpc::{ChunkValues, RpcConnection, RpcSettings};
use crate::wire::rpc::SUBSCRIBE_SHELL;
use crate::wire::{FleetItem, SubscribeShell};

/// How a [`ShellFeed`] connects and reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// The subscription's socket: pings, connect timeout.
    pub rpc: RpcSettings,
    /// The first wait before reconnecting after a loss (default 200 ms); it doubles per failure.
    pub reconnect_initial: Duration,
    /// The longest wait between reconnects (default 10 s).
    pub reconnect_max: Duration,
    /// While a subscription is catching up (subscribed, not yet `synchronized`): how long T3 may
    /// send nothing before the feed closes the socket and reconnects (default 30 s). T3 sends the
    /// snapshot or replay as soon as its database answers, then `synchronized` once it is acked,
    /// so a longer silence means the subscription is stuck. Once synchronized, silence is a quiet
    /// fleet and never ends the stream.
    pub sync_timeout: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            rpc: RpcSettings::default(),
            reconnect_initial: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            sync_timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Display for FeedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedStatus::Connecting => f.write_str("connecting"),
            FeedStatus::Live { sequence } => write!(f, "live at sequence {sequence}"),
            FeedStatus::Down { error } => write!(f, "down: {error}"),
        }
    }
}

/// Where a [`ShellFeed`] stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedStatus {
    /// Started, not synchronized yet, and nothing failed so far.
    Connecting,
    /// Synchronized and streaming: [`ShellFeed::fleet`] is the current view as of `sequence`.
    Live {
        /// The last event sequence applied.
        sequence: u64,
    },
    /// Not synchronized since the last failure (reconnecting, or connected and catching up).
    Down {
        /// The last failure, one line.
        error: String,
    },
}

/// The shell stream, kept open in a background task. Dropping it stops the task and closes its
/// socket.
pub struct ShellFeed {
    shared: Arc<Shared>,
    changes: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

struct Shared {
    view: Mutex<View>,
    changes: watch::Sender<u64>,
}

struct View {
    /// The fleet, only while synchronized.
    fleet: Option<Arc<Fleet>>,
    status: FeedStatus,
    /// Which threads the events applied to the fleet changed: see [`ShellFeed::threads_changed`].
    log: ChangeLog,
}

/// The threads each applied thread event changed, by sequence, since the view was last replaced
/// by a snapshot, so that a reader who saw the view at one sequence can visit only what changed
/// since (issue 18: a tick's work in proportion to what changed).
#[derive(Debug, Default)]
struct ChangeLog {
    /// How many times a snapshot replaced the view.
    replacements: u64,
    /// Every thread event applied after this sequence is in `entries`.
    complete_after: u64,
    /// (the event's sequence, its thread), oldest first.
    entries: VecDeque<(u64, ThreadId)>,
}

/// The most thread events [`ChangeLog`] keeps: about 3 MB, minutes of a busy fleet of 100,000
/// threads. A reader further behind is told to look at the whole view.
const CHANGE_LOG_MAX: usize = 65_536;

impl ChangeLog {
    /// A snapshot at `sequence` replaced the view: nothing before it can be compared with it.
    fn replaced(&mut self, sequence: u64) {
        self.replacements = self.replacements.wrapping_add(1);
        self.complete_after = sequence;
        self.entries.clear();
    }

    /// The event at `sequence` changed `thread`.
    fn push(&mut self, sequence: u64, thread: ThreadId) {
        if self.entries.len() >= CHANGE_LOG_MAX {
            if let Some((dropped, _)) = self.entries.pop_front() {
                self.complete_after = dropped;
            }
        }
        self.entries.push_back((sequence, thread));
    }
}

/// The thread a stream item changes, when it is a thread event.
fn changed_thread(item: &FleetItem) -> Option<ThreadId> {
    match item {
        FleetItem::ThreadUpserted { thread, .. } => Some(thread.id().to_id()),
        FleetItem::ThreadUnreadable { thread, .. } => Some(thread.id.clone()),
        FleetItem::ThreadRemoved { thread_id, .. } => Some(thread_id.clone()),
        _ => None,
    }
}

impl Shared {
    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl ShellFeed {
    /// Spawns the feed's task for `client`'s T3 (its base URL and bearer provider): connect,
    /// subscribe with `requestCompletionMarker`, apply every item, Ack as it goes; on a lost socket,
    /// or a subscription that stays silent for [`FeedSettings::sync_timeout`] before it is
    /// synchronized, reconnect with back-off and resume after the last sequence seen. An outage is
    /// logged once (warn), every silent subscription once (warn), and the recovery once (info).
    /// Must be called within a Tokio runtime.
    pub fn start(client: &T3Client, settings: FeedSettings) -> ShellFeed {
        let (changes_tx, changes) = watch::channel(0);
        let shared = Arc::new(Shared {
            view: Mutex::new(View {
                fleet: None,
                status: FeedStatus::Connecting,
                log: ChangeLog::default(),
            }),
            changes: changes_tx,
        });
        let feeder = Feeder {
            base_url: client.base_url().to_owned(),
            bearer: client.bearer(),
            settings,
            shared: shared.clone(),
            fleet: Arc::new(Fleet::default()),
            has_base: false,
            live: false,
            outage_logged: false,
        };
        let task = tokio::spawn(feeder.run());
        ShellFeed {
            shared,
            changes,
            task,
        }
    }

    /// The current view, only while the stream is live and synchronized since the last
    /// (re)connect; `None` otherwise (the caller then reads the HTTP snapshot). Cheap: the view is
    /// shared, copied by the task only when it changes while someone holds it.
    pub fn fleet(&self) -> Option<Arc<Fleet>> {
        self.shared.view().fleet.clone()
    }

    /// How many times a snapshot replaced the stream's view (at the first synchronization, and
    /// after a reconnect T3 could not replay): read it before [`ShellFeed::fleet`] and hand it to
    /// [`ShellFeed::threads_changed`] later.
    pub fn replacements(&self) -> u64 {
        self.shared.view().log.replacements
    }

    /// Every thread whose entry in the view may differ between the view at sequence `after` and
    /// the one at `upto` (upserted, removed or made unreadable by an event in between), when both
    /// views belong to the one that `replacements` ([`ShellFeed::replacements`], read before the
    /// first of them) counted; possibly with repeats. Any event on a thread counts, even one that
    /// changes only its `updatedAt`. `None` when that cannot be told: a snapshot replaced the
    /// view since, `upto` is before `after`, or the log no longer reaches back to `after` (it
    /// keeps the last 65,536 thread events). The caller then looks at the whole view.
    pub fn threads_changed(&self, replacements: u64, after: u64, upto: u64) -> Option<Vec<ThreadId>> {
        let view = self.shared.view();
        let log = &view.log;
        if log.replacements != replacements || after < log.complete_after || upto < after {
            return None;
        }
        // Sequences only grow in the log: the events after `after` are its tail.
        let start = log.entries.partition_point(|(sequence, _)| *sequence <= after);
        Some(
            log.entries
                .range(start..)
                .take_while(|(sequence, _)| *sequence <= upto)
                .map(|(_, thread)| thread.clone())
                .collect(),
        )
    }

    /// Where the feed stands.
    pub fn status(&self) -> FeedStatus {
        self.shared.view().status.clone()
    }

    /// Waits, at most `limit`, until the feed has either synchronized or failed once since it
    /// started (at once when it has). A caller about to read the HTTP snapshot for want of the
    /// stream's view calls it first: the stream's first snapshot (the whole fleet) and the HTTP
    /// one then need not be held at once, and the view usually comes from the stream.
    pub async fn settled(&self, limit: Duration) {
        let mut changes = self.changes.clone();
        let settle = async {
            while self.status() == FeedStatus::Connecting {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(limit, settle).await;
    }

    /// A counter bumped on every fleet change that is not [`FleetChange::Quiet`], on every
    /// transition between live and not live, and on the first failure to become live; await
    /// `changed()` on it to react within milliseconds. The value itself means nothing.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }
}

impl std::fmt::Debug for ShellFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellFeed")
            .field("status", &self.status())
            .finish()
    }
}

impl Drop for ShellFeed {
    fn drop(&mut self) {
        // Dropping the task drops its stream (Interrupt) and its connection (the socket closes).
        self.task.abort();
    }
}

/// The task's state.
struct Feeder {
    base_url: String,
    bearer: Arc<dyn afk_secrets::SecretProvider>,
    settings: FeedSettings,
    shared: Arc<Shared>,
    /// The view being kept, across reconnects; published while live.
    fleet: Arc<Fleet>,
    /// A snapshot was applied, so `fleet.sequence()` is a point to resume after.
    has_base: bool,
    /// Synchronized since the last (re)connect.
    live: bool,
    /// The current outage was logged.
    outage_logged: bool,
}

impl Feeder {
    async fn run(mut self) {
        let mut backoff = self.settings.reconnect_initial;
        loop {
            let ended = self.follow().await;
            if self.live {
                // The stream was live before this failure: start the back-off afresh.
                backoff = self.settings.reconnect_initial;
            }
            self.went_down(ended);
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(self.settings.reconnect_max);
        }
    }

    /// One connection: subscribe and apply items until the stream fails, ends, or stays silent
    /// too long while catching up.
    async fn follow(&mut self) -> Ended {
        let connection =
            match RpcConnection::connect(&self.base_url, self.bearer.clone(), self.settings.rpc).await {
                Ok(connection) => connection,
                Err(error) => return Ended::Failed(error),
            };
        let request = SubscribeShell {
            after_sequence: self.has_base.then(|| self.fleet.sequence()),
            request_completion_marker: Some(true),
        };
        debug!(url = %connection.url(), after = ?request.after_sequence, "t3 shell feed: subscribing");
        let payload = serde_json::to_value(&request).unwrap_or_default();
        let mut stream = match connection.stream(SUBSCRIBE_SHELL, payload).await {
            Ok(stream) => stream,
            Err(error) => return Ended::Failed(error),
        };
        loop {
            let next = if self.live {
                // Synchronized: silence is a quiet fleet (the socket's pings watch the peer).
                stream.next_values().await
            } else {
                // Catching up: T3 owes the snapshot (or replay) and `synchronized`. Returning
                // drops the stream and its connection, which closes the socket.
                match tokio::time::timeout(self.settings.sync_timeout, stream.next_values()).await {
                    Ok(next) => next,
                    Err(_) => {
                        return Ended::Silent {
                            url: connection.url().to_owned(),
                            waited: self.settings.sync_timeout,
                        }
                    }
                }
            };
            let values = match next {
                Some(Ok(values)) => values,
                Some(Err(error)) => return Ended::Failed(error),
                None => {
                    return Ended::Failed(T3Error::Socket {
                        what: SUBSCRIBE_SHELL.to_owned(),
                        url: connection.url().to_owned(),
                        detail: "T3 ended the stream".into(),
                        status: None,
                    })
                }
            };
            if let Err(error) = self.apply(values) {
                return Ended::Failed(error);
            }
        }
    }

    /// Applies one chunk and publishes the result; the next `next_values` Acks it.
    fn apply(&mut self, values: ChunkValues) -> Result<(), T3Error> {
        let mut changed = false;
        let mut synchronized = false;
        // Decode the whole chunk first, so that a bad item leaves the view as it was (the feed
        // then reconnects and resumes before it).
        let items = values
            .iter()
            .map(|value| {
                FleetItem::decode(value).map_err(|e| T3Error::MalformedReply {
                    what: SUBSCRIBE_SHELL.to_owned(),
                    detail: format!("not a shell stream item: {e}"),
                    body_excerpt: excerpt(value.as_bytes()),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The raw text is not needed once decoded: a first snapshot can be megabytes.
        drop(values);
        if items.is_empty() {
            return Ok(());
        }
        // The view's lock is held while the chunk is applied, and the published copy is let go
        // first: the fleet is then changed in place, not copied whole for every chunk (readers
        // wait the few microseconds instead; one still holding an older view costs one copy).
        let mut view = self.shared.view();
        view.fleet = None;
        let fleet = Arc::make_mut(&mut self.fleet);
        for item in items {
            match item {
                FleetItem::Synchronized => synchronized = true,
                FleetItem::Snapshot(_) => {
                    self.has_base = true;
                    fleet.apply(item);
                    view.log.replaced(fleet.sequence());
                    changed = true;
                }
                item => {
                    let thread = changed_thread(&item);
                    let before = fleet.sequence();
                    changed |= fleet.apply(item) != FleetChange::Quiet;
                    // Applied (not a replay of an event the view has): its thread changed.
                    if let Some(thread) = thread.filter(|_| fleet.sequence() > before) {
                        view.log.push(fleet.sequence(), thread);
                    }
                }
            }
        }
        let became_live = synchronized && !self.live;
        if !self.live && !became_live {
            // Catching up: nothing to show yet.
            return Ok(());
        }
        self.live = true;
        view.fleet = Some(self.fleet.clone());
        view.status = FeedStatus::Live {
            sequence: self.fleet.sequence(),
        };
        drop(view);
        if became_live {
            if self.outage_logged {
                info!(url = %self.base_url, sequence = self.fleet.sequence(), "T3's shell stream is back");
            }
            self.outage_logged = false;
        }
        if became_live || changed {
            self.shared.bump();
        }
        Ok(())
    }

    /// Hides the view after `ended`: logs the outage once (a silent subscription every time) and
    /// bumps the counter on the way down.
    fn went_down(&mut self, ended: Ended) {
        let error = ended.to_string();
        let was_live = std::mem::replace(&mut self.live, false);
        let was_connecting = {
            let mut view = self.shared.view();
            view.fleet = None;
            let before = std::mem::replace(&mut view.status, FeedStatus::Down { error: error.clone() });
            before == FeedStatus::Connecting
        };
        if let Ended::Silent { url, waited } = &ended {
            // Each one, however long the outage: a T3 that keeps doing this should be seen.
            warn!(
                url = %url,
                "T3 sent nothing on the shell stream for {} before it was synchronized; \
                 reconnecting (the HTTP snapshot serves meanwhile)",
                humanize(*waited)
            );
            self.outage_logged = true;
        } else if !self.outage_logged {
            warn!(error = %error, "T3's shell stream is down; reconnecting (the HTTP snapshot serves meanwhile)");
            self.outage_logged = true;
        } else {
            debug!(error = %error, "t3 shell feed: still down");
        }
        // Also the first failure, which ends [`ShellFeed::settled`]'s wait.
        if was_live || was_connecting {
            self.shared.bump();
        }
    }
}

/// Why one connection's subscription ended.
enum Ended {
    /// The socket or the stream failed, or T3 ended the stream.
    Failed(T3Error),
    /// T3 sent nothing for `waited` while the subscription was catching up.
    Silent {
        /// The WebSocket URL.
        url: String,
        /// [`FeedSettings::sync_timeout`].
        waited: Duration,
    },
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Failed(error) => error.fmt(f),
            Ended::Silent { url, waited } => write!(
                f,
                "{SUBSCRIBE_SHELL}: WebSocket {url}: T3 sent nothing for {} before the stream \
                 was synchronized",
                humanize(*waited)
            ),
        }
    }
}

/// `d` as a person reads it: `30s`, `250ms`.
fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A wait between half of `backoff` and all of it, so that many afk instances do not reconnect
/// in lockstep after a T3 restart.
fn jitter(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
}
