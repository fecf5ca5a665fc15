//! The records an adapter last handed out, converted to its framework's shape and keyed by
//! the framework's own session ID, so a hot load is one table lookup and the clone the
//! framework needs.
//!
//! The general load path turns an ID into a record key (a memo, or blake3), finds the
//! record in the read cache (this thread's copies, or the shared cache), then finds the
//! converted record in the record's memo. This table goes from the ID straight to the
//! converted record. An entry is stamped with its record's stripe version
//! ([`Engine::stamp`]), read before the record was, and is served only while the stamp is
//! unchanged and the record's expiry has not passed. Every write, destroy or purge of a
//! record makes the stamp odd before it changes the backend and even again, with a new
//! value, after the cache has the change (the engine's stamps are seqlocks), and a record
//! read while the stamp is odd is not remembered: so an entry is never older than what
//! the general path would find, nor than what any load was handed meanwhile. Where the
//! store keeps no read cache (a backend other processes write, or a cache sized 0) there
//! is no stamp and the table stays empty.
//!
//! Slots come in pairs (an ID may sit in either slot of its pair), indexed by a hash of
//! the ID keyed per process, and hold the ID, compared in constant time, as the token memo
//! does. A slot is an [`ArcSwapOption`]: a hit writes nothing shared, so two cores loading
//! one hot session do not pass a cache line between them. Only records found live are
//! remembered, so forged IDs cannot push real ones out, and the adapter remembers only
//! small records asked for repeatedly. An entry found stale is dropped when its ID is
//! asked for again or a new entry takes its slot; until then the values of a session
//! ended by another path (a revocation, the purge) stay in memory, as the read cache's
//! thread copies do.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use subtle::ConstantTimeEq as _;

use crate::engine::Engine;
use crate::id::Digest;

/// The most slots a table has (8,192 pointers, 64 KiB): enough for a hot set of a few thousand
/// sessions, while a uniform load's probe of a cold ID stays in the CPU's caches and the
/// records it keeps alive beyond the read cache stay few. A larger hot set is served by
/// the general path.
const MAX_SLOTS: usize = 1 << 13;

/// One remembered record.
struct Hot<T> {
    /// The framework's session ID.
    id: [u8; 16],
    /// The record's key and its stamp when it was read.
    digest: Digest,
    stamp: u64,
    /// When the record stops being live (ms since the epoch).
    live_until: u64,
    converted: T,
}

/// The table. Sized 0, it remembers nothing.
pub(super) struct HotRecords<T> {
    slots: Box<[ArcSwapOption<Hot<T>>]>,
    hasher: foldhash::fast::RandomState,
}

impl<T> std::fmt::Debug for HotRecords<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotRecords")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl<T> HotRecords<T> {
    /// A table for `engine`'s records: twice as many slots as its cache has entries (a
    /// power of two, at most [`MAX_SLOTS`]), or none where it keeps no read cache.
    pub(super) fn for_engine(engine: &Engine) -> Self {
        let entries = engine.config().cache_entries;
        let len = if entries == 0 || engine.on_network() {
            0
        } else {
            // Twice the entries, so a hot set as large as the cache seldom fills a pair.
            entries
                .saturating_mul(2)
                .clamp(2, MAX_SLOTS)
                .next_power_of_two()
        };
        HotRecords {
            slots: (0..len).map(|_| ArcSwapOption::empty()).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The pair of slots `id` may sit in; `None` for a table sized 0.
    fn pair(&self, id: &[u8; 16]) -> Option<[&ArcSwapOption<Hot<T>>; 2]> {
        let mut h = self.hasher.build_hasher();
        h.write(id);
        // The length is a power of two (at most MAX_SLOTS), at least 2, or 0: the mask
        // is taken in 64 bits, so the index fits any usize.
        let mask = u64::try_from(self.slots.len()).ok()?.wrapping_sub(1) & !1;
        let at = usize::try_from(h.finish() & mask).ok()?;
        Some([self.slots.get(at)?, self.slots.get(at | 1)?])
    }

    /// Runs `read` on the converted record of `id` and its expiry (ms since the epoch),
    /// if one is remembered, its stamp is current and it is still live at `engine`'s now.
    pub(super) fn read<R>(
        &self,
        id: &[u8; 16],
        engine: &Engine,
        read: impl FnOnce(&T, u64) -> R,
    ) -> Option<R> {
        for slot in self.pair(id)? {
            let guard = slot.load();
            let Some(hot) = guard.as_deref() else {
                continue;
            };
            if !bool::from(hot.id.ct_eq(id)) {
                continue;
            }
            let current = engine.stamp(&hot.digest) == Some(hot.stamp);
            if !current || hot.live_until <= engine.now() {
                // Stale or ended: dropped (unless replaced meanwhile), so its values do
                // not stay in memory.
                slot.compare_and_swap(&guard, None::<Arc<Hot<T>>>);
                return None;
            }
            return Some(read(&hot.converted, hot.live_until));
        }
        None
    }

    /// Remembers `converted` as the record of `id` (under `digest`), live until
    /// `live_until`, read at `stamp` (read before the record), unless the stamp has moved
    /// since. It goes in the slot of the pair that holds `id`, else an empty one, else
    /// one whose entry is stale or expired; into a pair of two current entries only when
    /// the read cache's admission lets it (`engine::admit`, as for a full set of thread
    /// copies), in place of the one that expires first, so IDs that outnumber their pair
    /// do not keep replacing each other (each replacement an allocation) on every load.
    pub(super) fn remember(
        &self,
        id: &[u8; 16],
        digest: Digest,
        stamp: u64,
        live_until: u64,
        converted: T,
        engine: &Engine,
    ) {
        let Some(pair) = self.pair(id) else {
            return;
        };
        if engine.stamp(&digest) != Some(stamp) {
            return; // stale already
        }
        // Lower goes first; of two current entries, the one that expires first.
        let score = |slot: &ArcSwapOption<Hot<T>>| {
            let guard = slot.load();
            match guard.as_deref() {
                Some(hot) if bool::from(hot.id.ct_eq(id)) => (0, 0),
                None => (1, 0),
                Some(hot) if engine.stamp(&hot.digest) != Some(hot.stamp) => (2, 0),
                Some(hot) if hot.live_until <= engine.now() => (2, 0),
                Some(hot) => (3, hot.live_until),
            }
        };
        let (first, second) = (score(pair[0]), score(pair[1]));
        if first.0 == 3 && second.0 == 3 && !crate::engine::admit() {
            return;
        }
        let at = usize::from(second < first);
        let Some(slot) = pair.get(at) else {
            return;
        };
        slot.store(Some(Arc::new(Hot {
            id: *id,
            digest,
            stamp,
            live_until,
            converted,
        })));
    }

    /// Forgets `id` (its session ended through it), so its values do not stay in memory
    /// after the logout.
    pub(super) fn forget(&self, id: &[u8; 16]) {
        for slot in self.pair(id).into_iter().flatten() {
            let guard = slot.load();
            if guard
                .as_deref()
                .is_some_and(|hot| bool::from(hot.id.ct_eq(id)))
            {
                // Only that entry: one another ID put there meanwhile stays.
                slot.compare_and_swap(&guard, None::<Arc<Hot<T>>>);
            }
        }
    }
}
