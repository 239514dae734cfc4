//! `stowage-distribution`: moves images between registries and the local store.
//!
//! - [`pull`] resolves a reference (tag or digest, through manifest lists and OCI
//!   indexes to one platform), downloads the config and the missing layers
//!   concurrently into the store's verified blob writer, and commits the image
//!   with its tag. [`ensure_image`] is `FROM x` (pull when missing, or always for
//!   `--pull`); [`resolve_remote`] gives the planner a base image's digest and
//!   config without downloading any layer.
//! - [`push`] uploads a stored image's layers concurrently (skipping blobs the
//!   registry has, mounting blobs it holds under another repository), then the
//!   config, then the manifest, unchanged, so the digest stays the local one.
//! - [`cache`] exports a build's cache to a registry (an OCI manifest whose
//!   config is a stowage cache config) and reads cache sources back, manifest
//!   and config only, with each layer blob fetched when a hit needs it.
//!
//! Both Docker v2 schema 2 and OCI manifests pass through byte for byte, with
//! gzip, zstd or uncompressed layers. Every blob and manifest is verified against
//! its digest (and size) before it lands in the store; a failed transfer leaves
//! only a deleted temp file. Where blobs live and which repository digests an
//! image has are kept in [`Records`] (`<root>/distribution-v1.db`).

pub mod cache;
pub mod error;
pub mod pull;
pub mod push;
pub mod records;

use stowage_digest::Digest;
use stowage_image::Reference;
use stowage_registry::{Repository, TagOrDigest};

pub use error::{DistributionError, Result};
pub use pull::{
    EnsuredImage, PullOptions, PullPolicy, PulledImage, RemoteImage, ensure_image, pull,
    remote_layers, resolve_remote,
};
pub use push::{PushOptions, PushedImage, push};
pub use records::{RECORDS_FILE, Records};

/// Which blob of an image a transfer is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// The image config.
    Config,
    /// A layer.
    Layer,
}

/// How a blob transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Pull: the store already had it.
    AlreadyInStore,
    /// Pull: downloaded and verified.
    Downloaded,
    /// Push: the registry already had it in the target repository.
    AlreadyInRegistry,
    /// Push: mounted from another repository of the same registry.
    Mounted {
        /// The repository it was mounted from.
        from: String,
    },
    /// Push: uploaded.
    Uploaded,
}

/// Watches transfers; called from worker threads. Every method has an empty default.
pub trait TransferObserver: Sync {
    /// A blob transfer starts (or is found unnecessary right away).
    fn blob_started(&self, _digest: &Digest, _size: u64, _kind: BlobKind) {}
    /// `done` of `total` bytes have moved.
    fn blob_progress(&self, _digest: &Digest, _done: u64, _total: Option<u64>) {}
    /// The blob is done.
    fn blob_finished(&self, _digest: &Digest, _outcome: &BlobOutcome) {}
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl TransferObserver for Silent {}

/// The registry repository and tag-or-digest a reference designates. A digest
/// wins over a tag (`name:tag@sha256:...` fetches by digest); without either,
/// the tag is `latest`.
pub fn remote_target(reference: &Reference) -> Result<(Repository, TagOrDigest)> {
    let repository = Repository::new(reference.domain(), reference.path()).map_err(|e| {
        DistributionError::InvalidReference {
            reference: reference.to_string(),
            detail: e.to_string(),
        }
    })?;
    let target = match (reference.digest(), reference.tag()) {
        (Some(digest), _) => TagOrDigest::Digest(digest),
        (None, Some(tag)) => TagOrDigest::Tag(tag.to_owned()),
        (None, None) => TagOrDigest::Tag(stowage_image::reference::DEFAULT_TAG.to_owned()),
    };
    Ok((repository, target))
}

/// The platform to pull by default: the one this binary runs on.
pub fn native_platform() -> stowage_image::Platform {
    let native = stowage_registry::Platform::native();
    stowage_image::Platform::new(&native.os, &native.architecture, native.variant.as_deref())
}

fn registry_platform(platform: &stowage_image::Platform) -> stowage_registry::Platform {
    stowage_registry::Platform {
        os: platform.os.clone(),
        architecture: platform.architecture.clone(),
        variant: platform.variant.clone().filter(|v| !v.is_empty()),
    }
}

#[cfg(test)]
mod tests;

/// Runs `work` on every item with at most `workers` threads, stopping after the
/// first failure and returning that failure with its own type.
pub(crate) fn run_parallel<T, F>(items: Vec<T>, workers: usize, work: F) -> Result<()>
where
    T: Send,
    F: Fn(T) -> Result<()> + Sync,
{
    let first_error: std::sync::Mutex<Option<DistributionError>> = std::sync::Mutex::new(None);
    let outcome = stowage_registry::for_each_parallel(items, workers.max(1), |item| {
        work(item).map_err(|error| {
            let mut slot = first_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(error);
            }
            stowage_registry::RegistryError::Cancelled
        })
    });
    let recorded = first_error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match (recorded, outcome) {
        (Some(error), _) => Err(error),
        (None, Err(error)) => Err(error.into()),
        (None, Ok(())) => Ok(()),
    }
}
