//! The one source of "now" for token expiry, permission-cache lifetimes and rate-limit back-off.
//!
//! Injected rather than read from the system so that tests can move time forward (an App token
//! about to expire, a rate-limit window that has passed) without sleeping.

use std::fmt;

use chrono::{DateTime, Utc};

/// Tells the current time. Implementations must be cheap and monotone enough for expiry checks.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock: what production uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
