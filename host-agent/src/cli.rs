//! The command line: the documented contract (host-agent/README.md, --help).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::{EniId, Mac, Target};

#[derive(Parser, Debug)]
#[command(
    name = "symroute",
    version,
    about = "Make secondary AWS ENIs route symmetrically: replies leave by the interface the request came in on.",
    long_about = "Make secondary AWS ENIs route symmetrically: replies leave by the interface the request came in on.\n\n\
For each secondary ENI, symroute reads instance metadata (IMDSv2) and installs, over netlink:\n\
a route table numbered 10000 + 100*network_card + device_number holding the subnet route and a\n\
default route via the subnet's router, and per address of the ENI three rules: `to <each VPC\n\
block> lookup <table>` (priority table-2000), `lookup main suppress_prefixlength 0` (table-1000:\n\
local peers such as docker0 or a VPN keep the main table's routes) and `lookup <table>` (priority\n\
= table). The primary ENI and the main table's default route are left alone.",
    after_help = "Examples:\n  symroute apply                  configure every secondary ENI\n  symroute apply --eni eni-0a9c4b60624c0e41d --wait 60\n  symroute apply --dry-run        show the changes, make none\n  symroute status --json\n  symroute remove --stale         clean up after detached ENIs\n  symroute install                handle every later attach on the host, at once\n  symroute apply --connmark on    answer DNAT'd services (Docker published ports) by their ENI too\n\n\
Exit codes: 0 done or nothing to do; 1 failed (the host is left as it was); 2 bad usage or input;\n3 the ENI did not appear within --wait; 4 the routing works but could not be persisted (files left as\nthey were: it will not survive a reboot).\n\
Environment: AWS_EC2_METADATA_SERVICE_ENDPOINT overrides the IMDS address (default http://169.254.169.254, then\nhttp://[fd00:ec2::254] when IPv4 cannot connect; AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv4|IPv6 picks one);\nSYMROUTE_LOG=debug|info|warn|error sets the log level (default info; logs go to stderr);\nSYMROUTE_NFT names the nft the connmark mode runs."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print the report as JSON (one document on stdout; logs stay on stderr). Before or after
    /// the subcommand.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Install symmetric routing for secondary ENIs (all of them by default).
    Apply(ApplyArgs),
    /// Remove the routing symroute installed.
    Remove(RemoveArgs),
    /// Show every ENI: link, addresses, table, rules, and whether it routes symmetrically.
    Status(StatusArgs),
    /// Install the on-host trigger: udev starts `symroute hotplug add` for every ENI as it
    /// appears (and `hotplug remove` as it goes), so attaches no longer wait for CloudTrail.
    Install(InstallArgs),
    /// Remove the on-host trigger.
    Uninstall(UninstallArgs),
    /// What the trigger's units run for one interface event (also by hand): `add` applies for
    /// the ENI with that MAC (nothing for the primary), `remove` removes what was set up for it.
    Hotplug(HotplugArgs),
    /// The periodic check (what `symroute-check.timer` runs): `apply --all --wait 0` that
    /// re-reads from instance metadata only what can change on an attached ENI (addresses,
    /// prefixes, IPv6 subnets, the VPC's blocks), at most 200 requests a second, and changes
    /// nothing unless something drifted.
    Check(CheckArgs),
}

