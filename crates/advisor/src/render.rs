//! Text and JSON renderings of an [`Analysis`].

use std::fmt::Write as _;

use crate::analysis::Analysis;
use crate::classify::Family;

/// A size in decimal units with three significant digits (`18.3MB`, `512B`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if unit == 0 || value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    };
    format!("{text}{}", UNITS.get(unit).copied().unwrap_or("B"))
}

/// `text` cut to `max` characters with an ellipsis.
pub fn shorten(text: &str, max: usize) -> String {
    let text = text.replace('\n', " ");
    if text.chars().count() <= max {
        return text;
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// A percentage with one decimal.
pub fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// The human-readable report.
pub fn render_text(analysis: &Analysis) -> String {
    let mut out = String::new();
    let t = &analysis.totals;
    let _ = writeln!(out, "Image: {} ({})", analysis.image, analysis.id);
    let _ = writeln!(
        out,
        "  {} layers, {} compressed, {} uncompressed tar, {} in {} files visible",
        t.layers,
        human_size(t.compressed_bytes),
        human_size(t.tar_bytes),
        human_size(t.final_bytes),
        t.final_files
    );
    let _ = writeln!(
        out,
        "  efficiency {} (1 - reclaimable / file bytes of all layers)",
        percent(t.efficiency)
    );
    let _ = writeln!(
        out,
        "  reclaimable {} in {} hidden file versions (dive would count {})",
        human_size(t.reclaimable_bytes),
        t.reclaimable_files,
        human_size(t.dive_wasted_bytes)
    );
    let _ = writeln!(
        out,
        "  user layers waste {} of their {}",
        percent(t.user_wasted_fraction),
        human_size(t.user_content_bytes)
    );
    let _ = writeln!(
        out,
        "  caches/temp files {}, build toolchains {}, chmod/chown copies {}",
        human_size(t.cache_bytes),
        human_size(t.toolchain_bytes),
        human_size(t.metadata_rewrite_bytes)
    );

    out.push_str("\nLayers:\n");
    let _ = writeln!(
        out,
        "  {:>3}  {:>9}  {:>9}  {:>7}  {:>7}  {:>7}  {:>9}  CREATED BY",
        "#", "SIZE", "COMPR.", "ADDED", "CHANGED", "REMOVED", "WASTED"
    );
    for layer in &analysis.layers {
        let _ = writeln!(
            out,
            "  {:>3}  {:>9}  {:>9}  {:>7}  {:>7}  {:>7}  {:>9}  {}",
            layer.index,
            human_size(layer.tar_bytes),
            human_size(layer.compressed_bytes),
            layer.files_added,
            layer.files_changed,
            layer.files_removed,
            human_size(layer.reclaimable_bytes),
            shorten(&layer.created_by, 60)
        );
    }

    if !analysis.reclaimable.is_empty() {
        out.push_str("\nReclaimable (versions hidden by a later layer):\n");
        for wasted in &analysis.reclaimable {
            let _ = writeln!(
                out,
                "  {:>9}  {}  (added in layer {}, hidden in layer {}{})",
                human_size(wasted.reclaimable_bytes),
                wasted.path,
                join_indexes(&wasted.added_in),
                join_indexes(&wasted.hidden_in),
                if wasted.survives { "" } else { ", deleted" }
            );
        }
    }
    if !analysis.metadata_rewrites.is_empty() {
        out.push_str("\nRewritten only to change mode/owner (content stored twice):\n");
        for rewrite in &analysis.metadata_rewrites {
            let _ = writeln!(
                out,
                "  {:>9}  /{}  (layer {} -> {}: {})",
                human_size(rewrite.size),
                rewrite.path,
                rewrite.original_layer,
                rewrite.rewritten_in,
                rewrite.changed.join(", ")
            );
        }
    }
    for (family, title) in [
        (Family::Cache, "Caches and temporary files in the image"),
        (Family::Toolchain, "Build toolchains in the image"),
    ] {
        let items: Vec<_> = analysis
            .leftovers
            .iter()
            .filter(|l| l.family == family)
            .collect();
        if items.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        for item in items {
            let _ = writeln!(
                out,
                "  {:>9}  {} ({}, {} files, layer {}): {}",
                human_size(item.bytes),
                item.location,
                item.category,
                item.files,
                item.layer,
                item.fix
            );
        }
    }
    if !analysis.top_files.is_empty() {
        out.push_str("\nLargest files to look at:\n");
        for file in &analysis.top_files {
            let _ = writeln!(
                out,
                "  {:>9}  {}  ({}, layer {})",
                human_size(file.bytes),
                file.path,
                file.reason,
                file.layer
            );
        }
    }
    out
}

fn join_indexes(indexes: &[usize]) -> String {
    let mut sorted = indexes.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Pretty JSON with a trailing newline. Field order is fixed by the types
/// and every list is sorted, so equal images give equal bytes.
pub fn render_json<T: serde::Serialize>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()));
    text.push('\n');
    text
}
