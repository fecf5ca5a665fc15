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

use crate::backend::RecordKey;
use crate::engine::Engine;
use crate::engine::locks::StripeGuard;
use crate::error::Result;
use crate::expiry;
use crate::id::{Digest, SessionId};
use crate::record::StoredRecord;
use crate::record::codec::Header;
use crate::session::Session;
use crate::stats::Counter;

/// Which caches a read may use and fill.
#[derive(Clone, Copy)]
pub(super) enum Via<'a> {
    /// A load: this thread's copies, then the shared cache, then the backend; never waits
    /// for a lock.
    Load,
    /// A writer's guess or a listing: the shared cache, then the backend (no thread
    /// copies, so a blocking pool's many threads do not each keep copies of what they
    /// wrote); never waits for a lock.
    Peek,
    /// A writer holding the stripe lock: the shared cache, then the backend, caching what
    /// it decodes and quarantining what it cannot.
    Locked(&'a StripeGuard<'a>),
}

impl Engine {
    /// The record of `digest`, live or not, read `via` the caches it names (see the module
    /// docs). `None` if absent or undecodable.
    pub(super) fn record(
        &self,
        digest: &Digest,
        via: Via<'_>,
    ) -> Result<Option<Arc<StoredRecord>>> {
        let cached = match via {
            Via::Load => self.cache.get(digest),
            Via::Peek | Via::Locked(_) => self.cache.peek(digest),
        };
        if cached.is_some() {
            return Ok(cached);
        }
        match via {
            Via::Locked(held) => self.read_backend(digest, Some(held)),
            Via::Load | Via::Peek => match self.locks.try_stripe(digest) {
                Some(held) => self.read_backend(digest, Some(&held)),
                None => self.read_backend(digest, None),
            },
        }
    }

    /// The record of `digest` read from the backend (the cache has none). With the stripe
    /// lock `held`, cached, or quarantined if undecodable; without it (a writer holds it),
    /// not cached, and an undecodable one is left for the lock holder to quarantine.
    fn read_backend(
        &self,
        digest: &Digest,
        held: Option<&StripeGuard<'_>>,
    ) -> Result<Option<Arc<StoredRecord>>> {
        let Some(bytes) = self.backend.get(digest)? else {
            return Ok(None);
        };
        match (StoredRecord::decode(bytes), held) {
            (Ok(record), held) => {
                let record = Arc::new(record);
                if let Some(held) = held {
                    self.cache.fill(*digest, Arc::clone(&record), held);
                }
                Ok(Some(record))
            }
            (Err((bytes, why)), Some(held)) => {
                self.quarantine(digest, &bytes, &why, held)?;
                Ok(None)
            }
            (Err(_), None) => Ok(None),
        }
    }

    /// The record of `digest` if it is live.
    pub(crate) fn live(&self, digest: &Digest) -> Result<Option<Arc<StoredRecord>>> {
        let record = self.record(digest, Via::Load)?;
        let now = self.now();
        Ok(record.filter(|r| expiry::is_live(&self.config, &r.header, now)))
    }

    /// The stamp of `digest`'s record (see `ReadCache::stamp`): read before the record,
    /// what an adapter derives from it may be served again while the stamp is the same
    /// (and the record's expiry has not passed). `None` where the store keeps no read
    /// cache (a shared backend, or a cache sized 0).
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    pub(crate) fn stamp(&self, digest: &Digest) -> Option<u64> {
        self.cache.stamp(digest)
    }

    /// [`live`](Self::live) awaited without blocking where the storage has an async path
    /// (Redis on a single server): `Some` of what `live` would answer. `None` where it has
    /// none, after an error, or for a record this path leaves to the locked one
    /// (undecodable: quarantined there): the caller then runs [`live`](Self::live) off the
    /// executor.
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    pub(crate) async fn live_async(&self, digest: &Digest) -> Option<Option<Arc<StoredRecord>>> {
        let record = self.read_async(digest).await?;
        let now = self.now();
        Some(record.filter(|r| expiry::is_live(&self.config, &r.header, now)))
    }

