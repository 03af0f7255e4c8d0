//! Everything the demo stands up: moto with the stack deployed, the simulated VPC whose
//! instances and ENIs mirror what moto holds, each instance's IMDS and SSM Agent stand-ins, and
//! the Lambda. Dropping it stops every process and deletes every namespace.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::aws_side::AwsSide;
use super::error::{ensure, Result, Step, StepError};
use super::lambda::Lambda;
use super::py::Py;
use super::ssm_agent::SsmAgent;
use super::timeline::Timeline;
use crate::moto::{self, MotoServer};
use crate::runtime_api::Answer;
use crate::{Config, Eni, EniMeta, EniSpec, Host, Imds, Instance, InstanceMeta, Subnet, Vpc};

pub const VPC_CIDR: &str = "10.0.0.0/16";
/// Primary ENIs, secondary ENIs, the client: three subnets, so replies must be routed.
pub const SUBNETS: [&str; 3] = ["10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"];
pub const CLIENT_IP: &str = "10.0.3.10";
const LAMBDA_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Options {
    /// The repository (tests/demo/, tests/stack/, infra/).
    pub repo: PathBuf,
    /// The agent as `make agent` leaves it: symroute-linux-{x86_64,aarch64} and SHA256SUMS.
    pub dist: PathBuf,
    /// The built `symroute-lambda` binary.
    pub lambda: PathBuf,
    pub stack_name: String,
    /// The SSM Agent generation the stand-ins emulate: "new" (3.3.2746.0+, parameters as
    /// SSM_<name>) or "old" (text substitution only).
    pub ssm_agent: String,
    /// Which definition of the stack is deployed into moto.
    pub stack: StackSource,
}

/// The two definitions of the stack: the SAM template and the CDK construct's example app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackSource {
    /// infra/template.yaml, after AWS's SAM transform.
    Sam,
    /// infra/cdk's example app, synthesized by `cdk synth` (needs `make cdk-build`).
    Cdk,
}

impl StackSource {
    /// The word aws_side.py and the command line use.
    pub fn as_str(self) -> &'static str {
        match self {
            StackSource::Sam => "sam",
            StackSource::Cdk => "cdk",
        }
    }

    fn origin(self) -> &'static str {
        match self {
            StackSource::Sam => "infra/template.yaml (SAM)",
            StackSource::Cdk => "infra/cdk's example app (CDK, cdk synth)",
        }
    }
}

impl Options {
    /// Defaults for a checkout: dist/agent, and the Lambda next to `exe` (same target dir).
    pub fn for_checkout(repo: PathBuf, exe_dir: &Path) -> Options {
        Options {
            dist: repo.join("dist/agent"),
            lambda: exe_dir.join("symroute-lambda"),
            repo,
            stack_name: "symroute-demo".into(),
            ssm_agent: "new".into(),
            stack: StackSource::Sam,
        }
    }
}

/// The stack as moto holds it.
pub struct Stack {
    pub document: String,
    pub bucket: String,
    /// file name (`symroute-linux-x86_64`) -> object key
    pub agent_keys: Value,
    pub rules: Vec<String>,
}

/// An ENI as EC2 (moto) describes it.
#[derive(Debug, Clone)]
pub struct MotoEni {
    pub eni_id: String,
    pub mac: String,
    pub ips: Vec<String>,
    pub subnet_id: String,
    pub vpc_id: String,
}

