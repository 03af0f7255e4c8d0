//! NetworkManager (RHEL/Rocky/Alma 8 and 9, Fedora, CentOS Stream): a keyfile profile of our
//! own, `/etc/NetworkManager/system-connections/symroute-<ifname>.nmconnection`, matched by
//! MAC, with `route-table`, the table's default route and `routing-rule1..N`.
//!
//! With `route-table=T`, NetworkManager puts every route of the profile into table T, the
//! prefix routes of its addresses and the IPv6 routes learned from router advertisements
//! included, which is exactly the per-ENI table; the main table keeps the primary's routes.
//! A profile for the interface makes NetworkManager stop creating its automatic DHCP profile.

use std::fmt::Write as _;
use std::path::Path;

use super::ini::{self, Section};
use super::{Backend, EniConfig, FileOp, Manager, Root};
use crate::error::Result;
use crate::model::Mac;
use crate::ops::RuleSpec;

pub const DIR: &str = "/etc/NetworkManager/system-connections";

/// NetworkManager runs this boot (its runtime directory), or starts at the next one.
pub(crate) const NM_ACTIVE: &[&str] = &[
    "/run/NetworkManager",
    "/etc/systemd/system/multi-user.target.wants/NetworkManager.service",
    "/etc/systemd/system/network-online.target.wants/NetworkManager-wait-online.service",
];

/// Why NetworkManager will bring the profile up: it runs, or is enabled to start at boot.
pub(crate) fn active(root: &Root) -> Option<&'static str> {
    NM_ACTIVE.iter().copied().find(|p| root.exists(p))
}

pub(crate) struct Nm;

impl Manager for Nm {
    fn backend(&self) -> Backend {
        Backend::Nm
    }

    /// Installed is not enough (seen: ifupdown running, NetworkManager installed but disabled,
    /// and a keyfile nobody read): it runs now, or is enabled to start at boot.
    fn detect(&self, root: &Root, _: &[(String, Mac)]) -> Option<(Backend, String)> {
        if !root.exists("/etc/NetworkManager") {
            return None;
        }
        active(root).map(|why| (Backend::Nm, format!("detected: NetworkManager ({why})")))
    }

    fn render(&self, _: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
        Ok(render(eni))
    }

    fn dirs(&self) -> &'static [&'static str] {
        &[DIR]
    }
}

/// A stable UUID for the profile (NetworkManager refuses one without), derived from the ENI so
/// that re-applying writes the same file. RFC 9562 version 8 (application-defined).
pub fn uuid(eni: &EniConfig) -> String {
    let key = format!("symroute {} {}", eni.eni_id, eni.mac);
    let fnv = |seed: u64| {
        key.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let hi = fnv(0xcbf2_9ce4_8422_2325);
    let lo = fnv(0x8422_2325_cbf2_9ce4);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Above cloud-init's 120 (NetworkManager accepts -999 to 999).
pub(crate) const AUTOCONNECT_PRIORITY: i32 = 200;

pub fn render(eni: &EniConfig) -> Vec<FileOp> {
    // NetworkManager activates the matching profile with the highest autoconnect priority.
    // cloud-init's own profiles carry 120 (cloudinit/net/network_manager.py) and NM's
    // "Wired connection" defaults -999: ours must outrank both, or cloud-init's DHCP-only
    // profile for this ENI is the one that comes up at boot.
    let connection = Section::new("connection")
        .above(format!(
            "Policy routing for {} ({}), matched by MAC.",
            eni.ifname, eni.eni_id
        ))
        .set("id", format!("symroute-{}", eni.ifname))
        .set("uuid", uuid(eni))
        .set("type", "ethernet")
        .set("autoconnect-priority", AUTOCONNECT_PRIORITY);
    let ethernet = Section::new("ethernet")
        .set("mac-address", eni.mac.to_string().to_uppercase())
        // The VPC's MTU as DHCP had set it: this profile is static (method=manual).
        .set_some("mtu", eni.mtu);
    let mut ipv4 = if eni.addrs_v4.is_empty() {
        // An IPv6-only ENI. `manual` needs an address (libnm's verify() refuses it without),
        // and DHCPv4 in an IPv6-only subnet only hands out a link-local 169.254 address.
        Section::new("ipv4").set("method", "disabled")
    } else {
        Section::new("ipv4").set("method", "manual")
    };
    for (i, a) in eni.addrs_v4.iter().enumerate() {
        ipv4.push(&format!("address{}", i + 1), a);
    }
    if !eni.addrs_v4.is_empty() {
        ipv4.push("route-table", eni.table);
    }
    // The subnet route is the prefix route NetworkManager adds for the addresses (in the table).
    for (n, r) in eni.routes_v4().filter(|r| r.gateway.is_some()).enumerate() {
        ipv4.push(
            &format!("route{}", n + 1),
            format!("{},{}", r.dst, r.gateway.unwrap()),
        );
    }
    routing_rules(&mut ipv4, eni.rules_v4());
    let mut ipv6 = Section::new("ipv6");
    if eni.addrs_v6.is_empty() {
        ipv6.push("method", "ignore");
    } else {
        // Router advertisements bring the subnet and default routes (into the table).
        ipv6.push("method", "auto");
        for (i, a) in eni.addrs_v6.iter().enumerate() {
            ipv6.push(&format!("address{}", i + 1), a);
        }
        ipv6.push("route-table", eni.table);
        routing_rules(&mut ipv6, eni.rules_v6());
    }
    let text = ini::render(
        eni.header(),
        &[connection.into(), ethernet.into(), ipv4.into(), ipv6.into()],
    );
    let path = Path::new(DIR).join(format!("symroute-{}.nmconnection", eni.ifname));
    // NetworkManager ignores keyfiles that others than root can read.
    vec![FileOp::text(path, text, 0o600)]
}

/// `routing-ruleN` entries, in `ip rule` syntax as NetworkManager parses it (table by number);
/// NetworkManager numbers them per address family section.
fn routing_rules<'a>(section: &mut Section, rules: impl Iterator<Item = &'a RuleSpec>) {
    for (i, r) in rules.enumerate() {
        let mut v = format!("priority {} from {}", r.priority, r.src);
        if let Some(d) = r.dst {
            let _ = write!(v, " to {d}");
        }
        let _ = write!(v, " table {}", r.table);
        if let Some(n) = r.suppress_prefixlength {
            let _ = write!(v, " suppress_prefixlength {n}");
        }
        section.push(&format!("routing-rule{}", i + 1), v);
    }
}
