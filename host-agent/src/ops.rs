//! Plain data for kernel routing state and for the changes the agent makes to it. Everything
//! here is printable as the equivalent `ip` command, for `--dry-run` and the report.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::model::Mac;

/// The kernel's default metric for IPv6 routes given none.
pub(crate) const IP6_DEFAULT_METRIC: u32 = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<Mac>,
    pub up: bool,
    /// The link's MTU (0: not known). A VPC's DHCP hands out 9001.
    pub mtu: u32,
    /// The metric the kernel itself gives the IPv6 default routes it learns from router
    /// advertisements on this link (`ra_defrtr_metric`); `None` where the kernel takes no RA
    /// default here (a daemon such as networkd or NetworkManager handles RAs, or
    /// `accept_ra`/`accept_ra_defrtr` say no) or cannot be told another metric (Linux < 5.18).
    pub ra_defrtr_metric: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddrSpec {
    pub index: u32,
    pub dev: String,
    pub ip: IpAddr,
    pub prefix_len: u8,
    /// `IFA_PROTO`; the agent marks its own addresses with `RTPROT_SYMROUTE`.
    pub protocol: u8,
    /// The IPv4 label `<dev>:sr` that marks the agent's addresses where the kernel drops
    /// `IFA_PROTO` (before Linux 6.1); `None` where the protocol is kept, and for others'.
    pub label: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteSpec {
    pub table: u32,
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
    pub dev: String,
    pub prefsrc: Option<IpAddr>,
    /// Link scope for on-link (connected) routes, universe otherwise.
    pub scope_link: bool,
    pub protocol: u8,
    pub metric: Option<u32>,
    /// The nexthop object the route holds (`nhid`, RTA_NH_ID), as systemd-networkd 257 installs
    /// its RA defaults. A delete must name it: for such a route the kernel ignores the gateway
    /// and the device of a delete and takes the first route of that destination and metric
    /// (checked on Linux 6.18: deleting eth1's tying default by `via ... dev eth1` took eth0's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nh_id: Option<u32>,
}

impl RouteSpec {
    /// The metric as the kernel stores it, so desired and dumped routes compare equal.
    pub(crate) fn effective_metric(&self) -> u32 {
        match (self.metric, self.dst) {
            (Some(m), _) => m,
            (None, IpNet::V6(_)) => IP6_DEFAULT_METRIC,
            (None, IpNet::V4(_)) => 0,
        }
    }

    /// Same route in the kernel's eyes (protocol aside).
    pub fn same_route(&self, other: &RouteSpec) -> bool {
        self.table == other.table
            && self.dst == other.dst
            && self.gateway == other.gateway
            && self.oif == other.oif
            && self.prefsrc == other.prefsrc
            && self.effective_metric() == other.effective_metric()
    }

    pub(crate) fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }
}

/// The kernel's main table.
pub const RT_TABLE_MAIN: u32 = 254;
/// Routes the kernel learned from router advertisements (`proto ra`).
pub const RTPROT_RA: u8 = 9;

/// A rule `from <src> [to <dst>] lookup <table> [suppress_prefixlength <n>]`. The agent installs
/// three kinds per address of an ENI (model.rs has the priorities): to each VPC block via the
/// ENI's table, main with its default routes suppressed (local peers), and the ENI's table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleSpec {
    pub priority: u32,
    pub src: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpNet>,
    pub table: u32,
    /// Routes of this prefix length or shorter found in `table` are ignored (the lookup goes
    /// on to the next rule): 0 skips only default routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppress_prefixlength: Option<u8>,
    pub protocol: u8,
}

impl RuleSpec {
    /// `from <src> lookup <table>` at `priority`.
    pub fn from_src(priority: u32, src: IpNet, table: u32, protocol: u8) -> RuleSpec {
        RuleSpec {
            priority,
            src,
            dst: None,
            table,
            suppress_prefixlength: None,
            protocol,
        }
    }

