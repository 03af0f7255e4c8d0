//! The VPC's DHCP service for guests: dnsmasq in the router namespace, one static lease per
//! ENI (its MAC, its primary address), as EC2's DHCP answers only for attached ENIs. On a subnet
//! with an IPv6 /64 it is also the DHCPv6 server (stateful, as in a VPC: radvd's RAs carry the
//! M flag), leasing the ENI's first IPv6 address to its MAC.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use crate::cmd;
use crate::error::{Error, Result};
use crate::subnet::Subnet;
use crate::Eni;

/// A running dnsmasq; stops on drop.
pub struct Dhcp {
    child: Child,
    hosts: PathBuf,
    /// MAC and the addresses leased to it (`10.0.1.10` or `10.0.1.10,[2600:…]`).
    entries: Vec<(String, String)>,
    log: PathBuf,
}

impl Dhcp {
    /// Serves `subnets` (their bridges in `router_ns`) with leases of `lease_secs` (dnsmasq's
    /// minimum is 120): short leases make renewals happen while a test runs. Subnets with an
    /// IPv6 /64 get DHCPv6 too (static: only the hosts file's addresses).
    pub fn start(
        router_ns: &str,
        subnets: &[&Subnet],
        dir: &Path,
        lease_secs: u32,
    ) -> Result<Dhcp> {
        let hosts = dir.join("dhcp-hosts");
        let log = dir.join("dnsmasq.log");
        std::fs::write(&hosts, "")?;
        let mut cmd = cmd::in_netns(router_ns, "dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0", // no DNS: nothing to resolve in the lab
            "--bind-interfaces",
            "--leasefile-ro",
            "--dhcp-authoritative",
            "--pid-file=",
            "--user=root",
            "--log-dhcp",
        ])
        .arg(format!("--log-facility={}", log.display()))
        .arg(format!("--dhcp-hostsfile={}", hosts.display()));
        for s in subnets {
            let net = s.cidr();
            cmd.arg(format!("--interface={}", s.bridge())).arg(format!(
                "--dhcp-range={},static,{},{lease_secs}",
                net.network(),
                net.netmask()
            ));
            if let Some(v6) = s.ipv6_prefix() {
                cmd.arg(format!(
                    "--dhcp-range={},static,{},{lease_secs}",
                    v6.network(),
                    v6.prefix_len()
                ));
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: "dnsmasq".into(),
                source,
            })?;
        let mut dhcp = Dhcp {
            child,
            hosts,
            entries: Vec::new(),
            log,
        };
        dhcp.wait_started()?;
        Ok(dhcp)
    }

    /// Waits until dnsmasq has read its hosts file: a SIGHUP sent before it installed its
    /// handler kills it (the default action), silently (seen: a lab whose DHCP never answered,
    /// its log empty).
    fn wait_started(&mut self) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let marker = format!("read {}", self.hosts.display());
        loop {
            self.check_running()?;
            if self.log().contains(&marker) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::Timeout {
                    what: format!("dnsmasq to start; its log:\n{}", self.log()),
                    secs: 15,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Leases the ENI's primary IPv4, and its first IPv6 address if it has one, to its MAC
    /// (from the next request on). dnsmasq finds a DHCPv6 client's MAC in the router's
    /// neighbour table (the client's RS and DAD put it there), as no DUID type is forced here.
    pub fn add(&mut self, eni: &Eni) -> Result<()> {
        let mut leased = eni.primary_ipv4().to_string();
        if let Some(v6) = eni.ipv6s().first() {
            leased.push_str(&format!(",[{v6}]"));
        }
        self.entries.push((eni.mac().to_string(), leased));
        self.reload()
    }

    /// Stops leasing to the ENI's MAC.
    pub fn remove(&mut self, eni: &Eni) -> Result<()> {
        self.entries.retain(|(mac, _)| mac != eni.mac());
        self.reload()
    }

    /// dnsmasq's log (every DHCP exchange), for a failing test to show.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An error carrying dnsmasq's log if it has exited.
    fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => Err(Error::Command {
                cmd: "dnsmasq".into(),
                status: status.to_string(),
                stderr: self.log(),
            }),
            None => Ok(()),
        }
    }

    fn reload(&mut self) -> Result<()> {
        let text: String = self
            .entries
            .iter()
            .map(|(mac, ip)| format!("{mac},{ip}\n"))
            .collect();
        std::fs::write(&self.hosts, text)?;
        self.check_running()?;
        // dnsmasq re-reads --dhcp-hostsfile on SIGHUP.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
            .map_err(|e| Error::Io(e.into()))?;
        Ok(())
    }
}

impl Drop for Dhcp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
