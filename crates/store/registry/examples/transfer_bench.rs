//! Throughput benchmark: starts a local `docker-registry`, pushes and pulls one
//! large incompressible blob (default 500 MB, `STOWAGE_BENCH_MB` to change) as
//! the layer of a small image, reports MB/s, and times `skopeo copy` of the same
//! image to a `dir:` target for comparison.
//!
//! Run: `cargo run --release -p stowage-registry --example transfer_bench`

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Instant;

use stowage_digest::{Digest, HashingWriter};
use stowage_registry::manifest::OCI_MANIFEST;
use stowage_registry::{
    Anonymous, ClientOptions, FileSource, NoProgress, RegistryClient, Repository, TagOrDigest,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let megabytes: u64 = std::env::var("STOWAGE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let size = megabytes * 1_000_000;
    let registry = stowage_testkit::RegistryProcess::start_plain();
    let work = tempfile::tempdir()?;
    let blob_path = work.path().join("blob");

    // Incompressible content from a xorshift generator, hashed while written.
    let mut writer = HashingWriter::new(BufWriter::new(std::fs::File::create(&blob_path)?));
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    let mut remaining = size;
    while remaining > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = remaining.min(block.len() as u64) as usize;
        writer.write_all(&block[..n])?;
        remaining -= n as u64;
    }
    let (mut file, digest, _) = writer.finish();
    file.flush()?;
    drop(file);

    let client = RegistryClient::new(
        ClientOptions {
            docker_certs_dir: None,
            ..ClientOptions::default()
        },
        Arc::new(Anonymous),
    );
    let repo = Repository::new(registry.host(), "bench/big")?;
    let source = FileSource::new(&blob_path)?;

    let started = Instant::now();
    client.push_blob(&repo, &digest, &source, None, &NoProgress)?;
    let push_secs = started.elapsed().as_secs_f64();
    println!(
        "push {megabytes} MB: {push_secs:.2} s = {:.1} MB/s",
        megabytes as f64 / push_secs
    );

    let out_path = work.path().join("pulled");
    let started = Instant::now();
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&out_path)?);
    client.fetch_blob(&repo, &digest, Some(size), &mut out, &NoProgress)?;
    out.flush()?;
    drop(out);
    let pull_secs = started.elapsed().as_secs_f64();
    println!(
        "pull {megabytes} MB: {pull_secs:.2} s = {:.1} MB/s (digest verified)",
        megabytes as f64 / pull_secs
    );
    std::fs::remove_file(&out_path)?;

    // Make it an image so skopeo can copy it.
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{digest}"]}}}}"#
    );
    let config_digest = Digest::of(config.as_bytes());
    client.push_blob(
        &repo,
        &config_digest,
        &config.as_bytes().to_vec(),
        None,
        &NoProgress,
    )?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{digest}","size":{size}}}]}}"#,
        config.len()
    );
    client.put_manifest(
        &repo,
        &TagOrDigest::Tag("v1".into()),
        manifest.as_bytes(),
        OCI_MANIFEST,
    )?;
    let skopeo_dir = work.path().join("skopeo-out");
    let started = Instant::now();
    let status = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/bench/big:v1", registry.host()),
            &format!("dir:{}", skopeo_dir.display()),
        ])
        .stdout(std::process::Stdio::null())
        .status()?;
    let skopeo_secs = started.elapsed().as_secs_f64();
    if status.success() {
        println!(
            "skopeo copy (pull) {megabytes} MB: {skopeo_secs:.2} s = {:.1} MB/s",
            megabytes as f64 / skopeo_secs
        );
    } else {
        println!("skopeo copy failed: {status}");
    }
    Ok(())
}
