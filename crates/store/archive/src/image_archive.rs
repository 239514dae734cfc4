//! Image archives (`docker save` tarballs, oci-archive): a sorted streaming writer and an
//! on-disk index for reading entries lazily.
//!
//! [`ArchiveWriter`] writes named entries straight from readers of known size, in strictly
//! increasing bytewise name order (enforced, so archives are reproducible), with fixed
//! metadata: owner 0:0, empty user/group names, files 0644, directories 0755, and one mtime
//! for all (0 unless chosen). Long names use PAX `path` records.
//!
//! [`ArchiveIndex`] reads an archive file once, recording for each entry where its data
//! starts and how long it is, so a `load` can parse `manifest.json` and then stream each layer
//! blob from the file without extracting or buffering anything.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::tar_path::{self, NormalizedPath};

/// Failure while writing an image archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveWriterError {
    #[error("archive entry name {name:?} is not a clean relative path")]
    InvalidName { name: String },
    #[error("archive entry {name:?} is out of order: it must sort after {previous:?}")]
    OutOfOrder { name: String, previous: String },
    #[error("archive entry {name:?}: the reader did not yield exactly {size} bytes")]
    SizeMismatch { name: String, size: u64 },
    #[error("writing archive entry {name:?} failed: {source}")]
    Io {
        name: String,
        #[source]
        source: io::Error,
    },
}

/// Streaming, sorted tar writer for image archives (see the module docs).
pub struct ArchiveWriter<W: Write> {
    builder: tar::Builder<W>,
    previous: Option<String>,
    mtime: u64,
}

impl<W: Write> std::fmt::Debug for ArchiveWriter<W> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ArchiveWriter")
            .field("previous", &self.previous)
            .field("mtime", &self.mtime)
            .finish()
    }
}

impl<W: Write> ArchiveWriter<W> {
    /// A writer stamping every entry with mtime 0.
    pub fn new(out: W) -> Self {
        Self::with_mtime(out, 0)
    }

    /// A writer stamping every entry with `mtime` (seconds since the epoch).
    pub fn with_mtime(out: W, mtime: u64) -> Self {
        ArchiveWriter {
            builder: tar::Builder::new(out),
            previous: None,
            mtime,
        }
    }

    /// Adds a directory entry (`name/`), mode 0755.
    pub fn add_dir(&mut self, name: &str) -> Result<(), ArchiveWriterError> {
        let mut stored = clean_name(name)?;
        stored.push('/');
        self.check_order(&stored)?;
        let header = self.header(EntryType::Directory, 0o755, 0);
        self.append(&stored, header, io::empty())
    }

    /// Adds a regular file of `size` bytes read from `reader`, mode 0644.
    pub fn add_file<R: Read>(
        &mut self,
        name: &str,
        size: u64,
        reader: R,
    ) -> Result<(), ArchiveWriterError> {
        let stored = clean_name(name)?;
        self.check_order(&stored)?;
        let header = self.header(EntryType::Regular, 0o644, size);
        let mut exact = ExactReader {
            inner: reader,
            remaining: size,
        };
        self.append(&stored, header, &mut exact)?;
        let mut probe = [0u8; 1];
        let extra = exact
            .inner
            .read(&mut probe)
            .map_err(|source| ArchiveWriterError::Io {
                name: stored.clone(),
                source,
            })?;
        if extra > 0 {
            return Err(ArchiveWriterError::SizeMismatch { name: stored, size });
        }
        Ok(())
    }

    /// Adds a regular file with in-memory content (manifest.json, index.json, ...).
    pub fn add_bytes(&mut self, name: &str, content: &[u8]) -> Result<(), ArchiveWriterError> {
        self.add_file(name, content.len() as u64, content)
    }

    /// Writes the end-of-archive marker and returns the inner writer.
    pub fn finish(self) -> Result<W, ArchiveWriterError> {
        self.builder
            .into_inner()
            .map_err(|source| ArchiveWriterError::Io {
                name: "end-of-archive marker".to_owned(),
                source,
            })
    }

