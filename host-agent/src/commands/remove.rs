use crate::cli::{PersistMode, RemoveArgs};
use crate::error::Result;
use crate::execute;
use crate::imds::Imds;
use crate::kernel::Kernel;
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
    report.enis = plan.enis.iter().map(EniReport::from_plan).collect();
    report.pruned = plan.prune.iter().map(|o| o.to_string()).collect();
    let _held = crate::signals::hold();
    if args.dry_run {
        super::persist_remove(args, &root, &inst, &sel, report)?;
        return Ok(());
    }
    // The kernel first: its part is quick, and a detached ENI's rules should not outlive it by
    // the seconds a `netplan generate` can take. If the files then fail, the live state is put
    // back with them, so a failed remove leaves the host as it was.
    let mut applied = execute::run(&mut kernel, &plan.ops())?;
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
    Ok(())
}
