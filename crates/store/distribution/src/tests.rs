//! Pull and push against a real `docker-registry` (Debian's distribution
//! registry, started here on a free port; the tests fail if it is missing):
//! round trips in both manifest formats and compressions, HEAD skips, mounts
//! across repositories, platform selection through an index, `FROM`'s pull
//! policies, and resolving without downloading layers.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use stowage_digest::Digest;
use stowage_image::{
    Descriptor, ImageConfig, ImageIndex, LayerInfo, Platform, Reference, media_types,
};
use stowage_registry::{
    Anonymous, ClientOptions, RegistryClient, RegistryError, Repository, RetryPolicy, TagOrDigest,
};
use stowage_store::{ManifestFormat, Store};
use stowage_testkit::RegistryProcess;

use crate::{
    BlobOutcome, DistributionError, PullOptions, PullPolicy, PushOptions, Records, ensure_image,
    pull, push, resolve_remote,
};

/// A reference to `name` in `registry`.
fn reference(registry: &RegistryProcess, name: &str) -> Reference {
    Reference::parse_normalized(&format!("{}/{name}", registry.host())).expect("reference")
}

fn client() -> RegistryClient {
    RegistryClient::new(
        ClientOptions {
            docker_certs_dir: None,
            retry: RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(20),
                max_elapsed: Duration::from_secs(5),
            },
            ..ClientOptions::default()
        },
        Arc::new(Anonymous),
    )
}

/// A one-file layer tar.
fn layer_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(946_684_800);
    header.set_cksum();
    builder
        .append_data(&mut header, name, content)
        .expect("append");
    builder.into_inner().expect("tar")
}

#[derive(Clone, Copy)]
enum Compression {
    Gzip,
    Zstd,
}

/// Commits an image of `contents.len()` layers to `store` under `tag`.
fn make_image(
    store: &Store,
    tag: &str,
    contents: &[&[u8]],
    format: ManifestFormat,
    compression: Compression,
    platform: &Platform,
) -> stowage_store::CommittedImage {
    let mut layers = Vec::new();
    let mut config = ImageConfig::scratch(platform);
    for (i, content) in contents.iter().enumerate() {
        let tar = layer_tar(&format!("file{i}"), content);
        let (blob, media_type) = match compression {
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(&tar).expect("gzip");
                let media_type = match format {
                    ManifestFormat::Docker => media_types::DOCKER_LAYER_GZIP,
                    ManifestFormat::Oci => media_types::OCI_LAYER_GZIP,
                };
                (encoder.finish().expect("gzip"), media_type)
            }
            Compression::Zstd => (
                zstd::encode_all(tar.as_slice(), 3).expect("zstd"),
                media_types::OCI_LAYER_ZSTD,
            ),
        };
        let info = store.put_blob_bytes(&blob, None).expect("put layer");
        config.rootfs.diff_ids.push(Digest::of(&tar));
        layers.push(LayerInfo {
            diff_id: Digest::of(&tar),
            blob_digest: info.digest,
            media_type: media_type.to_owned(),
            compressed_size: info.size,
            uncompressed_size: Some(tar.len() as u64),
        });
    }
    store
        .commit_config(
            &config,
            layers,
            vec![Reference::parse_normalized(tag).expect("tag")],
            format,
        )
        .expect("commit")
}

fn amd64() -> Platform {
    Platform::new("linux", "amd64", None)
}

