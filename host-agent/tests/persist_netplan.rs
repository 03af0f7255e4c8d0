//! netplan (rendered by the real `netplan generate` to networkd) brings symroute's routing back, merged
//! with cloud-init's definition of the ENI, and never into a definition the primary shares.
//! The routing is wiped as a reboot would and brought back by the backend's own tool; a client
//! in another subnet must get answers again. Needs root (fails under CI=true).

mod common;
mod persist_bed;
mod persist_fixtures;

use std::fs;

use persist_bed::*;
use persist_fixtures::{snapshot, TempTree};

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
    // systemd ships /etc/systemd/network; the local-peers drop-in goes there.
    fs::create_dir_all(t.path("/etc/systemd/network")).unwrap();
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
        // On-link: networkd must not refuse it while the address is not back yet.
        format!("Destination=0.0.0.0/0\nGateway=10.0.1.1\nGatewayOnLink=true\nTable={TABLE}"),
        format!("Destination=10.0.1.0/24\nPreferredSource={PRIMARY}\nScope=link\nTable={TABLE}"),
    ] {
        assert!(
            text.contains(&want),
            "{want:?} missing from {}:\n{text}",
            eth1[0].display()
        );
    }

    // Chain into networkd as on a host: netplan's file in /run/systemd/network, our drop-in for
    // it in /etc/systemd/network (a veth has no permanent MAC, so match the current one).
    let run = TempTree::new();
    let name = eth1[0].file_name().unwrap().to_string_lossy().into_owned();
    run.write(
        &format!("/{name}"),
        &text.replace("PermanentMACAddress=", "MACAddress="),
    );
    let dropin = t.path(&format!(
        "/etc/systemd/network/{name}.d/90-symroute-eth1.conf"
    ));
    assert!(dropin.exists(), "the local-peers drop-in for {name}");
    wipe(&bed, &far);
    let out = with_networkd_and_run(
        &bed,
        &t.path("/etc/systemd/network"),
        Some(&run.dir),
        &ping_steps(&far, "BOOT"),
    );
    assert!(out.contains("BOOT_ANSWERS"), "{out}");
    for src in [PRIMARY, SECONDARY] {
        assert!(
            out.contains(&format!(
                "BOOT_LOCAL {LOCAL_PREF}:\tfrom {src} lookup main suppress_prefixlength 0"
            )),
            "networkd merged /etc's drop-in into /run's netplan file ({src}):\n{out}"
        );
        assert!(
            out.contains(&format!(
                "BOOT_VPC {VPC_PREF}:\tfrom {src} to 10.0.0.0/16 lookup {TABLE}"
            )),
            "{src}:\n{out}"
        );
    }

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

/// netplan's own generator takes an IPv6-only ENI's definition: in the networkd file it writes,
/// the ENI's IPv6 addresses, its table's routes and every rule (the local-peers rules from the
/// drop-in beside it), and nothing IPv4.
#[test]
fn the_real_netplan_generator_renders_an_ipv6_only_eni() {
    let t = TempTree::new();
    t.write_rendered(
        symroute_agent::persist::Backend::Netplan,
        &persist_fixtures::ipv6_only(),
    );
    let generator = ["/usr/libexec/netplan/generate", "/usr/lib/netplan/generate"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("netplan's generator (make setup installs netplan.io)");
    let out = std::process::Command::new(generator)
        .arg("--root-dir")
        .arg(&t.dir)
        .output()
        .expect("run the generator");
    assert!(
        out.status.success(),
        "netplan refused it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = t.path("/run/systemd/network/10-netplan-00-symroute-eth3.network");
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    for want in [
        "PermanentMACAddress=0a:00:00:00:00:04",
        "Address=2600:1f18:1:2::40/128",
        "Address=2600:1f18:1:2::41/128",
        "IPv6AcceptRA=yes",
        "[RoutingPolicyRule]\nFrom=2600:1f18:1:2::40/128\nTable=10003\nPriority=10003",
        "[RoutingPolicyRule]\nFrom=2600:1f18:1:2::41/128\nTo=2600:1f18:1::/56\nTable=10003\nPriority=8003",
        "Destination=::/0\nGateway=fe80::1\nTable=10003",
        "Destination=2600:1f18:1:2::/64\nScope=link\nTable=10003",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    assert!(
        !text.contains("10.0."),
        "an IPv4 in an IPv6-only ENI's file:\n{text}"
    );
    assert!(
        !text.contains("DHCP=ipv4") && !text.contains("DHCP=yes"),
        "{text}"
    );
}
