//! ADD's extras over COPY: a local tar archive (plain, gzip, bzip2, xz or
//! zstd) is extracted into the destination, and a URL is downloaded (its
//! `--checksum` verified) into it. Each source is staged in a scratch
//! directory and then planned like a COPY from there.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use stowage_archive::{ApplyOptions, SpecialFilePolicy, apply_layer, decompressing_reader};
use stowage_context::{Context, EntryKind, KeepAll, StatCache};
use stowage_digest::{Digest, HashingWriter};
use stowage_dockerfile::instructions::Source;
use stowage_store::Store;

use crate::copy::{CopyFrom, CopyPlan, CopySpec, plan_copy};
use crate::error::StepError;
use crate::rootfs::{MergedView, scratch_dir};

/// Whether a source is a URL ADD downloads.
pub fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

/// Whether the file is a tar archive, possibly compressed.
fn is_tar_archive(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let Ok((_, mut reader)) = decompressing_reader(file) else {
        return false;
    };
    let mut header = [0u8; 512];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => return false,
        }
    }
    if filled < 512 {
        return false;
    }
    let magic = &header[257..262];
    let checksum_ok = {
        let stored = String::from_utf8_lossy(&header[148..156]);
        let stored = stored.trim_matches(|c: char| c == '\0' || c == ' ');
        let computed: u32 = header
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
        u32::from_str_radix(stored, 8).is_ok_and(|v| v == computed)
    };
    magic == b"ustar" || checksum_ok
}

/// Plans an ADD: archives extracted, URLs downloaded, other sources as COPY.
/// Returns the plan and the scratch directories the caller removes after
/// writing the layer.
#[allow(clippy::too_many_arguments)]
pub fn plan_add(
    store: &Store,
    context: &Context,
    stat_cache: &mut StatCache,
    spec: &CopySpec<'_>,
    image: &MergedView,
    checksum: Option<&str>,
) -> Result<(CopyPlan, Vec<PathBuf>), StepError> {
    if spec.sources.len() > 1 && !spec.dest.ends_with('/') {
        return Err(StepError::Invalid(format!(
            "when adding more than one source, the destination {:?} must be a directory and end with a /",
            spec.dest
        )));
    }
    if checksum.is_some()
        && !(spec.sources.len() == 1
            && matches!(&spec.sources[0], Source::Path { path } if is_url(path)))
    {
        return Err(StepError::Invalid(
            "--checksum can only be used with a single URL source".to_owned(),
        ));
    }
    let mut plan = CopyPlan::default();
    let mut scratch = Vec::new();
    // Files from an archive keep the archive's owners (unless --chown), as
    // Docker does; everything else is owned by root or --chown. The layer
    // writer applies one rule to a whole plan, so owners are kept only when
    // every source is an archive.
    let mut every_source_is_an_archive = true;
    for source in spec.sources {
        let one = std::slice::from_ref(source);
        let Source::Path { path } = source else {
            every_source_is_an_archive = false;
            let sub = CopySpec {
                sources: one,
                ..*spec
            };
            let mut from = CopyFrom::Context {
                context,
                stat_cache,
            };
            plan.merge(plan_copy(&mut from, &sub, image)?);
            continue;
        };
        if is_url(path) {
            every_source_is_an_archive = false;
            let dir = scratch_dir(store, "add-url-")?;
            scratch.push(dir.clone());
            let name = url_file_name(path);
            download(path, &dir.join(&name), checksum)?;
            let staged = Context::open(&dir, Box::new(KeepAll))?;
            let mut cache = StatCache::new();
            let sources = [Source::Path { path: name.clone() }];
            let sub = CopySpec {
                sources: &sources,
                ..*spec
            };
            let mut from = CopyFrom::Context {
                context: &staged,
                stat_cache: &mut cache,
            };
            let mut sub_plan = plan_copy(&mut from, &sub, image)?;
            sub_plan.rename_source(&name, path);
            plan.merge(sub_plan);
            continue;
        }
        for entry in context.resolve(path)? {
            let disk = context.path_of(&entry.rel);
            if entry.kind == EntryKind::File && is_tar_archive(&disk) {
                let dir = scratch_dir(store, "add-tar-")?;
                scratch.push(dir.clone());
                extract(&disk, &dir)?;
                // The key covers the archive's content; the extracted files
                // are planned from the scratch tree.
                let digest = context.content_digest(&entry, stat_cache)?;
                let staged = Context::open(&dir, Box::new(KeepAll))?;
                let mut cache = StatCache::new();
                let sources = [Source::Path {
                    path: ".".to_owned(),
                }];
                let dest = if spec.dest.ends_with('/') {
                    spec.dest.to_owned()
                } else {
                    format!("{}/", spec.dest)
                };
                let sub = CopySpec {
                    sources: &sources,
                    dest: &dest,
                    ..*spec
                };
                let mut from = CopyFrom::Context {
                    context: &staged,
                    stat_cache: &mut cache,
                };
                let mut sub_plan = plan_copy(&mut from, &sub, image)?;
                sub_plan.rename_source(".", &format!("{}@{digest}", entry.rel));
                plan.merge(sub_plan);
            } else {
                every_source_is_an_archive = false;
                let sources = [Source::Path {
                    path: entry.rel.clone(),
                }];
                let sub = CopySpec {
                    sources: &sources,
                    ..*spec
                };
                let mut from = CopyFrom::Context {
                    context,
                    stat_cache,
                };
                let mut sub_plan = plan_copy(&mut from, &sub, image)?;
                sub_plan.rename_source(&entry.rel, path);
                plan.merge(sub_plan);
            }
        }
    }
    plan.keep_owners = every_source_is_an_archive && spec.owner.is_none();
    Ok((plan, scratch))
}

