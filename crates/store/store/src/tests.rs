//! Tests for the store: unit behaviour, concurrency, crash safety with a real killed
//! child process, and interop with the real `skopeo` and `umoci` binaries.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stowage_digest::Digest;
use stowage_image::{ImageConfig, LayerInfo, Platform, Reference, media_types};

use crate::{ManifestFormat, RemoveEvent, Store, StoreError};

/// A gzip layer holding one file; returns the stored layer record.
fn put_layer(store: &Store, name: &str, content: &[u8]) -> LayerInfo {
    let mut tar_bytes = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut tar_bytes);
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, name, content).unwrap();
        builder.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&tar_bytes).unwrap();
    let blob = gz.finish().unwrap();
    let info = store.put_blob(&blob[..], Some(Digest::of(&blob))).unwrap();
    LayerInfo {
        diff_id: Digest::of(&tar_bytes),
        blob_digest: info.digest,
        media_type: media_types::OCI_LAYER_GZIP.to_owned(),
        compressed_size: info.size,
        uncompressed_size: Some(tar_bytes.len() as u64),
    }
}

fn config_for(layers: &[LayerInfo], created: &str, marker: &str) -> ImageConfig {
    let mut config = ImageConfig::scratch(&Platform::native());
    config.created = Some(created.to_owned());
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id).collect();
    config.config.env = Some(vec![format!("MARKER={marker}")]);
    config.config.cmd = Some(vec!["/bin/sh".into()]);
    config
}

fn reference(text: &str) -> Reference {
    Reference::parse(text).unwrap()
}

fn commit(
    store: &Store,
    layers: Vec<LayerInfo>,
    tags: &[&str],
    marker: &str,
) -> crate::CommittedImage {
    let config = config_for(&layers, "2024-01-02T03:04:05Z", marker);
    store
        .commit_config(
            &config,
            layers,
            tags.iter().map(|t| reference(t)).collect(),
            ManifestFormat::Oci,
        )
        .unwrap()
}

fn assert_verified(store: &Store) {
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "store inconsistent: {:#?}", report.problems);
}

#[test]
fn open_creates_the_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layout = std::fs::read_to_string(dir.path().join("oci-layout")).unwrap();
    assert_eq!(layout, r#"{"imageLayoutVersion":"1.0.0"}"#);
    let index = std::fs::read_to_string(dir.path().join("index.json")).unwrap();
    assert_eq!(
        index,
        r#"{"manifests":[],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}"#
    );
    for sub in ["blobs/sha256", "tmp", "layers-v1"] {
        assert!(dir.path().join(sub).is_dir(), "{sub}");
    }
    assert!(dir.path().join("meta.db").is_file());
    assert!(store.list_images().unwrap().is_empty());
    assert_verified(&store);
    drop(store);
    // Reopening works and keeps the schema.
    Store::open(dir.path()).unwrap();
}

#[test]
fn blob_writes_are_verified_and_leave_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let info = store.put_blob_bytes(b"hello", None).unwrap();
    assert_eq!(info.digest, Digest::of(b"hello"));
    assert_eq!(info.size, 5);
    assert!(store.has_blob(&info.digest));
    // Writing the same content again is a no-op.
    assert_eq!(
        store.put_blob_bytes(b"hello", Some(info.digest)).unwrap(),
        info
    );
    // Wrong digest: rejected, nothing stored.
    let err = store
        .put_blob_bytes(b"other", Some(info.digest))
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(!store.has_blob(&Digest::of(b"other")));
    // Wrong size: rejected.
    let mut writer = store
        .blob_writer(Some(Digest::of(b"abc")), Some(4))
        .unwrap();
    writer.write_all(b"abc").unwrap();
    assert!(matches!(
        writer.commit(),
        Err(StoreError::SizeMismatch { .. })
    ));
    // An abandoned writer cleans up after itself.
    let mut writer = store.blob_writer(None, None).unwrap();
    writer.write_all(&[7u8; 100_000]).unwrap();
    assert_eq!(writer.written(), 100_000);
    drop(writer);
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    // Reads verify.
    assert_eq!(store.read_blob(&info.digest, 100).unwrap(), b"hello");
    assert!(matches!(
        store.read_blob(&info.digest, 2),
        Err(StoreError::BlobTooLarge { .. })
    ));
    let mut out = Vec::new();
    std::io::copy(
        &mut store.open_blob_verified(&info.digest).unwrap(),
        &mut out,
    )
    .unwrap();
    assert_eq!(out, b"hello");
    std::fs::write(store.blob_path(&info.digest), b"HELLO").unwrap();
    let mut reader = store.open_blob_verified(&info.digest).unwrap();
    assert!(std::io::copy(&mut reader, &mut std::io::sink()).is_err());
    assert!(matches!(
        store.read_blob(&info.digest, 100),
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(!store.verify().unwrap().is_ok());
    let missing = Digest::of(b"missing");
    assert!(matches!(
        store.open_blob(&missing),
        Err(StoreError::BlobNotFound(_))
    ));
}

#[test]
fn stale_temp_files_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    std::fs::write(dir.path().join("tmp/blob-stale"), b"partial").unwrap();
    std::fs::create_dir(dir.path().join("tmp/upper-stale")).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    // ...but not while another user holds the store.
    let lease = store.lease().unwrap();
    std::fs::write(dir.path().join("tmp/blob-live"), b"in progress").unwrap();
    let second = Store::open(dir.path()).unwrap();
    assert!(dir.path().join("tmp/blob-live").exists());
    drop((lease, second));
}

