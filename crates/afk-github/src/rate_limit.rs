//! GitHub's rate limits, as its REST documentation states them, and the gate that holds every
//! request of a client back while one applies.
//!
//! - **Primary**: `x-ratelimit-remaining: 0` (on any answer, even a success): nothing until
//!   `x-ratelimit-reset`.
//! - **Secondary**: a 403 or 429 that says so (a 429 always; a 403 when it carries `Retry-After`,
//!   `x-ratelimit-remaining: 0`, or a message about a rate limit or abuse detection; any other
//!   403 is a permission error). Wait `Retry-After` seconds when given; else until
//!   `x-ratelimit-reset` when `remaining` is 0; else at least a minute, doubling while the
//!   refusals repeat (up to [`MAX_SECONDARY_BACK_OFF`]).
//!
//! The decision is a pure function (`assess`, table-tested); a gate per client keeps the state,
//! holds every request back while a block lasts, and logs each new block once, saying which limit
//! and until when.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use crate::error::GitHubError;
use crate::http::{github_message, header_u64};
use crate::lock;

/// The first wait after a secondary limit without `Retry-After` (GitHub: "at least one minute").
pub const SECONDARY_BACK_OFF: Duration = Duration::from_secs(60);
/// The longest wait for a secondary limit that keeps repeating without `Retry-After`.
pub const MAX_SECONDARY_BACK_OFF: Duration = Duration::from_secs(60 * 60);
/// The longest `Retry-After` afk believes (a larger one is taken as this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Which of GitHub's limits holds afk back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitKind {
    /// The hourly request budget is spent (`x-ratelimit-remaining: 0`).
    Primary,
    /// GitHub refused a burst (403 or 429 saying so) while budget was left.
    Secondary,
}

impl fmt::Display for RateLimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RateLimitKind::Primary => "primary",
            RateLimitKind::Secondary => "secondary",
        })
    }
}

/// A rate limit in force: which one and when requests may resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitBlock {
    /// Which limit.
    pub kind: RateLimitKind,
    /// No request is sent before this instant.
    pub until: DateTime<Utc>,
}

/// What one answer says about the rate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Assessment {
    /// No limit applies.
    Clear,
    /// The answer is good, but it spent the last of the primary budget: block what follows.
    Exhausted(RateLimitBlock),
    /// GitHub refused the request because of a limit.
    Refused(RateLimitBlock),
}

/// Reads one answer. `secondary_streak` is how many secondary refusals came just before this one
/// (0 when the last answer was not one); it sets the back-off when GitHub gives no time.
pub(crate) fn assess(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
    secondary_streak: u32,
) -> Assessment {
    let exhausted = header_u64(headers, "x-ratelimit-remaining") == Some(0);
    let retry_after = retry_after(headers, now);
    let reset = header_u64(headers, "x-ratelimit-reset")
        .and_then(|r| i64::try_from(r).ok())
        .and_then(|r| DateTime::from_timestamp(r, 0))
        .filter(|r| *r > now);
    let refused = match status {
        StatusCode::TOO_MANY_REQUESTS => true,
        StatusCode::FORBIDDEN => exhausted || retry_after.is_some() || says_rate_limited(body),
        _ => false,
    };
    if !refused {
        return match (exhausted, reset) {
            (true, Some(until)) => Assessment::Exhausted(RateLimitBlock {
                kind: RateLimitKind::Primary,
                until,
            }),
            // Exhausted but no usable reset: the next request will be refused and say more.
            _ => Assessment::Clear,
        };
    }
    let kind = if exhausted && !says_secondary(body) {
        RateLimitKind::Primary
    } else {
        RateLimitKind::Secondary
    };
    let until = retry_after
        .or(if exhausted { reset } else { None })
        .unwrap_or_else(|| now + back_off(secondary_streak));
    Assessment::Refused(RateLimitBlock { kind, until })
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let max = chrono::Duration::from_std(MAX_RETRY_AFTER).unwrap_or(chrono::Duration::days(1));
    if let Some(secs) = header_u64(headers, reqwest::header::RETRY_AFTER.as_str()) {
        let secs = chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX).min(max.num_seconds()));
        return Some(now + secs);
    }
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let at = DateTime::parse_from_rfc2822(text.trim())
        .ok()?
        .with_timezone(&Utc);
    Some(at.clamp(now, now + max))
}