    fn check_order(&self, stored: &str) -> Result<(), ArchiveWriterError> {
        if let Some(previous) = &self.previous
            && stored.as_bytes() <= previous.as_bytes()
        {
            return Err(ArchiveWriterError::OutOfOrder {
                name: stored.to_owned(),
                previous: previous.clone(),
            });
        }
        Ok(())
    }

    fn header(&self, entry_type: EntryType, mode: u32, size: u64) -> Header {
        let mut header = Header::new_ustar();
        header.set_entry_type(entry_type);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(size);
        header.set_mtime(self.mtime);
        header
    }

    fn append<R: Read>(
        &mut self,
        stored: &str,
        mut header: Header,
        data: R,
    ) -> Result<(), ArchiveWriterError> {
        let size = header.size().unwrap_or(0);
        let io_error = |source: io::Error| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                ArchiveWriterError::SizeMismatch {
                    name: stored.to_owned(),
                    size,
                }
            } else {
                ArchiveWriterError::Io {
                    name: stored.to_owned(),
                    source,
                }
            }
        };
        let name_bytes = stored.as_bytes();
        let field = &mut header.as_old_mut().name;
        let kept = name_bytes.len().min(field.len());
        if let (Some(dst), Some(src)) = (field.get_mut(..kept), name_bytes.get(..kept)) {
            dst.copy_from_slice(src);
        }
        if name_bytes.len() > field.len() {
            self.builder
                .append_pax_extensions([("path", name_bytes)])
                .map_err(io_error)?;
        }
        header.set_cksum();
        self.builder.append(&header, data).map_err(io_error)?;
        self.previous = Some(stored.to_owned());
        Ok(())
    }
}

fn clean_name(name: &str) -> Result<String, ArchiveWriterError> {
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    let clean = !trimmed.is_empty()
        && trimmed
            .split('/')
            .all(|component| !component.is_empty() && component != "." && component != "..");
    if clean {
        Ok(trimmed.to_owned())
    } else {
        Err(ArchiveWriterError::InvalidName {
            name: name.to_owned(),
        })
    }
}

struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let wanted = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let read = self.inner.read(buf.get_mut(..wanted).unwrap_or_default())?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the reader ended before the announced size",
            ));
        }
        self.remaining = self.remaining.saturating_sub(read as u64);
        Ok(read)
    }
}

/// Failure while indexing or reading an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveIndexError {
    #[error("cannot read archive {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {path}: entry {entry:?} escapes the archive root")]
    EscapingEntry { path: PathBuf, entry: String },
    #[error("archive {path} has no entry {name:?}")]
    NotFound { path: PathBuf, name: String },
    #[error("archive {path}: entry {name:?} is not a regular file")]
    NotAFile { path: PathBuf, name: String },
    #[error("archive {path}: links from {name:?} loop or go too deep")]
    LinkLoop { path: PathBuf, name: String },
    #[error("archive {path}: entry {name:?} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        path: PathBuf,
        name: String,
        size: u64,
        limit: u64,
    },
}

/// Kind of an indexed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexedEntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Other,
}

/// Where an entry's data lies in the archive file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedEntry {
    /// Byte offset of the data in the archive file.
    pub offset: u64,
    pub size: u64,
    pub kind: IndexedEntryKind,
    /// Symlink or hardlink target as stored.
    pub link_target: Option<String>,
}

/// Name → data location for every entry of an archive on disk (names normalized: no `./`,
/// no trailing `/`; the last of duplicate names wins, as when extracting).
#[derive(Debug, Clone)]
pub struct ArchiveIndex {
    path: PathBuf,
    entries: BTreeMap<String, IndexedEntry>,
}

const MAX_LINK_HOPS: usize = 16;