#[test]
fn commit_list_inspect_and_index_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let base = put_layer(&store, "etc/base", b"base");
    let app = put_layer(&store, "app/bin", b"app binary");
    let image = commit(
        &store,
        vec![base.clone(), app.clone()],
        &["myapp", "localhost:5000/team/myapp:1.0"],
        "a",
    );
    let details = store.image("myapp").unwrap();
    assert_eq!(details.id, image.id);
    assert_eq!(details.id.digest(), Digest::of(&details.config_bytes));
    assert_eq!(details.manifest_digest, Digest::of(&details.manifest_bytes));
    assert_eq!(details.layers, vec![base.clone(), app.clone()]);
    assert_eq!(details.config.config.env, Some(vec!["MARKER=a".to_owned()]));
    assert_eq!(
        details
            .tags
            .iter()
            .map(Reference::familiar)
            .collect::<Vec<_>>(),
        ["myapp:latest", "localhost:5000/team/myapp:1.0"]
    );

    let list = store.list_images().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].created_unix, Some(1_704_164_645));
    assert_eq!(
        list[0].compressed_size,
        base.compressed_size + app.compressed_size
    );
    assert_eq!(
        list[0].uncompressed_size,
        Some(base.uncompressed_size.unwrap() + app.uncompressed_size.unwrap())
    );
    assert_eq!(list[0].platform, Platform::native());

    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "docker.io/library/myapp:latest",
            "localhost:5000/team/myapp:1.0"
        ]
    );
    assert_eq!(
        index["manifests"][0]["digest"],
        image.manifest_digest.to_string()
    );
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "amd64");

    // Committing the same image again is idempotent.
    let again = commit(&store, vec![base, app], &["myapp"], "a");
    assert_eq!(again, image);
    assert_eq!(store.list_images().unwrap().len(), 1);
    assert_verified(&store);
}

#[test]
fn commit_rejects_inconsistent_images() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layer = put_layer(&store, "f", b"x");
    // diff_ids do not match the layers.
    let config = config_for(&[], "2024-01-02T03:04:05Z", "x");
    let err = store
        .commit_config(&config, vec![layer.clone()], vec![], ManifestFormat::Oci)
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidImage(_)), "{err}");
    // Missing layer blob.
    let mut ghost = layer.clone();
    ghost.blob_digest = Digest::of(b"not stored");
    let config = config_for(std::slice::from_ref(&ghost), "2024-01-02T03:04:05Z", "x");
    let err = store
        .commit_config(&config, vec![ghost], vec![], ManifestFormat::Oci)
        .unwrap_err();
    assert!(matches!(err, StoreError::BlobNotFound(_)), "{err}");
    // A digest cannot be a tag.
    let config = config_for(std::slice::from_ref(&layer), "2024-01-02T03:04:05Z", "x");
    let digest_ref = reference(&format!("x@{}", Digest::of(b"y")));
    let err = store
        .commit_config(&config, vec![layer], vec![digest_ref], ManifestFormat::Oci)
        .unwrap_err();
    assert!(matches!(err, StoreError::DigestAsTag(_)), "{err}");
    assert!(store.list_images().unwrap().is_empty());
    assert_verified(&store);
}

