//! netplan (Ubuntu): `routes:` with `table:` and `routing-policy:` in a file of our own,
//! `/etc/netplan/90-symroute-<ifname>.yaml`.
//!
//! netplan merges definitions with the same id across files (later files add to the lists of
//! earlier ones). Two definitions matching one interface under different ids become two networkd
//! files (`10-netplan-<id>.network`) of which networkd uses only the first in lexical order.
//! So:
//! - when another file (cloud-init's `50-cloud-init.yaml`) defines this ENI alone, matched by
//!   its MAC and nothing else, ours reuses that id and adds only the secondary addresses, routes
//!   and rules;
//! - any other definition that may match it (a `name:` glob such as `all-en: {match: {name:
//!   "en*"}}` in golden AMIs, a `driver:`, an id equal to the name) is never extended: extending
//!   it would put this ENI's addresses and routes on every interface it matches, the primary
//!   included. Ours is then a definition of its own, matched by MAC, with every address, under
//!   an id (`00-symroute-<ifname>`) whose networkd file sorts before any other.
//!
//! The host applies it with `netplan generate` plus a networkd reload (or at the next boot),
//! never `netplan apply`, which bounces links.
//!
//! Reading YAML: no YAML library ships in the agent; the scanner below understands the block
//! style that cloud-init and netplan write (`ethernets:` -> `<id>:` -> `match:` ->
//! `macaddress:`/`name:`/`driver:`) and a flow-style `match: {name: "en*"}`, which is what it
//! needs to find the id; anything it cannot read is treated as "may match", never merged into.

use std::path::{Path, PathBuf};

use super::ini::{self, Block, Section};
use super::yaml::{self, Node};
use super::{networkd, nm, owner_of, Backend, EniConfig, FileOp, Manager, Root};
use crate::error::{Error, Result};
use crate::model::Mac;
use crate::ops::RuleSpec;

pub const DIR: &str = "/etc/netplan";
const SEARCH: &[&str] = &[
    "/usr/lib/netplan",
    "/lib/netplan",
    "/etc/netplan",
    "/run/netplan",
];

/// An `ethernets` definition found in a netplan file.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Def {
    pub id: String,
    pub mac: Option<String>,
    pub name: Option<String>,
    pub driver: Option<String>,
}

impl Def {
    /// Matches this MAC and nothing else: the only kind of definition ours may extend.
    fn is_this_eni_alone(&self, mac: Mac) -> bool {
        self.name.is_none()
            && self.driver.is_none()
            && self
                .mac
                .as_deref()
                .is_some_and(|m| Mac::from_config(m) == Some(mac))
    }

    fn set(&mut self, key: &str, value: &str) {
        match key {
            "macaddress" => self.mac = Some(unquote(value).to_lowercase()),
            "name" => self.name = Some(unquote(value)),
            "driver" => self.driver = Some(unquote(value)),
            _ => {}
        }
    }
}

/// The id of symroute's own definition: `10-netplan-00-symroute-<ifname>.network` sorts before
/// the file of any definition whose id starts with a letter or "01"..."99".
pub(crate) fn own_id(ifname: &str) -> String {
    format!("00-symroute-{ifname}")
}

fn unquote(v: &str) -> String {
    let v = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    v.trim().trim_matches(['"', '\'']).to_owned()
}

/// A block-style YAML file as (indent, trimmed text) lines, blank lines and comments left out.
fn yaml_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .map(|l| (l.len() - l.trim_start().len(), l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// The `network.ethernets` definitions of a file in block style.
pub fn ethernets(text: &str) -> Vec<Def> {
    let lines = yaml_lines(text);
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
                        ..Def::default()
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
            } else if let Some(flow) = l.strip_prefix("match:") {
                // Flow style: `match: {name: "en*", driver: ena}`.
                let inner = flow.trim().trim_start_matches('{').trim_end_matches('}');
                for pair in inner.split(',') {
                    if let Some((k, v)) = pair.split_once(':') {
                        def.set(k.trim(), v);
                    }
                }
            } else if match_indent.is_some() {
                if let Some((k, v)) = l.split_once(':') {
                    def.set(k.trim(), v);
                }
            }
        }
    }
    defs
}

/// netplan's YAML files in the order it reads them: by name, a file in a later directory of
/// `SEARCH` shadowing one of the same name in an earlier one.
fn files(root: &Root) -> Vec<PathBuf> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for dir in SEARCH {
        for p in root.list(dir) {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".yaml") {
                files.retain(|(n, _)| *n != name);
                files.push((name, p));
            }
        }
    }
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// The renderer netplan gives a definition that names none (ours): the last `network.renderer`
/// of its files, `networkd` when none sets one. Returns it with the file that set it.
pub(crate) fn default_renderer(root: &Root) -> (Renderer, Option<PathBuf>) {
    let mut found = (Renderer::Networkd, None);
    for p in files(root) {
        let Some(text) = root.read(&p) else { continue };
        if owner_of(&text).is_some() {
            continue;
        }
        if let Some(r) = network_renderer(&text) {
            found = (r, Some(p));
        }
    }
    found
}

