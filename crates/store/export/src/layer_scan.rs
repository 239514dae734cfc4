//! Streaming layer validation: reads an uncompressed layer tar once, computes its diff_id,
//! copies every byte to a sink (the compressor feeding a blob), and rejects entries that
//! could write outside the root when applied.
//!
//! The tar headers are parsed here rather than with `tar::Archive`, because tar-rs splits
//! PAX records on newlines and so loses the `path` and `size` records that follow a binary
//! xattr value containing `0x0a`; records are parsed by their length prefix, as POSIX says.
//! Data is never buffered: the scanner only looks at headers and skips data blocks.
//!
//! Rules (see [`EntryPolicy`]):
//! - entry names are normalized lexically (a leading `/` and `.` components are dropped, as
//!   Docker does); a `..` that climbs above the root is rejected;
//! - a hardlink's target must be a relative path that stays inside the root (absolute
//!   targets are rejected: no layer writer produces them);
//! - a symlink may point anywhere (that is legal in a layer), but a later entry of the same
//!   layer whose path goes *through* a symlink pointing outside the root is rejected (the
//!   applier would contain it, but such a layer is malicious or broken);
//! - character and block devices are rejected unless [`EntryPolicy::allow_devices`].
//!
//! Header-only entry types (links, directories, devices, FIFOs) carry no data, as in Go's
//! `archive/tar`, which wrote most of the layers in circulation.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use stowage_digest::{Digest, Hasher};
use tar::EntryType;

const BLOCK: usize = 512;
/// Largest PAX or GNU long-name extension accepted.
const MAX_EXTENSION: u64 = 1024 * 1024;

/// What a layer may contain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryPolicy {
    /// Accept character and block device nodes (a rootfs import of a full system does).
    pub allow_devices: bool,
}

/// What [`scan_layer`] found in a valid layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerScan {
    /// sha256 of every byte of the tar stream.
    pub diff_id: Digest,
    /// Bytes in the tar stream.
    pub size: u64,
    /// Entries (extension headers not counted).
    pub entries: u64,
}

