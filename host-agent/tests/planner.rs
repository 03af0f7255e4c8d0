//! The planner on plain data, as a table: IMDS's view and the kernel's snapshot in, the `ip`
//! commands of the plan out. Then properties over generated hosts: running a plan and then its
//! inverses in reverse order restores the snapshot exactly (what rollback relies on), and a
//! plan run once leaves nothing for the next plan (apply converges in one run).
//! No root, no kernel, no IMDS.

mod plain;

use std::net::{IpAddr, Ipv4Addr};

use plain::*;
use proptest::prelude::*;
use symroute_agent::kernel::Snapshot;
use symroute_agent::model::{ImdsEni, Instance, Target, RTPROT_SYMROUTE};
use symroute_agent::ops::{KernelRule, Op};
use symroute_agent::plan::{plan_apply, HostOwners};

/// eth0 (the primary, DHCP-configured) and `secondaries` as links.
fn host(secondaries: &[(u8, bool)]) -> Snapshot {
    // A kernel before 6.1 (no IFA_PROTO), so the agent's addresses carry the `<dev>:sr` label;
    // the case "on a kernel that keeps IFA_PROTO" flips it.
    let mut snap = Snapshot {
        ifa_proto: false,
        links: vec![link(0, true)],
        addrs: vec![addr(0, "10.0.1.10", DHCP)],
        routes: vec![route(
            254,
            "0.0.0.0/0",
            Some("10.0.1.1"),
            0,
            DHCP,
            Some(100),
        )],
        rules: vec![],
        marks: vec![],
    };
    snap.links
        .extend(secondaries.iter().map(|&(d, up)| link(d, up)));
    snap
}

fn primary() -> ImdsEni {
    eni(0, &["10.0.1.10"])
}

/// The plan's changes as `ip` commands.
fn lines(inst: &Instance, snap: &Snapshot, sel: &Target) -> Vec<String> {
    plan_apply(inst, snap, sel, false, &HostOwners::default())
        .ops()
        .iter()
        .map(|o| o.to_string())
        .collect()
}

