//! `stowage diff A B`: two images side by side — sizes, layer counts, shared
//! layers — and the files added, removed and changed between their final
//! filesystems.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::Serialize;

use crate::analysis::LayerSource;
use crate::render::{human_size, shorten};
use crate::scan::{EntryKind, FileVersion, ImageScan};

/// One side of the comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffSide {
    /// The image as named.
    pub image: String,
    /// Image ID.
    pub id: String,
    /// Layers.
    pub layers: usize,
    /// Sum of compressed blob sizes.
    pub compressed_bytes: u64,
    /// Sum of uncompressed tar sizes.
    pub tar_bytes: u64,
    /// Regular-file bytes visible in the final filesystem.
    pub final_bytes: u64,
    /// Non-directory entries in the final filesystem.
    pub final_files: u64,
}

/// A path that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileChange {
    /// `/path`.
    pub path: String,
    /// Bytes in A (0 when absent).
    pub bytes_a: u64,
    /// Bytes in B (0 when absent).
    pub bytes_b: u64,
    /// For changed paths: what differs (`content`, `mode`, `owner`, `kind`, `link`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what: Vec<&'static str>,
}

/// A layer both images share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedLayer {
    /// diff_id.
    pub diff_id: String,
    /// Position in A.
    pub index_a: usize,
    /// Position in B.
    pub index_b: usize,
    /// Uncompressed tar bytes.
    pub tar_bytes: u64,
}

/// The comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageDiff {
    /// Image A.
    pub a: DiffSide,
    /// Image B.
    pub b: DiffSide,
    /// Layers (by diff_id) present in both.
    pub shared_layers: Vec<SharedLayer>,
    /// Paths only in B, by path.
    pub added: Vec<FileChange>,
    /// Paths only in A, by path.
    pub removed: Vec<FileChange>,
    /// Paths in both that differ, by path.
    pub changed: Vec<FileChange>,
    /// Sum of bytes of `added`.
    pub added_bytes: u64,
    /// Sum of bytes of `removed`.
    pub removed_bytes: u64,
}

/// An image as scanned, ready to compare.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// The image as named.
    pub image: &'a str,
    /// Image ID.
    pub id: &'a str,
    /// Its layers.
    pub sources: &'a [LayerSource],
    /// Its scan.
    pub scan: &'a ImageScan,
}

fn summarize(side: &Side<'_>) -> DiffSide {
    let visible = side
        .scan
        .files
        .values()
        .filter(|v| v.kind != EntryKind::Dir);
    DiffSide {
        image: side.image.to_owned(),
        id: side.id.to_owned(),
        layers: side.scan.layers.len(),
        compressed_bytes: side.sources.iter().map(|s| s.compressed_bytes).sum(),
        tar_bytes: side.scan.layers.iter().map(|l| l.tar_bytes).sum(),
        final_bytes: visible.clone().map(|v| v.size).sum(),
        final_files: visible.count() as u64,
    }
}

fn differences(a: &FileVersion, b: &FileVersion) -> Vec<&'static str> {
    let mut what = Vec::new();
    if a.kind != b.kind {
        what.push("kind");
    } else {
        if a.size != b.size || a.sha256 != b.sha256 {
            what.push("content");
        }
        if a.link_target != b.link_target {
            what.push("link");
        }
    }
    if a.mode != b.mode {
        what.push("mode");
    }
    if a.uid != b.uid || a.gid != b.gid {
        what.push("owner");
    }
    what
}

