//! Looking paths up through a stack of overlay layers without mounting them,
//! and planning the *scaffold layer* that holds mount points the image lacks.
//!
//! # Why a scaffold layer
//! The container needs mount points (/proc, /dev, /sys, /etc/hosts,
//! /etc/resolv.conf, /etc/hostname, `RUN --mount` targets). Creating them
//! through the merged overlay would write them into the upper directory, i.e.
//! into the layer. Instead, before mounting, we look each one up in the layer
//! stack; the missing ones (and the ones of the wrong type, such as a symlinked
//! /etc/resolv.conf) are created in a separate scratch directory that is
//! mounted as the top-most *lower* layer, between the image layers and the
//! upper. The upper therefore never sees them. The scaffold's ancestor
//! directories (e.g. `etc/`) copy mode, owner and times from the image's own
//! directory, so that an overlay copy-up of `/etc` during the command puts the
//! image's metadata, not the scaffold's, into the layer.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::ExecError;

/// The kind of object a mount needs at its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PointKind {
    /// A directory (proc, sysfs, tmpfs, directory binds).
    Dir,
    /// A non-directory (file binds: hosts, resolv.conf, secrets).
    File,
}

/// A mount target relative to the container root, with the kind it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountPoint {
    pub rel: PathBuf,
    pub kind: PointKind,
}

/// What a path is in the merged view of a layer stack.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// Present; the host path in the top-most layer holding it and its metadata.
    Found(PathBuf, fs::Metadata),
    /// Absent (never created, or whited out).
    Missing,
    /// An ancestor (relative path given) is a file or symlink.
    Blocked(PathBuf),
}

/// Turns an absolute container path into a normalized relative one.
/// Rejects relative paths and `..`; `/` itself yields an empty path.
pub(crate) fn container_relative(path: &Path, field: &str) -> Result<PathBuf, ExecError> {
    if !path.is_absolute() {
        return Err(ExecError::invalid(format!(
            "{field} {} must be an absolute path",
            path.display()
        )));
    }
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(ExecError::invalid(format!(
                    "{field} {} must not contain '..'",
                    path.display()
                )));
            }
        }
    }
    Ok(rel)
}

pub(crate) fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    let mut value = [0u8; 4];
    matches!(
        rustix::fs::lgetxattr(dir, "trusted.overlay.opaque", &mut value),
        Ok(1) if value[0] == b'y'
    )
}

fn lstat(path: &Path) -> Result<Option<fs::Metadata>, ExecError> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(ExecError::io("inspect layer path", path, err)),
    }
}

/// Looks `rel` up in `stack` (top-most layer first) with overlayfs's rules:
/// whiteouts hide, opaque directories stop the descent, a directory in a
/// higher layer hides a non-directory below it.
pub(crate) fn lookup(stack: &[PathBuf], rel: &Path) -> Result<Lookup, ExecError> {
    let parts: Vec<&std::ffi::OsStr> = rel.iter().collect();
    let Some((leaf, ancestors)) = parts.split_last() else {
        return match stack.first() {
            Some(top) => Ok(lstat(top)?.map_or(Lookup::Missing, |m| Lookup::Found(top.clone(), m))),
            None => Ok(Lookup::Missing),
        };
    };
    let mut seen_dir = vec![false; ancestors.len()];
    for layer in stack {
        let mut host = layer.clone();
        let mut layer_has_parent = true;
        let mut opaque = false;
        for (index, part) in ancestors.iter().enumerate() {
            host.push(part);
            match lstat(&host)? {
                None => {
                    layer_has_parent = false;
                    break;
                }
                Some(meta) if meta.is_dir() => {
                    if let Some(seen) = seen_dir.get_mut(index) {
                        *seen = true;
                    }
                    opaque |= is_opaque(&host);
                }
                Some(meta) => {
                    let already_dir = seen_dir.get(index).copied().unwrap_or(false);
                    if is_whiteout(&meta) || already_dir {
                        return Ok(Lookup::Missing);
                    }
                    return Ok(Lookup::Blocked(ancestors.iter().take(index + 1).collect()));
                }
            }
        }
        if layer_has_parent {
            host.push(leaf);
            if let Some(meta) = lstat(&host)? {
                if is_whiteout(&meta) {
                    return Ok(Lookup::Missing);
                }
                return Ok(Lookup::Found(host, meta));
            }
        }
        if opaque {
            return Ok(Lookup::Missing);
        }
    }
    Ok(Lookup::Missing)
}

