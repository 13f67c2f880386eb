//! [`RpcConnection`]: one WebSocket to T3's RPC endpoint (`GET /ws`), shared by every caller.
//!
//! T3 creates git worktrees only for commands that arrive here (`t3-api.md`, "Worktrees"), and
//! pushes the fleet's changes here (`orchestration.subscribeShell`), so afk speaks Effect RPC's
//! envelopes ([`crate::wire::rpc`]) over one socket:
//! - a background task owns the socket; callers hand it messages through a channel and get their
//!   replies through per-request channels, so any number of calls and streams share it;
//! - the bearer is asked for on every connect, and a 401 on the upgrade asks once more with
//!   [`Freshness::Refresh`], as the HTTP client does;
//! - the task pings every [`RpcSettings::ping_interval`] and declares the socket dead after
//!   [`RpcSettings::missed_pongs`] pings in a row went unanswered: a half-open TCP connection
//!   (a laptop asleep, a NAT that forgot us) would otherwise hang every call until the OS gives up;
//! - once dead, every pending call and stream ends with a transient [`T3Error::Socket`] and
//!   [`RpcConnection::is_alive`] is false for good: reconnecting is the owner's decision
//!   ([`crate::T3Client`] reconnects lazily, [`crate::ShellFeed`] with back-off).
//!
//! **A `Defect` from T3** (Effect RPC's "I could not handle a message at all") ends the connection:
//! it names no request, so T3's state for every pending call is unknown. Each pending call fails
//! with a transient error saying it may or may not have been applied, like a dropped socket, and
//! the defect is logged. Effect's own client fails its pending requests the same way.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use afk_secrets::{Freshness, SecretProvider};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, warn};

use crate::error::{excerpt, T3Error};
use crate::wire::rpc::{ClientMessage, RpcCause, RpcExit, RpcId, ServerMessage};
use crate::wire::ErrorBody;
use serde_json::value::RawValue;

/// The path of T3's WebSocket RPC endpoint, below the base URL.
const WS_PATH: &str = "/ws";
/// How long closing a dead or unwanted socket may take before it is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Timing of one [`RpcConnection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcSettings {
    /// How often the client pings T3 (default 5 s, as T3's own client does).
    pub ping_interval: Duration,
    /// The socket is dead after this many pings in a row without a Pong (default 3).
    pub missed_pongs: u32,
    /// How long the TCP, TLS and WebSocket handshakes may take together (default 5 s).
    pub connect_timeout: Duration,
    /// How long a unary call waits for its Exit before giving up on it (default 30 s); the call
    /// is then interrupted and may or may not have been applied.
    pub call_timeout: Duration,
}

impl Default for RpcSettings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(5),
            missed_pongs: 3,
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// The most one message (or frame) from T3 may hold. The shell stream's first item is the whole
/// fleet in one message, about 0.8 KB a thread: tungstenite's defaults (64 MiB a message, 16 MiB a
/// frame) refused it from about 20,000 threads on, and the stream then never came up. 256 MiB
/// holds a fleet of about 300,000 threads and still bounds what a faulty peer can make afk hold.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// The socket's limits: [`MAX_MESSAGE_BYTES`] for a message and for a frame.
fn socket_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// One WebSocket to T3's `/ws`, shared: clones are handles to the same socket. The socket closes
/// when the last handle (and the last [`RpcStream`]) is dropped.
#[derive(Clone)]
pub struct RpcConnection {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    settings: RpcSettings,
    next_id: AtomicU64,
    /// To the socket task. Dropping the last sender (with the last handle) ends the task.
    outgoing: mpsc::UnboundedSender<ClientMessage>,
    book: Arc<Book>,
}

/// The requests waiting for T3, shared by the handles and the socket task.
#[derive(Default)]
struct Book {
    state: Mutex<BookState>,
}

#[derive(Default)]
struct BookState {
    /// Why the socket is gone, once it is. Checked under the same lock as `pending` so that no
    /// request can be registered after the task failed the pending ones (it would wait forever).
    closed: Option<String>,
    pending: HashMap<u64, Pending>,
}