impl MotoEni {
    fn from(v: &Value) -> MotoEni {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        MotoEni {
            eni_id: s("eni_id"),
            mac: s("mac"),
            ips: v["ips"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            subnet_id: s("subnet_id"),
            vpc_id: s("vpc_id"),
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.ips
            .first()
            .and_then(|i| i.parse().ok())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }
}

/// One instance: its namespace, IMDS and SSM Agent stand-ins. Field order is drop order.
pub struct Node {
    pub agent: SsmAgent,
    pub imds: Imds,
    pub instance_id: String,
    pub inst: Instance,
    pub eth0: Eni,
    pub primary: MotoEni,
}

/// An attachment, in moto and in the kernel.
pub struct Attached {
    pub eni: MotoEni,
    pub instance_id: String,
    pub device_index: u32,
    pub attachment_id: String,
    pub kernel: Eni,
}

/// Field order is drop order: processes first, then the namespaces, moto last.
pub struct World {
    lambda: Mutex<Lambda>,
    aws: Mutex<AwsSide>,
    pub client: Host,
    pub vpc: Vpc,
    /// moto subnet id and its testbed twin, in [`SUBNETS`] order.
    subnets: Vec<(String, Subnet)>,
    pub stack: Stack,
    pub py: Py,
    /// The SSM Agent generation the instances' stand-ins emulate.
    ssm_agent: String,
    /// Held for its Drop: moto stops after everything that talks to it.
    _moto: MotoServer,
    work: WorkDir,
}

impl World {
    pub fn start(opts: &Options, tl: &mut Timeline) -> Result<World> {
        let python = moto::venv().join("bin/python");
        ensure(python.is_file(), "prepare", || {
            format!("no {}: run `make setup` first", python.display())
        })?;
        let sums = opts.dist.join("SHA256SUMS");
        ensure(sums.is_file(), "prepare", || {
            format!("no {}: run `make agent` first", sums.display())
        })?;
        ensure(opts.lambda.is_file(), "prepare", || {
            format!(
                "no Lambda binary at {}: run `cargo build -p symroute-lambda` first",
                opts.lambda.display()
            )
        })?;
        let work = WorkDir::create().step("prepare")?;

        let moto = MotoServer::start().step("moto")?;
        tl.step(
            "moto",
            &format!("local AWS API (moto) on {}", moto.endpoint()),
            json!({"endpoint": moto.endpoint()}),
        );
        let py = Py {
            python,
            dir: opts.repo.join("tests/demo"),
            aws_env: moto.aws_env(),
        };
        let mut aws = AwsSide::start(&py, &work.path.join("aws-side.log")).step("stack")?;
        let deployed = aws
            .call(
                "deploy",
                json!({"stack_name": opts.stack_name, "dist": opts.dist,
                       "source": opts.stack.as_str()}),
            )
            .step("stack")?;
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let rules: Vec<String> = deployed["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| s(&r["name"]))
            .collect();
        let stack = Stack {
            document: s(&deployed["outputs"]["DocumentName"]),
            bucket: s(&deployed["outputs"]["AgentBucket"]),
            agent_keys: deployed["agent_keys"].clone(),
            rules,
        };
        tl.step(
            "stack",
            &format!(
                "stack {} deployed from {}: document {}, agent in s3://{}, {} rules (their Lambda target swapped for a queue)",
                opts.stack_name,
                opts.stack.origin(),
                stack.document,
                stack.bucket,
                stack.rules.len()
            ),
            json!({"document": stack.document, "bucket": stack.bucket, "rules": stack.rules,
                   "agent_keys": stack.agent_keys}),
        );

        let net = aws
            .call("network", json!({"cidr": VPC_CIDR, "subnets": SUBNETS}))
            .step("network")?;
        let vpc = Vpc::new().step("network")?;
        let mut subnets = Vec::new();
        for (cidr, id) in SUBNETS
            .iter()
            .zip(net["subnet_ids"].as_array().into_iter().flatten())
        {
            let subnet = vpc.add_subnet(cidr, None).step("network")?;
            subnets.push((s(id), subnet));
        }
        ensure(subnets.len() == SUBNETS.len(), "network", || {
            format!("moto created {} subnets", subnets.len())
        })?;
        let client = vpc.add_client(&subnets[2].1, CLIENT_IP).step("network")?;
        tl.step(
            "network",
            &format!(
                "{} {VPC_CIDR}: subnets {} (router, source/destination check), client {CLIENT_IP}",
                s(&net["vpc_id"]),
                SUBNETS.join(" ")
            ),
            json!({"vpc_id": net["vpc_id"], "subnet_ids": net["subnet_ids"], "client": CLIENT_IP}),
        );

        // The function's configuration as the stack deployed it. moto never runs commands, so
        // the status the Lambda could follow would be invented: it answers right after sending.
        let mut env: Vec<(String, String)> = deployed["function_env"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map_or_else(|| v.to_string(), String::from),
                )
            })
            .collect();
        env.extend(moto.aws_env().into_iter().map(|(k, v)| (k.to_string(), v)));
        let lambda =
            Lambda::start(&opts.lambda, &env, &work.path.join("lambda.log")).step("lambda")?;
        tl.step(
            "lambda",
            &format!(
                "{} started behind a local Lambda Runtime API",
                opts.lambda
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
            ),
            json!({"binary": opts.lambda}),
        );
        Ok(World {
            lambda: Mutex::new(lambda),
            aws: Mutex::new(aws),
            client,
            vpc,
            subnets,
            stack,
            py,
            ssm_agent: opts.ssm_agent.clone(),
            _moto: moto,
            work,
        })
    }

    /// Calls the AWS side; errors name `step`.
    pub fn call(&self, step: &str, op: &str, args: Value) -> Result<Value> {
        self.aws
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .call(op, args)
            .step(step)
    }

    fn subnet(&self, step: &str, moto_id: &str) -> Result<&Subnet> {
        self.subnets
            .iter()
            .find(|(id, _)| id == moto_id)
            .map(|(_, s)| s)
            .ok_or_else(|| StepError::new(step, format!("unknown subnet {moto_id}")))
    }

    /// A running instance in the first subnet with its primary address `ip` (moto), and its
    /// twin: a namespace with eth0 as moto describes it, IMDS serving moto's view, and an SSM
    /// Agent stand-in polling moto for its commands.
    pub fn add_instance(&self, ip: &str, tags: Value) -> Result<Node> {
        let step = "instance";
        let made = self.call(
            step,
            "instance",
            json!({"subnet_id": self.subnets[0].0, "ip": ip, "tags": tags}),
        )?;
        let instance_id = made["instance_id"].as_str().unwrap_or_default().to_string();
        let primary = MotoEni::from(&made);
        let inst = self.vpc.add_instance().step(step)?;
        let spec = EniSpec::primary(self.subnet(step, &primary.subnet_id)?)
            .mac(&primary.mac)
            .ip(&primary.ips[0]);
        let eth0 = self.vpc.attach_eni(&inst, spec).step(step)?;
        let imds = Imds::start_in(inst.name()).step(step)?;
        imds.set_instance(&InstanceMeta::new(&instance_id, eth0.mac()));
        imds.put_eni(&meta(&eth0, &primary, 0));
        let agent = SsmAgent::start(
            &self.py,
            &instance_id,
            inst.name(),
            &imds.endpoint(),
            &self.ssm_agent,
            &self.work.path.join(&instance_id),
            &self.work.path.join(format!("ssm-agent-{instance_id}.log")),
        )
        .step(step)?;
        Ok(Node {
            agent,
            imds,
            instance_id,
            inst,
            eth0,
            primary,
        })
    }

    /// An unattached ENI in the second subnet with address `ip`.
    pub fn create_eni(&self, ip: &str) -> Result<MotoEni> {
        let made = self.call(
            "eni",
            "eni",
            json!({"subnet_id": self.subnets[1].0, "ip": ip}),
        )?;
        Ok(MotoEni::from(&made))
    }

    /// AttachNetworkInterface on moto, then what EC2 does next: the device appears in the
    /// instance (brought up as a DHCP client would, with a worse default route than eth0's)
    /// and IMDS lists it.
    pub fn attach(&self, node: &Node, eni: &MotoEni, device_index: u32) -> Result<Attached> {
        let step = "attach";
        let answer = self.call(
            step,
            "attach",
            json!({"eni_id": eni.eni_id, "instance_id": node.instance_id, "device_index": device_index}),
        )?;
        let mut spec = EniSpec::new(
            &format!("eth{device_index}"),
            self.subnet(step, &eni.subnet_id)?,
        )
        .mac(&eni.mac)
        .config(Config::Dhcp {
            default_metric: Some(100 * (device_index + 1)),
        });
        for ip in &eni.ips {
            spec = spec.ip(ip);
        }
        let kernel = self.vpc.attach_eni(&node.inst, spec).step(step)?;
        node.imds.put_eni(&meta(&kernel, eni, device_index));
        Ok(Attached {
            eni: eni.clone(),
            instance_id: node.instance_id.clone(),
            device_index,
            attachment_id: answer["attachment_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            kernel,
        })
    }

    /// DetachNetworkInterface on moto; the device leaves the instance and IMDS.
    pub fn detach(&self, node: &Node, a: &Attached) -> Result<()> {
        self.call(
            "detach",
            "detach",
            json!({"attachment_id": a.attachment_id}),
        )?;
        self.vpc.detach_eni(&a.kernel).step("detach")?;
        node.imds.remove_eni(&a.eni.mac);
        Ok(())
    }

    /// PutEvents with the CloudTrail record of the attach; returns the record's detail.
    pub fn publish_attach(&self, a: &Attached) -> Result<Value> {
        self.call(
            "event",
            "publish",
            json!({
                "event_name": "AttachNetworkInterface",
                "request_parameters": {"networkInterfaceId": a.eni.eni_id,
                                       "instanceId": a.instance_id, "deviceIndex": a.device_index},
                "response_elements": {"attachmentId": a.attachment_id},
            }),
        )
    }

    /// PutEvents with the CloudTrail record of the detach (it names only the attachment).
    pub fn publish_detach(&self, a: &Attached) -> Result<Value> {
        self.call(
            "event",
            "publish",
            json!({
                "event_name": "DetachNetworkInterface",
                "request_parameters": {"attachmentId": a.attachment_id, "force": false},
                "response_elements": {"_return": true},
            }),
        )
    }

    /// The events the rules delivered to the queue since the last call.
    pub fn delivered(&self, step: &str) -> Result<Vec<Value>> {
        let got = self.call(step, "drain", json!({"wait_seconds": 1}))?;
        Ok(got["events"].as_array().cloned().unwrap_or_default())
    }

    /// The Lambda's answer to `event`.
    pub fn invoke(&self, step: &str, event: &Value) -> Result<Answer> {
        self.lambda
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .invoke(step, event, LAMBDA_TIMEOUT)
    }

    /// Commands SSM holds for the instance whose `target` is `eni_id`.
    pub fn commands_for(&self, step: &str, instance_id: &str, eni_id: &str) -> Result<Vec<Value>> {
        let got = self.call(step, "commands", json!({"instance_id": instance_id}))?;
        Ok(got["commands"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["parameters"]["target"] == eni_id)
            .cloned()
            .collect())
    }

    /// Replaces this machine's agent in the bucket with other bytes.
    pub fn tamper_agent(&self) -> Result<()> {
        let file = format!("symroute-linux-{}", std::env::consts::ARCH);
        let key = self.stack.agent_keys[&file].as_str().unwrap_or_default();
        self.call(
            "tamper",
            "tamper",
            json!({"bucket": self.stack.bucket, "key": key}),
        )?;
        Ok(())
    }

    /// Where the helpers' logs are.
    pub fn logs(&self) -> &Path {
        &self.work.path
    }

    /// Keep the logs when the world goes (a failed run); a panicking test keeps them anyway.
    pub fn keep_logs(&self) {
        self.work
            .keep
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// IMDS metadata for an ENI with moto's identifiers.
fn meta(kernel: &Eni, eni: &MotoEni, device_number: u32) -> EniMeta {
    let mut m = EniMeta::from_eni(kernel, device_number, 0, &eni.eni_id);
    m.subnet_id = eni.subnet_id.clone();
    m.vpc_id = eni.vpc_id.clone();
    m
}

/// The demo's scratch directory: logs, each instance's downloads. Kept after a failure.
struct WorkDir {
    path: PathBuf,
    keep: std::sync::atomic::AtomicBool,
}

impl WorkDir {
    fn create() -> std::io::Result<WorkDir> {
        let path = std::env::temp_dir().join(format!(
            "symroute-demo-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&path)?;
        Ok(WorkDir {
            path,
            keep: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep.load(std::sync::atomic::Ordering::SeqCst) && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
