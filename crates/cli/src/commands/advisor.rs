//! `stowage analyze` and `stowage diff`: the image advisor's reports on
//! images of the store (see the `stowage-advisor` crate for the figures).
//!
//! Exit codes: 0 on success; 1 when the image cannot be read (unknown,
//! missing or corrupt layer); 2 when `analyze --ci` finds a rule violated.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use stowage_advisor::ci::{CiRules, evaluate, parse_bytes};

use crate::Globals;
use crate::output::emit;

/// Output format of the advisor's commands.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// A readable report.
    Text,
    /// Stable, sorted JSON.
    Json,
}

/// The advisor's subcommands.
#[derive(Subcommand, Debug)]
pub enum AdvisorCommand {
    /// Analyse an image: layer sizes, reclaimable bytes, caches and toolchains left behind.
    ///
    /// Reclaimable bytes are file versions a later layer overwrites or deletes:
    /// stored and shipped, never visible. The surviving version is not counted
    /// (dive's "wasted bytes" also counts it; both figures are shown).
    /// Efficiency = 1 - reclaimable / file bytes of all layers.
    /// With --ci the thresholds are checked (dive's defaults: efficiency 0.9,
    /// user waste 0.1); a violation exits with code 2.
    Analyze(AnalyzeArgs),
    /// Compare two images: sizes, layers, shared layers and the files added,
    /// removed and changed between their final filesystems.
    Diff(DiffArgs),
}

/// Arguments of `stowage analyze`.
#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// The image (name, name:tag or ID).
    image: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
    /// Also write a self-contained HTML page (chart + tables) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Check the thresholds below; exit 2 when one is violated.
    #[arg(long)]
    ci: bool,
    /// CI: the lowest acceptable efficiency, 0..1 [default with --ci: 0.9].
    #[arg(long, value_name = "F")]
    lowest_efficiency: Option<f64>,
    /// CI: the most reclaimable bytes allowed (e.g. 20MB) [default: off].
    #[arg(long, value_name = "N")]
    highest_wasted_bytes: Option<String>,
    /// CI: the largest share of the non-base layers' bytes that may be
    /// reclaimable, 0..1 [default with --ci: 0.1].
    #[arg(long, value_name = "F")]
    highest_user_wasted_percent: Option<f64>,
    /// How many paths each list shows.
    #[arg(long, default_value_t = stowage_advisor::DEFAULT_TOP)]
    top: usize,
}

/// Arguments of `stowage diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The first image.
    image_a: String,
    /// The second image.
    image_b: String,
    /// Output format (JSON lists every changed path).
    #[arg(long, value_enum, default_value = "text")]
    format: ReportFormat,
    /// How many paths each text list shows.
    #[arg(long, default_value_t = 10)]
    top: usize,
}

/// Runs an advisor subcommand.
pub fn run(command: &AdvisorCommand, globals: &Globals) -> anyhow::Result<ExitCode> {
    match command {
        AdvisorCommand::Analyze(args) => analyze(args, globals),
        AdvisorCommand::Diff(args) => diff(args, globals),
    }
}

fn fraction(value: Option<f64>, default: f64, flag: &str) -> anyhow::Result<Option<f64>> {
    let value = value.unwrap_or(default);
    if !(0.0..=1.0).contains(&value) {
        anyhow::bail!("{flag} must be between 0 and 1, got {value}");
    }
    Ok(Some(value))
}

fn analyze(args: &AnalyzeArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let rules = CiRules {
        lowest_efficiency: fraction(args.lowest_efficiency, 0.9, "--lowest-efficiency")?,
        highest_wasted_bytes: match &args.highest_wasted_bytes {
            Some(text) => Some(parse_bytes(text).with_context(|| {
                format!("--highest-wasted-bytes {text:?}: expected bytes like 20MB")
            })?),
            None => None,
        },
        highest_user_wasted_percent: fraction(
            args.highest_user_wasted_percent,
            0.1,
            "--highest-user-wasted-percent",
        )?,
    };
    let store = globals.open_store()?;
    let analysis = stowage_advisor::analyze_image(&store, &args.image, args.top)?;
    if let Some(path) = &args.html {
        std::fs::write(path, stowage_advisor::html::render_html(&analysis))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let results = if args.ci {
        evaluate(&analysis, &rules)
    } else {
        Vec::new()
    };
    match args.format {
        ReportFormat::Text => {
            let mut text = stowage_advisor::render::render_text(&analysis);
            if args.ci {
                text.push_str("\nCI rules:\n");
                for result in &results {
                    text.push_str(&format!(
                        "  {}: {} — {}\n",
                        if result.passed { "PASS" } else { "FAIL" },
                        result.rule,
                        result.detail
                    ));
                }
            }
            emit(&text)?;
        }
        ReportFormat::Json => {
            let mut value = serde_json::to_value(&analysis)?;
            if args.ci
                && let Some(object) = value.as_object_mut()
            {
                object.insert("ci".to_owned(), serde_json::to_value(&results)?);
            }
            emit(&stowage_advisor::render::render_json(&value))?;
        }
    }
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for result in failed {
        eprintln!("ci: rule {} failed: {}", result.rule, result.detail);
    }
    Ok(ExitCode::from(2))
}

fn diff(args: &DiffArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let store = globals.open_store()?;
    let (details_a, sources_a, scan_a) = stowage_advisor::scan_image(&store, &args.image_a)?;
    let (details_b, sources_b, scan_b) = stowage_advisor::scan_image(&store, &args.image_b)?;
    let (id_a, id_b) = (details_a.id.to_string(), details_b.id.to_string());
    let diff = stowage_advisor::diff::diff_images(
        &stowage_advisor::diff::Side {
            image: &args.image_a,
            id: &id_a,
            sources: &sources_a,
            scan: &scan_a,
        },
        &stowage_advisor::diff::Side {
            image: &args.image_b,
            id: &id_b,
            sources: &sources_b,
            scan: &scan_b,
        },
    );
    let text = match args.format {
        ReportFormat::Text => stowage_advisor::diff::render_diff_text(&diff, args.top),
        ReportFormat::Json => stowage_advisor::render::render_json(&diff),
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}
