//! Scheduler settings: flags, each with a `PULP_*` environment variable and
//! a documented default.

use pulp_common::telemetry::LogFormat;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default of `--max-upload-bytes`: 10 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// `pulp-scheduler` settings.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "pulp-scheduler",
    version,
    about = "The Pulp task scheduler: a gRPC API over tasks that reserve resources"
)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "PULP_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Directory for local state: the default SQLite database, and the
    /// quick-start workers' working directories.
    #[arg(long, env = "PULP_DATA_DIR", default_value = ".pulp")]
    pub data_dir: PathBuf,

    /// Database URL: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.
    /// Default: the SQLite file `<data-dir>/pulp.sqlite`, created if missing.
    #[arg(long, env = "PULP_DATABASE_URL")]
    pub database_url: Option<String>,

    /// `HOST:PORT` other scheduler replicas reach this one on (PostgreSQL
    /// with several replicas; on Kubernetes, the pod IP and port). Default:
    /// the listen address, or this host's name when listening on all
    /// interfaces.
    #[arg(long, env = "PULP_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,

    /// Seconds a worker may go without a heartbeat before it is lost and
    /// its running tasks fail ("worker lost").
    #[arg(long, env = "PULP_WORKER_TTL", default_value_t = 30.0)]
    pub worker_ttl: f64,

    /// Most database connections in the pool.
    #[arg(long, env = "PULP_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Log format: `pretty` or `json`.
    #[arg(long, env = "PULP_LOG_FORMAT", default_value = "pretty")]
    pub log_format: LogFormat,

    /// Delete tasks in final states this many days after they finished
    /// (checked at start, then hourly). Default: keep them until `PurgeTasks`
    /// is called.
    #[arg(long, env = "PULP_TASK_RETENTION_DAYS")]
    pub task_retention_days: Option<f64>,

    /// The artifact storage directory, shared with the workers (on
    /// Kubernetes a ReadWriteMany volume): files live at
    /// `<DIR>/artifacts/<sha256[0..2]>/<sha256>`, uploads in progress under
    /// `<DIR>/tmp/`.
    #[arg(long, env = "PULP_STORAGE_DIR", default_value = ".pulp/storage")]
    pub storage_dir: PathBuf,

    /// Largest artifact `UploadArtifact` accepts, in bytes (default 10 GiB).
    #[arg(long, env = "PULP_MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,

    /// Quick start: also launch this many `pulp-worker` processes (found
    /// next to this binary) connected to this scheduler, and stop them on
    /// exit.
    #[arg(long, env = "PULP_SPAWN_WORKERS", default_value_t = 0)]
    pub spawn_workers: u32,
}

impl Config {
    /// Settings for a scheduler on `database_url`, everything else default.
    pub fn new(database_url: impl Into<String>) -> Self {
        Config {
            listen: "127.0.0.1:0".parse().expect("a valid address"),
            data_dir: PathBuf::from(".pulp"),
            database_url: Some(database_url.into()),
            worker_ttl: 30.0,
            db_max_connections: 16,
            log_format: LogFormat::Pretty,
            spawn_workers: 0,
            task_retention_days: None,
            advertise_address: None,
            storage_dir: PathBuf::from(".pulp/storage"),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        }
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("pulp.sqlite").display()
            )
        })
    }

    /// The address other replicas reach this one on.
    pub fn advertise_address(&self, bound: SocketAddr) -> String {
        if let Some(address) = &self.advertise_address {
            return address.clone();
        }
        if bound.ip().is_unspecified() {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}:{}", bound.port())
        } else {
            bound.to_string()
        }
    }

    /// The task retention, validated.
    pub fn task_retention(&self) -> anyhow::Result<Option<Duration>> {
        match self.task_retention_days {
            None => Ok(None),
            Some(days) if days.is_finite() && days > 0.0 && days <= 36_500.0 => {
                Ok(Some(Duration::from_secs_f64(days * 86_400.0)))
            }
            Some(days) => anyhow::bail!(
                "--task-retention-days {days} is out of range: give more than 0 and at most 36500"
            ),
        }
    }

    /// The worker TTL, validated.
    pub fn worker_ttl(&self) -> anyhow::Result<Duration> {
        if !(self.worker_ttl.is_finite() && self.worker_ttl >= 0.1 && self.worker_ttl <= 86_400.0) {
            anyhow::bail!(
                "--worker-ttl {} is out of range: give 0.1 to 86400 seconds",
                self.worker_ttl
            );
        }
        Ok(Duration::from_secs_f64(self.worker_ttl))
    }
}
