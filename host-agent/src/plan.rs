//! The planner: from what IMDS says and what the kernel has, the list of changes that makes
//! every selected ENI route symmetrically. Pure data in, pure data out: no I/O here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::kernel::Snapshot;
use crate::metadata::is_link_local;
use crate::model::{
    first_host, ImdsEni, Instance, Mac, Target, DEVICES_PER_CARD, MAX_NETWORK_CARD,
    RTPROT_SYMROUTE, TABLE_BASE,
};
use crate::ops::{
    AddrSpec, Link, Op, RouteSpec, RuleSpec, IP6_DEFAULT_METRIC, RTPROT_RA, RT_TABLE_MAIN,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EniStatus {
    /// Planned (possibly with nothing to do).
    Configure,
    /// Another tool already routes it symmetrically; left alone (no `--force`).
    ManagedByOther,
    /// Listed by IMDS but no kernel link (yet).
    Missing,
    /// Its numbers cannot be trusted yet (transient device 0, network-card not published on a
    /// multi-card instance): no change, whatever its table would be.
    NotReady,
    /// Another ENI of the instance claims the same table: neither is changed.
    TableConflict,
    /// Its changes were refused or failed the proof: undone, the others kept.
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct EniPlan {
    pub eni: ImdsEni,
    pub link: Option<Link>,
    pub status: EniStatus,
    /// Why another tool is considered the owner, for `ManagedByOther`.
    pub owner: Option<String>,
    pub ops: Vec<Op>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    pub enis: Vec<EniPlan>,
    /// Agent-owned state that no ENI wants any more (`apply --all`, `remove`).
    pub prune: Vec<Op>,
    /// Tables of the ENIs in the connmark mode after this run (set once the mode is planned;
    /// persistence writes their `fwmark` rules where the network manager needs them).
    pub marked: Vec<u32>,
}

impl Plan {
    /// Every change, in the order it must run: each ENI's own, then pruning.
    pub fn ops(&self) -> Vec<Op> {
        self.enis
            .iter()
            .flat_map(|e| e.ops.iter().cloned())
            .chain(self.prune.iter().cloned())
            .collect()
    }
}

/// What one ENI should look like in the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub addrs: Vec<AddrSpec>,
    pub routes: Vec<RouteSpec>,
    pub rules: Vec<RuleSpec>,
    pub warnings: Vec<String>,
}

fn is_ours_rule(r: &RuleSpec) -> bool {
    r.protocol == RTPROT_SYMROUTE
}

fn ours_rules(snap: &Snapshot) -> impl Iterator<Item = &RuleSpec> {
    snap.rules
        .iter()
        .filter_map(|r| r.spec.as_ref())
        .filter(|r| is_ours_rule(r))
}

fn ours_routes(snap: &Snapshot) -> impl Iterator<Item = &RouteSpec> {
    snap.routes.iter().filter(|r| r.protocol == RTPROT_SYMROUTE)
}

fn ours_addrs(snap: &Snapshot) -> impl Iterator<Item = &AddrSpec> {
    snap.addrs.iter().filter(|a| a.protocol == RTPROT_SYMROUTE)
}

/// Rules depend on IMDS alone, so they can be computed for ENIs without a link. Per address of
/// the ENI, in the order the kernel tries them:
/// 1. `to <each VPC block> lookup T`: the VPC's destinations, its own subnet included, leave by
///    the ENI even though main's route to the subnet goes by eth0;
/// 2. `lookup main suppress_prefixlength 0`: any other route in main wins (docker0, a VPN, a
///    bridge, a pod), only main's default routes are skipped;
/// 3. `lookup T`: everything else takes the ENI's default route.
pub(crate) fn desired_rules(eni: &ImdsEni) -> Vec<RuleSpec> {
    rules_with(eni, &[])
}

/// Main-table routes that lead into the VPC although their destination is outside its blocks
/// (a route to on-premises or a peered VPC via the subnet router on eth0): to the VPC's fabric
/// they are VPC traffic, and a reply from this ENI's address that took them would be dropped
/// by the source/destination check, so they get a rule of the first kind too.
pub(crate) fn vpc_bound_routes(eni: &ImdsEni, snap: &Snapshot) -> Vec<IpNet> {
    let in_blocks = |n: &IpNet| match n {
        IpNet::V4(n) => eni.vpc_v4.iter().any(|b| b.contains(n)),
        IpNet::V6(n) => eni.vpc_v6.iter().any(|b| b.contains(n)),
    };
    let via_vpc_router = |g: &IpAddr| match g {
        IpAddr::V4(g) => eni.vpc_v4.iter().any(|b| b.contains(g)),
        // IPv6 next hops on EC2 are the VPC router's link-local address.
        IpAddr::V6(g) => eni.vpc_v6.iter().any(|b| b.contains(g)) || is_link_local(g),
    };
    let mut out: Vec<IpNet> = snap
        .routes
        .iter()
        .filter(|r| r.table == RT_TABLE_MAIN && !r.is_default() && r.protocol != RTPROT_SYMROUTE)
        .filter(|r| r.gateway.as_ref().is_some_and(via_vpc_router))
        .map(|r| r.dst)
        .filter(|d| !in_blocks(d))
        .collect();
    out.sort();
    out.dedup();
    out
}

fn rules_with(eni: &ImdsEni, vpc_bound: &[IpNet]) -> Vec<RuleSpec> {
    let t = eni.table();
    let srcs = eni
        .ipv4s
        .iter()
        .map(|ip| IpNet::V4(Ipv4Net::from(*ip)))
        .chain(eni.prefixes_v4.iter().map(|p| IpNet::V4(*p)))
        .chain(eni.ipv6s.iter().map(|ip| IpNet::V6(Ipv6Net::from(*ip))))
        .chain(eni.prefixes_v6.iter().map(|p| IpNet::V6(*p)));
    let mut out = Vec::new();
    for src in srcs {
        let mut blocks: Vec<IpNet> = match src {
            IpNet::V4(_) => eni.vpc_v4.iter().map(|n| IpNet::V4(*n)).collect(),
            IpNet::V6(_) => eni.vpc_v6.iter().map(|n| IpNet::V6(*n)).collect(),
        };
        blocks.extend(
            vpc_bound
                .iter()
                .filter(|d| d.addr().is_ipv4() == src.addr().is_ipv4()),
        );
        for dst in blocks {
            out.push(RuleSpec {
                dst: Some(dst),
                ..RuleSpec::from_src(eni.vpc_rule_priority(), src, t, RTPROT_SYMROUTE)
            });
        }
        out.push(RuleSpec {
            suppress_prefixlength: Some(0),
            ..RuleSpec::from_src(
                eni.local_rule_priority(),
                src,
                RT_TABLE_MAIN,
                RTPROT_SYMROUTE,
            )
        });
        out.push(RuleSpec::from_src(t, src, t, RTPROT_SYMROUTE));
    }
    out
}

/// The router the interface learned for IPv6: the main table's default via that link (the RA
/// default), lowest metric first.
pub(crate) fn learned_v6_router(snap: &Snapshot, link: &Link, table: u32) -> Option<Ipv6Addr> {
    let v6_default_on_link =
        |r: &&RouteSpec| r.oif == link.index && r.is_default() && r.dst.addr().is_ipv6();
    let mut defaults: Vec<&RouteSpec> = snap
        .routes
        .iter()
        .filter(v6_default_on_link)
        .filter(|r| r.table == RT_TABLE_MAIN && r.protocol != RTPROT_SYMROUTE)
        .collect();
    defaults.sort_by_key(|r| r.effective_metric());
    // Else the router this ENI's table already has, whoever put it there: ours, after a
    // demotion took the kernel's RA default out of main for a moment (the next RA brings it
    // back at the new metric); or the network manager's copy of our persisted file, at boot
    // before the first RA (`proto static`). Ignoring the manager's copy made the boot run
    // render the file without the router, and the manager, reloaded, dropped the ENI's IPv6
    // default until the next apply (seen in the lab's dual-stack networkd guest).
    defaults
        .iter()
        .copied()
        .chain(
            snap.routes
                .iter()
                .filter(v6_default_on_link)
                .filter(|r| r.table == table),
        )
        .find_map(|r| match r.gateway {
            Some(IpAddr::V6(g)) => Some(g),
            _ => None,
        })
}

pub fn desired(eni: &ImdsEni, link: &Link, snap: &Snapshot) -> Desired {
    let t = eni.table();
    let mut d = Desired {
        rules: rules_with(eni, &vpc_bound_routes(eni, snap)),
        ..Default::default()
    };
    // Addresses: an ENI that arrives unconfigured (RHEL/CentOS 7) gets all of them; on one a
    // DHCP client configured, only the missing secondary addresses are added.
    let v4_len = eni.subnet_v4.map_or(32, |n| n.prefix_len());
    for ip in &eni.ipv4s {
        let held = snap
            .addrs
            .iter()
            .find(|a| a.index == link.index && a.ip == IpAddr::V4(*ip));
        // Missing, or the agent's own: wanted (so it is added, or kept from pruning).
        if held.is_none_or(|a| a.protocol == RTPROT_SYMROUTE) {
            d.addrs.push(AddrSpec {
                index: link.index,
                dev: link.name.clone(),
                ip: IpAddr::V4(*ip),
                prefix_len: v4_len,
                protocol: RTPROT_SYMROUTE,
                // Where the kernel keeps IFA_PROTO the protocol marks it; else the label does.
                label: if snap.ifa_proto {
                    None
                } else {
                    crate::kernel::owner_label(&link.name)
                },
            });
        }
    }
    // IPv6 addresses come by DHCPv6, which only a manager of the link runs. A link that is
    // down has no manager (Ubuntu's netplan matches eth0 alone): there the agent adds them, as
    // /128 as DHCPv6 on AWS does; once added they are its own, kept by later runs.
    for ip in &eni.ipv6s {
        let held = snap
            .addrs
            .iter()
            .find(|a| a.index == link.index && a.ip == IpAddr::V6(*ip));
        let wanted = match held {
            None => !link.up,
            Some(a) => a.protocol == RTPROT_SYMROUTE,
        };
        if wanted {
            d.addrs.push(AddrSpec {
                index: link.index,
                dev: link.name.clone(),
                ip: IpAddr::V6(*ip),
                prefix_len: 128,
                protocol: RTPROT_SYMROUTE,
                // The kernel has no labels for IPv6 addresses.
                label: None,
            });
        }
    }
    let route = |dst: IpNet, gateway: Option<IpAddr>, prefsrc: Option<IpAddr>, scope_link: bool| {
        RouteSpec {
            table: t,
            dst,
            gateway,
            oif: link.index,
            dev: link.name.clone(),
            prefsrc,
            scope_link,
            protocol: RTPROT_SYMROUTE,
            metric: None,
            nh_id: None,
        }
    };
    if let Some((primary, subnet)) = eni.v4() {
        d.routes.push(route(
            IpNet::V4(subnet),
            None,
            Some(IpAddr::V4(primary)),
            true,
        ));
        d.routes.push(route(
            IpNet::V4(Ipv4Net::default()),
            Some(IpAddr::V4(first_host(subnet))),
            None,
            false,
        ));
    }
    if !eni.ipv6s.is_empty() {
        for net in &eni.subnets_v6 {
            d.routes.push(route(IpNet::V6(*net), None, None, false));
        }
        match learned_v6_router(snap, link, t) {
            Some(gw) => d.routes.push(route(IpNet::V6(Ipv6Net::default()), Some(IpAddr::V6(gw)), None, false)),
            None => d.warnings.push(format!(
                "no IPv6 router learned on {} yet (no RA default route): IPv6 replies to other subnets stay on the main table until the next apply",
                link.name
            )),
        }
    }
    d
}

/// Another tool routes this ENI symmetrically when a foreign `from <its address> lookup T`
/// rule points at a table that sends traffic out of the ENI's own link.
pub(crate) fn foreign_owner(eni: &ImdsEni, link: &Link, snap: &Snapshot) -> Option<String> {
    let primary = eni.primary_address();
    snap.rules
        .iter()
        .filter_map(|r| r.spec.as_ref())
        .filter(|r| !is_ours_rule(r) && r.src.prefix_len() > 0 && r.src.contains(&primary))
        // Only a rule for all of the address's traffic routes it; `to` rules are partial.
        .filter(|r| r.dst.is_none() && r.suppress_prefixlength.is_none())
        .filter(|r| r.table != RT_TABLE_MAIN && r.table != 255 && r.table != 253)
        .find(|r| {
            snap.routes
                .iter()
                .any(|rt| rt.table == r.table && rt.oif == link.index)
        })
        .map(|r| format!("rule `{r}` already routes it via {}", link.name))
}

/// What the host's files say about who routes its ENIs, beside the kernel's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostOwners {
    /// ENIs that symroute's persisted files configure.
    pub persisted: Vec<Mac>,
    /// A tool that routes every ENI of this host by itself (amazon-ec2-net-utils, cloud-init's
    /// hotplug, nm-cloud-setup, SUSE cloud-netconfig), and the file that says so: it will route
    /// an ENI it has not reached yet too, so symroute steps aside before it acts, not after.
    pub native: Option<String>,
}

