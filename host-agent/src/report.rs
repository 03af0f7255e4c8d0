//! What a run reports: plain data, printed as JSON (`--json`, kept by SSM as the command
//! output) or as short human-readable lines.

use std::fmt::Write as _;

use serde::Serialize;

use crate::plan::{EniPlan, EniStatus};
use crate::verify::Check;

/// The subcommand a report is about (JSON: `apply`, `remove`, `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Apply,
    Remove,
    Status,
    Install,
    Uninstall,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub action: Action,
    pub ok: bool,
    pub exit_code: u8,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub enis: Vec<EniReport>,
    /// Agent-owned state removed because no ENI wants it any more.
    pub pruned: Vec<String>,
    /// Kernel changes made by this run (0 for a no-op re-apply and for --dry-run).
    pub changes: usize,
    pub netlink_requests: u32,
    pub imds_requests: u32,
    pub persist: crate::persist::PersistReport,
    /// The on-host trigger: `install`, `uninstall`, `apply --install-trigger`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::trigger::TriggerReport>,
    /// The primary interface's paths, read before the run's changes and again after (apply
    /// with changes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<crate::guard::PrimaryReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct EniReport {
    pub eni_id: String,
    pub mac: String,
    pub interface: Option<String>,
    pub device_number: u32,
    pub network_card: u32,
    pub table: u32,
    pub status: EniStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    pub addresses: Vec<String>,
    /// Rules that steer this ENI's traffic (status only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// Changes planned (with --dry-run) or made, as the equivalent `ip` commands.
    pub changes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<Check>,
    /// Every checked address leaves by its own link.
    pub symmetric: Option<bool>,
    /// In the connmark mode: replies to flows that arrived on the ENI leave by it, whatever
    /// their source (apply and status; absent where the ENI was not looked at).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connmark: Option<bool>,
}

impl EniReport {
    pub fn from_plan(p: &EniPlan) -> Self {
        let e = &p.eni;
        EniReport {
            eni_id: e.eni_id.to_string(),
            mac: e.mac.to_string(),
            interface: p.link.as_ref().map(|l| l.name.clone()),
            device_number: e.device_number,
            network_card: e.network_card,
            table: e.table(),
            status: p.status,
            managed_by: p.owner.clone(),
            addresses: e
                .ipv4s
                .iter()
                .map(|i| i.to_string())
                .chain(e.prefixes_v4.iter().map(|n| n.to_string()))
                .chain(e.ipv6s.iter().map(|i| i.to_string()))
                .chain(e.prefixes_v6.iter().map(|n| n.to_string()))
                .collect(),
            rules: Vec::new(),
            changes: p.ops.iter().map(|o| o.to_string()).collect(),
            warnings: p.warnings.clone(),
            verify: Vec::new(),
            symmetric: None,
            connmark: None,
        }
    }

    pub fn set_checks(&mut self, checks: Vec<Check>) {
        self.symmetric = Some(!checks.is_empty() && checks.iter().all(|c| c.ok));
        self.verify = checks;
    }
}

