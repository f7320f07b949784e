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
        vec![
            Box::new(M0001Tasking),
            Box::new(M0002Content),
            Box::new(M0003SchedulerLeader),
            Box::new(M0004Exports),
            Box::new(M0005LeanTaskIndexes),
            Box::new(M0006ClaimsWithoutForeignKey),
        ]
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

/// The content domain: artifacts, content units and their files,
/// repositories, their versions with content counts, and membership.
///
/// Membership is one `repository_content` row per stretch of versions in
/// which a unit is present: `version_added` is the first version that has
/// it, `version_removed` the first that no longer has it (NULL while it is
/// still present). A new version therefore costs rows for its changes only,
/// and "the content of version N" is the rows with `version_added <= N AND
/// (version_removed IS NULL OR version_removed > N)`. Version numbers (not
/// ids) are stored there because a version is always read within its
/// repository, and numbers order the versions.
struct M0002Content;

impl MigrationName for M0002Content {
    fn name(&self) -> &str {
        "m0002_content"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002Content {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        let statements = [
            "CREATE TABLE artifacts (
                id VARCHAR(36) PRIMARY KEY,
                sha256 VARCHAR(64) NOT NULL UNIQUE,
                size BIGINT NOT NULL,
                created_at BIGINT NOT NULL
            )",
            "CREATE TABLE contents (
                id VARCHAR(36) PRIMARY KEY,
                pulp_type VARCHAR(129) NOT NULL,
                natural_key TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                UNIQUE (pulp_type, natural_key)
            )",
            "CREATE INDEX contents_type ON contents (pulp_type, id)",
            // A NULL artifact is on-demand content not downloaded yet.
            "CREATE TABLE content_artifacts (
                content_id VARCHAR(36) NOT NULL REFERENCES contents(id) ON DELETE CASCADE,
                relative_path TEXT NOT NULL,
                artifact_id VARCHAR(36) REFERENCES artifacts(id),
                PRIMARY KEY (content_id, relative_path)
            )",
            "CREATE INDEX content_artifacts_artifact ON content_artifacts (artifact_id)",
            "CREATE TABLE repositories (
                id VARCHAR(36) PRIMARY KEY,
                name VARCHAR(255) NOT NULL UNIQUE,
                description TEXT NOT NULL,
                next_version BIGINT NOT NULL,
                created_at BIGINT NOT NULL
            )",
            // No foreign key on the base: it may be another repository's
            // version, and deleting a version sets references to it to
            // NULL (as Pulp does).
            "CREATE TABLE repository_versions (
                id VARCHAR(36) PRIMARY KEY,
                repository_id VARCHAR(36) NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
                number BIGINT NOT NULL,
                base_version_id VARCHAR(36),
                complete BOOLEAN NOT NULL,
                created_by_task VARCHAR(36),
                created_at BIGINT NOT NULL,
                UNIQUE (repository_id, number)
            )",
            // count_type: 'added', 'removed' or 'present'.
            "CREATE TABLE repository_version_counts (
                version_id VARCHAR(36) NOT NULL REFERENCES repository_versions(id) ON DELETE CASCADE,
                pulp_type VARCHAR(129) NOT NULL,
                count_type VARCHAR(8) NOT NULL,
                count BIGINT NOT NULL,
                PRIMARY KEY (version_id, count_type, pulp_type)
            )",
            // No foreign keys here, on purpose: PostgreSQL checks them with
            // a trigger per inserted row (and a row lock on the repository
            // each time), which made adding 100,000 units 2.7 times slower
            // (3.9 s against 1.4 s, measured). The only writer
            // (`content::versions`) checks, set-based and under the
            // repository's lock, that every unit exists, and
            // `content::repositories::delete` removes a repository's rows.
            // No index on content_id either until something reads by it.
            "CREATE TABLE repository_content (
                repository_id VARCHAR(36) NOT NULL,
                content_id VARCHAR(36) NOT NULL,
                version_added BIGINT NOT NULL,
                version_removed BIGINT,
                PRIMARY KEY (repository_id, content_id, version_added)
            )",
            "CREATE INDEX repository_content_added ON repository_content (repository_id, version_added)",
            "CREATE INDEX repository_content_removed ON repository_content (repository_id, version_removed)",
        ];
        for sql in statements {
            conn.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

/// Publications (with their published files), file-system exporters and
/// the exports they made.
///
/// A pass-through publication has no `published_artifacts` rows: it
/// publishes every file of its version at the content's relative path.
/// `published_artifacts` names a content unit's file by
/// `(content_id, content_relative_path)`, so the artifact behind it is read
/// at export time (a unit downloaded after publishing exports fine).
struct M0004Exports;

impl MigrationName for M0004Exports {
    fn name(&self) -> &str {
        "m0004_exports"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004Exports {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        let statements = [
            "CREATE TABLE publications (
                id VARCHAR(36) PRIMARY KEY,
                repository_id VARCHAR(36) NOT NULL,
                repository_version_id VARCHAR(36) NOT NULL REFERENCES repository_versions(id) ON DELETE CASCADE,
                pass_through BOOLEAN NOT NULL,
                complete BOOLEAN NOT NULL,
                created_by_task VARCHAR(36),
                created_at BIGINT NOT NULL
            )",
            "CREATE INDEX publications_version ON publications (repository_version_id)",
            "CREATE TABLE published_artifacts (
                publication_id VARCHAR(36) NOT NULL REFERENCES publications(id) ON DELETE CASCADE,
                relative_path TEXT NOT NULL,
                content_id VARCHAR(36) NOT NULL,
                content_relative_path TEXT NOT NULL,
                PRIMARY KEY (publication_id, relative_path)
            )",
            "CREATE TABLE exporters (
                id VARCHAR(36) PRIMARY KEY,
                name VARCHAR(255) NOT NULL UNIQUE,
                path TEXT NOT NULL,
                method VARCHAR(16) NOT NULL,
                created_at BIGINT NOT NULL
            )",
            "CREATE TABLE exports (
                id VARCHAR(36) PRIMARY KEY,
                exporter_id VARCHAR(36) NOT NULL REFERENCES exporters(id) ON DELETE CASCADE,
                task_id VARCHAR(36) NOT NULL,
                params TEXT NOT NULL,
                created_at BIGINT NOT NULL
            )",
            "CREATE INDEX exports_exporter ON exports (exporter_id, id)",
        ];
        for sql in statements {
            conn.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

/// Fewer index entries per task state change. Every change of a task row
/// rewrites an entry in each index over it (on PostgreSQL a new row version
/// is indexed everywhere, since `state` is indexed), and a task's life is an
/// insert and two updates. `tasks_unfinished` repeated `tasks_state`; the
/// indexes on `task_group_id`, `worker` and `finished_at` now leave out the
/// rows where the column is NULL (tasks outside groups, not yet assigned,
/// not finished), which no query looks for: every query on these columns
/// compares them with a value, which implies NOT NULL to both planners.
struct M0005LeanTaskIndexes;

impl MigrationName for M0005LeanTaskIndexes {
    fn name(&self) -> &str {
        "m0005_lean_task_indexes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0005LeanTaskIndexes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        let statements = [
            "DROP INDEX tasks_unfinished",
            "DROP INDEX tasks_group",
            "DROP INDEX tasks_worker",
            "DROP INDEX tasks_finished",
            "CREATE INDEX tasks_group ON tasks (task_group_id, seq) WHERE task_group_id IS NOT NULL",
            "CREATE INDEX tasks_worker ON tasks (worker, seq) WHERE worker IS NOT NULL",
            "CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL",
        ];
        // One call, so one connection: on SQLite a pooled connection that
        // did not run the DROP could still see the old index when it
        // prepares the CREATE ("index tasks_group already exists").
        conn.execute_unprepared(&statements.join(";\n")).await?;
        Ok(())
    }
}

