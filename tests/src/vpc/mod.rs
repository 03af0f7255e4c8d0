//! The simulated VPC: a router namespace with one bridge per subnet, instances and clients
//! in their own namespaces, and the fabric's rules (static neighbours, src/dst check).

use std::ops::Deref;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Mutex, MutexGuard};

mod attach;
mod client;

use crate::cmd;
use crate::eni::Eni;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::netns;
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
        cmd::ipl(
            r,
            &format!(
                "link add {bridge} address {mac} type bridge stp_state 0 forward_delay 0 \
                 mcast_snooping 0"
            ),
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
            // The agent's run lock for that namespace (`/run/symroute/lock-<its inode>`): the
            // namespaces share this machine's /run, so the file would outlive the test.
            use std::os::unix::fs::MetadataExt as _;
            if let Ok(m) = std::fs::metadata(format!("/run/netns/{ns}")) {
                let _ = std::fs::remove_file(format!("/run/symroute/lock-{}", m.ino()));
            }
            netns::destroy(ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An AWS-looking id (`vpc-0123456789abcdef0`) unique to `seed`.
fn aws_id(kind: &str, seed: &str) -> String {
    // FNV-1a: stable, dependency-free, and ids need only look plausible and differ.
    let hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{kind}-0{hash:016x}")
}
