//! Two scheduler replicas on one PostgreSQL database, as processes, with
//! workers and clients spread over both: the randomized reservation check
//! holds, and still holds when the leader is killed (kill -9) mid-run.

use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::tasks_client::TasksClient;
use pulp_tests::{
    Backend, Process, TestDb, WAIT, connect_eventually, free_port, state, wait_for_health,
};
use rand::SeedableRng;
use std::collections::HashSet;
use std::time::Duration;
use tonic_health::pb::health_check_response::ServingStatus;

struct Replica {
    url: String,
    address: String,
    process: Option<Process>,
}

fn start_replica(db: &TestDb, dir: &std::path::Path, name: &str) -> Replica {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let args: Vec<String> = [
        "--listen",
        &address,
        "--advertise-address",
        &address,
        "--database-url",
        db.url(),
        "--worker-ttl",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let process = Process::start("pulp-scheduler", &args, dir.join(format!("{name}.log")));
    Replica {
        url: format!("http://{address}"),
        address,
        process: Some(process),
    }
}

async fn leader_address(db: &TestDb) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(db.url())
        .await
        .expect("connect");
    let row: (String,) = sqlx::query_as("SELECT address FROM scheduler_leader WHERE id = 1")
        .fetch_one(&mut conn)
        .await
        .expect("a leader row");
    row.0
}

/// Dispatches `count` random tasks through whichever replica answers,
/// switching replica on UNAVAILABLE; returns the acknowledged ids.
async fn client(
    urls: Vec<String>,
    seed: u64,
    count: usize,
    progress: tokio::sync::mpsc::UnboundedSender<String>,
) -> Vec<String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut acked = Vec::new();
    let mut current = 0;
    let mut clients = Vec::new();
    for url in &urls {
        clients.push(TasksClient::new(connect_eventually(url).await));
    }
    for _ in 0..count {
        let request = pulp_tests::random_sleep_request(&mut rng, 5, 40);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match clients[current].dispatch(request.clone()).await {
                Ok(task) => {
                    let id = task.into_inner().id;
                    let _ = progress.send(id.clone());
                    acked.push(id);
                    break;
                }
                Err(status) => {
                    assert!(
                        matches!(
                            status.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Unknown
                                | tonic::Code::Cancelled
                        ),
                        "unexpected error: {status}"
                    );
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "no replica took the dispatch: {status}"
                    );
                    current = (current + 1) % clients.len();
                    // Back off briefly before the other replica: a takeover
                    // takes about a second and there is no event to await
                    // from outside the cluster.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    acked
}

async fn two_replicas(kill_leader: bool) {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut a = start_replica(&db, dir.path(), "a");
    let mut b = start_replica(&db, dir.path(), "b");
    for replica in [&a, &b] {
        wait_for_health(
            connect_eventually(&replica.url).await,
            ServingStatus::Serving,
        )
        .await;
    }
    // Workers spread over both replicas (each lists both, in another order).
    let mut workers = Vec::new();
    for i in 0..4 {
        let urls = if i % 2 == 0 {
            format!("{},{}", a.url, b.url)
        } else {
            format!("{},{}", b.url, a.url)
        };
        let name = format!("w{i}");
        let health = free_port();
        let args: Vec<String> = [
            "--scheduler",
            &urls,
            "--name",
            &name,
            "--slots",
            "3",
            "--working-dir",
            dir.path().join(&name).to_str().unwrap(),
            "--health-listen",
            &format!("127.0.0.1:{health}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        workers.push(Process::start(
            "pulp-worker",
            &args,
            dir.path().join(format!("{name}.log")),
        ));
        wait_for_health(
            connect_eventually(&format!("http://127.0.0.1:{health}")).await,
            ServingStatus::Serving,
        )
        .await;
    }

    let urls = vec![a.url.clone(), b.url.clone()];
    let mut clients = Vec::new();
    let (progress, mut acked_so_far) = tokio::sync::mpsc::unbounded_channel();
    for c in 0..4u64 {
        let mut order = urls.clone();
        order.rotate_left(c as usize % 2);
        clients.push(tokio::spawn(client(order, 0xab + c, 50, progress.clone())));
    }
    drop(progress);
    if kill_leader {
        // Let the run get going: 60 acknowledged tasks, the last of them
        // completed; then kill the leader.
        let leader = leader_address(&db).await;
        let mut tasks = TasksClient::new(connect_eventually(&a.url).await);
        let mut sixtieth = String::new();
        for _ in 0..60 {
            sixtieth = acked_so_far
                .recv()
                .await
                .expect("clients still dispatching");
        }
        let mut watch = tasks
            .watch_task(pb::WatchTaskRequest { id: sixtieth })
            .await
            .unwrap()
            .into_inner();
        tokio::time::timeout(WAIT, async {
            while let Ok(Some(_)) = watch.message().await {}
        })
        .await
        .expect("the 60th task completes");
        let mut listener = sqlx::postgres::PgListener::connect(db.url())
            .await
            .expect("listen");
        listener
            .listen("pulp_scheduler_leader")
            .await
            .expect("listen");
        let victim = if a.address == leader { &mut a } else { &mut b };
        eprintln!("killing the leader {leader}");
        let killed_at = std::time::Instant::now();
        victim.process.take().expect("running").kill9();
        let survivor = if a.process.is_some() { &a } else { &b };
        // The new leader announces itself with NOTIFY.
        tokio::time::timeout(WAIT, listener.recv())
            .await
            .expect("a takeover in time")
            .expect("notification");
        assert_eq!(leader_address(&db).await, survivor.address);
        eprintln!("takeover after {:?}", killed_at.elapsed());
    }
    let mut acked = Vec::new();
    for c in clients {
        acked.extend(c.await.unwrap());
    }
    let survivor = if a.process.is_some() { &a } else { &b };
    let mut tasks = TasksClient::new(connect_eventually(&survivor.url).await);
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "an id was acknowledged twice");
    // Every acknowledged task exists and completes.
    for id in &acked {
        let mut watch = tasks
            .watch_task(pb::WatchTaskRequest { id: id.clone() })
            .await
            .expect("acknowledged task exists")
            .into_inner();
        let last = tokio::time::timeout(WAIT, async {
            let mut last = None;
            while let Ok(Some(t)) = watch.message().await {
                last = Some(t);
            }
            last
        })
        .await
        .expect("task reaches a final state")
        .expect("a snapshot");
        assert!(pulp_tests::is_final(&last), "{last:?}");
    }
    // All tasks, in dispatch order.
    let all = pulp_tests::all_tasks(&mut tasks).await;
    for t in &all {
        assert_eq!(state(t), pb::TaskState::Completed, "{t:?}");
    }
    pulp_tests::assert_conflicts_serialized(&all);
    // No double assignment: every task body started exactly once across all
    // worker processes.
    let logs: String = workers.iter().map(Process::log_text).collect();
    for t in &all {
        let starts = logs
            .lines()
            .filter(|l| l.contains("task started") && l.contains(&t.id))
            .count();
        assert_eq!(starts, 1, "task {} started {starts} times", t.id);
    }
    // Workers spread over both replicas; all of them still online.
    let listed = pulp_common::proto::tasking::v1::workers_client::WorkersClient::new(
        connect_eventually(&survivor.url).await,
    )
    .list_workers(pb::ListWorkersRequest {})
    .await
    .unwrap()
    .into_inner()
    .workers;
    assert_eq!(listed.len(), 4);
    eprintln!("{} tasks over two replicas checked", all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_keep_reservations() {
    two_replicas(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_survive_the_leader_killed() {
    two_replicas(true).await;
}
