//! The kernel side, over one rtnetlink handle with explicit messages: dump links, addresses,
//! rules and routes into plain data, run `Op`s, and ask the kernel for route lookups.

use std::net::IpAddr;

use futures_util::stream::StreamExt;
use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
    AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::{Error, Result};
use crate::model::{Mac, RTPROT_SYMROUTE};
use crate::ops::{AddrSpec, KernelRule, Link, MarkRuleSpec, Op, RouteSpec, RuleSpec};

use libc::{EADDRNOTAVAIL, EEXIST, ENODEV, ENOENT, ESRCH};

/// Everything the planner needs to know about the kernel's current routing state.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The kernel keeps `IFA_PROTO` on addresses (Linux 6.1 and later), so the agent's own
    /// addresses need no `<dev>:sr` label to be told apart.
    pub ifa_proto: bool,
    pub links: Vec<Link>,
    pub addrs: Vec<AddrSpec>,
    pub rules: Vec<KernelRule>,
    /// Rules `fwmark <mark>/<mask> lookup <table>` (no other selector): the connmark mode's.
    pub marks: Vec<MarkRuleSpec>,
    pub routes: Vec<RouteSpec>,
}

impl Snapshot {
    pub(crate) fn link_by_mac(&self, mac: Mac) -> Option<&Link> {
        self.links.iter().find(|l| l.mac == Some(mac))
    }

    pub(crate) fn link_by_index(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }
}

/// What running one op did: changed the kernel, or found it already so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Changed,
    AlreadyThere,
}

pub struct Kernel {
    rt: tokio::runtime::Runtime,
    handle: rtnetlink::Handle,
    /// Netlink requests sent, for the report and the "no-op re-apply" promise.
    pub requests: u32,
}

