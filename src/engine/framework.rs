//! What the framework adapters ask of the engine: records stored under a digest the
//! adapter chooses, saves that report whether anything was written, and the frameworks'
//! lifetimes mapped onto a session's own [`Lifetime`].
//!
//! Frameworks bring their own idea of a session's lifetime (tower-sessions' `expiry_date`,
//! actix-session's TTL). It becomes the session's own idle timeout, within the store's
//! ceilings ([`Config::max_idle_timeout`](crate::Config::max_idle_timeout),
//! [`Config::max_absolute_timeout`](crate::Config::max_absolute_timeout)), so a "remember
//! me" session outlives the store's default idle timeout and a short one dies early.

use std::time::Duration;

#[cfg(any(feature = "tower", feature = "tower-014"))]
use crate::backend::Swap;
use crate::changes::Fingerprints;
use crate::clock::duration_ms;
use crate::engine::Engine;
#[cfg(any(feature = "tower", feature = "tower-014"))]
use crate::engine::commit::Plan;
use crate::engine::commit::{Change, Committed, Contents};
use crate::error::Result;
use crate::events::DestroyReason;
use crate::expiry::Lifetime;
use crate::id::{Digest, SessionHandle};
use crate::record::values::ValueMap;

/// The session a framework rotates to a new ID, as the request loaded it.
#[derive(Clone, Copy)]
pub(crate) struct Rotated {
    pub(crate) handle: SessionHandle,
    pub(crate) last_seen: u64,
    pub(crate) expires_at: u64,
}

impl Engine {
    /// The lifetime a framework asks for when it wants a session to stay `idle` after each
    /// write (tower-sessions' `expiry_date - now`, actix-session's TTL): the session's own
    /// idle timeout, cut to [`Config::max_idle_timeout`](crate::Config::max_idle_timeout).
    /// The frameworks have no absolute timeout; sessile keeps one: the store's, or the
    /// framework's lifetime if that is longer (cut to
    /// [`Config::max_absolute_timeout`](crate::Config::max_absolute_timeout)). So a
    /// 30-day "remember me" is not cut by the store's default 12 hours, and still ends
    /// 30 days after the login however active it is.
    pub(crate) fn framework_lifetime(&self, idle: Duration) -> Lifetime {
        let lifetime = Lifetime::default().with_idle(idle);
        match self.config.absolute_ms {
            Some(absolute) if duration_ms(idle) > absolute => lifetime.with_absolute(idle),
            _ => lifetime,
        }
    }

    /// An adapter's user, values and lifetime, encoded and checked against the limits.
    pub(crate) fn contents(
        &self,
        user: Option<String>,
        data: ValueMap,
        lifetime: Lifetime,
    ) -> Result<Contents> {
        // The frameworks' expiry reaches from the save (see `framework_lifetime`).
        Ok(Contents::new(self, user, data.into(), lifetime)?.anchored())
    }

    /// Whether writing `contents` over `digest`'s record (or as a new one, `None`) may
    /// apply the per-user cap, which destroys sessions and flushes: it gives the session
    /// to a user other than the one it loaded (or, without that, the cached record's),
    /// with a cap configured. A hint only: a write made without waiting that turns out to
    /// assign a user gives up instead.
    pub(crate) fn may_apply_cap(&self, digest: Option<&Digest>, contents: &Contents) -> bool {
        let Some(user) = contents
            .user()
            .filter(|_| self.config.max_sessions_per_user.is_some())
        else {
            return false;
        };
        if contents.keeps_user() {
            // Changes to a loaded session that leave its user as loaded never assign one
            // (see `Contents::user_over`), cached record or not.
            return false;
        }
        let keeps_user = digest
            .and_then(|d| self.cache.peek(d))
            .is_some_and(|e| e.user.as_deref() == Some(user));
        !keeps_user
    }

    /// Stores a new record under the first free key `next_key` gives. Returns the key.
    ///
    /// # Errors
    ///
    /// [`Error::TokenCollision`] if every key tried was taken; storage errors.
    pub(crate) fn insert_new<K>(
        &self,
        next_key: impl FnMut() -> Result<(K, Digest)>,
        contents: &Contents,
    ) -> Result<K> {
        let (key, _, _) = self.insert_fresh(next_key, contents)?;
        Ok(key)
    }

