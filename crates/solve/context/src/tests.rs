//! Tests of context resolution, walking and the stat cache.

use std::fs;
use std::os::unix::fs::symlink;
use std::process::Command;

use super::*;

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("src/sub")).unwrap();
    fs::write(root.join("src/a.txt"), "a").unwrap();
    fs::write(root.join("src/b.png"), "b").unwrap();
    fs::write(root.join("src/sub/c.txt"), "c").unwrap();
    fs::write(root.join("index.js"), "js").unwrap();
    fs::write(root.join("index.ts"), "ts").unwrap();
    fs::write(root.join("arr[0].txt"), "arr").unwrap();
    fs::write(root.join("requirements.txt"), "flask\n").unwrap();
    symlink("src/a.txt", root.join("link-in")).unwrap();
    symlink("../../etc/passwd", root.join("src/link-out")).unwrap();
    symlink("/etc/passwd", root.join("abs-link")).unwrap();
    dir
}

fn rels(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.rel.as_str()).collect()
}

struct IgnorePng;
impl PathFilter for IgnorePng {
    fn is_excluded(&self, rel: &str) -> Result<bool, String> {
        Ok(rel.ends_with(".png") || rel == "src/sub")
    }
    fn can_skip_excluded_dir(&self, _rel: &str) -> bool {
        true
    }
}

#[test]
fn resolves_plain_paths_wildcards_and_escapes() {
    let dir = tree();
    let ctx = Context::open(dir.path(), Box::new(KeepAll)).unwrap();
    assert_eq!(rels(&ctx.resolve("src/a.txt").unwrap()), ["src/a.txt"]);
    assert_eq!(rels(&ctx.resolve("/src/a.txt").unwrap()), ["src/a.txt"]);
    assert_eq!(rels(&ctx.resolve("src/").unwrap()), ["src"]);
    assert_eq!(
        rels(&ctx.resolve("./src/./sub/../a.txt").unwrap()),
        ["src/a.txt"]
    );
    assert_eq!(
        rels(&ctx.resolve("index.?s").unwrap()),
        ["index.js", "index.ts"]
    );
    assert_eq!(rels(&ctx.resolve("src/*.txt").unwrap()), ["src/a.txt"]);
    assert_eq!(rels(&ctx.resolve("*/*.txt").unwrap()), ["src/a.txt"]);
    assert_eq!(rels(&ctx.resolve("arr[[]0].txt").unwrap()), ["arr[0].txt"]);
    let root = ctx.resolve(".").unwrap();
    assert_eq!(root.len(), 1);
    assert_eq!(root[0].kind, EntryKind::Dir);
}

#[test]
fn follows_symlinks_inside_and_refuses_outside() {
    let dir = tree();
    let ctx = Context::open(dir.path(), Box::new(KeepAll)).unwrap();
    let linked = ctx.resolve("link-in").unwrap();
    assert_eq!(linked[0].rel, "link-in");
    assert_eq!(linked[0].kind, EntryKind::File);
    assert_eq!(linked[0].size, 1);
    assert!(matches!(
        ctx.resolve("src/link-out"),
        Err(ContextError::OutsideContext { .. })
    ));
    assert!(matches!(
        ctx.resolve("abs-link"),
        Err(ContextError::OutsideContext { .. })
    ));
    assert!(matches!(
        ctx.resolve("../x"),
        Err(ContextError::OutsideContext { .. })
    ));
    assert!(matches!(
        ctx.resolve("src/../../x"),
        Err(ContextError::OutsideContext { .. })
    ));
}

