//! The report printed at the end of `stowage build`: size, layers, cache
//! hits, time per step, and the top findings, each with the cost measured on
//! the layers this build made (caches and toolchains left in the image,
//! bytes a later step hides, chmod/chown copies), tied to the Dockerfile line
//! and, when a lint rule covers it, to that rule.

use std::fmt::Write as _;

use serde::Serialize;
use stowage_lint::{Finding, LintReport, SeedTip};

use crate::analysis::Analysis;
use crate::classify::Family;
use crate::render::{human_size, shorten};

/// A step of the build, as the report needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepInfo {
    /// Stage name or index.
    pub stage: String,
    /// Dockerfile line (1-based).
    pub line: usize,
    /// The instruction.
    pub instruction: String,
    /// `built`, `cached`, `config` or `source`.
    pub outcome: String,
    /// Seconds it took.
    pub seconds: f64,
    /// Blob digest of the layer it produced, if any.
    pub layer_digest: Option<String>,
}

/// A step in the report, with its layer's size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepLine {
    /// The step.
    #[serde(flatten)]
    pub step: StepInfo,
    /// Uncompressed bytes of its layer (when it is in the final image).
    pub layer_bytes: Option<u64>,
}

/// One finding of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportFinding {
    /// Dockerfile line.
    pub line: usize,
    /// The lint rule that covers it, if any.
    pub rule: Option<String>,
    /// Measured bytes at stake (0 when only the linter saw it).
    pub bytes: u64,
    /// What to do.
    pub message: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildReport {
    /// Image ID.
    pub id: String,
    /// Layers of the image.
    pub layers: usize,
    /// Uncompressed tar bytes.
    pub size_bytes: u64,
    /// Compressed bytes.
    pub compressed_bytes: u64,
    /// Steps that were cache hits.
    pub cache_hits: usize,
    /// Steps that ran.
    pub steps_run: usize,
    /// Wall-clock seconds of the build.
    pub seconds: f64,
    /// Image efficiency (see [`crate::Totals::efficiency`]).
    pub efficiency: f64,
    /// Every step.
    pub steps: Vec<StepLine>,
    /// The top findings, largest measured cost first.
    pub findings: Vec<ReportFinding>,
}

fn matching_rule<'a>(
    lint: Option<&'a LintReport>,
    line: usize,
    tips: &[SeedTip],
) -> Option<&'a Finding> {
    lint?
        .findings
        .iter()
        .find(|f| f.span.start_line <= line && line <= f.span.end_line && tips.contains(&f.tip))
}

