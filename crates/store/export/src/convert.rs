//! Layer compression conversion for `save --compress` (and any other export that
//! wants layers in another compression): each stored layer is decompressed and
//! recompressed into a new stored blob, streamed, with its diff_id checked on
//! the way. The config is untouched, so the image ID stays; the manifest is
//! rebuilt over the new blobs, so its digest and the layers' media types change.
//! Converted blobs are ordinary store blobs no image references: the next
//! `prune` removes them.

use std::io::{self, BufReader};

use stowage_archive::{CompressingWriter, Compression, decompressing_reader};
use stowage_digest::{HashingReader, HashingWriter};
use stowage_image::{Descriptor, ImageManifest, LayerInfo, media_types};
use stowage_store::{ImageDetails, Store};

use crate::error::{ExportError, Result};

/// The OCI media type of a layer blob compressed with `compression`.
pub fn layer_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => media_types::OCI_LAYER_TAR,
        Compression::Gzip { .. } => media_types::OCI_LAYER_GZIP,
        Compression::Zstd { .. } => media_types::OCI_LAYER_ZSTD,
    }
}

/// `layer` recompressed with `compression` into a new blob in `store`.
pub fn convert_layer(
    store: &Store,
    layer: &LayerInfo,
    compression: Compression,
) -> Result<LayerInfo> {
    let blob_path = store.blob_path(&layer.blob_digest);
    let io_error = |action: &'static str| {
        let path = blob_path.clone();
        move |source: io::Error| ExportError::Io {
            action,
            path,
            source,
        }
    };
    let blob = store.open_blob_verified(&layer.blob_digest)?;
    let (_, reader) = decompressing_reader(BufReader::with_capacity(256 * 1024, blob))
        .map_err(io_error("decompressing layer blob"))?;
    let mut reader = HashingReader::new(reader);
    let writer = store.blob_writer(None, None)?;
    let mut compressor = CompressingWriter::new(
        compression,
        stowage_archive::default_compression_threads(),
        HashingWriter::new(writer),
    )
    .map_err(io_error("starting compression of"))?;
    let uncompressed =
        io::copy(&mut reader, &mut compressor).map_err(io_error("recompressing layer blob"))?;
    let (_, diff_id, _) = reader.finish();
    if diff_id != layer.diff_id {
        return Err(ExportError::DiffIdMismatch {
            layer: layer.blob_digest.to_string(),
            expected: layer.diff_id,
            actual: diff_id,
        });
    }
    let (writer, _, _) = compressor
        .finish()
        .map_err(io_error("finishing compression of"))?
        .finish();
    let info = writer.commit()?;
    Ok(LayerInfo {
        diff_id,
        blob_digest: info.digest,
        media_type: layer_media_type(compression).to_owned(),
        compressed_size: info.size,
        uncompressed_size: Some(uncompressed),
    })
}

/// `details` with every layer in `compression` (layers already in it are kept
/// as they are) under a new OCI manifest. The config and image ID are unchanged.
pub fn convert_image(
    store: &Store,
    details: &ImageDetails,
    compression: Compression,
) -> Result<ImageDetails> {
    let wanted = layer_media_type(compression);
    let mut layers = Vec::with_capacity(details.layers.len());
    for layer in &details.layers {
        let same = match compression {
            Compression::None => {
                layer.media_type == wanted || layer.media_type == media_types::DOCKER_LAYER_TAR
            }
            Compression::Gzip { .. } => {
                layer.media_type == wanted || layer.media_type == media_types::DOCKER_LAYER_GZIP
            }
            Compression::Zstd { .. } => layer.media_type == wanted,
        };
        layers.push(if same {
            LayerInfo {
                media_type: wanted.to_owned(),
                ..layer.clone()
            }
        } else {
            convert_layer(store, layer, compression)?
        });
    }
    let manifest = ImageManifest::oci(
        Descriptor::new(
            media_types::OCI_CONFIG,
            details.id.digest(),
            details.config_bytes.len() as u64,
        ),
        layers
            .iter()
            .map(|l| Descriptor::new(&l.media_type, l.blob_digest, l.compressed_size))
            .collect(),
    );
    let manifest_bytes = manifest.to_canonical_json()?;
    let manifest_digest = Descriptor::of_bytes(media_types::OCI_MANIFEST, &manifest_bytes).digest;
    Ok(ImageDetails {
        manifest_digest,
        manifest,
        manifest_bytes,
        layers,
        ..details.clone()
    })
}
