//! New records and new versions of live records: create, save, update and touch, with the
//! store's expiry or one an adapter asks for.

use std::sync::Arc;

use crate::backend::Swap;
use crate::changes::Changes;
use crate::config::MAX_USER_LEN;
use crate::engine::Engine;
use crate::engine::locks::{StripeGuard, UserGuard};
use crate::engine::read::Via;
use crate::engine::write::{ATTEMPTS, Step, retrying};
use crate::error::{Error, Oversized, Result};
use crate::events::Event;
use crate::expiry::{self, Lifetime, Timeouts};
use crate::id::{Digest, SessionId};
use crate::record::StoredRecord;
use crate::record::codec::{self, Header, OwnTimeouts};
use crate::record::values::Values;
use crate::session::Session;

/// A session's user, values and own lifetime, encoded once (limits checked, lifetime cut
/// to the ceilings) before any lock is taken.
pub(crate) struct Contents {
    encoded: Vec<u8>,
    user: Option<String>,
    values: Values,
    own: OwnTimeouts,
    /// The absolute timeout is a framework's expiry as seen at this save (reaching from
    /// now, not from creation): the commit anchors it to the session's creation and
    /// never lets it move later than one stored before (see [`Change::own`]).
    anchored: bool,
    /// What the session changed since it was read; `None`: the contents replace whatever
    /// is stored (a create, an `update` closure's result, a restore).
    changes: Option<Changes>,
}

impl Contents {
    /// # Errors
    ///
    /// [`Error::TooLarge`] or [`Error::EncodeRecord`], from [`Engine::encode`].
    pub(crate) fn new(
        state: &Engine,
        user: Option<String>,
        values: Values,
        lifetime: Lifetime,
    ) -> Result<Contents> {
        Ok(Contents {
            encoded: state.encode(user.as_deref(), &values)?,
            user,
            values,
            own: lifetime.to_own(&state.config),
            anchored: false,
            changes: None,
        })
    }

    /// These contents as `changes` made to a version read earlier: a write applies the
    /// changes onto the version stored then (see [`Contents::rebase`]).
    pub(crate) fn with_changes(mut self, changes: Changes) -> Contents {
        self.changes = Some(changes);
        self
    }

    /// The contents to write over `old`: `None` if these are (they replace what is
    /// stored, or were made on `old` itself), else `old` with the changes applied.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] if the merged record is over the limit; [`Error::EncodeRecord`].
    pub(super) fn rebase(&self, state: &Engine, old: &StoredRecord) -> Result<Option<Contents>> {
        let Some(changes) = self.changes.as_ref().filter(|c| !c.made_on(&old.header)) else {
            return Ok(None);
        };
        let values: Values = changes.apply(&old.values, &self.values).into();
        let user = self.user_over(old).map(str::to_owned);
        let own = if changes.lifetime() {
            self.own
        } else {
            old.header.own
        };
        Ok(Some(Contents {
            encoded: state.encode(user.as_deref(), &values)?,
            user,
            values,
            own,
            anchored: self.anchored,
            changes: None,
        }))
    }

    /// The user the session has once these contents are written over `old`.
    fn user_over<'a>(&'a self, old: &'a StoredRecord) -> Option<&'a str> {
        match &self.changes {
            Some(changes) if !changes.user() && !changes.made_on(&old.header) => {
                old.user.as_deref()
            }
            _ => self.user.as_deref(),
        }
    }

    /// These contents with an absolute timeout that reaches from the save, not from the
    /// session's creation (a framework's expiry date: tower's `expiry_date`).
    #[cfg(any(feature = "tower", feature = "tower-014", feature = "actix"))]
    pub(super) fn anchored(mut self) -> Contents {
        self.anchored = true;
        self
    }

    /// What `session` holds, to be written.
    ///
    /// # Errors
    ///
    /// As [`Contents::new`].
    pub(super) fn of(state: &Engine, session: &Session) -> Result<Contents> {
        Ok(Contents::new(
            state,
            session.user.clone(),
            session.values.clone(),
            session.lifetime,
        )?
        .with_changes(session.changes.clone()))
    }

