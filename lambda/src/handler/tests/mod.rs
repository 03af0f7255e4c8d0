//! The decision logic against an in-memory account: every skip reason, the managed-instance
//! checks, exactly-once sending, the outcome of a finished command, and an ENI moving between
//! instances. tokio's paused clock makes the bounded waits cost nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::aws::{
    Attachment, CommandInfo, CommandRequest, Instance, Invocation, ManagedInstance, Tags,
};

const I: &str = "i-0000000000000000a";

const I2: &str = "i-0000000000000000b";

const E1: &str = "eni-00000000000000001";

const E0: &str = "eni-00000000000000000";

const CMD: &str = "00000000-0000-0000-0000-000000000001";

#[derive(Default)]
struct State {
    enis: HashMap<String, Eni>,
    instances: HashMap<String, Instance>,
    managed: HashMap<String, ManagedInstance>,
    /// Every command SSM holds (sent by the handler, or put there by a test).
    commands: Vec<(String, CommandRequest)>,
    /// Answers SendCommand gives instead of acting; `lost` ones act and then fail the answer.
    send_errors: VecDeque<(Error, bool)>,
    /// The run step's invocation per command id (and the download step's).
    invocations: HashMap<(String, String), Invocation>,
    attach_statuses: VecDeque<String>,
    calls: Vec<String>,
}

#[derive(Default)]
struct Fake(Mutex<State>);

fn online() -> ManagedInstance {
    ManagedInstance {
        ping_status: Some("Online".into()),
        platform_type: Some("Linux".into()),
        agent_version: "3.3.2746.0".into(),
    }
}

impl Fake {
    fn new() -> Self {
        let fake = Fake::default();
        {
            let mut s = fake.0.lock().unwrap();
            for id in [I, I2] {
                s.instances.insert(id.into(), instance(id));
                s.managed.insert(id.into(), online());
            }
            s.enis.insert(E1.into(), eni(E1, I, 1, 0));
            s.enis.insert(E0.into(), eni(E0, I, 0, 0));
        }
        fake
    }
    fn with(self, f: impl FnOnce(&mut State)) -> Self {
        f(&mut self.0.lock().unwrap());
        self
    }
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }
    fn sent(&self) -> Vec<CommandRequest> {
        self.state()
            .commands
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }
}

fn instance(id: &str) -> Instance {
    Instance {
        id: id.into(),
        platform: None,
        state: Some("running".into()),
        // Launched long ago: an unknown instance is unmanaged, not "still registering".
        launch_time: Some(SystemTime::UNIX_EPOCH),
        tags: HashMap::new(),
    }
}

fn eni(id: &str, instance: &str, device: i32, card: i32) -> Eni {
    Eni {
        id: id.into(),
        mac: "0a:00:00:00:00:01".into(),
        private_ips: vec!["10.0.1.10".into()],
        subnet_id: "subnet-00000001".into(),
        interface_type: "interface".into(),
        description: String::new(),
        requester_managed: false,
        tags: HashMap::new(),
        attachment: Some(Attachment {
            id: format!("eni-attach-{}", &id[4..]),
            instance_id: instance.into(),
            status: "attached".into(),
            device_index: device,
            network_card_index: card,
        }),
    }
}

fn scripted(e: &Error) -> Error {
    match e {
        Error::Aws {
            operation,
            code,
            message,
        } => Error::aws(operation, code.clone(), message.clone()),
        other => panic!("unsupported scripted error {other:?}"),
    }
}

