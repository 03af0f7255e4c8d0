//! The agent against the real kernel: a simulated VPC in network namespaces whose bridge
//! filter drops what the VPC's source/destination check drops, an instance with ENIs as veths,
//! clients in other namespaces, and an IMDSv2 stand-in. Needs root (fails under CI=true).

mod common;

use common::{ip, Bed};
use symroute_testbed::{Config, EniSpec};

/// 1. The classic case: eth0 and eth1 in one subnet.
#[test]
fn classic_same_subnet_secondary_answers_after_apply() {
    need_root!();
    let bed = Bed::new(false);
    let eth1 = bed.attach(
        EniSpec::new("eth1", &bed.a).ip("10.0.1.20"),
        1,
        0,
        "eni-0a9c4b60624c0e41d",
    );
    let far = bed.vpc.add_client(&bed.b, "10.0.2.50").expect("client b");
    let near = bed.vpc.add_client(&bed.a, "10.0.1.50").expect("client a");
    let eth1_ip = ip(&eth1.primary_ipv4().to_string());
    let eth0_ip = ip("10.0.1.10");

    assert!(
        far.ping(eth0_ip, 1, 2),
        "eth0 must answer before apply (testbed sanity)"
    );
    let drops_before = bed.vpc.srcdst_drops().unwrap();
    assert!(
        !far.ping(eth1_ip, 2, 1),
        "eth1 must NOT answer a client in another subnet before apply"
    );
    assert!(
        bed.vpc.srcdst_drops().unwrap() > drops_before,
        "the VPC's src/dst check dropped the replies"
    );
    // (A same-subnet client may or may not get answers before apply: the kernel picks between
    // eth0's and eth1's identical connected routes by insertion order. After apply it must.)

    // A 10 ms ping stream to eth0 runs across the whole apply.
    let stream = far.spawn_ping_stream(eth0_ip, 10);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let run = bed.apply(&[]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stats = stream.stop().expect("ping stream");
    assert!(stats.sent >= 30, "ping stream ran: {stats:?}");
    assert_eq!(stats.lost(), 0, "eth0 lost packets during apply: {stats:?}");

    assert!(
        far.ping(eth1_ip, 1, 2),
        "eth1 answers another subnet after apply"
    );
    assert!(
        near.ping(eth1_ip, 1, 2),
        "eth1 answers its own subnet after apply"
    );
    assert!(far.ping(eth0_ip, 1, 2), "eth0 still answers");

    let eni = &run.json["enis"][0];
    assert_eq!(eni["eni_id"], "eni-0a9c4b60624c0e41d");
    assert_eq!(eni["interface"], "eth1");
    assert_eq!(eni["table"], 10001);
    assert_eq!(eni["symmetric"], true, "{}", run.stdout);
    assert!(run.json["changes"].as_u64().unwrap() >= 3);
    assert_eq!(
        bed.rules_for_table(10001),
        vec![("10.0.1.20/32".to_string(), 10001)]
    );
    let routes = bed.table_routes(10001, "-4");
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "10.0.1.1" && r["dev"] == "eth1"),
        "{routes:?}"
    );
    assert!(
        routes.iter().any(|r| r["dst"] == "10.0.1.0/24"
            && r["prefsrc"] == "10.0.1.20"
            && r["scope"] == "link"),
        "{routes:?}"
    );

    // The main table's preferred default stays on eth0.
    let main = bed.ip_json(&["-4", "route", "show", "default"]);
    assert_eq!(main[0]["dev"], "eth0", "{main:?}");

    // A second apply changes nothing.
    let before = bed.routing_state();
    let again = bed.apply(&[]);
    assert_eq!(again.json["changes"], 0, "{}", again.stdout);
    assert_eq!(
        again.json["enis"][0]["changes"].as_array().unwrap().len(),
        0
    );
    assert_eq!(bed.routing_state(), before);
}

