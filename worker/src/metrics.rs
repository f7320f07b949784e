//! The worker's metrics (served with `--metrics-listen`, see
//! `pulp_common::metrics`):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `pulp_worker_serving` | gauge: 1 while connected and taking tasks | |
//! | `pulp_worker_tasks_running` | gauge | |
//! | `pulp_worker_task_start_delay_seconds` | histogram: assignment received -> task body started | `func` |
//! | `pulp_worker_tasks_finished_total` | counter | `func`, `outcome` |
//! | `pulp_worker_task_duration_seconds` | histogram: body start -> outcome | `func`, `outcome` |

use std::time::Duration;

/// The task's body is about to run, `delay` after its assignment arrived.
pub fn task_started(func: &str, delay: Duration) {
    metrics::gauge!("pulp_worker_tasks_running").increment(1.0);
    metrics::histogram!("pulp_worker_task_start_delay_seconds", "func" => func.to_owned())
        .record(delay.as_secs_f64());
}

/// The task's body ended with `outcome` after `ran`.
pub fn task_finished(func: &str, outcome: &'static str, ran: Duration) {
    metrics::gauge!("pulp_worker_tasks_running").decrement(1.0);
    metrics::counter!("pulp_worker_tasks_finished_total", "func" => func.to_owned(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("pulp_worker_task_duration_seconds", "func" => func.to_owned(), "outcome" => outcome)
        .record(ran.as_secs_f64());
}

/// The worker now is (or no longer is) connected and taking tasks.
pub fn serving(serving: bool) {
    metrics::gauge!("pulp_worker_serving").set(if serving { 1.0 } else { 0.0 });
}

/// Describes the metrics (their HELP lines).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "pulp_worker_serving",
        "1 while connected to a scheduler and taking tasks"
    );
    describe_gauge!("pulp_worker_tasks_running", "Task bodies running now");
    describe_histogram!(
        "pulp_worker_task_start_delay_seconds",
        Unit::Seconds,
        "Assignment received to task body started"
    );
    describe_counter!(
        "pulp_worker_tasks_finished_total",
        "Task bodies ended, by func and outcome"
    );
    describe_histogram!(
        "pulp_worker_task_duration_seconds",
        Unit::Seconds,
        "Task body run time, by func and outcome"
    );
}