/// A netplan backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Renderer {
    Networkd,
    NetworkManager,
}

/// `renderer:` directly under `network:` (block style), if the file sets it.
fn network_renderer(text: &str) -> Option<Renderer> {
    let lines = yaml_lines(text);
    let start = lines
        .iter()
        .position(|(i, l)| *i == 0 && *l == "network:")?;
    let child = lines.get(start + 1).map(|(i, _)| *i).filter(|i| *i > 0)?;
    let mut renderer = None;
    for (ind, l) in &lines[start + 1..] {
        if *ind == 0 {
            break;
        }
        if *ind == child {
            if let Some(v) = l.strip_prefix("renderer:") {
                renderer = match unquote(v).as_str() {
                    "NetworkManager" => Some(Renderer::NetworkManager),
                    "networkd" => Some(Renderer::Networkd),
                    _ => renderer,
                };
            }
        }
    }
    renderer
}

/// The id and file of a definition (not ours) that configures this ENI alone, by its MAC: the
/// only kind ours may extend (see the module doc).
pub fn existing(root: &Root, mac: Mac) -> Option<(String, PathBuf)> {
    files(root).into_iter().find_map(|p| {
        let text = root.read(&p)?;
        if owner_of(&text).is_some() {
            return None;
        }
        ethernets(&text)
            .into_iter()
            .find(|d| d.is_this_eni_alone(mac))
            .map(|d| (d.id, p))
    })
}

pub(crate) struct Netplan;

impl Manager for Netplan {
    fn backend(&self) -> Backend {
        Backend::Netplan
    }

    /// First among the managers: netplan generates the networkd (or NetworkManager)
    /// configuration, so it must be the source, or the next `netplan generate` drops what is
    /// added below it. Where it renders to NetworkManager, which drops its routing-policy (seen
    /// with netplan 0.106 in a real Debian 12 guest: the profile it generated had the table
    /// routes and no rule, so the ENI was asymmetric after a reboot), NetworkManager's own
    /// keyfile carries the rules instead.
    fn detect(&self, root: &Root, _: &[(String, Mac)]) -> Option<(Backend, String)> {
        let yaml = root
            .list(DIR)
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "yaml"));
        if !yaml {
            return None;
        }
        if let (Renderer::NetworkManager, from) = default_renderer(root) {
            if let Some(why) = nm::active(root) {
                let from = from.map_or_else(String::new, |p| format!(" in {}", p.display()));
                return Some((
                    Backend::Nm,
                    format!(
                        "detected: netplan renders to NetworkManager (renderer{from}), whose netplan \
                         backend drops routing-policy; NetworkManager runs ({why})"
                    ),
                ));
            }
        }
        Some((Backend::Netplan, "detected: /etc/netplan/*.yaml".into()))
    }

    fn render(&self, root: &Root, eni: &EniConfig) -> Result<Vec<FileOp>> {
        Ok(render(root, eni))
    }

    fn dirs(&self) -> &'static [&'static str] {
        &[DIR]
    }

    /// netplan's generator, so that its output in /run follows the YAML at once. No networkd
    /// reload: the generator rewrites the primary's file too, and the reload would reconfigure
    /// the primary (see `touched`).
    fn after_change(&self, root: &Root) -> Result<Option<String>> {
        Ok((!generate(root)?).then(|| "netplan is not installed here: nothing generated".into()))
    }
}

