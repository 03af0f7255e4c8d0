//! Settings read once from the environment at cold start.

use std::time::Duration;

use crate::decide::OwnerMarker;
use crate::error::Error;

/// Amazon VPC CNI (tag and description) and Cilium's ENI mode: tools that route their ENIs
/// themselves. Requester-managed ENIs (ECS tasks, Lambda, ...) are skipped whatever this says.
pub(crate) const DEFAULT_OWNER_MARKERS: &str =
    "tag:node.k8s.amazonaws.com/instance_id,description:aws-K8S-,description:Cilium-CNI (";

/// The SSM document's `connmark` parameter, sent with every `apply` (the stack's `Connmark`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Connmark {
    /// Each ENI keeps the mode it has (the document's default).
    #[default]
    Keep,
    On,
    Off,
}

impl Connmark {
    pub fn as_str(self) -> &'static str {
        match self {
            Connmark::Keep => "keep",
            Connmark::On => "on",
            Connmark::Off => "off",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The symroute SSM document (name or ARN).
    pub document_name: String,
    pub skip_tag: String,
    /// ENIs another tool owns (tag keys, description prefixes).
    pub owner_markers: Vec<OwnerMarker>,
    /// CloudWatch Logs group for the command's output; none keeps output in SSM only.
    pub log_group: Option<String>,
    /// SendCommand's TimeoutSeconds (SSM's own bounds: 30 to 2,592,000).
    pub command_timeout: Duration,
    /// Bound on waiting for an attachment that is still `attaching`.
    pub attach_wait: Duration,
    /// An instance launched this recently that Systems Manager does not know yet is "not
    /// registered yet" (an error answer, so Lambda invokes again later), not "unmanaged".
    pub register_grace: Duration,
    /// How often a command is sent again after the agent answered 3 (the ENI did not appear).
    pub max_resends: u32,
    /// First delay of every backoff; doubles per attempt.
    pub retry_base: Duration,
    /// Attempts per AWS call (the SDK's own retries for throttling, 5xx and broken connections;
    /// SendCommand is never retried blindly, see command.rs).
    pub max_attempts: u32,
    pub metrics_namespace: String,
    /// The document's `onHostTrigger` for `apply` commands: leave the on-host trigger behind.
    pub on_host_trigger: bool,
    /// The document's `connmark` for `apply` commands.
    pub connmark: Connmark,
}

impl Settings {
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let non_empty = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let document_name = non_empty("SYMROUTE_DOCUMENT_NAME").ok_or(Error::Config {
            var: "SYMROUTE_DOCUMENT_NAME",
            reason: "is required: set it to the symroute SSM document's name".into(),
        })?;
        let number = |var: &'static str, default: u64, min: u64, max: u64| -> Result<u64, Error> {
            match non_empty(var) {
                None => Ok(default),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(Error::Config {
                        var,
                        reason: format!("must be a whole number from {min} to {max}, not {v:?}"),
                    }),
                },
            }
        };
        let markers = non_empty("SYMROUTE_OWNER_MARKERS")
            .unwrap_or_else(|| DEFAULT_OWNER_MARKERS.to_string());
        let owner_markers = OwnerMarker::parse_list(&markers).map_err(|reason| Error::Config {
            var: "SYMROUTE_OWNER_MARKERS",
            reason,
        })?;
        // The stack passes its parameters' literal values; anything else is a deployment mistake
        // that must not silently send the document's default instead.
        let on_host_trigger = match non_empty("SYMROUTE_ON_HOST_TRIGGER").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => {
                return Err(Error::Config {
                    var: "SYMROUTE_ON_HOST_TRIGGER",
                    reason: format!("must be true or false, not {v:?}"),
                })
            }
        };
        let connmark = match non_empty("SYMROUTE_CONNMARK").as_deref() {
            None | Some("keep") => Connmark::Keep,
            Some("on") => Connmark::On,
            Some("off") => Connmark::Off,
            Some(v) => {
                return Err(Error::Config {
                    var: "SYMROUTE_CONNMARK",
                    reason: format!("must be keep, on or off, not {v:?}"),
                })
            }
        };
        Ok(Settings {
            document_name,
            skip_tag: non_empty("SYMROUTE_SKIP_TAG").unwrap_or_else(|| "symroute:skip".into()),
            owner_markers,
            log_group: non_empty("SYMROUTE_LOG_GROUP"),
            command_timeout: Duration::from_secs(number(
                "SYMROUTE_COMMAND_TIMEOUT_SECONDS",
                600,
                30,
                2_592_000,
            )?),
            attach_wait: Duration::from_secs(number("SYMROUTE_ATTACH_WAIT_SECONDS", 20, 0, 300)?),
            register_grace: Duration::from_secs(number(
                "SYMROUTE_REGISTER_GRACE_SECONDS",
                600,
                0,
                3600,
            )?),
            max_resends: number("SYMROUTE_MAX_RESENDS", 3, 0, 10)? as u32,
            retry_base: Duration::from_millis(number("SYMROUTE_RETRY_BASE_MS", 200, 0, 10_000)?),
            max_attempts: number("SYMROUTE_MAX_ATTEMPTS", 5, 1, 20)? as u32,
            metrics_namespace: non_empty("SYMROUTE_METRICS_NAMESPACE")
                .unwrap_or_else(|| "symroute".into()),
            on_host_trigger,
            connmark,
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
        assert_eq!(s.command_timeout, Duration::from_secs(600));
        assert_eq!(s.log_group, None);
        assert_eq!(s.owner_markers.len(), 3);
        assert_eq!(s.max_resends, 3);
        assert!(s.on_host_trigger);
        assert_eq!(s.connmark, Connmark::Keep);
    }

    #[test]
    fn the_stacks_trigger_and_connmark_choices_are_read_and_checked() {
        let s = settings(&[
            ("SYMROUTE_DOCUMENT_NAME", "d"),
            ("SYMROUTE_ON_HOST_TRIGGER", "false"),
            ("SYMROUTE_CONNMARK", "on"),
        ])
        .unwrap();
        assert!(!s.on_host_trigger);
        assert_eq!(s.connmark, Connmark::On);
        for (var, value) in [
            ("SYMROUTE_ON_HOST_TRIGGER", "no"),
            ("SYMROUTE_CONNMARK", "ON"),
        ] {
            let err = settings(&[("SYMROUTE_DOCUMENT_NAME", "d"), (var, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(var) && err.contains(value), "{err}");
        }
    }

    #[test]
    fn bad_numbers_and_markers_name_the_variable() {
        let err = settings(&[
            ("SYMROUTE_DOCUMENT_NAME", "d"),
            ("SYMROUTE_COMMAND_TIMEOUT_SECONDS", "soon"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("SYMROUTE_COMMAND_TIMEOUT_SECONDS") && err.contains("soon"),
            "{err}"
        );
        // SSM refuses a TimeoutSeconds under 30: so does the setting.
        assert!(settings(&[
            ("SYMROUTE_DOCUMENT_NAME", "d"),
            ("SYMROUTE_COMMAND_TIMEOUT_SECONDS", "29"),
        ])
        .is_err());
        let err = settings(&[
            ("SYMROUTE_DOCUMENT_NAME", "d"),
            ("SYMROUTE_OWNER_MARKERS", "label:x"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("SYMROUTE_OWNER_MARKERS"), "{err}");
    }
}
