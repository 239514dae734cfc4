//! End-to-end tests against real `docker-registry` processes (plain HTTP, and
//! htpasswd + TLS under a test CA), plus interop with `skopeo`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::manifest::{OCI_INDEX, OCI_MANIFEST};
use crate::{
    Anonymous, ClientOptions, Credential, CredentialProvider, DockerConfig, FileSource, NoProgress,
    Platform, PushOutcome, RegistryClient, RegistryError, Repository, RetryPolicy,
    StaticCredentials, TagOrDigest,
};
use stowage_digest::Digest;
use stowage_testkit::RegistryProcess;

fn fast_options() -> ClientOptions {
    ClientOptions {
        docker_certs_dir: None,
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
            max_elapsed: Duration::from_secs(10),
        },
        ..ClientOptions::default()
    }
}

fn anonymous_client() -> RegistryClient {
    RegistryClient::new(fast_options(), Arc::new(Anonymous))
}

fn repo(registry: &str, name: &str) -> Repository {
    Repository::new(registry, name).expect("valid repository")
}

struct TestImage {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

/// A tiny valid image: an empty tar layer and a config for `os/arch`.
fn test_image(arch: &str, marker: &str) -> TestImage {
    let mut layer = vec![0u8; 1024]; // an empty tar archive
    layer.extend_from_slice(marker.as_bytes());
    layer.resize(2048, 0);
    let diff_id = Digest::of(&layer);
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["MARKER={marker}"]}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"history":[{{"created_by":"test"}}]}}"#
    )
    .into_bytes();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        Digest::of(&config),
        config.len(),
        Digest::of(&layer),
        layer.len()
    )
    .into_bytes();
    TestImage {
        config,
        layer,
        manifest,
    }
}

fn push_image(
    client: &RegistryClient,
    target: &Repository,
    tag: &str,
    image: &TestImage,
) -> Digest {
    for blob in [&image.config, &image.layer] {
        client
            .push_blob(target, &Digest::of(blob), blob, None, &NoProgress)
            .expect("push blob");
    }
    client
        .put_manifest(
            target,
            &TagOrDigest::Tag(tag.into()),
            &image.manifest,
            OCI_MANIFEST,
        )
        .expect("put manifest")
}

fn fetch_to_vec(client: &RegistryClient, target: &Repository, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    client
        .fetch_blob(
            target,
            &Digest::of(blob),
            Some(blob.len() as u64),
            &mut out,
            &NoProgress,
        )
        .expect("fetch blob");
    out
}

#[test]
fn push_then_pull_roundtrip_with_head_skip() {
    let registry = RegistryProcess::start_plain();
    let client = anonymous_client();
    let target = repo(&registry.host(), "team/app");
    let image = test_image("amd64", "roundtrip");
    let layer_digest = Digest::of(&image.layer);
    assert!(!client.blob_exists(&target, &layer_digest).expect("head"));

    let pushed = push_image(&client, &target, "v1", &image);
    assert_eq!(pushed, Digest::of(&image.manifest));
    assert!(client.blob_exists(&target, &layer_digest).expect("head"));

    // Second push of the same blob is skipped after HEAD, and reports full progress.
    let last = AtomicU64::new(0);
    let progress = |_: &Digest, done: u64, _: Option<u64>| last.store(done, Ordering::SeqCst);
    let outcome = client
        .push_blob(&target, &layer_digest, &image.layer, None, &progress)
        .expect("push again");
    assert_eq!(outcome, PushOutcome::AlreadyExists);
    assert_eq!(last.load(Ordering::SeqCst), image.layer.len() as u64);

    let by_tag = client
        .get_manifest(&target, &TagOrDigest::Tag("v1".into()))
        .expect("get by tag");
    assert_eq!(by_tag.bytes, image.manifest);
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    assert_eq!(by_tag.digest, pushed);
    let by_digest = client
        .get_manifest(&target, &TagOrDigest::Digest(pushed))
        .expect("get by digest");
    assert_eq!(by_digest.bytes, image.manifest);

    let head = client
        .head_manifest(&target, &TagOrDigest::Tag("v1".into()))
        .expect("head")
        .expect("exists");
    assert_eq!(head.digest, Some(pushed));
    assert_eq!(head.size, Some(image.manifest.len() as u64));
    assert_eq!(
        client
            .head_manifest(&target, &TagOrDigest::Tag("nope".into()))
            .expect("head"),
        None
    );

    assert_eq!(fetch_to_vec(&client, &target, &image.layer), image.layer);
    assert_eq!(fetch_to_vec(&client, &target, &image.config), image.config);
}

