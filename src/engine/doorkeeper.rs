//! Admission to the read cache on a miss: a record is cached when it is read from the
//! backend a second time within a window, not on its first read (the doorkeeper of
//! TinyLFU, Einziger et al., 2017).
//!
//! Over a working set larger than the cache (a uniform load of 100k sessions into 16k
//! entries), most records read from the backend are not read again before the cache
//! would evict them: caching each one costs an insert, an eviction and the drop of the
//! evicted record, on every such read, for a hit that never comes. The doorkeeper keeps
//! one bit per record seen (a Bloom filter with one hash, over a digest's uniform bytes),
//! and forgets them all once it has marked as many records as the cache holds, so the
//! window follows the cache's reach. A record read twice within it is cached on the second
//! read; a false positive only caches a record early.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::id::Digest;

/// The shortest window, in records: a tiny cache still admits a record read twice a
/// few hundred reads apart.
const LEAST_WINDOW: usize = 256;

/// The longest window, in records: the most entries a cache can be configured with.
const MOST_WINDOW: usize = 1 << 24;

/// Bits per record of the window: a filter about a sixteenth full when it is cleared, so a
/// record seen for the first time passes as seen about once in sixteen.
const BITS_PER_RECORD: usize = 16;

/// Which records were read from the backend lately (see the module docs).
pub(super) struct Doorkeeper {
    words: Box<[AtomicU64]>,
    /// Marks since the last clear.
    marked: AtomicUsize,
    /// Marks after which the filter is cleared: the cache's entries (at least
    /// [`LEAST_WINDOW`]).
    window: usize,
}

impl Doorkeeper {
    /// A doorkeeper for a cache of `entries` records.
    pub(super) fn new(entries: usize) -> Doorkeeper {
        // Configured caches hold at most 2^24 entries (`Config::cache_entries`); the
        // clamp keeps the filter's size in bounds (and the power of two below from
        // overflowing) for any caller.
        let window = entries.clamp(LEAST_WINDOW, MOST_WINDOW);
        let bits = (window * BITS_PER_RECORD).next_power_of_two();
        Doorkeeper {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            marked: AtomicUsize::new(0),
            window,
        }
    }

    /// Whether `digest`'s record was read from the backend within the window (then it is
    /// worth caching); marks it as read otherwise.
    pub(super) fn seen(&self, digest: &Digest) -> bool {
        // Digests are blake3 outputs: any eight of their bytes are uniform.
        let [.., high] = crate::id::words::<2>(&digest.0);
        // `words.len()` is a power of two: the mask keeps the index in bounds (taken in
        // 64 bits, so a 32-bit target spreads records too).
        let bits = self.words.len() as u64 * 64;
        let bit = usize::try_from(high & (bits - 1)).unwrap_or(0);
        let Some(word) = self.words.get(bit / 64) else {
            return true;
        };
        let mask = 1u64 << (bit % 64);
        if word.load(Ordering::Relaxed) & mask != 0 {
            return true;
        }
        if self.marked.fetch_add(1, Ordering::Relaxed) >= self.window {
            // A new window, this record its first mark. Racing clears and marks lose a
            // few bits: those records then wait one read more.
            self.marked.store(1, Ordering::Relaxed);
            for word in &*self.words {
                word.store(0, Ordering::Relaxed);
            }
        }
        word.fetch_or(mask, Ordering::Relaxed);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u64) -> Digest {
        Digest(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn a_record_passes_on_its_second_read_within_the_window() {
        let keeper = Doorkeeper::new(1_000);
        assert!(!keeper.seen(&digest(1)));
        assert!(keeper.seen(&digest(1)));
        // Of records read once, few pass (a false positive rate near a sixteenth).
        let passed = (2..900).filter(|n| keeper.seen(&digest(*n))).count();
        assert!(passed < 900 / 8, "{passed} of 898 passed");
    }

    /// A record read again after half a window of others still passes: the window is
    /// the cache's reach, not a few reads.
    #[test]
    fn a_record_read_again_within_the_window_passes() {
        let keeper = Doorkeeper::new(1_000);
        assert!(!keeper.seen(&digest(0)));
        for n in 1..500 {
            keeper.seen(&digest(n));
        }
        assert!(keeper.seen(&digest(0)), "forgotten within the window");
    }

    #[test]
    fn the_window_ends_after_as_many_records_as_the_cache_holds() {
        let keeper = Doorkeeper::new(1_000);
        assert!(!keeper.seen(&digest(0)));
        for n in 1..=1_100 {
            keeper.seen(&digest(n));
        }
        assert!(!keeper.seen(&digest(0)), "forgotten after a window");
    }
}