impl Kernel {
    pub(crate) fn connect() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| Error::netlink("starting the runtime", NlError::Io(e.to_string())))?;
        let (conn, handle, _) =
            rt.block_on(async { rtnetlink::new_connection() })
                .map_err(|e| {
                    Error::netlink(
                        "opening the route netlink socket",
                        NlError::Io(e.to_string()),
                    )
                })?;
        rt.spawn(conn);
        Ok(Kernel {
            rt,
            handle,
            requests: 0,
        })
    }

    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<Vec<RouteNetlinkMessage>, NlError> {
        self.requests += 1;
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut handle = self.handle.clone();
        self.rt.block_on(async move {
            let mut stream = handle
                .request(req)
                .map_err(|e| NlError::Io(e.to_string()))?;
            let mut out = Vec::new();
            while let Some(m) = stream.next().await {
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(NlError::Errno(e.raw_code().abs(), e.to_io().to_string()))
                    }
                    _ => {}
                }
            }
            Ok(out)
        })
    }

    fn dump(&mut self, msg: RouteNetlinkMessage, what: &str) -> Result<Vec<RouteNetlinkMessage>> {
        self.request(msg, NLM_F_REQUEST | NLM_F_DUMP)
            .map_err(|e| Error::netlink(format!("listing {what}"), e))
    }

    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let links = self.links()?;
        let (rules, marks) = self.rules()?;
        Ok(Snapshot {
            ifa_proto: kernel_keeps_ifa_proto(),
            addrs: self.addrs(&links)?,
            rules,
            marks,
            routes: self.routes(&links)?,
            links,
        })
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let msgs = self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "links",
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l)),
                _ => None,
            })
            .collect())
    }

    /// `links` names the devices in the result.
    pub fn addrs(&mut self, links: &[Link]) -> Result<Vec<AddrSpec>> {
        let msgs = self.dump(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            "addresses",
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse_addr(&a, links),
                _ => None,
            })
            .collect())
    }

    /// Every rule, and apart the `fwmark` rules the connmark mode reads.
    pub fn rules(&mut self) -> Result<(Vec<KernelRule>, Vec<MarkRuleSpec>)> {
        let mut out = Vec::new();
        let mut marks = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RuleMessage::default();
            msg.header.family = family;
            for m in self.dump(RouteNetlinkMessage::GetRule(msg), "rules")? {
                if let RouteNetlinkMessage::NewRule(r) = m {
                    out.push(parse_rule(&r));
                    marks.extend(parse_mark_rule(&r));
                }
            }
        }
        Ok((out, marks))
    }

    /// `links` names the devices in the result.
    pub fn routes(&mut self, links: &[Link]) -> Result<Vec<RouteSpec>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = family;
            for m in self.dump(RouteNetlinkMessage::GetRoute(msg), "routes")? {
                if let RouteNetlinkMessage::NewRoute(r) = m {
                    out.extend(parse_route(&r, links));
                }
            }
        }
        Ok(out)
    }

    /// Runs one change. Adding what exists, or deleting what is gone, is not an error: it is
    /// reported as `AlreadyThere` so that it is neither counted nor rolled back.
    pub fn run(&mut self, op: &Op) -> std::result::Result<Outcome, NlError> {
        let create = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let delete = NLM_F_REQUEST | NLM_F_ACK;
        let (msg, flags, tolerated): (RouteNetlinkMessage, u16, &[i32]) = match op {
            // A sysctl, not a netlink message: the kernel offers no netlink way to set it.
            Op::SetRaMetric { dev, metric, .. } => {
                let path = ipv6_conf(dev, "ra_defrtr_metric");
                let now = std::fs::read_to_string(&path)
                    .map_err(|e| NlError::Io(format!("{path}: {e}")))?;
                if now.trim() == metric.to_string() {
                    return Ok(Outcome::AlreadyThere);
                }
                std::fs::write(&path, format!("{metric}\n"))
                    .map_err(|e| NlError::Io(format!("writing {path}: {e}")))?;
                return Ok(Outcome::Changed);
            }
            Op::LinkUp { index, .. } => (link_msg(*index, true), delete, &[]),
            Op::LinkDown { index, .. } => (link_msg(*index, false), delete, &[]),
            Op::AddAddr(a) => (
                RouteNetlinkMessage::NewAddress(addr_msg(a)),
                create,
                &[EEXIST],
            ),
            Op::DelAddr(a) => (
                RouteNetlinkMessage::DelAddress(addr_msg(a)),
                delete,
                &[EADDRNOTAVAIL, ENODEV],
            ),
            Op::AddRoute(r) => (
                RouteNetlinkMessage::NewRoute(route_msg(r, false)),
                create,
                &[EEXIST],
            ),
            Op::DelRoute(r) => (
                RouteNetlinkMessage::DelRoute(route_msg(r, true)),
                delete,
                &[ESRCH, ENOENT, ENODEV],
            ),
            Op::AddRule(r) => (RouteNetlinkMessage::NewRule(rule_msg(r)), create, &[EEXIST]),
            Op::DelRule(r) => (RouteNetlinkMessage::DelRule(rule_msg(r)), delete, &[ENOENT]),
            Op::AddMarkRule(r) => (
                RouteNetlinkMessage::NewRule(mark_rule_msg(r)),
                create,
                &[EEXIST],
            ),
            Op::DelMarkRule(r) => (
                RouteNetlinkMessage::DelRule(mark_rule_msg(r)),
                delete,
                &[ENOENT],
            ),
        };
        match self.request(msg, flags) {
            Ok(_) => Ok(Outcome::Changed),
            Err(NlError::Errno(code, _)) if tolerated.contains(&code) => Ok(Outcome::AlreadyThere),
            Err(e) => Err(e),
        }
    }

    /// Which link the kernel would send a packet from `src` to `dst` out of (no packet is sent).
    pub(crate) fn route_get(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
    ) -> std::result::Result<Option<u32>, NlError> {
        Ok(self.route_hop(Some(src), dst)?.map(|h| h.oif))
    }

    /// The next hop the kernel would send a packet from `src` (none: the host's own new
    /// connection, which picks its source after the lookup) to `dst` to: its link and gateway.
    pub(crate) fn route_hop(
        &mut self,
        src: Option<IpAddr>,
        dst: IpAddr,
    ) -> std::result::Result<Option<Hop>, NlError> {
        let mut msg = RouteMessage::default();
        let len = if dst.is_ipv4() { 32 } else { 128 };
        msg.header.address_family = family_of(&dst);
        msg.header.destination_prefix_length = len;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        if let Some(src) = src {
            msg.header.source_prefix_length = len;
            msg.attributes
                .push(RouteAttribute::Source(RouteAddress::from(src)));
        }
        self.route_get_msg(msg)
    }

    /// Which link the kernel would send a packet to `dst` carrying firewall mark `mark` out of:
    /// the lookup a marked reply gets (no packet is sent).
    pub(crate) fn route_get_marked(
        &mut self,
        dst: IpAddr,
        mark: u32,
    ) -> std::result::Result<Option<u32>, NlError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family_of(&dst);
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
        msg.attributes.push(RouteAttribute::Mark(mark));
        Ok(self.route_get_msg(msg)?.map(|h| h.oif))
    }

    fn route_get_msg(&mut self, msg: RouteMessage) -> std::result::Result<Option<Hop>, NlError> {
        let answer = self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_REQUEST)?;
        Ok(answer.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => {
                let oif = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })?;
                let gateway = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => route_ip(g),
                    _ => None,
                });
                Some(Hop { oif, gateway })
            }
            _ => None,
        }))
    }
}

