//! Proof that the simulated VPC fails the way AWS does, and that it cleans up after itself.
//! Needs root (network namespaces); see `require_root`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use symroute_testbed::{
    is_alive, list_with_prefix, prefix_of_pid, require_root, sweep_leftovers, Config, EniSpec,
    Host, Instance, Vpc,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn stdout(host: &Host, args: &[&str]) -> String {
    String::from_utf8(host.exec(args).unwrap().stdout).unwrap()
}

/// The hand-made fix symroute automates: replies from `addr` leave by `dev`.
fn policy_route(inst: &Instance, addr: &str, dev: &str, subnet: &str, gw: &str, table: &str) {
    inst.exec(&[
        "ip", "route", "add", subnet, "dev", dev, "src", addr, "table", table,
    ])
    .unwrap();
    inst.exec(&[
        "ip", "route", "add", "default", "via", gw, "dev", dev, "table", table,
    ])
    .unwrap();
    inst.exec(&[
        "ip", "rule", "add", "from", addr, "lookup", table, "priority", table,
    ])
    .unwrap();
}

/// Polls `cond` every 100 ms until it holds or `secs` pass (a bound, not a speed check).
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

#[test]
fn secondary_eni_fails_like_aws_until_policy_routing() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let a = vpc.add_subnet("10.0.1.0/24", None).unwrap();
    let b = vpc.add_subnet("10.0.2.0/24", None).unwrap();
    let inst = vpc.add_instance().unwrap();
    let eth0 = vpc
        .attach_eni(&inst, EniSpec::primary(&a).ip("10.0.1.10"))
        .unwrap();
    let secondary = EniSpec::new("eth1", &a)
        .ip("10.0.1.11")
        .config(Config::Dhcp {
            default_metric: Some(10001),
        });
    let eth1 = vpc.attach_eni(&inst, secondary).unwrap();
    let far = vpc.add_client(&b, "10.0.2.10").unwrap();
    let near = vpc.add_client(&a, "10.0.1.50").unwrap();

    assert!(far.ping(ip("10.0.1.10"), 2, 2), "eth0 from another subnet");
    assert!(
        near.ping(ip("10.0.1.10"), 2, 2),
        "eth0 from the same subnet"
    );

    // (eth1 already dropped something: its ARP answer for eth0's address, the ARP flux the
    // VPC does not let through.)
    let (before, eth0_before, eth1_before) = (
        vpc.srcdst_drops().unwrap(),
        vpc.srcdst_drops_at(&eth0).unwrap(),
        vpc.srcdst_drops_at(&eth1).unwrap(),
    );
    assert!(!far.ping(ip("10.0.1.11"), 2, 1), "eth1 answered by eth0");
    let after_far = vpc.srcdst_drops().unwrap();
    assert!(after_far > before, "the src/dst check dropped the reply");
    assert!(
        vpc.srcdst_drops_at(&eth0).unwrap() > eth0_before,
        "at eth0's port"
    );
    assert_eq!(vpc.srcdst_drops_at(&eth1).unwrap(), eth1_before);
    assert!(!near.ping(ip("10.0.1.11"), 2, 1), "eth1 answered by eth0");
    assert!(vpc.srcdst_drops().unwrap() > after_far);

    policy_route(
        &inst,
        "10.0.1.11",
        "eth1",
        "10.0.1.0/24",
        "10.0.1.1",
        "10001",
    );
    assert!(far.ping(ip("10.0.1.11"), 2, 2), "eth1 from another subnet");
    assert!(
        near.ping(ip("10.0.1.11"), 2, 2),
        "eth1 from the same subnet"
    );
    assert!(far.ping(ip("10.0.1.10"), 2, 2), "eth0 still works");
}

