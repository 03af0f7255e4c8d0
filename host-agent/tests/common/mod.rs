//! Shared harness for the agent's scenario tests: a simulated VPC with one instance, its IMDS
//! stand-in inside the instance namespace, and helpers to run the built agent there.

#![allow(dead_code)]

use std::net::IpAddr;
use std::process::Output;

use serde_json::Value;
use symroute_testbed::{EniMeta, EniSpec, Imds, Instance, InstanceMeta, Subnet, Vpc};

pub const AGENT: &str = env!("CARGO_BIN_EXE_symroute");
pub const PROTO: &str = "177";

pub struct Bed {
    pub vpc: Vpc,
    pub inst: Instance,
    pub imds: Imds,
    pub a: Subnet,
    pub b: Subnet,
    pub eth0: symroute_testbed::Eni,
}

pub struct Run {
    pub code: i32,
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Bed {
    /// Two subnets (A 10.0.1.0/24, B 10.0.2.0/24, each optionally with IPv6) and an instance
    /// whose eth0 (device 0) sits in A with the main default route.
    pub fn new(v6: bool) -> Bed {
        let vpc = Vpc::new().expect("vpc");
        let a = vpc
            .add_subnet("10.0.1.0/24", v6.then_some("2600:1f18:1:1::/64"))
            .expect("subnet a");
        let b = vpc
            .add_subnet("10.0.2.0/24", v6.then_some("2600:1f18:1:2::/64"))
            .expect("subnet b");
        let inst = vpc.add_instance().expect("instance");
        let mut spec = EniSpec::primary(&a).ip("10.0.1.10");
        if v6 {
            spec = spec.ipv6("2600:1f18:1:1::10");
        }
        let eth0 = vpc.attach_eni(&inst, spec).expect("eth0");
        let imds = Imds::start_in(inst.name()).expect("imds");
        imds.set_instance(&InstanceMeta::new("i-0f3fbbbc0298d1a86", eth0.mac()));
        imds.put_eni(&EniMeta::from_eni(&eth0, 0, 0, "eni-00000000000000000"));
        Bed {
            vpc,
            inst,
            imds,
            a,
            b,
            eth0,
        }
    }

    /// Attaches an ENI in the VPC and publishes it in IMDS.
    pub fn attach(
        &self,
        spec: EniSpec,
        device: u32,
        card: u32,
        eni_id: &str,
    ) -> symroute_testbed::Eni {
        let eni = self.vpc.attach_eni(&self.inst, spec).expect("attach");
        self.imds
            .put_eni(&EniMeta::from_eni(&eni, device, card, eni_id));
        eni
    }

    /// Attaches a dual-stack ENI as device 1 on card 0 and waits (bounded) until its link has
    /// learned the VPC router from an RA, where every IPv6 routing test starts.
    pub fn attach_with_router(&self, spec: EniSpec, eni_id: &str) -> symroute_testbed::Eni {
        let eni = self.attach(spec, 1, 0, eni_id);
        self.inst
            .wait_ipv6_default(eni.ifname(), 10)
            .unwrap_or_else(|e| panic!("{} learned no IPv6 default from RA: {e}", eni.ifname()));
        eni
    }

    pub fn agent(&self, args: &[&str]) -> Run {
        self.agent_with(args, &self.imds.endpoint())
    }

    pub fn agent_with(&self, args: &[&str], endpoint: &str) -> Run {
        self.agent_full(args, endpoint, &[])
    }

    /// The agent with extra environment variables.
    pub fn agent_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        self.agent_full(args, &self.imds.endpoint(), env)
    }

    fn agent_full(&self, args: &[&str], endpoint: &str, env: &[(&str, &str)]) -> Run {
        // The tests' network namespaces share this machine's filesystem: unless a test says
        // where to persist (--persist/--root), apply and remove stay live only, so that no
        // run writes this machine's network configuration.
        let mut args = args.to_vec();
        if matches!(args.first(), Some(&"apply") | Some(&"remove"))
            && !args.iter().any(|a| *a == "--persist" || *a == "--root")
        {
            args.extend(["--persist", "none"]);
        }
        let out: Output = self
            .inst
            .command(AGENT)
            .args(&args)
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
            .env("SYMROUTE_LOG", "debug")
            .envs(env.iter().copied())
            .output()
            .expect("run agent");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        Run {
            code: out.status.code().unwrap_or(-1),
            json,
            stdout,
            stderr,
        }
    }

    /// The client of subnet B that the IPv6 tests ping from (10.0.2.50, 2600:1f18:1:2::50).
    pub fn v6_client(&self) -> symroute_testbed::Host {
        self.vpc
            .add_client_with(&self.b, &["10.0.2.50", "2600:1f18:1:2::50"])
            .expect("client in subnet B")
    }

