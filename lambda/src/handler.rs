//! From a parsed event to a decision: resolve the ENI and instance, skip with a reason, or tag and
//! send the command; and, when a command has ended, read how (send again, or fail loudly).
//!
//! No path waits on a command: it sends and answers. The outcome comes back as an "EC2 Command
//! Invocation Status-change Notification" (a rule in the stack), handled here like any event.

use std::time::{Duration, SystemTime};

use aws_sdk_ec2::types::{AttachmentStatus, InstanceStateName};
use serde_json::Value;
use tokio::time::{sleep, Instant};

use crate::aws::{Action, Attachment, Aws, Eni};
use crate::command::{self, classify, Comment, Outcome, Sent, DOWNLOAD_STEP, RUN_STEP};
use crate::config::Settings;
use crate::decide::{check_eni, check_instance, check_managed, is_primary, Skip};
use crate::error::{CommandFailure, Error};
use crate::event::{self, Trigger};

/// Written at attach time, one per attachment: `symroute:attachment:<attachment id>` =
/// `<instance id>`. A detach record names only the attachment; this finds the ENI and the
/// instance it left, even after the ENI moved on to another instance (whose attachment has a
/// tag of its own), in whichever order the two events arrive.
pub(crate) const TAG_ATTACHMENT_PREFIX: &str = "symroute:attachment:";

const ATTACH_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Commands sent (or found already sent) for this event, one per ENI.
    Sent(Vec<Sent>),
    Skipped(Skip),
}

/// What is known about the event so far, for the decision log line even when handling fails.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trace {
    pub event_id: String,
    pub kind: &'static str,
    pub instance_id: Option<String>,
    pub eni_id: Option<String>,
}

pub fn attachment_tag(attachment_id: &str) -> String {
    format!("{TAG_ATTACHMENT_PREFIX}{attachment_id}")
}

pub async fn handle<A: Aws>(
    aws: &A,
    s: &Settings,
    raw: Value,
    trace: &mut Trace,
) -> Result<Decision, Error> {
    trace.kind = "invalid";
    let event = event::parse(raw)?;
    trace.event_id = event.id.clone();
    match event.trigger {
        Trigger::FailedCall {
            event_name,
            code,
            message,
        } => {
            trace.kind = if event_name.starts_with("Attach") {
                "attach"
            } else if event_name.starts_with("Detach") {
                "detach"
            } else {
                "addresses"
            };
            Ok(Decision::Skipped(Skip::FailedCall {
                event_name,
                code,
                message,
            }))
        }
        Trigger::Attach {
            eni_id,
            instance_id,
        } => {
            trace.kind = "attach";
            trace.eni_id = Some(eni_id.clone());
            trace.instance_id = Some(instance_id.clone());
            attach(aws, s, &event.id, &eni_id, &instance_id).await
        }
        Trigger::Detach { attachment_id } => {
            trace.kind = "detach";
            detach(aws, s, &event.id, &attachment_id, trace).await
        }
        Trigger::AddressChange {
            eni_id,
            event_name: _,
        } => {
            trace.kind = "addresses";
            trace.eni_id = Some(eni_id.clone());
            addresses(aws, s, &event.id, &eni_id, trace).await
        }
        Trigger::InstanceState { instance_id, state } => {
            trace.kind = "instance-state";
            trace.instance_id = Some(instance_id.clone());
            if InstanceStateName::from(state.as_str()) != InstanceStateName::Running {
                return Ok(Decision::Skipped(Skip::NotRunning(state)));
            }
            instance_running(aws, s, &event.id, &instance_id, trace).await
        }
        Trigger::CommandStatus {
            command_id,
            instance_id,
            document,
            status: _,
        } => {
            trace.kind = "command";
            trace.instance_id = Some(instance_id.clone());
            command_ended(aws, s, &command_id, &instance_id, &document, trace).await
        }
    }
}

