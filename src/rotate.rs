//! `Store::regenerate`: a session moves to a fresh token (the write is in
//! [`crate::write::rotate`]).

use crate::error::Result;
use crate::events::Event;
use crate::id::SessionId;
use crate::session::Session;
use crate::store::Store;
use crate::write::commit::Contents;
use crate::write::rotate::Rotation;

impl Store {
    /// Gives `session` a fresh token (do this on login and on every privilege change).
    ///
    /// The record moves to the new token in one atomic step (a sled transaction, or one
    /// script on Redis), carrying `session`'s
    /// current values, user and lifetime (unsaved changes included) and its creation time,
    /// so the
    /// absolute timeout still counts from the original creation. The old token stops
    /// working at once. After a crash, either the old token works with the old record or
    /// only the new one exists. Flushed to disk before it returns; `session` then holds
    /// the new token.
    ///
    /// A rotation and a [`destroy_user`](Store::destroy_user) of the session's user never
    /// overlap: either the rotation completes first (and the revoke destroys the session
    /// under its new token) or the revoke does (and the rotation fails with
    /// [`Error::NotFound`](crate::Error::NotFound)).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> Result<(), sessile::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = sessile::Store::open(dir.path().join("sessions"))?;
    /// let mut session = store.create()?;
    /// let old = session.id().clone();
    /// session.set_user(Some("alice")); // logging in
    /// store.regenerate(&mut session)?;
    /// assert!(store.load(&old)?.is_none());
    /// assert_eq!(store.load(session.id())?.expect("live").user(), Some("alice"));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`Error::NotFound`](crate::Error::NotFound) if the session was destroyed or has
    ///   expired (nothing is written), or if its lifetime has already ended (then it is
    ///   deleted, durably);
    /// - [`Error::TooLarge`](crate::Error::TooLarge) if the record is over its limit;
    /// - [`Error::TokenCollision`](crate::Error::TokenCollision) if the fresh token was
    ///   taken (a broken random number generator);
    /// - [`Error::WriteInsideUpdate`](crate::Error::WriteInsideUpdate) inside an
    ///   [`update`](Store::update) closure;
    /// - [`Error::Contended`](crate::Error::Contended) if the session kept changing under
    ///   the rotation (on Redis: other stores' writes, or an update lease held throughout);
    /// - [`Error::Storage`](crate::Error::Storage) on a storage failure.
    pub fn regenerate(&self, session: &mut Session) -> Result<()> {
        let state = &self.state;
        let contents = Contents::of(state, session)?;
        let old_digest = session.digest;
        let new_id = SessionId::generate()?;
        let new_digest = new_id.digest();
        let rotated = state.tokens.forgetting(&session.id.words(), || {
            state.rotate(&old_digest, &new_digest, &contents)
        });
        let (header, previous_user) = match rotated? {
            Rotation::Moved(header, previous_user) => (header, previous_user),
            Rotation::Ended(user) => {
                // The lifetime `session` carries had already ended: the session is gone,
                // durably, as a revocation is.
                state.backend.flush()?;
                state.events.emit(&state.counters, || Event::Expired {
                    handle: old_digest.handle(),
                    user,
                });
                return Err(crate::Error::NotFound);
            }
        };
        state.backend.flush()?;
        state.events.emit(&state.counters, || Event::Regenerated {
            old: old_digest.handle(),
            new: new_digest.handle(),
            user: session.user.clone(),
        });
        session.id = new_id;
        session.digest = new_digest;
        session.header = header;
        if let Some(user) = contents
            .user()
            .filter(|u| Some(*u) != previous_user.as_deref())
        {
            state.enforce_user_limit(user, &new_digest)?;
        }
        Ok(())
    }
}
