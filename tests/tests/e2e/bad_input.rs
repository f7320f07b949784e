//! Bad input, table-driven: each request gets the right status with a
//! message, and the database is unchanged afterwards.

use pb::scheduler_message::Message as Down;
use pb::worker_message::Message as Up;
use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{Backend, TestApp, both_databases, dispatch_request};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

both_databases!(
    bad_client_requests_change_nothing,
    bad_worker_streams_are_refused
);

async fn task_count(app: &TestApp) -> usize {
    let page = app
        .tasks()
        .list_tasks(pb::ListTasksRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    page.tasks.len()
}

async fn bad_client_requests_change_nothing(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // One valid task, so that "unchanged" is not trivially zero.
    let finished = app.dispatch("noop", json!({}), &[], &[]).await;
    let before = task_count(&app).await;
    let d = |func: &str, exclusive: Vec<String>| pb::DispatchRequest {
        func: func.into(),
        exclusive_resources: exclusive,
        ..Default::default()
    };
    let too_many: Vec<String> = (0..101).map(|i| format!("r{i}")).collect();
    let huge_args = pb::DispatchRequest {
        args: Some(pulp_common::json::json_to_list(&json!([
            "x".repeat(1024 * 1024 + 1)
        ]))),
        ..d("noop", vec![])
    };
    let bad_ref = pb::DispatchRequest {
        exclusive_resource_refs: vec![pb::ResourceRef {
            kind: "repositories".into(),
            id: "a/b".into(),
        }],
        ..d("noop", vec![])
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
            d("noop", too_many),
            Code::InvalidArgument,
        ),
        (
            "resource over the length limit",
            d("noop", vec!["x".repeat(1025)]),
            Code::InvalidArgument,
        ),
        ("oversized args", huge_args, Code::InvalidArgument),
        ("malformed typed reference", bad_ref, Code::InvalidArgument),
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
        let err = app.tasks().dispatch(request).await.expect_err(case);
        assert_eq!(err.code(), code, "{case}: {err}");
        assert!(!err.message().is_empty(), "{case}: no message");
    }
    let bad_timeout = pb::EnqueueRequest {
        func: "noop".into(),
        options: Some(pb::EnqueueOptions {
            timeout_seconds: Some(-1.0),
        }),
        ..Default::default()
    };
    let err = app.tasks().enqueue(bad_timeout).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "negative timeout: {err}");

    let unknown = uuid::Uuid::now_v7().to_string();
    let get = |id: &str| pb::GetTaskRequest { id: id.into() };
    for (case, id, code) in [
        ("malformed task id", "xyz", Code::InvalidArgument),
        ("empty task id", "", Code::InvalidArgument),
        ("unknown task", unknown.as_str(), Code::NotFound),
    ] {
        let err = app.tasks().get_task(get(id)).await.expect_err(case);
        assert_eq!(err.code(), code, "{case}: {err}");
        let err = app
            .tasks()
            .cancel_task(pb::CancelTaskRequest { id: id.into() })
            .await
            .expect_err(case);
        assert_eq!(err.code(), code, "cancel, {case}: {err}");
        let err = app
            .groups()
            .get_task_group(pb::GetTaskGroupRequest { id: id.into() })
            .await
            .expect_err(case);
        assert_eq!(err.code(), code, "group, {case}: {err}");
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
        ("unspecified state filter", list(10, "", vec![0])),
        ("unknown state filter", list(10, "", vec![99])),
    ] {
        let err = app.tasks().list_tasks(request).await.expect_err(case);
        assert_eq!(err.code(), Code::InvalidArgument, "{case}: {err}");
    }
    let err = app
        .groups()
        .create_task_group(pb::CreateTaskGroupRequest {
            description: "x".repeat(5000),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        task_count(&app).await,
        before,
        "bad input changed the database"
    );
    let unchanged = app
        .tasks()
        .get_task(get(&finished.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged.state, finished.state);
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
    }
    // Registering twice on one stream.
    let mut twice = open(&app, hello("twice", "instance-1")).await.unwrap();
    assert!(matches!(twice.next().await.unwrap(), Down::Welcome(_)));
    twice.send(hello("twice", "instance-1")).await;
    let err = twice.next().await.expect_err("second Hello refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");

    // A second live process with the same name.
    let mut first = open(&app, hello("dup", "instance-a")).await.unwrap();
    assert!(matches!(first.next().await.unwrap(), Down::Welcome(_)));
    let err = open(&app, hello("dup", "instance-b"))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");

    // Results for tasks the worker does not hold: unknown, and someone
    // else's (a waiting task nobody holds).
    let unknown = uuid::Uuid::now_v7().to_string();
    first.send(finished(&unknown)).await;
    match first.next().await.unwrap() {
        Down::ResultAck(ack) => assert_eq!(ack.code, Code::NotFound as i32, "{ack:?}"),
        other => panic!("expected a ResultAck, got {other:?}"),
    }
    let held_elsewhere = app.dispatch("sleep", json!({}), &[], &[]).await;
    first.send(finished(&held_elsewhere.id)).await;
    match first.next().await.unwrap() {
        Down::ResultAck(ack) => assert_eq!(ack.code, Code::FailedPrecondition as i32, "{ack:?}"),
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
    assert!(dispatch_request("noop", json!({}), &[], &[]).func == "noop");
}
