//! The shared build cache through a registry (`--cache-to type=registry`,
//! `--cache-from`): separate store roots stand for separate machines, a
//! docker-registry started by the test stands for the shared registry.
//!
//! A step that must not run is a RUN that fails when it runs on the second
//! machine: it checks a `--secret` whose value (never part of a cache key)
//! is `run` on the first machine and `no` on the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use stowage_digest::Digest;

use crate::support::registry::{RegistryProcess, Stowage, describe, free_port};

const TIMESTAMP: &str = "1700000000";
/// The busybox root filesystem `scripts/services.sh` builds.
const BUSYBOX_TAR: &str = "/var/cache/stowage-test/busybox-rootfs.tar";

/// A two-stage Dockerfile: `builder` makes `/artifact`, the final stage
/// copies it and adds two layers of its own.
fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base} AS builder\n\
         RUN --mount=type=secret,id=gate [ \"$(cat /run/secrets/gate)\" = run ] && echo built > /artifact\n\
         FROM {base}\n\
         COPY --from=builder /artifact /copied\n\
         RUN --mount=type=secret,id=gate [ \"$(cat /run/secrets/gate)\" = run ] && echo hi > /x\n\
         COPY msg.txt /msg.txt\n"
    )
}

/// One test's world: a registry, a base image in it, a context.
struct World {
    registry: RegistryProcess,
    dir: tempfile::TempDir,
    context: PathBuf,
}

impl World {
    fn new() -> Self {
        let registry = RegistryProcess::start_plain();
        let dir = tempfile::tempdir().expect("tempdir");
        let base = format!("{}/regcache/busybox:1", registry.host());
        let seed = Stowage::new(&dir.path().join("seed"));
        assert!(
            Path::new(BUSYBOX_TAR).is_file(),
            "{BUSYBOX_TAR} is missing: run scripts/services.sh all"
        );
        seed.ok(&["import", BUSYBOX_TAR, &base]);
        seed.ok(&["push", "-q", &base]);
        let context = dir.path().join("context");
        std::fs::create_dir_all(&context).expect("mkdir context");
        std::fs::write(context.join("Dockerfile"), dockerfile(&base)).expect("Dockerfile");
        std::fs::write(context.join("msg.txt"), "hello\n").expect("msg.txt");
        for gate in ["run", "no"] {
            std::fs::write(dir.path().join(format!("gate-{gate}")), gate).expect("gate");
        }
        World {
            registry,
            dir,
            context,
        }
    }

    fn host(&self) -> String {
        self.registry.host()
    }

    /// A machine with an empty store.
    fn machine(&self, name: &str) -> Stowage {
        Stowage::new(&self.dir.path().join(name))
    }

    /// Builds on `machine` with the gate secret `gate`; returns (image ID, stderr).
    fn build(&self, machine: &Stowage, gate: &str, extra: &[&str]) -> (String, String) {
        let secret = format!(
            "id=gate,src={}",
            self.dir.path().join(format!("gate-{gate}")).display()
        );
        let iidfile = machine.root.with_extension("iid");
        let mut args = vec![
            "build",
            "--progress",
            "plain",
            "--timestamp",
            TIMESTAMP,
            "--secret",
            &secret,
            "--iidfile",
            iidfile.to_str().expect("utf8"),
        ];
        args.extend_from_slice(extra);
        args.push(self.context.to_str().expect("utf8"));
        let out = machine.run(&args);
        assert!(
            out.status.success(),
            "build {args:?} failed:\n{}",
            describe(&out)
        );
        let id = std::fs::read_to_string(&iidfile).expect("iidfile");
        (id, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// The file of a blob in the registry's storage.
    fn registry_blob(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.registry
            .dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(&hex)
            .join("data")
    }
}

/// `(instruction, final status)` of every RUN/COPY step, from plain progress
/// (`[stage n/m] TEXT` when a step starts, `[stage n/m] STATUS` when it ends).
fn layer_steps(stderr: &str) -> Vec<(String, String)> {
    let mut steps: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut order = Vec::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((label, text)) = rest.split_once("] ") else {
            continue;
        };
        match steps.get_mut(label) {
            Some(entry) => entry.1 = text.to_owned(),
            None => {
                order.push(label.to_owned());
                steps.insert(label.to_owned(), (text.to_owned(), String::new()));
            }
        }
    }
    order
        .into_iter()
        .filter_map(|label| steps.remove(&label))
        .filter(|(text, _)| text.starts_with("RUN") || text.starts_with("COPY"))
        .collect()
}

fn status_of<'a>(steps: &'a [(String, String)], needle: &str) -> &'a str {
    steps
        .iter()
        .find(|(text, _)| text.contains(needle))
        .map(|(_, status)| status.as_str())
        .unwrap_or_else(|| panic!("no step containing {needle:?} in {steps:?}"))
}