/// Who routes an ENI, decided once for `apply` and `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// A rule that is not symroute's already routes the ENI out of its own link (see
    /// [`foreign_owner`]).
    pub foreign: Option<String>,
    /// symroute's own rule for the ENI's table is installed.
    pub ours: bool,
    /// symroute persisted this ENI: after a reboot the network manager installs symroute's rules
    /// under its own protocol number, so a "foreign" rule is symroute's own.
    pub persisted: bool,
    /// The host's own tool for ENIs (see [`HostOwners::native`]).
    pub native: Option<String>,
}

impl Ownership {
    pub fn of(eni: &ImdsEni, link: &Link, snap: &Snapshot, host: &HostOwners) -> Ownership {
        let t = eni.table();
        Ownership {
            foreign: foreign_owner(eni, link, snap),
            ours: ours_rules(snap).any(|r| r.table == t && r.priority == t),
            persisted: host.persisted.contains(&eni.mac),
            native: host.native.clone(),
        }
    }

    /// Another tool's, which `apply` leaves alone without `--force`: a rule of another tool
    /// routes it, or the host's own tool for ENIs will (its live state included: acting before
    /// it would have two tools fight over one table).
    pub fn other(&self) -> Option<&str> {
        if self.persisted {
            None
        } else {
            self.foreign.as_deref().or(self.native.as_deref())
        }
    }

