//! ifupdown (Debian without networkd): `/etc/network/interfaces.d/symroute-<if>`, a stanza whose
//! `post-up` lines install the table and rules (stamped with symroute's protocol number, like
//! the live state) and whose `pre-down` lines take them away again.
//!
//! ifupdown combines several `iface` stanzas of one interface, so when the interface already
//! has one (`inet dhcp`), ours is an `inet manual` stanza that only adds; otherwise it also
//! brings the link up and adds the primary address. Addresses come from `post-up`.
//!
//! ifupdown matches stanzas by interface name only, and a name is not an ENI: after a stop and
//! start with other ENIs, or in an AMI baked from this instance, another ENI may carry it. So
//! every line that configures acts only when the link has this ENI's MAC (a guard reading
//! /sys/class/net/<if>/address); for any other ENI the stanza does nothing.

use std::fmt::Write as _;
use std::path::Path;

use super::ifcfg::{route_line, rule_selector};
use super::{owner_of, EniConfig, FileOp, Root};
use crate::error::{Error, Result};
use crate::model::RTPROT_SYMROUTE;

pub const DIR: &str = "/etc/network/interfaces.d";
const INTERFACES: &str = "/etc/network/interfaces";

/// Whether `interfaces` reads `interfaces.d` (Debian's default does).
fn sources_dir(text: &str) -> bool {
    source_line(text).is_some()
}

/// The line number of the `source`/`source-directory` line that reads `interfaces.d`.
fn source_line(text: &str) -> Option<usize> {
    text.lines().map(str::trim).position(|l| {
        let mut w = l.split_whitespace();
        match (w.next(), w.next()) {
            (Some("source"), Some(p)) => p
                .trim_start_matches("/etc/network/")
                .starts_with("interfaces.d/"),
            (Some("source-directory"), Some(p)) => {
                p.trim_start_matches("/etc/network/").trim_end_matches('/') == "interfaces.d"
            }
            _ => false,
        }
    })
}

fn has_stanza(text: &str, ifname: &str) -> bool {
    stanza_line(text, ifname).is_some()
}

fn stanza_line(text: &str, ifname: &str) -> Option<usize> {
    text.lines().position(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.len() >= 3 && w[0] == "iface" && w[1] == ifname && w[2] == "inet"
    })
}

