//! The read cache: decoded records shared by all threads (quick_cache, by digest), and in
//! front of it each thread's own copies of the records it reads most, so a hot load
//! writes nothing that another core reads.
//!
//! The shared cache takes a shard lock and bumps reference counts on every hit: on two
//! cores those cache lines bounce between the cores, and two threads loading hot sessions
//! went barely faster than one. So a thread keeps a small set-associative table of private
//! copies of records it found in the shared cache. Each copy is stamped with its stripe's
//! version ([`ReadCache::version`]). A write to a record of the stripe, under the stripe
//! lock, makes the version odd before it changes the backend ([`ReadCache::writing`]) and
//! even again after the change is in the backend and in the shared cache, as a seqlock
//! does. A copy is made only at an even version, of a record read after it, and used only
//! while its stripe's version is unchanged, so it is never older than what the shared
//! cache would return, nor than what any reader was handed meanwhile.
//!
//! Each thread's table sits behind its own lock (taken by that thread alone, except when
//! a store closes) and is listed in a registry, so a store that closes drops its records'
//! copies from every thread at once: a session's values do not outlive the store in
//! threads that once read them.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::engine::doorkeeper::Doorkeeper;
use crate::engine::locks::{Locks, StripeGuard};
use crate::id::Digest;
use crate::record::StoredRecord;

/// The bounded cache of decoded records, keyed by digest, shared by all threads, with a
/// version per stripe that every change bumps (see the module docs). Off when sized 0.
pub(super) struct ReadCache {
    shared: Option<quick_cache::sync::Cache<Digest, Arc<StoredRecord>, RecordWeight>>,
    /// Which records read from the backend get cached (see [`fill`](Self::fill)).
    doorkeeper: Doorkeeper,
    versions: Box<[AtomicU64]>,
    /// This store's number in the threads' private copies.
    store: u64,
}

/// What a record weighs in the shared cache: its stored bytes, and at least `least`
/// (the cache's bytes over its entries), so the weight bounds both the bytes and the
/// number of records.
#[derive(Clone)]
pub(super) struct RecordWeight {
    least: u64,
}

impl quick_cache::Weighter<Digest, Arc<StoredRecord>> for RecordWeight {
    fn weight(&self, _: &Digest, record: &Arc<StoredRecord>) -> u64 {
        u64::try_from(record.bytes.len())
            .unwrap_or(u64::MAX)
            .max(self.least)
    }
}

/// A map of about `entries` records and at most `bytes` of them, weighed as the read
/// cache weighs them: the tower adapter's expected versions on Redis
/// (the engine's `expected`).
#[cfg(any(feature = "tower", feature = "tower-014"))]
pub(super) fn bounded_records(
    entries: usize,
    bytes: usize,
) -> quick_cache::sync::Cache<Digest, Arc<StoredRecord>, RecordWeight> {
    let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let weight = RecordWeight {
        least: to_u64(bytes / entries.max(1)),
    };
    quick_cache::sync::Cache::with_weighter(entries, to_u64(bytes), weight)
}

impl ReadCache {
    /// A cache of about `entries` records and `bytes` of them (see [`RecordWeight`]),
    /// able to hold a record of `largest` bytes; none for 0 entries.
    pub(super) fn new(entries: usize, bytes: usize, largest: usize) -> ReadCache {
        let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let weight = RecordWeight {
            least: to_u64(bytes / entries.max(1)),
        };
        // quick_cache splits the capacity into shards and refuses an item heavier than
        // most of one shard: so shards of at least four of the largest records, and a
        // sixteenth of slack, so one entry of `bytes / entries` still fits.
        let shards = (bytes / largest.max(1) / 4).clamp(
            1,
            std::thread::available_parallelism().map_or(4, |n| n.get() * 4),
        );
        let capacity = to_u64(bytes).saturating_add(to_u64(bytes / 16));
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(entries)
            .weight_capacity(capacity)
            .shards(shards)
            .build();
        let shared = (entries > 0).then(|| match options {
            Ok(options) => quick_cache::sync::Cache::with_options(
                options,
                weight,
                Default::default(),
                Default::default(),
            ),
            // The options above are always valid; the defaults' sharding is the fallback.
            Err(_) => quick_cache::sync::Cache::with_weighter(entries, capacity, weight),
        });
        ReadCache {
            shared,
            doorkeeper: Doorkeeper::new(entries),
            versions: (0..Locks::STRIPES).map(|_| AtomicU64::new(0)).collect(),
            store: store_number(),
        }
    }

