//! Pulling: resolve a reference to one platform's manifest, fetch its config,
//! download the layers the store lacks (a few at a time, each streamed through
//! the store's verifying blob writer), commit the image and record where it
//! came from. Also the planner's view ([`resolve_remote`]: digest and config,
//! no layers) and `FROM`'s on-demand pull ([`ensure_image`]).

use std::io::Write;
use std::sync::Mutex;

use stowage_digest::Digest;
use stowage_image::{
    Descriptor, ImageConfig, ImageId, ImageManifest, LayerInfo, ParsedManifest, Platform,
    Reference, media_types,
};
use stowage_registry::{DEFAULT_PARALLEL_TRANSFERS, RegistryClient, Repository, TagOrDigest};
use stowage_store::{ImageCommit, Store, StoreError};

use crate::error::{DistributionError, Result};
use crate::records::Records;
use crate::{
    BlobKind, BlobOutcome, Silent, TransferObserver, native_platform, registry_platform,
    remote_target,
};

/// Largest config blob accepted (the same bound the store uses for JSON blobs).
pub const MAX_CONFIG_SIZE: u64 = 16 * 1024 * 1024;

/// How to pull.
#[derive(Clone, Copy)]
pub struct PullOptions<'a> {
    /// The platform to pick from a manifest list or index (None: [`native_platform`]).
    pub platform: Option<&'a Platform>,
    /// Receives per-blob progress.
    pub observer: &'a dyn TransferObserver,
    /// Concurrent layer downloads (at least 1).
    pub parallel: usize,
}

impl std::fmt::Debug for PullOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("platform", &self.platform)
            .field("parallel", &self.parallel)
            .finish()
    }
}

impl Default for PullOptions<'_> {
    fn default() -> Self {
        PullOptions {
            platform: None,
            observer: &Silent,
            parallel: DEFAULT_PARALLEL_TRANSFERS,
        }
    }
}

/// A base image as the registry describes it, without its layers.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteImage {
    /// The digest the reference resolves to in its repository: the index or
    /// manifest list's when there is one, else the image manifest's. This is
    /// what `name@digest` pins.
    pub repo_digest: Digest,
    /// Digest of the platform's image manifest.
    pub manifest_digest: Digest,
    /// The parsed image manifest.
    pub manifest: ImageManifest,
    /// Its exact bytes.
    pub manifest_bytes: Vec<u8>,
    /// The image ID (config digest).
    pub id: ImageId,
    /// The parsed config.
    pub config: ImageConfig,
    /// Its exact bytes.
    pub config_bytes: Vec<u8>,
}

/// What [`pull`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct PulledImage {
    /// The reference pulled, normalized (`docker.io/library/alpine:latest`).
    pub reference: Reference,
    /// `name@digest` (Docker's `RepoDigests` entry), recorded in [`Records`].
    pub repo_digest: String,
    /// Digest of the index / manifest list the platform was picked from, if any.
    pub index_digest: Option<Digest>,
    /// Digest of the stored image manifest.
    pub manifest_digest: Digest,
    /// The image ID.
    pub id: ImageId,
    /// Whether the tag already pointed at this very image (nothing new).
    pub up_to_date: bool,
    /// Layers downloaded now.
    pub layers_downloaded: usize,
    /// Layers the store already had.
    pub layers_present: usize,
    /// Bytes downloaded (layers and config).
    pub bytes_downloaded: u64,
}

/// When [`ensure_image`] talks to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only if the store has no image for the reference (`FROM x`).
    Missing,
    /// Always check for a newer image (`--pull`).
    Always,
}

/// What [`ensure_image`] found or pulled.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsuredImage {
    /// The image ID.
    pub id: ImageId,
    /// Digest of the stored image manifest.
    pub manifest_digest: Digest,
    /// The pull, when one happened.
    pub pulled: Option<PulledImage>,
}

/// A writer into memory that refuses to grow past a limit.
pub(crate) struct BoundedBuffer {
    pub(crate) bytes: Vec<u8>,
    pub(crate) limit: u64,
}

