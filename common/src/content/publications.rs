//! Publications (`publications`, `published_artifacts`): a snapshot of
//! what a complete repository version publishes, made by the `publish`
//! task.
//!
//! A normal publication stores one `published_artifacts` row per file of
//! the version (set-based: one INSERT ... SELECT), naming the content
//! unit's file, so a later change of the repository does not change it. A
//! pass-through publication stores no rows: it publishes every file of its
//! version at the content's relative path, read at export time. Deleting
//! the version deletes its publications (foreign key).

use super::versions::Version;
use super::{ContentError, get};
use crate::db::stmt;
use crate::names::{PublicationId, RepositoryId, RepositoryVersionId, ResourceName, TaskId};
use crate::time::now_micros;
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};

/// The resource a publication is reserved and reported by:
/// `/pulp/api/v3/publications/<id>/`.
pub fn resource(id: PublicationId) -> ResourceName {
    ResourceName::from_ref("publications", &id.to_string()).expect("a UUID is a valid resource id")
}

/// A publication as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Its id.
    pub id: PublicationId,
    /// The repository of its version.
    pub repository_id: RepositoryId,
    /// The version it publishes.
    pub repository_version_id: RepositoryVersionId,
    /// That version's number.
    pub version_number: i64,
    /// Publishes every file of the version (no rows of its own).
    pub pass_through: bool,
    /// Finished.
    pub complete: bool,
    /// The task that made it.
    pub created_by_task: Option<String>,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Files it publishes (rows of a normal publication; for a
    /// pass-through one, the files of its version).
    pub files: i64,
}

const SELECT: &str = "SELECT p.id, p.repository_id, p.repository_version_id, v.number, \
    p.pass_through, p.complete, p.created_by_task, p.created_at \
    FROM publications p JOIN repository_versions v ON v.id = p.repository_version_id";

fn publication(row: &QueryResult) -> Result<Publication, DbErr> {
    let corrupt = |e: crate::names::InvalidName| DbErr::Custom(e.0);
    Ok(Publication {
        id: PublicationId::parse(&get::<String>(row, "id")?).map_err(corrupt)?,
        repository_id: RepositoryId::parse(&get::<String>(row, "repository_id")?)
            .map_err(corrupt)?,
        repository_version_id: RepositoryVersionId::parse(&get::<String>(
            row,
            "repository_version_id",
        )?)
        .map_err(corrupt)?,
        version_number: get(row, "number")?,
        pass_through: get(row, "pass_through")?,
        complete: get(row, "complete")?,
        created_by_task: get(row, "created_by_task")?,
        created_at: get(row, "created_at")?,
        files: 0,
    })
}

async fn select(
    conn: &impl ConnectionTrait,
    where_sql: &str,
    values: Vec<Value>,
) -> Result<Vec<Publication>, DbErr> {
    let backend = conn.get_database_backend();
    let rows = conn
        .query_all_raw(stmt(backend, &format!("{SELECT} {where_sql}"), values))
        .await?;
    let mut out = rows
        .iter()
        .map(publication)
        .collect::<Result<Vec<_>, _>>()?;
    for p in &mut out {
        p.files = count_files(conn, p).await?;
    }
    Ok(out)
}

