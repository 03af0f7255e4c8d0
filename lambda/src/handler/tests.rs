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
                parameters: HashMap::from([
                    ("action".into(), vec![c.action.as_str().into()]),
                    ("target".into(), vec![c.target.clone()]),
                ]),
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

#[tokio::test(start_paused = true)]
async fn attach_tags_the_attachment_and_sends_apply_for_that_eni_only() {
    let fake = Fake::new();
    let s = sent(run(&fake, &settings(), attach_event(E1)).await);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].action, s[0].target.as_str()), (Action::Apply, E1));
    assert!(!s[0].already_sent);
    let cmds = fake.sent();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].target, E1);
    assert_eq!(cmds[0].comment, format!("symroute ev-1 {E1} #1"));
    assert_eq!(cmds[0].timeout_seconds, 600);
    assert_eq!(
        fake.state().enis[E1]
            .tags
            .get(&attach_tag(E1))
            .map(String::as_str),
        Some(I)
    );
}

#[tokio::test(start_paused = true)]
async fn failed_call_is_skipped_without_any_api_call() {
    let fake = Fake::new();
    let mut raw = attach_event(E1);
    raw["detail"]["errorCode"] = json!("Client.InvalidParameterValue");
    assert_eq!(skip_code(&fake, &settings(), raw).await, "failed-call");
    assert!(fake.state().calls.is_empty());
}

#[tokio::test(start_paused = true)]
async fn primary_interface_is_skipped_but_device_zero_of_card_one_is_not() {
    let fake = Fake::new();
    assert_eq!(
        skip_code(&fake, &settings(), attach_event(E0)).await,
        "primary-interface"
    );
    fake.state().enis.insert(E0.into(), eni(E0, I, 0, 1));
    assert_eq!(
        sent(run(&fake, &settings(), attach_event(E0)).await).len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn eni_level_skips_send_nothing() {
    type Change = Box<dyn Fn(&mut Eni)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "interface-type",
            Box::new(|e| e.interface_type = "efa".into()),
        ),
        (
            "requester-managed",
            Box::new(|e| e.requester_managed = true),
        ),
        (
            "owned-by-other",
            Box::new(|e| {
                e.tags
                    .insert("node.k8s.amazonaws.com/instance_id".into(), I.into());
            }),
        ),
        (
            "owned-by-other",
            Box::new(|e| e.description = "aws-K8S-i-0abc".into()),
        ),
        (
            "owned-by-other",
            Box::new(|e| e.description = format!("Cilium-CNI ({I})")),
        ),
        (
            "skip-tag",
            Box::new(|e| {
                e.tags.insert("symroute:skip".into(), String::new());
            }),
        ),
        ("not-attached", Box::new(|e| e.attachment = None)),
        (
            "not-attached",
            Box::new(|e| {
                e.attachment.as_mut().unwrap().instance_id = I2.into();
            }),
        ),
    ];
    for (code, change) in cases {
        let fake = Fake::new();
        change(fake.state().enis.get_mut(E1).unwrap());
        assert_eq!(skip_code(&fake, &settings(), attach_event(E1)).await, code);
        assert!(fake.sent().is_empty(), "{code}");
    }
    let fake = Fake::new();
    fake.state().enis.remove(E1);
    assert_eq!(
        skip_code(&fake, &settings(), attach_event(E1)).await,
        "eni-gone"
    );
}

