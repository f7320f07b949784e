//! Artifacts: files known by their SHA-256 (the `artifacts` table).
//!
//! An upload becomes an artifact in [`store`]: the verified temporary file
//! (see [`super::storage`]) is moved into the storage tree inside the
//! transaction that inserts the row, so a committed row always has its
//! file. A crash between the rename and the commit leaves a file without a
//! row, which is harmless: the next upload of the same bytes reuses the
//! path.

use super::storage::{Storage, VerifiedFile};
use super::{ContentError, begin_write, get};
use crate::db::stmt;
use crate::names::{ArtifactId, InvalidName};
use crate::time::now_micros;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, QueryResult, Value};
use std::fmt;

/// A SHA-256 digest: 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sha256Digest(String);

impl Sha256Digest {
    /// 64 hex digits in either case (kept lower-case).
    pub fn parse(s: &str) -> Result<Sha256Digest, InvalidName> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidName(format!(
                "sha256 {:?} is not a SHA-256 digest: give 64 hex digits",
                s.chars().take(80).collect::<String>()
            )));
        }
        Ok(Sha256Digest(s.to_ascii_lowercase()))
    }

    /// The digest of a finished hash.
    pub fn from_hash(hash: &[u8]) -> Sha256Digest {
        Sha256Digest(hex::encode(hash))
    }

    /// The hex form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An artifact as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Its id.
    pub id: ArtifactId,
    /// Its digest.
    pub sha256: String,
    /// Its size in bytes.
    pub size: i64,
    /// Microseconds since the epoch.
    pub created_at: i64,
}

fn artifact(row: &QueryResult) -> Result<Artifact, DbErr> {
    let id: String = get(row, "id")?;
    Ok(Artifact {
        id: ArtifactId::parse(&id).map_err(|e| DbErr::Custom(e.0))?,
        sha256: get(row, "sha256")?,
        size: get(row, "size")?,
        created_at: get(row, "created_at")?,
    })
}

/// The artifact with this id.
pub async fn get_artifact(
    conn: &impl ConnectionTrait,
    id: ArtifactId,
) -> Result<Option<Artifact>, DbErr> {
    let backend = conn.get_database_backend();
    let sql = "SELECT id, sha256, size, created_at FROM artifacts WHERE id = $1";
    conn.query_one_raw(stmt(backend, sql, [Value::from(id.to_string())]))
        .await?
        .map(|row| artifact(&row))
        .transpose()
}

/// The artifact with this digest.
pub async fn find_by_sha256(
    conn: &impl ConnectionTrait,
    sha256: &Sha256Digest,
) -> Result<Option<Artifact>, DbErr> {
    let backend = conn.get_database_backend();
    let sql = "SELECT id, sha256, size, created_at FROM artifacts WHERE sha256 = $1";
    conn.query_one_raw(stmt(
        backend,
        sql,
        [Value::from(sha256.as_str().to_owned())],
    ))
    .await?
    .map(|row| artifact(&row))
    .transpose()
}

/// The first of `ids` that names no artifact, if any.
pub async fn first_missing(
    conn: &impl ConnectionTrait,
    ids: &[ArtifactId],
) -> Result<Option<ArtifactId>, DbErr> {
    super::first_missing(conn, "artifacts", ids).await
}

/// Turns a verified upload into an artifact: the existing one when the
/// digest is known (its file is put back in place, which also repairs a
/// lost file), else a new row, with the file moved into place before the
/// row commits.
pub async fn store(
    db: &DatabaseConnection,
    storage: &Storage,
    file: VerifiedFile,
) -> Result<Artifact, ContentError> {
    if let Some(existing) = find_by_sha256(db, file.sha256()).await? {
        file.place(storage).await?;
        return Ok(existing);
    }
    let new = Artifact {
        id: ArtifactId::new(),
        sha256: file.sha256().as_str().to_owned(),
        size: i64::try_from(file.size())
            .map_err(|_| ContentError::Invalid("the artifact is too large".into()))?,
        created_at: now_micros(),
    };
    let txn = begin_write(db).await?;
    let backend = txn.get_database_backend();
    let inserted = txn
        .execute_raw(stmt(
            backend,
            "INSERT INTO artifacts (id, sha256, size, created_at) VALUES ($1, $2, $3, $4)",
            [
                Value::from(new.id.to_string()),
                Value::from(new.sha256.clone()),
                Value::from(new.size),
                Value::from(new.created_at),
            ],
        ))
        .await;
    match inserted {
        Ok(_) => {
            file.place(storage).await?;
            txn.commit().await?;
            Ok(new)
        }
        // The same bytes were uploaded at the same time: keep theirs.
        Err(err) if ContentError::is_unique_violation(&err) => {
            txn.rollback().await?;
            let sha = file.sha256().clone();
            file.place(storage).await?;
            find_by_sha256(db, &sha)
                .await?
                .ok_or_else(|| ContentError::Db(err))
        }
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse() {
        let upper = "A".repeat(64);
        assert_eq!(
            Sha256Digest::parse(&upper).unwrap().as_str(),
            "a".repeat(64)
        );
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65)] {
            assert!(Sha256Digest::parse(bad).is_err(), "{bad:?}");
        }
    }
}
