//! Session ID regeneration: a record moves to a fresh digest with its index entries in one
//! step of the backend (a sled transaction over three trees, or one Redis script), since
//! half a regeneration would leave two live tokens or none.

use std::sync::Arc;

use crate::backend::Swap;
use crate::engine::Engine;
use crate::engine::commit::Contents;
use crate::engine::read::Via;
use crate::engine::write::{Step, retrying};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::expiry::{self, Timeouts};
use crate::id::Digest;
use crate::id::SessionId;
use crate::record::codec::Header;
use crate::session::Session;

/// What a regeneration did.
pub(super) enum Regeneration {
    /// The record moved to the new digest with this header; its user before the move and
    /// after it.
    Moved(Header, Option<String>, Option<String>),
    /// `contents` gave the session a lifetime that had already ended: the record was
    /// deleted (its user given) and nothing was written under the new digest.
    Ended(Option<String>),
}

impl Engine {
    /// Moves the live session `session` to a fresh token (see
    /// [`Store::regenerate`](crate::Store::regenerate)), then flushes, emits the event and
    /// applies the per-user cap if the session changed hands. On success `session` holds
    /// the new token.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if the session is gone, has expired, or its lifetime has
    /// already ended (then it is deleted, durably); those of [`Contents::of`] and of
    /// [`move_record`](Self::move_record).
    pub(crate) fn regenerate(&self, session: &mut Session) -> Result<()> {
        let contents = Contents::of(self, session)?;
        let old_digest = session.digest;
        let new_id = SessionId::generate()?;
        let new_digest = new_id.digest();
        let regenerated = self.tokens.forgetting(&session.id.words(), || {
            self.move_record(&old_digest, &new_digest, &contents)
        });
        let (header, previous_user, user) = match regenerated? {
            Regeneration::Moved(header, previous_user, user) => (header, previous_user, user),
            Regeneration::Ended(user) => {
                // The lifetime `session` carries had already ended: the session is gone.
                self.ended_by_lifetime(&old_digest, user)?;
                return Err(Error::NotFound);
            }
        };
        // The record has moved: `session` follows it before the flush, which can fail
        // (on Redis, replicas that do not confirm) with the move already made.
        session.id = new_id;
        session.digest = new_digest;
        session.header = header;
        // What the move wrote may be merged with a newer version: the next save reads.
        session.expected.set(None);
        self.backend.flush()?;
        self.events.emit(&self.counters, || Event::Regenerated {
            old: old_digest.handle(),
            new: new_digest.handle(),
            user: user.clone(),
        });
        if let Some(user) = user.filter(|u| Some(u) != previous_user.as_ref()) {
            self.enforce_user_limit(&user, &new_digest)?;
        }
        Ok(())
    }
    /// Moves the live record of `old` to `new` with `contents`, keeping its creation time.
    ///
    /// Holds the lock of the previous user (the session leaves that user's set under its
    /// old digest), then both stripe locks.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if the session is gone or has expired (nothing is written);
    /// [`Error::TokenCollision`] if `new` is taken.
    pub(super) fn move_record(
        &self,
        old: &Digest,
        new: &Digest,
        contents: &Contents,
    ) -> Result<Regeneration> {
        retrying(|| {
            let guess = self.record(old, Via::Peek)?.and_then(|r| r.user.clone());
            let _user = guess.as_deref().map(|u| self.locks.user(u)).transpose()?;
            let (held, held_new) = self.locks.stripe_pair(old, new)?;
            let now = self.now();
            let Some(entry) = self
                .record(old, Via::Locked(&held))?
                .filter(|e| expiry::is_live(&self.config, &e.header, now))
            else {
                return Err(Error::NotFound);
            };
            if entry.user != guess {
                return Ok(Step::Retry); // given to someone else meanwhile: lock that user
            }
            // Changes made to an earlier version are applied onto this one.
            let rebased = contents.rebase(self, &entry)?;
            let contents = rebased.as_ref().unwrap_or(contents);
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
                return Ok(Step::Done(Regeneration::Ended(entry.user.clone())));
            }
            let record = contents.record(header);
            // Both stripes are being written (one guard where they are the same stripe).
            let writing = self.cache.writing(old, &held);
            let writing_new = held_new.as_ref().map(|h| self.cache.writing(new, h));
            let swapped = self
                .upgrade_before_write()
                .and_then(|()| self.backend.move_record(old, &entry, new, &record));
            self.cache.remove(old, &writing);
            // Changed since it was read: only a writer outside this process's locks (on
            // Redis, another store) can do that. Read it again.
            if swapped? == Swap::Conflict {
                return Ok(Step::Retry);
            }
            let previous_user = entry.user.clone();
            let user = record.user.clone();
            self.cache.put(
                *new,
                Arc::new(record),
                writing_new.as_ref().unwrap_or(&writing),
            );
            Ok(Step::Done(Regeneration::Moved(header, previous_user, user)))
        })
    }
}
