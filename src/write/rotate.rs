//! Atomic ID rotation: a record moves to a fresh digest in one sled transaction over the
//! `sessions`, `expiry` and `users` trees, since half a rotation would leave two live
//! tokens or none.

use std::sync::Arc;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::codec::{self, Header};
use crate::error::{Error, Result};
use crate::expiry::{self, Timeouts};
use crate::id::Digest;
use crate::read::Entry;
use crate::state::StoreState;
use crate::write::commit::Contents;
use crate::write::{Step, Swap, retrying};

/// What a rotation did.
pub(crate) enum Rotation {
    /// The record moved to the new digest with this header; its user before the move.
    Moved(Header, Option<String>),
    /// `contents` gave the session a lifetime that had already ended: the record was
    /// deleted (its user given) and nothing was written under the new digest.
    Ended(Option<String>),
}

impl StoreState {
    /// Moves the live record of `old` to `new` with `contents`, keeping its creation time.
    ///
    /// Holds the lock of the previous user (the session leaves that user's set under its
    /// old digest), then both stripe locks.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if the session is gone or has expired (nothing is written);
    /// [`Error::TokenCollision`] if `new` is taken.
    pub(crate) fn rotate(
        &self,
        old: &Digest,
        new: &Digest,
        contents: &Contents,
    ) -> Result<Rotation> {
        retrying(|| {
            let guess = self.current_user(old)?;
            let _user = guess.as_deref().map(|u| self.locks.user(u)).transpose()?;
            let (held, held_new) = self.locks.stripe_pair(old, new)?;
            let now = self.now();
            let Some(entry) = self
                .record_locked(old, &held)?
                .filter(|e| expiry::is_live(&self.config, &e.header, now))
            else {
                return Err(Error::NotFound);
            };
            if entry.user != guess {
                return Ok(Step::Retry); // given to someone else meanwhile: lock that user
            }
            let own = contents.own();
            let header = Header {
                expires_at: Timeouts::of(&self.config, own)
                    .expires_at(now, entry.header.created_at),
                last_seen: now,
                created_at: entry.header.created_at,
                version: entry.header.version.wrapping_add(1),
                own,
            };
            if header.expires_at <= now {
                // The lifetime the session carries has already ended: it ends here, as a
                // save would end it, instead of moving to a dead record.
                if self.delete_record(old, &entry, &held)? == Swap::Conflict {
                    return Ok(Step::Retry);
                }
                return Ok(Step::Done(Rotation::Ended(entry.user.clone())));
            }
            let record = contents.record(header);
            self.swap_digest(old, &entry, new, &record)?;
            self.cache.remove(old, &held);
            let previous_user = entry.user.clone();
            self.cache
                .put(*new, Arc::new(record), held_new.as_ref().unwrap_or(&held));
            Ok(Step::Done(Rotation::Moved(header, previous_user)))
        })
    }

    /// The transaction of [`rotate`](Self::rotate). Caller holds both stripe locks.
    fn swap_digest(&self, old: &Digest, entry: &Entry, new: &Digest, record: &Entry) -> Result<()> {
        self.upgrade_before_write()?;
        (&self.sessions, &self.expiry, &self.users).transaction(|(s, e, u)| {
            if s.get(old.0)?.as_ref() != Some(&entry.bytes) {
                return Err(ConflictableTransactionError::Abort(Error::NotFound));
            }
            if s.get(new.0)?.is_some() {
                return Err(ConflictableTransactionError::Abort(Error::TokenCollision));
            }
            e.insert(
                &codec::expiry_key(record.header.expires_at, new)[..],
                &[][..],
            )?;
            if let Some(user) = &record.user {
                u.insert(codec::user_key(user, new), &[][..])?;
            }
            s.insert(&new.0[..], record.bytes.clone())?;
            s.remove(&old.0[..])?;
            e.remove(&codec::expiry_key(entry.header.expires_at, old)[..])?;
            if let Some(user) = &entry.user {
                u.remove(codec::user_key(user, old))?;
            }
            Ok(())
        })?;
        Ok(())
    }
}
