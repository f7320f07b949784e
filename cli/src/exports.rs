//! The publication and export commands: `publication create|list|show`,
//! `exporter create|list|show|delete` and `export`, over
//! `pulp.content.v1.Publications` and `Exporters`.
//!
//! `publication create` and `export` dispatch tasks; with `--wait` they
//! follow the task like `dispatch --wait`, whose live display shows the
//! export's progress report (`export.files`, files written of the total)
//! as a bar on stderr. A repository version is named by id, or as
//! `REPO[:NUMBER]` (a repository id or name, the latest version without a
//! number). An exporter is named by id or by name.

use std::io::Write;

use pulp_common::proto::content::v1 as pb;
use serde_json::{Value as Json, json};

use crate::cli::{ExportArgs, ExporterCommand, MethodArg, PublicationCommand};
use crate::client::Scheduler;
use crate::content::{PAGE, all_pages, resolve, time, uuid_like};
use crate::error::CliError;
use crate::output::{Printer, key_values, table, timestamp_json};
use crate::tasks::wait_for;

/// A version id from `ID` or `REPO[:NUMBER]`.
async fn version_id(scheduler: &Scheduler, spec: &str) -> Result<String, CliError> {
    if uuid_like(spec) {
        return Ok(spec.to_owned());
    }
    let (repo, number) = match spec.rsplit_once(':') {
        Some((repo, n)) if n.parse::<i64>().is_ok() => (repo, Some(n.parse::<i64>().unwrap_or(0))),
        _ => (spec, None),
    };
    let repo = resolve(scheduler, repo).await?;
    Ok(scheduler
        .repositories()
        .get_repository_version(pb::GetRepositoryVersionRequest {
            id: String::new(),
            repository_id: repo.id,
            number,
        })
        .await?
        .into_inner()
        .id)
}

/// Runs one `publication` command.
pub async fn publication<W: Write>(
    scheduler: &Scheduler,
    command: PublicationCommand,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let mut client = scheduler.publications();
    match command {
        PublicationCommand::Create {
            version,
            pass_through,
            wait,
        } => {
            let repository_version_id = version_id(scheduler, &version).await?;
            let task = client
                .create_publication(pb::CreatePublicationRequest {
                    repository_version_id,
                    pass_through,
                })
                .await?
                .into_inner();
            if wait {
                return wait_for(scheduler, &task.id, printer).await;
            }
            printer.task_summary(&task)?;
        }
        PublicationCommand::List => {
            let all = all_pages(|page_token| {
                let mut client = client.clone();
                async move {
                    let page = client
                        .list_publications(pb::ListPublicationsRequest {
                            repository_id: String::new(),
                            page_size: PAGE,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.publications, page.next_page_token))
                }
            })
            .await?;
            printer.either(
                || Json::Array(all.iter().map(publication_json).collect()),
                || {
                    table(
                        &[
                            "ID",
                            "VERSION",
                            "NUMBER",
                            "PASS-THROUGH",
                            "FILES",
                            "CREATED",
                        ],
                        all.iter().map(|p| {
                            vec![
                                p.id.clone(),
                                p.repository_version_id.clone(),
                                p.repository_version_number.to_string(),
                                p.pass_through.to_string(),
                                p.files.to_string(),
                                time(p.created_at.as_ref()),
                            ]
                        }),
                    )
                },
            )?;
        }
        PublicationCommand::Show { id } => {
            let p = client
                .get_publication(pb::GetPublicationRequest { id })
                .await?
                .into_inner();
            printer.either(
                || publication_json(&p),
                || {
                    key_values(&[
                        ("id", p.id.clone()),
                        ("repository", p.repository_id.clone()),
                        ("version", p.repository_version_id.clone()),
                        ("number", p.repository_version_number.to_string()),
                        ("pass-through", p.pass_through.to_string()),
                        ("complete", p.complete.to_string()),
                        ("files", p.files.to_string()),
                        ("created", time(p.created_at.as_ref())),
                        ("task", p.created_by_task_id.clone()),
                    ])
                },
            )?;
        }
    }
    Ok(0)
}

/// A publication as JSON with the proto field names.
pub fn publication_json(p: &pb::Publication) -> Json {
    json!({
        "id": p.id,
        "repository_id": p.repository_id,
        "repository_version_id": p.repository_version_id,
        "repository_version_number": p.repository_version_number,
        "pass_through": p.pass_through,
        "complete": p.complete,
        "files": p.files,
        "created_at": timestamp_json(p.created_at.as_ref()),
        "created_by_task_id": p.created_by_task_id,
        "resource": p.resource,
    })
}

fn method_name(m: i32) -> &'static str {
    match pb::ExportMethod::try_from(m) {
        Ok(pb::ExportMethod::Hardlink) => "hardlink",
        Ok(pb::ExportMethod::Symlink) => "symlink",
        _ => "write",
    }
}

/// An exporter as JSON with the proto field names.
pub fn exporter_json(e: &pb::FilesystemExporter) -> Json {
    json!({
        "id": e.id,
        "name": e.name,
        "path": e.path,
        "method": method_name(e.method),
        "created_at": timestamp_json(e.created_at.as_ref()),
        "resource": e.resource,
    })
}

