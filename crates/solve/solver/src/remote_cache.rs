//! Cache hits from elsewhere (`--cache-from`) and the entries a build can
//! export (`--cache-to`).
//!
//! A [`RemoteCache`] (implemented outside the solver, which does no network
//! I/O) lists the entries of a cache source — step key and layer — without
//! downloading any layer. [`RemoteHits`] holds those entries for one build;
//! when a step's key misses the local cache but matches an entry, the layer
//! blob is fetched then, verified, recorded in the local cache, and used. A
//! source that cannot be read, or a blob that cannot be fetched or does not
//! match its digest, gives a warning and the step is built instead.

use std::collections::BTreeMap;

use stowage_image::LayerInfo;
use stowage_store::{CacheRecord, Store};

use crate::cachekey::{CacheKey, MissReason};
use crate::progress::{Event, Progress};

/// One importable cache entry: a step key and the layer it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCacheEntry {
    /// The step's cache key.
    pub key: CacheKey,
    /// The layer (its blob may not be in the store yet).
    pub layer: LayerInfo,
}

/// Where `--cache-from` entries come from, and how their blobs are fetched.
pub trait RemoteCache: Sync {
    /// The entries of one `--cache-from` value, read without downloading any
    /// layer blob.
    fn entries(&self, store: &Store, source: &str) -> Result<Vec<RemoteCacheEntry>, String>;

    /// Puts the layer's blob into the store, verified against its digest and
    /// size (a blob that fails the check must not be left in the store).
    fn fetch_layer(&self, store: &Store, layer: &LayerInfo) -> Result<(), String>;
}

/// The `--cache-from` entries of one build, keyed by step key.
#[derive(Default)]
pub struct RemoteHits<'a> {
    source: Option<&'a dyn RemoteCache>,
    entries: BTreeMap<CacheKey, LayerInfo>,
}

impl<'a> RemoteHits<'a> {
    /// Reads every source; one that fails gives a warning and is skipped (as
    /// `docker build` does). The first source listing a key wins.
    pub fn load(
        store: &Store,
        remote: &'a dyn RemoteCache,
        sources: &[String],
        progress: &dyn Progress,
    ) -> Self {
        let mut entries = BTreeMap::new();
        for source in sources {
            match remote.entries(store, source) {
                Ok(found) => {
                    for entry in found {
                        entries.entry(entry.key).or_insert(entry.layer);
                    }
                }
                Err(detail) => {
                    let text = format!(
                        "--cache-from {source}: {detail}; building without this cache source"
                    );
                    progress.event(Event::Warning(&text));
                }
            }
        }
        RemoteHits {
            source: Some(remote),
            entries,
        }
    }

    /// How many entries the sources listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the sources listed no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes the hit for `key` if a source lists it: fetches the blob unless
    /// the store has it intact, records it in the local cache, and returns the
    /// layer. `None` when no source lists the key; `Some(Err)` when one does
    /// but its blob could not be had (the step must be built).
    pub fn take(
        &self,
        store: &Store,
        key: &CacheKey,
        progress: &dyn Progress,
    ) -> Result<Option<Result<LayerInfo, MissReason>>, stowage_store::StoreError> {
        let (Some(source), Some(layer)) = (self.source, self.entries.get(key)) else {
            return Ok(None);
        };
        let intact = store
            .blob_trusted(&layer.blob_digest, layer.compressed_size)
            .unwrap_or(false);
        let fetched = if intact {
            Ok(())
        } else {
            source.fetch_layer(store, layer).and_then(|()| {
                // Hashes the blob again unless the store has already verified
                // this very file; a damaged copy already there stays unused.
                match store.blob_trusted(&layer.blob_digest, layer.compressed_size) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("the stored blob does not match its digest".to_owned()),
                    Err(error) => Err(error.to_string()),
                }
            })
        };
        if let Err(detail) = fetched {
            let text = format!(
                "--cache-from: cannot use layer {} for cache key {key}: {detail}; building the step",
                layer.blob_digest
            );
            progress.event(Event::Warning(&text));
            return Ok(Some(Err(MissReason::CachedLayerUnusable {
                detail: format!(
                    "the cache source's blob {} could not be fetched intact",
                    layer.blob_digest
                ),
            })));
        }
        store.cache_put(&CacheRecord {
            key: *key,
            kind: "imported".to_owned(),
            layer: Some(layer.clone()),
            inputs: "{}".to_owned(),
            last_used_unix: 0,
        })?;
        Ok(Some(Ok(layer.clone())))
    }
}

