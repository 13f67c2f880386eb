//! Waiting reasons: what afk cannot use right now, the part at fault (T3 at its URL, the Vault or
//! file a token comes from, GitHub, the ledger), and whether a person must act or it will pass.
//!
//! The decisions are plain: [`Waiting::t3`], [`Waiting::github`] and [`Waiting::ledger`] read an
//! error into a reason, and [`Waits`] decides when a reason is said (when it appears or changes,
//! and again every [`REPEAT_EVERY`] while it lasts) and how long afk leaves a part alone while a
//! failure that needs a person lasts (from one poll interval, doubling up to [`BACKOFF_MAX`]), so
//! that a misconfiguration is neither silent after one line nor retried at every poll.
//!
//! Every text taken from outside (T3's, GitHub's, Vault's answers) is scrubbed of the values afk
//! holds before it is kept: these reasons go to the log and to the ledger.

use std::collections::BTreeMap;
use std::time::Duration;

use afk_github::GitHubError;
use afk_ledger::LedgerError;
use afk_secrets::redact::{redact_url, scrub};
use afk_secrets::SecretError;
use chrono::{DateTime, Utc};
use t3_client::T3Error;

/// How often a reason that lasts is said again.
pub const REPEAT_EVERY: Duration = Duration::from_secs(5 * 60);

/// The longest afk leaves a part alone while a failure that needs a person lasts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// What is held up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// Reading T3's fleet: nothing is dispatched or watched.
    T3Read,
    /// Dispatching: T3 takes no command from afk.
    T3Operate,
    /// GitHub: no issue is taken from it.
    GitHub,
    /// The ledger: nothing is recorded.
    Ledger,
}

impl Topic {
    /// Its name in the ledger and in structured logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::T3Read => "t3_read",
            Topic::T3Operate => "t3_operate",
            Topic::GitHub => "github",
            Topic::Ledger => "ledger",
        }
    }

    /// What waits, for people.
    fn held_up(self) -> &'static str {
        match self {
            Topic::T3Read => "nothing is dispatched or watched",
            Topic::T3Operate => "nothing is dispatched",
            Topic::GitHub => "no issue is taken from GitHub",
            Topic::Ledger => "nothing is recorded",
        }
    }
}

/// Which credential a T3 request carried, to name it and where it is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential {
    /// E.g. `afk's operate token`.
    pub name: &'static str,
    /// Where a person fixes it, e.g. `[t3.token] or token_file`.
    pub key: &'static str,
}

impl Credential {
    /// The operate token (dispatch, and reading when no read token is configured).
    pub const OPERATE: Credential = Credential {
        name: "afk's T3 operate token",
        key: "[t3.token] or token_file",
    };
    /// The read-only token of the watcher.
    pub const READ: Credential = Credential {
        name: "afk's T3 read token",
        key: "[t3.read_token] or read_token_file",
    };
}

/// One reason afk waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// What is held up.
    pub topic: Topic,
    /// The part at fault: `T3 at URL`, the secret's source (`Vault secret … at ADDR`, `token
    /// file PATH`), `GitHub at URL`, `the ledger at URL`.
    pub part: String,
    /// What is wrong, one line, naming the part.
    pub reason: String,
    /// What a person must do, when one must.
    pub action: Option<String>,
    /// True when it stays until a person changes something.
    pub needs_person: bool,
    /// Its class, e.g. `sealed`, `refused`, `unreachable`.
    pub kind: String,
    /// The whole outside text when the reason holds only part of it (Vault's multi-line errors).
    pub detail: Option<String>,
}

