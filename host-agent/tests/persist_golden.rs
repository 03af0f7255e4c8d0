//! Persistence without root: every backend's files byte for byte against the golden trees in
//! tests/golden/<case>/ (regenerate with SYMROUTE_BLESS=1 and review the diff), detection on
//! prepared root trees, and apply-then-remove leaving a tree exactly as it was.

mod persist_fixtures;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use persist_fixtures::*;
use symroute_agent::model::Target;
use symroute_agent::persist::{
    self, detect, plan_apply, plan_remove, unit, Backend, EniConfig, FileOp, PersistReport, Root,
};

fn golden_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case)
}

/// The files a backend renders for these ENIs on this tree (the agent copy of the unit
/// backend stands in as a placeholder: it is the binary itself).
fn rendered(backend: Backend, root: &Root, enis: &[EniConfig]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for eni in enis {
        let ops = match backend {
            Backend::Unit => unit::render_with(eni, b"(the symroute binary)\n".to_vec()),
            b => persist::render(b, root, eni).expect("render"),
        };
        for op in ops {
            if let FileOp::Write { path, content, .. } = op {
                out.insert(
                    path.to_string_lossy().trim_start_matches('/').to_owned(),
                    content,
                );
            }
        }
    }
    out
}

fn check_golden(case: &str, files: BTreeMap<String, Vec<u8>>) {
    let dir = golden_dir(case);
    if std::env::var_os("SYMROUTE_BLESS").is_some() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "SYMROUTE_BLESS rewrites golden files instead of checking them: refused under CI"
        );
        let _ = fs::remove_dir_all(&dir);
        for (p, c) in &files {
            let f = dir.join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, c).unwrap();
        }
    }
    let want = tree(&dir);
    let got: BTreeMap<String, Vec<u8>> = files;
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{case}: the set of files differs from {}",
        dir.display()
    );
    for (p, c) in &got {
        assert!(
            want[p] == *c,
            "{case}: {p} differs from the golden file:\n--- golden\n{}\n--- generated\n{}",
            String::from_utf8_lossy(&want[p]),
            String::from_utf8_lossy(c)
        );
    }
}

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    snapshot(dir)
        .into_iter()
        .filter_map(|(p, e)| match e {
            Entry::File(c, _) => Some((p, c)),
            _ => None,
        })
        .collect()
}

#[test]
fn golden_networkd_dropin_for_the_file_that_matches() {
    let t = TempTree::new();
    // 10-eth1 (this ENI, by MAC, as cloud-init writes it) sorts before 99-default
    // (everything): it is the one networkd uses.
    t.write(
        "/etc/systemd/network/10-eth1.network",
        "[Match]\nMACAddress=0a:00:00:00:00:02\n\n[Network]\nDHCP=yes\n",
    );
    t.write(
        "/usr/lib/systemd/network/99-default.network",
        "[Match]\nName=*\n\n[Network]\nDHCP=yes\n",
    );
    check_golden(
        "networkd-dropin",
        rendered(Backend::Networkd, &t.root(), &[classic()]),
    );
}

#[test]
fn golden_networkd_own_file_when_the_match_is_shared() {
    let t = TempTree::new();
    t.write(
        "/run/systemd/network/50-dhcp.network",
        "[Match]\nName=eth*\n\n[Network]\n# cloud-init\nDHCP=yes\n\n[DHCPv4]\nRouteMetric=100\n",
    );
    check_golden(
        "networkd-shared",
        rendered(Backend::Networkd, &t.root(), &[classic()]),
    );
}

#[test]
fn golden_networkd_own_file_when_nothing_matches() {
    let t = TempTree::new();
    t.write(
        "/etc/systemd/network/10-eth0.network",
        "[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n",
    );
    check_golden(
        "networkd-own",
        rendered(Backend::Networkd, &t.root(), &[dual_stack()]),
    );
}

/// An ENI in an IPv6-only subnet, in every backend: IPv6 addresses, rules and table routes
/// only, and nothing that needs an IPv4 (NetworkManager's IPv4 `disabled`, not `manual`).
#[test]
fn golden_every_backend_for_an_ipv6_only_eni() {
    let t = TempTree::new();
    t.write(
        "/etc/network/interfaces",
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n",
    );
    let mut files = BTreeMap::new();
    for b in Backend::ALL {
        files.extend(rendered(b, &t.root(), &[ipv6_only()]));
    }
    for (path, content) in &files {
        let text = String::from_utf8_lossy(content);
        assert!(
            !text.contains("10.0.") || path.contains("udev") || path.contains("systemd/system"),
            "{path} names an IPv4 address:\n{text}"
        );
    }
    check_golden("ipv6-only", files);
}

