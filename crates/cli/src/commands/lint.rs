//! `stowage lint`: the advisor's Dockerfile rules (the seed's tips, hadolint-
//! style hygiene and BuildKit's build checks) without building.
//!
//! Exit code: 0 when there is no error-severity finding, 1 when there is one
//! (or, with `--strict`, any warning too); 1 also for a Dockerfile that does
//! not parse.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use stowage_lint::{LintOptions, Severity};

use crate::commands::parse::read_dockerfile;
use crate::output::{Rendered, emit};

/// Output format of `stowage lint`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LintFormat {
    /// `file:line:col: severity rule (name): message` plus the fix.
    Text,
    /// JSON with every finding and what could not be judged.
    Json,
    /// SARIF 2.1.0.
    Sarif,
}

/// Arguments of `stowage lint`.
#[derive(Args, Debug)]
pub struct LintArgs {
    /// The Dockerfile [default: CONTEXT/Dockerfile].
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// The build context (enables the context and requirements-file rules).
    #[arg(default_value = ".")]
    context: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: LintFormat,
    /// Build arguments (checked for secrets that would land in history).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long)]
    target: Option<String>,
    /// Fail (exit 1) on warnings too, not only on errors.
    #[arg(long)]
    strict: bool,
    /// Rule IDs or names to skip (repeatable).
    #[arg(long = "disable", value_name = "RULE")]
    disable: Vec<String>,
}

/// Runs `stowage lint`.
pub fn run(args: &LintArgs) -> anyhow::Result<ExitCode> {
    let file = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let (name, source) = read_dockerfile(&file)?;
    let mut build_args = BTreeMap::new();
    for pair in &args.build_args {
        let (key, value) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
        build_args.insert(key.to_string(), value.to_string());
    }
    let options = LintOptions {
        context_dir: Some(args.context.clone()),
        dockerfile_path: Some(file.clone()),
        build_args,
        target: args.target.clone(),
        disabled_rules: args.disable.clone(),
        context_large_files: None,
    };
    let report =
        stowage_lint::lint(&source, &options).map_err(|e| Rendered(e.render(&name, &source)))?;
    let text = match args.format {
        LintFormat::Text => stowage_lint::render_text(&report, &name),
        LintFormat::Json => stowage_lint::render_json(&report, &name),
        LintFormat::Sarif => stowage_lint::render_sarif(&report, &name),
    };
    emit(&text)?;
    let threshold = if args.strict {
        Severity::Warning
    } else {
        Severity::Error
    };
    Ok(if report.has_at_least(threshold) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
