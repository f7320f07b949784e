//! Runs one assignment from start to outcome.
//!
//! [`run`] creates the task's [`crate::workdir::WorkingDir`], builds its [`TaskContext`],
//! and spawns the task's future on its own tokio task, so that a panic is
//! caught as a `JoinError` and fails only that task. It then races the task
//! against a stop request from the connection loop ([`StopHandle`]: a
//! cancellation by the scheduler, worker shutdown, a lost lease) and against
//! the task's timeout. On either it fires the task's cancellation token,
//! waits up to the cancel grace, and aborts the task if it is still going.
//! Only when the task's future is finished or dropped is the working
//! directory removed; then the [`Finished`] outcome goes back to the
//! connection loop, which reports it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use pulp_common::names::TaskId;
use serde_json::{Map, Value};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, instrument, warn};

use crate::context::{ContextParts, TaskContext};
use crate::outcome::{Finished, Outcome, TaskError, reason};
use crate::progress::ProgressHub;
use crate::registry::{TaskFn, TaskResult};
use crate::workdir::WorkingDirs;
use pulp_common::content::storage::Storage;
use sea_orm::DatabaseConnection;

/// Settings shared by every run.
#[derive(Debug, Clone)]
pub(crate) struct RunnerSettings {
    /// Where working directories are created.
    pub working_dirs: Arc<WorkingDirs>,
    /// How long a stopped task may take to return before it is aborted.
    pub cancel_grace: Duration,
    /// The timeout of tasks assigned without one.
    pub default_timeout: Option<Duration>,
    /// The worker's name (for the tasks' fences).
    pub worker: Arc<str>,
    /// The shared database, for the content tasks.
    pub database: Option<DatabaseConnection>,
    /// The artifact storage directory.
    pub storage: Storage,
    /// Where exports may write (`--allowed-export-path`).
    pub allowed_export_paths: Arc<[PathBuf]>,
}

/// One assignment, validated.
pub(crate) struct Job {
    /// The task.
    pub task_id: TaskId,
    /// Its attempt token.
    pub attempt: i64,
    /// The registered name.
    pub func: String,
    /// The implementation.
    pub task: TaskFn,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// The assignment's timeout in seconds; 0 (or nonsense) for the default.
    pub timeout_seconds: f64,
}

/// Why the connection loop stops a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The scheduler cancelled it: it ends CANCELED.
    Canceled,
    /// The worker is shutting down and the grace period is over.
    Shutdown,
    /// The worker could not renew its lease in time.
    LeaseLost,
    /// The scheduler no longer knows the task as this worker's; the outcome
    /// is dropped.
    Stale,
}

/// Asks a running task to stop. The first reason given wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct StopHandle {
    reason: Arc<OnceLock<StopReason>>,
    token: CancellationToken,
}

impl StopHandle {
    /// Requests a stop; false when one was already requested.
    pub fn stop(&self, reason: StopReason) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.token.cancel();
        first
    }

    /// Resolves with the reason once a stop is requested.
    async fn stopped(&self) -> StopReason {
        self.token.cancelled().await;
        // `stop` sets the reason before it cancels the token.
        self.reason.get().copied().unwrap_or(StopReason::Canceled)
    }
}

