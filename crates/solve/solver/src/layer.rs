//! Writing a layer into the store in one pass: tar bytes are hashed for the
//! diff_id, compressed, hashed again for the blob digest, and streamed into a
//! verified, atomically committed blob.

use std::io::{self, Write};

use stowage_archive::{CompressingWriter, Compression, default_compression_threads};
use stowage_digest::HashingWriter;
use stowage_image::{LayerInfo, media_types};
use stowage_store::{BlobWriter, Store};

use crate::error::StepError;

/// The OCI media type of a layer blob compressed with `compression`.
pub fn layer_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => media_types::OCI_LAYER_TAR,
        Compression::Gzip { .. } => media_types::OCI_LAYER_GZIP,
        Compression::Zstd { .. } => media_types::OCI_LAYER_ZSTD,
    }
}

/// The OCI equivalent of a layer media type (Docker's gzip and tar types map
/// to OCI's; the blob bytes are the same).
pub fn oci_layer_media_type(media_type: &str) -> String {
    match media_type {
        media_types::DOCKER_LAYER_GZIP => media_types::OCI_LAYER_GZIP.to_owned(),
        media_types::DOCKER_LAYER_TAR => media_types::OCI_LAYER_TAR.to_owned(),
        other => other.to_owned(),
    }
}

/// A `Write` that turns uncompressed tar bytes into a stored layer blob.
pub struct LayerSink {
    compression: Compression,
    inner: HashingWriter<CompressingWriter<HashingWriter<BlobWriter>>>,
}

impl LayerSink {
    /// A sink writing a new blob into `store`.
    pub fn new(store: &Store, compression: Compression) -> Result<Self, StepError> {
        let blob = store.blob_writer(None, None)?;
        let compressor = CompressingWriter::new(
            compression,
            default_compression_threads(),
            HashingWriter::new(blob),
        )
        .map_err(StepError::io("starting compression for", store.tmp_dir()))?;
        Ok(Self {
            compression,
            inner: HashingWriter::new(compressor),
        })
    }

    /// Finishes compression, commits the blob and describes the layer.
    pub fn finish(self) -> Result<LayerInfo, StepError> {
        let (compressor, diff_id, uncompressed) = self.inner.finish();
        let blob_hasher = compressor.finish().map_err(|source| StepError::Io {
            action: "finishing the compressed layer in",
            path: std::path::PathBuf::from("the store"),
            source,
        })?;
        let (blob, blob_digest, compressed) = blob_hasher.finish();
        let info = blob.commit()?;
        debug_assert_eq!(info.digest, blob_digest);
        Ok(LayerInfo {
            diff_id,
            blob_digest: info.digest,
            media_type: layer_media_type(self.compression).to_owned(),
            compressed_size: compressed.max(info.size),
            uncompressed_size: Some(uncompressed),
        })
    }
}

impl Write for LayerSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
