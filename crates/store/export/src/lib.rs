//! Image archives and rootfs import: moving images between the store and tar files.
//!
//! - [`save()`]: one or more stored images as a `docker save`-style archive
//!   ([`SaveFormat::Docker`]) or an OCI image layout in a tar ([`SaveFormat::Oci`]).
//! - [`load()`]: a docker-archive (what `docker save` 20.10/25+, `skopeo copy
//!   docker-archive:` and stowage write) or an OCI archive (`skopeo copy oci-archive:`,
//!   stowage `--format oci`) into the store.
//! - [`import()`]: a root-filesystem tarball (plain, gzip, zstd, xz, bzip2) as a one-layer
//!   image, like `docker import`.
//!
//! Everything streams: layers are never held in memory, and bytes are hashed as they pass.
//! Every layer tar read from outside is validated entry by entry ([`layer_scan`]) before it
//! can be committed, and nothing is committed until the whole archive has been checked:
//! layer blobs stay in uncommitted temp files until every layer of every image verified.
//!
//! **Storage choice for loaded layers:** docker-archive layers arrive uncompressed; they are
//! recompressed with deterministic gzip ([`stowage_archive::CompressingWriter`], level 1 by
//! default: see [`DEFAULT_COMPRESSION`]) under an OCI manifest with OCI media types (skopeo's
//! `oci:` transport only lists OCI manifests in a layout, and Docker 20.10 pulls them). The config
//! bytes are kept verbatim, so the image ID equals Docker's. OCI archives are stored as they
//! are (manifest, config and layer blobs verbatim, so manifest digests survive), after each
//! layer has been decompressed, validated and checked against its diff_id.

pub mod convert;
pub mod error;
mod import;
pub mod layer_scan;
mod load;
mod save;

#[cfg(test)]
mod roundtrip_tests;

pub use error::{ExportError, Result};
pub use import::{ImportOptions, ImportedImage, import};
pub use layer_scan::{EntryPolicy, LayerScan, LayerScanError, scan_layer};
pub use load::{LoadOptions, LoadedImage, load, load_reader};
pub use save::{SaveFormat, SaveReport, save, save_with_compression};

/// Annotation containerd and Docker 25+ put on index entries: the full image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Largest JSON file (manifest.json, index.json, config, manifest) read into memory.
pub const MAX_JSON_SIZE: u64 = 16 * 1024 * 1024;

/// The default compression of layers written into the store by `load` and `import`.
pub const DEFAULT_COMPRESSION: stowage_archive::Compression =
    stowage_archive::Compression::Gzip { level: 1 };
