//! [`Aws`] over the AWS SDK. Clients are built once per cold start and shared by all invocations.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, NetworkInterface, Tag};
use aws_sdk_ssm::types::{
    CloudWatchOutputConfig, CommandFilter, CommandFilterKey, InstanceInformationStringFilter,
};

use crate::aws::{
    Attachment, Aws, CommandInfo, CommandRequest, Eni, Instance, Invocation, ManagedInstance, Tags,
};
use crate::config::Settings;
use crate::error::Error;

/// How far back a command for the same event is looked for: EventBridge retries an event for up
/// to a day (the stack's MaximumEventAgeInSeconds), Lambda's own retries for six hours.
const LOOKBACK: Duration = Duration::from_secs(26 * 3600);

pub struct Sdk {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    /// For SendCommand only: the SDK's retries are off, because a retry after a lost answer
    /// would send a second command. command.rs looks (ListCommands) before it sends again.
    ssm_send: aws_sdk_ssm::Client,
}

impl Sdk {
    /// Region, credentials and `AWS_ENDPOINT_URL` come from the environment, as in every SDK.
    pub async fn from_env(s: &Settings) -> Self {
        // The SDK retries throttling, 5xx and broken connections itself (with jitter); these
        // bounds keep a whole invocation well inside a Lambda timeout.
        let retry = RetryConfig::standard()
            .with_max_attempts(s.max_attempts)
            .with_initial_backoff(s.retry_base);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(10))
            .build();
        let conf = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry)
            .timeout_config(timeouts)
            .load()
            .await;
        let send_conf = aws_sdk_ssm::config::Builder::from(&conf)
            .retry_config(RetryConfig::disabled())
            .build();
        Sdk {
            ec2: aws_sdk_ec2::Client::new(&conf),
            ssm: aws_sdk_ssm::Client::new(&conf),
            ssm_send: aws_sdk_ssm::Client::from_conf(send_conf),
        }
    }
}

fn sdk_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some(code) = err.code() {
        let message = err.message().unwrap_or("(no message)").to_string();
        return Error::aws(operation, code, message);
    }
    let kind = match &err {
        SdkError::ConstructionFailure(_) => "ConstructionFailure".to_string(),
        SdkError::TimeoutError(_) => "Timeout".to_string(),
        SdkError::DispatchFailure(_) => "DispatchFailure".to_string(),
        SdkError::ResponseError(_) => "ResponseError".to_string(),
        SdkError::ServiceError(ctx) => format!("HTTP{}", ctx.raw().status().as_u16()),
        _ => "Unknown".to_string(),
    };
    Error::aws(operation, kind, DisplayErrorContext(&err).to_string())
}

fn not_found(e: &Error) -> bool {
    matches!(e, Error::Aws { code, .. } if code.ends_with(".NotFound"))
}

fn tags<'a>(tags: impl IntoIterator<Item = &'a Tag>) -> HashMap<String, String> {
    tags.into_iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn eni(n: &NetworkInterface) -> Eni {
    Eni {
        id: n.network_interface_id().unwrap_or_default().into(),
        mac: n.mac_address().unwrap_or_default().into(),
        private_ips: n
            .private_ip_addresses()
            .iter()
            .filter_map(|a| a.private_ip_address().map(str::to_string))
            .collect(),
        subnet_id: n.subnet_id().unwrap_or_default().into(),
        interface_type: n
            .interface_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_else(|| "interface".into()),
        description: n.description().unwrap_or_default().into(),
        requester_managed: n.requester_managed().unwrap_or(false),
        tags: tags(n.tag_set()),
        attachment: n.attachment().map(|a| Attachment {
            id: a.attachment_id().unwrap_or_default().into(),
            instance_id: a.instance_id().unwrap_or_default().into(),
            status: a.status().cloned().unwrap_or_else(|| "".into()),
            device_index: a.device_index().unwrap_or_default(),
            network_card_index: a.network_card_index().unwrap_or_default(),
        }),
    }
}

impl Sdk {
    async fn enis_where(&self, filter: Filter) -> Result<Vec<Eni>, Error> {
        const OP: &str = "ec2:DescribeNetworkInterfaces";
        let mut out = Vec::new();
        let mut pages = self
            .ec2
            .describe_network_interfaces()
            .filters(filter)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(OP, e))?;
            out.extend(page.network_interfaces().iter().map(eni));
        }
        Ok(out)
    }
}

