//! The write protocol: every change to a record and its index entries goes through here.
//!
//! One session's record is written only with its stripe lock held ([`crate::engine::locks`]),
//! but for the tower adapter's awaited save on Redis (`Engine::save_contents_async`), whose
//! compare-and-swap on the server against the version it planned onto is what guards it
//! (on a conflict it comes here). Inside the lock, a write is:
//!
//! 1. insert the new `expiry` entry (and the new `users` entry if the user changed);
//! 2. compare-and-swap the record against the version read under the same lock;
//! 3. remove the old `expiry` / `users` entries (a failure is logged: stale entries are
//!    allowed, and the write is done);
//! 4. update the read cache (on any error or conflict, drop the digest from it, since
//!    the backend may hold the new version or a third one).
//!
//! Steps 1-3 are the backend's ([`crate::backend`]): on sled a crash between any two
//! leaves only stale index entries (invariants I1 and I2 in ARCHITECTURE.md); on Redis
//! they are one script, so the indexes are exact. A delete goes the other way: the
//! record first, then its entries.
//! On sled the compare-and-swap never fails in a healthy process (every writer holds the
//! lock); on Redis other stores' writes and this store's awaited saves can make it fail.
//! On a mismatch the operation retries from the storage, a bounded number of times
//! ([`retrying`]), then fails with [`Error::Contended`].
//!
//! The operations above it: `commit` (create, save, touch), `update`, `revoke` (destroy,
//! revoke-all, the per-user cap), `regenerate` (atomic ID regeneration), `purge`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sled::IVec;

use crate::backend::Swap;
use crate::config::Durability;
use crate::engine::Engine;
use crate::engine::locks::StripeGuard;
use crate::error::{Error, Result};
use crate::id::Digest;
use crate::record::StoredRecord;
use crate::record::codec::{self, CodecError};
use crate::stats::Counter;

/// How many times an operation runs before it gives up with [`Error::Contended`]: lock
/// upgrades (see [`Engine::locked_write`]) and compare-and-swap mismatches count.
pub(super) const ATTEMPTS: usize = 8;

/// What one attempt of a retried operation did.
pub(super) enum Step<T> {
    Done(T),
    /// Nothing was written; run the attempt again.
    Retry,
}

impl<T> Step<T> {
    /// What a compare-and-swap means for the attempt that made it: done with `value`, or
    /// run again (the record was not the version read; nothing was written).
    pub(super) fn after(swap: Swap, value: impl FnOnce() -> T) -> Step<T> {
        match swap {
            Swap::Done => Step::Done(value()),
            Swap::Conflict => Step::Retry,
        }
    }
}

/// Runs `attempt` until it is done, at most [`ATTEMPTS`] times.
///
/// # Errors
///
/// Whatever `attempt` returns, or [`Error::Contended`] when every attempt asked to retry.
pub(super) fn retrying<T>(mut attempt: impl FnMut() -> Result<Step<T>>) -> Result<T> {
    for _ in 0..ATTEMPTS {
        if let Step::Done(value) = attempt()? {
            return Ok(value);
        }
    }
    Err(Error::Contended)
}

impl Engine {
    /// Upgrades `meta/format` of an older store before the first record in the current
    /// format is written, so an older sessile, which could not read that record, refuses
    /// to open the store instead of quarantining it.
    pub(super) fn upgrade_before_write(&self) -> Result<()> {
        if self.format() < codec::STORE_FORMAT {
            // Format 1 records need no rewrite: they are read as they are and rewritten in
            // the current format by their next write. A future format that must rewrite
            // records does it here.
            self.backend.set_format(codec::STORE_FORMAT)?;
            self.format.store(codec::STORE_FORMAT, Ordering::Release);
        }
        Ok(())
    }

    /// Flushes if the configured durability asks for it after every write.
    pub(super) fn after_write(&self) -> Result<()> {
        if self.config.durability == Durability::EveryWrite {
            self.backend.flush()?;
        }
        Ok(())
    }

    /// Replaces the record of `digest` (`old`, or absent) by `new`, keeping the indexes
    /// in step (steps 1-4 of the module docs, in the backend). Caller holds the stripe
    /// lock.
    pub(super) fn write_record(
        &self,
        digest: &Digest,
        old: Option<&StoredRecord>,
        new: StoredRecord,
        held: &StripeGuard<'_>,
    ) -> Result<Swap> {
        self.upgrade_before_write()?;
        // An error may come after the backend applied the change, and a conflict means
        // another version is stored: the cache must keep neither the old version.
        let writing = self.cache.writing(digest, held);
        let swapped = self.backend.write(digest, old, &new);
        if !matches!(swapped, Ok(Swap::Done)) {
            self.cache.remove(digest, &writing);
            return swapped;
        }
        self.cache.put(*digest, Arc::new(new), &writing);
        drop(writing);
        self.after_write()?;
        Ok(Swap::Done)
    }

    /// Deletes the record of `digest` if it is still `old`, then its index entries.
    /// Caller holds the stripe lock.
    pub(super) fn delete_record(
        &self,
        digest: &Digest,
        old: &StoredRecord,
        held: &StripeGuard<'_>,
    ) -> Result<Swap> {
        let writing = self.cache.writing(digest, held);
        let swapped = self.backend.delete(digest, old);
        self.cache.remove(digest, &writing);
        swapped
    }

    /// Moves an undecodable record out of the way: copied to the quarantine first (so a
    /// crash cannot lose the bytes), then removed if unchanged, counted and logged.
    /// Caller holds the stripe lock.
    pub(super) fn quarantine(
        &self,
        digest: &Digest,
        bytes: &IVec,
        why: &CodecError,
        held: &StripeGuard<'_>,
    ) -> Result<()> {
        let writing = self.cache.writing(digest, held);
        let removed = self.backend.quarantine(digest, bytes);
        self.cache.remove(digest, &writing);
        drop(writing);
        let removed = removed?;
        if removed {
            self.counters.add(Counter::Quarantined, 1);
            tracing::warn!(handle = %digest.handle(), error = %why, "quarantined an undecodable session record");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::failpoint;

    #[test]
    fn a_failure_after_the_swap_leaves_the_cache_agreeing_with_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = Config::new(dir.path().join("s"))
            .purge_thread(false)
            .touch_granularity(std::time::Duration::ZERO)
            .clock(clock.clock())
            .open()
            .expect("open");
        let mut session = store.create().expect("create");
        session.insert("v", &1u32).expect("insert");
        store.save(&session).expect("save");
        assert!(store.load(session.id()).expect("load").is_some()); // cached
        clock.advance(std::time::Duration::from_secs(1)); // the expiry moves
        session.insert("v", &2u32).expect("insert");
        failpoint::arm("write: removing stale index entries");
        store
            .save(&session)
            .expect("the write is done; only cleanup failed");
        let on_disk = store
            .engine
            .backend
            .get(&session.digest)
            .expect("read")
            .expect("record");
        let loaded = store.load(session.id()).expect("load").expect("live");
        assert_eq!(loaded.get::<u32>("v").expect("decode"), Some(2));
        let cached = store.engine.cache.get(&session.digest).expect("cached");
        assert_eq!(cached.bytes, on_disk);
        let report = store.verify(false).expect("verify");
        assert!(report.is_consistent());
        assert_eq!(
            report.stale_expiry_entries, 1,
            "the old entry was left behind"
        );
    }
}
