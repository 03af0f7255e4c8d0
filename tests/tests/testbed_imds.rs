//! The IMDSv2 stand-in behaves like IMDSv2 and injects the faults the agent must survive.
//! Most tests bind on the root namespace's loopback and need no root.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use symroute_testbed::{require_root, EniMeta, EniSpec, Imds, InstanceMeta, Request, Subnet, Vpc};

const TTL: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN: &str = "X-aws-ec2-metadata-token";

/// One HTTP/1.1 exchange on an open connection: (status, headers, body).
fn exchange(
    conn: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Vec<String>, String)> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.get_mut().write_all(req.as_bytes())?;
    let mut status = String::new();
    if conn.read_line(&mut status)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let code = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut head = Vec::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line)?;
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            len = v.parse().unwrap();
        }
        head.push(line);
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body)?;
    Ok((code, head, String::from_utf8(body).unwrap()))
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(addr).unwrap())
}

fn request(imds: &Imds, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (code, _, body) = exchange(&mut connect(imds.addr()), method, path, headers).unwrap();
    (code, body)
}

fn token(imds: &Imds) -> String {
    let (code, body) = request(imds, "PUT", "/latest/api/token", &[(TTL, "21600")]);
    assert_eq!(code, 200);
    body
}

fn get(imds: &Imds, path: &str) -> (u16, String) {
    let t = token(imds);
    request(imds, "GET", path, &[(TOKEN, &t)])
}

fn metadata() -> (InstanceMeta, EniMeta, EniMeta) {
    let subnet = Subnet::unattached("10.0.1.0/24", Some("2001:db8:1::/64")).unwrap();
    let eth0 = EniSpec::primary(&subnet)
        .mac("0a:00:00:00:00:01")
        .ip("10.0.1.10");
    let eth1 = EniSpec::new("eth1", &subnet)
        .mac("0a:00:00:00:00:02")
        .ip("10.0.1.11")
        .ip("10.0.1.12")
        .prefix("10.0.1.64/28")
        .ipv6("2001:db8:1::11");
    (
        InstanceMeta::new("i-0123456789abcdef0", "0a:00:00:00:00:01"),
        EniMeta::from_spec(&eth0, 0, 0, "eni-0000000000000000a"),
        EniMeta::from_spec(&eth1, 1, 0, "eni-0000000000000000b"),
    )
}

