//! COPY and ADD: which files a step selects (from the build context or from
//! another stage or image), what of them goes into its cache key, and writing
//! them straight into a layer under their destination paths, with Docker's
//! rules for directories, wildcards, trailing slashes, `--chown` and
//! `--chmod`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use stowage_archive::{LayerEntryWriter, LayerWriterOptions, Ownership, SyntheticDir};
use stowage_context::{Context, EntryKind, StatCache};
use stowage_digest::Digest;
use stowage_dockerfile::instructions::Source;
use stowage_image::LayerInfo;
use stowage_store::Store;

use crate::cachekey::{FileInput, FileType};
use crate::error::StepError;
use crate::layer::LayerSink;
use crate::rootfs::MergedView;
use crate::unpacked_digests::UnpackedDigests;

/// Where COPY reads from.
pub enum CopyFrom<'a> {
    /// The build context.
    Context {
        /// The context.
        context: &'a Context,
        /// Its stat cache.
        stat_cache: &'a mut StatCache,
    },
    /// The filesystem of another stage or an image.
    Image {
        /// Its merged layers.
        view: &'a MergedView,
        /// How to name it in messages.
        name: &'a str,
        /// Remembered content digests of its files (else every file is read).
        digests: Option<&'a UnpackedDigests<'a>>,
    },
}

/// One COPY/ADD as the planner sees it.
#[derive(Clone, Copy)]
pub struct CopySpec<'a> {
    /// The sources as written (after expansion).
    pub sources: &'a [Source],
    /// The destination as written (after expansion).
    pub dest: &'a str,
    /// The working directory relative destinations are joined to.
    pub workdir: &'a str,
    /// Owner from `--chown`, already resolved.
    pub owner: Option<(u32, u32)>,
    /// Permission bits from `--chmod`.
    pub chmod: Option<u32>,
    /// `--exclude` patterns.
    pub excludes: &'a [String],
    /// mtime clamp (SOURCE_DATE_EPOCH).
    pub clamp_mtime: Option<i64>,
}

/// One entry of the layer to write.
#[derive(Debug, Clone)]
enum Planned {
    /// A file, directory (itself only) or symlink on disk; `digest` is the
    /// content digest a regular file must still have when it is written.
    Disk {
        disk: PathBuf,
        digest: Option<Digest>,
    },
    /// A directory with no source (a parent that COPY creates or keeps).
    Dir(SyntheticDir),
    /// A file whose content is given (a heredoc).
    Bytes { data: Vec<u8>, meta: SyntheticDir },
}

/// What a COPY selected: the inputs of its cache key and the layer plan.
#[derive(Debug, Default)]
pub struct CopyPlan {
    /// Per source as written, the files it selected.
    pub files: BTreeMap<String, Vec<FileInput>>,
    /// Layer entries by sort key (path with `/` as NUL, so parents sort first).
    entries: BTreeMap<Vec<u8>, (String, Planned)>,
    /// Regular files selected and their bytes.
    pub file_count: u64,
    /// Bytes of those files.
    pub file_bytes: u64,
    /// Whether entries from disk keep their owners (COPY --from without
    /// --chown, as Docker does) instead of becoming root's or --chown's.
    pub keep_owners: bool,
}

fn sort_key(path: &str) -> Vec<u8> {
    path.bytes()
        .map(|b| if b == b'/' { 0 } else { b })
        .collect()
}

