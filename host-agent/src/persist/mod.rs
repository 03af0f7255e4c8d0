//! Persistence: the routing of each configured ENI written into the host's own network
//! configuration, so that the host's network stack brings it back after a reboot or a network
//! restart by itself.
//!
//! - One file per backend, each a [`Manager`]: how to tell it runs here, its files for one ENI,
//!   where they live, and what it needs run after they change. [`MANAGERS`] lists them in
//!   detection order.
//! - One renderer per file format, fed typed data: `ini` (networkd's .network files and
//!   NetworkManager's keyfiles), `yaml` (netplan), `ipcmd` (the `ip` lines network-scripts and
//!   ifupdown run); ifcfg's shell variables and ifupdown's stanza are typed in their files.
//! - This file detects the backend, plans file changes, carries them out as one transaction and
//!   finds what symroute wrote earlier.
//!
//! Every file symroute writes starts with a header line naming the ENI it belongs to (or
//! `shared`), which is how `remove` finds exactly its own files and never touches anyone else's.

pub mod ifcfg;
pub mod ifupdown;
mod ini;
mod ipcmd;
pub mod netplan;
pub mod networkd;
pub mod nm;
pub mod unit;
mod yaml;

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::{EniId, ImdsEni, Mac, Target};
use crate::ops::{Link, RouteSpec, RuleSpec};
use crate::plan::Desired;

/// The backends, each forced by its `--persist` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Networkd,
    Netplan,
    Nm,
    Ifcfg,
    Ifupdown,
    Unit,
}

impl Backend {
    /// Every backend, in the order `--persist` lists them.
    pub const ALL: [Backend; 6] = [
        Backend::Networkd,
        Backend::Netplan,
        Backend::Nm,
        Backend::Ifcfg,
        Backend::Ifupdown,
        Backend::Unit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Networkd => "networkd",
            Backend::Netplan => "netplan",
            Backend::Nm => "nm",
            Backend::Ifcfg => "ifcfg",
            Backend::Ifupdown => "ifupdown",
            Backend::Unit => "unit",
        }
    }
}

/// One way of persisting: the network manager (or, for `unit`, systemd itself) that brings the
/// routing back at boot. Each backend's file implements it; detection, apply and remove ask
/// only this.
pub(crate) trait Manager: Sync {
    fn backend(&self) -> Backend;

    /// Why this manager configures the interfaces here, when it does (auto-detection asks the
    /// managers in [`MANAGERS`]' order). It may hand over to another backend: netplan renders
    /// to NetworkManager, whose netplan backend drops routing-policy.
    fn detect(&self, root: &Root, ifaces: &[(String, Mac)]) -> Option<(Backend, String)>;

    /// One ENI's files (reading the root where they must fit into existing configuration).
    fn render(&self, root: &Root, eni: &EniConfig) -> Result<Vec<FileOp>>;

    /// Where its files live (for finding symroute's files again, whatever wrote them).
    fn dirs(&self) -> &'static [&'static str];

    /// After files in its directories changed: what the manager needs run so that its own
    /// output follows at once (netplan's generator). `Ok(Some(note))`: nothing to run here.
    fn after_change(&self, _root: &Root) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Every manager, in auto-detection order (see [`detect`]).
pub(crate) const MANAGERS: [&dyn Manager; 6] = [
    &netplan::Netplan,
    &networkd::Networkd,
    &nm::Nm,
    &ifcfg::Ifcfg,
    &ifupdown::Ifupdown,
    &unit::Unit,
];

impl Backend {
    pub(crate) fn manager(self) -> &'static dyn Manager {
        *MANAGERS
            .iter()
            .find(|m| m.backend() == self)
            .expect("every backend has its manager")
    }
}

/// The filesystem the persisted configuration lives in: `/`, or `--root DIR` for tests and
/// image builds. Every path read or written goes through here.
#[derive(Clone, Debug)]
pub struct Root(PathBuf);

impl Root {
    pub fn new(dir: Option<&Path>) -> Result<Root> {
        match dir {
            None => Ok(Root(PathBuf::from("/"))),
            Some(d) if d.is_dir() => Ok(Root(d.to_path_buf())),
            Some(d) => Err(Error::Usage(format!(
                "--root {}: not a directory",
                d.display()
            ))),
        }
    }

