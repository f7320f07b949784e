//! `fs_publication_export(exporter_pk, publication_pk)` and
//! `fs_repo_version_export(exporter_pk, repo_version_pk,
//! start_repository_version_pk=None)`: the seed's file-system exports.
//!
//! Data flow: the kwargs are checked; the exporter, the publication or
//! version (and the start version of an incremental export) and the list
//! of files are read from the database; [`crate::layout::plan`] checks the
//! whole export (allowed path, empty target, relative paths, downloaded
//! artifacts present in storage with their sizes) before anything is
//! written; a [`Writer`] then places the files on a blocking thread,
//! [`FILES_PER_CALL`] per call, checking the cancellation token before
//! each file, with a progress report (`export.files`, done/total files)
//! and the test [`Hook`] between calls; the directories
//! are synced; finally the Export row is written in one transaction
//! committed through the task's fence, and recorded as the created
//! resource. An error, a cancellation or a failed fence removes the files
//! and directories the run created, so a failed export leaves the target
//! as it found it (absent or empty) and no Export record.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use pulp_common::content::artifacts::Sha256Digest;
use pulp_common::content::exporters::{self, ExportFile, Exporter};
use pulp_common::content::{ContentError, begin_write, publications, versions};
use pulp_common::names::{ExporterId, PublicationId, RepositoryVersionId};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::context::TaskContext;
use crate::layout::{self, LayoutError, Plan, Writer};
use crate::outcome::{TaskError, reason};
use crate::progress::ProgressReport;
use crate::registry::TaskResult;
use crate::tasks::add_and_remove::task_error;

/// The kwargs of `fs_publication_export`.
pub const PUBLICATION_KWARGS: [&str; 2] = ["exporter_pk", "publication_pk"];
/// The kwargs of `fs_repo_version_export`.
pub const VERSION_KWARGS: [&str; 3] = [
    "exporter_pk",
    "repo_version_pk",
    "start_repository_version_pk",
];
/// The progress report's code.
pub const PROGRESS_CODE: &str = "export.files";

/// What is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `fs_publication_export`.
    Publication,
    /// `fs_repo_version_export`.
    Version,
}

/// Where a run stands when its [`Hook`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Everything is checked; nothing is written yet.
    Planned {
        /// Files to place.
        total: u64,
    },
    /// A file was placed.
    Placed {
        /// Files placed so far.
        done: u64,
        /// Files in all.
        total: u64,
    },
    /// Every file is placed and synced; the Export row is written but not
    /// committed.
    BeforeCommit,
}

/// Awaited at every [`Phase`] with the run's cancellation token.
pub type Hook = Arc<dyn Fn(Phase, CancellationToken) -> BoxFuture<'static, ()> + Send + Sync>;

fn no_hook() -> Hook {
    Arc::new(|_, _| async {}.boxed())
}

/// Files placed per blocking call at most (the cancellation token is also
/// checked before each file inside a call). One call per file cost about
/// 100 µs of hand-off per file on a busy 2-core machine, more than a hard
/// link itself.
pub const FILES_PER_CALL: usize = 128;

/// The registered `fs_publication_export`.
pub async fn fs_publication_export(ctx: TaskContext) -> TaskResult {
    run(ctx, Source::Publication, no_hook(), FILES_PER_CALL).await
}

/// The registered `fs_repo_version_export`.
pub async fn fs_repo_version_export(ctx: TaskContext) -> TaskResult {
    run(ctx, Source::Version, no_hook(), FILES_PER_CALL).await
}

/// The checked kwargs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    exporter: ExporterId,
    publication: Option<PublicationId>,
    version: Option<RepositoryVersionId>,
    start: Option<RepositoryVersionId>,
}

fn id_kwarg<T>(
    ctx: &TaskContext,
    name: &str,
    parse: impl Fn(&str) -> Result<T, pulp_common::names::InvalidName>,
) -> Result<Option<T>, TaskError> {
    ctx.kwarg_str(name)?
        .map(|s| {
            parse(s).map_err(|e| TaskError::invalid_arguments(format!("kwargs.{name}: {}", e.0)))
        })
        .transpose()
}

