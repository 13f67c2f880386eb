//! [`SecretError`]: why a provider could not produce a secret, where it looked, and whether a
//! person must act ([`FailureKind::needs_person`]) or the failure will pass by itself.

use std::fmt;

/// The longest outside text (Vault's `errors`, a command's stderr line) carried into the one-line
/// reason, so that a chatty source cannot flood a log line. The whole text stays in
/// [`SecretError::detail`].
const MAX_REASON_CHARS: usize = 300;

/// The reason of [`SecretError::empty`].
const EMPTY: &str = "it is empty";

/// The longest outside text kept whole in [`SecretError::detail`].
const MAX_DETAIL_CHARS: usize = 4000;

/// What went wrong, in classes that decide what happens next: a failure that
/// [needs a person](FailureKind::needs_person) stays until someone changes the configuration, the
/// file, the Vault policy or role; any other failure passes by itself (Vault unsealed, the network
/// back), so asking again later may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// Nothing where afk looks: a missing file or program, an unset variable, no secret at the
    /// Vault path (404), no such field, no auth method at the mount.
    Missing,
    /// The source exists but holds nothing usable (an empty file, variable, output or field).
    Empty,
    /// The source refuses afk: a file it may not read, a Vault policy that does not allow
    /// reading the path.
    PermissionDenied,
    /// Vault does not accept afk's Vault token: it is invalid, expired or revoked.
    InvalidToken,
    /// A Vault login was refused: an unknown role, a service account or namespace the role is
    /// not bound to, a service-account token Kubernetes does not accept.
    LoginRefused,
    /// The command ran and exited non-zero.
    CommandFailed,
    /// What the source holds or answered cannot be used: not UTF-8, not a string, not a KV v2
    /// answer, a Vault answer afk does not expect (another 4xx).
    Unusable,
    /// Vault is sealed (503); it answers again once unsealed.
    Sealed,
    /// The source cannot be reached (connection refused, DNS, TLS handshake cut short).
    Unreachable,
    /// No answer in time: a Vault request or a command that ran past its timeout.
    TimedOut,
    /// The source is failing or overloaded on its side (5xx, 429, an answer cut off).
    Unavailable,
}

impl FailureKind {
    /// True when the failure stays until a person changes something (a refused role, a missing
    /// path or key, permission denied, an invalid Vault token, a missing file or variable, a
    /// command exiting non-zero); false when it will pass by itself (sealed, unreachable, timed
    /// out, 5xx).
    pub fn needs_person(self) -> bool {
        match self {
            FailureKind::Missing
            | FailureKind::Empty
            | FailureKind::PermissionDenied
            | FailureKind::InvalidToken
            | FailureKind::LoginRefused
            | FailureKind::CommandFailed
            | FailureKind::Unusable => true,
            FailureKind::Sealed
            | FailureKind::Unreachable
            | FailureKind::TimedOut
            | FailureKind::Unavailable => false,
        }
    }

    /// A short name for structured log fields and status pages, e.g. `permission_denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Missing => "missing",
            FailureKind::Empty => "empty",
            FailureKind::PermissionDenied => "permission_denied",
            FailureKind::InvalidToken => "invalid_token",
            FailureKind::LoginRefused => "login_refused",
            FailureKind::CommandFailed => "command_failed",
            FailureKind::Unusable => "unusable",
            FailureKind::Sealed => "sealed",
            FailureKind::Unreachable => "unreachable",
            FailureKind::TimedOut => "timed_out",
            FailureKind::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a provider could not produce a secret.
///
/// Contract:
/// - [`source_name`](Self::source_name) says which provider and where it looked (`token file
///   /run/t3/token`, `environment variable GITHUB_TOKEN`, `command `gh``, `Vault secret
///   secret/afk/t3 (field token) at https://vault:8200`), never a value;
/// - [`kind`](Self::kind) classifies it; [`needs_person`](Self::needs_person) says whether a
///   person must act;
/// - `Display` is one line: `cannot read SOURCE: REASON[; ACTION]` (or `SOURCE is empty`);
///   [`action`](Self::action) is what a person must do, when the reason alone does not say it;
/// - an outside text that does not fit on one line (Vault's multi-line `errors`, a command's
///   whole stderr) is folded into the reason; the whole text is [`detail`](Self::detail), for a
///   structured log field.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretError(Box<Inner>);

/// Boxed so that the errors of the crates that carry a `SecretError` stay small.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    source_name: String,
    kind: FailureKind,
    reason: String,
    action: Option<String>,
    detail: Option<String>,
}

