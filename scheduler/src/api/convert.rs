//! Stored records to protobuf messages.

use crate::store::groups::GroupRecord;
use crate::store::workers::WorkerRecord;
use crate::task::{Progress, TaskFailure, TaskRecord};
use pulp_common::json;
use pulp_common::proto::tasking::v1 as pb;
use pulp_common::state::TaskState;
use pulp_common::time::to_timestamp;

/// A task as sent to clients.
pub fn task(record: &TaskRecord) -> pb::Task {
    let args = serde_json::from_str(&record.args).unwrap_or(serde_json::Value::Array(Vec::new()));
    let kwargs = match serde_json::from_str(&record.kwargs) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    pb::Task {
        id: record.id.to_string(),
        func: record.func.clone(),
        state: record.state.to_proto() as i32,
        worker: record.worker.clone().unwrap_or_default(),
        created_at: Some(to_timestamp(record.created_at)),
        unblocked_at: record.unblocked_at.map(to_timestamp),
        started_at: record.started_at.map(to_timestamp),
        finished_at: record.finished_at.map(to_timestamp),
        error: record.error.as_ref().map(error),
        result: record
            .result
            .as_deref()
            .and_then(|r| serde_json::from_str(r).ok())
            .map(|v| json::json_to_value(&v)),
        exclusive_resources: record.exclusive_resources.clone(),
        shared_resources: record.shared_resources.clone(),
        task_group_id: record.task_group_id.clone().unwrap_or_default(),
        parent_task_id: record.parent_task_id.clone().unwrap_or_default(),
        progress_reports: record.progress.iter().map(progress).collect(),
        args: Some(json::json_to_list(&args)),
        kwargs: Some(json::json_to_struct(&kwargs)),
        created_resources: record.created_resources.clone(),
        timeout_seconds: record.timeout_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
    }
}

fn error(failure: &TaskFailure) -> pb::TaskError {
    pb::TaskError {
        description: failure.description.clone(),
        reason: failure.reason.clone(),
        traceback: failure.traceback.clone(),
    }
}

fn progress(p: &Progress) -> pb::ProgressReport {
    pb::ProgressReport {
        message: p.message.clone(),
        code: p.code.clone(),
        done: p.done,
        total: p.total,
        suffix: p.suffix.clone(),
    }
}

/// A group with its counts.
pub fn group(record: &GroupRecord) -> pb::TaskGroup {
    let count = |state: TaskState| record.counts.get(&state).copied().unwrap_or(0);
    pb::TaskGroup {
        id: record.id.clone(),
        description: record.description.clone(),
        all_tasks_dispatched: record.all_tasks_dispatched,
        finished: record.finished(),
        created_at: Some(to_timestamp(record.created_at)),
        total: record.counts.values().sum(),
        waiting: count(TaskState::Waiting),
        running: count(TaskState::Running),
        completed: count(TaskState::Completed),
        failed: count(TaskState::Failed),
        canceling: count(TaskState::Canceling),
        canceled: count(TaskState::Canceled),
        skipped: count(TaskState::Skipped),
    }
}

/// A worker as listed.
pub fn worker(record: &WorkerRecord) -> pb::Worker {
    let state = match record.state.as_str() {
        "online" => pb::WorkerState::Online,
        "draining" => pb::WorkerState::Draining,
        "lost" => pb::WorkerState::Lost,
        _ => pb::WorkerState::Offline,
    };
    pb::Worker {
        name: record.name.clone(),
        state: state as i32,
        funcs: record.funcs.clone(),
        slots: u32::try_from(record.slots).unwrap_or(0),
        running: u32::try_from(record.running).unwrap_or(0),
        connected_at: Some(to_timestamp(record.connected_at)),
        last_heartbeat: Some(to_timestamp(record.last_heartbeat)),
        version: record.version.clone(),
    }
}

/// A progress report from a worker, into the domain type.
pub fn progress_from(p: &pb::ProgressReport) -> Progress {
    Progress {
        message: p.message.clone(),
        code: p.code.clone(),
        done: p.done,
        total: p.total,
        suffix: p.suffix.clone(),
    }
}
