//! Bad input to the content API, table-driven: each request gets the right
//! status with a message, and nothing changes. And the task's own checks:
//! a repository that is gone by the time `add_and_remove` runs fails the
//! task with reason "not found".

use super::{ContentApp, modify_request};
use pulp_common::proto::content::v1 as pb;
use pulp_common::proto::tasking::v1 as tasking;
use pulp_tests::{Backend, both_databases, state};
use sea_orm::ConnectionTrait;
use std::future::Future;
use std::pin::Pin;
use tonic::Code;

both_databases!(
    bad_content_requests_change_nothing,
    modify_of_a_vanished_repository_fails_not_found,
);

type Call<'a> = Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send + 'a>>;

/// What the database holds, as counts per table.
pub(super) async fn snapshot(app: &ContentApp) -> Vec<i64> {
    let db = app.database().await;
    let mut counts = Vec::new();
    for table in [
        "repositories",
        "repository_versions",
        "repository_content",
        "contents",
        "content_artifacts",
        "artifacts",
        "tasks",
    ] {
        let row = db
            .query_one_raw(pulp_common::db::stmt(
                db.get_database_backend(),
                &format!("SELECT COUNT(*) AS n FROM {table}"),
                [],
            ))
            .await
            .unwrap()
            .unwrap();
        counts.push(row.try_get("", "n").unwrap());
    }
    counts
}

fn content(
    pulp_type: &str,
    key: &str,
    paths: &[&str],
    artifact: Option<&str>,
) -> pb::CreateContentRequest {
    pb::CreateContentRequest {
        pulp_type: pulp_type.into(),
        natural_key: key.into(),
        artifacts: paths
            .iter()
            .map(|p| pb::ContentArtifact {
                relative_path: (*p).into(),
                artifact_id: artifact.map(str::to_owned),
                sha256: String::new(),
            })
            .collect(),
    }
}

