//! Keeping secret values out of every text afk writes: a registry of the values afk holds, a
//! [`scrub`] that removes them (and credentials of well-known shapes) from any text, and a
//! [`ScrubbingMakeWriter`] that scrubs every formatted log line before it is written.
//!
//! What is replaced by [`REDACTED`]:
//! - every **registered value** (every [`crate::Secret`] registers its value when made, so
//!   every token a provider returns, every Vault token and service-account JWT, every GitHub
//!   installation token): a value of 8 characters or more wherever it appears; a shorter one
//!   (4 to 7 characters) only as a whole token, i.e. not next to a letter, digit, `-` or `_`, so
//!   that a short value does not eat the middle of ordinary words; values under 4 characters are
//!   not registered (they cannot be told apart from text). A multi-line value (a PEM key) also
//!   registers each of its lines. The registry keeps the [`MAX_REGISTERED`] most recent values;
//!   older ones are rotated out tokens;
//! - the credential of an authorization form: `Bearer X`, `authorization: token X` (any scheme,
//!   any quoting, as in a header map's `Debug`), `x-vault-token: X`;
//! - userinfo in URLs: `scheme://user:pass@host` becomes `scheme://[redacted]@host`;
//! - credentials in query strings (`?access_token=X`, `&token=X`, `password=`, `secret=`, `jwt=`);
//! - tokens of well-known shapes even when afk does not hold them: GitHub (`ghp_…`,
//!   `github_pat_…`), Vault (`hvs.…`), JWTs (`eyJ….eyJ….…`).
//!
//! The word `token` alone is not treated as an authorization form outside a header (`token file
//! /run/t3/token` is ordinary text in afk's errors).
//!
//! Cost: a text in which nothing matches is returned borrowed, without allocating.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::io::{self, Write};
use std::ops::Range;
use std::sync::{Arc, LazyLock, RwLock};

use aho_corasick::AhoCorasick;
use regex::Regex;
use tracing_subscriber::fmt::MakeWriter;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// How many values the registry keeps (the most recently registered).
pub const MAX_REGISTERED: usize = 256;

/// Values shorter than this are not registered.
const MIN_REGISTERED_CHARS: usize = 4;

/// Values shorter than this are redacted only as whole tokens.
const MIN_SUBSTRING_CHARS: usize = 8;

/// The values afk holds, to be removed from any text. [`global`] is the one every
/// [`crate::Secret`] registers in; separate instances are for tests.
#[derive(Default)]
pub struct Redactor {
    values: RwLock<Values>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.read().order.len();
        f.debug_struct("Redactor").field("values", &count).finish()
    }
}

#[derive(Default)]
struct Values {
    known: HashSet<String>,
    /// Oldest first.
    order: VecDeque<String>,
    /// Over `order`; `None` when empty.
    matcher: Option<AhoCorasick>,
}

/// The process-wide registry every [`crate::Secret`] registers in.
pub fn global() -> &'static Arc<Redactor> {
    static GLOBAL: LazyLock<Arc<Redactor>> = LazyLock::new(Arc::default);
    &GLOBAL
}

/// `text` with every value in the [`global`] registry and every credential form replaced by
/// [`REDACTED`]; see the module documentation.
pub fn scrub(text: &str) -> Cow<'_, str> {
    global().scrub(text)
}

/// `url` with its userinfo (`user:pass@`) replaced by [`REDACTED`], for showing a configured URL.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    replace_groups(url, &USERINFO)
}

pub(crate) use redact_url as url_without_userinfo;

