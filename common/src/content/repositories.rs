//! Repositories (`repositories`): a unique name, and `next_version`, the
//! number the next version gets. [`create`] also creates version 0 (empty
//! and complete), so a repository always has a latest version.
//!
//! Tasks reserve a repository by [`resource`]; the versions a task creates
//! are reported as [`version_resource`].

use super::{ContentError, for_update, get};
use crate::db::stmt;
use crate::names::{InvalidName, RepositoryId, RepositoryVersionId, ResourceName};
use crate::time::now_micros;
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};

/// Longest repository name, in characters.
pub const MAX_NAME_LEN: usize = 255;
/// Longest description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 4096;

/// A repository name: 1 to 255 characters, no control characters, no
/// leading or trailing white space.
pub fn parse_name(s: &str) -> Result<String, InvalidName> {
    let len = s.chars().count();
    if len == 0 || len > MAX_NAME_LEN {
        return Err(InvalidName(format!(
            "a repository name must be 1 to {MAX_NAME_LEN} characters long, not {len}"
        )));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(InvalidName(format!(
            "repository name {s:?} contains the control character {c:?}"
        )));
    }
    if s.trim() != s {
        return Err(InvalidName(format!(
            "repository name {s:?} starts or ends with white space"
        )));
    }
    Ok(s.to_owned())
}

/// A description: at most 4096 bytes.
pub fn parse_description(s: &str) -> Result<String, InvalidName> {
    if s.len() > MAX_DESCRIPTION_LEN {
        return Err(InvalidName(format!(
            "the description is {} bytes long; the limit is {MAX_DESCRIPTION_LEN}",
            s.len()
        )));
    }
    Ok(s.to_owned())
}

/// The resource a task reserves to change the repository:
/// `/pulp/api/v3/repositories/<id>/`.
pub fn resource(id: RepositoryId) -> ResourceName {
    ResourceName::from_ref("repositories", &id.to_string()).expect("a UUID is a valid resource id")
}

/// The name of a repository's version, as a task's created resource:
/// `/pulp/api/v3/repositories/<id>/versions/<number>/`.
pub fn version_resource(id: RepositoryId, number: i64) -> ResourceName {
    ResourceName::from_ref(&format!("repositories/{id}/versions"), &number.to_string())
        .expect("a UUID and a number are valid resource parts")
}

/// A repository as stored, with its latest version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Its id.
    pub id: RepositoryId,
    /// Its unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The number of the next version.
    pub next_version: i64,
    /// The number of its latest complete version.
    pub latest_version_number: i64,
    /// The id of its latest complete version.
    pub latest_version_id: String,
    /// Microseconds since the epoch.
    pub created_at: i64,
}

const SELECT: &str = "SELECT r.id, r.name, r.description, r.next_version, r.created_at, \
    v.number AS latest_number, v.id AS latest_id \
    FROM repositories r JOIN repository_versions v ON v.repository_id = r.id \
    AND v.number = (SELECT MAX(number) FROM repository_versions m WHERE m.repository_id = r.id AND m.complete)";

fn repository(row: &QueryResult) -> Result<Repository, DbErr> {
    let id: String = get(row, "id")?;
    Ok(Repository {
        id: RepositoryId::parse(&id).map_err(|e| DbErr::Custom(e.0))?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        next_version: get(row, "next_version")?,
        latest_version_number: get(row, "latest_number")?,
        latest_version_id: get(row, "latest_id")?,
        created_at: get(row, "created_at")?,
    })
}

