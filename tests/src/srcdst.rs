//! The VPC's source/destination check, as an nftables `bridge` table in the router namespace.
//!
//! Per ENI port: a frame coming in must carry one of the ENI's addresses as IPv4/IPv6 source
//! or ARP sender; a unicast frame going out must be addressed to one of them. That is what
//! makes asymmetric routing fail here as it does on AWS. Drops count in one named counter,
//! which survives the rule rebuilds done on every attach and detach.

use std::fmt::Write;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::cmd;
use crate::error::{Error, Result};

const TABLE: &str = "srcdst";
const COUNTER: &str = "drops";
/// Bridge hooks: `forward` sees port-to-port frames, `input` frames for the router itself,
/// `output` the router's own frames going out of a port.
const CHAINS: [(&str, &str); 3] = [
    ("check_fwd", "forward"),
    ("check_in", "input"),
    ("check_out", "output"),
];

/// One ENI's port and the addresses it may use.
#[derive(Clone, Debug)]
pub(crate) struct Port {
    pub name: String,
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
}

/// The table, its chains and the counter, created once per router.
pub(crate) fn install(router_ns: &str) -> Result<()> {
    let mut s = format!("table bridge {TABLE} {{\n  counter {COUNTER} {{\n  }}\n");
    for (chain, hook) in CHAINS {
        let _ = writeln!(
            s,
            "  chain {chain} {{\n    type filter hook {hook} priority 0; policy accept;\n  }}"
        );
    }
    s.push_str("}\n");
    nft(router_ns, &s)
}

/// Replaces all per-port rules in one transaction (so no frame sees a half-built filter).
pub(crate) fn apply(router_ns: &str, ports: &[Port]) -> Result<()> {
    nft(router_ns, &render(ports))
}

/// Packets dropped by the check since the VPC was created: all of them, or with `port`, those
/// dropped at that port (either direction).
pub(crate) fn drops(router_ns: &str, port: Option<&str>) -> Result<u64> {
    let counter = port.map_or(COUNTER.to_string(), port_counter);
    let out = cmd::run(
        cmd::in_netns(router_ns, "nft").args(["list", "counter", "bridge", TABLE, &counter]),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    nft_packets(&text).ok_or_else(|| {
        Error::invalid(
            "nft counter output",
            text.into_owned(),
            "no packet count in it",
        )
    })
}

/// The first packet count (`packets N`) in an `nft list` output: a named counter's, or the
/// first rule's `counter` in a chain.
pub fn nft_packets(listing: &str) -> Option<u64> {
    let mut words = listing.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            if let Some(n) = words.next().and_then(|n| n.parse().ok()) {
                return Some(n);
            }
        }
    }
    None
}

fn nft(router_ns: &str, script: &str) -> Result<()> {
    cmd::run_with_input(cmd::in_netns(router_ns, "nft").args(["-f", "-"]), script)?;
    Ok(())
}

pub(crate) fn render(ports: &[Port]) -> String {
    let mut s = String::new();
    for (chain, _) in CHAINS {
        let _ = writeln!(s, "flush chain bridge {TABLE} {chain}");
    }
    // Per-port counters stay after a detach, so drops can still be read afterwards.
    for p in ports {
        let _ = writeln!(s, "add counter bridge {TABLE} {}", port_counter(&p.name));
    }
    let rule = |s: &mut String, chain: &str, body: &str| {
        let _ = writeln!(s, "add rule bridge {TABLE} {chain} {body} {}", drop(body));
    };
    for p in ports {
        let name = &p.name;
        // 0.0.0.0 and :: are what DHCP discovery and duplicate address detection send from.
        let src4 = set(p.v4.iter().copied().map(IpNet::V4), &["0.0.0.0"]);
        let src6 = set(p.v6.iter().copied().map(IpNet::V6), &["::", "fe80::/10"]);
        for chain in ["check_fwd", "check_in"] {
            rule(
                &mut s,
                chain,
                &format!("iifname \"{name}\" arp saddr ip != {src4}"),
            );
            rule(
                &mut s,
                chain,
                &format!("iifname \"{name}\" ip saddr != {src4}"),
            );
            rule(
                &mut s,
                chain,
                &format!("iifname \"{name}\" ip6 saddr != {src6}"),
            );
        }
    }
    for p in ports {
        let name = &p.name;
        let dst4 = set(p.v4.iter().copied().map(IpNet::V4), &[]);
        let dst6 = set(p.v6.iter().copied().map(IpNet::V6), &["fe80::/10"]);
        // Broadcast and multicast (ARP requests, ND, RAs) reach every port, as in a VPC.
        let unicast = "ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00";
        for chain in ["check_fwd", "check_out"] {
            rule(
                &mut s,
                chain,
                &format!("oifname \"{name}\" {unicast} ip daddr != {dst4}"),
            );
            rule(
                &mut s,
                chain,
                &format!("oifname \"{name}\" {unicast} ip6 daddr != {dst6}"),
            );
        }
    }
    s
}

fn port_counter(port: &str) -> String {
    format!("{COUNTER}_{port}")
}

/// The verdict of a rule whose body starts with `iifname "P"` or `oifname "P"`: count in the
/// total and in P's counter, then drop.
fn drop(body: &str) -> String {
    let port = body.split('"').nth(1).unwrap_or_default();
    format!(
        "counter name \"{COUNTER}\" counter name \"{}\" drop",
        port_counter(port)
    )
}

/// An nft anonymous set; nets contained in another member are left out, since nft refuses
/// overlapping intervals.
fn set(nets: impl Iterator<Item = IpNet>, extra: &[&str]) -> String {
    let mut all: Vec<IpNet> = nets.collect();
    all.extend(extra.iter().map(|e| {
        e.parse::<IpNet>()
            .or_else(|_| e.parse::<std::net::IpAddr>().map(IpNet::from))
            .expect("constant address")
    }));
    let all = IpNet::aggregate(&all);
    if all.is_empty() {
        // An ENI always has a primary IPv4; an impossible address keeps the syntax valid.
        return "{ 255.255.255.255 }".to_string();
    }
    let items: Vec<String> = all
        .iter()
        .map(|n| match n {
            IpNet::V4(n) if n.prefix_len() == 32 => n.addr().to_string(),
            IpNet::V6(n) if n.prefix_len() == 128 => n.addr().to_string(),
            n => n.to_string(),
        })
        .collect();
    format!("{{ {} }}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_merge_contained_addresses() {
        let s = set(
            ["10.0.1.70/32", "10.0.1.64/28", "10.0.1.11/32"]
                .iter()
                .map(|n| n.parse().unwrap()),
            &["0.0.0.0"],
        );
        assert_eq!(s, "{ 0.0.0.0, 10.0.1.11, 10.0.1.64/28 }");
    }

    #[test]
    fn rules_check_sources_before_destinations() {
        let port = Port {
            name: "e1".into(),
            v4: vec!["10.0.1.11/32".parse().unwrap()],
            v6: vec![],
        };
        let text = render(&[port]);
        let first_out = text.find("oifname").unwrap();
        let last_in = text.rfind("iifname").unwrap();
        assert!(last_in < first_out, "{text}");
        assert!(text.contains("iifname \"e1\" arp saddr ip != { 0.0.0.0, 10.0.1.11 }"));
        assert!(text.starts_with("flush chain bridge srcdst check_fwd\n"));
        assert!(text.contains("add counter bridge srcdst drops_e1\n"));
        assert!(text.contains("ip saddr != { 0.0.0.0, 10.0.1.11 } counter name \"drops\" counter name \"drops_e1\" drop\n"), "{text}");
    }
}
