//! `pulp.content.v1.Publications`: publications are read and deleted here
//! directly in the database; `CreatePublication` validates the version and
//! dispatches the task `publish` (the version's repository as a shared
//! resource), which a worker runs. On a follower replica it goes to the
//! leader, whose engine stores the task.

use super::super::{ApiError, convert, forward};
use super::{next_token, page_size, page_token, timestamp};
use crate::cluster::{Cluster, Route};
use crate::task::NewTask;
use pulp_common::catalog::PUBLISH;
use pulp_common::content::publications::{self, Publication};
use pulp_common::content::{begin_write, repositories, versions};
use pulp_common::names::{
    PublicationId, RepositoryId, RepositoryVersionId, ResourceClaims, TaskId, TaskName,
};
use pulp_common::proto::content::v1 as pb;
use pulp_common::proto::content::v1::publications_client::PublicationsClient;
use pulp_common::proto::content::v1::publications_server::Publications;
use pulp_common::proto::tasking::v1 as tasking;
use sea_orm::DatabaseConnection;
use serde_json::json;
use tonic::{Request, Response, Status};
use tracing::debug;

/// The Publications service.
#[derive(Debug, Clone)]
pub struct PublicationsService {
    cluster: Cluster,
    db: DatabaseConnection,
}

impl PublicationsService {
    /// Serves publications from the cluster's database; dispatches through
    /// `cluster`.
    pub fn new(cluster: Cluster) -> Self {
        let db = cluster.db().clone();
        PublicationsService { cluster, db }
    }

    async fn publish_task(&self, r: &pb::CreatePublicationRequest) -> Result<NewTask, ApiError> {
        let id = RepositoryVersionId::parse(&r.repository_version_id)
            .map_err(|e| ApiError::InvalidArgument(format!("repository_version_id: {}", e.0)))?;
        let version = versions::get_version(&self.db, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("repository version {id} not found")))?;
        if !version.complete {
            return Err(ApiError::InvalidArgument(format!(
                "repository version {id} is not complete: only complete versions can be published"
            )));
        }
        let kwargs = json!({
            "repository_version_pk": id.to_string(),
            "pass_through": r.pass_through,
        });
        Ok(NewTask {
            id: TaskId::new(),
            func: TaskName::parse(PUBLISH)?,
            args: "[]".into(),
            kwargs: kwargs.to_string(),
            claims: ResourceClaims::new([], [repositories::resource(version.repository_id)])?,
            task_group_id: None,
            parent_task_id: None,
            timeout_ms: None,
        })
    }
}

/// A publication as sent to clients.
pub fn publication(p: &Publication) -> pb::Publication {
    pb::Publication {
        id: p.id.to_string(),
        repository_id: p.repository_id.to_string(),
        repository_version_id: p.repository_version_id.to_string(),
        repository_version_number: p.version_number,
        pass_through: p.pass_through,
        complete: p.complete,
        created_at: timestamp(p.created_at),
        created_by_task_id: p.created_by_task.clone().unwrap_or_default(),
        files: p.files,
        resource: publications::resource(p.id).to_string(),
    }
}

#[tonic::async_trait]
impl Publications for PublicationsService {
    async fn create_publication(
        &self,
        request: Request<pb::CreatePublicationRequest>,
    ) -> Result<Response<tasking::Task>, Status> {
        let engine = match self.cluster.route().await? {
            Route::Local(engine) => engine,
            Route::Remote(channel) => {
                return PublicationsClient::new(channel)
                    .create_publication(forward(request))
                    .await;
            }
        };
        let task = self.publish_task(request.get_ref()).await?;
        let record = engine.dispatch(task).await.map_err(ApiError::from)?;
        debug!(task_id = %record.id, "publish dispatched");
        Ok(Response::new(convert::task(&record)))
    }

    async fn get_publication(
        &self,
        request: Request<pb::GetPublicationRequest>,
    ) -> Result<Response<pb::Publication>, Status> {
        let id = PublicationId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        let found = publications::get_publication(&self.db, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("publication {id} not found")))?;
        Ok(Response::new(publication(&found)))
    }

    async fn list_publications(
        &self,
        request: Request<pb::ListPublicationsRequest>,
    ) -> Result<Response<pb::ListPublicationsResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let after = page_token(&r.page_token, PublicationId::parse)?;
        let repository = (!r.repository_id.is_empty())
            .then(|| RepositoryId::parse(&r.repository_id))
            .transpose()
            .map_err(ApiError::from)?;
        let page = publications::list(&self.db, repository, after, limit)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListPublicationsResponse {
            next_page_token: next_token(&page, limit, |p| p.id.to_string()),
            publications: page.iter().map(publication).collect(),
        }))
    }

    async fn delete_publication(
        &self,
        request: Request<pb::DeletePublicationRequest>,
    ) -> Result<Response<()>, Status> {
        let id = PublicationId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        let txn = begin_write(&self.db).await.map_err(ApiError::from)?;
        if !publications::delete(&txn, id)
            .await
            .map_err(ApiError::from)?
        {
            return Err(ApiError::NotFound(format!("publication {id} not found")).into());
        }
        txn.commit().await.map_err(ApiError::from)?;
        debug!(publication_id = %id, "publication deleted");
        Ok(Response::new(()))
    }
}
