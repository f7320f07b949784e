//! The Pulp worker: connects to a `pulp-scheduler`, receives task
//! assignments over one bidirectional gRPC stream, and runs each task in its
//! own working directory.
//!
//! # Layout
//! - [`config`]: flags and `PULP_*` variables ([`Config`]).
//! - [`registry`]: task name -> implementation ([`TaskRegistry`]); its names
//!   go into `Hello.funcs`.
//! - [`tasks`]: the implementations that ship (`noop`, `sleep`, `fail`,
//!   `panic`, and with `--database-url` the content tasks `add_and_remove`,
//!   `publish`, `fs_publication_export` and `fs_repo_version_export`).
//! - [`layout`]: the safety checks and file placement of exports (allowed
//!   export paths, empty target, relative paths, write/hardlink/symlink).
//! - [`context`]: what a running task gets ([`TaskContext`]).
//! - [`outcome`]: a task's error type ([`TaskError`]) and how a run ended.
//! - [`progress`]: progress reports from tasks, coalesced per code.
//! - [`workdir`]: `<root>/<task-id>/<random>/` directories and the stale
//!   cleanup at start.
//! - `runner`: runs one assignment: working directory, spawn, cancellation,
//!   timeout, abort after the grace, clean-up.
//! - `session`: one `Workers.Connect` stream: Hello, Welcome, send, receive.
//! - `connection`: the event loop that owns the worker's state across
//!   sessions: assignments, results until acknowledged, reconnects, drain.
//! - `results`, `backoff`: unacknowledged results and retry delays.
//! - [`health`]: `grpc.health.v1`, SERVING while connected and not draining.
//! - [`metrics`]: task start delay, durations and outcomes, connection
//!   state, served at `--metrics-listen`.
//! - `tls`: the TLS settings of the connection to the scheduler.
//! - [`error`]: the worker's own errors ([`WorkerError`]).
//!
//! # Data flow
//! ```text
//! scheduler --Assignment--> session --> connection --Job--> runner --> task(TaskContext)
//!                                          ^    |                        | progress
//!                                          |    +------ ProgressHub <----+
//! scheduler <--TaskFinished/Progress-- connection <--Finished-- runner
//! scheduler --ResultAck--> connection (forget, or keep and re-send)
//! ```
//!
//! [`run`] is what the binary calls; [`run_with`] lets tests add tasks and
//! bind the health server to port 0.

pub mod config;
pub mod context;
pub mod error;
pub mod health;
pub mod layout;
pub mod metrics;
pub mod outcome;
pub mod progress;
pub mod registry;
pub mod tasks;
pub mod workdir;

mod backoff;
mod connection;
mod results;
mod runner;
mod session;
mod tls;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use pulp_common::names::{TaskName, WorkerName};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{info, warn};

pub use config::{Config, HealthListen};
pub use context::TaskContext;
pub use error::WorkerError;
pub use outcome::TaskError;
pub use progress::ProgressReport;
pub use registry::{TaskFn, TaskRegistry, TaskResult};

use connection::{Connection, Setup};
use runner::RunnerSettings;
use workdir::WorkingDirs;

/// How long a TCP connection to the scheduler may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 pings detect a dead connection to the scheduler within about
/// twice this.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Runs the worker with the shipped tasks until `shutdown` fires and the
/// drain is over: the built-in ones, and the content tasks when
/// `config.database_url` is set. The health server listens on
/// `config.health_listen`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let registry = if config.database_url.is_some() {
        TaskRegistry::with_content()
    } else {
        TaskRegistry::builtin()
    };
    run_with(config, registry, None, shutdown).await
}

/// Runs the worker with the tasks of `registry`. When `health_listener` is
/// given the health server uses it instead of `config.health_listen`.
/// Returns once `shutdown` has fired and running tasks finished (or were
/// stopped after the shutdown grace) and their results were acknowledged
/// (or 5 s passed). Each call is its own worker instance (its own
/// `Hello.instance_id`).
pub async fn run_with(
    config: Config,
    registry: TaskRegistry,
    health_listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut setup = validate(&config, &registry)?;
    if let Some(url) = &config.database_url {
        let settings = pulp_common::db::PoolSettings {
            max_connections: setup.slots.clamp(2, 32),
            ..Default::default()
        };
        let database = pulp_common::db::connect(url, &settings)
            .await
            .map_err(WorkerError::Database)?;
        Arc::make_mut(&mut setup.runner).database = Some(database);
    }
    let working_dirs = setup.runner.working_dirs.clone();
    let root = working_dirs.root().to_owned();
    let _root_lock = workdir::lock_root(&root)?;
    let cleared = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || workdir::clear_stale(&root))
            .await
            .context("clear stale working directories")?
    }
    .map_err(|source| WorkerError::WorkingDir {
        path: root.clone(),
        source,
    })?;
    if let Err(err) = working_dirs.prepare() {
        warn!(error = %err, "working directories will not be reused");
    }

    let listener = match (health_listener, config.health_listen) {
        (Some(listener), _) => Some(listener),
        (None, HealthListen::Disabled) => None,
        (None, HealthListen::Addr(addr)) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| WorkerError::HealthBind { addr, source })?,
        ),
    };
    let (health, health_server) = health::start(listener).await;
    let metrics_stop = CancellationToken::new();
    if let Some(address) = config.metrics_listen {
        pulp_common::metrics::start(address, metrics_stop.clone().cancelled_owned())
            .await
            .map_err(anyhow::Error::msg)?;
        metrics::describe();
    }

    info!(
        worker = %setup.name,
        slots = setup.slots,
        funcs = ?registry.names().collect::<Vec<_>>(),
        scheduler = %config.scheduler,
        working_dir = %root.display(),
        stale_dirs_removed = cleared,
        "worker starting"
    );
    Connection::new(setup, registry, health).run(shutdown).await;
    if let Err(err) = tokio::task::spawn_blocking(move || working_dirs.clear_spares())
        .await
        .map_err(io::Error::other)
        .and_then(|cleared| cleared)
    {
        warn!(error = %err, "could not remove the spare working directories");
    }
    health_server.shutdown().await;
    metrics_stop.cancel();
    info!("worker stopped");
    Ok(())
}

