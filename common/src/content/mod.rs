//! The content domain, shared by the scheduler's content API and the
//! worker's content tasks (DESIGN.md section 9).
//!
//! # Layout
//! - [`artifacts`]: files by SHA-256 (`artifacts` table), and the step that
//!   turns a verified upload into an artifact.
//! - [`storage`]: the content-addressed storage directory:
//!   `<storage-dir>/artifacts/<sha[0..2]>/<sha>`, filled through a temporary
//!   file that is hashed while written and renamed into place only once its
//!   digest and size are verified.
//! - [`contents`]: content units (type, natural key) and their files at
//!   relative paths.
//! - [`repositories`]: repositories, created with their version 0.
//! - [`modification`]: the arguments of `add_and_remove` ([`Modification`](modification::Modification)):
//!   one parser and one existence check shared by `Repositories.Modify`, a
//!   raw `Tasks.Dispatch` of the task, and the worker that runs it.
//! - [`versions`]: versions, membership (`repository_content`), content
//!   summaries, the set-based SQL of `add_and_remove`, and the squash on
//!   delete.
//! - [`publications`]: publications of complete versions (snapshots of
//!   their files, or pass-through), made by the `publish` task.
//! - [`exporters`]: file-system exporters, their export records, and the
//!   file lists (`version_files`, `publication_files`) exports lay out.
//! - [`fence`]: the check that makes a task's domain writes commit only
//!   while its task row still says it runs on this worker and attempt.
//! - [`error`]: [`ContentError`], mapped to gRPC statuses by the scheduler
//!   and to task errors by the worker.
//!
//! # Data flow
//! The scheduler's API validates requests into the types here and calls the
//! plain SQL functions inside transactions it owns (uploads also go through
//! [`storage`]). `Repositories.Modify` only validates (with [`modification`])
//! and dispatches; the
//! worker's `add_and_remove` task opens a write transaction with
//! [`begin_write`], runs [`versions::add_and_remove`] in it, checks its
//! [`fence`] and commits. Every function takes `&impl ConnectionTrait` (a
//! connection or a transaction) and uses `$N` placeholders, which SQLite and
//! PostgreSQL both accept.

pub mod artifacts;
pub mod contents;
pub mod error;
pub mod exporters;
pub mod fence;
pub mod modification;
pub mod publications;
pub mod repositories;
pub mod storage;
pub mod versions;

#[cfg(test)]
mod tests;

pub use error::ContentError;

use crate::db::stmt;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, QueryResult,
    SqliteTransactionMode, TransactionOptions, TransactionTrait, TryGetable, Value,
};
use std::fmt::Display;

/// Largest page of a list call.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// Begins a transaction that will write. On SQLite it takes the write lock
/// at once (`BEGIN IMMEDIATE`): a deferred transaction that reads and then
/// writes fails with "database is locked" when another connection wrote in
/// between, and the lock makes a fence check atomic with the writes that
/// follow it.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    let options = TransactionOptions {
        sqlite_transaction_mode: (db.get_database_backend() == DbBackend::Sqlite)
            .then_some(SqliteTransactionMode::Immediate),
        ..Default::default()
    };
    db.begin_with_options(options).await
}

/// Reads column `col` of a row.
pub(crate) fn get<T: TryGetable>(row: &QueryResult, col: &str) -> Result<T, DbErr> {
    row.try_get("", col)
}

/// Ids per statement when a list of ids goes to the database. A chunk is
/// bound as one JSON array (see [`json_ids`]), so it costs one bound value
/// whatever its length; chunking bounds the statement's size (about 380 KB)
/// and lets long loops check for cancellation.
pub const ID_CHUNK: usize = 10_000;

/// A subquery giving the ids of the JSON array bound at `$n` as column
/// `id`: `json_each` on SQLite, `json_array_elements_text` on PostgreSQL.
pub(crate) fn json_ids(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => {
            format!("SELECT value AS id FROM json_array_elements_text(${n}::json)")
        }
        _ => format!("SELECT value AS id FROM json_each(${n})"),
    }
}

/// Ids as the JSON array text [`json_ids`] reads.
pub(crate) fn json_array<T: Display>(ids: &[T]) -> Value {
    let texts: Vec<String> = ids.iter().map(ToString::to_string).collect();
    Value::from(serde_json::to_string(&texts).expect("a list of strings serialises"))
}

/// The first of `ids` with no row in `table` (keyed by `id`), if any: one
/// query per [`ID_CHUNK`] ids.
pub(crate) async fn first_missing<T: Display + Copy>(
    conn: &impl ConnectionTrait,
    table: &str,
    ids: &[T],
) -> Result<Option<T>, DbErr> {
    let backend = conn.get_database_backend();
    let sql = format!(
        "SELECT j.id FROM ({}) j WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.id = j.id) LIMIT 1",
        json_ids(backend, 1)
    );
    for chunk in ids.chunks(ID_CHUNK) {
        let row = conn
            .query_one_raw(stmt(backend, &sql, [json_array(chunk)]))
            .await?;
        if let Some(row) = row {
            let missing: String = get(&row, "id")?;
            return Ok(chunk.iter().find(|id| id.to_string() == missing).copied());
        }
    }
    Ok(None)
}

/// ` FOR UPDATE` on PostgreSQL (row lock until commit), nothing on SQLite
/// (where a write transaction already holds the whole database).
pub(crate) fn for_update(backend: DbBackend) -> &'static str {
    if backend == DbBackend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    }
}
