//! Sending an SSM command exactly once per event, and reading how it ended.
//!
//! SendCommand has no idempotency token, EventBridge and Lambda deliver at least once, and an
//! answer can be lost after SSM acted on the request. So every command carries a comment that
//! names the event, the ENI and the attempt; before sending, and before sending again after an
//! answer that leaves it open whether SSM acted, the function looks for a command with that
//! comment (ListCommands) and takes it instead of sending a second one.

use std::time::Duration;

use aws_sdk_ssm::types::CommandInvocationStatus;
use tokio::time::sleep;

use crate::aws::{Action, Aws, CommandRequest, Invocation};
use crate::config::Settings;
use crate::error::{clip, Error};

/// The document's step that runs the agent (ssm-documents/symroute.yaml). GetCommandInvocation
/// must name it: the document has more than one step.
pub(crate) const RUN_STEP: &str = "runAgent";
/// The step that downloads the agent: read when the run step did not get to run.
pub(crate) const DOWNLOAD_STEP: &str = "downloadAgent";
/// The agent's exit code for "the ENI did not appear (IMDS or kernel) within --wait".
pub(crate) const EXIT_NOT_THERE_YET: i32 = 3;

const MAX_DELAY: Duration = Duration::from_secs(5);
const REPORT_LIMIT: usize = 2000;

/// A command this function sent for an event (or found already sent for it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Sent {
    pub instance_id: String,
    pub action: Action,
    pub target: String,
    pub command_id: String,
    /// Found, not sent: the event (or this attempt) was handled before.
    pub already_sent: bool,
}

/// What a command's comment says: `symroute <event id> <target> #<attempt>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Comment {
    pub event_id: String,
    pub target: String,
    pub attempt: u32,
}

impl Comment {
    pub fn new(event_id: &str, target: &str) -> Self {
        Comment {
            // SSM caps comments at 100 characters: an event id longer than EventBridge's UUIDs
            // is cut (the target and attempt still make the comment unique for this event).
            event_id: event_id
                .chars()
                .filter(|c| !c.is_whitespace())
                .take(48)
                .collect(),
            target: target.to_string(),
            attempt: 1,
        }
    }

    pub fn next(&self) -> Self {
        Comment {
            attempt: self.attempt + 1,
            ..self.clone()
        }
    }

    pub fn render(&self) -> String {
        format!(
            "symroute {} {} #{}",
            self.event_id, self.target, self.attempt
        )
    }

    pub fn parse(text: &str) -> Option<Comment> {
        let mut words = text.split(' ');
        let (Some("symroute"), Some(event_id), Some(target), Some(attempt), None) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            return None;
        };
        Some(Comment {
            event_id: event_id.into(),
            target: target.into(),
            attempt: attempt.strip_prefix('#')?.parse().ok()?,
        })
    }
}

fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.min(16)).min(MAX_DELAY)
}

/// Sends the command for this comment unless one was sent already.
pub async fn send_once<A: Aws>(
    aws: &A,
    s: &Settings,
    instance_id: &str,
    action: Action,
    target: &str,
    comment: &Comment,
) -> Result<Sent, Error> {
    let req = CommandRequest {
        document_name: s.document_name.clone(),
        instance_id: instance_id.to_string(),
        action,
        target: target.to_string(),
        comment: comment.render(),
        log_group: s.log_group.clone(),
        timeout_seconds: s.command_timeout.as_secs().min(i32::MAX as u64) as i32,
        on_host_trigger: s.on_host_trigger,
        connmark: s.connmark,
    };
    let sent = |command_id: String, already_sent: bool| Sent {
        instance_id: instance_id.to_string(),
        action,
        target: target.to_string(),
        command_id,
        already_sent,
    };
    let mut look_first = true;
    let mut attempt = 0;
    loop {
        if look_first {
            if let Some(id) = aws
                .find_command(&req.document_name, instance_id, &req.comment)
                .await?
            {
                return Ok(sent(id, true));
            }
        }
        match aws.send_command(&req).await {
            Ok(id) => return Ok(sent(id, false)),
            // Throttling proves nothing was sent: send again without looking.
            Err(e) if e.is_throttling() && attempt + 1 < s.max_attempts => look_first = false,
            // SSM may have acted on it: look before sending again.
            Err(e) if e.is_uncertain() && attempt + 1 < s.max_attempts => look_first = true,
            Err(e) => return Err(e),
        }
        sleep(backoff(s.retry_base, attempt)).await;
        attempt += 1;
    }
}

