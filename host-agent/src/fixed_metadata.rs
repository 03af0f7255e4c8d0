//! What an earlier run read of the metadata that cannot change while an ENI stays attached
//! (`imds::FIXED_ENI_KEYS`) or while the instance runs (`imds::FIXED_INSTANCE_KEYS`), kept in
//! `/run` (gone at reboot) so that the periodic check reads only what can change.
//!
//! An entry holds only while the ENI's kernel link is the one it was read for: a detach and a
//! re-attach (even of the same ENI, whose MAC stays, at another device number) makes a new
//! interface with a new ifindex, and the entry no longer applies. The values are raw metadata
//! text and go through the same parser as fresh ones.
//!
//! Format, one value per line: `<ifindex or -> <metadata path> <value>`; the instance's keys
//! carry `-`. Anything else in the file voids the whole file (the run reads everything).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;

use crate::imds::{FIXED_ENI_KEYS, FIXED_INSTANCE_KEYS};
use crate::model::Mac;
use crate::ops::Link;
use crate::persist::Root;

/// In the run lock's directory (crate::lock: private to root), one file per network namespace
/// like the lock, since ifindexes are per namespace.
const DIR: &str = "/run/symroute";
const HEADER: &str =
    "# symroute: instance metadata that cannot change while each ENI's link exists \
                      (rewritten by every run that may write; safe to delete)";

/// The ENI (by MAC) a fixed ENI path is about, or `None` for an instance key; an error for a
/// path that is no fixed key at all.
fn owner(path: &str) -> Result<Option<Mac>, String> {
    if FIXED_INSTANCE_KEYS.contains(&path) {
        return Ok(None);
    }
    let rest = path
        .strip_prefix("network/interfaces/macs/")
        .ok_or_else(|| format!("{path:?} is not a fixed metadata key"))?;
    let (mac, key) = rest
        .split_once('/')
        .ok_or_else(|| format!("{path:?} is not a fixed metadata key"))?;
    if !FIXED_ENI_KEYS.contains(&key) {
        return Err(format!("{path:?} is not a fixed metadata key"));
    }
    mac.parse().map(Some)
}

/// One word of printable ASCII, as every fixed key's value is (ids, numbers, a MAC, a CIDR).
fn usable(value: &str) -> bool {
    !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_graphic())
}

fn ifindex_of(links: &[Link], mac: Mac) -> Option<u32> {
    links.iter().find(|l| l.mac == Some(mac)).map(|l| l.index)
}

/// Parses the file's text into the values that still hold for `links`. `Err` names the first
/// line that makes no sense.
pub(crate) fn parse(text: &str, links: &[Link]) -> Result<BTreeMap<String, String>, String> {
    let mut known = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: String| format!("line {}: {why}", n + 1);
        let mut words = line.split(' ');
        let (Some(index), Some(path), Some(value), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad("not `<ifindex> <path> <value>`".into()));
        };
        if !usable(value) {
            return Err(bad(format!("{path}: an unusable value")));
        }
        let holds = match (owner(path).map_err(bad)?, index) {
            (None, "-") => true,
            (Some(mac), index) => {
                let index: u32 = index
                    .parse()
                    .map_err(|_| bad(format!("{index:?} is not an ifindex")))?;
                ifindex_of(links, mac) == Some(index)
            }
            (None, other) => return Err(bad(format!("{path} with ifindex {other:?}"))),
        };
        if holds {
            known.insert(path.to_owned(), value.to_owned());
        }
    }
    Ok(known)
}

/// The file's text for `values`, keeping only the instance's keys and the keys of ENIs in
/// `ready` whose link is in `links` (an ENI still settling may show a transient device number).
pub(crate) fn render(values: &BTreeMap<String, String>, links: &[Link], ready: &[Mac]) -> String {
    let mut out = format!("{HEADER}\n");
    for (path, value) in values {
        let value = value.trim();
        if !usable(value) {
            continue;
        }
        let index = match owner(path) {
            Ok(None) => "-".to_owned(),
            Ok(Some(mac)) if ready.contains(&mac) => match ifindex_of(links, mac) {
                Some(i) => i.to_string(),
                None => continue,
            },
            _ => continue,
        };
        out.push_str(&format!("{index} {path} {value}\n"));
    }
    out
}

/// The file for this process's network namespace.
pub fn path(root: &Root) -> std::io::Result<PathBuf> {
    let ns = fs::metadata("/proc/self/ns/net")?;
    Ok(root.path(DIR).join(format!("fixed-metadata-{}", ns.ino())))
}

