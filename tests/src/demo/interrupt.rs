//! Ctrl-C (and SIGTERM, SIGHUP) turn into an error at the next check, so the demo unwinds
//! through its destructors: processes stopped, namespaces deleted.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::error::{Result, StepError};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handlers (once, from `main`; tests leave the default behaviour).
pub fn install() -> std::io::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(std::io::Error::from)?;
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Err when a signal arrived: the caller returns it and everything is cleaned up on the way out.
pub fn check(step: &str) -> Result<()> {
    if interrupted() {
        Err(StepError::new(step, "interrupted by a signal"))
    } else {
        Ok(())
    }
}
