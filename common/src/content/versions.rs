//! Repository versions, membership, and the two operations that change
//! them: [`add_and_remove`] and [`delete`] (the squash).
//!
//! # Membership
//! `repository_content(repository_id, content_id, version_added,
//! version_removed)` holds one row per stretch of versions in which a unit
//! is present. The content of version N is the rows with
//! `version_added <= N AND (version_removed IS NULL OR version_removed > N)`;
//! the rows with `version_removed IS NULL` are the content of the latest
//! version. A new version writes rows for its changes only: removing a unit
//! sets `version_removed` on its open row, adding one inserts a row.
//!
//! # add_and_remove, set-based
//! The unit lists go into two temporary tables (`modify_add`,
//! `modify_remove`), [`ID_CHUNK`] ids per statement bound as one JSON
//! array; then one UPDATE closes the rows of the units the new version
//! drops and one INSERT ... SELECT opens rows for the units it gains, both
//! computed in the database against the starting content (the base
//! version's, or the latest's). The added and removed counts per type are a GROUP BY over
//! the changed rows, and the present counts follow from the latest
//! version's (present + added - removed), so no step reads the whole
//! repository. 100,000 units cost about twenty statements, and the
//! caller's memory holds one chunk of ids at a time. Everything runs in the caller's transaction;
//! `next_version` is raised by the same transaction, so a rollback (an
//! error, a cancellation, a failed fence) leaves neither a version nor a
//! used number behind.
//!
//! # Squash
//! Deleting version N moves its changes into the next existing version M,
//! so every remaining version keeps its content: rows added in N and
//! removed in M vanish, a unit removed in N and added back in M becomes one
//! row again, other rows added or removed in N now count as added or
//! removed in M, and M's added/removed counts are recomputed. Deleting the
//! latest version drops its changes instead. Numbers are never reused:
//! `next_version` is left alone.

use super::contents::{Content, PulpType};
use super::modification::{Modification, Removal};
use super::{ContentError, ID_CHUNK, get, json_array, json_ids, repositories};
use crate::db::stmt;
use crate::names::{ContentId, RepositoryId, RepositoryVersionId};
use crate::time::now_micros;
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;

/// Units present, by type.
pub type Counts = BTreeMap<String, i64>;

/// What a version changed and holds, per content type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentSummary {
    /// Units added by the version.
    pub added: Counts,
    /// Units removed by the version.
    pub removed: Counts,
    /// Units present in the version.
    pub present: Counts,
}

/// A repository version as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Its id.
    pub id: RepositoryVersionId,
    /// Its repository.
    pub repository_id: RepositoryId,
    /// Its number.
    pub number: i64,
    /// The version it started from, if a base was given (and still exists).
    pub base_version_id: Option<String>,
    /// Finished.
    pub complete: bool,
    /// The task that created it (none for version 0).
    pub created_by_task: Option<String>,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Its counts.
    pub summary: ContentSummary,
}

const SELECT: &str = "SELECT id, repository_id, number, base_version_id, complete, \
    created_by_task, created_at FROM repository_versions";

/// The content of version `$n` of repository `$r`, as a condition on
/// `repository_content` aliased `rc`, for placeholders `r` and `n`.
fn in_version(r: usize, n: usize) -> String {
    format!(
        "rc.repository_id = ${r} AND rc.version_added <= ${n} \
         AND (rc.version_removed IS NULL OR rc.version_removed > ${n})"
    )
}

fn version(row: &QueryResult) -> Result<Version, DbErr> {
    let id: String = get(row, "id")?;
    let repository_id: String = get(row, "repository_id")?;
    let corrupt = |e: crate::names::InvalidName| DbErr::Custom(e.0);
    Ok(Version {
        id: RepositoryVersionId::parse(&id).map_err(corrupt)?,
        repository_id: RepositoryId::parse(&repository_id).map_err(corrupt)?,
        number: get(row, "number")?,
        base_version_id: get(row, "base_version_id")?,
        complete: get(row, "complete")?,
        created_by_task: get(row, "created_by_task")?,
        created_at: get(row, "created_at")?,
        summary: ContentSummary::default(),
    })
}

