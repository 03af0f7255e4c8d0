//! The connmark mode (opt-in: `apply --connmark on`): a connection that arrived on an ENI is
//! answered through that ENI whatever the reply's source address. Policy routing `from
//! <address>` cannot steer the replies of a DNAT'd service (a Docker published port, a
//! port-forward to a VM or a pod): they are routed with the container's source address, and
//! conntrack puts the ENI's address back only after routing, at postrouting. They leave by
//! whatever main says, and the VPC drops them there.
//!
//! Two parts per ENI, both owned by symroute and found again in the kernel:
//! - an nftables table `inet symroute_<T>` that stamps ENI T's mark into the conntrack entry of
//!   every new flow arriving on its link, and copies it onto that flow's replies: forwarded
//!   ones at prerouting, local ones in an output route chain (which re-routes what it marks);
//! - a rule `fwmark <mark>/<mask> lookup T` per family, at T − 3000, before every `from` rule.
//!
//! The rules are the state: an ENI is in the mode while its `fwmark` rule (protocol symroute)
//! is installed, so a later run without `--connmark` keeps it, and the nftables tables follow
//! the rules. The kernel forgets both at boot, so a run that persists also keeps the choice in
//! [`STATE_DIR`] (one empty file per ENI, by MAC): the first run after boot (the on-host
//! trigger's, through udev's coldplug) turns the mode back on. Only ENIs in the mode ever
//! start `nft`.
//!
//! nftables is driven through its own `nft -f -` (one atomic transaction per run), the
//! interface nftables documents for programs; the `nftables` crate would drive the same
//! command through JSON at the cost of a larger dependency tree on every instance.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::kernel::Snapshot;
use crate::model::{ImdsEni, Mac, CONNMARK_MASK, RTPROT_SYMROUTE};
use crate::ops::{Link, MarkRuleSpec, Op};

/// Where a persisting run keeps which ENIs are in the mode: an empty file named by MAC each.
pub const STATE_DIR: &str = "/etc/symroute/connmark";

/// The MACs whose mode a persisting run kept under `root`.
pub fn remembered(root: &crate::persist::Root) -> Vec<Mac> {
    let Ok(rd) = std::fs::read_dir(root.path(STATE_DIR)) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Keeps (or forgets) that ENI `mac` is in the mode; whether a file changed.
pub fn remember(root: &crate::persist::Root, mac: Mac, on: bool) -> std::io::Result<bool> {
    let dir = root.path(STATE_DIR);
    let file = dir.join(mac.to_string());
    match (on, file.exists()) {
        (true, false) => {
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&file, b"")?;
            Ok(true)
        }
        (false, true) => std::fs::remove_file(&file).map(|()| true),
        _ => Ok(false),
    }
}

/// What the command line asks of the mode for the ENIs of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    On,
    Off,
    /// As the kernel has it (on while the ENI's `fwmark` rule is installed), or as a
    /// persisting run kept it before a reboot.
    Keep,
}

/// One ENI's marking, as its nftables table says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Marking {
    pub table: u32,
    pub ifname: String,
    pub mark: u32,
}

/// The mode's changes for one run: kernel rules, then one nftables transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowPlan {
    pub ops: Vec<Op>,
    /// nftables tables to (re)write: every ENI of the run that is in the mode afterwards, so
    /// a ruleset flushed by a firewall reload comes back with the next run.
    pub write: Vec<Marking>,
    /// nftables tables to delete: ENIs leaving the mode (or the instance).
    pub drop: Vec<u32>,
}

impl FlowPlan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.write.is_empty() && self.drop.is_empty()
    }

    /// Whether ENI `table` is in the mode once this plan ran.
    pub fn marks(&self, table: u32) -> bool {
        self.write.iter().any(|m| m.table == table)
    }

    /// The rule changes whose ENI table passes `keep`, as the equivalent `ip` commands (the
    /// reports list them per ENI, and those of detached ENIs as pruned).
    pub fn changes_where(&self, keep: impl Fn(u32) -> bool) -> Vec<String> {
        self.ops
            .iter()
            .filter(|o| match o {
                Op::AddMarkRule(m) | Op::DelMarkRule(m) => keep(m.table),
                _ => false,
            })
            .map(|o| o.to_string())
            .collect()
    }
}

/// The nftables table of ENI `table`.
pub fn nft_table(table: u32) -> String {
    format!("symroute_{table}")
}

