//! The SSM document's script run for real in the simulated VPC's instance namespace: parameters
//! passed as SSM passes them (tests/stack/ssmdoc.py: ENV_VAR interpolation, allowedPattern),
//! the download step served from a local directory, and the agent cargo built for this
//! package's tests. Needs root (network namespaces); see `require_root`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use symroute_testbed::{
    repo_root, require_root, EniMeta, EniSpec, Imds, Instance, InstanceMeta, Subnet, Vpc,
};

const ENI_ID: &str = "eni-0a9c4b60624c0e41d";

/// What this test needs from outside the crate: the venv (`make setup`), and the agent, which
/// cargo builds for this package's integration tests (`CARGO_BIN_EXE_symroute`).
/// `SYMROUTE_TEST_AGENT=dist/agent/...` runs a shipped binary instead, e.g. the static one from
/// `make agent`.
fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let python = repo_root().join(".venv/bin/python");
    let agent = match std::env::var_os("SYMROUTE_TEST_AGENT") {
        Some(agent) => {
            let agent = repo_root().join(agent);
            assert!(
                agent.is_file(),
                "SYMROUTE_TEST_AGENT: no file {}",
                agent.display()
            );
            agent
        }
        None => PathBuf::from(env!("CARGO_BIN_EXE_symroute")),
    };
    if python.is_file() {
        return Some((python, agent));
    }
    let why = format!("needs {} (make setup-python)", python.display());
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipping: {why}");
    None
}

struct Bed {
    vpc: Vpc,
    b: Subnet,
    inst: Instance,
    imds: Imds,
    dist: PathBuf,
    work: PathBuf,
    python: PathBuf,
}

impl Bed {
    /// Instance with eth0 (device 0) in 10.0.1.0/24 and eth1 (device 1, ENI_ID) at 10.0.1.11,
    /// as a DHCP client leaves it; the agent, as `make agent` names it, in a dist directory.
    fn new(python: PathBuf, agent: &Path) -> Bed {
        let vpc = Vpc::new().expect("vpc");
        let a = vpc.add_subnet("10.0.1.0/24", None).expect("subnet a");
        let b = vpc.add_subnet("10.0.2.0/24", None).expect("subnet b");
        let inst = vpc.add_instance().expect("instance");
        let eth0 = vpc
            .attach_eni(&inst, EniSpec::primary(&a).ip("10.0.1.10"))
            .expect("eth0");
        let eth1 = vpc
            .attach_eni(&inst, EniSpec::new("eth1", &a).ip("10.0.1.11"))
            .expect("eth1");
        let imds = Imds::start_in(inst.name()).expect("imds");
        imds.set_instance(&InstanceMeta::new("i-0f3fbbbc0298d1a86", eth0.mac()));
        imds.put_eni(&EniMeta::from_eni(&eth0, 0, 0, "eni-00000000000000000"));
        imds.put_eni(&EniMeta::from_eni(&eth1, 1, 0, ENI_ID));

        let work = std::env::temp_dir().join(format!("symroute-ssmdoc-{}", vpc.prefix()));
        let dist = work.join("dist");
        std::fs::create_dir_all(&dist).expect("dist dir");
        let file = format!("symroute-linux-{}", std::env::consts::ARCH);
        std::fs::copy(agent, dist.join(file)).expect("copy agent");
        Bed {
            vpc,
            b,
            inst,
            imds,
            dist,
            work,
            python,
        }
    }

    /// The document with these parameters; `bucket` serves the download (default: dist).
    fn run(&self, name: &str, params: &[&str], bucket: Option<&Path>) -> Output {
        self.run_as("new", name, params, bucket)
    }

    /// The same, run by an SSM Agent of generation `agent` ("new" or "old").
    fn run_as(&self, agent: &str, name: &str, params: &[&str], bucket: Option<&Path>) -> Output {
        let script = repo_root().join("tests/stack/run_document.py");
        let mut cmd = Command::new(&self.python);
        cmd.arg(script)
            .arg("--dist")
            .arg(&self.dist)
            .arg("--workdir")
            .arg(self.work.join(name))
            .args(["--netns", self.inst.name(), "--agent", agent])
            .arg("--env")
            .arg(format!(
                "AWS_EC2_METADATA_SERVICE_ENDPOINT={}",
                self.imds.endpoint()
            ));
        if let Some(bucket) = bucket {
            cmd.arg("--bucket").arg(bucket);
        }
        for p in params {
            cmd.args(["--param", p]);
        }
        cmd.output().expect("run_document.py")
    }

