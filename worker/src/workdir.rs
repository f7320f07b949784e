//! Working directories: `<root>/<task-id>/<random>/`, mode 0700, one per
//! task run, removed when the run ends in any state.
//!
//! At start `lock_root` creates the root if missing and takes an exclusive
//! lock on `<root>/.pulp-worker.lock`, then [`clear_stale`] removes the task
//! directories (and spares) a crashed run left behind. The lock is there
//! because that cleanup would otherwise delete the live directories of
//! another worker process sharing the root.
//!
//! The runner asks [`WorkingDirs`] for a [`WorkingDir`] before it starts a
//! task and passes only its path into the task's context; after the task's
//! future has finished or been dropped (completion, cancellation, abort or
//! panic) the runner removes the whole `<task-id>` directory. The
//! constructor is crate-private, so a working directory can only exist for
//! a task the runner is running: "used outside a task" (the seed's
//! `RuntimeError`) cannot be written. If the runner itself is dropped early,
//! `Drop` removes the directory as a fallback.
//!
//! Recycling: a removed `<task-id>` directory whose task left it exactly as
//! it got it (one empty subdirectory) is not deleted but renamed into
//! `<root>/.pulp-spares/`, and the next task gets it renamed into place
//! (its subdirectory renamed to a new random name first). The task sees a
//! fresh, empty, private directory that exists only while it runs, as
//! before; what changes is that a quick task costs a few renames instead of
//! two inode allocations and two deletions. That matters: on ext4 without a
//! journal, `mkdir` skips every inode deleted in the last minute or more
//! (`recently_deleted`), so at thousands of tasks a second creating the
//! directories cost more CPU than everything else the worker does. A
//! directory a task wrote into is deleted as before (off the async
//! threads); at most one spare per slot is kept, and the spares are
//! deleted when the worker stops.

use std::fs::{DirBuilder, File, TryLockError};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use pulp_common::names::TaskId;

use crate::error::WorkerError;

/// Name of the lock file in the root.
const LOCK_FILE: &str = ".pulp-worker.lock";

/// Name of the directory in the root that keeps emptied directories for
/// reuse.
const SPARES_DIR: &str = ".pulp-spares";

/// The working directories of one worker process: makes them under the
/// root and keeps emptied ones for reuse.
#[derive(Debug)]
pub(crate) struct WorkingDirs {
    root: PathBuf,
    /// `<root>/.pulp-spares`.
    spares_dir: PathBuf,
    /// Emptied `<task-id>` directories now in `spares_dir`.
    spares: Mutex<Vec<Spare>>,
    /// The most spares kept.
    capacity: usize,
    /// Names the spares: `<root>/.pulp-spares/<n>`.
    next_spare: AtomicU64,
}

/// An emptied directory in the spares directory, and the name of the one
/// empty subdirectory it holds.
#[derive(Debug)]
struct Spare {
    dir: PathBuf,
    inner: String,
}

impl WorkingDirs {
    /// Working directories under `root` (made absolute by the caller),
    /// keeping at most `capacity` spares. Recycling starts only once
    /// [`WorkingDirs::prepare`] has made the spares directory.
    pub(crate) fn new(root: PathBuf, capacity: usize) -> WorkingDirs {
        WorkingDirs {
            spares_dir: root.join(SPARES_DIR),
            root,
            spares: Mutex::new(Vec::new()),
            capacity,
            next_spare: AtomicU64::new(0),
        }
    }

    /// The root.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Makes the (empty) spares directory. Call it after [`clear_stale`],
    /// with the root locked.
    pub(crate) fn prepare(&self) -> io::Result<()> {
        create_private_dir(&self.spares_dir)
    }

    /// Deletes the spares and their directory (when the worker stops).
    pub(crate) fn clear_spares(&self) -> io::Result<()> {
        self.lock_spares().clear();
        remove_dir_if_present(&self.spares_dir)
    }

    /// Makes `<root>/<task-id>/<random>/`, both directories mode 0700, from
    /// a spare if there is one. The root must exist (see [`lock_root`]).
    pub(crate) fn create(self: &Arc<Self>, task_id: TaskId) -> io::Result<WorkingDir> {
        let task_dir = self.root.join(task_id.to_string());
        let random = uuid::Uuid::new_v4().simple().to_string();
        let dir = WorkingDir {
            path: task_dir.join(&random),
            task_dir,
            pool: Arc::clone(self),
            removed: false,
        };
        if let Some(spare) = self.take_spare()
            && self.install(spare, &dir.task_dir, random)
        {
            return Ok(dir);
        }
        // `dir` owns `task_dir` from here: if this fails, Drop removes it.
        create_private_dir(&dir.task_dir)?;
        create_private_dir(&dir.path)?;
        Ok(dir)
    }

