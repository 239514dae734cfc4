//! `save`: stored images into one archive, streamed, with deterministic bytes.
//!
//! **Docker format** ([`SaveFormat::Docker`]) is the combined layout Docker 25+ writes, which
//! Docker 20.10's `docker load` also reads (it only follows `manifest.json` paths):
//! ```text
//! blobs/sha256/<config hex>      config bytes, verbatim (image ID preserved)
//! blobs/sha256/<diff_id hex>     each layer as an UNCOMPRESSED tar (decompressed on the fly)
//! blobs/sha256/<manifest hex>    an OCI manifest over the uncompressed layers
//! index.json, oci-layout         that manifest as an OCI layout (ref.name = tag)
//! manifest.json                  [{"Config","RepoTags","Layers"}], paths into blobs/
//! repositories                   {"name":{"tag":"<top layer hex>"}} (legacy, informative)
//! ```
//! **OCI format** ([`SaveFormat::Oci`]) is an OCI image layout of the stored blobs as they
//! are (manifest, config, compressed layers), with one `index.json` entry per tag whose
//! `org.opencontainers.image.ref.name` is the full normalized reference (the store's own
//! convention, which `skopeo ... oci-archive:FILE:REF` accepts).
//!
//! Entries are written in bytewise name order with fixed metadata (owner 0, mtime 0) by
//! [`ArchiveWriter`], so saving the same images twice gives the same bytes. Every blob read
//! from the store is verified, and every decompressed layer is checked against its diff_id.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};

use serde_json::{Value, json};
use stowage_archive::{ArchiveWriter, decompressing_reader};
use stowage_digest::{Digest, HashingReader};
use stowage_image::{
    Descriptor, ImageId, ImageIndex, ImageManifest, LayerInfo, Reference, media_types,
};
use stowage_store::{ImageDetails, Store};

use crate::ANNOTATION_CONTAINERD_NAME;
use crate::error::{ExportError, Result};

/// The archive layout [`save`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveFormat {
    /// `docker save`'s format (`manifest.json` + uncompressed layers), loadable by `docker load`.
    #[default]
    Docker,
    /// An OCI image layout in a tar (oci-archive).
    Oci,
}

/// What [`save`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveReport {
    /// The images saved, in the order given (duplicates merged).
    pub images: Vec<ImageId>,
    /// The tags written into the archive.
    pub tags: Vec<Reference>,
}

/// Where the content of one archive entry comes from.
enum Source {
    Bytes(Vec<u8>),
    StoredBlob { digest: Digest, size: u64 },
    Decompressed { layer: LayerInfo, size: u64 },
}

/// One image and the tags to write for it.
struct Selected {
    details: ImageDetails,
    tags: Vec<Reference>,
}

/// Writes the images named by `inputs` (tags, IDs, ID prefixes or digests, as
/// [`Store::resolve`] accepts them) into `out` as one archive and returns `out`.
///
/// Tags written: for `name:tag`, that tag; for a bare `name`, every tag of that repository
/// the image has; for an ID or digest, none (Docker does the same).
pub fn save<W: Write>(
    store: &Store,
    inputs: &[String],
    format: SaveFormat,
    out: W,
) -> Result<(W, SaveReport)> {
    save_with_compression(store, inputs, format, None, out)
}

