//! Root filesystems from layers: layers are unpacked once into the store (as
//! overlay lower directories, whiteouts kept as 0/0 devices and opaque
//! xattrs) and shared by every build; [`MergedView`] reads the union of a
//! stage's layers without mounting anything, to resolve COPY destinations and
//! the sources of `COPY --from`.

use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use stowage_archive::{
    ApplyOptions, OverlayXattrNamespace, SpecialFilePolicy, WhiteoutMode, apply_layer,
    decompressing_reader,
};
use stowage_image::LayerInfo;
use stowage_store::Store;

use crate::error::StepError;

/// Unique names for scratch directories under the store's tmp dir.
pub fn scratch_dir(store: &Store, prefix: &str) -> Result<PathBuf, StepError> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(store.tmp_dir())
        .map_err(StepError::io(
            "creating a scratch directory in",
            store.tmp_dir(),
        ))?;
    Ok(dir.keep())
}

/// Removes a directory tree, ignoring a missing one.
pub fn remove_tree(path: &Path) {
    match fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => {
            // Best effort: a later prune or store open cleans tmp/.
        }
    }
}

/// The unpacked tree of `layer`, unpacking it from its blob if needed.
pub fn ensure_unpacked(store: &Store, layer: &LayerInfo) -> Result<PathBuf, StepError> {
    let target = store.unpacked_layer_dir(&layer.diff_id);
    if store.unpacked_layer(&layer.diff_id)?.is_some() && target.is_dir() {
        return Ok(target);
    }
    let scratch = scratch_dir(store, "unpack-")?;
    let result = (|| {
        let blob = store.open_blob_verified(&layer.blob_digest)?;
        let (_, reader) = decompressing_reader(blob).map_err(StepError::io(
            "reading layer",
            store.blob_path(&layer.blob_digest),
        ))?;
        let options = ApplyOptions {
            whiteouts: WhiteoutMode::OverlayLower(OverlayXattrNamespace::Trusted),
            special_files: SpecialFilePolicy::Create,
            preserve_ownership: true,
            require_end_marker: false,
        };
        let stats =
            apply_layer(reader, &scratch, &options).map_err(|source| StepError::LayerApply {
                diff_id: layer.diff_id.to_string(),
                source,
            })?;
        Ok::<u64, StepError>(stats.file_bytes)
    })();
    let size = match result {
        Ok(size) => size,
        Err(error) => {
            remove_tree(&scratch);
            return Err(error);
        }
    };
    adopt_tree(store, &scratch, layer, size)
}

/// Moves a finished layer tree (an unpacked blob or a RUN's upper dir) into
/// the store's layer directory and records it. If another build got there
/// first, its tree is kept and this one removed.
pub fn adopt_tree(
    store: &Store,
    tree: &Path,
    layer: &LayerInfo,
    size: u64,
) -> Result<PathBuf, StepError> {
    let target = store.unpacked_layer_dir(&layer.diff_id);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(StepError::io("creating", parent))?;
    }
    match fs::rename(tree, &target) {
        Ok(()) => {}
        Err(_) if target.is_dir() => remove_tree(tree),
        Err(source) => {
            remove_tree(tree);
            return Err(StepError::Io {
                action: "moving an unpacked layer to",
                path: target,
                source,
            });
        }
    }
    store.record_unpacked_layer(&layer.diff_id, size)?;
    Ok(target)
}

/// The lower directories of a stage's layers, top-most first, as overlay wants them.
pub fn lowers_for(store: &Store, layers: &[LayerInfo]) -> Result<Vec<PathBuf>, StepError> {
    let mut lowers = Vec::with_capacity(layers.len());
    for layer in layers.iter().rev() {
        lowers.push(ensure_unpacked(store, layer)?);
    }
    Ok(lowers)
}

/// A file found in a [`MergedView`].
#[derive(Debug)]
pub struct Found {
    /// Its path in the image, cleaned, without leading slash (empty for `/`).
    pub path: String,
    /// Where its bytes are on disk.
    pub disk: PathBuf,
    /// Its metadata.
    pub meta: Metadata,
}

/// The union of unpacked layer trees (top-most first), read without a mount.
#[derive(Debug, Clone, Default)]
pub struct MergedView {
    lowers: Vec<PathBuf>,
}

const MAX_LINKS: usize = 40;

/// An overlayfs whiteout: a 0/0 character device.
pub(crate) fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// A directory overlayfs marks opaque (`trusted.overlay.opaque=y`).
pub(crate) fn is_opaque(path: &Path) -> bool {
    let mut value = [0u8; 2];
    matches!(
        rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut value),
        Ok(1) if value[0] == b'y'
    )
}

impl MergedView {
    /// A view over `lowers`, top-most first.
    pub fn new(lowers: Vec<PathBuf>) -> Self {
        Self { lowers }
    }

    /// Looks up `components` without following symlinks in the last one.
    pub(crate) fn lookup_exact(&self, components: &[String]) -> Option<(PathBuf, Metadata)> {
        let rel: PathBuf = components.iter().collect();
        for lower in &self.lowers {
            let mut hidden_below = false;
            let mut prefix = lower.clone();
            let mut missing_prefix = false;
            for (index, component) in components.iter().enumerate() {
                prefix.push(component);
                let last = index + 1 == components.len();
                match fs::symlink_metadata(&prefix) {
                    Ok(meta) if is_whiteout(&meta) => return None,
                    Ok(meta) if !last && !meta.is_dir() => return None,
                    Ok(meta) if !last && is_opaque(&prefix) => {
                        let _ = meta;
                        hidden_below = true;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        missing_prefix = true;
                        break;
                    }
                }
            }
            if !missing_prefix {
                let disk = lower.join(&rel);
                return fs::symlink_metadata(&disk).ok().map(|meta| (disk, meta));
            }
            if hidden_below {
                return None;
            }
        }
        if components.is_empty() {
            // The root always exists.
            let disk = self.lowers.first()?.clone();
            return fs::symlink_metadata(&disk).ok().map(|meta| (disk, meta));
        }
        None
    }