impl ArchiveIndex {
    /// Reads the headers of the (uncompressed) tar file at `path`, seeking over the data.
    pub fn build(path: &Path) -> Result<Self, ArchiveIndexError> {
        let io_error = |source| ArchiveIndexError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_error)?;
        let mut archive = tar::Archive::new(file);
        let mut entries = BTreeMap::new();
        for entry in archive.entries_with_seek().map_err(io_error)? {
            let entry = entry.map_err(io_error)?;
            let raw_name = entry.path_bytes().into_owned();
            let name = match tar_path::normalize(&raw_name) {
                NormalizedPath::Inside(components) if !components.is_empty() => {
                    tar_path::display(&tar_path::join(&components))
                }
                NormalizedPath::Inside(_) => continue,
                NormalizedPath::Escapes => {
                    return Err(ArchiveIndexError::EscapingEntry {
                        path: path.to_path_buf(),
                        entry: tar_path::display(&raw_name),
                    });
                }
            };
            let kind = match entry.header().entry_type() {
                EntryType::Regular | EntryType::Continuous => IndexedEntryKind::File,
                EntryType::Directory => IndexedEntryKind::Dir,
                EntryType::Symlink => IndexedEntryKind::Symlink,
                EntryType::Link => IndexedEntryKind::Hardlink,
                _ => IndexedEntryKind::Other,
            };
            let link_target = entry
                .link_name_bytes()
                .map(|target| tar_path::display(&target));
            let indexed = IndexedEntry {
                offset: entry.raw_file_position(),
                size: entry.size(),
                kind,
                link_target,
            };
            entries.insert(name, indexed);
        }
        Ok(ArchiveIndex {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// All entries, sorted by name.
    pub fn entries(&self) -> &BTreeMap<String, IndexedEntry> {
        &self.entries
    }

    /// The entry named `name` (`./x`, `/x` and `x/` all mean `x`), without following links.
    pub fn get(&self, name: &str) -> Option<&IndexedEntry> {
        match tar_path::normalize(name.as_bytes()) {
            NormalizedPath::Inside(components) => self
                .entries
                .get(&tar_path::display(&tar_path::join(&components))),
            NormalizedPath::Escapes => None,
        }
    }

    /// Follows symlinks (relative to their directory) and hardlinks to a regular file.
    pub fn resolve_file(&self, name: &str) -> Result<(String, &IndexedEntry), ArchiveIndexError> {
        let mut current = match tar_path::normalize(name.as_bytes()) {
            NormalizedPath::Inside(components) => tar_path::display(&tar_path::join(&components)),
            NormalizedPath::Escapes => return Err(self.not_found(name)),
        };
        for _ in 0..MAX_LINK_HOPS {
            let entry = self
                .entries
                .get(&current)
                .ok_or_else(|| self.not_found(&current))?;
            let next = match (entry.kind, &entry.link_target) {
                (IndexedEntryKind::File, _) => return Ok((current, entry)),
                (IndexedEntryKind::Symlink, Some(target)) => match current.rsplit_once('/') {
                    Some((dir, _)) if !target.starts_with('/') => format!("{dir}/{target}"),
                    _ => target.clone(),
                },
                (IndexedEntryKind::Hardlink, Some(target)) => target.clone(),
                _ => {
                    return Err(ArchiveIndexError::NotAFile {
                        path: self.path.clone(),
                        name: current,
                    });
                }
            };
            current = match tar_path::normalize(next.as_bytes()) {
                NormalizedPath::Inside(components) => {
                    tar_path::display(&tar_path::join(&components))
                }
                NormalizedPath::Escapes => return Err(self.not_found(&next)),
            };
        }
        Err(ArchiveIndexError::LinkLoop {
            path: self.path.clone(),
            name: name.to_owned(),
        })
    }

    /// Opens the regular file `name` (after links) as a reader over its bytes in the archive.
    pub fn open(&self, name: &str) -> Result<io::Take<File>, ArchiveIndexError> {
        let (_, entry) = self.resolve_file(name)?;
        let io_error = |source| ArchiveIndexError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = File::open(&self.path).map_err(io_error)?;
        file.seek(SeekFrom::Start(entry.offset)).map_err(io_error)?;
        Ok(file.take(entry.size))
    }

    /// Reads a small file entirely (manifest.json, index.json), refusing more than `limit` bytes.
    pub fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>, ArchiveIndexError> {
        let (resolved, entry) = self.resolve_file(name)?;
        if entry.size > limit {
            return Err(ArchiveIndexError::TooLarge {
                path: self.path.clone(),
                name: resolved,
                size: entry.size,
                limit,
            });
        }
        let mut content = Vec::new();
        self.open(name)?
            .read_to_end(&mut content)
            .map_err(|source| ArchiveIndexError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(content)
    }

    fn not_found(&self, name: &str) -> ArchiveIndexError {
        ArchiveIndexError::NotFound {
            path: self.path.clone(),
            name: name.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_archive() -> Vec<u8> {
        let mut writer = ArchiveWriter::new(Vec::new());
        let long_name = format!("blobs/sha256/{}", "a".repeat(120));
        writer.add_dir("blobs").expect("dir");
        writer.add_dir("blobs/sha256").expect("dir");
        writer.add_bytes(&long_name, b"long").expect("long");
        writer
            .add_file("blobs/sha256/layer", 5, &b"12345"[..])
            .expect("file");
        writer.add_bytes("index.json", b"{}").expect("index");
        writer
            .add_bytes("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}")
            .expect("layout");
        writer.finish().expect("finish")
    }

    #[test]
    fn writer_is_deterministic_and_listable_by_gnu_tar() {
        let archive = sample_archive();
        assert_eq!(archive, sample_archive());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.tar");
        std::fs::write(&path, &archive).expect("write");
        let output = std::process::Command::new("tar")
            .arg("-tf")
            .arg(&path)
            .output()
            .expect("run tar");
        assert!(output.status.success(), "{output:?}");
        let listing = String::from_utf8_lossy(&output.stdout);
        let names: Vec<&str> = listing.lines().collect();
        let long_name = format!("blobs/sha256/{}", "a".repeat(120));
        assert_eq!(
            names,
            vec![
                "blobs/",
                "blobs/sha256/",
                long_name.as_str(),
                "blobs/sha256/layer",
                "index.json",
                "oci-layout"
            ]
        );
    }

    #[test]
    fn writer_rejects_disorder_bad_names_and_wrong_sizes() {
        let mut writer = ArchiveWriter::new(Vec::new());
        writer.add_bytes("b", b"").expect("b");
        assert!(matches!(
            writer.add_bytes("a", b""),
            Err(ArchiveWriterError::OutOfOrder { .. })
        ));
        assert!(matches!(
            writer.add_bytes("b", b""),
            Err(ArchiveWriterError::OutOfOrder { .. })
        ));
        for bad in ["", "/abs", "x/../y", "./x", "x//y"] {
            assert!(
                matches!(
                    writer.add_bytes(bad, b""),
                    Err(ArchiveWriterError::InvalidName { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            writer.add_file("c", 10, &b"short"[..]),
            Err(ArchiveWriterError::SizeMismatch { .. })
        ));
        let mut writer = ArchiveWriter::new(Vec::new());
        assert!(matches!(
            writer.add_file("d", 2, &b"longer"[..]),
            Err(ArchiveWriterError::SizeMismatch { .. })
        ));
    }

    #[test]
    fn index_reads_entries_lazily_and_follows_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.tar");
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = Header::new_gnu();
        header.set_size(6);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "./abc/layer.tar", &b"layer!"[..])
            .expect("append");
        let mut link = Header::new_gnu();
        link.set_entry_type(EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "def/layer.tar", "../abc/layer.tar")
            .expect("link");
        let mut hard = Header::new_gnu();
        hard.set_entry_type(EntryType::Link);
        hard.set_size(0);
        builder
            .append_link(&mut hard, "hard.tar", "abc/layer.tar")
            .expect("hardlink");
        std::fs::write(&path, builder.into_inner().expect("finish")).expect("write");

        let index = ArchiveIndex::build(&path).expect("index");
        let layer = index.get("abc/layer.tar").expect("entry");
        assert_eq!((layer.size, layer.kind), (6, IndexedEntryKind::File));
        for name in [
            "abc/layer.tar",
            "./abc/layer.tar",
            "def/layer.tar",
            "hard.tar",
        ] {
            let mut content = Vec::new();
            index
                .open(name)
                .expect("open")
                .read_to_end(&mut content)
                .expect("read");
            assert_eq!(content, b"layer!", "{name}");
        }
        assert!(matches!(
            index.read_small("abc/layer.tar", 3),
            Err(ArchiveIndexError::TooLarge { .. })
        ));
        assert!(matches!(
            index.open("missing"),
            Err(ArchiveIndexError::NotFound { .. })
        ));
    }
}
