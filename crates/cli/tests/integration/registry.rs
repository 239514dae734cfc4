//! `stowage pull`, `push`, `login` and `logout` against real registries and
//! real peers: docker-registry (plain, and htpasswd + TLS under a generated CA),
//! dockerd (`docker push`/`pull`/`run`) and skopeo; and failure modes against a
//! fake registry, each ending in a clear error (or a successful resume) and a
//! store that still verifies.

use std::io::Write as _;
use std::process::Command;

use stowage_digest::Digest;
use stowage_image::{ImageConfig, LayerInfo, Platform, Reference, media_types};
use stowage_store::ManifestFormat;

use crate::support::docker::{docker_bin, docker_rmi_with, ensure_dockerd};
use crate::support::registry::{
    FakeServer, RegistryProcess, SKOPEO_BIN, SeenRequest, Stowage, busybox_rootfs_tar, describe,
    free_port, http_response, require,
};

fn docker(args: &[&str]) -> String {
    let out = Command::new(docker_bin())
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed:\n{}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo(args: &[&str]) -> String {
    require(SKOPEO_BIN, "skopeo");
    let out = Command::new(SKOPEO_BIN)
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed:\n{}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Commits a one-layer image (a file `hello.txt`) straight into a stowage store.
fn commit_small_image(stowage: &Stowage, tag: &str, format: ManifestFormat, zstd: bool) -> Digest {
    let mut builder = tar::Builder::new(Vec::new());
    let content = format!("hello from {tag}\n");
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(content.len() as u64);
    header.set_mtime(946_684_800);
    header.set_cksum();
    builder
        .append_data(&mut header, "hello.txt", content.as_bytes())
        .expect("tar");
    let tar = builder.into_inner().expect("tar");
    let (blob, media_type) = if zstd {
        (zstd_compress(&tar), media_types::OCI_LAYER_ZSTD)
    } else {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&tar).expect("gzip");
        let media_type = match format {
            ManifestFormat::Oci => media_types::OCI_LAYER_GZIP,
            ManifestFormat::Docker => media_types::DOCKER_LAYER_GZIP,
        };
        (encoder.finish().expect("gzip"), media_type)
    };
    let store = stowage.store();
    let info = store.put_blob_bytes(&blob, None).expect("put layer");
    let mut config = ImageConfig::scratch(&Platform::new("linux", "amd64", None));
    config.rootfs.diff_ids.push(Digest::of(&tar));
    store
        .commit_config(
            &config,
            vec![LayerInfo {
                diff_id: Digest::of(&tar),
                blob_digest: info.digest,
                media_type: media_type.to_owned(),
                compressed_size: info.size,
                uncompressed_size: Some(tar.len() as u64),
            }],
            vec![Reference::parse_normalized(tag).expect("tag")],
            format,
        )
        .expect("commit")
        .manifest_digest
}

fn zstd_compress(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

#[test]
fn docker_pushed_image_is_pulled_by_stowage_and_stowage_pushes_are_run_by_docker() {
    ensure_dockerd();
    let registry = RegistryProcess::start_plain();
    let host = registry.host();
    let dir = tempfile::tempdir().expect("tempdir");
    let stowage = Stowage::new(dir.path());

    // docker import + push a busybox image (Docker v2 manifest, gzip layer).
    let rootfs = busybox_rootfs_tar(dir.path());
    let source = format!("{host}/test/busybox:1");
    docker(&[
        "import",
        "--change",
        "CMD [\"/bin/sh\"]",
        rootfs.to_str().expect("utf8"),
        &source,
    ]);
    docker(&["push", &source]);
    let repo_digests = docker(&["inspect", "--format", "{{json .RepoDigests}}", &source]);

    // stowage pulls it; the store has the same manifest digest docker reports.
    let out = stowage.ok(&["pull", &source]);
    assert_eq!(out.trim(), source, "pull prints the reference");
    let store = stowage.store();
    let image = store.image(&source).expect("pulled image is tagged");
    assert!(
        repo_digests.contains(&image.manifest_digest.to_string()),
        "docker's RepoDigests {repo_digests} lack {}",
        image.manifest_digest
    );
    assert_eq!(image.config.os, "linux");
    assert_eq!(image.layers.len(), 1);
    assert_eq!(image.layers[0].media_type, media_types::DOCKER_LAYER_GZIP);
    drop(store);
    stowage.assert_store_verifies();

    // inspect measures the pulled layer's uncompressed size (the registry does not say it)
    // and remembers it.
    let inspected: serde_json::Value =
        serde_json::from_str(&stowage.ok(&["inspect", &source])).expect("inspect json");
    let tar_size = std::fs::metadata(&rootfs).expect("rootfs tar").len();
    let measured = inspected[0]["Stowage"]["Layers"][0]["UncompressedSize"]
        .as_u64()
        .expect("uncompressed size measured");
    assert!(
        measured.abs_diff(tar_size) <= 10_240,
        "measured {measured}, docker imported a {tar_size}-byte tar"
    );
    let store = stowage.store();
    let image = store.image(&source).expect("pulled image");
    assert_eq!(image.layers[0].uncompressed_size, Some(measured));
    drop(store);

    // Pulling again is a no-op.
    let again = stowage.run(&["pull", &source]);
    assert!(again.status.success(), "{}", describe(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("Image is up to date"),
        "{}",
        describe(&again)
    );

    // stowage pushes it under another name: the layer is mounted from test/busybox.
    let copy = format!("{host}/test/copy:2");
    let pushed = stowage.run(&["push", &source, &copy]);
    assert!(pushed.status.success(), "{}", describe(&pushed));
    assert!(
        String::from_utf8_lossy(&pushed.stderr).contains("Mounted from test/busybox"),
        "{}",
        describe(&pushed)
    );
    let pushed_ref = String::from_utf8_lossy(&pushed.stdout).trim().to_owned();
    assert_eq!(
        pushed_ref,
        format!("{host}/test/copy@{}", image.manifest_digest)
    );

    // docker pulls and runs what stowage pushed.
    let _ = docker_rmi_with(&["-f", &copy]);
    docker(&["pull", &copy]);
    let said = docker(&["run", "--rm", &copy, "/bin/echo", "hello from stowage"]);
    assert_eq!(said.trim(), "hello from stowage");
    let _ = docker_rmi_with(&["-f", &copy, &source]);

    // skopeo copies it to an OCI layout.
    let layout = dir.path().join("oci");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{copy}"),
        &format!("oci:{}:copy", layout.display()),
    ]);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{copy}"),
    ]);
    assert_eq!(Digest::of(raw.as_bytes()), image.manifest_digest);
}

