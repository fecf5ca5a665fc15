//! Where records and their index entries live: sled (one folder, one process) or Redis
//! (one server, any number of processes). The seam is the write protocol's own steps, not
//! a key-value API: read a record, replace or delete it if it is still the version read
//! (with its index entries), move it to a new digest, list a user's or the expired
//! digests. Each backend makes every step atomic in its own way: sled with the stripe
//! lock, ordered inserts and a transaction for regeneration (see the engine's `write` module); Redis with
//! one Lua script per step.
//!
//! Dispatch is an enum, not a trait object: the sled arms inline into the read path.

pub(crate) mod sled;

#[cfg(feature = "redis")]
pub(crate) mod redis;

use ::sled::IVec;

use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::id::{Digest, SessionHandle};
use crate::record::StoredRecord;
use crate::record::codec::STORE_FORMAT;

/// The outcome of one compare-and-swap.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Swap {
    Done,
    /// The record was not the version the caller read; nothing was written to it.
    Conflict,
}

/// The storage of one open store. Which one it is stays inside this module: the layers
/// above ask for capabilities ([`shared_by_processes`](Backend::shared_by_processes),
/// the atomic [`revoke_user`](Backend::revoke_user)) instead.
pub(crate) struct Backend(Storage);

enum Storage {
    Sled(sled::SledBackend),
    #[cfg(feature = "redis")]
    Redis(Box<redis::RedisBackend>),
}

/// One entry of the expiry index: a digest due at a time, or a key that does not parse
/// (dropped by whoever finds it).
pub(crate) enum ExpiryEntry {
    Due(u64, Digest),
    Bad(Vec<u8>),
}

/// The key a record is stored under: a session's digest, or a key sessile never writes
/// (a stray, from another program or damage), which no session can be loaded by.
pub(crate) enum RecordKey {
    Digest(Digest),
    Stray(Vec<u8>),
}

/// One entry of the user index: a digest listed for a user, or an entry that does not
/// parse (`index` names the set it is in on Redis, empty on sled; `member` is the key or
/// member itself).
pub(crate) enum UserEntry {
    Listed(String, Digest),
    Bad { index: Vec<u8>, member: Vec<u8> },
}

/// What an `update` holds on Redis while its closure runs (nothing on sled, where the
/// stripe lock is enough: one process writes the folder).
pub(crate) struct Lease<'a>(#[allow(dead_code, reason = "held for its Drop")] Held<'a>);

