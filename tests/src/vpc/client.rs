//! Ordinary hosts on a subnet: the other end of the tests' pings.

use std::net::IpAddr;

use super::Vpc;
use crate::cmd;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::subnet::Subnet;

impl Vpc {
    /// Adds an ordinary host on `subnet` with address `ip` (see [`Vpc::add_client_with`]).
    pub fn add_client(&self, subnet: &Subnet, ip: &str) -> Result<Host> {
        self.add_client_with(subnet, &[ip])
    }

    /// Adds an ordinary host on `subnet` with these addresses (IPv4 and/or IPv6) and default
    /// routes via the router. Clients are not src/dst checked.
    pub fn add_client_with(&self, subnet: &Subnet, addrs: &[&str]) -> Result<Host> {
        let addrs: Vec<IpAddr> = addrs
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e| Error::invalid("client address", *a, e))
            })
            .collect::<Result<_>>()?;
        let (ns, port) = {
            let mut st = self.lock();
            st.clients += 1;
            (
                format!("{}c{}", self.prefix, st.clients),
                format!("c{}", st.clients),
            )
        };
        for a in &addrs {
            subnet.claim(*a)?;
        }
        self.new_namespace(&ns)?;
        let r = Some(self.router.name());
        let bridge = subnet.bridge();
        cmd::ipl(
            r,
            &format!("link add {port} type veth peer name eth0 netns {ns}"),
        )?;
        cmd::ipl(
            r,
            &format!("link set {port} master {bridge} addrgenmode none up"),
        )?;
        let c = Some(ns.as_str());
        cmd::ip(c, &["link", "set", "eth0", "up"])?;
        for a in &addrs {
            let (cidr, gw) = match a {
                IpAddr::V4(_) => (
                    format!("{a}/{}", subnet.cidr().prefix_len()),
                    subnet.gateway().to_string(),
                ),
                IpAddr::V6(_) => (
                    format!("{a}/64"),
                    subnet
                        .ipv6_gateway()
                        .ok_or_else(|| {
                            Error::invalid("client address", a.to_string(), "subnet has no IPv6")
                        })?
                        .to_string(),
                ),
            };
            let family = if a.is_ipv4() { "-4" } else { "-6" };
            cmd::ipl(c, &format!("{family} addr add {cidr} dev eth0 nodad"))?;
            cmd::ipl(c, &format!("{family} route add default via {gw} dev eth0"))?;
        }
        Ok(Host::new(ns))
    }
}
