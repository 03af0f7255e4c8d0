//! The agent's IMDSv2 client (`imds.rs`) against the IMDS stand-in on loopback: the one retry
//! policy (token reuse, 401 renewal, 429/5xx backoff, no retry on other answers), 404 as
//! "absent", and the body bound. No root, no namespace: the stand-in listens on 127.0.0.1.

use std::net::Ipv4Addr;

use symroute_agent::error::Error;
use symroute_agent::imds::Imds as Client;
use symroute_agent::model::UnusableKind;
use symroute_testbed::{EniMeta, Imds, InstanceMeta};

const PRIMARY: &str = "02:00:00:00:00:01";
const SECONDARY: &str = "02:00:00:00:00:02";

fn eni(mac: &str, device: u32, ip: [u8; 4], id: &str) -> EniMeta {
    EniMeta {
        mac: mac.into(),
        device_number: device,
        network_card: 0,
        interface_id: id.into(),
        local_ipv4s: vec![Ipv4Addr::from(ip)],
        subnet_ipv4_cidr_block: Some("10.0.1.0/24".parse().unwrap()),
        ipv4_prefixes: vec![],
        ipv6s: vec![],
        ipv6_prefixes: vec![],
        subnet_ipv6_cidr_blocks: vec![],
        vpc_ipv4_cidr_blocks: vec!["10.0.0.0/16".parse().unwrap()],
        vpc_ipv6_cidr_blocks: vec![],
        subnet_id: "subnet-0123456789abcdef0".into(),
        vpc_id: "vpc-0123456789abcdef0".into(),
        owner_id: "123456789012".into(),
        local_hostname: String::new(),
    }
}

/// A stand-in holding an instance with its primary and one secondary ENI.
fn server() -> Imds {
    let imds = Imds::start_local().expect("IMDS stand-in on 127.0.0.1");
    imds.set_instance(&InstanceMeta::new("i-0123456789abcdef0", PRIMARY));
    imds.put_eni(&eni(PRIMARY, 0, [10, 0, 1, 10], "eni-00000000000000001"));
    imds.put_eni(&eni(SECONDARY, 1, [10, 0, 1, 20], "eni-00000000000000002"));
    imds
}

fn client(imds: &Imds) -> Client {
    Client::new(&imds.endpoint()).expect("an http:// endpoint")
}

fn token_requests(imds: &Imds) -> usize {
    imds.requests().iter().filter(|r| r.method == "PUT").count()
}

#[test]
fn one_token_serves_every_read_of_a_run() {
    let imds = server();
    let c = client(&imds);
    let instance = c.instance().expect("instance");
    assert_eq!(instance.enis.len(), 2);
    assert_eq!(instance.enis[1].eni_id.to_string(), "eni-00000000000000002");
    let again = c.instance().expect("instance again");
    assert_eq!(again.enis.len(), 2);
    assert_eq!(token_requests(&imds), 1, "{:?}", imds.requests());
    assert!(imds
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .all(|r| r.valid_token));
    assert_eq!(c.attempts() as usize, imds.request_count());
}

#[test]
fn an_expired_token_is_renewed_once_and_the_read_goes_on() {
    let imds = server();
    let c = client(&imds);
    c.instance().expect("instance");
    imds.revoke_tokens();
    imds.clear_requests();
    let instance = c.instance().expect("read after the token expired");
    assert_eq!(instance.enis.len(), 2);
    let log = imds.requests();
    // The first GET is refused (401); the parallel readers may each see one more refusal
    // before the new token arrives, but only one new token is asked for.
    assert_eq!(token_requests(&imds), 1, "{log:?}");
    assert!(!log[0].valid_token && log[0].method == "GET", "{log:?}");
    let put = log.iter().position(|r| r.method == "PUT").unwrap();
    assert!(log[put + 1..].iter().all(|r| r.valid_token), "{log:?}");
}

