//! systemd-networkd: `[RoutingPolicyRule]` and `[Route] Table=` in networkd's own configuration.
//! networkd deletes rules it did not create when it reconfigures a link, so the routing must be
//! its configuration, in the one .network file that actually matches the interface: networkd
//! uses the first matching file by name across /etc, /run and /usr/lib, and ignores the rest.
//!
//! - That file matches this ENI alone, by its MAC: a drop-in `<file>.d/90-symroute.conf`.
//! - It matches by name (`Name=eth1`, `Name=eth*`), `Driver=ena`, or nothing: a drop-in would
//!   hand this ENI's rules to every other interface it matches, or, by name, to whichever ENI
//!   carries the name after a stop and start or in an AMI baked from this instance. So symroute
//!   writes a file of its own that sorts first and matches by MAC, with the matching file's
//!   settings copied so nothing else changes.
//! - None matches: a file of its own with the addresses from metadata.

use std::fs;
use std::path::{Path, PathBuf};

use super::ini::{self, Block, Section};
use super::{owner_of, Backend, EniConfig, FileOp, Manager, Root};
use crate::error::{Error, Result};
use crate::model::Mac;
use crate::ops::{RouteSpec, RuleSpec, RT_TABLE_MAIN};

pub const DIR: &str = "/etc/systemd/network";
/// networkd's search path, highest precedence first (a name in /etc masks the same in /run...).
const SEARCH: &[&str] = &[
    "/etc/systemd/network",
    "/run/systemd/network",
    "/usr/lib/systemd/network",
    "/lib/systemd/network",
];
const DROPIN: &str = "90-symroute.conf";
/// Sorts before the files distributions and netplan ship (10-netplan-*, 80-ec2, 99-default).
const OWN_PREFIX: &str = "05-symroute-";

/// The .network file networkd uses for an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Winner {
    pub path: PathBuf,
    pub text: String,
    /// Its [Match] names this interface alone (by MAC or by exact name).
    pub specific: bool,
}

/// Every .network file networkd would read, in the order it tries them (by file name).
fn network_files(root: &Root) -> Vec<PathBuf> {
    let mut by_name: Vec<(String, PathBuf)> = Vec::new();
    for dir in SEARCH {
        for p in root.list(dir) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".network") && !by_name.iter().any(|(n, _)| *n == name) {
                by_name.push((name, p));
            }
        }
    }
    by_name.sort();
    by_name.into_iter().map(|(_, p)| p).collect()
}

/// The file that configures the interface (ignoring symroute's own). Where networkd runs and
/// has bound the link to a file, its own answer (`networkctl status --json`); else, and under
/// `--root`, the first file by name whose [Match] fits, as networkd chooses.
pub(crate) fn winner(root: &Root, ifname: &str, mac: Mac) -> Option<Winner> {
    if let Some(w) = bound(root, ifname, mac) {
        return Some(w);
    }
    parsed_winner(root, ifname, mac)
}

/// What networkd says configures the link, when it runs here and has bound the link to a file
/// that is not symroute's (for symroute's own, the file it replaced is found by parsing). The
/// parser cannot judge `Driver=`, `Path=` or `Host=` and takes them as met, so a file networkd
/// skipped (`Driver=ena` on another NIC) could pass for the link's: networkd knows.
fn bound(root: &Root, ifname: &str, mac: Mac) -> Option<Winner> {
    if root.path("/") != Path::new("/") || !running() {
        return None;
    }
    let bin = NETWORKCTL.iter().find(|p| Path::new(p).exists())?;
    let out = std::process::Command::new(bin)
        .args(["--json=short", "--no-pager", "status", "--", ifname])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let path = network_file_of(&String::from_utf8_lossy(&out.stdout))?;
    let text = root.read(&path)?;
    if owner_of(&text).is_some() {
        return None;
    }
    // networkd matched it, whatever the parser thinks of conditions it cannot judge; only a
    // match by this MAC alone makes it this ENI's own file.
    let specific = matches(&text, ifname, mac, None).unwrap_or(false);
    Some(Winner {
        path,
        text,
        specific,
    })
}

