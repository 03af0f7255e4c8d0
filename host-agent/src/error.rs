//! The agent's one error type. Every variant maps to a documented exit code (see `exit_code`),
//! and its message is a single line a user can act on.

use std::time::Duration;

/// Exit codes (the documented contract, README and --help): 0 done or nothing to do; 1 failed, host left as it
/// was; 2 bad usage or input; 3 the ENI did not appear within `--wait`; 4 the routing works but
/// could not be persisted (the files were left as they were).
pub(crate) const EXIT_OK: u8 = 0;
pub(crate) const EXIT_FAILED: u8 = 1;
pub(crate) const EXIT_BAD_INPUT: u8 = 2;
pub(crate) const EXIT_NOT_APPEARED: u8 = 3;
pub(crate) const EXIT_NOT_PERSISTED: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),

    #[error("invalid instance metadata at {path}: {reason}")]
    BadMetadata { path: String, reason: String },

    #[error("instance metadata service at {endpoint} failed: {reason} (is this an EC2 instance with IMDS enabled? set AWS_EC2_METADATA_SERVICE_ENDPOINT to override)")]
    Imds { endpoint: String, reason: String },

    #[error("netlink: {context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: crate::kernel::NlError,
    },

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

    #[error("could not take the run lock: {context}: {source}")]
    LockIo {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{failed}: {source}; {rollback}")]
    ApplyFailed {
        failed: String,
        #[source]
        source: crate::kernel::NlError,
        rollback: Rollback,
    },

    #[error("verification failed: {0}")]
    Verify(String),

    /// The run's changes moved a path of the primary interface's traffic; they were undone
    /// (the message says so, and what could not be brought back).
    #[error("refused: {0}")]
    PrimaryHarmed(String),

    #[error("persisting the routing failed: {0}")]
    Persist(String),

    #[error("persisting the routing failed: {context}: {source}")]
    PersistIo {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("connmark mode: {context}: {detail}")]
    Connmark { context: String, detail: String },

    /// A connmark failure after which the run's live changes were undone.
    #[error("{source}; live changes: {rollback}")]
    ConnmarkRolledBack {
        #[source]
        source: Box<Error>,
        rollback: Rollback,
    },

    /// A persistence failure after a good apply: the live routing works and is kept (undoing it
    /// would break the ENI now for a file problem that only matters at the next boot).
    #[error("{source}; the live routing works and was kept, but will not survive a reboot until this is fixed and apply runs again")]
    NotPersisted {
        #[source]
        source: Box<Error>,
    },

    /// A persistence failure after which the live changes were undone too.
    #[error("{source}; live changes: {rollback}")]
    PersistRolledBack {
        #[source]
        source: Box<Error>,
        rollback: Rollback,
    },
}

/// What undoing a run's changes did: how many it undid, and what it could not undo. The one
/// wording of every "rolled back" in the agent's messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollback {
    pub undone: usize,
    pub errors: Vec<String>,
}

impl std::fmt::Display for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rolled back {} change(s)", self.undone)?;
        if !self.errors.is_empty() {
            write!(f, "; rollback incomplete: {}", self.errors.join("; "))?;
        }
        Ok(())
    }
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::BadMetadata { .. } => EXIT_BAD_INPUT,
            Error::NotAppeared { .. } => EXIT_NOT_APPEARED,
            Error::NotPersisted { .. } => EXIT_NOT_PERSISTED,
            Error::Imds { .. }
            | Error::Netlink { .. }
            | Error::Locked(_)
            | Error::Lock(_)
            | Error::LockIo { .. }
            | Error::ApplyFailed { .. }
            | Error::Verify(_)
            | Error::PrimaryHarmed(_)
            | Error::Persist(_)
            | Error::PersistIo { .. }
            | Error::PersistRolledBack { .. }
            | Error::Connmark { .. }
            | Error::ConnmarkRolledBack { .. } => EXIT_FAILED,
        }
    }

    pub(crate) fn netlink(context: impl Into<String>, source: crate::kernel::NlError) -> Self {
        Error::Netlink {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn lock_io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::LockIo {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn bad_metadata(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BadMetadata {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;
    use crate::kernel::NlError;

    #[test]
    fn errors_keep_their_cause_as_source_and_say_rolled_back_one_way() {
        let e = Error::ApplyFailed {
            failed:
                "`ip rule add from 10.0.1.20/32 lookup 10001 priority 10001 protocol 177` failed"
                    .into(),
            source: NlError::Errno(22, "Invalid argument (os error 22)".into()),
            rollback: Rollback {
                undone: 2,
                errors: vec![],
            },
        };
        assert_eq!(
            e.to_string(),
            "`ip rule add from 10.0.1.20/32 lookup 10001 priority 10001 protocol 177` failed: Invalid argument (os error 22); rolled back 2 change(s)"
        );
        assert!(e.source().unwrap().to_string().contains("os error 22"));
        let e = Error::PersistRolledBack {
            source: Box::new(Error::Persist(
                "netplan generate rejected the configuration".into(),
            )),
            rollback: Rollback {
                undone: 3,
                errors: vec!["`ip rule del ...`: No such file".into()],
            },
        };
        assert_eq!(
            e.to_string(),
            "persisting the routing failed: netplan generate rejected the configuration; live changes: rolled back 3 change(s); rollback incomplete: `ip rule del ...`: No such file"
        );
        assert_eq!(e.exit_code(), EXIT_FAILED);
        let io = Error::lock_io(
            "/run/symroute",
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert!(
            io.source().is_some()
                && io
                    .to_string()
                    .starts_with("could not take the run lock: /run/symroute: ")
        );
    }
}
