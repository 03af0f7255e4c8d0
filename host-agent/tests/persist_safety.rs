//! Persistence never leaves a host half done: a failure leaves the files as they were and keeps
//! the working live routing (exit 4), a dry run writes nothing, `remove` deletes only symroute's files, a read-only root is refused before any change.
//! The routing is wiped as a reboot would and brought back by the backend's own tool; a client
//! in another subnet must get answers again. Needs root (fails under CI=true).

mod common;
mod persist_bed;
mod persist_fixtures;

use common::Bed;
use persist_bed::*;
use persist_fixtures::{snapshot, TempTree};
use serde_json::Value;
use symroute_testbed::EniSpec;

#[test]
fn failed_persistence_keeps_the_live_routing_and_the_files_and_dry_run_writes_nothing() {
    need_root!();
    let (bed, far) = bed();
    let t = TempTree::new();
    // An interfaces file that does not read interfaces.d: ifupdown persistence cannot work.
    t.write(
        "/etc/network/interfaces",
        "auto lo\niface lo inet loopback\n",
    );
    let before = snapshot(&t.dir);
    let state = bed.routing_state();
    let root = t.dir.to_str().unwrap();

    let dry = bed.agent(&[
        "apply",
        "--json",
        "--dry-run",
        "--persist",
        "ifcfg",
        "--root",
        root,
        "--eni",
        ENI,
    ]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    let files = dry.json["persist"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{}", dry.stdout);
    assert!(
        files.iter().all(|f| f["action"] == "would-write"),
        "{}",
        dry.stdout
    );
    assert_eq!(snapshot(&t.dir), before, "--dry-run wrote files");

    let r = bed.agent(&[
        "apply",
        "--json",
        "--persist",
        "ifupdown",
        "--root",
        root,
        "--eni",
        ENI,
    ]);
    // Exit 4: the cause named, the files as they were, the ENI working (undoing it would break
    // it now for a problem that only matters at the next boot).
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    let err = r.json["error"].as_str().unwrap();
    assert!(err.contains("source /etc/network/interfaces.d/*"), "{err}");
    assert!(err.contains("live routing works and was kept"), "{err}");
    assert_ne!(bed.routing_state(), state, "the live routing was undone");
    assert!(answers(&far), "the ENI does not answer after exit 4");
    assert_eq!(snapshot(&t.dir), before);
    wipe(&bed, &far);

    // netplan refuses the merged configuration (here: a broken file beside ours): rolled back.
    t.write(
        "/etc/netplan/50-cloud-init.yaml",
        "network:\n  version: 2\n  ethernets:\n    eth1:\n      routes: 5\n",
    );
    let before = snapshot(&t.path("/etc"));
    let r = bed.agent(&[
        "apply",
        "--json",
        "--persist",
        "netplan",
        "--root",
        root,
        "--eni",
        ENI,
    ]);
    assert_eq!(r.code, 4, "{}\n{}", r.stdout, r.stderr);
    let err = r.json["error"].as_str().unwrap();
    assert!(err.contains("rejected the configuration"), "{err}");
    assert!(err.contains("live routing works and was kept"), "{err}");
    assert!(answers(&far), "the ENI does not answer after exit 4");
    assert_eq!(snapshot(&t.path("/etc")), before);
    wipe(&bed, &far);

    // auto on this tree picks ifupdown (and fails the same way); with netplan present, netplan.
    t.write(
        "/etc/netplan/50-cloud-init.yaml",
        "network:\n  version: 2\n",
    );
    let r = bed.agent(&["apply", "--json", "--root", root, "--eni", ENI]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["persist"]["backend"], "netplan", "{}", r.stdout);
    assert!(t.path("/etc/netplan/90-symroute-eth1.yaml").exists());
    assert!(answers(&far));
}

#[test]
fn remove_stale_and_all_delete_only_symroute_files() {
    need_root!();
    let bed = Bed::new(false);
    bed.attach(EniSpec::new("eth1", &bed.a).ip("10.0.1.20"), 1, 0, ENI);
    let eth2 = bed.attach(
        EniSpec::new("eth2", &bed.a).ip("10.0.1.30"),
        2,
        0,
        "eni-33333333333333333",
    );
    let t = TempTree::new();
    let dir = "/etc/sysconfig/network-scripts";
    t.write(
        &format!("{dir}/ifcfg-eth0"),
        "DEVICE=eth0\nBOOTPROTO=dhcp\n",
    );
    let before = snapshot(&t.dir);
    let root = t.dir.to_str().unwrap();
    let r = bed.agent(&[
        "apply",
        "--json",
        "--all",
        "--persist",
        "ifcfg",
        "--root",
        root,
        "--wait",
        "10",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.json["persist"]["files"].as_array().unwrap().len(),
        6,
        "{}",
        r.stdout
    );

    bed.vpc.detach_eni(&eth2).unwrap();
    bed.imds.remove_eni(eth2.mac());
    let r = bed.agent(&["remove", "--json", "--stale", "--root", root]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let deleted: Vec<&str> = r.json["persist"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["action"] == "deleted")
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        deleted,
        vec![
            format!("{dir}/ifcfg-eth2"),
            format!("{dir}/route-eth2"),
            format!("{dir}/rule-eth2")
        ],
        "{}",
        r.stdout
    );
    assert!(t.path(&format!("{dir}/rule-eth1")).exists());

    // --dry-run lists what --all would delete, and deletes nothing.
    let files_now = snapshot(&t.dir);
    let r = bed.agent(&["remove", "--json", "--all", "--dry-run", "--root", root]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let would: Vec<&Value> = r.json["persist"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(would.len(), 3, "{}", r.stdout);
    assert!(
        would.iter().all(|f| f["action"] == "would-delete"),
        "{}",
        r.stdout
    );
    assert_eq!(snapshot(&t.dir), files_now);

    // --all needs no metadata and deletes the rest; the foreign ifcfg-eth0 stays.
    let r = bed.agent(&["remove", "--json", "--all", "--root", root]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        snapshot(&t.dir),
        before,
        "remove --all left the tree changed"
    );
}

/// A read-only root (an immutable image, a read-only bind mount): nothing can be persisted, so
/// the run is refused before anything changes, with a line that says what to do (live only).
#[test]
fn a_read_only_root_is_refused_before_anything_changes() {
    need_root!();
    let (bed, _far) = bed();
    let t = ifupdown_tree();
    let before = bed.routing_state();
    let dir = t.dir.to_str().unwrap().to_owned();
    // In a private mount namespace: the bind mount never reaches this machine's mount table.
    let script =
        format!("mount --bind {dir} {dir} && mount -o remount,bind,ro {dir} && exec \"$@\"");
    let out = bed
        .inst
        .command("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(common::AGENT)
        .args([
            "apply",
            "--json",
            "--persist",
            "ifupdown",
            "--root",
            &dir,
            "--eni",
            ENI,
        ])
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", bed.imds.endpoint())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("read-only") && stdout.contains("--persist none"),
        "{stdout}"
    );
    assert_eq!(bed.routing_state(), before, "routing changed");
}
