//! `check`: what the periodic timer runs. `apply --all --wait 0`, except that the metadata
//! that cannot change while an ENI stays attached is taken from what earlier runs kept
//! (crate::fixed_metadata) and the requests are paced: a fleet-wide, every-15-minutes run
//! should cost instance metadata as little as it can.

use crate::cli::{ApplyArgs, CheckArgs, TargetArgs};
use crate::report::{Action, Report};

pub fn run(args: &CheckArgs) -> (Report, crate::error::Result<()>) {
    let a = ApplyArgs {
        target: TargetArgs::default(),
        persist: args.persist,
        root: args.root.clone(),
        wait: 0,
        dry_run: false,
        force: false,
        install_trigger: false,
        connmark: None,
        primary_is_noop: false,
        periodic: true,
    };
    let mut r = Report::new(Action::Apply, false);
    let res = super::apply::run(&a, &mut r);
    (r, res)
}
