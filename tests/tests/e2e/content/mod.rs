//! The content domain end to end: repositories, versions and
//! `add_and_remove` run by real workers on a real database, uploads into a
//! real storage directory, and `pulpctl`'s content commands.
//!
//! [`ContentApp`] wraps the harness's [`TestApp`] with a temporary storage
//! directory shared by the scheduler and the content workers it starts
//! (which get the test's database URL), plus helpers that go through the
//! public `pulp.content.v1` API only.

mod bad_input;
mod bench;
mod cli;
mod concurrency;
mod contents;
mod dispatch;
mod exports;
mod uploads;
mod versions;

use pulp_common::content::artifacts::Sha256Digest;
use pulp_common::proto::content::v1 as pb;
use pulp_common::proto::content::v1::upload_artifact_request::Part;
use pulp_common::proto::content::v1::{
    artifacts_client::ArtifactsClient, contents_client::ContentsClient,
    repositories_client::RepositoriesClient,
};
use pulp_common::proto::tasking::v1 as tasking;
use pulp_tests::{Backend, TaskRegistry, TestApp, TestWorker, state};
use pulp_worker::tasks::add_and_remove::{self, Hook};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::ops::Deref;
use std::path::Path;
use tonic::transport::Channel;

/// A scheduler with a storage directory, and content workers on demand.
pub struct ContentApp {
    app: TestApp,
    storage: tempfile::TempDir,
}

impl Deref for ContentApp {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl ContentApp {
    /// Writes an incomplete version (number 99) of `repository_id` straight
    /// into the database, since the API cannot make one; returns its id.
    pub async fn incomplete_version(&self, repository_id: &str) -> String {
        use sea_orm::ConnectionTrait;
        let id = uuid::Uuid::now_v7().to_string();
        let db = self.database().await;
        db.execute_raw(pulp_common::db::stmt(
            db.get_database_backend(),
            "INSERT INTO repository_versions (id, repository_id, number, base_version_id, complete, created_by_task, created_at) \
             VALUES ($1, $2, 99, NULL, $3, NULL, 0)",
            [id.clone().into(), repository_id.to_owned().into(), false.into()],
        ))
        .await
        .expect("an incomplete version written");
        id
    }

    /// A scheduler on a fresh `backend` database; `None` when the backend
    /// is unavailable outside CI.
    pub async fn spawn(backend: Backend) -> Option<ContentApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// As [`spawn`](Self::spawn), adjusting the scheduler's settings.
    pub async fn spawn_with(
        backend: Backend,
        adjust: impl FnOnce(&mut pulp_scheduler::Config),
    ) -> Option<ContentApp> {
        let storage = tempfile::tempdir().expect("temporary directory");
        let dir = storage.path().to_owned();
        let app = TestApp::spawn_with(backend, |config| {
            config.storage_dir = dir;
            adjust(config);
        })
        .await?;
        Some(ContentApp { app, storage })
    }

    /// The storage directory.
    pub fn storage(&self) -> &Path {
        self.storage.path()
    }

    /// Starts a worker with the shipped tasks, content tasks included.
    pub async fn content_worker(&self, name: &str, slots: u32) -> TestWorker {
        self.content_worker_with(name, slots, TaskRegistry::with_content())
            .await
    }

    /// Starts a content worker whose `add_and_remove` awaits `hook` at
    /// every phase.
    pub async fn hooked_worker(&self, name: &str, slots: u32, hook: Hook) -> TestWorker {
        let mut registry = TaskRegistry::with_content();
        registry.register(pulp_common::catalog::ADD_AND_REMOVE, move |ctx| {
            add_and_remove::run(ctx, hook.clone())
        });
        self.content_worker_with(name, slots, registry).await
    }

    async fn content_worker_with(
        &self,
        name: &str,
        slots: u32,
        registry: TaskRegistry,
    ) -> TestWorker {
        let url = self.db.url().to_owned();
        let storage = self.storage().to_owned();
        self.start_worker_with(name, slots, registry, |config| {
            config.database_url = Some(url);
            config.storage_dir = storage;
        })
        .await
    }

    /// A Repositories client.
    pub fn repos(&self) -> RepositoriesClient<Channel> {
        RepositoriesClient::new(self.channel.clone())
    }

    /// A Contents client.
    pub fn contents(&self) -> ContentsClient<Channel> {
        ContentsClient::new(self.channel.clone())
    }

    /// An Artifacts client.
    pub fn artifacts(&self) -> ArtifactsClient<Channel> {
        ArtifactsClient::new(self.channel.clone())
    }

