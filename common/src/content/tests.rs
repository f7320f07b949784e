//! Tests of the content SQL on a SQLite file: a model-based property test
//! of `add_and_remove` and the squash (every remaining version's content
//! and counts after every step of random histories), the fence, and the
//! rollback of a cancelled `add_and_remove`. The end-to-end tests run the
//! same code on PostgreSQL.

use super::contents::{self, NewContent, PulpType};
use super::fence::Fence;
use super::modification::{Modification, Removal};
use super::repositories;
use super::versions::{self, Modified, Step, Version};
use super::{ContentError, begin_write};
use crate::db::stmt;
use crate::names::{ContentId, RepositoryId, RepositoryVersionId, TaskId};
use proptest::prelude::*;
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait, Value};
use std::collections::{BTreeMap, BTreeSet};

struct Db {
    _dir: tempfile::TempDir,
    conn: DatabaseConnection,
}

async fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("t.sqlite").display()
    );
    let conn = crate::db::connect(&url, &Default::default()).await.unwrap();
    crate::db::migrate(&conn).await.unwrap();
    Db { _dir: dir, conn }
}

const TYPES: [&str; 2] = ["file.file", "rpm.package"];

/// `n` units, alternating between two types.
async fn units(db: &DatabaseConnection, n: usize) -> Vec<ContentId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let new = NewContent::new(
            PulpType::parse(TYPES[i % 2]).unwrap(),
            format!("unit-{i}"),
            vec![],
        )
        .unwrap();
        let unit = contents::create(db, &new).await.unwrap();
        ids.push(ContentId::parse(&unit.id).unwrap());
    }
    ids
}

async fn repository(db: &DatabaseConnection, name: &str) -> RepositoryId {
    let txn = db.begin().await.unwrap();
    let repo = repositories::create(&txn, name, "").await.unwrap();
    txn.commit().await.unwrap();
    repo.id
}

async fn modify(db: &DatabaseConnection, m: &Modification) -> Result<Modified, ContentError> {
    let txn = begin_write(db).await?;
    let out = versions::add_and_remove(&txn, m, |_| async { Ok(()) }).await?;
    txn.commit().await?;
    Ok(out)
}

async fn delete(db: &DatabaseConnection, id: RepositoryVersionId) -> Result<(), ContentError> {
    let txn = begin_write(db).await?;
    versions::delete(&txn, id).await?;
    txn.commit().await?;
    Ok(())
}

async fn content_of(db: &DatabaseConnection, version: &Version) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut after = None;
    loop {
        let page = versions::content(db, version, None, after, 3)
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        after = Some(ContentId::parse(&last.id).unwrap());
        out.extend(page.into_iter().map(|c| c.id));
    }
}

async fn all_versions(db: &DatabaseConnection, repo: RepositoryId) -> Vec<Version> {
    versions::list(db, repo, None, 1000).await.unwrap()
}

/// A repository as the model sees it: the content of each remaining
/// version, as indexes into the units.
#[derive(Debug, Clone)]
struct ModelRepo {
    id: RepositoryId,
    versions: BTreeMap<i64, BTreeSet<usize>>,
    next: i64,
}

#[derive(Debug, Clone)]
enum Op {
    Modify {
        repo: usize,
        add: Vec<usize>,
        remove: Option<Vec<usize>>,
        base: Option<(usize, usize)>,
    },
    Delete {
        repo: usize,
        pick: usize,
    },
}

const UNITS: usize = 5;

fn op() -> impl Strategy<Value = Op> {
    let set = || prop::collection::vec(0..UNITS, 0..4);
    prop_oneof![
        2 => (0..2usize, set(), prop::option::weighted(0.85, set()), prop::option::weighted(0.3, (0..2usize, 0..8usize)))
            .prop_map(|(repo, add, remove, base)| Op::Modify { repo, add, remove, base }),
        1 => (0..2usize, 0..8usize).prop_map(|(repo, pick)| Op::Delete { repo, pick }),
    ]
}

fn ids(units: &[ContentId], set: &BTreeSet<usize>) -> BTreeSet<String> {
    set.iter().map(|&i| units[i].to_string()).collect()
}

fn counts(units: &BTreeSet<usize>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for &i in units {
        *out.entry(TYPES[i % 2].to_owned()).or_insert(0) += 1;
    }
    out
}

