//! Applier tests: rejections of malicious archives, whiteouts in both modes, attributes.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::apply::{
    ApplyError, ApplyOptions, OverlayXattrNamespace, SpecialFilePolicy, WhiteoutMode, apply_layer,
};
use crate::test_support::{RawTar, TreeSnapshot, snapshot};
use crate::writer::{LayerWriterOptions, read_xattrs, write_layer_tar};

/// A sandbox with `root/` (the apply target) and a sibling `outside/` holding a secret.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&root).expect("mkdir root");
        std::fs::create_dir(&outside).expect("mkdir outside");
        std::fs::write(outside.join("secret"), "untouched").expect("write secret");
        Sandbox {
            _dir: dir,
            root,
            outside,
        }
    }

    fn outside_snapshot(&self) -> TreeSnapshot {
        snapshot(&self.outside, true)
    }

    fn apply(&self, tar: &[u8], opts: &ApplyOptions) -> Result<crate::ApplyStats, ApplyError> {
        apply_layer(tar, &self.root, opts)
    }
}

fn defaults() -> ApplyOptions {
    ApplyOptions::default()
}

#[test]
fn rejects_dotdot_escapes_and_leaves_outside_alone() {
    for name in [
        "../outside/evil",
        "a/../../outside/evil",
        "/../outside/evil",
        "./../evil",
    ] {
        let sandbox = Sandbox::new();
        let before = sandbox.outside_snapshot();
        let tar = RawTar::new().file(name, b"pwned").finish();
        let error = sandbox.apply(&tar, &defaults()).expect_err(name);
        assert!(
            matches!(&error, ApplyError::PathEscapesRoot { entry } if entry == name),
            "{name}: {error}"
        );
        assert_eq!(sandbox.outside_snapshot(), before, "{name}");
    }
}

#[test]
fn absolute_paths_are_rooted() {
    let sandbox = Sandbox::new();
    let tar = RawTar::new().file("/etc/hostname", b"box").finish();
    sandbox.apply(&tar, &defaults()).expect("apply");
    assert_eq!(
        std::fs::read(sandbox.root.join("etc/hostname")).expect("read"),
        b"box"
    );
}

#[test]
fn writes_through_symlinks_stay_inside_the_root() {
    let sandbox = Sandbox::new();
    let before = sandbox.outside_snapshot();
    let absolute_outside = sandbox.outside.to_str().expect("utf8 path").to_owned();
    let tar = RawTar::new()
        .link("rel", EntryType::Symlink, "../outside")
        .link("abs", EntryType::Symlink, &absolute_outside)
        .link("up", EntryType::Symlink, "../../../../..")
        .file("rel/secret", b"pwned-rel")
        .file("abs/secret", b"pwned-abs")
        .file("up/outside/secret", b"pwned-up")
        .dir("rel/newdir/", 0o755, 1)
        .file("rel/newdir/f", b"pwned-dir")
        .finish();
    sandbox.apply(&tar, &defaults()).expect("apply");
    assert_eq!(sandbox.outside_snapshot(), before);
    assert_eq!(
        std::fs::read(sandbox.root.join("outside/secret")).expect("read"),
        b"pwned-up"
    );
    let inside_abs = sandbox
        .root
        .join(absolute_outside.trim_start_matches('/'))
        .join("secret");
    assert_eq!(std::fs::read(inside_abs).expect("read"), b"pwned-abs");
    assert_eq!(
        std::fs::read(sandbox.root.join("outside/newdir/f")).expect("read"),
        b"pwned-dir"
    );
}

#[test]
fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
    let sandbox = Sandbox::new();
    let before = sandbox.outside_snapshot();
    let secret = sandbox.outside.join("secret");
    let tar = RawTar::new()
        .link("victim", EntryType::Symlink, secret.to_str().expect("utf8"))
        .file("victim", b"pwned")
        .finish();
    sandbox.apply(&tar, &defaults()).expect("apply");
    assert_eq!(sandbox.outside_snapshot(), before);
    let meta = std::fs::symlink_metadata(sandbox.root.join("victim")).expect("lstat");
    assert!(meta.is_file());
}

