//! The task state machine and its database form.
//!
//! `WAITING -> RUNNING -> COMPLETED | FAILED`;
//! `WAITING | RUNNING -> CANCELING -> CANCELED`. Final states never change.

use crate::proto::tasking::v1 as pb;

/// A task's state, as stored (lower-case words) and as sent (`pb::TaskState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Dispatched, not yet assigned.
    Waiting,
    /// Assigned to a worker.
    Running,
    /// Ended successfully.
    Completed,
    /// Ended with an error.
    Failed,
    /// Being cancelled on its worker.
    Canceling,
    /// Ended by cancellation.
    Canceled,
    /// Never ran (kept for Pulp compatibility).
    Skipped,
}

impl TaskState {
    /// Every state, in display order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Waiting,
        TaskState::Running,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Canceling,
        TaskState::Canceled,
        TaskState::Skipped,
    ];

    /// The database form.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Canceling => "canceling",
            TaskState::Canceled => "canceled",
            TaskState::Skipped => "skipped",
        }
    }

    /// Parses the database form.
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// True for states that never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Canceled | TaskState::Skipped
        )
    }

    /// The protobuf form.
    pub fn to_proto(self) -> pb::TaskState {
        match self {
            TaskState::Waiting => pb::TaskState::Waiting,
            TaskState::Running => pb::TaskState::Running,
            TaskState::Completed => pb::TaskState::Completed,
            TaskState::Failed => pb::TaskState::Failed,
            TaskState::Canceling => pb::TaskState::Canceling,
            TaskState::Canceled => pb::TaskState::Canceled,
            TaskState::Skipped => pb::TaskState::Skipped,
        }
    }

    /// From the protobuf form; `None` for UNSPECIFIED.
    pub fn from_proto(state: pb::TaskState) -> Option<TaskState> {
        Some(match state {
            pb::TaskState::Unspecified => return None,
            pb::TaskState::Waiting => TaskState::Waiting,
            pb::TaskState::Running => TaskState::Running,
            pb::TaskState::Completed => TaskState::Completed,
            pb::TaskState::Failed => TaskState::Failed,
            pb::TaskState::Canceling => TaskState::Canceling,
            pb::TaskState::Canceled => TaskState::Canceled,
            pb::TaskState::Skipped => TaskState::Skipped,
        })
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
