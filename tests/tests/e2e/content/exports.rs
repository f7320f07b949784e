//! Publications and file-system exports end to end: real files uploaded
//! into a real storage directory, real workers with allowed export paths,
//! and the exported trees compared file for file (names, sizes, SHA-256,
//! inodes for hard links, link targets for symbolic links).
//!
//! Every refusal is checked to fail with its message and to leave the
//! whole temporary tree (the target included) exactly as it was. Runs are
//! held at known points by the export tasks' hook
//! (`pulp_worker::tasks::export::Hook`), so nothing sleeps.

use super::{ContentApp, result};
use futures::FutureExt;
use pulp_common::catalog::{FS_PUBLICATION_EXPORT, FS_REPO_VERSION_EXPORT};
use pulp_common::content::artifacts::Sha256Digest;
use pulp_common::proto::content::v1 as pb;
use pulp_common::proto::content::v1::exporters_client::ExportersClient;
use pulp_common::proto::content::v1::publications_client::PublicationsClient;
use pulp_common::proto::tasking::v1 as tasking;
use pulp_tests::{Backend, TaskRegistry, TestWorker, WAIT, both_databases, state};
use pulp_worker::tasks::export::{self, Hook, Phase, Source};
use sea_orm::ConnectionTrait;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, Semaphore};
use tonic::Code;
use tonic::transport::Channel;

both_databases!(
    version_export_with_each_method_matches_file_for_file,
    publication_export_with_each_method_matches_file_for_file,
    pass_through_publication_exports_everything_in_the_version,
    incremental_export_writes_only_what_was_added,
    refuses_a_path_outside_the_allowed_paths,
    refuses_a_symlink_trick_out_of_the_allowed_path,
    refuses_a_dotdot_trick_out_of_the_allowed_path,
    refuses_when_no_export_path_is_allowed,
    refuses_a_non_empty_target,
    refuses_a_dotdot_relative_path_planted_in_content,
    refuses_on_demand_content,
    refuses_both_or_neither_publication_and_version,
    exports_of_one_exporter_serialize_and_of_one_repository_share,
    cancelled_export_ends_canceled_without_export_record,
    pulpctl_publishes_and_exports,
);

/// A scheduler, a storage directory, and a temporary tree with an allowed
/// export directory `allowed/` and a directory `outside/` next to it.
struct Fixture {
    app: ContentApp,
    tree: tempfile::TempDir,
}

impl Fixture {
    async fn new(backend: Backend) -> Option<Fixture> {
        let app = ContentApp::spawn(backend).await?;
        let tree = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir(tree.path().join("allowed")).unwrap();
        std::fs::create_dir(tree.path().join("outside")).unwrap();
        Some(Fixture { app, tree })
    }

    fn allowed(&self) -> PathBuf {
        self.tree.path().join("allowed")
    }

    fn outside(&self) -> PathBuf {
        self.tree.path().join("outside")
    }

    /// A content worker allowed to export under `allowed/` only.
    async fn worker(&self, name: &str, slots: u32) -> TestWorker {
        self.worker_with(
            name,
            slots,
            TaskRegistry::with_content(),
            vec![self.allowed()],
        )
        .await
    }

    /// A content worker whose export tasks place `per_call` files per
    /// blocking call and await `hook`.
    async fn hooked_worker(
        &self,
        name: &str,
        slots: u32,
        hook: Hook,
        per_call: usize,
    ) -> TestWorker {
        let mut registry = TaskRegistry::with_content();
        let h = hook.clone();
        registry.register(FS_PUBLICATION_EXPORT, move |ctx| {
            export::run(ctx, Source::Publication, h.clone(), per_call)
        });
        registry.register(FS_REPO_VERSION_EXPORT, move |ctx| {
            export::run(ctx, Source::Version, hook.clone(), per_call)
        });
        self.worker_with(name, slots, registry, vec![self.allowed()])
            .await
    }

    async fn worker_with(
        &self,
        name: &str,
        slots: u32,
        registry: TaskRegistry,
        allowed: Vec<PathBuf>,
    ) -> TestWorker {
        let url = self.app.db.url().to_owned();
        let storage = self.app.storage().to_owned();
        self.app
            .start_worker_with(name, slots, registry, |config| {
                config.database_url = Some(url);
                config.storage_dir = storage;
                config.allowed_export_paths = allowed;
            })
            .await
    }

    fn exporters(&self) -> ExportersClient<Channel> {
        ExportersClient::new(self.app.channel.clone())
    }

    fn publications(&self) -> PublicationsClient<Channel> {
        PublicationsClient::new(self.app.channel.clone())
    }

    /// Uploads `data` as an artifact.
    async fn upload(&self, data: &[u8]) -> pb::Artifact {
        self.app.upload(data).await
    }

