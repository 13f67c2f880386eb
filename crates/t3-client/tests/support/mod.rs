//! A tiny T3-shaped WebSocket server on 127.0.0.1 for the RPC and feed tests: every accepted
//! socket is handed to the test as a [`Peer`] that the test drives message by message.

#![allow(dead_code)] // Each test file uses a different part.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use t3_client::{Freshness, Secret, SecretError, SecretProvider};
use tokio::sync::{mpsc, oneshot};

/// How long a test waits for anything before failing.
pub const PATIENCE: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct ServerState {
    peers: mpsc::UnboundedSender<Peer>,
    upgrades: Arc<Mutex<Vec<Option<String>>>>,
    refusals: Arc<Mutex<VecDeque<(u16, Value)>>>,
    answer_pings: Arc<AtomicBool>,
}

/// The server. It stops when dropped (and with the test's runtime).
pub struct FakeT3 {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    peers: mpsc::UnboundedReceiver<Peer>,
    upgrades: Arc<Mutex<Vec<Option<String>>>>,
    refusals: Arc<Mutex<VecDeque<(u16, Value)>>>,
    answer_pings: Arc<AtomicBool>,
    _stop: oneshot::Sender<()>,
}

impl FakeT3 {
    /// A server that accepts every upgrade and answers pings.
    pub async fn start() -> Self {
        let (peers_tx, peers) = mpsc::unbounded_channel();
        let state = ServerState {
            peers: peers_tx,
            upgrades: Arc::default(),
            refusals: Arc::default(),
            answer_pings: Arc::new(AtomicBool::new(true)),
        };
        let router = Router::new().route("/ws", get(upgrade)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            base_url: format!("http://{addr}"),
            peers,
            upgrades: state.upgrades,
            refusals: state.refusals,
            answer_pings: state.answer_pings,
            _stop: stop,
        }
    }

    /// The next accepted socket.
    pub async fn next_peer(&mut self) -> Peer {
        tokio::time::timeout(PATIENCE, self.peers.recv())
            .await
            .expect("a WebSocket connection in time")
            .expect("the server runs")
    }

    /// Refuses the next upgrade with `status` and T3's error `body`.
    pub fn refuse_next(&self, status: u16, body: Value) {
        self.refusals.lock().unwrap().push_back((status, body));
    }

    /// Stops (or resumes) answering the client's pings, as a half-open socket would.
    pub fn answer_pings(&self, answer: bool) {
        self.answer_pings.store(answer, Ordering::SeqCst);
    }

    /// The `Authorization` header of every upgrade request so far.
    pub fn upgrades(&self) -> Vec<Option<String>> {
        self.upgrades.lock().unwrap().clone()
    }
}

async fn upgrade(State(state): State<ServerState>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.upgrades.lock().unwrap().push(auth);
    let refusal = state.refusals.lock().unwrap().pop_front();
    if let Some((status, body)) = refusal {
        return (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
    }
    ws.on_upgrade(move |socket| pump(socket, state))
}

/// Relays between the socket and the test's [`Peer`]; answers pings itself.
async fn pump(mut socket: WebSocket, state: ServerState) {
    let (to_test, incoming) = mpsc::unbounded_channel();
    let (outgoing, mut from_test) = mpsc::unbounded_channel::<Value>();
    if state.peers.send(Peer { incoming, outgoing }).is_err() {
        return;
    }
    loop {
        tokio::select! {
            received = socket.recv() => match received {
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(text.as_str()).unwrap();
                    if message["_tag"] == "Ping" {
                        if state.answer_pings.load(Ordering::SeqCst)
                            && socket.send(Message::Text(json!({"_tag": "Pong"}).to_string().into())).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    let _ = to_test.send(message);
                }
                Some(Ok(_)) => {}
                // The client hung up: the peer's `incoming` ends.
                _ => return,
            },
            next = from_test.recv() => match next {
                Some(message) => {
                    if socket.send(Message::Text(message.to_string().into())).await.is_err() {
                        return;
                    }
                }
                // The test dropped its peer: hang up without a close frame, like a crash.
                None => return,
            },
        }
    }
}

/// One accepted socket, from the server's side. Dropping it hangs up.
pub struct Peer {
    incoming: mpsc::UnboundedReceiver<Value>,
    outgoing: mpsc::UnboundedSender<Value>,
}

impl Peer {
    /// The client's next message (pings are answered by the server and not shown).
    pub async fn recv(&mut self) -> Value {
        tokio::time::timeout(PATIENCE, self.incoming.recv())
            .await
            .expect("a message from the client in time")
            .expect("the client is still connected")
    }

    /// The client's next Request: its raw id, method and payload.
    pub async fn recv_request(&mut self) -> (Value, String, Value) {
        let message = self.recv().await;
        assert_eq!(message["_tag"], "Request", "{message}");
        (
            message["id"].clone(),
            message["tag"].as_str().unwrap().to_owned(),
            message["payload"].clone(),
        )
    }

    /// The client's next message, or `None` once it hung up.
    pub async fn recv_or_closed(&mut self) -> Option<Value> {
        self.incoming.recv().await
    }

    /// Waits until the client hangs up.
    pub async fn closed(&mut self) {
        tokio::time::timeout(PATIENCE, async { while self.incoming.recv().await.is_some() {} })
            .await
            .expect("the client hangs up in time");
    }

    /// Sends a message to the client.
    pub fn send(&self, message: Value) {
        self.outgoing.send(message).unwrap();
    }

    /// Ends call `id` with `value`.
    pub fn succeed(&self, id: &Value, value: Value) {
        self.send(json!({"_tag": "Exit", "requestId": id, "exit": {"_tag": "Success", "value": value}}));
    }

    /// Ends call `id` with T3's tagged `error`.
    pub fn fail(&self, id: &Value, error: Value) {
        self.send(json!({"_tag": "Exit", "requestId": id,
                         "exit": {"_tag": "Failure", "cause": [{"_tag": "Fail", "error": error}]}}));
    }

    /// Sends stream `id` a chunk of `values`.
    pub fn chunk(&self, id: &Value, values: Vec<Value>) {
        self.send(json!({"_tag": "Chunk", "requestId": id, "values": values}));
    }
}

/// A bearer provider that answers `cached` unless asked for a fresh value, then `fresh`.
#[derive(Debug)]
pub struct RotatingToken {
    pub cached: &'static str,
    pub fresh: &'static str,
}

#[async_trait::async_trait]
impl SecretProvider for RotatingToken {
    async fn get(&self, freshness: Freshness) -> Result<Secret, SecretError> {
        Ok(Secret::new(match freshness {
            Freshness::Cached => self.cached,
            Freshness::Refresh => self.fresh,
        }))
    }
}

/// A provider that always answers `token`.
pub fn token(token: &'static str) -> Arc<dyn SecretProvider> {
    Arc::new(RotatingToken {
        cached: token,
        fresh: token,
    })
}
