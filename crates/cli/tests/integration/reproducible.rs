//! Bit-for-bit reproducible images (issue 8): the same Dockerfile and context
//! files built in two separate stores, from two context directories made at
//! different times, give the same layer digests, image ID and manifest digest.
//!
//! - With SOURCE_DATE_EPOCH the context's mtimes may differ (they are clamped),
//!   RUN output is clamped too, and the image and history are dated the epoch.
//! - Without it, COPY keeps the source mtimes, so the second context is a
//!   `cp -a` copy (same mtimes, made later): nothing else carries wall-clock
//!   time. (RUN output has the time it ran, as with Docker; only the epoch
//!   clamps it.)
//!
//! Every layer is also checked for PAX `atime`/`ctime` records.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stowage_store::{ImageDetails, Store};

use crate::support::registry::{BUSYBOX_BIN, Stowage, describe, require};

const EPOCH: i64 = 1_700_000_000;
const EPOCH_TEXT: &str = "2023-11-14T22:13:20Z";

pub(crate) const COPY_ONLY: &str =
    "FROM scratch\nCOPY rootfs/ /\nCOPY files/ /app/\nENV MODE=test\n";

const WITH_RUN: &str = "\
FROM scratch
COPY rootfs/ /
COPY files/ /app/
RUN mkdir -p /out/sub && echo fixed > /out/a && ln -s a /out/b && chmod 0600 /out/a
RUN rm /app/one.txt && echo more >> /app/two.txt
CMD [\"/bin/sh\"]
";

/// A context: a busybox rootfs, a few files, the Dockerfile.
pub(crate) fn make_context(dir: &Path, dockerfile: &str) {
    require(BUSYBOX_BIN, "busybox-static");
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin).expect("mkdir rootfs/bin");
    std::fs::copy(BUSYBOX_BIN, bin.join("busybox")).expect("copy busybox");
    for applet in ["sh", "mkdir", "ln", "chmod", "rm", "echo"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink");
    }
    let files = dir.join("files");
    std::fs::create_dir_all(files.join("nested/deeper")).expect("mkdir files");
    std::fs::write(files.join("one.txt"), "one\n").expect("write");
    std::fs::write(files.join("two.txt"), "two\n").expect("write");
    std::fs::write(files.join("nested/deeper/three.bin"), [0u8, 1, 2, 3, 255]).expect("write");
    std::fs::write(dir.join("Dockerfile"), dockerfile).expect("write Dockerfile");
}

fn build(stowage: &Stowage, ctx: &Path, epoch: Option<i64>) -> ImageDetails {
    let mut cmd = stowage.command(&["build", "-q", "-t", "localhost/repro:1"]);
    cmd.arg(ctx).env_remove("SOURCE_DATE_EPOCH");
    if let Some(epoch) = epoch {
        cmd.env("SOURCE_DATE_EPOCH", epoch.to_string());
    }
    let out = cmd.output().expect("run stowage build");
    assert!(out.status.success(), "build failed:\n{}", describe(&out));
    stowage
        .store()
        .image("localhost/repro:1")
        .expect("built image")
}

fn layer_tar(store: &Store, layer: &stowage_image::LayerInfo) -> Vec<u8> {
    let blob = store.open_blob(&layer.blob_digest).expect("open blob");
    let (_, mut reader) = stowage_archive::decompressing_reader(blob).expect("decompress");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut bytes).expect("read layer");
    bytes
}

/// No PAX atime/ctime anywhere; with `max_mtime`, no entry newer than it.
fn check_layers(stowage: &Stowage, image: &ImageDetails, max_mtime: Option<i64>) {
    let store = stowage.store();
    for layer in &image.layers {
        let bytes = layer_tar(&store, layer);
        for key in [&b" atime="[..], b" ctime="] {
            assert!(
                !bytes.windows(key.len()).any(|w| w == key),
                "layer {} has a PAX {} record",
                layer.diff_id,
                String::from_utf8_lossy(key)
            );
        }
        let mut archive = tar::Archive::new(bytes.as_slice());
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            let header = entry.header();
            if let Some(max) = max_mtime {
                let mtime = header.mtime().expect("mtime");
                assert!(
                    i64::try_from(mtime).expect("mtime fits") <= max,
                    "{:?} has mtime {mtime} after the epoch {max}",
                    entry.path().expect("path")
                );
            }
            if let Some(gnu) = header.as_gnu() {
                assert!(
                    gnu.atime.iter().all(|&b| b == 0) && gnu.ctime.iter().all(|&b| b == 0),
                    "GNU atime/ctime set on {:?}",
                    entry.path().expect("path")
                );
            }
        }
    }
}

fn assert_same(a: &ImageDetails, b: &ImageDetails) {
    let digests = |image: &ImageDetails| -> Vec<String> {
        image
            .layers
            .iter()
            .map(|l| l.blob_digest.to_string())
            .collect()
    };
    assert_eq!(digests(a), digests(b), "layer digests differ");
    assert_eq!(a.id, b.id, "image IDs differ");
    assert_eq!(
        a.manifest_digest, b.manifest_digest,
        "manifest digests differ"
    );
}

#[test]
fn source_date_epoch_makes_builds_identical_across_contexts_and_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first_ctx = dir.path().join("ctx1");
    make_context(&first_ctx, WITH_RUN);
    // The second context is written later: every mtime differs.
    std::thread::sleep(Duration::from_millis(1100));
    let second_ctx = dir.path().join("ctx2");
    make_context(&second_ctx, WITH_RUN);

    let first_store = Stowage::new(&dir.path().join("s1"));
    let second_store = Stowage::new(&dir.path().join("s2"));
    let first = build(&first_store, &first_ctx, Some(EPOCH));
    std::thread::sleep(Duration::from_millis(1100));
    let second = build(&second_store, &second_ctx, Some(EPOCH));

    assert_eq!(first.layers.len(), 4);
    assert_same(&first, &second);
    assert_eq!(first.config.created.as_deref(), Some(EPOCH_TEXT));
    assert!(!first.config.history.is_empty());
    for entry in &first.config.history {
        assert_eq!(entry.created.as_deref(), Some(EPOCH_TEXT), "{entry:?}");
    }
    check_layers(&first_store, &first, Some(EPOCH));
    check_layers(&second_store, &second, Some(EPOCH));
}

#[test]
fn without_an_epoch_same_files_and_mtimes_give_the_same_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first_ctx = dir.path().join("ctx1");
    make_context(&first_ctx, COPY_ONLY);
    std::thread::sleep(Duration::from_millis(1100));
    let second_ctx = dir.path().join("ctx2");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&first_ctx)
        .arg(&second_ctx)
        .status()
        .expect("run cp -a");
    assert!(status.success(), "cp -a failed");

    let first_store = Stowage::new(&dir.path().join("s1"));
    let second_store = Stowage::new(&dir.path().join("s2"));
    let first = build(&first_store, &first_ctx, None);
    std::thread::sleep(Duration::from_millis(1100));
    let second = build(&second_store, &second_ctx, None);

    assert_eq!(first.layers.len(), 2);
    assert_same(&first, &second);
    assert_eq!(first.config.created, None);
    assert!(first.config.history.iter().all(|h| h.created.is_none()));
    check_layers(&first_store, &first, None);
}
