//! Router advertisements for a subnet's IPv6 prefix, as the VPC router sends them.

use std::path::Path;
use std::process::{Child, Stdio};

use ipnet::Ipv6Net;

use crate::cmd;
use crate::error::{Error, Result};

/// Starts radvd in `router_ns` for `bridge`. Like a VPC: the M flag is set and the prefix is
/// on-link but not for autoconfiguration (addresses come from DHCPv6, here from the spec),
/// so only the default route is learned from the RA.
pub(crate) fn start(router_ns: &str, bridge: &str, prefix: Ipv6Net, dir: &Path) -> Result<Child> {
    let conf = dir.join(format!("radvd-{bridge}.conf"));
    let pid = dir.join(format!("radvd-{bridge}.pid"));
    let text = format!(
        "interface {bridge} {{\n\
         \tAdvSendAdvert on;\n\
         \tAdvManagedFlag on;\n\
         \tMinRtrAdvInterval 3;\n\
         \tMaxRtrAdvInterval 4;\n\
         \tAdvDefaultLifetime 1800;\n\
         \tprefix {prefix} {{\n\t\tAdvOnLink on;\n\t\tAdvAutonomous off;\n\t}};\n\
         }};\n"
    );
    std::fs::write(&conf, text)?;
    let mut command = cmd::in_netns(router_ns, "radvd");
    command
        .arg("--nodaemon")
        .arg("--config")
        .arg(&conf)
        .arg("--pidfile")
        .arg(&pid)
        .args(["--logmethod", "stderr"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        cmd: "radvd".into(),
        source,
    })?;
    // radvd validates its configuration at start and exits at once if it dislikes it.
    std::thread::sleep(std::time::Duration::from_millis(50));
    if let Some(status) = child.try_wait()? {
        let check = cmd::output(
            cmd::in_netns(router_ns, "radvd")
                .arg("--configtest")
                .arg("--config")
                .arg(&conf),
        )
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
        return Err(Error::Command {
            cmd: format!("radvd --config {}", conf.display()),
            status: status.to_string(),
            stderr: check,
        });
    }
    Ok(child)
}
