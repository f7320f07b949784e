//! The errors a command can end with.
//!
//! A failed call shows the gRPC status code by its canonical name
//! (`NOT_FOUND: task ... not found`), which is what a user can look up in
//! the contract; tonic's own `Display` gives a sentence instead.

use tonic::{Code, Status};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The `--scheduler` value is not a usable URL.
    #[error("invalid scheduler URL '{url}'")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What tonic found wrong with it.
        #[source]
        source: tonic::transport::Error,
    },
    /// No connection could be made to the scheduler.
    #[error("cannot connect to the scheduler at {url}")]
    Connect {
        /// The URL connected to.
        url: String,
        /// The transport's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS or token settings are unusable.
    #[error("{0}")]
    Credentials(String),
    /// The scheduler answered a call with an error status.
    #[error("{}", status_text(.0))]
    Rpc(Status),
    /// The watch stream ended before the task reached a final state, and
    /// the task still was not final when asked once more.
    #[error("stopped following task {id}: the scheduler ended the stream while it was {state}")]
    WatchEnded {
        /// The task's id.
        id: String,
        /// The task's last known state.
        state: String,
    },
    /// A local file (an upload) could not be read.
    #[error("{0}")]
    File(String),
    /// Writing the output failed (for example a closed pipe).
    #[error("cannot write output")]
    Output(#[from] std::io::Error),
}

// Not `#[from]`: that would also make the status the error's source, and
// the cause chain would repeat the message in tonic's own words.
impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        CliError::Rpc(status)
    }
}

/// `CODE: message`, or only `CODE` when the status has no message.
fn status_text(status: &Status) -> String {
    let code = code_name(status.code());
    if status.message().is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {}", status.message())
    }
}

/// The canonical name of a gRPC status code, as in the gRPC specification.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_show_the_code_name() {
        let err = CliError::from(Status::not_found("task 0190 not found"));
        assert_eq!(err.to_string(), "NOT_FOUND: task 0190 not found");
        let err = CliError::from(Status::new(Code::FailedPrecondition, ""));
        assert_eq!(err.to_string(), "FAILED_PRECONDITION");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        let err = anyhow::Error::from(CliError::from(Status::not_found("gone")));
        assert_eq!(format!("{err:#}"), "NOT_FOUND: gone");
    }
}