    /// Who, in words (`status`): symroute live, symroute through the network manager, another
    /// tool, or nobody.
    pub fn describe(&self) -> Option<String> {
        match (&self.foreign, self.persisted, self.ours) {
            (Some(_), true, _) => {
                Some("symroute (persisted configuration, installed by the network manager)".into())
            }
            (_, _, true) => Some("symroute".into()),
            (Some(f), false, false) => Some(f.clone()),
            (None, false, false) => self.native.clone(),
            (None, _, false) => None,
        }
    }
}

/// A DHCP default on a secondary that is as good as or better than the primary's takes over
/// the instance's outbound traffic: move it behind the primary's, keeping it. The same for the
/// IPv6 default the kernel learns from router advertisements (see `ra_demotion`).
fn demotions(eni: &ImdsEni, link: &Link, snap: &Snapshot, primary: Option<&Link>) -> Vec<Op> {
    let Some(primary) = primary else {
        return Vec::new();
    };
    if primary.index == link.index {
        return Vec::new();
    }
    let mut ops = v4_demotion(eni, link, snap, primary);
    ops.extend(ra_demotion(eni, link, snap, primary));
    ops
}

/// Where the kernel itself learns IPv6 defaults from RAs on the secondary (ifupdown, network-
/// scripts: no daemon handles RAs), the VPC router's RA puts a default in main at 1024, the
/// primary's metric: the kernel may then send any IPv6 reply, the primary's too, out of the
/// secondary, and the VPC drops it. A copy at another metric is no fix: the kernel does not
/// recognise it as the RA's and adds its own again (seen on Linux 6.18: "failed to add default
/// route", or a second route). So the link's `ra_defrtr_metric` goes to the table number and
/// the kernel's route at the tying metric is deleted; the next RA adds it back behind the
/// primary's. Until then the ENI's table keeps its copy (`learned_v6_router`).
///
/// Where a daemon handles the link's RAs (networkd, NetworkManager: the kernel's `accept_ra`
/// is off, so there is no `ra_defrtr_metric` to set), the daemon installs the default itself,
/// and networkd appends it next to the primary's: one multipath route in main whose next hops
/// the kernel picks per flow (seen in the lab's dual-stack networkd guest). The secondary's next
/// hop is deleted; the daemon adds it again at its next RA with the metric of the file it has
/// bound, which is the persisted `RouteMetric` once it has reloaded its files (networkd's
/// `after_change`).
fn ra_demotion(eni: &ImdsEni, link: &Link, snap: &Snapshot, primary: &Link) -> Vec<Op> {
    let Some((best_primary, new_metric)) = demotion_metrics(eni, snap, primary, true) else {
        return Vec::new();
    };
    let mut ops = Vec::new();
    if let Some(current) = link.ra_defrtr_metric.filter(|m| *m <= best_primary) {
        ops.push(Op::SetRaMetric {
            dev: link.name.clone(),
            metric: new_metric,
            was: current,
        });
    }
    ops.extend(
        tying_defaults(snap, link, best_primary, true)
            .filter(|r| r.protocol == RTPROT_RA)
            .map(|r| Op::DelRoute(r.clone())),
    );
    ops
}