#[test]
fn upload_from_file_monolithic_and_chunked() {
    let registry = RegistryProcess::start_plain();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("blob");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).expect("write blob");
    let digest = Digest::of(&content);
    let source = FileSource::new(&path).expect("source");
    for (name, chunk_size) in [("mono", None), ("chunked", Some(1_000_000u64))] {
        let client = RegistryClient::new(
            ClientOptions {
                chunk_size,
                ..fast_options()
            },
            Arc::new(Anonymous),
        );
        let target = repo(&registry.host(), name);
        let peak = AtomicU64::new(0);
        let progress = |_: &Digest, done: u64, total: Option<u64>| {
            assert_eq!(total, Some(content.len() as u64));
            peak.fetch_max(done, Ordering::SeqCst);
        };
        let outcome = client
            .push_blob(&target, &digest, &source, None, &progress)
            .expect("upload");
        assert_eq!(outcome, PushOutcome::Uploaded, "{name}");
        assert_eq!(peak.load(Ordering::SeqCst), content.len() as u64, "{name}");
        let out_path = dir.path().join(format!("{name}.out"));
        let mut file = std::fs::File::create(&out_path).expect("create");
        let written = client
            .fetch_blob(
                &target,
                &digest,
                Some(content.len() as u64),
                &mut file,
                &NoProgress,
            )
            .expect("fetch");
        assert_eq!(written, content.len() as u64);
        assert_eq!(std::fs::read(&out_path).expect("read"), content, "{name}");
    }
}

#[test]
fn upload_with_wrong_digest_is_reported_as_digest_mismatch() {
    let registry = RegistryProcess::start_plain();
    let client = anonymous_client();
    let target = repo(&registry.host(), "bad");
    let claimed = Digest::of(b"something else");
    let err = client
        .push_blob(
            &target,
            &claimed,
            &b"actual content".to_vec(),
            None,
            &NoProgress,
        )
        .expect_err("registry must refuse");
    assert!(
        matches!(err, RegistryError::DigestMismatch { expected, .. } if expected == claimed),
        "{err}"
    );
}

#[test]
fn cross_repository_mount_and_fallback_on_202() {
    let registry = RegistryProcess::start_plain();
    let client = anonymous_client();
    let source_repo = repo(&registry.host(), "base/image");
    let target = repo(&registry.host(), "team/derived");
    let blob = b"shared layer bytes".to_vec();
    let digest = Digest::of(&blob);
    client
        .push_blob(&source_repo, &digest, &blob, None, &NoProgress)
        .expect("push source");
    let outcome = client
        .push_blob(&target, &digest, &blob, Some("base/image"), &NoProgress)
        .expect("mount");
    assert_eq!(outcome, PushOutcome::Mounted);
    assert_eq!(fetch_to_vec(&client, &target, &blob), blob);

    // Mounting from a repository that lacks the blob: 202 + session, then upload.
    let fresh = b"not anywhere yet".to_vec();
    let other = repo(&registry.host(), "team/other");
    let outcome = client
        .push_blob(
            &other,
            &Digest::of(&fresh),
            &fresh,
            Some("base/image"),
            &NoProgress,
        )
        .expect("fallback upload");
    assert_eq!(outcome, PushOutcome::Uploaded);
    assert_eq!(fetch_to_vec(&client, &other, &fresh), fresh);
}

#[test]
fn missing_manifest_and_blob_are_typed_404s() {
    let registry = RegistryProcess::start_plain();
    let client = anonymous_client();
    let target = repo(&registry.host(), "empty/repo");
    let err = client
        .get_manifest(&target, &TagOrDigest::Tag("latest".into()))
        .expect_err("no manifest");
    match &err {
        RegistryError::ManifestUnknown { reference, .. } => {
            assert!(reference.contains("empty/repo:latest"), "{err}")
        }
        other => panic!("expected ManifestUnknown, got {other:?}"),
    }
    let digest = Digest::of(b"missing");
    let err = client
        .fetch_blob(&target, &digest, None, &mut Vec::new(), &NoProgress)
        .expect_err("no blob");
    assert!(
        matches!(&err, RegistryError::BlobUnknown { digest: d, .. } if *d == digest),
        "{err:?}"
    );
}

