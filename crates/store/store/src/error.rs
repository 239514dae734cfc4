//! The store's error type: every variant carries what it was working on (path, digest,
//! reference) so messages stand on their own.

use std::io;
use std::path::PathBuf;

use stowage_digest::Digest;
use stowage_image::ReferenceError;

/// Anything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing (`creating`, `renaming into`, ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database {path}: {source}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// Written or read bytes do not hash to the expected digest.
    #[error(
        "blob content does not match its digest: expected {expected}, got {actual} ({size} bytes)"
    )]
    DigestMismatch {
        /// The digest that was asked for.
        expected: Digest,
        /// The digest of the bytes seen.
        actual: Digest,
        /// Bytes seen.
        size: u64,
    },
    /// Written bytes do not have the expected size.
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// Expected size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// A blob is not in the store.
    #[error("blob {0} is not in the store")]
    BlobNotFound(Digest),
    /// A blob is bigger than the caller allows for in-memory reads.
    #[error("blob {digest} is {size} bytes, more than the {limit}-byte limit for in-memory reads")]
    BlobTooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// No image matches a reference or ID.
    #[error("No such image: {0}")]
    ImageNotFound(String),
    /// A short ID prefix matches several images.
    #[error("short image ID {input:?} is ambiguous: it matches {count} images")]
    AmbiguousId {
        /// The prefix given.
        input: String,
        /// How many images match.
        count: usize,
    },
    /// Removing the image needs `force`.
    #[error(
        "conflict: unable to delete {id} (must be forced) - image is referenced in multiple repositories ({tags})"
    )]
    Conflict {
        /// Short image ID.
        id: String,
        /// The tags that still point at it.
        tags: String,
    },
    /// The image handed to `commit_image` is inconsistent.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// A reference could not be parsed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A tag name carries a digest, which cannot be a tag.
    #[error("cannot use a digest reference as a tag: {0}")]
    DigestAsTag(String),
    /// A stored JSON blob could not be parsed.
    #[error("invalid JSON in blob {digest}: {source}")]
    Json {
        /// The blob.
        digest: Digest,
        /// The parse error.
        source: serde_json::Error,
    },
    /// Serializing JSON failed.
    #[error(transparent)]
    Canonical(#[from] stowage_image::CanonicalJsonError),
    /// The store was written by an incompatible version.
    #[error(
        "store {path} has metadata schema version {found}; this stowage supports version {supported}"
    )]
    UnsupportedSchema {
        /// The database.
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The version supported.
        supported: i64,
    },
    /// No root directory could be determined.
    #[error("cannot determine the store root: {0}; pass --root or set STOWAGE_ROOT")]
    NoRoot(String),
    /// Stored metadata is inconsistent.
    #[error("store metadata is inconsistent: {detail}")]
    Corrupt {
        /// What is wrong.
        detail: String,
    },
    /// A size does not fit the database's integer type.
    #[error("size {0} is too large to record")]
    SizeOverflow(u64),
}

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Builds a closure that wraps an `io::Error` with an action and path.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}
