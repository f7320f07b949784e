//! `add_and_remove` under concurrency: the repository's reservation
//! serialises Modify calls on one repository (in dispatch order), different
//! repositories proceed at once, a cancelled run leaves nothing behind, and
//! a base version deleted after Modify accepted it fails the run.
//!
//! The runs are held at known points by the task's hook (see
//! `pulp_worker::tasks::add_and_remove::Hook`), so no test sleeps or
//! depends on timing.

use super::{ContentApp, result, set, summary};
use futures::FutureExt;
use pulp_common::content::versions::Step;
use pulp_common::proto::content::v1 as pb;
use pulp_common::proto::tasking::v1 as tasking;
use pulp_tests::{Backend, WAIT, both_databases, state};
use pulp_worker::tasks::add_and_remove::{Hook, Phase};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::{Barrier, Notify, Semaphore};

both_databases!(
    modifies_of_one_repository_run_in_dispatch_order,
    modifies_of_different_repositories_run_concurrently,
    cancelled_modify_leaves_no_version,
    base_version_deleted_before_the_run_fails_not_found,
);

/// Holds the first run that reaches `phase` until released, and tells the
/// test it got there.
struct Gate {
    arrived: Notify,
    release: Semaphore,
    used: AtomicBool,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            arrived: Notify::new(),
            release: Semaphore::new(0),
            used: AtomicBool::new(false),
        })
    }

    /// A gate that lets every run pass until [`arm`](Self::arm)ed.
    fn disarmed() -> Arc<Gate> {
        let gate = Gate::new();
        gate.used.store(true, Ordering::SeqCst);
        gate
    }

    /// Holds the next run that reaches the gate's phase.
    fn arm(&self) {
        self.used.store(false, Ordering::SeqCst);
    }

    fn hook(self: &Arc<Gate>, at: Phase) -> Hook {
        let gate = self.clone();
        Arc::new(move |phase, _token| {
            let gate = gate.clone();
            async move {
                if phase == at && !gate.used.swap(true, Ordering::SeqCst) {
                    gate.arrived.notify_one();
                    gate.release.acquire().await.expect("gate open").forget();
                }
            }
            .boxed()
        })
    }

    async fn wait_arrived(&self) {
        tokio::time::timeout(WAIT, self.arrived.notified())
            .await
            .expect("a run reached the gate");
    }
}

