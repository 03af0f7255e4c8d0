//! Validated identifiers and the instance's interfaces as IMDS describes them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Serialize, Serializer};

/// First table / rule priority; compatible with amazon-ec2-net-utils.
pub(crate) const TABLE_BASE: u32 = 10_000;
/// Device numbers per network card in the numbering scheme (`10000 + 100*card + device`).
pub(crate) const DEVICES_PER_CARD: u32 = 100;
/// Highest network card we accept, so every priority stays below the kernel's `main` rule
/// (32766) and nothing collides.
pub(crate) const MAX_NETWORK_CARD: u32 = 99;
/// How far below an ENI's own rule (`from <addr> lookup <table>`, priority = table) its rules
/// `from <addr> to <VPC block> lookup <table>` sit: VPC destinations, the same subnet included,
/// stay on the ENI whatever the main table says.
pub const VPC_RULE_OFFSET: u32 = 2_000;
/// How far below an ENI's own rule its `from <addr> lookup main suppress_prefixlength 0` sits:
/// after the VPC rules, before the ENI's default route, so that the main table's routes to
/// local peers (docker0, a VPN, a bridge, a pod) keep winning and only its default routes are
/// skipped. Between the two, the order per address is what matters; across ENIs the `from`
/// selectors never overlap.
pub const LOCAL_RULE_OFFSET: u32 = 1_000;

/// How far below an ENI's own rule its connmark rules `fwmark <mark>/<mask> lookup <table>`
/// sit (connmark mode only): before every `from` rule, since a marked reply is a reply to a
/// flow that arrived on that ENI whatever its source address.
pub const MARK_RULE_OFFSET: u32 = 3_000;

/// The firewall-mark bits the connmark mode uses: an ENI's mark is its table number (at most
/// 19999, 15 bits) shifted into bits 16–30. Bits 0–15 stay free for the tools that use them
/// (kube-proxy 0x4000/0x8000, the VPC CNI 0x80, Cilium 0x0f00); Calico's default 0xffff0000
/// overlaps, so do not combine the mode with Calico's iptables dataplane.
pub const CONNMARK_MASK: u32 = 0x7fff_0000;

/// The routing protocol number stamped on every rule, route and address the agent installs, so
/// it can find and prune exactly its own state. Unassigned in the kernel's rtnetlink.h list.
pub const RTPROT_SYMROUTE: u8 = 177;

/// An Ethernet MAC address, printed lowercase with colons as IMDS and the kernel name it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

/// A MAC as symroute reads it from IMDS, the command line and its own files: lowercase only,
/// the rule the SSM document's `allowedPattern` and the Lambda apply too.
impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        symroute_ids::parse_mac(s)
            .map(Mac)
            .map_err(|e| e.to_string())
    }
}

impl Mac {
    /// A MAC as another tool's network configuration may spell it: systemd-networkd and netplan
    /// accept either case, so a `MACAddress=0A:...` line matches this ENI too.
    pub(crate) fn from_config(s: &str) -> Option<Mac> {
        s.to_ascii_lowercase().parse().ok()
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An ENI id: `eni-` and 8 or 17 hex digits (AWS uses both lengths).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize)]
#[serde(transparent)]
pub struct EniId(String);

impl FromStr for EniId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if symroute_ids::is_ec2_id(s, "eni-") {
            Ok(EniId(s.to_owned()))
        } else {
            Err(format!(
                "{:?} is not an ENI id (want eni- followed by 8 or 17 lowercase hex digits)",
                clip(s)
            ))
        }
    }
}

impl fmt::Display for EniId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which ENIs a command is about: one type from the command line through the planner to the
/// persisted files. `Stale` is about state rather than ENIs: what detached ENIs (or addresses no
/// longer assigned) left behind; it selects no attached ENI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every secondary ENI.
    All,
    /// Only what ENIs no longer attached left behind (`remove --stale`).
    Stale,
    Eni(EniId),
    Mac(Mac),
}

impl Target {
    pub fn matches(&self, eni: &ImdsEni) -> bool {
        match self {
            Target::All => !eni.is_primary_device(),
            Target::Stale => false,
            Target::Eni(id) => &eni.eni_id == id,
            Target::Mac(m) => eni.mac == *m,
        }
    }

    /// Whether it names this ENI whose metadata could not be used (`--all` names none of them).
    pub fn names(&self, u: &Unusable) -> bool {
        match self {
            Target::All | Target::Stale => false,
            Target::Eni(id) => u.eni_id.as_ref() == Some(id),
            Target::Mac(m) => u.mac == *m,
        }
    }

