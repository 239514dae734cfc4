//! Docker-side helpers for the differential and interop tests: start dockerd,
//! build with the classic builder or BuildKit, inspect, load, run and remove
//! images, and list an image's flattened filesystem (via `docker export`) so a
//! test can compare it entry by entry with what stowage produced.
//!
//! Everything here drives the Debian 20.10 client at `/usr/bin/docker` (it has
//! both the classic builder and the BuildKit embedded in dockerd); set
//! `STOWAGE_TEST_DOCKER` to use another client. The helpers panic with the
//! command's output on failure: they are test support, not library code.
//!
//! `docker export` of a container always contains entries that come from the
//! container's init layer, not from the image; [`docker_fs_listing`] drops
//! them. Measured on dockerd 20.10.24 (overlay2) for `FROM scratch` images and
//! for a debootstrap Debian image, the export adds or replaces exactly:
//! `.dockerenv` (empty file), `dev/` with `dev/console`, `dev/pts/`,
//! `dev/shm/`, `etc/` (if the image has none), `etc/hostname`, `etc/hosts`,
//! `etc/resolv.conf` (all empty files, hiding the image's own), `etc/mtab`
//! (symlink to `/proc/mounts`), `proc/` and `sys/`. See [`DOCKER_EXPORT_EXTRAS`].
//! Two consequences for comparisons: whatever the image has at those paths is
//! invisible through export, so compare them with [`DOCKER_EXPORT_EXTRAS`] as
//! the `ignore` list of [`diff_listings`]; and the `etc` directory's own
//! metadata (mode, owner) comes from the init layer when the image has one.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{OnceLock, RwLock};

/// Paths (patterns for [`diff_listings`]) that `docker export` adds to or
/// masks in every container filesystem; [`docker_fs_listing`] drops them.
/// `etc` itself is dropped only when nothing else below it is left.
pub const DOCKER_EXPORT_EXTRAS: &[&str] = &[
    ".dockerenv",
    "dev",
    "dev/*",
    "proc",
    "sys",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/mtab",
];

/// The busybox image that `scripts/services.sh docker-base` loads into dockerd.
pub const BUSYBOX_IMAGE: &str = "stowage-test/busybox:latest";
/// The Debian bookworm minbase image that `scripts/services.sh docker-base`
/// loads into dockerd and pushes to the registry on 127.0.0.1:5000.
pub const DEBIAN_IMAGE: &str = "localhost:5000/library/debian:bookworm";

/// The repository's `scripts/services.sh`.
pub fn services_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh")
}

/// The docker client to drive: `$STOWAGE_TEST_DOCKER`, else `/usr/bin/docker`
/// (the 20.10 client with the classic builder), else `docker` from `PATH`.
pub fn docker_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("STOWAGE_TEST_DOCKER") {
        return PathBuf::from(bin);
    }
    let debian_client = Path::new("/usr/bin/docker");
    if debian_client.exists() {
        debian_client.to_path_buf()
    } else {
        PathBuf::from("docker")
    }
}

/// Classic builds hold it shared, image removals exclusively. The classic builder takes any
/// local image with a matching parent and step as its cache (a tagged one, a loaded one),
/// and a removal of that image while a build uses it fails the build ("unable to find
/// image", "failed to get digest"): tests run in parallel on one dockerd.
static IMAGE_REMOVAL: RwLock<()> = RwLock::new(());

/// Runs `docker rmi [ARGS...]` (best effort, for cleanup) while no classic build runs;
/// the output, or `None` if docker could not be started.
pub fn docker_rmi_with(args: &[&str]) -> Option<Output> {
    let _exclusive = IMAGE_REMOVAL.write().unwrap_or_else(|p| p.into_inner());
    docker()
        .arg("rmi")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
}

fn docker() -> Command {
    Command::new(docker_bin())
}

fn describe(cmd: &Command) -> String {
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{} {}", cmd.get_program().to_string_lossy(), args.join(" "))
}

