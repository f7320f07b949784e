//! gRPC health of both services, and the scheduler following its
//! PostgreSQL server going away and coming back (a throwaway cluster).

use pulp_tests::{Backend, TestApp, both_databases, wait_for_health};
use std::process::Command;
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
    // start_worker itself waits for the worker's own health to be SERVING.
    let worker = app.start_worker("w", 1).await;
    worker.stop().await.unwrap();
}

/// A PostgreSQL cluster of the test's own, started and stopped with
/// `pg_ctl` (as the `postgres` user when running as root).
struct Cluster {
    dir: std::path::PathBuf,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(args: &[&str]) -> std::process::Output {
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

impl Cluster {
    fn start() -> Option<Cluster> {
        if !std::path::Path::new(PG_BIN).join("initdb").exists() {
            assert!(
                std::env::var("CI").is_err(),
                "PostgreSQL binaries are required under CI"
            );
            eprintln!("skipped: no PostgreSQL binaries in {PG_BIN}");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("pulp-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown").arg("postgres").arg(&dir).status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.join("data");
        let initdb = format!("{PG_BIN}/initdb");
        let out = as_postgres(&[
            &initdb,
            "-D",
            data.to_str().unwrap(),
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
        let cluster = Cluster { dir, port };
        cluster.pg_ctl_start();
        Some(cluster)
    }

    fn pg_ctl_start(&self) {
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
            data.to_str().unwrap(),
            "-o",
            &options,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn stop(&self) {
        let pg_ctl = format!("{PG_BIN}/pg_ctl");
        let data = self.dir.join("data");
        let out = as_postgres(&[
            &pg_ctl,
            "-D",
            data.to_str().unwrap(),
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

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pg_ctl = format!("{PG_BIN}/pg_ctl");
        let data = self.dir.join("data");
        let _ = as_postgres(&[
            &pg_ctl,
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "stop",
        ]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_health_follows_its_postgresql() {
    let Some(cluster) = Cluster::start() else {
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

    cluster.stop();
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

    cluster.pg_ctl_start();
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