pub fn render(root: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
    let main = root.read(Path::new(INTERFACES)).unwrap_or_default();
    if !sources_dir(&main) {
        return Err(Error::Persist(format!(
            "{INTERFACES} does not read {DIR}; add `source {DIR}/*` to it or use --persist unit"
        )));
    }
    // `source-directory` only reads names of letters, digits, `-` and `_`.
    let name = format!("symroute-{}", eni.ifname.replace('.', "_"));
    // ifup runs an interface's stanzas in the order it read them, and ours needs the address
    // the other one brings (routes with `src`): it must come later.
    let in_dir = root.list(DIR).into_iter().find(|p| {
        root.read(p)
            .is_some_and(|t| owner_of(&t).is_none() && has_stanza(&t, &eni.ifname))
    });
    let in_main = stanza_line(&main, &eni.ifname);
    let existing = in_main.is_some() || in_dir.is_some();
    if let Some(p) = &in_dir {
        if p.file_name().is_some_and(|n| *n.to_string_lossy() > *name) {
            return Err(Error::Persist(format!(
                "{} configures {} and sorts after {DIR}/{name}, so ifup would run symroute's stanza first; rename it or use --persist unit",
                p.display(),
                eni.ifname
            )));
        }
    }
    if in_main.is_some_and(|l| Some(l) > source_line(&main)) {
        return Err(Error::Persist(format!(
            "{INTERFACES} configures {} below its `source` line, so ifup would run symroute's stanza first; move the `source {DIR}/*` line below it or use --persist unit",
            eni.ifname
        )));
    }
    let ifn = &eni.ifname;
    let mut s = eni.header();
    let _ = writeln!(
        s,
        "# Policy routing for {ifn} ({}); each line acts only while {ifn} has MAC {}.",
        eni.eni_id, eni.mac
    );
    // `[ mac != ours ] || cmd`: nothing happens (and ifup goes on) for another ENI.
    let only = format!(
        "[ \"$(cat /sys/class/net/{ifn}/address)\" != {} ] || ",
        eni.mac
    );
    // The kernel learns the VPC router's RA default on this link at the primary's metric
    // (1024) unless told otherwise before the link comes up: tell it (Linux 5.18+), and drop
    // a default it learned before this stanza ran (another stanza brought the link up first).
    let ra = eni.ra_metric.map(|m| {
        let conf = format!("/proc/sys/net/ipv6/conf/{ifn}/ra_defrtr_metric");
        (
            format!("    pre-up {only}[ ! -w {conf} ] || echo {m} > {conf}"),
            format!(
                "    post-up {only}[ ! -w {conf} ] || ip -6 route del default dev {ifn} proto ra metric 1024 2>/dev/null || true"
            ),
        )
    });
    let skip = if existing {
        let _ = writeln!(s, "iface {ifn} inet manual");
        if let Some((pre, _)) = &ra {
            let _ = writeln!(s, "{pre}");
        }
        1
    } else {
        // The VPC's MTU as DHCP had set it, where it is above 1500: `inet manual` is static.
        let mtu = eni.mtu.map_or_else(String::new, |m| format!("mtu {m} "));
        let _ = writeln!(s, "allow-hotplug {ifn}\niface {ifn} inet manual");
        if let Some((pre, _)) = &ra {
            let _ = writeln!(s, "{pre}");
        }
        let _ = writeln!(s, "    pre-up {only}ip link set dev {ifn} {mtu}up");
        0
    };
    if let Some((_, post)) = &ra {
        let _ = writeln!(s, "{post}");
    }
    let add_addr = |s: &mut String, a: String, fam: &str| {
        let _ = writeln!(s, "    post-up {only}ip {fam}addr replace {a} dev {ifn}");
    };
    for a in eni.addrs_v4.iter().skip(skip) {
        add_addr(&mut s, a.to_string(), "");
    }
    for a in &eni.addrs_v6 {
        add_addr(&mut s, format!("{a} nodad"), "-6 ");
    }
    let fam = |v6: bool| if v6 { "-6 " } else { "" };
    for r in &eni.routes {
        let _ = writeln!(
            s,
            "    post-up {only}ip {}route replace {}",
            fam(r.dst.addr().is_ipv6()),
            route_line(r)
        );
    }
    for r in &eni.rules {
        // `rule add` of an existing rule fails: delete first, so that ifup is repeatable.
        let f = fam(r.src.addr().is_ipv6());
        let sel = rule_selector(r);
        let _ = writeln!(
            s,
            "    post-up {only}{{ ip {f}rule del {sel} protocol {RTPROT_SYMROUTE} 2>/dev/null; ip {f}rule add {sel} protocol {RTPROT_SYMROUTE}; }}"
        );
    }
    for r in &eni.rules {
        let _ = writeln!(
            s,
            "    pre-down ip {}rule del {} protocol {RTPROT_SYMROUTE} || true",
            fam(r.src.addr().is_ipv6()),
            rule_selector(r)
        );
    }
    let mut v6 = false;
    for r in &eni.routes {
        v6 |= r.dst.addr().is_ipv6();
    }
    let _ = writeln!(
        s,
        "    pre-down ip route flush table {} proto {RTPROT_SYMROUTE} || true",
        eni.table
    );
    if v6 {
        let _ = writeln!(
            s,
            "    pre-down ip -6 route flush table {} proto {RTPROT_SYMROUTE} || true",
            eni.table
        );
    }
    let path = Path::new(DIR).join(name);
    Ok(vec![FileOp::text(path, s, 0o644)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_source_line() {
        assert!(sources_dir("source /etc/network/interfaces.d/*\n"));
        assert!(sources_dir("source interfaces.d/*\n"));
        assert!(sources_dir("source-directory /etc/network/interfaces.d\n"));
        assert!(!sources_dir("auto lo\niface lo inet loopback\n"));
        assert!(has_stanza("iface eth1 inet dhcp\n", "eth1"));
        assert_eq!(source_line("auto lo\nsource interfaces.d/*\n"), Some(1));
        assert!(!has_stanza("iface eth1 inet6 auto\n", "eth1"));
    }
}
