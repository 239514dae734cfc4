//! The local image store: an OCI image layout with blobs, plus transactional metadata.
//!
//! Layout of a store root:
//! ```text
//! <root>/oci-layout            {"imageLayoutVersion":"1.0.0"}
//! <root>/index.json            regenerated from meta.db after every change
//! <root>/blobs/sha256/<hex>    immutable, verified content
//! <root>/layers-v1/<hex>/      unpacked layer trees, by diff_id (managed by the layer code)
//! <root>/tmp/                  temporary files on the same filesystem (atomic renames)
//! <root>/meta.db               SQLite (WAL): tags, images, layers, unpacked layers
//! <root>/lock, index.lock      advisory locks
//! ```
//!
//! Commit order makes crashes harmless: blobs are written and renamed into place first,
//! then one database transaction references them, then `index.json` is regenerated. A
//! process killed at any point leaves at most an unreferenced blob or a stale
//! `index.json`, which [`Store::open`] repairs; no image ever refers to a missing blob.
//!
//! Database commits are fully synced (`synchronous=FULL`) except the build cache's own
//! bookkeeping on the build path (cache records, fingerprints, the stat cache, analysis
//! annotations), which uses [`RelaxedConn`]: after a power cut such a record may be lost
//! (costing a rebuild), never half-written, and never one that outlives a blob, because
//! every commit that precedes deleting files is a synced one, and syncing the WAL makes
//! the relaxed commits before it durable too.

mod annotations;
mod blob;
mod cache;
mod db;
mod deflate_memo;
mod error;
mod gc;
mod images;
mod layout;
mod lock;
mod root;

#[cfg(test)]
mod tests;

/// The store's connection with WAL commits not synced (`synchronous=NORMAL`) until it is
/// dropped, which restores full syncing.
pub(crate) struct RelaxedConn<'a>(MutexGuard<'a, Connection>);

impl std::ops::Deref for RelaxedConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl std::ops::DerefMut for RelaxedConn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0
    }
}

impl Drop for RelaxedConn<'_> {
    fn drop(&mut self) {
        // This only fails on a broken connection, on which later statements fail too.
        let _ = self.0.pragma_update(None, "synchronous", "FULL");
    }
}

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;
use stowage_digest::Digest;

pub use blob::{BlobInfo, BlobWriter, VerifiedBlobReader};
pub use cache::{CacheHit, CachePruneReport, CacheRecord, StatRecord};
pub use deflate_memo::{DeflateChunkIndex, DeflateChunkRecord};
pub use error::{Result, StoreError};
pub use gc::{DiskUsage, ImageUsage, PruneReport, SizeBreakdown, VerifyReport};
pub use images::{
    CommittedImage, ImageCommit, ImageDetails, ImageSummary, ManifestFormat, RemoveEvent,
    UnpackedLayer,
};
pub use layout::published_temp_file;
pub use lock::LockGuard;
pub use root::{RootInputs, SYSTEM_ROOT, default_root};

use crate::error::io_err;

/// Name of the directory holding unpacked layers (versioned).
pub const LAYERS_DIR: &str = "layers-v1";

