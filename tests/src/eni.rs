//! What an ENI is made of ([`EniSpec`]) and the attached result ([`Eni`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::error::{Error, Result};
use crate::subnet::Subnet;

/// How the instance's OS has set the interface up by the time the test looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    /// Link down, no address (RHEL/CentOS 7 without ec2-net-utils).
    Unconfigured,
    /// What a DHCP client leaves: link up, primary IPv4 with the subnet's prefix length and
    /// its connected route, the spec's IPv6 addresses (/128, as DHCPv6 gives them); with
    /// `default_metric`, also a main-table default via the gateway with that metric. The
    /// connected route is the kernel's (metric 0), so of two ENIs in one subnet the one
    /// attached first carries same-subnet replies. Secondary IPv4s are not configured (no DHCP
    /// client does that).
    Dhcp { default_metric: Option<u32> },
}

impl Default for Config {
    /// A secondary interface as a DHCP client on most distributions brings it up.
    fn default() -> Self {
        Config::Dhcp {
            default_metric: None,
        }
    }
}

/// An ENI to attach. Build with [`EniSpec::new`] and the chained setters; fields are public
/// for reading and for tests that prefer to fill them directly.
#[derive(Clone, Debug)]
pub struct EniSpec {
    /// Kernel name inside the instance (`eth0`, `eth1`, `ens6`, ...).
    pub ifname: String,
    /// MAC address, lower case `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    pub subnet: Subnet,
    /// Private IPv4 addresses, the primary first. Empty: one is allocated at attach.
    pub ipv4s: Vec<Ipv4Addr>,
    /// Delegated IPv4 prefixes (`ipv4-prefix` in IMDS).
    pub ipv4_prefixes: Vec<Ipv4Net>,
    pub ipv6s: Vec<Ipv6Addr>,
    /// Delegated IPv6 prefixes (`ipv6-prefix` in IMDS): the router routes them via the ENI's
    /// first IPv6 address.
    pub ipv6_prefixes: Vec<Ipv6Net>,
    /// An ENI in an IPv6-only subnet: no IPv4 at all (none allocated at attach; IMDS publishes
    /// neither `local-ipv4s` nor `subnet-ipv4-cidr-block`), one IPv6 allocated if none is given.
    /// The testbed's subnet keeps its IPv4 block for the other ENIs; the source/destination
    /// check drops any IPv4 this ENI sends, as the VPC would.
    pub ipv6_only: bool,
    pub config: Config,
}

impl EniSpec {
    /// A spec with a fresh unique MAC, no address yet (one is allocated at attach unless
    /// [`EniSpec::ip`] adds some) and [`Config::default`].
    pub fn new(ifname: &str, subnet: &Subnet) -> Self {
        EniSpec {
            ifname: ifname.to_string(),
            mac: fresh_mac(),
            subnet: subnet.clone(),
            ipv4s: Vec::new(),
            ipv4_prefixes: Vec::new(),
            ipv6s: Vec::new(),
            ipv6_prefixes: Vec::new(),
            ipv6_only: false,
            config: Config::default(),
        }
    }

    /// The usual primary interface: `eth0`, DHCP, default route metric 100.
    pub fn primary(subnet: &Subnet) -> Self {
        EniSpec::new("eth0", subnet).config(Config::Dhcp {
            default_metric: Some(100),
        })
    }

    pub fn mac(mut self, mac: &str) -> Self {
        self.mac = mac.to_ascii_lowercase();
        self
    }

    /// Adds a private IPv4 address (the first one added is the primary).
    /// Panics on a malformed literal: specs are written by hand in tests.
    pub fn ip(mut self, addr: &str) -> Self {
        self.ipv4s.push(parse(addr, "IPv4 address"));
        self
    }

    /// Adds a delegated IPv4 prefix such as `10.0.1.64/28`. Panics on a malformed literal.
    pub fn prefix(mut self, cidr: &str) -> Self {
        self.ipv4_prefixes.push(parse(cidr, "IPv4 prefix"));
        self
    }

