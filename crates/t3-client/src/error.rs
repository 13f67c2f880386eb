//! The client's errors. Each says what was asked, what came back, and whether asking again later
//! may help ([`T3Error::is_transient`]).

use afk_secrets::SecretError;

use crate::transport::TransportError;
use crate::wire::ErrorBody;

/// How much of an unexpected reply body an error quotes.
const EXCERPT_CHARS: usize = 300;

/// A failed call to T3.
#[derive(Debug, thiserror::Error)]
pub enum T3Error {
    /// No HTTP reply: connection refused, timeout, dropped connection. Transient.
    #[error("{what}: no reply from {url} ({source})")]
    Transport {
        /// What was being done, e.g. `thread.create`.
        what: String,
        /// The URL asked.
        url: String,
        /// The transport's error.
        source: TransportError,
    },
    /// T3 answered with an error status. Transient for 5xx and 429, permanent otherwise.
    #[error("{what}: T3 answered {status}{}", describe_body(.body, .body_excerpt))]
    Status {
        /// What was being done.
        what: String,
        /// The HTTP status.
        status: u16,
        /// T3's error body, when it sent one (boxed: it is rare and large).
        body: Option<Box<ErrorBody>>,
        /// The start of the body when it was not T3's error JSON.
        body_excerpt: Option<String>,
    },
    /// T3 answered 2xx with a body that is not what its contract promises. Permanent.
    #[error("{what}: malformed reply from T3: {detail}; it sent: {body_excerpt}")]
    MalformedReply {
        /// What was being done.
        what: String,
        /// What is wrong, naming the offending path.
        detail: String,
        /// The start of the body.
        body_excerpt: String,
    },
    /// The bearer provider could not produce a token.
    #[error("{what}: no bearer token: {source}")]
    Bearer {
        /// What was being done.
        what: String,
        /// The provider's error (never the token).
        source: SecretError,
    },
    /// The turn's message text exceeds T3's input limit; nothing was sent.
    #[error(
        "the prompt is {len} characters with the preamble, over T3's limit of {limit}; nothing was sent"
    )]
    PromptTooLong {
        /// Its length as T3 counts it.
        len: usize,
        /// T3's limit.
        limit: usize,
    },
    /// A caller-supplied value is unusable (an empty title, an unknown repository). Permanent.
    #[error("{0}")]
    InvalidInput(String),
    /// T3's WebSocket RPC (`/ws`) could not be used: the upgrade was refused or failed, the socket
    /// died or stopped answering pings, or no reply came in time. Transient unless T3 refused the
    /// upgrade with a 4xx other than 429 (`status`).
    #[error("{what}: WebSocket {url}: {detail}")]
    Socket {
        /// What was being done, e.g. `orchestration.dispatchCommand (thread.turn.start)`.
        what: String,
        /// The WebSocket URL.
        url: String,
        /// What went wrong, including whether a call may have been applied.
        detail: String,
        /// The HTTP status T3 answered the upgrade with, when it refused it.
        status: Option<u16>,
    },
    /// An RPC call over `/ws` ended in a failure exit: T3 refused it (a tagged error such as
    /// `EnvironmentAuthorizationError`, or its decider's refusal; permanent) or failed unexpectedly
    /// (a defect or an interruption on its side, `defect: true`; transient).
    #[error("{what}: T3 failed the call over {url}: {message}{}", describe_scope(.required_scope))]
    Rpc {
        /// What was being done (the RPC method and the command).
        what: String,
        /// The WebSocket URL.
        url: String,
        /// The error's `_tag`, when T3 sent a typed error.
        tag: Option<String>,
        /// T3's reason, one line (`tag: message`).
        message: String,
        /// The scope the token lacks, for an authorization error.
        required_scope: Option<String>,
        /// True when T3 died or was interrupted rather than refusing the call.
        defect: bool,
    },
}

impl T3Error {
    /// True when the same request may succeed later without anyone changing anything:
    /// connection failures, timeouts, 5xx and 429, and a bearer provider that is briefly down.
    ///
    /// A 500 `orchestration_dispatch_failed` is transient here, but T3 also uses it for commands
    /// its decider refused: callers retry it a bounded number of times with the same command id.
    pub fn is_transient(&self) -> bool {
        match self {
            T3Error::Transport { .. } => true,
            T3Error::Status { status, .. } => *status >= 500 || *status == 429,
            T3Error::Bearer { source, .. } => source.is_transient(),
            T3Error::Socket { status, .. } => match status {
                None => true,
                Some(status) => *status >= 500 || *status == 429,
            },
            T3Error::Rpc { defect, .. } => *defect,
            T3Error::MalformedReply { .. } | T3Error::PromptTooLong { .. } | T3Error::InvalidInput(_) => {
                false
            }
        }
    }