/// Versions selected by `where_sql`, each with its counts.
async fn select(
    conn: &impl ConnectionTrait,
    where_sql: &str,
    values: Vec<Value>,
) -> Result<Vec<Version>, DbErr> {
    let backend = conn.get_database_backend();
    let sql = format!("{SELECT} {where_sql}");
    let mut versions = conn
        .query_all_raw(stmt(backend, &sql, values))
        .await?
        .iter()
        .map(version)
        .collect::<Result<Vec<_>, _>>()?;
    if versions.is_empty() {
        return Ok(versions);
    }
    let index: HashMap<String, usize> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| (v.id.to_string(), i))
        .collect();
    let sql = format!(
        "SELECT version_id, pulp_type, count_type, count FROM repository_version_counts WHERE version_id IN ({})",
        crate::db::placeholders(1, versions.len())
    );
    let ids = versions.iter().map(|v| Value::from(v.id.to_string()));
    for row in conn.query_all_raw(stmt(backend, &sql, ids)).await? {
        let version_id: String = get(&row, "version_id")?;
        let Some(&i) = index.get(&version_id) else {
            continue;
        };
        let summary = &mut versions[i].summary;
        let counts = match get::<String>(&row, "count_type")?.as_str() {
            "added" => &mut summary.added,
            "removed" => &mut summary.removed,
            _ => &mut summary.present,
        };
        counts.insert(get(&row, "pulp_type")?, get(&row, "count")?);
    }
    Ok(versions)
}

/// The version with this id.
pub async fn get_version(
    conn: &impl ConnectionTrait,
    id: RepositoryVersionId,
) -> Result<Option<Version>, DbErr> {
    Ok(
        select(conn, "WHERE id = $1", vec![Value::from(id.to_string())])
            .await?
            .pop(),
    )
}

/// Version `number` of a repository.
pub async fn get_by_number(
    conn: &impl ConnectionTrait,
    repository: RepositoryId,
    number: i64,
) -> Result<Option<Version>, DbErr> {
    Ok(select(
        conn,
        "WHERE repository_id = $1 AND number = $2",
        vec![Value::from(repository.to_string()), Value::from(number)],
    )
    .await?
    .pop())
}

/// The latest complete version of a repository.
pub async fn latest(
    conn: &impl ConnectionTrait,
    repository: RepositoryId,
) -> Result<Option<Version>, DbErr> {
    Ok(select(
        conn,
        "WHERE repository_id = $1 AND complete ORDER BY number DESC LIMIT 1",
        vec![Value::from(repository.to_string())],
    )
    .await?
    .pop())
}

/// Up to `limit` versions of a repository with numbers above `after`.
pub async fn list(
    conn: &impl ConnectionTrait,
    repository: RepositoryId,
    after: Option<i64>,
    limit: u64,
) -> Result<Vec<Version>, DbErr> {
    select(
        conn,
        "WHERE repository_id = $1 AND number > $2 ORDER BY number LIMIT $3",
        vec![
            Value::from(repository.to_string()),
            Value::from(after.unwrap_or(-1)),
            Value::from(limit as i64),
        ],
    )
    .await
}

/// Up to `limit` units present in `version`, after `after` in id order, of
/// one type or all.
pub async fn content(
    conn: &impl ConnectionTrait,
    version: &Version,
    pulp_type: Option<&PulpType>,
    after: Option<ContentId>,
    limit: u64,
) -> Result<Vec<Content>, DbErr> {
    let mut from_where = format!(
        "FROM repository_content rc JOIN contents c ON c.id = rc.content_id WHERE {}",
        in_version(1, 2)
    );
    let mut values = vec![
        Value::from(version.repository_id.to_string()),
        Value::from(version.number),
    ];
    if let Some(t) = pulp_type {
        from_where.push_str(" AND c.pulp_type = $3");
        values.push(Value::from(t.as_str().to_owned()));
    }
    super::contents::select(conn, &from_where, values, after, limit).await
}

