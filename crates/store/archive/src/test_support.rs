//! Test helpers: snapshots of trees on disk, and raw tar building for malicious archives.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use stowage_digest::Digest;

use crate::writer::read_xattrs;

/// Everything the round trip must preserve about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeSnapshot {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub content: Option<Digest>,
    pub symlink_target: Option<Vec<u8>>,
    pub rdev: u64,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// A tree: nodes by relative path, plus hardlink groups (sets of paths sharing an inode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeSnapshot {
    pub nodes: BTreeMap<Vec<u8>, NodeSnapshot>,
    pub hardlink_groups: BTreeSet<BTreeSet<Vec<u8>>>,
}

/// Snapshots the tree under `root` (the root itself excluded). `compare_dir_mtime` is false
/// when directory mtimes are not meaningful for a comparison.
pub(crate) fn snapshot(root: &Path, compare_dir_mtime: bool) -> TreeSnapshot {
    let mut nodes = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), BTreeSet<Vec<u8>>> = HashMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .expect("under root")
                .as_os_str()
                .as_bytes()
                .to_vec();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let file_type = meta.file_type();
            let kind = if file_type.is_dir() {
                pending.push(path.clone());
                "dir"
            } else if file_type.is_file() {
                "file"
            } else if file_type.is_symlink() {
                "symlink"
            } else if file_type.is_char_device() {
                "char"
            } else if file_type.is_block_device() {
                "block"
            } else if file_type.is_fifo() {
                "fifo"
            } else {
                "other"
            };
            let content = file_type.is_file().then(|| {
                let mut bytes = Vec::new();
                std::fs::File::open(&path)
                    .expect("open")
                    .read_to_end(&mut bytes)
                    .expect("read");
                Digest::of(&bytes)
            });
            let symlink_target = file_type.is_symlink().then(|| {
                std::fs::read_link(&path)
                    .expect("readlink")
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            });
            if !file_type.is_dir() && meta.nlink() > 1 {
                inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_default()
                    .insert(relative.clone());
            }
            let xattrs = read_xattrs(&path)
                .expect("xattrs")
                .into_iter()
                .filter(|(name, _)| !name.starts_with(b"security.selinux"))
                .collect();
            nodes.insert(
                relative,
                NodeSnapshot {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    size: if file_type.is_file() { meta.len() } else { 0 },
                    mtime: if file_type.is_dir() && !compare_dir_mtime {
                        0
                    } else {
                        meta.mtime()
                    },
                    content,
                    symlink_target,
                    rdev: meta.rdev(),
                    xattrs,
                },
            );
        }
    }
    let hardlink_groups = inodes
        .into_values()
        .filter(|group| group.len() > 1)
        .collect();
    TreeSnapshot {
        nodes,
        hardlink_groups,
    }
}

/// Sets the mtime (and atime) of a path without following symlinks.
pub(crate) fn set_times(path: &Path, atime: i64, mtime: i64) {
    let timestamps = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: atime,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &timestamps,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("utimensat");
}

/// Builds tar streams with raw, unvalidated names (for malicious archives).
pub(crate) struct RawTar {
    builder: tar::Builder<Vec<u8>>,
}

impl RawTar {
    pub fn new() -> Self {
        RawTar {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &[u8], entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(entry_type);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header.set_size(size);
        let field = &mut header.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        header
    }

    pub fn file(mut self, name: &str, content: &[u8]) -> Self {
        let mut header = Self::header(
            name.as_bytes(),
            tar::EntryType::Regular,
            0o644,
            content.len() as u64,
        );
        header.set_cksum();
        self.builder.append(&header, content).expect("append");
        self
    }

    pub fn file_with_mode(mut self, name: &str, mode: u32, mtime: u64, content: &[u8]) -> Self {
        let mut header = Self::header(
            name.as_bytes(),
            tar::EntryType::Regular,
            mode,
            content.len() as u64,
        );
        header.set_mtime(mtime);
        header.set_cksum();
        self.builder.append(&header, content).expect("append");
        self
    }

    pub fn dir(mut self, name: &str, mode: u32, mtime: u64) -> Self {
        let mut header = Self::header(name.as_bytes(), tar::EntryType::Directory, mode, 0);
        header.set_mtime(mtime);
        header.set_cksum();
        self.builder
            .append(&header, std::io::empty())
            .expect("append");
        self
    }

    pub fn link(mut self, name: &str, entry_type: tar::EntryType, target: &str) -> Self {
        let mut header = Self::header(name.as_bytes(), entry_type, 0o777, 0);
        let field = &mut header.as_old_mut().linkname;
        field.fill(0);
        field[..target.len()].copy_from_slice(target.as_bytes());
        header.set_cksum();
        self.builder
            .append(&header, std::io::empty())
            .expect("append");
        self
    }

    pub fn device(
        mut self,
        name: &str,
        entry_type: tar::EntryType,
        major: u32,
        minor: u32,
    ) -> Self {
        let mut header = Self::header(name.as_bytes(), entry_type, 0o666, 0);
        header.set_device_major(major).expect("major");
        header.set_device_minor(minor).expect("minor");
        header.set_cksum();
        self.builder
            .append(&header, std::io::empty())
            .expect("append");
        self
    }

    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        self.builder
            .append_pax_extensions(records.iter().map(|(key, value)| (*key, *value)))
            .expect("pax");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish")
    }
}
