//! Working directories: `<root>/<task-id>/<random>/`, mode 0700, one per
//! task run, removed when the run ends in any state.
//!
//! At start `lock_root` creates the root if missing and takes an exclusive
//! lock on `<root>/.pulp-worker.lock`, then [`clear_stale`] removes the task
//! directories a crashed run left behind. The lock is there because that
//! cleanup would otherwise delete the live directories of another worker
//! process sharing the root.
//!
//! The runner creates a [`WorkingDir`] before it starts a task and passes
//! only its path into the task's context; after the task's future has
//! finished or been dropped (completion, cancellation, abort or panic) the
//! runner removes the whole `<task-id>` directory. Its constructor is
//! crate-private, so a working directory can only exist for a task the
//! runner is running: "used outside a task" (the seed's `RuntimeError`)
//! cannot be written. If the runner itself is dropped early, `Drop` removes
//! the directory as a fallback.

use std::fs::{DirBuilder, File, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pulp_common::names::TaskId;

use crate::error::WorkerError;

/// Name of the lock file in the root.
const LOCK_FILE: &str = ".pulp-worker.lock";

/// A task run's private directory. Only the runner creates one.
#[derive(Debug)]
pub struct WorkingDir {
    /// `<root>/<task-id>`: what is removed at the end.
    task_dir: PathBuf,
    /// `<root>/<task-id>/<random>`: what the task uses.
    path: PathBuf,
    removed: bool,
}

impl WorkingDir {
    /// Creates `<root>/<task-id>/<random>/`, both directories mode 0700.
    /// The root must exist (see [`lock_root`]).
    pub(crate) fn create(root: &Path, task_id: TaskId) -> io::Result<WorkingDir> {
        let task_dir = root.join(task_id.to_string());
        create_private_dir(&task_dir)?;
        let path = task_dir.join(uuid::Uuid::new_v4().simple().to_string());
        let dir = WorkingDir {
            task_dir,
            path,
            removed: false,
        };
        // `dir` already owns `task_dir`: if this fails, Drop removes it.
        create_private_dir(&dir.path)?;
        Ok(dir)
    }

    /// The directory the task works in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes `<root>/<task-id>` and everything in it, off the async
    /// threads (a task may leave many files behind).
    pub(crate) async fn remove(mut self) -> io::Result<()> {
        self.removed = true;
        let task_dir = std::mem::take(&mut self.task_dir);
        tokio::task::spawn_blocking(move || remove_dir_if_present(&task_dir))
            .await
            .map_err(io::Error::other)?
    }
}

impl Drop for WorkingDir {
    fn drop(&mut self) {
        if !self.removed
            && let Err(err) = remove_dir_if_present(&self.task_dir)
        {
            tracing::warn!(dir = %self.task_dir.display(), error = %err, "could not remove a working directory");
        }
    }
}

/// Creates one directory with mode 0700; an existing one gets that mode.
fn create_private_dir(path: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => {}
        Err(err) => return Err(err),
    }
    // The umask may have cleared bits of 0700; set them exactly.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

fn remove_dir_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The exclusive claim of one worker process on a working directory root;
/// released when dropped (or when the process dies).
#[derive(Debug)]
pub(crate) struct RootLock {
    _file: File,
}

/// Creates `root` (mode 0700) if missing and locks it for this process.
pub(crate) fn lock_root(root: &Path) -> Result<RootLock, WorkerError> {
    let io_err = |source| WorkerError::WorkingDir {
        path: root.to_owned(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(io_err)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(LOCK_FILE))
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => Ok(RootLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(WorkerError::WorkingDirInUse {
            path: root.to_owned(),
        }),
        Err(TryLockError::Error(err)) => Err(io_err(err)),
    }
}

/// Removes every directory directly under `root` whose name is a UUID in
/// its canonical form (lower-case, hyphenated: how task directories are
/// named), and nothing else, since the root may be a user's directory.
/// Symbolic links are never followed. Creates `root` if missing. Returns how
/// many directories were removed.
pub fn clear_stale(root: &Path) -> io::Result<usize> {
    DirBuilder::new().recursive(true).mode(0o700).create(root)?;
    let mut removed = 0;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let is_task_dir =
            uuid::Uuid::try_parse(&name).is_ok_and(|id| id.hyphenated().to_string() == name);
        // `file_type` does not follow symbolic links.
        if is_task_dir && entry.file_type()?.is_dir() {
            remove_dir_if_present(&entry.path())?;
            tracing::info!(dir = %entry.path().display(), "removed a stale working directory");
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn created_private_under_task_dir_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let id = TaskId::new();
        let dir = WorkingDir::create(root.path(), id).unwrap();
        let task_dir = root.path().join(id.to_string());
        assert_eq!(dir.path().parent(), Some(task_dir.as_path()));
        assert!(dir.path().is_dir());
        assert_eq!(mode(&task_dir), 0o700);
        assert_eq!(mode(dir.path()), 0o700);

        std::fs::write(dir.path().join("file"), b"data").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        dir.remove().await.unwrap();
        assert!(!task_dir.exists());
        assert!(root.path().exists());
    }

    #[test]
    fn removed_on_drop() {
        let root = tempfile::tempdir().unwrap();
        let id = TaskId::new();
        let dir = WorkingDir::create(root.path(), id).unwrap();
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
        assert!(!root.path().join(id.to_string()).exists());
    }

    #[test]
    fn two_runs_of_one_task_get_different_dirs() {
        let root = tempfile::tempdir().unwrap();
        let id = TaskId::new();
        let a = WorkingDir::create(root.path(), id).unwrap();
        let b = WorkingDir::create(root.path(), id).unwrap();
        assert_ne!(a.path(), b.path());
    }

    #[test]
    fn clear_stale_removes_only_uuid_named_dirs() {
        let root = tempfile::tempdir().unwrap();
        let stale = root.path().join(TaskId::new().to_string());
        std::fs::create_dir_all(stale.join("abc")).unwrap();
        std::fs::write(stale.join("abc/f"), b"x").unwrap();
        let keep_dir = root.path().join("my-photos");
        std::fs::create_dir(&keep_dir).unwrap();
        let keep_file = root.path().join(TaskId::new().to_string() + "x");
        std::fs::write(&keep_file, b"x").unwrap();
        let uuid_file = root.path().join(TaskId::new().to_string());
        std::fs::write(&uuid_file, b"x").unwrap();
        let upper = root.path().join(TaskId::new().to_string().to_uppercase());
        std::fs::create_dir(&upper).unwrap();
        // A link named like a task dir, to a directory that must survive.
        let target = tempfile::tempdir().unwrap();
        std::fs::write(target.path().join("precious"), b"x").unwrap();
        let link = root.path().join(TaskId::new().to_string());
        std::os::unix::fs::symlink(target.path(), &link).unwrap();

        assert_eq!(clear_stale(root.path()).unwrap(), 1);
        assert!(!stale.exists());
        for kept in [&keep_dir, &keep_file, &uuid_file, &upper, &link] {
            assert!(
                kept.symlink_metadata().is_ok(),
                "{} removed",
                kept.display()
            );
        }
        assert!(target.path().join("precious").exists());
    }

    #[test]
    fn clear_stale_creates_a_missing_root() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("a/b");
        assert_eq!(clear_stale(&root).unwrap(), 0);
        assert!(root.is_dir());
    }

    #[test]
    fn one_worker_per_root() {
        let root = tempfile::tempdir().unwrap();
        let lock = lock_root(root.path()).unwrap();
        assert!(matches!(
            lock_root(root.path()),
            Err(WorkerError::WorkingDirInUse { .. })
        ));
        drop(lock);
        lock_root(root.path()).unwrap();
    }
}