    fn lock_spares(&self) -> std::sync::MutexGuard<'_, Vec<Spare>> {
        self.spares.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_spare(&self) -> Option<Spare> {
        self.lock_spares().pop()
    }

    /// Renames `spare` to `task_dir`, its subdirectory first to `random`.
    /// False when that could not be done; the spare is then kept (if
    /// intact) or deleted.
    fn install(&self, mut spare: Spare, task_dir: &Path, random: String) -> bool {
        // A process a task left behind may have written into it since.
        if !holds_only_empty_dir(&spare.dir, &spare.inner)
            || std::fs::rename(spare.dir.join(&spare.inner), spare.dir.join(&random)).is_err()
        {
            discard(&spare.dir);
            return false;
        }
        spare.inner = random;
        // NOREPLACE: never put a spare over a directory of the same task
        // (two runs of one task on this worker share `<task-id>`).
        let moved = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &spare.dir,
            rustix::fs::CWD,
            task_dir,
            rustix::fs::RenameFlags::NOREPLACE,
        );
        if moved.is_err() {
            self.lock_spares().push(spare);
            return false;
        }
        true
    }

    /// Moves `task_dir` (holding `inner`) into the spares if its task left
    /// it as it got it. Otherwise returns the path that must be deleted:
    /// `task_dir` itself, or where it was moved to.
    fn recycle(&self, task_dir: &Path, inner: &str) -> Result<(), PathBuf> {
        if self.lock_spares().len() >= self.capacity {
            return Err(task_dir.to_owned());
        }
        let n = self.next_spare.fetch_add(1, Ordering::Relaxed);
        let dir = self.spares_dir.join(n.to_string());
        // Fails when not prepared, or if the task removed its directory.
        if std::fs::rename(task_dir, &dir).is_err() {
            return Err(task_dir.to_owned());
        }
        if !holds_only_empty_dir(&dir, inner)
            || std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_err()
            || std::fs::set_permissions(dir.join(inner), std::fs::Permissions::from_mode(0o700))
                .is_err()
        {
            return Err(dir);
        }
        let mut spares = self.lock_spares();
        if spares.len() >= self.capacity {
            return Err(dir);
        }
        spares.push(Spare {
            dir,
            inner: inner.to_owned(),
        });
        Ok(())
    }
}

/// A task run's private directory. Only the runner creates one.
#[derive(Debug)]
pub struct WorkingDir {
    /// `<root>/<task-id>`: what is removed at the end.
    task_dir: PathBuf,
    /// `<root>/<task-id>/<random>`: what the task uses.
    path: PathBuf,
    pool: Arc<WorkingDirs>,
    removed: bool,
}

