//! Automatic task retention (`--task-retention-days`): when the scheduler
//! starts and then once an hour, purge every task in a final state that
//! finished longer ago than the retention, exactly as `Tasks.PurgeTasks`
//! does. Off by default, as in Pulp. The pass at start means a scheduler
//! that restarts more often than hourly still purges (and lets a test see a
//! pass without waiting an hour).

use crate::store::tasks;
use pulp_common::state::TaskState;
use pulp_common::time::now_micros;
use sea_orm::DatabaseConnection;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often retention runs.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

/// Purges finished tasks older than `retention` until `shutdown`.
pub async fn run(db: DatabaseConnection, retention: Duration, shutdown: CancellationToken) {
    // The first tick completes at once: the first pass runs at start.
    let mut tick = tokio::time::interval(RETENTION_INTERVAL);
    let finals = [
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Canceled,
        TaskState::Skipped,
    ];
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let before = now_micros() - retention.as_micros() as i64;
        match tasks::purge(&db, &finals, before).await {
            Ok(0) => {}
            Ok(deleted) => info!(deleted, "retention purged finished tasks"),
            Err(err) => warn!(error = %err, "retention purge failed; will retry"),
        }
    }
}
