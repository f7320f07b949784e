//! File-system exporters (`exporters`), the exports they made (`exports`),
//! and the list of files an export lays out.
//!
//! An exporter names a directory on the worker's host and a method
//! ([`ExportMethod`]). Its path is only stored here; whether a worker may
//! write there is the worker's decision (its allowed export paths), taken
//! when the export runs. An [`Export`] row records one finished export
//! (exporter, task, params, time); the task writes it through its fence.
//! [`version_files`] and [`publication_files`] give the files to lay out,
//! each with its artifact's digest and size, or none for on-demand content.

use super::publications::Publication;
use super::versions::Version;
use super::{ContentError, get};
use crate::db::stmt;
use crate::names::{ExportId, ExporterId, InvalidName, ResourceName, TaskId};
use crate::time::now_micros;
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};
use std::fmt;
use std::path::{Component, Path};

/// Longest exporter name, in characters.
pub const MAX_NAME_LEN: usize = 255;
/// Longest exporter path, in bytes.
pub const MAX_PATH_LEN: usize = 4096;

/// How an export lays a file out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportMethod {
    /// Copies the bytes, checks the size and syncs the file.
    #[default]
    Write,
    /// Hard-links the artifact's file (a copy across file systems).
    Hardlink,
    /// Symbolically links to the artifact's file.
    Symlink,
}

impl ExportMethod {
    /// `write`, `hardlink` or `symlink`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportMethod::Write => "write",
            ExportMethod::Hardlink => "hardlink",
            ExportMethod::Symlink => "symlink",
        }
    }

    /// The stored form back.
    pub fn parse(s: &str) -> Result<ExportMethod, InvalidName> {
        match s {
            "write" => Ok(ExportMethod::Write),
            "hardlink" => Ok(ExportMethod::Hardlink),
            "symlink" => Ok(ExportMethod::Symlink),
            _ => Err(InvalidName(format!(
                "export method {s:?} is not one of write, hardlink, symlink"
            ))),
        }
    }
}

impl fmt::Display for ExportMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An exporter name: 1 to 255 characters, no control characters, no
/// leading or trailing white space.
pub fn parse_name(s: &str) -> Result<String, InvalidName> {
    let len = s.chars().count();
    if len == 0 || len > MAX_NAME_LEN {
        return Err(InvalidName(format!(
            "an exporter name must be 1 to {MAX_NAME_LEN} characters long, not {len}"
        )));
    }
    if s.chars().any(char::is_control) || s.trim() != s {
        return Err(InvalidName(format!(
            "exporter name {s:?} contains a control character or leading or trailing white space"
        )));
    }
    Ok(s.to_owned())
}

