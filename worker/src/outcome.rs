//! How a task ended: the [`TaskError`] a task returns, and the outcome the
//! runner reports.
//!
//! A task body returns `Result<serde_json::Value, TaskError>`; the runner
//! turns that (or a panic, a cancellation, a timeout) into an `Outcome`,
//! and the connection loop sends it as a `TaskFinished` message, the only
//! place the prost types appear.

use pulp_common::json::json_to_value;
use pulp_common::names::TaskId;
use pulp_common::proto::tasking::v1 as pb;

/// The `reason` strings the worker puts in task errors.
pub mod reason {
    /// The task returned an error of its own.
    pub const TASK_ERROR: &str = "task error";
    /// The task panicked.
    pub const PANICKED: &str = "task panicked";
    /// The task ran past its timeout.
    pub const TIMED_OUT: &str = "timed out";
    /// The worker shut down before the task finished.
    pub const SHUTDOWN: &str = "aborted during worker shutdown";
    /// The task's arguments have the wrong shape.
    pub const INVALID_ARGUMENTS: &str = "invalid arguments";
    /// The task stopped because it was cancelled.
    pub const CANCELED: &str = "canceled";
    /// The worker could not renew its lease and stopped the task, because
    /// the scheduler would soon consider it lost.
    pub const WORKER_LOST: &str = "worker lost";
    /// The worker does not offer the assigned func.
    pub const UNKNOWN_TASK: &str = "unknown task";
    /// The worker refused an assignment beyond its slots.
    pub const NO_FREE_SLOT: &str = "no free slot";
    /// Something the task works on does not exist (any more): a repository,
    /// a version, a content unit.
    pub const NOT_FOUND: &str = "not found";
    /// The task's row no longer says it runs on this worker and attempt, so
    /// its changes were rolled back (DESIGN.md section 7).
    pub const FENCED: &str = "fenced";
    /// The database failed or is unreachable.
    pub const DATABASE_ERROR: &str = "database error";
    /// The worker itself failed around the task (e.g. its working directory
    /// could not be created).
    pub const WORKER_ERROR: &str = "worker error";
}

/// Why a task failed: what the scheduler stores as the task's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {description}")]
pub struct TaskError {
    /// What went wrong, for a person.
    pub description: String,
    /// The class of failure, e.g. [`reason::TASK_ERROR`].
    pub reason: String,
    /// Detail for debugging; may be empty.
    pub traceback: String,
}

impl TaskError {
    /// An error of the given class.
    pub fn new(reason: impl Into<String>, description: impl Into<String>) -> TaskError {
        TaskError {
            description: description.into(),
            reason: reason.into(),
            traceback: String::new(),
        }
    }

    /// A failure of the task itself ([`reason::TASK_ERROR`]).
    pub fn task(description: impl Into<String>) -> TaskError {
        TaskError::new(reason::TASK_ERROR, description)
    }

    /// Arguments of the wrong shape ([`reason::INVALID_ARGUMENTS`]).
    pub fn invalid_arguments(description: impl Into<String>) -> TaskError {
        TaskError::new(reason::INVALID_ARGUMENTS, description)
    }

    /// What a task returns when it stops because it was cancelled
    /// ([`reason::CANCELED`]).
    pub fn canceled() -> TaskError {
        TaskError::new(reason::CANCELED, "the task was cancelled")
    }

    /// The same error with debugging detail.
    pub fn with_traceback(mut self, traceback: impl Into<String>) -> TaskError {
        self.traceback = traceback.into();
        self
    }
}

impl From<TaskError> for pb::TaskError {
    fn from(err: TaskError) -> Self {
        pb::TaskError {
            description: err.description,
            reason: err.reason,
            traceback: err.traceback,
        }
    }
}

/// How a task ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The task returned this value.
    Completed(serde_json::Value),
    /// The task failed, timed out, panicked or was stopped by shutdown.
    Failed(TaskError),
    /// The task stopped because the scheduler cancelled it.
    Canceled {
        /// It ignored its cancellation and was aborted.
        forced: bool,
    },
}

/// A finished task, ready to be reported.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finished {
    /// The task.
    pub task_id: TaskId,
    /// The attempt token of its assignment.
    pub attempt: i64,
    /// How it ended.
    pub outcome: Outcome,
    /// Resources it recorded as created.
    pub created_resources: Vec<String>,
}

impl Finished {
    /// The `TaskFinished` message for this outcome.
    pub fn to_proto(&self) -> pb::TaskFinished {
        use pb::task_finished::Outcome as O;
        let outcome = match &self.outcome {
            Outcome::Completed(value) => O::Result(json_to_value(value)),
            Outcome::Failed(err) => O::Error(err.clone().into()),
            Outcome::Canceled { forced } => O::Canceled(pb::Canceled { forced: *forced }),
        };
        pb::TaskFinished {
            task_id: self.task_id.to_string(),
            attempt: self.attempt,
            outcome: Some(outcome),
            created_resources: self.created_resources.clone(),
        }
    }
}
