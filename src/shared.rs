//! The state behind every `Store` handle and the write protocol that keeps the trees in step.
//!
//! Every change to a session's record happens with that session's stripe lock held, so
//! the read cache can be updated in the same critical section and never goes stale.
//! Compare-and-swap on the record is the safety net: a mismatch drops the cached copy and
//! the operation retries from disk.
//!
//! Order of writes (DESIGN.md, I1 and I2): new index entries first, then the record, then
//! removal of the old index entries. A crash at any point leaves at most stale index
//! entries, which readers filter and the cleanup removes.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use sled::{IVec, Tree};

use crate::codec::{self, CodecError, Data, Header};
use crate::config::{Config, Durability};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::expiry;
use crate::id::{Digest, SessionId};
use crate::registry::Registration;
use crate::session::{Limits, Session};
use crate::stats::Counters;

const STRIPES: usize = 1024;
/// How often a write retries after a compare-and-swap mismatch before giving up.
pub(crate) const CAS_ATTEMPTS: usize = 4;

/// A decoded record as it is on disk, shared between the cache and readers.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) bytes: IVec,
    pub(crate) header: Header,
    pub(crate) user: Option<String>,
    pub(crate) data: Arc<Data>,
}

/// A record to be written. Without `data` the cache entry is dropped instead of updated.
pub(crate) struct NewRecord {
    pub(crate) bytes: Vec<u8>,
    pub(crate) header: Header,
    pub(crate) user: Option<String>,
    pub(crate) data: Option<Arc<Data>>,
}

/// The outcome of one compare-and-swap attempt.
pub(crate) enum Swap<T = ()> {
    Done,
    /// The record was not what the caller read; here is what it wanted to write.
    Conflict(T),
}

pub(crate) struct Shared {
    pub(crate) db: sled::Db,
    pub(crate) sessions: Tree,
    pub(crate) expiry: Tree,
    pub(crate) users: Tree,
    pub(crate) quarantine: Tree,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    pub(crate) events: Events,
    /// `meta/format` of the store as found when it was opened.
    pub(crate) format: u32,
    cache: Option<quick_cache::sync::Cache<Digest, Arc<Entry>>>,
    stripes: Box<[Mutex<()>]>,
    /// Declared last so it is dropped after `db`: the folder counts as open until then.
    _registration: Registration,
}

impl Shared {
    pub(crate) fn new(
        db: sled::Db,
        config: Config,
        registration: Registration,
        format: u32,
    ) -> Result<Shared> {
        let cache =
            (config.cache_entries > 0).then(|| quick_cache::sync::Cache::new(config.cache_entries));
        Ok(Shared {
            sessions: db.open_tree("sessions")?,
            expiry: db.open_tree("expiry")?,
            users: db.open_tree("users")?,
            quarantine: db.open_tree("quarantine")?,
            events: Events::new(config.event_capacity),
            counters: Counters::default(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            cache,
            config,
            db,
            format,
            _registration: registration,
        })
    }

    pub(crate) fn now(&self) -> u64 {
        self.config.clock.now_ms()
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_record_size: self.config.max_record_size,
            max_key_len: self.config.max_key_len,
        }
    }

