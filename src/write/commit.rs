//! New records and new versions of live records: create, save, update and touch, with the
//! store's expiry or one an adapter asks for.

use std::sync::Arc;

use crate::codec::{self, Data, Header};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::expiry;
use crate::id::{Digest, SessionId};
use crate::locks::StripeGuard;
use crate::read::Entry;
use crate::state::StoreState;
use crate::write::{ATTEMPTS, Step, Swap};

/// A session's user and values, encoded once (limits checked) before any lock is taken.
#[derive(Clone)]
pub(crate) struct Contents {
    encoded: Vec<u8>,
    user: Option<String>,
    data: Arc<Data>,
}

impl Contents {
    /// # Errors
    ///
    /// [`Error::TooLarge`] or [`Error::EncodeRecord`], from [`StoreState::encode`].
    pub(crate) fn new(
        state: &StoreState,
        user: Option<String>,
        data: Arc<Data>,
    ) -> Result<Contents> {
        Ok(Contents {
            encoded: state.encode(user.as_deref(), &data)?,
            user,
            data,
        })
    }

    /// The user these contents give the session.
    pub(crate) fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub(crate) fn record(&self, header: Header) -> Entry {
        Entry::encoded(
            self.encoded.clone(),
            header,
            self.user.clone(),
            Arc::clone(&self.data),
        )
    }
}

/// What a write to a live record changes.
pub(crate) enum Change {
    /// Only the times: the expiry moves, user and values stay.
    Touch,
    /// User and values are replaced (and the times move).
    Replace(Contents),
}

impl Change {
    /// Whether writing this takes `old` out of its user's set.
    fn moves_out(&self, old: &Entry) -> bool {
        match self {
            Change::Touch => false,
            Change::Replace(c) => old.user.is_some() && old.user != c.user,
        }
    }
}

/// What a commit did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Committed {
    /// A new version was written.
    Written,
    /// Nothing changed enough to be worth a write.
    Unchanged,
    /// The session was destroyed or has expired: nothing was written, it stays gone.
    Gone,
    /// The caller asked for an expiry that has already passed: nothing was written.
    Lapsed,
}

/// What an insert under a fresh key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// The record was stored with this header.
    Written(Header),
    /// The requested expiry has already passed: nothing was written.
    Lapsed,
}

/// Whether a touch needs the locked write path, decided without a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TouchPlan {
    /// The session is absent, expired or undecodable.
    Dead,
    /// Live, and the expiry would move by less than the touch granularity.
    NoWrite,
    /// Live, and the expiry must move: commit a [`Change::Touch`].
    Write,
}

impl StoreState {
    /// Stores a new session under the first free key `next_key` gives (a fresh token
    /// each call). Its expiry is the idle timeout from now, capped by `requested` if
    /// given. Emits `Created` and applies the per-user cap.
    ///
    /// # Errors
    ///
    /// [`Error::TokenCollision`] if [`ATTEMPTS`] keys in a row were taken; errors of
    /// `next_key`; storage errors.
    pub(crate) fn insert_fresh<K>(
        &self,
        mut next_key: impl FnMut() -> Result<(K, Digest)>,
        contents: &Contents,
        requested: Option<u64>,
    ) -> Result<(K, Digest, Inserted)> {
        for _ in 0..ATTEMPTS {
            let (key, digest) = next_key()?;
            if let Some(inserted) = self.insert_if_free(&digest, contents, requested)? {
                return Ok((key, digest, inserted));
            }
        }
        Err(Error::TokenCollision)
    }

    /// Inserts under `digest` unless a record (live or not) is there: `None` if taken.
    fn insert_if_free(
        &self,
        digest: &Digest,
        contents: &Contents,
        requested: Option<u64>,
    ) -> Result<Option<Inserted>> {
        let header = {
            let held = self.locks.stripe(digest)?;
            let now = self.now();
            let header = Header {
                expires_at: expiry::next_expiry(&self.config, now, now, requested),
                last_seen: now,
                created_at: now,
                version: 1,
            };
            if header.expires_at <= now {
                return Ok(Some(Inserted::Lapsed));
            }
            // The compare-and-swap against "absent" is the check that the key is free.
            if self.write_record(digest, None, contents.record(header), &held)? == Swap::Conflict {
                return Ok(None);
            }
            header
        };
        self.events.emit(&self.counters, || Event::Created {
            handle: digest.handle(),
        });
        if let Some(user) = &contents.user {
            self.enforce_user_limit(user, digest)?;
        }
        Ok(Some(Inserted::Written(header)))
    }

    /// Writes `change` as the new version of the live record of `digest`; its expiry is
    /// the idle timeout from now, capped by the absolute timeout and by `requested` if
    /// given. Applies the per-user cap when the write gives the session to a new user.
    pub(crate) fn commit(
        &self,
        digest: &Digest,
        change: &Change,
        requested: Option<u64>,
    ) -> Result<Committed> {
        let (committed, assigned) = self.locked_write(
            digest,
            |old| change.moves_out(old),
            |old, held| self.commit_locked(digest, change, requested, old.map(|e| &**e), held),
        )?;
        if let Some(user) = assigned {
            self.enforce_user_limit(&user, digest)?;
        }
        Ok(committed)
    }

