use std::net::IpAddr;

use crate::error::Result;
use crate::imds::Imds;
use crate::kernel::Kernel;
use crate::plan::{EniPlan, EniStatus, Ownership};
use crate::report::{EniReport, Report};
use crate::verify;

pub fn run(report: &mut Report) -> Result<()> {
    let imds = Imds::from_env()?;
    let mut kernel = Kernel::connect()?;
    let inst = imds.instance()?;
    report.instance_id = inst.instance_id.clone();
    report.notes.extend(
        inst.unusable
            .iter()
            .map(|u| format!("not configurable: {}", u.describe())),
    );
    let snap = kernel.snapshot()?;
    let host = super::host_owners(&super::persist_root(None)?);
    for eni in &inst.enis {
        let link = snap.link_by_mac(eni.mac);
        let t = eni.table();
        let ownership = link.map(|l| Ownership::of(eni, l, &snap, &host));
        let plan = EniPlan {
            eni: eni.clone(),
            link: link.cloned(),
            status: match &ownership {
                None => EniStatus::Missing,
                Some(o) if o.other().is_some() && !o.ours => EniStatus::ManagedByOther,
                Some(_) => EniStatus::Configure,
            },
            owner: ownership.as_ref().and_then(Ownership::describe),
            ops: Vec::new(),
            warnings: Vec::new(),
        };
        let mut r = EniReport::from_plan(&plan);
        if let Some(link) = link {
            // What the kernel holds, which may differ from what IMDS assigns.
            r.addresses = snap
                .addrs
                .iter()
                .filter(|a| a.index == link.index && !is_link_local(&a.ip))
                .map(|a| format!("{}/{}", a.ip, a.prefix_len))
                .collect();
            r.rules = snap
                .rules
                .iter()
                .filter_map(|k| k.spec.as_ref())
                .filter(|k| {
                    k.table == t
                        || eni
                            .ipv4s
                            .iter()
                            .map(|ip| IpAddr::V4(*ip))
                            .chain(eni.ipv6s.iter().map(|ip| IpAddr::V6(*ip)))
                            .any(|ip| k.src.contains(&ip) && k.src.prefix_len() > 0)
                })
                .map(|k| k.to_string())
                .collect();
            r.set_checks(verify::checks(&mut kernel, &snap, eni, link)?);
            r.connmark = Some(crate::connmark::is_on(&snap, t));
            r.rules.extend(
                snap.marks
                    .iter()
                    .filter(|m| m.table == t)
                    .map(|m| m.to_string()),
            );
        }
        report.enis.push(r);
    }
    report.netlink_requests = kernel.requests;
    report.imds_requests = imds.attempts();
    Ok(())
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => crate::metadata::is_link_local(v6),
    }
}