    /// The lock that serializes every write to `digest`'s record.
    pub(crate) fn lock(&self, digest: &Digest) -> MutexGuard<'_, ()> {
        let n = usize::from(u16::from_le_bytes([digest.0[0], digest.0[1]])) % STRIPES;
        self.stripes[n].lock()
    }

    /// Locks two digests in a fixed order (no deadlock), once if they share a stripe.
    pub(crate) fn lock_pair(
        &self,
        a: &Digest,
        b: &Digest,
    ) -> (MutexGuard<'_, ()>, Option<MutexGuard<'_, ()>>) {
        let stripe = |d: &Digest| usize::from(u16::from_le_bytes([d.0[0], d.0[1]])) % STRIPES;
        let (sa, sb) = (stripe(a), stripe(b));
        if sa == sb {
            (self.stripes[sa].lock(), None)
        } else {
            let (first, second) = if sa < sb { (sa, sb) } else { (sb, sa) };
            let g1 = self.stripes[first].lock();
            (g1, Some(self.stripes[second].lock()))
        }
    }

    pub(crate) fn cached(&self, digest: &Digest) -> Option<Arc<Entry>> {
        self.cache.as_ref()?.get(digest)
    }

    pub(crate) fn forget(&self, digest: &Digest) {
        if let Some(cache) = &self.cache {
            cache.remove(digest);
        }
    }

    pub(crate) fn remember(&self, digest: Digest, entry: Arc<Entry>) {
        if let Some(cache) = &self.cache {
            cache.insert(digest, entry);
        }
    }

    /// The decoded record of `digest`, live or not; `None` if absent or undecodable (then
    /// quarantined). The caller must hold the stripe lock unless it only reads the result.
    pub(crate) fn entry_locked(&self, digest: &Digest) -> Result<Option<Arc<Entry>>> {
        if let Some(entry) = self.cached(digest) {
            return Ok(Some(entry));
        }
        let Some(bytes) = self.sessions.get(digest.0)? else {
            return Ok(None);
        };
        match codec::decode_record(&bytes) {
            Ok(record) => {
                let entry = Arc::new(Entry {
                    bytes,
                    header: record.header,
                    user: record.user,
                    data: Arc::new(record.data),
                });
                self.remember(*digest, Arc::clone(&entry));
                Ok(Some(entry))
            }
            Err(e) => {
                self.quarantine(digest, &bytes, &e)?;
                Ok(None)
            }
        }
    }

    /// The decoded record of `digest` if it is live: from the cache without a lock, or
    /// from disk under the stripe lock (so a concurrent write cannot be cached over).
    pub(crate) fn live_entry(&self, digest: &Digest) -> Result<Option<Arc<Entry>>> {
        if let Some(answer) = self.live_cached(digest) {
            return Ok(answer);
        }
        let entry = {
            let _guard = self.lock(digest);
            self.entry_locked(digest)?
        };
        let now = self.now();
        Ok(entry.filter(|e| expiry::is_live(&self.config, &e.header, now)))
    }

    /// [`live_entry`](Self::live_entry) from the read cache alone, without I/O or a lock
    /// (for async callers). `None` means "not cached".
    pub(crate) fn live_cached(&self, digest: &Digest) -> Option<Option<Arc<Entry>>> {
        let entry = self.cached(digest)?;
        let live = expiry::is_live(&self.config, &entry.header, self.now());
        Some(live.then_some(entry))
    }

    /// The stored bytes and header of `digest` without decoding the data (cache first).
    /// Undecodable records are quarantined and reported as absent. Caller holds the lock.
    pub(crate) fn raw_locked(&self, digest: &Digest) -> Result<Option<(IVec, Header)>> {
        if let Some(entry) = self.cached(digest) {
            return Ok(Some((entry.bytes.clone(), entry.header)));
        }
        let Some(bytes) = self.sessions.get(digest.0)? else {
            return Ok(None);
        };
        match codec::parse_header(&bytes).and_then(|h| {
            codec::parse_user_only(&bytes)?;
            Ok(h)
        }) {
            Ok(header) => Ok(Some((bytes, header))),
            Err(e) => {
                self.quarantine(digest, &bytes, &e)?;
                Ok(None)
            }
        }
    }

    /// Moves an undecodable record out of the way: kept in `quarantine` for inspection,
    /// removed from `sessions`, counted and logged. Caller holds the stripe lock.
    pub(crate) fn quarantine(&self, digest: &Digest, bytes: &IVec, why: &CodecError) -> Result<()> {
        self.quarantine.insert(digest.0, bytes.clone())?;
        let removed = self
            .sessions
            .compare_and_swap(digest.0, Some(bytes), None::<IVec>)?
            .is_ok();
        self.forget(digest);
        if removed {
            Counters::add(&self.counters.quarantined, 1);
            tracing::warn!(handle = %digest.handle(), error = %why, "quarantined an undecodable session record");
        }
        Ok(())
    }

    /// Replaces the record of `digest` (`old`, or absent) by `new`, keeping the indexes
    /// in step. Caller holds the stripe lock.
    pub(crate) fn write(
        &self,
        digest: &Digest,
        old: Option<(&IVec, &Header, Option<&str>)>,
        new: NewRecord,
    ) -> Result<Swap<NewRecord>> {
        let old_expiry = old.map(|(_, h, _)| h.expires_at);
        let old_user = old.and_then(|(_, _, u)| u);
        let new_expiry_key = codec::expiry_key(new.header.expires_at, digest);
        if old_expiry != Some(new.header.expires_at) {
            self.expiry.insert(new_expiry_key, &[])?;
        }
        let user_changed = old_user != new.user.as_deref();
        if let Some(user) = new.user.as_ref().filter(|_| user_changed) {
            self.users.insert(codec::user_key(user, digest), &[])?;
        }
        let bytes = IVec::from(new.bytes);
        let swapped = self.sessions.compare_and_swap(
            digest.0,
            old.map(|(b, _, _)| b),
            Some(bytes.clone()),
        )?;
        if swapped.is_err() {
            self.forget(digest);
            return Ok(Swap::Conflict(NewRecord {
                bytes: bytes.to_vec(),
                ..new
            }));
        }
        if let Some(e) = old_expiry.filter(|e| *e != new.header.expires_at) {
            self.expiry.remove(codec::expiry_key(e, digest))?;
        }
        if let Some(user) = old_user.filter(|_| user_changed) {
            self.users.remove(codec::user_key(user, digest))?;
        }
        match new.data {
            Some(data) => self.remember(
                *digest,
                Arc::new(Entry {
                    bytes,
                    header: new.header,
                    user: new.user,
                    data,
                }),
            ),
            None => self.forget(digest),
        }
        self.after_write()?;
        Ok(Swap::Done)
    }

    /// Deletes the record of `digest` if it is still `bytes`, then its index entries
    /// (the expiry entry only if `remove_expiry_entry`). Caller holds the stripe lock.
    pub(crate) fn delete(
        &self,
        digest: &Digest,
        bytes: &IVec,
        header: &Header,
        remove_expiry_entry: bool,
    ) -> Result<Swap> {
        let user = codec::parse_user_only(bytes)
            .ok()
            .flatten()
            .map(str::to_owned);
        let swapped = self
            .sessions
            .compare_and_swap(digest.0, Some(bytes), None::<IVec>)?;
        self.forget(digest);
        if swapped.is_err() {
            return Ok(Swap::Conflict(()));
        }
        if remove_expiry_entry {
            self.expiry
                .remove(codec::expiry_key(header.expires_at, digest))?;
        }
        if let Some(user) = user {
            self.users.remove(codec::user_key(&user, digest))?;
        }
        Ok(Swap::Done)
    }

    /// Flushes if the configured durability asks for it after every write.
    pub(crate) fn after_write(&self) -> Result<()> {
        if self.config.durability == Durability::EveryWrite {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Builds the session object for a record.
    pub(crate) fn session(&self, id: SessionId, digest: Digest, entry: &Entry) -> Session {
        Session {
            id,
            digest,
            header: entry.header,
            user: entry.user.clone(),
            data: Arc::clone(&entry.data),
            limits: self.limits(),
        }
    }

    /// Encodes user and data of `session` with a placeholder header, checking the limits.
    pub(crate) fn encode(&self, user: Option<&str>, data: &Data) -> Result<Vec<u8>> {
        if let Some(user) = user
            && user.len() > crate::config::MAX_USER_LEN
        {
            return Err(Error::TooLarge {
                what: crate::error::Oversized::User,
                size: user.len(),
                limit: crate::config::MAX_USER_LEN,
            });
        }
        let placeholder = Header {
            expires_at: 0,
            last_seen: 0,
            created_at: 0,
            version: 0,
        };
        let bytes = codec::encode_record(&placeholder, user, data).map_err(|e| Error::Encode {
            key: String::new(),
            source: Box::new(e),
        })?;
        if bytes.len() > self.config.max_record_size {
            return Err(Error::TooLarge {
                what: crate::error::Oversized::Record,
                size: bytes.len(),
                limit: self.config.max_record_size,
            });
        }
        Ok(bytes)
    }
}
