//! The VM lab: real Debian guests (QEMU, TCG) in the simulated VPC, where boot, udev, PCI
//! hot-plug and the distributions' own network daemons are real. See tests/README.md.
//!
//! A [`Lab`] is one instance: a VPC with two subnets, the guest's eth0 in the first, a client
//! in the second, the VPC's DHCP (dnsmasq) and the IMDSv2 stand-in at 169.254.169.254 in the
//! router (the guest reaches it through its default route, with that instance's view).

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

mod agent;
mod dhcp;
mod guest;
mod image;
mod qmp;

pub use agent::{GuestAgent, GuestOutput};
pub use dhcp::Dhcp;
pub use guest::{Guest, BOOT_TIMEOUT};
pub use image::{lab_dir, Image};
pub use qmp::Channel;

use crate::error::Result;
use crate::{Config, Eni, EniMeta, EniSpec, Host, Imds, InstanceMeta, Subnet, Vpc};

/// The DHCP lease the lab hands out: dnsmasq's minimum, so renewals (where a manager rewrites
/// routes) happen during a run, not only at boot.
pub const LEASE_SECS: u32 = 120;

/// The VPC's address families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// IPv4 only (most VPCs).
    V4,
    /// Dual-stack subnets: each also has an IPv6 /64 (`2600:1f18:1:<n>::/64`), advertised by
    /// radvd (M flag, default route only) and served by DHCPv6; every ENI gets the IPv6 address
    /// whose last group is its IPv4 address's last octet (10.0.1.11 → `…:1::11`), the client
    /// `2600:1f18:1:2::10`.
    Dual,
}

/// One instance in its own VPC. Everything goes on drop (guest killed, namespaces removed).
pub struct Lab {
    // Field order is drop order: the guest goes before its taps and namespaces.
    pub guest: Guest,
    pub imds: Imds,
    dhcp: Mutex<Dhcp>,
    pub client: Host,
    pub eth0: Eni,
    pub subnet: Subnet,
    pub far: Subnet,
    pub stack: Stack,
    enis: Mutex<Vec<Attached>>,
    pub vpc: Vpc,
}

/// An ENI attached to the lab's instance.
#[derive(Clone, Debug)]
pub struct Attached {
    pub eni: Eni,
    pub id: String,
    pub device_number: u32,
}

pub const INSTANCE_ID: &str = "i-0a1b2c3d4e5f60718";
const PRIMARY_ENI_ID: &str = "eni-00000000000000000";
const PRIMARY_MAC: &str = "0a:00:00:01:00:0a";

impl Lab {
    /// A VPC (10.0.1.0/24 for the instance, 10.0.2.0/24 for the client at 10.0.2.10) and the
    /// guest booted from `image` with eth0 at 10.0.1.10. Returns once the guest agent answers;
    /// the guest has no network manager running yet (see [`Lab`]'s users for each one).
    pub fn start(image: &Image) -> Result<Lab> {
        Lab::start_with(image, Stack::V4)
    }

