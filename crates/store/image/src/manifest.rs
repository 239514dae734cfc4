//! Descriptors, image manifests (OCI and Docker v2 schema 2) and indexes (OCI image index
//! and Docker manifest list). Docker's and OCI's shapes are the same JSON, so one type
//! serves both and `media_type` tells them apart. Unknown fields are preserved.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stowage_digest::Digest;

use crate::media_types;
use crate::platform::Platform;

/// A content descriptor: what a blob is, its digest and size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced bytes.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Alternate download URLs (foreign layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Embedded content, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Platform of the referenced manifest (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Descriptor {
    /// A plain descriptor with no optional fields.
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest,
            size,
            urls: None,
            annotations: None,
            data: None,
            platform: None,
            artifact_type: None,
            extra: BTreeMap::new(),
        }
    }

    /// The descriptor of `bytes` (digest and size computed here).
    pub fn of_bytes(media_type: &str, bytes: &[u8]) -> Self {
        Self::new(media_type, Digest::of(bytes), bytes.len() as u64)
    }

    /// An annotation value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(String::as_str)
    }
}

/// A single-platform image manifest (OCI or Docker v2 schema 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// `application/vnd.oci.image.manifest.v1+json` or Docker's; optional in OCI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The config blob.
    pub config: Descriptor,
    /// Layers, bottom first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Referrers subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ImageManifest {
    /// An OCI manifest for a config and layers.
    pub fn oci(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Self {
            schema_version: 2,
            media_type: Some(media_types::OCI_MANIFEST.to_owned()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: None,
            extra: BTreeMap::new(),
        }
    }

    /// A Docker v2 schema 2 manifest for a config and layers.
    pub fn docker(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Self {
            media_type: Some(media_types::DOCKER_MANIFEST.to_owned()),
            ..Self::oci(config, layers)
        }
    }

    /// The media type, defaulting to OCI's when the field is absent.
    pub fn media_type(&self) -> &str {
        self.media_type
            .as_deref()
            .unwrap_or(media_types::OCI_MANIFEST)
    }

    /// Canonical JSON bytes of this manifest.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, crate::CanonicalJsonError> {
        crate::canonical_json(self)
    }
}

/// A multi-platform index (OCI image index or Docker manifest list); also `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// Media type; optional in OCI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Artifact type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The referenced manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// Referrers subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ImageIndex {
    /// An empty OCI index.
    pub fn oci(manifests: Vec<Descriptor>) -> Self {
        Self {
            schema_version: 2,
            media_type: Some(media_types::OCI_INDEX.to_owned()),
            artifact_type: None,
            manifests,
            subject: None,
            annotations: None,
            extra: BTreeMap::new(),
        }
    }

    /// The first manifest entry whose platform matches `wanted` (entries without a
    /// platform, such as attestations, are skipped).
    pub fn find_platform(&self, wanted: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|entry| {
            let is_image = media_types::is_manifest(&entry.media_type)
                || media_types::is_index(&entry.media_type);
            is_image && entry.platform.as_ref().is_some_and(|p| p.matches(wanted))
        })
    }

    /// Canonical JSON bytes of this index.
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, crate::CanonicalJsonError> {
        crate::canonical_json(self)
    }
}

/// Why a manifest document could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON or not the expected shape.
    #[error("invalid manifest JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A media type we do not handle (e.g. Docker schema 1).
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    /// schemaVersion other than 2.
    #[error("unsupported manifest schemaVersion {0}")]
    UnsupportedSchemaVersion(u64),
}

/// A manifest document of either kind.
#[derive(Debug, Clone, PartialEq)]
// Both variants are large and short-lived (parse, then match once); boxing one would
// only add an indirection for callers.
#[allow(clippy::large_enum_variant)]
pub enum ParsedManifest {
    /// A single-image manifest.
    Image(ImageManifest),
    /// A multi-platform index.
    Index(ImageIndex),
}