#[test]
fn token_flow_and_its_refusals() {
    let imds = Imds::start_local().unwrap();
    assert!(imds.endpoint().starts_with("http://127.0.0.1:"));
    imds.set("meta-data/instance-id", "i-1");

    let (code, head, tok) = exchange(
        &mut connect(imds.addr()),
        "PUT",
        "/latest/api/token",
        &[(TTL, "60")],
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(!tok.is_empty());
    assert!(head.iter().any(|h| h == &format!("{TTL}: 60")), "{head:?}");
    assert_eq!(
        request(
            &imds,
            "GET",
            "/latest/meta-data/instance-id",
            &[(TOKEN, &tok)]
        ),
        (200, "i-1".to_string())
    );

    assert_eq!(
        request(&imds, "GET", "/latest/meta-data/instance-id", &[]).0,
        401
    );
    let bogus = [(TOKEN, "not-a-token")];
    assert_eq!(
        request(&imds, "GET", "/latest/meta-data/instance-id", &bogus).0,
        401
    );
    for ttl in ["0", "21601", "abc", "-5"] {
        let (code, _) = request(&imds, "PUT", "/latest/api/token", &[(TTL, ttl)]);
        assert_eq!(code, 400, "ttl {ttl}");
    }
    assert_eq!(request(&imds, "PUT", "/latest/api/token", &[]).0, 400);
    assert_eq!(
        request(&imds, "PUT", "/latest/api/token", &[(TTL, "21600")]).0,
        200
    );
}

#[test]
fn expired_tokens_are_refused() {
    let imds = Imds::start_local().unwrap();
    imds.set("meta-data/instance-id", "i-1");
    let (_, tok) = request(&imds, "PUT", "/latest/api/token", &[(TTL, "1")]);
    assert_eq!(
        request(
            &imds,
            "GET",
            "/latest/meta-data/instance-id",
            &[(TOKEN, &tok)]
        )
        .0,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        request(
            &imds,
            "GET",
            "/latest/meta-data/instance-id",
            &[(TOKEN, &tok)]
        )
        .0,
        401
    );
}

#[test]
fn instance_and_eni_metadata_as_imds_lays_it_out() {
    let imds = Imds::start_local().unwrap();
    let (inst, eth0, eth1) = metadata();
    imds.set_instance(&inst);
    imds.put_eni(&eth0);
    imds.put_eni(&eth1);

    assert_eq!(get(&imds, "/latest/meta-data/mac").1, "0a:00:00:00:00:01");
    assert_eq!(
        get(&imds, "/latest/meta-data/instance-id").1,
        "i-0123456789abcdef0"
    );
    let macs = "/latest/meta-data/network/interfaces/macs/";
    assert_eq!(
        get(&imds, macs),
        (200, "0a:00:00:00:00:01/\n0a:00:00:00:00:02/".to_string())
    );
    let (code, listing) = get(&imds, &format!("{macs}0a:00:00:00:00:02/"));
    assert_eq!(code, 200);
    for key in [
        "device-number",
        "network-card",
        "interface-id",
        "local-ipv4s",
        "subnet-ipv4-cidr-block",
        "ipv4-prefix",
        "ipv6s",
        "subnet-ipv6-cidr-blocks",
        "mac",
        "subnet-id",
        "vpc-id",
        "owner-id",
        "local-hostname",
    ] {
        assert!(
            listing.lines().any(|l| l == key),
            "{key} missing: {listing}"
        );
    }
    let leaf = |k: &str| get(&imds, &format!("{macs}0a:00:00:00:00:02/{k}")).1;
    assert_eq!(leaf("device-number"), "1");
    assert_eq!(leaf("local-ipv4s"), "10.0.1.11\n10.0.1.12");
    assert_eq!(leaf("ipv4-prefix"), "10.0.1.64/28");
    assert_eq!(leaf("subnet-ipv4-cidr-block"), "10.0.1.0/24");
    assert_eq!(leaf("ipv6s"), "2001:db8:1::11");
    assert_eq!(leaf("interface-id"), "eni-0000000000000000b");
    assert_eq!(leaf("local-hostname"), "ip-10-0-1-11.ec2.internal");
    assert!(leaf("subnet-id").starts_with("subnet-"));

    let eth0_listing = get(&imds, &format!("{macs}0a:00:00:00:00:01/")).1;
    assert!(!eth0_listing
        .lines()
        .any(|l| l == "ipv4-prefix" || l == "ipv6s"));
    assert_eq!(get(&imds, "/latest/meta-data/nope").0, 404);
    assert_eq!(get(&imds, &format!("{macs}0a:00:00:00:00:09/mac")).0, 404);
}

/// What cloud-init's EC2 datasource reads besides `latest`: dated versions of the same tree, the
/// list of versions at `/`, and the instance identity document. A version IMDS does not serve is
/// a 404, not a copy of `latest`.
#[test]
fn dated_versions_the_version_list_and_the_identity_document() {
    let imds = Imds::start_local().unwrap();
    let (inst, eth0, _) = metadata();
    imds.set_instance(&inst);
    imds.put_eni(&eth0);

    for ver in ["2021-03-23", "2018-09-24", "2016-09-02", "2009-04-04"] {
        assert_eq!(
            get(&imds, &format!("/{ver}/meta-data/instance-id")),
            (200, "i-0123456789abcdef0".to_string()),
            "{ver}"
        );
        assert_eq!(
            get(&imds, &format!("/{ver}/meta-data/network/interfaces/macs/")),
            get(&imds, "/latest/meta-data/network/interfaces/macs/"),
        );
    }
    assert_eq!(get(&imds, "/2099-01-01/meta-data/instance-id").0, 404);
    assert_eq!(get(&imds, "/meta-data/instance-id").0, 404);
    let (code, list) = get(&imds, "/");
    assert_eq!(code, 200);
    assert!(list.lines().any(|l| l == "2021-03-23"), "{list}");
    assert_eq!(list.lines().last(), Some("latest"));
    assert_eq!(
        get(&imds, "/2021-03-23/dynamic/instance-identity/").1,
        "document"
    );
    let (code, doc) = get(&imds, "/2021-03-23/dynamic/instance-identity/document");
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["instanceId"], "i-0123456789abcdef0");
    assert_eq!(doc["region"], "us-east-1");
    // The token is still required on every dated path.
    assert_eq!(
        request(&imds, "GET", "/2021-03-23/meta-data/instance-id", &[]).0,
        401
    );
}

#[test]
fn changes_show_up_while_clients_read() {
    let imds = Imds::start_local().unwrap();
    let (_, _, mut eth1) = metadata();
    let dev = "/latest/meta-data/network/interfaces/macs/0a:00:00:00:00:02/device-number";
    assert_eq!(get(&imds, dev).0, 404, "not attached yet");
    eth1.device_number = 0;
    imds.put_eni(&eth1);
    assert_eq!(get(&imds, dev).1, "0");
    imds.set(dev, "2");
    assert_eq!(get(&imds, dev).1, "2");
    assert_eq!(imds.get(dev).as_deref(), Some("2"));
    imds.set(dev, "<garbage>");
    assert_eq!(get(&imds, dev).1, "<garbage>");
    imds.remove_eni("0a:00:00:00:00:02");
    assert_eq!(get(&imds, dev).0, 404);
    assert_eq!(
        get(&imds, "/latest/meta-data/network/interfaces/macs/").0,
        404
    );
}

