//! symroute's testbed: a simulated AWS VPC in Linux network namespaces and an IMDSv2
//! stand-in. See tests/README.md for a tour.

mod cmd;
pub mod demo;
mod eni;
mod error;
mod host;
pub mod imds;
pub mod lab;
pub mod moto;
mod netns;
mod ping;
mod radvd;
mod root;
pub mod runtime_api;
mod srcdst;
mod subnet;
mod vpc;

pub use eni::{Config, Eni, EniSpec};
pub use error::{Error, Result};
pub use host::Host;
pub use imds::{EniMeta, Imds, InstanceMeta, Request};
pub use netns::{is_alive, list_with_prefix, prefix_of_pid, sweep_leftovers, NAME_PREFIX};
pub use ping::{PingStats, PingStream};
pub use root::require_root;
pub use srcdst::nft_packets;
pub use subnet::Subnet;
pub use vpc::{Instance, Vpc, KEEP_ENV, OWNER_ID};

/// This checkout's root (the testbed lives in `<repo>/tests`), for the scripts, the venv and
/// the built binaries that tests and the demo use.
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testbed lives in <repo>/tests")
        .to_path_buf()
}
