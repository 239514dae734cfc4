//! Safe layer applier: writes a (decompressed) layer tar stream into a root directory.
//!
//! Every parent directory is opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`
//! on a descriptor of the root, and the last component is then created with `*at` calls that
//! never follow it. A symlink in the tree (even `evil -> /etc` or `../../..`) therefore
//! resolves inside the root, and nothing outside the root is ever written. Entry names are
//! normalized lexically: a leading `/` is dropped (Docker treats `/x` as `x`), `..` inside
//! the tree is resolved, and a `..` that climbs above the root is rejected with
//! [`ApplyError::PathEscapesRoot`]. Hardlink targets follow the same rules and must already
//! exist in the root.
//!
//! Whiteouts (`.wh.<name>`, `.wh..wh..opq`) are handled per [`WhiteoutMode`]: removed from a
//! merged tree, or turned into overlayfs whiteouts (0/0 character devices, the opaque xattr)
//! for a tree that will be an overlay lower dir. Other `.wh..wh.*` entries (aufs metadata)
//! are skipped. Overlay-private xattrs (`trusted.overlay.*`, `user.overlay.*`) in the stream are
//! never applied, so a layer cannot smuggle in redirects or metacopy flags.
//!
//! Directories are created with mode 0700 and get their real mode and mtime at the end,
//! children first, so a read-only directory listed before its contents still works and
//! directory mtimes are not disturbed by their contents. A stream that is corrupt, truncated
//! or lacks its end-of-archive marker is an error: apply into a temporary directory and
//! rename it into place only on success.
//!
//! `tar::Archive::unpack` and `Entry::unpack` are never used; the stream is read by
//! [`crate::tar_reader`], which parses PAX records by length (binary xattr values are safe).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

use crate::tar_path::{self, NormalizedPath};
use crate::tar_reader::{NextEntry, RawEntry, TarReader};
use crate::{OPAQUE_WHITEOUT, TRUSTED_OPAQUE_XATTR, USER_OPAQUE_XATTR, WHITEOUT_PREFIX};

/// How whiteout entries are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// The root is a merged tree: `.wh.<name>` removes `<name>`, an opaque marker removes
    /// every child of its directory that this layer did not create.
    #[default]
    Merged,
    /// The root is one layer's own tree, to be used as an overlayfs lower dir: `.wh.<name>`
    /// becomes a 0/0 character device and an opaque marker sets the opaque xattr.
    OverlayLower(OverlayXattrNamespace),
}

/// Which xattr namespace overlayfs reads the opaque flag from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlayXattrNamespace {
    /// `trusted.overlay.opaque` (privileged mounts).
    #[default]
    Trusted,
    /// `user.overlay.opaque` (mounts with `userxattr`).
    User,
}

/// What to do with device nodes and FIFOs in a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpecialFilePolicy {
    /// Create them (needs CAP_MKNOD for devices).
    Create,
    /// Leave them out and count them in [`ApplyStats::skipped_special_files`].
    Skip,
    /// Fail with [`ApplyError::SpecialFileNotAllowed`].
    #[default]
    Reject,
}

/// Options of [`apply_layer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    pub special_files: SpecialFilePolicy,
    /// chown entries to the uid/gid in the stream (needs root); otherwise the applier's own.
    pub preserve_ownership: bool,
    /// Fail when the stream ends without the end-of-archive zero block.
    pub require_end_marker: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            whiteouts: WhiteoutMode::Merged,
            special_files: SpecialFilePolicy::Reject,
            preserve_ownership: true,
            require_end_marker: true,
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Entries read from the stream (including whiteouts and skipped ones).
    pub entries: u64,
    /// Regular-file bytes written.
    pub file_bytes: u64,
    /// Whiteout and opaque markers applied.
    pub whiteouts: u64,
    /// Devices and FIFOs left out under [`SpecialFilePolicy::Skip`].
    pub skipped_special_files: u64,
    /// Bytes after the end-of-archive marker (read and discarded, so that a hashing reader
    /// underneath sees the whole blob).
    pub trailing_bytes: u64,
}

