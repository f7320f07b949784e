//! The `task_groups` table and per-state counts of a group's tasks.

use super::get;
use pulp_common::db::stmt;
use pulp_common::names::TaskGroupId;
use pulp_common::state::TaskState;
use sea_orm::{ConnectionTrait, DbErr, Value};
use std::collections::HashMap;

/// A group with its counts.
#[derive(Debug, Clone)]
pub struct GroupRecord {
    /// The id.
    pub id: String,
    /// Free text.
    pub description: String,
    /// No more tasks will be added.
    pub all_tasks_dispatched: bool,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// Tasks per state.
    pub counts: HashMap<TaskState, i64>,
}

impl GroupRecord {
    /// All tasks dispatched and every one final.
    pub fn finished(&self) -> bool {
        self.all_tasks_dispatched
            && self
                .counts
                .iter()
                .all(|(state, n)| state.is_final() || *n == 0)
    }
}

/// Creates an empty group.
pub async fn create(
    conn: &impl ConnectionTrait,
    id: TaskGroupId,
    description: &str,
    now: i64,
) -> Result<(), DbErr> {
    let sql = "INSERT INTO task_groups (id, description, all_tasks_dispatched, created_at) VALUES ($1, $2, $3, $4)";
    let values = [
        Value::from(id.to_string()),
        Value::from(description.to_owned()),
        Value::from(false),
        Value::from(now),
    ];
    conn.execute_raw(stmt(conn.get_database_backend(), sql, values))
        .await?;
    Ok(())
}

/// A group with its counts, if it exists.
pub async fn get_group(
    conn: &impl ConnectionTrait,
    id: TaskGroupId,
) -> Result<Option<GroupRecord>, DbErr> {
    let backend = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(stmt(
            backend,
            "SELECT id, description, all_tasks_dispatched, created_at FROM task_groups WHERE id = $1",
            [Value::from(id.to_string())],
        ))
        .await?
    else {
        return Ok(None);
    };
    let mut group = GroupRecord {
        id: get(&row, "id")?,
        description: get(&row, "description")?,
        all_tasks_dispatched: get(&row, "all_tasks_dispatched")?,
        created_at: get(&row, "created_at")?,
        counts: HashMap::new(),
    };
    let rows = conn
        .query_all_raw(stmt(
            backend,
            "SELECT state, COUNT(*) AS n FROM tasks WHERE task_group_id = $1 GROUP BY state",
            [Value::from(id.to_string())],
        ))
        .await?;
    for row in rows {
        let state: String = get(&row, "state")?;
        if let Some(state) = TaskState::parse(&state) {
            group.counts.insert(state, get(&row, "n")?);
        }
    }
    Ok(Some(group))
}

/// Whether a group exists and whether it is closed to new tasks.
pub async fn dispatch_status(
    conn: &impl ConnectionTrait,
    id: TaskGroupId,
) -> Result<Option<bool>, DbErr> {
    let row = conn
        .query_one_raw(stmt(
            conn.get_database_backend(),
            "SELECT all_tasks_dispatched FROM task_groups WHERE id = $1",
            [Value::from(id.to_string())],
        ))
        .await?;
    row.map(|r| get::<bool>(&r, "all_tasks_dispatched"))
        .transpose()
}

/// Marks that no more tasks will be added. Returns false for an unknown id.
pub async fn finish(conn: &impl ConnectionTrait, id: TaskGroupId) -> Result<bool, DbErr> {
    let result = conn
        .execute_raw(stmt(
            conn.get_database_backend(),
            "UPDATE task_groups SET all_tasks_dispatched = $1 WHERE id = $2",
            [Value::from(true), Value::from(id.to_string())],
        ))
        .await?;
    Ok(result.rows_affected() > 0)
}
