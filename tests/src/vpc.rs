//! The simulated VPC: a router namespace with one bridge per subnet, instances and clients
//! in their own namespaces, and the fabric's rules (static neighbours, src/dst check).

use std::net::IpAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Mutex, MutexGuard};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::cmd;
use crate::eni::{Config, Eni, EniSpec};
use crate::error::{Error, Result};
use crate::netns::{self, Host};
use crate::radvd;
use crate::srcdst;
use crate::subnet::{self, Subnet};

/// Set this variable to keep a VPC's namespaces after the test, to look around with
/// `ip netns exec`; the next test run sweeps them once this process has exited.
pub const KEEP_ENV: &str = "SYMROUTE_TESTBED_KEEP";

/// The AWS account that "owns" every testbed ENI.
pub const OWNER_ID: &str = "123456789012";

/// A VPC in network namespaces. Everything it created goes away on drop, panics included.
pub struct Vpc {
    prefix: String,
    id: String,
    router: Host,
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    namespaces: Vec<String>,
    subnets: Vec<Subnet>,
    enis: Vec<Eni>,
    children: Vec<Child>,
    instances: u32,
    clients: u32,
    ports: u32,
}

/// An EC2 instance: a namespace that ENIs are attached to. Derefs to [`Host`] for
/// `exec`, `ping`, `run_in` and the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    host: Host,
}

impl Deref for Instance {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.host
    }
}

impl Instance {
    pub fn host(&self) -> &Host {
        &self.host
    }
}

impl Vpc {
    /// A VPC with no subnet yet: the router namespace, forwarding on, the src/dst filter
    /// installed. Also removes namespaces that dead testbed processes left behind.
    pub fn new() -> Result<Vpc> {
        netns::sweep_once();
        let prefix = netns::unique_prefix();
        let router_ns = format!("{prefix}r");
        let dir = std::env::temp_dir()
            .join("symroute-testbed")
            .join(prefix.trim_end_matches('-'));
        let vpc = Vpc {
            id: aws_id("vpc", &prefix),
            router: Host::new(router_ns.clone()),
            dir,
            state: Mutex::new(State::default()),
            prefix,
        };
        // From here on, Drop cleans up whatever a failing step leaves.
        std::fs::create_dir_all(&vpc.dir)?;
        vpc.new_namespace(&router_ns)?;
        cmd::run(cmd::in_netns(&router_ns, "sysctl").args([
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            // The router's own addresses must be usable at once (radvd needs its link-local).
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]))?;
        // Measured on this kernel: bridge-family forward chains created before the namespace's
        // first bridge never see a frame (br_netfilter hooks in on the first bridge), so a
        // bridge must exist before the src/dst table does.
        cmd::ip(
            Some(&router_ns),
            &["link", "add", "anchor0", "type", "bridge"],
        )?;
        srcdst::install(&router_ns)?;
        Ok(vpc)
    }

    /// The prefix of every namespace of this VPC (for leftover checks).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `vpc-...`, as IMDS names it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The router namespace.
    pub fn router(&self) -> &Host {
        &self.router
    }

