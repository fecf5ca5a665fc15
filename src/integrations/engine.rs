//! The write path the adapters share: records with a caller-chosen expiry, stored under a
//! caller-chosen digest, with the same protocol as the core store (stripe lock, then
//! `raw_locked`, then compare-and-swap through `Shared::write`, cache kept in step).
//!
//! Frameworks bring their own idea of a session's lifetime (tower-sessions' `expiry_date`,
//! actix-session's TTL). Here it is honoured but capped: a record never lives past the
//! store's idle timeout from its last write, nor past the absolute timeout from its
//! creation, so the store's guarantees hold whatever the framework asks for.

use std::fmt;
use std::sync::Arc;

use crate::codec::Data;
use crate::error::{Error, Result};
use crate::events::DestroyReason;
use crate::id::Digest;
use crate::state::StoreState;
use crate::store::Store;
use crate::write::commit::{Change, Committed, Contents, Inserted, TouchPlan};
use crate::write::revoke::Destroyed;

/// The outcome of [`StoreState::save_until`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Saved {
    /// A new version of the record was written.
    Written,
    /// Values, user and expiry were (nearly) what is stored: nothing was written.
    Unchanged,
    /// The session was destroyed or has expired (or the requested expiry has passed);
    /// nothing was written and it stays gone.
    Gone,
}

impl StoreState {
    /// An adapter's user and values, encoded and checked against the limits.
    pub(crate) fn contents(&self, user: Option<String>, data: Data) -> Result<Contents> {
        Contents::new(self, user, Arc::new(data))
    }

    /// Stores a new record under the first free key `next_key` gives, expiring at
    /// `requested` (ms since the epoch) or earlier if the store's timeouts say so. Returns
    /// the key used. A requested expiry already in the past writes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::TokenCollision`] if every key tried was taken; storage errors.
    pub(crate) fn insert_new<K>(
        &self,
        next_key: impl FnMut() -> Result<(K, Digest)>,
        contents: &Contents,
        requested: u64,
    ) -> Result<K> {
        let (key, _, _): (K, Digest, Inserted) =
            self.insert_fresh(next_key, contents, Some(requested))?;
        Ok(key)
    }

    /// Replaces the values and user of the live record of `digest` and moves its expiry to
    /// `requested` (capped by the store's timeouts). A session that was destroyed or has
    /// expired stays gone ([`Saved::Gone`]). A save that changes nothing and moves the
    /// expiry by less than the touch granularity writes nothing.
    pub(crate) fn save_until(
        &self,
        digest: &Digest,
        contents: Contents,
        requested: u64,
    ) -> Result<Saved> {
        let committed = self.commit(digest, &Change::Replace(contents), Some(requested))?;
        self.adapter_outcome(digest, committed)
    }

    /// The adapters' view of a commit: a lapsed expiry deletes the record.
    fn adapter_outcome(&self, digest: &Digest, committed: Committed) -> Result<Saved> {
        match committed {
            Committed::Written => Ok(Saved::Written),
            Committed::Unchanged => Ok(Saved::Unchanged),
            Committed::Gone => Ok(Saved::Gone),
            // The framework asked for an expiry that has already passed.
            Committed::Lapsed => {
                self.destroy_digest(digest, DestroyReason::Destroy)?;
                Ok(Saved::Gone)
            }
        }
    }

    /// Moves the expiry of the live record of `digest` to `requested` (capped by the
    /// store's timeouts) without rewriting its values. Returns whether the session is
    /// live. Writes nothing when the move is smaller than the touch granularity.
    #[cfg_attr(
        not(feature = "actix"),
        allow(dead_code, reason = "only actix touches")
    )]
    pub(crate) fn touch_until(&self, digest: &Digest, requested: u64) -> Result<bool> {
        match self.touch_plan(digest, Some(requested))? {
            TouchPlan::Dead => Ok(false),
            TouchPlan::NoWrite => Ok(true),
            TouchPlan::Write => {
                let committed = self.commit(digest, &Change::Touch, Some(requested))?;
                Ok(self.adapter_outcome(digest, committed)? != Saved::Gone)
            }
        }
    }

    /// Destroys the record of `digest` and flushes, so a crash cannot bring it back.
    /// Returns whether a live session was destroyed.
    pub(crate) fn destroy_durably(&self, digest: &Digest) -> Result<bool> {
        let destroyed = self.destroy_digest(digest, DestroyReason::Destroy)?;
        self.db.flush()?;
        Ok(destroyed == Destroyed::Live)
    }
}

