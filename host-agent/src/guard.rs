//! Never harm the primary. Before a run changes the kernel, the paths the primary interface's
//! traffic takes are read with the kernel's own route lookups: from each of its addresses to
//! its subnet router and off the subnet, and the host's own new connections (no source) off the
//! subnet, in each family. After the changes they are read again: a path that left by the
//! primary's link must still leave by it, through the same gateway. The ENI's own proof cannot
//! see this: it looks up from the ENI's addresses only, and a run that broke the primary's IPv6
//! default (seen before routes over nexthop objects were deleted by their id) reported "ok".
//!
//! A path that did not leave by the primary before (no route yet, or a tie that put the host's
//! own traffic on an ENI's link) is not held: the run may well repair it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::kernel::{Hop, Kernel, NlError, Snapshot};
use crate::model::Instance;
use crate::plan::probe_destinations;

/// One lookup the primary's traffic makes, and where the kernel sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// None: the host's own new connection, which takes its source after the lookup.
    pub source: Option<IpAddr>,
    pub destination: IpAddr,
    pub hop: Option<Hop>,
}

/// The primary's paths before a run.
#[derive(Clone, Debug)]
pub struct Guard {
    link: u32,
    name: String,
    paths: Vec<Path>,
}

/// What the report says about the primary (JSON `primary`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PrimaryReport {
    pub interface: String,
    /// Paths that left by the primary's link before the run, read again after it.
    pub paths: usize,
    /// Those that moved, one line each (empty: the primary was not harmed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<String>,
}

impl Guard {
    /// Reads the primary's paths as they are now. None where the primary is not known (no
    /// metadata for it, or no kernel link with its MAC): there is nothing to hold.
    pub fn read(kernel: &mut Kernel, snap: &Snapshot, inst: &Instance) -> Result<Option<Guard>> {
        let primary = inst
            .enis
            .iter()
            .find(|e| inst.primary_mac == Some(e.mac))
            .or_else(|| {
                inst.enis
                    .iter()
                    .find(|e| inst.primary_mac.is_none() && e.is_primary_device())
            });
        let Some(eni) = primary else {
            return Ok(None);
        };
        let Some(link) = snap.link_by_mac(eni.mac) else {
            return Ok(None);
        };
        let (off4, off6) = probe_destinations(eni);
        let held = |ip: IpAddr| snap.addrs.iter().any(|a| a.ip == ip);
        let mut lookups: Vec<(Option<IpAddr>, IpAddr)> =
            vec![(None, IpAddr::V4(off4)), (None, IpAddr::V6(off6))];
        for ip in eni
            .ipv4s
            .iter()
            .map(|i| IpAddr::V4(*i))
            .filter(|i| held(*i))
        {
            if let Some(gw) = eni.gateway_v4() {
                lookups.push((Some(ip), IpAddr::V4(gw)));
            }
            lookups.push((Some(ip), IpAddr::V4(off4)));
        }
        for ip in eni
            .ipv6s
            .iter()
            .map(|i| IpAddr::V6(*i))
            .filter(|i| held(*i))
        {
            lookups.push((Some(ip), IpAddr::V6(off6)));
        }
        let mut paths = Vec::with_capacity(lookups.len());
        for (source, destination) in lookups {
            let hop = lookup(kernel, source, destination)?;
            paths.push(Path {
                source,
                destination,
                hop,
            });
        }
        Ok(Some(Guard {
            link: link.index,
            name: link.name.clone(),
            paths,
        }))
    }

    /// Reads the held paths again: what the report says, with the ones that moved.
    pub fn check(&self, kernel: &mut Kernel, snap: &Snapshot) -> Result<PrimaryReport> {
        let held = held(self.link, &self.paths);
        let mut after = Vec::with_capacity(held.len());
        for p in &held {
            after.push(Path {
                source: p.source,
                destination: p.destination,
                hop: lookup(kernel, p.source, p.destination)?,
            });
        }
        Ok(PrimaryReport {
            interface: self.name.clone(),
            paths: held.len(),
            moved: moved(&held, &after)
                .into_iter()
                .map(|(b, a)| describe(snap, b, a))
                .collect(),
        })
    }
}

/// The paths the run must keep: those that left by the primary's link.
fn held(link: u32, before: &[Path]) -> Vec<Path> {
    before
        .iter()
        .filter(|p| p.hop.is_some_and(|h| h.oif == link))
        .cloned()
        .collect()
}

