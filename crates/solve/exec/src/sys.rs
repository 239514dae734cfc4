//! The only module with `unsafe`: raw Linux syscalls for the cloned child
//! ([`RawSys`]) and the parent-side process plumbing (clone, pipes, poll,
//! kill, waitpid).
//!
//! Child-side rules: every [`RawSys`] method is one or a few direct syscalls
//! on pre-built C strings and stack buffers. Nothing allocates, takes a lock or
//! can panic. Credentials are changed with *raw* `setgroups`/`setresgid`/
//! `setresuid` syscalls, not the libc wrappers: glibc's wrappers broadcast the
//! change to every thread it knows about, and in the child those threads (copied
//! from the multi-threaded parent's bookkeeping) do not exist.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr;

use crate::child::{ChildSys, Errno, ExecArgs, Step, run_steps};
use crate::spec::ExitStatus;

fn errno() -> Errno {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(ret: libc::c_long) -> Result<(), Errno> {
    if ret < 0 { Err(errno()) } else { Ok(()) }
}

fn check_fd(ret: libc::c_long) -> Result<i32, Errno> {
    if ret < 0 {
        Err(errno())
    } else {
        i32::try_from(ret).map_err(|_| libc::EBADF)
    }
}

fn opt_ptr(value: Option<&CStr>) -> *const libc::c_char {
    value.map_or(ptr::null(), CStr::as_ptr)
}

const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 4;
const SIOCGIFFLAGS: libc::c_ulong = 0x8913;
const SIOCSIFFLAGS: libc::c_ulong = 0x8914;
const IFF_UP: libc::c_short = 1;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `struct ifreq` restricted to the name and flags members (40 bytes on 64-bit).
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    padding: [u8; 22],
}

/// The real primitives, each a direct syscall.
pub(crate) struct RawSys;