/// Every remaining version of every repository matches the model: numbers,
/// content, and added/removed/present counts (against the previous
/// remaining version).
async fn check(db: &DatabaseConnection, units: &[ContentId], model: &[ModelRepo]) {
    for repo in model {
        let stored = all_versions(db, repo.id).await;
        let numbers: Vec<i64> = stored.iter().map(|v| v.number).collect();
        assert_eq!(numbers, repo.versions.keys().copied().collect::<Vec<_>>());
        let mut previous = BTreeSet::new();
        for version in &stored {
            let expected = &repo.versions[&version.number];
            assert_eq!(
                content_of(db, version).await,
                ids(units, expected),
                "content of version {}",
                version.number
            );
            assert_eq!(
                version.summary.present,
                counts(expected),
                "present of {}",
                version.number
            );
            let added = expected.difference(&previous).copied().collect();
            let removed = previous.difference(expected).copied().collect();
            assert_eq!(
                version.summary.added,
                counts(&added),
                "added of {}",
                version.number
            );
            assert_eq!(
                version.summary.removed,
                counts(&removed),
                "removed of {}",
                version.number
            );
            assert!(version.complete);
            previous = expected.clone();
        }
        let stored_repo = repositories::get_repository(db, repo.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored_repo.next_version, repo.next);
        assert_eq!(
            stored_repo.latest_version_number,
            *repo.versions.keys().last().unwrap()
        );
    }
}

async fn run_history(ops: Vec<Op>) {
    let db = db().await;
    let db = &db.conn;
    let units = units(db, UNITS).await;
    let mut model = Vec::new();
    for name in ["a", "b"] {
        model.push(ModelRepo {
            id: repository(db, name).await,
            versions: BTreeMap::from([(0, BTreeSet::new())]),
            next: 1,
        });
    }
    for op in ops {
        match op {
            Op::Modify {
                repo,
                add,
                remove,
                base,
            } => {
                let latest = model[repo].versions.values().last().unwrap().clone();
                let base = base.map(|(r, pick)| {
                    let numbers: Vec<i64> = model[r].versions.keys().copied().collect();
                    (r, numbers[pick % numbers.len()])
                });
                let start = match base {
                    Some((r, n)) => model[r].versions[&n].clone(),
                    None => latest.clone(),
                };
                let removing: BTreeSet<usize> = match &remove {
                    Some(list) => list.iter().copied().collect(),
                    None => latest.clone(),
                };
                let mut expected: BTreeSet<usize> = start.difference(&removing).copied().collect();
                expected.extend(add.iter().copied());
                let base_version = match base {
                    Some((r, n)) => Some(
                        versions::get_by_number(db, model[r].id, n)
                            .await
                            .unwrap()
                            .unwrap()
                            .id,
                    ),
                    None => None,
                };
                let m = Modification {
                    repository: model[repo].id,
                    add: add.iter().map(|&i| units[i]).collect(),
                    remove: match remove {
                        Some(list) => Removal::Units(list.iter().map(|&i| units[i]).collect()),
                        None => Removal::All,
                    },
                    base_version,
                    task_id: None,
                };
                match modify(db, &m).await.unwrap() {
                    Modified::Created { version, .. } => {
                        assert_ne!(expected, latest, "a version without change was created");
                        assert_eq!(version.number, model[repo].next);
                        model[repo].versions.insert(version.number, expected);
                        model[repo].next += 1;
                    }
                    Modified::Unchanged { latest: stored } => {
                        assert_eq!(expected, latest, "a change was not made");
                        assert_eq!(stored.number, *model[repo].versions.keys().last().unwrap());
                    }
                }
            }
            Op::Delete { repo, pick } => {
                let numbers: Vec<i64> = model[repo].versions.keys().copied().collect();
                let number = numbers[pick % numbers.len()];
                let id = versions::get_by_number(db, model[repo].id, number)
                    .await
                    .unwrap()
                    .unwrap()
                    .id;
                let result = delete(db, id).await;
                if numbers.len() == 1 {
                    assert!(
                        matches!(result, Err(ContentError::FailedPrecondition(_))),
                        "{result:?}"
                    );
                } else {
                    result.unwrap();
                    model[repo].versions.remove(&number);
                }
            }
        }
        check(db, &units, &model).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn versions_match_the_model(ops in prop::collection::vec(op(), 1..24)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run_history(ops));
    }
}