    /// Adds an IPv6 address. Panics on a malformed literal.
    pub fn ipv6(mut self, addr: &str) -> Self {
        self.ipv6s.push(parse(addr, "IPv6 address"));
        self
    }

    /// Adds a delegated IPv6 prefix such as `2600:1f18:1:1:8000::/80`. Panics on a malformed
    /// literal.
    pub fn ipv6_prefix(mut self, cidr: &str) -> Self {
        self.ipv6_prefixes.push(parse(cidr, "IPv6 prefix"));
        self
    }

    /// Makes it an IPv6-only ENI (see [`EniSpec::ipv6_only`]).
    pub fn ipv6_only(mut self) -> Self {
        self.ipv6_only = true;
        self
    }

    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The primary private IPv4, if one is set yet.
    pub fn primary_ipv4(&self) -> Option<Ipv4Addr> {
        self.ipv4s.first().copied()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad_char = |c: char| c == '/' || c == ':' || c.is_whitespace();
        if self.ifname.is_empty() || self.ifname.len() > 15 || self.ifname.contains(bad_char) {
            return Err(Error::invalid(
                "interface name",
                &self.ifname,
                "needs 1 to 15 characters, none of them `/`, `:` or blanks (kernel rules)",
            ));
        }
        let octets: Vec<_> = self.mac.split(':').collect();
        let hex_ok = octets.len() == 6
            && octets
                .iter()
                .all(|o| o.len() == 2 && u8::from_str_radix(o, 16).is_ok());
        if !hex_ok {
            return Err(Error::invalid(
                "MAC",
                &self.mac,
                "expected xx:xx:xx:xx:xx:xx",
            ));
        }
        if u8::from_str_radix(octets[0], 16).is_ok_and(|b| b & 1 == 1) {
            return Err(Error::invalid("MAC", &self.mac, "is a multicast address"));
        }
        if self.ipv6_only && (!self.ipv4s.is_empty() || !self.ipv4_prefixes.is_empty()) {
            return Err(Error::invalid(
                "IPv6-only ENI",
                &self.mac,
                "has IPv4 addresses or prefixes",
            ));
        }
        if self.ipv6_only && self.subnet.ipv6_prefix().is_none() {
            return Err(Error::invalid(
                "IPv6-only ENI",
                &self.mac,
                format!("subnet {} has no IPv6 block", self.subnet.cidr()),
            ));
        }
        for p in &self.ipv6_prefixes {
            let inside = self.subnet.ipv6_prefix().is_some_and(|n| n.contains(p));
            if !inside || p.trunc() != *p || self.ipv6s.is_empty() {
                return Err(Error::invalid(
                    "IPv6 prefix",
                    p.to_string(),
                    "must be a network inside the subnet's IPv6 block, on an ENI with an IPv6 address",
                ));
            }
        }
        for p in &self.ipv4_prefixes {
            if !self.subnet.cidr().contains(p) || p.trunc() != *p {
                return Err(Error::invalid(
                    "IPv4 prefix",
                    p.to_string(),
                    format!("must be a network inside subnet {}", self.subnet.cidr()),
                ));
            }
        }
        Ok(())
    }

    /// Every address the ENI owns, for claiming them in the subnet.
    pub(crate) fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4s
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.ipv6s.iter().map(|a| IpAddr::V6(*a)))
    }
}

fn parse<T: std::str::FromStr>(value: &str, what: &str) -> T
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .unwrap_or_else(|e| panic!("EniSpec: invalid {what} `{value}`: {e}"))
}

/// A locally administered MAC unique within this process (pid in the middle octets keeps
/// parallel test processes apart too, should their frames ever meet).
fn fresh_mac() -> String {
    static N: AtomicU32 = AtomicU32::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!(
        "0a:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (pid >> 8) as u8,
        pid as u8,
        (n >> 16) as u8,
        (n >> 8) as u8,
        n as u8
    )
}

