//! `pulp.content.v1.Repositories`: repositories and versions are read and
//! deleted here directly in the database; `Modify` validates the change
//! (ids, the `"*"` rule, that the repository, the base version and every
//! unit exist) and dispatches the task `add_and_remove`, which a worker
//! runs. On a follower replica `Modify` goes to the leader, whose engine
//! stores the task.

use super::super::{ApiError, convert, forward};
use super::contents::content;
use super::{next_token, page_size, page_token, timestamp, type_filter};
use crate::cluster::{Cluster, Route};
use crate::task::NewTask;
use pulp_common::catalog::ADD_AND_REMOVE;
use pulp_common::content::begin_write;
use pulp_common::content::modification::{self, REQUEST_FIELDS};
use pulp_common::content::repositories::{self, Repository, parse_description, parse_name};
use pulp_common::content::versions::{self, Counts, Version};
use pulp_common::names::{
    ContentId, RepositoryId, RepositoryVersionId, ResourceClaims, TaskId, TaskName,
};
use pulp_common::proto::content::v1 as pb;
use pulp_common::proto::content::v1::repositories_client::RepositoriesClient;
use pulp_common::proto::content::v1::repositories_server::Repositories;
use pulp_common::proto::tasking::v1 as tasking;
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};
use tracing::debug;

/// The Repositories service.
#[derive(Debug, Clone)]
pub struct RepositoriesService {
    cluster: Cluster,
    db: DatabaseConnection,
}

impl RepositoriesService {
    /// Serves repositories from the cluster's database; dispatches through
    /// `cluster`.
    pub fn new(cluster: Cluster) -> Self {
        let db = cluster.db().clone();
        RepositoriesService { cluster, db }
    }

    async fn repository(&self, id: RepositoryId) -> Result<Repository, ApiError> {
        repositories::get_repository(&self.db, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("repository {id} not found")))
    }

    async fn version(&self, id: RepositoryVersionId) -> Result<Version, ApiError> {
        versions::get_version(&self.db, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("repository version {id} not found")))
    }

    /// Validates a ModifyRequest into the task that carries it out: the
    /// rules of [`modification`], shared with a raw dispatch
    /// ([`check_dispatched`]) and the worker.
    async fn modify_task(&self, r: &pb::ModifyRequest) -> Result<NewTask, ApiError> {
        let base = (!r.base_version_id.is_empty()).then_some(r.base_version_id.as_str());
        let m = modification::parse(
            &REQUEST_FIELDS,
            &r.repository_id,
            &r.add_content_units,
            &r.remove_content_units,
            base,
        )?;
        let checked = modification::check(&self.db, &m).await?;
        Ok(NewTask {
            id: TaskId::new(),
            func: TaskName::parse(ADD_AND_REMOVE)?,
            args: "[]".into(),
            kwargs: m.to_kwargs().to_string(),
            claims: ResourceClaims::new(
                [repositories::resource(m.repository)],
                checked.other_repository.map(repositories::resource),
            )?,
            task_group_id: None,
            parent_task_id: None,
            timeout_ms: None,
        })
    }
}

/// Checks a raw `Tasks.Dispatch` or `Enqueue` of `add_and_remove` as Modify
/// checks its request, before anything is stored: the kwargs by the parser
/// the worker runs ([`modification::from_kwargs`]), then that the task
/// claims its repository's resource exclusively (the reservation is what
/// serialises the versions of one repository; Modify claims it itself),
/// then that the repository, the base version and the units exist and the
/// base version is complete ([`modification::check`]). INVALID_ARGUMENT or
/// NOT_FOUND, as Modify answers.
pub(crate) async fn check_dispatched(
    db: &DatabaseConnection,
    task: &NewTask,
) -> Result<(), ApiError> {
    // `new_task` wrote both from protobuf values: they are JSON.
    let not_json =
        |e: serde_json::Error| ApiError::Internal(format!("a new task's arguments: {e}"));
    let args: Vec<serde_json::Value> = serde_json::from_str(&task.args).map_err(not_json)?;
    let kwargs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&task.kwargs).map_err(not_json)?;
    let m = modification::from_kwargs(&args, &kwargs)?;
    let resource = repositories::resource(m.repository);
    if !task.claims.exclusive.contains(&resource) {
        return Err(ApiError::InvalidArgument(format!(
            "add_and_remove changes repository {}: name its resource {resource} in exclusive_resources \
             (Repositories.Modify dispatches the task with it for you)",
            m.repository
        )));
    }
    modification::check(db, &m).await?;
    Ok(())
}