impl Aws for Sdk {
    async fn describe_eni(&self, eni_id: &str) -> Result<Option<Eni>, Error> {
        let res = self
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(eni_id)
            .send()
            .await
            .map_err(|e| sdk_error("ec2:DescribeNetworkInterfaces", e));
        match res {
            Ok(out) => Ok(out.network_interfaces().first().map(eni)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn enis_of_instance(&self, instance_id: &str) -> Result<Vec<Eni>, Error> {
        let filter = Filter::builder()
            .name("attachment.instance-id")
            .values(instance_id)
            .build();
        self.enis_where(filter).await
    }

    async fn enis_with_tag_key(&self, key: &str) -> Result<Vec<Eni>, Error> {
        let filter = Filter::builder().name("tag-key").values(key).build();
        self.enis_where(filter).await
    }

    async fn describe_instance(&self, instance_id: &str) -> Result<Option<Instance>, Error> {
        let res = self
            .ec2
            .describe_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| sdk_error("ec2:DescribeInstances", e));
        let out = match res {
            Ok(out) => out,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        let found = out.reservations().iter().flat_map(|r| r.instances()).next();
        Ok(found.map(|i| Instance {
            id: i.instance_id().unwrap_or_default().into(),
            platform: i
                .platform()
                .map(|p| p.as_str().to_string())
                .or_else(|| i.platform_details().map(str::to_string)),
            state: i.state().and_then(|s| s.name()).cloned(),
            launch_time: i.launch_time().and_then(|t| SystemTime::try_from(*t).ok()),
            tags: tags(i.tags()),
        }))
    }

    async fn managed_instance(&self, instance_id: &str) -> Result<Option<ManagedInstance>, Error> {
        const OP: &str = "ssm:DescribeInstanceInformation";
        let filter = InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(instance_id)
            .build()
            .map_err(|e| Error::aws(OP, "ConstructionFailure", e.to_string()))?;
        let res = self
            .ssm
            .describe_instance_information()
            .filters(filter)
            .send()
            .await
            .map_err(|e| sdk_error(OP, e));
        let out = match res {
            Ok(out) => out,
            // Some accounts answer this for an instance Systems Manager has never seen.
            Err(Error::Aws { code, .. }) if code == "InvalidInstanceId" => return Ok(None),
            Err(e) => return Err(e),
        };
        let found = out
            .instance_information_list()
            .iter()
            .find(|i| i.instance_id() == Some(instance_id));
        Ok(found.map(|i| ManagedInstance {
            ping_status: i.ping_status().cloned(),
            platform_type: i.platform_type().cloned(),
            agent_version: i.agent_version().unwrap_or_default().into(),
        }))
    }

    async fn tag_eni(&self, eni_id: &str, new_tags: Tags<'_>) -> Result<(), Error> {
        let mut req = self.ec2.create_tags().resources(eni_id);
        for (k, v) in new_tags {
            req = req.tags(Tag::builder().key(*k).value(*v).build());
        }
        req.send()
            .await
            .map_err(|e| sdk_error("ec2:CreateTags", e))?;
        Ok(())
    }

    async fn untag_eni(&self, eni_id: &str, key: &str) -> Result<(), Error> {
        self.ec2
            .delete_tags()
            .resources(eni_id)
            .tags(Tag::builder().key(key).build())
            .send()
            .await
            .map_err(|e| sdk_error("ec2:DeleteTags", e))?;
        Ok(())
    }

    async fn send_command(&self, r: &CommandRequest) -> Result<String, Error> {
        const OP: &str = "ssm:SendCommand";
        let output_config = r.log_group.as_ref().map(|group| {
            CloudWatchOutputConfig::builder()
                .cloud_watch_output_enabled(true)
                .cloud_watch_log_group_name(group)
                .build()
        });
        let parameters = r
            .parameters()
            .into_iter()
            .map(|(name, value)| (name.to_string(), vec![value]))
            .collect();
        let out = self
            .ssm_send
            .send_command()
            .document_name(&r.document_name)
            .instance_ids(&r.instance_id)
            .set_parameters(Some(parameters))
            .comment(&r.comment)
            .timeout_seconds(r.timeout_seconds)
            .set_cloud_watch_output_config(output_config)
            .send()
            .await
            .map_err(|e| sdk_error(OP, e))?;
        out.command()
            .and_then(|c| c.command_id())
            .map(str::to_string)
            .ok_or_else(|| Error::aws(OP, "NoCommandId", "the answer carried no command id"))
    }

    async fn find_command(
        &self,
        document: &str,
        instance_id: &str,
        comment: &str,
    ) -> Result<Option<String>, Error> {
        const OP: &str = "ssm:ListCommands";
        // Whole seconds: the documented form is 2024-07-07T00:00:00Z.
        let since = aws_sdk_ssm::primitives::DateTime::from_secs(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_sub(LOOKBACK)
                .as_secs() as i64,
        );
        let filter = |key: CommandFilterKey, value: String| {
            CommandFilter::builder()
                .key(key)
                .value(value)
                .build()
                .map_err(|e| Error::aws(OP, "ConstructionFailure", e.to_string()))
        };
        let mut pages = self
            .ssm
            .list_commands()
            .instance_id(instance_id)
            .filters(filter(
                CommandFilterKey::DocumentName,
                document.to_string(),
            )?)
            .filters(filter(
                CommandFilterKey::InvokedAfter,
                since
                    .fmt(aws_sdk_ssm::primitives::DateTimeFormat::DateTime)
                    .map_err(|e| Error::aws(OP, "ConstructionFailure", e.to_string()))?,
            )?)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error(OP, e))?;
            if let Some(c) = page
                .commands()
                .iter()
                .find(|c| c.comment() == Some(comment))
            {
                return Ok(c.command_id().map(str::to_string));
            }
        }
        Ok(None)
    }

    async fn get_command(&self, command_id: &str) -> Result<Option<CommandInfo>, Error> {
        let res = self
            .ssm
            .list_commands()
            .command_id(command_id)
            .send()
            .await
            .map_err(|e| sdk_error("ssm:ListCommands", e));
        let out = match res {
            Ok(out) => out,
            Err(Error::Aws { code, .. }) if code == "InvalidCommandId" => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(out.commands().first().map(|c| CommandInfo {
            command_id: c.command_id().unwrap_or_default().into(),
            document_name: c.document_name().unwrap_or_default().into(),
            comment: c.comment().unwrap_or_default().into(),
            instance_ids: c.instance_ids().to_vec(),
            parameters: c.parameters().cloned().unwrap_or_default(),
        }))
    }

    async fn get_invocation(
        &self,
        command_id: &str,
        instance_id: &str,
        step: &str,
    ) -> Result<Invocation, Error> {
        let out = self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .plugin_name(step)
            .send()
            .await
            .map_err(|e| sdk_error("ssm:GetCommandInvocation", e))?;
        Ok(Invocation {
            status: out.status().cloned(),
            details: out.status_details().unwrap_or_default().into(),
            response_code: out.response_code(),
            stdout: out.standard_output_content().unwrap_or_default().into(),
            stderr: out.standard_error_content().unwrap_or_default().into(),
        })
    }
}
