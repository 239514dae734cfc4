//! Images and tags: committing an image (blobs first, then one transaction, then
//! `index.json`), tagging, resolving what a user typed, listing, inspecting and removing.
//!
//! Removal rules (kept deliberately simple, close to `docker rmi`):
//! - removing a tag (`name:tag`) untags; if that was the image's last tag the image record
//!   is deleted too;
//! - removing by ID, ID prefix or digest deletes the image and all its tags, but refuses
//!   with [`StoreError::Conflict`] when more than one tag points at it, unless `force`;
//! - layers are content-addressed and shared, so no image can break another: blobs and
//!   unpacked layers are only freed by [`Store::prune`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use stowage_digest::Digest;
use stowage_image::{
    Descriptor, ImageConfig, ImageId, ImageManifest, LayerInfo, ParsedManifest, Platform,
    Reference, media_types,
};

use crate::Store;
use crate::error::{Result, StoreError};

/// Largest manifest or config blob read into memory.
pub const MAX_JSON_BLOB: u64 = 16 * 1024 * 1024;

/// Which manifest flavour [`Store::commit_config`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image manifest with an OCI config media type.
    Oci,
    /// Docker v2 schema 2 manifest with Docker's config media type.
    Docker,
}

/// Everything needed to record an image. Layer blobs must already be in the store
/// (via [`Store::put_blob`] / [`Store::blob_writer`]); config and manifest bytes are
/// written by the commit itself.
#[derive(Debug, Clone)]
pub struct ImageCommit {
    /// The exact manifest bytes (their digest is the image's manifest digest).
    pub manifest: Vec<u8>,
    /// The exact config bytes (their digest is the image ID).
    pub config: Vec<u8>,
    /// One entry per manifest layer, in order.
    pub layers: Vec<LayerInfo>,
    /// Tags to point at the image (parsed references; a missing tag means `latest`).
    pub tags: Vec<Reference>,
}

/// The identity of a committed image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedImage {
    /// Digest of the manifest blob.
    pub manifest_digest: Digest,
    /// Image ID (config digest).
    pub id: ImageId,
    /// Manifest size in bytes.
    pub manifest_size: u64,
}

/// One row of `images` output: from the database only, no blob reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Image ID (config digest).
    pub id: ImageId,
    /// Manifest digest.
    pub manifest_digest: Digest,
    /// Manifest media type.
    pub manifest_media_type: String,
    /// Tags, sorted.
    pub tags: Vec<Reference>,
    /// The config's `created`, verbatim.
    pub created: Option<String>,
    /// `created` as Unix seconds, when it parses.
    pub created_unix: Option<i64>,
    /// Sum of layer blob sizes.
    pub compressed_size: u64,
    /// Sum of uncompressed layer sizes; `None` if any is unknown.
    pub uncompressed_size: Option<u64>,
    /// The image's platform.
    pub platform: Platform,
}

/// A fully loaded image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDetails {
    /// Image ID (config digest).
    pub id: ImageId,
    /// Manifest digest.
    pub manifest_digest: Digest,
    /// Parsed manifest.
    pub manifest: ImageManifest,
    /// Exact manifest bytes.
    pub manifest_bytes: Vec<u8>,
    /// Parsed config.
    pub config: ImageConfig,
    /// Exact config bytes.
    pub config_bytes: Vec<u8>,
    /// Layers in order.
    pub layers: Vec<LayerInfo>,
    /// Tags, sorted.
    pub tags: Vec<Reference>,
}

/// What [`Store::remove_image`] did, in Docker's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveEvent {
    /// A tag was removed.
    Untagged(Reference),
    /// An image record was deleted (its blobs remain until prune).
    Deleted {
        /// Image ID.
        id: ImageId,
        /// Manifest digest.
        manifest_digest: Digest,
    },
}

/// A recorded unpacked layer tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    /// The layer's diff_id.
    pub diff_id: Digest,
    /// Where the tree is (`<root>/layers-v1/<hex>`).
    pub path: std::path::PathBuf,
    /// Bytes used, as recorded.
    pub size: u64,
    /// When it was recorded (Unix seconds).
    pub unpacked_unix: i64,
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn to_sql_size(size: u64) -> Result<i64> {
    i64::try_from(size).map_err(|_| StoreError::SizeOverflow(size))
}

