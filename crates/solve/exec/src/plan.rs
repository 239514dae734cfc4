//! Pure planning: from a validated spec and host-side facts (paths of the
//! generated files, the resolved user, the output pipe) to the exact list of
//! [`Step`]s the child performs. No syscalls here, so all of it is unit-tested
//! without root.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::child::{ExecArgs, OverlayMount, Step};
use crate::error::ExecError;
use crate::layers::{MountPoint, PointKind, container_relative};
use crate::spec::{ExtraMount, NetworkMode};
use crate::users::ResolvedUser;

/// Docker's default capability set (mask 0xa80425fb): CHOWN, DAC_OVERRIDE,
/// FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW,
/// SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub const DOCKER_DEFAULT_CAPABILITIES: u64 = 0xa804_25fb;

/// Docker's PATH used to find argv[0] when the environment sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The largest legacy overlay mount data (one page minus the NUL).
const MOUNT_DATA_MAX: usize = 4095;

/// Which kernel interface mounts the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlayApi {
    /// The fd-based API (`fsopen` + `fsconfig("lowerdir+")`, Linux >= 6.8),
    /// falling back to mount(2) data when that is unavailable and the data fits.
    #[default]
    Auto,
    /// mount(2) with a `lowerdir=a:b:c` string only (limited to one page).
    LegacyMountData,
}

/// The root filesystem as the child mounts it.
#[derive(Debug, Clone)]
pub(crate) enum RootPlan {
    Overlay {
        /// Top-most first; the scaffold layer, when any, is first.
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        api: OverlayApi,
    },
    Directory(PathBuf),
}

/// Every input of the plan, already resolved on the host.
#[derive(Debug)]
pub(crate) struct PlanInput<'a> {
    pub root: RootPlan,
    /// Host path where the root is mounted before pivot_root.
    pub new_root: PathBuf,
    pub argv: &'a [OsString],
    pub env: &'a [(OsString, OsString)],
    pub cwd: &'a Path,
    pub user: &'a ResolvedUser,
    pub hostname: &'a str,
    pub network: NetworkMode,
    pub mounts: &'a [ExtraMount],
    pub hosts_file: PathBuf,
    pub hostname_file: PathBuf,
    pub resolv_file: PathBuf,
    pub output_fd: i32,
}

pub(crate) fn cstring(bytes: &[u8], field: &str) -> Result<CString, ExecError> {
    CString::new(bytes).map_err(|_| ExecError::invalid(format!("{field} contains a NUL byte")))
}

fn cpath(path: &Path, field: &str) -> Result<CString, ExecError> {
    cstring(path.as_os_str().as_bytes(), field)
}

fn flags(bits: libc::c_ulong) -> libc::c_ulong {
    bits
}

/// The mount points the run needs, relative to the root, for the scaffold.
pub(crate) fn mount_points(mounts: &[ExtraMount]) -> Result<Vec<MountPoint>, ExecError> {
    let mut points: Vec<MountPoint> = [
        ("proc", PointKind::Dir),
        ("dev", PointKind::Dir),
        ("sys", PointKind::Dir),
        ("etc/hosts", PointKind::File),
        ("etc/hostname", PointKind::File),
        ("etc/resolv.conf", PointKind::File),
    ]
    .into_iter()
    .map(|(rel, kind)| MountPoint {
        rel: rel.into(),
        kind,
    })
    .collect();
    for mount in mounts {
        let rel = container_relative(mount.target(), "mount target")?;
        if rel.as_os_str().is_empty() {
            return Err(ExecError::invalid("a mount target cannot be /"));
        }
        let kind = match mount {
            ExtraMount::Bind { source, .. } => {
                let meta = std::fs::metadata(source)
                    .map_err(|err| ExecError::io("inspect bind mount source", source, err))?;
                if meta.is_dir() {
                    PointKind::Dir
                } else {
                    PointKind::File
                }
            }
            ExtraMount::Tmpfs { .. } => PointKind::Dir,
            ExtraMount::SecretFile { .. } => PointKind::File,
        };
        points.push(MountPoint { rel, kind });
    }
    Ok(points)
}

/// The candidate paths execve tries, like execvp: argv[0] itself when it has a
/// `/`, else each `$PATH` entry (the last `PATH` in env, or Docker's default).
pub(crate) fn exec_candidates(
    program: &OsStr,
    env: &[(OsString, OsString)],
) -> Result<Vec<CString>, ExecError> {
    let program = program.as_bytes();
    if program.contains(&b'/') {
        return Ok(vec![cstring(program, "argv[0]")?]);
    }
    let path = env
        .iter()
        .rev()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.as_bytes())
        .unwrap_or(DEFAULT_PATH.as_bytes());
    path.split(|&b| b == b':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| {
            let mut full = dir.to_vec();
            if !full.ends_with(b"/") {
                full.push(b'/');
            }
            full.extend_from_slice(program);
            cstring(&full, "PATH")
        })
        .collect()
}

