//! Turns raw instance-metadata values into validated `ImdsEni`s. Pure: no I/O, so it can be
//! tested and fuzzed without a server. Everything IMDS says is treated as untrusted text.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::error::{Error, Result};
use crate::model::{clip, EniId, ImdsEni, Mac, DEVICES_PER_CARD, MAX_NETWORK_CARD};

/// Most addresses one ENI can carry on the largest instance types is 50 IPv4 + 50 IPv6; anything
/// far beyond is garbage, not a big instance.
const MAX_LINES: usize = 256;

/// Reads one field of the ENI's metadata directory: `Ok(None)` when the field does not exist.
pub(crate) trait FieldSource {
    fn field(&mut self, name: &str) -> Result<Option<String>>;
}

impl<F: FnMut(&str) -> Result<Option<String>>> FieldSource for F {
    fn field(&mut self, name: &str) -> Result<Option<String>> {
        self(name)
    }
}

/// Parses the list of MAC directories (`network/interfaces/macs/`).
pub(crate) fn parse_mac_list(body: &str) -> Result<Vec<Mac>> {
    let path = "network/interfaces/macs/";
    let mut macs = Vec::new();
    for line in lines(path, body)? {
        let name = line.strip_suffix('/').unwrap_or(line);
        let mac: Mac = name
            .parse()
            .map_err(|e: String| Error::bad_metadata(path, e))?;
        if !macs.contains(&mac) {
            macs.push(mac);
        }
    }
    Ok(macs)
}