/// Where a route lookup sends a packet: the link (its index) and the gateway, if not on-link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub oif: u32,
    pub gateway: Option<IpAddr>,
}

/// A netlink failure, keeping the errno so callers can tell "exists" from real failures.
#[derive(Debug, Clone)]
pub enum NlError {
    Errno(i32, String),
    Io(String),
}

impl std::error::Error for NlError {}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NlError::Errno(1, m) => write!(f, "{m} (symroute needs root or CAP_NET_ADMIN)"),
            NlError::Errno(_, m) => f.write_str(m),
            NlError::Io(m) => f.write_str(m),
        }
    }
}

fn family_of(ip: &IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn parse_link(l: &LinkMessage) -> Link {
    let mut name = String::new();
    let mut mac = None;
    let mut mtu = 0;
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(b);
                mac = Some(Mac(m));
            }
            _ => {}
        }
    }
    Link {
        index: l.header.index,
        ra_defrtr_metric: kernel_ra_metric(&name),
        name,
        mac,
        up: l.header.flags.contains(LinkFlags::Up),
        mtu,
    }
}

/// The file of one IPv6 setting of a link, in this process's network namespace (like the
/// netlink socket). Names never hold `/`: the kernel refuses them.
fn ipv6_conf(dev: &str, key: &str) -> String {
    format!("/proc/sys/net/ipv6/conf/{dev}/{key}")
}

/// See `Link::ra_defrtr_metric`. The kernel learns RA default routes on a link with
/// `accept_ra` 2, or 1 while not forwarding, and `accept_ra_defrtr` 1 (Documentation/
/// networking/ip-sysctl.rst); networkd and NetworkManager set `accept_ra` 0 on the links they
/// manage and handle RAs themselves.
fn kernel_ra_metric(dev: &str) -> Option<u32> {
    if dev.is_empty() {
        return None;
    }
    let read = |key: &str| -> Option<u32> {
        std::fs::read_to_string(ipv6_conf(dev, key))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let accept_ra = read("accept_ra")?;
    let learns = accept_ra == 2 || (accept_ra == 1 && read("forwarding")? == 0);
    if !learns || read("accept_ra_defrtr")? != 1 {
        return None;
    }
    read("ra_defrtr_metric").filter(|m| *m > 0)
}

fn link_msg(index: u32, up: bool) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.change_mask = LinkFlags::Up;
    if up {
        m.header.flags = LinkFlags::Up;
    }
    RouteNetlinkMessage::SetLink(m)
}

fn dev_name(links: &[Link], index: u32) -> String {
    links
        .iter()
        .find(|l| l.index == index)
        .map(|l| l.name.clone())
        .unwrap_or_else(|| format!("if{index}"))
}

fn parse_addr(a: &AddressMessage, links: &[Link]) -> Option<AddrSpec> {
    let mut local = None;
    let mut address = None;
    let mut protocol = 0u8;
    let mut label = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Protocol(p) => protocol = u8::from(*p),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    let dev = dev_name(links, a.header.index);
    // Kernels before 6.1 drop IFA_PROTO; the label marks the agent's IPv4 addresses there
    // (and on any kernel, addresses an earlier version of the agent labelled).
    let label = label.filter(|l| Some(l) == owner_label(&dev).as_ref());
    if label.is_some() {
        protocol = RTPROT_SYMROUTE;
    }
    Some(AddrSpec {
        index: a.header.index,
        dev,
        ip,
        prefix_len: a.header.prefix_len,
        protocol,
        label,
    })
}

fn addr_msg(a: &AddrSpec) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family_of(&a.ip);
    m.header.prefix_len = a.prefix_len;
    m.header.index = a.index;
    m.header.scope = AddressScope::Universe;
    m.attributes.push(AddressAttribute::Local(a.ip));
    m.attributes.push(AddressAttribute::Address(a.ip));
    if a.ip.is_ipv6() {
        // The VPC guarantees the address is ours: no duplicate detection delay.
        m.header.flags = AddressHeaderFlags::Nodad;
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    if a.protocol != 0 {
        m.attributes
            .push(AddressAttribute::Protocol(AddressProtocol::from(
                a.protocol,
            )));
    }
    if let Some(l) = &a.label {
        m.attributes.push(AddressAttribute::Label(l.clone()));
    }
    m
}