    /// [`Lab::start`] with the VPC's address families chosen.
    pub fn start_with(image: &Image, stack: Stack) -> Result<Lab> {
        let vpc = Vpc::new()?;
        let v6 = |n: u8| (stack == Stack::Dual).then(|| format!("2600:1f18:1:{n}::/64"));
        let subnet = vpc.add_subnet("10.0.1.0/24", v6(1).as_deref())?;
        let far = vpc.add_subnet("10.0.2.0/24", v6(2).as_deref())?;
        let client = match stack {
            Stack::V4 => vpc.add_client(&far, "10.0.2.10")?,
            Stack::Dual => vpc.add_client_with(&far, &["10.0.2.10", "2600:1f18:1:2::10"])?,
        };
        let dir = run_dir(vpc.prefix());
        std::fs::create_dir_all(&dir)?;
        let router = vpc.router().name().to_string();
        let mut dhcp = Dhcp::start(&router, &[&subnet, &far], &dir, LEASE_SECS)?;
        let eth0 = vpc.attach_tap(dual(
            stack,
            &subnet,
            EniSpec::new("eth0", &subnet)
                .ip("10.0.1.10")
                // One MAC for every lab's eth0: a guest's first boot is resumed from a booted
                // state (guest.rs), whose NIC has the MAC it was booted with. The labs' VPCs
                // never meet, so their eth0s never see each other.
                .mac(PRIMARY_MAC)
                .config(Config::Unconfigured),
        ))?;
        dhcp.add(&eth0)?;
        let imds = Imds::start_in_standard(&router)?;
        imds.set_instance(&InstanceMeta::new(INSTANCE_ID, eth0.mac()));
        imds.put_eni(&EniMeta::from_eni(&eth0, 0, 0, PRIMARY_ENI_ID));
        let guest =
            Guest::boot("lab", &router, &dir.join("guest"), image, &[&eth0]).inspect_err(|_| {
                // No Lab to drop yet: its directory (DHCP's files) goes here.
                if std::env::var_os(crate::KEEP_ENV).is_none() {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            })?;
        Ok(Lab {
            guest,
            imds,
            dhcp: Mutex::new(dhcp),
            client,
            eth0,
            subnet,
            far,
            stack,
            enis: Mutex::new(Vec::new()),
            vpc,
        })
    }

    /// Attaches a new ENI at `ip` in the instance's subnet with the next device number: the
    /// VPC learns it, DHCP and IMDS answer for it, then the NIC is hot-plugged (EC2's order:
    /// metadata may still lag; here it is ready first, so waits measure the guest, not us).
    pub fn attach(&self, ip: &str, id: &str) -> Result<Attached> {
        let mut enis = lock(&self.enis);
        let device_number = (1..)
            .find(|n| enis.iter().all(|a| a.device_number != *n))
            .unwrap();
        let eni = self.vpc.attach_tap(dual(
            self.stack,
            &self.subnet,
            EniSpec::new(&format!("eth{device_number}"), &self.subnet)
                .ip(ip)
                .config(Config::Unconfigured),
        ))?;
        lock(&self.dhcp).add(&eni)?;
        self.imds
            .put_eni(&EniMeta::from_eni(&eni, device_number, 0, id));
        let attached = Attached {
            eni,
            id: id.to_string(),
            device_number,
        };
        enis.push(attached.clone());
        self.guest.hotplug(&attached.eni)?;
        Ok(attached)
    }

    /// Detaches the ENI: the NIC is unplugged (the guest releases it), then IMDS, DHCP and
    /// the VPC forget it.
    pub fn detach(&self, a: &Attached) -> Result<()> {
        self.guest.unplug(&a.eni)?;
        self.forget(a)
    }

    /// A stop, the ENIs in `detach` detached while stopped, and a start: the guest boots with
    /// eth0 and the ENIs still attached, in device-number order.
    pub fn stop_start(&self, detach: &[&Attached]) -> Result<std::time::Duration> {
        self.guest.power_off()?;
        for a in detach {
            self.forget(a)?;
        }
        let enis = lock(&self.enis).clone();
        let mut nics = vec![&self.eth0];
        let mut sorted: Vec<&Attached> = enis.iter().collect();
        sorted.sort_by_key(|a| a.device_number);
        nics.extend(sorted.iter().map(|a| &a.eni));
        self.guest.power_on(&nics)
    }

    fn forget(&self, a: &Attached) -> Result<()> {
        self.imds.remove_eni(a.eni.mac());
        lock(&self.dhcp).remove(&a.eni)?;
        lock(&self.enis).retain(|e| e.eni.mac() != a.eni.mac());
        self.vpc.detach_eni(&a.eni)
    }

    /// dnsmasq's log, for a failing test to show.
    pub fn dhcp_log(&self) -> String {
        lock(&self.dhcp).log()
    }

    /// The IPv6 address the lab gives the ENI holding `ipv4` (see [`Stack::Dual`]); `None` in
    /// an IPv4-only lab.
    pub fn ipv6_of(&self, ipv4: &str) -> Option<String> {
        let v4: std::net::Ipv4Addr = ipv4.parse().ok()?;
        let subnet = [&self.subnet, &self.far]
            .into_iter()
            .find(|s| s.cidr().contains(&v4))?;
        v6_for(subnet, v4)
    }
}

/// The spec with its IPv6 address added in a dual-stack lab.
fn dual(stack: Stack, subnet: &Subnet, spec: EniSpec) -> EniSpec {
    match (stack, spec.primary_ipv4().and_then(|a| v6_for(subnet, a))) {
        (Stack::Dual, Some(v6)) => spec.ipv6(&v6),
        _ => spec,
    }
}

/// `<subnet's /64>::<last octet>`, the last octet written as hex digits read as decimal
/// (10.0.1.11 → `2600:1f18:1:1::11`), so that addresses read alike in both families.
fn v6_for(subnet: &Subnet, v4: std::net::Ipv4Addr) -> Option<String> {
    let net = subnet.ipv6_prefix()?;
    let last = u128::from_str_radix(&v4.octets()[3].to_string(), 16).ok()?;
    Some(std::net::Ipv6Addr::from(u128::from(net.network()) + last).to_string())
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::env::var_os(crate::KEEP_ENV).is_none() {
            let _ = std::fs::remove_dir_all(run_dir(self.vpc.prefix()));
        }
    }
}

fn run_dir(prefix: &str) -> PathBuf {
    std::env::temp_dir()
        .join("symroute-lab")
        .join(prefix.trim_end_matches('-'))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
