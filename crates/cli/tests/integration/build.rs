//! `stowage build` and `stowage run` end to end (issue 4): layers and history
//! as the seed describes them, RUN and COPY/ADD semantics, differential builds
//! against Docker's classic builder, the seed's scenario on a Debian base,
//! errors on bad input, and an interrupted build.
//!
//! Every test drives the real binary with its own `--root`, and reads what the
//! build left in the store with the store crate: the image config and the
//! layer blobs, applied in order with their `.wh.` whiteouts into a flattened
//! listing.
//!
//! Tests that need root, dockerd or the cached rootfs tarballs fail loudly
//! when those are missing (`scripts/services.sh all` sets them up).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stowage_image::LayerInfo;
use stowage_store::Store;

use crate::support::cli::{Ran, require_root, run, stowage};
use crate::support::docker::{
    BUSYBOX_IMAGE, DOCKER_EXPORT_EXTRAS, FsEntry, FsKind, diff_listings, docker_build_classic,
    docker_config, docker_fs_listing, docker_inspect, docker_load, docker_rmi, docker_run,
    ensure_docker_base, normalize_tar_path, services_script,
};
use crate::support::seed::{pip_trusted_hosts, seed_dockerfiles};

const BUSYBOX_TAR: &str = "/var/cache/stowage-test/busybox-rootfs.tar";
const DEBIAN_TAR: &str = "/var/cache/stowage-test/debian-bookworm-minbase.tar";
/// The busybox base stowage's tests build `FROM`: the same files as
/// [`BUSYBOX_IMAGE`] in dockerd (both come from [`BUSYBOX_TAR`]).
const BASE: &str = "localhost/busybox:latest";

// ------------------------------------------------------------------ helpers

fn ensure_rootfs_tars() {
    if Path::new(BUSYBOX_TAR).exists() && Path::new(DEBIAN_TAR).exists() {
        return;
    }
    let out = Command::new("bash")
        .arg(services_script())
        .arg("base-rootfs")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/services.sh base-rootfs");
    assert!(
        out.status.success() && Path::new(BUSYBOX_TAR).exists(),
        "scripts/services.sh base-rootfs failed; the rootfs tarballs are missing:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `files` (path, content) under `dir`, making parents.
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&full, content).expect("write file");
    }
}

/// A test's store root and build context.
struct Env {
    root: tempfile::TempDir,
    ctx: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        require_root();
        Self {
            root: tempfile::tempdir().expect("tempdir"),
            ctx: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A store that already holds [`BASE`].
    fn with_base() -> Self {
        let env = Self::new();
        make_busybox_base(env.root());
        env
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    fn ctx(&self) -> &Path {
        self.ctx.path()
    }

    fn files(&self, files: &[(&str, &str)]) -> &Self {
        write_files(self.ctx(), files);
        self
    }

    /// `stowage build --progress plain -t TAG [extra] CTX` with `dockerfile`
    /// written to CTX/Dockerfile.
    fn build(&self, dockerfile: &str, tag: &str, extra: &[&str]) -> Ran {
        fs::write(self.ctx().join("Dockerfile"), dockerfile).expect("write Dockerfile");
        let mut cmd = stowage(self.root());
        cmd.args(["build", "--progress", "plain", "-t", tag])
            .args(extra)
            .arg(self.ctx());
        run(cmd)
    }

    fn build_ok(&self, dockerfile: &str, tag: &str, extra: &[&str]) -> Ran {
        let ran = self.build(dockerfile, tag, extra);
        assert_eq!(
            ran.code,
            Some(0),
            "build of\n{dockerfile}\nfailed: {}",
            ran.both()
        );
        ran
    }

    fn build_err(&self, dockerfile: &str) -> Ran {
        let ran = self.build(dockerfile, "localhost/should-fail:1", &[]);
        assert!(
            ran.code.is_some_and(|c| c != 0),
            "build of\n{dockerfile}\nshould fail: {}",
            ran.both()
        );
        ran
    }
}

/// Builds [`BASE`] in the store at `root` from the busybox rootfs tarball:
/// `FROM scratch` + `COPY rootfs/ /` of the unpacked tarball, no config.
fn make_busybox_base(root: &Path) {
    ensure_rootfs_tars();
    let ctx = tempfile::tempdir().expect("tempdir");
    let rootfs = ctx.path().join("rootfs");
    fs::create_dir(&rootfs).expect("mkdir rootfs");
    let mut archive = tar::Archive::new(fs::File::open(BUSYBOX_TAR).expect("open busybox tar"));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.unpack(&rootfs).expect("unpack busybox tar");
    fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY rootfs/ /\n",
    )
    .expect("write");
    let mut cmd = stowage(root);
    cmd.args(["build", "-q", "-t", BASE]).arg(ctx.path());
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "building the base: {}", ran.both());
}

fn open_store(root: &Path) -> Store {
    Store::open(root).unwrap_or_else(|e| panic!("open store {}: {e}", root.display()))
}

fn image(root: &Path, reference: &str) -> stowage_store::ImageDetails {
    open_store(root)
        .image(reference)
        .unwrap_or_else(|e| panic!("image {reference} not in the store: {e}"))
}

/// The image's config as JSON (exact bytes of the config blob).
fn config_json(root: &Path, reference: &str) -> serde_json::Value {
    serde_json::from_slice(&image(root, reference).config_bytes).expect("config JSON")
}

/// One layer's raw entries (whiteouts included), and the contents of its
/// small regular files.
struct LayerContents {
    entries: Vec<FsEntry>,
    small: BTreeMap<String, Vec<u8>>,
}

fn read_layer(store: &Store, layer: &LayerInfo) -> LayerContents {
    let blob = store
        .open_blob(&layer.blob_digest)
        .unwrap_or_else(|e| panic!("open blob {}: {e}", layer.blob_digest));
    let (_, reader) = stowage_archive::compress::decompressing_reader(blob).expect("decompress");
    let mut archive = tar::Archive::new(reader);
    let mut entries = Vec::new();
    let mut small = BTreeMap::new();
    let mut by_path: BTreeMap<String, FsEntry> = BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let raw = entry.path().expect("path").to_string_lossy().into_owned();
        let path = normalize_tar_path(&raw);
        if path.is_empty() {
            continue;
        }
        let header = entry.header();
        let mut fs_entry = FsEntry {
            path: path.clone(),
            kind: FsKind::File,
            mode: header.mode().expect("mode") & 0o7777,
            uid: header.uid().expect("uid"),
            gid: header.gid().expect("gid"),
            size: 0,
            link_target: None,
            content_sha256: None,
            device: None,
        };
        let link = entry
            .link_name()
            .expect("link name")
            .map(|l| l.to_string_lossy().into_owned());
        use tar::EntryType as T;
        match header.entry_type() {
            T::Regular | T::Continuous => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).expect("read content");
                fs_entry.size = data.len() as u64;
                fs_entry.content_sha256 = Some(stowage_digest::Digest::of(&data).hex());
                if data.len() <= 1 << 16 {
                    small.insert(path.clone(), data);
                }
            }
            T::Directory => fs_entry.kind = FsKind::Dir,
            T::Symlink => {
                fs_entry.kind = FsKind::Symlink;
                fs_entry.link_target = link;
            }
            T::Link => {
                // a hard link is compared as the file it names
                let target = normalize_tar_path(&link.unwrap_or_default());
                let linked = by_path
                    .get(&target)
                    .unwrap_or_else(|| panic!("{path}: hard link to unknown {target}"));
                fs_entry.size = linked.size;
                fs_entry.content_sha256 = linked.content_sha256.clone();
                if let Some(data) = small.get(&target).cloned() {
                    small.insert(path.clone(), data);
                }
            }
            T::Char => fs_entry.kind = FsKind::Char,
            T::Block => fs_entry.kind = FsKind::Block,
            T::Fifo => fs_entry.kind = FsKind::Fifo,
            other => panic!("{path}: unexpected entry type {other:?}"),
        }
        by_path.insert(path, fs_entry.clone());
        entries.push(fs_entry);
    }
    LayerContents { entries, small }
}

/// An image's filesystem: its layers applied in order, whiteouts honoured.
#[derive(Default)]
struct Flat {
    entries: BTreeMap<String, FsEntry>,
    small: BTreeMap<String, Vec<u8>>,
}

impl Flat {
    fn remove_below(&mut self, dir: &str) {
        let prefix = format!("{dir}/");
        self.entries.retain(|p, _| !p.starts_with(&prefix));
        self.small.retain(|p, _| !p.starts_with(&prefix));
    }

