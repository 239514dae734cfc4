//! From an [`ImageScan`] to the figures `stowage analyze` reports: per-layer
//! sizes and changes, reclaimable bytes, chmod/chown copy-ups, caches and
//! toolchains left in the final filesystem, and the efficiency score.
//!
//! Reclaimable bytes are the bytes of file versions that a later layer hid
//! (overwrote or deleted): they are stored and shipped but never visible. The
//! surviving version is not counted. dive's `wastedBytes` also counts the
//! surviving copy of every path that occurs more than once; that figure is
//! reported alongside as [`Totals::dive_wasted_bytes`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::classify::{Family, classify};
use crate::scan::{EntryKind, ImageScan, MetadataRewrite};

/// What a layer is, besides its contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSource {
    /// The compressed blob's digest.
    pub digest: String,
    /// The uncompressed tar's digest.
    pub diff_id: String,
    /// The compressed blob's size.
    pub compressed_bytes: u64,
    /// The history entry's `created_by`.
    pub created_by: String,
}

/// One layer of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerReport {
    /// 0-based position.
    pub index: usize,
    /// Blob digest.
    pub digest: String,
    /// diff_id.
    pub diff_id: String,
    /// The command that created it.
    pub created_by: String,
    /// Compressed blob bytes.
    pub compressed_bytes: u64,
    /// Uncompressed tar bytes (measured).
    pub tar_bytes: u64,
    /// Regular-file content bytes in the tar.
    pub content_bytes: u64,
    /// Files new to the filesystem.
    pub files_added: u64,
    /// Files replacing a lower layer's version.
    pub files_changed: u64,
    /// Files removed (whiteouts, opaque directories).
    pub files_removed: u64,
    /// Bytes this layer added that later layers hid (its waste).
    pub reclaimable_bytes: u64,
    /// Bytes of earlier versions this layer hid.
    pub hid_bytes: u64,
    /// Cache and temp bytes it added that are still in the final filesystem.
    pub cache_bytes: u64,
    /// Toolchain bytes it added that are still in the final filesystem.
    pub toolchain_bytes: u64,
}

/// Whole-image figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Layers.
    pub layers: usize,
    /// Sum of compressed blob sizes.
    pub compressed_bytes: u64,
    /// Sum of uncompressed tar sizes.
    pub tar_bytes: u64,
    /// Sum of regular-file content bytes over all layers.
    pub content_bytes: u64,
    /// Regular-file bytes visible in the final filesystem.
    pub final_bytes: u64,
    /// Files (not directories) in the final filesystem.
    pub final_files: u64,
    /// Bytes of hidden versions (see the module docs).
    pub reclaimable_bytes: u64,
    /// Hidden versions.
    pub reclaimable_files: u64,
    /// Reclaimable bytes hidden by layers after the first (the base).
    pub user_reclaimable_bytes: u64,
    /// Content bytes of layers after the first.
    pub user_content_bytes: u64,
    /// `user_reclaimable_bytes / user_content_bytes` (0 when there are none).
    pub user_wasted_fraction: f64,
    /// Bytes stored again only to change mode or owner.
    pub metadata_rewrite_bytes: u64,
    /// Cache and temp bytes in the final filesystem.
    pub cache_bytes: u64,
    /// Toolchain bytes in the final filesystem.
    pub toolchain_bytes: u64,
    /// `1 - reclaimable_bytes / content_bytes`, in 0..=1 (1 for an empty image).
    pub efficiency: f64,
    /// dive's figure: every version of a path occurring more than once,
    /// including the surviving one.
    pub dive_wasted_bytes: u64,
}

/// A path with hidden versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WastedPath {
    /// `/path`.
    pub path: String,
    /// Bytes of its hidden versions.
    pub reclaimable_bytes: u64,
    /// Hidden versions.
    pub hidden_versions: u64,
    /// Layers that added the hidden versions.
    pub added_in: Vec<usize>,
    /// Layers that hid them.
    pub hidden_in: Vec<usize>,
    /// Whether the path is still in the final filesystem.
    pub survives: bool,
}

