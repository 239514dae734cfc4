//! Root tests of the sandbox with a busybox root filesystem.
//!
//! They need root, overlayfs and /bin/busybox (busybox-static); a missing
//! precondition makes them FAIL with a clear message, never skip.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{
    CancelToken, ExecError, ExitStatus, ExtraMount, NetworkMode, OverlayApi, RootFs, RunSpec,
    Sandbox, SandboxOptions,
};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "ls", "id", "touch", "rm", "mkdir", "sleep", "hostname", "env", "head",
    "wc", "grep", "stat", "pwd", "true", "false", "kill", "tr", "sort", "readlink", "printf",
];

fn preconditions() {
    assert!(
        rustix::process::geteuid().is_root(),
        "these tests must run as root (they create namespaces and mounts)"
    );
    let filesystems = fs::read_to_string("/proc/filesystems").expect("read /proc/filesystems");
    assert!(
        filesystems.contains("overlay"),
        "the kernel lacks overlayfs (not in /proc/filesystems)"
    );
    assert!(
        Path::new("/bin/busybox").is_file(),
        "/bin/busybox is missing: install busybox-static"
    );
}

/// A busybox root filesystem; `with_etc`/`with_dev` control which standard dirs exist.
fn busybox_rootfs(dir: &Path, with_etc: bool, with_dev: bool) {
    fs::create_dir_all(dir.join("bin")).expect("mkdir bin");
    fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("copy busybox");
    for applet in APPLETS {
        symlink("busybox", dir.join("bin").join(applet)).expect("symlink applet");
    }
    if with_etc {
        fs::create_dir_all(dir.join("etc")).expect("mkdir etc");
        fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .expect("passwd");
        fs::write(
            dir.join("etc/group"),
            "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n",
        )
        .expect("group");
    }
    if with_dev {
        for d in ["dev", "proc", "sys"] {
            fs::create_dir_all(dir.join(d)).expect("mkdir");
        }
    }
}

struct Overlay {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
}

impl Overlay {
    fn new(with_etc: bool, with_dev: bool) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let base = root.join("base");
        busybox_rootfs(&base, with_etc, with_dev);
        let upper = root.join("upper");
        let work = root.join("work");
        fs::create_dir(&upper).expect("upper");
        fs::create_dir(&work).expect("work");
        Overlay {
            _tmp: tmp,
            root,
            lowers: vec![base],
            upper,
            work,
        }
    }

    /// Adds a layer on top of the others.
    fn push_layer(&mut self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        fs::create_dir_all(&dir).expect("mkdir layer");
        self.lowers.insert(0, dir.clone());
        dir
    }

    fn rootfs(&self) -> RootFs {
        RootFs::Overlay {
            lowers: self.lowers.clone(),
            upper: self.upper.clone(),
            work: self.work.clone(),
        }
    }

    fn spec(&self, script: &str) -> RunSpec {
        RunSpec::new(self.rootfs(), sh(script))
    }

    /// Every path in upper, relative, sorted.
    fn upper_entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut pending = vec![self.upper.clone()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).expect("read upper") {
                let path = entry.expect("entry").path();
                out.push(
                    path.strip_prefix(&self.upper)
                        .expect("prefix")
                        .display()
                        .to_string(),
                );
                if fs::symlink_metadata(&path).expect("lstat").is_dir() {
                    pending.push(path);
                }
            }
        }
        out.sort();
        out
    }
}

fn sh(script: &str) -> Vec<OsString> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

fn assert_no_mounts_left(marker: &Path) {
    let mounts = fs::read_to_string("/proc/self/mounts").expect("read mounts");
    let marker = marker.to_string_lossy();
    assert!(
        !mounts.contains(marker.as_ref()),
        "mounts left behind under {marker}:\n{mounts}"
    );
    assert!(
        !mounts.contains("stowage-run-"),
        "run dir mounts left behind:\n{mounts}"
    );
}

fn run_with(sandbox: &Sandbox, spec: &RunSpec) -> (ExitStatus, String) {
    preconditions();
    let mut output = Vec::new();
    let status = sandbox.run(spec, &mut output).expect("run");
    let marker = match &spec.rootfs {
        RootFs::Overlay { upper, .. } => upper.parent().expect("parent").to_path_buf(),
        RootFs::Directory(dir) => dir.clone(),
    };
    assert_no_mounts_left(&marker);
    (status, String::from_utf8(output).expect("utf8 output"))
}

fn run(spec: &RunSpec) -> (ExitStatus, String) {
    run_with(&Sandbox::new(), spec)
}

fn run_ok(spec: &RunSpec) -> String {
    let (status, output) = run(spec);
    assert_eq!(status, ExitStatus::Exited(0), "output: {output}");
    output
}

