//! The build context, read in place: no copy and no tar of it is ever made.
//!
//! A [`Context`] is a directory plus a filter (the `.dockerignore` rules). It
//! resolves COPY/ADD sources with Docker's wildcard rules, refuses sources that
//! leave the context, walks the selected files in sorted order, and computes
//! their content digests through a [`StatCache`] so an unchanged file is never
//! read twice.

mod glob;
mod prefetch;
mod statcache;

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use stowage_digest::{Digest, Hasher};

pub use glob::{PatternError, has_meta, match_component};
pub use statcache::{StatCache, StatKey};

/// Errors from reading the build context. Each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// An I/O error on a path inside the context.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A source that leaves the context.
    #[error(
        "{source_path:?} is outside the build context: COPY and ADD can only read files inside it"
    )]
    OutsideContext {
        /// The source as written.
        source_path: String,
    },
    /// A source that matches nothing.
    #[error(
        "{source_path:?} not found in the build context{}",
        similar_hint(similar)
    )]
    NotFound {
        /// The source as written.
        source_path: String,
        /// Context paths with similar names.
        similar: Vec<String>,
    },
    /// A source excluded by .dockerignore.
    #[error("{source_path:?} is excluded by .dockerignore")]
    Excluded {
        /// The source as written.
        source_path: String,
    },
    /// A bad wildcard.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// The ignore filter failed.
    #[error("applying .dockerignore to {path:?}: {message}")]
    Filter {
        /// The context path being checked.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A file changed while the build was reading it.
    #[error(
        "{path}: the file changed while the build was reading it; build again once it is stable"
    )]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// Too many symlinks while resolving a source.
    #[error("{source_path:?}: too many levels of symbolic links")]
    SymlinkLoop {
        /// The source as written.
        source_path: String,
    },
}

fn similar_hint(similar: &[String]) -> String {
    if similar.is_empty() {
        String::new()
    } else {
        format!("; similar names: {}", similar.join(", "))
    }
}

/// Decides which context paths the build may see (the `.dockerignore` rules).
pub trait PathFilter: Send + Sync {
    /// Whether `rel` (relative to the context root, `/`-separated, no leading
    /// slash) is excluded.
    fn is_excluded(&self, rel: &str) -> Result<bool, String>;
    /// Whether an excluded directory can be skipped whole, because no
    /// exception pattern can bring back anything below it.
    fn can_skip_excluded_dir(&self, rel: &str) -> bool;
}

/// A filter that keeps everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeepAll;

impl PathFilter for KeepAll {
    fn is_excluded(&self, _rel: &str) -> Result<bool, String> {
        Ok(false)
    }
    fn can_skip_excluded_dir(&self, _rel: &str) -> bool {
        true
    }
}

/// What kind of file an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, with its target as written.
    Symlink(String),
    /// A fifo, socket or device node; Docker does not send these.
    Special,
}

/// One file of the context, with the metadata COPY and the cache use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path relative to the context root, `/`-separated; empty for the root.
    pub rel: String,
    /// The kind of file.
    pub kind: EntryKind,
    /// The full `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (regular files).
    pub size: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds part.
    pub mtime_nsec: i64,
    /// What the stat cache compares.
    pub stat: StatKey,
}

impl Entry {
    fn from_metadata(rel: String, meta: &Metadata, link_target: Option<String>) -> Self {
        let file_type = meta.file_type();
        let kind = if file_type.is_symlink() {
            EntryKind::Symlink(link_target.unwrap_or_default())
        } else if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_file() {
            EntryKind::File
        } else {
            EntryKind::Special
        };
        Self {
            rel,
            kind,
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            stat: StatKey::from_metadata(meta),
        }
    }

    /// The permission bits, including setuid, setgid and sticky.
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }
}

/// How much of the context the build could see, as the seed's
/// `Sending build context to Docker daemon 10.51MB` line reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Regular files and symlinks not excluded.
    pub files: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// A build context directory and its ignore rules.
pub struct Context {
    root: PathBuf,
    filter: Box<dyn PathFilter>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("root", &self.root).finish()
    }
}

