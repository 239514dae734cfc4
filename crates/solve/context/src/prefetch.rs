//! Reading a context subtree's directory listings on several threads at once. A no-op
//! rebuild of a big context is mostly `statx` calls, then per-entry work (names, ignore
//! rules, symlink targets); the walk that reports entries in sorted order takes each
//! listing, ready, from here instead of doing that work one directory after the other.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Context, ContextError, Entry};

/// One child of a directory, with what the walk needs to know about it.
#[derive(Debug)]
pub(crate) struct Child {
    /// The child's entry (its `rel` is the parent's plus its name).
    pub entry: Entry,
    /// Whether the ignore rules exclude it.
    pub excluded: bool,
}

/// A directory's children, sorted by name bytes.
#[derive(Debug)]
pub(crate) struct Listing {
    /// The children.
    pub children: Vec<Child>,
    /// The digest of the metadata of the children a walk reports (neither excluded nor
    /// special), in order: a selection fingerprint chains these instead of hashing every
    /// entry on the walking thread.
    pub visible_digest: stowage_digest::Digest,
}

/// What reading one directory gave.
pub(crate) type ListingResult = Result<Listing, ContextError>;

/// Reads the listings of `top` (context-relative, a directory) and of every directory below
/// it that the walk would enter, on `threads` threads. The tree is cut into subtrees
/// (breadth first from `top` until there are a few per thread); each thread takes whole
/// subtrees from a shared list and walks them depth first on its own, so threads rarely
/// meet. The map holds one result per directory read, keyed by its context-relative path.
pub(crate) fn prefetch_listings(
    context: &Context,
    top: &str,
    threads: usize,
) -> HashMap<String, ListingResult> {
    let subdirs_of = |listing: &ListingResult| -> Vec<String> {
        let Ok(listing) = listing else {
            return Vec::new();
        };
        listing
            .children
            .iter()
            .filter(|child| context.descends_into(child))
            .map(|child| child.entry.rel.clone())
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
            let listing = context.read_listing(&dir);
            next.extend(subdirs_of(&listing));
            results.insert(dir, listing);
        }
        frontier = next;
    }
    // Helper threads only pay off when there is more than one subtree to share.
    let threads = if frontier.len() > 1 { threads } else { 1 };
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
                let listing = context.read_listing(&dir);
                stack.extend(subdirs_of(&listing));
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
