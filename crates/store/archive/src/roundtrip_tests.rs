//! Writer tests: format details, determinism, and the writer → applier round trip on random
//! trees (proptest), checked against GNU tar and Python's tarfile too.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tar::EntryType;

use crate::apply::{ApplyOptions, SpecialFilePolicy, apply_layer};
use crate::compress::{Compression, decompressing_reader, write_layer_with_threads};
use crate::test_support::{set_times, snapshot};
use crate::writer::{LayerWriteError, LayerWriterOptions, Ownership, write_layer_tar};

/// One node of a generated tree.
#[derive(Debug, Clone)]
enum NodeKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// Hardlink to the n-th regular file created so far (modulo their count).
    Hardlink(usize),
}

#[derive(Debug, Clone)]
struct NodeSpec {
    /// Parent: the n-th directory created so far (modulo their count; 0 is the root).
    parent: usize,
    name: String,
    kind: NodeKind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn name_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9._-]{1,10}",
        2 => "[a-z]{95,130}",
        1 => "[a-z]{200,250}",
    ]
    .prop_filter("reserved names", |name| {
        name != "." && name != ".." && !name.starts_with(".wh.")
    })
}

fn node_strategy() -> impl Strategy<Value = NodeSpec> {
    let kind = prop_oneof![
        3 => Just(NodeKind::Dir),
        5 => proptest::collection::vec(any::<u8>(), 0..3000).prop_map(NodeKind::File),
        2 => prop_oneof!["[a-z/.]{1,20}", "/[a-z]{110,140}"].prop_map(NodeKind::Symlink),
        2 => (0usize..50).prop_map(NodeKind::Hardlink),
    ];
    let mode = prop_oneof![
        Just(0o644u32),
        Just(0o755),
        Just(0o600),
        Just(0o4755),
        Just(0o2750),
        Just(0o1777),
        Just(0o555),
        Just(0o000),
    ];
    let owner = prop_oneof![Just(0u32), Just(1000), Just(65534), Just(3_000_000)];
    let xattrs = proptest::collection::btree_map(
        "user\\.[a-z]{1,8}",
        proptest::collection::vec(any::<u8>(), 0..40),
        0..3,
    );
    (
        0usize..50,
        name_strategy(),
        kind,
        mode,
        owner.clone(),
        owner,
        0i64..2_000_000_000,
        xattrs,
    )
        .prop_map(
            |(parent, name, kind, mode, uid, gid, mtime, xattrs)| NodeSpec {
                parent,
                name,
                kind,
                mode,
                uid,
                gid,
                mtime,
                xattrs,
            },
        )
}

