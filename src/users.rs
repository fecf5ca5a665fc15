//! The per-user index: list a user's sessions, revoke them, cap how many they have.

use std::time::SystemTime;

use crate::clock::from_ms;
use crate::codec::{self, Header};
use crate::error::Result;
use crate::events::DestroyReason;
use crate::expiry;
use crate::id::{Digest, SessionHandle, SessionId};
use crate::shared::Shared;
use crate::stats::Counters;
use crate::store::Store;

/// What [`Store::sessions_of`] tells about one live session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session's handle (for [`Store::destroy_by_handle`]).
    pub handle: SessionHandle,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it was last saved or touched.
    pub last_seen: SystemTime,
    /// When it expires unless used again.
    pub expires_at: SystemTime,
}

impl Shared {
    /// The live sessions of `user`, read through the `users` index. Entries that no
    /// longer match a record of this user are removed on the way.
    pub(crate) fn user_sessions(&self, user: &str) -> Result<Vec<(Digest, Header)>> {
        let mut live = Vec::new();
        let now = self.now();
        for item in self.users.scan_prefix(codec::user_prefix(user)) {
            let (key, _) = item?;
            let Some((_, digest)) = codec::parse_user_key(&key) else {
                self.users.remove(&key)?;
                Counters::add(&self.counters.stale_index_entries_removed, 1);
                continue;
            };
            let _guard = self.lock(&digest);
            let found = self
                .raw_locked(&digest)?
                .filter(|(bytes, _)| codec::parse_user_only(bytes).ok().flatten() == Some(user));
            match found {
                Some((_, header)) if expiry::is_live(&self.config, &header, now) => {
                    live.push((digest, header));
                }
                Some(_) => {} // expired: the cleanup removes record and entry together
                None => {
                    self.users.remove(&key)?;
                    Counters::add(&self.counters.stale_index_entries_removed, 1);
                }
            }
        }
        Ok(live)
    }

    /// Destroys every live session of `user` but the one with handle `keep`, then
    /// flushes. Returns how many live sessions were destroyed.
    pub(crate) fn destroy_user_except(
        &self,
        user: &str,
        keep: Option<SessionHandle>,
    ) -> Result<usize> {
        let mut destroyed = 0;
        for (digest, _) in self.user_sessions(user)? {
            if Some(digest.handle()) == keep {
                continue;
            }
            if self.destroy_digest(&digest, DestroyReason::UserRevoked)? == Some(true) {
                destroyed += 1;
            }
        }
        self.db.flush()?;
        Ok(destroyed)
    }

    /// Destroys `user`'s oldest sessions until they have at most the configured maximum,
    /// never the session `keep`.
    pub(crate) fn enforce_user_limit(&self, user: &str, keep: &Digest) -> Result<()> {
        let Some(max) = self.config.max_sessions_per_user else {
            return Ok(());
        };
        let mut others: Vec<_> = self
            .user_sessions(user)?
            .into_iter()
            .filter(|(d, _)| d != keep)
            .collect();
        if others.len() < max {
            return Ok(());
        }
        others.sort_by_key(|(d, h)| (h.created_at, *d));
        let excess = others.len() + 1 - max;
        for (digest, _) in others.into_iter().take(excess) {
            self.destroy_digest(&digest, DestroyReason::Evicted)?;
        }
        self.db.flush()?;
        Ok(())
    }
}

impl Store {
    /// The live sessions of `user`, oldest first. Each comes with its handle, never its
    /// token, so the list is safe to show in a "your devices" page.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), sessile::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessile::Store::open(dir.path().join("sessions"))?;
    /// let mut s = store.create()?;
    /// s.set_user(Some("alice"));
    /// store.save(&s)?;
    /// let devices = store.sessions_of("alice")?;
    /// assert_eq!(devices.len(), 1);
    /// assert_eq!(devices[0].handle, s.handle());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Storage`](crate::Error::Storage) on a storage failure.
    pub fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let mut list = self.shared.user_sessions(user)?;
        list.sort_by_key(|(d, h)| (h.created_at, *d));
        Ok(list
            .into_iter()
            .map(|(digest, h)| SessionInfo {
                handle: digest.handle(),
                created_at: from_ms(h.created_at),
                last_seen: from_ms(h.last_seen),
                expires_at: from_ms(h.expires_at),
            })
            .collect())
    }

    /// Destroys every live session of `user` except `except` ("log out my other devices"),
    /// or all of them with `None` ("log out everywhere"). Returns how many live sessions
    /// were destroyed. Flushed to disk before it returns.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`](crate::Error::Storage) on a storage failure.
    pub fn destroy_user(&self, user: &str, except: Option<&SessionId>) -> Result<usize> {
        self.shared
            .destroy_user_except(user, except.map(SessionId::handle))
    }

    /// Destroys the session with this handle ("revoke this device"). Returns whether a
    /// live session was destroyed. Flushed to disk before it returns.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`](crate::Error::Storage) on a storage failure.
    pub fn destroy_by_handle(&self, handle: &SessionHandle) -> Result<bool> {
        let found = self
            .shared
            .sessions
            .scan_prefix(handle.as_bytes())
            .keys()
            .next();
        let Some(key) = found.transpose()? else {
            return Ok(false);
        };
        let Some(digest) = Digest::from_slice(&key) else {
            return Ok(false);
        };
        let live = self.shared.destroy_digest(&digest, DestroyReason::Handle)?;
        self.shared.db.flush()?;
        Ok(live == Some(true))
    }
}
