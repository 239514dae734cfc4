//! What an overlayfs upper dir changed, for `--explain` and analysis.
//!
//! Only the upper dir is walked; each upper entry is looked up (one `lstat`) in the lower dirs
//! to tell an addition from a modification. A 0/0 character device is a deletion, a directory
//! with the opaque xattr replaced the whole lower directory. Directories that overlayfs only
//! copied up to hold a changed child (same mode and owner as in the lower layer) are not
//! reported themselves.

use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::writer::read_xattrs;
use crate::{TRUSTED_OPAQUE_XATTR, USER_OPAQUE_XATTR};

/// Kind of change an upper-dir entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum UpperChangeKind {
    /// Not present in any lower dir.
    Added,
    /// Present in a lower dir and changed (content, metadata or type).
    Modified,
    /// Whited out: a 0/0 character device.
    Deleted,
    /// A directory that hides everything of the same path in the lower dirs.
    OpaqueDir,
}

/// One changed path, relative to the root (`etc/passwd`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UpperChange {
    pub path: String,
    pub kind: UpperChangeKind,
}

/// Failure while listing an upper dir.
#[derive(Debug, thiserror::Error)]
#[error("cannot inspect {path}: {source}")]
pub struct UpperDiffError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// A directory being walked: its relative path, whether lower dirs can hold its children,
/// and its remaining children (sorted).
struct Frame {
    relative_dir: PathBuf,
    lower_visible: bool,
    children: std::vec::IntoIter<OsString>,
}

/// Lists the changes recorded in `upper`, depth first with siblings sorted bytewise by name.
/// `lowers` are the lower dirs, topmost first.
pub fn upper_dir_changes(
    upper: &Path,
    lowers: &[&Path],
) -> Result<Vec<UpperChange>, UpperDiffError> {
    let mut changes = Vec::new();
    let mut stack = vec![Frame {
        relative_dir: PathBuf::new(),
        lower_visible: true,
        children: sorted_children(upper)?.into_iter(),
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(child) = frame.children.next() else {
            stack.pop();
            continue;
        };
        let relative = frame.relative_dir.join(&child);
        let lower_visible = frame.lower_visible;
        let disk_path = upper.join(&relative);
        let meta = std::fs::symlink_metadata(&disk_path).map_err(|source| UpperDiffError {
            path: disk_path.clone(),
            source,
        })?;
        let display = String::from_utf8_lossy(relative.as_os_str().as_bytes()).into_owned();
        let in_lower = if lower_visible {
            lower_metadata(lowers, &relative)
        } else {
            None
        };
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            changes.push(UpperChange {
                path: display,
                kind: UpperChangeKind::Deleted,
            });
            continue;
        }
        if !meta.is_dir() {
            changes.push(UpperChange {
                path: display,
                kind: if in_lower.is_some() {
                    UpperChangeKind::Modified
                } else {
                    UpperChangeKind::Added
                },
            });
            continue;
        }
        let opaque = is_opaque(&disk_path)?;
        let kind = if opaque && in_lower.is_some() {
            Some(UpperChangeKind::OpaqueDir)
        } else {
            match &in_lower {
                None => Some(UpperChangeKind::Added),
                Some(lower) if !lower.is_dir() || metadata_differs(lower, &meta) => {
                    Some(UpperChangeKind::Modified)
                }
                Some(_) => None,
            }
        };
        if let Some(kind) = kind {
            changes.push(UpperChange {
                path: display,
                kind,
            });
        }
        let children_visible = in_lower.as_ref().is_some_and(Metadata::is_dir) && !opaque;
        let children = sorted_children(&disk_path)?;
        stack.push(Frame {
            relative_dir: relative,
            lower_visible: children_visible,
            children: children.into_iter(),
        });
    }
    Ok(changes)
}

fn sorted_children(dir: &Path) -> Result<Vec<OsString>, UpperDiffError> {
    let error = |source| UpperDiffError {
        path: dir.to_path_buf(),
        source,
    };
    let mut children: Vec<OsString> = std::fs::read_dir(dir)
        .map_err(error)?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<Result<_, _>>()
        .map_err(error)?;
    children.sort_by(|left, right| left.as_bytes().cmp(right.as_bytes()));
    Ok(children)
}

