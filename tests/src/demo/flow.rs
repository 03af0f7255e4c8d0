//! The story `make demo` tells, step by step, and checks as it goes: any step that does not
//! do what it should ends the run with that step named.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::error::{ensure, Result, Step, StepError};
use super::interrupt;
use super::ssm_agent::CommandRun;
use super::timeline::Timeline;
use super::world::{Attached, MotoEni, Node, Options, World, CLIENT_IP};
use crate::runtime_api::Answer;

pub const INSTANCE_IP: &str = "10.0.1.10";
pub const ENI_IP: &str = "10.0.2.20";
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Pings (one second each) after the agent reported success before giving up.
const AFTER_PINGS: u32 = 5;

/// The two times the issue asks for.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// From the AttachNetworkInterface call to the first reply from the new address. Includes
    /// the one-second ping that shows the failure before symroute acts.
    pub attach_to_ping: Duration,
    /// From PutEvents to the first reply: symroute's own share.
    pub event_to_ping: Duration,
}

/// The whole demo: stand everything up, attach, show the failure, let the chain fix it, detach,
/// clean up (also on failure and on Ctrl-C, through the destructors).
pub fn run(opts: &Options, tl: &mut Timeline) -> Result<Summary> {
    let world = World::start(opts, tl)?;
    let prefix = world.vpc.prefix().to_string();
    let summary = story(&world, tl).map_err(|mut e| {
        // Ctrl-C reaches the helpers too: whatever broke first, the cause is the signal.
        if interrupt::interrupted() {
            e.message = "interrupted by a signal".into();
        }
        world.keep_logs();
        e.message = format!("{} (logs kept in {})", e.message, world.logs().display());
        e
    })?;
    drop(world);
    let left = crate::list_with_prefix(&prefix).len();
    ensure(left == 0, "cleanup", || {
        format!("{left} namespaces of this run are still there")
    })?;
    tl.step(
        "cleanup",
        "moto, the Lambda, the stand-ins stopped; the VPC's namespaces deleted",
        json!({"namespaces_left": left}),
    );
    Ok(summary)
}

fn story(world: &World, tl: &mut Timeline) -> Result<Summary> {
    let node = world.add_instance(INSTANCE_IP, json!({"Name": "symroute-demo"}))?;
    tl.step(
        "instance",
        &format!(
            "{} running: eth0 {} ({}), IMDSv2 and SSM Agent stand-ins inside",
            node.instance_id,
            node.primary.ips[0],
            node.primary.mac
        ),
        json!({"instance_id": node.instance_id, "eth0": node.primary.ips[0], "mac": node.primary.mac}),
    );
    let eni = world.create_eni(ENI_IP)?;
    tl.step(
        "eni",
        &format!(
            "{} {} in {}, not attached",
            eni.eni_id, ENI_IP, eni.subnet_id
        ),
        json!({"eni_id": eni.eni_id, "ip": ENI_IP, "mac": eni.mac, "subnet_id": eni.subnet_id}),
    );

    let attach_call = Instant::now();
    let attached = world.attach(&node, &eni, 1)?;
    tl.step(
        "attach",
        &format!(
            "AttachNetworkInterface {} -> {} device 1: {}; eth1 is up in the instance, IMDS lists it",
            eni.eni_id, node.instance_id, attached.attachment_id
        ),
        json!({"attachment_id": attached.attachment_id, "device_index": 1}),
    );
    show_failure(world, &node, &eni, tl)?;

    let event_call = Instant::now();
    let run = configure(world, &node, &attached, tl)?;
    agent_step(tl, &run)?;
    let rules = ip_rules(&node)?;
    ensure(
        rules.contains(&format!("from {ENI_IP} lookup")),
        "agent",
        || format!("no rule for {ENI_IP} in the instance: {rules}"),
    )?;
    let (attach_to_ping, event_to_ping) =
        first_reply(world, eni.ip(), attach_call, event_call, tl)?;

    unconfigure(world, &node, &attached, tl)?;
    Ok(Summary {
        attach_to_ping,
        event_to_ping,
    })
}

