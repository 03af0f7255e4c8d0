//! Every reason to send nothing, each saying why, and the managed-instance checks.

use super::*;

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
