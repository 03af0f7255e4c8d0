//! Lenient parsing of what EventBridge delivers: only the fields this function uses are read, and
//! any of them being wrong is a `BadEvent` naming the field's path.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{clip, Error};

const CLOUDTRAIL: &str = "AWS API Call via CloudTrail";
const STATE_CHANGE: &str = "EC2 Instance State-change Notification";
const COMMAND_STATUS: &str = "EC2 Command Invocation Status-change Notification";

/// What an event asks for, once parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Trigger {
    Attach {
        eni_id: String,
        instance_id: String,
    },
    Detach {
        attachment_id: String,
    },
    /// Private IPv4/IPv6 addresses or prefixes assigned to or unassigned from an ENI.
    AddressChange {
        eni_id: String,
        event_name: String,
    },
    InstanceState {
        instance_id: String,
        state: String,
    },
    /// Systems Manager: one command on one instance reached a status.
    CommandStatus {
        command_id: String,
        instance_id: String,
        document: String,
        status: String,
    },
    /// The API call itself failed: nothing changed on the instance.
    FailedCall {
        event_name: String,
        code: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// EventBridge's event id, for logs (falls back to CloudTrail's eventID).
    pub id: String,
    pub trigger: Trigger,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(default, rename_all = "camelCase")]
struct Detail {
    event_name: Option<String>,
    #[serde(rename = "eventID")]
    event_id: Option<String>,
    error_code: Option<String>,
    // Never interpreted, only reported: any JSON is accepted.
    error_message: Option<Value>,
    request_parameters: Option<RequestParameters>,
    #[serde(rename = "instance-id")]
    instance_id: Option<String>,
    state: Option<String>,
    #[serde(rename = "command-id")]
    command_id: Option<String>,
    #[serde(rename = "document-name")]
    document_name: Option<String>,
    status: Option<String>,
}

// deviceIndex and networkCardIndex are deliberately not read: EC2 is asked for the truth, so a
// record where they are missing or oddly typed still works.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(default, rename_all = "camelCase")]
struct RequestParameters {
    network_interface_id: Option<String>,
    instance_id: Option<String>,
    attachment_id: Option<String>,
    // CloudTrail records of the EC2 calls added after 2016 (AssignIpv6Addresses and its
    // inverse) wrap the request as `{"<Call>Request": {"NetworkInterfaceId": ...}}`, in the
    // API's own capitalisation; older calls put camelCase fields at the top.
    #[serde(rename = "AssignIpv6AddressesRequest")]
    assign_ipv6: Option<WrappedRequest>,
    #[serde(rename = "UnassignIpv6AddressesRequest")]
    unassign_ipv6: Option<WrappedRequest>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(default)]
struct WrappedRequest {
    #[serde(rename = "NetworkInterfaceId")]
    network_interface_id: Option<String>,
}

/// The calls that change an ENI's addresses (or prefixes) after it was attached.
pub(crate) const ADDRESS_CALLS: &[&str] = &[
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "AssignIpv6Addresses",
    "UnassignIpv6Addresses",
];