pub fn render(root: &Root, eni: &EniConfig) -> Vec<FileOp> {
    let found = existing(root, eni.mac);
    let mut header = eni.header();
    let (id, mut def) = match &found {
        Some((id, file)) => {
            header.push_str(&format!(
                "# Policy routing for {} ({}); merges with the definition of {id} in {}.\n",
                eni.ifname,
                eni.eni_id,
                file.display()
            ));
            // The existing definition brings the primary address (DHCP). The default route it
            // learns again at each boot or renewal stays behind the primary's (a tie sends the
            // primary's replies out of this ENI). netplan 0.106 has no `ra-overrides`.
            let metric = || Node::map().with("route-metric", Node::plain(eni.table));
            let def = Node::map()
                .with("dhcp4-overrides", metric())
                .with("dhcp6-overrides", metric());
            (id.clone(), def)
        }
        None => {
            header.push_str(&format!(
                "# Policy routing for {} ({}), matched by MAC; its networkd file sorts first.\n",
                eni.ifname, eni.eni_id
            ));
            let def = Node::map()
                .with("match", Node::map().with("macaddress", Node::str(eni.mac)))
                // The VPC's MTU as DHCP had set it: this definition is static.
                .with_some("mtu", eni.mtu.map(Node::plain))
                .with_some(
                    "accept-ra",
                    (!eni.addrs_v6.is_empty()).then(|| Node::plain(true)),
                );
            (own_id(&eni.ifname), def)
        }
    };
    let skip = usize::from(found.is_some());
    let addrs: Vec<Node> = eni
        .addrs_v4
        .iter()
        .skip(skip)
        .map(Node::str)
        .chain(eni.addrs_v6.iter().map(Node::str))
        .collect();
    if !addrs.is_empty() {
        def = def.with("addresses", Node::Seq(addrs));
    }
    let routes = eni.routes.iter().map(|r| {
        Node::map()
            .with("to", Node::str(r.dst))
            .with_some("via", r.gateway.map(Node::str))
            // On-link, as networkd's own rendering says why (persist/networkd.rs `route`).
            .with_some(
                "on-link",
                r.gateway
                    .filter(std::net::IpAddr::is_ipv4)
                    .map(|_| Node::plain("true")),
            )
            .with_some("scope", r.scope_link.then(|| Node::plain("link")))
            .with_some("from", r.prefsrc.map(Node::str))
            .with_some("metric", r.metric.map(Node::plain))
            .with("table", Node::plain(r.table))
    });
    def = def.with("routes", Node::Seq(routes.collect()));
    let (local, own): (Vec<&RuleSpec>, Vec<&RuleSpec>) = eni
        .rules
        .iter()
        .partition(|r| r.suppress_prefixlength.is_some());
    let policy = own.iter().map(|r| {
        Node::map()
            .with("from", Node::str(r.src))
            .with_some("to", r.dst.map(Node::str))
            .with("table", Node::plain(r.table))
            .with("priority", Node::plain(r.priority))
    });
    def = def.with("routing-policy", Node::Seq(policy.collect()));
    let doc = Node::map().with(
        "network",
        Node::map()
            .with("version", Node::plain(2))
            .with("ethernets", Node::map().with(id.clone(), def)),
    );
    let s = yaml::render(header, &doc);
    let path = Path::new(DIR).join(format!("90-symroute-{}.yaml", eni.ifname));
    // netplan warns about (and future versions refuse) world-readable configuration.
    let mut ops = vec![FileOp::text(path, s, 0o600)];
    // netplan's routing-policy has no suppress_prefixlength (0.106 up to 1.1), so the rules that
    // let local peers win go into a networkd drop-in for the file netplan generates for this
    // definition (`10-netplan-<id>.network` in /run/systemd/network); networkd merges drop-ins
    // from /etc for a .network file in /run.
    // The connmark mode's rules go there too: netplan's `mark` takes no mask.
    // The IPv6 default networkd learns from the VPC router's RAs on this ENI goes there too:
    // netplan 0.106 has no `ra-overrides`, and at networkd's default metric it ties with the
    // primary's (networkd merges the two into one multipath route, and some of the primary's
    // IPv6 replies leave by this ENI, where the VPC drops them).
    let ra_metric = !eni.addrs_v6.is_empty();
    if !local.is_empty() || !eni.marks.is_empty() || ra_metric {
        let mut blocks = vec![Block::Comment(vec![format!(
            "Local peers (docker0, VPNs, bridges) keep their routes in main for {} ({}); \
             netplan's routing-policy cannot say suppress_prefixlength.",
            eni.ifname, eni.eni_id
        )])];
        blocks.extend(local.into_iter().map(|r| networkd::rule(r).into()));
        if !eni.marks.is_empty() {
            blocks.push(Block::Comment(vec![
                "The connmark mode's rules: netplan's routing-policy `mark` takes no mask.".into(),
            ]));
        }
        blocks.extend(eni.marks.iter().map(|m| networkd::mark_rule(m).into()));
        if ra_metric {
            blocks.push(Block::Comment(vec![
                "The RA default behind the primary's: netplan 0.106 has no ra-overrides.".into(),
            ]));
            blocks.push(
                Section::new("IPv6AcceptRA")
                    .set("RouteMetric", eni.table)
                    .into(),
            );
        }
        let d = ini::render(eni.header(), &blocks);
        ops.push(FileOp::text(
            Path::new(networkd::DIR)
                .join(format!("10-netplan-{id}.network.d"))
                .join(format!("90-symroute-{}.conf", eni.ifname)),
            d,
            0o644,
        ));
    }
    ops
}