impl ParsedManifest {
    /// Parses manifest bytes. `content_type` (from an HTTP header or a descriptor) wins over
    /// the document's own `mediaType`; without either, the presence of `manifests` or
    /// `config` decides.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Self, ManifestError> {
        let value: Value = serde_json::from_slice(bytes)?;
        let schema = value
            .get("schemaVersion")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if schema != 2 {
            return Err(ManifestError::UnsupportedSchemaVersion(schema));
        }
        let declared = content_type
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                value
                    .get("mediaType")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        let is_index = match declared.as_deref() {
            Some(t) if media_types::is_index(t) => true,
            Some(t) if media_types::is_manifest(t) => false,
            Some(t) => return Err(ManifestError::UnsupportedMediaType(t.to_owned())),
            None => value.get("manifests").is_some(),
        };
        if is_index {
            Ok(Self::Index(serde_json::from_value(value)?))
        } else {
            Ok(Self::Image(serde_json::from_value(value)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{canonical_json, canonicalize_value};

    const DOCKER_LIST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:1111111111111111111111111111111111111111111111111111111111111111","size":528,"platform":{"architecture":"arm","os":"linux","variant":"v7"}},{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:2222222222222222222222222222222222222222222222222222222222222222","size":528,"platform":{"architecture":"amd64","os":"linux"}}]}"#;

    const OCI_MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:3333333333333333333333333333333333333333333333333333333333333333","size":7023},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:4444444444444444444444444444444444444444444444444444444444444444","size":32654,"annotations":{"x":"y"}}],"annotations":{"com.example.key1":"value1"},"futureField":[1,2]}"#;

    #[test]
    fn parses_docker_manifest_list_and_selects_platform() {
        let ParsedManifest::Index(index) =
            ParsedManifest::parse(DOCKER_LIST.as_bytes(), None).unwrap()
        else {
            panic!("expected an index");
        };
        let amd64 = index.find_platform(&Platform::native()).unwrap();
        assert!(amd64.digest.to_string().ends_with("2222"));
        let arm = index.find_platform(&"linux/arm".parse().unwrap()).unwrap();
        assert!(arm.digest.to_string().ends_with("1111"));
        assert!(
            index
                .find_platform(&"linux/s390x".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn oci_manifest_round_trips_with_unknown_fields() {
        let parsed = ParsedManifest::parse(OCI_MANIFEST.as_bytes(), None).unwrap();
        let ParsedManifest::Image(manifest) = parsed else {
            panic!("expected a manifest")
        };
        assert_eq!(manifest.layers[0].annotation("x"), Some("y"));
        let ours = canonical_json(&manifest).unwrap();
        let theirs = serde_json::to_vec(&canonicalize_value(
            serde_json::from_str(OCI_MANIFEST).unwrap(),
        ))
        .unwrap();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn rejects_schema1_and_unknown_types() {
        assert!(matches!(
            ParsedManifest::parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None),
            Err(ManifestError::UnsupportedSchemaVersion(1))
        ));
        assert!(matches!(
            ParsedManifest::parse(br#"{"schemaVersion":2}"#, Some("text/plain")),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        assert!(ParsedManifest::parse(b"not json", None).is_err());
        // Without a media type, the shape decides.
        let no_type = r#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            ParsedManifest::parse(no_type.as_bytes(), None),
            Ok(ParsedManifest::Index(_))
        ));
    }

    #[test]
    fn builds_docker_and_oci_manifests() {
        let config = Descriptor::of_bytes(media_types::DOCKER_CONFIG, b"{}");
        let manifest = ImageManifest::docker(config, vec![]);
        assert_eq!(manifest.media_type(), media_types::DOCKER_MANIFEST);
        let text = String::from_utf8(manifest.to_canonical_json().unwrap()).unwrap();
        assert!(
            text.starts_with(r#"{"config":{"digest":"sha256:44136fa3"#),
            "{text}"
        );
        assert!(text.ends_with(r#""layers":[],"mediaType":"application/vnd.docker.distribution.manifest.v2+json","schemaVersion":2}"#), "{text}");
    }
}