impl Waiting {
    /// The reason T3 could not be used with `credential` for `topic`, from `error` (a request to
    /// the T3 at `t3_url`).
    pub fn t3(topic: Topic, credential: Credential, t3_url: &str, error: &T3Error) -> Waiting {
        let t3 = format!("T3 at {}", redact_url(t3_url));
        if let T3Error::Bearer { source, .. } = error {
            return Waiting::secret(topic, credential.name, credential.key, source);
        }
        let scope = match error {
            T3Error::Rpc { required_scope, .. } => required_scope.clone(),
            _ => error.body().and_then(|b| b.required_scope.clone()),
        };
        let (reason, action, kind, needs_person) = if error.is_credential_problem() {
            match (error.status(), scope) {
                (_, Some(scope)) => (
                    format!("{t3} refused {}: it lacks the scope {scope}", credential.name),
                    Some(format!(
                        "a person must give afk a token with {scope} ({})",
                        credential.key
                    )),
                    "insufficient_scope",
                    true,
                ),
                (Some(401), None) => (
                    format!(
                        "{t3} refused {} (401): it is invalid or expired, also when read again",
                        credential.name
                    ),
                    Some(format!(
                        "a person must give afk a valid token ({})",
                        credential.key
                    )),
                    "refused",
                    true,
                ),
                (status, None) => (
                    format!(
                        "{t3} refused {}{}: {}",
                        credential.name,
                        status.map(|s| format!(" ({s})")).unwrap_or_default(),
                        error
                    ),
                    Some(format!("a person must fix the token ({})", credential.key)),
                    "refused",
                    true,
                ),
            }
        } else if error.is_transient() {
            let kind = match error.status() {
                Some(_) => "unavailable",
                None => "unreachable",
            };
            (format!("{t3}: {error}"), None, kind, false)
        } else {
            (
                format!("{t3}: {error}"),
                Some("a person must check that T3 and afk agree (afk doctor)".into()),
                "unexpected",
                true,
            )
        };
        Waiting {
            topic,
            part: t3,
            reason: scrub(&reason).into_owned(),
            action,
            needs_person,
            kind: kind.into(),
            detail: None,
        }
    }

    /// The reason GitHub could not be used, from `error` (which names the URL asked).
    pub fn github(error: &GitHubError) -> Waiting {
        let github = "GitHub".to_owned();
        if let GitHubError::Credentials(source) = error {
            return Waiting::secret(
                Topic::GitHub,
                "afk's GitHub credentials",
                "[github] token or private_key",
                source,
            );
        }
        let (kind, action) = match error {
            GitHubError::RateLimited { .. } => ("rate_limited", None),
            GitHubError::Transport { .. } => ("unreachable", None),
            GitHubError::Unauthorized { .. } => (
                "refused",
                Some("a person must give afk a valid token or App installation ([github])"),
            ),
            GitHubError::AppKey { .. } | GitHubError::AppToken { .. } if !error.is_transient() => (
                "refused",
                Some("a person must fix the App's id, installation id or private key ([github])"),
            ),
            GitHubError::NotFound { .. } | GitHubError::Moved { .. } => (
                "not_found",
                Some("a person must fix [github] repos or the credentials' access"),
            ),
            _ if error.is_transient() => ("unavailable", None),
            _ => (
                "unexpected",
                Some("a person must check the credentials' permissions (afk doctor)"),
            ),
        };
        Waiting {
            topic: Topic::GitHub,
            part: github.clone(),
            reason: scrub(&error.to_string()).into_owned(),
            action: action.map(str::to_owned),
            needs_person: action.is_some(),
            kind: kind.into(),
            detail: None,
        }
    }

    /// The reason the ledger (at `url_redacted`) could not be used, from `error`.
    pub fn ledger(url_redacted: &str, error: &LedgerError) -> Waiting {
        let ledger = format!("the ledger at {url_redacted}");
        let action = match error {
            LedgerError::Migrate { .. }
            | LedgerError::UnsupportedUrl { .. }
            | LedgerError::NotMigrated { .. } => {
                Some("a person must fix [ledger] url or the database (afk doctor)")
            }
            LedgerError::Corrupt { .. } => Some("a person must repair or remove the row named"),
            _ => None,
        };
        Waiting {
            topic: Topic::Ledger,
            part: ledger.clone(),
            reason: scrub(&format!("{ledger}: {error}")).into_owned(),
            action: action.map(str::to_owned),
            needs_person: action.is_some(),
            kind: match action {
                Some(_) => "unusable",
                None => "unavailable",
            }
            .into(),
            detail: None,
        }
    }

