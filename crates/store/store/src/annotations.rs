//! Derived data kept beside layers and images so it is computed once: the advisor's
//! per-layer entry lists (by diff_id) and per-image analyses (by manifest digest). Rows are
//! opaque bytes owned by whoever wrote them, named by a `kind` that carries its format
//! version; pruning drops the rows of layers and images that are gone.

use rusqlite::{OptionalExtension, params};
use stowage_digest::Digest;

use crate::Store;
use crate::error::Result;

/// SQL creating the annotation tables (idempotent; part of the cache schema).
pub(crate) const ANNOTATION_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS layer_annotations (
    diff_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (diff_id, kind)
);
CREATE TABLE IF NOT EXISTS image_annotations (
    manifest_digest TEXT NOT NULL,
    kind            TEXT NOT NULL,
    data            BLOB NOT NULL,
    PRIMARY KEY (manifest_digest, kind)
);
";

/// What an annotation belongs to: its table and the column naming the object.
#[derive(Debug, Clone, Copy)]
enum Subject {
    /// A layer, by diff_id.
    Layer,
    /// An image, by manifest digest.
    Image,
}

impl Subject {
    fn table_and_key(self) -> (&'static str, &'static str) {
        match self {
            Subject::Layer => ("layer_annotations", "diff_id"),
            Subject::Image => ("image_annotations", "manifest_digest"),
        }
    }
}

impl Store {
    /// The `kind` annotation of the layer with this diff_id.
    pub fn layer_annotation(&self, diff_id: &Digest, kind: &str) -> Result<Option<Vec<u8>>> {
        self.annotation(Subject::Layer, diff_id, kind)
    }

    /// Sets the `kind` annotation of a layer.
    pub fn set_layer_annotation(&self, diff_id: &Digest, kind: &str, data: &[u8]) -> Result<()> {
        self.set_annotation(Subject::Layer, diff_id, kind, data)
    }

    /// The `kind` annotation of the image with this manifest digest.
    pub fn image_annotation(&self, manifest: &Digest, kind: &str) -> Result<Option<Vec<u8>>> {
        self.annotation(Subject::Image, manifest, kind)
    }

    /// Sets the `kind` annotation of an image.
    pub fn set_image_annotation(&self, manifest: &Digest, kind: &str, data: &[u8]) -> Result<()> {
        self.set_annotation(Subject::Image, manifest, kind, data)
    }

    fn annotation(&self, subject: Subject, key: &Digest, kind: &str) -> Result<Option<Vec<u8>>> {
        let (table, column) = subject.table_and_key();
        self.conn()
            .query_row(
                &format!("SELECT data FROM {table} WHERE {column} = ?1 AND kind = ?2"),
                params![key.to_string(), kind],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.db_err())
    }

    /// Annotations are derived data: a commit lost to a power cut only costs recomputing.
    fn set_annotation(
        &self,
        subject: Subject,
        key: &Digest,
        kind: &str,
        data: &[u8],
    ) -> Result<()> {
        let (table, column) = subject.table_and_key();
        self.relaxed_conn()
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO {table} ({column}, kind, data) VALUES (?1, ?2, ?3)"
                ),
                params![key.to_string(), kind, data],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Drops annotations of layers and images the store no longer has.
    pub(crate) fn forget_orphan_annotations(&self) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "DELETE FROM layer_annotations WHERE diff_id NOT IN (SELECT diff_id FROM layers)",
            [],
        )
        .map_err(self.db_err())?;
        conn.execute(
            "DELETE FROM image_annotations
             WHERE manifest_digest NOT IN (SELECT manifest_digest FROM images)",
            [],
        )
        .map_err(self.db_err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_round_trip_and_orphans_are_forgotten() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let layer = Digest::of(b"layer");
        let image = Digest::of(b"image");
        assert_eq!(store.layer_annotation(&layer, "scan-v1").unwrap(), None);
        store
            .set_layer_annotation(&layer, "scan-v1", b"one")
            .unwrap();
        store
            .set_layer_annotation(&layer, "scan-v1", b"two")
            .unwrap();
        store
            .set_image_annotation(&image, "analysis-v1", b"{}")
            .unwrap();
        assert_eq!(
            store
                .layer_annotation(&layer, "scan-v1")
                .unwrap()
                .as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(store.layer_annotation(&layer, "other").unwrap(), None);
        assert_eq!(
            store
                .image_annotation(&image, "analysis-v1")
                .unwrap()
                .as_deref(),
            Some(&b"{}"[..])
        );
        // Neither the layer nor the image is in the store: both go.
        store.forget_orphan_annotations().unwrap();
        assert_eq!(store.layer_annotation(&layer, "scan-v1").unwrap(), None);
        assert_eq!(store.image_annotation(&image, "analysis-v1").unwrap(), None);
    }
}
