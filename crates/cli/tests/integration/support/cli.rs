//! Running the `stowage` binary from tests: a command on a store root, its captured
//! result, and the root check the building tests share.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `stowage --root ROOT` with no standard input.
pub fn stowage(root: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stowage"));
    cmd.arg("--root").arg(root).stdin(Stdio::null());
    cmd
}

/// The result of one command.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn from(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Exit code and both streams, for assertion messages.
    pub fn both(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` and captures it.
pub fn run(mut cmd: Command) -> Ran {
    Ran::from(cmd.output().expect("cannot start the command"))
}

/// Runs `cmd`, which must exit 0.
pub fn run_ok(cmd: Command) -> Ran {
    let ran = run(cmd);
    assert_eq!(ran.code, Some(0), "{}", ran.both());
    ran
}

/// Fails the test unless it runs as root (RUN needs namespaces and overlay mounts, COPY
/// keeps owners).
pub fn require_root() {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .expect("Uid line");
    assert_eq!(
        euid, "0",
        "these tests must run as root (RUN uses namespaces and overlayfs)"
    );
}