/// Parses one ENI from its metadata directory.
pub(crate) fn parse_eni(mac: Mac, src: &mut dyn FieldSource) -> Result<ImdsEni> {
    let base = format!("network/interfaces/macs/{mac}/");
    let p = |f: &str| format!("{base}{f}");
    let required = |src: &mut dyn FieldSource, f: &str| -> Result<String> {
        src.field(f)?
            .ok_or_else(|| Error::bad_metadata(p(f), "missing"))
    };

    let device_number = parse_number(
        &p("device-number"),
        &required(src, "device-number")?,
        DEVICES_PER_CARD - 1,
    )?;
    let card = src.field("network-card")?;
    let card_published = card.is_some();
    let network_card = match card {
        Some(v) => parse_number(&p("network-card"), &v, MAX_NETWORK_CARD)?,
        // Instance types with a single network card do not publish the field; on multi-card
        // ones its absence is "not yet" (Instance::unsettled), never card 0.
        None => 0,
    };
    let eni_id: EniId = single(&p("interface-id"), &required(src, "interface-id")?)?
        .parse()
        .map_err(|e: String| Error::bad_metadata(p("interface-id"), e))?;

    // IPv4: both keys, or neither on an ENI in an IPv6-only subnet (which has no IPv4 block;
    // amazon-ec2-net-utils #40, cloud-init #5283). One without the other is a directory still
    // being filled in.
    let subnet_v4 = src.field("subnet-ipv4-cidr-block")?;
    let local_v4 = src.field("local-ipv4s")?;
    let (subnet_v4, ipv4s) = match (subnet_v4, local_v4) {
        (Some(subnet), Some(local)) => {
            let (subnet, ips) = parse_v4(&p, &subnet, &local)?;
            (Some(subnet), ips)
        }
        (None, Some(_)) => return Err(Error::bad_metadata(p("subnet-ipv4-cidr-block"), "missing")),
        (Some(_), None) => return Err(Error::bad_metadata(p("local-ipv4s"), "missing")),
        (None, None) => (None, Vec::new()),
    };
    let prefixes_v4: Vec<Ipv4Net> = match src.field("ipv4-prefix")? {
        Some(v) => parse_nets(&p("ipv4-prefix"), &v)?,
        None => Vec::new(),
    };
    for pre in &prefixes_v4 {
        if !subnet_v4.is_some_and(|s| s.contains(pre)) {
            let subnet = subnet_v4.map_or_else(|| "none".to_owned(), |s| s.to_string());
            return Err(Error::bad_metadata(
                p("ipv4-prefix"),
                format!("{pre} is outside the subnet's IPv4 block ({subnet})"),
            ));
        }
    }

    let ipv6s: Vec<Ipv6Addr> = match src.field("ipv6s")? {
        Some(v) => parse_list(&p("ipv6s"), &v)?,
        None => Vec::new(),
    };
    for ip in &ipv6s {
        if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || is_link_local(ip) {
            return Err(Error::bad_metadata(
                p("ipv6s"),
                format!("{ip} is not a global address"),
            ));
        }
    }
    let subnets_v6: Vec<Ipv6Net> = match src.field("subnet-ipv6-cidr-blocks")? {
        Some(v) => parse_nets(&p("subnet-ipv6-cidr-blocks"), &v)?,
        None => Vec::new(),
    };
    let prefixes_v6: Vec<Ipv6Net> = match src.field("ipv6-prefix")? {
        Some(v) => parse_nets(&p("ipv6-prefix"), &v)?,
        None => Vec::new(),
    };
    // AWS delegates /80s of the subnet's /64; a prefix outside the subnet is not this ENI's.
    in_subnets_v6(&p("ipv6-prefix"), &prefixes_v6, &subnets_v6, |n| *n)?;
    if subnet_v4.is_none() {
        // No IPv4: an IPv6-only ENI, routed by its IPv6 addresses, which must be there and lie
        // in its subnet (AWS assigns them from the subnet's /64). Without them the directory
        // is still being filled in (a just-attached ENI), or the subnet keys are half there.
        let missing = if ipv6s.is_empty() {
            Some("local-ipv4s")
        } else if subnets_v6.is_empty() {
            Some("subnet-ipv6-cidr-blocks")
        } else {
            None
        };
        if let Some(field) = missing {
            return Err(Error::bad_metadata(p(field), "missing"));
        }
        in_subnets_v6(&p("ipv6s"), &ipv6s, &subnets_v6, |a| Ipv6Net::from(*a))?;
    }

    // The VPC's blocks: a host route to any of them from this ENI's addresses must stay on the
    // ENI. Metadata publishes them on every ENI; should it not (an old IMDS, a stand-in), the
    // subnet alone still covers the classic same-subnet case. A subnet outside every block
    // cannot happen on AWS; it is added rather than trusted less.
    let vpc_v4 = vpc_blocks(
        src,
        &base,
        "vpc-ipv4-cidr-blocks",
        subnet_v4.as_slice(),
        16,
        "AWS VPC blocks are /16 to /28",
    )?;
    let vpc_v6 = vpc_blocks(
        src,
        &base,
        "vpc-ipv6-cidr-blocks",
        &subnets_v6,
        44,
        "AWS VPC IPv6 blocks are /44 to /60",
    )?;

    Ok(ImdsEni {
        mac,
        eni_id,
        device_number,
        network_card,
        card_published,
        ipv4s,
        subnet_v4,
        prefixes_v4,
        ipv6s,
        prefixes_v6,
        subnets_v6,
        vpc_v4,
        vpc_v6,
    })
}

/// The subnet's IPv4 block and the ENI's private IPv4s, which must be host addresses in it.
fn parse_v4(
    p: &dyn Fn(&str) -> String,
    subnet: &str,
    local: &str,
) -> Result<(Ipv4Net, Vec<Ipv4Addr>)> {
    let subnet_v4: Ipv4Net = parse_net(&p("subnet-ipv4-cidr-block"), subnet)?;
    // AWS subnets are /16 to /28. Anything outside is garbage, and a /0 would make the subnet
    // route a second default route (and a gateway computed from 0.0.0.0).
    if subnet_v4.prefix_len() > 30 || subnet_v4.prefix_len() < 16 {
        return Err(Error::bad_metadata(
            p("subnet-ipv4-cidr-block"),
            format!("{subnet_v4} is not a VPC subnet (AWS subnets are /16 to /28)"),
        ));
    }
    let ipv4s: Vec<Ipv4Addr> = parse_list(&p("local-ipv4s"), local)?;
    if ipv4s.is_empty() {
        return Err(Error::bad_metadata(p("local-ipv4s"), "no address"));
    }
    for ip in &ipv4s {
        if !subnet_v4.contains(ip) || *ip == subnet_v4.network() || *ip == subnet_v4.broadcast() {
            return Err(Error::bad_metadata(
                p("local-ipv4s"),
                format!("{ip} is not a host address of the subnet {subnet_v4}"),
            ));
        }
    }
    Ok((subnet_v4, ipv4s))
}

