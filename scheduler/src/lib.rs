//! The Pulp task scheduler: tasks that reserve resources, assigned to
//! workers over gRPC streams.
//!
//! # Layout
//! - [`config`]: flags, `PULP_*` variables and the TOML file.
//! - [`tls`], [`auth`]: optional TLS, worker client certificates and client
//!   bearer tokens, checked at the gRPC edge.
//! - [`metrics`]: the Prometheus metrics the engine and the API record.
//! - [`api`]: the gRPC services. Requests are validated into domain types
//!   ([`task`]) at this edge; reads go to [`store`], writes to the engine.
//! - [`engine`]: the single owner of scheduling state. It applies commands in
//!   rounds, one transaction each (group commit), keeps the per-resource
//!   queues of [`reservations`], pushes assignments down worker streams, and
//!   fails the tasks of workers whose lease lapses.
//! - [`cluster`]: on PostgreSQL, the election of the one replica that runs
//!   the engine; the others forward engine-bound calls to it.
//! - [`store`]: SQL for tasks, groups and workers (SQLite or PostgreSQL).
//!   The content domain's SQL is shared with the workers and lives in
//!   `pulp_common::content`; `api::content` serves it.
//! - [`health`]: `grpc.health.v1`, following the database's reachability.
//! - [`quickstart`]: worker processes for the one-command quick start.
//! - [`retention`]: optional hourly purge of old finished tasks.
//! - [`single`]: the lock that keeps a SQLite file to one scheduler.
//!
//! # Data flow
//! `Dispatch` -> validate -> engine round: INSERT, add to reservations, find
//! runnable tasks, claim them for free worker slots (conditional UPDATE) ->
//! COMMIT -> reply to the client, push `Assignment`s. A worker's
//! `TaskFinished` -> engine round: conditional UPDATE fenced by worker and
//! attempt, release reservations, assign what became runnable -> COMMIT ->
//! `ResultAck`, next assignments. `WatchTask` follows the engine's change
//! feed and re-reads the task from the database.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod health;
pub mod metrics;
pub mod quickstart;
pub mod reservations;
pub mod retention;
pub mod single;
pub mod store;
pub mod task;
pub mod tls;

pub use config::Config;

use anyhow::Context;
use api::content::{
    artifacts::ArtifactsService,
    contents::ContentsService,
    exporters::ExportersService,
    publications::PublicationsService,
    repositories::{MODIFY_MESSAGE_LIMIT, RepositoriesService},
};
use api::{task_groups::TaskGroupsService, tasks::TasksService, workers::WorkersService};
use cluster::{Campaign, Cluster};
use engine::{Engine, EngineSettings};
use pulp_common::content::storage::Storage;
use pulp_common::proto::content::v1::{
    artifacts_server::ArtifactsServer, contents_server::ContentsServer,
    exporters_server::ExportersServer, publications_server::PublicationsServer,
    repositories_server::RepositoriesServer,
};
use pulp_common::proto::tasking::v1::{
    task_groups_server::TaskGroupsServer, tasks_server::TasksServer, workers_server::WorkersServer,
};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::info;

