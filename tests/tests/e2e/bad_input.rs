//! Bad input, table-driven: each request gets the right status with a
//! message, and the database is unchanged afterwards.

use pb::scheduler_message::Message as Down;
use pb::worker_message::Message as Up;
use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{Backend, TestApp, all_tasks, both_databases, dispatch_request, state};
use sea_orm::ConnectionTrait;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

both_databases!(
    bad_client_requests_change_nothing,
    bad_worker_streams_are_refused
);

/// What bad input must leave alone: every task as listed, the one group
/// as read back, and the row counts of the tables behind tasks and groups
/// (there is no call that lists groups, so those are counted directly).
#[derive(Debug, PartialEq)]
struct Snapshot {
    tasks: Vec<pb::Task>,
    group: pb::TaskGroup,
    rows: Vec<(&'static str, i64)>,
}

async fn snapshot(app: &TestApp, group: &str) -> Snapshot {
    let db = app.database().await;
    let mut rows = Vec::new();
    for table in ["tasks", "task_groups", "task_resources", "progress_reports"] {
        let row = db
            .query_one_raw(pulp_common::db::stmt(
                db.get_database_backend(),
                &format!("SELECT COUNT(*) AS n FROM {table}"),
                [],
            ))
            .await
            .expect("count rows")
            .expect("a count");
        rows.push((table, row.try_get("", "n").expect("a count")));
    }
    db.close().await.expect("close");
    let group = app
        .groups()
        .get_task_group(pb::GetTaskGroupRequest { id: group.into() })
        .await
        .expect("get the group")
        .into_inner();
    Snapshot {
        tasks: all_tasks(&mut app.tasks()).await,
        group,
        rows,
    }
}

/// Asserts that a call failed with `code` and a message for a person.
fn refused<T: std::fmt::Debug>(case: &str, result: Result<T, tonic::Status>, code: Code) {
    let err = result.expect_err(case);
    assert_eq!(err.code(), code, "{case}: {err}");
    assert!(!err.message().trim().is_empty(), "{case}: no message");
}

async fn bad_client_requests_change_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // A group holding one finished (COMPLETED) task and one that waits
    // behind a held resource, so that "unchanged" is not trivially empty.
    let worker = app.start_worker("w", 1).await;
    let group = app
        .groups()
        .create_task_group(pb::CreateTaskGroupRequest {
            description: "kept".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut request = dispatch_request("noop", json!({}), &["done"], &["read"]);
    request.task_group_id = Some(group.id.clone());
    let finished = app.tasks().dispatch(request).await.unwrap().into_inner();
    let finished = app.wait_final(&finished.id).await;
    assert_eq!(state(&finished), pb::TaskState::Completed, "{finished:?}");
    worker.stop().await.unwrap();
    let mut request = dispatch_request("noop", json!({}), &["later"], &[]);
    request.task_group_id = Some(group.id.clone());
    let waiting = app.tasks().dispatch(request).await.unwrap().into_inner();
    assert_eq!(state(&waiting), pb::TaskState::Waiting, "no worker left");
    let before = snapshot(&app, &group.id).await;
    assert_eq!(before.tasks.len(), 2);

    let d = |func: &str, exclusive: Vec<String>| pb::DispatchRequest {
        func: func.into(),
        exclusive_resources: exclusive,
        ..Default::default()
    };
    let shared = |shared: Vec<String>| pb::DispatchRequest {
        shared_resources: shared,
        ..d("noop", vec![])
    };
    let many = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    };
    let huge_args = pb::DispatchRequest {
        args: Some(pulp_common::json::json_to_list(&json!([
            "x".repeat(1024 * 1024 + 1)
        ]))),
        ..d("noop", vec![])
    };
    let bad_ref = pb::ResourceRef {
        kind: "repositories".into(),
        id: "a/b".into(),
    };
    let with_group = |group: &str| pb::DispatchRequest {
        task_group_id: Some(group.into()),
        ..d("noop", vec![])
    };
    let dispatches: Vec<(&str, pb::DispatchRequest, Code)> = vec![
        ("empty func", d("", vec![]), Code::InvalidArgument),
        (
            "unknown func",
            d("no_such_task", vec![]),
            Code::InvalidArgument,
        ),
        (
            "func with a space",
            d("no op", vec![]),
            Code::InvalidArgument,
        ),
        (
            "empty resource",
            d("noop", vec!["".into()]),
            Code::InvalidArgument,
        ),
        (
            "resource with NUL",
            d("noop", vec!["a\0b".into()]),
            Code::InvalidArgument,
        ),
        (
            "resource with a control character",
            d("noop", vec!["a\u{1b}b".into()]),
            Code::InvalidArgument,
        ),
        (
            "resource with surrounding space",
            d("noop", vec![" a".into()]),
            Code::InvalidArgument,
        ),
        (
            "more resources than the limit",
            d("noop", many("r", 101)),
            Code::InvalidArgument,
        ),
        (
            "resource over the length limit",
            d("noop", vec!["x".repeat(1025)]),
            Code::InvalidArgument,
        ),
        (
            "empty shared resource",
            shared(vec!["".into()]),
            Code::InvalidArgument,
        ),
        (
            "shared resource with NUL",
            shared(vec!["a\0b".into()]),
            Code::InvalidArgument,
        ),
        (
            "shared resource with a control character",
            shared(vec!["a\nb".into()]),
            Code::InvalidArgument,
        ),
        (
            "shared resource with surrounding space",
            shared(vec!["a ".into()]),
            Code::InvalidArgument,
        ),
        (
            "more shared resources than the limit",
            shared(many("s", 101)),
            Code::InvalidArgument,
        ),
        (
            "more exclusive plus shared resources than the limit",
            pb::DispatchRequest {
                shared_resources: many("s", 51),
                ..d("noop", many("x", 50))
            },
            Code::InvalidArgument,
        ),
        (
            "shared resource over the length limit",
            shared(vec!["y".repeat(1025)]),
            Code::InvalidArgument,
        ),
        ("oversized args", huge_args, Code::InvalidArgument),
        (
            "malformed typed reference",
            pb::DispatchRequest {
                exclusive_resource_refs: vec![bad_ref.clone()],
                ..d("noop", vec![])
            },
            Code::InvalidArgument,
        ),
        (
            "malformed typed shared reference",
            pb::DispatchRequest {
                shared_resource_refs: vec![bad_ref],
                ..d("noop", vec![])
            },
            Code::InvalidArgument,
        ),
        (
            "malformed group id",
            with_group("not-a-uuid"),
            Code::InvalidArgument,
        ),
        (
            "unknown group",
            with_group(&uuid::Uuid::now_v7().to_string()),
            Code::NotFound,
        ),
        (
            "malformed parent id",
            pb::DispatchRequest {
                parent_task_id: Some("123".into()),
                ..d("noop", vec![])
            },
            Code::InvalidArgument,
        ),
    ];
    for (case, request, code) in dispatches {
        refused(case, app.tasks().dispatch(request).await, code);
    }
    let bad_timeout = pb::EnqueueRequest {
        func: "noop".into(),
        options: Some(pb::EnqueueOptions {
            timeout_seconds: Some(-1.0),
        }),
        ..Default::default()
    };
    refused(
        "negative timeout",
        app.tasks().enqueue(bad_timeout).await,
        Code::InvalidArgument,
    );

    // Cancelling a finished task: refused, and it stays COMPLETED.
    refused(
        "cancel a completed task",
        app.tasks()
            .cancel_task(pb::CancelTaskRequest {
                id: finished.id.clone(),
            })
            .await,
        Code::FailedPrecondition,
    );
    let reread = app
        .tasks()
        .get_task(pb::GetTaskRequest {
            id: finished.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&reread), pb::TaskState::Completed, "{reread:?}");

    let unknown = uuid::Uuid::now_v7().to_string();
    for (case, id, code) in [
        ("malformed id", "xyz", Code::InvalidArgument),
        ("empty id", "", Code::InvalidArgument),
        ("unknown id", unknown.as_str(), Code::NotFound),
    ] {
        let id = || id.to_owned();
        let mut tasks = app.tasks();
        let mut groups = app.groups();
        refused(
            &format!("get task, {case}"),
            tasks.get_task(pb::GetTaskRequest { id: id() }).await,
            code,
        );
        refused(
            &format!("cancel task, {case}"),
            tasks.cancel_task(pb::CancelTaskRequest { id: id() }).await,
            code,
        );
        refused(
            &format!("watch task, {case}"),
            tasks
                .watch_task(pb::WatchTaskRequest { id: id() })
                .await
                .map(|_| "a stream"),
            code,
        );
        refused(
            &format!("get group, {case}"),
            groups
                .get_task_group(pb::GetTaskGroupRequest { id: id() })
                .await,
            code,
        );
        refused(
            &format!("finish group, {case}"),
            groups
                .finish_task_group(pb::FinishTaskGroupRequest { id: id() })
                .await,
            code,
        );
        refused(
            &format!("cancel group, {case}"),
            groups
                .cancel_task_group(pb::CancelTaskGroupRequest { id: id() })
                .await,
            code,
        );
    }
    let list = |page_size: i32, page_token: &str, states: Vec<i32>| pb::ListTasksRequest {
        page_size,
        page_token: page_token.into(),
        states,
        ..Default::default()
    };
    for (case, request) in [
        ("negative page size", list(-1, "", vec![])),
        ("page size over the limit", list(1001, "", vec![])),
        ("malformed page token", list(10, "abc", vec![])),
        ("negative page token", list(10, "-5", vec![])),
        ("unspecified state filter", list(10, "", vec![0])),
        ("unknown state filter", list(10, "", vec![99])),
        (
            "malformed group filter",
            pb::ListTasksRequest {
                task_group_id: "nope".into(),
                ..list(10, "", vec![])
            },
        ),
    ] {
        refused(
            case,
            app.tasks().list_tasks(request).await,
            Code::InvalidArgument,
        );
    }
    refused(
        "group description over the limit",
        app.groups()
            .create_task_group(pb::CreateTaskGroupRequest {
                description: "x".repeat(5000),
            })
            .await,
        Code::InvalidArgument,
    );

    let after = snapshot(&app, &group.id).await;
    assert_eq!(after, before, "bad input changed the database");
    let kept = after
        .tasks
        .iter()
        .find(|t| t.id == finished.id)
        .expect("the finished task is listed");
    assert_eq!(kept, &finished, "the completed task changed");
    assert_eq!(
        (after.group.completed, after.group.waiting),
        (1, 1),
        "{:?}",
        after.group
    );
    assert!(!after.group.all_tasks_dispatched, "{:?}", after.group);
}

/// A hand-driven worker stream: the real protocol, no worker library.
struct RawWorker {
    up: mpsc::Sender<pb::WorkerMessage>,
    down: Streaming<pb::SchedulerMessage>,
}

async fn open(app: &TestApp, first: Up) -> Result<RawWorker, tonic::Status> {
    let (up, rx) = mpsc::channel(16);
    up.send(pb::WorkerMessage {
        message: Some(first),
    })
    .await
    .unwrap();
    let down = app
        .workers()
        .connect(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(RawWorker { up, down })
}

fn hello(name: &str, instance: &str) -> Up {
    Up::Hello(pb::Hello {
        name: name.into(),
        funcs: vec!["noop".into()],
        slots: 1,
        instance_id: instance.into(),
        ..Default::default()
    })
}

impl RawWorker {
    async fn send(&self, message: Up) {
        self.up
            .send(pb::WorkerMessage {
                message: Some(message),
            })
            .await
            .unwrap();
    }

    async fn next(&mut self) -> Result<Down, tonic::Status> {
        let message = tokio::time::timeout(pulp_tests::WAIT, self.down.message())
            .await
            .expect("a message in time")?;
        Ok(message
            .and_then(|m| m.message)
            .expect("a message, not the end of the stream"))
    }
}

fn finished(task_id: &str) -> Up {
    Up::Finished(pb::TaskFinished {
        task_id: task_id.into(),
        attempt: 1,
        outcome: Some(pb::task_finished::Outcome::Result(
            pulp_common::json::json_to_value(&json!(1)),
        )),
        created_resources: vec![],
    })
}

async fn bad_worker_streams_are_refused(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Connecting without registering.
    let err = open(&app, Up::Heartbeat(pb::Heartbeat {}))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(!err.message().is_empty(), "no Hello: no message");
    // Bad Hellos.
    for (case, bad) in [
        (
            "no funcs",
            pb::Hello {
                name: "w".into(),
                slots: 1,
                instance_id: "i".into(),
                ..Default::default()
            },
        ),
        (
            "zero slots",
            pb::Hello {
                name: "w".into(),
                funcs: vec!["noop".into()],
                instance_id: "i".into(),
                ..Default::default()
            },
        ),
        (
            "bad name",
            pb::Hello {
                name: "w w".into(),
                funcs: vec!["noop".into()],
                slots: 1,
                instance_id: "i".into(),
                ..Default::default()
            },
        ),
        (
            "no instance",
            pb::Hello {
                name: "w".into(),
                funcs: vec!["noop".into()],
                slots: 1,
                ..Default::default()
            },
        ),
    ] {
        let err = open(&app, Up::Hello(bad)).await.err().expect(case);
        assert_eq!(err.code(), Code::InvalidArgument, "{case}: {err}");
        assert!(!err.message().is_empty(), "{case}: no message");
    }
    assert!(
        app.list_workers().await.is_empty(),
        "refused registrations registered nobody"
    );

    // Registering twice on one stream: the second Hello (other funcs, other
    // slots) is refused and changes nothing about the registered worker.
    let mut twice = open(&app, hello("twice", "instance-1")).await.unwrap();
    assert!(matches!(twice.next().await.unwrap(), Down::Welcome(_)));
    let registered = app.list_workers().await;
    twice
        .send(Up::Hello(pb::Hello {
            name: "twice".into(),
            funcs: vec!["noop".into(), "sleep".into()],
            slots: 7,
            instance_id: "instance-1".into(),
            ..Default::default()
        }))
        .await;
    let err = twice.next().await.expect_err("second Hello refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(!err.message().is_empty(), "second Hello: no message");
    let listed = app.list_workers().await;
    assert_eq!(
        listed.iter().map(|w| &w.name).collect::<Vec<_>>(),
        ["twice"],
        "{listed:?}"
    );
    assert_eq!(
        (&listed[0].funcs, listed[0].slots),
        (&registered[0].funcs, 1),
        "the second Hello changed the registration: {listed:?}"
    );
    assert_eq!(registered[0].funcs, ["noop"], "{registered:?}");

    // A second live process with the same name: refused, the first keeps
    // the name and stays online.
    let mut first = open(&app, hello("dup", "instance-a")).await.unwrap();
    assert!(matches!(first.next().await.unwrap(), Down::Welcome(_)));
    let err = open(&app, hello("dup", "instance-b"))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    assert!(!err.message().is_empty(), "duplicate name: no message");
    let listed = app.list_workers().await;
    let dups: Vec<&pb::Worker> = listed.iter().filter(|w| w.name == "dup").collect();
    assert_eq!(dups.len(), 1, "{listed:?}");
    assert_eq!(dups[0].state, pb::WorkerState::Online as i32, "{listed:?}");
    assert_eq!(listed.len(), 2, "{listed:?}");

    // Results for tasks the worker does not hold: unknown, and someone
    // else's (a waiting task nobody holds).
    let unknown = uuid::Uuid::now_v7().to_string();
    first.send(finished(&unknown)).await;
    match first.next().await.unwrap() {
        Down::ResultAck(ack) => {
            assert_eq!(ack.code, Code::NotFound as i32, "{ack:?}");
            assert!(!ack.message.is_empty(), "{ack:?}");
        }
        other => panic!("expected a ResultAck, got {other:?}"),
    }
    let held_elsewhere = app.dispatch("sleep", json!({}), &[], &[]).await;
    first.send(finished(&held_elsewhere.id)).await;
    match first.next().await.unwrap() {
        Down::ResultAck(ack) => {
            assert_eq!(ack.code, Code::FailedPrecondition as i32, "{ack:?}");
            assert!(!ack.message.is_empty(), "{ack:?}");
        }
        other => panic!("expected a ResultAck, got {other:?}"),
    }
    let still = app
        .tasks()
        .get_task(pb::GetTaskRequest {
            id: held_elsewhere.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        still.state,
        pb::TaskState::Waiting as i32,
        "a refused result changes nothing"
    );
}
