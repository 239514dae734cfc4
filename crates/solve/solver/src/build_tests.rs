//! Root tests of whole builds: a busybox context, the real sandbox, the real
//! store. They fail (never skip) without root, overlayfs or /bin/busybox.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use stowage_archive::Compression;
use stowage_image::Platform;
use stowage_store::Store;

use crate::build::{BuildRequest, DockerfileInput, LocalImages, build};
use crate::cachekey::MissReason;
use crate::error::BuildError;
use crate::progress::{Silent, StepOutcome};

fn preconditions() {
    assert!(
        rustix::process::geteuid().is_root(),
        "build tests need root (namespaces and overlayfs)"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "build tests need /bin/busybox (Debian package busybox-static)"
    );
}

fn context_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    dir
}

fn request(context: &Path, dockerfile: &str) -> BuildRequest {
    BuildRequest {
        dockerfile: DockerfileInput {
            name: "Dockerfile".to_owned(),
            text: dockerfile.to_owned(),
            path: None,
        },
        context: context.to_path_buf(),
        tags: vec!["test/image:latest".parse().unwrap()],
        build_args: BTreeMap::new(),
        labels: BTreeMap::new(),
        target: None,
        network: stowage_exec::NetworkMode::Host,
        no_cache: false,
        dry_run: false,
        compression: Compression::Gzip { level: 6 },
        timestamp: None,
        platform: Platform::native(),
        secrets: BTreeMap::new(),
        cache_from: Vec::new(),
        squash: crate::SquashMode::Off,
    }
}

const BUSYBOX_BASE: &str = "FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

