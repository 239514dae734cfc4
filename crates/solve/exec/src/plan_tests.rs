//! Unit tests of the planner and the step interpreter, driven through a
//! recording fake of the child's syscalls (no root needed).

use std::ffi::{CStr, OsString};
use std::path::{Path, PathBuf};

use crate::child::{ChildSys, Errno, ExecArgs, Step, StepFailure, run_steps};
use crate::error::ExecError;
use crate::plan::{OverlayApi, PlanInput, RootPlan, exec_candidates, plan_steps};
use crate::spec::{ExtraMount, NetworkMode};
use crate::users::ResolvedUser;

/// Records every primitive call as text; fails the call whose text starts with `fail_on`.
#[derive(Default)]
struct Recorder {
    calls: Vec<String>,
    fail_on: Option<(String, Errno)>,
}

impl Recorder {
    fn record(&mut self, call: String) -> Result<(), Errno> {
        let failing = self
            .fail_on
            .as_ref()
            .filter(|(prefix, _)| call.starts_with(prefix.as_str()))
            .map(|(_, errno)| *errno);
        self.calls.push(call);
        failing.map_or(Ok(()), Err)
    }
}

fn s(c: &CStr) -> String {
    c.to_string_lossy().into_owned()
}

impl ChildSys for Recorder {
    fn reset_signals(&mut self) -> Result<(), Errno> {
        self.record("reset_signals".into())
    }
    fn set_parent_death_signal(&mut self) -> Result<(), Errno> {
        self.record("pdeathsig".into())
    }
    fn umask(&mut self, mode: u32) {
        let _ = self.record(format!("umask {mode:o}"));
    }
    fn mount(
        &mut self,
        source: Option<&CStr>,
        target: &CStr,
        fstype: Option<&CStr>,
        flags: libc::c_ulong,
        data: Option<&CStr>,
    ) -> Result<(), Errno> {
        self.record(format!(
            "mount {} {} {} {flags:#x} {}",
            source.map(s).unwrap_or_default(),
            s(target),
            fstype.map(s).unwrap_or_default(),
            data.map(s).unwrap_or_default()
        ))
    }
    fn fsopen(&mut self, fstype: &CStr) -> Result<i32, Errno> {
        self.record(format!("fsopen {}", s(fstype))).map(|()| 10)
    }
    fn fsconfig_string(&mut self, fd: i32, key: &CStr, value: &CStr) -> Result<(), Errno> {
        self.record(format!("fsconfig {fd} {}={}", s(key), s(value)))
    }
    fn fsconfig_create(&mut self, fd: i32) -> Result<(), Errno> {
        self.record(format!("fsconfig {fd} create"))
    }
    fn fsmount(&mut self, fd: i32) -> Result<i32, Errno> {
        self.record(format!("fsmount {fd}")).map(|()| 11)
    }
    fn move_mount(&mut self, fd: i32, target: &CStr) -> Result<(), Errno> {
        self.record(format!("move_mount {fd} {}", s(target)))
    }
    fn close(&mut self, fd: i32) {
        let _ = self.record(format!("close {fd}"));
    }
    fn mkdir(&mut self, path: &CStr, mode: u32) -> Result<(), Errno> {
        self.record(format!("mkdir {} {mode:o}", s(path)))
    }
    fn chown(&mut self, path: &CStr, uid: u32, gid: u32) -> Result<(), Errno> {
        self.record(format!("chown {} {uid}:{gid}", s(path)))
    }
    fn mknod(&mut self, path: &CStr, mode: u32, dev: u64) -> Result<(), Errno> {
        self.record(format!("mknod {} {mode:o} {dev:#x}", s(path)))
    }
    fn symlink(&mut self, target: &CStr, link: &CStr) -> Result<(), Errno> {
        self.record(format!("symlink {} -> {}", s(link), s(target)))
    }
    fn chdir(&mut self, path: &CStr) -> Result<(), Errno> {
        self.record(format!("chdir {}", s(path)))
    }
    fn pivot_root(&mut self, new_root: &CStr, put_old: &CStr) -> Result<(), Errno> {
        self.record(format!("pivot_root {} {}", s(new_root), s(put_old)))
    }
    fn umount_detach(&mut self, path: &CStr) -> Result<(), Errno> {
        self.record(format!("umount {}", s(path)))
    }
    fn sethostname(&mut self, name: &[u8]) -> Result<(), Errno> {
        self.record(format!("sethostname {}", String::from_utf8_lossy(name)))
    }
    fn loopback_up(&mut self) -> Result<(), Errno> {
        self.record("loopback_up".into())
    }
    fn open_read(&mut self, path: &CStr) -> Result<i32, Errno> {
        self.record(format!("open {}", s(path))).map(|()| 12)
    }
    fn dup2(&mut self, old: i32, new: i32) -> Result<(), Errno> {
        self.record(format!("dup2 {old} {new}"))
    }
    fn drop_bounding_cap(&mut self, cap: u32) -> Result<(), Errno> {
        if cap > 40 {
            return Err(libc::EINVAL);
        }
        self.record(format!("capbset_drop {cap}"))
    }
    fn clear_ambient_caps(&mut self) -> Result<(), Errno> {
        self.record("clear_ambient".into())
    }
    fn capset(&mut self, effective: u64, permitted: u64, inheritable: u64) -> Result<(), Errno> {
        self.record(format!(
            "capset {effective:#x} {permitted:#x} {inheritable:#x}"
        ))
    }
    fn setgroups(&mut self, groups: &[u32]) -> Result<(), Errno> {
        self.record(format!("setgroups {groups:?}"))
    }
    fn setresgid(&mut self, gid: u32) -> Result<(), Errno> {
        self.record(format!("setresgid {gid}"))
    }
    fn setresuid(&mut self, uid: u32) -> Result<(), Errno> {
        self.record(format!("setresuid {uid}"))
    }
    fn cloexec_from(&mut self, fd: i32) -> Result<(), Errno> {
        self.record(format!("cloexec_from {fd}"))
    }
    fn execve(&mut self, path: &CStr, _args: &ExecArgs) -> Errno {
        let _ = self.record(format!("execve {}", s(path)));
        libc::ENOENT
    }
}