    /// The adapters' fingerprints, keyed with the store's secret (made and stored by the
    /// first store of it that needs them; a damaged one is replaced).
    ///
    /// # Errors
    ///
    /// A storage failure, or [`Error::Entropy`](crate::Error::Entropy).
    pub(crate) fn fingerprints(&self) -> Result<Fingerprints> {
        if let Some(f) = self.fingerprints.get() {
            return Ok(*f);
        }
        let secret = self
            .backend
            .fingerprint_secret(crate::id::random_bytes()?)?;
        Ok(*self.fingerprints.get_or_init(|| Fingerprints::new(secret)))
    }

    /// Stores a rotated session (a framework's new ID for a session that belonged to the
    /// same user, `from`) under the first free key `next_key` gives, unless it was
    /// revoked meanwhile ([`Engine::revoked`]): then nothing is stored and `None`
    /// returned. Checked before the insert and again after it (a revocation that ran in
    /// between, on another server, could not see the new record: it is deleted,
    /// durably), so a revoked login never comes back through a rotation.
    ///
    /// # Errors
    ///
    /// As [`insert_new`](Self::insert_new).
    pub(crate) fn insert_rotated<K>(
        &self,
        next_key: impl FnMut() -> Result<(K, Digest)>,
        contents: &Contents,
        from: &Rotated,
    ) -> Result<Option<K>> {
        let Some(user) = contents.user() else {
            return self.insert_new(next_key, contents).map(Some);
        };
        let revoked = || self.revoked(user, from.last_seen, from.expires_at, &from.handle);
        if revoked()? {
            return Ok(None);
        }
        // The link first: a revocation of the new session, from the moment it exists,
        // also ends a rotation of the old one by a request that loaded it earlier.
        let mut next_key = next_key;
        let linked_keys = || {
            let (key, digest) = next_key()?;
            self.backend
                .link_rotation(&from.handle, &digest.handle(), from.expires_at)?;
            Ok((key, digest))
        };
        let (key, digest, _) = self.insert_fresh(linked_keys, contents)?;
        if revoked()? {
            self.destroy_durably(&digest, DestroyReason::UserRevoked)?;
            return Ok(None);
        }
        Ok(Some(key))
    }

    /// Replaces the values, user and lifetime of the live record of `digest`. A session
    /// that was destroyed or has expired stays gone ([`Committed::ended`]). A save that changes
    /// nothing and moves the expiry by less than the touch granularity writes nothing.
    pub(crate) fn save_contents(&self, digest: &Digest, contents: &Contents) -> Result<Committed> {
        self.commit(digest, &Change::Replace(contents))
    }

    /// [`save_contents`](Self::save_contents) awaited without blocking where the storage
    /// has an async path (Redis on a single server): the change planned onto the version
    /// the adapter last read or wrote (else the stored one, read now) as the locked path
    /// would, and written by compare-and-swap against it, on the multiplexed connection:
    /// one round trip when the guess holds. A guess is trusted for nothing else: any
    /// other outcome is decided on the stored record. `None` (nothing written) for
    /// whatever needs the locked path: no async path, an error, a record written
    /// meanwhile or under an `update` lease (the locked path rebases or waits), a lifetime
    /// that ended (a delete and a flush), a login under the per-user cap, a write that
    /// must flush ([`Durability::EveryWrite`](crate::Durability::EveryWrite)) or upgrade
    /// the format.
    #[cfg(any(feature = "tower", feature = "tower-014"))]
    pub(crate) async fn save_contents_async(
        &self,
        digest: &Digest,
        contents: &Contents,
    ) -> Option<Result<Committed>> {
        if self.config.durability == crate::config::Durability::EveryWrite
            || self.format() < crate::record::codec::STORE_FORMAT
        {
            return None;
        }
        let change = Change::Replace(contents);
        let mut guess = self.expected(digest);
        loop {
            let guessed = guess.is_some();
            let old = match guess.take() {
                Some(old) => old,
                None => match self.read_async(digest).await? {
                    Some(old) => old,
                    None => return Some(Ok(Committed::Gone)),
                },
            };
            let (new, assigned) = match self.plan(&change, &old, self.now()) {
                Ok(Plan::Write { new, assigned }) => (new, assigned),
                // Decided on the stored record, not on a guess.
                _ if guessed => continue,
                Err(e) => return Some(Err(e)),
                Ok(Plan::Gone) => return Some(Ok(Committed::Gone)),
                Ok(Plan::Unchanged) => return Some(Ok(Committed::Unchanged)),
                Ok(Plan::End) => {
                    self.expect(digest, None);
                    return None;
                }
            };
            if assigned.is_some() && self.config.max_sessions_per_user.is_some() {
                self.expect(digest, None);
                return None;
            }
            match self.backend.write_async(digest, &old, &new).await {
                Some(Swap::Done) => {
                    self.expect(digest, Some(&std::sync::Arc::new(new)));
                    return Some(Ok(Committed::Written));
                }
                Some(Swap::Conflict) if guessed => self.expect(digest, None),
                _ => {
                    self.expect(digest, None);
                    return None;
                }
            }
        }
    }

