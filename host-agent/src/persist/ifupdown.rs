//! ifupdown (Debian without networkd): `/etc/network/interfaces.d/symroute-<if>`, a stanza whose
//! `post-up` lines install the table and rules (stamped with symroute's protocol number, like
//! the live state) and whose `pre-down` lines take them away again.
//!
//! ifupdown combines several `iface` stanzas of one interface, so when the interface already
//! has one (`inet dhcp`), ours is an `inet manual` stanza that only adds; otherwise it also
//! brings the link up and adds the primary address. Addresses come from `post-up`.
//!
//! ifupdown matches stanzas by interface name only, and a name is not an ENI: after a stop and
//! start with other ENIs, or in an AMI baked from this instance, another ENI may carry it. So
//! every line that configures acts only when the link has this ENI's MAC (a guard reading
//! /sys/class/net/<if>/address); for any other ENI the stanza does nothing.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use super::ipcmd;
use super::{owner_of, Backend, EniConfig, FileOp, Manager, Root};
use crate::error::{Error, Result};
use crate::model::{Mac, RTPROT_SYMROUTE};

pub const DIR: &str = "/etc/network/interfaces.d";
const INTERFACES: &str = "/etc/network/interfaces";

/// Whether `interfaces` reads `interfaces.d` (Debian's default does).
fn sources_dir(text: &str) -> bool {
    source_line(text).is_some()
}

/// The line number of the `source`/`source-directory` line that reads `interfaces.d`.
fn source_line(text: &str) -> Option<usize> {
    text.lines().map(str::trim).position(|l| {
        let mut w = l.split_whitespace();
        match (w.next(), w.next()) {
            (Some("source"), Some(p)) => p
                .trim_start_matches("/etc/network/")
                .starts_with("interfaces.d/"),
            (Some("source-directory"), Some(p)) => {
                p.trim_start_matches("/etc/network/").trim_end_matches('/') == "interfaces.d"
            }
            _ => false,
        }
    })
}

fn has_stanza(text: &str, ifname: &str) -> bool {
    stanza_line(text, ifname).is_some()
}

fn stanza_line(text: &str, ifname: &str) -> Option<usize> {
    text.lines().position(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.len() >= 3 && w[0] == "iface" && w[1] == ifname && w[2] == "inet"
    })
}

pub(crate) struct Ifupdown;

impl Manager for Ifupdown {
    fn backend(&self) -> Backend {
        Backend::Ifupdown
    }

    /// A file is not a manager: `ifup` must be there, and something must run it at boot.
    fn detect(&self, root: &Root, _: &[(String, Mac)]) -> Option<(Backend, String)> {
        if !root.exists(INTERFACES) {
            return None;
        }
        match at_boot(root) {
            Some(why) => Some((Backend::Ifupdown, format!("detected: {INTERFACES}, {why}"))),
            None => {
                log::debug!(
                    "{INTERFACES}, but no ifup that runs at boot (not installed, or \
                     networking.service disabled and its udev rule masked): not ifupdown"
                );
                None
            }
        }
    }

    fn render(&self, root: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
        render(root, eni)
    }

    fn dirs(&self) -> &'static [&'static str] {
        &[DIR]
    }
}

/// What runs ifupdown at boot, if anything: `networking.service` enabled, or ifupdown's udev
/// rule, which brings `allow-hotplug` stanzas (ours) up as their device appears, coldplug
/// included, even with the service disabled, unless masked (a file of that name in
/// /etc/udev/rules.d overrides it). `None` also when `ifup` is not installed.
fn at_boot(root: &Root) -> Option<String> {
    let ifup = ["/usr/sbin/ifup", "/sbin/ifup"]
        .into_iter()
        .find(|p| root.exists(p))?;
    let enabled = [
        "/etc/systemd/system/multi-user.target.wants/networking.service",
        "/etc/systemd/system/network-online.target.wants/networking.service",
    ]
    .into_iter()
    .find(|p| root.exists(p));
    if let Some(p) = enabled {
        return Some(format!("{ifup} run by networking.service ({p})"));
    }
    // Masked: a link to /dev/null or an empty file in /etc (a real file there replaces it).
    let over = root.path("/etc/udev/rules.d/80-ifupdown.rules");
    let masked = fs::read_link(&over).is_ok_and(|t| t == Path::new("/dev/null"))
        || fs::metadata(&over).is_ok_and(|m| m.len() == 0);
    let rule = [
        "/usr/lib/udev/rules.d/80-ifupdown.rules",
        "/lib/udev/rules.d/80-ifupdown.rules",
    ]
    .into_iter()
    .find(|p| root.exists(p));
    match rule {
        Some(r) if !masked => Some(format!("{ifup} run by its udev rule ({r})")),
        _ => None,
    }
}