struct Fixture {
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    user: ResolvedUser,
    mounts: Vec<ExtraMount>,
}

fn fixture() -> Fixture {
    Fixture {
        argv: vec!["sh".into(), "-c".into(), "true".into()],
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("A".into(), "1".into()),
        ],
        user: ResolvedUser {
            uid: 1000,
            gid: 100,
            groups: vec![10, 100],
            home: "/home/app".into(),
        },
        mounts: vec![ExtraMount::Tmpfs {
            target: "/cache".into(),
            size_bytes: Some(1024),
        }],
    }
}

fn input<'a>(fx: &'a Fixture, root: RootPlan, network: NetworkMode) -> PlanInput<'a> {
    PlanInput {
        root,
        new_root: PathBuf::from("/run/r"),
        argv: &fx.argv,
        env: &fx.env,
        cwd: Path::new("/app/src"),
        user: &fx.user,
        hostname: "box",
        network,
        mounts: &fx.mounts,
        hosts_file: "/run/hosts".into(),
        hostname_file: "/run/hostname".into(),
        resolv_file: "/etc/resolv.conf".into(),
        output_fd: 7,
    }
}

fn overlay(lowers: usize, api: OverlayApi) -> RootPlan {
    RootPlan::Overlay {
        lowers: (0..lowers)
            .map(|i| PathBuf::from(format!("/layers/{i:064}")))
            .collect(),
        upper: "/u".into(),
        work: "/w".into(),
        api,
    }
}

fn record(steps: &[Step], fail_on: Option<(&str, Errno)>) -> (Vec<String>, StepFailure) {
    let mut recorder = Recorder {
        calls: Vec::new(),
        fail_on: fail_on.map(|(p, e)| (p.to_owned(), e)),
    };
    let failure = run_steps(&mut recorder, steps);
    (recorder.calls, failure)
}

