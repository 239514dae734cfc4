//! `stowage build --squash` and `--squash-all` end to end (issue 8): the layers
//! a build adds merge into one on top of the untouched base layers, deletions
//! inside the range leave no trace, deletions of base files stay whiteouts, the
//! history keeps every entry with `empty_layer` matching the layers, and the
//! result runs in stowage and, saved, in Docker.
//!
//! Needs root (RUN), the host's static busybox and dockerd; fails loudly
//! without them.

use std::collections::BTreeSet;
use std::path::Path;

use stowage_image::LayerInfo;
use stowage_store::Store;

use crate::support::docker::{docker_load, docker_rmi, docker_run};
use crate::support::registry::{BUSYBOX_BIN, Stowage, require};

const DOCKERFILE: &str = "\
FROM localhost/squash-base:1
ENV GREETING=hello
RUN busybox head -c 20971520 /dev/urandom > /big && busybox mkdir -p /data/tmp && echo gone > /data/tmp/x
RUN rm /big && rm -r /data/tmp && rm /bin/cat
RUN echo small > /data/small.txt
CMD [\"/bin/sh\", \"-c\", \"echo $GREETING; busybox cat /data/small.txt; test -e /big || echo nobig\"]
";

/// The paths of one layer's tar entries (normalized: no `./`, no trailing `/`).
fn layer_paths(store: &Store, layer: &LayerInfo) -> BTreeSet<String> {
    let blob = store
        .open_blob(&layer.blob_digest)
        .expect("open layer blob");
    let (_, reader) = stowage_archive::decompressing_reader(blob).expect("decompress layer");
    let mut archive = tar::Archive::new(reader);
    archive
        .entries()
        .expect("tar entries")
        .map(|entry| {
            let entry = entry.expect("tar entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            path.trim_start_matches("./")
                .trim_end_matches('/')
                .to_owned()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// `localhost/squash-base:1`: `FROM scratch` + `COPY rootfs/ /` of the host's
/// static busybox with `sh` and `cat` links and an `/etc/passwd`.
fn make_base(stowage: &Stowage, dir: &Path) {
    require(BUSYBOX_BIN, "busybox-static");
    let ctx = dir.join("base");
    let rootfs = ctx.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir bin");
    std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir etc");
    std::fs::copy(BUSYBOX_BIN, rootfs.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "cat", "rm", "echo", "test"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY rootfs/ /\n").expect("Dockerfile");
    build(stowage, &ctx, "localhost/squash-base:1", &[]);
}

fn build(stowage: &Stowage, ctx: &Path, tag: &str, extra: &[&str]) {
    let mut args = vec!["build", "-q", "-t", tag];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().expect("utf-8 path"));
    stowage.ok(&args);
}

fn non_empty_entries(history: &[stowage_image::History]) -> usize {
    history
        .iter()
        .filter(|h| h.empty_layer != Some(true))
        .count()
}

#[test]
fn squash_merges_the_new_layers_and_squash_all_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stowage = Stowage::new(dir.path());
    make_base(&stowage, dir.path());
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir ctx");
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).expect("write Dockerfile");

    build(&stowage, &ctx, "localhost/sq:plain", &[]);
    build(&stowage, &ctx, "localhost/sq:squashed", &["--squash"]);
    build(&stowage, &ctx, "localhost/sq:all", &["--squash-all"]);

    let store = stowage.store();
    let base = store.image("localhost/squash-base:1").expect("base");
    let plain = store.image("localhost/sq:plain").expect("plain");
    let squashed = store.image("localhost/sq:squashed").expect("squashed");
    let all = store.image("localhost/sq:all").expect("all");

    // Layers: the base's stay shared, the three RUN layers become one.
    assert_eq!(base.layers.len(), 1);
    assert_eq!(plain.layers.len(), 4);
    assert_eq!(squashed.layers.len(), 2);
    assert_eq!(squashed.layers[0].blob_digest, base.layers[0].blob_digest);
    assert_eq!(all.layers.len(), 1);
    let size = |image: &stowage_store::ImageDetails| -> u64 {
        image.layers.iter().map(|l| l.compressed_size).sum()
    };
    assert!(
        size(&squashed) + 15 * 1024 * 1024 < size(&plain),
        "squashed {} bytes vs plain {} bytes: the deleted 20 MB file should be gone",
        size(&squashed),
        size(&plain)
    );
    assert_eq!(
        squashed.config.rootfs.diff_ids,
        squashed
            .layers
            .iter()
            .map(|l| l.diff_id)
            .collect::<Vec<_>>()
    );

    // History: every entry kept, the same text; non-empty entries count the layers.
    for image in [&squashed, &all] {
        assert_eq!(image.config.history.len(), plain.config.history.len());
        for (a, b) in image.config.history.iter().zip(&plain.config.history) {
            assert_eq!(a.created_by, b.created_by);
        }
        assert_eq!(non_empty_entries(&image.config.history), image.layers.len());
    }
    let empties: Vec<bool> = squashed
        .config
        .history
        .iter()
        .map(|h| h.empty_layer == Some(true))
        .collect();
    // import, ENV, RUN, RUN, RUN, CMD
    assert_eq!(empties, vec![false, true, true, true, false, true]);
    let empties_all: Vec<bool> = all
        .config
        .history
        .iter()
        .map(|h| h.empty_layer == Some(true))
        .collect();
    assert_eq!(empties_all, vec![true, true, true, true, false, true]);

    // Config otherwise unchanged.
    for image in [&squashed, &all] {
        assert_eq!(image.config.config.env, plain.config.config.env);
        assert_eq!(image.config.config.cmd, plain.config.config.cmd);
    }

    // The squashed layer: no trace of the file made and deleted in the range,
    // the deletion of the base's /bin/cat kept as a whiteout.
    let top = layer_paths(&store, &squashed.layers[1]);
    assert!(top.contains("data/small.txt"), "{top:?}");
    assert!(top.contains("bin/.wh.cat"), "{top:?}");
    for gone in ["big", ".wh.big", "data/tmp", "data/tmp/x", "data/.wh.tmp"] {
        assert!(!top.contains(gone), "{gone} in the squashed layer: {top:?}");
    }
    // --squash-all: one layer, no whiteouts at all.
    let everything = layer_paths(&store, &all.layers[0]);
    assert!(everything.contains("bin/busybox"), "{everything:?}");
    assert!(everything.contains("data/small.txt"), "{everything:?}");
    assert!(!everything.contains("bin/cat"), "{everything:?}");
    assert!(
        everything.iter().all(|p| !p.contains(".wh.")),
        "whiteouts in a --squash-all layer: {everything:?}"
    );
    drop(store);

    // It runs, in stowage and (saved) in Docker.
    let expected = "hello\nsmall\nnobig\n";
    for tag in ["localhost/sq:squashed", "localhost/sq:all"] {
        let out = stowage.ok(&["run", "--rm", tag]);
        assert_eq!(out, expected, "stowage run {tag}");
    }
    let archive = dir.path().join("squashed.tar");
    stowage.ok(&[
        "save",
        "-o",
        archive.to_str().expect("utf-8"),
        "localhost/sq:squashed",
    ]);
    let loaded = docker_load(&archive);
    let (code, stdout, stderr) = docker_run(&loaded, &[]);
    docker_rmi(&loaded);
    assert_eq!(code, 0, "docker run {loaded}: {stderr}");
    assert_eq!(stdout, expected);

    // A rebuild with --squash gives the same image (the merge is deterministic).
    build(&stowage, &ctx, "localhost/sq:again", &["--squash"]);
    let store = stowage.store();
    let again = store.image("localhost/sq:again").expect("again");
    assert_eq!(again.id, squashed.id);
    stowage.assert_store_verifies();
}