#[test]
fn oci_images_round_trip_through_skopeo_in_gzip_and_zstd() {
    let registry = RegistryProcess::start_plain();
    let host = registry.host();
    let dir = tempfile::tempdir().expect("tempdir");
    let stowage = Stowage::new(dir.path());
    for (name, zstd) in [("gzip", false), ("zstd", true)] {
        let local = format!("local/{name}:1");
        let digest = commit_small_image(&stowage, &local, ManifestFormat::Oci, zstd);
        let remote = format!("{host}/oci/{name}:1");
        stowage.ok(&["push", "-q", &local, &remote]);
        let raw = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{remote}"),
        ]);
        assert_eq!(Digest::of(raw.as_bytes()), digest, "{name}");
        assert!(raw.contains(media_types::OCI_MANIFEST), "{name}: {raw}");

        // skopeo pushes a copy; a second stowage store pulls it.
        let skopeo_copy = format!("{host}/skopeo/{name}:1");
        skopeo(&[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{remote}"),
            &format!("docker://{skopeo_copy}"),
        ]);
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = Stowage::new(other_dir.path());
        other.ok(&["pull", "-q", &skopeo_copy]);
        let pulled = other.store().image(&skopeo_copy).expect("pulled");
        assert_eq!(pulled.manifest_digest, digest, "{name}");
        other.assert_store_verifies();
    }
}

