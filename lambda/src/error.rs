//! The Lambda's one error type. Every variant ends up as an error answer, so Lambda's retries and
//! the on-failure destination keep the event: messages say what happened and what to look at.

use lambda_runtime::Diagnostic;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: environment variable {var} {reason}")]
    Config { var: &'static str, reason: String },

    #[error("malformed event: {0}")]
    BadEvent(String),

    #[error(
        "unsupported event {0}: this function handles CloudTrail AttachNetworkInterface and \
         DetachNetworkInterface records, EC2 Instance State-change Notifications and EC2 Command \
         Invocation Status-change Notifications; check the EventBridge rule that targets it"
    )]
    Unsupported(String),

    #[error("{operation} failed: {code}: {message}")]
    Aws {
        operation: &'static str,
        code: String,
        message: String,
    },

    #[error("{eni} is still attaching after {secs} s; the event will be retried")]
    StillAttaching { eni: String, secs: u64 },

    #[error(
        "Systems Manager does not know {instance} yet, launched {secs} s ago: its SSM Agent is \
         probably still registering; the event will be retried"
    )]
    NotRegisteredYet { instance: String, secs: u64 },

    /// Boxed: it carries the agent's report, and every Result in the crate pays for the
    /// largest variant.
    #[error("{0}")]
    CommandFailed(Box<CommandFailure>),
}

/// A command of ours that ended without success, with what the instance said.
#[derive(Debug)]
pub struct CommandFailure {
    pub command_id: String,
    pub instance_id: String,
    pub action: String,
    pub target: String,
    pub status: String,
    pub response_code: i32,
    pub cause: String,
    pub report: String,
}

impl std::fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SSM command {} ({} {}) on {} failed: {} [status {}, exit code {}]; agent report: {}",
            self.command_id,
            self.action,
            self.target,
            self.instance_id,
            self.cause,
            self.status,
            self.response_code,
            self.report
        )
    }
}

/// AWS error codes that mean "slow down", across the EC2 (query) and SSM (JSON) protocols.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "EC2ThrottledException",
];

impl Error {
    pub fn aws(
        operation: &'static str,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Aws {
            operation,
            code: code.into(),
            message: message.into(),
        }
    }

    fn aws_code(&self) -> Option<&str> {
        match self {
            Error::Aws { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn is_throttling(&self) -> bool {
        self.aws_code()
            .is_some_and(|c| THROTTLING_CODES.contains(&c))
    }

    /// A call that may or may not have reached the service: 5xx, a broken or timed-out
    /// connection, an unreadable answer. Before sending such a call again, look whether the
    /// first one took effect.
    pub(crate) fn is_uncertain(&self) -> bool {
        self.aws_code().is_some_and(|c| {
            matches!(
                c,
                "DispatchFailure"
                    | "Timeout"
                    | "ResponseError"
                    | "Unknown"
                    | "InternalServerError"
                    | "InternalError"
                    | "ServiceUnavailable"
            ) || c.starts_with("HTTP5")
        })
    }

    /// A stable name for the error answer's `errorType` and for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config { .. } => "Symroute.Config",
            Error::BadEvent(_) => "Symroute.BadEvent",
            Error::Unsupported(_) => "Symroute.UnsupportedEvent",
            Error::Aws { .. } => "Symroute.AwsApi",
            Error::StillAttaching { .. } => "Symroute.StillAttaching",
            Error::NotRegisteredYet { .. } => "Symroute.NotRegisteredYet",
            Error::CommandFailed(_) => "Symroute.CommandFailed",
        }
    }
}

impl From<Error> for Diagnostic {
    fn from(e: Error) -> Self {
        Diagnostic {
            error_type: e.kind().to_string(),
            error_message: e.to_string(),
        }
    }
}

/// Shortens untrusted text before it goes into an answer or a log line (one definition, shared
/// with the agent).
pub use symroute_ids::clip;
