//! Rounds in flight on PostgreSQL (issue 7, `scheduler/src/engine/pipeline.rs`):
//! a round of plain dispatches is written by a task of its own, and another
//! round's COMMIT runs in the background, while the engine gathers the next
//! commands. A write or commit that fails is answered UNAVAILABLE and
//! stores nothing; the commands that arrived meanwhile wait for it and then
//! succeed on the rebuilt state; nothing acknowledged is lost. A replica
//! that lost the leadership stores no dispatch.
//!
//! Failures are injected with a deferred constraint trigger: it fires when
//! the transaction ends, sleeps so that the test can send more work while
//! that write is in flight (seen in `pg_stat_activity`), then raises.

use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{Backend, TestApp, dispatch_request, state};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;

/// Fails the transaction of any round that inserted a task whose kwargs
/// carry the marker, half a second into its commit.
const FAIL_AT_COMMIT: &str = r#"
CREATE FUNCTION test_fail_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kwargs LIKE '%fail-at-commit%' THEN
        PERFORM pg_sleep(0.5);
        RAISE EXCEPTION 'injected commit failure';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER test_fail_at_commit AFTER INSERT ON tasks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_at_commit();
"#;

/// How long to wait for a backend to reach a state.
const SEEN_WITHIN: Duration = Duration::from_secs(10);

/// Waits until some other backend of this database matches `condition`
/// (SQL over `pg_stat_activity`).
async fn wait_for_backend(db: &DatabaseConnection, condition: &str, what: &str) {
    let sql = format!(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND {condition}"
    );
    let deadline = Instant::now() + SEEN_WITHIN;
    loop {
        let row = db
            .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.clone()))
            .await
            .expect("query pg_stat_activity")
            .expect("one row");
        if row.try_get::<i64>("", "n").expect("count") > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no backend {what} within {SEEN_WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How many stored tasks have kwargs containing `needle`.
async fn stored_with(db: &DatabaseConnection, needle: &str) -> i64 {
    db.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT count(*) AS n FROM tasks WHERE kwargs LIKE $1",
        [format!("%{needle}%").into()],
    ))
    .await
    .expect("count tasks")
    .expect("one row")
    .try_get::<i64>("", "n")
    .expect("count")
}

/// Dispatches a noop with `kwargs` in the background.
fn dispatch_later(
    app: &TestApp,
    kwargs: serde_json::Value,
    group: Option<String>,
) -> tokio::task::JoinHandle<Result<pb::Task, tonic::Status>> {
    let mut tasks = app.tasks();
    let mut request = dispatch_request("noop", kwargs, &[], &[]);
    request.task_group_id = group;
    tokio::spawn(async move { tasks.dispatch(request).await.map(|r| r.into_inner()) })
}

/// The scenario of both kinds of round in flight: a round whose write
/// fails (`in_flight` names the backend's query in `pg_stat_activity`,
/// `group` puts the failing task in a group, which the engine writes
/// itself and commits in the background) while a plain dispatch and a
/// cancellation arrive.
async fn failure_in_flight(in_flight: &str, grouped: bool) {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let db = app.database().await;
    let before = app.dispatch("noop", json!({"n": "before"}), &[], &[]).await;
    // No worker runs yet: this one waits, to be cancelled meanwhile.
    let waiting = app
        .dispatch("noop", json!({"n": "waiting"}), &["r"], &[])
        .await;
    let group = if grouped {
        let group = app
            .groups()
            .create_task_group(pb::CreateTaskGroupRequest::default())
            .await
            .expect("create a group")
            .into_inner();
        Some(group.id)
    } else {
        None
    };
    db.execute_unprepared(FAIL_AT_COMMIT)
        .await
        .expect("install the trigger");

    let poisoned = dispatch_later(&app, json!({"fail-at-commit": 1}), group);
    wait_for_backend(
        &db,
        &format!("wait_event = 'PgSleep' AND {in_flight}"),
        "writing the failing round",
    )
    .await;
    let meanwhile = dispatch_later(&app, json!({"n": "meanwhile"}), None);
    let mut tasks = app.tasks();
    let waiting_id = waiting.id.clone();
    let cancel = tokio::spawn(async move {
        tasks
            .cancel_task(pb::CancelTaskRequest { id: waiting_id })
            .await
    });

    let poisoned = poisoned.await.unwrap().expect_err("its transaction failed");
    assert_eq!(poisoned.code(), Code::Unavailable, "{poisoned}");
    assert_eq!(
        stored_with(&db, "fail-at-commit").await,
        0,
        "refused yet stored"
    );
    let meanwhile = meanwhile
        .await
        .unwrap()
        .expect("a dispatch that waited for the failed round");
    cancel
        .await
        .unwrap()
        .expect("a cancellation that waited for the failed round");
    assert_eq!(stored_with(&db, "meanwhile").await, 1);
    let cancelled = app.wait_final(&waiting.id).await;
    assert_eq!(state(&cancelled), pb::TaskState::Canceled);

    // Nothing acknowledged was lost, and the scheduler goes on.
    db.execute_unprepared("DROP TRIGGER test_fail_at_commit ON tasks")
        .await
        .expect("drop the trigger");
    let after = app.dispatch("noop", json!({"n": "after"}), &[], &[]).await;
    let _worker = app.start_worker("w", 2).await;
    for id in [&before.id, &meanwhile.id, &after.id] {
        let task = app.wait_final(id).await;
        assert_eq!(state(&task), pb::TaskState::Completed, "{task:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_dispatch_write_stores_nothing_and_the_next_rounds_go_on() {
    // The dispatch round's own statement (tasks numbered beforehand).
    failure_in_flight("query LIKE '%INSERT INTO tasks (seq,%'", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_background_commit_stores_nothing_and_the_next_rounds_go_on() {
    // A grouped dispatch is checked against its group in the engine's own
    // transaction, whose COMMIT then runs in the background.
    failure_in_flight("query = 'COMMIT'", true).await;
}

/// A newer leader bumped the epoch: the next dispatch round finds it in
/// its own statement, stores nothing, and the dispatch fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_superseded_leader_stores_no_dispatch() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let db = app.database().await;
    app.dispatch("noop", json!({"n": "before"}), &[], &[]).await;
    db.execute_unprepared("UPDATE scheduler_leader SET epoch = epoch + 1 WHERE id = 1")
        .await
        .expect("bump the epoch");
    let refused = app
        .tasks()
        .dispatch(dispatch_request("noop", json!({"n": "fenced"}), &[], &[]))
        .await
        .expect_err("a superseded leader takes no dispatch");
    assert!(
        matches!(refused.code(), Code::Unavailable | Code::FailedPrecondition),
        "{refused}"
    );
    assert_eq!(
        stored_with(&db, "fenced").await,
        0,
        "stored by a stale leader"
    );
    assert_eq!(stored_with(&db, "before").await, 1);
}
