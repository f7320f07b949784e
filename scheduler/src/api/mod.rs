//! The gRPC edge: protobuf in, validated domain types to the engine and the
//! store, protobuf out. Every error becomes a status a person can act on.
//!
//! - [`tasks`] serves `pulp.tasking.v1.Tasks` (dispatch, enqueue, get,
//!   list, cancel, watch).
//! - [`task_groups`] serves `pulp.tasking.v1.TaskGroups`.
//! - [`workers`] serves `pulp.tasking.v1.Workers` (the worker stream and the
//!   list).
//! - [`content`] serves `pulp.content.v1` (artifacts, content units,
//!   repositories; `Modify` dispatches `add_and_remove`).
//! - [`validate`] builds a `NewTask` from a request.
//! - [`convert`] turns stored records into protobuf.

pub mod content;
pub mod convert;
pub mod task_groups;
pub mod tasks;
pub mod validate;
pub mod workers;

use crate::engine::EngineError;
use pulp_common::names::InvalidName;
use sea_orm::DbErr;
use tonic::Request;
use tonic::Status;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such task, group or worker.
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The thing exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The database is unreachable: retry.
    #[error("{0}")]
    Unavailable(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<InvalidName> for ApiError {
    fn from(err: InvalidName) -> Self {
        ApiError::InvalidArgument(err.0)
    }
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        if pulp_common::db::is_unavailable(&err) {
            ApiError::Unavailable(format!("the database is unavailable, retry later: {err}"))
        } else {
            tracing::error!(error = %err, "database error");
            ApiError::Internal(err.to_string())
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Unavailable(why) => {
                ApiError::Unavailable(format!("the database is unavailable, retry later: {why}"))
            }
            EngineError::NotFound(why) => ApiError::NotFound(why),
            EngineError::FailedPrecondition(why) => ApiError::FailedPrecondition(why),
            EngineError::AlreadyExists(why) => ApiError::AlreadyExists(why),
            EngineError::ShuttingDown => {
                ApiError::Unavailable("the scheduler is shutting down".into())
            }
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::AlreadyExists(m) => Status::already_exists(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Internal(m) => Status::internal(m),
        }
    }
}

/// A request to pass on to the leader: the same message and metadata.
pub(crate) fn forward<T>(request: Request<T>) -> Request<T> {
    let (metadata, _, message) = request.into_parts();
    Request::from_parts(metadata, tonic::Extensions::default(), message)
}
