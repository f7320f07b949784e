//! The `tasks`, `task_resources` and `progress_reports` tables.
//!
//! Every state change is a conditional update (`WHERE state = ...`, and for
//! a worker's report also `AND worker = ... AND attempt = ...`), so a stale
//! writer changes nothing; callers check the affected row count.
//!
//! Batched updates find their rows by `seq` alone and write the state
//! condition as `(...) IS TRUE`, which no index serves. Given an indexable
//! `state = 'waiting'`, PostgreSQL working from statistics taken before a
//! burst of dispatches (autovacuum analyzes up to a minute later) estimated
//! 29 waiting rows, scanned all 60,000 through `tasks_state` and
//! hash-joined them: 16 ms per assignment instead of 0.4 ms.

use super::{CHUNK, get, string_list};
use crate::task::{NewTask, Outcome, Progress, TaskFailure, TaskRecord};
use pulp_common::db::{placeholders, stmt};
use pulp_common::names::TaskId;
use pulp_common::state::TaskState;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Value};
use std::collections::HashMap;

const COLUMNS: &str = "seq, id, func, args, kwargs, exclusive_resources, shared_resources, state, \
    task_group_id, parent_task_id, worker, attempt, timeout_ms, created_at, unblocked_at, \
    started_at, finished_at, error, result, created_resources";

/// Inserts tasks and their resource claims and returns their seqs, in the
/// order given (dispatch order follows the order of `tasks`).
/// `unblocked[i]` says that task i may run at once: its `unblocked_at` is
/// `now`. On PostgreSQL one statement per chunk writes both tables (a
/// data-modifying CTE: one round trip); SQLite, in process, takes two.
pub async fn insert(
    conn: &impl ConnectionTrait,
    tasks: &[NewTask],
    unblocked: &[bool],
    now: i64,
) -> Result<Vec<i64>, DbErr> {
    debug_assert_eq!(tasks.len(), unblocked.len());
    let backend = conn.get_database_backend();
    let names = |list: &[pulp_common::names::ResourceName]| {
        serde_json::to_string(&list.iter().map(|r| r.as_str()).collect::<Vec<_>>())
            .expect("a list of strings serialises")
    };
    let mut seqs: HashMap<String, i64> = HashMap::with_capacity(tasks.len());
    const PER_ROW: usize = 11;
    for (chunk, chunk_unblocked) in tasks
        .chunks(CHUNK / PER_ROW)
        .zip(unblocked.chunks(CHUNK / PER_ROW))
    {
        let mut values = Vec::with_capacity(chunk.len() * PER_ROW);
        let mut rows = Vec::with_capacity(chunk.len());
        for (task, unblocked) in chunk.iter().zip(chunk_unblocked) {
            // The state, attempt and created_resources are literals.
            rows.push(format!(
                "({}, 'waiting', 0, '[]')",
                placeholders(values.len() + 1, PER_ROW)
            ));
            values.extend([
                Value::from(task.id.to_string()),
                Value::from(task.func.as_str().to_owned()),
                Value::from(task.args.clone()),
                Value::from(task.kwargs.clone()),
                Value::from(names(&task.claims.exclusive)),
                Value::from(names(&task.claims.shared)),
                Value::from(task.task_group_id.map(|g| g.to_string())),
                Value::from(task.parent_task_id.map(|p| p.to_string())),
                Value::from(task.timeout_ms),
                Value::from(now),
                Value::from(unblocked.then_some(now)),
            ]);
        }
        let insert_tasks = format!(
            "INSERT INTO tasks (id, func, args, kwargs, exclusive_resources, shared_resources, \
             task_group_id, parent_task_id, timeout_ms, created_at, unblocked_at, \
             state, attempt, created_resources) VALUES {}",
            rows.join(", ")
        );
        let sql = match backend {
            DbBackend::Postgres => format!(
                "WITH t AS ({insert_tasks} RETURNING seq, id, exclusive_resources, shared_resources), \
                 r AS (INSERT INTO task_resources (resource, task_seq, exclusive) \
                   SELECT e.name, t.seq, TRUE FROM t, json_array_elements_text(t.exclusive_resources::json) AS e(name) \
                   UNION ALL \
                   SELECT s.name, t.seq, FALSE FROM t, json_array_elements_text(t.shared_resources::json) AS s(name)) \
                 SELECT seq, id FROM t"
            ),
            _ => format!("{insert_tasks} RETURNING seq, id"),
        };
        for row in conn.query_all_raw(stmt(backend, &sql, values)).await? {
            seqs.insert(get(&row, "id")?, get(&row, "seq")?);
        }
    }
    let mut out = Vec::with_capacity(tasks.len());
    let mut resource_rows: Vec<(String, i64, bool)> = Vec::new();
    for task in tasks {
        let seq = *seqs
            .get(&task.id.to_string())
            .ok_or_else(|| DbErr::Custom("inserted task missing from RETURNING".into()))?;
        out.push(seq);
        if backend != DbBackend::Postgres {
            resource_rows.extend(
                task.claims
                    .iter()
                    .map(|(r, ex)| (r.as_str().to_owned(), seq, ex)),
            );
        }
    }
    for chunk in resource_rows.chunks(CHUNK / 3) {
        let mut values = Vec::with_capacity(chunk.len() * 3);
        let rows: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, _)| format!("({})", placeholders(1 + i * 3, 3)))
            .collect();
        for (resource, seq, exclusive) in chunk {
            values.extend([
                Value::from(resource.clone()),
                Value::from(*seq),
                Value::from(*exclusive),
            ]);
        }
        let sql = format!(
            "INSERT INTO task_resources (resource, task_seq, exclusive) VALUES {}",
            rows.join(", ")
        );
        conn.execute_raw(stmt(backend, &sql, values)).await?;
    }
    Ok(out)
}

