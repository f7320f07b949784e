//! The scheduler's metrics and its task state-change log.
//!
//! The engine records a [`Transition`] for every state change of a task
//! while a round runs, and [`transition`] is called for each once the round
//! committed (a rolled-back round changes nothing, so it counts and logs
//! nothing). That one call writes the info-level log line of the change
//! and moves the metrics:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `pulp_tasks` | gauge: unfinished tasks | `state` (waiting, running, canceling) |
//! | `pulp_tasks_dispatched_total` | counter | `func` |
//! | `pulp_task_assignments_total` | counter | `func` |
//! | `pulp_tasks_finished_total` | counter | `func`, `state` (completed, failed, canceled) |
//! | `pulp_task_resource_wait_seconds` | histogram: dispatch -> unblocked | `func` |
//! | `pulp_task_slot_wait_seconds` | histogram: unblocked -> assigned | `func` |
//! | `pulp_task_duration_seconds` | histogram: assigned -> finished | `func`, `state` |
//! | `pulp_workers_connected` | gauge | |
//! | `pulp_workers_lost_total` | counter | |
//! | `pulp_db_pool_connections` | gauge | `state` (idle, in_use) |
//!
//! The waits are observed at a task's first assignment; the start delay
//! (assigned -> body started) is measured by the worker, which sees it.

use pulp_common::names::TaskId;
use pulp_common::state::TaskState;
use std::sync::Arc;
use tracing::info;

/// One state change of a task, as the engine saw it.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The task.
    pub task_id: TaskId,
    /// Its func.
    pub func: Arc<str>,
    /// The state before; `None` for a new task.
    pub from: Option<TaskState>,
    /// The state after.
    pub to: TaskState,
    /// Its attempt (1 for the first assignment).
    pub attempt: i64,
    /// When it was dispatched (µs since the epoch).
    pub created_at: i64,
    /// When its resources were free (µs), if they were.
    pub unblocked_at: Option<i64>,
    /// When it was last assigned (µs), if it was.
    pub started_at: Option<i64>,
    /// When the change happened (µs).
    pub at: i64,
    /// The worker involved, if any.
    pub worker: Option<String>,
    /// Why, when it is not the usual course (e.g. "worker lost").
    pub reason: Option<&'static str>,
}

/// Logs a committed transition and updates the metrics.
pub fn transition(t: &Transition) {
    let from = t.from.map_or("new", TaskState::as_str);
    info!(
        task_id = %t.task_id,
        func = %t.func,
        from,
        to = t.to.as_str(),
        attempt = t.attempt,
        worker = t.worker.as_deref().unwrap_or(""),
        reason = t.reason.unwrap_or(""),
        "task state changed"
    );
    let func = t.func.to_string();
    if let Some(from) = t.from.filter(|s| !s.is_final()) {
        metrics::gauge!("pulp_tasks", "state" => from.as_str()).decrement(1.0);
    }
    if !t.to.is_final() {
        metrics::gauge!("pulp_tasks", "state" => t.to.as_str()).increment(1.0);
    }
    match (t.from, t.to) {
        (None, _) => metrics::counter!("pulp_tasks_dispatched_total", "func" => func).increment(1),
        (Some(TaskState::Waiting), TaskState::Running) => {
            metrics::counter!("pulp_task_assignments_total", "func" => func.clone()).increment(1);
            if t.attempt == 1 {
                let unblocked = t.unblocked_at.unwrap_or(t.at);
                metrics::histogram!("pulp_task_resource_wait_seconds", "func" => func.clone())
                    .record(seconds(unblocked - t.created_at));
                metrics::histogram!("pulp_task_slot_wait_seconds", "func" => func)
                    .record(seconds(t.at - unblocked));
            }
        }
        (_, to) if to.is_final() => {
            let state = to.as_str();
            metrics::counter!("pulp_tasks_finished_total", "func" => func.clone(), "state" => state)
                .increment(1);
            if let Some(started) = t.started_at {
                metrics::histogram!("pulp_task_duration_seconds", "func" => func, "state" => state)
                    .record(seconds(t.at - started));
            }
        }
        _ => {}
    }
}

/// Sets the task gauges from the unfinished tasks' states (after the
/// engine rebuilt its state from the database).
pub fn tasks_loaded(states: &[TaskState]) {
    for state in [TaskState::Waiting, TaskState::Running, TaskState::Canceling] {
        let n = states.iter().filter(|s| **s == state).count();
        metrics::gauge!("pulp_tasks", "state" => state.as_str()).set(n as f64);
    }
}

/// The number of worker streams the engine serves, after each round.
pub fn workers_connected(n: usize) {
    metrics::gauge!("pulp_workers_connected").set(n as f64);
}

/// A worker's lease lapsed.
pub fn worker_lost() {
    metrics::counter!("pulp_workers_lost_total").increment(1);
}

/// The database pool's connections now.
pub fn pool(db: &sea_orm::DatabaseConnection) {
    let (size, idle) = match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        }
        _ => {
            let pool = db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
    };
    let idle = idle as f64;
    metrics::gauge!("pulp_db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("pulp_db_pool_connections", "state" => "in_use").set(f64::from(size) - idle);
}

/// Samples the database pool every few seconds until `shutdown`.
pub async fn sample_pool(
    db: sea_orm::DatabaseConnection,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = every.tick() => pool(&db),
        }
    }
}

/// Describes the metrics (their HELP lines).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("pulp_tasks", "Unfinished tasks by state");
    describe_counter!("pulp_tasks_dispatched_total", "Tasks dispatched, by func");
    describe_counter!(
        "pulp_task_assignments_total",
        "Tasks assigned to workers, by func"
    );
    describe_counter!(
        "pulp_tasks_finished_total",
        "Tasks that reached a final state, by func and state"
    );
    describe_histogram!(
        "pulp_task_resource_wait_seconds",
        Unit::Seconds,
        "Dispatch to resources free"
    );
    describe_histogram!(
        "pulp_task_slot_wait_seconds",
        Unit::Seconds,
        "Resources free to assigned to a worker slot"
    );
    describe_histogram!(
        "pulp_task_duration_seconds",
        Unit::Seconds,
        "Assigned to finished, by func and final state"
    );
    describe_gauge!(
        "pulp_workers_connected",
        "Worker streams open on this replica's engine"
    );
    describe_counter!("pulp_workers_lost_total", "Workers whose lease lapsed");
    describe_gauge!(
        "pulp_db_pool_connections",
        "Database pool connections by state"
    );
}

fn seconds(micros: i64) -> f64 {
    micros.max(0) as f64 / 1e6
}
