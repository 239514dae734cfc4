//! Layer tarballs: a deterministic layer writer and a safe layer applier, plus image archives.
//!
//! - [`writer`]: turns a directory tree (a COPY staging dir or an overlay upper dir) into a
//!   byte-for-byte reproducible layer tar.
//! - [`compress`]: deterministic gzip (block-parallel, thread-count independent) and zstd,
//!   [`write_layer`] (tar + compression + both digests in one pass) and
//!   [`decompressing_reader`] (sniffs gzip / zstd / xz / bzip2 / plain).
//! - [`apply`]: unpacks a layer tar into a directory, resolving every path inside the root,
//!   with merged-tree or overlay-lower whiteout handling.
//! - [`upper`]: lists what an overlay upper dir changed, without walking the lower layers.
//! - [`image_archive`]: a sorted streaming tar writer for `docker save` / oci-archive output and
//!   an on-disk tar index for reading big entries of an archive lazily.

pub mod apply;
pub mod compress;
pub mod image_archive;
mod tar_path;
mod tar_reader;
pub mod upper;
pub mod writer;

#[cfg(test)]
mod apply_tests;
#[cfg(test)]
mod roundtrip_tests;
#[cfg(test)]
mod test_support;

pub use apply::{
    ApplyError, ApplyOptions, ApplyStats, OverlayXattrNamespace, SpecialFilePolicy, WhiteoutMode,
    apply_layer,
};
pub use compress::{
    CompressingWriter, Compression, DeflateChunkKey, DeflateMemo, DeflatedChunk,
    DetectedCompression, GzipChunkStats, LayerDigests, ParallelGzipWriter, available_cores,
    decompressing_reader, default_compression_threads, detect_compression, write_layer,
    write_layer_with_threads,
};
pub use image_archive::{
    ArchiveIndex, ArchiveIndexError, ArchiveWriter, ArchiveWriterError, IndexedEntry,
    IndexedEntryKind,
};
pub use upper::{UpperChange, UpperChangeKind, UpperDiffError, upper_dir_changes};
pub use writer::{
    LayerEntryWriter, LayerWriteError, LayerWriterOptions, Ownership, SyntheticDir, TarStats,
    write_layer_tar,
};

/// Prefix of a whiteout entry's basename (`.wh.<name>` deletes `<name>`).
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Basename of the opaque-directory marker entry.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// Overlayfs xattr marking an opaque directory (privileged mounts).
pub const TRUSTED_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// Overlayfs xattr marking an opaque directory (`userxattr` mounts).
pub const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";