/// Pairs of (before, after) whose next hop changed: another link, another gateway, or none.
fn moved<'a>(before: &'a [Path], after: &'a [Path]) -> Vec<(&'a Path, &'a Path)> {
    before
        .iter()
        .zip(after)
        .filter(|(b, a)| b.hop != a.hop)
        .collect()
}

fn describe(snap: &Snapshot, before: &Path, after: &Path) -> String {
    let hop = |h: &Option<Hop>| match h {
        None => "no route".to_string(),
        Some(h) => {
            let dev = snap
                .link_by_index(h.oif)
                .map(|l| l.name.clone())
                .unwrap_or_else(|| format!("link {}", h.oif));
            match h.gateway {
                Some(g) => format!("via {g} dev {dev}"),
                None => format!("dev {dev}"),
            }
        }
    };
    let from = match before.source {
        Some(s) => format!("from {s}"),
        None => "the host's own connections".to_string(),
    };
    format!(
        "{from} to {}: {} before, {} after",
        before.destination,
        hop(&before.hop),
        hop(&after.hop)
    )
}

/// A lookup the kernel cannot answer (no route: ENETUNREACH and kin) is a path with no hop; a
/// netlink failure is an error.
fn lookup(kernel: &mut Kernel, src: Option<IpAddr>, dst: IpAddr) -> Result<Option<Hop>> {
    match kernel.route_hop(src, dst) {
        Ok(h) => Ok(h),
        Err(NlError::Errno(..)) => Ok(None),
        Err(e) => Err(Error::netlink(
            format!(
                "looking up the route from {} to {dst}",
                src.unwrap_or(if dst.is_ipv4() {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                })
            ),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(src: Option<&str>, dst: &str, hop: Option<(u32, Option<&str>)>) -> Path {
        Path {
            source: src.map(|s| s.parse().unwrap()),
            destination: dst.parse().unwrap(),
            hop: hop.map(|(oif, gw)| Hop {
                oif,
                gateway: gw.map(|g| g.parse().unwrap()),
            }),
        }
    }

    #[test]
    fn only_paths_that_left_by_the_primary_are_held() {
        let before = [
            path(
                Some("10.0.1.10"),
                "198.51.100.1",
                Some((2, Some("10.0.1.1"))),
            ),
            // The host's own IPv6 traffic on an ENI's link (a tie the run repairs): not held.
            path(None, "2001:db8::1", Some((3, Some("fe80::1")))),
            // No route yet: not held.
            path(None, "198.51.100.1", None),
        ];
        let held = held(2, &before);
        assert_eq!(held, vec![before[0].clone()]);
    }

    #[test]
    fn another_link_another_gateway_or_no_route_is_a_move() {
        let before = vec![
            path(
                Some("10.0.1.10"),
                "198.51.100.1",
                Some((2, Some("10.0.1.50"))),
            ),
            path(Some("10.0.1.10"), "10.0.1.1", Some((2, None))),
            path(None, "2001:db8::1", Some((2, Some("fe80::1")))),
            path(None, "198.51.100.1", Some((2, Some("10.0.1.1")))),
        ];
        let after = vec![
            path(
                Some("10.0.1.10"),
                "198.51.100.1",
                Some((2, Some("10.0.1.1"))),
            ),
            path(Some("10.0.1.10"), "10.0.1.1", Some((3, None))),
            path(None, "2001:db8::1", None),
            path(None, "198.51.100.1", Some((2, Some("10.0.1.1")))),
        ];
        let m = moved(&before, &after);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(!m.iter().any(|(b, _)| **b == before[3]), "{m:?}");
        let snap = Snapshot::default();
        assert_eq!(
            describe(&snap, m[0].0, m[0].1),
            "from 10.0.1.10 to 198.51.100.1: via 10.0.1.50 dev link 2 before, via 10.0.1.1 dev \
             link 2 after"
        );
        assert_eq!(
            describe(&snap, m[2].0, m[2].1),
            "the host's own connections to 2001:db8::1: via fe80::1 dev link 2 before, no route \
             after"
        );
    }

    #[test]
    fn an_unchanged_primary_has_no_move() {
        let before = vec![path(
            Some("10.0.1.10"),
            "198.51.100.1",
            Some((2, Some("10.0.1.1"))),
        )];
        assert!(moved(&before, &before.clone()).is_empty());
    }
}