    /// A `file.file` unit with one downloaded file at `path`.
    async fn file_unit(&self, path: &str, data: &[u8]) -> String {
        let artifact = self.upload(data).await;
        self.app
            .contents()
            .create_content(pb::CreateContentRequest {
                pulp_type: "file.file".into(),
                natural_key: path.into(),
                artifacts: vec![pb::ContentArtifact {
                    relative_path: path.into(),
                    artifact_id: Some(artifact.id),
                    sha256: String::new(),
                }],
            })
            .await
            .unwrap_or_else(|s| panic!("create content {path}: {s}"))
            .into_inner()
            .id
    }

    /// A repository whose version 1 holds `files` (path -> bytes); returns
    /// the repository and that version's id.
    async fn repo_with(&self, name: &str, files: &BTreeMap<String, Vec<u8>>) -> (String, String) {
        let repo = self.app.repo(name).await;
        let mut units = Vec::new();
        for (path, data) in files {
            units.push(self.file_unit(path, data).await);
        }
        self.app.modify_done(&repo.id, &units, &[], None).await;
        let latest = self.app.get_repo(&repo.id).await;
        (repo.id, latest.latest_version_id)
    }

    async fn exporter(
        &self,
        name: &str,
        path: &Path,
        method: pb::ExportMethod,
    ) -> pb::FilesystemExporter {
        self.exporters()
            .create_filesystem_exporter(pb::CreateFilesystemExporterRequest {
                name: name.into(),
                path: path.to_str().unwrap().into(),
                method: method as i32,
            })
            .await
            .unwrap_or_else(|s| panic!("create exporter {name}: {s}"))
            .into_inner()
    }

    /// Publishes a version and waits for the publication.
    async fn publish(&self, version: &str, pass_through: bool) -> pb::Publication {
        let task = self
            .publications()
            .create_publication(pb::CreatePublicationRequest {
                repository_version_id: version.into(),
                pass_through,
            })
            .await
            .expect("create publication")
            .into_inner();
        let task = self.app.wait_final(&task.id).await;
        assert_eq!(
            state(&task),
            tasking::TaskState::Completed,
            "{:?}",
            task.error
        );
        let id = result(&task)["publication_id"].as_str().unwrap().to_owned();
        assert_eq!(
            task.created_resources,
            [format!("/pulp/api/v3/publications/{id}/")]
        );
        self.publications()
            .get_publication(pb::GetPublicationRequest { id })
            .await
            .expect("get publication")
            .into_inner()
    }

    async fn export(&self, exporter: &str, publication: &str, version: &str) -> tasking::Task {
        self.exporters()
            .export(pb::ExportRequest {
                exporter_id: exporter.into(),
                publication_id: publication.into(),
                repository_version_id: version.into(),
                start_repository_version_id: String::new(),
            })
            .await
            .unwrap_or_else(|s| panic!("export: {s}"))
            .into_inner()
    }

