//! Image management end to end: `import`, `images`, `inspect`, `history`, `tag`, `rmi`,
//! `prune`, `system df`, `save` and `load`, against the real `stowage` binary, with
//! dockerd and skopeo as peers (interop both ways), and bad archives that must fail
//! cleanly: a clear error, no image added, and a store whose `verify()` is clean.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use stowage_digest::Digest;
use tar::{EntryType, Header};

use crate::support::cli::stowage;
use crate::support::docker::{docker_bin, docker_load, docker_rmi, docker_run, ensure_dockerd};

fn output_of(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run stowage: {e}"))
}

/// Runs stowage with `args` and returns stdout; panics (with stderr) on failure.
fn ok(root: &Path, args: &[&str]) -> String {
    let mut cmd = stowage(root);
    cmd.args(args);
    let out = output_of(cmd);
    assert!(
        out.status.success(),
        "stowage {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs stowage with `args`, which must fail; returns stderr.
fn fails(root: &Path, args: &[&str]) -> String {
    let mut cmd = stowage(root);
    cmd.args(args);
    let out = output_of(cmd);
    assert!(
        !out.status.success(),
        "stowage {args:?} should fail but printed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (it must be installed): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker(args: &[&str]) -> String {
    ensure_dockerd();
    tool(&docker_bin().to_string_lossy(), args)
}

fn header(kind: EntryType, name: &str, link: Option<&str>, mode: u32, size: u64) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    let ustar = h.as_ustar_mut().expect("ustar header");
    ustar.name = [0; 100];
    ustar.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(link) = link {
        ustar.linkname = [0; 100];
        ustar.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    h
}

/// A tar with raw names (tar-rs's helpers refuse `..`, which the bad-input tests need).
fn raw_tar(entries: &[(EntryType, &str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, name, link, data) in entries {
        let mode = 0o755;
        out.extend_from_slice(header(*kind, name, *link, mode, data.len() as u64).as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

/// A tiny busybox root filesystem: `bin/busybox` (the host's static busybox) and applet
/// symlinks.
fn busybox_rootfs() -> Vec<u8> {
    let busybox = fs::read("/bin/busybox")
        .expect("/bin/busybox must exist (Debian's busybox-static; see bench/setup.sh)");
    raw_tar(&[
        (EntryType::Directory, "bin/", None, b""),
        (EntryType::Regular, "bin/busybox", None, &busybox),
        (EntryType::Symlink, "bin/echo", Some("busybox"), b""),
        (EntryType::Symlink, "bin/sh", Some("busybox"), b""),
        (EntryType::Directory, "etc/", None, b""),
        (
            EntryType::Regular,
            "etc/motd",
            None,
            b"hello from stowage\n",
        ),
        (EntryType::Directory, "tmp/", None, b""),
    ])
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).expect("write test file");
    path
}

fn import_busybox(root: &Path, dir: &Path, reference: &str) -> (String, Vec<u8>) {
    let tarball = busybox_rootfs();
    let path = write_file(dir, "rootfs.tar", &tarball);
    let id = ok(root, &["import", path.to_str().expect("utf-8"), reference]);
    (id.trim().to_owned(), tarball)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn inspect(root: &Path, image: &str) -> Value {
    let text = ok(root, &["inspect", image]);
    let array: Value = serde_json::from_str(&text).expect("inspect prints JSON");
    array.get(0).cloned().expect("one object")
}

/// What `images --format json` shows, without the relative time (which changes as the
/// test runs).
fn image_state(root: &Path) -> Vec<Value> {
    json_lines(&ok(root, &["images", "--format", "json"]))
        .into_iter()
        .map(|mut line| {
            if let Some(object) = line.as_object_mut() {
                object.remove("CreatedSince");
            }
            line
        })
        .collect()
}

fn assert_store_clean(root: &Path) {
    let store = stowage_store::Store::open(root).expect("open store");
    let report = store.verify().expect("verify");
    assert!(report.is_ok(), "store problems: {:?}", report.problems);
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn import_shows_in_images_inspect_and_history() {
    let root = temp();
    let work = temp();
    let (id, tarball) = import_busybox(root.path(), work.path(), "test/bb:1");
    assert!(id.starts_with("sha256:"), "{id}");

    // gzip input and stdin input give the same layer.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tarball).expect("gzip");
    let gz_path = write_file(work.path(), "rootfs.tar.gz", &gz.finish().expect("gzip"));
    ok(
        root.path(),
        &["import", gz_path.to_str().expect("utf-8"), "test/bb:gz"],
    );
    let mut child = stowage(root.path())
        .args(["import", "-", "test/bb:stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn import");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&tarball)
        .expect("feed stdin");
    assert!(child.wait_with_output().expect("wait").status.success());

    let table = ok(root.path(), &["images"]);
    let header = table.lines().next().expect("header");
    for column in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("test/bb") && l.contains(" 1 ")),
        "{table}"
    );
    let lines = json_lines(&ok(
        root.path(),
        &["images", "--format", "json", "test/bb:1"],
    ));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["Repository"], "test/bb");
    assert_eq!(lines[0]["Tag"], "1");
    assert_eq!(lines[0]["Size"], tarball.len() as u64);
    assert!(
        lines[0]["CreatedAt"]
            .as_str()
            .expect("CreatedAt")
            .ends_with("UTC")
    );

    let image = inspect(root.path(), "test/bb:1");
    assert_eq!(image["Id"], id.as_str());
    assert_eq!(image["RepoTags"], serde_json::json!(["test/bb:1"]));
    let diff_id = Digest::of(&tarball).to_string();
    assert_eq!(image["RootFS"]["Layers"], serde_json::json!([diff_id]));
    assert_eq!(image["Os"], "linux");
    assert_eq!(image["Comment"], "Imported from -");
    let layer = &image["Stowage"]["Layers"][0];
    assert_eq!(layer["UncompressedSize"], tarball.len() as u64);
    assert!(layer["CompressedSize"].as_u64().expect("size") < tarball.len() as u64);
    for tag in ["test/bb:gz", "test/bb:stdin"] {
        assert_eq!(
            inspect(root.path(), tag)["RootFS"]["Layers"][0],
            diff_id.as_str()
        );
    }

    let history = ok(root.path(), &["history", "test/bb:1"]);
    assert!(history.contains("Imported from -"), "{history}");
    assert!(history.starts_with("IMAGE"), "{history}");
    let entries = json_lines(&ok(
        root.path(),
        &["history", "--format", "json", "test/bb:1"],
    ));
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["Size"], tarball.len() as u64);
    assert_store_clean(root.path());
}

#[test]
fn saved_image_loads_and_runs_in_docker() {
    let root = temp();
    let work = temp();
    let (id, _) = import_busybox(root.path(), work.path(), "stowage-test/saved:v1");
    ok(
        root.path(),
        &["tag", "stowage-test/saved:v1", "stowage-test/saved:v2"],
    );
    let archive = work.path().join("saved.tar");
    let archive_str = archive.to_str().expect("utf-8");
    ok(
        root.path(),
        &["save", "-o", archive_str, "stowage-test/saved"],
    );
    // Deterministic bytes.
    let again = work.path().join("again.tar");
    ok(
        root.path(),
        &[
            "save",
            "-o",
            again.to_str().expect("utf-8"),
            "stowage-test/saved",
        ],
    );
    assert_eq!(
        fs::read(&archive).expect("read"),
        fs::read(&again).expect("read")
    );
    // The archive gets the mode of any new file of the user's (0666 less the umask), as
    // `docker save -o` gives it, not a temp file's private 0600.
    let mode_of = |path: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(path).expect("stat").permissions())
            & 0o777
    };
    let user_file = work.path().join("made-by-the-user");
    fs::File::create(&user_file).expect("create");
    assert_eq!(
        format!("{:o}", mode_of(&archive)),
        format!("{:o}", mode_of(&user_file))
    );

    let loaded = docker_load(&archive);
    assert!(loaded.starts_with("stowage-test/saved:"), "{loaded}");
    let docker_id = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "stowage-test/saved:v1",
    ]);
    assert_eq!(docker_id.trim(), id, "docker keeps the image ID");
    let (code, stdout, stderr) = docker_run("stowage-test/saved:v1", &["/bin/sh", "-c", "echo ok"]);
    docker_rmi("stowage-test/saved:v1");
    docker_rmi("stowage-test/saved:v2");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "ok");
}

