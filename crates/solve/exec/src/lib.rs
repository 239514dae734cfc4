//! The sandbox that runs Dockerfile `RUN` steps, like Docker's runc, without a daemon.
//!
//! # Use
//! ```no_run
//! use stowage_exec::{RootFs, RunSpec, Sandbox};
//! let spec = RunSpec::new(
//!     RootFs::Overlay {
//!         lowers: vec!["/store/layers/top".into(), "/store/layers/base".into()], // top-most first
//!         upper: "/store/tmp/run1/upper".into(),
//!         work: "/store/tmp/run1/work".into(),
//!     },
//!     vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
//! );
//! let status = Sandbox::new().run(&spec, &mut std::io::stdout())?;
//! assert!(status.success());
//! # Ok::<(), stowage_exec::ExecError>(())
//! ```
//!
//! # How a run works
//! 1. **Host side, in the calling thread** (module `sandbox`): a scratch run
//!    directory is created; the mount points the image lacks are planned
//!    into a *scaffold layer* (module `layers`) mounted as the top-most lower, so
//!    they never reach the upper directory (the layer diff); the user is
//!    resolved through the layers' /etc/passwd and /etc/group (module `users`);
//!    /etc/hosts and /etc/hostname are generated; and the child's whole
//!    program is planned as data ([`plan`] → `child::Step`).
//! 2. **Clone**: a raw fork-like `clone(CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWIPC|
//!    CLONE_NEWUTS[|CLONE_NEWNET]|SIGCHLD)` without a new stack. The child is
//!    PID 1 of the new PID namespace, so when the command exits the kernel
//!    kills everything left in it, as with `docker build`.
//! 3. **Child**: walks the prepared steps with raw syscalls only (no
//!    allocation, no locks, no panics): `/` made rprivate, the overlay
//!    mounted (fd-based `fsopen`/`fsconfig("lowerdir+")`, which has no page
//!    limit, falling back to mount(2) data when that API is missing), /proc,
//!    a tmpfs /dev with null, zero, full, random, urandom, tty, /dev/pts
//!    (devpts newinstance, `ptmx` link), /dev/shm, /dev/mqueue, read-only
//!    /sys, the /etc files, extra mounts; then `pivot_root(".", ".")` and a
//!    lazy unmount of the old root, hostname, loopback up (network none),
//!    WORKDIR creation (owned by the user), stdio (stdin /dev/null, stdout
//!    and stderr one pipe), Docker's default capabilities, the user's ids,
//!    every fd >= 3 marked close-on-exec, and `execve` through `$PATH`.
//!    A failing step sends (step index, errno) up a CLOEXEC pipe and exits;
//!    the parent turns it into [`ExecError::Setup`] or [`ExecError::Exec`].
//! 4. **Parent**: streams the output pipe to the caller's `Write` in chunks
//!    as it arrives, then reaps the child and reports [`ExitStatus`].
//!
//! # Why a raw clone and not `Command::pre_exec`
//! `pre_exec` runs after a plain `fork`, so the child would not be PID 1 of
//! a new PID namespace (unshare(CLONE_NEWPID) only affects *later* children,
//! which would need a second fork and an init to forward exit statuses). A
//! fork-like `clone` with the namespace flags gives PID 1 directly, and the
//! data-driven step list keeps the post-fork code free of allocation, which a
//! multi-threaded caller requires. The steps run through the `ChildSys` trait,
//! so the same interpreter is unit-tested with a recording fake.
//!
//! # Cleanup
//! Every mount is made inside the child's private mount namespace and
//! vanishes with it; the host's mount table never changes, even if the caller
//! is killed (the container also receives SIGKILL when the calling thread
//! dies, via `PR_SET_PDEATHSIG`). The upper and work directories belong to the
//! caller; the scratch run directory is removed after the run.
//!
//! # Limits
//! - Mount points nested under a directory *bind* target are not created in
//!   the bound source.
//! - A mount point whose ancestor in the image is a file or symlink is an
//!   error ([`ExecError::MountTargetBlocked`]); a symlinked mount point itself
//!   (e.g. /etc/resolv.conf → systemd's stub) is shadowed by a scaffold file
//!   for the duration of the run.
//! - Scaffold directories copy mode, owner and times of the image's directory,
//!   but not its xattrs.

mod child;
mod error;
mod layers;
mod plan;
mod sandbox;
mod spec;
mod sys;
mod users;

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod sandbox_tests;

pub use error::ExecError;
pub use plan::{DEFAULT_PATH, DOCKER_DEFAULT_CAPABILITIES, OverlayApi};
pub use sandbox::{Sandbox, SandboxOptions};
pub use spec::{CancelToken, ExitStatus, ExtraMount, NetworkMode, RootFs, RunSpec};
pub use users::{ResolvedUser, resolve_user};