/// Caches or toolchain files one layer left in the final filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftover {
    /// Cache or toolchain.
    pub family: Family,
    /// e.g. `apt lists`.
    pub category: String,
    /// e.g. `/var/lib/apt/lists`.
    pub location: String,
    /// The layer that added the files.
    pub layer: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Their count.
    pub files: u64,
    /// How to avoid them.
    pub fix: String,
}

/// A single file worth a look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopFile {
    /// `/path`.
    pub path: String,
    /// Bytes at stake.
    pub bytes: u64,
    /// Why it is listed: `reclaimable`, `cache: apt lists`, `toolchain: gcc`.
    pub reason: String,
    /// The layer that added it.
    pub layer: usize,
}

/// What `stowage analyze` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// The image as named.
    pub image: String,
    /// Image ID.
    pub id: String,
    /// Totals.
    pub totals: Totals,
    /// Layers in order.
    pub layers: Vec<LayerReport>,
    /// Paths with hidden versions, largest first (at most `top` of them).
    pub reclaimable: Vec<WastedPath>,
    /// chmod/chown copy-ups, largest first (at most `top`).
    pub metadata_rewrites: Vec<MetadataRewrite>,
    /// Caches and toolchains in the final filesystem, largest first.
    pub leftovers: Vec<Leftover>,
    /// The largest reclaimable, cache and toolchain files (at most `top`).
    pub top_files: Vec<TopFile>,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Computes the report. `sources` must have one entry per scanned layer.