/// Runs `cmd` to completion, panicking (with its output) if it cannot start or fails.
fn run_ok(mut cmd: Command) -> Output {
    let what = describe(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    if !out.status.success() {
        panic!(
            "`{what}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn run_services(subcommand: &str) {
    let script = services_script();
    let out = Command::new("bash")
        .arg(&script)
        .arg(subcommand)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {subcommand}: {e}", script.display()));
    if !out.status.success() {
        panic!(
            "`{} {subcommand}` failed ({}); its output:\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Makes sure dockerd answers (`scripts/services.sh dockerd`, once per test
/// process). Panics with the script's output, including the dockerd log tail,
/// if it cannot.
pub fn ensure_dockerd() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| run_services("dockerd"));
}

/// Makes sure dockerd and the registry run and that [`BUSYBOX_IMAGE`] and
/// [`DEBIAN_IMAGE`] are loaded (`scripts/services.sh` dockerd, registry,
/// docker-base; the first call may run debootstrap, about 30 s or more).
pub fn ensure_docker_base() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        run_services("dockerd");
        run_services("registry");
        run_services("docker-base");
    });
}

fn docker_build(
    buildkit: bool,
    dockerfile: &Path,
    context: &Path,
    tag: &str,
    build_args: &[(&str, &str)],
) -> Result<String, String> {
    ensure_dockerd();
    let iid_dir = tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))?;
    let iidfile = iid_dir.path().join("iid");
    let mut cmd = docker();
    cmd.env("DOCKER_BUILDKIT", if buildkit { "1" } else { "0" })
        .arg("build");
    if buildkit {
        cmd.arg("--progress=plain");
    } else {
        cmd.arg("--force-rm");
    }
    cmd.arg("-f")
        .arg(dockerfile)
        .arg("-t")
        .arg(tag)
        .arg("--iidfile")
        .arg(&iidfile);
    for (name, value) in build_args {
        cmd.arg("--build-arg").arg(format!("{name}={value}"));
    }
    cmd.arg(context).stdin(Stdio::null());
    let what = describe(&cmd);
    let _shared = (!buildkit).then(|| IMAGE_REMOVAL.read().unwrap_or_else(|p| p.into_inner()));
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run `{what}`: {e}"))?;
    let log = format!(
        "$ {what}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("{log}\n(exit: {})", out.status));
    }
    match std::fs::read_to_string(&iidfile) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        Ok(_) | Err(_) => Err(format!("{log}\n(build succeeded but wrote no --iidfile)")),
    }
}

/// `docker build` with the classic builder (`DOCKER_BUILDKIT=0`, `--force-rm`).
/// `Ok(image id)` (`sha256:...`), or `Err(build log)` if the build failed. As
/// with `docker build`, a failed build leaves the images of the steps that
/// succeeded behind (untagged; their ids are the ` ---> <id>` lines of the log).
pub fn docker_build_classic(
    dockerfile: &Path,
    context: &Path,
    tag: &str,
    build_args: &[(&str, &str)],
) -> Result<String, String> {
    docker_build(false, dockerfile, context, tag, build_args)
}

/// `docker build` with the BuildKit embedded in dockerd (`DOCKER_BUILDKIT=1`,
/// `--progress=plain`). `Ok(image id)`, or `Err(build log)`.
pub fn docker_build_buildkit(
    dockerfile: &Path,
    context: &Path,
    tag: &str,
    build_args: &[(&str, &str)],
) -> Result<String, String> {
    docker_build(true, dockerfile, context, tag, build_args)
}

/// `docker image inspect IMAGE`: the (single) object of the answer.
pub fn docker_inspect(image: &str) -> serde_json::Value {
    let mut cmd = docker();
    cmd.args(["image", "inspect", image]);
    let out = run_ok(cmd);
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("docker image inspect {image}: bad JSON: {e}"));
    match parsed {
        serde_json::Value::Array(mut items) if items.len() == 1 => items.remove(0),
        other => panic!("docker image inspect {image}: expected one object, got {other}"),
    }
}

/// The `Config` object of `docker image inspect IMAGE` (Env, Cmd, Entrypoint,
/// WorkingDir, User, ExposedPorts, Labels, ...).
pub fn docker_config(image: &str) -> serde_json::Value {
    let mut inspected = docker_inspect(image);
    match inspected.get_mut("Config") {
        Some(config) => config.take(),
        None => panic!("docker image inspect {image}: no Config in {inspected}"),
    }
}

/// What a filesystem entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FsKind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            FsKind::File => "file",
            FsKind::Dir => "dir",
            FsKind::Symlink => "symlink",
            FsKind::Hardlink => "hardlink",
            FsKind::Char => "char",
            FsKind::Block => "block",
            FsKind::Fifo => "fifo",
        };
        f.write_str(name)
    }
}

