//! Task groups: counts per state as tasks progress, finishing, cancelling.

use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{
    Backend, LONG_CANCEL_GRACE, TaskRegistry, TestApp, assert_canceled_cooperatively,
    both_databases, state,
};
use serde_json::json;
use tonic::Code;

both_databases!(
    group_counts_follow_progress,
    cancelling_a_group_cancels_its_tasks
);

async fn group(app: &TestApp, id: &str) -> pb::TaskGroup {
    app.groups()
        .get_task_group(pb::GetTaskGroupRequest { id: id.to_owned() })
        .await
        .unwrap()
        .into_inner()
}

async fn dispatch_in(
    app: &TestApp,
    group: &str,
    func: &str,
    kwargs: serde_json::Value,
    exclusive: &[&str],
) -> pb::Task {
    let mut request = pulp_tests::dispatch_request(func, kwargs, exclusive, &[]);
    request.task_group_id = Some(group.to_owned());
    app.tasks().dispatch(request).await.unwrap().into_inner()
}

async fn group_counts_follow_progress(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let g = app
        .groups()
        .create_task_group(pb::CreateTaskGroupRequest {
            description: "nightly".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (g.total, g.all_tasks_dispatched, g.finished),
        (0, false, false)
    );
    let a = dispatch_in(&app, &g.id, "sleep", json!({"seconds": 0.2}), &["G"]).await;
    let b = dispatch_in(&app, &g.id, "noop", json!({}), &["G"]).await;
    let c = dispatch_in(&app, &g.id, "fail", json!({}), &[]).await;
    let counts = group(&app, &g.id).await;
    assert_eq!(
        (counts.total, counts.waiting),
        (3, 3),
        "no worker yet: {counts:?}"
    );

    let _worker = app.start_worker("w", 4).await;
    app.wait_for(&a.id, |t| state(t) == pb::TaskState::Running)
        .await;
    let counts = group(&app, &g.id).await;
    assert!(
        counts.running >= 1 && counts.waiting >= 1,
        "a runs while b waits on G: {counts:?}"
    );
    for t in [&a, &b, &c] {
        app.wait_final(&t.id).await;
    }
    let counts = group(&app, &g.id).await;
    assert_eq!(
        (
            counts.completed,
            counts.failed,
            counts.waiting,
            counts.running
        ),
        (2, 1, 0, 0),
        "{counts:?}"
    );
    assert!(
        !counts.finished,
        "not finished until all tasks are dispatched"
    );

    let finished = app
        .groups()
        .finish_task_group(pb::FinishTaskGroupRequest { id: g.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(finished.all_tasks_dispatched && finished.finished);
    let mut late = pulp_tests::dispatch_request("noop", json!({}), &[], &[]);
    late.task_group_id = Some(g.id.clone());
    let err = app.tasks().dispatch(late).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
}

async fn cancelling_a_group_cancels_its_tasks(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let _worker = app
        .start_worker_with("w", 2, TaskRegistry::builtin(), |config| {
            config.cancel_grace = LONG_CANCEL_GRACE;
        })
        .await;
    let g = app
        .groups()
        .create_task_group(pb::CreateTaskGroupRequest::default())
        .await
        .unwrap()
        .into_inner();
    let running = dispatch_in(&app, &g.id, "sleep", json!({"seconds": 60}), &["X"]).await;
    let waiting = dispatch_in(&app, &g.id, "sleep", json!({"seconds": 60}), &["X"]).await;
    let outside = app
        .dispatch("sleep", json!({"seconds": 0.05}), &[], &[])
        .await;
    app.wait_body_started(&running.id).await;
    let asked = pulp_common::time::now_micros();
    let after = app
        .groups()
        .cancel_task_group(pb::CancelTaskGroupRequest { id: g.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(after.all_tasks_dispatched);
    // The running task was stopped by its worker, not aborted by force.
    assert_canceled_cooperatively(&app.wait_final(&running.id).await, asked);
    assert_eq!(
        state(&app.wait_final(&waiting.id).await),
        pb::TaskState::Canceled
    );
    assert_eq!(
        state(&app.wait_final(&outside.id).await),
        pb::TaskState::Completed,
        "tasks outside the group are untouched"
    );
    let counts = group(&app, &g.id).await;
    assert_eq!((counts.canceled, counts.total), (2, 2));
    assert!(counts.finished);
}
