//! Reading a context subtree's directory listings, with every child stat-ed, on several
//! threads at once. A no-op rebuild of a big context is mostly `statx` calls; the walk that
//! reports entries in sorted order then takes each listing from here instead of making the
//! calls itself, one directory after the other.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A directory's children with their (not followed) metadata, unsorted.
pub(crate) type Listing = Vec<(OsString, Metadata)>;

/// What reading one directory gave.
pub(crate) type ListingResult = Result<Listing, (PathBuf, io::Error)>;

/// Reads `dir` and stats each child relative to it. Children deleted in between are left out.
pub(crate) fn read_listing(dir: &Path) -> ListingResult {
    let read = fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    let mut children = Vec::new();
    for item in read {
        let item = item.map_err(|e| (dir.to_path_buf(), e))?;
        match item.metadata() {
            Ok(meta) => children.push((item.file_name(), meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err((item.path(), e)),
        }
    }
    Ok(children)
}

/// Reads the listings of `top` (context-relative, a directory) and of every directory below
/// it that `descend` accepts, on `threads` threads. The tree is cut into subtrees (breadth
/// first from `top` until there are a few per thread); each thread takes whole subtrees from
/// a shared list and walks them depth first on its own, so threads rarely meet. The map holds
/// one result per directory read, keyed by its context-relative path.
pub(crate) fn prefetch_listings(
    root: &Path,
    top: &str,
    threads: usize,
    descend: &(dyn Fn(&str) -> bool + Sync),
) -> HashMap<String, ListingResult> {
    let path_of = |rel: &str| {
        if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        }
    };
    let subdirs_of = |dir: &str, listing: &ListingResult| -> Vec<String> {
        let Ok(children) = listing else {
            return Vec::new();
        };
        children
            .iter()
            .filter(|(_, meta)| meta.is_dir())
            .map(|(name, _)| crate::join_rel(dir, &name.to_string_lossy()))
            .filter(|child| descend(child))
            .collect()
    };
    let mut results = HashMap::new();
    let mut frontier = vec![top.to_owned()];
    let wanted = threads.max(1) * 4;
    // Breadth first on this thread until the tree splits into enough subtrees.
    for _ in 0..3 {
        if threads <= 1 || frontier.len() >= wanted || frontier.is_empty() {
            break;
        }
        let mut next = Vec::new();
        for dir in frontier {
            let listing = read_listing(&path_of(&dir));
            next.extend(subdirs_of(&dir, &listing));
            results.insert(dir, listing);
        }
        frontier = next;
    }
    let subtrees = Mutex::new(frontier);
    let walk_subtrees = || {
        let mut local = HashMap::new();
        loop {
            let next = subtrees.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let Some(subtree) = next else {
                return local;
            };
            let mut stack = vec![subtree];
            while let Some(dir) = stack.pop() {
                let listing = read_listing(&path_of(&dir));
                stack.extend(subdirs_of(&dir, &listing));
                local.insert(dir, listing);
            }
        }
    };
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads.max(1))
            .map(|_| scope.spawn(walk_subtrees))
            .collect();
        results.extend(walk_subtrees());
        for helper in helpers {
            // A helper that panicked read nothing usable; the walk reads what is missing.
            if let Ok(local) = helper.join() {
                results.extend(local);
            }
        }
    });
    results
}
