//! Pushing: upload a stored image's layers a few at a time (HEAD skip, mount
//! from another repository of the same registry that [`Records`] knows holds
//! the blob, else a streaming upload from the blob file), then its config, then
//! its manifest bytes unchanged under the tag (so the pushed digest is the
//! local manifest digest).

use std::sync::Mutex;

use stowage_digest::Digest;
use stowage_image::Reference;
use stowage_registry::{
    DEFAULT_PARALLEL_TRANSFERS, FileSource, PushOutcome, RegistryClient, RegistryError, Repository,
    TagOrDigest,
};
use stowage_store::Store;

use crate::error::{DistributionError, Result};
use crate::records::Records;
use crate::{BlobKind, BlobOutcome, Silent, TransferObserver, remote_target};

/// How to push.
#[derive(Clone, Copy)]
pub struct PushOptions<'a> {
    /// Receives per-blob progress.
    pub observer: &'a dyn TransferObserver,
    /// Concurrent layer uploads (at least 1).
    pub parallel: usize,
    /// Try cross-repository mounts from repositories known to hold a blob.
    pub mount: bool,
}

impl std::fmt::Debug for PushOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("parallel", &self.parallel)
            .field("mount", &self.mount)
            .finish()
    }
}

impl Default for PushOptions<'_> {
    fn default() -> Self {
        PushOptions {
            observer: &Silent,
            parallel: DEFAULT_PARALLEL_TRANSFERS,
            mount: true,
        }
    }
}

/// What [`push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// Where it went, with its tag (`127.0.0.1:5000/app:latest`) or digest.
    pub reference: Reference,
    /// The manifest digest in the registry (equal to the local manifest digest).
    pub manifest_digest: Digest,
    /// The manifest size in bytes.
    pub manifest_size: u64,
    /// Each layer's outcome, in manifest order, then the config's.
    pub blobs: Vec<(Digest, BlobOutcome)>,
}

/// Pushes the blob at `path` to `repository`, mounting from a known repository
/// when possible. A failing mount (no pull right on the source, a registry that
/// refuses mounts) falls back to a plain push and forgets the source.
pub(crate) fn push_one(
    client: &RegistryClient,
    records: &Records,
    repository: &Repository,
    digest: &Digest,
    source: &dyn stowage_registry::BlobSource,
    mount: bool,
    observer: &dyn TransferObserver,
) -> Result<BlobOutcome> {
    let progress = |digest: &Digest, done: u64, total: Option<u64>| {
        observer.blob_progress(digest, done, total)
    };
    let mount_from = if mount {
        records.mount_source(&repository.registry, &repository.repository, digest)?
    } else {
        None
    };
    let outcome =
        match client.push_blob(repository, digest, source, mount_from.as_deref(), &progress) {
            Ok(outcome) => outcome,
            Err(
                RegistryError::Unauthorized { .. }
                | RegistryError::Forbidden { .. }
                | RegistryError::NotFound { .. }
                | RegistryError::UnexpectedStatus { .. },
            ) if mount_from.is_some() => {
                if let Some(from) = &mount_from {
                    records.forget_blob(&repository.registry, from, digest)?;
                }
                client.push_blob(repository, digest, source, None, &progress)?
            }
            Err(other) => return Err(other.into()),
        };
    Ok(match outcome {
        PushOutcome::AlreadyExists => BlobOutcome::AlreadyInRegistry,
        PushOutcome::Uploaded => BlobOutcome::Uploaded,
        PushOutcome::Mounted => BlobOutcome::Mounted {
            from: mount_from.unwrap_or_default(),
        },
    })
}

/// Pushes the local image `local` (anything [`Store::resolve`] accepts) to
/// `remote`. Without a tag or digest in `remote`, the tag is `latest`.
pub fn push(
    store: &Store,
    client: &RegistryClient,
    local: &str,
    remote: &Reference,
    options: &PushOptions<'_>,
) -> Result<PushedImage> {
    let _lease = store.lease()?;
    let image = store.image(local)?;
    let local_manifest = image.manifest_digest;
    push_details(store, client, &image, local_manifest, remote, options)
}

