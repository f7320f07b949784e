//! The worker's own errors (not a task's: those are
//! [`crate::outcome::TaskError`]).
//!
//! Start-up errors end [`crate::run_with`]; stream errors end one session
//! with the scheduler, are logged with their cause chain by the connection
//! loop, and lead to a reconnect.

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Why the worker could not start, or why a session with the scheduler
/// ended.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting is not usable; the message says which and why.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The working directory root could not be created, locked or cleared.
    #[error("working directory {}", path.display())]
    WorkingDir {
        /// The root.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another worker process uses the same working directory root; its
    /// stale-directory cleanup would delete this worker's task directories.
    #[error(
        "working directory {} is in use by another worker process: give each worker its own --working-dir",
        path.display()
    )]
    WorkingDirInUse {
        /// The root.
        path: PathBuf,
    },
    /// The database given with `--database-url` could not be opened.
    #[error("open the database for the content tasks")]
    Database(#[source] pulp_common::db::ConnectError),
    /// The health server could not listen on its address.
    #[error("listen for health checks on {addr}")]
    HealthBind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No connection to the scheduler could be made.
    #[error("connect to the scheduler")]
    Connect(#[source] tonic::transport::Error),
    /// The scheduler refused or ended the stream with an error status.
    #[error("the scheduler ended the stream with {code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// The scheduler closed the stream without an error.
    #[error("the scheduler closed the stream")]
    Closed,
    /// The scheduler sent something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The scheduler did not answer Hello in time.
    #[error("the scheduler did not answer Hello within {0:?}")]
    HandshakeTimeout(Duration),
    /// No `LeaseRenewed` came in time: the scheduler counts this stream as
    /// expired, so the worker registers again.
    #[error("the scheduler did not renew the lease in time")]
    LeaseNotRenewed,
    /// The outbound queue is full: the scheduler has stopped reading.
    #[error("the stream to the scheduler is stalled ({0} messages queued)")]
    Stalled(usize),
}

impl From<tonic::Status> for WorkerError {
    fn from(status: tonic::Status) -> Self {
        WorkerError::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

impl WorkerError {
    /// True for a refusal that retrying will not fix until an operator acts
    /// (a duplicate name, an invalid Hello, a protocol mismatch).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            WorkerError::Status {
                code: tonic::Code::AlreadyExists
                    | tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition,
                ..
            } | WorkerError::Protocol(_)
        )
    }
}

/// Displays an error with its whole cause chain, `outer: inner: root`,
/// skipping a cause that only repeats the message before it (as tonic's
/// transport errors do).
pub(crate) struct Chain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let message = cause.to_string();
            if message != last {
                write!(f, ": {message}")?;
                last = message;
            }
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_shows_causes() {
        let err = WorkerError::WorkingDir {
            path: "/x".into(),
            source: std::io::Error::other("disk on fire"),
        };
        assert_eq!(
            Chain(&err).to_string(),
            "working directory /x: disk on fire"
        );
    }

    #[test]
    fn permanent_refusals() {
        let err = WorkerError::from(tonic::Status::already_exists("name taken"));
        assert!(err.is_permanent());
        assert!(!WorkerError::from(tonic::Status::unavailable("db down")).is_permanent());
        assert!(!WorkerError::Closed.is_permanent());
    }
}
