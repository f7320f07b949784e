//! Benchmark (figures, not assertions): one `add_and_remove` adding 100,000
//! content units to an empty repository, then one removing 50,000 of them,
//! run by a `pulp-worker` process so that its peak memory (VmHWM) can be
//! read from /proc. Run it with
//!
//! ```sh
//! cargo build --release --bins &&
//!   cargo test --release -p pulp-tests --test e2e content::bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! (`pulp_tests::binary` builds the binaries without `--release` but runs
//! them from the test's own profile directory, so build the release ones
//! first.)
//!
//! The units are inserted straight into the database (creating them is
//! not what is measured); everything else goes through the public API.

use super::ContentApp;
use pulp_common::proto::content::v1 as pb;
use pulp_common::proto::content::v1::repositories_client::RepositoriesClient;
use pulp_common::proto::tasking::v1 as tasking;
use pulp_common::proto::tasking::v1::tasks_client::TasksClient;
use pulp_common::time::from_timestamp;
use pulp_tests::{Backend, WAIT, state};
use sea_orm::{ConnectionTrait, Value};
use std::time::Instant;

const UNITS: usize = 100_000;
const LARGE: usize = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn sqlite_add_100k_then_remove_50k() {
    bench(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn postgres_add_100k_then_remove_50k() {
    bench(Backend::Postgres).await;
}

/// The peak resident memory of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status")
}

async fn bench(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let db = app.database().await;
    let started = Instant::now();
    let ids: Vec<String> = (0..UNITS)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    for (n, chunk) in ids.chunks(1000).enumerate() {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, 'file.file', ${}, 0)", 2 * i + 1, 2 * i + 2))
            .collect();
        let values = chunk.iter().enumerate().flat_map(|(i, id)| {
            [
                Value::from(id.clone()),
                Value::from(format!("bench-{n}-{i}")),
            ]
        });
        db.execute_raw(pulp_common::db::stmt(
            db.get_database_backend(),
            &format!(
                "INSERT INTO contents (id, pulp_type, natural_key, created_at) VALUES {}",
                rows.join(", ")
            ),
            values,
        ))
        .await
        .unwrap();
    }
    eprintln!(
        "[{backend:?}] setup: {UNITS} units inserted in {:.2?}",
        started.elapsed()
    );

    let storage = app.storage().to_str().unwrap().to_owned();
    let worker = app
        .start_worker_process(
            "bench",
            1,
            &["--database-url", app.db.url(), "--storage-dir", &storage],
        )
        .await;
    let baseline = peak_kib(worker.pid());
    let repo = app.repo("bench").await;
    let mut repos = RepositoriesClient::new(app.channel.clone())
        .max_decoding_message_size(LARGE)
        .max_encoding_message_size(LARGE);
    let tasks = TasksClient::new(app.channel.clone()).max_decoding_message_size(LARGE);

    for (what, add, remove) in [
        ("add 100,000", &ids[..], &[][..]),
        ("remove 50,000", &[][..], &ids[..UNITS / 2]),
    ] {
        let sent = Instant::now();
        let task = repos
            .modify(pb::ModifyRequest {
                repository_id: repo.id.clone(),
                add_content_units: add.to_vec(),
                remove_content_units: remove.to_vec(),
                base_version_id: String::new(),
            })
            .await
            .expect("modify")
            .into_inner();
        let accepted = sent.elapsed();
        let done = wait_final(tasks.clone(), &task.id).await;
        let total = sent.elapsed();
        assert_eq!(
            state(&done),
            tasking::TaskState::Completed,
            "{:?}",
            done.error
        );
        let ran_ms = (from_timestamp(done.finished_at.as_ref().unwrap())
            - from_timestamp(done.started_at.as_ref().unwrap())) as f64
            / 1000.0;
        eprintln!(
            "[{backend:?}] {what}: Modify accepted in {accepted:.2?}, task ran {ran_ms:.0} ms, \
             Modify to COMPLETED {total:.2?}; worker peak RSS {} MiB (baseline {} MiB)",
            peak_kib(worker.pid()) / 1024,
            baseline / 1024
        );
    }
    let latest = repos
        .get_repository_version(pb::GetRepositoryVersionRequest {
            repository_id: repo.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    eprintln!(
        "[{backend:?}] latest version {}: {:?}",
        latest.number, latest.content_summary
    );
    assert_eq!(
        super::summary(&latest),
        (0, (UNITS / 2) as i64, (UNITS / 2) as i64)
    );
}

async fn wait_final(mut tasks: TasksClient<tonic::transport::Channel>, id: &str) -> tasking::Task {
    let mut stream = tasks
        .watch_task(tasking::WatchTaskRequest { id: id.into() })
        .await
        .expect("watch")
        .into_inner();
    tokio::time::timeout(WAIT * 5, async {
        while let Some(task) = stream.message().await.expect("watch stream") {
            if pulp_tests::is_final(&task) {
                return task;
            }
        }
        panic!("watch of {id} ended early");
    })
    .await
    .expect("the task ends")
}