    /// The stored record of `digest` read on the async path (see
    /// [`live_async`](Self::live_async)), remembered as what the next save expects.
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    pub(super) async fn read_async(&self, digest: &Digest) -> Option<Option<Arc<StoredRecord>>> {
        let Some(bytes) = self.backend.get_async(digest).await? else {
            return Some(None);
        };
        let record = Arc::new(StoredRecord::decode(bytes).ok()?);
        self.expect(digest, Some(&record));
        Some(Some(record))
    }

    /// Remembers `record` as the version of `digest` the next save expects (or forgets
    /// the guess).
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    pub(super) fn expect(&self, digest: &Digest, record: Option<&Arc<StoredRecord>>) {
        if let Some(expected) = &self.expected {
            match record {
                Some(r) => expected.insert(*digest, Arc::clone(r)),
                None => {
                    expected.remove(digest);
                }
            }
        }
    }

    /// The version of `digest` the next save expects, if one is remembered.
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    pub(super) fn expected(&self, digest: &Digest) -> Option<Arc<StoredRecord>> {
        self.expected.as_ref()?.get(digest)
    }

    /// The digest of `id`: remembered, or derived (blake3).
    pub(crate) fn digest_of(&self, id: &SessionId) -> Digest {
        self.tokens.get(&id.words()).unwrap_or_else(|| id.digest())
    }

    /// The live record of the session `id`, with its digest. A token that finds a live
    /// session is remembered, so its next lookup skips the digest.
    pub(crate) fn live_of(&self, id: &SessionId) -> Result<Option<(Digest, Arc<StoredRecord>)>> {
        self.tokens
            .find(&id.words(), || id.digest(), |digest| self.live(digest))
    }

    /// The live session `id` (see [`Store::load`](crate::Store::load)).
    pub(crate) fn load(&self, id: &SessionId) -> Result<Option<Session>> {
        let found = self.live_of(id)?;
        Ok(found.map(|(digest, e)| self.session(id.clone(), digest, &e)))
    }

    /// The live sessions of `user`, read through the `users` index. Each entry is checked
    /// against its record; entries that match no record of this user are removed on the
    /// way when the record's stripe is free (else left for a later reader or the purge).
    pub(crate) fn user_sessions(&self, user: &str) -> Result<Vec<(Digest, Header)>> {
        let mut live = Vec::new();
        let now = self.now();
        let (digests, dropped) = self.backend.user_digests(user)?;
        self.counters
            .add(Counter::StaleIndexEntriesRemoved, dropped);
        for digest in digests {
            let held = self.locks.try_stripe(&digest);
            let entry = match &held {
                Some(held) => self.record(&digest, Via::Locked(held))?,
                None => match self.cache.peek(&digest) {
                    Some(entry) => Some(entry),
                    None => self.read_backend(&digest, None)?,
                },
            };
            match entry.filter(|e| e.user.as_deref() == Some(user)) {
                Some(e) if expiry::is_live(&self.config, &e.header, now) => {
                    live.push((digest, e.header));
                }
                Some(_) => {} // expired: the purge removes record and entry together
                None if held.is_some() => {
                    self.backend.drop_user_entry(user, &digest)?;
                    self.counters.add(Counter::StaleIndexEntriesRemoved, 1);
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
            // A record under a stray key is no session (nothing loads it): not counted.
            let cached = match key {
                RecordKey::Digest(digest) => self.cache.peek(&digest),
                RecordKey::Stray(_) => continue,
            };
            let header = match cached {
                Some(record) => Some(record.header),
                None => StoredRecord::decode(bytes).ok().map(|r| r.header),
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

    /// Until when a record with `header` lives, by the timeouts in force now.
    pub(crate) fn live_until(&self, header: &Header) -> u64 {
        expiry::live_until(&self.config, header)
    }

    /// The application's copy of a record.
    pub(super) fn session(
        &self,
        id: SessionId,
        digest: Digest,
        entry: &Arc<StoredRecord>,
    ) -> Session {
        Session {
            id,
            digest,
            header: entry.header,
            user: entry.user.clone(),
            values: entry.values.clone(),
            lifetime: crate::expiry::Lifetime::from_own(entry.header.own, &self.config),
            limits: self.limits(),
            changes: crate::changes::Changes::since(&entry.header),
            expected: crate::session::Expected::new(
                self.backend
                    .shared_by_processes()
                    .then(|| Arc::clone(entry)),
            ),
        }
    }
}