fn blobs_of(machine: &Stowage, image: &str) -> Vec<Digest> {
    machine
        .store()
        .image(image)
        .expect("image")
        .layers
        .iter()
        .map(|l| l.blob_digest)
        .collect()
}

#[test]
fn a_registry_cache_lets_another_machine_build_without_running_a_step() {
    let world = World::new();
    let host = world.host();
    let cache_max = format!("{host}/regcache/cache:max");
    let cache_min = format!("{host}/regcache/cache:min");
    let app = format!("{host}/regcache/app:1");

    // Machine A builds everything and exports both cache modes, and the image.
    let a = world.machine("a");
    let (id_a, stderr) = world.build(
        &a,
        "run",
        &[
            "-t",
            &app,
            "--push",
            "--cache-to",
            &format!("type=registry,ref={cache_max},mode=max"),
            "--cache-to",
            &format!("type=registry,ref={cache_min}"),
        ],
    );
    let steps = layer_steps(&stderr);
    assert_eq!(steps.len(), 4, "{stderr}");
    assert!(
        steps.iter().all(|(_, s)| s.starts_with("DONE")),
        "{steps:?}"
    );
    assert!(
        stderr.contains(&format!("exported 4 cache entries to {cache_max}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("exported 3 cache entries to {cache_min}")),
        "{stderr}"
    );
    let final_blobs = blobs_of(&a, &app);
    // Layers: busybox, /copied, /x, /msg.txt.
    assert_eq!(final_blobs.len(), 4);

    // The cache manifest lists every blob of the builder stage too (mode=max).
    let manifest = std::process::Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{host}/v2/regcache/cache/manifests/max"),
        ])
        .output()
        .expect("curl");
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest.stdout).expect("cache manifest JSON");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.stowage.cache.config.v1+json"
    );
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(4));

    // Machine B, empty, with the max cache: no step runs (each would fail,
    // its gate says no), and the image is the same.
    let b = world.machine("b");
    let (id_b, stderr) = world.build(
        &b,
        "no",
        &["--cache-from", &format!("type=registry,ref={cache_max}")],
    );
    let steps = layer_steps(&stderr);
    assert_eq!(steps.len(), 4, "{stderr}");
    assert!(
        steps.iter().all(|(_, s)| s == "CACHED"),
        "{steps:?}\n{stderr}"
    );
    assert_eq!(id_b, id_a);
    b.assert_store_verifies();

    // Machine C with the min cache: the builder's RUN is not in it and runs;
    // the final stage's steps are hits.
    let c = world.machine("c");
    let (id_c, stderr) = world.build(
        &c,
        "run",
        &["--cache-from", &format!("type=registry,ref={cache_min}")],
    );
    let steps = layer_steps(&stderr);
    assert!(
        status_of(&steps, "echo built").starts_with("DONE"),
        "{steps:?}"
    );
    assert_eq!(status_of(&steps, "COPY --from=builder"), "CACHED");
    assert_eq!(status_of(&steps, "echo hi"), "CACHED");
    assert_eq!(status_of(&steps, "COPY msg.txt"), "CACHED");
    assert_eq!(id_c, id_a);

    // Machine D builds only the builder stage from the max cache: the hit's
    // layer is downloaded, the final stage's layers (never hit) are not.
    let d = world.machine("d");
    let (_, stderr) = world.build(
        &d,
        "no",
        &[
            "--target",
            "builder",
            "--cache-from",
            &format!("type=registry,ref={cache_max}"),
        ],
    );
    assert_eq!(status_of(&layer_steps(&stderr), "echo built"), "CACHED");
    let store_d = d.store();
    assert!(store_d.has_blob(&final_blobs[0]), "the base was pulled");
    for blob in &final_blobs[1..] {
        assert!(
            !store_d.has_blob(blob),
            "blob {blob} of a step D never took was downloaded"
        );
    }

    // Machine E takes the pushed image as its cache (plain form): the final
    // stage's steps are hits, the builder's RUN (not in the image) runs.
    let e = world.machine("e");
    let (id_e, stderr) = world.build(&e, "run", &["--cache-from", &app]);
    let steps = layer_steps(&stderr);
    assert!(
        status_of(&steps, "echo built").starts_with("DONE"),
        "{steps:?}"
    );
    assert_eq!(status_of(&steps, "echo hi"), "CACHED", "{stderr}");
    assert_eq!(status_of(&steps, "COPY msg.txt"), "CACHED");
    assert_eq!(id_e, id_a);
    assert!(
        e.store().image(&app).is_err(),
        "the cache source image was pulled as a whole"
    );

    // Machine F has the image locally (pulled): the plain form uses it as is.
    let f = world.machine("f");
    f.ok(&["pull", "-q", &app]);
    let (id_f, stderr) = world.build(&f, "run", &["--cache-from", &app]);
    let steps = layer_steps(&stderr);
    assert!(
        status_of(&steps, "echo built").starts_with("DONE"),
        "{steps:?}"
    );
    assert_eq!(status_of(&steps, "COPY --from=builder"), "CACHED");
    assert_eq!(status_of(&steps, "echo hi"), "CACHED", "{stderr}");
    assert_eq!(id_f, id_a);
}

