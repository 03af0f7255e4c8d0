//! One invocation: run the handler, then log the decision, emit metrics and shape the answer.

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::aws::{Action, Aws};
use crate::command::Sent;
use crate::config::Settings;
use crate::error::Error;
use crate::handler::{handle, Decision, Trace};
use crate::telemetry::{emf_line, Outcome};

/// The answer for an event that sent (or found) commands. The outcome of each command comes
/// later, as its own status-change event.
#[derive(Debug, Serialize)]
pub(crate) struct SentAnswer<'a> {
    pub event_id: &'a str,
    pub instance_id: &'a str,
    pub action: Action,
    pub commands: Vec<CommandAnswer<'a>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CommandAnswer<'a> {
    pub target: &'a str,
    pub command_id: &'a str,
    /// Found, not sent: the same event (or attempt) was handled before.
    pub already_sent: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct SkippedAnswer<'a> {
    pub event_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub eni_id: Option<&'a str>,
    pub skipped: String,
    pub skip_code: &'static str,
}

fn sent_answer<'a>(event_id: &'a str, sent: &'a [Sent]) -> SentAnswer<'a> {
    SentAnswer {
        event_id,
        instance_id: sent.first().map(|s| s.instance_id.as_str()).unwrap_or("-"),
        action: sent.first().map(|s| s.action).unwrap_or(Action::Apply),
        commands: sent
            .iter()
            .map(|s| CommandAnswer {
                target: &s.target,
                command_id: &s.command_id,
                already_sent: s.already_sent,
            })
            .collect(),
    }
}

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
            let commands: Vec<&str> = sent.iter().map(|c| c.command_id.as_str()).collect();
            let found = sent.iter().filter(|c| c.already_sent).count();
            tracing::info!(
                event_id = %trace.event_id, request_id, event = trace.kind, instance, eni,
                outcome = "configured", action = sent.first().map(|c| c.action.as_str()).unwrap_or("-"),
                command_ids = %commands.join(","), already_sent = found, "decision"
            );
            let answer = serde_json::to_value(sent_answer(&trace.event_id, &sent))
                .expect("plain data serialises");
            (Outcome::Configured, Ok(answer))
        }
        Ok(Decision::Skipped(skip)) => {
            let reason = skip.reason();
            tracing::info!(
                event_id = %trace.event_id, request_id, event = trace.kind, instance, eni,
                outcome = "skipped", skip_code = skip.code(), reason = %reason, "decision"
            );
            let answer = SkippedAnswer {
                event_id: &trace.event_id,
                instance_id: trace.instance_id.as_deref(),
                eni_id: trace.eni_id.as_deref(),
                skipped: reason,
                skip_code: skip.code(),
            };
            let answer = serde_json::to_value(answer).expect("plain data serialises");
            let outcome = if skip.is_unreachable() {
                Outcome::Unreachable
            } else {
                Outcome::Skipped
            };
            (outcome, Ok(answer))
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
