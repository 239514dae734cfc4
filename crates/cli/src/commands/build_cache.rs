//! `stowage build`'s shared cache: the solver's [`RemoteCache`] over local
//! images and registries (`--cache-from`), and the export of a build's keyed
//! layers to a registry (`--cache-to`).
//!
//! Reading a source costs its manifest and config; each layer blob is
//! downloaded only when the build takes the hit that needs it. The registry
//! repository each blob came from is remembered here for that download.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use stowage_digest::Digest;
use stowage_distribution::cache::{
    CacheEntry, CacheSource, PushedCache, fetch_cache_layer, fetch_cache_source, push_cache,
};
use stowage_image::{LayerInfo, Reference};
use stowage_registry::{RegistryClient, Repository};
use stowage_solver::build::embedded_cache_keys;
use stowage_solver::cachekey::CACHE_KEY_VERSION;
use stowage_solver::remote_cache::{CacheExport, RemoteCache, RemoteCacheEntry};
use stowage_store::Store;

use crate::Globals;
use crate::commands::cache_spec::{CacheFromSpec, CacheMode, CacheToSpec, parse_cache_from};

/// `--cache-from` sources: local images, registry images and registry cache
/// exports.
pub struct RegistryCache<'a> {
    globals: &'a Globals,
    /// Where each remote blob can be downloaded from.
    blob_sources: Mutex<BTreeMap<Digest, Repository>>,
    /// One client per registry, so tokens are reused across blobs.
    clients: Mutex<BTreeMap<String, Arc<RegistryClient>>>,
}

impl<'a> RegistryCache<'a> {
    /// No source read yet.
    pub fn new(globals: &'a Globals) -> Self {
        RegistryCache {
            globals,
            blob_sources: Mutex::new(BTreeMap::new()),
            clients: Mutex::new(BTreeMap::new()),
        }
    }

    fn client(&self, registry: &str) -> Arc<RegistryClient> {
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(registry.to_owned())
            .or_insert_with(|| {
                Arc::new(crate::commands::registry::client_for(
                    self.globals,
                    registry,
                ))
            })
            .clone()
    }

    fn remember(&self, repository: &Repository, layers: &[LayerInfo]) {
        let mut sources = self
            .blob_sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for layer in layers {
            sources
                .entry(layer.blob_digest)
                .or_insert_with(|| repository.clone());
        }
    }

    fn remote_entries(&self, reference: &str) -> Result<Vec<RemoteCacheEntry>, String> {
        let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
        let client = self.client(parsed.domain());
        match fetch_cache_source(&client, &parsed).map_err(|e| e.to_string())? {
            CacheSource::Export {
                repository,
                key_version,
                entries,
            } => {
                if key_version != CACHE_KEY_VERSION {
                    return Err(format!(
                        "the cache was written with cache keys {key_version:?}; this stowage uses {CACHE_KEY_VERSION:?}"
                    ));
                }
                let layers: Vec<LayerInfo> = entries.iter().map(|e| e.layer.clone()).collect();
                self.remember(&repository, &layers);
                Ok(entries
                    .into_iter()
                    .map(|entry| RemoteCacheEntry {
                        key: entry.key,
                        layer: entry.layer,
                    })
                    .collect())
            }
            CacheSource::Image { repository, image } => {
                let layers = stowage_distribution::remote_layers(
                    &image.manifest,
                    &image.config.rootfs.diff_ids,
                );
                self.remember(&repository, &layers);
                Ok(keyed(&image.config, layers))
            }
        }
    }
}

/// An image's layers with the keys its config embeds.
fn keyed(config: &stowage_image::ImageConfig, layers: Vec<LayerInfo>) -> Vec<RemoteCacheEntry> {
    embedded_cache_keys(config, layers.len())
        .into_iter()
        .zip(layers)
        .filter_map(|(key, layer)| key.map(|key| RemoteCacheEntry { key, layer }))
        .collect()
}

impl RemoteCache for RegistryCache<'_> {
    fn entries(&self, store: &Store, source: &str) -> Result<Vec<RemoteCacheEntry>, String> {
        match parse_cache_from(source).map_err(|e| e.to_string())? {
            CacheFromSpec::Image(reference) => match store.image(&reference) {
                Ok(details) => Ok(keyed(&details.config, details.layers)),
                Err(_) => self.remote_entries(&reference),
            },
            CacheFromSpec::Registry(reference) => self.remote_entries(&reference),
        }
    }

    fn fetch_layer(&self, store: &Store, layer: &LayerInfo) -> Result<(), String> {
        let repository = self
            .blob_sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&layer.blob_digest)
            .cloned()
            .ok_or_else(|| format!("no cache source holds blob {}", layer.blob_digest))?;
        let client = self.client(&repository.registry);
        fetch_cache_layer(store, &client, &repository, layer).map_err(|e| e.to_string())
    }
}

/// Exports a build's cache per one `--cache-to` value; `None` for
/// `type=inline` (nothing to do).
pub fn export(
    store: &Store,
    globals: &Globals,
    spec: &CacheToSpec,
    export: &CacheExport,
) -> anyhow::Result<Option<PushedCache>> {
    let CacheToSpec::Registry {
        reference, mode, ..
    } = spec
    else {
        return Ok(None);
    };
    let parsed = Reference::parse(reference)
        .with_context(|| format!("invalid --cache-to reference {reference:?}"))?;
    let chosen = match mode {
        CacheMode::Min => &export.target,
        CacheMode::Max => &export.all,
    };
    let entries: Vec<CacheEntry> = chosen
        .iter()
        .map(|entry| CacheEntry {
            key: entry.key,
            parent: entry.parent,
            layer: entry.layer.clone(),
        })
        .collect();
    let client = crate::commands::registry::client_for(globals, parsed.domain());
    let pushed = push_cache(
        store,
        &client,
        &parsed,
        CACHE_KEY_VERSION,
        &entries,
        &stowage_distribution::PushOptions::default(),
    )
    .with_context(|| format!("exporting the build cache to {}", parsed.familiar()))?;
    Ok(Some(pushed))
}
