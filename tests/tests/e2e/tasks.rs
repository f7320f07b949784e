//! Task lifecycle: watching, failing, panicking, waiting for a worker that
//! offers the func.

use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{Backend, TaskRegistry, TestApp, both_databases, state};
use serde_json::json;

both_databases!(
    watch_shows_waiting_running_completed_and_ends,
    fail_and_panic_fail_only_their_task,
    task_waits_for_a_worker_that_offers_its_func,
    enqueue_returns_a_job_naming_the_task,
);

async fn watch_shows_waiting_running_completed_and_ends(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let task = app
        .dispatch("sleep", json!({"seconds": 0.3}), &["r"], &[])
        .await;
    assert_eq!(state(&task), pb::TaskState::Waiting, "no worker yet");
    let mut stream = app
        .tasks()
        .watch_task(pb::WatchTaskRequest {
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().expect("a first snapshot");
    assert_eq!(state(&first), pb::TaskState::Waiting);
    let _worker = app.start_worker("w", 1).await;
    let mut states = vec![state(&first)];
    let collected = tokio::time::timeout(pulp_tests::WAIT, async {
        while let Some(snapshot) = stream.message().await.unwrap() {
            if states.last() != Some(&state(&snapshot)) {
                states.push(state(&snapshot));
            }
        }
        states
    })
    .await
    .expect("the watch ends after the final state");
    assert_eq!(
        collected,
        vec![
            pb::TaskState::Waiting,
            pb::TaskState::Running,
            pb::TaskState::Completed
        ]
    );
    let done = app
        .tasks()
        .get_task(pb::GetTaskRequest {
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(done.started_at.is_some() && done.finished_at.is_some() && done.unblocked_at.is_some());
    assert_eq!(done.worker, "w");
    assert!(!done.progress_reports.is_empty(), "sleep reports progress");
}

async fn fail_and_panic_fail_only_their_task(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let _worker = app.start_worker("w", 2).await;
    let failed = app
        .dispatch("fail", json!({"message": "disk on fire"}), &[], &[])
        .await;
    let failed = app.wait_final(&failed.id).await;
    assert_eq!(state(&failed), pb::TaskState::Failed);
    let error = failed.error.expect("an error");
    assert_eq!(error.description, "disk on fire");

    let panicked = app
        .dispatch("panic", json!({"message": "boom"}), &[], &[])
        .await;
    let panicked = app.wait_final(&panicked.id).await;
    assert_eq!(state(&panicked), pb::TaskState::Failed);
    let error = panicked.error.expect("an error");
    assert!(error.reason.contains("panic"), "{error:?}");
    assert!(error.description.contains("boom"), "{error:?}");

    // The worker survived both and still runs tasks.
    let after = app.dispatch("noop", json!({}), &[], &[]).await;
    let after = app.wait_final(&after.id).await;
    assert_eq!(state(&after), pb::TaskState::Completed);
    assert_eq!(after.worker, "w");
}

async fn task_waits_for_a_worker_that_offers_its_func(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut only_noop = TaskRegistry::new();
    only_noop.register("noop", |_ctx| async { Ok(serde_json::Value::Null) });
    let _noop_worker = app
        .start_worker_with("noop-only", 4, only_noop, |_| {})
        .await;
    let sleeper = app
        .dispatch("sleep", json!({"seconds": 0.05}), &[], &[])
        .await;
    // A task dispatched after it, on the worker that is there, completes...
    let noop = app.dispatch("noop", json!({}), &[], &[]).await;
    assert_eq!(
        state(&app.wait_final(&noop.id).await),
        pb::TaskState::Completed
    );
    // ...while the sleep, which no connected worker offers, still waits: not
    // failed, not lost.
    let waiting = app
        .tasks()
        .get_task(pb::GetTaskRequest {
            id: sleeper.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&waiting), pb::TaskState::Waiting);
    assert!(waiting.worker.is_empty());
    let _sleeper_worker = app.start_worker("sleeper", 1).await;
    let done = app.wait_final(&sleeper.id).await;
    assert_eq!(state(&done), pb::TaskState::Completed);
    assert_eq!(done.worker, "sleeper");
}

async fn enqueue_returns_a_job_naming_the_task(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let response = app
        .tasks()
        .enqueue(pb::EnqueueRequest {
            func: "noop".into(),
            resources: vec!["/pulp/api/v3/repositories/1/".into()],
            shared_resource_refs: vec![pb::ResourceRef {
                kind: "exporters".into(),
                id: "7".into(),
            }],
            options: Some(pb::EnqueueOptions {
                timeout_seconds: Some(30.0),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let task = response.task.expect("the task");
    assert_eq!(response.job_id, task.id);
    assert_eq!(
        task.exclusive_resources,
        vec!["/pulp/api/v3/repositories/1/"]
    );
    assert_eq!(task.shared_resources, vec!["/pulp/api/v3/exporters/7/"]);
    assert_eq!(task.timeout_seconds, 30.0);
    // Stored before the reply: readable at once.
    let read = app
        .tasks()
        .get_task(pb::GetTaskRequest {
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.id, task.id);
}
