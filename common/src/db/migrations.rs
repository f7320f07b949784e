//! The schema, as sea-orm migrations run by the scheduler at start-up.
//!
//! Written as plain SQL per backend (the only differences are the
//! auto-increment column and `BOOLEAN` defaults). On PostgreSQL a session
//! advisory lock serialises replicas that start together.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager, async_trait};

/// Applies every pending migration.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Postgres {
        // Held by one pooled session while migrating; released below.
        let mut conn = db
            .get_postgres_connection_pool()
            .acquire()
            .await
            .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::Internal(e.to_string())))?;
        sqlx::query("SELECT pg_advisory_lock(7283001)")
            .execute(&mut *conn)
            .await
            .map_err(|e| DbErr::Conn(sea_orm::RuntimeErr::Internal(e.to_string())))?;
        let result = Migrator::up(db, None).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock(7283001)")
            .execute(&mut *conn)
            .await;
        result
    } else {
        Migrator::up(db, None).await
    }
}

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(M0001Tasking), Box::new(M0003SchedulerLeader)]
    }
}

/// Tasks, task groups, their resources and progress, and workers.
struct M0001Tasking;

impl MigrationName for M0001Tasking {
    fn name(&self) -> &str {
        "m0001_tasking"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Tasking {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        let seq = match manager.get_database_backend() {
            DbBackend::Postgres => "seq BIGSERIAL PRIMARY KEY",
            _ => "seq INTEGER PRIMARY KEY AUTOINCREMENT",
        };
        let statements = [
            "CREATE TABLE task_groups (
                id VARCHAR(36) PRIMARY KEY,
                description TEXT NOT NULL,
                all_tasks_dispatched BOOLEAN NOT NULL,
                created_at BIGINT NOT NULL
            )"
            .to_owned(),
            // `seq` is the dispatch order; `id` the public UUID.
            format!(
                "CREATE TABLE tasks (
                {seq},
                id VARCHAR(36) NOT NULL UNIQUE,
                func VARCHAR(200) NOT NULL,
                args TEXT NOT NULL,
                kwargs TEXT NOT NULL,
                exclusive_resources TEXT NOT NULL,
                shared_resources TEXT NOT NULL,
                state VARCHAR(16) NOT NULL,
                task_group_id VARCHAR(36) REFERENCES task_groups(id),
                parent_task_id VARCHAR(36),
                worker VARCHAR(200),
                attempt BIGINT NOT NULL,
                timeout_ms BIGINT,
                created_at BIGINT NOT NULL,
                unblocked_at BIGINT,
                started_at BIGINT,
                finished_at BIGINT,
                error TEXT,
                result TEXT,
                created_resources TEXT NOT NULL
            )"
            ),
            "CREATE INDEX tasks_unfinished ON tasks (seq) WHERE state IN ('waiting', 'running', 'canceling')".to_owned(),
            "CREATE INDEX tasks_state ON tasks (state, seq)".to_owned(),
            "CREATE INDEX tasks_group ON tasks (task_group_id, seq)".to_owned(),
            "CREATE INDEX tasks_worker ON tasks (worker, seq)".to_owned(),
            "CREATE INDEX tasks_func ON tasks (func, seq)".to_owned(),
            "CREATE INDEX tasks_finished ON tasks (finished_at)".to_owned(),
            // One row per claimed resource, for the `resource` filter.
            "CREATE TABLE task_resources (
                resource VARCHAR(1024) NOT NULL,
                task_seq BIGINT NOT NULL REFERENCES tasks(seq) ON DELETE CASCADE,
                exclusive BOOLEAN NOT NULL,
                PRIMARY KEY (resource, task_seq)
            )"
            .to_owned(),
            "CREATE INDEX task_resources_task ON task_resources (task_seq)".to_owned(),
            "CREATE TABLE progress_reports (
                task_seq BIGINT NOT NULL REFERENCES tasks(seq) ON DELETE CASCADE,
                code VARCHAR(200) NOT NULL,
                position BIGINT NOT NULL,
                message TEXT NOT NULL,
                done BIGINT NOT NULL,
                total BIGINT NOT NULL,
                suffix TEXT NOT NULL,
                PRIMARY KEY (task_seq, code)
            )"
            .to_owned(),
            "CREATE TABLE workers (
                name VARCHAR(200) PRIMARY KEY,
                instance_id VARCHAR(64) NOT NULL,
                state VARCHAR(16) NOT NULL,
                funcs TEXT NOT NULL,
                slots BIGINT NOT NULL,
                version TEXT NOT NULL,
                connected_at BIGINT NOT NULL,
                last_heartbeat BIGINT NOT NULL
            )"
            .to_owned(),
        ];
        for sql in statements {
            conn.execute_unprepared(&sql).await?;
        }
        Ok(())
    }
}

/// The leadership row of scheduler replicas on PostgreSQL (see the
/// scheduler's `cluster` module): who leads, and the epoch that fences
/// older leaders.
struct M0003SchedulerLeader;

impl MigrationName for M0003SchedulerLeader {
    fn name(&self) -> &str {
        "m0003_scheduler_leader"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003SchedulerLeader {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE scheduler_leader (
                    id INTEGER PRIMARY KEY,
                    epoch BIGINT NOT NULL,
                    address TEXT NOT NULL,
                    since BIGINT NOT NULL
                )",
            )
            .await?;
        Ok(())
    }
}
