//! From a parsed event to a decision: resolve the ENI and instance, skip with a reason, or tag and
//! send the command.

use std::time::Duration;

use serde_json::Value;
use tokio::time::{sleep, Instant};

use crate::aws::{Action, Aws, Eni};
use crate::command::{self, Sent};
use crate::config::Settings;
use crate::decide::{check_eni, check_instance, is_primary, Skip};
use crate::error::Error;
use crate::event::{self, Trigger};

/// Written at attach time so that a detach record, which names only the attachment, can be traced
/// back to the ENI and its instance.
pub const TAG_INSTANCE: &str = "symroute:instance-id";
pub const TAG_ATTACHMENT: &str = "symroute:attachment-id";

const ATTACH_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Sent(Sent),
    Skipped(Skip),
}

/// What is known about the event so far, for the decision log line even when handling fails.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub event_id: String,
    pub kind: &'static str,
    pub instance_id: Option<String>,
    pub eni_id: Option<String>,
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
            } else {
                "detach"
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
        Trigger::InstanceState { instance_id, state } => {
            trace.kind = "instance-state";
            trace.instance_id = Some(instance_id.clone());
            if state != "running" {
                return Ok(Decision::Skipped(Skip::NotRunning(state)));
            }
            instance_running(aws, s, &event.id, &instance_id, trace).await
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
        Some(a) if a.instance_id == instance_id && a.status == "attached" => a.clone(),
        other => {
            let now = match other {
                Some(a) => format!("{} {} to {}", a.id, a.status, a.instance_id),
                None => "not attached".into(),
            };
            return Ok(Decision::Skipped(Skip::NotAttached {
                eni: eni_id.into(),
                now,
            }));
        }
    };
    if let Some(skip) = check_eni(&eni, &s.skip_tag) {
        return Ok(Decision::Skipped(skip));
    }
    let Some(instance) = aws.describe_instance(instance_id).await? else {
        return Ok(Decision::Skipped(Skip::InstanceGone(instance_id.into())));
    };
    if let Some(skip) = check_instance(&instance, &s.skip_tag) {
        return Ok(Decision::Skipped(skip));
    }
    aws.tag_eni(
        eni_id,
        &[
            (TAG_INSTANCE, instance_id),
            (TAG_ATTACHMENT, &attachment.id),
        ],
    )
    .await?;
    let sent = command::run(aws, s, instance_id, Action::Apply, eni_id, event_id).await?;
    Ok(Decision::Sent(sent))
}

/// The attach API returns before the attachment is complete: wait, bounded, for `attaching` to end.
async fn settled_eni<A: Aws>(aws: &A, s: &Settings, eni_id: &str) -> Result<Option<Eni>, Error> {
    let deadline = Instant::now() + s.attach_wait;
    loop {
        let eni = aws.describe_eni(eni_id).await?;
        let attaching = eni
            .as_ref()
            .and_then(|e| e.attachment.as_ref())
            .is_some_and(|a| a.status == "attaching");
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
    let unknown = || {
        Ok(Decision::Skipped(Skip::UnknownAttachment(
            attachment_id.into(),
        )))
    };
    let Some(eni) = aws.find_eni_by_tag(TAG_ATTACHMENT, attachment_id).await? else {
        return unknown();
    };
    trace.eni_id = Some(eni.id.clone());
    let Some(instance_id) = eni.tags.get(TAG_INSTANCE).cloned() else {
        return unknown();
    };
    trace.instance_id = Some(instance_id.clone());
    if eni.tags.contains_key(&s.skip_tag) {
        return Ok(Decision::Skipped(Skip::Tagged {
            on: "ENI",
            tag: s.skip_tag.clone(),
        }));
    }
    if let Some(a) = &eni.attachment {
        if a.id != attachment_id && matches!(a.status.as_str(), "attaching" | "attached") {
            return Ok(Decision::Skipped(Skip::Reattached {
                eni: eni.id.clone(),
                attachment: a.id.clone(),
            }));
        }
    }
    let Some(instance) = aws.describe_instance(&instance_id).await? else {
        return Ok(Decision::Skipped(Skip::InstanceGone(instance_id)));
    };
    if let Some(skip) = check_instance(&instance, &s.skip_tag) {
        return Ok(Decision::Skipped(skip));
    }
    let sent = command::run(aws, s, &instance_id, Action::Remove, &eni.id, event_id).await?;
    Ok(Decision::Sent(sent))
}

/// ENIs attached at launch emit no attach record: configure them all once the instance runs.
async fn instance_running<A: Aws>(
    aws: &A,
    s: &Settings,
    event_id: &str,
    instance_id: &str,
    trace: &mut Trace,
) -> Result<Decision, Error> {
    let Some(instance) = aws.describe_instance(instance_id).await? else {
        return Ok(Decision::Skipped(Skip::InstanceGone(instance_id.into())));
    };
    if let Some(skip) = check_instance(&instance, &s.skip_tag) {
        return Ok(Decision::Skipped(skip));
    }
    let enis = aws.enis_of_instance(instance_id).await?;
    let managed: Vec<&Eni> = enis
        .iter()
        .filter(|e| {
            e.attachment
                .as_ref()
                .is_some_and(|a| a.instance_id == instance_id)
        })
        .filter(|e| !is_primary(e) && check_eni(e, &s.skip_tag).is_none())
        .collect();
    if managed.is_empty() {
        return Ok(Decision::Skipped(Skip::NoSecondaryEnis));
    }
    trace.eni_id = Some("all".into());
    for eni in &managed {
        if let Some(a) = &eni.attachment {
            aws.tag_eni(
                &eni.id,
                &[(TAG_INSTANCE, instance_id), (TAG_ATTACHMENT, &a.id)],
            )
            .await?;
        }
    }
    let sent = command::run(aws, s, instance_id, Action::Apply, "all", event_id).await?;
    Ok(Decision::Sent(sent))
}

#[cfg(test)]
mod tests;