    /// True when T3 could not be asked at all for lack of a valid bearer token: the provider had
    /// none, T3 answered 401 (after the client's one fresh read) or 403, over HTTP or on the
    /// WebSocket upgrade, or an RPC call failed for want of authorization or a scope. Nothing
    /// about the request itself was judged, so a caller should not hold it against the work it
    /// carries.
    pub fn is_credential_problem(&self) -> bool {
        match self {
            T3Error::Bearer { .. } => true,
            T3Error::Rpc {
                tag, required_scope, ..
            } => required_scope.is_some() || tag.as_deref().is_some_and(|tag| CREDENTIAL_TAGS.contains(&tag)),
            _ => matches!(self.status(), Some(401 | 403)),
        }
    }

    /// True when T3 judged the call and refused it (a typed failure exit of the RPC, not a defect,
    /// a dropped socket or a credential problem): nothing of it was kept.
    pub fn is_refusal(&self) -> bool {
        matches!(self, T3Error::Rpc { defect: false, .. }) && !self.is_credential_problem()
    }

    /// True when T3 failed a dispatched command in a way that does not say whether a retry can
    /// succeed: over `/ws` an `OrchestrationDispatchCommandError` (T3 uses it both for its
    /// decider's refusal and for an internal failure such as a database error), over HTTP its
    /// 500 `orchestration_dispatch_failed` (the same two). Callers retry it with the same command
    /// ids a bounded number of times, then treat it as permanent.
    pub fn is_dispatch_failure(&self) -> bool {
        match self {
            T3Error::Rpc { tag, defect, .. } => !defect && tag.as_deref() == Some(DISPATCH_COMMAND_ERROR),
            T3Error::Status {
                status: 500, body, ..
            } => body
                .as_deref()
                .and_then(|b| b.reason.as_deref())
                .is_some_and(|reason| reason == "orchestration_dispatch_failed"),
            _ => false,
        }
    }

    /// True when T3's decider refused to create `thread` because its id exists already. On a
    /// retried bootstrap this is what T3 answers when an earlier try landed (T3 creates the
    /// thread under a command id of its own, so the client's id does not deduplicate it), when
    /// an earlier try failed and was undone, or while it is still being set up: only T3's view of
    /// the thread tells which.
    pub fn is_existing_thread(&self, thread: &crate::ThreadId) -> bool {
        match self {
            // T3's decider words it "Thread '<id>' already exists and cannot be created twice."
            T3Error::Rpc { message, defect, .. } => {
                !defect && message.contains(&format!("Thread '{thread}' already exists"))
            }
            _ => false,
        }
    }

    /// The HTTP status T3 answered, if it answered with an error (a refused WebSocket upgrade
    /// included).
    pub fn status(&self) -> Option<u16> {
        match self {
            T3Error::Status { status, .. } => Some(*status),
            T3Error::Socket { status, .. } => *status,
            _ => None,
        }
    }

    /// T3's error body, if it sent one.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            T3Error::Status { body, .. } => body.as_deref(),
            _ => None,
        }
    }
}

/// The `_tag` of T3's error for any dispatched command that failed over `/ws`.
const DISPATCH_COMMAND_ERROR: &str = "OrchestrationDispatchCommandError";

/// The `_tag`s of T3's errors that mean "this token may not do this", whatever the call was.
const CREDENTIAL_TAGS: &[&str] = &[
    "EnvironmentAuthorizationError",
    "EnvironmentAuthInvalidError",
    "EnvironmentScopeRequiredError",
];

fn describe_scope(scope: &Option<String>) -> String {
    match scope {
        Some(scope) => format!(" (required scope {scope})"),
        None => String::new(),
    }
}

fn describe_body(body: &Option<Box<ErrorBody>>, excerpt: &Option<String>) -> String {
    match (body, excerpt) {
        (Some(body), _) => {
            let mut parts = Vec::new();
            if let Some(code) = &body.code {
                parts.push(format!("code {code}"));
            }
            if let Some(reason) = &body.reason {
                parts.push(format!("reason {reason}"));
            }
            if let Some(scope) = &body.required_scope {
                parts.push(format!("required scope {scope}"));
            }
            if let Some(trace) = &body.trace_id {
                parts.push(format!("trace {trace}"));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join(", "))
            }
        }
        (None, Some(text)) if !text.is_empty() => format!(": {text}"),
        _ => String::new(),
    }
}

/// The first few hundred characters of a body, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("(an empty body)");
    }
    out
}
