//! The per-user index: list a user's sessions, revoke them, cap how many they have.

use std::time::SystemTime;

use crate::clock::from_ms;
use crate::error::Result;
use crate::events::DestroyReason;
use crate::id::{SessionHandle, SessionId};
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
    /// When it expires unless used again (by its stored expiry and the timeouts in force
    /// now).
    pub expires_at: SystemTime,
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
        let state = &self.engine;
        let mut list = state.user_sessions(user)?;
        list.sort_by_key(|(d, h)| (h.created_at, *d));
        Ok(list
            .into_iter()
            .map(|(digest, h)| SessionInfo {
                handle: digest.handle(),
                created_at: from_ms(h.created_at),
                last_seen: from_ms(h.last_seen),
                expires_at: from_ms(state.live_until(&h)),
            })
            .collect())
    }

    /// Destroys every live session of `user` except `except` ("log out my other devices"),
    /// or all of them with `None` ("log out everywhere"). Returns how many live sessions
    /// were destroyed. Flushed to disk before it returns.
    ///
    /// Once this returns, no session that was live with this user when it was called is
    /// live under any token: a concurrent [`regenerate`](Store::regenerate) either
    /// completes first (and its new token is destroyed) or fails, and a concurrent save
    /// that gives one of the sessions to another user waits for the revoke. Sessions given
    /// to the user while it runs (new logins) may survive.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`](crate::Error::Storage) on a storage failure;
    /// [`Error::WriteInsideUpdate`](crate::Error::WriteInsideUpdate) inside an
    /// [`update`](Store::update) closure.
    pub fn destroy_user(&self, user: &str, except: Option<&SessionId>) -> Result<usize> {
        self.engine
            .destroy_user(user, except.map(SessionId::handle))
    }

    /// Destroys the session with this handle ("revoke this device"). Returns whether a
    /// live session was destroyed. Flushed to disk before it returns.
    ///
    /// A handle names one token. If the session moved to a new token
    /// ([`regenerate`](Store::regenerate)) before the revoke reached it, it has a new handle
    /// and this returns `false`: list the user's sessions again. A regeneration running at the
    /// same time as this call completes either before (then `false`) or after it (then the
    /// regeneration fails, the session being gone).
    ///
    /// Through tower-sessions or actix-session, whose ID rotation (`cycle_id`, `renew`)
    /// deletes the old record and creates the new one in two steps, the handle is marked
    /// ended (until any copy a request loaded would have expired), also when no record is
    /// found: a rotation in flight then stores nothing, and the device stays logged out.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`](crate::Error::Storage) on a storage failure;
    /// [`Error::WriteInsideUpdate`](crate::Error::WriteInsideUpdate) inside an
    /// [`update`](Store::update) closure.
    pub fn destroy_by_handle(&self, handle: &SessionHandle) -> Result<bool> {
        let state = &self.engine;
        let found = state.records_of(handle)?;
        let destroyed = match found.first() {
            Some(&(digest, _)) => state.destroy_durably(&digest, DestroyReason::Handle)?,
            None => false,
        };
        if !destroyed {
            // Gone just now (a framework rotating its ID deletes, then creates): the
            // create must not bring it back.
            state.mark_absent_ended(handle)?;
            state.flush()?;
        }
        Ok(destroyed)
    }
}
