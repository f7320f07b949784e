//! The scenarios. Each one runs on a fresh database with a fresh scheduler
//! and returns its figures; throughput scenarios are repeated and the
//! median is reported.

use crate::env::{Databases, System, own_cpu_seconds};
use crate::stats::{median, percentile};
use crate::verify::{self, Verdict};
use pulp_common::json::json_to_struct;
use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::tasks_client::TasksClient;
use rand::{Rng, SeedableRng};
use sea_orm::ConnectionTrait;
use serde_json::json;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// Sizes of the scenarios.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Concurrent clients.
    pub clients: usize,
    /// Dispatches in `dispatch` and tasks in `e2e`.
    pub tasks: usize,
    /// Tasks in `contention`.
    pub contention_tasks: usize,
    /// Resources in `contention`.
    pub contention_resources: usize,
    /// Waiting tasks in `backlog`.
    pub backlog: usize,
    /// Tasks timed one at a time in `latency`.
    pub latency_samples: usize,
    /// Workers and slots each.
    pub workers: usize,
    /// Slots per worker.
    pub slots: u32,
}

fn request(
    func: &str,
    kwargs: serde_json::Value,
    exclusive: Vec<String>,
    shared: Vec<String>,
    group: Option<&str>,
) -> pb::DispatchRequest {
    let kwargs = match kwargs {
        serde_json::Value::Object(map) => Some(json_to_struct(&map)),
        _ => None,
    };
    pb::DispatchRequest {
        func: func.into(),
        kwargs,
        exclusive_resources: exclusive,
        shared_resources: shared,
        task_group_id: group.map(str::to_owned),
        ..Default::default()
    }
}