    fn apply(&mut self, layer: LayerContents) {
        // whiteouts hide what the layers below have
        for entry in &layer.entries {
            let (dir, name) = match entry.path.rsplit_once('/') {
                Some((dir, name)) => (dir.to_owned(), name),
                None => (String::new(), entry.path.as_str()),
            };
            if name == ".wh..wh..opq" {
                if dir.is_empty() {
                    self.entries.clear();
                    self.small.clear();
                } else {
                    self.remove_below(&dir);
                }
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                let hidden = if dir.is_empty() {
                    hidden.to_owned()
                } else {
                    format!("{dir}/{hidden}")
                };
                self.entries.remove(&hidden);
                self.small.remove(&hidden);
                self.remove_below(&hidden);
            }
        }
        for entry in layer.entries {
            let name = entry.path.rsplit('/').next().unwrap_or(&entry.path);
            if name.starts_with(".wh.") {
                continue;
            }
            if entry.kind != FsKind::Dir {
                self.remove_below(&entry.path);
            }
            self.small.remove(&entry.path);
            self.entries.insert(entry.path.clone(), entry);
        }
        self.small.extend(layer.small);
    }

    fn text(&self, path: &str) -> String {
        let data = self
            .small
            .get(path)
            .unwrap_or_else(|| panic!("no small file {path} in the image"));
        String::from_utf8_lossy(data).into_owned()
    }

    fn get(&self, path: &str) -> &FsEntry {
        self.entries
            .get(path)
            .unwrap_or_else(|| panic!("no {path} in the image"))
    }
}

fn flatten(root: &Path, reference: &str) -> Flat {
    let store = open_store(root);
    let details = store
        .image(reference)
        .unwrap_or_else(|e| panic!("image {reference}: {e}"));
    let mut flat = Flat::default();
    for layer in &details.layers {
        flat.apply(read_layer(&store, layer));
    }
    flat
}

/// Hard links become the regular files they name (docker export and stowage
/// may pick a different member of a link group as the file).
fn links_as_files(listing: BTreeMap<String, FsEntry>) -> BTreeMap<String, FsEntry> {
    listing
        .into_iter()
        .map(|(path, mut entry)| {
            if entry.kind == FsKind::Hardlink {
                entry.kind = FsKind::File;
                entry.link_target = None;
            }
            (path, entry)
        })
        .collect()
}

fn history_lines(config: &serde_json::Value) -> Vec<(String, bool)> {
    config["history"]
        .as_array()
        .expect("history array")
        .iter()
        .map(|h| {
            (
                h["created_by"].as_str().unwrap_or_default().to_owned(),
                h["empty_layer"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

// ------------------------------------------------- 1. layers and history

#[test]
fn each_run_copy_add_adds_one_layer_and_history_reads_like_buildkit() {
    let env = Env::with_base();
    env.files(&[("f.txt", "file\n"), ("notes.txt", "notes\n")]);
    let dockerfile = format!(
        "FROM {BASE}\n\
         ARG V=2\n\
         ENV A=1 B=\"two words\"\n\
         WORKDIR /app\n\
         LABEL org.example.k=v\n\
         RUN echo hi > /hi\n\
         COPY f.txt /app/\n\
         ADD notes.txt /notes\n\
         EXPOSE 5000\n\
         USER nobody\n\
         RUN echo \"$V\" > /tmp/v\n\
         ENTRYPOINT [\"/bin/sh\"]\n\
         CMD [\"-c\", \"echo hi\"]\n\
         STOPSIGNAL SIGINT\n"
    );
    env.build_ok(&dockerfile, "localhost/layers:1", &[]);
    let base = image(env.root(), BASE);
    let built = image(env.root(), "localhost/layers:1");
    assert_eq!(
        built.layers.len(),
        base.layers.len() + 4,
        "4 RUN/COPY/ADD steps add 4 layers"
    );
    assert_eq!(
        built.layers[..base.layers.len()],
        base.layers[..],
        "the base's layers are kept as they are"
    );
    let config = config_json(env.root(), "localhost/layers:1");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(built.layers.len())
    );
    let history = history_lines(&config);
    let base_history = history_lines(&config_json(env.root(), BASE));
    assert_eq!(history[..base_history.len()], base_history[..]);
    let want: Vec<(String, bool)> = [
        ("ARG V=2", true),
        ("ENV A=1 B=two words", true),
        ("WORKDIR /app", true),
        ("LABEL org.example.k=v", true),
        ("RUN |1 V=2 /bin/sh -c echo hi > /hi # buildkit", false),
        ("COPY f.txt /app/ # buildkit", false),
        ("ADD notes.txt /notes # buildkit", false),
        ("EXPOSE map[5000/tcp:{}]", true),
        ("USER nobody", true),
        (
            "RUN |1 V=2 /bin/sh -c echo \"$V\" > /tmp/v # buildkit",
            false,
        ),
        ("ENTRYPOINT [\"/bin/sh\"]", true),
        ("CMD [\"-c\" \"echo hi\"]", true),
        ("STOPSIGNAL SIGINT", true),
    ]
    .iter()
    .map(|(line, empty)| ((*line).to_owned(), *empty))
    .collect();
    assert_eq!(history[base_history.len()..], want[..]);
    // the number of non-empty history entries is the number of layers
    assert_eq!(
        history.iter().filter(|(_, empty)| !empty).count(),
        built.layers.len()
    );
    // each layer holds what its step wrote, nothing else
    let store = open_store(env.root());
    let layer_paths = |index: usize| -> Vec<String> {
        read_layer(&store, &built.layers[index])
            .entries
            .into_iter()
            .map(|e| e.path)
            .collect()
    };
    let first = base.layers.len();
    assert_eq!(
        layer_paths(first),
        vec!["app", "hi"],
        "RUN layer (WORKDIR /app made)"
    );
    assert_eq!(
        layer_paths(first + 1),
        vec!["app", "app/f.txt"],
        "COPY layer"
    );
    assert_eq!(layer_paths(first + 2), vec!["notes"], "ADD layer");
    assert_eq!(layer_paths(first + 3), vec!["tmp", "tmp/v"], "RUN layer");
    let c = &config["config"];
    let env_list = c["Env"].as_array().expect("Env");
    assert_eq!(
        env_list[env_list.len().saturating_sub(2)..],
        [serde_json::json!("A=1"), serde_json::json!("B=two words")],
        "ENV appends in order: {env_list:?}"
    );
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "nobody");
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh"]));
    assert_eq!(c["Cmd"], serde_json::json!(["-c", "echo hi"]));
    assert_eq!(c["ExposedPorts"], serde_json::json!({"5000/tcp": {}}));
    assert_eq!(c["Labels"], serde_json::json!({"org.example.k": "v"}));
    assert_eq!(c["StopSignal"], "SIGINT");
}

/// Docker's builders (classic and BuildKit alike, checked on dockerd
/// 20.10.24) give an image whose base sets no PATH the default PATH in its
/// config's Env, first, at FROM; a later `ENV PATH=...` replaces it in place.
#[test]
fn from_adds_the_default_path_when_the_base_sets_none() {
    let env = Env::with_base();
    env.build_ok(
        &format!("FROM {BASE}\nENV A=1\nENV PATH=/opt/bin:$PATH\n"),
        "localhost/path:1",
        &[],
    );
    let config = config_json(env.root(), "localhost/path:1");
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!([
            "PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "A=1"
        ])
    );
    env.build_ok("FROM scratch\nLABEL a=b\n", "localhost/path:2", &[]);
    let config = config_json(env.root(), "localhost/path:2");
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    );
}

// ------------------------------------------------------------ 2. RUN

#[test]
fn run_honours_env_workdir_user_shell_and_both_forms() {
    let env = Env::with_base();
    let dockerfile = format!(
        "FROM {BASE}\n\
         ENV A=1 B=\"two words\"\n\
         WORKDIR /new/work/dir\n\
         RUN echo \"$A|$B\" > shell-form && pwd > pwd && id -u > uid\n\
         RUN [\"/bin/cp\", \"/etc/passwd\", \"exec-form-copy\"]\n\
         RUN [\"/bin/sh\", \"-c\", \"echo exec:$A > exec-env\"]\n\
         USER nobody\n\
         RUN id > /tmp/id-by-name\n\
         USER 1234:5678\n\
         RUN id -u > /tmp/uid-numeric && id -g > /tmp/gid-numeric && touch /tmp/owned\n\
         USER root\n\
         SHELL [\"/bin/env\", \"SHELLMARK=from-shell\", \"/bin/sh\", \"-c\"]\n\
         RUN echo \"$SHELLMARK\" > /shellmark\n\
         RUN [\"/bin/sh\", \"-c\", \"echo ${{SHELLMARK:-unset}} > /exec-ignores-shell\"]\n"
    );
    env.build_ok(&dockerfile, "localhost/run:1", &[]);
    let flat = flatten(env.root(), "localhost/run:1");
    let dir = "new/work/dir";
    assert_eq!(flat.get(dir).kind, FsKind::Dir, "WORKDIR created for RUN");
    assert_eq!(flat.get(dir).mode, 0o755);
    assert_eq!(flat.text(&format!("{dir}/shell-form")), "1|two words\n");
    assert_eq!(flat.text(&format!("{dir}/pwd")), "/new/work/dir\n");
    assert_eq!(flat.text(&format!("{dir}/uid")), "0\n");
    assert_eq!(
        flat.get(&format!("{dir}/exec-form-copy")).content_sha256,
        flat.get("etc/passwd").content_sha256
    );
    assert_eq!(flat.text(&format!("{dir}/exec-env")), "exec:1\n");
    assert_eq!(
        flat.text("tmp/id-by-name"),
        "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n"
    );
    assert_eq!(flat.text("tmp/uid-numeric"), "1234\n");
    assert_eq!(flat.text("tmp/gid-numeric"), "5678\n");
    let owned = flat.get("tmp/owned");
    assert_eq!((owned.uid, owned.gid), (1234, 5678));
    assert_eq!(flat.text("shellmark"), "from-shell\n");
    assert_eq!(flat.text("exec-ignores-shell"), "unset\n");
}

#[test]
fn run_sees_proc_dev_and_etc_files_but_none_lands_in_the_layer() {
    let env = Env::with_base();
    let dockerfile = format!(
        "FROM {BASE}\n\
         RUN test -r /proc/self/status && test -c /dev/null && test -c /dev/urandom \
             && test -c /dev/zero && test -c /dev/full && test -c /dev/tty && test -d /dev/pts \
             && test -d /dev/shm && test -d /sys/kernel \
             && test -s /etc/hosts && test -e /etc/resolv.conf && test -s /etc/hostname \
             && cat /etc/hosts > /hosts-seen && echo touched >> /etc/passwd \
             && echo written > /dev/shm/x && mkdir -p /var/log && echo l > /var/log/l\n"
    );
    env.build_ok(&dockerfile, "localhost/mounts:1", &[]);
    let built = image(env.root(), "localhost/mounts:1");
    let store = open_store(env.root());
    let top = read_layer(&store, built.layers.last().expect("a layer"));
    let paths: Vec<&str> = top.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "etc",
            "etc/passwd",
            "hosts-seen",
            "var",
            "var/log",
            "var/log/l"
        ],
        "only what the command wrote"
    );
    assert!(
        String::from_utf8_lossy(&top.small["hosts-seen"]).contains("localhost"),
        "RUN saw an /etc/hosts"
    );
}