const MAX_SYMLINK_HOPS: usize = 40;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Context {
    /// Opens `root` as a build context filtered by `filter`.
    pub fn open(root: &Path, filter: Box<dyn PathFilter>) -> Result<Self, ContextError> {
        let root = fs::canonicalize(root).map_err(io_err(root))?;
        let meta = fs::metadata(&root).map_err(io_err(&root))?;
        if !meta.is_dir() {
            return Err(ContextError::Io {
                path: root,
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Ok(Self { root, filter })
    }

    /// The context directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The on-disk path of a context-relative path.
    pub fn path_of(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    fn excluded(&self, rel: &str) -> Result<bool, ContextError> {
        if rel.is_empty() {
            return Ok(false);
        }
        self.filter
            .is_excluded(rel)
            .map_err(|message| ContextError::Filter {
                path: rel.to_owned(),
                message,
            })
    }

    fn entry_at(&self, rel: &str) -> Result<Option<Entry>, ContextError> {
        let path = self.path_of(rel);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let target = if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io_err(&path))?;
            Some(target.to_string_lossy().into_owned())
        } else {
            None
        };
        Ok(Some(Entry::from_metadata(rel.to_owned(), &meta, target)))
    }

    /// A digest of what a COPY of `sources` selects, from metadata alone: each selected
    /// entry's path, type, link target, mode, owner, size, device, inode, mtime and ctime,
    /// in walk order. Equal fingerprints mean the same selection with unchanged files, under
    /// the same assumption as the [`StatCache`] (content never changes without the ctime
    /// changing), so a build can reuse the step key it computed for it last time without
    /// reading or hashing anything.
    pub fn selection_fingerprint(&self, sources: &[&str]) -> Result<Digest, ContextError> {
        self.selection_fingerprint_with(sources, &mut |_| {})
    }

    /// [`Context::selection_fingerprint`], also showing `seen` every selected entry.
    pub fn selection_fingerprint_with(
        &self,
        sources: &[&str],
        seen: &mut dyn FnMut(&Entry),
    ) -> Result<Digest, ContextError> {
        // Each directory's listing digest (its visible children's metadata) is computed on
        // the prefetch threads; this walk only chains them, in walk order.
        let mut hasher = Hasher::new();
        hasher.update(b"stowage selection fingerprint v2\0");
        for source in sources {
            hasher.update(source.as_bytes());
            hasher.update(b"\0");
            for top in self.resolve(source)? {
                hash_entry_metadata(&mut hasher, &top);
                seen(&top);
                if top.kind == EntryKind::Dir {
                    self.walk_from(
                        &top.rel,
                        &mut |entry| {
                            seen(entry);
                            Ok(())
                        },
                        &mut |dir, digest| {
                            hasher.update(b"\x02");
                            hasher.update(dir.as_bytes());
                            hasher.update(b"\0");
                            hasher.update(digest.as_bytes());
                        },
                    )?;
                }
            }
            hasher.update(b"\x01");
        }
        Ok(hasher.finish())
    }

    /// Counts what the build can see: every file not excluded.
    pub fn summary(&self) -> Result<Summary, ContextError> {
        let mut summary = Summary::default();
        self.walk_from(
            "",
            &mut |entry| {
                if !matches!(entry.kind, EntryKind::Dir) {
                    summary.files += 1;
                    summary.bytes = summary.bytes.saturating_add(entry.size);
                }
                Ok(())
            },
            &mut |_, _| {},
        )?;
        Ok(summary)
    }

    /// Resolves one COPY/ADD source to the context entries it names, sorted.
    ///
    /// The source is cleaned (a leading `/` and trailing slashes are
    /// ignored); `..` that would leave the context is an error. Wildcards
    /// follow Go's `filepath.Match` per path component. A symlink named by
    /// the source (or met on the way) is followed inside the context, and
    /// one that points out of it is an error.
    pub fn resolve(&self, source: &str) -> Result<Vec<Entry>, ContextError> {
        let components = clean_source(source)?;
        if components.is_empty() {
            // The context root itself.
            let root = self.entry_at("")?.ok_or_else(|| ContextError::NotFound {
                source_path: source.to_owned(),
                similar: Vec::new(),
            })?;
            return Ok(vec![root]);
        }
        let mut candidates = vec![String::new()];
        for (index, component) in components.iter().enumerate() {
            let last = index + 1 == components.len();
            let mut next = Vec::new();
            for dir in &candidates {
                let dir = self.follow(dir, source)?;
                if has_meta(component) {
                    let dir_path = self.path_of(&dir);
                    let Ok(read) = fs::read_dir(&dir_path) else {
                        continue;
                    };
                    let mut names = Vec::new();
                    for item in read {
                        let item = item.map_err(io_err(&dir_path))?;
                        names.push(item.file_name().to_string_lossy().into_owned());
                    }
                    names.sort();
                    for name in names {
                        if match_component(component, &name)? {
                            next.push(join_rel(&dir, &name));
                        }
                    }
                } else {
                    let rel = join_rel(&dir, component);
                    if self.path_of(&rel).symlink_metadata().is_ok() {
                        next.push(rel);
                    }
                }
            }
            if !last {
                next.retain(|rel| self.path_of(rel).is_dir());
            }
            candidates = next;
        }
        let mut entries = Vec::new();
        let mut excluded_any = false;
        for rel in candidates {
            if self.excluded(&rel)? {
                excluded_any = true;
                continue;
            }
            let followed = self.follow(&rel, source)?;
            if let Some(entry) = self.entry_at(&followed)? {
                // Keep the name the user asked for; the content is the target's.
                entries.push(Entry { rel, ..entry });
            }
        }
        if entries.is_empty() {
            if excluded_any {
                return Err(ContextError::Excluded {
                    source_path: source.to_owned(),
                });
            }
            return Err(ContextError::NotFound {
                source_path: source.to_owned(),
                similar: self.similar_names(&components),
            });
        }
        entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(entries)
    }

    /// Follows symlinks at `rel` (and its parents) inside the context.
    /// Returns the resolved relative path; errors if it leaves the context.
    fn follow(&self, rel: &str, source: &str) -> Result<String, ContextError> {
        let mut pending: Vec<String> = rel
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_owned)
            .collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(component) = pending.pop() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    if resolved.pop().is_none() {
                        return Err(ContextError::OutsideContext {
                            source_path: source.to_owned(),
                        });
                    }
                    continue;
                }
                _ => {}
            }
            resolved.push(component);
            let current = resolved.join("/");
            let path = self.path_of(&current);
            let Ok(meta) = path.symlink_metadata() else {
                // Missing: the caller reports it.
                continue;
            };
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(ContextError::SymlinkLoop {
                        source_path: source.to_owned(),
                    });
                }
                let target = fs::read_link(&path).map_err(io_err(&path))?;
                let target = target.to_string_lossy().into_owned();
                resolved.pop();
                if target.starts_with('/') {
                    // Absolute links are not the context's: they point out.
                    return Err(ContextError::OutsideContext {
                        source_path: source.to_owned(),
                    });
                }
                for part in target.split('/').rev().filter(|c| !c.is_empty()) {
                    pending.push(part.to_owned());
                }
            }
        }
        Ok(resolved.join("/"))
    }

    fn similar_names(&self, components: &[String]) -> Vec<String> {
        let wanted = components.join("/");
        let wanted_base = components.last().cloned().unwrap_or_default();
        let mut scored: Vec<(usize, String)> = Vec::new();
        let _ = self.walk_from(
            "",
            &mut |entry| {
                let base = entry.rel.rsplit('/').next().unwrap_or(&entry.rel);
                let distance =
                    edit_distance(&wanted_base, base).min(edit_distance(&wanted, &entry.rel));
                let limit = (wanted_base.chars().count() / 3).max(1);
                if distance <= limit
                    || base.eq_ignore_ascii_case(&wanted_base)
                    || entry.rel.ends_with(&format!("/{wanted}"))
                {
                    scored.push((distance, entry.rel.clone()));
                }
                Ok(())
            },
            &mut |_, _| {},
        );
        scored.sort();
        scored.into_iter().take(5).map(|(_, rel)| rel).collect()
    }

    /// Calls `visit` for `top` and, if it is a directory, everything below it
    /// that the filter keeps, in bytewise-sorted path order (parents first).
    /// Symlinks are reported, never followed.
    pub fn walk(
        &self,
        top: &Entry,
        visit: &mut dyn FnMut(&Entry) -> Result<(), ContextError>,
    ) -> Result<(), ContextError> {
        visit(top)?;
        if top.kind == EntryKind::Dir {
            // The entry may be a followed symlink: walk the real directory but
            // report paths under the name the caller holds.
            self.walk_from(&top.rel, visit, &mut |_, _| {})?;
        }
        Ok(())
    }

    fn walk_from(
        &self,
        rel: &str,
        visit: &mut dyn FnMut(&Entry) -> Result<(), ContextError>,
        visit_listing: &mut dyn FnMut(&str, &Digest),
    ) -> Result<(), ContextError> {
        // One thread more than there are cores: when a thread is preempted or its last
        // subtree is big, the others still keep every core busy (measured: 2 cores, 3
        // threads gave the steadiest and fastest walk of a 20,000-file context).
        // The count is asked once: the standard library reads cgroup files on each call.
        static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let threads = *THREADS.get_or_init(|| {
            std::thread::available_parallelism().map_or(1, |n| n.get().saturating_add(1).min(8))
        });
        let mut listings = prefetch::prefetch_listings(self, rel, threads);
        self.walk_children(rel, visit, visit_listing, &mut listings)
    }

    fn walk_children(
        &self,
        rel: &str,
        visit: &mut dyn FnMut(&Entry) -> Result<(), ContextError>,
        visit_listing: &mut dyn FnMut(&str, &Digest),
        listings: &mut HashMap<String, prefetch::ListingResult>,
    ) -> Result<(), ContextError> {
        // Listings come ready from the parallel prefetch; one it did not read (it changed
        // since) is read now.
        let listing = listings
            .remove(rel)
            .unwrap_or_else(|| self.read_listing(rel))?;
        visit_listing(rel, &listing.visible_digest);
        for child in listing.children {
            if child.excluded {
                // An exception may bring back something below an excluded directory.
                if self.descends_into(&child) {
                    self.walk_children(&child.entry.rel, visit, visit_listing, listings)?;
                }
                continue;
            }
            if child.entry.kind == EntryKind::Special {
                continue;
            }
            visit(&child.entry)?;
            if child.entry.kind == EntryKind::Dir {
                self.walk_children(&child.entry.rel, visit, visit_listing, listings)?;
            }
        }
        Ok(())
    }

    /// The sha256 of a regular file's content, through `cache`: a file whose
    /// (dev, inode, size, mtime, ctime) did not change is not read.
    pub fn content_digest(
        &self,
        entry: &Entry,
        cache: &mut StatCache,
    ) -> Result<Digest, ContextError> {
        if let Some(digest) = cache.lookup(&entry.rel, &entry.stat) {
            return Ok(digest);
        }
        let path = self.path_of(&entry.rel);
        let digest = hash_file(&path, entry.size)?;
        // Stat again: a file modified while it was hashed is not cached.
        let after = fs::metadata(&path).map_err(io_err(&path))?;
        if StatKey::from_metadata(&after) != entry.stat {
            return Err(ContextError::Changed { path });
        }
        cache.insert(entry.rel.clone(), entry.stat, digest);
        Ok(digest)
    }

    /// Opens a regular file of the context for reading.
    pub fn open_file(&self, rel: &str) -> Result<File, ContextError> {
        let path = self.path_of(rel);
        File::open(&path).map_err(io_err(&path))
    }
}