#[test]
fn docker_save_output_loads_with_the_same_config_and_layers() {
    let root = temp();
    let work = temp();
    let rootfs = write_file(work.path(), "rootfs.tar", &busybox_rootfs());
    let name = "stowage-test/from-docker:latest";
    docker(&[
        "import",
        "--change",
        "ENV FOO=bar",
        "--change",
        "CMD [\"/bin/sh\"]",
        "--change",
        "WORKDIR /tmp",
        rootfs.to_str().expect("utf-8"),
        name,
    ]);
    let archive = work.path().join("docker.tar");
    docker(&["save", "-o", archive.to_str().expect("utf-8"), name]);
    let expected: Value =
        serde_json::from_str(&docker(&["image", "inspect", name])).expect("docker inspect");
    docker_rmi(name);
    let expected = &expected[0];

    let printed = ok(
        root.path(),
        &["load", "-i", archive.to_str().expect("utf-8")],
    );
    assert_eq!(printed.trim(), format!("Loaded image: {name}"));
    let image = inspect(root.path(), name);
    assert_eq!(image["Id"], expected["Id"]);
    assert_eq!(image["RootFS"]["Layers"], expected["RootFS"]["Layers"]);
    for field in ["Env", "Cmd", "WorkingDir", "Entrypoint"] {
        assert_eq!(
            image["Config"][field], expected["Config"][field],
            "Config.{field}"
        );
    }
    assert_eq!(image["Architecture"], expected["Architecture"]);

    // The same archive through standard input: same image, nothing duplicated.
    let file = fs::File::open(&archive).expect("open");
    let out = stowage(root.path())
        .args(["load"])
        .stdin(file)
        .output()
        .expect("run load");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json_lines(&ok(root.path(), &["images", "--format", "json"])).len(),
        1
    );
    assert_store_clean(root.path());
}