/// The `fwmark` rules of an ENI in the mode: IPv4 where it has IPv4 (not an IPv6-only ENI),
/// and IPv6 where it has IPv6 addresses.
pub fn mark_rules(eni: &ImdsEni) -> Vec<MarkRuleSpec> {
    let rule = |v6| MarkRuleSpec {
        priority: eni.mark_rule_priority(),
        v6,
        mark: eni.flow_mark(),
        mask: CONNMARK_MASK,
        table: eni.table(),
        protocol: RTPROT_SYMROUTE,
    };
    let mut out = Vec::new();
    if !eni.is_ipv6_only() {
        out.push(rule(false));
    }
    if !eni.ipv6s.is_empty() {
        out.push(rule(true));
    }
    out
}

/// The mode's rules, by their shape rather than their protocol: after a boot, networkd
/// installs them from symroute's files under its own protocol number.
fn ours(snap: &Snapshot) -> impl Iterator<Item = &MarkRuleSpec> {
    snap.marks.iter().filter(|m| {
        m.mask == CONNMARK_MASK
            && m.table >= crate::model::TABLE_BASE
            && m.mark == m.table << 16
            && m.priority + crate::model::MARK_RULE_OFFSET == m.table
    })
}

/// Whether ENI `table` is in the mode now.
pub fn is_on(snap: &Snapshot, table: u32) -> bool {
    ours(snap).any(|m| m.table == table)
}

/// An interface name nftables can take between double quotes, and that means only itself.
fn quotable(ifname: &str) -> bool {
    !ifname.is_empty()
        && ifname.len() <= 15
        && ifname
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-@".contains(&b))
}

/// The plan for `apply`: for each configured ENI of the run (with its link), the mode as
/// `choice` says (`remembered`: the MACs a persisting run kept in the mode); with
/// `keep_tables` (a run over every ENI), the mode of ENIs whose table is not among them
/// (detached, renumbered) goes.
pub fn plan(
    enis: &[(&ImdsEni, &Link)],
    snap: &Snapshot,
    choice: Choice,
    remembered: &[Mac],
    keep_tables: Option<&[u32]>,
) -> Result<FlowPlan> {
    let mut p = FlowPlan::default();
    for (eni, link) in enis {
        let t = eni.table();
        let on = match choice {
            Choice::On => true,
            Choice::Off => false,
            Choice::Keep => is_on(snap, t) || remembered.contains(&eni.mac),
        };
        let want = if on { mark_rules(eni) } else { Vec::new() };
        let have: Vec<&MarkRuleSpec> = ours(snap).filter(|m| m.table == t).collect();
        p.ops.extend(
            want.iter()
                .filter(|w| !have.iter().any(|h| h.same_rule(w)))
                .map(|w| Op::AddMarkRule(w.clone())),
        );
        p.ops.extend(
            have.iter()
                .filter(|h| !want.iter().any(|w| w.same_rule(h)))
                .map(|h| Op::DelMarkRule((*h).clone())),
        );
        if on {
            if !quotable(&link.name) {
                return Err(Error::Connmark {
                    context: format!("{} ({})", eni.eni_id, link.name),
                    detail: "the interface name is not one nftables can match by name".into(),
                });
            }
            p.write.push(Marking {
                table: t,
                ifname: link.name.clone(),
                mark: eni.flow_mark(),
            });
        } else if !have.is_empty() {
            p.drop.push(t);
        }
    }
    if let Some(keep) = keep_tables {
        let run: Vec<u32> = enis.iter().map(|(e, _)| e.table()).collect();
        let stale = |t: &u32| !keep.contains(t) && !run.contains(t);
        p.ops.extend(
            ours(snap)
                .filter(|m| stale(&m.table))
                .map(|m| Op::DelMarkRule(m.clone())),
        );
        p.drop.extend(ours(snap).map(|m| m.table).filter(stale));
    }
    p.drop.sort_unstable();
    p.drop.dedup();
    Ok(p)
}

/// The plan for `remove`: the mode of every ENI (`None`), or of the ENIs with these tables.
pub fn plan_remove(snap: &Snapshot, tables: Option<&[u32]>) -> FlowPlan {
    let gone = |t: u32| tables.is_none_or(|ts| ts.contains(&t));
    let mut p = FlowPlan {
        ops: ours(snap)
            .filter(|m| gone(m.table))
            .map(|m| Op::DelMarkRule(m.clone()))
            .collect(),
        ..Default::default()
    };
    p.drop = ours(snap).map(|m| m.table).filter(|t| gone(*t)).collect();
    p.drop.sort_unstable();
    p.drop.dedup();
    p
}

