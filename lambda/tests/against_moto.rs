//! The built Lambda against a real moto, fed through a local Lambda Runtime API: what it sends
//! (ListCommands), what it tags, what it answers and logs, and that skips send nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    attach_event, detach_event, failed_attach_event, running_event, Account, Lambda, DOCUMENT,
    LINUX_AMI, WINDOWS_AMI,
};
use serde_json::{json, Value};
use symroute_testbed::runtime_api::{Answer, Outcome, RuntimeApi};

const BIN: &str = env!("CARGO_BIN_EXE_symroute-lambda");
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

fn start(account: &Account, env: &[(&str, &str)]) -> (RuntimeApi, Lambda) {
    let api = RuntimeApi::start().unwrap();
    let lambda = Lambda::spawn(Path::new(BIN), &api, &account.moto.aws_env(), env);
    (api, lambda)
}

fn invoke(api: &RuntimeApi, event: &Value) -> Answer {
    let id = api.push(event);
    api.wait(&id, ANSWER_TIMEOUT).unwrap()
}

fn ok(answer: Answer) -> Value {
    assert!(
        answer.is_ok(),
        "expected a success answer, got {:?}: {}",
        answer.outcome,
        answer.text()
    );
    answer.json()
}

#[test]
fn attach_configures_and_detach_removes() {
    let account = Account::new();
    let (api, lambda) = start(&account, &[]);
    let instance = account.instance(LINUX_AMI, &[("Name", "web")]);
    let other = account.instance(LINUX_AMI, &[]);
    let eni = account.eni("app", &[]);
    let attachment = account.attach(&eni, &instance, 1);

    let a = ok(invoke(
        &api,
        &attach_event("ev-attach", &eni, &instance, &attachment, 1),
    ));
    assert_eq!(a["instance_id"], instance.as_str());
    assert_eq!(a["eni_id"], eni.as_str());
    assert_eq!(a["action"], "apply");
    // moto runs no command and reports every invocation as Success at once.
    assert_eq!(a["status"], "Success");
    let commands = account.commands();
    assert_eq!(commands.len(), 1, "{commands:?}");
    let c = &commands[0];
    assert_eq!(a["command_id"], c.command_id.as_str());
    assert_eq!(
        (c.document.as_str(), c.action.as_str(), c.target.as_str()),
        (DOCUMENT, "apply", eni.as_str())
    );
    assert!(c.instance_ids.contains(&instance), "{c:?}");
    assert!(c.comment.contains("ev-attach"), "{c:?}");
    let tags = account.eni_tags(&eni);
    assert_eq!(tags.get("symroute:instance-id"), Some(&instance));
    assert_eq!(tags.get("symroute:attachment-id"), Some(&attachment));

    account.detach(&attachment);
    let d = ok(invoke(&api, &detach_event("ev-detach", &attachment)));
    assert_eq!(
        (
            d["instance_id"].as_str(),
            d["eni_id"].as_str(),
            d["action"].as_str()
        ),
        (Some(instance.as_str()), Some(eni.as_str()), Some("remove"))
    );
    let commands = account.commands();
    assert_eq!(commands.len(), 2);
    let r = commands
        .iter()
        .find(|c| c.action == "remove")
        .expect("a remove command");
    assert_eq!(
        (r.target.as_str(), r.command_id.as_str()),
        (eni.as_str(), d["command_id"].as_str().unwrap())
    );
    // Nothing was ever sent about the other instance's (absent) ENIs.
    assert!(
        commands.iter().all(|c| c.target == eni),
        "{commands:?} (other instance {other})"
    );

    // One decision line per event, with its id, instance, ENI and outcome; one EMF line each.
    let decisions = lambda.wait_decisions(2);
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    for (d, id) in decisions.iter().zip(["ev-attach", "ev-detach"]) {
        assert_eq!(d["event_id"], id);
        assert_eq!(d["instance"], instance.as_str());
        assert_eq!(d["eni"], eni.as_str());
        assert_eq!(d["outcome"], "configured");
    }
    let emf = lambda.emf();
    assert_eq!(emf.len(), 2);
    assert!(emf
        .iter()
        .all(|m| m["Configured"] == 1 && m["Latency"].is_number()));
}

