//! IMDS as it behaves right after an attach, against the real kernel (the simulated VPC of
//! routing.rs): ENIs that appear late, metadata that is not settled yet, one odd ENI among good
//! ones, and a wait that does not hammer IMDS. Needs root (fails under CI=true).

mod common;

use common::Bed;
use symroute_testbed::EniSpec;

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

/// One odd ENI does not stop the others: garbage in one ENI's metadata, an IPv6-only ENI whose
/// address lies outside its subnet. Each ENI is parsed on its own; `--eni` of a good one works;
/// `--all` configures the good ones and still reports the garbage (exit 2, naming the field);
/// the other odd one is skipped with its reason.
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
    // An ENI of an IPv6-only subnet (no IPv4 keys at all), with an address outside its block.
    bed.imds.remove(&format!("{}/local-ipv4s", dir(v6.mac())));
    bed.imds
        .remove(&format!("{}/subnet-ipv4-cidr-block", dir(v6.mac())));
    bed.imds
        .set(&format!("{}/ipv6s", dir(v6.mac())), "2001:db8:1::23");
    bed.imds.set(
        &format!("{}/subnet-ipv6-cidr-blocks", dir(v6.mac())),
        "2001:db8:2::/64",
    );

    // A good ENI by name: the odd ones do not matter.
    let r = bed.agent(&["apply", "--eni", "eni-55555555555555552", "--json"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        bed.rules_for_table(10002),
        vec![("10.0.2.21/32".into(), 10002)]
    );

    // --all: eth2 stays configured, eth1 and eth3 (garbage both) are left alone.
    let r = bed.agent(&["apply", "--all", "--json", "--wait", "2"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let error = r.json["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("subnet-ipv4-cidr-block") && error.contains("eni-55555555555555551"),
        "{error}"
    );
    let notes = r.json["notes"].to_string();
    assert!(
        notes.contains("eni-55555555555555553")
            && notes.contains("in none of the subnet's IPv6 blocks"),
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
