//! `--squash` and `--squash-all`: several layers of a built image become one.
//!
//! The layers to merge are already unpacked in the store as overlay lower
//! trees (whiteouts as 0/0 character devices, opaque directories marked with
//! `trusted.overlay.opaque`). They are merged, oldest first, into one tree in
//! the same form, as overlayfs would see them stacked:
//!
//! - a non-directory replaces whatever the tree had at its path; it is
//!   hardlinked from the store's unpacked tree, never copied (the store's trees
//!   are read-only lowers, and nothing here writes to a non-directory);
//! - a directory is merged into the one the tree has; an opaque directory (or
//!   one replacing a non-directory or a deletion) first drops what was there;
//! - a whiteout removes the path, and stays a whiteout only if the path exists
//!   in the layers below the merged range (the base image). A file created and
//!   deleted inside the range leaves no trace; a deletion of a base file stays.
//!   Likewise a directory keeps the opaque mark only where it hides a base
//!   directory.
//!
//! The merged tree is then written by the deterministic layer writer (sorted
//! entries, clamped mtimes) exactly as a RUN's upper dir is, and kept as the
//! new layer's unpacked tree. Memory holds one directory listing per level of
//! the current path; disk holds links, not copies.
//!
//! With [`SquashMode::All`] the range is every layer, nothing lies below it,
//! so the result has no whiteouts at all.

use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timestamps, XattrFlags};
use stowage_archive::{Compression, LayerWriterOptions, TRUSTED_OPAQUE_XATTR, write_layer_tar};
use stowage_image::{History, LayerInfo};
use stowage_store::Store;

use crate::error::StepError;
use crate::layer::LayerSink;
use crate::rootfs::{
    MergedView, adopt_tree, ensure_unpacked, is_opaque, is_whiteout, lowers_for, remove_tree,
    scratch_dir,
};

/// Which layers of the final image are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SquashMode {
    /// Keep every layer (the default).
    #[default]
    Off,
    /// `--squash`: the layers the build added on top of the final stage's
    /// base image become one; the base image's layers stay shared.
    NewLayers,
    /// `--squash-all`: every layer, the base's included, becomes one.
    All,
}

/// Squashes `layers[from..]` into one layer in the store (see the module
/// docs) and returns it. `layers[..from]` are the base below the range.
pub fn squash_layers(
    store: &Store,
    layers: &[LayerInfo],
    from: usize,
    compression: Compression,
    clamp_mtime: Option<i64>,
) -> Result<LayerInfo, StepError> {
    let (base, range) = layers.split_at(from.min(layers.len()));
    let base_view = BaseView {
        view: MergedView::new(lowers_for(store, base)?),
    };
    let trees = range
        .iter()
        .map(|layer| ensure_unpacked(store, layer))
        .collect::<Result<Vec<_>, _>>()?;
    let scratch = scratch_dir(store, "squash-")?;
    let merged = scratch.join("tree");
    let result = (|| {
        fs::create_dir(&merged).map_err(StepError::io("creating", merged.clone()))?;
        for tree in &trees {
            merge_dir(tree, &merged, Path::new(""), &base_view)?;
        }
        let options = LayerWriterOptions {
            clamp_mtime,
            overlay_upper: true,
            ..LayerWriterOptions::default()
        };
        let sink = LayerSink::new(store, compression)?;
        let (sink, _) = write_layer_tar(&merged, &options, sink)?;
        let layer = sink.finish()?;
        adopt_tree(store, &merged, &layer, layer.uncompressed_size.unwrap_or(0))?;
        Ok(layer)
    })();
    remove_tree(&scratch);
    result
}

/// Marks the history of a squashed image: of the entries from `from_entry`
/// on, only the last one that made a layer keeps `empty_layer` unset, so the
/// non-empty entries still count the layers. Config-only entries stay empty.
pub fn mark_squashed_history(history: &mut [History], from_entry: usize) {
    let Some(range) = history.get_mut(from_entry..) else {
        return;
    };
    let last_layer = range
        .iter()
        .rposition(|entry| entry.empty_layer != Some(true));
    for (index, entry) in range.iter_mut().enumerate() {
        entry.empty_layer = if Some(index) == last_layer {
            None
        } else {
            Some(true)
        };
    }
}

/// The layers below the squashed range, looked up without a mount.
struct BaseView {
    view: MergedView,
}

impl BaseView {
    /// What is at `rel` in the base: `None` if nothing, else whether it is a
    /// directory. Symlinks are not followed (layer paths are literal).
    fn lookup(&self, rel: &Path) -> Option<bool> {
        let components: Vec<String> = rel
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        self.view
            .lookup_exact(&components)
            .map(|(_, meta)| meta.is_dir())
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StepError {
    StepError::io(action, path.to_path_buf())
}

fn errno_error(action: &'static str, path: &Path) -> impl FnOnce(rustix::io::Errno) -> StepError {
    let path = path.to_path_buf();
    move |errno| StepError::Io {
        action,
        path,
        source: errno.into(),
    }
}

/// Removes whatever is at `path` (a tree of links: nothing in the store's
/// trees is touched).
fn remove_any(path: &Path) -> Result<(), StepError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_error("removing", path))
}

