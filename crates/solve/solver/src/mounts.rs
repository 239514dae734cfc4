//! `RUN --mount`: cache directories that persist in the store and never become
//! part of a layer, tmpfs, secrets readable only during the RUN, and
//! read-only binds of the context, another stage or an image.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use stowage_digest::Digest;
use stowage_dockerfile::instructions::{Mount, MountType};
use stowage_exec::ExtraMount;
use stowage_store::Store;

use crate::error::StepError;
use crate::rootfs::{MergedView, scratch_dir};

/// The mounts of one RUN, and the scratch directories they need (removed by
/// the caller after the run).
#[derive(Debug, Default)]
pub struct PreparedMounts {
    /// For the sandbox.
    pub mounts: Vec<ExtraMount>,
    /// Scratch directories to remove afterwards.
    pub scratch: Vec<PathBuf>,
    /// Lock files held while the RUN runs (`sharing=locked`).
    pub locks: Vec<fs::File>,
}

/// The directory of a cache mount: `<root>/cache-mounts-v1/<sha256 of id>`.
pub fn cache_dir(store: &Store, id: &str) -> PathBuf {
    store
        .root()
        .join("cache-mounts-v1")
        .join(Digest::of(id.as_bytes()).hex())
}

fn target_of(mount: &Mount) -> Result<String, StepError> {
    match &mount.target {
        Some(target) if target.starts_with('/') => Ok(target.clone()),
        Some(target) => Ok(format!("/{target}")),
        None => Err(StepError::Invalid(format!(
            "--mount type={:?} needs a target=",
            mount.kind
        ))),
    }
}