/// Runs one job to its outcome. Never panics because of the task.
#[instrument(name = "task", skip_all, fields(task_id = %job.task_id, func = %job.func, attempt = job.attempt))]
pub(crate) async fn run(
    job: Job,
    settings: Arc<RunnerSettings>,
    progress: ProgressHub,
    stop: StopHandle,
) -> Finished {
    let started = Instant::now();
    let task_id = job.task_id;
    let attempt = job.attempt;
    let created = Arc::new(Mutex::new(Vec::new()));
    let func = job.func.clone();
    info!("task started");

    let outcome = match settings.working_dirs.create(task_id) {
        Err(err) => Outcome::Failed(TaskError::new(
            reason::WORKER_ERROR,
            format!(
                "could not create the task's working directory under {}: {err}",
                settings.working_dirs.root().display()
            ),
        )),
        Ok(dir) => {
            let timeout = timeout_of(job.timeout_seconds, settings.default_timeout);
            let ctx = TaskContext::new(ContextParts {
                task_id,
                attempt,
                func: job.func,
                args: job.args,
                kwargs: job.kwargs,
                working_dir: dir.path().to_owned(),
                cancel: CancellationToken::new(),
                progress: progress.sink(task_id, attempt),
                created: created.clone(),
                worker: settings.worker.clone(),
                database: settings.database.clone(),
                storage: settings.storage.clone(),
                allowed_export_paths: settings.allowed_export_paths.clone(),
            });
            crate::metrics::task_started(&func, started.elapsed());
            let body = Instant::now();
            let outcome = supervise(job.task, ctx, timeout, settings.cancel_grace, &stop).await;
            let label = match &outcome {
                Outcome::Completed(_) => "completed",
                Outcome::Failed(_) => "failed",
                Outcome::Canceled { .. } => "canceled",
            };
            crate::metrics::task_finished(&func, label, body.elapsed());
            if let Err(err) = dir.remove().await {
                warn!(error = %err, "could not remove the working directory");
            }
            outcome
        }
    };

    let elapsed_ms = started.elapsed().as_millis() as u64;
    match &outcome {
        Outcome::Completed(_) => info!(elapsed_ms, "task completed"),
        Outcome::Failed(err) => {
            info!(elapsed_ms, reason = %err.reason, error = %err.description, "task failed");
        }
        Outcome::Canceled { forced } => info!(elapsed_ms, forced, "task canceled"),
    }
    let created_resources =
        std::mem::take(&mut *created.lock().unwrap_or_else(PoisonError::into_inner));
    Finished {
        task_id,
        attempt,
        outcome,
        created_resources,
    }
}

/// The assignment's timeout if positive, else the worker's default.
fn timeout_of(seconds: f64, default: Option<Duration>) -> Option<Duration> {
    if seconds > 0.0 {
        Duration::try_from_secs_f64(seconds).ok().or(default)
    } else {
        default
    }
}

/// What ended the race before the task returned.
enum Interrupt {
    Stop(StopReason),
    TimedOut(Duration),
}

/// Spawns the task and races it against stop requests and its timeout.
async fn supervise(
    task: TaskFn,
    ctx: TaskContext,
    timeout: Option<Duration>,
    grace: Duration,
    stop: &StopHandle,
) -> Outcome {
    let token = ctx.cancellation().clone();
    // The task is called inside the spawned future, so that even a panic
    // while building its future is caught.
    let mut handle = AbortOnDrop(tokio::spawn(
        async move { task(ctx).await }.in_current_span(),
    ));
    let deadline = timeout.map(|t| Instant::now() + t);

    let interrupt = tokio::select! {
        biased;
        joined = &mut handle.0 => return outcome_of(joined),
        reason = stop.stopped() => Interrupt::Stop(reason),
        () = sleep_until(deadline) => Interrupt::TimedOut(timeout.unwrap_or_default()),
    };

    token.cancel();
    let forced = match tokio::time::timeout(grace, &mut handle.0).await {
        Ok(_) => false,
        Err(_) => {
            warn!(
                grace_ms = grace.as_millis() as u64,
                "task ignored its cancellation; aborting it"
            );
            handle.0.abort();
            // Wait until the future is dropped, so nothing still uses the
            // working directory when it is removed.
            let _ = (&mut handle.0).await;
            true
        }
    };
    let aborted_note = |err: TaskError| {
        if forced {
            err.with_traceback(format!(
                "the task did not stop within the cancel grace of {} s and was aborted",
                grace.as_secs_f64()
            ))
        } else {
            err
        }
    };
    match interrupt {
        Interrupt::Stop(StopReason::Canceled) => Outcome::Canceled { forced },
        Interrupt::Stop(StopReason::Shutdown) => Outcome::Failed(aborted_note(TaskError::new(
            reason::SHUTDOWN,
            "the worker shut down before the task finished",
        ))),
        Interrupt::Stop(StopReason::LeaseLost | StopReason::Stale) => {
            Outcome::Failed(aborted_note(TaskError::new(
                reason::WORKER_LOST,
                "the worker lost contact with the scheduler for too long and stopped the task",
            )))
        }
        Interrupt::TimedOut(limit) => Outcome::Failed(aborted_note(TaskError::new(
            reason::TIMED_OUT,
            format!("task exceeded its timeout of {} s", limit.as_secs_f64()),
        ))),
    }
}

