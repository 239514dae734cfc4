//! The OCI image layout files: `index.json`, regenerated from the database after every
//! change (the database is the source of truth), atomic small-file writes, and the temp
//! files that every published file (blob, layout file, saved archive) starts as.
//!
//! Tag convention: each tag is one `index.json` entry whose
//! `org.opencontainers.image.ref.name` annotation is the FULL normalized reference, e.g.
//! `docker.io/library/alpine:latest` or `localhost:5000/x:1`. That string satisfies the
//! annotation grammar skopeo enforces for `oci:<dir>:<ref>` (alphanumeric components joined
//! by `/`, with `.`, `_`, `-`, `:`, `@`, `+` separators), so
//! `skopeo inspect oci:<root>:docker.io/library/alpine:latest` works (the `<dir>` part must
//! not contain `:`). Untagged images are listed without the annotation so that every image
//! stays reachable for tools that garbage-collect the layout.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use stowage_digest::Digest;
use stowage_image::media_types::ANNOTATION_REF_NAME;
use stowage_image::{Descriptor, ImageIndex, Platform};

use crate::Store;
use crate::blob::sync_dir;
use crate::error::{Result, StoreError, io_err};

/// SQL tracking whether `index.json` is current (idempotent; part of the schema): every
/// change to `images` or `tags` bumps `generation`; `written` is the generation the file
/// was last written (or found right) for. Opening a store whose two agree, with the file
/// there, skips rebuilding the index from every image.
pub(crate) const INDEX_STATE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS index_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL,
    written    INTEGER
);
INSERT OR IGNORE INTO index_state (id, generation, written) VALUES (1, 1, NULL);
CREATE TRIGGER IF NOT EXISTS index_state_image_added AFTER INSERT ON images
    BEGIN UPDATE index_state SET generation = generation + 1; END;
CREATE TRIGGER IF NOT EXISTS index_state_image_changed AFTER UPDATE ON images
    BEGIN UPDATE index_state SET generation = generation + 1; END;
CREATE TRIGGER IF NOT EXISTS index_state_image_removed AFTER DELETE ON images
    BEGIN UPDATE index_state SET generation = generation + 1; END;
CREATE TRIGGER IF NOT EXISTS index_state_tag_added AFTER INSERT ON tags
    BEGIN UPDATE index_state SET generation = generation + 1; END;
CREATE TRIGGER IF NOT EXISTS index_state_tag_changed AFTER UPDATE ON tags
    BEGIN UPDATE index_state SET generation = generation + 1; END;
CREATE TRIGGER IF NOT EXISTS index_state_tag_removed AFTER DELETE ON tags
    BEGIN UPDATE index_state SET generation = generation + 1; END;
";

/// A temp file in `dir` for content that is renamed into place and outlives the process
/// (blobs, `index.json`, a saved archive). It is created with mode 0666 less the umask, as
/// any file a user creates, and not with tempfile's private 0600: a store or archive in a
/// readable directory can then be read by other users and tools (skopeo, umoci) too.
pub fn published_temp_file(dir: &Path, prefix: &str) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt as _;
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
}

/// Writes `bytes` to `path` via a temp file in `tmp_dir`: write, fsync, rename, fsync dir.
pub(crate) fn write_atomically(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temp =
        published_temp_file(tmp_dir, "meta-").map_err(io_err("creating temp file in", tmp_dir))?;
    temp.write_all(bytes)
        .map_err(io_err("writing", temp.path()))?;
    temp.as_file()
        .sync_all()
        .map_err(io_err("syncing", temp.path()))?;
    temp.persist(path)
        .map_err(|e| io_err("renaming into", path)(e.error))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

impl Store {
    /// The `index.json` the database currently implies.
    pub(crate) fn expected_index(&self) -> Result<Vec<u8>> {
        Ok(self.expected_index_and_generation()?.0)
    }

    /// The `index.json` the database currently implies, and the index generation it is
    /// for (read in the same transaction).
    fn expected_index_and_generation(&self) -> Result<(Vec<u8>, i64)> {
        let mut conn = self.conn();
        let db_err = self.db_err();
        let tx = conn.transaction().map_err(&db_err)?;
        let generation: i64 = tx
            .query_row("SELECT generation FROM index_state", [], |row| row.get(0))
            .map_err(&db_err)?;
        let mut statement = tx
            .prepare(
                "SELECT t.reference, i.manifest_digest, i.manifest_media_type, i.manifest_size,
                        i.os, i.architecture, i.variant
                 FROM images i LEFT JOIN tags t ON t.manifest_digest = i.manifest_digest
                 ORDER BY t.reference IS NULL, t.reference, i.manifest_digest",
            )
            .map_err(&db_err)?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, Option<String>>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(&db_err)?;
        let mut manifests = Vec::new();
        for row in rows {
            let (reference, digest, media_type, size, os, architecture, variant) =
                row.map_err(&db_err)?;
            let digest: Digest = digest
                .parse()
                .map_err(|e| StoreError::InvalidImage(format!("bad digest in database: {e}")))?;
            let size = u64::try_from(size).unwrap_or(0);
            let mut descriptor = Descriptor::new(&media_type, digest, size);
            descriptor.platform = Some(Platform {
                variant,
                ..Platform::new(&os, &architecture, None)
            });
            if let Some(reference) = reference {
                descriptor.annotations = Some(BTreeMap::from([(
                    ANNOTATION_REF_NAME.to_owned(),
                    reference,
                )]));
            }
            manifests.push(descriptor);
        }
        Ok((ImageIndex::oci(manifests).to_canonical_json()?, generation))
    }

    /// Whether `index.json` is there and was written for the database's current state.
    pub(crate) fn index_is_current(&self) -> Result<bool> {
        let in_step: bool = self
            .conn()
            .query_row(
                "SELECT written IS NOT NULL AND written = generation FROM index_state",
                [],
                |row| row.get(0),
            )
            .map_err(self.db_err())?;
        Ok(in_step && self.root.join("index.json").is_file())
    }

    /// Rewrites `index.json` from the database if it differs. Serialized across processes
    /// by `index.lock`; the database is read after taking the lock, so the last writer
    /// always writes the newest state.
    pub(crate) fn regenerate_index(&self) -> Result<()> {
        // The shared store lock keeps an idle-store opener from deleting our temp file.
        let _lease = self.lease()?;
        let _guard = crate::lock::exclusive(&self.index_lock_path())?;
        let (expected, generation) = self.expected_index_and_generation()?;
        let path = self.root.join("index.json");
        let current = match fs::read(&path) {
            Ok(current) => current == expected,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        if !current {
            write_atomically(&self.tmp_dir, &path, &expected)?;
        }
        // Only bookkeeping (still under index.lock, so a later generation is never
        // overwritten by an earlier one): lost, it costs the next open a rebuild.
        self.relaxed_conn()
            .execute("UPDATE index_state SET written = ?1", [generation])
            .map_err(self.db_err())?;
        Ok(())
    }
}
