//! Image model: OCI and Docker configs, manifests, indexes, digests, references and canonical JSON.
//!
//! Everything here is pure: types, parsing and serialization, no file or network I/O.

pub mod canonical;
pub mod config;
pub mod layer;
pub mod manifest;
pub mod media_types;
pub mod platform;
pub mod reference;

pub use canonical::{CanonicalJsonError, canonical_json, canonicalize_value};
pub use config::{ContainerConfig, EmptyObject, Healthcheck, History, ImageConfig, RootFs};
pub use layer::{ImageId, LayerInfo};
pub use manifest::{Descriptor, ImageIndex, ImageManifest, ManifestError, ParsedManifest};
pub use platform::Platform;
pub use reference::{Reference, ReferenceError};
pub use stowage_digest::{Digest, DigestParseError, HashingReader, HashingWriter};
