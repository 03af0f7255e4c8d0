//! netplan (Ubuntu): `routes:` with `table:` and `routing-policy:` in a file of our own,
//! `/etc/netplan/90-symroute-<ifname>.yaml`.
//!
//! netplan merges definitions with the same id across files (later files add to the lists of
//! earlier ones). Two definitions matching one interface under different ids would become two
//! networkd files of which networkd uses only the first, so when another file (cloud-init's
//! `50-cloud-init.yaml`) already defines the interface, ours reuses that id and adds only the
//! secondary addresses, routes and rules; otherwise it is a definition of its own, matched by
//! MAC, with every address. The host applies it with `netplan generate` plus a networkd reload
//! (or at the next boot), never `netplan apply`, which bounces links.
//!
//! Reading YAML: no YAML library ships in the agent; the scanner below understands the block
//! style that cloud-init and netplan write (`ethernets:` -> `<id>:` -> `match:` ->
//! `macaddress:`/`name:`), which is what it needs to find the id.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{owner_of, EniConfig, FileOp, Root};
use crate::error::{Error, Result};
use crate::model::Mac;

pub const DIR: &str = "/etc/netplan";
const SEARCH: &[&str] = &[
    "/usr/lib/netplan",
    "/lib/netplan",
    "/etc/netplan",
    "/run/netplan",
];

/// An `ethernets` definition found in a netplan file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Def {
    pub id: String,
    pub mac: Option<String>,
    pub name: Option<String>,
}

fn unquote(v: &str) -> String {
    let v = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    v.trim().trim_matches(['"', '\'']).to_owned()
}

/// The `network.ethernets` definitions of a file in block style.
pub fn ethernets(text: &str) -> Vec<Def> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .map(|l| (l.len() - l.trim_start().len(), l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut defs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (eth_indent, l) = lines[i];
        i += 1;
        if l != "ethernets:" {
            continue;
        }
        let mut child = None;
        let mut match_indent: Option<usize> = None;
        while i < lines.len() && lines[i].0 > eth_indent {
            let (ind, l) = lines[i];
            i += 1;
            let child_ind = *child.get_or_insert(ind);
            if ind == child_ind {
                if let Some((id, _)) = l.split_once(':') {
                    defs.push(Def {
                        id: unquote(id),
                        mac: None,
                        name: None,
                    });
                }
                match_indent = None;
                continue;
            }
            if match_indent.is_some_and(|m| ind <= m) {
                match_indent = None;
            }
            let Some(def) = defs.last_mut() else { continue };
            if l == "match:" {
                match_indent = Some(ind);
            } else if match_indent.is_some() {
                if let Some(v) = l.strip_prefix("macaddress:") {
                    def.mac = Some(unquote(v).to_lowercase());
                } else if let Some(v) = l.strip_prefix("name:") {
                    def.name = Some(unquote(v));
                }
            }
        }
    }
    defs
}

/// The id and file of a definition (not ours) that configures this interface.
pub fn existing(root: &Root, ifname: &str, mac: Mac) -> Option<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for dir in SEARCH {
        for p in root.list(dir) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".yaml") {
                // A later directory's file of the same name replaces the earlier one.
                files.retain(|(n, _)| *n != name);
                files.push((name, p));
            }
        }
    }
    files.sort();
    files.into_iter().find_map(|(_, p)| {
        let text = root.read(&p)?;
        if owner_of(&text).is_some() {
            return None;
        }
        ethernets(&text)
            .into_iter()
            .find(|d| match (&d.mac, &d.name) {
                (Some(m), _) => m.parse::<Mac>().is_ok_and(|m| m == mac),
                (None, Some(n)) => super::glob(n, ifname),
                (None, None) => d.id == ifname,
            })
            .map(|d| (d.id, p))
    })
}

