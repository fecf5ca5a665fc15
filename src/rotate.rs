//! Atomic ID rotation: a session moves to a fresh token in one transaction.

use std::sync::Arc;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::codec::{self, Header};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::expiry;
use crate::id::SessionId;
use crate::session::Session;
use crate::shared::{Entry, Shared};
use crate::store::Store;

impl Store {
    /// Gives `session` a fresh token (do this on login and on every privilege change).
    ///
    /// The record moves to the new token in one sled transaction, carrying `session`'s
    /// current values and user (unsaved changes included) and its creation time, so the
    /// absolute timeout still counts from the original creation. The old token stops
    /// working at once. After a crash, either the old token works with the old record or
    /// only the new one exists. Flushed to disk before it returns; `session` then holds
    /// the new token.
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
    /// [`Error::NotFound`] if the session was destroyed or has expired (nothing is
    /// written); [`Error::TooLarge`] if the record is over its limit; [`Error::Storage`]
    /// on a storage failure.
    pub fn regenerate(&self, session: &mut Session) -> Result<()> {
        let sh = &self.shared;
        let mut bytes = sh.encode(session.user(), &session.data)?;
        let old_digest = session.digest;
        let new_id = SessionId::generate()?;
        let new_digest = new_id.digest();
        let (header, old_user) = {
            let _guards = sh.lock_pair(&old_digest, &new_digest);
            let now = sh.now();
            let Some((old_bytes, old_header)) = sh.raw_locked(&old_digest)? else {
                return Err(Error::NotFound);
            };
            if !expiry::is_live(&sh.config, &old_header, now) {
                return Err(Error::NotFound);
            }
            let old_user = codec::parse_user_only(&old_bytes)
                .ok()
                .flatten()
                .map(str::to_owned);
            let header = Header {
                expires_at: expiry::expires_at(&sh.config, now, old_header.created_at),
                last_seen: now,
                created_at: old_header.created_at,
                version: old_header.version.wrapping_add(1),
            };
            codec::set_header(&mut bytes, &header);
            let new_user = session.user.as_deref();
            (&sh.sessions, &sh.expiry, &sh.users).transaction(|(s, e, u)| {
                if s.get(old_digest.0)?.as_ref() != Some(&old_bytes) {
                    return Err(ConflictableTransactionError::Abort(Error::NotFound));
                }
                if s.get(new_digest.0)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(Error::Entropy(
                        "a freshly generated token was already in use".into(),
                    )));
                }
                e.insert(
                    &codec::expiry_key(header.expires_at, &new_digest)[..],
                    &[][..],
                )?;
                if let Some(user) = new_user {
                    u.insert(codec::user_key(user, &new_digest), &[][..])?;
                }
                s.insert(&new_digest.0[..], bytes.as_slice())?;
                s.remove(&old_digest.0[..])?;
                e.remove(&codec::expiry_key(old_header.expires_at, &old_digest)[..])?;
                if let Some(user) = &old_user {
                    u.remove(codec::user_key(user, &old_digest))?;
                }
                Ok(())
            })?;
            sh.forget(&old_digest);
            remember(sh, &new_id, bytes, header, session);
            (header, old_user)
        };
        sh.db.flush()?;
        let new_handle = new_digest.handle();
        sh.events.emit(&sh.counters, || Event::Regenerated {
            old: old_digest.handle(),
            new: new_handle,
            user: session.user.clone(),
        });
        session.id = new_id;
        session.digest = new_digest;
        session.header = header;
        if let Some(user) = session
            .user
            .clone()
            .filter(|u| Some(u) != old_user.as_ref())
        {
            sh.enforce_user_limit(&user, &new_digest)?;
        }
        Ok(())
    }
}

fn remember(sh: &Shared, id: &SessionId, bytes: Vec<u8>, header: Header, session: &Session) {
    sh.remember(
        id.digest(),
        Arc::new(Entry {
            bytes: bytes.into(),
            header,
            user: session.user.clone(),
            data: Arc::clone(&session.data),
        }),
    );
}
