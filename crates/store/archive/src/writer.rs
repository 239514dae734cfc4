//! Deterministic layer writer: a directory tree on disk becomes a reproducible tar stream.
//!
//! The output depends only on the tree's content and metadata, never on inode numbers,
//! directory read order, atime/ctime or the machine:
//!
//! - order: depth first, siblings sorted bytewise by their *output* name, each directory
//!   emitted before its children (the order `filepath.Walk` gives Docker). The root itself is
//!   not emitted. Paths are relative (`etc/`, `etc/passwd`), directories end with `/`;
//! - headers: USTAR with mode, uid, gid, size, mtime in whole seconds (clamped to
//!   [`LayerWriterOptions::clamp_mtime`] when set, negative times become 0), empty
//!   uname/gname, no atime/ctime;
//! - PAX records (sorted by key) for names or link targets longer than 100 bytes (`path`,
//!   `linkpath`), numbers too large for the octal fields (`uid`, `gid`, `size`) and extended
//!   attributes (`SCHILY.xattr.<name>`); `trusted.overlay.*` and `security.selinux` are never
//!   stored;
//! - hardlinks: the first path (in output order) of an inode with several links is stored in
//!   full, later paths of the same `(dev, ino)` become hardlink entries pointing to it;
//! - sockets are skipped (tar cannot represent them, Docker skips them too).
//!
//! With [`LayerWriterOptions::overlay_upper`] the tree is read as an overlayfs upper dir: a
//! 0/0 character device becomes a `.wh.<name>` whiteout (empty regular file, mode 0, owner
//! 0:0) and a directory with an opaque xattr is followed by a `.wh..wh..opq` entry.
//!
//! Memory stays bounded: one file is read at a time and only the sorted sibling lists along
//! the current path, plus the paths of multiply-linked inodes, are held.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags};
use stowage_digest::{Digest, Hasher};
use tar::{EntryType, Header};

use crate::tar_path::{self, NormalizedPath};
use crate::{OPAQUE_WHITEOUT, TRUSTED_OPAQUE_XATTR, USER_OPAQUE_XATTR, WHITEOUT_PREFIX};

/// Owner applied to every entry (COPY `--chown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
}

/// How [`write_layer_tar`] turns a tree into a layer.
#[derive(Debug, Clone, Default)]
pub struct LayerWriterOptions {
    /// SOURCE_DATE_EPOCH: mtimes later than this are written as this value.
    pub clamp_mtime: Option<i64>,
    /// Read the tree as an overlayfs upper dir (whiteout devices and opaque xattrs become
    /// `.wh.` entries; `user.overlay.*` xattrs are dropped too).
    pub overlay_upper: bool,
    /// COPY `--chown`: owner of every entry.
    pub chown: Option<Ownership>,
    /// COPY `--chmod`: permission bits (`0o7777` at most) of every regular file and directory.
    pub chmod: Option<u32>,
    /// Relative paths left out of the layer, each with everything below it.
    pub exclude: Vec<String>,
}

/// What [`write_layer_tar`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TarStats {
    /// Number of entries (PAX extension headers not counted).
    pub entries: u64,
    /// Total bytes of regular-file content.
    pub file_bytes: u64,
}

/// Failure while writing a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerWriteError {
    #[error("cannot read {path}: {source}")]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing layer entry {entry} failed: {source}")]
    Output {
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: names starting with `.wh.` are reserved for whiteouts and cannot be archived")]
    ReservedWhiteoutName { path: PathBuf },
    #[error("{path}: extended attribute name {name:?} is not valid UTF-8")]
    NonUtf8XattrName { path: PathBuf, name: String },
    #[error("{path}: the file changed while it was archived (stat said {expected} bytes)")]
    FileChanged { path: PathBuf, expected: u64 },
    #[error("--chmod mode {mode:o} has bits outside 0o7777")]
    InvalidChmod { mode: u32 },
}

/// Largest value of an 8-byte octal field (uid, gid).
const MAX_OCTAL_ID: u64 = 0o7_777_777;
/// Largest value of the 12-byte octal size field.
const MAX_OCTAL_SIZE: u64 = 0o77_777_777_777;
/// Length of the USTAR name and linkname fields.
const NAME_FIELD_LEN: usize = 100;

