//! Round trips through real stores: import → save (docker and OCI) → load into a fresh
//! store gives the same image; saves are byte-identical; a failed load commits nothing.

use std::io::Cursor;

use stowage_store::Store;
use tar::{EntryType, Header};

use crate::{ExportError, ImportOptions, LoadOptions, SaveFormat, import, load_reader, save};

fn rootfs() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = Header::new_ustar();
    dir.set_entry_type(EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    builder
        .append_data(&mut dir, "etc/", std::io::empty())
        .expect("dir");
    let content = b"hello\n".repeat(1000);
    let mut file = Header::new_ustar();
    file.set_mode(0o644);
    file.set_size(content.len() as u64);
    builder
        .append_data(&mut file, "etc/motd", &content[..])
        .expect("file");
    builder.into_inner().expect("tar")
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open store");
    (dir, store)
}

fn imported(store: &Store) -> crate::ImportedImage {
    let options = ImportOptions {
        tags: vec![stowage_image::Reference::parse("rt/image:1").expect("ref")],
        created: Some("2024-01-01T00:00:00Z".to_owned()),
        ..ImportOptions::default()
    };
    import(store, Cursor::new(rootfs()), &options).expect("import")
}

#[test]
fn import_save_load_round_trips_in_both_formats() {
    let (_dir, source) = store();
    let image = imported(&source);
    assert_eq!(image.layer.diff_id, stowage_digest::Digest::of(&rootfs()));
    for format in [SaveFormat::Docker, SaveFormat::Oci] {
        let inputs = vec!["rt/image:1".to_owned()];
        let (archive, report) = save(&source, &inputs, format, Vec::new()).expect("save");
        let (again, _) = save(&source, &inputs, format, Vec::new()).expect("save");
        assert_eq!(archive, again, "{format:?} save is deterministic");
        assert_eq!(report.images, vec![image.id]);
        let (_dir2, target) = store();
        let loaded =
            load_reader(&target, Cursor::new(archive), &LoadOptions::default()).expect("load");
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].id, image.id, "{format:?}");
        assert_eq!(loaded[0].tags[0].to_string(), "docker.io/rt/image:1");
        let details = target.image("rt/image:1").expect("loaded image");
        assert_eq!(details.layers[0].diff_id, image.layer.diff_id);
        if format == SaveFormat::Oci {
            assert_eq!(details.manifest_digest, image.manifest_digest);
        }
        assert!(target.verify().expect("verify").is_ok());
    }
}

#[test]
fn failed_load_commits_nothing() {
    let (_dir, source) = store();
    imported(&source);
    let inputs = vec!["rt/image:1".to_owned()];
    let (archive, _) = save(&source, &inputs, SaveFormat::Docker, Vec::new()).expect("save");
    let (dir2, target) = store();
    let truncated = archive[..archive.len() / 2].to_vec();
    let error = load_reader(&target, Cursor::new(truncated), &LoadOptions::default())
        .expect_err("truncated archive");
    assert!(
        matches!(
            error,
            ExportError::InvalidArchive { .. } | ExportError::ArchiveRead(_)
        ),
        "{error}"
    );
    assert!(target.list_images().expect("list").is_empty());
    let blobs = std::fs::read_dir(dir2.path().join("blobs/sha256"))
        .expect("blobs")
        .count();
    assert_eq!(blobs, 0, "no blob committed");
}

#[test]
fn save_of_unknown_image_fails() {
    let (_dir, source) = store();
    let error = save(
        &source,
        &["nope:1".to_owned()],
        SaveFormat::Docker,
        Vec::new(),
    )
    .expect_err("unknown image");
    assert!(error.to_string().contains("No such image"), "{error}");
    assert!(matches!(
        save(&source, &[], SaveFormat::Docker, Vec::new()),
        Err(ExportError::NothingToSave)
    ));
}
