//! `stowage analyze --html`: one self-contained page (inline CSS and inline
//! SVG, no scripts, no external resources) with a bar chart of layer sizes,
//! split into bytes that stay and bytes later layers hide, and the tables of
//! reclaimable files and leftovers.

use std::fmt::Write as _;

use crate::analysis::Analysis;
use crate::render::{human_size, percent, shorten};

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.kept{fill:#4a7fb5}.wasted{fill:#d9534f}\
svg text{font-size:12px;fill:#222}.summary span{display:inline-block;margin-right:2em}";

/// Renders the page.
pub fn render_html(analysis: &Analysis) -> String {
    let t = &analysis.totals;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>stowage analyze: {}</title><style>{STYLE}</style></head><body>\n",
        escape(&analysis.image)
    );
    let _ = writeln!(
        out,
        "<h1>{}</h1><p class=\"summary\"><span id=\"efficiency\">efficiency {}</span><span>{} layers</span><span>{} uncompressed</span><span id=\"reclaimable\">reclaimable {}</span><span>caches {}</span><span>toolchains {}</span></p>",
        escape(&analysis.image),
        percent(t.efficiency),
        t.layers,
        human_size(t.tar_bytes),
        human_size(t.reclaimable_bytes),
        human_size(t.cache_bytes),
        human_size(t.toolchain_bytes)
    );

    // The chart: one row per layer, bar length proportional to content bytes.
    let row_height = 22;
    let label_width = 360;
    let bar_width = 480.0;
    let largest = analysis
        .layers
        .iter()
        .map(|l| l.content_bytes)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let height = row_height * analysis.layers.len() + 10;
    let _ = writeln!(
        out,
        "<h2>Layer sizes</h2><svg id=\"layer-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\" aria-label=\"layer sizes\">",
        label_width + bar_width as usize + 120
    );
    for layer in &analysis.layers {
        let y = row_height * layer.index + 4;
        let wasted = layer.reclaimable_bytes.min(layer.content_bytes);
        let kept = layer.content_bytes - wasted;
        let kept_width = kept as f64 / largest * bar_width;
        let wasted_width = wasted as f64 / largest * bar_width;
        let _ = writeln!(
            out,
            "<g class=\"layer\" data-index=\"{}\"><text x=\"0\" y=\"{}\">{} {}</text><rect class=\"layer-bar kept\" x=\"{label_width}\" y=\"{y}\" width=\"{kept_width:.1}\" height=\"16\"><title>{} kept</title></rect><rect class=\"layer-bar wasted\" x=\"{:.1}\" y=\"{y}\" width=\"{wasted_width:.1}\" height=\"16\"><title>{} hidden by later layers</title></rect><text x=\"{:.1}\" y=\"{}\">{}</text></g>",
            layer.index,
            y + 12,
            layer.index,
            escape(&shorten(&layer.created_by, 48)),
            human_size(kept),
            label_width as f64 + kept_width,
            human_size(wasted),
            label_width as f64 + kept_width + wasted_width + 6.0,
            y + 12,
            human_size(layer.content_bytes)
        );
    }
    out.push_str("</svg>\n");

    out.push_str("<h2>Layers</h2><table id=\"layers\"><tr><th>#</th><th>size</th><th>compressed</th><th>added</th><th>changed</th><th>removed</th><th>wasted</th><th>created by</th></tr>\n");
    for layer in &analysis.layers {
        let _ = writeln!(
            out,
            "<tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            layer.index,
            human_size(layer.tar_bytes),
            human_size(layer.compressed_bytes),
            layer.files_added,
            layer.files_changed,
            layer.files_removed,
            human_size(layer.reclaimable_bytes),
            escape(&shorten(&layer.created_by, 100))
        );
    }
    out.push_str("</table>\n");

    out.push_str("<h2>Wasted files</h2><table id=\"wasted-files\"><tr><th>bytes</th><th>path</th><th>reason</th><th>layer</th></tr>\n");
    for file in &analysis.top_files {
        let _ = writeln!(
            out,
            "<tr class=\"wasted-file\"><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            human_size(file.bytes),
            escape(&file.path),
            escape(&file.reason),
            file.layer
        );
    }
    out.push_str("</table>\n</body></html>\n");
    out
}