    /// The real location of an absolute path on the host (`/etc/x` -> `DIR/etc/x`).
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.0.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    fn exists(&self, abs: &str) -> bool {
        fs::symlink_metadata(self.path(abs)).is_ok()
    }

    fn read(&self, abs: &Path) -> Option<String> {
        fs::read_to_string(self.path(abs)).ok()
    }

    /// Regular files directly inside a directory, sorted by name, as host paths.
    fn list(&self, dir: &str) -> Vec<PathBuf> {
        let Ok(rd) = fs::read_dir(self.path(dir)) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
            .map(|e| Path::new(dir).join(e.file_name()))
            .collect();
        out.sort();
        out
    }

    fn subdirs(&self, dir: &str) -> Vec<PathBuf> {
        let Ok(rd) = fs::read_dir(self.path(dir)) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| Path::new(dir).join(e.file_name()))
            .collect();
        out.sort();
        out
    }
}

/// What one ENI's persisted configuration says, backend-neutral: the interface, all of its
/// addresses, and exactly the rules and table routes the live planner installs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EniConfig {
    pub eni_id: EniId,
    pub mac: Mac,
    pub ifname: String,
    pub table: u32,
    /// Every private IPv4 with the subnet's length, primary first (none on an IPv6-only ENI).
    pub addrs_v4: Vec<Ipv4Net>,
    /// Every IPv6 as /128 (as DHCPv6 on AWS assigns them).
    pub addrs_v6: Vec<Ipv6Net>,
    pub routes: Vec<RouteSpec>,
    pub rules: Vec<RuleSpec>,
    /// The connmark mode's `fwmark` rules, where the ENI is in the mode: only networkd needs
    /// them written (it deletes rules it did not create when it configures a link); the other
    /// managers leave the live rule alone, and the first run after a boot brings it back.
    pub marks: Vec<crate::ops::MarkRuleSpec>,
    /// The link's MTU where it is above Ethernet's 1500 (a VPC's DHCP sets 9001): files that
    /// configure the link statically say it, or a reboot would bring the link back at 1500.
    pub mtu: Option<u32>,
    /// The metric for the IPv6 defaults the kernel learns from RAs on this link, where the
    /// kernel (not a daemon) handles RAs and the ENI's subnet has IPv6: the table number, so
    /// that after a boot the RA default does not tie with the primary's (plan::ra_demotion).
    /// Only ifupdown needs it written: networkd, NetworkManager and netplan handle RAs
    /// themselves (networkd's `[IPv6AcceptRA] RouteMetric=`, NetworkManager's route table).
    pub ra_metric: Option<u32>,
}

impl EniConfig {
    pub fn new(eni: &ImdsEni, link: &Link, desired: &Desired) -> EniConfig {
        let len = eni.subnet_v4.map_or(32, |n| n.prefix_len());
        EniConfig {
            eni_id: eni.eni_id.clone(),
            mac: eni.mac,
            ifname: link.name.clone(),
            table: eni.table(),
            addrs_v4: eni
                .ipv4s
                .iter()
                .map(|ip| Ipv4Net::new(*ip, len).expect("subnet length is valid"))
                .collect(),
            addrs_v6: eni.ipv6s.iter().map(|ip| Ipv6Net::from(*ip)).collect(),
            routes: desired.routes.clone(),
            rules: desired.rules.clone(),
            marks: Vec::new(),
            mtu: (link.mtu > 1500).then_some(link.mtu),
            ra_metric: (!eni.subnets_v6.is_empty()).then_some(eni.table()),
        }
    }

    pub(crate) fn routes_v4(&self) -> impl Iterator<Item = &RouteSpec> {
        self.routes.iter().filter(|r| matches!(r.dst, IpNet::V4(_)))
    }

    pub(crate) fn routes_v6(&self) -> impl Iterator<Item = &RouteSpec> {
        self.routes.iter().filter(|r| matches!(r.dst, IpNet::V6(_)))
    }

    pub(crate) fn rules_v4(&self) -> impl Iterator<Item = &RuleSpec> {
        self.rules.iter().filter(|r| matches!(r.src, IpNet::V4(_)))
    }