/// The best metric of the primary's default routes of one family in main, and the metric a
/// secondary's default that ties with or beats it is moved to: behind it, the table number
/// at least. `None` where the primary has no such default (nothing to protect).
fn demotion_metrics(
    eni: &ImdsEni,
    snap: &Snapshot,
    primary: &Link,
    v6: bool,
) -> Option<(u32, u32)> {
    let best = snap
        .routes
        .iter()
        .filter(|r| main_default(r, v6) && r.oif == primary.index)
        .map(|r| r.effective_metric())
        .min()?;
    Some((best, eni.table().max(best.saturating_add(1))))
}

/// The secondary's default routes of one family in main that tie with or beat `best_primary`.
fn tying_defaults<'a>(
    snap: &'a Snapshot,
    link: &'a Link,
    best_primary: u32,
    v6: bool,
) -> impl Iterator<Item = &'a RouteSpec> {
    snap.routes.iter().filter(move |r| {
        main_default(r, v6) && r.oif == link.index && r.effective_metric() <= best_primary
    })
}

fn main_default(r: &RouteSpec, v6: bool) -> bool {
    r.table == RT_TABLE_MAIN && r.is_default() && r.dst.addr().is_ipv6() == v6
}

fn v4_demotion(eni: &ImdsEni, link: &Link, snap: &Snapshot, primary: &Link) -> Vec<Op> {
    let Some((best_primary, new_metric)) = demotion_metrics(eni, snap, primary, false) else {
        return Vec::new();
    };
    tying_defaults(snap, link, best_primary, false)
        .flat_map(|old| {
            let new = RouteSpec {
                metric: Some(new_metric),
                // The copy by gateway and device: it outlives a nexthop object the DHCP client
                // may delete with its own route.
                nh_id: None,
                ..old.clone()
            };
            let exists = snap.routes.iter().any(|r| r.same_route(&new));
            let mut v = Vec::new();
            if !exists {
                v.push(Op::AddRoute(new));
            }
            v.push(Op::DelRoute(old.clone()));
            v
        })
        .collect()
}

/// Changes that bring the kernel from `snap` to `want` for one ENI. Pruning (scoped to this
/// ENI's table, rule priority and link) only touches the agent's own state.
/// With `take_over`, only the agent's own rules count as present, so that it installs (and
/// from then on owns) its copy next to another tool's.
fn diff_eni(
    eni: &ImdsEni,
    link: &Link,
    want: &Desired,
    snap: &Snapshot,
    prune: bool,
    take_over: bool,
) -> Vec<Op> {
    let mut ops = Vec::new();
    if !link.up {
        ops.push(Op::LinkUp {
            index: link.index,
            dev: link.name.clone(),
        });
    }
    for a in &want.addrs {
        if !snap
            .addrs
            .iter()
            .any(|k| k.index == a.index && k.ip == a.ip)
        {
            ops.push(Op::AddAddr(a.clone()));
        }
    }
    for r in &want.routes {
        if !snap.routes.iter().any(|k| k.same_route(r)) {
            ops.push(Op::AddRoute(r.clone()));
        }
    }
    for r in &want.rules {
        if !snap
            .rules
            .iter()
            .filter_map(|k| k.spec.as_ref())
            .any(|k| k.same_rule(r) && (!take_over || is_ours_rule(k)))
        {
            ops.push(Op::AddRule(r.clone()));
        }
    }
    if prune {
        let t = eni.table();
        for r in ours_rules(snap).filter(|r| r.owner_table() == t) {
            if !want.rules.iter().any(|w| w.same_rule(r)) {
                ops.push(Op::DelRule(r.clone()));
            }
        }
        for r in ours_routes(snap).filter(|r| r.table == t) {
            if !want.routes.iter().any(|w| w.same_route(r)) {
                ops.push(Op::DelRoute(r.clone()));
            }
        }
        for a in ours_addrs(snap).filter(|a| a.index == link.index) {
            if !want.addrs.iter().any(|w| w.ip == a.ip) {
                ops.push(Op::DelAddr(a.clone()));
            }
        }
        // Re-attached at another device number: what we installed for it under its old table.
        // An address belongs to one ENI, and table T holds only ENI T's link, so rules for its
        // addresses and routes over its link in any other table are its own, stale.
        let srcs: Vec<IpNet> = desired_rules(eni).into_iter().map(|r| r.src).collect();
        for r in ours_rules(snap).filter(|r| r.owner_table() != t && srcs.contains(&r.src)) {
            ops.push(Op::DelRule(r.clone()));
        }
        for r in ours_routes(snap)
            .filter(|r| r.table != t && r.table >= TABLE_BASE && r.oif == link.index)
        {
            ops.push(Op::DelRoute(r.clone()));
        }
    }
    ops
}

