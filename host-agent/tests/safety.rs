//! Never half done, never harmful, against the real kernel (the simulated VPC of routing.rs):
//! bad input changes nothing, a failure or a signal leaves the host as it was or the run complete,
//! runs are serialised by a lock nobody else can take, and `remove` leaves nothing behind.
//! Needs root (fails under CI=true).

mod common;

use common::Bed;
use symroute_testbed::{Config, EniSpec};

/// 4. remove and remove --stale leave nothing of the agent behind; eth0 untouched.
#[test]
fn remove_and_stale_leave_nothing_behind() {
    need_root!();
    let bed = Bed::new(false);
    let eth0_before = (
        bed.ip_json(&["addr", "show", "dev", "eth0"]).to_string(),
        bed.ip_json(&["-4", "route", "show", "table", "main"])
            .to_string(),
    );
    bed.attach(
        EniSpec::new("eth1", &bed.a)
            .ip("10.0.1.21")
            .config(Config::Unconfigured),
        1,
        0,
        "eni-33333333333333331",
    );
    let eth2 = bed.attach(
        EniSpec::new("eth2", &bed.b).ip("10.0.2.22"),
        2,
        0,
        "eni-33333333333333332",
    );
    bed.apply(&[]);
    // Three per address: to the VPC, local peers by main, the ENI's table.
    assert_eq!(bed.our_rules().len(), 6);

    // Detach eth2 (the kernel link goes, IMDS forgets it): its rules stay behind until pruned.
    bed.vpc.detach_eni(&eth2).unwrap();
    bed.imds.remove_eni(eth2.mac());
    assert_eq!(bed.our_rules().len(), 6, "rules outlive a detach");
    let stale = bed.agent(&["remove", "--stale", "--json"]);
    assert_eq!(stale.code, 0, "{}{}", stale.stdout, stale.stderr);
    assert_eq!(bed.rules_for_table(10002), vec![]);
    assert_eq!(
        bed.rules_for_table(10001).len(),
        1,
        "the attached ENI keeps its rules"
    );
    assert_eq!(
        bed.our_rules().len(),
        3,
        "eth2's VPC and local-peers rules went too: {:?}",
        bed.our_rules()
    );

    // remove --eni of a detached ENI (what the Lambda sends on detach) is a clean no-op.
    let gone = bed.agent(&["remove", "--eni", "eni-33333333333333332", "--json"]);
    assert_eq!(gone.code, 0, "{}{}", gone.stdout, gone.stderr);

    let rm = bed.agent(&["remove", "--eni", "eni-33333333333333331", "--json"]);
    assert_eq!(rm.code, 0, "{}{}", rm.stdout, rm.stderr);
    assert!(bed.our_rules().is_empty(), "{:?}", bed.our_rules());
    assert!(bed.our_routes().is_empty(), "{:?}", bed.our_routes());
    let eth1 = bed.ip_json(&["-4", "addr", "show", "dev", "eth1"]);
    assert!(
        eth1[0]["addr_info"]
            .as_array()
            .map(|a| a.is_empty())
            .unwrap_or(true),
        "agent-added address removed: {eth1}"
    );

    // remove --all after a fresh apply, too.
    bed.apply(&[]);
    assert!(!bed.our_rules().is_empty());
    let all = bed.agent(&["remove", "--all", "--json"]);
    assert_eq!(all.code, 0, "{}{}", all.stdout, all.stderr);
    assert!(bed.our_rules().is_empty());
    assert!(bed.our_routes().is_empty());
    let eth0_after = (
        bed.ip_json(&["addr", "show", "dev", "eth0"]).to_string(),
        bed.ip_json(&["-4", "route", "show", "table", "main"])
            .to_string(),
    );
    assert_eq!(eth0_before, eth0_after, "eth0 untouched");
}

