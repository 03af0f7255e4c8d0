//! The bed the persistence tests share: the simulated VPC of common/, an instance whose eth1 is the
//! ENI under test, a client in another subnet, and the steps every backend's test takes (apply
//! into a `--root` tree, wipe the routing as a reboot would, bring it back with the backend's own
//! tool, remove). Needs root.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use serde_json::Value;
use symroute_testbed::{EniSpec, Host as Client};

use crate::common::{ip, Bed};
use crate::persist_fixtures::TempTree;

pub const ENI: &str = "eni-0a9c4b60624c0e41d";

pub const PRIMARY: &str = "10.0.1.20";

pub const SECONDARY: &str = "10.0.1.21";

pub const TABLE: &str = "10001";
/// Priorities of eth1's local-peers rule and VPC rules.
pub const LOCAL_PREF: &str = "9001";
pub const VPC_PREF: &str = "8001";

/// The classic case: eth1 (two addresses) in eth0's subnet, and a client in another subnet.
pub fn bed() -> (Bed, Client) {
    let bed = Bed::new(false);
    bed.attach(
        EniSpec::new("eth1", &bed.a).ip(PRIMARY).ip(SECONDARY),
        1,
        0,
        ENI,
    );
    let far = bed.vpc.add_client(&bed.b, "10.0.2.50").expect("client");
    (bed, far)
}