#[test]
fn delegated_prefix_is_routed_to_its_eni_and_nothing_else_is() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let a = vpc.add_subnet("10.0.1.0/24", None).unwrap();
    let b = vpc.add_subnet("10.0.2.0/24", None).unwrap();
    let inst = vpc.add_instance().unwrap();
    vpc.attach_eni(&inst, EniSpec::primary(&a)).unwrap();
    let eth1 = vpc
        .attach_eni(
            &inst,
            EniSpec::new("eth1", &a)
                .ip("10.0.1.11")
                .prefix("10.0.1.64/28"),
        )
        .unwrap();
    assert_eq!(eth1.ipv4_prefixes().len(), 1);
    let far = vpc.add_client(&b, "10.0.2.10").unwrap();
    // 10.0.1.70 is in the delegated prefix; 10.0.1.99 belongs to no ENI.
    for addr in ["10.0.1.70/32", "10.0.1.99/32"] {
        inst.exec(&["ip", "addr", "add", addr, "dev", "eth1"])
            .unwrap();
    }
    policy_route(
        &inst,
        "10.0.1.11",
        "eth1",
        "10.0.1.0/24",
        "10.0.1.1",
        "10001",
    );
    for from in ["10.0.1.64/28", "10.0.1.99"] {
        inst.exec(&["ip", "rule", "add", "from", from, "lookup", "10001"])
            .unwrap();
    }

    assert!(far.ping(ip("10.0.1.70"), 2, 2), "delegated prefix address");
    let before = vpc.srcdst_drops().unwrap();
    assert!(
        !far.ping(ip("10.0.1.99"), 2, 1),
        "an address the ENI does not own"
    );
    assert!(
        vpc.srcdst_drops().unwrap() > before,
        "its ARP answer was dropped by sender address"
    );
}

#[test]
fn instance_learns_ipv6_default_route_from_router_advertisements() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let a = vpc
        .add_subnet("10.0.1.0/24", Some("2001:db8:1::/64"))
        .unwrap();
    let b = vpc
        .add_subnet("10.0.2.0/24", Some("2001:db8:2::/64"))
        .unwrap();
    let inst = vpc.add_instance().unwrap();
    let eth0 = vpc
        .attach_eni(&inst, EniSpec::primary(&a).ipv6("2001:db8:1::10"))
        .unwrap();
    let learned = wait_for(20, || {
        let routes = stdout(&inst, &["ip", "-6", "route", "show", "default"]);
        routes.contains("via fe80::") && routes.contains("dev eth0") && routes.contains("proto ra")
    });
    assert!(
        learned,
        "no RA default route: {}",
        stdout(&inst, &["ip", "-6", "route"])
    );
    let addrs = stdout(&inst, &["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(
        !addrs.contains("2001:db8:1::") || addrs.matches("scope global").count() == 1,
        "the RA must not autoconfigure addresses: {addrs}"
    );
    let far = vpc
        .add_client_with(&b, &["10.0.2.10", "2001:db8:2::10"])
        .unwrap();
    assert!(
        far.ping(IpAddr::V6(eth0.ipv6s()[0]), 2, 2),
        "IPv6 through the router"
    );
}

#[test]
fn unconfigured_eni_arrives_down_and_detach_removes_the_link() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let a = vpc.add_subnet("10.0.1.0/24", None).unwrap();
    let inst = vpc.add_instance().unwrap();
    let eni = vpc
        .attach_eni(
            &inst,
            EniSpec::new("eth1", &a)
                .mac("0a:00:00:00:01:11")
                .config(Config::Unconfigured),
        )
        .unwrap();
    assert!(
        a.cidr().contains(&eni.primary_ipv4()),
        "an address was allocated"
    );
    let link = stdout(&inst, &["ip", "-o", "link", "show", "eth1"]);
    assert!(link.contains("0a:00:00:00:01:11"), "{link}");
    assert!(link.contains("state DOWN"), "{link}");
    assert_eq!(
        stdout(&inst, &["ip", "-o", "-4", "addr", "show", "dev", "eth1"]),
        ""
    );

    vpc.detach_eni(&eni).unwrap();
    assert!(!inst
        .output(&["ip", "link", "show", "eth1"])
        .unwrap()
        .status
        .success());
    assert!(vpc.detach_eni(&eni).is_err(), "detaching twice is an error");
    // The address and MAC are free again.
    vpc.attach_eni(
        &inst,
        EniSpec::new("eth1", &a)
            .mac("0a:00:00:00:01:11")
            .ip(&eni.primary_ipv4().to_string()),
    )
    .unwrap();
}