#[test]
fn rejects_hardlinks_leaving_the_root() {
    let sandbox = Sandbox::new();
    let before = sandbox.outside_snapshot();
    let tar = RawTar::new()
        .link("h", EntryType::Link, "../outside/secret")
        .finish();
    let error = sandbox.apply(&tar, &defaults()).expect_err("escape");
    assert!(
        matches!(&error, ApplyError::HardlinkEscapesRoot { entry, target } if entry == "h" && target == "../outside/secret"),
        "{error}"
    );
    // An absolute target and a target behind a symlink both resolve inside the root.
    let absolute = sandbox.outside.join("secret");
    let tar = RawTar::new()
        .link("h", EntryType::Link, absolute.to_str().expect("utf8"))
        .finish();
    let error = sandbox.apply(&tar, &defaults()).expect_err("missing");
    assert!(
        matches!(error, ApplyError::HardlinkTargetMissing { .. }),
        "{error}"
    );
    let tar = RawTar::new()
        .link("out", EntryType::Symlink, "../outside")
        .link("h", EntryType::Link, "out/secret")
        .finish();
    let error = sandbox.apply(&tar, &defaults()).expect_err("missing");
    assert!(
        matches!(error, ApplyError::HardlinkTargetMissing { .. }),
        "{error}"
    );
    assert_eq!(sandbox.outside_snapshot(), before);
    assert_eq!(
        std::fs::metadata(sandbox.outside.join("secret"))
            .expect("stat")
            .nlink(),
        1
    );
}

#[test]
fn hardlinks_inside_the_root_share_the_inode() {
    let sandbox = Sandbox::new();
    let tar = RawTar::new()
        .file("a", b"shared")
        .link("dir/b", EntryType::Link, "a")
        .link("c", EntryType::Link, "/a")
        .finish();
    sandbox.apply(&tar, &defaults()).expect("apply");
    let ino = |name: &str| {
        std::fs::metadata(sandbox.root.join(name))
            .expect("stat")
            .ino()
    };
    assert_eq!(ino("a"), ino("dir/b"));
    assert_eq!(ino("a"), ino("c"));
    let tar = RawTar::new()
        .dir("d/", 0o755, 1)
        .link("e", EntryType::Link, "d")
        .finish();
    assert!(matches!(
        sandbox.apply(&tar, &defaults()),
        Err(ApplyError::InvalidEntry { .. })
    ));
}

#[test]
fn devices_follow_the_policy() {
    let tar = RawTar::new()
        .device("dev/null", EntryType::Char, 1, 3)
        .device("fifo", EntryType::Fifo, 0, 0)
        .finish();
    let sandbox = Sandbox::new();
    let error = sandbox.apply(&tar, &defaults()).expect_err("reject");
    assert!(
        matches!(&error, ApplyError::SpecialFileNotAllowed { entry, kind } if entry == "dev/null" && *kind == "character device"),
        "{error}"
    );
    let skip = ApplyOptions {
        special_files: SpecialFilePolicy::Skip,
        ..defaults()
    };
    let stats = sandbox.apply(&tar, &skip).expect("skip");
    assert_eq!(stats.skipped_special_files, 2);
    assert!(!sandbox.root.join("dev/null").exists());
    let create = ApplyOptions {
        special_files: SpecialFilePolicy::Create,
        ..defaults()
    };
    sandbox.apply(&tar, &create).expect("create");
    let null = std::fs::symlink_metadata(sandbox.root.join("dev/null")).expect("lstat");
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    assert!(
        std::fs::symlink_metadata(sandbox.root.join("fifo"))
            .expect("lstat")
            .file_type()
            .is_fifo()
    );
}

#[test]
fn truncated_and_corrupt_streams_are_errors() {
    let tar = RawTar::new()
        .file("a", &[7u8; 3000])
        .file("b", b"x")
        .finish();
    // Cut inside the data of `a`.
    let sandbox = Sandbox::new();
    let error = sandbox
        .apply(&tar[..1500], &defaults())
        .expect_err("truncated data");
    assert!(
        matches!(error, ApplyError::Truncated { ref entry, expected: 3000, .. } if entry == "a"),
        "{error}"
    );
    // Cut inside a header.
    let error = sandbox
        .apply(&tar[..512 * 7 + 100], &defaults())
        .expect_err("truncated header");
    assert!(matches!(error, ApplyError::Corrupt { .. }), "{error}");
    // Cut exactly at an entry boundary: no end-of-archive marker.
    let error = sandbox
        .apply(&tar[..512 * 7], &defaults())
        .expect_err("no end marker");
    assert!(
        matches!(error, ApplyError::MissingEndOfArchive { ref after } if after.as_deref() == Some("a")),
        "{error}"
    );
    let relaxed = ApplyOptions {
        require_end_marker: false,
        ..defaults()
    };
    sandbox.apply(&tar[..512 * 7], &relaxed).expect("relaxed");
    // Corrupt checksum of the second header.
    let mut corrupt = tar.clone();
    corrupt[512 * 7 + 10] ^= 0x55;
    let error = sandbox.apply(&corrupt, &defaults()).expect_err("corrupt");
    assert!(
        matches!(error, ApplyError::Corrupt { ref after, .. } if after.as_deref() == Some("a")),
        "{error}"
    );
}