#[test]
fn throttling_and_server_errors_are_retried_with_backoff() {
    for status in [429, 500, 503] {
        let imds = server();
        let c = client(&imds);
        imds.fail_next(3, status);
        let started = std::time::Instant::now();
        let instance = c
            .instance()
            .unwrap_or_else(|e| panic!("HTTP {status} x3: {e}"));
        assert_eq!(instance.enis.len(), 2);
        // Three failed tries of the token request: 100 + 200 + 400 ms of backoff.
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(700),
            "HTTP {status}: no backoff"
        );
        assert_eq!(
            token_requests(&imds),
            4,
            "HTTP {status}: {:?}",
            imds.requests()
        );
    }
}

#[test]
fn five_failures_in_a_row_end_the_read_with_the_last_answer_named() {
    let imds = server();
    let c = client(&imds);
    imds.fail_next(5, 503);
    match c.instance() {
        Err(Error::Imds { reason, .. }) => {
            assert!(reason.contains("after 5 attempts: HTTP 503"), "{reason}")
        }
        other => panic!("expected an IMDS error, got {other:?}"),
    }
    assert_eq!(imds.request_count(), 5);
}

#[test]
fn a_refused_token_is_not_retried_and_says_why() {
    let imds = server();
    let c = client(&imds);
    imds.fail_next(1, 403);
    match c.instance() {
        Err(Error::Imds { reason, .. }) => {
            assert!(
                reason.contains("HTTP 403") && reason.contains("IMDSv2"),
                "{reason}"
            )
        }
        other => panic!("expected an IMDS error, got {other:?}"),
    }
    assert_eq!(imds.request_count(), 1, "a 403 is an answer, not a hiccup");
}

#[test]
fn a_missing_key_is_absent_and_a_missing_list_is_an_error() {
    let imds = server();
    imds.remove(&format!(
        "meta-data/network/interfaces/macs/{SECONDARY}/local-ipv4s"
    ));
    let instance = client(&imds).instance().expect("instance");
    assert_eq!(instance.enis.len(), 1);
    assert_eq!(instance.unusable.len(), 1);
    assert_eq!(instance.unusable[0].kind, UnusableKind::NotYet);
    assert!(
        instance.unusable[0].reason.contains("no local-ipv4s yet"),
        "{}",
        instance.unusable[0].reason
    );

    imds.remove("meta-data/network/interfaces/macs");
    match client(&imds).instance() {
        Err(Error::BadMetadata { path, reason }) => {
            assert_eq!(path, "network/interfaces/macs/");
            assert_eq!(reason, "missing");
        }
        other => panic!("expected bad metadata, got {other:?}"),
    }
}

#[test]
fn a_body_over_64_kib_is_refused_and_only_that_eni_is_left_alone() {
    let imds = server();
    let huge = format!("10.0.1.20\n{}", "10.0.1.21\n".repeat(7000));
    assert!(huge.len() > 64 * 1024);
    imds.set(
        &format!("meta-data/network/interfaces/macs/{SECONDARY}/local-ipv4s"),
        &huge,
    );
    let instance = client(&imds).instance().expect("the primary is still read");
    assert_eq!(instance.enis.len(), 1);
    assert_eq!(instance.unusable[0].kind, UnusableKind::Malformed);
    assert!(
        instance.unusable[0]
            .reason
            .contains("larger than 65536 bytes"),
        "{}",
        instance.unusable[0].reason
    );

    imds.set("meta-data/instance-id", &"i".repeat(70 * 1024));
    match client(&imds).instance() {
        Err(Error::BadMetadata { path, reason }) => {
            assert_eq!(path, "instance-id");
            assert!(reason.contains("larger than 65536 bytes"), "{reason}");
        }
        other => panic!("expected bad metadata, got {other:?}"),
    }
}

#[test]
fn an_endpoint_that_is_not_http_is_a_usage_error() {
    match Client::new("file:///etc/passwd") {
        Err(Error::Usage(message)) => {
            assert!(message.contains("is not an http:// URL"), "{message}")
        }
        Err(e) => panic!("expected a usage error, got {e}"),
        Ok(_) => panic!("file:// accepted as an IMDS endpoint"),
    }
}