/// Records that the resources of these WAITING tasks became free.
pub async fn set_unblocked(
    conn: &impl ConnectionTrait,
    seqs: &[i64],
    now: i64,
) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    for chunk in seqs.chunks(CHUNK) {
        let sql = format!(
            "UPDATE tasks SET unblocked_at = $1 WHERE seq IN ({}) AND (unblocked_at IS NULL AND state = 'waiting') IS TRUE",
            placeholders(2, chunk.len())
        );
        let values = std::iter::once(Value::from(now)).chain(chunk.iter().map(|s| Value::from(*s)));
        conn.execute_raw(stmt(backend, &sql, values)).await?;
    }
    Ok(())
}

/// Assigns WAITING tasks to workers, `(seq, worker)` pairs: RUNNING,
/// attempt + 1, one statement per chunk. Returns how many rows changed (the
/// caller expects all of them).
pub async fn claim(
    conn: &impl ConnectionTrait,
    picks: &[(i64, &str)],
    now: i64,
) -> Result<u64, DbErr> {
    let backend = conn.get_database_backend();
    let mut changed = 0;
    for chunk in picks.chunks(CHUNK / 2) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", placeholders(2 + i * 2, 2)))
            .collect();
        let sql = format!(
            "WITH v (seq, worker) AS (VALUES {}) \
             UPDATE tasks SET state = 'running', worker = v.worker, started_at = $1, \
             attempt = tasks.attempt + 1, unblocked_at = COALESCE(tasks.unblocked_at, $1) \
             FROM v WHERE tasks.seq = v.seq AND (tasks.state = 'waiting') IS TRUE",
            rows.join(", ")
        );
        let mut values = Vec::with_capacity(1 + chunk.len() * 2);
        values.push(Value::from(now));
        for (seq, worker) in chunk {
            values.extend([Value::from(*seq), Value::from((*worker).to_owned())]);
        }
        changed += conn
            .execute_raw(stmt(backend, &sql, values))
            .await?
            .rows_affected();
    }
    Ok(changed)
}

/// Puts an assigned task back to WAITING (its worker never received it).
pub async fn requeue(
    conn: &impl ConnectionTrait,
    seq: i64,
    worker: &str,
    attempt: i64,
) -> Result<u64, DbErr> {
    let sql = "UPDATE tasks SET state = 'waiting', worker = NULL, started_at = NULL \
               WHERE seq = $1 AND worker = $2 AND attempt = $3 AND state = 'running'";
    let values = [
        Value::from(seq),
        Value::from(worker.to_owned()),
        Value::from(attempt),
    ];
    Ok(conn
        .execute_raw(stmt(conn.get_database_backend(), sql, values))
        .await?
        .rows_affected())
}