    /// Adds a subnet: a bridge in the router with the subnet's first host on it; with an IPv6
    /// /64, also `<prefix>::1` and radvd advertising the prefix (default route only).
    pub fn add_subnet(&self, cidr_v4: &str, cidr_v6: Option<&str>) -> Result<Subnet> {
        let (cidr, cidr_v6) = subnet::parse_cidrs(cidr_v4, cidr_v6)?;
        let mut st = self.lock();
        if let Some(clash) = st
            .subnets
            .iter()
            .find(|s| s.cidr().contains(&cidr.network()) || cidr.contains(&s.cidr().network()))
        {
            return Err(Error::invalid(
                "IPv4 CIDR",
                cidr_v4,
                format!("overlaps subnet {}", clash.cidr()),
            ));
        }
        let index = st.subnets.len() + 1;
        let bridge = format!("br{index}");
        let subnet = Subnet::new(
            aws_id("subnet", &format!("{}{index}", self.prefix)),
            self.id.clone(),
            cidr,
            cidr_v6,
            bridge.clone(),
            // A fixed MAC keeps the router's link-local address (the instances' IPv6 next
            // hop) stable when ports come and go.
            [0x02, 0x00, 0x5e, (index >> 8) as u8, index as u8, 0x01],
        );
        let r = Some(self.router.name());
        let mac = subnet.router_mac();
        cmd::ip(
            r,
            &[
                "link",
                "add",
                &bridge,
                "address",
                &mac,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        let gw = format!("{}/{}", subnet.gateway(), cidr.prefix_len());
        cmd::ip(r, &["addr", "add", &gw, "dev", &bridge])?;
        if let Some(v6) = subnet.ipv6_gateway() {
            cmd::ip(
                r,
                &["addr", "add", &format!("{v6}/64"), "dev", &bridge, "nodad"],
            )?;
        }
        cmd::ip(r, &["link", "set", &bridge, "up"])?;
        if let Some(v6) = cidr_v6 {
            let child = radvd::start(self.router.name(), &bridge, v6, &self.dir)?;
            st.children.push(child);
        }
        st.subnets.push(subnet.clone());
        Ok(subnet)
    }

    /// Adds an instance: a namespace with lo up and an EC2 Linux host's sysctls (loose
    /// reverse-path filter as systemd sets it, accept_ra=1, forwarding off).
    pub fn add_instance(&self) -> Result<Instance> {
        let ns = {
            let mut st = self.lock();
            st.instances += 1;
            format!("{}i{}", self.prefix, st.instances)
        };
        self.new_namespace(&ns)?;
        cmd::run(cmd::in_netns(&ns, "sysctl").args([
            "-q",
            "-w",
            "net.ipv4.conf.all.rp_filter=2",
            "net.ipv4.conf.default.rp_filter=2",
            "net.ipv6.conf.all.accept_ra=1",
            "net.ipv6.conf.default.accept_ra=1",
            "net.ipv4.ip_forward=0",
            "net.ipv6.conf.all.forwarding=0",
        ]))?;
        Ok(Instance {
            host: Host::new(ns),
        })
    }

    /// Attaches an ENI: the kernel link `spec.ifname` appears in the instance, the VPC learns
    /// its addresses, and the instance side is set up as `spec.config` says.
    pub fn attach_eni(&self, inst: &Instance, spec: EniSpec) -> Result<Eni> {
        spec.validate()?;
        let mut st = self.lock();
        if !st.subnets.iter().any(|s| s.same(&spec.subnet)) {
            return Err(Error::invalid(
                "subnet",
                spec.subnet.cidr().to_string(),
                "belongs to another VPC",
            ));
        }
        if let Some(other) = st.enis.iter().find(|e| e.mac() == spec.mac) {
            return Err(Error::invalid(
                "MAC",
                &spec.mac,
                format!("already used by {}", other.port()),
            ));
        }
        let mut spec = spec;
        let mut claimed = Vec::new();
        let claim = spec.addresses().try_for_each(|a| {
            spec.subnet.claim(a)?;
            claimed.push(a);
            Ok::<_, Error>(())
        });
        if let Err(e) = claim.and_then(|()| {
            if spec.ipv4s.is_empty() {
                let a = spec.subnet.allocate_ipv4()?;
                claimed.push(IpAddr::V4(a));
                spec.ipv4s.push(a);
            }
            Ok(())
        }) {
            claimed.iter().for_each(|a| spec.subnet.release(*a));
            return Err(e);
        }
        st.ports += 1;
        let eni = Eni {
            port: format!("e{}", st.ports),
            instance_ns: inst.name().to_string(),
            spec,
        };
        st.enis.push(eni.clone());
        let result = self.plug(&st, &eni).and_then(|()| configure(&eni));
        if let Err(e) = result {
            self.unplug(&mut st, &eni);
            return Err(e);
        }
        Ok(eni)
    }

    /// Detaches an ENI: its link disappears from the instance and the VPC forgets it.
    pub fn detach_eni(&self, eni: &Eni) -> Result<()> {
        let mut st = self.lock();
        if !st.enis.iter().any(|e| e.port == eni.port) {
            return Err(Error::invalid("ENI", eni.mac(), "is not attached"));
        }
        cmd::ip(Some(self.router.name()), &["link", "del", eni.port()])?;
        self.unplug(&mut st, eni);
        Ok(())
    }

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
        cmd::ip(
            r,
            &[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        cmd::ip(
            r,
            &[
                "link",
                "set",
                &port,
                "master",
                subnet.bridge(),
                "addrgenmode",
                "none",
                "up",
            ],
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
            cmd::ip(c, &[family, "addr", "add", &cidr, "dev", "eth0", "nodad"])?;
            cmd::ip(
                c,
                &[family, "route", "add", "default", "via", &gw, "dev", "eth0"],
            )?;
        }
        Ok(Host::new(ns))
    }

    /// Packets the src/dst check has dropped so far, over all ENIs.
    pub fn srcdst_drops(&self) -> Result<u64> {
        srcdst::drops(self.router.name(), None)
    }

    /// Packets the src/dst check has dropped at this ENI's port, in either direction (still
    /// readable after a detach).
    pub fn srcdst_drops_at(&self, eni: &Eni) -> Result<u64> {
        srcdst::drops(self.router.name(), Some(eni.port()))
    }

    fn new_namespace(&self, ns: &str) -> Result<()> {
        // Recorded first, so Drop removes it even if setting it up fails half way.
        self.lock().namespaces.push(ns.to_string());
        netns::create(ns)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The router side of an attach: filter first, so no frame passes unchecked.
    fn plug(&self, st: &State, eni: &Eni) -> Result<()> {
        let r = Some(self.router.name());
        srcdst::apply(self.router.name(), &ports(&st.enis))?;
        cmd::ip(
            r,
            &[
                "link",
                "add",
                eni.port(),
                "type",
                "veth",
                "peer",
                "name",
                eni.ifname(),
                "address",
                eni.mac(),
                "netns",
                eni.instance_name(),
            ],
        )?;
        let bridge = eni.subnet().bridge();
        for a in eni.spec.addresses() {
            // The VPC knows where each address lives: no ARP, so no ARP flux either.
            cmd::ip(
                r,
                &[
                    "neigh",
                    "replace",
                    &a.to_string(),
                    "lladdr",
                    eni.mac(),
                    "dev",
                    bridge,
                    "nud",
                    "permanent",
                ],
            )?;
        }
        let primary = eni.primary_ipv4().to_string();
        for p in eni.ipv4_prefixes() {
            cmd::ip(
                r,
                &[
                    "route",
                    "replace",
                    &p.to_string(),
                    "via",
                    &primary,
                    "dev",
                    bridge,
                ],
            )?;
        }
        cmd::ip(
            r,
            &[
                "link",
                "set",
                eni.port(),
                "master",
                bridge,
                "addrgenmode",
                "none",
                "up",
            ],
        )?;
        Ok(())
    }

    /// Forgets an ENI in the router; best effort, as it also undoes failed attaches.
    fn unplug(&self, st: &mut State, eni: &Eni) {
        let r = Some(self.router.name());
        let _ = cmd::ip(r, &["link", "del", eni.port()]);
        for a in eni.spec.addresses() {
            let _ = cmd::ip(
                r,
                &["neigh", "del", &a.to_string(), "dev", eni.subnet().bridge()],
            );
            eni.subnet().release(a);
        }
        for p in eni.ipv4_prefixes() {
            let _ = cmd::ip(r, &["route", "del", &p.to_string()]);
        }
        st.enis.retain(|e| e.port != eni.port);
        let _ = srcdst::apply(self.router.name(), &ports(&st.enis));
    }
}

impl Drop for Vpc {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!(
                "{KEEP_ENV} is set: keeping namespaces {:?} (remove with `ip netns del`)",
                st.namespaces
            );
            return;
        }
        for child in &mut st.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Instances and clients first: processes tests started there (the agent) go too.
        for ns in st.namespaces.iter().rev() {
            netns::destroy(ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The instance side of an attach, as the OS would have it.
fn configure(eni: &Eni) -> Result<()> {
    let Config::Dhcp { default_metric } = eni.spec.config else {
        return Ok(());
    };
    let i = Some(eni.instance_name());
    let dev = eni.ifname();
    cmd::ip(i, &["link", "set", dev, "up"])?;
    let primary = format!(
        "{}/{}",
        eni.primary_ipv4(),
        eni.subnet().cidr().prefix_len()
    );
    // The kernel's own subnet route (metric 0): with two ENIs in one subnet the older route
    // wins, so replies to same-subnet hosts leave by the first interface, as in the field.
    cmd::ip(i, &["addr", "add", &primary, "brd", "+", "dev", dev])?;
    if let Some(metric) = default_metric {
        let gateway = eni.subnet().gateway().to_string();
        let metric = metric.to_string();
        cmd::ip(
            i,
            &[
                "route", "add", "default", "via", &gateway, "dev", dev, "metric", &metric,
            ],
        )?;
    }
    for a in eni.ipv6s() {
        cmd::ip(
            i,
            &[
                "-6",
                "addr",
                "add",
                &format!("{a}/128"),
                "dev",
                dev,
                "nodad",
            ],
        )?;
    }
    Ok(())
}

fn ports(enis: &[Eni]) -> Vec<srcdst::Port> {
    enis.iter()
        .map(|e| srcdst::Port {
            name: e.port().to_string(),
            v4: e
                .ipv4s()
                .iter()
                .map(|a| Ipv4Net::from(*a))
                .chain(e.ipv4_prefixes().iter().copied())
                .collect(),
            v6: e.ipv6s().iter().map(|a| Ipv6Net::from(*a)).collect(),
        })
        .collect()
}

/// An AWS-looking id (`vpc-0123456789abcdef0`) unique to `seed`.
fn aws_id(kind: &str, seed: &str) -> String {
    // FNV-1a: stable, dependency-free, and ids need only look plausible and differ.
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{kind}-0{hash:016x}")
}