#[test]
fn manifest_list_platform_selection() {
    let registry = RegistryProcess::start_plain();
    let client = anonymous_client();
    let target = repo(&registry.host(), "multi");
    let amd = test_image("amd64", "amd");
    let arm = test_image("arm64", "arm");
    let amd_digest = push_image(&client, &target, "amd", &amd);
    let arm_digest = push_image(&client, &target, "arm", &arm);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{amd_digest}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{arm_digest}","size":{},"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
        amd.manifest.len(),
        arm.manifest.len()
    );
    let index_digest = client
        .put_manifest(
            &target,
            &TagOrDigest::Tag("latest".into()),
            index.as_bytes(),
            OCI_INDEX,
        )
        .expect("put index");
    let latest = TagOrDigest::Tag("latest".into());
    let resolved = client
        .get_manifest_for_platform(
            &target,
            &latest,
            &"linux/arm64/v8".parse::<Platform>().expect("p"),
        )
        .expect("arm64");
    assert_eq!(resolved.manifest.digest, arm_digest);
    assert_eq!(
        resolved.index.as_ref().map(|i| i.digest),
        Some(index_digest)
    );
    let resolved = client
        .get_manifest_for_platform(
            &target,
            &latest,
            &"linux/amd64".parse::<Platform>().expect("p"),
        )
        .expect("amd64");
    assert_eq!(resolved.manifest.bytes, amd.manifest);
    let err = client
        .get_manifest_for_platform(
            &target,
            &latest,
            &"linux/s390x".parse::<Platform>().expect("p"),
        )
        .expect_err("absent platform");
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{err}"
    );
    // A plain manifest passes through platform selection untouched.
    let single = client
        .get_manifest_for_platform(
            &target,
            &TagOrDigest::Tag("amd".into()),
            &Platform::native(),
        )
        .expect("single");
    assert!(single.index.is_none());
}

fn secure_options(ca: &Path) -> ClientOptions {
    ClientOptions {
        extra_ca_files: vec![ca.to_path_buf()],
        ..fast_options()
    }
}

fn static_creds(registry: &str, username: &str, password: &str) -> Arc<StaticCredentials> {
    let mut map = BTreeMap::new();
    map.insert(
        registry.to_owned(),
        Credential::UsernamePassword {
            username: username.into(),
            password: password.into(),
        },
    );
    Arc::new(StaticCredentials(map))
}

fn secure_client(
    registry: &RegistryProcess,
    credentials: Arc<dyn CredentialProvider>,
) -> RegistryClient {
    let ca = registry.ca_file.clone().expect("ca");
    RegistryClient::new(
        ClientOptions {
            tls_loopback_registries: vec![registry.host()],
            ..secure_options(&ca)
        },
        credentials,
    )
}