    /// The session's own timeouts as they will be stored.
    pub(crate) fn own(&self) -> OwnTimeouts {
        self.own
    }

    /// The user these contents give the session.
    pub(crate) fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether these are changes to a loaded session that leave its user as it was
    /// loaded: written, they assign no user.
    pub(crate) fn keeps_user(&self) -> bool {
        self.changes.as_ref().is_some_and(|changes| !changes.user())
    }

    pub(super) fn record(&self, header: Header) -> StoredRecord {
        StoredRecord::encoded(
            self.encoded.clone(),
            header,
            self.user.clone(),
            self.values.clone(),
        )
    }
}

/// What a write over a stored record comes to (see [`Engine::plan`]).
pub(super) enum Plan {
    /// The record is not live: nothing is written.
    Gone,
    /// The session's new lifetime has already run out: the record is deleted.
    End,
    /// Neither the contents nor (beyond the touch granularity) the expiry change.
    Unchanged,
    /// `new` replaces the record; `assigned` is its user if that is new.
    Write {
        new: StoredRecord,
        assigned: Option<String>,
    },
}

/// What a write to a live record changes.
pub(super) enum Change<'a> {
    /// Only the times: the expiry moves, user and values stay; the lifetime too, or it
    /// becomes the one given (an adapter's framework TTL).
    Touch(Option<OwnTimeouts>),
    /// User, values and lifetime are replaced (and the times move).
    Replace(&'a Contents),
}

impl Change<'_> {
    /// Whether writing this takes `old` out of its user's set.
    pub(super) fn moves_out(&self, old: &StoredRecord) -> bool {
        match self {
            Change::Touch(_) => false,
            Change::Replace(c) => old.user.is_some() && old.user.as_deref() != c.user_over(old),
        }
    }

    /// The session's own timeouts after this change of `old`, at `now`, in a store whose
    /// own absolute timeout is `store_absolute`.
    ///
    /// Anchored contents (a framework's expiry `d` from now, given as the idle timeout)
    /// reach `d` from now counted from the session's creation: past the store's absolute
    /// timeout that becomes the session's own, never later than the one already stored.
    /// So tower's `AtDateTime(t)` ends the session at `t` however many saves come between
    /// (also once `t` is nearer than the store's timeout), and `OnInactivity(d)` with `d`
    /// over the store's absolute timeout ends it `d` after the save that first set it
    /// (the login), as before.
    fn own(&self, old: &Header, now: u64, store_absolute: Option<u64>) -> OwnTimeouts {
        match self {
            Change::Touch(own) => own.unwrap_or(old.own),
            Change::Replace(c) if c.anchored => {
                let Some(store_absolute) = store_absolute else {
                    return c.own;
                };
                let reach = now
                    .saturating_sub(old.created_at)
                    .saturating_add(c.own.idle_ms);
                let absolute_ms = match old.own.absolute_ms {
                    0 if reach > store_absolute => reach,
                    0 => 0,
                    stored => stored.min(reach),
                };
                OwnTimeouts {
                    idle_ms: c.own.idle_ms,
                    absolute_ms,
                }
            }
            Change::Replace(c) => c.own,
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
    /// The change gave the session a lifetime that has already ended: it was deleted
    /// (this was its user).
    Expired(Option<String>),
}

impl Committed {
    /// Whether the session is gone (destroyed, expired, or ended by the change itself):
    /// nothing was written and it stays gone.
    pub(crate) fn ended(&self) -> bool {
        matches!(self, Committed::Gone | Committed::Expired(_))
    }
}

/// Whether a touch needs the locked write path, decided without a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TouchPlan {
    /// The session is absent, expired or undecodable.
    Dead,
    /// Live, and the expiry would move by less than the touch granularity.
    NoWrite,
    /// Live, and the expiry must move: commit a [`Change::Touch`].
    Write,
}