#[derive(Args, Debug, Clone, Default)]
#[group(id = "target", multiple = false)]
pub struct TargetArgs {
    /// Every secondary ENI (the default for apply).
    #[arg(long, group = "target")]
    pub all: bool,
    /// Only this ENI, e.g. eni-0a9c4b60624c0e41d.
    #[arg(long, value_name = "ENI_ID", value_parser = parse_eni, group = "target")]
    pub eni: Option<EniId>,
    /// Only the ENI with this MAC address, e.g. 02:1a:2b:3c:4d:5e.
    #[arg(long, value_name = "MAC", value_parser = parse_mac, group = "target")]
    pub mac: Option<Mac>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum PersistMode {
    /// Detect the host's network manager and persist in its configuration.
    #[default]
    Auto,
    /// Live routing only; nothing written to disk.
    None,
    /// systemd-networkd: a drop-in for the .network file that matches the interface.
    Networkd,
    /// netplan: a file merged with cloud-init's definition of the interface.
    Netplan,
    /// NetworkManager: a keyfile profile matched by MAC.
    Nm,
    /// network-scripts: ifcfg-, route- and rule- files.
    Ifcfg,
    /// ifupdown: an interfaces.d stanza with post-up and pre-down lines.
    Ifupdown,
    /// A udev rule and a systemd unit that run `symroute apply` when the ENI appears.
    Unit,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Where to persist the routing across reboots.
    #[arg(long, value_enum, default_value_t = PersistMode::Auto, value_name = "MODE")]
    pub persist: PersistMode,
    /// Write persisted files under DIR instead of / (for tests and image builds).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Seconds to wait for a just-attached ENI to appear in metadata and as a kernel link.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub wait: u64,
    /// Print the changes that would be made, and make none.
    #[arg(long)]
    pub dry_run: bool,
    /// Configure ENIs that another tool already routes symmetrically, and the primary interface
    /// when --eni or --mac names it.
    #[arg(long)]
    pub force: bool,
    /// After a successful apply, install the on-host trigger (as `symroute install` does) unless
    /// a native tool handles hot-plugged ENIs here. The SSM document passes it.
    #[arg(long, conflicts_with = "dry_run")]
    pub install_trigger: bool,
    /// The connmark mode for the ENIs of this run: `on` answers every connection that arrived
    /// on an ENI through that ENI whatever the reply's source address, so DNAT'd services
    /// (Docker published ports, port-forwards) answer too; conntrack marks the flow on arrival
    /// (an nftables table per ENI, needs `nft`) and a `fwmark` rule sends its replies to the
    /// ENI's table. `off` removes it. Without the option, each ENI keeps the mode it has.
    #[arg(long, value_enum, value_name = "on|off")]
    pub connmark: Option<Switch>,
    /// Naming the primary is a no-op rather than an error (`hotplug add` at boot).
    #[arg(skip)]
    pub primary_is_noop: bool,
    /// Take the metadata that cannot change on an attached ENI from what earlier runs kept,
    /// and pace the requests (`check`).
    #[arg(skip)]
    pub periodic: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Write under DIR instead of / (image builds); nothing is reloaded then.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print what would be written, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Install even where amazon-ec2-net-utils, cloud-init's hotplug or nm-cloud-setup already
    /// handle hot-plugged ENIs.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct UninstallArgs {
    /// The trigger lives under DIR instead of /.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print what would be deleted, and delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum HotplugEvent {
    /// The interface appeared: apply for it (waiting up to 60 s for its metadata).
    Add,
    /// The interface went: remove what symroute set up for it.
    Remove,
}

#[derive(Args, Debug)]
pub struct HotplugArgs {
    #[arg(value_enum)]
    pub event: HotplugEvent,
    /// The interface's MAC, e.g. 02:1a:2b:3c:4d:5e.
    #[arg(long, value_name = "MAC", value_parser = parse_mac)]
    pub mac: Mac,
    /// Persisted files live under DIR instead of / (tests).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Only what is left by ENIs no longer attached (or addresses no longer assigned).
    #[arg(long, conflicts_with_all = ["all", "eni", "mac"])]
    pub stale: bool,
    /// Where the routing was persisted.
    #[arg(long, value_enum, default_value_t = PersistMode::Auto, value_name = "MODE")]
    pub persist: PersistMode,
    /// Persisted files live under DIR instead of /.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print the changes that would be made, and make none.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Where to persist the routing across reboots.
    #[arg(long, value_enum, default_value_t = PersistMode::Auto, value_name = "MODE")]
    pub persist: PersistMode,
    /// Persisted files, and what earlier runs kept of the metadata (/run/symroute), live under
    /// DIR instead of / (tests).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

impl TargetArgs {
    /// The one target type; `--all` or nothing is every secondary ENI.
    pub fn target(&self) -> Target {
        match (&self.eni, self.mac) {
            (Some(e), _) => Target::Eni(e.clone()),
            (_, Some(m)) => Target::Mac(m),
            _ => Target::All,
        }
    }
}

fn parse_eni(s: &str) -> Result<EniId, String> {
    s.parse()
}

fn parse_mac(s: &str) -> Result<Mac, String> {
    s.parse()
}
