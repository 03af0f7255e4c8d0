//! The one renderer of `ip` arguments in files that other tools run: network-scripts'
//! `route-`/`rule-` files (`ifup-routes` runs `ip [-6] route|rule add <line>` for each line) and
//! ifupdown's hook lines. Everything is stamped with symroute's protocol number, like the live
//! state. (The report's lines, `ops.rs`, say the same things in the order `ip` prints them.)

use std::fmt::Write as _;

use crate::model::RTPROT_SYMROUTE;
use crate::ops::{RouteSpec, RuleSpec};

/// `-6 ` for IPv6, nothing for IPv4: what goes between `ip ` and the object.
pub(crate) fn family(v6: bool) -> &'static str {
    if v6 {
        "-6 "
    } else {
        ""
    }
}

/// A route as `ip route add|replace` takes it.
pub(crate) fn route(r: &RouteSpec) -> String {
    let mut s = if r.is_default() {
        "default".to_string()
    } else {
        r.dst.to_string()
    };
    if let Some(g) = r.gateway {
        let _ = write!(s, " via {g}");
    }
    let _ = write!(s, " dev {}", r.dev);
    if r.scope_link {
        s.push_str(" scope link");
    }
    if let Some(p) = r.prefsrc {
        let _ = write!(s, " src {p}");
    }
    if let Some(m) = r.metric {
        let _ = write!(s, " metric {m}");
    }
    let _ = write!(s, " table {} proto {RTPROT_SYMROUTE}", r.table);
    s
}

/// The `ip rule` selector of a rule (after `ip rule add|del`), without the protocol.
pub(crate) fn rule(r: &RuleSpec) -> String {
    let mut s = format!("from {}", r.src);
    if let Some(d) = r.dst {
        let _ = write!(s, " to {d}");
    }
    let _ = write!(s, " lookup {}", r.table);
    if let Some(n) = r.suppress_prefixlength {
        let _ = write!(s, " suppress_prefixlength {n}");
    }
    let _ = write!(s, " priority {}", r.priority);
    s
}

/// A whole `ip [-6] rule <verb> ... protocol 177` command.
pub(crate) fn rule_cmd(verb: &str, r: &RuleSpec) -> String {
    format!(
        "ip {}rule {verb} {} protocol {RTPROT_SYMROUTE}",
        family(r.src.addr().is_ipv6()),
        rule(r)
    )
}

/// A whole `ip [-6] route <verb> ...` command.
pub(crate) fn route_cmd(verb: &str, r: &RouteSpec) -> String {
    format!(
        "ip {}route {verb} {}",
        family(r.dst.addr().is_ipv6()),
        route(r)
    )
}