    /// Creates a repository.
    pub async fn repo(&self, name: &str) -> pb::Repository {
        self.repos()
            .create_repository(pb::CreateRepositoryRequest {
                name: name.into(),
                description: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("create repository {name}: {s}"))
            .into_inner()
    }

    /// The repository as it is now.
    pub async fn get_repo(&self, id: &str) -> pb::Repository {
        self.repos()
            .get_repository(pb::GetRepositoryRequest { id: id.into() })
            .await
            .expect("get repository")
            .into_inner()
    }

    /// Uploads `data` as one artifact (header, then 1 MiB chunks).
    pub async fn upload(&self, data: &[u8]) -> pb::Artifact {
        let sha256 = Sha256Digest::from_hash(&Sha256::digest(data)).to_string();
        let mut messages = vec![pb::UploadArtifactRequest {
            part: Some(Part::Header(pb::UploadHeader {
                sha256,
                size: data.len() as i64,
            })),
        }];
        messages.extend(data.chunks(1 << 20).map(|c| pb::UploadArtifactRequest {
            part: Some(Part::Chunk(c.to_vec())),
        }));
        self.artifacts()
            .upload_artifact(futures::stream::iter(messages))
            .await
            .expect("upload")
            .into_inner()
    }

    /// Creates `count` on-demand `file.file` units named `<prefix>-<i>`.
    pub async fn units(&self, prefix: &str, count: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        for i in 0..count {
            ids.push(self.unit(&format!("{prefix}-{i}")).await);
        }
        ids
    }

    /// Creates one on-demand `file.file` unit with natural key `key`.
    pub async fn unit(&self, key: &str) -> String {
        self.contents()
            .create_content(pb::CreateContentRequest {
                pulp_type: "file.file".into(),
                natural_key: key.into(),
                artifacts: vec![pb::ContentArtifact {
                    relative_path: format!("{key}.txt"),
                    artifact_id: None,
                    sha256: String::new(),
                }],
            })
            .await
            .unwrap_or_else(|s| panic!("create content {key}: {s}"))
            .into_inner()
            .id
    }

    /// Sends a Modify and returns the dispatched task.
    pub async fn modify(
        &self,
        repo: &str,
        add: &[String],
        remove: &[String],
        base: Option<&str>,
    ) -> tasking::Task {
        self.repos()
            .modify(modify_request(repo, add, remove, base))
            .await
            .unwrap_or_else(|s| panic!("modify {repo}: {s}"))
            .into_inner()
    }

    /// Sends a Modify and waits until its task COMPLETED; returns the task.
    pub async fn modify_done(
        &self,
        repo: &str,
        add: &[String],
        remove: &[String],
        base: Option<&str>,
    ) -> tasking::Task {
        let task = self.modify(repo, add, remove, base).await;
        let done = self.wait_final(&task.id).await;
        assert_eq!(
            state(&done),
            tasking::TaskState::Completed,
            "add_and_remove ended {:?}: {:?}",
            state(&done),
            done.error
        );
        done
    }

    /// Every version of a repository, by number.
    pub async fn versions(&self, repo: &str) -> Vec<pb::RepositoryVersion> {
        let mut out = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .repos()
                .list_repository_versions(pb::ListRepositoryVersionsRequest {
                    repository_id: repo.into(),
                    page_size: 2,
                    page_token,
                })
                .await
                .expect("list versions")
                .into_inner();
            out.extend(page.versions);
            if page.next_page_token.is_empty() {
                return out;
            }
            page_token = page.next_page_token;
        }
    }

    /// The ids of the units in a version (read page by page).
    pub async fn content_of(&self, version_id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .repos()
                .list_version_content(pb::ListVersionContentRequest {
                    version_id: version_id.into(),
                    pulp_type: String::new(),
                    page_size: 2,
                    page_token,
                })
                .await
                .expect("list version content")
                .into_inner();
            out.extend(page.contents.into_iter().map(|c| c.id));
            if page.next_page_token.is_empty() {
                return out;
            }
            page_token = page.next_page_token;
        }
    }
}

/// A ModifyRequest.
pub fn modify_request(
    repo: &str,
    add: &[String],
    remove: &[String],
    base: Option<&str>,
) -> pb::ModifyRequest {
    pb::ModifyRequest {
        repository_id: repo.into(),
        add_content_units: add.to_vec(),
        remove_content_units: remove.to_vec(),
        base_version_id: base.unwrap_or_default().into(),
    }
}

/// `(added, removed, present)` of `file.file` in a version; 0 when absent.
pub fn summary(version: &pb::RepositoryVersion) -> (i64, i64, i64) {
    let s = version.content_summary.clone().unwrap_or_default();
    let of = |list: &[pb::ContentCount]| {
        list.iter()
            .find(|c| c.pulp_type == "file.file")
            .map_or(0, |c| c.count)
    };
    (of(&s.added), of(&s.removed), of(&s.present))
}

/// The task's result as JSON.
pub fn result(task: &tasking::Task) -> serde_json::Value {
    task.result
        .as_ref()
        .map(pulp_common::json::value_to_json)
        .unwrap_or_default()
}

/// A set of ids.
pub fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}