/// Why a layer could not be applied. `entry` is the entry's name as written in the stream.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot open the target root {root}: {source}")]
    OpenRoot {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt or unreadable layer stream (after entry {after:?}): {source}")]
    Corrupt {
        after: Option<String>,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {entry}: stream ended after {actual} of {expected} content bytes")]
    Truncated {
        entry: String,
        expected: u64,
        actual: u64,
    },
    #[error("layer stream ended without an end-of-archive marker (after entry {after:?})")]
    MissingEndOfArchive { after: Option<String> },
    #[error("layer entry {entry}: path escapes the root with `..`")]
    PathEscapesRoot { entry: String },
    #[error("layer entry {entry}: hardlink target {target} escapes the root")]
    HardlinkEscapesRoot { entry: String, target: String },
    #[error("layer entry {entry}: hardlink target {target} does not exist (yet) in the root")]
    HardlinkTargetMissing { entry: String, target: String },
    #[error("layer entry {entry}: {kind} entries are not allowed here")]
    SpecialFileNotAllowed { entry: String, kind: &'static str },
    #[error("layer entry {entry}: invalid whiteout (no name after `.wh.`)")]
    InvalidWhiteout { entry: String },
    #[error("layer entry {entry}: unsupported tar entry type {type_byte:?}")]
    UnsupportedEntryType { entry: String, type_byte: char },
    #[error("layer entry {entry}: {reason}")]
    InvalidEntry { entry: String, reason: String },
    #[error("layer entry {entry}: {operation} {path} failed: {source}")]
    Filesystem {
        entry: String,
        operation: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Applies the tar stream `tar` onto the existing directory `root` (see the module docs).
pub fn apply_layer<R: Read>(
    tar: R,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ApplyError> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| ApplyError::OpenRoot {
        root: root.to_path_buf(),
        source: errno.into(),
    })?;
    let mut applier = Applier {
        root: root_fd,
        opts,
        deferred_dirs: BTreeMap::new(),
        created: HashSet::new(),
        stats: ApplyStats::default(),
        buffer: vec![0u8; 128 * 1024],
    };
    let mut reader = TarReader::new(tar);
    let mut last_entry: Option<String> = None;
    loop {
        let next = reader.next_entry().map_err(|source| ApplyError::Corrupt {
            after: last_entry.clone(),
            source,
        })?;
        let entry = match next {
            NextEntry::Entry(entry) => entry,
            NextEntry::End => break,
            NextEntry::EndWithoutMarker if opts.require_end_marker => {
                return Err(ApplyError::MissingEndOfArchive { after: last_entry });
            }
            NextEntry::EndWithoutMarker => break,
        };
        let name = tar_path::display(&entry.path);
        applier.stats.entries = applier.stats.entries.saturating_add(1);
        applier.apply_entry(&entry, &mut reader, &name)?;
        last_entry = Some(name);
    }
    let mut rest = reader.into_inner();
    applier.stats.trailing_bytes =
        io::copy(&mut rest, &mut io::sink()).map_err(|source| ApplyError::Corrupt {
            after: last_entry.clone(),
            source,
        })?;
    applier.finish_directories()?;
    Ok(applier.stats)
}

/// Final attributes of a directory, applied after everything else.
#[derive(Debug, Clone, Copy)]
struct DirAttributes {
    mode: u32,
    mtime: i64,
}

/// Metadata of one entry, from its header and PAX records.
struct EntryMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Applier<'a> {
    root: OwnedFd,
    opts: &'a ApplyOptions,
    deferred_dirs: BTreeMap<Vec<u8>, DirAttributes>,
    /// Paths this layer created (merged mode only; opaque markers keep them).
    created: HashSet<Vec<u8>>,
    stats: ApplyStats,
    buffer: Vec<u8>,
}

impl Applier<'_> {
    fn apply_entry<R: Read>(
        &mut self,
        entry: &RawEntry,
        reader: &mut TarReader<R>,
        name: &str,
    ) -> Result<(), ApplyError> {
        let entry_type = entry.entry_type;
        match entry_type {
            EntryType::XGlobalHeader => return Ok(()),
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo => {}
            other => {
                return Err(ApplyError::UnsupportedEntryType {
                    entry: name.to_owned(),
                    type_byte: char::from(other.as_byte()),
                });
            }
        }
        let NormalizedPath::Inside(components) = tar_path::normalize(&entry.path) else {
            return Err(ApplyError::PathEscapesRoot {
                entry: name.to_owned(),
            });
        };
        let meta = read_entry_meta(entry, name)?;
        let Some((file_name, parent)) = components.split_last() else {
            if entry_type == EntryType::Directory {
                return self.apply_root_dir(&meta, name);
            }
            return Err(ApplyError::InvalidEntry {
                entry: name.to_owned(),
                reason: "only a directory may name the root".to_owned(),
            });
        };
        if let Some(whiteout_target) = file_name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.apply_whiteout(parent, file_name, whiteout_target, &meta, name);
        }
        let path = tar_path::join(&components);
        let file_name = OsStr::from_bytes(file_name);
        match entry_type {
            EntryType::Directory => self.create_dir(parent, file_name, &path, &meta, name)?,
            EntryType::Symlink => {
                let target = entry
                    .link_name
                    .clone()
                    .ok_or_else(|| ApplyError::InvalidEntry {
                        entry: name.to_owned(),
                        reason: "symlink without a target".to_owned(),
                    })?;
                self.create_symlink(parent, file_name, &path, &target, &meta, name)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name
                    .clone()
                    .ok_or_else(|| ApplyError::InvalidEntry {
                        entry: name.to_owned(),
                        reason: "hardlink without a target".to_owned(),
                    })?;
                self.create_hardlink(parent, file_name, &components, &target, name)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let kind = match entry_type {
                    EntryType::Char => "character device",
                    EntryType::Block => "block device",
                    _ => "FIFO",
                };
                match self.opts.special_files {
                    SpecialFilePolicy::Reject => {
                        return Err(ApplyError::SpecialFileNotAllowed {
                            entry: name.to_owned(),
                            kind,
                        });
                    }
                    SpecialFilePolicy::Skip => {
                        self.stats.skipped_special_files =
                            self.stats.skipped_special_files.saturating_add(1);
                        return Ok(());
                    }
                    SpecialFilePolicy::Create => {}
                }
                let header = &entry.header;
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let file_type = match entry_type {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let device = rustix::fs::makedev(major, minor);
                self.create_node(parent, file_name, &path, file_type, device, &meta, name)?;
            }
            _ => self.create_file(entry.size, reader, parent, file_name, &path, &meta, name)?,
        }
        if self.opts.whiteouts == WhiteoutMode::Merged {
            self.created.insert(path);
        }
        Ok(())
    }

    fn fs_error(entry: &str, operation: &'static str, path: &[u8], errno: Errno) -> ApplyError {
        ApplyError::Filesystem {
            entry: entry.to_owned(),
            operation,
            path: tar_path::display(path),
            source: errno.into(),
        }
    }

    /// Opens the directory `components` (relative to the root) with every symlink resolved
    /// inside the root; creates missing directories (0755) when `create` is set. A dangling
    /// symlink on the way is followed (inside the root) and its target created, as Docker does.
    fn open_dir(
        &self,
        components: &[Vec<u8>],
        create: bool,
        entry: &str,
    ) -> Result<Option<OwnedFd>, ApplyError> {
        let mut components = components.to_vec();
        'resolve: for _ in 0..MAX_SYMLINK_HOPS {
            let path = tar_path::join(&components);
            match open_in_root(&self.root, &path, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(fd) => return Ok(Some(fd)),
                Err(Errno::NOENT) if !create => return Ok(None),
                Err(Errno::NOENT) => {}
                Err(errno) => return Err(Self::fs_error(entry, "open directory", &path, errno)),
            }
            let mut current = open_in_root(&self.root, b".", OFlags::PATH | OFlags::DIRECTORY)
                .map_err(|errno| Self::fs_error(entry, "open directory", b".", errno))?;
            for depth in 1..=components.len() {
                let prefix = tar_path::join(components.get(..depth).unwrap_or_default());
                let opened =
                    match open_in_root(&self.root, &prefix, OFlags::PATH | OFlags::DIRECTORY) {
                        Err(Errno::NOENT) => {
                            let component = components
                                .get(depth - 1)
                                .map(Vec::as_slice)
                                .unwrap_or_default();
                            let component = OsStr::from_bytes(component);
                            match rustix::fs::mkdirat(
                                &current,
                                component,
                                Mode::from_raw_mode(0o755),
                            ) {
                                Ok(()) => {}
                                Err(Errno::EXIST) => {
                                    // A dangling symlink: continue from its target.
                                    let target =
                                        rustix::fs::readlinkat(&current, component, Vec::new())
                                            .map_err(|errno| {
                                                Self::fs_error(
                                                    entry,
                                                    "create directory",
                                                    &prefix,
                                                    errno,
                                                )
                                            })?;
                                    components =
                                        splice_symlink(&components, depth, target.as_bytes());
                                    continue 'resolve;
                                }
                                Err(errno) => {
                                    return Err(Self::fs_error(
                                        entry,
                                        "create directory",
                                        &prefix,
                                        errno,
                                    ));
                                }
                            }
                            open_in_root(&self.root, &prefix, OFlags::PATH | OFlags::DIRECTORY)
                        }
                        other => other,
                    };
                current = opened
                    .map_err(|errno| Self::fs_error(entry, "open directory", &prefix, errno))?;
            }
            return Ok(Some(current));
        }
        Err(Self::fs_error(
            entry,
            "resolve",
            &tar_path::join(&components),
            Errno::LOOP,
        ))
    }

    fn open_parent(&self, parent: &[Vec<u8>], entry: &str) -> Result<OwnedFd, ApplyError> {
        self.open_dir(parent, true, entry)?
            .ok_or_else(|| ApplyError::InvalidEntry {
                entry: entry.to_owned(),
                reason: "parent directory vanished".to_owned(),
            })
    }

    /// Clears the slot for a new entry; returns true when an existing directory is kept
    /// (a directory entry over a directory only updates its attributes).
    fn prepare_slot(
        &self,
        parent_fd: &OwnedFd,
        file_name: &OsStr,
        path: &[u8],
        keep_directory: bool,
        entry: &str,
    ) -> Result<bool, ApplyError> {
        match rustix::fs::statat(parent_fd, file_name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(false),
            Err(errno) => Err(Self::fs_error(entry, "stat", path, errno)),
            Ok(stat) => {
                let is_dir = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
                if is_dir && keep_directory {
                    return Ok(true);
                }
                remove_all_at(parent_fd.as_fd(), file_name)
                    .map_err(|errno| Self::fs_error(entry, "remove", path, errno))?;
                Ok(false)
            }
        }
    }

    fn apply_root_dir(&mut self, meta: &EntryMeta, entry: &str) -> Result<(), ApplyError> {
        let dir = open_in_root(&self.root, b".", OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|errno| Self::fs_error(entry, "open", b".", errno))?;
        self.set_owner(&dir, meta, entry, b".")?;
        self.set_xattrs(&dir, meta, entry, b".")?;
        self.deferred_dirs.insert(
            Vec::new(),
            DirAttributes {
                mode: meta.mode,
                mtime: meta.mtime,
            },
        );
        Ok(())
    }

    fn create_dir(
        &mut self,
        parent: &[Vec<u8>],
        file_name: &OsStr,
        path: &[u8],
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), ApplyError> {
        let parent_fd = self.open_parent(parent, entry)?;
        if !self.prepare_slot(&parent_fd, file_name, path, true, entry)? {
            rustix::fs::mkdirat(&parent_fd, file_name, Mode::from_raw_mode(0o700))
                .map_err(|errno| Self::fs_error(entry, "create directory", path, errno))?;
        }
        let dir = rustix::fs::openat(
            &parent_fd,
            file_name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| Self::fs_error(entry, "open directory", path, errno))?;
        self.set_owner(&dir, meta, entry, path)?;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o700))
            .map_err(|errno| Self::fs_error(entry, "chmod", path, errno))?;
        self.set_xattrs(&dir, meta, entry, path)?;
        self.deferred_dirs.insert(
            path.to_vec(),
            DirAttributes {
                mode: meta.mode,
                mtime: meta.mtime,
            },
        );
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_file<R: Read>(
        &mut self,
        expected: u64,
        reader: &mut TarReader<R>,
        parent: &[Vec<u8>],
        file_name: &OsStr,
        path: &[u8],
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), ApplyError> {
        let parent_fd = self.open_parent(parent, entry)?;
        self.prepare_slot(&parent_fd, file_name, path, false, entry)?;
        let fd = rustix::fs::openat(
            &parent_fd,
            file_name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|errno| Self::fs_error(entry, "create file", path, errno))?;
        let mut file = File::from(fd);
        let mut copied: u64 = 0;
        loop {
            let read = match reader.read_data(&mut self.buffer) {
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(ApplyError::Truncated {
                        entry: entry.to_owned(),
                        expected,
                        actual: copied,
                    });
                }
                Err(source) => {
                    return Err(ApplyError::Corrupt {
                        after: Some(entry.to_owned()),
                        source,
                    });
                }
            };
            if read == 0 {
                break;
            }
            let chunk = self.buffer.get(..read).unwrap_or_default();
            file.write_all(chunk)
                .map_err(|source| ApplyError::Filesystem {
                    entry: entry.to_owned(),
                    operation: "write",
                    path: tar_path::display(path),
                    source,
                })?;
            copied = copied.saturating_add(read as u64);
        }
        if copied != expected {
            return Err(ApplyError::Truncated {
                entry: entry.to_owned(),
                expected,
                actual: copied,
            });
        }
        self.stats.file_bytes = self.stats.file_bytes.saturating_add(copied);
        let fd = OwnedFd::from(file);
        // Owner first: chown clears setuid/setgid bits, chmod then sets them.
        self.set_owner(&fd, meta, entry, path)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode))
            .map_err(|errno| Self::fs_error(entry, "chmod", path, errno))?;
        self.set_xattrs(&fd, meta, entry, path)?;
        rustix::fs::futimens(&fd, &timestamps(meta.mtime))
            .map_err(|errno| Self::fs_error(entry, "set mtime of", path, errno))?;
        Ok(())
    }

    fn create_symlink(
        &mut self,
        parent: &[Vec<u8>],
        file_name: &OsStr,
        path: &[u8],
        target: &[u8],
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), ApplyError> {
        let parent_fd = self.open_parent(parent, entry)?;
        self.prepare_slot(&parent_fd, file_name, path, false, entry)?;
        rustix::fs::symlinkat(OsStr::from_bytes(target), &parent_fd, file_name)
            .map_err(|errno| Self::fs_error(entry, "create symlink", path, errno))?;
        self.finish_non_regular(&parent_fd, file_name, path, meta, entry, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn create_node(
        &mut self,
        parent: &[Vec<u8>],
        file_name: &OsStr,
        path: &[u8],
        file_type: FileType,
        device: rustix::fs::Dev,
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), ApplyError> {
        let parent_fd = self.open_parent(parent, entry)?;
        self.prepare_slot(&parent_fd, file_name, path, false, entry)?;
        rustix::fs::mknodat(
            &parent_fd,
            file_name,
            file_type,
            Mode::from_raw_mode(0o600),
            device,
        )
        .map_err(|errno| Self::fs_error(entry, "create node", path, errno))?;
        self.finish_non_regular(&parent_fd, file_name, path, meta, entry, true)
    }

    /// Owner, mode (not for symlinks), xattrs and mtime of a node addressed by parent + name.
    fn finish_non_regular(
        &self,
        parent_fd: &OwnedFd,
        file_name: &OsStr,
        path: &[u8],
        meta: &EntryMeta,
        entry: &str,
        set_mode: bool,
    ) -> Result<(), ApplyError> {
        if self.opts.preserve_ownership {
            rustix::fs::chownat(
                parent_fd,
                file_name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|errno| Self::fs_error(entry, "chown", path, errno))?;
        }
        if set_mode {
            rustix::fs::chmodat(
                parent_fd,
                file_name,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(|errno| Self::fs_error(entry, "chmod", path, errno))?;
        }
        if !meta.xattrs.is_empty() {
            // xattr syscalls have no *at form: address the node through its parent's fd.
            let node_path = proc_fd_path(parent_fd, file_name);
            for (name, value) in &meta.xattrs {
                match rustix::fs::lsetxattr(
                    &node_path,
                    OsStr::from_bytes(name),
                    value,
                    XattrFlags::empty(),
                ) {
                    Ok(()) => {}
                    // user.* xattrs cannot exist on symlinks and devices.
                    Err(Errno::PERM | Errno::NOTSUP) if !set_mode || name.starts_with(b"user.") => {
                    }
                    Err(errno) => return Err(Self::fs_error(entry, "set xattr on", path, errno)),
                }
            }
        }
        rustix::fs::utimensat(
            parent_fd,
            file_name,
            &timestamps(meta.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|errno| Self::fs_error(entry, "set mtime of", path, errno))?;
        Ok(())
    }

    fn create_hardlink(
        &mut self,
        parent: &[Vec<u8>],
        file_name: &OsStr,
        components: &[Vec<u8>],
        raw_target: &[u8],
        entry: &str,
    ) -> Result<(), ApplyError> {
        let target_display = tar_path::display(raw_target);
        let NormalizedPath::Inside(target) = tar_path::normalize(raw_target) else {
            return Err(ApplyError::HardlinkEscapesRoot {
                entry: entry.to_owned(),
                target: target_display,
            });
        };
        if target == components {
            return Ok(());
        }
        let missing = || ApplyError::HardlinkTargetMissing {
            entry: entry.to_owned(),
            target: target_display.clone(),
        };
        let Some((target_name, target_parent)) = target.split_last() else {
            return Err(ApplyError::InvalidEntry {
                entry: entry.to_owned(),
                reason: "hardlink to the root directory".to_owned(),
            });
        };
        let target_name = OsStr::from_bytes(target_name);
        let target_path = tar_path::join(&target);
        let Some(target_parent_fd) = self.open_dir(target_parent, false, entry)? else {
            return Err(missing());
        };
        match rustix::fs::statat(&target_parent_fd, target_name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => return Err(missing()),
            Err(errno) => return Err(Self::fs_error(entry, "stat", &target_path, errno)),
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                return Err(ApplyError::InvalidEntry {
                    entry: entry.to_owned(),
                    reason: format!("hardlink to directory {target_display}"),
                });
            }
            Ok(_) => {}
        }
        let path = tar_path::join(components);
        let parent_fd = self.open_parent(parent, entry)?;
        self.prepare_slot(&parent_fd, file_name, &path, false, entry)?;
        rustix::fs::linkat(
            &target_parent_fd,
            target_name,
            &parent_fd,
            file_name,
            AtFlags::empty(),
        )
        .map_err(|errno| Self::fs_error(entry, "hardlink", &path, errno))?;
        Ok(())
    }

    fn apply_whiteout(
        &mut self,
        parent: &[Vec<u8>],
        marker_name: &[u8],
        target: &[u8],
        meta: &EntryMeta,
        entry: &str,
    ) -> Result<(), ApplyError> {
        let parent_path = tar_path::join(parent);
        if marker_name == OPAQUE_WHITEOUT.as_bytes() {
            self.stats.whiteouts = self.stats.whiteouts.saturating_add(1);
            return self.apply_opaque(parent, &parent_path, entry);
        }
        if target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // `.wh..wh.*`: aufs bookkeeping (hardlink dirs, etc.), not a filesystem change.
            return Ok(());
        }
        if target.is_empty() {
            return Err(ApplyError::InvalidWhiteout {
                entry: entry.to_owned(),
            });
        }
        self.stats.whiteouts = self.stats.whiteouts.saturating_add(1);
        let target_name = OsStr::from_bytes(target);
        let mut target_path = parent_path.clone();
        if !target_path.is_empty() {
            target_path.push(b'/');
        }
        target_path.extend_from_slice(target);
        match self.opts.whiteouts {
            WhiteoutMode::Merged => {
                let Some(parent_fd) = self.open_dir(parent, false, entry)? else {
                    return Ok(());
                };
                remove_all_at(parent_fd.as_fd(), target_name)
                    .map_err(|errno| Self::fs_error(entry, "remove", &target_path, errno))?;
            }
            WhiteoutMode::OverlayLower(_) => {
                let parent_fd = self.open_parent(parent, entry)?;
                self.prepare_slot(&parent_fd, target_name, &target_path, false, entry)?;
                rustix::fs::mknodat(
                    &parent_fd,
                    target_name,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|errno| {
                    Self::fs_error(entry, "create whiteout device", &target_path, errno)
                })?;
                let whiteout_meta = EntryMeta {
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    mtime: meta.mtime,
                    xattrs: Vec::new(),
                };
                self.finish_non_regular(
                    &parent_fd,
                    target_name,
                    &target_path,
                    &whiteout_meta,
                    entry,
                    true,
                )?;
            }
        }
        Ok(())
    }

    fn apply_opaque(
        &mut self,
        parent: &[Vec<u8>],
        parent_path: &[u8],
        entry: &str,
    ) -> Result<(), ApplyError> {
        match self.opts.whiteouts {
            WhiteoutMode::Merged => {
                let dir_path = if parent_path.is_empty() {
                    &b"."[..]
                } else {
                    parent_path
                };
                let dir =
                    match open_in_root(&self.root, dir_path, OFlags::RDONLY | OFlags::DIRECTORY) {
                        Ok(dir) => dir,
                        Err(Errno::NOENT) => return Ok(()),
                        Err(errno) => {
                            return Err(Self::fs_error(
                                entry,
                                "open directory",
                                parent_path,
                                errno,
                            ));
                        }
                    };
                for child in list_dir(&dir)
                    .map_err(|errno| Self::fs_error(entry, "list", parent_path, errno))?
                {
                    let mut child_path = parent_path.to_vec();
                    if !child_path.is_empty() {
                        child_path.push(b'/');
                    }
                    child_path.extend_from_slice(child.as_bytes());
                    if self.created.contains(&child_path) {
                        continue;
                    }
                    remove_all_at(dir.as_fd(), &child)
                        .map_err(|errno| Self::fs_error(entry, "remove", &child_path, errno))?;
                }
            }
            WhiteoutMode::OverlayLower(namespace) => {
                let parent_fd = self.open_parent(parent, entry)?;
                let dir = rustix::fs::openat(
                    &parent_fd,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|errno| Self::fs_error(entry, "open directory", parent_path, errno))?;
                let xattr = match namespace {
                    OverlayXattrNamespace::Trusted => TRUSTED_OPAQUE_XATTR,
                    OverlayXattrNamespace::User => USER_OPAQUE_XATTR,
                };
                rustix::fs::fsetxattr(&dir, xattr, b"y", XattrFlags::empty()).map_err(|errno| {
                    Self::fs_error(entry, "set opaque xattr on", parent_path, errno)
                })?;
            }
        }
        Ok(())
    }

    fn set_owner(
        &self,
        fd: &OwnedFd,
        meta: &EntryMeta,
        entry: &str,
        path: &[u8],
    ) -> Result<(), ApplyError> {
        if !self.opts.preserve_ownership {
            return Ok(());
        }
        rustix::fs::fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|errno| Self::fs_error(entry, "chown", path, errno))
    }

    fn set_xattrs(
        &self,
        fd: &OwnedFd,
        meta: &EntryMeta,
        entry: &str,
        path: &[u8],
    ) -> Result<(), ApplyError> {
        for (name, value) in &meta.xattrs {
            rustix::fs::fsetxattr(fd, OsStr::from_bytes(name), value, XattrFlags::empty())
                .map_err(|errno| Self::fs_error(entry, "set xattr on", path, errno))?;
        }
        Ok(())
    }

    /// Gives directories their final mode and mtime, deepest first.
    fn finish_directories(&mut self) -> Result<(), ApplyError> {
        let deferred = std::mem::take(&mut self.deferred_dirs);
        for (path, attributes) in deferred.into_iter().rev() {
            let lookup = if path.is_empty() {
                b".".to_vec()
            } else {
                path.clone()
            };
            let dir = match open_in_root(
                &self.root,
                &lookup,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            ) {
                Ok(dir) => dir,
                // Removed or replaced by a later entry of the layer.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(errno) => {
                    return Err(Self::fs_error(
                        &tar_path::display(&path),
                        "open directory",
                        &path,
                        errno,
                    ));
                }
            };
            let entry = tar_path::display(&path);
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(attributes.mode))
                .map_err(|errno| Self::fs_error(&entry, "chmod", &path, errno))?;
            rustix::fs::futimens(&dir, &timestamps(attributes.mtime))
                .map_err(|errno| Self::fs_error(&entry, "set mtime of", &path, errno))?;
        }
        Ok(())
    }
}