#[test]
fn skopeo_reads_the_store_and_its_archives_load() {
    let root = temp();
    let work = temp();
    let (id, _) = import_busybox(root.path(), work.path(), "test/sk:1");
    let store_ref = format!("oci:{}:docker.io/test/sk:1", root.path().display());
    let inspected: Value =
        serde_json::from_str(&tool("skopeo", &["inspect", &store_ref])).expect("skopeo json");
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1));

    let docker_archive = work.path().join("skopeo-docker.tar");
    tool(
        "skopeo",
        &[
            "copy",
            &store_ref,
            &format!("docker-archive:{}:test/sk:copied", docker_archive.display()),
        ],
    );
    let oci_archive = work.path().join("skopeo-oci.tar");
    tool(
        "skopeo",
        &[
            "copy",
            &store_ref,
            &format!("oci-archive:{}:test/sk:oci", oci_archive.display()),
        ],
    );
    let fresh = temp();
    ok(
        fresh.path(),
        &["load", "-i", docker_archive.to_str().expect("utf-8")],
    );
    assert_eq!(inspect(fresh.path(), "test/sk:copied")["Id"], id.as_str());
    ok(
        fresh.path(),
        &["load", "-i", oci_archive.to_str().expect("utf-8")],
    );
    assert_eq!(inspect(fresh.path(), "test/sk:oci")["Id"], id.as_str());
    assert_store_clean(fresh.path());

    // stowage's own OCI archive: skopeo reads it, and it loads back.
    let ours = work.path().join("ours-oci.tar");
    ok(
        root.path(),
        &[
            "save",
            "--format",
            "oci",
            "-o",
            ours.to_str().expect("utf-8"),
            "test/sk:1",
        ],
    );
    let inspected: Value = serde_json::from_str(&tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci-archive:{}:docker.io/test/sk:1", ours.display()),
        ],
    ))
    .expect("skopeo json");
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1));
    let third = temp();
    let printed = ok(third.path(), &["load", "-i", ours.to_str().expect("utf-8")]);
    assert_eq!(printed.trim(), "Loaded image: test/sk:1");
    assert_eq!(inspect(third.path(), "test/sk:1")["Id"], id.as_str());
    assert_store_clean(third.path());
}