fn position(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no call starting with {prefix:?} in {calls:#?}"))
}

#[test]
fn full_plan_order_and_content() {
    let fx = fixture();
    let steps =
        plan_steps(&input(&fx, overlay(2, OverlayApi::Auto), NetworkMode::None)).expect("plan");
    let (calls, failure) = record(&steps, None);
    // Every execve candidate was tried and the last step reported ENOENT.
    assert_eq!(failure.errno, libc::ENOENT);
    assert_eq!(failure.step as usize, steps.len() - 1);

    let private = position(&calls, "mount  / ");
    let overlay = position(&calls, "fsopen overlay");
    let proc_mount = position(&calls, "mount proc /run/r/proc proc");
    let pivot = position(&calls, "pivot_root . .");
    let umount = position(&calls, "umount .");
    let hostname = position(&calls, "sethostname box");
    let lo = position(&calls, "loopback_up");
    let caps = position(&calls, "capset");
    let setuid = position(&calls, "setresuid 1000");
    let cloexec = position(&calls, "cloexec_from 3");
    let exec = position(&calls, "execve /usr/bin/sh");
    assert!(private < overlay && overlay < proc_mount && proc_mount < pivot);
    assert!(pivot < umount && umount < hostname && hostname < lo);
    assert!(caps < setuid && setuid < cloexec && cloexec < exec);
    assert!(calls.contains(&"execve /bin/sh".to_owned()));
    assert!(calls.contains(&"fsconfig 10 lowerdir+=/layers/0000000000000000000000000000000000000000000000000000000000000000".to_owned()));
    for option in [
        "redirect_dir=off",
        "metacopy=off",
        "index=off",
        "xino=off",
        "upperdir=/u",
        "workdir=/w",
    ] {
        assert!(calls.contains(&format!("fsconfig 10 {option}")), "{option}");
    }
    assert!(calls.contains(&"move_mount 11 /run/r".to_owned()));
    for node in [
        "null 20666 0x103",
        "zero 20666 0x105",
        "urandom 20666 0x109",
        "tty 20666 0x500",
    ] {
        assert!(
            calls.contains(&format!("mknod /run/r/dev/{node}")),
            "{node}"
        );
    }
    assert!(calls.contains(&"symlink /run/r/dev/ptmx -> pts/ptmx".to_owned()));
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("mount devpts /run/r/dev/pts devpts")
                && c.ends_with("newinstance,ptmxmode=0666,mode=0620,gid=5"))
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("mount /etc/resolv.conf /run/r/etc/resolv.conf"))
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("mount  /run/r/etc/resolv.conf  ")),
        "read-only remount"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("mount tmpfs /run/r/cache tmpfs") && c.ends_with("size=1024"))
    );
    // WORKDIR: both components created and chowned, then entered.
    let workdir: Vec<&String> = calls
        .iter()
        .filter(|c| {
            c.starts_with("mkdir /app")
                || c.starts_with("chown /app")
                || c.starts_with("chdir /app")
        })
        .collect();
    assert_eq!(
        workdir,
        [
            "mkdir /app 755",
            "chown /app 1000:100",
            "mkdir /app/src 755",
            "chown /app/src 1000:100",
            "chdir /app/src"
        ]
    );
    // Capabilities: bounding drops skip Docker's set, stop at EINVAL.
    assert!(calls.contains(&"capbset_drop 2".to_owned()));
    assert!(!calls.contains(&"capbset_drop 0".to_owned()));
    assert!(!calls.contains(&"capbset_drop 31".to_owned()));
    assert!(calls.contains(&"capset 0xa80425fb 0xa80425fb 0x0".to_owned()));
    assert!(calls.contains(&"setgroups [10, 100]".to_owned()));
    assert!(calls.contains(&"dup2 7 1".to_owned()) && calls.contains(&"dup2 7 2".to_owned()));
    assert!(calls.contains(&"dup2 12 0".to_owned()));
}

#[test]
fn host_network_has_no_loopback_step() {
    let fx = fixture();
    let steps = plan_steps(&input(
        &fx,
        RootPlan::Directory("/rootfs".into()),
        NetworkMode::Host,
    ))
    .expect("plan");
    let (calls, _) = record(&steps, None);
    assert!(!calls.iter().any(|c| c == "loopback_up"));
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("mount /rootfs /run/r  "))
    );
}

#[test]
fn exec_args_are_prepared_in_order() {
    let fx = fixture();
    let steps =
        plan_steps(&input(&fx, overlay(1, OverlayApi::Auto), NetworkMode::Host)).expect("plan");
    let Some(Step::Exec(args)) = steps.last() else {
        panic!("last step is not exec");
    };
    assert_eq!(args.argv(), [c"sh", c"-c", c"true"]);
    // HOME comes from the user's passwd entry when the environment lacks it (as Docker).
    assert_eq!(
        args.envp(),
        [c"PATH=/usr/bin:/bin", c"A=1", c"HOME=/home/app"]
    );
    let mut fx = fx;
    fx.env.push(("HOME".into(), "/custom".into()));
    let steps =
        plan_steps(&input(&fx, overlay(1, OverlayApi::Auto), NetworkMode::Host)).expect("plan");
    let Some(Step::Exec(args)) = steps.last() else {
        panic!("last step is not exec");
    };
    assert_eq!(
        args.envp(),
        [c"PATH=/usr/bin:/bin", c"A=1", c"HOME=/custom"]
    );
}

