//! Why an event is left alone. Each reason has a stable code (answers, logs, metrics) and a
//! sentence for people.

use crate::aws::{Eni, Instance};

/// ENIs created by the Amazon VPC CNI carry this tag; the CNI routes them itself.
const CNI_TAG: &str = "node.k8s.amazonaws.com/instance_id";
const CNI_DESCRIPTION_PREFIX: &str = "aws-K8S-";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    FailedCall {
        event_name: String,
        code: String,
        message: String,
    },
    PrimaryInterface,
    InterfaceType(String),
    VpcCni,
    Tagged {
        on: &'static str,
        tag: String,
    },
    Windows(String),
    NotRunning(String),
    EniGone(String),
    NotAttached {
        eni: String,
        now: String,
    },
    InstanceGone(String),
    UnknownAttachment(String),
    Reattached {
        eni: String,
        attachment: String,
    },
    NoSecondaryEnis,
}

impl Skip {
    pub fn code(&self) -> &'static str {
        match self {
            Skip::FailedCall { .. } => "failed-call",
            Skip::PrimaryInterface => "primary-interface",
            Skip::InterfaceType(_) => "interface-type",
            Skip::VpcCni => "vpc-cni",
            Skip::Tagged { .. } => "skip-tag",
            Skip::Windows(_) => "not-linux",
            Skip::NotRunning(_) => "not-running",
            Skip::EniGone(_) => "eni-gone",
            Skip::NotAttached { .. } => "not-attached",
            Skip::InstanceGone(_) => "instance-gone",
            Skip::UnknownAttachment(_) => "unknown-attachment",
            Skip::Reattached { .. } => "reattached",
            Skip::NoSecondaryEnis => "no-secondary-enis",
        }
    }

    pub fn reason(&self) -> String {
        match self {
            Skip::FailedCall { event_name, code, message } => {
                format!("{event_name} failed ({code}: {message}): nothing changed on the instance")
            }
            Skip::PrimaryInterface => {
                "device index 0 on network card 0 is the primary interface, which symroute never changes".into()
            }
            Skip::InterfaceType(t) => format!("interface type {t:?} is not a plain ENI (\"interface\")"),
            Skip::VpcCni => "the ENI belongs to the Amazon VPC CNI, which routes it itself".into(),
            Skip::Tagged { on, tag } => format!("the {on} carries the skip tag {tag:?}"),
            Skip::Windows(p) => format!("the instance's platform is {p:?}, not Linux"),
            Skip::NotRunning(state) => format!(
                "the instance is {state}, not running: its instance-running event configures it when it starts"
            ),
            Skip::EniGone(eni) => format!("{eni} no longer exists"),
            Skip::NotAttached { eni, now } => {
                format!("{eni} is no longer attached as the event says ({now}); a later event covers its new state")
            }
            Skip::InstanceGone(i) => format!("{i} no longer exists"),
            Skip::UnknownAttachment(a) => format!(
                "no ENI carries the tag symroute:attachment-id={a}: symroute never configured it, or the ENI \
                 was deleted (`symroute remove --stale` on the host cleans up)"
            ),
            Skip::Reattached { eni, attachment } => {
                format!("{eni} is attached again ({attachment}); removing would undo the newer attachment")
            }
            Skip::NoSecondaryEnis => "the instance has no secondary ENI that symroute manages".into(),
        }
    }
}

/// The primary interface is device 0 on card 0; on multi-card instances, device 0 of another card
/// is a secondary ENI that needs routing like any other.
pub fn is_primary(eni: &Eni) -> bool {
    eni.attachment
        .as_ref()
        .is_some_and(|a| a.device_index == 0 && a.network_card_index == 0)
}

pub fn check_eni(eni: &Eni, skip_tag: &str) -> Option<Skip> {
    if is_primary(eni) {
        return Some(Skip::PrimaryInterface);
    }
    if eni.interface_type != "interface" {
        return Some(Skip::InterfaceType(eni.interface_type.clone()));
    }
    if eni.tags.contains_key(CNI_TAG) || eni.description.starts_with(CNI_DESCRIPTION_PREFIX) {
        return Some(Skip::VpcCni);
    }
    if eni.tags.contains_key(skip_tag) {
        return Some(Skip::Tagged {
            on: "ENI",
            tag: skip_tag.to_string(),
        });
    }
    None
}

pub fn check_instance(instance: &Instance, skip_tag: &str) -> Option<Skip> {
    if let Some(p) = &instance.platform {
        if p.to_ascii_lowercase().starts_with("windows") {
            return Some(Skip::Windows(p.clone()));
        }
    }
    if instance.state != "running" {
        return Some(Skip::NotRunning(instance.state.clone()));
    }
    if instance.tags.contains_key(skip_tag) {
        return Some(Skip::Tagged {
            on: "instance",
            tag: skip_tag.to_string(),
        });
    }
    None
}