#[test]
fn tag_rmi_prune_and_df() {
    let root = temp();
    let work = temp();
    let (id, _) = import_busybox(root.path(), work.path(), "keep/a:1");
    ok(root.path(), &["tag", "keep/a:1", "keep/b:1"]);
    let ids = ok(root.path(), &["images", "-q"]);
    assert_eq!(ids.lines().count(), 1, "two tags, one image: {ids}");

    // By ID while two tags need it: refused without -f.
    let error = fails(root.path(), &["rmi", &id]);
    assert!(error.contains("must be forced"), "{error}");
    // Removing one tag only untags.
    let printed = ok(root.path(), &["rmi", "keep/a:1"]);
    assert_eq!(printed.trim(), "Untagged: keep/a:1");
    assert_eq!(inspect(root.path(), "keep/b:1")["Id"], id.as_str());

    let df = ok(root.path(), &["system", "df", "-v"]);
    assert!(
        df.contains("Images (compressed)") && df.contains("UNIQUE SIZE"),
        "{df}"
    );

    // A second image sharing nothing; -f deletes the first with its tag.
    ok(root.path(), &["tag", "keep/b:1", "keep/c:1"]);
    let printed = ok(root.path(), &["rmi", "-f", &id]);
    assert!(printed.contains("Untagged: keep/b:1"), "{printed}");
    assert!(printed.contains("Untagged: keep/c:1"), "{printed}");
    assert!(printed.contains(&format!("Deleted: {id}")), "{printed}");
    assert_eq!(ok(root.path(), &["images", "-q"]), "");
    let pruned = ok(root.path(), &["prune"]);
    assert!(pruned.contains("Total reclaimed space:"), "{pruned}");
    assert!(!pruned.contains("Total reclaimed space: 0B"), "{pruned}");
    let missing = fails(root.path(), &["rmi", "keep/b:1"]);
    assert!(missing.contains("No such image"), "{missing}");

    // prune -a needs --force when not interactive.
    import_busybox(root.path(), work.path(), "keep/d:1");
    fails(root.path(), &["prune", "-a"]);
    ok(root.path(), &["prune", "-a", "--force"]);
    assert_eq!(ok(root.path(), &["images", "-q"]), "");
    assert_store_clean(root.path());
}

/// A docker-archive built by hand: `<config hex>.json`, `<n>/layer.tar`, `manifest.json`.
struct HandArchive {
    config: Vec<u8>,
    config_name: Option<String>,
    layers: Vec<Vec<u8>>,
    manifest_layers: Option<Vec<String>>,
    repo_tags: Vec<String>,
}

impl HandArchive {
    fn new(layers: Vec<Vec<u8>>) -> Self {
        let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .expect("config json");
        Self {
            config,
            config_name: None,
            layers,
            manifest_layers: None,
            repo_tags: vec!["bad/image:1".to_owned()],
        }
    }

    fn build(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut add = |name: &str, data: &[u8]| {
            let mut h = Header::new_ustar();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_entry_type(EntryType::Regular);
            builder.append_data(&mut h, name, data).expect("append");
        };
        let config_name = self
            .config_name
            .clone()
            .unwrap_or_else(|| format!("{}.json", Digest::of(&self.config).hex()));
        add(&config_name, &self.config);
        let mut names = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let name = format!("{i}/layer.tar");
            add(&name, layer);
            names.push(name);
        }
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": self.repo_tags,
            "Layers": self.manifest_layers.clone().unwrap_or(names),
        }]);
        add(
            "manifest.json",
            &serde_json::to_vec(&manifest).expect("json"),
        );
        builder.into_inner().expect("finish")
    }
}

