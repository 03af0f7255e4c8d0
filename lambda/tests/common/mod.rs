//! Shared by the integration tests and the benchmark: an AWS account in moto built through the
//! real SDK, events made from the shared fixtures with moto's ids, and the built Lambda as a
//! child process of the test.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{Filter, InstanceType, Tag};
use serde_json::{json, Value};
use symroute_testbed::moto::{self, MotoServer};
use symroute_testbed::runtime_api::RuntimeApi;

pub const DOCUMENT: &str = "symroute-ApplyRouting";
pub const LINUX_AMI: &str = "ami-1e749f67";
pub const WINDOWS_AMI: &str = "ami-03cf127a";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn fixture(name: &str) -> Value {
    let path = repo().join("tests/fixtures/events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// EventBridge ids are unique per event; the tests use them to find log lines.
fn with_id(mut ev: Value, id: &str) -> Value {
    ev["id"] = json!(id);
    ev
}

pub fn attach_event(id: &str, eni: &str, instance: &str, attachment: &str, device: i32) -> Value {
    let mut ev = fixture("attach.json");
    let d = &mut ev["detail"];
    d["requestParameters"]["networkInterfaceId"] = json!(eni);
    d["requestParameters"]["instanceId"] = json!(instance);
    d["requestParameters"]["deviceIndex"] = json!(device);
    d["responseElements"]["attachmentId"] = json!(attachment);
    with_id(ev, id)
}

pub fn failed_attach_event(id: &str, eni: &str, instance: &str) -> Value {
    let mut ev = fixture("attach-failed.json");
    ev["detail"]["requestParameters"]["networkInterfaceId"] = json!(eni);
    ev["detail"]["requestParameters"]["instanceId"] = json!(instance);
    with_id(ev, id)
}

pub fn detach_event(id: &str, attachment: &str) -> Value {
    let mut ev = fixture("detach.json");
    ev["detail"]["requestParameters"]["attachmentId"] = json!(attachment);
    with_id(ev, id)
}

/// Systems Manager's event for a command that ended on an instance.
pub fn command_event(id: &str, command_id: &str, instance: &str, status: &str) -> Value {
    let mut ev = fixture("command-invocation.json");
    let d = &mut ev["detail"];
    d["command-id"] = json!(command_id);
    d["instance-id"] = json!(instance);
    d["document-name"] = json!(DOCUMENT);
    d["status"] = json!(status);
    with_id(ev, id)
}

pub fn running_event(id: &str, instance: &str) -> Value {
    let mut ev = fixture("instance-running.json");
    ev["detail"]["instance-id"] = json!(instance);
    ev["resources"] = json!([format!(
        "arn:aws:ec2:us-east-1:123456789012:instance/{instance}"
    )]);
    with_id(ev, id)
}

/// A command as moto's ListCommands reports it.
#[derive(Debug, Clone)]
pub struct Sent {
    pub command_id: String,
    pub document: String,
    pub instance_ids: Vec<String>,
    pub action: String,
    pub target: String,
    pub comment: String,
}

/// A VPC with one subnet in a fresh moto, driven through the SDK.
pub struct Account {
    pub moto: MotoServer,
    pub rt: tokio::runtime::Runtime,
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub subnet: String,
    next_ip: Mutex<u32>,
}

impl Account {
    pub fn new() -> Self {
        let moto = MotoServer::start().unwrap_or_else(|e| panic!("{e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let creds = Credentials::new("testing", "testing", None, None, "tests");
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(moto.endpoint())
                .region(Region::new(moto::REGION))
                .credentials_provider(creds.clone())
                .build(),
        );
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(moto.endpoint())
                .region(Region::new(moto::REGION))
                .credentials_provider(creds)
                .build(),
        );
        let subnet = rt.block_on(async {
            let vpc = ec2
                .create_vpc()
                .cidr_block("10.0.0.0/16")
                .send()
                .await
                .unwrap();
            let vpc_id = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
            let subnet = ec2
                .create_subnet()
                .vpc_id(vpc_id)
                .cidr_block("10.0.0.0/16")
                .send()
                .await
                .unwrap();
            subnet.subnet().unwrap().subnet_id().unwrap().to_string()
        });
        // The symroute document, as the stack deploys it (digests and bucket are placeholders:
        // nothing downloads here); the strict layer checks every SendCommand against it.
        let mut content =
            std::fs::read_to_string(repo().join("ssm-documents/symroute.yaml")).unwrap();
        for (name, value) in [
            ("AWS::Region", moto::REGION.to_string()),
            ("AWS::URLSuffix", "amazonaws.com".into()),
            ("AgentBucket", "symroute-test-bucket".into()),
            ("AgentSha256X8664", "0".repeat(64)),
            ("AgentSha256Aarch64", "1".repeat(64)),
        ] {
            content = content.replace(&format!("@@{name}@@"), &value);
        }
        rt.block_on(
            ssm.create_document()
                .name(DOCUMENT)
                .content(content)
                .document_type(aws_sdk_ssm::types::DocumentType::Command)
                .document_format(aws_sdk_ssm::types::DocumentFormat::Yaml)
                .send(),
        )
        .unwrap();
        Account {
            moto,
            rt,
            ec2,
            ssm,
            subnet,
            next_ip: Mutex::new(10),
        }
    }

    /// moto hands out reserved addresses (x.x.x.1) unless told which to use.
    fn ip(&self) -> String {
        let mut n = self.next_ip.lock().unwrap();
        *n += 1;
        format!("10.0.{}.{}", *n / 250, 10 + *n % 250)
    }

    /// Instances whose SSM Agent has registered (Online, Linux).
    pub fn instances(&self, ami: &str, count: i32, tags: &[(&str, &str)]) -> Vec<String> {
        let ids = self.unregistered_instances(ami, count, tags);
        for id in &ids {
            self.moto.register(id).unwrap();
        }
        ids
    }

    /// Instances Systems Manager does not know.
    pub fn unregistered_instances(
        &self,
        ami: &str,
        count: i32,
        tags: &[(&str, &str)],
    ) -> Vec<String> {
        self.rt.block_on(async {
            let mut req = self
                .ec2
                .run_instances()
                .image_id(ami)
                .instance_type(InstanceType::T3Micro)
                .subnet_id(&self.subnet)
                .min_count(count)
                .max_count(count);
            if !tags.is_empty() {
                let mut spec = aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance);
                for (k, v) in tags {
                    spec = spec.tags(Tag::builder().key(*k).value(*v).build());
                }
                req = req.tag_specifications(spec.build());
            }
            let out = req.send().await.unwrap();
            out.instances()
                .iter()
                .map(|i| i.instance_id().unwrap().to_string())
                .collect()
        })
    }

    pub fn instance(&self, ami: &str, tags: &[(&str, &str)]) -> String {
        self.instances(ami, 1, tags).remove(0)
    }

    pub fn stop(&self, instance: &str) {
        self.rt
            .block_on(self.ec2.stop_instances().instance_ids(instance).send())
            .unwrap();
    }

    pub fn eni(&self, description: &str, tags: &[(&str, &str)]) -> String {
        self.rt.block_on(async {
            let mut req = self
                .ec2
                .create_network_interface()
                .subnet_id(&self.subnet)
                .private_ip_address(self.ip())
                .description(description);
            if !tags.is_empty() {
                let mut spec = aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::NetworkInterface);
                for (k, v) in tags {
                    spec = spec.tags(Tag::builder().key(*k).value(*v).build());
                }
                req = req.tag_specifications(spec.build());
            }
            let out = req.send().await.unwrap();
            out.network_interface()
                .unwrap()
                .network_interface_id()
                .unwrap()
                .to_string()
        })
    }

    pub fn attach(&self, eni: &str, instance: &str, device: i32) -> String {
        self.rt.block_on(async {
            let out = self
                .ec2
                .attach_network_interface()
                .network_interface_id(eni)
                .instance_id(instance)
                .device_index(device)
                .send()
                .await
                .unwrap();
            out.attachment_id().unwrap().to_string()
        })
    }

    pub fn detach(&self, attachment: &str) {
        self.rt
            .block_on(
                self.ec2
                    .detach_network_interface()
                    .attachment_id(attachment)
                    .send(),
            )
            .unwrap();
    }

    /// The ENI at device 0 of `instance`.
    pub fn primary_eni(&self, instance: &str) -> (String, String) {
        self.rt.block_on(async {
            let out = self
                .ec2
                .describe_network_interfaces()
                .filters(
                    Filter::builder()
                        .name("attachment.instance-id")
                        .values(instance)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            let eni = out
                .network_interfaces()
                .iter()
                .find(|e| e.attachment().and_then(|a| a.device_index()) == Some(0))
                .expect("the instance has a primary ENI");
            (
                eni.network_interface_id().unwrap().to_string(),
                eni.attachment()
                    .unwrap()
                    .attachment_id()
                    .unwrap()
                    .to_string(),
            )
        })
    }

    pub fn eni_tags(&self, eni: &str) -> HashMap<String, String> {
        self.rt.block_on(async {
            let out = self
                .ec2
                .describe_network_interfaces()
                .network_interface_ids(eni)
                .send()
                .await
                .unwrap();
            out.network_interfaces()[0]
                .tag_set()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
    }

    /// Every command SSM holds (the strict layer names their true recipients).
    pub fn commands(&self) -> Vec<Sent> {
        self.rt.block_on(async {
            let out = self.ssm.list_commands().send().await.unwrap();
            out.commands()
                .iter()
                .map(|c| {
                    let param = |k: &str| {
                        c.parameters()
                            .and_then(|p| p.get(k))
                            .and_then(|v| v.first())
                            .cloned()
                            .unwrap_or_default()
                    };
                    Sent {
                        command_id: c.command_id().unwrap_or_default().to_string(),
                        document: c.document_name().unwrap_or_default().to_string(),
                        instance_ids: c.instance_ids().to_vec(),
                        action: param("action"),
                        target: param("target"),
                        comment: c.comment().unwrap_or_default().to_string(),
                    }
                })
                .collect()
        })
    }
}

/// The built Lambda, its stdout collected line by line (JSON logs and EMF).
pub struct Lambda {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Lambda {
    pub fn spawn(
        bin: &Path,
        api: &RuntimeApi,
        aws_env: &[(&'static str, String)],
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(api.lambda_env())
            .envs(aws_env.iter().cloned())
            .env("SYMROUTE_DOCUMENT_NAME", DOCUMENT)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Self::spawn_command(cmd)
    }

    pub fn spawn_command(mut cmd: Command) -> Self {
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Lambda {
            child,
            lines,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stdout lines that are JSON objects.
    pub fn json_lines(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(Value::is_object)
            .collect()
    }

    pub fn decisions(&self) -> Vec<Value> {
        self.json_lines()
            .into_iter()
            .filter(|l| l["message"] == "decision" || l["fields"]["message"] == "decision")
            .collect()
    }

    /// The decision lines, once at least `n` of them and of the EMF lines have been read: the answer can reach the test a
    /// moment before the reader thread has drained the log line written just before it.
    pub fn wait_decisions(&self, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let d = self.decisions();
            if (d.len() >= n && self.emf().len() >= n) || std::time::Instant::now() >= deadline {
                return d;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn emf(&self) -> Vec<Value> {
        self.json_lines()
            .into_iter()
            .filter(|l| l.get("_aws").is_some())
            .collect()
    }

    /// Waits for the process to end by itself (it does after an init error).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let status = self.child.wait().unwrap();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status
    }

    /// Peak resident memory so far, from the kernel's high-water mark.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(self.child.id())
    }
}

pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

impl Drop for Lambda {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
