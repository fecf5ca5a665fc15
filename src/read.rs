//! The read path: digest -> read cache -> backend -> decode -> expiry check, and the cache
//! that saves the decode.
//!
//! Readers never wait for a lock. A cache hit needs none. On a miss the reader tries the
//! digest's stripe lock: if it gets it, no writer can run, so the decoded record may be
//! cached (and an undecodable one quarantined); if a writer holds it (or this thread does,
//! inside an `update` closure), the reader reads sled as it is and caches nothing. So a
//! read inside an `update` closure, or racing any write, always completes, and the cache
//! never holds an older version than disk: writers update it under the stripe lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sled::IVec;

use crate::codec::{self, CodecError, Header};
use crate::error::Result;
use crate::expiry;
use crate::hot;
use crate::id::{Digest, SessionId};
use crate::locks::{Locks, StripeGuard};
use crate::session::Session;
use crate::state::StoreState;
use crate::stats::Counters;
use crate::values::{ValueMap, Values};

/// A decoded record as it is on disk, shared between the cache and readers.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) bytes: IVec,
    pub(crate) header: Header,
    pub(crate) user: Option<String>,
    pub(crate) values: Values,
    /// What an adapter made of this version of the record (tower's parsed JSON values),
    /// kept with it in the cache so a hot load converts once. A write makes a new entry,
    /// so the memo never outlives the data it was made from.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014")),
        allow(dead_code, reason = "only the tower adapter memoises")
    )]
    pub(crate) memo: Memo,
}

/// A value derived from an [`Entry`], made at most once.
#[derive(Default)]
pub(crate) struct Memo(std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>);

impl Memo {
    /// The memo if it is a `T`, made by `make` if there is none yet.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014")),
        allow(dead_code, reason = "only the tower adapter memoises")
    )]
    pub(crate) fn get_or<T: Send + Sync + 'static>(
        &self,
        make: impl FnOnce() -> T,
    ) -> Option<Arc<T>> {
        let any = self.0.get_or_init(|| Arc::new(make()));
        Arc::clone(any).downcast::<T>().ok()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Memo(set)"
        } else {
            "Memo(empty)"
        })
    }
}

impl Entry {
    /// A record to store: `encoded` (from [`StoreState::encode`]) with `header` written
    /// into it.
    pub(crate) fn encoded(
        mut encoded: Vec<u8>,
        header: Header,
        user: Option<String>,
        values: Values,
    ) -> Entry {
        codec::set_header(&mut encoded, &header);
        Entry {
            bytes: IVec::from(encoded),
            header,
            user,
            values,
            memo: Memo::default(),
        }
    }

    /// A copy of this entry that shares no memory with it (for one thread's own use; see
    /// [`crate::hot`]). `None` if the bytes no longer parse, which cannot happen for bytes
    /// that parsed once.
    pub(crate) fn private_copy(&self) -> Option<Entry> {
        let bytes = IVec::from(&self.bytes[..]);
        let values = match &self.values {
            Values::Stored(_) => match codec::decode_record(&bytes) {
                Ok(record) => record.values,
                Err(_) => return None,
            },
            Values::Owned(map) => Values::from(ValueMap::clone(map)),
        };
        Some(Entry {
            bytes,
            header: self.header,
            user: self.user.clone(),
            values,
            memo: Memo::default(),
        })
    }

    /// Decodes stored bytes, as strictly as any read: limits, trailing bytes, UTF-8.
    pub(crate) fn decode(bytes: IVec) -> std::result::Result<Entry, (IVec, CodecError)> {
        match codec::decode_record(&bytes) {
            Ok(record) => Ok(Entry {
                bytes,
                header: record.header,
                user: record.user,
                values: record.values,
                memo: Memo::default(),
            }),
            Err(e) => Err((bytes, e)),
        }
    }
}