/// One child of a directory being walked, with the name it gets in the layer.
struct Child {
    output_name: Vec<u8>,
    source_name: OsString,
    is_whiteout_device: bool,
}

/// A directory on the walk stack: its output path and its remaining sorted children.
struct DirFrame {
    output_path: Vec<u8>,
    source_path: Vec<u8>,
    disk_path: PathBuf,
    children: std::vec::IntoIter<Child>,
}

/// Writes the tree under `src_dir` as a layer tar into `out` and returns `out` after the
/// end-of-archive marker. See the module docs for the exact format.
pub fn write_layer_tar<W: Write>(
    src_dir: &Path,
    opts: &LayerWriterOptions,
    out: W,
) -> Result<(W, TarStats), LayerWriteError> {
    if let Some(mode) = opts.chmod
        && mode > 0o7777
    {
        return Err(LayerWriteError::InvalidChmod { mode });
    }
    let mut writer = TreeWriter {
        opts,
        excluded: normalized_excludes(&opts.exclude),
        builder: tar::Builder::new(out),
        hardlinks: HashMap::new(),
        stats: TarStats::default(),
        content_hasher: None,
    };
    let mut stack = vec![DirFrame {
        output_path: Vec::new(),
        source_path: Vec::new(),
        disk_path: src_dir.to_path_buf(),
        children: list_children(src_dir, opts.overlay_upper)?.into_iter(),
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(child) = frame.children.next() else {
            stack.pop();
            continue;
        };
        let output_path = child_path(&frame.output_path, &child.output_name);
        let source_path = child_path(&frame.source_path, child.source_name.as_bytes());
        let disk_path = frame.disk_path.join(&child.source_name);
        if writer.is_excluded(&source_path) {
            continue;
        }
        if let Some(new_frame) =
            writer.write_child(&child, output_path, source_path, disk_path, true)?
        {
            stack.push(new_frame);
        }
    }
    let stats = writer.stats;
    let out = writer
        .builder
        .into_inner()
        .map_err(|source| LayerWriteError::Output {
            entry: "end-of-archive marker".to_owned(),
            source,
        })?;
    Ok((out, stats))
}

struct TreeWriter<'a, W: Write> {
    opts: &'a LayerWriterOptions,
    excluded: Vec<Vec<u8>>,
    builder: tar::Builder<W>,
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    stats: TarStats,
    /// When set, regular-file content is hashed as it is written.
    content_hasher: Option<Hasher>,
}

