//! Content digests of files in the store's unpacked layer trees, remembered between
//! builds. `COPY --from=<stage|image>` keys on the content of what it copies; those trees
//! never change once unpacked, so a file whose stat (device, inode, size, mtime, ctime) is
//! the one recorded is not read again. Each layer tree has its own record set in the
//! store's stat cache (`unpacked:<layer dir>`), loaded the first time a build reads from it.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use stowage_context::{StatCache, StatKey};

use crate::stat_records::{load_stat_cache, save_stat_cache};
use stowage_digest::Digest;
use stowage_store::Store;

use crate::error::StepError;

/// The per-build view of the remembered digests.
pub struct UnpackedDigests<'s> {
    store: &'s Store,
    /// Layer directory name → its records (loaded on first use).
    layers: Mutex<BTreeMap<String, StatCache>>,
}

impl std::fmt::Debug for UnpackedDigests<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnpackedDigests").finish_non_exhaustive()
    }
}

fn cache_id(layer: &str) -> String {
    format!("unpacked:{layer}")
}

impl<'s> UnpackedDigests<'s> {
    /// Nothing loaded yet.
    pub fn new(store: &'s Store) -> Self {
        Self {
            store,
            layers: Mutex::new(BTreeMap::new()),
        }
    }

    /// The sha256 of the regular file at `disk` (stat-ed as `meta`), from the records when
    /// its stat is unchanged, else read and remembered. Files outside the store's layer
    /// trees are always read.
    pub fn digest(&self, disk: &Path, meta: &Metadata) -> Result<Digest, StepError> {
        let Some((layer, within)) = self.split(disk) else {
            return stowage_context::hash_file(disk, meta.len()).map_err(StepError::Context);
        };
        let key = StatKey::from_metadata(meta);
        {
            let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
            if !layers.contains_key(&layer) {
                let cache = load_stat_cache(self.store, &cache_id(&layer))?;
                layers.insert(layer.clone(), cache);
            }
            if let Some(digest) = layers
                .get_mut(&layer)
                .and_then(|cache| cache.lookup(&within, &key))
            {
                return Ok(digest);
            }
        }
        let digest = stowage_context::hash_file(disk, meta.len()).map_err(StepError::Context)?;
        let mut layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cache) = layers.get_mut(&layer) {
            cache.insert(within, key, digest);
        }
        Ok(digest)
    }

    /// `(layer directory name, path within it)` when `disk` is inside a layer tree.
    fn split(&self, disk: &Path) -> Option<(String, String)> {
        let rest = disk.strip_prefix(self.store.layers_dir()).ok()?;
        let mut components = rest.components();
        let layer = components.next()?.as_os_str().to_str()?.to_owned();
        let within: PathBuf = components.collect();
        let within = within.to_str()?.to_owned();
        (!within.is_empty()).then_some((layer, within))
    }

    /// Saves the record sets that gained entries.
    pub fn save(&self) -> Result<(), stowage_store::StoreError> {
        let layers = self.layers.lock().unwrap_or_else(|p| p.into_inner());
        for (layer, cache) in layers.iter() {
            save_stat_cache(self.store, &cache_id(layer), cache)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_remembered_per_layer_and_a_changed_file_is_read_again() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let layer = store.layers_dir().join("0123abcd");
        std::fs::create_dir_all(layer.join("usr/lib")).unwrap();
        let file = layer.join("usr/lib/module.py");
        std::fs::write(&file, "print('one')\n").unwrap();
        let meta = std::fs::symlink_metadata(&file).unwrap();

        let first = UnpackedDigests::new(&store);
        let digest = first.digest(&file, &meta).unwrap();
        assert_eq!(digest, Digest::of(b"print('one')\n"));
        first.save().unwrap();
        let records = store.stat_cache_load("unpacked:0123abcd").unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].path, "usr/lib/module.py");

        // A later build finds it without reading: a record whose digest we forge proves the
        // file was not hashed again while its stat is unchanged.
        let mut forged = records.clone();
        forged[0].digest = Digest::of(b"forged");
        store.stat_cache_save("unpacked:0123abcd", &forged).unwrap();
        let second = UnpackedDigests::new(&store);
        assert_eq!(second.digest(&file, &meta).unwrap(), Digest::of(b"forged"));

        // A changed stat (here: the content, so size and ctime) means reading it again.
        std::fs::write(&file, "print('two, longer')\n").unwrap();
        let meta = std::fs::symlink_metadata(&file).unwrap();
        assert_eq!(
            second.digest(&file, &meta).unwrap(),
            Digest::of(b"print('two, longer')\n")
        );

        // Outside the layer trees: always read.
        let outside = root.path().join("elsewhere.txt");
        std::fs::write(&outside, "x").unwrap();
        let meta = std::fs::symlink_metadata(&outside).unwrap();
        assert_eq!(second.digest(&outside, &meta).unwrap(), Digest::of(b"x"));
    }
}