impl SecretError {
    /// An error of `kind` from `source_name` (where the secret was looked for) with a one-line
    /// `reason` (what went wrong, never the value).
    pub fn new(source_name: impl Into<String>, kind: FailureKind, reason: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            source_name: source_name.into(),
            kind,
            reason: reason.into(),
            action: None,
            detail: None,
        }))
    }

    /// The source exists but holds nothing usable; shown as `SOURCE is empty`.
    pub fn empty(source_name: impl Into<String>) -> Self {
        Self::new(source_name, FailureKind::Empty, EMPTY)
    }

    /// Adds what a person must do, e.g. `a person must let the Vault policy read secret/data/afk/t3`.
    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.0.action = Some(action.into());
        self
    }

    /// Adds the whole outside text the reason was folded from (shortened past a few thousand
    /// characters). Ignored when it says no more than the reason.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let detail = detail.trim();
        if !detail.is_empty() && !self.0.reason.contains(detail) {
            self.0.detail = Some(shorten(detail, MAX_DETAIL_CHARS));
        }
        self
    }

    /// Where the secret was looked for: which provider and its file, variable, command or Vault
    /// address and path. Never a value.
    pub fn source_name(&self) -> &str {
        &self.0.source_name
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> FailureKind {
        self.0.kind
    }

    /// What went wrong, on one line.
    pub fn reason(&self) -> &str {
        &self.0.reason
    }

    /// What a person must do, when the reason alone does not say it.
    pub fn action(&self) -> Option<&str> {
        self.0.action.as_deref()
    }

    /// The whole outside text (Vault's `errors`, a command's stderr) when the reason holds only
    /// part of it; for a structured log field.
    pub fn detail(&self) -> Option<&str> {
        self.0.detail.as_deref()
    }

    /// True when the failure stays until a person changes something; see
    /// [`FailureKind::needs_person`].
    pub fn needs_person(&self) -> bool {
        self.0.kind.needs_person()
    }

    /// True when a later attempt may succeed without a person changing anything: the opposite of
    /// [`needs_person`](Self::needs_person).
    pub fn is_transient(&self) -> bool {
        !self.needs_person()
    }

    /// The same failure seen through another source, e.g. the Vault token's file failing inside
    /// a Vault provider: `outer` becomes the source, and the inner source and reason the reason.
    pub(crate) fn within(mut self, outer: impl Into<String>, what: &str) -> Self {
        let inner = &mut *self.0;
        inner.reason = if inner.kind == FailureKind::Empty && inner.reason == EMPTY {
            format!("{what}: {} is empty", inner.source_name)
        } else {
            format!("{what}: cannot read {}: {}", inner.source_name, inner.reason)
        };
        inner.source_name = outer.into();
        self
    }
}

impl fmt::Debug for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let this = &self.0;
        if this.kind == FailureKind::Empty && this.reason == EMPTY {
            write!(f, "{} is empty", this.source_name)?;
        } else {
            write!(f, "cannot read {}: {}", this.source_name, this.reason)?;
        }
        if let Some(action) = &this.action {
            write!(f, "; {action}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SecretError {}

/// An outside error text folded onto one line, and the whole text when the line holds less.
///
/// Go's multi-error text, which Vault sends (`"2 errors occurred:\n\t* permission denied\n\t*
/// invalid token\n\n"`), becomes its items joined with `; ` (`permission denied; invalid
/// token`); any other text becomes its first non-empty line. The line is shortened to a few
/// hundred characters.
pub(crate) fn fold(text: &str) -> (String, Option<String>) {
    let text = text.trim();
    let items = multi_error_items(text);
    let line = match &items {
        Some(items) => items.join("; "),
        None => text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default()
            .to_owned(),
    };
    let line = shorten(&line, MAX_REASON_CHARS);
    let whole = (line != text).then(|| text.to_owned());
    (line, whole)
}

/// The items of a Go `multierror` text (`N error(s) occurred:` then `\t* item` lines).
fn multi_error_items(text: &str) -> Option<Vec<&str>> {
    let mut lines = text.lines();
    let head = lines.next()?.trim();
    if !(head.ends_with("error occurred:") || head.ends_with("errors occurred:")) {
        return None;
    }
    let items: Vec<&str> = lines
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix('*').unwrap_or(l).trim())
        .collect();
    (!items.is_empty()).then_some(items)
}

/// `text` cut to `max` characters, with `…` when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_table() {
        let long = "x".repeat(400);
        let cases: &[(&str, &str, bool)] = &[
            // (outside text, the one line, whether the whole text is kept apart)
            ("permission denied", "permission denied", false),
            (
                "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n",
                "permission denied; invalid token",
                true,
            ),
            (
                "1 error occurred:\n\t* permission denied\n\n",
                "permission denied",
                true,
            ),
            ("internal error\n  at vault/core.go:12\n", "internal error", true),
            ("\n\n  first  \nsecond", "first", true),
            ("", "", false),
        ];
        for (text, line, kept) in cases {
            let (folded, whole) = fold(text);
            assert_eq!(&folded, line, "{text:?}");
            assert_eq!(whole.is_some(), *kept, "{text:?}");
            assert!(!folded.contains('\n'));
        }
        let (folded, whole) = fold(&long);
        assert_eq!(folded.chars().count(), MAX_REASON_CHARS + 1);
        assert_eq!(whole.as_deref(), Some(long.as_str()));
    }

    #[test]
    fn display_is_one_line_with_the_action() {
        let error = SecretError::new(
            "Vault secret secret/afk/t3 (field token)",
            FailureKind::PermissionDenied,
            "permission denied",
        )
        .with_action("a person must fix the Vault policy")
        .with_detail("1 error occurred:\n\t* permission denied\n\n");
        assert_eq!(
            error.to_string(),
            "cannot read Vault secret secret/afk/t3 (field token): permission denied; a person must fix the Vault policy"
        );
        assert_eq!(error.detail(), Some("1 error occurred:\n\t* permission denied"));
        assert_eq!(
            SecretError::empty("token file /t").to_string(),
            "token file /t is empty"
        );
    }
}
