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

use crate::engine::Engine;
use crate::engine::locks::StripeGuard;
use crate::error::Result;
use crate::expiry;
use crate::id::{Digest, SessionId};
use crate::record::StoredRecord;
use crate::record::codec::Header;
use crate::session::Session;
use crate::stats::Counters;

impl Engine {
    /// The record of `digest`, live or not, read under its stripe lock: from the cache,
    /// or decoded from sled and cached. `None` if absent; an undecodable record is
    /// quarantined and reported as absent.
    pub(super) fn record_locked(
        &self,
        digest: &Digest,
        held: &StripeGuard<'_>,
    ) -> Result<Option<Arc<StoredRecord>>> {
        // The shared cache only: writers (and listings) make no thread copies, so a
        // blocking pool's many threads do not each keep copies of what they wrote.
        if let Some(entry) = self.cache.peek(digest) {
            return Ok(Some(entry));
        }
        self.read_locked(digest, held)
    }

    /// The record of `digest` read from sled (the cache has none), cached, or
    /// quarantined if undecodable. Caller holds the stripe lock.
    fn read_locked(
        &self,
        digest: &Digest,
        held: &StripeGuard<'_>,
    ) -> Result<Option<Arc<StoredRecord>>> {
        let Some(bytes) = self.backend.get(digest)? else {
            return Ok(None);
        };
        match StoredRecord::decode(bytes) {
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
    pub(super) fn record(&self, digest: &Digest) -> Result<Option<Arc<StoredRecord>>> {
        if let Some(entry) = self.cache.get(digest) {
            return Ok(Some(entry));
        }
        self.record_uncached(digest)
    }

    /// [`record`](Self::record) without this thread's copies, for writers' guesses.
    pub(super) fn record_shared(&self, digest: &Digest) -> Result<Option<Arc<StoredRecord>>> {
        if let Some(entry) = self.cache.peek(digest) {
            return Ok(Some(entry));
        }
        self.record_uncached(digest)
    }

    /// The record of `digest` once the cache was asked and had none.
    fn record_uncached(&self, digest: &Digest) -> Result<Option<Arc<StoredRecord>>> {
        match self.locks.try_stripe(digest) {
            Some(held) => self.read_locked(digest, &held),
            None => self.record_unlocked(digest),
        }
    }

    /// The record of `digest` read from sled while a writer holds its stripe (the cache
    /// was asked and had none): not cached,
    /// and an undecodable one is reported as absent (the lock holder quarantines it).
    fn record_unlocked(&self, digest: &Digest) -> Result<Option<Arc<StoredRecord>>> {
        let Some(bytes) = self.backend.get(digest)? else {
            return Ok(None);
        };
        Ok(StoredRecord::decode(bytes).ok().map(Arc::new))
    }

    /// The record of `digest` if it is live.
    pub(crate) fn live_entry(&self, digest: &Digest) -> Result<Option<Arc<StoredRecord>>> {
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
    pub(crate) fn live_entry_of(
        &self,
        id: &SessionId,
    ) -> Result<Option<(Digest, Arc<StoredRecord>)>> {
        self.tokens.find(
            &id.words(),
            || id.digest(),
            |digest| self.live_entry(digest),
        )
    }

    /// The live session `id` (see [`Store::load`](crate::Store::load)).
    pub(crate) fn load(&self, id: &SessionId) -> Result<Option<Session>> {
        let found = self.live_entry_of(id)?;
        Ok(found.map(|(digest, e)| self.session(id.clone(), digest, &e)))
    }

    /// The user of the stored record of `digest`, read without a lock: a guess that a
    /// writer confirms under the stripe lock.
    pub(super) fn current_user(&self, digest: &Digest) -> Result<Option<String>> {
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
                None => crate::record::decode_record(&bytes).ok().map(|r| r.header),
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
    pub(super) fn session(&self, id: SessionId, digest: Digest, entry: &StoredRecord) -> Session {
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
