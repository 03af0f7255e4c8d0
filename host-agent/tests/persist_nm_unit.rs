//! NetworkManager's keyfile through libnm's own reader and validator, and the unit backend's command
//! (checked by systemd-analyze) bringing symroute's routing back.
//! The routing is wiped as a reboot would and brought back by the backend's own tool; a client
//! in another subnet must get answers again. Needs root (fails under CI=true).

mod common;
mod persist_bed;
mod persist_fixtures;

use std::fs;
use std::process::Command;

use persist_bed::*;
use persist_fixtures::{snapshot, TempTree};
use serde_json::Value;

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
ip6 = c.get_setting_ip6_config()
print(json.dumps({
    "method6": ip6.get_method(), "route_table6": ip6.get_route_table(),
    "addresses6": [f"{a.get_address()}/{a.get_prefix()}" for a in ip6.props.addresses],
    "rules6": [ip6.get_routing_rule(i).to_string(NM.IPRoutingRuleAsStringFlags.NONE, None)
               for i in range(ip6.get_num_routing_rules())],
    "id": c.get_id(), "uuid": c.get_uuid(), "type": c.get_connection_type(),
    "priority": c.get_setting_connection().get_autoconnect_priority(),
    "mac": c.get_setting_wired().get_mac_address(),
    "mtu": c.get_setting_wired().get_mtu(),
    "method": ip4.get_method(), "route_table": ip4.get_route_table(),
    "addresses": [f"{a.get_address()}/{a.get_prefix()}" for a in ip4.props.addresses],
    "routes": [f"{r.get_dest()}/{r.get_prefix()} via {r.get_next_hop()}" for r in ip4.props.routes],
    "rules": [ip4.get_routing_rule(i).to_string(NM.IPRoutingRuleAsStringFlags.NONE, None)
              for i in range(ip4.get_num_routing_rules())],
}))
"#;

/// What libnm reads from a keyfile, after its own `verify()`; a refusal fails the test.
fn libnm_read(file: &std::path::Path) -> Value {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", NM_CHECK])
        .arg(file)
        .arg(file.parent().unwrap())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "libnm refused the keyfile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An IPv6-only ENI's profile: libnm refuses IPv4 `manual` without an address, so IPv4 is
/// `disabled`; IPv6 carries the addresses, the table and every rule.
#[test]
fn an_ipv6_only_keyfile_is_read_and_verified_by_libnm() {
    let t = TempTree::new();
    let files = t.write_rendered(
        symroute_agent::persist::Backend::Nm,
        &persist_fixtures::ipv6_only(),
    );
    let [file] = files.as_slice() else {
        panic!("one keyfile: {files:?}");
    };
    let got = libnm_read(file);
    assert_eq!(got["method"], "disabled", "{got}");
    assert_eq!(got["method6"], "auto", "{got}");
    assert_eq!(got["route_table6"], 10003, "{got}");
    assert_eq!(
        got["addresses6"],
        serde_json::json!(["2600:1f18:1:2::40/128", "2600:1f18:1:2::41/128"])
    );
    let rules: Vec<&str> = got["rules6"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(rules.len(), 6, "{got}");
    assert!(
        rules.contains(&"priority 10003 from 2600:1f18:1:2::40 table 10003"),
        "{rules:?}"
    );
    assert!(got["rules"].as_array().unwrap().is_empty(), "{got}");
}

#[test]
fn nm_keyfile_is_read_and_verified_by_libnm() {
    need_root!();
    let (bed, _far) = bed();
    let t = TempTree::new();
    fs::create_dir_all(t.path("/etc/NetworkManager/system-connections")).unwrap();
    let before = snapshot(&t.dir);
    // The VPC's MTU, as DHCP set it: the static profile must keep it.
    bed.inst
        .exec(&["ip", "link", "set", "eth1", "mtu", "9001"])
        .unwrap();
    apply(&bed, "nm", &t.dir);
    let file = t.path("/etc/NetworkManager/system-connections/symroute-eth1.nmconnection");
    let got = libnm_read(&file);
    let mac = eth1_mac(&bed).to_uppercase();
    assert_eq!(got["mac"], mac.as_str());
    assert_eq!(got["type"], "802-3-ethernet");
    // Outranks cloud-init's profiles (autoconnect-priority 120) for the same device.
    assert!(got["priority"].as_i64().unwrap() > 120, "{got}");
    assert_eq!(got["method"], "manual");
    assert_eq!(got["mtu"], 9001, "{got}");
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
            format!("priority 8001 from {PRIMARY} to 10.0.0.0/16 table 10001"),
            format!("priority 9001 from {PRIMARY} suppress_prefixlength 0 table 254"),
            format!("priority 10001 from {PRIMARY} table 10001"),
            format!("priority 8001 from {SECONDARY} to 10.0.0.0/16 table 10001"),
            format!("priority 9001 from {SECONDARY} suppress_prefixlength 0 table 254"),
            format!("priority 10001 from {SECONDARY} table 10001")
        ])
    );
    remove(&bed, "nm", &t.dir);
    assert_eq!(snapshot(&t.dir), before, "remove left the tree changed");
}