fn fits(meta: &fs::Metadata, kind: PointKind) -> bool {
    match kind {
        PointKind::Dir => meta.is_dir(),
        PointKind::File => !meta.is_dir() && !meta.file_type().is_symlink() && !is_whiteout(meta),
    }
}

fn create_leaf(path: &Path, kind: PointKind) -> Result<(), ExecError> {
    match kind {
        PointKind::Dir => match fs::create_dir(path) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
                Err(ExecError::io("create mount point directory", path, err))
            }
            _ => Ok(()),
        },
        PointKind::File => fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(drop)
            .map_err(|err| ExecError::io("create mount point file", path, err)),
    }
}

/// Metadata to copy onto a scaffold directory from the image's directory.
struct DirMeta {
    path: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    atime: std::time::SystemTime,
    mtime: std::time::SystemTime,
}

/// Fills `scaffold` with the mount points of `points` that the merged view of
/// `stack` (top-most first) lacks or has with the wrong type. Returns whether
/// anything was created (an empty scaffold need not be mounted).
pub(crate) fn build_scaffold(
    stack: &[PathBuf],
    scaffold: &Path,
    points: &[MountPoint],
) -> Result<bool, ExecError> {
    let mut created_any = false;
    let mut dir_metadata: Vec<DirMeta> = Vec::new();
    for point in points {
        match lookup(stack, &point.rel)? {
            Lookup::Found(_, meta) if fits(&meta, point.kind) => continue,
            Lookup::Blocked(blocker) => {
                return Err(ExecError::MountTargetBlocked {
                    target: Path::new("/").join(&point.rel),
                    blocker: Path::new("/").join(blocker),
                });
            }
            Lookup::Found(..) | Lookup::Missing => {}
        }
        created_any = true;
        let mut prefix = PathBuf::new();
        let ancestors: Vec<_> = point
            .rel
            .parent()
            .map(|p| p.iter().collect())
            .unwrap_or_default();
        for part in ancestors {
            prefix.push(part);
            let host = scaffold.join(&prefix);
            if lstat(&host)?.is_some() {
                continue;
            }
            fs::create_dir(&host)
                .map_err(|err| ExecError::io("create scaffold directory", &host, err))?;
            if let Lookup::Found(_, meta) = lookup(stack, &prefix)?
                && meta.is_dir()
            {
                dir_metadata.push(DirMeta {
                    path: host,
                    mode: meta.permissions().mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    atime: meta.accessed().unwrap_or(std::time::UNIX_EPOCH),
                    mtime: meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                });
            }
        }
        create_leaf(&scaffold.join(&point.rel), point.kind)?;
    }
    // Deepest first, after every child exists, so the times stick.
    for meta in dir_metadata.iter().rev() {
        apply_dir_meta(meta)?;
    }
    Ok(created_any)
}

fn apply_dir_meta(meta: &DirMeta) -> Result<(), ExecError> {
    std::os::unix::fs::chown(&meta.path, Some(meta.uid), Some(meta.gid))
        .map_err(|err| ExecError::io("chown scaffold directory", &meta.path, err))?;
    fs::set_permissions(&meta.path, fs::Permissions::from_mode(meta.mode))
        .map_err(|err| ExecError::io("chmod scaffold directory", &meta.path, err))?;
    let dir = fs::File::open(&meta.path)
        .map_err(|err| ExecError::io("open scaffold directory", &meta.path, err))?;
    dir.set_times(
        fs::FileTimes::new()
            .set_accessed(meta.atime)
            .set_modified(meta.mtime),
    )
    .map_err(|err| ExecError::io("set times of scaffold directory", &meta.path, err))
}