async fn all_exporters(scheduler: &Scheduler) -> Result<Vec<pb::FilesystemExporter>, CliError> {
    let client = scheduler.exporters();
    all_pages(|page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_exporters(pb::ListExportersRequest {
                    page_size: PAGE,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((page.exporters, page.next_page_token))
        }
    })
    .await
}

/// An exporter by id, or else by name.
async fn exporter_named(
    scheduler: &Scheduler,
    spec: &str,
) -> Result<pb::FilesystemExporter, CliError> {
    if uuid_like(spec) {
        return Ok(scheduler
            .exporters()
            .get_exporter(pb::GetExporterRequest { id: spec.into() })
            .await?
            .into_inner());
    }
    all_exporters(scheduler)
        .await?
        .into_iter()
        .find(|e| e.name == spec)
        .ok_or_else(|| {
            tonic::Status::not_found(format!("no exporter has the id or name {spec:?}")).into()
        })
}

/// Runs one `exporter` command.
pub async fn exporter<W: Write>(
    scheduler: &Scheduler,
    command: ExporterCommand,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let mut client = scheduler.exporters();
    match command {
        ExporterCommand::Create { name, path, method } => {
            let method = match method {
                MethodArg::Write => pb::ExportMethod::Write,
                MethodArg::Hardlink => pb::ExportMethod::Hardlink,
                MethodArg::Symlink => pb::ExportMethod::Symlink,
            };
            let e = client
                .create_filesystem_exporter(pb::CreateFilesystemExporterRequest {
                    name,
                    path,
                    method: method as i32,
                })
                .await?
                .into_inner();
            printer.either(|| exporter_json(&e), || exporter_detail(&e, &[]))?;
        }
        ExporterCommand::List => {
            let all = all_exporters(scheduler).await?;
            printer.either(
                || Json::Array(all.iter().map(exporter_json).collect()),
                || {
                    table(
                        &["ID", "NAME", "METHOD", "PATH"],
                        all.iter().map(|e| {
                            vec![
                                e.id.clone(),
                                e.name.clone(),
                                method_name(e.method).into(),
                                e.path.clone(),
                            ]
                        }),
                    )
                },
            )?;
        }
        ExporterCommand::Show { exporter } => {
            let e = exporter_named(scheduler, &exporter).await?;
            let exports = client
                .list_exports(pb::ListExportsRequest {
                    exporter_id: e.id.clone(),
                    page_size: PAGE,
                    page_token: String::new(),
                })
                .await?
                .into_inner()
                .exports;
            printer.either(
                || {
                    let mut doc = exporter_json(&e);
                    doc["exports"] = exports
                        .iter()
                        .map(|x| {
                            json!({
                                "id": x.id,
                                "task_id": x.task_id,
                                "params": serde_json::from_str::<Json>(&x.params).unwrap_or(Json::Null),
                                "created_at": timestamp_json(x.created_at.as_ref()),
                            })
                        })
                        .collect();
                    doc
                },
                || exporter_detail(&e, &exports),
            )?;
        }
        ExporterCommand::Delete { exporter } => {
            let e = exporter_named(scheduler, &exporter).await?;
            client
                .delete_exporter(pb::DeleteExporterRequest { id: e.id.clone() })
                .await?;
            printer.either(
                || json!({"deleted": e.id}),
                || format!("deleted exporter {}", e.id),
            )?;
        }
    }
    Ok(0)
}

fn exporter_detail(e: &pb::FilesystemExporter, exports: &[pb::Export]) -> String {
    let exports = exports
        .iter()
        .map(|x| {
            format!(
                "{} by task {} at {}",
                x.id,
                x.task_id,
                time(x.created_at.as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    key_values(&[
        ("id", e.id.clone()),
        ("name", e.name.clone()),
        ("path", e.path.clone()),
        ("method", method_name(e.method).into()),
        ("created", time(e.created_at.as_ref())),
        ("resource", e.resource.clone()),
        (
            "exports",
            if exports.is_empty() {
                "-".into()
            } else {
                exports
            },
        ),
    ])
}

/// `export`: Export, then the task (followed with `--wait`).
pub async fn export<W: Write>(
    scheduler: &Scheduler,
    args: ExportArgs,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let exporter = exporter_named(scheduler, &args.exporter).await?;
    let repository_version_id = match &args.version {
        Some(v) => version_id(scheduler, v).await?,
        None => String::new(),
    };
    let start_repository_version_id = match &args.start {
        Some(v) => version_id(scheduler, v).await?,
        None => String::new(),
    };
    let task = scheduler
        .exporters()
        .export(pb::ExportRequest {
            exporter_id: exporter.id,
            publication_id: args.publication.unwrap_or_default(),
            repository_version_id,
            start_repository_version_id,
        })
        .await?
        .into_inner();
    if args.wait {
        return wait_for(scheduler, &task.id, printer).await;
    }
    printer.task_summary(&task)?;
    Ok(0)
}