fn parse(ctx: &TaskContext, source: Source) -> Result<Args, TaskError> {
    let required = |name: &str| TaskError::invalid_arguments(format!("kwargs.{name} is required"));
    let args = match source {
        Source::Publication => {
            super::check_kwargs(ctx, &ctx.func, &PUBLICATION_KWARGS)?;
            Args {
                exporter: id_kwarg(ctx, "exporter_pk", ExporterId::parse)?
                    .ok_or_else(|| required("exporter_pk"))?,
                publication: Some(
                    id_kwarg(ctx, "publication_pk", PublicationId::parse)?
                        .ok_or_else(|| required("publication_pk"))?,
                ),
                version: None,
                start: None,
            }
        }
        Source::Version => {
            super::check_kwargs(ctx, &ctx.func, &VERSION_KWARGS)?;
            Args {
                exporter: id_kwarg(ctx, "exporter_pk", ExporterId::parse)?
                    .ok_or_else(|| required("exporter_pk"))?,
                publication: None,
                version: Some(
                    id_kwarg(ctx, "repo_version_pk", RepositoryVersionId::parse)?
                        .ok_or_else(|| required("repo_version_pk"))?,
                ),
                start: id_kwarg(
                    ctx,
                    "start_repository_version_pk",
                    RepositoryVersionId::parse,
                )?,
            }
        }
    };
    Ok(args)
}

fn not_found(what: String) -> TaskError {
    TaskError::new(reason::NOT_FOUND, what)
}

fn db_error(err: sea_orm::DbErr) -> TaskError {
    task_error(ContentError::Db(err))
}

fn layout_error(err: LayoutError) -> TaskError {
    TaskError::task(err.to_string())
}

/// Reads the exporter and the file list.
async fn load(
    ctx: &TaskContext,
    args: &Args,
) -> Result<(Exporter, Vec<ExportFile>, Value), TaskError> {
    let db = ctx.database()?;
    let exporter = exporters::get_exporter(db, args.exporter)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(format!("exporter {} not found", args.exporter)))?;
    let version_of = |id: RepositoryVersionId| async move {
        let found = versions::get_version(db, id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found(format!("repository version {id} not found")))?;
        if !found.complete {
            return Err(TaskError::invalid_arguments(format!(
                "repository version {id} is not complete"
            )));
        }
        Ok(found)
    };
    let mut params = json!({
        "exporter_pk": args.exporter.to_string(),
        "path": exporter.path,
        "method": exporter.method.as_str(),
    });
    let files = if let Some(id) = args.publication {
        let publication = publications::get_publication(db, id)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found(format!("publication {id} not found")))?;
        if !publication.complete {
            return Err(TaskError::invalid_arguments(format!(
                "publication {id} is not complete"
            )));
        }
        let version = version_of(publication.repository_version_id).await?;
        params["publication_pk"] = json!(id.to_string());
        exporters::publication_files(db, &publication, &version)
            .await
            .map_err(db_error)?
    } else {
        let id = args.version.expect("a version export names its version");
        let version = version_of(id).await?;
        let start = match args.start {
            None => None,
            Some(start) => {
                let start = version_of(start).await?;
                if start.repository_id != version.repository_id {
                    return Err(TaskError::invalid_arguments(format!(
                        "start version {} is of another repository than version {id}",
                        start.id
                    )));
                }
                params["start_repository_version_pk"] = json!(start.id.to_string());
                Some(start)
            }
        };
        params["repo_version_pk"] = json!(id.to_string());
        exporters::version_files(db, &version, start.as_ref())
            .await
            .map_err(db_error)?
    };
    Ok((exporter, files, params))
}

