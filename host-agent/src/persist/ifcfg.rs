//! network-scripts (RHEL/CentOS 7, Amazon Linux 2): `ifcfg-<if>`, `route-<if>`, `rule-<if>`
//! (and `route6-`/`rule6-`), the files the hand-written solution used. `ifup-routes` runs
//! `ip [-6] route add <line>` and `ip [-6] rule add <line>` for every line of them, so each
//! line is written in `ip` syntax, stamped with symroute's protocol number like the live state.
//!
//! `ifcfg-<if>` is written only when there is none: an existing one (DHCP by cloud-init or
//! ec2-net-utils) stays as it is, and brings the interface up; ifup-routes then reads ours.

use std::fmt::Write as _;
use std::path::Path;

use super::{owner_of, Backend, EniConfig, FileOp, Manager, Root};
use crate::error::{Error, Result};
use crate::model::Mac;

pub const DIR: &str = "/etc/sysconfig/network-scripts";

/// network-scripts' script that reads `route-`/`rule-` files when `ifup` brings a link up
/// (RHEL 9 and later keep the directory for NetworkManager's ifcfg plugin, without it).
const IFUP_ROUTES: &str = "/etc/sysconfig/network-scripts/ifup-routes";

pub(crate) struct Ifcfg;

impl Manager for Ifcfg {
    fn backend(&self) -> Backend {
        Backend::Ifcfg
    }

    /// A directory is not a manager: the script that reads our files must be there.
    fn detect(&self, root: &Root, _: &[(String, Mac)]) -> Option<(Backend, String)> {
        if !root.exists("/etc/sysconfig/network-scripts") {
            return None;
        }
        if !root.exists(IFUP_ROUTES) {
            log::debug!(
                "/etc/sysconfig/network-scripts without {IFUP_ROUTES}: not network-scripts"
            );
            return None;
        }
        Some((
            Backend::Ifcfg,
            format!("detected: /etc/sysconfig/network-scripts, read by {IFUP_ROUTES}"),
        ))
    }

    fn render(&self, root: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
        render(root, eni)
    }

    fn dirs(&self) -> &'static [&'static str] {
        &[DIR]
    }
}

/// A value in an `ifcfg-` file: one word, or a list (network-scripts splits it on blanks).
enum Value {
    Word(String),
    List(Vec<String>),
}

/// An `ifcfg-` file: `KEY=value` lines as network-scripts sources them with the shell; a list
/// in double quotes (ours hold no quote, `$` or backslash: addresses, names, numbers).
fn shell_vars(header: String, vars: &[(String, Value)]) -> String {
    let mut s = header;
    for (k, v) in vars {
        match v {
            Value::Word(w) => {
                let _ = writeln!(s, "{k}={w}");
            }
            Value::List(items) => {
                let _ = writeln!(s, "{k}=\"{}\"", items.join(" "));
            }
        }
    }
    s
}

pub fn render(root: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
    let mut ops = Vec::new();
    let file = |kind: &str| Path::new(DIR).join(format!("{kind}-{}", eni.ifname));
    let foreign = |kind: &str| {
        root.read(&file(kind))
            .is_some_and(|t| owner_of(&t).is_none())
    };
    for kind in ["route", "rule", "route6", "rule6"] {
        if foreign(kind) {
            return Err(Error::Persist(format!(
                "{} exists and was not written by symroute; merge its routing by hand or use --persist unit",
                file(kind).display()
            )));
        }
    }
    if !foreign("ifcfg") {
        let word = |k: &str, v: String| (k.to_owned(), Value::Word(v));
        let mut vars: Vec<(String, Value)> = vec![
            word("DEVICE", eni.ifname.clone()),
            word("HWADDR", eni.mac.to_string()),
            word("TYPE", "Ethernet".into()),
            word("ONBOOT", "yes".into()),
            word("BOOTPROTO", "none".into()),
            word("NM_CONTROLLED", "no".into()),
            word("DEFROUTE", "no".into()),
        ];
        if let Some(m) = eni.mtu {
            // The VPC's MTU as DHCP had set it: BOOTPROTO=none is static.
            vars.push(word("MTU", m.to_string()));
        }
        for (i, a) in eni.addrs_v4.iter().enumerate() {
            vars.push(word(&format!("IPADDR{i}"), a.addr().to_string()));
            vars.push(word(&format!("PREFIX{i}"), a.prefix_len().to_string()));
        }
        if let Some((first, rest)) = eni.addrs_v6.split_first() {
            vars.push(word("IPV6INIT", "yes".into()));
            vars.push(word("IPV6_AUTOCONF", "yes".into()));
            vars.push(word("IPV6ADDR", first.to_string()));
            if !rest.is_empty() {
                vars.push((
                    "IPV6ADDR_SECONDARIES".into(),
                    Value::List(rest.iter().map(|a| a.to_string()).collect()),
                ));
            }
        }
        let comment = format!(
            "# Brings {} ({}) up with its addresses from instance metadata.\n",
            eni.ifname, eni.eni_id
        );
        ops.push(FileOp::text(
            file("ifcfg"),
            shell_vars(eni.header() + &comment, &vars),
            0o644,
        ));
    }
    let lines = |kind: &str, items: Vec<String>| {
        let mut s = eni.header();
        for l in items {
            s.push_str(&l);
            s.push('\n');
        }
        FileOp::text(file(kind), s, 0o644)
    };
    // An IPv6-only ENI has no IPv4 routing to write.
    if !eni.addrs_v4.is_empty() {
        ops.push(lines(
            "route",
            eni.routes_v4().map(|r| r.to_string()).collect(),
        ));
        ops.push(lines(
            "rule",
            eni.rules_v4().map(|r| r.to_string()).collect(),
        ));
    }
    if !eni.addrs_v6.is_empty() {
        ops.push(lines(
            "route6",
            eni.routes_v6().map(|r| r.to_string()).collect(),
        ));
        ops.push(lines(
            "rule6",
            eni.rules_v6().map(|r| r.to_string()).collect(),
        ));
    }
    Ok(ops)
}
