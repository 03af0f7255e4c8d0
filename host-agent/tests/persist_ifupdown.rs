//! ifupdown's stanza (through the real ifup) and the ifcfg route-/rule- lines (executed as RHEL's
//! ifup-routes reads them) bring symroute's routing back, and only on the ENI they were written for.
//! The routing is wiped as a reboot would and brought back by the backend's own tool; a client
//! in another subnet must get answers again. Needs root (fails under CI=true).

mod common;
mod persist_bed;
mod persist_fixtures;

use std::fs;

use persist_bed::*;
use persist_fixtures::{snapshot, TempTree};

/// The real `verb` (`ifup` or `ifdown`) for eth1, reading `t`'s interfaces file and keeping
/// its state in `state`, as at boot; it must succeed.
fn ifupdown_eth1(bed: &common::Bed, verb: &str, t: &TempTree, state: &TempTree) {
    let out = bed
        .inst
        .command(verb)
        .arg("-i")
        .arg(t.path("/etc/network/interfaces"))
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
        // The VPC's MTU, as DHCP set it: our own stanza (static) must keep it.
        bed.inst
            .exec(&["ip", "link", "set", "eth1", "mtu", "9001"])
            .unwrap();
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
        bed.inst
            .exec(&["ip", "link", "set", "eth1", "mtu", "1500"])
            .unwrap();
        let state = TempTree::new();
        let ifupdown = |verb: &str| ifupdown_eth1(&bed, verb, &t, &state);
        ifupdown("ifup");
        assert!(answers(&far), "eth1 does not answer after ifup ({method})");
        let mtu = bed.inst.exec(&["cat", "/sys/class/net/eth1/mtu"]).unwrap();
        // Our own stanza sets it; beside cloud-init's, its stanza configures the link.
        let want = if existing.is_empty() { "9001" } else { "1500" };
        assert_eq!(
            String::from_utf8_lossy(&mtu.stdout).trim(),
            want,
            "MTU after ifup ({method})"
        );
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
    ifupdown_eth1(&bed, "ifup", &t, &TempTree::new());
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

/// After a boot, ifupdown hosts leave IPv6 router advertisements to the kernel, which would
/// put eth1's RA default in main at 1024 again, tying with the primary's (and taking its
/// replies and new connections). The stanza gives the link the demoted RA metric before ifup
/// brings it up: after a "reboot" (link down, the kernel's default metric back) and the real
/// ifup, eth1's RA default comes back at 10001, behind eth0's.
#[test]
fn ifupdown_stanza_keeps_the_secondarys_ra_default_behind_the_primarys() {
    need_root!();
    let bed = common::Bed::new(true);
    bed.attach_with_router(
        symroute_testbed::EniSpec::new("eth1", &bed.a)
            .ip(PRIMARY)
            .ipv6("2600:1f18:1:1::20"),
        ENI,
    );
    let t = ifupdown_tree();
    apply(&bed, "ifupdown", &t.dir);
    let ours = t.read("/etc/network/interfaces.d/symroute-eth1");
    assert!(
        ours.contains("echo 10001 > /proc/sys/net/ipv6/conf/eth1/ra_defrtr_metric"),
        "{ours}"
    );
    let sysctl = "/proc/sys/net/ipv6/conf/eth1/ra_defrtr_metric";
    let eth1_defaults = || {
        let out = bed
            .inst
            .exec(&["ip", "-6", "route", "show", "default", "dev", "eth1"])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // The reboot: the link goes down (its routes go), the kernel's setting is back to 1024.
    bed.inst
        .exec(&["ip", "addr", "flush", "dev", "eth1"])
        .unwrap();
    bed.inst
        .exec(&["ip", "link", "set", "eth1", "down"])
        .unwrap();
    bed.inst
        .sysctl("net.ipv6.conf.eth1.ra_defrtr_metric", "1024")
        .unwrap();
    ifupdown_eth1(&bed, "ifup", &t, &TempTree::new());
    let metric = bed.inst.exec(&["cat", sysctl]).unwrap();
    assert_eq!(String::from_utf8_lossy(&metric.stdout).trim(), "10001");
    // The RA (every 3-4 s here) comes after the link is up: at 10001, never at 1024.
    let back = (0..50).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let d = eth1_defaults();
        (!d.is_empty()).then_some(d)
    });
    let d = back.expect("no RA default on eth1 after ifup");
    assert!(
        d.contains("metric 10001") && !d.contains("metric 1024"),
        "{d}"
    );
    let dev = bed.ip_json(&[
        "-6",
        "route",
        "get",
        "2600:1f18:1:2::50",
        "from",
        "2600:1f18:1:1::10",
    ]);
    assert_eq!(dev[0]["dev"], "eth0", "{dev}");
}