fn primary_link<'a>(inst: &Instance, snap: &'a Snapshot) -> Option<&'a Link> {
    let mac = inst.primary_mac.or_else(|| {
        inst.enis
            .iter()
            .find(|e| e.is_primary_device())
            .map(|e| e.mac)
    })?;
    snap.link_by_mac(mac)
}

/// Everything the agent owns that no ENI of the instance wants: the state of detached ENIs,
/// of addresses unassigned since, of tables renumbered.
pub fn stale(inst: &Instance, snap: &Snapshot) -> Vec<Op> {
    let mut keep_rules = Vec::new();
    let mut keep_routes = Vec::new();
    let mut keep_addrs: Vec<(u32, IpAddr)> = Vec::new();
    // An ENI whose numbers are not settled (network-card not published yet) computes the wrong
    // table: keep whatever is ours on its link and for its addresses, untouched.
    let mut unsettled_srcs: Vec<IpNet> = Vec::new();
    let mut unsettled_links: Vec<u32> = Vec::new();
    for eni in inst.enis.iter().filter(|e| !inst.is_settled(e)) {
        unsettled_srcs.extend(eni.ipv4s.iter().map(|ip| IpNet::V4(Ipv4Net::from(*ip))));
        unsettled_srcs.extend(eni.prefixes_v4.iter().map(|p| IpNet::V4(*p)));
        unsettled_srcs.extend(eni.prefixes_v6.iter().map(|p| IpNet::V6(*p)));
        unsettled_srcs.extend(eni.ipv6s.iter().map(|ip| IpNet::V6(Ipv6Net::from(*ip))));
        if let Some(link) = snap.link_by_mac(eni.mac) {
            unsettled_links.push(link.index);
            keep_addrs.extend(eni.ipv4s.iter().map(|ip| (link.index, IpAddr::V4(*ip))));
        }
    }
    for eni in inst.enis.iter().filter(|e| inst.is_settled(e)) {
        if let Some(link) = snap.link_by_mac(eni.mac) {
            let d = desired(eni, link, snap);
            keep_rules.extend(d.rules);
            keep_routes.extend(d.routes);
            keep_addrs.extend(eni.ipv4s.iter().map(|ip| (link.index, IpAddr::V4(*ip))));
        } else {
            keep_rules.extend(desired_rules(eni));
        }
    }
    let mut ops = Vec::new();
    ops.extend(
        ours_rules(snap)
            .filter(|r| !keep_rules.iter().any(|k| k.same_rule(r)))
            .filter(|r| !unsettled_srcs.contains(&r.src))
            .map(|r| Op::DelRule(r.clone())),
    );
    ops.extend(
        ours_routes(snap)
            .filter(|r| !keep_routes.iter().any(|k| k.same_route(r)))
            .filter(|r| !unsettled_links.contains(&r.oif))
            .map(|r| Op::DelRoute(r.clone())),
    );
    ops.extend(
        ours_addrs(snap)
            .filter(|a| !keep_addrs.contains(&(a.index, a.ip)))
            .map(|a| Op::DelAddr(a.clone())),
    );
    ops
}

/// Everything the agent owns for one ENI (or for all, with `None`).
pub(crate) fn owned(snap: &Snapshot, eni: Option<(&ImdsEni, Option<&Link>)>) -> Vec<Op> {
    let (table, index) = match eni {
        Some((e, l)) => (Some(e.table()), l.map(|l| l.index)),
        None => (None, None),
    };
    let mut ops = Vec::new();
    ops.extend(
        ours_rules(snap)
            .filter(|r| table.is_none_or(|t| r.owner_table() == t))
            .map(|r| Op::DelRule(r.clone())),
    );
    ops.extend(
        ours_routes(snap)
            .filter(|r| table.is_none_or(|t| r.table == t))
            .map(|r| Op::DelRoute(r.clone())),
    );
    if eni.is_none() || index.is_some() {
        ops.extend(
            ours_addrs(snap)
                .filter(|a| index.is_none_or(|i| a.index == i))
                .map(|a| Op::DelAddr(a.clone())),
        );
        // The RA metric `ra_demotion` set (a table number): back to the kernel's default.
        ops.extend(
            snap.links
                .iter()
                .filter(|l| index.is_none_or(|i| l.index == i))
                .filter_map(|l| match l.ra_defrtr_metric {
                    Some(m) if is_table_number(m) => Some(Op::SetRaMetric {
                        dev: l.name.clone(),
                        metric: IP6_DEFAULT_METRIC,
                        was: m,
                    }),
                    _ => None,
                }),
        );
    }
    ops
}

/// A number in the range of symroute's tables (every card, every device).
fn is_table_number(n: u32) -> bool {
    (TABLE_BASE..TABLE_BASE + DEVICES_PER_CARD * (MAX_NETWORK_CARD + 1)).contains(&n)
}

