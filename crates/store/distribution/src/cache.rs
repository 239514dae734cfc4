//! The build cache in a registry (`--cache-to type=registry` /
//! `--cache-from type=registry`).
//!
//! A cache export is an OCI image manifest whose config has the media type
//! [`CACHE_CONFIG_MEDIA_TYPE`] and whose `layers` list every layer blob the
//! entries reference (sorted by digest, each once), so the registry keeps
//! them and later exports skip (HEAD) or mount them. The config is canonical
//! JSON:
//!
//! ```json
//! {"entries":[{"diffId":"sha256:…","digest":"sha256:…","key":"sha256:…",
//!   "mediaType":"…","parent":"sha256:…"|null,"size":123,"uncompressedSize":456|null}],
//!  "keyVersion":"stowage-cache-v1","version":1}
//! ```
//!
//! `entries` are sorted by key; `parent` is the key of the layer below in the
//! same stage, when it has one. Importing reads the manifest and this config
//! only; each layer blob is downloaded later, one at a time, when a build
//! takes the hit that needs it ([`fetch_cache_layer`]). An ordinary image
//! works as a cache source too ([`CacheSource::Image`]): the caller reads the
//! keys it embeds in its config.

use serde::Deserialize;
use stowage_digest::Digest;
use stowage_image::{LayerInfo, Reference, canonical_json, media_types};
use stowage_registry::manifest::{BlobDescriptor, is_image_manifest, manifest_blobs};
use stowage_registry::{RegistryClient, Repository, TagOrDigest};
use stowage_store::Store;

use crate::error::{DistributionError, Result};
use crate::pull::{BoundedBuffer, MAX_CONFIG_SIZE, RemoteImage, resolve_remote};
use crate::push::{PushOptions, push_one};
use crate::records::Records;
use crate::{BlobKind, BlobOutcome, remote_target};

/// The media type of a cache export's config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.stowage.cache.config.v1+json";

/// The `version` field of the cache config this code writes and reads.
pub const CACHE_FORMAT_VERSION: u64 = 1;

/// One cached step: its key, the key of the step below it, and its layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The step's cache key.
    pub key: Digest,
    /// The key of the layer below it in its stage, if that layer has one.
    pub parent: Option<Digest>,
    /// The layer the step produced.
    pub layer: LayerInfo,
}

/// What a `--cache-from` reference turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheSource {
    /// A cache export made by [`push_cache`].
    Export {
        /// Where its blobs are.
        repository: Repository,
        /// The key version it was written with (only equal versions match).
        key_version: String,
        /// Its entries.
        entries: Vec<CacheEntry>,
    },
    /// An ordinary image (manifest and config only; no layer downloaded).
    Image {
        /// Where its blobs are.
        repository: Repository,
        /// The image.
        image: Box<RemoteImage>,
    },
}

/// What [`push_cache`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedCache {
    /// Where it went.
    pub reference: Reference,
    /// The digest of the cache manifest.
    pub manifest_digest: Digest,
    /// Entries exported.
    pub entries: usize,
    /// Each blob's outcome: the layers in manifest order, then the config.
    pub blobs: Vec<(Digest, BlobOutcome)>,
}

