//! The OCI image layout files: `index.json`, regenerated from the database after every
//! change (the database is the source of truth), and atomic small-file writes.
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

/// Writes `bytes` to `path` via a temp file in `tmp_dir`: write, fsync, rename, fsync dir.
pub(crate) fn write_atomically(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temp = tempfile::Builder::new()
        .prefix("meta-")
        .tempfile_in(tmp_dir)
        .map_err(io_err("creating temp file in", tmp_dir))?;
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
        let conn = self.conn();
        let db_err = self.db_err();
        let mut statement = conn
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
        Ok(ImageIndex::oci(manifests).to_canonical_json()?)
    }

    /// Rewrites `index.json` from the database if it differs. Serialized across processes
    /// by `index.lock`; the database is read after taking the lock, so the last writer
    /// always writes the newest state.
    pub(crate) fn regenerate_index(&self) -> Result<()> {
        // The shared store lock keeps an idle-store opener from deleting our temp file.
        let _lease = self.lease()?;
        let _guard = crate::lock::exclusive(&self.index_lock_path())?;
        let expected = self.expected_index()?;
        let path = self.root.join("index.json");
        match fs::read(&path) {
            Ok(current) if current == expected => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("reading", &path)(e)),
        }
        write_atomically(&self.tmp_dir, &path, &expected)
    }
}