#[test]
fn failing_run_reports_step_command_exit_code_and_output_tail() {
    let env = Env::with_base();
    let dockerfile = format!(
        "FROM {BASE}\n\
         ENV X=1\n\
         RUN seq 1 300; echo 'the last words' >&2; exit 7\n\
         RUN echo never\n"
    );
    let ran = env.build_err(&dockerfile);
    let err = &ran.stderr;
    assert!(err.contains("line 3"), "names the line: {err}");
    assert!(err.contains("[stage-0 3/4]"), "names the step: {err}");
    assert!(
        err.contains("seq 1 300; echo 'the last words' >&2; exit 7"),
        "shows the command: {err}"
    );
    assert!(err.contains("code 7"), "shows the exit code: {err}");
    let tail_at = err
        .rfind("the last words")
        .expect("the output's tail is shown");
    assert!(err[..tail_at].contains("300"), "{err}");
    assert!(!err.contains("never"), "the build stopped: {err}");
    assert!(
        open_store(env.root())
            .image("localhost/should-fail:1")
            .is_err(),
        "no image is tagged"
    );
}

#[test]
fn stowage_run_runs_the_image_command() {
    let env = Env::with_base();
    let dockerfile = format!(
        "FROM {BASE}\nENV WHO=world\nWORKDIR /w\nENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"echo hello $WHO from $(pwd)\"]\n"
    );
    env.build_ok(&dockerfile, "localhost/runme:1", &[]);
    let mut cmd = stowage(env.root());
    cmd.args(["run", "--rm", "localhost/runme:1"]);
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "{}", ran.both());
    assert_eq!(ran.stdout, "hello world from /w\n");
    let mut cmd = stowage(env.root());
    cmd.args(["run", "--rm", "localhost/runme:1", "exit 3"]);
    assert_eq!(run(cmd).code, Some(3), "the command's exit code");
}

// ---------------------------------------------------------- 3. COPY/ADD

fn copy_context(env: &Env) {
    env.files(&[
        ("dir/a.txt", "a\n"),
        ("dir/sub/b.txt", "b\n"),
        ("dir/.hidden", "h\n"),
        ("dir/skip.log", "log\n"),
        ("file1.txt", "one\n"),
        ("file2.txt", "two\n"),
        ("lib/x.py", "x\n"),
        ("lib/y.py", "y\n"),
        ("lib/z.txt", "z\n"),
        ("exe.sh", "#!/bin/sh\necho exe\n"),
        ("top.log", "log\n"),
        ("secret/key", "k\n"),
        (".dockerignore", "*.log\n**/*.log\nsecret\n"),
    ]);
    fs::set_permissions(env.ctx().join("exe.sh"), fs::Permissions::from_mode(0o755))
        .expect("chmod");
    symlink("file1.txt", env.ctx().join("link-in")).expect("symlink");
}

#[test]
fn copy_semantics() {
    let env = Env::with_base();
    copy_context(&env);
    let dockerfile = format!(
        "FROM {BASE}\n\
         COPY dir /contents/\n\
         COPY dir /renamed-dir\n\
         COPY file1.txt /dest-file\n\
         COPY file1.txt file2.txt /multi/\n\
         COPY lib/*.py /py/\n\
         COPY exe.sh /deep/new/parents/exe.sh\n\
         COPY file1.txt /tmp\n\
         WORKDIR /work\n\
         COPY file1.txt rel/\n\
         COPY file2.txt .\n\
         COPY --chown=nobody:nogroup dir /owned/\n\
         COPY --chown=1234:5678 file1.txt /numeric/\n\
         COPY --chown=nobody file2.txt /user-only/\n\
         COPY --chmod=0600 exe.sh /modes/exe-600\n\
         COPY --chmod=750 dir /modes/dir/\n\
         COPY . /all/\n"
    );
    env.build_ok(&dockerfile, "localhost/copy:1", &[]);
    let flat = flatten(env.root(), "localhost/copy:1");
    let check_file = |path: &str, content: &str, mode: u32, owner: (u64, u64)| {
        let entry = flat.get(path);
        assert_eq!(entry.kind, FsKind::File, "{path}");
        assert_eq!(flat.text(path), content, "{path}");
        assert_eq!(entry.mode, mode, "{path} mode {:o}", entry.mode);
        assert_eq!((entry.uid, entry.gid), owner, "{path} owner");
    };
    let root = (0, 0);
    // a directory's contents, not the directory
    check_file("contents/a.txt", "a\n", 0o644, root);
    check_file("contents/sub/b.txt", "b\n", 0o644, root);
    check_file("contents/.hidden", "h\n", 0o644, root);
    assert!(!flat.entries.contains_key("contents/dir"));
    check_file("renamed-dir/a.txt", "a\n", 0o644, root);
    check_file("dest-file", "one\n", 0o644, root);
    check_file("multi/file1.txt", "one\n", 0o644, root);
    check_file("multi/file2.txt", "two\n", 0o644, root);
    // wildcards
    check_file("py/x.py", "x\n", 0o644, root);
    check_file("py/y.py", "y\n", 0o644, root);
    assert!(!flat.entries.contains_key("py/z.txt"));
    // missing parents created, modes kept
    check_file(
        "deep/new/parents/exe.sh",
        "#!/bin/sh\necho exe\n",
        0o755,
        root,
    );
    for dir in ["deep", "deep/new", "deep/new/parents"] {
        assert_eq!(
            (flat.get(dir).kind, flat.get(dir).mode),
            (FsKind::Dir, 0o755),
            "{dir}"
        );
    }
    // an existing directory in the image is a directory destination
    check_file("tmp/file1.txt", "one\n", 0o644, root);
    assert_eq!(flat.get("tmp").mode, 0o1777, "/tmp keeps its mode");
    // relative destinations under WORKDIR
    check_file("work/rel/file1.txt", "one\n", 0o644, root);
    check_file("work/file2.txt", "two\n", 0o644, root);
    // --chown by name (the image's /etc/passwd) and by number
    check_file("owned/a.txt", "a\n", 0o644, (65534, 65534));
    check_file("owned/sub/b.txt", "b\n", 0o644, (65534, 65534));
    assert_eq!(
        (flat.get("owned/sub").uid, flat.get("owned/sub").gid),
        (65534, 65534)
    );
    check_file("numeric/file1.txt", "one\n", 0o644, (1234, 5678));
    // a user alone: the group is the user's primary group (BuildKit's rule;
    // the classic builder looks for a group named like the user instead)
    check_file("user-only/file2.txt", "two\n", 0o644, (65534, 65534));
    // --chmod
    check_file("modes/exe-600", "#!/bin/sh\necho exe\n", 0o600, root);
    check_file("modes/dir/a.txt", "a\n", 0o750, root);
    assert_eq!(flat.get("modes/dir/sub").mode, 0o750);
    // .dockerignore
    check_file("all/file1.txt", "one\n", 0o644, root);
    check_file(
        "all/.dockerignore",
        "*.log\n**/*.log\nsecret\n",
        0o644,
        root,
    );
    for ignored in [
        "all/top.log",
        "all/dir/skip.log",
        "all/secret",
        "all/secret/key",
    ] {
        assert!(!flat.entries.contains_key(ignored), "{ignored} is ignored");
    }
    assert!(!flat.entries.contains_key("contents/skip.log"));
    // symlinks inside the tree are copied as symlinks
    let link = flat.get("all/link-in");
    assert_eq!(
        (link.kind, link.link_target.as_deref()),
        (FsKind::Symlink, Some("file1.txt"))
    );
}

