//! gRPC health of both services, and the scheduler following its
//! PostgreSQL server going away and coming back (a throwaway cluster).

use pulp_tests::{Backend, PostgresCluster, TestApp, both_databases, wait_for_health};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

both_databases!(both_services_report_serving);

async fn both_services_report_serving(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut health = HealthClient::new(app.channel.clone());
    for service in [
        "",
        "pulp.tasking.v1.Tasks",
        "pulp.tasking.v1.Workers",
        "pulp.tasking.v1.TaskGroups",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "scheduler service {service:?}"
        );
    }
    let worker = app.start_worker("w", 1).await;
    let mut health = HealthClient::new(
        pulp_tests::connect_eventually(&format!("http://{}", worker.health_address)).await,
    );
    for service in ["", pulp_worker::health::SERVICE_NAME] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("worker health check of {service:?}: {s}"))
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "worker service {service:?}"
        );
    }
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_health_follows_its_postgresql() {
    let Some(cluster) = PostgresCluster::start() else {
        return;
    };
    let url = cluster.url();
    let Some(app) =
        TestApp::spawn_with(Backend::Sqlite, |config| config.database_url = Some(url)).await
    else {
        return;
    };
    let worker = app.start_worker("w", 1).await;
    let before = app.dispatch("noop", serde_json::json!({}), &[], &[]).await;
    app.wait_final(&before.id).await;

    cluster.stop_immediate();
    wait_for_health(app.channel.clone(), ServingStatus::NotServing).await;
    let err = app
        .tasks()
        .dispatch(pulp_tests::dispatch_request(
            "noop",
            serde_json::json!({}),
            &[],
            &[],
        ))
        .await
        .expect_err("no database, no dispatch");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");

    cluster.start_again();
    wait_for_health(app.channel.clone(), ServingStatus::Serving).await;
    // Recovered without a restart: dispatch and run again.
    let after = app.dispatch("noop", serde_json::json!({}), &[], &[]).await;
    let after = app.wait_final(&after.id).await;
    assert_eq!(
        pulp_tests::state(&after),
        pulp_common::proto::tasking::v1::TaskState::Completed
    );
    worker.stop().await.unwrap();
}
