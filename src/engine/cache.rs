//! The cache of decoded records shared by all threads, in front of this thread's own
//! copies ([`super::hot`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::hot;
use crate::engine::locks::{Locks, StripeGuard};
use crate::id::Digest;
use crate::record::StoredRecord;

/// The bounded cache of decoded records, keyed by digest, shared by all threads, with a
/// version per stripe that every change bumps (see [`crate::engine::hot`]). Off when sized 0.
pub(super) struct ReadCache {
    shared: Option<quick_cache::sync::Cache<Digest, Arc<StoredRecord>>>,
    versions: Box<[AtomicU64]>,
    /// This store's number in the threads' private copies.
    store: u64,
}

impl ReadCache {
    pub(super) fn new(entries: usize) -> ReadCache {
        ReadCache {
            shared: (entries > 0).then(|| quick_cache::sync::Cache::new(entries)),
            versions: (0..Locks::STRIPES).map(|_| AtomicU64::new(0)).collect(),
            store: hot::store_number(),
        }
    }

    /// The version of `digest`'s stripe: it changes whenever a record of the stripe does,
    /// after the change is in sled and in this cache.
    fn version(&self, digest: &Digest) -> u64 {
        self.versions
            .get(Locks::stripe_of(digest))
            .map_or(0, |v| v.load(Ordering::Acquire))
    }

    fn changed(&self, digest: &Digest) {
        if let Some(v) = self.versions.get(Locks::stripe_of(digest)) {
            v.fetch_add(1, Ordering::Release);
        }
    }

    /// The cached record of `digest`: this thread's copy if it is current, else the
    /// shared cache's (then copied for this thread).
    pub(super) fn get(&self, digest: &Digest) -> Option<Arc<StoredRecord>> {
        let shared = self.shared.as_ref()?;
        let version = self.version(digest);
        if let Some(entry) = hot::get(self.store, digest, version) {
            return Some(entry);
        }
        let entry = shared.get(digest)?;
        hot::put(self.store, digest, version, &entry);
        Some(entry)
    }

    /// The shared cache's record of `digest`, without this thread's copies (for writers
    /// and for scans that touch every record once).
    pub(super) fn peek(&self, digest: &Digest) -> Option<Arc<StoredRecord>> {
        self.shared.as_ref()?.get(digest)
    }

    /// Stores `entry` as the current version of `digest`. Caller holds the stripe lock.
    pub(super) fn put(&self, digest: Digest, entry: Arc<StoredRecord>, _held: &StripeGuard<'_>) {
        if let Some(cache) = &self.shared {
            cache.insert(digest, entry);
            self.changed(&digest);
        }
    }

    /// Drops `digest` from the cache. Caller holds the stripe lock.
    pub(super) fn remove(&self, digest: &Digest, _held: &StripeGuard<'_>) {
        if let Some(cache) = &self.shared {
            cache.remove(digest);
            self.changed(digest);
        }
    }
}