#[tokio::test(start_paused = true)]
async fn owner_markers_are_configurable() {
    let fake = Fake::new();
    fake.state().enis.get_mut(E1).unwrap().description = "team-x router".into();
    let s = settings_with(&[("SYMROUTE_OWNER_MARKERS", "description:team-x")]);
    assert_eq!(
        skip_code(&fake, &s, attach_event(E1)).await,
        "owned-by-other"
    );
    // Without the default markers, a CNI-described ENI is configured.
    fake.state().enis.get_mut(E1).unwrap().description = "aws-K8S-i-0abc".into();
    assert_eq!(sent(run(&fake, &s, attach_event(E1)).await).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn instance_level_skips_send_nothing() {
    type Change = Box<dyn Fn(&mut Instance)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "not-linux",
            Box::new(|i| i.platform = Some("windows".into())),
        ),
        (
            "not-running",
            Box::new(|i| i.state = Some("stopping".into())),
        ),
        (
            "skip-tag",
            Box::new(|i| {
                i.tags.insert("symroute:skip".into(), "yes".into());
            }),
        ),
    ];
    for (code, change) in cases {
        let fake = Fake::new();
        change(fake.state().instances.get_mut(I).unwrap());
        assert_eq!(skip_code(&fake, &settings(), attach_event(E1)).await, code);
        assert!(fake.sent().is_empty());
    }
    let fake = Fake::new();
    fake.state().instances.remove(I);
    assert_eq!(
        skip_code(&fake, &settings(), attach_event(E1)).await,
        "instance-gone"
    );
}