/// The `NetworkFile` of `networkctl --json=short status <link>` (systemd 250 and later): the
/// .network file networkd bound the link to. None for a link it has not bound (unmanaged, or
/// not processed yet), and for output that is not that JSON (an older networkctl).
pub(crate) fn network_file_of(json: &str) -> Option<PathBuf> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let file = v.get("NetworkFile")?.as_str()?;
    Path::new(file).is_absolute().then(|| PathBuf::from(file))
}

/// The link's kernel driver (`virtio_net`, `ena`), which networkd's `Driver=` matches (udev's
/// `ID_NET_DRIVER` is the same name); only for the live host, not under `--root`.
fn live_driver(root: &Root, ifname: &str) -> Option<String> {
    if root.path("/") != Path::new("/") || ifname.contains('/') {
        return None;
    }
    let link = fs::read_link(format!("/sys/class/net/{ifname}/device/driver")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// The first file (ignoring symroute's own) whose [Match] fits the interface.
fn parsed_winner(root: &Root, ifname: &str, mac: Mac) -> Option<Winner> {
    let driver = live_driver(root, ifname);
    network_files(root).into_iter().find_map(|path| {
        let text = root.read(&path)?;
        if owner_of(&text).is_some() {
            return None;
        }
        let specific = matches(&text, ifname, mac, driver.as_deref())?;
        Some(Winner {
            path,
            text,
            specific,
        })
    })
}

pub(crate) struct Networkd;

impl Manager for Networkd {
    fn backend(&self) -> Backend {
        Backend::Networkd
    }

    /// Before NetworkManager and ifupdown: networkd deletes foreign rules on reconfigure.
    fn detect(&self, root: &Root, ifaces: &[(String, Mac)]) -> Option<(Backend, String)> {
        detect(root, ifaces).map(|why| (Backend::Networkd, format!("detected: {why}")))
    }

    fn render(&self, root: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
        render(root, eni)
    }

    fn dirs(&self) -> &'static [&'static str] {
        &[DIR]
    }

    /// `networkctl reload`, where networkd runs: networkd then reconfigures each link whose
    /// matching .network changed (`manager_reload` → `link_reconfigure(link, force=false)`),
    /// which is the ENI's alone, since symroute's own file matches it by MAC and a drop-in is
    /// written only for a file that matches this ENI alone. Without it, networkd keeps what it
    /// bound at hot-plug (a catch-all `Name=eth*` file): it adds the ENI's RA default again at
    /// every RA at the primary's metric, merged with the primary's into one multipath route,
    /// so some of the primary's IPv6 replies leave by the ENI (seen in the lab's dual-stack
    /// networkd guest until the next boot). A failed reload is a warning: the live routing is
    /// in place, and networkd reads the files at its next reload or boot.
    fn after_change(&self, root: &Root) -> Result<Option<String>> {
        reload(root)
    }
}

/// See [`Networkd`]'s `after_change`; netplan's runs it after its generator too.
pub(crate) fn reload(root: &Root) -> Result<Option<String>> {
    if root.path("/") != Path::new("/") || !running() {
        return Ok(None);
    }
    let Some(bin) = NETWORKCTL.iter().find(|p| Path::new(p).exists()) else {
        return Ok(Some(
            "networkctl not found: networkd reads symroute's files at its next reload or boot"
                .into(),
        ));
    };
    let why = match std::process::Command::new(bin).arg("reload").output() {
        Ok(out) if out.status.success() => return Ok(None),
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            crate::model::clip(
                err.lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim(),
            )
        }
        Err(e) => e.to_string(),
    };
    Ok(Some(format!(
        "{bin} reload failed ({why}): networkd reads symroute's files at its next reload or boot"
    )))
}

const NETWORKCTL: [&str; 2] = ["/usr/bin/networkctl", "/bin/networkctl"];

/// Whether systemd-networkd runs here (a process named so: its 15-character `comm`). Only a
/// running networkd is asked to reload: the D-Bus call would start an enabled one early.
fn running() -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.trim_end() == "systemd-network")
    })
}

