//! Advisory file locks (flock via `fs4`) coordinating processes that share a store.
//!
//! `<root>/lock` is held shared by anything that adds content (blob writes, commits,
//! builds via [`crate::Store::lease`]) and exclusively by garbage collection.
//! `<root>/index.lock` is held exclusively while `index.json` is regenerated.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use fs4::FileExt;

use crate::error::{Result, io_err};

/// A held lock; released on drop (or when the process dies).
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock too; unlock explicitly to be prompt.
        let _ = FileExt::unlock(&self.file);
    }
}

impl LockGuard {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err("opening lock file", path))
}

/// Blocks until a shared lock is held.
pub(crate) fn shared(path: &Path) -> Result<LockGuard> {
    let file = open_lock_file(path)?;
    FileExt::lock_shared(&file).map_err(io_err("taking shared lock", path))?;
    Ok(LockGuard {
        file,
        path: path.to_owned(),
    })
}

/// Blocks until an exclusive lock is held.
pub(crate) fn exclusive(path: &Path) -> Result<LockGuard> {
    let file = open_lock_file(path)?;
    FileExt::lock(&file).map_err(io_err("taking exclusive lock", path))?;
    Ok(LockGuard {
        file,
        path: path.to_owned(),
    })
}

/// An exclusive lock if nobody else holds the file, `None` otherwise.
pub(crate) fn try_exclusive(path: &Path) -> Result<Option<LockGuard>> {
    let file = open_lock_file(path)?;
    match FileExt::try_lock(&file) {
        Ok(()) => Ok(Some(LockGuard {
            file,
            path: path.to_owned(),
        })),
        Err(fs4::TryLockError::WouldBlock) => Ok(None),
        Err(fs4::TryLockError::Error(source)) => Err(io_err("trying exclusive lock", path)(source)),
    }
}