#[test]
fn missing_source_lists_similar_names() {
    let dir = tree();
    let ctx = Context::open(dir.path(), Box::new(KeepAll)).unwrap();
    match ctx.resolve("requirement.txt") {
        Err(ContextError::NotFound { similar, .. }) => {
            assert!(
                similar.contains(&"requirements.txt".to_owned()),
                "{similar:?}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    let message = ctx.resolve("src/c.txt").unwrap_err().to_string();
    assert!(message.contains("src/sub/c.txt"), "{message}");
    assert!(matches!(
        ctx.resolve("*.nothing"),
        Err(ContextError::NotFound { .. })
    ));
}

#[test]
fn walk_is_sorted_filtered_and_does_not_follow_inner_symlinks() {
    let dir = tree();
    let ctx = Context::open(dir.path(), Box::new(IgnorePng)).unwrap();
    let top = ctx.resolve("src").unwrap().remove(0);
    let mut seen = Vec::new();
    ctx.walk(&top, &mut |e| {
        seen.push((e.rel.clone(), e.kind.clone()));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        vec![
            ("src".to_owned(), EntryKind::Dir),
            ("src/a.txt".to_owned(), EntryKind::File),
            (
                "src/link-out".to_owned(),
                EntryKind::Symlink("../../etc/passwd".to_owned())
            ),
        ]
    );
    assert!(matches!(
        ctx.resolve("src/b.png"),
        Err(ContextError::Excluded { .. })
    ));
    let summary = ctx.summary().unwrap();
    // index.js index.ts arr[0].txt requirements.txt link-in abs-link src/a.txt src/link-out
    assert_eq!(summary.files, 8);
}

#[test]
fn stat_cache_skips_unchanged_files_and_catches_same_size_same_mtime_edits() {
    let dir = tree();
    let ctx = Context::open(dir.path(), Box::new(KeepAll)).unwrap();
    let mut cache = StatCache::new();
    let entry = ctx.resolve("requirements.txt").unwrap().remove(0);
    let first = ctx.content_digest(&entry, &mut cache).unwrap();
    assert_eq!(first, Digest::of(b"flask\n"));
    assert_eq!(cache.counters(), (0, 1));
    let again = ctx.resolve("requirements.txt").unwrap().remove(0);
    assert_eq!(ctx.content_digest(&again, &mut cache).unwrap(), first);
    assert_eq!(cache.counters(), (1, 1));

    // Same size, mtime restored with touch -r: only ctime differs.
    let path = dir.path().join("requirements.txt");
    let reference = dir.path().join("ref");
    fs::copy(&path, &reference).unwrap();
    let status = Command::new("touch")
        .arg("-r")
        .arg(&path)
        .arg(&reference)
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&path, "django").unwrap();
    let status = Command::new("touch")
        .arg("-r")
        .arg(&reference)
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let edited = ctx.resolve("requirements.txt").unwrap().remove(0);
    assert_eq!(edited.size, entry.size);
    assert_eq!(
        (edited.mtime, edited.mtime_nsec),
        (entry.mtime, entry.mtime_nsec)
    );
    assert_eq!(
        ctx.content_digest(&edited, &mut cache).unwrap(),
        Digest::of(b"django")
    );
}

#[test]
fn edit_distance_basics() {
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("same", "same"), 0);
}

/// A tree big enough for the walk to split it between threads.
fn wide_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for module in 0..6 {
        for package in 0..4 {
            let path = dir.path().join(format!("src/m{module}/p{package}"));
            fs::create_dir_all(&path).unwrap();
            for file in 0..5 {
                fs::write(
                    path.join(format!("f{file}.txt")),
                    format!("{module}{package}{file}"),
                )
                .unwrap();
                fs::write(path.join(format!("f{file}.png")), "image").unwrap();
            }
        }
    }
    dir
}

fn touch_reference(from: &Path, to: &Path) {
    let status = Command::new("touch")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn selection_fingerprint_sees_every_visible_change_and_no_excluded_one() {
    let dir = wide_tree();
    let root = dir.path();
    let ctx = Context::open(root, Box::new(IgnorePng)).unwrap();
    let fingerprint = || ctx.selection_fingerprint(&["."]).unwrap();
    let first = fingerprint();
    assert_eq!(fingerprint(), first, "nothing changed");

    // An excluded file changes: the selection did not.
    fs::write(root.join("src/m5/p3/f4.png"), "another image").unwrap();
    assert_eq!(fingerprint(), first, "only an excluded file changed");

    // Same size and mtime, new content (ctime moves): caught, deep in the tree.
    let deep = root.join("src/m4/p2/f3.txt");
    let reference = root.join("reference");
    fs::copy(&deep, &reference).unwrap();
    touch_reference(&deep, &reference);
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&deep, "xyz").unwrap();
    touch_reference(&reference, &deep);
    fs::remove_file(&reference).unwrap();
    let edited = fingerprint();
    assert_ne!(edited, first, "a same-size, same-mtime edit");

    // A new file, a removed file, a renamed directory: each is seen.
    fs::write(root.join("src/m0/p0/new.txt"), "new").unwrap();
    let added = fingerprint();
    assert_ne!(added, edited, "an added file");
    fs::remove_file(root.join("src/m3/p1/f0.txt")).unwrap();
    let removed = fingerprint();
    assert_ne!(removed, added, "a removed file");
    fs::rename(root.join("src/m2"), root.join("src/m2-renamed")).unwrap();
    assert_ne!(fingerprint(), removed, "a renamed directory");

    // Sources are part of it: a narrower selection differs.
    assert_ne!(
        ctx.selection_fingerprint(&["src/m0"]).unwrap(),
        fingerprint()
    );
}

#[test]
fn a_walk_of_a_wide_tree_is_complete_and_sorted() {
    let dir = wide_tree();
    let ctx = Context::open(dir.path(), Box::new(IgnorePng)).unwrap();
    let mut seen = Vec::new();
    ctx.walk_from(
        "",
        &mut |entry| {
            seen.push(entry.rel.clone());
            Ok(())
        },
        &mut |_, _| {},
    )
    .unwrap();
    // 1 src + 6 modules + 24 packages + 120 .txt files; no .png.
    assert_eq!(seen.len(), 1 + 6 + 24 + 120);
    assert!(seen.iter().all(|rel| !rel.ends_with(".png")));
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
}
