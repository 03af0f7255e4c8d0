//! Proof after apply: for every address of an ENI, the kernel's own route lookup `from <ip>`
//! must leave by the ENI's link, both to its subnet router and to somewhere off the subnet;
//! and to a local peer (a main-table route that is not the VPC's: docker0, a VPN, a bridge) it
//! must leave by that peer's link, as it did before symroute. In the connmark mode, a reply
//! carrying the ENI's mark must leave by the ENI's link whatever its source.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::error::Result;
use crate::kernel::{Kernel, Snapshot};
use crate::model::ImdsEni;
use crate::ops::Link;
use crate::ops::RT_TABLE_MAIN;
use crate::plan::{probe_destinations, vpc_bound_routes};

/// Local peers checked per address: enough to prove the rule, few enough for a busy bridge host.
const MAX_LOCAL_PEERS: usize = 4;

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub source: IpAddr,
    pub destination: IpAddr,
    /// The firewall mark the lookup carried: a reply of a flow that arrived on the ENI, in the
    /// connmark mode (the source is then unspecified: any, a container's included).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "hex")]
    pub mark: Option<u32>,
    /// The link the kernel chose, if any.
    pub via: Option<String>,
    pub ok: bool,
}

fn hex<S: serde::Serializer>(mark: &Option<u32>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match mark {
        Some(m) => s.serialize_str(&format!("{m:#x}")),
        None => s.serialize_none(),
    }
}

/// In the connmark mode: a reply marked for this ENI, whatever its source, leaves by its link
/// (to the subnet router and off the subnet). Nothing when the ENI is not in the mode.
pub fn mark_checks(kernel: &mut Kernel, snap: &Snapshot, eni: &ImdsEni, link: &Link) -> Vec<Check> {
    if !crate::connmark::is_on(snap, eni.table()) {
        return Vec::new();
    }
    let (off4, off6) = probe_destinations(eni);
    let mark = eni.flow_mark();
    // An IPv6-only ENI's flows are IPv6: its marked replies are looked up in that family.
    let (unspecified, dsts) = match eni.gateway_v4() {
        Some(gw) => (
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            vec![IpAddr::V4(gw), IpAddr::V4(off4)],
        ),
        None => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), vec![IpAddr::V6(off6)]),
    };
    dsts.into_iter()
        .map(|dst| {
            let (via, ok) = via(snap, kernel.route_get_marked(dst, mark), link.index);
            Check {
                source: unspecified,
                destination: dst,
                mark: Some(mark),
                via,
                ok,
            }
        })
        .collect()
}

/// The link a lookup chose, and whether it is `want`. No route at all is a failed check, not
/// a failed run.
fn via(
    snap: &Snapshot,
    oif: std::result::Result<Option<u32>, crate::kernel::NlError>,
    want: u32,
) -> (Option<String>, bool) {
    match oif {
        Ok(Some(i)) => (
            Some(
                snap.link_by_index(i)
                    .map(|l| l.name.clone())
                    .unwrap_or_else(|| format!("if{i}")),
            ),
            i == want,
        ),
        Ok(None) | Err(_) => (None, false),
    }
}

