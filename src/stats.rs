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
    /// Purge passes that failed with a storage error (logged, retried next interval).
    pub purge_errors: u64,
    /// Events dropped because a subscriber's channel was full.
    pub events_dropped: u64,
}

/// One of the counters behind [`Stats`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    ExpiredPurged,
    StaleIndexEntriesRemoved,
    Quarantined,
    PurgePasses,
    PurgeErrors,
    EventsDropped,
}

/// The live counters of an open store, one atomic each.
#[derive(Debug, Default)]
pub(crate) struct Counters([AtomicU64; 6]);

impl Counters {
    pub(crate) fn add(&self, counter: Counter, n: u64) {
        self.0[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: Counter| self.0[c as usize].load(Ordering::Relaxed);
        Stats {
            expired_purged: get(Counter::ExpiredPurged),
            stale_index_entries_removed: get(Counter::StaleIndexEntriesRemoved),
            quarantined: get(Counter::Quarantined),
            purge_passes: get(Counter::PurgePasses),
            purge_errors: get(Counter::PurgeErrors),
            events_dropped: get(Counter::EventsDropped),
        }
    }
}