    /// The link the kernel's FIB picks for an IPv6 packet to that client, from `from` (the
    /// lookup a reply or a new connection gets; nothing is sent).
    pub fn v6_out_dev(&self, from: Option<&str>) -> String {
        let mut args = vec!["-6", "route", "get", "2600:1f18:1:2::50"];
        if let Some(src) = from {
            args.extend(["from", src]);
        }
        self.ip_json(&args)[0]["dev"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// `apply` that must succeed.
    pub fn apply(&self, extra: &[&str]) -> Run {
        let mut args = vec!["apply", "--json", "--persist", "none", "--wait", "10"];
        args.extend_from_slice(extra);
        let r = self.agent(&args);
        assert_eq!(
            r.code, 0,
            "apply {extra:?} failed:\n{}\n{}",
            r.stdout, r.stderr
        );
        assert_eq!(r.json["ok"], true);
        r
    }

    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["ip", "-j"];
        full.extend_from_slice(args);
        let out = self.inst.exec(&full).expect("ip -j");
        let s = String::from_utf8_lossy(&out.stdout);
        if s.trim().is_empty() {
            Value::Array(vec![])
        } else {
            serde_json::from_str(&s).expect("ip -j output")
        }
    }

    /// Everything routing-related in the instance, for "unchanged" comparisons.
    pub fn routing_state(&self) -> String {
        let mut s = String::new();
        for args in [
            &["-4", "rule", "show"][..],
            &["-6", "rule", "show"][..],
            &["-4", "route", "show", "table", "all"][..],
            &["-6", "route", "show", "table", "all"][..],
            &["addr", "show"][..],
        ] {
            let mut full = vec!["ip"];
            full.extend_from_slice(args);
            let out = self.inst.exec(&full).expect("ip");
            let text = String::from_utf8_lossy(&out.stdout);
            // Lifetimes of RA-learned routes and addresses tick; they are not state. Nor is the
            // order of routes the kernel adds itself when links come up (route dumps only).
            let mut lines: Vec<String> = text
                .lines()
                .map(strip_timers)
                // Link-local addresses finish duplicate detection on their own schedule.
                .filter(|l| {
                    !(l.contains("valid_lft")
                        || l.contains("preferred_lft")
                        || l.contains("fe80::"))
                })
                .collect();
            if args.contains(&"route") {
                lines.sort();
            }
            for line in lines {
                s.push_str(&line);
                s.push('\n');
            }
        }
        s
    }

    /// Rules the agent owns (protocol 177).
    pub fn our_rules(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for fam in ["-4", "-6"] {
            if let Value::Array(rules) = self.ip_json(&[fam, "rule", "show"]) {
                out.extend(
                    rules
                        .into_iter()
                        .filter(|r| r["protocol"] == PROTO || r["protocol"] == 177),
                );
            }
        }
        out
    }

    pub fn our_routes(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for fam in ["-4", "-6"] {
            if let Value::Array(routes) =
                self.ip_json(&[fam, "route", "show", "table", "all", "proto", PROTO])
            {
                out.extend(routes);
            }
        }
        out
    }

    /// The ENI's own rules `from <src> lookup <table>` (not its `to <VPC block>` rules):
    /// (source, priority).
    pub fn rules_for_table(&self, table: u32) -> Vec<(String, u64)> {
        self.our_rules()
            .into_iter()
            .filter(|r| {
                r["table"].as_str() == Some(table.to_string().as_str()) || r["table"] == table
            })
            .filter(|r| r.get("dst").is_none())
            .map(|r| {
                let src = format!(
                    "{}/{}",
                    r["src"].as_str().unwrap_or(""),
                    r["srclen"].as_u64().unwrap_or(
                        if r["src"].as_str().unwrap_or("").contains(':') {
                            128
                        } else {
                            32
                        }
                    )
                );
                (src, r["priority"].as_u64().unwrap_or(0))
            })
            .collect()
    }

    pub fn table_routes(&self, table: u32, fam: &str) -> Vec<Value> {
        match self.ip_json(&[fam, "route", "show", "table", &table.to_string()]) {
            Value::Array(v) => v,
            _ => Vec::new(),
        }
    }

    /// Main's IPv6 defaults as (device, metric), in the kernel's order.
    pub fn v6_main_defaults(&self) -> Vec<(String, u64)> {
        self.ip_json(&["-6", "route", "show", "default"])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["dev"].as_str().unwrap_or("").to_string(),
                    r["metric"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// What a daemon that handles RAs (networkd, NetworkManager) leaves: the kernel learns
    /// nothing from them on eth0 and eth1, and the defaults it had learned are gone (the test
    /// then adds the daemon's own).
    pub fn hand_ras_to_a_daemon(&self) {
        for dev in ["eth0", "eth1"] {
            self.inst
                .sysctl(&format!("net.ipv6.conf.{dev}.accept_ra"), "0")
                .expect("accept_ra");
            self.inst
                .exec(&["ip", "-6", "route", "del", "default", "dev", dev])
                .expect("delete the kernel's RA default");
        }
    }
}

fn strip_timers(line: &str) -> String {
    // `expires 1790sec` on RA routes.
    let mut out = Vec::new();
    let mut skip = false;
    for w in line.split_whitespace() {
        if skip {
            skip = false;
            continue;
        }
        // A link's queueing discipline changes when it first goes up and not back: not routing.
        if w == "expires" || w == "qdisc" {
            skip = true;
            continue;
        }
        out.push(w);
    }
    out.join(" ")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip literal")
}

/// Skips (locally) or fails (under CI) when not root.
#[macro_export]
macro_rules! need_root {
    () => {
        if !symroute_testbed::require_root() {
            return;
        }
    };
}
