//! Reservation semantics with real workers: the ordering scenario of the
//! issue, and a randomized run checked from times measured inside the task
//! bodies.

use pulp_common::proto::tasking::v1 as pb;
use pulp_tests::{Backend, TestApp, body_interval, both_databases, state};
use rand::SeedableRng;
use serde_json::json;

both_databases!(ordering_scenario, randomized_reservations_hold);

fn overlap(a: (i64, i64), b: (i64, i64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// T1 x[A] s[B]; T2 s[A]; T3 s[A]; T4 x[A]; T5 x[B], each sleeping ~1 s.
async fn ordering_scenario(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let _w1 = app.start_worker("w1", 3).await;
    let _w2 = app.start_worker("w2", 3).await;
    let sleep = json!({"seconds": 1});
    let t1 = app.dispatch("sleep", sleep.clone(), &["A"], &["B"]).await;
    let t2 = app.dispatch("sleep", sleep.clone(), &[], &["A"]).await;
    let t3 = app.dispatch("sleep", sleep.clone(), &[], &["A"]).await;
    let t4 = app.dispatch("sleep", sleep.clone(), &["A"], &[]).await;
    let t5 = app.dispatch("sleep", sleep.clone(), &["B"], &[]).await;
    let mut done = Vec::new();
    for t in [&t1, &t2, &t3, &t4, &t5] {
        let task = app.wait_final(&t.id).await;
        assert_eq!(state(&task), pb::TaskState::Completed, "{task:?}");
        done.push(body_interval(&task));
    }
    let [i1, i2, i3, i4, i5] = done[..] else {
        unreachable!()
    };
    assert!(
        i1.1 <= i2.0 && i1.1 <= i3.0,
        "T1 must end before T2 and T3 start"
    );
    assert!(
        overlap(i2, i3),
        "T2 and T3 (shared A) must run together: {i2:?} {i3:?}"
    );
    assert!(
        i2.1 <= i4.0 && i3.1 <= i4.0,
        "T2 and T3 must end before T4 starts"
    );
    assert!(
        i1.1 <= i5.0,
        "T1 (shared B) must end before T5 (exclusive B) starts"
    );
}

/// A few hundred short tasks over a handful of resources, mixed claims,
/// from several concurrent clients to several workers: no conflicting pair
/// ever overlaps, conflicting pairs run in dispatch order, all complete.
async fn randomized_reservations_hold(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let mut workers = Vec::new();
    for i in 0..3 {
        workers.push(app.start_worker(&format!("w{i}"), 4).await);
    }
    let clients = 4;
    let per_client = 60;
    let mut handles = Vec::new();
    for c in 0..clients {
        let mut tasks = app.tasks();
        handles.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed + c);
            let mut ids = Vec::new();
            for _ in 0..per_client {
                let request = pulp_tests::random_sleep_request(&mut rng, 1, 20);
                ids.push(
                    tasks
                        .dispatch(request)
                        .await
                        .expect("dispatch")
                        .into_inner()
                        .id,
                );
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.extend(h.await.unwrap());
    }
    for id in &ids {
        app.wait_final(id).await;
    }
    // Every task, in dispatch order.
    let all = pulp_tests::all_tasks(&mut app.tasks()).await;
    assert_eq!(all.len(), ids.len());
    let intervals: Vec<(i64, i64)> = all
        .iter()
        .map(|t| {
            assert_eq!(state(t), pb::TaskState::Completed, "{t:?}");
            body_interval(t)
        })
        .collect();
    let checked = pulp_tests::assert_conflicts_serialized(&all);
    assert!(
        checked > 1000,
        "too few conflicting pairs ({checked}) to prove anything"
    );
    // Tasks on the same resource did share it (readers together) at least once.
    let shared_overlaps = (0..all.len())
        .flat_map(|i| (i + 1..all.len()).map(move |j| (i, j)))
        .filter(|&(i, j)| {
            !pulp_tests::conflicts(&all[i], &all[j]) && overlap(intervals[i], intervals[j])
        })
        .count();
    assert!(
        shared_overlaps > 0,
        "no two compatible tasks ever ran together"
    );
}