    async fn exports_of(&self, exporter: &str) -> Vec<pb::Export> {
        self.exporters()
            .list_exports(pb::ListExportsRequest {
                exporter_id: exporter.into(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .expect("list exports")
            .into_inner()
            .exports
    }

    fn storage_path(&self, sha256: &str) -> PathBuf {
        std::fs::canonicalize(self.app.storage())
            .unwrap()
            .join("artifacts")
            .join(&sha256[..2])
            .join(sha256)
    }

    /// Every path under the tree with what it is (file size and digest,
    /// link target, or directory).
    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        walk(self.tree.path(), self.tree.path(), &mut out);
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_owned();
        if meta.is_symlink() {
            out.insert(
                rel,
                format!("-> {}", std::fs::read_link(&path).unwrap().display()),
            );
        } else if meta.is_dir() {
            out.insert(rel, "dir".into());
            walk(root, &path, out);
        } else {
            let data = std::fs::read(&path).unwrap();
            out.insert(rel, format!("{} {}", data.len(), sha256_hex(&data)));
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256Digest::from_hash(&Sha256::digest(data)).to_string()
}

/// Deterministic pseudo-random bytes.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `count` files in nested directories, of varied sizes (one empty).
fn sample(count: usize, seed: u64) -> BTreeMap<String, Vec<u8>> {
    (0..count)
        .map(|i| {
            let path = match i % 3 {
                0 => format!("top-{seed}-{i}.bin"),
                1 => format!("dir{}/f-{seed}-{i}.txt", i % 2),
                _ => format!("a/b/c/deep-{seed}-{i}.dat"),
            };
            let len = if i == 0 {
                0
            } else {
                (i * 7919 + seed as usize) % 70_000
            };
            (path, bytes(len, seed * 1000 + i as u64))
        })
        .collect()
}

/// Asserts `target` holds exactly `files`, laid out with `method`.
fn assert_tree(
    fx: &Fixture,
    target: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    method: pb::ExportMethod,
) {
    let mut found = BTreeMap::new();
    walk(target, target, &mut found);
    let found_files: Vec<&PathBuf> = found
        .iter()
        .filter(|(_, what)| what.as_str() != "dir")
        .map(|(p, _)| p)
        .collect();
    let expected: Vec<PathBuf> = files.keys().map(PathBuf::from).collect();
    assert_eq!(
        found_files,
        expected.iter().collect::<Vec<_>>(),
        "file names"
    );
    for (path, data) in files {
        let exported = target.join(path);
        let digest = sha256_hex(data);
        let read = std::fs::read(&exported).unwrap();
        assert_eq!(read.len(), data.len(), "{path} size");
        assert_eq!(sha256_hex(&read), digest, "{path} sha256");
        let stored = fx.storage_path(&digest);
        let meta = std::fs::symlink_metadata(&exported).unwrap();
        match method {
            pb::ExportMethod::Hardlink => {
                assert!(meta.is_file(), "{path}");
                assert_eq!(
                    meta.ino(),
                    std::fs::metadata(&stored).unwrap().ino(),
                    "{path} shares the inode"
                );
            }
            pb::ExportMethod::Symlink => {
                assert!(meta.is_symlink(), "{path}");
                assert_eq!(
                    std::fs::read_link(&exported).unwrap(),
                    stored,
                    "{path} links the artifact"
                );
            }
            _ => {
                assert!(meta.is_file(), "{path}");
                assert_ne!(
                    meta.ino(),
                    std::fs::metadata(&stored).unwrap().ino(),
                    "{path} is a copy"
                );
            }
        }
    }
}

const METHODS: [pb::ExportMethod; 3] = [
    pb::ExportMethod::Write,
    pb::ExportMethod::Hardlink,
    pb::ExportMethod::Symlink,
];

/// Checks a finished export: COMPLETED, its Export record and created
/// resource, and progress ending at total files.
async fn assert_exported(
    fx: &Fixture,
    exporter: &pb::FilesystemExporter,
    task: &tasking::Task,
    files: usize,
) {
    let task = fx.app.wait_final(&task.id).await;
    assert_eq!(
        state(&task),
        tasking::TaskState::Completed,
        "{:?}",
        task.error
    );
    let exports = fx.exports_of(&exporter.id).await;
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].task_id, task.id);
    let params: serde_json::Value = serde_json::from_str(&exports[0].params).unwrap();
    assert_eq!(params["exporter_pk"], exporter.id);
    assert_eq!(params["files"], files);
    assert_eq!(
        task.created_resources,
        [format!(
            "/pulp/api/v3/exporters/{}/exports/{}/",
            exporter.id, exports[0].id
        )]
    );
    let progress = task
        .progress_reports
        .iter()
        .find(|p| p.code == export::PROGRESS_CODE)
        .expect("a progress report of files");
    assert_eq!(
        (progress.done, progress.total),
        (files as i64, files as i64)
    );
    assert_eq!(result(&task)["files"], files);
}

/// WRITE, HARDLINK and SYMLINK exports of a version (9 files in nested
/// directories, one empty) match the version file for file.
async fn version_export_with_each_method_matches_file_for_file(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 2).await;
    let files = sample(9, 1);
    let (_repo, version) = fx.repo_with("r", &files).await;
    for method in METHODS {
        let target = fx.allowed().join(format!("v-{}", method.as_str_name()));
        let exporter = fx.exporter(method.as_str_name(), &target, method).await;
        let task = fx.export(&exporter.id, "", &version).await;
        assert_eq!(task.func, FS_REPO_VERSION_EXPORT);
        assert_exported(&fx, &exporter, &task, files.len()).await;
        assert_tree(&fx, &target, &files, method);
    }
}

/// The same through a publication; a file added to the repository after
/// publishing is not in the publication's export.
async fn publication_export_with_each_method_matches_file_for_file(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 2).await;
    let files = sample(7, 2);
    let (repo, version) = fx.repo_with("r", &files).await;
    let publication = fx.publish(&version, false).await;
    assert!(publication.complete && !publication.pass_through);
    assert_eq!(publication.files, files.len() as i64);
    let later = fx.file_unit("later.txt", b"later").await;
    fx.app.modify_done(&repo, &[later], &[], None).await;
    for method in METHODS {
        let target = fx.allowed().join(format!("p-{}", method.as_str_name()));
        let exporter = fx.exporter(method.as_str_name(), &target, method).await;
        let task = fx.export(&exporter.id, &publication.id, "").await;
        assert_eq!(task.func, FS_PUBLICATION_EXPORT);
        assert_exported(&fx, &exporter, &task, files.len()).await;
        assert_tree(&fx, &target, &files, method);
    }
}

