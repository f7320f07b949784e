//! `pulp.content.v1.Exporters`: exporters and export records are managed
//! here directly in the database; `Export` validates the request (exactly
//! one of publication and version, both complete, the start version of the
//! same repository) and dispatches `fs_publication_export` or
//! `fs_repo_version_export` with the exporter as exclusive resource (one
//! export into its directory at a time) and the repository as shared one
//! (exports of one repository run together; a Modify waits for them). Where
//! a worker may write is checked by the worker when the export runs.

use super::super::{ApiError, convert, forward};
use super::{next_token, page_size, page_token, timestamp};
use crate::cluster::{Cluster, Route};
use crate::task::NewTask;
use pulp_common::catalog::{FS_PUBLICATION_EXPORT, FS_REPO_VERSION_EXPORT};
use pulp_common::content::exporters::{self, ExportMethod, Exporter};
use pulp_common::content::{begin_write, publications, repositories, versions};
use pulp_common::names::{
    ExportId, ExporterId, PublicationId, RepositoryVersionId, ResourceClaims, TaskId, TaskName,
};
use pulp_common::proto::content::v1 as pb;
use pulp_common::proto::content::v1::exporters_client::ExportersClient;
use pulp_common::proto::content::v1::exporters_server::Exporters;
use pulp_common::proto::tasking::v1 as tasking;
use sea_orm::DatabaseConnection;
use serde_json::json;
use tonic::{Request, Response, Status};
use tracing::debug;

/// The message for an Export naming neither or both sources.
pub const ONE_SOURCE: &str = "publication or repository_version must be supplied, not both";

/// The Exporters service.
#[derive(Debug, Clone)]
pub struct ExportersService {
    cluster: Cluster,
    db: DatabaseConnection,
}

fn method_from(m: i32, default: Option<ExportMethod>) -> Result<Option<ExportMethod>, ApiError> {
    match pb::ExportMethod::try_from(m) {
        Ok(pb::ExportMethod::Unspecified) => Ok(default),
        Ok(pb::ExportMethod::Write) => Ok(Some(ExportMethod::Write)),
        Ok(pb::ExportMethod::Hardlink) => Ok(Some(ExportMethod::Hardlink)),
        Ok(pb::ExportMethod::Symlink) => Ok(Some(ExportMethod::Symlink)),
        Err(_) => Err(ApiError::InvalidArgument(format!(
            "method {m} is not one of WRITE, HARDLINK, SYMLINK"
        ))),
    }
}

fn method_to(m: ExportMethod) -> pb::ExportMethod {
    match m {
        ExportMethod::Write => pb::ExportMethod::Write,
        ExportMethod::Hardlink => pb::ExportMethod::Hardlink,
        ExportMethod::Symlink => pb::ExportMethod::Symlink,
    }
}

/// An exporter as sent to clients.
pub fn exporter(e: &Exporter) -> pb::FilesystemExporter {
    pb::FilesystemExporter {
        id: e.id.to_string(),
        name: e.name.clone(),
        path: e.path.clone(),
        method: method_to(e.method) as i32,
        created_at: timestamp(e.created_at),
        resource: exporters::resource(e.id).to_string(),
    }
}

impl ExportersService {
    /// Serves exporters from the cluster's database; dispatches through
    /// `cluster`.
    pub fn new(cluster: Cluster) -> Self {
        let db = cluster.db().clone();
        ExportersService { cluster, db }
    }

    async fn exporter(&self, id: ExporterId) -> Result<Exporter, ApiError> {
        exporters::get_exporter(&self.db, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("exporter {id} not found")))
    }

    async fn complete_version(
        &self,
        field: &str,
        id: RepositoryVersionId,
    ) -> Result<versions::Version, ApiError> {
        let version = versions::get_version(&self.db, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("{field} {id} not found")))?;
        if !version.complete {
            return Err(ApiError::InvalidArgument(format!(
                "{field} {id} is not complete"
            )));
        }
        Ok(version)
    }

    /// Validates an ExportRequest into the task that carries it out.
    async fn export_task(&self, r: &pb::ExportRequest) -> Result<NewTask, ApiError> {
        let exporter_id = ExporterId::parse(&r.exporter_id)
            .map_err(|e| ApiError::InvalidArgument(format!("exporter_id: {}", e.0)))?;
        let (func, kwargs, repository) = match (
            r.publication_id.is_empty(),
            r.repository_version_id.is_empty(),
        ) {
            (false, true) => {
                if !r.start_repository_version_id.is_empty() {
                    return Err(ApiError::InvalidArgument(
                            "start_repository_version_id goes with repository_version_id, not with a publication".into(),
                        ));
                }
                let id = PublicationId::parse(&r.publication_id)
                    .map_err(|e| ApiError::InvalidArgument(format!("publication_id: {}", e.0)))?;
                self.exporter(exporter_id).await?;
                let publication = publications::get_publication(&self.db, id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("publication {id} not found")))?;
                if !publication.complete {
                    return Err(ApiError::InvalidArgument(format!(
                        "publication {id} is not complete"
                    )));
                }
                (
                    FS_PUBLICATION_EXPORT,
                    json!({"exporter_pk": exporter_id.to_string(), "publication_pk": id.to_string()}),
                    publication.repository_id,
                )
            }
            (true, false) => {
                let id = RepositoryVersionId::parse(&r.repository_version_id).map_err(|e| {
                    ApiError::InvalidArgument(format!("repository_version_id: {}", e.0))
                })?;
                let start = (!r.start_repository_version_id.is_empty())
                    .then(|| RepositoryVersionId::parse(&r.start_repository_version_id))
                    .transpose()
                    .map_err(|e| {
                        ApiError::InvalidArgument(format!("start_repository_version_id: {}", e.0))
                    })?;
                self.exporter(exporter_id).await?;
                let version = self.complete_version("repository version", id).await?;
                if let Some(start) = start {
                    let start_version = self
                        .complete_version("start repository version", start)
                        .await?;
                    if start_version.repository_id != version.repository_id {
                        return Err(ApiError::InvalidArgument(format!(
                            "start repository version {start} is of another repository than {id}"
                        )));
                    }
                }
                (
                    FS_REPO_VERSION_EXPORT,
                    json!({
                        "exporter_pk": exporter_id.to_string(),
                        "repo_version_pk": id.to_string(),
                        "start_repository_version_pk": start.map(|s| s.to_string()),
                    }),
                    version.repository_id,
                )
            }
            _ => return Err(ApiError::InvalidArgument(ONE_SOURCE.into())),
        };
        Ok(NewTask {
            id: TaskId::new(),
            func: TaskName::parse(func)?,
            args: "[]".into(),
            kwargs: kwargs.to_string(),
            claims: ResourceClaims::new(
                [exporters::resource(exporter_id)],
                [repositories::resource(repository)],
            )?,
            task_group_id: None,
            parent_task_id: None,
            timeout_ms: None,
        })
    }
}