    pub(crate) fn rules_v6(&self) -> impl Iterator<Item = &RuleSpec> {
        self.rules.iter().filter(|r| matches!(r.src, IpNet::V6(_)))
    }

    /// The first line of every file written for this ENI.
    pub(crate) fn header(&self) -> String {
        format!(
            "{MARK} eni={} mac={} (written by symroute apply; symroute remove deletes it)\n",
            self.eni_id, self.mac
        )
    }
}

/// Start of the header line of every file symroute writes.
pub(crate) const MARK: &str = "# symroute:";
/// Header of files shared by all ENIs of one backend (deleted with the last ENI).
pub(crate) const SHARED_HEADER: &str =
    "# symroute: shared (written by symroute apply; symroute remove deletes it with the last ENI)\n";

/// Who a file belongs to, from its header line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    Eni { eni_id: String, mac: Mac },
    Shared,
}

pub(crate) fn owner_of(text: &str) -> Option<Owner> {
    let first = text.lines().next()?;
    let rest = first.strip_prefix(MARK)?.trim();
    if rest.starts_with("shared") {
        return Some(Owner::Shared);
    }
    let mut eni_id = None;
    let mut mac = None;
    for w in rest.split_whitespace() {
        if let Some(v) = w.strip_prefix("eni=") {
            eni_id = Some(v.to_owned());
        } else if let Some(v) = w.strip_prefix("mac=") {
            mac = v.parse::<Mac>().ok();
        }
    }
    Some(Owner::Eni {
        eni_id: eni_id?,
        mac: mac?,
    })
}

/// One file the backend wants on disk, or gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOp {
    Write {
        path: PathBuf,
        content: Vec<u8>,
        mode: u32,
    },
    Delete {
        path: PathBuf,
    },
}

impl FileOp {
    pub fn path(&self) -> &Path {
        match self {
            FileOp::Write { path, .. } | FileOp::Delete { path } => path,
        }
    }

    pub fn text(path: impl Into<PathBuf>, content: String, mode: u32) -> FileOp {
        FileOp::Write {
            path: path.into(),
            content: content.into_bytes(),
            mode,
        }
    }
}

/// The persistence part of a run's report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PersistReport {
    pub backend: Persisted,
    /// Why this backend: forced by name, or what detection found.
    pub reason: String,
    pub files: Vec<FileChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where a run persisted (JSON: a backend's `--persist` name, `none`, or `any` for `remove`,
/// which deletes symroute's files whatever backend wrote them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Persisted {
    #[default]
    None,
    Any,
    By(Backend),
}

impl std::fmt::Display for Persisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Persisted::None => "none",
            Persisted::Any => "any",
            Persisted::By(b) => b.name(),
        })
    }
}

impl Serialize for Persisted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl PersistReport {
    pub fn none(reason: &str) -> PersistReport {
        PersistReport {
            backend: Persisted::None,
            reason: reason.into(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// The host path (without `--root`).
    pub path: String,
    pub action: FileAction,
}

/// What happened to a file (JSON: `written`, `deleted`, `unchanged`, `would-write`,
/// `would-delete`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileAction {
    Written,
    Deleted,
    Unchanged,
    WouldWrite,
    WouldDelete,
}

impl std::fmt::Display for FileAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileAction::Written => "written",
            FileAction::Deleted => "deleted",
            FileAction::Unchanged => "unchanged",
            FileAction::WouldWrite => "would-write",
            FileAction::WouldDelete => "would-delete",
        })
    }
}

/// The backend to use and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub backend: Option<Backend>,
    pub reason: String,
    pub warning: Option<String>,
}

/// Files of the tools that already route every ENI per interface where they run:
/// amazon-ec2-net-utils v2 (Amazon Linux 2023, networkd) and v1 (Amazon Linux 2,
/// network-scripts), and SUSE's cloud-netconfig (its EC2 flavour's udev hotplug rule, as its
/// Makefile installs it into udev's rules directory; SLES persists through wicked, which symroute
/// does not write).
const ROUTING_TOOLS: &[(&str, &str)] = &[
    (
        "/usr/lib/systemd/network/80-ec2.network",
        "amazon-ec2-net-utils",
    ),
    (
        "/usr/lib/systemd/system/policy-routes@.service",
        "amazon-ec2-net-utils",
    ),
    (
        "/usr/lib/systemd/system/refresh-policy-routes@.service",
        "amazon-ec2-net-utils",
    ),
    (
        "/etc/sysconfig/network-scripts/ec2net-functions",
        "amazon-ec2-net-utils",
    ),
    (
        "/etc/udev/rules.d/53-ec2-network-interfaces.rules",
        "amazon-ec2-net-utils",
    ),
    (
        "/usr/lib/udev/rules.d/51-cloud-netconfig-hotplug.rules",
        "SUSE cloud-netconfig",
    ),
];

