//! `stowage build`: docker-build-shaped flags in, the solver's events out as a
//! live view on a terminal or plain prefixed lines, and the image ID at the end.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use stowage_archive::Compression;
use stowage_image::{Platform, Reference};
use stowage_solver::cachekey::MissReason;
use stowage_solver::{
    BuildError, BuildRequest, DockerfileInput, Event, ImageSource, Progress, StepId, StepOutcome,
};

use crate::Globals;
use crate::output::{Rendered, errln, human_size};

/// How progress is shown.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live view on a terminal, plain lines otherwise.
    Auto,
    /// A live view: each running step shows its latest output, which collapses when it ends.
    Tty,
    /// Every line, prefixed with its step.
    Plain,
}

/// RUN's default network.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkArg {
    /// The host's network (Docker's build default).
    Host,
    /// Same as host.
    Default,
    /// No network: only loopback.
    None,
}

/// Layer compression.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressArg {
    /// gzip (Docker's default, most compatible).
    Gzip,
    /// zstd (faster, OCI media type).
    Zstd,
    /// Uncompressed tar.
    None,
}

/// Arguments of `stowage build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The build context: a directory, or `-` for a tar archive on stdin.
    context: String,
    /// Name and optionally a tag (`name:tag`); repeatable.
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// The Dockerfile (default `CONTEXT/Dockerfile`; `-` reads it from stdin).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// A build arg; without `=VALUE` the value comes from the environment.
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    build_args: Vec<String>,
    /// A label for the image.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// The stage to build (default: the last one).
    #[arg(long)]
    target: Option<String>,
    /// RUN's network.
    #[arg(long, value_enum, default_value = "host")]
    network: NetworkArg,
    /// How to show progress.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ProgressMode,
    /// Print only the image ID.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Write the image ID to this file.
    #[arg(long, value_name = "FILE")]
    iidfile: Option<PathBuf>,
    /// Target platform; only the native one is supported.
    #[arg(long)]
    platform: Option<String>,
    /// Ignore the build cache.
    #[arg(long)]
    no_cache: bool,
    /// Say for every step whether it was cached, and why not.
    #[arg(long)]
    explain: bool,
    /// With --explain: compute what would run, run nothing.
    #[arg(long, requires = "explain")]
    dry_run: bool,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    compress: CompressArg,
    /// Compression level (gzip 1-9, default 6; zstd 1-22, default 3).
    #[arg(long, value_name = "N")]
    compress_level: Option<i32>,
    /// A secret for `RUN --mount=type=secret`: `id=ID,src=FILE` (or `id=ID,env=VAR`).
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    secrets: Vec<String>,
    /// Cache hits from an image or a registry cache (repeatable):
    /// `IMAGE` or `type=registry,ref=REF`.
    #[arg(long = "cache-from", value_name = "IMAGE|type=registry,ref=REF")]
    cache_from: Vec<String>,
    /// Export the build cache (repeatable):
    /// `type=registry,ref=REF[,mode=min|max][,ignore-error=true]`.
    #[arg(long = "cache-to", value_name = "type=registry,ref=REF[,mode=min|max]")]
    cache_to: Vec<String>,
    /// Check the registry for a newer version of every base image.
    #[arg(long)]
    pull: bool,
    /// Push every tag to its registry after the build.
    #[arg(long)]
    push: bool,
    /// Date the image and clamp file times to this Unix time (also SOURCE_DATE_EPOCH).
    #[arg(long, value_name = "UNIX_SECONDS", env = "SOURCE_DATE_EPOCH")]
    timestamp: Option<i64>,
    /// Merge the layers this build added on top of the base image into one.
    #[arg(long, conflicts_with = "squash_all")]
    squash: bool,
    /// Merge every layer, the base image's included, into one.
    #[arg(long)]
    squash_all: bool,
    /// Lint the Dockerfile first (the rules of `stowage lint`); build nothing
    /// and exit 1 when a finding is an error.
    #[arg(long)]
    check: bool,
    /// Also write the build report (sizes, cache hits, step times, top
    /// findings with their measured cost) to FILE as JSON.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Skip the end-of-build report (it reads the image's layers once more).
    #[arg(long, conflicts_with = "report")]
    no_report: bool,
}

