//! The agent's one error type. Every variant maps to a documented exit code (see `exit_code`),
//! and its message is a single line a user can act on.

use std::time::Duration;

/// Exit codes (the documented contract, README and --help): 0 done or nothing to do; 1 failed, host left as it
/// was; 2 bad usage or input; 3 the ENI did not appear within `--wait`.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
pub const EXIT_NOT_APPEARED: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),

    #[error("invalid instance metadata at {path}: {reason}")]
    BadMetadata { path: String, reason: String },

    #[error("instance metadata service at {endpoint} failed: {reason} (is this an EC2 instance with IMDS enabled? set AWS_EC2_METADATA_SERVICE_ENDPOINT to override)")]
    Imds { endpoint: String, reason: String },

    #[error("netlink: {0}")]
    Netlink(String),

    #[error("{what} did not appear within {}s: {detail}", waited.as_secs())]
    NotAppeared {
        what: String,
        waited: Duration,
        detail: String,
    },

    #[error("another symroute run is still working after {}s; try again later", .0.as_secs())]
    Locked(Duration),

    #[error("could not take the run lock: {0}")]
    Lock(String),

    #[error("{failed}: {cause}; rolled back {undone} change(s){}", rollback_note(.rollback_errors))]
    ApplyFailed {
        failed: String,
        cause: String,
        undone: usize,
        rollback_errors: Vec<String>,
    },

    #[error("verification failed: {0}")]
    Verify(String),

    #[error("persisting the routing failed: {0}")]
    Persist(String),
}

fn rollback_note(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!("; rollback incomplete: {}", errors.join("; "))
    }
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::BadMetadata { .. } => EXIT_BAD_INPUT,
            Error::NotAppeared { .. } => EXIT_NOT_APPEARED,
            Error::Imds { .. }
            | Error::Netlink(_)
            | Error::Locked(_)
            | Error::Lock(_)
            | Error::ApplyFailed { .. }
            | Error::Verify(_)
            | Error::Persist(_) => EXIT_FAILED,
        }
    }

    pub fn bad_metadata(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BadMetadata {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