/// `auto`: the first that applies, in this order:
/// 1. amazon-ec2-net-utils present: it already owns ENI routing, so nothing (unless `force`).
/// 2. netplan (`/etc/netplan/*.yaml`): netplan generates the networkd (or NM) configuration, so
///    (where it renders to NetworkManager, which drops its routing-policy: NM's keyfile instead)
///    it must be the source, or the next `netplan generate` drops what we add below it.
/// 3. systemd-networkd: a .network file matches one of the interfaces, or networkd is enabled.
///    Before NM and ifupdown because networkd deletes foreign rules on reconfigure.
/// 4. NetworkManager (`/etc/NetworkManager`), running or enabled (`nm::NM_ACTIVE`): RHEL 8/9
///    keep network-scripts around, but NM owns the interfaces there, so NM goes before ifcfg.
/// 5. network-scripts (`/etc/sysconfig/network-scripts` with its `ifup-routes`): RHEL/CentOS 7,
///    Amazon Linux 2.
/// 6. ifupdown (`/etc/network/interfaces`, and an `ifup` run at boot): Debian without networkd.
/// 7. systemd (running as init) without any of the above: the boot-time unit.
/// 8. none, with a warning: the routing is live only.
///
/// 2 to 7 are [`MANAGERS`]' own `detect`, asked in that order.
pub fn detect(root: &Root, ifaces: &[(String, Mac)], force: bool) -> Choice {
    let found = |b: Backend, why: String| Choice {
        backend: Some(b),
        reason: why,
        warning: None,
    };
    if let Some((f, tool)) = ROUTING_TOOLS.iter().find(|(f, _)| root.exists(f)) {
        if !force {
            return Choice {
                backend: None,
                reason: format!(
                    "{tool} manages ENIs here ({f}); nothing persisted (--force to persist anyway)"
                ),
                warning: None,
            };
        }
    }
    if let Some((backend, why)) = MANAGERS.iter().find_map(|m| m.detect(root, ifaces)) {
        return found(backend, why);
    }
    Choice {
        backend: None,
        reason: "no supported network configuration found".into(),
        warning: Some(
            "no network manager or systemd found: the routing is live only and is lost on reboot"
                .into(),
        ),
    }
}

/// Renders one ENI's files with a backend (reading the root where the backend has to fit
/// into existing configuration).
pub fn render(backend: Backend, root: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
    backend.manager().render(root, eni)
}

/// After a run changed files: each manager whose directories hold a changed file gets its
/// `after_change`; what could not run is a warning in the report.
pub fn after_change(root: &Root, report: &mut PersistReport) -> Result<()> {
    for m in touched(report) {
        if let Some(note) = m.after_change(root)? {
            report.warnings.push(note);
        }
    }
    Ok(())
}

/// The same after a failed run put the files back: best effort, nothing reported.
pub fn after_rollback(root: &Root, report: &PersistReport) {
    for m in touched(report) {
        let _ = m.after_change(root);
    }
}

/// The managers whose directories hold a file this run changed.
///
/// A netplan run's networkd drop-in (in networkd's directory) does not make networkd reload:
/// netplan's generator rewrites every file it owns, the primary's too, and networkd's reload
/// reconfigures each link whose `.network` file changed on disk, the primary among them (seen
/// in the lab's netplan guest: the primary lost 2 to 4 pings at each attach).
fn touched(report: &PersistReport) -> Vec<&'static dyn Manager> {
    let changed = |m: &&dyn Manager| {
        report.files.iter().any(|f| {
            f.action != FileAction::Unchanged
                && m.dirs().iter().any(|d| Path::new(&f.path).starts_with(d))
        })
    };
    let netplan = MANAGERS
        .iter()
        .any(|m| m.backend() == Backend::Netplan && changed(m));
    MANAGERS
        .into_iter()
        .filter(|m| changed(m))
        .filter(|m| !(netplan && m.backend() == Backend::Networkd))
        .collect()
}