/// An open store. Cheap to share between threads (`&Store` is `Sync`); several processes
/// may open the same root at once.
pub struct Store {
    root: PathBuf,
    blobs_dir: PathBuf,
    tmp_dir: PathBuf,
    layers_dir: PathBuf,
    db_path: PathBuf,
    conn: Mutex<Connection>,
    /// Set when a blob was renamed into place and the directory not yet fsynced.
    blobs_dir_unsynced: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The database file under the store's root.
const DB_FILE: &str = "meta.db";

/// See [`Store::handle_source`].
#[derive(Debug, Clone)]
pub struct HandleSource {
    root: PathBuf,
    blobs_dir_unsynced: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HandleSource {
    /// The handle, with a new connection to the store's database. Opening it touches
    /// nothing on disk.
    pub fn open(self) -> Result<Store> {
        let conn = db::connect(&self.root.join(DB_FILE))?;
        Ok(Store::with_connection(
            self.root,
            conn,
            self.blobs_dir_unsynced,
        ))
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

impl Store {
    /// Opens the store at `root`, creating the layout if needed. When no other process is
    /// using the store, stale temporary files are removed; `index.json` is brought in line
    /// with the database unless the database records that it already is.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_owned();
        fs::create_dir_all(&root).map_err(io_err("creating directory", &root))?;
        let conn = db::open(&root.join(DB_FILE))?;
        let store = Self::with_connection(root, conn, Default::default());
        for dir in [&store.blobs_dir, &store.tmp_dir, &store.layers_dir] {
            fs::create_dir_all(dir).map_err(io_err("creating directory", dir))?;
        }
        store.ensure_oci_layout_file()?;
        if let Some(_exclusive) = lock::try_exclusive(&store.lock_path())? {
            store.clean_tmp()?;
        }
        if !store.index_is_current()? {
            store.regenerate_index()?;
        }
        Ok(store)
    }

    /// The handle on the layout under `root` that uses `conn`.
    fn with_connection(
        root: PathBuf,
        conn: Connection,
        blobs_dir_unsynced: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Self {
            blobs_dir: root.join("blobs").join("sha256"),
            tmp_dir: root.join("tmp"),
            layers_dir: root.join(LAYERS_DIR),
            db_path: root.join(DB_FILE),
            root,
            conn: Mutex::new(conn),
            blobs_dir_unsynced,
        }
    }

    /// What another handle on this open store is made from: sent to another thread, it
    /// opens there a handle with a database connection of its own ([`HandleSource::open`]),
    /// for queries that should neither wait for this handle's connection nor make it wait
    /// (SQLite's WAL lets readers run beside a writer).
    pub fn handle_source(&self) -> HandleSource {
        HandleSource {
            root: self.root.clone(),
            blobs_dir_unsynced: self.blobs_dir_unsynced.clone(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/tmp`: scratch space on the store's filesystem. Anything placed here must be
    /// used while holding a [`Store::lease`]; it is deleted when the store is opened idle.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp_dir
    }

    /// `<root>/layers-v1`: where unpacked layer trees live.
    pub fn layers_dir(&self) -> &Path {
        &self.layers_dir
    }

    /// The directory for the unpacked tree of the layer with `diff_id`.
    pub fn unpacked_layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.layers_dir.join(diff_id.hex())
    }

    /// The path of a blob (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blob::blob_path(&self.blobs_dir, digest)
    }

    /// Takes the store's shared lock and returns it: hold it for the whole of a build or
    /// pull so that garbage collection cannot remove blobs or layers between writing them
    /// and committing the image that references them. Do not call [`Store::prune`] from
    /// a thread of the same process while holding a lease (it would wait forever).
    pub fn lease(&self) -> Result<LockGuard> {
        lock::shared(&self.lock_path())
    }

    /// Starts a streaming blob write. With `expected`, the commit fails unless the bytes
    /// hash to it (and have `expected_size` bytes, when given).
    pub fn blob_writer(
        &self,
        expected: Option<Digest>,
        expected_size: Option<u64>,
    ) -> Result<BlobWriter> {
        let lease = self.lease()?;
        BlobWriter::new(
            &self.tmp_dir,
            &self.blobs_dir,
            expected,
            expected_size,
            lease,
            self.blobs_dir_unsynced.clone(),
        )
    }

    /// Makes the renames of the blobs written so far durable (one fsync of the blobs
    /// directory, if any was renamed since the last one). Called before a fully synced
    /// commit refers to new blobs.
    pub fn sync_blobs_dir(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.blobs_dir_unsynced.swap(false, Ordering::AcqRel)
            && let Err(error) = blob::sync_dir(&self.blobs_dir)
        {
            self.blobs_dir_unsynced.store(true, Ordering::Release);
            return Err(error);
        }
        Ok(())
    }

    /// Stores everything `reader` yields as a blob, verifying `expected` when given.
    pub fn put_blob(&self, mut reader: impl Read, expected: Option<Digest>) -> Result<BlobInfo> {
        let mut writer = self.blob_writer(expected, None)?;
        io::copy(&mut reader, &mut writer)
            .map_err(io_err("writing blob from stream to", &self.tmp_dir))?;
        writer.commit()
    }

    /// Stores an in-memory blob (configs, manifests).
    pub fn put_blob_bytes(&self, bytes: &[u8], expected: Option<Digest>) -> Result<BlobInfo> {
        self.put_blob(bytes, expected)
    }

    /// Whether the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The size of a stored blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound(*digest)),
            Err(e) => Err(io_err("reading metadata of", path)(e)),
        }
    }

    /// Opens a blob for reading, without verification (fast path for trusted re-reads).
    pub fn open_blob(&self, digest: &Digest) -> Result<fs::File> {
        let path = self.blob_path(digest);
        match fs::File::open(&path) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobNotFound(*digest)),
            Err(e) => Err(io_err("opening blob", path)(e)),
        }
    }

    /// Opens a blob for reading; the reader fails at end of file if the content does not
    /// match the digest.
    pub fn open_blob_verified(&self, digest: &Digest) -> Result<VerifiedBlobReader> {
        let file = self.open_blob(digest)?;
        Ok(VerifiedBlobReader::new(
            file,
            *digest,
            self.blob_path(digest),
        ))
    }

    /// Reads a whole blob into memory, verified, refusing blobs larger than `limit` bytes.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Vec<u8>> {
        let size = self.blob_size(digest)?;
        if size > limit {
            return Err(StoreError::BlobTooLarge {
                digest: *digest,
                size,
                limit,
            });
        }
        let file = self.open_blob(digest)?;
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(io_err("reading blob", self.blob_path(digest)))?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                actual,
                size: bytes.len() as u64,
            });
        }
        Ok(bytes)
    }

    fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    fn index_lock_path(&self) -> PathBuf {
        self.root.join("index.lock")
    }

    /// The connection, for commits that must be durable (the default).
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A poisoned mutex only means another thread panicked mid-call; SQLite rolled
        // back any open transaction, so the connection is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection, for build-cache bookkeeping whose commits need not survive a power
    /// cut (see the module doc).
    fn relaxed_conn(&self) -> RelaxedConn<'_> {
        let conn = self.conn();
        // Should this fail, the connection simply stays fully synced.
        let _ = conn.pragma_update(None, "synchronous", "NORMAL");
        RelaxedConn(conn)
    }

    fn db_err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Db {
            path: self.db_path.clone(),
            source,
        }
    }

    fn ensure_oci_layout_file(&self) -> Result<()> {
        let path = self.root.join("oci-layout");
        if path.is_file() {
            return Ok(());
        }
        let _lease = self.lease()?;
        layout::write_atomically(&self.tmp_dir, &path, br#"{"imageLayoutVersion":"1.0.0"}"#)
    }

    fn clean_tmp(&self) -> Result<()> {
        let entries = fs::read_dir(&self.tmp_dir).map_err(io_err("listing", &self.tmp_dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("listing", &self.tmp_dir))?;
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let removed = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(io_err("removing stale temp file", &path))?;
        }
        Ok(())
    }
}