/// The VPC's blocks of one family (`key` under the ENI's metadata directory `base`), refusing
/// any wider than `/min_len` (`rule` says why), with every subnet of the ENI among them.
fn vpc_blocks<N>(
    src: &mut dyn FieldSource,
    base: &str,
    key: &str,
    subnets: &[N],
    min_len: u8,
    rule: &str,
) -> Result<Vec<N>>
where
    N: std::str::FromStr + Copy + PartialEq + std::fmt::Display + Network,
{
    let path = format!("{base}{key}");
    let path = path.as_str();
    let mut blocks: Vec<N> = match src.field(key)? {
        Some(v) => parse_nets(path, &v)?,
        None => Vec::new(),
    };
    if let Some(n) = blocks.iter().find(|n| n.prefix_len() < min_len) {
        return Err(Error::bad_metadata(
            path,
            format!("{n} is not a VPC block ({rule})"),
        ));
    }
    for s in subnets {
        if !blocks.iter().any(|n| n.holds(s)) {
            blocks.push(*s);
        }
    }
    Ok(blocks)
}

pub(crate) fn is_link_local(ip: &Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

/// Splits a body into lines, refusing control characters and absurd sizes.
fn lines<'a>(path: &str, body: &'a str) -> Result<Vec<&'a str>> {
    if let Some(c) = body
        .chars()
        .find(|c| c.is_control() && *c != '\n' && *c != '\r')
    {
        return Err(Error::bad_metadata(
            path,
            format!("control character {c:?} in value"),
        ));
    }
    let out: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if out.len() > MAX_LINES {
        return Err(Error::bad_metadata(
            path,
            format!("{} lines, expected at most {MAX_LINES}", out.len()),
        ));
    }
    Ok(out)
}

fn single<'a>(path: &str, body: &'a str) -> Result<&'a str> {
    match lines(path, body)?.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::bad_metadata(path, "empty value")),
        _ => Err(Error::bad_metadata(
            path,
            "expected a single value, got several lines",
        )),
    }
}

fn parse_number(path: &str, body: &str, max: u32) -> Result<u32> {
    let v = single(path, body)?;
    let n: u32 = v
        .parse()
        .ok()
        .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| Error::bad_metadata(path, format!("{:?} is not a number", clip(v))))?;
    if n > max {
        return Err(Error::bad_metadata(
            path,
            format!("{n} is out of range (0..={max})"),
        ));
    }
    Ok(n)
}

fn parse_list<T: std::str::FromStr + Ord + Copy>(path: &str, body: &str) -> Result<Vec<T>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for l in lines(path, body)? {
        let v: T = l.parse().map_err(|_| {
            Error::bad_metadata(path, format!("{:?} is not an IP address", clip(l)))
        })?;
        if seen.insert(v) {
            out.push(v);
        }
    }
    Ok(out)
}

fn parse_net<N>(path: &str, body: &str) -> Result<N>
where
    N: std::str::FromStr + Copy + PartialEq + Network,
{
    let l = single(path, body)?;
    parse_one_net(path, l)
}

