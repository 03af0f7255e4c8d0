//! Network namespaces: unique names, creation, teardown, leftovers, entering one from a thread.

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use nix::sched::{setns, CloneFlags};

use crate::cmd;
use crate::error::{Error, Result};

/// Every namespace the testbed creates starts with this, so leftovers can be found.
pub const NAME_PREFIX: &str = "srt";
pub(crate) const NETNS_DIR: &str = "/run/netns";

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

/// A prefix unique across processes (pid) and threads (counter), short enough that
/// `prefix + "i12"` stays a valid 15-character name: `srt<pid36>-<n36>-`.
pub(crate) fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{NAME_PREFIX}{}-{}-",
        base36(std::process::id().into()),
        base36(n.into())
    )
}

/// The pid encoded in a testbed namespace name, if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    u32::from_str_radix(pid, 36).ok()
}

/// Creates namespace `name` with its loopback up.
pub(crate) fn create(name: &str) -> Result<()> {
    cmd::ip(None, &["netns", "add", name])?;
    cmd::ip(Some(name), &["link", "set", "lo", "up"])?;
    Ok(())
}

/// Kills every process still inside `name`, waits (bounded) until they are dead, then deletes
/// it. Best effort: used from `Drop`.
pub(crate) fn destroy(name: &str) {
    let pids: Vec<i32> = cmd::output(Command::new("ip").args(["netns", "pids", name]))
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for pid in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while pids.iter().any(|p| is_alive(*p as u32)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = cmd::output(Command::new("ip").args(["netns", "del", name]));
}

/// Whether a process exists and is not a zombie (a killed process whose parent has not
/// reaped it yet is dead for our purposes).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Names of existing namespaces that start with `prefix`.
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Deletes namespaces (and their processes) left behind by testbed processes that died
/// without cleaning up, such as a killed test run; returns their names. [`crate::Vpc::new`]
/// does this once per process.
pub fn sweep_leftovers() -> Vec<String> {
    let me = std::process::id();
    let mut swept = Vec::new();
    for name in list_with_prefix(NAME_PREFIX) {
        if let Some(pid) = owner_pid(&name) {
            if pid != me && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                destroy(&name);
                swept.push(name);
            }
        }
    }
    swept
}

pub(crate) fn sweep_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        sweep_leftovers();
    });
}

/// The namespace-name prefix a testbed process with `pid` uses (for tests of the sweep).
pub fn prefix_of_pid(pid: u32) -> String {
    format!("{NAME_PREFIX}{}-", base36(pid.into()))
}

/// Moves the calling thread into namespace `ns` (only this thread: setns is per thread).
pub(crate) fn enter(ns: &str) -> Result<()> {
    let setns_err = |source| Error::Setns {
        ns: ns.to_string(),
        source,
    };
    let file = File::open(format!("{NETNS_DIR}/{ns}")).map_err(setns_err)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| setns_err(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_short_unique_and_parse_back() {
        let a = unique_prefix();
        let b = unique_prefix();
        assert_ne!(a, b);
        assert!(a.len() + 3 <= 15, "{a} too long");
        assert_eq!(owner_pid(&format!("{a}r")), Some(std::process::id()));
        assert_eq!(owner_pid("other"), None);
        assert_eq!(base36(4194304), "2hwcg");
        assert_eq!(base36(0), "0");
    }
}