/// A numeric header field: blank (only NULs and spaces) reads as 0, as Go's archive/tar
/// does (some image tools leave uid/gid empty); anything else is parsed by `parse`.
fn numeric_field(raw: &[u8], parse: impl FnOnce() -> std::io::Result<u64>) -> std::io::Result<u64> {
    if raw.iter().all(|byte| *byte == 0 || *byte == b' ') {
        Ok(0)
    } else {
        parse()
    }
}

/// Reads mode, owner, mtime and xattrs of an entry (PAX records override the header).
fn read_entry_meta(entry: &RawEntry, name: &str) -> Result<EntryMeta, ApplyError> {
    let corrupt = |source| ApplyError::Corrupt {
        after: Some(name.to_owned()),
        source,
    };
    let header = &entry.header;
    let fields = header.as_old();
    let mode = numeric_field(&fields.mode, || header.mode().map(u64::from)).map_err(corrupt)?;
    let mode = u32::try_from(mode & 0o7777).unwrap_or(0);
    let mut uid = numeric_field(&fields.uid, || header.uid()).map_err(corrupt)?;
    let mut gid = numeric_field(&fields.gid, || header.gid()).map_err(corrupt)?;
    let mtime = numeric_field(&fields.mtime, || header.mtime()).map_err(corrupt)?;
    let mut mtime = i64::try_from(mtime).unwrap_or(i64::MAX);
    let mut xattrs: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (key, value) in &entry.pax {
        if let Some(xattr_name) = key.strip_prefix(b"SCHILY.xattr.") {
            let overlay_private = xattr_name.starts_with(b"trusted.overlay.")
                || xattr_name.starts_with(b"user.overlay.");
            if !overlay_private && !xattr_name.is_empty() {
                xattrs.insert(xattr_name.to_vec(), value.clone());
            }
        } else if key == b"uid" {
            uid = parse_pax_number(value, name, "uid")?;
        } else if key == b"gid" {
            gid = parse_pax_number(value, name, "gid")?;
        } else if key == b"mtime" {
            let whole = value.split(|byte| *byte == b'.').next().unwrap_or_default();
            mtime = std::str::from_utf8(whole)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
                .ok_or_else(|| ApplyError::InvalidEntry {
                    entry: name.to_owned(),
                    reason: "unparsable PAX mtime".to_owned(),
                })?;
        }
    }
    let id = |value: u64, what: &str| {
        u32::try_from(value).map_err(|_| ApplyError::InvalidEntry {
            entry: name.to_owned(),
            reason: format!("{what} {value} does not fit in 32 bits"),
        })
    };
    Ok(EntryMeta {
        mode,
        uid: id(uid, "uid")?,
        gid: id(gid, "gid")?,
        mtime,
        xattrs: xattrs.into_iter().collect(),
    })
}

