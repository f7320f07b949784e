//! `pulpctl::run` against a scripted in-process scheduler.
//!
//! The fake serves the real generated services on a port-0 listener and
//! records what it was asked, so these tests check the requests the CLI
//! builds (Dispatch vs Enqueue, filters, paging) and how it prints the
//! answers and error statuses, without the real scheduler. The end-to-end
//! tests against the real scheduler live in the `tests` crate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use clap::Parser;
use pulp_common::json::{list_to_json, struct_to_json};
use pulp_common::proto::tasking::v1::{
    self as pb, CancelTaskGroupRequest, CancelTaskRequest, CreateTaskGroupRequest, DispatchRequest,
    EnqueueRequest, EnqueueResponse, FinishTaskGroupRequest, GetTaskGroupRequest, GetTaskRequest,
    ListTasksRequest, ListTasksResponse, ListWorkersRequest, ListWorkersResponse, SchedulerMessage,
    Task, TaskGroup, WatchTaskRequest, Worker, WorkerMessage,
    task_groups_server::{TaskGroups, TaskGroupsServer},
    tasks_server::{Tasks, TasksServer},
    workers_server::{Workers, WorkersServer},
};
use pulp_common::time::to_timestamp;
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

/// Tasks `ListTasks` knows about.
const LISTED: usize = 130;
/// The fake's largest page, smaller than the CLI asks for, to force paging.
const FAKE_PAGE: usize = 40;

#[derive(Default)]
struct Fake {
    dispatched: Mutex<Vec<DispatchRequest>>,
    enqueued: Mutex<Vec<EnqueueRequest>>,
    listed: Mutex<Vec<ListTasksRequest>>,
}

fn task(id: &str, state: pb::TaskState) -> Task {
    Task {
        id: id.to_owned(),
        func: "sleep".to_owned(),
        state: state as i32,
        created_at: Some(to_timestamp(1_700_000_000_000_000)),
        ..Task::default()
    }
}

#[tonic::async_trait]
impl Tasks for Fake {
    async fn dispatch(&self, request: Request<DispatchRequest>) -> Result<Response<Task>, Status> {
        let request = request.into_inner();
        if request.func == "nope" {
            return Err(Status::invalid_argument("unknown func 'nope'"));
        }
        let mut task = task("t-dispatched", pb::TaskState::Waiting);
        task.func = request.func.clone();
        task.args = request.args.clone();
        task.kwargs = request.kwargs.clone();
        task.exclusive_resources = request.exclusive_resources.clone();
        self.dispatched.lock().unwrap().push(request);
        Ok(Response::new(task))
    }

    async fn enqueue(
        &self,
        request: Request<EnqueueRequest>,
    ) -> Result<Response<EnqueueResponse>, Status> {
        let request = request.into_inner();
        let mut task = task("ok-enqueued", pb::TaskState::Waiting);
        task.timeout_seconds = request
            .options
            .and_then(|o| o.timeout_seconds)
            .unwrap_or_default();
        self.enqueued.lock().unwrap().push(request);
        Ok(Response::new(EnqueueResponse {
            job_id: task.id.clone(),
            task: Some(task),
        }))
    }