    /// The version of `digest`'s stripe: odd while a write to a record of the stripe is
    /// under way, even otherwise, and moved on by every write (see
    /// [`writing`](Self::writing)).
    fn version(&self, digest: &Digest) -> u64 {
        self.versions
            .get(Locks::stripe_of(digest))
            .map_or(0, |v| v.load(Ordering::Acquire))
    }

    /// The version of `digest`'s stripe where there is a cache to keep it and no write
    /// to the stripe is under way (`None` otherwise: then nothing tells this process of
    /// changes, or one is being made). Read before a record, it stamps what is derived
    /// from the record: while it is unchanged, no write to the record has begun since.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014")),
        allow(dead_code, reason = "only the tower adapter keeps stamped records")
    )]
    pub(super) fn stamp(&self, digest: &Digest) -> Option<u64> {
        self.shared.as_ref()?;
        Some(self.version(digest)).filter(|v| v.is_multiple_of(2))
    }

    /// Marks a write to `digest`'s record as under way until the returned guard drops:
    /// call it before the backend changes, and [`put`](Self::put) or
    /// [`remove`](Self::remove) the record before the guard drops. Caller holds the
    /// stripe lock (so writes to a stripe do not overlap).
    pub(super) fn writing<'a>(
        &'a self,
        digest: &Digest,
        _held: &'a StripeGuard<'_>,
    ) -> Writing<'a> {
        let version = self
            .shared
            .as_ref()
            .and_then(|_| self.versions.get(Locks::stripe_of(digest)));
        if let Some(v) = version {
            // Odd: ordered before the backend write, so a reader that sees the write
            // sees this too.
            v.fetch_add(1, Ordering::AcqRel);
        }
        Writing { version }
    }

    /// The cached record of `digest`: this thread's copy if it is current, else the
    /// shared cache's (then copied for this thread).
    pub(super) fn get(&self, digest: &Digest) -> Option<Arc<StoredRecord>> {
        let shared = self.shared.as_ref()?;
        let version = self.version(digest);
        if let Some(entry) = copy_of(self.store, digest, version) {
            return Some(entry);
        }
        let entry = shared.get(digest)?;
        if version.is_multiple_of(2) {
            keep_copy(self.store, digest, version, &entry);
        }
        Some(entry)
    }

    /// The shared cache's record of `digest`, without this thread's copies (for writers
    /// and for scans that touch every record once).
    pub(super) fn peek(&self, digest: &Digest) -> Option<Arc<StoredRecord>> {
        self.shared.as_ref()?.get(digest)
    }

    /// Stores `entry`, just written, as the current version of `digest`, inside the
    /// write's guard.
    pub(super) fn put(&self, digest: Digest, entry: Arc<StoredRecord>, _write: &Writing<'_>) {
        if let Some(cache) = &self.shared {
            cache.insert(digest, entry);
        }
    }

    /// Drops `digest` from the cache, inside the guard of a write to it.
    pub(super) fn remove(&self, digest: &Digest, _write: &Writing<'_>) {
        if let Some(cache) = &self.shared {
            cache.remove(digest);
        }
    }

    /// Caches `entry`, read from the backend under the stripe lock (so it is the stored
    /// version, and no write is under way), as `digest`'s record, if it was read from the
    /// backend lately too (see [`Doorkeeper`]): a record read once is not worth an insert
    /// and an eviction. The version stays: what was derived at it (thread copies,
    /// adapters' hot records) is of this same record.
    pub(super) fn fill(&self, digest: Digest, entry: Arc<StoredRecord>, _held: &StripeGuard<'_>) {
        if let Some(cache) = &self.shared
            && self.doorkeeper.seen(&digest)
        {
            cache.insert(digest, entry);
        }
    }
}

/// A write under way to a record of a stripe (see [`ReadCache::writing`]): the stripe's
/// version is odd until this drops, which is no later than the stripe lock's release.
#[must_use = "the write is under way only while the guard lives"]
pub(super) struct Writing<'a> {
    version: Option<&'a AtomicU64>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if let Some(v) = self.version {
            // Even again, after the change is in the backend and the cache.
            v.fetch_add(1, Ordering::Release);
        }
    }
}

/// Sets of slots per thread (a power of two), for all stores together.
const SETS: usize = 512;
/// Slots per set: a digest may sit in any slot of its set, so a few hot sessions that
/// share a set do not keep pushing each other out.
const WAYS: usize = 4;