/// Runs an export of `source`, placing up to `files_per_call` files per
/// blocking call and awaiting `hook` at each phase (after each call for
/// [`Phase::Placed`]).
pub async fn run(
    ctx: TaskContext,
    source: Source,
    hook: Hook,
    files_per_call: usize,
) -> TaskResult {
    let args = parse(&ctx, source)?;
    let (exporter, files, mut params) = load(&ctx, &args).await?;
    let token = ctx.cancellation().clone();

    let allowed = ctx.allowed_export_paths().to_vec();
    let storage = ctx.storage().clone();
    let path = exporter.path.clone();
    let plan: Plan = tokio::task::spawn_blocking(move || {
        let storage_root =
            layout::resolve(&std::path::absolute(storage.root()).map_err(|source| {
                LayoutError::Io {
                    context: format!("resolve the storage directory {}", storage.root().display()),
                    source,
                }
            })?)?;
        let resolved = pulp_common::content::storage::Storage::new(storage_root);
        layout::plan(&path, &allowed, &files, |sha| {
            let digest = Sha256Digest::parse(sha).map_err(|e| LayoutError::Refused(e.0))?;
            Ok(resolved.artifact_path(&digest))
        })
    })
    .await
    .map_err(|e| TaskError::task(format!("planning the export failed: {e}")))?
    .map_err(layout_error)?;
    let total = plan.files.len() as u64;
    let report = |done: u64| {
        let mut r =
            ProgressReport::new("Exporting files", PROGRESS_CODE, done as i64, total as i64);
        r.suffix = "files".into();
        ctx.report_progress(r);
    };
    report(0);
    hook(Phase::Planned { total }, token.clone()).await;
    if token.is_cancelled() {
        return Err(TaskError::canceled());
    }

    let plan = Arc::new(plan);
    let method = exporter.method;
    let mut writer = {
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || Writer::begin(&plan, method))
            .await
            .map_err(|e| TaskError::task(format!("creating the export directories failed: {e}")))?
            .map_err(layout_error)?
    };
    // `writer` moves into and back out of each blocking call; a call that
    // panicked loses it, and with it the roll back (the task fails).
    let joined = |e: tokio::task::JoinError| TaskError::task(format!("export thread failed: {e}"));
    let batch = files_per_call.max(1);
    let mut next = 0;
    while next < plan.files.len() {
        if token.is_cancelled() {
            return Err(abandon(writer, TaskError::canceled()).await);
        }
        let end = (next + batch).min(plan.files.len());
        let (plan, stop) = (plan.clone(), token.clone());
        let (back, placed, result) = tokio::task::spawn_blocking(move || {
            let mut placed = 0;
            for file in &plan.files[next..end] {
                if stop.is_cancelled() {
                    break;
                }
                if let Err(err) = writer.place(file) {
                    return (writer, placed, Err(err));
                }
                placed += 1;
            }
            (writer, placed, Ok(()))
        })
        .await
        .map_err(joined)?;
        writer = back;
        if let Err(err) = result {
            return Err(abandon(writer, layout_error(err)).await);
        }
        next += placed;
        let done = next as u64;
        report(done);
        hook(Phase::Placed { done, total }, token.clone()).await;
    }
    let (back, synced) = tokio::task::spawn_blocking(move || {
        let synced = writer.finish();
        (writer, synced)
    })
    .await
    .map_err(joined)?;
    writer = back;
    if let Err(err) = synced {
        return Err(abandon(writer, layout_error(err)).await);
    }
    params["files"] = json!(total);
    let export = match record(&ctx, exporter.id, &params, &hook, &token).await {
        Ok(export) => export,
        Err(err) => return Err(abandon(writer, err).await),
    };
    ctx.record_created_resource(exporters::export_resource(exporter.id, export.id).to_string());
    info!(
        export_id = %export.id,
        exporter_id = %exporter.id,
        files = total,
        bytes = plan.bytes,
        method = %exporter.method,
        "export finished"
    );
    Ok(json!({
        "export_id": export.id.to_string(),
        "exporter_id": exporter.id.to_string(),
        "path": plan.target.display().to_string(),
        "method": exporter.method.as_str(),
        "files": total,
        "bytes": plan.bytes,
        "copied_instead_of_linked": writer.copied_instead_of_linked,
    }))
}

/// Removes what `writer` created and returns `err`.
async fn abandon(mut writer: Writer, err: TaskError) -> TaskError {
    let _ = tokio::task::spawn_blocking(move || writer.roll_back()).await;
    err
}

/// Writes the Export row and commits it through the task's fence.
async fn record(
    ctx: &TaskContext,
    exporter: ExporterId,
    params: &Value,
    hook: &Hook,
    token: &CancellationToken,
) -> Result<exporters::Export, TaskError> {
    let db = ctx.database()?;
    let txn = begin_write(db).await.map_err(db_error)?;
    let export = exporters::record_export(&txn, exporter, ctx.task_id, params)
        .await
        .map_err(db_error)?;
    hook(Phase::BeforeCommit, token.clone()).await;
    if token.is_cancelled() {
        let _ = txn.rollback().await;
        return Err(TaskError::canceled());
    }
    ctx.fence().commit(txn).await.map_err(task_error)?;
    Ok(export)
}
