//! A second-language client: `tests/python/dispatch_and_watch.py` builds
//! Python stubs from `proto/` with grpcio-tools and dispatches and watches a
//! `sleep` task over TLS with a bearer token, against a real scheduler and
//! worker (TLS, tokens and worker certificates all on).
//!
//! Skipped with a message when Python's `grpc` and `grpc_tools` are not
//! importable, except under `CI=true` (`.ci/run` installs them), where it
//! fails instead.

use pulp_tests::pki::{Pki, TOKEN};
use pulp_tests::{Backend, TestApp};
use std::path::PathBuf;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_grpcio_client_dispatches_and_watches_over_tls_with_a_token() {
    let importable = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "python3 with grpcio and grpcio-tools is required under CI=true (.ci/run installs them)"
        );
        eprintln!(
            "skipped: python3 cannot import grpc and grpc_tools (pip install grpcio grpcio-tools)"
        );
        return;
    }
    let pki = Pki::new();
    let app = TestApp::spawn_secure(Backend::Sqlite, &pki, |_| {})
        .await
        .expect("a SQLite scheduler");
    let worker = app
        .start_worker_with("py", 1, pulp_tests::TaskRegistry::builtin(), |config| {
            config.tls_ca = Some(pki.ca.clone());
            config.tls_cert = Some(pki.worker.cert.clone());
            config.tls_key = Some(pki.worker.key.clone());
        })
        .await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/python/dispatch_and_watch.py");
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .env("PULP_ADDRESS", app.address.to_string())
        .env("PULP_TLS_CA", &pki.ca)
        .env("PULP_TOKEN", TOKEN)
        .env("PULP_PROTO_DIR", root.join("proto"))
        .output();
    let output = tokio::time::timeout(pulp_tests::WAIT, output)
        .await
        .expect("the python client finished in time")
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("RUNNING -> COMPLETED") || stdout.contains("-> COMPLETED"),
        "{stdout}"
    );
    assert!(stdout.contains("python client: ok"), "{stdout}");
    worker.stop().await.unwrap();
    app.stop().await;
}