/// An exporter path: absolute, 1 to 4096 bytes, no NUL or other control
/// character. `..` and symbolic links are allowed here and resolved by the
/// worker before it compares the path with its allowed export paths.
pub fn parse_path(s: &str) -> Result<String, InvalidName> {
    if s.is_empty() || s.len() > MAX_PATH_LEN {
        return Err(InvalidName(format!(
            "an exporter path must be 1 to {MAX_PATH_LEN} bytes long, not {}",
            s.len()
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidName(format!(
            "exporter path {:?} contains a control character",
            s.chars().take(80).collect::<String>()
        )));
    }
    if !Path::new(s).is_absolute() || Path::new(s).components().next() != Some(Component::RootDir) {
        return Err(InvalidName(format!(
            "exporter path {s:?} is not absolute: give a path starting with '/'"
        )));
    }
    Ok(s.to_owned())
}

/// The resource an exporter is reserved by: `/pulp/api/v3/exporters/<id>/`.
pub fn resource(id: ExporterId) -> ResourceName {
    ResourceName::from_ref("exporters", &id.to_string()).expect("a UUID is a valid resource id")
}

/// The created resource of an export:
/// `/pulp/api/v3/exporters/<exporter-id>/exports/<export-id>/`.
pub fn export_resource(exporter: ExporterId, export: ExportId) -> ResourceName {
    ResourceName::from_ref(
        &format!("exporters/{exporter}/exports"),
        &export.to_string(),
    )
    .expect("UUIDs are valid resource parts")
}

/// An exporter as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exporter {
    /// Its id.
    pub id: ExporterId,
    /// Its unique name.
    pub name: String,
    /// The directory it exports to, as given.
    pub path: String,
    /// How it lays files out.
    pub method: ExportMethod,
    /// Microseconds since the epoch.
    pub created_at: i64,
}

fn exporter(row: &QueryResult) -> Result<Exporter, DbErr> {
    let corrupt = |e: InvalidName| DbErr::Custom(e.0);
    Ok(Exporter {
        id: ExporterId::parse(&get::<String>(row, "id")?).map_err(corrupt)?,
        name: get(row, "name")?,
        path: get(row, "path")?,
        method: ExportMethod::parse(&get::<String>(row, "method")?).map_err(corrupt)?,
        created_at: get(row, "created_at")?,
    })
}

const SELECT: &str = "SELECT id, name, path, method, created_at FROM exporters";

/// Stores a new exporter. ALREADY_EXISTS for a taken name.
pub async fn create(
    conn: &impl ConnectionTrait,
    name: &str,
    path: &str,
    method: ExportMethod,
) -> Result<Exporter, ContentError> {
    let backend = conn.get_database_backend();
    let new = Exporter {
        id: ExporterId::new(),
        name: name.to_owned(),
        path: path.to_owned(),
        method,
        created_at: now_micros(),
    };
    let inserted = conn
        .execute_raw(stmt(
            backend,
            "INSERT INTO exporters (id, name, path, method, created_at) VALUES ($1, $2, $3, $4, $5)",
            [
                Value::from(new.id.to_string()),
                Value::from(new.name.clone()),
                Value::from(new.path.clone()),
                Value::from(method.as_str()),
                Value::from(new.created_at),
            ],
        ))
        .await;
    match inserted {
        Err(err) if ContentError::is_unique_violation(&err) => Err(ContentError::AlreadyExists(
            format!("an exporter named {name:?} exists already"),
        )),
        Err(err) => Err(err.into()),
        Ok(_) => Ok(new),
    }
}

/// The exporter with this id.
pub async fn get_exporter(
    conn: &impl ConnectionTrait,
    id: ExporterId,
) -> Result<Option<Exporter>, DbErr> {
    let backend = conn.get_database_backend();
    conn.query_one_raw(stmt(
        backend,
        &format!("{SELECT} WHERE id = $1"),
        [Value::from(id.to_string())],
    ))
    .await?
    .as_ref()
    .map(exporter)
    .transpose()
}

/// Up to `limit` exporters after `after` in creation (id) order.
pub async fn list(
    conn: &impl ConnectionTrait,
    after: Option<ExporterId>,
    limit: u64,
) -> Result<Vec<Exporter>, DbErr> {
    let backend = conn.get_database_backend();
    conn.query_all_raw(stmt(
        backend,
        &format!("{SELECT} WHERE id > $1 ORDER BY id LIMIT $2"),
        [
            Value::from(after.map(|a| a.to_string()).unwrap_or_default()),
            Value::from(limit as i64),
        ],
    ))
    .await?
    .iter()
    .map(exporter)
    .collect()
}

/// Changes what is given; NOT_FOUND for an unknown id, ALREADY_EXISTS for
/// a taken name.
pub async fn update(
    conn: &impl ConnectionTrait,
    id: ExporterId,
    name: Option<&str>,
    path: Option<&str>,
    method: Option<ExportMethod>,
) -> Result<Exporter, ContentError> {
    let mut current = get_exporter(conn, id)
        .await?
        .ok_or_else(|| ContentError::NotFound(format!("exporter {id} not found")))?;
    if let Some(name) = name {
        current.name = name.to_owned();
    }
    if let Some(path) = path {
        current.path = path.to_owned();
    }
    if let Some(method) = method {
        current.method = method;
    }
    let backend = conn.get_database_backend();
    let updated = conn
        .execute_raw(stmt(
            backend,
            "UPDATE exporters SET name = $2, path = $3, method = $4 WHERE id = $1",
            [
                Value::from(id.to_string()),
                Value::from(current.name.clone()),
                Value::from(current.path.clone()),
                Value::from(current.method.as_str()),
            ],
        ))
        .await;
    match updated {
        Err(err) if ContentError::is_unique_violation(&err) => Err(ContentError::AlreadyExists(
            format!("an exporter named {:?} exists already", current.name),
        )),
        Err(err) => Err(err.into()),
        Ok(_) => Ok(current),
    }
}

/// Deletes an exporter and its export records (not the exported files);
/// false when there was none.
pub async fn delete(conn: &impl ConnectionTrait, id: ExporterId) -> Result<bool, DbErr> {
    let backend = conn.get_database_backend();
    conn.execute_raw(stmt(
        backend,
        "DELETE FROM exports WHERE exporter_id = $1",
        [Value::from(id.to_string())],
    ))
    .await?;
    let done = conn
        .execute_raw(stmt(
            backend,
            "DELETE FROM exporters WHERE id = $1",
            [Value::from(id.to_string())],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}

/// One finished export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Its id.
    pub id: ExportId,
    /// The exporter.
    pub exporter_id: ExporterId,
    /// The task that made it.
    pub task_id: String,
    /// The task's parameters, a JSON object.
    pub params: String,
    /// Microseconds since the epoch.
    pub created_at: i64,
}

/// Records an export (in the task's fenced transaction).
pub async fn record_export(
    conn: &impl ConnectionTrait,
    exporter: ExporterId,
    task: TaskId,
    params: &serde_json::Value,
) -> Result<Export, DbErr> {
    let export = Export {
        id: ExportId::new(),
        exporter_id: exporter,
        task_id: task.to_string(),
        params: params.to_string(),
        created_at: now_micros(),
    };
    conn.execute_raw(stmt(
        conn.get_database_backend(),
        "INSERT INTO exports (id, exporter_id, task_id, params, created_at) VALUES ($1, $2, $3, $4, $5)",
        [
            Value::from(export.id.to_string()),
            Value::from(exporter.to_string()),
            Value::from(export.task_id.clone()),
            Value::from(export.params.clone()),
            Value::from(export.created_at),
        ],
    ))
    .await?;
    Ok(export)
}

/// Up to `limit` exports of an exporter after `after`, oldest first.
pub async fn list_exports(
    conn: &impl ConnectionTrait,
    exporter: ExporterId,
    after: Option<ExportId>,
    limit: u64,
) -> Result<Vec<Export>, DbErr> {
    let backend = conn.get_database_backend();
    let corrupt = |e: InvalidName| DbErr::Custom(e.0);
    conn.query_all_raw(stmt(
        backend,
        "SELECT id, exporter_id, task_id, params, created_at FROM exports \
         WHERE exporter_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        [
            Value::from(exporter.to_string()),
            Value::from(after.map(|a| a.to_string()).unwrap_or_default()),
            Value::from(limit as i64),
        ],
    ))
    .await?
    .iter()
    .map(|row| {
        Ok(Export {
            id: ExportId::parse(&get::<String>(row, "id")?).map_err(corrupt)?,
            exporter_id: ExporterId::parse(&get::<String>(row, "exporter_id")?).map_err(corrupt)?,
            task_id: get(row, "task_id")?,
            params: get(row, "params")?,
            created_at: get(row, "created_at")?,
        })
    })
    .collect()
}

/// A file an export lays out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    /// Where, below the export's target, as stored (not yet validated).
    pub relative_path: String,
    /// The content unit it belongs to.
    pub content_id: String,
    /// The artifact's digest; `None` for content not downloaded.
    pub sha256: Option<String>,
    /// The artifact's size; `None` for content not downloaded.
    pub size: Option<i64>,
}