pub fn analyze_scan(
    image: &str,
    id: &str,
    sources: &[LayerSource],
    scan: &ImageScan,
    top: usize,
) -> Analysis {
    let mut layers: Vec<LayerReport> = scan
        .layers
        .iter()
        .enumerate()
        .map(|(index, layer)| {
            let source = sources.get(index).cloned().unwrap_or_default();
            LayerReport {
                index,
                digest: source.digest,
                diff_id: source.diff_id,
                created_by: source.created_by,
                compressed_bytes: source.compressed_bytes,
                tar_bytes: layer.tar_bytes,
                content_bytes: layer.content_bytes,
                files_added: layer.files_added,
                files_changed: layer.files_changed,
                files_removed: layer.files_removed,
                reclaimable_bytes: 0,
                hid_bytes: 0,
                cache_bytes: 0,
                toolchain_bytes: 0,
            }
        })
        .collect();

    let mut wasted: BTreeMap<&str, WastedPath> = BTreeMap::new();
    let mut user_reclaimable = 0;
    for hidden in &scan.hidden {
        if let Some(layer) = layers.get_mut(hidden.added_in) {
            layer.reclaimable_bytes += hidden.size;
        }
        if let Some(layer) = layers.get_mut(hidden.hidden_in) {
            layer.hid_bytes += hidden.size;
        }
        if hidden.hidden_in > 0 {
            user_reclaimable += hidden.size;
        }
        let entry = wasted
            .entry(hidden.path.as_str())
            .or_insert_with(|| WastedPath {
                path: format!("/{}", hidden.path),
                reclaimable_bytes: 0,
                hidden_versions: 0,
                added_in: Vec::new(),
                hidden_in: Vec::new(),
                survives: scan.files.contains_key(&hidden.path),
            });
        entry.reclaimable_bytes += hidden.size;
        entry.hidden_versions += 1;
        entry.added_in.push(hidden.added_in);
        entry.hidden_in.push(hidden.hidden_in);
    }
    let dive_wasted_bytes: u64 = wasted
        .iter()
        .map(|(path, w)| w.reclaimable_bytes + scan.files.get(*path).map_or(0, |v| v.size))
        .sum();

    // (family, category, location, layer) -> (bytes, files, fix)
    type LeftoverKey = (Family, &'static str, String, usize);
    let mut leftovers: BTreeMap<LeftoverKey, (u64, u64, &'static str)> = BTreeMap::new();
    let mut top_files: Vec<TopFile> = Vec::new();
    let mut final_bytes = 0;
    let mut final_files = 0;
    for (path, version) in &scan.files {
        if version.kind == EntryKind::Dir {
            continue;
        }
        final_files += 1;
        final_bytes += version.size;
        let Some(class) = classify(path) else {
            continue;
        };
        if let Some(layer) = layers.get_mut(version.layer) {
            match class.family {
                Family::Cache => layer.cache_bytes += version.size,
                Family::Toolchain => layer.toolchain_bytes += version.size,
            }
        }
        let slot = leftovers
            .entry((class.family, class.category, class.location, version.layer))
            .or_insert((0, 0, class.fix));
        slot.0 += version.size;
        slot.1 += 1;
        if version.size > 0 {
            let family = match class.family {
                Family::Cache => "cache",
                Family::Toolchain => "toolchain",
            };
            top_files.push(TopFile {
                path: format!("/{path}"),
                bytes: version.size,
                reason: format!("{family}: {}", class.category),
                layer: version.layer,
            });
        }
    }
    for hidden in &scan.hidden {
        if hidden.size > 0 {
            top_files.push(TopFile {
                path: format!("/{}", hidden.path),
                bytes: hidden.size,
                reason: "reclaimable".to_owned(),
                layer: hidden.added_in,
            });
        }
    }
    top_files.sort_by(|a, b| {
        (b.bytes, &a.path, &a.reason, a.layer).cmp(&(a.bytes, &b.path, &b.reason, b.layer))
    });
    top_files.truncate(top);

    let mut leftovers: Vec<Leftover> = leftovers
        .into_iter()
        .map(
            |((family, category, location, layer), (bytes, files, fix))| Leftover {
                family,
                category: category.to_owned(),
                location,
                layer,
                bytes,
                files,
                fix: fix.to_owned(),
            },
        )
        .collect();
    leftovers.sort_by(|a, b| {
        (b.bytes, a.family, &a.location, a.layer).cmp(&(a.bytes, b.family, &b.location, b.layer))
    });

    let mut reclaimable: Vec<WastedPath> = wasted.into_values().collect();
    reclaimable.sort_by(|a, b| (b.reclaimable_bytes, &a.path).cmp(&(a.reclaimable_bytes, &b.path)));
    let reclaimable_bytes: u64 = scan.hidden.iter().map(|h| h.size).sum();
    let reclaimable_files = scan.hidden.len() as u64;
    reclaimable.truncate(top);

    let mut metadata_rewrites = scan.rewrites.clone();
    let metadata_rewrite_bytes = metadata_rewrites.iter().map(|r| r.size).sum();
    metadata_rewrites
        .sort_by(|a, b| (b.size, &a.path, a.rewritten_in).cmp(&(a.size, &b.path, b.rewritten_in)));
    metadata_rewrites.truncate(top);

    let content_bytes: u64 = layers.iter().map(|l| l.content_bytes).sum();
    let user_content_bytes: u64 = layers.iter().skip(1).map(|l| l.content_bytes).sum();
    let totals = Totals {
        layers: layers.len(),
        compressed_bytes: layers.iter().map(|l| l.compressed_bytes).sum(),
        tar_bytes: layers.iter().map(|l| l.tar_bytes).sum(),
        content_bytes,
        final_bytes,
        final_files,
        reclaimable_bytes,
        reclaimable_files,
        user_reclaimable_bytes: user_reclaimable,
        user_content_bytes,
        user_wasted_fraction: ratio(user_reclaimable, user_content_bytes),
        metadata_rewrite_bytes,
        cache_bytes: layers.iter().map(|l| l.cache_bytes).sum(),
        toolchain_bytes: layers.iter().map(|l| l.toolchain_bytes).sum(),
        efficiency: 1.0 - ratio(reclaimable_bytes, content_bytes),
        dive_wasted_bytes,
    };
    Analysis {
        image: image.to_owned(),
        id: id.to_owned(),
        totals,
        layers,
        reclaimable,
        metadata_rewrites,
        leftovers,
        top_files,
    }
}
