//! The build itself: parse and expand the Dockerfile, pick the stages the
//! target needs, and run each stage's steps in order. Every step is keyed for
//! the cache first; a hit reuses the cached layer, a miss runs the step and
//! every step after it in that stage. The target stage becomes an image in
//! the store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use stowage_archive::Compression;
use stowage_context::{Context, StatCache};
use stowage_digest::Digest;
use stowage_dockerfile::expand::{ExpandOptions, ExpandedCommand, ExpandedProgram, PROXY_ARGS};
use stowage_dockerfile::instructions::{CommandLine, NetworkMode as RunNetwork, Source};
use stowage_dockerfile::{Instruction, ParseError, Program};
use stowage_exec::{CancelToken, NetworkMode};
use stowage_image::{History, ImageConfig, ImageId, LayerInfo, Platform, Reference};
use stowage_store::{CacheRecord, ManifestFormat, Store};

use crate::cachekey::{CacheKey, MissReason, OpKind, StepInputs, explain_miss};
use crate::config::{self, StageFlags, argv_of, go_quote, shell_of};
use crate::copy::{CopyFrom, CopySpec, plan_copy, write_copy_layer};
use crate::error::{BuildError, StepError, StepLocation};
use crate::layer::oci_layer_media_type;
use crate::mounts;
use crate::progress::{Event, Progress, StepId, StepOutcome};
use crate::remote_cache::{CacheExport, RemoteCache, RemoteHits, stage_entries};
use crate::rootfs::{MergedView, lowers_for};
use crate::run::{RunParams, run_step};
use crate::squash::{SquashMode, squash_stage};
use crate::stat_records::{load_stat_cache, save_stat_cache};
use crate::unpacked_digests::UnpackedDigests;