impl<W: Write> TreeWriter<'_, W> {
    fn is_excluded(&self, source_path: &[u8]) -> bool {
        self.excluded.iter().any(|excluded| {
            source_path == excluded.as_slice()
                || (source_path.starts_with(excluded)
                    && source_path.get(excluded.len()) == Some(&b'/'))
        })
    }

    /// Writes one child; returns the frame to descend into when it is a directory and
    /// `descend` is set.
    fn write_child(
        &mut self,
        child: &Child,
        output_path: Vec<u8>,
        source_path: Vec<u8>,
        disk_path: PathBuf,
        descend: bool,
    ) -> Result<Option<DirFrame>, LayerWriteError> {
        let meta =
            std::fs::symlink_metadata(&disk_path).map_err(|source| LayerWriteError::Source {
                path: disk_path.clone(),
                source,
            })?;
        if child.is_whiteout_device {
            let header = self.marker_header(&meta);
            self.append(&output_path, header, BTreeMap::new(), io::empty())?;
            return Ok(None);
        }
        let file_type = meta.file_type();
        if file_type.is_socket() {
            return Ok(None);
        }
        let xattrs = self.layer_xattrs(&disk_path)?;
        let mut pax = xattrs.pax;
        if file_type.is_dir() {
            let mut dir_path = output_path.clone();
            dir_path.push(b'/');
            let header = self.header_for(&meta, EntryType::Directory, 0, &mut pax);
            self.append(&dir_path, header, pax, io::empty())?;
            if xattrs.opaque {
                let mut marker_path = dir_path;
                marker_path.extend_from_slice(OPAQUE_WHITEOUT.as_bytes());
                let header = self.marker_header(&meta);
                self.append(&marker_path, header, BTreeMap::new(), io::empty())?;
            }
            if !descend {
                return Ok(None);
            }
            let children = list_children(&disk_path, self.opts.overlay_upper)?;
            return Ok(Some(DirFrame {
                output_path,
                source_path,
                disk_path,
                children: children.into_iter(),
            }));
        }
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first_path) = self.hardlinks.get(&key).cloned() {
                let mut header = self.header_for(&meta, EntryType::Link, 0, &mut pax);
                set_name_field(
                    &mut header.as_old_mut().linkname,
                    &first_path,
                    "linkpath",
                    &mut pax,
                );
                self.append(&output_path, header, pax, io::empty())?;
                return Ok(None);
            }
            self.hardlinks.insert(key, output_path.clone());
        }
        if file_type.is_file() {
            let size = meta.len();
            let header = self.header_for(&meta, EntryType::Regular, size, &mut pax);
            let file = open_no_follow(&disk_path)?;
            let mut content = ExactFileReader {
                file,
                remaining: size,
            };
            if let Some(hasher) = self.content_hasher.as_mut() {
                *hasher = Hasher::new();
                let mut hashing = HashingTee {
                    inner: &mut content,
                    hasher,
                };
                append_entry(
                    &mut self.builder,
                    &mut self.stats,
                    &output_path,
                    header,
                    pax,
                    &mut hashing,
                )?;
            } else {
                self.append(&output_path, header, pax, &mut content)?;
            }
            if content
                .has_more_data()
                .map_err(|source| LayerWriteError::Source {
                    path: disk_path.clone(),
                    source,
                })?
            {
                return Err(LayerWriteError::FileChanged {
                    path: disk_path,
                    expected: size,
                });
            }
            self.stats.file_bytes = self.stats.file_bytes.saturating_add(size);
        } else if file_type.is_symlink() {
            let target =
                std::fs::read_link(&disk_path).map_err(|source| LayerWriteError::Source {
                    path: disk_path.clone(),
                    source,
                })?;
            let mut header = self.header_for(&meta, EntryType::Symlink, 0, &mut pax);
            set_name_field(
                &mut header.as_old_mut().linkname,
                target.as_os_str().as_bytes(),
                "linkpath",
                &mut pax,
            );
            self.append(&output_path, header, pax, io::empty())?;
        } else {
            let entry_type = if file_type.is_char_device() {
                EntryType::Char
            } else if file_type.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            let mut header = self.header_for(&meta, entry_type, 0, &mut pax);
            if entry_type != EntryType::Fifo {
                let device = meta.rdev();
                let device_error = |source| LayerWriteError::Output {
                    entry: tar_path::display(&output_path),
                    source,
                };
                header
                    .set_device_major(rustix::fs::major(device))
                    .map_err(device_error)?;
                header
                    .set_device_minor(rustix::fs::minor(device))
                    .map_err(device_error)?;
            }
            self.append(&output_path, header, pax, io::empty())?;
        }
        Ok(None)
    }

    /// Header of a whiteout or opaque marker: empty regular file, mode 0, owner 0:0.
    fn marker_header(&self, meta: &Metadata) -> Header {
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        header.set_mode(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        header.set_mtime(self.mtime_of(meta));
        header
    }

    fn header_for(
        &self,
        meta: &Metadata,
        entry_type: EntryType,
        size: u64,
        pax: &mut BTreeMap<String, Vec<u8>>,
    ) -> Header {
        let mut header = Header::new_ustar();
        header.set_entry_type(entry_type);
        let mut mode = meta.mode() & 0o7777;
        if let Some(chmod) = self.opts.chmod
            && matches!(entry_type, EntryType::Regular | EntryType::Directory)
        {
            mode = chmod;
        }
        header.set_mode(mode);
        let (uid, gid) = match self.opts.chown {
            Some(owner) => (owner.uid, owner.gid),
            None => (meta.uid(), meta.gid()),
        };
        header.set_uid(u64::from(uid));
        header.set_gid(u64::from(gid));
        if u64::from(uid) > MAX_OCTAL_ID {
            pax.insert("uid".to_owned(), uid.to_string().into_bytes());
        }
        if u64::from(gid) > MAX_OCTAL_ID {
            pax.insert("gid".to_owned(), gid.to_string().into_bytes());
        }
        header.set_size(size);
        if size > MAX_OCTAL_SIZE {
            pax.insert("size".to_owned(), size.to_string().into_bytes());
        }
        header.set_mtime(self.mtime_of(meta));
        header
    }

    fn mtime_of(&self, meta: &Metadata) -> u64 {
        let mut mtime = meta.mtime();
        if let Some(clamp) = self.opts.clamp_mtime
            && mtime > clamp
        {
            mtime = clamp;
        }
        u64::try_from(mtime).unwrap_or(0)
    }

    fn append<R: Read>(
        &mut self,
        output_path: &[u8],
        header: Header,
        pax: BTreeMap<String, Vec<u8>>,
        data: R,
    ) -> Result<(), LayerWriteError> {
        append_entry(
            &mut self.builder,
            &mut self.stats,
            output_path,
            header,
            pax,
            data,
        )
    }

    /// The xattrs that go into the layer as PAX records, and whether the directory is opaque.
    fn layer_xattrs(&self, disk_path: &Path) -> Result<LayerXattrs, LayerWriteError> {
        let mut result = LayerXattrs {
            pax: BTreeMap::new(),
            opaque: false,
        };
        for (name, value) in read_xattrs(disk_path)? {
            let Ok(name_text) = String::from_utf8(name.clone()) else {
                return Err(LayerWriteError::NonUtf8XattrName {
                    path: disk_path.to_path_buf(),
                    name: tar_path::display(&name),
                });
            };
            let is_opaque_xattr =
                name_text == TRUSTED_OPAQUE_XATTR || name_text == USER_OPAQUE_XATTR;
            if self.opts.overlay_upper && is_opaque_xattr && value == b"y" {
                result.opaque = true;
            }
            let overlay_private = name_text.starts_with("trusted.overlay.")
                || (self.opts.overlay_upper && name_text.starts_with("user.overlay."));
            if overlay_private || name_text == "security.selinux" {
                continue;
            }
            result
                .pax
                .insert(format!("SCHILY.xattr.{name_text}"), value);
        }
        Ok(result)
    }
}