/// Creates a repository and its version 0. ALREADY_EXISTS for a taken
/// name. Run it in a transaction: it writes two tables.
pub async fn create(
    conn: &impl ConnectionTrait,
    name: &str,
    description: &str,
) -> Result<Repository, ContentError> {
    let backend = conn.get_database_backend();
    let id = RepositoryId::new();
    let version = RepositoryVersionId::new();
    let now = now_micros();
    let inserted = conn
        .execute_raw(stmt(
            backend,
            "INSERT INTO repositories (id, name, description, next_version, created_at) VALUES ($1, $2, $3, 1, $4)",
            [
                Value::from(id.to_string()),
                Value::from(name.to_owned()),
                Value::from(description.to_owned()),
                Value::from(now),
            ],
        ))
        .await;
    match inserted {
        Err(err) if ContentError::is_unique_violation(&err) => {
            return Err(ContentError::AlreadyExists(format!(
                "a repository named {name:?} exists already"
            )));
        }
        other => other?,
    };
    conn.execute_raw(stmt(
        backend,
        "INSERT INTO repository_versions (id, repository_id, number, base_version_id, complete, created_by_task, created_at) \
         VALUES ($1, $2, 0, NULL, $3, NULL, $4)",
        [
            Value::from(version.to_string()),
            Value::from(id.to_string()),
            Value::from(true),
            Value::from(now),
        ],
    ))
    .await?;
    Ok(Repository {
        id,
        name: name.to_owned(),
        description: description.to_owned(),
        next_version: 1,
        latest_version_number: 0,
        latest_version_id: version.to_string(),
        created_at: now,
    })
}

/// The repository with this id.
pub async fn get_repository(
    conn: &impl ConnectionTrait,
    id: RepositoryId,
) -> Result<Option<Repository>, DbErr> {
    let backend = conn.get_database_backend();
    let sql = format!("{SELECT} WHERE r.id = $1");
    conn.query_one_raw(stmt(backend, &sql, [Value::from(id.to_string())]))
        .await?
        .map(|row| repository(&row))
        .transpose()
}

/// Up to `limit` repositories after `after`, in creation (id) order.
pub async fn list(
    conn: &impl ConnectionTrait,
    after: Option<RepositoryId>,
    limit: u64,
) -> Result<Vec<Repository>, DbErr> {
    let backend = conn.get_database_backend();
    let after = after.map(|a| a.to_string()).unwrap_or_default();
    let sql = format!("{SELECT} WHERE r.id > $1 ORDER BY r.id LIMIT $2");
    conn.query_all_raw(stmt(
        backend,
        &sql,
        [Value::from(after), Value::from(limit as i64)],
    ))
    .await?
    .iter()
    .map(repository)
    .collect()
}

/// Deletes a repository with its versions and membership (its content
/// units stay). False when there was none. Run it in a transaction.
pub async fn delete(conn: &impl ConnectionTrait, id: RepositoryId) -> Result<bool, DbErr> {
    let backend = conn.get_database_backend();
    if lock(conn, id).await?.is_none() {
        return Ok(false);
    }
    // Membership has no foreign key to cascade along (see the migration).
    conn.execute_raw(stmt(
        backend,
        "DELETE FROM repository_content WHERE repository_id = $1",
        [Value::from(id.to_string())],
    ))
    .await?;
    let deleted = conn
        .execute_raw(stmt(
            backend,
            "DELETE FROM repositories WHERE id = $1",
            [Value::from(id.to_string())],
        ))
        .await?;
    Ok(deleted.rows_affected() > 0)
}

/// Locks the repository's row until the transaction ends (PostgreSQL;
/// on SQLite the write transaction holds the whole database) and returns
/// its `next_version`, or `None` when there is no such repository. Every
/// writer of a repository's versions and membership takes this lock
/// first, so they serialise.
pub async fn lock(conn: &impl ConnectionTrait, id: RepositoryId) -> Result<Option<i64>, DbErr> {
    let backend = conn.get_database_backend();
    let sql = format!(
        "SELECT next_version FROM repositories WHERE id = $1{}",
        for_update(backend)
    );
    conn.query_one_raw(stmt(backend, &sql, [Value::from(id.to_string())]))
        .await?
        .map(|row| get(&row, "next_version"))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_resources() {
        assert!(parse_name("file-repo 1").is_ok());
        for bad in ["", " a", "a ", "a\nb", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
        assert!(parse_description(&"x".repeat(MAX_DESCRIPTION_LEN + 1)).is_err());
        let id = RepositoryId::new();
        assert_eq!(
            resource(id).as_str(),
            format!("/pulp/api/v3/repositories/{id}/")
        );
        assert_eq!(
            version_resource(id, 3).as_str(),
            format!("/pulp/api/v3/repositories/{id}/versions/3/")
        );
    }
}
