//! End to end, as `make demo` runs it: moto holding the deployed stack, the CloudTrail record
//! published to EventBridge, the built Lambda behind a Runtime API, the SSM Agent stand-in
//! running the deployed document, the static agent from `make agent` in the simulated VPC.
//!
//! `#[ignore]`d in `cargo test --workspace`: `make test-e2e` (a step of `make test`) builds the
//! agent and the Lambda first and runs them with SYMROUTE_E2E_DIST. Needs root (namespaces).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use symroute_testbed::demo::{
    self, Node, Options, StackSource, Timeline, World, ENI_IP, INSTANCE_IP,
};
use symroute_testbed::{repo_root, require_root};

const COMMAND_WAIT: Duration = Duration::from_secs(120);

/// The demo's options for this checkout: the agent from `make agent` (SYMROUTE_E2E_DIST) and
/// the Lambda from `make demo-build`, in this test's own target directory. Built beforehand by
/// make: a `cargo build` from inside `cargo test` waits on the locks of the cargo running it.
fn options() -> Option<Options> {
    if !require_root() {
        return None;
    }
    let dist = std::env::var_os("SYMROUTE_E2E_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("dist/agent"));
    assert!(
        dist.join("SHA256SUMS").is_file(),
        "no agent in {}: run `make test-e2e` (it runs `make agent` first)",
        dist.display()
    );
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let lambda = profile_dir.join("symroute-lambda");
    assert!(
        lambda.is_file(),
        "no Lambda at {}: run `make test-e2e` (it builds it first)",
        lambda.display()
    );
    Some(Options {
        repo: repo_root(),
        dist,
        lambda,
        stack_name: "symroute-e2e".into(),
        ssm_agent: "new".into(),
        stack: StackSource::Sam,
    })
}

/// A fresh world (moto, stack, VPC, Lambda) for one test, or None when skipped.
fn start() -> Option<(World, Timeline)> {
    let opts = options()?;
    let mut tl = Timeline::new(false);
    let world = World::start(&opts, &mut tl).unwrap_or_else(|e| panic!("{e}"));
    Some((world, tl))
}

fn rules(node: &Node) -> String {
    let out = node
        .inst
        .exec(&["ip", "-4", "rule", "show"])
        .expect("ip rule");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "end to end: run by `make test-e2e`"]
fn attach_makes_the_new_address_answer_and_detach_cleans_up() {
    let Some(opts) = options() else { return };
    let mut tl = Timeline::new(false);
    demo::run(&opts, &mut tl).unwrap_or_else(|e| panic!("{e}"));

    let names: Vec<&str> = tl
        .steps()
        .iter()
        .map(|s| s["step"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "moto", "stack", "network", "lambda", "instance", "eni", "attach", "before", "event",
            "lambda", "command", "agent", "after", "detach", "event", "lambda", "command", "agent",
            "cleanup"
        ]
    );
    let step = |name: &str, nth: usize| tl.data(name, nth);
    // Before symroute, the reply was dropped by the VPC for leaving by the wrong ENI.
    assert!(step("before", 0)["srcdst_drops_at_eth0"].as_u64() > Some(0));
    let apply = step("agent", 0);
    assert_eq!(apply["action"], "apply");
    assert_eq!(apply["enis"][0]["table"], 10001, "{apply}");
    assert_eq!(apply["enis"][0]["interface"], "eth1", "{apply}");
    assert_eq!(step("agent", 1)["action"], "remove");
    assert_eq!(step("lambda", 2)["action"], "remove");
    assert_eq!(step("after", 0)["replied"], true);
}

/// The CDK construct's stack (its example app through the real `cdk synth`, needs `make
/// cdk-build`, which `make test-e2e` runs) carries the chain as the SAM stack does.
#[test]
#[ignore = "end to end: run by `make test-e2e`"]
fn the_cdk_stack_makes_the_new_address_answer_as_the_sam_stack_does() {
    let Some(mut opts) = options() else { return };
    opts.stack = StackSource::Cdk;
    opts.stack_name = "symroute-e2e-cdk".into();
    let mut tl = Timeline::new(false);
    demo::run(&opts, &mut tl).unwrap_or_else(|e| panic!("{e}"));
    let step = |name: &str, nth: usize| tl.data(name, nth);
    assert_eq!(step("stack", 0)["rules"].as_array().map(Vec::len), Some(5));
    assert_eq!(step("agent", 0)["action"], "apply");
    assert_eq!(step("agent", 0)["enis"][0]["table"], 10001);
    assert_eq!(step("after", 0)["replied"], true);
    assert_eq!(step("agent", 1)["action"], "remove");
}

#[test]
#[ignore = "end to end: run by `make test-e2e`"]
fn an_ssm_agent_older_than_env_var_interpolation_still_configures_the_eni() {
    let Some(mut opts) = options() else { return };
    opts.ssm_agent = "old".into();
    let mut tl = Timeline::new(false);
    demo::run(&opts, &mut tl).unwrap_or_else(|e| panic!("{e}"));
    let apply = tl.data("agent", 0);
    assert_eq!(apply["action"], "apply", "{apply}");
    assert_eq!(apply["enis"][0]["table"], 10001, "{apply}");
}

#[test]
#[ignore = "end to end: run by `make test-e2e`"]
fn two_enis_attached_at_once_both_answer() {
    let Some((world, _)) = start() else {
        return;
    };
    let node = world
        .add_instance(INSTANCE_IP, json!({}))
        .expect("instance");
    let enis = [ENI_IP, "10.0.2.21"].map(|ip| world.create_eni(ip).expect("eni"));
    let attached: Vec<_> = enis
        .iter()
        .zip(1..)
        .map(|(e, device)| world.attach(&node, e, device).expect("attach"))
        .collect();
    for a in &attached {
        world.publish_attach(a).expect("publish");
    }
    let events = world.delivered("event").expect("drain");
    assert_eq!(events.len(), 2, "{events:?}");

    let mut commands = Vec::new();
    for event in &events {
        let answer = world.invoke("lambda", event).expect("invoke");
        assert!(answer.is_ok(), "{}", answer.text());
        let v = answer.json();
        assert_eq!(v["action"], "apply", "{v}");
        let c = &v["commands"][0];
        assert_eq!(v["commands"].as_array().map(Vec::len), Some(1), "{v}");
        commands.push((
            c["target"].clone(),
            c["command_id"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let mut targets: Vec<String> = commands
        .iter()
        .map(|(t, _)| t.as_str().unwrap_or_default().to_string())
        .collect();
    targets.sort();
    let mut want: Vec<String> = enis.iter().map(|e| e.eni_id.clone()).collect();
    want.sort();
    assert_eq!(targets, want);
    // The stand-in runs them side by side, as the SSM Agent does: the agent's lock serialises.
    for (_, id) in &commands {
        let run = node
            .agent
            .run_of("command", id, COMMAND_WAIT)
            .expect("command ran");
        assert_eq!(run.exit_code, 0, "{}", run.stderr);
        assert_eq!(run.report()["ok"], true, "{}", run.stdout);
    }
    let rules = rules(&node);
    assert!(
        rules.contains(&format!("from {ENI_IP} lookup 10001")),
        "{rules}"
    );
    assert!(rules.contains("from 10.0.2.21 lookup 10002"), "{rules}");
    for e in &enis {
        assert!(
            world.client.ping(e.ip(), 2, 2),
            "{} does not answer",
            e.ip()
        );
    }
}

#[test]
#[ignore = "end to end: run by `make test-e2e`"]
fn a_skip_tagged_instance_gets_no_command() {
    let Some((world, _)) = start() else {
        return;
    };
    let node = world
        .add_instance(INSTANCE_IP, json!({"symroute:skip": "true"}))
        .expect("instance");
    let eni = world.create_eni(ENI_IP).expect("eni");
    let a = world.attach(&node, &eni, 1).expect("attach");
    world.publish_attach(&a).expect("publish");
    let events = world.delivered("event").expect("drain");
    assert_eq!(events.len(), 1, "the rule delivers the attach: {events:?}");

    let answer = world.invoke("lambda", &events[0]).expect("invoke");
    assert!(answer.is_ok(), "{}", answer.text());
    let v = answer.json();
    assert_eq!(v["skip_code"], "skip-tag", "{v}");
    assert!(v.get("commands").is_none(), "{v}");
    let sent = world
        .commands_for("commands", &node.instance_id, &eni.eni_id)
        .expect("list commands");
    assert!(
        sent.is_empty(),
        "SSM holds commands for {}: {sent:?}",
        eni.eni_id
    );
    assert!(node.agent.runs_so_far().is_empty());
    assert!(!rules(&node).contains(ENI_IP));
    assert!(
        !world.client.ping(eni.ip(), 1, 1),
        "answered without symroute"
    );
}

#[test]
#[ignore = "end to end: run by `make test-e2e`"]
fn a_tampered_agent_in_the_bucket_is_refused() {
    let Some((world, mut tl)) = start() else {
        return;
    };
    world.tamper_agent().expect("tamper");
    let node = world
        .add_instance(INSTANCE_IP, json!({}))
        .expect("instance");
    let eni = world.create_eni(ENI_IP).expect("eni");
    let a = world.attach(&node, &eni, 1).expect("attach");
    let id = demo::send_apply(&world, &a, &mut tl).unwrap_or_else(|e| panic!("{e}"));

    let run = node
        .agent
        .run_of("command", &id, COMMAND_WAIT)
        .expect("command ran");
    assert_eq!(run.exit_code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("refusing to run"), "{}", run.stderr);
    assert!(
        run.stdout.trim().is_empty(),
        "the agent ran: {}",
        run.stdout
    );
    assert!(!rules(&node).contains(ENI_IP), "{}", rules(&node));
    assert!(
        !world.client.ping(eni.ip(), 1, 1),
        "answered without symroute"
    );
}