impl Report {
    pub fn new(action: Action, dry_run: bool) -> Self {
        Report {
            action,
            ok: true,
            exit_code: crate::error::EXIT_OK,
            dry_run,
            instance_id: None,
            enis: Vec::new(),
            pruned: Vec::new(),
            changes: 0,
            netlink_requests: 0,
            imds_requests: 0,
            persist: crate::persist::PersistReport::none("not asked"),
            trigger: None,
            primary: None,
            notes: Vec::new(),
            error: None,
            duration_ms: 0,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }

    /// A few lines a person can read at a glance.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for e in &self.enis {
            let iface = e.interface.as_deref().unwrap_or("-");
            let status = match (self.action, e.status) {
                (_, EniStatus::Missing) => "no kernel link yet".to_string(),
                (_, EniStatus::NotReady) => "metadata not settled yet, left alone".to_string(),
                (_, EniStatus::TableConflict) => "table claimed twice, left alone".to_string(),
                (_, EniStatus::Failed) => "failed, its changes undone".to_string(),
                (Action::Status, EniStatus::ManagedByOther) => format!(
                    "managed by another tool: {}",
                    e.managed_by.as_deref().unwrap_or("unknown")
                ),
                (Action::Status, _) => {
                    format!("managed by {}", e.managed_by.as_deref().unwrap_or("nobody"))
                }
                (_, EniStatus::ManagedByOther) => {
                    "managed by another tool, left alone (--force to take over)".into()
                }
                (Action::Remove, _) => format!("{} change(s)", e.changes.len()),
                (_, _) if e.changes.is_empty() => "nothing to do".to_string(),
                (_, _) if self.dry_run => format!("{} change(s) planned", e.changes.len()),
                (_, _) => format!("{} change(s)", e.changes.len()),
            };
            let sym = match e.symmetric {
                Some(true) => ", symmetric",
                Some(false) => ", NOT symmetric",
                None => "",
            };
            let _ = writeln!(
                s,
                "{iface} {} {} table {}: {status}{sym}",
                e.eni_id, e.mac, e.table
            );
            if self.action == Action::Status {
                let _ = writeln!(s, "  addresses: {}", e.addresses.join(" "));
                for r in &e.rules {
                    let _ = writeln!(s, "  rule: {r}");
                }
            } else if let (EniStatus::ManagedByOther, Some(m)) = (e.status, &e.managed_by) {
                let _ = writeln!(s, "  {m}");
            }
            for c in &e.changes {
                let _ = writeln!(
                    s,
                    "  {}{}",
                    if self.dry_run { "would run: " } else { "" },
                    c
                );
            }
            for c in e.verify.iter().filter(|c| !c.ok) {
                let _ = writeln!(
                    s,
                    "  check failed: from {} to {} leaves via {}",
                    c.source,
                    c.destination,
                    c.via.as_deref().unwrap_or("nothing")
                );
            }
            for w in &e.warnings {
                let _ = writeln!(s, "  warning: {w}");
            }
        }
        for p in &self.pruned {
            let _ = writeln!(
                s,
                "{}{}",
                if self.dry_run {
                    "would run: "
                } else {
                    "pruned: "
                },
                p
            );
        }
        if let Some(p) = self.primary.as_ref().filter(|p| p.moved.is_empty()) {
            let _ = writeln!(
                s,
                "primary {}: {} path(s) as before the run",
                p.interface, p.paths
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        if let Some(t) = &self.trigger {
            let _ = writeln!(s, "trigger: {} ({})", t.status.word(), t.reason);
            for f in &t.files {
                let _ = writeln!(s, "  {} {}", f.action, f.path);
            }
            for w in &t.warnings {
                let _ = writeln!(s, "  warning: {w}");
            }
        }
        if matches!(self.action, Action::Apply | Action::Remove) {
            let p = &self.persist;
            let _ = writeln!(s, "persist: {} ({})", p.backend, p.reason);
            for f in &p.files {
                let _ = writeln!(s, "  {} {}", f.action, f.path);
            }
            for w in &p.warnings {
                let _ = writeln!(s, "  warning: {w}");
            }
        }
        if self.enis.is_empty()
            && self.pruned.is_empty()
            && self.error.is_none()
            && self.trigger.is_none()
        {
            let _ = writeln!(s, "nothing to do");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::{FileAction, FileChange};

    /// The JSON words are an interface (SSM keeps the output, scripts read it): the enums must
    /// print exactly the strings the report always had.
    #[test]
    fn actions_keep_their_json_words() {
        let mut r = Report::new(Action::Remove, true);
        r.persist.files.push(FileChange {
            path: "/etc/x".into(),
            action: FileAction::WouldDelete,
        });
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["action"], "remove");
        assert_eq!(v["persist"]["files"][0]["action"], "would-delete");
        assert_eq!(v["persist"]["backend"], "none");
        for (p, word) in [
            (crate::persist::Persisted::Any, "any"),
            (
                crate::persist::Persisted::By(crate::persist::Backend::Nm),
                "nm",
            ),
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), word);
        }
        for (a, word) in [
            (FileAction::Written, "written"),
            (FileAction::Deleted, "deleted"),
            (FileAction::Unchanged, "unchanged"),
            (FileAction::WouldWrite, "would-write"),
            (FileAction::WouldDelete, "would-delete"),
        ] {
            assert_eq!(serde_json::to_value(a).unwrap(), word);
            assert_eq!(a.to_string(), word);
        }
        for (a, word) in [
            (Action::Apply, "apply"),
            (Action::Remove, "remove"),
            (Action::Status, "status"),
            (Action::Install, "install"),
            (Action::Uninstall, "uninstall"),
        ] {
            assert_eq!(serde_json::to_value(a).unwrap(), word);
        }
    }
}