fn export_file(row: &QueryResult) -> Result<ExportFile, DbErr> {
    Ok(ExportFile {
        relative_path: get(row, "relative_path")?,
        content_id: get(row, "content_id")?,
        sha256: get(row, "sha256")?,
        size: get(row, "size")?,
    })
}

/// The files of `version`, by relative path; with `since`, only the files
/// of units present in `version` but not in `since` (an incremental
/// export; `since` must be of the same repository).
pub async fn version_files(
    conn: &impl ConnectionTrait,
    version: &Version,
    since: Option<&Version>,
) -> Result<Vec<ExportFile>, DbErr> {
    let backend = conn.get_database_backend();
    let mut sql = "SELECT ca.relative_path, ca.content_id, a.sha256, a.size \
         FROM repository_content rc JOIN content_artifacts ca ON ca.content_id = rc.content_id \
         LEFT JOIN artifacts a ON a.id = ca.artifact_id \
         WHERE rc.repository_id = $1 AND rc.version_added <= $2 \
         AND (rc.version_removed IS NULL OR rc.version_removed > $2)"
        .to_owned();
    let mut values = vec![
        Value::from(version.repository_id.to_string()),
        Value::from(version.number),
    ];
    if let Some(since) = since {
        sql.push_str(
            " AND NOT EXISTS (SELECT 1 FROM repository_content s WHERE s.repository_id = $1 \
             AND s.content_id = rc.content_id AND s.version_added <= $3 \
             AND (s.version_removed IS NULL OR s.version_removed > $3))",
        );
        values.push(Value::from(since.number));
    }
    sql.push_str(" ORDER BY ca.relative_path, ca.content_id");
    conn.query_all_raw(stmt(backend, &sql, values))
        .await?
        .iter()
        .map(export_file)
        .collect()
}

/// The files a publication publishes, by relative path (for a
/// pass-through one, those of its version).
pub async fn publication_files(
    conn: &impl ConnectionTrait,
    publication: &Publication,
    version: &Version,
) -> Result<Vec<ExportFile>, DbErr> {
    if publication.pass_through {
        return version_files(conn, version, None).await;
    }
    let backend = conn.get_database_backend();
    conn.query_all_raw(stmt(
        backend,
        "SELECT pa.relative_path, pa.content_id, a.sha256, a.size \
         FROM published_artifacts pa JOIN content_artifacts ca \
         ON ca.content_id = pa.content_id AND ca.relative_path = pa.content_relative_path \
         LEFT JOIN artifacts a ON a.id = ca.artifact_id \
         WHERE pa.publication_id = $1 ORDER BY pa.relative_path",
        [Value::from(publication.id.to_string())],
    ))
    .await?
    .iter()
    .map(export_file)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_names_and_methods() {
        assert!(parse_path("/srv/exports/a").is_ok());
        assert!(parse_path("/srv/../etc").is_ok(), "resolved by the worker");
        for bad in ["", "relative/x", "./x", "/a\nb", "/a\0b"] {
            assert!(parse_path(bad).is_err(), "{bad:?}");
        }
        assert!(parse_name("e1").is_ok());
        assert!(parse_name(" e").is_err());
        for m in [
            ExportMethod::Write,
            ExportMethod::Hardlink,
            ExportMethod::Symlink,
        ] {
            assert_eq!(ExportMethod::parse(m.as_str()).unwrap(), m);
        }
        assert!(ExportMethod::parse("copy").is_err());
    }
}