    /// Same selector and target (protocol aside).
    pub fn same_rule(&self, other: &RuleSpec) -> bool {
        self.priority == other.priority
            && self.src == other.src
            && self.dst == other.dst
            && self.table == other.table
            && self.suppress_prefixlength == other.suppress_prefixlength
    }

    /// The ENI table this rule serves: its own table, or for the local-peers rule (which looks
    /// up main) the table its priority was derived from.
    pub fn owner_table(&self) -> u32 {
        if self.table == RT_TABLE_MAIN && self.suppress_prefixlength.is_some() {
            self.priority + crate::model::LOCAL_RULE_OFFSET
        } else {
            self.table
        }
    }
}

/// A rule `fwmark <mark>/<mask> lookup <table>` for one family: replies of a flow that arrived
/// on an ENI, marked by the connmark mode's nftables table (connmark.rs), take its table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MarkRuleSpec {
    pub priority: u32,
    pub v6: bool,
    pub mark: u32,
    pub mask: u32,
    pub table: u32,
    pub protocol: u8,
}

impl MarkRuleSpec {
    /// Same selector and target (protocol aside).
    pub fn same_rule(&self, other: &MarkRuleSpec) -> bool {
        self.priority == other.priority
            && self.v6 == other.v6
            && self.mark == other.mark
            && self.mask == other.mask
            && self.table == other.table
    }
}

/// A rule as dumped from the kernel; only `from <src> [to <dst>] lookup <table>
/// [suppress_prefixlength <n>]` rules become `spec`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRule {
    pub spec: Option<RuleSpec>,
}

/// One change to the kernel. Each has an exact inverse, which is what rollback runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    LinkUp {
        index: u32,
        dev: String,
    },
    LinkDown {
        index: u32,
        dev: String,
    },
    AddAddr(AddrSpec),
    DelAddr(AddrSpec),
    AddRoute(RouteSpec),
    DelRoute(RouteSpec),
    AddRule(RuleSpec),
    DelRule(RuleSpec),
    AddMarkRule(MarkRuleSpec),
    DelMarkRule(MarkRuleSpec),
    /// The metric of the IPv6 default routes the kernel learns from RAs on a link.
    SetRaMetric {
        dev: String,
        metric: u32,
        was: u32,
    },
}

impl Op {
    pub fn inverse(&self) -> Op {
        match self.clone() {
            Op::LinkUp { index, dev } => Op::LinkDown { index, dev },
            Op::LinkDown { index, dev } => Op::LinkUp { index, dev },
            Op::AddAddr(a) => Op::DelAddr(a),
            Op::DelAddr(a) => Op::AddAddr(a),
            Op::AddRoute(r) => Op::DelRoute(r),
            Op::DelRoute(r) => Op::AddRoute(r),
            Op::AddRule(r) => Op::DelRule(r),
            Op::DelRule(r) => Op::AddRule(r),
            Op::AddMarkRule(r) => Op::DelMarkRule(r),
            Op::DelMarkRule(r) => Op::AddMarkRule(r),
            Op::SetRaMetric { dev, metric, was } => Op::SetRaMetric {
                dev,
                metric: was,
                was: metric,
            },
        }
    }
}

/// The protocol as `ip` accepts it: a name only where iproute2's default rt_protos has one
/// (`proto symroute` is refused unless the host's rt_protos says so), else the number.
fn proto_name(p: u8) -> String {
    match p {
        2 => "kernel".into(),
        3 => "boot".into(),
        4 => "static".into(),
        9 => "ra".into(),
        16 => "dhcp".into(),
        n => n.to_string(),
    }
}

/// `-6 ` for IPv6, nothing for IPv4: what goes between `ip ` and the object.
pub(crate) fn family_flag(v6: bool) -> &'static str {
    if v6 {
        "-6 "
    } else {
        ""
    }
}

fn family(net: &IpNet) -> &'static str {
    family_flag(matches!(net, IpNet::V6(_)))
}

