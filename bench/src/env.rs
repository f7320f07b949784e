//! The system under test: a fresh database, the real `pulp-scheduler`
//! binary as a child process (so that its own peak memory can be read from
//! `/proc`), in-process workers, and gRPC clients.

use anyhow::Context;
use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::{
    task_groups_client::TaskGroupsClient, tasks_client::TasksClient,
};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// Where fresh databases come from.
#[derive(Debug, Clone)]
pub enum Databases {
    /// A new SQLite file per scenario run, in this directory.
    Sqlite(PathBuf),
    /// A new database per scenario run on this PostgreSQL server (the URL
    /// names any database the user may connect to).
    Postgres(String),
}

impl Databases {
    /// From `--database-url`: a `sqlite:` URL (its directory is used) or a
    /// `postgres:` server URL.
    pub fn from_url(url: Option<&str>, scratch: &Path) -> anyhow::Result<Databases> {
        match url {
            None => Ok(Databases::Sqlite(scratch.to_path_buf())),
            Some(url) if pulp_common::db::is_sqlite_url(url) => {
                let file = pulp_common::db::sqlite_file(url).context("a SQLite URL with a file")?;
                let dir = file
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| scratch.to_path_buf());
                Ok(Databases::Sqlite(dir))
            }
            Some(url) => Ok(Databases::Postgres(url.to_owned())),
        }
    }

    /// "sqlite" or "postgres".
    pub fn kind(&self) -> &'static str {
        match self {
            Databases::Sqlite(_) => "sqlite",
            Databases::Postgres(_) => "postgres",
        }
    }

    /// A new, empty database; its URL.
    pub async fn fresh(&self) -> anyhow::Result<String> {
        let name = format!("pulp_bench_{}", uuid::Uuid::new_v4().simple());
        match self {
            Databases::Sqlite(dir) => Ok(format!(
                "sqlite://{}?mode=rwc",
                dir.join(format!("{name}.sqlite")).display()
            )),
            Databases::Postgres(server) => {
                Ok(pulp_common::db::throwaway::create(server, "pulp_bench").await?)
            }
        }
    }

    /// Removes a database made by [`fresh`](Self::fresh).
    pub async fn drop_database(&self, url: &str) {
        match self {
            Databases::Sqlite(_) => {
                if let Some(file) = pulp_common::db::sqlite_file(url) {
                    for suffix in ["", "-wal", "-shm", ".scheduler.lock"] {
                        let mut path = file.clone().into_os_string();
                        path.push(suffix);
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
            Databases::Postgres(server) => {
                let _ = pulp_common::db::throwaway::drop(server, url).await;
            }
        }
    }
}

/// A running scheduler with workers, on a fresh database.
pub struct System {
    /// The database URL.
    pub database_url: String,
    scheduler: Child,
    channel: Channel,
    workers: Vec<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    work_dir: tempfile::TempDir,
    url: String,
}

impl System {
    /// Starts the scheduler binary (found next to this one) on `database_url`.
    pub async fn start(database_url: String) -> anyhow::Result<System> {
        let exe = std::env::current_exe()?.with_file_name("pulp-scheduler");
        anyhow::ensure!(
            exe.exists(),
            "{} not found: build it (cargo build --release --bins)",
            exe.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        // PULP_BENCH_SCHEDULER_PREFIX runs the scheduler under a profiler,
        // e.g. "valgrind --tool=callgrind".
        let prefix = std::env::var("PULP_BENCH_SCHEDULER_PREFIX").unwrap_or_default();
        let mut command = prefix.split_whitespace().map(std::ffi::OsString::from);
        let mut scheduler = match command.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(command).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let scheduler = scheduler
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                &database_url,
            ])
            // The scheduler logs warnings only, unless
            // PULP_BENCH_SCHEDULER_LOG (a RUST_LOG filter) asks for more.
            .env(
                "RUST_LOG",
                std::env::var("PULP_BENCH_SCHEDULER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", exe.display()))?;
        let endpoint = Endpoint::from_str(&url)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let channel = loop {
            match endpoint.connect().await {
                Ok(channel) => break channel,
                Err(err) if tokio::time::Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => return Err(err).context("the scheduler never listened"),
            }
        };
        Ok(System {
            database_url,
            scheduler,
            channel,
            workers: Vec::new(),
            work_dir: tempfile::tempdir()?,
            url,
        })
    }

    /// Starts `count` in-process workers with `slots` slots each and waits
    /// until the scheduler lists them online.
    pub async fn start_workers(&mut self, count: usize, slots: u32) -> anyhow::Result<()> {
        for i in 0..count {
            let name = format!("bench-{i}-{}", uuid::Uuid::new_v4().simple());
            let mut config =
                pulp_worker::Config::for_tests(self.url.clone(), self.work_dir.path().join(&name));
            config.name = name;
            config.slots = slots;
            let stop = CancellationToken::new();
            let handle = tokio::spawn(pulp_worker::run_with(
                config,
                pulp_worker::TaskRegistry::builtin(),
                None,
                stop.clone(),
            ));
            self.workers.push((stop, handle));
        }
        let mut workers = pulp_common::proto::tasking::v1::workers_client::WorkersClient::new(
            self.channel.clone(),
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let online = workers
                .list_workers(pb::ListWorkersRequest {})
                .await?
                .into_inner()
                .workers
                .iter()
                .filter(|w| w.state == pb::WorkerState::Online as i32)
                .count();
            if online >= self.workers.len() {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "workers never came online"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A Tasks client on its own connection (HTTP/2 multiplexes, but one
    /// connection per simulated client is closer to real clients).
    pub async fn tasks(&self) -> anyhow::Result<TasksClient<Channel>> {
        Ok(TasksClient::new(
            Endpoint::from_str(&self.url)?.connect().await?,
        ))
    }

    /// A TaskGroups client.
    pub fn groups(&self) -> TaskGroupsClient<Channel> {
        TaskGroupsClient::new(self.channel.clone())
    }

    /// CPU seconds (user + system) the scheduler process used so far.
    pub fn scheduler_cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.scheduler.id()))
    }

    /// The scheduler's peak resident memory so far, in bytes.
    pub fn scheduler_peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.scheduler.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Stops workers and the scheduler.
    pub async fn stop(mut self) {
        for (stop, _) in &self.workers {
            stop.cancel();
        }
        for (_, handle) in self.workers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
        // SIGTERM first, so that a profiler wrapping it writes its output.
        let _ = Command::new("kill")
            .args(["-TERM", &self.scheduler.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.scheduler.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
    }
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
    }
}

/// CPU seconds (user + system) this process (clients and in-process
/// workers) used so far.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds("/proc/self/stat")
}

/// utime + stime of a `/proc/PID/stat` file, in seconds (clock ticks of
/// 1/100 s, Linux's USER_HZ).
fn cpu_seconds(stat: &str) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}