/// Creates the tree described by `nodes` under `root`, in the given order (or reversed), with
/// a given atime. Returns nothing; metadata is final when it returns.
fn build_tree(root: &Path, nodes: &[NodeSpec], reverse: bool, atime: i64) {
    // First resolve the layout (paths) independently of the creation order.
    let mut dirs: Vec<PathBuf> = vec![PathBuf::new()];
    let mut files: Vec<PathBuf> = Vec::new();
    let mut planned: Vec<(PathBuf, NodeSpec)> = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for node in nodes {
        let parent = dirs[node.parent % dirs.len()].clone();
        let path = parent.join(&node.name);
        if path.as_os_str().len() > 1500 || !taken.insert(path.clone()) {
            continue;
        }
        let mut node = node.clone();
        match &node.kind {
            NodeKind::Dir => dirs.push(path.clone()),
            NodeKind::File(_) => files.push(path.clone()),
            NodeKind::Hardlink(index) => {
                if files.is_empty() {
                    node.kind = NodeKind::File(Vec::new());
                    files.push(path.clone());
                } else {
                    node.kind = NodeKind::Hardlink(index % files.len());
                }
            }
            NodeKind::Symlink(_) => {}
        }
        planned.push((path, node));
    }
    // Directories must exist before their children whatever the order.
    for (path, node) in &planned {
        if matches!(node.kind, NodeKind::Dir) {
            std::fs::create_dir_all(root.join(path)).expect("mkdir");
        }
    }
    let mut order: Vec<usize> = (0..planned.len()).collect();
    if reverse {
        order.reverse();
    }
    // Hardlinks need their target: create regular files first, then the rest.
    for pass in 0..2 {
        for &index in &order {
            let (path, node) = &planned[index];
            let full = root.join(path);
            match (&node.kind, pass) {
                (NodeKind::File(content), 0) => std::fs::write(&full, content).expect("write"),
                (NodeKind::Symlink(target), 1) => {
                    std::os::unix::fs::symlink(target, &full).expect("symlink")
                }
                (NodeKind::Hardlink(file_index), 1) => {
                    std::fs::hard_link(root.join(&files[*file_index]), &full).expect("link")
                }
                _ => {}
            }
        }
    }
    // Metadata: owners, xattrs, modes, then times (directories deepest first, last).
    for &index in &order {
        let (path, node) = &planned[index];
        let full = root.join(path);
        if matches!(node.kind, NodeKind::Hardlink(_)) {
            continue;
        }
        std::os::unix::fs::lchown(&full, Some(node.uid), Some(node.gid)).expect("chown");
        if !matches!(node.kind, NodeKind::Symlink(_)) {
            for (name, value) in &node.xattrs {
                rustix::fs::lsetxattr(&full, name.as_str(), value, rustix::fs::XattrFlags::empty())
                    .expect("setxattr");
            }
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(node.mode))
                .expect("chmod");
        }
    }
    for &index in &order {
        let (path, node) = &planned[index];
        if !matches!(node.kind, NodeKind::Dir | NodeKind::Hardlink(_)) {
            set_times(&root.join(path), atime, node.mtime);
        }
    }
    let mut dir_nodes: Vec<&(PathBuf, NodeSpec)> = planned
        .iter()
        .filter(|(_, node)| matches!(node.kind, NodeKind::Dir))
        .collect();
    dir_nodes.sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
    for (path, node) in dir_nodes {
        set_times(&root.join(path), atime, node.mtime);
    }
}

fn tar_of(root: &Path, opts: &LayerWriterOptions) -> Vec<u8> {
    write_layer_tar(root, opts, Vec::new())
        .expect("write layer")
        .0
}