enum Pending {
    Call(oneshot::Sender<Delivery>),
    Stream(mpsc::UnboundedSender<Delivery>),
}

/// What the socket task hands a waiting request; the request turns it into an error naming
/// what it was doing.
#[derive(Debug)]
enum Delivery {
    Chunk(ChunkValues),
    Exit(RpcExit),
    /// The socket is gone, for this reason.
    Lost(String),
    /// T3 sent something about this request that is not an Effect RPC message.
    Malformed {
        detail: String,
        excerpt: String,
    },
}

impl Book {
    fn lock(&self) -> MutexGuard<'_, BookState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `delivery` to request `id`. An Exit (or anything final) removes the request.
    fn deliver(&self, id: u64, delivery: Delivery) {
        let mut state = self.lock();
        let last = !matches!(delivery, Delivery::Chunk(_));
        let Some(pending) = state.pending.get(&id) else {
            // An interrupted request's late reply, or an id we never sent: nobody waits for it.
            debug!(request = id, "t3 rpc: a reply for no pending request");
            return;
        };
        match pending {
            Pending::Stream(events) => {
                // A consumer that went away removes its entry on drop; a failed send only means
                // it is going away right now.
                let _ = events.send(delivery);
                if last {
                    state.pending.remove(&id);
                }
            }
            Pending::Call(_) => {
                let delivery = match delivery {
                    Delivery::Chunk(values) => Delivery::Malformed {
                        detail: "T3 sent a stream chunk for a unary call".into(),
                        excerpt: excerpt(values.iter().next().unwrap_or_default().as_bytes()),
                    },
                    other => other,
                };
                if let Some(Pending::Call(reply)) = state.pending.remove(&id) {
                    let _ = reply.send(delivery);
                }
            }
        }
    }

    /// Marks the socket gone and fails every pending request with `reason`.
    fn close(&self, reason: &str) {
        let pending = {
            let mut state = self.lock();
            state.closed.get_or_insert_with(|| reason.to_owned());
            std::mem::take(&mut state.pending)
        };
        for (_, request) in pending {
            let lost = Delivery::Lost(reason.to_owned());
            match request {
                Pending::Call(reply) => {
                    let _ = reply.send(lost);
                }
                Pending::Stream(events) => {
                    let _ = events.send(lost);
                }
            }
        }
    }
}

impl fmt::Debug for RpcConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcConnection")
            .field("url", &self.shared.url)
            .field("alive", &self.is_alive())
            .finish()
    }
}