    /// Whether the files of the ENI with this MAC and id are this target's, given the MACs
    /// attached now (for `remove`).
    pub(crate) fn owns_files_of(&self, mac: Mac, eni_id: &str, attached: &[Mac]) -> bool {
        match self {
            Target::All => true,
            Target::Stale => !attached.contains(&mac),
            Target::Eni(id) => id.to_string() == eni_id,
            Target::Mac(m) => *m == mac,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Target::All => "all secondary ENIs".into(),
            Target::Stale => "the state of detached ENIs".into(),
            Target::Eni(id) => id.to_string(),
            Target::Mac(m) => format!("the ENI with MAC {m}"),
        }
    }
}

/// Shortens hostile input before it is echoed in an error line (the agent's bound on the one
/// definition of clipping both sides share).
pub(crate) fn clip(s: &str) -> String {
    symroute_ids::clip(s, 64)
}

/// One network interface as instance metadata describes it, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImdsEni {
    pub mac: Mac,
    pub eni_id: EniId,
    pub device_number: u32,
    pub network_card: u32,
    /// Whether metadata published `network-card` for this ENI. Single-card instance types
    /// never do; on multi-card ones it can be missing for a moment after an attach
    /// (amazon-ec2-net-utils #153), and reading that as card 0 takes another ENI's table.
    #[serde(skip)]
    pub card_published: bool,
    /// Private IPv4 addresses, primary first; empty exactly when `subnet_v4` is `None`.
    pub ipv4s: Vec<Ipv4Addr>,
    /// `None` for an ENI in an IPv6-only subnet: such a subnet has no IPv4 block, and metadata
    /// publishes neither `subnet-ipv4-cidr-block` nor `local-ipv4s` for it.
    pub subnet_v4: Option<Ipv4Net>,
    /// Delegated IPv4 prefixes.
    pub prefixes_v4: Vec<Ipv4Net>,
    /// IPv6 addresses; never empty on an IPv6-only ENI.
    pub ipv6s: Vec<Ipv6Addr>,
    /// Delegated IPv6 prefixes (`ipv6-prefix`, /80s of the subnet's /64).
    pub prefixes_v6: Vec<Ipv6Net>,
    pub subnets_v6: Vec<Ipv6Net>,
    /// The VPC's IPv4 blocks (`vpc-ipv4-cidr-blocks`), the ENI's subnet always among them:
    /// destinations whose replies must leave by this ENI even where the main table has a more
    /// specific route (the same subnet on eth0).
    pub vpc_v4: Vec<Ipv4Net>,
    /// The VPC's IPv6 blocks (`vpc-ipv6-cidr-blocks`), each of the ENI's subnets among them.
    pub vpc_v6: Vec<Ipv6Net>,
}

impl ImdsEni {
    /// Route table id and rule priority, as amazon-ec2-net-utils numbers them.
    pub fn table(&self) -> u32 {
        TABLE_BASE + DEVICES_PER_CARD * self.network_card + self.device_number
    }

    /// Priority of the rules that keep VPC destinations in this ENI's table.
    pub fn vpc_rule_priority(&self) -> u32 {
        self.table() - VPC_RULE_OFFSET
    }

    /// Priority of the connmark mode's `fwmark` rules for this ENI.
    pub fn mark_rule_priority(&self) -> u32 {
        self.table() - MARK_RULE_OFFSET
    }

    /// The connmark mode's mark for flows that arrive on this ENI (see [`CONNMARK_MASK`]).
    pub fn flow_mark(&self) -> u32 {
        self.table() << 16
    }

    /// Priority of the rule that lets the main table's non-default routes (local peers) win.
    pub fn local_rule_priority(&self) -> u32 {
        self.table() - LOCAL_RULE_OFFSET
    }

    /// The primary private IPv4 and the subnet's IPv4 block; `None` on an IPv6-only ENI.
    pub fn v4(&self) -> Option<(Ipv4Addr, Ipv4Net)> {
        Some((*self.ipv4s.first()?, self.subnet_v4?))
    }

    /// An ENI in an IPv6-only subnet: routed by its IPv6 addresses alone.
    pub fn is_ipv6_only(&self) -> bool {
        self.subnet_v4.is_none()
    }

    /// The address that names the ENI: its primary IPv4, or on an IPv6-only ENI its first IPv6.
    pub fn primary_address(&self) -> IpAddr {
        match self.v4() {
            Some((ip, _)) => IpAddr::V4(ip),
            None => IpAddr::V6(self.ipv6s[0]),
        }
    }

