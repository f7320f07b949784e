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
use pulp_common::db::{JsonType, json_rows, json_rows_value, stmt};
use pulp_common::names::TaskId;
use pulp_common::state::TaskState;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, TransactionTrait, Value,
};
use serde::Serialize;
use std::collections::HashMap;

const COLUMNS: &str = "seq, id, func, args, kwargs, exclusive_resources, shared_resources, state, \
    task_group_id, parent_task_id, worker, attempt, timeout_ms, created_at, unblocked_at, \
    started_at, finished_at, error, result, created_resources";

/// The columns of a new task row, as [`TaskRow`] sends them.
const ROW_COLUMNS: [(&str, JsonType); 10] = [
    ("id", JsonType::Text),
    ("func", JsonType::Text),
    ("args", JsonType::Text),
    ("kwargs", JsonType::Text),
    ("exclusive", JsonType::Text),
    ("shared", JsonType::Text),
    ("task_group_id", JsonType::Text),
    ("parent_task_id", JsonType::Text),
    ("timeout_ms", JsonType::BigInt),
    ("unblocked_at", JsonType::BigInt),
];
/// The columns a new task row fills, and what fills them from `v`, a
/// [`json_rows`] source of [`TaskRow`]s (`$1` is the time).
const INSERTED: &str = "id, func, args, kwargs, exclusive_resources, shared_resources, \
    task_group_id, parent_task_id, timeout_ms, created_at, unblocked_at, \
    state, attempt, created_resources";
const SELECTED: &str = "v.id, v.func, v.args, v.kwargs, v.exclusive, v.shared, v.task_group_id, \
    v.parent_task_id, v.timeout_ms, $1, v.unblocked_at, 'waiting', 0, '[]'";
/// PostgreSQL: the claims of the tasks a CTE `t` inserted (`RETURNING seq,
/// exclusive_resources, shared_resources`).
const CLAIMS_FROM_T: &str = "INSERT INTO task_resources (resource, task_seq, exclusive) \
    SELECT e.name, t.seq, TRUE FROM t, json_array_elements_text(t.exclusive_resources::json) AS e(name) \
    UNION ALL \
    SELECT s.name, t.seq, FALSE FROM t, json_array_elements_text(t.shared_resources::json) AS s(name)";

/// A new task as one JSON row of an insert.
#[derive(Serialize)]
struct TaskRow<'a> {
    id: String,
    func: &'a str,
    args: &'a str,
    kwargs: &'a str,
    exclusive: String,
    shared: String,
    task_group_id: Option<String>,
    parent_task_id: Option<String>,
    timeout_ms: Option<i64>,
    unblocked_at: Option<i64>,
}

impl<'a> TaskRow<'a> {
    fn new(task: &'a NewTask, unblocked: bool, now: i64) -> Self {
        let names = |list: &[pulp_common::names::ResourceName]| {
            serde_json::to_string(&list.iter().map(|r| r.as_str()).collect::<Vec<_>>())
                .expect("a list of strings serialises")
        };
        TaskRow {
            id: task.id.to_string(),
            func: task.func.as_str(),
            args: &task.args,
            kwargs: &task.kwargs,
            exclusive: names(&task.claims.exclusive),
            shared: names(&task.claims.shared),
            task_group_id: task.task_group_id.map(|g| g.to_string()),
            parent_task_id: task.parent_task_id.map(|p| p.to_string()),
            timeout_ms: task.timeout_ms,
            unblocked_at: unblocked.then_some(now),
        }
    }
}

/// A [`TaskRow`] numbered beforehand.
#[derive(Serialize)]
struct SeqTaskRow<'a> {
    seq: i64,
    #[serde(flatten)]
    task: TaskRow<'a>,
}