fn parse_pax_number(value: &[u8], entry: &str, key: &str) -> Result<u64, ApplyError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| ApplyError::InvalidEntry {
            entry: entry.to_owned(),
            reason: format!("unparsable PAX {key}"),
        })
}

fn timestamps(mtime: i64) -> Timestamps {
    let time = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

/// Most symlinks followed while creating one entry's parent directories.
const MAX_SYMLINK_HOPS: usize = 40;

/// Replaces the symlink at `components[depth - 1]` by its target, resolved the way
/// `RESOLVE_IN_ROOT` does (absolute targets start at the root, `..` stops at the root).
fn splice_symlink(components: &[Vec<u8>], depth: usize, target: &[u8]) -> Vec<Vec<u8>> {
    let mut spliced: Vec<Vec<u8>> = if target.starts_with(b"/") {
        Vec::new()
    } else {
        components
            .get(..depth.saturating_sub(1))
            .unwrap_or_default()
            .to_vec()
    };
    for part in target.split(|byte| *byte == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                spliced.pop();
            }
            name => spliced.push(name.to_vec()),
        }
    }
    spliced.extend(components.get(depth..).unwrap_or_default().iter().cloned());
    spliced
}

/// `openat2` relative to the root with every symlink resolved inside it.
fn open_in_root(root: &OwnedFd, path: &[u8], flags: OFlags) -> Result<OwnedFd, Errno> {
    let path = if path.is_empty() { &b"."[..] } else { path };
    let mut attempts = 0;
    loop {
        match rustix::fs::openat2(
            root,
            OsStr::from_bytes(path),
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            // The kernel asks for a retry when a concurrent rename raced the lookup.
            Err(Errno::AGAIN) if attempts < 16 => attempts += 1,
            other => return other,
        }
    }
}

fn proc_fd_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    use std::os::fd::AsRawFd;
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    path.push(name);
    path
}

/// Names in a directory, without `.` and `..`.
fn list_dir(dir: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    let mut names = Vec::new();
    for child in rustix::fs::Dir::read_from(dir)? {
        let child = child?;
        let name = child.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Removes `name` in `parent` and, for a directory, everything below it. Never follows
/// symlinks; a missing entry is not an error.
pub(crate) fn remove_all_at(parent: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(()),
        Err(errno) => return Err(errno),
    };
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return rustix::fs::unlinkat(parent, name, AtFlags::empty());
    }
    let dir = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in list_dir(&dir)? {
        remove_all_at(dir.as_fd(), &child)?;
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
}
