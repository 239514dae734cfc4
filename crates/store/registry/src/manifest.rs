//! The few manifest facts the transfer layer needs, parsed with small private
//! structs: media types, the entries of a manifest list / OCI index (to pick a
//! platform), and the config and layer descriptors of an image manifest (to know
//! which blobs to move). Full manifest types live in `stowage-image`.

use serde::Deserialize;
use stowage_digest::Digest;

use crate::error::{RegistryError, Result};
use crate::reference::Platform;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The `Accept` header for manifest requests: every list and image manifest type we handle.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest we accept (the distribution spec suggests 4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// Whether the media type is a manifest list or OCI index.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether the media type is a single-image manifest.
pub fn is_image_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// A fetched manifest: raw bytes (kept exactly, they are what the digest covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// A content descriptor as it appears in manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDescriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
}

fn parse_document(bytes: &[u8], what: &str) -> Result<RawDocument> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::InvalidResponse {
        url: what.to_owned(),
        detail: format!(
            "invalid manifest JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ),
    })
}

fn descriptor(raw: &RawDescriptor, what: &str) -> Result<BlobDescriptor> {
    let digest = raw
        .digest
        .parse::<Digest>()
        .map_err(|e| RegistryError::InvalidResponse {
            url: what.to_owned(),
            detail: format!("bad digest {:?}: {e}", raw.digest),
        })?;
    let size = u64::try_from(raw.size).map_err(|_| RegistryError::InvalidResponse {
        url: what.to_owned(),
        detail: format!("negative size for {digest}"),
    })?;
    Ok(BlobDescriptor {
        media_type: raw.media_type.clone(),
        digest,
        size,
    })
}

/// The media type of a manifest when the server's `Content-Type` is missing or
/// generic: its `mediaType` field, else guessed from its shape.
pub fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    let document: RawDocument = serde_json::from_slice(bytes).ok()?;
    if let Some(media_type) = document.media_type.filter(|m| !m.is_empty()) {
        return Some(media_type);
    }
    if document.manifests.is_some() {
        Some(OCI_INDEX.to_owned())
    } else if document.config.is_some() {
        Some(OCI_MANIFEST.to_owned())
    } else {
        None
    }
}

/// One entry of a manifest list / index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub descriptor: BlobDescriptor,
    pub platform: Option<Platform>,
}

/// The entries of a manifest list or OCI index.
pub fn index_entries(bytes: &[u8], what: &str) -> Result<Vec<IndexEntry>> {
    let document = parse_document(bytes, what)?;
    let Some(manifests) = document.manifests else {
        return Err(RegistryError::InvalidResponse {
            url: what.to_owned(),
            detail: "index has no `manifests`".into(),
        });
    };
    manifests
        .iter()
        .map(|raw| {
            Ok(IndexEntry {
                descriptor: descriptor(raw, what)?,
                platform: raw.platform.as_ref().map(|p| Platform {
                    os: p.os.clone(),
                    architecture: p.architecture.clone(),
                    variant: p.variant.clone().filter(|v| !v.is_empty()),
                }),
            })
        })
        .collect()
}

/// Picks the manifest for `wanted` from an index. A wanted variant must match
/// exactly, except that `arm64` accepts an entry without variant and `v8` too;
/// without a wanted variant, the first entry of the right os/arch wins.
pub fn select_platform(bytes: &[u8], wanted: &Platform, what: &str) -> Result<BlobDescriptor> {
    let entries = index_entries(bytes, what)?;
    let matches = |entry: &&IndexEntry, strict_variant: bool| {
        let Some(platform) = &entry.platform else {
            return false;
        };
        if platform.os != wanted.os || platform.architecture != wanted.architecture {
            return false;
        }
        match (&wanted.variant, &platform.variant) {
            (None, _) => true,
            (Some(w), Some(p)) => w == p,
            (Some(w), None) => !strict_variant && wanted.architecture == "arm64" && w == "v8",
        }
    };
    let chosen = entries
        .iter()
        .find(|e| matches(e, true))
        .or_else(|| entries.iter().find(|e| matches(e, false)));
    match chosen {
        Some(entry) => Ok(entry.descriptor.clone()),
        None => Err(RegistryError::NoMatchingPlatform {
            reference: what.to_owned(),
            platform: wanted.to_string(),
            available: entries
                .iter()
                .filter_map(|e| e.platform.as_ref().map(Platform::to_string))
                .collect(),
        }),
    }
}

/// The blobs an image manifest references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBlobs {
    pub config: BlobDescriptor,
    pub layers: Vec<BlobDescriptor>,
}

/// The config and layers of an image manifest.
pub fn manifest_blobs(bytes: &[u8], what: &str) -> Result<ManifestBlobs> {
    let document = parse_document(bytes, what)?;
    let config = document
        .config
        .ok_or_else(|| RegistryError::InvalidResponse {
            url: what.to_owned(),
            detail: "manifest has no `config`".into(),
        })?;
    Ok(ManifestBlobs {
        config: descriptor(&config, what)?,
        layers: document
            .layers
            .unwrap_or_default()
            .iter()
            .map(|raw| descriptor(raw, what))
            .collect::<Result<_>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_json() -> String {
        let d = |s: &str| Digest::of(s.as_bytes()).to_string();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":10,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":11,"platform":{{"os":"linux","architecture":"arm","variant":"v6"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":12,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":13,"platform":{{"os":"linux","architecture":"arm64"}}}},
            {{"mediaType":"application/vnd.in-toto+json","digest":"{}","size":14,"platform":{{"os":"unknown","architecture":"unknown"}}}}
            ]}}"#,
            d("amd64"),
            d("armv6"),
            d("armv7"),
            d("arm64"),
            d("att")
        )
    }

    #[test]
    fn selects_platforms() {
        let index = index_json();
        let pick = |p: &str| {
            select_platform(index.as_bytes(), &p.parse().expect("platform"), "test").map(|d| d.size)
        };
        assert_eq!(pick("linux/amd64").ok(), Some(10));
        assert_eq!(pick("linux/arm/v7").ok(), Some(12));
        assert_eq!(pick("linux/arm").ok(), Some(11));
        assert_eq!(pick("linux/arm64/v8").ok(), Some(13));
        let err = pick("linux/s390x").expect_err("absent");
        assert!(err.to_string().contains("linux/arm/v7"), "{err}");
    }

    #[test]
    fn manifest_blobs_and_sniffing() {
        let config = Digest::of(b"config");
        let layer = Digest::of(b"layer");
        let manifest = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"c","digest":"{config}","size":6}},"layers":[{{"mediaType":"l","digest":"{layer}","size":5}}]}}"#
        );
        let blobs = manifest_blobs(manifest.as_bytes(), "m").expect("parse");
        assert_eq!(blobs.config.digest, config);
        assert_eq!(blobs.layers[0].size, 5);
        assert_eq!(
            sniff_media_type(manifest.as_bytes()).as_deref(),
            Some(OCI_MANIFEST)
        );
        assert_eq!(
            sniff_media_type(index_json().as_bytes()).as_deref(),
            Some(OCI_INDEX)
        );
        assert_eq!(sniff_media_type(b"nope"), None);
        let negative = manifest.replace("\"size\":5", "\"size\":-5");
        assert!(manifest_blobs(negative.as_bytes(), "m").is_err());
        assert!(manifest_blobs(b"{}", "m").is_err());
        assert!(index_entries(b"[1]", "m").is_err());
    }
}
