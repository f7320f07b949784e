//! `pulp.tasking.v1.Workers`: the worker stream and the worker list.
//!
//! On a follower replica the stream is relayed to the leader as a whole.
//!
//! `Connect` reads the Hello, registers the worker with the engine (which
//! answers Welcome on the outbound stream) and spawns a reader that turns
//! every later message into a [`WorkerEvent`]. The outbound stream is the
//! engine's [`Outbox`](crate::engine::Outbox) for that worker: assignments,
//! cancellations and result acknowledgements arrive on it in commit order.

use super::{ApiError, convert, forward};
use crate::auth::Auth;
use crate::cluster::{Cluster, Route};
use crate::engine::{Registration, WorkerEvent};
use crate::store::workers;
use crate::task::{Outcome, TaskFailure};
use pb::worker_message::Message;
use pulp_common::json;
use pulp_common::names::{TaskId, TaskName, WorkerName};
use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::workers_client::WorkersClient;
use pulp_common::proto::tasking::v1::workers_server::Workers;
use sea_orm::DatabaseConnection;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

/// Most slots a worker may declare.
pub const MAX_SLOTS: u32 = 1024;
/// How long a new stream may take to send its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// The Workers service.
#[derive(Debug, Clone)]
pub struct WorkersService {
    cluster: Cluster,
    db: DatabaseConnection,
    auth: Auth,
}

impl WorkersService {
    /// Serves worker streams through `cluster`.
    pub fn new(cluster: Cluster) -> Self {
        let db = cluster.db().clone();
        WorkersService {
            cluster,
            db,
            auth: Auth::open(),
        }
    }

    /// Checks callers with `auth` (worker certificates, client tokens).
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }
}

type SchedulerStream = Pin<Box<dyn Stream<Item = Result<pb::SchedulerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Workers for WorkersService {
    type ConnectStream = SchedulerStream;

    async fn connect(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        self.auth.worker(&request)?;
        let engine = match self.cluster.route().await? {
            Route::Local(engine) => engine,
            Route::Remote(channel) => {
                // A follower relays the whole stream to the leader.
                let upstream = forward(request).map(|inbound| inbound.map_while(Result::ok));
                let downstream = WorkersClient::new(channel)
                    .connect(upstream)
                    .await?
                    .into_inner();
                return Ok(Response::new(Box::pin(downstream)));
            }
        };
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no Hello within 30 s of opening the stream")
            })??;
        let hello = match first.and_then(|m| m.message) {
            Some(Message::Hello(hello)) => hello,
            _ => {
                return Err(ApiError::InvalidArgument(
                    "the first message on a worker stream must be Hello (register before anything else)".into(),
                )
                .into());
            }
        };
        let registration = registration(hello)?;
        let (outbox, outbound) = mpsc::unbounded_channel();
        let session = engine
            .register(registration, outbox.clone())
            .await
            .map_err(ApiError::from)?;
        tokio::spawn(async move {
            loop {
                let message = match inbound.message().await {
                    Ok(Some(message)) => message,
                    Ok(None) | Err(_) => break,
                };
                let event = match message.message {
                    Some(Message::Hello(_)) => {
                        let _ = outbox.send(Err(Status::failed_precondition(
                            "this worker already registered on this stream: send Hello once, first",
                        )));
                        break;
                    }
                    Some(Message::Heartbeat(_)) => WorkerEvent::Heartbeat,
                    Some(Message::Draining(_)) => WorkerEvent::Draining,
                    Some(Message::Progress(p)) => match progress(p) {
                        Ok(event) => event,
                        Err(err) => {
                            warn!(error = %err, "malformed progress report ignored");
                            continue;
                        }
                    },
                    Some(Message::Finished(f)) => match finished(f) {
                        Ok(event) => event,
                        Err(err) => {
                            let _ = outbox.send(Err(Status::from(err)));
                            break;
                        }
                    },
                    None => continue,
                };
                engine.worker_event(session, event).await;
            }
            engine
                .worker_event(session, WorkerEvent::Disconnected)
                .await;
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            outbound,
        ))))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        self.auth.client(&request)?;
        let records = workers::list(&self.db).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: records.iter().map(convert::worker).collect(),
        }))
    }
}

fn registration(hello: pb::Hello) -> Result<Registration, ApiError> {
    let name = WorkerName::parse(&hello.name)?;
    if hello.funcs.is_empty() {
        return Err(ApiError::InvalidArgument(
            "Hello.funcs is empty: register at least one task name".into(),
        ));
    }
    let funcs = hello
        .funcs
        .iter()
        .map(|f| TaskName::parse(f).map(|f| f.as_str().to_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    if hello.slots == 0 || hello.slots > MAX_SLOTS {
        return Err(ApiError::InvalidArgument(format!(
            "Hello.slots is {}; give 1 to {MAX_SLOTS}",
            hello.slots
        )));
    }
    if hello.instance_id.is_empty() || hello.instance_id.len() > 64 {
        return Err(ApiError::InvalidArgument(
            "Hello.instance_id must be 1 to 64 characters (a random id of the worker process)"
                .into(),
        ));
    }
    let held = hello
        .held
        .iter()
        .map(|h| TaskId::parse(&h.task_id).map(|id| (id, h.attempt)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Registration {
        name,
        funcs,
        slots: hello.slots,
        instance_id: hello.instance_id,
        held,
        version: hello.version.chars().take(100).collect(),
    })
}

fn progress(p: pb::Progress) -> Result<WorkerEvent, ApiError> {
    let task_id = TaskId::parse(&p.task_id)?;
    let report = p
        .report
        .as_ref()
        .ok_or_else(|| ApiError::InvalidArgument("Progress.report is missing".into()))?;
    if report.code.is_empty() || report.code.len() > 200 {
        return Err(ApiError::InvalidArgument(
            "ProgressReport.code must be 1 to 200 characters".into(),
        ));
    }
    Ok(WorkerEvent::Progress {
        task_id,
        attempt: p.attempt,
        report: convert::progress_from(report),
    })
}

fn finished(f: pb::TaskFinished) -> Result<WorkerEvent, ApiError> {
    use pb::task_finished::Outcome as Wire;
    let task_id = TaskId::parse(&f.task_id)?;
    let outcome = match f.outcome {
        Some(Wire::Result(value)) => Outcome::Completed(json::value_to_json(&value).to_string()),
        Some(Wire::Error(e)) => Outcome::Failed(TaskFailure {
            description: e.description,
            reason: e.reason,
            traceback: e.traceback,
        }),
        Some(Wire::Canceled(c)) => Outcome::Canceled { forced: c.forced },
        None => {
            return Err(ApiError::InvalidArgument(
                "TaskFinished has no outcome: set result, error or canceled".into(),
            ));
        }
    };
    Ok(WorkerEvent::Finished {
        task_id,
        attempt: f.attempt,
        outcome,
        created_resources: f.created_resources,
    })
}