enum Held<'a> {
    None,
    #[cfg(feature = "redis")]
    #[allow(dead_code, reason = "held for its Drop")]
    Redis(redis::Lease<'a>),
    #[cfg(not(feature = "redis"))]
    #[allow(dead_code, reason = "the lifetime of the Redis variant")]
    Never(std::marker::PhantomData<&'a ()>),
}

/// Calls the same method on whichever backend this is.
macro_rules! dispatch {
    ($self:ident, $b:ident => $call:expr) => {
        match &$self.0 {
            Storage::Sled($b) => $call,
            #[cfg(feature = "redis")]
            Storage::Redis($b) => $call,
        }
    };
}

impl Backend {
    /// Opens the storage `config` names (a folder, or a Redis server) and returns it with
    /// its store format, written in a new store.
    ///
    /// # Errors
    ///
    /// Those of [`Store::open`](crate::Store::open) and
    /// [`Config::open`](crate::Config::open).
    pub(crate) fn open(config: &Config) -> Result<(Backend, u32)> {
        #[cfg(feature = "redis")]
        if let Some(target) = &config.redis {
            let redis = redis::RedisBackend::connect(target, config.clock.clone())?;
            let backend = Backend(Storage::Redis(Box::new(redis)));
            let format = backend.check_format(&config.path)?;
            if let Ok(Some(policy)) = backend.eviction_policy() {
                tracing::warn!(
                    policy,
                    "the Redis server may evict sessile's keys (maxmemory-policy {policy}): \
                     an evicted record loses a session, an evicted user set lets revoke-all \
                     miss sessions; set maxmemory-policy noeviction"
                );
            }
            return Ok((backend, format));
        }
        let backend = Backend(Storage::Sled(sled::SledBackend::open(
            &config.path,
            config.storage_cache_bytes,
        )?));
        let format = backend.check_format(&config.path)?;
        Ok((backend, format))
    }

    /// On Redis, the server's `maxmemory-policy` if it may evict sessile's keys; `None`
    /// on sled, under `noeviction`, or where the server refuses `CONFIG`.
    pub(crate) fn eviction_policy(&self) -> Result<Option<String>> {
        match &self.0 {
            Storage::Sled(_) => Ok(None),
            #[cfg(feature = "redis")]
            Storage::Redis(b) => b.eviction_policy(),
        }
    }

    /// Whether other processes write this storage too (Redis): then nothing may cache
    /// records, and every operation is a network round trip.
    pub(crate) fn shared_by_processes(&self) -> bool {
        match &self.0 {
            Storage::Sled(_) => false,
            #[cfg(feature = "redis")]
            Storage::Redis(_) => true,
        }
    }

    /// Keeps other stores' writes to `digest` out until dropped (an `update`'s
    /// read-modify-write). Taken with the stripe lock held (so this process's threads
    /// queue on the lock, fairly, not on the server).
    ///
    /// # Errors
    ///
    /// On Redis, [`Error::SessionBusy`](crate::Error::SessionBusy) if another store kept the
    /// session for the lease's whole length, and [`Error::Storage`].
    pub(crate) fn lease(&self, digest: &Digest) -> Result<Lease<'_>> {
        match &self.0 {
            Storage::Sled(_) => {
                let _ = digest;
                Ok(Lease(Held::None))
            }
            #[cfg(feature = "redis")]
            Storage::Redis(b) => b.lease(digest).map(|l| Lease(Held::Redis(l))),
        }
    }

    /// The stored bytes of `digest`'s record.
    pub(crate) fn get(&self, digest: &Digest) -> Result<Option<IVec>> {
        dispatch!(self, b => b.get(digest))
    }

    /// Replaces the record of `digest` (`old`, or absent) by `new` if it is still `old`,
    /// with its index entries. Caller holds the stripe lock.
    pub(crate) fn write(
        &self,
        digest: &Digest,
        old: Option<&StoredRecord>,
        new: &StoredRecord,
    ) -> Result<Swap> {
        dispatch!(self, b => b.write(digest, old, new))
    }

    /// Stores each of `records` where nothing is stored under its digest, without the
    /// stripe locks (on Redis the scripts' compare-and-swap is what guards a record), and
    /// returns, for each, whether it was stored; the caller writes the others through its
    /// locked path. On Redis one pipeline for the lot; on sled, whose writes need the
    /// stripe lock, none is stored here.
    pub(crate) fn create_many(&self, records: &[(&Digest, &StoredRecord)]) -> Result<Vec<bool>> {
        match &self.0 {
            Storage::Sled(_) => Ok(vec![false; records.len()]),
            #[cfg(feature = "redis")]
            Storage::Redis(b) => b.create_many(records),
        }
    }

    /// The stored bytes of `digest`, awaited without blocking where the storage offers an
    /// async path (Redis on a single server); `None` where it does not, or where that path
    /// failed: then the caller reads through [`get`](Self::get).
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(crate) async fn get_async(&self, digest: &Digest) -> Option<Option<IVec>> {
        match &self.0 {
            Storage::Sled(_) => None,
            #[cfg(feature = "redis")]
            Storage::Redis(b) => b.get_async(digest).await,
        }
    }

    /// [`write`](Self::write) of `new` over `old`, awaited without blocking where the
    /// storage offers an async path (Redis on a single server), without the stripe lock
    /// (the compare-and-swap guards the record). `None` where there is no such path, after
    /// an error, or when another store's `update` lease holds the session: nothing was
    /// written, and the caller takes its locked path.
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    #[cfg_attr(not(feature = "redis"), allow(unused_variables))]
    pub(crate) async fn write_async(
        &self,
        digest: &Digest,
        old: &StoredRecord,
        new: &StoredRecord,
    ) -> Option<Swap> {
        match &self.0 {
            Storage::Sled(_) => None,
            #[cfg(feature = "redis")]
            Storage::Redis(b) => b.write_async(digest, old, new).await,
        }
    }

    /// Deletes the record of `digest` if it is still `old`, with its index entries.
    /// Caller holds the stripe lock.
    pub(crate) fn delete(&self, digest: &Digest, old: &StoredRecord) -> Result<Swap> {
        dispatch!(self, b => b.delete(digest, old))
    }

    /// Moves the record of `old` to `new` as `record`, atomically, if it is still
    /// `entry` ([`Swap::Conflict`], nothing written, if not).
    ///
    /// # Errors
    ///
    /// [`Error::TokenCollision`](crate::Error::TokenCollision) if `new` is taken.
    pub(crate) fn move_record(
        &self,
        old: &Digest,
        entry: &StoredRecord,
        new: &Digest,
        record: &StoredRecord,
    ) -> Result<Swap> {
        dispatch!(self, b => b.move_record(old, entry, new, record))
    }

    /// Copies `bytes` to the quarantine, then removes the record of `digest` if it is
    /// still `bytes`. Returns whether it was removed.
    pub(crate) fn quarantine(&self, digest: &Digest, bytes: &[u8]) -> Result<bool> {
        dispatch!(self, b => b.quarantine(digest, bytes))
    }

    /// The digests the user index lists for `user` (some may be stale). Returns also how
    /// many unreadable entries it dropped on the way.
    pub(crate) fn user_digests(&self, user: &str) -> Result<(Vec<Digest>, u64)> {
        dispatch!(self, b => b.user_digests(user))
    }

    /// Drops the user index entry of `digest` for `user`, found to match no record of
    /// that user. Caller holds the stripe lock.
    pub(crate) fn drop_user_entry(&self, user: &str, digest: &Digest) -> Result<()> {
        dispatch!(self, b => b.drop_user_entry(user, digest))
    }

    /// Up to `limit` expiry entries due at or before `now`, in time order, skipping the
    /// `after` first (or those up to the entry `after`, on sled).
    pub(crate) fn due(
        &self,
        now: u64,
        after: &mut Cursor,
        limit: usize,
    ) -> Result<Vec<ExpiryEntry>> {
        dispatch!(self, b => b.due(now, after, limit))
    }

    /// Drops an expiry entry found to match no record with that expiry. Caller holds the
    /// stripe lock (for a bad key, none). Returns whether it is gone from the index (on
    /// Redis an entry whose record exists stays).
    pub(crate) fn drop_expiry_entry(&self, entry: &ExpiryEntry) -> Result<bool> {
        dispatch!(self, b => b.drop_expiry_entry(entry))
    }

    /// Whether the expiry index lists `digest` at `expires_at`.
    pub(crate) fn has_expiry_entry(&self, digest: &Digest, expires_at: u64) -> Result<bool> {
        dispatch!(self, b => b.has_expiry_entry(digest, expires_at))
    }

    /// Whether the user index lists `digest` for `user`.
    pub(crate) fn has_user_entry(&self, user: &str, digest: &Digest) -> Result<bool> {
        dispatch!(self, b => b.has_user_entry(user, digest))
    }

    /// Adds the expiry entry (`expiry`) and the user entry (`user`) of `record`, stored
    /// under `digest`, if the record is still stored (a repair). Caller holds the stripe
    /// lock.
    pub(crate) fn add_index_entries(
        &self,
        digest: &Digest,
        record: &StoredRecord,
        expiry: bool,
        user: bool,
    ) -> Result<()> {
        dispatch!(self, b => b.add_index_entries(digest, record, expiry, user))
    }

    /// Every entry of the expiry index, in time order (read as they are walked on sled).
    pub(crate) fn expiry_entries(&self) -> Box<dyn Iterator<Item = Result<ExpiryEntry>> + '_> {
        dispatch!(self, b => b.expiry_entries())
    }

    /// Every entry of the user index (read as they are walked on sled).
    pub(crate) fn user_entries(&self) -> Box<dyn Iterator<Item = Result<UserEntry>> + '_> {
        dispatch!(self, b => b.user_entries())
    }

    /// Drops a user index entry that does not parse.
    pub(crate) fn drop_bad_user_entry(&self, index: &[u8], member: &[u8]) -> Result<()> {
        dispatch!(self, b => b.drop_bad_user_entry(index, member))
    }

    /// Copies a record stored under a stray key to the quarantine, then removes it (on
    /// Redis only if it is still `bytes`: another program may write the key; on sled,
    /// whose folder one process holds, it cannot change meanwhile).
    pub(crate) fn quarantine_stray(&self, key: &[u8], bytes: &[u8]) -> Result<()> {
        dispatch!(self, b => b.quarantine_stray(key, bytes))
    }

    /// How many records the quarantine holds.
    pub(crate) fn quarantined(&self) -> Result<u64> {
        dispatch!(self, b => b.quarantined())
    }

    /// Every stored record as (key, bytes), in storage order.
    pub(crate) fn records(&self) -> Box<dyn Iterator<Item = Result<(RecordKey, IVec)>> + '_> {
        dispatch!(self, b => b.records())
    }

    /// The records whose digest starts with `prefix` (a handle).
    pub(crate) fn records_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Digest, IVec)>> {
        dispatch!(self, b => b.records_with_prefix(prefix))
    }

    /// Makes every write so far durable as far as the backend can (sled: flushed to disk;
    /// Redis: what the server's persistence settings promise, nothing to do here).
    pub(crate) fn flush(&self) -> Result<()> {
        dispatch!(self, b => b.flush())
    }

    /// The stored store format, `None` in a new store.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`](crate::Error::Corrupt) for a marker that does not parse.
    fn format(&self) -> Result<Option<u32>> {
        dispatch!(self, b => b.format())
    }

    /// Deletes every session of `user` live at `now` but the one with handle `except`, and
    /// their index entries, in one atomic step, if this backend has one (Redis: a script
    /// on the server). `None` if it has not (sled): the engine then lists and deletes
    /// under the user's lock. Returns the digests deleted.
    pub(crate) fn revoke_user(
        &self,
        user: &str,
        except: Option<&SessionHandle>,
        now: u64,
    ) -> Result<Option<Vec<Digest>>> {
        match &self.0 {
            Storage::Sled(_) => {
                let _ = (user, except, now);
                Ok(None)
            }
            #[cfg(feature = "redis")]
            Storage::Redis(b) => b
                .revoke_user(user, except.map(|h| &h.as_bytes()[..]), now)
                .map(Some),
        }
    }

    /// Deletes `user`'s oldest live sessions but `keep` until at most `max` are left, in
    /// one atomic step, if this backend has one; `None` if not (as
    /// [`revoke_user`](Self::revoke_user)). Returns the digests deleted.
    pub(crate) fn cap_user(
        &self,
        user: &str,
        max: usize,
        keep: &Digest,
        now: u64,
    ) -> Result<Option<Vec<Digest>>> {
        match &self.0 {
            Storage::Sled(_) => {
                let _ = (user, max, keep, now);
                Ok(None)
            }
            #[cfg(feature = "redis")]
            Storage::Redis(b) => b.cap_user(user, max, keep, now).map(Some),
        }
    }

    /// Writes the store format `format` (durably), before the first record in it.
    pub(crate) fn set_format(&self, format: u32) -> Result<()> {
        dispatch!(self, b => b.set_format(format))
    }

    /// The revocation mark of `user` (see the engine's `revoke` module), if any.
    pub(crate) fn revocation(&self, user: &str) -> Result<Option<Revocation>> {
        dispatch!(self, b => b.revocation(user))
    }

    /// Sets the revocation mark of `user` to `at` (and the session kept then), unless the
    /// one stored is later: atomically, so concurrent revokes never move it back. Not
    /// flushed.
    pub(crate) fn raise_revocation(
        &self,
        user: &str,
        at: u64,
        kept: Option<&SessionHandle>,
    ) -> Result<()> {
        dispatch!(self, b => b.raise_revocation(user, at, kept))
    }

    /// The store's secret for keyed fingerprints: the one stored, or `fresh`, stored now
    /// if there was none or it was damaged (by whichever process of a shared store comes
    /// first).
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters fingerprint")
    )]
    pub(crate) fn fingerprint_secret(&self, fresh: [u8; 32]) -> Result<[u8; 32]> {
        dispatch!(self, b => b.fingerprint_secret(fresh))
    }

    /// Marks the session with handle `handle` as ended by a revocation, until its expiry
    /// `expires_at` and [`ENDED_MARGIN_MS`] (never lowering a mark). Not flushed.
    pub(crate) fn mark_ended(&self, handle: &SessionHandle, expires_at: u64) -> Result<()> {
        dispatch!(self, b => b.mark_ended(handle, expires_at))
    }

    /// Records that a framework rotated the session `from` into `to`, until `from`'s
    /// expiry `expires_at` and [`ENDED_MARGIN_MS`]. Not flushed.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters rotate IDs")
    )]
    pub(crate) fn link_rotation(
        &self,
        from: &SessionHandle,
        to: &SessionHandle,
        expires_at: u64,
    ) -> Result<()> {
        dispatch!(self, b => b.link_rotation(from, to, expires_at))
    }

    /// The sessions a framework rotated `from` into, as far as recorded.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters rotate IDs")
    )]
    pub(crate) fn rotated_into(&self, from: &SessionHandle) -> Result<Vec<SessionHandle>> {
        dispatch!(self, b => b.rotated_into(from))
    }

    /// Whether the session with handle `handle` carries an end mark.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters rotate IDs")
    )]
    pub(crate) fn is_ended(&self, handle: &SessionHandle) -> Result<bool> {
        dispatch!(self, b => b.is_ended(handle))
    }

    /// Drops the end marks due at `now`. Returns how many.
    pub(crate) fn prune_ended(&self, now: u64) -> Result<usize> {
        dispatch!(self, b => b.prune_ended(now))
    }
}