pub fn render(root: &Root, eni: &EniConfig) -> Vec<FileOp> {
    let found = existing(root, &eni.ifname, eni.mac);
    let mut s = eni.header();
    let id = match &found {
        Some((id, file)) => {
            let _ = writeln!(
                s,
                "# Policy routing for {} ({}); merges with the definition of {id} in {}.",
                eni.ifname,
                eni.eni_id,
                file.display()
            );
            id.clone()
        }
        None => {
            let _ = writeln!(
                s,
                "# Policy routing for {} ({}), matched by MAC.",
                eni.ifname, eni.eni_id
            );
            eni.ifname.clone()
        }
    };
    let _ = writeln!(s, "network:\n  version: 2\n  ethernets:\n    {id}:");
    let skip = if found.is_some() {
        // The existing definition brings the primary address (DHCP).
        1
    } else {
        let _ = writeln!(s, "      match:\n        macaddress: \"{}\"", eni.mac);
        if !eni.addrs_v6.is_empty() {
            s.push_str("      accept-ra: true\n");
        }
        0
    };
    let addrs: Vec<String> = eni
        .addrs_v4
        .iter()
        .skip(skip)
        .map(|a| a.to_string())
        .chain(eni.addrs_v6.iter().map(|a| a.to_string()))
        .collect();
    if !addrs.is_empty() {
        s.push_str("      addresses:\n");
        for a in addrs {
            let _ = writeln!(s, "        - \"{a}\"");
        }
    }
    s.push_str("      routes:\n");
    for r in &eni.routes {
        let _ = writeln!(s, "        - to: \"{}\"", r.dst);
        if let Some(g) = r.gateway {
            let _ = writeln!(s, "          via: \"{g}\"");
        }
        if r.scope_link {
            s.push_str("          scope: link\n");
        }
        if let Some(p) = r.prefsrc {
            let _ = writeln!(s, "          from: \"{p}\"");
        }
        if let Some(m) = r.metric {
            let _ = writeln!(s, "          metric: {m}");
        }
        let _ = writeln!(s, "          table: {}", r.table);
    }
    s.push_str("      routing-policy:\n");
    for r in &eni.rules {
        let _ = writeln!(
            s,
            "        - from: \"{}\"\n          table: {}\n          priority: {}",
            r.src, r.table, r.priority
        );
    }
    let path = Path::new(DIR).join(format!("90-symroute-{}.yaml", eni.ifname));
    // netplan warns about (and future versions refuse) world-readable configuration.
    vec![FileOp::text(path, s, 0o600)]
}

/// Runs `netplan generate` (never `netplan apply`, which bounces links), so that the
/// configuration netplan hands to networkd or NetworkManager (in /run) matches the YAML at once
/// and a bad merge fails the run instead of the next boot. Nothing is reloaded or restarted.
/// Without netplan installed there is nothing to generate for: `Ok(false)`.
pub fn generate(root: &Root) -> Result<bool> {
    let Some(bin) = ["/usr/sbin/netplan", "/usr/bin/netplan", "/sbin/netplan"]
        .iter()
        .find(|p| Path::new(p).exists())
    else {
        return Ok(false);
    };
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("generate");
    if root.path("/") != Path::new("/") {
        cmd.arg("--root-dir").arg(root.path("/"));
    }
    let out = cmd
        .output()
        .map_err(|e| Error::Persist(format!("running {bin} generate: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(Error::Persist(format!(
            "{bin} generate rejected the configuration: {}",
            crate::model::clip(first.trim())
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cloud_init_definitions() {
        let text = "# This file is generated from information provided by the datasource.\nnetwork:\n    ethernets:\n        ens5:\n            dhcp4: true\n            match:\n                macaddress: 06:AA:bb:cc:dd:01\n            set-name: ens5\n        \"ens6\":\n            match: {name: x}\n            dhcp4: true\n        eth2:\n            match:\n                name: eth2\n    version: 2\n";
        assert_eq!(
            ethernets(text),
            vec![
                Def {
                    id: "ens5".into(),
                    mac: Some("06:aa:bb:cc:dd:01".into()),
                    name: None
                },
                Def {
                    id: "ens6".into(),
                    mac: None,
                    name: None
                },
                Def {
                    id: "eth2".into(),
                    mac: None,
                    name: Some("eth2".into())
                },
            ]
        );
    }
}