#[test]
fn exit_codes_are_reported() {
    let ov = Overlay::new(true, true);
    assert_eq!(run(&ov.spec("exit 0")).0, ExitStatus::Exited(0));
    assert_eq!(run(&ov.spec("exit 3")).0, ExitStatus::Exited(3));
    assert_eq!(run(&ov.spec("false")).0, ExitStatus::Exited(1));
}

#[test]
fn cancellation_kills_with_a_signal() {
    preconditions();
    let ov = Overlay::new(true, true);
    let cancel = CancelToken::new();
    let trigger = cancel.clone();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        trigger.cancel();
    });
    let started = Instant::now();
    let mut output = Vec::new();
    // A background child too: it must die with PID 1.
    let status = Sandbox::new()
        .run_cancellable(&ov.spec("sleep 100 & sleep 100"), &mut output, &cancel)
        .expect("run");
    killer.join().expect("join");
    assert_eq!(status, ExitStatus::Signaled(libc::SIGKILL));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn output_is_interleaved_in_order_and_streamed() {
    let ov = Overlay::new(true, true);
    assert_eq!(
        run_ok(&ov.spec("echo a; echo b >&2; echo c; echo d >&2")),
        "a\nb\nc\nd\n"
    );

    struct Timed(Mutex<Vec<(Instant, Vec<u8>)>>);
    impl Write for &Timed {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("lock")
                .push((Instant::now(), buf.to_vec()));
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let timed = Timed(Mutex::new(Vec::new()));
    let started = Instant::now();
    let status = Sandbox::new()
        .run(&ov.spec("echo first; sleep 1; echo second"), &mut &timed)
        .expect("run");
    let finished = Instant::now();
    assert!(status.success());
    let chunks = timed.0.into_inner().expect("lock");
    let first = chunks
        .iter()
        .find(|(_, data)| data.starts_with(b"first"))
        .expect("first chunk");
    assert!(
        finished.duration_since(first.0) > Duration::from_millis(500),
        "first line arrived only at the end ({:?} after start)",
        first.0.duration_since(started)
    );
}

#[test]
fn env_is_passed_in_order_and_path_is_searched() {
    let ov = Overlay::new(true, true);
    let mut spec = ov.spec("env");
    spec.argv = vec!["env".into()];
    spec.env = vec![
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("ZED".into(), "last?".into()),
        ("ALPHA".into(), "a b".into()),
    ];
    // HOME is added from the user's passwd entry (root here), as Docker does.
    assert_eq!(
        run_ok(&spec),
        "PATH=/usr/bin:/bin\nZED=last?\nALPHA=a b\nHOME=/root\n"
    );
}

#[test]
fn missing_command_is_a_typed_error() {
    preconditions();
    let ov = Overlay::new(true, true);
    let mut spec = ov.spec("");
    spec.argv = vec!["no-such-tool".into()];
    let err = Sandbox::new()
        .run(&spec, &mut Vec::new())
        .expect_err("must fail");
    assert!(
        matches!(&err, ExecError::Exec { program, source } if program == "no-such-tool" && source.raw_os_error() == Some(libc::ENOENT)),
        "{err:?}"
    );
    assert_no_mounts_left(&ov.root);
}

#[test]
fn user_cwd_and_workdir_creation() {
    let ov = Overlay::new(true, true);
    let mut spec = ov.spec("id -u; id -g; id -G; pwd; stat -c %u:%g /srv/app /srv; touch f");
    spec.user = "app".into();
    spec.cwd = "/srv/app".into();
    assert_eq!(
        run_ok(&spec),
        "1000\n1000\n1000 10 50\n/srv/app\n1000:1000\n1000:1000\n"
    );
    let created = fs::metadata(ov.upper.join("srv/app")).expect("workdir in upper");
    assert_eq!((created.uid(), created.gid()), (1000, 1000));
    assert!(ov.upper.join("srv/app/f").is_file());

    let mut spec = ov.spec("id -u; id -g; id -G");
    spec.user = "nobody:staff".into();
    assert_eq!(run_ok(&spec), "65534\n50\n50\n");

    let mut spec = ov.spec("id -u; id -G");
    assert_eq!(run_ok(&spec), "0\n0 10\n");
    spec.user = "4321:99".into();
    assert_eq!(run_ok(&spec), "4321\n99\n");

    spec.user = "ghost".into();
    let err = Sandbox::new()
        .run(&spec, &mut Vec::new())
        .expect_err("unknown user");
    assert!(
        matches!(&err, ExecError::UnknownUser { user } if user == "ghost"),
        "{err:?}"
    );
}

#[test]
fn hostname_and_etc_files() {
    let ov = Overlay::new(true, true);
    let mut spec = ov.spec("hostname; cat /etc/hostname; grep -c box1 /etc/hosts; grep -c localhost /etc/hosts; cat /etc/resolv.conf >/dev/null && echo resolv");
    spec.hostname = "box1".into();
    assert_eq!(run_ok(&spec), "box1\nbox1\n1\n2\nresolv\n");
}

#[test]
fn command_is_pid_1_with_its_own_proc() {
    let ov = Overlay::new(true, true);
    // Only sh (1), ls and (if it has started yet) grep exist in the new PID
    // namespace: nothing of the host's is visible.
    let out = run_ok(&ov.spec("echo $$; ls /proc | grep -c '^[0-9]'"));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "{out}");
    let count: u32 = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    assert!((2..=3).contains(&count), "{out}");
}

