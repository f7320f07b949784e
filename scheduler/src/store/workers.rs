//! The `workers` table: every worker the scheduler has seen, with its
//! registration and how it stands (online, draining, offline, lost).

use super::{get, string_list};
use pulp_common::db::stmt;
use sea_orm::{ConnectionTrait, DbErr, Value};
use std::collections::HashMap;

/// A worker as stored, with its running task count.
#[derive(Debug, Clone)]
pub struct WorkerRecord {
    /// Its name.
    pub name: String,
    /// The process instance it last registered with.
    pub instance_id: String,
    /// `online`, `draining`, `offline` or `lost`.
    pub state: String,
    /// Registered task names.
    pub funcs: Vec<String>,
    /// Slots.
    pub slots: i64,
    /// Software version.
    pub version: String,
    /// Microseconds since the epoch.
    pub connected_at: i64,
    /// Microseconds since the epoch.
    pub last_heartbeat: i64,
    /// RUNNING or CANCELING tasks assigned to it.
    pub running: i64,
}

/// Registration of a worker that just connected.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its process instance.
    pub instance_id: &'a str,
    /// Registered task names.
    pub funcs: &'a [String],
    /// Slots.
    pub slots: u32,
    /// Software version.
    pub version: &'a str,
}

/// Inserts or refreshes a worker that connected.
pub async fn upsert_online(
    conn: &impl ConnectionTrait,
    reg: &Registration<'_>,
    now: i64,
) -> Result<(), DbErr> {
    let sql = "INSERT INTO workers (name, instance_id, state, funcs, slots, version, connected_at, last_heartbeat) \
               VALUES ($1, $2, 'online', $3, $4, $5, $6, $6) \
               ON CONFLICT (name) DO UPDATE SET instance_id = excluded.instance_id, state = 'online', \
               funcs = excluded.funcs, slots = excluded.slots, version = excluded.version, \
               connected_at = excluded.connected_at, last_heartbeat = excluded.last_heartbeat";
    let values = [
        Value::from(reg.name.to_owned()),
        Value::from(reg.instance_id.to_owned()),
        Value::from(serde_json::to_string(reg.funcs).expect("a list serialises")),
        Value::from(i64::from(reg.slots)),
        Value::from(reg.version.to_owned()),
        Value::from(now),
    ];
    conn.execute_raw(stmt(conn.get_database_backend(), sql, values))
        .await?;
    Ok(())
}

/// Sets a worker's state (`draining`, `offline`, `lost`).
pub async fn set_state(conn: &impl ConnectionTrait, name: &str, state: &str) -> Result<(), DbErr> {
    conn.execute_raw(stmt(
        conn.get_database_backend(),
        "UPDATE workers SET state = $1 WHERE name = $2",
        [Value::from(state.to_owned()), Value::from(name.to_owned())],
    ))
    .await?;
    Ok(())
}

/// Records heartbeats.
pub async fn touch(conn: &impl ConnectionTrait, names: &[String], now: i64) -> Result<(), DbErr> {
    for name in names {
        conn.execute_raw(stmt(
            conn.get_database_backend(),
            "UPDATE workers SET last_heartbeat = $1 WHERE name = $2",
            [Value::from(now), Value::from(name.clone())],
        ))
        .await?;
    }
    Ok(())
}

/// Every registered func name (to accept dispatches of tasks a worker
/// offers beyond the built-in catalog).
pub async fn all_funcs(conn: &impl ConnectionTrait) -> Result<Vec<String>, DbErr> {
    let rows = conn
        .query_all_raw(stmt(
            conn.get_database_backend(),
            "SELECT funcs FROM workers",
            [],
        ))
        .await?;
    let mut funcs = Vec::new();
    for row in rows {
        funcs.extend(string_list(&get::<String>(&row, "funcs")?)?);
    }
    Ok(funcs)
}

/// Every worker, by name, with running task counts.
pub async fn list(conn: &impl ConnectionTrait) -> Result<Vec<WorkerRecord>, DbErr> {
    let backend = conn.get_database_backend();
    let counts: HashMap<String, i64> = conn
        .query_all_raw(stmt(
            backend,
            "SELECT worker, COUNT(*) AS n FROM tasks WHERE state IN ('running', 'canceling') \
             AND worker IS NOT NULL GROUP BY worker",
            [],
        ))
        .await?
        .iter()
        .map(|row| Ok((get(row, "worker")?, get(row, "n")?)))
        .collect::<Result<_, DbErr>>()?;
    let rows = conn
        .query_all_raw(stmt(
            backend,
            "SELECT name, instance_id, state, funcs, slots, version, connected_at, last_heartbeat FROM workers ORDER BY name",
            [],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let name: String = get(row, "name")?;
            Ok(WorkerRecord {
                running: counts.get(&name).copied().unwrap_or(0),
                name,
                instance_id: get(row, "instance_id")?,
                state: get(row, "state")?,
                funcs: string_list(&get::<String>(row, "funcs")?)?,
                slots: get(row, "slots")?,
                version: get(row, "version")?,
                connected_at: get(row, "connected_at")?,
                last_heartbeat: get(row, "last_heartbeat")?,
            })
        })
        .collect()
}