#[tokio::test(start_paused = true)]
async fn an_instance_ssm_cannot_run_the_command_on_is_a_skip_not_a_failed_run() {
    type Change = Box<dyn Fn(&mut ManagedInstance)>;
    let cases: Vec<(&str, Change)> = vec![
        (
            "offline",
            Box::new(|m| m.ping_status = Some("ConnectionLost".into())),
        ),
        (
            "not-linux",
            Box::new(|m| m.platform_type = Some("Windows".into())),
        ),
        (
            "agent-too-old",
            Box::new(|m| m.agent_version = "2.2.30.0".into()),
        ),
    ];
    for (code, change) in cases {
        let fake = Fake::new();
        change(fake.state().managed.get_mut(I).unwrap());
        let skip = match run(&fake, &settings(), attach_event(E1)).await {
            Ok(Decision::Skipped(skip)) => skip,
            other => panic!("{other:?}"),
        };
        assert_eq!(skip.code(), code);
        assert_eq!(skip.is_unreachable(), code != "not-linux");
        assert!(fake.sent().is_empty(), "{code}");
    }
    // Unknown to SSM and launched long ago: unmanaged.
    let fake = Fake::new();
    fake.state().managed.remove(I);
    assert_eq!(
        skip_code(&fake, &settings(), attach_event(E1)).await,
        "not-managed"
    );
    assert!(fake.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_just_launched_instance_is_retried_later_not_waited_for() {
    let fake = Fake::new();
    fake.state().managed.remove(I);
    fake.state().instances.get_mut(I).unwrap().launch_time =
        Some(SystemTime::now() - Duration::from_secs(30));
    let start = tokio::time::Instant::now();
    let err = run(&fake, &settings(), attach_event(E1)).await.unwrap_err();
    assert!(matches!(err, Error::NotRegisteredYet { .. }), "{err}");
    assert_eq!(start.elapsed(), Duration::ZERO, "it waited");
    assert!(fake.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn attaching_is_waited_for_with_a_bound() {
    let fake = Fake::new().with(|s| {
        s.attach_statuses = ["attaching", "attaching"].map(String::from).into();
    });
    assert_eq!(
        sent(run(&fake, &settings(), attach_event(E1)).await).len(),
        1
    );
    let fake = Fake::new().with(|s| s.attach_statuses = vec!["attaching".to_string(); 1000].into());
    let err = run(&fake, &settings(), attach_event(E1)).await.unwrap_err();
    assert!(matches!(err, Error::StillAttaching { .. }), "{err}");
    assert!(fake.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_same_event_twice_sends_one_command() {
    let fake = Fake::new();
    let first = sent(run(&fake, &settings(), attach_event(E1)).await);
    let again = sent(run(&fake, &settings(), attach_event(E1)).await);
    assert_eq!(fake.sent().len(), 1);
    assert_eq!(first[0].command_id, again[0].command_id);
    assert!(again[0].already_sent);
    // Another event for the same ENI is another command.
    sent(run(&fake, &settings(), attach_event_to("ev-other", E1, I)).await);
    assert_eq!(fake.sent().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lost_send_answer_is_looked_up_not_sent_again() {
    for code in [
        "DispatchFailure",
        "Timeout",
        "ResponseError",
        "InternalServerError",
        "HTTP503",
    ] {
        let fake = Fake::new().with(|s| {
            s.send_errors
                .push_back((Error::aws("ssm:SendCommand", code, "answer lost"), true));
        });
        let s = sent(run(&fake, &settings(), attach_event(E1)).await);
        assert_eq!(fake.sent().len(), 1, "{code}: a second command was sent");
        assert!(s[0].already_sent, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn refused_sends_are_retried_within_bounds() {
    // Throttled, and a 5xx that did not act: sent (once) on a later attempt.
    let fake = Fake::new().with(|s| {
        s.send_errors.push_back((
            Error::aws("ssm:SendCommand", "ThrottlingException", "slow"),
            false,
        ));
        s.send_errors.push_back((
            Error::aws("ssm:SendCommand", "InternalServerError", "oops"),
            false,
        ));
    });
    sent(run(&fake, &settings(), attach_event(E1)).await);
    assert_eq!(fake.sent().len(), 1);
    // Attempts are bounded: the last error is the answer.
    let fake = Fake::new().with(|s| {
        for _ in 0..10 {
            s.send_errors.push_back((
                Error::aws("ssm:SendCommand", "ThrottlingException", "slow"),
                false,
            ));
        }
    });
    let err = run(&fake, &settings(), attach_event(E1)).await.unwrap_err();
    assert!(err.is_throttling(), "{err}");
    assert_eq!(
        fake.state()
            .calls
            .iter()
            .filter(|c| c.starts_with("send "))
            .count(),
        5
    );
    // A definite refusal is not retried.
    let fake = Fake::new().with(|s| {
        s.send_errors.push_back((
            Error::aws("ssm:SendCommand", "InvalidParameters", "no"),
            false,
        ));
    });
    assert!(run(&fake, &settings(), attach_event(E1)).await.is_err());
    assert_eq!(
        fake.state()
            .calls
            .iter()
            .filter(|c| c.starts_with("send "))
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn detach_removes_on_the_instance_the_attachment_named_and_drops_its_tag() {
    let fake = Fake::new();
    sent(run(&fake, &settings(), attach_event(E1)).await);
    let attachment = format!("eni-attach-{}", &E1[4..]);
    fake.state().enis.get_mut(E1).unwrap().attachment = None;
    let s = sent(run(&fake, &settings(), detach_event("ev-2", &attachment)).await);
    assert_eq!(
        (s[0].action, s[0].target.as_str(), s[0].instance_id.as_str()),
        (Action::Remove, E1, I)
    );
    assert!(!fake.state().enis[E1].tags.contains_key(&attach_tag(E1)));
    // Unknown attachments: nothing to do.
    assert_eq!(
        skip_code(
            &fake,
            &settings(),
            detach_event("ev-9", "eni-attach-0123456789abcdef0")
        )
        .await,
        "unknown-attachment"
    );
}

/// Moves E1 from I to I2 (new attachment id) and hands the two events over in `order`.
async fn move_eni(order: [&str; 2]) -> Fake {
    let fake = Fake::new();
    sent(run(&fake, &settings(), attach_event(E1)).await);
    let old = format!("eni-attach-{}", &E1[4..]);
    {
        let mut s = fake.state();
        let a = s.enis.get_mut(E1).unwrap().attachment.as_mut().unwrap();
        a.id = "eni-attach-0000000000000000b".into();
        a.instance_id = I2.into();
    }
    for which in order {
        let raw = if which == "attach" {
            attach_event_to("ev-attach-b", E1, I2)
        } else {
            detach_event("ev-detach-a", &old)
        };
        sent(run(&fake, &settings(), raw).await);
    }
    fake
}

#[tokio::test(start_paused = true)]
async fn an_eni_moved_between_instances_is_cleaned_on_a_and_configured_on_b_in_either_order() {
    for order in [["detach", "attach"], ["attach", "detach"]] {
        let fake = move_eni(order).await;
        let cmds: Vec<(String, Action)> = fake
            .sent()
            .iter()
            .map(|c| (c.instance_id.clone(), c.action))
            .collect();
        assert_eq!(cmds.len(), 3, "{order:?}: {cmds:?}");
        assert!(
            cmds.contains(&(I.to_string(), Action::Remove)),
            "{order:?}: A not cleaned: {cmds:?}"
        );
        assert!(
            cmds.contains(&(I2.to_string(), Action::Apply)),
            "{order:?}: B not configured: {cmds:?}"
        );
        let tags = fake.state().enis[E1].tags.clone();
        assert_eq!(
            tags.get(&attachment_tag("eni-attach-0000000000000000b"))
                .map(String::as_str),
            Some(I2),
            "{order:?}"
        );
        assert!(
            !tags.contains_key(&attach_tag(E1)),
            "{order:?}: A's tag left"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn reattached_to_the_same_instance_is_not_removed() {
    let fake = Fake::new();
    sent(run(&fake, &settings(), attach_event(E1)).await);
    let old = format!("eni-attach-{}", &E1[4..]);
    fake.state()
        .enis
        .get_mut(E1)
        .unwrap()
        .attachment
        .as_mut()
        .unwrap()
        .id = "eni-attach-0000000000000000c".into();
    assert_eq!(
        skip_code(&fake, &settings(), detach_event("ev-2", &old)).await,
        "reattached"
    );
    assert_eq!(fake.sent().len(), 1);
    assert!(!fake.state().enis[E1].tags.contains_key(&attach_tag(E1)));
}

#[tokio::test(start_paused = true)]
async fn instance_running_names_each_managed_eni_and_never_sends_all() {
    let fake = Fake::new().with(|s| {
        s.enis.insert(
            "eni-00000000000000002".into(),
            eni("eni-00000000000000002", I, 2, 0),
        );
        let mut skipped = eni("eni-00000000000000003", I, 3, 0);
        skipped.tags.insert("symroute:skip".into(), String::new());
        s.enis.insert(skipped.id.clone(), skipped);
        let mut cni = eni("eni-00000000000000004", I, 4, 0);
        cni.description = "aws-K8S-x".into();
        s.enis.insert(cni.id.clone(), cni);
    });
    let s = sent(run(&fake, &settings(), running_event("running")).await);
    let targets: Vec<&str> = s.iter().map(|c| c.target.as_str()).collect();
    assert_eq!(targets, [E1, "eni-00000000000000002"]);
    assert!(fake
        .sent()
        .iter()
        .all(|c| c.target != "all" && c.action == Action::Apply));
    // Again (at-least-once delivery): nothing new.
    let again = sent(run(&fake, &settings(), running_event("running")).await);
    assert!(again.iter().all(|c| c.already_sent));
    assert_eq!(fake.sent().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn instance_running_skips() {
    let fake = Fake::new();
    assert_eq!(
        skip_code(&fake, &settings(), running_event("stopped")).await,
        "not-running"
    );
    fake.state().enis.remove(E1);
    assert_eq!(
        skip_code(&fake, &settings(), running_event("running")).await,
        "no-secondary-enis"
    );
}

fn ended(fake: &Fake, command: &str, status: &str, code: i32, stdout: &str) {
    fake.state().invocations.insert(
        (command.to_string(), command::RUN_STEP.to_string()),
        Invocation {
            status: Some(status.into()),
            details: status.into(),
            response_code: code,
            stdout: stdout.into(),
            stderr: String::new(),
        },
    );
}

#[tokio::test(start_paused = true)]
async fn exit_3_is_sent_again_bounded_and_a_repeated_status_event_sends_nothing_new() {
    let fake = Fake::new();
    let first = sent(run(&fake, &settings(), attach_event(E1)).await).remove(0);
    let mut command = first.command_id.clone();
    for attempt in 2..=4 {
        ended(&fake, &command, "Failed", 3, "{\"exit_code\":3}");
        let again = sent(
            run(
                &fake,
                &settings(),
                status_event("st", &command, "symroute-doc"),
            )
            .await,
        );
        assert_eq!(again[0].target, E1);
        assert!(!again[0].already_sent);
        // The status event delivered twice: the same resend, found.
        let dup = sent(
            run(
                &fake,
                &settings(),
                status_event("st2", &command, "symroute-doc"),
            )
            .await,
        );
        assert_eq!(dup[0].command_id, again[0].command_id);
        assert!(dup[0].already_sent);
        assert_eq!(
            fake.sent().last().unwrap().comment,
            format!("symroute ev-1 {E1} #{attempt}")
        );
        command = again[0].command_id.clone();
    }
    ended(&fake, &command, "Failed", 3, "{\"exit_code\":3}");
    let err = run(
        &fake,
        &settings(),
        status_event("st", &command, "symroute-doc"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::CommandFailed(_)), "{err}");
    assert!(err.to_string().contains("4 attempts"), "{err}");
    assert_eq!(fake.sent().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn exit_1_and_2_fail_loudly_with_the_agents_report_and_send_nothing() {
    for (code, says) in [(1, "exit 1"), (2, "exit 2")] {
        let fake = Fake::new();
        let c = sent(run(&fake, &settings(), attach_event(E1)).await).remove(0);
        ended(
            &fake,
            &c.command_id,
            "Failed",
            code,
            "{\"error\":\"the kernel refused\"}",
        );
        let err = run(
            &fake,
            &settings(),
            status_event("st", &c.command_id, "symroute-doc"),
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(says) && text.contains("the kernel refused"),
            "{text}"
        );
        assert!(text.contains(&c.command_id) && text.contains(E1), "{text}");
        assert_eq!(fake.sent().len(), 1, "a failed command was sent again");
        // The invocation was read for the run step, by name.
        assert!(fake
            .state()
            .calls
            .contains(&format!("invocation {}", command::RUN_STEP)));
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_step_that_never_ran_is_explained_by_the_download_step() {
    let fake = Fake::new();
    let c = sent(run(&fake, &settings(), attach_event(E1)).await).remove(0);
    ended(&fake, &c.command_id, "Failed", -1, "");
    fake.state().invocations.insert(
        (c.command_id.clone(), command::DOWNLOAD_STEP.to_string()),
        Invocation {
            status: Some("Failed".into()),
            stderr: "AccessDenied: s3:ListBucket".into(),
            response_code: 1,
            ..Invocation::default()
        },
    );
    let err = run(
        &fake,
        &settings(),
        status_event("st", &c.command_id, "symroute-doc"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("AccessDenied"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn status_events_of_other_documents_and_commands_are_left_alone() {
    let fake = Fake::new();
    assert_eq!(
        skip_code(
            &fake,
            &settings(),
            status_event("st", CMD, "AWS-RunShellScript")
        )
        .await,
        "other-document"
    );
    assert_eq!(
        skip_code(&fake, &settings(), status_event("st", CMD, "symroute-doc")).await,
        "not-ours"
    );
    // A document ARN in the setting matches the name in the event.
    let s = settings_with(&[]);
    let arn = Settings {
        document_name: "arn:aws:ssm:us-east-1:123456789012:document/symroute-doc".into(),
        ..s
    };
    assert_eq!(
        skip_code(&fake, &arn, status_event("st", CMD, "symroute-doc")).await,
        "not-ours"
    );
    assert!(fake.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn hostile_events_give_errors_not_panics() {
    let fake = Fake::new();
    for raw in [
        json!(null),
        json!({}),
        json!({"detail-type": 5}),
        json!({"detail-type": "x", "source": "y", "detail": {}}),
        status_event("st", "not-a-command-id", "symroute-doc"),
    ] {
        let err = run(&fake, &settings(), raw).await.unwrap_err();
        assert!(
            matches!(err, Error::BadEvent(_) | Error::Unsupported(_)),
            "{err}"
        );
    }
    assert!(fake.state().calls.is_empty());
}
