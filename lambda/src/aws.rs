//! The few AWS calls the handler makes, behind a trait so the decision logic can be driven by an
//! in-memory account in unit tests and by the SDK in production.

use std::collections::HashMap;
use std::future::Future;

use crate::error::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub id: String,
    pub instance_id: String,
    /// `attaching`, `attached`, `detaching`, `detached`.
    pub status: String,
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
    pub tags: HashMap<String, String>,
    pub attachment: Option<Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instance {
    pub id: String,
    /// EC2's `Platform` (only ever `windows`) or, failing that, `PlatformDetails`.
    pub platform: Option<String>,
    pub state: String,
    pub tags: HashMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    pub document_name: String,
    pub instance_id: String,
    pub action: Action,
    /// `all` or an ENI id: the SSM document's `target` parameter.
    pub target: String,
    pub comment: String,
    pub log_group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    pub status: String,
    pub details: String,
    pub stdout: String,
    pub stderr: String,
}

impl Invocation {
    /// SSM's in-flight statuses; everything else is final.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self.status.as_str(),
            "Pending" | "InProgress" | "Delayed" | "Cancelling"
        )
    }
}

pub type Tags<'a> = &'a [(&'a str, &'a str)];

/// `Ok(None)` means "does not exist"; errors are calls that failed.
pub trait Aws: Sync {
    fn describe_eni(&self, eni_id: &str)
        -> impl Future<Output = Result<Option<Eni>, Error>> + Send;
    fn enis_of_instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Vec<Eni>, Error>> + Send;
    fn find_eni_by_tag(
        &self,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<Option<Eni>, Error>> + Send;
    fn describe_instance(
        &self,
        instance_id: &str,
    ) -> impl Future<Output = Result<Option<Instance>, Error>> + Send;
    fn tag_eni(
        &self,
        eni_id: &str,
        tags: Tags<'_>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Returns the command id.
    fn send_command(
        &self,
        req: &CommandRequest,
    ) -> impl Future<Output = Result<String, Error>> + Send;
    fn get_invocation(
        &self,
        command_id: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<Invocation, Error>> + Send;
}