#[test]
fn every_skip_sends_nothing_and_says_why() {
    let account = Account::new();
    let (api, lambda) = start(&account, &[("SYMROUTE_SKIP_TAG", "symroute:skip")]);
    let linux = account.instance(LINUX_AMI, &[]);
    let windows = account.instance(WINDOWS_AMI, &[]);
    let stopped = account.instance(LINUX_AMI, &[]);
    account.stop(&stopped);
    let opted_out = account.instance(LINUX_AMI, &[("symroute:skip", "true")]);
    let lonely = account.instance(LINUX_AMI, &[]);

    let mut cases: Vec<(Value, &str, String)> = Vec::new();
    let mut attach_case =
        |id: &str, eni: String, instance: &str, device: i32, code: &'static str| {
            let att = account.attach(&eni, instance, device);
            cases.push((attach_event(id, &eni, instance, &att, device), code, eni));
        };
    attach_case("ev-win", account.eni("w", &[]), &windows, 1, "not-linux");
    attach_case(
        "ev-stopped",
        account.eni("s", &[]),
        &stopped,
        1,
        "not-running",
    );
    attach_case(
        "ev-inst-tag",
        account.eni("t", &[]),
        &opted_out,
        1,
        "skip-tag",
    );
    attach_case(
        "ev-eni-tag",
        account.eni("t", &[("symroute:skip", "")]),
        &linux,
        1,
        "skip-tag",
    );
    attach_case(
        "ev-cni-tag",
        account.eni("c", &[("node.k8s.amazonaws.com/instance_id", "i-1")]),
        &linux,
        2,
        "vpc-cni",
    );
    attach_case(
        "ev-cni-desc",
        account.eni("aws-K8S-i-0123456789abcdef0", &[]),
        &linux,
        3,
        "vpc-cni",
    );
    let (primary, primary_att) = account.primary_eni(&linux);
    cases.push((
        attach_event("ev-primary", &primary, &linux, &primary_att, 0),
        "primary-interface",
        primary.clone(),
    ));
    let never = account.eni("n", &[]);
    cases.push((
        failed_attach_event("ev-failed", &never, &linux),
        "failed-call",
        never.clone(),
    ));
    // Attached and detached again before the event was handled.
    let gone = account.eni("g", &[]);
    let gone_att = account.attach(&gone, &linux, 4);
    account.detach(&gone_att);
    cases.push((
        attach_event("ev-late", &gone, &linux, &gone_att, 4),
        "not-attached",
        gone.clone(),
    ));
    cases.push((
        detach_event("ev-unknown", "eni-attach-0123456789abcdef0"),
        "unknown-attachment",
        String::new(),
    ));
    cases.push((
        running_event("ev-lonely", &lonely),
        "no-secondary-enis",
        String::new(),
    ));
    let mut stopping = running_event("ev-stopping", &lonely);
    stopping["detail"]["state"] = json!("stopping");
    cases.push((stopping, "not-running", String::new()));

    for (event, code, eni) in &cases {
        let answer = ok(invoke(&api, event));
        assert_eq!(answer["skip_code"], *code, "{event}: {answer}");
        assert!(
            answer["skipped"].as_str().is_some_and(|r| r.len() > 10),
            "{answer}"
        );
        if !eni.is_empty() {
            let tags = account.eni_tags(eni);
            assert!(
                !tags.contains_key("symroute:attachment-id"),
                "skipped {eni} was tagged: {tags:?}"
            );
        }
    }
    assert!(
        account.commands().is_empty(),
        "a skip sent {:?}",
        account.commands()
    );
    let skipped = lambda
        .wait_decisions(cases.len())
        .iter()
        .filter(|d| d["outcome"] == "skipped")
        .count();
    assert_eq!(skipped, cases.len());
    assert_eq!(
        lambda.emf().iter().filter(|m| m["Skipped"] == 1).count(),
        cases.len()
    );
}