/// Malformed unless every item (an address, a delegated prefix) lies in one of the subnet's
/// IPv6 blocks: AWS assigns both from the subnet's /64. `net` gives an item's block (an
/// address is its /128).
fn in_subnets_v6<T: std::fmt::Display>(
    path: &str,
    items: &[T],
    subnets: &[Ipv6Net],
    net: impl Fn(&T) -> Ipv6Net,
) -> Result<()> {
    match items
        .iter()
        .find(|i| !subnets.iter().any(|n| n.contains(&net(i))))
    {
        Some(i) => Err(Error::bad_metadata(
            path,
            format!("{i} is in none of the subnet's IPv6 blocks"),
        )),
        None => Ok(()),
    }
}

fn parse_nets<N>(path: &str, body: &str) -> Result<Vec<N>>
where
    N: std::str::FromStr + Copy + PartialEq + Network,
{
    let mut out: Vec<N> = Vec::new();
    for l in lines(path, body)? {
        let n = parse_one_net(path, l)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

fn parse_one_net<N>(path: &str, l: &str) -> Result<N>
where
    N: std::str::FromStr + Copy + PartialEq + Network,
{
    let n: N = l
        .parse()
        .map_err(|_| Error::bad_metadata(path, format!("{:?} is not a CIDR block", clip(l))))?;
    if n.truncated() != n {
        return Err(Error::bad_metadata(path, format!("{l} has host bits set")));
    }
    Ok(n)
}

/// What the parser needs of `Ipv4Net`/`Ipv6Net`.
pub trait Network: Sized {
    fn truncated(&self) -> Self;
    fn prefix_len(&self) -> u8;
    /// `other` lies within this network.
    fn holds(&self, other: &Self) -> bool;
}
impl Network for Ipv4Net {
    fn truncated(&self) -> Self {
        self.trunc()
    }
    fn prefix_len(&self) -> u8 {
        Ipv4Net::prefix_len(self)
    }
    fn holds(&self, other: &Self) -> bool {
        self.contains(other)
    }
}
impl Network for Ipv6Net {
    fn truncated(&self) -> Self {
        self.trunc()
    }
    fn prefix_len(&self) -> u8 {
        Ipv6Net::prefix_len(self)
    }
    fn holds(&self, other: &Self) -> bool {
        self.contains(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn src(pairs: &[(&str, &str)]) -> impl FnMut(&str) -> Result<Option<String>> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| Ok(m.get(k).cloned())
    }

    fn good() -> Vec<(&'static str, &'static str)> {
        vec![
            ("device-number", "1"),
            ("network-card", "0"),
            ("interface-id", "eni-0a9c4b60624c0e41d"),
            ("local-ipv4s", "10.0.1.20\n10.0.1.21\n"),
            ("subnet-ipv4-cidr-block", "10.0.1.0/24"),
            ("ipv4-prefix", "10.0.1.64/28"),
            ("ipv6s", "2600:1f18::20"),
            ("subnet-ipv6-cidr-blocks", "2600:1f18::/64"),
        ]
    }

    fn mac() -> Mac {
        "02:00:00:00:00:01".parse().unwrap()
    }

    #[test]
    fn parses_a_full_eni() {
        let eni = parse_eni(mac(), &mut src(&good())).unwrap();
        assert_eq!(eni.table(), 10001);
        assert_eq!(eni.ipv4s.len(), 2);
        assert_eq!(
            eni.gateway_v4(),
            Some("10.0.1.1".parse::<Ipv4Addr>().unwrap())
        );
        assert!(!eni.is_ipv6_only());
        assert_eq!(eni.prefixes_v4.len(), 1);
        assert_eq!(eni.ipv6s.len(), 1);
    }

    #[test]
    fn subnets_outside_16_to_30_are_refused_before_anything_changes() {
        for bad in ["0.0.0.0/0", "10.0.0.0/8", "10.0.0.0/15", "10.0.1.0/31"] {
            let mut f = good();
            f.retain(|(k, _)| *k != "subnet-ipv4-cidr-block" && *k != "ipv4-prefix");
            f.push(("subnet-ipv4-cidr-block", bad));
            let err = parse_eni(mac(), &mut src(&f)).unwrap_err().to_string();
            assert!(err.contains("subnet-ipv4-cidr-block"), "{bad}: {err}");
        }
        let mut f = good();
        f.retain(|(k, _)| *k != "subnet-ipv4-cidr-block");
        f.push(("subnet-ipv4-cidr-block", "10.0.0.0/16"));
        assert!(parse_eni(mac(), &mut src(&f)).is_ok());
    }

    #[test]
    fn vpc_blocks_are_read_and_always_hold_the_subnets() {
        let mut f = good();
        f.push(("vpc-ipv4-cidr-blocks", "10.0.0.0/16\n100.64.0.0/16\n"));
        f.push(("vpc-ipv6-cidr-blocks", "2600:1f18::/56"));
        let eni = parse_eni(mac(), &mut src(&f)).unwrap();
        let v4: Vec<String> = eni.vpc_v4.iter().map(|n| n.to_string()).collect();
        assert_eq!(v4, ["10.0.0.0/16", "100.64.0.0/16"]);
        assert_eq!(
            eni.vpc_v6,
            vec!["2600:1f18::/56".parse::<Ipv6Net>().unwrap()]
        );
        // Without the keys, the subnets stand in; a block that misses the subnet gains it.
        let eni = parse_eni(mac(), &mut src(&good())).unwrap();
        assert_eq!(eni.vpc_v4, vec![eni.subnet_v4.unwrap()]);
        assert_eq!(eni.vpc_v6, eni.subnets_v6);
        let mut f = good();
        f.push(("vpc-ipv4-cidr-blocks", "172.31.0.0/16"));
        let eni = parse_eni(mac(), &mut src(&f)).unwrap();
        assert_eq!(eni.vpc_v4.len(), 2);
        assert_eq!(Some(eni.vpc_v4[1]), eni.subnet_v4);
    }

    #[test]
    fn vpc_blocks_wider_than_aws_allows_are_refused() {
        // A `to 0.0.0.0/0` rule would send every reply, local peers' included, to the ENI.
        for (k, bad) in [
            ("vpc-ipv4-cidr-blocks", "0.0.0.0/0"),
            ("vpc-ipv4-cidr-blocks", "10.0.0.0/8"),
            ("vpc-ipv6-cidr-blocks", "::/0"),
            ("vpc-ipv6-cidr-blocks", "2600::/16"),
            ("vpc-ipv4-cidr-blocks", "10.0.0.1/16"),
        ] {
            let mut f = good();
            f.push((k, bad));
            let err = parse_eni(mac(), &mut src(&f)).expect_err(bad).to_string();
            assert!(err.contains(k), "{bad}: {err}");
        }
    }

    #[test]
    fn network_card_defaults_to_zero_and_numbers_tables() {
        let mut f = good();
        f.retain(|(k, _)| *k != "network-card");
        assert_eq!(parse_eni(mac(), &mut src(&f)).unwrap().table(), 10001);
        let mut f = good();
        f[1] = ("network-card", "1");
        f[0] = ("device-number", "2");
        assert_eq!(parse_eni(mac(), &mut src(&f)).unwrap().table(), 10102);
    }

    #[test]
    fn refuses_garbage() {
        let cases: &[(&str, &str)] = &[
            ("device-number", "-1"),
            ("device-number", "1; reboot"),
            ("device-number", "100"),
            ("device-number", "+1"),
            ("network-card", "4294967296"),
            ("interface-id", "eni-$(reboot)"),
            ("local-ipv4s", "10.0.2.5"),
            ("local-ipv4s", "10.0.1.0"),
            ("local-ipv4s", "not-an-ip"),
            ("local-ipv4s", ""),
            ("subnet-ipv4-cidr-block", "10.0.1.5/24"),
            ("subnet-ipv4-cidr-block", "10.0.1.0/31"),
            ("subnet-ipv4-cidr-block", "10.0.1.0/24\n10.0.2.0/24"),
            ("ipv4-prefix", "10.9.0.0/28"),
            ("ipv6s", "fe80::1"),
            ("ipv6s", "::1"),
            ("subnet-ipv6-cidr-blocks", "2600::1/64"),
            ("local-ipv4s", "10.0.1.20\u{0}"),
        ];
        for (k, v) in cases {
            let mut f = good();
            for e in f.iter_mut() {
                if e.0 == *k {
                    e.1 = v;
                }
            }
            let err = parse_eni(mac(), &mut src(&f)).expect_err(&format!("{k}={v:?} accepted"));
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn missing_required_fields_are_named() {
        for k in [
            "device-number",
            "interface-id",
            "local-ipv4s",
            "subnet-ipv4-cidr-block",
        ] {
            let mut f = good();
            f.retain(|(n, _)| *n != k);
            let err = parse_eni(mac(), &mut src(&f)).unwrap_err();
            assert!(err.to_string().contains(k), "{err}");
        }
    }

    /// An ENI in an IPv6-only subnet, as metadata publishes it: no `local-ipv4s`, no
    /// `subnet-ipv4-cidr-block` (amazon-ec2-net-utils #40, cloud-init #5283).
    fn ipv6_only() -> Vec<(&'static str, &'static str)> {
        vec![
            ("device-number", "1"),
            ("network-card", "0"),
            ("interface-id", "eni-0a9c4b60624c0e41d"),
            ("ipv6s", "2600:1f18:0:1::20\n2600:1f18:0:1::21"),
            ("subnet-ipv6-cidr-blocks", "2600:1f18:0:1::/64"),
            ("vpc-ipv4-cidr-blocks", "10.0.0.0/16"),
            ("vpc-ipv6-cidr-blocks", "2600:1f18::/56"),
        ]
    }

    #[test]
    fn an_eni_in_an_ipv6_only_subnet_is_read_with_its_ipv6_addresses_alone() {
        let eni = parse_eni(mac(), &mut src(&ipv6_only())).unwrap();
        assert!(eni.is_ipv6_only());
        assert_eq!(eni.v4(), None);
        assert_eq!(eni.gateway_v4(), None);
        assert!(eni.ipv4s.is_empty());
        assert_eq!(eni.ipv6s.len(), 2);
        assert_eq!(eni.primary_address().to_string(), "2600:1f18:0:1::20");
        assert_eq!(eni.table(), 10001);
        // The VPC still has its IPv4 block (every VPC has one); no subnet is added to it.
        let v4: Vec<String> = eni.vpc_v4.iter().map(|n| n.to_string()).collect();
        assert_eq!(v4, ["10.0.0.0/16"]);
    }

    #[test]
    fn an_eni_with_neither_ipv4_nor_complete_ipv6_keys_is_not_there_yet() {
        // A directory still being filled in: the missing key is named ("missing" is what makes
        // it worth waiting for), never read as an ENI without addresses.
        for (drop, named) in [
            (&["ipv6s", "subnet-ipv6-cidr-blocks"][..], "local-ipv4s"),
            (&["ipv6s"][..], "local-ipv4s"),
            (&["subnet-ipv6-cidr-blocks"][..], "subnet-ipv6-cidr-blocks"),
        ] {
            let mut f = ipv6_only();
            f.retain(|(k, _)| !drop.contains(k));
            let err = parse_eni(mac(), &mut src(&f)).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(named) && text.contains("missing"),
                "{drop:?}: {text}"
            );
        }
        // Half of the IPv4 keys is a directory being filled in too, whatever IPv6 says.
        let mut f = ipv6_only();
        f.push(("subnet-ipv4-cidr-block", "10.0.1.0/24"));
        let err = parse_eni(mac(), &mut src(&f)).unwrap_err().to_string();
        assert!(
            err.contains("local-ipv4s") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn an_ipv6_only_enis_addresses_must_lie_in_its_subnet() {
        for (k, v) in [
            ("ipv6s", "2600:1f18:0:2::20"),
            ("ipv4-prefix", "10.0.1.64/28"),
            ("ipv6s", "fe80::1"),
        ] {
            let mut f = ipv6_only();
            f.retain(|(n, _)| *n != k);
            f.push((k, v));
            let err = parse_eni(mac(), &mut src(&f)).expect_err(v);
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(err.to_string().contains(k), "{err}");
        }
    }

    #[test]
    fn delegated_ipv6_prefixes_are_read_and_must_lie_in_the_subnet() {
        let mut f = good();
        f.push((
            "ipv6-prefix",
            "2600:1f18:0:0:8000::/80\n2600:1f18:0:0:8001::/80",
        ));
        let eni = parse_eni(mac(), &mut src(&f)).unwrap();
        let got: Vec<String> = eni.prefixes_v6.iter().map(|n| n.to_string()).collect();
        assert_eq!(got, ["2600:1f18:0:0:8000::/80", "2600:1f18:0:0:8001::/80"]);
        for bad in ["2600:1f19::/80", "2600:1f18::1/80", "garbage"] {
            let mut f = good();
            f.push(("ipv6-prefix", bad));
            let err = parse_eni(mac(), &mut src(&f)).expect_err(bad);
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(err.to_string().contains("ipv6-prefix"), "{err}");
        }
    }

    #[test]
    fn mac_list() {
        let macs = parse_mac_list("02:00:00:00:00:01/\n02:00:00:00:00:02/\n").unwrap();
        assert_eq!(macs.len(), 2);
        assert!(parse_mac_list("02:00:00:00:00:01/\n../../etc/\n").is_err());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// A metadata directory made of `fields`, with the value of the `field`th replaced.
        fn with_value(
            fields: &[(&str, &str)],
            field: usize,
            value: String,
        ) -> impl FnMut(&str) -> Result<Option<String>> {
            let mut f: Vec<(String, String)> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            f[field].1 = value;
            let m: HashMap<String, String> = f.into_iter().collect();
            move |k: &str| Ok(m.get(k).cloned())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            /// The same for an IPv6-only ENI's directory: a parsed ENI always has an address to
            /// route by, every IPv6 in its subnet.
            #[test]
            fn any_value_in_an_ipv6_only_eni_is_handled(field in 0usize..7, value in "\\PC{0,80}|[0-9./:a-f\\n-]{0,80}") {
                match parse_eni(mac(), &mut with_value(&ipv6_only(), field, value)) {
                    Ok(eni) => {
                        prop_assert!(eni.is_ipv6_only() && eni.ipv4s.is_empty());
                        prop_assert!(!eni.ipv6s.is_empty());
                        prop_assert!(eni.ipv6s.iter().all(|ip| eni.subnets_v6.iter().any(|n| n.contains(ip))));
                    }
                    Err(e) => {
                        prop_assert_eq!(e.exit_code(), 2);
                        prop_assert!(!e.to_string().contains('\n'));
                    }
                }
            }

            /// Any value in any field gives a parsed ENI or a one-line BadMetadata, never a panic.
            #[test]
            fn any_field_value_is_handled(field in 0usize..8, value in "\\PC{0,80}|[0-9./:a-f\\n-]{0,80}") {
                match parse_eni(mac(), &mut with_value(&good(), field, value)) {
                    Ok(eni) => {
                        prop_assert!(eni.table() < 32766);
                        prop_assert!(!eni.ipv4s.is_empty());
                        prop_assert!(eni.subnet_v4.is_some());
                    }
                    Err(e) => {
                        prop_assert_eq!(e.exit_code(), 2);
                        prop_assert!(!e.to_string().contains('\n'));
                    }
                }
            }

            #[test]
            fn any_mac_list_is_handled(body in "\\PC{0,200}") {
                let _ = parse_mac_list(&body);
            }
        }
    }
}
