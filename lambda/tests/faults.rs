//! A burst of 200 attach events through a proxy that throttles, fails, drops and, worst of all,
//! loses answers after moto acted on the call (seeded, so the same run every time). An error
//! answer is retried as Lambda retries an asynchronous invocation (twice more), then counts as
//! landed in the failure queue with its cause. Every event ends with exactly one command on its
//! instance or in the failure queue naming the cause: none lost, none duplicated.

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
/// Lambda's asynchronous retries (the stack's MaximumRetryAttempts).
const LAMBDA_RETRIES: usize = 2;

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
    invocations: usize,
    blamed: HashMap<&'static str, usize>,
    counts: FaultCounts,
    /// Sum of the function's own time over all invocations, per event (Lambda's billed time).
    lambda_ms_per_event: f64,
}

/// Attaches `EVENTS` ENIs in moto, sends one attach event each through the proxy (again on an
/// error answer, as Lambda would), and checks every outcome against what SSM recorded.
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
    let mut pending: Vec<usize> = (0..EVENTS).collect();
    let mut last = vec![None; EVENTS];
    let mut invocations = 0;
    for _round in 0..=LAMBDA_RETRIES {
        if pending.is_empty() {
            break;
        }
        let ids: Vec<String> = pending.iter().map(|&n| api.push(&events[n].1)).collect();
        invocations += ids.len();
        let answers = api.wait_all(&ids, Duration::from_secs(900)).unwrap();
        let mut again = Vec::new();
        for (&n, answer) in pending.iter().zip(answers) {
            if !answer.is_ok() {
                again.push(n);
            }
            last[n] = Some(answer);
        }
        pending = again;
    }
    assert_eq!(
        api.delivered(),
        invocations as u64,
        "every invocation was handed out once"
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
        invocations,
        blamed: HashMap::new(),
        counts: proxy.counts(),
        lambda_ms_per_event: 0.0,
    };
    for ((eni, _), answer) in events.iter().zip(&last) {
        let answer = answer.as_ref().expect("every event was answered");
        let commands = per_eni.get(eni).map(Vec::as_slice).unwrap_or_default();
        assert!(
            commands.len() <= 1,
            "{eni}: {} commands sent (duplicated)",
            commands.len()
        );
        if answer.is_ok() {
            assert_eq!(
                commands.len(),
                1,
                "{eni}: success answered but no command in SSM"
            );
            assert_eq!(
                answer.json()["commands"][0]["command_id"],
                commands[0].command_id.as_str()
            );
            b.sent += 1;
        } else {
            // In the failure queue, with its cause. It may have sent (an answer lost on the
            // last try): the next delivery would find that command, not send another.
            let message = answer.error_message();
            let cause = CAUSES
                .iter()
                .find(|c| message.contains(*c))
                .unwrap_or_else(|| panic!("{eni}: error answer names no cause: {message}"));
            *b.blamed.entry(cause).or_default() += 1;
            b.failed += 1;
        }
    }
    assert_eq!(b.sent + b.failed, EVENTS, "an event was lost");
    let decisions = lambda.wait_decisions(invocations);
    assert_eq!(
        decisions.len(),
        invocations,
        "one decision line per invocation"
    );
    let total_ms: f64 = lambda
        .emf()
        .iter()
        .filter_map(|m| m["Latency"].as_f64())
        .sum();
    b.lambda_ms_per_event = total_ms / EVENTS as f64;
    println!(
        "{} sent, {} in the failure queue {:?}; {} invocations; {:.1} ms of Lambda time per event; proxy: {:?}",
        b.sent, b.failed, b.blamed, b.invocations, b.lambda_ms_per_event, b.counts
    );
    b
}

#[test]
fn a_fault_burst_with_lost_answers_loses_nothing_and_duplicates_nothing() {
    let faults = Faults {
        throttle: 0.03,
        server_error: 0.03,
        drop: 0.02,
        lose_answer: 0.02,
        invalid_instance: 0.0,
        seed: 20261201,
    };
    // Short backoffs keep the test quick; the bounds are what is under test, not the delays.
    let b = burst(faults, &[("SYMROUTE_RETRY_BASE_MS", "5")]);
    let c = b.counts;
    assert!(
        c.throttled > 0 && c.server_errors > 0 && c.dropped > 0 && c.lost_send_command_answers > 0,
        "every kind of fault happened: {c:?}"
    );
    assert_eq!(
        b.sent, EVENTS,
        "retries absorb a 10% fault rate: {} of {EVENTS} sent",
        b.sent
    );
}

#[test]
fn exhausted_retries_answer_errors_that_name_the_cause() {
    let faults = Faults {
        throttle: 0.12,
        server_error: 0.08,
        drop: 0.08,
        lose_answer: 0.05,
        invalid_instance: 0.4,
        seed: 7,
    };
    let b = burst(
        faults,
        &[
            ("SYMROUTE_RETRY_BASE_MS", "5"),
            ("SYMROUTE_MAX_ATTEMPTS", "2"),
        ],
    );
    assert!(
        b.failed > 0,
        "no fault got through two attempts: the error path went untested"
    );
    assert!(b.sent > 0, "nothing got through");
}
