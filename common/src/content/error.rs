//! [`ContentError`]: why a content operation failed.
//!
//! The scheduler maps each variant to a gRPC status (`api::content`), the
//! worker to a task error whose `reason` names the variant.

use crate::names::InvalidName;
use sea_orm::DbErr;

/// Why a content operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Malformed or inconsistent input; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// A repository, version, content unit or artifact does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing exists already (a repository name, a content key).
    #[error("{0}")]
    AlreadyExists(String),
    /// The request does not fit the current state (deleting the only
    /// version of a repository).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The task's row no longer says it runs on this worker and attempt (it
    /// was cancelled, or its worker was declared lost): its writes were
    /// rolled back.
    #[error(
        "task {task_id} no longer runs as attempt {attempt} on worker {worker}; its changes were rolled back"
    )]
    Fenced {
        /// The task.
        task_id: String,
        /// The worker that ran it.
        worker: String,
        /// The attempt token of the run.
        attempt: i64,
    },
    /// The task was cancelled; its changes were rolled back.
    #[error("the task was cancelled; its changes were rolled back")]
    Canceled,
    /// Reading or writing the storage directory failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
}

impl From<InvalidName> for ContentError {
    fn from(err: InvalidName) -> Self {
        ContentError::Invalid(err.0)
    }
}

impl ContentError {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ContentError::Io {
            context: context.into(),
            source,
        }
    }

    /// True when a database error is a unique-constraint violation.
    pub fn is_unique_violation(err: &DbErr) -> bool {
        matches!(
            err.sql_err(),
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
        )
    }
}