#[test]
fn unsupported_and_invalid_entries_are_named() {
    let sandbox = Sandbox::new();
    let tar = RawTar::new().file("dir/.wh.", b"").finish();
    let error = sandbox.apply(&tar, &defaults()).expect_err("bad whiteout");
    assert!(
        matches!(&error, ApplyError::InvalidWhiteout { entry } if entry == "dir/.wh."),
        "{error}"
    );
    let tar = RawTar::new().file("/", b"").finish();
    assert!(matches!(
        sandbox.apply(&tar, &defaults()),
        Err(ApplyError::InvalidEntry { .. })
    ));
}

#[test]
fn read_only_dirs_get_their_mode_and_mtime_after_their_contents() {
    let sandbox = Sandbox::new();
    let tar = RawTar::new()
        .dir("ro/", 0o555, 1_000_000)
        .dir("ro/sub/", 0o500, 2_000_000)
        .file_with_mode("ro/sub/file", 0o4755, 3_000_000, b"suid")
        .file_with_mode("ro/file2", 0o2644, 4_000_000, b"sgid")
        .finish();
    sandbox.apply(&tar, &defaults()).expect("apply");
    let meta = |name: &str| std::fs::symlink_metadata(sandbox.root.join(name)).expect("lstat");
    assert_eq!(
        (meta("ro").mode() & 0o7777, meta("ro").mtime()),
        (0o555, 1_000_000)
    );
    assert_eq!(
        (meta("ro/sub").mode() & 0o7777, meta("ro/sub").mtime()),
        (0o500, 2_000_000)
    );
    assert_eq!(
        (
            meta("ro/sub/file").mode() & 0o7777,
            meta("ro/sub/file").mtime()
        ),
        (0o4755, 3_000_000)
    );
    assert_eq!(meta("ro/file2").mode() & 0o7777, 0o2644);
}

#[test]
fn pax_owner_and_xattrs_apply_but_overlay_xattrs_do_not() {
    let sandbox = Sandbox::new();
    let tar = RawTar::new()
        .pax(&[
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.user.note", b"hello"),
            ("gid", b"4000000"),
            ("uid", b"3000000"),
        ])
        .file("f", b"data")
        .finish();
    sandbox.apply(&tar, &defaults()).expect("apply");
    let path = sandbox.root.join("f");
    let meta = std::fs::metadata(&path).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (3_000_000, 4_000_000));
    let xattrs = read_xattrs(&path).expect("xattrs");
    assert_eq!(
        xattrs.get(&b"user.note"[..]).map(Vec::as_slice),
        Some(&b"hello"[..])
    );
    assert!(!xattrs.contains_key(&b"trusted.overlay.redirect"[..]));
}

/// The OCI spec's example: base `file1 a/file2 b/ c/file3`, then delete file1, file2, b.
fn base_layer() -> Vec<u8> {
    RawTar::new()
        .file("file1", b"1")
        .dir("a/", 0o755, 5)
        .file("a/file2", b"2")
        .dir("b/", 0o755, 5)
        .file("b/inner", b"i")
        .dir("c/", 0o755, 5)
        .file("c/file3", b"3")
        .file("c/file4", b"4")
        .finish()
}

fn whiteout_layer() -> Vec<u8> {
    RawTar::new()
        .file(".wh.b", b"")
        .file(".wh.file1", b"")
        .dir("a/", 0o755, 6)
        .file("a/.wh.file2", b"")
        .dir("c/", 0o755, 6)
        .file("c/kept", b"new in this layer")
        .file("c/.wh..wh..opq", b"")
        .file("c/.wh..wh.plnk", b"")
        .file("new", b"n")
        .finish()
}

fn listing(root: &Path) -> Vec<String> {
    snapshot(root, false)
        .nodes
        .into_iter()
        .map(|(path, node)| format!("{} {}", String::from_utf8_lossy(&path), node.kind))
        .collect()
}