#[test]
fn failing_step_is_reported_with_its_index() {
    let fx = fixture();
    let steps =
        plan_steps(&input(&fx, overlay(1, OverlayApi::Auto), NetworkMode::Host)).expect("plan");
    let (calls, failure) = record(&steps, Some(("mount proc", libc::EPERM)));
    assert_eq!(failure.errno, libc::EPERM);
    assert!(matches!(
        steps.get(failure.step as usize),
        Some(Step::Mount { .. })
    ));
    assert!(
        steps[failure.step as usize]
            .describe()
            .contains("/run/r/proc")
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("pivot_root")),
        "stops at the failure"
    );
}

#[test]
fn overlay_falls_back_to_legacy_data_without_lowerdir_plus() {
    let fx = fixture();
    let steps =
        plan_steps(&input(&fx, overlay(2, OverlayApi::Auto), NetworkMode::Host)).expect("plan");
    let (calls, _) = record(&steps, Some(("fsconfig 10 lowerdir+", libc::EINVAL)));
    let legacy = calls
        .iter()
        .find(|c| c.starts_with("mount overlay /run/r overlay"))
        .expect("legacy mount after fallback");
    assert!(legacy.contains("lowerdir=/layers/"));
    assert!(
        legacy
            .ends_with(",upperdir=/u,workdir=/w,redirect_dir=off,metacopy=off,index=off,xino=off")
    );
    assert!(calls.contains(&"close 10".to_owned()));
}

#[test]
fn legacy_api_rejects_too_many_lowers_but_auto_accepts_them() {
    let fx = fixture();
    assert!(matches!(
        plan_steps(&input(&fx, overlay(120, OverlayApi::LegacyMountData), NetworkMode::Host)),
        Err(ExecError::OverlayOptionsTooLong { len }) if len > 4095
    ));
    let steps = plan_steps(&input(
        &fx,
        overlay(120, OverlayApi::Auto),
        NetworkMode::Host,
    ))
    .expect("plan");
    let (calls, _) = record(&steps, None);
    assert_eq!(
        calls.iter().filter(|c| c.contains("lowerdir+=")).count(),
        120
    );
    // Without lowerdir+ there is no fallback for 120 lowers: the error surfaces.
    let (_, failure) = record(&steps, Some(("fsconfig 10 lowerdir+", libc::EINVAL)));
    assert_eq!(failure.errno, libc::EINVAL);
}

#[test]
fn invalid_inputs_are_typed_errors() {
    let mut fx = fixture();
    fx.argv.clear();
    assert!(matches!(
        plan_steps(&input(&fx, overlay(1, OverlayApi::Auto), NetworkMode::Host)),
        Err(ExecError::InvalidSpec { .. })
    ));
    let mut fx = fixture();
    fx.env.push(("BAD=NAME".into(), "x".into()));
    assert!(plan_steps(&input(&fx, overlay(1, OverlayApi::Auto), NetworkMode::Host)).is_err());
    let mut fx = fixture();
    fx.argv.push(OsString::from("a\0b"));
    assert!(plan_steps(&input(&fx, overlay(1, OverlayApi::Auto), NetworkMode::Host)).is_err());
    let fx = fixture();
    let mut bad = input(&fx, overlay(1, OverlayApi::Auto), NetworkMode::Host);
    bad.cwd = Path::new("relative");
    assert!(plan_steps(&bad).is_err());
}

#[test]
fn exec_candidates_follow_path() {
    let env = vec![("PATH".into(), "/a::/b/".into())];
    assert_eq!(
        exec_candidates("ls".as_ref(), &env).expect("ok"),
        [c"/a/ls", c"/b/ls"]
    );
    assert_eq!(exec_candidates("./x".as_ref(), &env).expect("ok"), [c"./x"]);
    let defaults = exec_candidates("ls".as_ref(), &[]).expect("ok");
    assert_eq!(defaults.len(), 6);
    assert_eq!(defaults.last().map(|c| c.as_c_str()), Some(c"/bin/ls"));
}
