//! stowage's image advisor: reads an image's layers from the store once,
//! streaming, and reports where its bytes go — per-layer sizes and changes,
//! bytes hidden by later layers (reclaimable), chmod/chown copy-ups, package
//! caches and build toolchains left behind — plus `stowage diff` between two
//! images, dive-style CI thresholds, a self-contained HTML page, and the
//! report printed at the end of `stowage build`.

pub mod analysis;
pub mod ci;
pub mod classify;
pub mod diff;
pub mod entries_codec;
pub mod html;
pub mod render;
pub mod report;
pub mod scan;

#[cfg(test)]
mod tests;

use std::io;

use stowage_store::{ImageDetails, Store, StoreError};

pub use analysis::{Analysis, LayerReport, LayerSource, Leftover, TopFile, Totals, analyze_scan};
pub use scan::{ImageScan, LayerEntries, LayerItem, Scanner, read_layer_entries};

/// How many paths the lists of a report keep.
pub const DEFAULT_TOP: usize = 20;

/// Why an image could not be analysed.
#[derive(Debug, thiserror::Error)]
pub enum AdvisorError {
    /// The image is not in the store (or its records are unreadable).
    #[error("cannot analyse image {reference:?}: {source}")]
    Image {
        /// As given.
        reference: String,
        /// The store's error.
        #[source]
        source: Box<StoreError>,
    },
    /// A layer blob is missing.
    #[error("layer {index} ({digest}) of image {reference:?} is missing from the store: {source}")]
    LayerMissing {
        /// As given.
        reference: String,
        /// 0-based layer position.
        index: usize,
        /// The blob digest.
        digest: String,
        /// The store's error.
        #[source]
        source: Box<StoreError>,
    },
    /// A layer blob could not be read to its end: corrupt compression, a
    /// broken tar, or content that does not match its digest.
    #[error("layer {index} ({digest}) of image {reference:?} is unreadable or corrupt: {source}")]
    LayerCorrupt {
        /// As given.
        reference: String,
        /// 0-based layer position.
        index: usize,
        /// The blob digest.
        digest: String,
        /// What went wrong.
        #[source]
        source: io::Error,
    },
}

/// The layer descriptions of an image: digests, sizes and the `created_by`
/// of the history entries that made a layer.
pub fn layer_sources(details: &ImageDetails) -> Vec<LayerSource> {
    let mut history = details
        .config
        .history
        .iter()
        .filter(|entry| entry.has_layer())
        .map(|entry| entry.created_by.clone().unwrap_or_default());
    details
        .layers
        .iter()
        .map(|layer| LayerSource {
            digest: layer.blob_digest.to_string(),
            diff_id: layer.diff_id.to_string(),
            compressed_bytes: layer.compressed_size,
            created_by: history.next().unwrap_or_default(),
        })
        .collect()
}

/// Looks an image up and streams each of its layers once through a [`Scanner`].
pub fn scan_image(
    store: &Store,
    reference: &str,
) -> Result<(ImageDetails, Vec<LayerSource>, ImageScan), AdvisorError> {
    let details = store
        .image(reference)
        .map_err(|source| AdvisorError::Image {
            reference: reference.to_owned(),
            source: Box::new(source),
        })?;
    let (sources, scan) = scan_details(store, &details, reference)?;
    Ok((details, sources, scan))
}

/// Streams each layer of an already loaded image once through a [`Scanner`],
/// checking every blob against its digest; `reference` names the image in errors.
pub fn scan_details(
    store: &Store,
    details: &ImageDetails,
    reference: &str,
) -> Result<(Vec<LayerSource>, ImageScan), AdvisorError> {
    scan_details_with(store, details, reference, BlobCheck::Verify)
}

/// Whether a scan re-checks blob digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobCheck {
    /// Hash each blob while reading it and fail on a mismatch (`stowage analyze`).
    Verify,
    /// Trust the store (blobs this very process just wrote and verified, as
    /// after a build): one hash pass fewer.
    Trust,
}

/// [`scan_details`] with a choice of blob verification. One thread reads (or decodes the
/// kept) entries of the next layer while this one merges the layer before it: the halves
/// cost about the same.
pub fn scan_details_with(
    store: &Store,
    details: &ImageDetails,
    reference: &str,
    check: BlobCheck,
) -> Result<(Vec<LayerSource>, ImageScan), AdvisorError> {
    scan_details_from(store, details, reference, check, None)
}

/// The merged view of an image's lowest layers, scanned ahead of time (while a build
/// runs, from the image its tag named before) so that a later scan of an image with the
/// same lower layers only merges the layers above them.
#[derive(Debug)]
pub struct LowerLayersScan {
    diff_ids: Vec<stowage_digest::Digest>,
    scanner: Scanner,
}