#[test]
fn golden_netplan_merged_with_cloud_init() {
    let t = TempTree::new();
    t.write("/etc/netplan/50-cloud-init.yaml", &cloud_init_yaml());
    check_golden(
        "netplan-merge",
        rendered(Backend::Netplan, &t.root(), &[classic()]),
    );
}

#[test]
fn golden_netplan_own_definition() {
    let t = TempTree::new();
    check_golden(
        "netplan-own",
        rendered(Backend::Netplan, &t.root(), &[dual_stack()]),
    );
}

/// The connmark mode's `fwmark` rules, for an ENI in it (both families where it has IPv6).
fn in_connmark_mode(mut e: EniConfig) -> EniConfig {
    let v6 = !e.addrs_v6.is_empty();
    e.marks = [false, true]
        .into_iter()
        .filter(|f| !f || v6)
        .map(|f| symroute_agent::ops::MarkRuleSpec {
            priority: e.table - 3000,
            v6: f,
            mark: e.table << 16,
            mask: 0x7fff_0000,
            table: e.table,
            protocol: 177,
        })
        .collect();
    e
}

/// networkd deletes rules it did not create: in the mode, the `fwmark` rules are in the file.
#[test]
fn golden_networkd_connmark() {
    let t = TempTree::new();
    check_golden(
        "networkd-connmark",
        rendered(
            Backend::Networkd,
            &t.root(),
            &[in_connmark_mode(dual_stack())],
        ),
    );
}

/// netplan's `mark` takes no mask: the `fwmark` rules join the networkd drop-in.
#[test]
fn golden_netplan_connmark() {
    let t = TempTree::new();
    check_golden(
        "netplan-connmark",
        rendered(Backend::Netplan, &t.root(), &[in_connmark_mode(classic())]),
    );
}

#[test]
fn golden_nm_keyfiles() {
    let t = TempTree::new();
    check_golden(
        "nm",
        rendered(Backend::Nm, &t.root(), &[classic(), dual_stack()]),
    );
}

#[test]
fn golden_ifcfg() {
    let t = TempTree::new();
    check_golden(
        "ifcfg",
        rendered(Backend::Ifcfg, &t.root(), &[classic(), dual_stack()]),
    );
}

#[test]
fn golden_ifupdown_new_and_existing_stanza() {
    let t = TempTree::new();
    t.write(
        "/etc/network/interfaces",
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n",
    );
    // cloud-init's file configures eth2 (and sorts before symroute's).
    t.write(
        "/etc/network/interfaces.d/50-cloud-init",
        "allow-hotplug eth2\niface eth2 inet dhcp\n",
    );
    check_golden(
        "ifupdown",
        rendered(Backend::Ifupdown, &t.root(), &[classic(), dual_stack()]),
    );
}

#[test]
fn ifupdown_refuses_an_order_in_which_its_stanza_would_run_first() {
    // Above the source line, the existing stanza runs first: fine.
    let t = TempTree::new();
    t.write(
        "/etc/network/interfaces",
        "iface eth1 inet dhcp\nsource /etc/network/interfaces.d/*\n",
    );
    assert!(persist::render(Backend::Ifupdown, &t.root(), &classic()).is_ok());
    // Below it, or in a file sorting after symroute's: ifup would run ours first.
    t.write(
        "/etc/network/interfaces",
        "source /etc/network/interfaces.d/*\niface eth1 inet dhcp\n",
    );
    let err = persist::render(Backend::Ifupdown, &t.root(), &classic()).unwrap_err();
    assert!(err.to_string().contains("below its `source` line"), "{err}");
    t.write(
        "/etc/network/interfaces",
        "source /etc/network/interfaces.d/*\n",
    );
    t.write(
        "/etc/network/interfaces.d/zz-eth1",
        "iface eth1 inet dhcp\n",
    );
    let err = persist::render(Backend::Ifupdown, &t.root(), &classic()).unwrap_err();
    assert!(
        err.to_string()
            .contains("zz-eth1 configures eth1 and sorts after"),
        "{err}"
    );
}

#[test]
fn golden_unit() {
    let t = TempTree::new();
    check_golden(
        "unit",
        rendered(Backend::Unit, &t.root(), &[classic(), dual_stack()]),
    );
}

#[test]
fn ifupdown_refuses_an_interfaces_file_that_does_not_read_interfaces_d() {
    let t = TempTree::new();
    t.write(
        "/etc/network/interfaces",
        "auto lo\niface lo inet loopback\n",
    );
    let err = persist::render(Backend::Ifupdown, &t.root(), &classic()).unwrap_err();
    assert!(
        err.to_string()
            .contains("source /etc/network/interfaces.d/*"),
        "{err}"
    );
    assert_eq!(err.exit_code(), 1);
}

