//! stowage's Dockerfile linter. It turns the seed's tips for effective images
//! (fewer layers, caches cleaned in the same layer, `--no-install-recommends`,
//! pinned versions, manifests before sources, multi-stage builds, small bases,
//! a lean context, USER) into findings with a stable rule ID, a severity, a
//! span, the tip they belong to and a concrete fix; it also implements
//! BuildKit's build checks under BuildKit's names. Lint never fails on a
//! Dockerfile that parses: what it cannot judge goes to
//! [`LintReport::unjudged`].

pub mod buildkit;
pub mod context;
pub mod packages;
pub mod render;
pub mod rules;
pub mod shell;
mod view;

#[cfg(test)]
mod seed_tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
pub use stowage_dockerfile::{ParseError, Span};

pub use render::{render_json, render_sarif, render_text};
pub use rules::{RULES, RuleInfo, rule_info};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A hint.
    Info,
    /// Likely waste or risk.
    Warning,
    /// Will break or leak.
    Error,
}

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// Which of the seed's tips a finding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeedTip {
    /// Fewer layers: combine RUNs.
    FewerLayers,
    /// Remove install leftovers in the same layer.
    CleanCachesSameLayer,
    /// Leave recommended packages out.
    NoInstallRecommends,
    /// Pin versions.
    PinVersions,
    /// Copy dependency manifests before sources (cache-friendly order).
    ManifestFirst,
    /// Multi-stage builds leave build tools behind.
    MultiStage,
    /// Choose a small, explicit base image.
    SmallBase,
    /// Keep the build context lean.
    LeanContext,
    /// USER and layers (ownership changes, non-root user).
    UserAndLayers,
    /// Not one of the seed's tips: correctness, security or BuildKit hygiene.
    General,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable ID: `STW0xx` for stowage's own rules, BuildKit's name for build checks.
    pub rule: &'static str,
    /// Kebab-case name of the rule.
    pub name: &'static str,
    /// Severity.
    pub severity: Severity,
    /// Where (the instruction, usually).
    pub span: Span,
    /// What is wrong.
    pub message: String,
    /// The seed tip.
    pub tip: SeedTip,
    /// A concrete fix (often the rewritten line).
    pub fix: String,
    /// The equivalent hadolint rule, when there is one.
    pub hadolint: Option<&'static str>,
}

/// What to lint with.
#[derive(Debug, Clone, Default)]
pub struct LintOptions {
    /// The build context, for the context and requirement-file rules.
    pub context_dir: Option<PathBuf>,
    /// The Dockerfile's path (for `.dockerignore` selection and reports).
    pub dockerfile_path: Option<PathBuf>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Rule IDs or names to leave out.
    pub disabled_rules: Vec<String>,
    /// The context's files above 1 MiB (path relative to the context, size), when the
    /// caller already walked the whole context (a build): the context rules then do not
    /// walk it again.
    pub context_large_files: Option<Vec<(String, u64)>>,
}

/// The result of linting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LintReport {
    /// Findings sorted by position, then rule.
    pub findings: Vec<Finding>,
    /// What could not be judged, and why.
    pub unjudged: Vec<String>,
}

impl LintReport {
    /// Whether any finding has at least `severity`.
    pub fn has_at_least(&self, severity: Severity) -> bool {
        self.findings.iter().any(|f| f.severity >= severity)
    }

    /// The distinct rule IDs found, sorted.
    pub fn rule_ids(&self) -> Vec<&'static str> {
        let mut ids: Vec<&'static str> = self.findings.iter().map(|f| f.rule).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Lint a Dockerfile. Fails only when the Dockerfile does not parse.
#[allow(clippy::result_large_err)]
pub fn lint(dockerfile_source: &str, options: &LintOptions) -> Result<LintReport, ParseError> {
    let tree = stowage_dockerfile::parse(dockerfile_source)?;
    Ok(lint_parsed(&tree, options))
}

/// Lint an already parsed Dockerfile (what `stowage build --check` calls
/// before building; the rule IDs are the same as `stowage lint`).
pub fn lint_parsed(tree: &stowage_dockerfile::Dockerfile, options: &LintOptions) -> LintReport {
    let view = view::View::new(tree, options);
    let mut report = LintReport::default();
    rules::run(&view, options, &mut report);
    buildkit::run(&view, options, &mut report);
    context::run(&view, options, &mut report);
    report.findings.retain(|f| {
        !options
            .disabled_rules
            .iter()
            .any(|d| d.eq_ignore_ascii_case(f.rule) || d.eq_ignore_ascii_case(f.name))
    });
    report.findings.sort_by(|a, b| {
        (a.span.start_line, a.span.start_column, a.rule, &a.message).cmp(&(
            b.span.start_line,
            b.span.start_column,
            b.rule,
            &b.message,
        ))
    });
    report.findings.dedup();
    report.unjudged.sort();
    report.unjudged.dedup();
    report
}

/// The check `stowage build --check` runs: the same rules, returning the
/// report and whether the build should stop (any error-severity finding).
pub fn check_before_build(
    tree: &stowage_dockerfile::Dockerfile,
    options: &LintOptions,
) -> (LintReport, bool) {
    let report = lint_parsed(tree, options);
    let stop = report.has_at_least(Severity::Error);
    (report, stop)
}