/// Writes `name` in the context: a tar archive (compressed with `compressor`
/// unless None) of `archived/in.txt` and `archived/sub/deep.txt`.
fn write_archive(ctx: &Path, name: &str, compressor: Option<&str>) {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content, mode) in [
        ("archived/in.txt", "in\n", 0o640),
        ("archived/sub/deep.txt", "deep\n", 0o600),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(mode);
        header.set_uid(1000);
        header.set_gid(1000);
        header.set_mtime(946_684_800);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, content.as_bytes())
            .expect("append");
    }
    let data = builder.into_inner().expect("tar");
    let bytes = match compressor {
        None => data,
        Some(program) => {
            let mut child = Command::new(program)
                .arg("-c")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("run {program}: {e}"));
            let mut stdin = child.stdin.take().expect("stdin");
            let writer = std::thread::spawn(move || stdin.write_all(&data));
            let out = child.wait_with_output().expect("compress");
            writer.join().expect("join").expect("write");
            assert!(out.status.success(), "{program} failed");
            out.stdout
        }
    };
    fs::write(ctx.join(name), bytes).expect("write archive");
}

#[test]
fn add_extracts_local_archives() {
    let env = Env::with_base();
    let archives = [
        ("plain.tar", None),
        ("gz.tar.gz", Some("gzip")),
        ("bz.tar.bz2", Some("bzip2")),
        ("xz.tar.xz", Some("xz")),
        ("zst.tar.zst", Some("zstd")),
    ];
    let mut dockerfile = format!("FROM {BASE}\n");
    for (name, compressor) in archives {
        write_archive(env.ctx(), name, compressor);
        dockerfile.push_str(&format!("ADD {name} /x/{name}/\n"));
    }
    // COPY never extracts
    dockerfile.push_str("COPY gz.tar.gz /copied/\n");
    env.build_ok(&dockerfile, "localhost/add:1", &[]);
    let flat = flatten(env.root(), "localhost/add:1");
    for (name, _) in archives {
        let inside = format!("x/{name}/archived/in.txt");
        let entry = flat.get(&inside);
        assert_eq!(flat.text(&inside), "in\n", "{name} extracted");
        assert_eq!(
            (entry.mode, entry.uid, entry.gid),
            (0o640, 1000, 1000),
            "{name}: the archive's mode and owner are kept"
        );
        assert_eq!(
            flat.text(&format!("x/{name}/archived/sub/deep.txt")),
            "deep\n"
        );
        assert!(!flat.entries.contains_key(&format!("x/{name}/{name}")));
    }
    assert_eq!(flat.get("copied/gz.tar.gz").kind, FsKind::File);
}

#[test]
fn copy_sources_outside_the_context_are_errors() {
    let env = Env::with_base();
    let outside = tempfile::tempdir().expect("tempdir");
    fs::write(outside.path().join("x"), "secret\n").expect("write");
    let ctx = env.ctx().join("ctx");
    fs::create_dir(&ctx).expect("mkdir");
    fs::write(env.ctx().join("x"), "beside\n").expect("write");
    symlink(outside.path().join("x"), ctx.join("link-out")).expect("symlink");
    symlink("../x", ctx.join("rel-link-out")).expect("symlink");
    for (source, what) in [
        ("../x", "../x"),
        ("link-out", "link-out"),
        ("rel-link-out", "rel-link-out"),
    ] {
        let dockerfile = format!("FROM {BASE}\nCOPY {source} /got\n");
        fs::write(ctx.join("Dockerfile"), &dockerfile).expect("write");
        let mut cmd = stowage(env.root());
        cmd.args(["build", "--progress", "plain", "-t", "localhost/out:1"])
            .arg(&ctx);
        let ran = run(cmd);
        assert!(ran.code.is_some_and(|c| c != 0), "{source}: {}", ran.both());
        assert!(
            ran.stderr.contains(what) && ran.stderr.contains("outside the build context"),
            "{source}: {}",
            ran.both()
        );
        assert!(ran.stderr.contains("line 2"), "{source}: {}", ran.both());
    }
}

#[test]
fn copy_of_a_missing_file_names_it_and_lists_similar_names() {
    let env = Env::with_base();
    env.files(&[("requirements.txt", "x\n"), ("requirement.md", "y\n")]);
    let ran = env.build_err(&format!(
        "FROM {BASE}\nENV A=1\nCOPY requirments.txt /app/\n"
    ));
    assert!(ran.stderr.contains("requirments.txt"), "{}", ran.both());
    assert!(ran.stderr.contains("not found"), "{}", ran.both());
    assert!(
        ran.stderr.contains("requirements.txt"),
        "similar name: {}",
        ran.both()
    );
    assert!(ran.stderr.contains("line 3"), "{}", ran.both());
}

// ------------------------------------------------- 4. differential (docker)

/// Where stowage deliberately differs from the classic builder, as `ignore`
/// patterns of [`diff_listings`] plus the reason. Config fields are compared
/// exactly; history is not compared at all (stowage writes BuildKit's
/// `created_by` lines, `RUN /bin/sh -c ... # buildkit`, where the classic
/// builder writes `/bin/sh -c #(nop) ...`).
const DELIBERATE: &[(&str, &str)] = &[
    // WORKDIR is config-only in stowage (issue 4: "every other instruction
    // changes only the config"); the directory is made by the next RUN. The
    // classic builder commits it at WORKDIR itself, so a WORKDIR no RUN
    // follows exists in docker's image only.
    (
        "only-workdir",
        "WORKDIR with no later RUN makes no directory",
    ),
    // The classic builder drops the setuid/setgid bits of COPY sources;
    // BuildKit keeps them (both checked on dockerd 20.10.24), and so does
    // stowage.
    ("modes/setuid", "the classic builder strips setuid on COPY"),
    // Not stowage's doing: when `-f` names a Dockerfile outside the context,
    // the docker CLI adds it to the context tar under a random name and
    // appends that name (and `.dockerignore`) to the `.dockerignore` it sends,
    // so `COPY . /all/` copies a rewritten `.dockerignore` in docker's build.
    ("all/.dockerignore", "the docker CLI rewrites .dockerignore"),
    // Not in the Dockerfiles at all, because the classic builder rejects them
    // or differs from BuildKit on them: `--chmod` and heredocs (BuildKit
    // only); `--chown=user` without a group (classic looks up a group named
    // like the user, BuildKit and stowage use the user's primary group:
    // tested in `copy_semantics`); a RUN writing below a VOLUME declared
    // earlier (classic discards the write).
];

/// Config fields compared between docker and stowage.
const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Labels",
    "Volumes",
    "Healthcheck",
    "StopSignal",
    "Shell",
    "OnBuild",
];

