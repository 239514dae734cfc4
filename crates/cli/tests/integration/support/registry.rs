//! Registry-side helpers for the pull/push tests: real `docker-registry`
//! instances and a scriptable fake HTTP registry (both from `stowage-testkit`,
//! shared with the registry and distribution crates' tests), a busybox rootfs
//! tarball made from `/bin/busybox`, and a `stowage` command builder with its
//! own store root and Docker config. Missing binaries make the tests fail with
//! a clear message; they never skip.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use stowage_testkit::{
    FakeServer, RegistryProcess, SeenRequest, free_port, http_response, require,
};

pub const SKOPEO_BIN: &str = "/usr/bin/skopeo";
pub const BUSYBOX_BIN: &str = "/bin/busybox";

/// A tiny busybox root filesystem tar (`/bin/busybox`, `/bin/sh` and `/bin/echo`
/// links, `/etc/passwd`) built from the host's static busybox.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    require(BUSYBOX_BIN, "busybox-static");
    let busybox = std::fs::read(BUSYBOX_BIN).expect("read busybox");
    let path = dir.join("busybox-rootfs.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&path).expect("create tar"));
    let dir_header = |name: &str| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(946_684_800);
        header.set_cksum();
        (header, name.to_owned())
    };
    for name in ["bin/", "etc/"] {
        let (mut header, name) = dir_header(name);
        builder
            .append_data(&mut header, name, std::io::empty())
            .expect("dir");
    }
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_size(busybox.len() as u64);
    header.set_mtime(946_684_800);
    header.set_cksum();
    builder
        .append_data(&mut header, "bin/busybox", busybox.as_slice())
        .expect("busybox");
    for applet in ["sh", "echo", "cat"] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        header.set_mtime(946_684_800);
        builder
            .append_link(&mut header, format!("bin/{applet}"), "busybox")
            .expect("link");
    }
    let passwd = b"root:x:0:0:root:/root:/bin/sh\n";
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(passwd.len() as u64);
    header.set_mtime(946_684_800);
    header.set_cksum();
    builder
        .append_data(&mut header, "etc/passwd", passwd.as_slice())
        .expect("passwd");
    builder.into_inner().expect("finish tar");
    path
}

/// A `stowage` command with its own store root and Docker config directory.
pub struct Stowage {
    pub root: PathBuf,
    pub docker_config: PathBuf,
    pub certs_dir: Option<PathBuf>,
}

impl Stowage {
    /// Fresh root and Docker config below `dir`.
    pub fn new(dir: &Path) -> Self {
        let root = dir.join("root");
        let docker_config = dir.join("docker-config");
        std::fs::create_dir_all(&docker_config).expect("mkdir docker config");
        Stowage {
            root,
            docker_config,
            certs_dir: None,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stowage"));
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .env("DOCKER_CONFIG", &self.docker_config)
            .env(
                "STOWAGE_REGISTRY_CERTS_DIR",
                self.certs_dir
                    .clone()
                    .unwrap_or_else(|| self.root.join("no-certs.d")),
            )
            .stdin(Stdio::null());
        cmd
    }

    /// Runs and returns the output, whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run stowage")
    }

    /// Runs with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stowage");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait stowage")
    }

    /// Runs and panics with the output unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "stowage {args:?} failed:\n{}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs, expects failure, returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "stowage {args:?} succeeded but should fail:\n{}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn store(&self) -> stowage_store::Store {
        stowage_store::Store::open(&self.root).expect("open store")
    }

    /// Panics unless the store verifies clean.
    pub fn assert_store_verifies(&self) {
        let report = self.store().verify().expect("verify");
        assert!(
            report.is_ok(),
            "store does not verify: {:?}",
            report.problems
        );
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
