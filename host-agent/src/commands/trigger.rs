//! `install` and `uninstall`: the on-host trigger (see crate::trigger).

use crate::cli::{InstallArgs, UninstallArgs};
use crate::error::Result;
use crate::report::Report;

pub fn install(args: &InstallArgs, report: &mut Report) -> Result<()> {
    let root = super::persist_root(args.root.as_deref())?;
    if !args.dry_run {
        crate::platform::check(&root.path("/"), true)?;
    }
    report.trigger = Some(crate::trigger::install(&root, args.dry_run, args.force)?);
    Ok(())
}

pub fn uninstall(args: &UninstallArgs, report: &mut Report) -> Result<()> {
    let root = super::persist_root(args.root.as_deref())?;
    if !args.dry_run {
        crate::platform::check(&root.path("/"), true)?;
    }
    report.trigger = Some(crate::trigger::uninstall(&root, args.dry_run)?);
    Ok(())
}