impl LowerLayersScan {
    /// Scans the lowest `count` layers of `details` from the store, trusting its blobs
    /// (see [`BlobCheck::Trust`]). `None` when a layer cannot be read (the later scan then
    /// starts from the bottom and reports the error itself), or when `stop` is found set
    /// before a layer.
    pub fn scan(
        store: &Store,
        details: &ImageDetails,
        count: usize,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Option<Self> {
        let lower = details.layers.get(..count)?;
        let mut scanner = Scanner::new();
        for (index, layer) in lower.iter().enumerate() {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            let entries = layer_entries(store, layer, index, "", BlobCheck::Trust).ok()?;
            scanner.add_entries(entries);
        }
        Some(Self {
            diff_ids: lower.iter().map(|layer| layer.diff_id).collect(),
            scanner,
        })
    }

    /// How many layers it covers.
    pub fn layers(&self) -> usize {
        self.diff_ids.len()
    }
}

/// [`scan_details_with`], starting from `lower` when its layers are the image's lowest
/// ones (same diff_ids in the same order); otherwise `lower` is dropped and every layer is
/// scanned.
pub fn scan_details_from(
    store: &Store,
    details: &ImageDetails,
    reference: &str,
    check: BlobCheck,
    lower: Option<LowerLayersScan>,
) -> Result<(Vec<LayerSource>, ImageScan), AdvisorError> {
    let sources = layer_sources(details);
    let layers = &details.layers;
    let (mut scanner, first) = match lower {
        Some(lower)
            if lower.diff_ids.len() <= layers.len()
                && lower
                    .diff_ids
                    .iter()
                    .zip(layers)
                    .all(|(kept, layer)| *kept == layer.diff_id) =>
        {
            let first = lower.diff_ids.len();
            (lower.scanner, first)
        }
        _ => (Scanner::new(), 0),
    };
    let remaining = &layers[first..];
    if remaining.len() <= 1 {
        // At most one layer: nothing to overlap its reading with.
        for (offset, layer) in remaining.iter().enumerate() {
            scanner.add_entries(layer_entries(
                store,
                layer,
                first + offset,
                reference,
                check,
            )?);
        }
        return Ok((sources, scanner.finish()));
    }
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for (offset, layer) in remaining.iter().enumerate() {
                let entries = layer_entries(store, layer, first + offset, reference, check);
                let failed = entries.is_err();
                if sender.send(entries).is_err() || failed {
                    return;
                }
            }
        });
        for entries in receiver {
            scanner.add_entries(entries?);
        }
        Ok::<_, AdvisorError>(())
    })?;
    Ok((sources, scanner.finish()))
}

/// One layer's entries: kept from an earlier scan (when the store is trusted), or read
/// from its blob (and kept for the next scan).
fn layer_entries(
    store: &Store,
    layer: &stowage_image::LayerInfo,
    index: usize,
    reference: &str,
    check: BlobCheck,
) -> Result<LayerEntries, AdvisorError> {
    // After a build the store is trusted: a layer scanned before (keyed by its
    // diff_id, i.e. its content) is not read again. `analyze` always reads and checks.
    if check == BlobCheck::Trust
        && let Some(entries) = cached_layer_entries(store, &layer.diff_id)
    {
        return Ok(entries);
    }
    let digest = layer.blob_digest.to_string();
    let opened: Result<Box<dyn io::Read + Send>, StoreError> = match check {
        BlobCheck::Verify => store
            .open_blob_verified(&layer.blob_digest)
            .map(|r| Box::new(r) as Box<dyn io::Read + Send>),
        BlobCheck::Trust => store
            .open_blob(&layer.blob_digest)
            .map(|f| Box::new(f) as Box<dyn io::Read + Send>),
    };
    let blob = opened.map_err(|source| AdvisorError::LayerMissing {
        reference: reference.to_owned(),
        index,
        digest: digest.clone(),
        source: Box::new(source),
    })?;
    let corrupt = |source: io::Error| AdvisorError::LayerCorrupt {
        reference: reference.to_owned(),
        index,
        digest: digest.clone(),
        source,
    };
    let (_, reader) = stowage_archive::decompressing_reader(blob).map_err(corrupt)?;
    let entries = read_layer_entries(reader).map_err(corrupt)?;
    remember_layer_entries(store, &layer.diff_id, &entries);
    Ok(entries)
}

/// The annotation kind (and format version) of cached [`LayerEntries`].
pub const LAYER_ENTRIES_KIND: &str = "advisor-layer-entries-bin-v1";

/// A layer's entries as an earlier scan left them in the store.
fn cached_layer_entries(store: &Store, diff_id: &stowage_digest::Digest) -> Option<LayerEntries> {
    let bytes = store.layer_annotation(diff_id, LAYER_ENTRIES_KIND).ok()??;
    entries_codec::decode(&bytes)
}

/// Keeps a layer's entries for the next scan (the build records the layers it writes this
/// way); a failure only costs a rescan later.
pub fn remember_layer_entries(
    store: &Store,
    diff_id: &stowage_digest::Digest,
    entries: &LayerEntries,
) {
    let _ =
        store.set_layer_annotation(diff_id, LAYER_ENTRIES_KIND, &entries_codec::encode(entries));
}

/// Analyses an image of the store.
pub fn analyze_image(store: &Store, reference: &str, top: usize) -> Result<Analysis, AdvisorError> {
    let (details, sources, scan) = scan_image(store, reference)?;
    Ok(analyze_scan(
        reference,
        &details.id.to_string(),
        &sources,
        &scan,
        top,
    ))
}
