//! Fixtures shared by the persistence tests: ENIs as the planner describes them, temporary
//! root trees, and exact snapshots of a tree (content, mode, symlinks, directories).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use symroute_agent::kernel::Snapshot;
use symroute_agent::model::ImdsEni;
use symroute_agent::ops::{Link, RouteSpec};
use symroute_agent::persist::{EniConfig, Root};
use symroute_agent::plan::desired;

/// eth1, device 1: two addresses and a delegated prefix in 10.0.1.0/24 (table 10001).
pub fn classic() -> EniConfig {
    config(
        "eni-0a9c4b60624c0e41d",
        "0a:00:00:00:00:02",
        "eth1",
        1,
        &["10.0.1.20", "10.0.1.21"],
        "10.0.1.0/24",
        &["10.0.1.64/28"],
        &[],
        None,
    )
}

/// eth2, device 2 on card 1: dual stack in 10.0.2.0/24 and 2600:1f18:1:2::/64 (table 10102).
pub fn dual_stack() -> EniConfig {
    config(
        "eni-11111111111111111",
        "0a:00:00:00:00:03",
        "eth2",
        2,
        &["10.0.2.30"],
        "10.0.2.0/24",
        &[],
        &["2600:1f18:1:2::30"],
        Some("fe80::1"),
    )
}

/// eth3, device 3: IPv6-only, in an IPv6-only subnet 2600:1f18:1:2::/64 (table 10003).
pub fn ipv6_only() -> EniConfig {
    config(
        "eni-33333333333333333",
        "0a:00:00:00:00:04",
        "eth3",
        3,
        &[],
        "",
        &[],
        &["2600:1f18:1:2::40", "2600:1f18:1:2::41"],
        Some("fe80::1"),
    )
}

/// The persisted configuration of one ENI, through the live planner (`plan::desired`) with a
/// kernel snapshot in which the link is up and, for IPv6, a router was learned.
#[allow(clippy::too_many_arguments)]
pub fn config(
    eni_id: &str,
    mac: &str,
    ifname: &str,
    device: u32,
    v4: &[&str],
    subnet: &str,
    prefixes: &[&str],
    v6: &[&str],
    router6: Option<&str>,
) -> EniConfig {
    let card = if device == 2 { 1 } else { 0 };
    let eni = ImdsEni {
        mac: mac.parse().unwrap(),
        eni_id: eni_id.parse().unwrap(),
        device_number: device,
        network_card: card,
        card_published: true,
        ipv4s: v4.iter().map(|s| s.parse().unwrap()).collect(),
        // No IPv4 block: an ENI in an IPv6-only subnet.
        subnet_v4: (!subnet.is_empty()).then(|| subnet.parse().unwrap()),
        prefixes_v4: prefixes.iter().map(|s| s.parse().unwrap()).collect(),
        prefixes_v6: vec![],
        ipv6s: v6.iter().map(|s| s.parse().unwrap()).collect(),
        subnets_v6: if v6.is_empty() {
            vec![]
        } else {
            vec!["2600:1f18:1:2::/64".parse().unwrap()]
        },
        vpc_v4: vec!["10.0.0.0/16".parse().unwrap()],
        vpc_v6: if v6.is_empty() {
            vec![]
        } else {
            vec!["2600:1f18:1::/56".parse().unwrap()]
        },
    };
    let link = Link {
        index: 3 + device,
        name: ifname.into(),
        mac: Some(eni.mac),
        up: true,
        // As a VPC's DHCP leaves it: the static renderings must keep it.
        mtu: 9001,
        ra_defrtr_metric: None,
    };
    let mut snap = Snapshot {
        links: vec![link.clone()],
        ..Default::default()
    };
    if let Some(r) = router6 {
        snap.routes.push(RouteSpec {
            table: 254,
            dst: "::/0".parse().unwrap(),
            gateway: Some(r.parse().unwrap()),
            oif: link.index,
            dev: ifname.into(),
            prefsrc: None,
            scope_link: false,
            protocol: 9,
            metric: Some(1024),
            nh_id: None,
        });
    }
    EniConfig::new(&eni, &link, &desired(&eni, &link, &snap))
}

pub fn cloud_init_yaml() -> String {
    "# This file is generated from information provided by the datasource.  Changes\n\
     # to it will not persist across an instance reboot.\n\
     network:\n    ethernets:\n        eth0:\n            dhcp4: true\n            dhcp6: false\n\
     \x20           match:\n                macaddress: 0a:00:00:00:00:01\n            set-name: eth0\n\
     \x20       eth1:\n            dhcp4: true\n            dhcp4-overrides:\n                route-metric: 200\n\
     \x20           match:\n                macaddress: 0a:00:00:00:00:02\n            set-name: eth1\n\
     \x20   version: 2\n"
        .to_string()
}

static N: AtomicUsize = AtomicUsize::new(0);

/// A directory standing in for `/`, deleted on drop.
pub struct TempTree {
    pub dir: PathBuf,
}

impl TempTree {
    pub fn new() -> TempTree {
        let dir = std::env::temp_dir().join(format!(
            "symroute-persist-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempTree { dir }
    }

    pub fn root(&self) -> Root {
        Root::new(Some(&self.dir)).unwrap()
    }

    pub fn path(&self, abs: &str) -> PathBuf {
        self.dir.join(abs.trim_start_matches('/'))
    }

    pub fn write(&self, abs: &str, content: &str) {
        let p = self.path(abs);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    /// Writes the files a backend renders for `eni` into the tree; returns their paths in it.
    pub fn write_rendered(
        &self,
        backend: symroute_agent::persist::Backend,
        eni: &EniConfig,
    ) -> Vec<PathBuf> {
        let ops = symroute_agent::persist::render(backend, &self.root(), eni).expect("render");
        ops.iter()
            .filter_map(|op| match op {
                symroute_agent::persist::FileOp::Write { path, content, .. } => {
                    let f = self.path(path.to_str().unwrap());
                    fs::create_dir_all(f.parent().unwrap()).unwrap();
                    fs::write(&f, content).unwrap();
                    Some(f)
                }
                symroute_agent::persist::FileOp::Delete { .. } => None,
            })
            .collect()
    }

    pub fn read(&self, abs: &str) -> String {
        fs::read_to_string(self.path(abs)).unwrap_or_else(|e| panic!("{abs}: {e}"))
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir(u32),
    File(Vec<u8>, u32),
    Link(PathBuf),
}

/// Everything in a tree, exactly: for "remove leaves the tree as it was".
pub fn snapshot(dir: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            if md.file_type().is_symlink() {
                out.insert(rel, Entry::Link(fs::read_link(&p).unwrap()));
            } else if md.is_dir() {
                out.insert(rel, Entry::Dir(mode));
                walk(base, &p, out);
            } else {
                out.insert(rel, Entry::File(fs::read(&p).unwrap(), mode));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}