/// 5. Bad input: documented exit code, a one-line reason, the host unchanged.
#[test]
fn bad_input_changes_nothing() {
    need_root!();
    let bed = Bed::new(false);
    let eth1 = bed.attach(
        EniSpec::new("eth1", &bed.a).ip("10.0.1.20"),
        1,
        0,
        "eni-44444444444444441",
    );
    let before = bed.routing_state();

    let one_line = |r: &common::Run| {
        let errs: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.starts_with("symroute: error:") || l.starts_with("error:"))
            .collect();
        assert_eq!(errs.len(), 1, "exactly one error line: {}", r.stderr);
    };

    for hostile in [
        "eni-$(reboot)",
        "eni-1234;rm -rf /",
        "../../etc/passwd",
        "eni-ZZZZZZZZ",
        "",
        &"a".repeat(5000),
    ] {
        let r = bed.agent(&["apply", "--eni", hostile]);
        assert_eq!(r.code, 2, "--eni {hostile:?}: {}", r.stderr);
    }
    let r = bed.agent(&["apply", "--mac", "02:00:00:00:00:zz"]);
    assert_eq!(r.code, 2);
    let r = bed.agent(&["apply", "--all", "--eni", "eni-44444444444444441"]);
    assert_eq!(r.code, 2, "conflicting targets");
    // The primary, named: asks for --force, and nothing changes.
    let r = bed.agent(&["apply", "--eni", "eni-00000000000000000", "--json"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.json["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--force"),
        "{}",
        r.stdout
    );
    assert_eq!(bed.routing_state(), before, "the primary was changed");
    let r = bed.agent(&["remove"]);
    assert_eq!(r.code, 2, "remove needs a target");
    one_line(&r);

    // Garbage from IMDS.
    let dir = format!("meta-data/network/interfaces/macs/{}", eth1.mac());
    for (field, garbage) in [
        ("device-number", "1; reboot"),
        ("local-ipv4s", "10.0.1.20\n$(curl evil)"),
        ("subnet-ipv4-cidr-block", "10.0.1.0/33"),
        ("interface-id", "eni-`id`"),
        ("local-ipv4s", "192.168.9.9"),
    ] {
        let good = bed.imds.get(&format!("{dir}/{field}")).unwrap();
        bed.imds.set(&format!("{dir}/{field}"), garbage);
        let r = bed.agent(&["apply", "--json"]);
        assert_eq!(r.code, 2, "{field}={garbage:?}: {}", r.stderr);
        assert_eq!(r.json["ok"], false);
        assert!(
            r.json["error"].as_str().unwrap().contains(field),
            "{}",
            r.json["error"]
        );
        one_line(&r);
        bed.imds.set(&format!("{dir}/{field}"), &good);
    }

    // IMDS unreachable: a closed port in the instance namespace.
    let r = bed.agent_with(&["apply", "--json"], "http://127.0.0.1:9");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.json["error"].as_str().unwrap().contains("metadata"),
        "{}",
        r.json["error"]
    );
    one_line(&r);

    // Transient IMDS errors are retried, bounded.
    bed.imds.clear_requests();
    bed.imds.fail_next(2, 503);
    let r = bed.agent(&["apply", "--json", "--dry-run"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The two refused requests were retried: the agent counts every try, as the server saw them.
    assert_eq!(
        r.json["imds_requests"].as_u64().unwrap(),
        bed.imds.request_count() as u64
    );
    assert!(
        bed.imds
            .requests()
            .iter()
            .filter(|q| q.method == "PUT")
            .count()
            == 3,
        "token tried 3 times"
    );

    // Persistent IMDS errors end in exit 1.
    bed.imds.fail_next(100, 500);
    let r = bed.agent(&["apply", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    bed.imds.fail_next(0, 500);

    // An ENI that never shows up: exit 3 after --wait.
    let r = bed.agent(&[
        "apply",
        "--eni",
        "eni-99999999999999999",
        "--wait",
        "1",
        "--json",
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    one_line(&r);
    // Listed by IMDS, but no kernel device with its MAC.
    bed.imds.put_eni(&symroute_testbed::EniMeta {
        mac: "02:99:99:99:99:99".into(),
        ..symroute_testbed::EniMeta::from_eni(&eth1, 2, 0, "eni-99999999999999998")
    });
    let r = bed.agent(&[
        "apply",
        "--eni",
        "eni-99999999999999998",
        "--wait",
        "1",
        "--json",
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.json["error"]
        .as_str()
        .unwrap()
        .contains("02:99:99:99:99:99"));
    bed.imds.remove_eni("02:99:99:99:99:99");

    assert_eq!(
        bed.routing_state(),
        before,
        "bad input left the host as it was"
    );
}

/// 6. A change the kernel refuses mid-apply rolls that ENI back; the other ENIs stay configured.
#[test]
fn fault_mid_apply_rolls_back_that_eni_and_keeps_the_others() {
    need_root!();
    let bed = Bed::new(true);
    bed.attach(
        EniSpec::new("eth1", &bed.a)
            .ip("10.0.1.20")
            .config(Config::Unconfigured),
        1,
        0,
        "eni-55555555555555551",
    );
    bed.attach(
        EniSpec::new("eth2", &bed.b)
            .ip("10.0.2.20")
            .ipv6("2600:1f18:1:2::20"),
        2,
        0,
        "eni-55555555555555552",
    );
    // The kernel refuses IPv6 routes through a link with IPv6 disabled (EACCES): eth2's v6
    // subnet route fails after eth2's IPv4 part is in (and, with --all, after eth1 is done).
    bed.inst
        .sysctl("net.ipv6.conf.eth2.disable_ipv6", "1")
        .unwrap();
    let before = bed.routing_state();

    // eth2 alone: its changes are undone, the host is exactly as before.
    let r = bed.agent(&["apply", "--eni", "eni-55555555555555552", "--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let err = r.json["error"].as_str().unwrap();
    assert!(err.contains("rolled back"), "{err}");
    assert!(
        r.stderr.contains("rolled back: "),
        "the rollback is logged: {}",
        r.stderr
    );
    assert_eq!(bed.routing_state(), before, "host exactly as before");

    // --all: one transaction per ENI. eth2's failure undoes eth2's changes only; eth1 stays
    // configured, and the answer names what failed.
    let r = bed.agent(&["apply", "--all", "--json"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let err = r.json["error"].as_str().unwrap();
    assert!(
        err.contains("eni-55555555555555552") && err.contains("the other ENIs were configured"),
        "{err}"
    );
    assert_eq!(
        bed.rules_for_table(10001),
        vec![("10.0.1.20/32".into(), 10001)]
    );
    assert!(bed.rules_for_table(10002).is_empty(), "eth2's rules stayed");
    let t2 = bed.ip_json(&["route", "show", "table", "10002"]);
    assert_eq!(t2, serde_json::json!([]), "eth2's routes stayed: {t2}");
    let statuses: Vec<String> = r.json["enis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["eni_id"].as_str().unwrap(),
                e["status"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        statuses.contains(&"eni-55555555555555552 failed".to_string()),
        "{statuses:?}"
    );
}

/// Two runs at once (two SSM commands for two ENIs) are serialised and both succeed.
#[test]
fn concurrent_runs_are_serialised() {
    need_root!();
    let bed = Bed::new(false);
    bed.attach(
        EniSpec::new("eth1", &bed.a).ip("10.0.1.20"),
        1,
        0,
        "eni-88888888888888881",
    );
    // Slow IMDS: a run holds the lock for well over a second, so two runs started together
    // overlap unless one waits for the other.
    bed.imds.delay(150);
    let (r1, r2) = std::thread::scope(|s| {
        let a = s.spawn(|| bed.agent(&["apply", "--eni", "eni-88888888888888881", "--json"]));
        let b = s.spawn(|| bed.agent(&["apply", "--eni", "eni-88888888888888881", "--json"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    bed.imds.delay(0);
    assert_eq!(r1.code, 0, "{}", r1.stderr);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    let waited = [&r1, &r2]
        .iter()
        .filter(|r| r.stderr.contains("another symroute run is in progress"))
        .count();
    assert_eq!(
        waited, 1,
        "exactly one run waited for the other:\n{}\n{}",
        r1.stderr, r2.stderr
    );
    // The second found the first's work done.
    let changes: Vec<u64> = [&r1, &r2]
        .iter()
        .map(|r| r.json["changes"].as_u64().unwrap())
        .collect();
    assert!(
        changes.contains(&0) && changes.iter().any(|c| *c > 0),
        "{changes:?}"
    );
    assert_eq!(bed.rules_for_table(10001).len(), 1);
}

/// SIGTERM (an SSM timeout, Ctrl-C) at any moment leaves either the host as it was or the whole
/// apply done, never half of it.
#[test]
fn termination_never_leaves_half_an_apply() {
    need_root!();
    let bed = Bed::new(false);
    for i in 1..=4u32 {
        let mut spec = EniSpec::new(&format!("eth{i}"), &bed.b).config(Config::Unconfigured);
        for j in 0..4 {
            spec = spec.ip(&format!("10.0.2.{}", 10 * i + j));
        }
        bed.attach(spec, i, 0, &format!("eni-{:017x}", 0xbb0 + i));
    }
    let before = bed.routing_state();
    bed.apply(&[]);
    let after = bed.routing_state();
    let reset = |bed: &Bed| {
        let r = bed.agent(&["remove", "--all", "--json"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        for i in 1..=4 {
            bed.inst
                .exec(&["ip", "link", "set", &format!("eth{i}"), "down"])
                .unwrap();
        }
        assert_eq!(bed.routing_state(), before);
    };
    // The changes happen in a window of a few milliseconds near the end of a run, whose length
    // varies with the machine's load: measure a run, then send SIGTERM at delays spread over the
    // whole run (and a little past it), in rounds, until one lands inside the window.
    let mut took = std::time::Duration::ZERO;
    for _ in 0..3 {
        reset(&bed);
        let start = std::time::Instant::now();
        bed.apply(&[]);
        took = took.max(start.elapsed());
    }
    let span_us = took.as_micros() as u64 * 6 / 5;
    // (untouched, complete after exiting on its own or being stopped after the window,
    //  complete with the signal held inside the window)
    let mut outcomes = (0, 0, 0);
    const PER_ROUND: u64 = 80;
    const ROUNDS: u64 = 6;
    let delays = (0..ROUNDS * PER_ROUND).map(|k| {
        // Each round covers the span evenly, shifted by a fraction of a step from the last.
        let (round, i) = (k / PER_ROUND, k % PER_ROUND);
        (i * span_us + round * span_us / ROUNDS) / PER_ROUND
    });
    for (k, delay_us) in delays.enumerate() {
        if outcomes.2 > 0 && (k as u64).is_multiple_of(PER_ROUND) {
            break;
        }
        reset(&bed);
        let child = bed
            .inst
            .command(common::AGENT)
            .args(["apply", "--json", "--persist", "none"])
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", bed.imds.endpoint())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(delay_us));
        // `ip netns exec` execs the agent, so the child's pid is the agent's.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let held = stderr.contains(symroute_agent::signals::ARRIVED_DURING_CHANGES);
        let state = bed.routing_state();
        if state == before {
            assert!(
                !held,
                "a signal held during changes, yet nothing changed: {stderr}"
            );
            outcomes.0 += 1;
        } else {
            assert_eq!(
                state, after,
                "SIGTERM after {delay_us} us left half an apply"
            );
            if held {
                // It acted as soon as the window closed: the run ended by the signal.
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(out.status.signal(), Some(libc::SIGTERM), "{stderr}");
                outcomes.2 += 1;
            } else {
                outcomes.1 += 1;
            }
        }
    }
    eprintln!(
        "untouched: {}, complete: {}, complete with the signal held inside the change window: {} (a run takes {took:?})",
        outcomes.0, outcomes.1, outcomes.2
    );
    // Without this the sweep could miss the window every time and prove nothing about it.
    assert!(
        outcomes.2 > 0,
        "no SIGTERM of {} landed inside the change window (a run takes {took:?})",
        outcomes.0 + outcomes.1
    );
}

/// An unprivileged user cannot hold symroute's lock and so block every run: the lock lives in
/// root's private /run/symroute. (Before, it was an abstract socket name anyone could bind.)
#[test]
fn an_unprivileged_user_cannot_squat_the_lock() {
    need_root!();
    let bed = Bed::new(false);
    bed.attach(
        EniSpec::new("eth1", &bed.a).ip("10.0.1.60"),
        1,
        0,
        "eni-99999999999999996",
    );
    // As nobody: bind the old lock name, and try to make a file where the lock lives.
    let squat = "import socket, sys, time\n\
                 s = socket.socket(socket.AF_UNIX); s.bind('\\0symroute-agent.lock')\n\
                 try:\n    open('/run/symroute/lock-squat', 'w'); print('WROTE', flush=True)\n\
                 except OSError:\n    print('REFUSED', flush=True)\n\
                 time.sleep(30)\n";
    let mut squatter = bed
        .inst
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            squat,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(squatter.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    // The agent ran before in other tests or not: either way the directory is root's.
    let run = bed.agent(&["apply", "--eni", "eni-99999999999999996", "--json"]);
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert_eq!(
        line.trim(),
        "REFUSED",
        "nobody could write where the lock lives"
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        !run.stderr.contains("another symroute run is in progress"),
        "the run waited for a squatter: {}",
        run.stderr
    );
}