/// Kernels before 6.1 drop `IFA_PROTO`; an IPv4 label `<dev>:sr` marks the agent's addresses
/// there too. Labels are limited to 15 bytes, so very long interface names go without.
/// Whether this kernel keeps `IFA_PROTO` (Linux 6.1 and later), from its release string.
pub fn kernel_keeps_ifa_proto() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").is_ok_and(|r| release_keeps_ifa_proto(&r))
}

/// `6.1.0-13-cloud-amd64` → true, `5.15.0-1051-aws` → false.
pub fn release_keeps_ifa_proto(release: &str) -> bool {
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 1)
}

pub fn owner_label(dev: &str) -> Option<String> {
    (dev.len() + 3 <= 15).then(|| format!("{dev}:sr"))
}

fn parse_rule(r: &RuleMessage) -> KernelRule {
    let mut table = r.header.table as u32;
    let mut priority = 0;
    let mut src = None;
    let mut dst = None;
    let mut suppress = None;
    let mut protocol = 0u8;
    let mut other_selector = false;
    for a in &r.attributes {
        match a {
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Source(ip) => src = Some(*ip),
            RuleAttribute::Destination(ip) => dst = Some(*ip),
            RuleAttribute::Protocol(p) => protocol = u8::from(*p),
            // The kernel dumps every rule with this attribute, u32::MAX (-1) meaning unset; of
            // the rest only 0..=128 are prefix lengths.
            RuleAttribute::SuppressPrefixLen(u32::MAX) => {}
            RuleAttribute::SuppressPrefixLen(n) => match u8::try_from(*n) {
                Ok(n) if n <= 128 => suppress = Some(n),
                _ => other_selector = true,
            },
            RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::FwMark(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_) => other_selector = true,
            _ => {}
        }
    }
    let spec = match (r.header.action, src, other_selector || r.header.tos != 0) {
        (RuleAction::ToTable, Some(ip), false) => {
            let dst = match dst {
                Some(d) => match IpNet::new(d, r.header.dst_len) {
                    Ok(d) => Some(d),
                    Err(_) => return KernelRule { spec: None },
                },
                None => None,
            };
            IpNet::new(ip, r.header.src_len).ok().map(|src| RuleSpec {
                priority,
                src,
                dst,
                table,
                suppress_prefixlength: suppress,
                protocol,
            })
        }
        _ => None,
    };
    KernelRule { spec }
}

/// A rule `fwmark <mark>/<mask> lookup <table>` with no other selector (no source, no
/// destination, no interface), which is all the connmark mode installs.
fn parse_mark_rule(r: &RuleMessage) -> Option<MarkRuleSpec> {
    if r.header.action != RuleAction::ToTable
        || r.header.src_len != 0
        || r.header.dst_len != 0
        || r.header.tos != 0
    {
        return None;
    }
    let mut table = r.header.table as u32;
    let (mut priority, mut mark, mut mask, mut protocol) = (0, None, u32::MAX, 0u8);
    for a in &r.attributes {
        match a {
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) => mask = *m,
            RuleAttribute::Protocol(p) => protocol = u8::from(*p),
            RuleAttribute::SuppressPrefixLen(u32::MAX) => {}
            RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::SuppressPrefixLen(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_) => return None,
            _ => {}
        }
    }
    Some(MarkRuleSpec {
        priority,
        v6: r.header.family == AddressFamily::Inet6,
        mark: mark?,
        mask,
        table,
        protocol,
    })
}

fn mark_rule_msg(r: &MarkRuleSpec) -> RuleMessage {
    let family = if r.v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let mut m = lookup_rule(family, r.table, r.priority, r.protocol);
    m.attributes.push(RuleAttribute::FwMark(r.mark));
    m.attributes.push(RuleAttribute::FwMask(r.mask));
    m
}

/// `lookup <table>` at `priority`, stamped with `protocol` (0: none): what every rule the agent
/// installs starts from, before its selectors.
fn lookup_rule(family: AddressFamily, table: u32, priority: u32, protocol: u8) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family;
    // Without an explicit action the kernel accepts the rule and then never matches a lookup.
    m.header.action = RuleAction::ToTable;
    // Tables above 255 only fit the TABLE attribute; the header says "see attribute".
    m.header.table = if table <= 255 {
        table as u8
    } else {
        RouteHeader::RT_TABLE_UNSPEC
    };
    m.attributes.push(RuleAttribute::Table(table));
    m.attributes.push(RuleAttribute::Priority(priority));
    if protocol != 0 {
        m.attributes
            .push(RuleAttribute::Protocol(RouteProtocol::from(protocol)));
    }
    m
}

