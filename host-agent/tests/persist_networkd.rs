//! systemd-networkd brings symroute's routing back: the drop-in beside the file that configures the
//! link, and a file of its own where none matches the ENI alone.
//! The routing is wiped as a reboot would and brought back by the backend's own tool; a client
//! in another subnet must get answers again. Needs root (fails under CI=true).

mod common;
mod persist_bed;
mod persist_fixtures;

use common::{ip, Bed};
use persist_bed::*;
use persist_fixtures::{snapshot, TempTree};
use symroute_testbed::EniSpec;

/// The file that configures eth1, as cloud-init writes it (matched by MAC), with a static
/// address standing in for DHCP in the testbed.
fn eth1_file(t: &TempTree, bed: &Bed) {
    let mac = eth1_mac(bed);
    t.write(
        "/etc/systemd/network/10-eth1.network",
        &format!("[Match]\nMACAddress={mac}\n\n[Network]\nAddress={PRIMARY}/24\nIPv6AcceptRA=no\n"),
    );
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
    eth1_file(&t, &bed);
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
            // The real networkd takes SuppressPrefixLength= and To= from the drop-in.
            assert!(
                out.contains(&format!(
                    "{tag}_LOCAL {LOCAL_PREF}:\tfrom {src} lookup main suppress_prefixlength 0"
                )),
                "{tag} {src}:\n{out}"
            );
            assert!(
                out.contains(&format!(
                    "{tag}_VPC {VPC_PREF}:\tfrom {src} to 10.0.0.0/16 lookup {TABLE}"
                )),
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
    // The VPC's MTU, as DHCP (or the image) set it: the static file must keep it.
    bed.inst
        .exec(&["ip", "link", "set", "eth1", "mtu", "9001"])
        .unwrap();
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
    // The link comes up with the apply, which waits for the first RA: one run knows the
    // router, and the file has it.
    let first = bed.agent(&args);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let own = t.read("/etc/systemd/network/05-symroute-eth1.network");
    for want in [
        "Address=10.0.2.20/24",
        "Address=10.0.2.21/24",
        "Address=2600:1f18:1:2::20/128",
        "Gateway=fe80:",
        "From=2600:1f18:1:2::20/128\nTable=10001",
        "MTUBytes=9001",
    ] {
        assert!(own.contains(want), "{want:?} missing:\n{own}");
    }
    let v6 = ip("2600:1f18:1:2::20");
    // Live, nobody manages eth1 (it was down): the agent adds every address, IPv6 too, and
    // it answers at once; the own file carries them all for the replay below.
    assert!(client.ping(ip("10.0.2.20"), 3, 2));
    assert!(
        client.ping(v6, 1, 2),
        "eth1 answers over IPv6 after the run"
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
    i.exec(&["ip", "link", "set", "eth1", "down", "mtu", "1500"])
        .unwrap();
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
echo \"LINK_MTU $(cat /sys/class/net/eth1/mtu)\"
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
    // networkd brought the link back at the VPC's MTU, not Ethernet's 1500.
    assert_eq!(line("LINK_MTU"), "LINK_MTU 9001", "{out}");
    remove_eni(&bed, "networkd", &t.dir, eni);
    assert_eq!(snapshot(&t.dir), before, "remove left the tree changed");
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

/// networkd deletes rules it did not create when it configures a link: the connmark mode's
/// `fwmark` rule, live only, is gone after a reconfigure. Persisted, it is in symroute's drop-in,
/// networkd installs it itself (at boot too), and the next apply takes networkd's copy for the
/// mode's own: nothing added beside it, the mode reported on.
#[test]
fn networkd_keeps_the_connmark_rule_from_the_dropin() {
    need_root!();
    let (bed, far) = bed();
    let t = TempTree::new();
    eth1_file(&t, &bed);
    let conf = t.path("/etc/systemd/network");
    let mark_steps = |tag: &str| format!("ip rule show pref 7001 | sed 's/^/{tag}_MARK /'\n");

    // Live only: networkd's reconfigure takes the rule away.
    bed.apply(&["--eni", ENI, "--connmark", "on"]);
    let out = with_networkd(&bed, &conf, &format!("{RECONFIGURE}{}", mark_steps("LIVE")));
    assert!(out.contains("RECONFIGURE_SENT"), "{out}");
    assert!(
        !out.contains("LIVE_MARK"),
        "networkd kept a foreign rule?\n{out}"
    );

    apply_ok(&bed, "networkd", &t.dir, &["--connmark", "on"]);
    let dropin = t.read("/etc/systemd/network/10-eth1.network.d/90-symroute.conf");
    assert!(
        dropin.contains(
            "[RoutingPolicyRule]\nFirewallMark=0x27110000/0x7fff0000\nFamily=ipv4\nTable=10001\nPriority=7001\n"
        ),
        "{dropin}"
    );
    // A boot (rules wiped, networkd started afresh), then a reconfigure: networkd's own.
    wipe(&bed, &far);
    bed.inst
        .exec(&["ip", "rule", "del", "pref", "7001"])
        .expect("ip rule del");
    let out = with_networkd(
        &bed,
        &conf,
        &format!(
            "{}{RECONFIGURE}{}",
            mark_steps("BOOT"),
            mark_steps("RECONF")
        ),
    );
    for tag in ["BOOT", "RECONF"] {
        assert!(
            out.contains(&format!(
                "{tag}_MARK 7001:\tfrom all fwmark 0x27110000/0x7fff0000 lookup 10001"
            )),
            "{tag}:\n{out}"
        );
    }
    // networkd stopped, its rule stays in the kernel: the next apply sees the mode on through
    // it (networkd's protocol, not 177) and adds nothing beside it.
    let again = apply_ok(&bed, "networkd", &t.dir, &[]);
    assert_eq!(again.json["enis"][0]["connmark"], true, "{}", again.stdout);
    assert!(
        again.json["enis"][0]["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| !c.as_str().unwrap().contains("fwmark")),
        "{}",
        again.stdout
    );
    apply_ok(&bed, "networkd", &t.dir, &["--connmark", "off"]);
    assert!(!t
        .read("/etc/systemd/network/10-eth1.network.d/90-symroute.conf")
        .contains("FirewallMark"));
    let rules = bed
        .inst
        .exec(&["ip", "rule", "show", "pref", "7001"])
        .unwrap();
    assert!(
        rules.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&rules.stdout)
    );
    remove(&bed, "networkd", &t.dir);
}
