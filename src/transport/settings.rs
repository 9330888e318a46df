//! The bounds of every request (timeout, retries, backoff, the hosts it may reach), read from
//! the environment variables MLflow users know, so that a copy is tuned as MLflow is.

use super::retry::RetryPolicy;
use super::{Caller, HostPolicy};
use crate::api::CopyError;
use std::time::Duration;

/// How long one request may wait (connect, first byte, between bytes): seconds, as for MLflow.
pub const TIMEOUT_VAR: &str = "MLFLOW_HTTP_REQUEST_TIMEOUT";
/// How often a failed request is retried, as for MLflow.
pub const MAX_RETRIES_VAR: &str = "MLFLOW_HTTP_REQUEST_MAX_RETRIES";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Seconds of the backoff's base, doubled each retry, as for MLflow.
pub const BACKOFF_FACTOR_VAR: &str = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR";
/// Seconds of random jitter at most added to each backoff, as for MLflow.
pub const BACKOFF_JITTER_VAR: &str = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER";
/// MLflow caps its own retries at 10 too.
const MAX_RETRIES_LIMIT: u32 = 10;
/// And its backoff factor at 120 (`_MLFLOW_HTTP_REQUEST_MAX_BACKOFF_FACTOR_LIMIT`).
const MAX_BACKOFF_FACTOR: f64 = 120.0;

/// The bounds of every request, from the environment variables MLflow users know.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub timeout: Duration,
    pub policy: RetryPolicy,
    /// The hosts requests may go to; every request is checked, not only the servers a copy
    /// names.
    pub hosts: HostPolicy,
}

impl Settings {
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        caller: Caller,
    ) -> Result<Settings, CopyError> {
        let number = |name: &str| -> Result<Option<f64>, CopyError> {
            let Some(raw) = env(name).filter(|v| !v.trim().is_empty()) else {
                return Ok(None);
            };
            match raw.trim().parse::<f64>() {
                Ok(n) if n.is_finite() && n >= 0.0 => Ok(Some(n)),
                _ => Err(CopyError::bad_input(format!(
                    "{name}={raw:?} is not a number of the right kind"
                ))),
            }
        };
        let timeout = match number(TIMEOUT_VAR)? {
            Some(secs) if secs > 0.0 => Duration::from_secs_f64(secs),
            Some(_) => {
                return Err(CopyError::bad_input(format!(
                    "{TIMEOUT_VAR} must be above 0"
                )))
            }
            None => DEFAULT_TIMEOUT,
        };
        let mut policy = RetryPolicy::default();
        if let Some(retries) = number(MAX_RETRIES_VAR)? {
            if retries.fract() != 0.0 || retries > MAX_RETRIES_LIMIT as f64 {
                return Err(CopyError::bad_input(format!(
                    "{MAX_RETRIES_VAR} must be a whole number from 0 to {MAX_RETRIES_LIMIT}"
                )));
            }
            policy.max_attempts = retries as u32 + 1;
        }
        if let Some(factor) = number(BACKOFF_FACTOR_VAR)? {
            if factor > MAX_BACKOFF_FACTOR {
                return Err(CopyError::bad_input(format!(
                    "{BACKOFF_FACTOR_VAR} must be at most {MAX_BACKOFF_FACTOR}"
                )));
            }
            policy.backoff_factor = Duration::from_secs_f64(factor);
        }
        if let Some(jitter) = number(BACKOFF_JITTER_VAR)? {
            policy.backoff_jitter = Duration::from_secs_f64(jitter.min(MAX_BACKOFF_FACTOR));
        }
        Ok(Settings {
            timeout,
            policy,
            hosts: HostPolicy::from_env(env, caller),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::fixed_env;

    #[test]
    fn settings_come_from_mlflow_variables() {
        let env = fixed_env;
        let default = Settings::from_env(&env(&[]), Caller::User).unwrap();
        assert_eq!(default.timeout, Duration::from_secs(120));
        assert_eq!(default.policy.max_attempts, 8);
        assert_eq!(default.policy.backoff_factor, Duration::from_secs(2));
        assert_eq!(default.hosts, HostPolicy::any());
        let set = Settings::from_env(
            &env(&[
                ("MLFLOW_HTTP_REQUEST_TIMEOUT", "2.5"),
                ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"),
                ("MLFLOW_COPY_ALLOWED_HOSTS", "h:1"),
                ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0.5"),
                ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0"),
            ]),
            Caller::User,
        )
        .unwrap();
        assert_eq!(set.timeout, Duration::from_millis(2500));
        assert_eq!(set.policy.max_attempts, 2);
        assert!(set.hosts.listed().is_some());
        assert_eq!(set.policy.backoff_factor, Duration::from_millis(500));
        assert_eq!(set.policy.backoff_jitter, Duration::ZERO);
        for bad in [
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "soon"),
            ("MLFLOW_HTTP_REQUEST_TIMEOUT", "0"),
        ] {
            let err = Settings::from_env(
                &move |k: &str| (k == bad.0).then(|| bad.1.to_string()),
                Caller::User,
            );
            assert!(err
                .unwrap_err()
                .message
                .contains("MLFLOW_HTTP_REQUEST_TIMEOUT"));
        }
        let err = Settings::from_env(
            &env(&[("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "11")]),
            Caller::User,
        );
        assert!(err.unwrap_err().message.contains("from 0 to 10"));
    }
}
