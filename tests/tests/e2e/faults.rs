//! Fault injection with real processes and real signals (issue 3, "Nothing
//! lost, nothing overlapping"): a worker killed (`kill -9`) or frozen
//! (`SIGSTOP`) in the middle of a task, the scheduler killed under load,
//! PostgreSQL stopped under load, timeouts, forced cancellation, drains on
//! `SIGTERM`, and the one-scheduler-per-SQLite-file lock.
//!
//! Every wait is on the event itself (WatchTask, a health Watch, a process
//! exit, a counter the dispatching clients bump) with a timeout. Measured
//! timings are printed with `eprintln!`; see them with `--nocapture`.
//!
//! Two orderings the assertions rely on:
//! - The engine applies commands one round at a time and answers a caller
//!   only after its round committed. So once a command sent *after* some
//!   event was answered (a cancellation, here), everything the engine did
//!   for that event is committed and visible to reads like ListWorkers.
//! - A worker becomes SERVING only after the scheduler's Welcome, which is
//!   sent after the round that registered it (and assigned it work)
//!   committed.

use pulp_common::proto::content::v1 as content;
use pulp_common::proto::content::v1::repositories_client::RepositoriesClient;
use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::tasks_client::TasksClient;
use pulp_common::proto::tasking::v1::workers_client::WorkersClient;
use pulp_tests::{
    Backend, HealthWatch, PostgresCluster, Process, ProcessEnv, TaskRegistry, TestApp, WAIT,
    body_interval, both_databases, connect_eventually, dispatch_request, free_port, is_final,
    start_scheduler_process, state, wait_for_health,
};
use rand::SeedableRng;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;

both_databases!(
    killed_worker_fails_its_task_and_frees_the_resource,
    stopped_worker_is_fenced_after_its_lease_lapses,
    scheduler_killed_under_load_loses_nothing,
    timeout_fails_the_task_with_timed_out,
    hard_cancel_aborts_a_task_that_ignores_cancellation,
    drain_lets_running_tasks_finish_within_the_grace,
    drain_aborts_tasks_past_the_grace,
    scheduler_sigterm_closes_worker_streams_and_loses_nothing,
);

/// The worker TTL of the scheduler in most scenarios, in seconds: short, so
/// that a lost worker is detected quickly.
const TTL: f64 = 2.0;
/// How much later than the TTL a lost worker's task may be failed.
const DETECTION_MARGIN: Duration = Duration::from_secs(3);

/// A scheduler (in-process) with the short [`TTL`].
async fn short_ttl_app(backend: Backend) -> Option<TestApp> {
    TestApp::spawn_with(backend, |config| config.worker_ttl = TTL).await
}

/// Microseconds since the epoch of a set timestamp.
fn micros(ts: &Option<prost_types::Timestamp>) -> i64 {
    let ts = ts.as_ref().expect("timestamp is set");
    ts.seconds * 1_000_000 + i64::from(ts.nanos) / 1_000
}

/// The wall clock in microseconds, comparable with task timestamps.
fn now_micros() -> i64 {
    pulp_common::time::now_micros()
}

/// Waits until the task runs and its body reported progress: the body (and
/// so its working directory) exists. `sleep` reports progress first thing.
async fn get_task(tasks: &mut TasksClient<Channel>, id: &str) -> pb::Task {
    tasks
        .get_task(pb::GetTaskRequest { id: id.to_owned() })
        .await
        .unwrap_or_else(|s| panic!("get task {id}: {s}"))
        .into_inner()
}

async fn list_workers(app: &TestApp) -> HashMap<String, pb::Worker> {
    app.list_workers()
        .await
        .into_iter()
        .map(|w| (w.name.clone(), w))
        .collect()
}

fn worker_state(worker: &pb::Worker) -> pb::WorkerState {
    pb::WorkerState::try_from(worker.state).unwrap_or(pb::WorkerState::Unspecified)
}

fn reason(task: &pb::Task) -> &str {
    task.error.as_ref().map_or("", |e| e.reason.as_str())
}

/// A worker process is killed with -9 while it runs a task holding
/// exclusive[R]; another task on R waits. The killed worker's task ends
/// FAILED ("worker lost") within the TTL plus a margin, and only then does
/// the waiting task run (on the surviving worker) and complete.
async fn killed_worker_fails_its_task_and_frees_the_resource(backend: Backend) {
    let Some(app) = short_ttl_app(backend).await else {
        return;
    };
    let victim = app.start_worker_process("victim", 1, &[]).await;
    let first = app
        .dispatch("sleep", json!({"seconds": 60}), &["R"], &[])
        .await;
    let running = app.wait_body_started(&first.id).await;
    assert_eq!(running.worker, "victim");
    let second = app
        .dispatch("sleep", json!({"seconds": 0.2}), &["R"], &[])
        .await;
    assert_eq!(state(&second), pb::TaskState::Waiting);
    let _survivor = app.start_worker("survivor", 2).await;
    // The survivor is registered (and any assignment for it committed), yet
    // R is still held.
    let still = get_task(&mut app.tasks(), &second.id).await;
    assert_eq!(state(&still), pb::TaskState::Waiting, "{still:?}");

    let killed_at = Instant::now();
    victim.kill9();
    let failed = app.wait_final(&first.id).await;
    let detection = killed_at.elapsed();
    eprintln!(
        "[{backend:?}] killed worker: its task FAILED {:.3} s after kill -9 (TTL {TTL} s)",
        detection.as_secs_f64()
    );
    assert_eq!(state(&failed), pb::TaskState::Failed, "{failed:?}");
    let why = reason(&failed);
    assert!(
        why.contains("worker") && why.contains("lost"),
        "reason {why:?}"
    );
    assert!(
        detection <= Duration::from_secs_f64(TTL) + DETECTION_MARGIN,
        "detected after {detection:?}, TTL {TTL} s"
    );

    let second = app.wait_final(&second.id).await;
    assert_eq!(state(&second), pb::TaskState::Completed, "{second:?}");
    assert_eq!(second.worker, "survivor");
    assert!(
        micros(&second.started_at) >= micros(&failed.finished_at),
        "the second task started before the first one ended: {second:?} {failed:?}"
    );
    assert!(body_interval(&second).0 >= micros(&failed.finished_at));
}