/// An attached ENI. The spec is complete here: `ipv4s` is never empty, except on an IPv6-only
/// ENI, whose `ipv6s` is never empty.
#[derive(Clone, Debug)]
pub struct Eni {
    pub(crate) spec: EniSpec,
    pub(crate) port: String,
    /// The instance namespace holding the far end; `None` for a virtual machine's tap.
    pub(crate) instance_ns: Option<String>,
}

impl Eni {
    /// The resolved spec (with the allocated primary address, if it was left empty).
    pub fn spec(&self) -> &EniSpec {
        &self.spec
    }

    pub fn ifname(&self) -> &str {
        &self.spec.ifname
    }

    pub fn mac(&self) -> &str {
        &self.spec.mac
    }

    pub fn subnet(&self) -> &Subnet {
        &self.spec.subnet
    }

    /// The primary private IPv4. Panics on an IPv6-only ENI, which has none.
    pub fn primary_ipv4(&self) -> Ipv4Addr {
        assert!(!self.spec.ipv6_only, "{} is IPv6-only", self.spec.mac);
        self.spec.ipv4s[0]
    }

    pub fn ipv4s(&self) -> &[Ipv4Addr] {
        &self.spec.ipv4s
    }

    pub fn ipv4_prefixes(&self) -> &[Ipv4Net] {
        &self.spec.ipv4_prefixes
    }

    pub fn ipv6s(&self) -> &[Ipv6Addr] {
        &self.spec.ipv6s
    }

    pub fn ipv6_prefixes(&self) -> &[Ipv6Net] {
        &self.spec.ipv6_prefixes
    }

    /// The router-side veth or tap, a port of the subnet's bridge (what the src/dst check
    /// keys on).
    pub fn port(&self) -> &str {
        &self.port
    }

    /// The namespace of the instance it is attached to (empty for a virtual machine's NIC).
    pub fn instance_name(&self) -> &str {
        self.instance_ns.as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet() -> Subnet {
        Subnet::new(
            "subnet-1".into(),
            "vpc-1".into(),
            "10.0.1.0/24".parse().unwrap(),
            None,
            "br1".into(),
            [2, 0, 0x5e, 0, 1, 1],
        )
    }

    #[test]
    fn builder_collects_addresses_in_order() {
        let s = EniSpec::new("eth1", &subnet())
            .ip("10.0.1.20")
            .ip("10.0.1.21")
            .prefix("10.0.1.64/28");
        assert_eq!(s.primary_ipv4(), Some(Ipv4Addr::new(10, 0, 1, 20)));
        assert_eq!(s.ipv4s.len(), 2);
        s.validate().unwrap();
    }

    #[test]
    fn fresh_macs_differ_and_are_unicast() {
        let a = fresh_mac();
        assert_ne!(a, fresh_mac());
        assert!(EniSpec::new("eth1", &subnet()).mac(&a).validate().is_ok());
    }

    #[test]
    fn validation_rejects_bad_names_macs_and_foreign_prefixes() {
        let s = subnet();
        assert!(EniSpec::new("a-very-long-ifname", &s).validate().is_err());
        assert!(EniSpec::new("eth 1", &s).validate().is_err());
        assert!(EniSpec::new("eth1", &s)
            .mac("01:00:00:00:00:01")
            .validate()
            .is_err());
        assert!(EniSpec::new("eth1", &s).mac("zz").validate().is_err());
        assert!(EniSpec::new("eth1", &s)
            .prefix("10.9.0.0/28")
            .validate()
            .is_err());
        assert!(EniSpec::new("eth1", &s)
            .prefix("10.0.1.65/28")
            .validate()
            .is_err());
    }

    #[test]
    #[should_panic(expected = "invalid IPv4 address")]
    fn malformed_literal_panics_with_its_name() {
        let _ = EniSpec::new("eth1", &subnet()).ip("10.0.1");
    }
}
