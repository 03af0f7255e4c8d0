use std::time::Duration;

use log::{debug, info, warn};

use crate::cli::{ApplyArgs, PersistMode, Switch};
use crate::connmark;
use crate::discover::{ready_macs, wait_until_ready};
use crate::error::{Error, Result};
use crate::execute;
use crate::fixed_metadata;
use crate::guard::Guard;
use crate::imds::Imds;
use crate::kernel::Kernel;
use crate::lock;
use crate::model::Target;
use crate::ops::Link;
use crate::plan::{learned_v6_router, plan_apply, EniStatus};
use crate::report::{EniReport, Report};
use crate::verify;

pub fn run(args: &ApplyArgs, report: &mut Report) -> Result<()> {
    let sel = args.target.target();
    let root = super::persist_root(args.root.as_deref())?;
    if !args.dry_run {
        crate::platform::check(&root.path("/"), args.persist != PersistMode::None)?;
    }
    // Before any change: the mode cannot be switched on without nftables.
    if args.connmark == Some(Switch::On) && !args.dry_run {
        connmark::require_nft()?;
    }
    let _lock = if args.dry_run {
        None
    } else {
        Some(lock::acquire(super::LOCK_TIMEOUT)?)
    };
    let mut imds = Imds::from_env()?;
    let mut kernel = Kernel::connect()?;
    if args.periodic {
        imds.pace(CHECK_PACE);
        imds.reuse_fixed(fixed_metadata::load(&root, &kernel.links()?));
    }
    let mut settled = Settled::default();
    let result = apply(args, &sel, &root, &imds, &mut kernel, report, &mut settled);
    // A run that may write the host's files keeps what it read of the metadata that cannot
    // change, for the periodic check (whatever became of the routing: the values are facts).
    if !args.dry_run && (args.root.is_some() || args.persist != PersistMode::None) {
        keep_fixed_metadata(&root, &imds, &settled);
    }
    report.netlink_requests = kernel.requests;
    report.imds_requests = imds.attempts();
    if result.is_ok() && args.install_trigger {
        install_trigger(&root, report);
    }
    result
}

/// The longest a run waits, after its changes, for the VPC router's first advertisement on an
/// ENI with IPv6 whose router is not known yet (never longer than `--wait`). The router answers
/// a solicitation at once; the host sends one when the link comes up, after duplicate address
/// detection of its link-local address (about a second), so 5 s covers a link the run itself
/// brought up.
const ROUTER_WAIT: Duration = Duration::from_secs(5);

/// How often the router wait reads the kernel's routes.
const ROUTER_POLL: Duration = Duration::from_millis(200);

/// Where nothing had taught an ENI its IPv6 router before the run (the run brought the link up
/// itself, or its manager has not heard an advertisement yet), waits for the first one,
/// bounded, and completes that ENI's routing with it: the router in its table, and the
/// demotion of a default that ties with the primary's. Without it, IPv6 replies to other
/// subnets left by the main table until the next run (seen in the lab's netplan guest, where
/// eth1 is nobody's). Returns whether it waited (the snapshot in hand is then stale).
#[allow(clippy::too_many_arguments)]
fn await_routers(
    args: &ApplyArgs,
    inst: &crate::model::Instance,
    host: &crate::plan::HostOwners,
    kernel: &mut Kernel,
    plan: &mut crate::plan::Plan,
    report: &mut Report,
    applied: &mut [execute::Applied],
    failures: &mut Vec<String>,
) -> Result<bool> {
    let without_router = |snap: &crate::kernel::Snapshot, p: &crate::plan::EniPlan| {
        p.status == EniStatus::Configure
            && !p.eni.ipv6s.is_empty()
            && snap
                .link_by_mac(p.eni.mac)
                .is_some_and(|l| learned_v6_router(snap, l, p.eni.table()).is_none())
    };
    let bound = ROUTER_WAIT.min(Duration::from_secs(args.wait));
    if bound.is_zero() || !plan.enis.iter().any(|p| !p.eni.ipv6s.is_empty()) {
        return Ok(false);
    }
    let mut snap = kernel.snapshot()?;
    let waiting: Vec<usize> = (0..plan.enis.len())
        .filter(|&i| without_router(&snap, &plan.enis[i]))
        .collect();
    if waiting.is_empty() {
        return Ok(false);
    }
    let start = std::time::Instant::now();
    while waiting
        .iter()
        .any(|&i| without_router(&snap, &plan.enis[i]))
        && start.elapsed() < bound
    {
        std::thread::sleep(ROUTER_POLL.min(bound.saturating_sub(start.elapsed())));
        snap = kernel.snapshot()?;
    }
    for i in waiting {
        let (p, r) = (&mut plan.enis[i], &mut report.enis[i]);
        if without_router(&snap, p) {
            info!(
                "{}: no IPv6 router advertised within {} s",
                p.eni.eni_id,
                bound.as_secs()
            );
            continue;
        }
        info!(
            "{}: IPv6 router learned after {} ms",
            p.eni.eni_id,
            start.elapsed().as_millis()
        );
        let again = plan_apply(inst, &snap, &Target::Mac(p.eni.mac), args.force, host);
        let Some(q) = again.enis.into_iter().find(|q| q.eni.mac == p.eni.mac) else {
            continue;
        };
        if q.status != EniStatus::Configure {
            continue;
        }
        match execute::run(kernel, &q.ops) {
            Ok(a) => applied[i].changed.extend(a.changed),
            Err(e) => {
                // The ENI's transaction: what the first pass changed goes too.
                let rollback = applied[i].rollback(kernel);
                warn!("{}: {e}; {rollback}", p.eni.eni_id);
                failures.push(format!("{}: {e} ({rollback})", p.eni.eni_id));
                p.status = EniStatus::Failed;
                r.status = EniStatus::Failed;
                continue;
            }
        }
        r.changes.extend(q.ops.iter().map(|o| o.to_string()));
        p.ops.extend(q.ops);
        r.warnings.clone_from(&q.warnings);
        p.warnings = q.warnings;
    }
    Ok(true)
}