/// Where [`add_and_remove`] stands, given to its checkpoint callback
/// between steps (and between chunks while loading the unit lists), which
/// may stop the run by returning an error (a cancellation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The repository is locked and the base version checked.
    Locked,
    /// Loading the unit lists: ids loaded so far, of how many.
    Loading {
        /// Ids loaded.
        done: usize,
        /// Ids in all.
        total: usize,
    },
    /// The new version's row exists (incomplete) and the lists are loaded.
    Started,
    /// The removed units' rows are closed.
    Removed,
    /// The added units' rows are inserted.
    Added,
    /// The counts are stored and the version is complete.
    Finished,
}

/// What [`add_and_remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modified {
    /// A new version.
    Created {
        /// The new version, complete, with its counts.
        version: Version,
        /// Units it added.
        added: u64,
        /// Units it removed.
        removed: u64,
    },
    /// The content would equal the latest version's: no version was
    /// created and no number used.
    Unchanged {
        /// The latest version.
        latest: Version,
    },
}

/// Creates the repository's next version as the seed's `add_and_remove`:
/// the starting content (the base version's, or the latest's) minus
/// `remove` (`"*"`: all of the latest version), plus `add`. Runs in the
/// caller's transaction, which the caller commits (after its fence check)
/// or rolls back. `checkpoint` is awaited between steps.
///
/// Errors: NOT_FOUND for a repository, base version or content unit that
/// does not exist; INVALID_ARGUMENT for a base version that is not
/// complete.
pub async fn add_and_remove<C, F, Fut>(
    conn: &C,
    m: &Modification,
    mut checkpoint: F,
) -> Result<Modified, ContentError>
where
    C: ConnectionTrait,
    F: FnMut(Step) -> Fut,
    Fut: Future<Output = Result<(), ContentError>>,
{
    let backend = conn.get_database_backend();
    let repo = m.repository.to_string();
    let number = repositories::lock(conn, m.repository)
        .await?
        .ok_or_else(|| ContentError::NotFound(format!("repository {repo} not found")))?;
    let latest = latest(conn, m.repository)
        .await?
        .ok_or_else(|| DbErr::Custom(format!("repository {repo} has no complete version")))?;
    let base = match m.base_version {
        None => None,
        Some(id) => {
            let base = get_version(conn, id)
                .await?
                .ok_or_else(|| ContentError::NotFound(format!("base version {id} not found")))?;
            if !base.complete {
                return Err(ContentError::Invalid(format!(
                    "base version {id} is not complete"
                )));
            }
            Some(base)
        }
    };
    checkpoint(Step::Locked).await?;

    for table in ["modify_add", "modify_remove"] {
        conn.execute_unprepared(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS {table} (content_id VARCHAR(36) PRIMARY KEY)"
        ))
        .await?;
        conn.execute_unprepared(&format!("DELETE FROM {table}"))
            .await?;
    }
    let removing: &[ContentId] = match &m.remove {
        Removal::Units(units) => units,
        Removal::All => &[],
    };
    let total = m.add.len() + removing.len();
    let mut done = 0;
    for (table, ids) in [("modify_add", &m.add[..]), ("modify_remove", removing)] {
        // `WHERE true` keeps SQLite from reading ON CONFLICT as a join's.
        let sql = format!(
            "INSERT INTO {table} (content_id) SELECT j.id FROM ({}) j WHERE true ON CONFLICT DO NOTHING",
            json_ids(backend, 1)
        );
        for chunk in ids.chunks(ID_CHUNK) {
            conn.execute_raw(stmt(backend, &sql, [json_array(chunk)]))
                .await?;
            done += chunk.len();
            checkpoint(Step::Loading { done, total }).await?;
        }
    }
    let missing = conn
        .query_one_raw(stmt(
            backend,
            "SELECT u.content_id FROM (SELECT content_id FROM modify_add UNION ALL SELECT content_id FROM modify_remove) u \
             WHERE NOT EXISTS (SELECT 1 FROM contents c WHERE c.id = u.content_id) LIMIT 1",
            [],
        ))
        .await?;
    if let Some(row) = missing {
        let id: String = get(&row, "content_id")?;
        return Err(ContentError::NotFound(format!(
            "content unit {id} not found"
        )));
    }
    if m.remove == Removal::All {
        conn.execute_raw(stmt(
            backend,
            "INSERT INTO modify_remove (content_id) SELECT content_id FROM repository_content \
             WHERE repository_id = $1 AND version_removed IS NULL",
            [Value::from(repo.clone())],
        ))
        .await?;
    }

    let version_id = RepositoryVersionId::new();
    let now = now_micros();
    conn.execute_raw(stmt(
        backend,
        "INSERT INTO repository_versions (id, repository_id, number, base_version_id, complete, created_by_task, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            Value::from(version_id.to_string()),
            Value::from(repo.clone()),
            Value::from(number),
            Value::from(base.as_ref().map(|b| b.id.to_string())),
            Value::from(false),
            Value::from(m.task_id.map(|t| t.to_string())),
            Value::from(now),
        ],
    ))
    .await?;
    checkpoint(Step::Started).await?;

    // Removed: present in the latest version, and not in the new content
    // D = (start - remove) + add. Without a base the start is the latest
    // content itself, so only `remove` can drop a unit.
    let (removed_sql, added_sql, mut values) = match &base {
        None => (
            "UPDATE repository_content SET version_removed = $2 \
             WHERE repository_id = $1 AND version_removed IS NULL \
             AND EXISTS (SELECT 1 FROM modify_remove r WHERE r.content_id = repository_content.content_id) \
             AND NOT EXISTS (SELECT 1 FROM modify_add a WHERE a.content_id = repository_content.content_id)"
                .to_owned(),
            "INSERT INTO repository_content (repository_id, content_id, version_added) \
             SELECT $1, a.content_id, $2 FROM modify_add a \
             WHERE NOT EXISTS (SELECT 1 FROM repository_content o \
                 WHERE o.repository_id = $1 AND o.content_id = a.content_id AND o.version_removed IS NULL)"
                .to_owned(),
            vec![Value::from(repo.clone()), Value::from(number)],
        ),
        Some(base) => (
            format!(
                "UPDATE repository_content SET version_removed = $2 \
                 WHERE repository_id = $1 AND version_removed IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM modify_add a WHERE a.content_id = repository_content.content_id) \
                 AND (EXISTS (SELECT 1 FROM modify_remove r WHERE r.content_id = repository_content.content_id) \
                      OR NOT EXISTS (SELECT 1 FROM repository_content rc \
                          WHERE rc.content_id = repository_content.content_id AND {}))",
                in_version(3, 4)
            ),
            format!(
                "INSERT INTO repository_content (repository_id, content_id, version_added) \
                 SELECT $1, u.content_id, $2 FROM ( \
                     SELECT content_id FROM modify_add \
                     UNION \
                     SELECT rc.content_id FROM repository_content rc WHERE {} \
                     AND NOT EXISTS (SELECT 1 FROM modify_remove r WHERE r.content_id = rc.content_id) \
                 ) u \
                 WHERE NOT EXISTS (SELECT 1 FROM repository_content o \
                     WHERE o.repository_id = $1 AND o.content_id = u.content_id AND o.version_removed IS NULL)",
                in_version(3, 4)
            ),
            vec![
                Value::from(repo.clone()),
                Value::from(number),
                Value::from(base.repository_id.to_string()),
                Value::from(base.number),
            ],
        ),
    };
    let removed = conn
        .execute_raw(stmt(backend, &removed_sql, values.clone()))
        .await?
        .rows_affected();
    checkpoint(Step::Removed).await?;
    let added = conn
        .execute_raw(stmt(backend, &added_sql, std::mem::take(&mut values)))
        .await?
        .rows_affected();
    checkpoint(Step::Added).await?;
    for table in ["modify_add", "modify_remove"] {
        conn.execute_unprepared(&format!("DROP TABLE {table}"))
            .await?;
    }

    if removed == 0 && added == 0 {
        // Nothing changed: no version (even if the caller commits).
        conn.execute_raw(stmt(
            backend,
            "DELETE FROM repository_versions WHERE id = $1",
            [Value::from(version_id.to_string())],
        ))
        .await?;
        return Ok(Modified::Unchanged { latest });
    }
    // Counts from the changed rows only: present = latest's present + added
    // - removed (the latest's counts are right, by induction).
    let version_id = version_id.to_string();
    let added_counts = changes_by_type(conn, &repo, "version_added", number).await?;
    let removed_counts = changes_by_type(conn, &repo, "version_removed", number).await?;
    let mut present = latest.summary.present.clone();
    for (pulp_type, n) in &added_counts {
        *present.entry(pulp_type.clone()).or_default() += n;
    }
    for (pulp_type, n) in &removed_counts {
        *present.entry(pulp_type.clone()).or_default() -= n;
    }
    present.retain(|_, n| *n != 0);
    store_counts(conn, &version_id, "added", &added_counts).await?;
    store_counts(conn, &version_id, "removed", &removed_counts).await?;
    store_counts(conn, &version_id, "present", &present).await?;
    conn.execute_raw(stmt(
        backend,
        "UPDATE repository_versions SET complete = $2 WHERE id = $1",
        [Value::from(version_id.clone()), Value::from(true)],
    ))
    .await?;
    let raised = conn
        .execute_raw(stmt(
            backend,
            "UPDATE repositories SET next_version = $2 WHERE id = $1 AND next_version = $3",
            [
                Value::from(repo.clone()),
                Value::from(number + 1),
                Value::from(number),
            ],
        ))
        .await?;
    if raised.rows_affected() != 1 {
        return Err(DbErr::Custom(format!(
            "next_version of repository {repo} changed under its lock"
        ))
        .into());
    }
    checkpoint(Step::Finished).await?;
    let version = select(conn, "WHERE id = $1", vec![Value::from(version_id)])
        .await?
        .pop()
        .ok_or_else(|| DbErr::Custom("the new version vanished".into()))?;
    Ok(Modified::Created {
        version,
        added,
        removed,
    })
}