#[test]
fn merged_mode_removes_whited_out_paths() {
    let sandbox = Sandbox::new();
    sandbox.apply(&base_layer(), &defaults()).expect("base");
    let stats = sandbox
        .apply(&whiteout_layer(), &defaults())
        .expect("whiteouts");
    assert_eq!(stats.whiteouts, 4);
    assert_eq!(
        listing(&sandbox.root),
        vec!["a dir", "c dir", "c/kept file", "new file"]
    );
}

#[test]
fn overlay_lower_mode_produces_overlay_whiteouts_that_round_trip() {
    for namespace in [OverlayXattrNamespace::Trusted, OverlayXattrNamespace::User] {
        let sandbox = Sandbox::new();
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::OverlayLower(namespace),
            ..defaults()
        };
        sandbox.apply(&whiteout_layer(), &opts).expect("apply");
        assert_eq!(
            listing(&sandbox.root),
            vec![
                "a dir",
                "a/file2 char",
                "b char",
                "c dir",
                "c/kept file",
                "file1 char",
                "new file"
            ]
        );
        let device = std::fs::symlink_metadata(sandbox.root.join("b")).expect("lstat");
        assert_eq!((device.rdev(), device.mode() & 0o7777), (0, 0));
        let xattr_name = match namespace {
            OverlayXattrNamespace::Trusted => &b"trusted.overlay.opaque"[..],
            OverlayXattrNamespace::User => &b"user.overlay.opaque"[..],
        };
        let xattrs = read_xattrs(&sandbox.root.join("c")).expect("xattrs");
        assert_eq!(xattrs.get(xattr_name).map(Vec::as_slice), Some(&b"y"[..]));

        // Writing the lower dir back as an overlay upper gives the whiteout entries again.
        let writer_opts = LayerWriterOptions {
            overlay_upper: true,
            ..LayerWriterOptions::default()
        };
        let (tar, _) = write_layer_tar(&sandbox.root, &writer_opts, Vec::new()).expect("write");
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|entry| String::from_utf8_lossy(&entry.expect("entry").path_bytes()).into_owned())
            .collect();
        assert_eq!(
            names,
            vec![
                ".wh.b",
                ".wh.file1",
                "a/",
                "a/.wh.file2",
                "c/",
                "c/.wh..wh..opq",
                "c/kept",
                "new"
            ]
        );
        // And applying that onto the merged base gives the same result as the original layer.
        let merged = Sandbox::new();
        merged.apply(&base_layer(), &defaults()).expect("base");
        merged.apply(&tar, &defaults()).expect("re-written layer");
        assert_eq!(
            listing(&merged.root),
            vec!["a dir", "c dir", "c/kept file", "new file"]
        );
    }
}

#[test]
fn directory_over_directory_keeps_contents_and_updates_attributes() {
    let sandbox = Sandbox::new();
    sandbox.apply(&base_layer(), &defaults()).expect("base");
    let tar = RawTar::new().dir("c/", 0o700, 77).finish();
    sandbox.apply(&tar, &defaults()).expect("apply");
    let meta = std::fs::metadata(sandbox.root.join("c")).expect("stat");
    assert_eq!((meta.mode() & 0o7777, meta.mtime()), (0o700, 77));
    assert!(sandbox.root.join("c/file3").exists());
    // A file over a directory replaces the whole directory.
    let tar = RawTar::new().file("c", b"now a file").finish();
    sandbox.apply(&tar, &defaults()).expect("apply");
    assert!(
        std::fs::symlink_metadata(sandbox.root.join("c"))
            .expect("lstat")
            .is_file()
    );
}

#[test]
fn trailing_bytes_are_consumed() {
    let sandbox = Sandbox::new();
    let mut tar = RawTar::new().file("a", b"x").finish();
    tar.extend_from_slice(&[0u8; 4096]);
    let stats = sandbox.apply(&tar, &defaults()).expect("apply");
    // tar-rs stops at the first zero block; the rest is drained.
    assert_eq!(stats.trailing_bytes, 512 + 4096);
}