/// `lowerdir=..,upperdir=..,workdir=..,<options>` or `None` when it does not fit
/// in a page or a path holds a character overlay's legacy syntax cannot carry.
fn legacy_overlay_data(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    options: &[(&str, &str)],
) -> (Option<CString>, usize) {
    let paths_ok = lowers
        .iter()
        .map(PathBuf::as_path)
        .chain([upper, work])
        .all(|p| {
            !p.as_os_str()
                .as_bytes()
                .iter()
                .any(|b| b",:\\\0".contains(b))
        });
    let mut data = Vec::new();
    data.extend_from_slice(b"lowerdir=");
    for (index, lower) in lowers.iter().enumerate() {
        if index > 0 {
            data.push(b':');
        }
        data.extend_from_slice(lower.as_os_str().as_bytes());
    }
    data.extend_from_slice(b",upperdir=");
    data.extend_from_slice(upper.as_os_str().as_bytes());
    data.extend_from_slice(b",workdir=");
    data.extend_from_slice(work.as_os_str().as_bytes());
    for (key, value) in options {
        data.extend_from_slice(format!(",{key}={value}").as_bytes());
    }
    let len = data.len();
    if !paths_ok || len > MOUNT_DATA_MAX {
        return (None, len);
    }
    (CString::new(data).ok(), len)
}

/// overlayfs options for a clean, self-contained upper directory.
const OVERLAY_OPTIONS: [(&str, &str); 4] = [
    ("redirect_dir", "off"),
    ("metacopy", "off"),
    ("index", "off"),
    ("xino", "off"),
];

fn root_step(root: &RootPlan, target: &CString) -> Result<Step, ExecError> {
    match root {
        RootPlan::Directory(dir) => Ok(Step::Mount {
            source: Some(cpath(dir, "rootfs")?),
            target: target.clone(),
            fstype: None,
            flags: flags(libc::MS_BIND | libc::MS_REC),
            data: None,
        }),
        RootPlan::Overlay {
            lowers,
            upper,
            work,
            api,
        } => {
            if lowers.is_empty() {
                return Err(ExecError::invalid(
                    "an overlay needs at least one lower directory",
                ));
            }
            let (legacy_data, len) = legacy_overlay_data(lowers, upper, work, &OVERLAY_OPTIONS);
            if *api == OverlayApi::LegacyMountData && legacy_data.is_none() {
                return Err(ExecError::OverlayOptionsTooLong { len });
            }
            Ok(Step::MountOverlay(OverlayMount {
                lowers: lowers
                    .iter()
                    .map(|l| cpath(l, "lower dir"))
                    .collect::<Result<_, _>>()?,
                upper: cpath(upper, "upper dir")?,
                work: cpath(work, "work dir")?,
                target: target.clone(),
                options: OVERLAY_OPTIONS
                    .iter()
                    .map(|(k, v)| {
                        Ok((
                            cstring(k.as_bytes(), "option")?,
                            cstring(v.as_bytes(), "option")?,
                        ))
                    })
                    .collect::<Result<_, ExecError>>()?,
                use_fd_api: *api == OverlayApi::Auto,
                legacy_data,
            }))
        }
    }
}

/// Character devices of the container's /dev: (name, major, minor).
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Linux's `makedev`.
fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0xffff_f000) << 32)
        | ((major & 0x0000_0fff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0x0000_00ff)
}