/// For a plain-directory rootfs: creates the missing mount points in place.
pub(crate) fn prepare_directory_points(
    root: &Path,
    points: &[MountPoint],
) -> Result<(), ExecError> {
    let stack = [root.to_path_buf()];
    for point in points {
        match lookup(&stack, &point.rel)? {
            Lookup::Found(_, meta) if fits(&meta, point.kind) => {}
            Lookup::Found(..) => {
                return Err(ExecError::MountTargetBlocked {
                    target: Path::new("/").join(&point.rel),
                    blocker: Path::new("/").join(&point.rel),
                });
            }
            Lookup::Blocked(blocker) => {
                return Err(ExecError::MountTargetBlocked {
                    target: Path::new("/").join(&point.rel),
                    blocker: Path::new("/").join(blocker),
                });
            }
            Lookup::Missing => {
                if let Some(parent) = point.rel.parent() {
                    let host = root.join(parent);
                    fs::create_dir_all(&host)
                        .map_err(|err| ExecError::io("create mount point parent", &host, err))?;
                }
                create_leaf(&root.join(&point.rel), point.kind)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn layer(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).expect("mkdir");
        dir
    }

    #[test]
    fn relative_paths_are_normalized_and_checked() {
        assert_eq!(
            container_relative(Path::new("/a/./b/"), "t").expect("ok"),
            PathBuf::from("a/b")
        );
        assert!(container_relative(Path::new("a"), "t").is_err());
        assert!(container_relative(Path::new("/a/../b"), "t").is_err());
    }

    #[test]
    fn lookup_prefers_top_layer_and_honours_blocking() {
        let tmp = tempfile::tempdir().expect("tmp");
        let top = layer(tmp.path(), "top");
        let bottom = layer(tmp.path(), "bottom");
        fs::create_dir_all(bottom.join("etc")).expect("mkdir");
        fs::write(bottom.join("etc/hosts"), "x").expect("write");
        fs::create_dir_all(top.join("etc")).expect("mkdir");
        fs::write(top.join("etc/hosts"), "y").expect("write");
        fs::write(top.join("file"), "f").expect("write");
        let stack = vec![top.clone(), bottom];
        match lookup(&stack, Path::new("etc/hosts")).expect("lookup") {
            Lookup::Found(path, _) => assert_eq!(path, top.join("etc/hosts")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            lookup(&stack, Path::new("nope/x")).expect("lookup"),
            Lookup::Missing
        ));
        assert!(matches!(
            lookup(&stack, Path::new("file/x")).expect("lookup"),
            Lookup::Blocked(p) if p == Path::new("file")
        ));
    }

    #[test]
    fn scaffold_only_holds_missing_points() {
        let tmp = tempfile::tempdir().expect("tmp");
        let image = layer(tmp.path(), "image");
        let scaffold = layer(tmp.path(), "scaffold");
        fs::create_dir_all(image.join("proc")).expect("mkdir");
        fs::create_dir_all(image.join("etc")).expect("mkdir");
        fs::set_permissions(image.join("etc"), fs::Permissions::from_mode(0o750)).expect("chmod");
        fs::write(image.join("etc/hostname"), "h").expect("write");
        symlink("../run/stub", image.join("etc/resolv.conf")).expect("symlink");
        let points = [
            ("proc", PointKind::Dir),
            ("dev", PointKind::Dir),
            ("etc/hostname", PointKind::File),
            ("etc/hosts", PointKind::File),
            ("etc/resolv.conf", PointKind::File),
            ("run/secrets/id", PointKind::File),
        ]
        .map(|(rel, kind)| MountPoint {
            rel: rel.into(),
            kind,
        });
        assert!(
            build_scaffold(std::slice::from_ref(&image), &scaffold, &points).expect("scaffold")
        );
        let mut found: Vec<String> = walk(&scaffold);
        found.sort();
        assert_eq!(
            found,
            [
                "dev",
                "etc",
                "etc/hosts",
                "etc/resolv.conf",
                "run",
                "run/secrets",
                "run/secrets/id"
            ]
        );
        let image_etc = fs::metadata(image.join("etc")).expect("stat");
        let scaffold_etc = fs::metadata(scaffold.join("etc")).expect("stat");
        assert_eq!(scaffold_etc.permissions().mode() & 0o7777, 0o750);
        assert_eq!(scaffold_etc.mtime(), image_etc.mtime());
    }

    #[test]
    fn blocked_mount_point_is_an_error() {
        let tmp = tempfile::tempdir().expect("tmp");
        let image = layer(tmp.path(), "image");
        let scaffold = layer(tmp.path(), "scaffold");
        fs::write(image.join("etc"), "not a dir").expect("write");
        let points = [MountPoint {
            rel: "etc/hosts".into(),
            kind: PointKind::File,
        }];
        assert!(matches!(
            build_scaffold(&[image], &scaffold, &points),
            Err(ExecError::MountTargetBlocked { .. })
        ));
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                out.push(
                    path.strip_prefix(root)
                        .expect("prefix")
                        .to_string_lossy()
                        .into_owned(),
                );
                if path.is_dir() {
                    pending.push(path);
                }
            }
        }
        out
    }
}