/// Is networkd in charge here: enabled, configured in /etc or /run, or shipping a file that
/// matches one of the interfaces.
pub fn detect(root: &Root, ifaces: &[(String, Mac)]) -> Option<String> {
    for unit in [
        "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "/etc/systemd/system/dbus-org.freedesktop.network1.service",
    ] {
        if root.exists(unit) {
            return Some(format!("systemd-networkd enabled ({unit})"));
        }
    }
    for (ifname, mac) in ifaces {
        if let Some(w) = winner(root, ifname, *mac) {
            return Some(format!("{} matches {ifname}", w.path.display()));
        }
    }
    None
}

/// Whether a .network file matches the interface: `None` if not, else whether it is specific
/// to it. `Driver=` is judged against the link's kernel driver where it is known (`driver`, as
/// udev's `ID_NET_DRIVER` has it); unknown, and the conditions that cannot be judged from files
/// (Path=, Host=...), are taken as met: on EC2 they are written to match the ENIs
/// (80-ec2.network has `Driver=ena ...`).
pub fn matches(text: &str, ifname: &str, mac: Mac, driver: Option<&str>) -> Option<bool> {
    let mut section = String::new();
    let mut names: Vec<String> = Vec::new();
    let mut macs: Vec<String> = Vec::new();
    let mut ok = true;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_owned();
            continue;
        }
        if section != "Match" {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let (neg, list) = match value.strip_prefix('!') {
            Some(v) => (true, v),
            None => (false, value),
        };
        let items: Vec<&str> = list.split_whitespace().collect();
        match key.trim() {
            "Name" | "OriginalName" => {
                if items.is_empty() {
                    names.clear();
                    continue;
                }
                ok &= items.iter().any(|g| super::glob(g, ifname)) != neg;
                if !neg {
                    names.extend(items.iter().map(|s| s.to_string()));
                }
            }
            "MACAddress" | "PermanentMACAddress" => {
                if items.is_empty() {
                    macs.clear();
                    continue;
                }
                let hit = items.iter().any(|m| Mac::from_config(m) == Some(mac));
                ok &= hit != neg;
                if !neg {
                    macs.extend(items.iter().map(|s| s.to_lowercase()));
                }
            }
            "Type" if !items.is_empty() => {
                ok &= items.iter().any(|g| super::glob(g, "ether")) != neg;
            }
            "Driver" if !items.is_empty() => {
                if let Some(d) = driver {
                    ok &= items.iter().any(|g| super::glob(g, d)) != neg;
                }
            }
            _ => {}
        }
    }
    if !ok {
        return None;
    }
    // A name is not an ENI: only a match by this MAC alone names this ENI and nothing else.
    let by_mac = macs.len() == 1 && Mac::from_config(&macs[0]) == Some(mac);
    Some(by_mac)
}

