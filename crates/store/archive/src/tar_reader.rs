//! A strict streaming tar reader for the layer applier.
//!
//! tar-rs parses PAX records by splitting on newlines, which breaks on binary xattr values
//! (a `security.capability` value may contain `0x0a`). This reader parses PAX records by their
//! length prefix as POSIX specifies, merges PAX (`x`) and GNU long name/link (`L`, `K`)
//! extension headers into the entry they describe, and reports how the stream ended (zero
//! block or bare end of input). Header fields are decoded with tar-rs's [`tar::Header`].

use std::io::{self, Read};

use tar::{EntryType, Header};

const BLOCK: u64 = 512;
/// Largest PAX or GNU long-name extension accepted (xattrs can be up to 64 KiB each).
const MAX_EXTENSION_SIZE: u64 = 16 * 1024 * 1024;

/// One entry with its extensions applied.
pub(crate) struct RawEntry {
    pub header: Header,
    pub entry_type: EntryType,
    pub path: Vec<u8>,
    pub link_name: Option<Vec<u8>>,
    pub size: u64,
    /// PAX records of the entry, in stream order.
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What [`TarReader::next_entry`] found.
pub(crate) enum NextEntry {
    Entry(Box<RawEntry>),
    /// A zero block: the end-of-archive marker.
    End,
    /// The input ended at a header boundary without an end-of-archive marker.
    EndWithoutMarker,
}

pub(crate) struct TarReader<R> {
    inner: R,
    data_left: u64,
    padding_left: u64,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            data_left: 0,
            padding_left: 0,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Skips what is left of the current entry and reads the next one.
    pub fn next_entry(&mut self) -> io::Result<NextEntry> {
        self.skip_rest()?;
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut saw_extension = false;
        loop {
            let mut block = [0u8; BLOCK as usize];
            if !self.read_block(&mut block)? {
                if saw_extension {
                    return Err(invalid("extension header without the entry it describes"));
                }
                return Ok(NextEntry::EndWithoutMarker);
            }
            if block.iter().all(|byte| *byte == 0) {
                if saw_extension {
                    return Err(invalid("extension header without the entry it describes"));
                }
                return Ok(NextEntry::End);
            }
            let mut header = Header::new_old();
            header.as_mut_bytes().copy_from_slice(&block);
            verify_checksum(&header)?;
            let entry_type = header.entry_type();
            let header_size = header.entry_size()?;
            let is_extension = entry_type.is_pax_local_extensions()
                || entry_type.is_pax_global_extensions()
                || entry_type.is_gnu_longname()
                || entry_type.is_gnu_longlink();
            if is_extension {
                saw_extension = true;
                if header_size > MAX_EXTENSION_SIZE {
                    return Err(invalid("extension header larger than 16 MiB"));
                }
                let data = self.read_small(header_size)?;
                if entry_type.is_pax_local_extensions() {
                    pax.extend(parse_pax_records(&data)?);
                } else if entry_type.is_gnu_longname() {
                    long_name = Some(trim_nuls(data));
                } else if entry_type.is_gnu_longlink() {
                    long_link = Some(trim_nuls(data));
                }
                // Global PAX headers (`g`) carry nothing a layer needs.
                continue;
            }
            let pax_value = |key: &[u8]| {
                pax.iter()
                    .rev()
                    .find(|(record_key, _)| record_key.as_slice() == key)
                    .map(|(_, value)| value.clone())
            };
            let size = match pax_value(b"size") {
                Some(value) => {
                    parse_decimal(&value).ok_or_else(|| invalid("malformed PAX size"))?
                }
                None => header_size,
            };
            let path = pax_value(b"path")
                .or(long_name)
                .unwrap_or_else(|| header.path_bytes().into_owned());
            let link_name = pax_value(b"linkpath")
                .or(long_link)
                .or_else(|| header.link_name_bytes().map(|link| link.into_owned()));
            self.data_left = size;
            self.padding_left = padding(size);
            return Ok(NextEntry::Entry(Box::new(RawEntry {
                header,
                entry_type,
                path,
                link_name,
                size,
                pax,
            })));
        }
    }

