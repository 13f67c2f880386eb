//! The HTTP seam. The client never opens a socket itself: it hands a [`Request`] to an injected
//! [`Transport`]. Production uses [`ReqwestTransport`]; unit tests use [`Recorder`], which answers
//! from a script and keeps every request for inspection.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use afk_secrets::Secret;

/// An HTTP method the client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Read.
    Get,
    /// Dispatch a command.
    Post,
}

/// One request, fully formed. The bearer travels as a [`Secret`] so that `Debug` of a request
/// never shows it.
#[derive(Debug, Clone)]
pub struct Request {
    /// GET or POST.
    pub method: Method,
    /// The absolute URL.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer: Option<Secret>,
    /// A JSON body (POST only).
    pub json_body: Option<Vec<u8>>,
}

/// A reply: its status and its body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The body, as received.
    pub body: Vec<u8>,
}

/// How a request failed before a status came back. Every kind is transient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// No connection could be made (refused, DNS, TLS).
    Connect,
    /// The connect or request timeout passed.
    Timeout,
    /// The connection broke while the request or reply was in flight.
    Connection,
}

/// A request that got no HTTP reply.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct TransportError {
    /// What kind of failure.
    pub kind: TransportErrorKind,
    /// The underlying error, for people.
    pub message: String,
}

/// Sends one request and returns its reply. Implementations must not retry on their own (the
/// client decides) and must not log the bearer.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Sends `request`.
    async fn send(&self, request: Request) -> Result<Response, TransportError>;
}

/// Timeouts for [`ReqwestTransport`].
#[derive(Debug, Clone, Copy)]
pub struct TransportConfig {
    /// How long to wait for a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// How long one request may take, reply body included.
    pub request_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The production transport: a pooled reqwest client with keep-alive and timeouts.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    http: reqwest::Client,
}

impl ReqwestTransport {
    /// A transport with `config`'s timeouts, keeping idle connections alive for reuse.
    pub fn new(config: TransportConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("afk/", env!("CARGO_PKG_VERSION")))
            .build()
            // Building fails only when the TLS backend cannot initialise, which is not an input
            // error: fall back to the defaults rather than refuse to start.
            .unwrap_or_default();
        Self { http }
    }
}

impl Default for ReqwestTransport {
    fn default() -> Self {
        Self::new(TransportConfig::default())
    }
}

/// The largest buffer a reply's announced length reserves before its bytes arrive.
const MAX_PRESIZE: u64 = 256 * 1024 * 1024;

#[async_trait::async_trait]
impl Transport for ReqwestTransport {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        let mut builder = match request.method {
            Method::Get => self.http.get(&request.url),
            Method::Post => self.http.post(&request.url),
        };
        if let Some(bearer) = &request.bearer {
            builder = builder.bearer_auth(bearer.expose());
        }
        if let Some(body) = request.json_body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let mut reply = builder.send().await.map_err(classify)?;
        let status = reply.status().as_u16();
        // Chunk by chunk into one buffer of the announced size: collecting the chunks and then
        // copying them out held a large body (a 9 MB snapshot at 10,000 threads) twice at once.
        // The announced size only sizes the buffer up front, within reason.
        let announced = reply.content_length().unwrap_or(0).min(MAX_PRESIZE);
        let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
        while let Some(chunk) = reply.chunk().await.map_err(classify)? {
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, body })
    }
}

fn classify(error: reqwest::Error) -> TransportError {
    let kind = if error.is_timeout() {
        TransportErrorKind::Timeout
    } else if error.is_connect() {
        TransportErrorKind::Connect
    } else {
        TransportErrorKind::Connection
    };
    // reqwest's Display names the URL but never headers, so the bearer cannot leak here.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    TransportError { kind, message }
}

/// An in-memory transport for unit tests: answers from a script, in order, and records every
/// request it was given. A request beyond the script gets a connection error.
#[derive(Debug, Default)]
pub struct Recorder {
    script: Mutex<VecDeque<Result<Response, TransportError>>>,
    requests: Mutex<Vec<Request>>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a reply with `status` and `body` to the script.
    pub fn reply(&self, status: u16, body: impl Into<Vec<u8>>) -> &Self {
        self.lock_script().push_back(Ok(Response {
            status,
            body: body.into(),
        }));
        self
    }

    /// Adds a JSON reply to the script.
    pub fn reply_json(&self, status: u16, body: serde_json::Value) -> &Self {
        self.reply(status, body.to_string())
    }

    /// Adds a transport failure to the script.
    pub fn fail(&self, kind: TransportErrorKind) -> &Self {
        self.lock_script().push_back(Err(TransportError {
            kind,
            message: "scripted failure".into(),
        }));
        self
    }

    /// Every request sent so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The JSON bodies of every POST so far, in order.
    pub fn posted_json(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter_map(|r| r.json_body.as_ref())
            .map(|b| serde_json::from_slice(b).unwrap_or(serde_json::Value::Null))
            .collect()
    }

    fn lock_script(&self) -> std::sync::MutexGuard<'_, VecDeque<Result<Response, TransportError>>> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Transport for Recorder {
    async fn send(&self, request: Request) -> Result<Response, TransportError> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(request);
        self.lock_script().pop_front().unwrap_or_else(|| {
            Err(TransportError {
                kind: TransportErrorKind::Connection,
                message: "recorder: no scripted reply left".into(),
            })
        })
    }
}