/// One ping while nothing has acted yet: the request reaches eth1, the reply leaves by eth0
/// with eth1's address and the VPC drops it.
fn show_failure(world: &World, node: &Node, eni: &MotoEni, tl: &mut Timeline) -> Result<()> {
    let step = "before";
    interrupt::check(step)?;
    let drops = world.vpc.srcdst_drops_at(&node.eth0).step(step)?;
    let answered = world.client.ping(eni.ip(), 1, 1);
    let dropped = world.vpc.srcdst_drops_at(&node.eth0).step(step)? - drops;
    ensure(!answered, step, || {
        format!("{ENI_IP} answered before symroute ran: nothing to fix here")
    })?;
    tl.step(
        step,
        &format!(
            "ping {CLIENT_IP} -> {ENI_IP}: no reply (the reply left by eth0; the source/destination check dropped {dropped})"
        ),
        json!({"replied": false, "srcdst_drops_at_eth0": dropped}),
    );
    Ok(())
}

/// The event, the Lambda's decision, the command as the instance ran it.
fn configure(world: &World, node: &Node, a: &Attached, tl: &mut Timeline) -> Result<CommandRun> {
    let command_id = send_apply(world, a, tl)?;
    command(world, node, &command_id, tl)
}

/// The attach's CloudTrail record published and delivered, the Lambda's decision checked to
/// be `apply` for this ENI; returns the command id.
pub fn send_apply(world: &World, a: &Attached, tl: &mut Timeline) -> Result<String> {
    world.publish_attach(a)?;
    let event = one_event(world, "AttachNetworkInterface", tl)?;
    let answer = world.invoke("lambda", &event)?;
    decision(tl, &answer, "apply", &a.eni.eni_id)
}

/// The same for the detach; the agent removes what it installed.
fn unconfigure(world: &World, node: &Node, a: &Attached, tl: &mut Timeline) -> Result<()> {
    world.detach(node, a)?;
    tl.step(
        "detach",
        &format!(
            "DetachNetworkInterface {}: eth1 left the instance and IMDS",
            a.attachment_id
        ),
        json!({"attachment_id": a.attachment_id}),
    );
    world.publish_detach(a)?;
    let event = one_event(world, "DetachNetworkInterface", tl)?;
    let answer = world.invoke("lambda", &event)?;
    let command_id = decision(tl, &answer, "remove", &a.eni.eni_id)?;
    let run = command(world, node, &command_id, tl)?;
    agent_step(tl, &run)?;
    let rules = ip_rules(node)?;
    ensure(!rules.contains(&format!("from {ENI_IP} ")), "agent", || {
        format!("the rule for {ENI_IP} is still there after remove: {rules}")
    })?;
    Ok(())
}

fn one_event(world: &World, name: &str, tl: &mut Timeline) -> Result<Value> {
    let step = "event";
    let events = world.delivered(step)?;
    ensure(events.len() == 1, step, || {
        format!("the rules delivered {} events for one {name}", events.len())
    })?;
    let event = events.into_iter().next().unwrap_or_default();
    ensure(event["detail"]["eventName"] == name, step, || {
        format!(
            "delivered {} instead of {name}",
            event["detail"]["eventName"]
        )
    })?;
    tl.step(
        step,
        &format!("PutEvents: CloudTrail record of {name}; the stack's rule matched, the event was delivered"),
        json!({"event": event}),
    );
    Ok(event)
}

