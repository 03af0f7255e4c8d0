//! Why an event is left alone. Each reason has a stable code (answers, logs, metrics) and a
//! sentence for people.

use aws_sdk_ec2::types::InstanceStateName;
use aws_sdk_ssm::types::{PingStatus, PlatformType};

use crate::aws::{Eni, Instance, ManagedInstance};

/// The oldest SSM Agent with aws:downloadContent (its release notes: 2.2.45.0).
pub(crate) const MIN_AGENT_VERSION: &str = "2.2.45.0";

/// A sign that another tool owns an ENI and routes it itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnerMarker {
    /// The ENI carries a tag with this key.
    Tag(String),
    /// The ENI's description starts with this.
    DescriptionPrefix(String),
}

impl OwnerMarker {
    /// `tag:<key>` or `description:<prefix>`, comma-separated; empty entries are ignored.
    pub(crate) fn parse_list(text: &str) -> Result<Vec<OwnerMarker>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| match m.split_once(':') {
                Some(("tag", key)) if !key.is_empty() => Ok(OwnerMarker::Tag(key.into())),
                Some(("description", prefix)) if !prefix.is_empty() => {
                    Ok(OwnerMarker::DescriptionPrefix(prefix.into()))
                }
                _ => Err(format!(
                    "has {m:?}: each marker is tag:<key> or description:<prefix>, separated by commas"
                )),
            })
            .collect()
    }

    fn matches(&self, eni: &Eni) -> bool {
        match self {
            OwnerMarker::Tag(key) => eni.tags.contains_key(key),
            OwnerMarker::DescriptionPrefix(p) => eni.description.starts_with(p.as_str()),
        }
    }

    fn describe(&self) -> String {
        match self {
            OwnerMarker::Tag(key) => format!("tag {key:?}"),
            OwnerMarker::DescriptionPrefix(p) => format!("description starting {p:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Skip {
    FailedCall {
        event_name: String,
        code: String,
        message: String,
    },
    PrimaryInterface,
    InterfaceType(String),
    RequesterManaged,
    OwnedByOther(String),
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
    NotManaged(String),
    Offline {
        instance: String,
        ping_status: String,
    },
    AgentTooOld {
        instance: String,
        version: String,
    },
    OtherDocument(String),
    NotOurs(String),
    Succeeded(String),
}

impl Skip {
    pub fn code(&self) -> &'static str {
        match self {
            Skip::FailedCall { .. } => "failed-call",
            Skip::PrimaryInterface => "primary-interface",
            Skip::InterfaceType(_) => "interface-type",
            Skip::RequesterManaged => "requester-managed",
            Skip::OwnedByOther(_) => "owned-by-other",
            Skip::Tagged { .. } => "skip-tag",
            Skip::Windows(_) => "not-linux",
            Skip::NotRunning(_) => "not-running",
            Skip::EniGone(_) => "eni-gone",
            Skip::NotAttached { .. } => "not-attached",
            Skip::InstanceGone(_) => "instance-gone",
            Skip::UnknownAttachment(_) => "unknown-attachment",
            Skip::Reattached { .. } => "reattached",
            Skip::NoSecondaryEnis => "no-secondary-enis",
            Skip::NotManaged(_) => "not-managed",
            Skip::Offline { .. } => "offline",
            Skip::AgentTooOld { .. } => "agent-too-old",
            Skip::OtherDocument(_) => "other-document",
            Skip::NotOurs(_) => "not-ours",
            Skip::Succeeded(_) => "succeeded",
        }
    }

    /// Systems Manager cannot reach the instance: a metric of its own (Unreachable).
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Skip::NotManaged(_) | Skip::Offline { .. } | Skip::AgentTooOld { .. }
        )
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
            Skip::RequesterManaged => {
                "the ENI is requester-managed: an AWS service (ECS, Lambda, a load balancer, ...) created it and runs it".into()
            }
            Skip::OwnedByOther(marker) => {
                format!("another tool owns the ENI and routes it itself ({marker}; see SYMROUTE_OWNER_MARKERS)")
            }
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
                "no ENI carries the tag symroute:attachment:{a}: symroute never configured it, or the ENI \
                 was deleted (`symroute remove --stale` on the host cleans up)"
            ),
            Skip::Reattached { eni, attachment } => {
                format!("{eni} is attached to the same instance again ({attachment}); removing would undo the newer attachment")
            }
            Skip::NoSecondaryEnis => "the instance has no secondary ENI that symroute manages".into(),
            Skip::NotManaged(i) => format!(
                "Systems Manager does not manage {i} (no SSM Agent registered, or no instance profile \
                 with AmazonSSMManagedInstanceCore): symroute cannot reach it"
            ),
            Skip::Offline { instance, ping_status } => format!(
                "the SSM Agent of {instance} is {ping_status}, not Online: a command would wait and fail; \
                 its next instance-running event, or a manual re-run, configures it"
            ),
            Skip::AgentTooOld { instance, version } => format!(
                "the SSM Agent of {instance} is {version}; the symroute document needs {MIN_AGENT_VERSION} or later"
            ),
            Skip::OtherDocument(d) => format!("the command ran document {d:?}, not symroute's"),
            Skip::NotOurs(c) => format!("command {c} was not sent by symroute"),
            Skip::Succeeded(c) => format!("command {c} succeeded"),
        }
    }
}