#[test]
fn ping_stream_counts_every_reply_and_losses() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let a = vpc
        .add_subnet("10.0.1.0/24", Some("2001:db8:1::/64"))
        .unwrap();
    let inst = vpc.add_instance().unwrap();
    vpc.attach_eni(
        &inst,
        EniSpec::primary(&a).ip("10.0.1.10").ipv6("2001:db8:1::10"),
    )
    .unwrap();
    let client = vpc
        .add_client_with(&a, &["10.0.1.50", "2001:db8:1::50"])
        .unwrap();
    // Until the RA arrives the instance has no route back to the client's IPv6 address.
    inst.wait_ipv6_default("eth0", 20).unwrap();
    for dst in ["10.0.1.10", "2001:db8:1::10"] {
        let stream = client.spawn_ping_stream(ip(dst), 10);
        assert!(wait_for(10, || stream.progress().sent >= 20));
        let stats = stream.stop().unwrap();
        assert!(stats.sent >= 20);
        assert_eq!(stats.lost(), 0, "{dst}: {stats:?}");
    }
    let stream = client.spawn_ping_stream(ip("10.0.1.99"), 10);
    assert!(wait_for(10, || stream.progress().sent >= 5));
    let stats = stream.stop().unwrap();
    assert_eq!(stats.received, 0, "nobody owns 10.0.1.99");
}

#[test]
fn run_in_enters_the_namespace() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let a = vpc.add_subnet("10.0.1.0/24", None).unwrap();
    let inst = vpc.add_instance().unwrap();
    vpc.attach_eni(&inst, EniSpec::primary(&a)).unwrap();
    let names = inst.run_in(|| {
        std::fs::read_dir("/proc/self/task/self/net/dev")
            .map(|_| Vec::new())
            .unwrap_or_else(|_| {
                let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
                dev.lines()
                    .skip(2)
                    .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
                    .collect::<Vec<_>>()
            })
    });
    assert!(names.contains(&"eth0".to_string()), "{names:?}");
    assert!(names.contains(&"lo".to_string()), "{names:?}");
}

#[test]
fn drop_removes_namespaces_and_processes() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let prefix = vpc.prefix().to_string();
    let a = vpc
        .add_subnet("10.0.1.0/24", Some("2001:db8:1::/64"))
        .unwrap();
    let inst = vpc.add_instance().unwrap();
    vpc.attach_eni(&inst, EniSpec::primary(&a)).unwrap();
    vpc.add_client(&a, "10.0.1.50").unwrap();
    let mut sleeper = inst.command("sleep").arg("600").spawn().unwrap();
    let radvd = stdout(vpc.router(), &["ip", "netns", "pids", vpc.router().name()]);
    assert!(!radvd.trim().is_empty(), "radvd runs in the router");
    assert_eq!(list_with_prefix(&prefix).len(), 3);

    drop(vpc);
    assert_eq!(list_with_prefix(&prefix), Vec::<String>::new());
    assert!(
        sleeper.wait().unwrap().code().is_none(),
        "killed by a signal"
    );
    for pid in radvd.split_whitespace() {
        assert!(!is_alive(pid.parse().unwrap()), "radvd {pid} still runs");
    }
}

#[test]
fn a_panicking_test_still_cleans_up() {
    if !require_root() {
        return;
    }
    let prefix = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let vpc = Vpc::new().unwrap();
        *prefix.lock().unwrap() = vpc.prefix().to_string();
        vpc.add_instance().unwrap();
        panic!("test failure inside the VPC");
    });
    assert!(result.is_err());
    let prefix = prefix.into_inner().unwrap();
    assert!(!prefix.is_empty());
    assert_eq!(list_with_prefix(&prefix), Vec::<String>::new());
}