/// Two Modify calls on one repository: the second waits on the
/// repository's reservation while the first runs (held inside its
/// transaction), then both take effect, the first as v1.
async fn modifies_of_one_repository_run_in_dispatch_order(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let gate = Gate::new();
    // On SQLite a run holds the write lock inside its transaction, and the
    // scheduler could not record anything meanwhile: hold it before.
    let at = match backend {
        Backend::Sqlite => Phase::BeforeTransaction,
        Backend::Postgres => Phase::InTransaction(Step::Added),
    };
    let _worker = app.hooked_worker("w", 4, gate.hook(at)).await;
    let repo = app.repo("serial").await;
    let u = app.units("u", 2).await;

    // First: add u0. Second: remove u0, add u1. In dispatch order that is
    // v1 = {u0}, v2 = {u1}; the other way round it would be v1 = {u1},
    // v2 = {u0, u1}.
    let first = app.modify(&repo.id, &u[..1], &[], None).await;
    gate.wait_arrived().await;
    let second = app.modify(&repo.id, &u[1..], &u[..1], None).await;
    let waiting = app
        .tasks()
        .get_task(tasking::GetTaskRequest {
            id: second.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(&waiting),
        tasking::TaskState::Waiting,
        "the reservation holds it"
    );
    gate.release.add_permits(1);

    let first = app.wait_final(&first.id).await;
    let second = app.wait_final(&second.id).await;
    for task in [&first, &second] {
        assert_eq!(
            state(task),
            tasking::TaskState::Completed,
            "{:?}",
            task.error
        );
    }
    assert_eq!(result(&first)["version_number"], 1);
    assert_eq!(result(&second)["version_number"], 2);
    let micros =
        |t: &Option<prost_types::Timestamp>| pulp_common::time::from_timestamp(t.as_ref().unwrap());
    assert!(micros(&second.started_at) >= micros(&first.finished_at));
    let versions = app.versions(&repo.id).await;
    assert_eq!(app.content_of(&versions[1].id).await, set(&[&u[0]]));
    assert_eq!(app.content_of(&versions[2].id).await, set(&[&u[1]]));
    assert_eq!(summary(&versions[2]), (1, 1, 1));
}

/// Modify calls on two repositories run at the same time: each run waits
/// at a barrier for the other, which only both running at once can pass.
async fn modifies_of_different_repositories_run_concurrently(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let barrier = Arc::new(Barrier::new(2));
    let met = Arc::new(AtomicUsize::new(0));
    let hook: Hook = {
        let (barrier, met) = (barrier.clone(), met.clone());
        Arc::new(move |phase, _token| {
            let (barrier, met) = (barrier.clone(), met.clone());
            async move {
                if phase == Phase::BeforeTransaction
                    && tokio::time::timeout(WAIT / 2, barrier.wait()).await.is_ok()
                {
                    met.fetch_add(1, Ordering::SeqCst);
                }
            }
            .boxed()
        })
    };
    let _worker = app.hooked_worker("w", 2, hook).await;
    let a = app.repo("a").await;
    let b = app.repo("b").await;
    let u = app.units("u", 2).await;
    let ta = app.modify(&a.id, &u[..1], &[], None).await;
    let tb = app.modify(&b.id, &u[1..], &[], None).await;
    for task in [ta, tb] {
        let done = app.wait_final(&task.id).await;
        assert_eq!(
            state(&done),
            tasking::TaskState::Completed,
            "{:?}",
            done.error
        );
    }
    assert_eq!(
        met.load(Ordering::SeqCst),
        2,
        "both runs were at the barrier together"
    );
    assert_eq!(app.versions(&a.id).await.len(), 2);
    assert_eq!(app.versions(&b.id).await.len(), 2);
}

/// A Modify cancelled while it runs ends CANCELED, leaves no version (not
/// even an incomplete one), and the next successful Modify gets the number
/// it would have had. On PostgreSQL the run is held with its membership
/// already written inside the transaction; on SQLite, where the scheduler
/// cannot store the cancellation while a run holds the write lock, it is
/// held just before its transaction and then finds itself cancelled.
async fn cancelled_modify_leaves_no_version(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let at = match backend {
        Backend::Sqlite => Phase::BeforeTransaction,
        Backend::Postgres => Phase::BeforeCommit,
    };
    let arrived = Arc::new(Notify::new());
    let armed = Arc::new(AtomicBool::new(false));
    let hook: Hook = {
        let (arrived, armed) = (arrived.clone(), armed.clone());
        Arc::new(move |phase, token| {
            let (arrived, armed) = (arrived.clone(), armed.clone());
            async move {
                if phase == at && armed.swap(false, Ordering::SeqCst) {
                    arrived.notify_one();
                    token.cancelled().await;
                }
            }
            .boxed()
        })
    };
    let _worker = app.hooked_worker("w", 1, hook).await;
    let repo = app.repo("cancel").await;
    let u = app.units("u", 3).await;
    app.modify_done(&repo.id, &u[..1], &[], None).await;

    armed.store(true, Ordering::SeqCst);
    let doomed = app.modify(&repo.id, &u[1..], &[], None).await;
    tokio::time::timeout(WAIT, arrived.notified())
        .await
        .expect("the run reached the hook");
    app.tasks()
        .cancel_task(tasking::CancelTaskRequest {
            id: doomed.id.clone(),
        })
        .await
        .expect("cancel");
    let doomed = app.wait_final(&doomed.id).await;
    assert_eq!(state(&doomed), tasking::TaskState::Canceled);
    assert!(doomed.created_resources.is_empty());

    let versions = app.versions(&repo.id).await;
    assert_eq!(
        versions.iter().map(|v| v.number).collect::<Vec<_>>(),
        [0, 1]
    );
    assert!(versions.iter().all(|v| v.complete));
    assert_eq!(app.content_of(&versions[1].id).await, set(&[&u[0]]));
    let now = app.get_repo(&repo.id).await;
    assert_eq!((now.latest_version_number, now.next_version), (1, 2));

    let next = app.modify_done(&repo.id, &u[1..], &[], None).await;
    assert_eq!(result(&next)["version_number"], 2);
    let v2 = app.versions(&repo.id).await.pop().unwrap();
    assert_eq!(app.content_of(&v2.id).await, set(&[&u[0], &u[1], &u[2]]));
}

/// The seed's "the task itself finds them gone" for a base version: Modify
/// accepts a complete base version, then, while the run is held just
/// before its transaction, the base version is deleted. The run fails with
/// reason "not found" naming it, creates no version, and leaves
/// `next_version` as it was, so the next Modify gets that number.
async fn base_version_deleted_before_the_run_fails_not_found(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let gate = Gate::disarmed();
    let _worker = app
        .hooked_worker("w", 1, gate.hook(Phase::BeforeTransaction))
        .await;
    let repo = app.repo("based").await;
    let u = app.units("u", 3).await;
    app.modify_done(&repo.id, &u[..1], &[], None).await;
    app.modify_done(&repo.id, &u[1..2], &[], None).await;
    let versions = app.versions(&repo.id).await;
    let (v1, v2) = (versions[1].clone(), versions[2].clone());
    let before = app.get_repo(&repo.id).await;
    assert_eq!((before.latest_version_number, before.next_version), (2, 3));

    gate.arm();
    let task = app.modify(&repo.id, &u[2..], &[], Some(&v1.id)).await;
    gate.wait_arrived().await;
    let running = app
        .tasks()
        .get_task(tasking::GetTaskRequest {
            id: task.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&running), tasking::TaskState::Running);
    app.repos()
        .delete_repository_version(pb::DeleteRepositoryVersionRequest { id: v1.id.clone() })
        .await
        .expect("delete the base version");
    gate.release.add_permits(1);

    let done = app.wait_final(&task.id).await;
    assert_eq!(
        state(&done),
        tasking::TaskState::Failed,
        "{:?}",
        done.result
    );
    let error = done.error.expect("an error");
    assert_eq!(error.reason, "not found");
    assert!(
        error.description.contains("base version") && error.description.contains(&v1.id),
        "{}",
        error.description
    );
    assert!(done.created_resources.is_empty());

    let after = app.versions(&repo.id).await;
    assert_eq!(after.iter().map(|v| v.number).collect::<Vec<_>>(), [0, 2]);
    assert!(after.iter().all(|v| v.complete));
    assert_eq!(app.content_of(&after[1].id).await, set(&[&u[0], &u[1]]));
    assert_eq!(after[1].id, v2.id);
    let now = app.get_repo(&repo.id).await;
    assert_eq!(
        (now.latest_version_number, now.next_version),
        (2, before.next_version),
        "the failed run used no version number"
    );

    let next = app.modify_done(&repo.id, &u[2..], &[], None).await;
    assert_eq!(result(&next)["version_number"], before.next_version);
}
