//! Garbage collection (`prune`), space accounting (`system df`) and consistency checks
//! (`verify`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use stowage_digest::Digest;
use stowage_image::{ImageId, Reference};

use crate::Store;
use crate::blob::{hash_file, sync_dir};
use crate::error::{Result, io_err};
use crate::images::from_sql_size;

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs deleted.
    pub blobs_removed: u64,
    /// Unpacked layer trees deleted.
    pub layers_removed: u64,
    /// Bytes freed (blob sizes plus recorded unpacked sizes).
    pub bytes_reclaimed: u64,
}

/// Sizes of one image's layers, split into those shared with another image and those
/// only this image uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeBreakdown {
    /// All layers.
    pub total: u64,
    /// Layers also used by at least one other image.
    pub shared: u64,
    /// Layers used by this image only.
    pub unique: u64,
}

/// Space used by one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUsage {
    /// Image ID.
    pub id: ImageId,
    /// Manifest digest.
    pub manifest_digest: Digest,
    /// Tags, sorted.
    pub tags: Vec<Reference>,
    /// Config `created`.
    pub created: Option<String>,
    /// Layer blob sizes (compressed), by blob digest.
    pub compressed: SizeBreakdown,
    /// Uncompressed layer sizes, by diff_id; layers of unknown size count as 0.
    pub uncompressed: SizeBreakdown,
    /// False when some layer's uncompressed size is unknown.
    pub uncompressed_complete: bool,
}

/// `system df` data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Per image, in `list_images` order.
    pub images: Vec<ImageUsage>,
    /// Number of blob files.
    pub blob_count: u64,
    /// Bytes in blob files.
    pub blob_bytes: u64,
    /// Bytes in blob files no image references (what prune would free).
    pub unreferenced_blob_bytes: u64,
    /// Recorded unpacked layers.
    pub unpacked_layer_count: u64,
    /// Their recorded size.
    pub unpacked_layer_bytes: u64,
}

/// Result of [`Store::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Images checked.
    pub images_checked: u64,
    /// Blob files hashed.
    pub blobs_checked: u64,
    /// Every inconsistency found, one line each.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn list_blob_files(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let entry = entry.map_err(io_err("listing", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push((name, size));
    }
    out.sort();
    Ok(out)
}

