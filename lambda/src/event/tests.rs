use super::*;
use proptest::prelude::*;
use serde_json::json;
use std::path::PathBuf;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/events")
}

pub(crate) fn fixture(name: &str) -> Value {
    let path = fixtures_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn bad(raw: Value) -> String {
    match parse(raw) {
        Err(e @ (Error::BadEvent(_) | Error::Unsupported(_))) => e.to_string(),
        other => panic!("expected a malformed-event error, got {other:?}"),
    }
}

#[test]
fn attach_fixture() {
    let ev = parse(fixture("attach.json")).unwrap();
    assert_eq!(ev.id, "6a7e8feb-b491-4cf7-a9f1-bf3703467718");
    assert_eq!(
        ev.trigger,
        Trigger::Attach {
            eni_id: "eni-0a9c4b60624c0e41d".into(),
            instance_id: "i-0f3fbbbc0298d1a86".into()
        }
    );
}

#[test]
fn failed_attach_fixture_is_a_failed_call() {
    let ev = parse(fixture("attach-failed.json")).unwrap();
    match ev.trigger {
        Trigger::FailedCall {
            event_name,
            code,
            message,
        } => {
            assert_eq!(event_name, "AttachNetworkInterface");
            assert_eq!(code, "Client.InvalidParameterValue");
            assert!(message.contains("availability zone"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn detach_fixture() {
    let ev = parse(fixture("detach.json")).unwrap();
    assert_eq!(
        ev.trigger,
        Trigger::Detach {
            attachment_id: "eni-attach-00eb752237a160808".into()
        }
    );
}

#[test]
fn address_change_fixtures_name_the_eni_in_either_request_shape() {
    for (file, call) in [
        ("assign-private-ip.json", "AssignPrivateIpAddresses"),
        ("assign-ipv6.json", "AssignIpv6Addresses"),
    ] {
        let ev = parse(fixture(file)).unwrap();
        assert_eq!(
            ev.trigger,
            Trigger::AddressChange {
                eni_id: "eni-0a9c4b60624c0e41d".into(),
                event_name: call.into()
            },
            "{file}"
        );
    }
    for call in ["UnassignPrivateIpAddresses", "UnassignIpv6Addresses"] {
        let mut raw = fixture("assign-private-ip.json");
        raw["detail"]["eventName"] = json!(call);
        assert!(matches!(
            parse(raw).unwrap().trigger,
            Trigger::AddressChange { .. }
        ));
    }
    // No ENI id in either shape, or a hostile one: refused, naming the field.
    let mut raw = fixture("assign-ipv6.json");
    raw["detail"]["requestParameters"] = json!({"AssignIpv6AddressesRequest": {}});
    assert!(bad(raw).contains("networkInterfaceId"));
    let mut raw = fixture("assign-private-ip.json");
    raw["detail"]["requestParameters"]["networkInterfaceId"] = json!("eni-$(reboot)");
    assert!(bad(raw).contains("networkInterfaceId"));
}

#[test]
fn an_empty_event_id_is_not_an_id() {
    let mut raw = fixture("command-invocation.json");
    raw["id"] = json!("");
    assert_eq!(parse(raw).unwrap().id, "-");
}

#[test]
fn instance_running_fixture() {
    let ev = parse(fixture("instance-running.json")).unwrap();
    assert_eq!(ev.id, "ee376907-2647-4179-9203-343cfb3017a4");
    assert_eq!(
        ev.trigger,
        Trigger::InstanceState {
            instance_id: "i-0f3fbbbc0298d1a86".into(),
            state: "running".into()
        }
    );
}

#[test]
fn command_invocation_fixture() {
    let ev = parse(fixture("command-invocation.json")).unwrap();
    assert_eq!(
        ev.trigger,
        Trigger::CommandStatus {
            command_id: "8d4b1f9e-3c2a-4f5e-9b7d-1a2b3c4d5e6f".into(),
            instance_id: "i-0f3fbbbc0298d1a86".into(),
            document: "symroute-Document-AbCdEf123456".into(),
            status: "Failed".into()
        }
    );
    let mut raw = fixture("command-invocation.json");
    raw["detail"]["command-id"] = json!("8d4b1f9e; reboot");
    assert!(bad(raw).contains("detail.command-id"));
}

#[test]
fn every_fixture_parses() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let raw: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            parse(raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} fixtures found");
}

#[test]
fn lenient_about_fields_it_does_not_need() {
    let mut raw = fixture("attach.json");
    raw["detail"]["requestParameters"]["deviceIndex"] = json!("1");
    raw["detail"]["requestParameters"]["networkCardIndex"] = json!(1);
    raw["detail"]["responseElements"] = Value::Null;
    raw["detail"]["userIdentity"] = json!(42);
    raw["detail"]["somethingNew"] = json!({"a": [1, 2]});
    raw.as_object_mut().unwrap().remove("time");
    raw.as_object_mut().unwrap().remove("account");
    assert!(matches!(
        parse(raw).unwrap().trigger,
        Trigger::Attach { .. }
    ));

    let mut odd_message = fixture("attach-failed.json");
    odd_message["detail"]["errorMessage"] = json!({"nested": true});
    assert!(matches!(
        parse(odd_message).unwrap().trigger,
        Trigger::FailedCall { .. }
    ));
}

#[test]
fn not_an_object() {
    for raw in [
        json!(null),
        json!([1, 2]),
        json!("attach"),
        json!(3.5),
        json!(true),
    ] {
        assert!(bad(raw).contains("expected a JSON object"));
    }
}

#[test]
fn missing_fields_are_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["detail-type"], "detail-type"),
        (&["detail"], "detail"),
        (&["source"], "source"),
        (&["detail", "eventName"], "detail.eventName"),
        (&["detail", "requestParameters"], "detail.requestParameters"),
        (
            &["detail", "requestParameters", "networkInterfaceId"],
            "networkInterfaceId",
        ),
        (&["detail", "requestParameters", "instanceId"], "instanceId"),
    ];
    for (path, expect) in cases {
        let mut raw = fixture("attach.json");
        let (last, parents) = path.split_last().unwrap();
        let mut node = &mut raw;
        for p in parents {
            node = node.get_mut(*p).unwrap();
        }
        node.as_object_mut().unwrap().remove(*last);
        let msg = bad(raw);
        assert!(msg.contains(expect), "{path:?}: {msg}");
    }
    let mut detach = fixture("detach.json");
    detach["detail"]["requestParameters"]
        .as_object_mut()
        .unwrap()
        .remove("attachmentId");
    assert!(bad(detach).contains("attachmentId"));
    let mut running = fixture("instance-running.json");
    running["detail"].as_object_mut().unwrap().remove("state");
    assert!(bad(running).contains("detail.state"));
}

#[test]
fn wrong_types_are_named_with_their_path() {
    let mut raw = fixture("attach.json");
    raw["detail"]["requestParameters"]["networkInterfaceId"] = json!(12345);
    let msg = bad(raw);
    assert!(
        msg.contains("detail.requestParameters.networkInterfaceId"),
        "{msg}"
    );

    let mut raw = fixture("attach.json");
    raw["detail"] = json!("a string");
    assert!(bad(raw).contains("detail"));

    let mut raw = fixture("attach.json");
    raw["time"] = json!("yesterday");
    assert!(bad(raw).contains("time"));

    let mut raw = fixture("instance-running.json");
    raw["detail"]["instance-id"] = json!(["i-0f3fbbbc0298d1a86"]);
    assert!(bad(raw).contains("instance-id"));
}

#[test]
fn ids_must_look_like_ids() {
    for eni in [
        "eni-XYZ",
        "i-0f3fbbbc0298d1a86",
        "eni-0a9c4b60624c0e41d; rm -rf /",
        "",
        "eni-",
    ] {
        let mut raw = fixture("attach.json");
        raw["detail"]["requestParameters"]["networkInterfaceId"] = json!(eni);
        assert!(bad(raw).contains("not an id"), "{eni:?}");
    }
    assert!(is_ec2_id("eni-0a9c4b60624c0e41d", "eni-"));
    assert!(is_ec2_id("eni-attach-00eb752237a160808", "eni-attach-"));
    assert!(!is_ec2_id("eni-attach-00eb752237a160808", "eni-"));
}

#[test]
fn huge_strings_give_short_messages() {
    let huge = "e".repeat(1 << 20);
    let mut raw = fixture("attach.json");
    raw["detail"]["requestParameters"]["networkInterfaceId"] = json!(format!("eni-{huge}"));
    let msg = bad(raw);
    assert!(msg.len() < 500, "message is {} bytes", msg.len());

    let mut raw = fixture("attach.json");
    raw["detail-type"] = json!(huge.clone());
    assert!(bad(raw).len() < 500);

    let mut raw = fixture("attach-failed.json");
    raw["detail"]["errorMessage"] = json!(huge);
    match parse(raw).unwrap().trigger {
        Trigger::FailedCall { message, .. } => assert!(message.len() < 300),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_events_are_unsupported() {
    let mut raw = fixture("attach.json");
    raw["detail"]["eventName"] = json!("CreateNetworkInterface");
    assert!(
        matches!(parse(raw), Err(Error::Unsupported(m)) if m.contains("CreateNetworkInterface"))
    );
    let mut raw = fixture("attach.json");
    raw["detail-type"] = json!("Scheduled Event");
    assert!(matches!(parse(raw), Err(Error::Unsupported(m)) if m.contains("Scheduled Event")));
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        "(eni|i|eni-attach)-[0-9a-f]{8,17}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    ".{0,12}",
                    Just("detail".to_string()),
                    Just("detail-type".to_string()),
                    Just("eventName".to_string()),
                    Just("requestParameters".to_string()),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every object path of a fixture, so mutations hit the fields that matter.
fn paths(v: &Value, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(m) = v {
        for (k, child) in m {
            let mut p = prefix.clone();
            p.push(k.clone());
            out.push(p.clone());
            paths(child, p, out);
        }
    }
}

fn fixtures() -> Vec<Value> {
    [
        "attach.json",
        "attach-failed.json",
        "detach.json",
        "instance-running.json",
        "command-invocation.json",
        "assign-private-ip.json",
        "assign-ipv6.json",
    ]
    .iter()
    .map(|f| fixture(f))
    .collect()
}

fn config() -> ProptestConfig {
    // Bounded so CI time is predictable; raise with PROPTEST_CASES for a longer hunt.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_json_never_panics(raw in arb_json()) {
        if let Err(e) = parse(raw) {
            prop_assert!(e.to_string().len() < 1000);
        }
    }

    #[test]
    fn mutated_fixtures_never_panic(which in 0usize..7, pick in any::<prop::sample::Index>(), value in arb_json(), delete in any::<bool>()) {
        let mut raw = fixtures().swap_remove(which);
        let mut all = Vec::new();
        paths(&raw, Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        let (last, parents) = path.split_last().unwrap();
        let mut node = &mut raw;
        for p in parents {
            node = node.get_mut(p).unwrap();
        }
        let obj = node.as_object_mut().unwrap();
        if delete { obj.remove(last); } else { obj.insert(last.clone(), value); }
        match parse(raw) {
            Ok(ev) => prop_assert!(!ev.id.is_empty()),
            Err(e) => {
                prop_assert!(matches!(e, Error::BadEvent(_) | Error::Unsupported(_)), "{e:?}");
                prop_assert!(e.to_string().len() < 1000);
            }
        }
    }
}