/// Appends one entry (with its PAX records) to the tar.
fn append_entry<W: Write, R: Read>(
    builder: &mut tar::Builder<W>,
    stats: &mut TarStats,
    output_path: &[u8],
    mut header: Header,
    mut pax: BTreeMap<String, Vec<u8>>,
    data: R,
) -> Result<(), LayerWriteError> {
    set_name_field(&mut header.as_old_mut().name, output_path, "path", &mut pax);
    header.set_cksum();
    let output_error = |source| LayerWriteError::Output {
        entry: tar_path::display(output_path),
        source,
    };
    if !pax.is_empty() {
        builder
            .append_pax_extensions(
                pax.iter()
                    .map(|(key, value)| (key.as_str(), value.as_slice())),
            )
            .map_err(output_error)?;
    }
    builder.append(&header, data).map_err(output_error)?;
    stats.entries = stats.entries.saturating_add(1);
    Ok(())
}

/// A reader that feeds what it reads into a hasher.
struct HashingTee<'a, R> {
    inner: R,
    hasher: &'a mut Hasher,
}

impl<R: Read> Read for HashingTee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if let Some(chunk) = buf.get(..read) {
            self.hasher.update(chunk);
        }
        Ok(read)
    }
}

/// Metadata of a directory entry that has no source on disk (a parent that COPY creates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticDir {
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: i64,
}

/// Writes a layer entry by entry, each from a path on disk under a name the caller chooses:
/// COPY and ADD build their layer straight from the build context this way, with no staging
/// copy. The caller adds entries in layer order (parents first, siblings sorted); the
/// [`LayerWriterOptions`] apply as for [`write_layer_tar`] (`overlay_upper` and `exclude`
/// have no effect here).
pub struct LayerEntryWriter<'a, W: Write> {
    writer: TreeWriter<'a, W>,
}

