//! `pulp.tasking.v1.Tasks`: dispatch, enqueue, cancel and watch go through the
//! engine (which stores a task before answering), on this replica when it
//! leads or forwarded to the leader; reads go straight to the database.
//!
//! A dispatch of `add_and_remove` is checked as `Repositories.Modify` checks
//! its request (`content::repositories::check_dispatched`) before the engine
//! sees it, so raw kwargs cannot reach a worker that Modify would refuse.

use super::content::repositories::check_dispatched;
use super::validate::{TaskRequest, new_task};
use super::{ApiError, convert, forward};
use crate::cluster::{Cluster, Route};
use crate::engine::Engine;
use crate::store::tasks::{self as store, TaskFilter};
use crate::task::NewTask;
use pulp_common::catalog::ADD_AND_REMOVE;
use pulp_common::names::{ResourceName, TaskGroupId, TaskId};
use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::tasks_client::TasksClient;
use pulp_common::proto::tasking::v1::tasks_server::Tasks;
use pulp_common::state::TaskState;
use pulp_common::time::{from_timestamp, now_micros};
use sea_orm::DatabaseConnection;
use std::pin::Pin;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::debug;

/// Default age of the tasks a purge deletes: 30 days (Pulp's default).
pub const DEFAULT_PURGE_AGE_MICROS: i64 = 30 * 24 * 3600 * 1_000_000;

/// Default page size of ListTasks.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size of ListTasks.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The Tasks service.
#[derive(Debug, Clone)]
pub struct TasksService {
    cluster: Cluster,
    db: DatabaseConnection,
}

/// The local engine, or the leader's answer to the forwarded call.
macro_rules! engine_or_forward {
    ($self:ident, $request:ident, $method:ident) => {
        match $self.cluster.route().await? {
            Route::Local(engine) => engine,
            Route::Remote(channel) => {
                return TasksClient::new(channel).$method(forward($request)).await
            }
        }
    };
}

impl TasksService {
    /// Serves tasks through `cluster`.
    pub fn new(cluster: Cluster) -> Self {
        let db = cluster.db().clone();
        TasksService { cluster, db }
    }

    /// A raw dispatch of `add_and_remove` passes the checks
    /// `Repositories.Modify` makes, and claims its repository exclusively
    /// (see [`check_dispatched`]); other funcs pass.
    async fn check_content_task(&self, task: &NewTask) -> Result<(), ApiError> {
        if task.func.as_str() == ADD_AND_REMOVE {
            check_dispatched(&self.db, task).await?;
        }
        Ok(())
    }