/// Turns the RUN's `--mount` flags into sandbox mounts.
pub fn prepare(
    store: &Store,
    mounts: &[Mount],
    secrets: &BTreeMap<String, PathBuf>,
    image: &MergedView,
    context_root: &Path,
    views: &BTreeMap<String, MergedView>,
) -> Result<PreparedMounts, StepError> {
    let mut prepared = PreparedMounts::default();
    for mount in mounts {
        match mount.kind {
            MountType::Cache => {
                let target = target_of(mount)?;
                if let Some(existing) = image.resolve(&target, true)
                    && !existing.meta.is_dir()
                {
                    return Err(StepError::Invalid(format!(
                        "--mount type=cache,target={target}: {target} is not a directory in the image"
                    )));
                }
                let id = mount.id.clone().unwrap_or_else(|| target.clone());
                let dir = cache_dir(store, &id);
                if !dir.is_dir() {
                    fs::create_dir_all(&dir)
                        .map_err(StepError::io("creating cache mount", &dir))?;
                    let mode = mount.mode.unwrap_or(0o755);
                    fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                        .map_err(StepError::io("setting the mode of", &dir))?;
                    let uid = mount.uid.unwrap_or(0);
                    let gid = mount.gid.unwrap_or(0);
                    let meta = fs::metadata(&dir).map_err(StepError::io("reading", &dir))?;
                    if meta.uid() != uid || meta.gid() != gid {
                        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                            .map_err(StepError::io("setting the owner of", &dir))?;
                    }
                }
                if matches!(
                    mount.sharing,
                    Some(stowage_dockerfile::instructions::CacheSharing::Locked)
                        | Some(stowage_dockerfile::instructions::CacheSharing::Private)
                ) {
                    let lock_path = dir.with_extension("lock");
                    let file = fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&lock_path)
                        .map_err(StepError::io("opening", &lock_path))?;
                    file.lock().map_err(StepError::io("locking", &lock_path))?;
                    prepared.locks.push(file);
                }
                prepared.mounts.push(ExtraMount::Bind {
                    source: dir,
                    target: PathBuf::from(target),
                    read_only: false,
                });
            }
            MountType::Tmpfs => prepared.mounts.push(ExtraMount::Tmpfs {
                target: PathBuf::from(target_of(mount)?),
                size_bytes: mount.size,
            }),
            MountType::Secret => {
                let id = mount
                    .id
                    .clone()
                    .or_else(|| {
                        mount
                            .target
                            .as_deref()
                            .and_then(|t| t.rsplit('/').next())
                            .map(str::to_owned)
                    })
                    .ok_or_else(|| {
                        StepError::Invalid("--mount type=secret needs id=".to_owned())
                    })?;
                let Some(source) = secrets.get(&id) else {
                    if mount.required {
                        return Err(StepError::Invalid(format!(
                            "secret {id:?} is required: pass it with --secret id={id},src=FILE"
                        )));
                    }
                    continue;
                };
                let target = mount
                    .target
                    .clone()
                    .map(|t| {
                        if t.starts_with('/') {
                            t
                        } else {
                            format!("/{t}")
                        }
                    })
                    .unwrap_or_else(|| format!("/run/secrets/{id}"));
                prepared.mounts.push(ExtraMount::SecretFile {
                    source: source.clone(),
                    target: PathBuf::from(target),
                });
            }
            MountType::Bind => {
                let target = target_of(mount)?;
                let source_path = mount.source.clone().unwrap_or_default();
                let source = match mount.from.as_deref() {
                    None => {
                        let root = context_root;
                        let rel = clean(&source_path);
                        let path = if rel.is_empty() {
                            root.to_path_buf()
                        } else {
                            root.join(&rel)
                        };
                        let canonical = fs::canonicalize(&path)
                            .map_err(StepError::io("--mount type=bind: reading", &path))?;
                        if !canonical.starts_with(root) {
                            return Err(StepError::Invalid(format!(
                                "--mount type=bind,source={source_path} is outside the build context"
                            )));
                        }
                        canonical
                    }
                    Some(name) => {
                        let view = views.get(name).ok_or_else(|| {
                            StepError::Invalid(format!("unknown mount source {name:?}"))
                        })?;
                        let found = view.resolve(&source_path, true).ok_or_else(|| {
                            StepError::Invalid(format!(
                                "--mount type=bind: {source_path:?} not found in {}",
                                mount.from.as_deref().unwrap_or("the context")
                            ))
                        })?;
                        let scratch = scratch_dir(store, "bind-")?;
                        prepared.scratch.push(scratch.clone());
                        let copy = scratch.join("src");
                        materialize(view, &found.path, &copy)?;
                        copy
                    }
                };
                prepared.mounts.push(ExtraMount::Bind {
                    source,
                    target: PathBuf::from(target),
                    read_only: true,
                });
            }
            MountType::Ssh => {
                return Err(StepError::Invalid(
                    "--mount type=ssh is not supported: stowage has no SSH agent forwarding"
                        .to_owned(),
                ));
            }
        }
    }
    Ok(prepared)
}

fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// Copies a path of a merged view into `dest` (files are copied, not
/// linked, so nothing can write back into the shared layer trees).
fn materialize(view: &MergedView, path: &str, dest: &Path) -> Result<(), StepError> {
    let Some(found) = view.resolve(path, false) else {
        return Ok(());
    };
    let meta = &found.meta;
    if meta.is_dir() {
        fs::create_dir_all(dest).map_err(StepError::io("creating", dest))?;
        for child in view.list_dir(&found.path) {
            let name = child
                .path
                .rsplit('/')
                .next()
                .unwrap_or(&child.path)
                .to_owned();
            materialize(view, &child.path, &dest.join(name))?;
        }
        fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(StepError::io("setting the mode of", dest))?;
    } else if meta.file_type().is_symlink() {
        let target = fs::read_link(&found.disk).map_err(StepError::io("reading", &found.disk))?;
        std::os::unix::fs::symlink(target, dest).map_err(StepError::io("creating", dest))?;
    } else if meta.is_file() {
        fs::copy(&found.disk, dest).map_err(StepError::io("copying to", dest))?;
    }
    Ok(())
}