/// What holds of the kept values; nothing when the file is missing or makes no sense.
pub fn load(root: &Root, links: &[Link]) -> BTreeMap<String, String> {
    let path = match path(root) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("/proc/self/ns/net: {e}; reading all metadata");
            return BTreeMap::new();
        }
    };
    match fs::read_to_string(&path) {
        Ok(text) => parse(&text, links).unwrap_or_else(|why| {
            log::warn!("{}: {why}; reading all metadata", path.display());
            BTreeMap::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => {
            log::warn!("{}: {e}; reading all metadata", path.display());
            BTreeMap::new()
        }
    }
}

/// Keeps the values for the next run (through a temporary file and a rename), where the
/// periodic check is installed (nothing else reads them). A failure only costs the next check
/// some requests, so it is the caller's to log, never to fail on.
pub fn save(
    root: &Root,
    values: &BTreeMap<String, String>,
    links: &[Link],
    ready: &[Mac],
) -> std::io::Result<()> {
    if fs::symlink_metadata(root.path(crate::trigger::CHECK_SERVICE)).is_err() {
        return Ok(());
    }
    let path = path(root)?;
    let dir = path.parent().expect("a file in DIR");
    // /run itself is the system's: where it is missing (a bare --root), nothing is kept.
    if !dir.parent().is_some_and(|run| run.is_dir()) {
        return Ok(());
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(render(values, links, ready).as_bytes())?;
        fs::rename(&tmp, &path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Deletes the kept values (`uninstall`: no check will read them), and the directory if that
/// leaves it empty (never the case on a host, where the run lock lives in it).
pub fn forget(root: &Root) {
    if let Ok(p) = path(root) {
        let _ = fs::remove_file(&p);
        if let Some(dir) = p.parent() {
            let _ = fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: &str = "02:00:00:00:00:01";
    const M2: &str = "02:00:00:00:00:02";

    fn link(index: u32, mac: &str) -> Link {
        Link {
            index,
            name: format!("eth{index}"),
            mac: Some(mac.parse().unwrap()),
            up: true,
            mtu: 9001,
            ra_defrtr_metric: None,
        }
    }

    fn values() -> BTreeMap<String, String> {
        [
            ("instance-id", "i-0123456789abcdef0"),
            ("mac", M1),
            (
                &format!("network/interfaces/macs/{M1}/device-number") as &str,
                "0",
            ),
            (&format!("network/interfaces/macs/{M2}/device-number"), "1"),
            (
                &format!("network/interfaces/macs/{M2}/interface-id"),
                "eni-0123456789abcdef0",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn values_round_trip_while_each_enis_link_is_the_same() {
        let links = [link(2, M1), link(3, M2)];
        let ready = [M1.parse().unwrap(), M2.parse().unwrap()];
        let text = render(&values(), &links, &ready);
        assert_eq!(parse(&text, &links).unwrap(), values());
    }

    #[test]
    fn a_re_attached_eni_has_a_new_link_and_its_values_no_longer_hold() {
        let ready = [M1.parse().unwrap(), M2.parse().unwrap()];
        let text = render(&values(), &[link(2, M1), link(3, M2)], &ready);
        // Detached and attached again: same MAC, new ifindex.
        let known = parse(&text, &[link(2, M1), link(9, M2)]).unwrap();
        assert!(known.keys().all(|k| !k.contains(M2)), "{known:?}");
        assert_eq!(known["instance-id"], "i-0123456789abcdef0");
        assert!(known.contains_key(&format!("network/interfaces/macs/{M1}/device-number")));
        // Detached: no link at all.
        let known = parse(&text, &[link(2, M1)]).unwrap();
        assert!(known.keys().all(|k| !k.contains(M2)), "{known:?}");
    }

    #[test]
    fn an_eni_not_ready_or_without_a_link_is_not_kept() {
        let text = render(
            &values(),
            &[link(2, M1), link(3, M2)],
            &[M1.parse().unwrap()],
        );
        assert!(!text.contains(M2), "{text}");
        let text = render(
            &values(),
            &[link(2, M1)],
            &[M1.parse().unwrap(), M2.parse().unwrap()],
        );
        assert!(!text.contains(M2), "{text}");
    }

    #[test]
    fn anything_odd_voids_the_file() {
        let links = [link(3, M2)];
        for bad in [
            "3 network/interfaces/macs/02:00:00:00:00:02/local-ipv4s 10.0.1.5",
            "3 network/interfaces/macs/02:00:00:00:00:02/device-number",
            "x network/interfaces/macs/02:00:00:00:00:02/device-number 1",
            "3 instance-id i-0123456789abcdef0",
            "- network/interfaces/macs/02:00:00:00:00:02/device-number 1",
            "3 network/interfaces/macs/zz/device-number 1",
            "3 network/interfaces/macs/02:00:00:00:00:02/device-number 1 2",
        ] {
            assert!(parse(bad, &links).is_err(), "{bad}");
        }
    }
}
