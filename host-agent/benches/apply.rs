//! `make bench` for the agent: live apply of 7 ENIs x 5 IPs from a clean state, side by side
//! with the shell baseline (bench/agent/shell-apply.sh: curl + ip, as the published SSM
//! documents do), on the same simulated VPC in one run; the no-op re-apply; peak RSS; what the
//! connmark mode costs (one `nft -f` per run for the ENIs in it).
//! Prints a table and writes bench/results/agent.md. Needs root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use symroute_testbed::{require_root, Config, EniMeta, EniSpec, Imds, InstanceMeta, Vpc};

const ENIS: u32 = 7;
const IPS: u32 = 5;
const RUNS: usize = 9;
const CHECK_RUNS: usize = 9;
const NOOP_RUNS: usize = 30;
const APPLY_ALL: &[&str] = &["apply", "--all", "--persist", "none", "--json"];

struct Measured {
    wall: Duration,
    max_rss_kib: i64,
    code: i32,
    stdout: String,
}

/// Runs a command and reads its own peak RSS from wait4's rusage.
fn measure(mut cmd: Command) -> Measured {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let start = Instant::now();
    // Reaped by wait4 below, which also reads the child's rusage.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().expect("spawn");
    let mut stdout = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    assert_eq!(r, pid, "wait4");
    Measured {
        wall,
        max_rss_kib: ru.ru_maxrss,
        code: if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        },
        stdout,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn agent_binary() -> PathBuf {
    let shipped = repo_root().join("dist/agent/symroute-linux-x86_64");
    if shipped.exists() {
        shipped
    } else {
        panic!(
            "{} missing: run `make agent` first (make bench does)",
            shipped.display()
        )
    }
}

fn main() {
    if !require_root() {
        return;
    }
    let agent = agent_binary();
    let shell = repo_root().join("bench/agent/shell-apply.sh");

    let vpc = Vpc::new().expect("vpc");
    let a = vpc.add_subnet("10.0.1.0/24", None).unwrap();
    let b = vpc.add_subnet("10.0.2.0/24", None).unwrap();
    let inst = vpc.add_instance().unwrap();
    let eth0 = vpc
        .attach_eni(&inst, EniSpec::primary(&a).ip("10.0.1.10"))
        .unwrap();
    let imds = Imds::start_in(inst.name()).unwrap();
    imds.set_instance(&InstanceMeta::new("i-0123456789abcdef0", eth0.mac()));
    imds.put_eni(&EniMeta::from_eni(&eth0, 0, 0, "eni-00000000000000000"));
    let mut probe = Vec::new();
    for i in 1..=ENIS {
        let subnet = if i % 2 == 0 { &a } else { &b };
        let net = if i % 2 == 0 { 1 } else { 2 };
        let mut spec = EniSpec::new(&format!("eth{i}"), subnet).config(Config::Dhcp {
            default_metric: None,
        });
        for j in 0..IPS {
            spec = spec.ip(&format!("10.0.{net}.{}", 20 + i * 10 + j));
        }
        let eni = vpc.attach_eni(&inst, spec).unwrap();
        imds.put_eni(&EniMeta::from_eni(&eni, i, 0, &format!("eni-{:017x}", i)));
        probe.push(eni.ipv4s().last().copied().unwrap());
    }
    let client = vpc.add_client(&a, "10.0.1.250").unwrap();
    let endpoint = imds.endpoint();

    // Back to the state DHCP left: no rules, tables or secondary addresses of anyone.
    let reset = || {
        let mut script = String::new();
        for i in 1..=ENIS {
            let t = 10000 + i;
            script.push_str(&format!(
                "while ip rule del pref {t} 2>/dev/null; do :; done; ip route flush table {t} 2>/dev/null; \
                 for a in $(ip -o -4 addr show dev eth{i} | awk '{{print $4}}' | tail -n +2); do ip addr del $a dev eth{i}; done; "
            ));
        }
        inst.exec(&["sh", "-c", &script]).expect("reset");
    };
    // The agent is the measured process itself (entered into the namespace before exec), so
    // wait4's peak RSS is the agent's, not `ip netns exec`'s.
    let agent_cmd = |args: &[&str]| {
        let mut c = inst
            .command_direct(&agent)
            .expect("the instance's namespace");
        c.args(args)
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)
            .env("SYMROUTE_LOG", "warn");
        c
    };
    let shell_cmd = || {
        let mut c = inst.command("bash");
        c.arg(shell.to_str().unwrap())
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint);
        c
    };
    let all_answer = || probe.iter().all(|ip| client.ping((*ip).into(), 1, 2));

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut peak_rss = 0;
    for run in 0..RUNS {
        reset();
        if run == 0 {
            assert!(
                !all_answer(),
                "before any apply, the secondary addresses do not answer"
            );
        }
        let m = measure(agent_cmd(APPLY_ALL));
        assert_eq!(m.code, 0, "symroute apply failed: {}", m.stdout);
        peak_rss = peak_rss.max(m.max_rss_kib);
        ours.push(m.wall);
        if run == 0 {
            assert!(all_answer(), "after symroute apply every ENI answers");
        }
        reset();
        let m = measure(shell_cmd());
        assert_eq!(m.code, 0, "shell baseline failed");
        theirs.push(m.wall);
        if run == 0 {
            assert!(all_answer(), "after the shell baseline every ENI answers");
        }
    }

    reset();
    let first = measure(agent_cmd(APPLY_ALL));
    assert_eq!(first.code, 0);
    let mut noop = Vec::new();
    let mut noop_rss = 0;
    for _ in 0..NOOP_RUNS {
        let m = measure(agent_cmd(APPLY_ALL));
        assert_eq!(m.code, 0);
        let v: serde_json::Value = serde_json::from_str(&m.stdout).unwrap();
        assert_eq!(v["changes"], 0, "a re-apply must change nothing");
        noop_rss = noop_rss.max(m.max_rss_kib);
        noop.push(m.wall);
    }
    let status = measure(agent_cmd(&["status", "--json"]));
    assert_eq!(status.code, 0);
    let requests = |m: &Measured| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&m.stdout).unwrap();
        v["imds_requests"].as_u64().unwrap()
    };
    let noop_requests = requests(&measure(agent_cmd(APPLY_ALL)));

    // The periodic check (`symroute check`), after an apply that kept the fixed metadata under
    // a scratch root: what it asks IMDS, and how long its paced run takes.
    let scratch = std::env::temp_dir().join(format!("symroute-bench-{}", std::process::id()));
    for d in [
        "run",
        "etc/systemd/system",
        "etc/udev/rules.d",
        "usr/local/sbin",
    ] {
        std::fs::create_dir_all(scratch.join(d)).unwrap();
    }
    let scratch_arg = scratch.to_str().unwrap();
    // The values are kept only where the check is installed.
    let install = measure(agent_cmd(&["install", "--json", "--root", scratch_arg]));
    assert_eq!(install.code, 0, "{}", install.stdout);
    let keep = measure(agent_cmd(&[
        "apply",
        "--json",
        "--persist",
        "none",
        "--root",
        scratch_arg,
    ]));
    assert_eq!(keep.code, 0, "{}", keep.stdout);
    let mut checks = Vec::new();
    let mut check_requests = 0;
    for _ in 0..CHECK_RUNS {
        let m = measure(agent_cmd(&[
            "check",
            "--json",
            "--persist",
            "none",
            "--root",
            scratch_arg,
        ]));
        assert_eq!(m.code, 0, "{}", m.stdout);
        let v: serde_json::Value = serde_json::from_str(&m.stdout).unwrap();
        assert_eq!(v["changes"], 0, "a check with no drift must change nothing");
        check_requests = requests(&m);
        checks.push(m.wall);
    }
    std::fs::remove_dir_all(&scratch).unwrap();

    // The connmark mode on every ENI (from the configured state), then re-applies that keep it:
    // each rewrites the ENIs' nftables tables in one `nft -f`.
    let on_args: Vec<&str> = APPLY_ALL
        .iter()
        .copied()
        .chain(["--connmark", "on"])
        .collect();
    let on = measure(agent_cmd(&on_args));
    assert_eq!(on.code, 0, "apply --connmark on failed: {}", on.stdout);
    let mut kept = Vec::new();
    let mut kept_rss = 0;
    for _ in 0..NOOP_RUNS {
        let m = measure(agent_cmd(APPLY_ALL));
        assert_eq!(m.code, 0);
        let v: serde_json::Value = serde_json::from_str(&m.stdout).unwrap();
        assert_eq!(
            v["changes"], 0,
            "a re-apply in the mode must change no rule"
        );
        assert_eq!(v["enis"][0]["connmark"], true);
        kept_rss = kept_rss.max(m.max_rss_kib);
        kept.push(m.wall);
    }
    let off_args: Vec<&str> = APPLY_ALL
        .iter()
        .copied()
        .chain(["--connmark", "off"])
        .collect();
    let off = measure(agent_cmd(&off_args));
    assert_eq!(off.code, 0);
    reset();

    let ours_med = median(ours.clone());
    let theirs_med = median(theirs.clone());
    let speedup = theirs_med.as_secs_f64() / ours_med.as_secs_f64();
    let noop_med = median(noop.clone());
    let rss_mib = peak_rss.max(noop_rss).max(status.max_rss_kib) as f64 / 1024.0;
    let size = std::fs::metadata(&agent).map(|m| m.len()).unwrap_or(0);
    let aarch64 = std::fs::metadata(repo_root().join("dist/agent/symroute-linux-aarch64"))
        .map(|m| m.len())
        .unwrap_or(0);

    let table = format!(
        "## Host agent\n\n\
Live apply of {ENIS} ENIs x {IPS} IPv4 addresses from a clean state (addresses, tables, rules), in the simulated VPC, \
median of {RUNS} runs each, alternating; agent = the shipped static binary (dist/agent).\n\n\
| measurement | symroute | shell baseline (curl + ip) | target |\n\
|---|---|---|---|\n\
| live apply, 7 ENIs x 5 IPs (median) | {} | {} | symroute >= 5x faster: **{:.1}x** {} |\n\
| live apply (min / max) | {} / {} | {} / {} | |\n\
| no-op re-apply (median of {NOOP_RUNS}) | {} | | < 20 ms {} |\n\
| peak RSS (apply, re-apply, status) | {:.2} MiB | | < 10 MiB {} |\n\
| binary size, stripped (x86_64 / aarch64) | {:.2} / {:.2} MiB | | <= 3 MiB, aim < 2 MiB {} |\n\
| connmark on, 7 ENIs (7 fwmark rules, one nft transaction) | {} | | (none set) |\n\
| re-apply with the mode on (median of {NOOP_RUNS}; nft rewrites 7 tables) | {} | | (none set) |\n\
| connmark off, 7 ENIs | {} | | |\n\
| peak RSS with the mode (the larger of the agent and the nft it runs: wait4 counts reaped children) | {:.2} MiB | | (the agent's < 10 MiB is the row above; this is nft's) |\n\
| IMDS requests: no-op re-apply / periodic check (`symroute check`), 8 ENIs | {noop_requests} / {check_requests} | | fewer: only what can change |\n\
| periodic check, no drift (median of {CHECK_RUNS}; paced to 200 requests/s) | {} | | (none set: paced on purpose) |\n",
        ms(ours_med),
        ms(theirs_med),
        speedup,
        ok(speedup >= 5.0),
        ms(*ours.iter().min().unwrap()),
        ms(*ours.iter().max().unwrap()),
        ms(*theirs.iter().min().unwrap()),
        ms(*theirs.iter().max().unwrap()),
        ms(noop_med),
        ok(noop_med < Duration::from_millis(20)),
        rss_mib,
        ok(rss_mib < 10.0),
        size as f64 / 1048576.0,
        aarch64 as f64 / 1048576.0,
        ok(size <= 2 * 1048576 && aarch64 <= 2 * 1048576),
        ms(on.wall),
        ms(median(kept)),
        ms(off.wall),
        on.max_rss_kib.max(kept_rss) as f64 / 1024.0,
        ms(median(checks)),
    );
    println!("{table}");
    let out = repo_root().join("bench/results/agent.md");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, table).unwrap();
    eprintln!("written {}", out.display());
}

fn ok(b: bool) -> &'static str {
    if b {
        "(met)"
    } else {
        "(NOT met)"
    }
}
