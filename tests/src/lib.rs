//! The end-to-end test harness: a real scheduler (`pulp_scheduler::run`) on
//! a real database, real workers (`pulp_worker::run_with`), all talking real
//! gRPC over loopback.
//!
//! - [`TestDb`]: a fresh database per test: a SQLite file in a temporary
//!   directory, or a PostgreSQL database named by a UUID on the machine's
//!   server (`PULP_TEST_POSTGRES_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/test`), dropped afterwards.
//! - [`TestApp`]: the scheduler on port 0 plus generated clients, and
//!   in-process workers started and stopped on demand.
//! - [`both_databases!`]: runs each scenario once per backend. Without a
//!   reachable PostgreSQL the PostgreSQL variants are skipped, except under
//!   `CI=true`, where they fail.
//! - [`Process`], [`start_worker_process_at`]: our real binaries as child
//!   processes, for tests that send them signals.
//! - [`HealthWatch`]: one health Watch kept open to see every change.
//! - [`PostgresCluster`]: a throwaway PostgreSQL server a test may stop and
//!   start.
//!
//! Logs are silent unless `TEST_LOG=1`.

use anyhow::Context;
use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::{
    task_groups_client::TaskGroupsClient, tasks_client::TasksClient, workers_client::WorkersClient,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

pub use pulp_worker::TaskRegistry;

pub mod pki;

/// A generous bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(60);

/// Which database a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// The PostgreSQL server tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("PULP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Installs a log subscriber when `TEST_LOG` is set.
pub fn init_logs() {
    if std::env::var("TEST_LOG").is_ok() {
        pulp_common::telemetry::init(pulp_common::telemetry::LogFormat::Pretty);
    }
}

/// A database for one test, removed when dropped.
pub struct TestDb {
    url: String,
    postgres: bool,
    _dir: tempfile::TempDir,
}

impl TestDb {
    /// A fresh database, or `None` when PostgreSQL is unreachable outside
    /// CI (the test is then skipped with a message).
    pub async fn new(backend: Backend) -> Option<TestDb> {
        let dir = tempfile::tempdir().expect("temporary directory");
        match backend {
            Backend::Sqlite => Some(TestDb {
                url: format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("pulp.sqlite").display()
                ),
                postgres: false,
                _dir: dir,
            }),
            Backend::Postgres => {
                let created = tokio::time::timeout(
                    Duration::from_secs(5),
                    pulp_common::db::throwaway::create(&postgres_admin_url(), "pulp_test"),
                )
                .await
                .context("connect to PostgreSQL: timed out")
                .and_then(|created| Ok(created?));
                match created {
                    Ok(url) => Some(TestDb {
                        url,
                        postgres: true,
                        _dir: dir,
                    }),
                    Err(err) if !in_ci() => {
                        eprintln!("skipped: PostgreSQL is not reachable ({err:#})");
                        None
                    }
                    Err(err) => panic!("PostgreSQL is required under CI=true: {err:#}"),
                }
            }
        }
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.postgres {
            return;
        }
        let url = self.url.clone();
        // Drop runs outside async: use a small runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(pulp_common::db::throwaway::drop(
                &postgres_admin_url(),
                &url,
            ))?;
            anyhow::Ok(())
        })
        .join();
    }
}

/// A worker running in this process.
pub struct TestWorker {
    /// Its name.
    pub name: String,
    /// The address of its gRPC health server.
    pub health_address: SocketAddr,
    stop: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestWorker {
    /// Stops it gracefully (drain) and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .context("worker did not stop")??
    }

    /// Stops it at once, as if the process died: its stream drops.
    pub fn kill(self) {
        self.handle.abort();
    }
}

/// A scheduler on a fresh database, with clients.
pub struct TestApp {
    /// The database.
    pub db: TestDb,
    /// The scheduler's address.
    pub address: SocketAddr,
    /// A channel to it.
    pub channel: Channel,
    /// Working directories of the test's workers live under here.
    pub work_root: tempfile::TempDir,
    /// The CA of the scheduler's certificate when it serves TLS.
    pub tls_ca: Option<Vec<u8>>,
    stop: CancellationToken,
    scheduler: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts a scheduler on a fresh `backend` database; `None` when the
    /// backend is unavailable outside CI.
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// As [`spawn`](Self::spawn), adjusting the scheduler's settings first.
    pub async fn spawn_with(
        backend: Backend,
        adjust: impl FnOnce(&mut pulp_scheduler::Config),
    ) -> Option<TestApp> {
        Self::spawn_inner(backend, None, adjust).await
    }

