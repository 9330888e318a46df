//! When to retry a failed request, and how long to wait first. Pure logic: the transport calls it
//! after each attempt.

use std::time::{Duration, SystemTime};

/// Exponential backoff with jitter, bounded in attempts, as MLflow's own client retries
/// (urllib3's `Retry` as `mlflow/utils/request_utils.py` configures it, with the defaults of
/// `mlflow/environment_variables.py`): no wait before the first retry, then
/// `backoff_factor * 2^retry` (4, 8, 16, 32, 64 s with the default factor of 2), at most
/// `max_delay`, plus up to `backoff_jitter` of random jitter. Seven retries ride out about four
/// minutes of throttling. A server's `Retry-After` replaces the backoff (as urllib3 does), up
/// to `max_delay`: a server cannot park a copy for longer.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// `MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`.
    pub backoff_factor: Duration,
    /// `MLFLOW_HTTP_REQUEST_BACKOFF_JITTER`.
    pub backoff_jitter: Duration,
    /// No wait is longer than this (urllib3's `DEFAULT_BACKOFF_MAX`).
    pub max_delay: Duration,
    /// Give up rather than start a wait that would end later than this after the first
    /// attempt. Unset, as in MLflow: each attempt is bounded by the request timeout instead.
    pub max_elapsed: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            backoff_factor: Duration::from_secs(2),
            backoff_jitter: Duration::from_secs(1),
            max_delay: Duration::from_secs(120),
            max_elapsed: None,
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
    /// Retries at once, for tests.
    #[cfg(test)]
    pub fn without_waits() -> RetryPolicy {
        RetryPolicy {
            backoff_factor: Duration::ZERO,
            backoff_jitter: Duration::ZERO,
            ..RetryPolicy::default()
        }
    }

    /// The wait before retry number `retry` (0 for the first retry); `jitter` in `[0, 1)` is
    /// the share of `backoff_jitter` added.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max_delay);
        }
        let doubling = if retry == 0 {
            0
        } else {
            1u32.checked_shl(retry.min(20)).unwrap_or(u32::MAX)
        };
        let backoff = self.backoff_factor.saturating_mul(doubling);
        let jitter = self.backoff_jitter.mul_f64(jitter.clamp(0.0, 1.0));
        (backoff + jitter).min(self.max_delay)
    }

    /// Whether another attempt may start: `attempts` made so far, `elapsed` since the first one,
    /// and the wait that would come before it.
    pub fn may_retry(&self, attempts: u32, elapsed: Duration, wait: Duration) -> bool {
        attempts < self.max_attempts && self.max_elapsed.is_none_or(|max| elapsed + wait <= max)
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
    fn delays_follow_mlflows_schedule() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (0..7).map(|r| p.delay(r, None, 0.0).as_secs()).collect();
        assert_eq!(waits, [0, 4, 8, 16, 32, 64, 120]);
        assert_eq!(p.delay(40, None, 0.0), Duration::from_secs(120));
        assert_eq!(p.delay(1, None, 0.5), Duration::from_millis(4500));
        let throttled: Duration = (0..p.max_attempts - 1).map(|r| p.delay(r, None, 0.0)).sum();
        assert!(
            throttled > Duration::from_secs(30),
            "30 s of 429 are ridden out"
        );
    }

    #[test]
    fn retry_after_replaces_the_backoff_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay(3, Some(Duration::from_secs(1)), 0.3),
            Duration::from_secs(1)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(86_400)), 0.0),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn bounded_in_attempts_and_optionally_in_time() {
        let mut p = RetryPolicy::default();
        assert!(p.may_retry(7, Duration::from_secs(900), Duration::from_secs(100)));
        assert!(!p.may_retry(8, Duration::ZERO, Duration::ZERO));
        p.max_elapsed = Some(Duration::from_secs(120));
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