/// The plan for `apply`. ENIs without a kernel link are reported as missing and left alone.
/// `persisted`: MACs of ENIs whose routing symroute persisted. After a reboot the network
/// manager installs those rules under its own protocol number; they are symroute's, not
/// another tool's.
pub fn plan_apply(
    inst: &Instance,
    snap: &Snapshot,
    sel: &Target,
    force: bool,
    host: &HostOwners,
) -> Plan {
    let primary = primary_link(inst, snap);
    let all = *sel == Target::All;
    let mut plan = Plan::default();
    for eni in inst.enis.iter().filter(|e| sel.matches(e)) {
        let link = snap.link_by_mac(eni.mac);
        let mut p = EniPlan {
            eni: eni.clone(),
            link: link.cloned(),
            status: EniStatus::Configure,
            owner: None,
            ops: Vec::new(),
            warnings: Vec::new(),
        };
        if let Some(why) = inst.unsettled(eni) {
            p.status = EniStatus::NotReady;
            p.warnings.push(why);
            plan.enis.push(p);
            continue;
        }
        if let Some(other) = table_claimed_by_another(inst, eni) {
            p.status = EniStatus::TableConflict;
            p.warnings.push(format!(
                "table {} is also claimed by {} (device {} on card {}): neither is changed",
                eni.table(),
                other.eni_id,
                other.device_number,
                other.network_card
            ));
            plan.enis.push(p);
            continue;
        }
        match link {
            None => p.status = EniStatus::Missing,
            Some(link) => {
                p.owner = Ownership::of(eni, link, snap, host)
                    .other()
                    .map(str::to_owned);
                if p.owner.is_some() && !force {
                    p.status = EniStatus::ManagedByOther;
                } else {
                    let want = desired(eni, link, snap);
                    p.ops = diff_eni(eni, link, &want, snap, !all, p.owner.is_some());
                    p.ops.extend(demotions(eni, link, snap, primary));
                    p.warnings = want.warnings;
                }
            }
        }
        plan.enis.push(p);
    }
    if all {
        plan.prune = stale(inst, snap);
    }
    plan
}

/// Another secondary ENI of the instance, settled or not, whose numbers give the same table: two
/// ENIs planned into one table would take each other's routes.
fn table_claimed_by_another<'a>(inst: &'a Instance, eni: &ImdsEni) -> Option<&'a ImdsEni> {
    inst.enis.iter().find(|o| {
        o.mac != eni.mac
            && inst.primary_mac != Some(o.mac)
            && inst.is_settled(o)
            && o.table() == eni.table()
    })
}

/// The plan for `remove`. An ENI that is no longer attached (the usual case after a detach)
/// cannot be told apart by table any more: its state is whatever is stale.
pub fn plan_remove(inst: &Instance, snap: &Snapshot, sel: &Target) -> (Plan, Option<String>) {
    let mut plan = Plan::default();
    let mut note = None;
    match sel {
        Target::All => plan.prune = owned(snap, None),
        Target::Stale => plan.prune = stale(inst, snap),
        Target::Eni(_) | Target::Mac(_) => match inst.enis.iter().find(|e| sel.matches(e)) {
            Some(eni) => {
                let link = snap.link_by_mac(eni.mac);
                plan.enis.push(EniPlan {
                    eni: eni.clone(),
                    link: link.cloned(),
                    status: EniStatus::Configure,
                    owner: None,
                    ops: owned(snap, Some((eni, link))),
                    warnings: Vec::new(),
                });
            }
            None => {
                note = Some(format!(
                    "{} is not attached (any more); removing the state of every detached ENI instead",
                    sel.describe()
                ));
                plan.prune = stale(inst, snap);
            }
        },
    }
    (plan, note)
}

/// Off-link destinations for route lookups. Only asked of the kernel's FIB; nothing is sent.
pub(crate) fn probe_destinations(eni: &ImdsEni) -> (Ipv4Addr, Ipv6Addr) {
    let v4 = ["192.0.2.1", "198.51.100.1", "203.0.113.1"]
        .iter()
        .map(|s| s.parse::<Ipv4Addr>().expect("literal"))
        .find(|ip| !eni.subnet_v4.is_some_and(|n| n.contains(ip)))
        .expect("a subnet cannot hold all three documentation ranges");
    let v6 = ["2001:db8::1", "3fff::1"]
        .iter()
        .map(|s| s.parse::<Ipv6Addr>().expect("literal"))
        .find(|ip| !eni.subnets_v6.iter().any(|n| n.contains(ip)))
        .expect("a subnet cannot hold both documentation ranges");
    (v4, v6)
}

#[cfg(test)]
mod tests {
    //! The planner on plain data: no root, no kernel, no IMDS.
    use super::*;
    use crate::ops::KernelRule;

    fn eni(mac: &str, id: &str, device: u32, card: Option<u32>, ip: &str) -> ImdsEni {
        ImdsEni {
            mac: mac.parse().unwrap(),
            eni_id: id.parse().unwrap(),
            device_number: device,
            network_card: card.unwrap_or(0),
            card_published: card.is_some(),
            ipv4s: vec![ip.parse().unwrap()],
            subnet_v4: Some("10.0.1.0/24".parse().unwrap()),
            prefixes_v4: vec![],
            prefixes_v6: vec![],
            ipv6s: vec![],
            subnets_v6: vec![],
            vpc_v4: vec!["10.0.0.0/16".parse().unwrap()],
            vpc_v6: vec![],
        }
    }

    fn link(index: u32, name: &str, mac: &str) -> Link {
        Link {
            index,
            name: name.into(),
            mac: Some(mac.parse().unwrap()),
            up: true,
            mtu: 1500,
            ra_defrtr_metric: None,
        }
    }

