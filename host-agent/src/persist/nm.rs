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

use super::{EniConfig, FileOp};
use crate::ops::RuleSpec;

pub const DIR: &str = "/etc/NetworkManager/system-connections";

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
    let mut s = eni.header();
    let _ = writeln!(
        s,
        "# Policy routing for {} ({}), matched by MAC.",
        eni.ifname, eni.eni_id
    );
    // NetworkManager activates the matching profile with the highest autoconnect priority.
    // cloud-init's own profiles carry 120 (cloudinit/net/network_manager.py) and NM's
    // "Wired connection" defaults -999: ours must outrank both, or cloud-init's DHCP-only
    // profile for this ENI is the one that comes up at boot.
    let _ = writeln!(
        s,
        "[connection]\nid=symroute-{}\nuuid={}\ntype=ethernet\nautoconnect-priority={AUTOCONNECT_PRIORITY}\n\n[ethernet]\nmac-address={}\n",
        eni.ifname,
        uuid(eni),
        eni.mac.to_string().to_uppercase()
    );
    if let Some(m) = eni.mtu {
        // The VPC's MTU as DHCP had set it: this profile is static (method=manual).
        s.pop();
        let _ = writeln!(s, "mtu={m}\n");
    }
    if eni.addrs_v4.is_empty() {
        // An IPv6-only ENI. `manual` needs an address (libnm's verify() refuses it without),
        // and DHCPv4 in an IPv6-only subnet only hands out a link-local 169.254 address.
        s.push_str("[ipv4]\nmethod=disabled\n");
    } else {
        s.push_str("[ipv4]\nmethod=manual\n");
    }
    for (i, a) in eni.addrs_v4.iter().enumerate() {
        let _ = writeln!(s, "address{}={a}", i + 1);
    }
    if !eni.addrs_v4.is_empty() {
        let _ = writeln!(s, "route-table={}", eni.table);
    }
    // The subnet route is the prefix route NetworkManager adds for the addresses (in the table).
    let mut n = 0;
    for r in eni.routes_v4().filter(|r| r.gateway.is_some()) {
        n += 1;
        let _ = writeln!(s, "route{n}={},{}", r.dst, r.gateway.unwrap());
    }
    routing_rules(&mut s, eni.rules_v4());
    s.push_str("\n[ipv6]\n");
    if eni.addrs_v6.is_empty() {
        s.push_str("method=ignore\n");
    } else {
        // Router advertisements bring the subnet and default routes (into the table).
        s.push_str("method=auto\n");
        for (i, a) in eni.addrs_v6.iter().enumerate() {
            let _ = writeln!(s, "address{}={a}", i + 1);
        }
        let _ = writeln!(s, "route-table={}", eni.table);
        routing_rules(&mut s, eni.rules_v6());
    }
    let path = Path::new(DIR).join(format!("symroute-{}.nmconnection", eni.ifname));
    // NetworkManager ignores keyfiles that others than root can read.
    vec![FileOp::text(path, s, 0o600)]
}

/// `routing-ruleN` lines, in `ip rule` syntax as NetworkManager parses it (table by number);
/// NetworkManager numbers them per address family section.
fn routing_rules<'a>(s: &mut String, rules: impl Iterator<Item = &'a RuleSpec>) {
    for (i, r) in rules.enumerate() {
        let _ = write!(
            s,
            "routing-rule{}=priority {} from {}",
            i + 1,
            r.priority,
            r.src
        );
        if let Some(d) = r.dst {
            let _ = write!(s, " to {d}");
        }
        let _ = write!(s, " table {}", r.table);
        if let Some(n) = r.suppress_prefixlength {
            let _ = write!(s, " suppress_prefixlength {n}");
        }
        s.push('\n');
    }
}