async fn count_files(conn: &impl ConnectionTrait, p: &Publication) -> Result<i64, DbErr> {
    let backend = conn.get_database_backend();
    let row = if p.pass_through {
        conn.query_one_raw(stmt(
            backend,
            "SELECT COUNT(*) AS n FROM repository_content rc \
             JOIN content_artifacts ca ON ca.content_id = rc.content_id \
             WHERE rc.repository_id = $1 AND rc.version_added <= $2 \
             AND (rc.version_removed IS NULL OR rc.version_removed > $2)",
            [
                Value::from(p.repository_id.to_string()),
                Value::from(p.version_number),
            ],
        ))
        .await?
    } else {
        conn.query_one_raw(stmt(
            backend,
            "SELECT COUNT(*) AS n FROM published_artifacts WHERE publication_id = $1",
            [Value::from(p.id.to_string())],
        ))
        .await?
    };
    row.map(|r| get::<i64>(&r, "n"))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Publishes a complete `version`: a new publication, complete when the
/// caller's transaction commits. A normal one snapshots every file of the
/// version in one statement.
pub async fn create(
    conn: &impl ConnectionTrait,
    version: &Version,
    pass_through: bool,
    task_id: Option<TaskId>,
) -> Result<Publication, ContentError> {
    if !version.complete {
        return Err(ContentError::Invalid(format!(
            "repository version {} is not complete: only complete versions can be published",
            version.id
        )));
    }
    let backend = conn.get_database_backend();
    let id = PublicationId::new();
    conn.execute_raw(stmt(
        backend,
        "INSERT INTO publications (id, repository_id, repository_version_id, pass_through, complete, created_by_task, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            Value::from(id.to_string()),
            Value::from(version.repository_id.to_string()),
            Value::from(version.id.to_string()),
            Value::from(pass_through),
            Value::from(false),
            Value::from(task_id.map(|t| t.to_string())),
            Value::from(now_micros()),
        ],
    ))
    .await?;
    if !pass_through {
        conn.execute_raw(stmt(
            backend,
            "INSERT INTO published_artifacts (publication_id, relative_path, content_id, content_relative_path) \
             SELECT $1, ca.relative_path, ca.content_id, ca.relative_path \
             FROM repository_content rc JOIN content_artifacts ca ON ca.content_id = rc.content_id \
             WHERE rc.repository_id = $2 AND rc.version_added <= $3 \
             AND (rc.version_removed IS NULL OR rc.version_removed > $3) \
             ON CONFLICT DO NOTHING",
            [
                Value::from(id.to_string()),
                Value::from(version.repository_id.to_string()),
                Value::from(version.number),
            ],
        ))
        .await?;
    }
    conn.execute_raw(stmt(
        backend,
        "UPDATE publications SET complete = $2 WHERE id = $1",
        [Value::from(id.to_string()), Value::from(true)],
    ))
    .await?;
    get_publication(conn, id)
        .await?
        .ok_or_else(|| ContentError::Db(DbErr::Custom("the new publication vanished".into())))
}

/// The publication with this id.
pub async fn get_publication(
    conn: &impl ConnectionTrait,
    id: PublicationId,
) -> Result<Option<Publication>, DbErr> {
    Ok(
        select(conn, "WHERE p.id = $1", vec![Value::from(id.to_string())])
            .await?
            .pop(),
    )
}

/// Up to `limit` publications after `after` in creation (id) order, of one
/// repository or all.
pub async fn list(
    conn: &impl ConnectionTrait,
    repository: Option<RepositoryId>,
    after: Option<PublicationId>,
    limit: u64,
) -> Result<Vec<Publication>, DbErr> {
    let after = after.map(|a| a.to_string()).unwrap_or_default();
    match repository {
        Some(r) => {
            select(
                conn,
                "WHERE p.repository_id = $1 AND p.id > $2 ORDER BY p.id LIMIT $3",
                vec![
                    Value::from(r.to_string()),
                    Value::from(after),
                    Value::from(limit as i64),
                ],
            )
            .await
        }
        None => {
            select(
                conn,
                "WHERE p.id > $1 ORDER BY p.id LIMIT $2",
                vec![Value::from(after), Value::from(limit as i64)],
            )
            .await
        }
    }
}

/// Deletes a publication and its rows; false when there was none.
pub async fn delete(conn: &impl ConnectionTrait, id: PublicationId) -> Result<bool, DbErr> {
    let backend = conn.get_database_backend();
    conn.execute_raw(stmt(
        backend,
        "DELETE FROM published_artifacts WHERE publication_id = $1",
        [Value::from(id.to_string())],
    ))
    .await?;
    let done = conn
        .execute_raw(stmt(
            backend,
            "DELETE FROM publications WHERE id = $1",
            [Value::from(id.to_string())],
        ))
        .await?;
    Ok(done.rows_affected() > 0)
}
