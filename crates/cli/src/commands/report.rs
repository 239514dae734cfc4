//! The advisor's part of `stowage build`: `--check` (lint before building,
//! stop on error-severity findings) and the report printed after the build
//! (`--report FILE` also writes it as JSON, with `-q` too).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use stowage_advisor::LowerLayersScan;
use stowage_advisor::report::{BuildReport, StepInfo, build_report};
use stowage_image::Reference;
use stowage_lint::{LintOptions, LintReport};
use stowage_solver::{BuildResult, DockerfileInput, StepOutcome};
use stowage_store::Store;

/// The lint options for the Dockerfile being built.
pub fn lint_options(
    dockerfile: &DockerfileInput,
    context: &Path,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
) -> LintOptions {
    LintOptions {
        context_dir: Some(context.to_path_buf()),
        dockerfile_path: dockerfile.path.clone(),
        build_args: build_args.clone(),
        target: target.map(str::to_owned),
        disabled_rules: Vec::new(),
        context_large_files: None,
    }
}

/// Lints the Dockerfile, or `None` when it does not parse (the build
/// itself reports that).
pub fn lint(dockerfile: &DockerfileInput, options: &LintOptions) -> Option<LintReport> {
    let tree = stowage_dockerfile::parse(&dockerfile.text).ok()?;
    Some(stowage_lint::lint_parsed(&tree, options))
}

/// `--check`: prints the findings (same rule names as `stowage lint`) and
/// says whether the build must stop (an error-severity finding).
pub fn check(dockerfile: &DockerfileInput, options: &LintOptions) -> bool {
    let Ok(tree) = stowage_dockerfile::parse(&dockerfile.text) else {
        return false;
    };
    let (report, stop) = stowage_lint::check_before_build(&tree, options);
    if !report.findings.is_empty() {
        eprint!("{}", stowage_lint::render_text(&report, &dockerfile.name));
    }
    if stop {
        eprintln!("check: error-severity findings; nothing was built");
    } else {
        eprintln!(
            "check: {} finding(s), none an error; building",
            report.findings.len()
        );
    }
    stop
}

fn outcome_name(outcome: &StepOutcome) -> &'static str {
    match outcome {
        StepOutcome::Cached => "cached",
        StepOutcome::Built { .. } => "built",
        StepOutcome::Config => "config",
        StepOutcome::Source => "source",
        StepOutcome::WouldRun => "would-run",
    }
}

/// The build report scans the built image's layers. An edit-rebuild changes only its top
/// layer, so while the build runs, a thread of its own (with its own store connection, at
/// the lowest priority) scans all but the top layer of the image the first tag names now;
/// the report then merges only the layers above them, or, when the new image does not
/// share them, drops this scan and does its own.
pub struct LowerLayersAhead {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Option<LowerLayersScan>>>,
}

impl LowerLayersAhead {
    /// Starts the scan; `None` when there is nothing to scan ahead (no tag) or no thread.
    pub fn start(store: &Store, tags: &[Reference]) -> Option<Self> {
        let tag = tags.first()?.to_string();
        let source = store.handle_source();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_seen = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("report-lower-layers".to_owned())
            .spawn(move || {
                // Only spare CPU: the build's own threads come first (failing to lower
                // the priority only makes the scan compete with them).
                let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
                let store = source.open().ok()?;
                let details = store.image(&tag).ok()?;
                let count = details.layers.len().checked_sub(1).filter(|&n| n > 0)?;
                LowerLayersScan::scan(&store, &details, count, &stop_seen)
            })
            .ok()?;
        Some(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Waits for the scan. A scan that failed only costs the report a full scan.
    pub fn finish(mut self) -> Option<LowerLayersScan> {
        self.thread.take()?.join().ok().flatten()
    }
}

impl Drop for LowerLayersAhead {
    /// An unused scan stops at its next layer; its thread is waited for, so that its store
    /// connection is closed before the build's (the last one closed folds the WAL back
    /// into the database).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Analyses the image the build made and measures the report's findings.
pub fn measure(
    store: &Store,
    result: &BuildResult,
    lint: Option<&LintReport>,
    elapsed: Duration,
    lower_layers: Option<LowerLayersAhead>,
) -> anyhow::Result<BuildReport> {
    let manifest_digest = result
        .manifest_digest
        .context("the build produced no image to report on")?;
    // An image reported on before (a no-op rebuild) keeps its analysis in the store.
    let kind = format!("advisor-analysis-v1-top{}", stowage_advisor::DEFAULT_TOP);
    let cached = store
        .image_annotation(&manifest_digest, &kind)
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<stowage_advisor::Analysis>(&bytes).ok());
    let analysis = match cached {
        Some(analysis) => analysis,
        None => {
            let details = store
                .image_by_manifest(&manifest_digest)
                .context("loading the built image for the build report")?;
            let name = details.id.to_string();
            let lower = lower_layers.and_then(LowerLayersAhead::finish);
            let (sources, scan) = stowage_advisor::scan_details_from(
                store,
                &details,
                &name,
                stowage_advisor::BlobCheck::Trust,
                lower,
            )?;
            let analysis = stowage_advisor::analyze_scan(
                &name,
                &name,
                &sources,
                &scan,
                stowage_advisor::DEFAULT_TOP,
            );
            if let Ok(bytes) = serde_json::to_vec(&analysis) {
                // Only a cache: failing to keep it costs a rescan next time.
                let _ = store.set_image_annotation(&manifest_digest, &kind, &bytes);
            }
            // The process ends once the report is printed: freeing the scan's tens of
            // thousands of small allocations one by one would only delay that.
            std::mem::forget(scan);
            analysis
        }
    };
    let steps: Vec<StepInfo> = result
        .steps
        .iter()
        .map(|step| StepInfo {
            stage: step.id.stage.clone(),
            line: step.id.line,
            instruction: step.text.clone(),
            outcome: outcome_name(&step.outcome).to_owned(),
            seconds: step.seconds,
            layer_digest: step.layer.as_ref().map(|l| l.blob_digest.to_string()),
        })
        .collect();
    Ok(build_report(
        &analysis,
        &steps,
        lint,
        elapsed.as_secs_f64(),
        5,
    ))
}

/// `--report FILE`: the report as JSON.
pub fn save(report: &BuildReport, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, stowage_advisor::render::render_json(report))
        .with_context(|| format!("writing the build report to {}", path.display()))
}
