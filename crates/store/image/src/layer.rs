//! Image identity and per-layer facts shared by the store, the builder and the exporters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use stowage_digest::{Digest, DigestParseError};

/// An image ID: the digest of the config blob bytes, as Docker defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageId(pub Digest);

impl ImageId {
    /// The ID of the image whose config blob is `config_bytes`.
    pub fn from_config_bytes(config_bytes: &[u8]) -> Self {
        Self(Digest::of(config_bytes))
    }

    /// The underlying digest.
    pub fn digest(&self) -> Digest {
        self.0
    }

    /// The 12-hex-digit short form `docker images` shows.
    pub fn short(&self) -> String {
        self.0.short()
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for ImageId {
    type Err = DigestParseError;

    /// Accepts `sha256:<hex>` or bare 64-digit hex.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            s.parse().map(Self)
        } else {
            Digest::from_hex(s).map(Self)
        }
    }
}

/// One layer of an image, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Digest of the blob as stored/pushed (compressed).
    pub blob_digest: Digest,
    /// Media type of the blob.
    pub media_type: String,
    /// Blob size in bytes.
    pub compressed_size: u64,
    /// Uncompressed tar size, when known.
    pub uncompressed_size: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_id_is_config_digest_and_parses_both_forms() {
        let id = ImageId::from_config_bytes(b"{}");
        assert_eq!(
            id.to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(id.short(), "44136fa355b3");
        let bare: ImageId = id.0.hex().parse().unwrap();
        let full: ImageId = id.to_string().parse().unwrap();
        assert_eq!(bare, id);
        assert_eq!(full, id);
        assert!("xyz".parse::<ImageId>().is_err());
    }
}