pub fn render(root: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
    let found = winner(root, &eni.ifname, eni.mac);
    if let Some(w) = found.as_ref().filter(|w| w.specific) {
        let name = w.path.file_name().unwrap().to_string_lossy();
        let path = Path::new(DIR).join(format!("{name}.d")).join(DROPIN);
        let mut blocks = vec![Block::Comment(vec![format!(
            "Policy routing for {} ({}), added to {} which configures it.",
            eni.ifname,
            eni.eni_id,
            w.path.display()
        )])];
        blocks.extend(sections(eni, 1));
        return Ok(vec![FileOp::text(
            path,
            ini::render(eni.header(), &blocks),
            0o644,
        )]);
    }
    let own = format!("{OWN_PREFIX}{}.network", eni.ifname);
    if let Some(w) = &found {
        let wname = w.path.file_name().unwrap().to_string_lossy();
        if *own >= *wname {
            return Err(Error::Persist(format!(
                "{} matches {} but sorts before {own}; give {} a file of its own (e.g. {DIR}/{OWN_PREFIX}{}.network) or use --persist unit",
                w.path.display(), eni.ifname, eni.ifname, eni.ifname
            )));
        }
    }
    let mut blocks = vec![Section::new("Match").set("MACAddress", eni.mac).into()];
    let skip_primary = match &found {
        Some(w) => {
            blocks.push(Block::Comment(vec![
                format!(
                    "Copied from {}, which matches more interfaces than {}: this file takes its place",
                    w.path.display(),
                    eni.ifname
                ),
                format!("for {} alone and adds the policy routing.", eni.ifname),
            ]));
            blocks.extend(
                ini::parse(&w.text)
                    .into_iter()
                    .filter(|s| s.name() != "Match")
                    .map(Block::from),
            );
            1
        }
        None => {
            blocks.push(
                Section::new("Link")
                    .note("A secondary ENI must not hold up boot (network-online.target).")
                    .set("RequiredForOnline", "no")
                    // The VPC's MTU as DHCP had set it: this file configures the link statically.
                    .set_some("MTUBytes", eni.mtu)
                    .into(),
            );
            blocks.push(
                Section::new("Network")
                    .set(
                        "IPv6AcceptRA",
                        if eni.addrs_v6.is_empty() { "no" } else { "yes" },
                    )
                    .into(),
            );
            0
        }
    };
    blocks.extend(sections(eni, skip_primary));
    Ok(vec![FileOp::text(
        Path::new(DIR).join(own),
        ini::render(eni.header(), &blocks),
        0o644,
    )])
}

/// Addresses (all but the first `skip` IPv4s, which the rest of the configuration brings,
/// e.g. by DHCP), then the table's routes and the rules.
fn sections(eni: &EniConfig, skip: usize) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    let addrs = eni
        .addrs_v4
        .iter()
        .skip(skip)
        .map(|a| a.to_string())
        .chain(eni.addrs_v6.iter().map(|a| a.to_string()));
    out.extend(addrs.map(|a| Section::new("Address").set("Address", a).into()));
    out.extend(eni.routes.iter().map(|r| route(r).into()));
    out.extend(eni.rules.iter().map(|r| rule(r).into()));
    out.extend(eni.marks.iter().map(|m| mark_rule(m).into()));
    // A default route this ENI learns again after a reboot or a lease renewal (DHCP, router
    // advertisements) must stay behind the primary's: a tie at networkd's default metric 1024
    // sends the primary's replies out of this ENI, where the VPC drops them. Same metric as the
    // live demotion's floor (the table number).
    for name in ["DHCPv4", "DHCPv6", "IPv6AcceptRA"] {
        out.push(Section::new(name).set("RouteMetric", eni.table).into());
    }
    out
}

/// An IPv4 gateway is marked on-link: the VPC router is always on the ENI's subnet, and the
/// kernel refuses a gateway it cannot reach through a connected route right now ("Nexthop has
/// invalid gateway"). networkd asks for the table's routes while the address is not back yet
/// when it reconfigures the link (it drops the DHCP lease first): seen in the lab's
/// networkd guest after `networkctl reconfigure`, which left the ENI failed and without its
/// IPv4 address. An IPv6 link-local gateway needs no such check.
fn route(r: &RouteSpec) -> Section {
    Section::new("Route")
        .set_some("Destination", (!r.is_default()).then_some(r.dst))
        .set_some("Gateway", r.gateway)
        .set_some(
            "GatewayOnLink",
            r.gateway.filter(std::net::IpAddr::is_ipv4).map(|_| "yes"),
        )
        .set_some("Scope", r.scope_link.then_some("link"))
        .set_some("PreferredSource", r.prefsrc)
        .set_some("Metric", r.metric)
        .set("Table", r.table)
}

pub(crate) fn rule(r: &RuleSpec) -> Section {
    let table = if r.table == RT_TABLE_MAIN {
        "main".to_owned()
    } else {
        r.table.to_string()
    };
    Section::new("RoutingPolicyRule")
        .set("From", r.src)
        .set_some("To", r.dst)
        .set("Table", table)
        // systemd 245 and later; older networkd would ignore the key and send every reply to
        // main.
        .set_some("SuppressPrefixLength", r.suppress_prefixlength)
        .set("Priority", r.priority)
}

