//! Proof after apply: for every address of an ENI, the kernel's own route lookup `from <ip>`
//! must leave by the ENI's link, both to its subnet router and to somewhere off the subnet.

use std::net::IpAddr;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::kernel::{Kernel, Snapshot};
use crate::model::ImdsEni;
use crate::ops::Link;
use crate::plan::probe_destinations;

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub source: IpAddr,
    pub destination: IpAddr,
    /// The link the kernel chose, if any.
    pub via: Option<String>,
    pub ok: bool,
}

pub fn checks(
    kernel: &mut Kernel,
    snap: &Snapshot,
    eni: &ImdsEni,
    link: &Link,
) -> Result<Vec<Check>> {
    let (off4, off6) = probe_destinations(eni);
    let mut pairs: Vec<(IpAddr, IpAddr)> = Vec::new();
    for ip in &eni.ipv4s {
        pairs.push((IpAddr::V4(*ip), IpAddr::V4(eni.gateway_v4())));
        pairs.push((IpAddr::V4(*ip), IpAddr::V4(off4)));
    }
    let v6_default = snap
        .routes
        .iter()
        .any(|r| r.table == eni.table() && r.is_default() && r.dst.addr().is_ipv6());
    if v6_default {
        for ip in &eni.ipv6s {
            // Only addresses the host holds can be a lookup's source.
            if snap.addrs.iter().any(|a| a.ip == IpAddr::V6(*ip)) {
                pairs.push((IpAddr::V6(*ip), IpAddr::V6(off6)));
            }
        }
    }
    let mut out = Vec::with_capacity(pairs.len());
    for (src, dst) in pairs {
        let oif = kernel
            .route_get(src, dst)
            .map_err(|e| Error::netlink(format!("route lookup from {src} to {dst}"), e));
        let (via, ok) = match oif {
            Ok(Some(i)) => (
                Some(
                    snap.link_by_index(i)
                        .map(|l| l.name.clone())
                        .unwrap_or_else(|| format!("if{i}")),
                ),
                i == link.index,
            ),
            // No route at all is a failed check, not a failed run.
            Ok(None) | Err(_) => (None, false),
        };
        out.push(Check {
            source: src,
            destination: dst,
            via,
            ok,
        });
    }
    Ok(out)
}
