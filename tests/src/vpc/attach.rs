//! Attaching and detaching ENIs: the router side (veth port, neighbours, prefix routes, the
//! src/dst filter) and the instance side (what the OS would have configured).

use std::net::IpAddr;

use ipnet::{Ipv4Net, Ipv6Net};

use super::{State, Vpc};
use crate::cmd;
use crate::eni::{Config, Eni, EniSpec};
use crate::error::{Error, Result};
use crate::srcdst;
use crate::Instance;

impl Vpc {
    /// Attaches an ENI: the kernel link `spec.ifname` appears in the instance, the VPC learns
    /// its addresses, and the instance side is set up as `spec.config` says.
    pub fn attach_eni(&self, inst: &Instance, spec: EniSpec) -> Result<Eni> {
        self.attach(Some(inst), spec)
    }

    /// Attaches an ENI whose far end is a virtual machine's NIC: the router side is a tap
    /// device (a port of the subnet's bridge, filtered like any other) that QEMU opens by the
    /// name [`Eni::port`]. The guest's own OS configures it, so `spec.config` must be
    /// [`Config::Unconfigured`].
    pub fn attach_tap(&self, spec: EniSpec) -> Result<Eni> {
        if spec.config != Config::Unconfigured {
            return Err(Error::invalid(
                "config",
                format!("{:?}", spec.config),
                "a guest's NIC is configured by the guest: use Config::Unconfigured",
            ));
        }
        self.attach(None, spec)
    }

    fn attach(&self, inst: Option<&Instance>, spec: EniSpec) -> Result<Eni> {
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
            if spec.ipv6_only {
                if spec.ipv6s.is_empty() {
                    let a = spec.subnet.allocate_ipv6()?;
                    claimed.push(IpAddr::V6(a));
                    spec.ipv6s.push(a);
                }
            } else if spec.ipv4s.is_empty() {
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
            instance_ns: inst.map(|i| i.name().to_string()),
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

    /// The router side of an attach: filter first, so no frame passes unchecked.
    fn plug(&self, st: &State, eni: &Eni) -> Result<()> {
        let r = Some(self.router.name());
        srcdst::apply(self.router.name(), &ports(&st.enis))?;
        let (port, mac, bridge) = (eni.port(), eni.mac(), eni.subnet().bridge());
        match &eni.instance_ns {
            Some(inst) => cmd::ipl(
                r,
                &format!(
                    "link add {port} type veth peer name {} address {mac} netns {inst}",
                    eni.ifname()
                ),
            )?,
            // A persistent tap: QEMU opens it by name; until then its carrier is down.
            None => cmd::ipl(r, &format!("tuntap add dev {port} mode tap"))?,
        };
        for a in eni.spec.addresses() {
            // The VPC knows where each address lives: no ARP, so no ARP flux either.
            cmd::ipl(
                r,
                &format!("neigh replace {a} lladdr {mac} dev {bridge} nud permanent"),
            )?;
        }
        for p in eni.ipv4_prefixes() {
            let primary = eni.primary_ipv4();
            cmd::ipl(r, &format!("route replace {p} via {primary} dev {bridge}"))?;
        }
        for p in eni.ipv6_prefixes() {
            let first = eni.ipv6s()[0];
            cmd::ipl(r, &format!("-6 route replace {p} via {first} dev {bridge}"))?;
        }
        cmd::ipl(
            r,
            &format!("link set {port} master {bridge} addrgenmode none up"),
        )?;
        Ok(())
    }

    /// Forgets an ENI in the router; best effort, as it also undoes failed attaches.
    fn unplug(&self, st: &mut State, eni: &Eni) {
        let r = Some(self.router.name());
        let _ = cmd::ip(r, &["link", "del", eni.port()]);
        for a in eni.spec.addresses() {
            let _ = cmd::ipl(r, &format!("neigh del {a} dev {}", eni.subnet().bridge()));
            eni.subnet().release(a);
        }
        for p in eni.ipv4_prefixes() {
            let _ = cmd::ip(r, &["route", "del", &p.to_string()]);
        }
        for p in eni.ipv6_prefixes() {
            let _ = cmd::ip(r, &["-6", "route", "del", &p.to_string()]);
        }
        st.enis.retain(|e| e.port != eni.port);
        let _ = srcdst::apply(self.router.name(), &ports(&st.enis));
    }
}

/// The instance side of an attach, as the OS would have it.
fn configure(eni: &Eni) -> Result<()> {
    let Config::Dhcp { default_metric } = eni.spec.config else {
        return Ok(());
    };
    let Some(i) = eni.instance_ns.as_deref() else {
        return Ok(());
    };
    let i = Some(i);
    let dev = eni.ifname();
    cmd::ipl(i, &format!("link set {dev} up"))?;
    // The kernel's own subnet route (metric 0): with two ENIs in one subnet the older route
    // wins, so replies to same-subnet hosts leave by the first interface, as in the field.
    // `replace`, as a DHCP client does (networkd sends RTM_NEWADDR with NLM_F_REPLACE): an
    // agent already waiting for this ENI may have added the address first, and in the field
    // that race does not fail the OS's own configuration either. An IPv6-only ENI has none.
    if let Some(primary) = eni.ipv4s().first() {
        let len = eni.subnet().cidr().prefix_len();
        cmd::ipl(i, &format!("addr replace {primary}/{len} brd + dev {dev}"))?;
    }
    if let Some(metric) = default_metric.filter(|_| !eni.ipv4s().is_empty()) {
        let gateway = eni.subnet().gateway();
        cmd::ipl(
            i,
            &format!("route add default via {gateway} dev {dev} metric {metric}"),
        )?;
    }
    for a in eni.ipv6s() {
        cmd::ipl(i, &format!("-6 addr replace {a}/128 dev {dev} nodad"))?;
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
            v6: e
                .ipv6s()
                .iter()
                .map(|a| Ipv6Net::from(*a))
                .chain(e.ipv6_prefixes().iter().copied())
                .collect(),
        })
        .collect()
}