    /// A secret provider failed: `credential` from its source (`key` configures it).
    fn secret(topic: Topic, credential: &str, key: &str, error: &SecretError) -> Waiting {
        let action = match (error.action(), error.needs_person()) {
            (Some(action), _) => Some(action.to_owned()),
            (None, true) => Some(format!("a person must fix it ({key})")),
            (None, false) => None,
        };
        Waiting {
            topic,
            part: scrub(error.source_name()).into_owned(),
            reason: scrub(&format!(
                "{credential} from {}: {}",
                error.source_name(),
                error.reason()
            ))
            .into_owned(),
            action,
            needs_person: error.needs_person(),
            kind: error.kind().as_str().into(),
            detail: error.detail().map(|d| scrub(d).into_owned()),
        }
    }

    /// The whole reason on one line: what is held up, what is wrong, and what a person must do or
    /// that it will pass.
    pub fn message(&self) -> String {
        let then = match &self.action {
            Some(action) => action.as_str(),
            None => "it will pass",
        };
        format!("{}: {} — {then}", self.topic.held_up(), self.reason)
    }

    /// The same cause as `other` (the part, the class and who must act): a reason whose text
    /// alone changed (a new trace id) is not news.
    fn same_cause(&self, other: &Waiting) -> bool {
        self.part == other.part && self.kind == other.kind && self.needs_person == other.needs_person
    }
}

/// What to do about a reason just noted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    /// Nothing: it was said less than [`REPEAT_EVERY`] ago.
    Nothing,
    /// Say it: it is new, or its cause changed.
    New,
    /// Say it again: it lasts.
    Again,
}

#[derive(Debug, Clone)]
struct Entry {
    waiting: Waiting,
    since: DateTime<Utc>,
    said_at: DateTime<Utc>,
    /// While a failure that needs a person lasts: how long afk leaves the part alone, and until
    /// when.
    backoff: Option<(Duration, DateTime<Utc>)>,
}

/// The reasons afk waits now, by topic, with when each was said and its back-off. Memory only;
/// the control plane keeps the ledger's copy in step.
#[derive(Debug, Clone)]
pub struct Waits {
    entries: BTreeMap<Topic, Entry>,
    first_backoff: Duration,
}

impl Waits {
    /// No reasons yet; a failure that needs a person first leaves its part alone for
    /// `first_backoff` (the poll interval).
    pub fn new(first_backoff: Duration) -> Self {
        Self {
            entries: BTreeMap::new(),
            first_backoff: first_backoff.min(BACKOFF_MAX),
        }
    }

    /// Notes that afk waits for `waiting` at `now`, and says whether to say so. A failure that
    /// needs a person (re)starts the back-off of its topic: the first poll interval, then twice
    /// the last, up to [`BACKOFF_MAX`]; one that will pass ends it.
    pub fn note(&mut self, waiting: Waiting, now: DateTime<Utc>) -> Say {
        let topic = waiting.topic;
        let previous = self.entries.remove(&topic);
        let backoff = waiting.needs_person.then(|| {
            let wait = match previous.as_ref().and_then(|p| p.backoff) {
                Some((wait, _)) => (wait * 2).min(BACKOFF_MAX),
                None => self.first_backoff,
            };
            (wait, now + wait)
        });
        let (say, since, said_at) = match previous {
            Some(p) if p.waiting.same_cause(&waiting) => {
                if elapsed(p.said_at, now) >= REPEAT_EVERY {
                    (Say::Again, p.since, now)
                } else {
                    (Say::Nothing, p.since, p.said_at)
                }
            }
            _ => (Say::New, now, now),
        };
        self.entries.insert(
            topic,
            Entry {
                waiting,
                since,
                said_at,
                backoff,
            },
        );
        say
    }

    /// Afk no longer waits on `topic`: the reason it waited for, if it did.
    pub fn clear(&mut self, topic: Topic) -> Option<Waiting> {
        self.entries.remove(&topic).map(|e| e.waiting)
    }

    /// False while `topic` is being left alone: a failure that needs a person was met less than
    /// its back-off ago.
    pub fn may_try(&self, topic: Topic, now: DateTime<Utc>) -> bool {
        self.entries
            .get(&topic)
            .and_then(|e| e.backoff)
            .is_none_or(|(_, until)| now >= until)
    }