#[test]
fn a_cache_source_that_is_down_or_damaged_only_costs_rebuilds() {
    let world = World::new();
    let host = world.host();
    let cache = format!("{host}/regcache/cache:max");
    let app = format!("{host}/regcache/app:2");
    let a = world.machine("a");
    let (id_a, _) = world.build(
        &a,
        "run",
        &[
            "-t",
            &app,
            "--cache-to",
            &format!("type=registry,ref={cache},mode=max"),
        ],
    );

    // A registry that is down: a warning, and the build runs every step.
    let b = world.machine("b");
    let down = format!(
        "type=registry,ref=127.0.0.1:{}/nothing/here:v1",
        free_port()
    );
    let (id_b, stderr) = world.build(&b, "run", &["--cache-from", &down]);
    assert!(stderr.contains("warning: --cache-from"), "{stderr}");
    assert!(
        layer_steps(&stderr)
            .iter()
            .all(|(_, s)| s.starts_with("DONE")),
        "{stderr}"
    );
    assert_eq!(id_b, id_a);

    // The layer blob of `echo hi` damaged in the registry (same size): that
    // hit is refused and the step (and the one after it) is built again;
    // the other hits are taken, and the store holds no damaged blob.
    let run_layer = blobs_of(&a, &app)[2];
    let path = world.registry_blob(&run_layer);
    let mut bytes = std::fs::read(&path).expect("registry blob");
    for byte in bytes.iter_mut().skip(10).take(20) {
        *byte ^= 0x5a;
    }
    std::fs::write(&path, &bytes).expect("damage blob");
    let c = world.machine("c");
    let (id_c, stderr) = world.build(
        &c,
        "run",
        &["--cache-from", &format!("type=registry,ref={cache}")],
    );
    let steps = layer_steps(&stderr);
    assert_eq!(status_of(&steps, "echo built"), "CACHED", "{stderr}");
    assert_eq!(status_of(&steps, "COPY --from=builder"), "CACHED");
    assert!(status_of(&steps, "echo hi").starts_with("DONE"), "{stderr}");
    assert!(status_of(&steps, "COPY msg.txt").starts_with("DONE"));
    assert!(
        stderr.contains(&format!("cannot use layer {run_layer}")),
        "{stderr}"
    );
    assert_eq!(id_c, id_a);
    c.assert_store_verifies();
}

#[test]
fn bad_cache_flags_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let machine = Stowage::new(dir.path());
    let context: &Path = dir.path();
    std::fs::write(context.join("Dockerfile"), "FROM scratch\n").expect("Dockerfile");
    let ctx = context.to_str().expect("utf8");
    let stderr = machine.fails(&["build", "--cache-to", "type=local,dest=/tmp/x", ctx]);
    assert!(stderr.contains("type=local is not supported"), "{stderr}");
    let stderr = machine.fails(&["build", "--cache-to", "type=registry,ref=r/c,mode=all", ctx]);
    assert!(
        stderr.contains("mode=all is neither min nor max"),
        "{stderr}"
    );
    let stderr = machine.fails(&["build", "--cache-from", "type=registry,reff=r/c", ctx]);
    assert!(stderr.contains("needs ref="), "{stderr}");
}
