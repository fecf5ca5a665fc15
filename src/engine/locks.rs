//! The locks that order writes: one per digest stripe, one per user stripe, and the rule
//! that a thread running an [`update`](crate::Store::update) closure takes neither.
//!
//! Lock order, everywhere: at most one user lock, then at most two stripe locks (two only
//! for a regeneration, taken in stripe order). Nothing waits for a user lock while it holds a
//! stripe lock (it may try one: [`Locks::try_user`]), and nothing waits for a lock while
//! it runs an `update` closure: every blocking acquisition goes through [`Locks::stripe`],
//! [`Locks::stripe_pair`] or [`Locks::user`], which refuse with
//! [`Error::WriteInsideUpdate`] on a thread that is inside an `update` closure of any
//! store (two stores whose closures write to each other would otherwise deadlock).
//! Readers never wait: they use [`Locks::try_stripe`] and fall back to an unlocked read
//! when the stripe is busy.
//!
//! What each lock protects:
//! - a **stripe lock** serializes every write to the records of its digests (and keeps the
//!   read cache in step with them);
//! - a **user lock** is held by whatever moves a session *out of* a user's set while the
//!   session lives on (a regeneration to a new digest, a save that gives it to another user),
//!   and by whatever must see a user's set stand still (revoke-all, the per-user cap).

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

use parking_lot::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::id::Digest;

const STRIPES: usize = 1024;
const USER_STRIPES: usize = 256;

thread_local! {
    /// How many `update` closures (of any store) this thread is running, nested.
    static IN_UPDATE: Cell<usize> = const { Cell::new(0) };
    /// Set while an adapter runs a write in place on an async worker: locks are then only
    /// tried, never waited for (see [`without_waiting`]).
    static IN_PLACE: Cell<bool> = const { Cell::new(false) };
    /// Set when a lock was busy during [`without_waiting`].
    static WOULD_WAIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every blocking acquisition of a stripe or user lock turned into a try: a
/// busy lock makes the acquisition fail (with the internal `Error::WouldWait`) instead of waiting.
/// Returns `None` if that happened, so the caller can run the work again where waiting is
/// allowed (the adapters then move it to the blocking pool). A write takes its locks
/// before it writes, so a run that gave up wrote nothing; a write that would apply the
/// per-user cap (whose locks come after the write) gives up before writing
/// ([`give_up_if_in_place`]). Other waits (sled's own, the event subscribers' list) stay.
#[cfg_attr(
    not(any(feature = "tower", feature = "tower-014", feature = "actix")),
    allow(dead_code, reason = "only the adapters run writes in place")
)]
pub(crate) fn without_waiting<T>(f: impl FnOnce() -> T) -> Option<T> {
    debug_assert!(!IN_PLACE.with(Cell::get), "without_waiting does not nest");
    /// Resets the flags when `f` returns or unwinds.
    struct InPlace;
    impl Drop for InPlace {
        fn drop(&mut self) {
            IN_PLACE.with(|p| p.set(false));
        }
    }
    WOULD_WAIT.with(|w| w.set(false));
    let result = {
        let _in_place = InPlace;
        IN_PLACE.with(|p| p.set(true));
        f()
    };
    let waited = WOULD_WAIT.with(|w| w.replace(false));
    (!waited).then_some(result)
}

/// Every lock of one open store.
pub(super) struct Locks {
    stripes: Box<[Mutex<()>]>,
    users: Box<[Mutex<()>]>,
    user_hasher: RandomState,
}

/// A held stripe lock.
pub(super) type StripeGuard<'a> = MutexGuard<'a, ()>;

/// A held user lock.
pub(super) type UserGuard<'a> = MutexGuard<'a, ()>;

