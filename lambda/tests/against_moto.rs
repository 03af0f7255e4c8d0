//! The built Lambda against a real moto, fed through a local Lambda Runtime API: what it sends
//! (ListCommands), what it tags, what it answers and logs, and that skips send nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    attach_event, command_event, detach_event, failed_attach_event, running_event, Account, Lambda,
    DOCUMENT, LINUX_AMI, WINDOWS_AMI,
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

/// The one command of a success answer: (target, command id).
fn only_command(answer: &Value) -> (String, String) {
    let commands = answer["commands"].as_array().expect("commands");
    assert_eq!(commands.len(), 1, "{answer}");
    (
        commands[0]["target"].as_str().unwrap().to_string(),
        commands[0]["command_id"].as_str().unwrap().to_string(),
    )
}

fn attachment_tag(attachment: &str) -> String {
    format!("symroute:attachment:{attachment}")
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
    assert_eq!(a["action"], "apply");
    let (target, command_id) = only_command(&a);
    assert_eq!(target, eni);
    let commands = account.commands();
    assert_eq!(commands.len(), 1, "{commands:?}");
    let c = &commands[0];
    assert_eq!(command_id, c.command_id);
    assert_eq!(
        (c.document.as_str(), c.action.as_str(), c.target.as_str()),
        (DOCUMENT, "apply", eni.as_str())
    );
    assert_eq!(c.instance_ids, std::slice::from_ref(&instance), "{c:?}");
    assert_eq!(c.comment, format!("symroute ev-attach {eni} #1"), "{c:?}");
    let tags = account.eni_tags(&eni);
    assert_eq!(tags.get(&attachment_tag(&attachment)), Some(&instance));

    account.detach(&attachment);
    let d = ok(invoke(&api, &detach_event("ev-detach", &attachment)));
    assert_eq!(
        (d["instance_id"].as_str(), d["action"].as_str()),
        (Some(instance.as_str()), Some("remove"))
    );
    let (target, remove_id) = only_command(&d);
    assert_eq!(target, eni);
    let commands = account.commands();
    assert_eq!(commands.len(), 2);
    let r = commands
        .iter()
        .find(|c| c.action == "remove")
        .expect("a remove command");
    assert_eq!(
        (r.target.as_str(), r.command_id.as_str()),
        (eni.as_str(), remove_id.as_str())
    );
    assert!(
        !account
            .eni_tags(&eni)
            .contains_key(&attachment_tag(&attachment)),
        "the handled attachment's tag stays"
    );
    // Nothing was ever sent about the other instance.
    assert!(
        commands
            .iter()
            .all(|c| c.instance_ids == [instance.clone()]),
        "{commands:?} (other instance {other})"
    );

    // One decision line per event, with its id, instance and outcome; one EMF line each.
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
fn the_same_event_delivered_twice_sends_one_command() {
    let account = Account::new();
    let (api, _lambda) = start(&account, &[]);
    let instance = account.instance(LINUX_AMI, &[]);
    let eni = account.eni("twice", &[]);
    let att = account.attach(&eni, &instance, 1);
    let event = attach_event("ev-twice", &eni, &instance, &att, 1);
    let first = only_command(&ok(invoke(&api, &event)));
    let again = ok(invoke(&api, &event));
    assert_eq!(only_command(&again), first);
    assert_eq!(again["commands"][0]["already_sent"], true, "{again}");
    assert_eq!(account.commands().len(), 1, "{:?}", account.commands());
}

#[test]
fn a_command_ending_with_exit_3_is_sent_again_and_exit_1_fails_with_the_report() {
    let account = Account::new();
    let (api, _lambda) = start(&account, &[]);
    let instance = account.instance(LINUX_AMI, &[]);
    let eni = account.eni("late", &[]);
    let att = account.attach(&eni, &instance, 1);
    let (_, first) = only_command(&ok(invoke(
        &api,
        &attach_event("ev-late", &eni, &instance, &att, 1),
    )));
    // The instance's agent: the ENI never appeared within --wait.
    account
        .moto
        .report(
            &first,
            &instance,
            "Failed",
            &[
                ("downloadAgent", "Success", 0, ""),
                ("runAgent", "Failed", 3, "{\"ok\":false,\"exit_code\":3}"),
            ],
        )
        .unwrap();
    let resent = ok(invoke(
        &api,
        &command_event("st-1", &first, &instance, "Failed"),
    ));
    let (target, second) = only_command(&resent);
    assert_eq!(target, eni);
    assert_ne!(second, first);
    let commands = account.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    assert!(
        commands
            .iter()
            .any(|c| c.comment == format!("symroute ev-late {eni} #2")),
        "{commands:?}"
    );

    account
        .moto
        .report(
            &second,
            &instance,
            "Failed",
            &[
                ("downloadAgent", "Success", 0, ""),
                (
                    "runAgent",
                    "Failed",
                    1,
                    "{\"ok\":false,\"error\":\"the kernel refused the route\"}",
                ),
            ],
        )
        .unwrap();
    let failed = invoke(&api, &command_event("st-2", &second, &instance, "Failed"));
    assert!(!failed.is_ok(), "{}", failed.text());
    assert_eq!(
        failed.json()["errorType"],
        "Symroute.CommandFailed",
        "{}",
        failed.text()
    );
    let message = failed.error_message();
    assert!(
        message.contains("the kernel refused the route") && message.contains(&second),
        "{message}"
    );
    assert_eq!(
        account.commands().len(),
        2,
        "a failed command was sent again"
    );
}

#[test]
fn every_skip_sends_nothing_and_says_why() {
    let account = Account::new();
    let (api, lambda) = start(
        &account,
        &[
            ("SYMROUTE_SKIP_TAG", "symroute:skip"),
            ("SYMROUTE_REGISTER_GRACE_SECONDS", "0"),
        ],
    );
    let linux = account.instance(LINUX_AMI, &[]);
    let windows = account.instance(WINDOWS_AMI, &[]);
    let stopped = account.instance(LINUX_AMI, &[]);
    account.stop(&stopped);
    let opted_out = account.instance(LINUX_AMI, &[("symroute:skip", "true")]);
    let lonely = account.instance(LINUX_AMI, &[]);
    let unmanaged = account.unregistered_instances(LINUX_AMI, 1, &[]).remove(0);
    let offline = account.unregistered_instances(LINUX_AMI, 1, &[]).remove(0);
    account
        .moto
        .register_as(&offline, "ConnectionLost", "Linux", "3.3.2746.0")
        .unwrap();
    let ancient = account.unregistered_instances(LINUX_AMI, 1, &[]).remove(0);
    account
        .moto
        .register_as(&ancient, "Online", "Linux", "2.2.30.0")
        .unwrap();

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
        "owned-by-other",
    );
    attach_case(
        "ev-cni-desc",
        account.eni("aws-K8S-i-0123456789abcdef0", &[]),
        &linux,
        3,
        "owned-by-other",
    );
    attach_case(
        "ev-cilium",
        account.eni("Cilium-CNI (i-0123456789abcdef0)", &[]),
        &linux,
        5,
        "owned-by-other",
    );
    attach_case(
        "ev-unmanaged",
        account.eni("u", &[]),
        &unmanaged,
        1,
        "not-managed",
    );
    attach_case("ev-offline", account.eni("o", &[]), &offline, 1, "offline");
    attach_case(
        "ev-ancient",
        account.eni("a", &[]),
        &ancient,
        1,
        "agent-too-old",
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
                !tags.keys().any(|k| k.starts_with("symroute:attachment:")),
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
    let emf = lambda.emf();
    assert_eq!(
        emf.iter().filter(|m| m["Skipped"] == 1).count(),
        cases.len()
    );
    // Unmanaged, offline and too-old agents are counted apart: worth an alarm of their own.
    assert_eq!(emf.iter().filter(|m| m["Unreachable"] == 1).count(), 3);
}

#[test]
fn a_just_launched_unregistered_instance_is_an_error_answer_for_a_later_retry() {
    let account = Account::new();
    let (api, _lambda) = start(&account, &[]);
    let fresh = account.unregistered_instances(LINUX_AMI, 1, &[]).remove(0);
    let eni = account.eni("fresh", &[]);
    let att = account.attach(&eni, &fresh, 1);
    let answer = invoke(&api, &attach_event("ev-fresh", &eni, &fresh, &att, 1));
    assert!(!answer.is_ok(), "{}", answer.text());
    assert_eq!(
        answer.json()["errorType"],
        "Symroute.NotRegisteredYet",
        "{}",
        answer.text()
    );
    assert!(account.commands().is_empty());
}

#[test]
fn instance_running_sends_one_command_per_managed_eni_never_all() {
    let account = Account::new();
    let (api, lambda) = start(&account, &[]);
    let instance = account.instance(LINUX_AMI, &[]);
    let e1 = account.eni("one", &[]);
    let e2 = account.eni("two", &[]);
    let skipped = account.eni("three", &[("symroute:skip", "")]);
    let a1 = account.attach(&e1, &instance, 1);
    let a2 = account.attach(&e2, &instance, 2);
    account.attach(&skipped, &instance, 3);

    let answer = ok(invoke(&api, &running_event("ev-run", &instance)));
    assert_eq!(answer["action"], "apply");
    let mut targets: Vec<String> = account.commands().into_iter().map(|c| c.target).collect();
    targets.sort();
    let mut want = vec![e1.clone(), e2.clone()];
    want.sort();
    assert_eq!(targets, want, "{answer}");
    assert_eq!(
        account.eni_tags(&e1).get(&attachment_tag(&a1)),
        Some(&instance)
    );
    assert_eq!(
        account.eni_tags(&e2).get(&attachment_tag(&a2)),
        Some(&instance)
    );

    // ENIs attached at launch can be detached later like any other.
    account.detach(&a2);
    let d = ok(invoke(&api, &detach_event("ev-detach", &a2)));
    assert_eq!(d["action"], "remove");
    assert_eq!(only_command(&d).0, e2);
    assert_eq!(account.commands().len(), 3);
    assert_eq!(lambda.wait_decisions(2).len(), 2);
}

#[test]
fn an_eni_moved_between_instances_is_cleaned_on_one_and_configured_on_the_other() {
    for detach_first in [true, false] {
        let account = Account::new();
        let (api, _lambda) = start(&account, &[]);
        let a = account.instance(LINUX_AMI, &[]);
        let b = account.instance(LINUX_AMI, &[]);
        let eni = account.eni("mover", &[]);
        let on_a = account.attach(&eni, &a, 1);
        ok(invoke(&api, &attach_event("ev-a", &eni, &a, &on_a, 1)));
        account.detach(&on_a);
        let on_b = account.attach(&eni, &b, 1);
        let attach_b = attach_event("ev-b", &eni, &b, &on_b, 1);
        let detach_a = detach_event("ev-detach-a", &on_a);
        let order = if detach_first {
            [&detach_a, &attach_b]
        } else {
            [&attach_b, &detach_a]
        };
        for event in order {
            ok(invoke(&api, event));
        }
        let sent: Vec<(Vec<String>, String)> = account
            .commands()
            .into_iter()
            .map(|c| (c.instance_ids, c.action))
            .collect();
        assert!(
            sent.contains(&(vec![a.clone()], "remove".into())),
            "A not cleaned: {sent:?}"
        );
        assert!(
            sent.contains(&(vec![b.clone()], "apply".into())),
            "B not configured: {sent:?}"
        );
        assert_eq!(sent.len(), 3, "{sent:?}");
        let tags = account.eni_tags(&eni);
        assert_eq!(tags.get(&attachment_tag(&on_b)), Some(&b), "{tags:?}");
        assert!(!tags.contains_key(&attachment_tag(&on_a)), "{tags:?}");
    }
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