/// The connmark mode's rule, `FirewallMark=mark/mask` (networkd 252 takes the mask: proven in
/// tests/persist_networkd.rs).
pub(crate) fn mark_rule(m: &crate::ops::MarkRuleSpec) -> Section {
    Section::new("RoutingPolicyRule")
        .set("FirewallMark", format!("{:#x}/{:#x}", m.mark, m.mask))
        .set("Family", if m.v6 { "ipv6" } else { "ipv4" })
        .set("Table", m.table)
        .set("Priority", m.priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// networkd's own answer, as `networkctl --json=short status eth1` prints it: the link's
    /// object from networkd's `Describe`, on one line.
    #[test]
    fn the_file_networkd_bound_is_read_from_networkctls_json() {
        let bound = r#"{"Index":3,"Name":"eth1","Type":"ether","Driver":"virtio_net","SetupState":"configured","NetworkFile":"/etc/systemd/network/20-eth.network","OperationalState":"routable"}"#;
        assert_eq!(
            network_file_of(bound),
            Some(PathBuf::from("/etc/systemd/network/20-eth.network"))
        );
        // Unmanaged, or not processed yet: no file, so the parser decides.
        let unmanaged = r#"{"Index":3,"Name":"eth1","SetupState":"unmanaged"}"#;
        assert_eq!(network_file_of(unmanaged), None);
        // An older networkctl's table, a relative path, garbage: none of it is an answer.
        assert_eq!(network_file_of("IDX LINK TYPE\n  3 eth1 ether"), None);
        assert_eq!(network_file_of(r#"{"NetworkFile":"20-eth.network"}"#), None);
        assert_eq!(network_file_of(r#"{"NetworkFile":7}"#), None);
        assert_eq!(network_file_of(""), None);
    }

    fn mac() -> Mac {
        "0a:00:00:00:00:02".parse().unwrap()
    }

    #[test]
    fn match_rules() {
        let m = mac();
        // Matches, but by name: another ENI may carry the name later.
        assert_eq!(
            matches("[Match]\nName=eth1\n", "eth1", m, None),
            Some(false)
        );
        assert_eq!(
            matches("[Match]\nName=eth*\n", "eth1", m, None),
            Some(false)
        );
        assert_eq!(matches("[Match]\nName=eth0\n", "eth1", m, None), None);
        assert_eq!(
            matches("[Match]\nName=!eth0\n", "eth1", m, None),
            Some(false)
        );
        assert_eq!(
            matches("[Match]\nMACAddress=0A:00:00:00:00:02\n", "eth1", m, None),
            Some(true)
        );
        assert_eq!(
            matches("[Match]\nMACAddress=0a:00:00:00:00:03\n", "eth1", m, None),
            None
        );
        assert_eq!(
            matches(
                "[Match]\nDriver=ena ixgbevf vif\n[Network]\nDHCP=yes\n",
                "eth1",
                m,
                None
            ),
            Some(false)
        );
        // With the link's driver known, `Driver=` is judged: EC2's drivers are not the
        // lab's virtio NIC.
        let ena = "[Match]\nDriver=ena ixgbevf vif\n[Network]\nDHCP=yes\n";
        assert_eq!(matches(ena, "eth1", m, Some("virtio_net")), None);
        assert_eq!(matches(ena, "eth1", m, Some("ena")), Some(false));
        assert_eq!(
            matches("[Match]\nDriver=!virtio*\n", "eth1", m, Some("virtio_net")),
            None
        );
        assert_eq!(matches("[Match]\nType=wlan\n", "eth1", m, None), None);
        assert_eq!(
            matches("[Network]\nDHCP=yes\n", "eth1", m, None),
            Some(false)
        );
        assert_eq!(
            matches(
                "[Match]\nName=eth1\nMACAddress=0a:00:00:00:00:09\n",
                "eth1",
                m,
                None
            ),
            None
        );
    }
}