/// 2. Dual-homed: eth1 in another subnet, arriving down and unconfigured with three IPs.
#[test]
fn dual_homed_unconfigured_eni_gets_every_address() {
    need_root!();
    let bed = Bed::new(false);
    let spec = EniSpec::new("eth1", &bed.b)
        .ip("10.0.2.20")
        .ip("10.0.2.21")
        .ip("10.0.2.22")
        .config(Config::Unconfigured);
    bed.attach(spec, 1, 0, "eni-11111111111111111");
    let client_a = bed.vpc.add_client(&bed.a, "10.0.1.50").unwrap();
    let client_b = bed.vpc.add_client(&bed.b, "10.0.2.50").unwrap();
    for a in ["10.0.2.20", "10.0.2.21", "10.0.2.22"] {
        assert!(!client_a.ping(ip(a), 1, 1), "{a} answers before apply?");
    }

    let run = bed.apply(&["--eni", "eni-11111111111111111"]);
    assert_eq!(run.json["enis"][0]["symmetric"], true, "{}", run.stdout);
    for a in ["10.0.2.20", "10.0.2.21", "10.0.2.22"] {
        assert!(
            client_a.ping(ip(a), 1, 2),
            "{a} must answer another subnet after apply"
        );
        assert!(
            client_b.ping(ip(a), 1, 2),
            "{a} must answer its own subnet after apply"
        );
    }
    let link = bed.ip_json(&["link", "show", "eth1"]);
    assert!(link[0]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "UP"));
    let mut rules = bed.rules_for_table(10001);
    rules.sort();
    assert_eq!(
        rules,
        vec![
            ("10.0.2.20/32".to_string(), 10001),
            ("10.0.2.21/32".to_string(), 10001),
            ("10.0.2.22/32".to_string(), 10001)
        ]
    );
    // Addresses the agent added carry its protocol, so remove can find exactly them.
    let addrs = bed.ip_json(&["-4", "addr", "show", "dev", "eth1"]);
    let infos = addrs[0]["addr_info"].as_array().unwrap();
    assert_eq!(infos.len(), 3, "{infos:?}");
}

