//! The content commands: `repo create|list|show|versions|content|modify`,
//! `artifact upload` and `content create|list|show`, over `pulp.content.v1`.
//!
//! A repository is named by id or by name ([`resolve`] looks a name up in
//! `ListRepositories`). `repo modify` sends `Repositories.Modify` and, with
//! `--wait`, follows the dispatched task like `dispatch --wait`.
//! `artifact upload` reads the file twice: once to compute the SHA-256 and
//! size the header must state, then to stream it in 1 MiB chunks, with a
//! progress bar on stderr for files of 1 MiB or more when stderr is a
//! terminal. Results print as tables and key/value views, or as one JSON
//! document with the proto field names.

use std::io::{IsTerminal, Write};
use std::path::Path;

use chrono::SecondsFormat;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pulp_common::content::artifacts::Sha256Digest;
use pulp_common::proto::content::v1::{self as pb, upload_artifact_request::Part};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::cli::{ArtifactCommand, ContentCommand, ModifyArgs, RepoCommand};
use crate::client::Scheduler;
use crate::error::CliError;
use crate::output::{Printer, format_timestamp, key_values, or_dash, table, timestamp_json};
use crate::tasks::wait_for;

/// Bytes per upload message.
const CHUNK: usize = 1024 * 1024;
/// Largest page the list calls serve.
pub(crate) const PAGE: i32 = 1000;

/// Runs one `repo` command.
pub async fn repo<W: Write>(
    scheduler: &Scheduler,
    command: RepoCommand,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let mut client = scheduler.repositories();
    match command {
        RepoCommand::Create { name, description } => {
            let repo = client
                .create_repository(pb::CreateRepositoryRequest { name, description })
                .await?
                .into_inner();
            printer.either(|| repository_json(&repo), || repository_detail(&repo, None))?;
        }
        RepoCommand::List => {
            let repos = all_repositories(scheduler).await?;
            printer.either(
                || Json::Array(repos.iter().map(repository_json).collect()),
                || repositories_table(&repos),
            )?;
        }
        RepoCommand::Show { repo } => {
            let repo = resolve(scheduler, &repo).await?;
            let latest = client
                .get_repository_version(pb::GetRepositoryVersionRequest {
                    id: repo.latest_version_id.clone(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            printer.either(
                || {
                    let mut doc = repository_json(&repo);
                    doc["latest_version"] = version_json(&latest);
                    doc
                },
                || repository_detail(&repo, Some(&latest)),
            )?;
        }
        RepoCommand::Versions { repo } => {
            let repo = resolve(scheduler, &repo).await?;
            let versions = all_pages(|page_token| {
                let mut client = client.clone();
                let repository_id = repo.id.clone();
                async move {
                    let page = client
                        .list_repository_versions(pb::ListRepositoryVersionsRequest {
                            repository_id,
                            page_size: PAGE,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.versions, page.next_page_token))
                }
            })
            .await?;
            printer.either(
                || Json::Array(versions.iter().map(version_json).collect()),
                || versions_table(&versions),
            )?;
        }
        RepoCommand::Content {
            repo,
            version,
            pulp_type,
        } => {
            let repo = resolve(scheduler, &repo).await?;
            let version = client
                .get_repository_version(pb::GetRepositoryVersionRequest {
                    id: String::new(),
                    repository_id: repo.id.clone(),
                    number: version,
                })
                .await?
                .into_inner();
            let units = all_pages(|page_token| {
                let mut client = client.clone();
                let version_id = version.id.clone();
                let pulp_type = pulp_type.clone().unwrap_or_default();
                async move {
                    let page = client
                        .list_version_content(pb::ListVersionContentRequest {
                            version_id,
                            pulp_type,
                            page_size: PAGE,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.contents, page.next_page_token))
                }
            })
            .await?;
            printer.either(
                || Json::Array(units.iter().map(content_json).collect()),
                || contents_table(&units),
            )?;
        }
        RepoCommand::Modify(args) => return modify(scheduler, args, printer).await,
    }
    Ok(0)
}

/// `repo modify`: Modify, then the task (followed with `--wait`).
async fn modify<W: Write>(
    scheduler: &Scheduler,
    args: ModifyArgs,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let repo = resolve(scheduler, &args.repo).await?;
    let task = scheduler
        .repositories()
        .modify(pb::ModifyRequest {
            repository_id: repo.id,
            add_content_units: args.add,
            remove_content_units: args.remove,
            base_version_id: args.base.unwrap_or_default(),
        })
        .await?
        .into_inner();
    if args.wait {
        return wait_for(scheduler, &task.id, printer).await;
    }
    printer.task_summary(&task)?;
    Ok(0)
}

/// A repository by id, or else by name.
pub async fn resolve(scheduler: &Scheduler, repo: &str) -> Result<pb::Repository, CliError> {
    if uuid_like(repo) {
        return Ok(scheduler
            .repositories()
            .get_repository(pb::GetRepositoryRequest {
                id: repo.to_owned(),
            })
            .await?
            .into_inner());
    }
    all_repositories(scheduler)
        .await?
        .into_iter()
        .find(|r| r.name == repo)
        .ok_or_else(|| {
            tonic::Status::not_found(format!("no repository has the id or name {repo:?}")).into()
        })
}

/// Every repository, page after page.
async fn all_repositories(scheduler: &Scheduler) -> Result<Vec<pb::Repository>, CliError> {
    let client = scheduler.repositories();
    all_pages(|page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_repositories(pb::ListRepositoriesRequest {
                    page_size: PAGE,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((page.repositories, page.next_page_token))
        }
    })
    .await
}

/// Every item of a paged list: `fetch(page_token)` returns one page and the
/// token of the next (empty after the last).
pub(crate) async fn all_pages<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, CliError>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), CliError>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = fetch(token).await?;
        items.extend(page);
        if next.is_empty() {
            return Ok(items);
        }
        token = next;
    }
}

