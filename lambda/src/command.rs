//! Sending the SSM command and following it to a final status, with bounded retries.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use crate::aws::{Action, Aws, CommandRequest, Invocation};
use crate::config::Settings;
use crate::error::{clip, Error};

/// What was sent and how it ended (or `Pending` when not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub instance_id: String,
    pub action: Action,
    pub target: String,
    pub command_id: String,
    pub status: String,
}

const MAX_DELAY: Duration = Duration::from_secs(5);
const FIRST_POLL: Duration = Duration::from_millis(250);
const MAX_POLL: Duration = Duration::from_secs(2);
const OUTPUT_LIMIT: usize = 2000;

fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.min(16)).min(MAX_DELAY)
}

pub async fn run<A: Aws>(
    aws: &A,
    s: &Settings,
    instance_id: &str,
    action: Action,
    target: &str,
    event_id: &str,
) -> Result<Sent, Error> {
    let req = CommandRequest {
        document_name: s.document_name.clone(),
        instance_id: instance_id.to_string(),
        action,
        target: target.to_string(),
        // SSM caps comments at 100 characters.
        comment: format!("symroute {event_id}").chars().take(100).collect(),
        log_group: s.log_group.clone(),
    };
    let command_id = send(aws, s, &req).await?;
    let mut sent = Sent {
        instance_id: instance_id.to_string(),
        action,
        target: target.to_string(),
        command_id,
        status: "Pending".into(),
    };
    if !s.wait.is_zero() {
        let inv = follow(aws, s, &sent.command_id, instance_id).await?;
        sent.status = inv.status;
    }
    Ok(sent)
}

/// SendCommand is not idempotent, so only answers that prove nothing was sent are retried here:
/// `InvalidInstanceId` while the agent registers (bounded by time) and throttling (by attempts).
async fn send<A: Aws>(aws: &A, s: &Settings, req: &CommandRequest) -> Result<String, Error> {
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        let delay = backoff(s.retry_base, attempt);
        match aws.send_command(req).await {
            Ok(id) => return Ok(id),
            Err(e) if e.is_invalid_instance() && start.elapsed() + delay <= s.register_wait => {}
            Err(e) if e.is_throttling() && attempt + 1 < s.max_attempts => {}
            Err(e) => return Err(e),
        }
        sleep(delay).await;
        attempt += 1;
    }
}

async fn follow<A: Aws>(
    aws: &A,
    s: &Settings,
    command_id: &str,
    instance_id: &str,
) -> Result<Invocation, Error> {
    let deadline = Instant::now() + s.wait;
    let mut delay = Duration::ZERO;
    let mut last: Option<Invocation> = None;
    loop {
        sleep(delay).await;
        match aws.get_invocation(command_id, instance_id).await {
            Ok(inv) if inv.is_terminal() => {
                if inv.status == "Success" {
                    return Ok(inv);
                }
                return Err(Error::CommandFailed {
                    command_id: command_id.into(),
                    instance_id: instance_id.into(),
                    output: output(&inv),
                    status: inv.status,
                    details: inv.details,
                });
            }
            Ok(inv) => last = Some(inv),
            // Right after sending, SSM has no invocation yet; keep looking.
            Err(e) if e.is_invocation_missing() || e.is_throttling() => {}
            Err(e) => {
                return Err(Error::Poll {
                    command_id: command_id.into(),
                    instance_id: instance_id.into(),
                    cause: Box::new(e),
                })
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::CommandTimeout {
                command_id: command_id.into(),
                instance_id: instance_id.into(),
                status: last
                    .as_ref()
                    .map(|i| i.status.clone())
                    .unwrap_or_else(|| "not visible yet (InvocationDoesNotExist)".into()),
                secs: s.wait.as_secs(),
                output: last.as_ref().map(output).unwrap_or_default(),
            });
        }
        delay = if delay.is_zero() {
            FIRST_POLL
        } else {
            (delay * 2).min(MAX_POLL)
        }
        .min(deadline - now);
    }
}

fn output(inv: &Invocation) -> String {
    let mut out = clip(inv.stdout.trim(), OUTPUT_LIMIT);
    if !inv.stderr.trim().is_empty() {
        out.push_str(" | stderr: ");
        out.push_str(&clip(inv.stderr.trim(), OUTPUT_LIMIT));
    }
    if out.is_empty() {
        out.push_str("(no output)");
    }
    out
}