fn rule_msg(r: &RuleSpec) -> RuleMessage {
    let mut m = lookup_rule(family_of(&r.src.addr()), r.table, r.priority, r.protocol);
    m.header.src_len = r.src.prefix_len();
    m.attributes.push(RuleAttribute::Source(r.src.addr()));
    if let Some(d) = r.dst {
        m.header.dst_len = d.prefix_len();
        m.attributes.push(RuleAttribute::Destination(d.addr()));
    }
    if let Some(n) = r.suppress_prefixlength {
        m.attributes
            .push(RuleAttribute::SuppressPrefixLen(u32::from(n)));
    }
    m
}

/// One dumped route as the routes it is for the kernel: usually one; for an IPv6 multipath
/// route, one per next hop. IPv6 keeps equal-cost routes as siblings and dumps them as one
/// message with RTA_MULTIPATH; each sibling is a route of its own (an RTM_DELROUTE naming its
/// gateway and device removes that one alone, checked on Linux 6.18). networkd appends each
/// link's RA default, so a secondary's RA default at the primary's metric (1024 for both, seen
/// in the lab's networkd guest) merges with the primary's into one such route: read whole, it
/// would hide the secondary's router and the tie. IPv4 multipath routes are one route with
/// several next hops, made by hand, never a DHCP client's or the agent's: left out.
fn parse_route(r: &RouteMessage, links: &[Link]) -> Vec<RouteSpec> {
    if r.header.kind != RouteType::Unicast {
        return Vec::new();
    }
    let unspecified: IpAddr = match r.header.address_family {
        AddressFamily::Inet => std::net::Ipv4Addr::UNSPECIFIED.into(),
        AddressFamily::Inet6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        _ => return Vec::new(),
    };
    let mut table = r.header.table as u32;
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    let mut prefsrc = None;
    let mut metric = None;
    let mut hops = None;
    let mut nh_id = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(s) => prefsrc = route_ip(s),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::MultiPath(h) => hops = Some(h),
            RouteAttribute::NhId(id) => nh_id = Some(*id),
            _ => {}
        }
    }
    let Ok(dst) = IpNet::new(
        dst.unwrap_or(unspecified),
        r.header.destination_prefix_length,
    ) else {
        return Vec::new();
    };
    let route = |oif: u32, gateway: Option<IpAddr>, nh_id: Option<u32>| RouteSpec {
        table,
        dst,
        gateway,
        oif,
        dev: dev_name(links, oif),
        prefsrc,
        scope_link: r.header.scope == RouteScope::Link,
        protocol: u8::from(r.header.protocol),
        metric,
        nh_id,
    };
    match (oif, hops) {
        // A route over one nexthop object: the kernel's dump (nexthop_compat_mode, on by
        // default) also says its gateway and device.
        (Some(oif), _) => vec![route(oif, gateway, nh_id)],
        // A next hop of a multipath route. (Of a nexthop group's route, a hop cannot be
        // deleted on its own: no id for it, and a delete by its gateway would take the route.)
        (None, Some(hops)) if dst.addr().is_ipv6() => hops
            .iter()
            .map(|h| {
                let gateway = h.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => route_ip(g),
                    _ => None,
                });
                route(h.interface_index, gateway, None)
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route_msg(r: &RouteSpec, delete: bool) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family_of(&r.dst.addr());
    m.header.destination_prefix_length = r.dst.prefix_len();
    m.header.table = if r.table <= 255 {
        r.table as u8
    } else {
        RouteHeader::RT_TABLE_UNSPEC
    };
    m.header.protocol = RouteProtocol::from(r.protocol);
    m.header.kind = RouteType::Unicast;
    m.header.scope = if delete {
        // Like `ip route del`: match whatever scope the route has.
        RouteScope::NoWhere
    } else if r.scope_link {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    m.attributes.push(RouteAttribute::Table(r.table));
    if r.dst.prefix_len() > 0 {
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                r.dst.addr(),
            )));
    }
    if let Some(id) = r.nh_id {
        // The kernel refuses a gateway or a device beside a nexthop id; the id alone names the
        // route (see RouteSpec::nh_id).
        m.attributes.push(RouteAttribute::NhId(id));
    } else {
        if let Some(g) = r.gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(g)));
        }
        m.attributes.push(RouteAttribute::Oif(r.oif));
    }
    if let Some(s) = r.prefsrc {
        m.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(s)));
    }
    if let Some(p) = r.metric {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    m
}
