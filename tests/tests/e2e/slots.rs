//! Assignment respects slots: a worker never runs more tasks at once than
//! the slots it registered. Checked from the scheduler's own record of each
//! task (`worker`, `started_at` when it was assigned, `finished_at` when its
//! outcome was stored), which is exactly when the task held a slot.

use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{Backend, TestApp, both_databases, micros, state};
use serde_json::json;
use std::collections::BTreeMap;

both_databases!(
    a_worker_runs_at_most_its_slots,
    workers_with_different_slots_each_stay_within_theirs,
);

/// How long each task sleeps: long enough that tasks assigned together
/// overlap for a while, short enough to keep the test quick.
const SLEEP_SECONDS: f64 = 0.3;

/// Dispatches `count` sleeps, each on a resource of its own so that only
/// slots limit how many run at once.
async fn dispatch_sleeps(app: &TestApp, count: usize) -> Vec<pb::Task> {
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let resource = format!("slots-{i}");
        tasks.push(
            app.dispatch(
                "sleep",
                json!({ "seconds": SLEEP_SECONDS }),
                &[resource.as_str()],
                &[],
            )
            .await,
        );
    }
    tasks
}

/// The most of the half-open intervals `[start, end)` that hold at one
/// instant (a task ending at the instant another starts freed its slot).
fn most_at_once(intervals: &[(i64, i64)]) -> usize {
    // Ends sort before starts at the same instant: (time, -1) < (time, +1).
    let mut events: Vec<(i64, i32)> = intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, change) in events {
        now += change;
        most = most.max(now);
    }
    most as usize
}

/// Waits for every task, asserts each COMPLETED, and returns the slot
/// intervals per worker name.
async fn slot_intervals(app: &TestApp, tasks: &[pb::Task]) -> BTreeMap<String, Vec<(i64, i64)>> {
    let mut per_worker: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for task in tasks {
        let done = app.wait_final(&task.id).await;
        assert_eq!(state(&done), pb::TaskState::Completed, "{done:?}");
        let (start, end) = (micros(&done.started_at), micros(&done.finished_at));
        assert!(start < end, "{done:?}");
        per_worker
            .entry(done.worker)
            .or_default()
            .push((start, end));
    }
    per_worker
}

/// A worker with 2 slots and 6 runnable tasks: never more than 2 at once,
/// and 2 at once indeed (otherwise the check would hold trivially).
async fn a_worker_runs_at_most_its_slots(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    // Dispatched before the worker connects: all runnable when it does.
    let tasks = dispatch_sleeps(&app, 6).await;
    let _worker = app.start_worker("two", 2).await;
    let per_worker = slot_intervals(&app, &tasks).await;
    assert_eq!(
        per_worker.keys().collect::<Vec<_>>(),
        ["two"],
        "{per_worker:?}"
    );
    let intervals = &per_worker["two"];
    assert_eq!(intervals.len(), 6);
    assert_eq!(
        most_at_once(intervals),
        2,
        "tasks at once on a 2-slot worker: {intervals:?}"
    );
}

/// A 1-slot and a 3-slot worker share 12 runnable tasks: each stays within
/// its own slots, and each fills them.
async fn workers_with_different_slots_each_stay_within_theirs(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let tasks = dispatch_sleeps(&app, 12).await;
    let _one = app.start_worker("one", 1).await;
    let _three = app.start_worker("three", 3).await;
    let per_worker = slot_intervals(&app, &tasks).await;
    assert_eq!(
        per_worker.keys().collect::<Vec<_>>(),
        ["one", "three"],
        "both workers ran tasks, and no one else: {per_worker:?}"
    );
    assert_eq!(per_worker.values().map(Vec::len).sum::<usize>(), 12);
    for (name, slots) in [("one", 1), ("three", 3)] {
        let intervals = &per_worker[name];
        assert_eq!(
            most_at_once(intervals),
            slots,
            "tasks at once on {name} ({slots} slots): {intervals:?}"
        );
    }
}

#[test]
fn most_at_once_counts_half_open_overlaps() {
    assert_eq!(most_at_once(&[]), 0);
    assert_eq!(most_at_once(&[(0, 10), (10, 20)]), 1);
    assert_eq!(most_at_once(&[(0, 10), (5, 20), (9, 12)]), 3);
    assert_eq!(most_at_once(&[(0, 10), (5, 20), (10, 12)]), 2);
}