/// A pass-through publication stores no snapshot and exports every file
/// of its version.
async fn pass_through_publication_exports_everything_in_the_version(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 2).await;
    let files = sample(6, 3);
    let (_repo, version) = fx.repo_with("r", &files).await;
    let publication = fx.publish(&version, true).await;
    assert!(publication.pass_through);
    assert_eq!(publication.files, files.len() as i64);
    let target = fx.allowed().join("pt");
    let exporter = fx
        .exporter("pt", &target, pb::ExportMethod::Unspecified)
        .await;
    assert_eq!(
        exporter.method,
        pb::ExportMethod::Write as i32,
        "WRITE is the default"
    );
    let task = fx.export(&exporter.id, &publication.id, "").await;
    assert_exported(&fx, &exporter, &task, files.len()).await;
    assert_tree(&fx, &target, &files, pb::ExportMethod::Write);
}

/// With a start version only the units added since are exported.
async fn incremental_export_writes_only_what_was_added(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 2).await;
    let first = sample(3, 4);
    let (repo, v1) = fx.repo_with("r", &first).await;
    let added = sample(2, 5);
    let mut units = Vec::new();
    for (path, data) in &added {
        units.push(fx.file_unit(path, data).await);
    }
    fx.app.modify_done(&repo, &units, &[], None).await;
    let v2 = fx.app.get_repo(&repo).await.latest_version_id;
    let target = fx.allowed().join("inc");
    let exporter = fx.exporter("inc", &target, pb::ExportMethod::Write).await;
    let task = fx
        .exporters()
        .export(pb::ExportRequest {
            exporter_id: exporter.id.clone(),
            publication_id: String::new(),
            repository_version_id: v2,
            start_repository_version_id: v1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_exported(&fx, &exporter, &task, added.len()).await;
    assert_tree(&fx, &target, &added, pb::ExportMethod::Write);
}

/// Exports a small version to an exporter at `path` and expects the task
/// to fail with `says`, the whole tree unchanged and no Export record.
async fn expect_refused(fx: &Fixture, path: &Path, version: &str, says: &str) {
    let before = fx.snapshot();
    let exporter = fx
        .exporter(
            &format!("e-{}", uuid::Uuid::new_v4().simple()),
            path,
            pb::ExportMethod::Write,
        )
        .await;
    let task = fx.export(&exporter.id, "", version).await;
    let task = fx.app.wait_final(&task.id).await;
    assert_eq!(state(&task), tasking::TaskState::Failed);
    let error = task.error.clone().unwrap_or_default();
    assert!(
        error.description.contains(says),
        "expected {says:?} in {:?}",
        error.description
    );
    assert!(task.created_resources.is_empty());
    assert!(fx.exports_of(&exporter.id).await.is_empty());
    assert_eq!(fx.snapshot(), before, "nothing was written");
}

async fn small_repo(fx: &Fixture) -> String {
    fx.repo_with("r", &sample(3, 6)).await.1
}

/// A target outside every allowed path.
async fn refuses_a_path_outside_the_allowed_paths(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 1).await;
    let version = small_repo(&fx).await;
    expect_refused(
        &fx,
        &fx.outside().join("x"),
        &version,
        "is not under an allowed export path",
    )
    .await;
}

/// A target reached through a symbolic link inside the allowed path that
/// points outside it.
async fn refuses_a_symlink_trick_out_of_the_allowed_path(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 1).await;
    let version = small_repo(&fx).await;
    std::os::unix::fs::symlink(fx.outside(), fx.allowed().join("link")).unwrap();
    expect_refused(
        &fx,
        &fx.allowed().join("link/x"),
        &version,
        "is not under an allowed export path",
    )
    .await;
    // Also when the link is the target itself.
    expect_refused(
        &fx,
        &fx.allowed().join("link"),
        &version,
        "is not under an allowed export path",
    )
    .await;
}

/// A target that climbs out with `..`, also through a missing directory.
async fn refuses_a_dotdot_trick_out_of_the_allowed_path(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 1).await;
    let version = small_repo(&fx).await;
    expect_refused(
        &fx,
        &fx.allowed().join("../outside/x"),
        &version,
        "is not under an allowed export path",
    )
    .await;
    expect_refused(
        &fx,
        &fx.allowed().join("missing/../../outside/y"),
        &version,
        "is not under an allowed export path",
    )
    .await;
}