/// SQLite: inserts tasks and their resource claims and returns their
/// seqs (SQLite's AUTOINCREMENT numbers them), in the order given
/// (dispatch order follows the order of `tasks`). `unblocked[i]` says that
/// task i may run at once: its `unblocked_at` is `now`. PostgreSQL tasks
/// are numbered by the engine beforehand and written by [`PgInsert`].
pub async fn insert(
    conn: &impl ConnectionTrait,
    tasks: &[NewTask],
    unblocked: &[bool],
    now: i64,
) -> Result<Vec<i64>, DbErr> {
    debug_assert_eq!(tasks.len(), unblocked.len());
    let backend = conn.get_database_backend();
    debug_assert_eq!(backend, DbBackend::Sqlite);
    let source = json_rows(backend, 2, &ROW_COLUMNS);
    let sql = format!(
        "INSERT INTO tasks ({INSERTED}) SELECT {SELECTED} FROM {source} ORDER BY v.ord \
         RETURNING seq, id"
    );
    let mut seqs: HashMap<String, i64> = HashMap::with_capacity(tasks.len());
    for (chunk, chunk_unblocked) in tasks.chunks(CHUNK).zip(unblocked.chunks(CHUNK)) {
        let rows: Vec<TaskRow> = chunk
            .iter()
            .zip(chunk_unblocked)
            .map(|(task, &unblocked)| TaskRow::new(task, unblocked, now))
            .collect();
        let values = [Value::from(now), json_rows_value(&rows)];
        for row in conn.query_all_raw(stmt(backend, &sql, values)).await? {
            seqs.insert(get(&row, "id")?, get(&row, "seq")?);
        }
    }
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        let seq = *seqs
            .get(&task.id.to_string())
            .ok_or_else(|| DbErr::Custom("inserted task missing from RETURNING".into()))?;
        out.push(seq);
    }
    // The claims, from the rows just written.
    let sql = format!(
        "INSERT INTO task_resources (resource, task_seq, exclusive) \
         SELECT e.value, t.seq, TRUE FROM tasks t, json_each(t.exclusive_resources) e \
           WHERE {these} \
         UNION ALL \
         SELECT s.value, t.seq, FALSE FROM tasks t, json_each(t.shared_resources) s \
           WHERE {these}",
        these = seq_in(backend, "t.seq", 1)
    );
    for chunk in out.chunks(CHUNK) {
        conn.execute_raw(stmt(backend, &sql, [seq_rows(chunk)]))
            .await?;
    }
    Ok(out)
}

/// Takes `count` fresh seqs from the `tasks` sequence (PostgreSQL), in
/// increasing order: the engine numbers new tasks itself, so that a
/// dispatch round can be decided before its statement runs. The sequence never hands out a value twice, whatever
/// rolls back, and is shared by a new leader (see [`PgInsert`]).
pub async fn reserve_seqs(conn: &impl ConnectionTrait, count: usize) -> Result<Vec<i64>, DbErr> {
    let rows = conn
        .query_all_raw(stmt(
            DbBackend::Postgres,
            "SELECT nextval('tasks_seq_seq') AS seq FROM generate_series(1, $1)",
            [Value::from(count as i64)],
        ))
        .await?;
    rows.iter().map(|row| get(row, "seq")).collect()
}

/// PostgreSQL: an insert of tasks numbered beforehand ([`reserve_seqs`])
/// with their claims, one data-modifying statement per chunk, made ready
/// now and run later (by a dispatch round's task of its own, or in the
/// engine's transaction). Given the leadership epoch, each statement also
/// checks it under the same `FOR SHARE` lock as every round, so that one
/// statement can be a whole round.
#[derive(Debug)]
pub struct PgInsert {
    statements: Vec<(sea_orm::Statement, usize)>,
    checks_epoch: bool,
}

/// What [`PgInsert::run`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Every task was inserted.
    All,
    /// The epoch was not current: nothing was inserted.
    Fenced,
}

impl PgInsert {
    /// The insert of `tasks` as `seqs`; `unblocked` as for [`insert`];
    /// `epoch` the leadership epoch the engine runs under, if any.
    pub fn new(
        tasks: &[NewTask],
        seqs: &[i64],
        unblocked: &[bool],
        now: i64,
        epoch: Option<i64>,
    ) -> PgInsert {
        debug_assert_eq!(tasks.len(), seqs.len());
        debug_assert_eq!(tasks.len(), unblocked.len());
        let backend = DbBackend::Postgres;
        // A [`SeqTaskRow`]: the chosen seq, then a [`TaskRow`].
        let columns: Vec<(&str, JsonType)> = [("seq", JsonType::BigInt)]
            .into_iter()
            .chain(ROW_COLUMNS)
            .collect();
        let source = json_rows(backend, 2, &columns);
        let (leader, current) = match epoch {
            Some(_) => (
                "leader AS (SELECT epoch FROM scheduler_leader WHERE id = 1 FOR SHARE), ",
                "WHERE EXISTS (SELECT 1 FROM leader WHERE epoch = $3)",
            ),
            None => ("", ""),
        };
        let sql = format!(
            "WITH {leader}t AS (INSERT INTO tasks (seq, {INSERTED}) \
               SELECT v.seq, {SELECTED} FROM {source} {current} ORDER BY v.ord \
               RETURNING seq, exclusive_resources, shared_resources), \
             r AS ({CLAIMS_FROM_T}) \
             SELECT count(*) AS n FROM t"
        );
        let statements = tasks
            .chunks(CHUNK)
            .zip(seqs.chunks(CHUNK))
            .zip(unblocked.chunks(CHUNK))
            .map(|((tasks, seqs), unblocked)| {
                let rows: Vec<SeqTaskRow> = tasks
                    .iter()
                    .zip(seqs)
                    .zip(unblocked)
                    .map(|((task, &seq), &unblocked)| SeqTaskRow {
                        seq,
                        task: TaskRow::new(task, unblocked, now),
                    })
                    .collect();
                let mut values = vec![Value::from(now), json_rows_value(&rows)];
                values.extend(epoch.map(Value::from));
                (stmt(backend, &sql, values), rows.len())
            })
            .collect();
        PgInsert {
            statements,
            checks_epoch: epoch.is_some(),
        }
    }

