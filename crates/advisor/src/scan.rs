//! The single streaming pass over an image's layer tars. Each layer is read
//! once; only per-path metadata (kind, size, mode, owner, content sha256) is
//! kept, never file contents. Whiteouts (`.wh.NAME`) and opaque-directory
//! markers (`.wh..wh..opq`) remove lower-layer paths, as overlayfs would.

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What kind of filesystem entry a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    /// A regular file (its bytes count).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to another path of the same layer (no bytes of its own).
    HardLink,
    /// A device node or FIFO.
    Special,
}

/// One version of a path, as one layer wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileVersion {
    /// Index of the layer that wrote this version.
    pub layer: usize,
    /// Kind of entry.
    pub kind: EntryKind,
    /// Content bytes (0 for everything but regular files).
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// sha256 of the content (regular files), hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Link target (symlinks and hard links).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// How a later layer made a version invisible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HiddenBy {
    /// A later layer wrote the same path again.
    Overwritten,
    /// A later layer deleted it (whiteout, opaque directory, or a parent replaced).
    Deleted,
}

/// A file version that is stored in the image but not visible in its final
/// filesystem: its bytes are reclaimable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HiddenVersion {
    /// The path (no leading slash).
    pub path: String,
    /// Content bytes of the hidden version.
    pub size: u64,
    /// Layer that added the version.
    pub added_in: usize,
    /// Layer that hid it.
    pub hidden_in: usize,
    /// How.
    pub how: HiddenBy,
}

/// A file that a later layer rewrote with the same content and size but a
/// different mode or owner (a chmod/chown copy-up): the whole file is stored twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataRewrite {
    /// The path (no leading slash).
    pub path: String,
    /// Content bytes stored again.
    pub size: u64,
    /// Layer of the earlier version.
    pub original_layer: usize,
    /// Layer that rewrote it.
    pub rewritten_in: usize,
    /// What changed, e.g. `mode 644->755`, `uid 0->1000`.
    pub changed: Vec<String>,
}

/// Counts and sizes of one layer, measured while streaming it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerScan {
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Sum of the regular files' content bytes in this layer.
    pub content_bytes: u64,
    /// Paths (not directories) new in the final-so-far filesystem.
    pub files_added: u64,
    /// Paths (not directories) that replaced a lower layer's version.
    pub files_changed: u64,
    /// Paths (not directories) removed by whiteouts or opaque directories.
    pub files_removed: u64,
    /// Entries in the tar (including directories and whiteouts).
    pub entries: u64,
}

/// One tar entry of a layer as the scanner needs it, independent of the layers below
/// (what [`Scanner::add_entries`] applies). A layer's list can be kept and applied again
/// without reading the layer: the store caches them by diff_id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerItem {
    /// `.wh..wh..opq` in `parent`: everything lower layers put below it goes.
    Opaque {
        /// The directory made opaque.
        parent: String,
    },
    /// `.wh.NAME`: `victim` and everything below it goes.
    Whiteout {
        /// The path deleted.
        victim: String,
    },
    /// A file, directory, link or special file.
    Entry {
        /// The normalized path.
        path: String,
        /// Its kind.
        kind: EntryKind,
        /// Content bytes (regular files).
        size: u64,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u64,
        /// Group.
        gid: u64,
        /// sha256 of the content (regular files), hex.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        /// Link target as written (symlinks and hard links).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link_target: Option<String>,
    },
}

/// Everything the scanner reads from one layer tar.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerEntries {
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// Entries in the tar (including directories and whiteouts).
    pub entries: u64,
    /// The entries that matter, in tar order.
    pub items: Vec<LayerItem>,
}

