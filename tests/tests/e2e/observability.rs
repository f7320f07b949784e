//! Metrics and logs of real processes: a `pulp-scheduler` and a
//! `pulp-worker` started with `--metrics-listen` (and JSON logs) run a few
//! tasks; scraping both `/metrics` endpoints shows the counters moved, and
//! the logs show each state change once on the scheduler and the task id
//! and func on every worker line about a task.

use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::tasks_client::TasksClient;
use pulp_tests::{Process, connect_eventually, dispatch_request, free_port, wait_for_health};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_check_response::ServingStatus;

/// `GET /metrics` on `address`; the body.
async fn scrape(address: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect to the metrics endpoint");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_move_and_logs_name_each_task_and_transition() {
    pulp_tests::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let worker_metrics = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--metrics-listen",
        &metrics,
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let scheduler = Process::start("pulp-scheduler", &args, dir.path().join("scheduler.log"));
    let url = format!("http://127.0.0.1:{port}");
    let channel = connect_eventually(&url).await;
    wait_for_health(channel.clone(), ServingStatus::Serving).await;

    let before = scrape(&metrics).await;
    assert_eq!(
        sample(&before, "pulp_tasks_dispatched_total{func=\"noop\"}"),
        None,
        "{before}"
    );
    assert!(
        sample(&before, "pulp_db_pool_connections{state=\"idle\"}").is_some(),
        "{before}"
    );

    let worker = pulp_tests::start_worker_process_at(
        &url,
        dir.path(),
        "metrics-worker",
        2,
        &["--metrics-listen", &worker_metrics, "--log-format", "json"],
    )
    .await;

    let mut tasks = TasksClient::new(channel);
    let mut ids = Vec::new();
    for func in ["noop", "noop", "noop", "fail"] {
        let task = tasks
            .dispatch(dispatch_request(
                func,
                serde_json::json!({}),
                &["repo-a"],
                &[],
            ))
            .await
            .expect("dispatch")
            .into_inner();
        ids.push(task.id);
    }
    for id in &ids {
        let mut watch = tasks
            .watch_task(pb::WatchTaskRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        tokio::time::timeout(pulp_tests::WAIT, async {
            while let Some(t) = watch.message().await.unwrap() {
                if pulp_tests::is_final(&t) {
                    return;
                }
            }
        })
        .await
        .expect("task finished");
    }

    let after = scrape(&metrics).await;
    let expect = [
        ("pulp_tasks_dispatched_total{func=\"noop\"}", 3.0),
        ("pulp_tasks_dispatched_total{func=\"fail\"}", 1.0),
        ("pulp_task_assignments_total{func=\"noop\"}", 3.0),
        (
            "pulp_tasks_finished_total{func=\"noop\",state=\"completed\"}",
            3.0,
        ),
        (
            "pulp_tasks_finished_total{func=\"fail\",state=\"failed\"}",
            1.0,
        ),
        ("pulp_task_resource_wait_seconds_count{func=\"noop\"}", 3.0),
        ("pulp_task_slot_wait_seconds_count{func=\"noop\"}", 3.0),
        (
            "pulp_task_duration_seconds_count{func=\"noop\",state=\"completed\"}",
            3.0,
        ),
        ("pulp_tasks{state=\"waiting\"}", 0.0),
        ("pulp_tasks{state=\"running\"}", 0.0),
        ("pulp_workers_connected", 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&after, series), Some(value), "{series}:\n{after}");
    }
    assert!(
        after.contains("pulp_task_resource_wait_seconds_bucket{func=\"noop\",le=\"0.001\"}"),
        "{after}"
    );

    let worker_after = scrape(&worker_metrics).await;
    for (series, value) in [
        (
            "pulp_worker_tasks_finished_total{func=\"noop\",outcome=\"completed\"}",
            3.0,
        ),
        (
            "pulp_worker_tasks_finished_total{func=\"fail\",outcome=\"failed\"}",
            1.0,
        ),
        (
            "pulp_worker_task_start_delay_seconds_count{func=\"noop\"}",
            3.0,
        ),
        (
            "pulp_worker_task_duration_seconds_count{func=\"noop\",outcome=\"completed\"}",
            3.0,
        ),
        ("pulp_worker_tasks_running", 0.0),
        ("pulp_worker_serving", 1.0),
    ] {
        assert_eq!(
            sample(&worker_after, series),
            Some(value),
            "{series}:\n{worker_after}"
        );
    }

    // Logs: each transition once on the scheduler, at info.
    let log = scheduler.log_text();
    for id in &ids {
        let changes: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("task state changed") && l.contains(id.as_str()))
            .collect();
        let edges: Vec<String> = changes
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON log line");
                assert_eq!(v["level"], "INFO", "{l}");
                let f = &v["fields"];
                assert!(f["func"].is_string(), "{l}");
                format!(
                    "{}>{}",
                    f["from"].as_str().unwrap(),
                    f["to"].as_str().unwrap()
                )
            })
            .collect();
        let last = if edges.last().is_some_and(|e| e.ends_with("failed")) {
            "running>failed"
        } else {
            "running>completed"
        };
        assert_eq!(
            edges,
            ["new>waiting", "waiting>running", last],
            "{id}:\n{log}"
        );
    }
    // Worker: every line about a task names its id and func.
    let worker_log = worker.log_text();
    for id in &ids {
        let lines: Vec<&str> = worker_log
            .lines()
            .filter(|l| l.contains(id.as_str()))
            .collect();
        assert!(lines.len() >= 2, "{id}:\n{worker_log}");
        for line in lines {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
            let text = v.to_string();
            assert!(text.contains("\"func\""), "no func: {line}");
        }
    }
    // Lines inside a task's span (the task's own) carry both too.
    let in_task = worker_log
        .lines()
        .filter(|l| l.contains("\"name\":\"task\""));
    for line in in_task {
        assert!(line.contains("task_id") && line.contains("func"), "{line}");
    }
    drop(worker);
    drop(scheduler);
}
