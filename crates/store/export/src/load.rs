//! `load`: a docker-archive or OCI archive into the store, all-or-nothing.
//!
//! 1. The archive (spooled to `<root>/tmp` first when it comes from a stream or is itself
//!    compressed, as `docker load` accepts `docker save | gzip`) is indexed without reading
//!    the data ([`ArchiveIndex`]); every entry used must lie inside the file (a truncated
//!    archive is caught here).
//! 2. `manifest.json` (docker-archive, preferred when both exist) or `index.json` (OCI
//!    layout) is read; configs and manifests are verified against the digests their names
//!    or descriptors give and parsed; tags are parsed.
//! 3. Each layer is streamed once: decompressed, validated entry by entry
//!    ([`crate::layer_scan`]), hashed (must equal the config's diff_id) and, for a
//!    docker-archive, recompressed into an uncommitted blob temp file. OCI layer blobs are
//!    validated, then copied verbatim (digest checked against the descriptor).
//! 4. Only when every layer of every image passed are the blobs committed, then the images.
//!    Any failure before that drops the temp files: nothing is left behind.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use serde::Deserialize;
use stowage_archive::{
    ArchiveIndex, CompressingWriter, Compression, DetectedCompression, IndexedEntryKind,
    decompressing_reader, default_compression_threads, detect_compression,
};
use stowage_digest::{Digest, HashingWriter};
use stowage_image::{
    Descriptor, ImageConfig, ImageId, ImageIndex, ImageManifest, LayerInfo, ParsedManifest,
    Platform, Reference, media_types,
};
use stowage_store::{BlobWriter, ImageCommit, Store};

use crate::error::{ExportError, Result, io_err};
use crate::layer_scan::{EntryPolicy, LayerScan, scan_layer};
use crate::{ANNOTATION_CONTAINERD_NAME, DEFAULT_COMPRESSION, MAX_JSON_SIZE};

/// How [`load`] stores what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Compression of the blobs made from docker-archive layers (OCI blobs are kept as
    /// they are).
    pub compression: Compression,
    /// What layers may contain.
    pub policy: EntryPolicy,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            compression: DEFAULT_COMPRESSION,
            policy: EntryPolicy::default(),
        }
    }
}

/// One image [`load`] committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// Image ID (config digest).
    pub id: ImageId,
    /// The stored manifest's digest.
    pub manifest_digest: Digest,
    /// Tags pointed at it (empty for an untagged image).
    pub tags: Vec<Reference>,
}

/// Loads the archive at `path`.
pub fn load(store: &Store, path: &Path, options: &LoadOptions) -> Result<Vec<LoadedImage>> {
    let _lease = store.lease()?;
    let mut file = File::open(path).map_err(io_err("opening archive", path))?;
    let mut prefix = [0u8; 6];
    let read = read_prefix(&mut file, &mut prefix).map_err(io_err("reading archive", path))?;
    if detect_compression(prefix.get(..read).unwrap_or_default()) == DetectedCompression::None {
        return load_plain(store, path, &path.display().to_string(), options);
    }
    let file = File::open(path).map_err(io_err("opening archive", path))?;
    load_spooled(store, file, &path.display().to_string(), options)
}

/// Loads an archive read from a stream (standard input): it is first copied to a temp file
/// in the store (decompressed if it is compressed), because the layers are read after the
/// manifest, which comes last in most archives.
pub fn load_reader<R: Read + Send>(
    store: &Store,
    reader: R,
    options: &LoadOptions,
) -> Result<Vec<LoadedImage>> {
    let _lease = store.lease()?;
    load_spooled(store, reader, "<stdin>", options)
}

