//! `pulp.content.v1.Contents`: content units are created and read here
//! directly in the database; they enter repositories through
//! `Repositories.Modify`.

use super::super::ApiError;
use super::{next_token, page_size, page_token, timestamp, type_filter};
use pulp_common::content::begin_write;
use pulp_common::content::contents::{
    self, Content, NewContent, PulpType, RelativePath, parse_natural_key,
};
use pulp_common::names::{ArtifactId, ContentId};
use pulp_common::proto::content::v1 as pb;
use pulp_common::proto::content::v1::contents_server::Contents;
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

/// The Contents service.
#[derive(Debug, Clone)]
pub struct ContentsService {
    db: DatabaseConnection,
}

impl ContentsService {
    /// Serves content units from `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        ContentsService { db }
    }
}

/// A content unit as sent to clients.
pub fn content(c: &Content) -> pb::Content {
    pb::Content {
        id: c.id.clone(),
        pulp_type: c.pulp_type.clone(),
        natural_key: c.natural_key.clone(),
        artifacts: c
            .artifacts
            .iter()
            .map(|a| pb::ContentArtifact {
                relative_path: a.relative_path.clone(),
                artifact_id: a.artifact_id.clone(),
                sha256: a.sha256.clone().unwrap_or_default(),
            })
            .collect(),
        created_at: timestamp(c.created_at),
    }
}

/// A CreateContentRequest, validated.
fn new_content(r: &pb::CreateContentRequest) -> Result<NewContent, ApiError> {
    let pulp_type = PulpType::parse(&r.pulp_type)?;
    let natural_key = parse_natural_key(&r.natural_key)?;
    let artifacts = r
        .artifacts
        .iter()
        .map(|a| {
            let path = RelativePath::parse(&a.relative_path)?;
            let artifact = a
                .artifact_id
                .as_deref()
                .map(ArtifactId::parse)
                .transpose()?;
            Ok((path, artifact))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(NewContent::new(pulp_type, natural_key, artifacts)?)
}

#[tonic::async_trait]
impl Contents for ContentsService {
    async fn create_content(
        &self,
        request: Request<pb::CreateContentRequest>,
    ) -> Result<Response<pb::Content>, Status> {
        let new = new_content(request.get_ref())?;
        let txn = begin_write(&self.db).await.map_err(ApiError::from)?;
        let created = contents::create(&txn, &new).await.map_err(ApiError::from)?;
        txn.commit().await.map_err(ApiError::from)?;
        Ok(Response::new(content(&created)))
    }

    async fn get_content(
        &self,
        request: Request<pb::GetContentRequest>,
    ) -> Result<Response<pb::Content>, Status> {
        let id = ContentId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        let found = contents::get_content(&self.db, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("content unit {id} not found")))?;
        Ok(Response::new(content(&found)))
    }

    async fn list_contents(
        &self,
        request: Request<pb::ListContentsRequest>,
    ) -> Result<Response<pb::ListContentsResponse>, Status> {
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let after = page_token(&r.page_token, ContentId::parse)?;
        let pulp_type = type_filter(&r.pulp_type)?;
        let page = contents::list(&self.db, pulp_type.as_ref(), after, limit)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListContentsResponse {
            next_page_token: next_token(&page, limit, |c| c.id.clone()),
            contents: page.iter().map(content).collect(),
        }))
    }
}