impl WorkingDir {
    /// The directory the task works in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes `<root>/<task-id>` and everything in it away: into the spares
    /// if the task left it untouched, else deleted off the async threads
    /// (a task may leave many files behind).
    pub(crate) async fn remove(mut self) -> io::Result<()> {
        self.removed = true;
        let task_dir = std::mem::take(&mut self.task_dir);
        let inner = self
            .path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        let Err(doomed) = self.pool.recycle(&task_dir, inner) else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || remove_dir_if_present(&doomed))
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

/// True when `dir` holds exactly one entry, the empty directory `inner`
/// (not a symbolic link).
fn holds_only_empty_dir(dir: &Path, inner: &str) -> bool {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let only = match (entries.next(), entries.next()) {
        (Some(Ok(entry)), None) => entry,
        _ => return false,
    };
    only.file_name() == inner
        && only.file_type().is_ok_and(|kind| kind.is_dir())
        && is_empty_dir(&only.path())
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

fn discard(dir: &Path) {
    if let Err(err) = remove_dir_if_present(dir) {
        tracing::warn!(dir = %dir.display(), error = %err, "could not remove a spare working directory");
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
/// named), and the spares directory, and nothing else, since the root may
/// be a user's directory. Symbolic links are never followed. Creates `root`
/// if missing. Returns how many task directories were removed.
pub fn clear_stale(root: &Path) -> io::Result<usize> {
    DirBuilder::new().recursive(true).mode(0o700).create(root)?;
    let spares = root.join(SPARES_DIR);
    if spares.symlink_metadata().is_ok_and(|meta| meta.is_dir()) {
        remove_dir_if_present(&spares)?;
    }
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

    /// Working directories under `root`, prepared for recycling, keeping at
    /// most `capacity` spares.
    fn dirs(root: &Path, capacity: usize) -> Arc<WorkingDirs> {
        let dirs = Arc::new(WorkingDirs::new(root.to_owned(), capacity));
        dirs.prepare().unwrap();
        dirs
    }

    fn spares(root: &Path) -> usize {
        std::fs::read_dir(root.join(SPARES_DIR)).unwrap().count()
    }

    #[tokio::test]
    async fn created_private_under_task_dir_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let id = TaskId::new();
        let dir = dirs(root.path(), 2).create(id).unwrap();
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
        let dir = dirs(root.path(), 2).create(id).unwrap();
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
        assert!(!root.path().join(id.to_string()).exists());
    }

    #[test]
    fn two_runs_of_one_task_get_different_dirs() {
        let root = tempfile::tempdir().unwrap();
        let id = TaskId::new();
        let dirs = dirs(root.path(), 2);
        let a = dirs.create(id).unwrap();
        let b = dirs.create(id).unwrap();
        assert_ne!(a.path(), b.path());
    }

    #[tokio::test]
    async fn an_untouched_dir_is_reused_fresh_and_private() {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path(), 2);
        let first = dirs.create(TaskId::new()).unwrap();
        let first_task_dir = first.path().parent().unwrap().to_owned();
        let first_path = first.path().to_owned();
        // A task may change its directory's mode; the next one gets 0700.
        std::fs::set_permissions(&first_path, std::fs::Permissions::from_mode(0o755)).unwrap();
        first.remove().await.unwrap();
        assert!(!first_task_dir.exists());
        assert_eq!(spares(root.path()), 1, "the untouched directory is kept");

        let id = TaskId::new();
        let second = dirs.create(id).unwrap();
        assert_eq!(spares(root.path()), 0, "the spare was used");
        let task_dir = root.path().join(id.to_string());
        assert_eq!(second.path().parent(), Some(task_dir.as_path()));
        assert_ne!(second.path().file_name(), first_path.file_name());
        assert_eq!(std::fs::read_dir(second.path()).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&task_dir).unwrap().count(), 1);
        assert_eq!(mode(&task_dir), 0o700);
        assert_eq!(mode(second.path()), 0o700);
        second.remove().await.unwrap();
        assert!(!task_dir.exists());
    }

    #[tokio::test]
    async fn a_dir_with_anything_left_in_it_is_deleted_not_reused() {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path(), 4);
        let wrote_inside = dirs.create(TaskId::new()).unwrap();
        std::fs::write(wrote_inside.path().join("f"), b"x").unwrap();
        let wrote_beside = dirs.create(TaskId::new()).unwrap();
        std::fs::write(wrote_beside.path().with_file_name("f"), b"x").unwrap();
        let replaced = dirs.create(TaskId::new()).unwrap();
        std::fs::remove_dir(replaced.path()).unwrap();
        std::os::unix::fs::symlink(root.path(), replaced.path()).unwrap();
        for dir in [wrote_inside, wrote_beside, replaced] {
            let task_dir = dir.path().parent().unwrap().to_owned();
            dir.remove().await.unwrap();
            assert!(task_dir.symlink_metadata().is_err());
        }
        assert_eq!(spares(root.path()), 0);
        assert!(root.path().join(SPARES_DIR).is_dir());
    }

    #[tokio::test]
    async fn a_spare_written_into_after_its_task_is_not_handed_out() {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path(), 2);
        dirs.create(TaskId::new()).unwrap().remove().await.unwrap();
        assert_eq!(spares(root.path()), 1);
        // A process the task left behind, writing beside its old directory.
        let spare = std::fs::read_dir(root.path().join(SPARES_DIR))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(spare.join("late"), b"x").unwrap();

        let next = dirs.create(TaskId::new()).unwrap();
        assert_eq!(std::fs::read_dir(next.path()).unwrap().count(), 0);
        assert_eq!(
            std::fs::read_dir(next.path().parent().unwrap())
                .unwrap()
                .count(),
            1,
            "the next task sees only its own directory"
        );
        assert!(!spare.exists(), "the spare was deleted");
    }

    #[tokio::test]
    async fn at_most_capacity_spares_are_kept_and_stopping_deletes_them() {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path(), 2);
        let runs: Vec<_> = (0..3)
            .map(|_| dirs.create(TaskId::new()).unwrap())
            .collect();
        for dir in runs {
            dir.remove().await.unwrap();
        }
        assert_eq!(spares(root.path()), 2);
        dirs.clear_spares().unwrap();
        assert!(!root.path().join(SPARES_DIR).exists());
        // Without the spares directory it still works, without reuse.
        let dir = dirs.create(TaskId::new()).unwrap();
        let task_dir = dir.path().parent().unwrap().to_owned();
        dir.remove().await.unwrap();
        assert!(!task_dir.exists());
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
        let spare = root.path().join(SPARES_DIR).join("0/abc");
        std::fs::create_dir_all(&spare).unwrap();

        assert_eq!(clear_stale(root.path()).unwrap(), 1);
        assert!(!stale.exists());
        assert!(!root.path().join(SPARES_DIR).exists());
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