impl<'a, W: Write> LayerEntryWriter<'a, W> {
    /// A writer into `out`.
    pub fn new(opts: &'a LayerWriterOptions, out: W) -> Result<Self, LayerWriteError> {
        if let Some(mode) = opts.chmod
            && mode > 0o7777
        {
            return Err(LayerWriteError::InvalidChmod { mode });
        }
        Ok(Self {
            writer: TreeWriter {
                opts,
                excluded: Vec::new(),
                builder: tar::Builder::new(out),
                hardlinks: HashMap::new(),
                stats: TarStats::default(),
                content_hasher: Some(Hasher::new()),
            },
        })
    }

    /// Adds the file, directory (without its children) or symlink at `disk_path` as
    /// `output_path` (relative, no trailing slash). Returns the sha256 of a regular
    /// file's content as it was written, so the caller can check it against what it
    /// hashed before.
    pub fn add_path(
        &mut self,
        output_path: &str,
        disk_path: &Path,
    ) -> Result<Option<Digest>, LayerWriteError> {
        let name = output_path.trim_end_matches('/');
        let child = Child {
            output_name: name.as_bytes().to_vec(),
            source_name: OsString::from(name),
            is_whiteout_device: false,
        };
        if let Some(hasher) = self.writer.content_hasher.as_mut() {
            *hasher = Hasher::new();
        }
        let before = self.writer.stats.file_bytes;
        self.writer.write_child(
            &child,
            name.as_bytes().to_vec(),
            name.as_bytes().to_vec(),
            disk_path.to_path_buf(),
            false,
        )?;
        let meta =
            std::fs::symlink_metadata(disk_path).map_err(|source| LayerWriteError::Source {
                path: disk_path.to_path_buf(),
                source,
            })?;
        if meta.file_type().is_file() && (self.writer.stats.file_bytes > before || meta.len() == 0)
        {
            let hasher = self.writer.content_hasher.replace(Hasher::new());
            return Ok(hasher.map(Hasher::finish));
        }
        Ok(None)
    }

    /// Adds a directory that has no source on disk.
    pub fn add_dir(&mut self, output_path: &str, dir: SyntheticDir) -> Result<(), LayerWriteError> {
        let mut path = output_path.trim_end_matches('/').as_bytes().to_vec();
        path.push(b'/');
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::Directory);
        header.set_mode(dir.mode & 0o7777);
        let mut pax = BTreeMap::new();
        header.set_uid(u64::from(dir.uid));
        header.set_gid(u64::from(dir.gid));
        if u64::from(dir.uid) > MAX_OCTAL_ID {
            pax.insert("uid".to_owned(), dir.uid.to_string().into_bytes());
        }
        if u64::from(dir.gid) > MAX_OCTAL_ID {
            pax.insert("gid".to_owned(), dir.gid.to_string().into_bytes());
        }
        header.set_size(0);
        let mut mtime = dir.mtime;
        if let Some(clamp) = self.writer.opts.clamp_mtime
            && mtime > clamp
        {
            mtime = clamp;
        }
        header.set_mtime(u64::try_from(mtime).unwrap_or(0));
        self.writer.append(&path, header, pax, io::empty())
    }

    /// Adds a regular file whose content comes from `data` (`size` bytes), with the given
    /// metadata: heredoc sources and downloaded files.
    pub fn add_bytes<R: Read>(
        &mut self,
        output_path: &str,
        dir: SyntheticDir,
        size: u64,
        data: R,
    ) -> Result<(), LayerWriteError> {
        let mut header = Header::new_ustar();
        header.set_entry_type(EntryType::Regular);
        let mode = self.writer.opts.chmod.unwrap_or(dir.mode & 0o7777);
        header.set_mode(mode);
        let (uid, gid) = match self.writer.opts.chown {
            Some(owner) => (owner.uid, owner.gid),
            None => (dir.uid, dir.gid),
        };
        header.set_uid(u64::from(uid));
        header.set_gid(u64::from(gid));
        header.set_size(size);
        let mut pax = BTreeMap::new();
        if size > MAX_OCTAL_SIZE {
            pax.insert("size".to_owned(), size.to_string().into_bytes());
        }
        let mut mtime = dir.mtime;
        if let Some(clamp) = self.writer.opts.clamp_mtime
            && mtime > clamp
        {
            mtime = clamp;
        }
        header.set_mtime(u64::try_from(mtime).unwrap_or(0));
        self.writer.append(
            output_path.trim_end_matches('/').as_bytes(),
            header,
            pax,
            data.take(size),
        )?;
        self.writer.stats.file_bytes = self.writer.stats.file_bytes.saturating_add(size);
        Ok(())
    }

    /// Writes the end-of-archive marker and returns the output and what was written.
    pub fn finish(self) -> Result<(W, TarStats), LayerWriteError> {
        let stats = self.writer.stats;
        let out = self
            .writer
            .builder
            .into_inner()
            .map_err(|source| LayerWriteError::Output {
                entry: "end-of-archive marker".to_owned(),
                source,
            })?;
        Ok((out, stats))
    }
}