/// Units per type of the rows of `repo` whose `column` (`version_added`
/// or `version_removed`) is `number`: what version `number` added or
/// removed.
async fn changes_by_type(
    conn: &impl ConnectionTrait,
    repo: &str,
    column: &str,
    number: i64,
) -> Result<Counts, DbErr> {
    let backend = conn.get_database_backend();
    let sql = format!(
        "SELECT c.pulp_type, COUNT(*) AS n FROM repository_content rc \
         JOIN contents c ON c.id = rc.content_id \
         WHERE rc.repository_id = $1 AND rc.{column} = $2 GROUP BY c.pulp_type"
    );
    conn.query_all_raw(stmt(
        backend,
        &sql,
        [Value::from(repo.to_owned()), Value::from(number)],
    ))
    .await?
    .iter()
    .map(|row| Ok((get(row, "pulp_type")?, get(row, "n")?)))
    .collect()
}

/// Stores `counts` as a version's `kind` (`added`, `removed`, `present`)
/// counts, in one statement (content types are few).
async fn store_counts(
    conn: &impl ConnectionTrait,
    version_id: &str,
    kind: &str,
    counts: &Counts,
) -> Result<(), DbErr> {
    if counts.is_empty() {
        return Ok(());
    }
    let backend = conn.get_database_backend();
    let rows: Vec<String> = (0..counts.len())
        .map(|i| {
            format!(
                "(${}, ${}, ${}, ${})",
                4 * i + 1,
                4 * i + 2,
                4 * i + 3,
                4 * i + 4
            )
        })
        .collect();
    let values = counts.iter().flat_map(|(pulp_type, n)| {
        [
            Value::from(version_id.to_owned()),
            Value::from(pulp_type.clone()),
            Value::from(kind.to_owned()),
            Value::from(*n),
        ]
    });
    let sql = format!(
        "INSERT INTO repository_version_counts (version_id, pulp_type, count_type, count) VALUES {}",
        rows.join(", ")
    );
    conn.execute_raw(stmt(backend, &sql, values)).await?;
    Ok(())
}