struct Case {
    name: &'static str,
    inst: Instance,
    snap: Snapshot,
    sel: Target,
    want: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    let dhcp_secondary = {
        let mut s = host(&[(1, true)]);
        s.addrs.push(addr(1, "10.0.1.20", DHCP));
        s
    };
    let configured = {
        let mut s = dhcp_secondary.clone();
        let mut subnet = route(10001, "10.0.1.0/24", None, 1, RTPROT_SYMROUTE, None);
        subnet.scope_link = true;
        subnet.prefsrc = Some("10.0.1.20".parse().unwrap());
        s.routes.push(subnet);
        s.routes.push(route(
            10001,
            "0.0.0.0/0",
            Some("10.0.1.1"),
            1,
            RTPROT_SYMROUTE,
            None,
        ));
        s.rules.extend(rules3(1, "10.0.1.20/32", RTPROT_SYMROUTE));
        s
    };
    vec![
        Case {
            name: "a secondary a DHCP client configured gets its table and one rule",
            inst: instance(vec![primary(), eni(1, &["10.0.1.20"])]),
            snap: dhcp_secondary.clone(),
            sel: Target::All,
            want: &[
                "ip route add 10.0.1.0/24 dev eth1 scope link src 10.0.1.20 table 10001 proto 177",
                "ip route add default via 10.0.1.1 dev eth1 table 10001 proto 177",
                "ip rule add from 10.0.1.20/32 to 10.0.0.0/16 lookup 10001 priority 8001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 10001 priority 10001 protocol 177",
            ],
        },
        Case {
            name: "an unconfigured secondary (down, no address) is brought up and addressed",
            inst: instance(vec![primary(), eni(1, &["10.0.1.20"])]),
            snap: host(&[(1, false)]),
            sel: Target::All,
            want: &[
                "ip link set eth1 up",
                "ip addr add 10.0.1.20/24 dev eth1 label eth1:sr",
                "ip route add 10.0.1.0/24 dev eth1 scope link src 10.0.1.20 table 10001 proto 177",
                "ip route add default via 10.0.1.1 dev eth1 table 10001 proto 177",
                "ip rule add from 10.0.1.20/32 to 10.0.0.0/16 lookup 10001 priority 8001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 10001 priority 10001 protocol 177",
            ],
        },
        Case {
            name: "on a kernel that keeps IFA_PROTO (6.1+) the address needs no label",
            inst: instance(vec![primary(), eni(1, &["10.0.1.20"])]),
            snap: Snapshot { ifa_proto: true, ..host(&[(1, false)]) },
            sel: Target::All,
            want: &[
                "ip link set eth1 up",
                "ip addr add 10.0.1.20/24 dev eth1",
                "ip route add 10.0.1.0/24 dev eth1 scope link src 10.0.1.20 table 10001 proto 177",
                "ip route add default via 10.0.1.1 dev eth1 table 10001 proto 177",
                "ip rule add from 10.0.1.20/32 to 10.0.0.0/16 lookup 10001 priority 8001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 10001 priority 10001 protocol 177",
            ],
        },
        Case {
            name: "a secondary private address DHCP did not add is added, and each address gets a rule",
            inst: instance(vec![primary(), eni(1, &["10.0.1.20", "10.0.1.21"])]),
            snap: dhcp_secondary.clone(),
            sel: Target::All,
            want: &[
                "ip addr add 10.0.1.21/24 dev eth1 label eth1:sr",
                "ip route add 10.0.1.0/24 dev eth1 scope link src 10.0.1.20 table 10001 proto 177",
                "ip route add default via 10.0.1.1 dev eth1 table 10001 proto 177",
                "ip rule add from 10.0.1.20/32 to 10.0.0.0/16 lookup 10001 priority 8001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 10001 priority 10001 protocol 177",
                "ip rule add from 10.0.1.21/32 to 10.0.0.0/16 lookup 10001 priority 8001 protocol 177",
                "ip rule add from 10.0.1.21/32 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "ip rule add from 10.0.1.21/32 lookup 10001 priority 10001 protocol 177",
            ],
        },
        Case {
            name: "a delegated prefix gets a rule for the whole prefix",
            inst: instance(vec![primary(), {
                let mut e = eni(1, &["10.0.1.20"]);
                e.prefixes_v4 = vec!["10.0.1.48/28".parse().unwrap()];
                e
            }]),
            snap: dhcp_secondary.clone(),
            sel: Target::All,
            want: &[
                "ip route add 10.0.1.0/24 dev eth1 scope link src 10.0.1.20 table 10001 proto 177",
                "ip route add default via 10.0.1.1 dev eth1 table 10001 proto 177",
                "ip rule add from 10.0.1.20/32 to 10.0.0.0/16 lookup 10001 priority 8001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 10001 priority 10001 protocol 177",
                "ip rule add from 10.0.1.48/28 to 10.0.0.0/16 lookup 10001 priority 8001 protocol 177",
                "ip rule add from 10.0.1.48/28 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "ip rule add from 10.0.1.48/28 lookup 10001 priority 10001 protocol 177",
            ],
        },
        Case {
            name: "a configured secondary needs nothing",
            inst: instance(vec![primary(), eni(1, &["10.0.1.20"])]),
            snap: configured.clone(),
            sel: Target::All,
            want: &[],
        },
        Case {
            name: "a detached ENI's rule and routes are pruned under --all",
            inst: instance(vec![primary()]),
            snap: configured.clone(),
            sel: Target::All,
            want: &[
                "ip rule del from 10.0.1.20/32 to 10.0.0.0/16 lookup 10001 priority 8001 protocol 177",
                "ip rule del from 10.0.1.20/32 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "ip rule del from 10.0.1.20/32 lookup 10001 priority 10001 protocol 177",
                "ip route del 10.0.1.0/24 dev eth1 scope link src 10.0.1.20 table 10001 proto 177",
                "ip route del default via 10.0.1.1 dev eth1 table 10001 proto 177",
            ],
        },
        Case {
            name: "a DHCP default as good as the primary's is moved behind it, not deleted",
            inst: instance(vec![primary(), eni(1, &["10.0.1.20"])]),
            snap: {
                let mut s = configured.clone();
                s.routes.push(route(254, "0.0.0.0/0", Some("10.0.1.1"), 1, DHCP, Some(100)));
                s
            },
            sel: Target::All,
            want: &[
                "ip route add default via 10.0.1.1 dev eth1 metric 10001 proto dhcp",
                "ip route del default via 10.0.1.1 dev eth1 metric 100 proto dhcp",
            ],
        },
        Case {
            name: "an ENI another tool already routes is left alone",
            inst: instance(vec![primary(), eni(1, &["10.0.1.20"])]),
            snap: {
                let mut s = dhcp_secondary.clone();
                s.rules.push(rule(32765, "10.0.1.20/32", 200, KERNEL));
                s.routes.push(route(200, "0.0.0.0/0", Some("10.0.1.1"), 1, KERNEL, None));
                s
            },
            sel: Target::All,
            want: &[],
        },
        Case {
            name: "a dual-stack secondary gets v6 rules and routes through the router its RA taught",
            inst: instance(vec![primary(), {
                let mut e = eni(1, &["10.0.1.20"]);
                e.ipv6s = vec!["2600:1f18::20".parse().unwrap()];
                e.subnets_v6 = vec!["2600:1f18::/64".parse().unwrap()];
                e
            }]),
            snap: {
                let mut s = dhcp_secondary.clone();
                s.routes.push(route(254, "::/0", Some("fe80::1"), 1, RA, Some(1024)));
                s
            },
            sel: Target::All,
            want: &[
                "ip route add 10.0.1.0/24 dev eth1 scope link src 10.0.1.20 table 10001 proto 177",
                "ip route add default via 10.0.1.1 dev eth1 table 10001 proto 177",
                "ip -6 route add 2600:1f18::/64 dev eth1 table 10001 proto 177",
                "ip -6 route add default via fe80::1 dev eth1 table 10001 proto 177",
                "ip rule add from 10.0.1.20/32 to 10.0.0.0/16 lookup 10001 priority 8001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 10001 priority 10001 protocol 177",
                "ip -6 rule add from 2600:1f18::20/128 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "ip -6 rule add from 2600:1f18::20/128 lookup 10001 priority 10001 protocol 177",
            ],
        },
        Case {
            name: "re-attached at device 2: the old table's rule and routes go with one ENI selected",
            inst: instance(vec![primary(), {
                let mut e = eni(2, &["10.0.1.20"]);
                e.mac = mac(1);
                e
            }]),
            snap: configured.clone(),
            sel: Target::Eni(format!("eni-{:017x}", 2).parse().unwrap()),
            want: &[
                "ip route add 10.0.1.0/24 dev eth1 scope link src 10.0.1.20 table 10002 proto 177",
                "ip route add default via 10.0.1.1 dev eth1 table 10002 proto 177",
                "ip rule add from 10.0.1.20/32 to 10.0.0.0/16 lookup 10002 priority 8002 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 254 suppress_prefixlength 0 priority 9002 protocol 177",
                "ip rule add from 10.0.1.20/32 lookup 10002 priority 10002 protocol 177",
                "ip rule del from 10.0.1.20/32 to 10.0.0.0/16 lookup 10001 priority 8001 protocol 177",
                "ip rule del from 10.0.1.20/32 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "ip rule del from 10.0.1.20/32 lookup 10001 priority 10001 protocol 177",
                "ip route del 10.0.1.0/24 dev eth1 scope link src 10.0.1.20 table 10001 proto 177",
                "ip route del default via 10.0.1.1 dev eth1 table 10001 proto 177",
            ],
        },
        Case {
            name: "an ENI with no link yet is planned nothing",
            inst: instance(vec![primary(), eni(1, &["10.0.1.20"])]),
            snap: host(&[]),
            sel: Target::All,
            want: &[],
        },
    ]
}

