//! [`Host`]: what a test does inside one namespace (an instance, a client or the router).

use std::net::IpAddr;
use std::process::{Command, Output};

use crate::cmd;
use crate::error::{Error, Result};
use crate::netns;
use crate::ping::PingStream;

/// A namespace a test can act in: an instance, a client or the router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    ns: String,
}

impl Host {
    pub(crate) fn new(ns: String) -> Self {
        Host { ns }
    }

    /// The namespace's name (for `ip netns exec NAME` or `ip -n NAME`).
    pub fn name(&self) -> &str {
        &self.ns
    }

    /// Runs `args[0]` with the rest as arguments inside the namespace; a non-zero exit is an
    /// error carrying stderr. Use [`Host::output`] when failure is an expected outcome.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let (program, rest) = split(args)?;
        cmd::run(self.command(program).args(rest))
    }

    /// Like [`Host::exec`] but returns the output whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        let (program, rest) = split(args)?;
        cmd::output(self.command(program).args(rest))
    }

    /// A command whose process is `program` itself, entered into the namespace between fork and
    /// exec (no `ip netns exec` runs first): for measuring the program's own resources, such as
    /// its peak RSS, which `wait4` would otherwise report for `ip` if that were larger.
    pub fn command_direct(&self, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
        use std::os::fd::{AsRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let path = format!("{}/{}", netns::NETNS_DIR, self.ns);
        let file: OwnedFd = std::fs::File::open(&path)
            .map_err(|source| Error::Setns {
                ns: self.ns.clone(),
                source,
            })?
            .into();
        let mut cmd = Command::new(program);
        // SAFETY: setns(2) is async-signal-safe and touches nothing of the parent; `file` is
        // moved into the closure, so the descriptor stays open until the child has used it.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Ok(cmd)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`); add
    /// arguments, environment and stdio as needed.
    pub fn command(&self, program: &str) -> Command {
        cmd::in_netns(&self.ns, program)
    }

    /// Sets one sysctl inside the namespace, e.g. `("net.ipv4.conf.all.rp_filter", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        cmd::sysctl(&self.ns, key, value)
    }

    /// `ping -c count -W timeout_secs dst` from the namespace: true when at least one reply
    /// came back (ping's own success rule).
    pub fn ping(&self, dst: IpAddr, count: u32, timeout_secs: u32) -> bool {
        let mut cmd = self.command("ping");
        if dst.is_ipv6() {
            cmd.arg("-6");
        }
        cmd.args(["-n", "-q", "-i", "0.2", "-c"])
            .arg(count.to_string())
            .arg("-W")
            .arg(timeout_secs.to_string())
            .arg(dst.to_string());
        cmd::output(&mut cmd)
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Starts an ICMP echo stream to `dst`, one request every `interval_ms`, until
    /// [`PingStream::stop`]. Errors (socket creation) surface when stopping.
    pub fn spawn_ping_stream(&self, dst: IpAddr, interval_ms: u64) -> PingStream {
        PingStream::start(self.ns.clone(), dst, interval_ms)
    }

    /// Waits (bounded) until `dev` has an IPv6 default route learned from a router
    /// advertisement, which takes a few seconds after the link comes up (DAD, then RS/RA).
    pub fn wait_ipv6_default(&self, dev: &str, timeout_secs: u64) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
        loop {
            let out = self.exec(&["ip", "-6", "route", "show", "default", "dev", dev])?;
            if String::from_utf8_lossy(&out.stdout).contains("proto ra") {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("an IPv6 default route on {dev} in {}", self.ns),
                    secs: timeout_secs,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Runs `f` on a thread that has entered this namespace, e.g. for netlink queries from the
    /// test itself. Panics if the namespace cannot be entered (it was deleted, or not root).
    pub fn run_in<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                netns::enter(&self.ns).unwrap_or_else(|e| panic!("{e}"));
                f()
            });
            handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

fn split<'a>(args: &'a [&'a str]) -> Result<(&'a str, &'a [&'a str])> {
    args.split_first()
        .map(|(p, r)| (*p, r))
        .ok_or_else(|| Error::invalid("command", "", "needs at least a program name"))
}