/// How a RUNNING or CANCELING task ends: its worker's outcome, or a
/// failure the scheduler decided (worker lost).
#[derive(Debug, Clone)]
pub struct Ending {
    /// The task.
    pub seq: i64,
    /// The worker it must still be running on.
    pub worker: String,
    /// The attempt it must still be at.
    pub attempt: i64,
    /// How it ended.
    pub outcome: Outcome,
    /// Names of the resources it created.
    pub created_resources: Vec<String>,
}

impl Ending {
    /// The final state unless the task was CANCELING (then CANCELED).
    pub fn state_if_running(&self) -> TaskState {
        match self.outcome {
            Outcome::Completed(_) => TaskState::Completed,
            Outcome::Failed(_) => TaskState::Failed,
            Outcome::Canceled { .. } => TaskState::Canceled,
        }
    }
}

/// Ends tasks, one statement per chunk, each row fenced by worker and
/// attempt: a task no longer RUNNING/CANCELING on that worker and attempt
/// is left alone. A CANCELING task ends CANCELED whatever it returned.
/// Returns the seqs that changed.
pub async fn finish(
    conn: &impl ConnectionTrait,
    endings: &[Ending],
    now: i64,
) -> Result<Vec<i64>, DbErr> {
    let backend = conn.get_database_backend();
    let mut changed = Vec::with_capacity(endings.len());
    for chunk in endings.chunks(CHUNK / 7) {
        let mut values = Vec::with_capacity(1 + chunk.len() * 7);
        values.push(Value::from(now));
        let mut rows = Vec::with_capacity(chunk.len());
        for (i, ending) in chunk.iter().enumerate() {
            rows.push(format!("({})", placeholders(2 + i * 7, 7)));
            let (result, error) = match &ending.outcome {
                Outcome::Completed(result) => (Some(result.clone()), None),
                Outcome::Failed(failure) => (None, Some(failure.clone())),
                Outcome::Canceled { forced } => (
                    None,
                    forced.then(|| {
                        TaskFailure::new(
                            "the task ignored its cancellation and was aborted",
                            "canceled by force",
                        )
                    }),
                ),
            };
            let error = error.map(|e| serde_json::to_string(&e).expect("a failure serialises"));
            let created =
                serde_json::to_string(&ending.created_resources).expect("a list serialises");
            values.extend([
                Value::from(ending.seq),
                Value::from(ending.worker.clone()),
                Value::from(ending.attempt),
                Value::from(ending.state_if_running().as_str()),
                Value::from(result),
                Value::from(error),
                Value::from(created),
            ]);
        }
        let sql = format!(
            "WITH v (seq, worker, attempt, state, result, error, created) AS (VALUES {}) \
             UPDATE tasks SET \
             state = CASE WHEN tasks.state = 'canceling' THEN 'canceled' ELSE v.state END, \
             finished_at = $1, result = v.result, error = v.error, created_resources = v.created \
             FROM v WHERE tasks.seq = v.seq AND tasks.worker = v.worker AND tasks.attempt = v.attempt \
             AND (tasks.state IN ('running', 'canceling')) IS TRUE RETURNING tasks.seq",
            rows.join(", ")
        );
        for row in conn.query_all_raw(stmt(backend, &sql, values)).await? {
            changed.push(get(&row, "seq")?);
        }
    }
    Ok(changed)
}

/// Cancels a WAITING task at once.
pub async fn cancel_waiting(conn: &impl ConnectionTrait, seq: i64, now: i64) -> Result<u64, DbErr> {
    let sql = "UPDATE tasks SET state = 'canceled', finished_at = $1 WHERE seq = $2 AND state = 'waiting'";
    let values = [Value::from(now), Value::from(seq)];
    Ok(conn
        .execute_raw(stmt(conn.get_database_backend(), sql, values))
        .await?
        .rows_affected())
}

/// Turns a RUNNING task CANCELING.
pub async fn mark_canceling(conn: &impl ConnectionTrait, seq: i64) -> Result<u64, DbErr> {
    let sql = "UPDATE tasks SET state = 'canceling' WHERE seq = $1 AND state = 'running'";
    Ok(conn
        .execute_raw(stmt(conn.get_database_backend(), sql, [Value::from(seq)]))
        .await?
        .rows_affected())
}

