//! The metadata database (`<root>/meta.db`, SQLite in WAL mode): schema creation and
//! version checks. The database is the source of truth for tags and images; `index.json`
//! is regenerated from it.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Result, StoreError};

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA_V1: &str = "
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE images (
    manifest_digest     TEXT PRIMARY KEY,
    config_digest       TEXT NOT NULL,
    manifest_media_type TEXT NOT NULL,
    manifest_size       INTEGER NOT NULL,
    config_size         INTEGER NOT NULL,
    created             TEXT,
    created_unix        INTEGER,
    os                  TEXT NOT NULL,
    architecture        TEXT NOT NULL,
    variant             TEXT,
    compressed_size     INTEGER NOT NULL,
    uncompressed_size   INTEGER,
    added_unix          INTEGER NOT NULL
);
CREATE INDEX images_by_config ON images(config_digest);
CREATE TABLE layers (
    blob_digest       TEXT PRIMARY KEY,
    diff_id           TEXT NOT NULL,
    media_type        TEXT NOT NULL,
    compressed_size   INTEGER NOT NULL,
    uncompressed_size INTEGER
);
CREATE INDEX layers_by_diff_id ON layers(diff_id);
CREATE TABLE image_layers (
    manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE,
    position        INTEGER NOT NULL,
    blob_digest     TEXT NOT NULL REFERENCES layers(blob_digest),
    PRIMARY KEY (manifest_digest, position)
);
CREATE INDEX image_layers_by_blob ON image_layers(blob_digest);
CREATE TABLE tags (
    reference       TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL REFERENCES images(manifest_digest) ON DELETE CASCADE,
    updated_unix    INTEGER NOT NULL
);
CREATE INDEX tags_by_manifest ON tags(manifest_digest);
CREATE TABLE unpacked_layers (
    diff_id       TEXT PRIMARY KEY,
    size          INTEGER NOT NULL,
    unpacked_unix INTEGER NOT NULL
);
";

/// How long a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Switches the connection to WAL (a no-op once the database file is in WAL mode).
/// SQLite does not call the busy handler for this pragma: while another connection holds
/// a lock on a new database (converting it to WAL itself, say) it fails at once with
/// SQLITE_BUSY, so it is retried here, with short pauses, for up to [`BUSY_TIMEOUT`].
fn use_wal(conn: &Connection) -> rusqlite::Result<()> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

/// Opens a connection to the database (creating the file if needed) with the store's
/// settings, without touching the schema.
pub(crate) fn connect(path: &Path) -> Result<Connection> {
    let db_err = |source| StoreError::Db {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    use_wal(&conn).map_err(db_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_err)?;
    // Read pages through a memory map rather than a pread each: a build report reads
    // megabytes of kept layer entries, page by page. (Writes still go through the WAL.)
    conn.pragma_update(None, "mmap_size", 1_i64 << 30)
        .map_err(db_err)?;
    Ok(conn)
}

/// Opens (creating if needed) the database and checks its schema version.
pub(crate) fn open(path: &Path) -> Result<Connection> {
    let db_err = |source| StoreError::Db {
        path: path.to_owned(),
        source,
    };
    let mut conn = connect(path)?;
    // The usual case, a store whose schema is complete, needs no write transaction (which
    // would make the first write of a fresh WAL, with its fsyncs, on every open).
    if schema_is_current(&conn).map_err(db_err)? {
        return Ok(conn);
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let has_schema: bool = tx
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map_err(db_err)?
        > 0;
    if has_schema {
        let found: i64 = tx
            .query_row("SELECT max(version) FROM schema_version", [], |row| {
                row.get::<_, Option<i64>>(0)
            })
            .map_err(db_err)?
            .unwrap_or(0);
        if found != SCHEMA_VERSION {
            return Err(StoreError::UnsupportedSchema {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
    } else {
        tx.execute_batch(SCHEMA_V1).map_err(db_err)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [SCHEMA_VERSION],
        )
        .map_err(db_err)?;
    }
    tx.execute_batch(crate::cache::CACHE_SCHEMA)
        .map_err(db_err)?;
    tx.execute_batch(crate::deflate_memo::DEFLATE_CHUNK_SCHEMA)
        .map_err(db_err)?;
    tx.execute_batch(crate::annotations::ANNOTATION_SCHEMA)
        .map_err(db_err)?;
    tx.execute_batch(crate::layout::INDEX_STATE_SCHEMA)
        .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(conn)
}

/// The tables, indexes and triggers the store's schema creates, by name.
fn schema_objects() -> Vec<&'static str> {
    let mut names = Vec::new();
    for sql in [
        SCHEMA_V1,
        crate::cache::CACHE_SCHEMA,
        crate::deflate_memo::DEFLATE_CHUNK_SCHEMA,
        crate::annotations::ANNOTATION_SCHEMA,
        crate::layout::INDEX_STATE_SCHEMA,
    ] {
        let mut words = sql.split_whitespace();
        while let Some(word) = words.next() {
            if !word.eq_ignore_ascii_case("CREATE") {
                continue;
            }
            let mut rest = words.clone().skip(1);
            let name = match rest.next() {
                Some(word) if word.eq_ignore_ascii_case("IF") => rest.nth(2),
                other => other,
            };
            if let Some(name) = name {
                names.push(name.trim_end_matches('('));
            }
        }
    }
    names
}

/// Whether the database already holds this version's schema, every table, index and
/// trigger of it.
fn schema_is_current(conn: &Connection) -> rusqlite::Result<bool> {
    let names = schema_objects();
    let present: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'index', 'trigger')
             AND name IN ({})",
            vec!["?"; names.len()].join(", ")
        ),
        rusqlite::params_from_iter(names.iter()),
        |row| row.get(0),
    )?;
    if usize::try_from(present).ok() != Some(names.len()) {
        return Ok(false);
    }
    let version: Option<i64> =
        conn.query_row("SELECT max(version) FROM schema_version", [], |row| {
            row.get(0)
        })?;
    Ok(version == Some(SCHEMA_VERSION))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_check_knows_every_table_index_and_trigger() {
        let names = schema_objects();
        for expected in [
            "schema_version",
            "images",
            "layers_by_diff_id",
            "build_cache",
            "build_cache_inputs",
            "deflate_chunks",
            "deflate_chunks_by_blob",
            "layer_annotations",
            "index_state",
            "index_state_tag_removed",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let conn = open(&path).unwrap();
        assert!(schema_is_current(&conn).unwrap());
        conn.execute_batch("DROP TABLE build_cache_inputs").unwrap();
        assert!(
            !schema_is_current(&conn).unwrap(),
            "a missing table is noticed"
        );
        drop(conn);
        let conn = open(&path).unwrap();
        assert!(schema_is_current(&conn).unwrap(), "and created again");
    }
}