/// A worker without --allowed-export-path refuses every export.
async fn refuses_when_no_export_path_is_allowed(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx
        .worker_with("w", 1, TaskRegistry::with_content(), vec![])
        .await;
    let version = small_repo(&fx).await;
    expect_refused(&fx, &fx.allowed().join("x"), &version, "none is configured").await;
}

/// A target that already holds a file.
async fn refuses_a_non_empty_target(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 1).await;
    let version = small_repo(&fx).await;
    let target = fx.allowed().join("full");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep.txt"), b"mine").unwrap();
    expect_refused(&fx, &target, &version, "is not empty").await;
    assert_eq!(std::fs::read(target.join("keep.txt")).unwrap(), b"mine");
}

/// A relative path with `..` written into the database behind the API's
/// back (the API refuses it) is refused before anything is written.
async fn refuses_a_dotdot_relative_path_planted_in_content(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 1).await;
    let (repo, _) = fx.repo_with("r", &sample(3, 7)).await;
    let unit = fx.file_unit("planted.txt", b"escape").await;
    let db = fx.app.database().await;
    db.execute_raw(pulp_common::db::stmt(
        db.get_database_backend(),
        "UPDATE content_artifacts SET relative_path = '../../outside/escaped.txt' WHERE content_id = $1",
        [sea_orm::Value::from(unit.clone())],
    ))
    .await
    .unwrap();
    fx.app.modify_done(&repo, &[unit], &[], None).await;
    let version = fx.app.get_repo(&repo).await.latest_version_id;
    expect_refused(
        &fx,
        &fx.allowed().join("t"),
        &version,
        "would escape the export target",
    )
    .await;
    assert!(!fx.tree.path().join("outside/escaped.txt").exists());
}

/// Content whose artifact was never downloaded (on-demand).
async fn refuses_on_demand_content(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 1).await;
    let (repo, _) = fx.repo_with("r", &sample(2, 8)).await;
    let lazy = fx.app.unit("lazy").await;
    fx.app.modify_done(&repo, &[lazy], &[], None).await;
    let version = fx.app.get_repo(&repo).await.latest_version_id;
    expect_refused(
        &fx,
        &fx.allowed().join("t"),
        &version,
        "cannot export artifacts that have not been downloaded",
    )
    .await;
}