impl Locks {
    pub(super) fn new() -> Locks {
        Locks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            users: (0..USER_STRIPES).map(|_| Mutex::new(())).collect(),
            user_hasher: RandomState::new(),
        }
    }

    /// How many stripes there are.
    pub(super) const STRIPES: usize = STRIPES;

    /// The stripe of `digest`, below [`Locks::STRIPES`].
    pub(super) fn stripe_of(digest: &Digest) -> usize {
        usize::from(u16::from_le_bytes([digest.0[0], digest.0[1]])) % STRIPES
    }

    /// Waits for the lock that serializes writes to `digest`'s record.
    ///
    /// # Errors
    ///
    /// [`Error::WriteInsideUpdate`] on a thread running an `update` closure (of any
    /// store); the internal `Error::WouldWait` if the lock is busy inside [`without_waiting`].
    pub(super) fn stripe(&self, digest: &Digest) -> Result<StripeGuard<'_>> {
        self.refuse_inside_update()?;
        acquire(&self.stripes[Self::stripe_of(digest)])
    }

    /// The stripe lock of `digest` if it is free right now. Never waits, so readers (also
    /// inside `update` closures) cannot deadlock.
    pub(super) fn try_stripe(&self, digest: &Digest) -> Option<StripeGuard<'_>> {
        self.stripes[Self::stripe_of(digest)].try_lock()
    }

    /// Locks two digests in stripe order (no deadlock), once if they share a stripe.
    /// Returns `a`'s guard, and `b`'s if it is another stripe.
    ///
    /// # Errors
    ///
    /// [`Error::WriteInsideUpdate`] as for [`stripe`](Self::stripe).
    pub(super) fn stripe_pair(
        &self,
        a: &Digest,
        b: &Digest,
    ) -> Result<(StripeGuard<'_>, Option<StripeGuard<'_>>)> {
        self.refuse_inside_update()?;
        let (sa, sb) = (Self::stripe_of(a), Self::stripe_of(b));
        if sa == sb {
            return Ok((acquire(&self.stripes[sa])?, None));
        }
        if sa < sb {
            let first = acquire(&self.stripes[sa])?;
            Ok((first, Some(acquire(&self.stripes[sb])?)))
        } else {
            let first = acquire(&self.stripes[sb])?;
            Ok((acquire(&self.stripes[sa])?, Some(first)))
        }
    }

    /// Waits for the lock of `user`'s set of sessions. Take it before any stripe lock, and
    /// hold no other user lock.
    ///
    /// # Errors
    ///
    /// [`Error::WriteInsideUpdate`] as for [`stripe`](Self::stripe).
    pub(super) fn user(&self, user: &str) -> Result<UserGuard<'_>> {
        self.refuse_inside_update()?;
        acquire(&self.users[self.user_stripe(user)])
    }

    /// The lock of `user`'s set if it is free right now: the one way to get a user lock
    /// while holding a stripe lock, since it never waits.
    pub(super) fn try_user(&self, user: &str) -> Option<UserGuard<'_>> {
        self.users[self.user_stripe(user)].try_lock()
    }

    fn user_stripe(&self, user: &str) -> usize {
        usize::try_from(self.user_hasher.hash_one(user) % USER_STRIPES as u64).unwrap_or_default()
    }

    /// Marks this thread as running an `update` closure until the returned guard is
    /// dropped (also when the closure panics).
    pub(super) fn enter_update(&self) -> InUpdate {
        IN_UPDATE.with(|depth| depth.set(depth.get() + 1));
        InUpdate(())
    }

    /// # Errors
    ///
    /// [`Error::WriteInsideUpdate`] on a thread running an `update` closure.
    pub(super) fn refuse_inside_update(&self) -> Result<()> {
        if IN_UPDATE.with(Cell::get) > 0 {
            return Err(Error::WriteInsideUpdate);
        }
        Ok(())
    }
}

/// Inside [`without_waiting`], gives up (as a busy lock would) before a write that would
/// have to wait later: one that applies the per-user cap after it lands. Outside, `Ok`.
///
/// # Errors
///
/// The internal `Error::WouldWait` inside [`without_waiting`].
pub(super) fn give_up_if_in_place() -> Result<()> {
    if IN_PLACE.with(Cell::get) {
        WOULD_WAIT.with(|w| w.set(true));
        return Err(Error::WouldWait);
    }
    Ok(())
}

/// Waits for `lock`, or only tries it inside [`without_waiting`].
fn acquire(lock: &Mutex<()>) -> Result<MutexGuard<'_, ()>> {
    if IN_PLACE.with(Cell::get) {
        return lock.try_lock().ok_or_else(|| {
            WOULD_WAIT.with(|w| w.set(true));
            Error::WouldWait
        });
    }
    Ok(lock.lock())
}

/// Dropped when an `update` closure returns or unwinds.
pub(super) struct InUpdate(());

impl Drop for InUpdate {
    fn drop(&mut self) {
        IN_UPDATE.with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_locks_are_refused_inside_an_update_of_any_store() {
        let (a, b) = (Locks::new(), Locks::new());
        let d = Digest([1; 32]);
        {
            let _inside = a.enter_update();
            assert!(matches!(a.stripe(&d), Err(Error::WriteInsideUpdate)));
            assert!(matches!(a.user("u"), Err(Error::WriteInsideUpdate)));
            assert!(matches!(b.stripe(&d), Err(Error::WriteInsideUpdate)));
            assert!(a.try_stripe(&d).is_some());
        }
        assert!(a.stripe(&d).is_ok());
        assert!(b.stripe(&d).is_ok());
    }

    #[test]
    fn without_waiting_a_busy_lock_fails_instead_of_blocking() {
        let locks = Locks::new();
        let d = Digest([3; 32]);
        let held = locks.stripe(&d).expect("lock");
        let tried = std::thread::scope(|s| {
            s.spawn(|| without_waiting(|| locks.stripe(&d).map(drop)))
                .join()
                .expect("thread")
        });
        assert!(
            tried.is_none(),
            "the busy stripe was reported, not waited for"
        );
        drop(held);
        assert!(matches!(
            without_waiting(|| locks.stripe(&d).map(drop)),
            Some(Ok(()))
        ));
        assert!(locks.stripe(&d).is_ok(), "outside, locks wait as usual");
    }

    #[test]
    fn a_pair_returns_each_digests_guard() {
        let locks = Locks::new();
        let (lo, hi) = (Digest([1; 32]), Digest([9; 32]));
        for (a, b) in [(lo, hi), (hi, lo)] {
            let (ga, gb) = locks.stripe_pair(&a, &b).expect("lock");
            assert!(gb.is_some());
            drop(ga);
            assert!(locks.try_stripe(&a).is_some(), "the first guard is a's");
            assert!(locks.try_stripe(&b).is_none());
        }
    }

    #[test]
    fn readers_never_wait_for_a_held_stripe() {
        let locks = Locks::new();
        let d = Digest([2; 32]);
        let held = locks.stripe(&d).expect("lock");
        assert!(locks.try_stripe(&d).is_none());
        drop(held);
        assert!(locks.try_stripe(&d).is_some());
    }
}
