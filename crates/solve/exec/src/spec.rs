//! The description of one sandboxed run (what the solver hands to the executor) and its outcome.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The root filesystem the command sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootFs {
    /// An overlay of read-only image layers with a fresh writable upper directory.
    ///
    /// After the run `upper` holds exactly the layer diff (whiteouts as 0/0
    /// character devices, opaque directories with `trusted.overlay.opaque=y`).
    /// Both `upper` and `work` belong to the caller and must be on the same
    /// filesystem; `work` must be empty.
    Overlay {
        /// Unpacked layer directories, **top-most first** (the order of
        /// overlayfs's `lowerdir=`; the image's last layer comes first).
        /// May be empty (a `FROM scratch` RUN).
        lowers: Vec<PathBuf>,
        /// The writable upper directory: the layer diff after the run.
        upper: PathBuf,
        /// overlayfs's scratch work directory.
        work: PathBuf,
    },
    /// A plain directory used read-write as the root (tests, or a pre-merged rootfs).
    ///
    /// Missing mount points are created directly in it.
    Directory(PathBuf),
}

/// Which network namespace the command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// Share the host's network namespace (`RUN --network=host`, Docker's build default).
    #[default]
    Host,
    /// A new network namespace with only the loopback interface, up.
    None,
}

/// An extra mount for the command (the future `RUN --mount` support).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtraMount {
    /// Bind a host directory or file at `target` (recursively).
    Bind {
        /// Host path.
        source: PathBuf,
        /// Absolute path inside the container.
        target: PathBuf,
        /// Make the bind read-only.
        read_only: bool,
    },
    /// A fresh tmpfs at `target`.
    Tmpfs {
        /// Absolute path inside the container.
        target: PathBuf,
        /// Size limit in bytes (kernel default, half of RAM, when `None`).
        size_bytes: Option<u64>,
    },
    /// A host file bound read-only at `target` (secrets).
    SecretFile {
        /// Host file holding the secret.
        source: PathBuf,
        /// Absolute path inside the container (e.g. `/run/secrets/id`).
        target: PathBuf,
    },
}

impl ExtraMount {
    /// The absolute target path inside the container.
    pub fn target(&self) -> &PathBuf {
        match self {
            ExtraMount::Bind { target, .. }
            | ExtraMount::Tmpfs { target, .. }
            | ExtraMount::SecretFile { target, .. } => target,
        }
    }
}

/// Everything needed to run one command in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The root filesystem.
    pub rootfs: RootFs,
    /// The command; `argv[0]` without a `/` is searched in the `PATH` of `env`
    /// (Docker's default PATH when `env` has none). Must not be empty.
    pub argv: Vec<OsString>,
    /// Environment, in order, as (name, value). Passed exactly as given.
    pub env: Vec<(OsString, OsString)>,
    /// Absolute working directory inside the container; created (with its
    /// missing parents, owned by the user) when missing, like Docker's WORKDIR.
    pub cwd: PathBuf,
    /// `""` (root), `name`, `uid`, `name:group`, `uid:gid` (any mix), resolved
    /// through the rootfs's /etc/passwd and /etc/group.
    pub user: String,
    /// The container's hostname (also written to /etc/hostname and /etc/hosts).
    pub hostname: String,
    /// Network namespace choice.
    pub network: NetworkMode,
    /// Extra mounts, performed in order after the standard ones.
    pub mounts: Vec<ExtraMount>,
}

impl RunSpec {
    /// A spec with root user, cwd `/`, hostname `stowage`, host network, no env and no mounts.
    pub fn new(rootfs: RootFs, argv: Vec<OsString>) -> Self {
        RunSpec {
            rootfs,
            argv,
            env: Vec::new(),
            cwd: PathBuf::from("/"),
            user: String::new(),
            hostname: "stowage".to_owned(),
            network: NetworkMode::Host,
            mounts: Vec::new(),
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Normal exit with this code.
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
}

impl ExitStatus {
    /// True for `Exited(0)`.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

/// A handle to kill a running command from another thread (Ctrl-C, timeouts).
///
/// Cancelling makes [`crate::Sandbox::run_cancellable`] SIGKILL the
/// container's PID 1 (and thereby everything in it) within about 100 ms;
/// the run then returns `ExitStatus::Signaled(9)`.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, not yet cancelled token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Request cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
