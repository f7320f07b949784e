//! ListTasks: each filter (states, func, task_group_id, worker, resource)
//! and their combination returns exactly the matching tasks in dispatch
//! order, and paging walks every task exactly once, in order.

use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{Backend, TestApp, both_databases, dispatch_request, state};
use serde_json::json;
use tonic::Code;

both_databases!(list_filters_and_pages_follow_dispatch_order);

/// One page of ListTasks; panics on an error.
async fn page(app: &TestApp, request: pb::ListTasksRequest) -> pb::ListTasksResponse {
    app.tasks()
        .list_tasks(request.clone())
        .await
        .unwrap_or_else(|s| panic!("list {request:?}: {s}"))
        .into_inner()
}

/// The ids of every task matching `request`, in the order listed, read
/// page by page.
async fn listed(app: &TestApp, mut request: pb::ListTasksRequest) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let page = page(app, request.clone()).await;
        ids.extend(page.tasks.into_iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        request.page_token = page.next_page_token;
    }
}

/// The ids of `tasks`.
fn ids(tasks: &[&pb::Task]) -> Vec<String> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

async fn list_filters_and_pages_follow_dispatch_order(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let group = app
        .groups()
        .create_task_group(pb::CreateTaskGroupRequest::default())
        .await
        .unwrap()
        .into_inner();
    let dispatch = |func: &str, kwargs, exclusive: &[&str], shared: &[&str], in_group: bool| {
        let mut request = dispatch_request(func, kwargs, exclusive, shared);
        if in_group {
            request.task_group_id = Some(group.id.clone());
        }
        let mut tasks = app.tasks();
        async move { tasks.dispatch(request).await.unwrap().into_inner() }
    };

    // On worker w1: t0..t2.
    let t0 = dispatch("noop", json!({}), &["A"], &[], true).await;
    let t1 = dispatch("sleep", json!({"seconds": 0.01}), &[], &["A"], false).await;
    let t2 = dispatch("fail", json!({}), &["B"], &[], true).await;
    let w1 = app.start_worker("w1", 2).await;
    for t in [&t0, &t1, &t2] {
        app.wait_final(&t.id).await;
    }
    w1.stop().await.unwrap();
    // On worker w2: t3, t4.
    let w2 = app.start_worker("w2", 1).await;
    let t3 = dispatch("noop", json!({}), &[], &["B"], true).await;
    let t4 = dispatch("noop", json!({}), &[], &[], false).await;
    for t in [&t3, &t4] {
        app.wait_final(&t.id).await;
    }
    w2.stop().await.unwrap();
    // No worker: t5 waits, t6 is cancelled while waiting.
    let t5 = dispatch("noop", json!({}), &["A"], &[], false).await;
    let t6 = dispatch("sleep", json!({"seconds": 60}), &["C"], &[], false).await;
    app.tasks()
        .cancel_task(pb::CancelTaskRequest { id: t6.id.clone() })
        .await
        .unwrap();
    let all = [&t0, &t1, &t2, &t3, &t4, &t5, &t6];
    let mut reread = Vec::new();
    for t in all {
        reread.push(
            app.tasks()
                .get_task(pb::GetTaskRequest { id: t.id.clone() })
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let states: Vec<pb::TaskState> = reread.iter().map(state).collect();
    use pb::TaskState::{Canceled, Completed, Failed, Waiting};
    assert_eq!(
        states,
        [
            Completed, Completed, Failed, Completed, Completed, Waiting, Canceled
        ],
        "the setup"
    );
    let workers: Vec<&str> = reread.iter().map(|t| t.worker.as_str()).collect();
    assert_eq!(workers, ["w1", "w1", "w1", "w2", "w2", "", ""], "the setup");

    let filter = pb::ListTasksRequest::default;
    let cases: Vec<(&str, pb::ListTasksRequest, Vec<&pb::Task>)> = vec![
        ("no filter", filter(), all.to_vec()),
        (
            "completed",
            pb::ListTasksRequest {
                states: vec![Completed as i32],
                ..filter()
            },
            vec![&t0, &t1, &t3, &t4],
        ),
        (
            "failed",
            pb::ListTasksRequest {
                states: vec![Failed as i32],
                ..filter()
            },
            vec![&t2],
        ),
        (
            "canceled or waiting",
            pb::ListTasksRequest {
                states: vec![Canceled as i32, Waiting as i32],
                ..filter()
            },
            vec![&t5, &t6],
        ),
        (
            "func noop",
            pb::ListTasksRequest {
                func: "noop".into(),
                ..filter()
            },
            vec![&t0, &t3, &t4, &t5],
        ),
        (
            "func sleep",
            pb::ListTasksRequest {
                func: "sleep".into(),
                ..filter()
            },
            vec![&t1, &t6],
        ),
        (
            "func nobody dispatched",
            pb::ListTasksRequest {
                func: "panic".into(),
                ..filter()
            },
            vec![],
        ),
        (
            "group",
            pb::ListTasksRequest {
                task_group_id: group.id.clone(),
                ..filter()
            },
            vec![&t0, &t2, &t3],
        ),
        (
            "another group",
            pb::ListTasksRequest {
                task_group_id: uuid::Uuid::now_v7().to_string(),
                ..filter()
            },
            vec![],
        ),
        (
            "worker w1",
            pb::ListTasksRequest {
                worker: "w1".into(),
                ..filter()
            },
            vec![&t0, &t1, &t2],
        ),
        (
            "worker w2",
            pb::ListTasksRequest {
                worker: "w2".into(),
                ..filter()
            },
            vec![&t3, &t4],
        ),
        (
            "unknown worker",
            pb::ListTasksRequest {
                worker: "w3".into(),
                ..filter()
            },
            vec![],
        ),
        (
            "resource A, exclusive or shared",
            pb::ListTasksRequest {
                resource: "A".into(),
                ..filter()
            },
            vec![&t0, &t1, &t5],
        ),
        (
            "resource B, exclusive or shared",
            pb::ListTasksRequest {
                resource: "B".into(),
                ..filter()
            },
            vec![&t2, &t3],
        ),
        (
            "resource C",
            pb::ListTasksRequest {
                resource: "C".into(),
                ..filter()
            },
            vec![&t6],
        ),
        (
            "resource nobody claims",
            pb::ListTasksRequest {
                resource: "D".into(),
                ..filter()
            },
            vec![],
        ),
        (
            "func and resource",
            pb::ListTasksRequest {
                func: "noop".into(),
                resource: "A".into(),
                ..filter()
            },
            vec![&t0, &t5],
        ),
        (
            "group and worker",
            pb::ListTasksRequest {
                task_group_id: group.id.clone(),
                worker: "w2".into(),
                ..filter()
            },
            vec![&t3],
        ),
        (
            "state and resource",
            pb::ListTasksRequest {
                states: vec![Completed as i32],
                resource: "A".into(),
                ..filter()
            },
            vec![&t0, &t1],
        ),
    ];
    for (case, request, expected) in cases {
        let one = page(&app, request).await;
        assert!(one.next_page_token.is_empty(), "{case}: one page");
        let got: Vec<String> = one.tasks.into_iter().map(|t| t.id).collect();
        assert_eq!(got, ids(&expected), "{case}");
    }

    // Paging: pages of 2 walk all 7 tasks once, in dispatch order; every
    // page but the last names the next.
    let mut request = pb::ListTasksRequest {
        page_size: 2,
        ..filter()
    };
    let mut pages = Vec::new();
    loop {
        let one = page(&app, request.clone()).await;
        pages.push(one.tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>());
        if one.next_page_token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
        request.page_token = one.next_page_token;
    }
    let expected: Vec<Vec<String>> = ids(&all).chunks(2).map(<[String]>::to_vec).collect();
    assert_eq!(pages, expected);
    // Paging within a filter.
    let filtered = pb::ListTasksRequest {
        resource: "A".into(),
        page_size: 1,
        ..filter()
    };
    assert_eq!(listed(&app, filtered).await, ids(&[&t0, &t1, &t5]));

    let err = app
        .tasks()
        .list_tasks(pb::ListTasksRequest {
            page_token: "not-a-token".into(),
            ..filter()
        })
        .await
        .expect_err("a malformed page token");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(!err.message().is_empty(), "{err}");
}
