//! Deciding whether a root-only test can run here.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use crate::netns;

/// Root-only tests this test binary skipped.
static SKIPPED: AtomicUsize = AtomicUsize::new(0);
static SUMMARY: Once = Once::new();

/// Printed when the test binary exits: how many tests proved nothing here.
extern "C" fn print_skipped() {
    let n = SKIPPED.load(Ordering::Relaxed);
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {n} root-only test(s) in this binary: they proved nothing here; run as root (CI=true makes a skip a failure)"
    );
}

/// True when the test may go on: running as root with working network namespaces.
/// Otherwise, under CI (`CI=true`) it panics, because CI must run these tests, and elsewhere
/// it says so on stderr past the test harness's capture (so it is seen even when the test
/// "passes") and counts the skip; the count is printed when the test binary exits.
pub fn require_root() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let problem = if !nix::unistd::geteuid().is_root() {
        Some("needs root".to_string())
    } else {
        probe_namespaces().clone().err()
    };
    match problem {
        None => true,
        Some(why) if ci => panic!("CI=true but this test cannot run: {why}"),
        Some(why) => {
            // Written to the stream itself: the harness captures only print!/eprint!.
            let test = std::thread::current().name().unwrap_or("?").to_owned();
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
            SKIPPED.fetch_add(1, Ordering::Relaxed);
            SUMMARY.call_once(|| {
                // SAFETY: registers a plain extern "C" function with no captured state.
                unsafe { libc::atexit(print_skipped) };
            });
            false
        }
    }
}

/// Creates and deletes one namespace, once per process.
fn probe_namespaces() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        let name = format!("{}probe", netns::unique_prefix());
        let result =
            netns::create(&name).map_err(|e| format!("cannot create network namespaces: {e}"));
        netns::destroy(&name);
        result
    })
}
