//! The on-host trigger (`symroute install`, `apply --install-trigger`, `hotplug add|remove`),
//! against the real kernel in the simulated VPC of routing.rs, and the units through systemd's
//! own parser. udev and systemd acting on a real hot-plug are proved in the VM lab
//! (tests/tests/lab.rs, "trigger:" cells). Needs root (fails under CI=true).

mod common;
mod persist_bed;
mod persist_fixtures;

use std::fs;
use std::process::Command;

use common::Bed;
use persist_bed::*;
use persist_fixtures::{snapshot, TempTree};
use serde_json::Value;
use symroute_testbed::EniSpec;

/// An image builder's tree: the directories a systemd host has.
fn host_tree() -> TempTree {
    let t = TempTree::new();
    for d in [
        "/etc/systemd/system",
        "/etc/udev/rules.d",
        "/usr/local/sbin",
    ] {
        fs::create_dir_all(t.path(d)).unwrap();
    }
    t
}

/// What systemd runs for `<template>` instantiated with `instance`: its ExecStart, with the
/// agent copy where it lies in `t`.
fn exec_start(t: &TempTree, template: &str, instance: &str) -> (String, Vec<String>) {
    let unit = t.read(&format!("/etc/systemd/system/{template}"));
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .replace("%i", instance);
    let mut words = exec.split_whitespace().map(str::to_string);
    let bin = t.path(&words.next().unwrap());
    (bin.to_str().unwrap().to_string(), words.collect())
}

/// systemd's own parser accepts the template as instantiated for `instance`. (A MAC's colons
/// are valid in a unit name, and udev starts the units by them, but `systemd-analyze verify`
/// (252) cannot take a colon in a file path: "Couldn't process aliases". The file it checks is
/// named with dashes; the content is the same.)
fn systemd_accepts(t: &TempTree, template: &str, instance: &str) {
    let dir = TempTree::new();
    let name = template.replace("@.", &format!("@{}.", instance.replace(':', "-")));
    let file = dir.path(&format!("/{name}"));
    let bin_real = t.path("/usr/local/sbin/symroute-boot");
    fs::write(
        &file,
        t.read(&format!("/etc/systemd/system/{template}"))
            .replace("/usr/local/sbin/symroute-boot", bin_real.to_str().unwrap()),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .expect("systemd-analyze");
    let complaints = String::from_utf8_lossy(&verify.stderr).into_owned();
    assert!(verify.status.success(), "{name}: {complaints}");
    assert!(
        !complaints.contains("symroute"),
        "systemd-analyze verify {name}: {complaints}"
    );
}

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
    let t = host_tree();
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
    systemd_accepts(&t, "symroute-attach@.service", &mac);
    systemd_accepts(&t, "symroute-detach@.service", &mac);
    // The periodic check: the timer and its service, read together by systemd's parser.
    let dir = TempTree::new();
    let bin_real = t.path("/usr/local/sbin/symroute-boot");
    let mut files = Vec::new();
    for name in ["symroute-check.service", "symroute-check.timer"] {
        let file = dir.path(&format!("/{name}"));
        fs::write(
            &file,
            t.read(&format!("/etc/systemd/system/{name}"))
                .replace("/usr/local/sbin/symroute-boot", bin_real.to_str().unwrap()),
        )
        .unwrap();
        files.push(file);
    }
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .expect("systemd-analyze");
    let complaints = String::from_utf8_lossy(&verify.stderr).into_owned();
    assert!(verify.status.success(), "{complaints}");
    assert!(!complaints.contains("symroute"), "{complaints}");

    // udev at boot announces the primary too: its unit's command leaves it alone, exit 0.
    let (bin, args) = exec_start(&t, "symroute-attach@.service", &primary_mac);
    let out = bed
        .inst
        .command(&bin)
        .args(&args)
        .arg("--json")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", bed.imds.endpoint())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["changes"], 0, "{v}");
    assert!(v["notes"][0].as_str().unwrap().contains("primary"), "{v}");
    assert!(bed.our_rules().is_empty());

    // The ENI appears: the attach unit's command routes it.
    assert!(!answers(&far), "eth1 answers before anything ran (testbed)");
    let (bin, args) = exec_start(&t, "symroute-attach@.service", &mac);
    assert_eq!(args, ["hotplug", "add", "--mac", mac.as_str()]);
    let out = bed
        .inst
        .command(&bin)
        .args(&args)
        .args(["--root", t.dir.to_str().unwrap()])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", bed.imds.endpoint())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        answers(&far),
        "eth1 does not answer after the attach unit's command"
    );

    // It goes: the kernel link first (the routes in its table go with it), metadata a little
    // later. The detach unit's command removes the rest while IMDS still lists it...
    bed.vpc.detach_eni(&eth1).unwrap();
    assert!(!bed.our_rules().is_empty(), "rules outlive the link");
    let (bin, args) = exec_start(&t, "symroute-detach@.service", &mac);
    let out = bed
        .inst
        .command(&bin)
        .args(&args)
        .args(["--root", t.dir.to_str().unwrap()])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", bed.imds.endpoint())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(bed.our_rules().is_empty(), "{:?}", bed.our_rules());
    assert!(bed.our_routes().is_empty(), "{:?}", bed.our_routes());

    // ...and, run again once metadata forgot it, finds nothing left to do.
    bed.imds.remove_eni(&mac);
    let out = bed
        .inst
        .command(&bin)
        .args(&args)
        .args(["--json", "--root", t.dir.to_str().unwrap()])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", bed.imds.endpoint())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["changes"], 0, "{v}");

    let r = bed.agent(&["uninstall", "--json", "--root", t.dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["trigger"]["status"], "uninstalled", "{}", r.stdout);
    assert_eq!(snapshot(&t.dir), before, "uninstall left the tree changed");
}

#[test]
fn a_first_good_apply_leaves_the_trigger_and_a_failed_one_does_not() {
    need_root!();
    let (bed, _far) = bed();
    let t = host_tree();
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
    let t2 = host_tree();
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