/// 60 s, 120 s, 240 s, ... for the 1st, 2nd, 3rd refusal in a row, up to the maximum.
fn back_off(secondary_streak: u32) -> chrono::Duration {
    let base = SECONDARY_BACK_OFF.as_secs();
    let secs = base
        .checked_shl(secondary_streak.min(16))
        .unwrap_or(u64::MAX)
        .min(MAX_SECONDARY_BACK_OFF.as_secs());
    chrono::Duration::seconds(secs as i64)
}

fn says_rate_limited(body: &[u8]) -> bool {
    let message = github_message(body).to_ascii_lowercase();
    message.contains("rate limit") || message.contains("abuse detection")
}

fn says_secondary(body: &[u8]) -> bool {
    let message = github_message(body).to_ascii_lowercase();
    message.contains("secondary rate limit") || message.contains("abuse detection")
}

/// Holds every request of one client back while a limit applies. Shared by the client's clones
/// and by the App token exchange, so nothing at all reaches GitHub before `until`.
#[derive(Debug, Default)]
pub(crate) struct RateGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    block: Option<RateLimitBlock>,
    secondary_streak: u32,
}

impl RateGate {
    /// The block in force at `now`, if any.
    pub(crate) fn blocked(&self, now: DateTime<Utc>) -> Option<RateLimitBlock> {
        lock(&self.state).block.filter(|b| b.until > now)
    }

    /// `Err(RateLimited)` while a limit applies: the caller must not send.
    pub(crate) fn check(&self, now: DateTime<Utc>) -> Result<(), GitHubError> {
        match self.blocked(now) {
            Some(block) => Err(GitHubError::RateLimited {
                until: block.until,
                limit: block.kind,
            }),
            None => Ok(()),
        }
    }