/// null, "", [] and {} all mean "not set".
fn normalized(value: Option<&serde_json::Value>) -> serde_json::Value {
    match value {
        None => serde_json::Value::Null,
        Some(serde_json::Value::String(s)) if s.is_empty() => serde_json::Value::Null,
        Some(serde_json::Value::Array(a)) if a.is_empty() => serde_json::Value::Null,
        Some(serde_json::Value::Object(o)) if o.is_empty() => serde_json::Value::Null,
        Some(other) => other.clone(),
    }
}

/// Builds `dockerfile` (its `FROM BASE` lines name each builder's busybox)
/// with the classic builder and with stowage, and compares config and files.
fn differential(name: &str, files: &[(&str, &str)], dockerfile: &str, args: &[(&str, &str)]) {
    differential_with(name, files, |_| {}, dockerfile, args);
}

/// [`differential`] with a hook that finishes the context (modes, symlinks,
/// archives) after `files` are written.
fn differential_with(
    name: &str,
    files: &[(&str, &str)],
    prepare: impl FnOnce(&Path),
    dockerfile: &str,
    args: &[(&str, &str)],
) {
    ensure_docker_base();
    let env = Env::with_base();
    env.files(files);
    prepare(env.ctx());
    let dfs = tempfile::tempdir().expect("tempdir");
    let docker_df = dfs.path().join("docker.Dockerfile");
    let stowage_df = dfs.path().join("stowage.Dockerfile");
    fs::write(&docker_df, dockerfile.replace("BASE", BUSYBOX_IMAGE)).expect("write");
    fs::write(&stowage_df, dockerfile.replace("BASE", BASE)).expect("write");

    let tag = format!("stowage-test/build-diff-{name}:{}", std::process::id());
    docker_build_classic(&docker_df, env.ctx(), &tag, args)
        .unwrap_or_else(|log| panic!("docker classic build failed:\n{log}"));
    let mut cmd = stowage(env.root());
    cmd.args(["build", "--progress", "plain", "-t", &tag, "-f"])
        .arg(&stowage_df);
    for (k, v) in args {
        cmd.arg("--build-arg").arg(format!("{k}={v}"));
    }
    cmd.arg(env.ctx());
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "stowage build failed: {}", ran.both());

    let mut problems = Vec::new();
    // the two bases are the same files
    let base_docker = links_as_files(docker_fs_listing(BUSYBOX_IMAGE));
    let base_stowage = links_as_files(flatten(env.root(), BASE).entries);
    for diff in diff_listings(&base_docker, &base_stowage, DOCKER_EXPORT_EXTRAS) {
        problems.push(format!("base: {diff}"));
    }

    let docker_cfg = docker_config(&tag);
    let stowage_full = config_json(env.root(), &tag);
    let stowage_cfg = &stowage_full["config"];
    for field in CONFIG_FIELDS {
        let (d, s) = (
            normalized(docker_cfg.get(*field)),
            normalized(stowage_cfg.get(*field)),
        );
        if d != s {
            problems.push(format!("config {field}: docker {d} vs stowage {s}"));
        }
    }
    let docker_author = normalized(docker_inspect(&tag).get("Author"));
    let stowage_author = normalized(stowage_full.get("author"));
    if docker_author != stowage_author {
        problems.push(format!(
            "author: docker {docker_author} vs stowage {stowage_author}"
        ));
    }

    let docker_files = links_as_files(docker_fs_listing(&tag));
    let stowage_files: BTreeMap<String, FsEntry> =
        links_as_files(flatten(env.root(), &tag).entries);
    let mut ignore: Vec<&str> = DOCKER_EXPORT_EXTRAS.to_vec();
    ignore.extend(DELIBERATE.iter().map(|(pattern, _)| *pattern));
    for diff in diff_listings(&docker_files, &stowage_files, &ignore) {
        problems.push(format!("files (a = docker, b = stowage): {diff}"));
    }
    docker_rmi(&tag);
    assert!(
        problems.is_empty(),
        "{name}: stowage differs from the classic builder:\n{}",
        problems.join("\n")
    );
}

#[test]
fn differential_every_instruction() {
    differential(
        "instructions",
        &[
            ("app.sh", "#!/bin/sh\necho app \"$@\"\n"),
            ("notes.txt", "notes\n"),
        ],
        "FROM BASE\n\
         ARG VERSION=1.0\n\
         ARG FLAVOUR\n\
         LABEL org.example.version=$VERSION \"org.example.words\"=\"two words\" multi.a=1 multi.b=2\n\
         MAINTAINER Stowage Tests <tests@example.com>\n\
         ENV APP_HOME=/srv/app GREETING=\"hello world\"\n\
         ENV PATH=$APP_HOME/bin:/usr/bin:/bin\n\
         EXPOSE 5000 53/udp 8000-8001/tcp\n\
         WORKDIR $APP_HOME\n\
         RUN mkdir -p bin data && echo \"$GREETING $VERSION $FLAVOUR\" > data/greeting && chmod 0600 data/greeting\n\
         COPY app.sh bin/\n\
         ADD notes.txt ./\n\
         RUN echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> /etc/passwd \\\n\
          && echo 'app:x:1000:' >> /etc/group && mkdir -p /home/app && chown app:app /home/app\n\
         USER app\n\
         RUN echo \"$(id -u):$(id -g)\" > /home/app/whoami && id > /home/app/id && touch /tmp/made-by-app\n\
         USER root\n\
         RUN rm /bin/vi && ln -s busybox /bin/view2 && rm -rf /root && mkdir /root && chmod 0750 /root \\\n\
          && mkdir -p /var/empty-dir && mkfifo /var/fifo && ln /srv/app/notes.txt /srv/app/hard\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         RUN echo \"shell form under SHELL\" > /srv/app/data/shell\n\
         RUN [\"/bin/sh\", \"-c\", \"echo exec form $GREETING > /srv/app/data/exec\"]\n\
         WORKDIR /only-workdir\n\
         VOLUME [\"/data\", \"/logs\"]\n\
         VOLUME /cache\n\
         USER app:app\n\
         STOPSIGNAL SIGINT\n\
         HEALTHCHECK --interval=5s --timeout=3s --start-period=1s --retries=2 CMD wget -q -O- http://localhost:5000/ || exit 1\n\
         ONBUILD RUN echo onbuild\n\
         ONBUILD COPY . /onbuild\n\
         ENTRYPOINT [\"/srv/app/bin/app.sh\"]\n\
         CMD [\"--serve\", \"5000\"]\n",
        &[("FLAVOUR", "vanilla")],
    );
}

#[test]
fn differential_copy_and_add_corner_cases() {
    differential(
        "copy",
        &[
            ("dir/a.txt", "a\n"),
            ("dir/sub/b.txt", "b\n"),
            ("dir/.hidden", "h\n"),
            ("dir/skip.log", "log\n"),
            ("dir/empty/.keep", ""),
            ("file1.txt", "one\n"),
            ("file2.txt", "two\n"),
            ("lib/x.py", "x\n"),
            ("lib/y.py", "y\n"),
            ("lib/z.txt", "z\n"),
            ("top.log", "log\n"),
            ("secret/key", "k\n"),
            (".dockerignore", "*.log\n**/*.log\nsecret\n"),
        ],
        "FROM BASE\n\
         COPY dir /contents/\n\
         COPY dir /renamed-dir\n\
         COPY dir/ /trailing-src/\n\
         COPY file1.txt /dest-file\n\
         COPY file1.txt file2.txt /multi/\n\
         COPY lib/*.py /py/\n\
         COPY *.txt /wild-root/\n\
         COPY file1.txt /deep/new/parents/renamed\n\
         COPY file1.txt /tmp\n\
         COPY file2.txt /etc/\n\
         COPY file1.txt /bin/\n\
         WORKDIR /work\n\
         COPY file1.txt rel/\n\
         COPY file2.txt .\n\
         COPY file1.txt ./dot-slash/\n\
         COPY --chown=nobody:nogroup dir /owned/\n\
         COPY --chown=1234:5678 file1.txt /numeric/new/\n\
         COPY . /all/\n\
         ADD file1.txt /added/\n\
         ADD dir /added-dir/\n\
         COPY dir/a.txt /contents/a.txt\n\
         RUN true\n",
        &[],
    );
}

