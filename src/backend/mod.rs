//! Where records and their index entries live: sled (one folder, one process) or Redis
//! (one server, any number of processes). The seam is the write protocol's own steps, not
//! a key-value API: read a record, replace or delete it if it is still the version read
//! (with its index entries), move it to a new digest, list a user's or the expired
//! digests. Each backend makes every step atomic in its own way: sled with the stripe
//! lock, ordered inserts and a transaction for rotation (see [`crate::write`]); Redis with
//! one Lua script per step.
//!
//! Dispatch is an enum, not a trait object: the sled arms inline into the read path.

pub(crate) mod sled;

#[cfg(feature = "redis")]
pub(crate) mod redis;

use ::sled::IVec;

use crate::error::Result;
use crate::id::Digest;
use crate::read::Entry;
use crate::write::Swap;

/// The storage of one open store.
pub(crate) enum Backend {
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

/// What an `update` holds on Redis while its closure runs (nothing on sled, where the
/// stripe lock is enough: one process writes the folder).
pub(crate) enum Lease<'a> {
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
        match $self {
            Backend::Sled($b) => $call,
            #[cfg(feature = "redis")]
            Backend::Redis($b) => $call,
        }
    };
}

impl Backend {
    /// Keeps other stores' writes to `digest` out until dropped (an `update`'s
    /// read-modify-write). Taken with the stripe lock held (so this process's threads
    /// queue on the lock, fairly, not on the server).
    ///
    /// # Errors
    ///
    /// On Redis, [`Error::Contended`](crate::Error::Contended) if another store kept the
    /// session for the lease's whole length, and [`Error::Storage`].
    pub(crate) fn lease(&self, digest: &Digest) -> Result<Lease<'_>> {
        match self {
            Backend::Sled(_) => {
                let _ = digest;
                Ok(Lease::None)
            }
            #[cfg(feature = "redis")]
            Backend::Redis(b) => b.lease(digest).map(Lease::Redis),
        }
    }

    /// The stored bytes of `digest`'s record.
    pub(crate) fn get(&self, digest: &Digest) -> Result<Option<IVec>> {
        dispatch!(self, b => b.get(digest))
    }

    /// Replaces the record of `digest` (`old`, or absent) by `new` if it is still `old`,
    /// with its index entries. Caller holds the stripe lock.
    pub(crate) fn write(&self, digest: &Digest, old: Option<&Entry>, new: &Entry) -> Result<Swap> {
        dispatch!(self, b => b.write(digest, old, new))
    }

    /// Deletes the record of `digest` if it is still `old`, with its index entries.
    /// Caller holds the stripe lock.
    pub(crate) fn delete(&self, digest: &Digest, old: &Entry) -> Result<Swap> {
        dispatch!(self, b => b.delete(digest, old))
    }

    /// Moves the record of `old` to `new` as `record`, atomically, if it is still
    /// `entry` ([`Swap::Conflict`], nothing written, if not).
    ///
    /// # Errors
    ///
    /// [`Error::TokenCollision`](crate::Error::TokenCollision) if `new` is taken.
    pub(crate) fn rotate(
        &self,
        old: &Digest,
        entry: &Entry,
        new: &Digest,
        record: &Entry,
    ) -> Result<Swap> {
        dispatch!(self, b => b.rotate(old, entry, new, record))
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

    /// Every stored record as (key, bytes), in storage order. A key that is not a digest
    /// is passed on as it is.
    pub(crate) fn records(&self) -> Box<dyn Iterator<Item = Result<(Vec<u8>, IVec)>> + '_> {
        dispatch!(self, b => b.records())
    }

    /// The records whose digest starts with `prefix` (a handle).
    pub(crate) fn records_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, IVec)>> {
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
    pub(crate) fn format(&self) -> Result<Option<u32>> {
        dispatch!(self, b => b.format())
    }

    /// The sled trees, for tests that look at them directly.
    #[cfg(test)]
    pub(crate) fn sled(&self) -> Option<&sled::SledBackend> {
        match self {
            Backend::Sled(b) => Some(b),
            #[cfg(feature = "redis")]
            Backend::Redis(_) => None,
        }
    }

    /// The Redis backend, for the operations it runs as one script (revoke-all, the cap).
    #[cfg(feature = "redis")]
    pub(crate) fn redis(&self) -> Option<&redis::RedisBackend> {
        match self {
            Backend::Redis(b) => Some(b),
            Backend::Sled(_) => None,
        }
    }

    /// Writes the store format `format` (durably), before the first record in it.
    pub(crate) fn set_format(&self, format: u32) -> Result<()> {
        dispatch!(self, b => b.set_format(format))
    }
}

/// Where a purge pass has got to in the expiry index.
#[derive(Default)]
pub(crate) struct Cursor {
    /// sled: the last key read.
    pub(crate) last_key: Option<Vec<u8>>,
    /// Redis: how many due entries this pass left in the index (and so are skipped).
    pub(crate) kept: usize,
}