#[test]
fn resolve_accepts_what_docker_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layer = put_layer(&store, "f", b"x");
    let image = commit(&store, vec![layer], &["web:1"], "r");
    let id = image.id.to_string();
    let hex = image.id.digest().hex();
    let inputs = [
        "web:1".to_owned(),
        "docker.io/library/web:1".to_owned(),
        id.clone(),
        hex.clone(),
        hex[..12].to_owned(),
        hex[..3].to_owned(),
        format!("sha256:{}", &hex[..8]),
        format!("web@{}", image.manifest_digest),
        image.manifest_digest.to_string(),
    ];
    let mut failures = Vec::new();
    for input in &inputs {
        match store.resolve(input) {
            Ok(found) if found == image => {}
            other => failures.push(format!("{input}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    for missing in ["web", "web:2", "other", "ffffffffffff", "", "UPPER"] {
        assert!(
            matches!(store.resolve(missing), Err(StoreError::ImageNotFound(_))),
            "{missing}"
        );
    }
}

#[test]
fn ambiguous_id_prefixes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(
            commit(&store, vec![], &[], &n.to_string())
                .id
                .digest()
                .hex(),
        );
    }
    // With 40 images, some pair shares a first hex digit.
    let first = ids
        .iter()
        .find(|a| ids.iter().filter(|b| b[..1] == a[..1]).count() > 1)
        .unwrap();
    let err = store.resolve(&first[..1]).unwrap_err();
    assert!(matches!(err, StoreError::AmbiguousId { .. }), "{err}");
}

#[test]
fn tag_and_remove_follow_docker_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layer = put_layer(&store, "f", b"x");
    let image = commit(&store, vec![layer], &["one"], "t");
    let tagged = store.tag("one", "two:v2").unwrap();
    assert_eq!(tagged.to_string(), "docker.io/library/two:v2");
    assert_eq!(store.resolve("two:v2").unwrap(), image);
    assert!(matches!(
        store.tag("one", &format!("x@{}", image.manifest_digest)),
        Err(StoreError::DigestAsTag(_))
    ));
    assert!(matches!(
        store.tag("nope", "x"),
        Err(StoreError::ImageNotFound(_))
    ));

    // By ID with two tags: conflict without force.
    let err = store.remove_image(&image.id.short(), false).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("must be forced"), "{err}");
    // Removing one tag only untags.
    let events = store.remove_image("two:v2", false).unwrap();
    assert_eq!(events, vec![RemoveEvent::Untagged(reference("two:v2"))]);
    assert!(store.resolve(&image.id.to_string()).is_ok());
    // Removing the last tag deletes the image; blobs stay until prune.
    let events = store.remove_image("one", false).unwrap();
    assert_eq!(
        events,
        vec![
            RemoveEvent::Untagged(reference("one")),
            RemoveEvent::Deleted {
                id: image.id,
                manifest_digest: image.manifest_digest
            }
        ]
    );
    assert!(store.list_images().unwrap().is_empty());
    assert!(store.has_blob(&image.manifest_digest));
    assert_verified(&store);

    // Force removal by ID removes every tag.
    let layer = put_layer(&store, "g", b"y");
    let image = commit(&store, vec![layer], &["a", "b"], "u");
    let events = store.remove_image(&image.id.to_string(), true).unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(store.list_images().unwrap().is_empty());
    // An untagged image can be removed by ID without force.
    let dangling = commit(&store, vec![], &[], "d");
    assert_eq!(
        store
            .remove_image(&dangling.id.short(), false)
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        store.remove_image("gone", false),
        Err(StoreError::ImageNotFound(_))
    ));
    assert_verified(&store);
}