pub fn render(root: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
    let main = root.read(Path::new(INTERFACES)).unwrap_or_default();
    if !sources_dir(&main) {
        return Err(Error::Persist(format!(
            "{INTERFACES} does not read {DIR}; add `source {DIR}/*` to it or use --persist unit"
        )));
    }
    // `source-directory` only reads names of letters, digits, `-` and `_`.
    let name = format!("symroute-{}", eni.ifname.replace('.', "_"));
    // ifup runs an interface's stanzas in the order it read them, and ours needs the address
    // the other one brings (routes with `src`): it must come later.
    let in_dir = root.list(DIR).into_iter().find(|p| {
        root.read(p)
            .is_some_and(|t| owner_of(&t).is_none() && has_stanza(&t, &eni.ifname))
    });
    let in_main = stanza_line(&main, &eni.ifname);
    let existing = in_main.is_some() || in_dir.is_some();
    if let Some(p) = &in_dir {
        if p.file_name().is_some_and(|n| *n.to_string_lossy() > *name) {
            return Err(Error::Persist(format!(
                "{} configures {} and sorts after {DIR}/{name}, so ifup would run symroute's stanza first; rename it or use --persist unit",
                p.display(),
                eni.ifname
            )));
        }
    }
    if in_main.is_some_and(|l| Some(l) > source_line(&main)) {
        return Err(Error::Persist(format!(
            "{INTERFACES} configures {} below its `source` line, so ifup would run symroute's stanza first; move the `source {DIR}/*` line below it or use --persist unit",
            eni.ifname
        )));
    }
    let ifn = &eni.ifname;
    let comment = format!(
        "# Policy routing for {ifn} ({}); each line acts only while {ifn} has MAC {}.\n",
        eni.eni_id, eni.mac
    );
    // `[ mac != ours ] || cmd`: nothing happens (and ifup goes on) for another ENI.
    let only = |cmd: String| {
        format!(
            "[ \"$(cat /sys/class/net/{ifn}/address)\" != {} ] || {cmd}",
            eni.mac
        )
    };
    let mut st = Stanza {
        hotplug: !existing,
        iface: ifn.clone(),
        hooks: Vec::new(),
    };
    // The kernel learns the VPC router's RA default on this link at the primary's metric
    // (1024) unless told otherwise before the link comes up: tell it (Linux 5.18+), and drop
    // a default it learned before this stanza ran (another stanza brought the link up first).
    let conf = format!("/proc/sys/net/ipv6/conf/{ifn}/ra_defrtr_metric");
    if let Some(m) = eni.ra_metric {
        st.hook(
            Hook::PreUp,
            only(format!("[ ! -w {conf} ] || echo {m} > {conf}")),
        );
    }
    // The existing stanza brings the link up and its primary address (DHCP).
    let skip = usize::from(existing);
    if !existing {
        // The VPC's MTU as DHCP had set it, where it is above 1500: `inet manual` is static.
        let mtu = eni.mtu.map_or_else(String::new, |m| format!("mtu {m} "));
        st.hook(Hook::PreUp, only(format!("ip link set dev {ifn} {mtu}up")));
    }
    if eni.ra_metric.is_some() {
        st.hook(
            Hook::PostUp,
            only(format!(
                "[ ! -w {conf} ] || ip -6 route del default dev {ifn} proto ra metric 1024 2>/dev/null || true"
            )),
        );
    }
    for a in eni.addrs_v4.iter().skip(skip) {
        st.hook(Hook::PostUp, only(format!("ip addr replace {a} dev {ifn}")));
    }
    for a in &eni.addrs_v6 {
        st.hook(
            Hook::PostUp,
            only(format!("ip -6 addr replace {a} nodad dev {ifn}")),
        );
    }
    for r in &eni.routes {
        st.hook(Hook::PostUp, only(ipcmd::route_cmd("replace", r)));
    }
    for r in &eni.rules {
        // `rule add` of an existing rule fails: delete first, so that ifup is repeatable.
        st.hook(
            Hook::PostUp,
            only(format!(
                "{{ {} 2>/dev/null; {}; }}",
                ipcmd::rule_cmd("del", r),
                ipcmd::rule_cmd("add", r)
            )),
        );
    }
    for r in &eni.rules {
        st.hook(
            Hook::PreDown,
            format!("{} || true", ipcmd::rule_cmd("del", r)),
        );
    }
    let flush = |v6: bool| {
        format!(
            "ip {}route flush table {} proto {RTPROT_SYMROUTE} || true",
            crate::ops::family_flag(v6),
            eni.table
        )
    };
    st.hook(Hook::PreDown, flush(false));
    if eni.routes.iter().any(|r| r.dst.addr().is_ipv6()) {
        st.hook(Hook::PreDown, flush(true));
    }
    let path = Path::new(DIR).join(name);
    Ok(vec![FileOp::text(
        path,
        st.render(eni.header() + &comment),
        0o644,
    )])
}

/// When ifupdown runs a hook line of a stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    PreUp,
    PostUp,
    PreDown,
}

/// One `iface <if> inet manual` stanza (with `allow-hotplug` when it also brings the link up:
/// ifupdown's udev rule then runs it when the device appears) and its hook lines, in order.
struct Stanza {
    hotplug: bool,
    iface: String,
    hooks: Vec<(Hook, String)>,
}

impl Stanza {
    fn hook(&mut self, when: Hook, cmd: String) {
        self.hooks.push((when, cmd));
    }

    fn render(&self, header: String) -> String {
        let mut s = header;
        if self.hotplug {
            let _ = writeln!(s, "allow-hotplug {}", self.iface);
        }
        let _ = writeln!(s, "iface {} inet manual", self.iface);
        for (when, cmd) in &self.hooks {
            let word = match when {
                Hook::PreUp => "pre-up",
                Hook::PostUp => "post-up",
                Hook::PreDown => "pre-down",
            };
            let _ = writeln!(s, "    {word} {cmd}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_source_line() {
        assert!(sources_dir("source /etc/network/interfaces.d/*\n"));
        assert!(sources_dir("source interfaces.d/*\n"));
        assert!(sources_dir("source-directory /etc/network/interfaces.d\n"));
        assert!(!sources_dir("auto lo\niface lo inet loopback\n"));
        assert!(has_stanza("iface eth1 inet dhcp\n", "eth1"));
        assert_eq!(source_line("auto lo\nsource interfaces.d/*\n"), Some(1));
        assert!(!has_stanza("iface eth1 inet6 auto\n", "eth1"));
    }
}