/// Every file symroute wrote (found by its header), with its owner.
pub fn owned_files(root: &Root) -> Vec<(PathBuf, Owner)> {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in MANAGERS.iter().flat_map(|m| m.dirs()) {
        files.extend(root.list(dir));
    }
    // networkd drop-ins live in `<name>.network.d/` beside the files they extend.
    for sub in root.subdirs(networkd::DIR) {
        if sub.extension().is_some_and(|e| e == "d") {
            files.extend(root.list(&sub.to_string_lossy()));
        }
    }
    files.sort();
    files.dedup();
    files
        .into_iter()
        .filter_map(|p| {
            let text = read_head(&root.path(&p))?;
            owner_of(&text).map(|o| (p, o))
        })
        .collect()
}

/// The first line of a file, without reading binaries or large files whole.
fn read_head(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut buf = [0u8; 256];
    let mut f = fs::File::open(path).ok()?;
    let n = f.read(&mut buf).ok()?;
    let s = std::str::from_utf8(&buf[..n]).ok().or_else(|| {
        // A multi-byte character cut at the end: the first line is what matters.
        std::str::from_utf8(&buf[..n.saturating_sub(3)]).ok()
    })?;
    Some(s.lines().next().unwrap_or("").to_owned())
}

/// Deletes for `remove`, plus the shared files no ENI needs any more.
/// `attached`: the MACs attached now (for `Target::Stale`).
pub fn plan_remove(root: &Root, target: &Target, attached: &[Mac]) -> Vec<FileOp> {
    let owned = owned_files(root);
    let goes = |o: &Owner| match o {
        Owner::Shared => false,
        Owner::Eni { mac, eni_id } => target.owns_files_of(*mac, eni_id, attached),
    };
    let mut ops: Vec<FileOp> = owned
        .iter()
        .filter(|(_, o)| goes(o))
        .map(|(p, _)| FileOp::Delete { path: p.clone() })
        .collect();
    let remaining: Vec<&(PathBuf, Owner)> = owned.iter().filter(|(_, o)| !goes(o)).collect();
    ops.extend(unit::shared_cleanup(root, &remaining));
    ops
}

/// For `apply`: the new files of these ENIs, deletes of their earlier files that the new
/// rendering no longer has (another backend, another matching file), and of files of ENIs no
/// longer attached when `prune_macs` lists the attached ones (`apply --all`).
pub fn plan_apply(
    backend: Backend,
    root: &Root,
    enis: &[EniConfig],
    prune_macs: Option<&[Mac]>,
) -> Result<Vec<FileOp>> {
    let mut ops: Vec<FileOp> = Vec::new();
    for eni in enis {
        for op in render(backend, root, eni)? {
            // Shared files (the unit template) come once per ENI: keep one.
            if !ops.iter().any(|o| o.path() == op.path()) {
                ops.push(op);
            }
        }
    }
    let owned = owned_files(root);
    let writes: Vec<PathBuf> = ops.iter().map(|o| o.path().to_path_buf()).collect();
    let mut remaining = Vec::new();
    for (path, owner) in &owned {
        let stale = match owner {
            Owner::Shared => false,
            Owner::Eni { mac, .. } => {
                enis.iter().any(|e| e.mac == *mac) && !writes.contains(path)
                    || prune_macs.is_some_and(|m| !m.contains(mac))
            }
        };
        if stale && !writes.contains(path) {
            ops.push(FileOp::Delete { path: path.clone() });
        } else {
            remaining.push((path.clone(), owner.clone()));
        }
    }
    // Shared files of a backend no longer used by any ENI.
    let mut after: Vec<(PathBuf, Owner)> = remaining;
    for o in &ops {
        if let FileOp::Write { path, content, .. } = o {
            if let Some(owner) = std::str::from_utf8(content).ok().and_then(owner_of) {
                after.push((path.clone(), owner));
            }
        }
    }
    let refs: Vec<&(PathBuf, Owner)> = after.iter().collect();
    ops.extend(
        unit::shared_cleanup(root, &refs)
            .into_iter()
            .filter(|d| !writes.contains(&d.path().to_path_buf())),
    );
    Ok(ops)
}