#[test]
fn prune_frees_only_unreferenced_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let shared = put_layer(&store, "shared", b"shared content");
    let only_a = put_layer(&store, "a", b"a only");
    let only_b = put_layer(&store, "b", b"b only");
    let a = commit(&store, vec![shared.clone(), only_a.clone()], &["a"], "a");
    let b = commit(&store, vec![shared.clone(), only_b.clone()], &["b"], "b");
    let stray = store.put_blob_bytes(b"stray", None).unwrap();
    let kept = store.put_blob_bytes(b"cache result", None).unwrap();
    // Unpacked layers: one in use, one orphaned record, one unrecorded directory.
    for (layer, record) in [(&shared, true), (&only_b, false)] {
        std::fs::create_dir_all(store.unpacked_layer_dir(&layer.diff_id).join("etc")).unwrap();
        if record {
            store.record_unpacked_layer(&layer.diff_id, 1000).unwrap();
        }
    }
    std::fs::create_dir_all(store.unpacked_layer_dir(&Digest::of(b"gone"))).unwrap();
    store
        .record_unpacked_layer(&Digest::of(b"gone"), 500)
        .unwrap();
    assert!(store.unpacked_layer(&shared.diff_id).unwrap().is_some());

    // disk usage before pruning
    let usage = store.disk_usage().unwrap();
    assert_eq!(usage.images.len(), 2);
    let ua = usage
        .images
        .iter()
        .find(|i| i.manifest_digest == a.manifest_digest)
        .unwrap();
    assert_eq!(ua.compressed.shared, shared.compressed_size);
    assert_eq!(ua.compressed.unique, only_a.compressed_size);
    assert_eq!(
        ua.compressed.total,
        shared.compressed_size + only_a.compressed_size
    );
    assert_eq!(ua.uncompressed.shared, shared.uncompressed_size.unwrap());
    assert!(ua.uncompressed_complete);
    assert_eq!(usage.unreferenced_blob_bytes, stray.size + kept.size);
    assert_eq!(usage.unpacked_layer_count, 2);
    assert_eq!(usage.unpacked_layer_bytes, 1500);

    let report = store.prune_keeping(&BTreeSet::from([kept.digest])).unwrap();
    assert_eq!(report.blobs_removed, 1);
    assert!(!store.has_blob(&stray.digest));
    assert!(store.has_blob(&kept.digest));
    assert_eq!(report.layers_removed, 2);
    assert_eq!(report.bytes_reclaimed, stray.size + 500);
    assert!(store.unpacked_layer_dir(&shared.diff_id).is_dir());
    assert!(
        store
            .unpacked_layer(&Digest::of(b"gone"))
            .unwrap()
            .is_none()
    );
    assert_verified(&store);

    // After removing b, its unique layer goes; the shared one stays for a.
    store.remove_image("b", false).unwrap();
    let report = store.prune().unwrap();
    assert_eq!(
        report.blobs_removed, 4,
        "b's manifest, config, unique layer, and the kept blob"
    );
    assert!(!store.has_blob(&only_b.blob_digest));
    assert!(!store.has_blob(&b.manifest_digest));
    assert!(store.has_blob(&shared.blob_digest));
    assert!(store.image("a").is_ok());
    let usage = store.disk_usage().unwrap();
    assert_eq!(usage.images[0].compressed.shared, 0);
    assert_eq!(usage.unreferenced_blob_bytes, 0);
    assert_verified(&store);

    // Dangling images are removed on request.
    store.tag("a", "a2").unwrap();
    store.remove_image("a", false).unwrap();
    let untagged = commit(&store, vec![], &[], "dangling");
    let removed = store.remove_dangling_images().unwrap();
    assert_eq!(
        removed,
        vec![RemoveEvent::Deleted {
            id: untagged.id,
            manifest_digest: untagged.manifest_digest
        }]
    );
    assert_eq!(store.list_images().unwrap().len(), 1);
}

#[test]
fn docker_manifests_and_foreign_configs_are_kept_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layer = put_layer(&store, "f", b"x");
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":null,"Hostname":""}},"docker_version":"20.10","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        layer.diff_id
    );
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":{},"digest":"{}"}},"layers":[{{"mediaType":"{}","size":{},"digest":"{}"}}]}}"#,
        media_types::DOCKER_MANIFEST,
        media_types::DOCKER_CONFIG,
        config.len(),
        Digest::of(config.as_bytes()),
        layer.media_type,
        layer.compressed_size,
        layer.blob_digest
    );
    let image = store
        .commit_image(&crate::ImageCommit {
            manifest: manifest.clone().into_bytes(),
            config: config.clone().into_bytes(),
            layers: vec![layer],
            tags: vec![reference("pulled:1")],
        })
        .unwrap();
    let details = store.image("pulled:1").unwrap();
    assert_eq!(details.config_bytes, config.as_bytes());
    assert_eq!(details.manifest_bytes, manifest.as_bytes());
    assert_eq!(details.id, image.id);
    assert_eq!(
        store.list_images().unwrap()[0].manifest_media_type,
        media_types::DOCKER_MANIFEST
    );
    assert_verified(&store);
}

