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

impl Vpc {
    /// Adds a local peer of `instance`, the way Docker adds a container: a bridge `bridge` in the
    /// instance holding `gateway/len` (created on first use), and a namespace of its own on that
    /// bridge with `ip` and a default route via the bridge. Its traffic never enters the VPC.
    pub fn add_local_peer(
        &self,
        instance: &Host,
        bridge: &str,
        gateway_cidr: &str,
        ip: &str,
    ) -> Result<Host> {
        let gw: ipnet::Ipv4Net = gateway_cidr
            .parse()
            .map_err(|e| Error::invalid("bridge address", gateway_cidr, e))?;
        let addr: std::net::Ipv4Addr = ip
            .parse()
            .map_err(|e| Error::invalid("local peer address", ip, e))?;
        if !gw.contains(&addr) {
            return Err(Error::invalid(
                "local peer address",
                ip,
                "outside the bridge's net",
            ));
        }
        let (ns, port) = {
            let mut st = self.lock();
            st.clients += 1;
            (
                format!("{}c{}", self.prefix, st.clients),
                format!("veth{}", st.clients),
            )
        };
        self.new_namespace(&ns)?;
        let i = Some(instance.name());
        let has_bridge = cmd::ip(i, &["link", "show", bridge]).is_ok();
        if !has_bridge {
            cmd::ipl(
                i,
                &format!("link add {bridge} type bridge stp_state 0 forward_delay 0"),
            )?;
            cmd::ipl(i, &format!("addr add {gateway_cidr} dev {bridge}"))?;
            cmd::ipl(i, &format!("link set {bridge} up"))?;
        }
        cmd::ipl(
            i,
            &format!("link add {port} type veth peer name eth0 netns {ns}"),
        )?;
        cmd::ipl(i, &format!("link set {port} master {bridge} up"))?;
        let c = Some(ns.as_str());
        cmd::ip(c, &["link", "set", "eth0", "up"])?;
        cmd::ipl(c, &format!("addr add {addr}/{} dev eth0", gw.prefix_len()))?;
        cmd::ipl(c, &format!("route add default via {} dev eth0", gw.addr()))?;
        Ok(Host::new(ns))
    }
}
