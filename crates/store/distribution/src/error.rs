//! The error type of pulls and pushes: registry and store errors pass through
//! unchanged (they already name what they are about); the variants added here
//! describe images that are well transported but unusable.

use stowage_digest::Digest;

/// Anything that can go wrong moving an image between a registry and the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DistributionError {
    /// Talking to the registry failed (network, auth, status, digest or size mismatch).
    #[error(transparent)]
    Registry(#[from] stowage_registry::RegistryError),
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] stowage_store::StoreError),
    /// A reference the caller gave is unusable.
    #[error("invalid reference {reference:?}: {detail}")]
    InvalidReference { reference: String, detail: String },
    /// A manifest or config fetched (and digest-verified) from the registry makes no sense.
    #[error("invalid image {reference}: {detail}")]
    InvalidImage { reference: String, detail: String },
    /// A layer whose media type stowage cannot store or unpack.
    #[error("image {reference}: layer {digest} has unsupported media type {media_type:?}")]
    UnsupportedLayer {
        reference: String,
        digest: Digest,
        media_type: String,
    },
    /// The record of where blobs live (`<root>/distribution-v1.db`) failed.
    #[error("distribution records {path}: {source}")]
    Records {
        path: std::path::PathBuf,
        source: rusqlite::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = DistributionError> = std::result::Result<T, E>;