pub fn checks(
    kernel: &mut Kernel,
    snap: &Snapshot,
    eni: &ImdsEni,
    link: &Link,
) -> Result<Vec<Check>> {
    let (off4, off6) = probe_destinations(eni);
    // (source, destination, the link the reply must take)
    let mut pairs: Vec<(IpAddr, IpAddr, u32)> = Vec::new();
    let mut unproven = Vec::new();
    if let Some(gw) = eni.gateway_v4() {
        for ip in &eni.ipv4s {
            pairs.push((IpAddr::V4(*ip), IpAddr::V4(gw), link.index));
            pairs.push((IpAddr::V4(*ip), IpAddr::V4(off4), link.index));
        }
        for (dst, oif) in local_peers(snap, eni, link) {
            pairs.push((eni.primary_address(), dst, oif));
        }
    }
    // IPv6 where the ENI's table has its router, and always on an IPv6-only ENI: there IPv6 is
    // all the routing there is, and a proof with no lookup would prove nothing (the wait for
    // the ENI holds out for an address and a router; without them the lookups fail).
    let v6_default = snap
        .routes
        .iter()
        .any(|r| r.table == eni.table() && r.is_default() && r.dst.addr().is_ipv6());
    if v6_default || eni.is_ipv6_only() {
        let in_subnet = eni.subnets_v6.first().and_then(|n| v6_peer(snap, *n));
        let mut held = eni
            .ipv6s
            .iter()
            // Only addresses the host holds can be a lookup's source.
            .filter(|ip| snap.addrs.iter().any(|a| a.ip == IpAddr::V6(**ip)))
            .peekable();
        if held.peek().is_none() && eni.is_ipv6_only() {
            // Not one address to look up from: a failed proof, not a vacuous one.
            unproven.push(Check {
                source: IpAddr::V6(eni.ipv6s[0]),
                destination: IpAddr::V6(off6),
                mark: None,
                via: None,
                ok: false,
            });
        }
        for ip in held {
            pairs.push((IpAddr::V6(*ip), IpAddr::V6(off6), link.index));
            if let Some(peer) = in_subnet {
                pairs.push((IpAddr::V6(*ip), IpAddr::V6(peer), link.index));
            }
        }
    }
    let mut out = Vec::with_capacity(pairs.len());
    for (src, dst, want) in pairs {
        let (via, ok) = via(snap, kernel.route_get(src, dst), want);
        out.push(Check {
            source: src,
            destination: dst,
            mark: None,
            via,
            ok,
        });
    }
    out.extend(unproven);
    out.extend(mark_checks(kernel, snap, eni, link));
    Ok(out)
}

/// A host of the subnet's IPv6 block that this host does not hold (the same-subnet case).
fn v6_peer(snap: &Snapshot, net: ipnet::Ipv6Net) -> Option<Ipv6Addr> {
    let first = u128::from(net.network());
    (1..8u128)
        .map(|k| Ipv6Addr::from(first.wrapping_add(k)))
        .filter(|h| net.contains(h))
        .find(|h| !snap.addrs.iter().any(|a| a.ip == IpAddr::V6(*h)))
}

/// A host on each of the first few IPv4 routes of the main table that lead to a local peer: not
/// a default route, not into the VPC (its blocks, or via its router), not over this ENI.
fn local_peers(snap: &Snapshot, eni: &ImdsEni, link: &Link) -> Vec<(IpAddr, u32)> {
    let vpc_bound = vpc_bound_routes(eni, snap);
    snap.routes
        .iter()
        .filter(|r| r.table == RT_TABLE_MAIN && !r.is_default() && r.oif != link.index)
        .filter(|r| r.gateway.is_none() && !vpc_bound.contains(&r.dst))
        .filter_map(|r| match r.dst {
            ipnet::IpNet::V4(n) if !eni.vpc_v4.iter().any(|b| b.contains(&n) || n.contains(b)) => {
                // A peer, not the host's own address on that link (the local table answers
                // for those): the first of the net's first few hosts nobody here holds.
                let first = u32::from(n.network());
                let host = (0..8u32)
                    .map(|k| std::net::Ipv4Addr::from(first.wrapping_add(k)))
                    .filter(|h| n.contains(h))
                    .filter(|h| n.prefix_len() >= 31 || *h != n.network())
                    .find(|h| !snap.addrs.iter().any(|a| a.ip == IpAddr::V4(*h)))?;
                // Link-local (169.254/16, IMDS) and loopback routes prove nothing about peers.
                (!host.is_link_local() && !host.is_loopback()).then_some((IpAddr::V4(host), r.oif))
            }
            _ => None,
        })
        .take(MAX_LOCAL_PEERS)
        .collect()
}
