//! `Tasks.PurgeTasks` with Pulp's cases, and automatic retention
//! (`--task-retention-days`).

use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::tasks_client::TasksClient;
use pulp_tests::{
    Backend, ProcessEnv, TestApp, WAIT, both_databases, connect_eventually, dispatch_request,
    is_final, state,
};
use sea_orm::{ConnectionTrait, Value};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

both_databases!(
    purge_follows_pulp_semantics,
    retention_purges_old_finished_tasks_at_start,
);

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

/// Dispatches `func` (no resources) on `tasks`.
async fn dispatch(tasks: &mut TasksClient<Channel>, func: &str) -> pb::Task {
    tasks
        .dispatch(dispatch_request(func, json!({}), &[], &[]))
        .await
        .unwrap_or_else(|s| panic!("dispatch {func}: {s}"))
        .into_inner()
}

/// The task, or NOT_FOUND.
async fn get(tasks: &mut TasksClient<Channel>, id: &str) -> Result<pb::Task, Code> {
    tasks
        .get_task(pb::GetTaskRequest { id: id.to_owned() })
        .await
        .map(|t| t.into_inner())
        .map_err(|s| s.code())
}

/// `--task-retention-days 1`: the retention pass runs when the scheduler
/// starts (then hourly) and purges every task in a final state that
/// finished more than a day ago, keeping recently finished tasks and
/// unfinished ones however old. A first scheduler process (no retention)
/// makes a COMPLETED, a FAILED and a CANCELED task that are then backdated
/// two days in the database, a recent COMPLETED one, and a WAITING one
/// created two days ago; a second scheduler process on the same database,
/// with the setting, purges exactly the three old final tasks.
async fn retention_purges_old_finished_tasks_at_start(backend: Backend) {
    let Some(env) = ProcessEnv::new(backend).await else {
        return;
    };
    let url = env.url();
    let mut first = env.start_scheduler("first.log", &[]).await;
    let mut worker = env.start_worker("w", 2, &[]).await;
    let mut tasks = TasksClient::new(connect_eventually(&url).await);
    let old_completed = dispatch(&mut tasks, "noop").await;
    let old_failed = dispatch(&mut tasks, "fail").await;
    let recent = dispatch(&mut tasks, "noop").await;
    for task in [&old_completed, &old_failed, &recent] {
        pulp_tests::wait_task(&mut tasks, &task.id, is_final).await;
    }
    worker.signal("TERM");
    assert!(worker.wait_exit(WAIT).await.is_some_and(|s| s.success()));
    // No worker now: these stay WAITING.
    let old_canceled = dispatch(&mut tasks, "noop").await;
    tasks
        .cancel_task(pb::CancelTaskRequest {
            id: old_canceled.id.clone(),
        })
        .await
        .expect("cancel");
    let old_waiting = dispatch(&mut tasks, "noop").await;
    drop(tasks);
    first.signal("TERM");
    assert!(first.wait_exit(WAIT).await.is_some_and(|s| s.success()));

    let conn = pulp_common::db::connect(env.db.url(), &Default::default())
        .await
        .expect("connect to the test database");
    let two_days_ago = pulp_common::time::now_micros() - 2 * 86_400 * 1_000_000;
    for (column, task) in [
        ("finished_at", &old_completed),
        ("finished_at", &old_failed),
        ("finished_at", &old_canceled),
        ("created_at", &old_waiting),
    ] {
        let done = conn
            .execute_raw(pulp_common::db::stmt(
                conn.get_database_backend(),
                &format!("UPDATE tasks SET {column} = $1 WHERE id = $2"),
                [Value::from(two_days_ago), Value::from(task.id.clone())],
            ))
            .await
            .expect("backdate a task");
        assert_eq!(done.rows_affected(), 1);
    }
    conn.close().await.expect("close");

    let second = env
        .start_scheduler("second.log", &["--task-retention-days", "1"])
        .await;
    second
        .wait_for_log("retention purged finished tasks", WAIT)
        .await
        .unwrap_or_else(|| panic!("no retention pass:\n{}", second.log_text()));
    let mut tasks = TasksClient::new(connect_eventually(&url).await);
    for gone in [&old_completed, &old_failed, &old_canceled] {
        assert_eq!(
            get(&mut tasks, &gone.id).await.map(|t| state(&t)),
            Err(Code::NotFound),
            "{} was not purged",
            gone.id
        );
    }
    let recent = get(&mut tasks, &recent.id).await.expect("recent task kept");
    assert_eq!(state(&recent), pb::TaskState::Completed);
    let waiting = get(&mut tasks, &old_waiting.id)
        .await
        .expect("waiting task kept");
    assert_eq!(state(&waiting), pb::TaskState::Waiting);
}
