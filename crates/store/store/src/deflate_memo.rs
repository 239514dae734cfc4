//! Where the deflated chunks of earlier gzip layers lie, so that a rebuilt layer copies its
//! unchanged chunks instead of compressing them again (the chunking and the keys are
//! `stowage_archive`'s: a key names the exact deflated bytes). A row points into a stored
//! blob; a lookup reads those bytes and hands them out only if their CRC-32 still matches,
//! so a missing, pruned or damaged blob only costs a recompression.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use stowage_digest::Digest;

use crate::Store;
use crate::error::{Result, StoreError};

/// SQL creating the chunk table (idempotent; part of the cache schema).
pub(crate) const DEFLATE_CHUNK_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS deflate_chunks (
    key         BLOB PRIMARY KEY,
    blob_digest TEXT NOT NULL,
    offset      INTEGER NOT NULL,
    length      INTEGER NOT NULL,
    checksum    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deflate_chunks_by_blob ON deflate_chunks(blob_digest);
";

/// The longest chunk a lookup will read (the writer's chunks are at most 256 KiB of input,
/// and deflate never grows data by more than a few bytes per 16 KiB).
const MAX_CHUNK_BYTES: u64 = 1024 * 1024;

/// One chunk of a blob, as a gzip writer reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateChunkRecord {
    /// The chunk's key (a sha256 of what its deflated bytes are a function of).
    pub key: [u8; 32],
    /// Offset of the deflated bytes in the blob.
    pub offset: u64,
    /// Their length.
    pub length: u64,
    /// Their CRC-32.
    pub checksum: u32,
}

/// Lookups of remembered chunks, usable from several threads (its own database connection,
/// opened at the first lookup: a layer of one chunk often makes none).
pub struct DeflateChunkIndex {
    conn: Mutex<Option<Connection>>,
    db_path: PathBuf,
    blobs_dir: PathBuf,
    /// The blob read last: consecutive chunks nearly always come from the same one.
    open_blob: Mutex<Option<(String, File)>>,
}

impl std::fmt::Debug for DeflateChunkIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateChunkIndex")
            .field("blobs_dir", &self.blobs_dir)
            .finish()
    }
}

impl DeflateChunkIndex {
    /// The deflated bytes remembered for `key`, if their blob is still there and they still
    /// match their CRC-32. Any problem is a miss.
    pub fn find(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        let (blob, offset, length, checksum) = {
            let mut conn = self.conn.lock().ok()?;
            if conn.is_none() {
                *conn = Some(crate::db::connect(&self.db_path).ok()?);
            }
            conn.as_ref()?.query_row(
                "SELECT blob_digest, offset, length, checksum FROM deflate_chunks WHERE key = ?1",
                [&key[..]],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                },
            )
            .optional()
            .ok()??
        };
        let offset = u64::try_from(offset).ok()?;
        let length = u64::try_from(length)
            .ok()
            .filter(|l| *l <= MAX_CHUNK_BYTES)?;
        let checksum = u32::try_from(checksum).ok()?;
        let digest = Digest::from_hex(blob.strip_prefix("sha256:").unwrap_or(&blob)).ok()?;
        let mut bytes = vec![0u8; usize::try_from(length).ok()?];
        {
            let mut open = self.open_blob.lock().ok()?;
            if open.as_ref().is_none_or(|(name, _)| *name != blob) {
                let file = File::open(self.blobs_dir.join(digest.hex())).ok()?;
                *open = Some((blob, file));
            }
            let (_, file) = open.as_ref()?;
            file.read_exact_at(&mut bytes, offset).ok()?;
        }
        (crc32fast::hash(&bytes) == checksum).then_some(bytes)
    }
}

impl Store {
    /// A lookup handle over the chunks recorded by [`Store::record_deflate_chunks`].
    pub fn deflate_chunk_index(&self) -> Result<DeflateChunkIndex> {
        Ok(DeflateChunkIndex {
            conn: Mutex::new(None),
            db_path: self.db_path.clone(),
            blobs_dir: self.blobs_dir.clone(),
            open_blob: Mutex::new(None),
        })
    }

