//! `pulpctl` against the real scheduler and real workers: each scenario
//! parses an argv with clap, runs it through `pulpctl::run` with the output
//! captured, and checks both what was printed and what the scheduler now
//! holds (read back through the generated clients).

use clap::Parser;
use clap::error::ErrorKind;
use pulp_common::json::{list_to_json, struct_to_json};
use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{
    Backend, LONG_CANCEL_GRACE, TaskRegistry, TestApp, assert_canceled_cooperatively,
    both_databases, state,
};
use serde_json::{Value as Json, json};

both_databases!(
    dispatch_wait_prints_the_completed_task,
    dispatch_wait_of_a_failing_task_exits_1,
    dispatch_sends_args_kwargs_resources_and_timeout,
    get_and_list_show_the_tasks,
    list_stops_at_the_limit_and_all_shows_every_task,
    cancel_waiting_running_finished_and_unknown_tasks,
    workers_lists_the_connected_worker,
    group_commands_create_count_finish_and_cancel,
    bad_input_is_refused_before_any_request,
);

/// `pulpctl --scheduler <the test's scheduler> ...` (also used by the
/// content commands' tests).
pub(crate) struct Pulpctl {
    url: String,
}

impl Pulpctl {
    pub(crate) fn new(app: &TestApp) -> Self {
        Pulpctl { url: app.url() }
    }

    fn parse(&self, args: &[&str]) -> Result<pulpctl::Cli, clap::Error> {
        let argv = ["pulpctl", "--scheduler", &self.url]
            .into_iter()
            .chain(args.iter().copied());
        pulpctl::Cli::try_parse_from(argv)
    }

    /// Runs `args`: the exit code or the error with its causes, and stdout.
    pub(crate) async fn run(&self, args: &[&str]) -> (Result<i32, String>, String) {
        let cli = self
            .parse(args)
            .unwrap_or_else(|err| panic!("{args:?} does not parse: {err}"));
        let mut out = Vec::new();
        let result = pulpctl::run(cli, &mut out)
            .await
            .map_err(|err| format!("{err:#}"));
        (result, String::from_utf8(out).expect("UTF-8 output"))
    }

    /// Runs `args`, which must exit 0, and returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let (result, out) = self.run(args).await;
        assert_eq!(result, Ok(0), "{args:?} printed:\n{out}");
        out
    }

    /// Runs `args --json`, which must exit 0, and parses stdout.
    pub(crate) async fn json(&self, args: &[&str]) -> Json {
        let mut args = args.to_vec();
        args.push("--json");
        parse_json(&self.ok(&args).await)
    }
}

fn parse_json(out: &str) -> Json {
    serde_json::from_str(out).unwrap_or_else(|err| panic!("not one JSON document ({err}):\n{out}"))
}

/// The value of `key:` in a key/value view (`get`, `watch`, `group show`).
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}:");
    out.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no '{key}:' line in:\n{out}"))
}

/// The table row (whitespace-separated cells) whose first cell is `id`.
fn row<'a>(table: &'a str, id: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&id))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{table}"))
}

/// The ids of a JSON array of tasks, in order.
fn ids(doc: &Json) -> Vec<String> {
    doc.as_array()
        .unwrap_or_else(|| panic!("not an array: {doc}"))
        .iter()
        .map(|task| task["id"].as_str().expect("an id").to_owned())
        .collect()
}

fn id_of(doc: &Json) -> String {
    doc["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {doc}"))
        .to_owned()
}

async fn get(app: &TestApp, id: &str) -> pb::Task {
    app.tasks()
        .get_task(pb::GetTaskRequest { id: id.to_owned() })
        .await
        .unwrap_or_else(|status| panic!("get {id}: {status}"))
        .into_inner()
}