/// Why a store call made from async code failed.
#[derive(Debug)]
pub(crate) enum OffExecutorError {
    /// The store reported an error.
    Store(Error),
    /// The blocking task panicked or was cancelled with its runtime.
    Task(String),
}

impl fmt::Display for OffExecutorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffExecutorError::Store(e) => write!(f, "sessile: {e}"),
            OffExecutorError::Task(e) => write!(f, "sessile: blocking task failed: {e}"),
        }
    }
}

impl std::error::Error for OffExecutorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OffExecutorError::Store(e) => Some(e),
            OffExecutorError::Task(_) => None,
        }
    }
}

impl OffExecutorError {
    /// Whether the store refused what it was given (too large, not encodable), as
    /// opposed to failing to store it: the frameworks report these as encoding errors.
    pub(crate) fn is_encoding(&self) -> bool {
        matches!(self, OffExecutorError::Store(e) if is_encoding(e))
    }
}

/// Whether `e` means the store refused what it was given (too large, not encodable).
pub(crate) fn is_encoding(e: &Error) -> bool {
    matches!(
        e,
        Error::TooLarge { .. } | Error::Encode { .. } | Error::EncodeRecord(_)
    )
}

impl From<Error> for OffExecutorError {
    fn from(e: Error) -> Self {
        OffExecutorError::Store(e)
    }
}