/// Streams one uncompressed layer tar into its [`LayerEntries`]; the reader is read to
/// its end (so a verifying reader below gets to check the digest).
pub fn read_layer_entries(reader: impl Read) -> io::Result<LayerEntries> {
    let mut out = LayerEntries::default();
    let mut counting = CountingReader {
        inner: reader,
        count: 0,
    };
    {
        let mut archive = tar::Archive::new(&mut counting);
        for entry in archive.entries()? {
            let mut entry = entry?;
            out.entries += 1;
            let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(path) = normalize_path(&raw_path) else {
                continue;
            };
            let (parent, name) = split_parent(&path);
            if name == stowage_archive::OPAQUE_WHITEOUT {
                out.items.push(LayerItem::Opaque {
                    parent: parent.to_owned(),
                });
                continue;
            }
            if let Some(target) = name.strip_prefix(stowage_archive::WHITEOUT_PREFIX) {
                out.items.push(LayerItem::Whiteout {
                    victim: join(parent, target),
                });
                continue;
            }
            let header = entry.header();
            let mode = header.mode().map_err(|e| invalid(format!("{path}: {e}")))?;
            let uid = header.uid().unwrap_or(0);
            let gid = header.gid().unwrap_or(0);
            let entry_type = header.entry_type();
            let link_target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let (kind, size, sha256) = if entry_type.is_file() {
                let mut hasher = Sha256::new();
                let size = io::copy(&mut entry, &mut hasher)?;
                (EntryKind::File, size, Some(hex_lower(&hasher.finalize())))
            } else if entry_type.is_dir() {
                (EntryKind::Dir, 0, None)
            } else if entry_type.is_symlink() {
                (EntryKind::Symlink, 0, None)
            } else if entry_type.is_hard_link() {
                (EntryKind::HardLink, 0, None)
            } else if entry_type.is_pax_global_extensions()
                || entry_type.is_pax_local_extensions()
                || entry_type.is_gnu_longname()
                || entry_type.is_gnu_longlink()
            {
                continue;
            } else {
                (EntryKind::Special, 0, None)
            };
            out.items.push(LayerItem::Entry {
                path,
                kind,
                size,
                mode: mode & 0o7777,
                uid,
                gid,
                sha256,
                link_target,
            });
        }
    }
    // Read past the end-of-archive blocks to the end of the stream.
    io::copy(&mut counting, &mut io::sink())?;
    out.tar_bytes = counting.count;
    Ok(out)
}

/// Walks layers in order and keeps the merged view.
#[derive(Debug, Default)]
pub struct Scanner {
    files: BTreeMap<String, FileVersion>,
    layers: Vec<LayerScan>,
    hidden: Vec<HiddenVersion>,
    rewrites: Vec<MetadataRewrite>,
}

/// The result of scanning every layer.
#[derive(Debug, Clone, Default)]
pub struct ImageScan {
    /// Per layer, in order.
    pub layers: Vec<LayerScan>,
    /// The final filesystem: path → surviving version.
    pub files: BTreeMap<String, FileVersion>,
    /// Every stored-but-invisible version, in the order they were hidden.
    pub hidden: Vec<HiddenVersion>,
    /// Metadata-only rewrites.
    pub rewrites: Vec<MetadataRewrite>,
}

/// Counts the bytes read through it.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.count += read as u64;
        Ok(read)
    }
}

