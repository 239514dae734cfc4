//! The build cache's records: step key → the layer it produced and what went
//! into the key, the last key seen at each step position (to explain misses),
//! and the build-context stat cache. All of it lives in `meta.db`.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use stowage_digest::Digest;
use stowage_image::LayerInfo;

use crate::Store;
use crate::error::{Result, StoreError};

/// SQL creating the cache tables (idempotent).
pub(crate) const CACHE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS build_cache (
    key               TEXT PRIMARY KEY,
    kind              TEXT NOT NULL,
    blob_digest       TEXT,
    diff_id           TEXT,
    media_type        TEXT,
    compressed_size   INTEGER,
    uncompressed_size INTEGER,
    inputs            TEXT NOT NULL,
    created_unix      INTEGER NOT NULL,
    last_used_unix    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS build_cache_by_blob ON build_cache(blob_digest);
-- A step's inputs JSON (a COPY's lists every file) lives apart from build_cache, whose
-- rows a lookup reads whole: SQLite would follow a long value's overflow pages to reach
-- the columns after it. build_cache.inputs stays '' (stores made before this kept it there).
CREATE TABLE IF NOT EXISTS build_cache_inputs (
    key    TEXT PRIMARY KEY,
    inputs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS build_positions (
    position     TEXT PRIMARY KEY,
    key          TEXT NOT NULL,
    updated_unix INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS verified_blobs (
    digest   TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    mtime_ns TEXT NOT NULL,
    ctime_ns TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS context_stat_cache (
    context  TEXT NOT NULL,
    path     TEXT NOT NULL,
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns TEXT NOT NULL,
    ctime_ns TEXT NOT NULL,
    digest   TEXT NOT NULL,
    PRIMARY KEY (context, path)
);
CREATE TABLE IF NOT EXISTS copy_fingerprints (
    fingerprint  TEXT PRIMARY KEY,
    key          TEXT NOT NULL,
    file_count   INTEGER NOT NULL,
    file_bytes   INTEGER NOT NULL,
    updated_unix INTEGER NOT NULL
);
";

/// One cached step result.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheRecord {
    /// The step's cache key.
    pub key: Digest,
    /// `run`, `copy`, `add`, ...
    pub kind: String,
    /// The layer the step produced, if it produced one.
    pub layer: Option<LayerInfo>,
    /// What went into the key, as JSON, for explaining misses.
    pub inputs: String,
    /// When the record was last used (unix seconds).
    pub last_used_unix: i64,
}

/// A cached step result as a lookup sees it: everything but the (possibly large) inputs,
/// which only a miss explanation reads ([`Store::cache_inputs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CacheHit {
    /// The step's cache key.
    pub key: Digest,
    /// `run`, `copy`, `add`, ...
    pub kind: String,
    /// The layer the step produced, if it produced one.
    pub layer: Option<LayerInfo>,
    /// When the record was last used (unix seconds), this lookup included.
    pub last_used_unix: i64,
}

/// One stat-cache row: a context file's metadata and the digest of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatRecord {
    /// Path relative to the context.
    pub path: String,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size.
    pub size: u64,
    /// mtime in nanoseconds.
    pub mtime_ns: i128,
    /// ctime in nanoseconds.
    pub ctime_ns: i128,
    /// Content digest.
    pub digest: Digest,
}

/// What pruning the cache removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachePruneReport {
    /// Cache records removed.
    pub records_removed: u64,
    /// Bytes of layer blobs those records held that nothing else needs.
    pub bytes_reclaimed: u64,
}

