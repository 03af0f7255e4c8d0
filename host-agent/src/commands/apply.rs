use std::time::Duration;

use log::{debug, info, warn};

use crate::cli::{ApplyArgs, PersistMode};
use crate::discover::wait_until_ready;
use crate::error::{Error, Result};
use crate::execute;
use crate::imds::Imds;
use crate::kernel::Kernel;
use crate::lock;
use crate::model::Target;
use crate::plan::{plan_apply, EniStatus};
use crate::report::{EniReport, Report};
use crate::verify;

pub fn run(args: &ApplyArgs, report: &mut Report) -> Result<()> {
    let sel = args.target.target();
    let root = super::persist_root(args.root.as_deref())?;
    if !args.dry_run {
        crate::platform::check(&root.path("/"), args.persist != PersistMode::None)?;
    }
    let _lock = if args.dry_run {
        None
    } else {
        Some(lock::acquire(super::LOCK_TIMEOUT)?)
    };
    let imds = Imds::from_env()?;
    let mut kernel = Kernel::connect()?;
    let result = apply(args, &sel, &root, &imds, &mut kernel, report);
    report.netlink_requests = kernel.requests;
    report.imds_requests = imds.attempts();
    if result.is_ok() && args.install_trigger {
        install_trigger(&root, report);
    }
    result
}

/// After a good run: the on-host trigger, so that later attaches need no CloudTrail event. Its
/// failure is reported and leaves this run's routing (done, proved, persisted) as it is.
fn install_trigger(root: &crate::persist::Root, report: &mut Report) {
    report.trigger = Some(match crate::trigger::install(root, false, false) {
        Ok(t) => {
            info!("trigger: {} ({})", t.status.word(), t.reason);
            t
        }
        Err(e) => {
            warn!("installing the on-host trigger failed: {e}");
            crate::trigger::TriggerReport {
                status: crate::trigger::TriggerStatus::Failed,
                reason: e.to_string(),
                files: Vec::new(),
                warnings: Vec::new(),
            }
        }
    });
}

