//! Content-addressed blobs under `<root>/blobs/sha256/<hex>`: streaming, verified ingest
//! (temp file → hash while writing → verify → fsync → rename → fsync dir) and verified reads.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use stowage_digest::{Digest, Hasher, HashingWriter};
use tempfile::NamedTempFile;

use crate::error::{Result, StoreError, io_err};
use crate::lock::LockGuard;

/// What was stored: the digest and size of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    /// sha256 of the bytes.
    pub digest: Digest,
    /// Length in bytes.
    pub size: u64,
}

/// A streaming blob ingest. Write the bytes, then call [`BlobWriter::commit`]. Dropping it
/// without committing deletes the temporary file. Memory use is bounded (one buffer).
///
/// Holds the store's shared lock until committed or dropped, so garbage collection cannot
/// run meanwhile.
pub struct BlobWriter {
    out: HashingWriter<BufWriter<NamedTempFile>>,
    blobs_dir: PathBuf,
    expected: Option<Digest>,
    expected_size: Option<u64>,
    _lock: LockGuard,
    /// The store's flag: a rename into the blobs directory is not yet durable.
    dir_unsynced: Arc<AtomicBool>,
}

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("temp", &self.out.get_ref().get_ref().path())
            .field("written", &self.out.len())
            .field("expected", &self.expected)
            .finish()
    }
}

impl BlobWriter {
    pub(crate) fn new(
        tmp_dir: &Path,
        blobs_dir: &Path,
        expected: Option<Digest>,
        expected_size: Option<u64>,
        lock: LockGuard,
        dir_unsynced: Arc<AtomicBool>,
    ) -> Result<Self> {
        let temp = crate::layout::published_temp_file(tmp_dir, "blob-")
            .map_err(io_err("creating temp file in", tmp_dir))?;
        Ok(Self {
            out: HashingWriter::new(BufWriter::with_capacity(256 * 1024, temp)),
            blobs_dir: blobs_dir.to_owned(),
            expected,
            expected_size,
            _lock: lock,
            dir_unsynced,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.out.len()
    }

    /// Verifies digest and size, makes the data durable (fsync) and moves it into place.
    /// If the blob already exists, the new copy is discarded. The rename itself is made
    /// durable later, for all blobs written since, by [`Store::sync_blobs_dir`] — before
    /// any fully synced database commit refers to them (a power cut before that loses the
    /// rename, never the content: a blob is either whole or absent).
    pub fn commit(self) -> Result<BlobInfo> {
        let (buffered, digest, size) = self.out.finish();
        let temp = buffered.into_inner().map_err(|e| {
            let (error, writer) = e.into_parts();
            io_err("flushing", writer.get_ref().path())(error)
        })?;
        if let Some(expected) = self.expected
            && expected != digest
        {
            return Err(StoreError::DigestMismatch {
                expected,
                actual: digest,
                size,
            });
        }
        if let Some(expected) = self.expected_size
            && expected != size
        {
            return Err(StoreError::SizeMismatch {
                digest,
                expected,
                actual: size,
            });
        }
        let final_path = blob_path(&self.blobs_dir, &digest);
        if final_path.exists() {
            // Another process may have renamed it in and not synced the directory yet.
            self.dir_unsynced.store(true, Ordering::Release);
            return Ok(BlobInfo { digest, size });
        }
        temp.as_file()
            .sync_all()
            .map_err(io_err("syncing", temp.path()))?;
        temp.persist(&final_path)
            .map_err(|e| io_err("renaming blob into", &final_path)(e.error))?;
        self.dir_unsynced.store(true, Ordering::Release);
        Ok(BlobInfo { digest, size })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The path of a blob inside `blobs_dir` (`<root>/blobs/sha256`).
pub(crate) fn blob_path(blobs_dir: &Path, digest: &Digest) -> PathBuf {
    blobs_dir.join(digest.hex())
}

/// fsyncs a directory so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing directory", dir))
}

/// A reader over a stored blob that fails at end of file if the bytes read do not hash to
/// the blob's digest (so consumers never silently accept corrupt content).
pub struct VerifiedBlobReader {
    file: File,
    hasher: Hasher,
    expected: Digest,
    path: PathBuf,
}

impl std::fmt::Debug for VerifiedBlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedBlobReader")
            .field("path", &self.path)
            .finish()
    }
}

impl VerifiedBlobReader {
    pub(crate) fn new(file: File, expected: Digest, path: PathBuf) -> Self {
        Self {
            file,
            hasher: Hasher::new(),
            expected,
            path,
        }
    }
}

impl Read for VerifiedBlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let actual = std::mem::take(&mut self.hasher);
            let size = actual.len();
            let actual = actual.finish();
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} is corrupt: content hashes to {actual} ({size} bytes)",
                        self.path.display()
                    ),
                ));
            }
            // Keep the (already consumed) state consistent for repeated EOF reads.
            self.hasher = Hasher::new();
            self.expected = Digest::of(b"");
            return Ok(0);
        }
        if let Some(chunk) = buf.get(..n) {
            self.hasher.update(chunk);
        }
        Ok(n)
    }
}

/// Hashes a whole file, streaming.
pub(crate) fn hash_file(path: &Path) -> Result<(Digest, u64)> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Hasher::new();
    io::copy(&mut file, &mut hasher).map_err(io_err("reading", path))?;
    let size = hasher.len();
    Ok((hasher.finish(), size))
}