#[test]
fn tls_and_basic_auth_success_and_failures() {
    let registry = RegistryProcess::start_secure("alice", "s3cret");
    let name = registry.host();
    let target = repo(&name, "private/app");
    let image = test_image("amd64", "secure");

    let good = secure_client(&registry, static_creds(&name, "alice", "s3cret"));
    assert!(good.base_url(&name).expect("url").starts_with("https://"));
    let pushed = push_image(&good, &target, "v1", &image);
    let fetched = good
        .get_manifest(&target, &TagOrDigest::Digest(pushed))
        .expect("pull by digest");
    assert_eq!(fetched.bytes, image.manifest);
    assert_eq!(fetch_to_vec(&good, &target, &image.layer), image.layer);

    let wrong = secure_client(&registry, static_creds(&name, "alice", "wrong"));
    let err = wrong
        .get_manifest(&target, &TagOrDigest::Tag("v1".into()))
        .expect_err("wrong password");
    match &err {
        RegistryError::Unauthorized {
            registry: r,
            had_credentials: true,
            ..
        } => assert_eq!(r, &name),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert!(err.to_string().contains("stowage login"), "{err}");

    let anonymous = secure_client(&registry, Arc::new(Anonymous));
    let err = anonymous
        .blob_exists(&target, &Digest::of(&image.layer))
        .expect_err("no credentials");
    assert!(
        matches!(
            err,
            RegistryError::Unauthorized {
                had_credentials: false,
                ..
            }
        ),
        "{err:?}"
    );

    // Without the CA the certificate is rejected...
    let untrusting = RegistryClient::new(
        ClientOptions {
            tls_loopback_registries: vec![name.clone()],
            ..fast_options()
        },
        static_creds(&name, "alice", "s3cret"),
    );
    let err = untrusting
        .blob_exists(&target, &Digest::of(&image.layer))
        .expect_err("unknown CA");
    assert!(matches!(err, RegistryError::Tls { .. }), "{err:?}");
    // ...unless the registry is listed as insecure.
    let insecure = RegistryClient::new(
        ClientOptions {
            insecure_registries: vec![name.clone()],
            ..fast_options()
        },
        static_creds(&name, "alice", "s3cret"),
    );
    assert!(
        insecure
            .blob_exists(&target, &Digest::of(&image.layer))
            .expect("insecure HTTPS")
    );
    assert!(
        insecure
            .base_url(&name)
            .expect("url")
            .starts_with("https://")
    );
}

#[test]
fn login_verifies_then_stores_and_credential_helper_is_used() {
    let registry = RegistryProcess::start_secure("bob", "hunter2");
    let name = registry.host();
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("docker").join("config.json");
    let config = DockerConfig::at(&config_path);
    let verifier = secure_client(&registry, Arc::new(Anonymous));

    let err = crate::login(&verifier, &config, &name, "bob", "bad").expect_err("bad password");
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert!(!config_path.exists(), "nothing stored on failure");

    crate::login(&verifier, &config, &name, "bob", "hunter2").expect("login");
    let from_file = secure_client(&registry, Arc::new(config.clone()));
    let target = repo(&name, "logged/in");
    let blob = b"via config.json".to_vec();
    from_file
        .push_blob(&target, &Digest::of(&blob), &blob, None, &NoProgress)
        .expect("push with stored credentials");
    assert!(crate::logout(&config, &name).expect("logout"));

    // A credential helper found through an explicit search path (PATH untouched).
    let helper_dir = dir.path().join("bin");
    std::fs::create_dir_all(&helper_dir).expect("mkdir");
    let helper = helper_dir.join("docker-credential-test");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread -r server\nif [ \"$1\" = get ] && [ \"$server\" = \"{name}\" ]; then\n  echo '{{\"ServerURL\":\"{name}\",\"Username\":\"bob\",\"Secret\":\"hunter2\"}}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
        ),
    )
    .expect("write helper");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let helper_config_path = dir.path().join("helper-config.json");
    std::fs::write(
        &helper_config_path,
        format!(r#"{{"credHelpers":{{"{name}":"test"}}}}"#),
    )
    .expect("write config");
    let helper_config =
        DockerConfig::at(&helper_config_path).with_helper_search_path(helper_dir.as_os_str());
    let via_helper = secure_client(&registry, Arc::new(helper_config));
    assert!(
        via_helper
            .blob_exists(&target, &Digest::of(&blob))
            .expect("helper credentials work")
    );
}

#[test]
fn skopeo_can_inspect_what_we_pushed() {
    let skopeo = Path::new("/usr/bin/skopeo");
    assert!(
        skopeo.exists(),
        "/usr/bin/skopeo is missing: install skopeo (tests must not skip)"
    );
    let registry = RegistryProcess::start_plain();
    let client = anonymous_client();
    let target = repo(&registry.host(), "interop/small");
    let image = test_image("amd64", "skopeo");
    let digest = push_image(&client, &target, "v1", &image);
    let output = std::process::Command::new(skopeo)
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/interop/small:v1", registry.host()),
        ])
        .output()
        .expect("run skopeo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "skopeo failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(&digest.to_string()), "{stdout}");
    assert!(stdout.contains("MARKER=skopeo"), "{stdout}");
}