    fn rules(&self) -> String {
        let out = self
            .inst
            .exec(&["ip", "-4", "rule", "show"])
            .expect("ip rule");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn document_configures_the_eni_and_answers_status() {
    if !require_root() {
        return;
    }
    let Some((python, agent)) = prerequisites() else {
        return;
    };
    let bed = Bed::new(python, &agent);
    let far = bed.vpc.add_client(&bed.b, "10.0.2.10").expect("client");
    // eth0 first: its neighbour entry for the router then exists, so the asymmetric replies
    // below (source 10.0.1.11 out of eth0) never make the instance ARP from eth0 with that
    // source, which the testbed's src/dst check drops, stalling eth0 for a few seconds.
    assert!(far.ping(ip("10.0.1.10"), 2, 2), "eth0 answers");
    assert!(
        !far.ping(ip("10.0.1.11"), 2, 1),
        "eth1 answered before symroute ran"
    );

    let out = bed.run(
        "apply",
        &["action=apply", &format!("target={ENI_ID}")],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(ENI_ID),
        "the JSON report names the ENI: {report}"
    );
    assert!(
        bed.rules().contains("from 10.0.1.11 lookup 10001"),
        "{}",
        bed.rules()
    );
    assert!(
        far.ping(ip("10.0.1.11"), 2, 2),
        "eth1 answers from another subnet"
    );
    assert!(far.ping(ip("10.0.1.10"), 2, 2), "eth0 still answers");

    let status = bed.run("status", &["action=status"], None);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status));
    assert!(String::from_utf8_lossy(&status.stdout).contains(ENI_ID));

    let removed = bed.run("remove", &["action=remove", "target=all"], None);
    assert_eq!(removed.status.code(), Some(0), "{}", text(&removed));
    assert!(!bed.rules().contains("lookup 10001"), "{}", bed.rules());
}

#[test]
fn an_ssm_agent_without_env_var_interpolation_configures_the_eni_through_the_fallback() {
    if !require_root() {
        return;
    }
    let Some((python, agent)) = prerequisites() else {
        return;
    };
    let bed = Bed::new(python, &agent);
    let out = bed.run_as(
        "old",
        "old-agent",
        &["action=apply", &format!("target={ENI_ID}")],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        bed.rules().contains("from 10.0.1.11 lookup 10001"),
        "{}",
        bed.rules()
    );
}

#[test]
fn tampered_agent_is_refused_and_nothing_changes() {
    if !require_root() {
        return;
    }
    let Some((python, agent)) = prerequisites() else {
        return;
    };
    let bed = Bed::new(python, &agent);
    let bucket = bed.work.join("tampered-bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let file = format!("symroute-linux-{}", std::env::consts::ARCH);
    let mut body = std::fs::read(bed.dist.join(&file)).unwrap();
    let last = body.len() - 1;
    body[last] ^= 0xff; // one bit pattern off at the end: still an ELF that would run
    std::fs::write(bucket.join(&file), body).unwrap();

    let before = bed.rules();
    let out = bed.run("tampered", &["action=apply", "target=all"], Some(&bucket));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to run"),
        "{}",
        text(&out)
    );
    assert!(
        out.stdout.is_empty(),
        "the agent printed a report: {}",
        text(&out)
    );
    assert_eq!(
        bed.rules(),
        before,
        "routing changed although the agent was refused"
    );
}

#[test]
fn hostile_target_never_reaches_the_instance() {
    if !require_root() {
        return;
    }
    let Some((python, agent)) = prerequisites() else {
        return;
    };
    let bed = Bed::new(python, &agent);
    let before = bed.rules();
    let out = bed.run(
        "hostile",
        &["action=apply", "target=all;ip rule flush"],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(64),
        "SSM refuses it: {}",
        text(&out)
    );
    assert_eq!(bed.rules(), before);
}
