//! The on-host trigger (`symroute install`, `apply --install-trigger`, `hotplug add|remove`),
//! against the real kernel in the simulated VPC of routing.rs, and the units through systemd's
//! own parser. udev and systemd acting on a real hot-plug are proved in the VM lab
//! (tests/tests/lab.rs, "trigger:" cells). Needs root (fails under CI=true).

mod common;
mod persist_bed;
mod persist_fixtures;

use common::Bed;
use persist_bed::*;
use persist_fixtures::snapshot;
use serde_json::Value;
use symroute_testbed::EniSpec;

#[test]
fn the_trigger_routes_an_eni_as_it_appears_and_cleans_up_as_it_goes() {
    need_root!();
    let bed = Bed::new(false);
    let eth1 = bed.attach(
        EniSpec::new("eth1", &bed.a).ip(PRIMARY).ip(SECONDARY),
        1,
        0,
        ENI,
    );
    let far = bed.vpc.add_client(&bed.b, "10.0.2.50").expect("client");
    let mac = eth1.mac().to_string();
    let primary_mac = bed.eth0.mac().to_string();
    let t = systemd_tree();
    let before = snapshot(&t.dir);

    let r = bed.agent(&["install", "--json", "--root", t.dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["action"], "install");
    assert_eq!(r.json["trigger"]["status"], "installed", "{}", r.stdout);
    let rule = t.read("/etc/udev/rules.d/81-symroute-hotplug.rules");
    assert!(
        rule.contains("ENV{SYSTEMD_WANTS}+=\"symroute-attach@$attr{address}.service\""),
        "{rule}"
    );
    let again = bed.agent(&["install", "--json", "--root", t.dir.to_str().unwrap()]);
    assert_eq!(
        again.json["trigger"]["status"], "unchanged",
        "{}",
        again.stdout
    );
    // systemd's own parser: the templates as instantiated for this MAC, and the periodic
    // check's timer with its service, read together.
    let instance = mac.replace(':', "-");
    for template in ["symroute-attach@.service", "symroute-detach@.service"] {
        let name = template.replace("@.", &format!("@{instance}."));
        systemd_accepts(&t, &[(template, name)]);
    }
    systemd_accepts(
        &t,
        &[
            ("symroute-check.service", "symroute-check.service".into()),
            ("symroute-check.timer", "symroute-check.timer".into()),
        ],
    );

    // udev at boot announces the primary too: its unit's command leaves it alone, exit 0.
    let out = run_unit(
        &bed,
        &t,
        "symroute-attach@.service",
        &primary_mac,
        &["--json"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["changes"], 0, "{v}");
    assert!(v["notes"][0].as_str().unwrap().contains("primary"), "{v}");
    assert!(bed.our_rules().is_empty());

    // The ENI appears: the attach unit's command routes it.
    assert!(!answers(&far), "eth1 answers before anything ran (testbed)");
    let (_, args) = exec_start(&t, "symroute-attach@.service", &mac);
    assert_eq!(args, ["hotplug", "add", "--mac", mac.as_str()]);
    let root = t.dir.to_str().unwrap();
    run_unit(
        &bed,
        &t,
        "symroute-attach@.service",
        &mac,
        &["--root", root],
    );
    assert!(
        answers(&far),
        "eth1 does not answer after the attach unit's command"
    );

    // It goes: the kernel link first (the routes in its table go with it), metadata a little
    // later. The detach unit's command removes the rest while IMDS still lists it...
    bed.vpc.detach_eni(&eth1).unwrap();
    assert!(!bed.our_rules().is_empty(), "rules outlive the link");
    run_unit(
        &bed,
        &t,
        "symroute-detach@.service",
        &mac,
        &["--root", root],
    );
    assert!(bed.our_rules().is_empty(), "{:?}", bed.our_rules());
    assert!(bed.our_routes().is_empty(), "{:?}", bed.our_routes());

    // ...and, run again once metadata forgot it, finds nothing left to do.
    bed.imds.remove_eni(&mac);
    let out = run_unit(
        &bed,
        &t,
        "symroute-detach@.service",
        &mac,
        &["--json", "--root", root],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["changes"], 0, "{v}");

    let r = bed.agent(&["uninstall", "--json", "--root", root]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["trigger"]["status"], "uninstalled", "{}", r.stdout);
    assert_eq!(snapshot(&t.dir), before, "uninstall left the tree changed");
}

#[test]
fn a_first_good_apply_leaves_the_trigger_and_a_failed_one_does_not() {
    need_root!();
    let (bed, _far) = bed();
    let t = systemd_tree();
    let root = t.dir.to_str().unwrap();
    // Bad input fails before anything: no trigger either.
    let r = bed.agent(&[
        "apply",
        "--json",
        "--root",
        root,
        "--eni",
        "eni-99999999999999999",
        "--wait",
        "0",
        "--install-trigger",
    ]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.json.get("trigger").is_none(), "{}", r.stdout);
    assert!(!t
        .path("/etc/udev/rules.d/81-symroute-hotplug.rules")
        .exists());

    let r = bed.agent(&[
        "apply",
        "--json",
        "--root",
        root,
        "--eni",
        ENI,
        "--persist",
        "none",
        "--install-trigger",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["trigger"]["status"], "installed", "{}", r.stdout);
    assert!(t
        .path("/etc/udev/rules.d/81-symroute-hotplug.rules")
        .exists());

    // Where cloud-init's hotplug hook is enabled, it handles new ENIs: symroute steps aside.
    let t2 = systemd_tree();
    t2.write(
        "/etc/udev/rules.d/90-cloud-init-hook-hotplug.rules",
        "# cloud-init\n",
    );
    let r = bed.agent(&[
        "apply",
        "--json",
        "--root",
        t2.dir.to_str().unwrap(),
        "--eni",
        ENI,
        "--persist",
        "none",
        "--install-trigger",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["trigger"]["status"], "stepped-aside", "{}", r.stdout);
    assert!(!t2
        .path("/etc/udev/rules.d/81-symroute-hotplug.rules")
        .exists());
}

/// On a host whose own tool routes every ENI (here amazon-ec2-net-utils, by its unit), apply
/// steps aside before that tool has acted too: an ENI it has not reached yet (no rule of its
/// own yet, the race after an attach) is reported as its and left as it is, live state
/// included, so the two never fight over one table; `--force` still configures it.
#[test]
fn where_the_hosts_own_tool_routes_enis_apply_steps_aside_before_it_has_acted() {
    need_root!();
    let bed = Bed::new(false);
    bed.attach(
        EniSpec::new("eth1", &bed.a).ip(PRIMARY).ip(SECONDARY),
        1,
        0,
        ENI,
    );
    let t = systemd_tree();
    t.write(
        "/usr/lib/systemd/system/policy-routes@.service",
        "# amazon-ec2-net-utils\n",
    );
    let root = t.dir.to_str().unwrap();
    let before = bed.routing_state();
    let r = bed.agent(&[
        "apply",
        "--json",
        "--root",
        root,
        "--eni",
        ENI,
        "--persist",
        "none",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let eni = &r.json["enis"][0];
    assert_eq!(eni["status"], "managed-by-other", "{}", r.stdout);
    assert!(
        eni["managed_by"]
            .as_str()
            .is_some_and(|m| m.contains("amazon-ec2-net-utils")),
        "{}",
        r.stdout
    );
    assert_eq!(r.json["changes"], 0, "{}", r.stdout);
    assert_eq!(bed.routing_state(), before, "nothing changed");

    let forced = bed.agent(&[
        "apply",
        "--json",
        "--root",
        root,
        "--eni",
        ENI,
        "--persist",
        "none",
        "--force",
    ]);
    assert_eq!(forced.code, 0, "{}\n{}", forced.stdout, forced.stderr);
    assert_eq!(
        forced.json["enis"][0]["status"], "configure",
        "{}",
        forced.stdout
    );
    assert_eq!(
        bed.rules_for_table(10001),
        vec![
            (format!("{PRIMARY}/32"), 10001),
            (format!("{SECONDARY}/32"), 10001)
        ]
    );
}

/// The periodic check (`symroute check`, what `symroute-check.timer` runs) after a run that
/// kept the fixed metadata: it asks IMDS nothing that cannot change on an attached ENI, and
/// still puts back a dropped rule, follows an address assigned with no event, and, when an ENI
/// is detached and attached again at another device number (same MAC, new link), reads that
/// ENI whole and moves it to its new table.
#[test]
fn the_periodic_check_reads_only_what_can_change_and_still_follows_every_change() {
    need_root!();
    let bed = Bed::new(false);
    bed.attach(
        EniSpec::new("eth1", &bed.a).ip("10.0.1.30"),
        1,
        0,
        "eni-44444444444444441",
    );
    let eth2 = bed.attach(
        EniSpec::new("eth2", &bed.b).ip("10.0.2.31"),
        2,
        0,
        "eni-44444444444444442",
    );
    // The check exists where the trigger is installed, and only there are the values kept.
    let t = systemd_tree();
    std::fs::create_dir(t.dir.join("run")).unwrap();
    let root = t.dir.to_str().unwrap();
    assert_eq!(bed.agent(&["install", "--json", "--root", root]).code, 0);
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--json", "--root", root, "--persist", "none"]);
        let r = bed.agent(&all);
        assert_eq!(r.code, 0, "{args:?}:\n{}\n{}", r.stdout, r.stderr);
        r
    };
    let fixed_read = |bed: &Bed| -> Vec<String> {
        bed.imds
            .requests()
            .into_iter()
            .map(|q| q.path)
            .filter(|p| {
                [
                    "/instance-id",
                    "/mac",
                    "/device-number",
                    "/network-card",
                    "/interface-id",
                    "/subnet-ipv4-cidr-block",
                ]
                .iter()
                .any(|k| p.ends_with(k))
            })
            .collect()
    };

    bed.imds.clear_requests();
    let full = run(&["apply", "--wait", "10"]).json["imds_requests"]
        .as_u64()
        .unwrap();
    assert!(!fixed_read(&bed).is_empty());
    bed.imds.clear_requests();
    let r = run(&["check"]);
    assert!(fixed_read(&bed).is_empty(), "{:?}", fixed_read(&bed));
    let cheap = r.json["imds_requests"].as_u64().unwrap();
    assert!(cheap < full, "check: {cheap} requests, apply: {full}");
    assert_eq!(r.json["changes"], 0, "{}", r.stdout);

    // A rule dropped with no event, and an address assigned with no event.
    bed.inst
        .exec(&["ip", "rule", "del", "from", "10.0.1.30", "lookup", "10001"])
        .unwrap();
    bed.imds.set(
        &format!(
            "meta-data/network/interfaces/macs/{}/local-ipv4s",
            eth2.mac()
        ),
        "10.0.2.31\n10.0.2.32",
    );
    run(&["check"]);
    assert_eq!(
        bed.rules_for_table(10001),
        vec![("10.0.1.30/32".into(), 10001)]
    );
    assert_eq!(
        bed.rules_for_table(10002),
        vec![
            ("10.0.2.31/32".into(), 10002),
            ("10.0.2.32/32".into(), 10002)
        ]
    );

    // Detached and attached again at device 3: the same MAC on a new link.
    let mac = eth2.mac().to_string();
    bed.vpc.detach_eni(&eth2).unwrap();
    bed.imds.remove_eni(&mac);
    bed.attach(
        EniSpec::new("eth2", &bed.b).mac(&mac).ip("10.0.2.31"),
        3,
        0,
        "eni-44444444444444442",
    );
    bed.imds.clear_requests();
    run(&["check"]);
    let read = fixed_read(&bed);
    assert!(
        read.iter()
            .any(|p| p.ends_with(&format!("{mac}/device-number"))),
        "the re-attached ENI's device number was not read: {read:?}"
    );
    assert!(
        !read
            .iter()
            .any(|p| p.contains("/macs/") && !p.contains(&mac)),
        "eth1's fixed keys were read again: {read:?}"
    );
    assert_eq!(
        bed.rules_for_table(10003),
        vec![("10.0.2.31/32".into(), 10003)]
    );
    assert!(bed.rules_for_table(10002).is_empty());

    // Uninstalled: nothing of it is left under /run either.
    assert_eq!(bed.agent(&["uninstall", "--json", "--root", root]).code, 0);
    assert!(!t.dir.join("run/symroute").exists());
}