#[test]
fn each_case_plans_exactly_these_ip_commands() {
    let mut failures = Vec::new();
    for case in cases() {
        let got = lines(&case.inst, &case.snap, &case.sel);
        if got != case.want {
            failures.push(format!(
                "{}:\n  want {:#?}\n  got  {:#?}",
                case.name, case.want, got
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_primary_is_never_in_any_plan() {
    for case in cases() {
        for line in lines(&case.inst, &case.snap, &case.sel) {
            assert!(!line.contains("dev eth0"), "{}: {line}", case.name);
        }
    }
}

/// The kernel's bookkeeping as the planner sees it: each op changes the snapshot the way the
/// kernel's table would (an add appends, a delete removes the one matching entry).
fn run(snap: &mut Snapshot, op: &Op) {
    match op {
        Op::LinkUp { index, .. } | Op::LinkDown { index, .. } => {
            let up = matches!(op, Op::LinkUp { .. });
            snap.links
                .iter_mut()
                .find(|l| l.index == *index)
                .expect("link")
                .up = up;
        }
        Op::AddAddr(a) => snap.addrs.push(a.clone()),
        Op::DelAddr(a) => {
            let i = snap
                .addrs
                .iter()
                .position(|k| k.index == a.index && k.ip == a.ip)
                .expect("address to delete");
            snap.addrs.remove(i);
        }
        Op::AddRoute(r) => snap.routes.push(r.clone()),
        Op::DelRoute(r) => {
            let i = snap
                .routes
                .iter()
                .position(|k| k.same_route(r))
                .expect("route to delete");
            snap.routes.remove(i);
        }
        Op::AddRule(r) => snap.rules.push(KernelRule {
            spec: Some(r.clone()),
        }),
        Op::DelRule(r) => {
            let i = snap
                .rules
                .iter()
                .position(|k| {
                    k.spec
                        .as_ref()
                        .is_some_and(|s| s.same_rule(r) && s.protocol == r.protocol)
                })
                .expect("rule to delete");
            snap.rules.remove(i);
        }
        Op::AddMarkRule(r) => snap.marks.push(r.clone()),
        Op::DelMarkRule(r) => {
            let i = snap
                .marks
                .iter()
                .position(|k| k.same_rule(r) && k.protocol == r.protocol)
                .expect("mark rule to delete");
            snap.marks.remove(i);
        }
        Op::SetRaMetric { dev, metric, .. } => {
            snap.links
                .iter_mut()
                .find(|l| l.name == *dev)
                .expect("link")
                .ra_defrtr_metric = Some(*metric);
        }
    }
}

/// A snapshot as a comparable value: every list sorted by its printed form.
fn normal(snap: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = snap
        .links
        .iter()
        .map(|l| format!("link {} {} {:?}", l.name, l.up, l.ra_defrtr_metric))
        .collect();
    v.extend(
        snap.addrs
            .iter()
            .map(|a| format!("addr {a} {}", a.protocol)),
    );
    v.extend(snap.routes.iter().map(|r| format!("route {r}")));
    v.extend(snap.rules.iter().map(|r| format!("rule {:?}", r.spec)));
    v.sort();
    v
}

/// Generated hosts: up to four secondaries (devices 1-4), each with one to three addresses,
/// up or down, with or without its DHCP address, partly configured by an earlier run (a random
/// subset of its table's routes and rules), sometimes with a DHCP default tying the primary's;
/// and sometimes leftovers of a detached ENI at device 5.
fn generated() -> impl Strategy<Value = (Instance, Snapshot)> {
    let secondary = (
        any::<bool>(),
        any::<bool>(),
        1usize..=3,
        prop::bits::u8::masked(0b111),
        any::<bool>(),
    );
    (prop::collection::vec(secondary, 0..=4), any::<bool>()).prop_map(|(specs, leftovers)| {
        let mut enis = vec![primary()];
        let mut snap = host(&[]);
        for (i, (up, dhcp, n_ips, done, tie)) in specs.into_iter().enumerate() {
            let d = i as u8 + 1;
            let ips: Vec<String> = (0..n_ips)
                .map(|k| format!("10.0.1.{}", 20 + 10 * d as usize + k))
                .collect();
            let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
            let e = eni(d, &refs);
            snap.links.push(link(d, up));
            if dhcp {
                snap.addrs.push(addr(d, &ips[0], DHCP));
            }
            let t = 10000 + d as u32;
            if done & 1 != 0 {
                let mut subnet = route(t, "10.0.1.0/24", None, d, RTPROT_SYMROUTE, None);
                subnet.scope_link = true;
                subnet.prefsrc = Some(IpAddr::V4(ips[0].parse::<Ipv4Addr>().unwrap()));
                snap.routes.push(subnet);
            }
            if done & 2 != 0 {
                snap.routes.push(route(
                    t,
                    "0.0.0.0/0",
                    Some("10.0.1.1"),
                    d,
                    RTPROT_SYMROUTE,
                    None,
                ));
            }
            if done & 4 != 0 {
                snap.rules
                    .push(rule(t, &format!("{}/32", ips[0]), t, RTPROT_SYMROUTE));
            }
            if tie && dhcp {
                snap.routes.push(route(
                    254,
                    "0.0.0.0/0",
                    Some("10.0.1.1"),
                    d,
                    DHCP,
                    Some(100),
                ));
            }
            enis.push(e);
        }
        if leftovers {
            snap.links.push(link(5, true));
            snap.routes.push(route(
                10005,
                "0.0.0.0/0",
                Some("10.0.1.1"),
                5,
                RTPROT_SYMROUTE,
                None,
            ));
            snap.rules
                .push(rule(10005, "10.0.1.90/32", 10005, RTPROT_SYMROUTE));
        }
        (instance(enis), snap)
    })
}

proptest! {
    #[test]
    fn a_plan_then_its_inverses_in_reverse_order_restore_the_snapshot((inst, snap) in generated()) {
        let ops = plan_apply(&inst, &snap, &Target::All, false, &HostOwners::default()).ops();
        let mut host = snap.clone();
        for op in &ops {
            run(&mut host, op);
        }
        for op in ops.iter().rev() {
            run(&mut host, &op.inverse());
        }
        prop_assert_eq!(normal(&host), normal(&snap));
    }

    #[test]
    fn after_one_plan_the_next_plan_is_empty((inst, snap) in generated()) {
        let ops = plan_apply(&inst, &snap, &Target::All, false, &HostOwners::default()).ops();
        let mut host = snap.clone();
        for op in &ops {
            run(&mut host, op);
        }
        let again: Vec<String> = plan_apply(&inst, &host, &Target::All, false, &HostOwners::default()).ops().iter().map(|o| o.to_string()).collect();
        prop_assert!(again.is_empty(), "first {:?}\nthen {:?}", ops.iter().map(|o| o.to_string()).collect::<Vec<_>>(), again);
    }
}

/// One classifier for `apply` and `status`: who routes an ENI, from the three facts.
#[test]
fn ownership_says_who_routes_an_eni_for_apply_and_status() {
    use symroute_agent::plan::Ownership;
    let foreign = || {
        Some("rule `from 10.0.1.20/32 lookup 200 priority 32765 protocol kernel` already routes it via eth1".to_string())
    };
    let persisted_text = "symroute (persisted configuration, installed by the network manager)";
    // (foreign rule, ours, persisted) -> (apply leaves it to another tool?, status says)
    let symroute = Some("symroute".to_string());
    let by_manager = Some(persisted_text.to_string());
    let cases = [
        (None, false, false, false, None),
        (None, true, false, false, symroute.clone()),
        (foreign(), false, false, true, foreign()),
        (foreign(), true, false, true, symroute.clone()),
        (foreign(), false, true, false, by_manager.clone()),
        (foreign(), true, true, false, by_manager.clone()),
    ];
    for (foreign, ours, persisted, other, says) in cases {
        let o = Ownership {
            foreign,
            ours,
            persisted,
            native: None,
        };
        assert_eq!(o.other().is_some(), other, "{o:?}");
        assert_eq!(o.describe(), says, "{o:?}");
    }
    // The host's own tool for ENIs: another's, even before it has put a rule in (not where
    // symroute persisted the ENI).
    let native = Some("amazon-ec2-net-utils handles hot-plugged ENIs here (...)".to_string());
    for (ours, persisted, other, says) in [
        (false, false, true, native.clone()),
        (true, false, true, symroute.clone()),
        (false, true, false, None),
    ] {
        let o = Ownership {
            foreign: None,
            ours,
            persisted,
            native: native.clone(),
        };
        assert_eq!(o.other().is_some(), other, "{o:?}");
        assert_eq!(o.describe(), says, "{o:?}");
    }
    // Read from a snapshot: a foreign table via eth1 is another tool's until symroute persisted it.
    let inst = instance(vec![primary(), eni(1, &["10.0.1.20"])]);
    let mut snap = host(&[(1, true)]);
    snap.rules.push(rule(32765, "10.0.1.20/32", 200, KERNEL));
    snap.routes
        .push(route(200, "0.0.0.0/0", Some("10.0.1.1"), 1, KERNEL, None));
    let o = Ownership::of(&inst.enis[1], &snap.links[1], &snap, &HostOwners::default());
    assert!(o.other().is_some() && !o.ours);
    let persisted = HostOwners {
        persisted: vec![mac(1)],
        native: None,
    };
    let o = Ownership::of(&inst.enis[1], &snap.links[1], &snap, &persisted);
    assert!(o.other().is_none() && o.persisted);
}

#[test]
fn the_label_is_for_kernels_before_6_1_only() {
    use symroute_agent::kernel::release_keeps_ifa_proto;
    for (release, keeps) in [
        ("6.1.0-13-cloud-amd64", true),
        ("6.18.44-fc-v1045", true),
        ("6.0.19", false),
        ("5.15.0-1051-aws", false),
        ("4.14.355-275.582.amzn2.x86_64", false),
        ("garbage", false),
    ] {
        assert_eq!(release_keeps_ifa_proto(release), keeps, "{release}");
    }
}