/// Merges the layer tree directory `src` into the merged directory `dst`;
/// `rel` is their path in the image.
fn merge_dir(src: &Path, dst: &Path, rel: &Path, base: &BaseView) -> Result<(), StepError> {
    let mut names: Vec<OsString> = fs::read_dir(src)
        .map_err(io_error("listing", src))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_error("listing", src))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let source = src.join(&name);
        let target = dst.join(&name);
        let path = rel.join(&name);
        let meta = fs::symlink_metadata(&source).map_err(io_error("reading", &source))?;
        if is_whiteout(&meta) {
            remove_any(&target)?;
            if base.lookup(&path).is_some() {
                make_whiteout(&target)?;
                set_mtime(&target, &meta)?;
            }
        } else if meta.is_dir() {
            let opaque = is_opaque(&source);
            let existing = fs::symlink_metadata(&target).ok();
            let hides_base = match existing {
                Some(ref current) if current.is_dir() && !opaque => false,
                Some(_) => {
                    remove_any(&target)?;
                    fs::create_dir(&target).map_err(io_error("creating", &target))?;
                    true
                }
                None => {
                    fs::create_dir(&target).map_err(io_error("creating", &target))?;
                    opaque
                }
            };
            if hides_base && base.lookup(&path) == Some(true) {
                rustix::fs::lsetxattr(&target, TRUSTED_OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(errno_error("marking opaque", &target))?;
            }
            copy_dir_attributes(&source, &target, &meta)?;
            merge_dir(&source, &target, &path, base)?;
            set_mtime(&target, &meta)?;
        } else {
            remove_any(&target)?;
            fs::hard_link(&source, &target).map_err(io_error("linking", &target))?;
        }
    }
    Ok(())
}

fn make_whiteout(target: &Path) -> Result<(), StepError> {
    rustix::fs::mknodat(
        CWD,
        target,
        FileType::CharacterDevice,
        Mode::empty(),
        rustix::fs::makedev(0, 0),
    )
    .map_err(errno_error("creating a whiteout at", target))
}

/// Owner, mode and extended attributes (overlay's own excepted) of a directory.
fn copy_dir_attributes(source: &Path, target: &Path, meta: &Metadata) -> Result<(), StepError> {
    std::os::unix::fs::lchown(target, Some(meta.uid()), Some(meta.gid()))
        .map_err(io_error("changing the owner of", target))?;
    fs::set_permissions(target, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io_error("changing the mode of", target))?;
    for name in xattr_names(source).map_err(errno_error("listing xattrs of", source))? {
        if name.as_bytes().starts_with(b"trusted.overlay.")
            || name.as_bytes().starts_with(b"user.overlay.")
        {
            continue;
        }
        let value = xattr_value(source, &name).map_err(errno_error("reading xattrs of", source))?;
        rustix::fs::lsetxattr(target, name.as_os_str(), &value, XattrFlags::empty())
            .map_err(errno_error("setting xattrs on", target))?;
    }
    Ok(())
}

fn set_mtime(target: &Path, meta: &Metadata) -> Result<(), StepError> {
    let time = rustix::fs::Timespec {
        tv_sec: meta.mtime(),
        tv_nsec: meta.mtime_nsec(),
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(CWD, target, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(errno_error("setting the mtime of", target))
}

fn xattr_names(path: &Path) -> rustix::io::Result<Vec<OsString>> {
    loop {
        let size = rustix::fs::llistxattr_query(path)?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut names = vec![0u8; size];
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(len) => {
                names.truncate(len);
                return Ok(names
                    .split(|&b| b == 0)
                    .filter(|n| !n.is_empty())
                    .map(|n| OsStr::from_bytes(n).to_os_string())
                    .collect());
            }
            Err(rustix::io::Errno::RANGE) => {}
            Err(errno) => return Err(errno),
        }
    }
}

fn xattr_value(path: &Path, name: &OsStr) -> rustix::io::Result<Vec<u8>> {
    loop {
        let size = rustix::fs::lgetxattr_query(path, name)?;
        let mut value = vec![0u8; size];
        if size == 0 {
            return Ok(value);
        }
        match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(len) => {
                value.truncate(len);
                return Ok(value);
            }
            Err(rustix::io::Errno::RANGE) => {}
            Err(errno) => return Err(errno),
        }
    }
}

/// Squashes a built stage in place: `layers[from_layer..]` become one layer
/// (without a cache key: a squashed layer serves no step as a cache hit) and
/// the history from `from_history` on is marked to match. A range of at most
/// one layer is left as it is.
pub fn squash_stage(
    store: &Store,
    layers: &mut Vec<LayerInfo>,
    layer_keys: &mut Vec<Option<crate::cachekey::CacheKey>>,
    history: &mut [History],
    (from_layer, from_history): (usize, usize),
    compression: Compression,
    clamp_mtime: Option<i64>,
) -> Result<(), StepError> {
    if layers.len() <= from_layer.saturating_add(1) {
        return Ok(());
    }
    let squashed = squash_layers(store, layers, from_layer, compression, clamp_mtime)?;
    layers.truncate(from_layer);
    layers.push(squashed);
    layer_keys.resize(layers.len(), None);
    if let Some(last) = layer_keys.last_mut() {
        *last = None;
    }
    mark_squashed_history(history, from_history);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(empty: bool) -> History {
        History {
            empty_layer: empty.then_some(true),
            ..History::default()
        }
    }

    #[test]
    fn only_the_last_layer_entry_of_the_range_stays_non_empty() {
        let mut history = vec![
            entry(false),
            entry(true),
            entry(false),
            entry(false),
            entry(true),
        ];
        mark_squashed_history(&mut history, 2);
        let empties: Vec<Option<bool>> = history.iter().map(|h| h.empty_layer).collect();
        assert_eq!(
            empties,
            vec![None, Some(true), Some(true), None, Some(true)]
        );
    }

    #[test]
    fn a_range_past_the_end_changes_nothing() {
        let mut history = vec![entry(false)];
        mark_squashed_history(&mut history, 5);
        assert_eq!(history[0].empty_layer, None);
    }
}
