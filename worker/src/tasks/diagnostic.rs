//! Diagnostic tasks: `noop`, `sleep`, `fail`, `panic` and
//! `sleep_then_write`.
//!
//! They exercise the machinery around a task (scheduling, progress,
//! cancellation, timeouts, failures, panics). `sleep` returns wall-clock
//! timestamps taken inside its body, which the end-to-end tests use to prove
//! that conflicting tasks never overlapped. All but `sleep_then_write` leave
//! the content alone; that one exists to test the fence on domain writes
//! (DESIGN.md section 7): a worker paused in its sleep and resumed after the
//! scheduler gave the task up must find its write refused.

use std::time::Duration;

use pulp_common::time::now_micros;
use serde_json::{Value, json};
use tokio::time::Instant;

use pulp_common::content::{begin_write, repositories};
use tracing::{info, warn};

use crate::context::TaskContext;
use crate::outcome::TaskError;
use crate::progress::ProgressReport;
use crate::registry::TaskResult;
use crate::tasks::add_and_remove::task_error;

/// Longest `sleep` allowed, in seconds (a day).
pub const MAX_SLEEP_SECONDS: f64 = 86_400.0;

/// Does nothing and returns `null`.
pub async fn noop(_ctx: TaskContext) -> TaskResult {
    Ok(Value::Null)
}

/// Sleeps `kwargs.seconds` (a number, default 1, at most a day), reporting
/// progress "Sleeping" (code `sleep`) in tenths of the time. Returns
/// `{"slept", "started_at_us", "finished_at_us"}`. When cancelled it returns
/// at once with reason "canceled", unless `kwargs.ignore_cancel` is true:
/// then it sleeps on regardless (to test forced aborts).
pub async fn sleep(ctx: TaskContext) -> TaskResult {
    let started_at_us = now_micros();
    let seconds = sleep_body(&ctx).await?;
    Ok(json!({
        "slept": seconds,
        "started_at_us": started_at_us,
        "finished_at_us": now_micros(),
    }))
}

/// Sleeps like [`sleep`] (same kwargs, progress and cancellation), then
/// creates the repository named `kwargs.repository_name` (required) in one
/// transaction committed through the task's fence: the write lands only if
/// the task still runs here with this attempt. Returns `{"repository_id",
/// "started_at_us", "finished_at_us"}`; a refused write fails the task with
/// reason "fenced" and is logged. Not an API of the product: it lets tests
/// pause a worker with a write still to come (the content tasks write in
/// the same way, see `add_and_remove`).
pub async fn sleep_then_write(ctx: TaskContext) -> TaskResult {
    let started_at_us = now_micros();
    let name = ctx
        .kwarg_str("repository_name")?
        .ok_or_else(|| TaskError::invalid_arguments("kwargs.repository_name is required"))?;
    let name = repositories::parse_name(name)
        .map_err(|e| TaskError::invalid_arguments(format!("kwargs.repository_name: {e}")))?;
    let db = ctx.database()?.clone();
    sleep_body(&ctx).await?;

    let txn = begin_write(&db).await.map_err(|e| task_error(e.into()))?;
    let repository = match repositories::create(
        &txn,
        &name,
        "written by the sleep_then_write diagnostic task",
    )
    .await
    {
        Ok(repository) => repository,
        Err(err) => {
            let _ = txn.rollback().await;
            return Err(task_error(err));
        }
    };
    if let Err(err) = ctx.fence().commit(txn).await {
        warn!(repository = %name, error = %err, "sleep_then_write: the fence refused the write");
        return Err(task_error(err));
    }
    ctx.record_created_resource(repositories::resource(repository.id).to_string());
    info!(repository = %name, repository_id = %repository.id, "sleep_then_write: the write committed");
    Ok(json!({
        "repository_id": repository.id.to_string(),
        "started_at_us": started_at_us,
        "finished_at_us": now_micros(),
    }))
}

/// The body of [`sleep`]: sleeps `kwargs.seconds` and returns them.
async fn sleep_body(ctx: &TaskContext) -> Result<f64, TaskError> {
    let start = Instant::now();
    let seconds = ctx.kwarg_f64("seconds")?.unwrap_or(1.0);
    if !(0.0..=MAX_SLEEP_SECONDS).contains(&seconds) {
        return Err(TaskError::invalid_arguments(format!(
            "kwargs.seconds must be between 0 and {MAX_SLEEP_SECONDS}, not {seconds}"
        )));
    }
    let ignore_cancel = ctx.kwarg_bool("ignore_cancel")?.unwrap_or(false);

    let tenths = (seconds * 10.0).ceil() as i64;
    let report = |done| ProgressReport::new("Sleeping", "sleep", done, tenths);
    ctx.report_progress(report(0));
    for done in 1..=tenths {
        let wake = start + Duration::from_secs_f64((done as f64 / 10.0).min(seconds));
        if ignore_cancel {
            tokio::time::sleep_until(wake).await;
        } else {
            tokio::select! {
                biased;
                _ = ctx.cancellation().cancelled() => return Err(TaskError::canceled()),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        ctx.report_progress(report(done));
    }
    Ok(seconds)
}

/// Fails with `kwargs.message` (default "failed on purpose"), reason
/// "task error".
pub async fn fail(ctx: TaskContext) -> TaskResult {
    let message = ctx.kwarg_str("message")?.unwrap_or("failed on purpose");
    Err(TaskError::task(message))
}

/// Panics with `kwargs.message` (default "panicked on purpose").
pub async fn panic(ctx: TaskContext) -> TaskResult {
    let message = ctx
        .kwarg_str("message")?
        .unwrap_or("panicked on purpose")
        .to_owned();
    panic!("{message}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::tests::context;
    use crate::outcome::reason;

    #[tokio::test]
    async fn noop_returns_null() {
        assert_eq!(noop(context(json!({}))).await, Ok(Value::Null));
    }

    #[tokio::test]
    async fn sleep_returns_its_timestamps() {
        let result = sleep(context(json!({"seconds": 0.25}))).await.unwrap();
        assert_eq!(result["slept"], json!(0.25));
        assert!(
            result["started_at_us"].as_i64().unwrap() <= result["finished_at_us"].as_i64().unwrap()
        );
    }

    #[tokio::test]
    async fn sleep_refuses_bad_seconds() {
        for kwargs in [
            json!({"seconds": -1}),
            json!({"seconds": 86401}),
            json!({"seconds": "1"}),
        ] {
            let err = sleep(context(kwargs)).await.unwrap_err();
            assert_eq!(err.reason, reason::INVALID_ARGUMENTS);
        }
    }

    #[tokio::test]
    async fn fail_fails_with_its_message() {
        let err = fail(context(json!({"message": "boom"}))).await.unwrap_err();
        assert_eq!(err, TaskError::task("boom"));
        let err = fail(context(json!({}))).await.unwrap_err();
        assert_eq!(err.description, "failed on purpose");
    }
}
