//! How long to wait before trying again, and how often.

use std::time::Duration;

/// Exponential back-off with a cap and a bound on attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first wait (default 10 s).
    pub initial: Duration,
    /// The longest wait (default 5 min).
    pub cap: Duration,
    /// Attempts per job, the first included (default 3).
    pub max_attempts: u32,
    /// Tries of one attempt's dispatch commands against transient T3 errors, with the same ids,
    /// before the attempt fails (default 5).
    pub max_dispatch_tries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(10),
            cap: Duration::from_secs(300),
            max_attempts: 3,
            max_dispatch_tries: 5,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `n`th failure (1-based): `initial`, doubling, at most `cap`.
    pub fn backoff(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(32);
        self.initial
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.cap)
            .min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_five_minutes() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=7).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(p.backoff(100), Duration::from_secs(300));
    }
}