#[test]
fn leftovers_of_dead_processes_are_swept_and_live_ones_kept() {
    if !require_root() {
        return;
    }
    // A pid that just exited stands for a test run that was killed; pid 1 is alive.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let dead_ns = format!("{}0-i1", prefix_of_pid(dead));
    let live_ns = format!("{}0-i1", prefix_of_pid(1));
    for name in [&dead_ns, &live_ns] {
        let status = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let swept = sweep_leftovers();
    let live_left = list_with_prefix(&live_ns);
    std::process::Command::new("ip")
        .args(["netns", "del", &live_ns])
        .status()
        .unwrap();
    // Another test's first Vpc::new may have swept it first: what matters is that it is gone.
    assert!(list_with_prefix(&dead_ns).is_empty(), "{swept:?}");
    assert_eq!(
        live_left,
        vec![live_ns.clone()],
        "a live owner's namespace stays"
    );
    assert!(!swept.contains(&live_ns));
}

#[test]
fn frames_to_an_eni_for_an_address_it_does_not_own_are_dropped() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let a = vpc.add_subnet("10.0.1.0/24", None).unwrap();
    let b = vpc.add_subnet("10.0.2.0/24", None).unwrap();
    let inst = vpc.add_instance().unwrap();
    vpc.attach_eni(&inst, EniSpec::primary(&a)).unwrap();
    let eth1 = vpc
        .attach_eni(&inst, EniSpec::new("eth1", &a).ip("10.0.1.11"))
        .unwrap();
    // The instance would answer for 10.0.1.99 by eth1, but the VPC never gave it that address.
    inst.exec(&["ip", "addr", "add", "10.0.1.99/32", "dev", "eth1"])
        .unwrap();
    policy_route(
        &inst,
        "10.0.1.11",
        "eth1",
        "10.0.1.0/24",
        "10.0.1.1",
        "10001",
    );
    inst.exec(&["ip", "rule", "add", "from", "10.0.1.99", "lookup", "10001"])
        .unwrap();
    let far = vpc.add_client(&b, "10.0.2.10").unwrap();
    let near = vpc.add_client(&a, "10.0.1.50").unwrap();
    assert!(far.ping(ip("10.0.1.11"), 1, 2), "the path itself works");
    assert!(near.ping(ip("10.0.1.11"), 1, 2), "the path itself works");

    // Hosts that send straight to eth1's MAC anyway: the router (its own output) and a
    // neighbour on the bridge (forwarded port to port).
    for host in [vpc.router(), &near] {
        let dev = if host == vpc.router() {
            a.bridge()
        } else {
            "eth0"
        };
        host.exec(&[
            "ip",
            "neigh",
            "replace",
            "10.0.1.99",
            "lladdr",
            eth1.mac(),
            "dev",
            dev,
            "nud",
            "permanent",
        ])
        .unwrap();
    }
    // Counts requests that reach the instance: the check must stop them on the way in.
    inst.exec(&["nft", "add", "table", "ip", "seen"]).unwrap();
    inst.exec(&[
        "nft",
        "add",
        "chain",
        "ip",
        "seen",
        "in",
        "{ type filter hook prerouting priority 0; }",
    ])
    .unwrap();
    inst.exec(&[
        "nft",
        "add",
        "rule",
        "ip",
        "seen",
        "in",
        "ip",
        "daddr",
        "10.0.1.99",
        "counter",
    ])
    .unwrap();
    for client in [&far, &near] {
        let before = vpc.srcdst_drops().unwrap();
        assert!(
            !client.ping(ip("10.0.1.99"), 1, 1),
            "from {}",
            client.name()
        );
        assert!(
            vpc.srcdst_drops().unwrap() > before,
            "from {}",
            client.name()
        );
    }
    let seen = stdout(&inst, &["nft", "list", "chain", "ip", "seen", "in"]);
    assert!(seen.contains("counter packets 0 "), "{seen}");
}