/// Why no command may be sent to the instance now (`None`: it can take one).
async fn not_ready<A: Aws>(
    aws: &A,
    s: &Settings,
    instance_id: &str,
) -> Result<Option<Skip>, Error> {
    let Some(instance) = aws.describe_instance(instance_id).await? else {
        return Ok(Some(Skip::InstanceGone(instance_id.into())));
    };
    if let Some(skip) = check_instance(&instance, &s.skip_tag) {
        return Ok(Some(skip));
    }
    match aws.managed_instance(instance_id).await? {
        Some(m) => Ok(check_managed(instance_id, &m)),
        None => {
            // Just launched: the agent registers within a minute or two. Answer an error so
            // Lambda invokes again later, instead of holding this execution to wait.
            let age = instance
                .launch_time
                .and_then(|t| SystemTime::now().duration_since(t).ok());
            match age {
                Some(age) if age < s.register_grace => Err(Error::NotRegisteredYet {
                    instance: instance_id.into(),
                    secs: age.as_secs(),
                }),
                _ => Ok(Some(Skip::NotManaged(instance_id.into()))),
            }
        }
    }
}

async fn attach<A: Aws>(
    aws: &A,
    s: &Settings,
    event_id: &str,
    eni_id: &str,
    instance_id: &str,
) -> Result<Decision, Error> {
    let Some(eni) = settled_eni(aws, s, eni_id).await? else {
        return Ok(Decision::Skipped(Skip::EniGone(eni_id.into())));
    };
    let attachment = match &eni.attachment {
        Some(a) if a.instance_id == instance_id && a.status == AttachmentStatus::Attached => {
            a.id.clone()
        }
        other => return Ok(not_attached(eni_id, other.as_ref())),
    };
    send_apply(aws, s, event_id, &eni, instance_id, Some(&attachment)).await
}

/// The skip for an ENI that is not attached where the event says, with what it is now.
fn not_attached(eni_id: &str, now: Option<&Attachment>) -> Decision {
    let now = match now {
        Some(a) => format!("{} {} to {}", a.id, a.status, a.instance_id),
        None => "not attached".into(),
    };
    Decision::Skipped(Skip::NotAttached {
        eni: eni_id.into(),
        now,
    })
}

/// The attach and address paths' end: the ENI's and the instance's skips, then `apply` for
/// that ENI, sent once per event. `tag_attachment`: the attachment to record first (attach
/// only), so that its detach can be traced back.
async fn send_apply<A: Aws>(
    aws: &A,
    s: &Settings,
    event_id: &str,
    eni: &Eni,
    instance_id: &str,
    tag_attachment: Option<&str>,
) -> Result<Decision, Error> {
    if let Some(skip) = check_eni(eni, &s.skip_tag, &s.owner_markers) {
        return Ok(Decision::Skipped(skip));
    }
    if let Some(skip) = not_ready(aws, s, instance_id).await? {
        return Ok(Decision::Skipped(skip));
    }
    if let Some(attachment) = tag_attachment {
        let tag = attachment_tag(attachment);
        aws.tag_eni(&eni.id, &[(tag.as_str(), instance_id)]).await?;
    }
    let comment = Comment::new(event_id, &eni.id);
    let sent = command::send_once(aws, s, instance_id, Action::Apply, &eni.id, &comment).await?;
    Ok(Decision::Sent(vec![sent]))
}

/// Addresses or prefixes of an ENI changed: if it is attached (as a secondary, to a Linux
/// instance that can take a command, with no skip tag), apply that ENI again, as on attach. An
/// unattached ENI has nothing on any host to change; its next attach configures it whole.
async fn addresses<A: Aws>(
    aws: &A,
    s: &Settings,
    event_id: &str,
    eni_id: &str,
    trace: &mut Trace,
) -> Result<Decision, Error> {
    let Some(eni) = aws.describe_eni(eni_id).await? else {
        return Ok(Decision::Skipped(Skip::EniGone(eni_id.into())));
    };
    let instance_id = match &eni.attachment {
        Some(a) if a.status == AttachmentStatus::Attached => a.instance_id.clone(),
        other => return Ok(not_attached(eni_id, other.as_ref())),
    };
    trace.instance_id = Some(instance_id.clone());
    send_apply(aws, s, event_id, &eni, &instance_id, None).await
}

