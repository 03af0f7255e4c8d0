//! `make bench-lambda`: cold start, per-event time and peak RSS of the Rust Lambda and of the
//! Python/boto3 seed handler (under awslambdaric), both against one moto (behind the strict
//! layer) through the same local Runtime API server; and the function's own time per event in a
//! burst of attach events handed over at once. Writes a Markdown table.
//!
//! lambda-bench --rust BIN --python-handler bench/lambda/handler.py --out bench/results/lambda.md
//!              [--runs 5] [--events 30] [--burst 200]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{attach_event, Account, Lambda, DOCUMENT, LINUX_AMI};
use serde_json::Value;
use symroute_testbed::runtime_api::RuntimeApi;

const TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    rust: PathBuf,
    python_handler: PathBuf,
    out: PathBuf,
    runs: usize,
    events: usize,
    burst: usize,
}

fn args() -> Args {
    let mut a = Args {
        rust: PathBuf::new(),
        python_handler: PathBuf::new(),
        out: PathBuf::from("bench/results/lambda.md"),
        runs: 5,
        events: 30,
        burst: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rust" => a.rust = value.into(),
            "--python-handler" => a.python_handler = value.into(),
            "--out" => a.out = value.into(),
            "--runs" => a.runs = value.parse().expect("--runs N"),
            "--events" => a.events = value.parse().expect("--events N"),
            "--burst" => a.burst = value.parse().expect("--burst N"),
            _ => panic!("unknown flag {flag}"),
        }
    }
    assert!(
        a.rust.is_file(),
        "--rust {}: no such binary",
        a.rust.display()
    );
    assert!(
        a.python_handler.is_file(),
        "--python-handler {}: no such file",
        a.python_handler.display()
    );
    a
}

#[derive(Default)]
struct Sample {
    cold: Vec<Duration>,
    warm: Vec<Duration>,
    rss_kib: Vec<u64>,
}

/// The same events with ids of their own: a second delivery of one event id is found, not sent.
fn fresh(events: &[Value], tag: &str) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e["id"] = Value::from(format!("{}-{tag}", e["id"].as_str().unwrap_or("ev")));
            e
        })
        .collect()
}

/// One cold start: the first event is queued before the process starts, so the time to its answer
/// is process start to first event answered. Then `events` more, one at a time, warm.
fn run_once(cmd: Command, api: &RuntimeApi, events: &[Value], sample: &mut Sample) {
    let first = api.push(&events[0]);
    let start = Instant::now();
    let lambda = Lambda::spawn_command(cmd);
    let answer = api.wait(&first, TIMEOUT).unwrap();
    assert!(answer.is_ok(), "cold event failed: {}", answer.text());
    sample.cold.push(answer.at - start);
    for ev in &events[1..] {
        let t = Instant::now();
        let id = api.push(ev);
        let answer = api.wait(&id, TIMEOUT).unwrap();
        assert!(answer.is_ok(), "event failed: {}", answer.text());
        sample.warm.push(answer.at - t);
    }
    sample
        .rss_kib
        .push(lambda.peak_rss_kib().expect("VmHWM of a live process"));
}