/// Gives each open store its own number, so a thread's copies of one store's records are
/// never taken for another's (even a store opened later at the same address).
static NEXT_STORE: AtomicU64 = AtomicU64::new(1);

/// A number for a newly opened store.
fn store_number() -> u64 {
    NEXT_STORE.fetch_add(1, Ordering::Relaxed)
}

struct Slot {
    store: u64,
    digest: Digest,
    version: u64,
    entry: Arc<StoredRecord>,
}

type Set = [Option<Slot>; WAYS];

/// One thread's copies: its sets, made on its first copy.
#[derive(Default)]
struct Copies {
    sets: Mutex<Vec<Set>>,
}

/// Every thread's copies, so a closing store can drop its own from all of them. A thread
/// that ends drops its table; its entry here is then dead and swept out.
static THREADS: Mutex<Vec<Weak<Copies>>> = Mutex::new(Vec::new());

impl Copies {
    /// A new table for this thread, listed in [`THREADS`].
    fn registered() -> Arc<Copies> {
        let copies = Arc::new(Copies::default());
        let mut threads = THREADS.lock();
        threads.retain(|t| t.strong_count() > 0);
        threads.push(Arc::downgrade(&copies));
        copies
    }
}

impl Drop for ReadCache {
    /// Drops this store's copies from every thread's table.
    fn drop(&mut self) {
        let tables: Vec<Arc<Copies>> = THREADS.lock().iter().filter_map(Weak::upgrade).collect();
        for table in tables {
            let mine: Vec<Slot> = {
                let mut sets = table.sets.lock();
                sets.iter_mut()
                    .flat_map(|set| set.iter_mut())
                    .filter(|slot| slot.as_ref().is_some_and(|s| s.store == self.store))
                    .filter_map(Option::take)
                    .collect()
            };
            // Dropped outside the lock: an entry's drop runs adapter code (its memo).
            drop(mine);
        }
    }
}

/// A full set of copies (or of an adapter's hot records) takes a new entry on one in this
/// many tries: a record read again and again gets in soon, while a working set larger
/// than the slots (each read once per cycle) does not pay for an entry on every read.
const ADMIT_ONE_IN: u32 = 8;

thread_local! {
    static COPIES: Arc<Copies> = Copies::registered();
    /// Counts tries to put an entry into a full set, for [`admit`].
    static FULL_SET_TRIES: Cell<u32> = const { Cell::new(0) };
}

/// Whether an entry goes into a full set this time (one in [`ADMIT_ONE_IN`]; never while
/// the thread is ending).
pub(crate) fn admit() -> bool {
    FULL_SET_TRIES
        .try_with(|n| {
            let next = n.get().wrapping_add(1);
            n.set(next);
            next % ADMIT_ONE_IN == 0
        })
        .unwrap_or(false)
}

fn set_of(digest: &Digest) -> usize {
    // Digests are blake3 outputs: their bytes are already uniform.
    usize::from(u16::from_le_bytes([digest.0[2], digest.0[3]])) & (SETS - 1)
}

/// Records larger than this are not copied: a copy is for small, hot records, and the
/// bound keeps a thread's copies near 8 MiB at most (2,048 slots) whatever the record
/// size limit.
const MAX_COPY_BYTES: usize = 4096;

/// This thread's copy of `digest`'s record in `store`, if it has one made at `version`.
/// A copy of an older version is dropped on the way.
fn copy_of(store: u64, digest: &Digest, version: u64) -> Option<Arc<StoredRecord>> {
    let mut stale = None;
    let found = COPIES
        .try_with(|copies| {
            let mut copies = copies.sets.try_lock()?;
            let set = copies.get_mut(set_of(digest))?;
            let at = set.iter().position(|s| {
                s.as_ref()
                    .is_some_and(|s| s.digest == *digest && s.store == store)
            })?;
            let slot = set.get_mut(at)?;
            if slot.as_ref().is_some_and(|s| s.version == version) {
                return slot.as_ref().map(|s| Arc::clone(&s.entry));
            }
            stale = slot.take();
            None
        })
        .ok()
        .flatten();
    // Dropped outside the borrow: an entry's drop runs adapter code (its memo).
    drop(stale);
    found
}