struct LayerXattrs {
    pax: BTreeMap<String, Vec<u8>>,
    opaque: bool,
}

/// Puts `value` in a fixed-size header field, or in a PAX record when it does not fit (the
/// field then keeps a truncated copy, as other tar writers do).
fn set_name_field(
    field: &mut [u8; NAME_FIELD_LEN],
    value: &[u8],
    pax_key: &str,
    pax: &mut BTreeMap<String, Vec<u8>>,
) {
    field.fill(0);
    let kept = value.len().min(NAME_FIELD_LEN);
    if let (Some(dst), Some(src)) = (field.get_mut(..kept), value.get(..kept)) {
        dst.copy_from_slice(src);
    }
    if value.len() > NAME_FIELD_LEN {
        pax.insert(pax_key.to_owned(), value.to_vec());
    }
}

fn child_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(parent.len() + name.len() + 1);
    if !parent.is_empty() {
        path.extend_from_slice(parent);
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

fn normalized_excludes(excludes: &[String]) -> Vec<Vec<u8>> {
    excludes
        .iter()
        .filter_map(|exclude| match tar_path::normalize(exclude.as_bytes()) {
            NormalizedPath::Inside(components) if !components.is_empty() => {
                Some(tar_path::join(&components))
            }
            _ => None,
        })
        .collect()
}

/// Lists a directory's children sorted by the name they get in the layer.
fn list_children(dir: &Path, overlay_upper: bool) -> Result<Vec<Child>, LayerWriteError> {
    let source_error = |source| LayerWriteError::Source {
        path: dir.to_path_buf(),
        source,
    };
    let mut children = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(source_error)? {
        let entry = entry.map_err(source_error)?;
        let source_name = entry.file_name();
        if source_name
            .as_bytes()
            .starts_with(WHITEOUT_PREFIX.as_bytes())
        {
            return Err(LayerWriteError::ReservedWhiteoutName { path: entry.path() });
        }
        let mut is_whiteout_device = false;
        if overlay_upper && entry.file_type().map_err(source_error)?.is_char_device() {
            let meta = entry.metadata().map_err(source_error)?;
            is_whiteout_device = meta.rdev() == 0;
        }
        let output_name = if is_whiteout_device {
            let mut name = WHITEOUT_PREFIX.as_bytes().to_vec();
            name.extend_from_slice(source_name.as_bytes());
            name
        } else {
            source_name.as_bytes().to_vec()
        };
        children.push(Child {
            output_name,
            source_name,
            is_whiteout_device,
        });
    }
    children.sort_by(|left, right| left.output_name.cmp(&right.output_name));
    Ok(children)
}

fn open_no_follow(path: &Path) -> Result<File, LayerWriteError> {
    let fd = rustix::fs::openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| LayerWriteError::Source {
        path: path.to_path_buf(),
        source: errno.into(),
    })?;
    Ok(File::from(fd))
}