/// Cleans an absolute path into a relative one without leading slash.
fn clean_rel(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else if name.is_empty() {
        dir.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl CopyPlan {
    fn put(&mut self, dest: String, planned: Planned) {
        self.entries.insert(sort_key(&dest), (dest, planned));
    }

    fn has(&self, dest: &str) -> bool {
        self.entries.contains_key(&sort_key(dest))
    }

    /// Adds another plan's entries (they win on the same path) and files.
    pub fn merge(&mut self, other: CopyPlan) {
        self.entries.extend(other.entries);
        for (source, files) in other.files {
            self.files.entry(source).or_default().extend(files);
        }
        self.file_count += other.file_count;
        self.file_bytes += other.file_bytes;
    }

    /// Files the plan selected under `from`, filed under `source` instead.
    pub fn rename_source(&mut self, from: &str, source: &str) {
        if let Some(files) = self.files.remove(from) {
            self.files
                .entry(source.to_owned())
                .or_default()
                .extend(files);
        }
    }
}

/// Plans a COPY/ADD into a stage whose current filesystem is `image`.
pub fn plan_copy(
    from: &mut CopyFrom<'_>,
    spec: &CopySpec<'_>,
    image: &MergedView,
) -> Result<CopyPlan, StepError> {
    let mut plan = CopyPlan::default();
    let excludes = if spec.excludes.is_empty() {
        None
    } else {
        Some(
            stowage_dockerignore::PatternMatcher::new(spec.excludes.iter())
                .map_err(|e| StepError::Invalid(format!("invalid --exclude pattern: {e}")))?,
        )
    };
    let raw_dest = if spec.dest.starts_with('/') {
        spec.dest.to_owned()
    } else {
        format!("{}/{}", spec.workdir.trim_end_matches('/'), spec.dest)
    };
    let dest_marked_dir = raw_dest.ends_with('/') || raw_dest.ends_with("/.") || spec.dest == ".";
    // Resolve the destination through symlinks of the image, as writing into
    // the container would.
    let dest = resolve_dest(image, &clean_rel(&raw_dest));
    let dest_is_dir_in_image = image
        .resolve(&dest, true)
        .is_some_and(|found| found.meta.is_dir());

    // Collect every top-level match first: their number decides whether the
    // destination is a directory.
    struct Top {
        source: String,
        kind: TopKind,
    }
    enum TopKind {
        Context(stowage_context::Entry),
        Image(crate::rootfs::Found),
        Heredoc { name: String, content: String },
    }
    let mut tops: Vec<Top> = Vec::new();
    for source in spec.sources {
        match source {
            Source::Heredoc { name, content, .. } => tops.push(Top {
                source: format!("<<{name}"),
                kind: TopKind::Heredoc {
                    name: name.clone(),
                    content: content.clone(),
                },
            }),
            Source::Path { path } => match from {
                CopyFrom::Context { context, .. } => {
                    for entry in context.resolve(path)? {
                        tops.push(Top {
                            source: path.clone(),
                            kind: TopKind::Context(entry),
                        });
                    }
                }
                CopyFrom::Image { view, name, .. } => {
                    let found = resolve_in_image(view, path).ok_or_else(|| {
                        StepError::Invalid(format!("{path:?} not found in {name}"))
                    })?;
                    for item in found {
                        tops.push(Top {
                            source: path.clone(),
                            kind: TopKind::Image(item),
                        });
                    }
                }
            },
        }
    }
    let many = tops.len() > 1;
    plan.keep_owners = spec.owner.is_none() && matches!(from, CopyFrom::Image { .. });
    if many && !dest_marked_dir && !dest_is_dir_in_image {
        return Err(StepError::Invalid(format!(
            "when copying more than one source, the destination {:?} must be a directory and end with a /",
            spec.dest
        )));
    }
    let owner = spec.owner.unwrap_or((0, 0));
    let into_dir = dest_marked_dir || many || dest_is_dir_in_image;

    let mut files_by_source: BTreeMap<String, Vec<FileInput>> = BTreeMap::new();
    for top in tops {
        let files = files_by_source.entry(top.source.clone()).or_default();
        match top.kind {
            TopKind::Heredoc { name, content } => {
                let target = if into_dir {
                    join(&dest, &name)
                } else {
                    dest.clone()
                };
                let mode = spec.chmod.unwrap_or(0o644);
                files.push(FileInput {
                    path: name,
                    file_type: FileType::File,
                    mode,
                    uid: owner.0,
                    gid: owner.1,
                    link: String::new(),
                    digest: Some(Digest::of(content.as_bytes())),
                });
                plan.file_count += 1;
                plan.file_bytes += content.len() as u64;
                plan.put(
                    target,
                    Planned::Bytes {
                        data: content.into_bytes(),
                        meta: SyntheticDir {
                            mode,
                            uid: owner.0,
                            gid: owner.1,
                            mtime: spec.clamp_mtime.unwrap_or(0),
                        },
                    },
                );
            }
            TopKind::Context(entry) => {
                let CopyFrom::Context {
                    context,
                    stat_cache,
                } = from
                else {
                    continue;
                };
                let top_disk = fs::canonicalize(context.path_of(&entry.rel))
                    .map_err(StepError::io("reading", context.path_of(&entry.rel)))?;
                if entry.kind == EntryKind::Dir {
                    let dest_dir = dest.clone();
                    let top_rel = entry.rel.clone();
                    let mut selected: Vec<(String, stowage_context::Entry)> = Vec::new();
                    context.walk(&entry, &mut |child| {
                        let within = child
                            .rel
                            .strip_prefix(&top_rel)
                            .map(|r| r.trim_start_matches('/'))
                            .unwrap_or(&child.rel)
                            .to_owned();
                        if let Some(excludes) = &excludes
                            && !within.is_empty()
                            && excludes.matches(&within).unwrap_or(false)
                        {
                            return Ok(());
                        }
                        selected.push((within, child.clone()));
                        Ok(())
                    })?;
                    for (within, child) in selected {
                        let target = join(&dest_dir, &within);
                        let disk = if within.is_empty() {
                            top_disk.clone()
                        } else {
                            top_disk.join(&within)
                        };
                        let input = context_input(context, stat_cache, &child, spec, owner)?;
                        if input.file_type == FileType::File {
                            plan.file_count += 1;
                            plan.file_bytes += child.size;
                        }
                        let digest = input.digest;
                        files.push(input);
                        if within.is_empty() && plan.has(&target) {
                            continue;
                        }
                        if within.is_empty()
                            && let Some(existing) = image.resolve(&target, true)
                        {
                            plan.put(target, Planned::Dir(existing_dir(&existing.meta)));
                            continue;
                        }
                        if within.is_empty() && !target.is_empty() {
                            // Only the directory's contents are copied: the
                            // destination is made as a new directory, as
                            // Docker makes it (0755, the --chown owner).
                            plan.put(target, Planned::Dir(new_dest_dir(spec, owner)));
                            continue;
                        }
                        plan.put(target, Planned::Disk { disk, digest });
                    }
                } else {
                    let target = if into_dir {
                        join(&dest, basename(&entry.rel))
                    } else {
                        dest.clone()
                    };
                    let input = context_input(context, stat_cache, &entry, spec, owner)?;
                    plan.file_count += 1;
                    plan.file_bytes += entry.size;
                    let digest = input.digest;
                    files.push(input);
                    plan.put(
                        target,
                        Planned::Disk {
                            disk: top_disk,
                            digest,
                        },
                    );
                }
            }
            TopKind::Image(found) => {
                let digests = match from {
                    CopyFrom::Image { digests, .. } => *digests,
                    CopyFrom::Context { .. } => None,
                };
                if found.meta.is_dir() {
                    let CopyFrom::Image { view, .. } = from else {
                        continue;
                    };
                    let mut stack = vec![(found.path.clone(), String::new())];
                    let mut selected = Vec::new();
                    while let Some((dir, within_dir)) = stack.pop() {
                        for child in view.list_dir(&dir) {
                            let name = basename(&child.path).to_owned();
                            let within = join(&within_dir, &name);
                            if let Some(excludes) = &excludes
                                && excludes.matches(&within).unwrap_or(false)
                            {
                                continue;
                            }
                            if child.meta.is_dir() {
                                stack.push((child.path.clone(), within.clone()));
                            }
                            selected.push((within, child));
                        }
                    }
                    selected.sort_by_key(|a| sort_key(&a.0));
                    // The destination directory itself takes the source's metadata.
                    let dir_input = image_input(&found, "", spec, owner, digests)?;
                    files.push(dir_input);
                    if !plan.has(&dest) {
                        match image.resolve(&dest, true) {
                            Some(existing) => {
                                plan.put(dest.clone(), Planned::Dir(existing_dir(&existing.meta)))
                            }
                            None if !dest.is_empty() => {
                                plan.put(dest.clone(), Planned::Dir(new_dest_dir(spec, owner)))
                            }
                            None => plan.put(
                                dest.clone(),
                                Planned::Disk {
                                    disk: found.disk.clone(),
                                    digest: None,
                                },
                            ),
                        }
                    }
                    for (within, child) in selected {
                        let input = image_input(&child, &within, spec, owner, digests)?;
                        if input.file_type == FileType::File {
                            plan.file_count += 1;
                            plan.file_bytes += child.meta.len();
                        }
                        let digest = input.digest;
                        files.push(input);
                        plan.put(
                            join(&dest, &within),
                            Planned::Disk {
                                disk: child.disk,
                                digest,
                            },
                        );
                    }
                } else {
                    let target = if into_dir {
                        join(&dest, basename(&found.path))
                    } else {
                        dest.clone()
                    };
                    let input = image_input(&found, basename(&found.path), spec, owner, digests)?;
                    plan.file_count += 1;
                    plan.file_bytes += found.meta.len();
                    let digest = input.digest;
                    files.push(input);
                    plan.put(
                        target,
                        Planned::Disk {
                            disk: found.disk,
                            digest,
                        },
                    );
                }
            }
        }
    }

    plan.files = files_by_source;

    // Every parent of every entry is in the layer, as the image has it or as
    // a new directory.
    let paths: Vec<String> = plan.entries.values().map(|(p, _)| p.clone()).collect();
    for path in paths {
        let mut parent = path.as_str();
        while let Some((head, _)) = parent.rsplit_once('/') {
            parent = head;
            if plan.has(parent) {
                // Its own parents are handled when its path comes up.
                break;
            }
            let planned = match image.resolve(parent, true) {
                Some(existing) if existing.meta.is_dir() => {
                    Planned::Dir(existing_dir(&existing.meta))
                }
                _ => Planned::Dir(SyntheticDir {
                    mode: 0o755,
                    uid: owner.0,
                    gid: owner.1,
                    mtime: spec.clamp_mtime.unwrap_or(0),
                }),
            };
            plan.put(parent.to_owned(), planned);
        }
    }
    Ok(plan)
}

/// Resolves the destination's existing prefix through the image's symlinks.
fn resolve_dest(image: &MergedView, dest: &str) -> String {
    if dest.is_empty() {
        return String::new();
    }
    if let Some(found) = image.resolve(dest, true) {
        return found.path;
    }
    match dest.rsplit_once('/') {
        Some((parent, name)) => join(&resolve_dest(image, parent), name),
        None => dest.to_owned(),
    }
}

/// Resolves a `COPY --from` source path (with wildcards in its last component).
fn resolve_in_image(view: &MergedView, path: &str) -> Option<Vec<crate::rootfs::Found>> {
    let clean = clean_rel(path);
    let (dir, last) = match clean.rsplit_once('/') {
        Some((dir, last)) => (dir.to_owned(), last.to_owned()),
        None => (String::new(), clean.clone()),
    };
    if stowage_context::has_meta(&last) {
        let dir_found = view.resolve(&dir, true)?;
        let mut out: Vec<_> = view
            .list_dir(&dir_found.path)
            .into_iter()
            .filter(|f| stowage_context::match_component(&last, basename(&f.path)).unwrap_or(false))
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        return (!out.is_empty()).then_some(out);
    }
    view.resolve(&clean, true).map(|found| vec![found])
}

/// A directory COPY creates: the destination of a directory's contents, or a
/// missing parent.
fn new_dest_dir(spec: &CopySpec<'_>, owner: (u32, u32)) -> SyntheticDir {
    SyntheticDir {
        mode: 0o755,
        uid: owner.0,
        gid: owner.1,
        mtime: spec.clamp_mtime.unwrap_or(0),
    }
}

fn existing_dir(meta: &fs::Metadata) -> SyntheticDir {
    SyntheticDir {
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
    }
}

fn applied_mode(kind: FileType, mode: u32, chmod: Option<u32>) -> u32 {
    match (kind, chmod) {
        (FileType::File | FileType::Dir, Some(chmod)) => chmod,
        _ => mode & 0o7777,
    }
}

fn context_input(
    context: &Context,
    stat_cache: &mut StatCache,
    entry: &stowage_context::Entry,
    spec: &CopySpec<'_>,
    owner: (u32, u32),
) -> Result<FileInput, StepError> {
    let (file_type, link, digest) = match &entry.kind {
        EntryKind::File => (
            FileType::File,
            String::new(),
            Some(context.content_digest(entry, stat_cache)?),
        ),
        EntryKind::Dir => (FileType::Dir, String::new(), None),
        EntryKind::Symlink(target) => (FileType::Symlink, target.clone(), None),
        EntryKind::Special => (FileType::File, String::new(), None),
    };
    Ok(FileInput {
        path: entry.rel.clone(),
        file_type,
        mode: applied_mode(file_type, entry.permissions(), spec.chmod),
        uid: owner.0,
        gid: owner.1,
        link,
        digest,
    })
}

fn image_input(
    found: &crate::rootfs::Found,
    within: &str,
    spec: &CopySpec<'_>,
    owner: (u32, u32),
    digests: Option<&UnpackedDigests<'_>>,
) -> Result<FileInput, StepError> {
    let file_type = if found.meta.is_dir() {
        FileType::Dir
    } else if found.meta.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::File
    };
    let link = if file_type == FileType::Symlink {
        fs::read_link(&found.disk)
            .map_err(StepError::io("reading", &found.disk))?
            .to_string_lossy()
            .into_owned()
    } else {
        String::new()
    };
    let digest = if file_type == FileType::File {
        Some(match digests {
            Some(digests) => digests.digest(&found.disk, &found.meta)?,
            None => stowage_context::hash_file(&found.disk, found.meta.len())
                .map_err(StepError::Context)?,
        })
    } else {
        None
    };
    Ok(FileInput {
        path: within.to_owned(),
        file_type,
        mode: applied_mode(file_type, found.meta.mode(), spec.chmod),
        uid: spec.owner.map_or(found.meta.uid(), |_| owner.0),
        gid: spec.owner.map_or(found.meta.gid(), |_| owner.1),
        link,
        digest,
    })
}

/// Writes the planned entries as a layer blob in the store.
pub fn write_copy_layer(
    store: &Store,
    plan: &CopyPlan,
    spec: &CopySpec<'_>,
    compression: stowage_archive::Compression,
) -> Result<LayerInfo, StepError> {
    let owner = spec.owner.unwrap_or((0, 0));
    let options = LayerWriterOptions {
        clamp_mtime: spec.clamp_mtime,
        overlay_upper: false,
        chown: (!plan.keep_owners).then_some(Ownership {
            uid: owner.0,
            gid: owner.1,
        }),
        chmod: spec.chmod,
        exclude: Vec::new(),
    };
    let sink = LayerSink::new(store, compression)?;
    let mut writer = LayerEntryWriter::new(&options, sink)?;
    for (path, planned) in plan.entries.values() {
        match planned {
            Planned::Disk { disk, digest } => {
                let written = writer.add_path(path, disk)?;
                if let (Some(expected), Some(written)) = (digest, written)
                    && *expected != written
                {
                    return Err(StepError::Context(stowage_context::ContextError::Changed {
                        path: disk.clone(),
                    }));
                }
            }
            Planned::Dir(dir) => writer.add_dir(path, *dir)?,
            Planned::Bytes { data, meta } => {
                writer.add_bytes(path, *meta, data.len() as u64, data.as_slice())?
            }
        }
    }
    let (sink, _) = writer.finish()?;
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn planned_dir_mode(plan: &CopyPlan, path: &str) -> Option<u32> {
        match plan.entries.get(&sort_key(path)) {
            Some((_, Planned::Dir(dir))) => Some(dir.mode),
            _ => None,
        }
    }

    /// `COPY d /new`: the contents of `d` go into a new `/new` made 0755 (and
    /// owned by `--chown`), not with `d`'s own mode, as Docker's builders do;
    /// an existing destination keeps its metadata.
    /// A file edited between planning (hashing) and writing the layer, even
    /// keeping its size, fails the step: no layer mixes old and new content.
    #[test]
    fn a_file_changed_while_the_layer_is_written_is_an_error() {
        let ctx = tempfile::tempdir().unwrap();
        fs::write(ctx.path().join("app.py"), "print(1)\n").unwrap();
        let store_dir = tempfile::tempdir().unwrap();
        let store = stowage_store::Store::open(store_dir.path()).unwrap();
        let image = MergedView::new(Vec::new());
        let context = Context::open(ctx.path(), Box::new(stowage_context::KeepAll)).unwrap();
        let mut stat_cache = StatCache::new();
        let sources = [Source::Path {
            path: "app.py".into(),
        }];
        let spec = CopySpec {
            sources: &sources,
            dest: "/app/",
            workdir: "/",
            owner: None,
            chmod: None,
            excludes: &[],
            clamp_mtime: None,
        };
        let mut from = CopyFrom::Context {
            context: &context,
            stat_cache: &mut stat_cache,
        };
        let plan = plan_copy(&mut from, &spec, &image).unwrap();
        fs::write(ctx.path().join("app.py"), "print(2)\n").unwrap();
        let error = write_copy_layer(
            &store,
            &plan,
            &spec,
            stowage_archive::Compression::Gzip { level: 1 },
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("changed while the build was reading it"),
            "{error}"
        );
    }

    #[test]
    fn directory_source_makes_its_destination_0755() {
        let ctx = tempfile::tempdir().unwrap();
        fs::create_dir(ctx.path().join("d")).unwrap();
        fs::write(ctx.path().join("d/f"), "f").unwrap();
        fs::set_permissions(ctx.path().join("d"), fs::Permissions::from_mode(0o700)).unwrap();
        let lower = tempfile::tempdir().unwrap();
        fs::create_dir(lower.path().join("existing")).unwrap();
        fs::set_permissions(
            lower.path().join("existing"),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        let image = MergedView::new(vec![lower.path().to_path_buf()]);
        let context = Context::open(ctx.path(), Box::new(stowage_context::KeepAll)).unwrap();
        let mut stat_cache = StatCache::new();
        let sources = [Source::Path { path: "d".into() }];
        for (dest, owner, want) in [
            ("/new", None, (0o755, 0, 0)),
            ("/chowned/", Some((1000, 100)), (0o755, 1000, 100)),
            ("/existing", None, (0o750, 0, 0)),
        ] {
            let spec = CopySpec {
                sources: &sources,
                dest,
                workdir: "/",
                owner,
                chmod: None,
                excludes: &[],
                clamp_mtime: None,
            };
            let mut from = CopyFrom::Context {
                context: &context,
                stat_cache: &mut stat_cache,
            };
            let plan = plan_copy(&mut from, &spec, &image).unwrap();
            let target = dest.trim_matches('/');
            assert_eq!(planned_dir_mode(&plan, target), Some(want.0), "{dest}");
            let Some((_, Planned::Dir(dir))) = plan.entries.get(&sort_key(target)) else {
                panic!("{dest}: not a planned directory");
            };
            assert_eq!((dir.uid, dir.gid), (want.1, want.2), "{dest}");
            assert!(plan.has(&format!("{target}/f")), "{dest}: the contents");
        }
    }

    /// `COPY --from` without `--chown` keeps the owners the source stage's
    /// files have (Docker's classic builder and BuildKit both do); with
    /// `--chown`, and from the context, everything is re-owned.
    #[test]
    fn copy_from_an_image_keeps_owners_unless_chown() {
        use std::os::unix::fs::chown;
        let lower = tempfile::tempdir().unwrap();
        fs::create_dir(lower.path().join("e")).unwrap();
        fs::write(lower.path().join("e/g"), "g").unwrap();
        chown(lower.path().join("e"), Some(1000), Some(1001)).unwrap();
        chown(lower.path().join("e/g"), Some(1002), Some(1003)).unwrap();
        let source = MergedView::new(vec![lower.path().to_path_buf()]);
        let image = MergedView::new(Vec::new());
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store::open(store_dir.path()).unwrap();
        let sources = [Source::Path { path: "/e".into() }];
        for (owner, want_file) in [(None, (1002, 1003)), (Some((7, 8)), (7, 8))] {
            let spec = CopySpec {
                sources: &sources,
                dest: "/copied/",
                workdir: "/",
                owner,
                chmod: None,
                excludes: &[],
                clamp_mtime: None,
            };
            let mut from = CopyFrom::Image {
                view: &source,
                name: "--from=test",
                digests: None,
            };
            let plan = plan_copy(&mut from, &spec, &image).unwrap();
            assert_eq!(plan.keep_owners, owner.is_none());
            let inputs = &plan.files["/e"];
            let file = inputs.iter().find(|f| f.path == "g").unwrap();
            assert_eq!((file.uid, file.gid), want_file, "cache key owner");
            let layer =
                write_copy_layer(&store, &plan, &spec, stowage_archive::Compression::None).unwrap();
            let blob = store.open_blob(&layer.blob_digest).unwrap();
            let mut archive = tar::Archive::new(blob);
            let mut owners = BTreeMap::new();
            for entry in archive.entries().unwrap() {
                let entry = entry.unwrap();
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                let header = entry.header();
                owners.insert(
                    path.trim_end_matches('/').to_owned(),
                    (header.uid().unwrap(), header.gid().unwrap()),
                );
            }
            let want_file = (u64::from(want_file.0), u64::from(want_file.1));
            assert_eq!(owners.get("copied/g"), Some(&want_file), "{owners:?}");
            // the new destination directory is root's (or --chown's)
            let want_dest = owner.map_or((0, 0), |(u, g)| (u64::from(u), u64::from(g)));
            assert_eq!(owners.get("copied"), Some(&want_dest), "{owners:?}");
        }
    }
}
