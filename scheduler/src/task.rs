//! The scheduler's own view of a task: a validated new task, the stored
//! record, and outcomes. Built from protobuf at the gRPC edge (`api`), stored
//! by `store`, scheduled by `engine`.

use pulp_common::names::{ResourceClaims, TaskGroupId, TaskId, TaskName};
use pulp_common::state::TaskState;
use serde::{Deserialize, Serialize};

/// A validated task, not yet stored.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Its new id.
    pub id: TaskId,
    /// What to run.
    pub func: TaskName,
    /// Positional arguments, as JSON text of an array.
    pub args: String,
    /// Keyword arguments, as JSON text of an object.
    pub kwargs: String,
    /// What it reserves.
    pub claims: ResourceClaims,
    /// The group it joins.
    pub task_group_id: Option<TaskGroupId>,
    /// The task that dispatched it.
    pub parent_task_id: Option<TaskId>,
    /// Its timeout in milliseconds, if any.
    pub timeout_ms: Option<i64>,
}

/// Why a task failed, as stored (JSON) and sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// What went wrong.
    pub description: String,
    /// The class of failure ("worker lost", "timed out", ...).
    pub reason: String,
    /// Debugging detail.
    #[serde(default)]
    pub traceback: String,
}

impl TaskFailure {
    /// A failure with no traceback.
    pub fn new(description: impl Into<String>, reason: impl Into<String>) -> Self {
        TaskFailure {
            description: description.into(),
            reason: reason.into(),
            traceback: String::new(),
        }
    }
}

/// How a task ended, as its worker reported it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Returned a value (JSON text).
    Completed(String),
    /// Failed.
    Failed(TaskFailure),
    /// Stopped on cancellation (`forced` when aborted after the grace).
    Canceled {
        /// Aborted by force.
        forced: bool,
    },
}

/// A progress report of a running task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Human-readable text.
    pub message: String,
    /// Key, unique within the task.
    pub code: String,
    /// Items done.
    pub done: i64,
    /// Items in all (0 when unknown).
    pub total: i64,
    /// Extra text.
    pub suffix: String,
}

/// A task as stored.
#[derive(Debug, Clone)]
pub struct TaskRecord {
    /// Dispatch order.
    pub seq: i64,
    /// The id.
    pub id: TaskId,
    /// The func.
    pub func: String,
    /// JSON text of the args array.
    pub args: String,
    /// JSON text of the kwargs object.
    pub kwargs: String,
    /// Canonical exclusive resources.
    pub exclusive_resources: Vec<String>,
    /// Canonical shared resources.
    pub shared_resources: Vec<String>,
    /// The state.
    pub state: TaskState,
    /// Group, if any.
    pub task_group_id: Option<String>,
    /// Parent, if any.
    pub parent_task_id: Option<String>,
    /// Worker name, once assigned.
    pub worker: Option<String>,
    /// Attempt token of the latest assignment (0 before any).
    pub attempt: i64,
    /// Timeout in milliseconds.
    pub timeout_ms: Option<i64>,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// When its resources became free.
    pub unblocked_at: Option<i64>,
    /// When it turned RUNNING.
    pub started_at: Option<i64>,
    /// When it reached a final state.
    pub finished_at: Option<i64>,
    /// The failure, if any.
    pub error: Option<TaskFailure>,
    /// JSON text of the result, if any.
    pub result: Option<String>,
    /// Names of resources it created.
    pub created_resources: Vec<String>,
    /// Its progress reports (loaded separately).
    pub progress: Vec<Progress>,
}