#[tonic::async_trait]
impl Exporters for ExportersService {
    async fn create_filesystem_exporter(
        &self,
        request: Request<pb::CreateFilesystemExporterRequest>,
    ) -> Result<Response<pb::FilesystemExporter>, Status> {
        let r = request.into_inner();
        let name = exporters::parse_name(&r.name).map_err(ApiError::from)?;
        let path = exporters::parse_path(&r.path).map_err(ApiError::from)?;
        let method = method_from(r.method, Some(ExportMethod::Write))?.unwrap_or_default();
        let txn = begin_write(&self.db).await.map_err(ApiError::from)?;
        let created = exporters::create(&txn, &name, &path, method)
            .await
            .map_err(ApiError::from)?;
        txn.commit().await.map_err(ApiError::from)?;
        debug!(exporter_id = %created.id, "exporter created");
        Ok(Response::new(exporter(&created)))
    }

    async fn get_exporter(
        &self,
        request: Request<pb::GetExporterRequest>,
    ) -> Result<Response<pb::FilesystemExporter>, Status> {
        let id = ExporterId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        Ok(Response::new(exporter(&self.exporter(id).await?)))
    }

    async fn list_exporters(
        &self,
        request: Request<pb::ListExportersRequest>,
    ) -> Result<Response<pb::ListExportersResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let after = page_token(&r.page_token, ExporterId::parse)?;
        let page = exporters::list(&self.db, after, limit)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListExportersResponse {
            next_page_token: next_token(&page, limit, |e| e.id.to_string()),
            exporters: page.iter().map(exporter).collect(),
        }))
    }

    async fn update_exporter(
        &self,
        request: Request<pb::UpdateExporterRequest>,
    ) -> Result<Response<pb::FilesystemExporter>, Status> {
        let r = request.into_inner();
        let id = ExporterId::parse(&r.id).map_err(ApiError::from)?;
        let name = r
            .name
            .as_deref()
            .map(exporters::parse_name)
            .transpose()
            .map_err(ApiError::from)?;
        let path = r
            .path
            .as_deref()
            .map(exporters::parse_path)
            .transpose()
            .map_err(ApiError::from)?;
        let method = method_from(r.method, None)?;
        let txn = begin_write(&self.db).await.map_err(ApiError::from)?;
        let updated = exporters::update(&txn, id, name.as_deref(), path.as_deref(), method)
            .await
            .map_err(ApiError::from)?;
        txn.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(exporter(&updated)))
    }

    async fn delete_exporter(
        &self,
        request: Request<pb::DeleteExporterRequest>,
    ) -> Result<Response<()>, Status> {
        let id = ExporterId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        let txn = begin_write(&self.db).await.map_err(ApiError::from)?;
        if !exporters::delete(&txn, id).await.map_err(ApiError::from)? {
            return Err(ApiError::NotFound(format!("exporter {id} not found")).into());
        }
        txn.commit().await.map_err(ApiError::from)?;
        debug!(exporter_id = %id, "exporter deleted");
        Ok(Response::new(()))
    }

    async fn list_exports(
        &self,
        request: Request<pb::ListExportsRequest>,
    ) -> Result<Response<pb::ListExportsResponse>, Status> {
        let r = request.into_inner();
        let id = ExporterId::parse(&r.exporter_id).map_err(ApiError::from)?;
        let limit = page_size(r.page_size)?;
        let after = page_token(&r.page_token, ExportId::parse)?;
        self.exporter(id).await?;
        let page = exporters::list_exports(&self.db, id, after, limit)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListExportsResponse {
            next_page_token: next_token(&page, limit, |e| e.id.to_string()),
            exports: page
                .iter()
                .map(|e| pb::Export {
                    id: e.id.to_string(),
                    exporter_id: e.exporter_id.to_string(),
                    task_id: e.task_id.clone(),
                    params: e.params.clone(),
                    created_at: timestamp(e.created_at),
                })
                .collect(),
        }))
    }

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<tasking::Task>, Status> {
        let engine = match self.cluster.route().await? {
            Route::Local(engine) => engine,
            Route::Remote(channel) => {
                return ExportersClient::new(channel).export(forward(request)).await;
            }
        };
        let task = self.export_task(request.get_ref()).await?;
        let record = engine.dispatch(task).await.map_err(ApiError::from)?;
        debug!(task_id = %record.id, func = %record.func, "export dispatched");
        Ok(Response::new(convert::task(&record)))
    }
}