impl Context {
    /// Reads the context-relative directory `dir`: stats each child relative to it, sorts
    /// them by name bytes, applies the ignore rules and hashes the visible children's
    /// metadata. Children deleted in between are left out. (Run on the prefetch threads.)
    pub(crate) fn read_listing(&self, dir: &str) -> prefetch::ListingResult {
        let dir_path = self.path_of(dir);
        let read = fs::read_dir(&dir_path).map_err(io_err(&dir_path))?;
        let mut named: Vec<(std::ffi::OsString, Metadata)> = Vec::new();
        for item in read {
            let item = item.map_err(io_err(&dir_path))?;
            match item.metadata() {
                Ok(meta) => named.push((item.file_name(), meta)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&item.path())(e)),
            }
        }
        named.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
        let mut children = Vec::with_capacity(named.len());
        let mut visible = Hasher::new();
        for (name, meta) in named {
            let rel = join_rel(dir, &name.to_string_lossy());
            let excluded = self.excluded(&rel)?;
            let target = if meta.file_type().is_symlink() {
                let path = dir_path.join(&name);
                match fs::read_link(&path) {
                    Ok(target) => Some(target.to_string_lossy().into_owned()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&path)(e)),
                }
            } else {
                None
            };
            let entry = Entry::from_metadata(rel, &meta, target);
            if !excluded && entry.kind != EntryKind::Special {
                hash_entry_metadata(&mut visible, &entry);
            }
            children.push(prefetch::Child { entry, excluded });
        }
        Ok(prefetch::Listing {
            children,
            visible_digest: visible.finish(),
        })
    }

    /// Whether a walk goes below `child`.
    pub(crate) fn descends_into(&self, child: &prefetch::Child) -> bool {
        child.entry.kind == EntryKind::Dir
            && (!child.excluded || !self.filter.can_skip_excluded_dir(&child.entry.rel))
    }
}