#[test]
fn unit_command_brings_it_back() {
    need_root!();
    let (bed, far) = bed();
    let t = systemd_tree();
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
    systemd_accepts(
        &t,
        &[("symroute@.service", format!("symroute@{ENI}.service"))],
    );

    wipe(&bed, &far);
    // What systemd runs for symroute@<eni>.service: ExecStart with %i, the copied agent.
    run_unit(&bed, &t, "symroute@.service", ENI, &[]);
    assert!(
        answers(&far),
        "eth1 does not answer after the unit's command"
    );

    remove(&bed, "unit", &t.dir);
    assert_eq!(snapshot(&t.dir), before, "remove left the tree changed");
}

/// The connmark mode after a reboot: the kernel forgets the `fwmark` rule and the nftables
/// table, but a persisting run kept the choice under /etc/symroute/connmark, so the first run
/// after boot (the on-host trigger's `hotplug add`) turns the mode back on; `remove` forgets it.
#[test]
fn the_connmark_choice_is_kept_for_the_first_run_after_a_reboot() {
    need_root!();
    let (bed, far) = bed();
    let t = systemd_tree();
    let dir = t.dir.to_str().unwrap().to_owned();
    let before = snapshot(&t.dir);
    apply_ok(&bed, "unit", &t.dir, &["--connmark", "on"]);
    let mac = eth1_mac(&bed);
    let kept = t.path(&format!("/etc/symroute/connmark/{mac}"));
    assert!(kept.is_file(), "the choice was not kept");
    let marked = |bed: &common::Bed| {
        bed.inst
            .output(&["ip", "rule", "show", "pref", "7001"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("fwmark 0x27110000/0x7fff0000"))
            .unwrap_or(false)
            && bed
                .inst
                .output(&["nft", "list", "table", "inet", "symroute_10001"])
                .map(|o| o.status.success())
                .unwrap_or(false)
    };
    assert!(marked(&bed));

    // A reboot: the kernel's rules and nftables tables are gone.
    wipe(&bed, &far);
    bed.inst
        .exec(&["ip", "rule", "del", "pref", "7001"])
        .expect("ip rule del");
    bed.inst
        .exec(&["nft", "delete", "table", "inet", "symroute_10001"])
        .expect("nft delete");
    assert!(!marked(&bed));
    let r = bed.agent(&["hotplug", "add", "--mac", &mac, "--root", &dir]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        marked(&bed),
        "the first run after the reboot did not turn the mode back on"
    );
    assert!(answers(&far), "eth1 does not answer after the reboot");
    let status = bed.agent(&["status", "--json"]);
    let eth1 = status.json["enis"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["table"] == 10001))
        .expect("eth1 in the status");
    assert_eq!(eth1["connmark"], true, "{}", status.stdout);

    remove(&bed, "unit", &t.dir);
    assert!(!kept.exists(), "remove did not forget the choice");
    assert!(!marked(&bed));
    let _ = fs::remove_dir_all(t.path("/etc/symroute"));
    assert_eq!(snapshot(&t.dir), before, "remove left the tree changed");
}