/// One entry of a flattened filesystem, as a tar of it describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsEntry {
    /// Normalized path: relative, no leading `./` or `/`, no trailing `/`.
    pub path: String,
    pub kind: FsKind,
    /// Permission bits including setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Content bytes (regular files; the target's size for a hard link whose
    /// target came earlier in the tar; 0 otherwise).
    pub size: u64,
    /// Symlink target as stored, or the normalized path a hard link points to.
    pub link_target: Option<String>,
    /// Hex sha256 of the content (regular files, and hard links whose target
    /// came earlier in the tar).
    pub content_sha256: Option<String>,
    /// (major, minor) of character and block devices.
    pub device: Option<(u32, u32)>,
}

/// Normalizes a tar member path: strips leading `./` and `/`, drops trailing
/// `/`. The root directory becomes the empty string.
pub fn normalize_tar_path(raw: &str) -> String {
    let mut path = raw;
    loop {
        if let Some(rest) = path.strip_prefix("./") {
            path = rest;
        } else if let Some(rest) = path.strip_prefix('/') {
            path = rest;
        } else {
            break;
        }
    }
    let path = path.trim_end_matches('/');
    if path == "." {
        String::new()
    } else {
        path.to_owned()
    }
}

/// Lists a flattened filesystem tar (e.g. `docker export`, a rootfs tarball,
/// or a single layer without whiteouts). Paths are normalized with
/// [`normalize_tar_path`]; the root entry is skipped; a later entry for the
/// same path replaces an earlier one. Panics on a malformed tar.
pub fn fs_listing_from_tar(reader: impl Read) -> BTreeMap<String, FsEntry> {
    let mut archive = tar::Archive::new(reader);
    let mut listing = BTreeMap::new();
    let entries = archive
        .entries()
        .unwrap_or_else(|e| panic!("cannot read tar: {e}"));
    for entry in entries {
        let mut entry = entry.unwrap_or_else(|e| panic!("bad tar entry: {e}"));
        let raw_path = entry
            .path()
            .unwrap_or_else(|e| panic!("bad tar entry path: {e}"))
            .to_string_lossy()
            .into_owned();
        let path = normalize_tar_path(&raw_path);
        if path.is_empty() {
            continue;
        }
        let header = entry.header();
        let mode = header
            .mode()
            .unwrap_or_else(|e| panic!("{path}: bad mode: {e}"))
            & 0o7777;
        let uid = header
            .uid()
            .unwrap_or_else(|e| panic!("{path}: bad uid: {e}"));
        let gid = header
            .gid()
            .unwrap_or_else(|e| panic!("{path}: bad gid: {e}"));
        let entry_type = header.entry_type();
        let link_name = entry
            .link_name()
            .unwrap_or_else(|e| panic!("{path}: bad link name: {e}"))
            .map(|l| l.to_string_lossy().into_owned());
        let device = match (header.device_major(), header.device_minor()) {
            (Ok(Some(major)), Ok(Some(minor))) => Some((major, minor)),
            _ => None,
        };
        let mut fs_entry = FsEntry {
            path: path.clone(),
            kind: FsKind::File,
            mode,
            uid,
            gid,
            size: 0,
            link_target: None,
            content_sha256: None,
            device: None,
        };
        use tar::EntryType as T;
        match entry_type {
            T::Regular | T::Continuous => {
                let mut hasher = stowage_digest::Hasher::new();
                let copied = io::copy(&mut entry, &mut hasher)
                    .unwrap_or_else(|e| panic!("{path}: cannot read content: {e}"));
                fs_entry.size = copied;
                fs_entry.content_sha256 = Some(hasher.finish().hex());
            }
            T::Directory => fs_entry.kind = FsKind::Dir,
            T::Symlink => {
                fs_entry.kind = FsKind::Symlink;
                fs_entry.link_target = link_name;
            }
            T::Link => {
                fs_entry.kind = FsKind::Hardlink;
                let target = normalize_tar_path(&link_name.unwrap_or_default());
                if let Some(target_entry) = listing.get(&target) {
                    let target_entry: &FsEntry = target_entry;
                    fs_entry.size = target_entry.size;
                    fs_entry.content_sha256 = target_entry.content_sha256.clone();
                }
                fs_entry.link_target = Some(target);
            }
            T::Char => {
                fs_entry.kind = FsKind::Char;
                fs_entry.device = device;
            }
            T::Block => {
                fs_entry.kind = FsKind::Block;
                fs_entry.device = device;
            }
            T::Fifo => fs_entry.kind = FsKind::Fifo,
            // pax/GNU extension headers are consumed by the tar crate; anything
            // else has no place in a flattened filesystem
            other => panic!("{path}: unexpected tar entry type {other:?}"),
        }
        listing.insert(path, fs_entry);
    }
    listing
}

