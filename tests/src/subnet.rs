//! A VPC subnet: a bridge in the router namespace plus its address bookkeeping.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::error::{Error, Result};

/// A subnet of a [`crate::Vpc`]. Cheap to clone; all clones are the same subnet.
#[derive(Clone, Debug)]
pub struct Subnet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: String,
    vpc_id: String,
    cidr: Ipv4Net,
    cidr_v6: Option<Ipv6Net>,
    bridge: String,
    router_mac: [u8; 6],
    used: Mutex<BTreeSet<IpAddr>>,
}

impl Subnet {
    pub(crate) fn new(
        id: String,
        vpc_id: String,
        cidr: Ipv4Net,
        cidr_v6: Option<Ipv6Net>,
        bridge: String,
        router_mac: [u8; 6],
    ) -> Self {
        Subnet {
            inner: Arc::new(Inner {
                id,
                vpc_id,
                cidr,
                cidr_v6,
                bridge,
                router_mac,
                used: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// A subnet that exists only on paper, for writing IMDS metadata without a VPC (no root
    /// needed); a [`crate::Vpc`] refuses to attach ENIs in it.
    pub fn unattached(cidr_v4: &str, cidr_v6: Option<&str>) -> Result<Subnet> {
        let (cidr, cidr_v6) = parse_cidrs(cidr_v4, cidr_v6)?;
        let id = format!("subnet-0{:016x}", u32::from(cidr.network()));
        Ok(Subnet::new(
            id,
            "vpc-0000000000000000a".into(),
            cidr,
            cidr_v6,
            String::new(),
            [2, 0, 0x5e, 0, 0, 1],
        ))
    }

    /// `subnet-...`, as IMDS and the EC2 API name it.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The owning VPC's `vpc-...` id.
    pub fn vpc_id(&self) -> &str {
        &self.inner.vpc_id
    }

    /// The IPv4 CIDR block, e.g. `10.0.1.0/24`.
    pub fn cidr(&self) -> Ipv4Net {
        self.inner.cidr
    }

    /// The router's address in the subnet: its first host, as in a VPC.
    pub fn gateway(&self) -> Ipv4Addr {
        first_host_v4(self.inner.cidr)
    }

    /// The IPv6 /64, if the subnet has one.
    pub fn ipv6_prefix(&self) -> Option<Ipv6Net> {
        self.inner.cidr_v6
    }

    /// The router's global IPv6 address (`<prefix>::1`); instances route via its link-local
    /// address, learned from router advertisements.
    pub fn ipv6_gateway(&self) -> Option<Ipv6Addr> {
        self.inner.cidr_v6.map(first_host_v6)
    }

    /// The router's MAC on this subnet (fixed, so its link-local address is known).
    pub fn router_mac(&self) -> String {
        let m = self.inner.router_mac;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }

    /// The router's link-local address on this subnet: the IPv6 next hop instances learn from
    /// its router advertisements (`default via fe80::... dev ethN`).
    pub fn ipv6_router_link_local(&self) -> Ipv6Addr {
        let m = self.inner.router_mac;
        // Modified EUI-64, as the kernel derives it from the MAC.
        let iid = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
        let mut octets = [0u8; 16];
        octets[0] = 0xfe;
        octets[1] = 0x80;
        octets[8..].copy_from_slice(&iid);
        Ipv6Addr::from(octets)
    }

    /// The bridge's name in the router namespace.
    pub fn bridge(&self) -> &str {
        &self.inner.bridge
    }

    /// A free IPv4 address (AWS reserves the first four and the last; the testbed starts at
    /// the tenth host to leave room for hand-picked ones). Marks it used.
    pub fn allocate_ipv4(&self) -> Result<Ipv4Addr> {
        let mut used = self.lock();
        let net = self.inner.cidr;
        net.hosts()
            .skip(9)
            .take_while(|a| *a != net.broadcast())
            .find(|a| !used.contains(&IpAddr::V4(*a)))
            .inspect(|a| {
                used.insert(IpAddr::V4(*a));
            })
            .ok_or_else(|| Error::invalid("subnet", net.to_string(), "no free IPv4 address left"))
    }

    /// A free IPv6 address in the subnet's /64 (from `<prefix>::10`). Marks it used.
    pub fn allocate_ipv6(&self) -> Result<Ipv6Addr> {
        let net = self.inner.cidr_v6.ok_or_else(|| {
            Error::invalid("subnet", self.inner.cidr.to_string(), "has no IPv6 prefix")
        })?;
        let mut used = self.lock();
        let base = u128::from(net.network());
        let addr = (0x10u128..0x10000)
            .map(|i| Ipv6Addr::from(base + i))
            .find(|a| !used.contains(&IpAddr::V6(*a)))
            .ok_or_else(|| Error::invalid("subnet", net.to_string(), "no free IPv6 address"))?;
        used.insert(IpAddr::V6(addr));
        Ok(addr)
    }

    /// Checks that `addr` belongs here and is free, then marks it used (as EC2 refuses an
    /// address that another interface holds).
    pub(crate) fn claim(&self, addr: IpAddr) -> Result<()> {
        let inside = match addr {
            IpAddr::V4(a) => {
                let net = self.inner.cidr;
                net.contains(&a)
                    && a != net.network()
                    && a != net.broadcast()
                    && a != self.gateway()
            }
            IpAddr::V6(a) => self
                .inner
                .cidr_v6
                .is_some_and(|net| net.contains(&a) && a != first_host_v6(net)),
        };
        if !inside {
            return Err(Error::invalid(
                "address",
                addr.to_string(),
                format!(
                    "not a usable host of subnet {} ({:?})",
                    self.inner.cidr, self.inner.cidr_v6
                ),
            ));
        }
        if !self.lock().insert(addr) {
            return Err(Error::invalid(
                "address",
                addr.to_string(),
                format!("already in use in subnet {}", self.inner.cidr),
            ));
        }
        Ok(())
    }

    pub(crate) fn release(&self, addr: IpAddr) {
        self.lock().remove(&addr);
    }

    pub(crate) fn same(&self, other: &Subnet) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<IpAddr>> {
        self.inner.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Parses and checks a subnet's blocks as a VPC would: IPv4 /16 to /28, IPv6 /64.
pub(crate) fn parse_cidrs(
    cidr_v4: &str,
    cidr_v6: Option<&str>,
) -> Result<(Ipv4Net, Option<Ipv6Net>)> {
    let cidr: Ipv4Net = cidr_v4
        .parse()
        .map_err(|e| Error::invalid("IPv4 CIDR", cidr_v4, e))?;
    if cidr.trunc() != cidr || !(16..=28).contains(&cidr.prefix_len()) {
        return Err(Error::invalid(
            "IPv4 CIDR",
            cidr_v4,
            "must be a network address with a /16 to /28 mask, as in a VPC",
        ));
    }
    let cidr_v6 = match cidr_v6 {
        None => None,
        Some(v6) => {
            let net: Ipv6Net = v6.parse().map_err(|e| Error::invalid("IPv6 CIDR", v6, e))?;
            if net.prefix_len() != 64 || net.trunc() != net {
                return Err(Error::invalid(
                    "IPv6 CIDR",
                    v6,
                    "VPC subnets are /64 networks",
                ));
            }
            Some(net)
        }
    };
    Ok((cidr, cidr_v6))
}

fn first_host_v4(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

fn first_host_v6(net: Ipv6Net) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(net.network()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet() -> Subnet {
        Subnet::new(
            "subnet-1".into(),
            "vpc-1".into(),
            "10.0.1.0/28".parse().unwrap(),
            Some("2001:db8:1::/64".parse().unwrap()),
            "br1".into(),
            [2, 0, 0x5e, 0, 1, 1],
        )
    }

    #[test]
    fn unattached_subnets_check_their_blocks() {
        assert!(Subnet::unattached("10.0.1.0/24", Some("2001:db8::/64")).is_ok());
        assert!(Subnet::unattached("10.0.1.5/24", None).is_err());
        assert!(Subnet::unattached("10.0.0.0/8", None).is_err());
        assert!(Subnet::unattached("10.0.1.0/24", Some("2001:db8::/56")).is_err());
    }

    #[test]
    fn router_link_local_is_the_eui64_of_its_mac() {
        let s = subnet();
        assert_eq!(s.router_mac(), "02:00:5e:00:01:01");
        assert_eq!(
            s.ipv6_router_link_local(),
            "fe80::5eff:fe00:101".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn gateway_is_first_host() {
        let s = subnet();
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(s.ipv6_gateway(), Some("2001:db8:1::1".parse().unwrap()));
    }

    #[test]
    fn allocation_skips_claimed_addresses_and_runs_out() {
        let s = subnet();
        s.claim("10.0.1.10".parse().unwrap()).unwrap();
        assert_eq!(s.allocate_ipv4().unwrap(), Ipv4Addr::new(10, 0, 1, 11));
        for _ in 12..=14 {
            s.allocate_ipv4().unwrap();
        }
        assert!(s.allocate_ipv4().is_err(), "10.0.1.15 is the broadcast");
    }

    #[test]
    fn claim_refuses_duplicates_and_foreign_addresses() {
        let s = subnet();
        s.claim("10.0.1.5".parse().unwrap()).unwrap();
        assert!(s.claim("10.0.1.5".parse().unwrap()).is_err());
        assert!(s.claim("10.0.2.5".parse().unwrap()).is_err());
        assert!(s.claim("10.0.1.1".parse().unwrap()).is_err());
        assert!(s.claim("2001:db8:2::5".parse().unwrap()).is_err());
        s.claim("2001:db8:1::5".parse().unwrap()).unwrap();
        s.release("10.0.1.5".parse().unwrap());
        s.claim("10.0.1.5".parse().unwrap()).unwrap();
    }
}