impl RpcConnection {
    /// Connects to `<base_url>/ws` (`http` → `ws`, `https` → `wss`) with `Authorization: Bearer`
    /// from `bearer`, asked on every connect; a 401 on the upgrade asks again with
    /// [`Freshness::Refresh`], once. Fails with [`T3Error::Socket`] (the upgrade's status when T3
    /// refused it) or [`T3Error::Bearer`].
    pub async fn connect(
        base_url: &str,
        bearer: Arc<dyn SecretProvider>,
        settings: RpcSettings,
    ) -> Result<Self, T3Error> {
        let url = ws_url(base_url)?;
        let what = "connect";
        let mut freshness = Freshness::Cached;
        loop {
            let token = bearer.get(freshness).await.map_err(|source| T3Error::Bearer {
                what: format!("{what} to {url}"),
                source,
            })?;
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|e| T3Error::InvalidInput(format!("T3's WebSocket URL {url} is unusable: {e}")))?;
            let mut header = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                T3Error::InvalidInput("the bearer token holds characters an HTTP header cannot carry".into())
            })?;
            header.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, header);

            let attempt = tokio::time::timeout(
                settings.connect_timeout,
                tokio_tungstenite::connect_async_with_config(request, Some(socket_config()), false),
            )
            .await;
            let refusal = match attempt {
                Err(_) => {
                    return Err(socket_error(
                        what,
                        &url,
                        format!("no connection within {:?}", settings.connect_timeout),
                        None,
                    ))
                }
                Ok(Ok((socket, _))) => return Ok(Self::start(url, settings, socket)),
                // tungstenite's errors name the URL and the failure, never the request's headers.
                Ok(Err(tungstenite::Error::Http(response))) => response,
                Ok(Err(e)) => return Err(socket_error(what, &url, format!("cannot connect: {e}"), None)),
            };
            let status = refusal.status().as_u16();
            if status == 401 && freshness == Freshness::Cached {
                // The token may have rotated since the provider last read it: ask again, once.
                freshness = Freshness::Refresh;
                continue;
            }
            let reason = refusal
                .body()
                .as_deref()
                .map(describe_refusal)
                .unwrap_or_default();
            return Err(socket_error(
                what,
                &url,
                format!("T3 refused the upgrade with {status}{reason}"),
                Some(status),
            ));
        }
    }

    fn start<S>(url: String, settings: RpcSettings, socket: tokio_tungstenite::WebSocketStream<S>) -> Self
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (outgoing, queue) = mpsc::unbounded_channel();
        let book = Arc::new(Book::default());
        debug!(url = %url, "t3 rpc: connected");
        tokio::spawn(run_socket(socket, queue, book.clone(), settings, url.clone()));
        Self {
            shared: Arc::new(Shared {
                url,
                settings,
                next_id: AtomicU64::new(1),
                outgoing,
                book,
            }),
        }
    }

    /// A unary call: sends a Request for `method` with `payload` and waits for its Exit. Returns
    /// the success value, or a [`T3Error::Rpc`] naming the method and T3's tagged error. A socket
    /// that dies before the Exit, or no Exit within [`RpcSettings::call_timeout`], is a transient
    /// [`T3Error::Socket`] saying the call may or may not have been applied.
    pub async fn call(&self, method: &str, payload: Value) -> Result<Value, T3Error> {
        self.call_as(method, method, payload).await
    }

    /// [`RpcConnection::call`], with errors saying `what` was being done.
    pub(crate) async fn call_as(&self, what: &str, method: &str, payload: Value) -> Result<Value, T3Error> {
        let (reply, answer) = oneshot::channel();
        let id = self
            .register(method, payload, Pending::Call(reply))
            .map_err(|reason| self.lost(what, &reason, "nothing was sent"))?;
        // Interrupts the call if this future is dropped (a caller's timeout) before the Exit. Never
        // a command: interrupting a bootstrap half-way leaves T3 with a thread and no turn, while
        // an unanswered command is resolved safely by its id and T3's view of the thread.
        let mut guard = InterruptOnDrop {
            connection: self,
            id,
            armed: method != crate::wire::rpc::DISPATCH_COMMAND,
        };
        let delivery = match tokio::time::timeout(self.shared.settings.call_timeout, answer).await {
            Err(_) => {
                return Err(self.lost(
                    what,
                    &format!("no reply within {:?}", self.shared.settings.call_timeout),
                    "the call may or may not have been applied",
                ))
            }
            Ok(Err(_)) => Delivery::Lost("the connection's task ended".into()),
            Ok(Ok(delivery)) => delivery,
        };
        guard.armed = false;
        match delivery {
            Delivery::Exit(RpcExit::Success { value }) => Ok(value),
            Delivery::Exit(RpcExit::Failure { cause }) => Err(self.failure(what, &cause)),
            Delivery::Lost(reason) => {
                Err(self.lost(what, &reason, "the call may or may not have been applied"))
            }
            Delivery::Malformed { detail, excerpt } => Err(T3Error::MalformedReply {
                what: what.to_owned(),
                detail,
                body_excerpt: excerpt,
            }),
            Delivery::Chunk(_) => Err(self.lost(
                what,
                "an unexpected chunk",
                "the call may or may not have been applied",
            )),
        }
    }

    /// A stream call: sends a Request for `method` with `payload`; read its chunks with
    /// [`RpcStream::next_chunk`]. Each chunk is Acked when the consumer asks for the next one, so
    /// T3 sends at the consumer's pace. Dropping the stream before its end sends Interrupt.
    pub async fn stream(&self, method: &str, payload: Value) -> Result<RpcStream, T3Error> {
        let (events, receiver) = mpsc::unbounded_channel();
        let id = self
            .register(method, payload, Pending::Stream(events))
            .map_err(|reason| self.lost(method, &reason, "nothing was sent"))?;
        Ok(RpcStream {
            connection: self.clone(),
            what: method.to_owned(),
            id,
            events: receiver,
            owe_ack: false,
            finished: false,
        })
    }

    /// True until the socket died (closed, failed, a Defect, or too many missed pongs). A dead
    /// connection stays dead: connect a new one.
    pub fn is_alive(&self) -> bool {
        self.shared.book.lock().closed.is_none()
    }

    /// The WebSocket URL, for messages.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Registers a request and queues it for the socket; the reason the socket is gone otherwise.
    fn register(&self, method: &str, payload: Value, pending: Pending) -> Result<RpcId, String> {
        let mut state = self.shared.book.lock();
        if let Some(reason) = &state.closed {
            return Err(reason.clone());
        }
        let id = RpcId(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        state.pending.insert(id.0, pending);
        let request = ClientMessage::Request {
            id,
            tag: method.to_owned(),
            payload,
            headers: Vec::new(),
        };
        if self.shared.outgoing.send(request).is_err() {
            state.pending.remove(&id.0);
            return Err("the connection's task ended".into());
        }
        Ok(id)
    }

    /// Forgets request `id` and tells T3 to stop working on it.
    fn interrupt(&self, id: RpcId) {
        let was_pending = self.shared.book.lock().pending.remove(&id.0).is_some();
        if was_pending {
            // The socket may be gone already; then there is nothing to interrupt.
            let _ = self
                .shared
                .outgoing
                .send(ClientMessage::Interrupt { request_id: id });
        }
    }

    fn lost(&self, what: &str, reason: &str, consequence: &str) -> T3Error {
        socket_error(what, &self.shared.url, format!("{reason}; {consequence}"), None)
    }

    fn failure(&self, what: &str, cause: &[RpcCause]) -> T3Error {
        let typed = cause.iter().find_map(|part| match part {
            RpcCause::Fail { error } => Some(error),
            _ => None,
        });
        let text = |key: &str| {
            typed
                .and_then(|e| e.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        T3Error::Rpc {
            what: what.to_owned(),
            url: self.shared.url.clone(),
            tag: text("_tag"),
            message: one_line(&RpcExit::failure_summary(cause)),
            required_scope: text("requiredScope"),
            defect: typed.is_none(),
        }
    }
}

/// Interrupts a unary call whose caller stopped waiting before its Exit.
struct InterruptOnDrop<'a> {
    connection: &'a RpcConnection,
    id: RpcId,
    armed: bool,
}

impl Drop for InterruptOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.connection.interrupt(self.id);
        }
    }
}