pub fn parse(raw: Value) -> Result<Event, Error> {
    if !raw.is_object() {
        return Err(Error::BadEvent(format!(
            "expected a JSON object (an EventBridge event), got {}",
            clip(&raw.to_string(), 80)
        )));
    }
    let envelope: EventBridgeEvent<Detail> = serde_path_to_error::deserialize(raw)
        .map_err(|e| Error::BadEvent(clip(&e.to_string(), 300)))?;
    let detail = envelope.detail;
    // An empty id names nothing: the next one, or "-" (found by the mutation fuzzer).
    let id = envelope
        .id
        .filter(|s| !s.is_empty())
        .or(detail.event_id.clone().filter(|s| !s.is_empty()))
        .map(|id| clip(&id, 80))
        .unwrap_or_else(|| "-".into());
    let trigger = match envelope.detail_type.as_str() {
        CLOUDTRAIL => api_call(detail)?,
        STATE_CHANGE => Trigger::InstanceState {
            instance_id: id_field(detail.instance_id, "detail.instance-id", "i-")?,
            state: detail
                .state
                .map(|s| clip(&s, 40))
                .ok_or_else(|| missing("detail.state"))?,
        },
        COMMAND_STATUS => Trigger::CommandStatus {
            command_id: command_id(detail.command_id)?,
            instance_id: id_field(detail.instance_id, "detail.instance-id", "i-")?,
            document: detail
                .document_name
                .map(|s| clip(&s, 200))
                .ok_or_else(|| missing("detail.document-name"))?,
            status: detail
                .status
                .map(|s| clip(&s, 40))
                .ok_or_else(|| missing("detail.status"))?,
        },
        other => {
            return Err(Error::Unsupported(format!(
                "detail-type {:?}",
                clip(other, 80)
            )))
        }
    };
    Ok(Event { id, trigger })
}

fn api_call(detail: Detail) -> Result<Trigger, Error> {
    let event_name = detail
        .event_name
        .ok_or_else(|| missing("detail.eventName"))?;
    if event_name != "AttachNetworkInterface"
        && event_name != "DetachNetworkInterface"
        && !ADDRESS_CALLS.contains(&event_name.as_str())
    {
        return Err(Error::Unsupported(format!(
            "eventName {:?}",
            clip(&event_name, 80)
        )));
    }
    if let Some(code) = detail.error_code {
        let message = match detail.error_message {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        return Ok(Trigger::FailedCall {
            event_name,
            code: clip(&code, 80),
            message: clip(&message, 200),
        });
    }
    let params = detail
        .request_parameters
        .ok_or_else(|| missing("detail.requestParameters"))?;
    if ADDRESS_CALLS.contains(&event_name.as_str()) {
        let eni = params
            .network_interface_id
            .or(params.assign_ipv6.and_then(|w| w.network_interface_id))
            .or(params.unassign_ipv6.and_then(|w| w.network_interface_id));
        return Ok(Trigger::AddressChange {
            eni_id: id_field(eni, "detail.requestParameters.networkInterfaceId", "eni-")?,
            event_name,
        });
    }
    if event_name == "AttachNetworkInterface" {
        Ok(Trigger::Attach {
            eni_id: id_field(
                params.network_interface_id,
                "detail.requestParameters.networkInterfaceId",
                "eni-",
            )?,
            instance_id: id_field(
                params.instance_id,
                "detail.requestParameters.instanceId",
                "i-",
            )?,
        })
    } else {
        Ok(Trigger::Detach {
            attachment_id: id_field(
                params.attachment_id,
                "detail.requestParameters.attachmentId",
                "eni-attach-",
            )?,
        })
    }
}

/// SSM command ids are UUIDs (36 characters of hex digits and dashes).
fn command_id(value: Option<String>) -> Result<String, Error> {
    let value = value.ok_or_else(|| missing("detail.command-id"))?;
    let ok = value.len() == 36 && value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if ok {
        Ok(value)
    } else {
        Err(Error::BadEvent(format!(
            "detail.command-id: {:?} is not an SSM command id",
            clip(&value, 60)
        )))
    }
}

fn missing(path: &str) -> Error {
    Error::BadEvent(format!("{path}: missing"))
}

/// EC2 ids are a prefix and 8 or 17 lowercase hex digits; anything else is refused before it
/// reaches an API call or the SSM document's parameter pattern.
fn id_field(value: Option<String>, path: &str, prefix: &str) -> Result<String, Error> {
    let value = value.ok_or_else(|| missing(path))?;
    if is_ec2_id(&value, prefix) {
        Ok(value)
    } else {
        Err(Error::BadEvent(format!(
            "{path}: {:?} is not an id of the form {prefix}<hex digits>",
            clip(&value, 60)
        )))
    }
}

pub use symroute_ids::is_ec2_id;

#[cfg(test)]
mod tests;