impl Engine {
    /// Encodes `user` and `values` as a record with a placeholder header (the write sets
    /// the real one), checking the user and record limits.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] for a user name or record over its limit, [`Error::EncodeRecord`]
    /// if the encoder fails.
    fn encode(&self, user: Option<&str>, values: &Values) -> Result<Vec<u8>> {
        if let Some(user) = user
            && user.len() > MAX_USER_LEN
        {
            return Err(Error::TooLarge {
                what: Oversized::User,
                size: user.len(),
                limit: MAX_USER_LEN,
            });
        }
        let bytes = crate::record::encode_record(&Header::PLACEHOLDER, user, values)
            .map_err(|e| Error::EncodeRecord(Box::new(e)))?;
        if bytes.len() > self.config.max_record_size {
            return Err(Error::TooLarge {
                what: Oversized::Record,
                size: bytes.len(),
                limit: self.config.max_record_size,
            });
        }
        Ok(bytes)
    }

    /// A new, empty session under a fresh token (see [`Store::create`](crate::Store::create)).
    pub(crate) fn create(&self) -> Result<Session> {
        let lifetime = Lifetime::default();
        let contents = Contents::new(self, None, Values::default(), lifetime)?;
        let fresh = || {
            SessionId::generate().map(|id| {
                let digest = id.digest();
                (id, digest)
            })
        };
        let (id, digest, header) = self.insert_fresh(fresh, &contents)?;
        let expected = crate::session::Expected::new(
            self.backend
                .shared_by_processes()
                .then(|| Arc::new(contents.record(header))),
        );
        Ok(Session {
            id,
            digest,
            header,
            user: None,
            values: Values::default(),
            lifetime,
            limits: self.limits(),
            changes: Changes::since(&header),
            expected,
        })
    }