    /// The plan of the ENI with this MAC.
    fn of<'a>(plan: &'a Plan, mac: &str) -> &'a EniPlan {
        let mac: Mac = mac.parse().unwrap();
        plan.enis.iter().find(|p| p.eni.mac == mac).unwrap()
    }

    const P: &str = "0a:00:00:00:00:00";
    const A: &str = "0a:00:00:00:00:01";
    const B: &str = "0a:00:00:00:00:02";

    /// A multi-card instance: eth1 is device 1 on card 0 (table 10001, configured); eth2 is
    /// device 1 on card 1 but IMDS has not published its network-card yet.
    fn multi_card(b_card: Option<u32>) -> (Instance, Snapshot) {
        let inst = Instance {
            instance_id: Some("i-0123456789abcdef0".into()),
            primary_mac: Some(P.parse().unwrap()),
            enis: vec![
                eni(P, "eni-00000000000000000", 0, Some(0), "10.0.1.10"),
                eni(A, "eni-00000000000000001", 1, Some(0), "10.0.1.11"),
                eni(B, "eni-00000000000000002", 1, b_card, "10.0.1.12"),
            ],
            unusable: vec![],
        };
        let snap = Snapshot {
            links: vec![
                link(1, "lo", "00:00:00:00:00:00"),
                link(2, "eth0", P),
                link(3, "eth1", A),
                link(4, "eth2", B),
            ],
            ..Snapshot::default()
        };
        (inst, snap)
    }

    /// The kernel's RA default on eth1 ties with eth0's in main: apply moves the link's RA
    /// metric behind the primary's (the table number) and drops the tying route; once the next
    /// RA has put it back at that metric, a re-apply changes nothing; remove restores 1024.
    #[test]
    fn a_kernel_ra_default_that_ties_with_the_primarys_is_demoted_through_the_links_ra_metric() {
        let inst = Instance {
            instance_id: Some("i-0123456789abcdef0".into()),
            primary_mac: Some(P.parse().unwrap()),
            enis: vec![
                eni(P, "eni-00000000000000000", 0, Some(0), "10.0.1.10"),
                eni(A, "eni-00000000000000001", 1, Some(0), "10.0.1.11"),
            ],
            unusable: vec![],
        };
        let router: IpAddr = "fe80::1".parse().unwrap();
        let ra_default = |link: &Link, metric: u32| RouteSpec {
            table: RT_TABLE_MAIN,
            dst: "::/0".parse().unwrap(),
            gateway: Some(router),
            oif: link.index,
            dev: link.name.clone(),
            prefsrc: None,
            scope_link: false,
            protocol: RTPROT_RA,
            metric: Some(metric),
            nh_id: None,
        };
        let eth0 = link(2, "eth0", P);
        let mut eth1 = link(3, "eth1", A);
        eth1.ra_defrtr_metric = Some(1024);
        let mut snap = Snapshot {
            links: vec![eth0.clone(), eth1.clone()],
            routes: vec![ra_default(&eth0, 1024), ra_default(&eth1, 1024)],
            ..Snapshot::default()
        };
        let ops: Vec<String> =
            plan_apply(&inst, &snap, &Target::All, false, &HostOwners::default())
                .ops()
                .iter()
                .map(|o| o.to_string())
                .collect();
        assert!(
            ops.contains(&"sysctl -w net/ipv6/conf/eth1/ra_defrtr_metric=10001".to_string()),
            "{ops:?}"
        );
        assert!(
            ops.iter()
                .any(|o| o.starts_with("ip -6 route del default") && o.contains("dev eth1")),
            "{ops:?}"
        );
        assert!(!ops.iter().any(|o| o.contains("eth0")), "{ops:?}");

        // After the next RA: eth1's default behind eth0's, nothing to demote.
        snap.links[1].ra_defrtr_metric = Some(10001);
        snap.routes[1] = ra_default(&eth1, 10001);
        let again = plan_apply(&inst, &snap, &Target::All, false, &HostOwners::default());
        assert!(
            !again
                .ops()
                .iter()
                .any(|o| matches!(o, Op::SetRaMetric { .. } | Op::DelRoute(_))),
            "{:?}",
            again.ops()
        );
        // A daemon handles RAs on eth1 (no kernel RA metric): no sysctl, but its default that
        // ties is taken out of main (the daemon's next RA adds it with its file's metric).
        snap.links[1].ra_defrtr_metric = None;
        snap.routes[1] = ra_default(&eth1, 1024);
        let daemon = plan_apply(&inst, &snap, &Target::All, false, &HostOwners::default());
        assert!(!daemon
            .ops()
            .iter()
            .any(|o| matches!(o, Op::SetRaMetric { .. })));
        assert!(
            daemon
                .ops()
                .iter()
                .any(|o| matches!(o, Op::DelRoute(r) if r == &snap.routes[1])),
            "{:?}",
            daemon.ops()
        );

        // remove puts the kernel's default back.
        snap.links[1].ra_defrtr_metric = Some(10001);
        let (rm, _) = plan_remove(&inst, &snap, &Target::All);
        assert!(rm.prune.contains(&Op::SetRaMetric {
            dev: "eth1".into(),
            metric: 1024,
            was: 10001
        }));
    }

    /// At boot, before the first RA, the only trace of the ENI's IPv6 router is the copy the
    /// network manager installed from symroute's own persisted file (`proto static`, in the
    /// ENI's table). That is the router: a run that ignored it rendered the file without it,
    /// and the reloaded manager dropped the ENI's IPv6 default (the lab's networkd reboot).
    #[test]
    fn before_the_first_ra_the_managers_copy_of_the_persisted_router_is_the_router() {
        let mut a = eni(A, "eni-00000000000000001", 1, Some(0), "10.0.1.11");
        a.ipv6s = vec!["2600:1f18:1:1::11".parse().unwrap()];
        a.subnets_v6 = vec!["2600:1f18:1:1::/64".parse().unwrap()];
        let eth1 = link(3, "eth1", A);
        let router: Ipv6Addr = "fe80::5eff:fe00:101".parse().unwrap();
        let default_in = |table: u32, protocol: u8| RouteSpec {
            table,
            dst: "::/0".parse().unwrap(),
            gateway: Some(IpAddr::V6(router)),
            oif: eth1.index,
            dev: eth1.name.clone(),
            prefsrc: None,
            scope_link: false,
            protocol,
            metric: Some(1024),
            nh_id: None,
        };
        const RTPROT_STATIC: u8 = 4;
        let mut snap = Snapshot {
            links: vec![link(2, "eth0", P), eth1.clone()],
            routes: vec![default_in(10001, RTPROT_STATIC)],
            ..Snapshot::default()
        };
        assert_eq!(learned_v6_router(&snap, &eth1, 10001), Some(router));
        let d = desired(&a, &eth1, &snap);
        assert!(
            d.routes.iter().any(|r| r.dst.addr().is_ipv6()
                && r.is_default()
                && r.gateway == Some(IpAddr::V6(router))),
            "{:?}",
            d.routes
        );
        assert!(d.warnings.is_empty(), "{:?}", d.warnings);
        // Another table's default on the link names no router of this ENI's.
        snap.routes = vec![default_in(10002, RTPROT_STATIC)];
        assert_eq!(learned_v6_router(&snap, &eth1, 10001), None);
        assert_eq!(desired(&a, &eth1, &snap).warnings.len(), 1);
    }

    #[test]
    fn an_eni_without_its_network_card_is_not_ready_and_takes_no_table() {
        let (inst, snap) = multi_card(None);
        let plan = plan_apply(&inst, &snap, &Target::All, false, &HostOwners::default());
        let b = of(&plan, B);
        assert_eq!(b.status, EniStatus::NotReady, "{:?}", b.warnings);
        assert!(b.ops.is_empty());
        // eth1 keeps table 10001 to itself: nothing planned touches it on eth2's behalf.
        let a = of(&plan, A);
        assert_eq!(a.status, EniStatus::Configure);
        for op in plan.ops() {
            assert!(!op.to_string().contains("eth2"), "{op}");
        }
        // Once published, it gets its own table.
        let (inst, snap) = multi_card(Some(1));
        let plan = plan_apply(&inst, &snap, &Target::All, false, &HostOwners::default());
        let b = of(&plan, B);
        assert_eq!((b.status, b.eni.table()), (EniStatus::Configure, 10101));
    }

    #[test]
    fn two_settled_enis_with_one_table_are_both_left_alone() {
        let (inst, snap) = multi_card(Some(0));
        let plan = plan_apply(&inst, &snap, &Target::All, false, &HostOwners::default());
        for mac in [A, B] {
            let p = of(&plan, mac);
            assert_eq!(p.status, EniStatus::TableConflict, "{mac}");
            assert!(p.ops.is_empty(), "{mac}");
        }
    }

    #[test]
    fn stale_pruning_keeps_the_state_of_an_eni_that_is_not_settled() {
        // eth2 was configured in table 10101 before; IMDS now briefly omits its network-card.
        let (inst, mut snap) = multi_card(None);
        let rule = RuleSpec::from_src(
            10101,
            "10.0.1.12/32".parse().unwrap(),
            10101,
            RTPROT_SYMROUTE,
        );
        snap.rules.push(KernelRule {
            spec: Some(rule.clone()),
        });
        let pruned = stale(&inst, &snap);
        assert!(pruned.is_empty(), "{pruned:?}");
        // With its card published as 1 the rule is exactly what it wants, so still kept.
        let (inst, _) = multi_card(Some(1));
        assert!(stale(&inst, &snap).is_empty());
        // Detached (no longer in IMDS), it is pruned.
        let mut gone = inst.clone();
        gone.enis.pop();
        assert_eq!(stale(&gone, &snap), vec![Op::DelRule(rule)]);
    }

    fn main_route(dst: &str, gateway: Option<&str>, oif: u32, dev: &str) -> RouteSpec {
        RouteSpec {
            table: RT_TABLE_MAIN,
            dst: dst.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            oif,
            dev: dev.into(),
            prefsrc: None,
            scope_link: gateway.is_none(),
            protocol: 4,
            metric: None,
            nh_id: None,
        }
    }

    #[test]
    fn routes_into_the_vpc_from_main_stay_on_the_eni_and_local_ones_do_not() {
        let (inst, mut snap) = multi_card(Some(1));
        // On-premises via the subnet router on eth0: VPC traffic to the fabric.
        snap.routes
            .push(main_route("192.168.0.0/16", Some("10.0.1.1"), 2, "eth0"));
        // docker0 and a VPN: local peers, left to main.
        snap.routes
            .push(main_route("172.17.0.0/16", None, 9, "docker0"));
        snap.routes
            .push(main_route("10.8.0.0/24", Some("10.8.0.2"), 10, "tun0"));
        let a = &inst.enis[1];
        let link = snap.link_by_mac(a.mac).unwrap().clone();
        let want = desired(a, &link, &snap);
        let lines: Vec<String> = want.rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            lines,
            [
                "from 10.0.1.11/32 to 10.0.0.0/16 lookup 10001 priority 8001 protocol 177",
                "from 10.0.1.11/32 to 192.168.0.0/16 lookup 10001 priority 8001 protocol 177",
                "from 10.0.1.11/32 lookup 254 suppress_prefixlength 0 priority 9001 protocol 177",
                "from 10.0.1.11/32 lookup 10001 priority 10001 protocol 177",
            ]
        );
        // `apply --all` keeps them: stale pruning sees what desired() wants.
        for r in &want.rules {
            snap.rules.push(KernelRule {
                spec: Some(r.clone()),
            });
        }
        assert!(stale(&inst, &snap).is_empty());
        // Each is this ENI's, by table or (main) by priority.
        assert!(want.rules.iter().all(|r| r.owner_table() == 10001));
    }
}
