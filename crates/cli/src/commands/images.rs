//! Image management commands, with Docker's output: `images`, `inspect`, `history`, `tag`,
//! `rmi`, `prune`, `system df`, `save`, `load` and `import`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use stowage_archive::Compression;
use stowage_export::{EntryPolicy, ImportOptions, LoadOptions, SaveFormat};
use stowage_image::{ImageConfig, Reference};
use stowage_store::{ImageDetails, ImageSummary, RemoveEvent, Store};

use crate::Globals;
use crate::output::{emit, human_size};

/// The image commands, flattened into the top level.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images.
    Images(ImagesArgs),
    /// Show low-level information on images, as a JSON array.
    Inspect(InspectArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Create a tag TARGET that refers to SOURCE.
    Tag(TagArgs),
    /// Remove one or more images.
    Rmi(RmiArgs),
    /// Remove unused images and unreferenced blobs.
    Prune(PruneArgs),
    /// Store-wide information.
    #[command(subcommand)]
    System(SystemCommand),
    /// Save images to a tar archive (docker-archive by default; streamed to stdout without -o).
    Save(SaveArgs),
    /// Load images from a tar archive (docker-archive or OCI) or standard input.
    Load(LoadArgs),
    /// Import a root filesystem tarball as a one-layer image.
    Import(ImportArgs),
}

/// `stowage system ...`.
#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Show disk usage: shared and unique sizes, compressed and uncompressed.
    Df(DfArgs),
}

/// Output format of the listing commands.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ListFormat {
    /// An aligned table.
    #[default]
    Table,
    /// One JSON object per line.
    Json,
}

/// `stowage images`.
#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Show all images (stowage keeps no intermediate images, so this changes nothing).
    #[arg(short, long)]
    all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ListFormat,
    /// Only show image IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Show full image IDs.
    #[arg(long)]
    no_trunc: bool,
    /// Only images of this repository (and tag).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    filter: Option<String>,
}

/// `stowage inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Images (name, name:tag, ID or ID prefix).
    #[arg(required = true)]
    images: Vec<String>,
}

/// `stowage history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: ListFormat,
    /// The image.
    image: String,
}

/// `stowage tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// Existing image.
    source: String,
    /// New tag.
    target: String,
}

/// `stowage rmi`.
#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Remove an image even when several tags refer to it.
    #[arg(short, long)]
    force: bool,
    /// Images to remove.
    #[arg(required = true)]
    images: Vec<String>,
}

/// `stowage prune`.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all images, not only untagged ones (stowage has no containers, so every
    /// image is unused).
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Also trim the build cache (every record, or least recently used first
    /// down to --keep-storage).
    #[arg(long)]
    cache: bool,
    /// With --cache: keep this much cached layer data (e.g. 10GB, 500MB).
    #[arg(long, value_name = "SIZE", requires = "cache")]
    keep_storage: Option<String>,
}

/// Parses a size like `10GB`, `500MB`, `1g` or `123` (bytes).
fn parse_size(text: &str) -> anyhow::Result<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size {text:?}: use e.g. 10GB or 500MB"))?;
    let factor: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("invalid size unit {other:?} in {text:?}"),
    };
    Ok((number * factor) as u64)
}

/// `stowage system df`.
#[derive(Args, Debug)]
pub struct DfArgs {
    /// Show per-image usage.
    #[arg(short, long)]
    verbose: bool,
}

/// Archive layouts for `save`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save` format (loads with `docker load`).
    Docker,
    /// OCI image layout in a tar (oci-archive).
    Oci,
}

/// Layer compression in the store, for `load` and `import`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreCompression {
    /// gzip (level 1, parallel, deterministic).
    Gzip,
    /// zstd (level 3; OCI media types).
    Zstd,
    /// Uncompressed tar.
    None,
}

impl StoreCompression {
    fn compression(self) -> Compression {
        match self {
            StoreCompression::Gzip => stowage_export::DEFAULT_COMPRESSION,
            StoreCompression::Zstd => Compression::Zstd { level: 3 },
            StoreCompression::None => Compression::None,
        }
    }
}

/// `stowage save`.
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Archive layout.
    #[arg(long, value_enum, default_value = "docker")]
    format: ArchiveFormat,
    /// Recompress the layers (`--format oci` only; a docker-archive's layers are
    /// uncompressed). The image ID stays; the manifest changes.
    #[arg(long, value_enum, value_name = "gzip|zstd|none")]
    compress: Option<StoreCompression>,
    /// Compression level (gzip 1-9, default 6; zstd 1-22, default 3).
    #[arg(long, value_name = "N", requires = "compress")]
    compress_level: Option<i32>,
    /// Images to save.
    #[arg(required = true)]
    images: Vec<String>,
}

