//! The Prometheus endpoint both binaries serve with `--metrics-listen`.
//!
//! Metrics are recorded through the `metrics` facade (`counter!`,
//! `gauge!`, `histogram!`) wherever things happen; [`install`] makes
//! `metrics-exporter-prometheus` the process's recorder, and [`serve`]
//! answers `GET /metrics` with its rendering. The exporter's own HTTP
//! listener is left out on purpose (its default features pull in a second
//! HTTP stack): a scrape is one small request, answered here over a plain
//! tokio socket. Without `--metrics-listen` no recorder is installed and
//! every metric call is a no-op.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Histogram buckets in seconds, for waits and task durations alike (a
/// millisecond to an hour).
pub const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
];

/// How often histograms are compacted.
const UPKEEP: Duration = Duration::from_secs(5);
/// Largest request head a scrape may send.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a scraper may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs the Prometheus recorder once per process (later calls return
/// the same handle, so tests may start several services in one process).
pub fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| format!("install the Prometheus recorder: {e}"))
        })
        .clone()
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut upkeep = tokio::time::interval(UPKEEP);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = upkeep.tick() => handle.run_upkeep(),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(err) = answer(stream, &handle).await {
                        tracing::debug!(error = %err, "metrics scrape failed");
                    }
                });
            }
        }
    }
}

/// Answers one HTTP/1.x request and closes the connection.
async fn answer(
    mut stream: tokio::net::TcpStream,
    handle: &PrometheusHandle,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        std::io::Result::Ok(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Ok(());
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next(), parts.next());
    let path = path.map(|p| p.split('?').next().unwrap_or(p));
    let (status, content_type, body) = match (method, path) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        (Some("GET"), _) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n".into(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds `address` and serves metrics there in the background until
/// `shutdown`; returns the bound address.
pub async fn start(
    address: std::net::SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<std::net::SocketAddr, String> {
    let handle = install()?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("bind the metrics address {address}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("metrics address: {e}"))?;
    tokio::spawn(serve(listener, handle, shutdown));
    tracing::info!(address = %bound, "serving Prometheus metrics at /metrics");
    Ok(bound)
}