/// The Dockerfile to build.
#[derive(Debug, Clone)]
pub struct DockerfileInput {
    /// Its name for messages (`Dockerfile`, a path, or `<stdin>`).
    pub name: String,
    /// Its text.
    pub text: String,
    /// Where it is on disk, if it is a file (for `<name>.dockerignore`).
    pub path: Option<PathBuf>,
}

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The Dockerfile.
    pub dockerfile: DockerfileInput,
    /// The context directory.
    pub context: PathBuf,
    /// Tags for the result.
    pub tags: Vec<Reference>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--label` values.
    pub labels: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// Default network of RUN steps.
    pub network: NetworkMode,
    /// `--no-cache`.
    pub no_cache: bool,
    /// Compute keys and report, run nothing.
    pub dry_run: bool,
    /// Layer compression.
    pub compression: Compression,
    /// SOURCE_DATE_EPOCH / `--timestamp`: clamps mtimes and dates the image.
    pub timestamp: Option<i64>,
    /// The platform to build for (must be the native one).
    pub platform: Platform,
    /// `--secret id=ID,src=FILE`: files RUN --mount=type=secret can read.
    pub secrets: BTreeMap<String, PathBuf>,
    /// `--cache-from`: images whose layers serve as cache hits.
    pub cache_from: Vec<String>,
    /// `--squash` / `--squash-all`.
    pub squash: SquashMode,
}

/// Finds images for FROM and `COPY --from`: the local store, or a registry.
pub trait ImageSource: Sync {
    /// The image for `reference`, as stored (pulling it first if needed).
    fn image(&self, store: &Store, reference: &str) -> Result<stowage_store::ImageDetails, String>;

    /// Where `--cache-from` values are read from, if not from images in the
    /// store (see [`crate::remote_cache`]).
    fn remote_cache(&self) -> Option<&dyn RemoteCache> {
        None
    }
}

/// Only the local store.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalImages;

impl ImageSource for LocalImages {
    fn image(&self, store: &Store, reference: &str) -> Result<stowage_store::ImageDetails, String> {
        store.image(reference).map_err(|e| e.to_string())
    }
}

/// One step as it went.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// Which step.
    pub id: StepId,
    /// The instruction.
    pub text: String,
    /// How it ended.
    pub outcome: StepOutcome,
    /// Why it missed the cache (empty when cached or config-only).
    pub reasons: Vec<MissReason>,
    /// Seconds it took.
    pub seconds: f64,
    /// The layer it added, if any.
    pub layer: Option<LayerInfo>,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    /// The image ID (config digest); `None` for a dry run.
    pub image_id: Option<ImageId>,
    /// The manifest digest.
    pub manifest_digest: Option<Digest>,
    /// The tags given.
    pub tags: Vec<Reference>,
    /// Every step of every built stage.
    pub steps: Vec<StepReport>,
    /// Layers of the final image.
    pub layers: Vec<LayerInfo>,
    /// The final image's config.
    pub config: Option<ImageConfig>,
    /// Context files and bytes the COPY/ADD steps used.
    pub context_used: (u64, u64),
    /// The whole context's files and bytes, when a COPY of the context root
    /// walked it anyway (so nobody walks it twice).
    pub context_total: Option<(u64, u64)>,
    /// The whole context's files above [`CONTEXT_LARGE_FILE`] (path, size), when a COPY
    /// of the context root walked all of it (for the build report's lint).
    pub context_large_files: Option<Vec<(String, u64)>>,
    /// The keyed layers `--cache-to` can export.
    pub cache_export: CacheExport,
}

/// How a stage starts.
#[derive(Debug, Clone)]
enum Base {
    Scratch,
    Stage(usize),
    Image(Box<stowage_store::ImageDetails>),
}

/// A stage's state while its steps run.
#[derive(Debug, Clone)]
struct StageState {
    config: ImageConfig,
    layers: Vec<LayerInfo>,
    /// The cache key of each layer, where known (base layers have none).
    layer_keys: Vec<Option<CacheKey>>,
    key: CacheKey,
    missed: bool,
    flags: StageFlags,
}

/// Builds the request's target into the store.
pub fn build(
    store: &Store,
    request: &BuildRequest,
    images: &dyn ImageSource,
    progress: &dyn Progress,
) -> Result<BuildResult, BuildError> {
    let _lease = store.lease()?;
    if request.platform.normalized() != Platform::native().normalized() {
        return Err(BuildError::Setup(format!(
            "--platform {} is not supported: stowage builds for the native platform {} only",
            request.platform,
            Platform::native()
        )));
    }
    let dockerfile_error = |error: ParseError| BuildError::Dockerfile {
        file: request.dockerfile.name.clone(),
        source_text: request.dockerfile.text.clone(),
        error: Box::new(error),
    };
    let tree = stowage_dockerfile::parse(&request.dockerfile.text).map_err(dockerfile_error)?;
    let program = stowage_dockerfile::lower(&tree).map_err(dockerfile_error)?;
    for warning in &program.warnings {
        let text = format!(
            "{}:{}: {}",
            request.dockerfile.name, warning.line, warning.message
        );
        progress.event(Event::Warning(&text));
    }
    let target = match &request.target {
        Some(name) => program.stage(name).map(|s| s.index).ok_or_else(|| {
            let names: Vec<String> = program
                .stages
                .iter()
                .map(|s| s.name.clone().unwrap_or_else(|| s.index.to_string()))
                .collect();
            BuildError::Setup(format!(
                "--target {name:?} names no stage; the stages are: {}",
                names.join(", ")
            ))
        })?,
        None => program.stages.len().saturating_sub(1),
    };

    let mut options = ExpandOptions {
        build_args: request.build_args.clone(),
        ..ExpandOptions::default()
    };
    let first = stowage_dockerfile::expand::expand(&program, &options).map_err(dockerfile_error)?;
    let needed = needed_stages(&program, &first, target);

    // Resolve the bases of the stages the target needs.
    let mut bases: BTreeMap<usize, Base> = BTreeMap::new();
    for &index in &needed {
        let stage = &first.stages[index];
        let base = if let Some(from_stage) = stage.base_stage {
            Base::Stage(from_stage)
        } else if stage.from.image.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else {
            let location = stage_location(&program, index, 1);
            let details =
                images
                    .image(store, &stage.from.image)
                    .map_err(|detail| BuildError::Step {
                        location,
                        kind: StepError::BaseImage {
                            reference: stage.from.image.clone(),
                            detail,
                        },
                    })?;
            Base::Image(Box::new(details))
        };
        match &base {
            Base::Image(details) => {
                let mut config = details.config.clone();
                with_default_path(&mut config);
                options.base_envs.insert(index, env_pairs(&config));
            }
            Base::Scratch => {
                let mut config = ImageConfig::default();
                with_default_path(&mut config);
                options.base_envs.insert(index, env_pairs(&config));
            }
            Base::Stage(_) => {}
        }
        bases.insert(index, base);
    }
    let expanded =
        stowage_dockerfile::expand::expand(&program, &options).map_err(dockerfile_error)?;
    for unused in &expanded.unused_build_args {
        let text = format!("[Warning] one or more build args were not consumed: {unused}");
        progress.event(Event::Warning(&text));
    }

    let remote_hits = match images.remote_cache() {
        Some(remote) => RemoteHits::load(store, remote, &request.cache_from, progress),
        None => {
            for reference in &request.cache_from {
                let image = images.image(store, reference).map_err(|detail| {
                    BuildError::Setup(format!("--cache-from {reference}: {detail}"))
                })?;
                import_cache_keys(store, &image)?;
            }
            RemoteHits::default()
        }
    };

    let context = open_context(request)?;
    let context_id = context.root().to_string_lossy().into_owned();
    // Loaded when a step first needs a file's digest: a COPY whose selection is unchanged
    // since the last build (same metadata fingerprint) never does.
    let stat_cache: Mutex<Option<StatCache>> = Mutex::new(None);

    let runner = Runner {
        store,
        request,
        images,
        progress,
        program: &program,
        expanded: &expanded,
        context: &context,
        stat_cache: &stat_cache,
        context_id: &context_id,
        positions: Mutex::new(Vec::new()),
        position_prefix: format!("{}\0{}", context_id, request.dockerfile.name),
        reports: Mutex::new(Vec::new()),
        finished: Mutex::new(BTreeMap::new()),
        used: Mutex::new((0, 0)),
        context_total: Mutex::new(None),
        context_large_files: Mutex::new(None),
        cancel: CancelToken::new(),
        remote_hits,
        unpacked_digests: UnpackedDigests::new(store),
    };
    run_stages(&runner, &program, &expanded, &needed, &bases)?;
    let positions = std::mem::take(&mut *lock(&runner.positions));
    let mut reports = std::mem::take(&mut *lock(&runner.reports));
    reports.sort_by_key(|r| (r.id.stage_index, r.id.step));
    let used = *lock(&runner.used);
    let context_total = *lock(&runner.context_total);
    let context_large_files = lock(&runner.context_large_files).take();
    let cache_export = {
        let finished = lock(&runner.finished);
        let entries = |state: &StageState| stage_entries(&state.layers, &state.layer_keys);
        CacheExport::collect(
            finished.get(&target).map(entries).unwrap_or_default(),
            finished.values().map(entries),
        )
    };
    let mut final_state = lock(&runner.finished)
        .remove(&target)
        .ok_or_else(|| BuildError::Setup("the target stage was not built".to_owned()))?;
    runner.unpacked_digests.save()?;
    drop(runner);

    let stat_cache = stat_cache
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(stat_cache) = stat_cache {
        save_stat_cache(store, &context_id, &stat_cache)?;
    }

    if request.dry_run {
        return Ok(BuildResult {
            image_id: None,
            manifest_digest: None,
            tags: request.tags.clone(),
            steps: reports,
            layers: final_state.layers,
            config: Some(final_state.config),
            context_used: used,
            context_total,
            context_large_files: context_large_files.clone(),
            cache_export,
        });
    }
    store.set_cache_positions(&positions)?;
    if request.squash != SquashMode::Off {
        let range_start = match request.squash {
            SquashMode::All => (0, 0),
            _ => base_extent(&bases, target),
        };
        let state = &mut final_state;
        squash_stage(
            store,
            &mut state.layers,
            &mut state.layer_keys,
            &mut state.config.history,
            range_start,
            request.compression,
            request.timestamp,
        )
        .map_err(BuildError::Squash)?;
    }

    if !request.labels.is_empty() {
        let labels = final_state
            .config
            .config
            .labels
            .get_or_insert_with(BTreeMap::new);
        for (key, value) in &request.labels {
            labels.insert(key.clone(), value.clone());
        }
    }
    final_state.config.created = request.timestamp.map(format_timestamp);
    let layers: Vec<LayerInfo> = final_state
        .layers
        .iter()
        .map(|layer| LayerInfo {
            media_type: oci_layer_media_type(&layer.media_type),
            ..layer.clone()
        })
        .collect();
    final_state.config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id).collect();
    final_state.config.extra.insert(
        CACHE_KEYS_FIELD.to_owned(),
        serde_json::Value::Array(
            final_state
                .layer_keys
                .iter()
                .map(|k| match k {
                    Some(key) => serde_json::Value::String(key.to_string()),
                    None => serde_json::Value::Null,
                })
                .collect(),
        ),
    );
    // A rebuild that changed nothing finds its image already tagged: no write.
    let config_bytes = final_state
        .config
        .to_canonical_json()
        .map_err(|e| BuildError::Setup(format!("encoding the image config: {e}")))?;
    let image_id = ImageId::from_config_bytes(&config_bytes);
    let existing = request
        .tags
        .iter()
        .map(|tag| store.image(&tag.to_string()).ok())
        .collect::<Option<Vec<_>>>()
        .filter(|found| !found.is_empty() && found.iter().all(|d| d.id == image_id))
        .and_then(|found| found.into_iter().next());
    let (image_id, manifest_digest) = match existing {
        Some(details) => (details.id, details.manifest_digest),
        None => {
            let committed = store.commit_config(
                &final_state.config,
                layers.clone(),
                request.tags.clone(),
                ManifestFormat::Oci,
            )?;
            (committed.id, committed.manifest_digest)
        }
    };
    Ok(BuildResult {
        image_id: Some(image_id),
        manifest_digest: Some(manifest_digest),
        tags: request.tags.clone(),
        steps: reports,
        layers,
        config: Some(final_state.config),
        context_used: used,
        context_total,
        context_large_files,
        cache_export,
    })
}

/// The layer and history counts of the image a stage is built on (following
/// `FROM <stage>` to its image; scratch has none).
fn base_extent(bases: &BTreeMap<usize, Base>, stage: usize) -> (usize, usize) {
    let mut index = stage;
    for _ in 0..=bases.len() {
        match bases.get(&index) {
            Some(Base::Stage(from)) => index = *from,
            Some(Base::Image(details)) => {
                return (details.layers.len(), details.config.history.len());
            }
            Some(Base::Scratch) | None => break,
        }
    }
    (0, 0)
}

/// The config field where stowage records each layer's cache key, so an
/// image can serve as a cache source (`--cache-from`) on any machine.
pub const CACHE_KEYS_FIELD: &str = "stowage.cache-keys";

/// The cache keys an image's config carries, one per layer (`None` where unknown).
pub fn embedded_cache_keys(config: &ImageConfig, layers: usize) -> Vec<Option<CacheKey>> {
    let mut keys: Vec<Option<CacheKey>> = match config.extra.get(CACHE_KEYS_FIELD) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().and_then(|s| s.parse().ok()))
            .collect(),
        _ => Vec::new(),
    };
    keys.resize(layers, None);
    keys
}

/// Makes an image's layers cache hits for the keys its config records.
fn import_cache_keys(store: &Store, image: &stowage_store::ImageDetails) -> Result<(), BuildError> {
    let keys = embedded_cache_keys(&image.config, image.layers.len());
    for (key, layer) in keys.into_iter().zip(&image.layers) {
        let Some(key) = key else { continue };
        if store.cache_get(&key)?.is_some() || !store.has_blob(&layer.blob_digest) {
            continue;
        }
        store.cache_put(&CacheRecord {
            key,
            kind: "imported".to_owned(),
            layer: Some(layer.clone()),
            inputs: "{}".to_owned(),
            last_used_unix: 0,
        })?;
    }
    Ok(())
}

/// RFC 3339 text of a unix time, as image configs carry it.
pub fn format_timestamp(seconds: i64) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Puts Docker's default PATH first in the env of a base that sets none, as
/// both of Docker's builders do at FROM.
fn with_default_path(config: &mut ImageConfig) {
    let env = config.config.env.get_or_insert_with(Vec::new);
    if !env
        .iter()
        .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == "PATH")
    {
        env.insert(0, format!("PATH={}", config::DEFAULT_PATH));
    }
}

fn env_pairs(config: &ImageConfig) -> Vec<(String, String)> {
    config
        .config
        .env
        .iter()
        .flatten()
        .map(|entry| match entry.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (entry.clone(), String::new()),
        })
        .collect()
}

/// Locks a mutex, recovering from a panicked holder (the data stays usable).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The stages each stage waits for: its base stage and the stages it copies
/// or mounts from.
fn stage_dependencies(
    program: &Program,
    expanded: &ExpandedProgram,
    needed: &[usize],
) -> BTreeMap<usize, BTreeSet<usize>> {
    let mut deps = BTreeMap::new();
    for &index in needed {
        let mut set = BTreeSet::new();
        if let Some(stage) = expanded.stages.get(index) {
            if let Some(base) = stage.base_stage {
                set.insert(base);
            }
            for command in &stage.commands {
                for reference in stage_references(&command.command.instruction) {
                    if let Some(dep) = program.stage(&reference)
                        && dep.index < index
                    {
                        set.insert(dep.index);
                    }
                }
            }
        }
        deps.insert(index, set);
    }
    deps
}

/// Runs the needed stages, each as soon as the stages it depends on are
/// done, independent ones at once (as many as there are cores). The first
/// failure cancels the others.
fn run_stages(
    runner: &Runner<'_>,
    program: &Program,
    expanded: &ExpandedProgram,
    needed: &[usize],
    bases: &BTreeMap<usize, Base>,
) -> Result<(), BuildError> {
    let deps = stage_dependencies(program, expanded, needed);
    let parallel = stowage_archive::available_cores();
    let mut done: BTreeSet<usize> = BTreeSet::new();
    while done.len() < needed.len() {
        let ready: Vec<usize> = needed
            .iter()
            .copied()
            .filter(|i| !done.contains(i))
            .filter(|i| deps.get(i).is_none_or(|d| d.is_subset(&done)))
            .collect();
        if ready.is_empty() {
            return Err(BuildError::Setup(
                "the stages depend on each other in a cycle".to_owned(),
            ));
        }
        for wave in ready.chunks(parallel) {
            let results: Vec<(usize, Result<StageState, BuildError>)> =
                std::thread::scope(|scope| {
                    let handles: Vec<_> = wave
                        .iter()
                        .map(|&index| {
                            let base = bases.get(&index).cloned().unwrap_or(Base::Scratch);
                            (
                                index,
                                scope.spawn(move || {
                                    let result = runner.run_stage(index, base);
                                    if result.is_err() {
                                        runner.cancel.cancel();
                                    }
                                    result
                                }),
                            )
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|(index, handle)| {
                            let result = handle.join().unwrap_or_else(|_| {
                                Err(BuildError::Setup(format!("stage {index} panicked")))
                            });
                            (index, result)
                        })
                        .collect()
                });
            let mut first_error = None;
            for (index, result) in results {
                match result {
                    Ok(state) => {
                        lock(&runner.finished).insert(index, state);
                        done.insert(index);
                    }
                    Err(BuildError::Interrupted) if first_error.is_some() => {}
                    Err(error) => {
                        if first_error.is_none()
                            || matches!(first_error, Some(BuildError::Interrupted))
                        {
                            first_error = Some(error);
                        }
                    }
                }
            }
            if let Some(error) = first_error {
                return Err(error);
            }
        }
    }
    Ok(())
}

fn stage_label(program: &Program, index: usize) -> String {
    program
        .stages
        .get(index)
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| format!("stage-{index}"))
}

fn stage_location(program: &Program, index: usize, step: usize) -> StepLocation {
    let stage = program.stages.get(index);
    let total = stage.map_or(1, |s| s.commands.len() + 1);
    let (line, instruction) = match stage {
        Some(stage) if step <= 1 => (stage.span.start_line, stage.original.clone()),
        Some(stage) => stage
            .commands
            .get(step - 2)
            .map(|c| (c.span.start_line, c.original.clone()))
            .unwrap_or((0, String::new())),
        None => (0, String::new()),
    };
    StepLocation {
        stage: stage_label(program, index),
        step,
        total,
        line,
        instruction,
    }
}

/// The stages the target needs, in dependency order (ascending index).
fn needed_stages(program: &Program, expanded: &ExpandedProgram, target: usize) -> Vec<usize> {
    let mut needed = BTreeSet::new();
    let mut pending = vec![target];
    while let Some(index) = pending.pop() {
        if !needed.insert(index) {
            continue;
        }
        let Some(stage) = expanded.stages.get(index) else {
            continue;
        };
        if let Some(base) = stage.base_stage {
            pending.push(base);
        }
        for command in &stage.commands {
            for reference in stage_references(&command.command.instruction) {
                if let Some(dep) = program.stage(&reference)
                    && dep.index < index
                {
                    pending.push(dep.index);
                }
            }
        }
    }
    needed.into_iter().collect()
}

/// Names other stages (or images) an instruction reads from.
fn stage_references(instruction: &Instruction) -> Vec<String> {
    match instruction {
        Instruction::Copy(copy) => copy.from.iter().cloned().collect(),
        Instruction::Run(run) => run.mounts.iter().filter_map(|m| m.from.clone()).collect(),
        _ => Vec::new(),
    }
}

fn open_context(request: &BuildRequest) -> Result<Context, BuildError> {
    open_build_context(&request.context, request.dockerfile.path.as_deref())
}

/// Opens a build context filtered by its `.dockerignore` (or the
/// `<Dockerfile>.dockerignore` next to `dockerfile`, which wins).
pub fn open_build_context(dir: &Path, dockerfile: Option<&Path>) -> Result<Context, BuildError> {
    let default = dir.join("Dockerfile");
    let filter = stowage_dockerignore::ContextFilter::load(dir, dockerfile.unwrap_or(&default))
        .map_err(|e| BuildError::Setup(format!("reading .dockerignore: {e}")))?;
    Context::open(dir, Box::new(IgnoreFilter(filter)))
        .map_err(|e| BuildError::Setup(format!("build context: {e}")))
}

/// `.dockerignore` as the context's path filter.
struct IgnoreFilter(stowage_dockerignore::ContextFilter);

impl stowage_context::PathFilter for IgnoreFilter {
    fn is_excluded(&self, rel: &str) -> Result<bool, String> {
        self.0
            .is_included(rel)
            .map(|included| !included)
            .map_err(|e| e.to_string())
    }

    fn can_skip_excluded_dir(&self, rel: &str) -> bool {
        self.0.can_skip_dir(rel)
    }
}

struct Runner<'a> {
    store: &'a Store,
    request: &'a BuildRequest,
    images: &'a dyn ImageSource,
    progress: &'a dyn Progress,
    program: &'a Program,
    expanded: &'a ExpandedProgram,
    context: &'a Context,
    stat_cache: &'a Mutex<Option<StatCache>>,
    /// The stat cache's name for this context.
    context_id: &'a str,
    /// Remembered digests of files in unpacked layers (`COPY --from`).
    unpacked_digests: UnpackedDigests<'a>,
    positions: Mutex<Vec<(String, Digest)>>,
    position_prefix: String,
    reports: Mutex<Vec<StepReport>>,
    finished: Mutex<BTreeMap<usize, StageState>>,
    used: Mutex<(u64, u64)>,
    context_total: Mutex<Option<(u64, u64)>>,
    /// The context's files above [`CONTEXT_LARGE_FILE`], when a COPY walked all of it.
    context_large_files: Mutex<Option<Vec<(String, u64)>>>,
    /// Set when a stage failed: running RUNs are killed, no new step starts.
    cancel: CancelToken,
    /// `--cache-from` entries, fetched when a hit is taken.
    remote_hits: RemoteHits<'a>,
}

impl Runner<'_> {
    fn position(&self, stage: usize, step: usize) -> String {
        Digest::of(format!("{}\0{stage}\0{step}", self.position_prefix).as_bytes()).to_string()
    }

    fn platform(&self) -> String {
        self.request.platform.to_string()
    }

    fn run_stage(&self, index: usize, base: Base) -> Result<StageState, BuildError> {
        let stage = &self.expanded.stages[index];
        let label = stage_label(self.program, index);
        let from_line = self.program.stages[index].span.start_line;
        let from_text = format!("FROM {}", stage.from.image);
        let started = Instant::now();
        let mut state = match base {
            Base::Scratch => {
                let mut inputs = StepInputs::new(OpKind::Source, None, "scratch", &self.platform());
                inputs.fields.insert("image".into(), "scratch".into());
                let mut config = ImageConfig::scratch(&self.request.platform);
                with_default_path(&mut config);
                StageState {
                    config,
                    layers: Vec::new(),
                    layer_keys: Vec::new(),
                    key: inputs.key(),
                    missed: false,
                    flags: StageFlags::default(),
                }
            }
            Base::Stage(from) => {
                let mut state = lock(&self.finished)
                    .get(&from)
                    .cloned()
                    .ok_or_else(|| BuildError::Setup(format!("stage {from} was not built")))?;
                state.flags = StageFlags::default();
                state
            }
            Base::Image(details) => {
                let mut inputs =
                    StepInputs::new(OpKind::Source, None, &stage.from.image, &self.platform());
                inputs
                    .fields
                    .insert("image".into(), details.id.digest().to_string());
                let mut config = details.config.clone();
                config.created = None;
                with_default_path(&mut config);
                StageState {
                    config,
                    layer_keys: embedded_cache_keys(&details.config, details.layers.len()),
                    layers: details.layers.clone(),
                    key: inputs.key(),
                    missed: false,
                    flags: StageFlags::default(),
                }
            }
        };
        if self.request.no_cache {
            state.missed = true;
        }
        // ONBUILD triggers of the base run first, and are not inherited.
        let triggers = state.config.config.on_build.take().unwrap_or_default();
        let mut steps: Vec<(ExpandedCommand, String, usize)> = Vec::new();
        for trigger in &triggers {
            let options = ExpandOptions {
                build_args: self.request.build_args.clone(),
                base_envs: BTreeMap::from([(0, env_pairs(&state.config))]),
                ..ExpandOptions::default()
            };
            let expanded = stowage_dockerfile::parse_and_expand(
                &format!("FROM scratch\n{trigger}\n"),
                &options,
            )
            .map_err(|error| BuildError::Step {
                location: stage_location(self.program, index, 1),
                kind: StepError::Invalid(format!(
                    "the base image's ONBUILD trigger {trigger:?} is invalid: {}",
                    error.message
                )),
            })?;
            for stage in expanded.stages {
                for command in stage.commands {
                    steps.push((command, format!("ONBUILD {trigger}"), from_line));
                }
            }
        }
        for command in &stage.commands {
            steps.push((
                command.clone(),
                command.command.original.clone(),
                command.command.span.start_line,
            ));
        }
        let total = steps.len() + 1;
        let id = |step: usize, line: usize| StepId {
            stage_index: index,
            stage: label.clone(),
            step,
            total,
            line,
        };
        let from_id = id(1, from_line);
        self.progress.event(Event::StepStarted {
            id: &from_id,
            text: &from_text,
        });
        self.finish_step(
            &from_id,
            &from_text,
            StepOutcome::Source,
            Vec::new(),
            started,
            None,
        );

        for (offset, (command, text, line)) in steps.iter().enumerate() {
            if self.cancel.is_cancelled() {
                return Err(BuildError::Interrupted);
            }
            let step = offset + 2;
            let line = *line;
            let step_id = id(step, line);
            let location = StepLocation {
                stage: label.clone(),
                step,
                total,
                line,
                instruction: text.clone(),
            };
            let text = text.clone();
            self.progress.event(Event::StepStarted {
                id: &step_id,
                text: &text,
            });
            let started = Instant::now();
            let wrap = |kind: StepError| match kind {
                StepError::Cancelled => BuildError::Interrupted,
                kind => BuildError::Step {
                    location: location.clone(),
                    kind,
                },
            };
            match &command.command.instruction {
                Instruction::Run(run) => {
                    self.run_instruction(
                        index,
                        &mut state,
                        (&step_id, &text),
                        run,
                        &command.run_args,
                        started,
                    )
                    .map_err(wrap)?;
                }
                Instruction::Copy(copy) => {
                    let spec = CopyArgs {
                        sources: &copy.sources,
                        dest: &copy.dest,
                        chown: copy.chown.as_deref(),
                        chmod: copy.chmod.as_deref(),
                        from: copy.from.as_deref(),
                        excludes: &copy.exclude,
                        is_add: false,
                        checksum: None,
                    };
                    self.copy_instruction(index, &mut state, (&step_id, &text), &spec, started)
                        .map_err(wrap)?;
                }
                Instruction::Add(add) => {
                    let spec = CopyArgs {
                        sources: &add.sources,
                        dest: &add.dest,
                        chown: add.chown.as_deref(),
                        chmod: add.chmod.as_deref(),
                        from: None,
                        excludes: &add.exclude,
                        is_add: true,
                        checksum: add.checksum.as_deref(),
                    };
                    if add.sources.iter().any(|s| matches!(s, Source::Path { path } if path.starts_with("git@") || path.ends_with(".git"))) {
                        return Err(wrap(StepError::Invalid(
                            "ADD of a Git repository is not supported: clone it in a RUN step".to_owned(),
                        )));
                    }
                    self.copy_instruction(index, &mut state, (&step_id, &text), &spec, started)
                        .map_err(wrap)?;
                }
                other => {
                    let arg_values: BTreeMap<String, Option<String>> = match other {
                        Instruction::Arg(defs) => defs
                            .iter()
                            .map(|d| {
                                let value = self
                                    .request
                                    .build_args
                                    .get(&d.name)
                                    .cloned()
                                    .or_else(|| d.default.clone())
                                    .or_else(|| {
                                        self.expanded
                                            .meta_args
                                            .iter()
                                            .find(|(k, _)| k == &d.name)
                                            .map(|(_, v)| v.clone())
                                    });
                                (d.name.clone(), value)
                            })
                            .collect(),
                        _ => BTreeMap::new(),
                    };
                    let created_by =
                        config::apply(&mut state.config, &mut state.flags, other, &arg_values)
                            .map_err(|e| wrap(StepError::Config(e)))?;
                    // Config steps change no filesystem: the next layer step's
                    // key covers the config it reads (env, user, workdir...),
                    // so an ENV or LABEL edit never invalidates a COPY.
                    self.push_history(&mut state, created_by, true);
                    self.finish_step(
                        &step_id,
                        &text,
                        StepOutcome::Config,
                        Vec::new(),
                        started,
                        None,
                    );
                }
            }
        }
        Ok(state)
    }

    fn push_history(&self, state: &mut StageState, created_by: String, empty: bool) {
        state.config.history.push(History {
            created: self.request.timestamp.map(format_timestamp),
            created_by: Some(created_by),
            comment: Some("stowage".to_owned()),
            empty_layer: empty.then_some(true),
            ..History::default()
        });
    }

    fn finish_step(
        &self,
        id: &StepId,
        text: &str,
        outcome: StepOutcome,
        reasons: Vec<MissReason>,
        started: Instant,
        layer: Option<LayerInfo>,
    ) {
        let duration = started.elapsed();
        self.progress.event(Event::StepFinished {
            id,
            outcome: outcome.clone(),
            duration,
        });
        lock(&self.reports).push(StepReport {
            id: id.clone(),
            text: text.to_owned(),
            outcome,
            reasons,
            seconds: duration.as_secs_f64(),
            layer,
        });
    }

    /// Looks the key up; returns the cached layer on a usable hit, or the
    /// reasons of the miss.
    fn lookup(
        &self,
        stage: usize,
        step: usize,
        state: &StageState,
        inputs: &StepInputs,
    ) -> Result<Result<LayerInfo, Vec<MissReason>>, StepError> {
        let key = inputs.key();
        lock(&self.positions).push((self.position(stage, step), key));
        if self.request.no_cache {
            return Ok(Err(vec![MissReason::NoCache]));
        }
        if state.missed {
            return Ok(Err(vec![MissReason::ParentMissed]));
        }
        if let Some(record) = self.store.cache_get(&key)? {
            match record.layer {
                Some(layer) if self.layer_usable(&layer) => return Ok(Ok(layer)),
                Some(layer) => {
                    self.store.cache_forget(&key)?;
                    if let Some(Ok(layer)) =
                        self.remote_hits.take(self.store, &key, self.progress)?
                    {
                        return Ok(Ok(layer));
                    }
                    return Ok(Err(vec![MissReason::CachedLayerUnusable {
                        detail: format!("blob {} is missing or damaged", layer.blob_digest),
                    }]));
                }
                None => {}
            }
        }
        match self.remote_hits.take(self.store, &key, self.progress)? {
            Some(Ok(layer)) => return Ok(Ok(layer)),
            Some(Err(reason)) => return Ok(Err(vec![reason])),
            None => {}
        }
        // Explain the miss against the last build of this step.
        let previous = match self.store.cache_position(&self.position(stage, step))? {
            Some(previous_key) if previous_key != key => self
                .store
                .cache_inputs(&previous_key)?
                .and_then(|json| serde_json::from_str::<StepInputs>(&json).ok()),
            _ => None,
        };
        let reasons = match previous {
            Some(previous) => {
                // No layer step above missed (that returned early): only config
                // steps may have changed, so compare this step's own inputs.
                let reasons = explain_miss(&previous, inputs, false);
                if reasons.is_empty() {
                    vec![self.not_built_before()]
                } else {
                    reasons
                }
            }
            None => vec![self.not_built_before()],
        };
        Ok(Err(reasons))
    }

    /// The reason for a miss with nothing earlier to compare with: it names the
    /// `--cache-from` sources that were searched too.
    fn not_built_before(&self) -> MissReason {
        if self.request.cache_from.is_empty() {
            MissReason::FirstBuild
        } else {
            MissReason::NotInCacheSources {
                sources: self.request.cache_from.clone(),
            }
        }
    }

    /// A cached layer is used only if its blob is there, of the right size,
    /// and unchanged since its content was verified (or verifies again).
    fn layer_usable(&self, layer: &LayerInfo) -> bool {
        self.store
            .blob_trusted(&layer.blob_digest, layer.compressed_size)
            .unwrap_or(false)
    }

    fn remember(
        &self,
        inputs: &StepInputs,
        kind: &str,
        layer: &LayerInfo,
    ) -> Result<(), StepError> {
        let json = serde_json::to_string(inputs)
            .map_err(|e| StepError::Invalid(format!("encoding cache inputs: {e}")))?;
        // The blob was hashed as it was written: record that, so hits
        // need only compare its metadata.
        self.store.mark_blob_verified(&layer.blob_digest)?;
        self.store.cache_put(&CacheRecord {
            key: inputs.key(),
            kind: kind.to_owned(),
            layer: Some(layer.clone()),
            inputs: json,
            last_used_unix: 0,
        })?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn run_instruction(
        &self,
        stage_index: usize,
        state: &mut StageState,
        (id, text): (&StepId, &str),
        run: &stowage_dockerfile::instructions::RunInstruction,
        run_args: &[(String, String)],
        started: Instant,
    ) -> Result<(), StepError> {
        let container = &state.config.config;
        let argv = run_argv(run, container);
        let mut env: Vec<(String, String)> = env_pairs(&state.config);
        let visible_args: Vec<(String, String)> = run_args
            .iter()
            .filter(|(k, _)| !env.iter().any(|(e, _)| e == k))
            .cloned()
            .collect();
        env.extend(visible_args.iter().cloned());
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".to_owned(), config::DEFAULT_PATH.to_owned()));
        }
        let history_args: Vec<&(String, String)> = visible_args
            .iter()
            .filter(|(k, _)| !PROXY_ARGS.contains(&k.as_str()))
            .collect();
        let mut created_by = String::from("RUN ");
        if !history_args.is_empty() {
            created_by.push_str(&format!("|{} ", history_args.len()));
            for (k, v) in &history_args {
                created_by.push_str(&format!("{k}={v} "));
            }
        }
        created_by.push_str(&argv.join(" "));
        created_by.push_str(" # buildkit");

        let network = match run.network {
            Some(RunNetwork::None) => NetworkMode::None,
            Some(RunNetwork::Host) => NetworkMode::Host,
            _ => self.request.network,
        };
        let user = container.user.clone().unwrap_or_default();
        let cwd = container
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        let mut inputs =
            StepInputs::new(OpKind::Run, Some(state.key), &created_by, &self.platform());
        for (name, value) in &history_args {
            inputs.build_args.insert(name.clone(), value.clone());
        }
        inputs.fields.insert(
            "env".into(),
            env.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        inputs.fields.insert("user".into(), user.clone());
        inputs.fields.insert("workdir".into(), cwd.clone());
        inputs.fields.insert(
            "network".into(),
            match network {
                NetworkMode::Host => "host".into(),
                NetworkMode::None => "none".into(),
            },
        );
        if !run.mount_specs.is_empty() {
            inputs
                .fields
                .insert("mounts".into(), run.mount_specs.join("\n"));
        }
        // Binds from other stages or images read their content: their keys
        // (or image IDs) are part of this step's key.
        let mut mount_views: BTreeMap<String, MergedView> = BTreeMap::new();
        for mount in &run.mounts {
            let Some(from) = &mount.from else { continue };
            if mount_views.contains_key(from) {
                continue;
            }
            let (layers, identity) = match self.program.stage(from) {
                Some(stage) if stage.index < stage_index => {
                    let finished = lock(&self.finished);
                    let built = finished.get(&stage.index).ok_or_else(|| {
                        StepError::Invalid(format!("stage {from:?} was not built"))
                    })?;
                    (built.layers.clone(), built.key.to_string())
                }
                Some(_) => {
                    return Err(StepError::Invalid(format!(
                        "--mount from={from} refers to this stage or a later one"
                    )));
                }
                None => {
                    let image = self.images.image(self.store, from).map_err(|detail| {
                        StepError::BaseImage {
                            reference: from.clone(),
                            detail,
                        }
                    })?;
                    (image.layers.clone(), image.id.digest().to_string())
                }
            };
            inputs.fields.insert(format!("mount-from:{from}"), identity);
            mount_views.insert(
                from.clone(),
                MergedView::new(lowers_for(self.store, &layers)?),
            );
        }
        let mount_views = &mount_views;
        self.layer_step(
            stage_index,
            state,
            (id, text),
            &inputs,
            "run",
            created_by,
            started,
            |state| {
                let image_view = MergedView::new(lowers_for(self.store, &state.layers)?);
                let prepared = mounts::prepare(
                    self.store,
                    &run.mounts,
                    &self.request.secrets,
                    &image_view,
                    self.context.root(),
                    mount_views,
                )?;
                let _scratch = ScratchDirs(prepared.scratch.clone());
                let params = RunParams {
                    argv: argv.clone(),
                    env,
                    cwd,
                    user,
                    network,
                    mounts: prepared.mounts.clone(),
                    display: run_display(&argv),
                    clamp_mtime: self.request.timestamp,
                    compression: self.request.compression,
                };
                run_step(
                    self.store,
                    &state.layers,
                    params,
                    self.progress,
                    id,
                    &self.cancel,
                )
            },
        )
    }

    fn copy_instruction(
        &self,
        stage_index: usize,
        state: &mut StageState,
        (id, text): (&StepId, &str),
        args: &CopyArgs<'_>,
        started: Instant,
    ) -> Result<(), StepError> {
        // The image as it is so far, for destinations and --chown names.
        let view = MergedView::new(lowers_for(self.store, &state.layers)?);
        let owner = match args.chown {
            Some(spec) => Some(resolve_owner(&view, spec)?),
            None => None,
        };
        let chmod = match args.chmod {
            Some(text) => Some(
                u32::from_str_radix(text, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        StepError::Invalid(format!(
                            "invalid --chmod {text:?}: use octal permission bits like 755"
                        ))
                    })?,
            ),
            None => None,
        };
        let workdir = state
            .config
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".to_owned());
        let spec = CopySpec {
            sources: args.sources,
            dest: args.dest,
            workdir: &workdir,
            owner,
            chmod,
            excludes: args.excludes,
            clamp_mtime: self.request.timestamp,
        };
        let keyword = if args.is_add { "ADD" } else { "COPY" };
        let mut created_by = String::from(keyword);
        if let Some(chown) = args.chown {
            created_by.push_str(&format!(" --chown={chown}"));
        }
        if let Some(chmod) = args.chmod {
            created_by.push_str(&format!(" --chmod={chmod}"));
        }
        for source in args.sources {
            match source {
                Source::Path { path } => created_by.push_str(&format!(" {path}")),
                Source::Heredoc { name, .. } => created_by.push_str(&format!(" <<{name}")),
            }
        }
        created_by.push_str(&format!(" {} # buildkit", args.dest));
        let mut inputs = StepInputs::new(
            if args.is_add {
                OpKind::Add
            } else {
                OpKind::Copy
            },
            Some(state.key),
            &created_by,
            &self.platform(),
        );
        inputs.fields.insert("workdir".into(), workdir.clone());
        if let Some(from) = args.from {
            inputs.fields.insert("from".into(), from.to_owned());
        }
        // A COPY from the context whose selection has the same metadata fingerprint as in an
        // earlier build has that build's key: take its layer without loading the stat cache,
        // planning, or hashing anything.
        let fingerprint = self.copy_fingerprint(state, args, &inputs, owner, chmod);
        if let Some(fingerprint) = &fingerprint
            && let Some((key, files, bytes)) = self.store.copy_fingerprint_get(fingerprint)?
            && let Some(layer) = self.usable_cached_layer(&key)?
        {
            self.count_context_use(args, files, bytes);
            self.take_hit(
                stage_index,
                state,
                (id, text),
                key,
                layer,
                created_by,
                started,
            );
            return Ok(());
        }
        let source_view;
        let source_name;
        let mut stat_cache_slot = lock(self.stat_cache);
        if stat_cache_slot.is_none() {
            *stat_cache_slot = Some(load_stat_cache(self.store, self.context_id)?);
        }
        let stat_cache_guard = stat_cache_slot.get_or_insert_with(StatCache::default);
        let mut from = match args.from {
            None => CopyFrom::Context {
                context: self.context,
                stat_cache: &mut *stat_cache_guard,
            },
            Some(reference) => {
                let layers = match self.program.stage(reference) {
                    Some(stage) if stage.index < stage_index => lock(&self.finished)
                        .get(&stage.index)
                        .map(|s| s.layers.clone())
                        .ok_or_else(|| {
                            StepError::Invalid(format!("stage {reference:?} was not built"))
                        })?,
                    Some(_) => {
                        return Err(StepError::Invalid(format!(
                            "COPY --from={reference} refers to this stage or a later one; a stage can only copy from earlier stages"
                        )));
                    }
                    None => {
                        self.images
                            .image(self.store, reference)
                            .map_err(|detail| {
                                StepError::Invalid(format!(
                                    "COPY --from={reference}: no stage is named {reference:?} and no image {reference:?} was found ({detail})"
                                ))
                            })?
                            .layers
                    }
                };
                source_view = MergedView::new(lowers_for(self.store, &layers)?);
                source_name = format!("--from={reference}");
                CopyFrom::Image {
                    view: &source_view,
                    name: &source_name,
                    digests: Some(&self.unpacked_digests),
                }
            }
        };
        let mut scratch = ScratchDirs(Vec::new());
        let plan = if args.is_add && args.from.is_none() {
            crate::add::plan_add(
                self.store,
                self.context,
                &mut *stat_cache_guard,
                &spec,
                &view,
                args.checksum,
            )
            .map(|(plan, dirs)| {
                scratch.0 = dirs;
                plan
            })
        } else {
            plan_copy(&mut from, &spec, &view)
        };
        drop(stat_cache_slot);
        let plan = plan?;
        self.count_context_use(args, plan.file_count, plan.file_bytes);
        inputs.files = plan.files.clone();
        let kind = if args.is_add { "add" } else { "copy" };
        let (file_count, file_bytes) = (plan.file_count, plan.file_bytes);
        self.layer_step(
            stage_index,
            state,
            (id, text),
            &inputs,
            kind,
            created_by,
            started,
            |_| {
                let layer = write_copy_layer(self.store, &plan, &spec, self.request.compression);
                drop(scratch);
                layer
            },
        )?;
        if let Some(fingerprint) = &fingerprint {
            self.store
                .copy_fingerprint_put(fingerprint, &inputs.key(), file_count, file_bytes)?;
        }
        Ok(())
    }

    /// The fast-path fingerprint of a COPY from the context or an earlier stage: its inputs
    /// without files, the options that shape the selection, and the selection (the context
    /// entries' metadata, or the stage's layer diff_ids). `None` where the fast path does
    /// not apply (images, ADD, heredocs, --no-cache, a parent that missed) or the context
    /// cannot be read (the planner then reports why).
    fn copy_fingerprint(
        &self,
        state: &StageState,
        args: &CopyArgs<'_>,
        inputs: &StepInputs,
        owner: Option<(u32, u32)>,
        chmod: Option<u32>,
    ) -> Option<Digest> {
        if args.is_add || self.request.no_cache || state.missed {
            return None;
        }
        let paths: Vec<&str> = args
            .sources
            .iter()
            .map(|source| match source {
                Source::Path { path } => Some(path.as_str()),
                Source::Heredoc { .. } => None,
            })
            .collect::<Option<_>>()?;
        let selection = match args.from {
            None if copies_context_root(args) => {
                // The whole context is walked here anyway: keep its big files for the
                // build report's lint, which then needs no walk of its own.
                let mut large = Vec::new();
                let digest = self
                    .context
                    .selection_fingerprint_with(&paths, &mut |entry| {
                        if entry.kind == stowage_context::EntryKind::File
                            && entry.size > CONTEXT_LARGE_FILE
                        {
                            large.push((entry.rel.clone(), entry.size));
                        }
                    })
                    .ok()?;
                *lock(&self.context_large_files) = Some(large);
                digest
            }
            None => self.context.selection_fingerprint(&paths).ok()?,
            // From an earlier stage: its layers' diff_ids name its whole filesystem.
            Some(reference) => {
                let stage = self.program.stage(reference)?;
                let layers = lock(&self.finished).get(&stage.index)?.layers.clone();
                let mut hasher = stowage_digest::Hasher::new();
                hasher.update(b"stowage stage selection v1\0");
                for layer in &layers {
                    hasher.update(layer.diff_id.as_bytes());
                }
                for path in &paths {
                    hasher.update(path.as_bytes());
                    hasher.update(b"\0");
                }
                hasher.finish()
            }
        };
        let mut hasher = stowage_digest::Hasher::new();
        hasher.update(b"stowage copy fingerprint v1\0");
        hasher.update(inputs.key().as_bytes());
        hasher.update(format!("{owner:?}\0{chmod:?}\0{:?}\0", args.excludes).as_bytes());
        hasher.update(selection.as_bytes());
        Some(hasher.finish())
    }

    /// The layer cached under `key`, if its blob can be used.
    fn usable_cached_layer(&self, key: &CacheKey) -> Result<Option<LayerInfo>, StepError> {
        Ok(self
            .store
            .cache_get(key)?
            .and_then(|record| record.layer)
            .filter(|layer| self.layer_usable(layer)))
    }

    /// Counts the context files and bytes a COPY/ADD from the context used.
    fn count_context_use(&self, args: &CopyArgs<'_>, file_count: u64, file_bytes: u64) {
        if args.from.is_some() {
            return;
        }
        let mut used = lock(&self.used);
        used.0 += file_count;
        used.1 += file_bytes;
        if copies_context_root(args) {
            *lock(&self.context_total) = Some((file_count, file_bytes));
        }
    }

    /// A cache hit found without [`Runner::lookup`]: the step ends as `layer_step` ends one.
    #[allow(clippy::too_many_arguments)]
    fn take_hit(
        &self,
        stage_index: usize,
        state: &mut StageState,
        (id, text): (&StepId, &str),
        key: CacheKey,
        layer: LayerInfo,
        created_by: String,
        started: Instant,
    ) {
        lock(&self.positions).push((self.position(stage_index, id.step), key));
        state.key = key;
        state.layers.push(layer.clone());
        state.layer_keys.push(Some(key));
        self.push_history(state, created_by, false);
        self.finish_step(
            id,
            text,
            StepOutcome::Cached,
            Vec::new(),
            started,
            Some(layer),
        );
    }

    /// The shape every layer step shares: look its key up; on a hit reuse
    /// the cached layer, on a miss say why and `produce` the layer (unless
    /// this is a dry run), remember it, and add it to the stage.
    #[allow(clippy::too_many_arguments)]
    fn layer_step(
        &self,
        stage_index: usize,
        state: &mut StageState,
        (id, text): (&StepId, &str),
        inputs: &StepInputs,
        kind: &str,
        created_by: String,
        started: Instant,
        produce: impl FnOnce(&StageState) -> Result<LayerInfo, StepError>,
    ) -> Result<(), StepError> {
        let key = inputs.key();
        let (outcome, reasons, layer) = match self.lookup(stage_index, id.step, state, inputs)? {
            Ok(layer) => (StepOutcome::Cached, Vec::new(), Some(layer)),
            Err(reasons) => {
                self.progress.event(Event::StepMissed {
                    id,
                    reasons: &reasons,
                });
                state.missed = true;
                if self.request.dry_run {
                    (StepOutcome::WouldRun, reasons, None)
                } else {
                    let layer = produce(state)?;
                    self.remember(inputs, kind, &layer)?;
                    let bytes = layer.compressed_size;
                    (
                        StepOutcome::Built { layer_bytes: bytes },
                        reasons,
                        Some(layer),
                    )
                }
            }
        };
        state.key = key;
        if let Some(layer) = &layer {
            state.layers.push(layer.clone());
            state.layer_keys.push(Some(key));
        }
        self.push_history(state, created_by, false);
        self.finish_step(id, text, outcome, reasons, started, layer);
        Ok(())
    }
}

/// Files of the context above this size are listed in [`BuildResult::context_large_files`].
pub const CONTEXT_LARGE_FILE: u64 = 1024 * 1024;

/// Whether a COPY copies the whole context (`COPY . dest`, no excludes).
fn copies_context_root(args: &CopyArgs<'_>) -> bool {
    !args.is_add
        && args.from.is_none()
        && args.excludes.is_empty()
        && args.sources.len() == 1
        && matches!(&args.sources[0], Source::Path { path } if path.split('/').all(|c| c.is_empty() || c == "."))
}

/// Scratch directories removed when dropped.
struct ScratchDirs(Vec<PathBuf>);

impl Drop for ScratchDirs {
    fn drop(&mut self) {
        for dir in &self.0 {
            crate::rootfs::remove_tree(dir);
        }
    }
}

/// The arguments COPY and ADD share.
struct CopyArgs<'a> {
    sources: &'a [Source],
    dest: &'a str,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    from: Option<&'a str>,
    excludes: &'a [String],
    is_add: bool,
    checksum: Option<&'a str>,
}

/// The argv of a RUN: exec form as written; shell form (and heredocs) under
/// the image's shell.
fn run_argv(
    run: &stowage_dockerfile::instructions::RunInstruction,
    config: &stowage_image::ContainerConfig,
) -> Vec<String> {
    if let (CommandLine::Shell(text), Some(first)) = (&run.command, run.heredocs.first()) {
        // A lone heredoc runs its body; several are handed to the shell whole.
        if run.heredocs.len() == 1 && text.trim_start().starts_with("<<") {
            let mut argv = shell_of(config);
            argv.push(first.effective_content());
            return argv;
        }
        let mut full = text.clone();
        for heredoc in &run.heredocs {
            full.push('\n');
            full.push_str(&heredoc.content);
            full.push_str(&heredoc.name);
        }
        let mut argv = shell_of(config);
        argv.push(full);
        return argv;
    }
    argv_of(&run.command, config)
}

fn run_display(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.contains(char::is_whitespace) || a.is_empty() {
                go_quote(a)
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resolves `--chown=user[:group]` through the image's /etc/passwd and /etc/group.
fn resolve_owner(view: &MergedView, spec: &str) -> Result<(u32, u32), StepError> {
    let passwd = view.read_file("/etc/passwd", 4 << 20);
    let group = view.read_file("/etc/group", 4 << 20);
    let resolved = stowage_exec::resolve_user(spec, passwd.as_deref(), group.as_deref())
        .map_err(|e| StepError::User(format!("--chown={spec}: {e}")))?;
    Ok((resolved.uid, resolved.gid))
}
