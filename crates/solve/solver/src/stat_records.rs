//! The store's stat-cache rows as a [`StatCache`]: loading one named record set (a build
//! context, or an unpacked layer tree) and saving it back when it gained entries.

use stowage_context::{StatCache, StatKey};
use stowage_store::{StatRecord, Store, StoreError};

/// The record set `id` of the store, as a cache.
pub fn load_stat_cache(store: &Store, id: &str) -> Result<StatCache, StoreError> {
    Ok(StatCache::from_records(
        store.stat_cache_load(id)?.into_iter().map(|r| {
            let key = StatKey {
                dev: r.dev,
                ino: r.ino,
                size: r.size,
                mtime_ns: r.mtime_ns,
                ctime_ns: r.ctime_ns,
            };
            (r.path, key, r.digest)
        }),
    ))
}

/// Saves `cache` as the record set `id` if it changed since it was loaded.
pub fn save_stat_cache(store: &Store, id: &str, cache: &StatCache) -> Result<(), StoreError> {
    if !cache.is_changed() {
        return Ok(());
    }
    let records: Vec<StatRecord> = cache
        .records()
        .into_iter()
        .map(|(path, key, digest)| StatRecord {
            path,
            dev: key.dev,
            ino: key.ino,
            size: key.size,
            mtime_ns: key.mtime_ns,
            ctime_ns: key.ctime_ns,
            digest,
        })
        .collect();
    store.stat_cache_save(id, &records)
}