/// How long graceful shutdown waits for open connections.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Runs the scheduler on a bound `listener` until `shutdown` fires: connects
/// to and migrates the database, starts the engine and serves gRPC.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let worker_ttl = config.worker_ttl()?;
    let retention = config.task_retention()?;
    let url = config.database_url();
    let tls = tls::Tls::load(&config)?;
    let tokens = config
        .client_tokens_file
        .as_deref()
        .map(auth::read_tokens_file)
        .transpose()?;
    let auth = auth::Auth::new(tokens, config.worker_ca.is_some());
    if tls.server.is_some() && tls.relay.is_none() && !pulp_common::db::is_sqlite_url(&url) {
        anyhow::bail!(
            "TLS on PostgreSQL: give --peer-ca (or --worker-ca), the CA that signed the replicas' --tls-cert, so that replicas can relay calls to the leader"
        );
    }
    if config.client_tokens_file.is_some() && config.worker_ca.is_none() {
        tracing::warn!(
            "client tokens are required but workers are not authenticated: give --worker-ca to require worker client certificates"
        );
    }
    let _single = pulp_common::db::sqlite_file(&url)
        .map(|file| single::lock(&file))
        .transpose()?;
    let settings = pulp_common::db::PoolSettings {
        max_connections: config.db_max_connections,
        ..Default::default()
    };
    let db = pulp_common::db::connect(&url, &settings)
        .await
        .with_context(|| format!("open the database {}", redact(&url)))?;
    pulp_common::db::migrate(&db)
        .await
        .context("migrate the database")?;
    if let Some(address) = config.metrics_listen {
        pulp_common::metrics::start(address, shutdown.child_token().cancelled_owned())
            .await
            .map_err(anyhow::Error::msg)?;
        metrics::describe();
        tokio::spawn(metrics::sample_pool(db.clone(), shutdown.child_token()));
    }

    let address = listener.local_addr()?;
    let engine_settings = EngineSettings {
        worker_ttl,
        ..Default::default()
    };
    // Stopping the engine (or the campaign) closes the worker streams, which
    // lets the server's graceful shutdown complete.
    let engine_stop = CancellationToken::new();
    let (cluster, engine_task) = if pulp_common::db::is_sqlite_url(&url) {
        let (engine, task) = Engine::spawn(db.clone(), engine_settings, engine_stop.clone());
        (Cluster::standalone(engine, db.clone()), task)
    } else {
        let campaign = Campaign {
            database_url: url.clone(),
            advertise: config.advertise_address(address),
            engine: engine_settings,
            relay_tls: tls.relay.clone(),
        };
        cluster::elect(campaign, db.clone(), engine_stop.clone())
    };

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::set_all(&reporter, ServingStatus::Serving).await;
    let monitor = tokio::spawn(health::monitor(
        db.clone(),
        reporter,
        shutdown.child_token(),
    ));
    if let Some(retention) = retention {
        tokio::spawn(retention::run(
            db.clone(),
            retention,
            shutdown.child_token(),
        ));
    }
    let probes = match config.health_listen {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("bind --health-listen {address}"))?;
            info!(address = %listener.local_addr()?, "serving plain gRPC health checks for probes");
            let health_service = health_service.clone();
            let shutdown = shutdown.clone();
            Some(tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(health_service)
                    .serve_with_incoming_shutdown(incoming(listener), shutdown.cancelled_owned()),
            ))
        }
        None => None,
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pulp_common::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("build the reflection service")?;

    let mut workers = if config.spawn_workers > 0 {
        quickstart::spawn_workers(
            config.spawn_workers,
            address,
            &config.data_dir,
            &url,
            &config.storage_dir,
        )?
    } else {
        Vec::new()
    };
    info!(
        %address,
        database = %redact(&url),
        tls = tls.server.is_some(),
        worker_certificates = config.worker_ca.is_some(),
        client_tokens = config.client_tokens_file.is_some(),
        "scheduler serving"
    );

    // Streams (workers, watches) end when the engine stops, which lets the
    // server's graceful shutdown complete.
    let stop_streams = {
        let shutdown = shutdown.clone();
        let engine_stop = engine_stop.clone();
        async move {
            shutdown.cancelled().await;
            info!("shutting down: closing worker streams");
            engine_stop.cancel();
        }
    };
    let mut server = tonic::transport::Server::builder();
    if let Some(server_tls) = tls.server.clone() {
        server = server
            .tls_config(server_tls)
            .context("configure TLS from --tls-cert and --tls-key")?;
    }
    // Health and reflection take no credentials (probes); the Workers
    // service checks in its handlers, as its two calls differ.
    let check = auth.client_interceptor();
    let serve = server
        .add_service(health_service)
        .add_service(reflection)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ArtifactsServer::new(ArtifactsService::new(
                db.clone(),
                Storage::new(&config.storage_dir),
                config.max_upload_bytes,
            )),
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ContentsServer::new(ContentsService::new(db.clone())),
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            RepositoriesServer::new(RepositoriesService::new(cluster.clone()))
                .max_decoding_message_size(MODIFY_MESSAGE_LIMIT),
            check.clone(),
        ))
        .add_service(PublicationsServer::with_interceptor(
            PublicationsService::new(cluster.clone()),
            check.clone(),
        ))
        .add_service(ExportersServer::with_interceptor(
            ExportersService::new(cluster.clone()),
            check.clone(),
        ))
        .add_service(TasksServer::with_interceptor(
            TasksService::new(cluster.clone()),
            check.clone(),
        ))
        .add_service(TaskGroupsServer::with_interceptor(
            TaskGroupsService::new(cluster.clone()),
            check,
        ))
        .add_service(WorkersServer::new(
            WorkersService::new(cluster).with_auth(auth),
        ))
        .serve_with_incoming_shutdown(incoming(listener), stop_streams);
    // Relayed streams and watches may outlive the engine: bound the drain.
    let served = tokio::select! {
        served = serve => served,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_LIMIT).await;
        } => {
            tracing::warn!("connections still open {DRAIN_LIMIT:?} after shutdown began: closing them");
            Ok(())
        }
    };
    engine_stop.cancel();
    let _ = engine_task.await;
    let _ = monitor.await;
    if let Some(probes) = probes {
        let _ = probes.await;
    }
    for worker in &mut workers {
        let _ = worker.start_kill();
    }
    db.close().await.ok();
    info!("scheduler stopped");
    served.context("serve gRPC")
}

/// The URL without its password, for logs.
fn redact(url: &str) -> String {
    pulp_common::settings::redact_url(url)
}

/// Accepted connections with TCP_NODELAY: replies and pushed assignments
/// are small HTTP/2 frames that Nagle's algorithm would hold back until the
/// peer's delayed ACK (milliseconds of added latency per message).
fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}
