//! Database access for the scheduler's tables: plain functions that take a
//! connection or a transaction (`&impl ConnectionTrait`); callers own the
//! transaction (except `tasks::purge`, which commits one batch at a time).
//! Only the engine writes task state; the API reads, and purges.

pub mod groups;
pub mod tasks;
pub mod workers;

use sea_orm::{DbErr, QueryResult, TryGetable};

/// Reads column `col` of a row.
pub(crate) fn get<T: TryGetable>(row: &QueryResult, col: &str) -> Result<T, DbErr> {
    row.try_get("", col)
}

/// Parses a JSON array of strings stored as TEXT.
pub(crate) fn string_list(text: &str) -> Result<Vec<String>, DbErr> {
    serde_json::from_str(text)
        .map_err(|e| DbErr::Custom(format!("corrupt JSON list in the database: {e}")))
}

/// Rows per multi-row statement (well under SQLite's bound-variable limit).
pub(crate) const CHUNK: usize = 500;