#[test]
fn push_then_pull_round_trips_both_formats_and_compressions() {
    let registry = RegistryProcess::start_plain();
    let client = client();
    for (name, format, compression) in [
        ("oci/zstd", ManifestFormat::Oci, Compression::Zstd),
        ("oci/gzip", ManifestFormat::Oci, Compression::Gzip),
        ("docker/gzip", ManifestFormat::Docker, Compression::Gzip),
    ] {
        let source_dir = tempfile::tempdir().expect("tempdir");
        let source = Store::open(source_dir.path()).expect("store");
        let committed = make_image(
            &source,
            "local/app:1",
            &[b"first layer", b"second layer", b"third"],
            format,
            compression,
            &amd64(),
        );
        let remote = reference(&registry, &format!("{name}:v1"));
        let pushed = push(
            &source,
            &client,
            "local/app:1",
            &remote,
            &PushOptions::default(),
        )
        .expect("push");
        assert_eq!(pushed.manifest_digest, committed.manifest_digest, "{name}");
        assert!(
            pushed
                .blobs
                .iter()
                .all(|(_, outcome)| *outcome == BlobOutcome::Uploaded),
            "{name}: {:?}",
            pushed.blobs
        );

        let target_dir = tempfile::tempdir().expect("tempdir");
        let target = Store::open(target_dir.path()).expect("store");
        let pulled = pull(&target, &client, &remote, &PullOptions::default()).expect("pull");
        assert_eq!(pulled.manifest_digest, committed.manifest_digest, "{name}");
        assert_eq!(pulled.id, committed.id, "{name}");
        assert_eq!(pulled.layers_downloaded, 3);
        assert!(!pulled.up_to_date);
        assert_eq!(
            pulled.repo_digest,
            format!("{}@{}", remote.name(), committed.manifest_digest)
        );
        let details = target.image(&remote.to_string()).expect("tagged");
        let original = source.image("local/app:1").expect("source image");
        assert_eq!(details.manifest_bytes, original.manifest_bytes);
        assert_eq!(details.config_bytes, original.config_bytes);
        assert!(target.verify().expect("verify").is_ok());
        assert_eq!(
            Records::open(&target)
                .expect("records")
                .repo_digests(&committed.manifest_digest)
                .expect("repo digests"),
            vec![pulled.repo_digest.clone()]
        );

        // Pulling again downloads nothing and says so.
        let again = pull(&target, &client, &remote, &PullOptions::default()).expect("pull again");
        assert!(again.up_to_date, "{name}");
        assert_eq!((again.layers_downloaded, again.bytes_downloaded), (0, 0));
    }
}

#[test]
fn pushes_skip_present_blobs_and_mount_across_repositories() {
    let registry = RegistryProcess::start_plain();
    let client = client();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    make_image(
        &store,
        "local/base",
        &[b"base layer one", b"base layer two"],
        ManifestFormat::Oci,
        Compression::Gzip,
        &amd64(),
    );
    let first = reference(&registry, "team/base:1");
    push(
        &store,
        &client,
        "local/base",
        &first,
        &PushOptions::default(),
    )
    .expect("push");

    // Same repository again: every blob is already there.
    let again = push(
        &store,
        &client,
        "local/base",
        &first,
        &PushOptions::default(),
    )
    .expect("push again");
    assert!(
        again
            .blobs
            .iter()
            .all(|(_, o)| *o == BlobOutcome::AlreadyInRegistry),
        "{:?}",
        again.blobs
    );

    // Another repository: mounted from the first.
    let second = reference(&registry, "team/app:1");
    let mounted = push(
        &store,
        &client,
        "local/base",
        &second,
        &PushOptions::default(),
    )
    .expect("push");
    assert!(
        mounted.blobs.iter().all(|(_, o)| *o
            == BlobOutcome::Mounted {
                from: "team/base".into()
            }),
        "{:?}",
        mounted.blobs
    );

    // Without mounts: uploaded.
    let third = reference(&registry, "team/other:1");
    let uploaded = push(
        &store,
        &client,
        "local/base",
        &third,
        &PushOptions {
            mount: false,
            ..PushOptions::default()
        },
    )
    .expect("push");
    assert!(
        uploaded
            .blobs
            .iter()
            .all(|(_, o)| *o == BlobOutcome::Uploaded),
        "{:?}",
        uploaded.blobs
    );

    // A stale record (the source repository does not exist) falls back to an upload.
    let records = Records::open(&store).expect("records");
    let layer = store.image("local/base").expect("image").layers[0].blob_digest;
    records
        .record_blobs(&registry.host(), "ghost/repo", &[layer])
        .expect("record");
    let fourth = reference(&registry, "team/fourth:1");
    push(
        &store,
        &client,
        "local/base",
        &fourth,
        &PushOptions::default(),
    )
    .expect("push with a stale mount record");
}

