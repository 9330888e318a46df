//! When to retry a failed request, and how long to wait first. Pure logic: the transport calls it
//! after each attempt.

use std::time::{Duration, SystemTime};

/// Exponential backoff with jitter, bounded in attempts and in total time.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the first retry (before jitter); doubles each retry.
    pub base_delay: Duration,
    /// No single backoff delay is longer than this (a server's `Retry-After` may ask for more).
    pub max_delay: Duration,
    /// Give up rather than start a wait that would end later than this after the first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

/// Statuses that say "try again later" rather than "this request is wrong".
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Statuses a server sends when it has certainly not acted on the request, so that even a
/// non-idempotent create may be repeated without risking a duplicate.
pub fn is_not_processed_status(status: u16) -> bool {
    matches!(status, 429 | 503)
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry). `jitter` in `[0, 1)` spreads
    /// the wait over `[d/2, d)` so that many clients do not retry in lockstep. A server's
    /// `Retry-After` is a lower bound.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_delay);
        let jittered = capped.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        match retry_after {
            Some(asked) => asked.max(jittered),
            None => jittered,
        }
    }

    /// Whether another attempt may start: `attempts` made so far, `elapsed` since the first one,
    /// and the wait that would come before it.
    pub fn may_retry(&self, attempts: u32, elapsed: Duration, wait: Duration) -> bool {
        attempts < self.max_attempts && elapsed + wait <= self.max_elapsed
    }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP-date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A number in `[0, 1)` that differs between calls, for jitter. Seeded by the host's randomness
/// through std's hasher keys, so no extra dependency is needed.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 413, 501] {
            assert!(!is_transient_status(s), "{s}");
        }
        assert!(is_not_processed_status(503) && !is_not_processed_status(502));
    }

    #[test]
    fn delay_doubles_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(0, None, 1.0), Duration::from_millis(500));
        assert_eq!(p.delay(1, None, 1.0), Duration::from_millis(1000));
        assert_eq!(p.delay(3, None, 1.0), Duration::from_millis(4000));
        assert_eq!(p.delay(10, None, 1.0), Duration::from_secs(15));
        assert_eq!(p.delay(40, None, 1.0), Duration::from_secs(15));
        assert_eq!(p.delay(1, None, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn retry_after_is_a_lower_bound() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7)), 0.3),
            Duration::from_secs(7)
        );
        assert_eq!(
            p.delay(3, Some(Duration::from_millis(1)), 1.0),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn bounded_in_attempts_and_time() {
        let p = RetryPolicy::default();
        assert!(p.may_retry(1, Duration::ZERO, Duration::from_secs(1)));
        assert!(!p.may_retry(5, Duration::ZERO, Duration::ZERO));
        assert!(!p.may_retry(1, Duration::from_secs(100), Duration::from_secs(30)));
    }

    #[test]
    fn parses_both_retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }
}