/// The periodic check: what cannot change while an ENI stays attached is taken from an earlier
/// read, never asked again; what can change (addresses, prefixes, blocks) is read every time,
/// and a change to it is seen.
#[test]
fn handed_in_fixed_values_are_not_read_again_and_what_can_change_still_is() {
    let imds = server();
    let first = client(&imds);
    let before = first.instance().expect("instance");
    let known = first.fixed_values();
    // The instance's two keys and four per ENI.
    assert_eq!(known.len(), 2 + 2 * 4, "{known:?}");
    let full_gets = imds.requests().iter().filter(|r| r.method == "GET").count();

    imds.set(
        &format!("meta-data/network/interfaces/macs/{SECONDARY}/local-ipv4s"),
        "10.0.1.20\n10.0.1.21",
    );
    imds.clear_requests();
    let mut check = client(&imds);
    check.reuse_fixed(known);
    let after = check.instance().expect("instance from the fixed values");
    let gets: Vec<String> = imds
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path)
        .collect();
    for fixed in [
        "instance-id",
        "/mac",
        "device-number",
        "network-card",
        "interface-id",
        "subnet-ipv4-cidr-block",
    ] {
        assert!(
            !gets.iter().any(|p| p.ends_with(fixed)),
            "{fixed} read again: {gets:?}"
        );
    }
    assert!(gets.iter().any(|p| p.ends_with("/local-ipv4s")), "{gets:?}");
    assert!(
        gets.len() < full_gets,
        "{} GETs, a full read took {full_gets}",
        gets.len()
    );
    assert_eq!(after.enis[1].eni_id, before.enis[1].eni_id);
    assert_eq!(after.enis[1].table(), before.enis[1].table());
    assert_eq!(
        after.enis[1].ipv4s,
        vec![Ipv4Addr::new(10, 0, 1, 20), Ipv4Addr::new(10, 0, 1, 21)]
    );

    // Without reuse, the same client reads them as always.
    imds.clear_requests();
    client(&imds).instance().expect("instance");
    let again = imds.requests().iter().filter(|r| r.method == "GET").count();
    assert_eq!(again, full_gets);
}

#[test]
fn handed_in_values_are_parsed_like_fresh_ones() {
    let imds = server();
    let mut c = client(&imds);
    let mut known = std::collections::BTreeMap::new();
    known.insert(
        format!("network/interfaces/macs/{SECONDARY}/device-number"),
        "one".to_string(),
    );
    c.reuse_fixed(known);
    let inst = c.instance().expect("instance");
    // Not a number: that ENI is malformed and left alone, the other is read.
    assert_eq!(inst.enis.len(), 1);
    assert_eq!(inst.unusable.len(), 1);
    assert_eq!(inst.unusable[0].kind, UnusableKind::Malformed);
}

#[test]
fn a_paced_client_spaces_its_requests() {
    let imds = server();
    let mut c = client(&imds);
    c.pace(std::time::Duration::from_millis(20));
    let start = std::time::Instant::now();
    c.instance().expect("instance");
    let n = imds.request_count() as u32;
    assert!(n > 10, "{n} requests");
    // n requests, at least 20 ms apart whatever the threads.
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(20) * (n - 1),
        "{n} requests in {:?}",
        start.elapsed()
    );
}

/// An IPv6-only instance whose IPv4 stack cannot reach 169.254.169.254: the first endpoint
/// cannot be connected to, so the token comes from the next, which then serves every read.
/// An answer that refuses (HTTP) is not a reason to move on: that endpoint is IMDS.
#[test]
fn an_endpoint_that_cannot_be_connected_to_hands_over_to_the_next() {
    let imds = server();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let live = imds.endpoint();
    let c = Client::with_fallback(&[&dead, &live]).unwrap();
    let instance = c.instance().expect("read through the second endpoint");
    assert_eq!(instance.enis.len(), 2);
    assert_eq!(c.endpoint(), live.trim_end_matches('/'));
    assert_eq!(token_requests(&imds), 1);
    assert_eq!(
        c.attempts() as usize,
        imds.request_count() + 1,
        "one connection attempt to the dead endpoint, then only the live one"
    );

    imds.fail_next(1, 403);
    let refused = Client::with_fallback(&[&live, &dead]).unwrap();
    let err = refused.instance().unwrap_err().to_string();
    assert!(err.contains("HTTP 403"), "{err}");
    assert_eq!(refused.endpoint(), live.trim_end_matches('/'));
}
