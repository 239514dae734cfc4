//! The setup program the cloned child runs, as data, and its interpreter.
//!
//! Everything the child does is decided in the parent and stored as a list of
//! [`Step`]s holding ready-made C strings and pointer arrays. The interpreter
//! [`run_steps`] walks that list calling the primitives of a [`ChildSys`]; in
//! the real child that is [`crate::sys::RawSys`], whose methods are single raw
//! syscalls, so nothing between `clone` and `execve` allocates, locks or
//! panics. Tests drive the same interpreter with a recording fake.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;

/// An errno value.
pub(crate) type Errno = i32;

/// `execve` arguments prepared in the parent: owned strings plus the
/// NULL-terminated pointer arrays into them.
#[derive(Debug)]
pub(crate) struct ExecArgs {
    /// Paths to try in order (argv[0], or each `$PATH` entry joined with it).
    pub candidates: Vec<CString>,
    #[allow(dead_code, reason = "owns the strings argv_ptrs points into")]
    argv: Vec<CString>,
    #[allow(dead_code, reason = "owns the strings envp_ptrs points into")]
    envp: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
}

impl ExecArgs {
    pub(crate) fn new(candidates: Vec<CString>, argv: Vec<CString>, envp: Vec<CString>) -> Self {
        let argv_ptrs = argv
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp_ptrs = envp
            .iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        ExecArgs {
            candidates,
            argv,
            envp,
            argv_ptrs,
            envp_ptrs,
        }
    }

    /// NULL-terminated argv for execve.
    pub(crate) fn argv_ptr(&self) -> *const *const c_char {
        self.argv_ptrs.as_ptr()
    }

    /// NULL-terminated envp for execve.
    pub(crate) fn envp_ptr(&self) -> *const *const c_char {
        self.envp_ptrs.as_ptr()
    }

    #[cfg(test)]
    pub(crate) fn argv(&self) -> &[CString] {
        &self.argv
    }

    #[cfg(test)]
    pub(crate) fn envp(&self) -> &[CString] {
        &self.envp
    }
}

/// How the overlay root is mounted.
#[derive(Debug)]
pub(crate) struct OverlayMount {
    /// Lower dirs, top-most first (scaffold first when present).
    pub lowers: Vec<CString>,
    pub upper: CString,
    pub work: CString,
    pub target: CString,
    /// `(key, value)` options given to fsconfig, e.g. `("redirect_dir", "off")`.
    pub options: Vec<(CString, CString)>,
    /// Whether to try the fd-based API (fsopen + `lowerdir+`) first.
    pub use_fd_api: bool,
    /// The classic mount(2) data string, when it fits in a page.
    pub legacy_data: Option<CString>,
}