#[test]
fn differential_copy_modes_and_symlinks() {
    // modes and symlinks cannot be written through `files`: make them here
    ensure_docker_base();
    let ctx_files: &[(&str, &str)] = &[
        ("modes/exe.sh", "#!/bin/sh\n"),
        ("modes/private", "p\n"),
        ("modes/setuid", "s\n"),
        ("modes/dir/inner", "i\n"),
        ("target.txt", "target\n"),
    ];
    differential_with(
        "modes",
        ctx_files,
        |ctx| {
            let chmod = |p: &str, m: u32| {
                fs::set_permissions(ctx.join(p), fs::Permissions::from_mode(m)).expect("chmod")
            };
            chmod("modes/exe.sh", 0o755);
            chmod("modes/private", 0o600);
            chmod("modes/setuid", 0o4755);
            chmod("modes/dir", 0o700);
            symlink("target.txt", ctx.join("top-link")).expect("symlink");
            symlink("../target.txt", ctx.join("modes/dir/up-link")).expect("symlink");
            symlink("/nonexistent/abs", ctx.join("modes/dangling")).expect("symlink");
        },
        "FROM BASE\n\
         COPY modes /modes/\n\
         COPY modes/dir /dir-700\n\
         COPY top-link /followed-top-link\n\
         COPY top-link target.txt /two/\n\
         RUN true\n",
        &[],
    );
}

#[test]
fn differential_multi_stage_copy_from() {
    differential(
        "copy-from",
        &[("src.txt", "src\n")],
        "FROM BASE AS builder\n\
         RUN mkdir -p /out/d /out/e && echo x > /out/d/f && chmod 0700 /out/d \\\n\
          && ln -s d/f /out/link && chown -R 1000:1000 /out/e && echo y > /out/e/g\n\
         COPY src.txt /out/\n\
         \n\
         FROM BASE\n\
         COPY --from=builder /out /copied-out\n\
         COPY --from=builder /out/ /trailing/\n\
         COPY --from=builder /out/d/f /single\n\
         COPY --from=builder /out/d /tmp/\n\
         COPY --from=builder --chown=nobody:nogroup /out/e /owned-e\n\
         RUN true\n",
        &[],
    );
}

#[test]
fn differential_add_archives() {
    ensure_docker_base();
    differential_with(
        "add-archives",
        &[],
        |ctx| {
            write_archive(ctx, "plain.tar", None);
            write_archive(ctx, "gz.tar.gz", Some("gzip"));
            write_archive(ctx, "bz.tar.bz2", Some("bzip2"));
            write_archive(ctx, "xz.tar.xz", Some("xz"));
        },
        "FROM BASE\n\
         ADD plain.tar /plain/\n\
         ADD gz.tar.gz /gz/\n\
         ADD bz.tar.bz2 xz.tar.xz /both/\n\
         COPY gz.tar.gz /not-extracted/\n",
        &[],
    );
}

// ------------------------------------------------------ 5. seed scenario

