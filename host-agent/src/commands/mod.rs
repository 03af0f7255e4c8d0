//! One file per subcommand. Each fills a `Report`; errors end up in it too, so that the JSON
//! SSM keeps says what failed.

pub mod apply;
pub mod check;
pub mod hotplug;
pub mod remove;
pub mod status;
pub mod trigger;

use std::time::Instant;

use crate::cli::{ApplyArgs, Command, PersistMode, RemoveArgs};
use crate::error::Result;
use crate::kernel::Snapshot;
use crate::model::{Instance, Mac, Target};
use crate::persist::{self, Backend};
use crate::plan::{desired, EniStatus, Plan};
use crate::report::{Action, Report};

/// How long a run waits for another run to finish before giving up.
pub(crate) const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

pub fn run(command: &Command) -> Report {
    let start = Instant::now();
    let (mut report, result) = match command {
        Command::Apply(a) => {
            let mut r = Report::new(Action::Apply, a.dry_run);
            let res = apply::run(a, &mut r);
            (r, res)
        }
        Command::Remove(a) => {
            let mut r = Report::new(Action::Remove, a.dry_run);
            let res = remove::run(a, &mut r);
            (r, res)
        }
        Command::Status(_) => {
            let mut r = Report::new(Action::Status, false);
            let res = status::run(&mut r);
            (r, res)
        }
        Command::Install(a) => {
            let mut r = Report::new(Action::Install, a.dry_run);
            let res = trigger::install(a, &mut r);
            (r, res)
        }
        Command::Uninstall(a) => {
            let mut r = Report::new(Action::Uninstall, a.dry_run);
            let res = trigger::uninstall(a, &mut r);
            (r, res)
        }
        Command::Hotplug(a) => hotplug::run(a),
        Command::Check(a) => check::run(a),
    };
    if let Err(e) = result {
        report.ok = false;
        report.exit_code = e.exit_code();
        report.error = Some(e.to_string());
    }
    report.duration_ms = start.elapsed().as_millis() as u64;
    report
}

/// Checks `--root` before anything changes.
pub(crate) fn persist_root(root: Option<&std::path::Path>) -> Result<persist::Root> {
    persist::Root::new(root)
}

/// ENIs that symroute's own persisted files configure (whatever the backend).
pub(crate) fn persisted_macs(root: &persist::Root) -> Vec<Mac> {
    persist::owned_files(root)
        .into_iter()
        .filter_map(|(_, o)| match o {
            persist::Owner::Eni { mac, .. } => Some(mac),
            persist::Owner::Shared => None,
        })
        .collect()
}

/// Who routes this host's ENIs besides the kernel's rules: symroute's persisted files, and the
/// host's own tool for ENIs if it has one.
pub(crate) fn host_owners(root: &persist::Root) -> crate::plan::HostOwners {
    crate::plan::HostOwners {
        persisted: persisted_macs(root),
        native: crate::trigger::native_owner(root),
    }
}

/// The backend for this run: none, forced by name, or detected (for `apply` with `--force`,
/// also where amazon-ec2-net-utils is present).
fn persist_choice(
    mode: PersistMode,
    root: &persist::Root,
    ifaces: &[(String, Mac)],
    force: bool,
) -> persist::Choice {
    let forced = |b| persist::Choice {
        backend: Some(b),
        reason: "forced by --persist".into(),
        warning: None,
    };
    match mode {
        PersistMode::None => persist::Choice {
            backend: None,
            reason: "--persist none: live routing only".into(),
            warning: None,
        },
        PersistMode::Auto => persist::detect(root, ifaces, force),
        PersistMode::Networkd => forced(Backend::Networkd),
        PersistMode::Netplan => forced(Backend::Netplan),
        PersistMode::Nm => forced(Backend::Nm),
        PersistMode::Ifcfg => forced(Backend::Ifcfg),
        PersistMode::Ifupdown => forced(Backend::Ifupdown),
        PersistMode::Unit => forced(Backend::Unit),
    }
}

/// `apply`: writes every configured ENI's routing into the host's network configuration (or,
/// with --dry-run, reports what it would write). The journal undoes the files if a later step
/// fails.
pub(crate) fn persist_apply(
    args: &ApplyArgs,
    root: &persist::Root,
    inst: &Instance,
    plan: &Plan,
    snap: &Snapshot,
    sel: &Target,
    report: &mut Report,
) -> Result<persist::Journal> {
    let enis: Vec<persist::EniConfig> = plan
        .enis
        .iter()
        .filter(|p| p.status == EniStatus::Configure)
        .filter_map(|p| {
            let link = snap.link_by_mac(p.eni.mac).or(p.link.as_ref())?;
            let mut e = persist::EniConfig::new(&p.eni, link, &desired(&p.eni, link, snap));
            if plan.marked.contains(&p.eni.table()) {
                e.marks = crate::connmark::mark_rules(&p.eni);
            }
            Some(e)
        })
        .collect();
    let ifaces: Vec<(String, Mac)> = enis.iter().map(|e| (e.ifname.clone(), e.mac)).collect();
    let choice = persist_choice(args.persist, root, &ifaces, args.force);
    report.persist = persist::PersistReport::none(&choice.reason);
    report.persist.warnings.extend(choice.warning);
    let Some(backend) = choice.backend else {
        return Ok(persist::Journal::default());
    };
    report.persist.backend = persist::Persisted::By(backend);
    let attached: Vec<Mac> = inst.enis.iter().map(|e| e.mac).collect();
    let prune = (*sel == Target::All).then_some(attached.as_slice());
    let ops = persist::plan_apply(backend, root, &enis, prune)?;
    run_file_ops(root, &ops, args.dry_run, report)
}

/// Writes or deletes persisted files as one transaction (reported only, with --dry-run).
fn run_file_ops(
    root: &persist::Root,
    ops: &[persist::FileOp],
    dry_run: bool,
    report: &mut Report,
) -> Result<persist::Journal> {
    if dry_run {
        persist::dry_run(root, ops, &mut report.persist);
        return Ok(persist::Journal::default());
    }
    let mut journal = persist::execute(root, ops, &mut report.persist)?;
    if let Err(e) = persist::after_change(root, &mut report.persist) {
        journal.rollback();
        persist::after_rollback(root, &report.persist);
        return Err(e);
    }
    Ok(journal)
}

/// `remove`: deletes the files apply wrote for the removed ENIs (none with --persist none).
pub(crate) fn persist_remove(
    args: &RemoveArgs,
    root: &persist::Root,
    inst: &Instance,
    sel: &Target,
    report: &mut Report,
) -> Result<persist::Journal> {
    if args.persist == PersistMode::None {
        report.persist = persist::PersistReport::none("--persist none: persisted files kept");
        return Ok(persist::Journal::default());
    }
    report.persist = persist::PersistReport {
        backend: persist::Persisted::Any,
        reason: "every file symroute wrote for the removed ENIs, whatever the backend".into(),
        ..Default::default()
    };
    let attached: Vec<Mac> = inst.enis.iter().map(|e| e.mac).collect();
    // An ENI named but no longer attached: its files go with every detached ENI's, as its live
    // state does (plan_remove says so in a note).
    let files = match sel {
        Target::Eni(_) | Target::Mac(_) => match inst.enis.iter().find(|e| sel.matches(e)) {
            Some(e) => Target::Mac(e.mac),
            None => Target::Stale,
        },
        t => t.clone(),
    };
    let ops = persist::plan_remove(root, &files, &attached);
    run_file_ops(root, &ops, args.dry_run, report)
}
