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
         DetachNetworkInterface records and EC2 Instance State-change Notifications; check the \
         EventBridge rule that targets it"
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

    #[error("SSM command {command_id} on {instance_id} ended {status} ({details}): {output}")]
    CommandFailed {
        command_id: String,
        instance_id: String,
        status: String,
        details: String,
        output: String,
    },

    #[error(
        "SSM command {command_id} on {instance_id} is still {status} after {secs} s \
         (SYMROUTE_WAIT_SECONDS); output so far: {output}"
    )]
    CommandTimeout {
        command_id: String,
        instance_id: String,
        status: String,
        secs: u64,
        output: String,
    },

    #[error("SSM command {command_id} was sent to {instance_id} but its result could not be read: {cause}")]
    Poll {
        command_id: String,
        instance_id: String,
        cause: Box<Error>,
    },
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

    pub fn is_throttling(&self) -> bool {
        self.aws_code()
            .is_some_and(|c| THROTTLING_CODES.contains(&c))
    }

    /// SSM answers this until the instance's agent has registered: worth waiting for.
    pub fn is_invalid_instance(&self) -> bool {
        self.aws_code() == Some("InvalidInstanceId")
    }

    /// SSM answers this for a moment right after SendCommand.
    pub fn is_invocation_missing(&self) -> bool {
        self.aws_code() == Some("InvocationDoesNotExist")
    }

    /// A stable name for the error answer's `errorType` and for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config { .. } => "Symroute.Config",
            Error::BadEvent(_) => "Symroute.BadEvent",
            Error::Unsupported(_) => "Symroute.UnsupportedEvent",
            Error::Aws { .. } => "Symroute.AwsApi",
            Error::StillAttaching { .. } => "Symroute.StillAttaching",
            Error::CommandFailed { .. } => "Symroute.CommandFailed",
            Error::CommandTimeout { .. } => "Symroute.CommandTimeout",
            Error::Poll { .. } => "Symroute.CommandUnknown",
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

/// Shortens untrusted text before it goes into an answer or a log line, so a hostile event cannot
/// blow up either.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}