/// Deletes a version, squashing its changes into the next one (see the
/// module doc). NOT_FOUND for an unknown version; FAILED_PRECONDITION for
/// the repository's only version. Run it in a write transaction.
pub async fn delete(
    conn: &impl ConnectionTrait,
    id: RepositoryVersionId,
) -> Result<Version, ContentError> {
    let backend = conn.get_database_backend();
    let not_found = || ContentError::NotFound(format!("repository version {id} not found"));
    let version = get_version(conn, id).await?.ok_or_else(not_found)?;
    repositories::lock(conn, version.repository_id)
        .await?
        .ok_or_else(not_found)?;
    let repo = version.repository_id.to_string();
    let n = version.number;
    let rows = conn
        .query_all_raw(stmt(
            backend,
            "SELECT id, number FROM repository_versions WHERE repository_id = $1 AND complete AND number <> $2 \
             ORDER BY number",
            [Value::from(repo.clone()), Value::from(n)],
        ))
        .await?;
    if rows.is_empty() {
        return Err(ContentError::FailedPrecondition(format!(
            "version {n} is the only version of repository {repo}; it cannot be deleted"
        )));
    }
    let mut next: Option<(String, i64)> = None;
    for row in &rows {
        let number: i64 = get(row, "number")?;
        if number > n {
            next = Some((get(row, "id")?, number));
            break;
        }
    }
    let exec = |sql: &'static str, values: Vec<Value>| async move {
        conn.execute_raw(stmt(backend, sql, values)).await
    };
    let r = || Value::from(repo.clone());
    match next {
        Some((next_id, m)) => {
            // Added in N, removed in M: never visible in a remaining version.
            exec(
                "DELETE FROM repository_content WHERE repository_id = $1 AND version_added = $2 AND version_removed = $3",
                vec![r(), Value::from(n), Value::from(m)],
            )
            .await?;
            // Removed in N, added back in M: one row again. Mark the
            // re-added rows (-1 is never a version number), extend the
            // removed rows to where the marked ones end, drop the marked.
            exec(
                "UPDATE repository_content SET version_added = -1 \
                 WHERE repository_id = $1 AND version_added = $3 AND content_id IN \
                 (SELECT content_id FROM repository_content WHERE repository_id = $1 AND version_removed = $2)",
                vec![r(), Value::from(n), Value::from(m)],
            )
            .await?;
            exec(
                "UPDATE repository_content SET version_removed = \
                 (SELECT b.version_removed FROM repository_content b WHERE b.repository_id = $1 \
                  AND b.content_id = repository_content.content_id AND b.version_added = -1) \
                 WHERE repository_id = $1 AND version_removed = $2 AND content_id IN \
                 (SELECT content_id FROM repository_content WHERE repository_id = $1 AND version_added = -1)",
                vec![r(), Value::from(n)],
            )
            .await?;
            exec(
                "DELETE FROM repository_content WHERE repository_id = $1 AND version_added = -1",
                vec![r()],
            )
            .await?;
            // The other changes of N become changes of M.
            exec(
                "UPDATE repository_content SET version_added = $3 WHERE repository_id = $1 AND version_added = $2",
                vec![r(), Value::from(n), Value::from(m)],
            )
            .await?;
            exec(
                "UPDATE repository_content SET version_removed = $3 WHERE repository_id = $1 AND version_removed = $2",
                vec![r(), Value::from(n), Value::from(m)],
            )
            .await?;
            exec(
                "DELETE FROM repository_version_counts WHERE version_id = $1 AND count_type <> 'present'",
                vec![Value::from(next_id.clone())],
            )
            .await?;
            for (column, kind) in [("version_added", "added"), ("version_removed", "removed")] {
                let counts = changes_by_type(conn, &repo, column, m).await?;
                store_counts(conn, &next_id, kind, &counts).await?;
            }
        }
        None => {
            // The latest version: its changes are dropped.
            exec(
                "DELETE FROM repository_content WHERE repository_id = $1 AND version_added = $2",
                vec![r(), Value::from(n)],
            )
            .await?;
            exec(
                "UPDATE repository_content SET version_removed = NULL WHERE repository_id = $1 AND version_removed = $2",
                vec![r(), Value::from(n)],
            )
            .await?;
        }
    }
    exec(
        "UPDATE repository_versions SET base_version_id = NULL WHERE base_version_id = $1",
        vec![Value::from(id.to_string())],
    )
    .await?;
    exec(
        "DELETE FROM repository_versions WHERE id = $1",
        vec![Value::from(id.to_string())],
    )
    .await?;
    Ok(version)
}