fn base_command(program: &Path, api: &RuntimeApi, account: &Account) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(api.lambda_env())
        .envs(account.moto.aws_env())
        .env("SYMROUTE_DOCUMENT_NAME", DOCUMENT)
        // The seed's "send and return" mode, as the Rust function always is: neither waits on
        // the command (which stays Pending here: no agent runs it).
        .env("SYMROUTE_WAIT_SECONDS", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(v: &[Duration], p: f64) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

struct BurstResult {
    ms_per_event: f64,
    wall: Duration,
}

/// `--burst` attach events pushed at once to one warm Rust function.
fn burst(a: &Args, account: &Account) -> BurstResult {
    let instances = account.instances(LINUX_AMI, 10, &[]);
    let events: Vec<Value> = (0..a.burst)
        .map(|n| {
            let instance = &instances[n % instances.len()];
            let device = 1 + (n / instances.len()) as i32;
            let eni = account.eni(&format!("burst {n}"), &[]);
            let att = account.attach(&eni, instance, device);
            attach_event(&format!("burst-{n}"), &eni, instance, &att, device)
        })
        .collect();
    let api = RuntimeApi::start().unwrap();
    let lambda = Lambda::spawn_command(base_command(&a.rust, &api, account));
    // Warm it first, so the burst measures handling, not the cold start.
    let warm = api.push(&attach_event(
        "warm-up",
        "eni-00000000",
        "i-00000000",
        "eni-attach-00000000",
        1,
    ));
    let _ = api.wait(&warm, TIMEOUT);
    let before = lambda.emf().len();
    let start = Instant::now();
    let ids: Vec<String> = events.iter().map(|e| api.push(e)).collect();
    let answers = api.wait_all(&ids, TIMEOUT * 5).unwrap();
    let wall = start.elapsed();
    assert!(answers.iter().all(|x| x.is_ok()), "a burst event failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while lambda.emf().len() < before + a.burst && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let total: f64 = lambda.emf()[before..]
        .iter()
        .filter_map(|m| m["Latency"].as_f64())
        .sum();
    BurstResult {
        ms_per_event: total / a.burst as f64,
        wall,
    }
}

fn main() {
    let a = args();
    let account = Account::new();
    let instance = account.instance(LINUX_AMI, &[]);
    let events: Vec<Value> = (0..a.events + 1)
        .map(|n| {
            let eni = account.eni(&format!("bench {n}"), &[]);
            let att = account.attach(&eni, &instance, 1 + n as i32);
            attach_event(&format!("bench-{n}"), &eni, &instance, &att, 1 + n as i32)
        })
        .collect();

    let python = symroute_testbed::moto::venv().join("bin/python");
    let handler_dir = a.python_handler.parent().unwrap().canonicalize().unwrap();
    let module = a
        .python_handler
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let (mut rust, mut py) = (Sample::default(), Sample::default());
    // Interleaved, so drift on a shared machine hits both alike.
    for run in 0..a.runs {
        let api = RuntimeApi::start().unwrap();
        run_once(
            base_command(&a.rust, &api, &account),
            &api,
            &fresh(&events, &format!("rust{run}")),
            &mut rust,
        );
        let api = RuntimeApi::start().unwrap();
        let mut cmd = base_command(&python, &api, &account);
        cmd.args(["-m", "awslambdaric", &format!("{module}.handler")])
            .current_dir(&handler_dir);
        run_once(cmd, &api, &fresh(&events, &format!("py{run}")), &mut py);
    }
    let burst = burst(&a, &account);

    let cold_ratio = ms(percentile(&rust.cold, 0.5)) / ms(percentile(&py.cold, 0.5));
    let rust_rss = *rust.rss_kib.iter().max().unwrap() as f64 / 1024.0;
    let py_rss = *py.rss_kib.iter().max().unwrap() as f64 / 1024.0;
    let size = std::fs::metadata(&a.rust)
        .map(|m| m.len() as f64 / 1e6)
        .unwrap_or(0.0);
    let row = |name: &str, f: &dyn Fn(&Sample) -> String| {
        format!("| {name} | {} | {} |\n", f(&rust), f(&py))
    };
    let mut md = String::from("## Lambda: Rust vs the Python/boto3 seed\n\n");
    md += &format!(
        "Both against one moto 5.2.5 on loopback through the same local Runtime API server \
         (TCP_NODELAY); {} cold starts each, interleaved; {} warm attach events per start \
         (each: DescribeNetworkInterfaces, DescribeInstances, DescribeInstanceInformation, \
         CreateTags, ListCommands, SendCommand; the Python seed, run with \
         SYMROUTE_WAIT_SECONDS=0, makes four of these calls: no exactly-once lookup, no \
         managed-instance check). Warm per-event times are mostly the local AWS stand-in \
         (moto behind the strict layer, both Python) answering; compare them with that in \
         mind. Cold start = process start to first event answered. \
         {} cores, `{}`.\n\n",
        a.runs,
        a.events,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        Command::new("uname")
            .arg("-sr")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
    );
    md += "| | Rust (release build) | Python + boto3 (awslambdaric) |\n|---|---:|---:|\n";
    md += &row("cold start, median (min–max)", &|s| {
        format!(
            "{:.0} ms ({:.0}–{:.0})",
            ms(percentile(&s.cold, 0.5)),
            ms(percentile(&s.cold, 0.0)),
            ms(percentile(&s.cold, 1.0))
        )
    });
    md += &row("per event warm, median / p90", &|s| {
        format!(
            "{:.1} / {:.1} ms",
            ms(percentile(&s.warm, 0.5)),
            ms(percentile(&s.warm, 0.9))
        )
    });
    md += &row("peak RSS (VmHWM), worst run", &|s| {
        format!(
            "{:.1} MiB",
            *s.rss_kib.iter().max().unwrap() as f64 / 1024.0
        )
    });
    md += &format!("| release binary (x86_64, stripped) | {size:.1} MB | – |\n\n");
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    md += &format!(
        "Burst: {} attach events (10 instances) handed to one warm Rust function at once: \
         {:.1} ms of function time per event (the sum of its own per-event latency over all \
         events, what Lambda bills), all {} answered in {:.1} s of wall time. The function sends \
         and returns; a command's outcome comes back as its own status-change event. Before \
         this, each event held its execution until the command ended (bounded by \
         WaitSeconds=120, plus up to 20 s for the attachment and 60 s for SSM registration): \
         on AWS, seconds to minutes per event.\n\n",
        a.burst,
        burst.ms_per_event,
        a.burst,
        burst.wall.as_secs_f64()
    );
    md += &format!(
        "Targets: Rust cold start at most a fifth of Python's: {:.2}× ({}); Rust peak RSS under \
         40 MiB: {rust_rss:.1} MiB ({}). Python peak RSS {py_rss:.1} MiB.\n",
        cold_ratio,
        verdict(cold_ratio <= 0.2),
        verdict(rust_rss < 40.0)
    );
    print!("{md}");
    std::fs::write(&a.out, &md).unwrap_or_else(|e| panic!("{}: {e}", a.out.display()));
    eprintln!("wrote {}", a.out.display());
}
