use crate::cli::{PersistMode, RemoveArgs};
use crate::connmark;
use crate::error::Result;
use crate::execute;
use crate::imds::Imds;
use crate::kernel::Kernel;
use crate::kernel::Snapshot;
use crate::lock;
use crate::model::Instance;
use crate::model::Target;
use crate::plan::plan_remove;
use crate::report::{EniReport, Report};

pub fn run(args: &RemoveArgs, report: &mut Report) -> Result<()> {
    let sel = if args.stale {
        Target::Stale
    } else if args.target.eni.is_some() || args.target.mac.is_some() || args.target.all {
        args.target.target()
    } else {
        return Err(crate::error::Error::Usage(
            "remove needs a target: --all, --eni ENI_ID, --mac MAC or --stale".into(),
        ));
    };
    let root = super::persist_root(args.root.as_deref())?;
    if !args.dry_run {
        crate::platform::check(&root.path("/"), args.persist != PersistMode::None)?;
    }
    let _lock = if args.dry_run {
        None
    } else {
        Some(lock::acquire(super::LOCK_TIMEOUT)?)
    };
    let mut kernel = Kernel::connect()?;
    let imds = Imds::from_env()?;
    // Removing everything needs no metadata: it must work even when IMDS does not.
    let inst = if sel == Target::All {
        Instance::default()
    } else {
        imds.instance()?
    };
    report.instance_id = inst.instance_id.clone();
    let snap = kernel.snapshot()?;
    let (plan, note) = plan_remove(&inst, &snap, &sel);
    report.notes.extend(note);
    let flows = connmark::plan_remove(&snap, flow_tables(&inst, &snap, &sel).as_deref());
    report.enis = plan.enis.iter().map(EniReport::from_plan).collect();
    report.pruned = plan.prune.iter().map(|o| o.to_string()).collect();
    for (p, r) in plan.enis.iter().zip(report.enis.iter_mut()) {
        r.changes
            .extend(flows.changes_where(|t| t == p.eni.table()));
    }
    let run: Vec<u32> = plan.enis.iter().map(|p| p.eni.table()).collect();
    report
        .pruned
        .extend(flows.changes_where(|t| !run.contains(&t)));
    let _held = crate::signals::hold();
    if args.dry_run {
        super::persist_remove(args, &root, &inst, &sel, report)?;
        return Ok(());
    }
    // The kernel first: its part is quick, and a detached ENI's rules should not outlive it by
    // the seconds a `netplan generate` can take. If the files then fail, the live state is put
    // back with them, so a failed remove leaves the host as it was.
    let mut ops = plan.ops();
    ops.extend(flows.ops.iter().cloned());
    let mut applied = execute::run(&mut kernel, &ops)?;
    // The nftables tables of the ENIs whose mode went: without `nft` none can exist. A failure
    // here leaves only tables that mark flows no rule looks at any more; it is reported.
    if !flows.drop.is_empty() {
        if let Some(nft) = connmark::nft_command() {
            if let Err(e) = connmark::run_nft(&nft, &connmark::script(&flows)) {
                let rollback = applied.rollback(&mut kernel);
                return Err(crate::error::Error::ConnmarkRolledBack {
                    source: Box::new(e),
                    rollback,
                });
            }
        }
    }
    report.netlink_requests = kernel.requests;
    report.imds_requests = imds.attempts();
    if let Err(e) = super::persist_remove(args, &root, &inst, &sel, report) {
        let rollback = applied.rollback(&mut kernel);
        return Err(crate::error::Error::PersistRolledBack {
            source: Box::new(e),
            rollback,
        });
    }
    report.changes = applied.changed.len();
    if args.persist != PersistMode::None {
        forget_flows(&root, &inst, &sel, report);
    }
    Ok(())
}

/// The kept connmark choice of the removed ENIs goes with their files.
fn forget_flows(root: &crate::persist::Root, inst: &Instance, sel: &Target, report: &mut Report) {
    let attached: Vec<crate::model::Mac> = inst.enis.iter().map(|e| e.mac).collect();
    let settled = inst.settled_tables().is_some();
    let named = inst.enis.iter().find(|e| sel.matches(e)).map(|e| e.mac);
    for mac in connmark::remembered(root) {
        let gone = match (sel, named) {
            (Target::All, _) => true,
            (Target::Eni(_) | Target::Mac(_), Some(n)) => n == mac,
            _ => settled && !attached.contains(&mac),
        };
        if gone {
            if let Err(e) = connmark::remember(root, mac, false) {
                report.persist.warnings.push(format!(
                    "{mac}: forgetting the connmark mode failed: {}: {e}",
                    connmark::STATE_DIR
                ));
            }
        }
    }
}

/// The ENI tables whose connmark mode a remove ends: every one (`None`), the named ENI's, or
/// those of ENIs no longer attached (none while an ENI's numbers are not settled).
fn flow_tables(inst: &Instance, snap: &Snapshot, sel: &Target) -> Option<Vec<u32>> {
    let stale = || {
        let Some(attached) = inst.settled_tables() else {
            return Vec::new();
        };
        snap.marks
            .iter()
            .map(|m| m.table)
            .filter(|t| !attached.contains(t))
            .collect()
    };
    match sel {
        Target::All => None,
        Target::Stale => Some(stale()),
        Target::Eni(_) | Target::Mac(_) => Some(match inst.enis.iter().find(|e| sel.matches(e)) {
            Some(e) => vec![e.table()],
            None => stale(),
        }),
    }
}