#[test]
fn independent_stages_run_at_once_and_the_final_image_has_only_its_layers() {
    preconditions();
    let context = context_with(&[]);
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let dockerfile = format!(
        "{BUSYBOX_BASE}
FROM base AS one
RUN cut -d' ' -f1 /proc/uptime > /start && sleep 2 && cut -d' ' -f1 /proc/uptime > /end

FROM base AS two
RUN cut -d' ' -f1 /proc/uptime > /start && sleep 2 && cut -d' ' -f1 /proc/uptime > /end

FROM scratch
COPY --from=one /start /one-start
COPY --from=one /end /one-end
COPY --from=two /start /two-start
COPY --from=two /end /two-end
"
    );
    let result = build(
        &store,
        &request(context.path(), &dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    assert_eq!(
        result.layers.len(),
        4,
        "the final stage has only its 4 COPY layers"
    );
    let image = store.image("test/image:latest").unwrap();
    let view =
        crate::rootfs::MergedView::new(crate::rootfs::lowers_for(&store, &image.layers).unwrap());
    let read = |p: &str| -> f64 {
        view.read_file(p, 64)
            .unwrap_or_else(|| panic!("{p} missing"))
            .trim()
            .parse()
            .unwrap()
    };
    let (one_start, one_end) = (read("/one-start"), read("/one-end"));
    let (two_start, two_end) = (read("/two-start"), read("/two-end"));
    assert!(
        one_start < two_end && two_start < one_end,
        "the two stages ran one after the other: one {one_start}..{one_end}, two {two_start}..{two_end}"
    );
    assert!(
        view.resolve("/bin/busybox", false).is_none(),
        "no build-stage layer in the final image"
    );
}

#[test]
fn a_failing_stage_stops_the_build_with_its_step_and_output() {
    preconditions();
    let context = context_with(&[]);
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let dockerfile = format!(
        "{BUSYBOX_BASE}
FROM base AS slow
RUN sleep 30

FROM base AS broken
RUN echo about to fail && exit 7

FROM scratch
COPY --from=slow /bin/busybox /a
COPY --from=broken /bin/busybox /b
"
    );
    let started = std::time::Instant::now();
    let error = build(
        &store,
        &request(context.path(), &dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("exit 7") && text.contains("code 7"), "{text}");
    assert!(
        text.contains("about to fail"),
        "the output tail is shown: {text}"
    );
    assert!(matches!(error, BuildError::Step { .. }));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "the sleeping stage was not cancelled"
    );
}

#[test]
fn cache_hits_misses_and_reasons() {
    preconditions();
    let context = context_with(&[
        ("app/main.py", "print(1)\n"),
        ("requirements.txt", "flask\n"),
    ]);
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let dockerfile = format!(
        "{BUSYBOX_BASE}
ARG VERSION=1
COPY requirements.txt /app/
RUN echo installing $VERSION > /installed
COPY app /app/
"
    );
    let first = build(
        &store,
        &request(context.path(), &dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    let again = build(
        &store,
        &request(context.path(), &dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    assert_eq!(
        first.image_id, again.image_id,
        "a no-op rebuild gives the same image"
    );
    assert!(
        again
            .steps
            .iter()
            .all(|s| !matches!(s.outcome, StepOutcome::Built { .. }))
    );

    // The seed's Step 4: changing only the sources keeps the install cached.
    fs::write(context.path().join("app/main.py"), "print(2)\n").unwrap();
    let edited = build(
        &store,
        &request(context.path(), &dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    let outcome = |result: &crate::build::BuildResult, text: &str| {
        result
            .steps
            .iter()
            .find(|s| s.text.contains(text))
            .unwrap_or_else(|| panic!("no step {text}"))
            .clone()
    };
    assert_eq!(
        outcome(&edited, "RUN echo installing").outcome,
        StepOutcome::Cached
    );
    let copy = outcome(&edited, "COPY app");
    assert!(matches!(copy.outcome, StepOutcome::Built { .. }));
    assert!(
        copy.reasons.iter().any(|r| matches!(r, MissReason::FilesChanged { source, changed, .. } if source == "app" && changed == &vec!["app/main.py".to_owned()])),
        "{:?}",
        copy.reasons
    );

    // A build arg change misses the RUN and says which arg.
    let mut with_arg = request(context.path(), &dockerfile);
    with_arg.build_args.insert("VERSION".into(), "2".into());
    let result = build(&store, &with_arg, &LocalImages, &Silent).unwrap();
    let run = outcome(&result, "RUN echo installing");
    assert!(
        run.reasons
            .iter()
            .any(|r| matches!(r, MissReason::BuildArgChanged { name, .. } if name == "VERSION")),
        "{:?}",
        run.reasons
    );

    // --no-cache runs everything.
    let mut no_cache = request(context.path(), &dockerfile);
    no_cache.no_cache = true;
    let result = build(&store, &no_cache, &LocalImages, &Silent).unwrap();
    assert!(
        result
            .steps
            .iter()
            .all(|s| s.outcome != StepOutcome::Cached)
    );

    // A cached layer whose blob is gone is rebuilt, not used.
    let image = store.image("test/image:latest").unwrap();
    let last = image.layers.last().unwrap();
    fs::remove_file(store.blob_path(&last.blob_digest)).unwrap();
    let rebuilt = build(
        &store,
        &request(context.path(), &dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    let copy = outcome(&rebuilt, "COPY app");
    assert!(
        matches!(copy.outcome, StepOutcome::Built { .. }),
        "{copy:?}"
    );

    // A cached layer whose blob was damaged (same size, other bytes) too.
    let image = store.image("test/image:latest").unwrap();
    let last = image.layers.last().unwrap();
    let path = store.blob_path(&last.blob_digest);
    let mut bytes = fs::read(&path).unwrap();
    for byte in bytes.iter_mut().skip(20).take(8) {
        *byte = !*byte;
    }
    let mut perms = fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    fs::set_permissions(&path, perms).unwrap();
    fs::write(&path, &bytes).unwrap();
    let rebuilt = build(
        &store,
        &request(context.path(), &dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    let copy = outcome(&rebuilt, "COPY app");
    assert!(
        matches!(copy.outcome, StepOutcome::Built { .. }),
        "{copy:?}"
    );
    assert!(
        copy.reasons
            .iter()
            .any(|r| matches!(r, MissReason::CachedLayerUnusable { .. })),
        "{:?}",
        copy.reasons
    );
}

#[test]
fn run_mounts_cache_secret_tmpfs_and_bind() {
    preconditions();
    let context = context_with(&[("conf/app.conf", "port=1\n")]);
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("token");
    fs::write(&secret, "s3cr3t-value-42").unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let dockerfile = format!(
        "{BUSYBOX_BASE}
FROM base AS app
RUN --mount=type=cache,target=/var/cache/app echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /count
RUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /secret-length
RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /tmpfs-listing
RUN --mount=type=bind,source=conf,target=/mnt/conf cp /mnt/conf/app.conf /copied.conf
RUN --mount=type=bind,from=base,source=/bin,target=/mnt/bin ls /mnt/bin/busybox > /bound
"
    );
    let mut req = request(context.path(), &dockerfile);
    req.secrets.insert("token".into(), secret.clone());
    build(&store, &req, &LocalImages, &Silent).unwrap();
    req.no_cache = true;
    let result = build(&store, &req, &LocalImages, &Silent).unwrap();
    let image = store.image("test/image:latest").unwrap();
    let view =
        crate::rootfs::MergedView::new(crate::rootfs::lowers_for(&store, &image.layers).unwrap());
    assert_eq!(
        view.read_file("/count", 64).unwrap().trim(),
        "2",
        "the cache mount persisted"
    );
    assert!(
        view.resolve("/var/cache/app/log", false).is_none(),
        "cache content is not in a layer"
    );
    assert_eq!(view.read_file("/secret-length", 64).unwrap().trim(), "15");
    assert!(view.resolve("/run/secrets/token", false).is_none());
    assert_eq!(view.read_file("/tmpfs-listing", 64).unwrap().trim(), "x");
    assert!(view.resolve("/scratch/x", false).is_none());
    assert_eq!(view.read_file("/copied.conf", 64).unwrap(), "port=1\n");
    assert_eq!(
        view.read_file("/bound", 64).unwrap().trim(),
        "/mnt/bin/busybox"
    );
    // The secret's value is in no layer blob and not in the config.
    for layer in &result.layers {
        let blob = fs::File::open(store.blob_path(&layer.blob_digest)).unwrap();
        let (_, mut reader) = stowage_archive::decompressing_reader(blob).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut bytes).unwrap();
        assert!(
            !bytes.windows(15).any(|w| w == b"s3cr3t-value-42"),
            "secret found in layer {}",
            layer.diff_id
        );
    }
    assert!(!String::from_utf8_lossy(&image.config_bytes).contains("s3cr3t-value-42"));

    // A cache mount over a file is refused, naming the line.
    let bad = format!("{BUSYBOX_BASE}\nRUN --mount=type=cache,target=/bin/busybox true\n");
    let error = build(
        &store,
        &request(context.path(), &bad),
        &LocalImages,
        &Silent,
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("not a directory") && text.contains("line 5"),
        "{text}"
    );
}

#[test]
fn an_image_from_another_store_serves_as_cache_with_cache_from() {
    preconditions();
    let context = context_with(&[("a.txt", "a\n")]);
    let dockerfile = format!("{BUSYBOX_BASE}\nCOPY a.txt /a.txt\nRUN echo built > /marker\n");
    // Machine A builds.
    let store_a_dir = tempfile::tempdir().unwrap();
    let store_a = Store::open(store_a_dir.path()).unwrap();
    let built = build(
        &store_a,
        &request(context.path(), &dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    // Machine B gets the image's blobs (as a pull or load would) but no cache.
    let store_b_dir = tempfile::tempdir().unwrap();
    let store_b = Store::open(store_b_dir.path()).unwrap();
    let image = store_a.image("test/image:latest").unwrap();
    for layer in &image.layers {
        let blob = fs::read(store_a.blob_path(&layer.blob_digest)).unwrap();
        store_b
            .put_blob_bytes(&blob, Some(layer.blob_digest))
            .unwrap();
    }
    store_b
        .commit_image(&stowage_store::ImageCommit {
            manifest: image.manifest_bytes.clone(),
            config: image.config_bytes.clone(),
            layers: image.layers.clone(),
            tags: vec!["cache/source:1".parse().unwrap()],
        })
        .unwrap();
    let mut req = request(context.path(), &dockerfile);
    req.cache_from = vec!["cache/source:1".into()];
    let result = build(&store_b, &req, &LocalImages, &Silent).unwrap();
    assert!(
        result
            .steps
            .iter()
            .all(|s| !matches!(s.outcome, StepOutcome::Built { .. })),
        "machine B reran a step: {:?}",
        result
            .steps
            .iter()
            .map(|s| (&s.text, &s.outcome))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        result.image_id, built.image_id,
        "the same image on both machines"
    );

    // A step the source has no layer for says so, naming the source.
    fs::write(context.path().join("a.txt"), "changed\n").unwrap();
    let store_c_dir = tempfile::tempdir().unwrap();
    let store_c = Store::open(store_c_dir.path()).unwrap();
    for layer in &image.layers {
        let blob = fs::read(store_a.blob_path(&layer.blob_digest)).unwrap();
        store_c
            .put_blob_bytes(&blob, Some(layer.blob_digest))
            .unwrap();
    }
    store_c
        .commit_image(&stowage_store::ImageCommit {
            manifest: image.manifest_bytes.clone(),
            config: image.config_bytes.clone(),
            layers: image.layers.clone(),
            tags: vec!["cache/source:1".parse().unwrap()],
        })
        .unwrap();
    let result = build(&store_c, &req, &LocalImages, &Silent).unwrap();
    let copy = result
        .steps
        .iter()
        .find(|s| s.text.starts_with("COPY a.txt"))
        .unwrap();
    assert_eq!(
        copy.reasons,
        vec![MissReason::NotInCacheSources {
            sources: vec!["cache/source:1".into()]
        }]
    );
    assert_eq!(
        copy.reasons[0].to_string(),
        "not built before, and no --cache-from source has it (cache/source:1)"
    );
}

/// Serves `body` for every request on 127.0.0.1, for ADD URL tests.
fn serve_once(body: &'static [u8]) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    format!("http://{address}/files/hello.txt")
}

#[test]
fn add_extracts_local_archives_and_downloads_urls_with_checksums() {
    preconditions();
    let context = context_with(&[]);
    // A gzip tarball in the context.
    let tar_path = context.path().join("bundle.tar.gz");
    {
        let encoder = flate2::write::GzEncoder::new(
            fs::File::create(&tar_path).unwrap(),
            flate2::Compression::default(),
        );
        let mut builder = tar::Builder::new(encoder);
        let mut header = tar::Header::new_ustar();
        header.set_size(6);
        header.set_mode(0o640);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, "pkg/data.txt", &b"inside"[..])
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
    let url = serve_once(b"downloaded");
    let good = stowage_digest::Digest::of(b"downloaded");
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let dockerfile = format!(
        "{BUSYBOX_BASE}
ADD bundle.tar.gz /opt/
ADD --checksum={good} {url} /dl/
"
    );
    build(
        &store,
        &request(context.path(), &dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    let image = store.image("test/image:latest").unwrap();
    let view =
        crate::rootfs::MergedView::new(crate::rootfs::lowers_for(&store, &image.layers).unwrap());
    assert_eq!(view.read_file("/opt/pkg/data.txt", 64).unwrap(), "inside");
    assert!(view.resolve("/opt/bundle.tar.gz", false).is_none());
    let downloaded = view.resolve("/dl/hello.txt", true).unwrap();
    assert_eq!(fs::read(&downloaded.disk).unwrap(), b"downloaded");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&downloaded.meta.permissions()) & 0o777,
        0o600
    );

    let bad = format!(
        "{BUSYBOX_BASE}\nADD --checksum=sha256:{} {} /dl/\n",
        "0".repeat(64),
        serve_once(b"downloaded")
    );
    let error = build(
        &store,
        &request(context.path(), &bad),
        &LocalImages,
        &Silent,
    )
    .unwrap_err();
    assert!(error.to_string().contains("checksum mismatch"), "{error}");
}

#[test]
fn onbuild_triggers_run_in_the_child_and_are_not_inherited() {
    preconditions();
    let context = context_with(&[("app.txt", "app\n")]);
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let parent = format!(
        "{BUSYBOX_BASE}ONBUILD COPY app.txt /app/app.txt\nONBUILD RUN echo triggered > /app/trigger\n"
    );
    let mut req = request(context.path(), &parent);
    req.tags = vec!["test/parent:1".parse().unwrap()];
    build(&store, &req, &LocalImages, &Silent).unwrap();
    let parent_image = store.image("test/parent:1").unwrap();
    assert_eq!(
        parent_image.config.config.on_build.as_ref().map(Vec::len),
        Some(2)
    );
    assert!(
        parent_image.layers.len() == 2,
        "ONBUILD does not run in the image that declares it"
    );

    let child = "FROM test/parent:1\nRUN cat /app/trigger /app/app.txt > /both\n";
    build(
        &store,
        &request(context.path(), child),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    let image = store.image("test/image:latest").unwrap();
    assert_eq!(
        image.config.config.on_build, None,
        "triggers are not inherited"
    );
    assert_eq!(
        image.layers.len(),
        5,
        "2 base layers, 2 trigger layers, 1 RUN"
    );
    let view =
        crate::rootfs::MergedView::new(crate::rootfs::lowers_for(&store, &image.layers).unwrap());
    assert_eq!(view.read_file("/both", 64).unwrap(), "triggered\napp\n");
}

#[test]
fn concurrent_builds_on_one_store_share_the_cache_consistently() {
    preconditions();
    let context = context_with(&[("a.txt", "a\n")]);
    let store_dir = tempfile::tempdir().unwrap();
    let dockerfile = format!("{BUSYBOX_BASE}\nCOPY a.txt /a.txt\nRUN echo once > /marker\n");
    let ids: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let dockerfile = dockerfile.clone();
                let context = context.path().to_path_buf();
                let root = store_dir.path().to_path_buf();
                scope.spawn(move || {
                    // Each builder opens the store itself, as separate processes do.
                    let store = Store::open(&root).unwrap();
                    // RUN output carries file times; clamping them makes
                    // builds that raced on a miss produce the same layer.
                    let mut req = request(&context, &dockerfile);
                    req.timestamp = Some(1_700_000_000);
                    build(&store, &req, &LocalImages, &Silent).unwrap().image_id
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    let store = Store::open(store_dir.path()).unwrap();
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    let mut req = request(context.path(), &dockerfile);
    req.timestamp = Some(1_700_000_000);
    let again = build(&store, &req, &LocalImages, &Silent).unwrap();
    assert!(
        again
            .steps
            .iter()
            .all(|s| !matches!(s.outcome, StepOutcome::Built { .. }))
    );
    assert_eq!(again.image_id, ids[0]);
}

#[test]
fn stage_graph_errors_point_at_the_line_and_unneeded_stages_are_skipped() {
    preconditions();
    let context = context_with(&[]);
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();

    // A stage the target does not need is neither built nor pulled: its base
    // does not even exist.
    let dockerfile = format!(
        "FROM no-such-registry.invalid/never:pulled AS unused\nRUN exit 1\n\n{BUSYBOX_BASE}RUN echo ok > /ok\n"
    );
    build(
        &store,
        &request(context.path(), &dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();

    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "COPY --from a missing stage",
            "FROM scratch\nCOPY --from=nowhere /x /x\n",
            &["no stage is named \"nowhere\"", "line 2"],
        ),
        (
            "a stage copying from itself",
            "FROM scratch AS self\nCOPY --from=self /x /x\n",
            &["this stage or a later one", "line 2"],
        ),
        (
            "a stage copying from a later one",
            "FROM scratch AS first\nCOPY --from=second /x /x\nFROM scratch AS second\n",
            &["this stage or a later one", "line 2"],
        ),
    ];
    for (what, dockerfile, wanted) in cases {
        let mut req = request(context.path(), dockerfile);
        req.target = Some(if what.contains("later") { "first" } else { "0" }.to_owned());
        if what.contains("missing") {
            req.target = None;
        }
        let error = build(&store, &req, &LocalImages, &Silent)
            .err()
            .unwrap_or_else(|| panic!("{what}: built"));
        let text = error.to_string();
        for fragment in wanted {
            assert!(text.contains(fragment), "{what}: {text}");
        }
    }

    let mut req = request(context.path(), "FROM scratch AS a\nFROM scratch AS b\n");
    req.target = Some("c".to_owned());
    let text = build(&store, &req, &LocalImages, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("--target \"c\" names no stage") && text.contains("a, b"),
        "{text}"
    );
}

/// A one-file change to a big COPY recompresses only the gzip chunks around that file; the
/// rest is copied from the previous blob, and the layer is bit-identical to one compressed
/// from scratch in an empty store.
#[test]
fn a_rebuilt_copy_layer_reuses_unchanged_gzip_chunks_with_identical_bytes() {
    let context = tempfile::tempdir().unwrap();
    let mut state: u64 = 0x1234_5678_9abc_def1;
    for file in 0..400 {
        let mut content = String::new();
        for _ in 0..(50 + file % 200) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            content.push_str(&format!("{file} line {state:x}\n"));
        }
        let path = context
            .path()
            .join(format!("src/d{}/f{file:04}.txt", file % 7));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    let dockerfile = "FROM scratch\nCOPY . /app\n";
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let first = build(
        &store,
        &request(context.path(), dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    let first_layer = first.layers.last().unwrap().clone();
    let first_chunks = store.deflate_chunk_count(&first_layer.blob_digest).unwrap();
    assert!(
        first_chunks > 5,
        "a multi-chunk layer: {first_chunks} chunks"
    );

    let edited = context.path().join("src/d4/f0200.txt");
    let mut text = fs::read_to_string(&edited).unwrap();
    text.push_str(&"an edit that grows the file past a tar block\n".repeat(20));
    fs::write(&edited, text).unwrap();
    let second = build(
        &store,
        &request(context.path(), dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    let second_layer = second.layers.last().unwrap().clone();
    assert_ne!(second_layer.diff_id, first_layer.diff_id);
    // Reused chunks keep their first location, so the new blob owns only what it deflated.
    let deflated_again = store
        .deflate_chunk_count(&second_layer.blob_digest)
        .unwrap();
    assert!(
        deflated_again <= 4,
        "{deflated_again} of about {first_chunks} chunks were deflated again"
    );

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(fresh_dir.path()).unwrap();
    let scratch = build(
        &fresh,
        &request(context.path(), dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    assert_eq!(
        scratch.layers.last().unwrap().blob_digest,
        second_layer.blob_digest
    );
    assert_eq!(scratch.image_id, second.image_id);
}

/// The entry list the build records for each layer it writes (for the build report) is
/// exactly what reading the stored blob back gives.
#[test]
fn recorded_layer_entries_match_a_scan_of_the_blob() {
    preconditions();
    let context = context_with(&[("app/a.txt", "alpha\n"), ("app/b.txt", "beta\n")]);
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    let dockerfile = format!(
        "{BUSYBOX_BASE}COPY app /app\nRUN rm /app/a.txt && echo new > /app/c.txt && chmod 600 /app/b.txt\n"
    );
    let result = build(
        &store,
        &request(context.path(), &dockerfile),
        &LocalImages,
        &Silent,
    )
    .unwrap();
    assert_eq!(result.layers.len(), 4);
    for layer in &result.layers {
        let recorded = store
            .layer_annotation(&layer.diff_id, stowage_advisor::LAYER_ENTRIES_KIND)
            .unwrap()
            .unwrap_or_else(|| panic!("no entries recorded for {}", layer.diff_id));
        let recorded = stowage_advisor::entries_codec::decode(&recorded).unwrap();
        let blob = store.open_blob(&layer.blob_digest).unwrap();
        let (_, reader) = stowage_archive::decompressing_reader(blob).unwrap();
        let scanned = stowage_advisor::read_layer_entries(reader).unwrap();
        assert_eq!(recorded, scanned, "layer {}", layer.diff_id);
        assert!(!scanned.items.is_empty());
    }
}