fn apply(
    args: &ApplyArgs,
    sel: &Target,
    root: &crate::persist::Root,
    imds: &Imds,
    kernel: &mut Kernel,
    report: &mut Report,
) -> Result<()> {
    let (inst, pending) = wait_until_ready(imds, kernel, sel, Duration::from_secs(args.wait))?;
    report.instance_id = inst.instance_id.clone();
    debug!("metadata: {} ENI(s)", inst.enis.len());
    // The primary interface is never changed unless asked twice: naming it is not enough.
    if let Some(primary) = inst.enis.iter().find(|e| {
        *sel != Target::All
            && sel.matches(e)
            && (inst.primary_mac == Some(e.mac)
                || (inst.primary_mac.is_none() && e.is_primary_device()))
    }) {
        if args.primary_is_noop && !args.force {
            info!("{} is the primary interface: left alone", primary.eni_id);
            report.notes.push(format!(
                "{} is the primary interface (device 0 on network card 0): left alone",
                primary.eni_id
            ));
            return Ok(());
        }
        if !args.force {
            return Err(Error::Usage(format!(
                "{} is the primary interface (device 0 on network card 0), which symroute leaves \
                 alone; add --force to give it policy routing anyway",
                primary.eni_id
            )));
        }
    }
    for u in inst
        .unusable
        .iter()
        .filter(|u| u.kind != crate::model::UnusableKind::NotYet)
    {
        warn!("skipped {}", u.describe());
        report.notes.push(format!("skipped {}", u.describe()));
    }
    let snap = kernel.snapshot()?;
    let plan = plan_apply(&inst, &snap, sel, args.force, &super::persisted_macs(root));
    debug!("plan: {} change(s)", plan.ops().len());
    report.enis = plan.enis.iter().map(EniReport::from_plan).collect();
    report.pruned = plan.prune.iter().map(|o| o.to_string()).collect();
    for e in plan
        .enis
        .iter()
        .filter(|e| e.status == EniStatus::ManagedByOther)
    {
        info!(
            "{}: {}; left alone (use --force to take over)",
            e.eni.eni_id,
            e.owner.as_deref().unwrap_or("")
        );
    }
    if args.dry_run {
        super::persist_apply(args, root, &inst, &plan, &snap, sel, report)?;
        return Ok(());
    }

    // From the first change to the last word on it, a termination signal waits.
    let _held = crate::signals::hold();
    // One transaction per ENI: a change the kernel refuses for one ENI, or a failed proof,
    // undoes that ENI's changes only; the others stay configured (and are persisted). The
    // stale state of detached ENIs is its own transaction, last.
    let mut plan = plan;
    let mut applied: Vec<execute::Applied> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for (p, r) in plan.enis.iter_mut().zip(report.enis.iter_mut()) {
        if p.status != EniStatus::Configure || p.ops.is_empty() {
            applied.push(execute::Applied::default());
            continue;
        }
        match execute::run(kernel, &p.ops) {
            Ok(a) => applied.push(a),
            Err(e) => {
                warn!("{}: {e}", p.eni.eni_id);
                failures.push(format!("{}: {e}", p.eni.eni_id));
                p.status = EniStatus::Failed;
                r.status = EniStatus::Failed;
                applied.push(execute::Applied::default());
            }
        }
    }
    let mut pruned = match execute::run(kernel, &plan.prune) {
        Ok(a) => a,
        Err(e) => {
            failures.push(format!("pruning stale state: {e}"));
            execute::Applied::default()
        }
    };
    let changed = |applied: &[execute::Applied], pruned: &execute::Applied| {
        applied.iter().map(|a| a.changed.len()).sum::<usize>() + pruned.changed.len()
    };
    report.changes = changed(&applied, &pruned);
    debug!("applied: {} change(s)", report.changes);

    // Prove it, with the kernel's own route lookups.
    let snap = if report.changes == 0 {
        snap
    } else {
        kernel.snapshot()?
    };
    for ((p, r), a) in plan
        .enis
        .iter_mut()
        .zip(report.enis.iter_mut())
        .zip(applied.iter_mut())
    {
        let Some(link) = snap.link_by_mac(p.eni.mac) else {
            continue;
        };
        if p.status != EniStatus::Configure {
            continue;
        }
        let checks = verify::checks(kernel, &snap, &p.eni, link)?;
        let bad: Vec<String> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| {
                format!(
                    "{}: from {} to {} leaves via {}",
                    p.eni.eni_id,
                    c.source,
                    c.destination,
                    c.via.as_deref().unwrap_or("nothing")
                )
            })
            .collect();
        r.set_checks(checks);
        if !bad.is_empty() {
            let rollback = a.rollback(kernel);
            warn!("{}: verification failed; {rollback}", p.eni.eni_id);
            failures.push(format!("{} ({rollback})", bad.join("; ")));
            p.status = EniStatus::Failed;
            r.status = EniStatus::Failed;
        }
    }
    debug!("verified");
    report.changes = changed(&applied, &pruned);
    // Nothing configured at all: the error says what failed, and nothing is persisted.
    if !failures.is_empty() && !plan.enis.iter().any(|p| p.status == EniStatus::Configure) {
        pruned.rollback(kernel);
        report.changes = 0;
        return Err(Error::Verify(failures.join("; ")));
    }

    // Persist what now works, so the host's own network stack brings it back after a reboot.
    if let Err(e) = super::persist_apply(args, root, &inst, &plan, &snap, sel, report) {
        let mut rollback = pruned.rollback(kernel);
        for a in applied.iter_mut().rev() {
            let r = a.rollback(kernel);
            rollback.undone += r.undone;
            rollback.errors.extend(r.errors);
        }
        report.changes = 0;
        return Err(Error::PersistRolledBack {
            source: Box::new(e),
            rollback,
        });
    }
    if !failures.is_empty() {
        return Err(Error::Verify(format!(
            "{} (the other ENIs were configured)",
            failures.join("; ")
        )));
    }

    // The others are configured; garbage in one ENI's metadata is still bad input (exit 2),
    // so whoever runs this sees it.
    if let Some(u) = inst
        .unusable
        .iter()
        .find(|u| u.kind == crate::model::UnusableKind::Malformed && *sel == Target::All)
    {
        return Err(Error::bad_metadata(
            format!("network/interfaces/macs/{}/", u.mac),
            format!("{} (the other ENIs were configured)", u.describe()),
        ));
    }
    if !pending.is_empty() {
        return Err(Error::NotAppeared {
            what: "some ENIs".into(),
            waited: Duration::from_secs(args.wait),
            detail: format!("{} (the others were configured)", pending.join("; ")),
        });
    }
    Ok(())
}