/// A file's content and mode before this run changed it.
type Before = (Vec<u8>, u32);

/// Before-images of what a run changed, so a failed run can put every file back.
#[derive(Debug, Default)]
pub struct Journal {
    undo: Vec<(PathBuf, Option<Before>)>,
    created_dirs: Vec<PathBuf>,
}

impl Journal {
    /// Restores every file this run wrote or deleted, newest first. Returns what failed.
    pub fn rollback(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some((path, before)) = self.undo.pop() {
            let res = match before {
                None => fs::remove_file(&path),
                Some((content, mode)) => write_atomic(&path, &content, mode),
            };
            if let Err(e) = res {
                errors.push(format!("{}: {e}", path.display()));
            }
        }
        while let Some(d) = self.created_dirs.pop() {
            let _ = fs::remove_dir(&d);
        }
        errors
    }
}

/// Which of the ops would change something (for reports and dry runs).
pub fn changes(root: &Root, ops: &[FileOp]) -> Vec<(FileOp, bool)> {
    ops.iter()
        .map(|op| {
            let changed = match op {
                FileOp::Write {
                    path,
                    content,
                    mode,
                } => {
                    let p = root.path(path);
                    fs::read(&p).ok().as_ref() != Some(content)
                        || fs::metadata(&p)
                            .map(|m| m.permissions().mode() & 0o7777 != *mode)
                            .unwrap_or(true)
                }
                FileOp::Delete { path } => fs::symlink_metadata(root.path(path)).is_ok(),
            };
            (op.clone(), changed)
        })
        .collect()
}

/// Carries out the ops as one transaction: on the first failure, everything done so far is
/// undone and the error returned.
pub fn execute(root: &Root, ops: &[FileOp], report: &mut PersistReport) -> Result<Journal> {
    let mut journal = Journal::default();
    for (op, changed) in changes(root, ops) {
        let shown = op.path().display().to_string();
        if !changed {
            if matches!(op, FileOp::Write { .. }) {
                report.files.push(FileChange {
                    path: shown,
                    action: FileAction::Unchanged,
                });
            }
            continue;
        }
        let path = root.path(op.path());
        let before = fs::read(&path).ok().map(|c| {
            (
                c,
                fs::metadata(&path)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .unwrap_or(0o644),
            )
        });
        let res = match &op {
            FileOp::Write { content, mode, .. } => {
                create_dirs(&path, &mut journal).and_then(|_| write_atomic(&path, content, *mode))
            }
            FileOp::Delete { .. } => fs::remove_file(&path).map(|_| prune_dirs(root, op.path())),
        };
        match res {
            Ok(()) => {
                journal.undo.push((path, before));
                report.files.push(FileChange {
                    path: shown,
                    action: if matches!(op, FileOp::Write { .. }) {
                        FileAction::Written
                    } else {
                        FileAction::Deleted
                    },
                });
            }
            Err(e) => {
                let errors = journal.rollback();
                let mut msg = format!("{}: {e}", path.display());
                if !errors.is_empty() {
                    msg.push_str(&format!("; restoring files failed: {}", errors.join("; ")));
                }
                return Err(Error::Persist(msg));
            }
        }
    }
    Ok(journal)
}

/// Reports what a dry run would write or delete.
pub fn dry_run(root: &Root, ops: &[FileOp], report: &mut PersistReport) {
    for (op, changed) in changes(root, ops) {
        let action = match (&op, changed) {
            (FileOp::Write { .. }, true) => FileAction::WouldWrite,
            (FileOp::Write { .. }, false) => FileAction::Unchanged,
            (FileOp::Delete { .. }, true) => FileAction::WouldDelete,
            (FileOp::Delete { .. }, false) => continue,
        };
        report.files.push(FileChange {
            path: op.path().display().to_string(),
            action,
        });
    }
}