/// The chunks of one stream call. Dropping it before the stream ended sends Interrupt.
pub struct RpcStream {
    connection: RpcConnection,
    what: String,
    id: RpcId,
    events: mpsc::UnboundedReceiver<Delivery>,
    /// A chunk was handed out and not yet Acked: the Ack goes when the next one is asked for.
    owe_ack: bool,
    /// T3 ended the stream, the socket died, or the stream failed: nothing more will come.
    finished: bool,
}

impl fmt::Debug for RpcStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcStream")
            .field("method", &self.what)
            .field("id", &self.id)
            .field("url", &self.connection.shared.url)
            .finish()
    }
}

impl RpcStream {
    /// The next chunk's values. Acks the previous chunk first (so T3 sends the next one only now).
    /// `None` once T3 ended the stream successfully; an error (and then `None`) when it failed or
    /// the socket died (transient).
    ///
    /// The values come as raw JSON text, for the consumer to decode into its own types: a chunk
    /// can be a whole fleet, and a `serde_json::Value` tree of it would cost several times its
    /// size. Each value is copied out of T3's frame; [`RpcStream::next_values`] does not copy.
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<Box<RawValue>>, T3Error>> {
        Some(self.next_values().await?.map(ChunkValues::into_raw))
    }

    /// [`RpcStream::next_chunk`], the values left in the frame T3 sent them in: a first shell
    /// snapshot is the whole fleet in one frame, and copying its values out held it twice.
    pub async fn next_values(&mut self) -> Option<Result<ChunkValues, T3Error>> {
        if self.finished {
            return None;
        }
        if self.owe_ack {
            self.owe_ack = false;
            // If the socket is gone the events channel says so next.
            let _ = self
                .connection
                .shared
                .outgoing
                .send(ClientMessage::Ack { request_id: self.id });
        }
        let delivery = self
            .events
            .recv()
            .await
            .unwrap_or_else(|| Delivery::Lost("the connection's task ended".into()));
        let result = match delivery {
            Delivery::Chunk(values) => {
                self.owe_ack = true;
                return Some(Ok(values));
            }
            Delivery::Exit(RpcExit::Success { .. }) => None,
            Delivery::Exit(RpcExit::Failure { cause }) => {
                Some(Err(self.connection.failure(&self.what, &cause)))
            }
            Delivery::Lost(reason) => {
                Some(Err(self.connection.lost(&self.what, &reason, "the stream ended")))
            }
            Delivery::Malformed { detail, excerpt } => {
                // T3 still thinks the stream is open: tell it to stop.
                self.connection.interrupt(self.id);
                Some(Err(T3Error::MalformedReply {
                    what: self.what.clone(),
                    detail,
                    body_excerpt: excerpt,
                }))
            }
        };
        self.finished = true;
        result
    }
}