/// One setup action of the child, performed in order.
#[derive(Debug)]
pub(crate) enum Step {
    /// Default dispositions and an empty mask for every signal.
    ResetSignals,
    /// SIGKILL the container when the spawning thread dies.
    ParentDeathSignal,
    Umask(u32),
    /// `mount --make-rprivate /`.
    MakeRootPrivate,
    MountOverlay(OverlayMount),
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// Bind remount with extra flags (read-only binds).
    Remount {
        target: CString,
        flags: libc::c_ulong,
    },
    Mkdir {
        path: CString,
        mode: u32,
    },
    Mknod {
        path: CString,
        mode: u32,
        dev: u64,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// chdir(new_root); pivot_root(".", "."); umount2(".", MNT_DETACH); chdir("/").
    PivotRoot {
        new_root: CString,
    },
    SetHostname(CString),
    LoopbackUp,
    /// Creates each missing directory (parents first), chowning the new ones.
    MakeWorkdir {
        chain: Vec<CString>,
        uid: u32,
        gid: u32,
    },
    Chdir(CString),
    /// stdin from `null_path`, stdout and stderr onto `output_fd`.
    Stdio {
        null_path: CString,
        output_fd: i32,
    },
    /// Drop every capability not in `keep` from the bounding set, clear the
    /// ambient set, set effective = permitted = `keep`, inheritable = 0.
    Capabilities {
        keep: u64,
    },
    SetIds {
        uid: u32,
        gid: u32,
        groups: Vec<u32>,
    },
    /// Mark every fd >= 3 close-on-exec.
    CloseOnExecFrom(i32),
    Exec(ExecArgs),
}

impl Step {
    /// A short human description used in setup error messages.
    pub(crate) fn describe(&self) -> String {
        fn s(c: &CStr) -> String {
            c.to_string_lossy().into_owned()
        }
        match self {
            Step::ResetSignals => "reset signals".to_owned(),
            Step::ParentDeathSignal => "set parent death signal".to_owned(),
            Step::Umask(mode) => format!("umask {mode:o}"),
            Step::MakeRootPrivate => "make / private".to_owned(),
            Step::MountOverlay(o) => format!(
                "mount overlay ({} lowers, upper {}) on {}",
                o.lowers.len(),
                s(&o.upper),
                s(&o.target)
            ),
            Step::Mount {
                source,
                target,
                fstype,
                ..
            } => format!(
                "mount {} ({}) on {}",
                source.as_deref().map(s).unwrap_or_default(),
                fstype
                    .as_deref()
                    .map(s)
                    .unwrap_or_else(|| "bind".to_owned()),
                s(target)
            ),
            Step::Remount { target, .. } => format!("remount {} read-only", s(target)),
            Step::Mkdir { path, .. } => format!("mkdir {}", s(path)),
            Step::Mknod { path, .. } => format!("mknod {}", s(path)),
            Step::Symlink { link, .. } => format!("symlink {}", s(link)),
            Step::PivotRoot { new_root } => format!("pivot_root into {}", s(new_root)),
            Step::SetHostname(name) => format!("sethostname {}", s(name)),
            Step::LoopbackUp => "bring loopback up".to_owned(),
            Step::MakeWorkdir { chain, .. } => format!(
                "create working directory {}",
                chain.last().map(|c| s(c)).unwrap_or_default()
            ),
            Step::Chdir(path) => format!("chdir {}", s(path)),
            Step::Stdio { .. } => "set up stdin/stdout/stderr".to_owned(),
            Step::Capabilities { .. } => "set capabilities".to_owned(),
            Step::SetIds { uid, gid, .. } => format!("switch to uid {uid} gid {gid}"),
            Step::CloseOnExecFrom(fd) => format!("close file descriptors from {fd}"),
            Step::Exec(args) => format!(
                "execute {}",
                args.candidates.first().map(|c| s(c)).unwrap_or_default()
            ),
        }
    }
}

/// The raw primitives the child needs. Implementations must not allocate.
pub(crate) trait ChildSys {
    fn reset_signals(&mut self) -> Result<(), Errno>;
    fn set_parent_death_signal(&mut self) -> Result<(), Errno>;
    fn umask(&mut self, mode: u32);
    fn mount(
        &mut self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> Result<(), Errno>;
    fn fsopen(&mut self, fstype: &CStr) -> Result<i32, Errno>;
    fn fsconfig_string(&mut self, fd: i32, key: &CStr, value: &CStr) -> Result<(), Errno>;
    fn fsconfig_create(&mut self, fd: i32) -> Result<(), Errno>;
    fn fsmount(&mut self, fd: i32) -> Result<i32, Errno>;
    fn move_mount(&mut self, fd: i32, target: &CStr) -> Result<(), Errno>;
    fn close(&mut self, fd: i32);
    fn mkdir(&mut self, path: &CStr, mode: u32) -> Result<(), Errno>;
    fn chown(&mut self, path: &CStr, uid: u32, gid: u32) -> Result<(), Errno>;
    fn mknod(&mut self, path: &CStr, mode: u32, dev: u64) -> Result<(), Errno>;
    fn symlink(&mut self, target: &CStr, link: &CStr) -> Result<(), Errno>;
    fn chdir(&mut self, path: &CStr) -> Result<(), Errno>;
    fn pivot_root(&mut self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno>;
    fn umount_detach(&mut self, path: &CStr) -> Result<(), Errno>;
    fn sethostname(&mut self, name: &[u8]) -> Result<(), Errno>;
    fn loopback_up(&mut self) -> Result<(), Errno>;
    fn open_read(&mut self, path: &CStr) -> Result<i32, Errno>;
    fn dup2(&mut self, old: i32, new: i32) -> Result<(), Errno>;
    /// PR_CAPBSET_DROP; `Err(EINVAL)` past the kernel's last capability.
    fn drop_bounding_cap(&mut self, cap: u32) -> Result<(), Errno>;
    fn clear_ambient_caps(&mut self) -> Result<(), Errno>;
    fn capset(&mut self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno>;
    fn setgroups(&mut self, groups: &[u32]) -> Result<(), Errno>;
    fn setresgid(&mut self, gid: u32) -> Result<(), Errno>;
    fn setresuid(&mut self, uid: u32) -> Result<(), Errno>;
    fn cloexec_from(&mut self, fd: i32) -> Result<(), Errno>;
    /// Only returns on failure.
    fn execve(&mut self, path: &CStr, args: &ExecArgs) -> Errno;
}

/// A failed step: its index in the plan and the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepFailure {
    pub step: u32,
    pub errno: Errno,
}

const EEXIST: Errno = libc::EEXIST;
const EINVAL: Errno = libc::EINVAL;
const ENOSYS: Errno = libc::ENOSYS;
const ENOENT: Errno = libc::ENOENT;

/// Runs the plan. Returns only on failure (a successful `Exec` never returns).
pub(crate) fn run_steps<S: ChildSys>(sys: &mut S, steps: &[Step]) -> StepFailure {
    for (index, step) in steps.iter().enumerate() {
        if let Err(errno) = run_step(sys, step) {
            return StepFailure {
                step: u32::try_from(index).unwrap_or(u32::MAX),
                errno,
            };
        }
    }
    StepFailure {
        step: u32::MAX,
        errno: EINVAL,
    }
}

fn run_step<S: ChildSys>(sys: &mut S, step: &Step) -> Result<(), Errno> {
    match step {
        Step::ResetSignals => sys.reset_signals(),
        Step::ParentDeathSignal => sys.set_parent_death_signal(),
        Step::Umask(mode) => {
            sys.umask(*mode);
            Ok(())
        }
        Step::MakeRootPrivate => sys.mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None),
        Step::MountOverlay(overlay) => mount_overlay(sys, overlay),
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => sys.mount(
            source.as_deref(),
            target,
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
        Step::Remount { target, flags } => sys.mount(
            None,
            target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | *flags,
            None,
        ),
        Step::Mkdir { path, mode } => match sys.mkdir(path, *mode) {
            Err(EEXIST) => Ok(()),
            other => other,
        },
        Step::Mknod { path, mode, dev } => sys.mknod(path, *mode, *dev),
        Step::Symlink { target, link } => sys.symlink(target, link),
        Step::PivotRoot { new_root } => {
            sys.chdir(new_root)?;
            sys.pivot_root(c".", c".")?;
            sys.umount_detach(c".")?;
            sys.chdir(c"/")
        }
        Step::SetHostname(name) => sys.sethostname(name.as_bytes()),
        Step::LoopbackUp => sys.loopback_up(),
        Step::MakeWorkdir { chain, uid, gid } => {
            for dir in chain {
                match sys.mkdir(dir, 0o755) {
                    Ok(()) => sys.chown(dir, *uid, *gid)?,
                    Err(EEXIST) => {}
                    Err(errno) => return Err(errno),
                }
            }
            Ok(())
        }
        Step::Chdir(path) => sys.chdir(path),
        Step::Stdio {
            null_path,
            output_fd,
        } => {
            let null = sys.open_read(null_path)?;
            if null != 0 {
                sys.dup2(null, 0)?;
                sys.close(null);
            }
            sys.dup2(*output_fd, 1)?;
            sys.dup2(*output_fd, 2)
        }
        Step::Capabilities { keep } => {
            for cap in 0..64u32 {
                if keep & (1u64 << cap) != 0 {
                    continue;
                }
                match sys.drop_bounding_cap(cap) {
                    Ok(()) => {}
                    Err(EINVAL) => break,
                    Err(errno) => return Err(errno),
                }
            }
            sys.clear_ambient_caps()?;
            sys.capset(*keep, *keep, 0)
        }
        Step::SetIds { uid, gid, groups } => {
            sys.setgroups(groups)?;
            sys.setresgid(*gid)?;
            sys.setresuid(*uid)
        }
        Step::CloseOnExecFrom(fd) => sys.cloexec_from(*fd),
        Step::Exec(args) => {
            let mut result = ENOENT;
            for path in &args.candidates {
                match sys.execve(path, args) {
                    ENOENT | libc::ENOTDIR => {}
                    errno => result = errno,
                }
            }
            Err(result)
        }
    }
}

fn mount_overlay<S: ChildSys>(sys: &mut S, overlay: &OverlayMount) -> Result<(), Errno> {
    if overlay.use_fd_api {
        match mount_overlay_fd_api(sys, overlay) {
            Ok(()) => return Ok(()),
            // ENOSYS: no fsopen; EINVAL: a kernel without `lowerdir+` (< 6.8).
            Err(ENOSYS | EINVAL) if overlay.legacy_data.is_some() => {}
            Err(errno) => return Err(errno),
        }
    }
    match &overlay.legacy_data {
        Some(data) => sys.mount(
            Some(c"overlay"),
            &overlay.target,
            Some(c"overlay"),
            0,
            Some(data),
        ),
        None => Err(EINVAL),
    }
}

fn mount_overlay_fd_api<S: ChildSys>(sys: &mut S, overlay: &OverlayMount) -> Result<(), Errno> {
    let context = sys.fsopen(c"overlay")?;
    let result = configure_and_attach(sys, context, overlay);
    sys.close(context);
    result
}

fn configure_and_attach<S: ChildSys>(
    sys: &mut S,
    context: i32,
    overlay: &OverlayMount,
) -> Result<(), Errno> {
    for lower in &overlay.lowers {
        sys.fsconfig_string(context, c"lowerdir+", lower)?;
    }
    sys.fsconfig_string(context, c"upperdir", &overlay.upper)?;
    sys.fsconfig_string(context, c"workdir", &overlay.work)?;
    for (key, value) in &overlay.options {
        sys.fsconfig_string(context, key, value)?;
    }
    sys.fsconfig_create(context)?;
    let mount_fd = sys.fsmount(context)?;
    let moved = sys.move_mount(mount_fd, &overlay.target);
    sys.close(mount_fd);
    moved
}