/// One exportable cache entry: a built stage's keyed layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    /// The step's key.
    pub key: CacheKey,
    /// The key of the layer below it, when that layer has one.
    pub parent: Option<CacheKey>,
    /// The layer.
    pub layer: LayerInfo,
}

/// The entries a build can export: per built stage, its keyed layers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheExport {
    /// The target stage's keyed layers (`mode=min`).
    pub target: Vec<ExportEntry>,
    /// Every built stage's keyed layers, the target's included (`mode=max`),
    /// deduplicated by key and sorted by it.
    pub all: Vec<ExportEntry>,
}

/// The keyed layers of a stage: `layers` and `keys` run in parallel (keys of
/// base-image layers may be unknown and are skipped).
pub fn stage_entries(layers: &[LayerInfo], keys: &[Option<CacheKey>]) -> Vec<ExportEntry> {
    let mut parent = None;
    let mut entries = Vec::new();
    for (layer, key) in layers.iter().zip(keys) {
        if let Some(key) = key {
            entries.push(ExportEntry {
                key: *key,
                parent,
                layer: layer.clone(),
            });
        }
        parent = *key;
    }
    entries
}

impl CacheExport {
    /// Collects the target's entries and every stage's.
    pub fn collect(
        target: Vec<ExportEntry>,
        stages: impl IntoIterator<Item = Vec<ExportEntry>>,
    ) -> Self {
        let mut all: BTreeMap<CacheKey, ExportEntry> = BTreeMap::new();
        for entry in stages.into_iter().flatten().chain(target.iter().cloned()) {
            all.entry(entry.key).or_insert(entry);
        }
        CacheExport {
            target,
            all: all.into_values().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_digest::Digest;

    fn layer(name: &str) -> LayerInfo {
        LayerInfo {
            diff_id: Digest::of(format!("diff {name}").as_bytes()),
            blob_digest: Digest::of(format!("blob {name}").as_bytes()),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
            compressed_size: 1,
            uncompressed_size: None,
        }
    }

    /// Serves blobs from memory; counts fetches.
    struct MemoryCache {
        blobs: BTreeMap<Digest, Vec<u8>>,
        entries: Vec<RemoteCacheEntry>,
        fetches: std::sync::Mutex<Vec<Digest>>,
    }

    impl RemoteCache for MemoryCache {
        fn entries(&self, _store: &Store, source: &str) -> Result<Vec<RemoteCacheEntry>, String> {
            match source {
                "good" => Ok(self.entries.clone()),
                _ => Err("registry down".to_owned()),
            }
        }

        fn fetch_layer(&self, store: &Store, layer: &LayerInfo) -> Result<(), String> {
            self.fetches.lock().unwrap().push(layer.blob_digest);
            let bytes = self.blobs.get(&layer.blob_digest).ok_or("no such blob")?;
            let mut writer = store
                .blob_writer(Some(layer.blob_digest), Some(layer.compressed_size))
                .map_err(|e| e.to_string())?;
            std::io::Write::write_all(&mut writer, bytes).map_err(|e| e.to_string())?;
            writer.commit().map(|_| ()).map_err(|e| e.to_string())
        }
    }

    struct Warnings(std::sync::Mutex<Vec<String>>);

    impl Progress for Warnings {
        fn event(&self, event: Event<'_>) {
            if let Event::Warning(text) = event {
                self.0.lock().unwrap().push(text.to_owned());
            }
        }
    }

    fn blob_layer(bytes: &[u8]) -> LayerInfo {
        LayerInfo {
            diff_id: Digest::of(b"diff"),
            blob_digest: Digest::of(bytes),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_owned(),
            compressed_size: bytes.len() as u64,
            uncompressed_size: None,
        }
    }

    #[test]
    fn hits_fetch_their_blob_once_and_only_when_taken() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (taken, never) = (b"taken layer".to_vec(), b"never taken".to_vec());
        let (key_taken, key_never) = (Digest::of(b"k1"), Digest::of(b"k2"));
        let remote = MemoryCache {
            blobs: BTreeMap::from([
                (Digest::of(&taken), taken.clone()),
                (Digest::of(&never), never.clone()),
            ]),
            entries: vec![
                RemoteCacheEntry {
                    key: key_taken,
                    layer: blob_layer(&taken),
                },
                RemoteCacheEntry {
                    key: key_never,
                    layer: blob_layer(&never),
                },
            ],
            fetches: std::sync::Mutex::new(Vec::new()),
        };
        let warnings = Warnings(std::sync::Mutex::new(Vec::new()));
        let hits = RemoteHits::load(
            &store,
            &remote,
            &["down".to_owned(), "good".to_owned()],
            &warnings,
        );
        assert_eq!(hits.len(), 2);
        assert_eq!(warnings.0.lock().unwrap().len(), 1, "the down source warns");
        assert!(
            remote.fetches.lock().unwrap().is_empty(),
            "loading fetches nothing"
        );

        let layer = hits.take(&store, &key_taken, &warnings).unwrap();
        assert_eq!(layer, Some(Ok(blob_layer(&taken))));
        assert!(store.has_blob(&Digest::of(&taken)));
        assert!(!store.has_blob(&Digest::of(&never)));
        assert!(store.cache_get(&key_taken).unwrap().is_some());
        // Taken again: the blob is there, nothing is fetched.
        hits.take(&store, &key_taken, &warnings).unwrap();
        assert_eq!(*remote.fetches.lock().unwrap(), vec![Digest::of(&taken)]);
        assert_eq!(
            hits.take(&store, &Digest::of(b"unknown"), &warnings)
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_blob_that_does_not_verify_is_a_miss_never_a_hit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = b"the real layer".to_vec();
        let key = Digest::of(b"k");
        // The source serves other bytes under the digest.
        let remote = MemoryCache {
            blobs: BTreeMap::from([(Digest::of(&good), b"something else".to_vec())]),
            entries: vec![RemoteCacheEntry {
                key,
                layer: blob_layer(&good),
            }],
            fetches: std::sync::Mutex::new(Vec::new()),
        };
        let warnings = Warnings(std::sync::Mutex::new(Vec::new()));
        let hits = RemoteHits::load(&store, &remote, &["good".to_owned()], &warnings);
        let taken = hits.take(&store, &key, &warnings).unwrap();
        assert!(matches!(
            taken,
            Some(Err(MissReason::CachedLayerUnusable { .. }))
        ));
        assert!(!store.has_blob(&Digest::of(&good)));
        assert!(store.cache_get(&key).unwrap().is_none());
        assert_eq!(warnings.0.lock().unwrap().len(), 1);

        // A damaged copy already in the store (same size) stays unused even
        // when the source serves the right bytes (the store keeps the copy
        // it has, so the blob is checked again after the fetch).
        let path = store.blob_path(&Digest::of(&good));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"the fake layer").unwrap();
        let honest = MemoryCache {
            blobs: BTreeMap::from([(Digest::of(&good), good.clone())]),
            entries: remote.entries.clone(),
            fetches: std::sync::Mutex::new(Vec::new()),
        };
        let hits = RemoteHits::load(&store, &honest, &["good".to_owned()], &warnings);
        let taken = hits.take(&store, &key, &warnings).unwrap();
        assert_eq!(honest.fetches.lock().unwrap().len(), 1);
        assert!(matches!(
            taken,
            Some(Err(MissReason::CachedLayerUnusable { .. }))
        ));
        assert!(store.cache_get(&key).unwrap().is_none());
    }

    #[test]
    fn stage_entries_skip_unkeyed_layers_and_chain_parents() {
        let k = |s: &str| Digest::of(s.as_bytes());
        let entries = stage_entries(
            &[layer("base"), layer("a"), layer("b")],
            &[None, Some(k("a")), Some(k("b"))],
        );
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].parent, None);
        assert_eq!(entries[0].key, k("a"));
        assert_eq!(entries[1].parent, Some(k("a")));
    }

    #[test]
    fn the_export_keeps_the_target_apart_and_deduplicates_all() {
        let k = |s: &str| Digest::of(s.as_bytes());
        let target = stage_entries(&[layer("a"), layer("t")], &[Some(k("a")), Some(k("t"))]);
        let builder = stage_entries(&[layer("a"), layer("x")], &[Some(k("a")), Some(k("x"))]);
        let export = CacheExport::collect(target.clone(), [builder]);
        assert_eq!(export.target, target);
        let keys: Vec<Digest> = export.all.iter().map(|e| e.key).collect();
        let mut expected = vec![k("a"), k("t"), k("x")];
        expected.sort();
        assert_eq!(keys, expected);
    }
}