/// One nftables transaction: `add` then `delete` removes a table whether or not it exists
/// (nft before 1.0.8 has no `destroy`), and a table written is replaced whole.
pub fn script(p: &FlowPlan) -> String {
    let mut s = String::new();
    let clear = |s: &mut String, t: u32| {
        s.push_str(&format!(
            "add table inet {0}\ndelete table inet {0}\n",
            nft_table(t)
        ));
    };
    for t in &p.drop {
        clear(&mut s, *t);
    }
    for m in &p.write {
        clear(&mut s, m.table);
        // Set the ENI's bits, keep everyone else's: `x & ~mask | mark`.
        let keep = !CONNMARK_MASK;
        let (mark, mask) = (m.mark, CONNMARK_MASK);
        let restore = format!(
            "ct direction reply ct mark and {mask:#010x} == {mark:#010x} \
             meta mark set meta mark and {keep:#010x} or {mark:#010x}"
        );
        s.push_str(&format!(
            "table inet {table} {{\n\
             \tchain arrivals {{\n\
             \t\ttype filter hook prerouting priority -150; policy accept;\n\
             \t\tiifname \"{ifname}\" ct state new ct mark set ct mark and {keep:#010x} or {mark:#010x}\n\
             \t\t{restore}\n\
             \t}}\n\
             \tchain local_replies {{\n\
             \t\ttype route hook output priority -150; policy accept;\n\
             \t\t{restore}\n\
             \t}}\n\
             }}\n",
            table = nft_table(m.table),
            ifname = m.ifname,
        ));
    }
    s
}

/// The `nft` to run: `SYMROUTE_NFT` if set, else the first on PATH, /usr/sbin or /sbin.
pub fn nft_command() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SYMROUTE_NFT") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
}

/// Before any change: the mode needs nftables' command on the host.
pub fn require_nft() -> Result<PathBuf> {
    nft_command().ok_or_else(|| {
        Error::Usage(
            "--connmark on needs nftables' `nft` command, which is not installed here \
             (install the nftables package)"
                .into(),
        )
    })
}

/// Runs `script` as one nftables transaction: all of it or none of it.
pub fn run_nft(nft: &Path, script: &str) -> Result<()> {
    let fail = |detail: String| Error::Connmark {
        context: format!("{} -f -", nft.display()),
        detail,
    };
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(fail(format!(
            "{} ({})",
            err.lines().next().unwrap_or("").trim(),
            out.status
        )))
    }
}

#[cfg(test)]
mod tests {
    //! The mode's planning and rendering on plain data; the kernel and nftables proof is in
    //! tests/routing.rs.
    use super::*;