/// The path's metadata in the topmost lower dir that has it (a whiteout hides it).
fn lower_metadata(lowers: &[&Path], relative: &Path) -> Option<Metadata> {
    for lower in lowers {
        if let Ok(meta) = std::fs::symlink_metadata(lower.join(relative)) {
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                return None;
            }
            return Some(meta);
        }
    }
    None
}

fn metadata_differs(lower: &Metadata, upper: &Metadata) -> bool {
    lower.mode() != upper.mode() || lower.uid() != upper.uid() || lower.gid() != upper.gid()
}

fn is_opaque(dir: &Path) -> Result<bool, UpperDiffError> {
    let xattrs = read_xattrs(dir).map_err(|error| UpperDiffError {
        path: dir.to_path_buf(),
        source: io::Error::other(error.to_string()),
    })?;
    Ok([TRUSTED_OPAQUE_XATTR, USER_OPAQUE_XATTR]
        .iter()
        .any(|name| {
            xattrs
                .get(name.as_bytes())
                .is_some_and(|value| value == b"y")
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_upper_entries() {
        let lower = tempfile::tempdir().expect("tempdir");
        let upper = tempfile::tempdir().expect("tempdir");
        let lower_root = lower.path();
        std::fs::create_dir_all(lower_root.join("etc/conf.d")).expect("mkdir");
        std::fs::write(lower_root.join("etc/passwd"), "root").expect("write");
        std::fs::write(lower_root.join("etc/gone"), "x").expect("write");
        std::fs::create_dir_all(lower_root.join("var/cache/old")).expect("mkdir");
        std::fs::create_dir_all(lower_root.join("usr")).expect("mkdir");

        let upper_root = upper.path();
        // etc copied up with identical metadata: not reported itself.
        std::fs::create_dir(upper_root.join("etc")).expect("mkdir");
        let lower_etc = std::fs::metadata(lower_root.join("etc")).expect("stat");
        std::fs::set_permissions(
            upper_root.join("etc"),
            std::os::unix::fs::PermissionsExt::from_mode(lower_etc.mode()),
        )
        .expect("chmod");
        std::fs::write(upper_root.join("etc/passwd"), "root2").expect("write");
        std::fs::write(upper_root.join("etc/new"), "n").expect("write");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper_root.join("etc/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .expect("mknod whiteout");
        std::fs::create_dir_all(upper_root.join("var/cache")).expect("mkdir");
        rustix::fs::setxattr(
            upper_root.join("var/cache"),
            TRUSTED_OPAQUE_XATTR,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("opaque xattr");
        std::fs::write(upper_root.join("var/cache/fresh"), "f").expect("write");
        std::fs::create_dir_all(upper_root.join("opt/app")).expect("mkdir");

        let changes = upper_dir_changes(upper_root, &[lower_root]).expect("diff");
        let listed: Vec<(&str, UpperChangeKind)> = changes
            .iter()
            .map(|change| (change.path.as_str(), change.kind))
            .collect();
        let var_kind = if std::fs::metadata(upper_root.join("var"))
            .expect("stat")
            .mode()
            == std::fs::metadata(lower_root.join("var"))
                .expect("stat")
                .mode()
        {
            None
        } else {
            Some(("var", UpperChangeKind::Modified))
        };
        let mut expected = vec![
            ("etc/gone", UpperChangeKind::Deleted),
            ("etc/new", UpperChangeKind::Added),
            ("etc/passwd", UpperChangeKind::Modified),
            ("opt", UpperChangeKind::Added),
            ("opt/app", UpperChangeKind::Added),
        ];
        expected.extend(var_kind);
        expected.push(("var/cache", UpperChangeKind::OpaqueDir));
        expected.push(("var/cache/fresh", UpperChangeKind::Added));
        assert_eq!(listed, expected);
    }
}
