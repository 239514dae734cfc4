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
