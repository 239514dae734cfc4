//! The stat cache: `(dev, inode, size, mtime, ctime) → content digest` per
//! context path, so that a rebuild reads no file whose metadata is unchanged.
//!
//! Size and mtime alone are not enough (a `git checkout` or `touch -r` can keep
//! both while changing content); the ctime, which no user call can set back,
//! catches that.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

use stowage_digest::Digest;

/// The metadata that must be unchanged for a cached digest to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StatKey {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// Status change time in nanoseconds since the epoch.
    pub ctime_ns: i128,
}

impl StatKey {
    /// Reads the key from file metadata.
    pub fn from_metadata(meta: &Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }
}

/// Cached content digests of one context, keyed by relative path.
#[derive(Debug, Default, Clone)]
pub struct StatCache {
    entries: HashMap<String, (StatKey, Digest)>,
    changed: bool,
    hits: u64,
    misses: u64,
}

impl StatCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a cache from stored records.
    pub fn from_records(records: impl IntoIterator<Item = (String, StatKey, Digest)>) -> Self {
        Self {
            entries: records
                .into_iter()
                .map(|(path, key, digest)| (path, (key, digest)))
                .collect(),
            ..Self::default()
        }
    }

    /// The cached digest of `path` if its metadata still equals `key`.
    pub fn lookup(&mut self, path: &str, key: &StatKey) -> Option<Digest> {
        match self.entries.get(path) {
            Some((cached, digest)) if cached == key => {
                self.hits += 1;
                Some(*digest)
            }
            _ => {
                self.misses += 1;
                None
            }
        }
    }

    /// Records the digest of `path` read with metadata `key`.
    pub fn insert(&mut self, path: String, key: StatKey, digest: Digest) {
        self.entries.insert(path, (key, digest));
        self.changed = true;
    }

    /// Whether anything was inserted since the cache was built.
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// (hits, misses) counted by [`StatCache::lookup`].
    pub fn counters(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Every record, sorted by path, for storing.
    pub fn records(&self) -> Vec<(String, StatKey, Digest)> {
        let mut out: Vec<_> = self
            .entries
            .iter()
            .map(|(path, (key, digest))| (path.clone(), *key, *digest))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