/// Feeds one entry's metadata into a selection fingerprint.
fn hash_entry_metadata(hasher: &mut Hasher, entry: &Entry) {
    hasher.update(entry.rel.as_bytes());
    match &entry.kind {
        EntryKind::File => hasher.update(b"\0f"),
        EntryKind::Dir => hasher.update(b"\0d"),
        EntryKind::Special => hasher.update(b"\0s"),
        EntryKind::Symlink(target) => {
            hasher.update(b"\0l");
            hasher.update(target.as_bytes());
            hasher.update(b"\0");
        }
    }
    let mut fields = [0u8; 4 * 3 + 8 * 3 + 16 * 2];
    let (small, times) = fields.split_at_mut(4 * 3 + 8 * 3);
    small[0..4].copy_from_slice(&entry.mode.to_le_bytes());
    small[4..8].copy_from_slice(&entry.uid.to_le_bytes());
    small[8..12].copy_from_slice(&entry.gid.to_le_bytes());
    small[12..20].copy_from_slice(&entry.stat.size.to_le_bytes());
    small[20..28].copy_from_slice(&entry.stat.dev.to_le_bytes());
    small[28..36].copy_from_slice(&entry.stat.ino.to_le_bytes());
    times[0..16].copy_from_slice(&entry.stat.mtime_ns.to_le_bytes());
    times[16..32].copy_from_slice(&entry.stat.ctime_ns.to_le_bytes());
    hasher.update(&fields);
}

/// Hashes a file, checking that its size is what was stat-ed.
pub fn hash_file(path: &Path, expected_size: u64) -> Result<Digest, ContextError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let read = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(path)(e)),
        };
        hasher.update(buf.get(..read).unwrap_or_default());
    }
    if hasher.len() != expected_size {
        return Err(ContextError::Changed {
            path: path.to_path_buf(),
        });
    }
    Ok(hasher.finish())
}

fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Cleans a COPY source into components: `.` and empty components dropped,
/// `..` applied; leaving the context is an error.
fn clean_source(source: &str) -> Result<Vec<String>, ContextError> {
    let mut out: Vec<String> = Vec::new();
    for component in source.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(ContextError::OutsideContext {
                        source_path: source.to_owned(),
                    });
                }
            }
            other => out.push(other.to_owned()),
        }
    }
    Ok(out)
}

/// Levenshtein distance, for "did you mean" hints.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let delete = previous.get(j + 1).copied().unwrap_or(0) + 1;
            let insert = current.get(j).copied().unwrap_or(0) + 1;
            current.push(substitute.min(delete).min(insert));
        }
        previous = current;
    }
    previous.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests;