impl ChildSys for RawSys {
    fn reset_signals(&mut self) -> Result<(), Errno> {
        for signal in 1..=31 {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            // SAFETY: installing the default disposition takes no pointers
            // into our memory; failures for invalid numbers are ignored.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the stack buffer we pass it.
        unsafe { libc::sigemptyset(set.as_mut_ptr()) };
        // SAFETY: `set` was initialised by sigemptyset above; the old-set pointer may be null.
        let ret = unsafe { libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), ptr::null_mut()) };
        check(ret.into())
    }

    fn set_parent_death_signal(&mut self) -> Result<(), Errno> {
        // SAFETY: PR_SET_PDEATHSIG takes an integer argument only.
        let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        check(ret.into())
    }

    fn umask(&mut self, mode: u32) {
        // SAFETY: umask takes an integer and cannot fail.
        unsafe { libc::umask(mode) };
    }

    fn mount(
        &mut self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> Result<(), Errno> {
        // SAFETY: every pointer is a NUL-terminated string borrowed for the
        // call, or null where mount(2) accepts null.
        let ret = unsafe {
            libc::mount(
                opt_ptr(source),
                target.as_ptr(),
                opt_ptr(fstype),
                flags,
                opt_ptr(data).cast(),
            )
        };
        check(ret.into())
    }

    fn fsopen(&mut self, fstype: &CStr) -> Result<i32, Errno> {
        // SAFETY: fsopen reads a NUL-terminated string borrowed for the call.
        let ret = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
        check_fd(ret)
    }

    fn fsconfig_string(&mut self, fd: i32, key: &CStr, value: &CStr) -> Result<(), Errno> {
        // SAFETY: key and value are NUL-terminated strings borrowed for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fd,
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        check(ret)
    }

    fn fsconfig_create(&mut self, fd: i32) -> Result<(), Errno> {
        // SAFETY: FSCONFIG_CMD_CREATE takes null key and value.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fd,
                FSCONFIG_CMD_CREATE,
                ptr::null::<libc::c_char>(),
                ptr::null::<libc::c_void>(),
                0,
            )
        };
        check(ret)
    }

    fn fsmount(&mut self, fd: i32) -> Result<i32, Errno> {
        // SAFETY: integer arguments only.
        let ret = unsafe { libc::syscall(libc::SYS_fsmount, fd, FSMOUNT_CLOEXEC, 0) };
        check_fd(ret)
    }

    fn move_mount(&mut self, fd: i32, target: &CStr) -> Result<(), Errno> {
        // SAFETY: the empty path and the target are NUL-terminated strings
        // borrowed for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                fd,
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        check(ret)
    }

    fn close(&mut self, fd: i32) {
        // SAFETY: closing an fd this child opened itself.
        unsafe { libc::close(fd) };
    }

    fn mkdir(&mut self, path: &CStr, mode: u32) -> Result<(), Errno> {
        // SAFETY: NUL-terminated path borrowed for the call.
        let ret = unsafe { libc::mkdir(path.as_ptr(), mode) };
        check(ret.into())
    }

    fn chown(&mut self, path: &CStr, uid: u32, gid: u32) -> Result<(), Errno> {
        // SAFETY: NUL-terminated path borrowed for the call.
        let ret = unsafe { libc::lchown(path.as_ptr(), uid, gid) };
        check(ret.into())
    }

    fn mknod(&mut self, path: &CStr, mode: u32, dev: u64) -> Result<(), Errno> {
        // SAFETY: NUL-terminated path borrowed for the call.
        let ret = unsafe { libc::mknod(path.as_ptr(), mode, dev) };
        check(ret.into())
    }

    fn symlink(&mut self, target: &CStr, link: &CStr) -> Result<(), Errno> {
        // SAFETY: NUL-terminated strings borrowed for the call.
        let ret = unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) };
        check(ret.into())
    }

    fn chdir(&mut self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: NUL-terminated path borrowed for the call.
        let ret = unsafe { libc::chdir(path.as_ptr()) };
        check(ret.into())
    }

    fn pivot_root(&mut self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
        // SAFETY: NUL-terminated paths borrowed for the call.
        let ret =
            unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
        check(ret)
    }

    fn umount_detach(&mut self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: NUL-terminated path borrowed for the call.
        let ret = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        check(ret.into())
    }

    fn sethostname(&mut self, name: &[u8]) -> Result<(), Errno> {
        // SAFETY: pointer and length describe the borrowed slice.
        let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
        check(ret.into())
    }

    fn loopback_up(&mut self) -> Result<(), Errno> {
        // SAFETY: plain integer arguments.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if sock < 0 {
            return Err(errno());
        }
        let mut request = IfReqFlags {
            name: [0; 16],
            flags: 0,
            padding: [0; 22],
        };
        request.name[0] = b'l';
        request.name[1] = b'o';
        // SAFETY: `request` is a properly sized, initialised ifreq on our stack.
        let mut ret = unsafe { libc::ioctl(sock, SIOCGIFFLAGS, &mut request as *mut IfReqFlags) };
        if ret == 0 {
            request.flags |= IFF_UP;
            // SAFETY: as above.
            ret = unsafe { libc::ioctl(sock, SIOCSIFFLAGS, &mut request as *mut IfReqFlags) };
        }
        let result = check(ret.into());
        self.close(sock);
        result
    }

    fn open_read(&mut self, path: &CStr) -> Result<i32, Errno> {
        // SAFETY: NUL-terminated path borrowed for the call.
        let ret = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        check_fd(ret.into())
    }

    fn dup2(&mut self, old: i32, new: i32) -> Result<(), Errno> {
        // SAFETY: integer arguments; dup2 clears CLOEXEC on `new`.
        let ret = unsafe { libc::dup2(old, new) };
        check(ret.into())
    }

    fn drop_bounding_cap(&mut self, cap: u32) -> Result<(), Errno> {
        // SAFETY: integer arguments only.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        check(ret.into())
    }

    fn clear_ambient_caps(&mut self) -> Result<(), Errno> {
        // SAFETY: integer arguments only.
        let ret = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        match check(ret.into()) {
            Err(libc::EINVAL) => Ok(()), // kernel without ambient capabilities
            other => other,
        }
    }

    fn capset(&mut self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let split = |mask: u64| (mask as u32, (mask >> 32) as u32);
        let (e_lo, e_hi) = split(effective);
        let (p_lo, p_hi) = split(permitted);
        let (i_lo, i_hi) = split(inheritable);
        let data = [
            CapData {
                effective: e_lo,
                permitted: p_lo,
                inheritable: i_lo,
            },
            CapData {
                effective: e_hi,
                permitted: p_hi,
                inheritable: i_hi,
            },
        ];
        // SAFETY: header and the two-element data array (version 3 layout)
        // live on our stack for the duration of the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            )
        };
        check(ret)
    }

    fn setgroups(&mut self, groups: &[u32]) -> Result<(), Errno> {
        // SAFETY: pointer and length describe the borrowed slice of gid_t (u32).
        let ret = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
        check(ret)
    }

    fn setresgid(&mut self, gid: u32) -> Result<(), Errno> {
        // SAFETY: integer arguments; raw syscall on purpose (see module docs).
        let ret = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
        check(ret)
    }

    fn setresuid(&mut self, uid: u32) -> Result<(), Errno> {
        // SAFETY: integer arguments; raw syscall on purpose (see module docs).
        let ret = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
        check(ret)
    }

    fn cloexec_from(&mut self, fd: i32) -> Result<(), Errno> {
        // SAFETY: integer arguments only.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                fd as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            )
        };
        if ret == 0 {
            return Ok(());
        }
        // Kernels before 5.11: mark every plausible descriptor one by one.
        for candidate in fd..65536 {
            // SAFETY: F_SETFD on a possibly closed fd just fails with EBADF.
            unsafe { libc::fcntl(candidate, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        Ok(())
    }

    fn execve(&mut self, path: &CStr, args: &ExecArgs) -> Errno {
        // SAFETY: path is NUL-terminated; argv/envp are NULL-terminated arrays
        // of pointers into CStrings owned by `args`, alive for the call.
        unsafe { libc::execve(path.as_ptr(), args.argv_ptr(), args.envp_ptr()) };
        errno()
    }
}

/// Namespace flags for the child.
pub(crate) fn clone_flags(new_network: bool) -> libc::c_ulong {
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    if new_network {
        flags |= libc::CLONE_NEWNET;
    }
    (flags | libc::SIGCHLD) as libc::c_ulong
}

/// A CLOEXEC pipe whose ends are both >= 3 (so dup2 onto 0..2 never clobbers them).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((above_stdio(read)?, above_stdio(write)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
}