/// Builds the child's whole program.
pub(crate) fn plan_steps(input: &PlanInput<'_>) -> Result<Vec<Step>, ExecError> {
    let Some(program) = input.argv.first() else {
        return Err(ExecError::invalid("argv is empty"));
    };
    if input.hostname.is_empty() || input.hostname.len() > 64 {
        return Err(ExecError::invalid("hostname must have 1 to 64 bytes"));
    }
    let root = &input.new_root;
    let at = |rel: &str| cpath(&root.join(rel), "mount target");
    let new_root = cpath(root, "root mount point")?;

    let mut steps = vec![
        Step::ResetSignals,
        Step::ParentDeathSignal,
        Step::Umask(0),
        Step::MakeRootPrivate,
        root_step(&input.root, &new_root)?,
        Step::Mount {
            source: Some(c"proc".into()),
            target: at("proc")?,
            fstype: Some(c"proc".into()),
            flags: flags(libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC),
            data: None,
        },
        Step::Mount {
            source: Some(c"tmpfs".into()),
            target: at("dev")?,
            fstype: Some(c"tmpfs".into()),
            flags: flags(libc::MS_NOSUID | libc::MS_STRICTATIME),
            data: Some(c"mode=755,size=65536k".into()),
        },
    ];
    for (name, major, minor) in DEVICES {
        steps.push(Step::Mknod {
            path: at(&format!("dev/{name}"))?,
            mode: libc::S_IFCHR | 0o666,
            dev: makedev(major, minor),
        });
    }
    for (link, target) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
        ("dev/core", "/proc/kcore"),
        ("dev/ptmx", "pts/ptmx"),
    ] {
        steps.push(Step::Symlink {
            target: cstring(target.as_bytes(), "symlink")?,
            link: at(link)?,
        });
    }
    steps.extend([
        Step::Mkdir {
            path: at("dev/pts")?,
            mode: 0o755,
        },
        Step::Mkdir {
            path: at("dev/shm")?,
            mode: 0o1777,
        },
        Step::Mkdir {
            path: at("dev/mqueue")?,
            mode: 0o755,
        },
        Step::Mount {
            source: Some(c"devpts".into()),
            target: at("dev/pts")?,
            fstype: Some(c"devpts".into()),
            flags: flags(libc::MS_NOSUID | libc::MS_NOEXEC),
            data: Some(c"newinstance,ptmxmode=0666,mode=0620,gid=5".into()),
        },
        Step::Mount {
            source: Some(c"shm".into()),
            target: at("dev/shm")?,
            fstype: Some(c"tmpfs".into()),
            flags: flags(libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC),
            data: Some(c"mode=1777,size=65536k".into()),
        },
        Step::Mount {
            source: Some(c"mqueue".into()),
            target: at("dev/mqueue")?,
            fstype: Some(c"mqueue".into()),
            flags: flags(libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC),
            data: None,
        },
        Step::Mount {
            source: Some(c"sysfs".into()),
            target: at("sys")?,
            fstype: Some(c"sysfs".into()),
            flags: flags(libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY),
            data: None,
        },
    ]);
    let file_binds = [
        (&input.hosts_file, "etc/hosts", false),
        (&input.hostname_file, "etc/hostname", false),
        (&input.resolv_file, "etc/resolv.conf", true),
    ];
    for (source, target, read_only) in file_binds {
        push_bind(&mut steps, source, at(target)?, read_only)?;
    }
    for mount in input.mounts {
        let rel = container_relative(mount.target(), "mount target")?;
        let target = cpath(&root.join(rel), "mount target")?;
        match mount {
            ExtraMount::Bind {
                source, read_only, ..
            } => push_bind(&mut steps, source, target, *read_only)?,
            ExtraMount::SecretFile { source, .. } => push_bind(&mut steps, source, target, true)?,
            ExtraMount::Tmpfs { size_bytes, .. } => steps.push(Step::Mount {
                source: Some(c"tmpfs".into()),
                target,
                fstype: Some(c"tmpfs".into()),
                flags: flags(libc::MS_NOSUID | libc::MS_NODEV),
                data: size_bytes
                    .map(|size| cstring(format!("size={size}").as_bytes(), "tmpfs size"))
                    .transpose()?,
            }),
        }
    }
    steps.push(Step::PivotRoot { new_root });
    steps.push(Step::SetHostname(cstring(
        input.hostname.as_bytes(),
        "hostname",
    )?));
    if input.network == NetworkMode::None {
        steps.push(Step::LoopbackUp);
    }

    let cwd_rel = container_relative(input.cwd, "cwd")?;
    let mut chain = Vec::new();
    let mut prefix = PathBuf::from("/");
    for part in cwd_rel.iter() {
        prefix.push(part);
        chain.push(cpath(&prefix, "cwd")?);
    }
    steps.push(Step::Umask(0o022));
    if !chain.is_empty() {
        steps.push(Step::MakeWorkdir {
            chain,
            uid: input.user.uid,
            gid: input.user.gid,
        });
    }
    steps.push(Step::Chdir(cpath(&Path::new("/").join(&cwd_rel), "cwd")?));
    steps.push(Step::Stdio {
        null_path: c"/dev/null".into(),
        output_fd: input.output_fd,
    });
    steps.push(Step::Capabilities {
        keep: DOCKER_DEFAULT_CAPABILITIES,
    });
    steps.push(Step::SetIds {
        uid: input.user.uid,
        gid: input.user.gid,
        groups: input.user.groups.clone(),
    });
    steps.push(Step::CloseOnExecFrom(3));

    let argv = input
        .argv
        .iter()
        .map(|arg| cstring(arg.as_bytes(), "argv"))
        .collect::<Result<Vec<_>, _>>()?;
    // Docker sets HOME from the user's passwd entry when the image does not set it.
    let home = (!input.env.iter().any(|(name, _)| name == "HOME"))
        .then(|| (OsString::from("HOME"), OsString::from(&input.user.home)));
    let envp = input
        .env
        .iter()
        .chain(home.iter())
        .map(|(name, value)| {
            if name.is_empty() || name.as_bytes().contains(&b'=') {
                return Err(ExecError::invalid(format!(
                    "environment variable name {name:?} is empty or contains '='"
                )));
            }
            let mut entry = name.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            cstring(&entry, "env")
        })
        .collect::<Result<Vec<_>, _>>()?;
    steps.push(Step::Exec(ExecArgs::new(
        exec_candidates(program, input.env)?,
        argv,
        envp,
    )));
    Ok(steps)
}

fn push_bind(
    steps: &mut Vec<Step>,
    source: &Path,
    target: CString,
    read_only: bool,
) -> Result<(), ExecError> {
    steps.push(Step::Mount {
        source: Some(cpath(source, "bind source")?),
        target: target.clone(),
        fstype: None,
        flags: flags(libc::MS_BIND | libc::MS_REC),
        data: None,
    });
    if read_only {
        steps.push(Step::Remount {
            target,
            flags: flags(libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV),
        });
    }
    Ok(())
}
