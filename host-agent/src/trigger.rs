//! The on-host trigger (`symroute install`, and `apply --install-trigger` after a first good
//! run): a udev rule and two systemd template units, so that every later attach is handled on
//! the host the moment its interface appears, with the CloudTrail path as bootstrap and backstop.
//!
//! - `ACTION=="add"` of a network device driven by ena, ixgbevf, vif (Xen) or virtio_net (QEMU)
//!   starts `symroute-attach@<mac>.service` (udev's `SYSTEMD_WANTS`), which runs `symroute hotplug
//!   add --mac <mac>`: apply for that ENI, waiting for metadata; nothing for the primary. At boot
//!   udev's coldplug does the same for every ENI, which configures ENIs attached while the
//!   instance was stopped.
//! - `ACTION=="remove"` starts `symroute-detach@<mac>.service` (the MAC is kept in the device's
//!   udev database at add time, since sysfs is gone by then), which runs `symroute hotplug remove
//!   --mac <mac>`.
//!
//! - `symroute-check.timer` runs `check` (`apply --all`, re-reading only the metadata that can
//!   change on an attached ENI) 5 minutes after boot and then every 15 minutes,
//!   each time up to 5 minutes late at random (so a fleet does not call IMDS in step): what no
//!   event reported is put right. The attach units pull it in (`Wants=`), so it runs wherever the
//!   trigger has run once, with no `systemctl enable`.
//!
//! Where a native tool already reacts to hot-plugged ENIs (amazon-ec2-net-utils, cloud-init's
//! hotplug hook, nm-cloud-setup, SUSE's cloud-netconfig), symroute steps aside unless `--force`.
//!
//! The units run the agent copy at /usr/local/sbin/symroute-boot (SELinux `bin_t`, executable by
//! systemd in enforcing mode; see persist/unit.rs), shared with the unit backend.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::persist::{self, unit, FileAction, FileChange, FileOp, PersistReport, Root};

pub const RULE: &str = "/etc/udev/rules.d/81-symroute-hotplug.rules";
pub const ATTACH_UNIT: &str = "/etc/systemd/system/symroute-attach@.service";
pub const DETACH_UNIT: &str = "/etc/systemd/system/symroute-detach@.service";
/// The periodic check: `apply --all`, which changes nothing when nothing drifted, catches what
/// no event reported (a manager that dropped a rule, addresses changed with no trail).
pub const CHECK_SERVICE: &str = "/etc/systemd/system/symroute-check.service";
pub const CHECK_TIMER: &str = "/etc/systemd/system/symroute-check.timer";
/// Every file of the trigger but the agent copy, rule last (see `render_with`).
const FILES: [&str; 5] = [ATTACH_UNIT, DETACH_UNIT, CHECK_SERVICE, CHECK_TIMER, RULE];
/// First line of the trigger's files: not an ENI's, not a backend's shared file, so neither
/// `remove` nor another backend's cleanup ever deletes them; `uninstall` does.
pub const HEADER: &str =
    "# symroute: trigger (written by symroute install; symroute uninstall deletes it)\n";

/// Drivers of the NICs an EC2 instance can have (Nitro ENA, Intel VF, Xen netfront) and QEMU's
/// virtio, as udev's `DRIVERS==` alternatives.
const DRIVERS: &str = "ena|ixgbevf|vif|virtio_net";