    /// One attempt of a commit, with the stripe lock held and `old` read under it.
    /// Returns what happened and the user the write gave the session to, if new.
    fn commit_locked(
        &self,
        digest: &Digest,
        change: &Change,
        requested: Option<u64>,
        old: Option<&Entry>,
        held: &StripeGuard<'_>,
    ) -> Result<Step<(Committed, Option<String>)>> {
        let gone = Step::Done((Committed::Gone, None));
        let Some(old) = old else { return Ok(gone) };
        let now = self.now();
        if !expiry::is_live(&self.config, &old.header, now) {
            return Ok(gone);
        }
        let expires_at = expiry::next_expiry(&self.config, now, old.header.created_at, requested);
        if expires_at <= now {
            return Ok(Step::Done((Committed::Lapsed, None)));
        }
        let same_contents = match change {
            Change::Touch => true,
            Change::Replace(c) => codec::tail(&old.bytes) == codec::tail(&c.encoded),
        };
        if same_contents
            && expiry::within_granularity(&self.config, now, old.header.expires_at, expires_at)
        {
            return Ok(Step::Done((Committed::Unchanged, None)));
        }
        let header = Header {
            expires_at,
            last_seen: now,
            created_at: old.header.created_at,
            version: old.header.version.wrapping_add(1),
        };
        let new = match change {
            Change::Touch => Entry {
                bytes: codec::with_header(&old.bytes, &header).into(),
                header,
                user: old.user.clone(),
                data: Arc::clone(&old.data),
            },
            Change::Replace(c) => c.record(header),
        };
        let assigned = new.user.clone().filter(|u| Some(u) != old.user.as_ref());
        Ok(match self.write_record(digest, Some(old), new, held)? {
            Swap::Done => Step::Done((Committed::Written, assigned)),
            Swap::Conflict => Step::Retry,
        })
    }

    /// Runs `f` on the live session `id` with its record locked, then commits what `f`
    /// left in the session. `None` if the session is not live (then `f` does not run).
    ///
    /// While `f` runs, this thread holds the session's stripe lock (and, if it has a user,
    /// that user's lock, since `f` may give it to someone else): reads inside `f` work
    /// (they never wait for a lock), writes to the same store fail with
    /// [`Error::WriteInsideUpdate`] instead of waiting.
    pub(crate) fn update_with<R>(
        &self,
        id: &SessionId,
        f: impl FnOnce(&mut crate::Session) -> R,
    ) -> Result<Option<R>> {
        let digest = id.digest();
        let mut f = Some(f);
        let outcome = self.locked_write(
            &digest,
            |old| old.user.is_some(),
            |old, held| {
                let Some(old) =
                    old.filter(|e| expiry::is_live(&self.config, &e.header, self.now()))
                else {
                    return Ok(Step::Done(None));
                };
                // `f` runs once: a retry after it ran would run it twice.
                let f = f.take().ok_or(Error::Contended)?;
                let mut session = self.session(id.clone(), digest, old);
                let result = {
                    let _inside = self.locks.enter_update();
                    f(&mut session)
                };
                let change = Change::Replace(Contents::new(self, session.user, session.data)?);
                match self.commit_locked(&digest, &change, None, Some(old), held)? {
                    Step::Done((Committed::Written | Committed::Unchanged, assigned)) => {
                        Ok(Step::Done(Some((result, assigned))))
                    }
                    // It expired while `f` ran.
                    Step::Done((Committed::Gone | Committed::Lapsed, _)) => Err(Error::NotFound),
                    Step::Retry => Err(Error::Contended),
                }
            },
        )?;
        let Some((result, assigned)) = outcome else {
            return Ok(None);
        };
        if let Some(user) = assigned {
            self.enforce_user_limit(&user, &digest)?;
        }
        Ok(Some(result))
    }

    /// Whether a touch of `digest` to `requested` (or the idle timeout) needs a write.
    /// Reads the cache, or the record without waiting for a lock.
    pub(crate) fn touch_plan(&self, digest: &Digest, requested: Option<u64>) -> Result<TouchPlan> {
        Ok(match self.record(digest)? {
            None => TouchPlan::Dead,
            Some(entry) => self.plan_touch(&entry.header, requested),
        })
    }

    /// [`touch_plan`](Self::touch_plan) from the cache alone (no I/O, for async callers):
    /// `None` if the session is not cached.
    pub(crate) fn touch_plan_cached(
        &self,
        digest: &Digest,
        requested: Option<u64>,
    ) -> Option<TouchPlan> {
        let entry = self.cache.get(digest)?;
        Some(self.plan_touch(&entry.header, requested))
    }

    fn plan_touch(&self, header: &Header, requested: Option<u64>) -> TouchPlan {
        let now = self.now();
        if !expiry::is_live(&self.config, header, now) {
            return TouchPlan::Dead;
        }
        let target = expiry::next_expiry(&self.config, now, header.created_at, requested);
        if target > now && expiry::within_granularity(&self.config, now, header.expires_at, target)
        {
            TouchPlan::NoWrite
        } else {
            TouchPlan::Write
        }
    }
}