/// At most one metadata request per this interval in the periodic check: 200 a second, a fifth
/// of what IMDS allows an interface, whatever the number of ENIs.
const CHECK_PACE: Duration = Duration::from_millis(5);

/// What the run saw once metadata was read: the kernel's links, and the ENIs settled on them
/// (a just-attached one may still show device 0, which must not be kept).
#[derive(Default)]
struct Settled {
    links: Vec<Link>,
    ready: Vec<crate::model::Mac>,
}

fn keep_fixed_metadata(root: &crate::persist::Root, imds: &Imds, settled: &Settled) {
    let values = imds.fixed_values();
    if values.is_empty() {
        return;
    }
    if let Err(e) = fixed_metadata::save(root, &values, &settled.links, &settled.ready) {
        warn!("keeping the fixed metadata for the periodic check: {e} (it will read all of it)");
    }
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
    settled: &mut Settled,
) -> Result<()> {
    let (inst, pending, links) =
        wait_until_ready(imds, kernel, sel, Duration::from_secs(args.wait))?;
    settled.ready = ready_macs(&inst, &links);
    settled.links = links;
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
    let host = super::host_owners(root);
    let plan = plan_apply(&inst, &snap, sel, args.force, &host);
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
        let flows = plan_flows(args, sel, root, &inst, &plan, &snap)?;
        report_flows(&flows, &plan, report);
        let mut plan = plan;
        plan.marked = flows.write.iter().map(|m| m.table).collect();
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
    // The primary's paths before the first change: each ENI's transaction, and the run as a
    // whole, must leave them as they were.
    let guard =
        if plan.enis.iter().any(|p| p.status == EniStatus::Configure) || !plan.prune.is_empty() {
            Guard::read(kernel, &snap, &inst)?
        } else {
            None
        };
    for (p, r) in plan.enis.iter_mut().zip(report.enis.iter_mut()) {
        if p.status != EniStatus::Configure || p.ops.is_empty() {
            applied.push(execute::Applied::default());
            continue;
        }
        // A change the kernel refuses and a change that moves the primary fail the ENI alike.
        let outcome = match execute::run(kernel, &p.ops) {
            Ok(mut a) => match &guard {
                Some(g) => guard_primary(kernel, g, &snap, |k| a.rollback(k)).map(|_| a),
                None => Ok(a),
            },
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(a) => applied.push(a),
            Err(why) => {
                warn!("{}: {why}", p.eni.eni_id);
                failures.push(format!("{}: {why}", p.eni.eni_id));
                p.status = EniStatus::Failed;
                r.status = EniStatus::Failed;
                applied.push(execute::Applied::default());
            }
        }
    }
    let waited = await_routers(
        args,
        &inst,
        &host,
        kernel,
        &mut plan,
        report,
        &mut applied,
        &mut failures,
    )?;
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
    let snap = if report.changes == 0 && !waited {
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
        // The connmark mode's lookups are proven after its own plan has run (`run_flows`):
        // here, a mode left half in place (one family's rule dropped) would fail the ENI and
        // undo the run that is about to repair it.
        let checks: Vec<verify::Check> = verify::checks(kernel, &snap, &p.eni, link)?
            .into_iter()
            .filter(|c| c.mark.is_none())
            .collect();
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
    // The run as a whole (the router wait's additions, the pruning of stale state) must leave
    // the primary's paths as they were too; if it did not, all of it goes.
    if let Some(g) = &guard {
        let undo = |k: &mut Kernel| undo_all(k, &mut pruned, &mut applied);
        match guard_primary(kernel, g, &snap, undo) {
            Ok(seen) => report.primary = Some(seen),
            Err(harm) => {
                report.changes = 0;
                // An ENI's own harm, undone but not repaired, shows here again: name it first.
                failures.push(harm);
                return Err(Error::PrimaryHarmed(failures.join("; ")));
            }
        }
    }
    // Nothing configured at all: the error says what failed, and nothing is persisted.
    if !failures.is_empty() && !plan.enis.iter().any(|p| p.status == EniStatus::Configure) {
        pruned.rollback(kernel);
        report.changes = 0;
        return Err(Error::Verify(failures.join("; ")));
    }

    // The connmark mode, for what is configured now: its rules, one nftables transaction and
    // its proof. A failure undoes the whole run, as a failed persist does.
    let flows = match plan_flows(args, sel, root, &inst, &plan, &snap) {
        Ok(f) => {
            report_flows(&f, &plan, report);
            plan.marked = f.write.iter().map(|m| m.table).collect();
            run_flows(kernel, &f, &plan, report)
        }
        Err(e) => Err(e),
    };
    let flows = match flows {
        Ok(a) => a,
        Err(e) => {
            let rollback = undo_all(kernel, &mut pruned, &mut applied);
            report.changes = 0;
            return Err(Error::ConnmarkRolledBack {
                source: Box::new(e),
                rollback,
            });
        }
    };
    report.changes += flows.changed.len();

    // Persist what now works, so the host's own network stack brings it back after a reboot.
    // A failure here (a broken foreign netplan file, an interfaces file that does not read
    // interfaces.d) leaves the files as they were and keeps the live routing: undoing it would
    // break the ENI now for a problem that only matters at the next boot. Exit 4 says so.
    if let Err(e) = super::persist_apply(args, root, &inst, &plan, &snap, sel, report) {
        let e = Error::NotPersisted {
            source: Box::new(e),
        };
        warn!("{e}");
        if !failures.is_empty() {
            return Err(Error::Verify(format!(
                "{} (the other ENIs were configured; {e})",
                failures.join("; ")
            )));
        }
        return Err(e);
    }
    if args.persist != PersistMode::None {
        remember_flows(root, report);
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

/// Undoes every kernel change of the run: the pruning, then each ENI's transaction, last first.
fn undo_all(
    kernel: &mut Kernel,
    pruned: &mut execute::Applied,
    applied: &mut [execute::Applied],
) -> crate::error::Rollback {
    let mut rollback = pruned.rollback(kernel);
    for a in applied.iter_mut().rev() {
        let r = a.rollback(kernel);
        rollback.undone += r.undone;
        rollback.errors.extend(r.errors);
    }
    rollback
}

/// Reads the primary's held paths again: what the report says if none moved. Where one moved,
/// or they cannot be read (a netlink failure: unproven is not unharmed), undoes the changes
/// (`undo`) and says why, and what is still moved if undoing did not bring it back (a route the
/// kernel deleted for a daemon is not ours to put back).
fn guard_primary(
    kernel: &mut Kernel,
    guard: &Guard,
    snap: &crate::kernel::Snapshot,
    undo: impl FnOnce(&mut Kernel) -> crate::error::Rollback,
) -> std::result::Result<crate::guard::PrimaryReport, String> {
    let seen = match guard.check(kernel, snap) {
        Ok(seen) if seen.moved.is_empty() => return Ok(seen),
        Ok(seen) => seen,
        Err(e) => {
            let rollback = undo(kernel);
            return Err(format!(
                "the primary interface's paths could not be read again ({e}); {rollback}"
            ));
        }
    };
    let rollback = undo(kernel);
    let mut harm = format!(
        "the change would move the primary interface's ({}) traffic: {}; {rollback}",
        seen.interface,
        seen.moved.join("; ")
    );
    if let Some(still) = guard
        .check(kernel, snap)
        .ok()
        .filter(|s| !s.moved.is_empty())
    {
        harm.push_str(&format!(
            "; still moved after undoing: {}",
            still.moved.join("; ")
        ));
    }
    Err(harm)
}

/// The connmark mode's plan for the ENIs this run configured (their links from `snap`).
fn plan_flows(
    args: &ApplyArgs,
    sel: &Target,
    root: &crate::persist::Root,
    inst: &crate::model::Instance,
    plan: &crate::plan::Plan,
    snap: &crate::kernel::Snapshot,
) -> Result<connmark::FlowPlan> {
    let configured: Vec<_> = plan
        .enis
        .iter()
        .filter(|p| p.status == EniStatus::Configure)
        .filter_map(|p| Some((&p.eni, snap.link_by_mac(p.eni.mac)?)))
        .collect();
    let choice = match args.connmark {
        Some(Switch::On) => connmark::Choice::On,
        Some(Switch::Off) => connmark::Choice::Off,
        None => connmark::Choice::Keep,
    };
    // Over every ENI, the mode of ENIs no longer attached goes; an unsettled ENI's table is
    // not known yet, so while one is, nothing is dropped.
    let keep = if *sel == Target::All {
        inst.settled_tables()
    } else {
        None
    };
    connmark::plan(
        &configured,
        snap,
        choice,
        &connmark::remembered(root),
        keep.as_deref(),
    )
}

/// A persisting run keeps each configured ENI's mode for the first run after a reboot. Failing
/// that costs only the mode after a reboot: a warning, not a failed run.
fn remember_flows(root: &crate::persist::Root, report: &mut Report) {
    for r in &report.enis {
        let (Some(on), Ok(mac)) = (r.connmark, r.mac.parse()) else {
            continue;
        };
        if let Err(e) = connmark::remember(root, mac, on) {
            report.persist.warnings.push(format!(
                "{}: keeping the connmark mode for after a reboot failed: {}: {e}",
                r.eni_id,
                connmark::STATE_DIR
            ));
        }
    }
}

/// Each configured ENI's mode, and the planned rule changes, in the report.
fn report_flows(flows: &connmark::FlowPlan, plan: &crate::plan::Plan, report: &mut Report) {
    for (p, r) in plan.enis.iter().zip(report.enis.iter_mut()) {
        if p.status != EniStatus::Configure || p.link.is_none() {
            continue;
        }
        let t = p.eni.table();
        r.connmark = Some(flows.marks(t));
        r.changes.extend(flows.changes_where(|m| m == t));
    }
    let run: Vec<u32> = plan.enis.iter().map(|p| p.eni.table()).collect();
    report
        .pruned
        .extend(flows.changes_where(|t| !run.contains(&t)));
    for t in &flows.drop {
        report.notes.push(format!(
            "connmark: nftables table inet {} deleted",
            connmark::nft_table(*t)
        ));
    }
}

/// Runs the mode's plan: the rules, then nftables, then the proof that marked replies leave by
/// their ENI. On any failure this step's own changes are undone before the error returns.
fn run_flows(
    kernel: &mut Kernel,
    flows: &connmark::FlowPlan,
    plan: &crate::plan::Plan,
    report: &mut Report,
) -> Result<execute::Applied> {
    if flows.is_empty() {
        return Ok(execute::Applied::default());
    }
    // Tables can only exist where nft ran: without it, deleting them is nothing to do.
    let nft = match connmark::nft_command() {
        Some(n) => Some(n),
        None if flows.write.is_empty() => None,
        None => Some(connmark::require_nft()?),
    };
    let mut applied = execute::run(kernel, &flows.ops)?;
    if let Some(nft) = &nft {
        if let Err(e) = connmark::run_nft(nft, &connmark::script(flows)) {
            applied.rollback(kernel);
            return Err(e);
        }
    }
    if flows.write.is_empty() {
        return Ok(applied);
    }
    let snap = kernel.snapshot()?;
    let mut bad = Vec::new();
    for (p, r) in plan.enis.iter().zip(report.enis.iter_mut()) {
        let Some(link) = snap.link_by_mac(p.eni.mac) else {
            continue;
        };
        if !flows.marks(p.eni.table()) {
            continue;
        }
        let checks = verify::mark_checks(kernel, &snap, &p.eni, link);
        bad.extend(checks.iter().filter(|c| !c.ok).map(|c| {
            format!(
                "{}: a reply marked {:#x} to {} leaves via {}",
                p.eni.eni_id,
                p.eni.flow_mark(),
                c.destination,
                c.via.as_deref().unwrap_or("nothing")
            )
        }));
        let mut all: Vec<_> = r.verify.drain(..).filter(|c| c.mark.is_none()).collect();
        all.extend(checks);
        r.set_checks(all);
    }
    if !bad.is_empty() {
        let undo = connmark::FlowPlan {
            drop: flows.write.iter().map(|m| m.table).collect(),
            ..Default::default()
        };
        if let Some(nft) = &nft {
            let _ = connmark::run_nft(nft, &connmark::script(&undo));
        }
        let rollback = applied.rollback(kernel);
        return Err(Error::Verify(format!("{} ({rollback})", bad.join("; "))));
    }
    Ok(applied)
}
