//! The typed error returned by every sandbox operation.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while preparing or running a sandboxed command.
///
/// A command that runs and exits non-zero is *not* an error: it is an
/// [`crate::ExitStatus`]. Errors are about the sandbox itself.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The spec is malformed (empty argv, NUL byte, relative path, `..` in a target...).
    #[error("invalid run spec: {reason}")]
    InvalidSpec {
        /// What is wrong, naming the field.
        reason: String,
    },
    /// A user name that the rootfs's /etc/passwd does not know.
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UnknownUser {
        /// The user name as written in the spec.
        user: String,
    },
    /// A group name that the rootfs's /etc/group does not know.
    #[error("unable to find group {group}: no matching entries in group file")]
    UnknownGroup {
        /// The group name as written in the spec.
        group: String,
    },
    /// A malformed `USER` value (empty part, out-of-range id).
    #[error("invalid user {spec:?}: {reason}")]
    InvalidUser {
        /// The user spec as written.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The legacy overlay mount data does not fit in one page and the fd-based API was not allowed.
    #[error(
        "overlay mount options are {len} bytes, more than the 4095 a legacy mount accepts (or a path contains ',' ':' or '\\')"
    )]
    OverlayOptionsTooLong {
        /// Length of the option string that would have been needed.
        len: usize,
    },
    /// A mount point cannot be planned because one of its ancestors in the rootfs is not a directory.
    #[error(
        "cannot place mount point {target}: {blocker} in the root filesystem is not a directory"
    )]
    MountTargetBlocked {
        /// The mount target inside the container.
        target: PathBuf,
        /// The ancestor that is a file, symlink or whiteout.
        blocker: PathBuf,
    },
    /// A host-side file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("create directory", "read passwd file"...).
        action: &'static str,
        /// The host path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Creating pipes or cloning the sandboxed process failed.
    #[error("could not start the sandbox process: {0}")]
    Spawn(#[source] io::Error),
    /// A setup step inside the new namespaces failed before the command could start.
    #[error("sandbox setup failed at step {step}: {source}")]
    Setup {
        /// Human description of the failing step (e.g. `mount proc on /proc`).
        step: String,
        /// The errno reported by the child.
        #[source]
        source: io::Error,
    },
    /// The command could not be executed (not found, not executable).
    #[error("cannot execute {program:?}: {source}")]
    Exec {
        /// argv[0] as given.
        program: String,
        /// The errno from execve (ENOENT when not found in $PATH).
        #[source]
        source: io::Error,
    },
    /// The output sink refused data; the command was killed.
    #[error("writing command output failed: {0}")]
    Output(#[source] io::Error),
    /// Waiting for or reading from the sandboxed process failed.
    #[error("waiting for the sandboxed process failed: {0}")]
    Wait(#[source] io::Error),
}

impl ExecError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        ExecError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        ExecError::InvalidSpec {
            reason: reason.into(),
        }
    }
}
