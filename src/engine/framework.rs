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

use crate::clock::duration_ms;
use crate::engine::Engine;
use crate::engine::commit::{Change, Committed, Contents};
use crate::error::Result;
use crate::events::DestroyReason;
use crate::expiry::Lifetime;
use crate::id::{Digest, SessionHandle};
use crate::record::values::ValueMap;

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
    /// to a user other than the cached record's, with a cap configured. A hint only: a
    /// write made without waiting that turns out to assign a user gives up instead.
    pub(crate) fn may_apply_cap(&self, digest: Option<&Digest>, contents: &Contents) -> bool {
        let Some(user) = contents
            .user()
            .filter(|_| self.config.max_sessions_per_user.is_some())
        else {
            return false;
        };
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

    /// Stores a rotated session (a framework's new ID for a session that belonged to the
    /// same user, last written at `last_seen`, under handle `from`) under the first free
    /// key `next_key` gives, unless a revoke-all of the user revoked it meanwhile
    /// ([`Engine::revoked`]): then nothing is stored and `None` returned. Checked before
    /// the insert and again after it (a revoke-all that ran in between, on another
    /// server, could not see the new record: it is deleted, durably), so a revoked login
    /// never comes back through a rotation.
    ///
    /// # Errors
    ///
    /// As [`insert_new`](Self::insert_new).
    pub(crate) fn insert_rotated<K>(
        &self,
        next_key: impl FnMut() -> Result<(K, Digest)>,
        contents: &Contents,
        last_seen: u64,
        from: &SessionHandle,
    ) -> Result<Option<K>> {
        let Some(user) = contents.user() else {
            return self.insert_new(next_key, contents).map(Some);
        };
        if self.revoked(user, last_seen, from)? {
            return Ok(None);
        }
        let (key, digest, _) = self.insert_fresh(next_key, contents)?;
        if self.revoked(user, last_seen, from)? {
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
