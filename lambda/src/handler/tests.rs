//! The decision logic against an in-memory account: every skip reason, retries and command
//! following, with tokio's paused clock so waits cost nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::aws::{Attachment, CommandRequest, Instance, Invocation, Tags};

#[derive(Default)]
struct State {
    enis: HashMap<String, Eni>,
    instances: HashMap<String, Instance>,
    commands: Vec<CommandRequest>,
    /// Answers SendCommand gives before it succeeds.
    send_errors: VecDeque<Error>,
    /// Answers GetCommandInvocation gives, in order; the last one repeats.
    invocations: VecDeque<Result<Invocation, Error>>,
    /// Attachment statuses DescribeNetworkInterfaces reports, in order; then the stored one.
    attach_statuses: VecDeque<String>,
    calls: Vec<String>,
}

#[derive(Default)]
struct Fake(Mutex<State>);

fn success() -> Invocation {
    Invocation {
        status: "Success".into(),
        details: "Success".into(),
        stdout: "{\"ok\":true}".into(),
        stderr: String::new(),
    }
}

impl Fake {
    fn new() -> Self {
        let fake = Fake::default();
        {
            let mut s = fake.0.lock().unwrap();
            s.instances.insert(
                "i-0000000000000000a".into(),
                instance("i-0000000000000000a"),
            );
            s.enis.insert(
                "eni-00000000000000001".into(),
                eni("eni-00000000000000001", 1, 0),
            );
            s.enis.insert(
                "eni-00000000000000000".into(),
                eni("eni-00000000000000000", 0, 0),
            );
            s.invocations.push_back(Ok(success()));
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
}

fn instance(id: &str) -> Instance {
    Instance {
        id: id.into(),
        platform: None,
        state: "running".into(),
        tags: HashMap::new(),
    }
}

fn eni(id: &str, device: i32, card: i32) -> Eni {
    Eni {
        id: id.into(),
        mac: "0a:00:00:00:00:01".into(),
        private_ips: vec!["10.0.1.10".into()],
        subnet_id: "subnet-00000001".into(),
        interface_type: "interface".into(),
        description: String::new(),
        tags: HashMap::new(),
        attachment: Some(Attachment {
            id: format!("eni-attach-{}", &id[4..]),
            instance_id: "i-0000000000000000a".into(),
            status: "attached".into(),
            device_index: device,
            network_card_index: card,
        }),
    }
}

impl Aws for Fake {
    async fn describe_eni(&self, eni_id: &str) -> Result<Option<Eni>, Error> {
        let mut s = self.state();
        s.calls.push(format!("describe_eni {eni_id}"));
        let status = s.attach_statuses.pop_front();
        Ok(s.enis.get(eni_id).cloned().map(|mut e| {
            if let (Some(st), Some(a)) = (status, e.attachment.as_mut()) {
                a.status = st;
            }
            e
        }))
    }
    async fn enis_of_instance(&self, instance_id: &str) -> Result<Vec<Eni>, Error> {
        let s = self.state();
        Ok(s.enis
            .values()
            .filter(|e| {
                e.attachment
                    .as_ref()
                    .is_some_and(|a| a.instance_id == instance_id)
            })
            .cloned()
            .collect())
    }
    async fn find_eni_by_tag(&self, key: &str, value: &str) -> Result<Option<Eni>, Error> {
        let s = self.state();
        Ok(s.enis
            .values()
            .find(|e| e.tags.get(key).is_some_and(|v| v == value))
            .cloned())
    }
    async fn describe_instance(&self, instance_id: &str) -> Result<Option<Instance>, Error> {
        let mut s = self.state();
        s.calls.push(format!("describe_instance {instance_id}"));
        Ok(s.instances.get(instance_id).cloned())
    }
    async fn tag_eni(&self, eni_id: &str, tags: Tags<'_>) -> Result<(), Error> {
        let mut s = self.state();
        let e = s.enis.get_mut(eni_id).expect("tagging an unknown ENI");
        for (k, v) in tags {
            e.tags.insert(k.to_string(), v.to_string());
        }
        Ok(())
    }
    async fn send_command(&self, req: &CommandRequest) -> Result<String, Error> {
        let mut s = self.state();
        if let Some(e) = s.send_errors.pop_front() {
            return Err(e);
        }
        s.commands.push(req.clone());
        Ok(format!("cmd-{}", s.commands.len()))
    }
    async fn get_invocation(
        &self,
        _command_id: &str,
        _instance_id: &str,
    ) -> Result<Invocation, Error> {
        let mut s = self.state();
        s.calls.push("get_invocation".into());
        if s.invocations.len() > 1 {
            s.invocations.pop_front().unwrap()
        } else {
            match s.invocations.front().unwrap() {
                Ok(i) => Ok(i.clone()),
                Err(Error::Aws {
                    operation,
                    code,
                    message,
                }) => Err(Error::aws(operation, code.clone(), message.clone())),
                Err(e) => panic!("unsupported scripted error {e:?}"),
            }
        }
    }
}

type Change<T> = Box<dyn Fn(&mut T)>;

fn settings() -> Settings {
    Settings::from_lookup(|k| match k {
        "SYMROUTE_DOCUMENT_NAME" => Some("symroute-doc".into()),
        "SYMROUTE_WAIT_SECONDS" => Some("30".into()),
        _ => None,
    })
    .unwrap()
}

fn attach_event(eni: &str) -> Value {
    json!({
        "id": "ev-1", "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
        "detail": {
            "eventName": "AttachNetworkInterface",
            "requestParameters": {"networkInterfaceId": eni, "instanceId": "i-0000000000000000a", "deviceIndex": 1},
            "responseElements": {"attachmentId": format!("eni-attach-{}", &eni[4..])}
        }
    })
}

fn detach_event(attachment: &str) -> Value {
    json!({
        "id": "ev-2", "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
        "detail": {"eventName": "DetachNetworkInterface", "requestParameters": {"attachmentId": attachment, "force": false}}
    })
}

fn running_event(state: &str) -> Value {
    json!({
        "id": "ev-3", "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
        "detail": {"instance-id": "i-0000000000000000a", "state": state}
    })
}

async fn run(fake: &Fake, s: &Settings, raw: Value) -> Result<Decision, Error> {
    let mut trace = Trace::default();
    handle(fake, s, raw, &mut trace).await
}

async fn skip_code(fake: &Fake, raw: Value) -> &'static str {
    match run(fake, &settings(), raw).await {
        Ok(Decision::Skipped(skip)) => {
            assert!(!skip.reason().is_empty());
            assert!(fake.state().commands.is_empty(), "a skip sent a command");
            skip.code()
        }
        other => panic!("expected a skip, got {other:?}"),
    }
}

fn sent(d: Result<Decision, Error>) -> Sent {
    match d {
        Ok(Decision::Sent(s)) => s,
        other => panic!("expected a command, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn attach_tags_the_eni_and_sends_apply() {
    let fake = Fake::new();
    let s = sent(run(&fake, &settings(), attach_event("eni-00000000000000001")).await);
    assert_eq!(
        (s.action, s.target.as_str(), s.status.as_str()),
        (Action::Apply, "eni-00000000000000001", "Success")
    );
    let st = fake.state();
    assert_eq!(st.commands.len(), 1);
    let c = &st.commands[0];
    assert_eq!(
        (c.document_name.as_str(), c.instance_id.as_str()),
        ("symroute-doc", "i-0000000000000000a")
    );
    assert_eq!(c.comment, "symroute ev-1");
    let tags = &st.enis["eni-00000000000000001"].tags;
    assert_eq!(tags[TAG_INSTANCE], "i-0000000000000000a");
    assert_eq!(tags[TAG_ATTACHMENT], "eni-attach-00000000000000001");
}

#[tokio::test(start_paused = true)]
async fn failed_call_is_skipped_without_any_api_call() {
    let fake = Fake::new();
    let mut raw = attach_event("eni-00000000000000001");
    raw["detail"]["errorCode"] = json!("Client.InvalidParameterValue");
    assert_eq!(skip_code(&fake, raw).await, "failed-call");
    assert!(fake.state().calls.is_empty());
}

#[tokio::test(start_paused = true)]
async fn primary_interface_is_skipped_but_device_zero_of_card_one_is_not() {
    let fake = Fake::new();
    assert_eq!(
        skip_code(&fake, attach_event("eni-00000000000000000")).await,
        "primary-interface"
    );
    let fake = Fake::new().with(|s| {
        s.enis.insert(
            "eni-00000000000000002".into(),
            eni("eni-00000000000000002", 0, 1),
        );
    });
    sent(run(&fake, &settings(), attach_event("eni-00000000000000002")).await);
}

#[tokio::test(start_paused = true)]
async fn eni_level_skips() {
    let e = "eni-00000000000000001";
    let cases: Vec<(Change<Eni>, &str)> = vec![
        (
            Box::new(|e| e.interface_type = "efa".into()),
            "interface-type",
        ),
        (
            Box::new(|e| e.interface_type = "trunk".into()),
            "interface-type",
        ),
        (
            Box::new(|e| {
                e.tags
                    .insert("node.k8s.amazonaws.com/instance_id".into(), "i-1".into());
            }),
            "vpc-cni",
        ),
        (
            Box::new(|e| e.description = "aws-K8S-i-0123456789abcdef0".into()),
            "vpc-cni",
        ),
        (
            Box::new(|e| {
                e.tags.insert("symroute:skip".into(), "".into());
            }),
            "skip-tag",
        ),
        (Box::new(|e| e.attachment = None), "not-attached"),
        (
            Box::new(|e| e.attachment.as_mut().unwrap().instance_id = "i-0000000000000000b".into()),
            "not-attached",
        ),
    ];
    for (change, code) in cases {
        let fake = Fake::new().with(|s| change(s.enis.get_mut(e).unwrap()));
        assert_eq!(skip_code(&fake, attach_event(e)).await, code);
    }
    let fake = Fake::new().with(|s| {
        s.enis.remove(e);
    });
    assert_eq!(skip_code(&fake, attach_event(e)).await, "eni-gone");
}

#[tokio::test(start_paused = true)]
async fn instance_level_skips() {
    let e = "eni-00000000000000001";
    let i = "i-0000000000000000a";
    let cases: Vec<(Change<Instance>, &str)> = vec![
        (
            Box::new(|i| i.platform = Some("windows".into())),
            "not-linux",
        ),
        (
            Box::new(|i| i.platform = Some("Windows with SQL Server Standard".into())),
            "not-linux",
        ),
        (Box::new(|i| i.state = "stopped".into()), "not-running"),
        (Box::new(|i| i.state = "pending".into()), "not-running"),
        (
            Box::new(|i| {
                i.tags.insert("symroute:skip".into(), "yes".into());
            }),
            "skip-tag",
        ),
    ];
    for (change, code) in cases {
        let fake = Fake::new().with(|s| change(s.instances.get_mut(i).unwrap()));
        assert_eq!(skip_code(&fake, attach_event(e)).await, code);
        assert!(
            !fake.state().enis[e].tags.contains_key(TAG_INSTANCE),
            "skipped ENI was tagged"
        );
    }
    let fake = Fake::new().with(|s| {
        s.instances.remove(i);
    });
    assert_eq!(skip_code(&fake, attach_event(e)).await, "instance-gone");
    let linux =
        Fake::new().with(|s| s.instances.get_mut(i).unwrap().platform = Some("Linux/UNIX".into()));
    sent(run(&linux, &settings(), attach_event(e)).await);
}

#[tokio::test(start_paused = true)]
async fn custom_skip_tag() {
    let e = "eni-00000000000000001";
    let s = Settings {
        skip_tag: "team:no-symroute".into(),
        ..settings()
    };
    let fake = Fake::new().with(|st| {
        st.enis
            .get_mut(e)
            .unwrap()
            .tags
            .insert("symroute:skip".into(), "".into());
    });
    sent(run(&fake, &s, attach_event(e)).await);
    let fake = Fake::new().with(|st| {
        st.enis
            .get_mut(e)
            .unwrap()
            .tags
            .insert("team:no-symroute".into(), "".into());
    });
    assert!(matches!(
        run(&fake, &s, attach_event(e)).await,
        Ok(Decision::Skipped(Skip::Tagged { .. }))
    ));
}

#[tokio::test(start_paused = true)]
async fn attaching_is_waited_for_with_a_bound() {
    let e = "eni-00000000000000001";
    let fake = Fake::new().with(|s| {
        s.attach_statuses
            .extend(["attaching".to_string(), "attaching".to_string()])
    });
    sent(run(&fake, &settings(), attach_event(e)).await);
    assert_eq!(
        fake.state()
            .calls
            .iter()
            .filter(|c| c.starts_with("describe_eni"))
            .count(),
        3
    );

    let fake = Fake::new().with(|s| {
        s.attach_statuses
            .extend(std::iter::repeat_n("attaching".to_string(), 1000))
    });
    let err = run(&fake, &settings(), attach_event(e)).await.unwrap_err();
    assert!(matches!(err, Error::StillAttaching { .. }), "{err}");
    assert!(err.to_string().contains(e));
    assert!(fake.state().commands.is_empty());
}

#[tokio::test(start_paused = true)]
async fn detach_finds_the_eni_by_its_attachment_tag() {
    let e = "eni-00000000000000001";
    let fake = Fake::new();
    sent(run(&fake, &settings(), attach_event(e)).await);
    // Detached: EC2 forgets the attachment, the tags stay.
    fake.state().enis.get_mut(e).unwrap().attachment = None;
    let s = sent(
        run(
            &fake,
            &settings(),
            detach_event("eni-attach-00000000000000001"),
        )
        .await,
    );
    assert_eq!(
        (s.action, s.target.as_str(), s.instance_id.as_str()),
        (Action::Remove, e, "i-0000000000000000a")
    );
    assert_eq!(fake.state().commands.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn detach_skips() {
    let fake = Fake::new();
    assert_eq!(
        skip_code(&fake, detach_event("eni-attach-0000000000000000f")).await,
        "unknown-attachment"
    );

    // Re-attached since: removing would undo the newer attachment.
    let fake = Fake::new().with(|s| {
        s.enis
            .get_mut("eni-00000000000000001")
            .unwrap()
            .tags
            .extend([
                (TAG_INSTANCE.to_string(), "i-0000000000000000a".to_string()),
                (
                    TAG_ATTACHMENT.to_string(),
                    "eni-attach-0000000000000000e".to_string(),
                ),
            ]);
    });
    assert_eq!(
        skip_code(&fake, detach_event("eni-attach-0000000000000000e")).await,
        "reattached"
    );

    let fake = Fake::new().with(|s| {
        let e = s.enis.get_mut("eni-00000000000000001").unwrap();
        e.attachment = None;
        e.tags.extend([
            (TAG_INSTANCE.to_string(), "i-0000000000000000a".to_string()),
            (
                TAG_ATTACHMENT.to_string(),
                "eni-attach-0000000000000000e".to_string(),
            ),
        ]);
        s.instances.get_mut("i-0000000000000000a").unwrap().state = "terminated".into();
    });
    assert_eq!(
        skip_code(&fake, detach_event("eni-attach-0000000000000000e")).await,
        "not-running"
    );
}

#[tokio::test(start_paused = true)]
async fn instance_running_applies_all_once_and_tags_secondaries() {
    let fake = Fake::new().with(|s| {
        s.enis.insert(
            "eni-00000000000000002".into(),
            eni("eni-00000000000000002", 2, 0),
        );
        let mut cni = eni("eni-00000000000000003", 3, 0);
        cni.description = "aws-K8S-i-0000000000000000a".into();
        s.enis.insert(cni.id.clone(), cni);
    });
    let s = sent(run(&fake, &settings(), running_event("running")).await);
    assert_eq!((s.action, s.target.as_str()), (Action::Apply, "all"));
    let st = fake.state();
    assert_eq!(st.commands.len(), 1);
    assert!(st.enis["eni-00000000000000001"]
        .tags
        .contains_key(TAG_ATTACHMENT));
    assert!(st.enis["eni-00000000000000002"]
        .tags
        .contains_key(TAG_ATTACHMENT));
    assert!(!st.enis["eni-00000000000000003"]
        .tags
        .contains_key(TAG_ATTACHMENT));
    assert!(!st.enis["eni-00000000000000000"]
        .tags
        .contains_key(TAG_ATTACHMENT));
}

#[tokio::test(start_paused = true)]
async fn instance_running_skips() {
    let fake = Fake::new().with(|s| {
        s.enis.remove("eni-00000000000000001");
    });
    assert_eq!(
        skip_code(&fake, running_event("running")).await,
        "no-secondary-enis"
    );
    let fake = Fake::new();
    assert_eq!(
        skip_code(&fake, running_event("stopping")).await,
        "not-running"
    );
    assert!(fake.state().calls.is_empty());
}

#[tokio::test(start_paused = true)]
async fn invalid_instance_and_throttling_are_retried_within_bounds() {
    let e = "eni-00000000000000001";
    let fake = Fake::new().with(|s| {
        s.send_errors.push_back(Error::aws(
            "ssm:SendCommand",
            "InvalidInstanceId",
            "not registered",
        ));
        s.send_errors.push_back(Error::aws(
            "ssm:SendCommand",
            "ThrottlingException",
            "Rate exceeded",
        ));
        s.send_errors.push_back(Error::aws(
            "ssm:SendCommand",
            "InvalidInstanceId",
            "not registered",
        ));
    });
    sent(run(&fake, &settings(), attach_event(e)).await);
    assert_eq!(fake.state().commands.len(), 1);

    let fake = Fake::new().with(|s| {
        for _ in 0..1000 {
            s.send_errors.push_back(Error::aws(
                "ssm:SendCommand",
                "InvalidInstanceId",
                "not registered",
            ));
        }
    });
    let err = run(&fake, &settings(), attach_event(e)).await.unwrap_err();
    assert!(err.is_invalid_instance(), "{err}");
    assert!(fake.state().send_errors.len() > 900, "gave up too late");

    let fake = Fake::new().with(|s| {
        s.send_errors
            .push_back(Error::aws("ssm:SendCommand", "AccessDeniedException", "no"));
    });
    let err = run(&fake, &settings(), attach_event(e)).await.unwrap_err();
    assert!(err.to_string().contains("AccessDeniedException"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn following_the_command() {
    let e = "eni-00000000000000001";
    let pending = |status: &str| Invocation {
        status: status.into(),
        ..Invocation::default()
    };
    let fake = Fake::new().with(|s| {
        s.invocations = VecDeque::from([
            Err(Error::aws(
                "ssm:GetCommandInvocation",
                "InvocationDoesNotExist",
                "",
            )),
            Ok(pending("Pending")),
            Ok(pending("InProgress")),
            Ok(success()),
        ]);
    });
    assert_eq!(
        sent(run(&fake, &settings(), attach_event(e)).await).status,
        "Success"
    );

    let fake = Fake::new().with(|s| {
        s.invocations = VecDeque::from([Ok(Invocation {
            status: "Failed".into(),
            details: "Failed".into(),
            stdout: "{\"error\":\"eth1 did not appear\"}".into(),
            stderr: "exit 3".into(),
        })]);
    });
    let err = run(&fake, &settings(), attach_event(e))
        .await
        .unwrap_err()
        .to_string();
    for part in ["cmd-1", "Failed", "eth1 did not appear", "exit 3"] {
        assert!(err.contains(part), "{part} missing from {err}");
    }

    let fake = Fake::new().with(|s| s.invocations = VecDeque::from([Ok(pending("InProgress"))]));
    let err = run(&fake, &settings(), attach_event(e)).await.unwrap_err();
    assert!(
        matches!(&err, Error::CommandTimeout { command_id, .. } if command_id == "cmd-1"),
        "{err}"
    );

    let fake = Fake::new().with(|s| {
        s.invocations = VecDeque::from([Err(Error::aws(
            "ssm:GetCommandInvocation",
            "InvocationDoesNotExist",
            "",
        ))])
    });
    let err = run(&fake, &settings(), attach_event(e)).await.unwrap_err();
    assert!(err.to_string().contains("InvocationDoesNotExist"), "{err}");

    let fake = Fake::new();
    let s = Settings {
        wait: Duration::ZERO,
        ..settings()
    };
    assert_eq!(
        sent(run(&fake, &s, attach_event(e)).await).status,
        "Pending"
    );
    assert!(!fake.state().calls.iter().any(|c| c == "get_invocation"));
}

#[tokio::test(start_paused = true)]
async fn hostile_events_give_errors_not_panics() {
    let fake = Fake::new();
    for raw in [
        json!(null),
        json!({}),
        json!({"detail-type": 5}),
        json!({"detail-type": "x", "source": "y", "detail": {}}),
    ] {
        let err = run(&fake, &settings(), raw).await.unwrap_err();
        assert!(
            matches!(err, Error::BadEvent(_) | Error::Unsupported(_)),
            "{err}"
        );
    }
    assert!(fake.state().calls.is_empty());
}