fn read_prefix(file: &mut File, prefix: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < prefix.len() {
        let read = file.read(prefix.get_mut(filled..).unwrap_or_default())?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

fn load_spooled<R: Read + Send>(
    store: &Store,
    reader: R,
    name: &str,
    options: &LoadOptions,
) -> Result<Vec<LoadedImage>> {
    let mut spool = tempfile::Builder::new()
        .prefix("load-")
        .tempfile_in(store.tmp_dir())
        .map_err(io_err("creating temp file in", store.tmp_dir()))?;
    let (_, mut plain) = decompressing_reader(reader).map_err(io_err("reading archive", name))?;
    io::copy(&mut plain, spool.as_file_mut()).map_err(io_err("reading archive", name))?;
    load_plain(store, spool.path(), name, options)
}

/// `manifest.json` of a docker-archive.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

/// An image whose files have been checked, waiting for its layers.
struct PlannedImage {
    config: Vec<u8>,
    /// Verbatim manifest for OCI archives; `None` to build a Docker one.
    manifest: Option<(Vec<u8>, ImageManifest)>,
    layers: Vec<PlannedLayer>,
    tags: Vec<Reference>,
}

#[derive(Clone)]
struct PlannedLayer {
    /// Archive entry holding the layer.
    entry: String,
    diff_id: Digest,
    /// For OCI blobs: the descriptor the blob must match.
    descriptor: Option<Descriptor>,
}

/// A layer that passed, with its blob waiting to be committed (if not already stored).
struct ReadyLayer {
    info: LayerInfo,
    pending: Option<BlobWriter>,
}

struct Loader<'a> {
    store: &'a Store,
    index: ArchiveIndex,
    file_len: u64,
    name: String,
    options: LoadOptions,
}

fn load_plain(
    store: &Store,
    path: &Path,
    name: &str,
    options: &LoadOptions,
) -> Result<Vec<LoadedImage>> {
    let file_len = std::fs::metadata(path)
        .map_err(io_err("reading archive", path))?
        .len();
    let index = ArchiveIndex::build(path)?;
    let loader = Loader {
        store,
        index,
        file_len,
        name: name.to_owned(),
        options: *options,
    };
    let planned = if loader.index.get("manifest.json").is_some() {
        loader.plan_docker()?
    } else if loader.index.get("index.json").is_some() {
        loader.plan_oci()?
    } else {
        return Err(loader.invalid(
            "neither manifest.json nor index.json found: not a docker-archive or OCI archive (or it is truncated)"
                .to_owned(),
        ));
    };
    loader.run(planned)
}

impl Loader<'_> {
    fn invalid(&self, message: String) -> ExportError {
        ExportError::InvalidArchive {
            archive: self.name.clone(),
            message,
        }
    }

    /// Checks that `entry` exists as a file (after links) lying wholly inside the archive.
    fn check_entry(&self, entry: &str) -> Result<()> {
        let (resolved, indexed) = self.index.resolve_file(entry).map_err(|e| {
            self.invalid(format!(
                "{e} (the manifest refers to a file that is missing)"
            ))
        })?;
        if indexed.kind != IndexedEntryKind::File
            || indexed.offset.saturating_add(indexed.size) > self.file_len
        {
            return Err(self.invalid(format!(
                "entry {resolved:?} extends past the end of the archive: the archive is truncated"
            )));
        }
        Ok(())
    }

    fn read_json_file(&self, entry: &str) -> Result<Vec<u8>> {
        self.check_entry(entry)?;
        Ok(self.index.read_small(entry, MAX_JSON_SIZE)?)
    }

    fn plan_docker(&self) -> Result<Vec<PlannedImage>> {
        let bytes = self.read_json_file("manifest.json")?;
        let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("manifest.json: {e}")))?;
        if entries.is_empty() {
            return Err(self.invalid("manifest.json lists no image".to_owned()));
        }
        let mut planned = Vec::new();
        for entry in entries {
            let config = self.read_json_file(&entry.config)?;
            if let Some(expected) = digest_from_name(&entry.config) {
                let actual = Digest::of(&config);
                if actual != expected {
                    return Err(ExportError::DigestMismatch {
                        what: format!("config {} in {}", entry.config, self.name),
                        expected,
                        actual,
                    });
                }
            }
            let parsed = ImageConfig::from_slice(&config)
                .map_err(|e| self.invalid(format!("config {}: {e}", entry.config)))?;
            if parsed.rootfs.diff_ids.len() != entry.layers.len() {
                return Err(self.invalid(format!(
                    "config {} lists {} diff_ids but manifest.json lists {} layers",
                    entry.config,
                    parsed.rootfs.diff_ids.len(),
                    entry.layers.len()
                )));
            }
            let mut layers = Vec::new();
            for (layer, diff_id) in entry.layers.iter().zip(&parsed.rootfs.diff_ids) {
                self.check_entry(layer)?;
                layers.push(PlannedLayer {
                    entry: layer.clone(),
                    diff_id: *diff_id,
                    descriptor: None,
                });
            }
            let tags = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| parse_tag(t))
                .collect::<Result<Vec<_>>>()?;
            planned.push(PlannedImage {
                config,
                manifest: None,
                layers,
                tags,
            });
        }
        Ok(planned)
    }

    /// Reads a blob of an OCI layout, verified against its descriptor.
    fn read_blob(&self, descriptor: &Descriptor, what: &str) -> Result<Vec<u8>> {
        let bytes = self.read_json_file(&blob_entry(&descriptor.digest))?;
        let actual = Digest::of(&bytes);
        if actual != descriptor.digest || bytes.len() as u64 != descriptor.size {
            return Err(ExportError::DigestMismatch {
                what: format!(
                    "{what} in {} ({} bytes, descriptor says {})",
                    self.name,
                    bytes.len(),
                    descriptor.size
                ),
                expected: descriptor.digest,
                actual,
            });
        }
        Ok(bytes)
    }

    fn plan_oci(&self) -> Result<Vec<PlannedImage>> {
        let bytes = self.read_json_file("index.json")?;
        let index: ImageIndex =
            serde_json::from_slice(&bytes).map_err(|e| self.invalid(format!("index.json: {e}")))?;
        // Entries pointing at one manifest are merged (one per tag).
        let mut by_manifest: BTreeMap<Digest, (Descriptor, Vec<Reference>)> = BTreeMap::new();
        let mut order = Vec::new();
        for descriptor in &index.manifests {
            let tag = self.tag_of(descriptor)?;
            let manifest_descriptor = if media_types::is_index(&descriptor.media_type) {
                let nested: ImageIndex =
                    serde_json::from_slice(&self.read_blob(descriptor, "index")?)
                        .map_err(|e| self.invalid(format!("index {}: {e}", descriptor.digest)))?;
                nested
                    .find_platform(&Platform::native())
                    .or_else(|| nested.manifests.first())
                    .cloned()
                    .ok_or_else(|| {
                        self.invalid(format!("index {} lists no manifest", descriptor.digest))
                    })?
            } else {
                descriptor.clone()
            };
            let slot = by_manifest
                .entry(manifest_descriptor.digest)
                .or_insert_with(|| {
                    order.push(manifest_descriptor.digest);
                    (manifest_descriptor.clone(), Vec::new())
                });
            if let Some(tag) = tag
                && !slot.1.contains(&tag)
            {
                slot.1.push(tag);
            }
        }
        if order.is_empty() {
            return Err(self.invalid("index.json lists no image".to_owned()));
        }
        let mut planned = Vec::new();
        for digest in order {
            let Some((descriptor, tags)) = by_manifest.remove(&digest) else {
                continue;
            };
            let manifest_bytes = self.read_blob(&descriptor, "manifest")?;
            let manifest = match ParsedManifest::parse(&manifest_bytes, None)
                .map_err(|e| self.invalid(format!("manifest {digest}: {e}")))?
            {
                ParsedManifest::Image(manifest) => manifest,
                ParsedManifest::Index(_) => {
                    return Err(self.invalid(format!("{digest}: nested indexes are not supported")));
                }
            };
            let config = self.read_blob(&manifest.config, "config")?;
            let parsed = ImageConfig::from_slice(&config)
                .map_err(|e| self.invalid(format!("config {}: {e}", manifest.config.digest)))?;
            if parsed.rootfs.diff_ids.len() != manifest.layers.len() {
                return Err(self.invalid(format!(
                    "config {} lists {} diff_ids but manifest {digest} has {} layers",
                    manifest.config.digest,
                    parsed.rootfs.diff_ids.len(),
                    manifest.layers.len()
                )));
            }
            let mut layers = Vec::new();
            for (layer, diff_id) in manifest.layers.iter().zip(&parsed.rootfs.diff_ids) {
                let entry = blob_entry(&layer.digest);
                self.check_entry(&entry)?;
                layers.push(PlannedLayer {
                    entry,
                    diff_id: *diff_id,
                    descriptor: Some(layer.clone()),
                });
            }
            planned.push(PlannedImage {
                config,
                manifest: Some((manifest_bytes, manifest)),
                layers,
                tags,
            });
        }
        Ok(planned)
    }

    /// The tag an index entry carries: the containerd name, else a ref.name that is a full
    /// reference (a bare tag such as `latest` names no repository and is ignored).
    fn tag_of(&self, descriptor: &Descriptor) -> Result<Option<Reference>> {
        if let Some(name) = descriptor.annotation(ANNOTATION_CONTAINERD_NAME) {
            return parse_tag(name).map(Some);
        }
        match descriptor.annotation(media_types::ANNOTATION_REF_NAME) {
            Some(name) if name.contains(':') || name.contains('/') => parse_tag(name).map(Some),
            _ => Ok(None),
        }
    }

    fn run(&self, planned: Vec<PlannedImage>) -> Result<Vec<LoadedImage>> {
        let mut ready: BTreeMap<String, ReadyLayer> = BTreeMap::new();
        for image in &planned {
            for layer in &image.layers {
                if let Some(existing) = ready.get(&layer.entry) {
                    if existing.info.diff_id != layer.diff_id {
                        return Err(ExportError::DiffIdMismatch {
                            layer: layer.entry.clone(),
                            expected: layer.diff_id,
                            actual: existing.info.diff_id,
                        });
                    }
                    continue;
                }
                let done = match &layer.descriptor {
                    None => self.recompress_layer(layer)?,
                    Some(descriptor) => self.copy_oci_layer(layer, descriptor)?,
                };
                ready.insert(layer.entry.clone(), done);
            }
        }
        // Every layer passed: commit the blobs, then the images.
        for layer in ready.values_mut() {
            if let Some(pending) = layer.pending.take() {
                pending.commit()?;
            }
        }
        let mut loaded = Vec::new();
        for image in planned {
            let layers: Vec<LayerInfo> = image
                .layers
                .iter()
                .filter_map(|l| ready.get(&l.entry).map(|r| r.info.clone()))
                .collect();
            let manifest = match image.manifest {
                Some((bytes, _)) => bytes,
                None => self.docker_manifest(&image.config, &layers)?,
            };
            let committed = self.store.commit_image(&ImageCommit {
                manifest,
                config: image.config,
                layers,
                tags: image.tags.clone(),
            })?;
            loaded.push(LoadedImage {
                id: committed.id,
                manifest_digest: committed.manifest_digest,
                tags: image.tags,
            });
        }
        Ok(loaded)
    }

    /// An OCI manifest over the recompressed layers (OCI media types, so that tools reading
    /// the store as an OCI layout, such as skopeo's `oci:` transport, see the image).
    fn docker_manifest(&self, config: &[u8], layers: &[LayerInfo]) -> Result<Vec<u8>> {
        let config_descriptor = Descriptor::of_bytes(media_types::OCI_CONFIG, config);
        let layer_descriptors = layers
            .iter()
            .map(|l| Descriptor::new(&l.media_type, l.blob_digest, l.compressed_size))
            .collect();
        Ok(ImageManifest::oci(config_descriptor, layer_descriptors).to_canonical_json()?)
    }

    fn open_entry(&self, entry: &str) -> Result<BufReader<io::Take<File>>> {
        Ok(BufReader::with_capacity(
            1024 * 1024,
            self.index.open(entry)?,
        ))
    }

    /// Decompresses (if needed), validates and hashes a docker-archive layer, compressing it
    /// into an uncommitted blob.
    fn recompress_layer(&self, layer: &PlannedLayer) -> Result<ReadyLayer> {
        let layer_error = |source| ExportError::Layer {
            layer: layer.entry.clone(),
            source,
        };
        let io_error = |source: io::Error| layer_error(source.into());
        let (_, plain) = decompressing_reader(self.open_entry(&layer.entry)?).map_err(io_error)?;
        let blob = self.store.blob_writer(None, None)?;
        let compressor = CompressingWriter::new(
            self.options.compression,
            default_compression_threads(),
            HashingWriter::new(blob),
        )
        .map_err(io_error)?;
        let (scan, compressor) =
            scan_layer(plain, compressor, &self.options.policy).map_err(layer_error)?;
        check_diff_id(layer, &scan)?;
        let mut hashing = compressor.finish().map_err(io_error)?;
        hashing.flush().map_err(io_error)?;
        let (blob, blob_digest, compressed_size) = hashing.finish();
        Ok(ReadyLayer {
            info: LayerInfo {
                diff_id: scan.diff_id,
                blob_digest,
                media_type: layer_media_type(self.options.compression).to_owned(),
                compressed_size,
                uncompressed_size: Some(scan.size),
            },
            pending: Some(blob),
        })
    }

    /// Validates an OCI layer blob, then copies it verbatim into an uncommitted blob.
    fn copy_oci_layer(&self, layer: &PlannedLayer, descriptor: &Descriptor) -> Result<ReadyLayer> {
        let layer_error = |source| ExportError::Layer {
            layer: layer.entry.clone(),
            source,
        };
        let io_error = |source: io::Error| layer_error(source.into());
        let (_, plain) = decompressing_reader(self.open_entry(&layer.entry)?).map_err(io_error)?;
        let (scan, _) = scan_layer(plain, io::sink(), &self.options.policy).map_err(layer_error)?;
        check_diff_id(layer, &scan)?;
        let pending = if self.store.has_blob(&descriptor.digest) {
            None
        } else {
            let mut blob = HashingWriter::new(self.store.blob_writer(None, None)?);
            io::copy(&mut self.open_entry(&layer.entry)?, &mut blob).map_err(io_error)?;
            let (blob, actual, size) = blob.finish();
            if actual != descriptor.digest || size != descriptor.size {
                return Err(ExportError::DigestMismatch {
                    what: format!("layer {} in {} ({size} bytes)", layer.entry, self.name),
                    expected: descriptor.digest,
                    actual,
                });
            }
            Some(blob)
        };
        Ok(ReadyLayer {
            info: LayerInfo {
                diff_id: scan.diff_id,
                blob_digest: descriptor.digest,
                media_type: descriptor.media_type.clone(),
                compressed_size: descriptor.size,
                uncompressed_size: Some(scan.size),
            },
            pending,
        })
    }
}

fn check_diff_id(layer: &PlannedLayer, scan: &LayerScan) -> Result<()> {
    if scan.diff_id != layer.diff_id {
        return Err(ExportError::DiffIdMismatch {
            layer: layer.entry.clone(),
            expected: layer.diff_id,
            actual: scan.diff_id,
        });
    }
    Ok(())
}

/// The OCI media type of a layer blob written with `compression`.
pub(crate) fn layer_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => media_types::OCI_LAYER_TAR,
        Compression::Gzip { .. } => media_types::OCI_LAYER_GZIP,
        Compression::Zstd { .. } => media_types::OCI_LAYER_ZSTD,
    }
}

fn parse_tag(text: &str) -> Result<Reference> {
    let reference = Reference::parse_normalized(text).map_err(|source| ExportError::Reference {
        input: text.to_owned(),
        source,
    })?;
    Ok(reference.with_default_tag())
}

fn blob_entry(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// The digest a file's name promises: `<hex>.json`, `blobs/sha256/<hex>`, `<hex>/layer.tar`
/// promise nothing for layers (their digest is the diff_id, checked separately).
fn digest_from_name(name: &str) -> Option<Digest> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = base.strip_suffix(".json").unwrap_or(base);
    Digest::from_hex(stem).ok()
}