/// How a finished command ended, from its run step's invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Exit 3: the ENI was not there yet; worth sending again.
    NotThereYet,
    /// Anything else: the cause, for people.
    Failed(String),
}

pub(crate) fn classify(run: &Invocation) -> Outcome {
    use CommandInvocationStatus as S;
    match (&run.status, run.response_code) {
        (Some(S::Success), 0) => Outcome::Succeeded,
        (_, EXIT_NOT_THERE_YET) => Outcome::NotThereYet,
        (_, 1) => Outcome::Failed("the agent failed and left the host as it was (exit 1)".into()),
        (_, 2) => {
            Outcome::Failed("the agent refused its input (exit 2: bad usage or input)".into())
        }
        (_, 4) => Outcome::Failed(
            "the routing works but could not be persisted: it will not survive a reboot (exit 4; \
             the agent report names the cause)"
                .into(),
        ),
        (Some(S::TimedOut), _) => Outcome::Failed(format!(
            "the command timed out ({}): the instance did not run it in time",
            run.details
        )),
        (Some(S::Cancelled), _) => Outcome::Failed("the command was cancelled".into()),
        (_, code) => Outcome::Failed(format!(
            "the run step ended {} ({}) with exit code {code}",
            run.status_word(),
            run.details
        )),
    }
}

/// The agent's JSON report and its errors, cut to a size an answer and a log line can carry.
pub fn report(run: &Invocation, download: Option<&Invocation>) -> String {
    let mut out = clip(run.stdout.trim(), REPORT_LIMIT);
    if !run.stderr.trim().is_empty() {
        out.push_str(" | stderr: ");
        out.push_str(&clip(run.stderr.trim(), REPORT_LIMIT));
    }
    if let Some(d) = download.filter(|d| d.status != Some(CommandInvocationStatus::Success)) {
        out.push_str(&format!(
            " | {DOWNLOAD_STEP} {}: {}",
            d.status_word(),
            clip(d.stderr.trim(), REPORT_LIMIT)
        ));
    }
    if out.is_empty() {
        out.push_str("(no output)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_round_trips_and_fits_ssm() {
        let c = Comment::new(
            "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "eni-0a9c4b60624c0e41d",
        );
        assert_eq!(Comment::parse(&c.render()), Some(c.clone()));
        assert_eq!(Comment::parse(&c.next().render()).unwrap().attempt, 2);
        let long = Comment::new(&"x".repeat(500), "eni-0a9c4b60624c0e41d").next();
        assert!(long.render().len() <= 100, "{}", long.render());
        assert_eq!(Comment::parse("symroute by hand"), None);
        assert_eq!(Comment::parse("symroute a b #x"), None);
        assert_eq!(Comment::parse("other a b #1"), None);
    }

    #[test]
    fn the_step_names_are_the_documents() {
        let doc = include_str!("../../ssm-documents/symroute.yaml");
        for step in [RUN_STEP, DOWNLOAD_STEP] {
            assert!(doc.contains(&format!("name: {step}\n")), "{step}");
        }
    }

    fn inv(status: &str, code: i32) -> Invocation {
        Invocation {
            status: Some(status.into()),
            details: status.into(),
            response_code: code,
            ..Invocation::default()
        }
    }

    #[test]
    fn exit_codes_are_classified() {
        assert_eq!(classify(&inv("Success", 0)), Outcome::Succeeded);
        assert_eq!(classify(&inv("Failed", 3)), Outcome::NotThereYet);
        for (status, code, says) in [
            ("Failed", 1, "exit 1"),
            ("Failed", 2, "exit 2"),
            ("Failed", 4, "not survive a reboot"),
            ("TimedOut", -1, "timed out"),
            ("Cancelled", -1, "cancelled"),
            ("Failed", -1, "exit code -1"),
        ] {
            match classify(&inv(status, code)) {
                Outcome::Failed(why) => assert!(why.contains(says), "{why}"),
                other => panic!("{status} {code}: {other:?}"),
            }
        }
    }
}