/// eth1's MAC as the kernel reports it (lowercase).
pub fn eth1_mac(bed: &Bed) -> String {
    bed.ip_json(&["link", "show", "eth1"])[0]["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Debian's ifupdown layout: `interfaces` sourcing an empty `interfaces.d`.
pub fn ifupdown_tree() -> TempTree {
    let t = TempTree::new();
    t.write(
        "/etc/network/interfaces",
        "source interfaces.d/*\n\nauto lo\niface lo inet loopback\n",
    );
    fs::create_dir_all(t.path("/etc/network/interfaces.d")).unwrap();
    t
}

/// A netplan file as netplan wants it (mode 600).
pub fn write_netplan(t: &TempTree, path: &str, text: &str) {
    t.write(path, text);
    fs::set_permissions(
        t.path(path),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
}

pub fn answers(far: &Client) -> bool {
    far.ping(ip(PRIMARY), 3, 2) && far.ping(ip(SECONDARY), 3, 2)
}

/// `apply --persist BACKEND --root DIR --eni ENI EXTRA...` that must exit 0.
pub fn apply_ok(bed: &Bed, backend: &str, root: &Path, extra: &[&str]) -> crate::common::Run {
    let mut args = vec![
        "apply",
        "--json",
        "--persist",
        backend,
        "--root",
        root.to_str().unwrap(),
        "--wait",
        "10",
        "--eni",
        ENI,
    ];
    args.extend_from_slice(extra);
    let r = bed.agent(&args);
    assert_eq!(
        r.code, 0,
        "apply --persist {backend} {extra:?}:\n{}\n{}",
        r.stdout, r.stderr
    );
    r
}

/// `apply --persist BACKEND --root DIR` that must succeed and write files.
pub fn apply(bed: &Bed, backend: &str, root: &Path) -> Value {
    let r = apply_ok(bed, backend, root, &[]);
    assert_eq!(r.json["persist"]["backend"], backend, "{}", r.stdout);
    let files = r.json["persist"]["files"]
        .as_array()
        .expect("files")
        .clone();
    assert!(!files.is_empty(), "{}", r.stdout);
    assert!(
        files.iter().all(|f| f["action"] == "written"),
        "{}",
        r.stdout
    );
    r.json
}

pub fn remove(bed: &Bed, backend: &str, root: &Path) {
    let r = bed.agent(&[
        "remove",
        "--json",
        "--persist",
        backend,
        "--root",
        root.to_str().unwrap(),
        "--eni",
        ENI,
    ]);
    assert_eq!(r.code, 0, "remove:\n{}\n{}", r.stdout, r.stderr);
    assert!(bed.our_rules().is_empty(), "live rules left after remove");
}

/// What a reboot leaves of eth1's routing: nothing. Proven by the client losing its answers.
pub fn wipe(bed: &Bed, far: &Client) {
    let i = &bed.inst;
    for fam in ["-4", "-6"] {
        while i
            .output(&["ip", fam, "rule", "del", "pref", TABLE])
            .map(|o| o.status.success())
            .unwrap_or(false)
        {}
        let _ = i.output(&["ip", fam, "route", "flush", "table", TABLE]);
    }
    i.exec(&["ip", "addr", "flush", "dev", "eth1"]).unwrap();
    i.exec(&["ip", "link", "set", "eth1", "down"]).unwrap();
    assert!(
        !far.ping(ip(PRIMARY), 1, 1),
        "eth1 still answers after the wipe"
    );
}

pub fn rules_in(bed: &Bed) -> String {
    let out = bed
        .inst
        .exec(&["ip", "rule", "show", "pref", TABLE])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs systemd-networkd inside the instance namespace with `conf` as /etc/systemd/network
/// (networkd skips waiting for udev when /sys is read-only), waits until eth1 is
/// configured, runs `steps` (shell) while it runs, and stops it. Returns stdout.
pub fn with_networkd(bed: &Bed, conf: &Path, steps: &str) -> String {
    with_networkd_and_run(bed, conf, None, steps)
}

/// Like [`with_networkd`], with the files of `run` (what `netplan generate` writes) copied into
/// /run/systemd/network, where networkd reads them alongside /etc's drop-ins.
pub fn with_networkd_and_run(bed: &Bed, conf: &Path, run: Option<&Path>, steps: &str) -> String {
    let copy_run = run.map_or_else(String::new, |r| {
        format!(
            "mkdir -p /run/systemd/network && cp -r \"{}\"/. /run/systemd/network/\n",
            r.display()
        )
    });
    let script = format!(
        r#"set -e
mount -o remount,ro /sys
mount --bind "{conf}" /etc/systemd/network
mount -t tmpfs tmpfs /run/systemd
{copy_run}mkdir -p /run/systemd/netif && chown systemd-network:systemd-network /run/systemd/netif
mkdir -p /run/dbus && mount -t tmpfs tmpfs /run/dbus
dbus=$(dbus-daemon --system --fork --nopidfile --print-pid)
/lib/systemd/systemd-networkd 2>/dev/null & nd=$!
trap 'kill $nd $dbus 2>/dev/null; wait $nd 2>/dev/null' EXIT
/lib/systemd/systemd-networkd-wait-online -i eth1 --timeout=30 && echo NETWORKD_CONFIGURED
set +e
{steps}
"#,
        conf = conf.display()
    );
    let out = bed
        .inst
        .command("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .expect("networkd session");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("NETWORKD_CONFIGURED"),
        "networkd did not configure eth1:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Pings from the far client inside a networkd session (networkd must keep running meanwhile).
pub fn ping_steps(far: &Client, tag: &str) -> String {
    format!(
        "ip netns exec {c} ping -n -q -c 3 -i 0.2 -W 2 {PRIMARY} >/dev/null && ip netns exec {c} ping -n -q -c 3 -i 0.2 -W 2 {SECONDARY} >/dev/null && echo {tag}_ANSWERS\nip rule show pref {TABLE} | sed 's/^/{tag}_RULE /'\nip rule show pref {LOCAL_PREF} | sed 's/^/{tag}_LOCAL /'\nip rule show pref {VPC_PREF} | sed 's/^/{tag}_VPC /'\n",
        c = far.name()
    )
}

pub fn remove_eni(bed: &Bed, backend: &str, root: &Path, eni: &str) {
    let r = bed.agent(&[
        "remove",
        "--json",
        "--persist",
        backend,
        "--root",
        root.to_str().unwrap(),
        "--eni",
        eni,
    ]);
    assert_eq!(r.code, 0, "remove:\n{}\n{}", r.stdout, r.stderr);
}

/// A tree with the directories a systemd host has, for the unit backend and the trigger.
pub fn systemd_tree() -> TempTree {
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

/// systemd's own parser (`systemd-analyze verify`, all at once) accepts these units of `t`'s
/// /etc/systemd/system, each given as (its file there, the name to check it under, e.g. a
/// template's instance), with the agent copy as ExecStart where it lies in `t`; and says nothing
/// about any of them. (A MAC's colons are valid in a unit name, and udev starts units by them,
/// but `systemd-analyze verify` (252) cannot take a colon in a file path: "Couldn't process
/// aliases". Name instances with dashes here.)
pub fn systemd_accepts(t: &TempTree, units: &[(&str, String)]) {
    let dir = TempTree::new();
    let bin_real = t.path("/usr/local/sbin/symroute-boot");
    let files: Vec<_> = units
        .iter()
        .map(|(file, name)| {
            let copy = dir.path(&format!("/{name}"));
            fs::write(
                &copy,
                t.read(&format!("/etc/systemd/system/{file}"))
                    .replace("/usr/local/sbin/symroute-boot", bin_real.to_str().unwrap()),
            )
            .unwrap();
            copy
        })
        .collect();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .expect("systemd-analyze");
    let complaints = String::from_utf8_lossy(&verify.stderr).into_owned();
    assert!(verify.status.success(), "{units:?}: {complaints}");
    assert!(
        !complaints.contains("symroute"),
        "systemd-analyze verify {units:?}: {complaints}"
    );
}

/// Runs in the instance what systemd runs for `template` instantiated with `instance`: its
/// ExecStart with `%i` replaced, the agent copy where it lies in `t`, plus `extra` arguments.
/// Asserts it succeeded; returns its stdout.
pub fn run_unit(bed: &Bed, t: &TempTree, template: &str, instance: &str, extra: &[&str]) -> String {
    let (bin, args) = exec_start(t, template, instance);
    let out = bed
        .inst
        .command(&bin)
        .args(&args)
        .args(extra)
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", bed.imds.endpoint())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{template} for {instance}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `template`'s ExecStart instantiated with `instance`: the program (in `t`) and its arguments.
pub fn exec_start(t: &TempTree, template: &str, instance: &str) -> (String, Vec<String>) {
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