#[tokio::test]
async fn squash_keeps_the_other_versions() {
    // The issue's scenario: ABCDE, AFGHI, ACDFH, ACEFI; delete v2.
    let db = db().await;
    let db = &db.conn;
    let u = units(db, 9).await; // A..I
    let repo = repository(db, "r").await;
    let set = |s: &str| -> Vec<ContentId> { s.bytes().map(|b| u[(b - b'A') as usize]).collect() };
    for content in ["ABCDE", "AFGHI", "ACDFH", "ACEFI"] {
        let m = Modification {
            repository: repo,
            add: set(content),
            remove: Removal::All,
            base_version: None,
            task_id: None,
        };
        assert!(matches!(
            modify(db, &m).await.unwrap(),
            Modified::Created { .. }
        ));
    }
    let before = all_versions(db, repo).await;
    delete(db, before[2].id).await.unwrap();
    let after = all_versions(db, repo).await;
    assert_eq!(
        after.iter().map(|v| v.number).collect::<Vec<_>>(),
        [0, 1, 3, 4]
    );
    for (version, content) in after.iter().zip(["", "ABCDE", "ACDFH", "ACEFI"]) {
        let expected: BTreeSet<String> = set(content).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            content_of(db, version).await,
            expected,
            "v{}",
            version.number
        );
    }
    // v3 now counts against v1: ABCDE -> ACDFH adds F, H and removes B, E.
    let v3 = &after[2];
    let added: i64 = v3.summary.added.values().sum();
    let removed: i64 = v3.summary.removed.values().sum();
    assert_eq!((added, removed), (2, 2), "{v3:?}");
    assert_eq!(v3.summary.present, before[3].summary.present);
}

#[tokio::test]
async fn cancelled_modify_rolls_back_and_keeps_the_number() {
    let db = db().await;
    let db = &db.conn;
    let u = units(db, 4).await;
    let repo = repository(db, "r").await;
    let m = Modification {
        repository: repo,
        add: u.clone(),
        remove: Removal::Units(vec![]),
        base_version: None,
        task_id: None,
    };
    let txn = begin_write(db).await.unwrap();
    let err = versions::add_and_remove(&txn, &m, |step| async move {
        // Stop after the membership was written.
        if step == Step::Added {
            Err(ContentError::Canceled)
        } else {
            Ok(())
        }
    })
    .await
    .unwrap_err();
    assert!(matches!(err, ContentError::Canceled), "{err}");
    txn.rollback().await.unwrap();
    assert_eq!(all_versions(db, repo).await.len(), 1);
    let Modified::Created { version, added, .. } = modify(db, &m).await.unwrap() else {
        panic!("no version");
    };
    assert_eq!((version.number, added), (1, 4));
}

#[tokio::test]
async fn fence_commits_only_for_the_running_attempt() {
    let db = db().await;
    let db = &db.conn;
    let task = TaskId::new();
    db.execute_raw(stmt(
        db.get_database_backend(),
        "INSERT INTO tasks (id, func, args, kwargs, exclusive_resources, shared_resources, state, worker, attempt, created_at, created_resources) \
         VALUES ($1, 'add_and_remove', '[]', '{}', '[]', '[]', 'running', 'w1', 2, 0, '[]')",
        [Value::from(task.to_string())],
    ))
    .await
    .unwrap();
    let ours = Fence {
        task_id: task,
        worker: "w1".into(),
        attempt: 2,
    };
    for stale in [
        Fence {
            attempt: 1,
            ..ours.clone()
        },
        Fence {
            worker: "w2".into(),
            ..ours.clone()
        },
        Fence {
            task_id: TaskId::new(),
            ..ours.clone()
        },
    ] {
        let txn = begin_write(db).await.unwrap();
        repositories::create(&txn, "fenced", "").await.unwrap();
        let err = stale.commit(txn).await.unwrap_err();
        assert!(matches!(err, ContentError::Fenced { .. }), "{err}");
    }
    assert!(repositories::list(db, None, 10).await.unwrap().is_empty());

    let txn = begin_write(db).await.unwrap();
    repositories::create(&txn, "kept", "").await.unwrap();
    ours.commit(txn).await.unwrap();
    assert_eq!(repositories::list(db, None, 10).await.unwrap().len(), 1);

    // Once the task is no longer RUNNING, even its own attempt is fenced.
    db.execute_unprepared("UPDATE tasks SET state = 'canceling'")
        .await
        .unwrap();
    let txn = begin_write(db).await.unwrap();
    repositories::create(&txn, "late", "").await.unwrap();
    assert!(ours.commit(txn).await.is_err());
    assert_eq!(repositories::list(db, None, 10).await.unwrap().len(), 1);
}
