//! The content-addressed storage directory shared by the scheduler
//! (uploads) and the workers (exports).
//!
//! An artifact's file lives at `<storage-dir>/artifacts/<sha[0..2]>/<sha>`.
//! Bytes arrive through an [`Upload`]: a temporary file under
//! `<storage-dir>/tmp/` (the same file system, so the final rename is
//! atomic), hashed while written. [`Upload::finish`] flushes and fsyncs it
//! and compares size and digest with what the client stated; only a
//! [`VerifiedFile`] can be [placed](VerifiedFile::place) into the artifact
//! tree (rename, then fsync of the directory). A temporary file that is
//! dropped at any point before that is deleted, so a failed or abandoned
//! upload leaves nothing behind.

use super::ContentError;
use super::artifacts::Sha256Digest;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The storage directory.
#[derive(Debug, Clone)]
pub struct Storage {
    root: PathBuf,
}

impl Storage {
    /// Storage rooted at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Storage {
        Storage { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the file of the artifact with this digest lives.
    pub fn artifact_path(&self, sha256: &Sha256Digest) -> PathBuf {
        let sha = sha256.as_str();
        self.root.join("artifacts").join(&sha[..2]).join(sha)
    }

    /// The directory of temporary upload files.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Starts an upload into a new temporary file.
    pub async fn begin_upload(&self) -> Result<Upload, ContentError> {
        let dir = self.tmp_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ContentError::io(format!("create {}", dir.display()), e))?;
        let path = dir.join(format!("upload-{}", uuid::Uuid::new_v4().simple()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| ContentError::io(format!("create {}", path.display()), e))?;
        Ok(Upload {
            file,
            temp: TempPath(Some(path)),
            hasher: Sha256::new(),
            written: 0,
        })
    }
}

/// Deletes the file when dropped, unless it was moved away.
#[derive(Debug)]
struct TempPath(Option<PathBuf>);

impl TempPath {
    fn path(&self) -> &Path {
        self.0
            .as_deref()
            .expect("a temporary path until it is placed")
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.0.take()
            && let Err(err) = std::fs::remove_file(&path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %err, "could not remove a temporary upload file");
        }
    }
}

/// A file being uploaded: written to a temporary file and hashed.
#[derive(Debug)]
pub struct Upload {
    file: tokio::fs::File,
    temp: TempPath,
    hasher: Sha256,
    written: u64,
}

impl Upload {
    /// Appends `bytes`.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ContentError> {
        self.file
            .write_all(bytes)
            .await
            .map_err(|e| ContentError::io(format!("write {}", self.temp.path().display()), e))?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// How many bytes were written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes and fsyncs the file and checks it against the stated size
    /// and digest. On a mismatch the temporary file is deleted and the
    /// error says what differed.
    pub async fn finish(
        mut self,
        sha256: &Sha256Digest,
        size: u64,
    ) -> Result<VerifiedFile, ContentError> {
        if self.written != size {
            return Err(ContentError::Invalid(format!(
                "the upload has {} bytes but its header said {size}: nothing was stored",
                self.written
            )));
        }
        let actual = Sha256Digest::from_hash(&self.hasher.finalize_reset());
        if &actual != sha256 {
            return Err(ContentError::Invalid(format!(
                "the upload's SHA-256 is {actual} but its header said {sha256}: nothing was stored"
            )));
        }
        let context = || format!("sync {}", self.temp.path().display());
        self.file
            .flush()
            .await
            .map_err(|e| ContentError::io(context(), e))?;
        self.file
            .sync_all()
            .await
            .map_err(|e| ContentError::io(context(), e))?;
        Ok(VerifiedFile {
            temp: self.temp,
            sha256: actual,
            size,
        })
    }
}

/// An uploaded file whose size and digest were verified, still in its
/// temporary place (deleted if dropped).
#[derive(Debug)]
pub struct VerifiedFile {
    temp: TempPath,
    sha256: Sha256Digest,
    size: u64,
}

impl VerifiedFile {
    /// Its SHA-256.
    pub fn sha256(&self) -> &Sha256Digest {
        &self.sha256
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Moves the file to its place in `storage` (replacing a file of the
    /// same digest, which has the same bytes) and fsyncs the directory, so
    /// the rename survives a crash. Returns the final path.
    pub async fn place(mut self, storage: &Storage) -> Result<PathBuf, ContentError> {
        let target = storage.artifact_path(&self.sha256);
        let dir = target
            .parent()
            .expect("an artifact path has a parent")
            .to_owned();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| ContentError::io(format!("create {}", dir.display()), e))?;
        let from = self.temp.path().to_owned();
        tokio::fs::rename(&from, &target).await.map_err(|e| {
            ContentError::io(
                format!("move {} to {}", from.display(), target.display()),
                e,
            )
        })?;
        self.temp.0 = None;
        let sync_dir = dir.clone();
        tokio::task::spawn_blocking(move || std::fs::File::open(&sync_dir)?.sync_all())
            .await
            .map_err(|e| ContentError::io(format!("sync {}", dir.display()), e.into()))?
            .map_err(|e| ContentError::io(format!("sync {}", dir.display()), e))?;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(bytes: &[u8]) -> Sha256Digest {
        Sha256Digest::from_hash(&Sha256::digest(bytes))
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    out.extend(files_under(&path));
                } else {
                    out.push(path);
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn verified_upload_is_placed_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::new(dir.path());
        let mut upload = storage.begin_upload().await.unwrap();
        upload.write(b"hello ").await.unwrap();
        upload.write(b"world").await.unwrap();
        assert_eq!(upload.written(), 11);
        let sha = digest(b"hello world");
        let file = upload.finish(&sha, 11).await.unwrap();
        let path = file.place(&storage).await.unwrap();
        assert_eq!(path, storage.artifact_path(&sha));
        assert!(path.starts_with(dir.path().join("artifacts").join(&sha.as_str()[..2])));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(files_under(dir.path()), vec![path]);
    }

    #[tokio::test]
    async fn mismatches_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::new(dir.path());
        for (bytes, sha, size, says) in [
            (
                &b"abc"[..],
                digest(b"abc"),
                4,
                "has 3 bytes but its header said 4",
            ),
            (&b"abc"[..], digest(b"abd"), 3, "SHA-256 is"),
        ] {
            let mut upload = storage.begin_upload().await.unwrap();
            upload.write(bytes).await.unwrap();
            let err = upload.finish(&sha, size).await.unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
        // An upload dropped half-way is removed too.
        let mut upload = storage.begin_upload().await.unwrap();
        upload.write(b"partial").await.unwrap();
        drop(upload);
        assert_eq!(files_under(dir.path()), Vec::<PathBuf>::new());
    }
}
