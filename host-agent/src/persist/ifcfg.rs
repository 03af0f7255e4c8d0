//! network-scripts (RHEL/CentOS 7, Amazon Linux 2): `ifcfg-<if>`, `route-<if>`, `rule-<if>`
//! (and `route6-`/`rule6-`), the files the hand-written solution used. `ifup-routes` runs
//! `ip [-6] route add <line>` and `ip [-6] rule add <line>` for every line of them, so each
//! line is written in `ip` syntax, stamped with symroute's protocol number like the live state.
//!
//! `ifcfg-<if>` is written only when there is none: an existing one (DHCP by cloud-init or
//! ec2-net-utils) stays as it is, and brings the interface up; ifup-routes then reads ours.

use std::fmt::Write as _;
use std::path::Path;

use super::{owner_of, EniConfig, FileOp, Root};
use crate::error::{Error, Result};
use crate::model::RTPROT_SYMROUTE;

pub const DIR: &str = "/etc/sysconfig/network-scripts";

/// The `ip route` arguments of a route (after `ip route add`).
pub(crate) fn route_line(r: &crate::ops::RouteSpec) -> String {
    let mut s = if r.is_default() {
        "default".to_string()
    } else {
        r.dst.to_string()
    };
    if let Some(g) = r.gateway {
        let _ = write!(s, " via {g}");
    }
    let _ = write!(s, " dev {}", r.dev);
    if r.scope_link {
        s.push_str(" scope link");
    }
    if let Some(p) = r.prefsrc {
        let _ = write!(s, " src {p}");
    }
    if let Some(m) = r.metric {
        let _ = write!(s, " metric {m}");
    }
    let _ = write!(s, " table {} proto {RTPROT_SYMROUTE}", r.table);
    s
}

/// The `ip rule` selector of a rule (after `ip rule add|del`), without the protocol.
pub(crate) fn rule_selector(r: &crate::ops::RuleSpec) -> String {
    let mut s = format!("from {}", r.src);
    if let Some(d) = r.dst {
        let _ = write!(s, " to {d}");
    }
    let _ = write!(s, " lookup {}", r.table);
    if let Some(n) = r.suppress_prefixlength {
        let _ = write!(s, " suppress_prefixlength {n}");
    }
    let _ = write!(s, " priority {}", r.priority);
    s
}

pub fn render(root: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
    let mut ops = Vec::new();
    let file = |kind: &str| Path::new(DIR).join(format!("{kind}-{}", eni.ifname));
    let foreign = |kind: &str| {
        root.read(&file(kind))
            .is_some_and(|t| owner_of(&t).is_none())
    };
    for kind in ["route", "rule", "route6", "rule6"] {
        if foreign(kind) {
            return Err(Error::Persist(format!(
                "{} exists and was not written by symroute; merge its routing by hand or use --persist unit",
                file(kind).display()
            )));
        }
    }
    if !foreign("ifcfg") {
        let mut s = eni.header();
        let _ = writeln!(
            s,
            "# Brings {} ({}) up with its addresses from instance metadata.",
            eni.ifname, eni.eni_id
        );
        let _ = writeln!(
            s,
            "DEVICE={}\nHWADDR={}\nTYPE=Ethernet\nONBOOT=yes\nBOOTPROTO=none\nNM_CONTROLLED=no\nDEFROUTE=no",
            eni.ifname, eni.mac
        );
        if let Some(m) = eni.mtu {
            // The VPC's MTU as DHCP had set it: BOOTPROTO=none is static.
            let _ = writeln!(s, "MTU={m}");
        }
        for (i, a) in eni.addrs_v4.iter().enumerate() {
            let _ = writeln!(s, "IPADDR{i}={}\nPREFIX{i}={}", a.addr(), a.prefix_len());
        }
        if let Some((first, rest)) = eni.addrs_v6.split_first() {
            let _ = writeln!(s, "IPV6INIT=yes\nIPV6_AUTOCONF=yes\nIPV6ADDR={first}");
            if !rest.is_empty() {
                let rest: Vec<String> = rest.iter().map(|a| a.to_string()).collect();
                let _ = writeln!(s, "IPV6ADDR_SECONDARIES=\"{}\"", rest.join(" "));
            }
        }
        ops.push(FileOp::text(file("ifcfg"), s, 0o644));
    }
    let lines = |kind: &str, items: Vec<String>| {
        let mut s = eni.header();
        for l in items {
            s.push_str(&l);
            s.push('\n');
        }
        FileOp::text(file(kind), s, 0o644)
    };
    // An IPv6-only ENI has no IPv4 routing to write.
    if !eni.addrs_v4.is_empty() {
        ops.push(lines("route", eni.routes_v4().map(route_line).collect()));
        ops.push(lines(
            "rule",
            eni.rules_v4()
                .map(|r| format!("{} protocol {RTPROT_SYMROUTE}", rule_selector(r)))
                .collect(),
        ));
    }
    if !eni.addrs_v6.is_empty() {
        ops.push(lines("route6", eni.routes_v6().map(route_line).collect()));
        ops.push(lines(
            "rule6",
            eni.rules_v6()
                .map(|r| format!("{} protocol {RTPROT_SYMROUTE}", rule_selector(r)))
                .collect(),
        ));
    }
    Ok(ops)
}