/// The bounded cache of decoded records, keyed by digest, shared by all threads, with a
/// version per stripe that every change bumps (see [`crate::hot`]). Off when sized 0.
pub(crate) struct ReadCache {
    shared: Option<quick_cache::sync::Cache<Digest, Arc<Entry>>>,
    versions: Box<[AtomicU64]>,
    /// This store's number in the threads' private copies.
    store: u64,
}

impl ReadCache {
    pub(crate) fn new(entries: usize) -> ReadCache {
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
    pub(crate) fn get(&self, digest: &Digest) -> Option<Arc<Entry>> {
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
    pub(crate) fn peek(&self, digest: &Digest) -> Option<Arc<Entry>> {
        self.shared.as_ref()?.get(digest)
    }

    /// Stores `entry` as the current version of `digest`. Caller holds the stripe lock.
    pub(crate) fn put(&self, digest: Digest, entry: Arc<Entry>, _held: &StripeGuard<'_>) {
        if let Some(cache) = &self.shared {
            cache.insert(digest, entry);
            self.changed(&digest);
        }
    }

    /// Drops `digest` from the cache. Caller holds the stripe lock.
    pub(crate) fn remove(&self, digest: &Digest, _held: &StripeGuard<'_>) {
        if let Some(cache) = &self.shared {
            cache.remove(digest);
            self.changed(digest);
        }
    }
}

impl StoreState {
    /// The record of `digest`, live or not, read under its stripe lock: from the cache,
    /// or decoded from sled and cached. `None` if absent; an undecodable record is
    /// quarantined and reported as absent.
    pub(crate) fn record_locked(
        &self,
        digest: &Digest,
        held: &StripeGuard<'_>,
    ) -> Result<Option<Arc<Entry>>> {
        // The shared cache only: writers (and listings) make no thread copies, so a
        // blocking pool's many threads do not each keep copies of what they wrote.
        if let Some(entry) = self.cache.peek(digest) {
            return Ok(Some(entry));
        }
        self.read_locked(digest, held)
    }

    /// The record of `digest` read from sled (the cache has none), cached, or
    /// quarantined if undecodable. Caller holds the stripe lock.
    fn read_locked(&self, digest: &Digest, held: &StripeGuard<'_>) -> Result<Option<Arc<Entry>>> {
        let Some(bytes) = self.backend.get(digest)? else {
            return Ok(None);
        };
        match Entry::decode(bytes) {
            Ok(entry) => {
                let entry = Arc::new(entry);
                self.cache.put(*digest, Arc::clone(&entry), held);
                Ok(Some(entry))
            }
            Err((bytes, why)) => {
                self.quarantine(digest, &bytes, &why, held)?;
                Ok(None)
            }
        }
    }

    /// The record of `digest`, live or not, without waiting for any lock (see the module
    /// docs), through this thread's copies (the read path of loads). `None` if absent or
    /// undecodable.
    pub(crate) fn record(&self, digest: &Digest) -> Result<Option<Arc<Entry>>> {
        if let Some(entry) = self.cache.get(digest) {
            return Ok(Some(entry));
        }
        self.record_uncached(digest)
    }

    /// [`record`](Self::record) without this thread's copies, for writers' guesses.
    pub(crate) fn record_shared(&self, digest: &Digest) -> Result<Option<Arc<Entry>>> {
        if let Some(entry) = self.cache.peek(digest) {
            return Ok(Some(entry));
        }
        self.record_uncached(digest)
    }

    /// The record of `digest` once the cache was asked and had none.
    fn record_uncached(&self, digest: &Digest) -> Result<Option<Arc<Entry>>> {
        match self.locks.try_stripe(digest) {
            Some(held) => self.read_locked(digest, &held),
            None => self.record_unlocked(digest),
        }
    }

    /// The record of `digest` read from sled while a writer holds its stripe (the cache
    /// was asked and had none): not cached,
    /// and an undecodable one is reported as absent (the lock holder quarantines it).
    fn record_unlocked(&self, digest: &Digest) -> Result<Option<Arc<Entry>>> {
        let Some(bytes) = self.backend.get(digest)? else {
            return Ok(None);
        };
        Ok(Entry::decode(bytes).ok().map(Arc::new))
    }

    /// The record of `digest` if it is live.
    pub(crate) fn live_entry(&self, digest: &Digest) -> Result<Option<Arc<Entry>>> {
        let entry = self.record(digest)?;
        let now = self.now();
        Ok(entry.filter(|e| expiry::is_live(&self.config, &e.header, now)))
    }

    /// The digest of `id`: remembered, or derived (blake3).
    pub(crate) fn digest_of(&self, id: &SessionId) -> Digest {
        self.tokens.get(&id.words()).unwrap_or_else(|| id.digest())
    }

    /// The live record of the session `id`, with its digest. A token that finds a live
    /// session is remembered, so its next lookup skips the digest.
    pub(crate) fn live_entry_of(&self, id: &SessionId) -> Result<Option<(Digest, Arc<Entry>)>> {
        self.tokens.find(
            &id.words(),
            || id.digest(),
            |digest| self.live_entry(digest),
        )
    }

    /// The user of the stored record of `digest`, read without a lock: a guess that a
    /// writer confirms under the stripe lock.
    pub(crate) fn current_user(&self, digest: &Digest) -> Result<Option<String>> {
        Ok(self.record_shared(digest)?.and_then(|e| e.user.clone()))
    }

    /// The live sessions of `user`, read through the `users` index. Each entry is checked
    /// against its record; entries that match no record of this user are removed on the
    /// way when the record's stripe is free (else left for a later reader or the cleanup).
    pub(crate) fn user_sessions(&self, user: &str) -> Result<Vec<(Digest, Header)>> {
        let mut live = Vec::new();
        let now = self.now();
        let (digests, dropped) = self.backend.user_digests(user)?;
        Counters::add(&self.counters.stale_index_entries_removed, dropped);
        for digest in digests {
            let held = self.locks.try_stripe(&digest);
            let entry = match &held {
                Some(held) => self.record_locked(&digest, held)?,
                None => match self.cache.peek(&digest) {
                    Some(entry) => Some(entry),
                    None => self.record_unlocked(&digest)?,
                },
            };
            match entry.filter(|e| e.user.as_deref() == Some(user)) {
                Some(e) if expiry::is_live(&self.config, &e.header, now) => {
                    live.push((digest, e.header));
                }
                Some(_) => {} // expired: the cleanup removes record and entry together
                None if held.is_some() => {
                    self.backend.drop_user_entry(user, &digest)?;
                    Counters::add(&self.counters.stale_index_entries_removed, 1);
                }
                None => {}
            }
        }
        Ok(live)
    }

    /// How many stored records are live and decodable, or, with `stop_at_first`, whether
    /// there is at least one (0 or 1).
    pub(crate) fn count_live(&self, stop_at_first: bool) -> Result<usize> {
        let now = self.now();
        let mut n = 0;
        for item in self.backend.records() {
            let (key, bytes) = item?;
            let header = match Digest::from_slice(&key).and_then(|d| self.cache.peek(&d)) {
                Some(entry) => Some(entry.header),
                None => codec::decode_record(&bytes).ok().map(|r| r.header),
            };
            if header.is_some_and(|h| expiry::is_live(&self.config, &h, now)) {
                n += 1;
                if stop_at_first {
                    break;
                }
            }
        }
        Ok(n)
    }

    /// The application's copy of a record.
    pub(crate) fn session(&self, id: SessionId, digest: Digest, entry: &Entry) -> Session {
        Session {
            id,
            digest,
            header: entry.header,
            user: entry.user.clone(),
            values: entry.values.clone(),
            lifetime: crate::expiry::Lifetime::from_own(entry.header.own, &self.config),
            limits: self.limits(),
        }
    }
}