impl Aws for Fake {
    async fn describe_eni(&self, eni_id: &str) -> Result<Option<Eni>, Error> {
        let mut s = self.state();
        s.calls.push(format!("describe_eni {eni_id}"));
        let status = s.attach_statuses.pop_front();
        Ok(s.enis.get(eni_id).cloned().map(|mut e| {
            if let (Some(st), Some(a)) = (status, e.attachment.as_mut()) {
                a.status = st.as_str().into();
            }
            e
        }))
    }
    async fn enis_of_instance(&self, instance_id: &str) -> Result<Vec<Eni>, Error> {
        let s = self.state();
        let mut v: Vec<Eni> = s
            .enis
            .values()
            .filter(|e| {
                e.attachment
                    .as_ref()
                    .is_some_and(|a| a.instance_id == instance_id)
            })
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }
    async fn enis_with_tag_key(&self, key: &str) -> Result<Vec<Eni>, Error> {
        let s = self.state();
        Ok(s.enis
            .values()
            .filter(|e| e.tags.contains_key(key))
            .cloned()
            .collect())
    }
    async fn describe_instance(&self, instance_id: &str) -> Result<Option<Instance>, Error> {
        let mut s = self.state();
        s.calls.push(format!("describe_instance {instance_id}"));
        Ok(s.instances.get(instance_id).cloned())
    }
    async fn managed_instance(&self, instance_id: &str) -> Result<Option<ManagedInstance>, Error> {
        let mut s = self.state();
        s.calls.push(format!("managed_instance {instance_id}"));
        Ok(s.managed.get(instance_id).cloned())
    }
    async fn tag_eni(&self, eni_id: &str, tags: Tags<'_>) -> Result<(), Error> {
        let mut s = self.state();
        let e = s.enis.get_mut(eni_id).expect("tagging an unknown ENI");
        for (k, v) in tags {
            e.tags.insert(k.to_string(), v.to_string());
        }
        Ok(())
    }
    async fn untag_eni(&self, eni_id: &str, key: &str) -> Result<(), Error> {
        let mut s = self.state();
        s.calls.push(format!("untag {eni_id} {key}"));
        s.enis.get_mut(eni_id).expect("an ENI").tags.remove(key);
        Ok(())
    }
    async fn send_command(&self, req: &CommandRequest) -> Result<String, Error> {
        let mut s = self.state();
        s.calls.push(format!("send {}", req.comment));
        let error = s.send_errors.pop_front();
        if let Some((e, false)) = &error {
            return Err(scripted(e));
        }
        let id = format!("00000000-0000-0000-0000-{:012}", s.commands.len() + 100);
        s.commands.push((id.clone(), req.clone()));
        match error {
            Some((e, _lost)) => Err(scripted(&e)),
            None => Ok(id),
        }
    }
    async fn find_command(
        &self,
        document: &str,
        instance_id: &str,
        comment: &str,
    ) -> Result<Option<String>, Error> {
        let mut s = self.state();
        s.calls.push(format!("find {comment}"));
        Ok(s.commands
            .iter()
            .find(|(_, c)| {
                c.document_name == document && c.instance_id == instance_id && c.comment == comment
            })
            .map(|(id, _)| id.clone()))
    }
    async fn get_command(&self, command_id: &str) -> Result<Option<CommandInfo>, Error> {
        let s = self.state();
        Ok(s.commands
            .iter()
            .find(|(id, _)| id == command_id)
            .map(|(id, c)| CommandInfo {
                command_id: id.clone(),
                document_name: c.document_name.clone(),
                comment: c.comment.clone(),
                instance_ids: vec![c.instance_id.clone()],
                parameters: c
                    .parameters()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), vec![v]))
                    .collect(),
            }))
    }
    async fn get_invocation(
        &self,
        command_id: &str,
        _instance_id: &str,
        step: &str,
    ) -> Result<Invocation, Error> {
        let mut s = self.state();
        s.calls.push(format!("invocation {step}"));
        s.invocations
            .get(&(command_id.to_string(), step.to_string()))
            .cloned()
            .ok_or_else(|| Error::aws("ssm:GetCommandInvocation", "InvocationDoesNotExist", ""))
    }
}

fn settings() -> Settings {
    settings_with(&[])
}

fn settings_with(extra: &[(&str, &str)]) -> Settings {
    let extra: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|k| match k {
        "SYMROUTE_DOCUMENT_NAME" => Some("symroute-doc".into()),
        other => extra.get(other).cloned(),
    })
    .unwrap()
}

fn attach_event_to(id: &str, eni: &str, instance: &str) -> Value {
    json!({
        "id": id, "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
        "detail": {
            "eventName": "AttachNetworkInterface",
            "requestParameters": {"networkInterfaceId": eni, "instanceId": instance, "deviceIndex": 1},
        }
    })
}

fn attach_event(eni: &str) -> Value {
    attach_event_to("ev-1", eni, I)
}

fn detach_event(id: &str, attachment: &str) -> Value {
    json!({
        "id": id, "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
        "detail": {"eventName": "DetachNetworkInterface", "requestParameters": {"attachmentId": attachment, "force": false}}
    })
}

fn running_event(state: &str) -> Value {
    json!({
        "id": "ev-3", "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
        "detail": {"instance-id": I, "state": state}
    })
}

fn status_event(id: &str, command: &str, document: &str) -> Value {
    json!({
        "id": id, "detail-type": "EC2 Command Invocation Status-change Notification", "source": "aws.ssm",
        "detail": {"command-id": command, "document-name": document, "instance-id": I, "status": "Failed"}
    })
}

async fn run(fake: &Fake, s: &Settings, raw: Value) -> Result<Decision, Error> {
    let mut trace = Trace::default();
    handle(fake, s, raw, &mut trace).await
}

async fn skip_code(fake: &Fake, s: &Settings, raw: Value) -> &'static str {
    match run(fake, s, raw).await {
        Ok(Decision::Skipped(skip)) => skip.code(),
        other => panic!("expected a skip, got {other:?}"),
    }
}

fn sent(d: Result<Decision, Error>) -> Vec<Sent> {
    match d {
        Ok(Decision::Sent(s)) => s,
        other => panic!("expected commands, got {other:?}"),
    }
}

fn attach_tag(eni: &str) -> String {
    attachment_tag(&format!("eni-attach-{}", &eni[4..]))
}

mod moves;
mod outcomes;
mod sending;
mod skips;
