//! JSON logs through `tracing`, and metrics as CloudWatch Embedded Metric Format lines on stdout
//! (CloudWatch Logs turns those into metrics without any API call).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tracing::Level;

/// Honours Lambda's own log-level setting (`AWS_LAMBDA_LOG_LEVEL`), INFO otherwise.
pub fn init_logging() {
    let level = match std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .unwrap_or_default()
        .to_ascii_uppercase()
        .as_str()
    {
        "TRACE" => Level::TRACE,
        "DEBUG" => Level::DEBUG,
        "WARN" => Level::WARN,
        "ERROR" | "FATAL" => Level::ERROR,
        _ => Level::INFO,
    };
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_max_level(level)
        .with_writer(std::io::stdout)
        .init();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Configured,
    Skipped,
    /// Skipped because Systems Manager cannot reach the instance (unmanaged, offline, agent too
    /// old): counted as Skipped and as Unreachable, which is worth an alarm of its own.
    Unreachable,
    Failed,
}

/// One EMF document per event: a count for its outcome and its latency, by event kind.
pub(crate) fn emf_line(
    namespace: &str,
    kind: &str,
    outcome: Outcome,
    latency: Duration,
    event_id: &str,
) -> String {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let count = |o: Outcome| u8::from(o == outcome);
    let skipped = u8::from(matches!(outcome, Outcome::Skipped | Outcome::Unreachable));
    json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Event"]],
                "Metrics": [
                    {"Name": "Configured", "Unit": "Count"},
                    {"Name": "Skipped", "Unit": "Count"},
                    {"Name": "Unreachable", "Unit": "Count"},
                    {"Name": "Failed", "Unit": "Count"},
                    {"Name": "Latency", "Unit": "Milliseconds"}
                ]
            }]
        },
        "Event": kind,
        "Configured": count(Outcome::Configured),
        "Skipped": skipped,
        "Unreachable": count(Outcome::Unreachable),
        "Failed": count(Outcome::Failed),
        "Latency": latency.as_secs_f64() * 1000.0,
        "event_id": event_id,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_line_declares_every_metric_it_carries() {
        let line = emf_line(
            "symroute",
            "attach",
            Outcome::Skipped,
            Duration::from_millis(12),
            "ev-1",
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let declared = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        for m in declared {
            let name = m["Name"].as_str().unwrap();
            assert!(v[name].is_number(), "metric {name} has no value");
        }
        assert_eq!(v["Skipped"], 1);
        assert_eq!(v["Unreachable"], 0);
        assert_eq!(v["Configured"], 0);
        assert_eq!(v["Event"], "attach");
        assert_eq!(v["Latency"], 12.0);
        let line = emf_line(
            "symroute",
            "attach",
            Outcome::Unreachable,
            Duration::ZERO,
            "ev-2",
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (v["Skipped"].clone(), v["Unreachable"].clone()),
            (1.into(), 1.into())
        );
    }
}