/// Why a layer was refused.
#[derive(Debug, thiserror::Error)]
pub enum LayerScanError {
    /// An entry would write outside the root, or is not allowed.
    #[error("unsafe tar entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry name as stored.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream is not a valid tar.
    #[error("malformed tar stream after {offset} bytes: {message}")]
    Malformed {
        /// Bytes read before the problem.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// Reading the input or writing the sink failed (includes a truncated stream).
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads `input` to its end, validating each entry, hashing, and copying every byte to
/// `sink`; returns the scan result and the sink.
pub fn scan_layer<R: Read, W: Write>(
    input: R,
    sink: W,
    policy: &EntryPolicy,
) -> Result<(LayerScan, W), LayerScanError> {
    let mut tee = Tee {
        inner: input,
        sink,
        hasher: Hasher::new(),
    };
    let mut checker = EntryChecker {
        policy: *policy,
        escaping_symlinks: BTreeSet::new(),
    };
    let mut entries = 0u64;
    let mut pending = PendingExtensions::default();
    let mut block = [0u8; BLOCK];
    loop {
        if !read_block(&mut tee, &mut block)? {
            break; // end of input without an end-of-archive marker: accepted, as Docker does
        }
        if block.iter().all(|b| *b == 0) {
            break;
        }
        let offset = tee.hasher.len();
        let header = tar::Header::from_byte_slice(&block);
        verify_checksum(&block).map_err(|message| LayerScanError::Malformed { offset, message })?;
        let header_size = header.entry_size().map_err(|e| LayerScanError::Malformed {
            offset,
            message: format!("bad size field: {e}"),
        })?;
        let entry_type = header.entry_type();
        match entry_type {
            EntryType::XHeader => {
                let data = read_extension(&mut tee, header_size, offset)?;
                pending.apply_pax(&data, offset)?;
                continue;
            }
            EntryType::XGlobalHeader => {
                skip_data(&mut tee, header_size)?;
                continue;
            }
            EntryType::GNULongName => {
                pending.path = Some(trim_nul(read_extension(&mut tee, header_size, offset)?));
                continue;
            }
            EntryType::GNULongLink => {
                pending.link = Some(trim_nul(read_extension(&mut tee, header_size, offset)?));
                continue;
            }
            _ => {}
        }
        let path = pending
            .path
            .take()
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link = pending
            .link
            .take()
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let size = pending.size.take().unwrap_or(header_size);
        checker.check(&path, entry_type, link.as_deref())?;
        entries += 1;
        if !is_header_only(entry_type) {
            skip_data(&mut tee, size)?;
        }
    }
    io::copy(&mut tee, &mut io::sink())?;
    let Tee { sink, hasher, .. } = tee;
    let size = hasher.len();
    Ok((
        LayerScan {
            diff_id: hasher.finish(),
            size,
            entries,
        },
        sink,
    ))
}

/// Copies what it reads into the sink and the hasher.
struct Tee<R, W> {
    inner: R,
    sink: W,
    hasher: Hasher,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        let chunk = buf.get(..read).unwrap_or_default();
        self.hasher.update(chunk);
        self.sink.write_all(chunk)?;
        Ok(read)
    }
}

/// Extension values waiting for the entry they describe.
#[derive(Default)]
struct PendingExtensions {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
}

impl PendingExtensions {
    fn apply_pax(&mut self, data: &[u8], offset: u64) -> Result<(), LayerScanError> {
        for (key, value) in parse_pax_records(data)
            .map_err(|message| LayerScanError::Malformed { offset, message })?
        {
            match key {
                b"path" => self.path = Some(value.to_vec()),
                b"linkpath" => self.link = Some(value.to_vec()),
                b"size" => {
                    let parsed = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or_else(|| LayerScanError::Malformed {
                            offset,
                            message: "PAX size record is not a number".to_owned(),
                        })?;
                    self.size = Some(parsed);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One PAX record: key and value bytes.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// Parses `"<len> <key>=<value>\n"` records by their length prefix.
pub(crate) fn parse_pax_records(mut data: &[u8]) -> Result<Vec<PaxRecord<'_>>, String> {
    let mut records = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|b| *b == 0) {
            break;
        }
        let space = data
            .iter()
            .position(|b| *b == b' ')
            .ok_or("PAX record without a length")?;
        let length: usize = std::str::from_utf8(data.get(..space).unwrap_or_default())
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or("PAX record length is not a number")?;
        let record = data
            .get(..length)
            .ok_or("PAX record longer than its header")?;
        let body = record
            .get(space + 1..length.saturating_sub(1))
            .ok_or("PAX record too short")?;
        if record.last() != Some(&b'\n') {
            return Err("PAX record does not end with a newline".to_owned());
        }
        let equals = body
            .iter()
            .position(|b| *b == b'=')
            .ok_or("PAX record without '='")?;
        let key = body.get(..equals).unwrap_or_default();
        let value = body.get(equals + 1..).unwrap_or_default();
        records.push((key, value));
        data = data.get(length..).unwrap_or_default();
    }
    Ok(records)
}

fn is_header_only(entry_type: EntryType) -> bool {
    matches!(
        entry_type,
        EntryType::Link
            | EntryType::Symlink
            | EntryType::Char
            | EntryType::Block
            | EntryType::Directory
            | EntryType::Fifo
    )
}

fn verify_checksum(block: &[u8; BLOCK]) -> Result<(), String> {
    let header = tar::Header::from_byte_slice(block);
    let stored = header
        .cksum()
        .map_err(|e| format!("bad header checksum field: {e}"))?;
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    if stored != computed {
        return Err(format!(
            "header checksum is {stored}, computed {computed} (not a tar stream, or corrupt)"
        ));
    }
    Ok(())
}

/// Reads one 512-byte block; `false` at a clean end of input, an error if it ends mid-block.
fn read_block(reader: &mut impl Read, block: &mut [u8; BLOCK]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < BLOCK {
        let read = reader.read(block.get_mut(filled..).unwrap_or_default())?;
        if read == 0 {
            if filled == 0 {
                return Ok(false);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tar stream ends in the middle of a header",
            ));
        }
        filled += read;
    }
    Ok(true)
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64)
}

fn skip_data(reader: &mut impl Read, size: u64) -> io::Result<()> {
    let wanted = padded(size);
    let copied = io::copy(&mut reader.take(wanted), &mut io::sink())?;
    if copied != wanted {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "tar stream is truncated: an entry needs {wanted} data bytes, only {copied} follow"
            ),
        ));
    }
    Ok(())
}

fn read_extension(
    reader: &mut impl Read,
    size: u64,
    offset: u64,
) -> Result<Vec<u8>, LayerScanError> {
    if size > MAX_EXTENSION {
        return Err(LayerScanError::Malformed {
            offset,
            message: format!(
                "extension header of {size} bytes is over the {MAX_EXTENSION}-byte limit"
            ),
        });
    }
    let mut data = Vec::new();
    reader.take(size).read_to_end(&mut data)?;
    if data.len() as u64 != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "tar stream is truncated inside an extension header",
        )
        .into());
    }
    let padding = padded(size) - size;
    let skipped = io::copy(&mut reader.take(padding), &mut io::sink())?;
    if skipped != padding {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "tar stream is truncated inside an extension header",
        )
        .into());
    }
    Ok(data)
}

fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// Lexically normalized path components, or `None` when `..` climbs above the root.
fn normalize(path: &[u8]) -> Option<Vec<&[u8]>> {
    let mut components: Vec<&[u8]> = Vec::new();
    for component in path.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                components.pop()?;
            }
            other => components.push(other),
        }
    }
    Some(components)
}

/// Per-layer state of the entry rules.
struct EntryChecker {
    policy: EntryPolicy,
    /// Symlinks of this layer whose target leaves the root.
    escaping_symlinks: BTreeSet<Vec<u8>>,
}

impl EntryChecker {
    fn check(
        &mut self,
        path: &[u8],
        entry_type: EntryType,
        link: Option<&[u8]>,
    ) -> Result<(), LayerScanError> {
        let unsafe_entry = |reason: String| LayerScanError::UnsafeEntry {
            entry: String::from_utf8_lossy(path).into_owned(),
            reason,
        };
        let components = normalize(path)
            .ok_or_else(|| unsafe_entry("its path climbs out of the root with `..`".into()))?;
        for depth in 1..components.len() {
            let parent = components.get(..depth).unwrap_or_default().join(&b'/');
            if self.escaping_symlinks.contains(&parent) {
                return Err(unsafe_entry(format!(
                    "it is written through the symlink {:?}, which points outside the root",
                    String::from_utf8_lossy(&parent)
                )));
            }
        }
        let joined = components.join(&b'/');
        self.escaping_symlinks.remove(&joined);
        match entry_type {
            EntryType::Link => {
                let target =
                    link.ok_or_else(|| unsafe_entry("hardlink without a target".into()))?;
                if target.starts_with(b"/") {
                    return Err(unsafe_entry(format!(
                        "hardlink target {:?} is an absolute path (outside the layer root)",
                        String::from_utf8_lossy(target)
                    )));
                }
                if normalize(target).is_none_or(|c| c.is_empty()) {
                    return Err(unsafe_entry(format!(
                        "hardlink target {:?} points outside the root",
                        String::from_utf8_lossy(target)
                    )));
                }
            }
            EntryType::Symlink => {
                let target = link.unwrap_or_default();
                let escapes = if target.starts_with(b"/") {
                    true
                } else {
                    let parent_len = components.len().saturating_sub(1);
                    let mut resolved: Vec<u8> =
                        components.get(..parent_len).unwrap_or_default().join(&b'/');
                    resolved.push(b'/');
                    resolved.extend_from_slice(target);
                    normalize(&resolved).is_none()
                };
                if escapes {
                    self.escaping_symlinks.insert(joined);
                }
            }
            EntryType::Char | EntryType::Block if !self.policy.allow_devices => {
                return Err(unsafe_entry(
                    "device nodes are not allowed in image layers".into(),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_mtime(0);
        h
    }

    /// Writes raw names (tar-rs's `append_data` refuses `..`, so set the bytes directly).
    fn raw_entry(out: &mut Vec<u8>, kind: EntryType, name: &str, link: Option<&str>, data: &[u8]) {
        let mut h = header(kind, data.len() as u64);
        {
            let ustar = h.as_ustar_mut().expect("ustar");
            ustar.name = [0; 100];
            ustar.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                ustar.linkname = [0; 100];
                ustar.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn finish(mut out: Vec<u8>) -> Vec<u8> {
        out.extend_from_slice(&[0; 1024]);
        out
    }

    fn scan(bytes: &[u8]) -> Result<LayerScan, LayerScanError> {
        scan_layer(bytes, Vec::new(), &EntryPolicy::default()).map(|(scan, sink)| {
            assert_eq!(sink, bytes, "the sink receives every byte");
            scan
        })
    }

    #[test]
    fn valid_layer_hashes_whole_stream() {
        let mut out = Vec::new();
        raw_entry(&mut out, EntryType::Directory, "bin/", None, b"");
        raw_entry(&mut out, EntryType::Regular, "bin/busybox", None, b"hello");
        raw_entry(&mut out, EntryType::Symlink, "bin/sh", Some("busybox"), b"");
        raw_entry(&mut out, EntryType::Symlink, "etc", Some("/elsewhere"), b"");
        raw_entry(
            &mut out,
            EntryType::Link,
            "bin/ls",
            Some("bin/busybox"),
            b"",
        );
        raw_entry(&mut out, EntryType::Regular, "/abs/file", None, b"x");
        let bytes = finish(out);
        let result = scan(&bytes).expect("valid");
        assert_eq!(result.diff_id, Digest::of(&bytes));
        assert_eq!(result.size, bytes.len() as u64);
        assert_eq!(result.entries, 6);
    }

    fn reason_of(bytes: &[u8]) -> String {
        match scan(bytes) {
            Err(LayerScanError::UnsafeEntry { entry, reason }) => format!("{entry}: {reason}"),
            other => panic!("expected an unsafe entry, got {other:?}"),
        }
    }

    #[test]
    fn rejects_dotdot_escape() {
        let mut out = Vec::new();
        raw_entry(
            &mut out,
            EntryType::Regular,
            "a/../../etc/passwd",
            None,
            b"x",
        );
        assert!(reason_of(&finish(out)).starts_with("a/../../etc/passwd: its path climbs"));
    }

    #[test]
    fn rejects_absolute_and_escaping_hardlinks() {
        let mut out = Vec::new();
        raw_entry(&mut out, EntryType::Link, "evil", Some("/etc/shadow"), b"");
        assert!(reason_of(&finish(out)).contains("absolute path"));
        let mut out = Vec::new();
        raw_entry(
            &mut out,
            EntryType::Link,
            "evil",
            Some("../etc/shadow"),
            b"",
        );
        assert!(reason_of(&finish(out)).contains("outside the root"));
    }

    #[test]
    fn rejects_write_through_escaping_symlink_but_not_the_symlink() {
        let mut out = Vec::new();
        raw_entry(&mut out, EntryType::Symlink, "evil", Some("../../.."), b"");
        assert!(scan(&finish(out.clone())).is_ok());
        raw_entry(&mut out, EntryType::Regular, "evil/etc/passwd", None, b"x");
        assert!(reason_of(&finish(out)).contains("through the symlink \"evil\""));
        // A symlink replaced by a directory may be written through.
        let mut out = Vec::new();
        raw_entry(&mut out, EntryType::Symlink, "d", Some("/etc"), b"");
        raw_entry(&mut out, EntryType::Directory, "d/", None, b"");
        raw_entry(&mut out, EntryType::Regular, "d/f", None, b"x");
        assert!(scan(&finish(out)).is_ok());
    }

    #[test]
    fn device_nodes_need_permission() {
        let mut out = Vec::new();
        raw_entry(&mut out, EntryType::Char, "dev/null", None, b"");
        let bytes = finish(out);
        assert!(reason_of(&bytes).contains("device nodes"));
        let allowed = EntryPolicy {
            allow_devices: true,
        };
        assert!(scan_layer(&bytes[..], io::sink(), &allowed).is_ok());
    }

    #[test]
    fn truncated_and_corrupt_streams_fail() {
        let mut out = Vec::new();
        raw_entry(&mut out, EntryType::Regular, "big", None, &[7u8; 3000]);
        let bytes = finish(out);
        assert!(matches!(scan(&bytes[..1500]), Err(LayerScanError::Io(_))));
        assert!(matches!(scan(&bytes[..700]), Err(LayerScanError::Io(_))));
        let mut corrupt = bytes.clone();
        corrupt[10] ^= 0xff;
        assert!(matches!(
            scan(&corrupt),
            Err(LayerScanError::Malformed { .. })
        ));
    }

    #[test]
    fn pax_records_with_binary_values_are_parsed_by_length() {
        let xattr_value = b"a\nb";
        let mut records = Vec::new();
        let record = |key: &str, value: &[u8]| {
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while rest + len.to_string().len() != len {
                len = rest + len.to_string().len();
            }
            let mut r = format!("{len} {key}=").into_bytes();
            r.extend_from_slice(value);
            r.push(b'\n');
            assert_eq!(r.len(), len);
            r
        };
        records.extend(record("SCHILY.xattr.user.x", xattr_value));
        let long = format!("{}/../../escape", "d".repeat(120));
        records.extend(record("path", long.as_bytes()));
        let mut out = Vec::new();
        raw_entry(&mut out, EntryType::XHeader, "pax", None, &records);
        raw_entry(&mut out, EntryType::Regular, "short", None, b"x");
        let reason = reason_of(&finish(out));
        assert!(reason.starts_with(&long), "{reason}");
    }
}
