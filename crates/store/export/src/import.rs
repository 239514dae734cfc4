//! `import`: a root-filesystem tarball becomes a one-layer image, like `docker import`.
//!
//! One pass: decompress (gzip, zstd, xz, bzip2 or plain, sniffed) → validate every entry
//! and hash the tar (diff_id) → compress → blob temp file (hashed again: blob digest). The
//! config is Docker's import config: the platform, `created`, a `comment` and one history
//! entry `Imported from -` (or the message given), no `Cmd`.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};

use serde_json::Value;
use stowage_archive::{
    CompressingWriter, Compression, decompressing_reader, default_compression_threads,
};
use stowage_digest::{Digest, HashingWriter};
use stowage_image::{History, ImageConfig, ImageId, LayerInfo, Platform, Reference};
use stowage_store::{ManifestFormat, Store};

use crate::DEFAULT_COMPRESSION;
use crate::error::{ExportError, Result};
use crate::layer_scan::{EntryPolicy, scan_layer};
use crate::load::layer_media_type;

/// How [`import`] builds the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Tags to point at the image.
    pub tags: Vec<Reference>,
    /// The history comment; `None` gives Docker's `Imported from -`.
    pub message: Option<String>,
    /// Platform written into the config.
    pub platform: Platform,
    /// `created` (RFC 3339); `None` for now.
    pub created: Option<String>,
    /// Layer compression in the store.
    pub compression: Compression,
    /// What the tarball may contain (device nodes are allowed by default: a full rootfs
    /// has them, and `docker import` accepts them).
    pub policy: EntryPolicy,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            tags: Vec::new(),
            message: None,
            platform: Platform::native(),
            created: None,
            compression: DEFAULT_COMPRESSION,
            policy: EntryPolicy {
                allow_devices: true,
            },
        }
    }
}

/// What [`import`] committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// Image ID.
    pub id: ImageId,
    /// Manifest digest.
    pub manifest_digest: Digest,
    /// The single layer.
    pub layer: LayerInfo,
}

/// Imports the rootfs tarball read from `input` as a one-layer image.
pub fn import<R: Read + Send>(
    store: &Store,
    input: R,
    options: &ImportOptions,
) -> Result<ImportedImage> {
    let _lease = store.lease()?;
    let layer_error = |source| ExportError::Layer {
        layer: "<rootfs tarball>".to_owned(),
        source,
    };
    let io_error = |source: std::io::Error| layer_error(source.into());
    let (_, plain) = decompressing_reader(input).map_err(io_error)?;
    let plain = BufReader::with_capacity(1024 * 1024, plain);
    let blob = store.blob_writer(None, None)?;
    let compressor = CompressingWriter::new(
        options.compression,
        default_compression_threads(),
        HashingWriter::new(blob),
    )
    .map_err(io_error)?;
    let (scan, compressor) = scan_layer(plain, compressor, &options.policy).map_err(layer_error)?;
    let mut hashing = compressor.finish().map_err(io_error)?;
    hashing.flush().map_err(io_error)?;
    let (blob, _, _) = hashing.finish();
    let info = blob.commit()?;
    let layer = LayerInfo {
        diff_id: scan.diff_id,
        blob_digest: info.digest,
        media_type: layer_media_type(options.compression).to_owned(),
        compressed_size: info.size,
        uncompressed_size: Some(scan.size),
    };

    let created = options
        .created
        .clone()
        .unwrap_or_else(|| jiff::Timestamp::now().to_string());
    let comment = options
        .message
        .clone()
        .unwrap_or_else(|| "Imported from -".to_owned());
    let mut config = ImageConfig::scratch(&options.platform);
    config.created = Some(created.clone());
    config.rootfs.diff_ids = vec![scan.diff_id];
    config.history = vec![History {
        created: Some(created),
        comment: Some(comment.clone()),
        ..History::default()
    }];
    config.extra = BTreeMap::from([("comment".to_owned(), Value::String(comment))]);
    let committed = store.commit_config(
        &config,
        vec![layer.clone()],
        options.tags.clone(),
        ManifestFormat::Oci,
    )?;
    Ok(ImportedImage {
        id: committed.id,
        manifest_digest: committed.manifest_digest,
        layer,
    })
}