/// Pushes `image`, whose blobs are in `store`: a stored image, or one derived
/// from it (e.g. with recompressed layers). `local_manifest` is the stored
/// image's manifest digest, under which the pushed digest is recorded.
pub fn push_details(
    store: &Store,
    client: &RegistryClient,
    image: &stowage_store::ImageDetails,
    local_manifest: Digest,
    remote: &Reference,
    options: &PushOptions<'_>,
) -> Result<PushedImage> {
    let observer = options.observer;
    let _lease = store.lease()?;
    let records = Records::open(store)?;
    let (repository, target) = remote_target(remote)?;
    if let TagOrDigest::Digest(wanted) = &target
        && *wanted != image.manifest_digest
        && remote.tag().is_none()
    {
        return Err(DistributionError::InvalidReference {
            reference: remote.to_string(),
            detail: format!(
                "the local image's manifest digest is {}, not {wanted}",
                image.manifest_digest
            ),
        });
    }

    let outcomes: Mutex<Vec<Option<BlobOutcome>>> = Mutex::new(vec![None; image.layers.len()]);
    crate::run_parallel(
        image.layers.iter().enumerate().collect(),
        options.parallel,
        |(position, layer)| {
            observer.blob_started(&layer.blob_digest, layer.compressed_size, BlobKind::Layer);
            let source = FileSource::new(store.blob_path(&layer.blob_digest))?;
            if stowage_registry::BlobSource::len(&source) != layer.compressed_size {
                return Err(stowage_store::StoreError::SizeMismatch {
                    digest: layer.blob_digest,
                    expected: layer.compressed_size,
                    actual: stowage_registry::BlobSource::len(&source),
                }
                .into());
            }
            let outcome = push_one(
                client,
                &records,
                &repository,
                &layer.blob_digest,
                &source,
                options.mount,
                observer,
            )?;
            observer.blob_finished(&layer.blob_digest, &outcome);
            if let Some(slot) = outcomes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(position)
            {
                *slot = Some(outcome);
            }
            Ok(())
        },
    )?;
    let mut blobs: Vec<(Digest, BlobOutcome)> = image
        .layers
        .iter()
        .zip(outcomes.into_inner().unwrap_or_else(|p| p.into_inner()))
        .map(|(layer, outcome)| {
            (
                layer.blob_digest,
                outcome.unwrap_or(BlobOutcome::AlreadyInRegistry),
            )
        })
        .collect();

    let config_digest = image.id.digest();
    observer.blob_started(
        &config_digest,
        image.config_bytes.len() as u64,
        BlobKind::Config,
    );
    let config_outcome = push_one(
        client,
        &records,
        &repository,
        &config_digest,
        &image.config_bytes,
        options.mount,
        observer,
    )?;
    observer.blob_finished(&config_digest, &config_outcome);
    blobs.push((config_digest, config_outcome));

    let manifest_target = match (remote.tag(), &target) {
        (Some(tag), _) => TagOrDigest::Tag(tag.to_owned()),
        (None, target) => target.clone(),
    };
    let manifest_digest = client.put_manifest(
        &repository,
        &manifest_target,
        &image.manifest_bytes,
        image.manifest.media_type(),
    )?;

    let digests: Vec<Digest> = blobs.iter().map(|(digest, _)| *digest).collect();
    records.record_blobs(&repository.registry, &repository.repository, &digests)?;
    records.record_repo_digest(&remote.name(), &manifest_digest, &local_manifest)?;

    let reference = match manifest_target {
        TagOrDigest::Tag(tag) => {
            remote
                .with_tag(&tag)
                .map_err(|e| DistributionError::InvalidReference {
                    reference: remote.to_string(),
                    detail: e.to_string(),
                })?
        }
        TagOrDigest::Digest(_) => remote.clone(),
    };
    Ok(PushedImage {
        reference,
        manifest_digest,
        manifest_size: image.manifest_bytes.len() as u64,
        blobs,
    })
}
