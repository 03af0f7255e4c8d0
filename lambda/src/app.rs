//! One invocation: run the handler, then log the decision, emit metrics and shape the answer.

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::aws::Aws;
use crate::config::Settings;
use crate::error::Error;
use crate::handler::{handle, Decision, Trace};
use crate::telemetry::{emf_line, Outcome};

pub async fn invoke<A: Aws>(
    aws: &A,
    s: &Settings,
    request_id: &str,
    raw: Value,
) -> Result<Value, Error> {
    let start = Instant::now();
    let mut trace = Trace {
        event_id: "-".into(),
        ..Trace::default()
    };
    let result = handle(aws, s, raw, &mut trace).await;
    let instance = trace.instance_id.as_deref().unwrap_or("-");
    let eni = trace.eni_id.as_deref().unwrap_or("-");
    let (outcome, answer) = match result {
        Ok(Decision::Sent(sent)) => {
            tracing::info!(
                event_id = %trace.event_id, request_id, event = trace.kind, instance, eni,
                outcome = "configured", action = sent.action.as_str(), target = %sent.target,
                command_id = %sent.command_id, status = %sent.status, "decision"
            );
            let eni_id = (sent.target != "all").then(|| sent.target.clone());
            let answer = json!({
                "event_id": trace.event_id,
                "instance_id": sent.instance_id,
                "eni_id": eni_id,
                "action": sent.action,
                "target": sent.target,
                "command_id": sent.command_id,
                "status": sent.status,
            });
            (Outcome::Configured, Ok(answer))
        }
        Ok(Decision::Skipped(skip)) => {
            let reason = skip.reason();
            tracing::info!(
                event_id = %trace.event_id, request_id, event = trace.kind, instance, eni,
                outcome = "skipped", skip_code = skip.code(), reason = %reason, "decision"
            );
            let answer = json!({
                "event_id": trace.event_id,
                "instance_id": trace.instance_id,
                "eni_id": trace.eni_id,
                "skipped": reason,
                "skip_code": skip.code(),
            });
            (Outcome::Skipped, Ok(answer))
        }
        Err(e) => {
            tracing::error!(
                event_id = %trace.event_id, request_id, event = trace.kind, instance, eni,
                outcome = "failed", error_type = e.kind(), error = %e, "decision"
            );
            (Outcome::Failed, Err(e))
        }
    };
    println!(
        "{}",
        emf_line(
            &s.metrics_namespace,
            trace.kind,
            outcome,
            start.elapsed(),
            &trace.event_id
        )
    );
    answer
}