#[test]
fn login_logout_and_authenticated_tls_transfers() {
    let registry = RegistryProcess::start_secure("alice", "s3cret");
    let host = registry.host();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stowage = Stowage::new(dir.path());
    stowage.certs_dir = Some(registry.certs_dir());
    commit_small_image(&stowage, "local/app:1", ManifestFormat::Docker, false);
    let remote = format!("{host}/private/app:1");
    let config_path = stowage.docker_config.join("config.json");

    // Without credentials: a clear 401.
    let error = stowage.fails(&["push", "local/app:1", &remote]);
    assert!(error.contains("authentication to registry"), "{error}");
    assert!(error.contains("no credentials configured"), "{error}");

    // A wrong password is refused and not stored.
    let out = stowage.run_with_stdin(
        &["login", "-u", "alice", "--password-stdin", &host],
        "nope\n",
    );
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        !config_path.exists()
            || !std::fs::read_to_string(&config_path)
                .expect("read")
                .contains(&host)
    );

    // The right one is stored as config.json's auths entry.
    let out = stowage.run_with_stdin(
        &["login", "-u", "alice", "--password-stdin", &host],
        "s3cret\n",
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("config.json")).expect("json");
    assert_eq!(
        config["auths"][host.as_str()]["auth"].as_str(),
        Some("YWxpY2U6czNjcmV0"), // base64("alice:s3cret")
        "{config}"
    );

    // Push and pull over verified TLS with the stored credentials.
    stowage.ok(&["push", "local/app:1", &remote]);
    let other_dir = tempfile::tempdir().expect("tempdir");
    let mut other = Stowage::new(other_dir.path());
    other.docker_config = stowage.docker_config.clone();
    other.certs_dir = stowage.certs_dir.clone();
    other.ok(&["pull", &remote]);
    other.assert_store_verifies();

    // Without the CA, the certificate is refused; --insecure-registry accepts it.
    let mut untrusting = Stowage::new(&other_dir.path().join("untrusting"));
    untrusting.docker_config = stowage.docker_config.clone();
    untrusting.fails(&["pull", &remote]);
    let insecure = untrusting.run(&["--insecure-registry", &host, "pull", &remote]);
    assert!(insecure.status.success(), "{}", describe(&insecure));

    // Logout removes the entry; a second logout says so.
    let out = stowage.ok(&["logout", &host]);
    assert!(out.contains("Removing login credentials"), "{out}");
    let config = std::fs::read_to_string(&config_path).expect("config.json");
    assert!(!config.contains(&host), "{config}");
    let out = stowage.ok(&["logout", &host]);
    assert!(out.contains("Not logged in"), "{out}");
}

/// A fake registry serving one Docker v2 image `test/app:1` whose layer
/// request is answered by `layer` (given the request and the true layer bytes).
struct FakeImage {
    server: FakeServer,
    reference: String,
}

fn fake_image(layer: impl Fn(&SeenRequest, &[u8]) -> Vec<u8> + Send + Sync + 'static) -> FakeImage {
    let mut builder = tar::Builder::new(Vec::new());
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(content.len() as u64);
    header.set_cksum();
    builder
        .append_data(&mut header, "data.bin", content.as_slice())
        .expect("tar");
    let tar = builder.into_inner().expect("tar");
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        Digest::of(&tar)
    )
    .into_bytes();
    let layer_bytes = tar; // an uncompressed layer keeps the byte counts obvious
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{}","size":{}}}]}}"#,
        media_types::DOCKER_MANIFEST,
        media_types::DOCKER_CONFIG,
        Digest::of(&config),
        config.len(),
        media_types::DOCKER_LAYER_TAR,
        Digest::of(&layer_bytes),
        layer_bytes.len()
    )
    .into_bytes();
    let config_path = format!("/v2/test/app/blobs/{}", Digest::of(&config));
    let layer_path = format!("/v2/test/app/blobs/{}", Digest::of(&layer_bytes));
    let server = FakeServer::start(move |request| {
        let path = request.path.as_str();
        if path == "/v2/" {
            http_response("200 OK", &[], b"{}")
        } else if path.starts_with("/v2/test/app/manifests/") {
            http_response(
                "200 OK",
                &[
                    ("Content-Type", media_types::DOCKER_MANIFEST.to_owned()),
                    ("Docker-Content-Digest", Digest::of(&manifest).to_string()),
                ],
                &manifest,
            )
        } else if path == config_path {
            http_response("200 OK", &[], &config)
        } else if path == layer_path {
            layer(request, &layer_bytes)
        } else {
            http_response("404 Not Found", &[], b"{}")
        }
    });
    let reference = format!("{}/test/app:1", server.host());
    FakeImage { server, reference }
}

