//! `ip` commands for the files that other tools run: network-scripts' `route-`/`rule-` files
//! (`ifup-routes` runs `ip [-6] route|rule add <line>` for each line) and ifupdown's hook lines.
//! The routes and rules themselves are rendered by their `Display` (ops.rs), the one renderer
//! the report uses too; what is persisted is always symroute's, stamped with its protocol
//! number like the live state.

use crate::ops::{family_flag, RouteSpec, RuleSpec};

/// A whole `ip [-6] rule <verb> ...` command.
pub(crate) fn rule_cmd(verb: &str, r: &RuleSpec) -> String {
    format!("ip {}rule {verb} {r}", family_flag(r.src.addr().is_ipv6()))
}

/// A whole `ip [-6] route <verb> ...` command.
pub(crate) fn route_cmd(verb: &str, r: &RouteSpec) -> String {
    format!("ip {}route {verb} {r}", family_flag(r.dst.addr().is_ipv6()))
}