/// Clones the child into new namespaces and runs `steps` in it.
///
/// The child never returns: it either execs, or writes a
/// (step index, errno) record to `error_fd` and exits with 127.
pub(crate) fn spawn(flags: libc::c_ulong, steps: &[Step], error_fd: RawFd) -> io::Result<i32> {
    // SAFETY: a fork-like clone (no new stack, no shared VM): the child gets a
    // copy of our address space and, in it, only executes `child_main`, which
    // performs async-signal-safe raw syscalls on memory prepared before the
    // clone and ends in execve or _exit.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            ptr::null_mut::<libc::c_void>(),
            ptr::null_mut::<libc::c_void>(),
            ptr::null_mut::<libc::c_void>(),
            0 as libc::c_ulong,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    if ret == 0 {
        child_main(steps, error_fd);
    }
    i32::try_from(ret).map_err(|_| io::Error::other("clone returned an out-of-range pid"))
}

fn child_main(steps: &[Step], error_fd: RawFd) -> ! {
    let failure = run_steps(&mut RawSys, steps);
    let mut record = [0u8; 8];
    let (step_bytes, errno_bytes) = record.split_at_mut(4);
    step_bytes.copy_from_slice(&failure.step.to_ne_bytes());
    errno_bytes.copy_from_slice(&failure.errno.to_ne_bytes());
    // SAFETY: writing a stack buffer to our own pipe fd, then leaving without
    // running any Rust or libc exit handlers.
    unsafe {
        libc::write(error_fd, record.as_ptr().cast(), record.len());
        libc::_exit(127)
    }
}

/// Waits until `fd` is readable (or hung up) or `timeout_ms` passes.
pub(crate) fn poll_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one initialised pollfd on our stack.
        let ret = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
        if ret >= 0 {
            return Ok(ret > 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends SIGKILL to `pid` (our direct child, not yet reaped, so the pid is still ours).
pub(crate) fn kill(pid: i32) {
    // SAFETY: integer arguments; the child is unreaped so the pid cannot be reused.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// Reaps `pid` and decodes its status.
pub(crate) fn wait(pid: i32) -> io::Result<ExitStatus> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer on our stack.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if ret == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    if libc::WIFSIGNALED(status) {
        Ok(ExitStatus::Signaled(libc::WTERMSIG(status)))
    } else {
        Ok(ExitStatus::Exited(libc::WEXITSTATUS(status)))
    }
}