/// Asserts that a resumed worker's log shows its lease loss and the refusal
/// of its stale task (its late result or the task itself).
fn assert_stale_task_refused(backend: Backend, log: &str) {
    let refusals = [
        "dropped a result the scheduler no longer expects",
        "the scheduler refused the result",
        "the scheduler no longer assigns this task here",
        "dropped the outcome of a task no longer assigned here",
    ];
    let seen: Vec<&str> = refusals
        .into_iter()
        .filter(|line| log.contains(line))
        .collect();
    eprintln!("[{backend:?}] frozen worker: its late result was refused: {seen:?}");
    assert!(
        !seen.is_empty(),
        "the resumed worker's log shows no refusal of its stale task:\n{log}"
    );
    assert!(
        log.contains("lease with the scheduler was not renewed in time")
            || log.contains("lease expired"),
        "the resumed worker's log shows no lease loss:\n{log}"
    );
}

/// The names of every repository, through the content API.
async fn repository_names(app: &TestApp) -> Vec<String> {
    RepositoriesClient::new(app.channel.clone())
        .list_repositories(content::ListRepositoriesRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("list repositories")
        .into_inner()
        .repositories
        .into_iter()
        .map(|r| r.name)
        .collect()
}

/// A worker process holding exclusive[R] is frozen with SIGSTOP while its
/// task has a database write still to come: `sleep_then_write` (a
/// diagnostic task) sleeps 3 s, then creates repository "late" in a
/// transaction committed through its fence. The worker's lease lapses, its
/// task ends FAILED ("worker lost"), the worker is LOST, and only then does
/// a second `sleep_then_write` on R run on another worker and create
/// repository "after". Then the frozen worker resumes (SIGCONT): it notices
/// the lost lease (NOT_SERVING), registers again by itself (SERVING, ONLINE)
/// and goes on into its write, which it does not drop on cancellation
/// (`ignore_cancel`, and a 60 s cancel grace so that it is not aborted
/// first). The fence refuses the write (the worker logs so) and "late" does
/// not exist; the late result is refused; the first task is unchanged
/// (FAILED, worker lost, no result); the two tasks' RUNNING intervals do
/// not overlap.
async fn stopped_worker_is_fenced_after_its_lease_lapses(backend: Backend) {
    let Some(app) = short_ttl_app(backend).await else {
        return;
    };
    let database_url = app.db.url().to_owned();
    let storage = app.work_root.path().join("storage");
    let storage_arg = storage.to_str().expect("utf-8 path").to_owned();
    let mut frozen = app
        .start_worker_process(
            "frozen",
            1,
            &[
                "--database-url",
                &database_url,
                "--storage-dir",
                &storage_arg,
                "--cancel-grace",
                "60",
            ],
        )
        .await;
    let first = app
        .dispatch(
            "sleep_then_write",
            json!({"seconds": 3, "ignore_cancel": true, "repository_name": "late"}),
            &["R"],
            &[],
        )
        .await;
    let running = app.wait_body_started(&first.id).await;
    assert_eq!(running.worker, "frozen");
    let health_url = frozen.health_url.clone().expect("health URL");
    let mut health = HealthWatch::open(connect_eventually(&health_url).await).await;
    health.wait_for(ServingStatus::Serving).await;

    frozen.signal("STOP");
    let stopped_at = Instant::now();
    let survivor_db = database_url.clone();
    let _survivor = app
        .start_worker_with("survivor", 1, TaskRegistry::with_content(), |config| {
            config.database_url = Some(survivor_db);
            config.storage_dir = storage;
        })
        .await;
    let second = app
        .dispatch(
            "sleep_then_write",
            json!({"seconds": 0, "repository_name": "after"}),
            &["R"],
            &[],
        )
        .await;
    let failed = app.wait_final(&first.id).await;
    eprintln!(
        "[{backend:?}] frozen worker: its task FAILED {:.3} s after SIGSTOP (TTL {TTL} s)",
        stopped_at.elapsed().as_secs_f64()
    );
    // Had the write landed before SIGSTOP, the task would have COMPLETED.
    assert_eq!(state(&failed), pb::TaskState::Failed, "{failed:?}");
    let why = reason(&failed).to_owned();
    assert!(
        why.contains("worker") && why.contains("lost"),
        "reason {why:?}"
    );
    let second = app.wait_final(&second.id).await;
    assert_eq!(state(&second), pb::TaskState::Completed, "{second:?}");
    assert_eq!(second.worker, "survivor");
    assert!(
        micros(&second.started_at) >= micros(&failed.finished_at),
        "overlap: the second task started before the first one ended: {second:?} {failed:?}"
    );
    assert!(body_interval(&second).0 >= micros(&failed.finished_at));
    let names = repository_names(&app).await;
    assert!(names.contains(&"after".to_owned()), "{names:?}");
    assert!(!names.contains(&"late".to_owned()), "{names:?}");
    let workers = list_workers(&app).await;
    assert_eq!(worker_state(&workers["frozen"]), pb::WorkerState::Lost);

    let resumed_at = Instant::now();
    let resumed_wall = now_micros();
    frozen.signal("CONT");
    health.wait_for(ServingStatus::NotServing).await;
    health.wait_for(ServingStatus::Serving).await;
    eprintln!(
        "[{backend:?}] frozen worker: SERVING again {:.3} s after SIGCONT",
        resumed_at.elapsed().as_secs_f64()
    );
    let workers = list_workers(&app).await;
    let again = &workers["frozen"];
    assert_eq!(worker_state(again), pb::WorkerState::Online, "{again:?}");
    assert!(micros(&again.connected_at) >= resumed_wall, "{again:?}");
    // Drain it: it exits once its stale task returned (after its write
    // attempt: the task ignores the stop and the cancel grace is 60 s) and
    // every result it held was acknowledged or dropped.
    frozen.signal("TERM");
    let Some(status) = frozen.wait_exit(WAIT).await else {
        panic!("the worker did not exit by itself:\n{}", frozen.log_text());
    };
    assert!(status.success(), "{status:?}");
    let log = frozen.log_text();
    assert!(
        log.contains("sleep_then_write: the fence refused the write"),
        "the resumed worker never tried its write, or it was not refused:\n{log}"
    );
    assert!(
        !log.contains("sleep_then_write: the write committed"),
        "{log}"
    );
    assert_stale_task_refused(backend, &log);
    let names = repository_names(&app).await;
    assert!(
        !names.contains(&"late".to_owned()),
        "the fenced write landed: {names:?}"
    );
    let last = get_task(&mut app.tasks(), &first.id).await;
    assert_eq!(state(&last), pb::TaskState::Failed, "{last:?}");
    assert_eq!(reason(&last), why);
    assert_eq!(last.finished_at, failed.finished_at);
    assert!(last.result.is_none(), "{last:?}");
    assert!(last.created_resources.is_empty(), "{last:?}");
}

/// Shared counters of the dispatching clients, which the test waits on.
#[derive(Clone)]
struct LoadCounters {
    /// Dispatches acknowledged so far.
    acked: Arc<watch::Sender<usize>>,
    /// Dispatches answered UNAVAILABLE so far.
    unavailable: Arc<watch::Sender<usize>>,
}

impl LoadCounters {
    fn new() -> LoadCounters {
        LoadCounters {
            acked: Arc::new(watch::channel(0).0),
            unavailable: Arc::new(watch::channel(0).0),
        }
    }

    async fn wait(counter: &watch::Sender<usize>, at_least: usize, what: &str) {
        let mut rx = counter.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|n| *n >= at_least))
            .await
            .unwrap_or_else(|_| panic!("never reached {at_least} {what}"))
            .expect("counter alive");
    }

    async fn wait_acked(&self, at_least: usize) {
        Self::wait(&self.acked, at_least, "acknowledged dispatches").await;
    }

    async fn wait_unavailable(&self, at_least: usize) {
        Self::wait(&self.unavailable, at_least, "UNAVAILABLE dispatches").await;
    }

    fn acked_now(&self) -> usize {
        *self.acked.borrow()
    }
}