// The one renderer of routes and rules in `ip` syntax: the report's commands and the files that
// other tools run (network-scripts' `route-`/`rule-` files, ifupdown's hooks, persist/ipcmd.rs)
// say them alike. Tables and protocols as numbers where `ip` has no name for them in its default
// rt_tables/rt_protos; the persisted files' lines are unchanged from before the renderers were
// one (a changed line would rewrite every host's files at an upgrade).

impl fmt::Display for RouteSpec {
    /// `<dst> [via <gw>] dev <dev> [scope link] [src <ip>] [metric <m>] [table <t>] proto <p>`,
    /// as `ip route add|del|replace` takes it (the table left out for main).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default() {
            write!(f, "default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        // `ip` takes a nexthop id instead of a gateway and a device, never beside them.
        if let Some(id) = self.nh_id {
            write!(f, " nhid {id}")?;
        } else {
            if let Some(g) = self.gateway {
                write!(f, " via {g}")?;
            }
            write!(f, " dev {}", self.dev)?;
            if self.scope_link {
                write!(f, " scope link")?;
            }
            if let Some(s) = self.prefsrc {
                write!(f, " src {s}")?;
            }
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        if self.table != RT_TABLE_MAIN {
            write!(f, " table {}", self.table)?;
        }
        write!(f, " proto {}", proto_name(self.protocol))
    }
}

impl fmt::Display for RuleSpec {
    /// `from <src> [to <dst>] lookup <t> [suppress_prefixlength <n>] priority <p> protocol
    /// <proto>`, as `ip rule add|del` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "from {}", self.src)?;
        if let Some(d) = self.dst {
            write!(f, " to {d}")?;
        }
        write!(f, " lookup {}", self.table)?;
        if let Some(n) = self.suppress_prefixlength {
            write!(f, " suppress_prefixlength {n}")?;
        }
        write!(
            f,
            " priority {} protocol {}",
            self.priority,
            proto_name(self.protocol)
        )
    }
}

impl fmt::Display for MarkRuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fwmark {:#x}/{:#x} lookup {} priority {} protocol {}",
            self.mark,
            self.mask,
            self.table,
            self.priority,
            proto_name(self.protocol)
        )
    }
}

impl fmt::Display for AddrSpec {
    /// As `ip` (iproute2 6.1, which has no `proto` for addresses) can say it: with the label
    /// where the agent sets one (kernels that drop `IFA_PROTO`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} dev {}", self.ip, self.prefix_len, self.dev)?;
        if let Some(l) = &self.label {
            write!(f, " label {l}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::LinkUp { dev, .. } => write!(f, "ip link set {dev} up"),
            Op::LinkDown { dev, .. } => write!(f, "ip link set {dev} down"),
            Op::AddAddr(a) => write!(f, "ip {}addr add {a}", family(&IpNet::from(a.ip))),
            Op::DelAddr(a) => write!(f, "ip {}addr del {a}", family(&IpNet::from(a.ip))),
            Op::AddRoute(r) => write!(f, "ip {}route add {r}", family(&r.dst)),
            Op::DelRoute(r) => write!(f, "ip {}route del {r}", family(&r.dst)),
            Op::AddRule(r) => write!(f, "ip {}rule add {r}", family(&r.src)),
            Op::DelRule(r) => write!(f, "ip {}rule del {r}", family(&r.src)),
            Op::AddMarkRule(r) => write!(f, "ip {}rule add {r}", family_flag(r.v6)),
            Op::DelMarkRule(r) => write!(f, "ip {}rule del {r}", family_flag(r.v6)),
            // Slashes: a device name may hold dots (VLANs), which sysctl reads as separators.
            Op::SetRaMetric { dev, metric, .. } => {
                write!(f, "sysctl -w net/ipv6/conf/{dev}/ra_defrtr_metric={metric}")
            }
        }
    }
}