pub(crate) fn from_sql_size(size: i64) -> u64 {
    u64::try_from(size).unwrap_or(0)
}

pub(crate) fn parse_db_digest(text: &str) -> Result<Digest> {
    text.parse()
        .map_err(|e| StoreError::InvalidImage(format!("bad digest {text:?} in database: {e}")))
}

/// Normalizes a reference used as a tag: adds `latest`, rejects digests.
fn tag_reference(reference: &Reference) -> Result<Reference> {
    if reference.digest().is_some() {
        return Err(StoreError::DigestAsTag(reference.to_string()));
    }
    Ok(reference.clone().with_default_tag())
}

fn invalid(message: String) -> StoreError {
    StoreError::InvalidImage(message)
}

impl Store {
    /// Records an image: validates that manifest, config and layer list agree and that
    /// every layer blob is present, stores the config and manifest blobs, then records
    /// image, layers and tags in one transaction, then regenerates `index.json`.
    pub fn commit_image(&self, image: &ImageCommit) -> Result<CommittedImage> {
        let _lease = self.lease()?;
        let manifest_digest = Digest::of(&image.manifest);
        let manifest = match ParsedManifest::parse(&image.manifest, None)
            .map_err(|e| invalid(format!("manifest {manifest_digest}: {e}")))?
        {
            ParsedManifest::Image(manifest) => manifest,
            ParsedManifest::Index(_) => {
                return Err(invalid(
                    "multi-platform indexes cannot be committed as an image".into(),
                ));
            }
        };
        let config: ImageConfig =
            serde_json::from_slice(&image.config).map_err(|e| invalid(format!("config: {e}")))?;
        let id = ImageId::from_config_bytes(&image.config);
        if manifest.config.digest != id.digest()
            || manifest.config.size != image.config.len() as u64
        {
            return Err(invalid(format!(
                "manifest config descriptor ({} {} bytes) does not match the config ({} {} bytes)",
                manifest.config.digest,
                manifest.config.size,
                id,
                image.config.len()
            )));
        }
        if manifest.layers.len() != image.layers.len() {
            return Err(invalid(format!(
                "manifest has {} layers but {} layer records were given",
                manifest.layers.len(),
                image.layers.len()
            )));
        }
        for (position, (descriptor, layer)) in manifest.layers.iter().zip(&image.layers).enumerate()
        {
            if descriptor.digest != layer.blob_digest
                || descriptor.size != layer.compressed_size
                || descriptor.media_type != layer.media_type
            {
                return Err(invalid(format!(
                    "layer {position}: manifest says {} {} ({} bytes), layer record says {} {} ({} bytes)",
                    descriptor.media_type,
                    descriptor.digest,
                    descriptor.size,
                    layer.media_type,
                    layer.blob_digest,
                    layer.compressed_size
                )));
            }
            let size = self.blob_size(&layer.blob_digest)?;
            if size != layer.compressed_size {
                return Err(StoreError::SizeMismatch {
                    digest: layer.blob_digest,
                    expected: layer.compressed_size,
                    actual: size,
                });
            }
        }
        let diff_ids: Vec<Digest> = image.layers.iter().map(|l| l.diff_id).collect();
        if config.rootfs.diff_ids != diff_ids {
            return Err(invalid(format!(
                "config rootfs.diff_ids ({} entries) do not match the layers' diff_ids ({} entries) in order",
                config.rootfs.diff_ids.len(),
                diff_ids.len()
            )));
        }
        let tags = image
            .tags
            .iter()
            .map(tag_reference)
            .collect::<Result<Vec<_>>>()?;

        self.put_blob_bytes(&image.config, Some(id.digest()))?;
        self.put_blob_bytes(&image.manifest, Some(manifest_digest))?;
        // The layers, config and manifest renames become durable before the transaction
        // below refers to them: one fsync of the blobs directory for all of them.
        self.sync_blobs_dir()?;

        let created_unix = config
            .created
            .as_deref()
            .and_then(|c| c.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second());
        let compressed: u64 = image
            .layers
            .iter()
            .fold(0u64, |acc, l| acc.saturating_add(l.compressed_size));
        let uncompressed: Option<u64> = image.layers.iter().try_fold(0u64, |acc, l| {
            l.uncompressed_size.map(|s| acc.saturating_add(s))
        });
        let now = now_unix();
        {
            let mut conn = self.conn();
            let db_err = self.db_err();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&db_err)?;
            for layer in &image.layers {
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT diff_id FROM layers WHERE blob_digest = ?1",
                        [layer.blob_digest.to_string()],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(&db_err)?;
                if let Some(existing) = existing
                    && existing != layer.diff_id.to_string()
                {
                    return Err(invalid(format!(
                        "layer blob {} is already recorded with diff_id {existing}, not {}",
                        layer.blob_digest, layer.diff_id
                    )));
                }
                tx.execute(
                    "INSERT INTO layers (blob_digest, diff_id, media_type, compressed_size, uncompressed_size)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(blob_digest) DO UPDATE SET
                        uncompressed_size = COALESCE(layers.uncompressed_size, excluded.uncompressed_size)",
                    params![
                        layer.blob_digest.to_string(),
                        layer.diff_id.to_string(),
                        layer.media_type,
                        to_sql_size(layer.compressed_size)?,
                        layer.uncompressed_size.map(to_sql_size).transpose()?,
                    ],
                )
                .map_err(&db_err)?;
            }
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO images (manifest_digest, config_digest, manifest_media_type,
                        manifest_size, config_size, created, created_unix, os, architecture, variant,
                        compressed_size, uncompressed_size, added_unix)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                    params![
                        manifest_digest.to_string(),
                        id.to_string(),
                        manifest.media_type(),
                        to_sql_size(image.manifest.len() as u64)?,
                        to_sql_size(image.config.len() as u64)?,
                        config.created,
                        created_unix,
                        config.os,
                        config.architecture,
                        config.variant,
                        to_sql_size(compressed)?,
                        uncompressed.map(to_sql_size).transpose()?,
                        now,
                    ],
                )
                .map_err(&db_err)?;
            if inserted > 0 {
                for (position, layer) in image.layers.iter().enumerate() {
                    tx.execute(
                        "INSERT INTO image_layers (manifest_digest, position, blob_digest) VALUES (?1, ?2, ?3)",
                        params![manifest_digest.to_string(), position as i64, layer.blob_digest.to_string()],
                    )
                    .map_err(&db_err)?;
                }
            }
            for tag in &tags {
                tx.execute(
                    "INSERT INTO tags (reference, manifest_digest, updated_unix) VALUES (?1, ?2, ?3)
                     ON CONFLICT(reference) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                        updated_unix = excluded.updated_unix",
                    params![tag.to_string(), manifest_digest.to_string(), now],
                )
                .map_err(&db_err)?;
            }
            tx.commit().map_err(&db_err)?;
        }
        self.regenerate_index()?;
        Ok(CommittedImage {
            manifest_digest,
            id,
            manifest_size: image.manifest.len() as u64,
        })
    }

    /// Serializes `config` canonically, builds a manifest of `format` over `layers`, and
    /// commits it with [`Store::commit_image`].
    pub fn commit_config(
        &self,
        config: &ImageConfig,
        layers: Vec<LayerInfo>,
        tags: Vec<Reference>,
        format: ManifestFormat,
    ) -> Result<CommittedImage> {
        let config_bytes = config.to_canonical_json()?;
        let config_type = match format {
            ManifestFormat::Oci => media_types::OCI_CONFIG,
            ManifestFormat::Docker => media_types::DOCKER_CONFIG,
        };
        let config_descriptor = Descriptor::of_bytes(config_type, &config_bytes);
        let layer_descriptors = layers
            .iter()
            .map(|l| Descriptor::new(&l.media_type, l.blob_digest, l.compressed_size))
            .collect();
        let manifest = match format {
            ManifestFormat::Oci => ImageManifest::oci(config_descriptor, layer_descriptors),
            ManifestFormat::Docker => ImageManifest::docker(config_descriptor, layer_descriptors),
        };
        let manifest_bytes = manifest.to_canonical_json()?;
        self.commit_image(&ImageCommit {
            manifest: manifest_bytes,
            config: config_bytes,
            layers,
            tags,
        })
    }

    /// Records a layer's uncompressed size once it has been measured (pulled and imported
    /// layers arrive without one). A size already known is kept.
    pub fn record_uncompressed_size(&self, blob: &Digest, size: u64) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE layers SET uncompressed_size = ?2
             WHERE blob_digest = ?1 AND uncompressed_size IS NULL",
            params![blob.to_string(), to_sql_size(size)?],
        )
        .map_err(self.db_err())?;
        Ok(())
    }

    /// Points tag `target` (e.g. `myimage:2`) at the image `source` resolves to.
    pub fn tag(&self, source: &str, target: &str) -> Result<Reference> {
        let resolved = self.resolve(source)?;
        let target = tag_reference(&Reference::parse_normalized(target)?)?;
        {
            let conn = self.conn();
            conn.execute(
                "INSERT INTO tags (reference, manifest_digest, updated_unix) VALUES (?1, ?2, ?3)
                 ON CONFLICT(reference) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                    updated_unix = excluded.updated_unix",
                params![
                    target.to_string(),
                    resolved.manifest_digest.to_string(),
                    now_unix()
                ],
            )
            .map_err(self.db_err())?;
        }
        self.regenerate_index()?;
        Ok(target)
    }

    /// Resolves what a user typed, in Docker's order: a full image ID (`<64 hex>` or
    /// `sha256:<64 hex>`, also accepted as a manifest digest), a reference (`name`,
    /// `name:tag`, `name@sha256:...` — the digest is matched against manifest digests),
    /// then a unique image-ID prefix (`3f5a`, `sha256:3f5a`).
    /// When several manifests share one config, the most recently added wins.
    pub fn resolve(&self, input: &str) -> Result<CommittedImage> {
        let not_found = || StoreError::ImageNotFound(input.to_owned());
        let full_id: Option<Digest> = if input.len() == 64 {
            Digest::from_hex(input).ok()
        } else {
            input.parse().ok()
        };
        if let Some(digest) = full_id {
            return self
                .find_by_config(&digest)?
                .or(self.find_by_manifest(&digest)?)
                .ok_or_else(not_found);
        }
        if let Ok(reference) = Reference::parse(input) {
            let found = match reference.digest() {
                Some(digest) => self.find_by_manifest(&digest)?,
                None => self.find_by_tag(&reference)?,
            };
            if let Some(found) = found {
                return Ok(found);
            }
        }
        let prefix = input.strip_prefix("sha256:").unwrap_or(input);
        let is_hex_prefix = !prefix.is_empty()
            && prefix.len() < 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_hex_prefix {
            return Err(not_found());
        }
        let ids: Vec<String> = {
            let conn = self.conn();
            let mut statement = conn
                .prepare("SELECT DISTINCT config_digest FROM images WHERE config_digest >= ?1 AND config_digest < ?2")
                .map_err(self.db_err())?;
            let low = format!("sha256:{prefix}");
            let high = format!("sha256:{prefix}\u{7f}");
            let rows = statement
                .query_map(params![low, high], |row| row.get::<_, String>(0))
                .map_err(self.db_err())?;
            rows.collect::<std::result::Result<_, _>>()
                .map_err(self.db_err())?
        };
        match ids.as_slice() {
            [] => Err(not_found()),
            [one] => self
                .find_by_config(&parse_db_digest(one)?)?
                .ok_or_else(not_found),
            many => Err(StoreError::AmbiguousId {
                input: input.to_owned(),
                count: many.len(),
            }),
        }
    }

    fn find_one(&self, sql: &str, key: String) -> Result<Option<CommittedImage>> {
        let conn = self.conn();
        let row = conn
            .query_row(sql, [key], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .optional()
            .map_err(self.db_err())?;
        row.map(|(manifest, config, size)| {
            Ok(CommittedImage {
                manifest_digest: parse_db_digest(&manifest)?,
                id: ImageId(parse_db_digest(&config)?),
                manifest_size: from_sql_size(size),
            })
        })
        .transpose()
    }

    fn find_by_config(&self, digest: &Digest) -> Result<Option<CommittedImage>> {
        self.find_one(
            "SELECT manifest_digest, config_digest, manifest_size FROM images WHERE config_digest = ?1
             ORDER BY added_unix DESC, manifest_digest LIMIT 1",
            digest.to_string(),
        )
    }

    fn find_by_manifest(&self, digest: &Digest) -> Result<Option<CommittedImage>> {
        self.find_one(
            "SELECT manifest_digest, config_digest, manifest_size FROM images WHERE manifest_digest = ?1",
            digest.to_string(),
        )
    }

    fn find_by_tag(&self, reference: &Reference) -> Result<Option<CommittedImage>> {
        self.find_one(
            "SELECT i.manifest_digest, i.config_digest, i.manifest_size FROM tags t
             JOIN images i ON i.manifest_digest = t.manifest_digest WHERE t.reference = ?1",
            reference.to_string(),
        )
    }

    fn tags_by_manifest(&self) -> Result<BTreeMap<String, Vec<Reference>>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("SELECT manifest_digest, reference FROM tags ORDER BY reference")
            .map_err(self.db_err())?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(self.db_err())?;
        let mut out: BTreeMap<String, Vec<Reference>> = BTreeMap::new();
        for row in rows {
            let (manifest, reference) = row.map_err(self.db_err())?;
            out.entry(manifest)
                .or_default()
                .push(Reference::parse_normalized(&reference)?);
        }
        Ok(out)
    }

    /// All images, newest first (by config `created`, then manifest digest). Reads only the
    /// database.
    pub fn list_images(&self) -> Result<Vec<ImageSummary>> {
        let mut tags = self.tags_by_manifest()?;
        let conn = self.conn();
        let db_err = self.db_err();
        let mut statement = conn
            .prepare(
                "SELECT manifest_digest, config_digest, manifest_media_type, created, created_unix,
                        compressed_size, uncompressed_size, os, architecture, variant
                 FROM images ORDER BY created_unix IS NULL, created_unix DESC, manifest_digest",
            )
            .map_err(&db_err)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, Option<i64>>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, Option<i64>>(6)?,
                    row.get::<_, String>(7)?,
                    row.get::<_, String>(8)?,
                    row.get::<_, Option<String>>(9)?,
                ))
            })
            .map_err(&db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (
                manifest,
                config,
                media_type,
                created,
                created_unix,
                compressed,
                uncompressed,
                os,
                arch,
                variant,
            ) = row.map_err(&db_err)?;
            out.push(ImageSummary {
                id: ImageId(parse_db_digest(&config)?),
                manifest_digest: parse_db_digest(&manifest)?,
                manifest_media_type: media_type,
                tags: tags.remove(&manifest).unwrap_or_default(),
                created,
                created_unix,
                compressed_size: from_sql_size(compressed),
                uncompressed_size: uncompressed.map(from_sql_size),
                platform: Platform {
                    variant,
                    ..Platform::new(&os, &arch, None)
                },
            });
        }
        Ok(out)
    }

    /// The recorded layers of an image, in order.
    pub fn image_layers(&self, manifest_digest: &Digest) -> Result<Vec<LayerInfo>> {
        let conn = self.conn();
        let db_err = self.db_err();
        let mut statement = conn
            .prepare(
                "SELECT l.diff_id, l.blob_digest, l.media_type, l.compressed_size, l.uncompressed_size
                 FROM image_layers il JOIN layers l ON l.blob_digest = il.blob_digest
                 WHERE il.manifest_digest = ?1 ORDER BY il.position",
            )
            .map_err(&db_err)?;
        let rows = statement
            .query_map([manifest_digest.to_string()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, Option<i64>>(4)?,
                ))
            })
            .map_err(&db_err)?;
        let mut out = Vec::new();
        for row in rows {
            let (diff_id, blob, media_type, compressed, uncompressed) = row.map_err(&db_err)?;
            out.push(LayerInfo {
                diff_id: parse_db_digest(&diff_id)?,
                blob_digest: parse_db_digest(&blob)?,
                media_type,
                compressed_size: from_sql_size(compressed),
                uncompressed_size: uncompressed.map(from_sql_size),
            });
        }
        Ok(out)
    }

    /// Loads an image (resolved like [`Store::resolve`]) with its manifest, config and
    /// layers; manifest and config bytes are verified against their digests.
    pub fn image(&self, input: &str) -> Result<ImageDetails> {
        let resolved = self.resolve(input)?;
        self.image_by_manifest(&resolved.manifest_digest)
    }

    /// Loads an image by manifest digest.
    pub fn image_by_manifest(&self, manifest_digest: &Digest) -> Result<ImageDetails> {
        let resolved = self
            .find_by_manifest(manifest_digest)?
            .ok_or_else(|| StoreError::ImageNotFound(manifest_digest.to_string()))?;
        let manifest_bytes = self.read_blob(manifest_digest, MAX_JSON_BLOB)?;
        let manifest: ImageManifest =
            serde_json::from_slice(&manifest_bytes).map_err(|source| StoreError::Json {
                digest: *manifest_digest,
                source,
            })?;
        let config_bytes = self.read_blob(&resolved.id.digest(), MAX_JSON_BLOB)?;
        let config: ImageConfig =
            serde_json::from_slice(&config_bytes).map_err(|source| StoreError::Json {
                digest: resolved.id.digest(),
                source,
            })?;
        let layers = self.image_layers(manifest_digest)?;
        let tags = self
            .tags_by_manifest()?
            .remove(&manifest_digest.to_string())
            .unwrap_or_default();
        Ok(ImageDetails {
            id: resolved.id,
            manifest_digest: *manifest_digest,
            manifest,
            manifest_bytes,
            config,
            config_bytes,
            layers,
            tags,
        })
    }

    /// Removes a tag or an image; see the module documentation for the rules.
    pub fn remove_image(&self, input: &str, force: bool) -> Result<Vec<RemoveEvent>> {
        let mut events = Vec::new();
        // 1. A tag that exists: untag, and delete the image if that was its last tag.
        if let Ok(reference) = Reference::parse(input)
            && reference.digest().is_none()
            && let Some(image) = self.find_by_tag(&reference)?
        {
            {
                let mut conn = self.conn();
                let db_err = self.db_err();
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(&db_err)?;
                tx.execute(
                    "DELETE FROM tags WHERE reference = ?1",
                    [reference.to_string()],
                )
                .map_err(&db_err)?;
                events.push(RemoveEvent::Untagged(reference));
                let remaining: i64 = tx
                    .query_row(
                        "SELECT count(*) FROM tags WHERE manifest_digest = ?1",
                        [image.manifest_digest.to_string()],
                        |row| row.get(0),
                    )
                    .map_err(&db_err)?;
                if remaining == 0 {
                    tx.execute(
                        "DELETE FROM images WHERE manifest_digest = ?1",
                        [image.manifest_digest.to_string()],
                    )
                    .map_err(&db_err)?;
                    events.push(RemoveEvent::Deleted {
                        id: image.id,
                        manifest_digest: image.manifest_digest,
                    });
                }
                tx.commit().map_err(&db_err)?;
            }
            self.regenerate_index()?;
            return Ok(events);
        }
        // 2. By ID, prefix or digest: the image (every manifest sharing the config when
        //    given an ID) and all its tags.
        let resolved = self.resolve(input)?;
        let full_digest: Option<Digest> = if input.len() == 64 {
            Digest::from_hex(input).ok()
        } else {
            input.parse().ok()
        };
        let by_manifest_digest = match full_digest {
            Some(digest) => digest != resolved.id.digest(),
            None => Reference::parse(input)
                .ok()
                .and_then(|r| r.digest())
                .is_some(),
        };
        {
            let mut conn = self.conn();
            let db_err = self.db_err();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&db_err)?;
            let manifests: Vec<String> = if by_manifest_digest {
                vec![resolved.manifest_digest.to_string()]
            } else {
                let mut statement = tx
                    .prepare("SELECT manifest_digest FROM images WHERE config_digest = ?1 ORDER BY manifest_digest")
                    .map_err(&db_err)?;
                let rows = statement
                    .query_map([resolved.id.to_string()], |row| row.get::<_, String>(0))
                    .map_err(&db_err)?;
                rows.collect::<std::result::Result<_, _>>()
                    .map_err(&db_err)?
            };
            let mut tags = BTreeSet::new();
            for manifest in &manifests {
                let mut statement = tx
                    .prepare("SELECT reference FROM tags WHERE manifest_digest = ?1")
                    .map_err(&db_err)?;
                let rows = statement
                    .query_map([manifest], |row| row.get::<_, String>(0))
                    .map_err(&db_err)?;
                for row in rows {
                    tags.insert(row.map_err(&db_err)?);
                }
            }
            if tags.len() > 1 && !force {
                return Err(StoreError::Conflict {
                    id: resolved.id.short(),
                    tags: tags.iter().cloned().collect::<Vec<_>>().join(", "),
                });
            }
            for tag in &tags {
                tx.execute("DELETE FROM tags WHERE reference = ?1", [tag])
                    .map_err(&db_err)?;
                events.push(RemoveEvent::Untagged(Reference::parse_normalized(tag)?));
            }
            for manifest in &manifests {
                tx.execute("DELETE FROM images WHERE manifest_digest = ?1", [manifest])
                    .map_err(&db_err)?;
                events.push(RemoveEvent::Deleted {
                    id: resolved.id,
                    manifest_digest: parse_db_digest(manifest)?,
                });
            }
            tx.commit().map_err(&db_err)?;
        }
        self.regenerate_index()?;
        Ok(events)
    }

    /// Deletes the records of images that have no tag (dangling images). Their blobs are
    /// freed by a following [`Store::prune`].
    pub fn remove_dangling_images(&self) -> Result<Vec<RemoveEvent>> {
        let mut events = Vec::new();
        {
            let mut conn = self.conn();
            let db_err = self.db_err();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&db_err)?;
            {
                let mut statement = tx
                    .prepare(
                        "SELECT manifest_digest, config_digest FROM images
                         WHERE manifest_digest NOT IN (SELECT manifest_digest FROM tags) ORDER BY manifest_digest",
                    )
                    .map_err(&db_err)?;
                let rows = statement
                    .query_map([], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                    })
                    .map_err(&db_err)?;
                for row in rows {
                    let (manifest, config) = row.map_err(&db_err)?;
                    events.push(RemoveEvent::Deleted {
                        id: ImageId(parse_db_digest(&config)?),
                        manifest_digest: parse_db_digest(&manifest)?,
                    });
                }
            }
            tx.execute("DELETE FROM images WHERE manifest_digest NOT IN (SELECT manifest_digest FROM tags)", [])
                .map_err(&db_err)?;
            tx.commit().map_err(&db_err)?;
        }
        self.regenerate_index()?;
        Ok(events)
    }

    /// Records that the tree for `diff_id` is complete at [`Store::unpacked_layer_dir`].
    /// Call after the tree has been fully written and renamed into place.
    pub fn record_unpacked_layer(&self, diff_id: &Digest, size: u64) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO unpacked_layers (diff_id, size, unpacked_unix) VALUES (?1, ?2, ?3)
             ON CONFLICT(diff_id) DO UPDATE SET size = excluded.size, unpacked_unix = excluded.unpacked_unix",
            params![diff_id.to_string(), to_sql_size(size)?, now_unix()],
        )
        .map_err(self.db_err())?;
        Ok(())
    }

    /// The record of an unpacked layer, if any.
    pub fn unpacked_layer(&self, diff_id: &Digest) -> Result<Option<UnpackedLayer>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                "SELECT size, unpacked_unix FROM unpacked_layers WHERE diff_id = ?1",
                [diff_id.to_string()],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
            )
            .optional()
            .map_err(self.db_err())?;
        Ok(row.map(|(size, unpacked_unix)| UnpackedLayer {
            diff_id: *diff_id,
            path: self.unpacked_layer_dir(diff_id),
            size: from_sql_size(size),
            unpacked_unix,
        }))
    }

    /// Forgets an unpacked layer record (the caller removes the directory).
    pub fn forget_unpacked_layer(&self, diff_id: &Digest) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM unpacked_layers WHERE diff_id = ?1",
            [diff_id.to_string()],
        )
        .map_err(self.db_err())?;
        Ok(())
    }
}