/// The primary interface is device 0 on card 0; on multi-card instances, device 0 of another card
/// is a secondary ENI that needs routing like any other.
pub(crate) fn is_primary(eni: &Eni) -> bool {
    eni.attachment
        .as_ref()
        .is_some_and(|a| a.device_index == 0 && a.network_card_index == 0)
}

pub(crate) fn check_eni(eni: &Eni, skip_tag: &str, markers: &[OwnerMarker]) -> Option<Skip> {
    if is_primary(eni) {
        return Some(Skip::PrimaryInterface);
    }
    if eni.interface_type != "interface" {
        return Some(Skip::InterfaceType(eni.interface_type.clone()));
    }
    if eni.requester_managed {
        return Some(Skip::RequesterManaged);
    }
    if let Some(m) = markers.iter().find(|m| m.matches(eni)) {
        return Some(Skip::OwnedByOther(m.describe()));
    }
    if eni.tags.contains_key(skip_tag) {
        return Some(Skip::Tagged {
            on: "ENI",
            tag: skip_tag.to_string(),
        });
    }
    None
}

pub(crate) fn check_instance(instance: &Instance, skip_tag: &str) -> Option<Skip> {
    if let Some(p) = &instance.platform {
        if p.to_ascii_lowercase().starts_with("windows") {
            return Some(Skip::Windows(p.clone()));
        }
    }
    if instance.state != Some(InstanceStateName::Running) {
        let state = instance.state.as_ref().map_or("unknown", |s| s.as_str());
        return Some(Skip::NotRunning(state.to_string()));
    }
    if instance.tags.contains_key(skip_tag) {
        return Some(Skip::Tagged {
            on: "instance",
            tag: skip_tag.to_string(),
        });
    }
    None
}

/// Whether the instance's SSM Agent can run the document now.
pub(crate) fn check_managed(instance_id: &str, m: &ManagedInstance) -> Option<Skip> {
    if m.platform_type != Some(PlatformType::Linux) {
        let platform = m.platform_type.as_ref().map_or("unknown", |p| p.as_str());
        return Some(Skip::Windows(platform.to_string()));
    }
    if m.ping_status != Some(PingStatus::Online) {
        return Some(Skip::Offline {
            instance: instance_id.into(),
            ping_status: m
                .ping_status
                .as_ref()
                .map_or("unknown", |p| p.as_str())
                .to_string(),
        });
    }
    if version_below(&m.agent_version, MIN_AGENT_VERSION) {
        return Some(Skip::AgentTooOld {
            instance: instance_id.into(),
            version: m.agent_version.clone(),
        });
    }
    None
}

/// Dotted version comparison; a version that is not numbers counts as old.
fn version_below(version: &str, min: &str) -> bool {
    let parse = |v: &str| -> Option<Vec<u64>> { v.split('.').map(|p| p.parse().ok()).collect() };
    match (parse(version), parse(min)) {
        (Some(v), Some(m)) => v < m,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert!(!version_below("3.3.2746.0", MIN_AGENT_VERSION));
        assert!(!version_below("2.2.45.0", MIN_AGENT_VERSION));
        assert!(!version_below("2.10.0.0", MIN_AGENT_VERSION));
        assert!(version_below("2.2.30.0", MIN_AGENT_VERSION));
        assert!(version_below("1.0.178", MIN_AGENT_VERSION));
        assert!(version_below("", MIN_AGENT_VERSION));
        assert!(version_below("3.x", MIN_AGENT_VERSION));
    }

    #[test]
    fn markers_parse_and_refuse() {
        let m = OwnerMarker::parse_list(" tag:a/b , description:Cilium-CNI (,").unwrap();
        assert_eq!(
            m,
            vec![
                OwnerMarker::Tag("a/b".into()),
                OwnerMarker::DescriptionPrefix("Cilium-CNI (".into())
            ]
        );
        assert!(OwnerMarker::parse_list("tag:").is_err());
        assert!(OwnerMarker::parse_list("owner:x").is_err());
        assert!(OwnerMarker::parse_list("").unwrap().is_empty());
    }
}