/// 3. Several ENIs, one on network card 1: numbering, and a re-apply that changes nothing.
#[test]
fn several_enis_are_numbered_by_card_and_device() {
    need_root!();
    let bed = Bed::new(false);
    bed.attach(
        EniSpec::new("eth1", &bed.a).ip("10.0.1.21").ip("10.0.1.22"),
        1,
        0,
        "eni-22222222222222221",
    );
    bed.attach(
        EniSpec::new("eth2", &bed.b)
            .ip("10.0.2.23")
            .prefix("10.0.2.64/28"),
        2,
        0,
        "eni-22222222222222222",
    );
    bed.attach(
        EniSpec::new("eth3", &bed.b).ip("10.0.2.24"),
        1,
        1,
        "eni-22222222222222223",
    );
    let client = bed.vpc.add_client(&bed.b, "10.0.2.50").unwrap();
    let client_a = bed.vpc.add_client(&bed.a, "10.0.1.50").unwrap();

    let run = bed.apply(&["--all"]);
    let tables: Vec<u64> = run.json["enis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["table"].as_u64().unwrap())
        .collect();
    let mut sorted = tables.clone();
    sorted.sort();
    assert_eq!(sorted, vec![10001, 10002, 10101]);
    assert_eq!(bed.rules_for_table(10001).len(), 2);
    let mut t2 = bed.rules_for_table(10002);
    t2.sort();
    assert_eq!(
        t2,
        vec![
            ("10.0.2.23/32".into(), 10002),
            ("10.0.2.64/28".into(), 10002)
        ]
    );
    assert_eq!(
        bed.rules_for_table(10101),
        vec![("10.0.2.24/32".into(), 10101)]
    );
    for e in run.json["enis"].as_array().unwrap() {
        assert_eq!(e["symmetric"], true, "{e}");
    }
    for a in ["10.0.1.21", "10.0.1.22", "10.0.2.23", "10.0.2.24"] {
        assert!(client_a.ping(ip(a), 1, 2), "{a} from subnet A");
        assert!(client.ping(ip(a), 1, 2), "{a} from subnet B");
    }

    let before = bed.routing_state();
    let again = bed.apply(&["--all"]);
    assert_eq!(again.json["changes"], 0, "{}", again.stdout);
    assert_eq!(bed.routing_state(), before);
    // A dry run of a configured host plans nothing either.
    let dry = bed.apply(&["--dry-run"]);
    assert!(dry.json["enis"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["changes"].as_array().unwrap().is_empty()));
}

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
    assert_eq!(bed.our_rules().len(), 2);

    // Detach eth2 (the kernel link goes, IMDS forgets it): its rules stay behind until pruned.
    bed.vpc.detach_eni(&eth2).unwrap();
    bed.imds.remove_eni(eth2.mac());
    assert_eq!(bed.our_rules().len(), 2, "rules outlive a detach");
    let stale = bed.agent(&["remove", "--stale", "--json"]);
    assert_eq!(stale.code, 0, "{}{}", stale.stdout, stale.stderr);
    assert_eq!(bed.rules_for_table(10002), vec![]);
    assert_eq!(
        bed.rules_for_table(10001).len(),
        1,
        "the attached ENI keeps its rules"
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

/// 7. IPv6: rules from each v6 address and a v6 default copied from the RA default.
#[test]
fn ipv6_rules_and_ra_default() {
    need_root!();
    let bed = Bed::new(true);
    let eth1 = bed.attach(
        EniSpec::new("eth1", &bed.a)
            .ip("10.0.1.20")
            .ipv6("2600:1f18:1:1::20"),
        1,
        0,
        "eni-66666666666666661",
    );
    let client = bed
        .vpc
        .add_client_with(&bed.b, &["10.0.2.50", "2600:1f18:1:2::50"])
        .unwrap();
    // Wait (bounded) for eth1 to learn the router from an RA.
    bed.inst
        .wait_ipv6_default("eth1", 10)
        .expect("eth1 learned an IPv6 default from RA");

    let run = bed.apply(&[]);
    assert_eq!(run.json["enis"][0]["symmetric"], true, "{}", run.stdout);
    let rules = bed.rules_for_table(10001);
    assert!(
        rules.contains(&("2600:1f18:1:1::20/128".to_string(), 10001)),
        "{rules:?}"
    );
    let v6 = bed.table_routes(10001, "-6");
    let def = v6
        .iter()
        .find(|r| r["dst"] == "default")
        .expect("v6 default in table 10001");
    assert_eq!(def["dev"], "eth1");
    assert!(
        def["gateway"].as_str().unwrap().starts_with("fe80:"),
        "{def}"
    );
    assert!(
        v6.iter().any(|r| r["dst"] == "2600:1f18:1:1::/64"),
        "{v6:?}"
    );
    assert!(
        client.ping(ip("2600:1f18:1:1::20"), 1, 3),
        "eth1's IPv6 address answers another subnet"
    );
    assert!(client.ping(ip(&eth1.primary_ipv4().to_string()), 1, 2));
}

/// status reports every ENI, with symmetric yes/no, and leaves a foreign setup alone.
#[test]
fn status_and_foreign_routing() {
    need_root!();
    let bed = Bed::new(false);
    bed.attach(
        EniSpec::new("eth1", &bed.a).ip("10.0.1.20"),
        1,
        0,
        "eni-77777777777777771",
    );
    bed.attach(
        EniSpec::new("eth2", &bed.a).ip("10.0.1.30"),
        2,
        0,
        "eni-77777777777777772",
    );
    // eth2 is already routed by another tool (as amazon-ec2-net-utils would, proto static).
    for cmd in [
        &[
            "ip",
            "route",
            "add",
            "10.0.1.0/24",
            "dev",
            "eth2",
            "table",
            "10002",
            "src",
            "10.0.1.30",
        ][..],
        &[
            "ip", "route", "add", "default", "via", "10.0.1.1", "dev", "eth2", "table", "10002",
        ][..],
        &[
            "ip",
            "rule",
            "add",
            "from",
            "10.0.1.30",
            "lookup",
            "10002",
            "pref",
            "10002",
        ][..],
    ] {
        bed.inst.exec(cmd).unwrap();
    }
    let st = bed.agent(&["status", "--json"]);
    assert_eq!(st.code, 0, "{}", st.stderr);
    let by_if = |name: &str| {
        st.json["enis"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["interface"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_if("eth1")["symmetric"], false);
    assert_eq!(by_if("eth2")["symmetric"], true);
    assert_eq!(by_if("eth2")["status"], "managed-by-other");
    assert_eq!(by_if("eth0")["table"], 10000);

    let run = bed.apply(&[]);
    let eth2 = run.json["enis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["interface"] == "eth2")
        .unwrap()
        .clone();
    assert_eq!(eth2["status"], "managed-by-other", "{eth2}");
    assert!(eth2["changes"].as_array().unwrap().is_empty());
    assert!(
        bed.rules_for_table(10002).is_empty(),
        "nothing of ours for eth2"
    );

    let st = bed.agent(&["status", "--json"]);
    assert_eq!(by_if_json(&st.json, "eth1")["symmetric"], true);
    assert_eq!(by_if_json(&st.json, "eth1")["managed_by"], "symroute");

    // --force takes over.
    let forced = bed.apply(&["--force", "--eni", "eni-77777777777777772"]);
    assert_eq!(forced.json["enis"][0]["status"], "configure");
    assert_eq!(bed.rules_for_table(10002).len(), 1);
}

fn by_if_json(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v["enis"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["interface"] == name)
        .cloned()
        .unwrap()
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

/// A just-attached ENI: IMDS first reports device-number 0, and the kernel link comes late.
#[test]
fn waits_for_a_just_attached_eni() {
    need_root!();
    let bed = Bed::new(false);
    let spec = EniSpec::new("eth1", &bed.a).ip("10.0.1.20");
    let meta = symroute_testbed::EniMeta::from_spec(&spec, 0, 0, "eni-99999999999999991");
    bed.imds.put_eni(&meta);
    let r = std::thread::scope(|s| {
        let run = s.spawn(|| {
            bed.agent(&[
                "apply",
                "--eni",
                "eni-99999999999999991",
                "--wait",
                "20",
                "--json",
            ])
        });
        std::thread::sleep(std::time::Duration::from_millis(700));
        bed.vpc.attach_eni(&bed.inst, spec.clone()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        bed.imds.put_eni(&symroute_testbed::EniMeta {
            device_number: 1,
            ..meta.clone()
        });
        run.join().unwrap()
    });
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.json["enis"][0]["table"], 10001,
        "not 10000: the transient device 0 was not trusted"
    );
    assert!(r.stderr.contains("waiting"), "{}", r.stderr);
}

/// A DHCP default on a secondary that outranks the primary's is demoted behind it, not deleted;
/// --dry-run before that shows the plan and changes nothing.
#[test]
fn secondary_dhcp_default_is_demoted_and_dry_run_changes_nothing() {
    need_root!();
    let bed = Bed::new(false);
    bed.attach(
        EniSpec::new("eth1", &bed.b)
            .ip("10.0.2.20")
            .config(Config::Dhcp {
                default_metric: Some(50),
            }),
        1,
        0,
        "eni-aaaaaaaaaaaaaaaa1",
    );
    let via = |bed: &Bed| {
        let r = bed.ip_json(&["-4", "route", "get", "192.0.2.1"]);
        r[0]["dev"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(
        via(&bed),
        "eth1",
        "the secondary's DHCP default (metric 50) took over (testbed sanity)"
    );

    let before = bed.routing_state();
    let dry = bed.agent(&["apply", "--dry-run", "--json", "--persist", "none"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(dry.json["dry_run"], true);
    let planned: Vec<String> = dry.json["enis"][0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(
        planned
            .iter()
            .any(|c| c.contains("rule add from 10.0.2.20/32 lookup 10001")),
        "{planned:?}"
    );
    assert!(
        planned
            .iter()
            .any(|c| c.contains("route del default via 10.0.2.1 dev eth1")),
        "{planned:?}"
    );
    assert_eq!(dry.json["changes"], 0);
    assert_eq!(bed.routing_state(), before, "--dry-run changed nothing");

    bed.apply(&[]);
    assert_eq!(
        via(&bed),
        "eth0",
        "the main table's preferred default is the primary's again"
    );
    let defaults = bed.ip_json(&["-4", "route", "show", "default"]);
    let eth1_default = defaults
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dev"] == "eth1")
        .expect("the secondary's default is kept, demoted");
    assert_eq!(eth1_default["metric"], 10001, "{defaults}");
    // And it is still one apply: a second one changes nothing.
    let again = bed.apply(&[]);
    assert_eq!(again.json["changes"], 0, "{}", again.stdout);
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

/// Multi-card race (amazon-ec2-net-utils #153): right after an attach, IMDS may not publish
/// `network-card` for the new ENI. Read as card 0, a device-1 ENI on card 1 would claim table
/// 10001, which belongs to the card-0 device-1 ENI. The agent waits instead; if the field never
/// comes, the ENI is left alone (exit 3) and the other ENI's routing is untouched.
#[test]
fn an_eni_whose_network_card_is_not_published_yet_never_takes_another_enis_table() {
    need_root!();
    let bed = Bed::new(false);
    bed.attach(
        EniSpec::new("eth1", &bed.a).ip("10.0.1.21"),
        1,
        0,
        "eni-33333333333333331",
    );
    let eth2 = bed.attach(
        EniSpec::new("eth2", &bed.b).ip("10.0.2.22"),
        1,
        1,
        "eni-33333333333333332",
    );
    let card = format!(
        "meta-data/network/interfaces/macs/{}/network-card",
        eth2.mac()
    );
    bed.apply(&["--eni", "eni-33333333333333331"]);
    let table_10001 = bed.routing_state();
    bed.imds.remove(&card);

    let r = bed.agent(&["apply", "--all", "--json", "--wait", "2"]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("network-card"), "{}", r.stderr);
    assert_eq!(
        bed.rules_for_table(10001),
        vec![("10.0.1.21/32".into(), 10001)],
        "eth2 took table 10001"
    );
    assert_eq!(bed.routing_state(), table_10001, "routing changed");

    // Published while the agent waits: it gets its own table.
    let r = std::thread::scope(|s| {
        let run = s.spawn(|| bed.agent(&["apply", "--all", "--json", "--wait", "20"]));
        std::thread::sleep(std::time::Duration::from_millis(800));
        bed.imds.set(&card, "1");
        run.join().unwrap()
    });
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        bed.rules_for_table(10101),
        vec![("10.0.2.22/32".into(), 10101)]
    );
    assert_eq!(
        bed.rules_for_table(10001),
        vec![("10.0.1.21/32".into(), 10001)]
    );
}

/// One odd ENI does not stop the others: garbage in one ENI's metadata, an IPv6-only ENI. Each
/// ENI is parsed on its own; `--eni` of a good one works; `--all` configures the good ones and
/// still reports the garbage (exit 2, naming the field); IPv6-only is skipped with a reason.
#[test]
fn one_odd_eni_does_not_stop_the_others() {
    need_root!();
    let bed = Bed::new(false);
    let odd = bed.attach(
        EniSpec::new("eth1", &bed.a).ip("10.0.1.20"),
        1,
        0,
        "eni-55555555555555551",
    );
    bed.attach(
        EniSpec::new("eth2", &bed.b).ip("10.0.2.21"),
        2,
        0,
        "eni-55555555555555552",
    );
    let v6 = bed.attach(
        EniSpec::new("eth3", &bed.a).ip("10.0.1.23"),
        3,
        0,
        "eni-55555555555555553",
    );
    let dir = |mac: &str| format!("meta-data/network/interfaces/macs/{mac}");
    bed.imds.set(
        &format!("{}/subnet-ipv4-cidr-block", dir(odd.mac())),
        "10.0.1.0/33",
    );
    bed.imds.remove(&format!("{}/local-ipv4s", dir(v6.mac())));
    bed.imds
        .set(&format!("{}/ipv6s", dir(v6.mac())), "2001:db8:1::23");

    // A good ENI by name: the odd ones do not matter.
    let r = bed.agent(&["apply", "--eni", "eni-55555555555555552", "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        bed.rules_for_table(10002),
        vec![("10.0.2.21/32".into(), 10002)]
    );

    // --all: eth2 stays configured, eth1 (garbage) and eth3 (IPv6 only) are left alone.
    let r = bed.agent(&["apply", "--all", "--json", "--wait", "2"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let error = r.json["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("subnet-ipv4-cidr-block") && error.contains("eni-55555555555555551"),
        "{error}"
    );
    let notes = r.json["notes"].to_string();
    assert!(
        notes.contains("eni-55555555555555553") && notes.contains("IPv6 only"),
        "{notes}"
    );
    assert!(bed.rules_for_table(10001).is_empty());
    assert!(bed.rules_for_table(10003).is_empty());
    assert_eq!(
        bed.rules_for_table(10002),
        vec![("10.0.2.21/32".into(), 10002)]
    );

    // Naming an odd one is bad input, at once (no --wait).
    let r = bed.agent(&["apply", "--eni", "eni-55555555555555551", "--wait", "30"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = bed.agent(&["apply", "--eni", "eni-55555555555555553", "--wait", "30"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}

/// Re-attached at another device number: `apply --eni` moves the ENI to its new table and
/// leaves nothing of it under the old one (not only `--all` prunes).
#[test]
fn an_eni_reattached_at_another_device_number_leaves_nothing_in_its_old_table() {
    need_root!();
    let bed = Bed::new(false);
    let eth1 = bed.attach(
        EniSpec::new("eth1", &bed.b).ip("10.0.2.31"),
        2,
        0,
        "eni-66666666666666661",
    );
    bed.apply(&["--eni", "eni-66666666666666661"]);
    assert_eq!(
        bed.rules_for_table(10002),
        vec![("10.0.2.31/32".into(), 10002)]
    );
    bed.imds.set(
        &format!(
            "meta-data/network/interfaces/macs/{}/device-number",
            eth1.mac()
        ),
        "1",
    );
    bed.apply(&["--eni", "eni-66666666666666661"]);
    assert_eq!(
        bed.rules_for_table(10001),
        vec![("10.0.2.31/32".into(), 10001)]
    );
    assert!(
        bed.rules_for_table(10002).is_empty(),
        "old rules left: {:?}",
        bed.rules_for_table(10002)
    );
    let old = bed.ip_json(&["route", "show", "table", "10002"]);
    assert_eq!(old, serde_json::json!([]), "old routes left: {old}");
    let client = bed.vpc.add_client(&bed.a, "10.0.1.50").unwrap();
    assert!(client.ping(ip("10.0.2.31"), 1, 2));
}

/// While waiting for a late ENI, the agent reads only the list of MACs and what is not ready
/// yet: an ENI already read and ready is not read again on every poll (on a host with dozens of
/// ENIs, re-reading every key each second approaches IMDS's 1,024 packets/s).
#[test]
fn waiting_for_one_eni_does_not_read_the_ready_ones_again() {
    need_root!();
    let bed = Bed::new(false);
    let ready: Vec<_> = (0..3)
        .map(|n| {
            bed.attach(
                EniSpec::new(&format!("eth{}", n + 1), &bed.b).ip(&format!("10.0.2.{}", 41 + n)),
                n + 1,
                0,
                &format!("eni-7777777777777777{}", n + 1),
            )
        })
        .collect();
    let late = EniSpec::new("eth4", &bed.a).ip("10.0.1.44");
    bed.imds.put_eni(&symroute_testbed::EniMeta::from_spec(
        &late,
        4,
        0,
        "eni-77777777777777774",
    ));
    bed.imds.clear_requests();
    let r = std::thread::scope(|s| {
        let run = s.spawn(|| bed.agent(&["apply", "--all", "--json", "--wait", "20"]));
        std::thread::sleep(std::time::Duration::from_millis(2500));
        bed.vpc.attach_eni(&bed.inst, late.clone()).unwrap();
        run.join().unwrap()
    });
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("waiting"),
        "it did not wait: {}",
        r.stderr
    );
    let requests = bed.imds.requests();
    let polls = requests
        .iter()
        .filter(|q| q.path.ends_with("network/interfaces/macs/"))
        .count();
    assert!(
        polls >= 3,
        "only {polls} polls: the test did not exercise the wait"
    );
    for eni in &ready {
        let reads = requests
            .iter()
            .filter(|q| q.path.ends_with(&format!("{}/local-ipv4s", eni.mac())))
            .count();
        assert_eq!(
            reads,
            1,
            "{} read {reads} times over {polls} polls",
            eni.mac()
        );
    }
    assert_eq!(bed.rules_for_table(10004).len(), 1);
}

/// The report's changes are `ip` commands a person can paste: run as printed by a dry run, with
/// this machine's `ip`, they are accepted and make the ENI answer.
#[test]
fn the_reported_changes_are_ip_commands_that_ip_accepts() {
    need_root!();
    let bed = Bed::new(false);
    bed.attach(
        EniSpec::new("eth1", &bed.b)
            .ip("10.0.2.51")
            .ip("10.0.2.52")
            .config(Config::Unconfigured),
        1,
        0,
        "eni-99999999999999995",
    );
    let client = bed.vpc.add_client(&bed.a, "10.0.1.50").unwrap();
    let dry = bed.agent(&["apply", "--all", "--dry-run", "--json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let changes: Vec<String> = dry.json["enis"][0]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert!(changes.len() >= 5, "{changes:?}");
    for line in &changes {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "ip", "{line}");
        let out = bed.inst.output(&words).unwrap();
        assert!(
            out.status.success(),
            "`{line}`: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(client.ping(ip("10.0.2.51"), 1, 2));
    assert!(client.ping(ip("10.0.2.52"), 1, 2));
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