    /// True when the insert is one statement: atomic without a
    /// transaction around it.
    pub fn is_one_statement(&self) -> bool {
        self.statements.len() == 1
    }

    /// Runs the insert on `conn` (a transaction unless
    /// [`is_one_statement`](Self::is_one_statement)).
    pub async fn run(self, conn: &impl ConnectionTrait) -> Result<Inserted, DbErr> {
        for (statement, expected) in self.statements {
            let row = conn.query_one_raw(statement).await?;
            let inserted: i64 = match row {
                Some(row) => get(&row, "n")?,
                None => 0,
            };
            if inserted == 0 && expected > 0 && self.checks_epoch {
                // No row at all: only the epoch condition does that.
                return Ok(Inserted::Fenced);
            }
            if inserted != expected as i64 {
                return Err(DbErr::Custom(format!(
                    "inserted {inserted} of {expected} tasks"
                )));
            }
        }
        Ok(Inserted::All)
    }
}

/// A row of seqs for [`json_rows`].
#[derive(Serialize)]
struct SeqRow {
    seq: i64,
}

/// `seqs` as the parameter of [`seq_in`].
fn seq_rows(seqs: &[i64]) -> Value {
    json_rows_value(&seqs.iter().map(|&seq| SeqRow { seq }).collect::<Vec<_>>())
}

/// `<column> IN (...)` for the seqs bound to `$param` by [`seq_rows`].
fn seq_in(backend: DbBackend, column: &str, param: usize) -> String {
    format!(
        "{column} IN (SELECT v.seq FROM {})",
        json_rows(backend, param, &[("seq", JsonType::BigInt)])
    )
}

/// Records that the resources of these WAITING tasks became free.
pub async fn set_unblocked(
    conn: &impl ConnectionTrait,
    seqs: &[i64],
    now: i64,
) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    let sql = format!(
        "UPDATE tasks SET unblocked_at = $1 WHERE {} AND (unblocked_at IS NULL AND state = 'waiting') IS TRUE",
        seq_in(backend, "seq", 2)
    );
    for chunk in seqs.chunks(CHUNK) {
        let values = [Value::from(now), seq_rows(chunk)];
        conn.execute_raw(stmt(backend, &sql, values)).await?;
    }
    Ok(())
}

