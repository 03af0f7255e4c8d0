//! The boot-time unit (anything with systemd, where no network manager symroute can configure
//! owns the interface): a udev rule per ENI that, when its interface appears (at boot, by udev's
//! coldplug, or hot-plugged), starts `symroute@<eni-id>.service`, which runs `symroute apply`
//! for that ENI. The agent SSM runs lives in a temporary directory, so a copy of it is kept at
//! a fixed path for the unit: in /usr/local/sbin, whose files SELinux labels `bin_t`, which
//! systemd may execute on RHEL and Amazon Linux in enforcing mode (a copy under /var/lib would
//! be `var_lib_t`, which it may not), under a name of its own so no installed `symroute` is
//! replaced.

use std::fmt::Write as _;
use std::path::Path;

use super::{Backend, EniConfig, FileOp, Manager, Owner, Root, SHARED_HEADER};
use crate::error::{Error, Result};
use crate::model::Mac;

pub(crate) const UNIT_DIR: &str = "/etc/systemd/system";
pub(crate) const RULES_DIR: &str = "/etc/udev/rules.d";
pub(crate) const TEMPLATE: &str = "/etc/systemd/system/symroute@.service";
pub(crate) const BIN: &str = "/usr/local/sbin/symroute-boot";
/// Directories of our own, removed again once empty (the copy's directory is the system's).
pub(crate) const OWN_DIRS: &[&str] = &[];

pub(crate) struct Unit;

impl Manager for Unit {
    fn backend(&self) -> Backend {
        Backend::Unit
    }

    /// Last: systemd is the running init (sd_booted(): /run/systemd/system), not merely
    /// installed, and no network manager symroute can configure owns the interfaces.
    fn detect(&self, root: &Root, _: &[(String, Mac)]) -> Option<(Backend, String)> {
        root.exists("/run/systemd/system").then(|| {
            (
                Backend::Unit,
                "detected: systemd without a network manager that symroute can configure".into(),
            )
        })
    }

    fn render(&self, _: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
        render(eni)
    }

    fn dirs(&self) -> &'static [&'static str] {
        &[RULES_DIR, UNIT_DIR]
    }
}

pub(crate) fn template() -> String {
    let mut s = SHARED_HEADER.to_string();
    let _ = write!(
        s,
        "[Unit]\nDescription=symroute: symmetric policy routing for ENI %i\n\
         # Runs when the ENI's interface appears (udev rule 90-symroute-%i.rules), after the\n\
         # network is up so that instance metadata is reachable.\n\
         Wants=network-online.target\nAfter=network-online.target\n\
         StartLimitIntervalSec=600\nStartLimitBurst=5\n\n\
         [Service]\n\
         # simple, not oneshot: systemd before 244 (RHEL 8, Amazon Linux 2) refuses Restart= on\n\
         # oneshot services.\n\
         Type=simple\n\
         ExecStart={BIN} apply --eni %i --persist none --wait 60\n\
         # 1 (failed, host left as it was) and 3 (not there yet) are worth another try, bounded\n\
         # by the start limit; 2 (bad input) is not.\n\
         Restart=on-failure\nRestartSec=10\nRestartPreventExitStatus=2\n"
    );
    s
}

pub(crate) fn udev_rule(eni: &EniConfig) -> String {
    let mut s = eni.header();
    let _ = writeln!(
        s,
        "ACTION==\"add\", SUBSYSTEM==\"net\", ATTR{{address}}==\"{}\", TAG+=\"systemd\", ENV{{SYSTEMD_WANTS}}+=\"symroute@{}.service\"",
        eni.mac, eni.eni_id
    );
    s
}

/// The files of one ENI; `bin` is the agent's own executable, copied for the unit.
pub fn render_with(eni: &EniConfig, bin: Vec<u8>) -> Vec<FileOp> {
    vec![
        FileOp::Write {
            path: BIN.into(),
            content: bin,
            mode: 0o755,
        },
        FileOp::text(TEMPLATE, template(), 0o644),
        FileOp::text(
            Path::new(RULES_DIR).join(format!("90-symroute-{}.rules", eni.eni_id)),
            udev_rule(eni),
            0o644,
        ),
    ]
}

pub fn render(eni: &EniConfig) -> Result<Vec<FileOp>> {
    let exe = std::env::current_exe()
        .and_then(std::fs::read)
        .map_err(|e| {
            Error::Persist(format!(
                "reading the running agent to copy it to {BIN}: {e}"
            ))
        })?;
    Ok(render_with(eni, exe))
}

/// The template and the agent copy go with the last ENI's udev rule (and only if the template
/// is ours: the copy is ours exactly when the template is).
pub(crate) fn shared_cleanup(
    root: &Root,
    remaining: &[&(std::path::PathBuf, Owner)],
) -> Vec<FileOp> {
    let template_ours = remaining
        .iter()
        .any(|(p, o)| p == Path::new(TEMPLATE) && *o == Owner::Shared);
    let rules_left = remaining
        .iter()
        .any(|(p, o)| p.starts_with(RULES_DIR) && matches!(o, Owner::Eni { .. }));
    if !template_ours || rules_left {
        return Vec::new();
    }
    let mut ops = vec![FileOp::Delete {
        path: TEMPLATE.into(),
    }];
    // The on-host trigger's units run the same copy: it stays while they do.
    if root.exists(BIN) && !crate::trigger::is_installed(root) {
        ops.push(FileOp::Delete { path: BIN.into() });
    }
    ops
}
