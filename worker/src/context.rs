//! What a running task gets: its [`TaskContext`].
//!
//! The runner builds one per task run from the assignment (id, attempt,
//! args, kwargs), the working directory it created, a fresh cancellation
//! token and a progress sink, and moves it into the task's future. Data
//! flows back out through the context only: progress reports go to the
//! connection loop (see [`crate::progress`]), created resources and the
//! return value go into the task's `TaskFinished`.
//!
//! Content tasks also get the shared database ([`TaskContext::database`],
//! when the worker was given `--database-url`), the storage directory, and
//! their [`Fence`] (task, worker, attempt), which must guard every commit
//! of their domain writes (see `pulp_common::content::fence`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use pulp_common::content::fence::Fence;
use pulp_common::content::storage::Storage;
use pulp_common::names::TaskId;
use sea_orm::DatabaseConnection;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::outcome::{TaskError, reason};
use crate::progress::{ProgressReport, ProgressSink};

/// The context of one task run.
pub struct TaskContext {
    /// The task's id.
    pub task_id: TaskId,
    /// The attempt token of this run's assignment.
    pub attempt: i64,
    /// The task name it runs as.
    pub func: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    working_dir: PathBuf,
    cancel: CancellationToken,
    progress: ProgressSink,
    created: Arc<Mutex<Vec<String>>>,
    worker: Arc<str>,
    database: Option<DatabaseConnection>,
    storage: Storage,
    allowed_export_paths: Arc<[PathBuf]>,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskContext")
            .field("task_id", &self.task_id)
            .field("attempt", &self.attempt)
            .field("func", &self.func)
            .field("worker", &self.worker)
            .field("working_dir", &self.working_dir)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// The parts of a context the runner builds it from.
pub(crate) struct ContextParts {
    pub task_id: TaskId,
    pub attempt: i64,
    pub func: String,
    pub args: Vec<Value>,
    pub kwargs: Map<String, Value>,
    pub working_dir: PathBuf,
    pub cancel: CancellationToken,
    pub progress: ProgressSink,
    pub created: Arc<Mutex<Vec<String>>>,
    pub worker: Arc<str>,
    pub database: Option<DatabaseConnection>,
    pub storage: Storage,
    pub allowed_export_paths: Arc<[PathBuf]>,
}

impl TaskContext {
    /// Only the runner builds contexts.
    pub(crate) fn new(parts: ContextParts) -> TaskContext {
        TaskContext {
            task_id: parts.task_id,
            attempt: parts.attempt,
            func: parts.func,
            args: parts.args,
            kwargs: parts.kwargs,
            working_dir: parts.working_dir,
            cancel: parts.cancel,
            progress: parts.progress,
            created: parts.created,
            worker: parts.worker,
            database: parts.database,
            storage: parts.storage,
            allowed_export_paths: parts.allowed_export_paths,
        }
    }

    /// The name of the worker running the task.
    pub fn worker_name(&self) -> &str {
        &self.worker
    }

    /// The shared database. A task error when the worker has none
    /// (`--database-url` not given).
    pub fn database(&self) -> Result<&DatabaseConnection, TaskError> {
        self.database.as_ref().ok_or_else(|| {
            TaskError::new(
                reason::WORKER_ERROR,
                "this worker has no database: start it with --database-url to run content tasks",
            )
        })
    }

    /// The artifact storage directory.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The directories exports may write under (`--allowed-export-path`),
    /// as configured (not yet resolved); empty when exports are refused.
    pub fn allowed_export_paths(&self) -> &[PathBuf] {
        &self.allowed_export_paths
    }

    /// What fences this run's domain writes: commit them with
    /// [`Fence::commit`], which refuses once the task no longer runs here.
    pub fn fence(&self) -> Fence {
        Fence {
            task_id: self.task_id,
            worker: self.worker.to_string(),
            attempt: self.attempt,
        }
    }

    /// The task's private working directory (mode 0700), removed after the
    /// task ends. Give it to child processes as their current directory;
    /// never change the process-wide one.
    pub fn working_dir(&self) -> &Path {
        &self.working_dir
    }

    /// Fires when the task should stop: cancelled by a user, timed out, or
    /// the worker shutting down. A task that does not return within the
    /// worker's cancel grace afterwards is aborted at its next `.await`.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }

    /// True once [`Self::cancellation`] has fired.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Sends a progress report without blocking; a later report with the
    /// same code replaces one not yet sent.
    pub fn report_progress(&self, report: ProgressReport) {
        self.progress.report(report);
    }

    /// Records a resource the task created (as a name), reported with the
    /// task's outcome whatever it is.
    pub fn record_created_resource(&self, name: impl Into<String>) {
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name.into());
    }

    /// Keyword argument `name` as a number; `None` when absent or null.
    pub fn kwarg_f64(&self, name: &str) -> Result<Option<f64>, TaskError> {
        match self.kwargs.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "a number", &Value::Number(n.clone()))),
            Some(other) => Err(wrong_type(name, "a number", other)),
        }
    }

    /// Keyword argument `name` as a string; `None` when absent or null.
    pub fn kwarg_str(&self, name: &str) -> Result<Option<&str>, TaskError> {
        match self.kwargs.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(name, "a string", other)),
        }
    }

    /// Keyword argument `name` as a boolean; `None` when absent or null.
    pub fn kwarg_bool(&self, name: &str) -> Result<Option<bool>, TaskError> {
        match self.kwargs.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(name, "true or false", other)),
        }
    }
}

fn wrong_type(name: &str, expected: &str, got: &Value) -> TaskError {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    TaskError::invalid_arguments(format!("kwargs.{name} must be {expected}, not {got}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::outcome::reason;
    use crate::progress::ProgressHub;
    use serde_json::json;

    /// A context for unit tests of task bodies.
    pub(crate) fn context(kwargs: Value) -> TaskContext {
        let task_id = TaskId::new();
        TaskContext::new(ContextParts {
            task_id,
            attempt: 1,
            func: "test".into(),
            args: vec![],
            kwargs: kwargs.as_object().cloned().unwrap_or_default(),
            working_dir: std::env::temp_dir(),
            cancel: CancellationToken::new(),
            progress: ProgressHub::default().sink(task_id, 1),
            created: Arc::default(),
            worker: Arc::from("test-worker"),
            database: None,
            storage: Storage::new(std::env::temp_dir()),
            allowed_export_paths: Arc::from(Vec::new()),
        })
    }

    #[test]
    fn kwargs_by_type() {
        let ctx = context(json!({"n": 2, "s": "x", "b": true, "z": null}));
        assert_eq!(ctx.kwarg_f64("n").unwrap(), Some(2.0));
        assert_eq!(ctx.kwarg_str("s").unwrap(), Some("x"));
        assert_eq!(ctx.kwarg_bool("b").unwrap(), Some(true));
        assert_eq!(ctx.kwarg_f64("z").unwrap(), None);
        assert_eq!(ctx.kwarg_bool("missing").unwrap(), None);

        let err = ctx.kwarg_f64("s").unwrap_err();
        assert_eq!(err.reason, reason::INVALID_ARGUMENTS);
        assert_eq!(err.description, "kwargs.s must be a number, not a string");
        assert!(ctx.kwarg_str("n").is_err());
        assert!(ctx.kwarg_bool("s").is_err());
    }
}