/// Whether `path` matches `pattern`: `*` matches any run of characters
/// (including `/`), everything else matches itself. So `dev/*` matches
/// everything below `dev`, and `usr/share/doc` only that entry.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let pat = pattern.as_bytes();
    let text = path.as_bytes();
    let (mut p, mut t) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            backtrack = Some((p, t));
            p += 1;
        } else if p < pat.len() && pat[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = backtrack {
            p = star_p + 1;
            t = star_t + 1;
            backtrack = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

fn ignored(ignore: &[&str], path: &str) -> bool {
    ignore.iter().any(|pattern| path_matches(pattern, path))
}

/// Runs `docker create IMAGE` + `docker export` (streamed) + `docker rm` and
/// lists the container's filesystem, without the entries docker export always
/// adds ([`DOCKER_EXPORT_EXTRAS`]; and `etc` when nothing else is below it).
pub fn docker_fs_listing(image: &str) -> BTreeMap<String, FsEntry> {
    ensure_dockerd();
    let mut create = docker();
    // the command is never run; it only has to be given for images without CMD
    create.args(["create", image, "/stowage-test-never-run"]);
    let container = String::from_utf8_lossy(&run_ok(create).stdout)
        .trim()
        .to_owned();
    let mut export = docker();
    export
        .args(["export", &container])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = describe(&export);
    let mut child = export
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let listing = fs_listing_from_tar(&mut stdout);
    // The tar reader stops at the end-of-archive block; docker may still be
    // writing the record padding after it. Drain it, or docker dies of SIGPIPE.
    std::io::copy(&mut stdout, &mut std::io::sink())
        .unwrap_or_else(|e| panic!("`{what}`: reading the rest of the export: {e}"));
    drop(stdout);
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("`{what}`: {e}"));
    let mut rm = docker();
    rm.args(["rm", "-f", &container]);
    run_ok(rm);
    if !out.status.success() {
        panic!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut listing: BTreeMap<String, FsEntry> = listing
        .into_iter()
        .filter(|(path, _)| !ignored(DOCKER_EXPORT_EXTRAS, path))
        .collect();
    if !listing.keys().any(|p| p.starts_with("etc/")) {
        listing.remove("etc");
    }
    listing
}

fn describe_entry(entry: &FsEntry) -> String {
    let mut text = format!(
        "{} {:04o} {}:{}",
        entry.kind, entry.mode, entry.uid, entry.gid
    );
    match entry.kind {
        FsKind::File => {
            let sha = entry.content_sha256.as_deref().unwrap_or("?");
            text.push_str(&format!(
                " size={} sha256={}",
                entry.size,
                &sha[..sha.len().min(12)]
            ));
        }
        FsKind::Symlink | FsKind::Hardlink => {
            text.push_str(&format!(
                " -> {}",
                entry.link_target.as_deref().unwrap_or("?")
            ));
        }
        FsKind::Char | FsKind::Block => {
            if let Some((major, minor)) = entry.device {
                text.push_str(&format!(" {major},{minor}"));
            }
        }
        FsKind::Dir | FsKind::Fifo => {}
    }
    text
}

/// Human-readable differences between two listings (`a` is usually docker's,
/// `b` stowage's), one line per path, in path order: entries only in one of
/// them, and for common paths every differing attribute. Paths matching an
/// `ignore` pattern (see [`path_matches`]) are left out. Empty = identical.
pub fn diff_listings(
    a: &BTreeMap<String, FsEntry>,
    b: &BTreeMap<String, FsEntry>,
    ignore: &[&str],
) -> Vec<String> {
    let mut paths: Vec<&String> = a.keys().chain(b.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut diffs = Vec::new();
    for path in paths {
        if ignored(ignore, path) {
            continue;
        }
        match (a.get(path), b.get(path)) {
            (Some(x), None) => diffs.push(format!("only in a: {path} ({})", describe_entry(x))),
            (None, Some(y)) => diffs.push(format!("only in b: {path} ({})", describe_entry(y))),
            (Some(x), Some(y)) => {
                let mut what = Vec::new();
                if x.kind != y.kind {
                    what.push(format!("kind {} vs {}", x.kind, y.kind));
                }
                if x.mode != y.mode {
                    what.push(format!("mode {:04o} vs {:04o}", x.mode, y.mode));
                }
                if (x.uid, x.gid) != (y.uid, y.gid) {
                    what.push(format!("owner {}:{} vs {}:{}", x.uid, x.gid, y.uid, y.gid));
                }
                if x.size != y.size {
                    what.push(format!("size {} vs {}", x.size, y.size));
                }
                if x.link_target != y.link_target {
                    what.push(format!(
                        "link target {:?} vs {:?}",
                        x.link_target, y.link_target
                    ));
                }
                if x.content_sha256 != y.content_sha256 {
                    what.push(format!(
                        "content sha256 {} vs {}",
                        x.content_sha256.as_deref().unwrap_or("none"),
                        y.content_sha256.as_deref().unwrap_or("none")
                    ));
                }
                if x.device != y.device {
                    what.push(format!("device {:?} vs {:?}", x.device, y.device));
                }
                if !what.is_empty() {
                    diffs.push(format!("differs: {path}: {}", what.join(", ")));
                }
            }
            (None, None) => {}
        }
    }
    diffs
}

/// `docker load -i ARCHIVE`: the last image it reports (a `repo:tag` from
/// "Loaded image: ..." or an id from "Loaded image ID: ...").
pub fn docker_load(archive: &Path) -> String {
    ensure_dockerd();
    let mut cmd = docker();
    cmd.arg("load").arg("-i").arg(archive);
    let out = run_ok(cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut loaded = None;
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("Loaded image ID: ") {
            loaded = Some(id.trim().to_owned());
        } else if let Some(reference) = line.strip_prefix("Loaded image: ") {
            loaded = Some(reference.trim().to_owned());
        }
    }
    loaded.unwrap_or_else(|| {
        panic!(
            "docker load -i {}: no \"Loaded image\" line in:\n{text}",
            archive.display()
        )
    })
}

/// `docker run --rm IMAGE ARGS...`: (exit code, stdout, stderr). The exit code
/// is -1 if the client was killed by a signal. Panics only if docker cannot start.
pub fn docker_run(image: &str, args: &[&str]) -> (i32, String, String) {
    ensure_dockerd();
    let mut cmd = docker();
    cmd.args(["run", "--rm", image]).args(args);
    let what = describe(&cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `docker rmi --no-prune IMAGE`, best effort (cleanup): a failure is only printed. The
/// untagged parents stay: with the classic builder they are the step cache that another
/// test's concurrent build may be using as its parent at that moment (removing them made
/// that build fail with "failed to get digest ...: no such file").
pub fn docker_rmi(image: &str) {
    match docker_rmi_with(&["--no-prune", image]) {
        Some(out) if out.status.success() => {}
        Some(out) => eprintln!(
            "warning: docker rmi {image}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        None => eprintln!("warning: cannot run docker rmi {image}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().expect("finish tar")
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(size);
        h.set_mtime(0);
        h
    }

    /// Writes `name` into the header's name field as is (no validation).
    fn raw_name(h: &mut tar::Header, name: &str) {
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name.as_bytes());
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        stowage_digest::Digest::of(bytes).hex()
    }

    #[test]
    fn normalize_tar_path_strips_prefixes_and_trailing_slash() {
        assert_eq!(normalize_tar_path("./etc/passwd"), "etc/passwd");
        assert_eq!(normalize_tar_path("/etc/"), "etc");
        assert_eq!(normalize_tar_path(".//./bin/sh"), "bin/sh");
        assert_eq!(normalize_tar_path("./"), "");
        assert_eq!(normalize_tar_path("."), "");
        assert_eq!(normalize_tar_path("/"), "");
        assert_eq!(normalize_tar_path(".dockerenv"), ".dockerenv");
    }

    #[test]
    fn fs_listing_from_tar_reads_every_kind() {
        let data = tar_with(|b| {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            b.append_data(&mut h, "./", io::empty()).unwrap();
            let mut h = header(tar::EntryType::Directory, 0o1777, 0);
            b.append_data(&mut h, "./tmp/", io::empty()).unwrap();
            let mut h = header(tar::EntryType::Regular, 0o4755, 5);
            h.set_uid(1000);
            h.set_gid(100);
            b.append_data(&mut h, "./bin/su", &b"hello"[..]).unwrap();
            let mut h = header(tar::EntryType::Link, 0o755, 0);
            b.append_link(&mut h, "bin/su-again", "./bin/su").unwrap();
            // an absolute member name, which the tar crate's builder refuses to write
            let mut h = header(tar::EntryType::Symlink, 0o777, 0);
            raw_name(&mut h, "/bin/sh");
            h.set_link_name("busybox").unwrap();
            h.set_cksum();
            b.append(&h, io::empty()).unwrap();
            let mut h = header(tar::EntryType::Char, 0o666, 0);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            b.append_data(&mut h, "dev/null", io::empty()).unwrap();
            let mut h = header(tar::EntryType::Block, 0o660, 0);
            h.set_device_major(8).unwrap();
            h.set_device_minor(0).unwrap();
            b.append_data(&mut h, "dev/sda", io::empty()).unwrap();
            let mut h = header(tar::EntryType::Fifo, 0o600, 0);
            b.append_data(&mut h, "run/fifo", io::empty()).unwrap();
            // a long name goes through a GNU long-name extension header
            let long = format!("deep/{}/file", "d".repeat(150));
            let mut h = header(tar::EntryType::Regular, 0o644, 0);
            b.append_data(&mut h, &long, io::empty()).unwrap();
        });
        let listing = fs_listing_from_tar(&data[..]);
        let kinds: Vec<(&str, FsKind)> =
            listing.iter().map(|(p, e)| (p.as_str(), e.kind)).collect();
        let long = format!("deep/{}/file", "d".repeat(150));
        assert_eq!(
            kinds,
            vec![
                ("bin/sh", FsKind::Symlink),
                ("bin/su", FsKind::File),
                ("bin/su-again", FsKind::Hardlink),
                (long.as_str(), FsKind::File),
                ("dev/null", FsKind::Char),
                ("dev/sda", FsKind::Block),
                ("run/fifo", FsKind::Fifo),
                ("tmp", FsKind::Dir),
            ]
        );
        let su = &listing["bin/su"];
        assert_eq!((su.mode, su.uid, su.gid, su.size), (0o4755, 1000, 100, 5));
        assert_eq!(su.content_sha256.as_deref(), Some(&*sha256_hex(b"hello")));
        let again = &listing["bin/su-again"];
        assert_eq!(again.link_target.as_deref(), Some("bin/su"));
        assert_eq!(again.content_sha256, su.content_sha256);
        assert_eq!(listing["bin/sh"].link_target.as_deref(), Some("busybox"));
        assert_eq!(listing["tmp"].mode, 0o1777);
        assert_eq!(listing["dev/null"].device, Some((1, 3)));
        assert_eq!(listing["dev/sda"].device, Some((8, 0)));
        assert_eq!(
            listing[&long].content_sha256.as_deref(),
            Some(&*sha256_hex(b""))
        );
    }

    #[test]
    fn path_matches_globs() {
        assert!(path_matches("dev/*", "dev/pts"));
        assert!(path_matches("dev/*", "dev/pts/0"));
        assert!(!path_matches("dev/*", "dev"));
        assert!(!path_matches("dev/*", "devices"));
        assert!(path_matches("etc/hosts", "etc/hosts"));
        assert!(!path_matches("etc/hosts", "etc/hosts.allow"));
        assert!(path_matches("*.pyc", "usr/lib/x.pyc"));
        assert!(path_matches("usr/*/doc/*", "usr/share/doc/a/b"));
        assert!(!path_matches("usr/*/doc/*", "usr/share/man/a"));
        assert!(path_matches("*", ""));
    }

    fn entry(path: &str, kind: FsKind, mode: u32) -> FsEntry {
        FsEntry {
            path: path.to_owned(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            size: 0,
            link_target: None,
            content_sha256: None,
            device: None,
        }
    }

    #[test]
    fn diff_listings_reports_each_difference_and_honours_ignore() {
        let mut a = BTreeMap::new();
        let mut b = BTreeMap::new();
        for e in [
            entry("bin", FsKind::Dir, 0o755),
            entry("only-a", FsKind::File, 0o644),
            entry("var/cache/x", FsKind::File, 0o644),
        ] {
            a.insert(e.path.clone(), e);
        }
        let mut file_a = entry("f", FsKind::File, 0o644);
        file_a.size = 3;
        file_a.content_sha256 = Some(sha256_hex(b"abc"));
        a.insert("f".into(), file_a.clone());
        let mut file_b = file_a.clone();
        file_b.mode = 0o600;
        file_b.uid = 1;
        file_b.content_sha256 = Some(sha256_hex(b"abd"));
        b.insert("f".into(), file_b);
        b.insert("bin".into(), entry("bin", FsKind::Dir, 0o755));
        b.insert("only-b".into(), entry("only-b", FsKind::Symlink, 0o777));

        assert!(diff_listings(&a, &a, &[]).is_empty());
        let diffs = diff_listings(&a, &b, &["var/*"]);
        assert_eq!(diffs.len(), 3, "{diffs:#?}");
        assert!(
            diffs[0].starts_with("differs: f: mode 0644 vs 0600, owner 0:0 vs 1:0"),
            "{}",
            diffs[0]
        );
        assert!(diffs[0].contains("content sha256"), "{}", diffs[0]);
        assert!(
            diffs[1].starts_with("only in a: only-a (file 0644"),
            "{}",
            diffs[1]
        );
        assert!(
            diffs[2].starts_with("only in b: only-b (symlink"),
            "{}",
            diffs[2]
        );
        assert_eq!(diff_listings(&a, &b, &["*"]), Vec::<String>::new());
    }

    /// A `FROM scratch` context: a static busybox and a Dockerfile that makes
    /// one entry of each interesting kind.
    fn busybox_context() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::copy("/bin/busybox", dir.path().join("busybox"))
            .expect("copy /bin/busybox (package busybox-static; run scripts/services.sh deps)");
        fs::set_permissions(
            dir.path().join("busybox"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod busybox");
        fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\n\
             COPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
             ARG GREETING=unset\n\
             ENV STOWAGE_TEST=1\n\
             RUN mkdir -p /data /scratch && echo \"$GREETING\" > /data/file \\\n \
                 && chmod 0640 /data/file && chown 1000:100 /data/file \\\n \
                 && ln /data/file /data/hard && mkfifo /data/fifo \\\n \
                 && chmod 1777 /scratch && chmod 4755 /bin/busybox\n\
             CMD [\"/bin/sh\"]\n",
        )
        .expect("write Dockerfile");
        dir
    }

    fn unique_tag(name: &str) -> String {
        format!("stowage-test/support-docker-{name}:{}", std::process::id())
    }

    #[test]
    fn classic_build_listing_config_and_run() {
        ensure_dockerd();
        let ctx = busybox_context();
        let tag = unique_tag("classic");
        let id = docker_build_classic(
            &ctx.path().join("Dockerfile"),
            ctx.path(),
            &tag,
            &[("GREETING", "hello")],
        )
        .unwrap_or_else(|log| panic!("classic build failed:\n{log}"));
        assert!(id.starts_with("sha256:"), "image id {id}");

        let inspected = docker_inspect(&tag);
        assert_eq!(inspected["Id"], serde_json::Value::String(id.clone()));
        let config = docker_config(&tag);
        assert_eq!(config["Cmd"], serde_json::json!(["/bin/sh"]));
        let env = config["Env"].as_array().expect("Env array");
        assert!(env.iter().any(|v| v == "STOWAGE_TEST=1"), "Env: {env:?}");

        let listing = docker_fs_listing(&tag);
        let busybox = &listing["bin/busybox"];
        let host_busybox = fs::read("/bin/busybox").expect("read /bin/busybox");
        assert_eq!(busybox.kind, FsKind::File);
        assert_eq!(busybox.mode, 0o4755);
        assert_eq!(busybox.size, host_busybox.len() as u64);
        assert_eq!(
            busybox.content_sha256.as_deref(),
            Some(&*sha256_hex(&host_busybox))
        );
        let sh = &listing["bin/sh"];
        assert_eq!(
            (sh.kind, sh.link_target.as_deref()),
            (FsKind::Symlink, Some("/bin/busybox"))
        );
        let file = &listing["data/file"];
        assert_eq!(
            (file.kind, file.mode, file.uid, file.gid),
            (FsKind::File, 0o640, 1000, 100)
        );
        assert_eq!(
            file.content_sha256.as_deref(),
            Some(&*sha256_hex(b"hello\n"))
        );
        let hard = &listing["data/hard"];
        assert!(
            (hard.kind == FsKind::Hardlink && hard.link_target.as_deref() == Some("data/file"))
                || (file.kind == FsKind::Hardlink
                    && file.link_target.as_deref() == Some("data/hard")),
            "data/hard {hard:?} / data/file {file:?}"
        );
        assert_eq!(listing["data/fifo"].kind, FsKind::Fifo);
        assert_eq!(
            (listing["scratch"].kind, listing["scratch"].mode),
            (FsKind::Dir, 0o1777)
        );
        // what docker export adds is gone, and this image has no /etc of its own
        for extra in [
            ".dockerenv",
            "dev",
            "dev/console",
            "proc",
            "sys",
            "etc",
            "etc/hosts",
            "etc/mtab",
        ] {
            assert!(
                !listing.contains_key(extra),
                "{extra} should be filtered: {:?}",
                listing.get(extra)
            );
        }

        let (code, stdout, stderr) =
            docker_run(&tag, &["/bin/sh", "-c", "cat /data/file; id -u; exit 3"]);
        assert_eq!(code, 3, "stderr: {stderr}");
        assert_eq!(stdout, "hello\n0\n");

        docker_rmi(&tag);
        assert!(
            !docker()
                .args(["image", "inspect", &tag])
                .output()
                .expect("docker")
                .status
                .success(),
            "{tag} still present after docker_rmi"
        );
    }

    #[test]
    fn classic_and_buildkit_agree_and_failures_return_the_log() {
        ensure_dockerd();
        let ctx = busybox_context();
        let df = ctx.path().join("Dockerfile");
        let classic_tag = unique_tag("agree-classic");
        let buildkit_tag = unique_tag("agree-buildkit");
        docker_build_classic(&df, ctx.path(), &classic_tag, &[("GREETING", "same")])
            .unwrap_or_else(|log| panic!("classic build failed:\n{log}"));
        docker_build_buildkit(&df, ctx.path(), &buildkit_tag, &[("GREETING", "same")])
            .unwrap_or_else(|log| panic!("BuildKit build failed:\n{log}"));
        let classic = docker_fs_listing(&classic_tag);
        let buildkit = docker_fs_listing(&buildkit_tag);
        assert_eq!(
            diff_listings(&classic, &buildkit, &[]),
            Vec::<String>::new()
        );
        docker_rmi(&classic_tag);
        docker_rmi(&buildkit_tag);

        // fails at its first step, so the classic builder leaves no intermediate image
        let bad = ctx.path().join("Bad.Dockerfile");
        fs::write(&bad, "FROM scratch\nRUN [\"/bin/busybox\", \"true\"]\n")
            .expect("write Bad.Dockerfile");
        for (builder, result) in [
            (
                "classic",
                docker_build_classic(&bad, ctx.path(), &unique_tag("bad"), &[]),
            ),
            (
                "buildkit",
                docker_build_buildkit(&bad, ctx.path(), &unique_tag("bad"), &[]),
            ),
        ] {
            let log = result.expect_err("a failing RUN must fail the build");
            assert!(
                log.contains("busybox"),
                "{builder} log does not show the failing step:\n{log}"
            );
        }
    }

    #[test]
    fn docker_load_round_trips_a_saved_image() {
        ensure_dockerd();
        let ctx = busybox_context();
        let tag = unique_tag("load");
        docker_build_classic(&ctx.path().join("Dockerfile"), ctx.path(), &tag, &[])
            .unwrap_or_else(|log| panic!("classic build failed:\n{log}"));
        let archive = ctx.path().join("saved.tar");
        let mut save = docker();
        save.arg("save").arg("-o").arg(&archive).arg(&tag);
        run_ok(save);
        docker_rmi(&tag);
        assert_eq!(docker_load(&archive), tag);
        let (code, stdout, _) = docker_run(&tag, &["/bin/cat", "/data/file"]);
        assert_eq!((code, stdout.as_str()), (0, "unset\n"));
        docker_rmi(&tag);
    }
}
