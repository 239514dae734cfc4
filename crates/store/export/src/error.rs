//! The export crate's error type: every variant names the archive, entry, layer or image
//! it concerns, so a message stands on its own.

use std::io;
use std::path::PathBuf;

use stowage_digest::Digest;

use crate::layer_scan::LayerScanError;

/// Anything that can go wrong while saving, loading or importing.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] stowage_store::StoreError),
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing the output archive failed.
    #[error("writing the archive: {0}")]
    ArchiveWrite(#[from] stowage_archive::ArchiveWriterError),
    /// The input archive is not a readable tar, or an entry is missing.
    #[error("reading the archive: {0}")]
    ArchiveRead(#[from] stowage_archive::ArchiveIndexError),
    /// The archive's structure is wrong (no manifest, bad JSON, missing file, ...).
    #[error("invalid archive {archive}: {message}")]
    InvalidArchive {
        /// The archive.
        archive: String,
        /// What is wrong.
        message: String,
    },
    /// A layer tar could not be read or contains an unsafe entry.
    #[error("layer {layer}: {source}")]
    Layer {
        /// The layer (archive entry name or blob digest).
        layer: String,
        /// What went wrong.
        source: LayerScanError,
    },
    /// A layer's content does not match the diff_id the config lists for it.
    #[error("layer {layer}: its content digest is {actual}, but the image config lists {expected}")]
    DiffIdMismatch {
        /// The layer.
        layer: String,
        /// diff_id in the config.
        expected: Digest,
        /// Digest of the uncompressed tar read.
        actual: Digest,
    },
    /// A file named by its digest (or described by a descriptor) does not hash to it.
    #[error("{what}: content digest is {actual}, but it is named/described as {expected}")]
    DigestMismatch {
        /// The file or blob.
        what: String,
        /// The digest its name or descriptor gives.
        expected: Digest,
        /// Its actual digest.
        actual: Digest,
    },
    /// A reference (tag) could not be parsed.
    #[error("invalid reference {input:?}: {source}")]
    Reference {
        /// What was given.
        input: String,
        /// The parse error.
        source: stowage_image::ReferenceError,
    },
    /// Serializing JSON failed.
    #[error(transparent)]
    Canonical(#[from] stowage_image::CanonicalJsonError),
    /// No image was asked for.
    #[error(
        "a docker-archive holds uncompressed layer tars; layer compression applies to --format oci"
    )]
    CompressedDockerArchive,
    #[error("no image given to save")]
    NothingToSave,
}

/// Result alias.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;

/// Wraps an `io::Error` with an action and a path.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ExportError {
    let path = path.into();
    move |source| ExportError::Io {
        action,
        path,
        source,
    }
}