/// `stowage load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from this file instead of standard input.
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Print nothing.
    #[arg(short, long)]
    quiet: bool,
    /// Compression of the layers stored from a docker-archive.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: StoreCompression,
    /// Accept device nodes in layers.
    #[arg(long)]
    allow_devices: bool,
}

/// `stowage import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Set the commit message (the history comment).
    #[arg(short, long)]
    message: Option<String>,
    /// Compression of the layer in the store.
    #[arg(long, value_enum, default_value = "gzip")]
    compression: StoreCompression,
    /// The tarball (plain, gzip, zstd, xz or bzip2), or `-` for standard input.
    source: PathBuf,
    /// Name of the new image.
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
}

/// Runs one image command.
pub fn run(command: ImageCommand, globals: &Globals) -> anyhow::Result<ExitCode> {
    match command {
        ImageCommand::Tag(args) => {
            // Parse first so that a bad reference fails before the store is touched.
            Reference::parse_normalized(&args.target)
                .with_context(|| format!("invalid reference format: {:?}", args.target))?;
            globals.open_store()?.tag(&args.source, &args.target)?;
            Ok(ExitCode::SUCCESS)
        }
        ImageCommand::Images(args) => images(&globals.open_store()?, &args),
        ImageCommand::Inspect(args) => inspect(&globals.open_store()?, &args),
        ImageCommand::History(args) => history(&globals.open_store()?, &args),
        ImageCommand::Rmi(args) => rmi(&globals.open_store()?, &args),
        ImageCommand::Prune(args) => prune(&globals.open_store()?, &args),
        ImageCommand::System(SystemCommand::Df(args)) => df(&globals.open_store()?, &args),
        ImageCommand::Save(args) => save(&globals.open_store()?, &args),
        ImageCommand::Load(args) => load(&globals.open_store()?, &args),
        ImageCommand::Import(args) => import(globals, &args),
    }
}

// ---- formatting helpers ----

/// Docker's `HumanDuration` plus " ago"; `N/A` for an unknown time.
fn created_since(created_unix: Option<i64>) -> String {
    let Some(created) = created_unix else {
        return "N/A".to_owned();
    };
    let now = jiff::Timestamp::now().as_second();
    format!("{} ago", human_duration(now.saturating_sub(created).max(0)))
}