impl Drop for RpcStream {
    fn drop(&mut self) {
        if !self.finished {
            self.connection.interrupt(self.id);
        }
    }
}

/// Owns the socket: writes what the handles queue, routes what T3 sends, keeps the socket alive.
async fn run_socket<S>(
    socket: tokio_tungstenite::WebSocketStream<S>,
    mut queue: mpsc::UnboundedReceiver<ClientMessage>,
    book: Arc<Book>,
    settings: RpcSettings,
    url: String,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut source) = socket.split();
    let interval = settings.ping_interval.max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut unanswered: u32 = 0;
    // A peer that stopped reading fills the TCP buffer and blocks a send, and with it this loop's
    // pings: a send that takes as long as the missed pongs would is a dead socket too.
    let stall = interval * settings.missed_pongs.max(1);

    let reason = loop {
        tokio::select! {
            queued = queue.recv() => match queued {
                // Every handle and stream is gone: nobody can be waiting.
                None => break None,
                Some(message) => {
                    if let Err(reason) = send(&mut sink, &message, stall).await {
                        break Some(reason);
                    }
                }
            },
            received = source.next() => match received {
                None => break Some("T3 closed the socket".to_owned()),
                Some(Err(e)) => break Some(format!("the socket failed: {e}")),
                Some(Ok(Message::Close(close))) => {
                    break Some(match close {
                        Some(close) if !close.reason.is_empty() => {
                            format!("T3 closed the socket ({} {})", u16::from(close.code), close.reason)
                        }
                        Some(close) => format!("T3 closed the socket ({})", u16::from(close.code)),
                        None => "T3 closed the socket".to_owned(),
                    });
                }
                Some(Ok(Message::Text(text))) => match route(&book, text, &url) {
                    Routed::Done => {}
                    Routed::Pong => unanswered = 0,
                    Routed::AnswerPing => {
                        if let Err(reason) = send(&mut sink, &ClientMessage::Pong, stall).await {
                            break Some(reason);
                        }
                    }
                    Routed::Fatal(reason) => break Some(reason),
                },
                // Binary frames are not part of T3's protocol; WebSocket-level pings are answered
                // by tungstenite itself.
                Some(Ok(_)) => {}
            },
            _ = ticker.tick() => {
                if unanswered >= settings.missed_pongs {
                    break Some(format!(
                        "T3 answered none of the last {unanswered} pings (one every {:?})",
                        settings.ping_interval
                    ));
                }
                if let Err(reason) = send(&mut sink, &ClientMessage::Ping, stall).await {
                    break Some(reason);
                }
                unanswered += 1;
            }
        }
    };
    let reason = reason.unwrap_or_else(|| "the connection was closed by its owner".to_owned());
    debug!(url = %url, reason = %reason, "t3 rpc: socket closed");
    book.close(&reason);
    // Best effort: a dead peer may never read the close frame.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}