async fn task_count(app: &TestApp) -> usize {
    app.tasks()
        .list_tasks(pb::ListTasksRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list tasks")
        .into_inner()
        .tasks
        .len()
}

async fn dispatch_wait_prints_the_completed_task(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let _worker = app.start_worker("w", 2).await;
    let cli = Pulpctl::new(&app);

    let out = cli
        .ok(&[
            "dispatch",
            "sleep",
            "--kwargs",
            r#"{"seconds":0.2}"#,
            "--exclusive",
            "R",
            "--wait",
        ])
        .await;
    let id = field(&out, "id");
    assert_eq!(field(&out, "func"), "sleep", "{out}");
    assert_eq!(field(&out, "state"), "completed", "{out}");
    assert_eq!(field(&out, "worker"), "w", "{out}");
    let stored = get(&app, id).await;
    assert_eq!(state(&stored), pb::TaskState::Completed);
    assert_eq!(stored.exclusive_resources, ["R"]);

    let doc = cli
        .json(&[
            "dispatch",
            "sleep",
            "--kwargs",
            r#"{"seconds":0.2}"#,
            "--exclusive",
            "R",
            "--wait",
        ])
        .await;
    assert_eq!(doc["state"], "completed", "{doc}");
    assert_eq!(doc["func"], "sleep", "{doc}");
    assert_eq!(doc["exclusive_resources"], json!(["R"]), "{doc}");
    assert!(doc["finished_at"].is_string(), "{doc}");
    let id = id_of(&doc);
    assert_eq!(state(&get(&app, &id).await), pb::TaskState::Completed);

    // `watch` of a task that completed exits 0 with the same task.
    let doc = cli.json(&["watch", &id]).await;
    assert_eq!(
        (doc["id"].as_str(), doc["state"].as_str()),
        (Some(id.as_str()), Some("completed"))
    );
}

async fn dispatch_wait_of_a_failing_task_exits_1(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let _worker = app.start_worker("w", 1).await;
    let cli = Pulpctl::new(&app);

    let (result, out) = cli
        .run(&[
            "dispatch",
            "fail",
            "--kwargs",
            r#"{"message":"nope"}"#,
            "--wait",
        ])
        .await;
    assert_eq!(result, Ok(1), "{out}");
    assert_eq!(field(&out, "state"), "failed", "{out}");
    assert_eq!(field(&out, "error"), "nope", "{out}");
    let id = field(&out, "id").to_owned();
    let stored = get(&app, &id).await;
    assert_eq!(state(&stored), pb::TaskState::Failed);

    let (result, out) = cli.run(&["watch", &id, "--json"]).await;
    assert_eq!(result, Ok(1), "{out}");
    let doc = parse_json(&out);
    assert_eq!(doc["state"], "failed", "{doc}");
    assert_eq!(doc["error"]["description"], "nope", "{doc}");
}

async fn dispatch_sends_args_kwargs_resources_and_timeout(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let cli = Pulpctl::new(&app);

    // No worker yet: the task stays as it was stored.
    let doc = cli
        .json(&[
            "dispatch",
            "noop",
            "--args",
            r#"[1, "x"]"#,
            "--kwargs",
            r#"{"k": {"deep": [true]}}"#,
            "--exclusive",
            "E",
            "--shared",
            "S1",
            "--shared",
            "S2",
        ])
        .await;
    assert_eq!(doc["state"], "waiting", "{doc}");
    let stored = get(&app, &id_of(&doc)).await;
    assert_eq!(
        list_to_json(stored.args.as_ref().expect("args")),
        json!([1, "x"])
    );
    assert_eq!(
        Json::Object(struct_to_json(stored.kwargs.as_ref().expect("kwargs"))),
        json!({"k": {"deep": [true]}})
    );
    assert_eq!(stored.exclusive_resources, ["E"]);
    assert_eq!(stored.shared_resources, ["S1", "S2"]);
    assert_eq!(stored.timeout_seconds, 0.0);

    // A timeout goes through Enqueue, which carries it.
    let _worker = app.start_worker("w", 2).await;
    let doc = cli
        .json(&[
            "dispatch",
            "sleep",
            "--kwargs",
            r#"{"seconds":0.05}"#,
            "--timeout",
            "30",
            "--wait",
        ])
        .await;
    assert_eq!(doc["state"], "completed", "{doc}");
    assert_eq!(doc["timeout_seconds"], 30.0, "{doc}");
    assert_eq!(get(&app, &id_of(&doc)).await.timeout_seconds, 30.0);
}

async fn get_and_list_show_the_tasks(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let _worker = app.start_worker("w", 4).await;
    let cli = Pulpctl::new(&app);

    let noop_a = id_of(&cli.json(&["dispatch", "noop"]).await);
    let noop_b = id_of(&cli.json(&["dispatch", "noop"]).await);
    let sleep = id_of(
        &cli.json(&["dispatch", "sleep", "--kwargs", r#"{"seconds":0.01}"#])
            .await,
    );
    let fail = id_of(&cli.json(&["dispatch", "fail"]).await);
    for id in [&noop_a, &noop_b, &sleep] {
        assert_eq!(state(&app.wait_final(id).await), pb::TaskState::Completed);
    }
    assert_eq!(state(&app.wait_final(&fail).await), pb::TaskState::Failed);

    let doc = cli.json(&["get", &sleep]).await;
    assert_eq!(
        (doc["id"].as_str(), doc["func"].as_str()),
        (Some(sleep.as_str()), Some("sleep"))
    );
    assert_eq!(doc["state"], "completed", "{doc}");
    let out = cli.ok(&["get", &noop_a]).await;
    assert_eq!(
        (field(&out, "id"), field(&out, "func")),
        (noop_a.as_str(), "noop")
    );

    let doc = cli.json(&["list", "--state", "completed"]).await;
    assert_eq!(
        ids(&doc),
        [noop_a.as_str(), noop_b.as_str(), sleep.as_str()],
        "in dispatch order, without the failed one"
    );
    assert!(
        doc.as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "completed"),
        "{doc}"
    );
    let doc = cli.json(&["list", "--state", "FAILED"]).await;
    assert_eq!(ids(&doc), [fail.as_str()]);

    let table = cli.ok(&["list", "--func", "noop"]).await;
    assert!(table.starts_with("ID"), "{table}");
    assert_eq!(
        table.lines().count(),
        3,
        "a header and the two noops:\n{table}"
    );
    for id in [&noop_a, &noop_b] {
        let cells = row(&table, id);
        assert_eq!(&cells[1..4], ["noop", "completed", "w"], "{table}");
    }
}

async fn list_stops_at_the_limit_and_all_shows_every_task(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let cli = Pulpctl::new(&app);
    let mut dispatched = Vec::new();
    for _ in 0..pulpctl::cli::DEFAULT_LIST_LIMIT + 5 {
        dispatched.push(app.dispatch("noop", json!({}), &[], &[]).await.id);
    }
    let doc = cli.json(&["list"]).await;
    assert_eq!(
        ids(&doc),
        dispatched[..pulpctl::cli::DEFAULT_LIST_LIMIT as usize]
    );
    let doc = cli.json(&["list", "--limit", "7"]).await;
    assert_eq!(ids(&doc), dispatched[..7]);
    let doc = cli.json(&["list", "--all"]).await;
    assert_eq!(ids(&doc), dispatched);
}

async fn cancel_waiting_running_finished_and_unknown_tasks(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let _worker = app
        .start_worker_with("w", 2, TaskRegistry::builtin(), |config| {
            config.cancel_grace = LONG_CANCEL_GRACE;
        })
        .await;
    let cli = Pulpctl::new(&app);

    let holder = id_of(
        &cli.json(&[
            "dispatch",
            "sleep",
            "--kwargs",
            r#"{"seconds":60}"#,
            "--exclusive",
            "R",
        ])
        .await,
    );
    app.wait_body_started(&holder).await;
    // Blocked behind the held resource, so it is still waiting.
    let blocked = id_of(&cli.json(&["dispatch", "noop", "--exclusive", "R"]).await);
    assert_eq!(state(&get(&app, &blocked).await), pb::TaskState::Waiting);

    let table = cli.ok(&["cancel", &blocked]).await;
    assert_eq!(row(&table, &blocked)[1..], ["noop", "canceled"], "{table}");
    let canceled = app.wait_final(&blocked).await;
    assert_eq!(state(&canceled), pb::TaskState::Canceled);
    assert!(canceled.started_at.is_none(), "{canceled:?}");

    let asked = pulp_common::time::now_micros();
    let doc = cli.json(&["cancel", &holder]).await;
    assert!(
        matches!(doc["state"].as_str(), Some("canceling" | "canceled")),
        "{doc}"
    );
    // The worker stopped it, rather than aborting it after the grace.
    assert_canceled_cooperatively(&app.wait_final(&holder).await, asked);

    // A finished task cannot be cancelled; the error names the code.
    let (result, _) = cli.run(&["cancel", &holder]).await;
    let err = result.expect_err("cancel of a finished task");
    assert!(err.starts_with("FAILED_PRECONDITION"), "{err}");

    let unknown = uuid::Uuid::now_v7().to_string();
    let (result, out) = cli.run(&["cancel", &unknown]).await;
    let err = result.expect_err("cancel of an unknown task");
    assert!(err.contains("NOT_FOUND"), "{err}");
    assert!(out.is_empty(), "nothing on stdout: {out}");
}

async fn workers_lists_the_connected_worker(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let cli = Pulpctl::new(&app);
    let doc = cli.json(&["workers"]).await;
    assert_eq!(doc, json!([]), "no worker yet");

    let _worker = app.start_worker("cli-w", 3).await;
    let doc = cli.json(&["workers"]).await;
    let workers = doc.as_array().expect("an array");
    assert_eq!(workers.len(), 1, "{doc}");
    let worker = &workers[0];
    assert_eq!(
        (worker["name"].as_str(), worker["state"].as_str()),
        (Some("cli-w"), Some("online")),
        "{doc}"
    );
    assert_eq!(worker["slots"], 3, "{doc}");
    let funcs = worker["funcs"].as_array().expect("funcs");
    assert!(
        funcs.contains(&json!("sleep")) && funcs.contains(&json!("noop")),
        "{doc}"
    );

    let table = cli.ok(&["workers"]).await;
    assert!(table.starts_with("NAME"), "{table}");
    assert_eq!(row(&table, "cli-w")[1..3], ["online", "3"], "{table}");
}

async fn group_commands_create_count_finish_and_cancel(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let _worker = app.start_worker("w", 2).await;
    let cli = Pulpctl::new(&app);

    let doc = cli
        .json(&["group", "create", "--description", "nightly"])
        .await;
    let group = id_of(&doc);
    assert_eq!(
        (doc["description"].as_str(), doc["total"].as_i64()),
        (Some("nightly"), Some(0)),
        "{doc}"
    );
    let a = id_of(&cli.json(&["dispatch", "noop", "--group", &group]).await);
    let b = id_of(&cli.json(&["dispatch", "fail", "--group", &group]).await);
    assert_eq!(get(&app, &a).await.task_group_id, group);
    assert_eq!(state(&app.wait_final(&a).await), pb::TaskState::Completed);
    assert_eq!(state(&app.wait_final(&b).await), pb::TaskState::Failed);

    let doc = cli.json(&["group", "show", &group]).await;
    assert_eq!(
        [
            &doc["total"],
            &doc["completed"],
            &doc["failed"],
            &doc["waiting"]
        ],
        [2, 1, 1, 0],
        "{doc}"
    );
    assert_eq!(
        (
            doc["all_tasks_dispatched"].as_bool(),
            doc["finished"].as_bool()
        ),
        (Some(false), Some(false)),
        "{doc}"
    );
    let doc = cli.json(&["group", "finish", &group]).await;
    assert_eq!(
        (
            doc["all_tasks_dispatched"].as_bool(),
            doc["finished"].as_bool()
        ),
        (Some(true), Some(true)),
        "{doc}"
    );
    // A finished group takes no more tasks.
    let (result, _) = cli.run(&["dispatch", "noop", "--group", &group]).await;
    assert!(
        result
            .expect_err("dispatch into a finished group")
            .starts_with("FAILED_PRECONDITION")
    );

    // Cancelling a group cancels its running and its waiting task.
    let group = id_of(&cli.json(&["group", "create"]).await);
    let running = id_of(
        &cli.json(&[
            "dispatch",
            "sleep",
            "--kwargs",
            r#"{"seconds":60}"#,
            "--exclusive",
            "G",
            "--group",
            &group,
        ])
        .await,
    );
    app.wait_for(&running, |t| state(t) == pb::TaskState::Running)
        .await;
    let waiting = id_of(
        &cli.json(&["dispatch", "noop", "--exclusive", "G", "--group", &group])
            .await,
    );
    let out = cli.ok(&["group", "cancel", &group]).await;
    assert_eq!(field(&out, "id"), group, "{out}");
    assert_eq!(field(&out, "all tasks dispatched"), "yes", "{out}");
    for id in [&running, &waiting] {
        assert_eq!(state(&app.wait_final(id).await), pb::TaskState::Canceled);
    }
    let doc = cli.json(&["group", "show", &group]).await;
    assert_eq!([&doc["total"], &doc["canceled"]], [2, 2], "{doc}");
    assert_eq!(doc["finished"], true, "{doc}");
}

async fn bad_input_is_refused_before_any_request(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let cli = Pulpctl::new(&app);
    // The count does see what the CLI dispatches...
    cli.ok(&["dispatch", "noop"]).await;
    assert_eq!(task_count(&app).await, 1);

    // ...and bad values never get that far.
    for (args, flag) in [
        (&["dispatch", "noop", "--args", r#"{"a":1}"#][..], "--args"),
        (&["dispatch", "noop", "--kwargs", "[1]"], "--kwargs"),
        (&["dispatch", "noop", "--args", "[1"], "--args"),
        (&["dispatch", "noop", "--timeout", "-3"], "--timeout"),
        (&["list", "--state", "done"], "--state"),
    ] {
        let err = cli.parse(args).expect_err("refused while parsing");
        assert_eq!(err.kind(), ErrorKind::ValueValidation, "{args:?}: {err}");
        assert!(err.to_string().contains(flag), "{args:?}: {err}");
    }
    assert_eq!(task_count(&app).await, 1, "nothing was dispatched");
}