/// Reads all extended attributes of `path` (not following symlinks), sorted by name.
pub(crate) fn read_xattrs(path: &Path) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, LayerWriteError> {
    let source_error = |errno: rustix::io::Errno| LayerWriteError::Source {
        path: path.to_path_buf(),
        source: errno.into(),
    };
    let mut xattrs = BTreeMap::new();
    let names = match read_xattr_names(path) {
        Ok(names) => names,
        Err(errno) if errno == rustix::io::Errno::NOTSUP => return Ok(xattrs),
        Err(errno) => return Err(source_error(errno)),
    };
    for name in names
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
    {
        let name_os = OsString::from_vec(name.to_vec());
        match read_xattr_value(path, &name_os) {
            Ok(value) => {
                xattrs.insert(name.to_vec(), value);
            }
            // Removed between list and get.
            Err(errno) if errno == rustix::io::Errno::NODATA => {}
            Err(errno) => return Err(source_error(errno)),
        }
    }
    Ok(xattrs)
}

fn read_xattr_names(path: &Path) -> rustix::io::Result<Vec<u8>> {
    loop {
        let size = rustix::fs::llistxattr_query(path)?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut names = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(len) => {
                names.truncate(len);
                return Ok(names);
            }
            Err(rustix::io::Errno::RANGE) => {}
            Err(errno) => return Err(errno),
        }
    }
}

fn read_xattr_value(path: &Path, name: &OsString) -> rustix::io::Result<Vec<u8>> {
    loop {
        let size = rustix::fs::lgetxattr_query(path, name.as_os_str())?;
        let mut value = vec![0u8; size];
        if size == 0 {
            return Ok(value);
        }
        match rustix::fs::lgetxattr(path, name.as_os_str(), &mut value[..]) {
            Ok(len) => {
                value.truncate(len);
                return Ok(value);
            }
            Err(rustix::io::Errno::RANGE) => {}
            Err(errno) => return Err(errno),
        }
    }
}

/// Reads exactly the size recorded in the header; a file that shrank is an error (the header
/// is already written, so a short copy would corrupt the archive).
struct ExactFileReader {
    file: File,
    remaining: u64,
}

impl ExactFileReader {
    fn has_more_data(&mut self) -> io::Result<bool> {
        let mut probe = [0u8; 1];
        Ok(self.file.read(&mut probe)? > 0)
    }
}

impl Read for ExactFileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let wanted = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let read = self.file.read(buf.get_mut(..wanted).unwrap_or_default())?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was archived",
            ));
        }
        self.remaining = self.remaining.saturating_sub(read as u64);
        Ok(read)
    }
}

#[cfg(test)]
mod entry_writer_tests {
    use super::*;

    #[test]
    fn entry_writer_renames_sources_and_reports_content_digests() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, b"hello").unwrap();
        std::os::unix::fs::symlink("a.txt", dir.path().join("l")).unwrap();
        let opts = LayerWriterOptions {
            chown: Some(Ownership { uid: 0, gid: 0 }),
            ..LayerWriterOptions::default()
        };
        let mut writer = LayerEntryWriter::new(&opts, Vec::new()).unwrap();
        let parent = SyntheticDir {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        writer.add_dir("app", parent).unwrap();
        let digest = writer.add_path("app/renamed.txt", &file).unwrap();
        assert_eq!(digest, Some(Digest::of(b"hello")));
        assert_eq!(
            writer.add_path("app/l", &dir.path().join("l")).unwrap(),
            None
        );
        writer.add_bytes("app/doc", parent, 3, &b"abc"[..]).unwrap();
        let (bytes, stats) = writer.finish().unwrap();
        assert_eq!(stats.entries, 4);
        let mut archive = tar::Archive::new(&bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            seen.push((
                entry.path().unwrap().to_string_lossy().into_owned(),
                header.uid().unwrap(),
                header.size().unwrap(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                ("app/".to_owned(), 0, 0),
                ("app/renamed.txt".to_owned(), 0, 5),
                ("app/l".to_owned(), 0, 0),
                ("app/doc".to_owned(), 0, 3),
            ]
        );
    }
}
