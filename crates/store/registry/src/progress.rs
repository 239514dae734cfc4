//! Transfer progress reporting and the bounded-parallelism helper that moves
//! many blobs with a few worker threads, stopping cleanly at the first error.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use stowage_digest::Digest;

use crate::auth::lock;
use crate::error::{RegistryError, Result};

/// Receives progress of blob transfers; called from worker threads.
pub trait Progress: Sync {
    /// `done` bytes of the blob `digest` have been transferred, of `total` if known.
    /// Called repeatedly with a growing `done`; after a resume `done` continues
    /// from where it was.
    fn on_progress(&self, digest: &Digest, done: u64, total: Option<u64>);
}

/// Ignores progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn on_progress(&self, _digest: &Digest, _done: u64, _total: Option<u64>) {}
}

impl<F: Fn(&Digest, u64, Option<u64>) + Sync> Progress for F {
    fn on_progress(&self, digest: &Digest, done: u64, total: Option<u64>) {
        self(digest, done, total)
    }
}

/// Default number of parallel blob transfers (Docker's default is 3).
pub const DEFAULT_PARALLEL_TRANSFERS: usize = 3;

/// Runs `work` on every item with at most `workers` threads. After the first
/// failure no new item is started; running ones finish; the first error is returned.
pub fn for_each_parallel<T, F>(items: Vec<T>, workers: usize, work: F) -> Result<()>
where
    T: Send,
    F: Fn(T) -> Result<()> + Sync,
{
    let workers = workers.max(1).min(items.len().max(1));
    let queue = Mutex::new(items.into_iter().collect::<VecDeque<T>>());
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    if failed.load(Ordering::SeqCst) {
                        return;
                    }
                    let Some(item) = lock(&queue).pop_front() else {
                        return;
                    };
                    if let Err(error) = work(item) {
                        failed.store(true, Ordering::SeqCst);
                        let mut slot = lock(&first_error);
                        if slot.is_none() {
                            *slot = Some(error);
                        }
                        return;
                    }
                }
            });
        }
    });
    match first_error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn runs_everything_with_bounded_parallelism() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        for_each_parallel((0..20).collect(), 3, |_: i32| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
            running.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .expect("all succeed");
        assert_eq!(done.load(Ordering::SeqCst), 20);
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert!(peak.load(Ordering::SeqCst) >= 2);
    }

    #[test]
    fn stops_after_first_error() {
        let started = AtomicUsize::new(0);
        let result = for_each_parallel((0..100).collect(), 2, |i: i32| {
            started.fetch_add(1, Ordering::SeqCst);
            if i == 3 {
                return Err(RegistryError::Cancelled);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            Ok(())
        });
        assert!(matches!(result, Err(RegistryError::Cancelled)));
        assert!(
            started.load(Ordering::SeqCst) < 10,
            "kept going after the error"
        );
        assert!(for_each_parallel(Vec::<i32>::new(), 3, |_| Ok(())).is_ok());
    }
}