/// Builds the report for an image this build produced. `max_findings` caps
/// the list (the CLI uses 5).
pub fn build_report(
    analysis: &Analysis,
    steps: &[StepInfo],
    lint: Option<&LintReport>,
    seconds: f64,
    max_findings: usize,
) -> BuildReport {
    // Each layer of the image → the step (of this build) that made it.
    let step_of_layer = |layer: usize| -> Option<&StepInfo> {
        let digest = &analysis.layers.get(layer)?.digest;
        steps
            .iter()
            .rev()
            .find(|s| s.layer_digest.as_ref() == Some(digest))
    };
    let mut findings: Vec<ReportFinding> = Vec::new();
    for leftover in &analysis.leftovers {
        let Some(step) = step_of_layer(leftover.layer) else {
            continue;
        };
        if leftover.bytes == 0 {
            continue;
        }
        let tips: &[SeedTip] = match leftover.family {
            Family::Cache => &[SeedTip::CleanCachesSameLayer],
            Family::Toolchain => &[SeedTip::MultiStage],
        };
        let rule = matching_rule(lint, step.line, tips);
        findings.push(ReportFinding {
            line: step.line,
            rule: rule.map(|f| f.rule.to_owned()),
            bytes: leftover.bytes,
            message: format!(
                "line {} left {} in {} ({}, {} files): {}",
                step.line,
                human_size(leftover.bytes),
                leftover.location,
                leftover.category,
                leftover.files,
                leftover.fix
            ),
        });
    }
    for layer in &analysis.layers {
        if layer.reclaimable_bytes == 0 {
            continue;
        }
        let Some(step) = step_of_layer(layer.index) else {
            continue;
        };
        let example = analysis
            .reclaimable
            .iter()
            .find(|w| w.added_in.contains(&layer.index));
        let later = example
            .and_then(|w| w.hidden_in.iter().copied().find(|h| *h != layer.index))
            .and_then(step_of_layer)
            .map(|s| format!(" (line {})", s.line))
            .unwrap_or_default();
        let rule = matching_rule(
            lint,
            step.line,
            &[SeedTip::CleanCachesSameLayer, SeedTip::FewerLayers],
        );
        findings.push(ReportFinding {
            line: step.line,
            rule: rule.map(|f| f.rule.to_owned()),
            bytes: layer.reclaimable_bytes,
            message: format!(
                "line {} stored {} that a later step{later} deletes or overwrites{}: remove files in the same RUN that creates them",
                step.line,
                human_size(layer.reclaimable_bytes),
                example.map(|w| format!(", e.g. {}", w.path)).unwrap_or_default()
            ),
        });
    }
    let mut rewrites_by_layer: std::collections::BTreeMap<usize, (u64, u64)> =
        std::collections::BTreeMap::new();
    for rewrite in &analysis.metadata_rewrites {
        let slot = rewrites_by_layer.entry(rewrite.rewritten_in).or_default();
        slot.0 += rewrite.size;
        slot.1 += 1;
    }
    for (layer, (bytes, files)) in rewrites_by_layer {
        let Some(step) = step_of_layer(layer) else {
            continue;
        };
        let rule = matching_rule(lint, step.line, &[SeedTip::UserAndLayers]);
        findings.push(ReportFinding {
            line: step.line,
            rule: rule.map(|f| f.rule.to_owned()),
            bytes,
            message: format!(
                "line {} copied {} ({files} files) only to change mode/owner: use COPY --chown/--chmod instead of a later chmod/chown",
                step.line,
                human_size(bytes)
            ),
        });
    }
    findings.sort_by(|a, b| (b.bytes, a.line, &a.message).cmp(&(a.bytes, b.line, &b.message)));
    findings.truncate(max_findings);
    // Room left: the linter's warnings, which this build could not measure.
    if let Some(lint) = lint {
        for finding in &lint.findings {
            if findings.len() >= max_findings {
                break;
            }
            if finding.severity < stowage_lint::Severity::Warning
                || findings
                    .iter()
                    .any(|f| f.rule.as_deref() == Some(finding.rule))
            {
                continue;
            }
            findings.push(ReportFinding {
                line: finding.span.start_line,
                rule: Some(finding.rule.to_owned()),
                bytes: 0,
                message: format!(
                    "line {}: {} (not measured)",
                    finding.span.start_line, finding.message
                ),
            });
        }
    }
    let step_lines = steps
        .iter()
        .map(|step| StepLine {
            step: step.clone(),
            layer_bytes: step.layer_digest.as_ref().and_then(|d| {
                analysis
                    .layers
                    .iter()
                    .find(|l| &l.digest == d)
                    .map(|l| l.tar_bytes)
            }),
        })
        .collect();
    BuildReport {
        id: analysis.id.clone(),
        layers: analysis.totals.layers,
        size_bytes: analysis.totals.tar_bytes,
        compressed_bytes: analysis.totals.compressed_bytes,
        cache_hits: steps.iter().filter(|s| s.outcome == "cached").count(),
        steps_run: steps.iter().filter(|s| s.outcome == "built").count(),
        seconds,
        efficiency: analysis.totals.efficiency,
        steps: step_lines,
        findings,
    }
}

/// The report as printed after a build.
pub fn render_report_text(report: &BuildReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "build report: {} layers, {} ({} compressed), efficiency {:.1}%; {} step(s) ran, {} cached, {:.2}s",
        report.layers,
        human_size(report.size_bytes),
        human_size(report.compressed_bytes),
        report.efficiency * 100.0,
        report.steps_run,
        report.cache_hits,
        report.seconds
    );
    for line in &report.steps {
        if line.step.outcome == "config" {
            continue;
        }
        let _ = writeln!(
            out,
            "  {:>7.2}s  {:<6}  {:>9}  line {:<3} {}",
            line.step.seconds,
            line.step.outcome,
            line.layer_bytes.map(human_size).unwrap_or_default(),
            line.step.line,
            shorten(&line.step.instruction, 60)
        );
    }
    if !report.findings.is_empty() {
        out.push_str("top findings:\n");
        for finding in &report.findings {
            let rule = finding
                .rule
                .as_deref()
                .map(|r| format!("[{r}] "))
                .unwrap_or_default();
            let _ = writeln!(out, "  {rule}{}", finding.message);
        }
    }
    out
}