fn create_dirs(path: &Path, journal: &mut Journal) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut d = path.parent();
    while let Some(dir) = d {
        if dir.exists() {
            break;
        }
        missing.push(dir.to_path_buf());
        d = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        fs::create_dir(&dir)?;
        // Whatever umask the caller runs under (SSM's may be 077): network managers read these
        // directories as unprivileged users (systemd-network, for one).
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        journal.created_dirs.push(dir);
    }
    Ok(())
}

/// Directories symroute creates for its own files and removes again once they are empty.
fn own_dir(abs: &Path) -> bool {
    let s = abs.to_string_lossy();
    (s.starts_with(&format!("{}/", networkd::DIR)) && s.ends_with(".network.d"))
        || unit::OWN_DIRS.contains(&s.as_ref())
}

fn prune_dirs(root: &Root, abs: &Path) {
    let mut d = abs.parent();
    while let Some(dir) = d {
        if !own_dir(dir) || fs::remove_dir(root.path(dir)).is_err() {
            break;
        }
        d = dir.parent();
    }
}

/// Writes through a temporary file and a rename, so a reader (or a crash) never sees half a file.
fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.symroute-tmp"));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// `ip` syntax of an address or network, as every text backend writes it.
pub fn net(n: &IpNet) -> String {
    n.to_string()
}

pub fn addr(ip: &IpAddr) -> String {
    ip.to_string()
}

/// Shell-style glob (`*`, `?`, `[...]`), as networkd and netplan match interface names.
pub(crate) fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('*') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
            Some('?') => !s.is_empty() && go(&p[1..], &s[1..]),
            Some('[') => {
                let Some(end) = p.iter().skip(1).position(|c| *c == ']').map(|i| i + 1) else {
                    return !s.is_empty() && s[0] == '[' && go(&p[1..], &s[1..]);
                };
                if s.is_empty() {
                    return false;
                }
                let set = &p[1..end];
                let (neg, set) = match set.first() {
                    Some('!') | Some('^') => (true, &set[1..]),
                    _ => (false, set),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= s[0] && s[0] <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == s[0];
                        i += 1;
                    }
                }
                hit != neg && go(&p[end + 1..], &s[1..])
            }
            Some(c) => !s.is_empty() && s[0] == *c && go(&p[1..], &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    go(&p, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_netplan_runs_networkd_drop_in_does_not_make_networkd_reload() {
        let report = |paths: &[&str]| PersistReport {
            files: paths
                .iter()
                .map(|p| FileChange {
                    path: (*p).into(),
                    action: FileAction::Written,
                })
                .collect(),
            ..Default::default()
        };
        let backends = |r: &PersistReport| -> Vec<Backend> {
            touched(r).iter().map(|m| m.backend()).collect()
        };
        let netplan = report(&[
            "/etc/netplan/90-symroute-eth1.yaml",
            "/etc/systemd/network/10-netplan-00-symroute-eth1.network.d/90-symroute-eth1.conf",
        ]);
        assert_eq!(backends(&netplan), vec![Backend::Netplan]);
        let networkd = report(&["/etc/systemd/network/05-symroute-eth1.network"]);
        assert_eq!(backends(&networkd), vec![Backend::Networkd]);
    }

    #[test]
    fn glob_matches_like_fnmatch() {
        assert!(glob("eth*", "eth1"));
        assert!(glob("en[os]?", "ens5"));
        assert!(!glob("en[!s]5", "ens5"));
        assert!(glob("*", ""));
        assert!(!glob("eth?", "eth10"));
        assert!(glob("eth1", "eth1"));
    }

    #[test]
    fn header_round_trips_and_foreign_files_have_no_owner() {
        let h = "# symroute: eni=eni-0a9c4b60624c0e41d mac=0a:00:00:00:00:02 (written by symroute apply; symroute remove deletes it)\n[Match]\n";
        assert_eq!(
            owner_of(h),
            Some(Owner::Eni {
                eni_id: "eni-0a9c4b60624c0e41d".into(),
                mac: "0a:00:00:00:00:02".parse().unwrap()
            })
        );
        assert_eq!(owner_of(SHARED_HEADER), Some(Owner::Shared));
        assert_eq!(owner_of("# symroute is great\n"), None);
        assert_eq!(owner_of("[Match]\n# symroute: shared\n"), None);
        assert_eq!(owner_of(""), None);
    }
}