#[test]
fn ifcfg_never_overwrites_foreign_files() {
    let t = TempTree::new();
    t.write(
        "/etc/sysconfig/network-scripts/ifcfg-eth1",
        "DEVICE=eth1\nBOOTPROTO=dhcp\n",
    );
    let ops = persist::render(Backend::Ifcfg, &t.root(), &classic()).unwrap();
    let paths: Vec<String> = ops.iter().map(|o| o.path().display().to_string()).collect();
    assert_eq!(
        paths,
        vec![
            "/etc/sysconfig/network-scripts/route-eth1",
            "/etc/sysconfig/network-scripts/rule-eth1"
        ]
    );
    t.write(
        "/etc/sysconfig/network-scripts/rule-eth1",
        "from 10.0.1.99 table 5\n",
    );
    let err = persist::render(Backend::Ifcfg, &t.root(), &classic()).unwrap_err();
    assert!(
        err.to_string().contains("was not written by symroute"),
        "{err}"
    );
}

/// Files of a tree, the backend detection must pick, and a word its reason must contain.
type DetectCase<'a> = (&'a [(&'a str, &'a str)], Option<Backend>, &'a str);

#[test]
fn detection_order() {
    let ifaces = [("eth1".to_string(), classic().mac)];
    let cases: &[DetectCase] = &[
        (&[], None, "no supported network configuration"),
        (
            &[("/run/systemd/system/.keep", "")],
            Some(Backend::Unit),
            "systemd",
        ),
        // Installed but not running (a container, a chroot): nothing would run the unit.
        (&[("/etc/systemd/system/.keep", "")], None, "no supported"),
        (
            &[
                ("/etc/network/interfaces", ""),
                ("/usr/sbin/ifup", ""),
                (
                    "/etc/systemd/system/multi-user.target.wants/networking.service",
                    "",
                ),
            ],
            Some(Backend::Ifupdown),
            "networking.service",
        ),
        (
            &[
                ("/etc/network/interfaces", ""),
                ("/usr/sbin/ifup", ""),
                ("/usr/lib/udev/rules.d/80-ifupdown.rules", ""),
            ],
            Some(Backend::Ifupdown),
            "udev rule",
        ),
        // The file without ifupdown to read it, or with nothing to run it at boot (service
        // disabled, udev rule masked): not ifupdown (seen on images that purged the package).
        (
            &[
                ("/etc/network/interfaces", ""),
                ("/run/systemd/system/.keep", ""),
            ],
            Some(Backend::Unit),
            "systemd",
        ),
        (
            &[
                ("/etc/network/interfaces", ""),
                ("/usr/sbin/ifup", ""),
                ("/usr/lib/udev/rules.d/80-ifupdown.rules", ""),
                ("/etc/udev/rules.d/80-ifupdown.rules", ""),
                ("/run/systemd/system/.keep", ""),
            ],
            Some(Backend::Unit),
            "systemd",
        ),
        (
            &[
                ("/etc/network/interfaces", ""),
                ("/usr/sbin/ifup", ""),
                ("/usr/lib/udev/rules.d/80-ifupdown.rules", ""),
                ("/etc/sysconfig/network-scripts/ifcfg-eth0", ""),
                ("/etc/sysconfig/network-scripts/ifup-routes", ""),
            ],
            Some(Backend::Ifcfg),
            "network-scripts",
        ),
        // RHEL 9: the directory stays for NetworkManager's ifcfg plugin, without
        // network-scripts' ifup-routes; with NM neither running nor enabled, ifupdown is next.
        (
            &[
                ("/etc/network/interfaces", ""),
                ("/usr/sbin/ifup", ""),
                ("/usr/lib/udev/rules.d/80-ifupdown.rules", ""),
                ("/etc/sysconfig/network-scripts/ifcfg-eth0", ""),
            ],
            Some(Backend::Ifupdown),
            "interfaces",
        ),
        (
            &[
                ("/etc/sysconfig/network-scripts/ifcfg-eth0", ""),
                ("/etc/NetworkManager/NetworkManager.conf", ""),
                ("/run/NetworkManager/.keep", ""),
            ],
            Some(Backend::Nm),
            "NetworkManager",
        ),
        (
            &[
                ("/etc/NetworkManager/NetworkManager.conf", ""),
                (
                    "/etc/systemd/system/multi-user.target.wants/NetworkManager.service",
                    "",
                ),
            ],
            Some(Backend::Nm),
            "NetworkManager",
        ),
        // Installed but neither running nor enabled (seen in a real Debian 12 guest running
        // ifupdown): nothing would read a keyfile.
        (
            &[
                ("/etc/network/interfaces", ""),
                ("/usr/sbin/ifup", ""),
                ("/usr/lib/udev/rules.d/80-ifupdown.rules", ""),
                ("/etc/NetworkManager/NetworkManager.conf", ""),
            ],
            Some(Backend::Ifupdown),
            "interfaces",
        ),
        (
            &[
                ("/etc/NetworkManager/NetworkManager.conf", ""),
                (
                    "/usr/lib/systemd/network/99-x.network",
                    "[Match]\nName=e*\n",
                ),
            ],
            Some(Backend::Networkd),
            "99-x.network matches eth1",
        ),
        (
            // A shipped file for other interfaces does not make networkd the manager.
            &[
                ("/etc/network/interfaces", ""),
                ("/usr/sbin/ifup", ""),
                ("/usr/lib/udev/rules.d/80-ifupdown.rules", ""),
                (
                    "/usr/lib/systemd/network/80-container-ve.network",
                    "[Match]\nName=ve-*\n",
                ),
            ],
            Some(Backend::Ifupdown),
            "interfaces",
        ),
        (
            &[
                ("/etc/network/interfaces", ""),
                ("/usr/sbin/ifup", ""),
                ("/usr/lib/udev/rules.d/80-ifupdown.rules", ""),
                (
                    "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
                    "",
                ),
            ],
            Some(Backend::Networkd),
            "enabled",
        ),
        (
            &[
                ("/etc/netplan/50-cloud-init.yaml", ""),
                (
                    "/etc/systemd/network/10-eth1.network",
                    "[Match]\nName=eth1\n",
                ),
            ],
            Some(Backend::Netplan),
            "netplan",
        ),
        // netplan rendering to NetworkManager (running): NM's keyfile, since netplan's NM
        // backend drops routing-policy (seen in a real Debian 12 guest, netplan 0.106).
        (
            &[
                (
                    "/etc/netplan/50-cloud-init.yaml",
                    "network:\n  version: 2\n  renderer: NetworkManager\n",
                ),
                ("/run/NetworkManager/.keep", ""),
            ],
            Some(Backend::Nm),
            "netplan renders to NetworkManager",
        ),
        // ... and a later file may set it back.
        (
            &[
                (
                    "/etc/netplan/50-cloud-init.yaml",
                    "network:\n  version: 2\n  renderer: NetworkManager\n",
                ),
                (
                    "/etc/netplan/90-back.yaml",
                    "network:\n  renderer: networkd\n",
                ),
                ("/run/NetworkManager/.keep", ""),
            ],
            Some(Backend::Netplan),
            "netplan",
        ),
        (
            &[
                ("/etc/netplan/50-cloud-init.yaml", ""),
                (
                    "/usr/lib/systemd/network/80-ec2.network",
                    "[Match]\nDriver=ena\n",
                ),
            ],
            None,
            "amazon-ec2-net-utils",
        ),
        (
            &[("/etc/sysconfig/network-scripts/ec2net-functions", "")],
            None,
            "amazon-ec2-net-utils",
        ),
    ];
    for (files, want, why) in cases {
        let t = TempTree::new();
        for (p, c) in files.iter() {
            t.write(p, c);
        }
        let got = detect(&t.root(), &ifaces, false);
        assert_eq!(got.backend, *want, "{files:?}: {got:?}");
        assert!(got.reason.contains(why), "{files:?}: {got:?}");
    }
    // --force persists next to amazon-ec2-net-utils, with what else is there.
    let t = TempTree::new();
    t.write(
        "/usr/lib/systemd/network/80-ec2.network",
        "[Match]\nDriver=ena\n\n[Network]\nDHCP=yes\n",
    );
    assert_eq!(
        detect(&t.root(), &ifaces, true).backend,
        Some(Backend::Networkd)
    );
    let none = detect(&TempTree::new().root(), &ifaces, false);
    assert!(none.warning.unwrap().contains("lost on reboot"));
}

