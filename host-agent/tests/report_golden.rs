//! The report as people and scripts read it: the text and JSON of typical runs, byte for byte
//! against tests/golden/reports/<case>.{txt,json} (regenerate with SYMROUTE_BLESS=1 and review
//! the diff). Reports are built from real plans of plain data; no root, no kernel.

use std::fs;
use std::path::PathBuf;

mod plain;

use plain::*;
use symroute_agent::kernel::Snapshot;
use symroute_agent::model::{Instance, Target, RTPROT_SYMROUTE};
use symroute_agent::ops::RuleSpec;
use symroute_agent::persist::{Backend, FileAction, FileChange, PersistReport, Persisted};
use symroute_agent::plan::plan_apply;
use symroute_agent::report::{Action, EniReport, Report};
use symroute_agent::verify::Check;

/// eth0 primary, eth1 secondary (DHCP-configured), eth2 routed by another tool (table 200),
/// eth3 listed by IMDS but without a kernel link yet.
fn world() -> (Instance, Snapshot) {
    let inst = instance(vec![
        eni(0, &["10.0.1.10"]),
        eni(1, &["10.0.1.20"]),
        eni(2, &["10.0.1.30"]),
        eni(3, &["10.0.1.40"]),
    ]);
    let snap = Snapshot {
        ifa_proto: true,
        links: vec![link(0, true), link(1, true), link(2, true)],
        addrs: vec![
            addr(0, "10.0.1.10", DHCP),
            addr(1, "10.0.1.20", DHCP),
            addr(2, "10.0.1.30", DHCP),
        ],
        rules: vec![rule(32765, "10.0.1.30/32", 200, KERNEL)],
        marks: vec![],
        routes: vec![route(200, "0.0.0.0/0", Some("10.0.1.1"), 2, KERNEL, None)],
    };
    (inst, snap)
}

fn report(action: Action, dry_run: bool) -> Report {
    let (inst, snap) = world();
    let plan = plan_apply(
        &inst,
        &snap,
        &Target::All,
        false,
        &symroute_agent::plan::HostOwners::default(),
    );
    let mut r = Report::new(action, dry_run);
    r.instance_id = inst.instance_id.clone();
    r.enis = plan.enis.iter().map(EniReport::from_plan).collect();
    r.netlink_requests = 7;
    r.imds_requests = 33;
    r.duration_ms = 12;
    r
}

fn checks(ok: bool) -> Vec<Check> {
    vec![
        Check {
            source: "10.0.1.20".parse().unwrap(),
            destination: "10.0.1.1".parse().unwrap(),
            mark: None,
            via: Some("eth1".into()),
            ok: true,
        },
        Check {
            source: "10.0.1.20".parse().unwrap(),
            destination: "198.51.100.1".parse().unwrap(),
            mark: None,
            via: Some(if ok { "eth1" } else { "eth0" }.into()),
            ok,
        },
    ]
}

fn persisted(action: FileAction) -> PersistReport {
    PersistReport {
        backend: Persisted::By(Backend::Networkd),
        reason: "systemd-networkd is running and manages eth1".into(),
        files: vec![FileChange {
            path: "/etc/systemd/network/10-symroute-eth1.network".into(),
            action,
        }],
        warnings: vec![],
    }
}

fn cases() -> Vec<(&'static str, Report)> {
    let applied = {
        let mut r = report(Action::Apply, false);
        r.changes = r.enis.iter().map(|e| e.changes.len()).sum();
        r.enis[0].set_checks(checks(true));
        r.persist = persisted(FileAction::Written);
        r
    };
    let dry_run = {
        let mut r = report(Action::Apply, true);
        r.persist = persisted(FileAction::WouldWrite);
        r
    };
    let not_symmetric = {
        let mut r = report(Action::Apply, false);
        r.ok = false;
        r.exit_code = 1;
        r.enis[0].set_checks(checks(false));
        r.error = Some("eni-00000000000000001: replies from 10.0.1.20 would leave by eth0; its changes were undone".into());
        r.notes
            .push("eth1: the kernel refused nothing, yet the proof failed".into());
        r
    };
    let removed = {
        let mut r = Report::new(Action::Remove, false);
        r.instance_id = Some("i-0123456789abcdef0".into());
        r.pruned = vec![
            "ip rule del from 10.0.1.20/32 lookup 10001 priority 10001 protocol 177".into(),
            "ip route del default via 10.0.1.1 dev eth1 table 10001 proto 177".into(),
        ];
        r.changes = 2;
        r.persist = PersistReport {
            backend: Persisted::Any,
            reason: "remove deletes symroute's files whatever backend wrote them".into(),
            files: vec![FileChange {
                path: "/etc/systemd/network/10-symroute-eth1.network".into(),
                action: FileAction::Deleted,
            }],
            warnings: vec![],
        };
        r
    };
    // As commands/status.rs fills it: the kernel's addresses with their prefix, the rules that
    // steer the ENI, the proof, no changes.
    let status = {
        let mut r = report(Action::Status, false);
        r.enis[0].managed_by = Some("symroute".into());
        r.enis[0].addresses = vec!["10.0.1.20/24".into()];
        r.enis[0].rules = vec![RuleSpec::from_src(
            10001,
            "10.0.1.20/32".parse().unwrap(),
            10001,
            RTPROT_SYMROUTE,
        )
        .to_string()];
        r.enis[0].set_checks(checks(true));
        r.enis[1].addresses = vec!["10.0.1.30/24".into()];
        r.enis[1].rules =
            vec!["from 10.0.1.30/32 lookup 200 priority 32765 protocol kernel".into()];
        r.enis[1].set_checks(
            checks(true)
                .into_iter()
                .map(|c| Check {
                    via: Some("eth2".into()),
                    ..c
                })
                .collect(),
        );
        for e in &mut r.enis {
            e.changes.clear();
        }
        r
    };
    vec![
        ("apply", applied),
        ("apply-dry-run", dry_run),
        ("apply-not-symmetric", not_symmetric),
        ("remove", removed),
        ("status", status),
    ]
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/reports")
        .join(name)
}

#[test]
fn reports_read_as_their_golden_files() {
    let bless = std::env::var_os("SYMROUTE_BLESS").is_some();
    assert!(
        !(bless && std::env::var("CI").as_deref() == Ok("true")),
        "SYMROUTE_BLESS rewrites golden files instead of checking them: refused under CI"
    );
    let mut differ = Vec::new();
    for (case, r) in cases() {
        for (ext, got) in [("txt", r.to_text()), ("json", r.to_json() + "\n")] {
            let path = golden(&format!("{case}.{ext}"));
            if bless {
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, &got).unwrap();
            }
            let want =
                fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if want != got {
                differ.push(format!(
                    "{}:\n--- want\n{want}--- got\n{got}",
                    path.display()
                ));
            }
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