/// The attach API returns before the attachment is complete: wait, bounded, for `attaching` to end.
async fn settled_eni<A: Aws>(aws: &A, s: &Settings, eni_id: &str) -> Result<Option<Eni>, Error> {
    let deadline = Instant::now() + s.attach_wait;
    loop {
        let eni = aws.describe_eni(eni_id).await?;
        let attaching = eni
            .as_ref()
            .and_then(|e| e.attachment.as_ref())
            .is_some_and(|a| a.status == AttachmentStatus::Attaching);
        if !attaching {
            return Ok(eni);
        }
        if Instant::now() >= deadline {
            return Err(Error::StillAttaching {
                eni: eni_id.into(),
                secs: s.attach_wait.as_secs(),
            });
        }
        sleep(ATTACH_POLL).await;
    }
}

async fn detach<A: Aws>(
    aws: &A,
    s: &Settings,
    event_id: &str,
    attachment_id: &str,
    trace: &mut Trace,
) -> Result<Decision, Error> {
    let tag = attachment_tag(attachment_id);
    let found = aws.enis_with_tag_key(&tag).await?;
    let Some((eni, instance_id)) = found
        .into_iter()
        .find_map(|e| e.tags.get(&tag).cloned().map(|i| (e, i)))
    else {
        return Ok(Decision::Skipped(Skip::UnknownAttachment(
            attachment_id.into(),
        )));
    };
    trace.eni_id = Some(eni.id.clone());
    trace.instance_id = Some(instance_id.clone());
    let decision = detach_decision(aws, s, event_id, &eni, &instance_id, attachment_id).await?;
    // The attachment is handled: its tag has told its story (an ENI keeps at most 50 tags).
    aws.untag_eni(&eni.id, &tag).await?;
    Ok(decision)
}

async fn detach_decision<A: Aws>(
    aws: &A,
    s: &Settings,
    event_id: &str,
    eni: &Eni,
    instance_id: &str,
    attachment_id: &str,
) -> Result<Decision, Error> {
    if eni.tags.contains_key(&s.skip_tag) {
        return Ok(Decision::Skipped(Skip::Tagged {
            on: "ENI",
            tag: s.skip_tag.clone(),
        }));
    }
    if let Some(a) = &eni.attachment {
        // Attached to the same instance again: removing would undo the newer attachment. An
        // attachment to another instance is that instance's business; this one is cleaned.
        let again = a.id != attachment_id
            && a.instance_id == instance_id
            && matches!(
                a.status,
                AttachmentStatus::Attaching | AttachmentStatus::Attached
            );
        if again {
            return Ok(Decision::Skipped(Skip::Reattached {
                eni: eni.id.clone(),
                attachment: a.id.clone(),
            }));
        }
    }
    if let Some(skip) = not_ready(aws, s, instance_id).await? {
        return Ok(Decision::Skipped(skip));
    }
    let comment = Comment::new(event_id, &eni.id);
    let sent = command::send_once(aws, s, instance_id, Action::Remove, &eni.id, &comment).await?;
    Ok(Decision::Sent(vec![sent]))
}

