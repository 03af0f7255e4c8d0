//! Plain data for the tests that need no root: ENIs as IMDS describes them and the kernel's
//! links, addresses, routes and rules as a snapshot holds them. Device `d` is `eth<d>` with
//! link index `d + 2` and MAC `0a:00:00:00:00:<d>`, in 10.0.1.0/24; device 0 is the primary.
#![allow(dead_code)]

use std::net::IpAddr;

use symroute_agent::model::{ImdsEni, Instance, Mac};
use symroute_agent::ops::{AddrSpec, KernelRule, Link, RouteSpec, RuleSpec};

pub const PRIMARY_MAC: &str = "0a:00:00:00:00:00";
pub const DHCP: u8 = 16;
pub const RA: u8 = 9;
pub const KERNEL: u8 = 2;

pub fn mac(n: u8) -> Mac {
    format!("0a:00:00:00:00:{n:02x}").parse().unwrap()
}

/// An ENI at device `device` with `ips` in 10.0.1.0/24.
pub fn eni(device: u8, ips: &[&str]) -> ImdsEni {
    ImdsEni {
        mac: mac(device),
        eni_id: format!("eni-{:017x}", device).parse().unwrap(),
        device_number: device as u32,
        network_card: 0,
        card_published: false,
        ipv4s: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        subnet_v4: Some("10.0.1.0/24".parse().unwrap()),
        prefixes_v4: vec![],
        prefixes_v6: vec![],
        ipv6s: vec![],
        subnets_v6: vec![],
        vpc_v4: vec!["10.0.0.0/16".parse().unwrap()],
        vpc_v6: vec![],
    }
}

pub fn instance(enis: Vec<ImdsEni>) -> Instance {
    Instance {
        instance_id: Some("i-0123456789abcdef0".into()),
        primary_mac: Some(PRIMARY_MAC.parse().unwrap()),
        enis,
        unusable: vec![],
    }
}

pub fn link(device: u8, up: bool) -> Link {
    Link {
        index: device as u32 + 2,
        name: format!("eth{device}"),
        mac: Some(mac(device)),
        up,
        mtu: 1500,
        ra_defrtr_metric: None,
    }
}

pub fn addr(device: u8, ip: &str, protocol: u8) -> AddrSpec {
    let ip: IpAddr = ip.parse().unwrap();
    AddrSpec {
        index: device as u32 + 2,
        dev: format!("eth{device}"),
        prefix_len: if ip.is_ipv4() { 24 } else { 128 },
        ip,
        protocol,
        label: None,
    }
}

pub fn route(
    table: u32,
    dst: &str,
    via: Option<&str>,
    device: u8,
    protocol: u8,
    metric: Option<u32>,
) -> RouteSpec {
    RouteSpec {
        table,
        dst: dst.parse().unwrap(),
        gateway: via.map(|g| g.parse().unwrap()),
        oif: device as u32 + 2,
        dev: format!("eth{device}"),
        prefsrc: None,
        scope_link: false,
        protocol,
        metric,
        nh_id: None,
    }
}

pub fn rule(priority: u32, src: &str, table: u32, protocol: u8) -> KernelRule {
    KernelRule {
        spec: Some(RuleSpec::from_src(
            priority,
            src.parse().unwrap(),
            table,
            protocol,
        )),
    }
}

/// The three rules the agent installs for one source of the ENI at `device` (in 10.0.0.0/16):
/// to the VPC via its table, main without default routes, its table.
pub fn rules3(device: u32, src: &str, protocol: u8) -> Vec<KernelRule> {
    let t = 10_000 + device;
    let src: ipnet::IpNet = src.parse().unwrap();
    vec![
        KernelRule {
            spec: Some(RuleSpec {
                dst: Some("10.0.0.0/16".parse().unwrap()),
                ..RuleSpec::from_src(t - 2000, src, t, protocol)
            }),
        },
        KernelRule {
            spec: Some(RuleSpec {
                suppress_prefixlength: Some(0),
                ..RuleSpec::from_src(t - 1000, src, 254, protocol)
            }),
        },
        rule(t, &src.to_string(), t, protocol),
    ]
}
