//! The outcome of a command that ended: exit 3 sent again (bounded), 1 and 2 failing loudly with the agent's report.

use super::*;

fn ended(fake: &Fake, command: &str, status: &str, code: i32, stdout: &str) {
    fake.state().invocations.insert(
        (command.to_string(), command::RUN_STEP.to_string()),
        Invocation {
            status: Some(status.into()),
            details: status.into(),
            response_code: code,
            stdout: stdout.into(),
            stderr: String::new(),
        },
    );
}

#[tokio::test(start_paused = true)]
async fn exit_3_is_sent_again_bounded_and_a_repeated_status_event_sends_nothing_new() {
    let fake = Fake::new();
    let first = sent(run(&fake, &settings(), attach_event(E1)).await).remove(0);
    let mut command = first.command_id.clone();
    for attempt in 2..=4 {
        ended(&fake, &command, "Failed", 3, "{\"exit_code\":3}");
        let again = sent(
            run(
                &fake,
                &settings(),
                status_event("st", &command, "symroute-doc"),
            )
            .await,
        );
        assert_eq!(again[0].target, E1);
        assert!(!again[0].already_sent);
        // The status event delivered twice: the same resend, found.
        let dup = sent(
            run(
                &fake,
                &settings(),
                status_event("st2", &command, "symroute-doc"),
            )
            .await,
        );
        assert_eq!(dup[0].command_id, again[0].command_id);
        assert!(dup[0].already_sent);
        assert_eq!(
            fake.sent().last().unwrap().comment,
            format!("symroute ev-1 {E1} #{attempt}")
        );
        command = again[0].command_id.clone();
    }
    ended(&fake, &command, "Failed", 3, "{\"exit_code\":3}");
    let err = run(
        &fake,
        &settings(),
        status_event("st", &command, "symroute-doc"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::CommandFailed(_)), "{err}");
    assert!(err.to_string().contains("4 attempts"), "{err}");
    assert_eq!(fake.sent().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn exit_1_and_2_fail_loudly_with_the_agents_report_and_send_nothing() {
    for (code, says) in [(1, "exit 1"), (2, "exit 2")] {
        let fake = Fake::new();
        let c = sent(run(&fake, &settings(), attach_event(E1)).await).remove(0);
        ended(
            &fake,
            &c.command_id,
            "Failed",
            code,
            "{\"error\":\"the kernel refused\"}",
        );
        let err = run(
            &fake,
            &settings(),
            status_event("st", &c.command_id, "symroute-doc"),
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(says) && text.contains("the kernel refused"),
            "{text}"
        );
        assert!(text.contains(&c.command_id) && text.contains(E1), "{text}");
        assert_eq!(fake.sent().len(), 1, "a failed command was sent again");
        // The invocation was read for the run step, by name.
        assert!(fake
            .state()
            .calls
            .contains(&format!("invocation {}", command::RUN_STEP)));
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_step_that_never_ran_is_explained_by_the_download_step() {
    let fake = Fake::new();
    let c = sent(run(&fake, &settings(), attach_event(E1)).await).remove(0);
    ended(&fake, &c.command_id, "Failed", -1, "");
    fake.state().invocations.insert(
        (c.command_id.clone(), command::DOWNLOAD_STEP.to_string()),
        Invocation {
            status: Some("Failed".into()),
            stderr: "AccessDenied: s3:ListBucket".into(),
            response_code: 1,
            ..Invocation::default()
        },
    );
    let err = run(
        &fake,
        &settings(),
        status_event("st", &c.command_id, "symroute-doc"),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("AccessDenied"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn status_events_of_other_documents_and_commands_are_left_alone() {
    let fake = Fake::new();
    assert_eq!(
        skip_code(
            &fake,
            &settings(),
            status_event("st", CMD, "AWS-RunShellScript")
        )
        .await,
        "other-document"
    );
    assert_eq!(
        skip_code(&fake, &settings(), status_event("st", CMD, "symroute-doc")).await,
        "not-ours"
    );
    // A document ARN in the setting matches the name in the event.
    let s = settings_with(&[]);
    let arn = Settings {
        document_name: "arn:aws:ssm:us-east-1:123456789012:document/symroute-doc".into(),
        ..s
    };
    assert_eq!(
        skip_code(&fake, &arn, status_event("st", CMD, "symroute-doc")).await,
        "not-ours"
    );
    assert!(fake.sent().is_empty());
}