    async fn get_task(&self, request: Request<GetTaskRequest>) -> Result<Response<Task>, Status> {
        let id = request.into_inner().id;
        if id == "missing" {
            return Err(Status::not_found(format!("task {id} not found")));
        }
        Ok(Response::new(task(&id, pb::TaskState::Running)))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let request = request.into_inner();
        let start: usize = if request.page_token.is_empty() {
            0
        } else {
            request.page_token.parse().unwrap()
        };
        let size = usize::try_from(request.page_size)
            .unwrap()
            .clamp(1, FAKE_PAGE);
        let end = (start + size).min(LISTED);
        self.listed.lock().unwrap().push(request);
        Ok(Response::new(ListTasksResponse {
            tasks: (start..end)
                .map(|i| task(&format!("listed-{i:03}"), pb::TaskState::Completed))
                .collect(),
            next_page_token: if end < LISTED {
                end.to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<CancelTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        let id = request.into_inner().id;
        if id == "done" {
            return Err(Status::failed_precondition("task done is completed"));
        }
        Ok(Response::new(task(&id, pb::TaskState::Canceled)))
    }

    type WatchTaskStream = tokio_stream::Iter<std::vec::IntoIter<Result<Task, Status>>>;

    /// `ok*` tasks complete, `bad*` tasks fail, `cut*` streams end early.
    async fn watch_task(
        &self,
        request: Request<WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let id = request.into_inner().id;
        let mut running = task(&id, pb::TaskState::Running);
        running.worker = "w1".to_owned();
        running.progress_reports = vec![pb::ProgressReport {
            message: "Sleeping".to_owned(),
            code: "sleep".to_owned(),
            done: 1,
            total: 2,
            suffix: String::new(),
        }];
        let mut last = running.clone();
        if id.starts_with("ok") {
            last.state = pb::TaskState::Completed as i32;
            last.result = Some(pulp_common::json::json_to_value(&json!({"slept": 2})));
        } else if id.starts_with("bad") {
            last.state = pb::TaskState::Failed as i32;
            last.error = Some(pb::TaskError {
                description: "boom".to_owned(),
                reason: "task error".to_owned(),
                traceback: String::new(),
            });
        }
        let mut snapshots = vec![Ok(task(&id, pb::TaskState::Waiting)), Ok(running)];
        if !id.starts_with("cut") {
            snapshots.push(Ok(last));
        }
        Ok(Response::new(tokio_stream::iter(snapshots)))
    }
}

#[tonic::async_trait]
impl TaskGroups for Fake {
    async fn create_task_group(
        &self,
        request: Request<CreateTaskGroupRequest>,
    ) -> Result<Response<TaskGroup>, Status> {
        Ok(Response::new(TaskGroup {
            id: "g-new".to_owned(),
            description: request.into_inner().description,
            ..TaskGroup::default()
        }))
    }

    async fn get_task_group(
        &self,
        request: Request<GetTaskGroupRequest>,
    ) -> Result<Response<TaskGroup>, Status> {
        Ok(Response::new(TaskGroup {
            id: request.into_inner().id,
            total: 3,
            running: 1,
            completed: 2,
            ..TaskGroup::default()
        }))
    }

    async fn finish_task_group(
        &self,
        request: Request<FinishTaskGroupRequest>,
    ) -> Result<Response<TaskGroup>, Status> {
        Ok(Response::new(TaskGroup {
            id: request.into_inner().id,
            all_tasks_dispatched: true,
            ..TaskGroup::default()
        }))
    }

    async fn cancel_task_group(
        &self,
        request: Request<CancelTaskGroupRequest>,
    ) -> Result<Response<TaskGroup>, Status> {
        Ok(Response::new(TaskGroup {
            id: request.into_inner().id,
            all_tasks_dispatched: true,
            finished: true,
            ..TaskGroup::default()
        }))
    }
}

#[tonic::async_trait]
impl Workers for Fake {
    type ConnectStream = tokio_stream::Empty<Result<SchedulerMessage, Status>>;

    async fn connect(
        &self,
        _request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_workers(
        &self,
        _request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        Ok(Response::new(ListWorkersResponse {
            workers: vec![Worker {
                name: "worker-a".to_owned(),
                state: pb::WorkerState::Online as i32,
                funcs: vec!["noop".to_owned(), "sleep".to_owned()],
                slots: 2,
                running: 1,
                last_heartbeat: Some(to_timestamp(1_700_000_000_000_000)),
                ..Worker::default()
            }],
        }))
    }
}

struct TestApp {
    address: SocketAddr,
    fake: Arc<Fake>,
}

impl TestApp {
    async fn spawn() -> TestApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let fake = Arc::new(Fake::default());
        let server = tonic::transport::Server::builder()
            .add_service(TasksServer::from_arc(fake.clone()))
            .add_service(TaskGroupsServer::from_arc(fake.clone()))
            .add_service(WorkersServer::from_arc(fake.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::spawn(server);
        TestApp { address, fake }
    }

    /// Runs `pulpctl ARGS...` and returns (exit code or error text, stdout).
    async fn run(&self, args: &[&str]) -> (Result<i32, String>, String) {
        let url = format!("http://{}", self.address);
        let argv = ["pulpctl", "--scheduler", &url]
            .into_iter()
            .chain(args.iter().copied());
        let cli = pulpctl::Cli::try_parse_from(argv).unwrap();
        let mut out = Vec::new();
        let result = pulpctl::run(cli, &mut out)
            .await
            .map_err(|err| err.to_string());
        (result, String::from_utf8(out).unwrap())
    }

    async fn json(&self, args: &[&str]) -> Json {
        let mut args = args.to_vec();
        args.push("--json");
        let (result, out) = self.run(&args).await;
        assert_eq!(result, Ok(0), "{out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

#[tokio::test]
async fn dispatch_sends_args_kwargs_and_resources() {
    let app = TestApp::spawn().await;
    let doc = app
        .json(&[
            "dispatch",
            "sleep",
            "--args",
            r#"[1, "x"]"#,
            "--kwargs",
            r#"{"seconds": 2}"#,
            "--exclusive",
            "/a/",
            "--shared",
            "/b/",
        ])
        .await;
    assert_eq!(doc["id"], "t-dispatched");
    assert_eq!(doc["state"], "waiting");
    assert_eq!(doc["args"], json!([1, "x"]));
    assert_eq!(doc["kwargs"], json!({"seconds": 2}));
    assert_eq!(doc["created_at"], "2023-11-14T22:13:20Z");

    let sent = app.fake.dispatched.lock().unwrap()[0].clone();
    assert_eq!(list_to_json(sent.args.as_ref().unwrap()), json!([1, "x"]));
    assert_eq!(
        Json::Object(struct_to_json(sent.kwargs.as_ref().unwrap())),
        json!({"seconds": 2})
    );
    assert_eq!(sent.exclusive_resources, ["/a/"]);
    assert_eq!(sent.shared_resources, ["/b/"]);
    assert!(app.fake.enqueued.lock().unwrap().is_empty());

    let (result, out) = app.run(&["dispatch", "noop"]).await;
    assert_eq!(result, Ok(0));
    assert!(
        out.contains("t-dispatched") && out.contains("noop"),
        "{out}"
    );
    assert!(out.contains("waiting"), "{out}");
    let sent = app.fake.dispatched.lock().unwrap()[1].clone();
    assert!(sent.args.is_none() && sent.kwargs.is_none());
}

#[tokio::test]
async fn dispatch_with_a_timeout_enqueues_and_can_wait() {
    let app = TestApp::spawn().await;
    let (result, out) = app
        .run(&[
            "dispatch",
            "sleep",
            "--timeout",
            "5",
            "--group",
            "g1",
            "--wait",
        ])
        .await;
    assert_eq!(result, Ok(0), "{out}");
    assert!(
        out.contains("ok-enqueued") && out.contains("completed"),
        "{out}"
    );
    assert!(out.contains(r#"{"slept":2}"#), "{out}");

    let sent = app.fake.enqueued.lock().unwrap()[0].clone();
    assert_eq!(sent.options.unwrap().timeout_seconds, Some(5.0));
    assert_eq!(sent.task_group_id.as_deref(), Some("g1"));
    assert!(app.fake.dispatched.lock().unwrap().is_empty());
}

#[tokio::test]
async fn errors_show_the_status_code_name() {
    let app = TestApp::spawn().await;
    let (result, _) = app.run(&["get", "missing"]).await;
    assert_eq!(result, Err("NOT_FOUND: task missing not found".to_owned()));
    let (result, _) = app.run(&["dispatch", "nope"]).await;
    assert_eq!(
        result,
        Err("INVALID_ARGUMENT: unknown func 'nope'".to_owned())
    );
    let (result, _) = app.run(&["cancel", "done"]).await;
    assert_eq!(
        result,
        Err("FAILED_PRECONDITION: task done is completed".to_owned())
    );
}

#[tokio::test]
async fn get_and_cancel_print_the_task() {
    let app = TestApp::spawn().await;
    let (result, out) = app.run(&["get", "t7"]).await;
    assert_eq!(result, Ok(0));
    assert!(
        out.contains("id:") && out.contains("t7") && out.contains("running"),
        "{out}"
    );
    let doc = app.json(&["cancel", "t7"]).await;
    assert_eq!(doc["state"], "canceled");
}

#[tokio::test]
async fn list_follows_pages_up_to_the_limit() {
    let app = TestApp::spawn().await;
    let doc = app.json(&["list"]).await;
    assert_eq!(doc.as_array().unwrap().len(), 50);
    assert_eq!(doc[49]["id"], "listed-049");

    let doc = app.json(&["list", "--limit", "95"]).await;
    assert_eq!(doc.as_array().unwrap().len(), 95);

    let doc = app.json(&["list", "--all"]).await;
    assert_eq!(doc.as_array().unwrap().len(), LISTED);
    assert_eq!(doc[LISTED - 1]["id"], "listed-129");

    let (result, out) = app
        .run(&[
            "list",
            "--state",
            "waiting,RUNNING",
            "--func",
            "sleep",
            "--worker",
            "w1",
            "--resource",
            "/r/",
            "--group",
            "g1",
            "--limit",
            "3",
        ])
        .await;
    assert_eq!(result, Ok(0));
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.starts_with("ID") && out.contains("listed-002"), "{out}");

    let requests = app.fake.listed.lock().unwrap();
    let last = requests.last().unwrap();
    assert_eq!(
        last.states,
        [pb::TaskState::Waiting as i32, pb::TaskState::Running as i32]
    );
    assert_eq!(
        (
            last.func.as_str(),
            last.worker.as_str(),
            last.resource.as_str()
        ),
        ("sleep", "w1", "/r/")
    );
    assert_eq!(last.task_group_id, "g1");
    assert_eq!(last.page_size, 3);
}

#[tokio::test]
async fn watch_exits_by_the_final_state() {
    let app = TestApp::spawn().await;
    let doc = {
        let (result, out) = app.run(&["watch", "ok-1", "--json"]).await;
        assert_eq!(result, Ok(0));
        serde_json::from_str::<Json>(&out).unwrap()
    };
    assert_eq!(doc["state"], "completed");
    assert_eq!(doc["result"], json!({"slept": 2}));

    let (result, out) = app.run(&["watch", "bad-1"]).await;
    assert_eq!(result, Ok(1));
    assert!(
        out.contains("failed") && out.contains("boom") && out.contains("task error"),
        "{out}"
    );

    // The stream ends early and the task is still running when fetched.
    let (result, _) = app.run(&["watch", "cut-1"]).await;
    let err = result.unwrap_err();
    assert!(err.contains("cut-1") && err.contains("running"), "{err}");
}

#[tokio::test]
async fn workers_and_groups() {
    let app = TestApp::spawn().await;
    let (result, out) = app.run(&["workers"]).await;
    assert_eq!(result, Ok(0));
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.contains("worker-a") && out.contains("online") && out.contains("noop,sleep"),
        "{out}"
    );
    let doc = app.json(&["workers"]).await;
    assert_eq!(doc[0]["state"], "online");

    let doc = app
        .json(&["group", "create", "--description", "nightly"])
        .await;
    assert_eq!(
        (doc["id"].as_str(), doc["description"].as_str()),
        (Some("g-new"), Some("nightly"))
    );
    let doc = app.json(&["group", "show", "g1"]).await;
    assert_eq!(
        (doc["total"].as_i64(), doc["completed"].as_i64()),
        (Some(3), Some(2))
    );
    let doc = app.json(&["group", "finish", "g1"]).await;
    assert_eq!(doc["all_tasks_dispatched"], true);
    let (result, out) = app.run(&["group", "cancel", "g1"]).await;
    assert_eq!(result, Ok(0));
    assert!(out.contains("finished:") && out.contains("yes"), "{out}");
}
