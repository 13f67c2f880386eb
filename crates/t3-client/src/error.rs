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
            T3Error::MalformedReply { .. } | T3Error::PromptTooLong { .. } | T3Error::InvalidInput(_) => {
                false
            }
        }
    }

    /// True when T3 could not be asked at all for lack of a valid bearer token: the provider had
    /// none, or T3 answered 401 (after the client's one fresh read) or 403. Nothing about the
    /// request itself was judged, so a caller should not hold it against the work it carries.
    pub fn is_credential_problem(&self) -> bool {
        matches!(self, T3Error::Bearer { .. }) || matches!(self.status(), Some(401 | 403))
    }

    /// The HTTP status T3 answered, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            T3Error::Status { status, .. } => Some(*status),
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
