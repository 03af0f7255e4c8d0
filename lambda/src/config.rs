//! Settings read once from the environment at cold start.

use std::time::Duration;

use crate::error::Error;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The symroute SSM document (name or ARN).
    pub document_name: String,
    /// How long to follow a command before answering; zero answers `Pending` right after sending.
    pub wait: Duration,
    pub skip_tag: String,
    /// CloudWatch Logs group for the command's output; none keeps output in SSM only.
    pub log_group: Option<String>,
    /// Bound on waiting for an attachment that is still `attaching`.
    pub attach_wait: Duration,
    /// Bound on retrying `InvalidInstanceId` while the instance's SSM agent registers.
    pub register_wait: Duration,
    /// First delay of every backoff; doubles per attempt.
    pub retry_base: Duration,
    /// Attempts per AWS call (the SDK's own retries for throttling, 5xx and broken connections).
    pub max_attempts: u32,
    pub metrics_namespace: String,
}

impl Settings {
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let non_empty = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let document_name = non_empty("SYMROUTE_DOCUMENT_NAME").ok_or(Error::Config {
            var: "SYMROUTE_DOCUMENT_NAME",
            reason: "is required: set it to the symroute SSM document's name".into(),
        })?;
        let number = |var: &'static str, default: u64, max: u64| -> Result<u64, Error> {
            match non_empty(var) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n <= max => Ok(n),
                    _ => Err(Error::Config {
                        var,
                        reason: format!("must be a whole number from 0 to {max}, not {v:?}"),
                    }),
                },
            }
        };
        Ok(Settings {
            document_name,
            wait: Duration::from_secs(number("SYMROUTE_WAIT_SECONDS", 60, 900)?),
            skip_tag: non_empty("SYMROUTE_SKIP_TAG").unwrap_or_else(|| "symroute:skip".into()),
            log_group: non_empty("SYMROUTE_LOG_GROUP"),
            attach_wait: Duration::from_secs(number("SYMROUTE_ATTACH_WAIT_SECONDS", 20, 300)?),
            register_wait: Duration::from_secs(number("SYMROUTE_REGISTER_WAIT_SECONDS", 60, 600)?),
            retry_base: Duration::from_millis(number("SYMROUTE_RETRY_BASE_MS", 200, 10_000)?),
            max_attempts: number("SYMROUTE_MAX_ATTEMPTS", 5, 20)?.max(1) as u32,
            metrics_namespace: non_empty("SYMROUTE_METRICS_NAMESPACE")
                .unwrap_or_else(|| "symroute".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, Error> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn document_name_is_required() {
        let err = settings(&[]).unwrap_err().to_string();
        assert!(err.contains("SYMROUTE_DOCUMENT_NAME"), "{err}");
        assert!(settings(&[("SYMROUTE_DOCUMENT_NAME", "  ")]).is_err());
    }

    #[test]
    fn defaults_follow_the_contract() {
        let s = settings(&[("SYMROUTE_DOCUMENT_NAME", "symroute")]).unwrap();
        assert_eq!(s.skip_tag, "symroute:skip");
        assert_eq!(s.wait, Duration::from_secs(60));
        assert_eq!(s.log_group, None);
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let err = settings(&[
            ("SYMROUTE_DOCUMENT_NAME", "d"),
            ("SYMROUTE_WAIT_SECONDS", "soon"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("SYMROUTE_WAIT_SECONDS") && err.contains("soon"),
            "{err}"
        );
        let zero = settings(&[
            ("SYMROUTE_DOCUMENT_NAME", "d"),
            ("SYMROUTE_WAIT_SECONDS", "0"),
        ]);
        assert_eq!(zero.unwrap().wait, Duration::ZERO);
    }
}
