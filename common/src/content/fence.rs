//! Fencing a task's domain writes (DESIGN.md section 7).
//!
//! A worker may keep running a task after the scheduler gave up on it (the
//! worker was paused past its lease, the task was cancelled): its writes
//! must then not land. So every content task writes inside one transaction
//! begun with [`super::begin_write`] and ends it with [`Fence::commit`],
//! which re-reads the task's row in the same transaction and commits only
//! if the row still says RUNNING on this worker with this attempt. On
//! PostgreSQL the row is locked (`FOR UPDATE`) from the check to the commit,
//! so the scheduler cannot change it in between; on SQLite the write
//! transaction already excludes every other writer. The check comes last,
//! right before the commit, so the lock is held only for an instant and the
//! scheduler can still store a cancellation while the task works.

use super::{ContentError, for_update};
use crate::db::stmt;
use crate::names::TaskId;
use sea_orm::{ConnectionTrait, DatabaseTransaction, Value};

/// Who may commit: a task, the worker running it, and the attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The task.
    pub task_id: TaskId,
    /// The worker's name.
    pub worker: String,
    /// The attempt token of the assignment.
    pub attempt: i64,
}

impl Fence {
    /// Fails with [`ContentError::Fenced`] unless the task's row says
    /// RUNNING on this worker and attempt. On PostgreSQL the row stays
    /// locked until the transaction ends.
    pub async fn check(&self, conn: &impl ConnectionTrait) -> Result<(), ContentError> {
        let backend = conn.get_database_backend();
        let sql = format!(
            "SELECT 1 AS ok FROM tasks WHERE id = $1 AND worker = $2 AND attempt = $3 AND state = 'running'{}",
            for_update(backend)
        );
        let row = conn
            .query_one_raw(stmt(
                backend,
                &sql,
                [
                    Value::from(self.task_id.to_string()),
                    Value::from(self.worker.clone()),
                    Value::from(self.attempt),
                ],
            ))
            .await?;
        match row {
            Some(_) => Ok(()),
            None => Err(ContentError::Fenced {
                task_id: self.task_id.to_string(),
                worker: self.worker.clone(),
                attempt: self.attempt,
            }),
        }
    }

    /// Checks the fence and commits; on a failed check the transaction is
    /// rolled back and nothing of it lands.
    pub async fn commit(&self, txn: DatabaseTransaction) -> Result<(), ContentError> {
        if let Err(err) = self.check(&txn).await {
            txn.rollback().await?;
            return Err(err);
        }
        txn.commit().await?;
        Ok(())
    }
}