fn apply_all() -> ApplyOptions {
    ApplyOptions {
        special_files: SpecialFilePolicy::Create,
        ..ApplyOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(nodes in proptest::collection::vec(node_strategy(), 1..40)) {
        let source = tempfile::tempdir().expect("tempdir");
        build_tree(source.path(), &nodes, false, 1_234);
        let tar = tar_of(source.path(), &LayerWriterOptions::default());
        let target = tempfile::tempdir().expect("tempdir");
        apply_layer(&tar[..], target.path(), &apply_all()).expect("apply");
        prop_assert_eq!(snapshot(target.path(), true), snapshot(source.path(), true));
    }

    #[test]
    fn random_trees_are_deterministic(nodes in proptest::collection::vec(node_strategy(), 1..30)) {
        let first = tempfile::tempdir().expect("tempdir");
        let second = tempfile::tempdir().expect("tempdir");
        build_tree(first.path(), &nodes, false, 1_000);
        build_tree(second.path(), &nodes, true, 999_999);
        let opts = LayerWriterOptions::default();
        prop_assert_eq!(tar_of(first.path(), &opts), tar_of(second.path(), &opts));
        for compression in [Compression::Gzip { level: 6 }, Compression::Zstd { level: 3 }] {
            let one = write_layer_with_threads(first.path(), &opts, compression, 1, Vec::new()).expect("one");
            let two = write_layer_with_threads(second.path(), &opts, compression, 2, Vec::new()).expect("two");
            prop_assert_eq!(one, two);
        }
    }
}

/// A fixed tree exercising every feature, for the format checks below.
fn sample_tree(root: &Path) {
    let long_dir = "d".repeat(120);
    let long_file = format!("{}/{}", long_dir, "f".repeat(200));
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::create_dir_all(root.join(&long_dir)).expect("mkdir");
    std::fs::create_dir_all(root.join("a-b")).expect("mkdir");
    std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
    std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").expect("write");
    std::fs::write(root.join(&long_file), "long").expect("write");
    std::fs::write(root.join("a/b/z"), "z").expect("write");
    std::fs::hard_link(root.join("a/b/z"), root.join("a/first")).expect("link");
    std::os::unix::fs::symlink("../etc/passwd", root.join("a/link")).expect("symlink");
    std::os::unix::fs::symlink("/".to_owned() + &"t".repeat(150), root.join("a/longlink"))
        .expect("symlink");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("a/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    rustix::fs::lsetxattr(
        root.join("etc/passwd"),
        "user.b",
        b"2",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("xattr");
    rustix::fs::lsetxattr(
        root.join("etc/passwd"),
        "user.a",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("xattr");
    rustix::fs::lsetxattr(
        root.join("etc"),
        "trusted.overlay.origin",
        b"x",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("xattr");
    std::os::unix::fs::lchown(root.join("etc/passwd"), Some(1000), Some(2000)).expect("chown");
    std::fs::set_permissions(
        root.join("etc/passwd"),
        std::fs::Permissions::from_mode(0o4711),
    )
    .expect("chmod");
    for path in [
        "etc/passwd",
        &long_file,
        "a/b/z",
        "a/link",
        "a/longlink",
        "a/fifo",
        "etc",
        &long_dir,
        "a-b",
        "a/b",
        "a",
    ] {
        set_times(&root.join(path), 5, 1_700_000_000);
    }
}

struct ListedEntry {
    path: String,
    entry_type: EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    pax_keys: Vec<String>,
    uname_empty: bool,
}

fn list(tar: &[u8]) -> Vec<ListedEntry> {
    let mut archive = tar::Archive::new(tar);
    let mut listed = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let pax_keys = entry
            .pax_extensions()
            .expect("pax")
            .map(|extensions| {
                extensions
                    .map(|extension| {
                        extension
                            .expect("record")
                            .key()
                            .expect("utf8 key")
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let header = entry.header();
        listed.push(ListedEntry {
            path: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
            entry_type: header.entry_type(),
            mode: header.mode().expect("mode"),
            uid: header.uid().expect("uid"),
            gid: header.gid().expect("gid"),
            mtime: header.mtime().expect("mtime"),
            link: entry
                .link_name_bytes()
                .map(|link| String::from_utf8_lossy(&link).into_owned()),
            pax_keys,
            uname_empty: header.username_bytes().is_none_or(<[u8]>::is_empty)
                && header.groupname_bytes().is_none_or(<[u8]>::is_empty),
        });
    }
    listed
}

#[test]
fn sample_tree_layout_order_and_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_tree(dir.path());
    let tar = tar_of(dir.path(), &LayerWriterOptions::default());
    let entries = list(&tar);
    let long_dir = "d".repeat(120);
    let long_file = format!("{}/{}", long_dir, "f".repeat(200));
    let paths: Vec<&str> = entries.iter().map(|entry| entry.path.as_str()).collect();
    let long_dir_slash = format!("{long_dir}/");
    assert_eq!(
        paths,
        vec![
            "a/",
            "a/b/",
            "a/b/z",
            "a/fifo",
            "a/first",
            "a/link",
            "a/longlink",
            "a-b/",
            &long_dir_slash,
            &long_file,
            "etc/",
            "etc/passwd",
        ]
    );
    let by_path: BTreeMap<&str, &ListedEntry> = entries
        .iter()
        .map(|entry| (entry.path.as_str(), entry))
        .collect();
    let first = by_path["a/first"];
    assert_eq!(
        (first.entry_type, first.link.as_deref()),
        (EntryType::Link, Some("a/b/z"))
    );
    let passwd = by_path["etc/passwd"];
    assert_eq!(
        (passwd.mode, passwd.uid, passwd.gid, passwd.mtime),
        (0o4711, 1000, 2000, 1_700_000_000)
    );
    assert_eq!(
        passwd.pax_keys,
        vec!["SCHILY.xattr.user.a", "SCHILY.xattr.user.b"]
    );
    assert!(
        by_path["etc/"].pax_keys.is_empty(),
        "trusted.overlay.* must not be stored"
    );
    assert_eq!(by_path[long_file.as_str()].pax_keys, vec!["path"]);
    assert_eq!(by_path["a/longlink"].pax_keys, vec!["linkpath"]);
    assert_eq!(by_path["a/fifo"].entry_type, EntryType::Fifo);
    assert!(entries.iter().all(|entry| entry.uname_empty));
    // Stable bytes across runs.
    assert_eq!(tar, tar_of(dir.path(), &LayerWriterOptions::default()));
}

#[test]
fn gnu_tar_and_python_list_the_layer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).expect("mkdir");
    sample_tree(&tree);
    let tar_path = dir.path().join("layer.tar");
    std::fs::write(&tar_path, tar_of(&tree, &LayerWriterOptions::default())).expect("write");
    let gnu = std::process::Command::new("tar")
        .arg("-tvf")
        .arg(&tar_path)
        .output()
        .expect("tar");
    assert!(gnu.status.success(), "{gnu:?}");
    let listing = String::from_utf8_lossy(&gnu.stdout);
    let long_file = format!("{}/{}", "d".repeat(120), "f".repeat(200));
    assert!(listing.contains(&long_file), "{listing}");
    assert!(listing.contains("a/first link to a/b/z"), "{listing}");
    assert!(listing.contains("-rws--x--x 1000/2000"), "{listing}");
    assert!(listing.contains("a/link -> ../etc/passwd"), "{listing}");
    let python = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, tarfile\n\
             t = tarfile.open(sys.argv[1])\n\
             for m in t.getmembers():\n\
             \x20   print(m.name, m.type.decode(), oct(m.mode), m.uid, m.gid, sorted(k for k in m.pax_headers))\n",
        )
        .arg(&tar_path)
        .output()
        .expect("python3");
    assert!(python.status.success(), "{python:?}");
    let listing = String::from_utf8_lossy(&python.stdout);
    assert!(
        listing.contains(
            "etc/passwd 0 0o4711 1000 2000 ['SCHILY.xattr.user.a', 'SCHILY.xattr.user.b']"
        ),
        "{listing}"
    );
    assert!(listing.contains(&format!("{long_file} 0")), "{listing}");
}

#[test]
fn options_clamp_chown_chmod_and_exclude() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_tree(dir.path());
    let opts = LayerWriterOptions {
        clamp_mtime: Some(1_000),
        chown: Some(Ownership { uid: 7, gid: 8 }),
        chmod: Some(0o640),
        exclude: vec!["./etc/".to_owned(), "a/b".to_owned()],
        ..LayerWriterOptions::default()
    };
    let entries = list(&tar_of(dir.path(), &opts));
    let paths: Vec<&str> = entries.iter().map(|entry| entry.path.as_str()).collect();
    assert!(
        !paths
            .iter()
            .any(|path| path.starts_with("etc") || path.starts_with("a/b")),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"a-b/"),
        "exclusion must stop at component boundaries"
    );
    for entry in &entries {
        assert_eq!(
            (entry.uid, entry.gid, entry.mtime),
            (7, 8, 1_000),
            "{}",
            entry.path
        );
        match entry.entry_type {
            EntryType::Regular | EntryType::Directory => {
                assert_eq!(entry.mode, 0o640, "{}", entry.path)
            }
            EntryType::Symlink => assert_eq!(entry.mode, 0o777, "{}", entry.path),
            _ => {}
        }
    }
    // a/first was a hardlink to the excluded a/b/z: it is now stored in full.
    let first = entries
        .iter()
        .find(|entry| entry.path == "a/first")
        .expect("a/first");
    assert_eq!(first.entry_type, EntryType::Regular);
    let bad = LayerWriterOptions {
        chmod: Some(0o17777),
        ..LayerWriterOptions::default()
    };
    assert!(matches!(
        write_layer_tar(dir.path(), &bad, Vec::new()),
        Err(LayerWriteError::InvalidChmod { .. })
    ));
}

#[test]
fn overlay_upper_conversion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("var/cache")).expect("mkdir");
    std::fs::write(root.join("var/cache/-first"), "x").expect("write");
    rustix::fs::lsetxattr(
        root.join("var/cache"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("xattr");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("var/gone"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .expect("whiteout");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("var/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("device");
    std::fs::set_permissions(
        root.join("var/null"),
        std::fs::Permissions::from_mode(0o666),
    )
    .expect("chmod");
    let opts = LayerWriterOptions {
        overlay_upper: true,
        ..LayerWriterOptions::default()
    };
    let entries = list(&tar_of(root, &opts));
    let described: Vec<(String, EntryType, u32)> = entries
        .iter()
        .map(|entry| (entry.path.clone(), entry.entry_type, entry.mode))
        .collect();
    assert_eq!(
        described,
        vec![
            ("var/".to_owned(), EntryType::Directory, 0o755),
            ("var/.wh.gone".to_owned(), EntryType::Regular, 0),
            ("var/cache/".to_owned(), EntryType::Directory, 0o755),
            ("var/cache/.wh..wh..opq".to_owned(), EntryType::Regular, 0),
            ("var/cache/-first".to_owned(), EntryType::Regular, 0o644),
            ("var/null".to_owned(), EntryType::Char, 0o666),
        ]
    );
    assert!(
        entries[2].pax_keys.is_empty(),
        "opaque xattr must not be stored"
    );
    // Without the conversion the same tree is archived as is (a real 0/0 device).
    let plain = list(&tar_of(root, &LayerWriterOptions::default()));
    assert!(
        plain
            .iter()
            .any(|entry| entry.path == "var/gone" && entry.entry_type == EntryType::Char)
    );
}

#[test]
fn reserved_whiteout_names_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(".wh.sneaky"), "").expect("write");
    assert!(matches!(
        write_layer_tar(dir.path(), &LayerWriterOptions::default(), Vec::new()),
        Err(LayerWriteError::ReservedWhiteoutName { .. })
    ));
}

#[test]
fn write_layer_digests_match_the_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample_tree(dir.path());
    let opts = LayerWriterOptions::default();
    let plain = tar_of(dir.path(), &opts);
    for compression in [
        Compression::None,
        Compression::Gzip { level: 6 },
        Compression::Zstd { level: 3 },
    ] {
        let mut blob = Vec::new();
        let digests =
            write_layer_with_threads(dir.path(), &opts, compression, 2, &mut blob).expect("write");
        assert_eq!(
            digests.diff_id,
            stowage_digest::Digest::of(&plain),
            "{compression:?}"
        );
        assert_eq!(digests.uncompressed_size, plain.len() as u64);
        assert_eq!(digests.blob_digest, stowage_digest::Digest::of(&blob));
        assert_eq!(digests.compressed_size, blob.len() as u64);
        let (_, mut reader) = decompressing_reader(&blob[..]).expect("reader");
        let mut decompressed = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut decompressed).expect("decompress");
        assert_eq!(decompressed, plain, "{compression:?}");
    }
}

#[test]
fn non_utf8_names_round_trip() {
    let source = tempfile::tempdir().expect("tempdir");
    let name = OsStr::from_bytes(b"caf\xe9");
    std::fs::write(source.path().join(name), "bytes").expect("write");
    let tar = tar_of(source.path(), &LayerWriterOptions::default());
    let target = tempfile::tempdir().expect("tempdir");
    apply_layer(&tar[..], target.path(), &apply_all()).expect("apply");
    assert_eq!(
        std::fs::read(target.path().join(name)).expect("read"),
        b"bytes"
    );
}