    /// The VPC router for IPv4: the subnet's first host (none in an IPv6-only subnet, whose
    /// router is the link-local address learned from its advertisements).
    pub(crate) fn gateway_v4(&self) -> Option<Ipv4Addr> {
        self.subnet_v4.map(first_host)
    }

    pub(crate) fn is_primary_device(&self) -> bool {
        self.device_number == 0 && self.network_card == 0
    }
}

pub(crate) fn first_host(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(1))
}

/// The instance as metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Default)]
pub struct Instance {
    pub instance_id: Option<String>,
    /// MAC of the primary interface (`meta-data/mac`), which a just-attached ENI's transient
    /// device-number 0 must not be confused with.
    pub primary_mac: Option<Mac>,
    pub enis: Vec<ImdsEni>,
    /// ENIs listed by metadata that cannot be configured: each is parsed on its own, so one
    /// odd ENI never stops the others.
    pub unusable: Vec<Unusable>,
}

/// An ENI whose metadata cannot be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unusable {
    pub mac: Mac,
    /// When `interface-id` itself was readable.
    pub eni_id: Option<EniId>,
    pub kind: UnusableKind,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnusableKind {
    /// A field is still missing (a just-attached ENI): worth waiting for.
    NotYet,
    /// A value is malformed: left alone, never guessed at.
    Malformed,
}

impl Unusable {
    pub fn describe(&self) -> String {
        let who = self.eni_id.as_ref().map_or_else(
            || format!("the ENI with MAC {}", self.mac),
            |e| format!("{e} ({})", self.mac),
        );
        format!("{who}: {}", self.reason)
    }
}

impl Instance {
    /// An ENI is settled when its numbers can be trusted: the primary interface, or a secondary
    /// that no longer reports the transient device number 0 and, on an instance whose other
    /// ENIs publish `network-card`, publishes it too.
    pub(crate) fn is_settled(&self, eni: &ImdsEni) -> bool {
        self.unsettled(eni).is_none()
    }

    /// Every ENI's table, once every ENI's numbers are settled (`None` before: a table that is
    /// not known yet cannot be told from a stale one).
    pub(crate) fn settled_tables(&self) -> Option<Vec<u32>> {
        self.enis
            .iter()
            .all(|e| self.is_settled(e))
            .then(|| self.enis.iter().map(|e| e.table()).collect())
    }

    /// Why an ENI's numbers cannot be trusted yet, or `None`.
    pub(crate) fn unsettled(&self, eni: &ImdsEni) -> Option<String> {
        if self.primary_mac == Some(eni.mac) {
            return None;
        }
        let device_ok = match self.primary_mac {
            Some(_) => !eni.is_primary_device(),
            // Without meta-data/mac we cannot tell; trust device 0 only if it is alone.
            None => !eni.is_primary_device() || self.enis.len() == 1,
        };
        if !device_ok {
            return Some(format!("{} still reports device-number 0", eni.eni_id));
        }
        if !eni.card_published && self.enis.iter().any(|e| e.card_published) {
            return Some(format!(
                "{} publishes no network-card yet while other ENIs of this multi-card instance do",
                eni.eni_id
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_lowercase_as_read_and_either_case_in_foreign_config() {
        let m: Mac = "0a:1b:2c:3d:4e:5f".parse().unwrap();
        assert_eq!(m.to_string(), "0a:1b:2c:3d:4e:5f");
        assert!("0A:1b:2C:3d:4E:5f".parse::<Mac>().is_err());
        assert_eq!(Mac::from_config("0A:1b:2C:3d:4E:5f"), Some(m));
        for bad in [
            "",
            "0a:1b",
            "0a:1b:2c:3d:4e:5f:00",
            "0a:1b:2c:3d:4e:5g",
            "0a-1b-2c-3d-4e-5f",
            "a:1b:2c:3d:4e:5f0",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }

    #[test]
    fn eni_id_accepts_only_the_aws_shape() {
        assert!("eni-0a9c4b60624c0e41d".parse::<EniId>().is_ok());
        assert!("eni-12345678".parse::<EniId>().is_ok());
        for bad in [
            "eni-",
            "eni-0A9C4B60624C0E41D",
            "eni-123",
            "eni-12345678;rm -rf /",
            "i-12345678",
            "eni-1234567890",
        ] {
            assert!(bad.parse::<EniId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn clip_shortens_long_input() {
        let long = "x".repeat(1000);
        assert_eq!(clip(&long), format!("{}… (1000 bytes)", "x".repeat(64)));
    }
}