#[test]
fn dev_nodes_work() {
    let ov = Overlay::new(true, true);
    let out = run_ok(&ov.spec(
        "head -c 4 /dev/urandom | wc -c; head -c 3 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; \
         ls /dev | sort | tr '\\n' ' '; echo; readlink /dev/ptmx; ls /dev/pts/ptmx; echo x > /dev/shm/t && echo shm-ok",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "4");
    assert_eq!(lines[1].trim(), "3");
    assert_eq!(lines[2], "null-ok");
    for node in [
        "full", "null", "ptmx", "pts", "random", "shm", "tty", "urandom", "zero",
    ] {
        assert!(
            lines[3].split(' ').any(|n| n == node),
            "missing /dev/{node}: {}",
            lines[3]
        );
    }
    assert_eq!(lines[4], "pts/ptmx");
    assert_eq!(lines[5], "/dev/pts/ptmx");
    assert_eq!(lines[6], "shm-ok");
}

#[test]
fn network_none_has_only_loopback_up() {
    let ov = Overlay::new(true, true);
    let mut spec =
        ov.spec("ls /sys/class/net; cat /sys/class/net/lo/flags; grep -c : /proc/net/dev");
    spec.network = NetworkMode::None;
    // flags 0x9 = IFF_UP | IFF_LOOPBACK
    assert_eq!(run_ok(&spec), "lo\n0x9\n1\n");

    let host_count = fs::read_to_string("/proc/net/dev")
        .expect("host net")
        .lines()
        .filter(|l| l.contains(':'))
        .count();
    let mut spec = ov.spec("grep -c : /proc/net/dev");
    spec.network = NetworkMode::Host;
    assert_eq!(run_ok(&spec).trim(), host_count.to_string());
}

#[test]
fn capabilities_are_dockers_defaults() {
    let ov = Overlay::new(true, true);
    let script = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status | tr -s '\\t' ' '";
    assert_eq!(
        run_ok(&ov.spec(script)),
        "CapInh: 0000000000000000\nCapPrm: 00000000a80425fb\nCapEff: 00000000a80425fb\nCapBnd: 00000000a80425fb\nCapAmb: 0000000000000000\n"
    );
    let mut spec = ov.spec(script);
    spec.user = "app".into();
    assert_eq!(
        run_ok(&spec),
        "CapInh: 0000000000000000\nCapPrm: 0000000000000000\nCapEff: 0000000000000000\nCapBnd: 00000000a80425fb\nCapAmb: 0000000000000000\n"
    );
}

#[test]
fn only_stdio_descriptors_are_inherited() {
    let ov = Overlay::new(true, true);
    // A descriptor without CLOEXEC in the parent must not leak either.
    let leaky = rustix::io::dup(std::io::stdout()).expect("dup");
    let out = run_ok(&ov.spec("ls /proc/self/fd | tr '\\n' ' '; readlink /proc/self/fd/0"));
    drop(leaky);
    assert_eq!(out, "0 1 2 3 /dev/null\n");
}

#[test]
fn upper_holds_exactly_the_diff() {
    let mut ov = Overlay::new(true, true);
    let layer = ov.push_layer("data-layer");
    fs::create_dir_all(layer.join("data")).expect("mkdir");
    fs::write(layer.join("data/old.txt"), "old").expect("write");
    fs::write(layer.join("data/keep.txt"), "keep").expect("write");
    fs::create_dir_all(layer.join("dir/sub")).expect("mkdir");
    fs::write(layer.join("dir/a"), "a").expect("write");
    run_ok(&ov.spec(
        "echo new > /new.txt && rm /data/old.txt && rm -rf /dir && mkdir /dir && touch /dir/b && cat /proc/self/status >/dev/null",
    ));
    assert_eq!(
        ov.upper_entries(),
        ["data", "data/old.txt", "dir", "dir/b", "new.txt"]
    );
    assert_eq!(
        fs::read_to_string(ov.upper.join("new.txt")).expect("read"),
        "new\n"
    );
    let whiteout = fs::symlink_metadata(ov.upper.join("data/old.txt")).expect("lstat");
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(whiteout.rdev(), 0);
    let mut value = [0u8; 8];
    let len = rustix::fs::lgetxattr(ov.upper.join("dir"), "trusted.overlay.opaque", &mut value)
        .expect("opaque xattr");
    assert_eq!(&value[..len], b"y");
}

#[test]
fn mount_points_never_reach_upper_even_without_etc_or_dev() {
    let ov = Overlay::new(false, false);
    let mut spec = ov.spec(
        "cat /etc/hosts >/dev/null && echo hosts && ls -d /proc/1 /dev/null /sys/class && touch /etc/mine /dev/x /tmpdata/y && cat /run/secrets/token",
    );
    let secret_dir = ov.root.join("secret");
    fs::create_dir(&secret_dir).expect("mkdir");
    fs::write(secret_dir.join("token"), "s3cr3t").expect("write");
    spec.mounts = vec![
        ExtraMount::SecretFile {
            source: secret_dir.join("token"),
            target: "/run/secrets/token".into(),
        },
        ExtraMount::Tmpfs {
            target: "/tmpdata".into(),
            size_bytes: Some(1 << 20),
        },
    ];
    assert_eq!(
        run_ok(&spec),
        "hosts\n/dev/null\n/proc/1\n/sys/class\ns3cr3t"
    );
    // /etc was created by the command (copied up from the scaffold), but none
    // of the mount points, nor /dev, /proc, /sys, /run or /tmpdata.
    assert_eq!(ov.upper_entries(), ["etc", "etc/mine"]);

    // Same with an image that has its own /etc (hosts etc. missing) and /dev.
    let ov = Overlay::new(true, true);
    run_ok(
        &ov.spec("touch /etc/mine /dev/x; echo >> /etc/hosts; mkdir -p /proc/x 2>/dev/null; true"),
    );
    assert_eq!(ov.upper_entries(), ["etc", "etc/mine"]);
    let image_etc = fs::metadata(ov.lowers[0].join("etc")).expect("stat");
    let upper_etc = fs::metadata(ov.upper.join("etc")).expect("stat");
    assert_eq!(upper_etc.mode(), image_etc.mode());
}

#[test]
fn bind_mounts_read_only_and_read_write() {
    let ov = Overlay::new(true, true);
    let ro = ov.root.join("ro-src");
    let rw = ov.root.join("rw-src");
    fs::create_dir_all(&ro).expect("mkdir");
    fs::create_dir_all(&rw).expect("mkdir");
    fs::write(ro.join("in"), "ro-data").expect("write");
    let mut spec = ov.spec("cat /ctx/in; echo; touch /ctx/x 2>/dev/null || echo ro-denied; touch /cache/made && echo rw-ok");
    spec.mounts = vec![
        ExtraMount::Bind {
            source: ro,
            target: "/ctx".into(),
            read_only: true,
        },
        ExtraMount::Bind {
            source: rw.clone(),
            target: "/cache".into(),
            read_only: false,
        },
    ];
    assert_eq!(run_ok(&spec), "ro-data\nro-denied\nrw-ok\n");
    assert!(rw.join("made").is_file());
    assert!(ov.upper_entries().is_empty(), "{:?}", ov.upper_entries());
}

#[test]
fn one_hundred_twenty_lowers_mount() {
    let mut ov = Overlay::new(true, true);
    for index in 0..120 {
        let name = format!("layer-{index:03}-{}", "x".repeat(60));
        let layer = ov.push_layer(&name);
        fs::create_dir_all(layer.join("many")).expect("mkdir");
        fs::write(layer.join(format!("many/f{index:03}")), "").expect("write");
    }
    let data_len: usize = ov.lowers.iter().map(|l| l.as_os_str().len() + 1).sum();
    assert!(data_len > 4096, "the test must exceed a page ({data_len})");
    assert_eq!(run_ok(&ov.spec("ls /many | wc -l")).trim(), "120");
}

#[test]
fn legacy_mount_api_works_for_few_lowers() {
    let mut ov = Overlay::new(true, true);
    ov.push_layer("l2");
    ov.push_layer("l3");
    let sandbox = Sandbox::with_options(SandboxOptions {
        overlay_api: OverlayApi::LegacyMountData,
        ..SandboxOptions::default()
    });
    let (status, out) = run_with(&sandbox, &ov.spec("echo legacy > /x; cat /x"));
    assert_eq!((status, out.as_str()), (ExitStatus::Exited(0), "legacy\n"));
    assert!(ov.upper.join("x").is_file());
}

#[test]
fn plain_directory_rootfs() {
    preconditions();
    let tmp = tempfile::tempdir().expect("tmp");
    busybox_rootfs(tmp.path(), true, false);
    let spec = RunSpec::new(
        RootFs::Directory(tmp.path().to_path_buf()),
        sh("echo $$ > /out; hostname"),
    );
    assert_eq!(run_ok(&spec), "stowage\n");
    assert_eq!(
        fs::read_to_string(tmp.path().join("out")).expect("read"),
        "1\n"
    );
}