/// Export with both or neither source is INVALID_ARGUMENT and dispatches
/// nothing.
async fn refuses_both_or_neither_publication_and_version(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 1).await;
    let (_, version) = fx.repo_with("r", &sample(1, 9)).await;
    let publication = fx.publish(&version, false).await;
    let exporter = fx
        .exporter("e", &fx.allowed().join("t"), pb::ExportMethod::Write)
        .await;
    let before = fx.snapshot();
    for (p, v) in [(publication.id.as_str(), version.as_str()), ("", "")] {
        let err = fx
            .exporters()
            .export(pb::ExportRequest {
                exporter_id: exporter.id.clone(),
                publication_id: p.into(),
                repository_version_id: v.into(),
                start_repository_version_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "publication or repository_version must be supplied, not both"
        );
    }
    // Bad ids are clear errors too, never a panic.
    let err = fx
        .exporters()
        .export(pb::ExportRequest {
            exporter_id: "nope".into(),
            publication_id: String::new(),
            repository_version_id: version.clone(),
            start_repository_version_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = fx
        .exporters()
        .create_filesystem_exporter(pb::CreateFilesystemExporterRequest {
            name: "rel".into(),
            path: "relative/path".into(),
            method: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = fx
        .exporters()
        .create_filesystem_exporter(pb::CreateFilesystemExporterRequest {
            name: "e".into(),
            path: "/x".into(),
            method: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let funcs: Vec<String> = pulp_tests::all_tasks(&mut fx.app.tasks())
        .await
        .into_iter()
        .map(|t| t.func)
        .collect();
    assert!(!funcs.iter().any(|f| f.starts_with("fs_")), "{funcs:?}");
    assert_eq!(fx.snapshot(), before);
}

/// Counts runs reaching `Planned` and holds them until released.
struct Gate {
    arrived: AtomicUsize,
    notify: Notify,
    release: Semaphore,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            arrived: AtomicUsize::new(0),
            notify: Notify::new(),
            release: Semaphore::new(0),
        })
    }

    fn hook(self: &Arc<Gate>) -> Hook {
        let gate = self.clone();
        Arc::new(move |phase, _token| {
            let gate = gate.clone();
            async move {
                if matches!(phase, Phase::Planned { .. }) {
                    gate.arrived.fetch_add(1, Ordering::SeqCst);
                    gate.notify.notify_waiters();
                    gate.release.acquire().await.expect("gate").forget();
                }
            }
            .boxed()
        })
    }

    async fn wait_arrived(&self, n: usize) {
        tokio::time::timeout(WAIT, async {
            loop {
                let notified = self.notify.notified();
                if self.arrived.load(Ordering::SeqCst) >= n {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} export runs did not reach the gate together"));
    }
}

fn micros(t: &Option<prost_types::Timestamp>) -> i64 {
    pulp_common::time::from_timestamp(t.as_ref().expect("a timestamp"))
}

/// Two exports of one repository to two exporters are held inside their
/// bodies at the same time (shared repository); a Modify of that
/// repository waits for both; two exports to one exporter run one after
/// the other (the second then finds the target full).
async fn exports_of_one_exporter_serialize_and_of_one_repository_share(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let gate = Gate::new();
    let _w = fx
        .hooked_worker("w", 4, gate.hook(), export::FILES_PER_CALL)
        .await;
    let (repo, version) = fx.repo_with("r", &sample(3, 10)).await;
    let e1 = fx
        .exporter("e1", &fx.allowed().join("one"), pb::ExportMethod::Write)
        .await;
    let e2 = fx
        .exporter("e2", &fx.allowed().join("two"), pb::ExportMethod::Hardlink)
        .await;
    let a = fx.export(&e1.id, "", &version).await;
    let b = fx.export(&e2.id, "", &version).await;
    gate.wait_arrived(2).await;
    let extra = fx.file_unit("extra.txt", b"x").await;
    let modify = fx.app.modify(&repo, &[extra], &[], None).await;
    let held = fx
        .app
        .tasks()
        .get_task(tasking::GetTaskRequest {
            id: modify.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(&held),
        tasking::TaskState::Waiting,
        "the exports hold the repository"
    );
    gate.release.add_permits(2);
    let a = fx.app.wait_final(&a.id).await;
    let b = fx.app.wait_final(&b.id).await;
    let modify = fx.app.wait_final(&modify.id).await;
    for t in [&a, &b, &modify] {
        assert_eq!(
            state(t),
            tasking::TaskState::Completed,
            "{}: {:?}",
            t.func,
            t.error
        );
    }
    assert!(
        micros(&a.started_at) < micros(&b.finished_at)
            && micros(&b.started_at) < micros(&a.finished_at),
        "the two exports overlap"
    );
    assert!(micros(&modify.started_at) >= micros(&a.finished_at).max(micros(&b.finished_at)));

    // One exporter: the second export waits for the first.
    let e3 = fx
        .exporter("e3", &fx.allowed().join("three"), pb::ExportMethod::Symlink)
        .await;
    let c = fx.export(&e3.id, "", &version).await;
    gate.wait_arrived(3).await;
    let d = fx.export(&e3.id, "", &version).await;
    let waiting = fx
        .app
        .tasks()
        .get_task(tasking::GetTaskRequest { id: d.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        state(&waiting),
        tasking::TaskState::Waiting,
        "the exporter is held"
    );
    gate.release.add_permits(10);
    let c = fx.app.wait_final(&c.id).await;
    let d = fx.app.wait_final(&d.id).await;
    assert_eq!(state(&c), tasking::TaskState::Completed, "{:?}", c.error);
    assert!(micros(&d.started_at) >= micros(&c.finished_at));
    assert_eq!(state(&d), tasking::TaskState::Failed);
    assert!(d.error.unwrap().description.contains("is not empty"));
    assert_eq!(fx.exports_of(&e3.id).await.len(), 1);
}

/// A cancel while an export of 40 files is mid-way: CANCELED, no Export
/// record, no created resource, and the files it wrote are removed.
async fn cancelled_export_ends_canceled_without_export_record(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let arrived = Arc::new(Notify::new());
    let hook: Hook = {
        let arrived = arrived.clone();
        Arc::new(move |phase, token| {
            let arrived = arrived.clone();
            async move {
                if let Phase::Placed { done: 12, .. } = phase {
                    arrived.notify_one();
                    let _ = tokio::time::timeout(WAIT, token.cancelled()).await;
                }
            }
            .boxed()
        })
    };
    // 4 files per blocking call: the hook runs after files 4, 8, 12, ...
    let _w = fx.hooked_worker("w", 1, hook, 4).await;
    let (_, version) = fx.repo_with("r", &sample(40, 11)).await;
    let target = fx.allowed().join("big");
    let exporter = fx.exporter("big", &target, pb::ExportMethod::Write).await;
    let before = fx.snapshot();
    let task = fx.export(&exporter.id, "", &version).await;
    tokio::time::timeout(WAIT, arrived.notified())
        .await
        .expect("the export is mid-way");
    let written = std::fs::read_dir(&target).unwrap().count();
    assert!(written > 0, "files were being written");
    fx.app
        .tasks()
        .cancel_task(tasking::CancelTaskRequest {
            id: task.id.clone(),
        })
        .await
        .expect("cancel");
    let task = fx.app.wait_final(&task.id).await;
    assert_eq!(state(&task), tasking::TaskState::Canceled);
    assert!(task.created_resources.is_empty());
    assert!(fx.exports_of(&exporter.id).await.is_empty());
    let progress = task
        .progress_reports
        .iter()
        .find(|p| p.code == export::PROGRESS_CODE)
        .unwrap();
    assert!(
        progress.done < progress.total,
        "it stopped mid-way: {progress:?}"
    );
    assert_eq!(fx.snapshot(), before, "what it wrote is removed");
}

/// `pulpctl publication|exporter|export` against the real services: a
/// publication and a version exported with `--wait`, read back in JSON and
/// as text.
async fn pulpctl_publishes_and_exports(backend: Backend) {
    let Some(fx) = Fixture::new(backend).await else {
        return;
    };
    let _w = fx.worker("w", 1).await;
    let files = sample(4, 12);
    fx.repo_with("files", &files).await;
    let ctl = crate::cli::Pulpctl::new(&fx.app);
    let pub_dir = fx.allowed().join("cli-pub");
    let ver_dir = fx.allowed().join("cli-ver");

    let e = ctl
        .json(&[
            "exporter",
            "create",
            "pub",
            "--path",
            pub_dir.to_str().unwrap(),
            "--method",
            "hardlink",
        ])
        .await;
    assert_eq!(e["method"], "hardlink");
    let e2 = ctl
        .json(&[
            "exporter",
            "create",
            "ver",
            "--path",
            ver_dir.to_str().unwrap(),
        ])
        .await;
    assert_eq!(e2["method"], "write");

    let task = ctl
        .json(&["publication", "create", "files", "--wait"])
        .await;
    assert_eq!(task["state"], "completed", "{task}");
    let publication = task["result"]["publication_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let list = ctl.json(&["publication", "list"]).await;
    assert_eq!(list[0]["id"], publication.as_str());
    let shown = ctl.json(&["publication", "show", &publication]).await;
    assert_eq!(shown["files"], files.len());

    let task = ctl
        .json(&["export", "pub", "--publication", &publication, "--wait"])
        .await;
    assert_eq!(task["state"], "completed", "{task}");
    assert_eq!(task["result"]["files"], files.len());
    assert_tree(&fx, &pub_dir, &files, pb::ExportMethod::Hardlink);
    let task = ctl
        .json(&["export", "ver", "--version", "files:1", "--wait"])
        .await;
    assert_eq!(task["state"], "completed", "{task}");
    assert_tree(&fx, &ver_dir, &files, pb::ExportMethod::Write);

    let shown = ctl.json(&["exporter", "show", "pub"]).await;
    assert_eq!(shown["exports"].as_array().unwrap().len(), 1);
    let (result, text) = ctl.run(&["exporter", "list"]).await;
    assert_eq!(result, Ok(0));
    assert!(text.contains("pub") && text.contains("hardlink"), "{text}");
    let (result, _) = ctl.run(&["exporter", "delete", "ver"]).await;
    assert_eq!(result, Ok(0));
    let (result, _) = ctl.run(&["exporter", "show", "ver"]).await;
    assert!(result.unwrap_err().starts_with("NOT_FOUND"));
    // A second export into the now full directory fails, and --wait says so.
    let (result, _) = ctl
        .run(&["export", "pub", "--publication", &publication, "--wait"])
        .await;
    assert_eq!(result, Ok(1));
}

/// Benchmark (figures, not assertions): a version of 10,000 files of about
/// 1 GiB exported with each method, beside `cp -r` and `cp -rl` of the
/// written tree on the same disk. Run it with
///
/// ```sh
/// cargo test --release -p pulp-tests --test e2e content::exports::bench -- --ignored --nocapture
/// ```
///
/// The artifacts are written into storage and inserted into the database
/// directly (uploading is not what is measured); the version is made by
/// Modify and the exports go through the public API and a real worker.
/// Storage, the exports and the copies all live under the system temp
/// directory, on one disk; the page cache is warm (the files were just
/// written), as it is for `cp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_export_10k_files_1gib() {
    use std::time::Instant;
    const FILES: usize = 10_000;
    /// Artifact id, digest, size, content id, index.
    type BenchRow = (String, String, usize, String, usize);
    let Some(fx) = Fixture::new(Backend::Sqlite).await else {
        return;
    };
    let _w = fx.worker("w", 1).await;
    let db = fx.app.database().await;
    let started = Instant::now();
    let mut units = Vec::with_capacity(FILES);
    let mut total_bytes = 0u64;
    let mut rows = Vec::new();
    for i in 0..FILES {
        let len = 1024 + (i * 7919) % 210_000;
        let data = bytes(len, 100 + i as u64);
        let digest = sha256_hex(&data);
        let path = fx
            .app
            .storage()
            .join("artifacts")
            .join(&digest[..2])
            .join(&digest);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        total_bytes += len as u64;
        let content = uuid::Uuid::now_v7().to_string();
        rows.push((
            uuid::Uuid::now_v7().to_string(),
            digest,
            len,
            content.clone(),
            i,
        ));
        units.push(content);
    }
    for chunk in rows.chunks(500) {
        let backend = db.get_database_backend();
        let values = |f: &dyn Fn(&BenchRow) -> Vec<sea_orm::Value>| {
            chunk.iter().flat_map(f).collect::<Vec<_>>()
        };
        let sql = |table: &str, cols: &str, n: usize| {
            let rows: Vec<String> = (0..chunk.len())
                .map(|r| {
                    let ps: Vec<String> = (1..=n).map(|c| format!("${}", r * n + c)).collect();
                    format!("({})", ps.join(", "))
                })
                .collect();
            format!("INSERT INTO {table} ({cols}) VALUES {}", rows.join(", "))
        };
        db.execute_raw(pulp_common::db::stmt(
            backend,
            &sql("artifacts", "id, sha256, size, created_at", 4),
            values(&|r| {
                vec![
                    r.0.clone().into(),
                    r.1.clone().into(),
                    (r.2 as i64).into(),
                    0i64.into(),
                ]
            }),
        ))
        .await
        .unwrap();
        db.execute_raw(pulp_common::db::stmt(
            backend,
            &sql("contents", "id, pulp_type, natural_key, created_at", 4),
            values(&|r| {
                vec![
                    r.3.clone().into(),
                    "file.file".into(),
                    format!("f{}", r.4).into(),
                    0i64.into(),
                ]
            }),
        ))
        .await
        .unwrap();
        db.execute_raw(pulp_common::db::stmt(
            backend,
            &sql(
                "content_artifacts",
                "content_id, relative_path, artifact_id",
                3,
            ),
            values(&|r| {
                vec![
                    r.3.clone().into(),
                    format!("d{:02}/e{:02}/file-{}.bin", r.4 % 50, r.4 % 7, r.4).into(),
                    r.0.clone().into(),
                ]
            }),
        ))
        .await
        .unwrap();
    }
    let repo = fx.app.repo("bench").await;
    fx.app.modify_done(&repo.id, &units, &[], None).await;
    let version = fx.app.get_repo(&repo.id).await.latest_version_id;
    let mib = total_bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "setup: {FILES} files, {mib:.0} MiB, in {:.1?}",
        started.elapsed()
    );

    // Storage and the exports are both under the system temp dir: one disk.
    let line = |what: &str, secs: f64| {
        eprintln!(
            "| {what:<22} | {secs:>7.2} s | {:>9.0} files/s | {:>7.0} MiB/s |",
            FILES as f64 / secs,
            mib / secs
        );
    };
    eprintln!("| method                 |    time   |         files/s |     MiB/s |");
    for method in METHODS {
        let target = fx.allowed().join(format!("bench-{}", method.as_str_name()));
        let exporter = fx.exporter(method.as_str_name(), &target, method).await;
        let sent = Instant::now();
        let task = fx.export(&exporter.id, "", &version).await;
        let task = fx.app.wait_final(&task.id).await;
        let wall = sent.elapsed().as_secs_f64();
        assert_eq!(
            state(&task),
            tasking::TaskState::Completed,
            "{:?}",
            task.error
        );
        let ran = (micros(&task.finished_at) - micros(&task.started_at)) as f64 / 1e6;
        line(&format!("{} (task)", method.as_str_name()), ran);
        line(&format!("{} (API to done)", method.as_str_name()), wall);
    }
    let source = fx.allowed().join("bench-EXPORT_METHOD_WRITE");
    for (what, flags) in [("cp -r", "-r"), ("cp -rl", "-rl")] {
        let dest = fx.allowed().join(format!("cp{flags}"));
        let sent = Instant::now();
        let status = std::process::Command::new("cp")
            .arg(flags)
            .arg(&source)
            .arg(&dest)
            .status()
            .unwrap();
        assert!(status.success());
        line(what, sent.elapsed().as_secs_f64());
    }
    let sent = Instant::now();
    let status = std::process::Command::new("sync").status().unwrap();
    assert!(status.success());
    eprintln!(
        "(a final `sync` after cp took {:.2?}; cp itself does not fsync)",
        sent.elapsed()
    );
}
