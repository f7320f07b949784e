//! `pulp.tasking.v1.TaskGroups`: groups live in the database; cancelling a
//! group goes through the engine (the leader's), which owns task state.

use super::{ApiError, convert, forward};
use crate::cluster::{Cluster, Route};
use crate::store::groups;
use pulp_common::names::TaskGroupId;
use pulp_common::proto::tasking::v1 as pb;
use pulp_common::proto::tasking::v1::task_groups_client::TaskGroupsClient;
use pulp_common::proto::tasking::v1::task_groups_server::TaskGroups;
use pulp_common::time::now_micros;
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

/// Longest group description, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

/// The TaskGroups service.
#[derive(Debug, Clone)]
pub struct TaskGroupsService {
    cluster: Cluster,
    db: DatabaseConnection,
}

impl TaskGroupsService {
    /// Serves groups through `cluster`.
    pub fn new(cluster: Cluster) -> Self {
        let db = cluster.db().clone();
        TaskGroupsService { cluster, db }
    }

    async fn load(&self, id: TaskGroupId) -> Result<pb::TaskGroup, ApiError> {
        groups::get_group(&self.db, id)
            .await?
            .map(|g| convert::group(&g))
            .ok_or_else(|| ApiError::NotFound(format!("task group {id} not found")))
    }
}

#[tonic::async_trait]
impl TaskGroups for TaskGroupsService {
    async fn create_task_group(
        &self,
        request: Request<pb::CreateTaskGroupRequest>,
    ) -> Result<Response<pb::TaskGroup>, Status> {
        let description = request.into_inner().description;
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(ApiError::InvalidArgument(format!(
                "description is {} bytes long; the limit is {MAX_DESCRIPTION_BYTES}",
                description.len()
            ))
            .into());
        }
        let id = TaskGroupId::new();
        groups::create(&self.db, id, &description, now_micros())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(self.load(id).await?))
    }

    async fn get_task_group(
        &self,
        request: Request<pb::GetTaskGroupRequest>,
    ) -> Result<Response<pb::TaskGroup>, Status> {
        let id = TaskGroupId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        Ok(Response::new(self.load(id).await?))
    }

    async fn finish_task_group(
        &self,
        request: Request<pb::FinishTaskGroupRequest>,
    ) -> Result<Response<pb::TaskGroup>, Status> {
        let id = TaskGroupId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        if !groups::finish(&self.db, id).await.map_err(ApiError::from)? {
            return Err(ApiError::NotFound(format!("task group {id} not found")).into());
        }
        Ok(Response::new(self.load(id).await?))
    }

    async fn cancel_task_group(
        &self,
        request: Request<pb::CancelTaskGroupRequest>,
    ) -> Result<Response<pb::TaskGroup>, Status> {
        let engine = match self.cluster.route().await? {
            Route::Local(engine) => engine,
            Route::Remote(channel) => {
                return TaskGroupsClient::new(channel)
                    .cancel_task_group(forward(request))
                    .await;
            }
        };
        let id = TaskGroupId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        self.load(id).await?;
        engine.cancel_group(id).await.map_err(ApiError::from)?;
        Ok(Response::new(self.load(id).await?))
    }
}