#[test]
fn ipv6_replies_by_the_wrong_eni_fail_until_policy_routing() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let a = vpc
        .add_subnet("10.0.1.0/24", Some("2001:db8:1::/64"))
        .unwrap();
    let b = vpc
        .add_subnet("10.0.2.0/24", Some("2001:db8:2::/64"))
        .unwrap();
    let inst = vpc.add_instance().unwrap();
    // eth1 takes no default route from RAs, so replies deterministically leave by eth0.
    inst.sysctl("net.ipv6.conf.default.accept_ra_defrtr", "0")
        .unwrap();
    vpc.attach_eni(&inst, EniSpec::primary(&a).ipv6("2001:db8:1::10"))
        .unwrap();
    inst.sysctl("net.ipv6.conf.eth0.accept_ra_defrtr", "1")
        .unwrap();
    vpc.attach_eni(&inst, EniSpec::new("eth1", &a).ipv6("2001:db8:1::11"))
        .unwrap();
    inst.wait_ipv6_default("eth0", 20).unwrap();
    let routes = stdout(&inst, &["ip", "-6", "route", "show", "default"]);
    let gw = a.ipv6_router_link_local().to_string();
    assert!(routes.contains(&format!("via {gw} dev eth0")), "{routes}");
    let far = vpc
        .add_client_with(&b, &["10.0.2.10", "2001:db8:2::10"])
        .unwrap();
    assert!(far.ping(ip("2001:db8:1::10"), 2, 2), "eth0 over IPv6");

    let before = vpc.srcdst_drops().unwrap();
    assert!(
        !far.ping(ip("2001:db8:1::11"), 2, 1),
        "eth1 answered by eth0"
    );
    assert!(vpc.srcdst_drops().unwrap() > before);

    inst.exec(&[
        "ip", "-6", "route", "add", "default", "via", &gw, "dev", "eth1", "table", "10001",
    ])
    .unwrap();
    inst.exec(&[
        "ip",
        "-6",
        "rule",
        "add",
        "from",
        "2001:db8:1::11",
        "lookup",
        "10001",
    ])
    .unwrap();
    assert!(far.ping(ip("2001:db8:1::11"), 2, 2), "eth1 over IPv6");
}

#[test]
fn require_root_skips_locally_and_fails_under_ci() {
    if !require_root() {
        return;
    }
    // This very binary, run as an unprivileged user on one root test: from a world-readable
    // copy, since the build directory may sit under a private home.
    let dir = std::env::temp_dir().join(format!("symroute-testbed-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("testbed");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [(&dir, 0o755), (&exe, 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let run = |ci: Option<&str>| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .args(["--exact", "run_in_enters_the_namespace", "--nocapture"])
            .current_dir(&dir)
            .env_remove("CI");
        if let Some(v) = ci {
            cmd.env("CI", v);
        }
        cmd.output().unwrap()
    };
    let local = run(None);
    let ci = run(Some("true"));
    std::fs::remove_dir_all(&dir).unwrap();

    let text = String::from_utf8_lossy(&local.stdout);
    let loud = String::from_utf8_lossy(&local.stderr);
    assert!(local.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
    // The skip is said on stderr, past the harness's capture, and counted when the binary ends.
    assert!(
        loud.contains("SKIPPED run_in_enters_the_namespace: needs root"),
        "{loud}"
    );
    assert!(
        loud.contains("SKIPPED 1 root-only test(s) in this binary"),
        "{loud}"
    );
    let text = String::from_utf8_lossy(&ci.stdout);
    assert!(!ci.status.success(), "CI=true must fail: {text}");
    assert!(text.contains("1 failed"), "{text}");
}

/// `command_direct` runs the program itself inside the namespace (what the agent's benchmark
/// needs to read the agent's own peak RSS): same network namespace as `ip netns exec`, and the
/// spawned pid is the program's, not `ip`'s.
#[test]
fn command_direct_runs_the_program_itself_inside_the_namespace() {
    if !require_root() {
        return;
    }
    let vpc = Vpc::new().unwrap();
    let subnet = vpc.add_subnet("10.0.1.0/24", None).unwrap();
    let client = vpc.add_client(&subnet, "10.0.1.50").unwrap();
    let via_ip = stdout(&client, &["readlink", "/proc/self/ns/net"]);
    let mut direct = client.command_direct("sh").expect("namespace");
    direct.args(["-c", "readlink /proc/self/ns/net; echo $$"]);
    let child = direct
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap_or_default(), via_ip.trim());
    assert_ne!(
        via_ip.trim(),
        std::fs::read_link("/proc/self/ns/net")
            .unwrap()
            .to_string_lossy()
    );
    assert_eq!(
        lines.next().unwrap_or_default(),
        pid.to_string(),
        "the spawned process is the program"
    );
}
