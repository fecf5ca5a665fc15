//! Taking sessions away: destroy one, revoke all of a user's, and the per-user cap.
//!
//! Revoke-all and the cap list a user's sessions and then delete some. They hold that
//! user's lock from the listing to the last delete, and every operation that moves a
//! session out of the user's set while it lives on (a regeneration, a save giving it to
//! someone else) needs the same lock, so the listing stays true while they act on it.
//! Each delete re-checks, under the session's stripe lock, that the record still belongs
//! to the user and is live. Sessions *joining* the set meanwhile are new logins; the cap
//! they trigger runs after, under the same lock.
//!
//! On Redis, other processes write too and hold none of these locks: revoke-all and the
//! cap are each one script there, listing and deleting in one atomic step on the server
//! (the backend's `revoke_user` and `cap_user`).
//!
//! A framework rotating a session's ID (tower's `cycle_id`, actix's `renew`) deletes the
//! old record and creates the new one in two steps of its own, and a revoke-all landing
//! between them finds nothing to delete. So revoke-all first leaves a mark, when the
//! user's sessions were revoked (and which one was kept), and the create of a rotated
//! session that belonged to the user before checks it: a session last written at or
//! before the mark was revoked, and is not created again ([`Engine::revoked`]). A
//! destroy of a session with a user (a logout, by handle, the per-user cap, and each
//! session a revoke-all deletes) marks it ended, until its expiry (and a margin for the
//! servers' clocks), which the same check reads, following the links a rotation leaves
//! from a session to the one it became (two requests may rotate one session one after
//! the other). Only the framework's own delete (tower's and actix's `delete`, a logout or
//! the first step of a rotation, which cannot be told apart) leaves no mark.

use crate::backend::Swap;
use crate::engine::Engine;
use crate::engine::read::Via;
use crate::engine::write::{Step, retrying};
use crate::error::Result;
use crate::events::{DestroyReason, Event};
use crate::expiry;
use crate::id::{Digest, SessionHandle, SessionId};
use crate::record::StoredRecord;

/// How many sessions of one lineage [`Engine::ended_since_rotated`] follows.
#[cfg_attr(
    not(any(feature = "tower", feature = "tower-014", feature = "actix")),
    allow(dead_code, reason = "only the adapters rotate IDs")
)]
const MAX_LINKS: usize = 16;

/// What a destroy found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Destroyed {
    /// A live session was deleted.
    Live,
    /// An expired session (not yet purged) was deleted.
    Expired,
    /// There was no record.
    Absent,
    /// The record did not meet the caller's condition and was kept.
    Kept,
}

impl Engine {
    /// Destroys the session `id` (a logout): forgets its token, deletes the record and
    /// flushes. Returns whether a live session was destroyed.
    pub(crate) fn destroy(&self, id: &SessionId) -> Result<bool> {
        let digest = self.digest_of(id);
        self.tokens.forgetting(&id.words(), || {
            self.destroy_durably(&digest, DestroyReason::Destroy)
        })
    }

    /// Deletes the record of `digest` and flushes, so a crash cannot bring it back (a
    /// logout), marking it ended if it had a user (see the module docs). Returns whether
    /// a live session was destroyed.
    pub(crate) fn destroy_durably(&self, digest: &Digest, reason: DestroyReason) -> Result<bool> {
        let destroyed = self.destroy_where(digest, reason, true, |_, _| true)?;
        self.backend.flush()?;
        Ok(destroyed == Destroyed::Live)
    }