/// A root tree with foreign files of every kind the backends read or write next to.
fn busy_tree() -> TempTree {
    let t = TempTree::new();
    t.write(
        "/etc/systemd/network/10-eth1.network",
        "[Match]\nName=eth1\n\n[Network]\nDHCP=yes\n",
    );
    t.write(
        "/etc/systemd/network/10-eth1.network.d/mtu.conf",
        "[Link]\nMTUBytes=9001\n",
    );
    t.write("/etc/netplan/50-cloud-init.yaml", &cloud_init_yaml());
    t.write(
        "/etc/NetworkManager/system-connections/eth0.nmconnection",
        "[connection]\nid=eth0\n",
    );
    t.write(
        "/etc/sysconfig/network-scripts/ifcfg-eth1",
        "DEVICE=eth1\nBOOTPROTO=dhcp\n",
    );
    t.write(
        "/etc/network/interfaces",
        "iface eth1 inet dhcp\nsource /etc/network/interfaces.d/*\n",
    );
    t.write("/etc/network/interfaces.d/eth3", "iface eth3 inet dhcp\n");
    t.write("/etc/udev/rules.d/70-persistent-net.rules", "# foreign\n");
    t.write(
        "/etc/systemd/system/foo.service",
        "[Service]\nExecStart=/bin/true\n",
    );
    t.write(
        "/var/lib/symroute/download/README",
        "the SSM document's download directory\n",
    );
    // Every system has it; the unit backend's agent copy goes there and it stays.
    fs::create_dir_all(t.path("/usr/local/sbin")).unwrap();
    t
}