impl Store {
    /// Every blob digest some image references (manifests, configs, layers).
    fn referenced_blobs(&self) -> Result<BTreeSet<String>> {
        let conn = self.conn();
        let db_err = self.db_err();
        let mut statement = conn
            .prepare(
                "SELECT manifest_digest FROM images UNION SELECT config_digest FROM images
                 UNION SELECT blob_digest FROM image_layers",
            )
            .map_err(&db_err)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(&db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(&db_err)
    }

    /// Removes what no image reaches. Equivalent to `prune_keeping(&BTreeSet::new())`.
    pub fn prune(&self) -> Result<PruneReport> {
        self.prune_keeping(&BTreeSet::new())
    }

    /// Removes blobs no image references (except those in `keep`, e.g. cache results),
    /// layer records no image uses, and unpacked layer trees whose diff_id no image uses
    /// (or that were never recorded). Takes the store's exclusive lock, so it waits for
    /// running writers and builds (leases) to finish.
    pub fn prune_keeping(&self, keep: &BTreeSet<Digest>) -> Result<PruneReport> {
        let _exclusive = crate::lock::exclusive(&self.lock_path())?;
        let mut report = PruneReport::default();
        let mut referenced = self.referenced_blobs()?;
        referenced.extend(keep.iter().map(Digest::to_string));
        referenced.extend(self.cache_blobs()?);
        for (name, size) in list_blob_files(&self.blobs_dir)? {
            let Ok(digest) = Digest::from_hex(&name) else {
                continue;
            };
            if referenced.contains(&digest.to_string()) {
                continue;
            }
            let path = self.blob_path(&digest);
            fs::remove_file(&path).map_err(io_err("removing blob", &path))?;
            report.blobs_removed += 1;
            report.bytes_reclaimed = report.bytes_reclaimed.saturating_add(size);
        }
        sync_dir(&self.blobs_dir)?;
        self.forget_missing_deflate_chunks()?;

        let (live_diff_ids, unpacked) = {
            let conn = self.conn();
            let db_err = self.db_err();
            conn.execute(
                "DELETE FROM layers WHERE blob_digest NOT IN (SELECT blob_digest FROM image_layers)
                   AND blob_digest NOT IN (SELECT blob_digest FROM build_cache WHERE blob_digest IS NOT NULL)",
                [],
            )
                .map_err(&db_err)?;
            let mut statement = conn
                .prepare("SELECT DISTINCT diff_id FROM layers")
                .map_err(&db_err)?;
            let live: BTreeSet<String> = statement
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(&db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(&db_err)?;
            let mut statement = conn
                .prepare("SELECT diff_id, size FROM unpacked_layers")
                .map_err(&db_err)?;
            let unpacked: BTreeMap<String, i64> = statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .map_err(&db_err)?
                .collect::<std::result::Result<_, _>>()
                .map_err(&db_err)?;
            (live, unpacked)
        };
        self.forget_orphan_annotations()?;
        for entry in fs::read_dir(&self.layers_dir).map_err(io_err("listing", &self.layers_dir))? {
            let entry = entry.map_err(io_err("listing", &self.layers_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = format!("sha256:{name}");
            let recorded = unpacked.get(&key);
            if recorded.is_some() && live_diff_ids.contains(&key) {
                continue;
            }
            let path = entry.path();
            remove_tree(&path)?;
            report.layers_removed += 1;
            report.bytes_reclaimed = report
                .bytes_reclaimed
                .saturating_add(recorded.copied().map(from_sql_size).unwrap_or(0));
        }
        {
            let conn = self.conn();
            let db_err = self.db_err();
            for diff_id in unpacked.keys().filter(|d| !live_diff_ids.contains(*d)) {
                conn.execute("DELETE FROM unpacked_layers WHERE diff_id = ?1", [diff_id])
                    .map_err(&db_err)?;
            }
        }
        Ok(report)
    }

    /// Space accounting for `system df`, from the database plus one directory listing.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let images = self.list_images()?;
        // (manifest, blob digest, diff_id, compressed, uncompressed)
        let rows: Vec<(String, String, String, i64, Option<i64>)> = {
            let conn = self.conn();
            let db_err = self.db_err();
            let mut statement = conn
                .prepare(
                    "SELECT il.manifest_digest, l.blob_digest, l.diff_id, l.compressed_size, l.uncompressed_size
                     FROM image_layers il JOIN layers l ON l.blob_digest = il.blob_digest",
                )
                .map_err(&db_err)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })
                .map_err(&db_err)?;
            rows.collect::<std::result::Result<_, _>>()
                .map_err(&db_err)?
        };
        let mut blob_users: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut diff_users: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (manifest, blob, diff_id, _, _) in &rows {
            blob_users.entry(blob).or_default().insert(manifest);
            diff_users.entry(diff_id).or_default().insert(manifest);
        }
        let mut per_image: BTreeMap<&str, ImageTally<'_>> = BTreeMap::new();
        for (manifest, blob, diff_id, compressed, uncompressed) in &rows {
            let tally = per_image.entry(manifest).or_insert_with(ImageTally::new);
            // Count each distinct layer once per image.
            if tally.blobs.insert(blob) {
                let shared = blob_users.get(blob.as_str()).is_some_and(|u| u.len() > 1);
                add(&mut tally.compressed, from_sql_size(*compressed), shared);
            }
            if tally.diff_ids.insert(diff_id) {
                match uncompressed {
                    Some(size) => {
                        let shared = diff_users
                            .get(diff_id.as_str())
                            .is_some_and(|u| u.len() > 1);
                        add(&mut tally.uncompressed, from_sql_size(*size), shared);
                    }
                    None => tally.complete = false,
                }
            }
        }
        let mut usage = DiskUsage::default();
        for image in images {
            let key = image.manifest_digest.to_string();
            let (compressed, uncompressed, complete) = per_image
                .get(key.as_str())
                .map(|t| (t.compressed, t.uncompressed, t.complete))
                .unwrap_or((SizeBreakdown::default(), SizeBreakdown::default(), true));
            usage.images.push(ImageUsage {
                id: image.id,
                manifest_digest: image.manifest_digest,
                tags: image.tags,
                created: image.created,
                compressed,
                uncompressed,
                uncompressed_complete: complete,
            });
        }
        let referenced = self.referenced_blobs()?;
        for (name, size) in list_blob_files(&self.blobs_dir)? {
            usage.blob_count += 1;
            usage.blob_bytes = usage.blob_bytes.saturating_add(size);
            if !referenced.contains(&format!("sha256:{name}")) {
                usage.unreferenced_blob_bytes = usage.unreferenced_blob_bytes.saturating_add(size);
            }
        }
        let conn = self.conn();
        let (count, bytes): (i64, i64) = conn
            .query_row(
                "SELECT count(*), COALESCE(sum(size), 0) FROM unpacked_layers",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(self.db_err())?;
        usage.unpacked_layer_count = from_sql_size(count);
        usage.unpacked_layer_bytes = from_sql_size(bytes);
        Ok(usage)
    }

    /// Checks the whole store: every blob file hashes to its name; every image's manifest,
    /// config and layer blobs exist, match their digests and agree with the database; and
    /// `index.json` matches the database.
    pub fn verify(&self) -> Result<VerifyReport> {
        let _lease = self.lease()?;
        let mut report = VerifyReport::default();
        let mut good_blobs = BTreeSet::new();
        for (name, _) in list_blob_files(&self.blobs_dir)? {
            let path = self.blobs_dir.join(&name);
            let Ok(digest) = Digest::from_hex(&name) else {
                report
                    .problems
                    .push(format!("unexpected file in blobs/sha256: {name}"));
                continue;
            };
            let (actual, size) = hash_file(&path)?;
            report.blobs_checked += 1;
            if actual == digest {
                good_blobs.insert(digest);
            } else {
                report.problems.push(format!(
                    "blob {digest} is corrupt: content is {actual} ({size} bytes)"
                ));
            }
        }
        let check = |what: String, digest: &Digest, problems: &mut Vec<String>| {
            if !good_blobs.contains(digest) {
                problems.push(format!("{what} {digest} is missing or corrupt"));
            }
        };
        for image in self.list_images()? {
            report.images_checked += 1;
            let m = image.manifest_digest;
            check(format!("manifest of image {m}:"), &m, &mut report.problems);
            check(
                format!("config of image {m}:"),
                &image.id.digest(),
                &mut report.problems,
            );
            let layers = self.image_layers(&m)?;
            for layer in &layers {
                check(
                    format!("layer of image {m}:"),
                    &layer.blob_digest,
                    &mut report.problems,
                );
            }
            if good_blobs.contains(&m) {
                match self.image_by_manifest(&m) {
                    Ok(details) => {
                        let manifest_layers: Vec<Digest> =
                            details.manifest.layers.iter().map(|d| d.digest).collect();
                        let db_layers: Vec<Digest> = layers.iter().map(|l| l.blob_digest).collect();
                        if manifest_layers != db_layers {
                            report.problems.push(format!(
                                "image {m}: database layers differ from the manifest"
                            ));
                        }
                        if details.manifest.config.digest != image.id.digest() {
                            report.problems.push(format!(
                                "image {m}: database image ID differs from the manifest"
                            ));
                        }
                    }
                    Err(e) => report.problems.push(format!("image {m}: {e}")),
                }
            }
        }
        let expected = self.expected_index()?;
        let index_path = self.root.join("index.json");
        match fs::read(&index_path) {
            Ok(current) if current == expected => {}
            Ok(_) => report
                .problems
                .push("index.json does not match the database".to_owned()),
            Err(e) => report
                .problems
                .push(format!("cannot read {}: {e}", index_path.display())),
        }
        Ok(report)
    }
}

/// Per-image accumulator for [`Store::disk_usage`].
struct ImageTally<'a> {
    compressed: SizeBreakdown,
    uncompressed: SizeBreakdown,
    complete: bool,
    blobs: BTreeSet<&'a str>,
    diff_ids: BTreeSet<&'a str>,
}

impl ImageTally<'_> {
    fn new() -> Self {
        Self {
            compressed: SizeBreakdown::default(),
            uncompressed: SizeBreakdown::default(),
            complete: true,
            blobs: BTreeSet::new(),
            diff_ids: BTreeSet::new(),
        }
    }
}

fn add(breakdown: &mut SizeBreakdown, size: u64, shared: bool) {
    breakdown.total = breakdown.total.saturating_add(size);
    if shared {
        breakdown.shared = breakdown.shared.saturating_add(size);
    } else {
        breakdown.unique = breakdown.unique.saturating_add(size);
    }
}

/// Removes a directory tree, making read-only directories writable first if needed.
fn remove_tree(path: &Path) -> Result<()> {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    for entry in walk_dirs(path) {
        let _ = fs::set_permissions(&entry, fs::Permissions::from_mode(0o700));
    }
    if path.is_dir() {
        fs::remove_dir_all(path).map_err(io_err("removing unpacked layer", path))
    } else {
        fs::remove_file(path).map_err(io_err("removing", path))
    }
}

fn walk_dirs(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
        out.push(dir);
    }
    out
}
