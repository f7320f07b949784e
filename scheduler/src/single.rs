//! One scheduler per SQLite file.
//!
//! SQLite serves one host and this scheduler keeps its state in memory, so a
//! second scheduler on the same file would assign tasks behind the first
//! one's back. An exclusive lock on `<file>.scheduler.lock`, held for the
//! life of the process and released by the kernel when it dies (even on
//! kill -9), refuses the second one with a clear message.

use anyhow::Context;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct SingleSchedulerLock {
    _file: File,
}

/// Takes the lock for the SQLite `database` file.
pub fn lock(database: &Path) -> anyhow::Result<SingleSchedulerLock> {
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut name = database.as_os_str().to_owned();
    name.push(".scheduler.lock");
    let path = Path::new(&name);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("open the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(SingleSchedulerLock { _file: file }),
        Err(TryLockError::WouldBlock) => anyhow::bail!(
            "another pulp-scheduler is already running on the SQLite database {} (it holds {}). \
             SQLite supports exactly one scheduler; to run several replicas use PostgreSQL (--database-url postgres://...)",
            database.display(),
            path.display()
        ),
        Err(TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("lock {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("pulp.sqlite");
        let first = lock(&db).unwrap();
        let err = lock(&db).unwrap_err().to_string();
        assert!(
            err.contains("already running") && err.contains("PostgreSQL"),
            "{err}"
        );
        drop(first);
        lock(&db).expect("free again once the first scheduler is gone");
    }
}
