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
    // Files first: if the live removal then fails, they are put back with it.
    let mut files = super::persist_remove(args, &root, &inst, &sel, report)?;
    if !args.dry_run {
        let applied = execute::run(&mut kernel, &plan.ops());
        report.netlink_requests = kernel.requests;
        report.imds_requests = imds.attempts();
        if applied.is_err() {
            files.rollback();
        }
        report.changes = applied?.changed.len();
    }
    Ok(())
}
