//! A loopback proxy in front of a T3 server (HTTP and the `/ws` RPC), for putting a client's
//! crash at a known point of a request to the **real** T3, which cannot be paused as the
//! stand-in can ([`crate::SimServer::pause`]).
//!
//! A [`Trap`] set with [`Proxy::trap`] waits for the first request whose body (a dispatch's
//! JSON, or a `/ws` frame) contains a text, then acts once:
//! - [`TrapAction::HoldRequest`]: the request never reaches T3 ("T3 has not seen it");
//! - [`TrapAction::HoldReply`]: it reaches T3, and T3's reply never reaches the client ("T3
//!   applied it, the client never heard");
//! - [`TrapAction::CutAfterForwarding`] (`/ws` only): it reaches T3 and both connections close
//!   at once, as when a client dies mid-call ("T3 was in the middle of it").
//!
//! The test then kills the client; everything else passes through untouched.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as TgMessage;

/// What a [`Trap`] does to the request it catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapAction {
    /// Never forward it.
    HoldRequest,
    /// Forward it, never pass its reply on.
    HoldReply,
    /// Forward it, then close the client's and T3's connections at once (`/ws` only).
    CutAfterForwarding,
}

/// A one-shot trap; see the module.
#[derive(Debug, Clone)]
pub struct Trap {
    inner: Arc<TrapInner>,
}

#[derive(Debug)]
struct TrapInner {
    needle: String,
    action: TrapAction,
    /// Set when it caught its request.
    taken: std::sync::atomic::AtomicBool,
    /// Set once it acted: the request held, the reply held (T3 answered), or the connections
    /// cut after forwarding.
    sprung: watch::Sender<bool>,
}

impl TrapInner {
    fn spring(&self) {
        self.sprung.send_replace(true);
    }
}

impl Trap {
    /// Resolves once the trap acted on its request: held it, held T3's reply to it (so T3 has
    /// answered), or cut the connections after forwarding it. Wrap it in a timeout.
    pub async fn sprung(&self) {
        let mut sprung = self.inner.sprung.subscribe();
        // The sender lives as long as `self`.
        let _ = sprung.wait_for(|s| *s).await;
    }

    /// True once it acted.
    pub fn is_sprung(&self) -> bool {
        *self.inner.sprung.borrow()
    }
}

struct Shared {
    upstream: String,
    traps: Mutex<Vec<Arc<TrapInner>>>,
}