#[test]
fn list_images_lists_a_thousand_images_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    {
        let mut conn = store.conn();
        let tx = conn.transaction().unwrap();
        for n in 0..1000u32 {
            let manifest = Digest::of(format!("m{n}").as_bytes()).to_string();
            let config = Digest::of(format!("c{n}").as_bytes()).to_string();
            tx.execute(
                "INSERT INTO images VALUES (?1, ?2, 'application/vnd.oci.image.manifest.v1+json', 400, 900,
                 '2024-01-01T00:00:00Z', ?3, 'linux', 'amd64', NULL, 1000, 2000, 0)",
                rusqlite::params![manifest, config, i64::from(n)],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO tags VALUES (?1, ?2, 0)",
                rusqlite::params![format!("docker.io/library/img{n}:latest"), manifest],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    // Its speed is measured by `benches/list_images.rs`, not here.
    let list = store.list_images().unwrap();
    assert_eq!(list.len(), 1000);
    assert_eq!(list[0].tags[0].familiar(), "img999:latest");
}

#[test]
fn concurrent_writers_keep_the_store_consistent() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let root = dir.path().to_owned();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let root = root.clone();
            std::thread::spawn(move || {
                let store = Store::open(&root).unwrap();
                for i in 0..8 {
                    // Same content from every thread, and content unique to this thread.
                    let common = put_layer(&store, "common", b"same in all threads");
                    let own = put_layer(&store, "own", format!("thread {t} item {i}").as_bytes());
                    commit(&store, vec![common.clone()], &["shared:latest"], "shared");
                    commit(
                        &store,
                        vec![common, own],
                        &[&format!("t{t}:i{i}"), "contested"],
                        &format!("{t}-{i}"),
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let store = Store::open(&root).unwrap();
    assert_eq!(store.list_images().unwrap().len(), 4 * 8 + 1);
    assert!(store.resolve("contested").is_ok());
    assert_verified(&store);
}

const KILL_CHILD_ENV: &str = "STOWAGE_STORE_KILL_CHILD_ROOT";

/// Not a test: the writer loop run by the child process of `killed_writers_never_corrupt_the_store`.
#[test]
#[ignore = "helper run as a child process by killed_writers_never_corrupt_the_store"]
fn kill_child_writer() {
    let Ok(root) = std::env::var(KILL_CHILD_ENV) else {
        return;
    };
    let store = Store::open(&root).unwrap();
    let pid = std::process::id();
    for i in 0u64.. {
        // Big-ish layers so that kills land mid-write as well as mid-commit.
        let content: Vec<u8> = (0..200_000u64)
            .map(|n| ((n * 31 + i * 7 + u64::from(pid)) % 251) as u8)
            .collect();
        let layer = put_layer(&store, "data", &content);
        commit(
            &store,
            vec![layer],
            &[&format!("kill{pid}:{i}"), "latest-kill"],
            &format!("{pid}-{i}"),
        );
        if i % 5 == 0 {
            let _ = store.remove_image(&format!("kill{pid}:{}", i / 2), false);
        }
    }
}

#[test]
fn killed_writers_never_corrupt_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..12 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "tests::kill_child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(KILL_CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait_ms = 50 + seed % 400;
        std::thread::sleep(Duration::from_millis(wait_ms));
        assert!(
            child.try_wait().unwrap().is_none(),
            "round {round}: child exited early"
        );
        // SAFETY-free SIGKILL through the Child handle.
        child.kill().unwrap();
        child.wait().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let report = store.verify().unwrap();
        assert!(
            report.is_ok(),
            "round {round} (killed after {wait_ms} ms): {:#?}",
            report.problems
        );
        assert_eq!(
            std::fs::read_dir(store.tmp_dir()).unwrap().count(),
            0,
            "round {round}: temp files left"
        );
        if round % 4 == 3 {
            store.prune().unwrap();
            assert_verified(&store);
        }
    }
    let store = Store::open(dir.path()).unwrap();
    assert!(
        !store.list_images().unwrap().is_empty(),
        "the child never committed an image"
    );
}

fn require_tool(name: &str) -> std::path::PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.is_file(),
        "{} is required for the interop test but is missing",
        path.display()
    );
    path
}