fn human_duration(seconds: i64) -> String {
    let minutes = seconds / 60;
    let hours = (seconds + 1800) / 3600;
    match () {
        _ if seconds < 1 => "Less than a second".to_owned(),
        _ if seconds == 1 => "1 second".to_owned(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_owned(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_owned(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

fn parse_time(text: Option<&str>) -> Option<i64> {
    text?.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// `2024-01-02 15:04:05 +0000 UTC`, as Docker's `CreatedAt`.
fn created_at(created_unix: Option<i64>) -> String {
    created_unix
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default()
}

/// Renders rows like Docker's tabwriter (min width 10, padding 3).
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count() + 3).max(10);
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let width = widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn image_size(summary: &ImageSummary) -> u64 {
    summary.uncompressed_size.unwrap_or(summary.compressed_size)
}

fn short_id(id: &stowage_image::ImageId, no_trunc: bool) -> String {
    if no_trunc { id.to_string() } else { id.short() }
}

// ---- images ----

fn matches_filter(tag: &Reference, filter: &Reference, filter_has_tag: bool) -> bool {
    tag.name() == filter.name() && (!filter_has_tag || tag.tag() == filter.tag())
}

fn images(store: &Store, args: &ImagesArgs) -> anyhow::Result<ExitCode> {
    let filter = match &args.filter {
        Some(text) => Some((
            Reference::parse_normalized(text)
                .with_context(|| format!("invalid reference format: {text:?}"))?,
            text.rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':')),
        )),
        None => None,
    };
    let mut rows = vec![vec![
        "REPOSITORY".to_owned(),
        "TAG".to_owned(),
        "IMAGE ID".to_owned(),
        "CREATED".to_owned(),
        "SIZE".to_owned(),
    ]];
    let mut json_lines = String::new();
    let mut ids = Vec::new();
    for image in store.list_images()? {
        let names: Vec<(String, String)> = if image.tags.is_empty() {
            if filter.is_some() {
                continue;
            }
            vec![("<none>".to_owned(), "<none>".to_owned())]
        } else {
            image
                .tags
                .iter()
                .filter(|t| {
                    filter
                        .as_ref()
                        .is_none_or(|(f, has_tag)| matches_filter(t, f, *has_tag))
                })
                .map(|t| (t.familiar_name(), t.tag().unwrap_or("<none>").to_owned()))
                .collect()
        };
        if names.is_empty() {
            continue;
        }
        let id = short_id(&image.id, args.no_trunc);
        if !ids.contains(&id) {
            ids.push(id.clone());
        }
        for (repository, tag) in names {
            let size = image_size(&image);
            match args.format {
                ListFormat::Table => rows.push(vec![
                    repository,
                    tag,
                    id.clone(),
                    created_since(image.created_unix),
                    human_size(size),
                ]),
                ListFormat::Json => {
                    let line = json!({
                        "Repository": repository,
                        "Tag": tag,
                        "ID": id,
                        "Digest": image.manifest_digest.to_string(),
                        "CreatedAt": created_at(image.created_unix),
                        "CreatedSince": created_since(image.created_unix),
                        "Size": size,
                        "CompressedSize": image.compressed_size,
                    });
                    json_lines.push_str(&line.to_string());
                    json_lines.push('\n');
                }
            }
        }
    }
    if args.quiet {
        emit(&ids.iter().map(|id| format!("{id}\n")).collect::<String>())?;
    } else {
        match args.format {
            ListFormat::Table => emit(&table(&rows))?,
            ListFormat::Json => emit(&json_lines)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---- inspect ----

fn inspect_value(details: &ImageDetails) -> Value {
    let config: &ImageConfig = &details.config;
    let extra_str = |key: &str| {
        config
            .extra
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let size: u64 = details
        .layers
        .iter()
        .map(|l| l.uncompressed_size.unwrap_or(l.compressed_size))
        .sum();
    let mut object = serde_json::Map::new();
    object.insert("Id".into(), json!(details.id.to_string()));
    object.insert(
        "RepoTags".into(),
        json!(
            details
                .tags
                .iter()
                .map(Reference::familiar)
                .collect::<Vec<_>>()
        ),
    );
    object.insert("RepoDigests".into(), json!([]));
    object.insert("Parent".into(), json!(""));
    object.insert("Comment".into(), json!(extra_str("comment")));
    object.insert(
        "Created".into(),
        json!(config.created.clone().unwrap_or_default()),
    );
    object.insert("DockerVersion".into(), json!(extra_str("docker_version")));
    object.insert(
        "Author".into(),
        json!(config.author.clone().unwrap_or_default()),
    );
    object.insert(
        "Config".into(),
        serde_json::to_value(&config.config).unwrap_or(Value::Null),
    );
    object.insert("Architecture".into(), json!(config.architecture));
    if let Some(variant) = &config.variant {
        object.insert("Variant".into(), json!(variant));
    }
    object.insert("Os".into(), json!(config.os));
    object.insert("Size".into(), json!(size));
    object.insert("VirtualSize".into(), json!(size));
    object.insert(
        "RootFS".into(),
        json!({
            "Type": config.rootfs.kind,
            "Layers": config.rootfs.diff_ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
    );
    object.insert(
        "History".into(),
        serde_json::to_value(&config.history).unwrap_or(Value::Null),
    );
    object.insert(
        "Stowage".into(),
        json!({
            "ManifestDigest": details.manifest_digest.to_string(),
            "ManifestMediaType": details.manifest.media_type(),
            "Layers": details.layers.iter().map(|l| json!({
                "DiffID": l.diff_id.to_string(),
                "Digest": l.blob_digest.to_string(),
                "MediaType": l.media_type,
                "CompressedSize": l.compressed_size,
                "UncompressedSize": l.uncompressed_size,
            })).collect::<Vec<_>>(),
        }),
    );
    Value::Object(object)
}

/// Fills in the uncompressed size of layers that arrived without one (pulled or loaded):
/// each such blob is decompressed once, checked against its diff_id, and the size is
/// recorded in the store for next time.
fn with_uncompressed_sizes(
    store: &Store,
    mut details: ImageDetails,
) -> stowage_store::Result<ImageDetails> {
    for layer in details
        .layers
        .iter_mut()
        .filter(|l| l.uncompressed_size.is_none())
    {
        let blob = store.open_blob_verified(&layer.blob_digest)?;
        let io_error = |source| stowage_store::StoreError::Io {
            action: "measuring the uncompressed size of",
            path: store.blob_path(&layer.blob_digest),
            source,
        };
        let (_, reader) = stowage_archive::decompressing_reader(blob).map_err(io_error)?;
        let mut hashing = stowage_digest::HashingReader::new(reader);
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(io_error)?;
        let (_, diff_id, size) = hashing.finish();
        if diff_id != layer.diff_id {
            return Err(stowage_store::StoreError::InvalidImage(format!(
                "layer {} decompresses to {diff_id}, not its diff_id {}",
                layer.blob_digest, layer.diff_id
            )));
        }
        store.record_uncompressed_size(&layer.blob_digest, size)?;
        layer.uncompressed_size = Some(size);
    }
    Ok(details)
}

fn inspect(store: &Store, args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let mut found = Vec::new();
    let mut failed = false;
    for input in &args.images {
        match store
            .image(input)
            .and_then(|details| with_uncompressed_sizes(store, details))
        {
            Ok(details) => found.push(inspect_value(&details)),
            Err(error) => {
                eprintln!("Error: {error}");
                failed = true;
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&Value::Array(found))?;
    text.push('\n');
    emit(&text)?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

// ---- history ----

fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn history(store: &Store, args: &HistoryArgs) -> anyhow::Result<ExitCode> {
    let details = store.image(&args.image)?;
    let mut layers = details.layers.iter();
    let mut entries = Vec::new();
    for entry in &details.config.history {
        let size = if entry.has_layer() {
            layers
                .next()
                .map(|l| l.uncompressed_size.unwrap_or(l.compressed_size))
                .unwrap_or(0)
        } else {
            0
        };
        entries.push((entry, size));
    }
    let mut rows = vec![vec![
        "IMAGE".to_owned(),
        "CREATED".to_owned(),
        "CREATED BY".to_owned(),
        "SIZE".to_owned(),
        "COMMENT".to_owned(),
    ]];
    let mut json_lines = String::new();
    let count = entries.len();
    for (position, (entry, size)) in entries.into_iter().enumerate().rev() {
        let id = if position + 1 == count {
            short_id(&details.id, args.no_trunc)
        } else {
            "<missing>".to_owned()
        };
        let created = parse_time(entry.created.as_deref());
        let created_by = entry.created_by.clone().unwrap_or_default();
        let comment = entry.comment.clone().unwrap_or_default();
        match args.format {
            ListFormat::Table => rows.push(vec![
                id,
                created_since(created),
                if args.no_trunc {
                    created_by
                } else {
                    ellipsis(&created_by, 45)
                },
                human_size(size),
                comment,
            ]),
            ListFormat::Json => {
                json_lines.push_str(
                    &json!({
                        "ID": id,
                        "CreatedAt": entry.created.clone().unwrap_or_default(),
                        "CreatedSince": created_since(created),
                        "CreatedBy": created_by,
                        "Size": size,
                        "Comment": comment,
                    })
                    .to_string(),
                );
                json_lines.push('\n');
            }
        }
    }
    match args.format {
        ListFormat::Table => emit(&table(&rows))?,
        ListFormat::Json => emit(&json_lines)?,
    }
    Ok(ExitCode::SUCCESS)
}

// ---- rmi / prune ----

fn print_events(events: &[RemoveEvent]) -> String {
    let mut out = String::new();
    for event in events {
        match event {
            RemoveEvent::Untagged(reference) => {
                let _ = writeln!(out, "Untagged: {}", reference.familiar());
            }
            RemoveEvent::Deleted { id, .. } => {
                let _ = writeln!(out, "Deleted: {id}");
            }
        }
    }
    out
}

fn rmi(store: &Store, args: &RmiArgs) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for input in &args.images {
        match store.remove_image(input, args.force) {
            Ok(events) => emit(&print_events(&events))?,
            Err(error) => {
                eprintln!("Error: {error}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn prune(store: &Store, args: &PruneArgs) -> anyhow::Result<ExitCode> {
    if args.all && !args.force {
        if !std::io::stdin().is_terminal() {
            bail!("prune --all removes every image: pass --force to confirm");
        }
        eprint!("WARNING! This will remove all images. Are you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !answer.trim().eq_ignore_ascii_case("y") {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let mut cache_line = None;
    if args.cache {
        let keep = args.keep_storage.as_deref().map(parse_size).transpose()?;
        let report = store.cache_prune(keep)?;
        cache_line = Some(format!(
            "Build cache: {} record(s) removed, {} of cached layers released",
            report.records_removed,
            human_size(report.bytes_reclaimed)
        ));
    }
    let mut events = store.remove_dangling_images()?;
    if args.all {
        for image in store.list_images()? {
            events.extend(store.remove_image(&image.manifest_digest.to_string(), true)?);
        }
    }
    let report = store.prune()?;
    let mut out = String::new();
    if let Some(line) = cache_line {
        out.push_str(&line);
        out.push('\n');
    }
    if !events.is_empty() {
        out.push_str("Deleted Images:\n");
        out.push_str(&print_events(&events));
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "Total reclaimed space: {} ({} blobs, {} unpacked layers)",
        human_size(report.bytes_reclaimed),
        report.blobs_removed,
        report.layers_removed
    );
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

// ---- system df ----

fn df(store: &Store, args: &DfArgs) -> anyhow::Result<ExitCode> {
    let usage = store.disk_usage()?;
    // blob -> (images using it, compressed, uncompressed)
    let mut blobs: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for image in &usage.images {
        for layer in store.image_layers(&image.manifest_digest)? {
            let slot = blobs.entry(layer.blob_digest.to_string()).or_insert((
                0,
                layer.compressed_size,
                layer.uncompressed_size.unwrap_or(layer.compressed_size),
            ));
            slot.0 += 1;
        }
    }
    let (mut shared_c, mut shared_u, mut unique_c, mut unique_u) = (0u64, 0u64, 0u64, 0u64);
    for (users, compressed, uncompressed) in blobs.values() {
        if *users > 1 {
            shared_c += compressed;
            shared_u += uncompressed;
        } else {
            unique_c += compressed;
            unique_u += uncompressed;
        }
    }
    let tagged = usage.images.iter().filter(|i| !i.tags.is_empty()).count();
    let rows = vec![
        vec![
            "TYPE".to_owned(),
            "TOTAL".to_owned(),
            "TAGGED".to_owned(),
            "SIZE".to_owned(),
            "SHARED".to_owned(),
            "UNIQUE".to_owned(),
            "RECLAIMABLE".to_owned(),
        ],
        vec![
            "Images (compressed)".to_owned(),
            usage.images.len().to_string(),
            tagged.to_string(),
            human_size(shared_c + unique_c),
            human_size(shared_c),
            human_size(unique_c),
            human_size(usage.unreferenced_blob_bytes),
        ],
        vec![
            "Images (uncompressed)".to_owned(),
            usage.images.len().to_string(),
            tagged.to_string(),
            human_size(shared_u + unique_u),
            human_size(shared_u),
            human_size(unique_u),
            "-".to_owned(),
        ],
        vec![
            "Unpacked layers".to_owned(),
            usage.unpacked_layer_count.to_string(),
            "-".to_owned(),
            human_size(usage.unpacked_layer_bytes),
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
        ],
        vec![
            "Blobs".to_owned(),
            usage.blob_count.to_string(),
            "-".to_owned(),
            human_size(usage.blob_bytes),
            "-".to_owned(),
            "-".to_owned(),
            human_size(usage.unreferenced_blob_bytes),
        ],
    ];
    let mut out = table(&rows);
    if args.verbose {
        out.push_str("\nImages space usage:\n\n");
        let mut rows = vec![
            [
                "REPOSITORY",
                "TAG",
                "IMAGE ID",
                "CREATED",
                "SIZE",
                "SHARED SIZE",
                "UNIQUE SIZE",
                "UNCOMPRESSED",
                "SHARED UNCOMPRESSED",
                "UNIQUE UNCOMPRESSED",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
        ];
        for image in &usage.images {
            let names: Vec<(String, String)> = if image.tags.is_empty() {
                vec![("<none>".to_owned(), "<none>".to_owned())]
            } else {
                image
                    .tags
                    .iter()
                    .map(|t| (t.familiar_name(), t.tag().unwrap_or("<none>").to_owned()))
                    .collect()
            };
            for (repository, tag) in names {
                rows.push(vec![
                    repository,
                    tag,
                    image.id.short(),
                    created_since(parse_time(image.created.as_deref())),
                    human_size(image.compressed.total),
                    human_size(image.compressed.shared),
                    human_size(image.compressed.unique),
                    human_size(image.uncompressed.total),
                    human_size(image.uncompressed.shared),
                    human_size(image.uncompressed.unique),
                ]);
            }
        }
        out.push_str(&table(&rows));
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

// ---- save / load / import ----

fn save(store: &Store, args: &SaveArgs) -> anyhow::Result<ExitCode> {
    let format = match args.format {
        ArchiveFormat::Docker => SaveFormat::Docker,
        ArchiveFormat::Oci => SaveFormat::Oci,
    };
    let compression = args
        .compress
        .map(|c| export_compression(c, args.compress_level));
    match &args.output {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let temp = stowage_store::published_temp_file(dir, ".stowage-save-")
                .with_context(|| format!("creating a temp file in {}", dir.display()))?;
            let out = std::io::BufWriter::with_capacity(1024 * 1024, temp);
            let (out, _) = stowage_export::save_with_compression(
                store,
                &args.images,
                format,
                compression,
                out,
            )?;
            let temp = out
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("writing {}", path.display()))?;
            temp.as_file()
                .sync_all()
                .with_context(|| format!("syncing {}", path.display()))?;
            temp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let out = std::io::BufWriter::with_capacity(1024 * 1024, stdout.lock());
            let (mut out, _) = stowage_export::save_with_compression(
                store,
                &args.images,
                format,
                compression,
                out,
            )?;
            out.flush().context("writing to standard output")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The compression `save --compress` and `push --compress` convert layers to
/// (gzip level 6 and zstd level 3 unless a level is given, as `build`).
pub(crate) fn export_compression(kind: StoreCompression, level: Option<i32>) -> Compression {
    match kind {
        StoreCompression::Gzip => Compression::Gzip {
            level: level.map_or(6, |l| l.clamp(1, 9) as u32),
        },
        StoreCompression::Zstd => Compression::Zstd {
            level: level.map_or(3, |l| l.clamp(1, 22)),
        },
        StoreCompression::None => Compression::None,
    }
}

fn load(store: &Store, args: &LoadArgs) -> anyhow::Result<ExitCode> {
    let options = LoadOptions {
        compression: args.compression.compression(),
        policy: EntryPolicy {
            allow_devices: args.allow_devices,
        },
    };
    let loaded = match &args.input {
        Some(path) if path.as_os_str() != "-" => stowage_export::load(store, path, &options)?,
        _ => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("requested load from stdin, but stdin is empty (use -i FILE)");
            }
            stowage_export::load_reader(store, stdin, &options)?
        }
    };
    if !args.quiet {
        let mut out = String::new();
        for image in &loaded {
            if image.tags.is_empty() {
                let _ = writeln!(out, "Loaded image ID: {}", image.id);
            }
            for tag in &image.tags {
                let _ = writeln!(out, "Loaded image: {}", tag.familiar());
            }
        }
        emit(&out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn import(globals: &Globals, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let tags = match &args.reference {
        Some(text) => vec![
            Reference::parse_normalized(text)
                .with_context(|| format!("invalid reference format: {text:?}"))?
                .with_default_tag(),
        ],
        None => Vec::new(),
    };
    let store = globals.open_store()?;
    let options = ImportOptions {
        tags,
        message: args.message.clone(),
        compression: args.compression.compression(),
        ..ImportOptions::default()
    };
    let imported = if args.source.as_os_str() == "-" {
        stowage_export::import(&store, std::io::stdin(), &options)?
    } else {
        let file = std::fs::File::open(&args.source)
            .with_context(|| format!("opening {}", args.source.display()))?;
        stowage_export::import(&store, file, &options)?
    };
    emit(&format!("{}\n", imported.id))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(125), "2 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(2 * 3600), "2 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
        assert_eq!(human_duration(20 * 86400), "2 weeks");
        assert_eq!(human_duration(90 * 86400), "3 months");
        assert_eq!(human_duration(800 * 86400), "2 years");
    }

    #[test]
    fn table_pads_like_tabwriter() {
        let rows = vec![
            vec!["REPOSITORY".to_owned(), "TAG".to_owned(), "X".to_owned()],
            vec!["a".to_owned(), "latest".to_owned(), "y".to_owned()],
        ];
        assert_eq!(
            table(&rows),
            "REPOSITORY   TAG       X\na            latest    y\n"
        );
    }

    #[test]
    fn ellipsis_truncates_to_width() {
        assert_eq!(ellipsis("abc", 45), "abc");
        let long = "x".repeat(50);
        assert_eq!(ellipsis(&long, 45).chars().count(), 45);
        assert!(ellipsis(&long, 45).ends_with('…'));
    }
}
