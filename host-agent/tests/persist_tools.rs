//! Persistence against the distributions' own tools, in the simulated VPC: the agent applies
//! with a backend into a `--root` tree; the instance's routing is then wiped (a reboot, as far
//! as routing goes) and brought back by the backend's own tool (systemd-networkd, netplan +
//! networkd, ifup, the ifup-routes way of reading ifcfg files, the unit's command); a client in
//! another subnet must get answers again. NetworkManager's keyfile goes through libnm's own
//! reader and validator. Every backend's `remove` must leave the tree exactly as it was.
//! Needs root (fails under CI=true).

mod common;
mod persist_fixtures;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{ip, Bed};
use persist_fixtures::{snapshot, TempTree};
use serde_json::Value;
use symroute_testbed::{EniSpec, Host as Client};

const ENI: &str = "eni-0a9c4b60624c0e41d";
const PRIMARY: &str = "10.0.1.20";
const SECONDARY: &str = "10.0.1.21";
const TABLE: &str = "10001";

/// The classic case: eth1 (two addresses) in eth0's subnet, and a client in another subnet.
fn bed() -> (Bed, Client) {
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
fn eth1_mac(bed: &Bed) -> String {
    bed.ip_json(&["link", "show", "eth1"])[0]["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Debian's ifupdown layout: `interfaces` sourcing an empty `interfaces.d`.
fn ifupdown_tree() -> TempTree {
    let t = TempTree::new();
    t.write(
        "/etc/network/interfaces",
        "source interfaces.d/*\n\nauto lo\niface lo inet loopback\n",
    );
    fs::create_dir_all(t.path("/etc/network/interfaces.d")).unwrap();
    t
}

/// A netplan file as netplan wants it (mode 600).
fn write_netplan(t: &TempTree, path: &str, text: &str) {
    t.write(path, text);
    fs::set_permissions(
        t.path(path),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
}

fn answers(far: &Client) -> bool {
    far.ping(ip(PRIMARY), 3, 2) && far.ping(ip(SECONDARY), 3, 2)
}

/// `apply --persist BACKEND --root DIR` that must succeed and write files.
fn apply(bed: &Bed, backend: &str, root: &Path) -> Value {
    let r = bed.agent(&[
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
    ]);
    assert_eq!(
        r.code, 0,
        "apply --persist {backend}:\n{}\n{}",
        r.stdout, r.stderr
    );
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

fn remove(bed: &Bed, backend: &str, root: &Path) {
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
fn wipe(bed: &Bed, far: &Client) {
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

fn rules_in(bed: &Bed) -> String {
    let out = bed
        .inst
        .exec(&["ip", "rule", "show", "pref", TABLE])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs systemd-networkd inside the instance namespace with `conf` as /etc/systemd/network
/// (networkd skips waiting for udev when /sys is read-only), waits until eth1 is
/// configured, runs `steps` (shell) while it runs, and stops it. Returns stdout.
fn with_networkd(bed: &Bed, conf: &Path, steps: &str) -> String {
    let script = format!(
        r#"set -e
mount -o remount,ro /sys
mount --bind "{conf}" /etc/systemd/network
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/netif && chown systemd-network:systemd-network /run/systemd/netif
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
fn ping_steps(far: &Client, tag: &str) -> String {
    format!(
        "ip netns exec {c} ping -n -q -c 3 -i 0.2 -W 2 {PRIMARY} >/dev/null && ip netns exec {c} ping -n -q -c 3 -i 0.2 -W 2 {SECONDARY} >/dev/null && echo {tag}_ANSWERS\nip rule show pref {TABLE} | sed 's/^/{tag}_RULE /'\n",
        c = far.name()
    )
}

const RECONFIGURE: &str = "networkctl reconfigure eth1 && echo RECONFIGURE_SENT
/lib/systemd/systemd-networkd-wait-online -i eth1 --timeout=30 >/dev/null
";

#[test]
fn networkd_dropin_survives_flush_restart_and_reconfigure_and_is_removed_cleanly() {
    need_root!();
    let (bed, far) = bed();
    let t = TempTree::new();
    // The file that configures eth1 (cloud-init's DHCP, with a static address standing in for
    // DHCP in the testbed), and a catch-all that sorts after it.
    let mac = eth1_mac(&bed);
    t.write(
        "/etc/systemd/network/10-eth1.network",
        &format!("[Match]\nMACAddress={mac}\n\n[Network]\nAddress={PRIMARY}/24\nIPv6AcceptRA=no\n"),
    );
    t.write(
        "/etc/systemd/network/99-all.network",
        "[Match]\nName=*\n\n[Link]\nUnmanaged=yes\n",
    );
    let conf = t.path("/etc/systemd/network");
    let before = snapshot(&t.dir);

    // The field failure first: live rules only, and networkd reconfiguring the link drops them.
    bed.apply(&["--eni", ENI]);
    assert!(answers(&far));
    let out = with_networkd(
        &bed,
        &conf,
        &format!("{RECONFIGURE}{}", ping_steps(&far, "LIVEONLY")),
    );
    assert!(out.contains("RECONFIGURE_SENT"), "{out}");
    assert!(
        !out.contains("LIVEONLY_RULE"),
        "networkd kept foreign rules?\n{out}"
    );
    assert!(!out.contains("LIVEONLY_ANSWERS"), "{out}");

    // Persisted: a drop-in for 10-eth1.network, the file networkd uses for eth1.
    let json = apply(&bed, "networkd", &t.dir);
    assert_eq!(
        json["persist"]["files"][0]["path"],
        "/etc/systemd/network/10-eth1.network.d/90-symroute.conf"
    );
    assert!(answers(&far));
    // A flush and a fresh networkd stand in for a boot here (real reboots of every manager are
    // in tests/tests/lab.rs): networkd brings it all back; then reconfigure and reload.
    wipe(&bed, &far);
    let out = with_networkd(
        &bed,
        &conf,
        &format!(
            "{}{RECONFIGURE}{}networkctl reload && echo RELOADED\n{}",
            ping_steps(&far, "BOOT"),
            ping_steps(&far, "RECONF"),
            ping_steps(&far, "RELOAD")
        ),
    );
    for tag in ["BOOT", "RECONF", "RELOAD"] {
        assert!(out.contains(&format!("{tag}_ANSWERS")), "{tag}:\n{out}");
        for src in [PRIMARY, SECONDARY] {
            assert!(
                out.contains(&format!("{tag}_RULE {TABLE}:\tfrom {src} lookup {TABLE}")),
                "{tag} {src}:\n{out}"
            );
        }
    }
    assert!(
        out.contains("RECONFIGURE_SENT") && out.contains("RELOADED"),
        "{out}"
    );

    // After the reboot the rules are networkd's (its protocol number, not 177), installed from
    // symroute's drop-in: the next apply (a boot-time association) must see its own routing,
    // not another tool's, and find nothing to do.
    let again = bed.agent(&[
        "apply",
        "--json",
        "--persist",
        "networkd",
        "--root",
        t.dir.to_str().unwrap(),
        "--eni",
        ENI,
    ]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(
        again.json["enis"][0]["status"], "configure",
        "{}",
        again.stdout
    );
    assert_eq!(again.json["enis"][0]["symmetric"], true, "{}", again.stdout);
    assert!(
        again.json["enis"][0]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !c.as_str().unwrap().contains("rule add")),
        "no duplicate rules next to networkd's: {}",
        again.stdout
    );
    assert!(
        again.json["persist"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["action"] == "unchanged"),
        "{}",
        again.stdout
    );

    remove(&bed, "networkd", &t.dir);
    assert_eq!(snapshot(&t.dir), before, "remove left the tree changed");
}

#[test]
fn netplan_merges_with_cloud_init_and_brings_it_back_through_networkd() {
    need_root!();
    let (bed, far) = bed();
    let mac = eth1_mac(&bed);
    let t = TempTree::new();
    // cloud-init's shape; a static address stands in for DHCP in the testbed.
    write_netplan(
        &t,
        "/etc/netplan/50-cloud-init.yaml",
        &format!(
            "network:\n    ethernets:\n        eth1:\n            addresses:\n            - {PRIMARY}/24\n            match:\n                macaddress: {mac}\n    version: 2\n"
        ),
    );
    let before = snapshot(&t.path("/etc"));
    apply(&bed, "netplan", &t.dir);

    // The agent ran `netplan generate --root-dir` itself (never `netplan apply`).
    let out_dir = t.path("/run/systemd/network");
    let generated: Vec<_> = fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let eth1: Vec<_> = generated
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "network"))
        .collect();
    // One definition, so one .network file: ours merged into cloud-init's, not beside it.
    assert_eq!(eth1.len(), 1, "{generated:?}");
    let text = fs::read_to_string(eth1[0]).unwrap();
    for want in [
        format!("PermanentMACAddress={mac}"),
        format!("Address={PRIMARY}/24"),
        format!("Address={SECONDARY}/24"),
        format!("[RoutingPolicyRule]\nFrom={PRIMARY}/32\nTable={TABLE}\nPriority={TABLE}"),
        format!("[RoutingPolicyRule]\nFrom={SECONDARY}/32\nTable={TABLE}\nPriority={TABLE}"),
        format!("Destination=0.0.0.0/0\nGateway=10.0.1.1\nTable={TABLE}"),
        format!("Destination=10.0.1.0/24\nPreferredSource={PRIMARY}\nScope=link\nTable={TABLE}"),
    ] {
        assert!(
            text.contains(&want),
            "{want:?} missing from {}:\n{text}",
            eth1[0].display()
        );
    }

    // Chain into networkd: a veth has no permanent MAC, so match the current one there.
    let conf = TempTree::new();
    let name = eth1[0].file_name().unwrap().to_string_lossy().into_owned();
    conf.write(
        &format!("/{name}"),
        &text.replace("PermanentMACAddress=", "MACAddress="),
    );
    wipe(&bed, &far);
    let out = with_networkd(&bed, &conf.dir, &ping_steps(&far, "BOOT"));
    assert!(out.contains("BOOT_ANSWERS"), "{out}");

    remove(&bed, "netplan", &t.dir);
    // remove generated again: netplan's output no longer has the rules.
    let after = fs::read_to_string(eth1[0]).unwrap();
    assert!(after.contains(&format!("Address={PRIMARY}/24")), "{after}");
    assert!(!after.contains("RoutingPolicyRule"), "{after}");
    assert_eq!(
        snapshot(&t.path("/etc")),
        before,
        "remove left /etc changed"
    );
}

#[test]
fn ifupdown_stanza_brings_it_back_with_ifup() {
    need_root!();
    let (bed, far) = bed();
    // First no stanza for eth1 (ours brings it up), then cloud-init's configuring it (a
    // static address standing in for DHCP; ours is an `inet manual` stanza that ifup runs
    // after it). ifup reads the main file, which sources interfaces.d relative to itself.
    for existing in [
        "",
        &format!("allow-hotplug eth1\niface eth1 inet static\n    address {PRIMARY}/24\n"),
    ] {
        let t = ifupdown_tree();
        if !existing.is_empty() {
            t.write("/etc/network/interfaces.d/50-cloud-init", existing);
        }
        let before = snapshot(&t.dir);
        apply(&bed, "ifupdown", &t.dir);
        assert!(answers(&far));
        let ours = t.read("/etc/network/interfaces.d/symroute-eth1");
        // Always `inet manual`: every line is guarded by the ENI's MAC.
        let method = if existing.is_empty() {
            "own"
        } else {
            "beside cloud-init's"
        };
        assert!(ours.contains("iface eth1 inet manual\n"), "{ours}");

        wipe(&bed, &far);
        let state = TempTree::new();
        let file = t.path("/etc/network/interfaces");
        let ifupdown = |verb: &str| {
            let out = bed
                .inst
                .command(verb)
                .arg("-i")
                .arg(&file)
                .arg("--state-dir")
                .arg(&state.dir)
                .arg("eth1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{verb}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ifupdown("ifup");
        assert!(answers(&far), "eth1 does not answer after ifup ({method})");
        assert_eq!(rules_in(&bed).lines().count(), 2, "{}", rules_in(&bed));
        // pre-down takes the rules away; ifup again (the second boot) brings them back once.
        ifupdown("ifdown");
        assert_eq!(rules_in(&bed), "");
        ifupdown("ifup");
        assert!(answers(&far));
        assert_eq!(rules_in(&bed).lines().count(), 2, "{}", rules_in(&bed));

        remove(&bed, "ifupdown", &t.dir);
        assert_eq!(snapshot(&t.dir), before, "remove left the tree changed");
        // Back to the testbed's own eth1 for the next round.
        wipe(&bed, &far);
        bed.inst.exec(&["ip", "link", "set", "eth1", "up"]).unwrap();
        bed.inst
            .exec(&["ip", "addr", "add", &format!("{PRIMARY}/24"), "dev", "eth1"])
            .unwrap();
    }
}

#[test]
fn ifcfg_lines_executed_as_ifup_routes_does_bring_it_back() {
    need_root!();
    let (bed, far) = bed();
    let t = TempTree::new();
    fs::create_dir_all(t.path("/etc/sysconfig/network-scripts")).unwrap();
    let before = snapshot(&t.dir);
    apply(&bed, "ifcfg", &t.dir);
    // Rules and routes; addresses differ in details (ifup-eth sets broadcasts, the agent
    // labels its own) that do not route.
    let kernel_state = || {
        let mut s = String::new();
        for args in [
            &["ip", "-4", "rule", "show"][..],
            &["ip", "-6", "rule", "show"][..],
            &["ip", "-4", "route", "show", "table", "all"][..],
            &["ip", "-6", "route", "show", "table", "all"][..],
        ] {
            let out = bed.inst.exec(args).unwrap();
            s.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        s.lines()
            .filter(|l| !l.contains("fe80::"))
            .map(|l| l.split(" expires ").next().unwrap().to_owned() + "\n")
            .collect::<String>()
    };
    let before_state = kernel_state();

    wipe(&bed, &far);
    // ifup-eth: the addresses of ifcfg-eth1; ifup-routes: every other line of route-/rule-.
    let dir = "/etc/sysconfig/network-scripts";
    let ifcfg = t.read(&format!("{dir}/ifcfg-eth1"));
    let var = |k: &str| {
        ifcfg
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_owned)
    };
    for n in 0.. {
        let (Some(a), Some(p)) = (var(&format!("IPADDR{n}")), var(&format!("PREFIX{n}"))) else {
            break;
        };
        bed.inst
            .exec(&[
                "ip",
                "addr",
                "add",
                &format!("{a}/{p}"),
                "brd",
                "+",
                "dev",
                "eth1",
            ])
            .unwrap();
    }
    bed.inst.exec(&["ip", "link", "set", "eth1", "up"]).unwrap();
    for (file, kind) in [("route-eth1", "route"), ("rule-eth1", "rule")] {
        for line in t.read(&format!("{dir}/{file}")).lines() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let mut args = vec!["ip", kind, "add"];
            args.extend(line.split_whitespace());
            if bed.inst.exec(&args).is_err() && kind == "route" {
                args[2] = "replace";
                bed.inst.exec(&args).unwrap();
            }
        }
    }
    assert!(answers(&far), "eth1 does not answer after the ifcfg files");
    // Same kernel state as the agent's live apply (protocols included).
    assert_eq!(kernel_state(), before_state);

    remove(&bed, "ifcfg", &t.dir);
    assert_eq!(snapshot(&t.dir), before, "remove left the tree changed");
}

#[test]
fn unit_command_brings_it_back() {
    need_root!();
    let (bed, far) = bed();
    let t = TempTree::new();
    for d in [
        "/etc/systemd/system",
        "/etc/udev/rules.d",
        "/usr/local/sbin",
    ] {
        fs::create_dir_all(t.path(d)).unwrap();
    }
    let before = snapshot(&t.dir);
    apply(&bed, "unit", &t.dir);
    let rule = t.read(&format!("/etc/udev/rules.d/90-symroute-{ENI}.rules"));
    let mac = eth1_mac(&bed);
    assert!(
        rule.contains(&format!("ATTR{{address}}==\"{mac}\"")),
        "{rule}"
    );
    assert!(
        rule.contains(&format!("SYSTEMD_WANTS}}+=\"symroute@{ENI}.service\"")),
        "{rule}"
    );
    // systemd's own parser accepts the unit as instantiated for this ENI (with the copied
    // agent as ExecStart, where it lies in this tree).
    let inst_dir = TempTree::new();
    let unit_file = inst_dir.path(&format!("/symroute@{ENI}.service"));
    let bin_real = t.path("/usr/local/sbin/symroute-boot");
    fs::write(
        &unit_file,
        t.read("/etc/systemd/system/symroute@.service")
            .replace("/usr/local/sbin/symroute-boot", bin_real.to_str().unwrap()),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_file)
        .output()
        .expect("systemd-analyze");
    let complaints = String::from_utf8_lossy(&verify.stderr).into_owned();
    assert!(verify.status.success(), "{complaints}");
    assert!(
        !complaints.contains("symroute@"),
        "systemd-analyze verify: {complaints}"
    );

    wipe(&bed, &far);
    // What systemd runs for symroute@<eni>.service: ExecStart with %i, the copied agent.
    let unit = t.read("/etc/systemd/system/symroute@.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .replace("%i", ENI);
    let mut words = exec.split_whitespace();
    let bin = t.path(words.next().unwrap());
    let out = bed
        .inst
        .command(bin.to_str().unwrap())
        .args(words)
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
        "eth1 does not answer after the unit's command"
    );

    remove(&bed, "unit", &t.dir);
    assert_eq!(snapshot(&t.dir), before, "remove left the tree changed");
}

/// libnm's keyfile reader and `verify()` (python3-gi), printing what it parsed.
const NM_CHECK: &str = r#"
import json, sys
import gi
gi.require_version("NM", "1.0")
from gi.repository import GLib, NM
kf = GLib.KeyFile()
kf.load_from_file(sys.argv[1], GLib.KeyFileFlags.NONE)
c = NM.keyfile_read(kf, sys.argv[2], NM.KeyfileHandlerFlags.NONE, None, None)
c.verify()
ip4 = c.get_setting_ip4_config()
print(json.dumps({
    "id": c.get_id(), "uuid": c.get_uuid(), "type": c.get_connection_type(),
    "priority": c.get_setting_connection().get_autoconnect_priority(),
    "mac": c.get_setting_wired().get_mac_address(),
    "method": ip4.get_method(), "route_table": ip4.get_route_table(),
    "addresses": [f"{a.get_address()}/{a.get_prefix()}" for a in ip4.props.addresses],
    "routes": [f"{r.get_dest()}/{r.get_prefix()} via {r.get_next_hop()}" for r in ip4.props.routes],
    "rules": [ip4.get_routing_rule(i).to_string(NM.IPRoutingRuleAsStringFlags.NONE, None)
              for i in range(ip4.get_num_routing_rules())],
}))
"#;

#[test]
fn nm_keyfile_is_read_and_verified_by_libnm() {
    need_root!();
    let (bed, _far) = bed();
    let t = TempTree::new();
    fs::create_dir_all(t.path("/etc/NetworkManager/system-connections")).unwrap();
    let before = snapshot(&t.dir);
    apply(&bed, "nm", &t.dir);
    let file = t.path("/etc/NetworkManager/system-connections/symroute-eth1.nmconnection");
    let out = Command::new("/usr/bin/python3")
        .args(["-c", NM_CHECK])
        .arg(&file)
        .arg(file.parent().unwrap())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "libnm refused the keyfile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mac = eth1_mac(&bed).to_uppercase();
    assert_eq!(got["mac"], mac.as_str());
    assert_eq!(got["type"], "802-3-ethernet");
    // Outranks cloud-init's profiles (autoconnect-priority 120) for the same device.
    assert!(got["priority"].as_i64().unwrap() > 120, "{got}");
    assert_eq!(got["method"], "manual");
    assert_eq!(got["route_table"], 10001);
    assert_eq!(
        got["addresses"],
        serde_json::json!([format!("{PRIMARY}/24"), format!("{SECONDARY}/24")])
    );
    assert_eq!(got["routes"], serde_json::json!(["0.0.0.0/0 via 10.0.1.1"]));
    // A malformed routing-ruleN is dropped, not refused: compare what libnm parsed.
    assert_eq!(
        got["rules"],
        serde_json::json!([
            format!("priority 10001 from {PRIMARY} table 10001"),
            format!("priority 10001 from {SECONDARY} table 10001")
        ])
    );
    remove(&bed, "nm", &t.dir);
    assert_eq!(snapshot(&t.dir), before, "remove left the tree changed");
}

#[test]
fn failed_persistence_rolls_back_the_live_changes_and_dry_run_writes_nothing() {
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
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let err = r.json["error"].as_str().unwrap();
    assert!(err.contains("source /etc/network/interfaces.d/*"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(
        bed.routing_state(),
        state,
        "live changes were not rolled back"
    );
    assert_eq!(snapshot(&t.dir), before);
    assert!(!far.ping(ip(PRIMARY), 1, 1));

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
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let err = r.json["error"].as_str().unwrap();
    assert!(err.contains("generate rejected the configuration"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(
        bed.routing_state(),
        state,
        "live changes were not rolled back"
    );
    assert_eq!(snapshot(&t.path("/etc")), before);

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
fn networkd_own_file_brings_an_unconfigured_dual_stack_eni_back() {
    need_root!();
    let bed = Bed::new(true);
    let eni = "eni-22222222222222222";
    bed.attach(
        EniSpec::new("eth1", &bed.b)
            .ip("10.0.2.20")
            .ip("10.0.2.21")
            .ipv6("2600:1f18:1:2::20")
            .config(symroute_testbed::Config::Unconfigured),
        1,
        0,
        eni,
    );
    let client = bed
        .vpc
        .add_client_with(&bed.a, &["10.0.1.50", "2600:1f18:1:1::50"])
        .unwrap();
    let t = TempTree::new();
    // networkd runs here, but nothing matches eth1: symroute's own file, with every address.
    t.write(
        "/etc/systemd/network/10-eth0.network",
        "[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n",
    );
    let before = snapshot(&t.dir);
    let root = t.dir.to_str().unwrap();
    let args = [
        "apply",
        "--json",
        "--persist",
        "networkd",
        "--root",
        root,
        "--wait",
        "10",
        "--eni",
        eni,
    ];
    let first = bed.agent(&args);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    // The link came up with the apply; the IPv6 router is known once an RA arrived (bounded).
    bed.inst
        .wait_ipv6_default("eth1", 10)
        .expect("eth1 learned an IPv6 default from RA");
    let second = bed.agent(&args);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    let own = t.read("/etc/systemd/network/05-symroute-eth1.network");
    for want in [
        "Address=10.0.2.20/24",
        "Address=10.0.2.21/24",
        "Address=2600:1f18:1:2::20/128",
        "Gateway=fe80:",
        "From=2600:1f18:1:2::20/128\nTable=10001",
    ] {
        assert!(own.contains(want), "{want:?} missing:\n{own}");
    }
    let v6 = ip("2600:1f18:1:2::20");
    // Live, the agent adds the IPv4s (IPv6 addresses are DHCPv6's business on EC2); the own
    // file carries them all, so after the reboot below IPv6 answers as well.
    assert!(client.ping(ip("10.0.2.20"), 3, 2));
    assert!(
        !client.ping(v6, 1, 1),
        "testbed sanity: no IPv6 address before networkd"
    );

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
    assert!(!client.ping(ip("10.0.2.20"), 1, 1));

    let c = client.name();
    let out = with_networkd(
        &bed,
        &t.path("/etc/systemd/network"),
        &format!(
            "for i in $(seq 100); do ip -6 addr show dev eth1 tentative | grep -q . || break; sleep 0.1; done
ip netns exec {c} ping -n -q -c 3 -i 0.2 -W 2 10.0.2.20 >/dev/null && echo V4_ANSWERS
ip netns exec {c} ping -n -q -c 3 -i 0.2 -W 2 10.0.2.21 >/dev/null && echo V4B_ANSWERS
ip netns exec {c} ping -6 -n -q -c 3 -i 0.2 -W 2 2600:1f18:1:2::20 >/dev/null && echo V6_ANSWERS
ip -6 route show table {TABLE}
for i in $(seq 100); do ip -6 route show default dev eth1 | grep -q . && break; sleep 0.1; done
echo \"RA_DEFAULT $(ip -6 route show default dev eth1)\"
echo \"PRIMARY_DEFAULT $(ip -6 route show default dev eth0)\"
"
        ),
    );
    for tag in ["V4_ANSWERS", "V4B_ANSWERS", "V6_ANSWERS"] {
        assert!(out.contains(tag), "{tag}:\n{out}");
    }
    // The default eth1 learns from router advertisements under networkd stays behind the
    // primary's (the kernel's, metric 1024): a tie would send eth0's replies out of eth1.
    let line = |tag: &str| {
        out.lines()
            .find(|l| l.starts_with(tag))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("RA_DEFAULT").contains(&format!("metric {TABLE}")),
        "{out}"
    );
    assert!(line("PRIMARY_DEFAULT").contains("metric 1024"), "{out}");
    remove_eni(&bed, "networkd", &t.dir, eni);
    assert_eq!(snapshot(&t.dir), before, "remove left the tree changed");
}

fn remove_eni(bed: &Bed, backend: &str, root: &Path, eni: &str) {
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

#[test]
fn networkd_own_file_takes_the_place_of_a_shared_match() {
    need_root!();
    let (bed, far) = bed();
    let t = TempTree::new();
    // One file for two interfaces: a drop-in would give eth9 eth1's rules, so symroute writes
    // a file of its own for eth1 that sorts first and carries this file's settings.
    t.write(
        "/etc/systemd/network/20-pair.network",
        &format!("[Match]\nName=eth1 eth9\n\n[Network]\nAddress={PRIMARY}/24\nIPv6AcceptRA=no\n"),
    );
    let before = snapshot(&t.dir);
    let json = apply(&bed, "networkd", &t.dir);
    assert_eq!(
        json["persist"]["files"][0]["path"],
        "/etc/systemd/network/05-symroute-eth1.network"
    );
    let own = t.read("/etc/systemd/network/05-symroute-eth1.network");
    assert!(own.contains(&format!("Address={PRIMARY}/24")), "{own}");
    wipe(&bed, &far);
    let out = with_networkd(
        &bed,
        &t.path("/etc/systemd/network"),
        &format!(
            "{}networkctl status eth1 --no-pager 2>/dev/null | grep -o 'Network File: .*'\n",
            ping_steps(&far, "BOOT")
        ),
    );
    assert!(out.contains("BOOT_ANSWERS"), "{out}");
    assert!(
        out.contains("05-symroute-eth1.network"),
        "networkd did not use symroute's file for eth1:\n{out}"
    );
    remove(&bed, "networkd", &t.dir);
    assert_eq!(snapshot(&t.dir), before, "remove left the tree changed");
}

/// A golden AMI's catch-all definition (`all-eth: match: name: "eth*"`, DHCP) also matches the
/// ENI. Extending it would put the ENI's addresses and rules on every interface it matches, the
/// primary included (what the agent did before). Ours is a definition of its own, matched by MAC,
/// whose networkd file sorts first: the file networkd uses for eth1; the catch-all's file, the one
/// eth0 uses, carries nothing of eth1. Checked in what the real `netplan generate` writes.
#[test]
fn netplan_never_extends_a_glob_definition_that_also_matches_the_primary() {
    need_root!();
    let (bed, _far) = bed();
    let mac = eth1_mac(&bed);
    let t = TempTree::new();
    write_netplan(
        &t,
        "/etc/netplan/50-cloud-init.yaml",
        "network:\n  version: 2\n  ethernets:\n    all-eth:\n      match:\n        name: \"eth*\"\n      dhcp4: true\n",
    );
    apply(&bed, "netplan", &t.dir);

    let mut files: Vec<_> = fs::read_dir(t.path("/run/systemd/network"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "network"))
        .collect();
    files.sort();
    let texts: Vec<String> = files
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    // networkd takes the first file (lexical order) whose [Match] fits the link.
    let for_eth1 = texts
        .iter()
        .position(|t| t.contains(&format!("PermanentMACAddress={mac}")) || t.contains("Name=eth*"))
        .expect("a file matches eth1");
    assert!(
        texts[for_eth1].contains(&format!("PermanentMACAddress={mac}"))
            && texts[for_eth1].contains(&format!("From={SECONDARY}/32")),
        "networkd would use {} for eth1:\n{}",
        files[for_eth1].display(),
        texts[for_eth1]
    );
    let catch_all = texts
        .iter()
        .position(|t| t.contains("Name=eth*"))
        .expect("the catch-all's file");
    for leak in [
        format!("Address={SECONDARY}/24"),
        "RoutingPolicyRule".into(),
        format!("Table={TABLE}"),
    ] {
        assert!(
            !texts[catch_all].contains(&leak),
            "the catch-all (eth0's file) carries {leak:?}:\n{}",
            texts[catch_all]
        );
    }
}

/// ifupdown matches a stanza by name; a name is not an ENI. After a stop/start with other ENIs,
/// or in an AMI baked from this instance, another ENI carries `eth1`: the stanza must configure
/// nothing on it (before, `inet static` put this ENI's address on whatever eth1 was).
#[test]
fn ifupdown_stanza_configures_nothing_on_another_eni_with_the_same_name() {
    need_root!();
    let (bed, far) = bed();
    let t = ifupdown_tree();
    apply(&bed, "ifupdown", &t.dir);
    wipe(&bed, &far);
    // Another ENI under the same name.
    let own_mac = eth1_mac(&bed);
    bed.inst
        .exec(&["ip", "link", "set", "eth1", "address", "0a:ee:00:00:00:01"])
        .unwrap();
    let state = TempTree::new();
    let out = bed
        .inst
        .command("ifup")
        .arg("-i")
        .arg(t.path("/etc/network/interfaces"))
        .arg("--state-dir")
        .arg(&state.dir)
        .arg("eth1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ifup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addrs = bed
        .ip_json(&["-4", "addr", "show", "dev", "eth1"])
        .to_string();
    assert!(
        !addrs.contains(PRIMARY) && !addrs.contains(SECONDARY),
        "{addrs}"
    );
    assert_eq!(rules_in(&bed), "", "rules installed for another ENI");
    let routes = bed.ip_json(&["route", "show", "table", TABLE]);
    assert_eq!(routes, serde_json::json!([]), "{routes}");
    bed.inst
        .exec(&["ip", "link", "set", "eth1", "address", &own_mac])
        .unwrap();
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