impl Shared {
    /// The trap `text` matches, if one not taken yet does; it is taken now.
    fn catch(&self, text: &str) -> Option<Arc<TrapInner>> {
        use std::sync::atomic::Ordering;
        let traps = self.traps.lock().unwrap_or_else(|e| e.into_inner());
        let trap = traps
            .iter()
            .find(|t| !t.taken.load(Ordering::SeqCst) && text.contains(&t.needle))?;
        trap.taken.store(true, Ordering::SeqCst);
        Some(trap.clone())
    }
}

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct Proxy {
    url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy on a free loopback port in front of `upstream` (e.g. `http://127.0.0.1:40123`).
    pub async fn start(upstream: &str) -> std::io::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            traps: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/ws", axum::routing::get(socket))
            .fallback(http)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Proxy { url, shared, task })
    }

    /// Its base URL: give it to the client instead of T3's.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sets a trap for the first request containing `needle` (e.g.
    /// `"type":"thread.turn.start"`).
    pub fn trap(&self, needle: &str, action: TrapAction) -> Trap {
        let inner = Arc::new(TrapInner {
            needle: needle.to_owned(),
            action,
            taken: std::sync::atomic::AtomicBool::new(false),
            sprung: watch::channel(false).0,
        });
        self.shared
            .traps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(inner.clone());
        Trap { inner }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every HTTP request: forwarded with its method, path, query, bearer and body.
async fn http(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024 * 1024).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let trap = shared.catch(&String::from_utf8_lossy(&body));
    if let Some(trap) = trap.as_ref().filter(|t| t.action == TrapAction::HoldRequest) {
        trap.spring();
        return std::future::pending().await;
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let client = reqwest::Client::new();
    let mut forward = client
        .request(parts.method.clone(), format!("{}{path}", shared.upstream))
        .body(body);
    for name in ["authorization", "content-type", "accept"] {
        if let Some(value) = parts.headers.get(name) {
            forward = forward.header(name, value.clone());
        }
    }
    let reply = match forward.send().await {
        Ok(reply) => reply,
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let status = reply.status();
    let content_type = reply.headers().get("content-type").cloned();
    let bytes: Bytes = reply.bytes().await.unwrap_or_default();
    if let Some(trap) = trap {
        // T3 answered; its reply is held (a cut over HTTP is a held reply, too).
        trap.spring();
        return std::future::pending().await;
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert("content-type", content_type);
    }
    response
}

/// `GET /ws`: a socket to T3 for each client socket, frames relayed both ways.
async fn socket(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let url = format!("{}/ws", shared.upstream.replacen("http://", "ws://", 1));
    let Ok(mut request) = url.into_client_request() else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    if let Some(auth) = headers.get("authorization") {
        request.headers_mut().insert("authorization", auth.clone());
    }
    let upstream = match tokio_tungstenite::connect_async(request).await {
        Ok((upstream, _)) => upstream,
        Err(tokio_tungstenite::tungstenite::Error::Http(refused)) => {
            let status = refused.status();
            let body = refused.body().clone().unwrap_or_default();
            return (status, body).into_response();
        }
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    upgrade.on_upgrade(move |client| relay(shared, client, upstream))
}

/// Relays one client socket to its T3 socket until either side ends or a trap cuts them.
async fn relay(
    shared: Arc<Shared>,
    client: WebSocket,
    upstream: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut t3_tx, mut t3_rx) = upstream.split();
    // Request ids whose reply is held, with their traps.
    let mut held: Vec<(String, Arc<TrapInner>)> = Vec::new();
    loop {
        tokio::select! {
            from_client = client_rx.next() => {
                let Some(Ok(message)) = from_client else { break };
                let message = match message {
                    AxMessage::Text(text) => {
                        let text = text.as_str().to_owned();
                        let caught = if text.contains("\"Request\"") { shared.catch(&text) } else { None };
                        match caught {
                            Some(trap) if trap.action == TrapAction::HoldRequest => {
                                trap.spring();
                                continue;
                            }
                            Some(trap) if trap.action == TrapAction::HoldReply => {
                                if let Some(id) = request_id(&text, "id") {
                                    held.push((id, trap));
                                }
                            }
                            Some(trap) => {
                                let _ = t3_tx.send(TgMessage::text(text)).await;
                                trap.spring();
                                // Gone at once, without a close frame: T3 sees a client that died.
                                break;
                            }
                            None => {}
                        }
                        TgMessage::text(text)
                    }
                    AxMessage::Binary(bytes) => TgMessage::binary(bytes),
                    AxMessage::Ping(bytes) => TgMessage::Ping(bytes),
                    AxMessage::Pong(bytes) => TgMessage::Pong(bytes),
                    AxMessage::Close(_) => break,
                };
                if t3_tx.send(message).await.is_err() {
                    break;
                }
            }
            from_t3 = t3_rx.next() => {
                let Some(Ok(message)) = from_t3 else { break };
                let message = match message {
                    TgMessage::Text(text) => {
                        let text = text.as_str().to_owned();
                        let reply_to = request_id(&text, "requestId");
                        let trap = held.iter().find(|(id, _)| Some(id) == reply_to.as_ref());
                        if let Some((_, trap)) = trap.filter(|_| text.contains("\"Exit\"")) {
                            trap.spring();
                            continue;
                        }
                        AxMessage::Text(text.into())
                    }
                    TgMessage::Binary(bytes) => AxMessage::Binary(bytes),
                    TgMessage::Ping(bytes) => AxMessage::Ping(bytes),
                    TgMessage::Pong(bytes) => AxMessage::Pong(bytes),
                    TgMessage::Close(_) => break,
                    TgMessage::Frame(_) => continue,
                };
                if client_tx.send(message).await.is_err() {
                    break;
                }
            }
        }
    }
    // Dropping both halves closes both TCP connections.
}

/// The string `key` of a JSON envelope, e.g. a request's `id`.
fn request_id(text: &str, key: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    match value.get(key)? {
        serde_json::Value::String(id) => Some(id.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
