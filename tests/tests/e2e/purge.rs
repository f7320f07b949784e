//! `Tasks.PurgeTasks` with Pulp's cases.

use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{Backend, TestApp, both_databases, state};
use serde_json::json;
use tonic::Code;

both_databases!(purge_follows_pulp_semantics);

async fn count(app: &TestApp) -> usize {
    let request = pb::ListTasksRequest {
        page_size: 1000,
        ..Default::default()
    };
    app.tasks()
        .list_tasks(request)
        .await
        .unwrap()
        .into_inner()
        .tasks
        .len()
}

async fn purge(
    app: &TestApp,
    finished_before: Option<i64>,
    states: &[pb::TaskState],
) -> Result<i64, tonic::Status> {
    let request = pb::PurgeTasksRequest {
        finished_before: finished_before.map(|s| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        }),
        states: states.iter().map(|s| *s as i32).collect(),
    };
    app.tasks()
        .purge_tasks(request)
        .await
        .map(|r| r.into_inner().deleted)
}

async fn purge_follows_pulp_semantics(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // A completed, a failed and a canceled task, and one still waiting.
    let waiting = app.dispatch("sleep", json!({}), &["held"], &[]).await;
    let canceled = app.dispatch("noop", json!({}), &["held"], &[]).await;
    app.tasks()
        .cancel_task(pb::CancelTaskRequest {
            id: canceled.id.clone(),
        })
        .await
        .unwrap();
    let worker = app
        .start_worker_with(
            "w",
            2,
            {
                let mut r = pulp_tests::TaskRegistry::new();
                r.register("noop", |_ctx| async { Ok(serde_json::Value::Null) });
                r.register("fail", |_ctx| async {
                    Err(pulp_worker::TaskError::new("task error", "no"))
                });
                r
            },
            |_| {},
        )
        .await;
    let completed = app.dispatch("noop", json!({}), &[], &[]).await;
    let failed = app.dispatch("fail", json!({}), &[], &[]).await;
    assert_eq!(
        state(&app.wait_final(&completed.id).await),
        pb::TaskState::Completed
    );
    assert_eq!(
        state(&app.wait_final(&failed.id).await),
        pb::TaskState::Failed
    );
    assert_eq!(count(&app).await, 4);

    // finished_before 1970: nothing.
    assert_eq!(purge(&app, Some(0), &[]).await.unwrap(), 0);
    // The default (completed, older than 30 days) keeps recent tasks.
    assert_eq!(purge(&app, None, &[]).await.unwrap(), 0);
    assert_eq!(count(&app).await, 4);
    // Non-final and unknown states are refused, and nothing is deleted.
    for bad in [
        vec![pb::TaskState::Running],
        vec![pb::TaskState::Waiting, pb::TaskState::Completed],
        vec![pb::TaskState::Canceling],
    ] {
        let err = purge(&app, None, &bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err}");
    }
    let err = app
        .tasks()
        .purge_tasks(pb::PurgeTasksRequest {
            finished_before: None,
            states: vec![99],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(count(&app).await, 4);
    // Every final state with tomorrow's date: all finished tasks go, the
    // waiting one stays.
    let tomorrow = pulp_common::time::now_micros() / 1_000_000 + 86_400;
    let all = [
        pb::TaskState::Completed,
        pb::TaskState::Failed,
        pb::TaskState::Canceled,
        pb::TaskState::Skipped,
    ];
    assert_eq!(purge(&app, Some(tomorrow), &all).await.unwrap(), 3);
    let left = app
        .tasks()
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    assert_eq!(
        left.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        vec![waiting.id.clone()]
    );
    let err = app
        .tasks()
        .get_task(pb::GetTaskRequest {
            id: completed.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    worker.stop().await.unwrap();
}