async fn bad_content_requests_change_nothing(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let repo = app.repo("taken").await;
    let other = app.repo("other").await;
    let u = app.units("u", 2).await;
    let v0 = app.versions(&repo.id).await[0].id.clone();
    let incomplete = app.incomplete_version(&other.id).await;
    let before = snapshot(&app).await;

    let unknown = uuid::Uuid::now_v7().to_string();
    let star = || "*".to_owned();
    let too_many: Vec<String> = (0..100_001).map(|_| u[0].clone()).collect();
    let repos = app.repos();
    let contents = app.contents();
    let artifacts = app.artifacts();
    let modify = |r: pb::ModifyRequest| -> Call<'_> {
        let mut repos = repos.clone();
        Box::pin(async move { repos.modify(r).await.map(drop) })
    };
    let create_content = |r: pb::CreateContentRequest| -> Call<'_> {
        let mut contents = contents.clone();
        Box::pin(async move { contents.create_content(r).await.map(drop) })
    };
    let create_repo = |name: &str| -> Call<'_> {
        let mut repos = repos.clone();
        let r = pb::CreateRepositoryRequest {
            name: name.into(),
            description: String::new(),
        };
        Box::pin(async move { repos.create_repository(r).await.map(drop) })
    };
    let cases: Vec<(&str, Call<'_>, Code, &str)> = vec![
        (
            "duplicate repository name",
            create_repo("taken"),
            Code::AlreadyExists,
            "exists already",
        ),
        (
            "empty repository name",
            create_repo(""),
            Code::InvalidArgument,
            "name",
        ),
        (
            "name with a newline",
            create_repo("a\nb"),
            Code::InvalidArgument,
            "control",
        ),
        (
            "duplicate content key",
            create_content(content("file.file", "u-0", &[], None)),
            Code::AlreadyExists,
            "exists already",
        ),
        (
            "absolute relative path",
            create_content(content("file.file", "k1", &["/etc/passwd"], None)),
            Code::InvalidArgument,
            "absolute",
        ),
        (
            "relative path with ..",
            create_content(content("file.file", "k2", &["a/../../b"], None)),
            Code::InvalidArgument,
            "'..'",
        ),
        (
            "relative path with NUL",
            create_content(content("file.file", "k3", &["a\0b"], None)),
            Code::InvalidArgument,
            "NUL",
        ),
        (
            "same relative path twice",
            create_content(content("file.file", "k4", &["a", "a"], None)),
            Code::InvalidArgument,
            "twice",
        ),
        (
            "bad content type",
            create_content(content("File", "k5", &[], None)),
            Code::InvalidArgument,
            "pulp_type",
        ),
        (
            "unknown artifact",
            create_content(content("file.file", "k6", &["a"], Some(&unknown))),
            Code::NotFound,
            "artifact",
        ),
        (
            "malformed artifact id",
            create_content(content("file.file", "k7", &["a"], Some("nope"))),
            Code::InvalidArgument,
            "artifact id",
        ),
        (
            "modify: unknown repository",
            modify(modify_request(&unknown, &u, &[], None)),
            Code::NotFound,
            "repository",
        ),
        (
            "modify: malformed repository id",
            modify(modify_request("repo-1", &u, &[], None)),
            Code::InvalidArgument,
            "repository id",
        ),
        (
            "modify: unknown content",
            modify(modify_request(
                &repo.id,
                std::slice::from_ref(&unknown),
                &[],
                None,
            )),
            Code::NotFound,
            "content unit",
        ),
        (
            "modify: unknown content to remove",
            modify(modify_request(
                &repo.id,
                &[],
                std::slice::from_ref(&unknown),
                None,
            )),
            Code::NotFound,
            "content unit",
        ),
        (
            "modify: malformed content id",
            modify(modify_request(&repo.id, &["x".into()], &[], None)),
            Code::InvalidArgument,
            "add_content_units[0]",
        ),
        (
            "modify: \"*\" with other units",
            modify(modify_request(&repo.id, &[], &[star(), u[0].clone()], None)),
            Code::InvalidArgument,
            "cannot be combined",
        ),
        (
            "modify: \"*\" to add",
            modify(modify_request(&repo.id, &[star()], &[], None)),
            Code::InvalidArgument,
            "add_content_units[0]",
        ),
        (
            "modify: unknown base version",
            modify(modify_request(&repo.id, &u, &[], Some(&unknown))),
            Code::NotFound,
            "base version",
        ),
        (
            "modify: incomplete base version",
            modify(modify_request(&repo.id, &u, &[], Some(&incomplete))),
            Code::InvalidArgument,
            "not complete",
        ),
        (
            "modify: too many units",
            modify(modify_request(&repo.id, &too_many, &[], None)),
            Code::InvalidArgument,
            "limit",
        ),
        (
            "get unknown repository",
            {
                let mut repos = repos.clone();
                let id = unknown.clone();
                Box::pin(async move {
                    repos
                        .get_repository(pb::GetRepositoryRequest { id })
                        .await
                        .map(drop)
                })
            },
            Code::NotFound,
            "not found",
        ),
        (
            "get unknown version",
            {
                let mut repos = repos.clone();
                let id = unknown.clone();
                Box::pin(async move {
                    repos
                        .get_repository_version(pb::GetRepositoryVersionRequest {
                            id,
                            repository_id: String::new(),
                            number: None,
                        })
                        .await
                        .map(drop)
                })
            },
            Code::NotFound,
            "not found",
        ),
        (
            "get a version number that does not exist",
            {
                let mut repos = repos.clone();
                let repository_id = repo.id.clone();
                Box::pin(async move {
                    repos
                        .get_repository_version(pb::GetRepositoryVersionRequest {
                            id: String::new(),
                            repository_id,
                            number: Some(7),
                        })
                        .await
                        .map(drop)
                })
            },
            Code::NotFound,
            "no version 7",
        ),
        (
            "list content of an unknown version",
            {
                let mut repos = repos.clone();
                let version_id = unknown.clone();
                Box::pin(async move {
                    repos
                        .list_version_content(pb::ListVersionContentRequest {
                            version_id,
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                })
            },
            Code::NotFound,
            "not found",
        ),
        (
            "get unknown content",
            {
                let mut contents = contents.clone();
                let id = unknown.clone();
                Box::pin(async move {
                    contents
                        .get_content(pb::GetContentRequest { id })
                        .await
                        .map(drop)
                })
            },
            Code::NotFound,
            "not found",
        ),
        (
            "get unknown artifact",
            {
                let mut artifacts = artifacts.clone();
                let id = unknown.clone();
                Box::pin(async move {
                    artifacts
                        .get_artifact(pb::GetArtifactRequest { id })
                        .await
                        .map(drop)
                })
            },
            Code::NotFound,
            "not found",
        ),
        (
            "delete the only version",
            {
                let mut repos = repos.clone();
                let id = v0.clone();
                Box::pin(async move {
                    repos
                        .delete_repository_version(pb::DeleteRepositoryVersionRequest { id })
                        .await
                        .map(drop)
                })
            },
            Code::FailedPrecondition,
            "only version",
        ),
        (
            "delete an unknown version",
            {
                let mut repos = repos.clone();
                let id = unknown.clone();
                Box::pin(async move {
                    repos
                        .delete_repository_version(pb::DeleteRepositoryVersionRequest { id })
                        .await
                        .map(drop)
                })
            },
            Code::NotFound,
            "not found",
        ),
        (
            "delete an unknown repository",
            {
                let mut repos = repos.clone();
                let id = unknown.clone();
                Box::pin(async move {
                    repos
                        .delete_repository(pb::DeleteRepositoryRequest { id })
                        .await
                        .map(drop)
                })
            },
            Code::NotFound,
            "not found",
        ),
        (
            "page size out of range",
            {
                let mut repos = repos.clone();
                Box::pin(async move {
                    repos
                        .list_repositories(pb::ListRepositoriesRequest {
                            page_size: 1001,
                            page_token: String::new(),
                        })
                        .await
                        .map(drop)
                })
            },
            Code::InvalidArgument,
            "page_size",
        ),
    ];
    pulp_tests::assert_refusals(cases).await;
    assert_eq!(
        snapshot(&app).await,
        before,
        "a refused request changed something"
    );
}

/// A Modify accepted while the repository existed, run after it was
/// deleted: the task fails with reason "not found" and creates nothing.
async fn modify_of_a_vanished_repository_fails_not_found(backend: Backend) {
    let Some(app) = ContentApp::spawn(backend).await else {
        return;
    };
    let repo = app.repo("doomed").await;
    let u = app.units("u", 1).await;
    // No content worker yet: the task waits.
    let task = app.modify(&repo.id, &u, &[], None).await;
    assert_eq!(state(&task), tasking::TaskState::Waiting);
    app.repos()
        .delete_repository(pb::DeleteRepositoryRequest {
            id: repo.id.clone(),
        })
        .await
        .expect("delete the repository");
    let _worker = app.content_worker("w", 1).await;
    let done = app.wait_final(&task.id).await;
    assert_eq!(state(&done), tasking::TaskState::Failed);
    let error = done.error.expect("an error");
    assert_eq!(error.reason, "not found");
    assert!(
        error.description.contains(&repo.id),
        "{}",
        error.description
    );
    assert!(done.created_resources.is_empty());
}