#[test]
fn pulls_the_requested_platform_through_an_index_and_finds_it_by_index_digest() {
    let registry = RegistryProcess::start_plain();
    let client = client();
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let arm = Platform::new("linux", "arm64", Some("v8"));
    let amd = make_image(
        &store,
        "local/multi:amd64",
        &[b"amd64 bits"],
        ManifestFormat::Oci,
        Compression::Gzip,
        &amd64(),
    );
    let arm_image = make_image(
        &store,
        "local/multi:arm64",
        &[b"arm64 bits"],
        ManifestFormat::Oci,
        Compression::Gzip,
        &arm,
    );
    let by_digest = |digest: Digest| reference(&registry, "multi").with_digest(digest);
    push(
        &store,
        &client,
        "local/multi:amd64",
        &by_digest(amd.manifest_digest),
        &PushOptions::default(),
    )
    .expect("push amd64");
    push(
        &store,
        &client,
        "local/multi:arm64",
        &by_digest(arm_image.manifest_digest),
        &PushOptions::default(),
    )
    .expect("push arm64");
    let entry = |committed: &stowage_store::CommittedImage, platform: &Platform| Descriptor {
        platform: Some(platform.clone()),
        ..Descriptor::new(
            media_types::OCI_MANIFEST,
            committed.manifest_digest,
            committed.manifest_size,
        )
    };
    let index = ImageIndex::oci(vec![entry(&amd, &amd64()), entry(&arm_image, &arm)]);
    let index_bytes = index.to_canonical_json().expect("index json");
    let repository = Repository::new(registry.host(), "multi").expect("repo");
    let index_digest = client
        .put_manifest(
            &repository,
            &TagOrDigest::Tag("latest".into()),
            &index_bytes,
            media_types::OCI_INDEX,
        )
        .expect("put index");

    // The planner's view: digests and config, no layer downloaded.
    let remote =
        resolve_remote(&client, &reference(&registry, "multi"), Some(&arm)).expect("resolve");
    assert_eq!(remote.repo_digest, index_digest);
    assert_eq!(remote.manifest_digest, arm_image.manifest_digest);
    assert_eq!(remote.id, arm_image.id);
    assert_eq!(remote.config.architecture, "arm64");

    let target_dir = tempfile::tempdir().expect("tempdir");
    let target = Store::open(target_dir.path()).expect("store");
    let pinned = reference(&registry, "multi").with_digest(index_digest);
    let pulled = pull(
        &target,
        &client,
        &pinned,
        &PullOptions {
            platform: Some(&arm),
            ..PullOptions::default()
        },
    )
    .expect("pull arm64");
    assert_eq!(pulled.manifest_digest, arm_image.manifest_digest);
    assert_eq!(pulled.index_digest, Some(index_digest));
    assert_eq!(
        pulled.repo_digest,
        format!("{}@{index_digest}", pinned.name())
    );
    // Pinned by digest: stored untagged.
    assert!(target.list_images().expect("list")[0].tags.is_empty());

    // FROM name@<index digest> finds the local image without the network.
    let dead = RegistryClient::new(
        ClientOptions {
            docker_certs_dir: None,
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            ..ClientOptions::default()
        },
        Arc::new(Anonymous),
    );
    drop(registry);
    let found = ensure_image(
        &target,
        &dead,
        &pinned,
        PullPolicy::Missing,
        &PullOptions::default(),
    )
    .expect("found locally");
    assert_eq!(found.manifest_digest, arm_image.manifest_digest);
    assert!(found.pulled.is_none());
    // --pull must ask the (now gone) registry.
    let error = ensure_image(
        &target,
        &dead,
        &pinned,
        PullPolicy::Always,
        &PullOptions::default(),
    )
    .expect_err("registry is down");
    assert!(
        matches!(
            error,
            DistributionError::Registry(RegistryError::Unreachable { .. })
        ),
        "{error:?}"
    );
}

#[test]
fn ensure_image_pulls_when_missing_and_only_then() {
    let registry = RegistryProcess::start_plain();
    let client = client();
    let source_dir = tempfile::tempdir().expect("tempdir");
    let source = Store::open(source_dir.path()).expect("store");
    make_image(
        &source,
        "local/base",
        &[b"a layer"],
        ManifestFormat::Docker,
        Compression::Gzip,
        &amd64(),
    );
    let remote = reference(&registry, "base:bookworm");
    push(
        &source,
        &client,
        "local/base",
        &remote,
        &PushOptions::default(),
    )
    .expect("push");

    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let first = ensure_image(
        &store,
        &client,
        &remote,
        PullPolicy::Missing,
        &PullOptions::default(),
    )
    .expect("pull on demand");
    assert!(first.pulled.is_some());
    let second = ensure_image(
        &store,
        &client,
        &remote,
        PullPolicy::Missing,
        &PullOptions::default(),
    )
    .expect("present");
    assert!(second.pulled.is_none());
    assert_eq!(second.id, first.id);
    let always = ensure_image(
        &store,
        &client,
        &remote,
        PullPolicy::Always,
        &PullOptions::default(),
    )
    .expect("--pull");
    assert!(always.pulled.as_ref().is_some_and(|p| p.up_to_date));

    let missing = reference(&registry, "base:nope");
    let error = pull(&store, &client, &missing, &PullOptions::default()).expect_err("404");
    assert!(
        matches!(
            error,
            DistributionError::Registry(RegistryError::ManifestUnknown { .. })
        ),
        "{error:?}"
    );
    assert!(store.verify().expect("verify").is_ok());
}