fn run(tool: &Path, args: &[&str]) -> String {
    let output = Command::new(tool).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}\n{}",
        tool.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn skopeo_and_umoci_read_the_store() {
    let skopeo = require_tool("skopeo");
    let umoci = require_tool("umoci");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let layer = put_layer(&store, "hello.txt", b"hello\n");
    let image = commit(
        &store,
        vec![layer.clone()],
        &["interop/tiny:1", "localhost:5000/x:2"],
        "interop",
    );
    let root_text = root.to_str().unwrap();
    assert!(
        !root_text.contains(':'),
        "skopeo's oci: transport needs a path without ':'"
    );

    let inspect = run(
        &skopeo,
        &[
            "inspect",
            &format!("oci:{root_text}:docker.io/interop/tiny:1"),
        ],
    );
    let inspected: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspected["Digest"], image.manifest_digest.to_string());
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(inspected["Layers"][0], layer.blob_digest.to_string());
    let config = run(
        &skopeo,
        &[
            "inspect",
            "--config",
            &format!("oci:{root_text}:localhost:5000/x:2"),
        ],
    );
    assert!(config.contains("MARKER=interop"), "{config}");

    let copy_dir = dir.path().join("copy");
    run(
        &skopeo,
        &[
            "copy",
            &format!("oci:{root_text}:docker.io/interop/tiny:1"),
            &format!("dir:{}", copy_dir.display()),
        ],
    );
    assert!(copy_dir.join("manifest.json").is_file());
    assert!(copy_dir.join(layer.blob_digest.hex()).is_file());

    let listing = run(&umoci, &["ls", "--layout", root_text]);
    let tags: Vec<&str> = listing.lines().collect();
    assert_eq!(
        tags,
        ["docker.io/interop/tiny:1", "localhost:5000/x:2"],
        "{listing}"
    );
    // umoci can also unpack-free stat the image by its ref name.
    run(
        &umoci,
        &[
            "stat",
            "--image",
            &format!("{root_text}:docker.io/interop/tiny:1"),
        ],
    );
}

/// The store's files are created as a user's files are (0666 less the umask), not
/// tempfile's private 0600: a store in a readable directory is readable by another user's
/// skopeo. Runs skopeo as `nobody` through setpriv, so it needs root.
#[test]
fn another_user_reads_a_store_in_a_readable_directory() {
    use std::os::unix::fs::PermissionsExt as _;
    let skopeo = require_tool("skopeo");
    let setpriv = require_tool("setpriv");
    let uid = run(Path::new("/usr/bin/id"), &["-u"]);
    assert_eq!(
        uid.trim(),
        "0",
        "this test must run as root (it runs skopeo as nobody)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mode_of = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let reference_file = dir.path().join("created-by-the-user");
    std::fs::File::create(&reference_file).unwrap();
    let user_mode = mode_of(&reference_file);
    assert_ne!(
        user_mode & 0o004,
        0,
        "the umask ({user_mode:o} for a new file) hides files from other users; run with umask 022"
    );
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let layer = put_layer(&store, "hello.txt", b"hello\n");
    let image = commit(&store, vec![layer.clone()], &["shared/tiny:1"], "shared");
    for path in [
        root.join("index.json"),
        root.join("oci-layout"),
        store.blob_path(&layer.blob_digest),
        store.blob_path(&image.manifest_digest),
    ] {
        assert_eq!(
            format!("{:o}", mode_of(&path)),
            format!("{user_mode:o}"),
            "{}",
            path.display()
        );
    }
    let output = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&skopeo)
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:docker.io/shared/tiny:1", root.display()))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo as nobody: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        Digest::of(&output.stdout),
        image.manifest_digest,
        "nobody's skopeo read another manifest"
    );
}