#[test]
fn instance_running_applies_all_once_then_detach_works() {
    let account = Account::new();
    let (api, lambda) = start(&account, &[]);
    let instance = account.instance(LINUX_AMI, &[]);
    let e1 = account.eni("one", &[]);
    let e2 = account.eni("two", &[]);
    let a1 = account.attach(&e1, &instance, 1);
    let a2 = account.attach(&e2, &instance, 2);

    let answer = ok(invoke(&api, &running_event("ev-run", &instance)));
    assert_eq!(
        (answer["action"].as_str(), answer["target"].as_str()),
        (Some("apply"), Some("all"))
    );
    assert_eq!(answer["eni_id"], Value::Null);
    let commands = account.commands();
    assert_eq!(commands.len(), 1, "{commands:?}");
    assert_eq!(
        (commands[0].action.as_str(), commands[0].target.as_str()),
        ("apply", "all")
    );
    assert_eq!(
        account.eni_tags(&e1).get("symroute:attachment-id"),
        Some(&a1)
    );
    assert_eq!(
        account.eni_tags(&e2).get("symroute:attachment-id"),
        Some(&a2)
    );

    // ENIs attached at launch can be detached later like any other.
    account.detach(&a2);
    let d = ok(invoke(&api, &detach_event("ev-detach", &a2)));
    assert_eq!(
        (d["action"].as_str(), d["eni_id"].as_str()),
        (Some("remove"), Some(e2.as_str()))
    );
    let targets: Vec<(String, String)> = account
        .commands()
        .into_iter()
        .map(|c| (c.action, c.target))
        .collect();
    assert_eq!(targets.len(), 2);
    assert!(
        targets.contains(&("remove".into(), e2.clone())),
        "{targets:?}"
    );
    assert_eq!(lambda.wait_decisions(2).len(), 2);
}

#[test]
fn bad_input_is_an_error_answer_and_the_function_keeps_serving() {
    let account = Account::new();
    let (api, lambda) = start(&account, &[]);
    let mut unknown = common::fixture("attach.json");
    unknown["detail"]["eventName"] = json!("DeleteNetworkInterface");
    let mut huge = common::fixture("attach.json");
    huge["detail"]["requestParameters"]["networkInterfaceId"] =
        json!(format!("eni-{}", "f".repeat(200_000)));
    let cases = [
        (
            api.push(&unknown),
            "Symroute.UnsupportedEvent",
            "DeleteNetworkInterface",
        ),
        (
            api.push(&json!({"detail-type": 7})),
            "Symroute.BadEvent",
            "detail-type",
        ),
        (api.push(&huge), "Symroute.BadEvent", "networkInterfaceId"),
        (api.push_raw("this is not json"), "", ""),
    ];
    for (id, error_type, mentions) in cases {
        let a = api.wait(&id, ANSWER_TIMEOUT).unwrap();
        match &a.outcome {
            Outcome::Error { error_type: t } => {
                let message = a.error_message();
                assert!(message.len() < 2000, "answer is {} bytes", message.len());
                if !error_type.is_empty() {
                    assert_eq!(a.json()["errorType"], error_type, "{}", a.text());
                    assert!(message.contains(mentions), "{message}");
                }
                let _ = t;
            }
            other => panic!("expected an error answer, got {other:?}: {}", a.text()),
        }
    }
    // Still alive and serving after all that.
    let instance = account.instance(LINUX_AMI, &[]);
    let eni = account.eni("after", &[]);
    let att = account.attach(&eni, &instance, 1);
    ok(invoke(
        &api,
        &attach_event("ev-after", &eni, &instance, &att, 1),
    ));
    assert_eq!(account.commands().len(), 1);
    let failed = lambda
        .wait_decisions(4)
        .iter()
        .filter(|d| d["outcome"] == "failed")
        .count();
    assert_eq!(failed, 3, "the non-JSON payload never reaches the handler");
}

#[test]
fn missing_configuration_is_an_init_error() {
    let api = RuntimeApi::start().unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.env_clear()
        .envs(api.lambda_env())
        .envs(symroute_testbed::moto::aws_env_for("http://127.0.0.1:9"))
        .stdout(std::process::Stdio::piped());
    let mut lambda = Lambda::spawn_command(cmd);
    let id = api.push(&common::fixture("attach.json"));
    let answer = api.wait(&id, ANSWER_TIMEOUT).unwrap();
    assert!(
        matches!(answer.outcome, Outcome::InitError { .. }),
        "{answer:?}"
    );
    assert!(
        answer.error_message().contains("SYMROUTE_DOCUMENT_NAME"),
        "{}",
        answer.text()
    );
    assert!(!lambda.wait_exit().success());
    assert_eq!(api.delivered(), 0, "no event is taken before init succeeds");
}