/// ENIs attached at launch emit no attach record: configure each managed one once the instance
/// runs, by name (never `all`: the host cannot see the tags that exclude an ENI).
async fn instance_running<A: Aws>(
    aws: &A,
    s: &Settings,
    event_id: &str,
    instance_id: &str,
    trace: &mut Trace,
) -> Result<Decision, Error> {
    let enis = aws.enis_of_instance(instance_id).await?;
    let managed: Vec<&Eni> = enis
        .iter()
        .filter(|e| {
            e.attachment
                .as_ref()
                .is_some_and(|a| a.instance_id == instance_id)
        })
        .filter(|e| !is_primary(e) && check_eni(e, &s.skip_tag, &s.owner_markers).is_none())
        .collect();
    if managed.is_empty() {
        return Ok(Decision::Skipped(Skip::NoSecondaryEnis));
    }
    if let Some(skip) = not_ready(aws, s, instance_id).await? {
        return Ok(Decision::Skipped(skip));
    }
    trace.eni_id = Some(
        managed
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    let mut sent = Vec::new();
    for eni in managed {
        if let Some(a) = &eni.attachment {
            let tag = attachment_tag(&a.id);
            aws.tag_eni(&eni.id, &[(tag.as_str(), instance_id)]).await?;
        }
        let comment = Comment::new(event_id, &eni.id);
        sent.push(command::send_once(aws, s, instance_id, Action::Apply, &eni.id, &comment).await?);
    }
    Ok(Decision::Sent(sent))
}

/// A command of ours ended without success: exit 3 (the ENI was not there yet) is sent again,
/// bounded; anything else is an error answer that names the cause and carries the report.
async fn command_ended<A: Aws>(
    aws: &A,
    s: &Settings,
    command_id: &str,
    instance_id: &str,
    document: &str,
    trace: &mut Trace,
) -> Result<Decision, Error> {
    if !same_document(document, &s.document_name) {
        return Ok(Decision::Skipped(Skip::OtherDocument(document.into())));
    }
    let Some(info) = aws.get_command(command_id).await? else {
        return Ok(Decision::Skipped(Skip::NotOurs(command_id.into())));
    };
    let (Some(comment), Some(action), Some(target)) = (
        Comment::parse(&info.comment),
        info.parameter("action").and_then(Action::parse),
        info.parameter("target"),
    ) else {
        return Ok(Decision::Skipped(Skip::NotOurs(command_id.into())));
    };
    trace.eni_id = Some(target.to_string());
    let run = aws
        .get_invocation(command_id, instance_id, RUN_STEP)
        .await?;
    let failed = |cause: String, download: Option<crate::aws::Invocation>| {
        Error::CommandFailed(Box::new(CommandFailure {
            command_id: command_id.into(),
            instance_id: instance_id.into(),
            action: action.as_str().into(),
            target: target.into(),
            status: run
                .status
                .as_ref()
                .map_or_else(String::new, |s| s.as_str().to_string()),
            response_code: run.response_code,
            cause,
            report: command::report(&run, download.as_ref()),
        }))
    };
    match classify(&run) {
        Outcome::Succeeded => Ok(Decision::Skipped(Skip::Succeeded(command_id.into()))),
        Outcome::NotThereYet if comment.attempt <= s.max_resends => {
            let next = comment.next();
            let sent = command::send_once(aws, s, instance_id, action, target, &next).await?;
            Ok(Decision::Sent(vec![sent]))
        }
        Outcome::NotThereYet => Err(failed(
            format!(
                "the ENI did not appear on the instance (exit 3) in {} attempts",
                comment.attempt
            ),
            None,
        )),
        Outcome::Failed(cause) => {
            // The run step did not get to run: say why the download failed.
            let download = if run.response_code < 0 || run.stdout.trim().is_empty() {
                aws.get_invocation(command_id, instance_id, DOWNLOAD_STEP)
                    .await
                    .ok()
            } else {
                None
            };
            Err(failed(cause, download))
        }
    }
}

/// The setting may be a name or an ARN; events carry the name.
fn same_document(event_document: &str, setting: &str) -> bool {
    setting == event_document
        || setting
            .rsplit_once(":document/")
            .is_some_and(|(_, name)| name == event_document)
}

#[cfg(test)]
mod tests;
