//! Serialises runs. Two SSM commands for two ENIs can arrive at once, and both read-modify-write
//! the same routing state. The lock is an abstract Unix socket: it belongs to the network
//! namespace whose routing it protects, and the kernel releases it when the process dies, so a
//! crashed run never leaves a stale lock file behind.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::thread::sleep;
use std::time::{Duration, Instant};

use log::info;

use crate::error::{Error, Result};

const NAME: &[u8] = b"symroute-agent.lock";

pub struct RunLock {
    _socket: UnixListener,
}

pub fn acquire(timeout: Duration) -> Result<RunLock> {
    let addr = SocketAddr::from_abstract_name(NAME).map_err(|e| Error::Lock(e.to_string()))?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match UnixListener::bind_addr(&addr) {
            Ok(s) => return Ok(RunLock { _socket: s }),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if start.elapsed() >= timeout {
                    return Err(Error::Locked(timeout));
                }
                if !told {
                    info!("another symroute run is in progress; waiting for it");
                    told = true;
                }
                sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(Error::Lock(e.to_string())),
        }
    }
}
