//! `publish(repository_version_pk, pass_through=False)`: creates a
//! publication of a complete repository version (see
//! `pulp_common::content::publications`) in one fenced transaction, and
//! records it as the task's created resource. Dispatched by
//! `Publications.CreatePublication` with the version's repository as a
//! shared resource, as newer Pulp does: publishing only reads the version.

use pulp_common::content::{begin_write, publications, versions};
use pulp_common::names::RepositoryVersionId;
use serde_json::json;
use tracing::info;

use crate::context::TaskContext;
use crate::outcome::{TaskError, reason};
use crate::progress::ProgressReport;
use crate::registry::TaskResult;
use crate::tasks::add_and_remove::task_error;

/// The keyword arguments the task takes.
pub const KWARGS: [&str; 2] = ["repository_version_pk", "pass_through"];

/// The registered task.
pub async fn publish(ctx: TaskContext) -> TaskResult {
    super::check_kwargs(&ctx, "publish", &KWARGS)?;
    let version = ctx
        .kwarg_str("repository_version_pk")?
        .ok_or_else(|| TaskError::invalid_arguments("kwargs.repository_version_pk is required"))?;
    let version = RepositoryVersionId::parse(version).map_err(|e| {
        TaskError::invalid_arguments(format!("kwargs.repository_version_pk: {}", e.0))
    })?;
    let pass_through = ctx.kwarg_bool("pass_through")?.unwrap_or(false);
    let db = ctx.database()?.clone();
    ctx.report_progress(ProgressReport::new("Publishing", "publish", 0, 1));

    let txn = begin_write(&db).await.map_err(|e| task_error(e.into()))?;
    let found = versions::get_version(&txn, version)
        .await
        .map_err(|e| task_error(e.into()))?
        .ok_or_else(|| {
            TaskError::new(
                reason::NOT_FOUND,
                format!("repository version {version} not found"),
            )
        })?;
    let publication = publications::create(&txn, &found, pass_through, Some(ctx.task_id))
        .await
        .map_err(task_error)?;
    if ctx.is_cancelled() {
        let _ = txn.rollback().await;
        return Err(TaskError::canceled());
    }
    ctx.fence().commit(txn).await.map_err(task_error)?;
    ctx.record_created_resource(publications::resource(publication.id).to_string());
    ctx.report_progress(ProgressReport::new("Publishing", "publish", 1, 1));
    info!(publication_id = %publication.id, files = publication.files, pass_through, "publication created");
    Ok(json!({
        "publication_id": publication.id.to_string(),
        "repository_version_id": version.to_string(),
        "pass_through": pass_through,
        "files": publication.files,
    }))
}
