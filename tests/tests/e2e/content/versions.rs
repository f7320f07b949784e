//! Version arithmetic of `add_and_remove` and the squash on delete, each
//! scenario through the public API with a real worker.

use super::{ContentApp, result, set, summary};
use pulp_common::proto::content::v1 as pb;
use pulp_tests::{Backend, both_databases};
use std::collections::BTreeSet;
use tonic::Code;

both_databases!(
    version_arithmetic,
    squash_keeps_the_other_versions,
    star_removes_everything,
    star_with_base_v0_gives_an_empty_version,
    base_version_from_another_repository,
    add_and_remove_of_one_unit_keeps_it,
    noop_modify_creates_no_version,
);

/// v0 -> v1 adds 3 units -> v2 removes 1 -> v3 adds 1: the content and the
/// counts of every version, the repository's numbers, the tasks' results
/// and created resources.
async fn version_arithmetic(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let _worker = app.content_worker("w", 2).await;
    let repo = app.repo("arith").await;
    let u = app.units("u", 4).await;

    let t1 = app.modify_done(&repo.id, &u[..3], &[], None).await;
    let t2 = app.modify_done(&repo.id, &[], &u[1..2], None).await;
    let t3 = app.modify_done(&repo.id, &u[3..4], &[], None).await;

    let versions = app.versions(&repo.id).await;
    assert_eq!(
        versions.iter().map(|v| v.number).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let expected = [
        (BTreeSet::new(), (0, 0, 0)),
        (set(&[&u[0], &u[1], &u[2]]), (3, 0, 3)),
        (set(&[&u[0], &u[2]]), (0, 1, 2)),
        (set(&[&u[0], &u[2], &u[3]]), (1, 0, 3)),
    ];
    for (version, (content, counts)) in versions.iter().zip(expected) {
        assert!(version.complete);
        assert_eq!(
            app.content_of(&version.id).await,
            content,
            "v{}",
            version.number
        );
        assert_eq!(summary(version), counts, "counts of v{}", version.number);
    }
    for (task, version) in [
        (&t1, &versions[1]),
        (&t2, &versions[2]),
        (&t3, &versions[3]),
    ] {
        assert_eq!(version.created_by_task_id, task.id);
        assert_eq!(
            task.created_resources,
            [format!(
                "/pulp/api/v3/repositories/{}/versions/{}/",
                repo.id, version.number
            )]
        );
        let result = result(task);
        assert_eq!(result["created"], true);
        assert_eq!(result["version_number"], version.number);
        assert_eq!(result["version_id"], version.id.as_str());
    }
    assert_eq!(task_kwargs(&t1)["repository_pk"], repo.id.as_str());
    let now = app.get_repo(&repo.id).await;
    assert_eq!((now.next_version, now.latest_version_number), (4, 3));
    assert_eq!(now.latest_version_id, versions[3].id);

    // The same version named by repository and number, and as the latest.
    for number in [Some(2), None] {
        let found = app
            .repos()
            .get_repository_version(pb::GetRepositoryVersionRequest {
                id: String::new(),
                repository_id: repo.id.clone(),
                number,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.number, number.unwrap_or(3));
    }
}

fn task_kwargs(task: &pulp_common::proto::tasking::v1::Task) -> serde_json::Value {
    serde_json::Value::Object(
        task.kwargs
            .as_ref()
            .map(pulp_common::json::struct_to_json)
            .unwrap_or_default(),
    )
}

/// Versions with the contents ABCDE, AFGHI, ACDFH and ACEFI; deleting v2
/// leaves every other version's content and counts as they were. Then the
/// latest version is deleted (its changes dropped, its number not reused),
/// version 0 is deleted, and the last remaining version cannot be.
async fn squash_keeps_the_other_versions(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let _worker = app.content_worker("w", 1).await;
    let repo = app.repo("squash").await;
    let u = app.units("letter", 9).await; // A..I
    let letters = |s: &str| -> Vec<String> {
        s.bytes()
            .map(|b| u[usize::from(b - b'A')].clone())
            .collect()
    };
    let star = vec!["*".to_owned()];
    for content in ["ABCDE", "AFGHI", "ACDFH", "ACEFI"] {
        app.modify_done(&repo.id, &letters(content), &star, None)
            .await;
    }
    let before = app.versions(&repo.id).await;
    assert_eq!(before.len(), 5);

    app.repos()
        .delete_repository_version(pb::DeleteRepositoryVersionRequest {
            id: before[2].id.clone(),
        })
        .await
        .expect("delete v2");
    let after = app.versions(&repo.id).await;
    assert_eq!(
        after.iter().map(|v| v.number).collect::<Vec<_>>(),
        [0, 1, 3, 4]
    );
    for (version, content) in after.iter().zip(["", "ABCDE", "ACDFH", "ACEFI"]) {
        let expected: BTreeSet<String> = letters(content).into_iter().collect();
        assert_eq!(
            app.content_of(&version.id).await,
            expected,
            "v{}",
            version.number
        );
        let was = before.iter().find(|b| b.id == version.id).unwrap();
        assert_eq!(
            version.content_summary, was.content_summary,
            "counts of v{}",
            version.number
        );
    }

    // Deleting the latest drops its changes; its number is not reused.
    app.repos()
        .delete_repository_version(pb::DeleteRepositoryVersionRequest {
            id: after[3].id.clone(),
        })
        .await
        .expect("delete v4");
    let now = app.get_repo(&repo.id).await;
    assert_eq!((now.latest_version_number, now.next_version), (3, 5));
    let t = app.modify_done(&repo.id, &letters("B"), &[], None).await;
    assert_eq!(result(&t)["version_number"], 5);
    let v5 = app.versions(&repo.id).await.pop().unwrap();
    assert_eq!(
        app.content_of(&v5.id).await,
        letters("ABCDFH").into_iter().collect()
    );
    assert_eq!(summary(&v5), (1, 0, 6));

    // Version 0 may go while later versions exist; the last one may not.
    for version in app.versions(&repo.id).await.iter().take(3) {
        app.repos()
            .delete_repository_version(pb::DeleteRepositoryVersionRequest {
                id: version.id.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("delete v{}: {s}", version.number));
    }
    let last = app.versions(&repo.id).await;
    assert_eq!(last.iter().map(|v| v.number).collect::<Vec<_>>(), [5]);
    assert_eq!(
        summary(&last[0]),
        (6, 0, 6),
        "v5 now counts against nothing"
    );
    let err = app
        .repos()
        .delete_repository_version(pb::DeleteRepositoryVersionRequest {
            id: last[0].id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert_eq!(app.content_of(&last[0].id).await.len(), 6);
}

/// `"*"` removes all content of the latest version.
async fn star_removes_everything(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let _worker = app.content_worker("w", 1).await;
    let repo = app.repo("star").await;
    let u = app.units("u", 3).await;
    app.modify_done(&repo.id, &u, &[], None).await;
    let t = app.modify_done(&repo.id, &[], &["*".into()], None).await;
    let versions = app.versions(&repo.id).await;
    let v2 = &versions[2];
    assert_eq!(result(&t)["version_number"], 2);
    assert!(app.content_of(&v2.id).await.is_empty());
    assert_eq!(summary(v2), (0, 3, 0));
    // `"*"` with additions: everything goes, then the additions come in.
    app.modify_done(&repo.id, &u[..2], &[], None).await;
    app.modify_done(&repo.id, &u[2..], &["*".into()], None)
        .await;
    let v4 = app.versions(&repo.id).await.pop().unwrap();
    assert_eq!(app.content_of(&v4.id).await, set(&[&u[2]]));
    assert_eq!(summary(&v4), (1, 2, 1));
}

/// `"*"` with base version 0: the starting content is empty, so the new
/// version is empty whatever the latest held.
async fn star_with_base_v0_gives_an_empty_version(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let _worker = app.content_worker("w", 1).await;
    let repo = app.repo("star-base").await;
    let u = app.units("u", 2).await;
    app.modify_done(&repo.id, &u, &[], None).await;
    let v0 = app.versions(&repo.id).await[0].id.clone();
    app.modify_done(&repo.id, &[], &["*".into()], Some(&v0))
        .await;
    let versions = app.versions(&repo.id).await;
    let v2 = &versions[2];
    assert_eq!(v2.base_version_id, v0);
    assert!(app.content_of(&v2.id).await.is_empty());
    assert_eq!(summary(v2), (0, 2, 0));
}

/// A base version of another repository is the starting content: the new
/// version is its content minus the removals plus the additions.
async fn base_version_from_another_repository(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let _worker = app.content_worker("w", 2).await;
    let source = app.repo("source").await;
    let target = app.repo("target").await;
    let u = app.units("u", 5).await;
    app.modify_done(&source.id, &u[..3], &[], None).await; // source v1: 0 1 2
    app.modify_done(&target.id, &u[3..], &[], None).await; // target v1: 3 4
    let base = app.versions(&source.id).await[1].id.clone();

    let t = app
        .modify_done(&target.id, &u[4..], &u[..1], Some(&base))
        .await;
    assert_eq!(
        t.shared_resources,
        [format!("/pulp/api/v3/repositories/{}/", source.id)],
        "the base's repository is reserved shared"
    );
    assert_eq!(
        t.exclusive_resources,
        [format!("/pulp/api/v3/repositories/{}/", target.id)]
    );
    let v2 = app.versions(&target.id).await.pop().unwrap();
    assert_eq!(v2.number, 2);
    assert_eq!(v2.base_version_id, base);
    assert_eq!(app.content_of(&v2.id).await, set(&[&u[1], &u[2], &u[4]]));
    // Against target v1 (3 4): +1 +2, -3.
    assert_eq!(summary(&v2), (2, 1, 3));
    // The source is untouched.
    let source_versions = app.versions(&source.id).await;
    assert_eq!(source_versions.len(), 2);
    assert_eq!(
        app.content_of(&source_versions[1].id).await,
        set(&[&u[0], &u[1], &u[2]])
    );
}

/// Removal happens first: a unit both removed and added in one call ends
/// up present (added if it was absent, kept if it was present).
async fn add_and_remove_of_one_unit_keeps_it(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let _worker = app.content_worker("w", 1).await;
    let repo = app.repo("both").await;
    let u = app.units("u", 2).await;
    app.modify_done(&repo.id, &u[..1], &u[..1], None).await;
    let v1 = app.versions(&repo.id).await.pop().unwrap();
    assert_eq!(app.content_of(&v1.id).await, set(&[&u[0]]));
    assert_eq!(summary(&v1), (1, 0, 1));

    // Present already: removing and adding it changes nothing else.
    app.modify_done(&repo.id, &u[..2], &u[..1], None).await;
    let v2 = app.versions(&repo.id).await.pop().unwrap();
    assert_eq!(app.content_of(&v2.id).await, set(&[&u[0], &u[1]]));
    assert_eq!(summary(&v2), (1, 0, 2));
}

/// Adding present content and removing absent content is a no-op: the task
/// completes, says so, and creates no version; the number is not used.
async fn noop_modify_creates_no_version(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let _worker = app.content_worker("w", 1).await;
    let repo = app.repo("noop").await;
    let u = app.units("u", 2).await;
    app.modify_done(&repo.id, &u[..1], &[], None).await;
    let t = app.modify_done(&repo.id, &u[..1], &u[1..], None).await;
    let result = result(&t);
    assert_eq!(result["created"], false, "{result}");
    assert_eq!(result["latest_version_number"], 1);
    assert!(
        result["message"]
            .as_str()
            .unwrap()
            .contains("no version was created"),
        "{result}"
    );
    assert!(t.created_resources.is_empty());
    let empty = app.modify_done(&repo.id, &[], &[], None).await;
    assert_eq!(super::result(&empty)["created"], false);
    assert_eq!(app.versions(&repo.id).await.len(), 2);
    let now = app.get_repo(&repo.id).await;
    assert_eq!((now.latest_version_number, now.next_version), (1, 2));
}