    /// Gives the live record of `digest` the lifetime `lifetime` and moves its expiry,
    /// without rewriting its values. Returns whether the session is live. Writes nothing
    /// when the lifetime is unchanged and the move is smaller than the touch granularity.
    #[cfg_attr(
        not(feature = "actix"),
        allow(dead_code, reason = "only actix touches")
    )]
    pub(crate) fn touch_with(&self, digest: &Digest, lifetime: Lifetime) -> Result<bool> {
        self.touch(digest, Some(lifetime.to_own(&self.config)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Rotated;
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::expiry::Lifetime;
    use crate::id::SessionId;
    use crate::record::values::ValueMap;
    use crate::store::Store;

    fn open(dir: &std::path::Path, clock: &ManualClock) -> Store {
        Config::new(dir.join("s"))
            .purge_thread(false)
            .clock(clock.clock())
            .open()
            .expect("open")
    }

    /// A logged-in session as a framework request loaded it.
    fn loaded(store: &Store, user: &str) -> Rotated {
        let mut s = store.create().expect("create");
        s.set_user(Some(user));
        store.save(&s).expect("save");
        let record = store.engine.live(&s.digest).expect("read").expect("live");
        Rotated {
            handle: s.handle(),
            last_seen: record.header.last_seen,
            expires_at: record.header.expires_at,
        }
    }

    /// A store on a manual clock, in a folder that lives as long as the first value.
    fn opened() -> (tempfile::TempDir, ManualClock, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        (dir, clock, store)
    }

    /// What a framework request saves for a session of ann's.
    fn anns(store: &Store) -> super::Contents {
        store
            .engine
            .contents(Some("ann".into()), ValueMap::new(), Lifetime::default())
            .expect("contents")
    }

    fn fresh() -> crate::error::Result<(SessionId, crate::id::Digest)> {
        let id = SessionId::generate()?;
        let digest = id.digest();
        Ok((id, digest))
    }

    #[test]
    fn a_revoke_between_the_check_and_the_insert_deletes_the_rotated_session() {
        let (_dir, clock, store) = opened();
        let from = loaded(&store, "ann");
        let contents = anns(&store);
        let mut revoked_once = false;
        // The key is drawn after the first check and before the insert: the revoke
        // (another server's, say) lands there.
        let next_key = || {
            if !revoked_once {
                revoked_once = true;
                store.destroy_user("ann", None)?;
            }
            fresh()
        };
        let stored = store
            .engine
            .insert_rotated(next_key, &contents, &from)
            .expect("insert");
        assert!(stored.is_none(), "the rotated session was kept");
        assert!(store.sessions_of("ann").expect("list").is_empty());
        assert_eq!(store.len().expect("len"), 0);

        // A login after the revoke (from an anonymous session) rotates freely.
        let later = {
            clock.advance(Duration::from_millis(5));
            loaded(&store, "ann")
        };
        let stored = store
            .engine
            .insert_rotated(fresh, &contents, &later)
            .expect("insert");
        assert!(stored.is_some());
    }

    #[test]
    fn a_logout_marks_the_session_ended_and_a_frameworks_delete_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let mut s = store.create().expect("create");
        s.set_user(Some("ann"));
        store.save(&s).expect("save");
        assert!(store.destroy(s.id()).expect("destroy"));
        assert!(store.engine.backend.is_ended(&s.handle()).expect("read"));

        let mut t = store.create().expect("create");
        t.set_user(Some("ann"));
        store.save(&t).expect("save");
        assert!(store.engine.framework_delete(&t.digest).expect("delete"));
        assert!(
            !store.engine.backend.is_ended(&t.handle()).expect("read"),
            "a rotation's own delete must let its create go on"
        );
    }

    #[test]
    fn a_revoke_of_what_a_session_was_rotated_into_ends_an_older_rotation_of_it() {
        let (_dir, _clock, store) = opened();
        let from = loaded(&store, "ann");
        let contents = anns(&store);
        // One request rotates the session (the framework deletes it, then creates the new
        // one); the device it became is revoked.
        let (digest, _) = store.engine.records_of(&from.handle).expect("read")[0].clone();
        assert!(store.engine.framework_delete(&digest).expect("delete"));
        let rotated = store
            .engine
            .insert_rotated(fresh, &contents, &from)
            .expect("insert")
            .expect("stored");
        assert!(store.destroy_by_handle(&rotated.handle()).expect("revoke"));
        // A request that loaded the session before the first rotation rotates it too.
        let again = store
            .engine
            .insert_rotated(fresh, &contents, &from)
            .expect("insert");
        assert!(
            again.is_none(),
            "the revoked device came back through a second rotation"
        );
        assert!(store.sessions_of("ann").expect("list").is_empty());
    }

    /// A framework's rotation (its delete of the old ID, then the create) racing a
    /// revoke-all of the user, or a revoke of the device by handle, on threads released
    /// together: whatever the order, a revoke-all leaves nothing of the user's live, and
    /// a revoke by handle that ended the session leaves nothing live either.
    #[test]
    fn rotations_racing_revocations_never_leave_the_revoked_login_live() {
        use std::sync::{Arc, Barrier, mpsc};
        let (_dir, clock, store) = opened();
        for round in 0..60 {
            for by_handle in [false, true] {
                clock.advance(Duration::from_millis(1)); // each login after the last revoke
                let from = loaded(&store, "ann");
                let (digest, _) = store.engine.records_of(&from.handle).expect("read")[0].clone();
                let barrier = Arc::new(Barrier::new(2));
                let (tx, rx) = mpsc::channel();
                let (rotator, start, done) = (store.clone(), Arc::clone(&barrier), tx.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let rotated = rotator
                        .engine
                        .framework_delete(&digest)
                        .and_then(|_| rotator.engine.insert_rotated(fresh, &anns(&rotator), &from));
                    let _ = done.send(rotated.map(|_| None));
                });
                let revoker = store.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let ended = if by_handle {
                        revoker.destroy_by_handle(&from.handle)
                    } else {
                        revoker.destroy_user("ann", None).map(|_| true)
                    };
                    let _ = tx.send(ended.map(Some));
                });
                let mut ended = false;
                for _ in 0..2 {
                    let outcome = rx
                        .recv_timeout(Duration::from_secs(30))
                        .expect("a racing thread hung")
                        .expect("no error");
                    ended |= outcome == Some(true);
                }
                if ended {
                    assert!(
                        store.sessions_of("ann").expect("list").is_empty(),
                        "round {round} (by handle: {by_handle}): the revoked login is live"
                    );
                }
                store.destroy_user("ann", None).expect("reset");
            }
        }
    }

    #[test]
    fn end_marks_last_until_the_session_would_have_expired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let store = open(dir.path(), &clock);
        let from = loaded(&store, "bob");
        assert!(store.destroy_by_handle(&from.handle).expect("revoke"));
        let engine = &store.engine;
        assert!(engine.backend.is_ended(&from.handle).expect("read"));
        store.purge_expired().expect("purge");
        assert!(
            engine.backend.is_ended(&from.handle).expect("read"),
            "kept while it could rotate"
        );
        clock.advance(Duration::from_secs(24 * 3600));
        store.purge_expired().expect("purge");
        assert!(
            !engine.backend.is_ended(&from.handle).expect("read"),
            "pruned"
        );
        // Past its expiry a rotation is refused without the mark.
        assert!(
            engine
                .revoked("bob", from.last_seen, from.expires_at, &from.handle)
                .expect("check")
        );
    }
}