    fn eni(device: u32, ip: &str, v6: bool) -> ImdsEni {
        ImdsEni {
            mac: format!("0a:00:00:00:00:0{device}").parse().unwrap(),
            eni_id: format!("eni-0000000000000000{device}").parse().unwrap(),
            device_number: device,
            network_card: 0,
            card_published: true,
            ipv4s: vec![ip.parse().unwrap()],
            subnet_v4: Some("10.0.1.0/24".parse().unwrap()),
            prefixes_v4: vec![],
            prefixes_v6: vec![],
            ipv6s: if v6 {
                vec!["2600:1f18::20".parse().unwrap()]
            } else {
                vec![]
            },
            subnets_v6: vec![],
            vpc_v4: vec!["10.0.0.0/16".parse().unwrap()],
            vpc_v6: vec![],
        }
    }

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            mac: None,
            up: true,
            mtu: 1500,
            ra_defrtr_metric: None,
        }
    }

    #[test]
    fn an_enis_mark_is_its_table_in_bits_16_to_30_and_its_rules_sit_below_every_from_rule() {
        let e = eni(1, "10.0.1.20", true);
        let rules = mark_rules(&e);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].mark, 10001 << 16);
        assert_eq!(rules[0].mark & !CONNMARK_MASK, 0);
        assert_eq!(rules[0].priority, 7001);
        assert!(rules[0].priority < e.vpc_rule_priority());
        assert!(!rules[0].v6 && rules[1].v6);
        assert_eq!(
            Op::AddMarkRule(rules[1].clone()).to_string(),
            "ip -6 rule add fwmark 0x27110000/0x7fff0000 lookup 10001 priority 7001 protocol 177"
        );
        // The highest table the numbering allows still fits the mask.
        assert_eq!((19_999u32 << 16) & !CONNMARK_MASK, 0);
        assert_eq!(mark_rules(&eni(2, "10.0.1.21", false)).len(), 1);
    }

    #[test]
    fn an_ipv6_only_eni_in_the_mode_gets_the_ipv6_rule_alone() {
        let mut e = eni(3, "10.0.1.22", true);
        e.ipv4s.clear();
        e.subnet_v4 = None;
        let rules = mark_rules(&e);
        assert_eq!(rules.len(), 1, "{rules:?}");
        assert!(rules[0].v6);
    }

    #[test]
    fn keep_follows_the_kernel_on_adds_off_deletes_and_drops_the_table() {
        let e = eni(1, "10.0.1.20", false);
        let l = link(3, "eth1");
        let none = Snapshot::default();
        assert!(plan(&[(&e, &l)], &none, Choice::Keep, &[], None)
            .unwrap()
            .is_empty());
        let on = plan(&[(&e, &l)], &none, Choice::On, &[], None).unwrap();
        assert_eq!(on.ops, vec![Op::AddMarkRule(mark_rules(&e)[0].clone())]);
        assert_eq!(
            on.write,
            vec![Marking {
                table: 10001,
                ifname: "eth1".into(),
                mark: 10001 << 16
            }]
        );
        let snap = Snapshot {
            marks: mark_rules(&e),
            ..Default::default()
        };
        let keep = plan(&[(&e, &l)], &snap, Choice::Keep, &[], None).unwrap();
        assert!(keep.ops.is_empty() && keep.marks(10001), "{keep:?}");
        // After a reboot the kernel has no rule; the kept choice turns the mode back on.
        let boot = plan(&[(&e, &l)], &none, Choice::Keep, &[e.mac], None).unwrap();
        assert_eq!(boot, on);
        let off = plan(&[(&e, &l)], &snap, Choice::Off, &[], None).unwrap();
        assert_eq!(off.ops, vec![Op::DelMarkRule(mark_rules(&e)[0].clone())]);
        assert_eq!(off.drop, vec![10001]);
        assert!(off.write.is_empty());
    }

    #[test]
    fn a_run_over_every_eni_drops_the_mode_of_detached_enis_and_leaves_other_tools_marks() {
        let e = eni(1, "10.0.1.20", false);
        let gone = eni(2, "10.0.1.21", false);
        let foreign = MarkRuleSpec {
            priority: 1024,
            v6: false,
            mark: 0x80,
            mask: 0x80,
            table: 254,
            protocol: 4,
        };
        let snap = Snapshot {
            marks: [mark_rules(&e), mark_rules(&gone), vec![foreign]].concat(),
            ..Default::default()
        };
        let l = link(3, "eth1");
        let p = plan(&[(&e, &l)], &snap, Choice::Keep, &[], Some(&[10001])).unwrap();
        assert_eq!(p.ops, vec![Op::DelMarkRule(mark_rules(&gone)[0].clone())]);
        assert_eq!(p.drop, vec![10002]);
        assert!(p.marks(10001));
        // Without a full run, nothing of another ENI is touched.
        let p = plan(&[(&e, &l)], &snap, Choice::Keep, &[], None).unwrap();
        assert!(p.ops.is_empty() && p.drop.is_empty());
        let all = plan_remove(&snap, None);
        assert_eq!(all.ops.len(), 2);
        assert_eq!(all.drop, vec![10001, 10002]);
        assert_eq!(plan_remove(&snap, Some(&[10002])).drop, vec![10002]);
    }

    #[test]
    fn an_interface_name_nftables_cannot_quote_is_refused() {
        let e = eni(1, "10.0.1.20", false);
        let l = link(3, "eth\"1");
        let err = plan(&[(&e, &l)], &Snapshot::default(), Choice::On, &[], None).unwrap_err();
        assert!(err.to_string().contains("nftables can match"), "{err}");
    }

    /// Golden: the transaction for one ENI entering the mode and one leaving it.
    #[test]
    fn the_nftables_transaction_replaces_and_deletes_whole_tables() {
        let p = FlowPlan {
            ops: vec![],
            write: vec![Marking {
                table: 10001,
                ifname: "eth1".into(),
                mark: 10001 << 16,
            }],
            drop: vec![10002],
        };
        assert_eq!(
            script(&p),
            "add table inet symroute_10002\n\
             delete table inet symroute_10002\n\
             add table inet symroute_10001\n\
             delete table inet symroute_10001\n\
             table inet symroute_10001 {\n\
             \tchain arrivals {\n\
             \t\ttype filter hook prerouting priority -150; policy accept;\n\
             \t\tiifname \"eth1\" ct state new ct mark set ct mark and 0x8000ffff or 0x27110000\n\
             \t\tct direction reply ct mark and 0x7fff0000 == 0x27110000 meta mark set meta mark and 0x8000ffff or 0x27110000\n\
             \t}\n\
             \tchain local_replies {\n\
             \t\ttype route hook output priority -150; policy accept;\n\
             \t\tct direction reply ct mark and 0x7fff0000 == 0x27110000 meta mark set meta mark and 0x8000ffff or 0x27110000\n\
             \t}\n\
             }\n"
        );
    }
}