impl Redactor {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Values> {
        self.values.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers `value` (and each line of a multi-line value) so that [`Redactor::scrub`]
    /// removes it. Cheap when the value is known already.
    pub fn register(&self, value: &str) {
        let value = value.trim();
        let mut pieces = vec![value];
        if value.contains('\n') {
            pieces.extend(value.lines().map(str::trim));
        }
        pieces.retain(|p| p.chars().count() >= MIN_REGISTERED_CHARS);
        {
            let values = self.read();
            if pieces.iter().all(|p| values.known.contains(*p)) {
                return;
            }
        }
        let mut values = self.values.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for piece in pieces {
            if values.known.insert(piece.to_owned()) {
                values.order.push_back(piece.to_owned());
                changed = true;
            }
        }
        while values.order.len() > MAX_REGISTERED {
            if let Some(old) = values.order.pop_front() {
                values.known.remove(&old);
            }
        }
        if changed {
            // Built from literal strings: cannot fail short of a size limit we never approach.
            values.matcher = AhoCorasick::new(values.order.iter()).ok();
        }
    }

    /// `text` with every registered value and every credential form replaced by [`REDACTED`].
    /// Borrowed, without allocating, when nothing matches.
    pub fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let known = self.replace_known(text);
        match known {
            Cow::Borrowed(text) => replace_groups(text, &CREDENTIALS),
            Cow::Owned(text) => Cow::Owned(replace_groups(&text, &CREDENTIALS).into_owned()),
        }
    }

    fn replace_known<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let values = self.read();
        let Some(matcher) = &values.matcher else {
            return Cow::Borrowed(text);
        };
        let mut spans: Vec<Range<usize>> = Vec::new();
        for found in matcher.find_overlapping_iter(text) {
            let range = found.range();
            let short = text[range.clone()].chars().count() < MIN_SUBSTRING_CHARS;
            if short && !(boundary_before(text, range.start) && boundary_after(text, range.end)) {
                continue;
            }
            spans.push(range);
        }
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        Cow::Owned(replace_spans(text, spans))
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '_'
}

fn boundary_before(text: &str, at: usize) -> bool {
    text[..at].chars().next_back().is_none_or(|c| !is_word_char(c))
}

fn boundary_after(text: &str, at: usize) -> bool {
    text[at..].chars().next().is_none_or(|c| !is_word_char(c))
}

/// `text` with the (possibly overlapping) `spans` replaced, each merged run once.
fn replace_spans(text: &str, mut spans: Vec<Range<usize>>) -> String {
    spans.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for span in spans {
        if span.end <= at {
            continue;
        }
        let start = span.start.max(at);
        if start > at {
            out.push_str(&text[at..start]);
        }
        if span.start >= at {
            out.push_str(REDACTED);
        }
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

/// A credential: what follows an authorization scheme, up to a space, quote or bracket.
const CRED: &str = r#"[^\s"',;()\[\]{}<>]+"#;

/// userinfo in a URL.
static USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?-u:\b)[A-Za-z][A-Za-z0-9+.\-]*://([^/\s@?#"'<>]+)@"#).expect("a valid pattern")
});

