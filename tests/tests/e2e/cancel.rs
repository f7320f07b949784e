//! Cancellation of waiting, running, finished and unknown tasks.

use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{
    Backend, LONG_CANCEL_GRACE, TaskRegistry, TestApp, assert_canceled_cooperatively,
    both_databases, state,
};
use serde_json::json;
use tonic::Code;

both_databases!(cancel_waiting_running_finished_and_unknown);

async fn cancel_waiting_running_finished_and_unknown(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // A long cancel grace: a task the worker had to abort by force would
    // end visibly late, and with reason "canceled by force".
    let _worker = app
        .start_worker_with("w", 4, TaskRegistry::builtin(), |config| {
            config.cancel_grace = LONG_CANCEL_GRACE;
        })
        .await;
    let running = app
        .dispatch("sleep", json!({"seconds": 60}), &["R"], &[])
        .await;
    let waiting = app.dispatch("noop", json!({}), &["R"], &[]).await;
    let next = app
        .dispatch("sleep", json!({"seconds": 0.01}), &["R"], &[])
        .await;
    let running_now = app.wait_body_started(&running.id).await;
    assert_eq!(running_now.worker, "w");
    let task_dir = app.work_dir("w").join(&running.id);
    assert!(
        task_dir.is_dir(),
        "a running task has its working directory {}",
        task_dir.display()
    );

    // Waiting: CANCELED at once, never started.
    let canceled = app
        .tasks()
        .cancel_task(pb::CancelTaskRequest {
            id: waiting.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&canceled), pb::TaskState::Canceled);
    assert!(canceled.started_at.is_none() && canceled.worker.is_empty());

    // Running: CANCELING, then CANCELED once the worker stopped it, which
    // the `sleep` body does at once when told.
    let asked = pulp_common::time::now_micros();
    let canceling = app
        .tasks()
        .cancel_task(pb::CancelTaskRequest {
            id: running.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        state(&canceling),
        pb::TaskState::Canceling | pb::TaskState::Canceled
    ));
    let canceled = app.wait_final(&running.id).await;
    assert_canceled_cooperatively(&canceled, asked);
    assert!(
        !task_dir.exists(),
        "the cancelled task's working directory is removed"
    );

    // The resource is free again: the next task on R runs and completes.
    assert_eq!(
        state(&app.wait_final(&next.id).await),
        pb::TaskState::Completed
    );

    // Finished: FAILED_PRECONDITION, state unchanged.
    let err = app
        .tasks()
        .cancel_task(pb::CancelTaskRequest {
            id: next.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let still = app
        .tasks()
        .get_task(pb::GetTaskRequest {
            id: next.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&still), pb::TaskState::Completed);

    // Unknown: NOT_FOUND.
    let err = app
        .tasks()
        .cancel_task(pb::CancelTaskRequest {
            id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
}
