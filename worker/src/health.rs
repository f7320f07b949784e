//! gRPC health (`grpc.health.v1`) of the worker, for kubelet probes.
//!
//! The connection loop flips one flag with `Health::set_serving` (true
//! while connected, welcomed and not draining); a small forwarding task
//! copies it into tonic-health's reporter for the service names `""` and
//! `pulp.tasking.v1.Worker`. Setting the flag is synchronous, so the loop
//! never waits on the health server. The server runs on the listener given
//! to `start` until `HealthServer::shutdown`, which waits at most
//! [`SHUTDOWN_WAIT`] for its clients: a `Watch` stream never ends by itself,
//! so one open Watch would otherwise keep the worker from exiting.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{debug, error, info};

use crate::error::Chain;

/// The service name the worker reports besides the overall `""`.
pub const SERVICE_NAME: &str = "pulp.tasking.v1.Worker";

/// How long shutdown waits for open health calls (such as a `Watch`, which
/// only ends when its client leaves) before it stops serving them.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// The connection loop's side: sets the serving flag.
#[derive(Debug)]
pub(crate) struct Health {
    tx: watch::Sender<bool>,
}

impl Health {
    /// SERVING when `serving`, else NOT_SERVING.
    pub fn set_serving(&self, serving: bool) {
        crate::metrics::serving(serving);
        self.tx.send_if_modified(|current| {
            let changed = *current != serving;
            *current = serving;
            changed
        });
    }
}

/// The running health server and its status forwarder.
pub(crate) struct HealthServer {
    stop: CancellationToken,
    server: Option<JoinHandle<()>>,
    forwarder: JoinHandle<()>,
}

impl HealthServer {
    /// Stops serving: waits up to [`SHUTDOWN_WAIT`] for open calls to end,
    /// then drops them.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Some(mut server) = self.server {
            match tokio::time::timeout(SHUTDOWN_WAIT, &mut server).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => error!(error = %err, "the health server task failed"),
                Err(_) => {
                    debug!("health calls still open at shutdown (a Watch); closing them");
                    server.abort();
                }
            }
        }
        self.forwarder.abort();
    }
}

/// Starts with NOT_SERVING; serves on `listener` if one is given.
pub(crate) async fn start(listener: Option<TcpListener>) -> (Health, HealthServer) {
    let (reporter, service) = tonic_health::server::health_reporter();
    set_all(&reporter, false).await;
    let (tx, mut rx) = watch::channel(false);
    let forwarder = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let serving = *rx.borrow_and_update();
            set_all(&reporter, serving).await;
        }
    });

    let stop = CancellationToken::new();
    let server = listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "serving gRPC health checks");
        }
        let stop = stop.clone();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.cancelled_owned(),
                )
                .await;
            if let Err(err) = served {
                error!(error = %Chain(&err), "the health server failed");
            }
        })
    });
    (
        Health { tx },
        HealthServer {
            stop,
            server,
            forwarder,
        },
    )
}

async fn set_all(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in ["", SERVICE_NAME] {
        reporter.set_service_status(name, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus as Wire};

    /// An open Watch (a client that never hangs up) must not keep the
    /// worker from stopping.
    #[tokio::test]
    async fn shutdown_does_not_wait_for_an_open_watch() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (health, server) = start(Some(listener)).await;
        health.set_serving(true);
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let mut watch = client
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert!(first.status == Wire::Serving as i32 || first.status == Wire::NotServing as i32);

        let stopped = tokio::time::timeout(SHUTDOWN_WAIT * 5, server.shutdown()).await;
        assert!(stopped.is_ok(), "shutdown hung on an open Watch");
        drop(watch);
    }
}