/// Dispatches `requests` from `clients` concurrent clients; returns the
/// elapsed time and the task ids.
async fn dispatch_all(
    system: &System,
    clients: usize,
    requests: Vec<pb::DispatchRequest>,
) -> anyhow::Result<(Duration, Vec<String>)> {
    let mut per_client: Vec<Vec<pb::DispatchRequest>> = (0..clients).map(|_| Vec::new()).collect();
    for (i, r) in requests.into_iter().enumerate() {
        per_client[i % clients].push(r);
    }
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(system.tasks().await?);
    }
    let started = Instant::now();
    let handles: Vec<_> = per_client
        .into_iter()
        .zip(connections)
        .map(|(batch, mut client)| {
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(batch.len());
                for r in batch {
                    ids.push(client.dispatch(r).await?.into_inner().id);
                }
                anyhow::Ok(ids)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for h in handles {
        ids.extend(h.await??);
    }
    Ok((started.elapsed(), ids))
}

/// Waits until every task of `group` is final (20 Hz group reads: the
/// benchmark's own monitoring, not part of the system).
async fn wait_group(system: &System, group: &str, total: usize) -> anyhow::Result<()> {
    let groups = system.groups();
    poll_until(|| {
        let mut groups = groups.clone();
        async move {
            let g = groups
                .get_task_group(pb::GetTaskGroupRequest { id: group.into() })
                .await?
                .into_inner();
            Ok((g.completed + g.failed + g.canceled + g.skipped) as usize >= total)
        }
    })
    .await
}

/// Waits until at most `left` tasks of `func` are unfinished.
async fn wait_unfinished(
    tasks: &TasksClient<Channel>,
    func: &str,
    left: usize,
) -> anyhow::Result<()> {
    poll_until(|| {
        let mut tasks = tasks.clone();
        async move {
            let unfinished = tasks
                .list_tasks(pb::ListTasksRequest {
                    states: vec![pb::TaskState::Waiting as i32, pb::TaskState::Running as i32],
                    func: func.into(),
                    page_size: left as i32 + 1,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .tasks
                .len();
            Ok(unfinished <= left)
        }
    })
    .await
}

/// Asks `done` every 50 ms until it says yes (an hour at most). The bench
/// waits for thousands of tasks at once: one cheap query per tick, not a
/// watch per task.
async fn poll_until<F, Fut>(mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(3600);
    while !done().await? {
        anyhow::ensure!(Instant::now() < deadline, "tasks never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn new_group(system: &System) -> anyhow::Result<String> {
    Ok(system
        .groups()
        .create_task_group(pb::CreateTaskGroupRequest {
            description: "bench".into(),
        })
        .await?
        .into_inner()
        .id)
}

/// Every task of a group, in dispatch order.
async fn group_tasks(system: &System, group: &str) -> anyhow::Result<Vec<pb::Task>> {
    let mut tasks = system.tasks().await?;
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = tasks
            .list_tasks(pb::ListTasksRequest {
                task_group_id: group.into(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await?
            .into_inner();
        all.extend(page.tasks);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

fn unique_noops(n: usize, group: Option<&str>) -> Vec<pb::DispatchRequest> {
    (0..n)
        .map(|_| {
            request(
                "noop",
                json!({}),
                vec![format!("bench/{}", uuid::Uuid::new_v4())],
                vec![],
                group,
            )
        })
        .collect()
}

/// `baseline`: one plain row inserted per transaction by the same number of
/// concurrent connections, on the same kind of database, as fast as
/// possible. Rows per second.
pub async fn baseline(dbs: &Databases, sizes: Sizes) -> anyhow::Result<f64> {
    let url = dbs.fresh().await?;
    let db = pulp_common::db::connect(
        &url,
        &pulp_common::db::PoolSettings {
            max_connections: sizes.clients as u32,
            ..Default::default()
        },
    )
    .await?;
    db.execute_unprepared(
        "CREATE TABLE bench_rows (id VARCHAR(36) PRIMARY KEY, payload TEXT NOT NULL)",
    )
    .await?;
    let per_client = sizes.tasks / sizes.clients;
    let started = Instant::now();
    let handles: Vec<_> = (0..sizes.clients)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move {
                for _ in 0..per_client {
                    let stmt = pulp_common::db::stmt(
                        db.get_database_backend(),
                        "INSERT INTO bench_rows (id, payload) VALUES ($1, $2)",
                        [
                            sea_orm::Value::from(uuid::Uuid::now_v7().to_string()),
                            sea_orm::Value::from("{}".to_owned()),
                        ],
                    );
                    db.execute_raw(stmt).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for h in handles {
        h.await??;
    }
    let rate = (per_client * sizes.clients) as f64 / started.elapsed().as_secs_f64();
    db.close().await.ok();
    dbs.drop_database(&url).await;
    Ok(rate)
}

/// `dispatch`: concurrent clients dispatch noops on unique resources, no
/// workers. Dispatches per second, and the scheduler's peak RSS.
pub async fn dispatch(dbs: &Databases, sizes: Sizes) -> anyhow::Result<(f64, u64)> {
    let url = dbs.fresh().await?;
    let system = System::start(url.clone()).await?;
    let (elapsed, ids) =
        dispatch_all(&system, sizes.clients, unique_noops(sizes.tasks, None)).await?;
    let rss = system.scheduler_peak_rss();
    system.stop().await;
    dbs.drop_database(&url).await;
    Ok((ids.len() as f64 / elapsed.as_secs_f64(), rss))
}

/// `e2e`: workers run noops on unique resources dispatched as fast as
/// possible. Completed tasks per second (first dispatch to last finish).
pub async fn e2e(dbs: &Databases, sizes: Sizes) -> anyhow::Result<(E2e, u64)> {
    let url = dbs.fresh().await?;
    let mut system = System::start(url.clone()).await?;
    system.start_workers(sizes.workers, sizes.slots).await?;
    let (scheduler_before, own_before) = (system.scheduler_cpu_seconds(), own_cpu_seconds());
    let rate = e2e_on(&system, sizes).await?;
    let per_task = |seconds: f64| seconds * 1e6 / sizes.tasks as f64;
    let figures = E2e {
        tasks_per_s: rate,
        scheduler_cpu_us_per_task: per_task(system.scheduler_cpu_seconds() - scheduler_before),
        bench_cpu_us_per_task: per_task(own_cpu_seconds() - own_before),
    };
    let rss = system.scheduler_peak_rss();
    system.stop().await;
    dbs.drop_database(&url).await;
    Ok((figures, rss))
}

/// `e2e` figures.
#[derive(Debug, Clone, Copy)]
pub struct E2e {
    /// Completed tasks per second.
    pub tasks_per_s: f64,
    /// CPU time of the scheduler process per task, in microseconds.
    pub scheduler_cpu_us_per_task: f64,
    /// CPU time of the bench process (clients and workers) per task.
    pub bench_cpu_us_per_task: f64,
}

async fn e2e_on(system: &System, sizes: Sizes) -> anyhow::Result<f64> {
    let group = new_group(system).await?;
    let started = Instant::now();
    let (_, ids) = dispatch_all(
        system,
        sizes.clients,
        unique_noops(sizes.tasks, Some(&group)),
    )
    .await?;
    wait_group(system, &group, ids.len()).await?;
    Ok(ids.len() as f64 / started.elapsed().as_secs_f64())
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

/// `latency`: with idle workers, tasks dispatched one at a time; the time
/// from the client sending Dispatch to the task body starting.
pub async fn latency(dbs: &Databases, sizes: Sizes) -> anyhow::Result<(Latency, u64)> {
    let url = dbs.fresh().await?;
    let mut system = System::start(url.clone()).await?;
    system.start_workers(sizes.workers, sizes.slots).await?;
    let mut tasks = system.tasks().await?;
    let mut samples = Vec::with_capacity(sizes.latency_samples);
    for _ in 0..sizes.latency_samples {
        let sent = pulp_common::time::now_micros();
        let task = tasks
            .dispatch(request(
                "sleep",
                json!({"seconds": 0}),
                vec![],
                vec![],
                None,
            ))
            .await?
            .into_inner();
        let mut watch = tasks
            .watch_task(pb::WatchTaskRequest { id: task.id })
            .await?
            .into_inner();
        let mut last = None;
        while let Some(t) = watch.message().await? {
            last = Some(t);
        }
        let last = last.ok_or_else(|| anyhow::anyhow!("no snapshot"))?;
        let result = pulp_common::json::value_to_json(
            last.result
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("no result"))?,
        );
        let started = result["started_at_us"].as_i64().unwrap_or(sent);
        samples.push((started - sent) as f64 / 1000.0);
    }
    let rss = system.scheduler_peak_rss();
    system.stop().await;
    dbs.drop_database(&url).await;
    Ok((
        Latency {
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            max: percentile(&samples, 100.0),
        },
        rss,
    ))
}

/// `contention`: tasks over few resources, 80 % exclusive / 20 % shared;
/// tasks per second and the verdict of the reservation check.
pub async fn contention(
    dbs: &Databases,
    sizes: Sizes,
    seed: u64,
) -> anyhow::Result<(f64, Verdict, u64)> {
    let url = dbs.fresh().await?;
    let mut system = System::start(url.clone()).await?;
    system.start_workers(sizes.workers, sizes.slots).await?;
    let group = new_group(&system).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let requests: Vec<pb::DispatchRequest> = (0..sizes.contention_tasks)
        .map(|_| {
            let resource = format!("bench/r{}", rng.random_range(0..sizes.contention_resources));
            let (ex, sh) = if rng.random_bool(0.8) {
                (vec![resource], vec![])
            } else {
                (vec![], vec![resource])
            };
            request("sleep", json!({"seconds": 0}), ex, sh, Some(&group))
        })
        .collect();
    let started = Instant::now();
    let (_, ids) = dispatch_all(&system, sizes.clients, requests).await?;
    wait_group(&system, &group, ids.len()).await?;
    let rate = ids.len() as f64 / started.elapsed().as_secs_f64();
    let verdict = verify::check(&group_tasks(&system, &group).await?);
    let rss = system.scheduler_peak_rss();
    system.stop().await;
    dbs.drop_database(&url).await;
    Ok((rate, verdict, rss))
}

/// Backlog figures: the same scenarios with and without waiting tasks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    /// Dispatches per second with the backlog.
    pub dispatch: f64,
    /// Completed tasks per second with the backlog.
    pub e2e: f64,
}

/// `backlog`: a held resource with `sizes.backlog` tasks waiting behind it,
/// then `dispatch` and `e2e` on unrelated resources, each as its scenario
/// runs without the backlog: the dispatches while no worker slot is free
/// (one worker of one slot runs the holder), the e2e tasks with the usual
/// workers started.
pub async fn backlog(dbs: &Databases, sizes: Sizes) -> anyhow::Result<(Backlog, u64)> {
    let url = dbs.fresh().await?;
    let mut system = System::start(url.clone()).await?;
    system.start_workers(1, 1).await?;
    let mut tasks = system.tasks().await?;
    let holder = tasks
        .dispatch(request(
            "sleep",
            json!({"seconds": 86400}),
            vec!["bench/held".into()],
            vec![],
            None,
        ))
        .await?
        .into_inner();
    let waiting: Vec<pb::DispatchRequest> = (0..sizes.backlog)
        .map(|_| request("noop", json!({}), vec!["bench/held".into()], vec![], None))
        .collect();
    dispatch_all(&system, sizes.clients, waiting).await?;
    // Like `dispatch`: unique resources, no group, no free slot. They are
    // `sleep` 0 tasks, told apart from the backlog's noops by func.
    let unrelated: Vec<pb::DispatchRequest> = (0..sizes.tasks)
        .map(|_| {
            request(
                "sleep",
                json!({"seconds": 0}),
                vec![format!("bench/{}", uuid::Uuid::new_v4())],
                vec![],
                None,
            )
        })
        .collect();
    let (elapsed, ids) = dispatch_all(&system, sizes.clients, unrelated).await?;
    let dispatch_rate = ids.len() as f64 / elapsed.as_secs_f64();
    // Workers run those before e2e is timed; the holder keeps running.
    system.start_workers(sizes.workers, sizes.slots).await?;
    wait_unfinished(&tasks, "sleep", 1).await?;
    let e2e_rate = {
        let group = new_group(&system).await?;
        let started = Instant::now();
        let (_, ids) = dispatch_all(
            &system,
            sizes.clients,
            unique_noops(sizes.tasks, Some(&group)),
        )
        .await?;
        wait_group(&system, &group, ids.len()).await?;
        ids.len() as f64 / started.elapsed().as_secs_f64()
    };
    let _ = tasks
        .cancel_task(pb::CancelTaskRequest { id: holder.id })
        .await;
    let rss = system.scheduler_peak_rss();
    system.stop().await;
    dbs.drop_database(&url).await;
    Ok((
        Backlog {
            dispatch: dispatch_rate,
            e2e: e2e_rate,
        },
        rss,
    ))
}

/// Runs `f` `runs` times and returns the median of its figure.
pub async fn median_of<F, Fut>(runs: usize, mut f: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let mut values = Vec::with_capacity(runs);
    for _ in 0..runs {
        values.push(f().await?);
    }
    Ok(median(&values))
}