impl Write for BoundedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if (self.bytes.len() as u64).saturating_add(buf.len() as u64) > self.limit {
            return Err(std::io::Error::other(format!(
                "more than the {}-byte limit",
                self.limit
            )));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn invalid(reference: &Reference, detail: impl Into<String>) -> DistributionError {
    DistributionError::InvalidImage {
        reference: reference.to_string(),
        detail: detail.into(),
    }
}

/// The manifest part of a resolution.
struct ResolvedImage {
    repository: Repository,
    repo_digest: Digest,
    index_digest: Option<Digest>,
    manifest_digest: Digest,
    manifest: ImageManifest,
    manifest_bytes: Vec<u8>,
}

fn resolve_manifest(
    client: &RegistryClient,
    reference: &Reference,
    platform: Option<&Platform>,
) -> Result<ResolvedImage> {
    let (repository, target) = remote_target(reference)?;
    let wanted = platform.cloned().unwrap_or_else(native_platform);
    let resolved =
        client.get_manifest_for_platform(&repository, &target, &registry_platform(&wanted))?;
    let image = resolved.manifest;
    let manifest = match ParsedManifest::parse(&image.bytes, Some(&image.media_type))
        .map_err(|e| invalid(reference, format!("manifest {}: {e}", image.digest)))?
    {
        ParsedManifest::Image(manifest) => manifest,
        ParsedManifest::Index(_) => {
            return Err(invalid(
                reference,
                format!("manifest {} is an index inside an index", image.digest),
            ));
        }
    };
    if !media_types::is_config(&manifest.config.media_type) {
        return Err(invalid(
            reference,
            format!(
                "not a container image: config media type {:?}",
                manifest.config.media_type
            ),
        ));
    }
    if manifest.config.size > MAX_CONFIG_SIZE {
        return Err(invalid(
            reference,
            format!(
                "config is {} bytes, more than the {MAX_CONFIG_SIZE}-byte limit",
                manifest.config.size
            ),
        ));
    }
    for layer in &manifest.layers {
        if !media_types::is_layer(&layer.media_type) {
            return Err(DistributionError::UnsupportedLayer {
                reference: reference.to_string(),
                digest: layer.digest,
                media_type: layer.media_type.clone(),
            });
        }
    }
    let index_digest = resolved.index.as_ref().map(|index| index.digest);
    Ok(ResolvedImage {
        repository,
        repo_digest: index_digest.unwrap_or(image.digest),
        index_digest,
        manifest_digest: image.digest,
        manifest,
        manifest_bytes: image.bytes,
    })
}

/// Fetches the config (from the store when it has it), verified, and checks it
/// against the manifest's layers.
fn fetch_config(
    client: &RegistryClient,
    store: Option<&Store>,
    reference: &Reference,
    image: &ResolvedImage,
    observer: &dyn TransferObserver,
) -> Result<(Vec<u8>, ImageConfig, bool)> {
    let descriptor = &image.manifest.config;
    let (bytes, downloaded) = match store {
        Some(store) if store.has_blob(&descriptor.digest) => {
            (store.read_blob(&descriptor.digest, MAX_CONFIG_SIZE)?, false)
        }
        _ => {
            observer.blob_started(&descriptor.digest, descriptor.size, BlobKind::Config);
            let mut buffer = BoundedBuffer {
                bytes: Vec::new(),
                limit: MAX_CONFIG_SIZE,
            };
            let progress = |digest: &Digest, done: u64, total: Option<u64>| {
                observer.blob_progress(digest, done, total)
            };
            client.fetch_blob(
                &image.repository,
                &descriptor.digest,
                Some(descriptor.size),
                &mut buffer,
                &progress,
            )?;
            observer.blob_finished(&descriptor.digest, &BlobOutcome::Downloaded);
            (buffer.bytes, true)
        }
    };
    if bytes.len() as u64 != descriptor.size {
        return Err(invalid(
            reference,
            format!(
                "config {} has {} bytes, the manifest says {}",
                descriptor.digest,
                bytes.len(),
                descriptor.size
            ),
        ));
    }
    let config: ImageConfig = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(
            reference,
            format!(
                "config {} at line {} column {}: {e}",
                descriptor.digest,
                e.line(),
                e.column()
            ),
        )
    })?;
    if config.rootfs.diff_ids.len() != image.manifest.layers.len() {
        return Err(invalid(
            reference,
            format!(
                "the manifest has {} layers but the config lists {} diff_ids",
                image.manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    Ok((bytes, config, downloaded))
}

/// A base image's digests, manifest and config, for planning: downloads the
/// manifest(s) and the config, never a layer, and writes nothing.
pub fn resolve_remote(
    client: &RegistryClient,
    reference: &Reference,
    platform: Option<&Platform>,
) -> Result<RemoteImage> {
    let image = resolve_manifest(client, reference, platform)?;
    let (config_bytes, config, _) = fetch_config(client, None, reference, &image, &Silent)?;
    Ok(RemoteImage {
        repo_digest: image.repo_digest,
        manifest_digest: image.manifest_digest,
        id: ImageId::from_config_bytes(&config_bytes),
        manifest: image.manifest,
        manifest_bytes: image.manifest_bytes,
        config,
        config_bytes,
    })
}

/// Downloads one layer into the store unless it is there; returns whether it
/// downloaded and how many bytes.
fn fetch_layer(
    store: &Store,
    client: &RegistryClient,
    repository: &Repository,
    layer: &Descriptor,
    observer: &dyn TransferObserver,
) -> Result<(bool, u64)> {
    observer.blob_started(&layer.digest, layer.size, BlobKind::Layer);
    if store.has_blob(&layer.digest) && store.blob_size(&layer.digest)? == layer.size {
        observer.blob_finished(&layer.digest, &BlobOutcome::AlreadyInStore);
        return Ok((false, 0));
    }
    let mut writer = store.blob_writer(Some(layer.digest), Some(layer.size))?;
    let progress = |digest: &Digest, done: u64, total: Option<u64>| {
        observer.blob_progress(digest, done, total)
    };
    let written = client.fetch_blob(
        repository,
        &layer.digest,
        Some(layer.size),
        &mut writer,
        &progress,
    )?;
    writer.commit()?;
    observer.blob_finished(&layer.digest, &BlobOutcome::Downloaded);
    Ok((true, written))
}

/// Pulls `reference` into the store: see the module documentation. A reference
/// with a tag is tagged locally; one pinned by digest only is stored untagged
/// (it is found again through its repository digest).
pub fn pull(
    store: &Store,
    client: &RegistryClient,
    reference: &Reference,
    options: &PullOptions<'_>,
) -> Result<PulledImage> {
    let observer = options.observer;
    // Keep garbage collection away until the image that references the blobs is committed.
    let _lease = store.lease()?;
    let records = Records::open(store)?;
    let image = resolve_manifest(client, reference, options.platform)?;
    let (config_bytes, config, config_downloaded) =
        fetch_config(client, Some(store), reference, &image, observer)?;

    let tag = if reference.digest().is_none() {
        Some(reference.clone().with_default_tag())
    } else {
        None
    };
    let previous = match &tag {
        Some(tag) => match store.resolve(&tag.to_string()) {
            Ok(found) => Some(found.manifest_digest),
            Err(StoreError::ImageNotFound(_)) => None,
            Err(other) => return Err(other.into()),
        },
        None => None,
    };

    let downloaded = Mutex::new((0usize, 0u64));
    crate::run_parallel(
        image.manifest.layers.iter().collect(),
        options.parallel,
        |layer: &Descriptor| {
            let (fetched, bytes) = fetch_layer(store, client, &image.repository, layer, observer)?;
            if fetched {
                let mut totals = downloaded.lock().unwrap_or_else(|p| p.into_inner());
                totals.0 += 1;
                totals.1 = totals.1.saturating_add(bytes);
            }
            Ok(())
        },
    )?;
    let (layers_downloaded, mut bytes_downloaded) =
        downloaded.into_inner().unwrap_or_else(|p| p.into_inner());
    if config_downloaded {
        bytes_downloaded = bytes_downloaded.saturating_add(config_bytes.len() as u64);
    }

    let layers = remote_layers(&image.manifest, &config.rootfs.diff_ids);
    let committed = store.commit_image(&ImageCommit {
        manifest: image.manifest_bytes.clone(),
        config: config_bytes,
        layers,
        tags: tag.iter().cloned().collect(),
    })?;

    let name = reference.name();
    let mut blobs: Vec<Digest> = image.manifest.layers.iter().map(|l| l.digest).collect();
    blobs.push(image.manifest.config.digest);
    records.record_blobs(
        &image.repository.registry,
        &image.repository.repository,
        &blobs,
    )?;
    records.record_repo_digest(&name, &image.repo_digest, &committed.manifest_digest)?;

    Ok(PulledImage {
        reference: tag.unwrap_or_else(|| reference.clone()),
        repo_digest: format!("{name}@{}", image.repo_digest),
        index_digest: image.index_digest,
        manifest_digest: committed.manifest_digest,
        id: committed.id,
        up_to_date: previous == Some(committed.manifest_digest) && layers_downloaded == 0,
        layers_downloaded,
        layers_present: image
            .manifest
            .layers
            .len()
            .saturating_sub(layers_downloaded),
        bytes_downloaded,
    })
}

/// The local image for `reference`, if the store has one: by tag, or by
/// repository digest (an index digest maps to the platform manifest pulled
/// through it), or by manifest digest.
fn find_local(store: &Store, reference: &Reference) -> Result<Option<(ImageId, Digest)>> {
    if let Some(digest) = reference.digest() {
        let records = Records::open(store)?;
        let manifest = records
            .manifest_for_repo_digest(&reference.name(), &digest)?
            .unwrap_or(digest);
        return match store.image_by_manifest(&manifest) {
            Ok(details) => Ok(Some((details.id, details.manifest_digest))),
            Err(StoreError::ImageNotFound(_)) => Ok(None),
            Err(other) => Err(other.into()),
        };
    }
    match store.resolve(&reference.clone().with_default_tag().to_string()) {
        Ok(found) => Ok(Some((found.id, found.manifest_digest))),
        Err(StoreError::ImageNotFound(_)) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

/// Makes sure the store has an image for `reference`, pulling per `policy`.
/// With [`PullPolicy::Missing`] a present image costs no network access.
pub fn ensure_image(
    store: &Store,
    client: &RegistryClient,
    reference: &Reference,
    policy: PullPolicy,
    options: &PullOptions<'_>,
) -> Result<EnsuredImage> {
    if policy == PullPolicy::Missing
        && let Some((id, manifest_digest)) = find_local(store, reference)?
    {
        return Ok(EnsuredImage {
            id,
            manifest_digest,
            pulled: None,
        });
    }
    let pulled = pull(store, client, reference, options)?;
    Ok(EnsuredImage {
        id: pulled.id,
        manifest_digest: pulled.manifest_digest,
        pulled: Some(pulled),
    })
}

/// The tag-or-digest a pull of `reference` asks the registry for (for messages).
pub fn describe_target(reference: &Reference) -> Result<String> {
    let (repository, target) = remote_target(reference)?;
    Ok(match target {
        TagOrDigest::Tag(tag) => format!("{repository}:{tag}"),
        TagOrDigest::Digest(digest) => format!("{repository}@{digest}"),
    })
}

/// The layers a registry manifest lists, paired with the config's diff_ids (the registry
/// says nothing of uncompressed sizes).
pub fn remote_layers(manifest: &ImageManifest, diff_ids: &[Digest]) -> Vec<LayerInfo> {
    manifest
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(descriptor, diff_id)| LayerInfo {
            diff_id: *diff_id,
            blob_digest: descriptor.digest,
            media_type: descriptor.media_type.clone(),
            compressed_size: descriptor.size,
            uncompressed_size: None,
        })
        .collect()
}