fn blob_stat(meta: &std::fs::Metadata) -> (i64, i64, String, String) {
    use std::os::unix::fs::MetadataExt;
    (
        to_sql(meta.len()),
        meta.ino() as i64,
        (i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())).to_string(),
        (i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())).to_string(),
    )
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_sql(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn parse_digest(text: &str, what: &str) -> Result<Digest> {
    text.parse().map_err(|_| StoreError::Corrupt {
        detail: format!("{what}: invalid digest {text:?} in the build cache"),
    })
}

impl Store {
    /// The cached result of `key`, if any. Marks it used.
    pub fn cache_get(&self, key: &Digest) -> Result<Option<CacheHit>> {
        let conn = self.relaxed_conn();
        let db_err = self.db_err();
        let row = conn
            .query_row(
                "SELECT kind, blob_digest, diff_id, media_type, compressed_size, uncompressed_size,
                        last_used_unix
                 FROM build_cache WHERE key = ?1",
                [key.to_string()],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Option<String>>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, Option<String>>(3)?,
                        row.get::<_, Option<i64>>(4)?,
                        row.get::<_, Option<i64>>(5)?,
                        row.get::<_, i64>(6)?,
                    ))
                },
            )
            .optional()
            .map_err(&db_err)?;
        let Some((kind, blob, diff_id, media_type, compressed, uncompressed, used)) = row else {
            return Ok(None);
        };
        let layer = match (blob, diff_id, media_type) {
            (Some(blob), Some(diff_id), Some(media_type)) => Some(LayerInfo {
                diff_id: parse_digest(&diff_id, "diff_id")?,
                blob_digest: parse_digest(&blob, "blob")?,
                media_type,
                compressed_size: compressed.map(from_sql).unwrap_or(0),
                uncompressed_size: uncompressed.map(from_sql),
            }),
            _ => None,
        };
        let now = now_unix();
        // Least-recently-used order needs no finer grain than a minute, and
        // skipping the write keeps a no-op rebuild free of disk syncs.
        if now > used.saturating_add(60) {
            conn.execute(
                "UPDATE build_cache SET last_used_unix = ?1 WHERE key = ?2",
                params![now, key.to_string()],
            )
            .map_err(&db_err)?;
        }
        Ok(Some(CacheHit {
            key: *key,
            kind,
            layer,
            last_used_unix: now.max(used),
        }))
    }

    /// Records a step result. The layer's blob must already be in the store.
    pub fn cache_put(&self, record: &CacheRecord) -> Result<()> {
        if let Some(layer) = &record.layer
            && !self.has_blob(&layer.blob_digest)
        {
            return Err(StoreError::Corrupt {
                detail: format!(
                    "cache record {} refers to blob {} which is not in the store",
                    record.key, layer.blob_digest
                ),
            });
        }
        let mut conn = self.relaxed_conn();
        let db_err = self.db_err();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&db_err)?;
        let now = now_unix();
        let layer = record.layer.as_ref();
        if let Some(layer) = layer {
            tx.execute(
                "INSERT OR IGNORE INTO layers (blob_digest, diff_id, media_type, compressed_size, uncompressed_size)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    layer.blob_digest.to_string(),
                    layer.diff_id.to_string(),
                    layer.media_type,
                    to_sql(layer.compressed_size),
                    layer.uncompressed_size.map(to_sql),
                ],
            )
            .map_err(&db_err)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO build_cache
               (key, kind, blob_digest, diff_id, media_type, compressed_size, uncompressed_size,
                inputs, created_unix, last_used_unix)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
            params![
                record.key.to_string(),
                record.kind,
                layer.map(|l| l.blob_digest.to_string()),
                layer.map(|l| l.diff_id.to_string()),
                layer.map(|l| l.media_type.clone()),
                layer.map(|l| to_sql(l.compressed_size)),
                layer.and_then(|l| l.uncompressed_size.map(to_sql)),
                "",
                now,
            ],
        )
        .map_err(&db_err)?;
        tx.execute(
            "INSERT OR REPLACE INTO build_cache_inputs (key, inputs) VALUES (?1, ?2)",
            params![record.key.to_string(), record.inputs],
        )
        .map_err(&db_err)?;
        tx.commit().map_err(&db_err)?;
        Ok(())
    }

    /// Forgets one cache record (its layer turned out to be unusable).
    pub fn cache_forget(&self, key: &Digest) -> Result<()> {
        let mut conn = self.conn();
        let db_err = self.db_err();
        let tx = conn.transaction().map_err(&db_err)?;
        for table in ["build_cache", "build_cache_inputs"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE key = ?1"),
                [key.to_string()],
            )
            .map_err(&db_err)?;
        }
        tx.commit().map_err(&db_err)?;
        Ok(())
    }

    /// The inputs JSON of a key, without marking it used.
    pub fn cache_inputs(&self, key: &Digest) -> Result<Option<String>> {
        let conn = self.conn();
        let db_err = self.db_err();
        let inputs = conn
            .query_row(
                "SELECT inputs FROM build_cache_inputs WHERE key = ?1",
                [key.to_string()],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map_err(&db_err)?;
        if inputs.is_some() {
            return Ok(inputs);
        }
        // A record from a store made before build_cache_inputs existed.
        conn.query_row(
            "SELECT inputs FROM build_cache WHERE key = ?1 AND inputs != ''",
            [key.to_string()],
            |row| row.get::<_, String>(0),
        )
        .optional()
        .map_err(&db_err)
    }

    /// The key last built at a step position (an opaque string the builder forms
    /// from the context, the Dockerfile, the stage and the step).
    pub fn cache_position(&self, position: &str) -> Result<Option<Digest>> {
        let conn = self.conn();
        let key = conn
            .query_row(
                "SELECT key FROM build_positions WHERE position = ?1",
                [position],
                |row| row.get::<_, String>(0),
            )
            .optional()
            .map_err(self.db_err())?;
        key.map(|k| parse_digest(&k, "position key")).transpose()
    }

    /// Records the keys built at step positions, in one transaction (none
    /// when every position already holds its key).
    pub fn set_cache_positions(&self, positions: &[(String, Digest)]) -> Result<()> {
        let mut changed = Vec::new();
        for (position, key) in positions {
            if self.cache_position(position)?.as_ref() != Some(key) {
                changed.push((position, key));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let mut conn = self.relaxed_conn();
        let db_err = self.db_err();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&db_err)?;
        let now = now_unix();
        for (position, key) in changed {
            tx.execute(
                "INSERT OR REPLACE INTO build_positions (position, key, updated_unix) VALUES (?1, ?2, ?3)",
                params![position, key.to_string(), now],
            )
            .map_err(&db_err)?;
        }
        tx.commit().map_err(&db_err)?;
        Ok(())
    }

    /// Blob digests the build cache holds on to.
    pub(crate) fn cache_blobs(&self) -> Result<BTreeSet<String>> {
        let conn = self.conn();
        let db_err = self.db_err();
        let mut statement = conn
            .prepare("SELECT DISTINCT blob_digest FROM build_cache WHERE blob_digest IS NOT NULL")
            .map_err(&db_err)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(&db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(&db_err)
    }

    /// Trims the build cache: with `keep_bytes`, removes least recently used
    /// records until the layers only the cache holds fit in that many bytes;
    /// without it, removes every record. Blobs are then freed by [`Store::prune`].
    pub fn cache_prune(&self, keep_bytes: Option<u64>) -> Result<CachePruneReport> {
        let mut conn = self.conn();
        let db_err = self.db_err();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&db_err)?;
        let rows: Vec<(String, Option<String>, i64)> = {
            let mut statement = tx
                .prepare(
                    "SELECT c.key, c.blob_digest, COALESCE(c.compressed_size, 0)
                     FROM build_cache c ORDER BY c.last_used_unix DESC, c.key",
                )
                .map_err(&db_err)?;
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                .map_err(&db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(&db_err)?
        };
        let image_blobs: BTreeSet<String> = {
            let mut statement = tx
                .prepare("SELECT blob_digest FROM image_layers")
                .map_err(&db_err)?;
            statement
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(&db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(&db_err)?
        };
        let mut report = CachePruneReport::default();
        let mut kept_bytes: u64 = 0;
        let mut kept_blobs: BTreeSet<String> = BTreeSet::new();
        let mut removed_blobs: BTreeSet<(String, u64)> = BTreeSet::new();
        for (key, blob, size) in rows {
            let size = from_sql(size);
            let cache_only = blob.as_ref().is_some_and(|b| !image_blobs.contains(b));
            let extra = if cache_only && blob.as_ref().is_some_and(|b| !kept_blobs.contains(b)) {
                size
            } else {
                0
            };
            let keep = match keep_bytes {
                Some(limit) => kept_bytes.saturating_add(extra) <= limit,
                None => false,
            };
            if keep {
                kept_bytes = kept_bytes.saturating_add(extra);
                if let Some(blob) = blob {
                    kept_blobs.insert(blob);
                }
                continue;
            }
            tx.execute("DELETE FROM build_cache WHERE key = ?1", [&key])
                .map_err(&db_err)?;
            tx.execute("DELETE FROM build_cache_inputs WHERE key = ?1", [&key])
                .map_err(&db_err)?;
            report.records_removed += 1;
            if let Some(blob) = blob
                && cache_only
            {
                removed_blobs.insert((blob, size));
            }
        }
        for (blob, size) in removed_blobs {
            if !kept_blobs.contains(&blob) {
                report.bytes_reclaimed = report.bytes_reclaimed.saturating_add(size);
            }
        }
        tx.execute(
            "DELETE FROM copy_fingerprints WHERE key NOT IN (SELECT key FROM build_cache)",
            [],
        )
        .map_err(&db_err)?;
        tx.commit().map_err(&db_err)?;
        Ok(report)
    }

    /// Records that a blob's content was just checked against its digest,
    /// with the file's metadata at that moment.
    pub fn mark_blob_verified(&self, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        let meta = std::fs::metadata(&path).map_err(crate::error::io_err("reading", &path))?;
        let (size, ino, mtime, ctime) = blob_stat(&meta);
        let conn = self.relaxed_conn();
        conn.execute(
            "INSERT OR REPLACE INTO verified_blobs (digest, size, ino, mtime_ns, ctime_ns)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![digest.to_string(), size, ino, mtime, ctime],
        )
        .map_err(self.db_err())?;
        Ok(())
    }

    /// Whether a blob can be trusted for a cache hit: present, of `size`
    /// bytes, and either unchanged since its content was last verified
    /// (same inode, size, mtime and ctime) or verified again now.
    pub fn blob_trusted(&self, digest: &Digest, size: u64) -> Result<bool> {
        let path = self.blob_path(digest);
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(false);
        };
        if meta.len() != size {
            return Ok(false);
        }
        let now = blob_stat(&meta);
        let recorded = {
            let conn = self.conn();
            conn.query_row(
                "SELECT size, ino, mtime_ns, ctime_ns FROM verified_blobs WHERE digest = ?1",
                [digest.to_string()],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(self.db_err())?
        };
        if recorded.as_ref() == Some(&now) {
            return Ok(true);
        }
        let mut reader = match self.open_blob_verified(digest) {
            Ok(reader) => reader,
            Err(_) => return Ok(false),
        };
        if std::io::copy(&mut reader, &mut std::io::sink()).is_err() {
            return Ok(false);
        }
        self.mark_blob_verified(digest)?;
        Ok(true)
    }

    /// The step key last computed for a COPY whose selection had this metadata fingerprint
    /// (see `Context::selection_fingerprint`), with the files and bytes it selected.
    pub fn copy_fingerprint_get(&self, fingerprint: &Digest) -> Result<Option<(Digest, u64, u64)>> {
        let conn = self.conn();
        let row: Option<(String, i64, i64)> = conn
            .query_row(
                "SELECT key, file_count, file_bytes FROM copy_fingerprints WHERE fingerprint = ?1",
                [fingerprint.to_string()],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(self.db_err())?;
        Ok(row.and_then(|(key, files, bytes)| {
            key.parse()
                .ok()
                .map(|key| (key, from_sql(files), from_sql(bytes)))
        }))
    }

    /// Remembers the step key computed for a COPY selection fingerprint.
    pub fn copy_fingerprint_put(
        &self,
        fingerprint: &Digest,
        key: &Digest,
        file_count: u64,
        file_bytes: u64,
    ) -> Result<()> {
        let conn = self.relaxed_conn();
        conn.execute(
            "INSERT OR REPLACE INTO copy_fingerprints
               (fingerprint, key, file_count, file_bytes, updated_unix)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                fingerprint.to_string(),
                key.to_string(),
                to_sql(file_count),
                to_sql(file_bytes),
                now_unix()
            ],
        )
        .map_err(self.db_err())?;
        Ok(())
    }

    /// The stat-cache rows of one build context.
    pub fn stat_cache_load(&self, context: &str) -> Result<Vec<StatRecord>> {
        let conn = self.conn();
        let db_err = self.db_err();
        let mut statement = conn
            .prepare_cached(
                "SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest
                 FROM context_stat_cache WHERE context = ?1",
            )
            .map_err(&db_err)?;
        let mut rows = statement.query([context]).map_err(&db_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&db_err)? {
            let text = |index: usize| row.get_ref(index).ok().and_then(|v| v.as_str().ok());
            let (Some(path), Some(mtime), Some(ctime), Some(digest)) =
                (text(0), text(4), text(5), text(6))
            else {
                continue;
            };
            // Rows that do not parse are dropped: the file is simply hashed again.
            let (Ok(mtime_ns), Ok(ctime_ns), Ok(digest)) =
                (mtime.parse(), ctime.parse(), digest.parse())
            else {
                continue;
            };
            let (Ok(dev), Ok(ino), Ok(size)) = (
                row.get::<_, i64>(1),
                row.get::<_, i64>(2),
                row.get::<_, i64>(3),
            ) else {
                continue;
            };
            out.push(StatRecord {
                path: path.to_owned(),
                dev: dev as u64,
                ino: ino as u64,
                size: from_sql(size),
                mtime_ns,
                ctime_ns,
                digest,
            });
        }
        Ok(out)
    }

    /// Stores stat-cache rows of one context (replacing rows of the same paths).
    pub fn stat_cache_save(&self, context: &str, records: &[StatRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut conn = self.relaxed_conn();
        let db_err = self.db_err();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&db_err)?;
        {
            let mut statement = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO context_stat_cache
                       (context, path, dev, ino, size, mtime_ns, ctime_ns, digest)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(&db_err)?;
            for record in records {
                statement
                    .execute(params![
                        context,
                        record.path,
                        record.dev as i64,
                        record.ino as i64,
                        to_sql(record.size),
                        record.mtime_ns.to_string(),
                        record.ctime_ns.to_string(),
                        record.digest.to_string(),
                    ])
                    .map_err(&db_err)?;
            }
        }
        tx.commit().map_err(&db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(store: &Store, content: &[u8]) -> LayerInfo {
        let blob = store.put_blob_bytes(content, None).unwrap();
        LayerInfo {
            diff_id: Digest::of(b"diff"),
            blob_digest: blob.digest,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
            compressed_size: blob.size,
            uncompressed_size: Some(10),
        }
    }

    #[test]
    fn records_round_trip_and_survive_prune() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Digest::of(b"key");
        assert_eq!(store.cache_get(&key).unwrap(), None);
        let layer = layer(&store, b"layer bytes");
        let record = CacheRecord {
            key,
            kind: "run".into(),
            layer: Some(layer.clone()),
            inputs: "{}".into(),
            last_used_unix: 0,
        };
        store.cache_put(&record).unwrap();
        let got = store.cache_get(&key).unwrap().unwrap();
        assert_eq!(got.layer, Some(layer.clone()));
        assert_eq!(store.cache_inputs(&key).unwrap().as_deref(), Some("{}"));
        // An ordinary prune keeps what the cache holds.
        store.prune().unwrap();
        assert!(store.has_blob(&layer.blob_digest));
        // Pruning the cache, then the store, frees it.
        let report = store.cache_prune(None).unwrap();
        assert_eq!(report.records_removed, 1);
        assert_eq!(report.bytes_reclaimed, layer.compressed_size);
        store.prune().unwrap();
        assert!(!store.has_blob(&layer.blob_digest));
    }

    #[test]
    fn inputs_live_apart_from_the_record_and_go_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Digest::of(b"copy");
        let inputs = format!("{{\"files\":\"{}\"}}", "x".repeat(100_000));
        store
            .cache_put(&CacheRecord {
                key,
                kind: "copy".into(),
                layer: Some(layer(&store, b"layer")),
                inputs: inputs.clone(),
                last_used_unix: 0,
            })
            .unwrap();
        let in_record: String = store
            .conn()
            .query_row(
                "SELECT inputs FROM build_cache WHERE key = ?1",
                [key.to_string()],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(in_record, "", "the lookup row stays small");
        assert_eq!(store.cache_inputs(&key).unwrap(), Some(inputs));
        store.cache_forget(&key).unwrap();
        assert_eq!(store.cache_inputs(&key).unwrap(), None);
        let left: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM build_cache_inputs", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn inputs_kept_in_the_record_by_an_older_store_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Digest::of(b"old record");
        store
            .conn()
            .execute(
                "INSERT INTO build_cache (key, kind, inputs, created_unix, last_used_unix)
                 VALUES (?1, 'run', '{\"argv\":[\"true\"]}', 0, 0)",
                [key.to_string()],
            )
            .unwrap();
        assert_eq!(
            store.cache_inputs(&key).unwrap().as_deref(),
            Some("{\"argv\":[\"true\"]}")
        );
        assert!(store.cache_get(&key).unwrap().is_some());
    }

    #[test]
    fn bookkeeping_commits_leave_the_connection_fully_synced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let synchronous = |store: &Store| -> i64 {
            store
                .conn()
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap()
        };
        // FULL is 2, NORMAL is 1.
        assert_eq!(synchronous(&store), 2);
        {
            let relaxed = store.relaxed_conn();
            let inside: i64 = relaxed
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap();
            assert_eq!(inside, 1);
        }
        assert_eq!(synchronous(&store), 2);
        store
            .copy_fingerprint_put(&Digest::of(b"fp"), &Digest::of(b"key"), 1, 2)
            .unwrap();
        assert_eq!(synchronous(&store), 2);
    }

    #[test]
    fn keep_storage_drops_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (name, content) in [("old", &b"aaaaaaaaaa"[..]), ("new", &b"bbbbbbbbbb"[..])] {
            let layer = layer(&store, content);
            store
                .cache_put(&CacheRecord {
                    key: Digest::of(name.as_bytes()),
                    kind: "run".into(),
                    layer: Some(layer),
                    inputs: "{}".into(),
                    last_used_unix: 0,
                })
                .unwrap();
        }
        {
            let conn = store.conn();
            conn.execute(
                "UPDATE build_cache SET last_used_unix = 1 WHERE key = ?1",
                [Digest::of(b"old").to_string()],
            )
            .unwrap();
        }
        let report = store.cache_prune(Some(10)).unwrap();
        assert_eq!(report.records_removed, 1);
        assert!(store.cache_get(&Digest::of(b"new")).unwrap().is_some());
        assert!(store.cache_get(&Digest::of(b"old")).unwrap().is_none());
    }

    #[test]
    fn a_changed_blob_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let info = store.put_blob_bytes(b"layer content", None).unwrap();
        assert!(store.blob_trusted(&info.digest, info.size).unwrap());
        store.mark_blob_verified(&info.digest).unwrap();
        assert!(store.blob_trusted(&info.digest, info.size).unwrap());
        assert!(!store.blob_trusted(&info.digest, info.size + 1).unwrap());
        // Same size, other bytes: caught by the changed ctime, then the hash.
        let path = store.blob_path(&info.digest);
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        std::fs::set_permissions(&path, perms).unwrap();
        std::fs::write(&path, b"LAYER CONTENT").unwrap();
        assert!(!store.blob_trusted(&info.digest, info.size).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(!store.blob_trusted(&info.digest, info.size).unwrap());
    }

    #[test]
    fn refuses_records_whose_blob_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let record = CacheRecord {
            key: Digest::of(b"k"),
            kind: "copy".into(),
            layer: Some(LayerInfo {
                diff_id: Digest::of(b"d"),
                blob_digest: Digest::of(b"missing"),
                media_type: "x".into(),
                compressed_size: 1,
                uncompressed_size: None,
            }),
            inputs: "{}".into(),
            last_used_unix: 0,
        };
        assert!(store.cache_put(&record).is_err());
    }

    #[test]
    fn positions_and_stat_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .set_cache_positions(&[("ctx|Dockerfile|0|1".into(), Digest::of(b"a"))])
            .unwrap();
        assert_eq!(
            store.cache_position("ctx|Dockerfile|0|1").unwrap(),
            Some(Digest::of(b"a"))
        );
        let record = StatRecord {
            path: "src/a.txt".into(),
            dev: 1,
            ino: u64::MAX,
            size: 5,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: -5,
            digest: Digest::of(b"x"),
        };
        store
            .stat_cache_save("/ctx", std::slice::from_ref(&record))
            .unwrap();
        assert_eq!(store.stat_cache_load("/ctx").unwrap(), vec![record]);
        assert!(store.stat_cache_load("/other").unwrap().is_empty());
    }
}