fn run(root: &Root, ops: &[FileOp]) -> PersistReport {
    let mut r = PersistReport::default();
    persist::execute(root, ops, &mut r).expect("execute");
    r
}

#[test]
fn every_backend_removes_exactly_what_it_wrote() {
    for backend in Backend::ALL {
        let t = busy_tree();
        let root = t.root();
        let before = snapshot(&t.dir);
        let enis = [classic(), dual_stack()];
        let ops = plan_apply(backend, &root, &enis, None).unwrap();
        let r = run(&root, &ops);
        assert!(
            r.files
                .iter()
                .all(|f| f.action == persist::FileAction::Written),
            "{backend:?} {r:?}"
        );
        assert!(snapshot(&t.dir) != before, "{backend:?} wrote nothing");
        // Applying again changes nothing.
        let again = run(&root, &plan_apply(backend, &root, &enis, None).unwrap());
        assert!(
            again
                .files
                .iter()
                .all(|f| f.action == persist::FileAction::Unchanged),
            "{backend:?} {again:?}"
        );
        // Removing one ENI keeps the other's files (and the shared ones it needs).
        run(&root, &plan_remove(&root, &Target::Mac(classic().mac), &[]));
        let left = persist::owned_files(&root);
        assert!(!left.is_empty(), "{backend:?}");
        assert!(
            left.iter().all(|(_, o)| *o == persist::Owner::Shared
                || *o
                    == persist::Owner::Eni {
                        eni_id: dual_stack().eni_id.to_string(),
                        mac: dual_stack().mac
                    }),
            "{backend:?}: {left:?}"
        );
        // Removing the detached one (--stale) leaves the tree exactly as it was.
        run(&root, &plan_remove(&root, &Target::Stale, &[classic().mac]));
        assert_eq!(
            snapshot(&t.dir),
            before,
            "{backend:?}: remove left the tree changed"
        );
    }
}

#[test]
fn apply_moves_an_enis_files_and_prunes_detached_ones() {
    let t = busy_tree();
    let root = t.root();
    let before = snapshot(&t.dir);
    run(
        &root,
        &plan_apply(Backend::Ifupdown, &root, &[classic(), dual_stack()], None).unwrap(),
    );
    // The same ENI now persisted with another backend: its old file goes.
    let ops = plan_apply(Backend::Nm, &root, &[classic()], Some(&[classic().mac])).unwrap();
    let r = run(&root, &ops);
    let deleted: Vec<&str> = r
        .files
        .iter()
        .filter(|f| f.action == persist::FileAction::Deleted)
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(
        deleted,
        vec![
            "/etc/network/interfaces.d/symroute-eth1",
            "/etc/network/interfaces.d/symroute-eth2"
        ],
        "{r:?}"
    );
    run(&root, &plan_remove(&root, &Target::All, &[]));
    assert_eq!(snapshot(&t.dir), before);
}

#[test]
fn a_failed_write_puts_every_file_back() {
    let t = busy_tree();
    let root = t.root();
    let before = snapshot(&t.dir);
    let mut ops = plan_apply(Backend::Networkd, &root, &[classic(), dual_stack()], None).unwrap();
    // A path under a regular file cannot be created: the last op fails.
    ops.push(FileOp::text("/etc/network/interfaces/x", "x".into(), 0o644));
    let mut r = PersistReport::default();
    let err = persist::execute(&root, &ops, &mut r).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.to_string().contains("/etc/network/interfaces/x"),
        "{err}"
    );
    assert_eq!(snapshot(&t.dir), before);
}
