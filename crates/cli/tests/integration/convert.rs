//! `stowage save --format oci --compress zstd|gzip|none`: layers recompressed on
//! the way out (issue 8). The image ID stays, the manifest's layer media types
//! and digests change; skopeo reads the archive and a load brings it back.
//! Needs skopeo and the host's static busybox; fails loudly without them.

use std::process::Command;

use crate::reproducible::{COPY_ONLY, make_context};
use crate::support::registry::{RegistryProcess, SKOPEO_BIN, Stowage, describe, require};

#[test]
fn save_oci_recompresses_layers_and_keeps_the_image_id() {
    require(SKOPEO_BIN, "skopeo");
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    make_context(&ctx, COPY_ONLY);
    let stowage = Stowage::new(&dir.path().join("s"));
    let out = stowage.run(&[
        "build",
        "-t",
        "localhost/conv:1",
        ctx.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "build: {}", describe(&out));
    // The summary lists each step's layer with both sizes.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let layer_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("  layer ") && l.contains(" compressed)  COPY "))
        .collect();
    assert_eq!(layer_lines.len(), 2, "{stderr}");
    let original = stowage.store().image("localhost/conv:1").expect("image");
    assert!(
        original
            .layers
            .iter()
            .all(|l| l.media_type.ends_with("tar+gzip"))
    );

    let archive = dir.path().join("zstd.tar");
    let archive_arg = archive.to_str().expect("utf-8");
    stowage.ok(&[
        "save",
        "--format",
        "oci",
        "--compress",
        "zstd",
        "-o",
        archive_arg,
        "localhost/conv:1",
    ]);
    let out = Command::new(SKOPEO_BIN)
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{archive_arg}:localhost/conv:1"))
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo inspect: {}", describe(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest JSON");
    assert_eq!(
        manifest["config"]["digest"].as_str(),
        Some(original.id.digest().to_string().as_str()),
        "the config (image ID) must not change"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), original.layers.len());
    for (layer, before) in layers.iter().zip(&original.layers) {
        assert_eq!(
            layer["mediaType"].as_str(),
            Some("application/vnd.oci.image.layer.v1.tar+zstd")
        );
        assert_ne!(
            layer["digest"].as_str(),
            Some(before.blob_digest.to_string().as_str())
        );
    }

    // Loaded into another store: same image ID, zstd layers, same diff_ids.
    let other = Stowage::new(&dir.path().join("other"));
    other.ok(&["load", "-q", "-i", archive_arg]);
    let loaded = other
        .store()
        .image("localhost/conv:1")
        .expect("loaded image");
    assert_eq!(loaded.id, original.id);
    assert_ne!(loaded.manifest_digest, original.manifest_digest);
    for (layer, before) in loaded.layers.iter().zip(&original.layers) {
        assert_eq!(layer.diff_id, before.diff_id);
        assert!(
            layer.media_type.ends_with("tar+zstd"),
            "{}",
            layer.media_type
        );
    }
    other.assert_store_verifies();

    // Uncompressed works too; a docker-archive refuses a compression.
    let plain = dir.path().join("plain.tar");
    stowage.ok(&[
        "save",
        "--format",
        "oci",
        "--compress",
        "none",
        "-o",
        plain.to_str().expect("utf-8"),
        "localhost/conv:1",
    ]);
    let error = stowage.fails(&[
        "save",
        "--compress",
        "zstd",
        "-o",
        plain.to_str().expect("utf-8"),
        "localhost/conv:1",
    ]);
    assert!(error.contains("docker-archive"), "{error}");
    stowage.assert_store_verifies();
}

#[test]
fn push_compress_zstd_sends_zstd_layers_with_the_same_config() {
    require(SKOPEO_BIN, "skopeo");
    let registry = RegistryProcess::start_plain();
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    make_context(&ctx, COPY_ONLY);
    let stowage = Stowage::new(&dir.path().join("s"));
    let remote = format!("{}/conv/zstd:1", registry.host());
    stowage.ok(&["build", "-q", "-t", &remote, ctx.to_str().expect("utf-8")]);
    let original = stowage.store().image(&remote).expect("image");
    stowage.ok(&["push", "-q", "--compress", "zstd", &remote]);

    let out = Command::new(SKOPEO_BIN)
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{remote}"))
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo inspect: {}", describe(&out));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).expect("manifest JSON");
    assert_eq!(
        manifest["config"]["digest"].as_str(),
        Some(original.id.digest().to_string().as_str())
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), original.layers.len());
    assert!(
        layers.iter().all(|l| l["mediaType"].as_str()
            == Some("application/vnd.oci.image.layer.v1.tar+zstd")),
        "{manifest}"
    );

    // Pulled into another store it is the same image, with zstd layers.
    let other = Stowage::new(&dir.path().join("other"));
    other.ok(&["pull", "-q", &remote]);
    let pulled = other.store().image(&remote).expect("pulled");
    assert_eq!(pulled.id, original.id);
    assert!(
        pulled
            .layers
            .iter()
            .all(|l| l.media_type.ends_with("tar+zstd"))
    );
}