    /// Resolves `path` inside the image, following symlinks (absolute ones
    /// from the image root) in every component, or all but the last when
    /// `follow_last` is false. `None` when it does not exist.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Option<Found> {
        let mut pending: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .rev()
            .map(str::to_owned)
            .collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(component) = pending.pop() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(component);
            let is_last = pending.is_empty();
            let (disk, meta) = self.lookup_exact(&resolved)?;
            if meta.file_type().is_symlink() && (follow_last || !is_last) {
                links += 1;
                if links > MAX_LINKS {
                    return None;
                }
                let target = fs::read_link(&disk).ok()?;
                let target = target.to_string_lossy().into_owned();
                resolved.pop();
                if target.starts_with('/') {
                    resolved.clear();
                }
                for part in target.split('/').rev().filter(|c| !c.is_empty()) {
                    pending.push(part.to_owned());
                }
            }
        }
        let (disk, meta) = self.lookup_exact(&resolved)?;
        Some(Found {
            path: resolved.join("/"),
            disk,
            meta,
        })
    }

    /// Lists a directory (given resolved, without symlinks) merged across
    /// layers: sorted names with where each lives.
    pub fn list_dir(&self, dir: &str) -> Vec<Found> {
        let components: Vec<String> = dir
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        let mut seen: std::collections::BTreeMap<String, Option<Found>> =
            std::collections::BTreeMap::new();
        let rel: PathBuf = components.iter().collect();
        for lower in &self.lowers {
            // The directory itself must exist (as a dir) in this layer, and
            // no ancestor may hide it; lookup_exact handles ancestors for the
            // top-most provider, so check per layer here.
            let mut prefix = lower.clone();
            let mut blocked = false;
            let mut present = true;
            for component in &components {
                prefix.push(component);
                match fs::symlink_metadata(&prefix) {
                    Ok(meta) if is_whiteout(&meta) || !meta.is_dir() => {
                        blocked = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        present = false;
                        break;
                    }
                }
            }
            if blocked {
                break;
            }
            if !present {
                continue;
            }
            let dir_path = lower.join(&rel);
            if let Ok(read) = fs::read_dir(&dir_path) {
                for item in read.flatten() {
                    let name = item.file_name().to_string_lossy().into_owned();
                    if seen.contains_key(&name) {
                        continue;
                    }
                    let disk = item.path();
                    match fs::symlink_metadata(&disk) {
                        Ok(meta) if is_whiteout(&meta) => {
                            seen.insert(name, None);
                        }
                        Ok(meta) => {
                            let path = if dir.is_empty() {
                                name.clone()
                            } else {
                                format!("{}/{name}", components.join("/"))
                            };
                            seen.insert(name, Some(Found { path, disk, meta }));
                        }
                        Err(_) => {}
                    }
                }
            }
            if is_opaque(&dir_path) {
                break;
            }
        }
        seen.into_values().flatten().collect()
    }

    /// Reads a small file of the image (e.g. /etc/passwd), if present.
    pub fn read_file(&self, path: &str, limit: u64) -> Option<String> {
        let found = self.resolve(path, true)?;
        if !found.meta.is_file() || found.meta.len() > limit {
            return None;
        }
        fs::read_to_string(&found.disk).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn whiteout(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .expect("mknod a whiteout (needs root)");
    }

    #[test]
    fn merged_view_follows_overlay_rules() {
        let base = tempfile::tempdir().unwrap();
        let top = tempfile::tempdir().unwrap();
        fs::create_dir_all(base.path().join("etc/app")).unwrap();
        fs::write(
            base.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\n",
        )
        .unwrap();
        fs::write(base.path().join("etc/app/old"), "old").unwrap();
        fs::write(base.path().join("gone"), "x").unwrap();
        fs::create_dir_all(base.path().join("usr/bin")).unwrap();
        symlink("usr/bin", base.path().join("bin")).unwrap();
        fs::create_dir_all(top.path().join("etc/app")).unwrap();
        fs::write(top.path().join("etc/app/new"), "new").unwrap();
        rustix::fs::setxattr(
            top.path().join("etc/app"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .expect("set the opaque xattr (needs root)");
        whiteout(&top.path().join("gone"));
        let view = MergedView::new(vec![top.path().to_path_buf(), base.path().to_path_buf()]);

        assert!(
            view.read_file("/etc/passwd", 1024)
                .unwrap()
                .starts_with("root")
        );
        assert!(
            view.resolve("/gone", true).is_none(),
            "whiteout hides the file"
        );
        assert!(
            view.resolve("/etc/app/old", true).is_none(),
            "opaque dir hides the old file"
        );
        assert!(view.resolve("/etc/app/new", true).is_some());
        let names: Vec<String> = view
            .list_dir("etc/app")
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(names, vec!["etc/app/new"]);
        let root: Vec<String> = view.list_dir("").into_iter().map(|f| f.path).collect();
        assert_eq!(root, vec!["bin", "etc", "usr"]);
        let bin = view.resolve("/bin", true).unwrap();
        assert_eq!(bin.path, "usr/bin");
        assert!(bin.meta.is_dir());
        let link = view.resolve("/bin", false).unwrap();
        assert!(link.meta.file_type().is_symlink());
    }
}