/// A repository as sent to clients.
pub fn repository(r: &Repository) -> pb::Repository {
    pb::Repository {
        id: r.id.to_string(),
        name: r.name.clone(),
        description: r.description.clone(),
        next_version: r.next_version,
        latest_version_number: r.latest_version_number,
        latest_version_id: r.latest_version_id.clone(),
        created_at: timestamp(r.created_at),
        resource: repositories::resource(r.id).to_string(),
    }
}

fn counts(counts: &Counts) -> Vec<pb::ContentCount> {
    counts
        .iter()
        .map(|(pulp_type, count)| pb::ContentCount {
            pulp_type: pulp_type.clone(),
            count: *count,
        })
        .collect()
}

/// A version as sent to clients.
pub fn version(v: &Version) -> pb::RepositoryVersion {
    pb::RepositoryVersion {
        id: v.id.to_string(),
        repository_id: v.repository_id.to_string(),
        number: v.number,
        base_version_id: v.base_version_id.clone().unwrap_or_default(),
        complete: v.complete,
        created_at: timestamp(v.created_at),
        content_summary: Some(pb::ContentSummary {
            added: counts(&v.summary.added),
            removed: counts(&v.summary.removed),
            present: counts(&v.summary.present),
        }),
        created_by_task_id: v.created_by_task.clone().unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Repositories for RepositoriesService {
    async fn create_repository(
        &self,
        request: Request<pb::CreateRepositoryRequest>,
    ) -> Result<Response<pb::Repository>, Status> {
        let r = request.into_inner();
        let name = parse_name(&r.name).map_err(ApiError::from)?;
        let description = parse_description(&r.description).map_err(ApiError::from)?;
        let txn = begin_write(&self.db).await.map_err(ApiError::from)?;
        let created = repositories::create(&txn, &name, &description)
            .await
            .map_err(ApiError::from)?;
        txn.commit().await.map_err(ApiError::from)?;
        debug!(repository_id = %created.id, "repository created");
        Ok(Response::new(repository(&created)))
    }

    async fn get_repository(
        &self,
        request: Request<pb::GetRepositoryRequest>,
    ) -> Result<Response<pb::Repository>, Status> {
        let id = RepositoryId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        Ok(Response::new(repository(&self.repository(id).await?)))
    }

    async fn list_repositories(
        &self,
        request: Request<pb::ListRepositoriesRequest>,
    ) -> Result<Response<pb::ListRepositoriesResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let after = page_token(&r.page_token, RepositoryId::parse)?;
        let page = repositories::list(&self.db, after, limit)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListRepositoriesResponse {
            next_page_token: next_token(&page, limit, |r| r.id.to_string()),
            repositories: page.iter().map(repository).collect(),
        }))
    }

    async fn delete_repository(
        &self,
        request: Request<pb::DeleteRepositoryRequest>,
    ) -> Result<Response<()>, Status> {
        let id = RepositoryId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        let txn = begin_write(&self.db).await.map_err(ApiError::from)?;
        if !repositories::delete(&txn, id)
            .await
            .map_err(ApiError::from)?
        {
            return Err(ApiError::NotFound(format!("repository {id} not found")).into());
        }
        txn.commit().await.map_err(ApiError::from)?;
        debug!(repository_id = %id, "repository deleted");
        Ok(Response::new(()))
    }

    async fn list_repository_versions(
        &self,
        request: Request<pb::ListRepositoryVersionsRequest>,
    ) -> Result<Response<pb::ListRepositoryVersionsResponse>, Status> {
        let r = request.into_inner();
        let id = RepositoryId::parse(&r.repository_id).map_err(ApiError::from)?;
        let limit = page_size(r.page_size)?;
        let after = page_token(&r.page_token, |t| t.parse::<i64>())?;
        self.repository(id).await?;
        let page = versions::list(&self.db, id, after, limit)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListRepositoryVersionsResponse {
            next_page_token: next_token(&page, limit, |v| v.number.to_string()),
            versions: page.iter().map(version).collect(),
        }))
    }

    async fn get_repository_version(
        &self,
        request: Request<pb::GetRepositoryVersionRequest>,
    ) -> Result<Response<pb::RepositoryVersion>, Status> {
        let r = request.into_inner();
        let found = match (r.id.is_empty(), r.repository_id.is_empty()) {
            (false, true) if r.number.is_none() => {
                self.version(RepositoryVersionId::parse(&r.id).map_err(ApiError::from)?)
                    .await?
            }
            (true, false) => {
                let repo = RepositoryId::parse(&r.repository_id).map_err(ApiError::from)?;
                self.repository(repo).await?;
                let found = match r.number {
                    Some(n) => versions::get_by_number(&self.db, repo, n).await,
                    None => versions::latest(&self.db, repo).await,
                };
                found.map_err(ApiError::from)?.ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "repository {repo} has no version {}",
                        r.number.map_or("at all".into(), |n| n.to_string())
                    ))
                })?
            }
            _ => {
                return Err(ApiError::InvalidArgument(
                    "name the version by id alone, or by repository_id (and number)".into(),
                )
                .into());
            }
        };
        Ok(Response::new(version(&found)))
    }

    async fn list_version_content(
        &self,
        request: Request<pb::ListVersionContentRequest>,
    ) -> Result<Response<pb::ListVersionContentResponse>, Status> {
        let r = request.into_inner();
        let id = RepositoryVersionId::parse(&r.version_id).map_err(ApiError::from)?;
        let limit = page_size(r.page_size)?;
        let after = page_token(&r.page_token, ContentId::parse)?;
        let pulp_type = type_filter(&r.pulp_type)?;
        let found = self.version(id).await?;
        let page = versions::content(&self.db, &found, pulp_type.as_ref(), after, limit)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListVersionContentResponse {
            next_page_token: next_token(&page, limit, |c| c.id.clone()),
            contents: page.iter().map(content).collect(),
        }))
    }

    async fn delete_repository_version(
        &self,
        request: Request<pb::DeleteRepositoryVersionRequest>,
    ) -> Result<Response<()>, Status> {
        let id = RepositoryVersionId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        let txn = begin_write(&self.db).await.map_err(ApiError::from)?;
        let deleted = versions::delete(&txn, id).await.map_err(ApiError::from)?;
        txn.commit().await.map_err(ApiError::from)?;
        debug!(version_id = %id, number = deleted.number, "repository version deleted");
        Ok(Response::new(()))
    }

    async fn modify(
        &self,
        request: Request<pb::ModifyRequest>,
    ) -> Result<Response<tasking::Task>, Status> {
        let engine = match self.cluster.route().await? {
            Route::Local(engine) => engine,
            Route::Remote(channel) => {
                return RepositoriesClient::new(channel)
                    .max_decoding_message_size(MODIFY_MESSAGE_LIMIT)
                    .max_encoding_message_size(MODIFY_MESSAGE_LIMIT)
                    .modify(forward(request))
                    .await;
            }
        };
        let task = self.modify_task(request.get_ref()).await?;
        let record = engine.dispatch(task).await.map_err(ApiError::from)?;
        debug!(task_id = %record.id, "add_and_remove dispatched");
        Ok(Response::new(convert::task(&record)))
    }
}

/// Largest Modify request or response a replica relays: above the
/// 100,000-unit limit's roughly 4 MB.
pub const MODIFY_MESSAGE_LIMIT: usize = 16 * 1024 * 1024;
