//! symroute host agent: symmetric policy routing for secondary AWS ENIs.
//! `main.rs` only parses the command line and prints; everything else lives here.
pub mod cli;
pub mod commands;
pub mod discover;
pub mod error;
pub mod execute;
pub mod imds;
pub mod kernel;
pub mod lock;
pub mod logger;
pub mod metadata;
pub mod model;
pub mod ops;
pub mod persist;
pub mod plan;
pub mod platform;
pub mod report;
pub mod signals;
pub mod verify;