#[test]
fn seed_scenario_builds_runs_and_combining_runs_removes_a_layer() {
    let started = Instant::now();
    let env = Env::new();
    ensure_rootfs_tars();
    ensure_docker_base();
    let debian = "localhost/debian:bookworm";
    let mut cmd = stowage(env.root());
    cmd.args(["import", DEBIAN_TAR, debian]);
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "stowage import: {}", ran.both());

    let (index_host, files_host) = pip_trusted_hosts();
    env.files(&[
        (
            "requirements.txt",
            &format!("--trusted-host {index_host}\n--trusted-host {files_host}\nmysql-connector-python\n"),
        ),
        (
            "application.py",
            "import mysql.connector\nprint(\"application.py: mysql-connector-python\", mysql.connector.__version__)\n",
        ),
    ]);
    let base_layers = image(env.root(), debian).layers.len();
    let mut sizes = BTreeMap::new();
    let mut layer_counts = BTreeMap::new();
    for (variant, dockerfile) in seed_dockerfiles(debian) {
        let tag = format!("localhost/seed:{variant}");
        let step = Instant::now();
        env.build_ok(&dockerfile, &tag, &[]);
        eprintln!("seed {variant}: built in {:.0?}", step.elapsed());
        let details = image(env.root(), &tag);
        let size: u64 = details
            .layers
            .iter()
            .map(|l| l.uncompressed_size.unwrap_or(l.compressed_size))
            .sum();
        sizes.insert(variant, size);
        layer_counts.insert(variant, details.layers.len() - base_layers);
        let config = config_json(env.root(), &tag);
        let c = &config["config"];
        assert_eq!(c["Entrypoint"], serde_json::json!(["python3"]), "{variant}");
        assert_eq!(c["Cmd"], serde_json::json!(["application.py"]), "{variant}");
        assert_eq!(c["WorkingDir"], "/app", "{variant}");
        assert_eq!(
            c["ExposedPorts"],
            serde_json::json!({"5000/tcp": {}}),
            "{variant}"
        );
    }
    // RUN, RUN, COPY, RUN vs RUN, COPY, RUN; v4's final stage: RUN, COPY, COPY
    assert_eq!(layer_counts["v1"], 4, "{layer_counts:?}");
    assert_eq!(layer_counts["v2"], 3, "combining the RUNs removes a layer");
    assert_eq!(layer_counts["v3"], 3, "{layer_counts:?}");
    assert_eq!(layer_counts["v4"], 3, "{layer_counts:?}");
    assert!(
        sizes["v3"] < sizes["v2"],
        "no recommends + no apt lists is smaller: {sizes:?}"
    );
    assert!(
        sizes["v4"] < sizes["v3"],
        "the multi-stage image leaves build-essential behind: {sizes:?}"
    );

    // the seed's Step 4 plus the config instructions the seed's tips add
    let extra = "FROM localhost/seed:v4\n\
         ENV APP_ENV=production GREETING=\"hi there\"\n\
         LABEL maintainer=\"tests@example.com\" org.example.variant=v4\n\
         RUN useradd --uid 1500 --create-home appuser\n\
         USER appuser\n\
         WORKDIR /app\n";
    env.build_ok(extra, "localhost/seed:final", &[]);

    let archive = env.ctx().join("..").join(format!(
        "seed-{}.tar",
        env.ctx().file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut cmd = stowage(env.root());
    cmd.args(["save", "-o"])
        .arg(&archive)
        .args(["localhost/seed:v1", "localhost/seed:final"]);
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "stowage save: {}", ran.both());
    docker_load(&archive);
    let _ = fs::remove_file(&archive);

    for tag in ["localhost/seed:v1", "localhost/seed:final"] {
        let (code, stdout, stderr) = docker_run(tag, &[]);
        assert_eq!(code, 0, "{tag}: {stderr}");
        assert!(
            stdout.starts_with("application.py: mysql-connector-python "),
            "{tag}: ENTRYPOINT python3 + CMD application.py in WORKDIR /app: {stdout}"
        );
    }
    let (code, stdout, stderr) = docker_run(
        "localhost/seed:final",
        &[
            "-c",
            "import os, pwd; print(os.getcwd(), pwd.getpwuid(os.getuid()).pw_name, os.environ['APP_ENV'], os.environ['GREETING'])",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "/app appuser production hi there\n");
    let inspected = docker_inspect("localhost/seed:final");
    assert_eq!(
        inspected["Config"]["Labels"],
        serde_json::json!({"maintainer": "tests@example.com", "org.example.variant": "v4"})
    );
    assert_eq!(
        inspected["Config"]["ExposedPorts"],
        serde_json::json!({"5000/tcp": {}})
    );
    assert_eq!(inspected["Config"]["User"], "appuser");
    for tag in ["localhost/seed:v1", "localhost/seed:final"] {
        docker_rmi(tag);
    }
    eprintln!(
        "seed scenario: {:.0?}, layers {layer_counts:?}, bytes {sizes:?}",
        started.elapsed()
    );
}

// ------------------------------------------------------------ 6. bad input

#[test]
fn bad_input_missing_base_image() {
    let env = Env::new();
    let ran = env.build_err("# syntax check\nFROM localhost/no-such-image:1\nRUN true\n");
    assert!(
        ran.stderr.contains("localhost/no-such-image:1"),
        "{}",
        ran.both()
    );
    assert!(ran.stderr.contains("line 2"), "{}", ran.both());
}

#[test]
fn bad_input_unknown_user_in_user_and_chown() {
    let env = Env::with_base();
    env.files(&[("f", "f\n")]);
    let ran = env.build_err(&format!("FROM {BASE}\nUSER ghost\nRUN true\n"));
    assert!(ran.stderr.contains("ghost"), "{}", ran.both());
    assert!(
        ran.stderr.contains("line 3"),
        "at the RUN that needs it: {}",
        ran.both()
    );
    let ran = env.build_err(&format!("FROM {BASE}\nCOPY --chown=ghost:root f /f\n"));
    assert!(ran.stderr.contains("ghost"), "{}", ran.both());
    assert!(ran.stderr.contains("line 2"), "{}", ran.both());
    let ran = env.build_err(&format!("FROM {BASE}\nCOPY --chown=root:phantoms f /f\n"));
    assert!(
        ran.stderr.contains("phantoms"),
        "unknown group: {}",
        ran.both()
    );
}

#[test]
fn bad_input_dockerfile_that_does_not_parse() {
    let env = Env::with_base();
    let ran = env.build_err(&format!("FROM {BASE}\nRUN true\nCOPY --nope a b\n"));
    let dockerfile = env.ctx().join("Dockerfile");
    assert!(
        ran.stderr
            .contains(&format!("{}:3:6", dockerfile.display())),
        "file:line:col: {}",
        ran.both()
    );
    assert!(ran.stderr.contains("--nope"), "{}", ran.both());
    assert!(
        ran.stderr.contains("^^^^^^"),
        "caret under the flag: {}",
        ran.both()
    );
    let ran = env.build_err(&format!("FROM {BASE}\nFORM x\n"));
    assert!(ran.stderr.contains("Dockerfile:2:1"), "{}", ran.both());
    assert!(ran.stderr.contains('^'), "{}", ran.both());
}

/// Serves `body` on 127.0.0.1 for one request per connection, in a thread.
fn serve_once(body: &'static [u8]) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).expect("blocking listener");
        // serve a few connections, then stop
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    (format!("http://{addr}"), handle)
}

#[test]
fn add_url_downloads_and_checks_the_checksum() {
    let env = Env::with_base();
    let (url, _server) = serve_once(b"downloaded\n");
    let sum = stowage_digest::Digest::of(b"downloaded\n");
    env.build_ok(
        &format!("FROM {BASE}\nADD --checksum={sum} {url}/file.txt /downloaded/\n"),
        "localhost/url:1",
        &[],
    );
    let flat = flatten(env.root(), "localhost/url:1");
    assert_eq!(flat.text("downloaded/file.txt"), "downloaded\n");
    assert_eq!(
        flat.get("downloaded/file.txt").mode,
        0o600,
        "Docker's mode for URLs"
    );
}

#[test]
fn bad_input_invalid_add_url_and_checksum_mismatch() {
    let env = Env::with_base();
    // nothing listens on port 1
    let ran = env.build_err(&format!(
        "FROM {BASE}\nENV A=1\nADD http://127.0.0.1:1/x.tar /x\n"
    ));
    assert!(ran.stderr.contains("line 3"), "{}", ran.both());
    assert!(
        ran.stderr.contains("http://127.0.0.1:1/x.tar"),
        "{}",
        ran.both()
    );
    assert!(
        !ran.stderr.contains("not supported"),
        "an unreachable URL is a download error, not an unsupported feature: {}",
        ran.both()
    );
    let (url, _server) = serve_once(b"payload\n");
    let wrong = stowage_digest::Digest::of(b"something else");
    let ran = env.build_err(&format!(
        "FROM {BASE}\nADD --checksum={wrong} {url}/payload /p\n"
    ));
    assert!(ran.stderr.contains("line 2"), "{}", ran.both());
    assert!(ran.stderr.contains("checksum"), "{}", ran.both());
    assert!(ran.stderr.contains(&wrong.to_string()), "{}", ran.both());
}

// ----------------------------------------------------- 7. interrupted build

fn mounts_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    fs::read_to_string("/proc/mounts")
        .expect("read /proc/mounts")
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn killed_build_leaves_no_mounts_temp_files_or_image() {
    let env = Env::with_base();
    fs::write(
        env.ctx().join("Dockerfile"),
        format!("FROM {BASE}\nRUN echo started-sleeping && sleep 60 && echo late > /late\n"),
    )
    .expect("write");
    let mut cmd = stowage(env.root());
    cmd.args(["build", "--progress", "plain", "-t", "localhost/killed:1"])
        .arg(env.ctx())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn stowage build");
    // wait until the RUN is running (its output shows), reading stderr live
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut lines = io::BufRead::lines(io::BufReader::new(stderr));
        while let Some(Ok(line)) = lines.next() {
            if line.contains("started-sleeping") && !line.contains("RUN") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let seen = rx.recv_timeout(Duration::from_secs(60));
    // mid-RUN: an overlay for the step should be in use somewhere; kill now
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("SIGKILL stowage");
    let status = child.wait().expect("wait");
    let log = reader.join().expect("reader");
    assert!(seen.is_ok(), "the RUN never started:\n{log}");
    assert!(!status.success());

    // the sandboxed command dies with stowage; give the kernel a moment
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = mounts_mentioning(env.root());
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mounts of the store left after the kill:\n{}",
            left.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sleepers = Command::new("pgrep")
        .args(["-f", "sleep 60 && echo late"])
        .output()
        .expect("pgrep");
    assert!(
        sleepers.stdout.is_empty(),
        "the RUN's processes outlived the build: {}",
        String::from_utf8_lossy(&sleepers.stdout)
    );

    // the next open cleans the temp dir; the store is consistent; no image
    let store = open_store(env.root());
    let tmp_left: Vec<PathBuf> = fs::read_dir(store.tmp_dir())
        .expect("read tmp dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(tmp_left.is_empty(), "tmp not cleaned: {tmp_left:?}");
    let report = store.verify().expect("verify");
    assert!(report.is_ok(), "verify: {:?}", report.problems);
    assert!(
        store.image("localhost/killed:1").is_err(),
        "no half-written image"
    );
    drop(store);

    // and the store still builds
    fs::write(
        env.ctx().join("Dockerfile"),
        format!("FROM {BASE}\nRUN echo ok > /ok\n"),
    )
    .expect("write");
    let mut cmd = stowage(env.root());
    cmd.args(["build", "-q", "-t", "localhost/after:1"])
        .arg(env.ctx());
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "{}", ran.both());
    assert_eq!(flatten(env.root(), "localhost/after:1").text("ok"), "ok\n");
}

/// The seed's Check 8: build in a stage with the tools (gcc on Debian), copy
/// only the artefact into a `FROM scratch` image, run it; a build-stage
/// change that yields the same binary keeps the final COPY --from cached.
#[test]
fn multi_stage_gcc_build_copies_only_the_binary_and_caches_by_content() {
    let env = Env::new();
    ensure_rootfs_tars();
    let debian = "localhost/debian:bookworm";
    let mut cmd = stowage(env.root());
    cmd.args(["import", DEBIAN_TAR, debian]);
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "stowage import: {}", ran.both());
    let program =
        "#include <stdio.h>\nint main(void) { puts(\"hello from a static binary\"); return 0; }\n";
    env.files(&[
        ("hello.c", program),
        (
            "Dockerfile",
            "FROM localhost/debian:bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY hello.c /src/hello.c
RUN gcc -static -O2 -o /src/hello /src/hello.c

FROM scratch
COPY --from=build /src/hello /usr/local/bin/hello
ENTRYPOINT [\"/usr/local/bin/hello\"]
",
        ),
    ]);
    let build = |extra: &[&str]| {
        let mut cmd = stowage(env.root());
        cmd.args([
            "build",
            "--progress",
            "plain",
            "--explain",
            "-t",
            "hello:ms",
        ]);
        cmd.args(extra);
        cmd.arg(env.ctx());
        run(cmd)
    };
    let ran = build(&[]);
    assert_eq!(ran.code, Some(0), "build: {}", ran.both());
    let image = image(env.root(), "hello:ms");
    assert_eq!(
        image.layers.len(),
        1,
        "only the binary's layer: {:?}",
        image.layers
    );
    // The summary lists the image's layers, not the build stage's.
    let layer_lines: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| l.starts_with("  layer "))
        .collect();
    assert!(
        layer_lines.len() == 1
            && layer_lines[0].ends_with("COPY --from=build /src/hello /usr/local/bin/hello"),
        "{}",
        ran.both()
    );
    let mut cmd = stowage(env.root());
    cmd.args(["run", "--rm", "hello:ms"]);
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "run: {}", ran.both());
    assert!(
        ran.stdout.contains("hello from a static binary"),
        "{}",
        ran.both()
    );

    // A comment changes the source but not the binary: gcc reruns, the
    // final stage's COPY --from stays cached, the image is the same.
    env.files(&[("hello.c", &format!("/* a comment */\n{program}"))]);
    let again = build(&[]);
    assert_eq!(again.code, Some(0), "rebuild: {}", again.both());
    assert!(
        again.stderr.contains("RUN gcc") && again.stderr.contains("not cached"),
        "{}",
        again.both()
    );
    let copy_line = again
        .stderr
        .lines()
        .filter(|l| l.contains("1/3]") || l.contains("2/3]"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        again
            .stderr
            .lines()
            .any(|l| l.contains("stage-1 2/3] CACHED")),
        "the final COPY --from reran:\n{copy_line}\n{}",
        again.both()
    );
    assert_eq!(image.id, self::image(env.root(), "hello:ms").id);
}

// ------------------------------------------------------ 7. the build cache

/// The lines of `stowage build --progress plain` output that belong to step
/// `n` of `of` in stage 0 (its header, reasons and outcome).
fn step_lines(stderr: &str, n: usize, of: usize) -> String {
    let prefix = format!("[stage-0 {n}/{of}] ");
    stderr
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The seed's Step 4 with a RUN that cannot hide a rerun: the "install"
/// writes a random nonce, so a step that ran again leaves another one. An edit
/// of application.py keeps the install (same nonce, same layer), `--explain`
/// says why each step missed, `--explain --dry-run` runs and changes nothing,
/// a build arg, a same-size edit whose mtime `touch -r` put back, and
/// `--no-cache` run the install again.
#[test]
fn seed_step_4_edit_keeps_the_install_and_explain_and_dry_run_say_why() {
    let env = Env::with_base();
    env.files(&[
        ("requirements.txt", "flask==3.0.0\n"),
        ("application.py", "print(1)\n"),
    ]);
    let dockerfile = format!(
        "FROM {BASE}\n\
         ARG VERSION=1\n\
         COPY requirements.txt /app/\n\
         RUN head -c 16 /dev/urandom | od -An -tx1 > /app/installed && echo $VERSION >> /app/installed\n\
         COPY . /app\n\
         WORKDIR /app\n"
    );
    let tag = "localhost/step4:1";
    let nonce = |env: &Env| flatten(env.root(), tag).text("app/installed");
    let install_layers = |env: &Env| -> Vec<String> {
        image(env.root(), tag).layers[1..=2]
            .iter()
            .map(|l| l.blob_digest.to_string())
            .collect()
    };
    let first = env.build_ok(&dockerfile, tag, &["--explain"]);
    assert!(
        step_lines(&first.stderr, 4, 6).contains("DONE"),
        "{}",
        first.both()
    );
    let first_nonce = nonce(&env);
    let first_layers = install_layers(&env);

    // Only application.py changes: the install is CACHED and did not run.
    env.files(&[("application.py", "print(2)\n")]);
    let edited = env.build_ok(&dockerfile, tag, &["--explain"]);
    assert!(
        step_lines(&edited.stderr, 3, 6).ends_with("CACHED")
            && step_lines(&edited.stderr, 4, 6).ends_with("CACHED"),
        "{}",
        edited.both()
    );
    assert!(
        step_lines(&edited.stderr, 5, 6)
            .contains("not cached: files of \".\" changed: changed application.py"),
        "{}",
        edited.both()
    );
    assert_eq!(nonce(&env), first_nonce, "the install step ran again");
    assert_eq!(install_layers(&env), first_layers);
    assert_eq!(
        flatten(env.root(), tag).text("app/application.py"),
        "print(2)\n"
    );

    // --explain --dry-run: says what would run and why, runs nothing, tags nothing.
    let before = image(env.root(), tag).id;
    env.files(&[("application.py", "print(3)\n"), ("lib/util.py", "x = 1\n")]);
    let dry = env.build_ok(&dockerfile, tag, &["--explain", "--dry-run"]);
    let copy = step_lines(&dry.stderr, 5, 6);
    assert!(
        copy.contains("changed application.py")
            && copy.contains("added lib, lib/util.py")
            && copy.ends_with("WOULD RUN"),
        "{}",
        dry.both()
    );
    assert!(
        step_lines(&dry.stderr, 4, 6).ends_with("CACHED")
            && dry
                .stderr
                .contains("dry run: 1 step(s) would run; nothing was built"),
        "{}",
        dry.both()
    );
    assert_eq!(image(env.root(), tag).id, before, "a dry run moved the tag");
    assert_eq!(
        flatten(env.root(), tag).text("app/application.py"),
        "print(2)\n"
    );

    // A build arg the install sees: it runs again, and says which arg.
    let with_arg = env.build_ok(&dockerfile, tag, &["--explain", "--build-arg", "VERSION=2"]);
    let install = step_lines(&with_arg.stderr, 4, 6);
    assert!(
        install.contains("build arg VERSION changed: \"1\" -> \"2\"") && install.contains("DONE"),
        "{}",
        with_arg.both()
    );
    assert!(
        step_lines(&with_arg.stderr, 5, 6).contains("not cached: the step before it changed"),
        "{}",
        with_arg.both()
    );
    let arg_nonce = nonce(&env);
    assert_ne!(arg_nonce, first_nonce);
    assert!(arg_nonce.ends_with("\n2\n"), "{arg_nonce:?}");

    // Back to the default: the first install is still in the cache.
    let back = env.build_ok(&dockerfile, tag, &["--explain"]);
    assert!(
        step_lines(&back.stderr, 4, 6).ends_with("CACHED"),
        "{}",
        back.both()
    );
    assert_eq!(nonce(&env), first_nonce);

    // requirements.txt gets other content of the same size, and `touch -r` puts
    // its mtime back: its ctime still moved, so the COPY reads it and misses.
    let requirements = env.ctx().join("requirements.txt");
    let reference = env.root().join("requirements.reference");
    fs::copy(&requirements, &reference).expect("copy");
    let touch_r = |from: &Path, to: &Path| {
        let status = Command::new("touch")
            .arg("-r")
            .arg(from)
            .arg(to)
            .status()
            .expect("run touch");
        assert!(status.success(), "touch -r failed");
    };
    touch_r(&requirements, &reference);
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&requirements, "flask==3.0.1\n").expect("write");
    touch_r(&reference, &requirements);
    let same_metadata = env.build_ok(&dockerfile, tag, &["--explain"]);
    assert!(
        step_lines(&same_metadata.stderr, 3, 6).contains("changed requirements.txt")
            && step_lines(&same_metadata.stderr, 4, 6)
                .contains("not cached: the step before it changed"),
        "{}",
        same_metadata.both()
    );
    assert_eq!(
        flatten(env.root(), tag).text("app/requirements.txt"),
        "flask==3.0.1\n"
    );
    assert_ne!(nonce(&env), first_nonce);

    // --no-cache runs every step.
    let fresh = env.build_ok(&dockerfile, tag, &["--no-cache"]);
    assert!(!fresh.stderr.contains("CACHED"), "{}", fresh.both());
    assert_ne!(nonce(&env), first_nonce);
}

/// A context file the builder may not read fails the COPY with its path. As
/// root that needs a process without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH:
/// `setpriv` drops them from the bounding set for stowage.
#[test]
fn an_unreadable_context_file_is_named() {
    let env = Env::new();
    env.files(&[("ok.txt", "ok\n"), ("sub/secret.txt", "secret\n")]);
    let secret = env.ctx().join("sub/secret.txt");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).expect("chmod");
    fs::write(env.ctx().join("Dockerfile"), "FROM scratch\nCOPY . /app\n").expect("write");
    let without_dac_override = |ctx: &Path| {
        let mut cmd = Command::new("setpriv");
        cmd.arg("--bounding-set=-dac_override,-dac_read_search")
            .arg(env!("CARGO_BIN_EXE_stowage"))
            .arg("--root")
            .arg(env.root())
            .args([
                "build",
                "--progress",
                "plain",
                "-t",
                "localhost/unreadable:1",
            ])
            .arg(ctx);
        run(cmd)
    };
    let ran = without_dac_override(env.ctx());
    assert_ne!(ran.code, Some(0), "{}", ran.both());
    assert!(
        ran.stderr.contains("COPY . /app (line 2)")
            && ran
                .stderr
                .contains(&format!("{}: Permission denied", secret.display())),
        "{}",
        ran.both()
    );
    // An unreadable directory is named too.
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).expect("chmod");
    let sub = env.ctx().join("sub");
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o000)).expect("chmod");
    let ran = without_dac_override(env.ctx());
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_ne!(ran.code, Some(0), "{}", ran.both());
    assert!(
        ran.stderr
            .contains(&format!("{}: Permission denied", sub.display())),
        "{}",
        ran.both()
    );
    // Readable again: the same build succeeds.
    let ran = without_dac_override(env.ctx());
    assert_eq!(ran.code, Some(0), "{}", ran.both());
}