/// The canonical JSON of a cache config: entries sorted by key (the first of
/// equal keys wins).
pub fn encode_cache_config(key_version: &str, entries: &[CacheEntry]) -> Result<Vec<u8>> {
    let mut sorted: std::collections::BTreeMap<Digest, &CacheEntry> =
        std::collections::BTreeMap::new();
    for entry in entries {
        sorted.entry(entry.key).or_insert(entry);
    }
    let items: Vec<serde_json::Value> = sorted
        .values()
        .map(|entry| {
            serde_json::json!({
                "key": entry.key.to_string(),
                "parent": entry.parent.map(|p| p.to_string()),
                "digest": entry.layer.blob_digest.to_string(),
                "diffId": entry.layer.diff_id.to_string(),
                "mediaType": entry.layer.media_type,
                "size": entry.layer.compressed_size,
                "uncompressedSize": entry.layer.uncompressed_size,
            })
        })
        .collect();
    let document = serde_json::json!({
        "version": CACHE_FORMAT_VERSION,
        "keyVersion": key_version,
        "entries": items,
    });
    canonical_json(&document).map_err(|e| DistributionError::InvalidImage {
        reference: "cache config".to_owned(),
        detail: e.to_string(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCacheConfig {
    version: u64,
    key_version: String,
    entries: Vec<RawCacheEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCacheEntry {
    key: Digest,
    #[serde(default)]
    parent: Option<Digest>,
    digest: Digest,
    diff_id: Digest,
    media_type: String,
    size: u64,
    #[serde(default)]
    uncompressed_size: Option<u64>,
}

/// Parses a cache config and checks every entry against the manifest's layer
/// list (same digest, size and media type; a layer media type stowage handles).
/// Returns the key version and the entries.
pub fn decode_cache_config(
    what: &str,
    bytes: &[u8],
    layers: &[BlobDescriptor],
) -> Result<(String, Vec<CacheEntry>)> {
    let invalid = |detail: String| DistributionError::InvalidImage {
        reference: what.to_owned(),
        detail,
    };
    let raw: RawCacheConfig =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("cache config: {e}")))?;
    if raw.version != CACHE_FORMAT_VERSION {
        return Err(invalid(format!(
            "cache config version {} (this stowage reads version {CACHE_FORMAT_VERSION})",
            raw.version
        )));
    }
    let mut entries = Vec::with_capacity(raw.entries.len());
    for entry in raw.entries {
        let listed = layers.iter().any(|layer| {
            layer.digest == entry.digest
                && layer.size == entry.size
                && layer.media_type == entry.media_type
        });
        if !listed {
            return Err(invalid(format!(
                "cache entry {} names blob {} ({} bytes, {}), which the manifest does not list",
                entry.key, entry.digest, entry.size, entry.media_type
            )));
        }
        if !media_types::is_layer(&entry.media_type) {
            return Err(invalid(format!(
                "cache entry {} has unsupported layer media type {:?}",
                entry.key, entry.media_type
            )));
        }
        entries.push(CacheEntry {
            key: entry.key,
            parent: entry.parent,
            layer: LayerInfo {
                diff_id: entry.diff_id,
                blob_digest: entry.digest,
                media_type: entry.media_type,
                compressed_size: entry.size,
                uncompressed_size: entry.uncompressed_size,
            },
        });
    }
    Ok((raw.key_version, entries))
}

/// The manifest of a cache export: the config descriptor and every distinct
/// layer blob, sorted by digest. Canonical JSON.
pub fn encode_cache_manifest(config: &[u8], entries: &[CacheEntry]) -> Result<Vec<u8>> {
    let mut blobs: std::collections::BTreeMap<Digest, &LayerInfo> =
        std::collections::BTreeMap::new();
    for entry in entries {
        blobs.entry(entry.layer.blob_digest).or_insert(&entry.layer);
    }
    let layers: Vec<serde_json::Value> = blobs
        .values()
        .map(|layer| {
            serde_json::json!({
                "mediaType": layer.media_type,
                "digest": layer.blob_digest.to_string(),
                "size": layer.compressed_size,
            })
        })
        .collect();
    let document = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {
            "mediaType": CACHE_CONFIG_MEDIA_TYPE,
            "digest": Digest::of(config).to_string(),
            "size": config.len(),
        },
        "layers": layers,
    });
    canonical_json(&document).map_err(|e| DistributionError::InvalidImage {
        reference: "cache manifest".to_owned(),
        detail: e.to_string(),
    })
}

/// Exports `entries` to `reference`: every layer blob (HEAD skip, mount from a
/// repository known to hold it, else upload from the store), the config, then
/// the manifest under the reference's tag. Every blob must be in the store.
pub fn push_cache(
    store: &Store,
    client: &RegistryClient,
    reference: &Reference,
    key_version: &str,
    entries: &[CacheEntry],
    options: &PushOptions<'_>,
) -> Result<PushedCache> {
    let observer = options.observer;
    let _lease = store.lease()?;
    let records = Records::open(store)?;
    let (repository, target) = remote_target(reference)?;
    let config = encode_cache_config(key_version, entries)?;
    let manifest = encode_cache_manifest(&config, entries)?;
    let descriptors = manifest_blobs(&manifest, "cache manifest")?;

    let outcomes: std::sync::Mutex<Vec<(Digest, BlobOutcome)>> = std::sync::Mutex::new(Vec::new());
    crate::run_parallel(
        descriptors.layers.iter().collect(),
        options.parallel,
        |layer: &BlobDescriptor| {
            observer.blob_started(&layer.digest, layer.size, BlobKind::Layer);
            let source = stowage_registry::FileSource::new(store.blob_path(&layer.digest))?;
            let actual = stowage_registry::BlobSource::len(&source);
            if actual != layer.size {
                return Err(stowage_store::StoreError::SizeMismatch {
                    digest: layer.digest,
                    expected: layer.size,
                    actual,
                }
                .into());
            }
            let outcome = push_one(
                client,
                &records,
                &repository,
                &layer.digest,
                &source,
                options.mount,
                observer,
            )?;
            observer.blob_finished(&layer.digest, &outcome);
            outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((layer.digest, outcome));
            Ok(())
        },
    )?;
    let mut blobs = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    blobs.sort_by_key(|(digest, _)| *digest);

    let config_digest = Digest::of(&config);
    observer.blob_started(&config_digest, config.len() as u64, BlobKind::Config);
    let config_outcome = push_one(
        client,
        &records,
        &repository,
        &config_digest,
        &config,
        false,
        observer,
    )?;
    observer.blob_finished(&config_digest, &config_outcome);
    blobs.push((config_digest, config_outcome));

    let manifest_target = match (reference.tag(), &target) {
        (Some(tag), _) => TagOrDigest::Tag(tag.to_owned()),
        (None, target) => target.clone(),
    };
    let manifest_digest = client.put_manifest(
        &repository,
        &manifest_target,
        &manifest,
        media_types::OCI_MANIFEST,
    )?;
    let digests: Vec<Digest> = blobs.iter().map(|(digest, _)| *digest).collect();
    records.record_blobs(&repository.registry, &repository.repository, &digests)?;
    let mut sorted_keys: Vec<Digest> = entries.iter().map(|e| e.key).collect();
    sorted_keys.sort();
    sorted_keys.dedup();
    Ok(PushedCache {
        reference: reference.clone(),
        manifest_digest,
        entries: sorted_keys.len(),
        blobs,
    })
}

/// Reads a `--cache-from` reference: a cache export (manifest and config) or
/// an ordinary image (manifest and config, through an index to the native
/// platform). Downloads no layer.
pub fn fetch_cache_source(client: &RegistryClient, reference: &Reference) -> Result<CacheSource> {
    let (repository, target) = remote_target(reference)?;
    let manifest = client.get_manifest(&repository, &target)?;
    if is_image_manifest(&manifest.media_type) {
        let what = reference.to_string();
        let blobs = manifest_blobs(&manifest.bytes, &what)?;
        if blobs.config.media_type == CACHE_CONFIG_MEDIA_TYPE {
            if blobs.config.size > MAX_CONFIG_SIZE {
                return Err(DistributionError::InvalidImage {
                    reference: what,
                    detail: format!(
                        "cache config is {} bytes, more than the {MAX_CONFIG_SIZE}-byte limit",
                        blobs.config.size
                    ),
                });
            }
            let mut config = BoundedBuffer {
                bytes: Vec::new(),
                limit: MAX_CONFIG_SIZE,
            };
            client.fetch_blob(
                &repository,
                &blobs.config.digest,
                Some(blobs.config.size),
                &mut config,
                &stowage_registry::NoProgress,
            )?;
            let (key_version, entries) = decode_cache_config(&what, &config.bytes, &blobs.layers)?;
            return Ok(CacheSource::Export {
                repository,
                key_version,
                entries,
            });
        }
    }
    let image = resolve_remote(client, reference, None)?;
    Ok(CacheSource::Image {
        repository,
        image: Box::new(image),
    })
}

/// Downloads one layer of a cache source into the store (digest and size
/// verified by the store's blob writer; a bad download leaves nothing), and
/// records that `repository` holds it so pushes can mount it. Does nothing if
/// the store has the blob.
pub fn fetch_cache_layer(
    store: &Store,
    client: &RegistryClient,
    repository: &Repository,
    layer: &LayerInfo,
) -> Result<()> {
    if store.has_blob(&layer.blob_digest)
        && store.blob_size(&layer.blob_digest)? == layer.compressed_size
    {
        return Ok(());
    }
    let mut writer = store.blob_writer(Some(layer.blob_digest), Some(layer.compressed_size))?;
    client.fetch_blob(
        repository,
        &layer.blob_digest,
        Some(layer.compressed_size),
        &mut writer,
        &stowage_registry::NoProgress,
    )?;
    writer.commit()?;
    Records::open(store)?.record_blobs(
        &repository.registry,
        &repository.repository,
        &[layer.blob_digest],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, parent: Option<&str>) -> CacheEntry {
        CacheEntry {
            key: Digest::of(name.as_bytes()),
            parent: parent.map(|p| Digest::of(p.as_bytes())),
            layer: LayerInfo {
                diff_id: Digest::of(format!("diff {name}").as_bytes()),
                blob_digest: Digest::of(format!("blob {name}").as_bytes()),
                media_type: media_types::OCI_LAYER_GZIP.to_owned(),
                compressed_size: name.len() as u64,
                uncompressed_size: Some(100),
            },
        }
    }

    fn descriptors(manifest: &[u8]) -> Vec<BlobDescriptor> {
        manifest_blobs(manifest, "test").expect("manifest").layers
    }

    #[test]
    fn config_and_manifest_are_canonical_and_independent_of_entry_order() {
        let a = entry("a", None);
        let b = entry("bb", Some("a"));
        let one = encode_cache_config("v1", &[a.clone(), b.clone()]).expect("encode");
        let two = encode_cache_config("v1", &[b.clone(), a.clone()]).expect("encode");
        assert_eq!(one, two);
        let text = String::from_utf8(one.clone()).expect("utf8");
        assert!(text.starts_with("{\"entries\":[{\"diffId\":"), "{text}");
        assert!(
            text.ends_with(",\"keyVersion\":\"v1\",\"version\":1}"),
            "{text}"
        );
        let m1 = encode_cache_manifest(&one, &[a.clone(), b.clone()]).expect("manifest");
        let m2 = encode_cache_manifest(&two, &[b, a]).expect("manifest");
        assert_eq!(m1, m2);
        let blobs = manifest_blobs(&m1, "test").expect("parse");
        assert_eq!(blobs.config.media_type, CACHE_CONFIG_MEDIA_TYPE);
        assert_eq!(blobs.config.digest, Digest::of(&one));
        let mut digests: Vec<Digest> = blobs.layers.iter().map(|l| l.digest).collect();
        let sorted = {
            let mut d = digests.clone();
            d.sort();
            d
        };
        assert_eq!(digests, sorted);
        digests.dedup();
        assert_eq!(digests.len(), 2);
    }

    #[test]
    fn a_config_round_trips_and_shared_blobs_are_listed_once() {
        let a = entry("a", None);
        let mut b = entry("bb", Some("a"));
        b.layer = a.layer.clone();
        let config = encode_cache_config("v1", &[a.clone(), b.clone()]).expect("encode");
        let manifest = encode_cache_manifest(&config, &[a.clone(), b.clone()]).expect("manifest");
        let layers = descriptors(&manifest);
        assert_eq!(layers.len(), 1);
        let (version, mut decoded) = decode_cache_config("t", &config, &layers).expect("decode");
        assert_eq!(version, "v1");
        let mut expected = vec![a, b];
        expected.sort_by_key(|e| e.key);
        decoded.sort_by_key(|e| e.key);
        assert_eq!(decoded, expected);
    }

    #[test]
    fn entries_whose_blob_the_manifest_does_not_list_are_refused() {
        let a = entry("a", None);
        let config = encode_cache_config("v1", std::slice::from_ref(&a)).expect("encode");
        let error = decode_cache_config("t", &config, &[]).expect_err("must refuse");
        assert!(error.to_string().contains("does not list"), "{error}");
        let mut wrong_size = descriptors(
            &encode_cache_manifest(&config, std::slice::from_ref(&a)).expect("manifest"),
        );
        wrong_size[0].size += 1;
        assert!(decode_cache_config("t", &config, &wrong_size).is_err());
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let layers: Vec<BlobDescriptor> = Vec::new();
        let future = br#"{"entries":[],"keyVersion":"v1","version":2}"#;
        assert!(decode_cache_config("t", future, &layers).is_err());
        assert!(decode_cache_config("t", b"{", &layers).is_err());
        let ok = br#"{"entries":[],"keyVersion":"v1","version":1}"#;
        assert_eq!(
            decode_cache_config("t", ok, &layers).expect("empty").1,
            Vec::new()
        );
    }
}