#[test]
fn injected_failures_are_served_and_counted() {
    let imds = Imds::start_local().unwrap();
    imds.set("meta-data/instance-id", "i-1");
    let tok = token(&imds);
    imds.clear_requests();
    let path = "/latest/meta-data/instance-id";

    imds.fail_next(2, 503);
    assert_eq!(request(&imds, "GET", path, &[(TOKEN, &tok)]).0, 503);
    assert_eq!(
        request(&imds, "PUT", "/latest/api/token", &[(TTL, "60")]).0,
        503
    );
    assert_eq!(
        request(&imds, "GET", path, &[(TOKEN, &tok)]),
        (200, "i-1".to_string())
    );
    assert_eq!(imds.request_count(), 3);
    assert_eq!(
        imds.requests()[1],
        Request {
            method: "PUT".into(),
            path: "/latest/api/token".into(),
            valid_token: false
        }
    );

    imds.close_next(1);
    let closed = exchange(&mut connect(imds.addr()), "GET", path, &[(TOKEN, &tok)]);
    assert!(closed.is_err(), "connection closed without an answer");
    assert_eq!(request(&imds, "GET", path, &[(TOKEN, &tok)]).0, 200);
    assert_eq!(imds.request_count(), 5);

    imds.delay(30);
    assert_eq!(request(&imds, "GET", path, &[(TOKEN, &tok)]).0, 200);
    imds.delay(0);
    assert!(imds
        .requests()
        .iter()
        .all(|r| r.method != "GET" || r.valid_token));
}

#[test]
fn connections_are_kept_alive_until_the_client_closes() {
    let imds = Imds::start_local().unwrap();
    imds.set("meta-data/instance-id", "i-1");
    let mut conn = connect(imds.addr());
    let (_, _, tok) = exchange(&mut conn, "PUT", "/latest/api/token", &[(TTL, "60")]).unwrap();
    for _ in 0..3 {
        let (code, head, body) = exchange(
            &mut conn,
            "GET",
            "/latest/meta-data/instance-id",
            &[(TOKEN, &tok)],
        )
        .unwrap();
        assert_eq!((code, body.as_str()), (200, "i-1"));
        assert!(head.iter().any(|h| h == "Connection: keep-alive"));
    }
    let (_, head, _) = exchange(
        &mut conn,
        "GET",
        "/latest/meta-data/instance-id",
        &[(TOKEN, &tok), ("Connection", "close")],
    )
    .unwrap();
    assert!(head.iter().any(|h| h == "Connection: close"));
    let mut rest = Vec::new();
    assert_eq!(conn.read_to_end(&mut rest).unwrap(), 0, "server closed");

    // A connection still open when the server stops gets no more answers.
    let mut open = connect(imds.addr());
    let path = "/latest/meta-data/instance-id";
    assert_eq!(
        exchange(&mut open, "GET", path, &[(TOKEN, &tok)])
            .unwrap()
            .0,
        200
    );
    let addr = imds.addr();
    drop(imds);
    assert!(exchange(&mut open, "GET", path, &[(TOKEN, &tok)]).is_err());
    assert!(TcpStream::connect(addr).is_err(), "listener closed");
}

#[test]
fn server_inside_a_namespace_is_reachable_only_from_there() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let inst = vpc.add_instance().unwrap();
    let imds = Imds::start_in(inst.name()).unwrap();
    imds.set("meta-data/instance-id", "i-ns");

    // A stock client (curl) inside the instance, doing the IMDSv2 dance.
    let tok = inst
        .exec(&[
            "curl",
            "-sf",
            "-X",
            "PUT",
            "-H",
            &format!("{TTL}: 60"),
            &format!("{}/latest/api/token", imds.endpoint()),
        ])
        .unwrap();
    let tok = String::from_utf8(tok.stdout).unwrap();
    let id = inst
        .exec(&[
            "curl",
            "-sf",
            "-H",
            &format!("{TOKEN}: {tok}"),
            &format!("{}/latest/meta-data/instance-id", imds.endpoint()),
        ])
        .unwrap();
    assert_eq!(String::from_utf8(id.stdout).unwrap(), "i-ns");

    let addr = imds.addr();
    let from_inside = inst.run_in(move || TcpStream::connect(addr).is_ok());
    assert!(from_inside);
    assert!(
        TcpStream::connect(addr).is_err(),
        "not in the root namespace"
    );
    drop(imds);
    assert!(
        !inst.run_in(move || TcpStream::connect(addr).is_ok()),
        "stopped on drop"
    );
}

#[test]
fn standard_address_inside_a_namespace_needs_no_endpoint_override() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let inst = vpc.add_instance().unwrap();
    let imds = Imds::start_in_standard(inst.name()).unwrap();
    assert_eq!(imds.endpoint(), "http://169.254.169.254");
    imds.set("meta-data/instance-id", "i-std");
    let tok = inst
        .exec(&[
            "curl",
            "-sf",
            "-X",
            "PUT",
            "-H",
            &format!("{TTL}: 60"),
            "http://169.254.169.254/latest/api/token",
        ])
        .unwrap();
    let tok = String::from_utf8(tok.stdout).unwrap();
    let id = inst
        .exec(&[
            "curl",
            "-sf",
            "-H",
            &format!("{TOKEN}: {tok}"),
            "http://169.254.169.254/latest/meta-data/instance-id",
        ])
        .unwrap();
    assert_eq!(String::from_utf8(id.stdout).unwrap(), "i-std");
    assert_eq!(imds.request_count(), 2);
}