fn parse_key_values(
    items: &[String],
    what: &str,
    from_env: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                out.insert(key.to_owned(), value.to_owned());
            }
            None if from_env && !item.is_empty() => {
                if let Ok(value) = std::env::var(item) {
                    out.insert(item.clone(), value);
                }
            }
            _ => bail!("invalid {what} {item:?}: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

/// Runs `stowage build`.
pub fn run(args: &BuildArgs, globals: &Globals) -> anyhow::Result<ExitCode> {
    let store = globals.open_store()?;
    let mut tags = Vec::new();
    for tag in &args.tags {
        tags.push(Reference::parse(tag).with_context(|| format!("invalid tag {tag:?}"))?);
    }
    let platform = match &args.platform {
        Some(text) => text
            .parse::<Platform>()
            .map_err(|e| anyhow::anyhow!("invalid --platform {text:?}: {e}"))?,
        None => Platform::native(),
    };
    let compression = match args.compress {
        CompressArg::Gzip => Compression::Gzip {
            level: args.compress_level.map_or(6, |l| l.clamp(1, 9) as u32),
        },
        CompressArg::Zstd => Compression::Zstd {
            level: args.compress_level.map_or(3, |l| l.clamp(1, 22)),
        },
        CompressArg::None => Compression::None,
    };

    // The context: a directory, or a tar on stdin unpacked into the store's tmp.
    let _unpacked_context;
    let context_dir: PathBuf = if args.context == "-" {
        let dir = tempfile::Builder::new()
            .prefix("context-")
            .tempdir_in(store.tmp_dir())
            .context("creating a directory for the context from stdin")?;
        let stdin = std::io::stdin();
        let (_, reader) = stowage_archive::decompressing_reader(stdin)
            .context("reading the context archive from stdin")?;
        let options = stowage_archive::ApplyOptions {
            special_files: stowage_archive::SpecialFilePolicy::Skip,
            preserve_ownership: false,
            ..stowage_archive::ApplyOptions::default()
        };
        stowage_archive::apply_layer(reader, dir.path(), &options)
            .context("unpacking the context archive from stdin")?;
        let path = dir.path().to_path_buf();
        _unpacked_context = Some(dir);
        path
    } else {
        _unpacked_context = None;
        let dir = PathBuf::from(&args.context);
        if !dir.is_dir() {
            bail!("the build context {:?} is not a directory", args.context);
        }
        dir
    };

    let dockerfile = match &args.file {
        Some(path) if path.as_os_str() == "-" => {
            if args.context == "-" {
                bail!("-f - and a context on stdin cannot both read standard input");
            }
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the Dockerfile from stdin")?;
            DockerfileInput {
                name: "<stdin>".to_owned(),
                text,
                path: None,
            }
        }
        Some(path) => read_dockerfile(path)?,
        None => read_dockerfile(&context_dir.join("Dockerfile"))?,
    };

    for value in &args.cache_from {
        crate::commands::cache_spec::parse_cache_from(value)?;
    }
    let cache_to = args
        .cache_to
        .iter()
        .map(|value| crate::commands::cache_spec::parse_cache_to(value))
        .collect::<Result<Vec<_>, _>>()?;
    let mut secret_files = Vec::new();
    let request = BuildRequest {
        dockerfile: dockerfile.clone(),
        context: context_dir.clone(),
        tags: tags.clone(),
        build_args: parse_key_values(&args.build_args, "--build-arg", true)?,
        labels: parse_key_values(&args.labels, "--label", false)?,
        target: args.target.clone(),
        network: match args.network {
            NetworkArg::None => stowage_exec::NetworkMode::None,
            NetworkArg::Host | NetworkArg::Default => stowage_exec::NetworkMode::Host,
        },
        no_cache: args.no_cache,
        dry_run: args.dry_run,
        compression,
        timestamp: args.timestamp,
        platform,
        secrets: parse_secrets(&args.secrets, store.tmp_dir(), &mut secret_files)?,
        cache_from: args.cache_from.clone(),
        squash: match (args.squash, args.squash_all) {
            (_, true) => stowage_solver::SquashMode::All,
            (true, false) => stowage_solver::SquashMode::NewLayers,
            (false, false) => stowage_solver::SquashMode::Off,
        },
    };

    let lint_options = crate::commands::report::lint_options(
        &dockerfile,
        &context_dir,
        &request.build_args,
        args.target.as_deref(),
    );
    if args.check && crate::commands::report::check(&dockerfile, &lint_options) {
        return Ok(ExitCode::from(1));
    }

    let mode = match args.progress {
        ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Tty,
        ProgressMode::Auto => ProgressMode::Plain,
        other => other,
    };
    let printer = Printer::new(mode, args.quiet, args.explain);
    let remote_cache = crate::commands::build_cache::RegistryCache::new(globals);
    let images = RegistryImages {
        globals,
        remote_cache: &remote_cache,
        policy: if args.pull {
            stowage_distribution::PullPolicy::Always
        } else {
            stowage_distribution::PullPolicy::Missing
        },
    };
    let wants_report = !args.dry_run && !args.no_report && (!args.quiet || args.report.is_some());
    let lower_layers = if wants_report {
        crate::commands::report::LowerLayersAhead::start(&store, &tags)
    } else {
        None
    };
    let started = Instant::now();
    let result = stowage_solver::build(&store, &request, &images as &dyn ImageSource, &printer);
    printer.finish_live();
    let result = match result {
        Ok(result) => result,
        Err(BuildError::Dockerfile {
            file,
            source_text,
            error,
        }) => return Err(Rendered(error.render(&file, &source_text)).into()),
        Err(error) => return Err(error.into()),
    };
    let elapsed = started.elapsed();
    // The report, measured once at most (it takes the scan of the lower layers begun
    // before the build). Its lint: given the big files of the context when the build
    // walked all of it, its context rules need no walk of their own.
    let measure_report = || {
        let mut options = lint_options.clone();
        options.context_large_files = result.context_large_files.clone();
        let lint = crate::commands::report::lint(&dockerfile, &options);
        crate::commands::report::measure(&store, &result, lint.as_ref(), elapsed, lower_layers)
    };

    // The context's size, as `docker build` reports what it sends: from the
    // build's own walk when it copied the whole context, else walked here.
    let summary = if args.quiet {
        None
    } else {
        result
            .context_total
            .or_else(|| context_summary(&context_dir, dockerfile.path.as_deref()))
    };
    if let Some((files, bytes)) = summary {
        errln!(
            "build context: {files} files, {} (COPY/ADD steps selected {} files, {}, counted per step)",
            human_size(bytes),
            result.context_used.0,
            human_size(result.context_used.1)
        );
    }
    if args.dry_run {
        let would_run = result
            .steps
            .iter()
            .filter(|s| s.outcome == StepOutcome::WouldRun)
            .count();
        errln!("dry run: {would_run} step(s) would run; nothing was built");
        return Ok(ExitCode::SUCCESS);
    }
    let id = result
        .image_id
        .map(|id| id.digest().to_string())
        .unwrap_or_default();
    if let Some(path) = &args.iidfile {
        std::fs::write(path, &id).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.quiet {
        if let Some(path) = &args.report {
            crate::commands::report::save(&measure_report()?, path)?;
        }
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let cached = result
        .steps
        .iter()
        .filter(|s| s.outcome == StepOutcome::Cached)
        .count();
    let built = result
        .steps
        .iter()
        .filter(|s| matches!(s.outcome, StepOutcome::Built { .. }))
        .count();
    let size: u64 = result
        .layers
        .iter()
        .map(|l| l.uncompressed_size.unwrap_or(l.compressed_size))
        .sum();
    let compressed: u64 = result.layers.iter().map(|l| l.compressed_size).sum();
    errln!(
        "built in {:.2}s: {} layers, {} ({} compressed); {built} step(s) ran, {cached} cached",
        elapsed.as_secs_f64(),
        result.layers.len(),
        human_size(size),
        human_size(compressed),
    );
    // The layers of the image made by its steps (an earlier stage's layers are not in it).
    let in_image: std::collections::BTreeSet<_> = result
        .layers
        .iter()
        .map(|layer| layer.blob_digest)
        .collect();
    for step in &result.steps {
        if let Some(layer) = step
            .layer
            .as_ref()
            .filter(|layer| in_image.contains(&layer.blob_digest))
        {
            errln!(
                "  layer {:>10} ({:>10} compressed)  {}",
                layer
                    .uncompressed_size
                    .map_or_else(|| "?".to_owned(), human_size),
                human_size(layer.compressed_size),
                step.text
            );
        }
    }
    for spec in &cache_to {
        match crate::commands::build_cache::export(&store, globals, spec, &result.cache_export) {
            Ok(Some(pushed)) => errln!(
                "exported {} cache entries to {}@{}",
                pushed.entries,
                pushed.reference.familiar(),
                pushed.manifest_digest
            ),
            Ok(None) => {}
            Err(error) if spec.ignores_errors() => errln!("warning: {error:#}"),
            Err(error) => return Err(error),
        }
    }
    if wants_report {
        let report = measure_report()?;
        eprint!("{}", stowage_advisor::report::render_report_text(&report));
        if let Some(path) = &args.report {
            crate::commands::report::save(&report, path)?;
        }
    }
    if args.push {
        for tag in &result.tags {
            let client = crate::commands::registry::client_for(globals, tag.domain());
            let pushed = stowage_distribution::push(
                &store,
                &client,
                &tag.to_string(),
                tag,
                &stowage_distribution::PushOptions::default(),
            )
            .with_context(|| format!("pushing {}", tag.familiar()))?;
            errln!("pushed {}@{}", tag.familiar(), pushed.manifest_digest);
        }
    }
    let names: Vec<String> = result.tags.iter().map(|t| t.familiar()).collect();
    if names.is_empty() {
        println!("{id}");
    } else {
        println!("{id} {}", names.join(" "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses `--secret id=ID,src=FILE` / `id=ID,env=VAR`. Secrets from the
/// environment are written to private temp files kept alive in `keep`.
fn parse_secrets(
    items: &[String],
    tmp: &Path,
    keep: &mut Vec<tempfile::NamedTempFile>,
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for item in items {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for part in item.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_owned()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("env", v)) => env = Some(v.to_owned()),
                Some(("type", "file" | "env")) => {}
                _ => bail!("invalid --secret {item:?}: expected id=ID,src=FILE or id=ID,env=VAR"),
            }
        }
        let id = id.ok_or_else(|| anyhow::anyhow!("--secret {item:?} needs id="))?;
        let path = match src {
            Some(path) => {
                if !path.is_file() {
                    bail!("--secret {id}: {} is not a readable file", path.display());
                }
                path
            }
            None => {
                let name = env.unwrap_or_else(|| id.clone());
                let value = std::env::var(&name).map_err(|_| {
                    anyhow::anyhow!(
                        "--secret {id}: give src=FILE, or set the environment variable {name}"
                    )
                })?;
                let mut file = tempfile::NamedTempFile::new_in(tmp)?;
                file.write_all(value.as_bytes())?;
                let path = file.path().to_path_buf();
                keep.push(file);
                path
            }
        };
        out.insert(id, path);
    }
    Ok(out)
}

/// Base images from the store, pulled from their registry when missing (or
/// always, with `--pull`).
struct RegistryImages<'a> {
    globals: &'a Globals,
    remote_cache: &'a crate::commands::build_cache::RegistryCache<'a>,
    policy: stowage_distribution::PullPolicy,
}

impl ImageSource for RegistryImages<'_> {
    fn remote_cache(&self) -> Option<&dyn stowage_solver::remote_cache::RemoteCache> {
        Some(self.remote_cache)
    }

    fn image(
        &self,
        store: &stowage_store::Store,
        reference: &str,
    ) -> Result<stowage_store::ImageDetails, String> {
        // Image IDs and short IDs are local by nature.
        if self.policy == stowage_distribution::PullPolicy::Missing
            && let Ok(details) = store.image(reference)
        {
            return Ok(details);
        }
        let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
        let client = crate::commands::registry::client_for(self.globals, parsed.domain());
        let ensured = stowage_distribution::ensure_image(
            store,
            &client,
            &parsed,
            self.policy,
            &stowage_distribution::PullOptions::default(),
        )
        .map_err(|e| e.to_string())?;
        store
            .image(&ensured.manifest_digest.to_string())
            .map_err(|e| e.to_string())
    }
}

fn read_dockerfile(path: &Path) -> anyhow::Result<DockerfileInput> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the Dockerfile {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("{} is not valid UTF-8", path.display()))?;
    Ok(DockerfileInput {
        name: path.display().to_string(),
        text,
        path: Some(path.to_path_buf()),
    })
}

/// Files and bytes of the whole context after .dockerignore.
fn context_summary(dir: &Path, dockerfile: Option<&Path>) -> Option<(u64, u64)> {
    let context = stowage_solver::open_build_context(dir, dockerfile).ok()?;
    context.summary().ok().map(|s| (s.files, s.bytes))
}

/// Renders build events.
struct Printer {
    mode: ProgressMode,
    quiet: bool,
    explain: bool,
    live: Mutex<Live>,
}

#[derive(Default)]
struct Live {
    /// Output lines of the running step shown in the live view.
    window: Vec<String>,
    /// Lines the live view currently occupies on the terminal.
    drawn: usize,
    /// Bytes of output of the running step.
    lines_total: usize,
    partial: String,
}

const LIVE_LINES: usize = 6;

fn step_prefix(id: &StepId) -> String {
    format!("[{} {}/{}]", id.stage, id.step, id.total)
}

fn describe_reasons(reasons: &[MissReason]) -> String {
    reasons
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Printer {
    fn new(mode: ProgressMode, quiet: bool, explain: bool) -> Self {
        Self {
            mode,
            quiet,
            explain,
            live: Mutex::new(Live::default()),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn clear_live(live: &mut Live, err: &mut impl Write) {
        for _ in 0..live.drawn {
            let _ = write!(err, "\x1b[1A\x1b[2K");
        }
        live.drawn = 0;
    }

    fn draw_live(live: &mut Live, err: &mut impl Write) {
        Self::clear_live(live, err);
        for line in &live.window {
            let shown: String = line.chars().take(160).collect();
            let _ = writeln!(err, "\x1b[2m  │ {shown}\x1b[0m");
        }
        live.drawn = live.window.len();
    }

    fn finish_live(&self) {
        if self.mode == ProgressMode::Tty {
            let mut live = self.live();
            let mut err = std::io::stderr().lock();
            Self::clear_live(&mut live, &mut err);
        }
    }
}

impl Progress for Printer {
    fn event(&self, event: Event<'_>) {
        if self.quiet {
            return;
        }
        // One write per line, not per piece of each line's format.
        let mut err = std::io::LineWriter::new(std::io::stderr().lock());
        match event {
            Event::Context { files, bytes } => {
                let _ = writeln!(err, "build context: {files} files, {}", human_size(bytes));
            }
            Event::Warning(text) => {
                let _ = writeln!(err, "warning: {text}");
            }
            Event::StepStarted { id, text } => {
                let mut live = self.live();
                live.window.clear();
                live.lines_total = 0;
                live.partial.clear();
                let _ = writeln!(err, "{} {text}", step_prefix(id));
            }
            Event::StepMissed { id, reasons } => {
                if self.explain {
                    let _ = writeln!(
                        err,
                        "{} not cached: {}",
                        step_prefix(id),
                        describe_reasons(reasons)
                    );
                }
            }
            Event::Output { id, chunk } => {
                let text = String::from_utf8_lossy(chunk);
                let mut live = self.live();
                let mut buffer = std::mem::take(&mut live.partial);
                buffer.push_str(&text);
                let mut lines: Vec<String> = buffer.split('\n').map(str::to_owned).collect();
                live.partial = lines.pop().unwrap_or_default();
                for line in lines {
                    let line = line.rsplit('\r').next().unwrap_or(&line).to_owned();
                    live.lines_total += 1;
                    match self.mode {
                        ProgressMode::Tty => {
                            // Prefixed, so steps of stages running at once
                            // stay apart in the window.
                            live.window.push(format!("{} {line}", step_prefix(id)));
                            if live.window.len() > LIVE_LINES {
                                live.window.remove(0);
                            }
                        }
                        _ => {
                            let _ = writeln!(err, "{} {line}", step_prefix(id));
                        }
                    }
                }
                if self.mode == ProgressMode::Tty {
                    Self::draw_live(&mut live, &mut err);
                }
            }
            Event::StepFinished {
                id,
                outcome,
                duration,
            } => {
                let mut live = self.live();
                if !live.partial.is_empty() {
                    let line = std::mem::take(&mut live.partial);
                    live.lines_total += 1;
                    if self.mode != ProgressMode::Tty {
                        let _ = writeln!(err, "{} {line}", step_prefix(id));
                    }
                }
                if self.mode == ProgressMode::Tty {
                    Self::clear_live(&mut live, &mut err);
                }
                let hidden = if self.mode == ProgressMode::Tty && live.lines_total > 0 {
                    format!(
                        " ({} output lines; --progress plain shows them all)",
                        live.lines_total
                    )
                } else {
                    String::new()
                };
                let status = match outcome {
                    StepOutcome::Cached => "CACHED".to_owned(),
                    StepOutcome::Built { layer_bytes } => {
                        format!(
                            "DONE {:.1}s, layer {}",
                            secs(duration),
                            human_size(layer_bytes)
                        )
                    }
                    StepOutcome::Config => {
                        if !self.explain {
                            return;
                        }
                        "config only".to_owned()
                    }
                    StepOutcome::Source => format!("DONE {:.1}s", secs(duration)),
                    StepOutcome::WouldRun => "WOULD RUN".to_owned(),
                };
                let _ = writeln!(err, "{} {status}{hidden}", step_prefix(id));
            }
        }
    }
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}