    /// Takes in one answer. Returns the error to give the caller when GitHub refused the request
    /// because of a limit; logs each block as it begins.
    pub(crate) fn observe(
        &self,
        request: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), GitHubError> {
        let mut state = lock(&self.state);
        let assessment = assess(status, headers, body, now, state.secondary_streak);
        let (block, refused) = match assessment {
            Assessment::Clear => {
                state.secondary_streak = 0;
                return Ok(());
            }
            Assessment::Exhausted(block) => {
                state.secondary_streak = 0;
                (block, false)
            }
            Assessment::Refused(block) => {
                if block.kind == RateLimitKind::Secondary {
                    state.secondary_streak = state.secondary_streak.saturating_add(1);
                }
                (block, true)
            }
        };
        let extends = state
            .block
            .is_none_or(|b| b.until <= now || b.until < block.until);
        if extends {
            state.block = Some(block);
            let wait = humantime::format_duration((block.until - now).to_std().unwrap_or_default());
            let how = if refused {
                format!("GitHub refused {request} (HTTP {})", status.as_u16())
            } else {
                format!("{request} spent the last of the hourly budget")
            };
            tracing::warn!(
                limit = %block.kind,
                until = %block.until,
                streak = state.secondary_streak,
                "GitHub {} rate limit: {how}; sending nothing to GitHub until {} ({wait})",
                block.kind,
                block.until,
            );
        }
        if refused {
            let current = state.block.unwrap_or(block);
            return Err(GitHubError::RateLimited {
                until: current.until,
                limit: current.kind,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// (case, status, headers, body, secondary streak, expected).
    type Case = (&'static str, u16, HeaderMap, &'static [u8], u32, Assessment);

    #[test]
    fn each_documented_case_gets_its_limit_and_wait() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let reset = (now.timestamp() + 1800).to_string();
        let secs = |s: i64| now + chrono::Duration::seconds(s);
        let at_reset = DateTime::from_timestamp(now.timestamp() + 1800, 0).unwrap();
        let secondary = br#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}"#.as_slice();
        let primary = br#"{"message":"API rate limit exceeded for user ID 1."}"#.as_slice();
        let denied = br#"{"message":"Resource not accessible by integration"}"#.as_slice();
        use Assessment::*;
        use RateLimitKind::*;
        let block = |kind, until| RateLimitBlock { kind, until };
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("a plain success", 200, headers(&[("x-ratelimit-remaining", "41".into())]), b"[]", 0, Clear),
            ("a success that spent the budget blocks until the reset", 200,
                headers(&[("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", reset.clone())]), b"[]", 0,
                Exhausted(block(Primary, at_reset))),
            ("primary: 403 with remaining 0 waits for the reset", 403,
                headers(&[("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", reset.clone())]), primary, 0,
                Refused(block(Primary, at_reset))),
            ("primary: 429 with remaining 0 waits for the reset", 429,
                headers(&[("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", reset.clone())]), primary, 0,
                Refused(block(Primary, at_reset))),
            ("secondary with Retry-After is honoured exactly", 403,
                headers(&[("x-ratelimit-remaining", "4000".into()), ("retry-after", "30".into())]), secondary, 0,
                Refused(block(Secondary, secs(30)))),
            ("secondary 429 with Retry-After", 429, headers(&[("retry-after", "90".into())]), b"", 3,
                Refused(block(Secondary, secs(90)))),
            ("secondary without Retry-After: at least a minute", 403,
                headers(&[("x-ratelimit-remaining", "4000".into())]), secondary, 0,
                Refused(block(Secondary, secs(60)))),
            ("a repeated secondary limit doubles the wait", 403,
                headers(&[("x-ratelimit-remaining", "4000".into())]), secondary, 2,
                Refused(block(Secondary, secs(240)))),
            ("the doubling stops at an hour", 429, HeaderMap::new(), b"", 30,
                Refused(block(Secondary, secs(3600)))),
            ("secondary with remaining 0 waits for the reset", 403,
                headers(&[("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", reset.clone())]), secondary, 0,
                Refused(block(Secondary, at_reset))),
            ("an old abuse-detection 403", 403, HeaderMap::new(),
                br#"{"message":"You have triggered an abuse detection mechanism."}"#, 0,
                Refused(block(Secondary, secs(60)))),
            ("a Retry-After given as an HTTP date", 429,
                headers(&[("retry-after", (now + chrono::Duration::seconds(45)).to_rfc2822())]), b"", 0,
                Refused(block(Secondary, secs(45)))),
            ("a 403 for permissions is not a limit", 403,
                headers(&[("x-ratelimit-remaining", "4000".into())]), denied, 0, Clear),
            ("a 404 is not a limit", 404, HeaderMap::new(), b"", 0, Clear),
        ];
        for (case, status, h, body, streak, expected) in cases {
            let got = assess(StatusCode::from_u16(status).unwrap(), &h, body, now, streak);
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn the_streak_grows_with_repeated_refusals_and_ends_with_an_answer() {
        let gate = RateGate::default();
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let refuse = |at: DateTime<Utc>| {
            gate.observe(
                "GET /x",
                StatusCode::TOO_MANY_REQUESTS,
                &HeaderMap::new(),
                b"",
                at,
            )
            .unwrap_err()
        };
        let until = |e: GitHubError| match e {
            GitHubError::RateLimited { until, .. } => until,
            other => panic!("not a rate limit: {other}"),
        };
        let first = until(refuse(now));
        assert_eq!((first - now).num_seconds(), 60);
        let second = until(refuse(first));
        assert_eq!((second - first).num_seconds(), 120);
        assert!(gate.check(second - chrono::Duration::seconds(1)).is_err());
        assert!(gate.check(second).is_ok());
        gate.observe("GET /x", StatusCode::OK, &HeaderMap::new(), b"[]", second)
            .unwrap();
        let third = until(refuse(second));
        assert_eq!((third - second).num_seconds(), 60, "a success ended the streak");
    }
}
