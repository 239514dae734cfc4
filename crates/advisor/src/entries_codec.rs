//! A compact binary form of [`LayerEntries`] for the store's per-layer cache: the build
//! report decodes every layer's list on each build, and this is several times faster to
//! read than JSON. Decoding checks every length against the bytes at hand and fails with
//! `None` (the caller then rescans the layer); it never panics on damaged input.

use crate::scan::{EntryKind, LayerEntries, LayerItem};

const MAGIC: &[u8; 4] = b"SLE1";

const ITEM_OPAQUE: u8 = 0;
const ITEM_WHITEOUT: u8 = 1;
const ITEM_ENTRY: u8 = 2;

fn kind_code(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::File => 0,
        EntryKind::Dir => 1,
        EntryKind::Symlink => 2,
        EntryKind::HardLink => 3,
        EntryKind::Special => 4,
    }
}

fn kind_of(code: u8) -> Option<EntryKind> {
    Some(match code {
        0 => EntryKind::File,
        1 => EntryKind::Dir,
        2 => EntryKind::Symlink,
        3 => EntryKind::HardLink,
        4 => EntryKind::Special,
        _ => return None,
    })
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// Encodes `entries`.
pub fn encode(entries: &LayerEntries) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + entries.items.len() * 96);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&entries.tar_bytes.to_le_bytes());
    out.extend_from_slice(&entries.entries.to_le_bytes());
    out.extend_from_slice(&(entries.items.len() as u64).to_le_bytes());
    for item in &entries.items {
        match item {
            LayerItem::Opaque { parent } => {
                out.push(ITEM_OPAQUE);
                put_str(&mut out, parent);
            }
            LayerItem::Whiteout { victim } => {
                out.push(ITEM_WHITEOUT);
                put_str(&mut out, victim);
            }
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
                out.push(ITEM_ENTRY);
                put_str(&mut out, path);
                out.push(kind_code(*kind));
                out.extend_from_slice(&size.to_le_bytes());
                out.extend_from_slice(&mode.to_le_bytes());
                out.extend_from_slice(&uid.to_le_bytes());
                out.extend_from_slice(&gid.to_le_bytes());
                match sha256 {
                    Some(hex) => {
                        out.push(1);
                        put_str(&mut out, hex);
                    }
                    None => out.push(0),
                }
                match link_target {
                    Some(target) => {
                        out.push(1);
                        put_str(&mut out, target);
                    }
                    None => out.push(0),
                }
            }
        }
    }
    out
}

/// A bounds-checked reader over the encoded bytes.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.bytes.split_at_checked(count)?;
        self.bytes = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.u32()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    fn optional_string(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.string()?)),
            _ => None,
        }
    }
}

/// Decodes what [`encode`] wrote; `None` for anything else.
pub fn decode(bytes: &[u8]) -> Option<LayerEntries> {
    let mut cursor = Cursor { bytes };
    if cursor.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let tar_bytes = cursor.u64()?;
    let entries = cursor.u64()?;
    let count = usize::try_from(cursor.u64()?).ok()?;
    // Every item takes at least 5 bytes: a count beyond that is damage.
    let mut items = Vec::with_capacity(count.min(bytes.len() / 5));
    for _ in 0..count {
        let item = match cursor.u8()? {
            ITEM_OPAQUE => LayerItem::Opaque {
                parent: cursor.string()?,
            },
            ITEM_WHITEOUT => LayerItem::Whiteout {
                victim: cursor.string()?,
            },
            ITEM_ENTRY => {
                let path = cursor.string()?;
                let kind = kind_of(cursor.u8()?)?;
                let size = cursor.u64()?;
                let mode = cursor.u32()?;
                let uid = cursor.u64()?;
                let gid = cursor.u64()?;
                let sha256 = cursor.optional_string()?;
                let link_target = cursor.optional_string()?;
                LayerItem::Entry {
                    path,
                    kind,
                    size,
                    mode,
                    uid,
                    gid,
                    sha256,
                    link_target,
                }
            }
            _ => return None,
        };
        items.push(item);
    }
    cursor.bytes.is_empty().then_some(LayerEntries {
        tar_bytes,
        entries,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LayerEntries {
        LayerEntries {
            tar_bytes: 10_240,
            entries: 5,
            items: vec![
                LayerItem::Opaque {
                    parent: "etc/apt".into(),
                },
                LayerItem::Whiteout {
                    victim: "tmp/x".into(),
                },
                LayerItem::Entry {
                    path: "usr/bin/tool".into(),
                    kind: EntryKind::File,
                    size: 1234,
                    mode: 0o755,
                    uid: 0,
                    gid: 1000,
                    sha256: Some("ab".repeat(32)),
                    link_target: None,
                },
                LayerItem::Entry {
                    path: "usr/bin/alias".into(),
                    kind: EntryKind::Symlink,
                    size: 0,
                    mode: 0o777,
                    uid: 0,
                    gid: 0,
                    sha256: None,
                    link_target: Some("tool".into()),
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let entries = sample();
        assert_eq!(decode(&encode(&entries)), Some(entries));
        assert_eq!(
            decode(&encode(&LayerEntries::default())),
            Some(LayerEntries::default())
        );
    }

    #[test]
    fn damaged_bytes_are_refused_without_panicking() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing), None);
        // The first item's tag sits right after the magic and the three counts.
        let mut bad_tag = bytes.clone();
        bad_tag[28] = 9;
        assert_eq!(decode(&bad_tag), None);
        let mut huge_count = bytes;
        huge_count[20..28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode(&huge_count), None);
    }
}