/// The Lambda's answer must be a command for `target`; returns its id.
fn decision(tl: &mut Timeline, answer: &Answer, action: &str, target: &str) -> Result<String> {
    let step = "lambda";
    ensure(answer.is_ok(), step, || {
        format!("the Lambda failed: {}", answer.error_message())
    })?;
    let v = answer.json();
    let commands = v["commands"].as_array().cloned().unwrap_or_default();
    ensure(
        v["action"] == action && commands.len() == 1 && commands[0]["target"] == target,
        step,
        || format!("expected one command {action} {target}, the Lambda answered {v}"),
    )?;
    let command_id = commands[0]["command_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    tl.step(
        step,
        &format!(
            "decision: {action} target={target} on {} -> SendCommand, command {command_id}",
            v["instance_id"].as_str().unwrap_or("?")
        ),
        v.clone(),
    );
    Ok(command_id)
}

fn command(world: &World, node: &Node, command_id: &str, tl: &mut Timeline) -> Result<CommandRun> {
    let step = "command";
    let run = node.agent.run_of(step, command_id, COMMAND_TIMEOUT)?;
    ensure(run.exit_code == 0, step, || {
        format!(
            "the document exited {}: {}",
            run.exit_code,
            run.stderr.trim()
        )
    })?;
    tl.step(
        step,
        &format!(
            "SSM Agent stand-in ran {} ({}): agent downloaded from S3, SHA-256 verified, exit 0",
            world.stack.document,
            params(&run.parameters)
        ),
        json!({"command_id": command_id, "parameters": run.parameters, "exit_code": run.exit_code}),
    );
    Ok(run)
}

fn params(p: &Value) -> String {
    p.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// The agent's JSON report, summarised; its changes listed under it.
fn agent_step(tl: &mut Timeline, run: &CommandRun) -> Result<()> {
    let step = "agent";
    let report = run.report();
    ensure(report["ok"] == true, step, || {
        format!("the agent's report is not ok: {}", run.stdout.trim())
    })?;
    let mut changes = Vec::new();
    let enis: Vec<String> = report["enis"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            changes.extend(
                e["changes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().map(String::from)),
            );
            format!(
                "{} {} table {} {}",
                e["eni_id"].as_str().unwrap_or("?"),
                e["interface"].as_str().unwrap_or("-"),
                e["table"],
                e["status"].as_str().unwrap_or("?")
            )
        })
        .collect();
    // A remove after the detach finds no ENI any more: it prunes what the agent owned.
    let pruned: Vec<String> = report["pruned"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(String::from))
        .collect();
    let what = if enis.is_empty() {
        format!("{} stale entries pruned", pruned.len())
    } else {
        enis.join(", ")
    };
    tl.step(
        step,
        &format!(
            "symroute {} --json: {what}; {} changes in {} ms",
            report["action"].as_str().unwrap_or("?"),
            report["changes"],
            report["duration_ms"]
        ),
        report.clone(),
    );
    changes.extend(pruned);
    tl.detail(&changes);
    Ok(())
}

fn ip_rules(node: &Node) -> Result<String> {
    let out = node
        .inst
        .exec(&["ip", "-4", "rule", "show"])
        .step("agent")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn first_reply(
    world: &World,
    ip: IpAddr,
    attach_call: Instant,
    event_call: Instant,
    tl: &mut Timeline,
) -> Result<(Duration, Duration)> {
    let step = "after";
    for _ in 0..AFTER_PINGS {
        interrupt::check(step)?;
        if world.client.ping(ip, 1, 1) {
            let (a, e) = (attach_call.elapsed(), event_call.elapsed());
            tl.step(
                step,
                &format!(
                    "ping {CLIENT_IP} -> {ip}: reply. Attach call -> first reply {:.2} s (event -> reply {:.2} s)",
                    a.as_secs_f64(),
                    e.as_secs_f64()
                ),
                json!({"replied": true, "attach_to_ping_ms": a.as_millis() as u64,
                       "event_to_ping_ms": e.as_millis() as u64}),
            );
            return Ok((a, e));
        }
    }
    Err(StepError::new(
        step,
        format!("{ip} still does not answer {CLIENT_IP} after the agent reported success"),
    ))
}