    async fn load(&self, id: TaskId) -> Result<pb::Task, ApiError> {
        store::get_task(&self.db, id)
            .await?
            .map(|t| convert::task(&t))
            .ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Task, Status>> + Send>>;

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn dispatch(
        &self,
        request: Request<pb::DispatchRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let engine = engine_or_forward!(self, request, dispatch);
        let request = request.into_inner();
        let task = new_task(TaskRequest::dispatch(&request), &[], engine.known_funcs())?;
        self.check_content_task(&task).await?;
        let record = engine.dispatch(task).await.map_err(ApiError::from)?;
        debug!(task_id = %record.id, func = %record.func, "task dispatched");
        Ok(Response::new(convert::task(&record)))
    }

    async fn enqueue(
        &self,
        request: Request<pb::EnqueueRequest>,
    ) -> Result<Response<pb::EnqueueResponse>, Status> {
        let engine = engine_or_forward!(self, request, enqueue);
        let r = request.into_inner();
        let fields = TaskRequest {
            func: &r.func,
            args: r.args.as_ref(),
            kwargs: r.kwargs.as_ref(),
            exclusive: &r.exclusive_resources,
            shared: &r.shared_resources,
            exclusive_refs: &r.exclusive_resource_refs,
            shared_refs: &r.shared_resource_refs,
            task_group_id: r.task_group_id.as_deref(),
            parent_task_id: r.parent_task_id.as_deref(),
            timeout_seconds: r.options.as_ref().and_then(|o| o.timeout_seconds),
        };
        let task = new_task(fields, &r.resources, engine.known_funcs())?;
        self.check_content_task(&task).await?;
        let record = engine.dispatch(task).await.map_err(ApiError::from)?;
        Ok(Response::new(pb::EnqueueResponse {
            job_id: record.id.to_string(),
            task: Some(convert::task(&record)),
        }))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let id = TaskId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        Ok(Response::new(self.load(id).await?))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let filter = list_filter(request.into_inner())?;
        let (tasks, more) = store::list(&self.db, &filter)
            .await
            .map_err(ApiError::from)?;
        let next_page_token = match (more, tasks.last()) {
            (true, Some(last)) => last.seq.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.iter().map(convert::task).collect(),
            next_page_token,
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let engine = engine_or_forward!(self, request, cancel_task);
        let id = TaskId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        engine.cancel(id).await.map_err(ApiError::from)?;
        Ok(Response::new(self.load(id).await?))
    }

    async fn purge_tasks(
        &self,
        request: Request<pb::PurgeTasksRequest>,
    ) -> Result<Response<pb::PurgeTasksResponse>, Status> {
        let r = request.into_inner();
        let finished_before = r
            .finished_before
            .as_ref()
            .map_or_else(|| now_micros() - DEFAULT_PURGE_AGE_MICROS, from_timestamp);
        let states = if r.states.is_empty() {
            vec![TaskState::Completed]
        } else {
            r.states
                .iter()
                .map(|s| match pb::TaskState::try_from(*s).ok().and_then(TaskState::from_proto) {
                    Some(state) if state.is_final() => Ok(state),
                    Some(state) => Err(ApiError::InvalidArgument(format!(
                        "cannot purge {state} tasks: only completed, failed, canceled and skipped tasks can be purged"
                    ))),
                    None => Err(ApiError::InvalidArgument(format!("states contains {s}, which is not a task state"))),
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let deleted = store::purge(&self.db, &states, finished_before)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(deleted, ?states, "tasks purged");
        Ok(Response::new(pb::PurgeTasksResponse {
            deleted: deleted as i64,
        }))
    }

    type WatchTaskStream = WatchStream;

    async fn watch_task(
        &self,
        request: Request<pb::WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let engine: Engine = match self.cluster.route().await? {
            Route::Local(engine) => engine,
            Route::Remote(channel) => {
                let stream = TasksClient::new(channel)
                    .watch_task(forward(request))
                    .await?
                    .into_inner();
                return Ok(Response::new(Box::pin(stream)));
            }
        };
        let id = TaskId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        // Subscribe before the first read so that no change is missed.
        let mut changes = engine.subscribe();
        let first = self.load(id).await?;
        let (tx, rx) = mpsc::channel(16);
        let service = self.clone();
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(last.clone())).await.is_err() || is_final(&last) {
                return;
            }
            loop {
                let reload = tokio::select! {
                    _ = tx.closed() => return,
                    change = changes.recv() => match change {
                        Ok(changed) => changed == id,
                        Err(broadcast::error::RecvError::Lagged(_)) => true,
                        Err(broadcast::error::RecvError::Closed) => {
                            let _ = tx.send(Err(Status::unavailable("the scheduler is shutting down"))).await;
                            return;
                        }
                    },
                };
                if !reload {
                    continue;
                }
                match service.load(id).await {
                    Ok(task) if task != last => {
                        last = task;
                        if tx.send(Ok(last.clone())).await.is_err() || is_final(&last) {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        let _ = tx.send(Err(err.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn is_final(task: &pb::Task) -> bool {
    pb::TaskState::try_from(task.state)
        .ok()
        .and_then(TaskState::from_proto)
        .is_some_and(TaskState::is_final)
}

fn list_filter(r: pb::ListTasksRequest) -> Result<TaskFilter, ApiError> {
    let limit = match r.page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n > 0 && n as u32 <= MAX_PAGE_SIZE => n as u32,
        n => {
            return Err(ApiError::InvalidArgument(format!(
                "page_size {n} is out of range: give 1 to {MAX_PAGE_SIZE}, or 0 for {DEFAULT_PAGE_SIZE}"
            )));
        }
    };
    let after_seq = if r.page_token.is_empty() {
        0
    } else {
        r.page_token
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 0)
            .ok_or_else(|| {
                ApiError::InvalidArgument(
                    "page_token is not valid: pass the next_page_token of the previous page".into(),
                )
            })?
    };
    let states = r
        .states
        .iter()
        .map(|s| {
            pb::TaskState::try_from(*s)
                .ok()
                .and_then(TaskState::from_proto)
                .ok_or_else(|| {
                    ApiError::InvalidArgument(format!(
                        "states contains {s}, which is not a task state"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let task_group_id = non_empty(r.task_group_id)
        .map(|g| TaskGroupId::parse(&g).map(|g| g.to_string()))
        .transpose()?;
    let resource = non_empty(r.resource)
        .map(|res| ResourceName::parse(&res).map(|res| res.as_str().to_owned()))
        .transpose()?;
    Ok(TaskFilter {
        states,
        func: non_empty(r.func),
        task_group_id,
        worker: non_empty(r.worker),
        resource,
        after_seq,
        limit,
    })
}