/// Keeps a private copy of `entry` as `digest`'s record in `store` at `version` (read
/// before `entry` was), in place of an older copy of it, or else of the set's oldest.
fn keep_copy(store: u64, digest: &Digest, version: u64, entry: &StoredRecord) {
    if entry.bytes.len() > MAX_COPY_BYTES {
        return;
    }
    let old = COPIES
        .try_with(|copies| {
            let mut copies = copies.sets.try_lock()?;
            if copies.is_empty() {
                copies.resize_with(SETS, Default::default);
            }
            let set = copies.get_mut(set_of(digest))?;
            let same = set.iter().position(|s| {
                s.as_ref()
                    .is_some_and(|s| s.digest == *digest && s.store == store)
            });
            let admitted = same.is_some() || set.iter().any(Option::is_none) || admit();
            if !admitted {
                return None;
            }
            let slot = Slot {
                store,
                digest: *digest,
                version,
                entry: Arc::new(entry.private_copy()?),
            };
            match same {
                // A newer version of a record this thread reads.
                Some(at) => set.get_mut(at)?.replace(slot),
                None => {
                    // Newest first: the copies before the first free slot (or all, the
                    // oldest going) move one down, and the new one goes in front.
                    let end = set.iter().position(Option::is_none).unwrap_or(WAYS - 1);
                    set.get_mut(..=end)?.rotate_right(1);
                    set.get_mut(0)?.replace(slot)
                }
            }
        })
        .ok()
        .flatten();
    // Dropped outside the borrow: an entry's drop runs adapter code (its memo).
    drop(old);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::codec::Header;
    use crate::record::values::Values;

    fn entry(size: usize) -> StoredRecord {
        let mut map = crate::record::values::ValueMap::new();
        map.insert("v".into(), vec![7u8; size].into());
        let bytes = crate::record::encode_record(&Header::PLACEHOLDER, None, &Values::from(map))
            .expect("encode");
        StoredRecord::decode(sled::IVec::from(bytes)).expect("decode")
    }

    /// Digests that all fall in one set, and on distinct bits of the doorkeeper.
    fn digest(i: u8) -> Digest {
        let mut d = [0u8; 32];
        d[0] = i;
        d[8] = i;
        Digest(d)
    }

    /// How many copies of `store`'s records all threads hold.
    fn copies_of(store: u64) -> usize {
        let tables: Vec<_> = THREADS.lock().iter().filter_map(Weak::upgrade).collect();
        tables
            .iter()
            .map(|t| {
                let sets = t.sets.lock();
                sets.iter()
                    .flatten()
                    .flatten()
                    .filter(|s| s.store == store)
                    .count()
            })
            .sum()
    }

    /// A write under way: no stamp (so nothing derived from a record read now is kept),
    /// no thread copy made; after it, a stamp that differs from the one before.
    #[test]
    fn a_write_under_way_gives_no_stamp_and_no_copy() {
        let locks = Locks::new();
        let cache = ReadCache::new(16, 1 << 20, 4096);
        let d = digest(7);
        let held = locks.stripe(&d).expect("lock");
        cache.fill(d, Arc::new(entry(10)), &held);
        let before = cache.stamp(&d).expect("a stamp");
        let writing = cache.writing(&d, &held);
        assert_eq!(cache.stamp(&d), None, "a stamp while a write is under way");
        cache.put(d, Arc::new(entry(11)), &writing);
        // (A store closing in another test locks this thread's table for a moment, and a
        // copy is then neither made nor found: so each step is tried many times.)
        for _ in 0..100 {
            assert!(cache.get(&d).is_some());
        }
        let copies = copies_of(cache.store);
        assert_eq!(copies, 0, "a copy made while a write is under way");
        drop(writing);
        let after = cache.stamp(&d).expect("a stamp");
        assert_ne!(before, after);
        let copied = (0..1000).any(|_| {
            let got = cache.get(&d).map(|e| e.bytes.len());
            assert_eq!(got, Some(entry(11).bytes.len()));
            copies_of(cache.store) == 1
        });
        assert!(copied, "no copy made once the write was done");
    }

    #[test]
    fn a_closing_store_drops_its_copies_from_every_thread() {
        use std::sync::mpsc;
        use std::time::Duration;
        let cache = ReadCache::new(16, 1 << 20, 4096);
        let store = cache.store;
        let (copied_tx, copied) = mpsc::channel();
        let (checked, checked_rx) = mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            keep_copy(store, &digest(1), 0, &entry(10));
            copied_tx.send(()).expect("send");
            // Alive (its table too) until the check is done.
            let _ = checked_rx.recv_timeout(Duration::from_secs(30));
        });
        copied
            .recv_timeout(Duration::from_secs(30))
            .expect("the reader copied");
        keep_copy(store, &digest(2), 0, &entry(10));
        assert_eq!(copies_of(store), 2, "one copy in each thread");
        drop(cache);
        assert_eq!(copies_of(store), 0, "a copy outlived its store");
        checked.send(()).expect("send");
        reader.join().expect("reader");
    }

    #[test]
    fn a_set_keeps_its_newest_copies_and_only_at_their_version() {
        let store = store_number();
        let e = entry(10);
        // Fill the set, so admission is one in eight from here on. (A store closing in
        // another test locks this thread's table for a moment, and a copy is then neither
        // made nor found: so made and looked up again until it is there.)
        for i in 0..WAYS as u8 {
            let copied = (0..1000).any(|_| {
                keep_copy(store, &digest(i), 1, &e);
                copy_of(store, &digest(i), 1).is_some()
            });
            assert!(copied, "copy {i}");
        }
        // The newest copy, asked for at a newer version: not served, and dropped (asked
        // many times, in case a closing store had the table locked).
        for _ in 0..100 {
            assert!(
                copy_of(store, &digest(3), 2).is_none(),
                "a stale version is served"
            );
        }
        assert!(
            copy_of(store, &digest(3), 1).is_none(),
            "the stale copy stayed"
        );
        // Its slot takes the next copy without pushing out the oldest.
        assert!((0..1000).any(|_| {
            keep_copy(store, &digest(9), 1, &e);
            copy_of(store, &digest(9), 1).is_some()
        }));
        assert!(
            (0..1000).any(|_| copy_of(store, &digest(0), 1).is_some()),
            "a copy was pushed out of a set with room"
        );
        assert!(
            copy_of(store + 1_000_000, &digest(1), 1).is_none(),
            "another store's copy"
        );
    }

    #[test]
    fn large_records_are_not_copied() {
        let store = store_number();
        keep_copy(store, &digest(1), 1, &entry(MAX_COPY_BYTES));
        assert!(copy_of(store, &digest(1), 1).is_none());
    }

    /// A record read from the backend is cached on its second read, not its first: a
    /// working set larger than the cache (each record read once in a while) does not pay
    /// an insert and an eviction on every read. A written record is cached at once.
    #[test]
    fn a_record_read_once_is_not_cached_and_one_read_twice_is() {
        let locks = Locks::new();
        let cache = ReadCache::new(16, 1 << 20, 4096);
        let (read, written) = (digest(1), digest(2));
        let held = locks.stripe(&read).expect("lock");
        cache.fill(read, Arc::new(entry(10)), &held);
        assert!(cache.peek(&read).is_none(), "cached on its first read");
        cache.fill(read, Arc::new(entry(10)), &held);
        assert!(cache.peek(&read).is_some(), "not cached on its second read");
        drop(held);
        let held = locks.stripe(&written).expect("lock");
        let writing = cache.writing(&written, &held);
        cache.put(written, Arc::new(entry(10)), &writing);
        drop(writing);
        assert!(cache.peek(&written).is_some(), "a write not cached");
    }

    /// The shared cache holds at most its bytes of large records, and at most its entries
    /// of small ones.
    #[test]
    fn the_shared_cache_is_bounded_in_bytes_and_in_entries() {
        let locks = crate::engine::locks::Locks::new();
        let cache = ReadCache::new(16, 16 * 4096, 16 * 1024);
        let shared = cache.shared.as_ref().expect("on");
        for i in 0..40u8 {
            let d = digest(i);
            let held = locks.stripe(&d).expect("lock");
            // Twice: a record is cached on its second read (see `Doorkeeper`).
            cache.fill(d, Arc::new(entry(16 * 1024)), &held);
            cache.fill(d, Arc::new(entry(16 * 1024)), &held);
        }
        assert!(shared.weight() <= 17 * 4096, "{} bytes", shared.weight());
        assert!(shared.len() <= 4, "{} records of 16 KiB", shared.len());
        for i in 40..200u8 {
            let d = digest(i);
            let held = locks.stripe(&d).expect("lock");
            cache.fill(d, Arc::new(entry(10)), &held);
            cache.fill(d, Arc::new(entry(10)), &held);
        }
        assert!(shared.len() <= 17, "{} small records", shared.len());
        // One entry of a large record: cached (the whole budget is one record).
        let one = ReadCache::new(1, 64 << 10, 60 << 10);
        let d = digest(1);
        let held = locks.stripe(&d).expect("lock");
        one.fill(d, Arc::new(entry(60 << 10)), &held);
        one.fill(d, Arc::new(entry(60 << 10)), &held);
        assert!(
            one.peek(&d).is_some(),
            "a record as large as the budget is cached"
        );
    }
}