/// Every credential form; each alternative's first participating group is what is replaced.
static CREDENTIALS: LazyLock<Regex> = LazyLock::new(|| {
    let forms = [
        // userinfo in a URL
        r#"(?-u:\b)[A-Za-z][A-Za-z0-9+.\-]*://([^/\s@?#"'<>]+)@"#.to_owned(),
        // an authorization or Vault token header, in any quoting, with or without a scheme
        format!(
            r#"(?i:(?-u:\b)(?:proxy-)?authorization|(?-u:\b)x-vault-token)["']?\s*[:=]\s*["']?(?i:(?:bearer|token|basic)\s+)?({CRED})"#
        ),
        // a bearer credential anywhere
        format!(r#"(?-u:\b)(?:Bearer|BEARER)\s+({CRED})"#),
        // credentials in a query string or form
        r#"(?i:[?&;](?:access_token|client_token|private_token|token|password|secret|jwt)=)([^&\s"'#]+)"#
            .to_owned(),
        // tokens of well-known shapes
        r#"(?-u:\b)((?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{20,}|hv[sbr]\.[A-Za-z0-9_\-]{20,}|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*)"#
            .to_owned(),
    ];
    Regex::new(&forms.join("|")).expect("a valid pattern")
});

/// `text` with the first participating capture group of each match of `pattern` replaced.
fn replace_groups<'t>(text: &'t str, pattern: &Regex) -> Cow<'t, str> {
    if !pattern.is_match(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for captures in pattern.captures_iter(text) {
        let Some(group) = captures.iter().skip(1).flatten().next() else {
            continue;
        };
        out.push_str(&text[at..group.start()]);
        out.push_str(REDACTED);
        at = group.end();
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// A [`MakeWriter`] whose writers scrub every line (with [`Redactor::scrub`]) before passing it
/// on: defence in depth, so that even a library that logs a raw request at TRACE cannot write a
/// token. A line written in several pieces is held until its end, so a value split across writes
/// is still found.
///
/// ```no_run
/// let writer = afk_secrets::redact::ScrubbingMakeWriter::new(std::io::stderr);
/// tracing_subscriber::fmt().with_writer(writer).init();
/// ```
#[derive(Debug, Clone)]
pub struct ScrubbingMakeWriter<M> {
    inner: M,
    redactor: Arc<Redactor>,
}

impl<M> ScrubbingMakeWriter<M> {
    /// Scrubs with the [`global`] registry.
    pub fn new(inner: M) -> Self {
        Self::with_redactor(inner, global().clone())
    }

    /// Scrubs with `redactor`.
    pub fn with_redactor(inner: M, redactor: Arc<Redactor>) -> Self {
        Self { inner, redactor }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for ScrubbingMakeWriter<M> {
    type Writer = ScrubbingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        ScrubbingWriter::new(self.inner.make_writer(), self.redactor.clone())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        ScrubbingWriter::new(self.inner.make_writer_for(meta), self.redactor.clone())
    }
}

/// The writer of a [`ScrubbingMakeWriter`]: passes on whole lines, scrubbed; a last line without
/// a newline is passed on when the writer is dropped.
pub struct ScrubbingWriter<W: Write> {
    inner: W,
    redactor: Arc<Redactor>,
    /// The start of a line whose end has not been written yet.
    pending: Vec<u8>,
}

impl<W: Write> ScrubbingWriter<W> {
    /// Scrubs what is written with `redactor`, then writes it to `inner`.
    pub fn new(inner: W, redactor: Arc<Redactor>) -> Self {
        Self {
            inner,
            redactor,
            pending: Vec::new(),
        }
    }

    fn write_scrubbed(&mut self, bytes: &[u8]) -> io::Result<()> {
        let text = String::from_utf8_lossy(bytes);
        match self.redactor.scrub(&text) {
            // Nothing to hide: the bytes go on as they came, invalid UTF-8 included.
            Cow::Borrowed(_) => self.inner.write_all(bytes),
            Cow::Owned(scrubbed) => self.inner.write_all(scrubbed.as_bytes()),
        }
    }
}

impl<W: Write> Write for ScrubbingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() && bytes.ends_with(b"\n") {
            // The usual case, a whole formatted event at once: no copy.
            self.write_scrubbed(bytes)?;
            return Ok(bytes.len());
        }
        self.pending.extend_from_slice(bytes);
        if let Some(end) = self.pending.iter().rposition(|b| *b == b'\n') {
            let rest = self.pending.split_off(end + 1);
            let lines = std::mem::replace(&mut self.pending, rest);
            self.write_scrubbed(&lines)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Drop for ScrubbingWriter<W> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            let _ = self.write_scrubbed(&pending);
            let _ = self.inner.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(values: &[&str]) -> Redactor {
        let redactor = Redactor::new();
        for value in values {
            redactor.register(value);
        }
        redactor
    }

    #[test]
    fn scrub_table() {
        let r = redactor(&["t3-operate-a1b2c3d4", "abc12", "xy"]);
        let cases: &[(&str, &str)] = &[
            // nothing to hide
            (
                "waiting for T3 at http://127.0.0.1:3773",
                "waiting for T3 at http://127.0.0.1:3773",
            ),
            (
                "cannot read token file /run/t3/token: not found",
                "cannot read token file /run/t3/token: not found",
            ),
            (
                "no bearer token: the file is empty",
                "no bearer token: the file is empty",
            ),
            // a registered value anywhere
            (
                "T3 said: bad token t3-operate-a1b2c3d4.",
                "T3 said: bad token [redacted].",
            ),
            (
                "x=t3-operate-a1b2c3d4t3-operate-a1b2c3d4",
                "x=[redacted][redacted]",
            ),
            (
                "http://h/?q=t3-operate-a1b2c3d4&x=1",
                "http://h/?q=[redacted]&x=1",
            ),
            // a short value only as a whole token; a 2-character value never
            ("key abc12 refused", "key [redacted] refused"),
            ("key=abc12&", "key=[redacted]&"),
            ("xabc12 abc123 abc12-x", "xabc12 abc123 abc12-x"),
            ("xy is not hidden", "xy is not hidden"),
            // authorization forms
            (
                "authorization: Bearer eyA.b.c",
                "authorization: Bearer [redacted]",
            ),
            (
                r#"headers: {"authorization": "token gho_x"}"#,
                r#"headers: {"authorization": "token [redacted]"}"#,
            ),
            (
                "Authorization: Basic dXNlcjpwYXNz",
                "Authorization: Basic [redacted]",
            ),
            ("sent Bearer abc.def-ghi to T3", "sent Bearer [redacted] to T3"),
            (
                r#""x-vault-token": "hvs.short""#,
                r#""x-vault-token": "[redacted]""#,
            ),
            // userinfo and query credentials
            (
                "connecting to https://afk:pa55@t3.example:443/ws",
                "connecting to https://[redacted]@t3.example:443/ws",
            ),
            (
                "git clone https://x-access-token:abc@github.com/o/r",
                "git clone https://[redacted]@github.com/o/r",
            ),
            ("GET /ws?token=abc123&x=1", "GET /ws?token=[redacted]&x=1"),
            // well-known shapes afk does not hold
            ("echo ghp_0123456789abcdefghijABCDEFGHIJ", "echo [redacted]"),
            (
                "vault token hvs.CAESIJ0123456789abcdefghij",
                "vault token [redacted]",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(r.scrub(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn nothing_matching_is_borrowed() {
        let r = redactor(&["t3-operate-a1b2c3d4", "abc12"]);
        assert!(matches!(
            r.scrub("an ordinary log line, with a URL http://h:1/x"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(r.scrub("xabc12"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_multi_line_value_registers_each_line() {
        let r =
            redactor(&["-----BEGIN KEY-----\nMIIEowIBAAKCAQEA0123\nabcdefghijklmnop\n-----END KEY-----\n"]);
        assert_eq!(
            r.scrub("bad line MIIEowIBAAKCAQEA0123 in key"),
            "bad line [redacted] in key"
        );
        assert_eq!(r.scrub("x abcdefghijklmnop"), "x [redacted]");
    }

    #[test]
    fn the_registry_keeps_the_most_recent_values() {
        let r = Redactor::new();
        for n in 0..MAX_REGISTERED + 10 {
            r.register(&format!("value-number-{n:04}"));
        }
        assert_eq!(r.scrub("value-number-0000"), "value-number-0000");
        assert_eq!(
            r.scrub(&format!("value-number-{:04}", MAX_REGISTERED + 9)),
            REDACTED
        );
    }

    #[test]
    fn redact_url_hides_userinfo_only() {
        assert_eq!(
            redact_url("https://u:p@vault:8200/x"),
            "https://[redacted]@vault:8200/x"
        );
        assert!(matches!(redact_url("https://vault:8200"), Cow::Borrowed(_)));
    }
}