/// Files whose presence means another tool already handles hot-plugged ENIs.
const NATIVE: &[(&str, &str)] = &[
    (
        "/usr/lib/systemd/system/policy-routes@.service",
        "amazon-ec2-net-utils",
    ),
    (
        "/etc/udev/rules.d/53-ec2-network-interfaces.rules",
        "amazon-ec2-net-utils (v1)",
    ),
    (
        "/usr/lib/udev/rules.d/99-vpc-policy-routes.rules",
        "amazon-ec2-net-utils",
    ),
    (
        "/etc/udev/rules.d/90-cloud-init-hook-hotplug.rules",
        "cloud-init's network hotplug",
    ),
    (
        "/etc/udev/rules.d/10-cloud-init-hook-hotplug.rules",
        "cloud-init's network hotplug",
    ),
    (
        "/etc/systemd/system/timers.target.wants/nm-cloud-setup.timer",
        "nm-cloud-setup",
    ),
    (
        "/etc/systemd/system/NetworkManager.service.wants/nm-cloud-setup.service",
        "nm-cloud-setup",
    ),
    // cloud-netconfig-ec2 (SLES, openSUSE): its Makefile's install-ec2 puts this rule in udev's
    // rules directory; it runs cloud-netconfig-hotplug for every eth* that comes or goes.
    (
        "/usr/lib/udev/rules.d/51-cloud-netconfig-hotplug.rules",
        "SUSE cloud-netconfig",
    ),
];

/// What happened to the trigger (JSON: kebab-case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TriggerStatus {
    /// Written now (or rewritten: a newer agent).
    Installed,
    /// Already there, byte for byte.
    Unchanged,
    /// A native tool handles hot-plugged ENIs here; nothing written.
    SteppedAside,
    /// `--dry-run`: what would be written.
    WouldInstall,
    Uninstalled,
    /// `uninstall` found nothing of the trigger's.
    NotInstalled,
    /// Installing failed; the routing of this run stands.
    Failed,
}