    /// Remembers where the chunks of the stored gzip blob `blob` are. A key already known
    /// keeps its first location (the bytes are the same by construction).
    pub fn record_deflate_chunks(
        &self,
        blob: &Digest,
        chunks: &[DeflateChunkRecord],
    ) -> Result<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut conn = self.relaxed_conn();
        let db_err = |source| StoreError::Db {
            path: self.db_path.clone(),
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT OR IGNORE INTO deflate_chunks (key, blob_digest, offset, length, checksum)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(db_err)?;
            let blob = blob.to_string();
            for chunk in chunks {
                insert
                    .execute(params![
                        &chunk.key[..],
                        blob,
                        i64::try_from(chunk.offset).unwrap_or(i64::MAX),
                        i64::try_from(chunk.length).unwrap_or(i64::MAX),
                        i64::from(chunk.checksum),
                    ])
                    .map_err(db_err)?;
            }
        }
        tx.commit().map_err(db_err)
    }

    /// Forgets the chunks of blobs that are no longer in the store (after a prune).
    pub(crate) fn forget_missing_deflate_chunks(&self) -> Result<u64> {
        let conn = self.conn();
        let db_err = |source| StoreError::Db {
            path: self.db_path.clone(),
            source,
        };
        let blobs: Vec<String> = {
            let mut select = conn
                .prepare("SELECT DISTINCT blob_digest FROM deflate_chunks")
                .map_err(db_err)?;
            let rows = select
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(db_err)?;
            rows.collect::<std::result::Result<_, _>>()
                .map_err(db_err)?
        };
        let mut forgotten = 0u64;
        for blob in blobs {
            let present = Digest::from_hex(blob.strip_prefix("sha256:").unwrap_or(&blob))
                .is_ok_and(|digest| self.blob_path(&digest).is_file());
            if !present {
                let removed = conn
                    .execute("DELETE FROM deflate_chunks WHERE blob_digest = ?1", [&blob])
                    .map_err(db_err)?;
                forgotten = forgotten.saturating_add(removed as u64);
            }
        }
        Ok(forgotten)
    }

    /// How many chunks are recorded for `blob` (for tests and diagnostics).
    pub fn deflate_chunk_count(&self, blob: &Digest) -> Result<u64> {
        let conn = self.conn();
        let count: Option<i64> = conn
            .query_row(
                "SELECT count(*) FROM deflate_chunks WHERE blob_digest = ?1",
                [blob.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| StoreError::Db {
                path: self.db_path.clone(),
                source,
            })?;
        Ok(count.map_or(0, |c| u64::try_from(c).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_for(bytes: &[u8], offset: u64, len: usize, key: u8) -> DeflateChunkRecord {
        let slice = &bytes[offset as usize..offset as usize + len];
        DeflateChunkRecord {
            key: [key; 32],
            offset,
            length: len as u64,
            checksum: crc32fast::hash(slice),
        }
    }

    #[test]
    fn finds_recorded_chunks_and_refuses_damaged_or_missing_ones() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let blob = store.put_blob_bytes(&bytes, None).unwrap().digest;
        let records = [
            record_for(&bytes, 10, 500, 1),
            record_for(&bytes, 510, 4000, 2),
        ];
        store.record_deflate_chunks(&blob, &records).unwrap();
        assert_eq!(store.deflate_chunk_count(&blob).unwrap(), 2);
        let index = store.deflate_chunk_index().unwrap();
        assert_eq!(index.find(&[1; 32]).as_deref(), Some(&bytes[10..510]));
        assert_eq!(index.find(&[2; 32]).as_deref(), Some(&bytes[510..4510]));
        assert_eq!(index.find(&[3; 32]), None);

        // A chunk whose recorded CRC no longer matches the blob's bytes is a miss.
        let wrong = DeflateChunkRecord {
            checksum: records[0].checksum ^ 1,
            key: [4; 32],
            ..records[0]
        };
        store.record_deflate_chunks(&blob, &[wrong]).unwrap();
        assert_eq!(index.find(&[4; 32]), None);

        // A chunk past the end of its blob is a miss.
        let past = DeflateChunkRecord {
            offset: 9_900,
            key: [5; 32],
            ..records[0]
        };
        store.record_deflate_chunks(&blob, &[past]).unwrap();
        assert_eq!(index.find(&[5; 32]), None);

        // Once the blob is gone, its chunks are misses, and pruning forgets them.
        drop(index);
        std::fs::remove_file(store.blob_path(&blob)).unwrap();
        let index = store.deflate_chunk_index().unwrap();
        assert_eq!(index.find(&[1; 32]), None);
        assert_eq!(store.forget_missing_deflate_chunks().unwrap(), 4);
        assert_eq!(store.deflate_chunk_count(&blob).unwrap(), 0);
    }
}