fn good_layer() -> Vec<u8> {
    raw_tar(&[
        (EntryType::Directory, "etc/", None, b""),
        (EntryType::Regular, "etc/hello", None, b"hi\n"),
    ])
}

#[test]
fn bad_archives_fail_cleanly() {
    let root = temp();
    let work = temp();
    import_busybox(root.path(), work.path(), "present/image:1");
    let before = image_state(root.path());

    // The hand-built archive is itself valid, so each case below fails for its own reason.
    let valid = write_file(
        work.path(),
        "valid.tar",
        &HandArchive::new(vec![good_layer()]).build(),
    );
    let check_root = temp();
    ok(
        check_root.path(),
        &["load", "-i", valid.to_str().expect("utf-8")],
    );
    assert_eq!(
        inspect(check_root.path(), "bad/image:1")["Config"]["Env"],
        serde_json::json!(["PATH=/bin"])
    );

    let saved = work.path().join("saved.tar");
    ok(
        root.path(),
        &[
            "save",
            "-o",
            saved.to_str().expect("utf-8"),
            "present/image:1",
        ],
    );
    let saved_bytes = fs::read(&saved).expect("read");

    let mut escaping_hardlink = HandArchive::new(vec![raw_tar(&[(
        EntryType::Link,
        "etc/shadow-copy",
        Some("/etc/shadow"),
        b"",
    )])]);
    escaping_hardlink.repo_tags = vec!["bad/image:hardlink".to_owned()];
    let mut missing_layer = HandArchive::new(vec![good_layer()]);
    missing_layer.manifest_layers = Some(vec!["nope/layer.tar".to_owned()]);
    let mut wrong_name = HandArchive::new(vec![good_layer()]);
    wrong_name.config_name = Some(format!("{}.json", "ab".repeat(32)));
    let mut bad_tag = HandArchive::new(vec![good_layer()]);
    bad_tag.repo_tags = vec!["Bad/UPPER::tag".to_owned()];
    let mut wrong_diff_id = HandArchive::new(vec![good_layer()]);
    wrong_diff_id.layers = vec![raw_tar(&[(EntryType::Regular, "other", None, b"x")])];

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            saved_bytes[..saved_bytes.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "garbage",
            b"this is not a tar archive at all".repeat(40),
            "archive",
        ),
        (
            "dotdot",
            HandArchive::new(vec![raw_tar(&[(
                EntryType::Regular,
                "../../etc/evil",
                None,
                b"x",
            )])])
            .build(),
            "\"../../etc/evil\": its path climbs out of the root",
        ),
        (
            "hardlink",
            escaping_hardlink.build(),
            "\"etc/shadow-copy\": hardlink target \"/etc/shadow\" is an absolute path",
        ),
        (
            "write-through-symlink",
            HandArchive::new(vec![raw_tar(&[
                (EntryType::Symlink, "evil", Some("/etc"), b""),
                (EntryType::Regular, "evil/passwd", None, b"x"),
            ])])
            .build(),
            "written through the symlink \"evil\"",
        ),
        (
            "device",
            HandArchive::new(vec![raw_tar(&[(EntryType::Char, "dev/kmsg", None, b"")])]).build(),
            "device nodes are not allowed",
        ),
        ("missing-layer", missing_layer.build(), "nope/layer.tar"),
        (
            "config-name-mismatch",
            wrong_name.build(),
            "content digest is",
        ),
        (
            "diff-id-mismatch",
            wrong_diff_id.build(),
            "but the image config lists",
        ),
        ("bad-tag", bad_tag.build(), "invalid reference"),
    ];
    let mut failures = Vec::new();
    for (name, bytes, expected) in &cases {
        let path = write_file(work.path(), &format!("{name}.tar"), bytes);
        let mut cmd = stowage(root.path());
        cmd.args(["load", "-i", path.to_str().expect("utf-8")]);
        let out = output_of(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            failures.push(format!("{name}: load succeeded"));
        } else if !stderr.contains(expected) {
            failures.push(format!("{name}: error lacks {expected:?}: {stderr}"));
        }
        let after = image_state(root.path());
        if after != before {
            failures.push(format!("{name}: images changed:\n{after:?}"));
        }
        let leftovers: Vec<_> = fs::read_dir(root.path().join("tmp"))
            .expect("tmp dir")
            .collect();
        if !leftovers.is_empty() {
            failures.push(format!("{name}: temp files left: {leftovers:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // A symlink pointing out of the root is legal on its own.
    let symlink_only = HandArchive::new(vec![raw_tar(&[(
        EntryType::Symlink,
        "etc-link",
        Some("/etc"),
        b"",
    )])]);
    let fresh = temp();
    let path = write_file(work.path(), "symlink.tar", &symlink_only.build());
    ok(fresh.path(), &["load", "-i", path.to_str().expect("utf-8")]);

    // Unparsable references.
    let rootfs = write_file(work.path(), "rootfs.tar", &busybox_rootfs());
    let error = fails(
        root.path(),
        &["import", rootfs.to_str().expect("utf-8"), "Bad::Ref"],
    );
    assert!(error.contains("invalid reference format"), "{error}");
    let error = fails(root.path(), &["tag", "present/image:1", "UPPERCASE:1"]);
    assert!(error.contains("invalid reference format"), "{error}");
    assert_eq!(image_state(root.path()), before);
    assert_store_clean(root.path());
}

/// `stowage build --progress plain` of a `FROM scratch` + `COPY data.bin /` context
/// whose data.bin holds `data`; returns stderr (the steps' outcomes).
fn build_copy_of(root: &Path, ctx: &Path, data: &[u8], tag: &str) -> String {
    fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY data.bin /\n").expect("write");
    fs::write(ctx.join("data.bin"), data).expect("write");
    let mut cmd = stowage(root);
    cmd.args(["build", "--progress", "plain", "--explain", "-t", tag])
        .arg(ctx);
    let out = output_of(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build {tag}: {stderr}");
    stderr
}

/// `prune --cache --keep-storage` drops the least recently used cache records
/// first (counting only layers no image holds), `prune --cache` drops them all,
/// and a dropped record is a cache miss on the next build.
#[test]
fn prune_cache_trims_least_recently_used_records_first() {
    let root = temp();
    let ctx = temp();
    let random = |len: usize| {
        let mut data = vec![0u8; len];
        let mut source = fs::File::open("/dev/urandom").expect("open /dev/urandom");
        std::io::Read::read_exact(&mut source, &mut data).expect("read /dev/urandom");
        data
    };
    // Two 1 MiB layers of incompressible data that only the cache holds once
    // their images are gone. Record times have one-second resolution.
    let older = random(1 << 20);
    let newer = random(1 << 20);
    build_copy_of(root.path(), ctx.path(), &older, "cache/older:1");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build_copy_of(root.path(), ctx.path(), &newer, "cache/newer:1");
    ok(root.path(), &["rmi", "cache/older:1", "cache/newer:1"]);
    let cached = |data: &[u8]| {
        let stderr = build_copy_of(root.path(), ctx.path(), data, "cache/probe:1");
        ok(root.path(), &["rmi", "cache/probe:1"]);
        stderr.contains("[stage-0 2/2] CACHED")
    };

    let pruned = ok(
        root.path(),
        &["prune", "--cache", "--keep-storage", "1.5MB"],
    );
    assert!(
        pruned.contains("Build cache: 1 record(s) removed, 1.0")
            && pruned.contains("MB of cached layers released"),
        "{pruned}"
    );
    assert!(cached(&newer), "the newer record was kept");
    assert!(!cached(&older), "the older record was dropped");

    // Both records exist again (the older one rebuilt just now); drop them all.
    let pruned = ok(root.path(), &["prune", "--cache"]);
    assert!(
        pruned.contains("Build cache: 2 record(s) removed"),
        "{pruned}"
    );
    assert!(!cached(&newer));
    assert_store_clean(root.path());
}