impl TriggerStatus {
    /// The JSON word, for the text report too.
    pub fn word(self) -> &'static str {
        match self {
            TriggerStatus::Installed => "installed",
            TriggerStatus::Unchanged => "unchanged",
            TriggerStatus::SteppedAside => "stepped-aside",
            TriggerStatus::WouldInstall => "would-install",
            TriggerStatus::Uninstalled => "uninstalled",
            TriggerStatus::NotInstalled => "not-installed",
            TriggerStatus::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TriggerReport {
    pub status: TriggerStatus,
    pub reason: String,
    pub files: Vec<FileChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The native tool that handles hot-plugged ENIs on this host, if any, and the file that says so.
pub fn native_owner(root: &Root) -> Option<String> {
    NATIVE
        .iter()
        .find(|(f, _)| std::fs::symlink_metadata(root.path(f)).is_ok())
        .map(|(f, who)| format!("{who} handles hot-plugged ENIs here ({f})"))
}

pub fn is_installed(root: &Root) -> bool {
    FILES
        .iter()
        .any(|f| std::fs::symlink_metadata(root.path(f)).is_ok())
}

pub(crate) fn udev_rule() -> String {
    format!(
        "{HEADER}\
         # A secondary ENI appears (hot-plugged, or at boot through udev's coldplug): route it at once.\n\
         # The MAC is kept in udev's database for the remove event, when sysfs is gone.\n\
         SUBSYSTEM!=\"net\", GOTO=\"symroute_end\"\n\
         ACTION==\"add\", DRIVERS==\"{DRIVERS}\", ENV{{SYMROUTE_MAC}}=\"$attr{{address}}\", \
         TAG+=\"systemd\", ENV{{SYSTEMD_WANTS}}+=\"symroute-attach@$attr{{address}}.service\"\n\
         # It goes (detached): what symroute installed for it goes too.\n\
         ACTION==\"remove\", ENV{{SYMROUTE_MAC}}==\"?*\", \
         RUN+=\"/usr/bin/systemctl --no-block start symroute-detach@$env{{SYMROUTE_MAC}}.service\"\n\
         LABEL=\"symroute_end\"\n"
    )
}

/// The sandbox both units run in. The agent needs netlink (CAP_NET_ADMIN), IMDS (IPv4/IPv6),
/// /etc for the network manager's files, /run for its lock and netplan's output, and
/// /usr/local/sbin where the unit backend keeps its copy; nothing else.
const HARDENING: &str = "\
NoNewPrivileges=yes
CapabilityBoundingSet=CAP_NET_ADMIN
ProtectSystem=true
ReadWritePaths=-/usr/local/sbin
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
";

pub(crate) fn attach_unit() -> String {
    format!(
        "{HEADER}\
         [Unit]\n\
         Description=symroute: symmetric routing for the ENI with MAC %i, as it appears\n\
         # Instance metadata is reached through the primary interface, up by then.\n\
         After=network.target\n\
         # The periodic check runs wherever the trigger has run once.\n\
         Wants=symroute-check.timer\n\
         StartLimitIntervalSec=600\n\
         StartLimitBurst=5\n\n\
         [Service]\n\
         # simple, not oneshot: systemd before 244 (RHEL 8, Amazon Linux 2) refuses Restart= on\n\
         # oneshot services.\n\
         Type=simple\n\
         ExecStart={bin} hotplug add --mac %i\n\
         # 1 (failed, host left as it was) is worth another try; 2 (bad input), 3 (not an ENI\n\
         # of this instance after the wait) and 4 (routing works, a file problem kept it from\n\
         # being persisted) are not.\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         RestartPreventExitStatus=2 3 4\n\
         {HARDENING}",
        bin = unit::BIN
    )
}

pub(crate) fn detach_unit() -> String {
    format!(
        "{HEADER}\
         [Unit]\n\
         Description=symroute: remove what symroute set up for the ENI with MAC %i, detached\n\n\
         [Service]\n\
         Type=simple\n\
         ExecStart={bin} hotplug remove --mac %i\n\
         {HARDENING}",
        bin = unit::BIN
    )
}

pub(crate) fn check_service() -> String {
    format!(
        "{HEADER}\
         [Unit]\n\
         Description=symroute: put right what no event reported (apply for every secondary ENI)\n\
         After=network.target\n\n\
         [Service]\n\
         Type=oneshot\n\
         # apply --all without waiting (an ENI that is not there yet is the attach path's, and\n\
         # 3 says only that), reading only the metadata that can change on an attached ENI.\n\
         ExecStart={bin} check\n\
         SuccessExitStatus=3\n\
         {HARDENING}",
        bin = unit::BIN
    )
}

pub(crate) fn check_timer() -> String {
    format!(
        "{HEADER}\
         [Unit]\n\
         Description=symroute: periodic check of every secondary ENI's routing\n\n\
         [Timer]\n\
         OnBootSec=5min\n\
         OnUnitActiveSec=15min\n\
         # Spread over the fleet: no two hosts need to ask instance metadata at once.\n\
         RandomizedDelaySec=5min\n\
         AccuracySec=1min\n\n\
         [Install]\n\
         WantedBy=timers.target\n"
    )
}

/// The trigger's files; `bin` is the agent's own executable, copied for the units.
pub fn render_with(bin: Vec<u8>) -> Vec<FileOp> {
    vec![
        FileOp::Write {
            path: unit::BIN.into(),
            content: bin,
            mode: 0o755,
        },
        FileOp::text(ATTACH_UNIT, attach_unit(), 0o644),
        FileOp::text(DETACH_UNIT, detach_unit(), 0o644),
        FileOp::text(CHECK_SERVICE, check_service(), 0o644),
        FileOp::text(CHECK_TIMER, check_timer(), 0o644),
        // The rule last: the units it starts exist before it can fire.
        FileOp::text(RULE, udev_rule(), 0o644),
    ]
}

/// `symroute install`: writes the trigger (or says why not), then has systemd and udev read it.
pub fn install(root: &Root, dry_run: bool, force: bool) -> Result<TriggerReport> {
    if let Some(who) = native_owner(root) {
        if !force {
            return Ok(TriggerReport {
                status: TriggerStatus::SteppedAside,
                reason: format!("{who}; nothing installed (--force to install anyway)"),
                files: Vec::new(),
                warnings: Vec::new(),
            });
        }
    }
    let exe = std::env::current_exe()
        .and_then(std::fs::read)
        .map_err(|source| Error::PersistIo {
            context: format!("reading the running agent to copy it to {}", unit::BIN),
            source,
        })?;
    let ops = render_with(exe);
    let mut files = PersistReport::default();
    if dry_run {
        persist::dry_run(root, &ops, &mut files);
        return Ok(TriggerReport {
            status: TriggerStatus::WouldInstall,
            reason: "dry run: nothing written".into(),
            files: files.files,
            warnings: Vec::new(),
        });
    }
    persist::execute(root, &ops, &mut files)?;
    let changed = files
        .files
        .iter()
        .any(|f| f.action != FileAction::Unchanged);
    let warnings = if changed {
        reload(root, &[&["start", "--no-block", "symroute-check.timer"]])
    } else {
        Vec::new()
    };
    Ok(TriggerReport {
        status: if changed {
            TriggerStatus::Installed
        } else {
            TriggerStatus::Unchanged
        },
        reason: format!(
            "udev starts symroute-attach@<mac>.service for each new ENI ({}) and symroute-detach@<mac>.service when it goes",
            DRIVERS.replace('|', ", ")
        ),
        files: files.files,
        warnings,
    })
}

/// `symroute uninstall`: deletes the trigger's files (and the agent copy unless the unit
/// backend still uses it).
pub fn uninstall(root: &Root, dry_run: bool) -> Result<TriggerReport> {
    let mut ops: Vec<FileOp> = FILES
        .iter()
        .filter(|f| ours(root, f))
        .map(|f| FileOp::Delete { path: f.into() })
        .collect();
    let unit_backend_uses_bin = std::fs::symlink_metadata(root.path(unit::TEMPLATE)).is_ok();
    if !ops.is_empty() && !unit_backend_uses_bin {
        ops.push(FileOp::Delete {
            path: unit::BIN.into(),
        });
    }
    if ops.is_empty() {
        return Ok(TriggerReport {
            status: TriggerStatus::NotInstalled,
            reason: "no trigger of symroute's here".into(),
            files: Vec::new(),
            warnings: Vec::new(),
        });
    }
    let mut files = PersistReport::default();
    if dry_run {
        persist::dry_run(root, &ops, &mut files);
        return Ok(TriggerReport {
            status: TriggerStatus::Uninstalled,
            reason: "dry run: nothing deleted".into(),
            files: files.files,
            warnings: Vec::new(),
        });
    }
    // The timer goes first, so that no check starts from a unit file about to disappear.
    let mut warnings = systemctl(root, &["stop", "symroute-check.timer"]);
    persist::execute(root, &ops, &mut files)?;
    crate::fixed_metadata::forget(root);
    warnings.extend(reload(root, &[]));
    Ok(TriggerReport {
        status: TriggerStatus::Uninstalled,
        reason: "hot-plugged ENIs are left to the CloudTrail path again".into(),
        files: files.files,
        warnings,
    })
}

/// Only files that carry the trigger's header are deleted.
fn ours(root: &Root, f: &str) -> bool {
    std::fs::read_to_string(root.path(f)).is_ok_and(|t| t.starts_with(HEADER))
}

/// On the running host (not under `--root`, and only where systemd runs): systemd reads the new
/// units, udev the new rule, then `then` (systemctl arguments). Failures are warnings: the files
/// are right, and both read them at the next boot anyway.
fn reload(root: &Root, then: &[&[&str]]) -> Vec<String> {
    let mut warnings = systemctl(root, &["daemon-reload"]);
    warnings.extend(run(root, "udevadm", &["control", "--reload"]));
    for args in then {
        warnings.extend(systemctl(root, args));
    }
    warnings
}

fn systemctl(root: &Root, args: &[&str]) -> Vec<String> {
    run(root, "systemctl", args)
}

fn run(root: &Root, prog: &str, args: &[&str]) -> Vec<String> {
    if root.path("/") != Path::new("/") || !Path::new("/run/systemd/system").exists() {
        return Vec::new();
    }
    match std::process::Command::new(prog).args(args).output() {
        Ok(o) if o.status.success() => Vec::new(),
        Ok(o) => vec![format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )],
        Err(e) => vec![format!("{prog} {}: {e}", args.join(" "))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_starts_units_by_mac_for_ec2_drivers_only() {
        let r = udev_rule();
        assert!(r.starts_with(HEADER));
        assert!(r.contains("DRIVERS==\"ena|ixgbevf|vif|virtio_net\""));
        assert!(r.contains("ENV{SYSTEMD_WANTS}+=\"symroute-attach@$attr{address}.service\""));
        assert!(r.contains("symroute-detach@$env{SYMROUTE_MAC}.service"));
        // Every rule line is guarded: no add rule without the driver match.
        for l in r.lines().filter(|l| l.starts_with("ACTION==\"add\"")) {
            assert!(l.contains("DRIVERS=="), "{l}");
        }
    }

    #[test]
    fn the_check_runs_on_a_jittered_timer_pulled_in_by_the_attach_units() {
        assert!(attach_unit().contains("Wants=symroute-check.timer"));
        let svc = check_service();
        assert!(svc.contains(&format!("ExecStart={} check\n", unit::BIN)));
        assert!(svc.contains("SuccessExitStatus=3"));
        let t = check_timer();
        for k in ["OnBootSec=", "OnUnitActiveSec=", "RandomizedDelaySec="] {
            assert!(t.contains(k), "{k}");
        }
    }

    #[test]
    fn units_never_restart_on_bad_input_and_run_sandboxed() {
        let a = attach_unit();
        assert!(a.contains("RestartPreventExitStatus=2 3 4"));
        assert!(
            a.contains("Type=simple"),
            "oneshot + Restart= is refused before systemd 244"
        );
        for u in [a, detach_unit()] {
            assert!(u.contains("CapabilityBoundingSet=CAP_NET_ADMIN\n"));
            assert!(u.contains("NoNewPrivileges=yes"));
            assert!(u.contains(&format!("ExecStart={} hotplug ", unit::BIN)));
        }
    }

    #[test]
    fn a_native_tool_makes_it_step_aside_unless_forced() {
        let dir = std::env::temp_dir().join(format!("symroute-trigger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc/udev/rules.d")).unwrap();
        std::fs::write(
            dir.join("etc/udev/rules.d/90-cloud-init-hook-hotplug.rules"),
            "",
        )
        .unwrap();
        let root = Root::new(Some(&dir)).unwrap();
        let r = install(&root, false, false).unwrap();
        assert_eq!(r.status, TriggerStatus::SteppedAside);
        assert!(r.reason.contains("cloud-init"), "{}", r.reason);
        assert!(!is_installed(&root));
        let r = install(&root, false, true).unwrap();
        assert_eq!(r.status, TriggerStatus::Installed);
        assert!(is_installed(&root));
        assert_eq!(
            install(&root, false, true).unwrap().status,
            TriggerStatus::Unchanged
        );
        let r = uninstall(&root, false).unwrap();
        assert_eq!(r.status, TriggerStatus::Uninstalled);
        assert!(!is_installed(&root));
        assert!(!dir.join("usr/local/sbin/symroute-boot").exists());
        assert_eq!(
            uninstall(&root, false).unwrap().status,
            TriggerStatus::NotInstalled
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// SLES and openSUSE on EC2: cloud-netconfig's hotplug rule means it configures every ENI
    /// as it appears, policy routing included; the persisted side steps aside too.
    #[test]
    fn suse_cloud_netconfig_makes_both_the_trigger_and_persistence_step_aside() {
        let dir = std::env::temp_dir().join(format!("symroute-suse-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("usr/lib/udev/rules.d")).unwrap();
        std::fs::write(
            dir.join("usr/lib/udev/rules.d/51-cloud-netconfig-hotplug.rules"),
            "",
        )
        .unwrap();
        let root = Root::new(Some(&dir)).unwrap();
        let r = install(&root, false, false).unwrap();
        assert_eq!(r.status, TriggerStatus::SteppedAside);
        assert!(r.reason.contains("SUSE cloud-netconfig"), "{}", r.reason);
        let choice = crate::persist::detect(&root, &[], false);
        assert_eq!(choice.backend, None);
        assert!(
            choice
                .reason
                .contains("SUSE cloud-netconfig manages ENIs here"),
            "{}",
            choice.reason
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