/// [`save`], with the layers of an OCI archive converted to `compression`
/// first (see [`crate::convert`]; the image IDs stay, the manifests change).
/// A docker-archive's layers are uncompressed tars by definition, so asking
/// for a compression there is [`ExportError::CompressedDockerArchive`].
pub fn save_with_compression<W: Write>(
    store: &Store,
    inputs: &[String],
    format: SaveFormat,
    compression: Option<stowage_archive::Compression>,
    out: W,
) -> Result<(W, SaveReport)> {
    if inputs.is_empty() {
        return Err(ExportError::NothingToSave);
    }
    if compression.is_some() && format == SaveFormat::Docker {
        return Err(ExportError::CompressedDockerArchive);
    }
    let _lease = store.lease()?;
    let mut selected = select_images(store, inputs)?;
    if let Some(compression) = compression {
        for image in &mut selected {
            image.details = crate::convert::convert_image(store, &image.details, compression)?;
        }
    }
    let mut entries: BTreeMap<String, Source> = BTreeMap::new();
    let mut top_level: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    top_level.insert("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec());
    match format {
        SaveFormat::Docker => plan_docker(store, &selected, &mut entries, &mut top_level)?,
        SaveFormat::Oci => plan_oci(&selected, &mut entries, &mut top_level)?,
    }

    let mut writer = ArchiveWriter::new(out);
    writer.add_dir("blobs")?;
    writer.add_dir("blobs/sha256")?;
    for (name, source) in entries {
        match source {
            Source::Bytes(bytes) => writer.add_bytes(&name, &bytes)?,
            Source::StoredBlob { digest, size } => {
                let reader = store.open_blob_verified(&digest)?;
                writer.add_file(&name, size, BufReader::with_capacity(256 * 1024, reader))?;
            }
            Source::Decompressed { layer, size } => {
                let mut hashing = HashingReader::new(open_uncompressed(store, &layer)?);
                writer.add_file(&name, size, &mut hashing)?;
                let (_, actual, _) = hashing.finish();
                if actual != layer.diff_id {
                    return Err(ExportError::DiffIdMismatch {
                        layer: layer.blob_digest.to_string(),
                        expected: layer.diff_id,
                        actual,
                    });
                }
            }
        }
    }
    for (name, bytes) in top_level {
        writer.add_bytes(name, &bytes)?;
    }
    let out = writer.finish()?;
    let report = SaveReport {
        images: selected.iter().map(|s| s.details.id).collect(),
        tags: selected.iter().flat_map(|s| s.tags.clone()).collect(),
    };
    Ok((out, report))
}

fn select_images(store: &Store, inputs: &[String]) -> Result<Vec<Selected>> {
    let mut selected: Vec<Selected> = Vec::new();
    for input in inputs {
        for (details, tags) in resolve_input(store, input)? {
            merge_selected(&mut selected, details, tags);
        }
    }
    for s in &mut selected {
        s.tags.sort();
    }
    Ok(selected)
}

/// The images an input names: what [`Store::image`] resolves, or, for a bare repository
/// name without a `latest` tag, every image tagged in that repository (as `docker save`).
fn resolve_input(store: &Store, input: &str) -> Result<Vec<(ImageDetails, Vec<Reference>)>> {
    match store.image(input) {
        Ok(details) => {
            let tags = tags_for_input(input, &details);
            Ok(vec![(details, tags)])
        }
        Err(stowage_store::StoreError::ImageNotFound(missing)) => {
            let bare = Reference::parse_normalized(input)
                .ok()
                .filter(|r| r.tag().is_none() && r.digest().is_none());
            let Some(repository) = bare else {
                return Err(stowage_store::StoreError::ImageNotFound(missing).into());
            };
            let mut found = Vec::new();
            for summary in store.list_images()? {
                if summary.tags.iter().any(|t| t.name() == repository.name()) {
                    let details = store.image_by_manifest(&summary.manifest_digest)?;
                    let tags = tags_for_input(input, &details);
                    found.push((details, tags));
                }
            }
            if found.is_empty() {
                return Err(stowage_store::StoreError::ImageNotFound(missing).into());
            }
            Ok(found)
        }
        Err(other) => Err(other.into()),
    }
}

fn merge_selected(selected: &mut Vec<Selected>, details: ImageDetails, tags: Vec<Reference>) {
    {
        match selected
            .iter_mut()
            .find(|s| s.details.manifest_digest == details.manifest_digest)
        {
            Some(existing) => {
                for tag in tags {
                    if !existing.tags.contains(&tag) {
                        existing.tags.push(tag);
                    }
                }
            }
            None => selected.push(Selected { details, tags }),
        }
    }
}

fn tags_for_input(input: &str, details: &ImageDetails) -> Vec<Reference> {
    let Ok(reference) = Reference::parse_normalized(input) else {
        return Vec::new();
    };
    if reference.digest().is_some() {
        return Vec::new();
    }
    match reference.tag() {
        Some(_) => details
            .tags
            .iter()
            .filter(|t| **t == reference)
            .cloned()
            .collect(),
        None => details
            .tags
            .iter()
            .filter(|t| t.name() == reference.name())
            .cloned()
            .collect(),
    }
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// A decompressing, verified reader over a stored layer blob.
fn open_uncompressed(store: &Store, layer: &LayerInfo) -> Result<Box<dyn Read + Send>> {
    let blob = store.open_blob_verified(&layer.blob_digest)?;
    let (_, reader) =
        decompressing_reader(BufReader::with_capacity(256 * 1024, blob)).map_err(|source| {
            ExportError::Io {
                action: "decompressing layer blob",
                path: store.blob_path(&layer.blob_digest),
                source,
            }
        })?;
    Ok(reader)
}

/// The uncompressed size of a layer: recorded, or measured by decompressing it once.
fn uncompressed_size(store: &Store, layer: &LayerInfo) -> Result<u64> {
    if let Some(size) = layer.uncompressed_size {
        return Ok(size);
    }
    let mut reader = open_uncompressed(store, layer)?;
    io::copy(&mut reader, &mut io::sink()).map_err(|source| ExportError::Io {
        action: "decompressing layer blob",
        path: store.blob_path(&layer.blob_digest),
        source,
    })
}

fn plan_docker(
    store: &Store,
    selected: &[Selected],
    entries: &mut BTreeMap<String, Source>,
    top_level: &mut BTreeMap<&'static str, Vec<u8>>,
) -> Result<()> {
    let mut manifest_json: Vec<Value> = Vec::new();
    let mut index_entries: Vec<Descriptor> = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for Selected { details, tags } in selected {
        let config_name = blob_name(&details.id.digest());
        entries.insert(
            config_name.clone(),
            Source::Bytes(details.config_bytes.clone()),
        );
        let mut layer_names = Vec::new();
        let mut layer_descriptors = Vec::new();
        for layer in &details.layers {
            let name = blob_name(&layer.diff_id);
            let size = uncompressed_size(store, layer)?;
            layer_descriptors.push(Descriptor::new(
                media_types::OCI_LAYER_TAR,
                layer.diff_id,
                size,
            ));
            layer_names.push(Value::String(name.clone()));
            entries.entry(name).or_insert(Source::Decompressed {
                layer: layer.clone(),
                size,
            });
        }
        let manifest = ImageManifest::oci(
            Descriptor::new(
                media_types::OCI_CONFIG,
                details.id.digest(),
                details.config_bytes.len() as u64,
            ),
            layer_descriptors,
        );
        let manifest_bytes = manifest.to_canonical_json()?;
        let manifest_descriptor = Descriptor::of_bytes(media_types::OCI_MANIFEST, &manifest_bytes);
        entries.insert(
            blob_name(&manifest_descriptor.digest),
            Source::Bytes(manifest_bytes),
        );
        let repo_tags: Value = if tags.is_empty() {
            Value::Null
        } else {
            Value::Array(tags.iter().map(|t| Value::String(t.familiar())).collect())
        };
        manifest_json.push(json!({
            "Config": config_name,
            "RepoTags": repo_tags,
            "Layers": layer_names,
        }));
        if tags.is_empty() {
            index_entries.push(manifest_descriptor.clone());
        }
        for tag in tags {
            let mut descriptor = manifest_descriptor.clone();
            descriptor.annotations = Some(BTreeMap::from([
                (ANNOTATION_CONTAINERD_NAME.to_owned(), tag.to_string()),
                (
                    media_types::ANNOTATION_REF_NAME.to_owned(),
                    tag.tag().unwrap_or("latest").to_owned(),
                ),
            ]));
            index_entries.push(descriptor);
            if let Some(top) = details.layers.last() {
                repositories
                    .entry(tag.familiar_name())
                    .or_default()
                    .insert(tag.tag().unwrap_or("latest").to_owned(), top.diff_id.hex());
            }
        }
    }
    top_level.insert(
        "index.json",
        ImageIndex::oci(index_entries).to_canonical_json()?,
    );
    top_level.insert("manifest.json", json_bytes(&Value::Array(manifest_json))?);
    if !repositories.is_empty() {
        top_level.insert("repositories", json_bytes(&json!(repositories))?);
    }
    Ok(())
}

fn plan_oci(
    selected: &[Selected],
    entries: &mut BTreeMap<String, Source>,
    top_level: &mut BTreeMap<&'static str, Vec<u8>>,
) -> Result<()> {
    let mut index_entries = Vec::new();
    for Selected { details, tags } in selected {
        entries.insert(
            blob_name(&details.id.digest()),
            Source::Bytes(details.config_bytes.clone()),
        );
        for layer in &details.layers {
            entries
                .entry(blob_name(&layer.blob_digest))
                .or_insert(Source::StoredBlob {
                    digest: layer.blob_digest,
                    size: layer.compressed_size,
                });
        }
        entries.insert(
            blob_name(&details.manifest_digest),
            Source::Bytes(details.manifest_bytes.clone()),
        );
        let descriptor = Descriptor::new(
            details.manifest.media_type(),
            details.manifest_digest,
            details.manifest_bytes.len() as u64,
        );
        if tags.is_empty() {
            index_entries.push(descriptor.clone());
        }
        for tag in tags {
            let mut tagged = descriptor.clone();
            tagged.annotations = Some(BTreeMap::from([
                (ANNOTATION_CONTAINERD_NAME.to_owned(), tag.to_string()),
                (media_types::ANNOTATION_REF_NAME.to_owned(), tag.to_string()),
            ]));
            index_entries.push(tagged);
        }
    }
    top_level.insert(
        "index.json",
        ImageIndex::oci(index_entries).to_canonical_json()?,
    );
    Ok(())
}

fn json_bytes(value: &Value) -> Result<Vec<u8>> {
    Ok(stowage_image::canonical_json(value)?)
}