    /// Reads up to `buf.len()` bytes of the current entry's data; 0 at its end. A stream that
    /// ends inside the data is an `UnexpectedEof` error.
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data_left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let wanted = usize::try_from(self.data_left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let read = self.inner.read(buf.get_mut(..wanted).unwrap_or_default())?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside an entry's data",
            ));
        }
        self.data_left = self.data_left.saturating_sub(read as u64);
        Ok(read)
    }

    fn skip_rest(&mut self) -> io::Result<()> {
        let to_skip = self.data_left.saturating_add(self.padding_left);
        let skipped = io::copy(&mut (&mut self.inner).take(to_skip), &mut io::sink())?;
        if skipped != to_skip {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside an entry's data",
            ));
        }
        self.data_left = 0;
        self.padding_left = 0;
        Ok(())
    }

    /// Reads one block; false when the input ends before its first byte.
    fn read_block(&mut self, block: &mut [u8; BLOCK as usize]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < block.len() {
            let read = match self.inner.read(block.get_mut(filled..).unwrap_or_default()) {
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if read == 0 {
                if filled == 0 {
                    return Ok(false);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a tar header",
                ));
            }
            filled += read;
        }
        Ok(true)
    }

    fn read_small(&mut self, size: u64) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        (&mut self.inner).take(size).read_to_end(&mut data)?;
        if data.len() as u64 != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside an extension header",
            ));
        }
        let pad = padding(size);
        let skipped = io::copy(&mut (&mut self.inner).take(pad), &mut io::sink())?;
        if skipped != pad {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside an extension header",
            ));
        }
        Ok(data)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

fn trim_nuls(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

fn parse_decimal(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

fn verify_checksum(header: &Header) -> io::Result<()> {
    let bytes = header.as_bytes();
    let sum: u64 = bytes
        .iter()
        .enumerate()
        .map(|(index, byte)| {
            if (148..156).contains(&index) {
                u64::from(b' ')
            } else {
                u64::from(*byte)
            }
        })
        .sum();
    let recorded = header.cksum()?;
    if sum != u64::from(recorded) {
        return Err(invalid("tar header checksum mismatch"));
    }
    Ok(())
}

/// Parses `"<len> <key>=<value>\n"` records, where `<len>` counts the whole record.
pub(crate) fn parse_pax_records(mut data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut records = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|byte| *byte == b' ')
            .ok_or_else(|| invalid("malformed PAX record (no length)"))?;
        let length = data
            .get(..space)
            .and_then(parse_decimal_usize)
            .ok_or_else(|| invalid("malformed PAX record length"))?;
        let record = data
            .get(..length)
            .filter(|record| record.len() > space + 1)
            .ok_or_else(|| invalid("PAX record longer than its header"))?;
        let body = record
            .get(space + 1..)
            .and_then(|body| body.strip_suffix(b"\n"))
            .ok_or_else(|| invalid("PAX record does not end with a newline"))?;
        let equals = body
            .iter()
            .position(|byte| *byte == b'=')
            .ok_or_else(|| invalid("PAX record without `=`"))?;
        let key = body.get(..equals).unwrap_or_default().to_vec();
        let value = body.get(equals + 1..).unwrap_or_default().to_vec();
        records.push((key, value));
        data = data.get(length..).unwrap_or_default();
    }
    Ok(records)
}

fn parse_decimal_usize(text: &[u8]) -> Option<usize> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_values_may_contain_newlines() {
        let records =
            parse_pax_records(b"24 SCHILY.xattr.a=x\ny\nz\n12 path=abc\n").expect("parse");
        assert_eq!(
            records,
            vec![
                (b"SCHILY.xattr.a".to_vec(), b"x\ny\nz".to_vec()),
                (b"path".to_vec(), b"abc".to_vec())
            ]
        );
    }

    #[test]
    fn malformed_pax_records_are_errors() {
        for bad in [
            &b"99 path=x\n"[..],
            b"abc",
            b"8 path=x",
            b"4 a\n",
            b"x path=y\n",
        ] {
            assert!(
                parse_pax_records(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