/// Runs `f` on tokio's blocking thread pool, so disk reads, writes and flushes never stall
/// an async worker thread. Outside a tokio runtime it runs `f` in place.
pub(crate) async fn off_executor<T, F>(
    store: &Store,
    f: F,
) -> std::result::Result<T, OffExecutorError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T> + Send + 'static,
{
    let store = store.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => match runtime.spawn_blocking(move || f(&store)).await {
            Ok(result) => Ok(result?),
            Err(e) => Err(OffExecutorError::Task(e.to_string())),
        },
        Err(_) => Ok(f(&store)?),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;

    fn open(dir: &std::path::Path, clock: &ManualClock) -> Store {
        Config::new(dir.join("s"))
            .idle_timeout(Duration::from_secs(100))
            .absolute_timeout(Duration::from_secs(1000))
            .cleanup_thread(false)
            .clock(clock.clock())
            .open()
            .expect("open")
    }

    fn contents(store: &Store, user: Option<&str>, pairs: &[(&str, &[u8])]) -> Contents {
        let data = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_bytes::ByteBuf::from(v.to_vec())))
            .collect();
        store
            .state
            .contents(user.map(str::to_owned), data)
            .expect("contents")
    }

    /// Inserts under exactly `digest`; `false` if it was taken.
    fn insert_at(sh: &StoreState, digest: Digest, contents: &Contents, requested: u64) -> bool {
        let mut tries = 0;
        let next = || {
            tries += 1;
            if tries > 1 {
                return Err(Error::NotFound);
            }
            Ok(((), digest))
        };
        match sh.insert_new(next, contents, requested) {
            Ok(()) => true,
            Err(Error::NotFound) => false,
            Err(e) => panic!("insert: {e}"),
        }
    }

    fn now_ms(clock: &ManualClock) -> u64 {
        crate::clock::duration_ms(
            clock
                .now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    #[test]
    fn insert_new_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.state;
        let d = Digest([7; 32]);
        let far = now_ms(&clock) + 50_000;
        assert!(insert_at(
            sh,
            d,
            &contents(&store, None, &[("a", b"1")]),
            far
        ));
        assert!(!insert_at(
            sh,
            d,
            &contents(&store, None, &[("a", b"2")]),
            far
        ));
        let entry = sh.live_entry(&d).expect("read").expect("live");
        assert_eq!(entry.data.get("a").map(|b| b.as_slice()), Some(&b"1"[..]));
    }

    #[test]
    fn requested_expiry_is_capped_by_idle_and_honoured_below_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.state;
        let (short, long) = (Digest([1; 32]), Digest([2; 32]));
        let now = now_ms(&clock);
        insert_at(sh, short, &contents(&store, None, &[]), now + 10_000);
        insert_at(sh, long, &contents(&store, None, &[]), now + 10_000_000);
        clock.advance(Duration::from_secs(11));
        assert!(sh.live_entry(&short).expect("read").is_none());
        let entry = sh.live_entry(&long).expect("read").expect("live");
        assert_eq!(
            crate::expiry::live_until(&sh.config, &entry.header),
            now + 100_000
        );
    }

    #[test]
    fn save_of_a_destroyed_session_does_not_bring_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.state;
        let d = Digest([3; 32]);
        let far = now_ms(&clock) + 50_000;
        insert_at(sh, d, &contents(&store, Some("al"), &[]), far);
        assert!(sh.destroy_durably(&d).expect("destroy"));
        let saved = sh.save_until(&d, contents(&store, Some("al"), &[("x", b"1")]), far);
        assert_eq!(saved.expect("save"), Saved::Gone);
        assert!(sh.live_entry(&d).expect("read").is_none());
        assert!(store.sessions_of("al").expect("list").is_empty());
    }

    #[test]
    fn unchanged_save_with_a_small_expiry_move_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.state;
        let d = Digest([4; 32]);
        let ttl = 50_000;
        insert_at(
            sh,
            d,
            &contents(&store, None, &[("k", b"v")]),
            now_ms(&clock) + ttl,
        );
        clock.advance(Duration::from_millis(100));
        let same = sh.save_until(
            &d,
            contents(&store, None, &[("k", b"v")]),
            now_ms(&clock) + ttl,
        );
        assert_eq!(same.expect("save"), Saved::Unchanged);
        let changed = sh.save_until(
            &d,
            contents(&store, None, &[("k", b"w")]),
            now_ms(&clock) + ttl,
        );
        assert_eq!(changed.expect("save"), Saved::Written);
        // A short TTL still moves on: 1/20 of the 50 s left is 2.5 s.
        clock.advance(Duration::from_secs(3));
        let moved = sh.save_until(
            &d,
            contents(&store, None, &[("k", b"w")]),
            now_ms(&clock) + ttl,
        );
        assert_eq!(moved.expect("save"), Saved::Written);
    }

    #[test]
    fn touch_until_extends_a_short_ttl_and_reports_dead_sessions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.state;
        let d = Digest([5; 32]);
        insert_at(sh, d, &contents(&store, None, &[]), now_ms(&clock) + 2_000);
        for _ in 0..5 {
            clock.advance(Duration::from_millis(1_500));
            assert!(sh.touch_until(&d, now_ms(&clock) + 2_000).expect("touch"));
        }
        clock.advance(Duration::from_millis(2_001));
        assert!(!sh.touch_until(&d, now_ms(&clock) + 2_000).expect("touch"));
        assert!(!sh.touch_until(&Digest([6; 32]), u64::MAX).expect("touch"));
    }

    #[test]
    fn destroy_user_except_keeps_one_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let sh = &store.state;
        let far = now_ms(&clock) + 50_000;
        for b in 10..13 {
            assert!(insert_at(
                sh,
                Digest([b; 32]),
                &contents(&store, Some("bo"), &[]),
                far
            ));
        }
        let keep = Digest([11; 32]).handle();
        assert_eq!(
            sh.destroy_user_except("bo", Some(keep)).expect("destroy"),
            2
        );
        let left = store.sessions_of("bo").expect("list");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].handle, keep);
    }
}