fn assert_pull_fails(image: &FakeImage, expected: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stowage = Stowage::new(dir.path());
    let error = stowage.fails(&["pull", &image.reference]);
    for text in expected {
        assert!(error.contains(text), "expected {text:?} in:\n{error}");
    }
    stowage.assert_store_verifies();
    let store = stowage.store();
    assert!(
        store.list_images().expect("list").is_empty(),
        "a failed pull committed an image"
    );
    let blobs = std::fs::read_dir(stowage.root.join("blobs/sha256"))
        .expect("blobs")
        .count();
    assert_eq!(blobs, 0, "a failed pull left blobs");
}

#[test]
fn registry_down_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stowage = Stowage::new(dir.path());
    let error = stowage.fails(&["pull", &format!("127.0.0.1:{}/test/app:1", free_port())]);
    assert!(error.contains("registry unreachable"), "{error}");
    stowage.assert_store_verifies();
}

#[test]
fn status_errors_are_clear() {
    for (status, extra, expected) in [
        (
            "401 Unauthorized",
            vec![("WWW-Authenticate", "Basic realm=\"x\"".to_owned())],
            vec!["authentication to registry", "stowage login"],
        ),
        ("403 Forbidden", vec![], vec!["denied"]),
        (
            "404 Not Found",
            vec![],
            vec!["manifest unknown", "test/app"],
        ),
        (
            "500 Internal Server Error",
            vec![],
            vec!["server error", "HTTP 500"],
        ),
    ] {
        let server = FakeServer::start(move |request| {
            if request.path == "/v2/" {
                http_response("200 OK", &[], b"{}")
            } else {
                http_response(
                    status,
                    &extra,
                    br#"{"errors":[{"code":"X","message":"nope"}]}"#,
                )
            }
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let stowage = Stowage::new(dir.path());
        let error = stowage.fails(&["pull", &format!("{}/test/app:1", server.host())]);
        for text in &expected {
            assert!(
                error.contains(text),
                "{status}: expected {text:?} in:\n{error}"
            );
        }
        stowage.assert_store_verifies();
    }
}

#[test]
fn a_reset_mid_blob_resumes_with_range() {
    let image = fake_image(|request, bytes| {
        match request.header("range") {
            None => {
                // Announce everything, send a third, drop the connection.
                let mut response = http_response(
                    "200 OK",
                    &[("Content-Length", bytes.len().to_string())],
                    &[],
                );
                response.extend_from_slice(&bytes[..bytes.len() / 3]);
                response
            }
            Some(range) => {
                let start: usize = range
                    .trim_start_matches("bytes=")
                    .trim_end_matches('-')
                    .parse()
                    .expect("range start");
                http_response(
                    "206 Partial Content",
                    &[(
                        "Content-Range",
                        format!("bytes {start}-{}/{}", bytes.len() - 1, bytes.len()),
                    )],
                    &bytes[start..],
                )
            }
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let stowage = Stowage::new(dir.path());
    stowage.ok(&["pull", &image.reference]);
    stowage.assert_store_verifies();
    assert!(
        image
            .server
            .seen()
            .iter()
            .any(|r| r.header("range").is_some()),
        "no Range request was made"
    );
}

#[test]
fn a_connection_that_always_resets_fails_cleanly() {
    let image = fake_image(|_, bytes| {
        let mut response = http_response(
            "200 OK",
            &[("Content-Length", bytes.len().to_string())],
            &[],
        );
        response.extend_from_slice(&bytes[..1000]);
        response
    });
    assert_pull_fails(&image, &["test/app"]);
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let image = fake_image(|_, bytes| {
        let mut wrong = bytes.to_vec();
        wrong[100] ^= 0xff;
        http_response("200 OK", &[], &wrong)
    });
    assert_pull_fails(&image, &["digest mismatch"]);
}

#[test]
fn a_registry_lying_about_the_size_is_refused() {
    let image = fake_image(|_, bytes| {
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"extra");
        http_response("200 OK", &[], &longer)
    });
    assert_pull_fails(&image, &["size mismatch"]);
}