    /// A scheduler serving TLS with `pki`'s server certificate, requiring
    /// worker certificates signed by its CA and its client token; `adjust`
    /// may change more. [`channel`](Self::channel) is TLS without
    /// credentials.
    pub async fn spawn_secure(
        backend: Backend,
        pki: &pki::Pki,
        adjust: impl FnOnce(&mut pulp_scheduler::Config),
    ) -> Option<TestApp> {
        let tls_ca = pki.ca_pem();
        Self::spawn_inner(backend, Some(tls_ca), |config| {
            config.tls_cert = Some(pki.server.cert.clone());
            config.tls_key = Some(pki.server.key.clone());
            config.worker_ca = Some(pki.ca.clone());
            config.client_tokens_file = Some(pki.tokens_file.clone());
            adjust(config);
        })
        .await
    }

    async fn spawn_inner(
        backend: Backend,
        tls_ca: Option<Vec<u8>>,
        adjust: impl FnOnce(&mut pulp_scheduler::Config),
    ) -> Option<TestApp> {
        init_logs();
        let db = TestDb::new(backend).await?;
        let mut config = pulp_scheduler::Config::new(db.url());
        adjust(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        let scheduler = tokio::spawn(pulp_scheduler::run(config, listener, stop.clone()));
        let channel = connect_to(address, tls_ca.as_deref(), None)
            .await
            .expect("connect to the scheduler");
        let app = TestApp {
            db,
            address,
            channel,
            work_root: tempfile::tempdir().expect("temporary directory"),
            tls_ca,
            stop,
            scheduler: Some(scheduler),
        };
        app.wait_until_serving().await;
        Some(app)
    }

    /// Waits until the scheduler's health turns SERVING.
    pub async fn wait_until_serving(&self) {
        wait_for_health(
            self.channel.clone(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
        )
        .await;
    }

    /// The scheduler's URL (`https://` when it serves TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.address)
    }

    /// A Tasks client.
    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    /// A TaskGroups client.
    pub fn groups(&self) -> TaskGroupsClient<Channel> {
        TaskGroupsClient::new(self.channel.clone())
    }

    /// A Workers client.
    pub fn workers(&self) -> WorkersClient<Channel> {
        WorkersClient::new(self.channel.clone())
    }

    /// The workers the scheduler lists.
    pub async fn list_workers(&self) -> Vec<pb::Worker> {
        self.workers()
            .list_workers(pb::ListWorkersRequest {})
            .await
            .expect("list workers")
            .into_inner()
            .workers
    }

    /// Starts a worker with the built-in tasks and `slots` slots.
    pub async fn start_worker(&self, name: &str, slots: u32) -> TestWorker {
        self.start_worker_with(name, slots, TaskRegistry::builtin(), |_| {})
            .await
    }

    /// Starts a worker with the tasks of `registry`, adjusting its config.
    pub async fn start_worker_with(
        &self,
        name: &str,
        slots: u32,
        registry: TaskRegistry,
        adjust: impl FnOnce(&mut pulp_worker::Config),
    ) -> TestWorker {
        let mut config = pulp_worker::Config::for_tests(self.url(), self.work_dir(name));
        config.name = name.to_owned();
        config.slots = slots;
        adjust(&mut config);
        let health = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let health_address = health.local_addr().expect("address");
        let stop = CancellationToken::new();
        let handle = tokio::spawn(pulp_worker::run_with(
            config,
            registry,
            Some(health),
            stop.clone(),
        ));
        let channel = Endpoint::from_shared(format!("http://{health_address}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the worker's health server");
        // A worker is SERVING once the scheduler welcomed it.
        wait_for_health(
            channel,
            tonic_health::pb::health_check_response::ServingStatus::Serving,
        )
        .await;
        TestWorker {
            name: name.to_owned(),
            health_address,
            stop,
            handle,
        }
    }

    /// Opens the test's database directly, for what the API cannot show
    /// (such as the rows of tables it has no list call for).
    pub async fn database(&self) -> sea_orm::DatabaseConnection {
        pulp_common::db::connect(self.db.url(), &Default::default())
            .await
            .expect("connect to the test database")
    }

    /// The working directory root of worker `name`.
    pub fn work_dir(&self, name: &str) -> PathBuf {
        self.work_root.path().join(name)
    }

    /// Dispatches `func` with `kwargs` claiming the given resources.
    pub async fn dispatch(
        &self,
        func: &str,
        kwargs: serde_json::Value,
        exclusive: &[&str],
        shared: &[&str],
    ) -> pb::Task {
        self.tasks()
            .dispatch(dispatch_request(func, kwargs, exclusive, shared))
            .await
            .unwrap_or_else(|s| panic!("dispatch {func}: {s}"))
            .into_inner()
    }

    /// Follows a task with WatchTask until `done` holds for a snapshot, and
    /// returns that snapshot; every snapshot seen is in `seen`.
    pub async fn wait_for(&self, id: &str, done: impl Fn(&pb::Task) -> bool) -> pb::Task {
        wait_task(&mut self.tasks(), id, done).await
    }

    /// Waits until the worker runs the task's body: RUNNING with a first
    /// progress report (the scheduler marks a task RUNNING when it sends the
    /// assignment, before the worker has made its working directory).
    pub async fn wait_body_started(&self, id: &str) -> pb::Task {
        self.wait_for(id, |t| {
            state(t) == pb::TaskState::Running && !t.progress_reports.is_empty()
        })
        .await
    }

    /// Waits until the task reaches a final state.
    pub async fn wait_final(&self, id: &str) -> pb::Task {
        self.wait_for(id, is_final).await
    }

    /// Stops the scheduler gracefully.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(handle) = self.scheduler.take() {
            let _ = tokio::time::timeout(WAIT, handle).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A channel to the scheduler at `address`: plain, or TLS trusting `ca`,
/// presenting `identity` (a certificate and key pair) if given.
pub async fn connect_to(
    address: SocketAddr,
    ca: Option<&[u8]>,
    identity: Option<&pki::Pair>,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = match ca {
        None => Endpoint::from_shared(format!("http://{address}"))?,
        Some(ca) => {
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca));
            if let Some(pair) = identity {
                tls = tls.identity(tonic::transport::Identity::from_pem(
                    std::fs::read(&pair.cert).expect("read certificate"),
                    std::fs::read(&pair.key).expect("read key"),
                ));
            }
            Endpoint::from_shared(format!("https://{address}"))?.tls_config(tls)?
        }
    };
    endpoint.connect().await
}

/// An interceptor adding `authorization: Bearer <token>`.
pub fn bearer(
    token: &str,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone + use<> {
    let value: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("ASCII token");
    move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", value.clone());
        Ok(request)
    }
}

/// Follows `grpc.health.v1.Health/Watch` on `channel` until `status`.
pub async fn wait_for_health(
    channel: Channel,
    status: tonic_health::pb::health_check_response::ServingStatus,
) {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut stream = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    tokio::time::timeout(WAIT, async {
        while let Some(update) = stream.message().await.expect("health stream") {
            if update.status == status as i32 {
                return;
            }
        }
        panic!("health stream ended before {status:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("health never became {status:?}"));
}

/// Follows a task with WatchTask on `tasks` until `done` holds for a
/// snapshot (up to [`WAIT`]), and returns that snapshot.
pub async fn wait_task(
    tasks: &mut TasksClient<Channel>,
    id: &str,
    done: impl Fn(&pb::Task) -> bool,
) -> pb::Task {
    let mut stream = tasks
        .watch_task(pb::WatchTaskRequest { id: id.to_owned() })
        .await
        .unwrap_or_else(|s| panic!("watch {id}: {s}"))
        .into_inner();
    let result = tokio::time::timeout(WAIT, async {
        while let Some(task) = stream.message().await.expect("watch stream") {
            if done(&task) {
                return task;
            }
        }
        panic!("watch of {id} ended before the awaited condition");
    })
    .await;
    result.unwrap_or_else(|_| panic!("timed out waiting for task {id}"))
}

/// A DispatchRequest.
pub fn dispatch_request(
    func: &str,
    kwargs: serde_json::Value,
    exclusive: &[&str],
    shared: &[&str],
) -> pb::DispatchRequest {
    let kwargs = match kwargs {
        serde_json::Value::Object(map) => Some(pulp_common::json::json_to_struct(&map)),
        _ => None,
    };
    pb::DispatchRequest {
        func: func.to_owned(),
        kwargs,
        exclusive_resources: exclusive.iter().map(|s| s.to_string()).collect(),
        shared_resources: shared.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The task's state.
pub fn state(task: &pb::Task) -> pb::TaskState {
    pb::TaskState::try_from(task.state).unwrap_or(pb::TaskState::Unspecified)
}

/// True when the task is in a final state.
pub fn is_final(task: &pb::Task) -> bool {
    matches!(
        state(task),
        pb::TaskState::Completed
            | pb::TaskState::Failed
            | pb::TaskState::Canceled
            | pb::TaskState::Skipped
    )
}

/// A cancel grace far longer than a task that honours cancellation takes
/// to stop: a worker given it aborts a task by force only visibly late.
pub const LONG_CANCEL_GRACE: Duration = Duration::from_secs(30);

/// How soon after the cancel request a task its worker stopped
/// cooperatively must be final: well below [`LONG_CANCEL_GRACE`].
pub const COOPERATIVE_STOP: Duration = Duration::from_secs(5);

/// Microseconds since the epoch of a timestamp that must be set.
pub fn micros(ts: &Option<prost_types::Timestamp>) -> i64 {
    pulp_common::time::from_timestamp(ts.as_ref().expect("timestamp is set"))
}

/// Asserts that a running `task`, whose cancellation was asked for at
/// `asked_us` (microseconds since the epoch; the scheduler runs on this
/// machine's clock), ended CANCELED because its worker stopped it
/// cooperatively, not by an abort after the cancel grace: it carries no
/// error (the forced path records reason "canceled by force"), and its
/// `finished_at` is within [`COOPERATIVE_STOP`] of the request. Give the
/// worker [`LONG_CANCEL_GRACE`] so that a forced abort could not be that
/// quick.
pub fn assert_canceled_cooperatively(task: &pb::Task, asked_us: i64) {
    assert_eq!(state(task), pb::TaskState::Canceled, "{task:?}");
    assert!(
        task.error.is_none(),
        "the worker did not stop the task cooperatively: {:?}",
        task.error
    );
    let took = micros(&task.finished_at) - asked_us;
    assert!(
        (0..COOPERATIVE_STOP.as_micros() as i64).contains(&took),
        "CANCELED {took} µs after the cancel request; a cooperative stop takes under {COOPERATIVE_STOP:?} (the grace is {LONG_CANCEL_GRACE:?})"
    );
}

/// The `(started_at_us, finished_at_us)` a `sleep` task measured inside its
/// body, from its result.
pub fn body_interval(task: &pb::Task) -> (i64, i64) {
    let result = task
        .result
        .as_ref()
        .map(pulp_common::json::value_to_json)
        .unwrap_or_default();
    let start = result["started_at_us"]
        .as_i64()
        .unwrap_or_else(|| panic!("no started_at_us in {result}"));
    let end = result["finished_at_us"]
        .as_i64()
        .unwrap_or_else(|| panic!("no finished_at_us in {result}"));
    (start, end)
}

/// Every task, in dispatch order.
pub async fn all_tasks(tasks: &mut TasksClient<Channel>) -> Vec<pb::Task> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = tasks
            .list_tasks(pb::ListTasksRequest {
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .expect("list tasks")
            .into_inner();
        all.extend(page.tasks);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// A `sleep` of `min_ms..=max_ms` milliseconds claiming a random mix of
/// the resources `r0`..`r4`: each exclusive with probability 0.2, shared
/// with 0.3, else not at all.
pub fn random_sleep_request(
    rng: &mut impl rand::Rng,
    min_ms: u32,
    max_ms: u32,
) -> pb::DispatchRequest {
    let mut exclusive = Vec::new();
    let mut shared = Vec::new();
    for r in 0..5 {
        match rng.random_range(0..10) {
            0..=1 => exclusive.push(format!("r{r}")),
            2..=4 => shared.push(format!("r{r}")),
            _ => {}
        }
    }
    let seconds = f64::from(rng.random_range(min_ms..=max_ms)) / 1000.0;
    let ex: Vec<&str> = exclusive.iter().map(String::as_str).collect();
    let sh: Vec<&str> = shared.iter().map(String::as_str).collect();
    dispatch_request("sleep", serde_json::json!({"seconds": seconds}), &ex, &sh)
}

/// True when two tasks claim a common resource, at least one exclusively.
pub fn conflicts(a: &pb::Task, b: &pb::Task) -> bool {
    a.exclusive_resources
        .iter()
        .any(|r| b.exclusive_resources.contains(r) || b.shared_resources.contains(r))
        || a.shared_resources
            .iter()
            .any(|r| b.exclusive_resources.contains(r))
}

/// Asserts, from the times measured inside `sleep` bodies, that every two
/// conflicting tasks of `tasks` (given in dispatch order) ran one after the
/// other, in dispatch order; returns how many conflicting pairs it checked.
pub fn assert_conflicts_serialized(tasks: &[pb::Task]) -> usize {
    let intervals: Vec<(i64, i64)> = tasks.iter().map(body_interval).collect();
    let mut checked = 0;
    for i in 0..tasks.len() {
        for j in i + 1..tasks.len() {
            if conflicts(&tasks[i], &tasks[j]) {
                checked += 1;
                assert!(
                    intervals[i].1 <= intervals[j].0,
                    "conflicting tasks {} and {} overlapped or ran out of dispatch order: {:?} {:?}",
                    tasks[i].id,
                    tasks[j].id,
                    intervals[i],
                    intervals[j]
                );
            }
        }
    }
    checked
}

/// Runs each named scenario `async fn name(backend: Backend)` on SQLite and
/// on PostgreSQL, as `sqlite::name` and `postgres::name`.
#[macro_export]
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name($crate::Backend::Postgres).await
                }
            )*
        }
    };
}

/// The path of a binary of this workspace, built once per test process
/// (`cargo build --bin ...`, a no-op when it is up to date) so that tests
/// never run a stale binary.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        // Cargo gives the test process variables of its own (e.g.
        // CARGO_MANIFEST_DIR). Some build scripts (ring's) rerun when one of
        // them changes, so passing them on would rebuild half the dependency
        // tree here, and again at the next `cargo test`.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                ]
                .contains(&key.as_ref())
            {
                command.env_remove(key.as_ref());
            }
        }
        let status = command
            .current_dir(&root)
            .args([
                "build",
                "--quiet",
                "--bin",
                "pulp-scheduler",
                "--bin",
                "pulp-worker",
                "--bin",
                "pulpctl",
            ])
            // The binaries must come from the test's own profile directory.
            .args(if cfg!(debug_assertions) {
                &[][..]
            } else {
                &["--release"][..]
            })
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of the binaries failed");
        // Test executables live in target/<profile>/deps.
        let exe = std::env::current_exe().expect("test executable");
        exe.parent()
            .and_then(|deps| deps.parent())
            .expect("target dir")
            .to_path_buf()
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A process of ours (scheduler or worker), killed when dropped.
pub struct Process {
    child: std::process::Child,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    /// The URL of its gRPC health server, for a worker started with
    /// [`start_worker_process_at`].
    pub health_url: Option<String>,
}

impl Process {
    /// Starts binary `name` with `args`, logging to `log`.
    pub fn start(name: &str, args: &[String], log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).expect("log file");
        let child = std::process::Command::new(binary(name))
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Process {
            child,
            log,
            health_url: None,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`KILL`, `TERM`, `STOP`, `CONT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// kill -9 and reap.
    pub fn kill9(mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            // Exit of a child is not awaitable with std::process; a short
            // reap interval bounded by the timeout.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits, up to `timeout`, until the log contains `needle`; returns the
    /// log then, or `None` (for what a process reports only in its log).
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let log = self.log_text();
            if log.contains(needle) {
                return Some(log);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            // A file is not awaitable; a short re-read interval bounded by
            // the timeout, as in `wait_exit`.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestApp {
    /// Starts a `pulp-worker` process connected to this scheduler, and
    /// waits until its health endpoint reports SERVING.
    pub async fn start_worker_process(&self, name: &str, slots: u32, extra: &[&str]) -> Process {
        start_worker_process_at(&self.url(), self.work_root.path(), name, slots, extra).await
    }
}

/// Starts a `pulp-worker` process named `name` connected to the scheduler
/// at `scheduler_url`, with its working directory and log (`<name>.log`)
/// under `work_root`, and waits until its health endpoint (recorded in
/// [`Process::health_url`]) reports SERVING.
pub async fn start_worker_process_at(
    scheduler_url: &str,
    work_root: &std::path::Path,
    name: &str,
    slots: u32,
    extra: &[&str],
) -> Process {
    let health_url = format!("http://127.0.0.1:{}", free_port());
    let mut args: Vec<String> = [
        "--scheduler",
        scheduler_url,
        "--name",
        name,
        "--slots",
        &slots.to_string(),
        "--working-dir",
        work_root.join(name).to_str().expect("utf-8 path"),
        "--health-listen",
        health_url.trim_start_matches("http://"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut process = Process::start("pulp-worker", &args, work_root.join(format!("{name}.log")));
    wait_for_health(
        connect_eventually(&health_url).await,
        tonic_health::pb::health_check_response::ServingStatus::Serving,
    )
    .await;
    process.health_url = Some(health_url);
    process
}

/// Starts a `pulp-scheduler` process on `port` and `database_url` (worker
/// TTL 10 s, then the `extra` arguments), logging to `dir/log`, and waits
/// until it is SERVING.
pub async fn start_scheduler_process(
    port: u16,
    database_url: &str,
    dir: &std::path::Path,
    log: &str,
    extra: &[&str],
) -> Process {
    let mut args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--database-url",
        database_url,
        "--worker-ttl",
        "10",
        "--data-dir",
        dir.to_str().expect("utf-8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut process = Process::start("pulp-scheduler", &args, dir.join(log));
    let url = format!("http://127.0.0.1:{port}");
    // Fail at once, with its log, if the process ends before it listens
    // (a port taken in the meantime, a database it cannot open).
    let channel = tokio::select! {
        channel = connect_eventually(&url) => channel,
        status = process.wait_exit(WAIT) => panic!(
            "pulp-scheduler did not listen on {url} (exit status: {status:?}); its log:\n{}",
            process.log_text()
        ),
    };
    wait_for_health(
        channel,
        tonic_health::pb::health_check_response::ServingStatus::Serving,
    )
    .await;
    process
}

/// What tests that run our binaries as processes share: a fresh database,
/// a directory for logs, data and working directories, and a free port for
/// the scheduler (the same one across its restarts).
pub struct ProcessEnv {
    /// The database.
    pub db: TestDb,
    /// The directory.
    pub dir: tempfile::TempDir,
    /// The scheduler's port.
    pub port: u16,
}

impl ProcessEnv {
    /// A fresh environment on `backend`; `None` when the backend is
    /// unavailable outside CI.
    pub async fn new(backend: Backend) -> Option<ProcessEnv> {
        init_logs();
        let db = TestDb::new(backend).await?;
        Some(ProcessEnv {
            db,
            dir: tempfile::tempdir().expect("temporary directory"),
            port: free_port(),
        })
    }

    /// The scheduler's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts a scheduler process on the port and database, logging to
    /// `log` in the directory ([`start_scheduler_process`]).
    pub async fn start_scheduler(&self, log: &str, extra: &[&str]) -> Process {
        start_scheduler_process(self.port, self.db.url(), self.dir.path(), log, extra).await
    }

    /// Starts a worker process connected to the scheduler
    /// ([`start_worker_process_at`]).
    pub async fn start_worker(&self, name: &str, slots: u32, extra: &[&str]) -> Process {
        start_worker_process_at(&self.url(), self.dir.path(), name, slots, extra).await
    }
}

/// A `grpc.health.v1.Health/Watch` stream kept open across status changes,
/// so that a test sees every change from the moment it opened it (a fresh
/// Watch would only report the status of the moment).
pub struct HealthWatch {
    stream: tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
}

impl HealthWatch {
    /// Opens a Watch of the overall status (`""`) on `channel`.
    pub async fn open(channel: Channel) -> HealthWatch {
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let stream = health
            .watch(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health watch")
            .into_inner();
        HealthWatch { stream }
    }

    /// Waits, up to [`WAIT`], for the next update reporting `status`.
    pub async fn wait_for(
        &mut self,
        status: tonic_health::pb::health_check_response::ServingStatus,
    ) {
        tokio::time::timeout(WAIT, async {
            while let Some(update) = self.stream.message().await.expect("health stream") {
                if update.status == status as i32 {
                    return;
                }
            }
            panic!("health stream ended before {status:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("health never became {status:?}"));
    }
}

/// Awaits each call of a table of refusals: `(case, call, code, says)`.
/// Each must fail with `code` and a message that contains `says`.
pub async fn assert_refusals<T, F>(cases: Vec<(&str, F, tonic::Code, &str)>)
where
    T: std::fmt::Debug,
    F: std::future::Future<Output = Result<T, tonic::Status>>,
{
    for (case, call, code, says) in cases {
        let err = call.await.expect_err(case);
        assert_eq!(err.code(), code, "{case}: {err}");
        assert!(err.message().contains(says), "{case}: {}", err.message());
    }
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A channel to `url`, retrying until the server listens (a process that
/// was just started), up to [`WAIT`].
pub async fn connect_eventually(url: &str) -> Channel {
    let endpoint = Endpoint::from_shared(url.to_owned()).expect("endpoint");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return channel,
            Err(err) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{url} never listened: {err}"
                );
                // Nothing to subscribe to before the process listens.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Where the PostgreSQL server binaries of [`PostgresCluster`] live.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A throwaway PostgreSQL cluster of the test's own (`initdb` into a
/// temporary directory, trust authentication, a free port), started and
/// stopped with `pg_ctl` as the `postgres` user when running as root, and
/// removed when dropped. Tests use it to take the database away from a
/// running scheduler and give it back.
pub struct PostgresCluster {
    dir: PathBuf,
    port: u16,
}

fn as_postgres(args: &[&str]) -> std::process::Output {
    use std::process::Command;
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let output = if is_root {
        Command::new("runuser")
            .arg("-u")
            .arg("postgres")
            .arg("--")
            .args(args)
            .output()
    } else {
        Command::new(args[0]).args(&args[1..]).output()
    };
    output.expect("run a PostgreSQL tool")
}

impl PostgresCluster {
    /// Creates and starts a cluster; `None` (the test is skipped with a
    /// message) when the PostgreSQL binaries are missing outside CI.
    pub fn start() -> Option<PostgresCluster> {
        if !std::path::Path::new(PG_BIN).join("initdb").exists() {
            assert!(!in_ci(), "PostgreSQL binaries are required under CI");
            eprintln!("skipped: no PostgreSQL binaries in {PG_BIN}");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("pulp-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cluster directory");
        let _ = std::process::Command::new("chown")
            .arg("postgres")
            .arg(&dir)
            .status();
        let port = free_port();
        let data = dir.join("data");
        let initdb = format!("{PG_BIN}/initdb");
        let out = as_postgres(&[
            &initdb,
            "-D",
            data.to_str().expect("utf-8 path"),
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = PostgresCluster { dir, port };
        cluster.start_again();
        Some(cluster)
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) {
        let data = self.dir.join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let pg_ctl = format!("{PG_BIN}/pg_ctl");
        let log = self.dir.join("log");
        let out = as_postgres(&[
            &pg_ctl,
            "-D",
            data.to_str().expect("utf-8 path"),
            "-o",
            &options,
            "-l",
            log.to_str().expect("utf-8 path"),
            "-w",
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once (`pg_ctl -m immediate`: no clean shutdown,
    /// as if it crashed) and waits until it is gone.
    pub fn stop_immediate(&self) {
        let pg_ctl = format!("{PG_BIN}/pg_ctl");
        let data = self.dir.join("data");
        let out = as_postgres(&[
            &pg_ctl,
            "-D",
            data.to_str().expect("utf-8 path"),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let pg_ctl = format!("{PG_BIN}/pg_ctl");
        let data = self.dir.join("data");
        let _ = as_postgres(&[
            &pg_ctl,
            "-D",
            data.to_str().unwrap_or_default(),
            "-m",
            "immediate",
            "stop",
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
