//! Typed instance and ENI metadata, written into the tree at the paths IMDS uses.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::eni::{Eni, EniSpec};
use crate::vpc::OWNER_ID;

/// Instance-level metadata.
#[derive(Clone, Debug)]
pub struct InstanceMeta {
    pub instance_id: String,
    /// The primary ENI's MAC (`meta-data/mac`).
    pub mac: String,
    pub region: String,
    pub availability_zone: String,
    pub instance_type: String,
}

impl InstanceMeta {
    pub fn new(instance_id: &str, primary_mac: &str) -> Self {
        InstanceMeta {
            instance_id: instance_id.to_string(),
            mac: primary_mac.to_string(),
            region: "us-east-1".to_string(),
            availability_zone: "us-east-1a".to_string(),
            instance_type: "t3.micro".to_string(),
        }
    }

    pub(crate) fn entries(&self) -> Vec<(String, String)> {
        [
            ("instance-id", self.instance_id.clone()),
            ("mac", self.mac.clone()),
            ("instance-type", self.instance_type.clone()),
            ("placement/region", self.region.clone()),
            (
                "placement/availability-zone",
                self.availability_zone.clone(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (format!("meta-data/{k}"), v))
        // The instance identity document, as IMDS serves it (cloud-init's EC2 datasource reads
        // its region and instance id; the agent never does).
        .chain(std::iter::once((
            "dynamic/instance-identity/document".to_string(),
            serde_json::to_string_pretty(&serde_json::json!({
                "accountId": "123456789012",
                "architecture": "x86_64",
                "availabilityZone": self.availability_zone,
                "imageId": "ami-0abcdef1234567890",
                "instanceId": self.instance_id,
                "instanceType": self.instance_type,
                "pendingTime": "2026-12-01T00:00:00Z",
                "privateIp": null,
                "region": self.region,
                "version": "2017-09-30",
            }))
            .expect("a JSON literal"),
        )))
        .collect()
    }
}

/// One ENI under `meta-data/network/interfaces/macs/<mac>/`.
#[derive(Clone, Debug)]
pub struct EniMeta {
    pub mac: String,
    pub device_number: u32,
    pub network_card: u32,
    /// `eni-...`
    pub interface_id: String,
    /// Primary first.
    pub local_ipv4s: Vec<Ipv4Addr>,
    /// `None` for an ENI in an IPv6-only subnet: then neither this nor `local-ipv4s` is
    /// written, as IMDS publishes neither for such an ENI.
    pub subnet_ipv4_cidr_block: Option<Ipv4Net>,
    /// Written as `ipv4-prefix` only when not empty, as IMDS does.
    pub ipv4_prefixes: Vec<Ipv4Net>,
    pub ipv6s: Vec<Ipv6Addr>,
    /// Written as `ipv6-prefix` only when not empty, as IMDS does.
    pub ipv6_prefixes: Vec<Ipv6Net>,
    /// Written only when not empty.
    pub subnet_ipv6_cidr_blocks: Vec<Ipv6Net>,
    /// `vpc-ipv4-cidr-blocks` (and its first as `vpc-ipv4-cidr-block`): the testbed's VPC is the
    /// /16 that holds the subnet (10.0.0.0/16 for 10.0.1.0/24 and 10.0.2.0/24). Written only
    /// when not empty, so a test can play an IMDS that lacks it.
    pub vpc_ipv4_cidr_blocks: Vec<Ipv4Net>,
    /// `vpc-ipv6-cidr-blocks`: the /56 around each subnet's /64, as AWS allocates VPC blocks.
    pub vpc_ipv6_cidr_blocks: Vec<Ipv6Net>,
    pub subnet_id: String,
    pub vpc_id: String,
    pub owner_id: String,
    pub local_hostname: String,
}

impl EniMeta {
    /// Metadata for the ENI described by `spec` (give it its addresses: a spec left to
    /// allocate at attach has none yet; use [`EniMeta::from_eni`] then).
    pub fn from_spec(spec: &EniSpec, device_number: u32, network_card: u32, eni_id: &str) -> Self {
        let subnet = &spec.subnet;
        EniMeta {
            mac: spec.mac.clone(),
            device_number,
            network_card,
            interface_id: eni_id.to_string(),
            local_ipv4s: spec.ipv4s.clone(),
            subnet_ipv4_cidr_block: (!spec.ipv6_only).then(|| subnet.cidr()),
            ipv4_prefixes: spec.ipv4_prefixes.clone(),
            ipv6s: spec.ipv6s.clone(),
            ipv6_prefixes: spec.ipv6_prefixes.clone(),
            subnet_ipv6_cidr_blocks: subnet.ipv6_prefix().into_iter().collect(),
            vpc_ipv4_cidr_blocks: vec![Ipv4Net::new(subnet.cidr().network(), 16)
                .expect("16 is a prefix length")
                .trunc()],
            vpc_ipv6_cidr_blocks: subnet
                .ipv6_prefix()
                .map(|p| {
                    Ipv6Net::new(p.network(), 56)
                        .expect("56 is a prefix length")
                        .trunc()
                })
                .into_iter()
                .collect(),
            subnet_id: subnet.id().to_string(),
            vpc_id: subnet.vpc_id().to_string(),
            owner_id: OWNER_ID.to_string(),
            local_hostname: spec
                .ipv4s
                .first()
                .map(|a| format!("ip-{}.ec2.internal", a.to_string().replace('.', "-")))
                .unwrap_or_default(),
        }
    }

    /// Metadata for an attached ENI, with the addresses it actually got.
    pub fn from_eni(eni: &Eni, device_number: u32, network_card: u32, eni_id: &str) -> Self {
        EniMeta::from_spec(eni.spec(), device_number, network_card, eni_id)
    }

    pub(crate) fn dir(mac: &str) -> String {
        format!("meta-data/network/interfaces/macs/{mac}")
    }

    pub(crate) fn entries(&self) -> Vec<(String, String)> {
        let lines = |items: Vec<String>| items.join("\n");
        let mut e = vec![
            ("device-number", self.device_number.to_string()),
            ("network-card", self.network_card.to_string()),
            ("interface-id", self.interface_id.clone()),
            ("mac", self.mac.clone()),
            ("subnet-id", self.subnet_id.clone()),
            ("vpc-id", self.vpc_id.clone()),
            ("owner-id", self.owner_id.clone()),
            ("local-hostname", self.local_hostname.clone()),
        ];
        if let Some(subnet) = self.subnet_ipv4_cidr_block {
            e.push((
                "local-ipv4s",
                lines(self.local_ipv4s.iter().map(|a| a.to_string()).collect()),
            ));
            e.push(("subnet-ipv4-cidr-block", subnet.to_string()));
        }
        if !self.ipv4_prefixes.is_empty() {
            e.push((
                "ipv4-prefix",
                lines(self.ipv4_prefixes.iter().map(|p| p.to_string()).collect()),
            ));
        }
        if !self.ipv6_prefixes.is_empty() {
            e.push((
                "ipv6-prefix",
                lines(self.ipv6_prefixes.iter().map(|p| p.to_string()).collect()),
            ));
        }
        if !self.ipv6s.is_empty() {
            e.push((
                "ipv6s",
                lines(self.ipv6s.iter().map(|a| a.to_string()).collect()),
            ));
        }
        if let Some(first) = self.vpc_ipv4_cidr_blocks.first() {
            e.push(("vpc-ipv4-cidr-block", first.to_string()));
            e.push((
                "vpc-ipv4-cidr-blocks",
                lines(
                    self.vpc_ipv4_cidr_blocks
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                ),
            ));
        }
        if !self.vpc_ipv6_cidr_blocks.is_empty() {
            e.push((
                "vpc-ipv6-cidr-blocks",
                lines(
                    self.vpc_ipv6_cidr_blocks
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                ),
            ));
        }
        if !self.subnet_ipv6_cidr_blocks.is_empty() {
            e.push((
                "subnet-ipv6-cidr-blocks",
                lines(
                    self.subnet_ipv6_cidr_blocks
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                ),
            ));
        }
        let dir = EniMeta::dir(&self.mac);
        e.into_iter()
            .map(|(k, v)| (format!("{dir}/{k}"), v))
            .collect()
    }
}