/// Compares two scanned images. Directories count as changed only when
/// their kind, mode or owner differ.
pub fn diff_images(a: &Side<'_>, b: &Side<'_>) -> ImageDiff {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    let paths: BTreeSet<&String> = a.scan.files.keys().chain(b.scan.files.keys()).collect();
    for path in paths {
        match (a.scan.files.get(path), b.scan.files.get(path)) {
            (Some(old), None) => removed.push(FileChange {
                path: format!("/{path}"),
                bytes_a: old.size,
                bytes_b: 0,
                what: Vec::new(),
            }),
            (None, Some(new)) => added.push(FileChange {
                path: format!("/{path}"),
                bytes_a: 0,
                bytes_b: new.size,
                what: Vec::new(),
            }),
            (Some(old), Some(new)) => {
                let what = differences(old, new);
                if !what.is_empty() {
                    changed.push(FileChange {
                        path: format!("/{path}"),
                        bytes_a: old.size,
                        bytes_b: new.size,
                        what,
                    });
                }
            }
            (None, None) => {}
        }
    }
    let mut shared_layers = Vec::new();
    for (index_a, layer_a) in a.sources.iter().enumerate() {
        if let Some(index_b) = b.sources.iter().position(|l| l.diff_id == layer_a.diff_id) {
            shared_layers.push(SharedLayer {
                diff_id: layer_a.diff_id.clone(),
                index_a,
                index_b,
                tar_bytes: a.scan.layers.get(index_a).map_or(0, |l| l.tar_bytes),
            });
        }
    }
    ImageDiff {
        a: summarize(a),
        b: summarize(b),
        shared_layers,
        added_bytes: added.iter().map(|c| c.bytes_b).sum(),
        removed_bytes: removed.iter().map(|c| c.bytes_a).sum(),
        added,
        removed,
        changed,
    }
}

fn signed(a: u64, b: u64) -> String {
    if b >= a {
        format!("+{}", human_size(b - a))
    } else {
        format!("-{}", human_size(a - b))
    }
}

/// The side-by-side text rendering; lists show the `top` largest entries.
pub fn render_diff_text(diff: &ImageDiff, top: usize) -> String {
    let mut out = String::new();
    let width = 28;
    let _ = writeln!(
        out,
        "{:<22}{:>width$}  {:>width$}  {:>10}",
        "",
        shorten(&diff.a.image, width),
        shorten(&diff.b.image, width),
        "change"
    );
    let rows: [(&str, String, String, String); 5] = [
        (
            "layers",
            diff.a.layers.to_string(),
            diff.b.layers.to_string(),
            format!("{:+}", diff.b.layers as i64 - diff.a.layers as i64),
        ),
        (
            "compressed",
            human_size(diff.a.compressed_bytes),
            human_size(diff.b.compressed_bytes),
            signed(diff.a.compressed_bytes, diff.b.compressed_bytes),
        ),
        (
            "uncompressed tar",
            human_size(diff.a.tar_bytes),
            human_size(diff.b.tar_bytes),
            signed(diff.a.tar_bytes, diff.b.tar_bytes),
        ),
        (
            "visible file bytes",
            human_size(diff.a.final_bytes),
            human_size(diff.b.final_bytes),
            signed(diff.a.final_bytes, diff.b.final_bytes),
        ),
        (
            "visible files",
            diff.a.final_files.to_string(),
            diff.b.final_files.to_string(),
            format!(
                "{:+}",
                diff.b.final_files as i64 - diff.a.final_files as i64
            ),
        ),
    ];
    for (label, a, b, change) in rows {
        let _ = writeln!(out, "{label:<22}{a:>width$}  {b:>width$}  {change:>10}");
    }
    let _ = writeln!(
        out,
        "shared layers: {} ({})",
        diff.shared_layers.len(),
        human_size(diff.shared_layers.iter().map(|l| l.tar_bytes).sum())
    );
    let _ = writeln!(
        out,
        "files: {} added ({}), {} removed ({}), {} changed",
        diff.added.len(),
        human_size(diff.added_bytes),
        diff.removed.len(),
        human_size(diff.removed_bytes),
        diff.changed.len()
    );
    for (title, list, sign) in [
        ("added", &diff.added, '+'),
        ("removed", &diff.removed, '-'),
        ("changed", &diff.changed, '~'),
    ] {
        if list.is_empty() {
            continue;
        }
        let mut largest: Vec<&FileChange> = list.iter().collect();
        largest.sort_by(|x, y| {
            (y.bytes_a.max(y.bytes_b), &x.path).cmp(&(x.bytes_a.max(x.bytes_b), &y.path))
        });
        let _ = writeln!(out, "\nlargest {title}:");
        for change in largest.iter().take(top) {
            let size = match sign {
                '+' => human_size(change.bytes_b),
                '-' => human_size(change.bytes_a),
                _ => format!(
                    "{} -> {} ({})",
                    human_size(change.bytes_a),
                    human_size(change.bytes_b),
                    change.what.join(",")
                ),
            };
            let _ = writeln!(out, "  {sign} {}  {size}", change.path);
        }
    }
    out
}