/// How long an end mark outlives the expiry of the session it marks: the servers of a
/// shared store may disagree on the time by this much.
pub(crate) const ENDED_MARGIN_MS: u64 = 60_000;

/// When a user's sessions were last all revoked, and the session kept then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Revocation {
    pub(crate) at: u64,
    pub(crate) kept: Option<SessionHandle>,
}

/// A damaged format marker, found by a backend that does not know the store's path
/// (filled in by `check_format`).
fn corrupt(detail: String) -> Error {
    Error::Corrupt {
        path: std::path::PathBuf::new(),
        detail,
    }
}

/// Where a purge pass has got to in the expiry index.
#[derive(Default)]
pub(crate) struct Cursor {
    /// sled: the last key read.
    last_key: Option<Vec<u8>>,
    /// Redis: how many due entries this pass left in the index (and so are skipped).
    pub(crate) kept: usize,
}

impl Backend {
    /// Reads (or, in a new store, writes) the store format and returns it. An older
    /// supported format is upgraded by the first write (the engine's `upgrade_before_write`),
    /// so looking at an old store leaves it as it is.
    fn check_format(&self, path: &Path) -> Result<u32> {
        let found = self.format().map_err(|e| match e {
            Error::Corrupt { detail, .. } => Error::Corrupt {
                path: path.to_path_buf(),
                detail,
            },
            other => other,
        })?;
        match found {
            None => {
                self.set_format(STORE_FORMAT)?;
                Ok(STORE_FORMAT)
            }
            Some(0) => Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: "the format marker is 0".into(),
            }),
            Some(found) if found > STORE_FORMAT => Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                found,
                supported: STORE_FORMAT,
            }),
            Some(found) => Ok(found),
        }
    }
}