/// `task_resources` loses its foreign key to `tasks`. The key made every
/// claimed resource of a dispatch run a lookup of its task (PostgreSQL
/// runs it as a trigger, `SELECT ... FOR KEY SHARE`, per row): about 40 %
/// of the execution time of the batched dispatch insert (EXPLAIN ANALYZE,
/// 32 tasks: 0.55 of 1.44 ms). Its rows are written in the same statement
/// as the task they belong to, by the engine alone; the purge, which the
/// key's `ON DELETE CASCADE` served, deletes them itself in the same
/// transaction as their tasks.
struct M0006ClaimsWithoutForeignKey;

impl MigrationName for M0006ClaimsWithoutForeignKey {
    fn name(&self) -> &str {
        "m0006_claims_without_foreign_key"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0006ClaimsWithoutForeignKey {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        let statements: &[&str] = match manager.get_database_backend() {
            DbBackend::Postgres => {
                &["ALTER TABLE task_resources DROP CONSTRAINT task_resources_task_seq_fkey"]
            }
            // SQLite cannot drop a constraint: the table is made anew.
            _ => &[
                "CREATE TABLE task_resources_new (
                    resource VARCHAR(1024) NOT NULL,
                    task_seq BIGINT NOT NULL,
                    exclusive BOOLEAN NOT NULL,
                    PRIMARY KEY (resource, task_seq)
                )",
                "INSERT INTO task_resources_new (resource, task_seq, exclusive) \
                 SELECT resource, task_seq, exclusive FROM task_resources",
                "DROP TABLE task_resources",
                "ALTER TABLE task_resources_new RENAME TO task_resources",
                "CREATE INDEX task_resources_task ON task_resources (task_seq)",
            ],
        };
        // One call, so one connection (see M0005LeanTaskIndexes).
        conn.execute_unprepared(&statements.join(";\n")).await?;
        Ok(())
    }
}