enum Routed {
    Done,
    Pong,
    AnswerPing,
    Fatal(String),
}

/// A `Chunk` message with its values left as raw JSON text, borrowed from the frame.
#[derive(serde::Deserialize)]
struct RawChunk<'a> {
    #[serde(rename = "_tag", borrow)]
    tag: std::borrow::Cow<'a, str>,
    #[serde(rename = "requestId")]
    request_id: RpcId,
    #[serde(borrow)]
    values: Vec<&'a RawValue>,
}

/// The values of one stream chunk as raw JSON text, left in the frame T3 sent (no copy).
#[derive(Debug)]
pub struct ChunkValues(ChunkRepr);

#[derive(Debug)]
enum ChunkRepr {
    /// The frame and where in it each value is.
    Frame {
        frame: tungstenite::Utf8Bytes,
        values: Vec<std::ops::Range<usize>>,
    },
    /// Values that are not slices of one frame.
    Owned(Vec<Box<RawValue>>),
}

impl ChunkValues {
    /// The values of `chunk`, parsed from `frame`: slices of it where they are (as serde_json
    /// borrows them), copies otherwise.
    fn of(frame: &tungstenite::Utf8Bytes, values: &[&RawValue]) -> Self {
        let text = frame.as_str();
        let base = text.as_ptr() as usize;
        let ranges: Option<Vec<_>> = values
            .iter()
            .map(|value| {
                let start = (value.get().as_ptr() as usize).checked_sub(base)?;
                let range = start..start + value.get().len();
                (text.get(range.clone()) == Some(value.get())).then_some(range)
            })
            .collect();
        match ranges {
            Some(values) => ChunkValues(ChunkRepr::Frame {
                frame: frame.clone(),
                values,
            }),
            None => ChunkValues(ChunkRepr::Owned(values.iter().map(|&v| v.to_owned()).collect())),
        }
    }

    /// Each value's JSON text, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (frame, ranges, owned): (&str, &[std::ops::Range<usize>], &[Box<RawValue>]) = match &self.0 {
            ChunkRepr::Frame { frame, values } => (frame.as_str(), values, &[]),
            ChunkRepr::Owned(values) => ("", &[], values),
        };
        ranges
            .iter()
            .map(move |r| &frame[r.clone()])
            .chain(owned.iter().map(|v| v.get()))
    }

    /// How many values.
    pub fn len(&self) -> usize {
        match &self.0 {
            ChunkRepr::Frame { values, .. } => values.len(),
            ChunkRepr::Owned(values) => values.len(),
        }
    }

    /// True when the chunk has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values, each copied out on its own.
    pub fn into_raw(self) -> Vec<Box<RawValue>> {
        match self.0 {
            ChunkRepr::Owned(values) => values,
            ChunkRepr::Frame { frame, values } => values
                .into_iter()
                .filter_map(|r| RawValue::from_string(frame.as_str()[r].to_owned()).ok())
                .collect(),
        }
    }
}