    /// The current reason of `topic`, and since when.
    pub fn current(&self, topic: Topic) -> Option<(&Waiting, DateTime<Utc>)> {
        self.entries.get(&topic).map(|e| (&e.waiting, e.since))
    }
}

fn elapsed(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use afk_secrets::FailureKind;
    use t3_client::wire::ErrorBody;

    const URL: &str = "http://afk:pa55@t3:3773";

    fn status(status: u16, body: Option<ErrorBody>) -> T3Error {
        T3Error::Status {
            what: "snapshot".into(),
            status,
            body: body.map(Box::new),
            body_excerpt: None,
        }
    }

    fn bearer(kind: FailureKind, reason: &str) -> T3Error {
        T3Error::Bearer {
            what: "snapshot".into(),
            source: SecretError::new(
                "Vault secret secret/afk/t3 (field token) at https://vault:8200",
                kind,
                reason,
            ),
        }
    }

    #[test]
    fn each_t3_error_names_the_part_at_fault_and_who_must_act() {
        let scope = ErrorBody {
            required_scope: Some("orchestration:read".into()),
            ..ErrorBody::default()
        };
        let vault = "Vault secret secret/afk/t3 (field token) at https://vault:8200";
        let t3 = "T3 at http://[redacted]@t3:3773";
        // (the error, the part at fault, its kind, a person must act, what the message says)
        #[rustfmt::skip]
        let cases: Vec<(T3Error, &str, &str, bool, &[&str])> = vec![
            (bearer(FailureKind::Sealed, "Vault is sealed (503)"), vault, "sealed", false,
                &["afk's T3 operate token from Vault secret", "at https://vault:8200: Vault is sealed (503) — it will pass"]),
            (bearer(FailureKind::InvalidToken, "Vault does not accept the Vault token (403)"), vault, "invalid_token", true,
                &["does not accept the Vault token", "a person must fix it ([t3.token] or token_file)"]),
            (status(401, None), t3, "refused", true,
                &["T3 at http://[redacted]@t3:3773 refused afk's T3 operate token (401)", "a person must give afk a valid token"]),
            (status(403, Some(scope)), t3, "insufficient_scope", true,
                &["lacks the scope orchestration:read", "a person must give afk a token with orchestration:read"]),
            (status(503, None), t3, "unavailable", false, &["T3 answered 503", "— it will pass"]),
            (T3Error::Transport {
                what: "snapshot".into(),
                url: format!("{URL}/api/orchestration/snapshot"),
                source: t3_client::TransportError {
                    kind: t3_client::TransportErrorKind::Connect,
                    message: "connection refused".into(),
                },
            }, t3, "unreachable", false, &["no reply", "— it will pass"]),
            (T3Error::MalformedReply {
                what: "snapshot".into(),
                detail: "at threads[0]: missing field `id`".into(),
                body_excerpt: "{}".into(),
            }, t3, "unexpected", true, &["malformed reply", "afk doctor"]),
        ];
        for (error, part, kind, needs_person, said) in cases {
            let waiting = Waiting::t3(Topic::T3Read, Credential::OPERATE, URL, &error);
            assert_eq!(
                (waiting.part.as_str(), waiting.kind.as_str(), waiting.needs_person),
                (part, kind, needs_person),
                "{error}"
            );
            let message = waiting.message();
            assert!(
                message.starts_with("nothing is dispatched or watched: "),
                "{message}"
            );
            assert!(said.iter().all(|s| message.contains(s)), "{error}: {message}");
            assert!(!message.contains("pa55"), "{message}");
        }
    }

    #[test]
    fn github_errors_say_whether_a_person_must_act() {
        let api = "https://api.github.com";
        #[rustfmt::skip]
        let cases: Vec<(GitHubError, &str, bool)> = vec![
            (GitHubError::Unauthorized { url: format!("{api}/user") }, "refused", true),
            (GitHubError::RateLimited { until: Utc::now(), limit: afk_github::RateLimitKind::Primary }, "rate_limited", false),
            (GitHubError::Transport { url: api.into(), reason: "dns".into() }, "unreachable", false),
            (GitHubError::NotFound { url: format!("{api}/repos/acme/api/issues") }, "not_found", true),
            (GitHubError::Http { method: "GET".into(), url: api.into(), status: 502, message: "bad gateway".into() }, "unavailable", false),
            (GitHubError::Credentials(SecretError::new("environment variable GITHUB_TOKEN", FailureKind::Missing, "it is not set")), "missing", true),
        ];
        for (error, kind, needs_person) in cases {
            let waiting = Waiting::github(&error);
            assert_eq!(
                (waiting.kind.as_str(), waiting.needs_person),
                (kind, needs_person),
                "{error}"
            );
            assert!(waiting.message().starts_with("no issue is taken from GitHub: "));
        }
        let from_env = Waiting::github(&GitHubError::Credentials(SecretError::new(
            "environment variable GITHUB_TOKEN",
            FailureKind::Missing,
            "it is not set",
        )));
        assert_eq!(from_env.part, "environment variable GITHUB_TOKEN");
        assert!(from_env
            .message()
            .contains("afk's GitHub credentials from environment variable GITHUB_TOKEN: it is not set"));
    }

    fn sealed() -> Waiting {
        Waiting::t3(
            Topic::T3Read,
            Credential::OPERATE,
            URL,
            &bearer(FailureKind::Sealed, "Vault is sealed (503)"),
        )
    }

    fn refused() -> Waiting {
        Waiting::t3(Topic::T3Read, Credential::OPERATE, URL, &status(401, None))
    }

    #[test]
    fn a_reason_is_said_when_it_changes_and_again_every_few_minutes_while_it_lasts() {
        let t0 = Utc::now();
        let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let mut waits = Waits::new(Duration::from_secs(5));
        // (seconds, the reason, what to say, why)
        #[rustfmt::skip]
        let steps = [
            (0, sealed(), Say::New, "the first reason"),
            (5, sealed(), Say::Nothing, "the same, a poll later"),
            (299, sealed(), Say::Nothing, "still within the repeat"),
            (300, sealed(), Say::Again, "it lasts: said again"),
            (305, sealed(), Say::Nothing, "and quiet again"),
            (310, refused(), Say::New, "another cause: said at once"),
            (315, refused(), Say::Nothing, "the same cause"),
        ];
        for (secs, waiting, say, why) in steps {
            assert_eq!(waits.note(waiting, at(secs)), say, "{why}");
        }
        assert_eq!(
            waits.current(Topic::T3Read).unwrap().1,
            at(310),
            "since the cause changed"
        );
        assert_eq!(waits.clear(Topic::T3Read).map(|w| w.kind), Some("refused".into()));
        assert_eq!(
            waits.note(refused(), at(320)),
            Say::New,
            "a reason after a clear is new"
        );
    }

    #[test]
    fn a_failure_that_needs_a_person_backs_off_up_to_minutes_and_one_that_will_pass_does_not() {
        let t0 = Utc::now();
        let at = |secs: i64| t0 + chrono::Duration::seconds(secs);
        let mut waits = Waits::new(Duration::from_secs(5));
        assert!(waits.may_try(Topic::T3Read, t0));
        let mut now = 0;
        let mut waited = Vec::new();
        for _ in 0..9 {
            waits.note(refused(), at(now));
            let next = (now..now + 1000)
                .find(|s| waits.may_try(Topic::T3Read, at(*s)))
                .unwrap();
            waited.push(next - now);
            now = next;
        }
        assert_eq!(waited, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert!(waits.may_try(Topic::T3Operate, at(now)), "topics back off apart");
        waits.note(sealed(), at(now));
        assert!(
            waits.may_try(Topic::T3Read, at(now)),
            "a sealed Vault is asked again at the next poll"
        );
        waits.note(refused(), at(now));
        assert!(!waits.may_try(Topic::T3Read, at(now + 4)));
        assert!(
            waits.may_try(Topic::T3Read, at(now + 5)),
            "the back-off starts over"
        );
    }
}
