//! Detach, and an ENI moving between instances: the per-attachment tag says which instance to clean.

use super::*;

#[tokio::test(start_paused = true)]
async fn detach_removes_on_the_instance_the_attachment_named_and_drops_its_tag() {
    let fake = Fake::new();
    sent(run(&fake, &settings(), attach_event(E1)).await);
    let attachment = format!("eni-attach-{}", &E1[4..]);
    fake.state().enis.get_mut(E1).unwrap().attachment = None;
    let s = sent(run(&fake, &settings(), detach_event("ev-2", &attachment)).await);
    assert_eq!(
        (s[0].action, s[0].target.as_str(), s[0].instance_id.as_str()),
        (Action::Remove, E1, I)
    );
    assert!(!fake.state().enis[E1].tags.contains_key(&attach_tag(E1)));
    // Unknown attachments: nothing to do.
    assert_eq!(
        skip_code(
            &fake,
            &settings(),
            detach_event("ev-9", "eni-attach-0123456789abcdef0")
        )
        .await,
        "unknown-attachment"
    );
}

/// Moves E1 from I to I2 (new attachment id) and hands the two events over in `order`.
async fn move_eni(order: [&str; 2]) -> Fake {
    let fake = Fake::new();
    sent(run(&fake, &settings(), attach_event(E1)).await);
    let old = format!("eni-attach-{}", &E1[4..]);
    {
        let mut s = fake.state();
        let a = s.enis.get_mut(E1).unwrap().attachment.as_mut().unwrap();
        a.id = "eni-attach-0000000000000000b".into();
        a.instance_id = I2.into();
    }
    for which in order {
        let raw = if which == "attach" {
            attach_event_to("ev-attach-b", E1, I2)
        } else {
            detach_event("ev-detach-a", &old)
        };
        sent(run(&fake, &settings(), raw).await);
    }
    fake
}

#[tokio::test(start_paused = true)]
async fn an_eni_moved_between_instances_is_cleaned_on_a_and_configured_on_b_in_either_order() {
    for order in [["detach", "attach"], ["attach", "detach"]] {
        let fake = move_eni(order).await;
        let cmds: Vec<(String, Action)> = fake
            .sent()
            .iter()
            .map(|c| (c.instance_id.clone(), c.action))
            .collect();
        assert_eq!(cmds.len(), 3, "{order:?}: {cmds:?}");
        assert!(
            cmds.contains(&(I.to_string(), Action::Remove)),
            "{order:?}: A not cleaned: {cmds:?}"
        );
        assert!(
            cmds.contains(&(I2.to_string(), Action::Apply)),
            "{order:?}: B not configured: {cmds:?}"
        );
        let tags = fake.state().enis[E1].tags.clone();
        assert_eq!(
            tags.get(&attachment_tag("eni-attach-0000000000000000b"))
                .map(String::as_str),
            Some(I2),
            "{order:?}"
        );
        assert!(
            !tags.contains_key(&attach_tag(E1)),
            "{order:?}: A's tag left"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn reattached_to_the_same_instance_is_not_removed() {
    let fake = Fake::new();
    sent(run(&fake, &settings(), attach_event(E1)).await);
    let old = format!("eni-attach-{}", &E1[4..]);
    fake.state()
        .enis
        .get_mut(E1)
        .unwrap()
        .attachment
        .as_mut()
        .unwrap()
        .id = "eni-attach-0000000000000000c".into();
    assert_eq!(
        skip_code(&fake, &settings(), detach_event("ev-2", &old)).await,
        "reattached"
    );
    assert_eq!(fake.sent().len(), 1);
    assert!(!fake.state().enis[E1].tags.contains_key(&attach_tag(E1)));
}