/// Runs `netplan generate` (never `netplan apply`, which bounces links), so that the
/// configuration netplan hands to networkd or NetworkManager (in /run) matches the YAML at once
/// and a bad merge fails the run instead of the next boot. Nothing is reloaded or restarted.
/// Without netplan installed there is nothing to generate for: `Ok(false)`.
pub fn generate(root: &Root) -> Result<bool> {
    // `netplan generate` is a Python wrapper that runs netplan's generator with the same
    // arguments (netplan/cli/commands/generate.py; its path from cli/utils.py, /lib/netplan/
    // generate, /usr/libexec/netplan/generate since 0.106). Run the generator itself: the
    // wrapper's Python start cost 2-3 s of CPU per run under the lab's TCG, during which the run
    // holds the lock and the next attach or detach waits.
    const GENERATORS: [&str; 3] = [
        "/usr/libexec/netplan/generate",
        "/usr/lib/netplan/generate",
        "/lib/netplan/generate",
    ];
    const CLIS: [&str; 3] = ["/usr/sbin/netplan", "/usr/bin/netplan", "/sbin/netplan"];
    let mut cmd = if let Some(g) = GENERATORS.iter().find(|p| Path::new(p).exists()) {
        std::process::Command::new(g)
    } else if let Some(cli) = CLIS.iter().find(|p| Path::new(p).exists()) {
        let mut c = std::process::Command::new(cli);
        c.arg("generate");
        c
    } else {
        return Ok(false);
    };
    let bin = cmd.get_program().to_string_lossy().into_owned();
    if root.path("/") != Path::new("/") {
        cmd.arg("--root-dir").arg(root.path("/"));
    }
    let out = cmd.output().map_err(|source| Error::PersistIo {
        context: format!("running {bin}"),
        source,
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(Error::Persist(format!(
            "netplan generate ({bin}) rejected the configuration: {}",
            crate::model::clip(first.trim())
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_level_renderer_is_read_and_device_level_ones_are_not() {
        let nm = "network:\n  version: 2\n  renderer: NetworkManager\n  ethernets:\n    eth0:\n      dhcp4: true\n";
        assert_eq!(network_renderer(nm), Some(Renderer::NetworkManager));
        let quoted = "# x\nnetwork:\n    renderer: 'networkd'\n    version: 2\n";
        assert_eq!(network_renderer(quoted), Some(Renderer::Networkd));
        let device =
            "network:\n  version: 2\n  ethernets:\n    eth0:\n      renderer: NetworkManager\n";
        assert_eq!(network_renderer(device), None);
        assert_eq!(
            network_renderer("other:\n  renderer: NetworkManager\n"),
            None
        );
    }

    #[test]
    fn finds_cloud_init_definitions_in_block_and_flow_style() {
        let text = "# This file is generated from information provided by the datasource.\nnetwork:\n    ethernets:\n        ens5:\n            dhcp4: true\n            match:\n                macaddress: 06:AA:bb:cc:dd:01\n            set-name: ens5\n        \"ens6\":\n            match: {name: x, driver: ena}\n            dhcp4: true\n        eth2:\n            match:\n                name: eth2\n                driver: \"ixgbevf\"\n    version: 2\n";
        assert_eq!(
            ethernets(text),
            vec![
                Def {
                    id: "ens5".into(),
                    mac: Some("06:aa:bb:cc:dd:01".into()),
                    ..Def::default()
                },
                Def {
                    id: "ens6".into(),
                    name: Some("x".into()),
                    driver: Some("ena".into()),
                    ..Def::default()
                },
                Def {
                    id: "eth2".into(),
                    name: Some("eth2".into()),
                    driver: Some("ixgbevf".into()),
                    ..Def::default()
                },
            ]
        );
    }

    #[test]
    fn only_a_definition_of_this_mac_alone_may_be_extended() {
        let mac: Mac = "06:aa:bb:cc:dd:01".parse().unwrap();
        let by_mac = Def {
            id: "ens5".into(),
            mac: Some("06:aa:bb:cc:dd:01".into()),
            ..Def::default()
        };
        assert!(by_mac.is_this_eni_alone(mac));
        let glob = Def {
            id: "all-en".into(),
            name: Some("en*".into()),
            ..Def::default()
        };
        assert!(!glob.is_this_eni_alone(mac));
        let mac_and_driver = Def {
            driver: Some("ena".into()),
            ..by_mac.clone()
        };
        assert!(!mac_and_driver.is_this_eni_alone(mac));
        let other = Def {
            mac: Some("06:aa:bb:cc:dd:02".into()),
            ..by_mac
        };
        assert!(!other.is_this_eni_alone(mac));
        assert!(*own_id("ens6") < *"01" && *own_id("ens6") < *"all-en");
    }
}
