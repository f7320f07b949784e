//! `pulp.content.v1.Artifacts`: streamed uploads, verified before the
//! artifact exists.
//!
//! The header is checked first (digest form, size against
//! `--max-upload-bytes`), before any byte is read. Chunks go to a
//! temporary file in the storage directory through
//! [`pulp_common::content::storage::Upload`], which hashes them as they
//! arrive; a stream that sends more than the stated size is cut off at
//! once. At the end the size and digest are compared, and only then are
//! the file moved into place and the row inserted
//! ([`pulp_common::content::artifacts::store`]). Every early return drops
//! the upload, which deletes the temporary file.

use super::super::ApiError;
use super::timestamp;
use pulp_common::content::artifacts::{self, Artifact, Sha256Digest};
use pulp_common::content::storage::Storage;
use pulp_common::names::ArtifactId;
use pulp_common::proto::content::v1 as pb;
use pulp_common::proto::content::v1::artifacts_server::Artifacts;
use pulp_common::proto::content::v1::upload_artifact_request::Part;
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

/// The Artifacts service.
#[derive(Debug, Clone)]
pub struct ArtifactsService {
    db: DatabaseConnection,
    storage: Storage,
    max_upload_bytes: u64,
}

impl ArtifactsService {
    /// Serves artifacts from `db`, with files in `storage`.
    pub fn new(db: DatabaseConnection, storage: Storage, max_upload_bytes: u64) -> Self {
        ArtifactsService {
            db,
            storage,
            max_upload_bytes,
        }
    }

    async fn upload(
        &self,
        mut stream: Streaming<pb::UploadArtifactRequest>,
    ) -> Result<Artifact, ApiError> {
        let invalid = |m: String| ApiError::InvalidArgument(m);
        let header = match stream.message().await.map_err(stream_error)? {
            Some(pb::UploadArtifactRequest {
                part: Some(Part::Header(header)),
            }) => header,
            Some(_) => {
                return Err(invalid(
                    "the first message of an upload must carry the header (sha256 and size)".into(),
                ));
            }
            None => {
                return Err(invalid(
                    "the upload stream is empty: send the header first".into(),
                ));
            }
        };
        let sha256 = Sha256Digest::parse(&header.sha256)?;
        let size = u64::try_from(header.size)
            .map_err(|_| invalid(format!("size {} is negative", header.size)))?;
        if size > self.max_upload_bytes {
            return Err(invalid(format!(
                "size {size} exceeds the upload limit of {} bytes (the scheduler's --max-upload-bytes)",
                self.max_upload_bytes
            )));
        }
        let mut upload = self.storage.begin_upload().await?;
        while let Some(message) = stream.message().await.map_err(stream_error)? {
            match message.part {
                Some(Part::Chunk(bytes)) => {
                    if upload.written() + bytes.len() as u64 > size {
                        return Err(invalid(format!(
                            "the upload sent more than the {size} bytes its header stated: nothing was stored"
                        )));
                    }
                    upload.write(&bytes).await?;
                }
                Some(Part::Header(_)) => {
                    return Err(invalid(
                        "an upload has one header, in its first message".into(),
                    ));
                }
                None => {
                    return Err(invalid(
                        "an upload message carries neither a header nor a chunk".into(),
                    ));
                }
            }
        }
        let file = upload.finish(&sha256, size).await?;
        Ok(artifacts::store(&self.db, &self.storage, file).await?)
    }
}

/// A broken upload stream (the client went away, a bad frame).
fn stream_error(status: Status) -> ApiError {
    ApiError::InvalidArgument(format!("the upload stream failed: {}", status.message()))
}

/// An artifact as sent to clients.
pub fn artifact(a: &Artifact) -> pb::Artifact {
    pb::Artifact {
        id: a.id.to_string(),
        sha256: a.sha256.clone(),
        size: a.size,
        created_at: timestamp(a.created_at),
    }
}

#[tonic::async_trait]
impl Artifacts for ArtifactsService {
    async fn upload_artifact(
        &self,
        request: Request<Streaming<pb::UploadArtifactRequest>>,
    ) -> Result<Response<pb::Artifact>, Status> {
        let stored = self.upload(request.into_inner()).await?;
        info!(artifact_id = %stored.id, sha256 = %stored.sha256, size = stored.size, "artifact uploaded");
        Ok(Response::new(artifact(&stored)))
    }

    async fn get_artifact(
        &self,
        request: Request<pb::GetArtifactRequest>,
    ) -> Result<Response<pb::Artifact>, Status> {
        let id = ArtifactId::parse(&request.into_inner().id).map_err(ApiError::from)?;
        let found = artifacts::get_artifact(&self.db, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("artifact {id} not found")))?;
        Ok(Response::new(artifact(&found)))
    }
}