/// Assigns WAITING tasks to workers, `(seq, worker)` pairs: RUNNING,
/// attempt + 1, one statement per chunk. Every one must change: a task
/// that is not WAITING in the database means memory and database disagree,
/// an error that fails the round.
pub async fn claim(
    conn: &impl ConnectionTrait,
    picks: &[(i64, String)],
    now: i64,
) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    #[derive(Serialize)]
    struct Row<'a> {
        seq: i64,
        worker: &'a str,
    }
    let sql = format!(
        "UPDATE tasks SET state = 'running', worker = v.worker, started_at = $1, \
         attempt = tasks.attempt + 1, unblocked_at = COALESCE(tasks.unblocked_at, $1) \
         FROM {} WHERE tasks.seq = v.seq AND (tasks.state = 'waiting') IS TRUE",
        json_rows(
            backend,
            2,
            &[("seq", JsonType::BigInt), ("worker", JsonType::Text)]
        )
    );
    let mut changed = 0;
    for chunk in picks.chunks(CHUNK) {
        let rows: Vec<Row> = chunk
            .iter()
            .map(|(seq, worker)| Row { seq: *seq, worker })
            .collect();
        let values = [Value::from(now), json_rows_value(&rows)];
        changed += conn
            .execute_raw(stmt(backend, &sql, values))
            .await?
            .rows_affected();
    }
    if changed != picks.len() as u64 {
        return Err(DbErr::Custom(format!(
            "claimed {changed} of {} tasks: the database disagrees with memory",
            picks.len()
        )));
    }
    Ok(())
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
    #[derive(Serialize)]
    struct Row<'a> {
        seq: i64,
        worker: &'a str,
        attempt: i64,
        state: &'static str,
        result: Option<&'a str>,
        error: Option<String>,
        created: String,
    }
    let sql = format!(
        "UPDATE tasks SET \
         state = CASE WHEN tasks.state = 'canceling' THEN 'canceled' ELSE v.state END, \
         finished_at = $1, result = v.result, error = v.error, created_resources = v.created \
         FROM {} WHERE tasks.seq = v.seq AND tasks.worker = v.worker AND tasks.attempt = v.attempt \
         AND (tasks.state IN ('running', 'canceling')) IS TRUE RETURNING tasks.seq",
        json_rows(
            backend,
            2,
            &[
                ("seq", JsonType::BigInt),
                ("worker", JsonType::Text),
                ("attempt", JsonType::BigInt),
                ("state", JsonType::Text),
                ("result", JsonType::Text),
                ("error", JsonType::Text),
                ("created", JsonType::Text),
            ]
        )
    );
    let mut changed = Vec::with_capacity(endings.len());
    for chunk in endings.chunks(CHUNK) {
        let rows: Vec<Row> = chunk
            .iter()
            .map(|ending| {
                let (result, error) = match &ending.outcome {
                    Outcome::Completed(result) => (Some(result.as_str()), None),
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
                Row {
                    seq: ending.seq,
                    worker: &ending.worker,
                    attempt: ending.attempt,
                    state: ending.state_if_running().as_str(),
                    result,
                    error: error.map(|e| serde_json::to_string(&e).expect("a failure serialises")),
                    created: serde_json::to_string(&ending.created_resources)
                        .expect("a list serialises"),
                }
            })
            .collect();
        let values = [Value::from(now), json_rows_value(&rows)];
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
    #[derive(Serialize)]
    struct Row<'a> {
        seq: i64,
        code: &'a str,
        message: &'a str,
        done: i64,
        total: i64,
        suffix: &'a str,
    }
    // `WHERE TRUE` keeps SQLite from reading ON CONFLICT as a join clause.
    let sql = format!(
        "INSERT INTO progress_reports (task_seq, code, position, message, done, total, suffix) \
         SELECT v.seq, v.code, $1, v.message, v.done, v.total, v.suffix FROM {} WHERE TRUE \
         ON CONFLICT (task_seq, code) DO UPDATE SET message = excluded.message, done = excluded.done, \
         total = excluded.total, suffix = excluded.suffix",
        json_rows(
            backend,
            2,
            &[
                ("seq", JsonType::BigInt),
                ("code", JsonType::Text),
                ("message", JsonType::Text),
                ("done", JsonType::BigInt),
                ("total", JsonType::BigInt),
                ("suffix", JsonType::Text),
            ]
        )
    );
    for chunk in reports.chunks(CHUNK) {
        let rows: Vec<Row> = chunk
            .iter()
            .map(|(seq, p)| Row {
                seq: *seq,
                code: &p.code,
                message: &p.message,
                done: p.done,
                total: p.total,
                suffix: &p.suffix,
            })
            .collect();
        let values = [Value::from(now), json_rows_value(&rows)];
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
/// `finished_before`, with their claims (`task_resources` has no foreign
/// key to cascade along: migration m0006), a batch per transaction, so
/// that memory stays flat whatever the count. Returns how many were
/// deleted.
pub async fn purge(
    db: &DatabaseConnection,
    states: &[TaskState],
    finished_before: i64,
) -> Result<u64, DbErr> {
    debug_assert!(states.iter().all(|s| s.is_final()));
    if states.is_empty() {
        return Ok(0);
    }
    let backend = db.get_database_backend();
    let list: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    let delete_tasks = format!(
        "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE state IN ({}) AND finished_at < $1 \
         ORDER BY seq LIMIT {PURGE_BATCH}) RETURNING seq",
        list.join(", ")
    );
    let delete_claims = format!(
        "DELETE FROM task_resources WHERE {}",
        seq_in(backend, "task_seq", 1)
    );
    let mut deleted = 0;
    loop {
        let txn = db.begin().await?;
        let seqs: Vec<i64> = txn
            .query_all_raw(stmt(backend, &delete_tasks, [Value::from(finished_before)]))
            .await?
            .iter()
            .map(|row| row.try_get("", "seq"))
            .collect::<Result<_, _>>()?;
        for chunk in seqs.chunks(CHUNK) {
            txn.execute_raw(stmt(backend, &delete_claims, [seq_rows(chunk)]))
                .await?;
        }
        txn.commit().await?;
        deleted += seqs.len() as u64;
        if seqs.len() < PURGE_BATCH {
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
    let backend = conn.get_database_backend();
    let sql = format!(
        "SELECT task_seq, code, message, done, total, suffix FROM progress_reports \
         WHERE {} ORDER BY task_seq, position, code",
        seq_in(backend, "task_seq", 1)
    );
    let seqs: Vec<i64> = tasks.iter().map(|t| t.seq).collect();
    for row in conn
        .query_all_raw(stmt(backend, &sql, [seq_rows(&seqs)]))
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
