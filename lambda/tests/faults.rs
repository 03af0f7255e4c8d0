//! A burst of 200 attach events through a proxy that throttles, fails and drops a fraction of the
//! AWS calls (seeded, so the same run every time): every event ends with exactly one command sent
//! or an error answer naming the cause. None lost, none duplicated.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{attach_event, Account, Lambda, LINUX_AMI};
use symroute_testbed::moto::{FaultCounts, FaultProxy, Faults};
use symroute_testbed::runtime_api::RuntimeApi;

const BIN: &str = env!("CARGO_BIN_EXE_symroute-lambda");
const EVENTS: usize = 200;
const INSTANCES: usize = 10;

/// What an error answer may blame: each is a fault the proxy injects, as the SDK reports it.
const CAUSES: &[&str] = &[
    "RequestLimitExceeded",
    "ThrottlingException",
    "InternalError",
    "InternalServerError",
    "InvalidInstanceId",
    "DispatchFailure",
    "ResponseError",
    "Timeout",
];

struct Burst {
    sent: usize,
    failed: usize,
    blamed: HashMap<&'static str, usize>,
    counts: FaultCounts,
}

/// Attaches `EVENTS` ENIs in moto, sends one attach event each through the proxy, and checks
/// every answer against what moto recorded.
fn burst(faults: Faults, env: &[(&str, &str)]) -> Burst {
    let account = Account::new();
    let proxy = FaultProxy::start(&account.moto.endpoint(), faults).unwrap();
    let instances = account.instances(LINUX_AMI, INSTANCES as i32, &[]);
    let mut events = Vec::new();
    for n in 0..EVENTS {
        let instance = instances[n % INSTANCES].clone();
        let eni = account.eni(&format!("burst {n}"), &[]);
        let device = 1 + (n / INSTANCES) as i32;
        let attachment = account.attach(&eni, &instance, device);
        let event = attach_event(&format!("ev-{n}"), &eni, &instance, &attachment, device);
        events.push((eni, event));
    }

    let api = RuntimeApi::start().unwrap();
    let lambda = Lambda::spawn(Path::new(BIN), &api, &proxy.aws_env(), env);
    let ids: Vec<String> = events.iter().map(|(_, ev)| api.push(ev)).collect();
    let answers = api.wait_all(&ids, Duration::from_secs(900)).unwrap();
    assert_eq!(
        api.delivered(),
        EVENTS as u64,
        "every event was handed out exactly once"
    );

    let mut per_eni: HashMap<String, Vec<common::Sent>> = HashMap::new();
    for c in account.commands() {
        per_eni.entry(c.target.clone()).or_default().push(c);
    }
    let extra = per_eni
        .keys()
        .filter(|t| !events.iter().any(|(e, _)| e == *t))
        .count();
    assert_eq!(extra, 0, "commands for ENIs no event named");
    let mut b = Burst {
        sent: 0,
        failed: 0,
        blamed: HashMap::new(),
        counts: proxy.counts(),
    };
    for ((eni, _), answer) in events.iter().zip(&answers) {
        let commands = per_eni.get(eni).map(Vec::as_slice).unwrap_or_default();
        assert!(
            commands.len() <= 1,
            "{eni}: {} commands sent",
            commands.len()
        );
        if answer.is_ok() {
            assert_eq!(
                commands.len(),
                1,
                "{eni}: success answered but no command in moto"
            );
            assert_eq!(answer.json()["command_id"], commands[0].command_id.as_str());
            b.sent += 1;
        } else {
            let message = answer.error_message();
            let cause = CAUSES
                .iter()
                .find(|c| message.contains(*c))
                .unwrap_or_else(|| panic!("{eni}: error answer names no cause: {message}"));
            *b.blamed.entry(cause).or_default() += 1;
            if let Some(c) = commands.first() {
                assert!(
                    message.contains(&c.command_id),
                    "{eni}: sent but the error hides the command id: {message}"
                );
            }
            b.failed += 1;
        }
    }
    assert_eq!(b.sent + b.failed, EVENTS);
    assert_eq!(
        lambda.wait_decisions(EVENTS).len(),
        EVENTS,
        "one decision line per event"
    );
    println!(
        "{} sent, {} error answers {:?}; proxy: {:?}",
        b.sent, b.failed, b.blamed, b.counts
    );
    b
}

#[test]
fn retries_absorb_a_fault_burst() {
    let faults = Faults {
        throttle: 0.08,
        server_error: 0.05,
        drop: 0.05,
        invalid_instance: 0.15,
        seed: 20261121,
    };
    // Short backoffs keep the test quick; the bounds are what is under test, not the delays.
    let b = burst(
        faults,
        &[
            ("SYMROUTE_RETRY_BASE_MS", "5"),
            ("SYMROUTE_REGISTER_WAIT_SECONDS", "2"),
        ],
    );
    let c = b.counts;
    assert!(
        c.throttled > 0 && c.server_errors > 0 && c.dropped > 0 && c.invalid_instance > 0,
        "{c:?}"
    );
    assert!(
        b.sent > EVENTS * 9 / 10,
        "retries should absorb nearly all faults: {} of {EVENTS} sent",
        b.sent
    );
}

#[test]
fn exhausted_retries_answer_errors_that_name_the_cause() {
    let faults = Faults {
        throttle: 0.12,
        server_error: 0.08,
        drop: 0.08,
        invalid_instance: 0.4,
        seed: 7,
    };
    let b = burst(
        faults,
        &[
            ("SYMROUTE_RETRY_BASE_MS", "5"),
            ("SYMROUTE_MAX_ATTEMPTS", "2"),
            ("SYMROUTE_REGISTER_WAIT_SECONDS", "0"),
        ],
    );
    assert!(
        b.failed > 0,
        "no fault got through two attempts: the error path went untested"
    );
    assert!(b.sent > 0, "nothing got through");
}