/// Stores progress reports (the latest per task and code wins).
pub async fn upsert_progress(
    conn: &impl ConnectionTrait,
    reports: &[(i64, Progress)],
    now: i64,
) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    for chunk in reports.chunks(CHUNK / 7) {
        let mut values = Vec::with_capacity(chunk.len() * 7);
        let mut rows = Vec::with_capacity(chunk.len());
        for (i, (seq, p)) in chunk.iter().enumerate() {
            rows.push(format!("({})", placeholders(1 + i * 7, 7)));
            values.extend([
                Value::from(*seq),
                Value::from(p.code.clone()),
                Value::from(now),
                Value::from(p.message.clone()),
                Value::from(p.done),
                Value::from(p.total),
                Value::from(p.suffix.clone()),
            ]);
        }
        let sql = format!(
            "INSERT INTO progress_reports (task_seq, code, position, message, done, total, suffix) VALUES {} \
             ON CONFLICT (task_seq, code) DO UPDATE SET message = excluded.message, done = excluded.done, \
             total = excluded.total, suffix = excluded.suffix",
            rows.join(", ")
        );
        conn.execute_raw(stmt(backend, &sql, values)).await?;
    }
    Ok(())
}

/// Every WAITING, RUNNING or CANCELING task, in dispatch order.
pub async fn load_unfinished(conn: &impl ConnectionTrait) -> Result<Vec<TaskRecord>, DbErr> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks WHERE state IN ('waiting', 'running', 'canceling') ORDER BY seq"
    );
    conn.query_all_raw(stmt(conn.get_database_backend(), &sql, []))
        .await?
        .iter()
        .map(record)
        .collect()
}

/// Rows deleted per purge statement.
pub const PURGE_BATCH: usize = 1000;

/// Deletes tasks in `states` (final ones) that finished before
/// `finished_before`, a batch per statement, so that memory stays flat
/// whatever the count. Returns how many were deleted.
pub async fn purge(
    conn: &impl ConnectionTrait,
    states: &[TaskState],
    finished_before: i64,
) -> Result<u64, DbErr> {
    debug_assert!(states.iter().all(|s| s.is_final()));
    if states.is_empty() {
        return Ok(0);
    }
    let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    let sql = format!(
        "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE state IN ({}) AND finished_at < $1 \
         ORDER BY seq LIMIT {PURGE_BATCH})",
        list.join(", ")
    );
    let mut deleted = 0;
    loop {
        let n = conn
            .execute_raw(stmt(
                conn.get_database_backend(),
                &sql,
                [Value::from(finished_before)],
            ))
            .await?
            .rows_affected();
        deleted += n;
        if n < PURGE_BATCH as u64 {
            return Ok(deleted);
        }
    }
}

/// One task with its progress reports.
pub async fn get_task(
    conn: &impl ConnectionTrait,
    id: TaskId,
) -> Result<Option<TaskRecord>, DbErr> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1");
    let row = conn
        .query_one_raw(stmt(
            conn.get_database_backend(),
            &sql,
            [Value::from(id.to_string())],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut task = record(&row)?;
    attach_progress(conn, std::slice::from_mut(&mut task)).await?;
    Ok(Some(task))
}

/// The state of one task, if it exists.
pub async fn state_of(conn: &impl ConnectionTrait, id: TaskId) -> Result<Option<TaskState>, DbErr> {
    let row = conn
        .query_one_raw(stmt(
            conn.get_database_backend(),
            "SELECT state FROM tasks WHERE id = $1",
            [Value::from(id.to_string())],
        ))
        .await?;
    row.map(|r| parse_state(&get::<String>(&r, "state")?))
        .transpose()
}

/// Filters of a task listing (AND-ed); see `ListTasksRequest`.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Any of these states; empty for all.
    pub states: Vec<TaskState>,
    /// This func.
    pub func: Option<String>,
    /// This group.
    pub task_group_id: Option<String>,
    /// This worker.
    pub worker: Option<String>,
    /// Claiming this resource.
    pub resource: Option<String>,
    /// Only tasks dispatched after this seq (paging).
    pub after_seq: i64,
    /// Page size.
    pub limit: u32,
}