/// What one dispatching client saw.
#[derive(Default)]
struct ClientReport {
    /// Ids of acknowledged dispatches.
    acked: Vec<String>,
    /// Failed calls per status code.
    failures: BTreeMap<String, usize>,
    /// The first message seen per failure code.
    messages: BTreeMap<String, String>,
}

/// Dispatches until `stop`, about one call per `pace`, recording the id of
/// every acknowledged dispatch; a failed call is counted, not recorded, and
/// retried after a short pause (UNAVAILABLE means "retry").
async fn dispatch_loop(
    url: String,
    seed: u64,
    pace: Duration,
    stop: CancellationToken,
    counters: LoadCounters,
) -> ClientReport {
    let channel = Endpoint::from_shared(url)
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    let mut tasks = TasksClient::new(channel);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut report = ClientReport::default();
    while !stop.is_cancelled() {
        let call = tasks.dispatch(pulp_tests::random_sleep_request(&mut rng, 10, 100));
        let pause = match tokio::time::timeout(Duration::from_secs(20), call).await {
            Ok(Ok(task)) => {
                report.acked.push(task.into_inner().id);
                counters.acked.send_modify(|n| *n += 1);
                pace
            }
            Ok(Err(status)) => {
                // A status with a source is the client's own transport
                // error (the connection broke); one without was answered.
                let code = match std::error::Error::source(&status) {
                    Some(_) => format!("transport {:?}", status.code()),
                    None => format!("{:?}", status.code()),
                };
                report
                    .messages
                    .entry(code.clone())
                    .or_insert_with(|| status.message().to_owned());
                *report.failures.entry(code).or_default() += 1;
                if status.code() == Code::Unavailable {
                    counters.unavailable.send_modify(|n| *n += 1);
                }
                Duration::from_millis(100)
            }
            Err(_) => {
                *report
                    .failures
                    .entry("no answer in 20 s".into())
                    .or_default() += 1;
                Duration::from_millis(100)
            }
        };
        // Pacing and retry back-off, not a wait for an event.
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    report
}

/// Starts `clients` dispatching clients against `url`.
fn start_load(
    url: &str,
    clients: u64,
    pace: Duration,
    stop: &CancellationToken,
    counters: &LoadCounters,
) -> Vec<tokio::task::JoinHandle<ClientReport>> {
    (0..clients)
        .map(|c| {
            tokio::spawn(dispatch_loop(
                url.to_owned(),
                0xfa17 + c,
                pace,
                stop.clone(),
                counters.clone(),
            ))
        })
        .collect()
}

/// Stops the clients and merges their reports.
async fn stop_load(
    stop: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<ClientReport>>,
) -> ClientReport {
    stop.cancel();
    let mut all = ClientReport::default();
    for handle in handles {
        let report = tokio::time::timeout(WAIT, handle)
            .await
            .expect("a client stops")
            .expect("a client does not panic");
        all.acked.extend(report.acked);
        for (code, n) in report.failures {
            *all.failures.entry(code).or_default() += n;
        }
        for (code, message) in report.messages {
            all.messages.entry(code).or_insert(message);
        }
    }
    all
}

/// Follows a task with WatchTask until it is final.
async fn wait_final_at(tasks: &mut TasksClient<Channel>, id: &str) -> pb::Task {
    pulp_tests::wait_task(tasks, id, is_final).await
}

/// True when the two tasks may not run at once.
fn conflict(a: &pb::Task, b: &pb::Task) -> bool {
    let holds = |t: &pb::Task, r: &String| {
        t.exclusive_resources.contains(r) || t.shared_resources.contains(r)
    };
    a.exclusive_resources.iter().any(|r| holds(b, r))
        || b.exclusive_resources.iter().any(|r| holds(a, r))
}

/// Asserts that no two conflicting completed tasks' bodies overlapped;
/// returns how many conflicting pairs were checked.
fn assert_no_conflicting_overlap(tasks: &[pb::Task]) -> usize {
    let ran: Vec<(&pb::Task, (i64, i64))> = tasks
        .iter()
        .filter(|t| state(t) == pb::TaskState::Completed)
        .map(|t| (t, body_interval(t)))
        .collect();
    let mut pairs = 0;
    for (i, (a, ia)) in ran.iter().enumerate() {
        for (b, ib) in &ran[i + 1..] {
            if conflict(a, b) {
                pairs += 1;
                assert!(
                    ia.1 <= ib.0 || ib.1 <= ia.0,
                    "conflicting tasks overlapped: {} {:?} {ia:?} and {} {:?} {ib:?}",
                    a.id,
                    (&a.exclusive_resources, &a.shared_resources),
                    b.id,
                    (&b.exclusive_resources, &b.shared_resources),
                );
            }
        }
    }
    pairs
}

/// A scheduler process is killed with -9 while four clients dispatch short
/// tasks with mixed claims to two worker processes; it is restarted on the
/// same port and database. Every acknowledged dispatch exists, every task
/// completes, no conflicting pair overlapped, and both workers reconnected
/// by themselves.
async fn scheduler_killed_under_load_loses_nothing(backend: Backend) {
    let Some(env) = ProcessEnv::new(backend).await else {
        return;
    };
    let url = env.url();
    let scheduler = env.start_scheduler("scheduler-1.log", &[]).await;
    let mut workers = Vec::new();
    for name in ["w1", "w2"] {
        workers.push(env.start_worker(name, 4, &["--cancel-grace", "1"]).await);
    }

    let stop = CancellationToken::new();
    let counters = LoadCounters::new();
    let clients = start_load(&url, 4, Duration::from_millis(40), &stop, &counters);
    counters.wait_acked(30).await;
    let killed_at = Instant::now();
    let acked_at_kill = counters.acked_now();
    scheduler.kill9();
    let restarted_wall = now_micros();
    let _scheduler = env.start_scheduler("scheduler-2.log", &[]).await;
    let outage = killed_at.elapsed();
    let acked_at_restart = counters.acked_now();
    counters.wait_acked(acked_at_restart + 30).await;
    let report = stop_load(stop, clients).await;
    eprintln!(
        "[{backend:?}] scheduler kill -9: SERVING again after {:.3} s; {} dispatches acknowledged \
         ({acked_at_kill} before the kill), failed calls {:?} {:?}",
        outage.as_secs_f64(),
        report.acked.len(),
        report.failures,
        report.messages
    );
    for code in report.failures.keys() {
        assert!(
            code == "Unavailable" || code.starts_with("transport "),
            "a dispatch was answered {code} (failures {:?} {:?})",
            report.failures,
            report.messages
        );
    }

    let channel = connect_eventually(&url).await;
    let mut tasks = TasksClient::new(channel.clone());
    let listed = pulp_tests::all_tasks(&mut tasks).await;
    let known: HashMap<&str, &pb::Task> = listed.iter().map(|t| (t.id.as_str(), t)).collect();
    let lost: Vec<&String> = report
        .acked
        .iter()
        .filter(|id| !known.contains_key(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let drain_started = Instant::now();
    let mut finals = Vec::with_capacity(listed.len());
    for task in &listed {
        finals.push(wait_final_at(&mut tasks, &task.id).await);
    }
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    for task in &finals {
        *states.entry(format!("{:?}", state(task))).or_default() += 1;
    }
    let pairs = assert_no_conflicting_overlap(&finals);
    eprintln!(
        "[{backend:?}] scheduler kill -9: {} tasks stored, final states {states:?} ({:.3} s to \
         finish after the load stopped), {pairs} conflicting pairs checked",
        finals.len(),
        drain_started.elapsed().as_secs_f64()
    );
    let not_completed: Vec<(&str, pb::TaskState, &str)> = finals
        .iter()
        .filter(|t| state(t) != pb::TaskState::Completed)
        .map(|t| (t.id.as_str(), state(t), reason(t)))
        .collect();
    assert!(not_completed.is_empty(), "{not_completed:?}");

    let online = WorkersClient::new(channel)
        .list_workers(pb::ListWorkersRequest {})
        .await
        .expect("list workers")
        .into_inner()
        .workers;
    for name in ["w1", "w2"] {
        let worker = online
            .iter()
            .find(|w| w.name == name)
            .unwrap_or_else(|| panic!("{name} is not listed"));
        assert_eq!(worker_state(worker), pb::WorkerState::Online, "{worker:?}");
        assert!(
            micros(&worker.connected_at) >= restarted_wall,
            "{name} did not reconnect to the new scheduler: {worker:?}"
        );
    }
    drop(workers);
}

/// PostgreSQL (a cluster of the test's own) is stopped with `-m immediate`
/// while a client dispatches: the scheduler turns NOT_SERVING, dispatches
/// fail UNAVAILABLE; once PostgreSQL is back the scheduler is SERVING again
/// without a restart, and every acknowledged dispatch exists and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_under_load_loses_no_acknowledged_task() {
    let Some(cluster) = PostgresCluster::start() else {
        return;
    };
    let database_url = cluster.url();
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |config| {
        config.database_url = Some(database_url);
        config.worker_ttl = 10.0;
    })
    .await
    else {
        return;
    };
    let _worker = app.start_worker("w", 4).await;
    let stop = CancellationToken::new();
    let counters = LoadCounters::new();
    let clients = start_load(&app.url(), 1, Duration::from_millis(20), &stop, &counters);
    counters.wait_acked(10).await;

    let stopped_at = Instant::now();
    tokio::task::block_in_place(|| cluster.stop_immediate());
    wait_for_health(app.channel.clone(), ServingStatus::NotServing).await;
    eprintln!(
        "PostgreSQL stopped: scheduler NOT_SERVING after {:.3} s",
        stopped_at.elapsed().as_secs_f64()
    );
    counters.wait_unavailable(1).await;
    let asked = Instant::now();
    let err = app
        .tasks()
        .dispatch(dispatch_request("noop", json!({}), &[], &[]))
        .await
        .expect_err("no database, no dispatch");
    eprintln!(
        "PostgreSQL down: a dispatch failed {:?} after {:.3} s",
        err.code(),
        asked.elapsed().as_secs_f64()
    );
    assert_eq!(err.code(), Code::Unavailable, "{err}");

    let started_at = Instant::now();
    tokio::task::block_in_place(|| cluster.start_again());
    wait_for_health(app.channel.clone(), ServingStatus::Serving).await;
    eprintln!(
        "PostgreSQL started: scheduler SERVING after {:.3} s (outage {:.3} s)",
        started_at.elapsed().as_secs_f64(),
        stopped_at.elapsed().as_secs_f64()
    );
    let acked_at_restart = counters.acked_now();
    counters.wait_acked(acked_at_restart + 10).await;
    let report = stop_load(stop, clients).await;
    eprintln!(
        "PostgreSQL restart: {} dispatches acknowledged, failed calls {:?} {:?}",
        report.acked.len(),
        report.failures,
        report.messages
    );
    for code in report.failures.keys() {
        assert_eq!(
            code, "Unavailable",
            "failures {:?} {:?}",
            report.failures, report.messages
        );
    }
    let mut tasks = app.tasks();
    let mut not_completed = Vec::new();
    for id in &report.acked {
        let task = wait_final_at(&mut tasks, id).await;
        if state(&task) != pb::TaskState::Completed {
            not_completed.push(task);
        }
    }
    assert!(
        not_completed.is_empty(),
        "{} of {} acknowledged tasks did not complete: {not_completed:#?}",
        not_completed.len(),
        report.acked.len()
    );
}

/// A task enqueued with a 0.5 s timeout that sleeps 30 s ends FAILED
/// ("timed out") soon after the timeout.
async fn timeout_fails_the_task_with_timed_out(backend: Backend) {
    let Some(app) = short_ttl_app(backend).await else {
        return;
    };
    let _worker = app.start_worker("w", 1).await;
    let kwargs = json!({"seconds": 30});
    let serde_json::Value::Object(kwargs) = kwargs else {
        unreachable!()
    };
    let started = Instant::now();
    let enqueued = app
        .tasks()
        .enqueue(pb::EnqueueRequest {
            func: "sleep".into(),
            kwargs: Some(pulp_common::json::json_to_struct(&kwargs)),
            options: Some(pb::EnqueueOptions {
                timeout_seconds: Some(0.5),
            }),
            ..Default::default()
        })
        .await
        .expect("enqueue")
        .into_inner();
    let task = app.wait_final(&enqueued.job_id).await;
    let took = started.elapsed();
    eprintln!(
        "[{backend:?}] timeout 0.5 s: FAILED after {:.3} s",
        took.as_secs_f64()
    );
    assert_eq!(state(&task), pb::TaskState::Failed, "{task:?}");
    assert_eq!(reason(&task), "timed out", "{task:?}");
    assert_eq!(task.timeout_seconds, 0.5);
    let ran = micros(&task.finished_at) - micros(&task.started_at);
    assert!(
        (500_000..10_000_000).contains(&ran),
        "ran {ran} µs for a 0.5 s timeout"
    );
}

/// A running task that ignores its cancellation is aborted after the
/// worker's cancel grace (0.5 s): it ends CANCELED ("canceled by force") and
/// its working directory is removed.
async fn hard_cancel_aborts_a_task_that_ignores_cancellation(backend: Backend) {
    let Some(app) = short_ttl_app(backend).await else {
        return;
    };
    let grace = Duration::from_millis(500);
    let _worker = app
        .start_worker_with("w", 1, pulp_tests::TaskRegistry::builtin(), |config| {
            config.cancel_grace = grace;
        })
        .await;
    let task = app
        .dispatch(
            "sleep",
            json!({"seconds": 60, "ignore_cancel": true}),
            &[],
            &[],
        )
        .await;
    app.wait_body_started(&task.id).await;
    let task_dir = app.work_dir("w").join(&task.id);
    assert!(
        task_dir.is_dir(),
        "{} exists while it runs",
        task_dir.display()
    );

    let asked = Instant::now();
    let canceling = app
        .tasks()
        .cancel_task(pb::CancelTaskRequest {
            id: task.id.clone(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(state(&canceling), pb::TaskState::Canceling);
    let canceled = app.wait_final(&task.id).await;
    let took = asked.elapsed();
    eprintln!(
        "[{backend:?}] hard cancel: CANCELED {:.3} s after the request (grace {:.1} s)",
        took.as_secs_f64(),
        grace.as_secs_f64()
    );
    assert_eq!(state(&canceled), pb::TaskState::Canceled, "{canceled:?}");
    assert_eq!(reason(&canceled), "canceled by force", "{canceled:?}");
    assert!(took >= grace, "aborted after {took:?}, before the grace");
    assert!(took < grace + Duration::from_secs(10), "took {took:?}");
    assert!(!task_dir.exists(), "{} is left behind", task_dir.display());
}

/// SIGTERM drains a worker process: health NOT_SERVING, no new work (a task
/// dispatched during the drain on the resource the running task holds stays
/// WAITING even once that resource is free), the running task ends as
/// `expect`, the process exits 0 by itself and is then OFFLINE (not LOST).
/// Returns the running task as it ended; `None` when the backend is
/// unavailable (skipped).
async fn drain(
    backend: Backend,
    grace: &str,
    seconds: f64,
    expect: pb::TaskState,
) -> Option<pb::Task> {
    let app = short_ttl_app(backend).await?;
    let mut worker = app
        .start_worker_process("drainer", 2, &["--shutdown-grace", grace])
        .await;
    let running = app
        .dispatch("sleep", json!({"seconds": seconds}), &["R"], &[])
        .await;
    app.wait_body_started(&running.id).await;
    let health_url = worker.health_url.clone().expect("health URL");
    let mut health = HealthWatch::open(connect_eventually(&health_url).await).await;
    health.wait_for(ServingStatus::Serving).await;

    let term_at = Instant::now();
    worker.signal("TERM");
    health.wait_for(ServingStatus::NotServing).await;
    // The worker has a free slot, and R frees up during the drain: only the
    // drain keeps this task from the worker.
    let late = app.dispatch("noop", json!({}), &["R"], &[]).await;
    assert_eq!(state(&late), pb::TaskState::Waiting);

    let ended = app.wait_final(&running.id).await;
    let Some(status) = worker.wait_exit(WAIT).await else {
        panic!("the worker did not exit by itself:\n{}", worker.log_text());
    };
    let took = term_at.elapsed();
    eprintln!(
        "[{backend:?}] drain with grace {grace} s: running task {:?}, process exited {:.3} s after SIGTERM",
        state(&ended),
        took.as_secs_f64()
    );
    assert!(status.success(), "{status:?}\n{}", worker.log_text());
    assert_eq!(state(&ended), expect, "{ended:?}");
    assert_eq!(ended.worker, "drainer");

    let late = get_task(&mut app.tasks(), &late.id).await;
    assert_eq!(state(&late), pb::TaskState::Waiting, "{late:?}");
    assert!(
        late.worker.is_empty() && late.started_at.is_none(),
        "{late:?}"
    );
    // A round after the one that saw the worker's stream end: its answer
    // means that round committed (see the module doc).
    app.tasks()
        .cancel_task(pb::CancelTaskRequest { id: late.id })
        .await
        .expect("cancel the waiting task");
    let workers = list_workers(&app).await;
    assert_eq!(
        worker_state(&workers["drainer"]),
        pb::WorkerState::Offline,
        "{:?}",
        workers["drainer"]
    );
    Some(ended)
}

async fn drain_lets_running_tasks_finish_within_the_grace(backend: Backend) {
    let Some(ended) = drain(backend, "5", 1.0, pb::TaskState::Completed).await else {
        return;
    };
    assert!(ended.error.is_none(), "{ended:?}");
}

async fn drain_aborts_tasks_past_the_grace(backend: Backend) {
    let Some(ended) = drain(backend, "0.5", 30.0, pb::TaskState::Failed).await else {
        return;
    };
    assert_eq!(
        reason(&ended),
        "aborted during worker shutdown",
        "{ended:?}"
    );
    let ran = micros(&ended.finished_at) - micros(&ended.started_at);
    assert!(ran < 20_000_000, "ran {ran} µs of a 30 s sleep");
}

/// A second scheduler process on the same SQLite file exits non-zero saying
/// another scheduler runs there and pointing to PostgreSQL; the first keeps
/// serving. Once the first is killed (-9), the file is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_sqlite_scheduler_is_refused() {
    pulp_tests::init_logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("pulp.sqlite").display()
    );
    let first_port = free_port();
    let first =
        start_scheduler_process(first_port, &database_url, dir.path(), "first.log", &[]).await;

    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--database-url",
        &database_url,
        "--data-dir",
        dir.path().to_str().expect("utf-8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut second = Process::start("pulp-scheduler", &args, dir.path().join("second.log"));
    let status = second
        .wait_exit(WAIT)
        .await
        .expect("the second scheduler exits by itself");
    let log = second.log_text();
    assert!(!status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("another pulp-scheduler is already running"),
        "{log}"
    );
    assert!(log.contains("PostgreSQL"), "{log}");

    let mut health = tonic_health::pb::health_client::HealthClient::new(
        connect_eventually(&format!("http://127.0.0.1:{first_port}")).await,
    );
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("the first scheduler answers")
        .into_inner();
    assert_eq!(serving.status, ServingStatus::Serving as i32);

    first.kill9();
    let _third =
        start_scheduler_process(free_port(), &database_url, dir.path(), "third.log", &[]).await;
}

/// SIGTERM on a scheduler process while a worker process runs a task
/// holding exclusive[R] and a second task waits on R. The scheduler tells
/// its workers by ending their streams with UNAVAILABLE "the scheduler is
/// shutting down" (the status a worker retries on). So: the worker logs
/// that reason (not a broken connection) and turns NOT_SERVING, keeping its
/// task running; the scheduler exits 0 on its own, before its drain limit
/// (no connection had to be cut); it accepts nothing afterwards (a new
/// connection is refused). Restarted on the same port and database, it gets
/// the worker back by itself, and both acknowledged tasks complete, one
/// after the other.
async fn scheduler_sigterm_closes_worker_streams_and_loses_nothing(backend: Backend) {
    let Some(env) = ProcessEnv::new(backend).await else {
        return;
    };
    let url = env.url();
    let mut scheduler = env.start_scheduler("scheduler-1.log", &[]).await;
    let worker = env.start_worker("w", 1, &[]).await;
    let mut worker_health = HealthWatch::open(
        connect_eventually(worker.health_url.as_deref().expect("health URL")).await,
    )
    .await;
    worker_health.wait_for(ServingStatus::Serving).await;
    let mut tasks = TasksClient::new(connect_eventually(&url).await);
    let mut dispatch = async |seconds: f64| {
        tasks
            .dispatch(dispatch_request(
                "sleep",
                json!({"seconds": seconds}),
                &["R"],
                &[],
            ))
            .await
            .expect("dispatch")
            .into_inner()
    };
    let first = dispatch(2.0).await;
    let second = dispatch(0.2).await;
    let running = pulp_tests::wait_task(&mut tasks, &first.id, |t| {
        state(t) == pb::TaskState::Running && !t.progress_reports.is_empty()
    })
    .await;
    assert_eq!(running.worker, "w");
    drop(tasks);

    let term_at = Instant::now();
    scheduler.signal("TERM");
    worker_health.wait_for(ServingStatus::NotServing).await;
    let Some(status) = scheduler.wait_exit(WAIT).await else {
        panic!(
            "the scheduler did not exit by itself:\n{}",
            scheduler.log_text()
        );
    };
    let took = term_at.elapsed();
    eprintln!(
        "[{backend:?}] scheduler SIGTERM: exited {status:?} {:.3} s after the signal",
        took.as_secs_f64()
    );
    let log = scheduler.log_text();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("closing worker streams"), "{log}");
    assert!(!log.contains("connections still open"), "{log}");
    assert!(took < pulp_scheduler::DRAIN_LIMIT, "took {took:?}");
    let refused = Endpoint::from_shared(url.clone())
        .expect("endpoint")
        .connect()
        .await;
    assert!(
        refused.is_err(),
        "a stopped scheduler accepted a connection"
    );
    let worker_log = std::fs::read_to_string(&worker.log).unwrap_or_default();
    assert!(
        worker_log.contains(
            "the scheduler ended the stream with Unavailable: the scheduler is shutting down"
        ),
        "the worker was not told that the scheduler shuts down:\n{worker_log}"
    );

    let restarted_wall = now_micros();
    let _scheduler = env.start_scheduler("scheduler-2.log", &[]).await;
    worker_health.wait_for(ServingStatus::Serving).await;
    let channel = connect_eventually(&url).await;
    let mut tasks = TasksClient::new(channel.clone());
    let first = wait_final_at(&mut tasks, &first.id).await;
    let second = wait_final_at(&mut tasks, &second.id).await;
    for task in [&first, &second] {
        assert_eq!(state(task), pb::TaskState::Completed, "{task:?}");
        assert_eq!(task.worker, "w");
    }
    assert!(
        body_interval(&first).1 <= body_interval(&second).0,
        "the tasks on R overlapped: {first:?} {second:?}"
    );
    let workers = WorkersClient::new(channel)
        .list_workers(pb::ListWorkersRequest {})
        .await
        .expect("list workers")
        .into_inner()
        .workers;
    let w = workers.iter().find(|w| w.name == "w").expect("w is listed");
    assert_eq!(worker_state(w), pb::WorkerState::Online, "{w:?}");
    assert!(micros(&w.connected_at) >= restarted_wall, "{w:?}");
}

/// A worker process draining after SIGTERM, with a 60 s shutdown grace and
/// a task that would run 60 s, exits at once with code 130 on a second
/// signal (SIGINT here) instead of waiting out the grace. The worker does
/// not depend on the database: SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_signal_exits_a_draining_worker_at_once() {
    let Some(app) = short_ttl_app(Backend::Sqlite).await else {
        return;
    };
    let mut worker = app
        .start_worker_process("drainer", 1, &["--shutdown-grace", "60"])
        .await;
    let running = app
        .dispatch("sleep", json!({"seconds": 60}), &["R"], &[])
        .await;
    app.wait_body_started(&running.id).await;
    let health_url = worker.health_url.clone().expect("health URL");
    let mut health = HealthWatch::open(connect_eventually(&health_url).await).await;
    health.wait_for(ServingStatus::Serving).await;

    worker.signal("TERM");
    health.wait_for(ServingStatus::NotServing).await;
    assert!(
        worker.wait_exit(Duration::ZERO).await.is_none(),
        "the worker exited before its drain was over:\n{}",
        worker.log_text()
    );
    let second_at = Instant::now();
    worker.signal("INT");
    let Some(status) = worker.wait_exit(WAIT).await else {
        panic!(
            "the worker did not exit on a second signal:\n{}",
            worker.log_text()
        );
    };
    let took = second_at.elapsed();
    eprintln!(
        "second signal: the draining worker exited {status:?} {:.3} s after it",
        took.as_secs_f64()
    );
    assert_eq!(status.code(), Some(130), "{}", worker.log_text());
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(worker.log_text().contains("second signal: exiting at once"));
    // It left without reporting: the scheduler fails the task (lost worker).
    let ended = app.wait_final(&running.id).await;
    assert_eq!(state(&ended), pb::TaskState::Failed, "{ended:?}");
}

/// A scheduler process shutting down after SIGTERM waits up to its drain
/// limit (10 s) for open connections; a client holding a health Watch open
/// keeps it waiting. It turns NOT_SERVING, and a second SIGTERM exits at
/// once with code 130. The signal handling does not depend on the
/// database: SQLite only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_signal_exits_a_stopping_scheduler_at_once() {
    pulp_tests::init_logs();
    let dir = tempfile::tempdir().expect("temporary directory");
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("pulp.sqlite").display()
    );
    let port = free_port();
    let mut scheduler =
        start_scheduler_process(port, &database_url, dir.path(), "scheduler.log", &[]).await;
    let mut health =
        HealthWatch::open(connect_eventually(&format!("http://127.0.0.1:{port}")).await).await;
    health.wait_for(ServingStatus::Serving).await;

    scheduler.signal("TERM");
    health.wait_for(ServingStatus::NotServing).await;
    assert!(
        scheduler.wait_exit(Duration::ZERO).await.is_none(),
        "the scheduler exited while a Watch was open:\n{}",
        scheduler.log_text()
    );
    let second_at = Instant::now();
    scheduler.signal("TERM");
    let Some(status) = scheduler.wait_exit(WAIT).await else {
        panic!(
            "the scheduler did not exit on a second signal:\n{}",
            scheduler.log_text()
        );
    };
    let took = second_at.elapsed();
    eprintln!(
        "second signal: the stopping scheduler exited {status:?} {:.3} s after it",
        took.as_secs_f64()
    );
    let log = scheduler.log_text();
    assert_eq!(status.code(), Some(130), "{log}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(log.contains("second signal: exiting at once"), "{log}");
    assert!(!log.contains("connections still open"), "{log}");
}