    /// Writes `session`'s user, values and lifetime (see [`Store::save`](crate::Store::save)).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] if the session was destroyed or has expired; those of
    /// [`Contents::of`] and [`commit`](Self::commit).
    pub(crate) fn save(&self, session: &Session) -> Result<()> {
        let contents = Contents::of(self, session)?;
        let change = Change::Replace(&contents);
        if let Some(base) = session
            .expected
            .get()
            .filter(|_| self.backend.shared_by_processes())
        {
            if let Some(written) = self.write_as_expected(&session.digest, &change, &base)? {
                session.expected.set(Some(written));
                return Ok(());
            }
            // The locked path's write is not known here: the next save reads first.
            session.expected.set(None);
        }
        if self.commit(&session.digest, &change)?.ended() {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// Where other processes share the storage (Redis): `change` planned onto `base`, the
    /// record the session was read from, and written by compare-and-swap against it, so a
    /// save is one round trip while nobody else wrote. The stripe lock is held as on the
    /// locked path (this process's destroys, regenerations and updates of the session
    /// still go one at a time; it costs no round trip). Returns the record written, if it
    /// was. `base` decides nothing but that write: anything else (`base` is no longer stored,
    /// nothing to write, an ended lifetime, a login under the per-user cap, a flush after
    /// every write, a format upgrade, a plan that fails) is left to the locked path, which
    /// decides on the stored record.
    ///
    /// # Errors
    ///
    /// Those of [`Locks::stripe`](crate::engine::locks::Locks::stripe) (inside an `update`
    /// closure, [`Error::WriteInsideUpdate`]) and of
    /// [`Backend::write`](crate::backend::Backend::write).
    fn write_as_expected(
        &self,
        digest: &Digest,
        change: &Change<'_>,
        base: &StoredRecord,
    ) -> Result<Option<Arc<StoredRecord>>> {
        let _held = self.locks.stripe(digest)?;
        if self.config.durability == crate::config::Durability::EveryWrite
            || self.format() < codec::STORE_FORMAT
        {
            return Ok(None);
        }
        let Ok(Plan::Write { new, assigned }) = self.plan(change, base, self.now()) else {
            return Ok(None);
        };
        if assigned.is_some() && self.config.max_sessions_per_user.is_some() {
            return Ok(None);
        }
        let swapped = self.backend.write(digest, Some(base), &new)?;
        Ok((swapped == Swap::Done).then(|| Arc::new(new)))
    }

    /// Stores `contents` with `header` under `digest`, replacing any record there (a
    /// restore from a dump: times are taken as given, no cap applies). Over a different
    /// record, the version still moves forward, so a copy read before the restore is never
    /// taken for a copy of it (see [`Changes::made_on`]).
    pub(crate) fn put_record(
        &self,
        digest: &Digest,
        contents: &Contents,
        header: Header,
    ) -> Result<()> {
        self.locked_write(
            digest,
            |old| old.user.is_some() && old.user.as_deref() != contents.user(),
            |old, held| {
                let mut record = contents.record(header);
                if let Some(old) = old.filter(|old| old.bytes != record.bytes) {
                    let mut moved = header;
                    moved.version = header.version.max(old.header.version.wrapping_add(1));
                    record = contents.record(moved);
                }
                let swap = self.write_record(digest, old.map(|e| &**e), record, held)?;
                Ok(Step::after(swap, || ()))
            },
        )
    }

    /// [`put_record`](Self::put_record) for many sessions: where other processes share the
    /// storage (Redis), the ones with no record stored yet go in one pipelined batch, and
    /// only the others (a record there, another store's lease) take the one-by-one path.
    ///
    /// # Errors
    ///
    /// As [`put_record`](Self::put_record); the sessions before a failure may be stored.
    pub(crate) fn put_records(&self, items: &[(Digest, Contents, Header)]) -> Result<()> {
        let mut stored = vec![false; items.len()];
        if self.backend.shared_by_processes() && !items.is_empty() {
            self.locks.refuse_inside_update()?;
            self.upgrade_before_write()?;
            let records: Vec<StoredRecord> = items
                .iter()
                .map(|(_, c, header)| c.record(*header))
                .collect();
            let batch: Vec<(&Digest, &StoredRecord)> =
                items.iter().map(|(d, _, _)| d).zip(&records).collect();
            stored = self.backend.create_many(&batch)?;
            self.after_write()?;
        }
        for ((digest, contents, header), stored) in items.iter().zip(stored) {
            if !stored {
                self.put_record(digest, contents, *header)?;
            }
        }
        Ok(())
    }

    /// Stores a new session under the first free key `next_key` gives (a fresh token
    /// each call), expiring by its lifetime (or the store's timeouts). Emits `Created`
    /// and applies the per-user cap. Returns the key, its digest and the stored header.
    ///
    /// # Errors
    ///
    /// [`Error::TokenCollision`] if [`ATTEMPTS`] keys in a row were taken; errors of
    /// `next_key`; storage errors.
    pub(super) fn insert_fresh<K>(
        &self,
        mut next_key: impl FnMut() -> Result<(K, Digest)>,
        contents: &Contents,
    ) -> Result<(K, Digest, Header)> {
        for _ in 0..ATTEMPTS {
            let (key, digest) = next_key()?;
            if let Some(header) = self.insert_if_free(&digest, contents)? {
                return Ok((key, digest, header));
            }
        }
        Err(Error::TokenCollision)
    }

    /// Inserts under `digest` unless a record (live or not) is there: `None` if taken.
    fn insert_if_free(&self, digest: &Digest, contents: &Contents) -> Result<Option<Header>> {
        if contents.user.is_some() && self.config.max_sessions_per_user.is_some() {
            crate::engine::locks::give_up_if_in_place()?;
        }
        let header = {
            let held = self.locks.stripe(digest)?;
            let now = self.now();
            let header = Header {
                expires_at: Timeouts::of(&self.config, contents.own).expires_at(now, now),
                last_seen: now,
                created_at: now,
                version: 1,
                own: contents.own,
            };
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
        Ok(Some(header))
    }

    /// Runs `attempt` with the stripe lock of `digest` held and its record read under it.
    ///
    /// If `moves_out(record)` says the write will take the session out of its user's set
    /// while it lives on (a new user, a new digest), the user lock of the record's current
    /// user is taken first (lock order: user, then stripe), and the record read again.
    /// Revoke-all and the per-user cap hold that lock, so the set they list stands still.
    pub(super) fn locked_write<T>(
        &self,
        digest: &Digest,
        moves_out: impl Fn(&StoredRecord) -> bool,
        mut attempt: impl FnMut(Option<&Arc<StoredRecord>>, &StripeGuard<'_>) -> Result<Step<T>>,
    ) -> Result<T> {
        let mut held_user: Option<(String, UserGuard<'_>)> = None;
        retrying(|| {
            let stripe = self.locks.stripe(digest)?;
            let old = self.record(digest, Via::Locked(&stripe))?;
            let leaving = old
                .as_deref()
                .filter(|e| moves_out(e))
                .and_then(|e| e.user.as_deref());
            if let Some(user) = leaving
                && held_user.as_ref().map(|(u, _)| u.as_str()) != Some(user)
            {
                let user = user.to_owned();
                drop(stripe);
                held_user = None; // never hold two user locks
                let guard = self.locks.user(&user)?;
                held_user = Some((user, guard));
                return Ok(Step::Retry);
            }
            attempt(old.as_ref(), &stripe)
        })
    }

    /// Reports the end of the session `digest` (of `user`) that a write wanting to keep it
    /// (a save, an update, a regeneration) found its lifetime had ended and deleted, and
    /// flushes, as a logout does: a crash right after cannot bring it back.
    pub(super) fn ended_by_lifetime(&self, digest: &Digest, user: Option<String>) -> Result<()> {
        self.events.emit(&self.counters, || Event::Expired {
            handle: digest.handle(),
            user,
        });
        self.backend.flush()
    }

    /// Writes `change` as the new version of the live record of `digest`; its expiry is
    /// the idle timeout from now, capped by the absolute timeout (the session's own, or
    /// the store's). Applies the per-user cap when the write gives the session to a new
    /// user.
    pub(super) fn commit(&self, digest: &Digest, change: &Change<'_>) -> Result<Committed> {
        let (committed, assigned) = self.locked_write(
            digest,
            |old| change.moves_out(old),
            |old, held| self.commit_locked(digest, change, old.map(|e| &**e), held),
        )?;
        if let Committed::Expired(user) = &committed {
            self.ended_by_lifetime(digest, user.clone())?;
        }
        if let Some(user) = assigned {
            self.enforce_user_limit(&user, digest)?;
        }
        Ok(committed)
    }

    /// One attempt of a commit, with the stripe lock held and `old` read under it.
    /// Returns what happened and the user the write gave the session to, if new.
    pub(super) fn commit_locked(
        &self,
        digest: &Digest,
        change: &Change<'_>,
        old: Option<&StoredRecord>,
        held: &StripeGuard<'_>,
    ) -> Result<Step<(Committed, Option<String>)>> {
        let Some(old) = old else {
            return Ok(Step::Done((Committed::Gone, None)));
        };
        match self.plan(change, old, self.now())? {
            Plan::Gone => Ok(Step::Done((Committed::Gone, None))),
            Plan::Unchanged => Ok(Step::Done((Committed::Unchanged, None))),
            Plan::End => {
                // The session ends here instead of being written dead, and the end is
                // flushed: an adapter's write in place on the executor gives up first.
                crate::engine::locks::give_up_if_in_place()?;
                if self.delete_record(digest, old, held)? == Swap::Conflict {
                    return Ok(Step::Retry);
                }
                Ok(Step::Done((Committed::Expired(old.user.clone()), None)))
            }
            Plan::Write { new, assigned } => {
                if assigned.is_some() && self.config.max_sessions_per_user.is_some() {
                    crate::engine::locks::give_up_if_in_place()?;
                }
                let swap = self.write_record(digest, Some(old), new, held)?;
                Ok(Step::after(swap, || (Committed::Written, assigned)))
            }
        }
    }

    /// What writing `change` over `old` (the stored record) at `now` comes to, worked out
    /// without writing anything: the same for the locked path and the adapters' awaited
    /// one. Changes made to an earlier version are applied onto `old` here.
    pub(super) fn plan(&self, change: &Change<'_>, old: &StoredRecord, now: u64) -> Result<Plan> {
        if !expiry::is_live(&self.config, &old.header, now) {
            return Ok(Plan::Gone);
        }
        let rebased = match change {
            Change::Replace(c) => c.rebase(self, old)?,
            Change::Touch(_) => None,
        };
        let change = match &rebased {
            Some(merged) => &Change::Replace(merged),
            None => change,
        };
        let own = change.own(&old.header, now, self.config.absolute_ms);
        let timeouts = Timeouts::of(&self.config, own);
        let expires_at = timeouts.expires_at(now, old.header.created_at);
        if expires_at <= now {
            // The new lifetime has already run out (an absolute timeout set after it
            // passed).
            return Ok(Plan::End);
        }
        let same_contents = match change {
            Change::Touch(_) => true,
            Change::Replace(c) => codec::tail(&old.bytes) == codec::tail(&c.encoded),
        };
        let barely_moves = self.expiry_barely_moves(&old.header, own, now, expires_at);
        if same_contents && barely_moves {
            return Ok(Plan::Unchanged);
        }
        let header = Header {
            // A write whose expiry would move by less than the touch granularity keeps
            // the stored one: the record is then the only write (its index entry stays).
            expires_at: if barely_moves {
                old.header.expires_at
            } else {
                expires_at
            },
            last_seen: now,
            created_at: old.header.created_at,
            version: old.header.version.wrapping_add(1),
            own,
        };
        let new = match change {
            Change::Touch(_) => StoredRecord {
                bytes: codec::with_header(&old.bytes, &header).into(),
                header,
                user: old.user.clone(),
                values: old.values.clone(),
                memo: Default::default(),
            },
            Change::Replace(c) => c.record(header),
        };
        let assigned = new.user.clone().filter(|u| Some(u) != old.user.as_ref());
        Ok(Plan::Write { new, assigned })
    }

    /// Extends the idle expiry of the live record of `digest` (giving it the lifetime
    /// `own`, if given) without rewriting its values. Returns whether the session is
    /// live. Writes nothing when the lifetime stays and the expiry would move by less than
    /// the touch granularity, deciding that without a lock when it can.
    pub(crate) fn touch(&self, digest: &Digest, own: Option<OwnTimeouts>) -> Result<bool> {
        match self.touch_plan(digest, own)? {
            TouchPlan::Dead => Ok(false),
            TouchPlan::NoWrite => Ok(true),
            TouchPlan::Write => Ok(matches!(
                self.commit(digest, &Change::Touch(own))?,
                Committed::Written | Committed::Unchanged
            )),
        }
    }

    /// Whether a touch of `digest` (to the new lifetime `own`, if given) needs a write.
    /// Reads the cache, or the record without waiting for a lock.
    fn touch_plan(&self, digest: &Digest, own: Option<OwnTimeouts>) -> Result<TouchPlan> {
        Ok(match self.record(digest, Via::Load)? {
            None => TouchPlan::Dead,
            Some(entry) => self.plan_touch(&entry.header, own),
        })
    }

    fn plan_touch(&self, header: &Header, own: Option<OwnTimeouts>) -> TouchPlan {
        let now = self.now();
        if !expiry::is_live(&self.config, header, now) {
            return TouchPlan::Dead;
        }
        let own = own.unwrap_or(header.own);
        let target = Timeouts::of(&self.config, own).expires_at(now, header.created_at);
        if self.expiry_barely_moves(header, own, now, target) {
            TouchPlan::NoWrite
        } else {
            TouchPlan::Write
        }
    }

    /// Whether a write that keeps the values can be skipped: the absolute timeout stays
    /// and the expiry moves forward by less than the session's touch granularity. A
    /// change of the idle timeout alone counts only through the expiry it gives, so a
    /// framework that recomputes it on every save (tower's `AtDateTime`) costs no writes.
    fn expiry_barely_moves(&self, old: &Header, own: OwnTimeouts, now: u64, new: u64) -> bool {
        own.absolute_ms == old.own.absolute_ms
            && expiry::within_granularity(
                &self.config,
                &Timeouts::of(&self.config, own),
                now,
                old.expires_at,
                new,
            )
    }
}
