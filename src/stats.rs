//! Counters of what the store did in the background.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the store's counters since it was opened, from [`Store::stats`](crate::Store::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Expired sessions deleted by the purge thread or `purge_expired`.
    pub expired_purged: u64,
    /// Index entries removed because they no longer matched a record.
    pub stale_index_entries_removed: u64,
    /// Records that failed to decode and were moved to the quarantine tree.
    pub quarantined: u64,
    /// Completed purge passes (background or `purge_expired`).
    pub purge_passes: u64,
    /// Cleanup passes that failed with a storage error (logged, retried next interval).
    pub purge_errors: u64,
    /// Events dropped because a subscriber's channel was full.
    pub events_dropped: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) expired_purged: AtomicU64,
    pub(crate) stale_index_entries_removed: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    pub(crate) purge_passes: AtomicU64,
    pub(crate) purge_errors: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            expired_purged: get(&self.expired_purged),
            stale_index_entries_removed: get(&self.stale_index_entries_removed),
            quarantined: get(&self.quarantined),
            purge_passes: get(&self.purge_passes),
            purge_errors: get(&self.purge_errors),
            events_dropped: get(&self.events_dropped),
        }
    }
}
