//! Deciding whether a root-only test can run here.

use std::sync::OnceLock;

use crate::netns;

/// True when the test may go on: running as root with working network namespaces.
/// Otherwise, under CI (`CI=true`) it panics, because CI must run these tests, and elsewhere
/// it prints `skipped: ...` and returns false.
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
            println!("skipped: {why}");
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