/// A page of tasks in dispatch order, and whether more follow.
pub async fn list(
    conn: &impl ConnectionTrait,
    filter: &TaskFilter,
) -> Result<(Vec<TaskRecord>, bool), DbErr> {
    let mut conditions = vec!["seq > $1".to_owned()];
    let mut values = vec![Value::from(filter.after_seq)];
    if !filter.states.is_empty() {
        let list: Vec<String> = filter
            .states
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        conditions.push(format!("state IN ({})", list.join(", ")));
    }
    // (SQL before the placeholder, SQL after it, the value)
    let equal_to = [
        ("func = ", "", &filter.func),
        ("task_group_id = ", "", &filter.task_group_id),
        ("worker = ", "", &filter.worker),
        (
            "seq IN (SELECT task_seq FROM task_resources WHERE resource = ",
            ")",
            &filter.resource,
        ),
    ];
    for (before, after, value) in equal_to {
        if let Some(value) = value {
            values.push(Value::from(value.clone()));
            conditions.push(format!("{before}${}{after}", values.len()));
        }
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks WHERE {} ORDER BY seq LIMIT {}",
        conditions.join(" AND "),
        filter.limit + 1
    );
    let rows = conn
        .query_all_raw(stmt(conn.get_database_backend(), &sql, values))
        .await?;
    let more = rows.len() > filter.limit as usize;
    let mut tasks = rows
        .iter()
        .take(filter.limit as usize)
        .map(record)
        .collect::<Result<Vec<_>, _>>()?;
    attach_progress(conn, &mut tasks).await?;
    Ok((tasks, more))
}

async fn attach_progress(
    conn: &impl ConnectionTrait,
    tasks: &mut [TaskRecord],
) -> Result<(), DbErr> {
    if tasks.is_empty() {
        return Ok(());
    }
    let index: HashMap<i64, usize> = tasks.iter().enumerate().map(|(i, t)| (t.seq, i)).collect();
    let sql = format!(
        "SELECT task_seq, code, message, done, total, suffix FROM progress_reports \
         WHERE task_seq IN ({}) ORDER BY task_seq, position, code",
        placeholders(1, tasks.len())
    );
    let values = tasks.iter().map(|t| Value::from(t.seq));
    for row in conn
        .query_all_raw(stmt(conn.get_database_backend(), &sql, values))
        .await?
    {
        let seq: i64 = get(&row, "task_seq")?;
        if let Some(i) = index.get(&seq) {
            tasks[*i].progress.push(Progress {
                message: get(&row, "message")?,
                code: get(&row, "code")?,
                done: get(&row, "done")?,
                total: get(&row, "total")?,
                suffix: get(&row, "suffix")?,
            });
        }
    }
    Ok(())
}

fn parse_state(s: &str) -> Result<TaskState, DbErr> {
    TaskState::parse(s)
        .ok_or_else(|| DbErr::Custom(format!("unknown task state {s:?} in the database")))
}

fn record(row: &QueryResult) -> Result<TaskRecord, DbErr> {
    let id: String = get(row, "id")?;
    let error: Option<String> = get(row, "error")?;
    Ok(TaskRecord {
        seq: get(row, "seq")?,
        id: TaskId::parse(&id).map_err(|e| DbErr::Custom(e.to_string()))?,
        func: get(row, "func")?,
        args: get(row, "args")?,
        kwargs: get(row, "kwargs")?,
        exclusive_resources: string_list(&get::<String>(row, "exclusive_resources")?)?,
        shared_resources: string_list(&get::<String>(row, "shared_resources")?)?,
        state: parse_state(&get::<String>(row, "state")?)?,
        task_group_id: get(row, "task_group_id")?,
        parent_task_id: get(row, "parent_task_id")?,
        worker: get(row, "worker")?,
        attempt: get(row, "attempt")?,
        timeout_ms: get(row, "timeout_ms")?,
        created_at: get(row, "created_at")?,
        unblocked_at: get(row, "unblocked_at")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        error: error
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|e| DbErr::Custom(format!("corrupt task error JSON: {e}")))?,
        result: get(row, "result")?,
        created_resources: string_list(&get::<String>(row, "created_resources")?)?,
        progress: Vec::new(),
    })
}