/// 36 characters of hex digits and hyphens: an id, not a name.
pub(crate) fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Runs one `artifact` command.
pub async fn artifact<W: Write>(
    scheduler: &Scheduler,
    command: ArtifactCommand,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let ArtifactCommand::Upload { file } = command;
    let artifact = upload(scheduler, &file).await?;
    printer.either(
        || artifact_json(&artifact),
        || {
            key_values(&[
                ("id", artifact.id.clone()),
                ("sha256", artifact.sha256.clone()),
                ("size", artifact.size.to_string()),
                ("created", time(artifact.created_at.as_ref())),
            ])
        },
    )?;
    Ok(0)
}

/// A bar on stderr for `len` bytes, hidden for small files or when stderr
/// is not a terminal.
fn bar(len: u64, what: &str) -> ProgressBar {
    if len < CHUNK as u64 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Hashes the file, then streams it to `UploadArtifact`.
async fn upload(scheduler: &Scheduler, path: &Path) -> Result<pb::Artifact, CliError> {
    let open = || async {
        tokio::fs::File::open(path)
            .await
            .map_err(|e| CliError::File(format!("open {}: {e}", path.display())))
    };
    let len = open()
        .await?
        .metadata()
        .await
        .map_err(|e| CliError::File(format!("read {}: {e}", path.display())))?
        .len();

    let hashing = bar(len, "hashing");
    let mut file = open().await?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut buf = vec![0; CHUNK];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| CliError::File(format!("read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        hashing.inc(n as u64);
    }
    hashing.finish_and_clear();
    let header = pb::UploadArtifactRequest {
        part: Some(Part::Header(pb::UploadHeader {
            sha256: Sha256Digest::from_hash(&hasher.finalize()).to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
        })),
    };

    let sending = bar(size, "uploading");
    let file = open().await?;
    let chunks = futures::stream::unfold((file, sending.clone()), |(mut file, bar)| async move {
        let mut buf = vec![0; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                bar.inc(n as u64);
                let message = pb::UploadArtifactRequest {
                    part: Some(Part::Chunk(buf)),
                };
                Some((message, (file, bar)))
            }
        }
    });
    let messages = futures::stream::iter([header]).chain(chunks);
    let result = scheduler.artifacts().upload_artifact(messages).await;
    sending.finish_and_clear();
    Ok(result?.into_inner())
}

/// Runs one `content` command.
pub async fn content<W: Write>(
    scheduler: &Scheduler,
    command: ContentCommand,
    printer: &mut Printer<'_, W>,
) -> Result<i32, CliError> {
    let unit = match command {
        ContentCommand::Create {
            pulp_type,
            key,
            artifacts,
        } => create_content(scheduler, pulp_type, key, &artifacts).await?,
        ContentCommand::List { pulp_type } => {
            let client = scheduler.contents();
            let units = all_pages(|page_token| {
                let mut client = client.clone();
                let pulp_type = pulp_type.clone().unwrap_or_default();
                async move {
                    let page = client
                        .list_contents(pb::ListContentsRequest {
                            pulp_type,
                            page_size: PAGE,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.contents, page.next_page_token))
                }
            })
            .await?;
            printer.either(
                || Json::Array(units.iter().map(content_json).collect()),
                || contents_table(&units),
            )?;
            return Ok(0);
        }
        ContentCommand::Show { id } => scheduler
            .contents()
            .get_content(pb::GetContentRequest { id })
            .await?
            .into_inner(),
    };
    printer.either(|| content_json(&unit), || content_detail(&unit))?;
    Ok(0)
}

/// `content create`: each `--artifact` is `PATH=ARTIFACT_ID`, or `PATH`
/// alone for on-demand content.
async fn create_content(
    scheduler: &Scheduler,
    pulp_type: String,
    key: String,
    specs: &[String],
) -> Result<pb::Content, CliError> {
    let artifacts = specs
        .iter()
        .map(|spec| {
            let (path, artifact) = match spec.split_once('=') {
                Some((path, artifact)) => (path, Some(artifact.to_owned())),
                None => (spec.as_str(), None),
            };
            pb::ContentArtifact {
                relative_path: path.to_owned(),
                artifact_id: artifact,
                sha256: String::new(),
            }
        })
        .collect();
    Ok(scheduler
        .contents()
        .create_content(pb::CreateContentRequest {
            pulp_type,
            natural_key: key,
            artifacts,
        })
        .await?
        .into_inner())
}

/// A timestamp to the second, or `-`.
pub(crate) fn time(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map_or_else(
        || "-".to_owned(),
        |ts| format_timestamp(ts, SecondsFormat::Secs),
    )
}

fn counts_json(list: &[pb::ContentCount]) -> Json {
    Json::Object(
        list.iter()
            .map(|c| (c.pulp_type.clone(), json!(c.count)))
            .collect(),
    )
}

/// `type: n, type: n`, or `-`.
fn counts_text(list: &[pb::ContentCount]) -> String {
    or_dash(
        &list
            .iter()
            .map(|c| format!("{}: {}", c.pulp_type, c.count))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// A repository as JSON with the proto field names.
pub fn repository_json(r: &pb::Repository) -> Json {
    json!({
        "id": r.id,
        "name": r.name,
        "description": r.description,
        "next_version": r.next_version,
        "latest_version_number": r.latest_version_number,
        "latest_version_id": r.latest_version_id,
        "created_at": timestamp_json(r.created_at.as_ref()),
        "resource": r.resource,
    })
}

/// A version as JSON with the proto field names.
pub fn version_json(v: &pb::RepositoryVersion) -> Json {
    let summary = v.content_summary.clone().unwrap_or_default();
    json!({
        "id": v.id,
        "repository_id": v.repository_id,
        "number": v.number,
        "base_version_id": v.base_version_id,
        "complete": v.complete,
        "created_at": timestamp_json(v.created_at.as_ref()),
        "created_by_task_id": v.created_by_task_id,
        "content_summary": {
            "added": counts_json(&summary.added),
            "removed": counts_json(&summary.removed),
            "present": counts_json(&summary.present),
        },
    })
}

/// A content unit as JSON with the proto field names.
pub fn content_json(c: &pb::Content) -> Json {
    json!({
        "id": c.id,
        "pulp_type": c.pulp_type,
        "natural_key": c.natural_key,
        "created_at": timestamp_json(c.created_at.as_ref()),
        "artifacts": c.artifacts.iter().map(|a| json!({
            "relative_path": a.relative_path,
            "artifact_id": a.artifact_id,
            "sha256": a.sha256,
        })).collect::<Vec<_>>(),
    })
}

/// An artifact as JSON with the proto field names.
pub fn artifact_json(a: &pb::Artifact) -> Json {
    json!({
        "id": a.id,
        "sha256": a.sha256,
        "size": a.size,
        "created_at": timestamp_json(a.created_at.as_ref()),
    })
}

fn repository_detail(r: &pb::Repository, latest: Option<&pb::RepositoryVersion>) -> String {
    let mut rows = vec![
        ("id", r.id.clone()),
        ("name", r.name.clone()),
        ("description", or_dash(&r.description)),
        ("latest version", r.latest_version_number.to_string()),
        ("next version", r.next_version.to_string()),
        ("created", time(r.created_at.as_ref())),
        ("resource", r.resource.clone()),
    ];
    if let Some(summary) = latest.and_then(|v| v.content_summary.as_ref()) {
        rows.push(("present", counts_text(&summary.present)));
        rows.push(("added", counts_text(&summary.added)));
        rows.push(("removed", counts_text(&summary.removed)));
    }
    key_values(&rows)
}

fn repositories_table(repos: &[pb::Repository]) -> String {
    table(
        &["ID", "NAME", "LATEST", "NEXT", "CREATED"],
        repos.iter().map(|r| {
            vec![
                r.id.clone(),
                r.name.clone(),
                r.latest_version_number.to_string(),
                r.next_version.to_string(),
                time(r.created_at.as_ref()),
            ]
        }),
    )
}

fn versions_table(versions: &[pb::RepositoryVersion]) -> String {
    table(
        &["NUMBER", "ID", "ADDED", "REMOVED", "PRESENT", "CREATED"],
        versions.iter().map(|v| {
            let s = v.content_summary.clone().unwrap_or_default();
            vec![
                v.number.to_string(),
                v.id.clone(),
                counts_text(&s.added),
                counts_text(&s.removed),
                counts_text(&s.present),
                time(v.created_at.as_ref()),
            ]
        }),
    )
}

fn contents_table(units: &[pb::Content]) -> String {
    table(
        &["ID", "TYPE", "KEY", "FILES"],
        units.iter().map(|c| {
            vec![
                c.id.clone(),
                c.pulp_type.clone(),
                c.natural_key.clone(),
                c.artifacts.len().to_string(),
            ]
        }),
    )
}

fn content_detail(c: &pb::Content) -> String {
    let files = c
        .artifacts
        .iter()
        .map(|a| match &a.artifact_id {
            Some(id) => format!("{} -> {id}", a.relative_path),
            None => format!("{} (on demand)", a.relative_path),
        })
        .collect::<Vec<_>>()
        .join("\n");
    key_values(&[
        ("id", c.id.clone()),
        ("type", c.pulp_type.clone()),
        ("key", c.natural_key.clone()),
        ("files", or_dash(&files)),
        ("created", time(c.created_at.as_ref())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert!(uuid_like("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"));
        assert!(!uuid_like("my-repo"));
    }

    #[test]
    fn counts_render() {
        let list = vec![pb::ContentCount {
            pulp_type: "file.file".into(),
            count: 3,
        }];
        assert_eq!(counts_text(&list), "file.file: 3");
        assert_eq!(counts_text(&[]), "-");
        assert_eq!(counts_json(&list), json!({"file.file": 3}));
    }
}
