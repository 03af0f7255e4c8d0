//! Waits, bounded, until the ENIs a command is about are usable: listed by IMDS with a real
//! device number (a just-attached ENI may report 0 for a moment) and present as a kernel link
//! (which can appear seconds after the API call).

use std::net::IpAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use log::info;

use crate::error::{Error, Result};
use crate::imds::Imds;
use crate::kernel::Kernel;
use crate::model::Target;
use crate::model::{ImdsEni, Instance, Unusable, UnusableKind};
use crate::ops::Link;
use crate::plan::learned_v6_router;

/// Why one ENI is not usable yet, or `None` when it is.
fn not_ready(inst: &Instance, eni: &ImdsEni, links: &[Link]) -> Option<String> {
    if let Some(why) = inst.unsettled(eni) {
        Some(why)
    } else if !links.iter().any(|l| l.mac == Some(eni.mac)) {
        Some(format!(
            "no kernel interface with MAC {} ({}) yet",
            eni.mac, eni.eni_id
        ))
    } else {
        None
    }
}

/// The ENIs of `inst` that are settled and have their kernel link (the primary included).
pub(crate) fn ready_macs(inst: &Instance, links: &[Link]) -> Vec<crate::model::Mac> {
    inst.enis
        .iter()
        .filter(|e| not_ready(inst, e, links).is_none())
        .map(|e| e.mac)
        .collect()
}

/// Whether `sel` is about this ENI (`--all`: every secondary).
fn selects(inst: &Instance, sel: &Target, e: &ImdsEni) -> bool {
    match sel {
        Target::All => {
            inst.primary_mac != Some(e.mac)
                && !(inst.primary_mac.is_none() && e.is_primary_device())
        }
        one => one.matches(e),
    }
}

/// An IPv6-only ENI is routed by what the OS brings up on its link: an address (DHCPv6) and
/// the VPC router (its advertisements). Until the link has both there is nothing to route by
/// and nothing to prove, so it is waited for like a link that has not appeared. Costs a kernel
/// dump per poll only while such an ENI is selected and its link is there.
fn v6_only_pending(
    inst: &Instance,
    links: &[Link],
    sel: &Target,
    kernel: &mut Kernel,
) -> Result<Vec<String>> {
    let enis: Vec<(&ImdsEni, &Link)> = inst
        .enis
        .iter()
        .filter(|e| e.is_ipv6_only() && selects(inst, sel, e) && inst.is_settled(e))
        .filter_map(|e| links.iter().find(|l| l.mac == Some(e.mac)).map(|l| (e, l)))
        // A link that is down has no manager to wait for: the run brings it up, adds the
        // addresses and then waits for the router itself (`apply`'s router wait).
        .filter(|(_, l)| l.up)
        .collect();
    if enis.is_empty() {
        return Ok(Vec::new());
    }
    let snap = kernel.snapshot()?;
    Ok(enis
        .into_iter()
        .filter_map(|(e, link)| {
            let held = snap.addrs.iter().any(|a| {
                a.index == link.index && matches!(a.ip, IpAddr::V6(ip) if e.ipv6s.contains(&ip))
            });
            let router = learned_v6_router(&snap, link, e.table()).is_some();
            let missing = match (held, router) {
                (true, true) => return None,
                (false, true) => "none of its IPv6 addresses (DHCPv6)",
                (true, false) => "no IPv6 router (router advertisement)",
                (false, false) => "none of its IPv6 addresses (DHCPv6) and no IPv6 router",
            };
            Some(format!(
                "{} is IPv6-only and {} has {missing} yet",
                e.eni_id, link.name
            ))
        })
        .collect())
}

fn pending(inst: &Instance, links: &[Link], sel: &Target) -> Vec<String> {
    let incomplete = |u: &&Unusable| u.kind == UnusableKind::NotYet;
    match sel {
        Target::All => inst
            .enis
            .iter()
            .filter(|e| selects(inst, sel, e))
            .filter_map(|e| not_ready(inst, e, links))
            .chain(
                inst.unusable
                    .iter()
                    .filter(incomplete)
                    .map(Unusable::describe),
            )
            .collect(),
        one => match inst.enis.iter().find(|e| one.matches(e)) {
            Some(e) => not_ready(inst, e, links).into_iter().collect(),
            None => match inst.unusable.iter().find(|u| one.names(u)) {
                Some(u) => vec![u.describe()],
                None => vec![format!(
                    "instance metadata does not list {}",
                    one.describe()
                )],
            },
        },
    }
}

/// The selected ENI's metadata is there but cannot be used (malformed): waiting
/// changes nothing, so this is bad input (exit 2) at once.
fn refused(inst: &Instance, sel: &Target) -> Option<Error> {
    let u = inst
        .unusable
        .iter()
        .find(|u| sel.names(u) && u.kind != UnusableKind::NotYet)?;
    Some(Error::bad_metadata(
        format!("network/interfaces/macs/{}/", u.mac),
        u.describe(),
    ))
}

/// Returns the instance once everything selected is ready, with the kernel's links as they were
/// then. With `--all`, whatever is still not ready when the wait ends is returned as `pending`
/// (the rest is configured); for one ENI, the wait ending is an error (exit 3).
pub(crate) fn wait_until_ready(
    imds: &Imds,
    kernel: &mut Kernel,
    sel: &Target,
    wait: Duration,
) -> Result<(Instance, Vec<String>, Vec<Link>)> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    let mut told = false;
    // After the first full read, only what is not ready yet is read again.
    let mut last: Option<(Instance, Vec<crate::model::Mac>)> = None;
    loop {
        let inst = match &last {
            None => imds.instance()?,
            Some((prev, ready)) => imds.refresh(prev, ready)?,
        };
        if let Some(e) = refused(&inst, sel) {
            return Err(e);
        }
        let links = kernel.links()?;
        let mut waiting = pending(&inst, &links, sel);
        waiting.extend(v6_only_pending(&inst, &links, sel, kernel)?);
        if waiting.is_empty() {
            return Ok((inst, waiting, links));
        }
        if start.elapsed() >= wait {
            return match sel {
                Target::All => Ok((inst, waiting, links)),
                _ => Err(Error::NotAppeared {
                    what: sel.describe(),
                    waited: wait,
                    detail: waiting.join("; "),
                }),
            };
        }
        if !told {
            info!("waiting up to {}s: {}", wait.as_secs(), waiting.join("; "));
            told = true;
        }
        sleep(pause.min(wait.saturating_sub(start.elapsed())));
        pause = (pause * 2).min(Duration::from_secs(1));
        let ready = ready_macs(&inst, &links);
        last = Some((inst, ready));
    }
}
