//! The metadata tree: leaves by path, directories implied by them, listed as IMDS lists them.

use std::collections::{BTreeMap, BTreeSet};

/// Paths are relative to `/latest/`, without a leading slash: `meta-data/instance-id`.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    leaves: BTreeMap<String, String>,
}

pub(crate) enum Lookup {
    Found(String),
    NotFound,
}

/// Strips slashes and an optional `latest/` so `set` accepts both `/latest/meta-data/x` and
/// `meta-data/x`.
pub(crate) fn normalize(path: &str) -> String {
    let p = path.trim_matches('/');
    p.strip_prefix("latest/")
        .unwrap_or(p)
        .trim_matches('/')
        .to_string()
}

impl Tree {
    pub fn set(&mut self, path: &str, body: &str) {
        let key = normalize(path);
        // A leaf cannot also be a directory: replacing one with the other drops the old.
        self.remove(&key);
        for (i, _) in key.match_indices('/') {
            self.leaves.remove(&key[..i]);
        }
        self.leaves.insert(key, body.to_string());
    }

    /// Removes a leaf, or a directory with everything under it.
    pub fn remove(&mut self, path: &str) {
        let key = normalize(path);
        self.leaves.remove(&key);
        let dir = format!("{key}/");
        self.leaves.retain(|k, _| !k.starts_with(&dir));
    }

    pub fn get(&self, path: &str) -> Option<&String> {
        self.leaves.get(&normalize(path))
    }

    /// What `GET /latest/<rel>` answers: a leaf's body, or a directory's children one per line
    /// (subdirectories with a trailing `/`).
    pub fn lookup(&self, rel: &str) -> Lookup {
        let key = rel.trim_matches('/');
        if !rel.ends_with('/') {
            if let Some(body) = self.leaves.get(key) {
                return Lookup::Found(body.clone());
            }
        }
        let dir = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        let children: BTreeSet<String> = self
            .leaves
            .range(dir.clone()..)
            .take_while(|(k, _)| k.starts_with(&dir))
            .map(|(k, _)| match k[dir.len()..].split_once('/') {
                Some((child, _)) => format!("{child}/"),
                None => k[dir.len()..].to_string(),
            })
            .collect();
        if children.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::Found(children.into_iter().collect::<Vec<_>>().join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(t: &Tree, p: &str) -> Option<String> {
        match t.lookup(p) {
            Lookup::Found(b) => Some(b),
            Lookup::NotFound => None,
        }
    }

    #[test]
    fn lists_directories_and_serves_leaves() {
        let mut t = Tree::default();
        t.set("/latest/meta-data/instance-id", "i-1");
        t.set("meta-data/network/interfaces/macs/0a:00/device-number", "1");
        t.set("meta-data/mac", "0a:00");
        assert_eq!(
            found(&t, "meta-data/").unwrap(),
            "instance-id\nmac\nnetwork/"
        );
        assert_eq!(
            found(&t, "meta-data").unwrap(),
            "instance-id\nmac\nnetwork/"
        );
        assert_eq!(
            found(&t, "meta-data/network/interfaces/macs/").unwrap(),
            "0a:00/"
        );
        assert_eq!(found(&t, "meta-data/instance-id").unwrap(), "i-1");
        assert_eq!(found(&t, "").unwrap(), "meta-data/");
        assert!(found(&t, "meta-data/nope").is_none());
        assert!(found(&t, "meta-data/instance-id/").is_none());
    }

    #[test]
    fn removing_a_directory_removes_its_subtree() {
        let mut t = Tree::default();
        t.set("meta-data/a/b", "1");
        t.set("meta-data/a/c", "2");
        t.set("meta-data/ab", "3");
        t.remove("meta-data/a");
        assert!(found(&t, "meta-data/a/").is_none());
        assert_eq!(found(&t, "meta-data/").unwrap(), "ab");
        t.set("meta-data/ab/x", "4");
        assert_eq!(found(&t, "meta-data/").unwrap(), "ab/");
    }
}
