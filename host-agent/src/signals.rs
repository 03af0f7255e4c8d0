//! Holds back termination signals while the kernel is being changed, so that a Ctrl-C or an SSM
//! timeout's SIGTERM lands between transactions, never in the middle of one (which would leave
//! half an ENI configured). The signal is delivered, and acts, as soon as the guard drops.

pub struct Held {
    old: libc::sigset_t,
}

const HELD: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Blocks the termination signals for the calling thread (the agent changes the kernel from its
/// main thread only) until the guard is dropped.
pub fn hold() -> Held {
    // SAFETY: plain libc calls on stack-allocated signal sets.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in HELD {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        Held { old }
    }
}

/// The message logged when a held signal is about to act: the run was asked to stop while it
/// changed the kernel, finished the change, and stops now (so the report never comes).
pub const ARRIVED_DURING_CHANGES: &str =
    "a termination signal arrived while the kernel was being changed; the change is complete, stopping now";

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: plain libc calls on a stack-allocated signal set.
        let pending = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut set);
            HELD.iter().any(|&s| libc::sigismember(&set, s) == 1)
        };
        if pending {
            log::warn!("{ARRIVED_DURING_CHANGES}");
        }
        // SAFETY: restores the mask saved by `hold`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}
