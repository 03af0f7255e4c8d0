//! `hotplug add|remove --mac M`: what the trigger's units run for one interface event. `add` is
//! `apply --mac M` in which the primary is a no-op (udev's coldplug at boot announces it too);
//! `remove` is `remove --mac M`, which, once metadata has forgotten the ENI, removes what every
//! detached ENI left.

use crate::cli::{ApplyArgs, HotplugArgs, HotplugEvent, PersistMode, RemoveArgs, TargetArgs};
use crate::report::{Action, Report};

/// How long `hotplug add` waits for a just-attached ENI in metadata and as a link.
const WAIT_SECS: u64 = 60;

pub fn run(args: &HotplugArgs) -> (Report, crate::error::Result<()>) {
    let target = TargetArgs {
        mac: Some(args.mac),
        ..Default::default()
    };
    match args.event {
        HotplugEvent::Add => {
            let a = ApplyArgs {
                target,
                persist: PersistMode::Auto,
                root: args.root.clone(),
                wait: WAIT_SECS,
                dry_run: false,
                force: false,
                install_trigger: false,
                connmark: None,
                primary_is_noop: true,
                periodic: false,
            };
            let mut r = Report::new(Action::Apply, false);
            let res = super::apply::run(&a, &mut r);
            (r, res)
        }
        HotplugEvent::Remove => {
            let a = RemoveArgs {
                target,
                stale: false,
                persist: PersistMode::Auto,
                root: args.root.clone(),
                dry_run: false,
            };
            let mut r = Report::new(Action::Remove, false);
            let res = super::remove::run(&a, &mut r);
            (r, res)
        }
    }
}