/// Checks the configuration once and turns it into the loop's settings.
fn validate(config: &Config, registry: &TaskRegistry) -> Result<Setup, WorkerError> {
    let name =
        WorkerName::parse(&config.name).map_err(|e| WorkerError::Config(format!("--name: {e}")))?;
    if !(1..=config::MAX_SLOTS).contains(&config.slots) {
        return Err(WorkerError::Config(format!(
            "--slots is {}; use 1 to {}",
            config.slots,
            config::MAX_SLOTS
        )));
    }
    if registry.is_empty() {
        return Err(WorkerError::Config("no task is registered".into()));
    }
    if config.database_url.is_none()
        && let Some(func) = registry
            .names()
            .find(|f| pulp_common::catalog::CONTENT_TASKS.contains(f))
    {
        return Err(WorkerError::Config(format!(
            "task {func:?} needs the database: give --database-url"
        )));
    }
    if let Some(relative) = config
        .allowed_export_paths
        .iter()
        .find(|p| !p.is_absolute())
    {
        return Err(WorkerError::Config(format!(
            "--allowed-export-path {} is not absolute",
            relative.display()
        )));
    }
    for func in registry.names() {
        TaskName::parse(func)
            .map_err(|e| WorkerError::Config(format!("registered task {func:?}: {e}")))?;
    }
    let tls = tls::load(config)?;
    let endpoints = config
        .scheduler
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| scheduler_endpoint(url, tls.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err(WorkerError::Config(
            "--scheduler is empty: give the scheduler's URL".into(),
        ));
    }
    let working_root =
        std::path::absolute(&config.working_dir).map_err(|source| WorkerError::WorkingDir {
            path: config.working_dir.clone(),
            source,
        })?;
    Ok(Setup {
        name: name.as_str().to_owned(),
        slots: config.slots,
        instance_id: uuid::Uuid::new_v4(),
        endpoints,
        shutdown_grace: config.shutdown_grace,
        runner: Arc::new(RunnerSettings {
            working_dirs: Arc::new(WorkingDirs::new(working_root, config.slots as usize)),
            cancel_grace: config.cancel_grace,
            default_timeout: config.default_timeout,
            worker: Arc::from(name.as_str()),
            database: None,
            storage: pulp_common::content::storage::Storage::new(&config.storage_dir),
            allowed_export_paths: Arc::from(config.allowed_export_paths.clone()),
        }),
    })
}

/// One scheduler URL as a configured endpoint: `http://`, or `https://`
/// with the TLS settings of `--tls-ca` (and the client certificate).
fn scheduler_endpoint(
    url: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<Endpoint, WorkerError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| WorkerError::Config(format!("--scheduler {url:?} is not a URL: {e}")))?;
    match (endpoint.uri().scheme_str(), tls) {
        (Some("http"), None) => {}
        (Some("http"), Some(_)) => {
            return Err(WorkerError::Config(format!(
                "--scheduler {url:?}: TLS flags are given, so use an https:// URL"
            )));
        }
        (Some("https"), Some(tls)) => {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| WorkerError::Config(format!("--scheduler {url:?}: TLS: {e}")))?;
        }
        (Some("https"), None) => {
            return Err(WorkerError::Config(format!(
                "--scheduler {url:?}: give --tls-ca, the CA that signed the scheduler's certificate"
            )));
        }
        _ => {
            return Err(WorkerError::Config(format!(
                "--scheduler {url:?}: use an http:// or https:// URL"
            )));
        }
    }
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_bad_settings() {
        let registry = TaskRegistry::builtin();
        let ok = Config::for_tests("http://127.0.0.1:1", "/tmp/x");
        assert!(validate(&ok, &registry).is_ok());

        let mut bad = ok.clone();
        bad.name = "a b".into();
        assert!(validate(&bad, &registry).is_err());
        let mut bad = ok.clone();
        bad.slots = 0;
        assert!(validate(&bad, &registry).is_err());
        let mut bad = ok.clone();
        bad.scheduler = "https://x:1".into();
        assert!(validate(&bad, &registry).is_err());
        let mut bad = ok.clone();
        bad.scheduler = "not a url".into();
        assert!(validate(&bad, &registry).is_err());
        assert!(validate(&ok, &TaskRegistry::new()).is_err());
        let mut bad = ok.clone();
        bad.allowed_export_paths = vec!["relative/exports".into()];
        let err = validate(&bad, &registry).unwrap_err();
        assert!(err.to_string().contains("not absolute"), "{err}");
        let mut registry = TaskRegistry::new();
        registry.register("bad name", |_| async { Ok(serde_json::Value::Null) });
        assert!(validate(&ok, &registry).is_err());
    }
}
