//! Back-off for failures a person must fix: a source that refuses afk (a wrong Vault role, a
//! policy that denies the path, a command that fails) is not asked again at every request.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Freshness, Secret, SecretError, SecretProvider};

/// How long a provider waits after the first failure that needs a person before asking its
/// source again. Each further such failure doubles the wait, up to [`DEFAULT_BACKOFF_MAX`].
pub const DEFAULT_BACKOFF_FIRST: Duration = Duration::from_secs(5);

/// The longest wait between two attempts while a failure that needs a person lasts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);

/// The current time, injected so that tests can move it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now.
    fn now(&self) -> Instant;
}

/// The system's monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The back-off decision, without I/O: after a failure that [needs a
/// person](SecretError::needs_person), the source is not asked again for `first`, then twice as
/// long after each further such failure, up to `max`; meanwhile the last error is the answer.
/// A success, or a failure that will pass by itself (sealed, unreachable), ends the back-off:
/// transient failures are retried at the next request as before.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    blocked: Option<Blocked>,
}

#[derive(Debug, Clone)]
struct Blocked {
    error: SecretError,
    until: Instant,
    wait: Duration,
}

impl Backoff {
    /// Waits `first` after the first failure, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            blocked: None,
        }
    }

    /// The error to answer instead of asking the source at `now`, while backing off.
    pub fn blocked(&self, now: Instant) -> Option<&SecretError> {
        self.blocked.as_ref().filter(|b| now < b.until).map(|b| &b.error)
    }

    /// When the source may be asked again, while backing off.
    pub fn retry_at(&self) -> Option<Instant> {
        self.blocked.as_ref().map(|b| b.until)
    }

    /// Records the outcome of asking the source at `now`.
    pub fn record(&mut self, now: Instant, outcome: Result<(), &SecretError>) {
        self.blocked = match outcome {
            Err(error) if error.needs_person() => {
                let wait = match &self.blocked {
                    Some(previous) => (previous.wait * 2).min(self.max),
                    None => self.first,
                };
                Some(Blocked {
                    error: error.clone(),
                    until: now + wait,
                    wait,
                })
            }
            _ => None,
        };
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_BACKOFF_FIRST, DEFAULT_BACKOFF_MAX)
    }
}

/// A provider that stops asking its source while a failure that needs a person lasts
/// ([`Backoff`]): it answers the last error instead, for either [`Freshness`], until the wait
/// is over. [`crate::ProviderSpec::build`] puts the command and Vault providers behind one,
/// since asking them costs a process or a request; a file or a variable is cheap to read and
/// picks up a fix at the next request.
pub struct BackoffProvider {
    inner: Arc<dyn SecretProvider>,
    clock: Arc<dyn Clock>,
    backoff: Mutex<Backoff>,
}

impl fmt::Debug for BackoffProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The provider it wraps is what a reader wants to see.
        self.inner.fmt(f)
    }
}

impl BackoffProvider {
    /// `inner` with the default back-off ([`DEFAULT_BACKOFF_FIRST`] to [`DEFAULT_BACKOFF_MAX`])
    /// on the system clock.
    pub fn new(inner: Arc<dyn SecretProvider>) -> Self {
        Self {
            inner,
            clock: Arc::new(SystemClock),
            backoff: Mutex::new(Backoff::default()),
        }
    }

    /// Waits `first` after the first failure, doubling up to `max`.
    pub fn with_limits(self, first: Duration, max: Duration) -> Self {
        Self {
            backoff: Mutex::new(Backoff::new(first, max)),
            ..self
        }
    }

    /// Reads the time from `clock`.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl SecretProvider for BackoffProvider {
    async fn get(&self, freshness: Freshness) -> Result<Secret, SecretError> {
        if let Some(error) = self.lock().blocked(self.clock.now()) {
            return Err(error.clone());
        }
        let result = self.inner.get(freshness).await;
        let now = self.clock.now();
        let mut backoff = self.lock();
        backoff.record(now, result.as_ref().map(|_| ()));
        if let (Err(error), Some(retry_at)) = (&result, backoff.retry_at()) {
            let wait = retry_at.saturating_duration_since(now);
            tracing::debug!(%error, ?wait, "a person must act; asking the source again only after a wait");
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailureKind;

    fn error(kind: FailureKind) -> SecretError {
        SecretError::new("Vault secret secret/afk/t3 (field token)", kind, "test")
    }

    #[test]
    fn backoff_table() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let refused = error(FailureKind::LoginRefused);
        let sealed = error(FailureKind::Sealed);
        let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(20));
        // (when the source was asked, what it answered, until when it is then not asked again)
        let steps: &[(u64, Result<(), &SecretError>, Option<u64>)] = &[
            (0, Err(&refused), Some(5)),   // first failure: 5s
            (5, Err(&refused), Some(15)),  // doubled: 10s
            (15, Err(&refused), Some(35)), // 20s
            (35, Err(&refused), Some(55)), // capped at 20s
            (55, Err(&sealed), None),      // a failure that will pass ends the back-off
            (56, Err(&refused), Some(61)), // and the next refusal starts at 5s again
            (61, Ok(()), None),            // a success ends it
            (62, Err(&refused), Some(67)), // 5s again
        ];
        for (n, (when, outcome, until)) in steps.iter().enumerate() {
            backoff.record(at(*when), *outcome);
            match until {
                Some(until) => {
                    assert_eq!(backoff.blocked(at(until - 1)), Some(&refused), "step {n}");
                    assert_eq!(backoff.blocked(at(*until)), None, "step {n}");
                }
                None => assert_eq!(backoff.blocked(at(*when)), None, "step {n}"),
            }
        }
    }
}