/// The outcome of a task that returned (or panicked) on its own.
fn outcome_of(joined: Result<TaskResult, JoinError>) -> Outcome {
    match joined {
        Ok(Ok(value)) => Outcome::Completed(value),
        Ok(Err(err)) => Outcome::Failed(err),
        Err(err) if err.is_panic() => {
            let payload = err.into_panic();
            Outcome::Failed(TaskError::new(reason::PANICKED, panic_message(&*payload)))
        }
        Err(_) => Outcome::Failed(TaskError::new(
            reason::WORKER_ERROR,
            "the task was aborted by the worker's runtime",
        )),
    }
}

/// The text of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "the task panicked with a non-string payload".to_owned()
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Aborts the task's future if the runner itself is dropped early, so a
/// task never outlives its working directory.
struct AbortOnDrop(JoinHandle<TaskResult>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::TaskRegistry;
    use pulp_common::catalog;
    use serde_json::json;

    const WAIT: Duration = Duration::from_secs(10);

    struct Fixture {
        root: tempfile::TempDir,
        settings: Arc<RunnerSettings>,
        progress: ProgressHub,
        registry: TaskRegistry,
    }

    impl Fixture {
        fn new() -> Fixture {
            let root = tempfile::tempdir().unwrap();
            let settings = Arc::new(RunnerSettings {
                working_dirs: Arc::new(WorkingDirs::new(root.path().to_owned(), 4)),
                cancel_grace: Duration::from_millis(200),
                default_timeout: None,
                worker: Arc::from("test-worker"),
                database: None,
                storage: Storage::new(root.path().join("storage")),
                allowed_export_paths: Arc::from(Vec::new()),
            });
            Fixture {
                root,
                settings,
                progress: ProgressHub::default(),
                registry: TaskRegistry::builtin(),
            }
        }

        fn job(&self, func: &str, kwargs: Value, timeout_seconds: f64) -> Job {
            Job {
                task_id: TaskId::new(),
                attempt: 1,
                func: func.to_owned(),
                task: self.registry.get(func).expect("registered").clone(),
                args: vec![],
                kwargs: kwargs.as_object().cloned().unwrap_or_default(),
                timeout_seconds,
            }
        }

        /// Starts the job; returns its handle, stop handle and task dir.
        fn start(&self, job: Job) -> (JoinHandle<Finished>, StopHandle, PathBuf) {
            let stop = StopHandle::default();
            let task_dir = self.root.path().join(job.task_id.to_string());
            let handle = tokio::spawn(run(
                job,
                self.settings.clone(),
                self.progress.clone(),
                stop.clone(),
            ));
            (handle, stop, task_dir)
        }

        /// Waits for the first progress report: the task body is running.
        async fn wait_started(&self) {
            tokio::time::timeout(WAIT, self.progress.notified())
                .await
                .expect("the task reports progress");
        }
    }

    async fn finish(handle: JoinHandle<Finished>) -> Finished {
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("the run ends")
            .expect("the runner does not panic")
    }

    fn failed(outcome: Outcome) -> TaskError {
        match outcome {
            Outcome::Failed(err) => err,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn cancelled_sleep_ends_canceled_and_its_dir_is_gone() {
        let fx = Fixture::new();
        let (handle, stop, task_dir) =
            fx.start(fx.job(catalog::SLEEP, json!({"seconds": 60}), 0.0));
        fx.wait_started().await;
        assert!(
            task_dir.is_dir(),
            "the working directory exists while the task runs"
        );

        assert!(stop.stop(StopReason::Canceled));
        let finished = finish(handle).await;
        assert_eq!(finished.outcome, Outcome::Canceled { forced: false });
        assert!(!task_dir.exists());
    }

    #[tokio::test]
    async fn ignored_cancellation_is_forced_after_the_grace() {
        let fx = Fixture::new();
        let job = fx.job(
            catalog::SLEEP,
            json!({"seconds": 60, "ignore_cancel": true}),
            0.0,
        );
        let (handle, stop, task_dir) = fx.start(job);
        fx.wait_started().await;

        let asked = Instant::now();
        stop.stop(StopReason::Canceled);
        let finished = finish(handle).await;
        assert_eq!(finished.outcome, Outcome::Canceled { forced: true });
        assert!(asked.elapsed() >= fx.settings.cancel_grace);
        assert!(!task_dir.exists());
    }

    #[tokio::test]
    async fn panic_fails_only_the_task() {
        let fx = Fixture::new();
        let (handle, _stop, task_dir) =
            fx.start(fx.job(catalog::PANIC, json!({"message": "kaboom"}), 0.0));
        let err = failed(finish(handle).await.outcome);
        assert_eq!(err.reason, reason::PANICKED);
        assert_eq!(err.description, "kaboom");
        assert!(!task_dir.exists());
    }

    #[tokio::test]
    async fn timeout_fails_with_timed_out() {
        let fx = Fixture::new();
        let (handle, _stop, task_dir) =
            fx.start(fx.job(catalog::SLEEP, json!({"seconds": 60}), 0.3));
        let err = failed(finish(handle).await.outcome);
        assert_eq!(err.reason, reason::TIMED_OUT);
        assert_eq!(err.description, "task exceeded its timeout of 0.3 s");
        assert!(
            err.traceback.is_empty(),
            "the sleep honoured its cancellation"
        );
        assert!(!task_dir.exists());
    }

    #[tokio::test]
    async fn worker_default_timeout_applies_and_forces_a_stubborn_task() {
        let mut fx = Fixture::new();
        Arc::get_mut(&mut fx.settings).unwrap().default_timeout = Some(Duration::from_millis(100));
        let job = fx.job(
            catalog::SLEEP,
            json!({"seconds": 60, "ignore_cancel": true}),
            0.0,
        );
        let (handle, _stop, _) = fx.start(job);
        let err = failed(finish(handle).await.outcome);
        assert_eq!(err.reason, reason::TIMED_OUT);
        assert_eq!(err.description, "task exceeded its timeout of 0.1 s");
        assert!(err.traceback.contains("aborted"));
    }

    #[tokio::test]
    async fn shutdown_stop_is_an_error_not_a_cancellation() {
        let fx = Fixture::new();
        let (handle, stop, _) = fx.start(fx.job(catalog::SLEEP, json!({"seconds": 60}), 0.0));
        fx.wait_started().await;
        stop.stop(StopReason::Shutdown);
        let err = failed(finish(handle).await.outcome);
        assert_eq!(err.reason, reason::SHUTDOWN);
    }

    #[tokio::test]
    async fn results_errors_and_created_resources_are_reported() {
        let mut fx = Fixture::new();
        fx.registry
            .register("uses_dir", |ctx: TaskContext| async move {
                let dir = ctx.working_dir().to_owned();
                tokio::fs::write(dir.join("out.txt"), b"hello")
                    .await
                    .map_err(|e| TaskError::task(e.to_string()))?;
                ctx.record_created_resource("/pulp/api/v3/things/1/");
                Ok(json!({"dir": dir.display().to_string(), "args": ctx.args}))
            });
        let mut job = fx.job("uses_dir", json!({}), 0.0);
        job.args = vec![json!(1), json!("two")];
        let (handle, _, task_dir) = fx.start(job);
        let finished = finish(handle).await;
        let Outcome::Completed(value) = finished.outcome else {
            panic!("expected a result, got {:?}", finished.outcome);
        };
        assert!(
            value["dir"]
                .as_str()
                .unwrap()
                .starts_with(&task_dir.display().to_string())
        );
        assert_eq!(value["args"], json!([1, "two"]));
        assert_eq!(finished.created_resources, ["/pulp/api/v3/things/1/"]);
        assert!(!task_dir.exists());

        let (handle, _, _) = fx.start(fx.job(catalog::FAIL, json!({"message": "nope"}), 0.0));
        assert_eq!(
            failed(finish(handle).await.outcome),
            TaskError::task("nope")
        );

        let (handle, _, _) = fx.start(fx.job(catalog::NOOP, json!({}), 0.0));
        assert_eq!(
            finish(handle).await.outcome,
            Outcome::Completed(Value::Null)
        );
    }

    #[test]
    fn timeouts() {
        let default = Some(Duration::from_secs(5));
        assert_eq!(timeout_of(2.0, default), Some(Duration::from_secs(2)));
        assert_eq!(timeout_of(0.0, default), default);
        assert_eq!(timeout_of(-1.0, None), None);
        assert_eq!(timeout_of(f64::NAN, default), default);
        assert_eq!(timeout_of(f64::INFINITY, default), default);
    }
}