fn url_file_name(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    let after_scheme = without_query
        .split_once("://")
        .map_or(without_query, |(_, rest)| rest);
    match after_scheme.split_once('/') {
        Some((_, path)) => path
            .rsplit('/')
            .find(|part| !part.is_empty())
            .unwrap_or("__unnamed__")
            .to_owned(),
        None => "__unnamed__".to_owned(),
    }
}

fn extract(archive: &Path, dir: &Path) -> Result<(), StepError> {
    let file = fs::File::open(archive).map_err(StepError::io("opening", archive))?;
    let (_, reader) = decompressing_reader(file).map_err(StepError::io("reading", archive))?;
    let options = ApplyOptions {
        special_files: SpecialFilePolicy::Skip,
        require_end_marker: false,
        ..ApplyOptions::default()
    };
    apply_layer(reader, dir, &options).map_err(|source| StepError::LayerApply {
        diff_id: archive.display().to_string(),
        source,
    })?;
    Ok(())
}

/// Downloads `url` to `target` (mode 0600, as Docker's ADD leaves it),
/// checking `sha256:<hex>` when given.
fn download(url: &str, target: &Path, checksum: Option<&str>) -> Result<(), StepError> {
    let expected: Option<Digest> = match checksum {
        Some(text) => Some(text.parse().map_err(|_| {
            StepError::Invalid(format!(
                "invalid --checksum {text:?}: expected sha256:<64 hex digits>"
            ))
        })?),
        None => None,
    };
    let response = ureq::get(url)
        .call()
        .map_err(|e| StepError::Invalid(format!("ADD {url}: download failed: {e}")))?;
    let mut body = response.into_body();
    let mut reader = body.as_reader();
    let file = fs::File::create(target).map_err(StepError::io("creating", target))?;
    let mut writer = HashingWriter::new(file);
    io::copy(&mut reader, &mut writer).map_err(StepError::io("downloading into", target))?;
    let (file, digest, _) = writer.finish();
    drop(file);
    if let Some(expected) = expected
        && expected != digest
    {
        return Err(StepError::Invalid(format!(
            "ADD {url}: checksum mismatch: expected {expected}, got {digest}"
        )));
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(target, fs::Permissions::from_mode(0o600))
        .map_err(StepError::io("setting the mode of", target))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_file_names() {
        assert_eq!(
            url_file_name("https://example.com/a/b.tar.gz?x=1"),
            "b.tar.gz"
        );
        assert_eq!(url_file_name("http://example.com/"), "__unnamed__");
        assert_eq!(url_file_name("http://example.com"), "__unnamed__");
    }

    #[test]
    fn tar_detection() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.txt");
        fs::write(&plain, "not a tar").unwrap();
        assert!(!is_tar_archive(&plain));
        let tar_path = dir.path().join("a.tar");
        let mut builder = tar::Builder::new(fs::File::create(&tar_path).unwrap());
        let mut header = tar::Header::new_ustar();
        header.set_size(2);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "x.txt", &b"hi"[..])
            .unwrap();
        builder.finish().unwrap();
        drop(builder);
        assert!(is_tar_archive(&tar_path));
        let gz_path = dir.path().join("a.tar.gz");
        let mut encoder = flate2::write::GzEncoder::new(
            fs::File::create(&gz_path).unwrap(),
            flate2::Compression::default(),
        );
        io::copy(&mut fs::File::open(&tar_path).unwrap(), &mut encoder).unwrap();
        encoder.finish().unwrap();
        assert!(is_tar_archive(&gz_path));
    }
}