#[test]
fn overlay_lower_layers_mount_as_overlayfs() {
    // Two layers unpacked as lower dirs; mount them and check that whiteouts hide paths.
    let sandbox = Sandbox::new();
    let work = tempfile::tempdir().expect("tempdir");
    let lower0 = work.path().join("l0");
    let lower1 = work.path().join("l1");
    let merged = work.path().join("merged");
    for dir in [&lower0, &lower1, &merged] {
        std::fs::create_dir(dir).expect("mkdir");
    }
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::OverlayLower(OverlayXattrNamespace::Trusted),
        ..defaults()
    };
    apply_layer(&base_layer()[..], &lower0, &opts).expect("l0");
    apply_layer(&whiteout_layer()[..], &lower1, &opts).expect("l1");
    let data = format!("lowerdir={}:{}", lower1.display(), lower0.display());
    let mounted = rustix::mount::mount(
        "overlay",
        &merged,
        "overlay",
        rustix::mount::MountFlags::RDONLY,
        Some(std::ffi::CString::new(data).expect("cstring").as_c_str()),
    );
    // The tests run as root (chown, mknod); overlayfs is part of the build machine's contract.
    mounted.expect("mount overlayfs (tests need root and overlayfs)");
    drop(sandbox);
    let seen = listing(&merged);
    rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::DETACH).expect("umount");
    assert_eq!(seen, vec!["a dir", "c dir", "c/kept file", "new file"]);
}

#[test]
fn binary_xattr_values_with_newlines_round_trip() {
    let source = tempfile::tempdir().expect("tempdir");
    let file = source.path().join("bin");
    std::fs::write(&file, "elf").expect("write");
    let value = [0x01u8, 0x00, 0x00, 0x02, 0x0a, 0x04, 0x00, b'\n', 0xff];
    rustix::fs::lsetxattr(&file, "user.cap", &value, rustix::fs::XattrFlags::empty())
        .expect("xattr");
    let (tar, _) =
        write_layer_tar(source.path(), &LayerWriterOptions::default(), Vec::new()).expect("write");
    let sandbox = Sandbox::new();
    sandbox.apply(&tar, &defaults()).expect("apply");
    let xattrs = read_xattrs(&sandbox.root.join("bin")).expect("xattrs");
    assert_eq!(
        xattrs.get(&b"user.cap"[..]).map(Vec::as_slice),
        Some(&value[..])
    );
}

#[test]
fn gnu_long_names_and_pax_paths_are_honoured() {
    let long = format!("{}/{}", "x".repeat(150), "y".repeat(150));
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1);
    // tar-rs emits a GNU `L` long-name entry for this path.
    builder
        .append_data(&mut header, &long, &b"gnu!"[..])
        .expect("append");
    let tar = builder.into_inner().expect("finish");
    let sandbox = Sandbox::new();
    sandbox.apply(&tar, &defaults()).expect("apply");
    assert_eq!(
        std::fs::read(sandbox.root.join(&long)).expect("read"),
        b"gnu!"
    );
    // A PAX path escaping the root is caught like a header name.
    let tar = RawTar::new()
        .pax(&[("path", b"../../pax-escape")])
        .file("innocent", b"x")
        .finish();
    let error = sandbox.apply(&tar, &defaults()).expect_err("escape");
    assert!(
        matches!(&error, ApplyError::PathEscapesRoot { entry } if entry == "../../pax-escape"),
        "{error}"
    );
}

/// Blank numeric fields (only NULs or spaces), as some image tools write for uid/gid, read
/// as 0 like Go's archive/tar; a field with garbage in it is still corrupt.
#[test]
fn blank_numeric_header_fields_read_as_zero() {
    let blank_owner = |fill: u8| {
        let mut tar = RawTar::new().file("etc/hostname", b"box\n").finish();
        // The first header: uid at 108..116, gid at 116..124; fix the checksum after.
        tar[108..124].fill(fill);
        tar[148..156].fill(b' ');
        let sum: u32 = tar[..512].iter().map(|b| u32::from(*b)).sum();
        let field = format!("{sum:06o}\0 ");
        tar[148..156].copy_from_slice(field.as_bytes());
        tar
    };
    for fill in [0u8, b' '] {
        let sandbox = Sandbox::new();
        sandbox
            .apply(&blank_owner(fill), &defaults())
            .unwrap_or_else(|e| panic!("blank fields filled with {fill:#x}: {e}"));
        let meta = std::fs::metadata(sandbox.root.join("etc/hostname")).expect("applied file");
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
    }
    let sandbox = Sandbox::new();
    let error = sandbox
        .apply(&blank_owner(b'z'), &defaults())
        .expect_err("garbage uid");
    assert!(matches!(error, ApplyError::Corrupt { .. }), "{error}");
}