    /// A framework's own delete (tower-sessions' and actix-session's `delete`): a logout,
    /// or the first step of an ID rotation, which the store cannot tell apart. So it
    /// leaves no end mark: the rotation's create must go on. Flushed; returns whether a
    /// live session was destroyed.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters delete for a framework")
    )]
    pub(crate) fn framework_delete(&self, digest: &Digest) -> Result<bool> {
        #[cfg(any(feature = "tower", feature = "tower-014"))]
        self.expect(digest, None);
        let destroyed = self.destroy_where(digest, DestroyReason::Destroy, false, |_, _| true)?;
        self.backend.flush()?;
        Ok(destroyed == Destroyed::Live)
    }

    /// Deletes the record of `digest` if `condition(record, now)` holds when checked under
    /// its stripe lock, first marking it ended if it has a user and `marked` says so (see
    /// the module docs). Emits `Destroyed` for what it deleted. Does not flush.
    pub(super) fn destroy_where(
        &self,
        digest: &Digest,
        reason: DestroyReason,
        marked: bool,
        condition: impl Fn(&StoredRecord, u64) -> bool,
    ) -> Result<Destroyed> {
        let (outcome, user) = retrying(|| {
            let held = self.locks.stripe(digest)?;
            let Some(old) = self.record(digest, Via::Locked(&held))? else {
                return Ok(Step::Done((Destroyed::Absent, None)));
            };
            let now = self.now();
            if !condition(&old, now) {
                return Ok(Step::Done((Destroyed::Kept, None)));
            }
            if marked && old.user.is_some() {
                // A framework rotating this session's ID must not store it again (see the
                // module docs). Marked before the delete, until the session would have
                // expired.
                self.backend
                    .mark_ended(&digest.handle(), old.header.expires_at)?;
            }
            if self.delete_record(digest, &old, &held)? == Swap::Conflict {
                return Ok(Step::Retry);
            }
            let outcome = if expiry::is_live(&self.config, &old.header, now) {
                Destroyed::Live
            } else {
                Destroyed::Expired
            };
            Ok(Step::Done((outcome, old.user.clone())))
        })?;
        if matches!(outcome, Destroyed::Live | Destroyed::Expired) {
            self.events.emit(&self.counters, || Event::Destroyed {
                handle: digest.handle(),
                user,
                reason,
            });
        }
        Ok(outcome)
    }

    /// Whether `record` is live at `now` and belongs to `user`.
    fn live_for(&self, record: &StoredRecord, user: &str, now: u64) -> bool {
        record.user.as_deref() == Some(user) && expiry::is_live(&self.config, &record.header, now)
    }

    /// Whether the session with handle `handle` of `user`, last written at `last_seen`
    /// and then due to expire at `expires_at`, was revoked since (see the module docs):
    /// by a revoke-all of the user, by a revocation of that session (by handle, the
    /// per-user cap), or it has expired meanwhile.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters rotate IDs")
    )]
    pub(crate) fn revoked(
        &self,
        user: &str,
        last_seen: u64,
        expires_at: u64,
        handle: &SessionHandle,
    ) -> Result<bool> {
        if expires_at <= self.now() || self.ended_since_rotated(handle)? {
            return Ok(true);
        }
        Ok(self
            .backend
            .revocation(user)?
            .is_some_and(|mark| last_seen <= mark.at && mark.kept.as_ref() != Some(handle)))
    }

    /// Destroys every live session of `user` but the one with handle `except`, then
    /// flushes. Returns how many live sessions were destroyed.
    pub(crate) fn destroy_user(&self, user: &str, except: Option<SessionHandle>) -> Result<usize> {
        self.locks.refuse_inside_update()?;
        // The mark first: a rotation that checks it after this finds it, and one that
        // created its session before is deleted below. Stamped again once the deletes are
        // done: a session written meanwhile (after the first stamp) and deleted by them
        // was revoked too.
        self.mark_revoked(user, except.as_ref())?;
        let destroyed = self.revoke_all(user, except)?;
        self.mark_revoked(user, except.as_ref())?;
        self.backend.flush()?;
        Ok(destroyed)
    }

    /// Whether the session with handle `handle`, or one a framework rotated it into (and
    /// so on, a few links deep), carries an end mark: a request that loaded it before
    /// another rotated it must not bring back what was revoked since.
    #[cfg_attr(
        not(any(feature = "tower", feature = "tower-014", feature = "actix")),
        allow(dead_code, reason = "only the adapters rotate IDs")
    )]
    fn ended_since_rotated(&self, handle: &SessionHandle) -> Result<bool> {
        let mut next = vec![*handle];
        let mut seen: Vec<SessionHandle> = Vec::new();
        while let Some(h) = next.pop() {
            if seen.contains(&h) || seen.len() == MAX_LINKS {
                continue;
            }
            if self.backend.is_ended(&h)? {
                return Ok(true);
            }
            next.extend(self.backend.rotated_into(&h)?);
            seen.push(h);
        }
        Ok(false)
    }

    /// Stamps `user`'s revocation mark with now (never moving it back) and the kept
    /// session.
    fn mark_revoked(&self, user: &str, kept: Option<&SessionHandle>) -> Result<()> {
        self.backend.raise_revocation(user, self.now(), kept)
    }

    /// Marks the session with handle `handle` ended although no record of it was found
    /// to delete: a framework may have deleted it a moment ago to give it a new ID (see
    /// the module docs), and its create must not store it again. Any expiry a request
    /// can have loaded is within the idle ceiling from now.
    pub(crate) fn mark_absent_ended(&self, handle: &SessionHandle) -> Result<()> {
        self.locks.refuse_inside_update()?;
        let until = self.now().saturating_add(self.config.max_idle_ms());
        self.backend.mark_ended(handle, until)
    }

    /// Deletes every live session of `user` but `except` (see [`Self::destroy_user`]). Does
    /// not flush.
    fn revoke_all(&self, user: &str, except: Option<SessionHandle>) -> Result<usize> {
        if let Some(revoked) = self
            .backend
            .revoke_user(user, except.as_ref(), self.now())?
        {
            for digest in &revoked {
                self.events.emit(&self.counters, || Event::Destroyed {
                    handle: digest.handle(),
                    user: Some(user.to_owned()),
                    reason: DestroyReason::UserRevoked,
                });
            }
            return Ok(revoked.len());
        }
        let destroyed = {
            let _user = self.locks.user(user)?;
            let mut destroyed = 0;
            for (digest, _) in self.user_sessions(user)? {
                if Some(digest.handle()) == except {
                    continue;
                }
                let outcome =
                    self.destroy_where(&digest, DestroyReason::UserRevoked, true, |e, now| {
                        self.live_for(e, user, now)
                    })?;
                if outcome == Destroyed::Live {
                    destroyed += 1;
                }
            }
            destroyed
        };
        Ok(destroyed)
    }

    /// Destroys `user`'s oldest sessions (by creation time) until they have at most the
    /// configured maximum. The session `keep` (the one whose save gave it to `user`) is
    /// never evicted; if it is no longer the user's, the newest others are kept.
    pub(super) fn enforce_user_limit(&self, user: &str, keep: &Digest) -> Result<()> {
        let Some(max) = self.config.max_sessions_per_user else {
            return Ok(());
        };
        self.locks.refuse_inside_update()?;
        if let Some(evicted) = self.backend.cap_user(user, max, keep, self.now())? {
            for digest in evicted {
                self.events.emit(&self.counters, || Event::Destroyed {
                    handle: digest.handle(),
                    user: Some(user.to_owned()),
                    reason: DestroyReason::Evicted,
                });
            }
            return Ok(());
        }
        let evicted = {
            let _user = self.locks.user(user)?;
            let now = self.now();
            let keep_counts = self
                .record(keep, Via::Peek)?
                .is_some_and(|e| self.live_for(&e, user, now));
            let mut others: Vec<_> = self
                .user_sessions(user)?
                .into_iter()
                .filter(|(d, _)| d != keep)
                .collect();
            let room = max - usize::from(keep_counts);
            if others.len() <= room {
                return Ok(());
            }
            others.sort_by_key(|(d, h)| (h.created_at, *d));
            let excess = others.len() - room;
            for (digest, _) in others.iter().take(excess) {
                self.destroy_where(digest, DestroyReason::Evicted, true, |e, now| {
                    self.live_for(e, user, now)
                })?;
            }
            excess
        };
        if evicted > 0 {
            self.backend.flush()?;
        }
        Ok(())
    }
}