/// Hands one text frame from T3 to whoever waits for it.
fn route(book: &Book, frame: tungstenite::Utf8Bytes, url: &str) -> Routed {
    let text = frame.as_str();
    // Chunks first, their values kept as raw text in the frame (see `RpcStream::next_values`).
    if let Ok(chunk) = serde_json::from_str::<RawChunk<'_>>(text) {
        if chunk.tag == "Chunk" {
            let values = ChunkValues::of(&frame, &chunk.values);
            book.deliver(chunk.request_id.0, Delivery::Chunk(values));
            return Routed::Done;
        }
    }
    match serde_json::from_str::<ServerMessage>(text) {
        Ok(ServerMessage::Exit { request_id, exit }) => {
            book.deliver(request_id.0, Delivery::Exit(exit));
            Routed::Done
        }
        Ok(ServerMessage::Chunk { request_id, values }) => {
            // Only reached if the raw form above did not read it; same values, re-encoded.
            let values = values
                .iter()
                .filter_map(|v| serde_json::value::to_raw_value(v).ok())
                .collect();
            book.deliver(
                request_id.0,
                Delivery::Chunk(ChunkValues(ChunkRepr::Owned(values))),
            );
            Routed::Done
        }
        Ok(ServerMessage::Pong) => Routed::Pong,
        Ok(ServerMessage::Ping) => Routed::AnswerPing,
        Ok(ServerMessage::Defect { defect }) => {
            let defect = one_line(&excerpt(defect.to_string().as_bytes()));
            warn!(url = %url, defect = %defect, "T3 reported an RPC protocol defect; failing every pending call");
            Routed::Fatal(format!("T3 reported a protocol defect: {defect}"))
        }
        Err(e) => {
            // A reply we cannot read still names its request when it carries a requestId: fail
            // that request instead of letting it wait for its timeout.
            let id = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get("requestId").cloned())
                .and_then(|id| serde_json::from_value::<RpcId>(id).ok());
            match id {
                Some(id) => book.deliver(
                    id.0,
                    Delivery::Malformed {
                        detail: format!("not an Effect RPC message: {e}"),
                        excerpt: excerpt(text.as_bytes()),
                    },
                ),
                None => {
                    warn!(url = %url, error = %e, "t3 rpc: ignoring a message that is not an Effect RPC message")
                }
            }
            Routed::Done
        }
    }
}

/// Sends one message, within `stall`; why the socket is dead otherwise.
async fn send<W>(sink: &mut W, message: &ClientMessage, stall: Duration) -> Result<(), String>
where
    W: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    // Serialising these enums of strings, numbers and JSON values cannot fail.
    let frame = Message::text(serde_json::to_string(message).unwrap_or_default());
    match tokio::time::timeout(stall, sink.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the socket failed while sending: {e}")),
        Err(_) => Err(format!("T3 read nothing for {stall:?}")),
    }
}

/// `<base>/ws`, with the scheme turned from HTTP to WebSocket.
pub(crate) fn ws_url(base_url: &str) -> Result<String, T3Error> {
    let base = base_url.trim().trim_end_matches('/');
    let (scheme, rest) = if let Some(rest) = base.strip_prefix("http://") {
        ("ws://", rest)
    } else if let Some(rest) = base.strip_prefix("https://") {
        ("wss://", rest)
    } else if let Some(rest) = base.strip_prefix("ws://") {
        ("ws://", rest)
    } else if let Some(rest) = base.strip_prefix("wss://") {
        ("wss://", rest)
    } else {
        return Err(T3Error::InvalidInput(format!(
            "T3's base URL {base_url:?} is not an http:// or https:// URL"
        )));
    };
    Ok(format!("{scheme}{rest}{WS_PATH}"))
}

fn socket_error(what: &str, url: &str, detail: String, status: Option<u16>) -> T3Error {
    T3Error::Socket {
        what: what.to_owned(),
        url: url.to_owned(),
        detail,
        status,
    }
}

/// T3's reason for refusing an upgrade, from its error body when it sent one.
fn describe_refusal(body: &[u8]) -> String {
    if let Some(body) = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .filter(|b| b.tag.is_some() || b.code.is_some())
    {
        let parts: Vec<String> = [
            body.tag.as_ref().map(|t| t.to_string()),
            body.reason.as_ref().map(|r| format!("reason {r}")),
            body.required_scope
                .as_ref()
                .map(|s| format!("required scope {s}")),
            body.trace_id.as_ref().map(|t| format!("trace {t}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        return format!(" ({})", parts.join(", "));
    }
    if body.is_empty() {
        String::new()
    } else {
        format!(": {}", one_line(&excerpt(body)))
    }
}

/// Errors are one line: newlines in T3's text become spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_follow_the_base_urls_scheme() {
        assert_eq!(
            ws_url("http://127.0.0.1:3773/").unwrap(),
            "ws://127.0.0.1:3773/ws"
        );
        assert_eq!(
            ws_url("https://t3.example/base").unwrap(),
            "wss://t3.example/base/ws"
        );
        assert!(ws_url("ftp://t3.example").is_err());
    }
}
