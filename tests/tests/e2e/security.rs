//! TLS, worker client certificates and client bearer tokens (certificates
//! made at test time, see `pulp_tests::pki`): refusals carry the right
//! status and change nothing; the right credentials work; health and
//! reflection need none.

use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::{tasks_client::TasksClient, workers_client::WorkersClient};
use pulp_tests::pki::{Pki, TOKEN};
use pulp_tests::{Backend, TestApp, bearer, both_databases, connect_to, dispatch_request};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

both_databases!(
    tokens_are_required_and_refusals_change_nothing,
    workers_need_a_certificate_signed_by_the_worker_ca,
);

async fn tokens_are_required_and_refusals_change_nothing(backend: Backend) {
    let pki = Pki::new();
    let probe_port = pulp_tests::free_port();
    let Some(app) = TestApp::spawn_secure(backend, &pki, |config| {
        config.health_listen = Some(([127, 0, 0, 1], probe_port).into());
    })
    .await
    else {
        return;
    };
    let request = || dispatch_request("noop", serde_json::json!({}), &[], &[]);

    // No token, a wrong token, a token without the Bearer scheme.
    let err = app.tasks().dispatch(request()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let mut wrong = TasksClient::with_interceptor(
        app.channel.clone(),
        bearer("not-the-token-0123456789abcdef"),
    );
    let err = wrong.dispatch(request()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let err = wrong
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let err = app
        .workers()
        .list_workers(pb::ListWorkersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    // The publication and export services are behind the token too.
    use pulp_common::proto::content::v1 as content;
    let err = content::exporters_client::ExportersClient::new(app.channel.clone())
        .create_filesystem_exporter(content::CreateFilesystemExporterRequest {
            name: "e".into(),
            path: "/srv/e".into(),
            method: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let err = content::publications_client::PublicationsClient::new(app.channel.clone())
        .list_publications(content::ListPublicationsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    content::exporters_client::ExportersClient::with_interceptor(
        app.channel.clone(),
        bearer(TOKEN),
    )
    .list_exporters(content::ListExportersRequest::default())
    .await
    .expect("list exporters with the token");

    // Nothing was created.
    let mut tasks = TasksClient::with_interceptor(app.channel.clone(), bearer(TOKEN));
    let listed = tasks
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("list with the token")
        .into_inner();
    assert!(listed.tasks.is_empty(), "{:?}", listed.tasks);

    // The right token works.
    let task = tasks
        .dispatch(request())
        .await
        .expect("dispatch with the token")
        .into_inner();
    assert_eq!(pulp_tests::state(&task), pb::TaskState::Waiting);

    // Plain HTTP/2 is not served.
    let plain = connect_to(app.address, None, None).await;
    if let Ok(channel) = plain {
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .expect_err("plain HTTP/2 to a TLS server");
    }

    // Health and reflection need no credentials.
    let status = HealthClient::new(app.channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("health without credentials")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    // Kubernetes probes speak plain HTTP/2: --health-listen serves them.
    let probe = pulp_tests::connect_eventually(&format!("http://127.0.0.1:{probe_port}")).await;
    let status = HealthClient::new(probe)
        .check(HealthCheckRequest::default())
        .await
        .expect("plain health for probes")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let services = reflection_services(app.channel.clone()).await;
    assert!(
        services.iter().any(|s| s == "pulp.tasking.v1.Tasks"),
        "{services:?}"
    );
    app.stop().await;
}

async fn workers_need_a_certificate_signed_by_the_worker_ca(backend: Backend) {
    let pki = Pki::new();
    let Some(app) = TestApp::spawn_secure(backend, &pki, |_| {}).await else {
        return;
    };
    let ca = app.tls_ca.clone();
    let hello = || {
        let hello = pb::WorkerMessage {
            message: Some(pb::worker_message::Message::Hello(pb::Hello {
                name: "intruder".into(),
                slots: 1,
                funcs: vec!["noop".into()],
                instance_id: uuid::Uuid::new_v4().to_string(),
                ..Default::default()
            })),
        };
        tokio_stream::iter(vec![hello])
    };

    // No client certificate.
    let err = app
        .workers()
        .connect(hello())
        .await
        .expect_err("no certificate, no stream");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");

    // A client token is not a worker credential.
    let err = WorkersClient::with_interceptor(app.channel.clone(), bearer(TOKEN))
        .connect(hello())
        .await
        .expect_err("a client token opens no worker stream");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");

    // A certificate from another CA fails the TLS handshake.
    match connect_to(app.address, ca.as_deref(), Some(&pki.rogue_worker)).await {
        Err(_) => {}
        Ok(channel) => {
            let err = WorkersClient::new(channel)
                .connect(hello())
                .await
                .expect_err("a rogue certificate opens no stream");
            assert_ne!(err.code(), Code::Ok, "{err}");
        }
    }

    // Nothing was registered.
    let mut workers = WorkersClient::with_interceptor(app.channel.clone(), bearer(TOKEN));
    let listed = workers
        .list_workers(pb::ListWorkersRequest::default())
        .await
        .expect("list workers with the token")
        .into_inner();
    assert!(listed.workers.is_empty(), "{:?}", listed.workers);

    // The right certificate: a real worker runs a task to completion.
    let worker = app
        .start_worker_with("w", 1, pulp_tests::TaskRegistry::builtin(), |config| {
            config.tls_ca = Some(pki.ca.clone());
            config.tls_cert = Some(pki.worker.cert.clone());
            config.tls_key = Some(pki.worker.key.clone());
        })
        .await;
    let mut tasks = TasksClient::with_interceptor(app.channel.clone(), bearer(TOKEN));
    let task = tasks
        .dispatch(dispatch_request("noop", serde_json::json!({}), &[], &[]))
        .await
        .expect("dispatch")
        .into_inner();
    let mut watch = tasks
        .watch_task(pb::WatchTaskRequest {
            id: task.id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let done = tokio::time::timeout(pulp_tests::WAIT, async {
        while let Some(t) = watch.message().await.expect("watch stream") {
            if pulp_tests::is_final(&t) {
                return t;
            }
        }
        panic!("watch ended early");
    })
    .await
    .expect("task finished in time");
    assert_eq!(pulp_tests::state(&done), pb::TaskState::Completed);
    let listed = workers
        .list_workers(pb::ListWorkersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = listed.workers.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["w"]);
    worker.stop().await.unwrap();
    app.stop().await;
}

/// The services the reflection service lists, asked without credentials.
async fn reflection_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection without credentials")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("reflection answer")
        .expect("one answer");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

/// pulpctl with `--tls-ca` and `--token-file` works; without the token it
/// reports UNAUTHENTICATED and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulpctl_speaks_tls_with_a_token() {
    let pki = Pki::new();
    let app = TestApp::spawn_secure(Backend::Sqlite, &pki, |_| {})
        .await
        .expect("a SQLite scheduler");
    let pulpctl = |extra: &[&str]| {
        let mut command = std::process::Command::new(pulp_tests::binary("pulpctl"));
        command
            .args(["--scheduler", &app.url()])
            .args(["--tls-ca", pki.ca.to_str().unwrap()])
            .args(extra)
            .env_remove("PULP_TOKEN")
            .env_remove("PULP_TOKEN_FILE");
        command.output().expect("run pulpctl")
    };
    let denied = pulpctl(&["list"]);
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert_eq!(denied.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");

    let tokens = pki.tokens_file.to_str().unwrap();
    let ok = pulpctl(&["--token-file", tokens, "--json", "dispatch", "noop"]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("noop"), "{stdout}");
    app.stop().await;
}

/// Two TLS replicas on one PostgreSQL database: a worker (with its client
/// certificate) and a client (with its token) both talk only to the
/// follower, which relays the worker stream, the dispatch and the watch to
/// the leader over TLS; the task completes. The follower itself refuses a
/// call without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_relays_to_the_leader_over_tls_with_credentials() {
    pulp_tests::init_logs();
    let Some(db) = pulp_tests::TestDb::new(Backend::Postgres).await else {
        return;
    };
    let pki = Pki::new();
    let ca = pki.ca_pem();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut config = pulp_scheduler::Config::new(db.url());
        config.advertise_address = Some(address.to_string());
        config.tls_cert = Some(pki.server.cert.clone());
        config.tls_key = Some(pki.server.key.clone());
        config.worker_ca = Some(pki.ca.clone());
        config.client_tokens_file = Some(pki.tokens_file.clone());
        let handle = tokio::spawn(pulp_scheduler::run(config, listener, stop.child_token()));
        let channel = connect_to(address, Some(&ca), None).await.expect("connect");
        pulp_tests::wait_for_health(channel.clone(), ServingStatus::Serving).await;
        replicas.push((address, channel, handle));
    }
    // The leader is whoever took the lock; the test talks to the other one.
    let leader = tokio::time::timeout(pulp_tests::WAIT, async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(db.url())
            .await
            .expect("connect");
        loop {
            let row: Option<(String,)> =
                sqlx::query_as("SELECT address FROM scheduler_leader WHERE id = 1")
                    .fetch_optional(&mut conn)
                    .await
                    .expect("query the leader");
            if let Some((address,)) = row {
                return address;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a leader is elected");
    let (follower, channel, _) = replicas
        .iter()
        .find(|(address, _, _)| address.to_string() != leader)
        .expect("a follower");

    let health = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health_address = health.local_addr().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut config = pulp_worker::Config::for_tests(format!("https://{follower}"), work.path());
    config.tls_ca = Some(pki.ca.clone());
    config.tls_cert = Some(pki.worker.cert.clone());
    config.tls_key = Some(pki.worker.key.clone());
    let worker_stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(pulp_worker::run_with(
        config,
        pulp_tests::TaskRegistry::builtin(),
        Some(health),
        worker_stop.clone(),
    ));
    pulp_tests::wait_for_health(
        pulp_tests::connect_eventually(&format!("http://{health_address}")).await,
        ServingStatus::Serving,
    )
    .await;

    let request = || dispatch_request("noop", serde_json::json!({}), &[], &[]);
    let err = TasksClient::new(channel.clone())
        .dispatch(request())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let mut tasks = TasksClient::with_interceptor(channel.clone(), bearer(TOKEN));
    let task = tasks
        .dispatch(request())
        .await
        .expect("dispatch through the follower")
        .into_inner();
    let mut watch = tasks
        .watch_task(pb::WatchTaskRequest {
            id: task.id.clone(),
        })
        .await
        .expect("watch through the follower")
        .into_inner();
    let done = tokio::time::timeout(pulp_tests::WAIT, async {
        while let Some(t) = watch.message().await.expect("watch stream") {
            if pulp_tests::is_final(&t) {
                return t;
            }
        }
        panic!("watch ended early");
    })
    .await
    .expect("the task finished in time");
    assert_eq!(pulp_tests::state(&done), pb::TaskState::Completed);

    worker_stop.cancel();
    let _ = tokio::time::timeout(pulp_tests::WAIT, worker).await;
    stop.cancel();
    for (_, _, handle) in replicas {
        let _ = tokio::time::timeout(pulp_tests::WAIT, handle).await;
    }
}
