//! What is sent, exactly once: the attach path, bounded waits and retries, lost answers, instance starts, hostile events.

use super::*;

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
async fn apply_carries_the_stacks_trigger_and_connmark_choices_and_remove_neither() {
    let param = |c: &CommandRequest, name: &str| {
        c.parameters()
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    };
    // The stack's defaults are sent explicitly.
    let fake = Fake::new();
    sent(run(&fake, &settings(), attach_event(E1)).await);
    let cmd = &fake.sent()[0];
    assert_eq!(param(cmd, "onHostTrigger").as_deref(), Some("true"));
    assert_eq!(param(cmd, "connmark").as_deref(), Some("keep"));
    // A stack deployed with OnHostTrigger=false and Connmark=on.
    let fake = Fake::new();
    let s = settings_with(&[
        ("SYMROUTE_ON_HOST_TRIGGER", "false"),
        ("SYMROUTE_CONNMARK", "on"),
    ]);
    sent(run(&fake, &s, attach_event(E1)).await);
    let attachment = format!("eni-attach-{}", &E1[4..]);
    fake.state().enis.get_mut(E1).unwrap().attachment = None;
    sent(run(&fake, &s, detach_event("ev-2", &attachment)).await);
    let cmds = fake.sent();
    assert_eq!(cmds[0].action, Action::Apply);
    assert_eq!(param(&cmds[0], "onHostTrigger").as_deref(), Some("false"));
    assert_eq!(param(&cmds[0], "connmark").as_deref(), Some("on"));
    assert_eq!(cmds[1].action, Action::Remove);
    assert_eq!(param(&cmds[1], "onHostTrigger"), None);
    assert_eq!(param(&cmds[1], "connmark"), None);
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

fn address_event(id: &str, eni: &str) -> Value {
    json!({
        "id": id, "detail-type": "AWS API Call via CloudTrail", "source": "aws.ec2",
        "detail": {
            "eventName": "AssignPrivateIpAddresses",
            "requestParameters": {"networkInterfaceId": eni, "secondaryPrivateIpAddressCount": 1},
        }
    })
}

#[tokio::test(start_paused = true)]
async fn an_address_change_sends_apply_for_that_eni_to_the_instance_it_is_attached_to() {
    let fake = Fake::new();
    let s = sent(run(&fake, &settings(), address_event("ev-addr", E1)).await);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].action, s[0].target.as_str()), (Action::Apply, E1));
    let cmds = fake.sent();
    assert_eq!(cmds.len(), 1);
    assert_eq!(cmds[0].instance_id, I);
    assert_eq!(cmds[0].comment, format!("symroute ev-addr {E1} #1"));
    // Once per event, like an attach.
    sent(run(&fake, &settings(), address_event("ev-addr", E1)).await);
    assert_eq!(fake.sent().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_address_change_skips_what_an_attach_skips() {
    // The primary interface.
    let fake = Fake::new();
    assert_eq!(
        skip_code(&fake, &settings(), address_event("ev-a", E0)).await,
        Skip::PrimaryInterface.code()
    );
    // An ENI that is not attached: nothing on any host to change.
    let fake = Fake::new().with(|s| {
        s.enis.get_mut(E1).unwrap().attachment = None;
    });
    assert_eq!(
        skip_code(&fake, &settings(), address_event("ev-b", E1)).await,
        "not-attached"
    );
    // Gone.
    let fake = Fake::new().with(|s| {
        s.enis.remove(E1);
    });
    assert_eq!(
        skip_code(&fake, &settings(), address_event("ev-c", E1)).await,
        "eni-gone"
    );
    // The skip tag on the ENI.
    let fake = Fake::new().with(|s| {
        s.enis
            .get_mut(E1)
            .unwrap()
            .tags
            .insert("symroute:skip".into(), "true".into());
    });
    assert_eq!(
        skip_code(&fake, &settings(), address_event("ev-d", E1)).await,
        "skip-tag"
    );
    assert!(fake.sent().is_empty());
}
