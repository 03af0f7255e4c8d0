//! The few AWS calls the handler makes, behind a trait so the decision logic can be driven by an
//! in-memory account in unit tests and by the SDK in production.

use std::collections::HashMap;
use std::future::Future;
use std::time::SystemTime;

use aws_sdk_ec2::types::{AttachmentStatus, InstanceStateName};
use aws_sdk_ssm::types::{CommandInvocationStatus, PingStatus, PlatformType};

use crate::config::Connmark;
use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attachment {
    pub id: String,
    pub instance_id: String,
    /// The SDK's enum: a value it does not know yet is `Unknown`, never a misspelt literal.
    pub status: AttachmentStatus,
    pub device_index: i32,
    pub network_card_index: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Eni {
    pub id: String,
    pub mac: String,
    pub private_ips: Vec<String>,
    pub subnet_id: String,
    /// `interface`, `efa`, `trunk`, `branch`, ...
    pub interface_type: String,
    pub description: String,
    /// Created and managed by an AWS service (ECS awsvpc tasks, Lambda, load balancers, ...).
    pub requester_managed: bool,
    pub tags: HashMap<String, String>,
    pub attachment: Option<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instance {
    pub id: String,
    /// EC2's `Platform` (only ever `windows`) or, failing that, `PlatformDetails`.
    pub platform: Option<String>,
    /// `None` when EC2 did not say.
    pub state: Option<InstanceStateName>,
    pub launch_time: Option<SystemTime>,
    pub tags: HashMap<String, String>,
}

/// What Systems Manager knows of an instance (`DescribeInstanceInformation`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ManagedInstance {
    pub ping_status: Option<PingStatus>,
    pub platform_type: Option<PlatformType>,
    pub agent_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    Apply,
    Remove,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Apply => "apply",
            Action::Remove => "remove",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "apply" => Some(Action::Apply),
            "remove" => Some(Action::Remove),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommandRequest {
    pub document_name: String,
    pub instance_id: String,
    pub action: Action,
    /// An ENI id: the SSM document's `target` parameter. Never `all` (the host cannot see tags).
    pub target: String,
    /// Names the event (and attempt) the command is for: how a retry finds it again.
    pub comment: String,
    pub log_group: Option<String>,
    /// SendCommand's TimeoutSeconds: how long SSM tries to deliver it.
    pub timeout_seconds: i32,
    /// The stack's choices for `apply` (the document's `onHostTrigger` and `connmark`).
    pub on_host_trigger: bool,
    pub connmark: Connmark,
}

impl CommandRequest {
    /// The document parameters this command carries. `apply` names the stack's trigger and
    /// connmark choices explicitly, so that a document whose defaults changed cannot change
    /// what the stack asked for; `remove` takes neither.
    pub fn parameters(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("action", self.action.as_str().to_string()),
            ("target", self.target.clone()),
        ];
        if self.action == Action::Apply {
            p.push(("onHostTrigger", self.on_host_trigger.to_string()));
            p.push(("connmark", self.connmark.as_str().to_string()));
        }
        p
    }
}

/// A command as ListCommands reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct CommandInfo {
    pub command_id: String,
    pub document_name: String,
    pub comment: String,
    pub instance_ids: Vec<String>,
    pub parameters: HashMap<String, Vec<String>>,
}

impl CommandInfo {
    pub(crate) fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// One step of one command on one instance (`GetCommandInvocation` with `PluginName`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Invocation {
    /// `None` when SSM did not say.
    pub status: Option<CommandInvocationStatus>,
    pub details: String,
    /// The step's exit code; -1 when it did not run to an end.
    pub response_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    /// The status as SSM spells it, for messages.
    pub(crate) fn status_word(&self) -> &str {
        self.status
            .as_ref()
            .map_or("without a status", |s| s.as_str())
    }
}

pub(crate) type Tags<'a> = &'a [(&'a str, &'a str)];

/// `Ok(None)` means "does not exist"; errors are calls that failed.
pub(crate) trait Aws: Sync {
    fn describe_eni(&self, eni_id: &str)
        -> impl Future<Output = Result<Option<Eni>, Error>> + Send;
    fn enis_of_instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Vec<Eni>, Error>> + Send;
    /// ENIs that carry a tag with this key (any value).
    fn enis_with_tag_key(&self, key: &str) -> impl Future<Output = Result<Vec<Eni>, Error>> + Send;
    fn describe_instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<Instance>, Error>> + Send;
    /// `None`: Systems Manager does not know the instance (no agent, or not registered yet).
    fn managed_instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<ManagedInstance>, Error>> + Send;
    fn tag_eni(
        &self,
        eni_id: &str,
        tags: Tags<'_>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    fn untag_eni(&self, eni_id: &str, key: &str) -> impl Future<Output = Result<(), Error>> + Send;
    /// Sends once: no retry inside (a retry that cannot tell whether the first try arrived
    /// would send a second command).
    fn send_command(
        &self,
        req: &CommandRequest,
    ) -> impl Future<Output = Result<String, Error>> + Send;
    /// The command of `document` sent to `instance_id` (in the last day) with exactly this comment.
    fn find_command(
        &self,
        document: &str,
        instance_id: &str,
        comment: &str,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send;
    fn get_command(
        &self,
        command_id: &str,
    ) -> impl Future<Output = Result<Option<CommandInfo>, Error>> + Send;
    fn get_invocation(
        &self,
        command_id: &str,
        instance_id: &str,
        step: &str,
    ) -> impl Future<Output = Result<Invocation, Error>> + Send;
}
