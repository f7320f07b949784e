//! gRPC health (`grpc.health.v1`): SERVING while the database answers,
//! NOT_SERVING while it does not. A monitor pings the database every second
//! and flips every service's status on a change.

use pulp_common::proto::tasking::v1::{
    task_groups_server::TaskGroupsServer, tasks_server::TasksServer, workers_server::WorkersServer,
};
use sea_orm::DatabaseConnection;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

/// How often the database is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

const SERVICES: [&str; 4] = [
    "",
    <TasksServer<crate::api::tasks::TasksService> as NamedService>::NAME,
    <TaskGroupsServer<crate::api::task_groups::TaskGroupsService> as NamedService>::NAME,
    <WorkersServer<crate::api::workers::WorkersService> as NamedService>::NAME,
];

/// Sets every service's status.
pub async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Pings the database until `shutdown`, keeping the health status current.
pub async fn monitor(
    db: DatabaseConnection,
    reporter: HealthReporter,
    shutdown: CancellationToken,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(PING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(3), db.ping()).await,
            Ok(Ok(()))
        );
        if ok != serving {
            serving = ok;
            if ok {
                info!("database reachable again: SERVING");
                set_all(&reporter, ServingStatus::Serving).await;
            } else {
                warn!("database unreachable: NOT_SERVING");
                set_all(&reporter, ServingStatus::NotServing).await;
            }
        }
    }
    set_all(&reporter, ServingStatus::NotServing).await;
}