#[test]
fn reference_with_digest_resolves_only_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image = commit(&store, vec![], &["d:1"], "digest");
    // Same config, Docker manifest flavour: two manifests share one image ID.
    let details = store.image("d:1").unwrap();
    let docker = store
        .commit_config(
            &details.config,
            vec![],
            vec![reference("d:docker")],
            ManifestFormat::Docker,
        )
        .unwrap();
    assert_eq!(docker.id, image.id);
    assert_ne!(docker.manifest_digest, image.manifest_digest);
    assert_eq!(
        store
            .resolve(&format!("d@{}", image.manifest_digest))
            .unwrap(),
        image
    );
    assert_eq!(
        store
            .resolve(&format!("d@{}", docker.manifest_digest))
            .unwrap(),
        docker
    );
    // Removing by manifest digest leaves the other manifest.
    let events = store
        .remove_image(&docker.manifest_digest.to_string(), false)
        .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(store.resolve("d:1").unwrap(), image);
    assert_verified(&store);
}

#[test]
fn a_second_handle_reads_what_the_first_commits_without_waiting_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layer = put_layer(&store, "f", b"x");
    commit(&store, vec![layer.clone()], &["app:1"], "one");
    let other = store.handle_source().open().unwrap();
    assert_eq!(other.image("app:1").unwrap().layers, vec![layer.clone()]);
    // A read transaction held open on the first handle's connection blocks neither the
    // other handle's reads nor its writes (WAL), and each sees the other's commits.
    let conn = store.conn();
    conn.execute_batch("BEGIN; SELECT count(*) FROM images;")
        .unwrap();
    commit(&other, vec![layer.clone()], &["app:2"], "two");
    assert_eq!(other.list_images().unwrap().len(), 2);
    conn.execute_batch("COMMIT").unwrap();
    drop(conn);
    assert_eq!(store.list_images().unwrap().len(), 2);
    drop(other);
    assert_verified(&store);
}

#[test]
fn index_json_is_rebuilt_at_open_only_when_the_database_moved_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let index_path = dir.path().join("index.json");
    let listed = |store: &Store| -> Vec<String> {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
        assert_eq!(
            std::fs::read(&index_path).unwrap(),
            store.expected_index().unwrap()
        );
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["annotations"][media_types::ANNOTATION_REF_NAME].as_str())
            .map(str::to_owned)
            .collect()
    };
    let store = Store::open(dir.path()).unwrap();
    let layer = put_layer(&store, "f", b"x");
    commit(&store, vec![layer], &["app:1"], "one");
    assert!(store.index_is_current().unwrap());
    assert_eq!(listed(&store), ["docker.io/library/app:1"]);

    // A change the file never saw (as if the process died between the database commit
    // and the index write) is caught by the generation triggers at the next open.
    store
        .conn()
        .execute(
            "INSERT INTO tags (reference, manifest_digest, updated_unix)
             SELECT 'docker.io/library/app:2', manifest_digest, 0 FROM images",
            [],
        )
        .unwrap();
    assert!(!store.index_is_current().unwrap());
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.index_is_current().unwrap());
    assert_eq!(
        listed(&store),
        ["docker.io/library/app:1", "docker.io/library/app:2"]
    );

    // An open of a current store leaves the file alone; a missing file is written again.
    let before = std::fs::metadata(&index_path).unwrap().modified().unwrap();
    drop(store);
    std::thread::sleep(Duration::from_millis(20));
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::metadata(&index_path).unwrap().modified().unwrap(),
        before
    );
    drop(store);
    std::fs::remove_file(&index_path).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        listed(&store),
        ["docker.io/library/app:1", "docker.io/library/app:2"]
    );
    // Deleting an image (cascading to its tags) moves the generation too.
    store.remove_image("app:1", false).unwrap();
    store.remove_image("app:2", false).unwrap();
    assert!(store.index_is_current().unwrap());
    assert!(listed(&store).is_empty());
    assert_verified(&store);
}

#[test]
fn concurrent_first_opens_of_a_new_store_all_succeed() {
    // The first connection converts the new database to WAL; SQLite fails the others'
    // journal-mode pragma at once (no busy handler) while it does. Before the retry, about
    // 2% of these opens failed with "database is locked".
    for _ in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        std::thread::scope(|scope| {
            let opens: Vec<_> = (0..3)
                .map(|_| scope.spawn(|| Store::open(dir.path()).map(|_| ())))
                .collect();
            for open in opens {
                open.join().unwrap().unwrap();
            }
        });
        assert_verified(&Store::open(dir.path()).unwrap());
    }
}
