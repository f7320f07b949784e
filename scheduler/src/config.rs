//! Scheduler settings: flags, each with a `PULP_*` environment variable, a
//! key in the `--config` TOML file and a documented default (precedence:
//! flag, environment, file, default; see `pulp_common::settings`).
//! [`Config::validate`] checks them all at start.

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

    /// Address to serve Prometheus metrics on (`GET /metrics`), as IP:PORT.
    /// Default: no metrics endpoint.
    #[arg(long, env = "PULP_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Address of a second, plain-HTTP/2 gRPC server with only the health
    /// service, as IP:PORT: for Kubernetes `grpc:` probes, which cannot
    /// speak TLS. Default: none (health is served on `--listen` only).
    #[arg(long, env = "PULP_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,

    /// PEM certificate (chain) to serve gRPC over TLS with; needs
    /// `--tls-key`. Default: plain HTTP/2.
    #[arg(long, env = "PULP_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "PULP_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): workers must present a client certificate
    /// signed by one of them to open the worker stream. Needs TLS.
    #[arg(
        long,
        env = "PULP_WORKER_CA",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub worker_ca: Option<PathBuf>,

    /// File of bearer tokens clients must send (`authorization: Bearer
    /// <token>`), one per line; `#` comments and blank lines are ignored.
    /// Default: client calls need no token.
    #[arg(long, env = "PULP_CLIENT_TOKENS_FILE", value_name = "FILE")]
    pub client_tokens_file: Option<PathBuf>,

    /// PEM CA certificate(s) that signed the other replicas' `--tls-cert`,
    /// for calls relayed to the leader (PostgreSQL with TLS). Default: the
    /// `--worker-ca`.
    #[arg(long, env = "PULP_PEER_CA", value_name = "FILE")]
    pub peer_ca: Option<PathBuf>,

    /// The name the replicas' certificate is issued for (a DNS name in it),
    /// checked on relayed calls, which go to the leader's pod address.
    #[arg(
        long,
        env = "PULP_PEER_SERVER_NAME",
        value_name = "NAME",
        default_value = "pulp-scheduler"
    )]
    pub peer_server_name: String,

    /// A TOML file of settings (keys as the flags, `database_url` or
    /// `database-url`); flags and `PULP_*` variables override it.
    #[arg(long, env = "PULP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective settings (secrets masked) and exit.
    #[arg(long)]
    pub print_config: bool,
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
            metrics_listen: None,
            health_listen: None,
            tls_cert: None,
            tls_key: None,
            worker_ca: None,
            client_tokens_file: None,
            peer_ca: None,
            peer_server_name: "pulp-scheduler".into(),
            config: None,
            print_config: false,
        }
    }

    /// Checks every setting, reporting the first problem in terms of the
    /// flag to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.worker_ttl()?;
        self.task_retention()?;
        if self.db_max_connections == 0 {
            anyhow::bail!("--db-max-connections must be at least 1");
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            anyhow::bail!(
                "--database-url {}: use sqlite://PATH or postgres://USER@HOST:PORT/DB",
                pulp_common::settings::redact_url(&url)
            );
        }
        for (flag, file) in [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--worker-ca", &self.worker_ca),
            ("--client-tokens-file", &self.client_tokens_file),
            ("--peer-ca", &self.peer_ca),
        ] {
            if let Some(path) = file
                && !path.is_file()
            {
                anyhow::bail!("{flag} {}: no such file", path.display());
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            anyhow::bail!("--tls-cert and --tls-key go together: give both or neither");
        }
        if self.worker_ca.is_some() && self.tls_cert.is_none() {
            anyhow::bail!("--worker-ca needs TLS: give --tls-cert and --tls-key too");
        }
        Ok(())
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
