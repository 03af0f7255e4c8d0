//! symroute host agent: symmetric policy routing for secondary AWS ENIs.
//! `main.rs` only parses the command line and prints; everything else lives here.
pub mod cli;
pub mod commands;
pub mod connmark;
pub(crate) mod discover;
pub mod error;
pub(crate) mod execute;
pub mod fixed_metadata;
pub mod guard;
pub mod imds;
pub mod kernel;
pub(crate) mod lock;
pub mod logger;
pub(crate) mod metadata;
pub mod model;
pub mod ops;
pub mod persist;
pub mod plan;
pub(crate) mod platform;
pub mod report;
pub mod signals;
pub mod trigger;
pub mod verify;
