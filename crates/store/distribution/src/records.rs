//! What stowage remembers about registries, in `<root>/distribution-v1.db`
//! (SQLite, WAL): which repositories of which registry hold a blob (learned by
//! pulling or pushing it, used to mount it across repositories instead of
//! uploading it again), and the repository digests (`name@sha256:...`) by
//! which images were pulled or pushed (Docker's `RepoDigests`).
//!
//! These are hints, not store state: losing the file only costs a mount or a
//! lookup, and entries may name images that were removed since. Garbage
//! collection of the store does not touch it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use stowage_digest::Digest;
use stowage_store::Store;

use crate::error::{DistributionError, Result};

/// File name of the records database inside the store root (versioned).
pub const RECORDS_FILE: &str = "distribution-v1.db";

/// The records database of one store.
pub struct Records {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").field("path", &self.path).finish()
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Records {
    /// Opens (creating if needed) the records of `store`.
    pub fn open(store: &Store) -> Result<Self> {
        Self::open_at(&store.root().join(RECORDS_FILE))
    }

    /// Opens (creating if needed) a records database at an explicit path.
    pub fn open_at(path: &Path) -> Result<Self> {
        let error = |source| DistributionError::Records {
            path: path.to_owned(),
            source,
        };
        let conn = Connection::open(path).map_err(error)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(error)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS blob_locations (
                 digest TEXT NOT NULL,
                 registry TEXT NOT NULL,
                 repository TEXT NOT NULL,
                 seen_unix INTEGER NOT NULL,
                 PRIMARY KEY (digest, registry, repository)
             );
             CREATE TABLE IF NOT EXISTS repo_digests (
                 repo_digest TEXT PRIMARY KEY,
                 manifest_digest TEXT NOT NULL,
                 seen_unix INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS repo_digests_by_manifest ON repo_digests (manifest_digest);",
        )
        .map_err(error)?;
        Ok(Records {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn error(&self) -> impl Fn(rusqlite::Error) -> DistributionError + '_ {
        move |source| DistributionError::Records {
            path: self.path.clone(),
            source,
        }
    }

    /// Remembers that `registry`/`repository` holds these blobs.
    pub fn record_blobs(&self, registry: &str, repository: &str, digests: &[Digest]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(self.error())?;
        let now = now_unix();
        for digest in digests {
            tx.execute(
                "INSERT INTO blob_locations (digest, registry, repository, seen_unix) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(digest, registry, repository) DO UPDATE SET seen_unix = excluded.seen_unix",
                params![digest.to_string(), registry, repository, now],
            )
            .map_err(self.error())?;
        }
        tx.commit().map_err(self.error())
    }

    /// Another repository of `registry` known to hold `digest` (most recently seen
    /// first), to mount the blob from when pushing to `repository`.
    pub fn mount_source(
        &self,
        registry: &str,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<String>> {
        self.conn()
            .query_row(
                "SELECT repository FROM blob_locations
                 WHERE digest = ?1 AND registry = ?2 AND repository <> ?3
                 ORDER BY seen_unix DESC, repository LIMIT 1",
                params![digest.to_string(), registry, repository],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.error())
    }

    /// Forgets that `registry`/`repository` holds `digest` (a mount from it failed).
    pub fn forget_blob(&self, registry: &str, repository: &str, digest: &Digest) -> Result<()> {
        self.conn()
            .execute(
                "DELETE FROM blob_locations WHERE digest = ?1 AND registry = ?2 AND repository = ?3",
                params![digest.to_string(), registry, repository],
            )
            .map(|_| ())
            .map_err(self.error())
    }

    /// Remembers that `name@digest` (`name` is `registry/repository`, `digest` the
    /// top-level manifest or index digest in that repository) is the local image
    /// whose manifest digest is `manifest_digest`.
    pub fn record_repo_digest(
        &self,
        name: &str,
        digest: &Digest,
        manifest_digest: &Digest,
    ) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO repo_digests (repo_digest, manifest_digest, seen_unix) VALUES (?1, ?2, ?3)
                 ON CONFLICT(repo_digest) DO UPDATE SET manifest_digest = excluded.manifest_digest,
                    seen_unix = excluded.seen_unix",
                params![format!("{name}@{digest}"), manifest_digest.to_string(), now_unix()],
            )
            .map(|_| ())
            .map_err(self.error())
    }

    /// The repository digests (`name@sha256:...`, sorted) recorded for a local image.
    pub fn repo_digests(&self, manifest_digest: &Digest) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT repo_digest FROM repo_digests WHERE manifest_digest = ?1 ORDER BY repo_digest",
            )
            .map_err(self.error())?;
        let rows = statement
            .query_map([manifest_digest.to_string()], |row| row.get::<_, String>(0))
            .map_err(self.error())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.error())
    }

    /// The local manifest digest recorded for `name@digest`, if any.
    pub fn manifest_for_repo_digest(&self, name: &str, digest: &Digest) -> Result<Option<Digest>> {
        let text: Option<String> = self
            .conn()
            .query_row(
                "SELECT manifest_digest FROM repo_digests WHERE repo_digest = ?1",
                [format!("{name}@{digest}")],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.error())?;
        Ok(text.and_then(|t| t.parse().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_locations_give_mount_sources_from_other_repositories_of_the_same_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = Records::open_at(&dir.path().join(RECORDS_FILE)).expect("open");
        let blob = Digest::of(b"layer");
        let other = Digest::of(b"other");
        records
            .record_blobs("127.0.0.1:5000", "team/base", &[blob])
            .expect("record");
        records
            .record_blobs("127.0.0.1:6000", "team/elsewhere", &[other])
            .expect("record");
        assert_eq!(
            records
                .mount_source("127.0.0.1:5000", "team/app", &blob)
                .expect("query"),
            Some("team/base".to_owned())
        );
        // Not from the repository itself, not from another registry.
        assert_eq!(
            records
                .mount_source("127.0.0.1:5000", "team/base", &blob)
                .expect("query"),
            None
        );
        assert_eq!(
            records
                .mount_source("127.0.0.1:5000", "team/app", &other)
                .expect("query"),
            None
        );
        records
            .forget_blob("127.0.0.1:5000", "team/base", &blob)
            .expect("forget");
        assert_eq!(
            records
                .mount_source("127.0.0.1:5000", "team/app", &blob)
                .expect("query"),
            None
        );
        // Re-recording is idempotent.
        records
            .record_blobs("127.0.0.1:5000", "team/base", &[blob, blob])
            .expect("record twice");
    }

    #[test]
    fn repo_digests_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(RECORDS_FILE);
        let index = Digest::of(b"index");
        let manifest = Digest::of(b"manifest");
        {
            let records = Records::open_at(&path).expect("open");
            records
                .record_repo_digest("docker.io/library/alpine", &index, &manifest)
                .expect("record");
            records
                .record_repo_digest("127.0.0.1:5000/alpine", &manifest, &manifest)
                .expect("record");
        }
        let records = Records::open_at(&path).expect("reopen");
        assert_eq!(
            records.repo_digests(&manifest).expect("query"),
            vec![
                format!("127.0.0.1:5000/alpine@{manifest}"),
                format!("docker.io/library/alpine@{index}"),
            ]
        );
        assert_eq!(
            records
                .manifest_for_repo_digest("docker.io/library/alpine", &index)
                .expect("query"),
            Some(manifest)
        );
        assert_eq!(
            records
                .manifest_for_repo_digest("docker.io/library/busybox", &index)
                .expect("query"),
            None
        );
    }
}
