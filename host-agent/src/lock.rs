//! Serialises runs. Two SSM commands for two ENIs can arrive at once, and both read-modify-write
//! the same routing state.
//!
//! The lock is `flock` on `/run/symroute/lock-<network namespace inode>`:
//! - one per network namespace, the routing it protects;
//! - released by the kernel when the process dies, so a crashed run never blocks the next;
//! - in a directory only root may write (0700, owned by root, checked). Before this the lock
//!   was an abstract Unix socket name, which any local user could bind first and so block every
//!   run.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use log::info;

use crate::error::{Error, Result};

const DIR: &str = "/run/symroute";

pub(crate) struct RunLock {
    _file: File,
}

/// The lock file for this process's network namespace.
fn path() -> Result<PathBuf> {
    let ns = fs::metadata("/proc/self/ns/net")
        .map_err(|e| Error::lock_io("reading /proc/self/ns/net", e))?;
    Ok(Path::new(DIR).join(format!("lock-{}", ns.ino())))
}

/// `/run/symroute`, created private to root, or refused when someone else made it first.
fn private_dir() -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(DIR) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::lock_io(format!("creating {DIR}"), e)),
    }
    let m = fs::symlink_metadata(DIR).map_err(|e| Error::lock_io(DIR, e))?;
    if !m.is_dir() || m.uid() != 0 || m.permissions().mode() & 0o022 != 0 {
        return Err(Error::Lock(format!(
            "{DIR} is not a directory private to root (owner {}, mode {:o}): another user may \
             have made it to block symroute; remove it",
            m.uid(),
            m.permissions().mode() & 0o7777
        )));
    }
    Ok(())
}

pub(crate) fn acquire(timeout: Duration) -> Result<RunLock> {
    private_dir()?;
    let path = path()?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| Error::lock_io(path.display().to_string(), e))?;
    let start = Instant::now();
    let mut told = false;
    loop {
        // SAFETY: a valid open descriptor; flock only reads it.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(RunLock { _file: file });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::lock_io(path.display().to_string(), err));
        }
        if start.elapsed() >= timeout {
            return Err(Error::Locked(timeout));
        }
        if !told {
            info!("another symroute run is in progress; waiting for it");
            told = true;
        }
        sleep(Duration::from_millis(20));
    }
}
