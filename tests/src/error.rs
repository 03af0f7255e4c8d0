//! The testbed's one error type.

use std::io;

/// Everything that can go wrong while building or driving the testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tool ran and reported failure; its stderr usually says why.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    /// A tool could not be started at all.
    #[error("cannot run `{cmd}`: {source} (is it installed? run `make setup-apt`)")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    /// A caller passed a value the testbed cannot use.
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },
    /// Entering a network namespace failed (needs root and a namespace that still exists).
    #[error("cannot enter network namespace `{ns}`: {source}")]
    Setns {
        ns: String,
        #[source]
        source: io::Error,
    },
    /// Something did not happen within its bound.
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl ToString,
    ) -> Self {
        Error::Invalid {
            what,
            value: value.into(),
            reason: reason.to_string(),
        }
    }
}
