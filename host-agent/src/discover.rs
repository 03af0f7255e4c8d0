//! Waits, bounded, until the ENIs a command is about are usable: listed by IMDS with a real
//! device number (a just-attached ENI may report 0 for a moment) and present as a kernel link
//! (which can appear seconds after the API call).

use std::thread::sleep;
use std::time::{Duration, Instant};

use log::info;

use crate::error::{Error, Result};
use crate::imds::Imds;
use crate::kernel::Kernel;
use crate::model::Target;
use crate::model::{ImdsEni, Instance, Unusable, UnusableKind};
use crate::ops::Link;

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

fn pending(inst: &Instance, links: &[Link], sel: &Target) -> Vec<String> {
    let incomplete = |u: &&Unusable| u.kind == UnusableKind::NotYet;
    match sel {
        Target::All => inst
            .enis
            .iter()
            .filter(|e| {
                inst.primary_mac != Some(e.mac)
                    && !(inst.primary_mac.is_none() && e.is_primary_device())
            })
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

/// The selected ENI's metadata is there but cannot be used (malformed, IPv6-only): waiting
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
        let waiting = pending(&inst, &links, sel);
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