/// A tar path in the form the scanner keys on: no `./`, no leading or
/// trailing `/`. `None` for the root itself.
pub fn normalize_path(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", path),
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Scanner {
    /// An empty scanner (no layers yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Streams one uncompressed layer tar. The reader is read to its end
    /// (so a verifying reader below gets to check the digest).
    pub fn add_layer(&mut self, reader: impl Read) -> io::Result<()> {
        let entries = read_layer_entries(reader)?;
        self.add_entries(entries);
        Ok(())
    }

    /// Applies one layer's entries on top of the layers added so far.
    pub fn add_entries(&mut self, entries: LayerEntries) {
        let index = self.layers.len();
        let mut layer = LayerScan {
            tar_bytes: entries.tar_bytes,
            entries: entries.entries,
            ..LayerScan::default()
        };
        for item in entries.items {
            match item {
                LayerItem::Opaque { parent } => {
                    let prefix = format!("{parent}/");
                    let below: Vec<String> = self
                        .files
                        .range(prefix.clone()..)
                        .take_while(|(p, _)| p.starts_with(&prefix))
                        .filter(|(_, v)| v.layer < index)
                        .map(|(p, _)| p.clone())
                        .collect();
                    for victim in below {
                        self.remove(&victim, index, &mut layer);
                    }
                }
                LayerItem::Whiteout { victim } => self.remove_tree(&victim, index, &mut layer),
                LayerItem::Entry {
                    path,
                    kind,
                    size,
                    mode,
                    uid,
                    gid,
                    sha256,
                    link_target,
                } => {
                    // A hard link shares its target's bytes; it inherits the
                    // target's hash so a relinked file is still recognised.
                    let sha256 = if kind == EntryKind::HardLink {
                        link_target
                            .as_deref()
                            .and_then(normalize_path)
                            .and_then(|t| self.files.get(&t))
                            .and_then(|v| v.sha256.clone())
                    } else {
                        sha256
                    };
                    layer.content_bytes += size;
                    let version = FileVersion {
                        layer: index,
                        kind,
                        size,
                        mode,
                        uid,
                        gid,
                        sha256,
                        link_target,
                    };
                    self.write(path, version, index, &mut layer);
                }
            }
        }
        self.layers.push(layer);
    }

    /// A version of `path` written by layer `index`.
    fn write(&mut self, path: String, version: FileVersion, index: usize, layer: &mut LayerScan) {
        use std::collections::btree_map::Entry as Slot;
        let is_dir = version.kind == EntryKind::Dir;
        let mut slot = match self.files.entry(path) {
            Slot::Vacant(slot) => {
                if !is_dir {
                    layer.files_added += 1;
                }
                slot.insert(version);
                return;
            }
            Slot::Occupied(slot) => slot,
        };
        let old_kind = slot.get().kind;
        if old_kind == EntryKind::Dir && is_dir {
            // A directory's metadata changed (or was repeated): nothing hidden.
            slot.insert(version);
            return;
        }
        if old_kind != EntryKind::Dir {
            // A file (or link) replaced in place.
            let path = slot.key().clone();
            let old = std::mem::replace(slot.get_mut(), version);
            let new = slot.get();
            if !is_dir {
                layer.files_changed += 1;
            }
            if old.kind == EntryKind::File
                && new.kind == EntryKind::File
                && old.sha256 == new.sha256
                && old.size == new.size
            {
                let mut changed = Vec::new();
                if old.mode != new.mode {
                    changed.push(format!("mode {:o}->{:o}", old.mode, new.mode));
                }
                if old.uid != new.uid {
                    changed.push(format!("uid {}->{}", old.uid, new.uid));
                }
                if old.gid != new.gid {
                    changed.push(format!("gid {}->{}", old.gid, new.gid));
                }
                if !changed.is_empty() {
                    self.rewrites.push(MetadataRewrite {
                        path: path.clone(),
                        size: new.size,
                        original_layer: old.layer,
                        rewritten_in: index,
                        changed,
                    });
                }
            }
            self.hidden.push(HiddenVersion {
                path,
                size: old.size,
                added_in: old.layer,
                hidden_in: index,
                how: HiddenBy::Overwritten,
            });
            return;
        }
        // A non-directory replaces a directory: its whole subtree goes.
        let (path, _) = slot.remove_entry();
        let prefix = format!("{path}/");
        let below: Vec<String> = self
            .files
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for victim in below {
            self.remove(&victim, index, layer);
        }
        layer.files_added += 1;
        self.files.insert(path, version);
    }

    /// Removes `path` and everything below it (a whiteout).
    fn remove_tree(&mut self, path: &str, index: usize, layer: &mut LayerScan) {
        let prefix = format!("{path}/");
        let mut victims: Vec<String> = self
            .files
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        if self.files.contains_key(path) {
            victims.push(path.to_owned());
        }
        for victim in victims {
            self.remove(&victim, index, layer);
        }
    }

    fn remove(&mut self, path: &str, index: usize, layer: &mut LayerScan) {
        if let Some(old) = self.files.remove(path)
            && old.kind != EntryKind::Dir
        {
            layer.files_removed += 1;
            self.hidden.push(HiddenVersion {
                path: path.to_owned(),
                size: old.size,
                added_in: old.layer,
                hidden_in: index,
                how: HiddenBy::Deleted,
            });
        }
    }

    /// The scan so far.
    pub fn finish(self) -> ImageScan {
        ImageScan {
            layers: self.layers,
            files: self.files,
            hidden: self.hidden,
            rewrites: self.rewrites,
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}
